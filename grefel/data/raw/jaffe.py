"""JAFFE: 213 images named ``KA.AN1.39.tiff`` (subject, expression code, take, image number).

Accepted as loose files in any folder structure or inside ``jaffe.zip`` (the current distribution,
with ``README_FIRST.txt``); a file present twice (zip and extracted copy) is taken once. Group =
subject. The images are uncropped 256 x 256 grayscale (some palette-mode) frontal faces: they are
detected and aligned by default. Files that are not JAFFE images are listed as skipped. No
official split (subject-independent folds come from ``grefel refine``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from grefel.data.raw.base import RawItem, RawReader, Skip

_NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})([1-5])\.(\d+)\.tiff?$")


class JaffeReader(RawReader):
    dataset = "jaffe"

    def detect(self) -> str | None:
        return "files" if any(_NAME.match(ref.name) for ref in self.tree.files()) else None

    def default_align(self) -> str:
        return "retinaface-onnx"

    def items(self) -> Iterator[RawItem | Skip]:
        seen: dict[str, str] = {}
        for ref in self.tree.files():
            m = _NAME.match(ref.name)
            if m is None:
                yield Skip(ref.source, "not a JAFFE image (name does not follow XX.YYn.N.tiff)")
                continue
            if ref.name in seen:
                yield Skip(ref.source, f"duplicate image (same as {seen[ref.name]})")
                continue
            seen[ref.name] = ref.source
            subject, code = m.group(1), m.group(2)
            lab = self.label_or_skip(ref.source, code)
            yield (
                lab
                if isinstance(lab, Skip)
                else RawItem(source=ref.source, label=lab, split="", file=ref, group=subject)
            )
