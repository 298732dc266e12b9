"""`grefel study run`: execute a study's unfinished runs on a local pool or as one Slurm job array.

Every run is :func:`grefel.study.job.run_job` (`grefel train`, then `grefel evaluate`) in a process of
its own; the engines only decide where those processes go:

* **local** (``executor="local"``): a ``concurrent.futures`` thread pool starting one
  ``python -m grefel.study.job`` process per run. With GPUs, one run per GPU (or per group of
  ``gpus_per_run`` GPUs, trained under torchrun) through ``CUDA_VISIBLE_DEVICES``; on a CPU, N runs
  side by side with the cores split between them (torch threads), as `grefel demo` does.
* **slurm** (``executor="slurm"``): submitit's ``AutoExecutor``, one job array for the study
  (``map_array``); each array task is one run, requeued from ``last.pt`` on preemption or timeout.
  ``cluster="local"`` runs the same path on submitit's local executor (the tests do).

The study folder's lock is held while this runs, so a second `study run` on the folder refuses.
Finished runs are skipped, stopped ones resume, failed ones are retried; a run that fails is marked
failed with its log and the others go on. The statistics are written at the end (summary.json).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from grefel.core.console import make_console
from grefel.core.devices import usable_cores
from grefel.core.errors import DatasetError, GrefelError
from grefel.core.paths import plain_name, resolve_dataset
from grefel.data.corrupt import corrupt, read_label_set_attrs
from grefel.data.noise_lists import import_noise_list
from grefel.data.shards import PreparedDataset
from grefel.study.folder import (
    LOCK_FILE,
    LOG,
    STATUS,
    STUDY_JSON,
    fingerprint,
    is_run_locked,
    load_plan,
    planned_epochs,
    read_status,
    recorded_settings,
    rel_run,
    run_folder,
    save_plan,
    setting_changes,
    study_lock,
    study_states,
    trained_any,
    write_status,
)
from grefel.study.job import StudyJob
from grefel.study.show import print_status, print_summary
from grefel.study.spec import load_study, slurm_minutes
from grefel.study.stats import write_summary

EXECUTORS = ("local", "slurm")
POLL_S = 1.0


# -- the study and its folder -------------------------------------------------------------------------
def open_study(source: str | os.PathLike, out: str | os.PathLike | None = None):
    """(study, study folder, study file text or None) for a study file or an existing study folder."""

    source = Path(source)
    if source.is_dir():
        if out is not None and Path(out).resolve() != source.resolve():
            raise GrefelError(f"{source} is a study folder: run it in place, without another output folder")
        return load_plan(source), source, None
    study = load_study(source)
    folder = Path(out) if out is not None else source.parent / study.name
    return study, folder, source.read_text(encoding="utf-8")


def check_folder(study_dir: Path, study, rerun: Sequence[str] = (), source: str | os.PathLike = "FOLDER") -> None:
    """Refuse a folder whose existing runs were trained with other settings than the study's.

    Each run folder records the fingerprint of its settings (``settings.json``, :func:`fingerprint`);
    runs from before it are compared with the plan they were run under. ``rerun``: runs about to be
    trained again, not compared. ``source`` names the study in the hint.
    """
    if not (study_dir / STUDY_JSON).is_file():
        if study_dir.is_dir() and any(p.name != LOCK_FILE for p in study_dir.iterdir()):
            raise GrefelError(f"{study_dir} holds other files and no study: give an empty or new output folder")
        return
    old = {r.name: r.settings for r in load_plan(study_dir).runs}
    for r in study.runs:
        folder = run_folder(study_dir, r.name)
        if r.name in rerun or not trained_any(folder):  # nothing trained yet: it takes the new settings
            continue
        before = recorded_settings(folder)
        if before is None and r.name in old and (folder / STATUS).is_file():  # a run from before settings.json
            before = fingerprint(old[r.name])
        now = fingerprint(r.settings)
        if before is not None and before != now:
            raise GrefelError(
                f"run {r.name} in {study_dir} was trained with other settings ({setting_changes(before, now)}): "
                f"`grefel study run {source} --rerun {r.name}` trains it again with the new ones (its results are "
                "replaced), or give the study another output folder"
            )


def clear_reruns(study_dir: Path, study, rerun: Sequence[str]) -> list[str]:
    """Delete the folders of the runs in ``rerun`` (each a run of ``study``), so that they train again;
    a run some process is running is refused. Returns the names whose folders were deleted."""
    cleared = []
    for name in dict.fromkeys(rerun):
        study.run(plain_name(name, "run name"))  # a one-line error for a name the study lacks
        folder = run_folder(study_dir, name)
        if is_run_locked(folder):
            raise GrefelError(f"run {name} is running: wait for it, or stop it, before training it again")
        if folder.is_dir():
            shutil.rmtree(folder)
            cleared.append(name)
    return cleared


def ensure_label_sets(study) -> list[str]:
    """Make every label set the runs need that the dataset lacks (`grefel corrupt`); return those made."""

    if not study.label_sets:
        return []
    ds = PreparedDataset(resolve_dataset(study.dataset, study.data_root))
    have, made = set(ds.label_sets()), []
    for spec in study.label_sets.values():
        if spec.name in have:
            attrs = read_label_set_attrs(ds, spec.name)
            asked = (spec.noise, spec.mode, spec.seed)
            found = (attrs.get("noise"), attrs.get("mode"), attrs.get("seed"))
            same_noise = isinstance(found[0], (int, float)) and abs(found[0] - (spec.noise or 0)) < 1e-9
            if spec.noise is not None and (not same_noise or found[1:] != asked[1:]):
                raise DatasetError(
                    f"label set '{spec.name}' of {ds.name} has noise {found[0]} {found[1]} seed {found[2]}, "
                    f"the study asks for {spec.noise} {spec.mode} seed {spec.seed}: "
                    "name the study's label set differently"
                )
        elif spec.from_file:  # a published list (grefel corrupt --from-file)
            if not Path(spec.from_file).is_file():
                raise DatasetError(
                    f"label set '{spec.name}' is not in {ds.name} and its list {spec.from_file} is missing: put the "
                    f"file there, or import it first with `grefel corrupt --dataset {ds.name} --from-file FILE "
                    f"--name {spec.name}`"
                )
            made.append(import_noise_list(ds.root, spec.from_file, spec.name, noise=spec.noise).name)
        elif spec.noise is None:
            raise DatasetError(
                f"label set '{spec.name}' is not in {ds.name} and the study does not say how to make it: "
                f'add it under [label_sets] as {spec.name} = {{ noise = 0.2, mode = "symmetric", seed = 0 }}'
            )
        else:
            made.append(corrupt(ds.root, spec.noise, spec.mode, spec.seed, name=spec.name))
    return made


# -- the local pool -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    """Where one run of the local pool goes: its GPUs (None: the CPU), torch threads, processes."""

    cuda: str | None
    threads: int
    nproc: int = 1


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def local_slots(todo: int, parallel: int | None, gpus_per_run: int = 1, use_gpus: bool = True) -> list[Slot]:
    """One slot per concurrent run: a GPU (group) each, else ``parallel`` CPU runs sharing the cores."""

    cores = usable_cores()
    gpus = visible_gpus() if use_gpus else []
    g = max(1, gpus_per_run)
    if len(gpus) >= g:
        groups = [",".join(gpus[i : i + g]) for i in range(0, len(gpus) - g + 1, g)]
        n = max(1, min(len(groups), parallel or len(groups), todo))
        return [Slot(groups[k], max(1, cores // n), g) for k in range(n)]
    n = max(1, min(parallel or cores, todo))
    return [Slot(None, max(1, cores // n))] * n


class _Pool:
    """Runs jobs as processes on the slots; SIGTERMs them when the study is interrupted."""

    def __init__(self, study_dir: Path, slots: list[Slot]):
        self.study_dir, self.slots = study_dir, queue.Queue()
        for s in slots:
            self.slots.put(s)
        self.stop = threading.Event()
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()

    def run(self, name: str) -> int | None:
        if self.stop.is_set():
            return None
        slot = self.slots.get()
        try:
            return None if self.stop.is_set() else self._spawn(name, slot)
        finally:
            self.slots.put(slot)

    def _spawn(self, name: str, slot: Slot) -> int:
        folder = run_folder(self.study_dir, name)
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(slot.threads)}
        if slot.cuda is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.cuda
        cmd = [
            sys.executable,
            "-m",
            "grefel.study.job",
            str(self.study_dir.resolve()),
            name,
            "--threads",
            str(slot.threads),
            "--nproc",
            str(slot.nproc),
            "--parent",
            str(os.getpid()),
        ]
        with open(folder / LOG, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=self.study_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self.lock:
                self.procs[name] = proc
            rc = proc.wait()
            with self.lock:
                self.procs.pop(name, None)
        if rc not in (0, 143, -signal.SIGTERM) and read_status(folder).get("state") != "failed":
            why = f"killed by signal {signal.Signals(-rc).name}" if rc < 0 else f"ended with status {rc}"
            write_status(folder, state="failed", error=f"the run's process {why}", log=rel_run(name, LOG))
        return rc

    def terminate(self) -> None:
        self.stop.set()
        with self.lock:
            for p in self.procs.values():
                p.send_signal(signal.SIGTERM)


def _run_local(study_dir: Path, study, names: list[str], parallel: int | None, view) -> None:
    use_gpus = not all(r.settings.get("device") == "cpu" for r in study.runs)
    slots = local_slots(len(names), parallel, study.gpus_per_run, use_gpus and study.gpus_per_run > 0)
    s = slots[0]
    where = (
        f"GPU(s) {', '.join(x.cuda for x in slots)}" if s.cuda is not None else f"the CPU, {s.threads} thread(s) each"
    )
    view.console.print(f"{len(names)} run(s), {len(slots)} at a time on {where}")
    pool = _Pool(study_dir, slots)
    with ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="grefel-study") as ex:
        futures = [ex.submit(pool.run, n) for n in names]
        try:
            while not all(f.done() for f in futures):
                view.update()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            pool.terminate()
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        for f in futures:
            f.result()


# -- Slurm (submitit) -------------------------------------------------------------------------------------
def slurm_parameters(study, n_runs: int, parallel: int | None, cluster: str) -> dict:
    """submitit AutoExecutor parameters from the study's [slurm] table."""

    cfg = study.slurm
    if cluster == "slurm" and "time" not in cfg:
        raise GrefelError(
            'a Slurm study needs time in its [slurm] table (the limit of one job, e.g. "24:00:00"; '
            "longer runs are requeued and continue from last.pt)"
        )
    gpus = study.gpus_per_run
    tasks = max(1, gpus)
    params = {
        "name": f"grefel-{study.name}",
        "timeout_min": slurm_minutes(cfg.get("time", 60)),
        "gpus_per_node": gpus,
        "tasks_per_node": tasks,
        "cpus_per_task": max(1, int(cfg.get("cpus_per_run", 8 * tasks)) // tasks),
        "slurm_array_parallelism": parallel or n_runs,
        "slurm_signal_delay_s": 120,
    }
    if "mem_gb" in cfg:
        params["mem_gb"] = cfg["mem_gb"]
    for key in ("partition", "account", "qos", "constraint", "setup"):
        if key in cfg:
            params[f"slurm_{key}"] = cfg[key]
    if "additional" in cfg:
        params["slurm_additional_parameters"] = cfg["additional"]
    return params


def _run_slurm(study_dir: Path, study, names: list[str], parallel: int | None, cluster: str | None, view) -> None:
    import submitit  # lazy: only the Slurm executor

    cluster = cluster or "slurm"
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise GrefelError(
            "the Slurm executor needs Slurm's sbatch here: run on the cluster's login node, or run locally"
        )
    params = slurm_parameters(study, len(names), parallel, cluster)
    requeue = int(study.slurm.get("max_requeue", 20))
    ex = submitit.AutoExecutor(
        folder=study_dir / "slurm" / "%j", cluster=cluster, slurm_max_num_timeout=requeue, local_max_num_timeout=requeue
    )
    ex.update_parameters(**params)
    with _scheduler_notes(view.console) as notes:
        try:
            jobs = ex.map_array(StudyJob(str(study_dir.resolve()), params["cpus_per_task"]), names)
        except Exception as e:  # submitit raises what sbatch printed, inside its own error and traceback
            raise GrefelError(sbatch_refusal(e, study)) from None
        for name, job in zip(names, jobs):
            folder = run_folder(study_dir, name)
            if read_status(folder).get("state") not in ("running", "done"):
                write_status(folder, state="queued", job=str(job.job_id), log=rel_run(name, LOG), error=None)
        ids = f"{jobs[0].job_id}" + (f" .. {jobs[-1].job_id}" if len(jobs) > 1 else "")
        view.console.print(f"submitted {len(jobs)} run(s) to {cluster}: job(s) {ids}")
        follow = SlurmTasks(jobs, cluster == "slurm", study_dir, names)
        try:
            while not follow.all_done():
                view.update(requeued=follow.requeued())
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            view.console.print("the jobs keep running on the cluster: `grefel study status` follows them")
            raise
        for name, job in zip(names, jobs):
            _settle(study_dir, name, job, follow.final.get(str(job.job_id)))
        notes.notes += follow.notes


def sbatch_refusal(e: BaseException, study) -> str:
    """One line for sbatch refusing the job array: its own ``sbatch: error:`` line and the likely fix."""
    text = str(e)
    said = [line.strip() for line in text.splitlines() if "sbatch: error" in line]
    quote = said[-1] if said else (text.strip().splitlines() or [type(e).__name__])[-1].strip()[:200]
    low = quote.lower()
    if "gres" in low or "gpu" in low:
        fix = (
            f"the partition has no GPUs for gpus_per_run = {study.gpus_per_run}: set gpus_per_run = 0 in [study] "
            "for a CPU partition, or name a GPU partition in [slurm]"
        )
    elif "partition" in low:
        fix = "name a partition that exists in [slurm] (`sinfo` lists them)"
    elif "time limit" in low:
        fix = "lower time in [slurm] to the partition's limit (`sinfo -o '%P %l'`)"
    elif "memory" in low or "mem" in low:
        fix = "lower mem_gb in [slurm]"
    else:
        fix = "check the [slurm] table of the study file (docs/study.md)"
    return f"sbatch refused the study's job array ({quote}): {fix}"


class SlurmTasks:
    """The state of each task of a study's job array, from ``squeue`` (which works where accounting,
    and with it submitit's ``sacct``, is off); without Slurm (submitit's local executor) from the
    task's result file. A task is done once it left the queue or wrote its result; a task that
    ran and is waiting in the queue again was requeued (preempted, or its time limit came)."""

    TERMINAL = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")

    def __init__(self, jobs: list, squeue: bool, study_dir: Path, names: list[str]):
        self.jobs, self.squeue = jobs, squeue and shutil.which("squeue") is not None
        self.folders = [run_folder(study_dir, n) for n in names]
        self.names = names
        self.stops = {n: read_status(f).get("stopped") for n, f in zip(names, self.folders)}  # before this session
        self.seen: set[str] = set()
        self.states: dict[str, str] = {}
        self.fresh = False  # the last squeue answered: only then is a task missing from it done
        self.final: dict[str, str] = {}  # job id -> the state it ended in, where squeue still showed it
        self.notes: list[str] = []

    def _poll(self) -> None:
        self.fresh = False
        arrays = sorted({str(j.job_id).split("_")[0] for j in self.jobs})
        cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", "--jobs", ",".join(arrays)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.notes.append(f"squeue: {e}")
            return
        if out.returncode != 0:
            self.notes.append(f"squeue: {(out.stderr.strip().splitlines() or ['failed'])[-1]}")
            return
        self.states = dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)
        self.fresh = True

    def done(self, job) -> bool:
        jid = str(job.job_id)
        if Path(job.paths.result_pickle).exists():
            return True
        if not self.squeue:
            return job.done()
        state = self.states.get(jid)
        if state in self.TERMINAL:
            self.final[jid] = state
        return (state is None and self.fresh) or state in self.TERMINAL

    def all_done(self) -> bool:
        if self.squeue:
            self._poll()
        return all(self.done(j) for j in self.jobs)

    def requeued(self) -> set[str]:
        """Runs requeued during this session: stopped by the scheduler's signal (their status records it)
        and then waiting in the queue again, or already running again."""
        for name, job, folder in zip(self.names, self.jobs, self.folders):
            status = read_status(folder)
            stopped = status.get("stopped") if status.get("signal") else None
            if stopped and stopped != self.stops[name] and not self.done(job):
                self.seen.add(name)
        return set(self.seen)


