"""``grefel prepare``: raw dataset as distributed -> aligned faces in HDF5 shards under the data root.

The run, top to bottom:

1. open the dataset's reader (``grefel/data/raw/<id>.py``): it finds the layout or names the layouts it
   looked for, and fixes the protocol and class order from ``datasets/<id>.toml``;
2. stream the raw items in a fixed order, cut into chunks of ``shard_items`` items; each chunk becomes
   one shard (``shards/shard-NNNNN.h5``) holding its written faces and the items it skipped, with why;
3. per item (in ``workers`` processes): read the annotation, decode the image, align the face
   (``none`` / ``landmarks`` / a detector, see :mod:`grefel.data.align`), and return a
   :class:`~grefel.data.shards.Sample` or a :class:`~grefel.data.raw.Skip`;
4. at the end, gather ``skipped.csv``, ``provenance.json`` and, last, ``manifest.json``.

Nothing finished is lost: a shard is written under a temporary name and renamed when whole, and a
rerun with the same options resumes after the last whole shard (checking that the raw items of the
finished chunks have not changed). Memory stays flat: items stream, at most a few batches are in
flight, and shards are written sample by sample.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py

from grefel import __version__
from grefel.data.align import DETECTORS, TEMPLATE_112, FaceAligner, align_landmarks, cv2_threads, resize_square
from grefel.data.raw import ImageError, RawItem, RawReader, Skip, open_reader
from grefel.data.shards import SCHEMA_VERSION, SHARD_DIR, Sample, ShardWriter, shard_name
from grefel.errors import DatasetError, GrefelError
from grefel.io import atomic_path, read_json, sha256_file, write_json
from grefel.paths import MANIFEST, PROVENANCE
from grefel.paths import data_root as resolve_data_root

ALIGN_CHOICES = ("none", "landmarks", *DETECTORS)
DEFAULT_SIZE = 128
DEFAULT_SHARD_ITEMS = 1024  # raw items per shard: <= 1024 faces, 48 MiB at 128 x 128
STATE = "prepare-state.json"
SKIPPED = "skipped.csv"
_BATCH = 16  # items per task sent to a worker process


# -- the per-item work (runs in worker processes) ------------------------------------------------
@dataclass
class ItemWork:
    """Read, align and package one raw item. Picklable: each worker builds its own detector."""

    reader: RawReader
    align: str
    size: int
    weights_dir: str | None = None
    device: str = "cpu"
    threads: int | None = None
    data_root: str | None = None  # whose weights store holds facexlib's detectors when weights_dir is None
    _aligner: FaceAligner | None = None

    def aligner(self) -> FaceAligner:
        if self._aligner is None:
            self._aligner = FaceAligner(
                self.align,
                weights_dir=self.weights_dir,
                size=self.size,
                device=self.device,
                threads=self.threads,
                data_root=self.data_root,
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
    weights_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    shard_items: int = DEFAULT_SHARD_ITEMS,
    compression: str | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Prepare raw ``dataset`` found in ``raw``; return the prepared folder.

    The folder is ``out`` or ``<data root>/<name>`` (name: the dataset id, or ``affectnet7`` /
    ``affectnet8``). ``align`` is ``none``, ``landmarks`` (points shipped with the dataset) or a
    detector of :data:`grefel.data.align.DETECTORS`; the default depends on the dataset and layout.
    A rerun resumes an interrupted run, returns at once when the folder is complete, and with
    ``overwrite`` starts again. ``progress`` shows a progress bar and a summary. ``threads``: CPU
    threads of the detector in each worker, in one lane (default: one worker runs one lane per
    core, each running the detector on one thread; 1 with several workers).
    """
    t_start = time.time()
    if align is not None and align not in ALIGN_CHOICES:
        raise GrefelError(f"unknown --align '{align}': choose one of {', '.join(ALIGN_CHOICES)}")
    if not 16 <= int(size) <= 1024:
        raise GrefelError(f"--size {size} is out of range: use 16..1024 (128 is what the model's presets expect)")
    if compression not in (None, "none", "gzip"):
        raise GrefelError(f"unknown --compression '{compression}': use none or gzip (both readable by any HDF5 tool)")
    compression = None if compression == "none" else compression
    if int(shard_items) < 1:
        raise GrefelError("--shard-items must be at least 1")
    workers = max(1, int(workers))

    # 1. the reader: layout, protocol, classes, aligner
    reader = open_reader(dataset, raw, protocol=protocol, align=align)
    align = reader.align
    if align == "landmarks" and not getattr(reader, "has_landmarks", False):
        raise DatasetError(
            f"{reader.definition.title} ({reader.layout} layout) ships no landmarks here: use --align none "
            f"or a detector ({', '.join(DETECTORS)})"
        )
    out = Path(out).expanduser() if out else resolve_data_root(data_root) / reader.name
    lanes = _lanes(align, workers, threads)
    work = ItemWork(
        reader,
        align,
        int(size),
        str(weights_dir) if weights_dir else None,
        device,
        threads=threads if threads else (1 if workers > 1 or lanes > 1 else None),
        data_root=str(data_root) if data_root else None,
    )
    aligner_info = _describe_align(work)  # builds a detector now: a missing weight file fails before any work
    sources = _source_checksums(reader)
    fingerprint = {
        "dataset": reader.dataset,
        "name": reader.name,
        "protocol": reader.protocol,
        "layout": reader.layout,
        "align": align,
        "size": int(size),
        "shard_items": int(shard_items),
        "compression": compression,
        "schema_version": SCHEMA_VERSION,
        "model_sha256": aligner_info.get("model_sha256", ""),
        "sources": {s["path"]: s["sha256"] for s in sources},
    }
    console = _console(progress)
    done = _start_or_resume(out, fingerprint, overwrite, console)
    if done is None:
        return out

    # 2. stream the items in chunks; finished chunks are checked and passed over
    total = sum(1 for _ in reader.items())
    if total == 0:
        raise DatasetError(f"no images found in {reader.tree.root} for {reader.definition.title}: check the folder")
    if console:
        console.print(
            f"[bold]{reader.definition.title}[/bold] -> {out}: {total:,} raw items, layout '{reader.layout}', "
            f"protocol {reader.protocol} ({len(reader.classes)} classes), align '{align}', {workers} worker(s)"
            + (f" x {lanes} threads" if lanes > 1 else "")
            + (f"; resuming after {len(done)} finished shard(s)" if done else "")
        )
    bar = _Progress(console, total)
    chunk_sha: dict[int, str] = {}

    def todo() -> Iterator[tuple[int, RawItem | Skip]]:
        for c, chunk in enumerate(_batched(reader.items(), int(shard_items))):
            digest = _chunk_digest(chunk)
            if c < len(done):
                if (done[c]["chunk_sha256"], done[c]["chunk_items"]) != (digest, len(chunk)):
                    raise DatasetError(
                        f"the raw items of finished shard {c} changed since the interrupted run: "
                        f"rerun with --overwrite to prepare {out.name} from scratch"
                    )
                bar.advance(len(chunk))
                continue
            chunk_sha[c] = digest
            for it in chunk:
                yield c, it

    # 3. align in workers, write shards in order
    shard_args = dict(
        dataset=reader.name,
        protocol=reader.protocol,
        classes=reader.classes,
        image_size=int(size),
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

    # 4. skipped.csv, provenance.json, manifest.json (last: its presence means complete)
    manifest = _finish(out, reader, fingerprint, entries, aligner_info, sources, work, workers, lanes, t_start)
    if console:
        _print_summary(console, manifest, out)
    return out


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


def _chunk_digest(chunk: list) -> str:
    h = hashlib.sha256()
    for it in chunk:
        h.update(it.source.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _start_or_resume(out: Path, fingerprint: dict, overwrite: bool, console) -> list[dict] | None:
    """Set up ``out``; return the finished shards of an interrupted run ([] for a fresh start), None when complete."""
    state = out / STATE
    if out.exists() and overwrite:
        if not (out / MANIFEST).is_file() and not state.is_file() and any(out.iterdir()):
            raise GrefelError(
                f"{out} exists and is not a grefel prepared dataset: refusing to delete it; choose another --out"
            )
        shutil.rmtree(out)
    if (out / MANIFEST).is_file():
        prov = out / PROVENANCE
        old = json.loads(prov.read_text()).get("fingerprint") if prov.is_file() else None
        if old == fingerprint:
            if console:
                console.print(f"{out} is already prepared with these options (pass --overwrite to redo it)")
            return None
        raise GrefelError(
            f"{out} already holds a prepared dataset made with other {_differences(old, fingerprint)}: "
            "pass --overwrite to replace it, or --out to write elsewhere"
        )
    if state.is_file():
        old = json.loads(state.read_text()).get("fingerprint")
        if old != fingerprint:
            raise GrefelError(
                f"{out} holds an interrupted prepare with other {_differences(old, fingerprint)}: rerun it "
                "with the same options to resume, or pass --overwrite to start again"
            )
    elif out.exists() and any(out.iterdir()):
        raise GrefelError(f"{out} exists and is not empty: choose another --out (or remove it)")
    write_json(state, {"fingerprint": fingerprint, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    shard_dir = out / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    for tmp in shard_dir.glob(".*.tmp"):  # left by a killed run
        tmp.unlink()
    done = []
    for c in itertools.count():
        p = shard_dir / shard_name(c)
        if not p.is_file():
            break
        with h5py.File(p, "r") as f:
            done.append(
                {
                    "chunk_sha256": str(f.attrs["chunk_sha256"]),
                    "chunk_items": int(f.attrs["chunk_items"]),
                    "entry": {
                        "file": f"{SHARD_DIR}/{p.name}",
                        "n": int(f["label"].shape[0]),
                        "first_index": int(f["index"][0])
                        if f["index"].shape[0]
                        else sum(d["entry"]["n"] for d in done),
                        "sha256": sha256_file(p),
                    },
                }
            )
    for stale in sorted(shard_dir.glob("shard-*.h5"))[len(done) :]:  # after a gap: not trusted
        stale.unlink()
    return done


def _differences(old: dict | None, new: dict) -> str:
    """Which fingerprint entries differ, for the error message (``align (none -> landmarks)``)."""
    old = old or {}
    diff = [k if k == "sources" else f"{k} ({old.get(k)} -> {new[k]})" for k in new if old.get(k) != new[k]]
    return "options: " + ", ".join(diff).replace("sources", "raw annotation files") if diff else "options"


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
    from grefel.data.synth import MARKER

    root = Path(reader.tree.root).resolve()
    for folder in (root, *root.parents[:2]):
        marker = folder / MARKER
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
    """A reason without its trailing details, for counting.

    ``truncated or corrupt image (...)`` -> ``truncated or corrupt image``.
    """
    return re.sub(r"\s*\([^()]*\)$", "", reason).strip()


def _finish(
    out: Path,
    reader: RawReader,
    fingerprint: dict,
    entries: dict,
    aligner_info: dict,
    sources: list,
    work: ItemWork,
    workers: int,
    lanes: int,
    t_start: float,
) -> dict:
    import csv

    classes = reader.classes
    counts: dict[str, Counter] = {}
    groups: dict[str, set] = {}
    reasons: Counter = Counter()
    images_digest = hashlib.sha256()
    shards = [entries[c] for c in sorted(entries)]
    with atomic_path(out / SKIPPED) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["source", "reason"])
        for e in shards:
            with h5py.File(out / e["file"], "r") as f:
                labels, splits = f["label"][:], f["split"][:].astype(str)
                for sp, lab in zip(splits, labels):
                    counts.setdefault(sp, Counter())[classes[lab]] += 1
                for sp, g in zip(splits, f["group"].asstr()[:]):
                    if g:
                        groups.setdefault(sp, set()).add(g)
                for d in f["source_sha256"][:]:
                    images_digest.update(bytes(d))
                for s, r in zip(f["skipped/source"].asstr()[:], f["skipped/reason"].asstr()[:]):
                    w.writerow([s, r])
                    reasons[reason_kind(r)] += 1
    n = sum(e["n"] for e in shards)
    split_order = [s for s in ("train", "val", "test", "") if s in counts] + sorted(
        set(counts) - {"train", "val", "test", ""}
    )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "dataset": reader.name,
        "source_dataset": reader.dataset,
        "title": reader.definition.title,
        "protocol": reader.protocol,
        "classes": classes,
        "image_size": work.size,
        "align": work.align,
        "counts": {"total": n, "splits": {sp: {k: counts[sp].get(k, 0) for k in classes} for sp in split_order}},
        "skipped": {"total": sum(reasons.values()), "reasons": dict(reasons.most_common())},
        "groups": {"kind": reader.definition.group, "per_split": {sp: len(groups.get(sp, ())) for sp in split_order}},
        "official_splits": reader.definition.splits,
        "evaluation": reader.definition.evaluation,
        "attributes": {a: reader.definition.attributes.get(a, {}) for a in reader.attribute_names()},
        "shards": shards,
    }
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def _v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    provenance = {
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
            "weights_dir": work.weights_dir,
            "device": work.device,
        },
        "aligner": aligner_info,
        "source_files": sources,
        "images_sha256": images_digest.hexdigest(),
        "images_sha256_rule": "sha256 over the shards' source_sha256 values in index order",
        "environment": {
            "python": platform.python_version(),
            **{p: _v(p) for p in ("numpy", "pillow", "opencv-python", "scikit-image", "h5py", "onnxruntime")},
        },
        "fingerprint": fingerprint,
    }
    write_json(out / PROVENANCE, provenance)
    write_json(out / MANIFEST, manifest)
    (out / STATE).unlink(missing_ok=True)
    return manifest


# -- progress and summary --------------------------------------------------------------------------
def _console(progress: bool):
    if not progress:
        return None
    from grefel.console import make_console

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
    t = Table(title=f"{manifest['dataset']}: {manifest['counts']['total']:,} faces in {out}")
    t.add_column("class")
    for sp in splits:
        t.add_column(sp or "(no split)", justify="right")
    for k in classes:
        t.add_row(k, *(f"{splits[sp][k]:,}" for sp in splits))
    console.print(t)
    sk = manifest["skipped"]
    if sk["total"]:
        console.print(f"skipped {sk['total']:,} raw items (listed in {out / SKIPPED}):")
        for r, n in sk["reasons"].items():
            console.print(f"  {n:>8,}  {r}")
