"""Losses, eq. (20)-(23), against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from grefel.core.errors import GrefelError
from grefel.models.losses import GReFELLoss, anchor_loss, center_loss, class_distribution_loss
from grefel.models.output import GReFELOutput

# Tolerances: each loss is a few float32 operations (log / exp within an ulp or two, sums of a few
# terms of one sign), so rel 1e-6 (~17 u, u = 2^-24) holds. Where terms of both signs cancel
# (eq. 23's total with L_a < 0), the error is relative to the sum of the terms' magnitudes instead.
U = 2.0**-24


def _cancelling(expected: float, *terms: float):
    """pytest.approx for a float32 sum of ``terms``: 16 u of the sum of their magnitudes."""
    return pytest.approx(expected, rel=0, abs=16 * U * sum(abs(t) for t in terms))


def _output(corrected, embedding, anchors):
    B, C = corrected.shape
    u = torch.full((B, C), 1.0 / C)
    z = torch.zeros(B)
    return GReFELOutput(
        logits=corrected.log(),
        primary=corrected,
        geometric=u,
        attentive=u,
        correction=u,
        corrected=corrected,
        conf_primary=z,
        conf_geometric=z,
        conf_attentive=z,
        conf_correction=z,
        similarity=torch.zeros(B, C, 0),
        embedding=embedding,
        tokens=embedding[:, None],
        log_corrected=corrected.log(),
        anchors=anchors,
    )


def test_class_distribution_loss_by_hand():
    L = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = torch.tensor([0, 1])
    expected = -(math.log(0.7) + math.log(0.1)) / 2  # eq. (20), mean over the batch
    assert class_distribution_loss(L.log(), y).item() == pytest.approx(expected, rel=1e-6)
    eps = 0.3  # smoothed target (1 - eps) y + eps / 3
    q0, q1 = [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]
    smoothed = (
        -(
            sum(q * math.log(p) for q, p in zip(q0, L[0].tolist()))
            + sum(q * math.log(p) for q, p in zip(q1, L[1].tolist()))
        )
        / 2
    )
    assert class_distribution_loss(L.log(), y, eps).item() == pytest.approx(smoothed, rel=1e-6)


def test_anchor_loss_by_hand():
    a = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]]])  # two classes, K = 1, D = 2, |a - a'|^2 = 25
    assert anchor_loss(a).item() == pytest.approx(-(1 - math.exp(-25 / 2)), rel=1e-6)
    # same-class pairs do not count; bounded in [-1, 0] however far apart
    a = torch.tensor([[[0.0, 0.0], [100.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    d2 = [1.0, 1.0, 100.0**2 + 1, 100.0**2 + 1]
    assert anchor_loss(a).item() == pytest.approx(-sum(1 - math.exp(-d / 2) for d in d2) / 4, rel=1e-6)
    assert -1.0 <= anchor_loss(1e6 * torch.randn(4, 3, 8)).item() <= 0.0


def test_center_loss_by_hand():
    anchors = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[10.0, 10.0], [-10.0, 0.0]]])
    e = torch.tensor([[1.5, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    # sample 0: nearest class-0 anchor (2, 0): 0.25; sample 1: nearest class-1 anchor (-10, 0): 100
    assert center_loss(e, anchors, y).item() == pytest.approx((0.25 + 100.0) / 2 / 2, rel=1e-6)


def test_total_loss_weights_and_keys():
    anchors = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]]])
    L = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    e = torch.tensor([[0.0, 1.0], [3.0, 3.0]])
    y = torch.tensor([0, 1])
    out = GReFELLoss(lambda_cls=0.5, lambda_anchor=2.0, lambda_center=3.0)(_output(L, e, anchors), y)
    assert set(out) == {"total", "cls", "anchor", "center"}
    cls = -(math.log(0.6) + math.log(0.7)) / 2
    anc = -(1 - math.exp(-25 / 2))
    cen = (1.0 + 1.0) / 2 / 2
    assert out["cls"].item() == pytest.approx(cls, rel=1e-6)
    assert out["anchor"].item() == pytest.approx(anc, rel=1e-6)
    assert out["center"].item() == pytest.approx(cen, rel=1e-6)
    assert out["total"].item() == _cancelling(0.5 * cls + 2 * anc + 3 * cen, 0.5 * cls, 2 * anc, 3 * cen)  # eq. (23)


def test_no_anchors_and_extreme_inputs():
    L = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # one-hot: log 0 on the wrong class
    o = _output(L, torch.zeros(2, 2), None)
    o.log_corrected = None  # falls back to the clamped log of `corrected`
    out = GReFELLoss()(o, torch.tensor([1, 1]))
    assert out["anchor"].item() == 0.0 and out["center"].item() == 0.0
    assert torch.isfinite(out["total"]) and out["total"].item() > 10  # a confident wrong answer costs a lot


def test_label_smoothing_range():
    with pytest.raises(GrefelError, match="11 -> 0.11"):
        GReFELLoss(label_smoothing=11)


def test_aux_warmup_scales_anchor_and_center_terms_only():
    from grefel.training.loop import warmup_ramp

    assert [warmup_ramp(p, 2.0) for p in (0.0, 0.5, 1.0, 2.0, 7.0)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert warmup_ramp(0.0, 0.0) == 1.0  # no warm-up: the paper's eq. (23) from the first step
    anchors = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]]])
    L = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    e = torch.tensor([[0.0, 1.0], [3.0, 3.0]])
    y = torch.tensor([0, 1])
    loss = GReFELLoss(lambda_cls=0.5, lambda_anchor=2.0, lambda_center=3.0)
    full = loss(_output(L, e, anchors), y)
    loss.aux_scale = 0.25
    ramped = loss(_output(L, e, anchors), y)
    expected = 0.5 * full["cls"] + 0.25 * (2.0 * full["anchor"] + 3.0 * full["center"])
    parts = (0.5 * full["cls"].item(), 0.5 * full["anchor"].item(), 0.75 * full["center"].item())
    assert ramped["total"].item() == _cancelling(expected.item(), *parts)
    assert ramped["center"].item() == full["center"].item()  # the logged parts stay unscaled


def test_correction_warmup_mixes_primary_into_eq20():
    """r = correction_scale: eq. (20) on (1 - r) l + r L_final; r = 1 is the paper, r = 0 the primary NLL."""
    primary = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    corrected = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    e = torch.zeros(2, 2)
    out = _output(corrected, e, None)
    out.logits, out.primary = primary.log() + 3.0, primary  # logits up to a constant: softmax gives l back
    y = torch.tensor([0, 1])
    loss = GReFELLoss()
    assert loss(out, y)["cls"].item() == pytest.approx(-(math.log(0.1) + math.log(0.2)) / 2, rel=1e-6)
    loss.correction_scale = 0.0
    assert loss(out, y)["cls"].item() == pytest.approx(-(math.log(0.5) + math.log(0.6)) / 2, rel=1e-6)
    loss.correction_scale = 0.25
    mixed = [0.75 * 0.5 + 0.25 * 0.1, 0.75 * 0.6 + 0.25 * 0.2]
    assert loss(out, y)["cls"].item() == pytest.approx(-(math.log(mixed[0]) + math.log(mixed[1])) / 2, rel=1e-6)
