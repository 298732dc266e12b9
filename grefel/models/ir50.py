"""IR-50, the image stream of the encoder (paper 3.1; face.evoLVe's "improved residual" network).

Only the first three stages run, as in POSTER++: ``input_layer`` (3x3 conv, BN, PReLU) at 112,
then ``body1`` (56x56), ``body2`` (28x28) and ``body3`` (14x14). Module names follow POSTER++'s
split IR-50 (``input_layer.*``, ``body1/2/3.N.{shortcut_layer,res_layer}.*``) so its weights load
1:1; face.evoLVe's ``body.N`` numbering is mapped in :mod:`grefel.weights.verify`.

Widths and unit counts are arguments so that the ``tiny`` preset keeps the same architecture.
"""

from __future__ import annotations

import torch
from torch import nn


class BottleneckIR(nn.Module):
    """One IR unit: BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN, plus the shortcut.

    The shortcut is a stride-``s`` subsampling (face.evoLVe's ``MaxPool2d(1, s)``) when the width
    is unchanged, otherwise a 1x1 conv + BN.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        if in_chs == out_chs:
            self.shortcut_layer = nn.MaxPool2d(1, stride) if stride > 1 else nn.Identity()
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_chs),
            nn.Conv2d(in_chs, out_chs, 3, 1, 1, bias=False),
            nn.PReLU(out_chs),
            nn.Conv2d(out_chs, out_chs, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def _stage(in_chs: int, out_chs: int, units: int) -> nn.Sequential:
    """A stage halves the resolution in its first unit (face.evoLVe's ``get_block``)."""
    return nn.Sequential(
        BottleneckIR(in_chs, out_chs, 2), *[BottleneckIR(out_chs, out_chs, 1) for _ in range(units - 1)]
    )


class IR50(nn.Module):
    """First three stages of IR-50; returns the three feature maps (strides 2, 4, 8 of the 112 input).

    Defaults are IR-50's (widths 64/128/256, units 3/4/14): 17.6M parameters.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (64, 128, 256),
        units: tuple[int, int, int] = (3, 4, 14),
        stem_width: int = 64,
    ):
        super().__init__()
        self.widths = tuple(widths)
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_width), nn.PReLU(stem_width)
        )
        self.body1 = _stage(stem_width, widths[0], units[0])
        self.body2 = _stage(widths[0], widths[1], units[1])
        self.body3 = _stage(widths[1], widths[2], units[2])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.input_layer(x)
        x1 = self.body1(x)
        x2 = self.body2(x1)
        x3 = self.body3(x2)
        return x1, x2, x3
