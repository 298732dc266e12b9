"""AffectNet, manually annotated part: the original CSV distribution and the newer npy one.

Original layout::

    Manually_Annotated_file_lists/training.csv, validation.csv
        subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal
        (training.csv has a header row; validation.csv copies exist with and without one)
    Manually_Annotated_Images/<subdir>/<name>.jpg      (often under Manually_Annotated/)

Newer layout::

    train_set/images/<id>.jpg, train_set/annotations/<id>_exp.npy, <id>_lnd.npy   (same under val_set/)

Faces are aligned from the shipped 68 landmarks by default (no detector); ``--align none`` crops the
shipped face box (CSV layout) or keeps the pre-cropped image (npy layout). Codes 8-10 are always
dropped; the 7-class protocol also drops 7 (contempt). Validation is stored as split ``test``. A
CSV row naming an image that an earlier row (of either file) named is skipped: the first row wins.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from grefel.data.align import five_from_68
from grefel.data.raw.base import FileRef, FirstLabel, RawItem, RawReader, Skip, find_dirs, find_file

COLUMNS = [
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
]
SPLIT_FILES = (("training.csv", "training"), ("validation.csv", "validation"))


def _code(value) -> str | None:
    """An expression code as written in the label tables (``'3'``), from ``3``, ``'3'`` or ``'3.0'``;
    None for anything else (text, ``nan``, ``inf``, ``1e400``, ``2.5``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return str(int(v)) if math.isfinite(v) and v == int(v) else None


class AffectNetReader(RawReader):
    dataset = "affectnet"
    has_landmarks = True
    has_landmarks68 = True

    def detect(self) -> str | None:
        root = self.tree.root
        if not root.is_dir():
            return None
        self.csvs = [(p, official) for name, official in SPLIT_FILES if (p := find_file(root, (name,))) is not None]
        if self.csvs:
            dirs = find_dirs(root, "Manually_Annotated_Images", 3)
            self.image_dir = dirs[0] if dirs else self.csvs[0][0].parent.parent / "Manually_Annotated_Images"
            return "original"
        self.sets = [
            (d, d.name)
            for name in ("train_set", "val_set")
            for d in find_dirs(root, name, 2)[:1]
            if (d / "images").is_dir() and (d / "annotations").is_dir()
        ]
        return "npy" if self.sets else None

    def default_align(self) -> str:
        return "landmarks"

    def annotation_files(self) -> list[Path]:
        return [p for p, _ in self.csvs] if self.layout == "original" else []

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.tree.root).as_posix()

    def items(self) -> Iterator[RawItem | Skip]:
        yield from (self._csv_items() if self.layout == "original" else self._npy_items())

    # -- original CSV layout --------------------------------------------------------------------
    def _csv_items(self) -> Iterator[RawItem | Skip]:
        img_rel = self._rel(self.image_dir)
        lines = FirstLabel()  # an image named again (in either file): the first row wins
        for path, official in self.csvs:
            split = self.definition.split(official)
            rel = self._rel(path)
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                for rowno, row in enumerate(csv.reader(f), 1):
                    if rowno == 1 and row and row[0].strip() == COLUMNS[0]:
                        continue  # header row (present in some copies only)
                    if not row or not any(c.strip() for c in row):
                        continue
                    yield self._csv_row(row, f"{rel}#{rowno}", img_rel, split, lines)

    def _csv_row(self, row: list[str], where: str, img_rel: str, split: str, lines: FirstLabel) -> RawItem | Skip:
        if len(row) != len(COLUMNS):
            return Skip(where, f"malformed row ({len(row)} fields, expected {len(COLUMNS)})")
        name = row[0].strip().replace("\\", "/")
        src = f"{img_rel}/{name}"
        code = _code(row[6])
        if code is None:
            return Skip(where, f"malformed row (expression {row[6]!r} is not a whole number)")
        duplicate = lines.check(name, where, code)
        if duplicate:
            return Skip(where, duplicate)
        lab = self.label_or_skip(src, code)
        if isinstance(lab, Skip):
            return lab
        item = RawItem(source=src, label=lab, split=split, file=FileRef(src))
        try:
            x, y, w, h = (float(v) for v in row[1:5])
            if 0 < w < math.inf and 0 < h < math.inf and math.isfinite(x) and math.isfinite(y):
                item.box = (x, y, x + w, y + h)
        except ValueError:
            pass
        try:
            pts = np.array([float(v) for v in row[5].split(";") if v.strip()], np.float32)
            if pts.size == 136 and np.isfinite(pts).all():
                item.landmarks68 = pts.reshape(68, 2)
                item.landmarks = five_from_68(item.landmarks68)
        except ValueError:
            pass
        if self.align == "landmarks" and item.landmarks is None:
            return Skip(src, "malformed facial_landmarks (expected 68 x;y points)")
        if self.align == "none" and item.box is None:
            return Skip(src, "invalid face box (non-positive or infinite width or height)")
        return item

    # -- npy layout -----------------------------------------------------------------------------
    def _npy_items(self) -> Iterator[RawItem | Skip]:
        for d, official in self.sets:
            split = self.definition.split(official)
            ref_dir = self._rel(d / "images")
            names = sorted(
                (p.name for p in (d / "images").iterdir() if not p.name.startswith(".")),
                key=lambda n: (0, int(n.split(".")[0]), n) if n.split(".")[0].isdigit() else (1, 0, n),
            )
            for n in names:
                src = f"{ref_dir}/{n}"
                yield RawItem(source=src, label=-1, split=split, file=FileRef(src))

    def stamp(self, item: RawItem) -> str:
        if self.layout != "npy":
            return super().stamp(item)
        ann = item.source.rsplit("/images/", 1)[0] + "/annotations/" + item.file.name.rsplit(".", 1)[0]
        return " ".join(self.tree.stamp(FileRef(f)) for f in (item.source, f"{ann}_exp.npy", f"{ann}_lnd.npy"))

    def resolve(self, item: RawItem) -> RawItem | Skip:
        """npy layout: read ``<id>_exp.npy`` (label, possibly stored as a string) and ``<id>_lnd.npy``."""
        if self.layout != "npy":
            return item
        ann = self.tree.root / item.source.rsplit("/images/", 1)[0] / "annotations"
        stem = item.file.name.rsplit(".", 1)[0]
        try:
            value = np.load(ann / f"{stem}_exp.npy", allow_pickle=False).item()
        except FileNotFoundError:
            return Skip(item.source, f"no annotation file ({stem}_exp.npy)")
        except (ValueError, OSError) as e:
            return Skip(item.source, f"unreadable annotation file ({stem}_exp.npy: {str(e)[:60]})")
        code = _code(value)
        if code is None:
            return Skip(
                item.source, f"malformed annotation ({stem}_exp.npy holds {str(value)[:20]!r}, not a whole number)"
            )
        lab = self.label_or_skip(item.source, code)
        if isinstance(lab, Skip):
            return lab
        item.label = lab
        try:
            pts = np.load(ann / f"{stem}_lnd.npy", allow_pickle=False).astype(np.float32).reshape(-1)
            if pts.size == 136 and np.isfinite(pts).all():
                item.landmarks68 = pts.reshape(68, 2)
                item.landmarks = five_from_68(item.landmarks68)
        except (FileNotFoundError, ValueError, OSError):
            pass
        if self.align == "landmarks" and item.landmarks is None:
            return Skip(item.source, f"no usable landmarks ({stem}_lnd.npy missing or not 68 points)")
        return item
