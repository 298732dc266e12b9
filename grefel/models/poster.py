"""The window-based cross-attention ViT encoder of GReFEL (paper 3.1), i.e. POSTER++'s encoder.

Data flow (full preset, B images of any size, normalised with ImageNet mean/std):

    x --nearest resize--> 112x112 --+--> MobileFaceNet (frozen)  -> z_lm: 64x28x28, 128x14x14, 512x7x7
                                    |                               -(last_face_conv)-> 256x7x7
                                    +--> IR-50 stages 1-3        -> 64x56x56, 128x28x28, 256x14x14
                                                                    -(conv1/2/3, stride 2)-> 28/14/7
    per scale i (dims 64/128/256, heads 2/4/8, window = whole map 28/14/7):
        X_img = LayerNorm(image map)                                      (window step; also the residual)
        OCA   = proj(softmax(q k^T / sqrt(d) + b) v), q = z_lm, (k, v) = kv(X_img)     eq. (1)-(3)
        X'    = X_img + gamma1 * OCA                                       eq. (4)
        Xo_i  = X' + gamma2 * MLP(LayerNorm(X'))                           eq. (5)
    Xo = [embed_q(Xo_1), embed_k(Xo_2), embed_v(Xo_3)]  -> 3 x 49 tokens of width 768    eq. (6)
    tokens = LayerNorm(ViT blocks([CLS; Xo] + pos))  (2 pre-norm blocks)                eq. (7)-(8)
    e = SE(tokens[:, 0])                                                  the embedding e = p(x)

Every detail that decides whether POSTER++ weights compute the same function is kept (see
docs/model.md): no query projection (the landmark features are the queries, channels split into
contiguous per-head chunks), ``kv = Linear(dim, 2 dim)``, Swin-style relative position bias, the
*normalised* map as residual, layer-scale 1e-5, LayerNorm eps 1e-5 in the cross-attention part and
1e-6 in the ViT. Module names equal POSTER++'s (``face_landback``, ``ir_back``, ``attn1``,
``ffn1``, ``window1``, ``embed_q``, ``VIT.blocks.0.attn.qkv`` ...), so its checkpoints map 1:1.

Differences that do not change the function: attention uses ``F.scaled_dot_product_attention``
(the bias goes in as an additive mask); the frozen landmark stream runs under ``no_grad`` and always
in eval mode (POSTER++ lets its BatchNorm statistics drift; ``freeze_landmarks=False``, for training
from scratch, trains it like the rest); token <-> map reshapes are views that
are free in ``channels_last``; the unused modules of POSTER++ (landmark head, IR stage 4,
``VIT.patch_embed``/``CON1``/``IRLinear*``/``eca_block``/``blocks.N.conv``) are not built.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from grefel.models.ir50 import IR50
from grefel.models.mobilefacenet import MobileFaceNet

INPUT_SIZE = 112  # both streams see 112 x 112 in POSTER++ (resized with nearest neighbour); the tiny preset uses 64


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's (N, N) index into the ((2w-1)^2, heads) bias table, N = w*w (row-major tokens)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowNorm(nn.Module):
    """Window step of one scale: (B, C, H, W) map -> LayerNorm'd tokens (B, H*W, C).

    The window is the whole map (one window per image), so partitioning is the identity; the
    normalised tokens are also the residual of eq. (4) (POSTER++'s ``shortcut``).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class WindowCrossAttention(nn.Module):
    """Overall cross-attention of one scale, eq. (1)-(3): landmark queries, image keys/values.

    Following the authors' model there is no query projection (eq. 1's ``w_q`` is the identity):
    the landmark tokens are split into ``heads`` contiguous channel chunks and scaled by
    ``head_dim ** -0.5``. ``b`` is a learned relative position bias per head (Swin).
    """

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 2 * dim)  # k, v of eq. (1); the name is POSTER++'s
        self.proj = nn.Linear(dim, dim)  # w_o of eq. (3)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        n = self.window * self.window
        return self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """x: normalised image tokens (B, N, C); landmarks: landmark tokens (B, N, C)."""
        B, N, C = x.shape
        h = self.num_heads
        k, v = self.qkv(x).view(B, N, 2, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)
        q = landmarks.reshape(B, N, h, C // h).transpose(1, 2)  # eq. (1) with w_q = identity
        bias = self.position_bias().to(q.dtype).unsqueeze(0)  # b of eq. (2), broadcast over the batch
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # eq. (2), scale 1/sqrt(d)
        return self.proj(o.transpose(1, 2).reshape(B, N, C))  # eq. (3)


class FeedForward(nn.Module):
    """Eq. (4)-(5) with layer scale: X' = X + g1 * OCA;  Xo = X' + g2 * MLP(LayerNorm(X'))."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, layer_scale: float = 1e-5):
        super().__init__()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.norm = nn.LayerNorm(dim)
        self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
        self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, attn: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        x = shortcut + self.drop_path(self.gamma1 * attn)  # eq. (4)
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm(x)))  # eq. (5)


class SEBlock(nn.Module):
    """POSTER++'s squeeze-excitation gate on the CLS token: x * sigmoid(W2 relu(W1 x))."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.linear2(F.relu(self.linear1(x))))


class FusionViT(nn.Module):
    """Multi-scale fusion, eq. (6)-(8): [CLS; Xo] + position embedding -> pre-norm ViT blocks -> LayerNorm.

    Named ``VIT`` in the encoder so that POSTER++'s ``VIT.*`` keys map 1:1.
    """

    def __init__(self, num_tokens: int, dim: int = 768, depth: int = 2, num_heads: int = 8, drop_path: float = 0.0):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, dim))
        dpr = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.Sequential(
            *[Block(dim, num_heads, qkv_bias=True, drop_path=dpr[i], norm_layer=norm) for i in range(depth)]
        )
        self.norm = norm(dim)
        self.se_block = SEBlock(dim)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # eq. (6)
        return self.norm(self.blocks(x))  # eq. (7)-(8), final LayerNorm


