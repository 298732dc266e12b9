"""GReFEL: encoder + primary MLP + reliability balancing (presets by name: :mod:`grefel.models.presets`).

    x -> PosterEncoder -> (e, tokens)
      e ------------------------> PrimaryHead -> logits, l = softmax       eq. (9)
      e ------------------------> GeometricCorrection -> t_g, s            eq. (12)-(15)
      (e, tokens) --------------> AttentiveCorrection -> t_a               eq. (16)-(17)
      t = c_g/(c_g+c_a) t_g + c_a/(c_g+c_a) t_a                            eq. (18)
      L_final = c_l/(c_l+c_t) l + c_t/(c_l+c_t) t                          eq. (19)

Ablation switch ``reliability``: ``both`` (the paper), ``anchors`` (t = t_g), ``mhsa`` (t = t_a),
``none`` (L_final = l). An absent correction is reported as the uniform distribution with
confidence 0, which is exactly what eq. (18)/(19) ignore, so every output field stays defined.

``create_model(preset, num_classes, **overrides)`` builds a model; ``model.model_config`` is the
keyword dict that rebuilds it (preset name and overrides, readable), ``model.model_kwargs`` the
resolved constructor arguments (``GReFEL(**model_kwargs)``), which rebuild the same architecture
even after a preset changes. Checkpoints store both.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from grefel.core.errors import GrefelError
from grefel.core.recipe import RELIABILITY  # Table 2
from grefel.models.output import GReFELOutput
from grefel.models.poster import PosterEncoder
from grefel.models.presets import preset_kwargs
from grefel.models.reliability import (
    AttentiveCorrection,
    GeometricCorrection,
    PrimaryHead,
    confidence,
    fusion_weights,
    mix,
)


class GReFEL(nn.Module):
    """GReFEL model; ``forward(x)`` returns a :class:`GReFELOutput` with every field filled."""

    def __init__(
        self,
        num_classes: int,
        encoder: dict[str, Any] | None = None,
        reliability: str = "both",
        num_anchors: int = 10,
        delta: float = 1.0,
        dropout: float = 0.5,
        drop_path: float = 0.25,
        head_hidden: tuple[int, ...] = (64, 64),
        attn_heads: int = 12,
    ):
        super().__init__()
        if reliability not in RELIABILITY:
            raise GrefelError(f"unknown reliability setup {reliability!r}: use one of {', '.join(RELIABILITY)}")
        if num_classes < 2:
            raise GrefelError(f"num_classes must be at least 2 (got {num_classes})")
        self.num_classes, self.reliability = num_classes, reliability
        self.encoder = PosterEncoder(**{**(encoder or {}), "drop_path": drop_path})
        dim = self.encoder.embed_dim
        self.head = PrimaryHead(dim, num_classes, tuple(head_hidden), dropout)
        self.geometric = (
            GeometricCorrection(dim, num_classes, num_anchors, delta) if reliability in ("both", "anchors") else None
        )
        self.attentive = AttentiveCorrection(dim, num_classes, attn_heads) if reliability in ("both", "mhsa") else None
        self.model_config: dict[str, Any] = {}
        self.model_kwargs: dict[str, Any] = {}

    @property
    def anchors(self) -> torch.Tensor | None:
        """The anchors a^{ij} (N_cls, K, D), or None without geometric correction."""
        return None if self.geometric is None else self.geometric.anchors

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (embedding e (B, D), tokens (B, T, D))."""
        return self.encoder(x)

    def forward_head(self, e: torch.Tensor, tokens: torch.Tensor) -> GReFELOutput:
        """Embedding and tokens -> every distribution and confidence of eq. (9)-(19)."""
        # reliability balancing in float32 even under autocast (float64 stays float64: tests use it)
        dtype = torch.promote_types(e.dtype, torch.float32)
        e32, tokens32 = e.to(dtype), tokens.to(dtype)
        B, C = e.shape[0], self.num_classes
        with torch.autocast(device_type=e.device.type, enabled=False):
            logits = self.head(e32)
            log_l = F.log_softmax(logits, dim=-1)  # eq. (9)
            log_uniform = torch.full((B, C), -math.log(C), device=e.device, dtype=dtype)
            zero = torch.zeros(B, device=e.device, dtype=dtype)
            if self.geometric is not None:
                log_tg, log_s = self.geometric(e32)  # eq. (13)-(15)
                c_g = confidence(log_p=log_tg)
            else:
                log_tg, log_s, c_g = log_uniform, log_uniform.new_zeros(B, C, 0), zero
            if self.attentive is not None:
                log_ta = F.log_softmax(self.attentive(e32, tokens32), dim=-1)  # eq. (17)
                c_a = confidence(log_p=log_ta)
            else:
                log_ta, c_a = log_uniform, zero
            if self.reliability == "both":
                w_g, w_a = fusion_weights(c_g, c_a)
                log_t = mix(w_g, log_tg, w_a, log_ta)  # eq. (18)
            else:
                log_t = {"anchors": log_tg, "mhsa": log_ta, "none": log_uniform}[self.reliability]
            c_l = confidence(log_p=log_l)
            c_t = confidence(log_p=log_t) if self.reliability != "none" else zero
            if self.reliability == "none":
                log_final = log_l
            else:
                w_l, w_t = fusion_weights(c_l, c_t)
                log_final = mix(w_l, log_l, w_t, log_t)  # eq. (19)
        return GReFELOutput(
            logits=logits,
            primary=log_l.exp(),
            geometric=log_tg.exp(),
            attentive=log_ta.exp(),
            correction=log_t.exp(),
            corrected=log_final.exp(),
            conf_primary=c_l,
            conf_geometric=c_g,
            conf_attentive=c_a,
            conf_correction=c_t,
            similarity=log_s.exp(),
            embedding=e,
            tokens=tokens,
            log_corrected=log_final,
            anchors=self.anchors,
        )

    def forward(self, x: torch.Tensor) -> GReFELOutput:
        e, tokens = self.forward_features(x)
        return self.forward_head(e, tokens)


