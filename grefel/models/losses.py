"""GReFEL losses (paper 3.4), eq. (20)-(23).

    L_total = lambda_cls L_cls + lambda_a L_a + lambda_c L_c                        eq. (23)

- L_cls, eq. (20): negative log-likelihood of the label under the *corrected* distribution
  L_final, averaged over the batch. With ``label_smoothing = eps`` the one-hot y is replaced by
  (1 - eps) y + eps / N_cls (as torch's CrossEntropyLoss does). Table 8's "label smoothing term"
  T (5 ... 50) is read as a percentage: eps = T / 100 (T = 11, the paper's choice, is eps = 0.11).
- L_a, eq. (21), bounded and normalised: the paper's ``-sum |a^{ij} - a^{kl}|^2`` is unbounded
  below (anchors flying apart dominate any other term; the paper's Fig. 6 shows such runs
  collapse). Here each squared distance is passed through ``1 - exp(-d^2 / D)`` (D = embedding
  width) and averaged over all pairs of anchors of *different* classes (as the authors' ARBEx
  code does), so L_a lies in [-1, 0]: -1 when all classes are far apart, 0 when they coincide.
- L_c, eq. (22), with the embedding e (the paper's x^i is a typo): squared distance from e to
  the nearest anchor of its own class, divided by D and averaged over the batch, so that
  lambda = 1 keeps it on the scale of the other terms whatever the width.

Setups without anchors (reliability 'mhsa' or 'none') have L_a = L_c = 0.

Warm-up (not in the paper): ``aux_scale`` in [0, 1] multiplies lambda_a and lambda_c. The paper
starts from pretrained encoders; from scratch, L_c at full weight from the first step pulls every
embedding onto the (still meaningless) anchors and the classifier never starts (the tiny preset on
the synthetic faces stayed at chance for 20 epochs with lambda_c = 1, learned with lambda_c = 0).
``grefel train --aux-warmup E`` ramps aux_scale linearly from 0 to 1 over the first E epochs;
the default 0 is the paper's recipe.

Correction warm-up (not in the paper; the authors' ARBEx code ramps its correction in linearly
over training): ``correction_scale = r`` in [0, 1] replaces L_final in eq. (20) by
``(1 - r) l + r L_final``. At r = 0 the class loss is the primary head's NLL. Why: eq. (19)
weighs the primary distribution by c_l / (c_l + c_t), and a randomly initialised head is uniform,
so c_l = 0 and the primary head gets almost no gradient from eq. (20) until the corrections lose
confidence; from scratch, the tiny preset with reliability balancing stayed at chance for about
four epochs longer than without it. ``grefel train --correction-warmup E`` ramps r from 0 to 1
over the first E epochs; the default 0 is the paper. Evaluation always uses eq. (19) as printed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grefel.core.errors import GrefelError
from grefel.models.output import GReFELOutput
from grefel.models.reliability import mix


def class_distribution_loss(
    log_corrected: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Eq. (20): mean over the batch of -sum_j y_j log L_final_j (y optionally smoothed)."""
    nll = -log_corrected.gather(1, target.long().unsqueeze(1)).squeeze(1)
    if label_smoothing > 0:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * log_corrected.mean(dim=1)
    return nll.mean()


def anchor_loss(anchors: torch.Tensor) -> torch.Tensor:
    """Eq. (21), bounded: -mean over anchor pairs of different classes of (1 - exp(-|a - a'|^2 / D))."""
    C, K, D = anchors.shape
    flat = anchors.float().reshape(C * K, D)
    d2 = (flat[:, None, :] - flat[None, :, :]).pow(2).sum(-1)  # |a^{ij} - a^{kl}|^2
    cls = torch.arange(C, device=anchors.device).repeat_interleave(K)
    other = cls[:, None] != cls[None, :]
    return -(1.0 - torch.exp(-d2[other] / D)).mean()


def center_loss(embedding: torch.Tensor, anchors: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (22): mean over the batch of min_k |e^i - a^{y^i k}|^2 / D."""
    own = anchors.float()[target.long()]  # (B, K, D): the anchors of each sample's class
    d2 = (embedding.float().unsqueeze(1) - own).pow(2).sum(-1)
    return d2.min(dim=1).values.mean() / anchors.shape[-1]


class GReFELLoss(nn.Module):
    """L_total of eq. (23); ``loss(output, target)`` -> {"total", "cls", "anchor", "center"} (scalars)."""

    def __init__(
        self,
        lambda_cls: float = 1.0,
        lambda_anchor: float = 1.0,
        lambda_center: float = 1.0,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise GrefelError(
                f"label_smoothing must be in [0, 1) (got {label_smoothing}); "
                "Table 8's term T is eps = T/100, e.g. 11 -> 0.11"
            )
        self.lambda_cls, self.lambda_anchor, self.lambda_center = lambda_cls, lambda_anchor, lambda_center
        self.label_smoothing = label_smoothing
        self.aux_scale = 1.0  # warm-up factor on lambda_a and lambda_c (see the module docstring)
        self.correction_scale = 1.0  # warm-up factor r of the correction in eq. (20) (see the module docstring)

    def forward(self, output: GReFELOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        log_final = output.log_corrected
        if log_final is None:
            log_final = output.corrected.clamp_min(1e-30).log()
        log_final = log_final.float()
        r = self.correction_scale
        if r < 1.0:  # correction warm-up: (1 - r) l + r L_final
            w = log_final.new_full(log_final.shape[:1], r)
            log_final = mix(1.0 - w, F.log_softmax(output.logits.float(), dim=-1), w, log_final)
        cls = class_distribution_loss(log_final, target, self.label_smoothing)
        if output.anchors is not None:
            anchor = anchor_loss(output.anchors)
            center = center_loss(output.embedding, output.anchors, target)
        else:
            anchor = center = cls.new_zeros(())
        aux = self.aux_scale
        total = self.lambda_cls * cls + aux * (self.lambda_anchor * anchor + self.lambda_center * center)
        return {"total": total, "cls": cls, "anchor": anchor, "center": center}
