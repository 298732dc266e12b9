"""`grefel export` (ONNX) and `grefel predict --onnx`: ONNX Runtime against PyTorch, without torch in the loop.

Tolerance. Both runtimes compute in float32 (unit roundoff u = 2^-24 = 6e-8) and differ only in the
order of their sums and in fused kernels. A length-n dot product computed in two orders differs by
at most about sqrt(n) u relative to its magnitude with rounding errors of random sign (n u in the
worst case): the longest reductions here are 3 x 3 x 768 = 6912 terms (the full preset's 768-wide
convolutions), sqrt(n) u = 5e-6, and about twenty such layers lie in series, so differences up to
~1e-4 in the embedding (O(1) values: LayerNorm'd tokens through a sigmoid gate, or a BatchNorm) are
fp32 arithmetic, not a wrong graph. The distributions are softmaxes, whose Jacobian has infinity-norm
at most 1/2, so they differ by no more than their log-inputs. A wrong graph (a missing layer, a
transposed weight) moves these outputs by 1e-2 and more. Hence 1e-4, relative to max(1, |value|).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_evaluate import error_line, make_checkpoint
from typer.testing import CliRunner

from grefel_cli.main import app

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny-preset checkpoint and its export (through the CLI)."""
    d = tmp_path_factory.mktemp("export-tiny")
    ckpt = make_checkpoint(d, label_set="clean")
    r = CliRunner().invoke(app, ["export", "--ckpt", str(ckpt), "--onnx", str(d / "tiny.onnx")])
    assert r.exit_code == 0, r.output + str(r.exception)
    assert "wrote" in r.output and "max |difference|" in r.output
    return ckpt, d / "tiny.onnx"


def faces(n=5, size=128, seed=0):
    """Random uint8 faces plus two flat ones (the extremes of the input range)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    x[0], x[1] = 0, 255
    return x


def assert_match(ckpt, onnx, x):
    from grefel.inference.onnx_model import OnnxClassifier
    from grefel.inference.torch_model import TorchClassifier

    ref = TorchClassifier(ckpt, "cpu").run(x)
    got = OnnxClassifier(onnx).run(x)
    for k in ("primary", "corrected", "embedding"):
        scale = max(1.0, float(np.abs(ref[k]).max()))
        assert got[k].shape == ref[k].shape and np.abs(got[k] - ref[k]).max() <= TOL * scale, k


def test_tiny_matches_pytorch_and_carries_metadata(tiny):
    ckpt, onnx = tiny
    assert_match(ckpt, onnx, faces())
    import onnx as onnx_lib

    meta = {p.key: p.value for p in onnx_lib.load(str(onnx)).metadata_props}
    assert json.loads(meta["classes"]) == ["hstripes", "vstripes", "disc", "checker"]
    assert meta["image_size"] == "128" and meta["crop"] == "112"
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406] and json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    assert "centre crop 112x112" in meta["preprocessing"]


@pytest.mark.slow
def test_full_preset_matches_pytorch(tmp_path):
    import torch

    from grefel.inference.export import export_onnx
    from grefel.models.grefel import create_model
    from grefel.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("full", num_classes=7)
    classes = ["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    ckpt = save_checkpoint(
        tmp_path / "full.pt",
        {
            "model": model.state_dict(),
            "model_config": model.model_config,
            "model_kwargs": model.model_kwargs,
            "dataset": {"classes": classes},
        },
    )
    res = export_onnx(ckpt, tmp_path / "full.onnx")
    assert res.classes == classes and max(res.max_abs_diff.values()) <= TOL
    assert_match(ckpt, res.path, faces(3))


def test_numpy_preset_equals_eval_batch():
    """Same float32 operations in the same order (x / 255, crop, (x - mean) / std): equal up to a rounding
    of the last step (|x| < 2.7, so 1e-6 is four ulps)."""
    from grefel.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_batch
    from grefel.inference.onnx_model import preprocess

    x = faces(4, size=128)
    np.testing.assert_allclose(preprocess(x, 112, IMAGENET_MEAN, IMAGENET_STD), eval_batch(x, 112).numpy(), atol=1e-6)
    small = faces(2, size=100)  # enlarged to the crop first: bilinear in both, within uint8-scale rounding
    np.testing.assert_allclose(
        preprocess(small, 112, IMAGENET_MEAN, IMAGENET_STD), eval_batch(small, 112).numpy(), atol=2e-2
    )


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    from PIL import Image
    from skimage import data

    p = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(p)
    return p


def test_predict_onnx_equals_predict_ckpt(tiny, astronaut, tmp_path):
    ckpt, onnx = tiny
    out = {}
    for flag, model in (("--ckpt", ckpt), ("--onnx", onnx)):
        r = CliRunner().invoke(app, ["predict", flag, str(model), str(astronaut), "--json", str(tmp_path / "r.json")])
        assert r.exit_code == 0, r.output + str(r.exception)
        out[flag] = json.loads((tmp_path / "r.json").read_text())["faces"]
    a, b = out["--ckpt"], out["--onnx"]
    assert len(a) == len(b) == 1 and a[0]["box"] == b[0]["box"] and a[0]["top_class"] == b[0]["top_class"]
    for k in ("corrected", "primary"):
        assert max(abs(a[0][k][c] - b[0][k][c]) for c in a[0][k]) <= TOL


def test_onnx_predict_never_imports_torch(tiny, astronaut):
    _, onnx = tiny
    code = (
        "import sys, grefel; m = grefel.load(sys.argv[1]); df = m.predict(sys.argv[2]);"
        "print(m.backend, len(df), df['top_class'].notna().all(), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(onnx), str(astronaut)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["onnx", "1", "True", "False"]


def test_bad_onnx_files_fail_cleanly(tiny, astronaut, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    r = CliRunner().invoke(app, ["predict", "--onnx", str(junk), str(astronaut)])
    assert r.exit_code == 1 and "cannot be loaded by ONNX Runtime" in error_line(r)

    import onnx as onnx_lib

    m = onnx_lib.load(str(tiny[1]))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx_lib.save(m, str(bare))
    r = CliRunner().invoke(app, ["predict", "--onnx", str(bare), str(astronaut)])
    assert r.exit_code == 1 and "not a model written by grefel export" in error_line(r)

    r = CliRunner().invoke(app, ["predict", str(astronaut)])
    assert r.exit_code == 2 and "--ckpt" in r.output  # neither --ckpt nor --onnx


def test_export_to_unwritable_path_is_one_line(tiny, tmp_path):
    ckpt, _ = tiny
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = CliRunner().invoke(app, ["export", "--ckpt", str(ckpt), "--onnx", str(blocker / "m.onnx")])
    assert r.exit_code == 1 and "as the folder of the ONNX file: it is a file" in error_line(r)


def test_a_gpu_asked_for_where_there_is_none_is_one_line(tiny, astronaut, monkeypatch):
    """--device cuda never falls back to the CPU in silence, through PyTorch or ONNX Runtime."""
    import onnxruntime as ort
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    ckpt, onnx = tiny
    for model in (["--ckpt", str(ckpt)], ["--onnx", str(onnx)]):
        r = CliRunner().invoke(app, ["predict", *model, "--device", "cuda", str(astronaut)])
        assert r.exit_code == 1 and "device 'cuda' asked for" in error_line(r), r.output
    r = CliRunner().invoke(app, ["predict", "--ckpt", str(ckpt), "--device", "tpu", str(astronaut)])
    assert r.exit_code == 1 and "unknown device 'tpu'" in error_line(r), r.output
