import json

import h5py
import numpy as np
import pytest

from grefel.core.errors import DatasetError
from grefel.core.io import write_json
from grefel.core.paths import resolve_dataset
from grefel.data.shards import PreparedDataset, Sample, shard_name, write_label_set, write_shard

CLASSES = ["a", "b", "c"]


def _make(root, n_per_shard=(5, 4), size=8):
    samples_all, shards, start = [], [], 0
    rng = np.random.default_rng(0)
    for k, n in enumerate(n_per_shard):
        samples = [
            Sample(
                image=rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                label=(start + i) % 3,
                split="train" if (start + i) % 4 else "test",
                source=f"img{start + i}.png",
                group=f"g{(start + i) % 2}",
                landmarks=np.arange(10, dtype=np.float32).reshape(5, 2) if i % 2 else None,
                attributes={"gender": i % 3},
            )
            for i in range(n)
        ]
        shards.append(
            write_shard(
                root / "shards" / shard_name(k),
                samples,
                first_index=start,
                dataset="toy",
                protocol="3cls",
                classes=CLASSES,
                image_size=size,
                attribute_names=["gender"],
            )
        )
        samples_all += samples
        start += n
    write_json(
        root / "manifest.json",
        {
            "schema_version": 2,
            "dataset": "toy",
            "protocol": "3cls",
            "classes": CLASSES,
            "image_size": size,
            "shards": shards,
        },
    )
    return samples_all


def test_roundtrip_images_and_columns(tmp_path):
    samples = _make(tmp_path)
    ds = PreparedDataset(tmp_path)
    assert len(ds) == 9 and ds.classes == CLASSES and ds.num_classes == 3
    want = [7, 0, 8, 3, 3]  # across shards, out of order, repeated
    got = ds.read_images(want)
    for g, i in zip(got, want):
        np.testing.assert_array_equal(g, samples[i].image)
    np.testing.assert_array_equal(ds.labels(), [i % 3 for i in range(9)])
    assert list(ds.indices("test")) == [0, 4, 8]
    assert ds.meta.loc[5, "group"] == "g1" and ds.meta.loc[5, "source"] == "img5.png"
    assert ds.meta.loc[1, "gender"] == 1
    lm = ds.landmarks()
    assert np.isnan(lm[0]).all() and lm[1, 4, 1] == 9


def test_shard_readable_without_grefel(tmp_path):
    _make(tmp_path)
    with h5py.File(tmp_path / "shards" / "shard-00001.h5", "r") as f:
        assert f["images"].shape == (4, 8, 8, 3) and f["images"].dtype == np.uint8
        assert json.loads(f.attrs["classes"]) == CLASSES
        assert list(f["index"][:]) == [5, 6, 7, 8]
        assert f["split"][0] == b"train"


def test_label_sets_and_missing_names(tmp_path):
    _make(tmp_path)
    ds = PreparedDataset(tmp_path)
    write_label_set(tmp_path, "noisy", np.zeros(9, np.int16))
    assert ds.labels("noisy").sum() == 0 and ds.labels().sum() > 0
    with pytest.raises(DatasetError, match="grefel corrupt"):
        ds.labels("nope")
    with pytest.raises(DatasetError, match="grefel refine"):
        ds.splits("nope")


def test_resolve_dataset_by_name_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("GREFEL_DATA_ROOT", str(tmp_path))
    with pytest.raises(DatasetError, match="no prepared dataset under"):
        resolve_dataset(None)
    _make(tmp_path / "toy")
    assert resolve_dataset("toy") == tmp_path / "toy"
    assert resolve_dataset(None) == tmp_path / "toy"
    with pytest.raises(DatasetError, match="prepared here: toy"):
        resolve_dataset("rafdb")
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        PreparedDataset(tmp_path)