def create_model(preset: str = "full", num_classes: int = 7, **overrides: Any) -> GReFEL:
    """Build a GReFEL model from a registered preset, with keyword overrides.

    Overrides: reliability ('both' | 'anchors' | 'mhsa' | 'none'), num_anchors (K, 10),
    delta (1.0), dropout (0.5), drop_path, head_hidden, attn_heads, encoder (dict of
    PosterEncoder arguments, merged into the preset's). ``model.model_config`` rebuilds it:
    ``create_model(**model.model_config)``.
    """
    kwargs = preset_kwargs(preset)
    for k, v in overrides.items():
        if k == "encoder":
            kwargs["encoder"] = {**kwargs.get("encoder", {}), **(v or {})}
        else:
            kwargs[k] = v
    return _build({"num_classes": num_classes, **kwargs}, {"preset": preset, "num_classes": num_classes, **overrides})


def check_overrides(overrides: dict[str, Any]) -> None:
    """Keyword overrides of :func:`create_model` (a run's ``model_args``) checked against the constructors
    of GReFEL and, for ``encoder``, PosterEncoder, without building anything: a one-line GrefelError
    naming an unknown argument (and the nearest known one)."""
    own = [k for k in inspect.signature(GReFEL.__init__).parameters if k not in ("self", "num_classes")]
    enc = [k for k in inspect.signature(PosterEncoder.__init__).parameters if k not in ("self", "drop_path")]
    for key, value in overrides.items():
        if key not in own:
            raise GrefelError(_unknown_argument(key, own, "model argument"))
        if key == "encoder":
            if not isinstance(value, dict):
                raise GrefelError(f"encoder must be a table of encoder arguments (got {value!r})")
            for k in value:
                if k not in enc:
                    raise GrefelError(_unknown_argument(k, enc, "encoder argument"))


def _unknown_argument(key: str, known: list[str], what: str) -> str:
    near = difflib.get_close_matches(key, known, n=1)
    return (
        f"unknown {what} {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "") + f": one of {', '.join(known)}"
    )


def model_from_kwargs(model_kwargs: dict[str, Any], model_config: dict[str, Any] | None = None) -> GReFEL:
    """The model a checkpoint records: ``GReFEL(**model_kwargs)``, the architecture it was trained
    with whatever the presets are now (``model_config``: the preset and overrides it came from)."""
    return _build(dict(model_kwargs), dict(model_config or {}))


def _build(model_kwargs: dict[str, Any], model_config: dict[str, Any]) -> GReFEL:
    try:
        model = GReFEL(**model_kwargs)
    except TypeError as e:
        raise GrefelError(f"bad model option: {e}; see `grefel model-info --help`") from None
    model.model_config = model_config
    model.model_kwargs = copy.deepcopy(model_kwargs)
    return model
