"""Image presets, kept apart from the training loop (as in torchvision's classification references).

Prepared shards store aligned faces at ``S x S`` (128 by default). The network consumes 112 x 112
(both POSTER++ streams resize to 112 internally), so the paper's "resize 256, random crop 224" is
reproduced at half resolution: random crop 112 of 128 in training (the same 0.875 ratio) and a
centre crop 112 at evaluation. Normalisation is ImageNet mean/std, as POSTER++ trained with.

The evaluation preset is ``eval_batch``; the training preset is ``train_batch`` (below), which
augments a whole uint8 batch on the device the model runs on, with per-sample random parameters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from grefel.data.align import cv2_threads

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_INPUT = 112


def to_float_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1] (no copy of the uint8 data on the way)."""
    t = torch.as_tensor(images)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


@functools.cache
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor made once per device: ``torch.tensor(..., device="cuda")`` is a
    copy from pageable host memory, which waits for the GPU's queue to drain, at every step."""
    return torch.tensor(values, device=device, dtype=dtype)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = _constant(IMAGENET_MEAN, x.device, x.dtype).view(1, 3, 1, 1)
    std = _constant(IMAGENET_STD, x.device, x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < size or w < size:
        x = torch.nn.functional.interpolate(
            x, size=(max(h, size), max(w, size)), mode="bilinear", align_corners=False, antialias=True
        )
        h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def eval_batch(
    images: np.ndarray | torch.Tensor, crop: int = MODEL_INPUT, device: str | torch.device | None = None
) -> torch.Tensor:
    """Evaluation preset: uint8 NHWC faces as stored -> normalised float NCHW model input.

    Computed on ``device``; by default where ``images`` already are (a numpy array: the CPU).
    """
    x = torch.as_tensor(images)
    x = to_float_nchw(x if device is None else x.to(device))
    return normalize(center_crop(x, crop))


# ---------------------------------------------------------------------------------------------
# Training preset: "heavy augmentation" of section 4.1, batched on the device
# ---------------------------------------------------------------------------------------------
# torchvision.transforms.v2 applied to a batch tensor draws ONE set of random parameters for the
# whole batch, and looping over samples would starve a GPU. So the preset is written as a few
# whole-batch tensor operations with per-sample parameters:
#
# * geometry: random crop 112 of 128 (integer offsets, like RandomCrop), horizontal flip and
#   rotation are one affine map per sample (bilinear, zeros outside, like RandomRotation's fill
#   0). On a GPU a single F.grid_sample samples the whole batch (the grid is built by
#   broadcasting); on a CPU one cv2.warpAffine per uint8 face does the same map 3x faster (the
#   two agree to within the uint8 rounding, 0.5/255; tests/test_augment.py).
# * colour: brightness, contrast and saturation use torchvision's formulas (ColorJitter: x*b;
#   c*x + (1-c)*mean(grey); s*x + (1-s)*grey, grey = rgb_to_grayscale weights). Each is linear in
#   the pixel, so together with /255 and the ImageNet normalisation they fold into one per-sample
#   3x3 matrix plus offset (a single batched matmul); values are clamped once, at the end, where
#   torchvision clamps after each step (identical unless a channel saturates mid-chain). The order
#   is fixed (brightness, contrast, saturation); hue jitter is left out.
# * random erasing (v2.RandomErasing semantics: area fraction, log-uniform aspect, value 0 after
#   normalisation): one rectangle per selected sample, applied as a multiplicative mask.
#
# Measured per CPU core: see bench/bench_datapath.py (against PIL + torchvision per image); on a
# GPU it is a handful of kernels per batch.
#
# The random numbers are a table of uniforms, one row per position in the epoch, drawn from
# (seed, epoch) alone (augment_uniforms): the same image at the same position gets the same
# augmentation whatever the number of processes, the batch split or a resume, which is what
# makes resumed and multi-process runs reproduce an unbroken single-process run.

AUG_COLUMNS = (
    "shift_x",
    "shift_y",
    "flip",
    "angle",
    "brightness",
    "contrast",
    "saturation",
    "erase",
    "erase_area",
    "erase_ratio",
    "erase_top",
    "erase_left",
)


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


GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def _warp_cpu(images: torch.Tensor, a11, a12, a21, a22, shift_x, shift_y, c: int) -> torch.Tensor:
    """The geometry of :func:`train_batch` on the CPU: uint8 (B, S, S, 3) -> uint8 (B, c, c, 3).

    The same affine map as the GPU's ``grid_sample`` (bilinear, zeros outside), written in pixel
    coordinates for ``cv2.warpAffine``: output pixel (j, i) samples the input at
    ``A @ (j - k, i - k) + shift + (S - 1) / 2`` with ``k = (c - 1) / 2``. One warp per face on its
    uint8 pixels, as PIL-based pipelines rotate too, is 3x faster than ``grid_sample`` on a CPU
    core; the two agree to within the uint8 rounding (0.5 / 255).
    """
    import cv2

    imgs = np.ascontiguousarray(images.numpy())
    b, h = imgs.shape[:2]
    k = (c - 1) / 2
    a = [t.reshape(b).double().numpy() for t in (a11, a12, a21, a22, shift_x, shift_y)]
    t1 = -(a[0] + a[1]) * k + a[4] + (h - 1) / 2
    t2 = -(a[2] + a[3]) * k + a[5] + (h - 1) / 2
    mats = np.stack([np.stack([a[0], a[1], t1], 1), np.stack([a[2], a[3], t2], 1)], 1)
    out = np.empty((b, c, c, imgs.shape[3]), np.uint8)
    with cv2_threads(torch.get_num_threads()):  # as many threads as torch may use
        for i in range(b):
            cv2.warpAffine(
                imgs[i],
                mats[i],
                (c, c),
                dst=out[i],
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
    return torch.from_numpy(out)


def train_batch(
    images: torch.Tensor, u: torch.Tensor, aug: TrainAugment = TrainAugment(), *, geometry: str | None = None
) -> torch.Tensor:
    """Training preset: uint8 (B, S, S, 3) faces on any device + uniforms (B, 12) -> model input.

    Returns normalised float32 (B, 3, crop, crop), computed on the device of ``images``. With
    every strength at 0 and centred shifts (u = 0.5) it equals :func:`eval_batch` (a centre crop).
    ``geometry``: ``"opencv"`` (one ``cv2.warpAffine`` per uint8 face, the default for uint8 on the
    CPU) or ``"grid_sample"`` (one batched float ``F.grid_sample``, the default elsewhere).
    """
    images = torch.as_tensor(images)
    b, h, w = images.shape[:3]
    if h != w or h < aug.crop:
        raise ValueError(f"train_batch needs square images of at least {aug.crop} px, got {h}x{w}")
    u = u.to(device=images.device, dtype=torch.float32)
    col = {name: u[:, k].view(b, 1, 1) for k, name in enumerate(AUG_COLUMNS)}
    x = _geometry(images, col, aug, geometry)
    x = _colour(x, col, aug)
    return _erase(x, col, aug) if aug.erase else x


def _geometry(images: torch.Tensor, col: dict, aug: TrainAugment, geometry: str | None) -> torch.Tensor:
    """Crop + flip + rotation, one affine map per sample: uint8 (B, S, S, 3) -> float (B, 3, c, c), 0..255."""
    import math

    import torch.nn.functional as F

    b, h = images.shape[:2]
    dev, c = images.device, aug.crop
    m = h - c
    shift_x = torch.floor(col["shift_x"] * (m + 1)).clamp_(max=m) - m / 2  # u may round to 1.0 in float32
    shift_y = torch.floor(col["shift_y"] * (m + 1)).clamp_(max=m) - m / 2
    sign = torch.where(col["flip"] < aug.flip, -1.0, 1.0)
    ang = (2 * col["angle"] - 1) * math.radians(aug.rotation)
    cos, sin = torch.cos(ang), torch.sin(ang)
    on_cpu_uint8 = dev.type == "cpu" and images.dtype == torch.uint8
    geometry = geometry or ("opencv" if on_cpu_uint8 else "grid_sample")
    if geometry not in ("opencv", "grid_sample"):
        raise ValueError(f"geometry must be 'opencv' or 'grid_sample', got {geometry!r}")
    if geometry == "opencv" and not on_cpu_uint8:
        raise ValueError(f"geometry 'opencv' needs uint8 images on the CPU, got {images.dtype} on {dev}")
    if geometry == "opencv":
        warped = _warp_cpu(images, cos * sign, -sin, sin * sign, cos, shift_x, shift_y, c)
        return warped.permute(0, 3, 1, 2).contiguous().float()
    s = c / h
    base = (torch.arange(c, device=dev, dtype=torch.float32) * 2 + 1) / c - 1  # output pixel centres
    bx, by = base.view(1, 1, c), base.view(1, c, 1)
    grid = torch.empty(b, c, c, 2, device=dev)
    grid[..., 0] = (s * cos * sign) * bx + ((-s * sin) * by + 2 * shift_x / h)  # input x per output pixel
    grid[..., 1] = (s * sin * sign) * bx + ((s * cos) * by + 2 * shift_y / h)
    return F.grid_sample(
        images.permute(0, 3, 1, 2).float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _colour(x: torch.Tensor, col: dict, aug: TrainAugment) -> torch.Tensor:
    """Colour jitter + /255 + normalisation as one per-sample affine colour map (one batched matmul)."""
    b, _, c, _ = x.shape
    dev = x.device
    wgt = _constant(GRAY_WEIGHTS, dev, torch.float32)
    mean = _constant(IMAGENET_MEAN, dev, torch.float32).view(1, 3, 1)
    std = _constant(IMAGENET_STD, dev, torch.float32).view(1, 3, 1)
    bf = (1 + (2 * col["brightness"] - 1) * aug.brightness).view(b)
    cf = (1 + (2 * col["contrast"] - 1) * aug.contrast).view(b)
    sf = (1 + (2 * col["saturation"] - 1) * aug.saturation).view(b)
    grey_mean = (x.mean((2, 3)) @ wgt) * (bf / 255)  # mean grey level after brightness, in [0, 1]
    sat = sf.view(b, 1, 1) * torch.eye(3, device=dev) + (1 - sf).view(b, 1, 1) * wgt.view(1, 1, 3)
    A = sat * (cf * bf / 255).view(b, 1, 1) / std  # saturation . contrast . brightness . /255, normalised
    off = (((1 - cf) * grey_mean).view(b, 1, 1) - mean) / std  # saturation keeps a grey offset grey
    x = torch.baddbmm(off, A, x.reshape(b, 3, c * c)).view(b, 3, c, c)
    return torch.clamp(x, min=(-mean / std).view(1, 3, 1, 1), max=((1 - mean) / std).view(1, 3, 1, 1))


def _erase(x: torch.Tensor, col: dict, aug: TrainAugment) -> torch.Tensor:
    """Random erasing: one rectangle per selected sample, value 0 (the mean colour after normalisation)."""
    import math

    b, _, c, _ = x.shape
    lo, hi = aug.erase_scale
    area = (lo + (hi - lo) * col["erase_area"].view(b, 1)) * c * c
    lr0, lr1 = math.log(aug.erase_ratio[0]), math.log(aug.erase_ratio[1])
    ratio = torch.exp(lr0 + (lr1 - lr0) * col["erase_ratio"].view(b, 1))
    eh = torch.sqrt(area * ratio).round().clamp_(1, c)
    ew = torch.sqrt(area / ratio).round().clamp_(1, c)
    top = torch.minimum(torch.floor(col["erase_top"].view(b, 1) * (c - eh + 1)), c - eh)
    left = torch.minimum(torch.floor(col["erase_left"].view(b, 1) * (c - ew + 1)), c - ew)
    r = torch.arange(c, device=x.device, dtype=torch.float32).view(1, c)
    rows = ((r >= top) & (r < top + eh) & (col["erase"].view(b, 1) < aug.erase)).float()
    cols = ((r >= left) & (r < left + ew)).float()
    return x * (1 - rows.unsqueeze(2) * cols.unsqueeze(1)).unsqueeze(1)