@contextlib.contextmanager
def _scheduler_notes(console):
    """While the block runs, submitit's warnings (sacct unavailable where accounting is off, one per
    status poll) are counted instead of printed; one line sums them up at the end."""
    import logging

    box = types.SimpleNamespace(notes=[])

    class Count(logging.Handler):
        def emit(self, record):
            box.notes.append(record.getMessage())

    logger = logging.getLogger("submitit")
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [Count(logging.WARNING)], False
    try:
        yield box
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        if box.notes:
            first = " ".join(box.notes[0].split())[:160]
            sacct = " (sacct: accounting is off here; squeue followed the jobs)" if "sacct" in first else ""
            console.print(f"scheduler: {len(box.notes)} warning(s){sacct}, e.g. {first}", highlight=False)


def _settle(study_dir: Path, name: str, job, final: str | None = None) -> None:
    """Mark a Slurm run failed when its job ended without the run finishing (killed, cancelled ...)."""
    folder = run_folder(study_dir, name)
    if read_status(folder).get("state") in ("done", "failed"):
        return
    if Path(job.paths.result_pickle).exists():
        try:
            job.result()
            return
        except Exception as e:  # submitit's FailedJobError: the job itself died
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    else:
        first = f"ended {final or 'without a result'} before the run finished"
    err = Path(job.paths.stderr)
    log = os.path.relpath(err, study_dir) if err.is_file() else rel_run(name, LOG)
    write_status(folder, state="failed", error=f"Slurm job {job.job_id}: {first}", log=log)


