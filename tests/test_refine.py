"""Split files and the per-epoch data refinement of section 4.1."""

import h5py
import numpy as np
import pytest
from helpers import make_prepared
from typer.testing import CliRunner

from grefel.core.errors import DatasetError
from grefel.data.loader import RankBatches, epoch_plan
from grefel.data.refine import group_codes, make_splits, refine, refine_epoch
from grefel.data.shards import PreparedDataset


def _toy_meta(n_groups=6, per_group=(300, 40, 7), num_classes=3, seed=0):
    """Labels and groups for pure-array tests: group g holds per_group[g % 3] images."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for g in range(n_groups):
        n = per_group[g % len(per_group)]
        labels += list(rng.integers(0, num_classes, n))
        groups += [f"g{g}"] * n
    return np.array(labels), np.array(groups)


def test_refined_epoch_caps_groups_and_balances_classes():
    labels, groups = _toy_meta()
    pool = np.arange(len(labels))
    ep = refine_epoch(labels, groups, pool, num_classes=3, epoch=0, seed=1, n_pg=50, per_class=60)
    assert len(ep.indices) == 3 * 60
    assert list(np.bincount(labels[ep.indices], minlength=3)) == [60, 60, 60]
    # the per-group cap: the pool keeps at most 50 images of each group, so the distinct images
    # of an epoch never hold more than 50 of one group
    uniq = np.unique(ep.indices)
    _, per_group = np.unique(groups[uniq], return_counts=True)
    assert per_group.max() <= 50
    assert ep.pool_counts.sum() == sum(min(50, n) for n in np.unique(groups, return_counts=True)[1])
    # classes with fewer than B pooled images are marked short and filled with replacement
    assert ep.short == [c for c in range(3) if ep.pool_counts[c] < 60]
    for c in ep.short:
        members = ep.indices[labels[ep.indices] == c]
        assert len(np.unique(members)) == ep.pool_counts[c]  # every pooled image used at least once


def test_refinement_deterministic_per_seed_and_epoch():
    labels, groups = _toy_meta()
    pool = np.arange(len(labels))
    kw = dict(num_classes=3, n_pg=50, per_class=30)
    a = refine_epoch(labels, groups, pool, epoch=3, seed=7, **kw).indices
    b = refine_epoch(labels, groups, pool, epoch=3, seed=7, **kw).indices
    c = refine_epoch(labels, groups, pool, epoch=4, seed=7, **kw).indices
    d = refine_epoch(labels, groups, pool, epoch=3, seed=8, **kw).indices
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_missing_class_and_unlabelled_samples():
    labels = np.array([0, 0, 1, 1, -1, -1])
    ep = refine_epoch(labels, np.array([""] * 6), np.arange(6), num_classes=3, epoch=0, per_class=4)
    assert ep.missing == [2] and len(ep.indices) == 8 and (labels[ep.indices] >= 0).all()


def test_empty_group_is_its_own_group():
    codes = group_codes(np.array(["a", "", "a", "", "b"]))
    assert codes[0] == codes[2] and len(set(codes)) == 4


def test_distributed_slices_partition_the_epoch():
    labels, groups = _toy_meta()
    plan = epoch_plan(
        labels, groups, np.arange(len(labels)), num_classes=3, epoch=2, seed=0, global_batch=16, n_pg=50, per_class=30
    )
    assert len(plan.indices) % 16 == 0 and plan.n_real == 90
    one = [idx for _, idx in RankBatches(plan.indices, 16, 0, 1)]
    two = [list(RankBatches(plan.indices, 16, r, 2)) for r in range(2)]
    assert len(two[0]) == len(two[1]) == len(one)
    for k, batch in enumerate(one):  # rank 0 then rank 1 = the single-process batch
        np.testing.assert_array_equal(np.concatenate([two[0][k][1], two[1][k][1]]), batch)


def test_carve_val_is_stratified_and_group_disjoint():
    root = make_prepared(n_per_class=[40, 30, 20], num_classes=3, n_groups=10, split={"train": 0.75, "test": 0.25})
    ds = PreparedDataset(root)
    method, sets = make_splits(ds, seed=0, val_fraction=0.2)
    assert method == "carve-val" and list(sets) == ["default"]
    s = sets["default"]
    official = ds.meta["split"].to_numpy()
    assert (s[official == "test"] == "test").all()  # the official test split is untouched
    groups = ds.meta["group"].to_numpy()
    assert not set(groups[s == "train"]) & set(groups[s == "val"])
    val_classes = np.bincount(ds.labels()[s == "val"], minlength=3)
    assert (val_classes > 0).all()  # every class is represented
    assert 0.1 < (s == "val").sum() / (official == "train").sum() < 0.3
    # same seed, same split; another seed, another split
    np.testing.assert_array_equal(make_splits(ds, seed=0, val_fraction=0.2)[1]["default"], s)
    assert not np.array_equal(make_splits(ds, seed=5, val_fraction=0.2)[1]["default"], s)


def test_jaffe_gets_leave_one_subject_out_folds():
    root = make_prepared(name="jaffe", n_per_class=20, num_classes=3, n_groups=10, split="")
    ds = PreparedDataset(root)
    method, sets = make_splits(ds)
    assert method == "folds" and sorted(sets) == sorted(f"fold{k}" for k in range(10))
    groups = ds.meta["group"].to_numpy()
    held = set()
    for s in sets.values():
        test_groups = set(groups[s == "test"])
        assert len(test_groups) == 1
        held |= test_groups
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            assert not set(groups[s == a]) & set(groups[s == b])
    assert len(held) == 10


def test_ferg_gets_seeded_stratified_split():
    root = make_prepared(name="ferg", n_per_class=30, num_classes=3, n_groups=3, split="")
    ds = PreparedDataset(root)
    method, sets = make_splits(ds, seed=3)
    s = sets["default"]
    assert method == "random" and set(s) == {"train", "val", "test"}
    for part in ("val", "test"):
        assert (np.bincount(ds.labels()[s == part], minlength=3) >= 2).all()
    np.testing.assert_array_equal(make_splits(ds, seed=3)[1]["default"], s)


def test_refine_writes_split_files_and_keeps_them(capsys):
    root = make_prepared(n_per_class=[30, 12], num_classes=2, n_groups=4, split={"train": 0.8, "test": 0.2})
    res = refine("toy", per_class=20, n_pg=5)
    path = root / "splits" / "default.h5"
    assert res.written == [path]
    with h5py.File(path, "r") as f:
        assert f["split"].shape == (42,) and f.attrs["method"] == "carve-val"
    ds = PreparedDataset(root)
    assert (ds.splits() == "val").sum() > 0  # PreparedDataset now reads the refined split set
    # preview: 4 groups x at most 5 images per class-mixed group -> short classes are announced
    assert res.epoch.counts.tolist() == [20, 20] and res.epoch.pool_counts.sum() <= 20
    before = path.stat().st_mtime_ns
    res2 = refine("toy")
    assert res2.written == [] and path.stat().st_mtime_ns == before


def test_refine_cli_prints_histograms():
    from grefel_cli.main import app

    make_prepared(n_per_class=[30, 8], num_classes=2, split={"train": 0.8, "val": 0.2})
    r = CliRunner().invoke(app, ["refine", "--dataset", "toy", "--per-class", "10", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "official train and val" in r.output
    assert "short by 3" in r.output and "vstripes" in r.output  # class 1 has 7 < 10 training images
    r = CliRunner().invoke(app, ["refine", "--dataset", "nope"])
    assert r.exit_code == 1 and "prepared here: toy" in _text(r)


def test_bad_method_is_a_clear_error():
    make_prepared(n_per_class=5, num_classes=2)
    with pytest.raises(DatasetError, match="unknown split method"):
        refine("toy", method="magic")


def _text(result) -> str:
    """What the user sees of a failed command: the output, or the one-line error it raised."""
    return result.output + str(result.exception or "")