class PosterEncoder(nn.Module):
    """p(x; theta_p): image -> (embedding e (B, D), tokens (B, 1 + 3*49, D), CLS first).

    Defaults are the full (paper / POSTER++) encoder: 43.75M parameters counted over the forward
    pass, 0.91M of them the frozen landmark stream.
    """

    def __init__(
        self,
        dims: tuple[int, int, int] = (64, 128, 256),
        heads: tuple[int, int, int] = (2, 4, 8),
        ir_units: tuple[int, int, int] = (3, 4, 14),
        ir_stem: int = 64,
        lm_widths: tuple[int, int, int] = (64, 128, 512),
        lm_expand: tuple[int, ...] = (128, 128, 256, 256, 512, 256),
        lm_blocks: tuple[int, int, int] = (4, 6, 2),
        embed_dim: int = 768,
        depth: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.25,
        vit_drop_path: float = 0.0,
        input_size: int = INPUT_SIZE,
        resize_mode: str = "nearest",
        global_pool: str = "token",
        embed_norm: bool = False,
        freeze_landmarks: bool = True,
        conv_init: str = "default",
    ):
        super().__init__()
        if global_pool not in ("token", "avg", "max"):
            raise ValueError(
                "global_pool must be 'token' (POSTER++: the CLS token), 'avg' or 'max' (over the fused tokens), "
                f"got {global_pool!r}"
            )
        self.global_pool = global_pool
        if tuple(lm_widths[:2]) != tuple(dims[:2]):
            raise ValueError(f"landmark widths {lm_widths[:2]} must equal the first two scale dims {dims[:2]}")
        self.dims, self.embed_dim = tuple(dims), embed_dim
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16 (got {input_size})")
        self.input_size, self.resize_mode = input_size, resize_mode
        self.windows = (input_size // 4, input_size // 8, input_size // 16)  # 28, 14, 7 at 112
        # POSTER++ freezes its pretrained landmark stream; from scratch (freeze_landmarks=False) it learns
        self.freeze_landmarks = bool(freeze_landmarks)
        self.face_landback = MobileFaceNet(lm_widths, lm_expand, lm_blocks)
        if self.freeze_landmarks:
            self.face_landback.requires_grad_(False).eval()
        self.ir_back = IR50(dims, ir_units, ir_stem)
        self.last_face_conv = nn.Conv2d(lm_widths[2], dims[2], 3, padding=1)
        self.conv1 = nn.Conv2d(dims[0], dims[0], 3, 2, 1)  # 56 -> 28
        self.conv2 = nn.Conv2d(dims[1], dims[1], 3, 2, 1)  # 28 -> 14
        self.conv3 = nn.Conv2d(dims[2], dims[2], 3, 2, 1)  # 14 -> 7
        ffn_dpr = (0.0, drop_path / 2, drop_path)  # POSTER++: linspace(0, 0.5, 5)[:3]
        for i, (d, h, w) in enumerate(zip(dims, heads, self.windows), start=1):
            setattr(self, f"window{i}", WindowNorm(d))
            setattr(self, f"attn{i}", WindowCrossAttention(d, h, w))
            setattr(self, f"ffn{i}", FeedForward(d, mlp_ratio, ffn_dpr[i - 1]))
        self.embed_q = nn.Sequential(
            nn.Conv2d(dims[0], embed_dim, 3, 2, 1), nn.Conv2d(embed_dim, embed_dim, 3, 2, 1)
        )  # 28 -> 7
        self.embed_k = nn.Sequential(nn.Conv2d(dims[1], embed_dim, 3, 2, 1))  # 14 -> 7
        self.embed_v = PatchEmbed(img_size=self.windows[2], patch_size=1, in_chans=dims[2], embed_dim=embed_dim)
        self.num_tokens = 3 * self.windows[2] ** 2
        self.VIT = FusionViT(self.num_tokens, embed_dim, depth, num_heads, vit_drop_path)
        # not in POSTER++ (tiny preset only): BatchNorm on the pooled embedding, before the SE gate
        self.embed_norm = nn.BatchNorm1d(embed_dim) if embed_norm else None
        if conv_init not in ("default", "kaiming"):
            raise ValueError(f"conv_init must be 'default' (PyTorch's, as POSTER++) or 'kaiming', got {conv_init!r}")
        self._init_trainable(conv_init)

    def _init_trainable(self, conv_init: str):
        """ViT-style Linear init; with ``conv_init="kaiming"`` (from scratch: the tiny preset) the
        convolutions get He's fan-out normal init, as torchvision's ResNets, instead of PyTorch's
        default (a third of the variance), which left some seeds at chance for several epochs."""
        for name, m in self.named_modules():
            if name.startswith("face_landback"):  # the landmark stream keeps PyTorch's init (or its weights)
                continue
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d) and conv_init == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def train(self, mode: bool = True):
        """A frozen landmark stream stays in eval mode: its BatchNorm statistics never move."""
        super().train(mode)
        if self.freeze_landmarks:
            self.face_landback.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W), any H, W -> final LayerNorm'd tokens (B, 1 + 3 w^2, D).

        CLS first; w = 7 at 112.
        """
        s = self.input_size
        if x.shape[-2:] != (s, s):
            if self.resize_mode == "nearest":
                x = F.interpolate(x, size=s)  # as POSTER++ does in both streams
            else:
                x = F.interpolate(x, size=(s, s), mode=self.resize_mode, align_corners=False, antialias=True)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_landmarks):
            lm = self.face_landback(x)
        lm = (lm[0], lm[1], self.last_face_conv(lm[2]))
        ir = self.ir_back(x)
        ir = (self.conv1(ir[0]), self.conv2(ir[1]), self.conv3(ir[2]))
        fused = []
        for i in range(3):
            window, attn, ffn = (
                getattr(self, f"window{i + 1}"),
                getattr(self, f"attn{i + 1}"),
                getattr(self, f"ffn{i + 1}"),
            )
            x_img = window(ir[i])  # (B, N, C), normalised: also the residual
            z_lm = lm[i].flatten(2).transpose(1, 2)  # (B, N, C) landmark queries
            xo = ffn(attn(x_img, z_lm), x_img)  # eq. (1)-(5)
            B, N, C = xo.shape
            fused.append(xo.transpose(1, 2).reshape(B, C, self.windows[i], self.windows[i]))
        xo = torch.cat(
            [
                self.embed_q(fused[0]).flatten(2).transpose(1, 2),
                self.embed_k(fused[1]).flatten(2).transpose(1, 2),
                self.embed_v(fused[2]),
            ],
            dim=1,
        )
        return self.VIT(xo)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> embedding e: the SE-gated CLS token (the input of POSTER++'s classifier).

        With ``global_pool="avg"`` (timm's name for it) the mean of the fused tokens replaces the
        CLS token. From scratch, a small encoder learns through the CLS token very slowly (its only
        path to the tokens is one attention layer initialised near zero): on the synthetic faces
        the tiny preset stayed near chance for 20 epochs with the CLS token. Pretrained POSTER++
        weights and the ``full`` preset use the CLS token.

        ``embed_norm=True`` puts a BatchNorm on the pooled vector before the SE gate. The max over
        LayerNorm'd tokens varies little between images at initialisation (about 5 % of its mean
        square), which slows a randomly initialised encoder's start; per-channel batch
        statistics restore that spread. In eval mode it is a fixed affine map, so no prediction
        depends on the rest of its batch.
        """
        if self.global_pool == "token":
            pooled = tokens[:, 0]
        else:
            pooled = tokens[:, 1:].mean(dim=1) if self.global_pool == "avg" else tokens[:, 1:].amax(dim=1)
        if self.embed_norm is not None:
            pooled = self.embed_norm(pooled)
        return self.VIT.se_block(pooled)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.forward_features(x)
        return self.forward_head(tokens), tokens
