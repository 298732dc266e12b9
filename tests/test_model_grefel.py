"""The GReFEL model: outputs, ablation switches, gradients, frozen stream, batch independence, presets."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grefel.core.errors import GrefelError
from grefel.models.grefel import create_model
from grefel.models.info import model_summary
from grefel.models.losses import GReFELLoss
from grefel.models.output import GReFELOutput
from grefel.models.presets import list_presets

C = 5
# Tolerances (u = 2^-24, float32's unit roundoff). torch.testing.assert_close's float32 defaults
# (rtol 1.3e-6 ~ 11 u, atol 1e-5) hold for results a few roundings apart. Sums of n probabilities
# that should be 1: each term off by a few u, the sum n u more; n <= C x K = 50 here: <= 4e-6.
SUM1 = dict(atol=1e-5, rtol=0)
# Two float32 forward passes that differ only in rounding (another batch size picks another GEMM
# blocking, channels_last other kernels): ~20 layers of sums of <= 576 products (3 x 3 x 64) round
# at ~sqrt(576) u = 1.4e-6 of each layer's scale, ~3e-5 after 20 layers. Probabilities (<= 1) and
# embeddings (order 1) move by that; a real dependence on the batch or the layout moves them > 1e-2.
FWD32 = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("tiny", C)


@pytest.fixture(scope="module")
def tiny_frozen():
    """The tiny widths with the landmark stream frozen, as the full preset keeps its pretrained one."""
    torch.manual_seed(0)
    return create_model("tiny", C, encoder={"freeze_landmarks": True})


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
        torch.testing.assert_close(d.sum(-1), torch.ones(B), **SUM1)
    for name in ("conf_primary", "conf_geometric", "conf_attentive", "conf_correction"):
        c = getattr(o, name)
        assert c.shape == (B,) and ((c >= 0) & (c <= 1)).all()
    assert o.similarity.shape == (B, C, 10)
    torch.testing.assert_close(o.similarity.sum((1, 2)), torch.ones(B), **SUM1)
    assert o.embedding.shape == (B, 96) and o.tokens.shape == (B, 1 + 3 * 3 * 3, 96)  # tiny: windows 12/6/3
    torch.testing.assert_close(o.primary, o.logits.softmax(-1))  # exp(log_softmax) vs softmax: a few roundings
    # log(exp(x)) = x up to (2 + |x|) u: <= 2e-6 for log-probabilities above -30
    torch.testing.assert_close(o.corrected.log(), o.log_corrected, atol=1e-5, rtol=0)


def _cf(p: torch.Tensor) -> torch.Tensor:
    """C_f of eq. (10)-(11) in float64 by scipy: 1 - H(p) / log N_cls (natural log, 0 log 0 = 0)."""
    from scipy.stats import entropy

    p = p.detach().double().numpy()
    return torch.from_numpy(1.0 - entropy(p, axis=-1) / math.log(p.shape[-1]))


def _named(name: str):
    return lambda details: f"{name}: {details}"


def _fuse(ca, a, cb, b):
    """Eq. (18) / (19): ca/(ca+cb) a + cb/(ca+cb) b."""
    s = ca + cb
    return (ca / s)[:, None] * a + (cb / s)[:, None] * b


def _head_model(preset: str, seed: int = 0):
    """``preset``'s model in eval mode with every head parameter and BatchNorm statistic away from its
    neutral initial value (so that no distribution is near uniform and BN is not the identity).
    The encoder is dropped: :meth:`GReFEL.forward_head` does not use it."""
    torch.manual_seed(seed)
    m = create_model(preset, 7)
    m.encoder = None
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("anchors"):
                continue  # unit normal already, the scale of the embeddings below
            fan_in = p.shape[-1] if p.ndim > 1 else 1
            base = 1.0 if name.endswith("weight") and p.ndim == 1 else 0.0  # BatchNorm scales around 1
            p.copy_(base + torch.randn(p.shape, generator=g) * (2.0 if p.ndim > 1 else 0.3) / fan_in**0.5)
        for bn in m.head.modules():
            if isinstance(bn, torch.nn.BatchNorm1d):
                bn.running_mean.copy_(0.5 * torch.randn(bn.num_features, generator=g))
                bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))
    m.geometric.delta = 0.3  # eq. (14)'s temperature: t_g far from uniform for random anchors and inputs
    return m.eval()


def _head_inputs(m, B: int = 6, T: int = 28, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    D = m.head.mlp[0].in_features if len(m.head.mlp) else m.head.fc.in_features
    return torch.randn(B, D, generator=g), torch.randn(B, T, D, generator=g)


def reference_head(m, e: torch.Tensor, tokens: torch.Tensor, dropout_masks=None) -> dict[str, torch.Tensor]:
    """Eq. (9)-(19) written out in float64 from the model's parameters, independently of its modules.

    Primary head, as documented in PrimaryHead: per hidden width Linear -> ReLU -> BatchNorm ->
    Dropout, then a Linear. In eval mode BN uses its running statistics and dropout is the
    identity; in train mode BN uses the batch's mean and biased variance and ``dropout_masks``
    (one 0/1 tensor per Dropout) are applied with the 1/(1-p) scaling.
    """
    e, tokens = e.double(), tokens.double()
    mlp = list(m.head.mlp)
    assert len(mlp) % 4 == 0
    h = e
    for i in range(0, len(mlp), 4):
        lin, relu, bn, drop = mlp[i : i + 4]
        assert isinstance(lin, torch.nn.Linear) and isinstance(relu, torch.nn.ReLU)
        assert isinstance(bn, torch.nn.BatchNorm1d) and isinstance(drop, torch.nn.Dropout)
        h = (h @ lin.weight.double().T + lin.bias.double()).clamp_min(0.0)
        if m.training:
            mean, var = h.mean(0), h.var(0, unbiased=False)
        else:
            mean, var = bn.running_mean.double(), bn.running_var.double()
        h = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight.double() + bn.bias.double()
        if m.training:
            h = h * dropout_masks[i // 4].double() / (1.0 - drop.p)
    logits = h @ m.head.fc.weight.double().T + m.head.fc.bias.double()
    C = logits.shape[1]
    primary = logits.softmax(-1)  # eq. (9)
    # eq. (13)-(15): Euclidean distances to all N_cls x K anchors, softmax of -d / delta, summed per class
    anchors = m.geometric.anchors.double()
    d = torch.cdist(e, anchors.reshape(-1, anchors.shape[-1]))
    geometric = (-d / m.geometric.delta).softmax(-1).reshape(len(e), C, -1).sum(-1)
    # eq. (16)-(17): e's query over its own sequence [e; tokens without CLS], per head, W_o to classes
    att = m.attentive
    seq = torch.cat([e[:, None], tokens[:, 1:]], 1)
    D, H = e.shape[1], att.num_heads
    q = e @ att.q.weight.double().T + att.q.bias.double()
    kv = seq @ att.kv.weight.double().T + att.kv.bias.double()
    k, v = kv[..., :D], kv[..., D:]
    heads = []
    for j in range(H):
        sl = slice(j * D // H, (j + 1) * D // H)
        w = (torch.einsum("bd,btd->bt", q[:, sl], k[..., sl]) / math.sqrt(D // H)).softmax(-1)
        heads.append(torch.einsum("bt,btd->bd", w, v[..., sl]))
    attentive = (torch.cat(heads, 1) @ att.proj.weight.double().T + att.proj.bias.double()).softmax(-1)
    c_l, c_g, c_a = _cf(primary), _cf(geometric), _cf(attentive)
    correction = _fuse(c_g, geometric, c_a, attentive)  # eq. (18)
    c_t = _cf(correction)
    corrected = _fuse(c_l, primary, c_t, correction)  # eq. (19)
    return dict(
        primary=primary,
        geometric=geometric,
        attentive=attentive,
        correction=correction,
        corrected=corrected,
        conf_primary=c_l,
        conf_geometric=c_g,
        conf_attentive=c_a,
        conf_correction=c_t,
    )


# The float64 model against the float64 reference: ~5 layers of sums of <= 768 products of
# values of order 1-10, each rounding 2^-53 = 1.1e-16: even the worst-case bound, 5 x 768 x 10 x
# 1.1e-16 = 4e-12, is far below 1e-9, and 1e-9 far below any wrong equation (a swapped
# confidence moves L_final by ~0.1).
TOL64 = dict(atol=1e-9, rtol=0)


@pytest.mark.parametrize("preset", ["tiny", "full"])
def test_head_matches_a_float64_reference(preset):
    """Every distribution and confidence of eq. (9)-(19), from the model's parameters (eval mode)."""
    m = _head_model(preset).double()
    if preset == "full":  # the paper's head: 64-64 MLP with BatchNorm and dropout 0.5, 12 attention heads
        assert m.attentive.num_heads == 12 and [x.p for x in m.head.mlp if isinstance(x, torch.nn.Dropout)] == [0.5] * 2
    e, tokens = _head_inputs(m)
    with torch.no_grad():
        o = m.forward_head(e.double(), tokens.double())
        ref = reference_head(m, e, tokens)
    assert o.corrected.dtype == torch.float64
    for k, v in ref.items():
        torch.testing.assert_close(getattr(o, k), v, **TOL64, msg=_named(k))
    for k in ("conf_primary", "conf_geometric", "conf_attentive", "conf_correction"):
        assert float(ref[k].min()) > 0.02 and float(ref[k].max()) < 0.98, (k, ref[k])  # not degenerate
    assert (ref["conf_primary"] - ref["conf_geometric"]).abs().min() > 0.01  # a swap would show


