"""Train GReFEL: the paper's recipe (section 4.1) as defaults, every part of it a setting.

Shaped like torchvision's ``references/classification/train.py``:

* :func:`train` validates the settings, joins the process group and runs :func:`main`;
* :func:`main` builds a run from its config: resume or new, data, model, run folder, epochs;
* :func:`train_one_epoch` is the step loop, tallied by named meters (:class:`MetricLogger`);
* :func:`validate_one_epoch` scores the validation split;
* :class:`RunState` (model, optimizer, scheduler, scaler, RNG, epoch, best, history) is what a
  checkpoint holds: ``save()`` writes it, ``resume()`` restores it.

The settings are declared in :mod:`grefel.training.config`.

Recipe (paper section 4.1 and supplement): Adam, lr 3e-4, exponential decay 0.995 per epoch,
lambda_cls = lambda_a = lambda_c = 1 (eq. 23), K = 10 anchors, label smoothing 0.11 (Table 8's
T = 11), dropout 0.5, 1000 epochs, each epoch a refined draw of B x N_cls images (B = 500, at most
N_pg = 512 images per group), heavy augmentation (random crop, flip, rotation, colour, random
erasing). Model selection uses the validation split (never the test split) by the accuracy of the
corrected distribution (eq. 19).

Reproducibility: the epoch plan (refinement), the augmentation of each plan position and the
dropout seed of each epoch are functions of (seed, epoch) alone, so a run stopped after epoch k
and resumed equals an unbroken run, and W processes with global batch G equal one process with G
(up to BatchNorm statistics: SyncBatchNorm on GPUs, freeze_bn on CPUs).

Precision: bf16 autocast on CUDA (fp16 + GradScaler where bf16 is missing), fp32 on CPU by
default; losses are computed in fp32 from the fp32-cast model outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from grefel.core.console import make_console
from grefel.core.devices import usable_cores
from grefel.core.errors import CheckpointError, DatasetError, GrefelError
from grefel.core.io import atomic_path, write_json
from grefel.core.paths import resolve_dataset
from grefel.core.recipe import DEFAULT_EPOCHS, PRECISIONS
from grefel.core.stop import StopRequested, deferred_stop, stop_requested
from grefel.data.loader import EvalBatches, RankBatches, epoch_plan, make_loader
from grefel.data.resident import ResidentBatches, ResidentFaces, faces_nbytes, use_data_on_device
from grefel.data.shards import PreparedDataset
from grefel.data.transforms import TrainAugment, augment_uniforms, eval_batch, train_batch
from grefel.models.factory import create_method_model, model_from_record
from grefel.models.grefel import create_model
from grefel.models.losses import GReFELLoss
from grefel.training import distributed as gdist
from grefel.training import tblog
from grefel.training.checkpoint import load_checkpoint, save_checkpoint
from grefel.training.config import CUDAGRAPH_MODES, TrainConfig, resumable_settings, with_recipe
from grefel.training.methods import (
    MethodStep,
    StepBatch,
    check_method_fits,
    make_step,
    warmup_ramp,  # noqa: F401 (its old home: grefel.training.loop.warmup_ramp)
)
from grefel.weights.backbones import load_backbone, plan_backbone
from grefel.weights.store import plan_pretrained
from grefel.weights.verify import load_pretrained

LOSS_PARTS = ("total", "cls", "anchor", "center")  # GReFELLoss terms (eq. 23 and its parts)
START_FILES = ("config.json", "metrics.jsonl", "pretrained.txt")  # what a run writes before its first epoch


class TrainingDiverged(GrefelError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------
def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise GrefelError(f"unknown precision '{precision}': use {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if precision in ("auto", "bf16"):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"  # fp16 + GradScaler without bf16
        return precision
    if precision == "fp16":
        raise GrefelError("precision fp16 needs a CUDA GPU: use bf16 or fp32 on the CPU")
    return "fp32" if precision == "auto" else precision


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def build_model(cfg: TrainConfig, num_classes: int, sources: dict | None = None) -> torch.nn.Module:
    """The model the settings describe. The landmark stream is frozen when it starts from pretrained
    weights (``sources``: a MobileFaceNet, POSTER++ or tiny encoder file, as in the paper) and trains
    when the run starts from scratch (``from_scratch``); ``model_args`` override."""

    overrides = dict(reliability=cfg.reliability, num_anchors=cfg.num_anchors, dropout=cfg.dropout)
    if cfg.delta is not None:
        overrides["delta"] = cfg.delta
    if cfg.drop_path is not None:
        overrides["drop_path"] = cfg.drop_path
    if {"mobilefacenet", "poster", "tiny-encoder"} & set(sources or ()):
        overrides["encoder"] = {"freeze_landmarks": True}
    elif cfg.from_scratch:  # a landmark stream frozen at random weights would stay random
        overrides["encoder"] = {"freeze_landmarks": False}
    for key, value in cfg.model_args.items():
        both = isinstance(value, dict) and isinstance(overrides.get(key), dict)
        overrides[key] = {**overrides[key], **value} if both else value
    return create_model(cfg.preset, num_classes, **overrides)


def build_method_model(cfg: TrainConfig, num_classes: int, sources: dict | None = None) -> torch.nn.Module:
    """The model of ``cfg.method``: GReFEL (:func:`build_model`) or a baseline on its preset (``model_args``
    override the baseline's constructor arguments, e.g. ``input_size``)."""
    if (cfg.method or "grefel") == "grefel":
        return build_model(cfg, num_classes, sources)
    return create_method_model(cfg.method, cfg.preset, num_classes, **cfg.model_args)


def build_loss(cfg: TrainConfig) -> torch.nn.Module:

    return GReFELLoss(
        lambda_cls=cfg.lambda_cls,
        lambda_anchor=cfg.lambda_anchor,
        lambda_center=cfg.lambda_center,
        label_smoothing=cfg.label_smoothing,
    )


def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """model.train(); with ``freeze_bn`` BatchNorm layers keep using (and keep) running statistics."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def on_main(info: gdist.DistInfo, fn):
    """Run ``fn`` on rank 0 only; a GrefelError there stops every rank together (no rank left
    waiting in a collective). Returns ``fn``'s result on rank 0, None elsewhere."""
    ok, err, out = True, None, None
    if info.is_main:
        try:
            out = fn()
        except GrefelError as e:
            ok, err = False, e
    if info.enabled:
        ok = gdist.all_ok(ok, info.device)
    if not ok:
        raise err or GrefelError("rank 0 stopped the run; see its log")
    return out


def _console(quiet: bool, is_main: bool):

    return make_console(stderr=True, quiet=quiet or not is_main)


def _progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=console.quiet,
        transient=False,
    )


