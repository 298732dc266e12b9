"""The noisy-label baselines' backbones, their shared model base, and the plain cross-entropy baseline (CE).

Backbones map images (N, 3, H, W) to a feature map (N, C, h, w), by name:

* ``resnet18``: torchvision's ResNet-18 up to ``layer4`` (512 x 7 x 7 at 224 px). SCN uses
  torchvision's model itself; RUL's own ResNet-18 has the same layers, strides and key names, so
  this trunk computes RUL's features exactly (tests/test_baselines_fidelity.py).
* ``resnet50_caffe``: the VGGFace2 ResNet-50 EAC loads (``resnet50_ft_weight.pkl``), a Caffe-style
  ResNet-50 (cydonia999/VGGFace2-pytorch): each stage's stride 2 sits on the bottleneck's first 1x1
  convolution (torchvision: on the 3x3) and the stem max-pool is ``MaxPool2d(3, 2, padding=0,
  ceil_mode=True)`` (torchvision: ``padding=1``). Key names and shapes are torchvision's, so
  torchvision's ResNet-50 is built and its strides moved (:func:`caffe_style`); with the same weights
  plain torchvision ResNet-50 computes other features.
* ``tiny``: a small ResNet (a 3x3 stride-2 stem and one basic block per stage, 16-32-64-128
  channels, 0.3 M parameters): the CPU-sized variant for tests and studies on synthetic faces
  (64 px -> 128 x 4 x 4). A plain four-layer CNN of this size stayed near chance on the demo's
  synthetic faces for 10 epochs; this one learns them about as fast as GReFEL's tiny preset
  (bench/RESULTS.md).

Presets (``preset`` of ``grefel train`` for a baseline method): ``full`` = ResNet-18 at 224 px (the
backbone of the published noisy-RAF-DB comparisons; MS-Celeb-1M weights), ``resnet50`` = the
Caffe-style ResNet-50 at 224 px (VGGFace2 weights; EAC's repository default), ``tiny`` = the small CNN
at 64 px. Inputs are resized to the preset's size inside the model (the papers resize RAF-DB's
100 px faces to 224; grefel's stored faces are 128 px, cropped to 112).

:class:`BaselineNet` is what the four baselines share, timm-style: ``forward_features`` (resize +
backbone -> feature map), ``forward_head`` (feature map -> logits and embedding), and ``forward``:
in eval mode a :class:`~grefel.models.output.GReFELOutput` (one distribution,
:func:`~grefel.models.output.single_distribution_output`), in training mode what the method's loss
needs (``forward_train``). :class:`ResNetCE` is the plain baseline: pooled features, a linear
classifier, cross-entropy (the "Baseline" rows of the noisy-label FER papers).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from grefel.core.errors import GrefelError
from grefel.core.recipe import BASELINE_PRESETS
from grefel.models.output import GReFELOutput, single_distribution_output

STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
BACKBONES = ("resnet18", "resnet50_caffe", "tiny")
PRESET_BACKBONES: dict[str, dict[str, Any]] = {  # baseline preset -> BaselineNet keyword arguments
    "full": {"backbone": "resnet18", "input_size": 224},
    "resnet50": {"backbone": "resnet50_caffe", "input_size": 224},
    "tiny": {"backbone": "tiny", "input_size": 64},
}
assert tuple(PRESET_BACKBONES) == BASELINE_PRESETS


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without ``avgpool`` and ``fc``; its state-dict keys stay torchvision's."""

    def __init__(self, net: torchvision.models.ResNet):
        super().__init__()
        for name in STAGES:
            setattr(self, name, getattr(net, name))
        self.out_channels = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in STAGES:
            x = getattr(self, name)(x)
        return x


def caffe_style(net: torchvision.models.ResNet) -> torchvision.models.ResNet:
    """torchvision ResNet-50 -> the VGGFace2 / Caffe ResNet-50: each stage's stride moves from the 3x3
    to the first 1x1 convolution, and the stem max-pool becomes ceil-mode and unpadded."""
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for layer in (net.layer2, net.layer3, net.layer4):
        block = layer[0]
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    return net


