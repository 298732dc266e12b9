"""Prepared datasets on disk: HDF5 shards plus a JSON manifest. Schema version 2.

A prepared dataset is a folder (usually ``<data root>/<name>``)::

    manifest.json       dataset, protocol, classes (canonical order), image size, counts, shards
                        (file, number of samples, sha256), schema version
    provenance.json     grefel version, aligner and options, source file checksums, command
    skipped.csv         source,reason   for every raw item that was not written
    shards/shard-00000.h5, shard-00001.h5, ...
    labels/<set>.h5     label sets written by ``grefel corrupt`` (clean labels are never modified)
    labels/<set>.sha256 the label set's sha256, checked on every read
    splits/<set>.h5     split assignments written by ``grefel refine``
    verified.json       shards whose sha256 was checked, by size and mtime (a cache; safe to delete)

Every shard is a plain HDF5 file that any HDF5 tool reads without grefel. Datasets in a shard
(``n`` = samples in that shard, ``S`` = stored image size):

=================  =================  =======================================================
name               dtype, shape       meaning
=================  =================  =======================================================
``images``         uint8 (n, S, S, 3) aligned face, RGB, row-major (height, width, channel)
``label``          int16 (n,)         clean label, index into ``classes`` (-1: no label)
``split``          ascii (n,)         official split: ``train``, ``val``, ``test`` or empty
``group``          utf-8 (n,)         subject / video / character id, empty when unknown
``source``         utf-8 (n,)         raw item, relative to the raw folder (``file#row`` for CSVs)
``index``          int64 (n,)         global sample index, 0..N-1 over the shards in order
``landmarks``      float32 (n, 5, 2)  five points used for alignment, source-image pixels
                                      (left eye, right eye, nose, left/right mouth); NaN if none
``transform``      float32 (n, 2, 3)  similarity matrix source -> stored image; NaN if none
``attributes/*``   int8 (n,)          per-image attributes (RAF-DB ``gender``, ``race``, ``age``),
                                      -1 when unknown; code meanings in the dataset's attrs
``source_sha256``  ascii (n,)         sha256 of the raw image file's bytes (empty: inline pixels)
``landmarks68``    float32 (n, 68, 2) 68-point markup shipped with the dataset (AffectNet only;
                                      present only in shards of datasets that ship it), NaN if none
``skipped/source`` utf-8 (k,)         raw items of this shard's chunk that were not written ...
``skipped/reason`` utf-8 (k,)         ... and why (``skipped.csv`` gathers them over all shards)
=================  =================  =======================================================

File attributes: ``schema_version``, ``dataset``, ``protocol``, ``classes`` (JSON list),
``image_size``; shards written by ``grefel prepare`` also carry ``chunk`` (shard number),
``chunk_items`` (raw items the chunk covered, written or skipped) and ``chunk_sha256`` (of the
chunk's raw item names), which let an interrupted run resume and detect a changed raw folder.
Shards are written under a temporary name and renamed when complete, so a shard file that exists
is whole. The manifest gives each shard's ``bytes`` and ``sha256``: :class:`PreparedDataset`
compares every shard's size on open, and :meth:`PreparedDataset.verify_contents` its sha256. Text
that is not valid UTF-8 (a raw file name in another encoding) is stored with ``\\xNN`` escapes.
Schema 2 (grefel 0.1.0) added ``source_sha256``, ``landmarks68``, ``skipped/`` and the
manifest's shard ``bytes`` to schema 1. A manifest or shard of another schema version is refused
with a one-line error naming both versions (prepare the dataset again).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

from grefel.core.errors import DatasetError
from grefel.core.io import atomic_path, read_json, sha256_file, write_json
from grefel.core.paths import MANIFEST, PROVENANCE, plain_name

SCHEMA_VERSION = 2
SHARD_DIR = "shards"
LABELS_DIR = "labels"
SPLITS_DIR = "splits"
_STR = h5py.string_dtype("utf-8")
VERIFIED = "verified.json"
_READ_ERRORS = (
    OSError,
    KeyError,
    ValueError,
    RuntimeError,
    TypeError,
    IndexError,
)  # what h5py raises on a damaged file


def storable(text: str) -> str:
    """``text`` as valid UTF-8: a file name's undecodable bytes (Python's surrogate escapes) become ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class Sample:
    """One prepared face, as written to a shard."""

    image: np.ndarray  # uint8 (S, S, 3)
    label: int
    split: str
    source: str
    group: str = ""
    landmarks: np.ndarray | None = None  # (5, 2) source-image pixels
    transform: np.ndarray | None = None  # (2, 3) source -> stored image
    attributes: dict[str, int] = field(default_factory=dict)
    source_sha256: str = ""  # sha256 of the raw file's bytes
    landmarks68: np.ndarray | None = None  # (68, 2) shipped markup, source-image pixels


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.h5"


