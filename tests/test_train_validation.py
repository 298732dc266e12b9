"""Bad training input is a one-line error: out-of-range options (Typer on the command line, a
GrefelError naming the setting in the library), resumes that would ignore settings, unwritable
run folders, broken checkpoints; and a start that fails leaves no run folder behind."""

import errno
import os
import tempfile

import pytest
import torch
from helpers import make_prepared
from typer.testing import CliRunner

from grefel.core.errors import GrefelError
from grefel.training.config import TrainConfig
from grefel.training.loop import train
from grefel_cli.main import app


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


FAST = dict(preset="tiny", epochs=1, per_class=2, batch_size=4, workers=0, quiet=True)


def _dataset():
    make_prepared(n_per_class=6, num_classes=2, split={"train": 0.67, "val": 0.33})


def _cli(*argv):
    fast = ["--epochs", "1", "--per-class", "2", "--batch-size", "4"] if "--resume" not in argv else []
    return CliRunner().invoke(app, ["train", *fast, *argv])


def _one_line_error(r, exit_code=1) -> str:
    """The error of a CLI run: no traceback, the expected status, one `Error: ...` line."""
    assert r.exit_code == exit_code, r.output + repr(r.exception)
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output, r.output
    if exit_code == 1:
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    return " ".join(r.output.split())


BAD_OPTIONS = [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "1"], "--batch-size"),
    (["-K", "0"], "--num-anchors"),
    (["--lr", "-1"], "--lr"),
    (["--workers", "-1"], "--workers"),
    (["--epochs", "0"], "--epochs"),
    (["--per-class", "0"], "--per-class"),
    (["--flip", "2"], "--flip"),
    (["--dropout", "1.5"], "--dropout"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_out_of_range_options_are_refused_by_the_cli(tmp_path, argv, flag):
    _dataset()
    r = _cli("--dataset", "toy", "--preset", "tiny", "-j", "0", "-q", "--run-dir", str(tmp_path), *argv)
    out = _one_line_error(r, exit_code=2)  # Typer's usage error
    assert f"Invalid value for '{flag}'" in out
    assert not (tmp_path / "toy").exists() and list(tmp_path.iterdir()) == []


BAD_SETTINGS = [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 1}, "batch_size"),
    ({"num_anchors": 0}, "num_anchors"),
    ({"lr": -1.0}, "lr"),
    ({"workers": -1}, "workers"),
    ({"epochs": 0}, "epochs"),
    ({"per_class": 0}, "per_class"),
    ({"flip": 2.0}, "flip"),
    ({"dropout": 1.5}, "dropout"),
    ({"crop": 500}, "crop 500 is larger than the 128 px faces"),
]


@pytest.mark.parametrize(("bad", "named"), BAD_SETTINGS, ids=[str(b) for b, _ in BAD_SETTINGS])
def test_library_names_the_setting_not_a_flag(tmp_path, bad, named):
    _dataset()
    with pytest.raises(GrefelError, match=named) as e:
        train(TrainConfig(dataset="toy", run_dir=str(tmp_path / "runs"), **{**FAST, **bad}))
    assert "--" not in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_crop_larger_than_the_faces_is_a_one_line_error(tmp_path):
    _dataset()
    out = _one_line_error(
        _cli("-d", "toy", "--preset", "tiny", "-j", "0", "-q", "--run-dir", str(tmp_path), "--crop", "500")
    )
    assert "crop 500 is larger than the 128 px faces" in out


def test_resume_refuses_settings_it_would_ignore(tmp_path):
    _dataset()
    run = train(TrainConfig(dataset="toy", run_dir=str(tmp_path), name="r", **FAST))
    out = _one_line_error(_cli("--resume", str(run), "--dataset", "other", "--lr", "1", "--epochs", "2"))
    assert "--dataset, --lr cannot change" in out and "a resume takes only" in out and "--epochs" in out
    with pytest.raises(GrefelError, match=r"lr \(1\.0; the run has 0\.0003\) cannot change.*may change only") as e:
        train(TrainConfig(resume=str(run), lr=1.0, epochs=2, workers=0, quiet=True))
    assert "--" not in str(e.value)
    # the run's own values (as the demo passes them), and the resumable settings, are accepted
    again = train(TrainConfig(resume=str(run), dataset="toy", name="r", run_dir=str(tmp_path), **{**FAST, "epochs": 2}))
    assert again == run and (run / "last.pt").exists()


