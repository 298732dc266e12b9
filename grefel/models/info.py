"""Parameters and FLOPs of a GReFEL preset, per module group (``grefel model-info``).

FLOPs come from torch's own counter (``torch.utils.flop_counter.FlopCounterMode``) on one image at
112 x 112 (what both streams see), eval mode. torch counts a multiply-accumulate as 2 FLOPs; the
paper's and POSTER++'s "GFLOPs" (8.4 for POSTER++) count multiply-accumulates, i.e. GMACs = GFLOPs / 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from grefel.models.grefel import create_model

# module group -> prefixes of GReFEL's module names
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("landmark stream (MobileFaceNet)", ("encoder.face_landback",)),
    ("image stream (IR-50 stages 1-3)", ("encoder.ir_back",)),
    (
        "cross-attention, 3 scales (eq. 1-5)",
        (
            "encoder.conv1",
            "encoder.conv2",
            "encoder.conv3",
            "encoder.last_face_conv",
            "encoder.window",
            "encoder.attn",
            "encoder.ffn",
        ),
    ),
    ("multi-scale fusion ViT + SE (eq. 6-8)", ("encoder.embed_", "encoder.VIT")),
    ("primary MLP head (eq. 9)", ("head",)),
    ("anchors (eq. 12-15)", ("geometric",)),
    ("attentive MHSA (eq. 16-17)", ("attentive",)),
]


@dataclass
class GroupRow:
    name: str
    trainable: int = 0
    frozen: int = 0
    flops: float = 0.0


@dataclass
class ModelSummary:
    """Per-group parameter counts (trainable / frozen) and forward FLOPs of one model."""

    preset: str
    num_classes: int
    config: dict[str, Any]
    rows: list[GroupRow] = field(default_factory=list)
    input_size: int = 112
    internal_size: int = 112  # what both streams see after the preset's resize

    @property
    def total(self) -> GroupRow:
        return GroupRow(
            "total",
            sum(r.trainable for r in self.rows),
            sum(r.frozen for r in self.rows),
            sum(r.flops for r in self.rows),
        )

    @property
    def encoder(self) -> GroupRow:
        rows = self.rows[:4]
        return GroupRow(
            "encoder", sum(r.trainable for r in rows), sum(r.frozen for r in rows), sum(r.flops for r in rows)
        )

    def __rich__(self):
        from rich.table import Table

        t = Table(
            title=f"GReFEL preset '{self.preset}', {self.num_classes} classes, "
            f"reliability {self.config.get('reliability', 'both')}",
            caption=f"FLOPs: torch FlopCounterMode, 1 image of {self.input_size}x{self.input_size} (both streams see "
            f"{self.internal_size}x{self.internal_size}); GMACs (the paper's unit) = GFLOPs / 2",
        )
        t.add_column("module group")
        for col in ("trainable", "frozen", "GFLOPs"):
            t.add_column(col, justify="right")
        for r in self.rows:
            t.add_row(r.name, _m(r.trainable), _m(r.frozen), f"{r.flops / 1e9:.3f}")
        t.add_section()
        for r in (self.encoder, self.total):
            t.add_row(r.name, _m(r.trainable), _m(r.frozen), f"{r.flops / 1e9:.3f}", style="bold")
        return t

    def as_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "internal_size": self.internal_size,
            "groups": [r.__dict__ for r in self.rows],
            "encoder": self.encoder.__dict__,
            "total": self.total.__dict__,
        }


def _m(n: int) -> str:
    return f"{n / 1e6:.3f}M"


def _group_of(name: str) -> int:
    for i, (_, prefixes) in enumerate(GROUPS):
        if name.startswith(prefixes):
            return i
    raise KeyError(f"parameter {name} belongs to no module group of grefel.models.info.GROUPS")


def layer_groups(model: torch.nn.Module, input_size: int = 112) -> list[GroupRow]:
    """Per-group trainable / frozen parameters and forward FLOPs (one image) of a GReFEL model."""
    from torch.utils.flop_counter import FlopCounterMode

    rows = [GroupRow(name) for name, _ in GROUPS]
    for name, p in model.named_parameters():
        row = rows[_group_of(name)]
        if p.requires_grad:
            row.trainable += p.numel()
        else:
            row.frozen += p.numel()
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    x = torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    top = type(model).__name__ + "."
    for mod, counts in counter.get_flop_counts().items():
        name = mod[len(top) :] if mod.startswith(top) else ""
        for row, (_, prefixes) in zip(rows, GROUPS):
            # count a module at the depth of its group's prefix only, so nothing is counted twice
            if any(name.startswith(p) and name.count(".") == p.count(".") for p in prefixes):
                row.flops += sum(counts.values())
                break
    return rows


def model_summary(preset: str = "full", num_classes: int = 7, input_size: int = 112, **overrides: Any) -> ModelSummary:
    """Build ``create_model(preset, num_classes, **overrides)`` and summarise it (see :class:`ModelSummary`)."""

    model = create_model(preset, num_classes, **overrides)
    return ModelSummary(
        preset,
        num_classes,
        {**model.model_config},
        layer_groups(model, input_size),
        input_size,
        model.encoder.input_size,
    )
