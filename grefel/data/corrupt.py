"""Synthetic label noise (paper Table 5 and Table 7): named label sets beside the clean labels.

``corrupt(dataset, noise, mode, seed)`` writes ``labels/<name>.h5`` (dataset ``label``, int16, one
per sample, the schema of docs/contracts.md) and never touches the clean labels in the shards.

* Which samples: every labelled sample outside the official ``test`` split (the benchmark test
  set stays clean, as in the noisy-label FER literature). Test metrics must always use the clean
  labels all the same (datasets without an official split get their test split later).
* How many: exactly ``round(noise * n)`` flips over the eligible samples, allocated to classes in
  proportion to their size (largest remainder), so the realised rate equals the requested one up
  to one sample and every class is hit at the same rate.
* Where to: ``symmetric`` flips to any other class uniformly; ``asymmetric`` flips every class to
  one fixed, visually confusable class (fear <-> surprise, anger <-> disgust, sadness <-> neutral,
  happiness -> neutral, contempt -> disgust, other -> neutral; unknown names -> the next class).
* Record: attributes hold the request, the realised rate, the realised transition matrix
  ``T[i][j] = P(noisy j | clean i)`` (JSON), the class map, the seed, and a ``flipped`` mask.

The same (dataset, noise, mode, seed) always gives the same flips.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import h5py
import numpy as np

from grefel.core.errors import DatasetError
from grefel.core.io import writable_dir
from grefel.core.paths import plain_name, resolve_dataset
from grefel.core.settings import check_seed
from grefel.data.shards import LABELS_DIR, PreparedDataset, write_label_set

MODES = ("symmetric", "asymmetric")

_SYNONYMS = {
    "happy": "happiness",
    "happiness": "happiness",
    "joy": "happiness",
    "sad": "sadness",
    "sadness": "sadness",
    "angry": "anger",
    "anger": "anger",
    "surprise": "surprise",
    "surprised": "surprise",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "disgust": "disgust",
    "disgusted": "disgust",
    "neutral": "neutral",
    "contempt": "contempt",
    "other": "other",
}
# The class each expression is most often confused with (asymmetric mode).
_CONFUSABLE = {
    "fear": "surprise",
    "surprise": "fear",
    "anger": "disgust",
    "disgust": "anger",
    "sadness": "neutral",
    "neutral": "sadness",
    "happiness": "neutral",
    "contempt": "disgust",
    "other": "neutral",
}


def asymmetric_map(classes: list[str]) -> list[int]:
    """Target class of each class in asymmetric mode (by expression name, else the next class)."""
    canon = [_SYNONYMS.get(c.strip().lower(), c.strip().lower()) for c in classes]
    out = []
    for i, c in enumerate(canon):
        tgt = _CONFUSABLE.get(c)
        out.append(canon.index(tgt) if tgt in canon else (i + 1) % len(classes))
    return out


def default_name(noise: float, mode: str, seed: int) -> str:
    return f"{'sym' if mode == 'symmetric' else 'asym'}{round(noise * 100):g}-s{seed}"


def _allocate(total: int, sizes: np.ndarray) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``sizes`` (largest remainder, exact sum)."""
    if sizes.sum() == 0:
        return np.zeros_like(sizes)
    quota = total * sizes / sizes.sum()
    base = np.floor(quota).astype(np.int64)
    rest = total - base.sum()
    base[np.argsort(-(quota - base), kind="stable")[:rest]] += 1
    return np.minimum(base, sizes)


@dataclass
class CorruptResult:
    name: str
    path: os.PathLike
    requested: float
    realised: float
    flipped: int
    eligible: int
    transition: np.ndarray
    classes: list[str]


