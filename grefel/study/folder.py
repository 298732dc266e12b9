"""The study folder: its layout, its locks and the state of each run (all paths relative to it).

::

    <study>/study.toml            the study file as last run
    <study>/study.json            the expanded plan (runs, their settings) -- what status and summary read
    <study>/summary.json          the statistics (grefel.study.stats)
    <study>/.lock                 held by the `grefel study run` working on this folder
    <study>/runs/<run>/           a `grefel train` run folder (config.json, metrics.jsonl, last.pt, best.pt)
    <study>/runs/<run>/run.log    everything the run printed (train, then evaluate)
    <study>/runs/<run>/status.json  queued | running | requeued | stopped | done | failed, with the error line
    <study>/runs/<run>/settings.json  the settings the run trains with: a rerun reuses the run only if they match
    <study>/runs/<run>/predictions/best-test.parquet   `grefel evaluate` on the clean test split
    <study>/runs/<run>/.lock      held while the run trains or evaluates

Nothing stored here holds an absolute path of the study folder, so a moved or copied folder reports
as before. A run is *running* while some process holds its lock, whoever started it (a local pool or
a Slurm job); a run whose status says running but whose lock is free was stopped and resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from grefel.core.errors import GrefelError
from grefel.core.io import LockHeld, atomic_path, exclusive_lock, is_locked, read_json, write_json
from grefel.core.paths import plain_name
from grefel.core.recipe import DEFAULT_EPOCHS
from grefel.core.settings import default_of
from grefel.study.spec import Study
from grefel.training.config import TrainConfig, resumable_settings

STUDY_JSON = "study.json"
STUDY_TOML = "study.toml"
SUMMARY_JSON = "summary.json"
LOCK_FILE = ".lock"
RUNS = "runs"
STATUS = "status.json"
LOG = "run.log"
PREDICTIONS = "predictions/best-test.parquet"
RUN_SETTINGS = "settings.json"  # in a run folder: the fingerprint of the settings it trains with
STATES = ("done", "running", "failed", "queued", "requeued", "stopped", "pending")


def run_folder(study_dir: Path, name: str) -> Path:
    """``<study>/runs/<name>``; ``name`` must be a plain name (never a path out of the study folder)."""
    return Path(study_dir) / RUNS / plain_name(name, "run name")


def rel_run(name: str, *parts: str) -> str:
    """A path inside run ``name``, relative to the study folder (how it is stored and printed)."""
    return "/".join((RUNS, name, *parts))


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def study_files(study_dir: str | os.PathLike) -> list[Path]:
    """Every file a study folder holds that a command reads (its plan, the runs' files): what an
    output such as `grefel study summary --json` must never be."""
    study_dir = Path(study_dir)
    runs = study_dir / RUNS
    return [study_dir / STUDY_JSON, study_dir / STUDY_TOML, study_dir / LOCK_FILE] + (
        [p for p in runs.rglob("*") if p.is_file()] if runs.is_dir() else []
    )


def fingerprint(settings: dict) -> dict:
    """The settings that decide a run's result: all but those a resumed run may change (devices,
    workers, epochs, data root ... :func:`grefel.training.config.resumable_settings`), sorted."""
    skip = set(resumable_settings())
    return {k: settings[k] for k in sorted(settings) if k not in skip}


def recorded_settings(folder: Path) -> dict | None:
    """The fingerprint a run folder was trained with (``settings.json``), None when it records none."""
    try:
        d = read_json(folder / RUN_SETTINGS)
        return d["settings"] if isinstance(d, dict) and isinstance(d.get("settings"), dict) else None
    except (OSError, ValueError):
        return None


def trained_any(folder: Path) -> bool:
    """The run folder holds a checkpoint: what a rerun would reuse."""
    return (folder / "last.pt").is_file() or (folder / "best.pt").is_file()


def record_settings(folder: Path, settings: dict) -> None:
    write_json(folder / RUN_SETTINGS, {"settings": fingerprint(settings)})


def setting_changes(before: dict, after: dict) -> str:
    """The settings that differ, as ``lr 0.0003 -> 0.001`` (at most three)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}

    def shown(d: dict, k: str) -> str:
        if k in d or k not in fields:
            return str(d[k])
        default = default_of(fields[k])
        return "the method's recipe (default)" if default is None else f"{default} (default)"

    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    show = ", ".join(f"{k} {shown(before, k)} -> {shown(after, k)}" for k in changed[:3])
    return show + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")


