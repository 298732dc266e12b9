"""`grefel pretrain`: pretrained weights for the tiny preset, made from synthetic faces.

The paper starts its encoder from two pretrained networks: IR-50 trained on face recognition
(face.evoLVe, MS1M) for the image stream and MobileFaceNet trained on 68-point landmark detection,
frozen, for the landmark stream. No such weights exist at the tiny preset's widths, so this module
makes their miniature analogues on the built-in synthetic faces (:mod:`grefel.synth.faces`).

Stage 1, the two streams (the paper's pretrained set):

* the image stream (tiny IR, ``ir_back``) learns **face identity** over hundreds of characters
  (a CosFace margin softmax over character ids on a 64-d embedding, face.evoLVe's
  ``output_layer`` shape: BN, dropout, flatten, linear, BN);
* the landmark stream (tiny MobileFaceNet, ``face_landback``) learns **landmark regression**: the
  22 points of :mod:`grefel.synth.landmarks` from its last map (``output_layer``: flatten,
  linear, PReLU, linear), L1 on coordinates normalised to [-1, 1].

Stage 2 (``encoder_task``), the whole tiny encoder (the landmark stream frozen) on the same
characters' expressions (a linear head, cross-entropy) or identities (CosFace): the analogue of a
POSTER++ checkpoint trained on another expression dataset. Its ``tiny-encoder.pth`` is what the
tiny preset starts from (grefel ships one, :mod:`grefel.weights.catalog`).

The faces come from a synthesis seed (default 1000) that no demo uses: characters are drawn from
``(seed, 0, index)`` and images from ``(seed, 1, char, expression, n)``, so none of them is a
character of the demo's seed 0 (:func:`check_disjoint` verifies it parameter by parameter).

Every file is written through an in-memory buffer (``torch.save`` names its archive after the
file), so its bytes depend on the weights alone: the same settings on the same machine and torch
give the same sha256.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from grefel.core.errors import GrefelError
from grefel.core.io import atomic_path, read_json, sha256_file, writable_dir, write_json
from grefel.data.transforms import normalize
from grefel.models.grefel import create_model
from grefel.synth import faces
from grefel.synth.landmarks import FLIP_PERMUTATION, NUM_LANDMARKS, landmarks
from grefel.training.config import PretrainConfig
from grefel.weights.verify import load_pretrained

IR_FILE = "tiny-ir.pth"
MFN_FILE = "tiny-mobilefacenet.pth"
ENCODER_FILE = "tiny-encoder.pth"
PRETRAIN_RECORD = "pretrain.json"


@dataclass
class PretrainResult:
    """What :func:`pretrain` wrote: the folder, the weight files, and the record of ``pretrain.json``."""

    folder: Path
    ir_path: Path
    mfn_path: Path
    encoder_path: Path | None
    metrics: dict


# -- the pretraining faces --------------------------------------------------------------------------
def _draw_character(job: tuple) -> tuple:
    """All images of one character: uint8 (n, store, store, 3), expression ids, normalised landmarks (n, 22, 2)."""
    seed, char, per_expression, size, store = job
    torch.set_num_threads(1)
    imgs, exprs, lms = [], [], []
    white = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    for e, name in enumerate(faces.EXPRESSIONS):
        for n in range(1, per_expression + 1):
            im = faces.draw_image(seed, char, name, n, size)
            if im.mode == "RGBA":  # as `grefel prepare ferg` stores it: transparent -> white
                im = Image.alpha_composite(white, im)
            imgs.append(np.asarray(im.convert("RGB")))
            exprs.append(e)
            lms.append((2 * landmarks(seed, char, name, n, size) + 1) / size - 1)  # pixel centres -> [-1, 1]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(store, store), mode="bilinear", align_corners=False, antialias=True)
    x = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return x, np.array(exprs, np.int64), np.stack(lms).astype(np.float32)


def draw_pretraining_set(cfg: PretrainConfig, progress: bool = True) -> dict[str, np.ndarray]:
    """The pretraining faces: images, character ids, expression ids, landmarks (cached in ``cfg.cache``)."""
    key = dict(seed=cfg.seed, characters=cfg.characters, per_expression=cfg.per_expression, size=cfg.draw_size)
    key["store"] = cfg.store
    fields = ("images", "chars", "exprs", "landmarks")
    if cfg.cache and Path(cfg.cache).is_file():
        with np.load(cfg.cache) as z:
            if str(z["key"]) == repr(key):
                return {k: z[k] for k in fields}
    jobs = [(cfg.seed, c, cfg.per_expression, cfg.draw_size, cfg.store) for c in range(cfg.characters)]
    t0 = time.perf_counter()
    if cfg.workers > 1:
        with ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_draw_character, jobs, chunksize=8))
    else:
        parts = [_draw_character(j) for j in jobs]
    out = {
        "images": np.concatenate([p[0] for p in parts]),
        "chars": np.repeat(np.arange(cfg.characters), [len(p[1]) for p in parts]),
        "exprs": np.concatenate([p[1] for p in parts]),
        "landmarks": np.concatenate([p[2] for p in parts]),
    }
    if progress:
        print(f"drew {len(out['images'])} faces of {cfg.characters} characters in {time.perf_counter() - t0:.1f} s")
    if cfg.cache:
        with atomic_path(cfg.cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, key=repr(key), **out)
    return out


def check_disjoint(seed_a: int, chars_a: int, seed_b: int, chars_b: int) -> float:
    """Smallest parameter distance between a character of ``seed_a`` and one of ``seed_b``; a one-line
    error if any two are the same character. Distance: max over the continuous parameters, each divided
    by its range over both sets."""

    def vec(seed, i):
        c = faces.make_character(seed, i)
        return np.array([v for v in asdict(c).values() if isinstance(v, float)])

    a = np.stack([vec(seed_a, i) for i in range(chars_a)])
    b = np.stack([vec(seed_b, i) for i in range(chars_b)])
    both = np.concatenate([a, b])
    span = both.max(0) - both.min(0) + 1e-12
    d = (np.abs(a[:, None] - b[None]) / span).max(-1)
    if d.min() == 0:
        raise GrefelError(f"synthesis seeds {seed_a} and {seed_b} share a character: pick another pretraining seed")
    return float(d.min())


# -- the networks: the tiny preset's two streams with their pretext heads ----------------------------
def build_pretext_nets(cfg: PretrainConfig, num_chars: int) -> tuple[nn.Module, nn.Module, nn.ModuleDict]:
    """The tiny preset's image and landmark streams (initialised exactly as the preset initialises
    them) with their pretext heads, and the image stream's task heads."""
    enc = create_model("tiny", 7).encoder
    ir, mfn, size = enc.ir_back, enc.face_landback, enc.input_size
    c_ir = ir.widths[2]
    s_ir = size // 8  # IR stage 3 map side (6 at 48)
    ir.output_layer = nn.Sequential(  # face.evoLVe's output_layer, small
        nn.BatchNorm2d(c_ir),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(c_ir * s_ir * s_ir, cfg.embed_dim),
        nn.BatchNorm1d(cfg.embed_dim),
    )
    c_lm = mfn.widths[2]
    s_lm = size // 16  # conv_6_sep map side (3 at 48)
    mfn.output_layer = nn.Sequential(
        nn.Flatten(), nn.Linear(c_lm * s_lm * s_lm, 128), nn.PReLU(128), nn.Linear(128, 2 * NUM_LANDMARKS)
    )
    heads = nn.ModuleDict()
    if cfg.ir_task in ("identity", "both"):
        heads["identity"] = nn.Linear(cfg.embed_dim, num_chars, bias=False)  # CosFace class centres
    if cfg.ir_task in ("expression", "both"):
        heads["expression"] = nn.Linear(cfg.embed_dim, 7)
    for h in heads.values():
        nn.init.normal_(h.weight, std=0.01)
    return ir, mfn, heads.to(torch.float32)


