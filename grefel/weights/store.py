"""The pretrained-weights store: ``<data root>/weights/``, files identified by content, with a registry.

``grefel weights add FILE...`` (:func:`add_weights`) identifies each file by its keys
(:func:`grefel.weights.verify.identify`: face.evoLVe or POSTER++ IR-50, MobileFaceNet, a POSTER++
checkpoint, facexlib's RetinaFace detectors), verifies every key and shape against the model it is
for, records its sha256, size and coverage, and copies it (or links it) to
``<data root>/weights/<kind>/<file name>``. ``registry.json`` beside the files says what is there;
it is written atomically under a lock, so concurrent adds never lose an entry.

One file per kind. Re-adding a registered file (same sha256) changes nothing; another file of a
kind already held replaces it only with ``force``. Commands look files up here: ``train`` for the
presets' sources (:func:`plan_pretrained`; the tiny preset falls back to the encoder shipped inside
the package, :func:`shipped_file`), ``prepare`` and ``predict`` for facexlib's detectors
(:func:`registered_file`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grefel.core.errors import CheckpointError, GrefelError
from grefel.core.io import atomic_path, exclusive_lock, read_json, sha256_file, write_json
from grefel.core.paths import data_root as resolve_data_root
from grefel.weights.catalog import (
    FACEXLIB_RELEASE,
    FACEXLIB_WEIGHTS,
    PRETRAINED_SOURCES,
    PUBLISHED,
    SHIPPED,
    SHIPPED_FOLDER,
    WEIGHT_KINDS,
)

STORE_FOLDER = "weights"
REGISTRY = "registry.json"
REGISTRY_VERSION = 1


@dataclass
class WeightEntry:
    """One registered file (a row of ``registry.json``)."""

    kind: str
    file: str  # path relative to the store folder
    format: str  # what identify() recognised, e.g. "face.evoLVe IR-50"
    sha256: str
    size: int
    mode: str  # "copy" or "link"
    source: str  # the path it was added from
    matched: int  # keys of the model part the file fills ...
    total: int  # ... out of this many
    unused: int  # file keys known never to run
    added: str  # local time, ISO 8601
    mtime_ns: int | None = None  # the stored file's when its sha256 was last checked (None: registered before)
    store: Path | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path:
        return (self.store or Path(".")) / self.file

    @property
    def coverage(self) -> str:
        return f"{self.matched}/{self.total}"

    def state(self) -> str:
        """``ok``, ``missing``, ``size changed`` or ``changed`` (another sha256). A stat, and the file's
        sha256 when its modification time is not the one recorded (a same-size edit changes it)."""
        try:
            st = self.path.stat()
        except OSError:
            return "missing"
        if st.st_size != self.size:
            return "size changed"
        if st.st_mtime_ns != self.mtime_ns and sha256_file(self.path) != self.sha256:
            return "changed"
        return "ok"

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("store")
        return d


@dataclass
class AddResult:
    """What :func:`add_weights` did with one file: status ``added``, ``replaced``, ``unchanged``,
    ``exists`` (another file of that kind is registered; ``force`` replaces it) or ``failed``."""

    source: str
    status: str
    message: str
    entry: WeightEntry | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("added", "replaced", "unchanged")


class MissingWeightsError(CheckpointError):
    """A preset's pretrained weights are not registered; ``missing`` names the kinds."""

    def __init__(self, message: str, missing: list[str], store: Path):
        super().__init__(message)
        self.missing, self.store = missing, store


# -- the registry ----------------------------------------------------------------------------------
def store_dir(data_root: str | os.PathLike | None = None) -> Path:
    """``<data root>/weights`` (data root as in :mod:`grefel.core.paths`)."""
    return resolve_data_root(data_root) / STORE_FOLDER


def read_registry(data_root: str | os.PathLike | None = None) -> dict[str, WeightEntry]:
    """Registered files by kind ({} when nothing was added yet)."""
    return read_entries(store_dir(data_root))


