"""Image presets, kept apart from the training loop (as in torchvision's classification references).

Prepared shards store aligned faces at ``S x S`` (128 by default). The network consumes 112 x 112
(both POSTER++ streams resize to 112 internally), so the paper's "resize 256, random crop 224" is
reproduced at half resolution: random crop 112 of 128 in training (the same 0.875 ratio) and a
centre crop 112 at evaluation. Normalisation is ImageNet mean/std, as POSTER++ trained with.

The evaluation preset lives here; training augmentation presets are added beside it.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_INPUT = 112


def to_float_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1] (no copy of the uint8 data on the way)."""
    t = torch.as_tensor(images)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < size or w < size:
        x = torch.nn.functional.interpolate(x, size=(max(h, size), max(w, size)), mode="bilinear", align_corners=False, antialias=True)
        h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def eval_batch(images: np.ndarray | torch.Tensor, crop: int = MODEL_INPUT, device: str | torch.device = "cpu") -> torch.Tensor:
    """Evaluation preset: uint8 NHWC faces as stored -> normalised float NCHW model input."""
    x = to_float_nchw(torch.as_tensor(images).to(device))
    return normalize(center_crop(x, crop))
