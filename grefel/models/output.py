"""What one forward pass of GReFEL returns (paper section 3).

Every field the reports need comes out of a single call, so evaluation never re-runs parts of the
model. Distributions are probabilities over the dataset's classes (rows sum to 1); confidences are
``C_f`` of eq. 10-11, in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F


@dataclass
class GReFELOutput:
    logits: torch.Tensor  # f(e) before the softmax of eq. 9, (B, C)
    primary: torch.Tensor  # primary distribution l, eq. 9, (B, C)
    geometric: torch.Tensor  # anchor (geometric) correction t_g, eq. 15, (B, C)
    attentive: torch.Tensor  # attentive correction t_a, eq. 17, (B, C)
    correction: torch.Tensor  # combined correction t, eq. 18, (B, C)
    corrected: torch.Tensor  # corrected distribution L_final, eq. 19, (B, C)
    conf_primary: torch.Tensor  # c_l = C_f(l), (B,)
    conf_geometric: torch.Tensor  # c_g = C_f(t_g), (B,)
    conf_attentive: torch.Tensor  # c_a = C_f(t_a), (B,)
    conf_correction: torch.Tensor  # c_t = C_f(t), (B,)
    similarity: torch.Tensor  # s^{ij}(e), eq. 14, (B, C, K); empty (B, C, 0) without anchors
    embedding: torch.Tensor  # e, (B, D)
    tokens: torch.Tensor  # encoder token sequence (B, T, D), CLS first
    log_corrected: torch.Tensor | None = None  # log L_final, computed stably (the loss of eq. 20 uses it), (B, C)
    anchors: torch.Tensor | None = None  # the model's anchors a^{ij} (C, K, D): NOT per sample; None without anchors

    def detach(self) -> GReFELOutput:
        return GReFELOutput(**{f.name: _apply(getattr(self, f.name), "detach") for f in fields(self)})

    def to(self, *args, **kwargs) -> GReFELOutput:
        return GReFELOutput(**{f.name: _apply(getattr(self, f.name), "to", *args, **kwargs) for f in fields(self)})

    @staticmethod
    def cat(outputs: list[GReFELOutput]) -> GReFELOutput:
        """Concatenate the per-sample fields of several batches (anchors are taken from the first)."""
        out = {}
        for f in fields(GReFELOutput):
            vals = [getattr(o, f.name) for o in outputs]
            if f.name == "anchors" or vals[0] is None:
                out[f.name] = vals[0]
            else:
                out[f.name] = torch.cat(vals)
        return GReFELOutput(**out)


def _apply(t: torch.Tensor | None, method: str, *args, **kwargs) -> torch.Tensor | None:
    return None if t is None else getattr(t, method)(*args, **kwargs)


def single_distribution_output(logits: torch.Tensor, embedding: torch.Tensor) -> GReFELOutput:
    """The output of a model with one class distribution (the noisy-label baselines EAC, SCN, RUL, CE).

    ``primary`` and ``corrected`` both hold ``softmax(logits)`` (so their argmaxes agree and nothing is
    "fixed" or "broken" by a correction); the corrections are uniform with confidence 0, as an absent
    correction is in GReFEL (eq. 18-19 then leave the primary distribution as it is); ``conf_primary``
    is C_f of that distribution; ``tokens`` is the embedding as a single token; no anchors.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logits = logits.to(dtype)
    log_p = F.log_softmax(logits, dim=-1)
    p = log_p.exp()
    b, c = logits.shape
    uniform = torch.full((b, c), 1.0 / c, device=logits.device, dtype=dtype)
    zero = logits.new_zeros(b)
    conf = 1 + (p * log_p).sum(-1) / math.log(c)  # C_f of eq. 10-11: 1 - H(p) / log C
    return GReFELOutput(
        logits=logits,
        primary=p,
        geometric=uniform,
        attentive=uniform,
        correction=uniform,
        corrected=p,
        conf_primary=conf.clamp(0, 1),
        conf_geometric=zero,
        conf_attentive=zero,
        conf_correction=zero,
        similarity=logits.new_zeros(b, c, 0),
        embedding=embedding,
        tokens=embedding.unsqueeze(1),
        log_corrected=log_p,
        anchors=None,
    )
