"""One run of a study: training (fresh, or resumed from its last.pt), then evaluation of its best
checkpoint on the clean test split, then its status.

The run calls the library: :func:`grefel.training.loop.train` with the run's
:class:`~grefel.training.config.TrainConfig` (:func:`train_config`), then
:func:`grefel.evaluation.evaluate.evaluate`, the functions `grefel train` and `grefel evaluate`
run; :func:`train_command` and :func:`evaluate_command` are the equivalent command lines that
`grefel study plan` prints. A run that needs several GPUs on one machine trains under
``torch.distributed.run``, each rank calling :func:`train` on the same configuration. Everything
runs inside the study folder, so every path is relative to it.

Two ways in, one function (:func:`run_job`):

* the local pool starts ``python -m grefel.study.job STUDY_DIR RUN`` per run, its output going to
  ``runs/<run>/run.log``;
* a Slurm job array calls :class:`StudyJob` (submitit); on preemption or timeout submitit requeues
  the same call, which continues from ``last.pt``.

The run's lock is held throughout, so the same run never trains twice at once (a second job for
it, from a rerun or a requeue, finds the lock taken and leaves). SIGTERM and SIGINT mark the run
*stopped* (it resumes next time), any error marks it *failed* with the error line; the exit status
says which (0 done or taken by another process, 1 failed, 143 stopped).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import submitit

from grefel.core.errors import GrefelError, error_line
from grefel.core.io import LockHeld
from grefel.core.stop import EXIT_STOPPED, STOP_SIGNALS, StopRequested
from grefel.evaluation.evaluate import evaluate
from grefel.study.folder import (
    LOG,
    PREDICTIONS,
    epochs_done,
    fingerprint,
    load_plan,
    now,
    planned_epochs,
    read_status,
    record_settings,
    recorded_settings,
    rel_run,
    run_folder,
    run_lock,
    setting_changes,
    trained_any,
    write_status,
)
from grefel.study.spec import run_argv
from grefel.study.stats import run_metrics
from grefel.training.config import TrainConfig, resumable_settings
from grefel.training.loop import train

EXIT_FAILED = 1  # EXIT_STOPPED (143, grefel.core.stop): stopped, to be continued


# -- the commands ------------------------------------------------------------------------------------
def train_command(run) -> list[str]:
    """``grefel train`` arguments of a fresh run (relative to the study folder)."""
    return ["train", *run_argv({**run.settings, "run_dir": "runs", "name": run.name})]


def resume_command(run) -> list[str]:
    """``grefel train --resume`` arguments: the run's stored settings, this study's runtime ones."""
    keep = {k: run.settings[k] for k in resumable_settings() if k in run.settings and k not in ("resume", "epochs")}
    return ["train", "--resume", rel_run(run.name), "--epochs", str(planned_epochs(run.settings)), *run_argv(keep)]


def evaluate_command(run) -> list[str]:
    """``grefel evaluate`` of the run's best checkpoint on the clean test split."""
    args = [
        "evaluate",
        "--ckpt",
        rel_run(run.name, "best.pt"),
        "--split",
        "test",
        "--out",
        rel_run(run.name, PREDICTIONS),
    ]
    device = run.settings.get("device", "auto")
    if device != "auto":
        args += ["--device", device]
    if run.settings.get("data_root"):
        args += ["--data-root", run.settings["data_root"]]
    return args


def train_config(run, folder: Path) -> TrainConfig:
    """The run's training configuration: a fresh run, or a resume of its last.pt (its stored
    settings, with this study's runtime settings and epochs)."""
    if (folder / "last.pt").is_file():
        keep = {k: run.settings[k] for k in resumable_settings() if k in run.settings and k not in ("resume", "epochs")}
        return TrainConfig(resume=rel_run(run.name), epochs=planned_epochs(run.settings), **keep)
    given = {k: v for k, v in run.settings.items() if v is not None and not (k == "labels" and v == "clean")}
    return TrainConfig(**given, run_dir="runs", name=run.name)


