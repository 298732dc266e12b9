"""Aff-Wild2, ABAW expression annotations on the ``cropped_aligned`` frames.

Layout::

    cropped_aligned/<video>/<NNNNN>.jpg            five digits, 1-based frame number
    .../EXPR_Set/{Train_Set,Validation_Set}/<video>.txt                       (ABAW2)
    .../EXPR_Classification_Challenge/{Train_Set,Validation_Set}/<video>.txt  (ABAW3 and later)

Each annotation file has a header line of class names (7 names: ABAW1/2; 8 with ``Other``: ABAW3+,
which sets the protocol), then one integer per frame; line k after the header is frame ``k:05d``.
-1 marks an invalid frame; an annotated frame without an image had no face: both are skipped.
Group = video without its ``_left`` / ``_right`` suffix. Validation_Set is stored as ``test``. A
video annotated in both sets keeps the first file's labels (Train_Set); the other file's lines are
listed as duplicates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from grefel.core.errors import DatasetError
from grefel.data.raw.base import FileRef, FirstLabel, RawItem, RawReader, Skip, find_dirs

ANNOTATION_DIRS = ("EXPR_Classification_Challenge", "EXPR_Set")
SPLIT_DIRS = ("Train_Set", "Validation_Set")


class AffWild2Reader(RawReader):
    dataset = "affwild2"

    def detect(self) -> str | None:
        root = self.tree.root
        if not root.is_dir():
            return None
        frames = find_dirs(root, "cropped_aligned", 2)
        ann = [
            d
            for name in ANNOTATION_DIRS
            for d in find_dirs(root, name, 3)[:1]
            if any((d / s).is_dir() for s in SPLIT_DIRS)
        ]
        if not frames or not ann:
            return None
        self.frame_dir, self.ann_dir = frames[0], ann[0]
        return "abaw"

    def _files(self) -> list[tuple[str, Path]]:
        return [
            (s, p)
            for s in SPLIT_DIRS
            if (self.ann_dir / s).is_dir()
            for p in sorted((self.ann_dir / s).glob("*.txt"))
            if not p.name.startswith(".")
        ]

    def detect_protocol(self, protocol: str | None) -> str:
        files = self._files()
        if not files:
            raise DatasetError(f"no annotation files (*.txt) in {self.ann_dir}/Train_Set or Validation_Set")
        n = self._header_size(files[0][1])
        found = str(n)
        if found not in self.definition.protocols:
            raise DatasetError(f"{files[0][1]} header names {n} classes; expected 7 (ABAW1/2) or 8 (ABAW3+)")
        if protocol not in (None, "") and str(protocol) != found:
            raise DatasetError(
                f"--protocol {protocol} does not match the annotations: their header names {found} classes"
            )
        return found

    @staticmethod
    def _header_size(path: Path) -> int:
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline()
        return len([c for c in header.strip().split(",") if c.strip()])

    def annotation_files(self) -> list[Path]:
        return [p for _, p in self._files()]

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.tree.root).as_posix()

    def items(self) -> Iterator[RawItem | Skip]:
        frame_rel = self._rel(self.frame_dir)
        lines = FirstLabel()  # a video annotated in both sets: the first file's lines win
        for official, path in self._files():
            video = path.stem
            try:
                present = set(os.listdir(self.frame_dir / video))
            except OSError:
                present = set()
            with open(path, encoding="utf-8", errors="replace") as f:
                header = [c for c in f.readline().strip().split(",") if c.strip()]
                if len(header) != len(self.classes):
                    yield Skip(
                        self._rel(path),
                        f"header names another number of classes ({len(header)}, not {len(self.classes)})",
                    )
                    continue
                for k, line in enumerate(f, 1):
                    yield self._line(line, k, path, video, official, present, frame_rel, lines)

    def _line(self, line, k, path, video, official, present, frame_rel, lines) -> RawItem | Skip:
        """Line ``k`` after the header of ``path``: the label of frame ``k:05d``."""
        name = f"{k:05d}.jpg"
        src, where = f"{frame_rel}/{video}/{name}", f"{self._rel(path)}#{k + 1}"
        try:
            code = str(int(line.strip()))
        except ValueError:
            return Skip(where, f"malformed annotation line ({line.strip()[:20]!r})")
        duplicate = lines.check((video, k), where, code)
        if duplicate:
            return Skip(where, duplicate)
        lab = self.label_or_skip(src, code)
        if isinstance(lab, Skip):
            return lab
        if name not in present:
            return Skip(src, "no frame image (no face was found in this frame)")
        group = video.removesuffix("_left").removesuffix("_right")
        return RawItem(source=src, label=lab, split=self.definition.split(official), file=FileRef(src), group=group)
