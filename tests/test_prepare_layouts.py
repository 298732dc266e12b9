"""`grefel prepare` on generated raw trees in every layout and variant: exact counts, labels, splits, groups."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import prepare_fixtures as fx
import pytest

from grefel.core.errors import DatasetError
from grefel.data.definitions import dataset_ids, load_definition
from grefel.data.prepare import prepare
from grefel.data.shards import PreparedDataset


def run(dataset, raw, tmp_path, **kw) -> PreparedDataset:
    out = prepare(dataset, raw, out=tmp_path / "out", progress=False, **kw)
    return PreparedDataset(out)


def written(ds: PreparedDataset) -> dict:
    m = ds.meta
    return {s: (int(lab), sp) for s, lab, sp in zip(m["source"], m["label"], m["split"])}


def skipped_rows(ds: PreparedDataset) -> list[dict]:
    with open(ds.root / "skipped.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_definition_has_explicit_class_maps():
    for d in map(load_definition, dataset_ids()):
        for p, spec in d.protocols.items():
            assert len(spec["classes"]) == len(set(spec["classes"])) == int(p)
            # every class of every protocol is reachable from a raw code
            assert set(spec["classes"]) <= set(d.codes.values()), d.id
    assert load_definition("rafdb").classes()[0] == "surprise"  # code 1, not the alphabetical 'anger'
    assert load_definition("affectnet").prepared_name("7") == "affectnet7"


@pytest.mark.parametrize("variant", ["folder", "zip", "partition"])
def test_rafdb_original_aligned(tmp_path, variant):
    exp = fx.make_rafdb(
        tmp_path / "raw",
        aligned="zip" if variant == "zip" else "folder",
        label_name="list_partition_label.txt" if variant == "partition" else "list_patition_label.txt",
    )
    ds = run("rafdb", tmp_path / "raw", tmp_path)
    got = written(ds)
    assert len(got) == 9 and ds.manifest["align"] == "none"
    by_stem = {s.rsplit("/", 1)[-1].removesuffix("_aligned.jpg"): v for s, v in got.items()}
    assert by_stem == {k: v[:2] for k, v in exp["expect"].items()}
    if variant == "zip":
        assert all("aligned.zip!aligned/" in s for s in got)
    assert ds.classes == ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    assert list(ds.meta.loc[ds.meta["source"].str.contains("train_00002"), "gender"]) == [1]  # manual attributes kept
    rows = skipped_rows(ds)
    assert len(rows) == exp["skipped"] == ds.manifest["skipped"]["total"]
    reasons = " | ".join(r["reason"] for r in rows)
    assert ("image not found in Image/aligned.zip" if variant == "zip" else "file not found") in reasons
    assert "malformed label line" in reasons and "unknown label code ('9')" in reasons
    # duplicated lines: the first kept, every other listed with its reason, conflicts counted apart
    assert "conflicting duplicate label line (list_pa" in reasons and "'1', this line '9'" in reasons
    assert "duplicate label line (same image and label as" in reasons
    assert ds.manifest["skipped"]["duplicates"] == {"lines": 2, "conflicting": 1}
    assert all(r["source"].rsplit("#", 1)[-1] in ("13", "14") for r in rows if "duplicate" in r["reason"])
    assert (
        ds.manifest["counts"]["splits"]["train"]["surprise"] == 1
        and ds.manifest["counts"]["splits"]["test"]["neutral"] == 2
    )
    assert np.isnan(ds.landmarks()).all()  # align none uses no landmarks


def test_rafdb_landmarks_from_manual_annotation(tmp_path):
    exp = fx.make_rafdb(tmp_path / "raw", aligned="none")
    ds = run("rafdb", tmp_path / "raw", tmp_path)  # no aligned images: default is the manual landmarks
    assert ds.manifest["align"] == "landmarks" and len(ds) == 9
    m = ds.meta
    stem = m["source"].str.rsplit("/", n=1).str[-1].str.removesuffix(".jpg")
    for s, g, r, a in zip(stem, m["gender"], m["race"], m["age"]):
        assert (g, r, a) == tuple(exp["expect"][s][2].values())
    k = int(np.flatnonzero(stem == "train_00003")[0])
    np.testing.assert_allclose(
        ds.landmarks()[k], np.array([[60, 50], [100, 50], [80, 70], [64, 92], [96, 92]]) + 2, atol=1e-4
    )
    assert ds.manifest["attributes"]["gender"] == {"0": "male", "1": "female", "2": "unsure"}


def test_rafdb_repackaged(tmp_path):
    exp = fx.make_rafdb_repackaged(tmp_path / "raw")
    ds = run("rafdb", tmp_path / "raw", tmp_path)
    assert written(ds) == exp["expect"]
    assert [r["reason"] for r in skipped_rows(ds)] == ["unknown label code ('9')"]


@pytest.mark.parametrize("protocol", ["8", "7"])
def test_affectnet_csv_layout(tmp_path, protocol):
    exp = fx.make_affectnet_csv(tmp_path / "raw")
    ds = run("affectnet", tmp_path / "raw", tmp_path, protocol=protocol)
    assert ds.name == f"affectnet{protocol}" and ds.num_classes == int(protocol)
    want = {k: v for k, v in exp["expect"].items() if protocol == "8" or k not in exp["contempt"]}
    got = {s.rsplit("/", 1)[-1].rsplit(".", 1)[0]: v for s, v in written(ds).items()}
    assert got == want
    reasons = [r["reason"] for r in skipped_rows(ds)]
    assert len(reasons) == exp["skipped8"] + (2 if protocol == "7" else 0)
    assert sum(r.startswith("excluded: code") and "never a label" in r for r in reasons) == 3
    assert any(r.startswith("malformed row (3 fields") for r in reasons) and "file not found" in reasons
    # landmarks: the 68 shipped points are stored, the five used are derived from them
    with h5py.File(ds.root / ds.shards[0]["file"], "r") as f:
        lm68, lm5 = f["landmarks68"][0], f["landmarks"][0]
    np.testing.assert_allclose(lm5[0], lm68[36:42].mean(0), rtol=1e-5)
    np.testing.assert_allclose(lm5[3], lm68[48], rtol=1e-5)


def test_affectnet_csv_box_crop_with_align_none(tmp_path):
    fx.make_affectnet_csv(tmp_path / "raw")
    ds = run("affectnet", tmp_path / "raw", tmp_path, align="none")
    reasons = [r["reason"] for r in skipped_rows(ds)]
    assert "invalid face box (non-positive or infinite width or height)" in reasons  # the negative-width row
    assert len(ds) == 10  # 11 usable rows minus the negative box
    t = ds.meta.index[0]
    with h5py.File(ds.root / ds.shards[0]["file"], "r") as f:
        m = f["transform"][t]
    np.testing.assert_allclose(m[:, :2], np.eye(2) * 128 / 100, rtol=1e-5)  # box 100 x 100 -> 128


def test_affectnet_npy_layout(tmp_path):
    exp = fx.make_affectnet_npy(tmp_path / "raw")
    ds = run("affectnet", tmp_path / "raw", tmp_path)
    assert written(ds) == exp["expect"]
    reasons = sorted(r["reason"] for r in skipped_rows(ds))
    assert reasons == ["excluded: code 8 (none) is never a label", "no annotation file (99_exp.npy)"]


@pytest.mark.parametrize("icml", [False, True])
def test_ferplus(tmp_path, icml):
    exp = fx.make_ferplus(tmp_path / "raw", icml=icml)
    ds = run("ferplus", tmp_path / "raw", tmp_path)
    assert written(ds) == exp["expect"]
    assert len(skipped_rows(ds)) == exp["skipped"]
    assert ds.classes[7] == "contempt" and ds.manifest["align"] == "none"
    img = ds.read_images([0])[0]
    assert img.shape == (128, 128, 3) and (img[..., 0] == img[..., 1]).all()  # grayscale -> RGB


@pytest.mark.parametrize("nested", [False, True])
def test_ferg(tmp_path, nested):
    exp = fx.make_ferg(tmp_path / "raw", nested=nested)
    ds = run("ferg", tmp_path / "raw", tmp_path)
    m = ds.meta
    assert {s: (lab, g) for s, lab, g in zip(m["source"], m["label"], m["group"])} == exp["expect"]
    assert set(m["split"]) == {""} and skipped_rows(ds) == []
    img = ds.read_images([0])[0]
    assert (img[:8, :8] == 255).all()  # transparent corner composited over white


def test_ferg_duplicate_copies_taken_once(tmp_path):
    fx.make_ferg(tmp_path / "raw")
    fx.make_ferg(tmp_path / "raw" / "copy")  # a second copy of the same tree
    ds = run("ferg", tmp_path / "raw", tmp_path)
    assert len(ds) == 28 and sum("duplicate image (same as" in r["reason"] for r in skipped_rows(ds)) == 28


@pytest.mark.parametrize("as_zip", [False, True])
def test_jaffe_detects_and_aligns(tmp_path, as_zip):
    exp = fx.make_jaffe(tmp_path / "raw", as_zip=as_zip)
    raw = tmp_path / "raw" / "jaffe.zip" if as_zip else tmp_path / "raw"
    ds = run("jaffe", raw, tmp_path)
    m = ds.meta
    got = {s.rsplit("/", 1)[-1]: (lab, g) for s, lab, g in zip(m["source"], m["label"], m["group"])}
    assert got == exp["expect"]
    reasons = sorted(r["reason"] for r in skipped_rows(ds))
    assert reasons == ["no face found by retinaface-onnx", "not a JAFFE image (name does not follow XX.YYn.N.tiff)"]
    assert not np.isnan(ds.landmarks()).any() and ds.manifest["align"] == "retinaface-onnx"
    prov = json.loads((ds.root / "provenance.json").read_text())
    assert prov["aligner"]["method"] == "retinaface-onnx" and len(prov["aligner"]["model_sha256"]) == 64


@pytest.mark.parametrize("abaw3", [True, False])
def test_affwild2(tmp_path, abaw3):
    exp = fx.make_affwild2(tmp_path / "raw", abaw3=abaw3)
    ds = run("affwild2", tmp_path / "raw", tmp_path)
    assert ds.protocol == ("8" if abaw3 else "7") and ds.num_classes == int(ds.protocol)
    m = ds.meta
    assert {s: (lab, sp, g) for s, lab, sp, g in zip(m["source"], m["label"], m["split"], m["group"])} == exp["expect"]
    reasons = [r["reason"] for r in skipped_rows(ds)]
    assert len(reasons) == exp["skipped"]
    assert "excluded: code -1 (invalid frame) is never a label" in reasons
    assert "no frame image (no face was found in this frame)" in reasons
    assert any(r.startswith("malformed annotation line") for r in reasons)
    assert ds.manifest["groups"]["per_split"] == {"train": 2, "test": 1}  # video7_left/right are one group


def test_affwild2_protocol_mismatch_is_an_error(tmp_path):
    fx.make_affwild2(tmp_path / "raw", abaw3=False)
    with pytest.raises(DatasetError, match="header names 7 classes"):
        prepare("affwild2", tmp_path / "raw", out=tmp_path / "o", protocol="8", progress=False)


@pytest.mark.parametrize("dataset", ["rafdb", "affectnet", "ferplus", "ferg", "jaffe", "affwild2"])
def test_wrong_folder_names_the_layouts_looked_for(tmp_path, dataset):
    (tmp_path / "raw" / "something").mkdir(parents=True)
    (tmp_path / "raw" / "something" / "x.txt").write_text("hello")
    with pytest.raises(DatasetError) as e:
        prepare(dataset, tmp_path / "raw", out=tmp_path / "o", progress=False)
    msg = str(e.value)
    assert "looked for" in msg and "\n" not in msg
    for layout in load_definition(dataset).layouts:
        assert layout["looks_for"] in msg


def test_unknown_dataset_and_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="choose one of affectnet, affwild2, ferg, ferplus, jaffe, rafdb"):
        prepare("fer2013", tmp_path, progress=False)
    with pytest.raises(DatasetError, match="not found"):
        prepare("ferg", tmp_path / "nope", progress=False)
