"""What one training step of each method does, as an object the training loop calls (:func:`make_step`).

The loop (:mod:`grefel.training.loop`) is the harness every method shares: prepared shards,
refinement or plain passes, label sets, seeds, augmentation, precision, checkpoints, resume,
torchrun, validation. A step object adds what differs between methods:

* ``parts``: the loss terms it logs (``train_<part>`` in metrics.jsonl), ``total`` first;
* ``criterion``: the validation loss of a model output (GReFEL's eq. 23; cross-entropy of the
  method's distribution for the baselines);
* ``param_groups``: the optimiser's parameter groups (RUL: the classifier at ``rul_fc_lr`` x lr);
* ``losses(model, criterion, b)``: the forward pass(es) and loss of one batch, and the logits or
  probabilities its training accuracy is read from;
* ``after_step(epoch)``: work after the optimiser step (SCN's relabelling);
* ``state_dict`` / ``load_state_dict``: state a checkpoint must keep (SCN's relabelled labels).

Methods: ``grefel`` (:class:`GReFELStep`, the paper), ``ce`` (:class:`CEStep`), ``eac``
(:class:`EACStep`: two views, the image and its mirror, each randomly erased), ``scn``
(:class:`SCNStep`: importance weights, rank regularisation, relabelling with the labels kept per
sample across epochs), ``rul`` (:class:`RULStep`: uncertainty-weighted feature mixing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from grefel.core.errors import CheckpointError, DatasetError, GrefelError
from grefel.data.transforms import AUG_COLUMNS, augment_uniforms
from grefel.models.eac import eac_loss
from grefel.models.factory import method_presets
from grefel.models.output import GReFELOutput
from grefel.models.resnets import ce_loss
from grefel.models.rul import add_up_loss
from grefel.models.scn import relabel, scn_loss
from grefel.training.config import TrainConfig

ERASE_COLUMNS = tuple(i for i, c in enumerate(AUG_COLUMNS) if c.startswith("erase"))
EAC_STREAM = 0xEAC  # seeds the second view's random erasing


@dataclass
class StepBatch:
    """One batch as a step sees it (all on the training device)."""

    x: torch.Tensor  # the augmented model input
    y: torch.Tensor  # the labels the run learns from
    index: torch.Tensor  # dataset index of each sample
    u: torch.Tensor | None  # the augmentation rows of x (None without augmentation)
    view: Callable[[torch.Tensor | None], torch.Tensor]  # the model input of these images under other rows
    progress: float  # epochs done, fractional
    autocast: Callable  # the run's autocast context
    pos: torch.Tensor | None = None  # plan positions of the batch (rows of the epoch's augmentation tables)


class OutputCE(nn.Module):
    """Validation loss of a baseline: cross-entropy of its distribution (``log_corrected``) against the labels."""

    def forward(self, out: GReFELOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": F.nll_loss(out.log_corrected.float(), target)}


class MethodStep:
    """Cross-entropy on plain logits: the CE baseline, and the base of the other steps."""

    parts: tuple[str, ...] = ("total", "ce")

    def __init__(self, cfg: TrainConfig, criterion: nn.Module | None = None):
        self.cfg = cfg
        self.criterion = criterion if criterion is not None else OutputCE()

    def param_groups(self, model: nn.Module) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def begin_epoch(self, epoch: int, positions: int, device: torch.device) -> None:
        """Called before each epoch with the number of plan positions."""

    def labels(self, b: StepBatch) -> torch.Tensor:
        return b.y

    def losses(self, model, criterion, b: StepBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with b.autocast():
            logits = model(b.x)
        return {"total": ce_loss(logits, b.y), "ce": ce_loss(logits, b.y).detach()}, logits

    def after_step(self, epoch: int) -> None:
        """Called after the optimiser step with the epoch counted from 1."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, path) -> None:
        pass


CEStep = MethodStep


