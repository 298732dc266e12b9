"""`grefel corrupt`: exact realised noise rate, clean labels untouched, reproducible, transitions."""

import json

import h5py
import numpy as np
import pytest
from helpers import make_prepared
from typer.testing import CliRunner

from grefel.core.errors import DatasetError
from grefel.core.io import sha256_file
from grefel.data.corrupt import asymmetric_map, corrupt, corrupt_dataset, read_label_set_attrs
from grefel.data.shards import PreparedDataset

EMOTIONS = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]


def _dataset(**kw):
    kw = {
        "n_per_class": [40, 30, 20, 50, 25, 35, 60],
        "classes": EMOTIONS,
        "image_size": 8,
        "split": {"train": 0.8, "test": 0.2},
        **kw,
    }
    return PreparedDataset(make_prepared(**kw))


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric"])
def test_exact_rate_clean_untouched_test_split_clean(mode):
    ds = _dataset()
    shard_hashes = [sha256_file(ds.root / s["file"]) for s in ds.shards]
    clean = ds.labels().copy()
    res = corrupt_dataset("toy", 0.3, mode, seed=4)
    noisy = ds.labels(res.name)
    eligible = ds.meta["split"].to_numpy() != "test"
    assert res.eligible == eligible.sum()
    assert (
        res.flipped == round(0.3 * eligible.sum()) == (noisy != clean).sum()
    )  # exact, and each flip changes the label
    assert res.realised == pytest.approx(res.flipped / res.eligible)
    assert (noisy[~eligible] == clean[~eligible]).all()  # the official test split stays clean
    np.testing.assert_array_equal(PreparedDataset(ds.root).labels(), clean)  # clean labels untouched
    assert [sha256_file(ds.root / s["file"]) for s in ds.shards] == shard_hashes
    # every class is flipped at (nearly) the requested rate
    for c in range(7):
        m = eligible & (clean == c)
        assert abs((noisy[m] != c).mean() - 0.3) <= 1 / m.sum() + 1e-9
    with h5py.File(ds.root / "labels" / f"{res.name}.h5", "r") as f:
        np.testing.assert_array_equal(f["flipped"][:], noisy != clean)
        assert f["label"].dtype == np.int16
    attrs = read_label_set_attrs(ds, res.name)
    assert attrs["mode"] == mode and attrs["seed"] == 4 and attrs["realised_rate"] == pytest.approx(res.realised)
    T = np.array(attrs["transition_matrix"])
    np.testing.assert_allclose(T.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(np.diag(T), 0.7, atol=0.05)


def test_same_seed_same_flips_other_seed_other_flips():
    ds = _dataset()
    a = ds.labels(corrupt("toy", 0.2, seed=1, name="a"))
    b = ds.labels(corrupt("toy", 0.2, seed=1, name="b"))
    c = ds.labels(corrupt("toy", 0.2, seed=2, name="c"))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert corrupt("toy", 0.2, seed=1, name="a") == "a"  # same settings again: fine, same file
    with pytest.raises(DatasetError, match="already exists"):
        corrupt("toy", 0.4, seed=1, name="a")


def test_asymmetric_transition_matrix_is_a_class_map():
    ds = _dataset()
    res = corrupt_dataset("toy", 0.2, "asymmetric", seed=0)
    T = res.transition
    target = asymmetric_map(EMOTIONS)
    assert [EMOTIONS[t] for t in target] == ["fear", "surprise", "anger", "neutral", "neutral", "disgust", "sadness"]
    for i in range(7):
        off = np.flatnonzero(T[i] > 0)
        assert set(off) == {i, target[i]}  # mass only on the diagonal and the one confusable class
        assert T[i, target[i]] == pytest.approx(0.2, abs=0.04)
    attrs = read_label_set_attrs(ds, res.name)
    assert attrs["class_map"][0] == "fear"
    assert asymmetric_map(["x", "y", "z"]) == [1, 2, 0]  # unknown names: the next class


def test_symmetric_spreads_over_other_classes():
    ds = _dataset(n_per_class=[400, 400, 400], classes=["a", "b", "c"], split="train")
    res = corrupt_dataset("toy", 0.3, "symmetric", seed=0)
    T = res.transition
    np.testing.assert_allclose(np.diag(T), 0.7, atol=0.002)
    off = T[~np.eye(3, dtype=bool)]
    np.testing.assert_allclose(off, 0.15, atol=0.05)
    del ds


def test_cli_default_dataset_and_candidates():
    from grefel_cli.main import app

    make_prepared(name="one", n_per_class=10, num_classes=2, image_size=8)
    r = CliRunner().invoke(app, ["corrupt", "--noise", "0.2"])
    assert r.exit_code == 0, r.output
    assert "sym20-s0" in r.output and "realised" in r.output
    make_prepared(name="two", n_per_class=10, num_classes=2, image_size=8)
    r = CliRunner().invoke(app, ["corrupt", "--noise", "0.2"])
    assert r.exit_code == 1 and "one, two" in _text(r) and "--dataset" in _text(r)
    r = CliRunner().invoke(app, ["corrupt", "--noise", "20", "--dataset", "one"])
    assert r.exit_code == 2 and "--noise" in _text(r)  # the CLI's range check
    with pytest.raises(DatasetError, match=r"noise must be a fraction in \[0, 1\)"):  # the library's own
        corrupt("one", 1.0)


def test_label_set_attrs_are_json():
    ds = _dataset()
    name = corrupt("toy", 0.1)
    with h5py.File(ds.root / "labels" / f"{name}.h5", "r") as f:
        assert json.loads(f.attrs["classes"]) == EMOTIONS


def _text(result) -> str:
    """What the user sees of a failed command: the output, or the one-line error it raised."""
    return result.output + str(result.exception or "")
