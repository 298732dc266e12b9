"""The pretrained-weights store: identification by content, verification, sha256 registry, copy / link,
re-adding, bad files, `grefel weights` commands, what a preset needs, and detector lookup."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from test_evaluate import error_line
from test_weights import ir50_evolve_format, ir50_split_format, mobilefacenet_format, poster_format
from typer.testing import CliRunner

from grefel.core.errors import CheckpointError
from grefel.models.grefel import create_model
from grefel.weights.catalog import FACEXLIB_RELEASE
from grefel.weights.store import (
    REGISTRY,
    MissingWeightsError,
    detector_weights,
    plan_pretrained,
    read_registry,
    registered_file,
    shipped_file,
    store_dir,
)
from grefel.weights.verify import add_weights, identify
from grefel_cli.main import app


def paths(data_root=None) -> dict:
    """Kind -> path of every registered file."""
    return {k: e.path for k, e in read_registry(data_root).items()}


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _retinaface_state(network: str, seed: int = 0, prefix: str = "module.") -> dict:
    """facexlib's RetinaFace state dict as its published files hold it (keys with DataParallel's 'module.')."""
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(seed)
    net = RetinaFace(network_name=network, half=False, device="cpu")
    return {prefix + k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def encoder_state():
    torch.manual_seed(3)
    return {k: v.clone() for k, v in create_model("full", 7).encoder.state_dict().items()}


@pytest.fixture(scope="module")
def small(tmp_path_factory, encoder_state):
    """Small real-format files: two different MobileFaceNets and the mobile0.25 detector."""
    d = tmp_path_factory.mktemp("small")
    mfn = mobilefacenet_format(encoder_state)
    torch.save({"state_dict": mfn, "epoch": 90}, d / "mobilefacenet_model_best.pth.tar")
    other = {k: (v + 1 if v.is_floating_point() else v) for k, v in mfn.items()}
    torch.save({"state_dict": other}, d / "mobilefacenet_retrained.pth.tar")
    torch.save(_retinaface_state("mobile0.25"), d / "detection_mobilenet0.25_Final.pth")
    return d


# ------------------------------------------------------------------ identification by keys alone


def _keys(sd: dict) -> dict:
    return {k.removeprefix("module."): v for k, v in sd.items()}


def test_identify_every_kind_from_its_keys(encoder_state):
    assert identify(ir50_evolve_format(encoder_state)) == ("ir50", "face.evoLVe IR-50")
    assert identify(ir50_split_format(encoder_state)) == ("ir50", "POSTER++ split IR-50")
    assert identify(mobilefacenet_format(encoder_state)) == ("mobilefacenet", "MobileFaceNet 68-point landmarks")
    assert identify(_keys(poster_format(encoder_state))) == ("poster", "POSTER++ checkpoint")
    assert identify(_keys(_retinaface_state("resnet50")))[0] == "facexlib-resnet50"
    assert identify(_keys(_retinaface_state("mobile0.25")))[0] == "facexlib-mobile0.25"
    # not weight files: a grefel run's model, a RetinaFace of another backbone, anything else
    assert identify({"encoder." + k: v for k, v in encoder_state.items()}) is None
    heads = {f"{h}.0.conv1x1.weight": torch.zeros(1) for h in ("ClassHead", "BboxHead", "LandmarkHead")}
    assert identify({**heads, "body.features.0.weight": torch.zeros(1)}) is None
    assert identify({"fc.weight": torch.zeros(1)}) is None


# ------------------------------------------------------------------ add: every kind, verified, registered


def test_add_identifies_each_kind_by_content_and_records_coverage_and_sha256(tmp_path, encoder_state):
    """Files under meaningless names: each is identified by content, verified, hashed, registered."""
    src = tmp_path / "downloads"
    src.mkdir()
    files = {
        "ir50": ("a.bin", ir50_evolve_format(encoder_state)),
        "mobilefacenet": ("b.bin", {"state_dict": mobilefacenet_format(encoder_state)}),
        "poster": ("c.bin", {"state_dict": poster_format(encoder_state), "best_acc": 0.9}),
        "facexlib-resnet50": ("d.bin", _retinaface_state("resnet50")),
        "facexlib-mobile0.25": ("e.bin", _retinaface_state("mobile0.25", prefix="")),
    }
    for name, obj in files.values():
        torch.save(obj, src / name)
    results = add_weights([src / name for name, _ in files.values()], link=True)  # links: no 600 MB of copies
    assert [r.status for r in results] == ["added"] * 5, [r.message for r in results]
    reg = json.loads((store_dir() / REGISTRY).read_text())["weights"]
    assert sorted(reg) == sorted(files)
    n_ir = sum(k.startswith("ir_back.") for k in encoder_state)
    n_mfn = sum(k.startswith("face_landback.") for k in encoder_state)
    expect = {  # (matched = total, unused)
        "ir50": (n_ir, len(ir50_evolve_format(encoder_state)) - n_ir),
        "mobilefacenet": (n_mfn, 12),
        "poster": (len(encoder_state), len(poster_format(encoder_state)) - len(encoder_state)),
        "facexlib-resnet50": (len(_retinaface_state("resnet50")), 0),
        "facexlib-mobile0.25": (len(_retinaface_state("mobile0.25")), 0),
    }
    for kind, (name, _) in files.items():
        e = reg[kind]
        assert (e["matched"], e["total"], e["unused"]) == (expect[kind][0], expect[kind][0], expect[kind][1]), kind
        assert e["sha256"] == _sha(src / name) and e["size"] == (src / name).stat().st_size
        assert e["source"] == str((src / name).resolve()) and e["mode"] == "link"
    assert reg["ir50"]["format"] == "face.evoLVe IR-50"
    line = next(r.message for r in results if r.entry.kind == "ir50")
    assert f"{n_ir}/{n_ir} keys matched" in line and "face.evoLVe IR-50" in line and reg["ir50"]["sha256"][:12] in line
    # detectors are stored under facexlib's own names, whatever they were called
    assert paths()["facexlib-resnet50"].name == "detection_Resnet50_Final.pth"
    # POSTER++'s split ir50.pth is the same kind: it replaces face.evoLVe's file only when forced
    torch.save(ir50_split_format(encoder_state), src / "ir50.pth")
    assert add_weights([src / "ir50.pth"], link=True)[0].status == "exists"
    r = add_weights([src / "ir50.pth"], link=True, force=True)[0]
    assert r.status == "replaced" and r.entry.format == "POSTER++ split IR-50"
    assert not (store_dir() / "ir50" / "a.bin").exists()  # the old link is gone, its target kept
    assert (src / "a.bin").is_file()


def test_copy_is_a_verified_copy_and_link_a_symlink(small, tmp_path):
    mfn, det = small / "mobilefacenet_model_best.pth.tar", small / "detection_mobilenet0.25_Final.pth"
    copied = add_weights([mfn], tmp_path / "r1")[0].entry
    assert not copied.path.is_symlink() and copied.path.read_bytes() == mfn.read_bytes()
    assert copied.path == tmp_path / "r1" / "weights" / "mobilefacenet" / mfn.name and copied.mode == "copy"
    linked = add_weights([det], tmp_path / "r1", link=True)[0].entry
    assert linked.path.is_symlink() and linked.path.resolve() == det.resolve() and linked.mode == "link"
    assert paths(tmp_path / "r1") == {"mobilefacenet": copied.path, "facexlib-mobile0.25": linked.path}
    assert paths() == {}  # another data root: untouched
    assert not [p for p in (tmp_path / "r1" / "weights").rglob("*") if p.name.endswith(".tmp")]


def test_readding_the_same_file_changes_nothing(small, tmp_path):
    mfn = small / "mobilefacenet_model_best.pth.tar"
    add_weights([mfn])
    reg = store_dir() / REGISTRY
    before = (reg.read_bytes(), reg.stat().st_mtime_ns)
    renamed = tmp_path / "same-bytes.pth"
    renamed.write_bytes(mfn.read_bytes())
    for f in (mfn, renamed):
        r = add_weights([f])[0]
        assert r.status == "unchanged" and r.ok and "already registered as mobilefacenet" in r.message
    assert (reg.read_bytes(), reg.stat().st_mtime_ns) == before


def test_another_file_of_a_kind_replaces_it_only_with_force(small):
    first, second = small / "mobilefacenet_model_best.pth.tar", small / "mobilefacenet_retrained.pth.tar"
    old = add_weights([first])[0].entry
    r = add_weights([second])[0]
    assert r.status == "exists" and not r.ok and "\n" not in r.message and old.sha256[:12] in r.message
    assert registered_file("mobilefacenet") == old.path and old.path.is_file()
    r = add_weights([second], force=True)[0]
    assert r.status == "replaced" and r.entry.sha256 == _sha(second)
    assert not old.path.exists() and registered_file("mobilefacenet").read_bytes() == second.read_bytes()


def test_bad_files_get_one_line_each_and_the_rest_go_in(small, tmp_path, encoder_state):
    good = small / "mobilefacenet_model_best.pth.tar"
    bad = {
        "missing.pth": None,
        "empty.pth": b"",
        "truncated.pth": good.read_bytes()[:4000],
        "text.pth": b"not a checkpoint\n" * 20,
    }
    for name, data in bad.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "unknown.pth")
    torch.save({"model": {"encoder.x": torch.zeros(1)}, "model_config": {}}, tmp_path / "best.pt")
    shaped = mobilefacenet_format(encoder_state)
    shaped["conv1.conv.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save({"state_dict": shaped}, tmp_path / "wrong_shape.pth.tar")
    files = [tmp_path / n for n in (*bad, "unknown.pth", "best.pt")] + [good, tmp_path / "wrong_shape.pth.tar"]
    results = add_weights(files)
    assert [r.status for r in results] == ["failed"] * 6 + ["added", "failed"]
    for r in results:
        assert "\n" not in r.message and Path(r.source).name in r.message
    msg = {Path(r.source).name: r.message for r in results}
    assert "not found" in msg["missing.pth"] and "empty" in msg["empty.pth"]
    assert "truncated" in msg["truncated.pth"] and "no known weight file" in msg["unknown.pth"]
    assert "grefel run checkpoint" in msg["best.pt"]
    assert "does not fit" in msg["wrong_shape.pth.tar"] and "1 shape mismatches" in msg["wrong_shape.pth.tar"]
    assert list(paths()) == ["mobilefacenet"]


def test_a_failed_install_keeps_the_registry_whole(small, monkeypatch):
    import grefel.weights.verify as wv

    add_weights([small / "detection_mobilenet0.25_Final.pth"])
    reg = (store_dir() / REGISTRY).read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wv, "install_file", full_disk)
    r = add_weights([small / "mobilefacenet_model_best.pth.tar"])[0]
    assert r.status == "failed" and "No space left on device" in r.message
    assert (store_dir() / REGISTRY).read_bytes() == reg


def test_unreadable_registry_is_one_line(small):
    add_weights([small / "mobilefacenet_model_best.pth.tar"])
    (store_dir() / REGISTRY).write_text('{"weights": {"mobilefacenet": ')
    with pytest.raises(CheckpointError, match="registry .* is unreadable .*delete it and add the files again"):
        paths()


# ------------------------------------------------------------------ the commands


def test_cli_add_list_verify(small, tmp_path):
    mfn = small / "mobilefacenet_model_best.pth.tar"
    (tmp_path / "junk.pth").write_bytes(b"junk" * 100)
    r = CliRunner().invoke(app, ["weights", "add", str(mfn), str(tmp_path / "junk.pth")], terminal_width=200)
    assert r.exit_code == 1
    assert "added: mobilefacenet: mobilefacenet_model_best.pth.tar" in r.output
    assert error_line(r).startswith("Error: weight file") and "junk.pth" in error_line(r)
    assert sum(line.startswith("Error:") for line in r.output.splitlines()) == 1
    r = CliRunner().invoke(app, ["weights", "add", str(small / "mobilefacenet_retrained.pth.tar")])
    assert r.exit_code == 1 and error_line(r).endswith("--force replaces it")
    r = CliRunner().invoke(app, ["weights", "list"])  # rich's width outside a terminal: 80 columns
    entry = paths()["mobilefacenet"]
    row = next(line for line in r.output.splitlines() if line.startswith("mobilefacenet "))
    for cell in (mfn.name[:20], _sha(mfn)[:8], "321/321", f"{mfn.stat().st_size / 2**20:.1f}", "copy"):
        assert cell in row, cell
    assert r.exit_code == 0 and str(store_dir()) in r.output
    assert max(len(line) for line in r.output.splitlines()[1:]) <= 80  # the table fits (the title is a path)
    # a flipped byte in the stored copy (same size): its modification time changed, so list hashes it again
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    r = CliRunner().invoke(app, ["weights", "list"])
    assert r.exit_code == 1 and "mobilefacenet (changed)" in error_line(r)
    r = CliRunner().invoke(app, ["weights", "verify"])
    assert r.exit_code == 1 and "mobilefacenet (changed)" in error_line(r) and "--force" in error_line(r)
    assert "changed" in next(line for line in r.output.splitlines() if line.startswith("mobilefacenet "))
    r = CliRunner().invoke(app, ["weights", "add", str(mfn), "--force"])
    assert r.exit_code == 0 and "replaced: mobilefacenet" in r.output
    assert CliRunner().invoke(app, ["weights", "verify"]).exit_code == 0


def test_cli_list_of_an_empty_store_and_a_vanished_link(small, tmp_path):
    r = CliRunner().invoke(app, ["weights", "list"], terminal_width=200)
    assert r.exit_code == 0 and "no weights registered" in r.output and "grefel weights add" in r.output
    moved = tmp_path / "det.pth"
    moved.write_bytes((small / "detection_mobilenet0.25_Final.pth").read_bytes())
    add_weights([moved], link=True)
    moved.unlink()
    r = CliRunner().invoke(app, ["weights", "list"], terminal_width=200)
    assert r.exit_code == 1 and "facexlib-mobile0.25 (missing)" in error_line(r)
    with pytest.raises(
        CheckpointError, match="registered facexlib-mobile0.25 file .*link to .*\\) is missing: add it again"
    ):
        registered_file("facexlib-mobile0.25")
    moved.write_bytes(b"something else")
    with pytest.raises(CheckpointError, match=r"facexlib-mobile0.25 file .* has changed \(another size\)"):
        registered_file("facexlib-mobile0.25")


def test_unwritable_store_is_one_line(small, tmp_path):
    (tmp_path / "root").write_text("a file where the data root should be")
    r = CliRunner().invoke(
        app, ["weights", "add", str(small / "mobilefacenet_model_best.pth.tar"), "--data-root", str(tmp_path / "root")]
    )
    assert r.exit_code == 1 and "cannot write the weights store" in error_line(r)


def test_weights_help_examples_fit_80_columns():
    import inspect

    from grefel_cli.weights import add

    r = CliRunner().invoke(app, ["weights", "add", "--help"], terminal_width=80)
    shown = [line.strip() for line in r.output.splitlines()]
    examples = [line.strip() for line in inspect.cleandoc(add.__doc__).splitlines() if line.startswith("  ")]
    assert examples and all(e in shown for e in examples)
    for cmd in ("list", "verify"):
        assert CliRunner().invoke(app, ["weights", cmd, "--help"]).exit_code == 0


# ------------------------------------------------------------------ what a preset needs


def _register(kind: str, root: Path | None = None) -> Path:
    """A registry entry for ``kind`` without the (slow) verification: for the planning tests only."""
    from grefel.weights.store import WeightEntry, read_entries, write_entries

    store = store_dir(root)
    path = store / kind / f"{kind}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 10)
    entries = read_entries(store)
    entries[kind] = WeightEntry(kind, f"{kind}/{kind}.pth", kind, _sha(path), 10, "copy", str(path), 1, 1, 0, "now")
    write_entries(store, entries)
    return path


def test_full_preset_without_weights_is_one_line_naming_files_and_sources():
    with pytest.raises(MissingWeightsError) as e:
        plan_pretrained("full")
    msg = str(e.value)
    assert "\n" not in msg and str(store_dir()) in msg and e.value.missing == ["ir50", "mobilefacenet"]
    for part in (
        "backbone_ir50_ms1m_epoch120.pth",
        "https://github.com/ZhaoJ9014/face.evoLVe",
        "mobilefacenet_model_best.pth.tar",
        "https://github.com/Talented-Q/POSTER_V2",
        "grefel weights add",
        "POSTER++ checkpoint also serves",
        "from_scratch",
    ):
        assert part in msg, part
    with pytest.raises(MissingWeightsError, match="--from-scratch$"):
        plan_pretrained("full", scratch_hint="or pass --from-scratch")


def test_full_preset_sources_from_the_store_and_arguments(tmp_path):
    assert plan_pretrained("tiny") == {"tiny-encoder": shipped_file("tiny-encoder")}
    ir50 = _register("ir50")
    with pytest.raises(MissingWeightsError) as e:
        plan_pretrained("full")
    assert e.value.missing == ["mobilefacenet"] and "backbone_ir50" not in str(e.value)
    mfn = _register("mobilefacenet")
    assert plan_pretrained("full") == {"ir50": ir50, "mobilefacenet": mfn}
    mine = tmp_path / "my_ir50.pth"
    assert plan_pretrained("full", ir50=mine) == {"ir50": mine, "mobilefacenet": mfn}
    assert plan_pretrained("full", poster=tmp_path / "p.pth") == {"poster": tmp_path / "p.pth"}
    # a POSTER++ checkpoint alone serves when IR-50 / MobileFaceNet are not both there
    root = tmp_path / "other"
    poster = _register("poster", root)
    assert plan_pretrained("full", root) == {"poster": poster}
    with pytest.raises(MissingWeightsError, match="no mobilefacenet file"):  # an explicit IR-50 wants its partner
        plan_pretrained("full", root, ir50=mine)
    ir50.unlink()
    with pytest.raises(CheckpointError, match="registered ir50 file .* is missing"):
        plan_pretrained("full")


# ------------------------------------------------------------------ detectors found in the store


def test_facexlib_detector_found_in_the_store(small, tmp_path):
    from grefel.data.align import FaceAligner
    from grefel.data.prepare import ItemWork

    with pytest.raises(CheckpointError) as e:
        detector_weights("facexlib-mobile0.25")
    msg = str(e.value)
    assert "\n" not in msg and "grefel weights add" in msg and str(store_dir()) in msg and FACEXLIB_RELEASE in msg
    det = small / "detection_mobilenet0.25_Final.pth"
    add_weights([det])
    path, sha = detector_weights("facexlib-mobile0.25")
    al = FaceAligner("facexlib-mobile0.25", path, size=112, weights_sha256=sha)
    for k, v in torch.load(det, weights_only=True).items():
        torch.testing.assert_close(al._detector._model.state_dict()[k.removeprefix("module.")], v)
    assert al.describe()["weights"] == str(registered_file("facexlib-mobile0.25"))
    assert al.describe()["model_sha256"] == _sha(det)
    # prepare's workers get the file of the data root they were given
    other = tmp_path / "root"
    add_weights([det], other, link=True)
    os.environ.pop("GREFEL_DATA_ROOT")  # the autouse fixture's monkeypatch restores it
    path, sha = detector_weights("facexlib-mobile0.25", data_root=other)
    work = ItemWork(reader=None, align="facexlib-mobile0.25", size=112, weights=str(path), weights_sha256=sha)
    assert work.aligner().describe()["weights"] == str(other / "weights" / "facexlib-mobile0.25" / det.name)


def test_a_registered_detector_that_changed_is_refused(small, tmp_path):
    from grefel.data.align import FaceAligner

    det = tmp_path / "det.pth"
    det.write_bytes((small / "detection_mobilenet0.25_Final.pth").read_bytes())
    add_weights([det], link=True)
    data = bytearray(det.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in the weights: same size, so only the hash tells
    det.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="changed since it was registered.*grefel weights add"):
        path, sha = detector_weights("facexlib-mobile0.25")
        FaceAligner("facexlib-mobile0.25", path, weights_sha256=sha)


def test_predict_finds_the_detector_in_the_store(small, tmp_path, monkeypatch):
    from PIL import Image
    from test_evaluate import make_checkpoint

    import grefel.inference.predict as P
    from grefel.inference.predict import predict

    looked_up = []
    real = P.detector_weights
    monkeypatch.setattr(P, "detector_weights", lambda *a: looked_up.append(real(*a)) or looked_up[-1])
    ckpt = make_checkpoint(tmp_path)
    Image.new("RGB", (96, 96), (120, 100, 90)).save(tmp_path / "a.png")
    det = small / "detection_mobilenet0.25_Final.pth"
    add_weights([det])
    results, _ = predict(ckpt, [tmp_path / "a.png"], align="facexlib-mobile0.25", show_progress=False)
    assert results and looked_up == [(registered_file("facexlib-mobile0.25"), _sha(det))]