# ---------------------------------------------------------------------------------------------
# Named meters (torchvision's SmoothedValue / MetricLogger, kept on the device)
# ---------------------------------------------------------------------------------------------
class MetricLogger:
    """Per-sample averages of named training tallies, summed over steps and processes.

    ``update(n, name=batch_mean, ...)`` adds ``batch_mean * n`` and ``n`` to a window kept on the
    device, so a step never waits for the host. ``sync()`` sums the window over processes (one
    all-reduce), adds it to the totals and returns the window's averages (NaN and inf propagate,
    for the caller to check). ``avg[name]`` is the average over every synced step.
    """

    def __init__(self, names: tuple[str, ...], device: torch.device):
        self.names = tuple(names)
        self._window = torch.zeros(len(self.names) + 1, dtype=torch.float64, device=device)  # last: count
        self._totals = torch.zeros_like(self._window)

    @torch.no_grad()
    def update(self, n: int, **batch_means: torch.Tensor) -> None:
        values = torch.stack([batch_means[k].detach().double() for k in self.names])
        self._window += torch.cat([values * n, values.new_full((1,), n)])

    def sync(self) -> dict[str, float]:
        gdist.all_reduce_sum(self._window)
        w = self._window.tolist()  # a copy (on the CPU .cpu().numpy() would share the memory zeroed below)
        self._totals += self._window
        self._window.zero_()
        return {k: w[i] / max(w[-1], 1) for i, k in enumerate(self.names)}

    @property
    def count(self) -> float:
        return float(self._totals[-1])

    @property
    def avg(self) -> dict[str, float]:
        t = self._totals.cpu().numpy()
        return {k: float(t[i] / t[-1]) for i, k in enumerate(self.names)}


# ---------------------------------------------------------------------------------------------
# Run state: what a checkpoint holds
# ---------------------------------------------------------------------------------------------
@dataclass
class RunState:
    """The training state a checkpoint holds: ``save()`` writes it, ``resume()`` restores it."""

    model: torch.nn.Module  # the plain model (no DDP / compile wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    epoch: int = 0  # epochs completed
    best: dict = field(default_factory=lambda: {"epoch": -1, "val_acc": -1.0})
    history: list[dict] = field(default_factory=list)  # one metrics row per epoch
    step: MethodStep | None = None  # the method's step (its state goes into checkpoints)

    @classmethod
    def create(
        cls,
        cfg: TrainConfig,
        model: torch.nn.Module,
        device: torch.device,
        precision: str,
        step: MethodStep | None = None,
    ) -> RunState:
        params = step.param_groups(model) if step else [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        return cls(model, optimizer, scheduler, scaler, device, step=step)

    def end_epoch(self, metrics: dict) -> bool:
        """Record an epoch's metrics row; True when its validation accuracy is the best so far."""
        self.history.append(metrics)
        self.epoch = metrics["epoch"]
        is_best = metrics.get("val_acc", -1) > self.best["val_acc"]
        if is_best:
            self.best = {"epoch": self.epoch, "val_acc": metrics["val_acc"]}
        return is_best

    def payload(self, meta: dict) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "model_config": self.model.model_config,
            "model_kwargs": self.model.model_kwargs,
            **meta,  # dataset, label_set, split_set, config
            "epoch": self.epoch,
            "metrics": self.history[-1] if self.history else {},
            "history": self.history,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            **({"method_state": self.step.state_dict()} if self.step is not None else {}),
        }

    def save(self, paths: list[Path], meta: dict, folder: Path) -> None:
        """Write the state atomically to each path; a full disk keeps the previous file and says how to go on."""
        state = self.payload(meta)
        for path in paths:
            try:
                save_checkpoint(path, state)
            except OSError as e:
                raise GrefelError(
                    f"could not write {path} ({e.strerror or e}): the previous {path.name} is intact; "
                    f"free disk space and continue with `grefel train --resume {folder}`"
                ) from None

    def resume(self, ckpt: dict, path: Path) -> None:
        """Restore model, optimizer, scheduler, scaler, RNG, epoch, best and history from ``ckpt``."""
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(
                f"{path} does not fit the model it describes ({str(e).splitlines()[0][:120]})"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.step is not None:
            self.step.load_state_dict(ckpt.get("method_state") or {}, path)
        self.epoch = int(ckpt["epoch"])
        self.history = list(ckpt.get("history", []))
        self.best = dict(ckpt.get("best", self.best))
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)


