"""grefel train writes TensorBoard event files in the run folder; the run works without tensorboard."""

from __future__ import annotations

import builtins
import json

import pytest
from test_train import _small

from grefel.training.loop import train

pytest.importorskip("tensorboard")


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_event_files_hold_the_curves_of_metrics_jsonl_and_a_confusion_image(tmp_path):
    run = train(_small(tmp_path, epochs=3, stop_after=2, name="tb", confusion_every=2))
    train(_small(tmp_path, resume=str(run)))  # the resumed session appends epoch 3 only
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = _events(run)
    for tag, key in (("accuracy/val corrected", "val_acc"), ("accuracy/val primary", "val_acc_primary"),
                     ("loss/total", "train_loss"), ("optim/lr", "lr")):  # fmt: skip
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3], tag
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6), tag  # float32 storage
    fixed, broken = acc.Scalars("reliability balancing/val fixed"), acc.Scalars("reliability balancing/val broken")
    assert len(fixed) == len(broken) == 3 and all(e.value >= 0 for e in fixed + broken)
    assert [e.step for e in acc.Images("confusion/val")] == [2, 3]  # every 2 epochs and after the last


def test_the_run_goes_on_without_the_tensorboard_package(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    run = train(_small(tmp_path, epochs=1, name="no-tb"))
    assert (run / "best.pt").is_file() and not list(run.glob("events.out.tfevents*"))


def test_tensorboard_can_be_switched_off(tmp_path):
    run = train(_small(tmp_path, epochs=1, name="off", tensorboard=False))
    assert not list(run.glob("events.out.tfevents*"))
