"""Our encoder, loaded with a POSTER++ checkpoint, computes what the POSTER++ authors' model computes.

The authors' code is not available here, so ``poster_reference`` below re-implements their forward
pass literally, as plain functions on a POSTER++-format state dict (``module.`` keys): the same
reshapes (``_to_query``: channel-last, contiguous per-head channel chunks, no query projection),
``(q * scale) @ k^T + bias``, the normalised map as residual, ``window_reverse``, ``_to_channel_first``,
``VisionTransformer.forward_features`` and ``SE_block``. It shares no code with grefel.models.
The checkpoint is random but every parameter and buffer matters (layer scales, position bias and
BatchNorm statistics are far from their identity initialisations), so a wrong detail shows up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grefel.models.grefel import create_model
from grefel.weights.verify import load_pretrained

# ---------------------------------------------------------------- literal POSTER++ forward pass


def _bn(sd, p, x):
    return F.batch_norm(
        x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5
    )


def _conv_block(sd, p, x, stride=1, padding=0, groups=1, act=True):  # Conv_block / Linear_block
    x = F.conv2d(x, sd[p + ".conv.weight"], None, stride, padding, 1, groups)
    x = _bn(sd, p + ".bn", x)
    return F.prelu(x, sd[p + ".prelu.weight"]) if act else x


def _depth_wise(sd, p, x, stride, residual):
    g = sd[p + ".conv_dw.conv.weight"].shape[0]
    out = _conv_block(sd, p + ".conv", x)
    out = _conv_block(sd, p + ".conv_dw", out, stride, 1, g)
    out = _conv_block(sd, p + ".project", out, act=False)
    return x + out if residual else out


def _residual(sd, p, x, n):
    for i in range(n):
        x = _depth_wise(sd, f"{p}.model.{i}", x, 1, True)
    return x


def mobilefacenet_reference(sd, x):
    p = "module.face_landback"
    out = _conv_block(sd, p + ".conv1", x, 2, 1)
    out = _conv_block(sd, p + ".conv2_dw", out, 1, 1, 64)
    out = _depth_wise(sd, p + ".conv_23", out, 2, False)
    out = _residual(sd, p + ".conv_3", out, 4)
    out1 = out
    out = _depth_wise(sd, p + ".conv_34", out, 2, False)
    out = _residual(sd, p + ".conv_4", out, 6)
    out2 = out
    out = _depth_wise(sd, p + ".conv_45", out, 2, False)
    out = _residual(sd, p + ".conv_5", out, 2)
    return out1, out2, _conv_block(sd, p + ".conv_6_sep", out)


def _bottleneck_ir(sd, p, x, stride):
    if p + ".shortcut_layer.0.weight" in sd:
        sc = _bn(sd, p + ".shortcut_layer.1", F.conv2d(x, sd[p + ".shortcut_layer.0.weight"], None, stride))
    else:
        sc = F.max_pool2d(x, 1, stride)
    r = _bn(sd, p + ".res_layer.0", x)
    r = F.conv2d(r, sd[p + ".res_layer.1.weight"], None, 1, 1)
    r = F.prelu(r, sd[p + ".res_layer.2.weight"])
    r = F.conv2d(r, sd[p + ".res_layer.3.weight"], None, stride, 1)
    return _bn(sd, p + ".res_layer.4", r) + sc


def ir50_reference(sd, x):
    p = "module.ir_back"
    x = F.interpolate(x, size=112)
    x = F.prelu(
        _bn(sd, p + ".input_layer.1", F.conv2d(x, sd[p + ".input_layer.0.weight"], None, 1, 1)),
        sd[p + ".input_layer.2.weight"],
    )
    outs = []
    for body, n in (("body1", 3), ("body2", 4), ("body3", 14)):
        for i in range(n):
            x = _bottleneck_ir(sd, f"{p}.{body}.{i}", x, 2 if i == 0 else 1)
        outs.append(x)
    return outs


def _linear(sd, p, x):
    return F.linear(x, sd[p + ".weight"], sd[p + ".bias"])


def _ln(sd, p, x, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def _to_query(x, N, num_heads, dim_head):
    B = x.shape[0]
    return x.permute(0, 2, 3, 1).reshape(B, 1, N, num_heads, dim_head).permute(0, 1, 3, 2, 4)


def _window_attention_global(sd, p, x, q_global, num_heads, window):
    B_, N, C = x.shape
    B = q_global.shape[0]
    head_dim = C // num_heads
    kv = _linear(sd, p + ".qkv", x).reshape(B_, N, 2, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    q = q_global.repeat(1, B_ // B, 1, 1, 1).reshape(B_, num_heads, N, head_dim)
    q = q * head_dim**-0.5
    attn = q @ k.transpose(-2, -1)
    bias = sd[p + ".relative_position_bias_table"][sd[p + ".relative_position_index"].view(-1)].view(
        window * window, window * window, -1
    )
    attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    attn = attn.softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
    return _linear(sd, p + ".proj", x)


def _feed_forward(sd, p, attn_windows, shortcut, window):
    B, H, W, C = shortcut.shape
    x = (
        attn_windows.view(B, H // window, W // window, window, window, -1)
        .permute(0, 1, 3, 2, 4, 5)
        .contiguous()
        .view(B, H, W, -1)
    )
    x = shortcut + sd[p + ".gamma1"] * x
    h = _ln(sd, p + ".norm", x, 1e-5)
    h = _linear(sd, p + ".mlp.fc2", F.gelu(_linear(sd, p + ".mlp.fc1", h)))
    return x + sd[p + ".gamma2"] * h


def _vit_block(sd, p, x):
    B, N, C = x.shape
    h = _ln(sd, p + ".norm1", x, 1e-6)
    qkv = _linear(sd, p + ".attn.qkv", h).reshape(B, N, 3, 8, C // 8).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * (C // 8) ** -0.5).softmax(dim=-1)
    x = x + _linear(sd, p + ".attn.proj", (attn @ v).transpose(1, 2).reshape(B, N, C))
    h = _ln(sd, p + ".norm2", x, 1e-6)
    return x + _linear(sd, p + ".mlp.fc2", F.gelu(_linear(sd, p + ".mlp.fc1", h)))


def poster_reference(sd, x):
    """-> (tokens after VIT.norm (B, 148, 768), SE-gated CLS embedding (B, 768))."""
    B_ = x.shape[0]
    x_face = F.interpolate(x, size=112)
    f1, f2, f3 = mobilefacenet_reference(sd, x_face)
    f3 = F.conv2d(f3, sd["module.last_face_conv.weight"], sd["module.last_face_conv.bias"], 1, 1)
    heads, dims, wins = (2, 4, 8), (64, 128, 256), (28, 14, 7)
    faces = [_to_query(f, w * w, h, d // h) for f, w, h, d in zip((f1, f2, f3), wins, heads, dims)]
    irs = ir50_reference(sd, x)
    outs = []
    for i in range(3):
        ir = F.conv2d(irs[i], sd[f"module.conv{i + 1}.weight"], sd[f"module.conv{i + 1}.bias"], 2, 1)
        xw = ir.permute(0, 2, 3, 1)
        xw = _ln(sd, f"module.window{i + 1}.norm", xw, 1e-5)
        shortcut = xw
        xw = xw.view(-1, wins[i] * wins[i], dims[i])
        o = _window_attention_global(sd, f"module.attn{i + 1}", xw, faces[i], heads[i], wins[i])
        o = _feed_forward(sd, f"module.ffn{i + 1}", o, shortcut, wins[i])
        outs.append(o.permute(0, 3, 1, 2))
    o1 = F.conv2d(
        F.conv2d(outs[0], sd["module.embed_q.0.weight"], sd["module.embed_q.0.bias"], 2, 1),
        sd["module.embed_q.1.weight"],
        sd["module.embed_q.1.bias"],
        2,
        1,
    )
    o2 = F.conv2d(outs[1], sd["module.embed_k.0.weight"], sd["module.embed_k.0.bias"], 2, 1)
    o3 = F.conv2d(outs[2], sd["module.embed_v.proj.weight"], sd["module.embed_v.proj.bias"])
    o = torch.cat([o1.flatten(2).transpose(1, 2), o2.flatten(2).transpose(1, 2), o3.flatten(2).transpose(1, 2)], dim=1)
    t = torch.cat([sd["module.VIT.cls_token"].expand(B_, -1, -1), o], dim=1) + sd["module.VIT.pos_embed"]
    for i in range(2):
        t = _vit_block(sd, f"module.VIT.blocks.{i}", t)
    t = _ln(sd, "module.VIT.norm", t, 1e-6)
    cls = t[:, 0]
    gate = torch.sigmoid(
        _linear(sd, "module.VIT.se_block.linear2", F.relu(_linear(sd, "module.VIT.se_block.linear1", cls)))
    )
    return t, cls * gate


# ---------------------------------------------------------------- a random POSTER++ checkpoint


def random_poster_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A POSTER++-format state dict (``module.`` keys) where no parameter is at a neutral value."""
    g = torch.Generator().manual_seed(seed)
    enc = create_model("full", 7).encoder
    sd = {}
    for k, v in enc.state_dict().items():
        if not v.is_floating_point():
            sd[k] = v.clone()
        elif k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith(("gamma1", "gamma2")):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("relative_position_bias_table"):
            sd[k] = torch.randn(v.shape, generator=g)
        elif k.endswith("prelu.weight") or ".res_layer.2." in k or k.endswith("input_layer.2.weight"):
            sd[k] = 0.1 + 0.3 * torch.rand(v.shape, generator=g)
        elif v.ndim == 1:  # norm weights / biases: around 1 or 0
            base = 1.0 if k.endswith("weight") else 0.0
            sd[k] = base + 0.2 * torch.randn(v.shape, generator=g)
        elif k in ("VIT.cls_token", "VIT.pos_embed"):
            sd[k] = 0.5 * torch.randn(v.shape, generator=g)
        else:  # conv / linear weights at a fan-in scale
            sd[k] = torch.randn(v.shape, generator=g) / v[0].numel() ** 0.5
    sd = {"module." + k: v for k, v in sd.items()}
    sd["module.VIT.head.linear.weight"] = torch.randn(7, 768, generator=g)  # POSTER++'s classifier: unused by GReFEL
    sd["module.VIT.head.linear.bias"] = torch.zeros(7)
    return sd


