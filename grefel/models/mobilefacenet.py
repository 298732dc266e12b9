"""MobileFaceNet, the frozen landmark stream of the encoder (paper 3.1).

POSTER++ uses the 68-point landmark network ``MobileFaceNet([112, 112], 136)`` and reads three of
its feature maps: after ``conv_3`` (64 x 28 x 28), after ``conv_4`` (128 x 14 x 14) and after
``conv_6_sep`` (512 x 7 x 7). Its landmark head (``output_layer``, 136 outputs) never runs, so
it is not built here; :mod:`grefel.weights.verify` reports its keys as unused.

Module names match the public checkpoint (``conv1.conv.weight``, ``conv_3.model.0.conv_dw.bn.*``,
...). Widths, expansions and block counts are arguments so the ``tiny`` preset keeps the same
layout; the stream is frozen by the encoder (no gradients, BatchNorm always in eval mode).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv -> BN -> PReLU (``Conv_block``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.prelu = nn.PReLU(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class LinearBlock(nn.Module):
    """Conv -> BN, no activation (``Linear_block``)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 project (``Depth_Wise``)."""

    def __init__(self, in_chs: int, out_chs: int, expand: int, stride: int = 2, residual: bool = False):
        super().__init__()
        self.conv = ConvBlock(in_chs, expand)
        self.conv_dw = ConvBlock(expand, expand, 3, stride, 1, groups=expand)
        self.project = LinearBlock(expand, out_chs)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class Residual(nn.Module):
    """``num_block`` residual DepthWise units at constant width (``Residual``)."""

    def __init__(self, chs: int, num_block: int, expand: int):
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(chs, chs, expand, stride=1, residual=True) for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """Landmark feature extractor; returns the maps after conv_3 (28x28), conv_4 (14x14), conv_6_sep (7x7).

    Defaults are the public 68-point network: widths (64, 128, 512), expansions
    (128, 128, 256, 256, 512, 256) for conv_23 / conv_3 / conv_34 / conv_4 / conv_45 / conv_5,
    residual blocks (4, 6, 2): 0.91M parameters without the unused landmark head.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (64, 128, 512),
        expand: tuple[int, int, int, int, int, int] = (128, 128, 256, 256, 512, 256),
        blocks: tuple[int, int, int] = (4, 6, 2),
    ):
        super().__init__()
        c1, c2, c6 = widths
        self.widths = (c1, c2, c6)
        self.conv1 = ConvBlock(3, c1, 3, 2, 1)
        self.conv2_dw = ConvBlock(c1, c1, 3, 1, 1, groups=c1)
        self.conv_23 = DepthWise(c1, c1, expand[0])
        self.conv_3 = Residual(c1, blocks[0], expand[1])
        self.conv_34 = DepthWise(c1, c2, expand[2])
        self.conv_4 = Residual(c2, blocks[1], expand[3])
        self.conv_45 = DepthWise(c2, c2, expand[4])
        self.conv_5 = Residual(c2, blocks[2], expand[5])
        self.conv_6_sep = ConvBlock(c2, c6)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.conv_23(self.conv2_dw(self.conv1(x)))
        x1 = self.conv_3(x)
        x2 = self.conv_4(self.conv_34(x1))
        x3 = self.conv_6_sep(self.conv_5(self.conv_45(x2)))
        return x1, x2, x3
