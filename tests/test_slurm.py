"""`grefel study run --executor slurm` on a real single-node Slurm: Debian's slurm-wlm and munge,
started by the ``slurm`` fixture in a temporary folder (its own ports, key and spool; accounting off,
as on many small clusters). Skipped where it cannot start: not root, or the packages missing
(`apt-get install slurm-wlm munge`; .ci/run installs them).

- sbatch refusing the job array (a GPU asked for on a CPU partition) is one line quoting sbatch;
- a run requeued mid-training (`scontrol requeue`, what preemption does) is shown as requeued, never
  failed; `study run` follows it to done, with no epoch lost or repeated;
- the training process and its loader worker take Slurm's SIGTERM as "save and stop", not a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_prepared

from grefel.study.folder import epochs_done, read_status, run_folder

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(d: Path, host: str) -> str:
    cpus = os.cpu_count() or 1
    return f"""ClusterName=grefeltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={d}/munge/munge.sock
CredType=cred/munge
StateSaveLocation={d}/ctld
SlurmdSpoolDir={d}/d
SlurmctldPidFile={d}/ctld.pid
SlurmdPidFile={d}/d.pid
SlurmctldLogFile={d}/ctld.log
SlurmdLogFile={d}/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=15
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _stop(d: Path) -> None:
    for pid_file in ("d.pid", "ctld.pid", "munge/munged.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((d / pid_file).read_text()), signal.SIGTERM)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of a one-node cluster running for this module (CPUs only, no accounting)."""
    if os.geteuid() != 0:
        pytest.skip("a Slurm cluster of its own needs root (slurmd starts jobs as their user)")
    missing = [b for b in DAEMONS + CLIENTS if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "ctld", "d"):
        (d / sub).mkdir()
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (d / "munge").chmod(0o711)
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(_conf(d, host))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    m = d / "munge"
    started = [
        ["munged", "-f", f"--socket={m}/munge.sock", f"--key-file={key}", f"--pid-file={m}/munged.pid"]
        + [f"--log-file={d}/munged.log", f"--seed-file={m}/seed"],
        ["slurmctld", "-f", str(conf)],
        ["slurmd", "-f", str(conf), "-N", host],
    ]
    try:
        for cmd in started:
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=30)
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=30)
            if out.stdout.strip() in ("idle", "mix", "alloc"):
                break
            time.sleep(1)
        else:
            logs = " | ".join((d / f).read_text()[-300:] for f in ("ctld.log", "d.log") if (d / f).is_file())
            pytest.skip(f"the test cluster did not come up: {logs}")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        _stop(d)
        pytest.skip(f"the test cluster could not start ({e}): {getattr(e, 'stderr', b'')!r}")
    yield str(conf)
    subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=30)
    _stop(d)


TRAIN = """
[study]
dataset = "{dataset}"
seeds = 2
gpus_per_run = {gpus}
[train]
preset = "tiny"
epochs = {epochs}
per_class = 8
batch_size = 4
workers = 1
device = "cpu"
crop = 28
val_every = 1
[slurm]
time = 20
cpus_per_run = 1
"""


@pytest.fixture
def dataset(tmp_path):
    split = {"train": 0.5, "val": 0.25, "test": 0.25}
    return make_prepared(tmp_path / "data" / "t", n_per_class=12, num_classes=3, split=split, image_size=32)


