"""EAC: Erasing Attention Consistency (Zhang, Wang, Ling, Deng, "Learn From All", ECCV 2022).

Model: backbone feature map F (N, C, h, w) -> global average pooling -> linear classifier (W, b).
Its class activation maps are ``M_k = sum_c W[k, c] F[c]`` (no bias), computed with W *detached*,
so the consistency loss trains the backbone only and W learns from cross-entropy alone (as the
authors' ``Model.forward`` takes ``list(self.parameters())[-2].data``).

Training (the paper's "imbalanced framework"): two separate forward passes, one of the image x and
one of its horizontally flipped copy x' (each randomly erased; BatchNorm sees each view's batch on
its own). Cross-entropy is taken on x only; the consistency term is the mean squared difference
between the CAMs of x and the mirrored CAMs of x':

    L = l_cls + lambda * l_c,    l_cls = CE(f(x), y),
    l_c = mean_{n,k,i,j} (M(x)[n,k,i,j] - M(x')[n,k,i,w-1-j])^2,    lambda = 5

(the paper's loss of section 3, "flip attention consistency"; the paper's equation numbers were not
checked against its PDF: the formulas here are those of the authors' code, ``src/main.py`` and
``src/loss.py`` at zyh-uaiaaaa/Erasing-Attention-Consistency@61efdfd, which the fixture test
reproduces). The authors mirror the CAMs with ``grid_sample`` on a flipped grid; :func:`flip_consistency`
flips exactly (the two differ by the rounding of the sampling coordinates, bounded in the test).
Evaluation: the logits of x alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grefel.models.resnets import ResNetCE


def eac_head(fmap: torch.Tensor, fc: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled linear classifier and its class activation maps: (logits (N, K), CAMs (N, K, h, w))."""
    logits = fc(fmap.mean(dim=(2, 3)))
    cams = torch.einsum("nchw,kc->nkhw", fmap, fc.weight.detach().to(fmap.dtype))
    return logits, cams


def flip_consistency(cams: torch.Tensor, cams_of_flipped: torch.Tensor) -> torch.Tensor:
    """l_c: mean squared difference between the CAMs of x and the mirrored CAMs of flip(x)."""
    return F.mse_loss(cams.float(), cams_of_flipped.float().flip(-1))


def eac_loss(
    logits: torch.Tensor, target: torch.Tensor, cams: torch.Tensor, cams_of_flipped: torch.Tensor, lam: float = 5.0
) -> dict[str, torch.Tensor]:
    """EAC's loss L = l_cls + lambda l_c: ``{"total", "ce", "consistency"}`` (CE on the unflipped view only)."""
    ce = F.cross_entropy(logits.float(), target)
    cons = flip_consistency(cams, cams_of_flipped)
    return {"total": ce + lam * cons, "ce": ce, "consistency": cons}


class EAC(ResNetCE):
    """The plain baseline's network (pooled linear classifier) trained with class activation maps
    (:func:`eac_head`) of the image and its flip."""

    method = "eac"

    def forward_train(self, x: torch.Tensor, x_flipped: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Two separate passes (as the authors): (logits of x, CAMs of x, CAMs of the flipped view)."""
        logits, cams = eac_head(self.forward_features(x), self.fc)
        _, cams_flipped = eac_head(self.forward_features(x_flipped), self.fc)
        return logits, cams, cams_flipped
