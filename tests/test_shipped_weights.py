"""The tiny encoder shipped inside the package: its record, its checks, and the tiny preset starting from it."""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

import pytest
import torch

from grefel.core.errors import CheckpointError
from grefel.core.io import sha256_file, write_json
from grefel.models.grefel import create_model
from grefel.weights import catalog, store
from grefel.weights.store import plan_pretrained, shipped_file, shipped_record
from grefel.weights.verify import check_weight_file, identify, load_pretrained


def test_the_shipped_file_matches_its_record():
    rec = shipped_record("tiny-encoder")
    path = shipped_file("tiny-encoder")
    assert sha256_file(path) == rec["sha256"] and path.stat().st_size == rec["bytes"]
    assert rec["command"].startswith("grefel pretrain ") and "--encoder-task expression" in rec["command"]
    assert rec["synthesis_seed"] != rec["closest_demo_character"]["demo_seed"]  # characters the demo never sees
    assert rec["closest_demo_character"]["distance"] > 0.05
    assert 0 < rec["pretext"]["stage2"]["val_expression_acc"] <= 1


def test_the_shipped_file_fills_every_key_of_the_tiny_encoder_only():
    path = shipped_file("tiny-encoder")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert identify(sd)[0] == "tiny-encoder"
    rep = check_weight_file(path)
    assert rep.complete and rep.kind == "tiny-encoder" and "shipped with grefel" in rep.format
    model = create_model("tiny", 7, encoder={"freeze_landmarks": True})
    assert load_pretrained(model, tiny_encoder=path).sources[0].complete
    with pytest.raises(CheckpointError) as e:  # at another preset's widths nothing fits
        load_pretrained(create_model("full", 7), tiny_encoder=path)
    assert "\n" not in str(e.value) and "tiny preset" in str(e.value)


def test_tiny_preset_starts_from_the_shipped_file_unless_one_is_registered(tmp_path, monkeypatch):
    monkeypatch.setenv("GREFEL_DATA_ROOT", str(tmp_path / "data"))
    assert plan_pretrained("tiny") == {"tiny-encoder": shipped_file("tiny-encoder")}
    mine = tmp_path / "mine.pth"
    assert plan_pretrained("tiny", poster=mine) == {"poster": mine}  # a file given instead: that one


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_a_damaged_shipped_file_is_one_line(tmp_path, monkeypatch, damage):
    folder = tmp_path / "shipped"
    shutil.copytree(catalog.SHIPPED_FOLDER, folder)
    target = folder / catalog.SHIPPED["tiny-encoder"]
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[:-10])
    monkeypatch.setattr(store, "SHIPPED_FOLDER", folder)
    with pytest.raises(CheckpointError) as e:
        shipped_file("tiny-encoder")
    assert "\n" not in str(e.value) and "reinstall grefel" in str(e.value)


def test_a_record_that_lies_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "shipped"
    shutil.copytree(catalog.SHIPPED_FOLDER, folder)
    record = folder / "tiny-encoder.json"
    write_json(record, {**shipped_record("tiny-encoder"), "sha256": "0" * 64})
    monkeypatch.setattr(store, "SHIPPED_FOLDER", folder)
    with pytest.raises(CheckpointError):
        shipped_file("tiny-encoder")


def test_a_file_that_does_not_fit_the_tiny_preset_is_one_line(tmp_path):
    """A full-size POSTER++ encoder, or a tiny encoder with another stem, given to the tiny preset."""
    big = tmp_path / "poster-full.pth"
    torch.save(create_model("full", 7).encoder.state_dict(), big)
    tiny = create_model("tiny", 7, encoder={"freeze_landmarks": True})
    with pytest.raises(CheckpointError) as e:
        load_pretrained(tiny, poster=big)
    assert "\n" not in str(e.value) and "does not fit" in str(e.value)
    sd = torch.load(shipped_file("tiny-encoder"), map_location="cpu", weights_only=True)
    sd["ir_back.input_layer.0.weight"] = sd["ir_back.input_layer.0.weight"][:, :2]  # another input width
    odd = tmp_path / "odd.pth"
    torch.save(sd, odd)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(tiny, tiny_encoder=odd)
    assert "\n" not in str(e.value) and "shape" in str(e.value)


def test_a_wheel_carries_the_shipped_files():
    """pyproject's package data for grefel.weights covers every file in shipped/ (an install that is not
    editable gets them too)."""
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = [p.relative_to(root / "grefel" / "weights").as_posix() for p in catalog.SHIPPED_FOLDER.iterdir()]
    assert sorted(shipped) == sorted(["shipped/tiny-encoder.pth", "shipped/tiny-encoder.json"])
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns["grefel.weights"]) for f in shipped)
