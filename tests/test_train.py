"""`grefel train`: run folder, resume = unbroken run, NaN and full-disk safety, mismatch errors."""

import errno
import json

import numpy as np
import pytest
import torch
from helpers import make_prepared
from typer.testing import CliRunner

from grefel.core.errors import CheckpointError, DatasetError, GrefelError
from grefel.models.grefel import create_model
from grefel.training.checkpoint import load_checkpoint
from grefel.training.config import TrainConfig
from grefel.training.loop import TrainingDiverged, train

TIME_KEYS = ("images_per_s", "epoch_time_s")


@pytest.fixture(autouse=True)
def _threads():
    """One thread: with more threads than free cores, OpenMP barriers make small ops 10x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _small(tmp_path, **kw):
    """A 2-class dataset with train + val and a fast configuration (8 images per epoch)."""
    make_prepared(n_per_class=8, num_classes=2, n_groups=2, split={"train": 0.75, "val": 0.25})
    base = dict(
        dataset="toy",
        preset="tiny",
        epochs=3,
        per_class=4,
        batch_size=4,
        workers=0,
        quiet=True,
        run_dir=str(tmp_path / "runs"),
        log_every=1,
    )
    return TrainConfig(**{**base, **kw})


def _weights(path):
    return load_checkpoint(path)["model"]


def test_run_folder_and_checkpoint_contract(tmp_path):
    cfg = _small(tmp_path, epochs=2, name="r1")
    run = train(cfg)
    assert run == tmp_path / "runs" / "r1"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "last.pt", "best.pt"}
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in (
        "train_loss",
        "train_cls",
        "train_anchor",
        "train_center",
        "train_acc",
        "val_acc",
        "lr",
        "images_per_s",
    ):
        assert key in rows[0]
    assert rows[1]["lr"] == pytest.approx(3e-4 * 0.995)  # exponential decay per epoch
    assert rows[0]["epoch_images"] == 8  # B x N_cls
    record = json.loads((run / "config.json").read_text())
    assert record["label_set"] == "clean" and len(record["dataset"]["manifest_sha256"]) == 64
    assert (
        record["config"]["lr"] == 3e-4 and record["config"]["num_anchors"] == 10 and record["config"]["dropout"] == 0.5
    )
    ck = load_checkpoint(run / "last.pt")
    for key in (
        "model",
        "model_config",
        "model_kwargs",
        "dataset",
        "label_set",
        "config",
        "epoch",
        "metrics",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
    ):
        assert key in ck
    assert ck["epoch"] == 2 and ck["dataset"]["classes"] == ["hstripes", "vstripes"]
    model = create_model(**ck["model_config"])  # what `grefel evaluate` does with the file alone
    model.load_state_dict(ck["model"])
    assert ck["model_kwargs"] == model.model_kwargs and ck["model_kwargs"]["encoder"]["input_size"] == 48
    best = load_checkpoint(run / "best.pt")
    assert best["metrics"]["val_acc"] == max(r["val_acc"] for r in rows)
    with pytest.raises(GrefelError, match="already holds a run"):
        train(cfg)


def test_resume_after_epoch_two_equals_unbroken_run(tmp_path):
    unbroken = train(_small(tmp_path, name="whole", deterministic=True))
    part = train(_small(tmp_path, name="part", stop_after=2, deterministic=True))
    assert load_checkpoint(part / "last.pt")["epoch"] == 2
    resumed = train(TrainConfig(resume=str(part), workers=0, quiet=True))
    assert resumed == part
    a = [json.loads(line) for line in (unbroken / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in TIME_KEYS} == {k: v for k, v in y.items() if k not in TIME_KEYS}
    wa, wb = _weights(unbroken / "last.pt"), _weights(resumed / "last.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    oa, ob = load_checkpoint(unbroken / "last.pt")["optimizer"], load_checkpoint(resumed / "last.pt")["optimizer"]
    assert all(torch.equal(oa["state"][i]["exp_avg"], ob["state"][i]["exp_avg"]) for i in oa["state"])


def test_nan_loss_stops_with_diagnosis_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import grefel.training.loop as gt

    real = gt.build_loss
    calls = {"n": 0}

    def poisoned(cfg):
        loss = real(cfg)

        class Poisoned(torch.nn.Module):
            def forward(self, out, y):
                parts = loss(out, y)
                calls["n"] += 1
                if calls["n"] > 2 and torch.is_grad_enabled():  # epoch 1 = 2 steps, then NaN
                    parts["anchor"] = parts["anchor"] * float("nan")
                    parts["total"] = parts["cls"] + parts["anchor"] + parts["center"]
                return parts

        return Poisoned()

    monkeypatch.setattr(gt, "build_loss", poisoned)
    cfg = _small(tmp_path, name="nan")
    with pytest.raises(TrainingDiverged, match=r"non-finite in epoch 2.*anchor nan.*last\.pt \(epoch 1\)"):
        train(cfg)
    ck = load_checkpoint(tmp_path / "runs" / "nan" / "last.pt")
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_full_disk_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save
    n = {"saves": 0}

    def failing_save(obj, f, *a, **k):
        n["saves"] += 1
        if n["saves"] > 2:  # epoch 1 wrote last.pt and best.pt; epoch 2 runs out of space mid-write
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(GrefelError, match="No space left.*intact.*--resume"):
        train(_small(tmp_path, name="full"))
    monkeypatch.setattr(torch, "save", real_save)
    run = tmp_path / "runs" / "full"
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_label_set_and_checkpoint_must_match_the_dataset(tmp_path):
    from grefel.data.shards import write_label_set

    cfg = _small(tmp_path, epochs=1, name="m")
    run = train(cfg)
    # a label set made for another preparation of the dataset
    root = load_checkpoint(run / "last.pt")["dataset"]["path"]
    write_label_set(root, "stale", np.zeros(16, np.int16), attrs={"classes": json.dumps(["a", "b"])})
    with pytest.raises(DatasetError, match="another preparation"):
        train(_small(tmp_path, name="m2", labels="stale"))
    # a checkpoint resumed on a dataset whose classes changed
    make_prepared(n_per_class=8, num_classes=2, classes=["x", "y"], split={"train": 0.75, "val": 0.25})
    with pytest.raises(CheckpointError, match="not toy"):
        train(TrainConfig(resume=str(run), epochs=2, workers=0, quiet=True))


def test_missing_validation_split_is_a_clear_error(tmp_path):
    make_prepared(n_per_class=4, num_classes=2, split={"train": 0.5, "test": 0.5})
    with pytest.raises(DatasetError, match="grefel refine --dataset toy"):
        train(TrainConfig(dataset="toy", preset="tiny", quiet=True, workers=0))


def test_cli_help_and_a_short_run(tmp_path):
    from grefel_cli.main import app

    r = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert r.exit_code == 0 and "Examples" in r.output and "torchrun" in r.output
    for flag in (
        "--no-refine",
        "--no-augment",
        "--reliability",
        "--num-anchors",
        "--label-smoothing",
        "--lambda-anchor",
        "--precision",
        "--compile",
        "--channels-last",
        "--ir50",
        "--resume",
        "--n-pg",
        "--per-class",
    ):
        assert flag in r.output
    make_prepared(n_per_class=6, num_classes=2, split={"train": 0.67, "val": 0.33})
    # a POSTER++-format file (DataParallel "module." prefix) for the encoder, from another init
    torch.manual_seed(123)
    donor = create_model("tiny", 2).encoder.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in donor.items()}}, tmp_path / "poster.pth")
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--dataset",
            "toy",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--per-class",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--run-dir",
            str(tmp_path),
            "--name",
            "cli",
            "--reliability",
            "anchors",
            "--num-anchors",
            "3",
            "--no-augment",
            "--quiet",
            "--poster",
            str(tmp_path / "poster.pth"),
        ],
    )
    assert r.exit_code == 0, r.output + str(r.exception)
    ck = load_checkpoint(tmp_path / "cli" / "best.pt")
    assert ck["model_config"]["reliability"] == "anchors" and ck["model_config"]["num_anchors"] == 3
    assert ck["config"]["augment"] is False and ck["config"]["poster"].endswith("poster.pth")
    assert "matched" in (tmp_path / "cli" / "pretrained.txt").read_text()
    frozen = [k for k in donor if k.startswith("face_landback.") and donor[k].is_floating_point()]
    assert frozen and all(torch.equal(ck["model"][f"encoder.{k}"], donor[k]) for k in frozen)  # loaded, and frozen


@pytest.mark.slow
def test_tiny_preset_learns_a_generated_dataset(tmp_path):
    """Three pattern classes, 16 training images per class per epoch: accuracy far above chance.

    The recipe's defaults are kept except a higher learning rate and a lighter dropout, so that a
    few dozen steps suffice (augmentation, refinement, all three losses stay on).
    """
    make_prepared(n_per_class=30, num_classes=3, split={"train": 0.7, "val": 0.3}, seed=1)
    run = train(
        TrainConfig(
            dataset="toy",
            preset="tiny",
            epochs=8,
            per_class=16,
            batch_size=16,
            lr=2e-3,
            dropout=0.1,
            workers=0,
            quiet=True,
            run_dir=str(tmp_path),
        )
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < 0.75 * rows[0]["train_loss"]
    best = max(r["val_acc"] for r in rows)
    assert best >= 0.7, rows  # chance is 1/3
    assert load_checkpoint(run / "best.pt")["metrics"]["val_acc"] == best
