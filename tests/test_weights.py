"""Loading pretrained weight files: every format from generated files, and clear errors for bad ones."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grefel.core.errors import CheckpointError
from grefel.models.grefel import create_model
from grefel.weights.verify import load_pretrained

REFERENCE = Path(__file__).parent / "data" / "state_dicts"  # key lists of the published files (README there)
IR50_STAGES = (("body1", 3), ("body2", 4), ("body3", 14))


# ------------------------------------------------------------------ generated files in each format


@pytest.fixture(scope="module")
def full_encoder_state():
    torch.manual_seed(1)
    return {k: v.clone() for k, v in create_model("full", 7).encoder.state_dict().items()}


def _randomised(sd):
    g = torch.Generator().manual_seed(5)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in sd.items()}


def _bn(prefix, n):
    return {
        f"{prefix}.weight": torch.ones(n),
        f"{prefix}.bias": torch.zeros(n),
        f"{prefix}.running_mean": torch.zeros(n),
        f"{prefix}.running_var": torch.ones(n),
        f"{prefix}.num_batches_tracked": torch.tensor(0),
    }


def ir50_split_format(enc_sd):
    """POSTER++'s ir50.pth: input_layer, body1/2/3, output_layer (never run)."""
    sd = {k[len("ir_back.") :]: v for k, v in enc_sd.items() if k.startswith("ir_back.")}
    sd.update(
        {
            **_bn("output_layer.0", 512),
            "output_layer.3.weight": torch.zeros(512, 25088),
            "output_layer.3.bias": torch.zeros(512),
            **_bn("output_layer.4", 512),
        }
    )
    return sd


def ir50_evolve_format(enc_sd):
    """face.evoLVe's backbone_ir50: body.0..body.23 (stage 4 = units 21-23), output_layer."""
    split = ir50_split_format(enc_sd)
    sd, start = {}, 0
    for body, n in IR50_STAGES:
        for k, v in split.items():
            if k.startswith(body + "."):
                unit, rest = k[len(body) + 1 :].split(".", 1)
                sd[f"body.{start + int(unit)}.{rest}"] = v
        start += n
    sd.update({k: v for k, v in split.items() if not k.startswith("body")})
    for i in range(21, 24):  # stage 4: 256 -> 512 (unit 21 has the 1x1 shortcut)
        cin = 256 if i == 21 else 512
        if i == 21:
            sd.update(
                {
                    f"body.{i}.shortcut_layer.0.weight": torch.zeros(512, 256, 1, 1),
                    **_bn(f"body.{i}.shortcut_layer.1", 512),
                }
            )
        sd.update(
            {
                **_bn(f"body.{i}.res_layer.0", cin),
                f"body.{i}.res_layer.1.weight": torch.zeros(512, cin, 3, 3),
                f"body.{i}.res_layer.2.weight": torch.zeros(512),
                f"body.{i}.res_layer.3.weight": torch.zeros(512, 512, 3, 3),
                **_bn(f"body.{i}.res_layer.4", 512),
            }
        )
    return sd


def mobilefacenet_format(enc_sd):
    sd = {k[len("face_landback.") :]: v for k, v in enc_sd.items() if k.startswith("face_landback.")}
    sd.update(
        {
            "output_layer.conv_6_dw.conv.weight": torch.zeros(512, 1, 7, 7),
            **_bn("output_layer.conv_6_dw.bn", 512),
            "output_layer.linear.weight": torch.zeros(136, 512),
            **_bn("output_layer.bn", 136),
        }
    )
    return sd


POSTER_UNUSED = {
    "VIT.head.linear.weight": (7, 768),
    "VIT.head.linear.bias": (7,),
    "VIT.patch_embed.proj.weight": (768, 256, 1, 1),
    "VIT.patch_embed.proj.bias": (768,),
    "VIT.eca_block.conv.weight": (1, 1, 5),
    "VIT.CON1.weight": (768, 256, 1, 1),
    "VIT.IRLinear1.weight": (768, 1024),
    "VIT.IRLinear1.bias": (768,),
    "VIT.IRLinear2.weight": (512, 768),
    "VIT.IRLinear2.bias": (512,),
    "VIT.blocks.0.conv.weight": (148, 148, 1),
    "VIT.blocks.0.conv.bias": (148,),
    "VIT.blocks.1.conv.weight": (148, 148, 1),
    "VIT.blocks.1.conv.bias": (148,),
}