# ---------------------------------------------------------------------------------------------
# Resume: the run's own settings
# ---------------------------------------------------------------------------------------------
def load_resume_checkpoint(resume: str) -> tuple[Path, dict]:
    """The checkpoint a resume continues (a run folder's last.pt, or the file given)."""
    given = Path(resume)
    path = given / "last.pt" if given.is_dir() else given
    if not path.is_file():
        raise CheckpointError(f"nothing to resume at {given}: pass a run folder that holds last.pt, or a last.pt")
    best = path.parent / "best.pt"
    advice = (
        f"continue from its best epoch by resuming {best}, or start a new run"
        if best.is_file() and best.resolve() != path.resolve()
        else "start a new run"
    )
    ckpt = load_checkpoint(path, map_location="cpu", advice=advice)
    if "optimizer" not in ckpt:
        raise CheckpointError(f"{path} holds no training state (an exported model?): resume from a run's last.pt")
    return path, ckpt


def resume_config(given: TrainConfig, ckpt: dict, path: Path) -> TrainConfig:
    """The run's stored settings, with the resumable ones of ``given``.

    A non-resumable setting that ``given`` sets to neither its default nor the run's value is an
    error (a resume would otherwise silently ignore it).
    """
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    stored = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in fields})
    trained = stored.method or (ckpt.get("model_config") or {}).get("method") or "grefel"
    if given.method and given.method != trained:
        raise CheckpointError(
            f"{path} is a checkpoint of method {trained}, not {given.method}: resume it as {trained} (leave method "
            "unset), or start a new run"
        )
    same_dataset = {stored.dataset, ckpt["dataset"].get("name"), ckpt["dataset"].get("path")}
    changed = [
        name
        for name, f in fields.items()
        if name not in resumable_settings()
        and getattr(given, name) not in (f.default, getattr(stored, name))
        and not (name == "model_args" and not given.model_args)
        and not (name == "dataset" and given.dataset in same_dataset)
    ]
    if changed:
        diffs = ", ".join(f"{k} ({getattr(given, k)!r}; the run has {getattr(stored, k)!r})" for k in changed)
        raise GrefelError(
            f"a resume continues {path.parent} with its own settings, so {diffs} cannot change; "
            f"a resume may change only {', '.join(n for n in resumable_settings() if n != 'resume')}: "
            "leave the others unset, or start a new run"
        )
    new = {k: getattr(given, k) for k in resumable_settings() if k != "epochs" or given.epochs is not None}
    cfg = dataclasses.replace(stored, **new)
    cfg.dataset = ckpt["dataset"].get("path") or cfg.dataset
    if not Path(cfg.dataset or "").is_dir():
        cfg.dataset = ckpt["dataset"]["name"]
    return cfg


def check_checkpoint_fits(ckpt: dict, ds, label_set: str | None, path) -> None:
    d = ckpt.get("dataset") or {}
    if d.get("classes") != ds.classes or d.get("protocol", ds.protocol) != ds.protocol:
        raise CheckpointError(
            f"{path} was trained on {d.get('name')} ({d.get('protocol')}, classes {d.get('classes')}), "
            f"not {ds.name} ({ds.protocol}, classes {ds.classes}): resume it on its own dataset"
        )
    if d.get("manifest_sha256") != ds.manifest_sha256:
        raise CheckpointError(
            f"{path} was trained on another preparation of {ds.name} (manifest hash differs): "
            "resume needs the same prepared dataset; start a new run instead"
        )
    trained = (ckpt.get("model_config") or {}).get("method") or "grefel"
    if trained != ((ckpt.get("config") or {}).get("method") or "grefel"):
        raise CheckpointError(f"{path} is inconsistent (its model is a {trained} model, its settings another method)")
    if (ckpt.get("label_set") or "clean") != (label_set or "clean"):
        raise CheckpointError(
            f"{path} was trained with label set '{ckpt.get('label_set')}', not '{label_set or 'clean'}'"
        )


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainData:
    """The prepared dataset and what training reads from it."""

    ds: object  # grefel.data.shards.PreparedDataset
    labels: np.ndarray  # the labels the run learns from (a label set, or the clean ones)
    groups: np.ndarray  # video / face group of each image (refinement's N_pg cap)
    pool: np.ndarray  # labelled training images
    val_idx: np.ndarray  # validation images


