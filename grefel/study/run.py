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

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from grefel.core.console import make_console
from grefel.core.devices import usable_cores
from grefel.core.errors import DatasetError, GrefelError
from grefel.core.paths import resolve_dataset
from grefel.data.corrupt import corrupt, read_label_set_attrs
from grefel.data.noise_lists import import_noise_list
from grefel.data.shards import PreparedDataset
from grefel.study.folder import (
    LOCK_FILE,
    LOG,
    STUDY_JSON,
    load_plan,
    planned_epochs,
    read_status,
    rel_run,
    run_folder,
    save_plan,
    study_lock,
    study_states,
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


def check_folder(study_dir: Path, study) -> None:
    """Refuse a folder whose existing runs were planned with other settings than the study's."""
    if not (study_dir / STUDY_JSON).is_file():
        if study_dir.is_dir() and any(p.name != LOCK_FILE for p in study_dir.iterdir()):
            raise GrefelError(f"{study_dir} holds other files and no study: give an empty or new output folder")
        return
    old = {r.name: r.settings for r in load_plan(study_dir).runs}
    for r in study.runs:
        before = old.get(r.name)
        if before is not None and before != r.settings and run_folder(study_dir, r.name).is_dir():
            changed = sorted(k for k in set(before) | set(r.settings) if before.get(k) != r.settings.get(k))
            show = ", ".join(f"{k} {before.get(k)} -> {r.settings.get(k)}" for k in changed[:3])
            raise GrefelError(
                f"run {r.name} in {study_dir} was trained with other settings ({show}): "
                "give the study another output folder, or delete that run's folder to train it again"
            )


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
    import submitit

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
    jobs = ex.map_array(StudyJob(str(study_dir.resolve()), params["cpus_per_task"]), names)
    for name, job in zip(names, jobs):
        folder = run_folder(study_dir, name)
        if read_status(folder).get("state") not in ("running", "done"):
            write_status(folder, state="queued", job=str(job.job_id), log=rel_run(name, LOG), error=None)
    ids = f"{jobs[0].job_id}" + (f" .. {jobs[-1].job_id}" if len(jobs) > 1 else "")
    view.console.print(f"submitted {len(jobs)} run(s) to {cluster}: job(s) {ids}")
    try:
        while not all(j.done() for j in jobs):
            view.update()
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        view.console.print("the jobs keep running on the cluster: `grefel study status` follows them")
        raise
    for name, job in zip(names, jobs):
        _settle(study_dir, name, job)


def _settle(study_dir: Path, name: str, job) -> None:
    """Mark a Slurm run failed when its job ended without the run finishing (killed, cancelled ...)."""
    folder = run_folder(study_dir, name)
    try:
        job.result()
    except Exception as e:  # submitit's UncompletedJobError / FailedJobError: the job itself died
        if read_status(folder).get("state") not in ("done", "failed"):
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
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

    def update(self) -> list:
        states = study_states(self.study_dir, self.study)
        counts = {k: sum(s.state == k for s in states) for k in ("done", "running", "failed")}
        pending = len(states) - sum(counts.values())
        info = f"{counts['done']} done, {counts['running']} running, {counts['failed']} failed, {pending} to go"
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
    console=None,
) -> dict:
    """Run a study file (or continue a study folder); return ``{"folder", "summary", "summary_path", "failed"}``.

    ``out``: the study folder (default: beside the file, named after the study). ``parallel``: runs
    at a time (default: one per GPU, else as many as cores). ``cluster``: submitit's cluster for the
    Slurm executor ("local" runs it on this machine).
    """

    if executor not in EXECUTORS:
        raise GrefelError(f"unknown executor '{executor}': use {' or '.join(EXECUTORS)}")
    if parallel is not None and parallel < 1:
        raise GrefelError(f"parallel must be at least 1, got {parallel}")
    console = console or make_console()
    study, study_dir, text = open_study(source, out)
    check_folder(study_dir, study)
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GrefelError(
            f"cannot create the study folder {study_dir} ({e.strerror}): give a writable folder"
        ) from None
    with study_lock(study_dir):
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