def _scontrol(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run(["scontrol", *args], env=env, capture_output=True, text=True, timeout=60)


def _wait(what: str, test, timeout: float, driver=None):
    deadline = time.monotonic() + timeout
    while not (value := test()):
        if driver is not None and driver.poll() is not None:
            raise AssertionError(f"study run ended while waiting for {what}: {driver.stdout.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def test_sbatch_refusing_a_gpu_on_a_cpu_partition_is_one_line(slurm, tmp_path, dataset, monkeypatch):
    from typer.testing import CliRunner

    from grefel_cli.main import app

    monkeypatch.setenv("SLURM_CONF", slurm)
    path = tmp_path / "s.toml"
    path.write_text(TRAIN.format(dataset=dataset, gpus=1, epochs=1))
    r = CliRunner().invoke(app, ["study", "run", str(path), "--executor", "slurm"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    (line,) = [x for x in r.output.splitlines() if x.startswith("Error: ")]
    assert "sbatch refused the study's job array (sbatch: error: Invalid generic resource" in line
    assert "set gpus_per_run = 0 in [study]" in line


@pytest.mark.slow
def test_a_run_requeued_mid_training_is_followed_to_done_with_no_epoch_lost_or_repeated(slurm, tmp_path, dataset):
    epochs = 8
    env = {**os.environ, "SLURM_CONF": slurm, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    path = tmp_path / "s.toml"
    path.write_text(TRAIN.format(dataset=dataset, gpus=0, epochs=epochs))
    cmd = [sys.executable, "-m", "grefel_cli.main", "study", "run", str(path), "--executor", "slurm"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = tmp_path / "s"
    run = run_folder(folder, "s0")
    try:
        _wait("the first epoch of s0", lambda: epochs_done(run)[0] >= 1, 600, driver)
        job = read_status(run)["job"]
        assert epochs_done(run)[0] < epochs, "the run finished before the requeue: give it more epochs"
        r = _scontrol("requeue", job, env=env)
        assert r.returncode == 0, r.stderr
        pending = lambda: "JobState=PENDING" in _scontrol("show", "job", job, env=env).stdout  # noqa: E731
        _wait(f"{job} pending again", pending, 120, driver)
        r = _scontrol("update", f"JobId={job}", "StartTime=now", env=env)  # Slurm holds it two minutes otherwise
        assert r.returncode == 0, r.stderr
        out, _ = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    assert "requeued by the scheduler, continuing from last.pt: s0" in out, out
    assert "failed" not in out.replace("0 failed", ""), out
    for name, attempts in (("s0", 2), ("s1", 1)):
        status = read_status(run_folder(folder, name))
        assert status["state"] == "done" and status["attempts"] == attempts, (name, status)
        rows = [json.loads(line) for line in (run_folder(folder, name) / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, epochs + 1)), name  # no epoch lost or repeated
    log = (run / "run.log").read_text()
    assert "stopped by SIGTERM" in log and "grefel train --resume runs/s0" in log, log[-2000:]
    assert "DataLoader worker" not in log and "Traceback" not in log, log[-2000:]


def test_scheduler_warnings_are_summed_up_in_one_line(capsys):
    import logging

    from grefel.core.console import make_console
    from grefel.study.run import _scheduler_notes

    console = make_console()
    with _scheduler_notes(console):
        for k in range(5):
            logging.getLogger("submitit").warning(f"Call #{k} - Bypassing sacct error Command '['sacct']' returned 1")
    lines = [x for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("scheduler: 5 warning(s) (sacct: accounting is off here"), lines


@pytest.mark.slow
def test_sigterm_to_the_whole_training_job_saves_and_stops_for_a_resume(tmp_path):
    """What Slurm does on preemption, without Slurm: SIGTERM to every process of the job (the
    training process and its loader worker); it stops between steps with last.pt kept, status 143,
    and the resume ends with every epoch once."""
    from grefel.training.checkpoint import load_checkpoint

    epochs = 8
    make_prepared(tmp_path / "data" / "toy", n_per_class=12, num_classes=3, split={"train": 0.75, "val": 0.25})
    env = {**os.environ, "GREFEL_DATA_ROOT": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    args = ["--dataset", "toy", "--preset", "tiny", "--epochs", str(epochs), "--per-class", "12", "--batch-size", "4"]
    args += ["--workers", "1", "--run-dir", str(tmp_path / "runs"), "--name", "r", "-q"]
    cmd = [sys.executable, "-m", "grefel_cli.main", "train", *args]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run = tmp_path / "runs" / "r"
    try:
        _wait("epoch 1", lambda: epochs_done(run)[0] >= 1, 600)
        assert proc.poll() is None, "the run finished before the signal: give it more epochs"
        os.killpg(proc.pid, signal.SIGTERM)  # every process of the job, the loader worker included
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and f"continue with `grefel train --resume {run}`" in err, err
    assert "DataLoader worker" not in err and "Traceback" not in err, err
    kept = load_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= kept < epochs
    done = subprocess.run(
        [sys.executable, "-m", "grefel_cli.main", "train", "--resume", str(run), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