# -- progress ---------------------------------------------------------------------------------------------
class _View:
    """One rich progress view for the whole study: epochs over all runs, one line per running run."""

    def __init__(self, study_dir: Path, study, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.study_dir, self.study, self.console = study_dir, study, console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
        )
        total = sum(planned_epochs(r.settings) for r in study.runs)
        self.all = self.progress.add_task(f"study {study.name} (epochs)", total=total, info="")
        self.rows: dict[str, int] = {}
        self.requeued: set[str] = set()

    def update(self, requeued: set[str] = frozenset()) -> list:
        """Redraw from the study folder; ``requeued``: runs the scheduler holds in its queue again."""
        states = study_states(self.study_dir, self.study)
        for s in states:
            if s.name in requeued and s.state in ("stopped", "queued", "pending"):
                s.state = "requeued"
        if requeued - self.requeued:
            self.console.print(
                f"requeued by the scheduler, continuing from last.pt: {', '.join(sorted(requeued - self.requeued))}"
            )
        self.requeued |= requeued
        counts = {k: sum(s.state == k for s in states) for k in ("done", "running", "requeued", "failed")}
        pending = len(states) - sum(counts.values())
        info = f"{counts['done']} done, {counts['running']} running, {counts['failed']} failed, {pending} to go"
        if counts["requeued"]:
            info = info.replace(" failed,", f" failed, {counts['requeued']} requeued,")
        self.progress.update(self.all, completed=sum(min(s.epochs_done, s.epochs) for s in states), info=info)
        for s in states:
            if s.state == "running" and s.name not in self.rows:
                self.rows[s.name] = self.progress.add_task(f"  {s.name}", total=s.epochs, info="")
            if s.name in self.rows:
                self.progress.update(self.rows[s.name], completed=s.epochs_done, info=s.state)
                if s.state != "running":
                    self.progress.remove_task(self.rows.pop(s.name))
        return states

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.update()
        self.progress.stop()


