"""The batched training preset: per-sample parameters, and each operation doing what it says."""

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.transform import resize

from grefel.data.transforms import AUG_COLUMNS, TrainAugment, augment_uniforms, eval_batch, normalize, train_batch

OFF = TrainAugment(flip=0, rotation=0, brightness=0, contrast=0, saturation=0, erase=0)
CENTRE = torch.full((1, len(AUG_COLUMNS)), 0.5, dtype=torch.float64)
# The same uint8 pixels normalised along two float32 paths ((x / 255 - mean) / std, colour factors of
# exactly 1) differ by a few ulps of values <= 2.7 (~1e-6); atol 1e-4 is far below one grey level
# (1 / 255 / 0.225 = 0.017), the smallest difference a wrong pixel makes.
PIXEL_PATHS = dict(atol=1e-4, rtol=0)


def _faces(n=4):
    img = (resize(skdata.astronaut()[:256, 120:376], (128, 128), anti_aliasing=True) * 255).astype(np.uint8)
    return torch.from_numpy(np.stack([img] * n))


def _u(**cols):
    u = CENTRE.clone()
    for k, v in cols.items():
        u[0, AUG_COLUMNS.index(k)] = v
    return u


def test_neutral_parameters_equal_the_evaluation_preset():
    x = _faces(1)
    torch.testing.assert_close(train_batch(x, CENTRE, OFF), eval_batch(x), **PIXEL_PATHS)


def test_crop_offsets_are_integer_random_crops():
    x = _faces(1)
    out = train_batch(x, _u(shift_x=0.0, shift_y=1.0 - 1e-9), OFF)  # leftmost, lowest crop
    want = normalize(x.permute(0, 3, 1, 2).float().div(255)[..., 16:128, 0:112])
    torch.testing.assert_close(out, want, **PIXEL_PATHS)


def test_flip_and_rotation():
    x = _faces(1)
    flipped = train_batch(
        x, _u(flip=0.0), TrainAugment(flip=1.0, rotation=0, brightness=0, contrast=0, saturation=0, erase=0)
    )
    torch.testing.assert_close(flipped, eval_batch(x).flip(-1), **PIXEL_PATHS)
    rot = TrainAugment(flip=0, rotation=90, brightness=0, contrast=0, saturation=0, erase=0)
    turned = train_batch(x, _u(angle=1.0), rot)  # +90 degrees
    ref = eval_batch(x)
    err = [float((turned - torch.rot90(ref, k, dims=(-2, -1))).abs().mean()) for k in (1, 3)]
    assert min(err) < 1e-3 and max(err) > 0.1  # a quarter turn, one way


