"""Reliability balancing, eq. (9)-(19): each equation against hand-computed values, and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grefel.models.reliability import AttentiveCorrection, GeometricCorrection, confidence, fusion_weights, mix

# Tolerances: u = 2^-24 (float32). assert_close's float32 defaults (rtol 1.3e-6 ~ 11 u, atol 1e-5)
# hold for the hand-computed values below, each a few float32 roundings from the exact value.
U = 2.0**-24

# ------------------------------------------------------------------ eq. (10)-(11): confidence


def test_confidence_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1]])
    h_last = -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1))
    expected = torch.tensor([1 - math.log(2) / math.log(4), 0.0, 1.0, 1 - h_last / math.log(4)])
    # C_f = 1 - H / log 4 with H <= log 4 a sum of 4 terms of a few roundings each: <= ~10 u = 6e-7
    torch.testing.assert_close(confidence(p), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(confidence(log_p=p.log()), expected, atol=1e-6, rtol=0)  # log 0 = -inf is fine
    assert confidence(torch.tensor([[0.0, 1.0, 0.0]])).item() == 1.0  # exactly 1, no NaN from 0 log 0


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.floats(-1e4, 1e4), st.integers(0, 2**31 - 1))
def test_confidence_properties(n, scale, seed):
    logits = torch.randn(5, n, generator=torch.Generator().manual_seed(seed)) * scale
    c = confidence(log_p=torch.log_softmax(logits, -1))
    c2 = confidence(torch.softmax(logits, -1))
    assert torch.isfinite(c).all() and ((c >= 0) & (c <= 1)).all()
    # two float32 paths to H (log_softmax vs softmax + xlogy): each term p log p off by ~3 u p (|log p| + 1),
    # so H by <= 3 u (H + 1) + n u: ~2e-6 for n <= 12; terms of underflowed p are 0 on both paths
    torch.testing.assert_close(c, c2, atol=1e-5, rtol=0)
    # uniform: p = fl(1/n), H a sum of n equal terms: |H - log n| <= (n + 2) u log n, C_f off by (n + 4) u
    assert confidence(torch.full((1, n), 1.0 / n)).item() == pytest.approx(0.0, abs=(n + 4) * U)
    assert confidence(torch.nn.functional.one_hot(torch.tensor([n - 1]), n).float()).item() == 1.0


# ------------------------------------------------------------------ eq. (13)-(15): geometric correction


def test_geometric_correction_by_hand():
    g = GeometricCorrection(dim=2, num_classes=2, num_anchors=2, delta=2.0)
    with torch.no_grad():
        g.anchors.copy_(torch.tensor([[[3.0, 4.0], [0.0, 1.0]], [[1.0, 0.0], [6.0, 8.0]]]))
    e = torch.zeros(1, 2)
    torch.testing.assert_close(g.distances(e), torch.tensor([[[5.0, 1.0], [1.0, 10.0]]]))  # eq. (13)
    w = [math.exp(-5 / 2), math.exp(-1 / 2), math.exp(-1 / 2), math.exp(-10 / 2)]  # eq. (14), delta = 2
    z = sum(w)
    log_tg, log_s = g(e)
    torch.testing.assert_close(log_s.exp(), torch.tensor([[[w[0] / z, w[1] / z], [w[2] / z, w[3] / z]]]))
    torch.testing.assert_close(log_tg.exp(), torch.tensor([[(w[0] + w[1]) / z, (w[2] + w[3]) / z]]))  # eq. (15)


def test_geometric_correction_gradient_at_an_anchor_is_finite():
    g = GeometricCorrection(dim=3, num_classes=2, num_anchors=1)
    e = g.anchors[0, 0].detach().clone().unsqueeze(0).requires_grad_()  # distance exactly 0
    log_tg, _ = g(e)
    log_tg[:, 0].sum().backward()
    assert torch.isfinite(e.grad).all() and torch.isfinite(g.anchors.grad).all()


# ------------------------------------------------------------------ eq. (16)-(17): attentive correction


def test_attentive_correction_by_hand():
    att = AttentiveCorrection(dim=2, num_classes=2, num_heads=1)
    with torch.no_grad():
        for lin in (att.q, att.proj):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
        att.kv.weight.copy_(torch.cat([torch.eye(2), 2 * torch.eye(2)]))  # W_k = I, W_v = 2 I
        att.kv.bias.zero_()
    e = torch.tensor([[1.0, 0.0]])
    tokens = torch.tensor([[[9.0, 9.0], [0.0, 1.0], [2.0, 0.0]]])  # CLS (replaced by e), two tokens
    seq = [[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]
    logits = [(1.0 * s[0]) / math.sqrt(2) for s in seq]  # q.k / sqrt(d), d = 2
    a = [math.exp(x) for x in logits]
    a = [x / sum(a) for x in a]
    expected = [sum(ai * 2 * s[j] for ai, s in zip(a, seq)) for j in range(2)]  # sum a_i v_i, then W_o = I
    torch.testing.assert_close(att(e, tokens), torch.tensor([expected]))


# ------------------------------------------------------------------ eq. (18)-(19): fusion


def test_fusion_by_hand_and_fallback():
    w_a, w_b = fusion_weights(torch.tensor([0.5, 0.0, 0.0]), torch.tensor([0.25, 0.0, 0.3]))
    torch.testing.assert_close(w_a, torch.tensor([2 / 3, 0.5, 0.0]))
    torch.testing.assert_close(w_b, torch.tensor([1 / 3, 0.5, 1.0]))
    t_g, t_a = torch.tensor([[0.6, 0.4]]), torch.tensor([[0.1, 0.9]])
    t = mix(torch.tensor([2 / 3]), t_g.log(), torch.tensor([1 / 3]), t_a.log()).exp()  # eq. (18)
    torch.testing.assert_close(t, torch.tensor([[2 / 3 * 0.6 + 1 / 3 * 0.1, 2 / 3 * 0.4 + 1 / 3 * 0.9]]))


def test_fusion_gradient_when_both_confidences_are_zero():
    c = torch.zeros(2, requires_grad=True)
    w_a, w_b = fusion_weights(c, c * 1.0)
    (w_a * 3 + w_b).sum().backward()
    assert torch.isfinite(c.grad).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9), st.sampled_from([0.0, 1e-3, 1.0, 50.0, 1e4]), st.integers(0, 2**31 - 1))
def test_mixture_is_a_distribution(n, scale, seed):
    g = torch.Generator().manual_seed(seed)
    la = torch.log_softmax(torch.randn(4, n, generator=g) * scale, -1)
    lb = torch.log_softmax(torch.randn(4, n, generator=g) * scale, -1)
    ca, cb = confidence(log_p=la), confidence(log_p=lb)
    wa, wb = fusion_weights(ca, cb)
    out = mix(wa, la, wb, lb)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(4), atol=1e-5, rtol=0)  # <= 9 terms: ~(9 + 3) u
