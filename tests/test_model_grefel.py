"""The GReFEL model: outputs, ablation switches, gradients, frozen stream, batch independence, presets."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grefel.errors import GrefelError
from grefel.models import GReFELLoss, GReFELOutput, create_model, list_presets
from grefel.models.info import model_summary

C = 5


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("tiny", C)


def _x(n, size=112, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_presets_registered():
    assert {"full", "tiny"} <= set(list_presets())
    with pytest.raises(GrefelError, match="unknown model preset"):
        create_model("huge", 7)
    with pytest.raises(GrefelError, match="reliability"):
        create_model("tiny", 7, reliability="sometimes")


def test_full_encoder_has_poster_size():
    s = model_summary("full", 7)
    enc = s.encoder
    assert abs(enc.trainable + enc.frozen - 43.75e6) <= 0.05e6
    assert abs(s.rows[0].frozen - 0.911e6) <= 0.005e6 and s.rows[0].trainable == 0  # frozen landmark stream
    assert 8.3e9 <= enc.flops / 2 <= 8.6e9  # POSTER++'s 8.4 GMACs (torch counts 2 FLOPs per MAC)


def test_output_fields_are_distributions(tiny):
    tiny.eval()
    with torch.no_grad():
        o = tiny(_x(3, 128))  # any input size: resized to 112
    B = 3
    for f in fields(GReFELOutput):
        assert getattr(o, f.name) is not None, f.name
    for name in ("primary", "geometric", "attentive", "correction", "corrected"):
        d = getattr(o, name)
        assert d.shape == (B, C) and (d >= 0).all()
        torch.testing.assert_close(d.sum(-1), torch.ones(B), atol=1e-5, rtol=0)
    for name in ("conf_primary", "conf_geometric", "conf_attentive", "conf_correction"):
        c = getattr(o, name)
        assert c.shape == (B,) and ((c >= 0) & (c <= 1)).all()
    assert o.similarity.shape == (B, C, 10)
    torch.testing.assert_close(o.similarity.sum((1, 2)), torch.ones(B), atol=1e-5, rtol=0)
    assert o.embedding.shape == (B, 96) and o.tokens.shape == (B, 1 + 3 * 3 * 3, 96)  # tiny: windows 12/6/3
    torch.testing.assert_close(o.primary, o.logits.softmax(-1))
    torch.testing.assert_close(o.corrected.log(), o.log_corrected, atol=1e-5, rtol=0)


def test_fusion_equations_in_the_model(tiny):
    """Eq. (18)-(19) recomputed from the output's own distributions and confidences."""
    tiny.eval()
    with torch.no_grad():
        o = tiny(_x(4))
    s = o.conf_geometric + o.conf_attentive
    t = (o.conf_geometric / s)[:, None] * o.geometric + (o.conf_attentive / s)[:, None] * o.attentive
    torch.testing.assert_close(o.correction, t, atol=1e-5, rtol=1e-4)
    s = o.conf_primary + o.conf_correction
    L = (o.conf_primary / s)[:, None] * o.primary + (o.conf_correction / s)[:, None] * o.correction
    torch.testing.assert_close(o.corrected, L, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("reliability", ["none", "anchors", "mhsa"])
def test_ablation_switches(reliability):
    torch.manual_seed(0)
    m = create_model("tiny", C, reliability=reliability).eval()
    with torch.no_grad():
        o = m(_x(2))
    uniform = torch.full((2, C), 1.0 / C)
    if reliability == "none":
        torch.testing.assert_close(o.corrected, o.primary)
        torch.testing.assert_close(o.correction, uniform)
        assert (o.conf_correction == 0).all()
    if reliability == "anchors":
        torch.testing.assert_close(o.correction, o.geometric)
        torch.testing.assert_close(o.attentive, uniform)
        assert m.attentive is None and (o.conf_attentive == 0).all()
    if reliability == "mhsa":
        torch.testing.assert_close(o.correction, o.attentive)
        torch.testing.assert_close(o.geometric, uniform)
        assert m.geometric is None and o.similarity.shape == (2, C, 0) and o.anchors is None
    if reliability != "anchors":
        assert m.anchors is None


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([0.0, 1e-6, 1.0, 1e3, 1e6]), st.integers(0, 2**31 - 1))
def test_extreme_embeddings_give_finite_distributions(scale, seed):
    torch.manual_seed(0)
    m = _shared_head_model()
    g = torch.Generator().manual_seed(seed)
    D = m.encoder.embed_dim
    e = torch.randn(3, D, generator=g) * scale
    tokens = torch.randn(3, 148, D, generator=g) * scale
    with torch.no_grad():
        o = m.forward_head(e, tokens)
    for name in ("primary", "geometric", "attentive", "correction", "corrected"):
        d = getattr(o, name)
        assert torch.isfinite(d).all(), name
        torch.testing.assert_close(d.sum(-1), torch.ones(3), atol=1e-5, rtol=0)
    for name in ("conf_primary", "conf_geometric", "conf_attentive", "conf_correction"):
        c = getattr(o, name)
        assert torch.isfinite(c).all() and ((c >= 0) & (c <= 1)).all()
    loss = GReFELLoss(label_smoothing=0.1)(o, torch.tensor([0, 1, 2]))
    assert all(torch.isfinite(v) for v in loss.values())


