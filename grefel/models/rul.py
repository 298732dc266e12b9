"""RUL: Relative Uncertainty Learning (Zhang, Wang, Deng, NeurIPS 2021).

Two branches over the backbone feature map F (N, C, h, w), each
``BatchNorm2d(C, affine=False, eps=2e-5) -> Dropout(0.4) -> flatten -> Linear(C h w, 64) ->
BatchNorm1d(64, eps=2e-5)``: a feature branch mu_i and an uncertainty branch log sigma_i^2. Training
mixes each sample with a random partner j = perm(i) of the same batch (possibly itself), weighted
by the relative uncertainty values s_i = mean_d exp(log sigma_i^2):

    z_i = s_i / (s_i + s_j) * mu_i + s_j / (s_i + s_j) * mu_j

and the "add-up" loss scores the mixed feature against both labels:

    L = 0.5 * CE(fc(z_i), y_i) + 0.5 * CE(fc(z_i), y_j)

(the formulas of the authors' ``src/rul.py`` and ``src/utils.py`` at
zyh-uaiaaaa/Relative-Uncertainty-Learning@63b73f2, reproduced by the fixture test; the paper's
equation numbers were not checked against its PDF). The uncertainty branch learns only through the
mixing weights. Evaluation: fc(mu_i), the uncertainty branch not run. The classifier trains at 10x
the learning rate of the rest (authors' ``main.py``: 2e-4 and 2e-3). The head's Linear(C h w, 64)
ties the model to one input size (the preset's; inputs are resized to it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grefel.models.resnets import BaselineNet, feature_shape


def uncertainty_branch(channels: int, height: int, width: int, out_dim: int = 64, drop_rate: float = 0.4):
    """BatchNorm2d (no affine) -> Dropout -> flatten -> Linear(C h w, out_dim) -> BatchNorm1d."""
    return nn.Sequential(
        nn.BatchNorm2d(channels, eps=2e-5, affine=False),
        nn.Dropout(drop_rate),
        nn.Flatten(),
        nn.Linear(channels * height * width, out_dim),
        nn.BatchNorm1d(out_dim, eps=2e-5),
    )


def mix_by_uncertainty(mu: torch.Tensor, log_var: torch.Tensor, perm: torch.Tensor | None = None) -> tuple:
    """(mixed features, perm, weight of self, weight of partner); ``perm`` drawn from torch's RNG if None."""
    s = log_var.float().exp().mean(dim=1, keepdim=True)
    if perm is None:
        perm = torch.randperm(mu.size(0), device=mu.device)
    w_self, w_other = s / (s + s[perm]), s[perm] / (s + s[perm])
    return w_self * mu + w_other * mu[perm], perm, w_self, w_other


def add_up_loss(logits: torch.Tensor, target: torch.Tensor, perm: torch.Tensor) -> dict[str, torch.Tensor]:
    """RUL's add-up loss 0.5 CE(fc(z), y) + 0.5 CE(fc(z), y[perm]): ``{"total", "ce"}`` (one term)."""
    loss = 0.5 * F.cross_entropy(logits.float(), target) + 0.5 * F.cross_entropy(logits.float(), target[perm])
    return {"total": loss, "ce": loss}


class RULHead(nn.Module):
    """mu / log-variance branches and the classifier over a (C, h, w) feature map."""

    def __init__(self, channels, height, width, out_dim: int = 64, num_classes: int = 7, drop_rate: float = 0.4):
        super().__init__()
        self.mu = uncertainty_branch(channels, height, width, out_dim, drop_rate)
        self.log_var = uncertainty_branch(channels, height, width, out_dim, drop_rate)
        self.fc = nn.Linear(out_dim, num_classes)

    def forward(self, fmap: torch.Tensor, perm: torch.Tensor | None = None):
        """Eval: logits. Training: (logits of the mixed features, perm)."""
        mu = self.mu(fmap)
        if not self.training:
            return self.fc(mu)
        mixed, perm, _, _ = mix_by_uncertainty(mu, self.log_var(fmap), perm)
        return self.fc(mixed), perm


class RUL(BaselineNet):
    """Backbone + :class:`RULHead` (built for the preset's input size)."""

    method = "rul"

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        input_size: int | None = 224,
        out_dim: int = 64,
        drop_rate: float = 0.4,
    ):
        super().__init__(num_classes, backbone, input_size)
        c, h, w = feature_shape(self.backbone, input_size or 224)
        self.head = RULHead(c, h, w, out_dim, num_classes, drop_rate)

    @property
    def fc(self) -> nn.Linear:
        return self.head.fc

    def forward_head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.head.mu(fmap)
        return self.head.fc(mu), mu

    def forward_train(self, x: torch.Tensor, perm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: (logits of the uncertainty-mixed features, the partner permutation)."""
        return self.head(self.forward_features(x), perm)
