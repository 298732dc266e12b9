"""The community's noisy label lists as label sets: ``grefel corrupt --from-file noise02.txt``.

Published results on noisy RAF-DB use fixed lists, not a fresh draw each time. Two formats exist:

* ``rafdb`` (EAC's ``noise01.txt``, ``noise02.txt``, ``noise03.txt``; RAF-DB's own
  ``list_patition_label.txt``): ``train_00001.jpg 5`` per line, RAF-DB's label codes 1-7;
* ``scn`` (SCN's ``0.1noise_train.txt``, ``0.2noise_train.txt``, ``train.txt``): an absolute path of
  the aligned image and a 0-based label, ``/home/.../aligned/train_00001_aligned.jpg 4``.

``auto`` (the default) tells them apart by the names: a path or an ``_aligned`` name is SCN's. Each
row is matched to the prepared dataset by image name (the file name without folders, extension
and ``_aligned``: ``train_00001``), against the ``source`` column of the prepared shards (the raw
item's path). A label code maps to a class through the dataset definition's codes (RAF-DB's
``datasets/rafdb.toml``), so the prepared class order does not matter.

The file must cover the whole training split (the images labelled ``train`` in the official split);
rows naming test images are ignored (the test split stays clean, as in ``grefel corrupt``). The
label set records the file's name and sha256, its format, the nominal noise level, the realised
flip rate overall and per class, and the transition matrix; the clean labels are never touched.
Each problem is a one-line error: a list for another dataset, names that match no image, a label
out of range, conflicting duplicate rows, a file that covers only part of the training split.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grefel.core.errors import DatasetError
from grefel.core.io import sha256_file
from grefel.core.paths import resolve_dataset
from grefel.data.corrupt import save_label_set, transition_matrix
from grefel.data.definitions import load_definition
from grefel.data.shards import PreparedDataset

LIST_FORMATS = ("auto", "rafdb", "scn")
LIST_DATASET = "rafdb"  # the dataset both published formats name images of
_ROW = re.compile(r"^\s*(\S+)\s+(-?\d+)\s*$")


@dataclass
class ImportResult:
    """What :func:`import_noise_list` wrote."""

    name: str
    path: Path
    fmt: str
    rows: int
    matched: int  # training images labelled from the file
    ignored_test: int  # rows naming official test images (left clean)
    flipped: int
    realised: float
    noise: float  # the nominal level recorded for tables
    per_class: list[float]  # flip rate of each clean class
    transition: np.ndarray
    classes: list[str]


def image_key(name: str) -> str:
    """``/a/b/train_00001_aligned.jpg`` -> ``train_00001`` (also for ``zip#member`` sources)."""
    base = name.replace("\\", "/").rsplit("#", 1)[-1].rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0].removesuffix("_aligned")


def read_noise_list(path: str | os.PathLike, fmt: str = "auto") -> tuple[str, list[tuple[int, str, int]]]:
    """(format, [(line number, image key, raw label)]) of a list file; one-line errors for unreadable lines."""
    path = Path(path)
    if fmt not in LIST_FORMATS:
        raise DatasetError(f"unknown list format {fmt!r}: use {', '.join(LIST_FORMATS)}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DatasetError(f"no list file {path}: give the path of a noisy label list") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path} ({e.strerror or e})") from None
    rows, names = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _ROW.match(line)
        if m is None:
            raise DatasetError(f"{path.name} line {lineno}: expected 'image label', got {line.strip()[:60]!r}")
        names.append(m.group(1))
        rows.append((lineno, image_key(m.group(1)), int(m.group(2))))
    if not rows:
        raise DatasetError(f"{path.name} holds no 'image label' rows")
    if fmt == "auto":
        scn = sum("/" in n or n.rsplit(".", 1)[0].endswith("_aligned") for n in names)
        fmt = "scn" if scn > len(names) / 2 else "rafdb"
    return fmt, rows


