"""Small file helpers every long job uses: atomic writes, checksums and folder locks.

Long jobs never lose finished work: a file is written under a temporary name in the same folder,
flushed to disk, then renamed over its final name (``os.replace`` is atomic on POSIX). A crash or
a full disk leaves the previous complete file in place, never a half-written one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from grefel.core.errors import GrefelError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; final files get the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths; anything else is a TypeError."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def writable_dir(path: str | os.PathLike, what: str = "output folder", inputs: Iterable = ()) -> Path:
    """Create folder ``path`` (with its parents) and check that a file can be written in it.

    Run before long work, so that an unusable output fails at the start in one line (a
    :class:`~grefel.core.errors.GrefelError`) rather than as a traceback once the work is done. ``what``
    names the folder in the message ("report folder", "predictions folder"). An output folder that
    is one of ``inputs`` (files or folders), holds one, or lies inside an input folder is refused
    (checked through links), so that writing or clearing it can never touch an input.
    """

    path = check_apart(path, what, inputs)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker == path:
        raise GrefelError(f"cannot use {path} as the {what}: it is a file, not a folder; choose a folder path")
    if blocker is not None:
        raise GrefelError(f"cannot create the {what} {path}: {blocker} is a file, not a folder; choose another path")
    missing = [p for p in (path, *path.parents) if not p.exists()]  # innermost first
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".grefel-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        for p in missing:  # leave nothing behind
            with contextlib.suppress(OSError):
                p.rmdir()
        raise GrefelError(
            f"cannot write to the {what} {path} ({e.strerror or e}): choose a folder you can write to"
        ) from None
    return path


def check_apart(path: str | os.PathLike, what: str, inputs: Iterable) -> Path:
    """Output folder ``path`` checked against ``inputs`` without creating anything: a one-line
    GrefelError when it is one of them, holds one, or lies inside an input folder (through links)."""
    path = Path(path).expanduser()
    for src in inputs:
        if src is not None and (how := _overlap(path, Path(src).expanduser())):
            raise GrefelError(
                f"the {what} {path} {how} {src}, an input of this command: writing there could destroy the input; "
                "choose a folder apart from the inputs"
            )
    return path


def _overlap(out: Path, src: Path) -> str | None:
    """How output folder ``out`` overlaps input ``src``: "is", "holds", "lies inside", or None."""
    o, s = out.resolve(), src.resolve()
    if o == s or same_file(out, src):
        return "is"
    if s.is_relative_to(o):
        return "holds"
    if o.is_relative_to(s) and src.is_dir():
        return "lies inside"
    return None


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` checked as an input before it is read: it exists and is a regular file (or a link
    to one). A folder, a FIFO (named pipe, which would block the read forever), a socket or a device
    gets a one-line GrefelError that says what it is."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise GrefelError(f"{what} {path} not found") from None
    except OSError as e:
        raise GrefelError(f"cannot read {what} {path} ({e.strerror or e})") from None
    if stat.S_ISREG(mode):
        return path
    if stat.S_ISDIR(mode):
        raise GrefelError(f"{what} {path} is a folder, not a file: give the files inside it")
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"))
    kind = next((k for test, k in kinds if test(mode)), "a device" if stat.S_ISBLK(mode) else "a special file")
    raise GrefelError(f"{what} {path} is {kind}, not a regular file: give a regular file")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` are one file (the same inode, through links), or resolve to one path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def writable_file(path: str | os.PathLike, what: str = "output file", inputs: Iterable = ()) -> Path:
    """``path`` checked as an output before any work starts: not a folder, not one of ``inputs``
    (nor a link to one: an output never overwrites an input), not a file grefel keeps (a checkpoint,
    a file of a prepared dataset or of the weights store, whoever's input it is), in a folder that
    can be written. The one write check of every command that writes a file; a one-line GrefelError
    otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise GrefelError(f"the {what} {path} is a folder: give a file path")
    for src in inputs:
        if src is not None and same_file(path, src):
            raise GrefelError(
                f"the {what} {path} is also an input of this command ({src}): writing it would destroy the input; "
                "choose another output path"
            )
    kept = _kept_by_grefel(path)
    if kept:
        raise GrefelError(f"the {what} {path} is {kept}: writing it would destroy it; choose another output path")
    writable_dir(path.parent, f"folder of the {what}")
    return path


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar")


def _kept_by_grefel(path: Path) -> str | None:
    """What ``path`` is when an output must never replace it: an existing checkpoint (a torch.save
    file), or a path inside a prepared dataset (a folder holding manifest.json and shards/) or the
    weights store (a folder holding registry.json); None otherwise."""
    here = path.resolve()
    if here.suffix.lower() in CHECKPOINT_SUFFIXES and here.is_file():
        with contextlib.suppress(OSError), open(here, "rb") as f:
            head = f.read(4)
            if head == b"PK\x03\x04" or head[:2] == b"\x80\x02":  # torch.save's zip, or its legacy pickle
                return "a PyTorch checkpoint"
    for folder in list(here.parents)[:3]:
        if (folder / "manifest.json").is_file() and (folder / "shards").is_dir():
            return f"inside the prepared dataset {folder}"
        if (folder / "registry.json").is_file() and folder.name == "weights":
            return f"inside the weights store {folder}"
    return None


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is what it wrote into the lock file."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, holder: str = "", wait_s: float | None = 0.0) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block and write ``holder``
    (who holds it) into it. Another process holding it: wait up to ``wait_s`` seconds (``None``:
    until it is free), then raise :class:`LockHeld`. The kernel drops the lock when the process
    ends, even on ``kill -9``; the file stays (deleting it would race with a process about to lock it).
    This is grefel's one lock: prepare's output folder, the weights store, study folders and runs."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _flock(fd, wait_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)


def _flock(fd: int, wait_s: float | None) -> None:
    import fcntl
    import time

    if wait_s is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockHeld(os.pread(fd, 200, 0).decode(errors="replace").strip()) from None
            time.sleep(0.2)


def is_locked(path: str | os.PathLike) -> bool:
    """True while some process holds the lock on ``path`` (:func:`exclusive_lock`; works read-only)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
