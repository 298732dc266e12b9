"""The baselines reproduce their authors' numbers: EAC, SCN and RUL heads, losses, gradients,
SCN's relabelling and the backbones, against fixtures computed by the authors' own code.

The fixtures (tests/data/baselines/*.npz; how they were made: tests/data/baselines/README.md) hold
small random inputs and weights, the authors' outputs and gradients. The authors' code itself is
not part of grefel; only its numbers are.

Tolerances. u = 2^-24 is float32's unit roundoff (eps = 2u). Summing K float32 terms in any
order has error <= K u sum|terms| (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.4,
gamma_K ~ K u). The fixture was computed by one implementation and the test by another, possibly
on another machine with another reduction order, so a difference may reach the sum of both
bounds: tol = 2 K u S, where K counts the roundings on the longest chain of accumulations
leading to the value and S is the value's "absolute shadow": the same expression evaluated with
|.| of every term (computed here in float64 from the fixture's inputs), the magnitude the
rounding errors scale with. Non-linear steps add their Lipschitz constants (softmax: 1/2 per
logit in the max-norm; sigmoid: 1/4; CE w.r.t. the logits: 2) times the error entering them.
Each test's docstring gives its K and S. check() also asserts that the bound stays below 5 % of
the shadow (VACUOUS), so that it cannot hide an O(1) error; the backbone test also shows that a
genuinely different network (plain torchvision ResNet-50) fails its bound.
"""

import json
from pathlib import Path

import baseline_weights
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from grefel.models import eac, rul, scn
from grefel.models.resnets import ResNetTrunk, create_backbone
from grefel.training.methods import RelabelStore

U = 2.0**-24
VACUOUS = 0.05  # a bound must stay below 5 % of its shadow (see check())
FIX = Path(__file__).parent / "data" / "baselines"


