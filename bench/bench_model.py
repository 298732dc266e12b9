"""CPU speed of the GReFEL model against POSTER++ as its authors run it (same weights' shapes, same precision).

Prints figures (medians of ``--repeats`` timed runs after a warm-up; ratios are measured in the same
run, baseline and ours interleaved so that machine load hits both alike); asserts nothing.

    python bench/bench_model.py                          # full preset, batch 16, 224 input, train + infer
    python bench/bench_model.py --part train --repeats 5
    python bench/bench_model.py --preset tiny --size 112 --batch 64 --no-baseline
    python bench/bench_model.py --threads 1              # on a machine other jobs share

What is timed
  train  one step: forward, loss, backward, Adam step (fp32). Baseline: POSTER++ (SE + linear head,
         cross-entropy). Ours: GReFEL (reliability balancing, GReFELLoss), NCHW and channels_last.
  infer  forward in eval mode under ``torch.inference_mode`` (fp32).
  --sam  adds POSTER++'s step as its authors train it: SAM (rho 0.05) around Adam, i.e. two
         forward-backward passes per optimizer step. Not the issue's baseline (which is one pass
         with Adam); it shows what a POSTER++ user's step costs against GReFEL's recipe (Adam).

The baseline below is POSTER++'s forward pass as the authors wrote it, op for op: both streams
resize separately, the frozen landmark net runs in train mode, queries are reshaped with
``repeat``, cross-attention and ViT attention are written out (``(q * scale) @ k^T + bias``,
softmax, ``@ v``), windows are partitioned / reversed with copies. It reuses our IR-50 and
MobileFaceNet modules, which compute exactly the authors' layers. Goal: ours >= 1.25x
the baseline's images/s for both training and inference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grefel.models.grefel import create_model  # noqa: E402
from grefel.models.losses import GReFELLoss
from grefel.models.poster import PosterEncoder  # noqa: E402


class PosterPPBaseline(nn.Module):
    """POSTER++ (POSTER V2, 7 classes) with the authors' forward pass; parameters as in our encoder."""

    def __init__(self, num_classes: int = 7):
        super().__init__()
        self.enc = PosterEncoder()
        for blk in self.enc.VIT.blocks:
            blk.attn.fused_attn = False  # vit_model.py: attn = (q @ k.transpose(-2, -1)) * scale; softmax; @ v
        self.head = nn.Linear(768, num_classes)

    def train(self, mode: bool = True):
        for m in self.modules():  # POSTER++ leaves its frozen landmark net in train mode
            m.training = mode
        return self

    @staticmethod
    def _window_attention_global(attn, x, q_global):
        B_, N, C = x.shape
        B = q_global.shape[0]
        h = attn.num_heads
        head_dim = torch.div(C, h, rounding_mode="floor")
        B_dim = torch.div(B_, B, rounding_mode="floor")
        kv = attn.qkv(x).reshape(B_, N, 2, h, head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        q_global = q_global.repeat(1, B_dim, 1, 1, 1)
        q = q_global.reshape(B_, h, N, head_dim) * head_dim**-0.5
        a = q @ k.transpose(-2, -1)
        w = attn.window
        bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(w * w, w * w, -1)
        a = a + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        a = a.softmax(dim=-1)
        x = (a @ v).transpose(1, 2).reshape(B_, N, C)
        return attn.proj(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc
        B_ = x.shape[0]
        x_face = F.interpolate(x, size=112)
        faces = list(e.face_landback(x_face))
        faces[2] = e.last_face_conv(faces[2])
        x_ir = F.interpolate(x, size=112)  # ir50.py resizes again inside the image stream
        irs = e.ir_back(x_ir)
        irs = (e.conv1(irs[0]), e.conv2(irs[1]), e.conv3(irs[2]))
        outs = []
        for i, w in enumerate(e.windows):
            attn, ffn, norm = getattr(e, f"attn{i + 1}"), getattr(e, f"ffn{i + 1}"), getattr(e, f"window{i + 1}").norm
            C = irs[i].shape[1]
            q_global = (
                faces[i]
                .permute(0, 2, 3, 1)
                .reshape(B_, 1, w * w, attn.num_heads, C // attn.num_heads)
                .permute(0, 1, 3, 2, 4)
            )
            xw = norm(irs[i].permute(0, 2, 3, 1))
            shortcut = xw
            xw = (
                xw.view(B_, 1, w, 1, w, C).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, w * w, C)
            )  # window_partition
            o = self._window_attention_global(attn, xw, q_global)
            o = o.view(B_, 1, 1, w, w, -1).permute(0, 1, 3, 2, 4, 5).contiguous().view(B_, w, w, -1)  # window_reverse
            o = shortcut + ffn.drop_path(ffn.gamma1 * o)
            o = o + ffn.drop_path(ffn.gamma2 * ffn.mlp(ffn.norm(o)))
            outs.append(o.permute(0, 3, 1, 2))
        o = torch.cat(
            [
                e.embed_q(outs[0]).flatten(2).transpose(1, 2),
                e.embed_k(outs[1]).flatten(2).transpose(1, 2),
                e.embed_v(outs[2]),
            ],
            dim=1,
        )
        v = e.VIT
        t = torch.cat((v.cls_token.expand(B_, -1, -1), o), dim=1) + v.pos_embed
        t = v.norm(v.blocks(t))[:, 0]
        return self.head(v.se_block(t))


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _train_step(model, criterion, opt, x, y):
    def step():
        out = model(x)
        loss = criterion(out, y)
        loss = loss["total"] if isinstance(loss, dict) else loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _sam_train_step(model, criterion, opt, x, y, rho: float = 0.05):
    """POSTER++'s own step: SAM around Adam (rho 0.05, davda54/sam as POSTER++ uses it), two passes."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        criterion(model(x), y).backward()
        with torch.no_grad():  # first_step: climb to w + rho * g / ||g||
            norm = torch.norm(torch.stack([p.grad.norm(2) for p in params if p.grad is not None]), 2)
            e_w = [p.grad * (rho / (norm + 1e-12)) if p.grad is not None else None for p in params]
            for p, e in zip(params, e_w):
                if e is not None:
                    p.add_(e)
        opt.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        with torch.no_grad():  # second_step: back to w, then Adam with the gradient taken at w + e(w)
            for p, e in zip(params, e_w):
                if e is not None:
                    p.sub_(e)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _infer(model, x):
    def run():
        with torch.inference_mode():
            model(x)

    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full")
    ap.add_argument("--part", choices=["train", "infer", "all"], default="all")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224, help="input size (both streams resize to the preset's resolution)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-baseline", action="store_true", help="time GReFEL only")
    ap.add_argument(
        "--sam",
        action="store_true",
        help="also time POSTER++ as its authors train it (SAM around Adam: two forward-backward passes per step)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset {args.preset}, "
        f"batch {args.batch}, input {args.size}, fp32"
    )
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 7, (args.batch,))
    contenders = {}
    if not args.no_baseline:
        contenders["POSTER++ (authors' forward)"] = (PosterPPBaseline(7), nn.CrossEntropyLoss(), False)
    if args.sam and not args.no_baseline:
        contenders["POSTER++ with SAM (as trained)"] = (PosterPPBaseline(7), nn.CrossEntropyLoss(), "sam")
    contenders["GReFEL"] = (create_model(args.preset, 7), GReFELLoss(), False)
    contenders["GReFEL channels_last"] = (create_model(args.preset, 7), GReFELLoss(), True)
    parts = ["train", "infer"] if args.part == "all" else [args.part]
    for part in parts:
        fns = {}
        for name, (model, crit, cl) in contenders.items():
            sam, cl = cl == "sam", cl is True
            if sam and part != "train":
                continue  # SAM changes training only
            m = model.to(memory_format=torch.channels_last) if cl else model.to(memory_format=torch.contiguous_format)
            xi = x.contiguous(memory_format=torch.channels_last) if cl else x
            if part == "train":
                m.train()
                opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], 3e-4)
                fns[name] = (_sam_train_step if sam else _train_step)(m, crit, opt, xi, y)
            else:
                m.eval()
                fns[name] = _infer(m, xi)
        times = {name: [] for name in fns}
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(args.repeats):  # interleaved: load changes hit every contender alike
            for name, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        base = next(iter(times.values()))
        print(f"\n[{part}] images/s (median of {args.repeats}; all runs)")
        for name, ts in times.items():
            ips = args.batch / statistics.median(ts)
            ratio = statistics.median(base) / statistics.median(ts)
            print(f"  {name:<30} {ips:8.2f}  x{ratio:4.2f}   " + " ".join(f"{args.batch / t:.2f}" for t in ts))


if __name__ == "__main__":
    main()