def import_noise_list(
    dataset: str | os.PathLike | None,
    path: str | os.PathLike,
    name: str | None = None,
    *,
    fmt: str = "auto",
    noise: float | None = None,
    force: bool = False,
    data_root: str | os.PathLike | None = None,
) -> ImportResult:
    """Write the list ``path`` as label set ``name`` (default: the file's stem) of ``dataset``.

    ``noise``: the nominal noise level the list stands for (0.2 for EAC's ``noise02.txt``), recorded
    for the report's tables; default: the realised flip rate rounded to whole percent.
    """
    ds = PreparedDataset(resolve_dataset(dataset, data_root))
    path = Path(path)
    if ds.name != LIST_DATASET:
        raise DatasetError(
            f"{path.name}: the published noise lists name RAF-DB's images, and {ds.name} is another dataset: "
            f"import it into a prepared RAF-DB (grefel prepare rafdb ...)"
        )
    if noise is not None and not 0 <= noise < 1:
        raise DatasetError(f"noise must be a fraction in [0, 1) (0.2 for 20 %), got {noise}")
    fmt, rows = read_noise_list(path, fmt)
    name = name or re.sub(r"[^A-Za-z0-9._+=-]", "-", path.stem)
    if name in ("", "clean") or name.startswith("."):
        raise DatasetError(f"'{name}' cannot name a label set: pick another name")
    clean = ds.labels()
    official = ds.meta["split"].to_numpy().astype(str)
    index_of = _index_by_key(ds)
    given = _labels_of_rows(path, rows, fmt, ds, index_of)
    test = {i for i in given if official[i] == "test"}
    eligible = np.flatnonzero((clean >= 0) & (official != "test"))
    missing = [i for i in eligible if i not in given]
    if missing:
        eg = image_key(ds.meta["source"].iloc[missing[0]])
        raise DatasetError(
            f"{path.name} covers {len(eligible) - len(missing):,} of the {len(eligible):,} training images of "
            f"{ds.name}: {len(missing):,} rows are missing (e.g. {eg}); give the complete list"
        )
    noisy = clean.copy()
    for i in eligible:
        noisy[i] = given[i]
    flipped = noisy != clean
    realised = float(flipped[eligible].mean())
    T = transition_matrix(clean[eligible], noisy[eligible], ds.num_classes)
    per_class = [float(1 - T[c, c]) if (clean[eligible] == c).any() else 0.0 for c in range(ds.num_classes)]
    nominal = float(noise) if noise is not None else round(realised, 2)
    attrs = {
        "noise": nominal,
        "mode": "imported",
        "seed": -1,
        "source_file": path.name,
        "source_sha256": sha256_file(path),
        "list_format": fmt,
        "realised_rate": realised,
        "flipped": int(flipped.sum()),
        "eligible": int(len(eligible)),
        "per_class_flip_rate": json.dumps([round(r, 6) for r in per_class]),
        "transition_matrix": json.dumps(np.round(T, 6).tolist()),
    }
    out = _write(ds, name, noisy, flipped, attrs, force)
    return ImportResult(
        name,
        out,
        fmt,
        len(rows),
        len(eligible),
        len(test),
        int(flipped.sum()),
        realised,
        nominal,
        per_class,
        T,
        ds.classes,
    )


def _index_by_key(ds: PreparedDataset) -> dict[str, int]:
    index_of: dict[str, int] = {}
    for i, src in enumerate(ds.meta["source"].to_numpy()):
        index_of.setdefault(image_key(str(src)), i)
    return index_of


def _labels_of_rows(path: Path, rows, fmt: str, ds: PreparedDataset, index_of: dict[str, int]) -> dict[int, int]:
    """Dataset index -> class index of every row; one-line errors for unknown names, labels, conflicts."""
    definition = load_definition(LIST_DATASET)
    offset = 1 if fmt == "scn" else 0  # SCN's labels are RAF-DB's codes minus 1
    codes = sorted(int(c) for c in definition.codes)
    span = f"{codes[0] - offset}..{codes[-1] - offset}" + (" (SCN's 0-based labels)" if offset else " (RAF-DB codes)")
    unknown = [key for _, key, _ in rows if key not in index_of]
    if unknown:
        raise DatasetError(
            f"{path.name}: {len(unknown):,} of its {len(rows):,} image names match no image of {ds.name} "
            f"(e.g. {unknown[0]}): is it a list for another dataset, or {ds.name} prepared without those images?"
        )
    given: dict[int, int] = {}
    for lineno, key, raw in rows:
        cls = definition.codes.get(str(raw + offset))
        if cls not in ds.classes:
            raise DatasetError(f"{path.name} line {lineno}: label {raw} is outside {span}")
        i, c = index_of[key], ds.classes.index(cls)
        if given.setdefault(i, c) != c:
            raise DatasetError(f"{path.name} line {lineno}: {key} is listed again with another label")
    return given


def _write(ds: PreparedDataset, name: str, noisy, flipped, attrs: dict, force: bool) -> Path:
    """labels/<name>.h5 (the schema of ``grefel corrupt``), refusing to replace another set of that name."""
    attrs = {
        "dataset": ds.name,
        "protocol": ds.protocol,
        "classes": json.dumps(ds.classes),
        "manifest_sha256": ds.manifest_sha256,
        "scope": "labelled samples outside the official test split, from the list",
        **attrs,
    }

    def same(old: dict) -> bool:
        made = old.get("source_sha256") == attrs["source_sha256"] and old.get("manifest_sha256") == ds.manifest_sha256
        return made and old.get("noise") == attrs["noise"]

    return save_label_set(ds, name, noisy, flipped, attrs, same, force)