def test_colour_factors_follow_torchvision():
    """Same formulas as torchvision's ColorJitter ops (on an image that never saturates mid-chain)."""
    from torchvision.transforms.v2 import functional as F

    x = (77 + _faces(1).float() * 0.4).round().to(torch.uint8)  # grey levels 77..179
    aug = TrainAugment(flip=0, rotation=0, brightness=0.2, contrast=0.2, saturation=0.2, erase=0)
    out = train_batch(x, _u(brightness=1.0, contrast=0.0, saturation=1.0), aug)  # b 1.2, c 0.8, s 1.2
    img = x.permute(0, 3, 1, 2).float().div(255)[..., 8:120, 8:120]
    img = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(img, 1.2), 0.8), 1.2)
    # contrast's grey mean is a torch reduction over 112 x 112 pixels (pairwise: ~log2(12544) u), so
    # the two formulas still agree to a few ulps
    torch.testing.assert_close(out, normalize(img), **PIXEL_PATHS)
    assert not torch.allclose(out, eval_batch(x))
    # strong factors saturate: values stay inside the normalised [0, 1] range
    strong = TrainAugment(flip=0, rotation=0, brightness=0.9, contrast=0.9, saturation=0.9, erase=0)
    out = train_batch(_faces(1), _u(brightness=1.0, contrast=1.0, saturation=1.0), strong)
    lo, hi = normalize(torch.zeros(1, 3, 1, 1)), normalize(torch.ones(1, 3, 1, 1))
    assert (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all() and (out >= hi - 1e-6).any()


def test_random_erasing_area_and_value():
    x = _faces(1)
    aug = TrainAugment(flip=0, rotation=0, brightness=0, contrast=0, saturation=0, erase=1.0)
    out = train_batch(x, _u(erase=0.0, erase_area=0.5, erase_ratio=0.5), aug)
    zero = (out == 0).all(1)
    frac = zero.float().mean().item()
    lo, hi = aug.erase_scale
    assert abs(frac - (lo + hi) / 2) < 0.02  # area fraction 0.135 of the crop
    rows, cols = zero[0].nonzero().T
    assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == zero.sum()  # one rectangle


def test_parameters_are_per_sample_and_reproducible():
    x = _faces(6)
    u = augment_uniforms(6, seed=0, epoch=0)
    out = train_batch(x, u, TrainAugment())
    assert out.shape == (6, 3, 112, 112) and out.dtype == torch.float32
    # identical input images, different rows of parameters -> different outputs
    diffs = [float((out[0] - out[i]).abs().mean()) for i in range(1, 6)]
    assert min(diffs) > 1e-3
    # one sample alone gets what it got inside the batch (the per-sample reductions may be ordered
    # differently for another batch shape: assert_close's float32 defaults, ~11 u)
    torch.testing.assert_close(train_batch(x[3:4], u[3:4], TrainAugment()), out[3:4])
    torch.testing.assert_close(augment_uniforms(6, 0, 0), u)
    assert not torch.equal(augment_uniforms(6, 0, 1), u)


# uint8 rounding of the CPU's warped face (0.5 / 255), times the largest colour gain over the
# smallest ImageNet std: the most the two geometry backends may differ in the normalised output
ROUNDING = 0.5 / 255 * (1.2 * 1.2 * 1.6) / 0.225


def test_cpu_warp_equals_grid_sample_up_to_uint8_rounding():
    x = _faces(16)
    u = augment_uniforms(16, 0, 3)
    cv = train_batch(x, u, TrainAugment(), geometry="opencv")
    gs = train_batch(x, u, TrainAugment(), geometry="grid_sample")
    d = (cv - gs).abs()
    assert d.max() < ROUNDING and d.mean() < 0.005
    # and a wrong map would show: a one-pixel shift of the crop is far outside that bound
    shifted = train_batch(
        x, u + torch.tensor([1 / 17] + [0.0] * 11, dtype=u.dtype), TrainAugment(), geometry="grid_sample"
    )
    assert (cv - shifted).abs().mean() > 5 * d.mean()
    assert train_batch(x, u, TrainAugment()).equal(cv)  # the CPU default
    with pytest.raises(ValueError, match="uint8 images on the CPU"):
        train_batch(x.float(), u, TrainAugment(), geometry="opencv")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_same_result_on_gpu():
    x = _faces(3)
    u = augment_uniforms(3, 0, 0)
    gpu = train_batch(x.cuda(), u, TrainAugment()).cpu()
    torch.testing.assert_close(gpu, train_batch(x, u, TrainAugment(), geometry="grid_sample"), **PIXEL_PATHS)
    assert (gpu - train_batch(x, u, TrainAugment())).abs().max() < ROUNDING


def test_eval_batch_stays_on_the_device_of_its_input():
    """A batch already on the GPU must not come back to the CPU (validation on CUDA broke so)."""
    x = torch.zeros(2, 128, 128, 3, dtype=torch.uint8, device="meta")  # stands in for cuda: no data, any device
    assert eval_batch(x).device.type == "meta"
    assert eval_batch(np.zeros((1, 128, 128, 3), np.uint8)).device.type == "cpu"
