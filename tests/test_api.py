"""The Python API: grefel.load(path).predict(files) / .predict_faces(faces), the code `grefel predict` runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from test_evaluate import make_checkpoint
from test_predict_video import FRAMES, two_faces, write_video
from typer.testing import CliRunner

import grefel
from grefel.core.errors import GrefelError
from grefel_cli.main import app


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("api")
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    write_video(d / "clip.avi", two_faces())
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("api-run"), label_set="clean")


def test_import_grefel_stays_light():
    code = (
        "import sys, grefel; heavy = ('torch', 'pandas', 'onnxruntime', 'cv2', 'grefel.api',"
        " 'grefel.inference.predict');"
        "print([m for m in heavy if m in sys.modules], callable(grefel.load))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["[]", "True"], out.stdout + out.stderr


def test_predict_images_and_videos_as_the_cli_does(files, ckpt, tmp_path):
    model = grefel.load(ckpt)
    assert isinstance(model, grefel.Model) and model.backend == "torch"
    assert model.classes == ["hstripes", "vstripes", "disc", "checker"] and "torch" in repr(model)
    df = model.predict([files / "astronaut.png", files / "clip.avi"], smooth=2)
    assert isinstance(df, pd.DataFrame)
    image, video = df[df["frame"].isna()], df[df["frame"].notna()]
    assert len(image) == 1 and image["file"].iloc[0].endswith("astronaut.png")
    assert len(video) == 2 * FRAMES and video["track"].nunique() == 2 and video["smoothed_class"].notna().all()
    # the same rows as `grefel predict --csv`
    r = CliRunner().invoke(
        app,
        ["predict", "--ckpt", str(ckpt), str(files / "astronaut.png"), str(files / "clip.avi")]
        + ["--smooth", "2", "--csv", str(tmp_path / "cli.csv")],
    )
    assert r.exit_code == 0, r.output
    cli = pd.read_csv(tmp_path / "cli.csv")
    assert list(cli.columns) == list(df.columns)
    num = [c for c in df if c.startswith(("p_", "primary_p_", "smoothed_p_", "x")) or c == "time"]
    np.testing.assert_allclose(cli[num].to_numpy(float), df[num].to_numpy(float), rtol=1e-12)  # CSV keeps 17 digits
    assert (cli["top_class"] == df["top_class"]).all()
    assert model.predict(files / "astronaut.png").shape[0] == 1  # one path, not a list


def test_predict_faces_numpy_and_torch(ckpt):
    import torch

    from grefel.inference.torch_model import TorchClassifier

    model = grefel.load(ckpt)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 128, 128, 3), dtype=np.uint8)
    df = model.predict_faces(x)
    ref = TorchClassifier(ckpt, "cpu").run(x)
    pcols = [f"p_{c}" for c in model.classes]
    np.testing.assert_array_equal(df[pcols].to_numpy(np.float32), ref["corrected"])  # the same forward pass
    assert list(df["face"]) == [0, 1, 2, 3, 4] and df["top_class"].notna().all()
    tdf = model.predict_faces(torch.from_numpy(x))
    np.testing.assert_array_equal(tdf[pcols].to_numpy(), df[pcols].to_numpy())
    assert list(model.predict_faces(x, batch_size=2)["face"]) == [0, 1, 2, 3, 4]  # batches of 2, 2, 1
    assert len(model.predict_faces(x[0])) == 1  # one face (H, W, 3)
    assert len(model.predict_faces(x[:2, :112, :112])) == 2  # another size: resized to the model's
    with pytest.raises(GrefelError, match="uint8 faces"):
        model.predict_faces(x.astype(np.float32))


def test_load_errors_are_grefel_errors(tmp_path):
    with pytest.raises(GrefelError, match="not found"):
        grefel.load(tmp_path / "missing.pt")
    with pytest.raises(GrefelError, match="folder"):
        grefel.load(tmp_path)
    with pytest.raises(GrefelError, match="unknown face aligner"):
        grefel.load(tmp_path / "x.pt", align="bogus")