def poster_format(enc_sd):
    """A trained POSTER++ 7-class checkpoint's state dict: everything, with DataParallel's 'module.'."""
    sd = dict(enc_sd)
    sd.update({k: torch.zeros(s) for k, s in POSTER_UNUSED.items()})
    sd.update({"ir_back." + k: v for k, v in ir50_split_format(enc_sd).items() if k.startswith("output_layer")})
    sd.update(
        {"face_landback." + k: v for k, v in mobilefacenet_format(enc_sd).items() if k.startswith("output_layer")}
    )
    return {"module." + k: v for k, v in sd.items()}


# ------------------------------------------------------------------ the formats load, every key accounted for


def _assert_loaded(model, enc_sd, prefix):
    for k, v in model.encoder.state_dict().items():
        if k.startswith(prefix):
            assert torch.equal(v, enc_sd[k]), k


def test_ir50_face_evolve_and_split(tmp_path, full_encoder_state):
    src = _randomised(full_encoder_state)
    n_ir = sum(k.startswith("ir_back.") for k in src)
    model = create_model("full", 7)
    for name, sd in (("evolve", ir50_evolve_format(src)), ("split", ir50_split_format(src))):
        path = tmp_path / f"ir50_{name}.pth"
        torch.save(sd, path)
        report = load_pretrained(model, ir50=path)
        rep = report.sources[0]
        assert len(rep.matched) == n_ir and rep.complete and rep.loaded
        assert all(
            k.startswith("output_layer") or k.startswith(("body.21.", "body.22.", "body.23.")) for k in rep.unused
        )
        assert len(rep.unused) == len(sd) - n_ir
        if name == "evolve":
            assert rep.unused["body.21.res_layer.1.weight"] == "IR-50 stage 4 (never run)"
            assert "body2.0.res_layer.1.weight" not in rep.unused
        _assert_loaded(model, src, "ir_back.")
        model = create_model("full", 7)


def test_mobilefacenet_checkpoint_under_state_dict(tmp_path, full_encoder_state):
    src = _randomised(full_encoder_state)
    path = tmp_path / "mobilefacenet_model_best.pth.tar"
    torch.save({"state_dict": mobilefacenet_format(src), "epoch": 90, "best": 0.1}, path)
    model = create_model("full", 7)
    rep = load_pretrained(model, mobilefacenet=path).sources[0]
    assert rep.complete and set(rep.unused) == {k for k in mobilefacenet_format(src) if k.startswith("output_layer")}
    _assert_loaded(model, src, "face_landback.")


def test_poster_checkpoint_every_key_accounted(tmp_path, full_encoder_state):
    src = _randomised(full_encoder_state)
    sd = poster_format(src)
    path = tmp_path / "rafdb_posterv2.pth"
    torch.save({"state_dict": sd, "best_acc": 0.92}, path)
    model = create_model("full", 7)
    rep = load_pretrained(model, poster=path).sources[0]
    assert rep.complete
    assert len(rep.matched) == len(full_encoder_state)  # every key the forward uses is consumed
    assert len(rep.matched) + len(rep.unused) == len(sd)  # and every other key is reported unused
    assert "VIT.head.linear.weight" in rep.unused and "face_landback.output_layer.linear.weight" in rep.unused
    _assert_loaded(model, src, "")


def test_generated_formats_have_the_reference_keys_and_shapes(full_encoder_state):
    def tsv(name):
        out = {}
        for line in (REFERENCE / name).read_text().splitlines():
            if line and not line.startswith("#"):
                k, shape, _ = line.split("\t")
                out[k] = tuple(ast.literal_eval(shape))
        return out

    def shapes(sd, strip=""):
        return {k.removeprefix(strip): tuple(v.shape) for k, v in sd.items()}

    assert shapes(poster_format(full_encoder_state), "module.") == tsv("posterv2_7cls_full.tsv")
    assert shapes(ir50_split_format(full_encoder_state)) == tsv("ir50_posterv2_split.tsv")
    assert shapes(ir50_evolve_format(full_encoder_state)) == tsv("ir50_face_evolve.tsv")
    assert shapes(mobilefacenet_format(full_encoder_state)) == tsv("mobilefacenet_68pt.tsv")


# ------------------------------------------------------------------ bad files: one clear error each