# Float64 (unit roundoff 1.1e-16): the ~60 layers of sums of <= 2304 products (3 x 3 x 256
# convolutions) bound the two paths' difference far below 1e-9 (even worst case, 60 x 2304 x 6 x
# 1.1e-16 = 1e-10 at values up to ~6), while any wrong detail moves values by > 1e-3.
TOL64 = dict(atol=1e-9, rtol=0)
# Float32 against the float64 reference: rounding grows like sqrt(n) u per layer (sqrt(2304) x
# 2^-24 = 2.9e-6 relative to a layer's scale), over ~60 layers ~1.7e-4, at values up to ~6: 1e-3.
TOL32 = dict(atol=1e-3, rtol=0)


def test_encoder_matches_poster_reference(tmp_path):
    torch.manual_seed(0)
    sd = random_poster_state_dict()
    path = tmp_path / "posterv2_rafdb.pth"
    torch.save({"state_dict": sd, "epoch": 7}, path)
    model = create_model("full", 7)
    report = load_pretrained(model, poster=path)
    assert report.sources[0].complete and report.sources[0].loaded
    assert "VIT.head.linear.weight" in report.sources[0].unused
    model.eval()
    x = torch.randn(2, 3, 224, 224)  # 224 input: both streams resize to 112 with nearest
    sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    with torch.no_grad():
        ref_tokens, ref_e = poster_reference(sd64, x.double())
        e, tokens = model.encoder(x)
        e64, tokens64 = model.double().encoder(x.double())
        # channels_last gives the same function
        model = model.to(memory_format=torch.channels_last)
        e64_cl, tokens64_cl = model.encoder(x.double().contiguous(memory_format=torch.channels_last))
        e_cl, tokens_cl = model.float().encoder(x.contiguous(memory_format=torch.channels_last))
    assert ref_tokens.shape == tokens.shape == (2, 148, 768)
    assert ref_e.abs().mean() > 0.05 and ref_tokens.std() > 0.5  # nothing degenerate
    assert ref_tokens.abs().max() < 8 and ref_e.abs().max() < 8  # the scale the tolerances assume
    for ours_e, ours_tokens, tol in ((e64, tokens64, TOL64), (e64_cl, tokens64_cl, TOL64)):
        torch.testing.assert_close(ours_tokens, ref_tokens, **tol)
        torch.testing.assert_close(ours_e, ref_e, **tol)
    for ours_e, ours_tokens in ((e, tokens), (e_cl, tokens_cl)):
        torch.testing.assert_close(ours_tokens.double(), ref_tokens, **TOL32)
        torch.testing.assert_close(ours_e.double(), ref_e, **TOL32)