def _augment(x, lm, gen, out_size: int, train: bool):
    """Random window (0.92-1.08 of the evaluation window, shifted), flip and rotation +-8 degrees,
    brightness / contrast +-20 %; the landmarks follow the same map. Eval: the centre window."""
    b, s = x.shape[0], x.shape[1]
    x = x.permute(0, 3, 1, 2).float() / 255
    base = out_size / s  # the crop ratio (48/56)
    if train:
        u = torch.rand(b, 7, generator=gen)
        scale = base * (0.86 + 0.14 * u[:, 0]) / 0.93  # around the eval window, 0.92-1.08 of it
        ang = (2 * u[:, 1] - 1) * math.radians(8)
        flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
        room = (1 - scale).clamp(min=0)
        tx, ty = (2 * u[:, 3] - 1) * room, (2 * u[:, 4] - 1) * room
        bright, contrast = 1 + 0.4 * (u[:, 5] - 0.5), 1 + 0.4 * (u[:, 6] - 0.5)
    else:
        scale, ang = torch.full((b,), base), torch.zeros(b)
        flip, tx, ty = torch.ones(b), torch.zeros(b), torch.zeros(b)
        bright = contrast = torch.ones(b)
    cos, sin = torch.cos(ang) * scale, torch.sin(ang) * scale
    # output normalised coords o -> input coords A o + t (A: rotation . scale, x mirrored by flip)
    A = torch.stack([torch.stack([cos * flip, -sin], 1), torch.stack([sin * flip, cos], 1)], 1)
    theta = torch.cat([A, torch.stack([tx, ty], 1)[:, :, None]], 2)
    grid = F.affine_grid(theta, (b, 3, out_size, out_size), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    grey = x.mean((1, 2, 3), keepdim=True)
    x = ((x - grey) * contrast.view(b, 1, 1, 1) + grey) * bright.view(b, 1, 1, 1)
    x = normalize(x.clamp(0, 1))
    # landmarks: input coords p -> output coords A^-1 (p - t); flipped samples swap left and right
    p = torch.as_tensor(lm)
    q = torch.linalg.solve(A[:, None], (p - theta[:, None, :, 2]).unsqueeze(-1)).squeeze(-1)
    perm = torch.tensor(FLIP_PERMUTATION)
    q = torch.where((flip < 0).view(b, 1, 1), q[:, perm], q)
    return x, q


def _cosine_schedule(opt, steps_per_epoch: int, epochs: int):
    """Half an epoch of linear warm-up, then cosine decay to zero."""
    total = steps_per_epoch * epochs
    warm = max(1, steps_per_epoch // 2)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(k, total) / total))
    )


def save_weights(state: dict, path: Path) -> None:
    """Write a state dict whose bytes depend on the weights alone (through a buffer), atomically."""
    buf = io.BytesIO()  # torch.save names the archive after the file it writes to
    torch.save({k: v.detach().clone() for k, v in state.items()}, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


# -- pretraining -----------------------------------------------------------------------------------
def pretrain(out: str | Path, cfg: PretrainConfig | None = None, progress: bool = True) -> PretrainResult:
    """Draw the pretraining faces, train both streams on their pretext tasks (stage 1) and, with an
    ``encoder_task``, the whole tiny encoder (stage 2); write the weight files and ``pretrain.json``
    (settings, times, per-epoch pretext metrics, each file's sha256) into the folder ``out``."""
    cfg = cfg or PretrainConfig()
    cfg.validate()
    folder = writable_dir(out, "folder for the pretrained weights")
    streams = _stream_files(cfg)
    t_start = time.perf_counter()
    data = draw_pretraining_set(cfg, progress)
    t_drawn = time.perf_counter()
    torch.set_num_threads(cfg.threads)  # after drawing, which runs on one thread
    rng = np.random.default_rng([cfg.train_seed, 0x9E7])  # the hold-out, then stage 1's batch order
    tr_idx, va_idx = _hold_out(data["chars"], cfg, rng)
    tensors = {k: torch.from_numpy(v) for k, v in data.items()}
    torch.manual_seed(cfg.train_seed)
    ir, mfn, heads = build_pretext_nets(cfg, cfg.characters)
    if streams:
        ir.load_state_dict(torch.load(streams[0], weights_only=True))
        mfn.load_state_dict(torch.load(streams[1], weights_only=True))
    epochs = 0 if streams else cfg.epochs
    history = _train_streams(cfg, (ir, mfn, heads), tensors, (tr_idx, va_idx), rng, epochs, progress)
    t_trained = time.perf_counter()
    ir_path, mfn_path = folder / IR_FILE, folder / MFN_FILE
    save_weights(ir.state_dict(), ir_path)
    save_weights(mfn.state_dict(), mfn_path)
    written, enc_path, encoder_history = [ir_path, mfn_path], None, []
    if cfg.encoder_task != "none":
        enc_path = folder / ENCODER_FILE
        encoder_history = _pretrain_encoder(cfg, ir_path, mfn_path, enc_path, tensors, tr_idx, va_idx, progress)
        written.append(enc_path)
    t_end = time.perf_counter()
    metrics = {
        "config": asdict(cfg),
        "images": {"train": int(len(tr_idx)), "val": int(len(va_idx))},
        "seconds": {
            "draw": round(t_drawn - t_start, 1),
            "train": round(t_trained - t_drawn, 1),
            "encoder": round(t_end - t_trained, 1),
            "total": round(t_end - t_start, 1),
        },
        "final": history[-1] if history else None,
        "history": history,
        "encoder_history": encoder_history,
        "files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in written},
        "torch": torch.__version__,
        "threads": cfg.threads,
    }
    write_json(folder / PRETRAIN_RECORD, metrics)
    return PretrainResult(folder, ir_path, mfn_path, enc_path, metrics)


def shipping_record(folder: str | Path, command: str, demo_seed: int = 0, demo_characters: int = 6) -> dict:
    """The record that ships beside a pretrained encoder (``grefel/weights/shipped/tiny-encoder.json``),
    from the ``pretrain.json`` of the run in ``folder``: the command that made it, the synthesis seed,
    the file's sha256 and size, the pretext metrics of both stages, the smallest parameter distance
    between a pretraining character and one of the demo's (:func:`check_disjoint`), the times and torch."""
    rec = read_json(Path(folder) / PRETRAIN_RECORD)
    cfg = rec["config"]
    if cfg["encoder_task"] == "none" or ENCODER_FILE not in rec["files"]:
        raise GrefelError(f"{folder} holds no {ENCODER_FILE}: ship the output of a run with an encoder task")
    stage1 = rec["final"] or {}
    stage2 = rec["encoder_history"][-1]
    return {
        "kind": "tiny-encoder",
        "file": ENCODER_FILE,
        "sha256": rec["files"][ENCODER_FILE]["sha256"],
        "bytes": rec["files"][ENCODER_FILE]["bytes"],
        "command": command,
        "synthesis_seed": cfg["seed"],
        "characters": cfg["characters"],
        "images": rec["images"],
        "closest_demo_character": {
            "demo_seed": demo_seed,
            "distance": check_disjoint(cfg["seed"], cfg["characters"], demo_seed, demo_characters),
        },
        "pretext": {
            "stage1": {k: v for k, v in stage1.items() if k.startswith("val_")},
            "stage2": {k: v for k, v in stage2.items() if k.startswith("val_")},
        },
        "settings": {k: v for k, v in cfg.items() if k not in ("out", "streams", "cache")},  # no paths of this machine
        "seconds": rec["seconds"],
        "torch": rec["torch"],
    }


def _stream_files(cfg: PretrainConfig) -> tuple[Path, Path] | None:
    """Stage 1's two files in ``cfg.streams`` (checked before any work), or None."""
    if not cfg.streams:
        return None
    files = (Path(cfg.streams) / IR_FILE, Path(cfg.streams) / MFN_FILE)
    for f in files:
        if not f.is_file():
            raise GrefelError(f"streams folder {cfg.streams} has no {f.name}: give a folder a stage 1 run wrote")
    return files


def _hold_out(chars: np.ndarray, cfg: PretrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out indices: ``val_per_character`` images of every character held out."""
    val = np.zeros(len(chars), bool)
    for c in range(cfg.characters):
        idx = np.flatnonzero(chars == c)
        val[rng.choice(idx, cfg.val_per_character, replace=False)] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


class _Pretext:
    """Stage 1's forward pass and losses: the image stream's embedding and task heads, the landmark
    stream's 22 points."""

    def __init__(self, cfg: PretrainConfig, ir: nn.Module, mfn: nn.Module, heads: nn.ModuleDict):
        self.cfg, self.ir, self.mfn, self.heads = cfg, ir, mfn, heads

    def train(self, on: bool) -> None:
        for m in (self.ir, self.mfn, self.heads):
            m.train(on)

    def forward(self, x):
        f_ir = self.ir.output_layer(self.ir(x)[2])
        f_lm = self.mfn.output_layer(self.mfn(x)[2]).view(len(x), -1, 2)
        return f_ir, f_lm

    def ir_losses(self, emb, ids, ex) -> dict:
        cfg, out = self.cfg, {}
        if "identity" in self.heads:
            cos = F.normalize(emb) @ F.normalize(self.heads["identity"].weight).T
            logits = cfg.scale * (cos - cfg.margin * F.one_hot(ids, cos.shape[1]))
            out["identity"] = F.cross_entropy(logits, ids)
            out["identity_acc"] = (cos.argmax(1) == ids).float().mean()
        if "expression" in self.heads:
            logits = self.heads["expression"](emb)
            out["expression"] = F.cross_entropy(logits, ex)
            out["expression_acc"] = (logits.argmax(1) == ex).float().mean()
        return out

    def validate(self, t: dict, idx: np.ndarray) -> dict:
        """The pretext tasks on the held-out images: identity / expression accuracy, landmark error in
        pixels of the input (mean point-to-point distance) and normalised by the outer-eye-corner
        distance (NME)."""
        size = self.cfg.input_size
        self.train(False)
        sums, n = {}, 0
        with torch.no_grad():
            for k in range(0, len(idx), 256):
                b = torch.from_numpy(idx[k : k + 256])
                x, q = _augment(t["images"][b], t["landmarks"][b], None, size, train=False)
                emb, pred = self.forward(x)
                parts = self.ir_losses(emb, t["chars"][b], t["exprs"][b])
                d = (pred - q).norm(dim=-1) * size / 2  # pixels of the input
                iod = (q[:, 0] - q[:, 5]).norm(dim=-1, keepdim=True) * size / 2
                parts["lm_px"] = d.mean()
                parts["lm_nme"] = (d / iod).mean()
                for name, v in parts.items():
                    if name.endswith("_acc") or name.startswith("lm_"):
                        sums[name] = sums.get(name, 0.0) + float(v) * len(b)
                n += len(b)
        return {f"val_{k}": v / n for k, v in sums.items()}


def _train_streams(cfg, nets: tuple, t: dict, split: tuple, rng, epochs: int, progress: bool) -> list[dict]:
    """Stage 1: both streams (``nets``: image stream, landmark stream, task heads) on their pretext
    tasks for ``epochs`` epochs, batches drawn from ``rng``; one metrics row per epoch."""
    ir, mfn, heads = nets
    tr_idx, va_idx = split
    net = _Pretext(cfg, ir, mfn, heads)
    params = list(ir.parameters()) + list(mfn.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(tr_idx) // cfg.batch_size
    sched = _cosine_schedule(opt, steps_per_epoch, cfg.epochs)
    gen = torch.Generator().manual_seed(cfg.train_seed)
    history = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        net.train(True)
        order = torch.from_numpy(tr_idx[rng.permutation(len(tr_idx))])
        sums: dict[str, float] = {}
        for k in range(steps_per_epoch):
            b = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            x, q = _augment(t["images"][b], t["landmarks"][b], gen, cfg.input_size, train=True)
            emb, pred = net.forward(x)
            parts = net.ir_losses(emb, t["chars"][b], t["exprs"][b])
            parts["landmarks"] = F.l1_loss(pred, q)
            loss = sum(v for name, v in parts.items() if not name.endswith("_acc"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for name, v in parts.items():
                sums[name] = sums.get(name, 0.0) + float(v.detach())
        row = {"epoch": epoch + 1, **{f"train_{k}": v / steps_per_epoch for k, v in sums.items()}}
        row.update(net.validate(t, va_idx))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        _print_row("", row, progress)
    return history


def _print_row(prefix: str, row: dict, progress: bool) -> None:
    if progress:
        print(
            prefix + " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
            flush=True,
        )


# -- stage 2: the whole encoder ----------------------------------------------------------------------
class _EncoderTask:
    """The tiny encoder (streams from stage 1, the landmark stream frozen) with a pretext head on its
    embedding: 7-way linear (expression) or CosFace centres (identity)."""

    def __init__(self, cfg: PretrainConfig, ir_path: Path, mfn_path: Path, t: dict):
        self.cfg = cfg
        torch.manual_seed(cfg.train_seed + 1)
        model = create_model("tiny", 7, reliability="none", encoder={"freeze_landmarks": True})
        load_pretrained(model, ir50=ir_path, mobilefacenet=mfn_path)
        self.enc = model.encoder
        if cfg.encoder_task == "expression":
            self.head = nn.Linear(self.enc.embed_dim, 7)
            self.target = t["exprs"]
        else:
            self.head = nn.Linear(self.enc.embed_dim, int(t["chars"].max()) + 1, bias=False)
            nn.init.normal_(self.head.weight, std=0.01)
            self.target = t["chars"]

    def logits(self, x, y=None):
        e = self.enc(x)[0]
        if self.cfg.encoder_task == "expression":
            return self.head(e)
        cos = F.normalize(e) @ F.normalize(self.head.weight).T
        return self.cfg.scale * (cos - self.cfg.margin * F.one_hot(y, cos.shape[1])) if y is not None else cos

    def plain(self, z, y):
        """Training logits without the CosFace margin (for the training accuracy)."""
        if self.cfg.encoder_task == "expression":
            return z
        return z + self.cfg.scale * self.cfg.margin * F.one_hot(y, z.shape[1])

    def accuracy(self, images, idx: np.ndarray, dummy) -> float:
        self.enc.eval(), self.head.eval()
        correct = 0
        with torch.no_grad():
            for k in range(0, len(idx), 256):
                b = torch.from_numpy(idx[k : k + 256])
                x, _ = _augment(images[b], dummy.expand(len(b), -1, -1), None, self.cfg.input_size, train=False)
                correct += int((self.logits(x).argmax(1) == self.target[b]).sum())
        return correct / len(idx)


def _pretrain_encoder(cfg, ir_path, mfn_path, out_path, t: dict, tr_idx, va_idx, progress) -> list[dict]:
    """Stage 2: the whole tiny encoder on the pretraining faces' expressions or identities. Written as
    a POSTER++-layout encoder checkpoint: every key of the encoder, no heads."""
    task = _EncoderTask(cfg, ir_path, mfn_path, t)
    enc, head = task.enc, task.head
    params = [p for p in enc.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.encoder_lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(tr_idx) // cfg.batch_size
    sched = _cosine_schedule(opt, steps_per_epoch, cfg.encoder_epochs)
    gen = torch.Generator().manual_seed(cfg.train_seed + 1)
    rng = np.random.default_rng([cfg.train_seed, 0x2E7])
    dummy = torch.zeros(1, NUM_LANDMARKS, 2)
    history = []
    for epoch in range(cfg.encoder_epochs):
        t0 = time.perf_counter()
        enc.train(), head.train()
        order = torch.from_numpy(tr_idx[rng.permutation(len(tr_idx))])
        loss_sum = acc_sum = 0.0
        for k in range(steps_per_epoch):
            b = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            x, _ = _augment(t["images"][b], dummy.expand(len(b), -1, -1), gen, cfg.input_size, train=True)
            y = task.target[b]
            z = task.logits(x, y)
            loss = F.cross_entropy(z, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            acc_sum += float((task.plain(z, y).argmax(1) == y).float().mean())
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / steps_per_epoch,
            "train_acc": acc_sum / steps_per_epoch,
            f"val_{cfg.encoder_task}_acc": task.accuracy(t["images"], va_idx, dummy),
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        _print_row("encoder ", row, progress)
    save_weights(enc.state_dict(), out_path)
    return history