def read_entries(store: Path) -> dict[str, WeightEntry]:
    path = store / REGISTRY
    if not path.is_file():
        return {}
    try:
        raw = read_json(path)
        entries = {k: WeightEntry(**v, store=store) for k, v in raw["weights"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"weights registry {path} is unreadable ({type(e).__name__}): delete it and add the files again"
        ) from None
    return {k: entries[k] for k in WEIGHT_KINDS if k in entries}


def write_entries(store: Path, entries: dict[str, WeightEntry]) -> None:
    write_json(store / REGISTRY, {"version": REGISTRY_VERSION, "weights": {k: e.as_dict() for k, e in entries.items()}})


@contextlib.contextmanager
def locked_store(store: Path) -> Iterator[None]:
    """Hold the store's lock (concurrent adds wait for each other)."""
    try:
        store.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(store / ".lock", f"pid {os.getpid()}", wait_s=None):
            yield
    except OSError as e:
        raise GrefelError(f"cannot write the weights store {store} ({e.strerror}): choose another data root") from None


def install_file(src: Path, dest: Path, link: bool, sha: str) -> None:
    """Copy ``src`` to ``dest`` (hashing what is written) or link it there, atomically either way."""
    if link:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(src.resolve())
        os.replace(tmp, dest)
        return
    with atomic_path(dest) as tmp:
        h = hashlib.sha256()
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while block := fin.read(1 << 20):
                h.update(block)
                fout.write(block)
        if h.hexdigest() != sha:
            raise GrefelError(f"{src} changed while it was being added: add it again")


# -- what is there ---------------------------------------------------------------------------------
@dataclass
class WeightsListing:
    """The registered files; prints as a rich table (``grefel weights list``)."""

    store: Path
    entries: list[WeightEntry]
    hashed: dict[str, str] | None = None  # kind -> verify_weights' state, when hashed

    def state(self, e: WeightEntry) -> str:
        return self.hashed[e.kind] if self.hashed is not None else e.state()

    @property
    def ok(self) -> bool:
        return all(self.state(e) == "ok" for e in self.entries)

    def __rich__(self):
        """A table that fits 80 columns (long file names fold); link targets listed under it."""
        from rich import box
        from rich.console import Group
        from rich.table import Table

        if not self.entries:
            return f"no weights registered in {self.store}: add files with `grefel weights add FILE...`"
        t = Table(
            title=f"Weights in {self.store}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            collapse_padding=True,
            pad_edge=False,
        )
        t.add_column("kind", no_wrap=True)
        t.add_column("file", overflow="fold")
        t.add_column("sha256", no_wrap=True)
        t.add_column("keys", justify="right", no_wrap=True)
        t.add_column("MiB", justify="right", no_wrap=True)
        t.add_column("state", no_wrap=True)
        links = []
        for e in self.entries:
            state = self.state(e)
            t.add_row(
                e.kind,
                Path(e.file).name,
                e.sha256[:8],
                e.coverage,
                f"{e.size / 2**20:.1f}",
                e.mode if state == "ok" else f"[bold red]{state}[/]",
            )
            if e.mode == "link":
                links.append(f"{e.kind}: link to {e.source}")
        return Group(t, *links)


def list_weights(data_root: str | os.PathLike | None = None, verify: bool = False) -> WeightsListing:
    """What the store holds; ``verify`` re-hashes every file (state ``ok``, ``missing``, ``changed``)."""
    store = store_dir(data_root)
    entries = list(read_entries(store).values())
    hashed = None
    if verify:
        hashed = {}
        for e in entries:
            state = e.state()
            if state == "ok" and sha256_file(e.path) != e.sha256:
                state = "changed"
            hashed[e.kind] = state
    return WeightsListing(store, entries, hashed)


def registered_entry(kind: str, data_root: str | os.PathLike | None = None) -> WeightEntry | None:
    """The registered file of ``kind``, or ``None``; a one-line error when it vanished or changed size."""
    e = read_registry(data_root).get(kind)
    if e is None:
        return None
    state = e.state()
    if state != "ok":
        what = f"a link to {e.source}" if e.mode == "link" else "a copy"
        how = {"missing": "is missing", "size changed": "has changed (another size)"}.get(
            state, "has changed since it was registered (another sha256)"
        )
        raise CheckpointError(
            f"the registered {kind} file {e.path} ({what}) {how}: add it again with `grefel weights add FILE`"
        )
    return e


def registered_file(kind: str, data_root: str | os.PathLike | None = None) -> Path | None:
    """Path of the registered file of ``kind`` (checked to exist with its size), or ``None``."""
    e = registered_entry(kind, data_root)
    return None if e is None else e.path


# -- the files shipped inside the package ------------------------------------------------------------
def shipped_record(kind: str) -> dict:
    """The record of the file of ``kind`` shipped with grefel (the command that made it, its synthesis
    seed, sha256 and pretext metrics: ``grefel/weights/shipped/<file>.json``)."""
    return read_json(_record_path(kind))


def _record_path(kind: str) -> Path:
    return (SHIPPED_FOLDER / SHIPPED[kind]).with_suffix(".json")


def shipped_file(kind: str) -> Path | None:
    """The file of ``kind`` shipped inside the package (None for kinds grefel ships none of), checked
    against the sha256 of its record: a one-line error when it is missing or damaged."""
    if kind not in SHIPPED:
        return None
    path = SHIPPED_FOLDER / SHIPPED[kind]
    try:
        expected = read_json(_record_path(kind))["sha256"]
        ok = sha256_file(path) == expected
    except (OSError, ValueError, KeyError):
        ok = False
    if not ok:
        raise CheckpointError(
            f"the {kind} file shipped with grefel ({path}) is missing or damaged (sha256 differs from its record): "
            "reinstall grefel, or register a file of that kind with `grefel weights add FILE`"
        )
    return path


# -- what a preset needs ---------------------------------------------------------------------------
def pretrained_sources(preset: str) -> tuple[tuple[str, ...], ...]:
    """Alternative sets of kinds that initialise the preset's whole encoder, the paper's first.

    ``full``: IR-50 + MobileFaceNet (the paper, sections 3 and 4.1), or a trained POSTER++
    checkpoint. ``tiny``: a whole tiny encoder (``tiny-encoder``, shipped with grefel). ``()`` for
    presets no weights fit.
    """
    return PRETRAINED_SOURCES.get(preset, ())


def plan_pretrained(
    preset: str,
    data_root: str | os.PathLike | None = None,
    *,
    ir50: str | os.PathLike | None = None,
    mobilefacenet: str | os.PathLike | None = None,
    poster: str | os.PathLike | None = None,
    scratch_hint: str = "or train from random weights on purpose (from_scratch)",
) -> dict[str, Path]:
    """The files to start ``preset`` from: kind -> path, in load order (keyword arguments of
    :func:`grefel.weights.verify.load_pretrained`).

    Files given as arguments come first; the store fills in the rest of the first set of
    :func:`pretrained_sources` that holds every given kind, and a kind grefel ships (the tiny
    encoder) falls back to the shipped file. Presets that take no pretrained weights get the given
    files only, and so does a preset given files of another set (``poster`` for ``tiny``). Raises
    :class:`MissingWeightsError` (one line: the missing files, where they are published, how to
    register them, then ``scratch_hint``) when no set is complete.
    """
    given = {
        k: Path(v).expanduser() for k, v in (("ir50", ir50), ("mobilefacenet", mobilefacenet), ("poster", poster)) if v
    }
    options = [o for o in pretrained_sources(preset) if set(given) <= set(o)]
    if not pretrained_sources(preset) or (given and not options):
        return given
    for option in options:
        found = {k: given.get(k) or registered_file(k, data_root) or shipped_file(k) for k in option}
        if all(found.values()):
            return found
    first = options[0]
    missing = [k for k in first if k not in given and registered_file(k, data_root) is None]
    store = store_dir(data_root)
    files = " and ".join(f"{PUBLISHED[k][0]} ({PUBLISHED[k][1]})" for k in missing)
    alt = "" if given else "; a trained POSTER++ checkpoint also serves"
    raise MissingWeightsError(
        f"the {preset} preset starts from pretrained {' + '.join(first)} weights, and {store} has no "
        f"{' / '.join(missing)} file: get {files}, register with `grefel weights add FILE...`{alt}; {scratch_hint}",
        missing,
        store,
    )


def detector_weights(
    method: str, weights_dir: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None
) -> tuple[Path, str | None]:
    """The weight file of facexlib detector ``method`` and its registered sha256 (``None`` if not registered).

    In ``weights_dir`` under facexlib's file name when a folder is given, else the file registered
    in the weights store of ``data_root`` (``grefel weights add``). A one-line error when neither
    holds it: nothing is downloaded.
    """
    filename = FACEXLIB_WEIGHTS[method][1]
    if weights_dir:
        path = Path(weights_dir).expanduser() / filename
        if not path.is_file():
            raise CheckpointError(
                f"facexlib RetinaFace weights {filename} not found: put the file in {path.parent} "
                f"(published at {FACEXLIB_RELEASE}{filename}); nothing is downloaded"
            )
        return path, None
    entry = registered_entry(method, data_root)
    if entry is None:
        raise CheckpointError(
            f"facexlib RetinaFace weights {filename} not found in the weights store {store_dir(data_root)}: "
            f"register the file with `grefel weights add FILE`, or give the folder holding it as the weights "
            f"folder (published at {FACEXLIB_RELEASE}{filename}); nothing is downloaded"
        )
    return entry.path, entry.sha256