@pytest.fixture()
def tiny_files(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny", 3)
    sd = {"module." + k: v.clone() for k, v in model.encoder.state_dict().items()}
    return model, sd, tmp_path


def test_wrong_shape(tiny_files):
    model, sd, tmp = tiny_files
    sd["module.VIT.pos_embed"] = torch.zeros(1, 10, 64)
    torch.save(sd, tmp / "bad.pth")
    with pytest.raises(
        CheckpointError, match=r"1 shape mismatches \(e\.g\. VIT\.pos_embed: file \(1, 10, 64\) vs model"
    ):
        load_pretrained(model, poster=tmp / "bad.pth")
    before = model.encoder.VIT.pos_embed.clone()
    rep = load_pretrained(model, poster=tmp / "bad.pth", allow_partial=True).sources[0]
    assert list(rep.mismatched) == ["VIT.pos_embed"] and not rep.missing and rep.loaded
    assert torch.equal(model.encoder.VIT.pos_embed, before)


def test_partial_file(tiny_files):
    model, sd, tmp = tiny_files
    dropped = [k for k in sd if k.startswith("module.attn2.")]
    for k in dropped:
        del sd[k]
    sd["module.VIT.cls_token"] = torch.full_like(sd["module.VIT.cls_token"], 3.0)
    torch.save(sd, tmp / "partial.pth")
    with pytest.raises(CheckpointError, match=f"{len(dropped)} encoder keys missing .*set allow_partial"):
        load_pretrained(model, poster=tmp / "partial.pth")
    assert not torch.equal(model.encoder.VIT.cls_token, sd["module.VIT.cls_token"])  # refused: nothing loaded
    rep = load_pretrained(model, poster=tmp / "partial.pth", allow_partial=True).sources[0]
    assert sorted(rep.missing) == sorted(k.removeprefix("module.") for k in dropped)
    assert torch.equal(model.encoder.VIT.cls_token, sd["module.VIT.cls_token"])


def test_unexpected_keys(tiny_files):
    model, sd, tmp = tiny_files
    sd["module.extra_branch.weight"] = torch.zeros(3)
    torch.save(sd, tmp / "extra.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \(e\.g\. extra_branch\.weight\)"):
        load_pretrained(model, poster=tmp / "extra.pth")
    assert load_pretrained(model, poster=tmp / "extra.pth", allow_partial=True).sources[0].unexpected == [
        "extra_branch.weight"
    ]


def test_full_weights_into_tiny_model(tmp_path, full_encoder_state):
    torch.save(ir50_split_format(full_encoder_state), tmp_path / "ir50.pth")
    with pytest.raises(CheckpointError, match="does not fit the ir50 part of this model.*full preset"):
        load_pretrained(create_model("tiny", 7), ir50=tmp_path / "ir50.pth")


def test_file_of_another_kind(tiny_files):
    model, sd, tmp = tiny_files
    torch.save(sd, tmp / "poster.pth")
    with pytest.raises(CheckpointError, match="none of its .* keys fit the encoder's mobilefacenet part"):
        load_pretrained(model, mobilefacenet=tmp / "poster.pth")
    torch.save({"conv1.conv.weight": torch.zeros(1)}, tmp / "mfn.pth")
    with pytest.raises(CheckpointError, match="not a POSTER\\+\\+ checkpoint"):
        load_pretrained(model, poster=tmp / "mfn.pth")


def test_missing_empty_and_corrupt_files(tiny_files):
    model, sd, tmp = tiny_files
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(model, ir50=tmp / "nope.pth")
    (tmp / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_pretrained(model, ir50=tmp / "empty.pth")
    torch.save(sd, tmp / "good.pth")
    (tmp / "cut.pth").write_bytes((tmp / "good.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"cannot be read \(not a complete torch.save file: truncated") as e:
        load_pretrained(model, poster=tmp / "cut.pth")
    assert "\n" not in str(e.value) and len(str(e.value)) < 240  # one short line, not torch's paragraph
    (tmp / "text.pth").write_text("this is not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match="truncated, or another format"):
        load_pretrained(model, ir50=tmp / "text.pth")
    assert load_pretrained(model) is None


def test_pickled_python_objects_are_replaced_not_run(tiny_files):
    """Trained POSTER++ checkpoints pickle the authors' RecorderMeter (with numpy arrays)."""
    model, sd, tmp = tiny_files
    torch.save(sd, tmp / "sd.pth")
    script = (
        "import sys, numpy as np, torch\n"
        "class RecorderMeter:\n"
        "    def __init__(self): self.epoch_losses = np.zeros((3, 2))\n"
        "    def __reduce__(self): return (RecorderMeter, ())\n"
        "sd = torch.load(sys.argv[1], weights_only=True)\n"
        "torch.save({'epoch': 3, 'state_dict': sd, 'recorder': RecorderMeter(), 'losses': np.arange(3)}, sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp / "sd.pth"), str(tmp / "trained.pth")], check=True)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp / "trained.pth", weights_only=True)  # what a plain safe load does
    report = load_pretrained(model, poster=tmp / "trained.pth")
    rep = report.sources[0]
    assert rep.complete and "__main__.RecorderMeter" in rep.ignored_objects
    assert "ignored object __main__.RecorderMeter" in report.details()
