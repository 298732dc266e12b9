"""`grefel predict` on real photographs shipped inside installed packages (no downloads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_evaluate import error_line, make_checkpoint
from typer.testing import CliRunner

from grefel_cli.main import app


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """astronaut (skimage) and grace_hopper (matplotlib): one face each; coffee: no face; junk bytes."""
    import matplotlib.cbook
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    hopper = d / "grace_hopper.jpg"
    with open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb") as f:
        hopper.write_bytes(f.read())
    Image.fromarray(data.coffee()).save(d / "coffee.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("predict-run"), label_set="clean")


def test_one_face_each_and_valid_json(photos, ckpt, tmp_path):
    out, ann = tmp_path / "res.json", tmp_path / "annotated"
    r = CliRunner().invoke(
        app,
        [
            "predict",
            "--ckpt",
            str(ckpt),
            str(photos / "astronaut.png"),
            str(photos / "grace_hopper.jpg"),
            "--json",
            str(out),
            "--save-annotated",
            str(ann),
        ],
    )
    assert r.exit_code == 0, r.output + str(r.exception)
    res = json.loads(out.read_text())
    assert res["errors"] == [] and res["classes"] == ["hstripes", "vstripes", "disc", "checker"]
    by_file = {}
    for f in res["faces"]:
        by_file.setdefault(f["file"].rsplit("/", 1)[-1], []).append(f)
    assert sorted(by_file) == ["astronaut.png", "grace_hopper.jpg"] and all(len(v) == 1 for v in by_file.values())
    for f in res["faces"]:
        assert f["top_class"] in res["classes"] and f["score"] > 0.9
        assert sum(f["corrected"].values()) == pytest.approx(1, abs=1e-4) and f["confidence"] == max(
            f["corrected"].values()
        )
        assert f["changed"] == (f["top_class"] != f["primary_class"])
    # the astronaut's face is in the upper middle of the 512 x 512 picture
    x1, y1, x2, y2 = by_file["astronaut.png"][0]["box"]
    assert 120 < (x1 + x2) / 2 < 330 and 40 < (y1 + y2) / 2 < 220 and 40 < x2 - x1 < 200
    for name, src in (("astronaut.annotated.png", "astronaut.png"), ("grace_hopper.annotated.png", "grace_hopper.jpg")):
        a = np.asarray(Image.open(ann / name).convert("RGB"))
        s = np.asarray(Image.open(photos / src).convert("RGB"))
        assert a.shape == s.shape and (a != s).any()  # same picture with something drawn on it


def test_bad_files_do_not_stop_the_batch(photos, ckpt, tmp_path):
    out = tmp_path / "res.csv"
    r = CliRunner().invoke(
        app, ["predict", "--ckpt", str(ckpt), str(photos), str(tmp_path / "missing.png"), "--csv", str(out)]
    )
    assert r.exit_code == 0, r.output + str(r.exception)
    import csv

    rows = list(csv.DictReader(out.open()))
    errors = {row["file"].rsplit("/", 1)[-1]: row["error"] for row in rows if row["error"]}
    assert "no face found" in errors["coffee.png"]
    assert "truncated or corrupt image" in errors["broken.jpg"]
    assert "not found" in errors["missing.png"]
    assert sorted(row["file"].rsplit("/", 1)[-1] for row in rows if not row["error"]) == [
        "astronaut.png",
        "grace_hopper.jpg",
    ]


def test_nothing_classified_exits_1(photos, ckpt):
    r = CliRunner().invoke(app, ["predict", "--ckpt", str(ckpt), str(photos / "coffee.png")])
    assert r.exit_code == 1


def test_align_none_classifies_the_whole_image(photos, ckpt):
    from grefel.inference.predict import predict

    res, classes = predict(ckpt, [photos / "coffee.png"], align="none", show_progress=False)
    assert (
        len(res) == 1
        and res[0].error is None
        and res[0].top_class in classes
        and res[0].box == [100.0, 0.0, 500.0, 400.0]
    )


def test_unusable_checkpoint_fails_cleanly(photos, ckpt, tmp_path):
    data = ckpt.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[:1000])
    r = CliRunner().invoke(app, ["predict", "--ckpt", str(trunc), str(photos / "astronaut.png")])
    assert r.exit_code == 1 and "truncated" in error_line(r)

    import torch

    from grefel.training.checkpoint import save_checkpoint

    payload = torch.load(ckpt, weights_only=True)
    payload["dataset"] = {**payload["dataset"], "classes": ["a", "b", "c"]}  # 3 names for a 4-class head
    save_checkpoint(tmp_path / "odd.pt", payload)
    r = CliRunner().invoke(app, ["predict", "--ckpt", str(tmp_path / "odd.pt"), str(photos / "astronaut.png")])
    assert r.exit_code == 1 and "4-class head" in error_line(r)


def test_unwritable_annotation_folder_is_one_line(photos, ckpt, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for target in (blocker, blocker / "sub"):
        r = CliRunner().invoke(
            app, ["predict", "--ckpt", str(ckpt), str(photos / "astronaut.png"), "--save-annotated", str(target)]
        )
        assert r.exit_code == 1 and "the folder for annotated copies" in error_line(r), r.output


def test_an_rgba_face_and_the_same_face_on_white_predict_alike(ckpt, tmp_path):
    """One image decoder for prepare and predict: transparent pixels are composited over white, as
    the FERG-DB reader does, never dropped with their colour left behind."""
    from grefel.core.images import decode_image
    from grefel.inference.predict import predict

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    alpha = np.full((128, 128), 255, np.uint8)
    alpha[:, :40] = 0  # a transparent band whose hidden colour differs from white
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    on_white = rgb.copy()
    on_white[:, :40] = 255
    Image.fromarray(on_white).save(tmp_path / "white.png")
    assert np.array_equal(decode_image((tmp_path / "rgba.png").read_bytes()), on_white)
    recs, _ = predict(ckpt, [tmp_path / "rgba.png", tmp_path / "white.png"], align="none", show_progress=False)
    assert recs[0].corrected == recs[1].corrected and recs[0].primary == recs[1].primary
    dropped = predict(ckpt, [tmp_path / "rgba.png"], align="none", show_progress=False)[0][0]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")  # what dropping the alpha channel would give
    assert predict(ckpt, [tmp_path / "rgb.png"], align="none", show_progress=False)[0][0].corrected != dropped.corrected


def test_a_decompression_bomb_is_one_error_row_and_the_good_face_still_counts(ckpt, tmp_path, monkeypatch):
    import grefel.core.images as I
    from grefel.inference.predict import predict

    monkeypatch.setattr(I, "MAX_PIXELS", 100 * 100)  # a 128 x 128 image now counts as a bomb
    Image.new("RGB", (128, 128), (10, 20, 30)).save(tmp_path / "bomb.png")
    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "face.png")
    recs, _ = predict(ckpt, [tmp_path / "bomb.png", tmp_path / "face.png"], align="none", show_progress=False)
    by = {r.file.rsplit("/", 1)[-1]: r for r in recs}
    assert "too large" in by["bomb.png"].error and by["face.png"].error is None and by["face.png"].top_class