def test_run_dir_that_is_a_file_is_a_one_line_error(tmp_path):
    _dataset()
    (tmp_path / "afile").write_text("x")
    out = _one_line_error(_cli("-d", "toy", "--preset", "tiny", "-j", "0", "-q", "--run-dir", str(tmp_path / "afile")))
    assert "afile is a file" in out
    with pytest.raises(GrefelError, match="is a file; choose a writable run_dir"):
        train(TrainConfig(dataset="toy", run_dir=str(tmp_path / "afile" / "sub"), **FAST))


def _read_only(monkeypatch, folder):
    """Make ``folder`` refuse new files (chmod; root ignores modes, so there the write is refused)."""
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = tempfile.mkstemp

        def refuse(*a, dir=None, **k):
            if dir is not None and str(dir).startswith(str(folder)):
                raise PermissionError(errno.EACCES, "Permission denied")
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)


def test_read_only_run_folder_is_a_one_line_error_for_train_and_resume(tmp_path, monkeypatch):
    _dataset()
    run = train(TrainConfig(dataset="toy", run_dir=str(tmp_path), name="r", **FAST))
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    _read_only(monkeypatch, run)
    try:
        out = _one_line_error(_cli("-d", "toy", "--preset", "tiny", "-j", "0", "-q", "--run-dir", str(ro)))
        assert "cannot write in the run folder" in out or "cannot create the run folder" in out
        out = _one_line_error(_cli("--resume", str(run), "--epochs", "2", "-j", "0", "-q"))
        assert f"cannot write in the run folder {run}" in out and "Permission denied" in out
    finally:
        ro.chmod(0o755)
        run.chmod(0o755)


def test_a_failed_start_leaves_no_run_folder(tmp_path, monkeypatch):
    import grefel.training.loop as gt
    from grefel.training.loop import TrainingDiverged

    _dataset()
    runs = tmp_path / "runs"
    real = gt.build_loss

    def nan_loss(cfg):  # the first step diverges: no epoch finishes
        loss = real(cfg)

        class NaN(torch.nn.Module):
            def forward(self, out, y):
                parts = loss(out, y)
                parts["total"] = parts["total"] * float("nan")
                return parts

        return NaN()

    monkeypatch.setattr(gt, "build_loss", nan_loss)
    with pytest.raises(TrainingDiverged, match="no epoch had finished"):
        train(TrainConfig(dataset="toy", run_dir=str(runs), **FAST))
    assert not runs.exists()
    monkeypatch.setattr(gt, "build_loss", real)
    with pytest.raises(GrefelError, match="bad model option"):
        train(TrainConfig(dataset="toy", run_dir=str(runs), model_args={"no_such_option": 1}, **FAST))
    assert not runs.exists()
    r = _cli(
        "-d", "toy", "--preset", "tiny", "-j", "0", "-q", "--run-dir", str(runs), "--model-arg", "no_such_option=1"
    )
    _one_line_error(r)
    assert not runs.exists()


def test_resume_of_a_truncated_last_pt_suggests_best_pt(tmp_path):
    _dataset()
    run = train(TrainConfig(dataset="toy", run_dir=str(tmp_path), name="r", **FAST))
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    out = _one_line_error(_cli("--resume", str(run), "--epochs", "2", "-j", "0", "-q"))
    assert "cannot be read" in out and f"resuming {run / 'best.pt'}" in out and "use the run's last.pt" not in out
    (run / "best.pt").unlink()
    with pytest.raises(GrefelError, match="start a new run") as e:
        train(TrainConfig(resume=str(run), epochs=2, workers=0, quiet=True))
    assert "last.pt" not in str(e.value).split("):")[-1]
