"""RAF-DB (basic): the original distribution and the common ``DATASET/{train,test}/{1..7}`` repackaging.

Original layout (``basic/`` or the folder holding it)::

    EmoLabel/list_patition_label.txt     "train_00001.jpg 5" per line (list_partition_label.txt accepted)
    Image/aligned/train_00001_aligned.jpg   100 x 100, already aligned  (or Image/aligned.zip)
    Image/original/train_00001.jpg          (or Image/original.zip)
    Annotation/manual/train_00001_manu_attri.txt   5 landmark lines, gender, race, age

``--align none`` (default) uses the aligned images; ``--align landmarks`` aligns the original images
from the manual five points; a detector aligns the original images. Gender, race and age come from
the manual annotation when it is there. Split from the file-name prefix. A label line that names
an image a previous line named is skipped (the first line wins), listed with the line it repeats
or contradicts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from grefel.core.errors import DatasetError
from grefel.data.raw.base import FileRef, FirstLabel, RawItem, RawReader, Skip, find_dirs, find_file

LABEL_FILES = ("list_patition_label.txt", "list_partition_label.txt")
_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s*$")


class RafDbReader(RawReader):
    dataset = "rafdb"

    def detect(self) -> str | None:
        root = self.tree.root
        if root.is_dir():
            self.label_file = find_file(root, LABEL_FILES)
            if self.label_file is not None:
                self.base = self.label_file.parent.parent
                self._index_images()
                return "original"
            for cand in [root, *find_dirs(root, "DATASET", 2)]:
                if all(any((cand / s / c).is_dir() for c in self.definition.codes) for s in ("train", "test")):
                    self.base = cand
                    return "repackaged"
        return None

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.tree.root).as_posix()

    def _index_images(self) -> None:
        """Where the aligned and original images are: a folder (paths built from the names) or a zip."""
        self.images: dict[str, tuple[str, dict[str, FileRef] | None] | None] = {}
        for kind in ("aligned", "original"):
            folder, archive = self.base / "Image" / kind, self.base / "Image" / f"{kind}.zip"
            if folder.is_dir():
                self.images[kind] = (self._rel(folder), None)
            elif archive.is_file():  # index the members by stem (the archive's own folder names vary)
                index = {}
                for ref in self.tree.members(self._rel(archive)):
                    stem = ref.name.rsplit(".", 1)[0]
                    index.setdefault(stem.removesuffix("_aligned") if kind == "aligned" else stem, ref)
                self.images[kind] = (self._rel(archive), index)

    def _image(self, kind: str, stem: str) -> FileRef | None:
        where, index = self.images[kind]
        if index is not None:
            return index.get(stem)
        return FileRef(f"{where}/{stem}_aligned.jpg" if kind == "aligned" else f"{where}/{stem}.jpg")

    @cached_property
    def has_landmarks(self) -> bool:
        return self.layout == "original" and (self.base / "Annotation" / "manual").is_dir()

    def default_align(self) -> str:
        if self.layout == "repackaged" or "aligned" in self.images:
            return "none"
        return "landmarks" if self.has_landmarks else "retinaface-onnx"

    def annotation_files(self) -> list[Path]:
        return [self.label_file] if self.layout == "original" else []

    def attribute_names(self) -> list[str]:
        return ["gender", "race", "age"] if self.has_landmarks else []

    def items(self) -> Iterator[RawItem | Skip]:
        if self.layout == "repackaged":
            yield from self._repackaged()
            return
        kind = "aligned" if self.align == "none" else "original"
        if kind not in self.images:
            want = f"Image/{kind}/ (or {kind}.zip)"
            other = (
                "--align landmarks or a detector with Image/original"
                if kind == "aligned"
                else "--align none with Image/aligned"
            )
            raise DatasetError(
                f"RAF-DB images not found: --align {self.align} needs {want} under {self.base}; or use {other}"
            )
        label_rel = self._rel(self.label_file)
        lines = FirstLabel()
        with open(self.label_file, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield self._line(line, f"{label_rel}#{lineno}", kind, lines)

    def _line(self, line: str, where: str, kind: str, lines: FirstLabel) -> RawItem | Skip:
        """One line of the label file: ``name code``."""
        m = _LINE.match(line)
        if m is None:
            return Skip(where, "malformed label line (expected 'name code')")
        name, code = m.groups()
        stem = name.rsplit(".", 1)[0]
        duplicate = lines.check(stem, where, code)
        if duplicate:
            return Skip(where, duplicate)
        split = self.definition.split(stem.split("_", 1)[0])
        ref = self._image(kind, stem)
        src = ref.source if ref else name
        lab = self.label_or_skip(src, code)
        if isinstance(lab, Skip):
            return lab
        if split is None:
            return Skip(src, f"unknown split prefix (in '{name}'; expected train_ or test_)")
        if ref is None:
            return Skip(name, f"image not found in Image/{kind}.zip")
        return RawItem(source=src, label=lab, split=split, file=ref)

    def _repackaged(self) -> Iterator[RawItem | Skip]:
        for split in ("train", "test"):
            sdir = self.base / split
            for cdir in sorted(
                (d for d in sdir.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name
            ):
                for ref in self.tree.files(self._rel(cdir), zips=False):
                    lab = self.label_or_skip(ref.source, cdir.name)
                    yield lab if isinstance(lab, Skip) else RawItem(source=ref.source, label=lab, split=split, file=ref)

    def stamp(self, item: RawItem) -> str:
        if not self.has_landmarks:
            return super().stamp(item)
        manual = f"{self._manual_rel}/{self._manual_name(item)}"  # strings: pathlib costs ~10x the stat here
        return f"{super().stamp(item)} {self.tree.stamp(FileRef(manual))}"

    @cached_property
    def _manual_rel(self) -> str:
        return self._rel(self.base / "Annotation" / "manual")

    @staticmethod
    def _manual_name(item: RawItem) -> str:
        return f"{item.file.name.rsplit('.', 1)[0].removesuffix('_aligned')}_manu_attri.txt"

    def resolve(self, item: RawItem) -> RawItem | Skip:
        """Read the manual annotation: five landmarks (original-image pixels), gender, race, age."""
        if not self.has_landmarks:
            return item
        path = self.base / "Annotation" / "manual" / self._manual_name(item)
        try:
            rows = [r.split() for r in path.read_text(errors="replace").splitlines() if r.strip()]
            lm = np.array([[float(v) for v in r[:2]] for r in rows[:5]], np.float32).reshape(5, 2)
            attrs = {k: int(rows[5 + i][0]) for i, k in enumerate(("gender", "race", "age"))}
        except (OSError, ValueError, IndexError):
            if self.align == "landmarks":
                return Skip(item.source, f"manual annotation missing or malformed ({path.name})")
            return item
        item.attributes = attrs
        if self.align == "landmarks":  # manual points are in original-image pixels
            item.landmarks = lm
        return item