class TinyResNet(nn.Module):
    """A 3x3 stride-2 stem, then one torchvision ``BasicBlock`` per stage (widths 16-32-64-128, stride 2
    from the second stage on), He init as torchvision's ResNets: 64 px -> (128, 4, 4)."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        c = widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        blocks = []
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or c != w:
                down = nn.Sequential(nn.Conv2d(c, w, 1, stride, bias=False), nn.BatchNorm2d(w))
            blocks.append(torchvision.models.resnet.BasicBlock(c, w, stride, down))
            c = w
        self.body = nn.Sequential(*blocks)
        self.out_channels = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(x))


def create_backbone(name: str) -> nn.Module:
    """``resnet18`` | ``resnet50_caffe`` | ``tiny`` -> a module with ``out_channels`` (random weights)."""
    if name == "resnet18":
        return ResNetTrunk(torchvision.models.resnet18(weights=None))
    if name == "resnet50_caffe":
        return ResNetTrunk(caffe_style(torchvision.models.resnet50(weights=None)))
    if name == "tiny":
        return TinyResNet()
    raise GrefelError(f"unknown baseline backbone {name!r}: use one of {', '.join(BACKBONES)}")


@torch.no_grad()
def feature_shape(backbone: nn.Module, input_size: int) -> tuple[int, int, int]:
    """(C, h, w) of the backbone's feature map for ``input_size`` px inputs (one eval-mode pass, no
    BatchNorm statistics updated)."""
    was = backbone.training
    backbone.eval()
    try:
        c, h, w = backbone(torch.zeros(1, 3, input_size, input_size)).shape[1:]
    finally:
        backbone.train(was)
    return int(c), int(h), int(w)


class BaselineNet(nn.Module):
    """Backbone + a method's head. Subclasses set ``method`` and define ``forward_head`` and ``forward_train``."""

    method = ""

    def __init__(self, num_classes: int, backbone: str = "resnet18", input_size: int | None = 224):
        super().__init__()
        if num_classes < 2:
            raise GrefelError(f"num_classes must be at least 2 (got {num_classes})")
        self.num_classes, self.input_size, self.backbone_name = num_classes, input_size, backbone
        self.backbone = create_backbone(backbone)
        self.model_config: dict[str, Any] = {}
        self.model_kwargs: dict[str, Any] = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) -> feature map (N, C, h, w); inputs resized to ``input_size`` first."""
        s = self.input_size
        if s is not None and tuple(x.shape[-2:]) != (s, s):
            down = x.shape[-1] > s
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=down)
        return self.backbone(x)

    def forward_head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature map -> (logits, embedding) as the method evaluates."""
        raise NotImplementedError

    def forward_train(self, x: torch.Tensor, *extra):
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *extra):
        """Eval mode: a GReFELOutput of the method's distribution. Training mode: ``forward_train``."""
        if self.training:
            return self.forward_train(x, *extra)
        return self.predict(x)

    def predict(self, x: torch.Tensor) -> GReFELOutput:
        logits, embedding = self.forward_head(self.forward_features(x))
        return single_distribution_output(logits, embedding)

    def classifier_parameters(self) -> list[nn.Parameter]:
        """The final classifier's parameters (RUL trains them at 10x the learning rate)."""
        return list(self.fc.parameters())


class ResNetCE(BaselineNet):
    """The plain baseline: global average pooling, a linear classifier, cross-entropy (:func:`ce_loss`)."""

    method = "ce"

    def __init__(self, num_classes: int, backbone: str = "resnet18", input_size: int | None = 224):
        super().__init__(num_classes, backbone, input_size)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)

    def forward_head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = fmap.mean(dim=(2, 3))
        return self.fc(pooled), pooled

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """Training forward: the logits."""
        return self.forward_head(self.forward_features(x))[0]


def ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The baseline's loss: mean cross-entropy of the logits against the (possibly noisy) labels."""
    return F.cross_entropy(logits.float(), target)


def baseline_kwargs(preset: str, num_classes: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """BaselineNet keyword arguments of ``preset`` with ``overrides`` (a fresh dict)."""
    if preset not in PRESET_BACKBONES:
        raise GrefelError(
            f"unknown preset {preset!r} for a baseline method: use one of {', '.join(PRESET_BACKBONES)} "
            "(full = ResNet-18, resnet50 = the VGGFace2 ResNet-50, tiny = a small CNN)"
        )
    return {"num_classes": num_classes, **copy.deepcopy(PRESET_BACKBONES[preset]), **overrides}
