"""Reliability balancing (paper 3.2-3.3): primary distribution, confidences, the two label corrections
and their confidence-weighted fusion, eq. (9)-(19).

Everything is computed per sample: no prediction depends on the other samples of its batch (in
eval mode; in train mode the BatchNorm of the primary MLP uses batch statistics, as any BN does).
Distributions are carried as log-probabilities where a product or a mixture is formed, so that
extreme logits give no NaN, no inf and no 0/0 (see :func:`mix`).

Decisions on the paper's ambiguities (docs/model.md has the reasons):
- eq. (11) is normalised by ``log N_cls`` (not ``N_cls``): only then does a uniform distribution
  get entropy 1 and confidence 0, as the text says. ``0 log 0 = 0``.
- eq. (16)-(17): the embedding e attends over its own token sequence ``[e; Xo tokens]`` (one query
  per sample, keys/values from that sample only); ``W_o`` maps the heads straight to class scores.
- eq. (18)-(19): when both confidences are 0 (both inputs uniform) the weights fall back to 1/2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

_TINY = 1e-30  # floor for mixture weights before their log (a zero weight contributes nothing)


def entropy(log_p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of log-probabilities; 0 log 0 = 0."""
    p = log_p.exp()
    return -(p * log_p.clamp_min(torch.finfo(log_p.dtype).min)).sum(-1)


def confidence(p: torch.Tensor | None = None, log_p: torch.Tensor | None = None) -> torch.Tensor:
    """C_f of eq. (10)-(11): 1 - H(p) / log N_cls, in [0, 1]; uniform -> 0, one-hot -> 1.

    Give probabilities ``p`` or log-probabilities ``log_p`` (rows over the last dimension).
    """
    if log_p is None:
        n = p.shape[-1]
        h = -torch.special.xlogy(p, p).sum(-1)  # xlogy(0, 0) = 0: a one-hot row has entropy exactly 0
    else:
        n = log_p.shape[-1]
        h = entropy(log_p)
    if n < 2:
        return torch.ones_like(h)
    return (1.0 - h / math.log(n)).clamp(0.0, 1.0)  # eq. (10), (11) with log N_cls


def fusion_weights(c_a: torch.Tensor, c_b: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights c_a/(c_a+c_b), c_b/(c_a+c_b) of eq. (18)/(19); (1/2, 1/2) when c_a + c_b = 0."""
    s = c_a + c_b
    ok = s > eps
    safe = torch.where(ok, s, torch.ones_like(s))  # no 0/0, and no NaN gradient through the unused branch
    half = torch.full_like(s, 0.5)
    return torch.where(ok, c_a / safe, half), torch.where(ok, c_b / safe, half)


def mix(w_a: torch.Tensor, log_a: torch.Tensor, w_b: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """log(w_a * a + w_b * b) for row weights (B,) and log-distributions (B, C), computed stably."""
    la = w_a.clamp_min(_TINY).log().unsqueeze(-1) + log_a
    lb = w_b.clamp_min(_TINY).log().unsqueeze(-1) + log_b
    return torch.logaddexp(la, lb)


class PrimaryHead(nn.Module):
    """f(e; theta_f) of eq. (9): MLP with hidden layers (64, 64), each Linear -> ReLU -> BN -> Dropout.

    The paper lists "ReLU, dropout and batch normalization"; the order here is the authors' ARBEx
    code's (BN before dropout), which avoids dropout's variance shift feeding BN statistics.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: tuple[int, ...] = (64, 64), dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True), nn.BatchNorm1d(h), nn.Dropout(dropout)]
            d = h
        self.mlp = nn.Sequential(*layers)
        self.fc = nn.Linear(d, num_classes)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mlp(e))  # logits; l = softmax(logits), eq. (9)


class GeometricCorrection(nn.Module):
    """Anchor label correction, eq. (12)-(15): K trainable anchors per class in the embedding space.

    Anchors start at the scale of the embedding (unit normal per dimension, like LayerNorm'd
    tokens), already apart: with the bounded anchor loss and the center loss this fixes the scale
    of the embedding space. Anchors near the origin would let the center loss shrink e towards 0
    (the primary head's BatchNorm makes the logits blind to that scale) and stall t_g.
    """

    def __init__(self, dim: int, num_classes: int, num_anchors: int = 10, delta: float = 1.0):
        super().__init__()
        if num_anchors < 1:
            raise ValueError("num_anchors (K) must be >= 1; use reliability='mhsa' or 'none' for no anchors")
        self.delta = float(delta)
        self.anchors = nn.Parameter(torch.empty(num_classes, num_anchors, dim))  # a^{ij}: (N_cls, K, D)
        trunc_normal_(self.anchors, std=1.0, a=-2.0, b=2.0)

    def distances(self, e: torch.Tensor) -> torch.Tensor:
        """d(e, a^{ij}) of eq. (13): Euclidean distance, (B, N_cls, K)."""
        return torch.linalg.vector_norm(e[:, None, None, :] - self.anchors.to(e.dtype), dim=-1)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (log t_g (B, N_cls), log s (B, N_cls, K))."""
        d = self.distances(e)
        B, C, K = d.shape
        log_s = F.log_softmax(-d.reshape(B, C * K) / self.delta, dim=-1).view(B, C, K)  # eq. (14)
        log_tg = torch.logsumexp(log_s, dim=-1)  # eq. (15): m^{ij} is one-hot on class i
        return log_tg, log_s


class AttentiveCorrection(nn.Module):
    """Attentive correction, eq. (16)-(17), per sample.

    Self-attention of a single vector is the identity, so the embedding e attends over its own
    sample's sequence ``[e; Xo tokens]``: q = W_q e, k = W_k S, v = W_v S with S that sequence.
    This is the self-attention output at e's position; it never looks at other samples. The
    output projection W_o maps the concatenated heads to class scores; t_a = softmax(W_out).
    """

    def __init__(self, dim: int, num_classes: int, num_heads: int = 12):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {num_heads} attention heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)  # W^(q) of all heads
        self.kv = nn.Linear(dim, 2 * dim)  # W^(k), W^(v) of all heads
        self.proj = nn.Linear(dim, num_classes)  # W_o
        for m in (self.q, self.kv, self.proj):
            trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, e: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """e (B, D), tokens (B, T, D) with CLS first -> class scores W_out (B, N_cls)."""
        seq = torch.cat([e.unsqueeze(1), tokens[:, 1:]], dim=1)  # the sample's own sequence, e first
        B, T, D = seq.shape
        h = self.num_heads
        q = self.q(e).view(B, 1, h, D // h).transpose(1, 2)  # (B, h, 1, d)
        k, v = self.kv(seq).view(B, T, 2, h, D // h).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, T, d)
        o = F.scaled_dot_product_attention(q, k, v)  # h_i = f(W_i^q q, W_i^k k, W_i^v v), eq. (16)
        return self.proj(o.transpose(1, 2).reshape(B, D))  # W_o [h_1 ... h_n], eq. (16)