def _train(run, folder: Path, nproc: int) -> None:
    """Train the run here, or under torchrun on ``nproc`` GPUs; GrefelError with the reason when it fails."""
    args = resume_command(run) if (folder / "last.pt").is_file() else train_command(run)
    print(f"training: the equivalent of `grefel {' '.join(args)}`", flush=True)
    if nproc <= 1:
        train(train_config(run, folder))
        return
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.Popen([*launcher, "-m", "grefel.study.job", ".", run.name, "--train-only"])
    try:
        rc = proc.wait()
    except BaseException:  # stopped: torchrun passes SIGTERM on to its workers, which save and stop
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    if rc != 0:
        raise GrefelError(_last_error(Path(rel_run(run.name, LOG))) or f"training exited with status {rc}")


def _evaluate(run) -> None:
    print(f"evaluating: the equivalent of `grefel {' '.join(evaluate_command(run))}`", flush=True)
    device = run.settings.get("device", "auto")
    evaluate(
        rel_run(run.name, "best.pt"),
        dataset=run.settings.get("dataset"),  # the study's own, whatever the checkpoint recorded
        split="test",
        out=rel_run(run.name, PREDICTIONS),
        device=None if device == "auto" else device,
        data_root=run.settings.get("data_root"),
        show_progress=False,
    )


def _trained(folder: Path, epochs: int) -> bool:
    return (folder / "best.pt").is_file() and (folder / "last.pt").is_file() and epochs_done(folder)[0] >= epochs