_HEAD_MODEL = []


def _shared_head_model():
    if not _HEAD_MODEL:
        _HEAD_MODEL.append(create_model("tiny", C).eval())
    return _HEAD_MODEL[0]


def test_gradients_reach_trainable_parts_not_the_frozen_stream(tiny):
    tiny.train()
    tiny.zero_grad(set_to_none=True)
    o = tiny(_x(4))
    GReFELLoss()(o, torch.tensor([0, 1, 2, 3]))["total"].backward()
    must = [
        "geometric.anchors",
        "attentive.kv.weight",
        "attentive.q.weight",
        "head.fc.weight",
        "encoder.ir_back.input_layer.0.weight",
        "encoder.attn1.relative_position_bias_table",
        "encoder.attn1.qkv.weight",
        "encoder.ffn1.gamma1",
        "encoder.last_face_conv.weight",
        "encoder.VIT.blocks.0.attn.qkv.weight",
        "encoder.VIT.se_block.linear1.weight",
    ]
    params = dict(tiny.named_parameters())
    for name in must:
        g = params[name].grad
        assert g is not None and g.abs().sum() > 0, name
    for name, p in tiny.encoder.face_landback.named_parameters():
        assert not p.requires_grad and p.grad is None, name


def test_frozen_stream_statistics_do_not_move(tiny):
    opt = torch.optim.Adam([p for p in tiny.parameters() if p.requires_grad], 1e-3)
    before = {k: v.clone() for k, v in tiny.encoder.face_landback.state_dict().items()}
    ir_before = tiny.encoder.ir_back.input_layer[1].running_mean.clone()
    tiny.train()
    assert not tiny.encoder.face_landback.training and tiny.encoder.ir_back.training
    for step in range(2):
        o = tiny(_x(4, seed=step))
        loss = GReFELLoss()(o, torch.tensor([0, 1, 2, 3]))["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in tiny.encoder.face_landback.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(tiny.encoder.ir_back.input_layer[1].running_mean, ir_before)  # trainable BN does move


def test_predictions_do_not_depend_on_the_rest_of_the_batch(tiny):
    tiny.eval()
    x = _x(6, seed=3)
    with torch.no_grad():
        small = tiny(x[:2])
        big = tiny(torch.cat([x[:2], 10 * x[2:]]))  # other samples, very different
    for name in ("primary", "geometric", "attentive", "corrected", "embedding"):
        torch.testing.assert_close(getattr(big, name)[:2], getattr(small, name), atol=1e-5, rtol=1e-4)


def test_model_config_rebuilds_the_model():
    m = create_model("tiny", 4, reliability="anchors", num_anchors=3, delta=2.0)
    assert m.model_config == {
        "preset": "tiny",
        "num_classes": 4,
        "reliability": "anchors",
        "num_anchors": 3,
        "delta": 2.0,
    }
    m2 = create_model(**m.model_config)
    m2.load_state_dict(m.state_dict())  # same structure, strict
    assert m2.geometric.anchors.shape == (4, 3, 96) and m2.geometric.delta == 2.0


@pytest.mark.parametrize("pool", ["token", "avg", "max"])
def test_global_pool_choices(pool):
    """timm-style ``global_pool``: the CLS token (POSTER++), or mean / max over the fused tokens."""
    torch.manual_seed(0)
    m = create_model("tiny", C, encoder={"global_pool": pool}).eval()
    enc = m.encoder
    with torch.no_grad():
        tokens = enc.forward_features(_x(3))
        pooled = {"token": tokens[:, 0], "avg": tokens[:, 1:].mean(1), "max": tokens[:, 1:].amax(1)}[pool]
        torch.testing.assert_close(enc.forward_head(tokens), enc.VIT.se_block(pooled))
        other = dict(token="max", avg="token", max="avg")[pool]
        enc.global_pool = other  # a different choice gives a different embedding
        assert not torch.allclose(enc.forward_head(tokens), enc.VIT.se_block(pooled))
    with pytest.raises(ValueError, match="global_pool"):
        create_model("tiny", C, encoder={"global_pool": "mean"})


def test_channels_last_and_bf16_autocast(tiny):
    tiny.eval()
    x = _x(2)
    with torch.no_grad():
        ref = tiny(x)
        cl = tiny.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = tiny(x)
    tiny.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(cl.corrected, ref.corrected, atol=1e-5, rtol=1e-4)
    assert bf.corrected.dtype == torch.float32  # reliability balancing stays in float32
    torch.testing.assert_close(bf.corrected.sum(-1), torch.ones(2), atol=1e-5, rtol=0)
    assert (bf.corrected - ref.corrected).abs().max() < 0.1


def test_tiny_learns_a_small_problem():
    """Two classes told apart by where a bright square is: the tiny preset fits them in a few steps."""
    torch.manual_seed(0)
    m = create_model("tiny", 2, dropout=0.0)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(32) % 2
    x = 0.3 * torch.randn(32, 3, 112, 112, generator=g)
    x[y == 0, :, 20:50, 20:50] += 2.0
    x[y == 1, :, 60:90, 60:90] += 2.0
    m.train()
    for _ in range(15):
        loss = GReFELLoss()(m(x), y)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        acc = (m(x).corrected.argmax(-1) == y).float().mean().item()
    assert acc >= 0.9 and math.isfinite(loss.item())
