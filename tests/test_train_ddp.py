"""Two-process DDP on CPU (gloo, started by torchrun as docs/training.md says) = one process.

Both runs use the same global batch (8), refined epoch (16 images = 2 steps) and augmentation;
BatchNorm statistics are frozen (--freeze-bn: SyncBatchNorm needs GPUs) and dropout is off, so
the two processes together must compute what one process computes, up to float summation order.

What is compared is the gradient, not the weights after Adam steps. Adam divides each gradient
element by its own magnitude, so an element whose gradient is summation-order noise (1e-12 on one
machine, -1e-12 on another) still moves by about the learning rate, and weights after two steps
differ by ~lr between a correct DDP run and one process on some CPUs. Instead both runs use a
learning rate (1e-9) too small to move the weights beyond fp32 rounding, and the test compares
Adam's first moment, which after t steps is (1 - beta1) * sum_s beta1^(t-s) g_s: a fixed linear
combination of the gradients of the steps, computed by the same elementwise ops in both runs.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import make_prepared

from grefel.models.grefel import create_model
from grefel.training.checkpoint import load_checkpoint
from grefel.training.config import TrainConfig
from grefel.training.loop import train

# lr 1e-9: Adam's first step moves a weight by at most lr (lr * g / (|g| + eps)); 1e-9 is about one
# fp32 ulp of a weight of 1e-2 and none of one above 0.03, so the second step's gradient and the
# validation after the step see the initial weights up to rounding in both runs.
LR = 1e-9
ARGS = dict(
    preset="tiny", epochs=1, per_class=8, batch_size=8, dropout=0.0, freeze_bn=True, workers=0, quiet=True, lr=LR
)
U = 2.0**-24  # fp32 unit roundoff
# Per tensor, |g_ddp - g_one| <= RTOL |g_one| (2-norms). The two runs differ only in how the sums
# over the batch are split: one process sums 8 samples; DDP sums 4 per rank and gloo averages the
# two halves. A weight-gradient element of the tiny preset is a sum of up to N = 8 x 48 x 48 =
# 18432 products (the stem convolution), each from a backward pass through ~20 layers. Rounding
# errors of such sums grow like sqrt(N) u per layer (about 8e-6 here), ~20 layers deep: ~2e-4.
# Any DDP fault moves gradients by their own order of magnitude instead: a rank's half of the batch
# missing or counted twice, or the halves summed rather than averaged (x2).
RTOL = 1e-3
# Plus an absolute floor of 16 u of the typical gradient element (RMS over the model): a tensor
# whose own gradient nearly cancels still carries the rounding of terms on the network's scale.
FLOOR_U = 16 * U


def _first_moments(ckpt: dict) -> dict[str, torch.Tensor]:
    """Adam's exp_avg per trainable parameter name (the optimizer's state is keyed by position)."""
    names = [n for n, p in create_model(**ckpt["model_config"]).named_parameters() if p.requires_grad]
    state = ckpt["optimizer"]["state"]
    return {names[int(i)]: s["exp_avg"] for i, s in state.items()}


def assert_same_gradients(ddp: dict[str, torch.Tensor], one: dict[str, torch.Tensor]) -> None:
    assert ddp.keys() == one.keys()
    total = torch.cat([g.flatten().double() for g in one.values()])
    rms = float(total.norm()) / total.numel() ** 0.5
    assert rms > 0
    bad = []
    for k, g in one.items():
        err = float((ddp[k].double() - g.double()).norm())
        bound = RTOL * float(g.double().norm()) + FLOOR_U * rms * g.numel() ** 0.5
        if not err <= bound:
            bad.append(f"{k}: |diff| {err:.3g} > {bound:.3g} (|g| {float(g.norm()):.3g})")
    assert not bad, "DDP gradient differs from one process:\n" + "\n".join(bad)


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
        "--lr",
        str(LR),
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
    assert ddp["config"]["batch_size"] == 8 and ddp["config"]["lr"] == LR

    one = load_checkpoint(train(TrainConfig(dataset="toy", run_dir=str(tmp_path), name="one", **ARGS)) / "last.pt")
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2
    g_one, g_ddp = _first_moments(one), _first_moments(ddp)
    # the comparison is between real gradients, not between two zero tensors
    assert sum(int(bool(g.abs().max() > 0)) for g in g_one.values()) > 10
    assert_same_gradients(g_ddp, g_one)
    # Losses are fp32 forward passes of 4 vs 8 samples, summed in float64: each logit is a chain of
    # ~20 sums of <= 576 products (3x3x64 convolutions), sqrt(576) u ~ 1.4e-6 per layer: ~3e-5.
    for k in ("train_loss", "train_cls", "val_loss"):
        assert ddp["metrics"][k] == pytest.approx(one["metrics"][k], rel=1e-4), k
    # Accuracies are counts of argmaxes: equal unless a probability margin is within the forward's
    # rounding. The smallest top-2 margin of the corrected distribution on this data is ~0.07.
    for k in ("train_acc", "val_acc", "val_acc_primary"):
        assert ddp["metrics"][k] == one["metrics"][k], k
