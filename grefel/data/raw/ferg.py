"""FERG-DB: ``FERG_DB_256/<character>/<character>_<expression>/<character>_<expression>_<n>.png``.

Some copies nest one more ``FERG_DB_256/`` level, carry ``.DS_Store`` files, or come as a zip: the
tree is walked through all of them and each image is taken once. Label from the folder's expression
name (``joy`` is stored as ``happiness``), group = character. Renders are pre-cropped heads with an
alpha channel: transparent pixels become white; no detector (``--align none``). No official split.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from grefel.core.images import IMAGE_SUFFIXES
from grefel.data.raw.base import RawItem, RawReader, Skip

_NAME = re.compile(r"^([a-z]+)_([a-z]+)_(\d+)\.png$", re.IGNORECASE)


class FergReader(RawReader):
    dataset = "ferg"

    def detect(self) -> str | None:
        return "tree" if any(self._match(ref) for ref in self.tree.files()) else None

    @staticmethod
    def _match(ref):
        m = _NAME.match(ref.name)
        if m is None:
            return None
        char, expr, n = m.group(1).lower(), m.group(2).lower(), int(m.group(3))
        parts = [p.lower() for p in ref.parts]
        if len(parts) < 3 or parts[-2] != f"{char}_{expr}" or parts[-3] != char:
            return None
        return char, expr, n

    def items(self) -> Iterator[RawItem | Skip]:
        seen: dict[tuple, str] = {}
        for ref in self.tree.files():
            key = self._match(ref)
            if key is None:
                if ref.name.lower().endswith(IMAGE_SUFFIXES):
                    yield Skip(
                        ref.source,
                        "name does not follow <character>/<character>_<expression>/<character>_<expression>_<n>.png",
                    )
                continue
            if key in seen:
                yield Skip(ref.source, f"duplicate image (same as {seen[key]})")
                continue
            seen[key] = ref.source
            lab = self.label_or_skip(ref.source, key[1])
            yield (
                lab
                if isinstance(lab, Skip)
                else RawItem(source=ref.source, label=lab, split="", file=ref, group=key[0])
            )