class GReFELStep(MethodStep):
    """GReFEL (paper eq. 23): one forward pass, the corrected distribution's loss plus the anchor and center
    terms, lambda_a and lambda_c (and the correction) ramped in over their warm-ups."""

    parts = ("total", "cls", "anchor", "center")

    def losses(self, model, criterion, b: StepBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with b.autocast():
            out = model(b.x)
        criterion.aux_scale = warmup_ramp(b.progress, self.cfg.aux_warmup)
        criterion.correction_scale = warmup_ramp(b.progress, self.cfg.correction_warmup)
        return criterion(out, b.y), out.corrected


def warmup_ramp(progress: float, warmup: float) -> float:
    """Warm-up factor after ``progress`` epochs: a linear ramp from 0 to 1 over ``warmup`` epochs
    (lambda_a and lambda_c with ``aux_warmup``; the correction with ``correction_warmup``)."""
    return 1.0 if warmup <= 0 else min(1.0, progress / warmup)


class EACStep(MethodStep):
    """EAC: the image and its horizontal mirror, two passes, CE on the image, flip consistency of the CAMs.

    The mirrored view has the image's crop, rotation and colour (so the two CAMs correspond pixel for
    pixel once mirrored) and its own random erasing, drawn from (seed, epoch) like every augmentation;
    as in the authors' noisy-label runs, each view is erased independently. Without augmentation the
    second view is the exact mirror."""

    parts = ("total", "ce", "consistency")

    def begin_epoch(self, epoch: int, positions: int, device: torch.device) -> None:
        self.erase_rows = augment_uniforms(positions, self.cfg.seed * 4099 + EAC_STREAM, epoch).to(device)

    def losses(self, model, criterion, b: StepBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if b.u is None:
            x2 = b.x.flip(-1)
        else:
            u2 = b.u.clone()
            rows = self.erase_rows[b.pos.to(self.erase_rows.device)]
            u2[:, ERASE_COLUMNS] = rows[:, ERASE_COLUMNS].to(u2.dtype)
            x2 = b.view(u2).flip(-1)
        with b.autocast():
            logits, cams, cams_flipped = model(b.x, x2)
        losses = eac_loss(logits, b.y, cams, cams_flipped, self.cfg.eac_lambda)
        return {"total": losses["total"], **{k: v.detach() for k, v in losses.items() if k != "total"}}, logits


class SCNStep(MethodStep):
    """SCN: weighted logits, rank regularisation, relabelling that persists across epochs (:class:`RelabelStore`)."""

    parts = ("total", "ce", "rank", "relabelled")

    def __init__(self, cfg: TrainConfig, criterion: nn.Module | None = None, labels: np.ndarray | None = None):
        super().__init__(cfg, criterion)
        self.store = RelabelStore(labels if labels is not None else np.zeros(0, np.int64), cfg.scn_relabel_epoch)
        self.store.margin = cfg.scn_relabel_margin
        self._last = None

    def labels(self, b: StepBatch) -> torch.Tensor:
        return self.store[b.index].to(b.y.device)

    def losses(self, model, criterion, b: StepBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        y = self.labels(b)
        with b.autocast():
            alpha, logits = model(b.x)
        losses = scn_loss(alpha, logits, y, self.cfg.scn_beta, self.cfg.scn_margin)
        self._last = (b.index, logits.detach(), y)
        changed = (self.store.labels.to(y.device)[b.index] != b.y).double().mean()
        parts = {"total": losses["total"], "ce": losses["ce"].detach(), "rank": losses["rank"].detach()}
        return {**parts, "relabelled": changed}, logits

    def after_step(self, epoch: int) -> None:
        if self._last is not None:
            self.store.update(*self._last, epoch=epoch)
            self._last = None

    def state_dict(self) -> dict:
        return {"scn_labels": self.store.labels.clone()}

    def load_state_dict(self, state: dict, path) -> None:
        if "scn_labels" not in state or len(state["scn_labels"]) != len(self.store.labels):
            raise CheckpointError(
                f"{path} holds no SCN relabelling state for this dataset (the labels SCN rewrote): "
                "resume a checkpoint of the same SCN run, or start a new run"
            )
        self.store.labels = state["scn_labels"].to(self.store.labels.device, torch.long).clone()


class RelabelStore:
    """SCN's per-sample training labels (one per dataset index), rewritten by relabelling (SCN Eq. 5-6).

    ``update`` (after the optimiser step, with that step's logits) relabels where
    ``p_max - p_given > margin``, from ``relabel_epoch`` on (epochs counted from 1); under torchrun
    every rank applies every rank's changes, so all keep the same labels.
    """

    def __init__(self, labels, relabel_epoch: int = 10, margin: float = 0.2):
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))
        self.relabel_epoch, self.margin = relabel_epoch, margin

    def __getitem__(self, indexes: torch.Tensor) -> torch.Tensor:
        return self.labels[indexes.to(self.labels.device)]

    def update(self, indexes: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> int:
        """Relabel one batch; returns how many labels changed (on this rank)."""
        if epoch < self.relabel_epoch:
            return 0
        new, mask = relabel(logits, targets, self.margin)
        idx = torch.where(mask, indexes.to(new.device), torch.full_like(new, -1))
        if dist.is_available() and dist.is_initialized():  # every rank's batch is the same size
            gathered = [torch.empty_like(idx) for _ in range(dist.get_world_size())]
            news = [torch.empty_like(new) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, idx)
            dist.all_gather(news, new)
            idx, new = torch.cat(gathered), torch.cat(news)
        keep = idx >= 0
        self.labels[idx[keep].to(self.labels.device)] = new[keep].to(self.labels.device)
        return int(mask.sum())


class RULStep(MethodStep):
    """RUL: uncertainty-weighted mixing with a random partner of the batch, the add-up loss; the classifier at
    ``rul_fc_lr`` x lr."""

    def param_groups(self, model: nn.Module) -> list[dict]:
        fc = {id(p) for p in model.classifier_parameters()}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in fc]
        head = [p for p in model.classifier_parameters() if p.requires_grad]
        return [{"params": rest}, {"params": head, "lr": self.cfg.lr * self.cfg.rul_fc_lr}]

    def losses(self, model, criterion, b: StepBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with b.autocast():
            logits, perm = model(b.x)
        losses = add_up_loss(logits, b.y, perm)
        return {"total": losses["total"], "ce": losses["ce"].detach()}, logits


STEPS: dict[str, type[MethodStep]] = {
    "grefel": GReFELStep,
    "ce": CEStep,
    "eac": EACStep,
    "scn": SCNStep,
    "rul": RULStep,
}


def make_step(cfg: TrainConfig, labels: np.ndarray, device: torch.device, criterion: nn.Module | None) -> MethodStep:
    """The step of ``cfg.method``. ``labels``: the labels the run learns from, one per dataset index (SCN
    keeps its own rewritable copy on ``device``); ``criterion``: GReFEL's loss (eq. 23) for ``grefel``."""
    method = cfg.method or "grefel"
    if method == "grefel":
        return GReFELStep(cfg, criterion)
    if method == "scn":
        step = SCNStep(cfg, labels=labels)
        step.store.labels = step.store.labels.to(device)
        return step
    return STEPS[method](cfg)


def check_method_fits(cfg: TrainConfig, ds, train_labels: np.ndarray, world_size: int) -> None:
    """A one-line error when ``cfg.method`` cannot train on this dataset with these settings: a preset it
    lacks; a baseline on a training split of fewer than two classes (every baseline's loss compares
    classes: SCN relabels to another class, RUL mixes two samples' labels, EAC and CE need a decision);
    SCN with a per-process batch whose high- or low-importance group would be empty."""
    method = cfg.method or "grefel"
    presets = method_presets(method)
    if cfg.preset not in presets:
        raise GrefelError(f"method {method} has no preset {cfg.preset!r}: use one of {', '.join(presets)}")
    if method == "grefel":
        return
    present = np.unique(train_labels[train_labels >= 0])
    if len(present) < 2:
        names = ", ".join(ds.classes[c] for c in present) or "none"
        raise DatasetError(
            f"method {method} cannot train on {ds.name}: its training split holds labelled images of "
            f"{len(present)} class ({names}), and the method needs two or more; use a split set or label set "
            "with several classes"
        )
    per_process = (cfg.batch_size or 0) // max(world_size, 1)
    high = int(per_process * cfg.scn_beta)
    if method == "scn" and not 0 < high < per_process:
        raise GrefelError(
            f"scn_beta {cfg.scn_beta} of a {per_process}-image batch per process puts {high} images in the "
            "high-importance group, leaving a group empty: use a larger batch_size or another scn_beta"
        )
