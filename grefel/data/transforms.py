"""Image presets, kept apart from the training loop (as in torchvision's classification references).

Prepared shards store aligned faces at ``S x S`` (128 by default). The network consumes 112 x 112
(both POSTER++ streams resize to 112 internally), so the paper's "resize 256, random crop 224" is
reproduced at half resolution: random crop 112 of 128 in training (the same 0.875 ratio) and a
centre crop 112 at evaluation. Normalisation is ImageNet mean/std, as POSTER++ trained with.

The evaluation preset is ``eval_batch``; the training preset is ``train_batch`` (below), which
augments a whole uint8 batch on the device the model runs on, with per-sample random parameters.
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


# ---------------------------------------------------------------------------------------------
# Training preset: "heavy augmentation" of section 4.1, batched on the device
# ---------------------------------------------------------------------------------------------
# torchvision.transforms.v2 applied to a batch tensor draws ONE set of random parameters for the
# whole batch, and looping over samples would starve a GPU. So the geometric part (random crop
# 112 of 128, horizontal flip, rotation) is one affine matrix per sample, applied to the whole
# batch by a single F.affine_grid + F.grid_sample call; the colour part uses torchvision's own
# formulas (v2.functional.rgb_to_grayscale, the _blend of adjust_brightness / contrast /
# saturation) with per-sample factors as (B, 1, 1, 1) tensors; random erasing is a per-sample
# rectangle mask (v2.RandomErasing semantics: area fraction, log-uniform aspect, value 0 after
# normalisation). The colour jitter order is fixed (brightness, contrast, saturation); hue jitter
# is left out (an RGB -> HSV round trip for little gain on faces).
#
# The random numbers are a table of uniforms, one row per position in the epoch, drawn from
# (seed, epoch) alone (augment_uniforms): the same image at the same position gets the same
# augmentation whatever the number of processes, the batch split or a resume, which is what
# makes resumed and multi-process runs reproduce an unbroken single-process run.

from dataclasses import dataclass  # noqa: E402

AUG_COLUMNS = ("shift_x", "shift_y", "flip", "angle", "brightness", "contrast", "saturation",
               "erase", "erase_area", "erase_ratio", "erase_top", "erase_left")


@dataclass(frozen=True)
class TrainAugment:
    """Strengths of the training augmentation (defaults: the recipe of docs/training.md)."""

    crop: int = MODEL_INPUT  # random crop of the stored S x S face (112 of 128 = 224 of 256)
    flip: float = 0.5  # probability of a horizontal flip
    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]
    brightness: float = 0.2  # factor uniform in [1 - b, 1 + b]
    contrast: float = 0.2
    saturation: float = 0.2
    erase: float = 0.5  # probability of random erasing (POSTER++ uses RandomErasing's default 0.5)
    erase_scale: tuple[float, float] = (0.02, 0.25)  # erased area fraction (POSTER++)
    erase_ratio: tuple[float, float] = (0.3, 3.3)  # aspect ratio range, log-uniform


def augment_uniforms(n: int, seed: int, epoch: int) -> torch.Tensor:
    """(n, len(AUG_COLUMNS)) float64 uniforms in [0, 1) for the n positions of one epoch."""
    ss = np.random.SeedSequence([int(seed), int(epoch), 0xA06])
    g = torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1)))
    return torch.rand(n, len(AUG_COLUMNS), generator=g, dtype=torch.float64)


def _gray(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2.functional import rgb_to_grayscale

    return rgb_to_grayscale(x, num_output_channels=1)


def train_batch(images: torch.Tensor, u: torch.Tensor, aug: TrainAugment = TrainAugment()) -> torch.Tensor:
    """Training preset: uint8 (B, S, S, 3) faces on any device + uniforms (B, 12) -> model input.

    Returns normalised float32 (B, 3, crop, crop). With every strength at 0 and zero shifts it
    equals :func:`eval_batch` (a centre crop).
    """
    import math

    import torch.nn.functional as F
    from torchvision.transforms.v2.functional import normalize as tv_normalize

    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    b, _, h, w = x.shape
    if h != w or h < aug.crop:
        raise ValueError(f"train_batch needs square images of at least {aug.crop} px, got {h}x{w}")
    u = u.to(device=x.device, dtype=torch.float32)
    c = aug.crop
    col = {name: u[:, k] for k, name in enumerate(AUG_COLUMNS)}

    # crop (integer offsets, like RandomCrop) + flip + rotation as one affine map per sample
    m = h - c
    shift_x = torch.floor(col["shift_x"] * (m + 1)).clamp_(max=m) - m / 2  # u may round to 1.0 in float32
    shift_y = torch.floor(col["shift_y"] * (m + 1)).clamp_(max=m) - m / 2
    sign = torch.where(col["flip"] < aug.flip, -1.0, 1.0)
    ang = (2 * col["angle"] - 1) * math.radians(aug.rotation)
    cos, sin, s = torch.cos(ang), torch.sin(ang), c / h
    theta = torch.stack([
        torch.stack([s * cos * sign, -s * sin, 2 * shift_x / h], 1),
        torch.stack([s * sin * sign, s * cos, 2 * shift_y / h], 1),
    ], 1)
    grid = F.affine_grid(theta, [b, 3, c, c], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).div_(255.0)

    # colour jitter with per-sample factors (torchvision's blend formulas)
    def factor(name: str, strength: float) -> torch.Tensor:
        return (1 + (2 * col[name] - 1) * strength).view(b, 1, 1, 1)

    if aug.brightness:
        x = (x * factor("brightness", aug.brightness)).clamp_(0, 1)
    if aug.contrast:
        f = factor("contrast", aug.contrast)
        x = (f * x + (1 - f) * _gray(x).mean((1, 2, 3), keepdim=True)).clamp_(0, 1)
    if aug.saturation:
        f = factor("saturation", aug.saturation)
        x = (f * x + (1 - f) * _gray(x)).clamp_(0, 1)
    x = tv_normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))

    # random erasing: one rectangle per selected sample, filled with 0 (the mean colour)
    if aug.erase:
        lo, hi = aug.erase_scale
        area = (lo + (hi - lo) * col["erase_area"]) * c * c
        lr0, lr1 = math.log(aug.erase_ratio[0]), math.log(aug.erase_ratio[1])
        ratio = torch.exp(lr0 + (lr1 - lr0) * col["erase_ratio"])
        eh = torch.sqrt(area * ratio).round().clamp_(1, c)
        ew = torch.sqrt(area / ratio).round().clamp_(1, c)
        top = torch.minimum(torch.floor(col["erase_top"] * (c - eh + 1)), c - eh)
        left = torch.minimum(torch.floor(col["erase_left"] * (c - ew + 1)), c - ew)
        r = torch.arange(c, device=x.device, dtype=torch.float32)
        rows = (r.view(1, c) >= top.view(b, 1)) & (r.view(1, c) < (top + eh).view(b, 1))
        cols = (r.view(1, c) >= left.view(b, 1)) & (r.view(1, c) < (left + ew).view(b, 1))
        mask = rows.view(b, 1, c, 1) & cols.view(b, 1, 1, c) & (col["erase"] < aug.erase).view(b, 1, 1, 1)
        x = x.masked_fill(mask, 0.0)
    return x
