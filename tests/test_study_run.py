"""`grefel study run|status`: real tiny-preset runs on a small generated dataset.

A failing run is marked failed with its log while the others finish; a rerun continues only the
unfinished; a study killed mid-run resumes from last.pt; a second `study run` on a busy folder
refuses; a moved folder still reports; the Slurm path runs on submitit's local executor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import make_prepared
from typer.testing import CliRunner

from grefel.study.folder import epochs_done, is_run_locked, read_status, run_folder, study_lock, study_states
from grefel_cli.main import app

TRAIN = """
[train]
preset = "tiny"
epochs = {epochs}
per_class = {per_class}
batch_size = 4
workers = 0
device = "cpu"
"""


@pytest.fixture
def dataset(tmp_path):
    return make_prepared(
        tmp_path / "data" / "toy",
        n_per_class=8,
        num_classes=3,
        n_groups=2,
        split={"train": 0.5, "val": 0.25, "test": 0.25},
    )


def _study(tmp_path, dataset, body: str, epochs: int = 1, per_class: int = 4, seeds: int = 1):
    path = tmp_path / "s.toml"
    head = f'[study]\ndataset = "{dataset}"\nseeds = {seeds}\n'
    path.write_text(head + TRAIN.format(epochs=epochs, per_class=per_class) + body)
    return path


def _run(*args):
    return CliRunner().invoke(app, ["study", "run", *map(str, args)])


@pytest.mark.slow
def test_failed_run_is_marked_others_finish_rerun_continues_and_a_moved_folder_reports(tmp_path, dataset):
    grid = '\n[grid]\nlabels = ["sym20"]\nsetup = [{ name = "ok" }, { name = "broken", split_set = "nosuch" }]\n'
    path = _study(tmp_path, dataset, grid)
    res = _run(path, "--parallel", "2")
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    folder = tmp_path / "s"
    ok, broken = run_folder(folder, "sym20-ok-s0"), run_folder(folder, "sym20-broken-s0")
    status = read_status(broken)
    assert status["state"] == "failed" and "split set 'nosuch' not found" in status["error"]
    assert status["log"] == "runs/sym20-broken-s0/run.log" and "runs/sym20-broken-s0/run.log" in res.output
    assert "Error: split set 'nosuch'" in (broken / "run.log").read_text()
    assert read_status(ok)["state"] == "done" and (ok / "predictions" / "best-test.parquet").is_file()
    assert (dataset / "labels" / "sym20.h5").is_file()  # made with grefel corrupt for the study
    summary = json.loads((folder / "summary.json").read_text())
    assert [f["name"] for f in summary["failed"]] == ["sym20-broken-s0"]
    assert summary["runs"][0]["metrics"]["n"] == 6  # the clean test split

    stamp = (ok / "best.pt").stat().st_mtime_ns
    res = _run(folder)  # the study folder itself: only the unfinished run goes again
    assert res.exit_code == 1, res.output
    assert (ok / "best.pt").stat().st_mtime_ns == stamp and read_status(ok)["attempts"] == 1
    assert read_status(broken)["attempts"] == 2

    moved = tmp_path / "elsewhere" / "s-copy"
    shutil.move(folder, moved)
    res = CliRunner().invoke(app, ["study", "status", str(moved)])
    assert res.exit_code == 0 and "done" in res.output and "failed" in res.output, res.output
    res = CliRunner().invoke(app, ["study", "summary", str(moved)])
    assert res.exit_code == 0 and "sym20-ok" in res.output, res.output
    assert str(tmp_path / "s") not in (moved / "summary.json").read_text().replace(str(moved), "")


@pytest.mark.slow
def test_killed_study_resumes_and_a_second_study_run_refuses(tmp_path, dataset):
    """The run is paused (SIGSTOP) once it has a checkpoint, so the kill lands mid-run on any machine."""
    epochs = 6
    path = _study(tmp_path, dataset, "", epochs=epochs)
    folder, run = tmp_path / "s", run_folder(tmp_path / "s", "s0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "grefel_cli.main", "study", "run", str(path)]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    job = None
    try:
        deadline = time.monotonic() + 600
        while epochs_done(run)[0] < 1:  # metrics.jsonl is written after last.pt
            assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read().decode()
            time.sleep(0.05)
        job = read_status(run)["pid"]
        os.kill(job, signal.SIGSTOP)
        assert is_run_locked(run)
        res = _run(path)  # the same study folder while the first study run works on it
        assert res.exit_code == 1 and "is in use by another study run" in res.output, res.output
        assert res.output.strip().count("\n") == 0
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        if job:
            os.kill(job, signal.SIGCONT)  # it finds the SIGTERM its dead parent left (PR_SET_PDEATHSIG)
    deadline = time.monotonic() + 120
    while is_run_locked(run):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    (state,) = study_states(folder)
    assert state.state == "stopped" and 1 <= state.epochs_done < epochs, state
    assert read_status(run)["state"] == "stopped"
    done_before = state.epochs_done

    res = _run(folder)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    log = (run / "run.log").read_text()
    assert "grefel train --resume runs/s0" in log and f"epochs {done_before + 1}..{epochs} of {epochs}" in log
    assert study_states(folder)[0].state == "done"


def test_a_held_study_folder_refuses_in_one_line(tmp_path, dataset):
    path = _study(tmp_path, dataset, "")
    folder = tmp_path / "s"
    folder.mkdir()
    with study_lock(folder):
        res = _run(path)
    assert res.exit_code == 1 and res.output.startswith("Error: ") and res.output.strip().count("\n") == 0
    assert f"pid {os.getpid()}" in res.output


def test_an_unrelated_output_folder_is_refused(tmp_path, dataset):
    path = _study(tmp_path, dataset, "")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    res = _run(path)
    assert res.exit_code == 1 and "holds other files and no study" in res.output
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_slurm_path_on_submitits_local_executor(tmp_path, dataset):
    from grefel.study.run import run_study

    path = _study(tmp_path, dataset, "\n[slurm]\ntime = 30\ncpus_per_run = 1\n").read_text()
    (tmp_path / "s.toml").write_text(path.replace("seeds = 1", "seeds = 1\ngpus_per_run = 0"))
    result = run_study(tmp_path / "s.toml", executor="slurm", cluster="local")
    assert result["failed"] == []
    status = read_status(run_folder(tmp_path / "s", "s0"))
    assert status["state"] == "done" and status["job"] and status["metrics"]["n"] == 6
    assert any((tmp_path / "s" / "slurm").iterdir())


def test_local_slots_one_run_per_gpu_or_cores_split(monkeypatch):
    from grefel.study import run as R

    monkeypatch.setattr("grefel.study.run.usable_cores", lambda: 8)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert [s.cuda for s in R.local_slots(10, None)] == ["0", "1", "2"]
    assert R.local_slots(10, None, gpus_per_run=2) == [R.Slot("0,1", 8, 2)]
    assert [s.cuda for s in R.local_slots(1, None)] == ["0"]
    assert R.local_slots(10, 4, use_gpus=False) == [R.Slot(None, 2)] * 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert R.local_slots(3, None) == [R.Slot(None, 2)] * 3  # 3 runs, 8 cores: 2 threads each


def test_slurm_parameters_from_the_study_file():
    from grefel.study.run import slurm_parameters
    from grefel.study.spec import parse_study

    text = '[study]\ngpus_per_run = 4\n[slurm]\npartition = "gpu"\ntime = "2-00:00:00"\ncpus_per_run = 32\n'
    p = slurm_parameters(parse_study(text), 12, 3, "slurm")
    assert (p["slurm_partition"], p["timeout_min"], p["gpus_per_node"], p["tasks_per_node"]) == ("gpu", 2880, 4, 4)
    assert (p["cpus_per_task"], p["slurm_array_parallelism"]) == (8, 3)
    with pytest.raises(Exception, match="needs time"):
        slurm_parameters(parse_study('[slurm]\npartition = "gpu"\n'), 1, None, "slurm")


@pytest.mark.slow
def test_a_run_on_several_processes_trains_under_torchrun(tmp_path, dataset):
    """gpus_per_run > 1 on one machine: the job starts grefel train under torch.distributed.run (here
    two CPU processes with gloo; on GPUs one process per GPU of the run's slot)."""
    from grefel.study.folder import save_plan
    from grefel.study.run import open_study

    study, folder, text = open_study(_study(tmp_path, dataset, ""))
    folder.mkdir()
    save_plan(folder, study, text)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "grefel.study.job", str(folder), "s0", "--nproc", "2"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert json.loads((run_folder(folder, "s0") / "config.json").read_text())["world_size"] == 2
    assert read_status(run_folder(folder, "s0"))["state"] == "done"