def load(name):
    with np.load(FIX / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


def t(a, grad=False):
    return torch.tensor(a).requires_grad_(grad)


def check(name, actual, expected, *terms):
    """|actual - expected| <= 2 u sum_i K_i S_i elementwise, terms = (K_1, S_1), (K_2, S_2), ...
    (S_i may be arrays broadcastable to expected).  Also asserts the bound is below VACUOUS x the
    largest shadow, so that it cannot hide an O(1) discrepancy."""
    actual = actual.detach().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    tol = sum(2 * K * U * np.asarray(S, dtype=np.float64) for K, S in terms)
    scale = max(np.max(S) for _, S in terms)
    assert np.max(tol) < VACUOUS * scale, f"{name}: vacuous tolerance"
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    print(f"{name}: max err {err.max():.2e}, max tol {np.max(tol):.2e}")
    assert np.all(err <= tol), f"{name}: max err {err.max():.3g} > tol {np.max(tol):.3g}"


# ----------------------------------------------------------------------------------------- EAC
def test_eac_head_and_loss():
    """EACHead + eac_loss vs the authors' Model (CAM head) + ACLoss, N=4, C=16, 7x7 maps, lambda 5.

    Shadows (float64): P = mean_hw |F|; S_logit = |W| P + |b|; S_cam = sum_c |F| |W|;
    S_d = S_cam + flip(S_cam') bounds |cam - flip(cam')|.
    K per output (C = 16, hw = 49, 7 classes, N = 4, n = N*7*hw = 1372 terms in the MSE):
      logits   K = 49 + 1 (mean) + 17 (dot + bias) = 67 on S_logit.
      cams     K = 16 (channel sum) on S_cam.
      ce       2 x the logits' error (CE is 2-Lipschitz in the max-norm) + 7 (logsumexp) + 4
               (exp, log) + N (batch mean): K = 2*67 + 15 = 149 on S = max S_logit + |ce|.
      d        our flip is exact; the authors flip with grid_sample, whose sampling coordinate
               carries a rounding error <= 2.5 eps (size-1) per axis, moving the bilinear sample by
               that fraction of a pixel: K_d = 16 + 16 + 10 ((w-1)+(h-1)) + 8 = 160 on max S_d.
      consist. mean(d^2): 2 |d| x d's error, on S = mean(2 S_d) max S_d, plus the positive sum of
               n terms, K = n + 2 on the value itself.
      loss     ce's bound + 5 x consistency's bound + 2 (add, scale) on |loss|.
      grads    dL/dF = W^T (softmax - onehot) / (N hw) + 2 lam W^T d / n.  Softmax is 1/2-Lipschitz,
               so p carries 67/2 + 11 on p + onehot; d carries K_d: K = 67 + 160 + 7 (class sum) + 4
               = 238 on the shadow with |W|, p + onehot and S_d.  dL/dW, dL/db: CE only (the CAMs
               use the detached W): K = 67 + N + 49 + 4 = 124.
    """
    f = load("eac")
    fc = nn.Linear(16, 7)
    fc.load_state_dict({"weight": t(f["w_fc__weight"]), "bias": t(f["w_fc__bias"])})
    head = nn.Module()
    head.fc = fc
    f1, f2, y = t(f["in_feat"], True), t(f["in_feat_flipped_view"], True), t(f["in_labels"])
    logits, cams = eac.eac_head(f1, fc)
    logits_f, cams_f = eac.eac_head(f2, fc)
    losses = eac.eac_loss(logits, y, cams, cams_f, lam=5.0)
    total, ce, cons = losses["total"], losses["ce"], losses["consistency"]
    total.backward()

    F1, F2 = f["in_feat"].astype(np.float64), f["in_feat_flipped_view"].astype(np.float64)
    W, b = np.abs(f["w_fc__weight"].astype(np.float64)), np.abs(f["w_fc__bias"].astype(np.float64))

    def s_logit(F):
        return np.abs(F).mean((2, 3)) @ W.T + b

    def s_cam(F):
        return np.einsum("nchw,kc->nkhw", np.abs(F), W)

    check("logits", logits, f["out_logits"], (67, s_logit(F1)))
    check("logits_flipped_view", logits_f, f["out_logits_flipped_view"], (67, s_logit(F2)))
    check("cams", cams, f["out_cams"], (16, s_cam(F1)))
    check("cams_flipped_view", cams_f, f["out_cams_flipped_view"], (16, s_cam(F2)))
    s_ce = s_logit(F1).max() + abs(float(f["out_ce"]))
    check("ce", ce, f["out_ce"], (149, s_ce))
    S_d = s_cam(F1) + s_cam(F2)[..., ::-1]
    cons_terms = [(160, 2 * S_d.mean() * S_d.max()), (1372 + 2, float(f["out_consistency"]))]
    check("consistency", cons, f["out_consistency"], *cons_terms)
    check(
        "loss", total, f["out_loss"], (149, s_ce), *[(5 * k, s) for k, s in cons_terms], (2, abs(float(f["out_loss"])))
    )
    p = np.exp(f["out_logits"] - f["out_logits"].max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(7)[f["in_labels"]]
    n = f["out_cams"].size
    s_g1 = np.einsum("nk,kc->nc", p + onehot, W)[..., None, None] / (4 * 49) + 2 * 5.0 / n * np.einsum(
        "kc,nkhw->nchw", W, S_d
    )
    check("grad_feat", f1.grad, f["grad_feat"], (238, s_g1))
    s_g2 = 2 * 5.0 / n * np.einsum("kc,nkhw->nchw", W, S_d[..., ::-1])
    check("grad_feat_flipped_view", f2.grad, f["grad_feat_flipped_view"], (238, s_g2))
    s_gw = np.einsum("nk,nc->kc", p + onehot, np.abs(F1).mean((2, 3))) / 4
    check("grad_fc_weight", head.fc.weight.grad, f["grad_fc__weight"], (124, s_gw))
    check("grad_fc_bias", head.fc.bias.grad, f["grad_fc__bias"], (124, (p + onehot).sum(0) / 4))


def test_eac_flip_consistency_non_square():
    """flip_consistency vs the authors' ACLoss (grid_sample flip) on 3 x 7 x 5 x 6 maps (no head).

    d = a - flip(b): exact in ours, off by the grid_sample coordinate rounding in the authors':
    K_d = 10 ((6-1) + (5-1)) + 8 = 98 on S = max(|a| + |b|).  MSE over n = 630 terms: 2|d| x d's
    error plus the positive sum, K = n + 2 on the value.  Gradients 2 d / n and -flip(2 d / n):
    K = 98 + 2 on 2 S / n.
    """
    f = load("eac")
    a, b = t(f["in_cam_a_5x6"], True), t(f["in_cam_b_5x6"], True)
    loss = eac.flip_consistency(a, b)
    loss.backward()
    s = float((np.abs(f["in_cam_a_5x6"]) + np.abs(f["in_cam_b_5x6"])).max())
    check("acloss", loss, f["out_acloss_5x6"], (98, 2 * s * s), (632, float(f["out_acloss_5x6"])))
    check("grad_a", a.grad, f["grad_cam_a_5x6"], (100, 2 * s / a.numel()))
    check("grad_b", b.grad, f["grad_cam_b_5x6"], (100, 2 * s / b.numel()))


# ----------------------------------------------------------------------------------------- SCN
def _scn_shadows(f):
    x = np.abs(f["in_feat"].astype(np.float64))
    Wa, ba = np.abs(f["w_alpha__0__weight"].astype(np.float64)), np.abs(f["w_alpha__0__bias"].astype(np.float64))
    W, b = np.abs(f["w_fc__weight"].astype(np.float64)), np.abs(f["w_fc__bias"].astype(np.float64))
    return x, x @ Wa.T + ba, x @ W.T + b, W, Wa


def test_scn_head_loss_and_grads():
    """SCNHead + scn_loss vs the authors' Res18Feature head + train-loop loss, N=8, C=12, beta 0.7,
    for margin 0.15 (rank regularisation active) and 0.0 (inactive: exactly 0 in both).

    Shadows: S_s = |w_a| |x| + |b_a| (importance pre-activation), S_z = |W| |x| + |b| (plain logits).
      alpha    13 (dot + bias) x 1/4 (sigmoid slope) on S_s, 4 (sigmoid) on alpha <= 1:
               K = 17 on S = S_s / 4 + 1.
      logits   alpha * z: K = 13 + 17 + 1 = 31 on S = S_z (alpha <= 1, |z| <= S_z).
      rr       alpha's error + group means of <= N = 8 values + 2: K = 17 + 10 on S = 1.
      loss     CE: 2 x the logits' K + 7 + 4 + N, plus rr's: K = 62 + 19 + 27 = 108 on
               S = max S_z + loss.
      grads    backward of the same chain: the logits' and alpha's errors (31 + 17), one more sum
               over <= max(N, 7, C) = 12 terms and the softmax (11): K = 71 on the gradient's
               shadow, built from (p + onehot) / N for dL/dlogits, S_z for z, 1/4 for the sigmoid
               slope and 1/(N - M) = 1/3 for the rank-regularisation term.
    """
    f = load("scn")
    x_abs, s_s, s_z, W, Wa = _scn_shadows(f)
    head = nn.Module()
    head.fc, head.alpha = nn.Linear(12, 7), nn.Linear(12, 1)
    head.load_state_dict(
        {
            "fc.weight": t(f["w_fc__weight"]),
            "fc.bias": t(f["w_fc__bias"]),
            "alpha.weight": t(f["w_alpha__0__weight"]),
            "alpha.bias": t(f["w_alpha__0__bias"]),
        }
    )
    y = t(f["in_targets"])
    p = np.exp(f["out_logits"] - f["out_logits"].max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    gl = (p + np.eye(7)[f["in_targets"]]) / 8  # shadow of dL/dlogits
    ga = (gl * s_z).sum(1, keepdims=True) + 1.0 / 3  # + |d rr / d alpha| <= 1/(N - M)
    for tag, margin in (("m015", 0.15), ("m000", 0.0)):
        head.zero_grad()
        x = t(f["in_feat"], True)
        alpha, logits = scn.scn_head(x, head.fc, head.alpha)
        losses = scn.scn_loss(alpha, logits, y, beta=0.7, margin=margin)
        total, rr = losses["total"], losses["rank"]
        total.backward()
        check("alpha", alpha, f["out_alpha"], (17, s_s / 4 + 1))
        check("logits", logits, f["out_logits"], (31, s_z))
        check(f"rr_{tag}", rr, f[f"out_rr_{tag}"], (27, 1.0))
        assert (float(rr.detach()) == 0.0) == (float(f[f"out_rr_{tag}"]) == 0.0)
        check(f"loss_{tag}", total, f[f"out_loss_{tag}"], (108, s_z.max() + float(f[f"out_loss_{tag}"])))
        check(f"grad_fc_weight_{tag}", head.fc.weight.grad, f[f"grad_fc__weight_{tag}"], (71, gl.T @ x_abs))
        check(f"grad_fc_bias_{tag}", head.fc.bias.grad, f[f"grad_fc__bias_{tag}"], (71, gl.sum(0)))
        check(
            f"grad_alpha_weight_{tag}",
            head.alpha.weight.grad,
            f[f"grad_alpha__0__weight_{tag}"],
            (71, 0.25 * ga.T @ x_abs),
        )
        check(f"grad_alpha_bias_{tag}", head.alpha.bias.grad, f[f"grad_alpha__0__bias_{tag}"], (71, 0.25 * ga.sum(0)))
        check(f"grad_feat_{tag}", x.grad, f[f"grad_feat_{tag}"], (71, gl @ W + 0.25 * ga @ Wa))


def test_scn_relabel_exact():
    """relabel() / LabelStore reproduce the authors' in-place relabelling exactly (integers).
    The decision p_max - p_given > 0.2 is taken on softmax values whose error (< 100 u) is far
    below the distance of every fixture case from the threshold, checked first."""
    f = load("scn")
    for tag in ("many", "one", "none"):
        lg = f[f"in_relabel_logits_{tag}"]
        p = np.exp(lg - lg.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        gap = p.max(1) - p[np.arange(8), f["in_targets"]]
        assert np.all(np.abs(gap - 0.2) > 1e-4), "fixture case too close to the threshold"
        store = RelabelStore(f["in_relabel_labels"], relabel_epoch=10, margin=0.2)
        idx, tg = t(f["in_relabel_indexes"]), t(f["in_targets"])
        assert store.update(idx, t(lg), tg, epoch=9) == 0  # before the start epoch: no-op
        store.update(idx, t(lg), tg, epoch=10)
        np.testing.assert_array_equal(store.labels.numpy(), f[f"out_relabel_labels_{tag}"])


# ----------------------------------------------------------------------------------------- RUL
def _rul_head(f):
    head = rul.RULHead(8, 4, 4, out_dim=16, num_classes=7, drop_rate=0.0)
    sd = {}
    for k in f:
        if k.startswith("w_head__"):
            sd[k[8:].replace("__", ".")] = t(f[k])
        elif k.startswith("w_fc__"):
            sd["fc." + k[6:]] = t(f[k])
    missing, unexpected = head.load_state_dict(sd, strict=False)
    assert not unexpected and all(m.endswith("num_batches_tracked") for m in missing)
    return head


def _rul_kappa(f):
    """Amplification of absolute errors by BatchNorm1d: max over features of
    (|W| |xhat| + |b|) / std(W xhat + b), xhat = the BatchNorm2d-normalised training map."""
    xh = torch.nn.functional.batch_norm(t(f["in_fmap"]), None, None, training=True, eps=2e-5).flatten(1).numpy()
    kap = 1.0
    for br in ("mu", "log_var"):
        Wl, bl = f[f"w_head__{br}__3__weight"].astype(np.float64), f[f"w_head__{br}__3__bias"].astype(np.float64)
        shadow = np.abs(xh) @ np.abs(Wl).T + np.abs(bl)
        kap = max(kap, float((shadow.max(0) / (xh @ Wl.T + bl).std(0)).max()))
    return kap


K_RUL = 256 + 129 + 16 + 18 + 4 + 17 + 19  # = 459, see test_rul_train_step


def test_rul_train_step():
    """RULHead (train) + add_up_loss vs the authors' res18feature + mixup_data + mixup_criterion,
    N=8, C=8, 4x4 maps, 16-d features, dropout 0 (so the mix partner, stored as in_perm, is the
    only randomness).

    Chain: BatchNorm2d batch statistics over N h w = 128 values (mean and variance: 2 x 128) ->
    Linear over 128 inputs + bias (129) -> BatchNorm1d over N = 8 (16) -> exp and mean over 16
    features (18) -> mixing weights and mix (4) -> Linear over 16 + bias (17) -> CE (7 + 4 + N =
    19): K_fwd = 459.  BatchNorm1d divides by the batch standard deviation of W xhat + b, which
    amplifies the absolute errors of that Linear by kappa = max (shadow / std) (_rul_kappa,
    ~20 here); every later quantity is O(1) after normalisation, so forward outputs get
    tol = 2 K_fwd kappa u S with S = max |value|.  Gradients run the same reductions backwards:
    K = 2 K_fwd kappa on S = max |gradient| + max(att1) (the mixing weights scale them).
    Running statistics: one mean / variance over 128 (or 8) values after the first Linear:
    K = (256 + 129) kappa on max |value|.
    """
    f = load("rul")
    head = _rul_head(f).train()
    fmap, y, perm = t(f["in_fmap"], True), t(f["in_labels"]), t(f["in_perm"])
    logits, used = head(fmap, perm=perm)
    loss = rul.add_up_loss(logits, y, used)["total"]
    loss.backward()
    K = K_RUL * _rul_kappa(f)
    check("logits", logits, f["out_logits"], (K, np.abs(f["out_logits"]).max()))
    check("loss", loss, f["out_loss"], (K, float(f["out_loss"]) + np.abs(f["out_logits"]).max()))
    for k, p in list(head.named_parameters()):
        key = "grad_fc__" + k[3:] if k.startswith("fc.") else "grad_head__" + k.replace(".", "__")
        check(key, p.grad, f[key], (2 * K, np.abs(f[key]).max() + np.abs(f["out_att1"]).max()))
    check("grad_fmap", fmap.grad, f["grad_fmap"], (2 * K, np.abs(f["grad_fmap"]).max()))
    for k, v in head.state_dict().items():
        if "running" in k:
            key = "out_after_train__" + k.replace(".", "__")
            check(key, v, f[key], ((256 + 129) * _rul_kappa(f), np.abs(f[key]).max()))


def test_rul_mixing():
    """mix_by_uncertainty on grefel's mu / log-variance (train-mode batch statistics) reproduces
    the authors' att1, att2 (weights of self and partner) and mixed features.  Up to the mix the
    chain is K = 256 + 129 + 16 + 18 + 4 = 423, amplified by kappa: weights (<= 1) on S = 1,
    mixed features on S = max |mixed| + max |mu| <= 2 max |mixed| / min weight, bounded here by
    max |mixed| / min(att1, att2)."""
    f = load("rul")
    head = _rul_head(f).train()
    fm = t(f["in_fmap"])
    with torch.no_grad():
        mixed, _, w_self, w_other = rul.mix_by_uncertainty(head.mu(fm), head.log_var(fm), t(f["in_perm"]))
    K = 423 * _rul_kappa(f)
    check("att1", w_self, f["out_att1"], (K, 1.0))
    check("att2", w_other, f["out_att2"], (K, 1.0))
    s_mix = np.abs(f["out_mixed"]).max() / min(f["out_att1"].min(), f["out_att2"].min())
    check("mixed", mixed, f["out_mixed"], (K, s_mix))


def test_rul_eval():
    """Eval path fc(mu(x)) with the running statistics left by one training forward (the head
    runs the fixture's training forward first).  Running statistics carry (256 + 129) kappa;
    normalising with them and the two Linear layers add 129 + 17: K = (385 + 146) kappa on
    max |logits|."""
    f = load("rul")
    head = _rul_head(f).train()
    head(t(f["in_fmap"]), perm=t(f["in_perm"]))
    head.eval()
    with torch.no_grad():
        out = head(t(f["in_fmap_eval"]))
    check("eval_logits", out, f["out_eval_logits"], ((385 + 146) * _rul_kappa(f), np.abs(f["out_eval_logits"]).max()))


# ----------------------------------------------------------------------------------- backbones
@pytest.mark.parametrize(
    "name,key,seed,L",
    [
        ("resnet50_caffe", "out_resnet50_caffe_features", 10, 53),
        ("resnet18", "out_rul_resnet18_features", 12, 20),
    ],
)
def test_backbone_trunks(name, key, seed, L):
    """grefel's trunks vs the authors' ResNets (EAC: Caffe-style ResNet-50; RUL: its ResNet-18),
    both filled by baseline_weights.fill(seed), eval mode, 2 x 3 x 64 x 64 input.

    Each of the L convolutions (53 in ResNet-50 incl. downsample, 20 in ResNet-18) sums at most
    Kmax = 512 x 3 x 3 = 4608 products; with He-scaled weights and BatchNorm the layers keep
    magnitudes O(1), so to first order the errors add up: K = L x Kmax, S = max |features|.
    This worst-case bound is loose (1.5 % of S for ResNet-50), so the test also shows that a
    genuinely different network, plain torchvision ResNet-50 (stride on the 3x3 conv, padded
    max-pool), FAILS it."""
    f = load("backbones")
    x = t(f["in_x"])
    net = baseline_weights.fill(create_backbone(name), seed).eval()
    with torch.no_grad():
        y = net(x)
    S = np.abs(f[key]).max()
    check(key, y, f[key], (L * 4608, S))
    if name == "resnet50_caffe":
        plain = baseline_weights.fill(ResNetTrunk(torchvision.models.resnet50(weights=None)), seed).eval()
        with torch.no_grad():
            err = np.abs(plain(x).numpy() - f[key]).max()
        assert err > 2 * L * 4608 * U * S


def test_fixture_meta_and_sizes():
    for name in ("eac", "scn", "rul", "backbones"):
        assert (FIX / f"{name}.npz").stat().st_size < 200_000
        assert json.loads(str(load(name)["meta"]))


# ------------------------------------------------------------------------------ tiny backbone
def test_tiny_variants_train_a_step():
    """Each method's tiny variant trains a step at 64 px: shapes, finite losses, gradients reach the
    backbone; EAC's classifier gets no gradient from the consistency term (its CAMs use the detached W)."""
    from grefel.models.factory import create_method_model

    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 64, 64), torch.tensor([0, 1, 2, 3, 4, 5])
    net = create_method_model("eac", "tiny", 7).train()
    logits, cams, cams_f = net(x, x.flip(-1))
    losses = eac.eac_loss(logits, y, cams, cams_f)
    assert logits.shape == (6, 7) and cams.shape == (6, 7, 4, 4) and torch.isfinite(losses["total"])
    gw = torch.autograd.grad(5.0 * losses["consistency"], net.fc.weight, allow_unused=True)[0]
    assert gw is None or torch.count_nonzero(gw) == 0
    net = create_method_model("scn", "tiny", 7).train()
    scn.scn_loss(*net(x), y)["total"].backward()
    assert net.backbone.stem[0].weight.grad is not None
    net = create_method_model("rul", "tiny", 7).train()
    logits, perm = net(x)
    rul.add_up_loss(logits, y, perm)["total"].backward()
    assert net.backbone.stem[0].weight.grad is not None and net.head.log_var[3].weight.grad is not None
    net.eval()
    assert net(x).corrected.shape == (6, 7)
