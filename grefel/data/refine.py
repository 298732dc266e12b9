"""Splits for datasets that lack one, and the paper's per-epoch data refinement (section 4.1).

Two jobs live here because both decide *which images train*:

1. **Split files** (``splits/<set>.h5``, written once by ``grefel refine``). Datasets without a
   validation split get one carved out of ``train``, stratified by class, with no group (subject,
   video, character) in two splits, so that model selection never sees a training subject.
   JAFFE gets the literature's subject-independent protocol: ten leave-one-subject-out folds
   ``fold0`` .. ``fold9`` (each with a validation subject carved from the nine others). FERG, which
   has no official split and only six characters, gets a seeded split stratified by class and
   character (the usual FERG protocol is image-level). Every split is deterministic for a seed.

2. **Per-epoch refinement** (section 4.1, "Data Distribution Adjustments"): each epoch, at most
   ``N_pg`` images are drawn at random from every video or face group (default 512), and from that
   pool ``B`` images per expression (default 500), giving an epoch of ``B x N_cls`` images. A class
   with fewer than ``B`` pooled images contributes each of them once and fills the rest by drawing
   with replacement. The draw is a pure function of (seed, epoch), so every DDP rank computes the
   same epoch and takes its own slice; resuming a run redraws exactly the same epochs.

Samples with an empty group are their own group (the cap then never binds).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from grefel.core.console import make_console
from grefel.core.errors import DatasetError
from grefel.core.io import atomic_path
from grefel.core.paths import resolve_dataset
from grefel.core.recipe import N_PG, PER_CLASS  # section 4.1
from grefel.core.settings import check_seed
from grefel.data.shards import SPLITS_DIR, PreparedDataset


# ---------------------------------------------------------------------------------------------
# Per-epoch refinement (section 4.1)
# ---------------------------------------------------------------------------------------------
@dataclass
class RefinedEpoch:
    """One epoch's draw: ``indices`` (global sample indices, shuffled) plus what it took."""

    indices: np.ndarray
    pool_counts: np.ndarray  # per class, after the per-group cap
    counts: np.ndarray  # per class, in the epoch
    short: list[int] = field(default_factory=list)  # classes filled with replacement
    missing: list[int] = field(default_factory=list)  # classes with no image at all


def group_codes(groups: np.ndarray) -> np.ndarray:
    """Integer group id per sample; an empty group makes the sample its own group."""
    groups = np.asarray(groups).astype(str)
    _, codes = np.unique(groups, return_inverse=True)
    empty = groups == ""
    if empty.any():
        codes = codes.astype(np.int64)
        codes[empty] = codes.max(initial=0) + 1 + np.arange(empty.sum())
    return codes.astype(np.int64)


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """The generator of one (seed, epoch, stream): the same on every rank and after a resume."""
    return np.random.default_rng([int(seed), int(epoch), int(stream)])


def refine_epoch(
    labels: np.ndarray,
    groups: np.ndarray,
    pool: np.ndarray,
    *,
    num_classes: int,
    epoch: int,
    seed: int = 0,
    n_pg: int | None = N_PG,
    per_class: int = PER_CLASS,
) -> RefinedEpoch:
    """Draw one refined epoch from the training indices ``pool`` (section 4.1).

    ``labels`` / ``groups`` are per-sample arrays over the whole dataset (the labels the learner
    sees, i.e. a noisy label set when training on one). ``n_pg=None`` disables the group cap.
    """
    rng = epoch_rng(seed, epoch)
    pool = np.asarray(pool, dtype=np.int64)
    pool = pool[labels[pool] >= 0]
    # Step 1: at most N_pg random images from each video / face group.
    perm = pool[rng.permutation(len(pool))]
    if n_pg is not None and len(perm):
        codes = group_codes(groups)[perm]
        order = np.argsort(codes, kind="stable")  # random order kept inside each group
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        keep = np.zeros(len(perm), bool)
        keep[order[rank < n_pg]] = True
        perm = perm[keep]
    lab = labels[perm]
    pool_counts = np.bincount(lab, minlength=num_classes)
    # Step 2: B images per expression; short classes use all they have, then draw with replacement.
    chosen, short, missing = [], [], []
    for c in range(num_classes):
        members = perm[lab == c]
        if len(members) == 0:
            missing.append(c)
            continue
        if len(members) >= per_class:
            chosen.append(members[:per_class])  # perm is already random
        else:
            short.append(c)
            chosen.append(np.concatenate([members, rng.choice(members, per_class - len(members), replace=True)]))
    indices = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    indices = indices[rng.permutation(len(indices))]
    counts = np.bincount(labels[indices], minlength=num_classes) if len(indices) else np.zeros(num_classes, np.int64)
    return RefinedEpoch(indices=indices, pool_counts=pool_counts, counts=counts, short=short, missing=missing)


