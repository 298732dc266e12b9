"""`grefel inspect`: counts per split x class, groups, attributes, skipped reasons, provenance, contact sheet."""

from __future__ import annotations

import h5py
import numpy as np
import prepare_fixtures as fx
from PIL import Image

from grefel.data.inspect import dataset_summary, inspect
from grefel.data.prepare import prepare
from grefel.data.shards import PreparedDataset, write_label_set


def test_summary_of_rafdb_with_attributes(tmp_path, capsys):
    fx.make_rafdb(tmp_path / "raw", aligned="folder")
    prepare("rafdb", tmp_path / "raw", progress=False)  # under the (test) data root
    s = inspect("rafdb", per_class=2)
    assert s["total"] == 9
    assert s["counts"]["train"] == {
        "surprise": 1,
        "fear": 1,
        "disgust": 1,
        "happiness": 1,
        "sadness": 1,
        "anger": 1,
        "neutral": 0,
    }
    assert s["counts"]["test"] == {
        "surprise": 1,
        "fear": 0,
        "disgust": 0,
        "happiness": 0,
        "sadness": 0,
        "anger": 0,
        "neutral": 2,
    }
    assert s["attributes"]["gender"]["train"] == {"male": 2, "female": 2, "unsure": 2}
    assert s["skipped"] == {
        "file not found": 1,
        "malformed label line": 1,
        "unknown label code": 1,
        "conflicting duplicate label line": 1,
        "duplicate label line": 1,
    }
    assert s["provenance"]["aligner"]["method"] == "none"
    out = capsys.readouterr().out
    assert "surprise" in out and "attribute: gender" in out and "contact sheet" in out
    sheet = np.asarray(Image.open(s["sheet"]))
    assert sheet.shape[0] > 200 and sheet.shape[1] > 150 and sheet.std() > 10


def test_groups_and_label_sets(tmp_path):
    fx.make_ferg(tmp_path / "raw", per=2)
    ds = PreparedDataset(prepare("ferg", tmp_path / "raw", out=tmp_path / "ferg", progress=False))
    s = dataset_summary(ds)
    assert list(s["counts"]) == [""] and sum(s["counts"][""].values()) == 28
    assert s["groups"][""] == {"groups": 2, "min": 14, "median": 14.0, "max": 14}
    write_label_set(ds.root, "allzero", np.zeros(len(ds), np.int16))
    s = dataset_summary(ds, label_set="allzero")
    assert s["counts"][""]["anger"] == 28 and s["label_set"] == "allzero" and s["split_set"] == "official"
    (ds.root / "splits").mkdir()
    with h5py.File(ds.root / "splits" / "default.h5", "w") as f:
        f["split"] = np.array(["train"] * 20 + ["test"] * 8, dtype="S5")
    s = dataset_summary(ds)
    assert {k: sum(v.values()) for k, v in s["counts"].items()} == {"train": 20, "test": 8}
    assert s["split_set"] == "default"  # names what it counted: the refined split, not the official one
    assert dataset_summary(ds, split_set="official")["split_set"] == "official"


def test_contact_sheet_shows_aligned_faces_per_class(tmp_path):
    fx.make_jaffe(tmp_path / "raw")
    prepare("jaffe", tmp_path / "raw", out=tmp_path / "jaffe", progress=False)
    s = inspect(tmp_path / "jaffe", sheet=tmp_path / "sheet.png", per_class=3, show=False)
    img = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    assert s["sheet"] == str(tmp_path / "sheet.png")
    assert img.shape[0] > 7 * 80  # one row per class (7)
    assert (np.abs(img.astype(int) - [255, 59, 48]).sum(-1) < 60).any()  # template marks drawn on aligned faces
