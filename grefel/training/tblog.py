"""Live training curves as TensorBoard event files in the run folder (``tensorboard --logdir runs``).

Per epoch: the loss parts and training accuracy, the learning rate, validation loss and accuracy
of the corrected (eq. 19) and primary (eq. 9) distributions, how many validation predictions
reliability balancing fixed and broke, images/s; every ``every`` epochs (and the last) the two
validation confusion matrices as an image. ``metrics.jsonl`` stays the record; these files are for
watching. The ``tensorboard`` package is optional (``pip install 'grefel[tensorboard]'``): without
it :func:`open_writer` returns None and the run goes on without event files.

Event files sit in the run folder itself, so ``tensorboard --logdir <folder of runs>`` (a study's
``runs/`` too) shows every run side by side under its own name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EVENT_FILES = "events.out.tfevents.*"  # what SummaryWriter writes in the run folder
SCALARS = {  # metrics.jsonl key -> TensorBoard tag
    "train_loss": "loss/total",
    "train_cls": "loss/cls (eq. 20)",
    "train_anchor": "loss/anchor (eq. 21)",
    "train_center": "loss/center (eq. 22)",
    "train_ce": "loss/cross-entropy (baselines)",
    "train_consistency": "loss/EAC flip consistency",
    "train_rank": "loss/SCN rank regularisation",
    "train_relabelled": "SCN/share of the batch relabelled",
    "train_acc": "accuracy/train corrected",
    "val_loss": "loss/val total",
    "val_acc": "accuracy/val corrected",
    "val_acc_primary": "accuracy/val primary",
    "val_macro_f1": "accuracy/val macro-F1 corrected",
    "lr": "optim/lr",
    "images_per_s": "speed/images per s",
}


def open_writer(folder: Path, first_epoch: int):
    """A SummaryWriter on ``folder`` (events of epochs after ``first_epoch`` from an earlier session
    are dropped, as a resume repeats them), or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard needs the tensorboard package
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=first_epoch + 1)


def write_epoch_events(writer, metrics: dict, extras: dict, classes: list[str], confusion: bool) -> None:
    """One epoch's scalars; the validation confusion matrices when ``confusion``."""
    step = int(metrics["epoch"])
    for key, tag in SCALARS.items():
        if key in metrics:
            writer.add_scalar(tag, float(metrics[key]), step)
    for key in ("fixed", "broken"):
        if key in extras:
            writer.add_scalar(f"reliability balancing/val {key}", extras[key], step)
    if confusion and "confusion" in extras:
        writer.add_figure("confusion/val", confusion_image(extras["confusion"], classes, step), step)
    writer.flush()


def confusion_image(matrices: dict[str, np.ndarray], classes: list[str], epoch: int):
    """Row-normalised primary and corrected confusion matrices side by side."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(matrices), 4.0), dpi=80)
    for i, (name, cm) in enumerate(matrices.items()):
        ax = fig.add_subplot(1, len(matrices), i + 1)
        rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(len(classes)), [c[:4] for c in classes], rotation=90)
        ax.set_yticks(range(len(classes)), [c[:4] for c in classes])
        ax.set_title(f"{name}, epoch {epoch}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("label")
    fig.tight_layout()
    return fig