def load_data(cfg: TrainConfig) -> TrainData:
    """Open the dataset; fix the split set by name (so a resume keeps it even if `grefel refine`
    runs meanwhile) in ``cfg``; check the label set and the crop; select train and val images."""

    ds = PreparedDataset(resolve_dataset(cfg.dataset, cfg.data_root))
    ds.verify_contents()  # every shard's sha256 once (cached by size and mtime): damage is one line, not NaNs
    cfg.split_set = cfg.split_set or ("default" if "default" in ds.split_sets() else "official")
    if cfg.crop > ds.image_size:
        raise GrefelError(
            f"crop {cfg.crop} is larger than the {ds.image_size} px faces stored in {ds.name}: "
            f"use a crop of at most {ds.image_size}"
        )
    labels = ds.labels(cfg.labels)  # refuses a label set made for another preparation
    splits = ds.splits(cfg.split_set)
    pool = np.flatnonzero((splits == "train") & (labels >= 0))
    val_idx = np.flatnonzero((splits == "val") & (ds.labels() >= 0))
    if len(pool) == 0:
        folds = [s for s in ds.split_sets() if s.startswith("fold")]
        hint = f"use split set {' / '.join(folds)}" if folds else f"run `grefel refine --dataset {ds.name}` first"
        raise DatasetError(f"{ds.name} has no labelled training images in split set '{cfg.split_set}': {hint}")
    if len(val_idx) == 0:
        raise DatasetError(
            f"{ds.name} has no validation split (the test split is never used for model selection): "
            f"run `grefel refine --dataset {ds.name}` to carve one out, then train again"
        )
    return TrainData(ds, labels, ds.meta["group"].to_numpy(), pool, val_idx)


# ---------------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------------
def new_run_folder(cfg: TrainConfig, ds_name: str, info: gdist.DistInfo) -> Path:
    """``<run_dir>/<name>`` (rank 0's name on every rank); refuses a folder that holds a run."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    method = "" if (cfg.method or "grefel") == "grefel" else f"{cfg.method}-"
    name = cfg.name or f"{ds_name}-{method}{cfg.preset}-{cfg.labels or 'clean'}-{stamp}"
    folder = gdist.broadcast_object(Path(cfg.run_dir or "runs") / name)
    if not gdist.all_ok(not (folder / "last.pt").exists(), info.device):
        raise GrefelError(
            f"{folder} already holds a run: continue it with `grefel train --resume {folder}`, or choose another name"
        )
    return folder


def make_run_folder(folder: Path, resuming: bool) -> list[Path]:
    """Create ``folder`` (and missing parents) and check that files can be written in it.

    Returns the folders it created (nearest last), for :func:`discard_unfinished`.
    """
    advice = (
        "make it writable, or copy the run to a writable place and resume the copy"
        if resuming
        else "choose a writable run_dir"
    )
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if existing.exists() and not existing.is_dir():
        raise GrefelError(f"cannot create the run folder {folder}: {existing} is a file; {advice}")
    created = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        discard_unfinished(folder, created)
        raise GrefelError(f"cannot write in the run folder {folder} ({e.strerror or e}): {advice}") from None
    return created


def discard_unfinished(folder: Path, created: list[Path]) -> None:
    """After a failed start: remove what the run wrote and the folders it created, unless a
    checkpoint exists (then the run can be resumed)."""
    if (folder / "last.pt").exists() or (folder / "best.pt").exists():
        return
    for path in [folder / name for name in START_FILES] + list(folder.glob(tblog.EVENT_FILES)):
        with contextlib.suppress(OSError):
            path.unlink()
    for path in reversed(created):
        with contextlib.suppress(OSError):
            path.rmdir()  # only if empty


def run_record(cfg: TrainConfig, data: TrainData, model, epochs: int, precision: str, info) -> dict:
    """config.json: the resolved settings and what the run trains on."""
    ds = data.ds
    return {
        "config": asdict(cfg),
        "epochs": epochs,
        "precision": precision,
        "world_size": info.world_size,
        "device": str(info.device),
        "model_config": model.model_config,
        "label_set": cfg.labels or "clean",
        "split_set": cfg.split_set,
        "dataset": {
            "name": ds.name,
            "protocol": ds.protocol,
            "classes": ds.classes,
            "manifest_sha256": ds.manifest_sha256,
            "path": str(ds.root.resolve()),
            "synthetic": ds.synthetic is not None,
        },
        "train_images": int(len(data.pool)),
        "val_images": int(len(data.val_idx)),
        "torch": torch.__version__,
    }


def write_metrics(folder: Path, history: list[dict]) -> None:
    with atomic_path(folder / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))


def write_start(folder: Path, record: dict, history: list[dict], weights_report) -> None:
    """config.json, metrics.jsonl (a resumed run drops rows written after its last.pt), pretrained.txt."""
    write_json(folder / "config.json", record)
    write_metrics(folder, history)
    if weights_report is not None:
        with atomic_path(folder / "pretrained.txt") as tmp:
            tmp.write_text(weights_report.details() + "\n")


# ---------------------------------------------------------------------------------------------
# One run: settings, processes, precision, folder
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What every epoch of a run shares (torchvision's ``args`` plus the device and folder)."""

    cfg: TrainConfig
    info: gdist.DistInfo
    precision: str
    folder: Path
    epochs: int  # the run's total
    meta: dict  # dataset, label_set, split_set, config: stored in every checkpoint
    console: object
    last_saved: int = 0  # the epoch last.pt holds

    @property
    def device(self) -> torch.device:
        return self.info.device

    def autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    @property
    def cudagraphs(self) -> bool:
        """The compiled model replays CUDA graphs (each step must then be marked as a new one)."""
        return self.cfg.compile and self.cfg.compile_mode in CUDAGRAPH_MODES and self.device.type == "cuda"