def test_full_head_in_training_mode_matches_the_reference():
    """BatchNorm on batch statistics and dropout (p = 0.5, scaled by 2) in the primary head, float64."""
    m = _head_model("full").double().train()
    drops = [x for x in m.head.mlp if isinstance(x, torch.nn.Dropout)]
    seen = []
    hooks = [d.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out))) for d in drops]
    e, tokens = _head_inputs(m, B=32)
    with torch.no_grad():
        o = m.forward_head(e.double(), tokens.double())
    for h in hooks:
        h.remove()
    masks = [out != 0 for _, out in seen]
    for (inp, out), mask in zip(seen, masks):
        assert 0.3 < mask.double().mean() < 0.7  # p = 0.5 (2048 draws: 0.5 +- 0.011)
        torch.testing.assert_close(out, inp * mask / 0.5, **TOL64)  # kept units scaled by 1 / (1 - p)
    with torch.no_grad():
        ref = reference_head(m, e, tokens, dropout_masks=masks)
    for k, v in ref.items():
        torch.testing.assert_close(getattr(o, k), v, **TOL64, msg=_named(k))


# float32 confidences against scipy's float64 entropy of the model's own float32 distributions:
# C_f = 1 - H / log C with H = -sum p log p over C <= 7 classes; each term carries a few roundings
# (relative ~3 u, u = 2^-24), the sum C - 1 more: |error| <= (C + 6) u / log C ~ 1e-6. atol 1e-5
# leaves room for exp/log implementations that differ by an ulp between CPUs, and is far below
# the ~0.1 by which a confidence of the wrong distribution differs.
TOL32 = dict(atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("preset", ["tiny", "full"])
def test_each_confidence_is_cf_of_its_own_distribution(preset, tiny):
    """c_l = C_f(l), c_g = C_f(t_g), c_a = C_f(t_a), c_t = C_f(t) (eq. 10-11), and eq. (18)-(19)
    recomputed from the model's own intermediate distributions with those confidences."""
    if preset == "tiny":
        tiny.eval()
        with torch.no_grad():
            o = tiny(_x(4))
    else:
        m = _head_model("full")
        with torch.no_grad():
            o = m.forward_head(*_head_inputs(m))
    for conf, dist in (
        ("conf_primary", "primary"),
        ("conf_geometric", "geometric"),
        ("conf_attentive", "attentive"),
        ("conf_correction", "correction"),
    ):
        torch.testing.assert_close(getattr(o, conf).double(), _cf(getattr(o, dist)), **TOL32, msg=_named(conf))
    c_l, c_g, c_a, c_t = (_cf(getattr(o, k)) for k in ("primary", "geometric", "attentive", "correction"))
    t = _fuse(c_g, o.geometric.double(), c_a, o.attentive.double())
    torch.testing.assert_close(o.correction.double(), t, **TOL32, msg=_named("eq. (18)"))
    L = _fuse(c_l, o.primary.double(), c_t, o.correction.double())
    torch.testing.assert_close(o.corrected.double(), L, **TOL32, msg=_named("eq. (19)"))


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
        torch.testing.assert_close(d.sum(-1), torch.ones(3), **SUM1)
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


def test_gradients_reach_trainable_parts_not_the_frozen_stream(tiny_frozen):
    tiny = tiny_frozen
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


def test_frozen_stream_statistics_do_not_move(tiny_frozen):
    tiny = tiny_frozen
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
        torch.testing.assert_close(getattr(big, name)[:2], getattr(small, name), **FWD32)


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
    torch.testing.assert_close(cl.corrected, ref.corrected, **FWD32)
    torch.testing.assert_close(cl.embedding, ref.embedding, **FWD32)
    assert bf.corrected.dtype == torch.float32  # reliability balancing stays in float32
    torch.testing.assert_close(bf.corrected.sum(-1), torch.ones(2), **SUM1)
    # bf16 keeps 8 bits (u = 2^-8 = 3.9e-3) through ~20 layers: a sanity bound, not a rounding check
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
    assert acc >= 0.9 and math.isfinite(loss.item())  # 32 of 32 from the 5th step on (3 may be wrong)


def test_landmark_stream_frozen_by_default_and_trainable_on_request():
    """The paper freezes its pretrained MobileFaceNet; from scratch it must learn (freeze_landmarks=False)."""
    from grefel.models.grefel import create_model

    x = torch.randn(4, 3, 48, 48)
    for freeze in (True, False):
        torch.manual_seed(0)
        model = create_model("tiny", 7, encoder={"freeze_landmarks": freeze}).train()
        lm = model.encoder.face_landback
        assert lm.training is not freeze
        model(x).log_corrected.sum().backward()
        grads = [p.grad for p in lm.parameters()]
        if freeze:
            assert all(not p.requires_grad for p in lm.parameters()) and all(g is None for g in grads)
        else:
            assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_conv_init_kaiming_for_the_tiny_preset_and_checked():
    """tiny starts its convolutions from He's fan-out normal init; the full preset keeps PyTorch's."""
    import math

    torch.manual_seed(0)
    tiny = create_model("tiny", C).encoder
    torch.manual_seed(0)
    full_like = create_model("tiny", C, encoder={"conv_init": "default"}).encoder
    w, w0 = tiny.conv3.weight.detach(), full_like.conv3.weight.detach()  # (64, 64, 3, 3): fan_in = fan_out = 576
    # He fan-out normal: std sqrt(2 / 576) = 0.059; PyTorch's default: uniform in +-1/sqrt(576), std 0.024.
    # Over 36,864 draws the sample std is within 1 % of its expectation.
    assert float(w.std()) == pytest.approx(math.sqrt(2 / 576), rel=0.05)
    assert float(w0.std()) == pytest.approx(1 / math.sqrt(3 * 576), rel=0.05)
    lm_tiny, lm_default = tiny.face_landback.state_dict(), full_like.face_landback.state_dict()
    assert all(torch.equal(lm_tiny[k], lm_default[k]) for k in lm_tiny)  # the landmark stream keeps its init
    with pytest.raises(ValueError, match="conv_init"):
        create_model("tiny", C, encoder={"conv_init": "xavier"})
