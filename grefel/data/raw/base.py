"""What every raw-dataset reader shares: the reader base class, items, skips, files inside archives.

A reader finds its layout under the RAW folder (or says which layouts it looked for), then yields
one :class:`RawItem` per raw image, in a deterministic order, or a :class:`Skip` with its reason for
a row it cannot use (malformed row, label outside the protocol...). Labels come from the dataset's
definition (``datasets/<id>.toml``), never from sorted folder names. Images are read later, in
worker processes, by :meth:`RawReader.load_image`, so listing stays cheap and streams.

Here: :class:`RawReader` (the base of ``raw/<dataset>.py``), :class:`RawItem` and :class:`Skip`,
:class:`RawTree` (files on disk and inside ``.zip`` archives) and label-file helpers. Images are
decoded by :func:`grefel.core.images.decode_image`, the decoder `grefel predict` uses too.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from grefel.core.errors import DatasetError
from grefel.core.images import ImageError, decode_image
from grefel.data.definitions import Definition, load_definition


@dataclass(frozen=True)
class FileRef:
    """A file under the raw folder, or a member of a zip archive under it."""

    path: str  # relative to the raw root, posix separators
    member: str | None = None  # member name inside the archive ``path``

    @property
    def source(self) -> str:
        return self.path if self.member is None else f"{self.path}!{self.member}"

    @property
    def name(self) -> str:
        return (self.member or self.path).rsplit("/", 1)[-1]

    @property
    def parts(self) -> list[str]:
        """Folder names then file name, reading through an archive (``a.zip!x/y.jpg`` -> a, x, y.jpg)."""
        p = self.path.split("/")
        if self.member is not None:
            p = p[:-1] + [p[-1][: -len(".zip")] if p[-1].lower().endswith(".zip") else p[-1]] + self.member.split("/")
        return p


@dataclass
class RawItem:
    """One raw image with its annotation, before it is read and aligned."""

    source: str  # what skipped.csv and the shard's ``source`` say (relative path, ``a.zip!m``, ``f.csv#row``)
    label: int  # class index in the protocol
    split: str  # train / val / test / ""
    file: FileRef | None = None  # where the image bytes are (None: ``pixels`` holds them)
    group: str = ""
    attributes: dict[str, int] = field(default_factory=dict)
    landmarks: np.ndarray | None = None  # (5, 2) points shipped with the dataset, source pixels
    landmarks68: np.ndarray | None = None  # (68, 2) when the dataset ships them
    box: tuple[float, float, float, float] | None = None  # face box x1 y1 x2 y2 shipped with the dataset
    pixels: str | None = None  # inline pixels (FER2013's CSV)


@dataclass(frozen=True)
class Skip:
    """A raw item that is not written, and why."""

    source: str
    reason: str


class RawTree:
    """Files under a raw folder (or a single ``.zip``), reading through zip archives.

    Archives are opened once per process and shared; a pickled tree re-opens them lazily, so
    readers can be sent to worker processes.
    """

    _zips: ClassVar[dict[str, zipfile.ZipFile]] = {}

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def files(self, below: str = "", zips: bool = True) -> Iterator[FileRef]:
        """Every file below ``below`` in sorted order; archive members follow their archive."""
        if self.root.is_file():
            if zips and self.root.suffix.lower() == ".zip":
                yield from self._members(FileRef(self.root.name))
            return
        base = self.root / below if below else self.root
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                ref = FileRef(name if rel == "." else f"{rel}/{name}")
                if zips and name.lower().endswith(".zip"):
                    yield from self._members(ref)
                else:
                    yield ref

    def members(self, archive: str) -> Iterator[FileRef]:
        """The files inside the zip archive ``archive`` (relative to the root)."""
        return self._members(FileRef(archive))

    def _members(self, ref: FileRef) -> Iterator[FileRef]:
        try:
            names = self._zip(ref.path).namelist()
        except (zipfile.BadZipFile, OSError):
            return
        for m in sorted(names):
            base = m.rsplit("/", 1)[-1]
            if m.endswith("/") or base.startswith(".") or m.startswith("__MACOSX/"):
                continue
            yield FileRef(ref.path, m)

    def _zip(self, path: str) -> zipfile.ZipFile:
        full = str(self.root if self.root.is_file() else self.root / path)
        z = RawTree._zips.get(full)
        if z is None:
            z = RawTree._zips[full] = zipfile.ZipFile(full)
        return z

    def read(self, ref: FileRef) -> bytes:
        """The bytes of ``ref`` (raises ImageError with a reason when it cannot be read)."""
        try:
            if ref.member is not None:
                return self._zip(ref.path).read(ref.member)
            with open(os.path.join(self.root, ref.path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ImageError("file not found") from None
        except (OSError, zipfile.BadZipFile, KeyError) as e:
            raise ImageError(f"unreadable file ({type(e).__name__}: {str(e)[:80]})") from None

    def stamp(self, ref: FileRef) -> str:
        """``size:mtime_ns`` of a file, ``size:crc32`` of an archive member (``-`` when unreadable).

        Cheap (one ``stat`` per file): what a resumed or repeated run compares to tell one copy of
        the raw data from another copy with the same file names.
        """
        try:
            if ref.member is not None:
                info = self._zip(ref.path).getinfo(ref.member)
                return f"{info.file_size}:{info.CRC:08x}"
            st = os.stat(os.path.join(self.root, ref.path))
            return f"{st.st_size}:{st.st_mtime_ns}"
        except (OSError, KeyError, zipfile.BadZipFile):
            return "-"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def __getstate__(self):
        return {"root": self.root}


DUPLICATE_LINE = "duplicate label line"
CONFLICTING_LINE = "conflicting duplicate label line"


class FirstLabel:
    """Duplicate lines of a label file: the first line that names an image is kept.

    :meth:`check` returns ``None`` for the first line naming ``key``, else the reason to skip the
    line: a :data:`DUPLICATE_LINE` when it repeats the first line's label, a
    :data:`CONFLICTING_LINE` when it gives another one (counted apart in the manifest).
    """

    def __init__(self):
        self._first: dict = {}

    def check(self, key, where: str, label: str) -> str | None:
        first = self._first.setdefault(key, (where, label))
        if first == (where, label):
            return None
        at = first[0].rsplit("/", 1)[-1]  # file#line, without the folders
        if first[1] == label:
            return f"{DUPLICATE_LINE} (same image and label as {at})"
        return f"{CONFLICTING_LINE} ({at} says {first[1]!r}, this line {label!r}; the first is kept)"


class RawReader:
    """Base of the per-dataset readers.

    Subclasses set ``dataset`` (definition id), implement :meth:`detect` (returns the layout name or
    None), :meth:`items`, and may override :meth:`load_image` and :meth:`resolve`.
    """

    dataset: ClassVar[str] = ""
    #: aligners that make sense for this dataset's layout; the first is the default
    align_choices: tuple[str, ...] = ("none",)

    def __init__(self, raw: str | os.PathLike, protocol: str | None = None, align: str | None = None):
        self.definition: Definition = load_definition(self.dataset)
        self.tree = RawTree(raw)
        if not self.tree.root.exists():
            raise DatasetError(
                f"raw folder {self.tree.root} not found: pass the folder where you unpacked {self.definition.title}"
            )
        self.layout = self.detect()
        if self.layout is None:
            raise DatasetError(
                f"{self.tree.root} does not look like {self.definition.title}: looked for "
                f"{self.definition.layouts_text()}; point RAW at the folder that holds them"
            )
        self.protocol = self.detect_protocol(protocol)
        self.classes = self.definition.classes(self.protocol)
        self.align = align or self.default_align()

    # -- to implement ---------------------------------------------------------------------------
    def detect(self) -> str | None:
        raise NotImplementedError

    def items(self) -> Iterator[RawItem | Skip]:
        raise NotImplementedError

    # -- defaults -------------------------------------------------------------------------------
    def detect_protocol(self, protocol: str | None) -> str:
        return self.definition.protocol(protocol)

    def default_align(self) -> str:
        return self.align_choices[0]

    @property
    def name(self) -> str:
        return self.definition.prepared_name(self.protocol)

    def annotation_files(self) -> list[Path]:
        """Label / list files whose checksums go into the provenance."""
        return []

    def attribute_names(self) -> list[str]:
        return []

    def resolve(self, item: RawItem) -> RawItem | Skip:
        """Finish an item in the worker (annotations that are costly to read); default: as is."""
        return item

    def stamp(self, item: RawItem) -> str:
        """What identifies this copy of ``item``'s files (:meth:`RawTree.stamp`): its image, and the
        per-image annotation files :meth:`resolve` reads, where a reader has them."""
        return self.tree.stamp(item.file) if item.file is not None else ""

    def load_image(self, item: RawItem) -> tuple[np.ndarray, str]:
        """RGB uint8 image of ``item`` and the sha256 of its bytes (raises ImageError)."""
        data = self.tree.read(item.file)
        return decode_image(data), hashlib.sha256(data).hexdigest()

    def label_or_skip(self, source: str, code: str) -> int | Skip:
        lab = self.definition.label(code, self.protocol)
        return Skip(source, self.definition.exclusion_reason(code, self.protocol)) if lab is None else lab


def _entries(d: Path) -> list[os.DirEntry]:
    """The entries of folder ``d`` sorted by name; none where it cannot be listed."""
    try:
        return sorted(os.scandir(d), key=lambda e: e.name)
    except OSError:
        return []


def find_dirs(root: Path, name: str, max_depth: int = 3) -> list[Path]:
    """The shallowest folders called ``name`` at most ``max_depth`` levels below ``root`` (itself included), sorted."""
    if root.name == name and root.is_dir():
        return [root]
    frontier = [root]
    for _ in range(max_depth):
        found, nxt = [], []
        for d in frontier:
            for e in _entries(d):
                if not e.name.startswith(".") and e.is_dir():
                    (found if e.name == name else nxt).append(Path(e.path))
        if found:
            return found
        frontier = nxt
    return []


def find_file(root: Path, names: tuple[str, ...], max_depth: int = 3) -> Path | None:
    """The shallowest file whose name is in ``names`` (earlier names win at one depth), or None."""
    frontier = [root]
    for _ in range(max_depth + 1):
        found, nxt = {}, []
        for d in frontier:
            for e in _entries(d):
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    nxt.append(Path(e.path))
                elif e.name in names:
                    found.setdefault(e.name, Path(e.path))
        for n in names:
            if n in found:
                return found[n]
        frontier = nxt
    return None