def diverged(run: Run, window: dict, epoch: int, step: int, lr: float, names=LOSS_PARTS) -> TrainingDiverged:
    """The error for a non-finite loss: where, each loss part, and what to try."""
    parts = ", ".join(f"{k} {window[k]:.4g}" for k in names)
    kept = (
        f"kept the last good checkpoint {run.folder / 'last.pt'} (epoch {run.last_saved})"
        if run.last_saved
        else "no epoch had finished, so there is no checkpoint"
    )
    return TrainingDiverged(
        f"loss became non-finite in epoch {epoch + 1}, steps {max(1, step + 2 - run.cfg.log_every)}..{step + 1} "
        f"({parts}; lr {lr:.3g}, {run.precision}); {kept}. Try a lower lr, precision fp32, or a smaller "
        "lambda_* for the part that blew up" + (f", then resume {run.folder}" if run.last_saved else "")
    )


# ---------------------------------------------------------------------------------------------
# Train one epoch, validate
# ---------------------------------------------------------------------------------------------
def augment_settings(cfg: TrainConfig) -> TrainAugment:
    """The augmentation strengths of ``cfg`` (one colour setting drives brightness, contrast, saturation)."""
    c = cfg
    return TrainAugment(c.crop, c.flip, c.rotation, c.color, c.color, c.color, c.erase)


def train_one_epoch(model, criterion, state: RunState, loader, uniforms, epoch: int, run: Run, progress) -> dict:
    """One epoch of steps; the epoch's average losses and accuracy, images/s and training time."""

    cfg, device, steps, method = run.cfg, run.device, len(loader), state.step
    aug, lr = augment_settings(cfg), state.optimizer.param_groups[0]["lr"]
    meters = MetricLogger((*method.parts, "acc"), device)
    task = progress.add_task(f"epoch {epoch + 1}/{run.epochs}", total=steps, info="")
    t0, seen = time.perf_counter(), 0
    for step, batch in enumerate(loader):
        images = batch["images"].to(device, non_blocking=True)

        def view(u, images=images):  # this batch's model input under augmentation rows u
            x = train_batch(images, u, aug) if u is not None else eval_batch(images, crop=cfg.crop)
            return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x

        # the epoch's uniforms are on the device already: no copy per step
        u = uniforms[batch["pos"].to(uniforms.device, non_blocking=True)] if cfg.augment else None
        b = StepBatch(
            view(u),
            batch["labels"].to(device, non_blocking=True),
            batch["index"].to(device, non_blocking=True),
            u,
            view,
            epoch + step / steps,
            run.autocast,
            batch["pos"],
        )
        if run.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        losses, pred = method.losses(model, criterion, b)
        y = method.labels(b)  # the labels of the loss (SCN's relabelled ones)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(losses["total"]).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        method.after_step(epoch + 1)
        # NaN / inf propagate into the sums: checked at the next sync
        meters.update(len(y), **{k: losses[k] for k in method.parts}, acc=(pred.argmax(1) == y).double().mean())
        seen += len(y) * run.info.world_size
        check_stop(run, state, sync=(step + 1) % cfg.log_every == 0 or step + 1 == steps)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            window = meters.sync()
            if not np.isfinite([window[k] for k in method.parts]).all():
                raise diverged(run, window, epoch, step, lr, method.parts)
            avg = meters.avg
            parts = " ".join(f"{k[:4]} {avg[k]:.3f}" for k in method.parts[1:])
            progress.update(
                task,
                completed=step + 1,
                info=f"loss {avg['total']:.3f} ({parts}) acc {100 * avg['acc']:.1f}% "
                f"{seen / (time.perf_counter() - t0):.0f} img/s",
            )
    train_time = time.perf_counter() - t0
    progress.remove_task(task)
    avg = meters.avg
    return {
        "lr": float(lr),
        "train_loss": avg["total"],
        **{f"train_{k}": avg[k] for k in method.parts[1:]},
        "train_acc": avg["acc"],
        "images_per_s": float(seen / train_time),
    }