# -- the plan ------------------------------------------------------------------------------------
def load_plan(study_dir: str | os.PathLike):
    """The :class:`grefel.study.spec.Study` stored in a study folder."""

    p = Path(study_dir) / STUDY_JSON
    if not p.is_file():
        hint = "" if Path(study_dir).is_dir() else " (no such folder)"
        raise GrefelError(
            f"{study_dir} is not a study folder{hint}: it has no {STUDY_JSON}; start one with a study file"
        )
    try:
        return Study.from_json(read_json(p))
    except GrefelError as e:  # a name or setting a study file could not hold
        raise GrefelError(f"{p}: {e}; fix it, or run the study file again into a new folder") from None
    except (ValueError, KeyError, TypeError) as e:
        raise GrefelError(
            f"{p} is damaged ({type(e).__name__}: {e}): run the study file again into this folder"
        ) from None


def save_plan(study_dir: Path, study, source_text: str | None) -> None:
    write_json(Path(study_dir) / STUDY_JSON, study.to_json())
    if source_text is not None:
        with atomic_path(Path(study_dir) / STUDY_TOML) as tmp:
            tmp.write_text(source_text)


# -- locks ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def study_lock(study_dir: Path):
    """Hold the study folder's lock (fcntl.flock) for the block; refuse when another process holds it."""
    holder = f"pid {os.getpid()} on {socket.gethostname()}, since {now()}"
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(Path(study_dir) / LOCK_FILE, holder))
        except LockHeld as e:
            raise GrefelError(
                f"{study_dir} is in use by another study run ({e.holder or 'another process'}): wait for it to finish, "
                "or stop it first"
            ) from None
        yield


def run_lock(folder: Path, wait_s: float = 5.0):
    """Hold run ``folder``'s lock for the block; :class:`~grefel.core.io.LockHeld` when another
    process keeps it for ``wait_s`` seconds (the short wait covers a status check probing it)."""
    folder.mkdir(parents=True, exist_ok=True)
    return exclusive_lock(folder / LOCK_FILE, f"pid {os.getpid()} on {socket.gethostname()}, since {now()}", wait_s)


def is_run_locked(folder: Path) -> bool:
    """True while some process holds run ``folder``'s lock (works on read-only folders too)."""
    return is_locked(folder / LOCK_FILE)


# -- per-run status ------------------------------------------------------------------------------
def read_status(folder: Path) -> dict:
    try:
        d = json.loads((folder / STATUS).read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def write_status(folder: Path, **fields) -> dict:
    """Merge ``fields`` into run ``folder``'s status.json (atomically); return the new status."""
    status = {**read_status(folder), **fields, "updated": now()}
    write_json(folder / STATUS, status)
    return status


def epochs_done(folder: Path) -> tuple[int, float | None]:
    """(epochs finished, last validation accuracy) from a run's metrics.jsonl (written atomically)."""
    try:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return 0, None
    return int(last.get("epoch", 0)), last.get("val_acc")


def planned_epochs(settings: dict) -> int:

    return int(settings.get("epochs") or DEFAULT_EPOCHS)


@dataclass
class RunStatus:
    name: str
    state: str  # one of STATES
    epochs_done: int
    epochs: int
    seed: int
    cell: dict
    log: str  # relative to the study folder
    error: str | None = None
    job: str | None = None
    metrics: dict = field(default_factory=dict)
    predictions: str | None = None

    @property
    def finished(self) -> bool:
        return self.state == "done"


def run_status(study_dir: Path, run) -> RunStatus:
    """What run ``run`` (a RunSpec) is doing, from its folder alone."""
    folder = run_folder(study_dir, run.name)
    status = read_status(folder)
    done_epochs, _ = epochs_done(folder)
    stored = status.get("state")
    if is_run_locked(folder):
        state = "running"
    elif stored == "done" and (Path(study_dir) / status.get("predictions", rel_run(run.name, PREDICTIONS))).is_file():
        state = "done"
    elif stored in ("failed", "queued", "requeued"):
        state = stored
    elif done_epochs or stored in ("running", "stopped"):
        state = "stopped"
    else:
        state = "pending"
    return RunStatus(
        name=run.name,
        state=state,
        epochs_done=done_epochs,
        epochs=planned_epochs(run.settings),
        seed=run.seed,
        cell=run.cell,
        log=status.get("log", rel_run(run.name, LOG)),
        error=status.get("error") if state == "failed" else None,
        job=status.get("job"),
        metrics=status.get("metrics") or {},
        predictions=status.get("predictions") if state == "done" else None,
    )


def study_states(study_dir: str | os.PathLike, study=None) -> list[RunStatus]:
    """The state of every run of the study stored in ``study_dir``."""
    study = study or load_plan(study_dir)
    return [run_status(Path(study_dir), r) for r in study.runs]