def corrupt_labels(
    labels: np.ndarray,
    eligible: np.ndarray,
    noise: float,
    mode: str,
    seed: int,
    num_classes: int,
    class_map: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (noisy labels, flipped mask) for the clean ``labels`` (pure function of its inputs)."""
    if mode not in MODES:
        raise DatasetError(f"unknown noise mode '{mode}': use symmetric or asymmetric")
    if num_classes < 2:
        raise DatasetError("label noise needs at least two classes")
    rng = np.random.default_rng([int(seed), 0x6E6F697365])
    eligible = np.asarray(eligible, dtype=np.int64)
    noisy = labels.copy()
    flipped = np.zeros(len(labels), bool)
    sizes = np.bincount(labels[eligible], minlength=num_classes)
    per_class = _allocate(int(round(noise * len(eligible))), sizes)
    for c in range(num_classes):
        members = eligible[labels[eligible] == c]
        pick = rng.choice(members, per_class[c], replace=False) if per_class[c] else np.zeros(0, np.int64)
        if mode == "symmetric":  # uniform over the other classes
            new = rng.integers(0, num_classes - 1, len(pick))
            new = new + (new >= c)
        else:
            new = np.full(len(pick), class_map[c])
        noisy[pick] = new
        flipped[pick] = True
    return noisy, flipped


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Realised ``T[i, j] = P(noisy = j | clean = i)``; rows of absent classes are zero."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (clean, noisy), 1)
    rows = counts.sum(1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)


def read_label_set_attrs(ds: PreparedDataset, name: str) -> dict:
    """Attributes of ``labels/<name>.h5`` (JSON strings decoded)."""
    path = ds.root / LABELS_DIR / f"{name}.h5"
    with h5py.File(path, "r") as f:
        out = {}
        for k, v in f.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "[{":
                v = json.loads(v)
            out[k] = v.item() if hasattr(v, "item") else v
    return out


def corrupt(
    dataset: str | os.PathLike | None,
    noise: float,
    mode: str = "symmetric",
    seed: int = 0,
    name: str | None = None,
    *,
    force: bool = False,
    data_root: str | os.PathLike | None = None,
) -> str:
    """Write a noisy label set for ``dataset``; return its name (see the module docstring)."""
    return corrupt_dataset(dataset, noise, mode, seed, name, force=force, data_root=data_root).name


def corrupt_dataset(
    dataset: str | os.PathLike | None,
    noise: float,
    mode: str = "symmetric",
    seed: int = 0,
    name: str | None = None,
    *,
    force: bool = False,
    data_root: str | os.PathLike | None = None,
) -> CorruptResult:
    """:func:`corrupt`, returning the full record (rate, flips, transition matrix)."""

    if not 0 <= noise < 1:
        raise DatasetError(f"noise must be a fraction in [0, 1) (0.2 for 20 %), got {noise}")
    seed = check_seed(seed)
    if mode not in MODES:
        raise DatasetError(f"unknown noise mode '{mode}': use symmetric or asymmetric")
    ds = PreparedDataset(resolve_dataset(dataset, data_root))
    writable_dir(ds.root / LABELS_DIR, "label-set folder")  # before any work
    name = plain_name(name or default_name(noise, mode, seed), "label set name")
    if name == "clean":
        raise DatasetError("'clean' names the dataset's own labels, not a label set: pick another name")
    clean = ds.labels()
    official = ds.meta["split"].to_numpy().astype(str)
    eligible = np.flatnonzero((clean >= 0) & (official != "test"))
    if len(eligible) == 0:
        raise DatasetError(f"{ds.name} has no labelled non-test images to corrupt")
    class_map = asymmetric_map(ds.classes) if mode == "asymmetric" else list(range(ds.num_classes))
    noisy, flipped = corrupt_labels(clean, eligible, noise, mode, seed, ds.num_classes, class_map)
    realised = float(flipped[eligible].mean())
    T = transition_matrix(clean[eligible], noisy[eligible], ds.num_classes)
    attrs = {
        "dataset": ds.name,
        "protocol": ds.protocol,
        "classes": json.dumps(ds.classes),
        "manifest_sha256": ds.manifest_sha256,
        "noise": float(noise),
        "mode": mode,
        "seed": int(seed),
        "realised_rate": realised,
        "flipped": int(flipped.sum()),
        "eligible": int(len(eligible)),
        "scope": "labelled samples outside the official test split",
        "transition_matrix": json.dumps(np.round(T, 6).tolist()),
        "class_map": json.dumps([ds.classes[j] for j in class_map]),
    }

    def same(old: dict) -> bool:
        keys = ("noise", "mode", "seed", "manifest_sha256", "classes")
        return all(old.get(k) == (json.loads(attrs[k]) if k == "classes" else attrs[k]) for k in keys)

    path = save_label_set(ds, name, noisy, flipped, attrs, same, force)
    return CorruptResult(name, path, float(noise), realised, int(flipped.sum()), int(len(eligible)), T, ds.classes)


def save_label_set(ds: PreparedDataset, name: str, noisy, flipped, attrs: dict, same, force: bool):
    """Write label set ``name`` of ``ds`` (clean labels untouched). One of that name already there is
    replaced only when ``same(its attributes)`` says it was made the same way, or with ``force``."""
    path = ds.root / LABELS_DIR / f"{plain_name(name, 'label set name')}.h5"
    if path.is_file() and not force and not same(read_label_set_attrs(ds, name)):
        raise DatasetError(
            f"label set '{name}' already exists for {ds.name} and was made otherwise: pick another name, "
            "or force (--force) to replace it"
        )
    try:
        write_label_set(ds.root, name, noisy, flipped, attrs)
    except OSError as e:
        raise DatasetError(f"cannot write {path} ({e.strerror or e}): the dataset folder must be writable") from None
    return path
