"""FER+: FER2013's 48 x 48 pixels (``fer2013.csv``) with the FER+ crowd votes (``fer2013new.csv``).

The two files have the same row order and are read in lockstep. ``fer2013.csv`` columns are
``emotion,pixels,Usage`` (``icml_face_data.csv`` names them with leading spaces: names are stripped).
``fer2013new.csv``: ``Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF``.
Labels follow the FER+ authors' majority rule (:func:`ferplus_majority`). We use ``fer2013new.csv``
rather than the repository's per-split ``label.csv`` files, whose votes differ slightly.
Usage -> split: Training -> train, PublicTest -> val, PrivateTest -> test.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from grefel.core.errors import DatasetError
from grefel.core.images import ImageError
from grefel.data.raw.base import RawItem, RawReader, Skip, find_file

PIXEL_FILES = ("fer2013.csv", "icml_face_data.csv")
VOTE_FILE = "fer2013new.csv"
VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")


def ferplus_majority(votes: Sequence[float]) -> tuple[int | None, str]:
    """The FER+ majority-vote label of one row of 10 vote counts (column order of :data:`VOTE_COLUMNS`).

    The authors' rule (FERPlus ``_process_data``, mode ``majority``): every count <= 1 is set to 0
    (a single vote is an outlier); the row keeps the class whose count is more than half of the
    remaining sum; a row with no such class (ties included) is dropped, and so is a row whose
    majority is ``unknown`` or ``NF`` (not a face). Returns (class index or None, reason).
    """
    v = np.asarray(votes, np.float64)
    if v.shape != (len(VOTE_COLUMNS),):
        return None, f"expected {len(VOTE_COLUMNS)} vote counts, got {v.size}"
    v = np.where(v <= 1, 0.0, v)
    total = v.sum()
    if total <= 0:
        return None, "ferplus: no class has more than one vote"
    k = int(np.argmax(v))
    if not v[k] > 0.5 * total:
        return None, "ferplus: no majority (largest count is not more than half the votes)"
    if VOTE_COLUMNS[k] == "unknown":
        return None, "ferplus: majority voted unknown"
    if VOTE_COLUMNS[k] == "NF":
        return None, "ferplus: majority voted not a face (NF)"
    return k, ""


class FerPlusReader(RawReader):
    dataset = "ferplus"

    def detect(self) -> str | None:
        root = self.tree.root
        if not root.is_dir():
            return None
        self.pixel_file = find_file(root, PIXEL_FILES)
        self.vote_file = find_file(root, (VOTE_FILE,))
        return "csv" if self.pixel_file and self.vote_file else None

    def annotation_files(self) -> list[Path]:
        return [self.pixel_file, self.vote_file]

    def items(self) -> Iterator[RawItem | Skip]:
        pix_name = self.pixel_file.name
        with open(self.pixel_file, newline="") as fp, open(self.vote_file, newline="") as fv:
            rp, rv = csv.reader(fp), csv.reader(fv)
            hp = [c.strip() for c in next(rp, [])]
            hv = [c.strip() for c in next(rv, [])]
            ip = {c: hp.index(c) for c in ("pixels", "Usage") if c in hp}
            if len(ip) < 2:
                raise DatasetError(
                    f"{self.pixel_file} has no 'pixels' and 'Usage' columns (header: {','.join(hp)[:80]}): "
                    "pass the original fer2013.csv"
                )
            if not all(c in hv for c in VOTE_COLUMNS):
                raise DatasetError(
                    f"{self.vote_file} lacks the vote columns {','.join(VOTE_COLUMNS)}: "
                    "pass fer2013new.csv from the FERPlus repository"
                )
            iv_usage = hv.index("Usage") if "Usage" in hv else None
            iv_name = hv.index("Image name") if "Image name" in hv else None
            iv_votes = [hv.index(c) for c in VOTE_COLUMNS]
            for i, (p, v) in enumerate(itertools.zip_longest(rp, rv)):
                src = f"{pix_name}#{i}"
                if p is None or v is None:
                    short = pix_name if p is None else VOTE_FILE
                    yield Skip(src, f"{short} ends before the other file (row {i})")
                    continue
                yield self._row(src, p, v, ip, iv_usage, iv_name, iv_votes)

    def _row(self, src, p, v, ip, iv_usage, iv_name, iv_votes) -> RawItem | Skip:
        if len(p) <= max(ip.values()):
            return Skip(src, f"malformed row in {self.pixel_file.name} ({len(p)} fields)")
        if len(v) <= max(iv_votes):
            return Skip(src, f"malformed row in {VOTE_FILE} ({len(v)} fields)")
        usage = p[ip["Usage"]].strip()
        if iv_usage is not None and v[iv_usage].strip() != usage:
            return Skip(
                src, f"rows out of step (Usage differs between the files: {usage!r} vs {v[iv_usage].strip()!r})"
            )
        if iv_name is not None and not v[iv_name].strip():
            return Skip(src, "ferplus: empty Image name (not a face)")
        split = self.definition.split(usage)
        if split is None:
            return Skip(src, f"unknown Usage ({usage!r})")
        try:
            votes = [float(v[j]) for j in iv_votes]
        except ValueError:
            return Skip(src, f"malformed vote counts in {VOTE_FILE}")
        label, reason = ferplus_majority(votes)
        if label is None:
            return Skip(src, reason)
        return RawItem(source=src, label=label, split=split, pixels=p[ip["pixels"]])

    def load_image(self, item: RawItem) -> tuple[np.ndarray, str]:
        try:
            a = np.array(item.pixels.split(), dtype=np.int64)
        except ValueError:
            raise ImageError("pixels: non-numeric values") from None
        side = int(round(np.sqrt(a.size)))
        if a.size == 0 or side * side != a.size or a.min() < 0 or a.max() > 255:
            raise ImageError(f"pixels are not a square of values in 0..255 ({a.size} values)")
        g = a.astype(np.uint8).reshape(side, side)
        return np.repeat(g[..., None], 3, axis=2), ""