# -- the entry point -------------------------------------------------------------------------------------
def run_study(
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    executor: str = "local",
    parallel: int | None = None,
    *,
    cluster: str | None = None,
    rerun: Sequence[str] = (),
    console=None,
) -> dict:
    """Run a study file (or continue a study folder); return ``{"folder", "summary", "summary_path", "failed"}``.

    ``out``: the study folder (default: beside the file, named after the study). ``parallel``: runs
    at a time (default: one per GPU, else as many as cores). ``cluster``: submitit's cluster for the
    Slurm executor ("local" runs it on this machine). ``rerun``: runs to train again from scratch
    (their folders are deleted first), e.g. after a setting of theirs changed.
    """

    if executor not in EXECUTORS:
        raise GrefelError(f"unknown executor '{executor}': use {' or '.join(EXECUTORS)}")
    if parallel is not None and parallel < 1:
        raise GrefelError(f"parallel must be at least 1, got {parallel}")
    console = console or make_console()
    study, study_dir, text = open_study(source, out)
    for name in rerun:
        study.run(plain_name(name, "run name"))
    check_folder(study_dir, study, rerun, source)
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GrefelError(
            f"cannot create the study folder {study_dir} ({e.strerror}): give a writable folder"
        ) from None
    with study_lock(study_dir):
        cleared = clear_reruns(study_dir, study, rerun)
        if cleared:
            console.print(f"removed the folders of {', '.join(cleared)} to train them again")
        save_plan(study_dir, study, text)
        made = ensure_label_sets(study)
        if made:
            console.print(f"made label set(s) {', '.join(made)} with grefel corrupt")
        states = study_states(study_dir, study)
        todo = [s.name for s in states if s.state not in ("done", "running")]
        busy = [s.name for s in states if s.state == "running"]
        console.print(
            f"study {study.name} in {study_dir}: {len(states)} runs, {len(states) - len(todo) - len(busy)} "
            f"done, {len(todo)} to run" + (f", {len(busy)} run elsewhere" if busy else "")
        )
        if todo:
            with _View(study_dir, study, console) as view:
                if executor == "local":
                    _run_local(study_dir, study, todo, parallel, view)
                else:
                    _run_slurm(study_dir, study, todo, parallel, cluster, view)
        summary, path = write_summary(study_dir)
    print_status(study_states(study_dir, study), console, title=f"study {study.name}")
    print_summary(summary, console)
    console.print(f"[bold green]summary:[/bold green] {path}")
    return {"folder": study_dir, "summary": summary, "summary_path": path, "failed": summary["failed"]}