def write_shard(
    path: str | os.PathLike,
    samples: Sequence[Sample],
    *,
    first_index: int,
    dataset: str,
    protocol: str,
    classes: Sequence[str],
    image_size: int,
    attribute_names: Sequence[str] = (),
    compression: str | None = None,
) -> dict:
    """Write ``samples`` to one shard atomically; return its manifest entry."""
    with ShardWriter(
        path,
        first_index=first_index,
        dataset=dataset,
        protocol=protocol,
        classes=classes,
        image_size=image_size,
        attribute_names=attribute_names,
        compression=compression,
    ) as w:
        for s in samples:
            w.add(s)
    return w.entry


class ShardWriter:
    """Write one shard sample by sample in constant memory; it appears under its name only when whole.

    Use as a context manager: on a clean exit the file is closed, fsynced and renamed over ``path``
    (:func:`grefel.core.io.atomic_path`) and :attr:`entry` holds its manifest entry; on an exception the
    temporary file is removed. ``skipped`` (source, reason) pairs and extra file ``attrs`` can be
    given before the exit.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        first_index: int,
        dataset: str,
        protocol: str,
        classes: Sequence[str],
        image_size: int,
        attribute_names: Sequence[str] = (),
        compression: str | None = None,
        landmarks68: bool = False,
        attrs: dict | None = None,
        flush_every: int = 256,
    ):
        self.path = Path(path)
        self.first_index, self.image_size = first_index, image_size
        self.attribute_names, self.landmarks68 = list(attribute_names), landmarks68
        self.compression, self.flush_every = compression, flush_every
        self.file_attrs = {
            "schema_version": SCHEMA_VERSION,
            "dataset": dataset,
            "protocol": protocol,
            "classes": json.dumps(list(classes)),
            "image_size": image_size,
            **(attrs or {}),
        }
        self.skipped: list[tuple[str, str]] = []
        self.n = 0
        self._buf: list[Sample] = []
        self.entry: dict | None = None

    def __enter__(self) -> ShardWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._f = h5py.File(tmp, "w")
            self._create()
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        return self

    def _create(self) -> None:
        f, S = self._f, self.image_size
        for k, v in self.file_attrs.items():
            f.attrs[k] = v
        f.create_dataset(
            "images",
            shape=(0, S, S, 3),
            maxshape=(None, S, S, 3),
            dtype=np.uint8,
            chunks=(1, S, S, 3),
            compression=self.compression,
        )
        cols = {
            "label": np.int16,
            "split": "S8",
            "group": _STR,
            "source": _STR,
            "index": np.int64,
            "source_sha256": "S64",
        }
        for name, dt in cols.items():
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(1024,))
        f.create_dataset("landmarks", shape=(0, 5, 2), maxshape=(None, 5, 2), dtype=np.float32, chunks=(1024, 5, 2))
        f.create_dataset("transform", shape=(0, 2, 3), maxshape=(None, 2, 3), dtype=np.float32, chunks=(1024, 2, 3))
        if self.landmarks68:
            f.create_dataset(
                "landmarks68", shape=(0, 68, 2), maxshape=(None, 68, 2), dtype=np.float32, chunks=(256, 68, 2)
            )
        grp = f.create_group("attributes")
        for name in self.attribute_names:
            grp.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.int8, chunks=(1024,))

    def set_attrs(self, **attrs) -> None:
        """Add or change file attributes before the shard is closed."""
        self.file_attrs.update(attrs)
        for k, v in attrs.items():
            self._f.attrs[k] = v

    def add(self, sample: Sample) -> None:
        S = self.image_size
        if sample.image.shape != (S, S, 3) or sample.image.dtype != np.uint8:
            raise ValueError(f"images must be uint8 ({S}, {S}, 3), got {sample.image.dtype} {sample.image.shape}")
        self._buf.append(sample)
        if len(self._buf) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        b, f = self._buf, self._f
        if not b:
            return
        n0, n1 = self.n, self.n + len(b)
        cols = {
            "images": np.stack([s.image for s in b]),
            "label": np.array([s.label for s in b], np.int16),
            "split": np.array([s.split for s in b], dtype="S8"),
            "group": np.array([storable(s.group) for s in b], dtype=object),
            "source": np.array([storable(s.source) for s in b], dtype=object),
            "index": np.arange(self.first_index + n0, self.first_index + n1, dtype=np.int64),
            "source_sha256": np.array([s.source_sha256 for s in b], dtype="S64"),
            "landmarks": _stack_or_nan([s.landmarks for s in b], (5, 2)),
            "transform": _stack_or_nan([s.transform for s in b], (2, 3)),
        }
        if self.landmarks68:
            cols["landmarks68"] = _stack_or_nan([s.landmarks68 for s in b], (68, 2))
        for name in self.attribute_names:
            cols[f"attributes/{name}"] = np.array([s.attributes.get(name, -1) for s in b], np.int8)
        for name, data in cols.items():
            ds = f[name]
            ds.resize(n1, axis=0)
            ds[n0:n1] = data
        self.n, self._buf = n1, []

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._flush()
                grp = self._f.create_group("skipped")
                grp.create_dataset("source", data=[storable(s) for s, _ in self.skipped], dtype=_STR)
                grp.create_dataset("reason", data=[storable(r) for _, r in self.skipped], dtype=_STR)
            self._f.close()
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        self._atomic.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self.entry = {
                "file": f"{SHARD_DIR}/{self.path.name}",
                "n": self.n,
                "first_index": self.first_index,
                "bytes": self.path.stat().st_size,
                "sha256": sha256_file(self.path),
            }
        return False


def _stack_or_nan(arrays: Iterable[np.ndarray | None], shape: tuple[int, ...]) -> np.ndarray:
    rows = [
        np.full(shape, np.nan, np.float32) if a is None else np.asarray(a, np.float32).reshape(shape) for a in arrays
    ]
    return np.stack(rows) if rows else np.zeros((0, *shape), np.float32)


class PreparedDataset:
    """Read access to a prepared dataset folder (see the module docstring for the layout).

    Small per-sample columns are loaded once into :attr:`meta` (a pandas DataFrame indexed by the
    global sample index). Images are read on demand; HDF5 handles are opened lazily per process, so
    an instance can be handed to DataLoader workers.

    Opening checks that every shard is there with the size the manifest gives (cheap);
    :meth:`verify_contents` checks their sha256. A shard that cannot be read, at any time, is a
    :class:`~grefel.core.errors.DatasetError` naming it and the command that rebuilds it.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        mf = self.root / MANIFEST
        if not mf.is_file():
            raise DatasetError(f"{self.root} is not a prepared dataset (no {MANIFEST}): run `grefel prepare` first")
        try:
            manifest = read_json(mf)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{mf} is unreadable ({_first_line(e)}): {self.rebuild_hint()}") from None
        self.manifest: dict = check_manifest(manifest, mf, self.rebuild_hint())
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        self._check_sizes()

    # -- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest["dataset"]

    @property
    def protocol(self) -> str:
        return self.manifest.get("protocol", "")

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def shards(self) -> list[dict]:
        return list(self.manifest["shards"])

    def __len__(self) -> int:
        return sum(s["n"] for s in self.shards)

    @cached_property
    def synthetic(self) -> dict | None:
        """``grefel synth``'s settings when the raw images were drawn by it (provenance.json), else None."""
        try:
            return read_json(self.root / PROVENANCE).get("synthetic")
        except (OSError, ValueError):
            return None

    @cached_property
    def manifest_sha256(self) -> str:
        return sha256_file(self.root / MANIFEST)

    # -- integrity ---------------------------------------------------------------------------
    def rebuild_hint(self) -> str:
        """What to run to prepare this dataset again (from provenance.json when it is there)."""
        try:
            prov = read_json(self.root / PROVENANCE)
            dataset, raw, opts = prov["dataset"], prov["raw"], prov.get("options", {})
        except (OSError, ValueError, KeyError, TypeError):
            return f"prepare it again with `grefel prepare DATASET RAW --out {self.root} --force`"
        cmd = ["grefel prepare", dataset, _quote(raw), "--out", _quote(str(self.root))]
        if dataset == "affectnet" and prov.get("protocol"):
            cmd += ["--protocol", str(prov["protocol"])]
        if opts.get("align"):
            cmd += ["--align", opts["align"]]
        if opts.get("size") not in (None, 128):
            cmd += ["--size", str(opts["size"])]
        return f"rebuild it with `{' '.join(cmd)} --force`"

    def _check_sizes(self) -> None:
        """Every shard exists with the size the manifest records (manifests before ``bytes``: exists)."""
        for entry in self.shards:
            path = self.root / entry["file"]
            try:
                size = path.stat().st_size
            except OSError:
                raise DatasetError(f"shard {path} of {self.name} is missing: {self.rebuild_hint()}") from None
            if entry.get("bytes") not in (None, size):
                raise DatasetError(
                    f"shard {path} of {self.name} is damaged ({size:,} bytes, the manifest says "
                    f"{entry['bytes']:,}): {self.rebuild_hint()}"
                )

    def verify_contents(self, cache: bool = True) -> int:
        """Check every shard's sha256 against the manifest; return how many were hashed now.

        Results are cached in ``verified.json`` by (size, mtime, sha256), so a second call only
        hashes shards changed since (``cache=False`` hashes all). The cache is not written where
        the folder is read-only. Raises DatasetError naming the first shard that does not match.
        """
        self._check_sizes()
        seen = self._verified() if cache else {}
        hashed, bad = 0, []
        for entry in self.shards:
            path = self.root / entry["file"]
            st = path.stat()
            key = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": entry.get("sha256")}
            if not entry.get("sha256") or seen.get(entry["file"]) == key:
                continue
            hashed += 1
            if sha256_file(path) == entry["sha256"]:
                seen[entry["file"]] = key
            else:
                seen.pop(entry["file"], None)
                bad.append(path)
        if hashed:
            with contextlib.suppress(OSError):
                write_json(self.root / VERIFIED, seen)
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DatasetError(
                f"shard {bad[0]}{more} of {self.name} does not match the sha256 in its manifest (damaged since it "
                f"was written): {self.rebuild_hint()}"
            )
        return hashed

    def _verified(self) -> dict:
        try:
            seen = read_json(self.root / VERIFIED)
        except (OSError, ValueError):
            return {}
        return seen if isinstance(seen, dict) else {}

    @contextlib.contextmanager
    def _reading(self, path: Path):
        """Turn any error h5py raises while reading ``path`` into a DatasetError naming it."""
        try:
            yield
        except DatasetError:
            raise
        except _READ_ERRORS as e:
            what = "shard" if path.parent.name == SHARD_DIR else "file"
            raise DatasetError(
                f"{what} {path} of {self.name} cannot be read ({type(e).__name__}: {_first_line(e)}): "
                + (self.rebuild_hint() if what == "shard" else "delete it and create it again")
            ) from None

    # -- per-sample columns ----------------------------------------------------------------
    @cached_property
    def meta(self):
        """DataFrame of label, split, group, source, attributes, shard and row per sample."""
        import pandas as pd

        frames = [pd.DataFrame(self._meta_columns(k, entry)) for k, entry in enumerate(self.shards)]
        if not frames:
            return pd.DataFrame(columns=["index", "label", "split", "group", "source", "shard", "row"]).set_index(
                "index"
            )
        return pd.concat(frames, ignore_index=True).set_index("index", drop=False)

    def _meta_columns(self, k: int, entry: dict) -> dict:
        path = self.root / entry["file"]
        with self._reading(path), h5py.File(path, "r") as f:
            cols = {
                "index": f["index"][:],
                "label": f["label"][:].astype(np.int64),
                "split": f["split"][:].astype(str),
                "group": f["group"].asstr()[:],
                "source": f["source"].asstr()[:],
            }
            for name in f.get("attributes", {}):
                cols[name] = f["attributes"][name][:].astype(np.int64)
        if any(len(c) != entry["n"] for c in cols.values()):
            raise DatasetError(
                f"shard {path} of {self.name} holds another number of samples than its manifest says "
                f"({entry['n']}): {self.rebuild_hint()}"
            )
        cols["shard"] = np.full(len(cols["index"]), k, np.int64)
        cols["row"] = np.arange(len(cols["index"]), dtype=np.int64)
        return cols

    def landmarks(self) -> np.ndarray:
        """(N, 5, 2) alignment landmarks in source-image pixels (NaN where none were used)."""
        return (
            np.concatenate([self._column(e, "landmarks") for e in self.shards])
            if self.shards
            else np.zeros((0, 5, 2), np.float32)
        )

    def _column(self, entry: dict, name: str) -> np.ndarray:
        path = self.root / entry["file"]
        with self._reading(path), h5py.File(path, "r") as f:
            return f[name][:]

    def label_sets(self) -> list[str]:
        d = self.root / LABELS_DIR
        return sorted(p.stem for p in d.glob("*.h5")) if d.is_dir() else []

    def labels(self, label_set: str | None = None) -> np.ndarray:
        """Labels of every sample: the clean ones, or those of a named label set (``grefel corrupt``).

        A label set must have been made from this very preparation: same length, same classes and
        the sha256 of this manifest (when it records them), and its file must match the sha256 beside
        it (``labels/<set>.sha256``, written with it by :func:`write_label_set`), else a DatasetError.
        Every label is range-checked: -1 (unlabelled) or a class index.
        """
        if label_set in (None, "", "clean"):
            return self._in_range(self.meta["label"].to_numpy(), "the clean labels", self.rebuild_hint())
        plain_name(label_set, "label set name")
        p = self.root / LABELS_DIR / f"{label_set}.h5"
        if not p.is_file():
            have = ", ".join(self.label_sets()) or "none"
            raise DatasetError(
                f"label set '{label_set}' not found for {self.name} (have: {have}); create it with `grefel corrupt`"
            )
        redo = f"recreate it with `grefel corrupt --dataset {self.name} --name {label_set} --force`"
        _check_sidecar(p, f"label set '{label_set}' of {self.name}", redo)
        with self._reading(p), h5py.File(p, "r") as f:
            lab = f["label"][:].astype(np.int64)
            classes, made_from = _attr(f, "classes"), _attr(f, "manifest_sha256")
        if len(lab) != len(self):
            raise DatasetError(
                f"label set '{label_set}' has {len(lab)} labels but {self.name} has {len(self)} samples: {redo}"
            )
        if _as_list(classes) not in (None, self.classes) or made_from not in (None, self.manifest_sha256):
            raise DatasetError(
                f"label set '{label_set}' was made for another preparation of {self.name} (classes or manifest "
                f"differ): {redo}"
            )
        return self._in_range(lab, f"label set '{label_set}'", redo)

    def _in_range(self, labels: np.ndarray, what: str, redo: str) -> np.ndarray:
        """``labels`` when every one is -1 (unlabelled) or a class index, else a one-line DatasetError."""
        bad = np.flatnonzero((labels < -1) | (labels >= self.num_classes))
        if len(bad):
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise DatasetError(
                f"{what} of {self.name}: label {labels[bad[0]]} (sample {bad[0]}{more}) is outside "
                f"-1..{self.num_classes - 1} for its {self.num_classes} classes: {redo}"
            )
        return labels

    def split_sets(self) -> list[str]:
        d = self.root / SPLITS_DIR
        return sorted(p.stem for p in d.glob("*.h5")) if d.is_dir() else []

    def splits(self, split_set: str | None = None) -> np.ndarray:
        """Split name per sample: from ``splits/<split_set>.h5`` (``grefel refine``), else official.

        With ``split_set=None`` the refined ``default`` split is used when it exists. A split set
        made for another preparation (length or manifest sha256 differ) is a DatasetError.
        """
        name = plain_name(split_set, "split set name") if split_set else "default"
        p = self.root / SPLITS_DIR / f"{name}.h5"
        if p.is_file():
            with self._reading(p), h5py.File(p, "r") as f:
                split, made_from = f["split"][:].astype(str), _attr(f, "manifest_sha256")
            if len(split) != len(self) or made_from not in (None, self.manifest_sha256):
                raise DatasetError(
                    f"split set '{name}' was made for another preparation of {self.name}: "
                    f"write it again with `grefel refine --dataset {self.name} --force`"
                )
            return split
        if split_set not in (None, "official"):
            have = ", ".join(self.split_sets()) or "none"
            raise DatasetError(
                f"split set '{split_set}' not found for {self.name} (have: {have}); create it with `grefel refine`"
            )
        return self.meta["split"].to_numpy()

    def indices(self, split: str, split_set: str | None = None) -> np.ndarray:
        """Global indices of the samples in ``split``."""
        return np.flatnonzero(self.splits(split_set) == split)

    # -- images ----------------------------------------------------------------------------
    def _handle(self, k: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked into a worker: never reuse the parent's handles
            self._handles, self._pid = {}, os.getpid()
        h = self._handles.get(k)
        if h is None:
            h = self._handles[k] = h5py.File(self.root / self.shards[k]["file"], "r")
        return h

    def read_images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (len(indices), S, S, 3) images in the order asked for."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.image_size, self.image_size, 3), np.uint8)
        if len(idx) == 0:
            return out
        meta = self.meta
        shard = meta["shard"].to_numpy()[idx]
        row = meta["row"].to_numpy()[idx]
        # One read per image: on row-chunked data h5py's fancy indexing (images[[i, j, ...]]) is
        # ~400x slower than plain row reads (0.9 s against 2 ms for 64 rows, bench/bench_datapath.py).
        datasets: dict[int, h5py.Dataset] = {}
        k = int(shard[0])
        try:
            for j, (k, r) in enumerate(zip(shard.tolist(), row.tolist())):
                d = datasets.get(k)
                if d is None:
                    d = datasets[k] = self._handle(k)["images"]
                out[j] = d[r]
        except _READ_ERRORS as e:
            with self._reading(self.root / self.shards[k]["file"]):
                raise e from None
        return out

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state


def checksum_path(path: Path) -> Path:
    """The sha256 file beside ``path`` (``labels/<set>.h5`` -> ``labels/<set>.sha256``)."""
    return path.with_suffix(".sha256")


def write_label_set(root: str | os.PathLike, name: str, labels, flipped=None, attrs: dict | None = None) -> Path:
    """Write ``labels/<name>.h5`` (dataset ``label`` int16, ``flipped`` bool when given, file ``attrs``)
    atomically, then its sha256 beside it (``<name>.sha256``), which every read checks. The one writer
    of label sets (`grefel corrupt`, tests)."""
    path = Path(root) / LABELS_DIR / f"{plain_name(name, 'label set name')}.h5"
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("label", data=np.asarray(labels).astype(np.int16))
        if flipped is not None:
            f.create_dataset("flipped", data=np.asarray(flipped, bool))
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    with atomic_path(checksum_path(path)) as tmp:
        tmp.write_text(f"{sha256_file(path)}  {path.name}\n")
    return path


def _check_sidecar(path: Path, what: str, redo: str) -> None:
    """``path`` matches the sha256 recorded beside it (:func:`checksum_path`), else a one-line DatasetError."""
    side = checksum_path(path)
    try:
        recorded = side.read_text().split()[0]
    except (OSError, IndexError):
        raise DatasetError(
            f"{what} has no readable checksum ({side.name} beside it): it was not written by this grefel; {redo}"
        ) from None
    if sha256_file(path) != recorded:
        raise DatasetError(f"{what} does not match the sha256 in {side.name} (changed since it was written): {redo}")


# what a manifest must hold: key -> (type, what it is)
MANIFEST_KEYS = {
    "schema_version": (int, "an integer"),
    "dataset": (str, "a name"),
    "classes": (list, "a list of class names"),
    "image_size": (int, "an integer"),
    "shards": (list, "a list of shard entries"),
}
SHARD_KEYS = {"file": str, "n": int, "bytes": int, "sha256": str}


def check_manifest(m, path: Path, hint: str) -> dict:
    """``m`` (a parsed manifest.json) checked against the schema; a one-line DatasetError otherwise."""
    if not isinstance(m, dict):
        raise DatasetError(f"{path} is not a manifest (a JSON {type(m).__name__}, not an object): {hint}")
    version = m.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DatasetError(
            f"{path.parent} holds prepared-data schema version {version}, and this grefel reads version "
            f"{SCHEMA_VERSION}: {hint}"
        )
    for key, (kind, what) in MANIFEST_KEYS.items():
        if not isinstance(m.get(key), kind) or isinstance(m.get(key), bool):
            raise DatasetError(f"{path}: '{key}' must be {what}, got {_quote(repr(m.get(key))[:40])}: {hint}")
    if not all(isinstance(c, str) for c in m["classes"]) or len(set(m["classes"])) != len(m["classes"]):
        raise DatasetError(f"{path}: 'classes' must be unique class names: {hint}")
    for entry in m["shards"]:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), v) for k, v in SHARD_KEYS.items()):
            raise DatasetError(
                f"{path}: a shard entry lacks {' / '.join(SHARD_KEYS)} ({_quote(repr(entry)[:60])}): {hint}"
            )
        parts = entry["file"].split("/")
        if len(parts) != 2 or parts[0] != SHARD_DIR or parts[1] in ("", ".", ".."):
            raise DatasetError(f"{path}: shard file {entry['file']!r} is outside the dataset's shards folder: {hint}")
    return m


def _attr(f: h5py.File, name: str):
    v = f.attrs.get(name)
    return v.decode() if isinstance(v, bytes) else v


def _as_list(v) -> list | None:
    """A ``classes`` attribute (a JSON string, or an array of names) as a list; None when absent."""
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return [v]
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.atleast_1d(v)]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
