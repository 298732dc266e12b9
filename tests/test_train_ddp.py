"""Two-process DDP on CPU (gloo, started by torchrun as docs/training.md says) = one process.

Both runs use the same global batch (8), refined epoch (16 images = 2 steps) and augmentation;
BatchNorm statistics are frozen (--freeze-bn: SyncBatchNorm needs GPUs) and dropout is off, so
the two processes together must compute what one process computes, up to float summation order.
"""

import os
import subprocess
import sys

import pytest
import torch
from helpers import make_prepared

from grefel.checkpoint import load_checkpoint
from grefel.train import TrainConfig, train

ARGS = dict(preset="tiny", epochs=1, per_class=8, batch_size=8, dropout=0.0, freeze_bn=True, workers=0, quiet=True)


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(tmp_path):
    make_prepared(n_per_class=12, num_classes=2, n_groups=3, split={"train": 0.67, "val": 0.33})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "grefel_cli.main",
        "train",
        "--dataset",
        "toy",
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--per-class",
        "8",
        "--batch-size",
        "8",
        "--dropout",
        "0",
        "--freeze-bn",
        "--workers",
        "0",
        "--quiet",
        "--device",
        "cpu",
        "--run-dir",
        str(tmp_path),
        "--name",
        "ddp",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ddp["config"]["batch_size"] == 8

    one = load_checkpoint(train(TrainConfig(dataset="toy", run_dir=str(tmp_path), name="one", **ARGS)) / "last.pt")
    for k, v in one["model"].items():
        if not v.is_floating_point():
            continue
        torch.testing.assert_close(ddp["model"][k], v, atol=2e-5, rtol=1e-4, msg=k)
    # the step really moved the weights (the comparison is not between two untouched inits)
    from grefel.models import create_model

    torch.manual_seed(0)
    fresh = create_model(**one["model_config"]).state_dict()
    moved = sum(int(not torch.allclose(fresh[k], v)) for k, v in one["model"].items() if v.is_floating_point())
    assert moved > 10
    assert one["metrics"]["train_loss"] == pytest.approx(ddp["metrics"]["train_loss"], rel=1e-4)
    assert one["metrics"]["val_acc"] == pytest.approx(ddp["metrics"]["val_acc"])