def _last_error(log: Path) -> str | None:
    """The last ``Error: ...`` line the CLI printed into the run's log."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((line[7:].strip() for line in reversed(lines) if line.startswith("Error: ")), None)


# -- the job -------------------------------------------------------------------------------------------
def run_job(
    study_dir: str | os.PathLike, name: str, threads: int | None = None, nproc: int = 1, job: str | None = None
) -> dict:
    """Train, evaluate and record run ``name`` of the study in ``study_dir``; return its status.

    ``threads``: torch threads (the local pool's share of the cores); ``nproc``: GPUs of this run
    on this machine (torchrun); ``job``: the Slurm (submitit) job id. Under a multi-task Slurm
    job every task trains; rank 0 alone holds the lock, evaluates and writes the status.
    """
    study_dir = Path(study_dir).resolve()
    run = load_plan(study_dir).run(name)
    os.chdir(study_dir)
    folder, epochs = run_folder(Path("."), name), planned_epochs(run.settings)
    if threads:
        import torch

        torch.set_num_threads(threads)
    status = read_status(folder)
    if status.get("state") == "done" and Path(status.get("predictions", "")).is_file():
        return status
    if int(os.environ.get("RANK", "0")) > 0:  # another task of a multi-GPU Slurm run: train only
        if not _trained(folder, epochs):
            _train(run, folder, 1)
        return {"state": "trained"}
    try:
        with run_lock(folder):
            return _locked_job(run, folder, epochs, nproc, status, job)
    except LockHeld:
        print(f"run {name} is being run by another process: leaving it to that one", flush=True)
        return {"state": "running"}


def _locked_job(run, folder: Path, epochs: int, nproc: int, status: dict, job: str | None) -> dict:

    log = rel_run(run.name, LOG)
    recorded = recorded_settings(folder)
    if recorded is None or not trained_any(folder):
        record_settings(folder, run.settings)
    elif recorded != fingerprint(run.settings):  # `study run` refuses this first; a job started by hand does not
        return _failed(folder, f"trained with other settings ({setting_changes(recorded, fingerprint(run.settings))})")
    write_status(
        folder,
        state="running",
        log=log,
        error=None,
        host=socket.gethostname(),
        pid=os.getpid(),
        started=now(),
        attempts=int(status.get("attempts", 0)) + 1,
        job=job,
    )
    t0 = time.perf_counter()
    try:
        if not _trained(folder, epochs):
            _train(run, folder, nproc)
            if not _trained(folder, epochs):
                return _failed(folder, f"training stopped at epoch {epochs_done(folder)[0]} of {epochs}")
        t1 = time.perf_counter()
        _evaluate(run)
        metrics = run_metrics(Path(rel_run(run.name, PREDICTIONS)))
        t2 = time.perf_counter()
        return write_status(
            folder,
            state="done",
            metrics=metrics,
            predictions=rel_run(run.name, PREDICTIONS),
            train_s=round(t1 - t0, 2),
            evaluate_s=round(t2 - t1, 2),
            finished=now(),
        )
    except StopRequested as e:  # SIGTERM / SIGUSR2 (training saves first), SIGINT: continued next time
        write_status(folder, state="requeued" if job else "stopped", stopped=now(), signal=e.signal_name)
        then = "Slurm runs it again" if job else "the next study run continues it"
        print(f"{e.message}; {then} from its last checkpoint", file=sys.stderr, flush=True)
        raise
    except GrefelError as e:  # bad input or environment: its one line says what to do
        return _failed(folder, error_line(e))
    except Exception as e:  # a bug, not bad input: keep the traceback in the log
        traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return _failed(folder, f"{type(e).__name__}: {first}"[:300])


def _failed(folder: Path, error: str) -> dict:
    print(f"Error: {error}", file=sys.stderr, flush=True)
    return write_status(folder, state="failed", error=error, finished=now())


# -- local pool entry ------------------------------------------------------------------------------
def _stop(signum, frame):
    raise StopRequested(signum)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM when the process that started this one dies (a killed study run
    takes its runs with it; they resume next time). Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:
        raise StopRequested(signal.SIGTERM)


def job_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grefel.study.job", description="Run one run of a study.")
    p.add_argument("study_dir")
    p.add_argument("name")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--parent", type=int, default=0)
    p.add_argument("--train-only", action="store_true", help="train only: one rank of a run under torchrun")
    a = p.parse_args(argv)
    if a.train_only:
        return _train_only(a.study_dir, a.name)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        _die_with_parent(a.parent)
        status = run_job(a.study_dir, a.name, a.threads, a.nproc)
    except StopRequested:  # _locked_job said so in the log
        return EXIT_STOPPED
    return EXIT_FAILED if status.get("state") == "failed" else 0


def _train_only(study_dir: str, name: str) -> int:
    """One torchrun rank of a multi-GPU run (torchrun stops it with SIGTERM; last.pt stays whole)."""
    os.chdir(study_dir)
    run = load_plan(Path(".")).run(name)
    try:
        train(train_config(run, run_folder(Path("."), name)))
    except GrefelError as e:
        print(f"Error: {error_line(e)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return 0


# -- Slurm entry (submitit) --------------------------------------------------------------------------
class StudyJob(submitit.helpers.Checkpointable):
    """The callable a study's Slurm job array runs: ``StudyJob(study_dir)(run_name)``.

    Checkpointable: on preemption or timeout submitit requeues the same call, and :func:`run_job`
    continues the run from its last.pt. With several tasks (a run on several GPUs) each task gets
    torch.distributed's environment from submitit and trains as one rank.

    SIGTERM (Slurm preempting or requeueing the job) and SIGUSR2 (its time limit is near) stop the run
    to be continued (:mod:`grefel.core.stop`: training saves, the status says requeued); the process
    then exits with status 143 and no result, so the job is not over: Slurm requeues it after a
    SIGTERM, and after SIGUSR2 submitit's own handler requeues it.
    """

    def __init__(self, study_dir: str, threads: int | None = None):
        self.study_dir, self.threads = str(study_dir), threads

    def __call__(self, name: str) -> dict:
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        folder = run_folder(Path(self.study_dir), name)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / (LOG if env.global_rank == 0 else f"run.rank{env.global_rank}.log")
        usr2 = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint, `scontrol requeue`, exit
        for s in STOP_SIGNALS:
            signal.signal(s, _stop)
        signal.signal(signal.SIGCONT, signal.SIG_DFL)  # Slurm's SIGCONT before a SIGTERM: nothing to log
        try:
            with _output_to(log):
                return run_job(self.study_dir, name, self.threads, job=str(env.job_id))
        except StopRequested as e:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the requeue's own SIGTERM, on the way out
            if e.signum == signal.SIGUSR2 and callable(usr2):
                usr2(e.signum, None)  # the time limit is near: submitit requeues the job, then exits
            raise SystemExit(EXIT_STOPPED) from None  # no result: the job is not over, Slurm runs it again


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path`` (appended)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


if __name__ == "__main__":
    sys.exit(job_main())
