"""``grefel prepare``: raw dataset as distributed -> aligned faces in HDF5 shards under the data root.

The run, top to bottom:

1. open the dataset's reader (``grefel/data/raw/<id>.py``): it finds the layout or names the layouts it
   looked for, and fixes the protocol and class order from ``datasets/<id>.toml``;
2. stream the raw items in a fixed order, cut into chunks of ``shard_items`` items; each chunk becomes
   one shard (``shards/shard-NNNNN.h5``) holding its written faces and the items it skipped, with why;
3. per item (in ``workers`` processes): read the annotation, decode the image, align the face
   (``none`` / ``landmarks`` / a detector, see :mod:`grefel.data.align`), and return a
   :class:`~grefel.data.shards.Sample` or a :class:`~grefel.data.raw.Skip`;
4. at the end, gather ``skipped.csv``, ``provenance.json`` and, last, ``manifest.json`` (a run that
   wrote no face stops with an error instead).

Nothing finished is lost: a shard is written under a temporary name and renamed when whole, and a
rerun resumes after the last whole shard. Nothing is mixed: a rerun resumes (or finds the folder
complete) only when its fingerprint matches, which covers the options, the raw folder's path,
every item's name, label, split and file size and mtime, and the label files' sha256; one
process at a time writes a folder (``flock`` on a lock file in it). Memory stays flat: items
stream, at most a few batches are in flight, and shards are written sample by sample.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
from rich.markup import escape

from grefel.core.console import make_console
from grefel.core.errors import DatasetError, GrefelError
from grefel.core.images import ImageError
from grefel.core.io import LockHeld, atomic_path, check_apart, exclusive_lock, read_json, sha256_file, write_json
from grefel.core.paths import MANIFEST, PROVENANCE, SYNTH_MARKER
from grefel.core.paths import data_root as resolve_data_root
from grefel.core.version import __version__
from grefel.data.align import DETECTORS, TEMPLATE_112, FaceAligner, align_landmarks, cv2_threads, resize_square
from grefel.data.raw import open_reader
from grefel.data.raw.base import CONFLICTING_LINE, DUPLICATE_LINE, RawItem, RawReader, Skip
from grefel.data.shards import SCHEMA_VERSION, SHARD_DIR, Sample, ShardWriter, shard_name

ALIGN_CHOICES = ("none", "landmarks", *DETECTORS)
DEFAULT_SIZE = 128
DEFAULT_SHARD_ITEMS = 1024  # raw items per shard: <= 1024 faces, 48 MiB at 128 x 128
STATE = "prepare-state.json"
SKIPPED = "skipped.csv"
PREPARE_LOCK = ".prepare.lock"
_BATCH = 16  # items per task sent to a worker process


# -- the per-item work (runs in worker processes) ------------------------------------------------
@dataclass
class ItemWork:
    """Read, align and package one raw item. Picklable: each worker builds its own detector."""

    reader: RawReader
    align: str
    size: int
    weights: str | None = None  # facexlib detectors: the weight file
    device: str = "cpu"
    threads: int | None = None
    weights_sha256: str | None = None  # ... and the sha256 it was registered with (checked before loading)
    _aligner: FaceAligner | None = None

    def aligner(self) -> FaceAligner:
        if self._aligner is None:
            self._aligner = FaceAligner(
                self.align,
                weights=self.weights,
                size=self.size,
                device=self.device,
                threads=self.threads,
                weights_sha256=self.weights_sha256,
            )
        return self._aligner

    def __call__(self, item: RawItem | Skip) -> Sample | Skip:
        if isinstance(item, Skip):
            return item
        item = self.reader.resolve(item)
        if isinstance(item, Skip):
            return item
        try:
            image, sha = self.reader.load_image(item)
        except ImageError as e:
            return Skip(item.source, str(e))
        try:
            if self.align == "none":
                face = resize_square(image, self.size, box=item.box)
            elif self.align == "landmarks":
                face = align_landmarks(image, item.landmarks, self.size)
            else:
                faces = self.aligner().align(image, max_faces=1)
                if not faces:
                    return Skip(item.source, f"no face found by {self.align}")
                face = faces[0]
        except ValueError as e:
            return Skip(item.source, f"alignment failed ({e})")
        return Sample(
            image=face.image,
            label=item.label,
            split=item.split,
            source=item.source,
            group=item.group,
            landmarks=face.landmarks,
            transform=face.transform,
            attributes=item.attributes,
            source_sha256=sha,
            landmarks68=item.landmarks68,
        )

    def run_batch(self, items: list) -> list:
        return [self(it) for it in items]

    def __getstate__(self):
        return {**self.__dict__, "_aligner": None}


_WORK: ItemWork | None = None


def _init_worker(work: ItemWork) -> None:
    global _WORK
    import cv2

    cv2.setNumThreads(1)
    _WORK = work


def _run_batch(items: list) -> list:
    return _WORK.run_batch(items)


def ordered_map(
    work: ItemWork, pairs: Iterable[tuple], workers: int = 1, window: int | None = None, lanes: int = 1
) -> Iterator[tuple]:
    """``(tag, work(item))`` for every ``(tag, item)``, in order, with a bounded number in flight.

    ``workers > 1``: batches of items go to a spawned process pool. One worker with ``lanes > 1``:
    batches go to that many threads of this process (decoding, the detector and the warp release
    the GIL, so lanes overlap them without the processes' start-up and copies). One worker, one
    lane: everything runs inline. At most ``window`` batches are pending, so memory does not grow
    with the dataset.
    """
    if workers <= 1 and lanes <= 1:
        for tag, it in pairs:
            yield tag, work(it)
        return
    if workers <= 1:
        with ThreadPoolExecutor(lanes, thread_name_prefix="grefel-prepare") as pool:
            yield from _windowed(lambda items: pool.submit(work.run_batch, items).result, pairs, window or 4 * lanes)
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(work,)) as pool:
        yield from _windowed(lambda items: pool.apply_async(_run_batch, (items,)).get, pairs, window or 4 * workers)


def _windowed(submit, pairs: Iterable[tuple], window: int) -> Iterator[tuple]:
    """Submit batches of ``pairs``' items (``submit(items)`` returns a getter), yield results in order."""
    pending: deque = deque()
    it = iter(pairs)
    while True:
        batch = list(itertools.islice(it, _BATCH))
        if batch:
            tags, items = zip(*batch)
            pending.append((tags, submit(list(items))))
        while pending and (len(pending) >= window or not batch):
            tags, get = pending.popleft()
            yield from zip(tags, get())
        if not batch:
            break


# -- the run ---------------------------------------------------------------------------------------
def _open_checked_reader(dataset: str, raw, protocol: str | None, align: str | None):
    reader = open_reader(dataset, raw, protocol=protocol, align=align)
    if reader.align == "landmarks" and not getattr(reader, "has_landmarks", False):
        raise DatasetError(
            f"{reader.definition.title} ({reader.layout} layout) ships no landmarks here: use align 'none' "
            f"or a detector ({', '.join(DETECTORS)})"
        )
    return reader


def prepare(
    dataset: str,
    raw: str | os.PathLike,
    out: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    align: str | None = None,
    workers: int = 1,
    size: int = DEFAULT_SIZE,
    *,
    protocol: str | None = None,
    detector_weights: tuple[str | os.PathLike, str | None] | None = None,
    device: str = "cpu",
    shard_items: int = DEFAULT_SHARD_ITEMS,
    compression: str | None = None,
    threads: int | None = None,
    force: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Prepare raw ``dataset`` found in ``raw``; return the prepared folder.

    The folder is ``out`` or ``<data root>/<name>`` (name: the dataset id, or ``affectnet7`` /
    ``affectnet8``). ``align`` is ``none``, ``landmarks`` (points shipped with the dataset) or a
    detector of :data:`grefel.data.align.DETECTORS`; the default depends on the dataset and layout.
    A rerun resumes an interrupted run and returns at once when the folder is complete, provided
    the options, the raw folder and its files (names, sizes, modification times, label files'
    sha256) are the same; ``force`` (or its older name ``overwrite``) starts again instead.
    ``detector_weights``: (path, registered sha256 or None) of a facexlib detector's weight file
    (:func:`grefel.weights.store.detector_weights` finds it). ``progress`` shows a progress bar
    and a summary. ``threads``: CPU threads of the detector in each worker, in one lane (default:
    one worker runs one lane per core, each running the detector on one thread; 1 with several
    workers). One run at a time writes a folder (a lock file in it); a second one is refused.
    """
    t_start = time.time()
    compression = _check_options(align, size, compression, shard_items)
    workers = max(1, int(workers))

    # 1. the reader (layout, protocol, classes), the aligner, what identifies the input
    reader = _open_checked_reader(dataset, raw, protocol, align)
    out = Path(out).expanduser() if out else resolve_data_root(data_root) / reader.name
    check_apart(out, "output folder", [raw])  # --force clears the output: never the raw folder, nor one holding it
    lanes = _lanes(reader.align, workers, threads)
    work = ItemWork(
        reader,
        reader.align,
        int(size),
        str(detector_weights[0]) if detector_weights else None,
        device,
        threads=threads if threads else (1 if workers > 1 or lanes > 1 else None),
        weights_sha256=detector_weights[1] if detector_weights else None,
    )
    aligner_info = _describe_align(work)  # builds a detector now: a missing weight file fails before any work
    sources = _source_checksums(reader)
    listing = _list_items(reader, int(shard_items))
    fingerprint = _fingerprint(reader, work, int(shard_items), compression, aligner_info, sources, listing)
    console = _console(progress)
    if not (force or overwrite) and _already_done(out, fingerprint, console):
        return out

    # 2. under the lock: resume or start, write the shards in order, then the manifest (last)
    with _locked(out):
        done = _start_or_resume(out, fingerprint, force or overwrite, console)
        if done is None:
            return out
        if console:
            console.print(
                f"[bold]{escape(reader.definition.title)}[/bold] -> {escape(str(out))}: {listing.total:,} raw items, "
                f"layout '{reader.layout}', protocol {reader.protocol} ({len(reader.classes)} classes), "
                f"align '{reader.align}', {workers} worker(s)"
                + (f" x {lanes} threads" if lanes > 1 else "")
                + (f"; resuming after {len(done)} finished shard(s)" if done else "")
            )
        bar = _Progress(console, listing.total)
        entries = _write_shards(out, reader, work, done, int(shard_items), compression, workers, lanes, bar)
        manifest = _finish(out, reader, fingerprint, entries, aligner_info, sources, work, workers, lanes, t_start)
    if console:
        _print_summary(console, manifest, out)
    return out


def _check_options(align: str | None, size: int, compression: str | None, shard_items: int) -> str | None:
    """Validate the settings (before any work); return the compression filter (None: uncompressed)."""
    if align is not None and align not in ALIGN_CHOICES:
        raise GrefelError(f"unknown align method '{align}': choose one of {', '.join(ALIGN_CHOICES)}")
    if not 16 <= int(size) <= 1024:
        raise GrefelError(f"size {size} is out of range: use 16..1024 (128 is what the model's presets expect)")
    if compression not in (None, "none", "gzip"):
        raise GrefelError(f"unknown compression '{compression}': use none or gzip (both readable by any HDF5 tool)")
    if int(shard_items) < 1:
        raise GrefelError(f"shard_items must be at least 1, got {shard_items}")
    return None if compression == "none" else compression


@dataclass
class _Listing:
    """The raw items as listed once before the run: how many, and digests that identify them."""

    total: int
    chunks: list[str]  # digest of each chunk of shard_items items
    digest: str  # over all chunks


def _list_items(reader: RawReader, shard_items: int) -> _Listing:
    chunks, total = [], 0
    for chunk in _batched(reader.items(), shard_items):
        chunks.append(_chunk_digest(reader, chunk))
        total += len(chunk)
    if total == 0:
        raise DatasetError(f"no images found in {reader.tree.root} for {reader.definition.title}: check the folder")
    return _Listing(total, chunks, hashlib.sha256("\n".join(chunks).encode()).hexdigest())


def _fingerprint(reader, work, shard_items, compression, aligner_info, sources, listing) -> dict:
    """What a rerun must match to resume or to find the folder complete: options and input."""
    return {
        "dataset": reader.dataset,
        "name": reader.name,
        "protocol": reader.protocol,
        "layout": reader.layout,
        "align": work.align,
        "size": work.size,
        "shard_items": shard_items,
        "compression": compression,
        "schema_version": SCHEMA_VERSION,
        "model_sha256": aligner_info.get("model_sha256", ""),
        "raw": str(reader.tree.root),
        "sources": {s["path"]: s["sha256"] for s in sources},
        "items_sha256": listing.digest,
    }


def _write_shards(out, reader, work, done, shard_items, compression, workers, lanes, bar) -> dict[int, dict]:
    """Align the items of the unfinished chunks (in ``workers``) and write one shard per chunk, in
    order; return every shard's manifest entry. Finished chunks are checked and passed over."""
    chunk_sha: dict[int, str] = {}

    def todo() -> Iterator[tuple[int, RawItem | Skip]]:
        for c, chunk in enumerate(_batched(reader.items(), shard_items)):
            digest = _chunk_digest(reader, chunk)
            if c < len(done):
                if (done[c]["chunk_sha256"], done[c]["chunk_items"]) != (digest, len(chunk)):
                    raise DatasetError(
                        f"the raw items of finished shard {c} changed since the interrupted run: "
                        f"rerun with --force (force=True) to prepare {out.name} from scratch"
                    )
                bar.advance(len(chunk))
                continue
            chunk_sha[c] = digest
            for it in chunk:
                yield c, it

    shard_args = dict(
        dataset=reader.name,
        protocol=reader.protocol,
        classes=reader.classes,
        image_size=work.size,
        attribute_names=reader.attribute_names(),
        compression=compression,
        landmarks68=getattr(reader, "has_landmarks68", False),
    )
    entries = {c: d["entry"] for c, d in enumerate(done)}
    next_index = sum(d["entry"]["n"] for d in done)
    writer, current, count = None, -1, 0
    try:
        with bar, cv2_threads(1):
            for c, result in ordered_map(work, todo(), workers, lanes=lanes):
                if c != current:
                    if writer is not None:
                        w, writer = writer, None
                        next_index = _close_shard(w, entries, current, count, chunk_sha[current])
                    writer = ShardWriter(
                        out / SHARD_DIR / shard_name(c), first_index=next_index, **shard_args
                    ).__enter__()
                    current, count = c, 0
                count += 1
                if isinstance(result, Skip):
                    writer.skipped.append((result.source, result.reason))
                else:
                    writer.add(result)
                bar.advance(1)
            if writer is not None:
                w, writer = writer, None
                _close_shard(w, entries, current, count, chunk_sha[current])
    except BaseException:
        if writer is not None:  # drop the unfinished shard's temporary file; finished shards stay
            writer.__exit__(*sys.exc_info())
        raise
    return entries


def _lanes(align: str, workers: int, threads: int | None) -> int:
    """Threads of the one-process pipeline: one per core (at most 4).

    Decoding, warping and ONNX Runtime release the GIL, so lanes overlap them: on 100 x 100 faces
    two lanes prepare ~1.3x as many pre-aligned images per second as one, and two one-thread
    detector runs detect ~1.3x as many faces as one session using both cores. One lane where
    several worker processes run, where ``threads`` gives the offline detector its own threads,
    and for facexlib's torch detectors (their device and torch threads are the user's choice).
    """
    if workers > 1 or align.startswith("facexlib") or (threads and align in DETECTORS):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


def _close_shard(writer: ShardWriter, entries: dict, c: int, count: int, digest: str) -> int:
    writer.set_attrs(chunk=c, chunk_items=count, chunk_sha256=digest)
    writer.__exit__(None, None, None)
    entries[c] = writer.entry
    return writer.first_index + writer.n


def _batched(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def _chunk_digest(reader: RawReader, chunk: list) -> str:
    """sha256 over a chunk's items: name, label, split and the size and mtime of its files (image,
    per-image annotations; a skipped item: name and reason), so another copy of the raw tree with
    the same names differs."""
    h = hashlib.sha256()
    for it in chunk:
        if isinstance(it, Skip):
            line = f"{it.source}\tskip\t{it.reason}"
        else:
            line = f"{it.source}\t{it.label}\t{it.split}\t{reader.stamp(it)}"
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


# -- the output folder: one writer at a time, resume or start ------------------------------------
@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (``flock`` on a file in it) for the whole run.

    Refuses an output that is a file, a folder that is not grefel's, and a folder that cannot
    be written; a second run on a locked folder is refused (it would mix or delete the first
    run's files). The kernel drops the lock when the process ends, even on ``kill -9``.
    """
    _check_output(out)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(out / PREPARE_LOCK, f"{os.getpid()}\n"))
        except LockHeld as e:
            raise GrefelError(
                f"another grefel prepare (process {e.holder or '?'}) is writing {out}: wait for it to finish, "
                "or choose another output folder"
            ) from None
        except OSError as e:
            raise GrefelError(
                f"cannot write to {out} ({e.strerror}): choose an output folder you can write to"
            ) from None
        yield


def _check_output(out: Path) -> None:
    """Create ``out`` if needed; one-line errors for outputs that cannot be."""
    try:
        if out.exists() and not out.is_dir():
            raise GrefelError(f"the output {out} is a file: choose a folder")
        ours = (out / MANIFEST).is_file() or (out / STATE).is_file() or (out / PREPARE_LOCK).is_file()
        if out.is_dir() and not ours and any(out.iterdir()):
            raise GrefelError(f"{out} exists and is not a grefel prepared dataset: choose another output folder")
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GrefelError(f"cannot write to {out} ({e.strerror}): choose an output folder you can write to") from None


def _already_done(out: Path, fingerprint: dict, console) -> bool:
    """True when ``out`` is complete with this very fingerprint (checked without the lock, so a
    read-only copy of a prepared dataset is fine); any other case is decided under the lock."""
    try:
        done = (out / MANIFEST).is_file() and read_json(out / PROVENANCE).get("fingerprint") == fingerprint
    except (OSError, ValueError, AttributeError):
        return False
    if done and console:
        console.print(
            f"{escape(str(out))} is already prepared from this raw folder with these options (--force redoes it)"
        )
    return done


def _start_or_resume(out: Path, fingerprint: dict, force: bool, console) -> list[dict] | None:
    """Set up ``out`` (locked); return the finished shards of an interrupted run ([] for a fresh
    start), None when it is complete with this fingerprint."""
    state = out / STATE
    if force:
        for p in out.iterdir():  # everything but the lock file we hold
            if p.name != PREPARE_LOCK:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if (out / MANIFEST).is_file():
        try:
            old = read_json(out / PROVENANCE).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            old = None
        if old == fingerprint:
            if console:
                console.print(f"{escape(str(out))} is already prepared with these options (--force redoes it)")
            return None
        raise GrefelError(
            f"{out} already holds a dataset prepared {_differences(old, fingerprint, 'since')}: rerun with --force "
            "(force=True) to prepare it again, or choose another output folder"
        )
    previous = _read_state(state)
    if previous is not None and not previous.get("no_faces") and previous.get("fingerprint") != fingerprint:
        raise GrefelError(
            f"{out} holds an interrupted prepare "
            f"{_differences(previous.get('fingerprint'), fingerprint, 'since the interrupted run')}: rerun it as it "
            "was to resume, or with --force (force=True) to start again"
        )
    shard_dir = out / SHARD_DIR
    if previous is not None and previous.get("no_faces") and shard_dir.is_dir():
        shutil.rmtree(shard_dir)  # the last attempt wrote no face: nothing to resume
    write_json(state, {"fingerprint": fingerprint, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    shard_dir.mkdir(parents=True, exist_ok=True)
    for tmp in shard_dir.glob(".*.tmp"):  # left by a killed run (no other run holds the lock)
        tmp.unlink()
    return _finished_shards(shard_dir)


def _read_state(state: Path) -> dict | None:
    if not state.is_file():
        return None
    try:
        previous = read_json(state)
    except (OSError, ValueError):
        previous = None
    return previous if isinstance(previous, dict) else {"fingerprint": None}


def _finished_shards(shard_dir: Path) -> list[dict]:
    """The whole shards of an interrupted run, in order (shards after a gap are deleted)."""
    done = []
    for c in itertools.count():
        p = shard_dir / shard_name(c)
        if not p.is_file():
            break
        try:
            with h5py.File(p, "r") as f:
                n, first = int(f["label"].shape[0]), (int(f["index"][0]) if f["index"].shape[0] else None)
                chunk = {"chunk_sha256": str(f.attrs["chunk_sha256"]), "chunk_items": int(f.attrs["chunk_items"])}
        except (OSError, KeyError, ValueError):
            break  # damaged (an OS crash): redone with the rest
        first = sum(d["entry"]["n"] for d in done) if first is None else first
        entry = {"file": f"{SHARD_DIR}/{p.name}", "n": n, "first_index": first}
        done.append({**chunk, "entry": {**entry, "bytes": p.stat().st_size, "sha256": sha256_file(p)}})
    for stale in sorted(shard_dir.glob("shard-*.h5"))[len(done) :]:  # after a gap: not trusted
        stale.unlink()
    return done


def _differences(old: dict | None, new: dict, changed: str) -> str:
    """How the folder's input or options differ, for the error message: ``from another raw folder
    (/data/A)``, ``with other options: align (none -> landmarks)``..."""
    if not old or "raw" not in old:
        return "by an older grefel, which did not record its raw folder and files"
    if old["raw"] != new["raw"]:
        return f"from another raw folder ({old['raw']})"
    options = [k for k in new if k not in ("raw", "sources", "items_sha256") and old.get(k) != new[k]]
    if options:
        return "with other options: " + ", ".join(f"{k} ({old.get(k)} -> {new[k]})" for k in options)
    if old.get("sources") != new["sources"]:
        return f"from label files that changed {changed}"
    return f"from raw items that changed {changed} (file names, sizes or modification times differ)"


def _describe_align(work: ItemWork) -> dict:
    if work.align in DETECTORS:
        return work.aligner().describe()
    d = {"method": work.align, "size": work.size}
    if work.align == "landmarks":
        d.update(
            template_112=TEMPLATE_112.tolist(),
            landmarks="shipped with the dataset",
            fit="least-squares similarity (skimage SimilarityTransform), cv2.warpAffine bilinear, area pre-shrink",
        )
    else:
        d.update(resize="centred square (or the shipped face box) scaled to size x size, bilinear, area pre-shrink")
    return d


def synthetic_source(reader: RawReader) -> dict | None:
    """What ``grefel synth`` recorded, when the raw tree is its output (its marker file at or above
    the tree's root); ``None`` for real data. Reports keep such runs out of the paper's columns."""

    root = Path(reader.tree.root).resolve()
    for folder in (root, *root.parents[:2]):
        marker = folder / SYNTH_MARKER
        if marker.is_file():
            try:
                m = read_json(marker)
            except (OSError, ValueError):
                m = {}
            return {
                "generator": m.get("generator", "grefel synth"),
                "grefel_version": m.get("grefel_version"),
                "settings": m.get("settings"),
                "marker": str(marker),
            }
    return None


def _source_checksums(reader: RawReader) -> list[dict]:
    root = reader.tree.root
    return [
        {
            "path": p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p),
            "bytes": p.stat().st_size,
            "sha256": sha256_file(p),
        }
        for p in reader.annotation_files()
    ]


def reason_kind(reason: str) -> str:
    """A reason without its details, for counting: the text before the first `` (``.

    ``truncated or corrupt image (image file is truncated (38 bytes not processed))`` ->
    ``truncated or corrupt image``. Readers put what varies per item in those parentheses.
    """
    return reason.split(" (", 1)[0].strip()


@dataclass
class _Tally:
    """What the finished shards hold, gathered in one pass (which also writes skipped.csv)."""

    counts: dict[str, Counter]  # split -> class name -> faces
    groups: dict[str, set]  # split -> group ids
    reasons: Counter  # reason kind -> skipped items
    images_sha256: str
    n: int

    @property
    def split_order(self) -> list[str]:
        known = [s for s in ("train", "val", "test", "") if s in self.counts]
        return known + sorted(set(self.counts) - {"train", "val", "test", ""})


def _tally(out: Path, shards: list[dict], classes: list[str]) -> _Tally:
    import csv

    t = _Tally({}, {}, Counter(), "", sum(e["n"] for e in shards))
    images_digest = hashlib.sha256()
    with atomic_path(out / SKIPPED) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["source", "reason"])
        for e in shards:
            with h5py.File(out / e["file"], "r") as f:
                labels, splits = f["label"][:], f["split"][:].astype(str)
                for sp, lab in zip(splits, labels):
                    t.counts.setdefault(sp, Counter())[classes[lab]] += 1
                for sp, g in zip(splits, f["group"].asstr()[:]):
                    if g:
                        t.groups.setdefault(sp, set()).add(g)
                for d in f["source_sha256"][:]:
                    images_digest.update(bytes(d))
                for src, r in zip(f["skipped/source"].asstr()[:], f["skipped/reason"].asstr()[:]):
                    w.writerow([src, r])
                    t.reasons[reason_kind(r)] += 1
    t.images_sha256 = images_digest.hexdigest()
    return t


def _finish(out, reader, fingerprint, entries, aligner_info, sources, work, workers, lanes, t_start) -> dict:
    """skipped.csv, provenance.json and, last, manifest.json (its presence means complete).

    A preparation that wrote no face is an error: its state is marked so that the next run
    starts afresh, and skipped.csv stays for the user to read.
    """
    shards = [entries[c] for c in sorted(entries)]
    tally = _tally(out, shards, reader.classes)
    if tally.n == 0:
        write_json(out / STATE, {**(_read_state(out / STATE) or {}), "no_faces": True})
        top = tally.reasons.most_common(3)
        why = "; ".join(f"{n:,} {kind}" for kind, n in top) + ("; ..." if len(tally.reasons) > len(top) else "")
        raise DatasetError(
            f"no face was written: all {sum(tally.reasons.values()):,} raw items in {reader.tree.root} were skipped "
            f"({why}); see {out / SKIPPED}"
        )
    manifest = _manifest(reader, work, tally, shards)
    prov = _provenance(reader, fingerprint, work, workers, lanes, aligner_info, sources, tally, t_start)
    write_json(out / PROVENANCE, prov)
    write_json(out / MANIFEST, manifest)
    (out / STATE).unlink(missing_ok=True)
    return manifest


def _manifest(reader: RawReader, work: ItemWork, tally: _Tally, shards: list[dict]) -> dict:
    classes, order = reader.classes, tally.split_order
    conflicting = tally.reasons.get(CONFLICTING_LINE, 0)
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": reader.name,
        "source_dataset": reader.dataset,
        "title": reader.definition.title,
        "protocol": reader.protocol,
        "classes": classes,
        "image_size": work.size,
        "align": work.align,
        "counts": {"total": tally.n, "splits": {sp: {k: tally.counts[sp].get(k, 0) for k in classes} for sp in order}},
        "skipped": {
            "total": sum(tally.reasons.values()),
            "reasons": dict(tally.reasons.most_common()),
            "duplicates": {"lines": tally.reasons.get(DUPLICATE_LINE, 0) + conflicting, "conflicting": conflicting},
        },
        "groups": {"kind": reader.definition.group, "per_split": {sp: len(tally.groups.get(sp, ())) for sp in order}},
        "official_splits": reader.definition.splits,
        "evaluation": reader.definition.evaluation,
        "attributes": {a: reader.definition.attributes.get(a, {}) for a in reader.attribute_names()},
        "shards": shards,
    }


def _provenance(reader, fingerprint, work, workers, lanes, aligner_info, sources, tally, t_start) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def _v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    return {
        "grefel_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.time() - t_start, 1),
        "command": " ".join(sys.argv) if sys.argv and "grefel" in sys.argv[0] else None,
        "dataset": reader.dataset,
        "layout": reader.layout,
        "protocol": reader.protocol,
        "raw": str(reader.tree.root),
        "synthetic": synthetic_source(reader),
        "options": {
            "align": work.align,
            "size": work.size,
            "shard_items": fingerprint["shard_items"],
            "compression": fingerprint["compression"],
            "workers": workers,
            "lanes": lanes,
            "detector_weights": work.weights,
            "device": work.device,
        },
        "aligner": aligner_info,
        "source_files": sources,
        "images_sha256": tally.images_sha256,
        "images_sha256_rule": "sha256 over the shards' source_sha256 values in index order",
        "environment": {
            "python": platform.python_version(),
            **{p: _v(p) for p in ("numpy", "pillow", "opencv-python", "scikit-image", "h5py", "onnxruntime")},
        },
        "fingerprint": fingerprint,
    }


# -- progress and summary --------------------------------------------------------------------------
def _console(progress: bool):
    if not progress:
        return None

    return make_console()


class _Progress:
    """A rich progress bar with images/s and ETA (a no-op without a console)."""

    def __init__(self, console, total: int):
        self._p = None
        if console is not None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task):
                    return Text(f"{task.speed:,.0f} img/s" if task.speed else "- img/s", style="progress.data.speed")

            self._p = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                Rate(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._p.add_task("prepare", total=total)

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def __enter__(self):
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()
        return False


def _print_summary(console, manifest: dict, out: Path) -> None:
    from rich.table import Table

    classes = manifest["classes"]
    splits = manifest["counts"]["splits"]
    t = Table(title=escape(f"{manifest['dataset']}: {manifest['counts']['total']:,} faces in {out}"))
    t.add_column("class")
    for sp in splits:
        t.add_column(sp or "(no split)", justify="right")
    for k in classes:
        t.add_row(k, *(f"{splits[sp][k]:,}" for sp in splits))
    console.print(t)
    print_skipped(
        console,
        manifest["skipped"]["reasons"],
        f"skipped {manifest['skipped']['total']:,} raw items (listed in {out / SKIPPED})",
    )


def print_skipped(console, reasons: dict[str, int], title: str) -> None:
    """The skipped items by reason: one line per reason kind, whole (no markup, no cut), and what
    the duplicate label lines were."""
    if not reasons:
        return
    console.print(escape(title) + ":")
    for r, n in reasons.items():
        console.print(f"  {n:>8,}  {escape(r)}", soft_wrap=True)
    dup, conflicting = reasons.get(DUPLICATE_LINE, 0), reasons.get(CONFLICTING_LINE, 0)
    if dup or conflicting:
        console.print(
            f"  duplicate label lines: {dup + conflicting:,}, {conflicting:,} of them with another label "
            "(the first line naming an image is kept)"
        )
