"""`grefel synth`: layout, counts, determinism, resume, and that the class lives in the geometry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from grefel.core.errors import GrefelError
from grefel.core.io import read_json
from grefel.core.paths import SYNTH_MARKER as MARKER
from grefel.synth import faces as synth
from grefel.synth.faces import (
    EXPRESSIONS,
    character_names,
    class_counts,
    draw_image,
    generate,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _expected_names(characters: int, per_class: int, imbalance: float) -> set[str]:
    counts = class_counts(per_class, imbalance)
    return {
        f"{c}/{c}_{e}/{c}_{e}_{n}.png"
        for c in character_names(characters)
        for e in EXPRESSIONS
        for n in range(1, counts[e] + 1)
    }


# -- counts and layout -----------------------------------------------------------------------
def test_class_counts_formula():
    # n_r = max(1, round(N * R ** (-r / 6))), r = rank in joy, neutral, sadness, surprise, anger, disgust, fear
    assert class_counts(100, 3.0) == {
        "anger": 48,
        "disgust": 40,
        "fear": 33,
        "joy": 100,
        "neutral": 83,
        "sadness": 69,
        "surprise": 58,
    }
    assert class_counts(10, 1.0) == dict.fromkeys(EXPRESSIONS, 10)
    assert class_counts(64, 64.0) == {
        "joy": 64,
        "neutral": 32,
        "sadness": 16,
        "surprise": 8,
        "anger": 4,
        "disgust": 2,
        "fear": 1,
    }
    assert min(class_counts(2, 100.0).values()) == 1
    assert list(class_counts(5)) == list(EXPRESSIONS)


def test_character_names_are_letters_and_unique():
    names = character_names(synth.MAX_CHARACTERS)
    assert names[:3] == ["ava", "bo", "cleo"] and len(set(names)) == len(names)
    assert all(n.isalpha() and n.islower() for n in names)  # the FERG reader's <character>_<expression>_<n>.png
    with pytest.raises(GrefelError, match="characters must be between"):
        generate("unused", characters=synth.MAX_CHARACTERS + 1)


def test_layout_counts_modes_and_size(tmp_path):
    out = generate(tmp_path / "s", characters=3, per_class=12, imbalance=2.0, size=48, seed=1, progress=False)
    files = _tree(out)
    assert set(files) == _expected_names(3, 12, 2.0)
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "ava", "bo", "cleo"])
    assert sorted(p.name for p in (out / "bo").iterdir()) == [f"bo_{e}" for e in EXPRESSIONS]
    assert (out / "ava/ava_joy/ava_joy_12.png").is_file() and not (out / "ava/ava_joy/ava_joy_13.png").exists()
    assert not (out / "ava/ava_joy/ava_joy_0.png").exists() and not (out / "ava/ava_joy/ava_joy_01.png").exists()
    modes = []
    for rel in files:
        with Image.open(out / rel) as im:
            assert im.format == "PNG" and im.size == (48, 48)
            modes.append(im.mode)
    assert set(modes) == {"RGB", "RGBA"}
    assert 0.15 < modes.count("RGBA") / len(modes) < 0.45  # about 30 % carry alpha, like FERG renders
    marker = read_json(out / MARKER)
    assert marker["complete"] and marker["images"] == len(files) == 3 * sum(class_counts(12, 2.0).values())
    assert marker["settings"] == {"characters": 3, "per_class": 12, "size": 48, "seed": 1, "imbalance": 2.0}


def test_rgba_alpha_marks_the_head():
    for n in range(1, 40):
        im = draw_image(0, 0, "neutral", n, 64)
        if im.mode == "RGBA":
            a = np.asarray(im)[..., 3]
            assert a[32, 32] == 255 and a[0, 0] == 0 and a[2, 62] == 0  # face opaque, corners transparent
            return
    pytest.fail("no RGBA image among 39 draws")


# -- determinism -----------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(characters=2, per_class=4, imbalance=1.0, size=40, progress=False)
    a = _tree(generate(tmp_path / "a", seed=7, **kw))
    b = _tree(generate(tmp_path / "b", seed=7, workers=2, **kw))  # worker processes: same bytes
    c = _tree(generate(tmp_path / "c", seed=8, **kw))
    assert a == b
    assert a.keys() == c.keys()
    assert sum(a[k] != c[k] for k in a) == len(a)


# -- reruns, resume, killed runs -------------------------------------------------------------
def test_rerun_is_a_no_op_or_a_clear_error(tmp_path):
    out = tmp_path / "s"
    kw = dict(characters=2, per_class=3, size=40, seed=0, progress=False)
    generate(out, **kw)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    generate(out, **kw)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    with pytest.raises(GrefelError, match=r"other settings \(seed 0 \(now 1\)\)"):
        generate(out, **{**kw, "seed": 1})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(GrefelError, match="not empty"):
        generate(foreign, **kw)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GrefelError, match="is a file"):
        generate(tmp_path / "file", **kw)
    with pytest.raises(GrefelError, match="imbalance"):
        generate(tmp_path / "new", imbalance=0.5)


def test_resume_redraws_missing_and_truncated_files(tmp_path):
    kw = dict(characters=2, per_class=3, size=40, seed=3, progress=False)
    ref = _tree(generate(tmp_path / "ref", **kw))
    out = generate(tmp_path / "s", **kw)
    (out / "bo/bo_fear/bo_fear_1.png").unlink()
    trunc = out / "ava/ava_joy/ava_joy_2.png"
    trunc.write_bytes(trunc.read_bytes()[:100])  # what an OS crash could leave
    stale = out / "ava/ava_joy/.ava_joy_3.png.999.tmp"
    stale.write_bytes(b"partial")
    generate(out, **kw)
    assert _tree(out) == ref
    assert not stale.exists()


def test_killed_run_leaves_only_whole_pngs_and_resumes(tmp_path):
    out = tmp_path / "s"
    kw = dict(characters=2, per_class=70, imbalance=1.0, size=32, seed=2, progress=False)
    code = f"from grefel.synth.faces import generate; generate({str(out)!r}, **{kw!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(out.glob("*/*/*.png"))) < 30:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    pngs = list(out.glob("*/*/*.png"))
    assert 30 <= len(pngs) < len(_expected_names(2, 70, 1.0)), "the run should be cut short"
    assert not read_json(out / MARKER)["complete"]
    assert all(synth._is_whole_png(p) for p in pngs)
    for p in pngs:  # every visible file decodes
        with Image.open(p) as im:
            im.load()
    first = {p.relative_to(out).as_posix(): p.read_bytes() for p in pngs}
    generate(out, **kw)
    files = _tree(out)
    assert set(files) == _expected_names(2, 70, 1.0) and read_json(out / MARKER)["complete"]
    assert all(files[k] == v for k, v in first.items())
    assert not list(out.rglob("*.tmp"))


# -- the class is in the geometry, not in a trivial cue ---------------------------------------
def _as_prepared_rgb(im: Image.Image) -> np.ndarray:
    """RGB as `prepare ferg` makes it: transparent pixels become white."""
    if im.mode == "RGBA":
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    return np.asarray(im.convert("RGB"))


def _trivial_features(rgb: np.ndarray) -> np.ndarray:
    """Mean colour per channel, centre of mass and bounding box of the darkest quarter of the pixels."""
    grey = rgb.mean(-1)
    ys, xs = np.nonzero(grey <= np.percentile(grey, 25))
    return np.r_[rgb.reshape(-1, 3).mean(0), ys.mean(), xs.mean(), ys.min(), ys.max(), xs.min(), xs.max()]


def test_expressions_come_from_geometry_not_from_trivial_cues():
    from skimage.feature import hog
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    characters, per_class, held_out = 20, 5, 4  # balanced; test on 4 characters never seen in training
    images, labels, groups = [], [], []
    for c in range(characters):
        for k, e in enumerate(EXPRESSIONS):
            for n in range(1, per_class + 1):
                images.append(_as_prepared_rgb(draw_image(0, c, e, n, 128)))
                labels.append(k)
                groups.append(c)
    y, train = np.array(labels), np.array(groups) < characters - held_out
    test = ~train

    trivial = np.array([_trivial_features(im) for im in images])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(trivial[train], y[train])
    acc_trivial = (clf.predict(trivial[test]) == y[test]).mean()

    grey64 = [np.asarray(Image.fromarray(im).convert("L").resize((64, 64), Image.BILINEAR)) for im in images]
    geometry = np.array([hog(g, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(3, 3)) for g in grey64])
    clf = RidgeClassifier(alpha=10.0).fit(geometry[train], y[train])
    acc_geometry = (clf.predict(geometry[test]) == y[test]).mean()
    # faces are left-right symmetric in distribution: mirrored unseen faces are as easy
    mirrored = np.array(
        [
            hog(g[:, ::-1], orientations=9, pixels_per_cell=(8, 8), cells_per_block=(3, 3))
            for g, t in zip(grey64, test)
            if t
        ]
    )
    acc_mirrored = (clf.predict(mirrored) == y[test]).mean()

    print(
        f"held-out characters: trivial cues {acc_trivial:.3f}, HOG {acc_geometry:.3f}, HOG mirrored {acc_mirrored:.3f}"
    )
    assert acc_trivial < 0.35, f"mean colour / dark-pixel position predicts the class ({acc_trivial:.2f})"
    assert acc_geometry > 0.80, (
        f"HOG of the face shape should carry the class to unseen characters ({acc_geometry:.2f})"
    )
    assert acc_mirrored > 0.80 and abs(acc_mirrored - acc_geometry) < 0.08, (acc_mirrored, acc_geometry)


# -- the command and the real prepare path ----------------------------------------------------
def test_cli_synth(tmp_path):
    from grefel_cli.main import app

    r = CliRunner().invoke(app, ["synth", "--help"])
    assert r.exit_code == 0 and "Examples" in r.output
    r = CliRunner().invoke(
        app, ["synth", str(tmp_path / "s"), "--characters", "2", "--per-class", "2", "--size", "40", "--seed", "4"]
    )
    assert r.exit_code == 0, r.output
    assert set(_tree(tmp_path / "s")) == _expected_names(2, 2, 3.0)
    assert "next: grefel prepare ferg" in " ".join(r.output.split())
    r = CliRunner().invoke(
        app, ["synth", str(tmp_path / "s"), "--characters", "2", "--per-class", "2", "--size", "40", "--seed", "5"]
    )
    assert r.exit_code == 1


def test_prepare_ferg_reads_the_synthetic_tree(tmp_path):
    prepare_mod = pytest.importorskip("grefel.data.prepare")
    from grefel.data.shards import PreparedDataset

    raw = generate(tmp_path / "raw", characters=3, per_class=4, imbalance=2.0, size=64, seed=0, progress=False)
    ds = PreparedDataset(prepare_mod.prepare("ferg", raw, out=tmp_path / "ferg", align="none", size=64, progress=False))
    counts = class_counts(4, 2.0)
    assert len(ds) == 3 * sum(counts.values())
    meta = ds.meta
    assert sorted(meta["group"].unique()) == ["ava", "bo", "cleo"]
    per_class = meta.groupby("label").size().to_dict()
    # folder "joy" is FERG's class "happiness"; the other names are the same
    expected = {
        ds.classes.index("happiness" if e == "joy" and "happiness" in ds.classes else e): 3 * n
        for e, n in counts.items()
    }
    assert per_class == expected
    assert (tmp_path / "ferg" / "skipped.csv").read_text().strip().splitlines()[1:] == []
    # the provenance says where the faces came from, so reports never file them under FERG-DB
    assert ds.synthetic["generator"] == "grefel synth" and ds.synthetic["settings"]["characters"] == 3
    assert ds.synthetic["settings"]["seed"] == 0