# ---------------------------------------------------------------------------------------------
# Split files
# ---------------------------------------------------------------------------------------------
def _stratified_carve(labels, codes, candidates, fraction, seed):
    """Pick about ``fraction`` of ``candidates`` stratified by label, whole groups only."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    candidates = np.asarray(candidates)
    y = labels[candidates]
    g = codes[candidates]
    if len(np.unique(g)) == len(g):  # no group information: plain stratified sampling
        counts = np.bincount(y)
        strat = y if counts[counts > 0].min() >= 2 else None
        _, held = train_test_split(candidates, test_size=fraction, stratify=strat, random_state=seed)
        return np.sort(held)
    n_splits = max(2, min(int(round(1 / fraction)), len(np.unique(g))))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        _, held = next(cv.split(candidates, y, g))
    return np.sort(candidates[held])


def _method_for(ds: PreparedDataset, official: np.ndarray) -> str:
    have = set(official[official != ""])
    if "train" in have and "val" in have:
        return "none"
    if "train" in have:
        return "carve-val"
    if ds.name.lower().startswith("jaffe"):
        return "folds"
    if ds.name.lower().startswith("ferg"):
        return "random"
    return "group"


def make_splits(
    ds: PreparedDataset,
    *,
    method: str = "auto",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> tuple[str, dict[str, np.ndarray]]:
    """Compute split sets for ``ds``: returns (method used, {set name: split per sample}).

    Methods: ``carve-val`` (official train/test kept, val carved from train, group-disjoint),
    ``folds`` (leave one group out, one fold per group: JAFFE), ``random`` (seeded, stratified by
    class and group: FERG), ``group`` (group-disjoint train/val/test), ``none``. A dataset too
    small or too odd for the method (no labelled image, a class or a group too few) is a
    DatasetError.
    """
    splitters = {"carve-val": _carve_val, "folds": _folds, "random": _random_split, "group": _group_split}
    if method not in ("auto", "none", *splitters):
        raise DatasetError(f"unknown split method '{method}': use auto, carve-val, folds, random, group or none")
    official = ds.meta["split"].to_numpy().astype(str)
    labels = ds.labels()
    labelled = np.flatnonzero(labels >= 0)
    if len(labelled) == 0:
        raise DatasetError(
            f"{ds.name} holds no labelled face ({len(ds)} samples): prepare it again and check its skipped.csv"
        )
    if method == "auto":
        method = _method_for(ds, official)
    if method == "none":
        return method, {}
    parts = _Parts(official, labels, group_codes(ds.meta["group"].to_numpy()), labelled, seed)
    try:
        return method, splitters[method](ds, parts, val_fraction, test_fraction)
    except ValueError:  # scikit-learn: too few images in a class or too few groups to split
        counts = np.bincount(labels[labelled])
        raise DatasetError(
            f"{ds.name} is too small for a '{method}' split (labelled images: {len(labelled)}, smallest class: "
            f"{counts[counts > 0].min()}, groups: {len(np.unique(parts.codes[labelled]))}): prepare more images "
            "or choose another method"
        ) from None


@dataclass
class _Parts:
    official: np.ndarray  # official split per sample
    labels: np.ndarray
    codes: np.ndarray  # group code per sample
    labelled: np.ndarray  # indices of labelled samples
    seed: int


def _carve_val(ds, p: _Parts, val_fraction, test_fraction) -> dict[str, np.ndarray]:
    train = np.flatnonzero((p.official == "train") & (p.labels >= 0))
    if len(train) == 0:
        raise DatasetError(
            f"{ds.name} has no official train split to carve validation from: use method 'group' or 'random'"
        )
    out = p.official.copy()
    out[out == "val"] = "train"  # carve-val replaces any existing val
    out[_stratified_carve(p.labels, p.codes, train, val_fraction, p.seed)] = "val"
    return {"default": out}


def _folds(ds, p: _Parts, val_fraction, test_fraction) -> dict[str, np.ndarray]:
    from sklearn.model_selection import LeaveOneGroupOut

    labelled = p.labelled
    groups = ds.meta["group"].to_numpy().astype(str)[labelled]
    if (groups == "").any() or len(np.unique(groups)) < 2:
        raise DatasetError(f"{ds.name}: leave-one-subject-out folds need a subject (group) for every image")
    sets = {}
    for k, (rest, held) in enumerate(LeaveOneGroupOut().split(labelled, p.labels[labelled], groups)):
        out = np.full(len(p.labels), "", dtype=object)
        out[labelled[rest]] = "train"
        out[labelled[held]] = "test"
        out[_stratified_carve(p.labels, p.codes, labelled[rest], val_fraction, p.seed + k)] = "val"
        sets[f"fold{k}"] = out.astype(str)
    return sets


def _random_split(ds, p: _Parts, val_fraction, test_fraction) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    labels, codes, labelled = p.labels, p.codes, p.labelled
    strat = labels[labelled] * (codes.max() + 1) + codes[labelled]
    _, cnt = np.unique(strat, return_counts=True)
    if cnt.min() < 3:
        strat = labels[labelled]
    rest, test = train_test_split(labelled, test_size=test_fraction, stratify=strat, random_state=p.seed)
    strat_rest = labels[rest] * (codes.max() + 1) + codes[rest] if cnt.min() >= 3 else labels[rest]
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=strat_rest, random_state=p.seed + 1
    )
    return {"default": _assign(len(labels), train, val, test)}


def _group_split(ds, p: _Parts, val_fraction, test_fraction) -> dict[str, np.ndarray]:
    test = _stratified_carve(p.labels, p.codes, p.labelled, test_fraction, p.seed)
    rest = np.setdiff1d(p.labelled, test)
    val = _stratified_carve(p.labels, p.codes, rest, val_fraction / (1 - test_fraction), p.seed + 1)
    return {"default": _assign(len(p.labels), np.setdiff1d(rest, val), val, test)}


def _assign(n: int, train, val, test) -> np.ndarray:
    out = np.full(n, "", dtype=object)
    out[train], out[val], out[test] = "train", "val", "test"
    return out.astype(str)


def write_split(ds: PreparedDataset, name: str, split: np.ndarray, **attrs) -> Path:
    """Write ``splits/<name>.h5`` atomically (dataset ``split``, ascii, one entry per sample)."""
    if len(split) != len(ds):
        raise ValueError(f"split has {len(split)} entries, dataset {len(ds)}")
    path = ds.root / SPLITS_DIR / f"{name}.h5"
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("split", data=np.asarray(split, dtype="S8"))
        f.attrs["dataset"] = ds.name
        f.attrs["manifest_sha256"] = ds.manifest_sha256
        for k, v in attrs.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
    return path


def check_no_group_leak(ds: PreparedDataset, split: np.ndarray) -> None:
    """Raise if a non-empty group appears in two of train / val / test."""
    groups = ds.meta["group"].to_numpy().astype(str)
    seen: dict[str, str] = {}
    for g, s in zip(groups, split):
        if g == "" or s == "":
            continue
        if seen.setdefault(g, s) != s:
            raise DatasetError(f"group '{g}' of {ds.name} is in both '{seen[g]}' and '{s}'")


# ---------------------------------------------------------------------------------------------
# The `grefel refine` entry point
# ---------------------------------------------------------------------------------------------
@dataclass
class RefineResult:
    dataset: str
    method: str
    written: list[Path]
    split_set: str | None
    classes: list[str]
    before: np.ndarray  # per class, labelled training images
    epoch: RefinedEpoch | None


def refine(
    dataset: str | os.PathLike | None,
    *,
    method: str = "auto",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    n_pg: int | None = N_PG,
    per_class: int = PER_CLASS,
    epoch: int = 0,
    split_set: str | None = None,
    label_set: str | None = None,
    force: bool = False,
    data_root: str | os.PathLike | None = None,
    console=None,
) -> RefineResult:
    """Write the split files ``dataset`` lacks, then preview one refined epoch (histograms).

    Existing split files are kept unless ``force``. The preview shows the class histogram of the
    training split before refinement, after the per-group cap and in the refined epoch.
    """

    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DatasetError("val_fraction and test_fraction must be in (0, 1) and sum below 1")
    seed = check_seed(seed)
    if per_class < 1 or (n_pg is not None and n_pg < 1) or epoch < 0:
        raise DatasetError(
            f"per_class (got {per_class}) and n_pg (got {n_pg}) must be at least 1, epoch (got {epoch}) at least 0"
        )
    console = console or make_console()
    ds = PreparedDataset(resolve_dataset(dataset, data_root))
    used, sets = make_splits(ds, method=method, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    settings = dict(method=used, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    written = _write_splits(ds, sets, force, console, settings)
    if used == "none":
        console.print(f"{ds.name} has official train and val splits: no split file needed")
    if split_set is None:
        split_set = "fold0" if used == "folds" else None
    labels = ds.labels(label_set)
    pool = np.flatnonzero((ds.splits(split_set) == "train") & (labels >= 0))
    before = np.bincount(labels[pool], minlength=ds.num_classes)
    ep = None
    if len(pool):
        ep = refine_epoch(
            labels,
            ds.meta["group"].to_numpy(),
            pool,
            num_classes=ds.num_classes,
            epoch=epoch,
            seed=seed,
            n_pg=n_pg,
            per_class=per_class,
        )
        _print_epoch(
            console, ds, ep, before, epoch=epoch, seed=seed, split_set=split_set, n_pg=n_pg, per_class=per_class
        )
    else:
        console.print(
            f"[yellow]{ds.name} has no labelled training images in split set {split_set or 'default/official'}[/yellow]"
        )
    return RefineResult(ds.name, used, written, split_set, ds.classes, before, ep)


def _write_splits(ds: PreparedDataset, sets: dict[str, np.ndarray], force: bool, console, settings: dict) -> list[Path]:
    """Write each split set that is not there yet (all with ``force``), checked for group leaks."""
    written, used = [], settings["method"]
    for name, split in sets.items():
        path = ds.root / SPLITS_DIR / f"{name}.h5"
        if path.is_file() and not force:
            console.print(f"[yellow]kept[/yellow] existing {path} (use --force to rewrite it)")
            continue
        if used != "random":  # FERG's image-level protocol shares characters by design
            # an official test split is the dataset's own business; what we carve must not leak
            check_no_group_leak(ds, np.where(split == "test", "", split) if used == "carve-val" else split)
        try:
            written.append(write_split(ds, name, split, **settings))
        except OSError as e:
            raise DatasetError(
                f"cannot write {path} ({e.strerror or e}): the dataset folder must be writable"
            ) from None
        cnt = {s: int((split == s).sum()) for s in ("train", "val", "test")}
        console.print(f"wrote {path}  ({used}: train {cnt['train']}, val {cnt['val']}, test {cnt['test']})")
    return written


def _print_epoch(console, ds, ep: RefinedEpoch, before, *, epoch, seed, split_set, n_pg, per_class) -> None:
    """The class histogram of the training split: before, after the per-group cap, in the epoch."""
    from rich.table import Table

    table = Table(
        title=f"{ds.name}: training images per class, refined epoch {epoch} (seed {seed})"
        + (f", split set {split_set}" if split_set else "")
    )
    # train: the split's images; N_pg: after the per-group cap; epoch: after B per class
    for col in ("class", "train", f"N_pg={n_pg}", f"epoch (B={per_class})", "note"):
        table.add_column(col, justify="left" if col in ("class", "note") else "right", no_wrap=col != "note")
    for c, name in enumerate(ds.classes):
        note = (
            "no image: left out"
            if c in ep.missing
            else f"short by {per_class - ep.pool_counts[c]}, resampled"
            if c in ep.short
            else ""
        )
        table.add_row(name, str(before[c]), str(ep.pool_counts[c]), str(ep.counts[c]), note)
    table.add_row("total", str(before.sum()), str(ep.pool_counts.sum()), str(ep.counts.sum()), "")
    console.print(table)
