"""SCN: Self-Cure Network (Wang, Peng, Yang, Lu, Qiao, "Suppressing Uncertainties for Large-Scale
Facial Expression Recognition", CVPR 2020).

Head over the pooled backbone features x_i (N, C) (the paper's equation numbers as recalled; they
were not checked against its PDF, the formulas are those of the authors' ``src/train.py`` at
kaiwang960112/Self-Cure-Network@9f4c3ad, which the fixture test reproduces):

* importance weight   alpha_i = sigmoid(w_a . x_i + b_a)                                (Eq. 1)
* logit-weighted CE   L_WCE = CE(alpha_i * (W x_i + b), y_i)                              (Eq. 2)
  (the whole logit is scaled, bias included; the same weighted logits are the evaluation output,
  where alpha > 0 leaves the argmax unchanged but sharpens or flattens the probabilities)
* rank regularisation: the top M = int(beta N) weights of the batch form the high group, the rest
  the low group, L_RR = max(0, delta_1 - (mean_high - mean_low))                          (Eq. 3-4)
* total: L = L_WCE + L_RR as coded (the paper's gamma L_RR + (1 - gamma) L_WCE with gamma = 0.5 is
  half of it: the same Adam updates)
* relabelling (Eq. 5-6), from epoch ``relabel_epoch`` (10) on, after the optimiser step, with that
  step's outputs: where max_k p_ik - p_{i, y_i} > delta_2, y_i <- argmax_k p_ik (p = softmax of the
  weighted logits). The authors' code applies it to every sample of the batch (the paper: the
  low-importance group), and the new label persists for the rest of training.

Recipe (authors' defaults): beta 0.7, delta_1 0.15 in the paper at batch 1024, 0.07 at batch 64 in
the README, delta_2 0.2, relabelling from epoch 10.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grefel.models.resnets import BaselineNet


def scn_head(pooled: torch.Tensor, fc: nn.Linear, alpha: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(importance weights alpha (N, 1), weighted logits alpha * fc(x) (N, K)) of pooled features."""
    a = torch.sigmoid(alpha(pooled))
    return a, a * fc(pooled)


def rank_regularization(alpha: torch.Tensor, beta: float = 0.7, margin: float = 0.15) -> torch.Tensor:
    """L_RR (Eq. 3-4): hinge on the gap between the mean weights of the high and low importance groups.
    A batch whose high or low group would be empty (``int(beta N)`` is 0 or N) contributes 0."""
    a = alpha.float().flatten().sort(descending=True).values
    n_high = int(a.numel() * beta)
    if n_high == 0 or n_high == a.numel():
        return a.sum() * 0.0
    return torch.relu(margin - (a[:n_high].mean() - a[n_high:].mean()))


def scn_loss(
    alpha: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, beta: float = 0.7, margin: float = 0.15
) -> dict[str, torch.Tensor]:
    """SCN's loss L_WCE + L_RR: ``{"total", "ce", "rank"}``."""
    ce = F.cross_entropy(logits.float(), target)
    rr = rank_regularization(alpha, beta, margin)
    return {"total": ce + rr, "ce": ce, "rank": rr}


@torch.no_grad()
def relabel(logits: torch.Tensor, target: torch.Tensor, margin: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """SCN's relabelling (Eq. 5-6): (new labels, mask of changed samples), where p_max - p_given > margin."""
    p = logits.float().softmax(dim=1)
    p_max, pred = p.max(dim=1)
    p_given = p.gather(1, target[:, None])[:, 0]
    mask = p_max - p_given > margin
    return torch.where(mask, pred, target), mask


class SCN(BaselineNet):
    """Backbone + global average pooling + SCN's head (:func:`scn_head`)."""

    method = "scn"

    def __init__(self, num_classes: int, backbone: str = "resnet18", input_size: int | None = 224):
        super().__init__(num_classes, backbone, input_size)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)
        self.alpha = nn.Linear(self.backbone.out_channels, 1)

    def forward_head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = fmap.mean(dim=(2, 3))
        return scn_head(pooled, self.fc, self.alpha)[1], pooled

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: (alpha, weighted logits)."""
        return scn_head(self.forward_features(x).mean(dim=(2, 3)), self.fc, self.alpha)