@torch.no_grad()
def validate_one_epoch(model, criterion, loader, run: Run, num_classes: int) -> tuple[dict, dict]:
    """Validation metrics (accuracy of the corrected and primary distributions, macro F1, loss), and
    for the live curves: predictions reliability balancing fixed / broke, both confusion matrices."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

    model.eval()
    device = run.device
    rows, loss_sum = [], torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        x = eval_batch(batch["images"].to(device, non_blocking=True), crop=run.cfg.crop)
        y = batch["labels"].to(device, non_blocking=True)
        with run.autocast():
            out = model(x)
        n = torch.full((), len(y), device=device, dtype=torch.float64)  # a fill, not a copy from the host
        loss_sum += torch.stack([criterion(out, y)["total"].double() * n, n])
        rows.append(torch.stack([y, out.corrected.argmax(1), out.primary.argmax(1)], 1))
    local = torch.cat(rows).cpu().numpy() if rows else np.zeros((0, 3), np.int64)  # one copy after the loop
    gdist.all_reduce_sum(loss_sum)
    y, pred, prim = np.concatenate(gdist.gather_objects(local)).T
    if len(y) == 0:
        return {}, {}
    classes = list(range(num_classes))
    extras = {
        "fixed": int(((prim != y) & (pred == y)).sum()),
        "broken": int(((prim == y) & (pred != y)).sum()),
        "confusion": {
            name: confusion_matrix(y, p, labels=classes) for name, p in (("primary", prim), ("corrected", pred))
        },
    }
    return {
        "val_loss": float(loss_sum[0] / loss_sum[1]),
        "val_acc": float(accuracy_score(y, pred)),
        "val_acc_primary": float(accuracy_score(y, prim)),
        "val_mean_class_acc": float(
            balanced_accuracy_score(y, pred) if len(np.unique(y)) > 1 else accuracy_score(y, pred)
        ),
        "val_macro_f1": float(f1_score(y, pred, labels=classes, average="macro", zero_division=0)),
        "val_n": int(len(y)),
    }, extras


# ---------------------------------------------------------------------------------------------
# Epochs: plan, train, validate, checkpoint, log
# ---------------------------------------------------------------------------------------------
def save_epoch(run: Run, state: RunState, is_best: bool, last_epoch: int) -> None:
    """last.pt every save_every epochs (and after the last), best.pt when it improved, metrics.jsonl;
    every rank stops together when rank 0 cannot write."""
    save_last = state.epoch % run.cfg.save_every == 0 or state.epoch == last_epoch
    paths = [run.folder / "last.pt"] * save_last + [run.folder / "best.pt"] * is_best

    def write():
        if paths:
            state.save(paths, run.meta, run.folder)
        write_metrics(run.folder, state.history)

    on_main(run.info, write)
    if save_last:
        run.last_saved = state.epoch


def check_stop(run: Run, state: RunState, sync: bool, epoch_end: bool = False) -> None:
    """Raise StopRequested when SIGTERM or SIGUSR2 arrived (:mod:`grefel.core.stop`). One process
    looks at every step; several agree at their sync points (every rank stops at the same step). At
    an epoch's end last.pt is first brought up to date (it lags with save_every > 1); within an epoch
    the unfinished epoch is dropped and last.pt keeps the last finished one it holds."""
    signum = stop_requested()
    if run.info.enabled:
        if not sync or gdist.all_ok(signum is None, run.device):
            return
        signum = signum or signal.SIGTERM
    elif signum is None:
        return
    if epoch_end and state.epoch > run.last_saved:
        on_main(run.info, lambda: state.save([run.folder / "last.pt"], run.meta, run.folder))
        run.last_saved = state.epoch
    name = signal.Signals(signum).name
    kept = (
        f"last.pt holds epoch {run.last_saved} of {run.epochs}; continue with `grefel train --resume {run.folder}`"
        if run.last_saved
        else "no epoch had finished, so there is no checkpoint; start the run again"
    )
    raise StopRequested(signum, f"stopped by {name} in {run.folder}: {kept}")


def log_epoch(run: Run, m: dict, is_best: bool, parts: tuple[str, ...] = LOSS_PARTS) -> None:
    terms = " ".join(f"{k} {m[f'train_{k}']:.4f}" for k in parts[1:])
    run.console.print(
        f"epoch {m['epoch']}/{run.epochs}  loss {m['train_loss']:.4f} ({terms})  train acc "
        f"{100 * m['train_acc']:.2f}%  val acc "
        + (f"{100 * m['val_acc']:.2f}%  " if "val_acc" in m else "-  ")
        + f"{m['images_per_s']:.0f} img/s"
        + ("  [best]" if is_best else "")
        + (f"  short: {', '.join(m['short_classes'])}" if m["short_classes"] else "")
    )


def make_batch_sources(run: Run, data: TrainData, sampler, val_sampler) -> tuple:
    """Training and validation batches: DataLoader workers reading the shards, or (``data_on_device``)
    the faces held on the device and gathered there (:mod:`grefel.data.resident`). Both yield the
    same batches; validation is scored with the labels the run learns from."""

    cfg, ds, device = run.cfg, data.ds, run.device
    workers = min(cfg.workers, usable_cores())  # more loader processes than cores only thrash
    held = np.union1d(data.pool, data.val_idx)
    wanted = use_data_on_device(cfg.data_on_device, faces_nbytes(len(held), ds.image_size), device)
    if gdist.all_ok(wanted, device):  # every rank alike
        t0 = time.perf_counter()
        faces = ResidentFaces(ds, data.labels, held, device, workers=workers)
        run.console.print(
            f"data on {device}: {len(faces)} faces ({faces.nbytes / 2**30:.2f} GiB) copied in "
            f"{time.perf_counter() - t0:.1f} s; batches gathered there, no loader workers"
        )
        return ResidentBatches(faces, sampler), ResidentBatches(faces, val_sampler)
    pin = device.type == "cuda"
    loader = make_loader(ds, data.labels, sampler, workers=workers, pin_memory=pin, persistent=True)
    val_loader = make_loader(ds, data.labels, val_sampler, workers=min(workers, 2), pin_memory=pin, persistent=True)
    return loader, val_loader


def run_epochs(run: Run, state: RunState, data: TrainData, model, criterion, last_epoch: int) -> None:
    """Epochs ``state.epoch + 1 .. last_epoch``: plan, train, validate, checkpoint, log."""

    cfg, info, ds = run.cfg, run.info, data.ds
    sampler = RankBatches(np.zeros(0, np.int64), cfg.batch_size, info.rank, info.world_size)
    eval_bs = cfg.eval_batch_size or max(1, 2 * cfg.batch_size // info.world_size)
    val_sampler = EvalBatches(data.val_idx, eval_bs, info.rank, info.world_size)
    loader, val_loader = make_batch_sources(run, data, sampler, val_sampler)
    plain = model.module if info.enabled else model  # no DDP wrapper for validation
    mode = None if cfg.compile_mode == "default" else cfg.compile_mode
    model_run = torch.compile(model, mode=mode) if cfg.compile else model
    writer = on_main(info, lambda: tblog.open_writer(run.folder, state.epoch) if cfg.tensorboard else None)
    progress = _progress(run.console)
    with progress, contextlib.closing(writer) if writer is not None else contextlib.nullcontext():
        run_task = progress.add_task("run", total=run.epochs, completed=state.epoch, info="")
        for epoch in range(state.epoch, last_epoch):
            plan = epoch_plan(
                data.labels,
                data.groups,
                data.pool,
                num_classes=ds.num_classes,
                epoch=epoch,
                seed=cfg.seed,
                global_batch=cfg.batch_size,
                refine=cfg.refine,
                n_pg=cfg.n_pg or None,
                per_class=cfg.per_class,
            )
            uniforms = augment_uniforms(len(plan.indices), cfg.seed, epoch).to(run.device)
            state.step.begin_epoch(epoch, len(plan.indices), run.device)
            sampler.set_plan(plan.indices)
            torch.manual_seed(derive_seed(cfg.seed, epoch, info.rank, 7))  # dropout / drop-path of this epoch
            set_train_mode(model, cfg.freeze_bn)
            t0 = time.perf_counter()
            stats = train_one_epoch(model_run, criterion, state, loader, uniforms, epoch, run, progress)
            state.scheduler.step()
            due = (epoch + 1) % cfg.val_every == 0 or epoch + 1 == last_epoch
            val, extras = validate_one_epoch(plain, criterion, val_loader, run, ds.num_classes) if due else ({}, {})
            images_per_s = stats.pop("images_per_s")
            metrics = {
                "epoch": epoch + 1,
                **stats,
                **val,
                "images_per_s": images_per_s,
                "epoch_time_s": float(time.perf_counter() - t0),
                "epoch_images": int(plan.n_real),
                "short_classes": [ds.classes[c] for c in plan.short],
            }
            is_best = state.end_epoch(metrics)
            save_epoch(run, state, is_best, last_epoch)
            check_stop(run, state, sync=True, epoch_end=True)
            best = f"best {100 * state.best['val_acc']:.2f}% @ {state.best['epoch']}"
            progress.update(
                run_task, completed=epoch + 1, info=f"val acc {100 * metrics.get('val_acc', 0):.2f}% ({best})"
            )
            log_epoch(run, metrics, is_best, state.step.parts)
            if writer is not None:
                show = (epoch + 1) % cfg.confusion_every == 0 or epoch + 1 == last_epoch
                tblog.write_epoch_events(writer, metrics, extras, ds.classes, confusion=show)


# ---------------------------------------------------------------------------------------------
# main: build a run from its config
# ---------------------------------------------------------------------------------------------
def setup_determinism(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.deterministic:  # e.g. the relative-position-bias gather accumulates in thread order otherwise
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not cfg.deterministic


def create_run_model(cfg: TrainConfig, num_classes: int, ckpt: dict | None, sources: dict, run_console):
    """The model on the CPU: the checkpoint's own architecture on resume (even if a preset changed
    since), else from the settings, started from the weight files ``sources`` (:func:`pretrained_files`);
    and the weights report. Prints one line per file loaded."""
    if ckpt is not None:
        return model_from_record(ckpt.get("model_kwargs"), ckpt.get("model_config")), None
    model = build_method_model(cfg, num_classes, sources)
    if not sources:
        return model, None
    if "backbone_weights" in sources:  # a baseline's backbone file
        report = load_backbone(model, sources["backbone_weights"], allow_partial=cfg.allow_partial)
        for source in report.sources:
            run_console.print(f"pretrained {source.line()}", highlight=False)
        return model, report
    files = {k.replace("-", "_"): str(p) for k, p in sources.items()}  # kind tiny-encoder: keyword tiny_encoder
    report = load_pretrained(model, **files, allow_partial=cfg.allow_partial)
    for source in report.sources:
        run_console.print(f"pretrained {source.line()}", highlight=False)
    return model, report


def pretrained_files(cfg: TrainConfig) -> dict[str, Path]:
    """The weight files a new run starts from: those given, the rest from the weights store (the tiny
    preset: the encoder shipped with grefel unless one is registered). A preset with published
    weights (``full``) refuses to start without them unless ``from_scratch``."""

    if (cfg.method or "grefel") != "grefel":
        if cfg.from_scratch and cfg.backbone_weights:
            raise GrefelError(
                "from_scratch starts from random weights, yet backbone_weights was given: drop one or the other"
            )
        hint = "or set from_scratch to train from random weights on purpose"
        found = (
            None
            if cfg.from_scratch
            else plan_backbone(cfg.method, cfg.preset, cfg.data_root, cfg.backbone_weights, hint)
        )
        return {"backbone_weights": found} if found else {}
    given = {k: getattr(cfg, k) for k in ("ir50", "mobilefacenet", "poster") if getattr(cfg, k)}
    if cfg.from_scratch:
        if given:
            raise GrefelError(
                f"from_scratch starts from random weights, yet weight files were given ({', '.join(given)}): "
                "drop one or the other"
            )
        return {}
    return plan_pretrained(
        cfg.preset, cfg.data_root, **given, scratch_hint="or set from_scratch to train from random weights on purpose"
    )


def place_model(model, cfg: TrainConfig, info: gdist.DistInfo):
    """Move to the device (channels_last, SyncBatchNorm); the plain model and the one to train (DDP)."""
    model.to(info.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if info.enabled and info.device.type == "cuda" and cfg.sync_bn and not cfg.freeze_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not info.enabled:
        return model, model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model, DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def main(cfg: TrainConfig, info: gdist.DistInfo) -> Path:
    """Build the run ``cfg`` describes (a new one, or the one it resumes) and train it; its folder."""
    console = _console(cfg.quiet, info.is_main)
    ckpt = path = None
    if cfg.resume:
        path, ckpt = load_resume_checkpoint(cfg.resume)
        cfg = resume_config(cfg, ckpt, path)
    cfg = with_recipe(cfg)  # the method's recipe where a setting is unset (a copy)
    per_process, rest = divmod(cfg.batch_size, info.world_size)
    if rest or per_process < 2:
        raise GrefelError(
            f"batch_size {cfg.batch_size} (global) must split evenly over the {info.world_size} processes "
            "with at least 2 images each (BatchNorm needs 2)"
        )
    sources = {} if ckpt else pretrained_files(cfg)  # before any work: missing weights are one line
    precision = resolve_precision(cfg.precision, info.device)
    setup_determinism(cfg, info.device)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg)
    check_method_fits(cfg, data.ds, data.labels[data.pool], info.world_size)
    folder = path.parent if ckpt else new_run_folder(cfg, data.ds.name, info)
    created = on_main(info, lambda: make_run_folder(folder, resuming=ckpt is not None)) or []
    try:
        model, weights_report = create_run_model(cfg, data.ds.num_classes, ckpt, sources, console)
        if not hasattr(model, "model_config"):
            raise GrefelError("the model has no model_config: grefel.models.create_model must set it")
        model, model_ddp = place_model(model, cfg, info)
        criterion = build_loss(cfg).to(info.device) if cfg.method == "grefel" else None
        state = RunState.create(cfg, model, info.device, precision, make_step(cfg, data.labels, info.device, criterion))
        if ckpt is not None:
            check_checkpoint_fits(ckpt, data.ds, cfg.labels, path)
            state.resume(ckpt, path)
        epochs = cfg.epochs if cfg.epochs is not None else DEFAULT_EPOCHS  # with_recipe sets it; old runs lack it
        record = run_record(cfg, data, model, epochs, precision, info)
        meta = {k: record[k] for k in ("dataset", "label_set", "split_set", "config")}
        run = Run(cfg, info, precision, folder, epochs, meta, console, last_saved=state.epoch)
        on_main(info, lambda: write_start(folder, record, state.history, weights_report))
        last_epoch = epochs if cfg.stop_after is None else min(epochs, state.epoch + cfg.stop_after)
        console.print(
            f"run {folder}: {data.ds.name} ({len(data.pool)} train / {len(data.val_idx)} val images), method "
            f"{cfg.method}, preset {cfg.preset}, labels {record['label_set']}, {info.world_size} process(es) on "
            f"{info.device}, "
            f"{precision}, epochs {state.epoch + 1}..{last_epoch} of {epochs}"
        )
        run_epochs(run, state, data, model_ddp, state.step.criterion.to(info.device), last_epoch)
    except BaseException:
        if ckpt is None and info.is_main:
            discard_unfinished(folder, created)
        raise
    _report_end(run, state, last_epoch)
    return folder


def _report_end(run: Run, state: RunState, last_epoch: int) -> None:
    folder, best = run.folder, state.best
    if last_epoch < run.epochs:
        run.console.print(
            f"stopped after epoch {last_epoch} of {run.epochs}: continue with `grefel train --resume {folder}`"
        )
    elif best["epoch"] > 0:
        run.console.print(f"done: {folder / 'best.pt'} (val acc {100 * best['val_acc']:.2f}% at epoch {best['epoch']})")
    else:
        run.console.print(f"done: {folder / 'last.pt'} (no epoch was validated)")


def train(config: TrainConfig) -> Path:
    """Train (or resume) a run; return its folder (``best.pt`` and ``last.pt`` inside).

    The settings are checked first (a one-line GrefelError naming the setting). With ``resume``
    the run's own settings are used; only the resumable ones (``resumable_settings()``) may differ.
    SIGTERM or SIGUSR2 (a scheduler preempting, requeueing or nearing the time limit) stops the run
    between two steps with last.pt whole and up to date with the finished epochs:
    :class:`grefel.core.stop.StopRequested`, whose message says how to continue.
    """
    config.validate()
    info = gdist.setup(config.device)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with deferred_stop():  # SIGTERM / SIGUSR2: save and stop between steps (StopRequested), not a crash
            return main(config, info)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        gdist.teardown()
