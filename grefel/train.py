"""Train GReFEL: the paper's recipe (section 4.1) as defaults, every part of it a setting.

Reads top to bottom: configuration -> processes and device -> data -> model -> optimiser ->
run folder (or resume) -> epochs (train, validate, checkpoint) -> done. ``train(TrainConfig(...))``
returns the run folder; ``grefel train`` fills the config from its flags.

Recipe (paper section 4.1 and supplementary 6): Adam, lr 3e-4, exponential decay 0.995 per epoch,
lambda_cls = lambda_a = lambda_c = 1 (eq. 23), K = 10 anchors, dropout 0.5, 1000 epochs, each
epoch a refined draw of B x N_cls images (B = 500, at most N_pg = 512 images per group), heavy
augmentation (random crop, flip, rotation, colour, random erasing). Model selection uses the
validation split (never the test split) by the accuracy of the corrected distribution (eq. 19).

Reproducibility: the epoch plan (refinement), the augmentation of each plan position and the
dropout seed of each epoch are functions of (seed, epoch) alone, so a run stopped after epoch k
and resumed equals an unbroken run, and W processes with global batch G equal one process with G
(up to BatchNorm statistics: SyncBatchNorm on GPUs, --freeze-bn on CPUs).

Precision: bf16 autocast on CUDA (fp16 + GradScaler where bf16 is missing), fp32 on CPU by
default; losses are computed in fp32 from the fp32-cast model outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from grefel import distributed as gdist
from grefel.checkpoint import load_checkpoint, save_checkpoint
from grefel.data.refine import N_PG, PER_CLASS
from grefel.errors import CheckpointError, DatasetError, GrefelError
from grefel.io import atomic_path, write_json

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
RELIABILITY = ("both", "anchors", "mhsa", "none")


class TrainingDiverged(GrefelError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Every setting of a training run (the CLI flags of ``grefel train``; docs/training.md)."""

    # data
    dataset: str | None = None  # name under the data root, or a path; None: the only one there
    labels: str | None = None  # label set from `grefel corrupt` (Table 7); None: clean labels
    split_set: str | None = None  # splits/<set>.h5 (`grefel refine`); None: default, else official
    data_root: str | None = None
    refine: bool = True  # per-epoch data refinement (section 4.1)
    n_pg: int | None = N_PG  # at most N_pg images per video / face group; None: no cap
    per_class: int = PER_CLASS  # B images per class per epoch
    augment: bool = True  # Table 5 (--no-augment: centre crop only)
    crop: int = 112
    flip: float = 0.5
    rotation: float = 10.0
    color: float = 0.2  # brightness, contrast and saturation jitter
    erase: float = 0.5
    # model
    preset: str = "full"
    reliability: str = "both"  # Table 2: none | anchors | mhsa | both
    num_anchors: int = 10  # K, Table 6
    delta: float | None = None  # anchor similarity temperature (eq. 14); None: the model's default
    dropout: float = 0.5
    drop_path: float | None = None  # None: the model's default
    model_args: dict = field(default_factory=dict)  # any further create_model overrides
    ir50: str | None = None
    mobilefacenet: str | None = None
    poster: str | None = None
    allow_partial: bool = False
    # loss (eq. 23, Table 3 / Table 4 / Table 8)
    lambda_cls: float = 1.0
    lambda_anchor: float = 1.0
    lambda_center: float = 1.0
    label_smoothing: float = 0.0
    aux_warmup: float = (
        0.0  # epochs over which lambda_a and lambda_c ramp in from 0 (0: the paper, full from the start)
    )
    correction_warmup: float = (
        0.0  # epochs over which eq. (20) moves from the primary to the corrected distribution (0: the paper)
    )
    # optimisation
    epochs: int | None = None  # None: 1000 (or, with --resume, the run's own)
    batch_size: int = 128  # global batch, split over processes
    lr: float = 3e-4
    gamma: float = 0.995  # ExponentialLR decay per epoch
    weight_decay: float = 0.0
    seed: int = 0
    # machinery
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    channels_last: bool = False
    freeze_bn: bool = False
    sync_bn: bool = True  # SyncBatchNorm under multi-GPU DDP
    deterministic: bool = False  # deterministic kernels: bit-identical reruns and resumes (slower)
    workers: int = 4
    eval_batch_size: int | None = None
    log_every: int = 10
    val_every: int = 1  # validate every N epochs (and after the last)
    save_every: int = 1  # write last.pt every N epochs (and after the last); best.pt whenever it improves
    run_dir: str | None = None  # folder that holds runs (default ./runs)
    name: str | None = None  # run folder name (default <dataset>-<preset>-<labels>-<time>)
    resume: str | None = None  # run folder or checkpoint to continue
    stop_after: int | None = None  # stop after this many epochs in this session (resumable)
    quiet: bool = False

    def augment_settings(self):
        from grefel.data.transforms import TrainAugment

        return TrainAugment(
            crop=self.crop,
            flip=self.flip,
            rotation=self.rotation,
            brightness=self.color,
            contrast=self.color,
            saturation=self.color,
            erase=self.erase,
        )


DEFAULT_EPOCHS = 1000
# settings a resumed run may change; everything else comes from the run's checkpoint
RUNTIME_FIELDS = (
    "device",
    "workers",
    "quiet",
    "compile",
    "log_every",
    "data_root",
    "stop_after",
    "eval_batch_size",
    "resume",
    "save_every",
)  # (deterministic is kept from the run: its resumes must match)


# ---------------------------------------------------------------------------------------------
# Small pieces used by the loop below
# ---------------------------------------------------------------------------------------------
def resolve_precision(flag: str, device: torch.device) -> str:
    if flag not in PRECISIONS:
        raise GrefelError(f"unknown --precision '{flag}': use {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if flag in ("auto", "bf16"):
            return "bf16" if bf16_ok else "fp16"  # fp16 + GradScaler where bf16 is missing
        return flag
    if flag == "fp16":
        raise GrefelError("--precision fp16 needs a CUDA GPU: use bf16 or fp32 on the CPU")
    return "fp32" if flag == "auto" else flag


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def build_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    from grefel.models import create_model

    if cfg.reliability not in RELIABILITY:
        raise GrefelError(f"unknown --reliability '{cfg.reliability}': use {', '.join(RELIABILITY)}")
    overrides = dict(reliability=cfg.reliability, num_anchors=cfg.num_anchors, dropout=cfg.dropout)
    if cfg.delta is not None:
        overrides["delta"] = cfg.delta
    if cfg.drop_path is not None:
        overrides["drop_path"] = cfg.drop_path
    overrides.update(cfg.model_args)
    return create_model(cfg.preset, num_classes, **overrides)


def build_loss(cfg: TrainConfig) -> torch.nn.Module:
    from grefel.models.losses import GReFELLoss

    return GReFELLoss(
        lambda_cls=cfg.lambda_cls,
        lambda_anchor=cfg.lambda_anchor,
        lambda_center=cfg.lambda_center,
        label_smoothing=cfg.label_smoothing,
    )


def warmup_ramp(progress: float, warmup: float) -> float:
    """Warm-up factor after ``progress`` epochs: a linear ramp from 0 to 1 over ``warmup`` epochs
    (used for lambda_a and lambda_c, ``--aux-warmup``, and for the correction, ``--correction-warmup``)."""
    return 1.0 if warmup <= 0 else min(1.0, progress / warmup)


def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """model.train(); with ``freeze_bn`` BatchNorm layers keep using (and keep) running statistics."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def check_label_set(ds, label_set: str | None) -> None:
    """A label set must have been made from this very preparation of the dataset."""
    if label_set in (None, "", "clean"):
        return
    from grefel.data.corrupt import read_label_set_attrs

    ds.labels(label_set)  # existence and length
    attrs = read_label_set_attrs(ds, label_set)
    if attrs.get("classes") not in (None, ds.classes) or attrs.get("manifest_sha256") not in (None, ds.manifest_sha256):
        raise DatasetError(
            f"label set '{label_set}' was made for another preparation of {ds.name} (classes or manifest differ): "
            f"recreate it with `grefel corrupt --dataset {ds.name}`"
        )


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
    if (ckpt.get("label_set") or "clean") != (label_set or "clean"):
        raise CheckpointError(
            f"{path} was trained with label set '{ckpt.get('label_set')}', not '{label_set or 'clean'}'"
        )


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _save(path: Path, payload: dict, run: Path) -> None:
    """Atomic checkpoint write; a full disk keeps the previous file and says how to go on."""
    try:
        save_checkpoint(path, payload)
    except OSError as e:
        raise GrefelError(
            f"could not write {path} ({e.strerror or e}): the previous {path.name} is intact; "
            f"free disk space and continue with `grefel train --resume {run}`"
        ) from None


def _write_metrics(run: Path, history: list[dict]) -> None:
    with atomic_path(run / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))


@torch.no_grad()
def evaluate_split(model, loader, device, autocast, criterion, num_classes: int, crop: int = 112) -> dict:
    """Validation metrics (accuracy of the corrected and primary distributions, macro F1, loss)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    from grefel.data.transforms import eval_batch

    model.eval()
    rows, loss_sum = [], torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        x = eval_batch(batch["images"].to(device, non_blocking=True), crop=crop)
        y = batch["labels"].to(device, non_blocking=True)
        with autocast():
            out = model(x)
        loss_sum += torch.stack(
            [criterion(out, y)["total"].double() * len(y), torch.tensor(len(y), device=device, dtype=torch.float64)]
        )
        rows.append(torch.stack([y, out.corrected.argmax(1), out.primary.argmax(1)], 1).cpu())
    local = torch.cat(rows).numpy() if rows else np.zeros((0, 3), np.int64)
    gdist.all_reduce_sum(loss_sum)
    allrows = np.concatenate(gdist.gather_objects(local))
    y, pred, prim = allrows.T
    if len(y) == 0:
        return {}
    labels = list(range(num_classes))
    return {
        "val_loss": float(loss_sum[0] / loss_sum[1]),
        "val_acc": float(accuracy_score(y, pred)),
        "val_acc_primary": float(accuracy_score(y, prim)),
        "val_mean_class_acc": float(balanced_accuracy_score(y, pred))
        if len(np.unique(y)) > 1
        else float(accuracy_score(y, pred)),
        "val_macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "val_n": int(len(y)),
    }


def _console(quiet: bool, is_main: bool):
    from grefel.console import make_console

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
# The run
# ---------------------------------------------------------------------------------------------
def train(config: TrainConfig) -> Path:
    """Train (or resume) a run; return its folder (``best.pt`` and ``last.pt`` inside)."""
    from grefel.data.loader import EvalBatches, RankBatches, epoch_plan, make_loader
    from grefel.data.shards import PreparedDataset
    from grefel.data.transforms import augment_uniforms, eval_batch, train_batch
    from grefel.paths import resolve_dataset

    cfg = dataclasses.replace(config)
    info = gdist.setup(cfg.device)
    device = info.device
    console = _console(cfg.quiet, info.is_main)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        # -- resume: the run's own settings, with the runtime ones from this call --------------
        resume_ckpt, run = None, None
        if cfg.resume:
            rp = Path(cfg.resume)
            ckpt_path = rp / "last.pt" if rp.is_dir() else rp
            resume_ckpt = load_checkpoint(ckpt_path, map_location="cpu")
            if "optimizer" not in resume_ckpt:
                raise CheckpointError(
                    f"{ckpt_path} holds no training state (an exported model?): resume from a run's last.pt"
                )
            run = ckpt_path.parent
            stored = {
                k: v for k, v in resume_ckpt["config"].items() if k in {f.name for f in dataclasses.fields(TrainConfig)}
            }
            new = {k: getattr(cfg, k) for k in RUNTIME_FIELDS}
            if cfg.epochs is not None:
                new["epochs"] = cfg.epochs
            cfg = dataclasses.replace(TrainConfig(**stored), **new)
            cfg.dataset = resume_ckpt["dataset"].get("path") or cfg.dataset
            if not Path(cfg.dataset or "").is_dir():
                cfg.dataset = resume_ckpt["dataset"]["name"]
        epochs = cfg.epochs if cfg.epochs is not None else DEFAULT_EPOCHS
        if cfg.batch_size % info.world_size:
            raise GrefelError(
                f"--batch-size {cfg.batch_size} (global) must be divisible by the {info.world_size} processes"
            )
        precision = resolve_precision(cfg.precision, device)
        if cfg.deterministic:  # e.g. the relative-position-bias gather accumulates in thread order otherwise
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not cfg.deterministic
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not cfg.deterministic
        torch.manual_seed(cfg.seed)

        # -- data --------------------------------------------------------------------------------
        ds = PreparedDataset(resolve_dataset(cfg.dataset, cfg.data_root))
        # record the split set by name, so a resume keeps it even if `grefel refine` runs meanwhile
        cfg.split_set = cfg.split_set or ("default" if "default" in ds.split_sets() else "official")
        check_label_set(ds, cfg.labels)
        labels = ds.labels(cfg.labels)
        splits = ds.splits(cfg.split_set)
        train_pool = np.flatnonzero((splits == "train") & (labels >= 0))
        val_idx = np.flatnonzero((splits == "val") & (ds.labels() >= 0))
        if len(train_pool) == 0:
            folds = [s for s in ds.split_sets() if s.startswith("fold")]
            hint = (
                f"pass --split-set one of {', '.join(folds)}"
                if folds
                else f"run `grefel refine --dataset {ds.name}` first"
            )
            raise DatasetError(f"{ds.name} has no labelled training images in split set '{cfg.split_set}': {hint}")
        if len(val_idx) == 0:
            raise DatasetError(
                f"{ds.name} has no validation split (the test split is never used for model selection): "
                f"run `grefel refine --dataset {ds.name}` to carve one out, then train again"
            )
        val_labels = labels.copy()  # validation is scored with the labels the run learns from
        groups = ds.meta["group"].to_numpy()
        aug = cfg.augment_settings()
        eval_bs = cfg.eval_batch_size or max(1, 2 * cfg.batch_size // info.world_size)

        # -- model, loss, optimiser ----------------------------------------------------------------
        if resume_ckpt is not None:  # the run's own architecture, even if a preset changed since
            from grefel.models import model_from_kwargs

            model = model_from_kwargs(resume_ckpt.get("model_kwargs"), resume_ckpt.get("model_config"))
        else:
            model = build_model(cfg, ds.num_classes)
        if not hasattr(model, "model_config"):
            raise GrefelError("the model has no model_config: grefel.models.create_model must set it")
        weights_report = None
        if resume_ckpt is None and any((cfg.ir50, cfg.mobilefacenet, cfg.poster)):
            from grefel.models.weights import load_pretrained

            weights_report = load_pretrained(
                model,
                ir50=cfg.ir50,
                mobilefacenet=cfg.mobilefacenet,
                poster=cfg.poster,
                allow_partial=cfg.allow_partial,
            )
            console.print(weights_report)
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        raw_model = model
        if info.enabled and device.type == "cuda" and cfg.sync_bn and not cfg.freeze_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            raw_model = model
        criterion = build_loss(cfg).to(device)
        params = [p for p in raw_model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

        def autocast():
            return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

        start_epoch, history, best = 0, [], {"epoch": -1, "val_acc": -1.0}
        if resume_ckpt is not None:
            check_checkpoint_fits(resume_ckpt, ds, cfg.labels, ckpt_path)
            try:
                raw_model.load_state_dict(resume_ckpt["model"])
            except RuntimeError as e:
                raise CheckpointError(
                    f"{ckpt_path} does not fit the model it describes ({str(e).splitlines()[0][:120]})"
                ) from None
            optimizer.load_state_dict(resume_ckpt["optimizer"])
            scheduler.load_state_dict(resume_ckpt["scheduler"])
            if resume_ckpt.get("scaler") and scaler.is_enabled():
                scaler.load_state_dict(resume_ckpt["scaler"])
            start_epoch = int(resume_ckpt["epoch"])
            history = list(resume_ckpt.get("history", []))
            best = dict(resume_ckpt.get("best", best))
            torch.set_rng_state(resume_ckpt["rng"]["torch"])
            if device.type == "cuda" and "cuda" in resume_ckpt["rng"]:
                torch.cuda.set_rng_state(resume_ckpt["rng"]["cuda"], device)
        model_ddp = model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model_ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        model_run = torch.compile(model_ddp) if cfg.compile else model_ddp

        # -- run folder ------------------------------------------------------------------------------
        if run is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            name = cfg.name or f"{ds.name}-{cfg.preset}-{cfg.labels or 'clean'}-{stamp}"
            run = gdist.broadcast_object(Path(cfg.run_dir or "runs") / name)
            if not gdist.all_ok(not (run / "last.pt").exists(), device):
                raise GrefelError(f"{run} already holds a run: continue it with --resume {run} or pick another --name")
        record = {
            "config": asdict(cfg),
            "epochs": epochs,
            "precision": precision,
            "world_size": info.world_size,
            "device": str(device),
            "model_config": raw_model.model_config,
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
            "train_images": int(len(train_pool)),
            "val_images": int(len(val_idx)),
            "torch": torch.__version__,
        }
        if info.is_main:
            run.mkdir(parents=True, exist_ok=True)
            write_json(run / "config.json", record)
            _write_metrics(run, history)  # a resumed run drops rows written after its last.pt
            if weights_report is not None:
                with atomic_path(run / "pretrained.txt") as tmp:
                    tmp.write_text(weights_report.details() + "\n")

        def payload(epoch: int, metrics: dict) -> dict:
            return {
                "model": raw_model.state_dict(),
                "model_config": raw_model.model_config,
                "model_kwargs": raw_model.model_kwargs,
                "dataset": record["dataset"],
                "label_set": record["label_set"],
                "split_set": record["split_set"],
                "config": asdict(cfg),
                "epoch": epoch,
                "metrics": metrics,
                "history": history,
                "best": best,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(device),
            }

        # -- epochs ------------------------------------------------------------------------------------
        last_epoch = epochs if cfg.stop_after is None else min(epochs, start_epoch + cfg.stop_after)
        last_saved = start_epoch  # epoch held by last.pt
        console.print(
            f"run {run}: {ds.name} ({len(train_pool)} train / {len(val_idx)} val images), preset {cfg.preset}, "
            f"labels {record['label_set']}, {info.world_size} process(es) on {device}, {precision}, "
            f"epochs {start_epoch + 1}..{last_epoch} of {epochs}"
        )
        pin = device.type == "cuda"
        sampler = RankBatches(np.zeros(0, np.int64), cfg.batch_size, info.rank, info.world_size)
        workers = min(cfg.workers, gdist.usable_cores())  # more loader processes than cores only thrash
        loader = make_loader(ds, labels, sampler, workers=workers, pin_memory=pin, persistent=True)
        val_loader = make_loader(
            ds,
            val_labels,
            EvalBatches(val_idx, eval_bs, info.rank, info.world_size),
            workers=min(workers, 2),
            pin_memory=pin,
            persistent=True,
        )
        progress = _progress(console)
        with progress:
            run_task = progress.add_task("run", total=epochs, completed=start_epoch, info="")
            for epoch in range(start_epoch, last_epoch):
                plan = epoch_plan(
                    labels,
                    groups,
                    train_pool,
                    num_classes=ds.num_classes,
                    epoch=epoch,
                    seed=cfg.seed,
                    global_batch=cfg.batch_size,
                    refine=cfg.refine,
                    n_pg=cfg.n_pg,
                    per_class=cfg.per_class,
                )
                uniforms = augment_uniforms(len(plan.indices), cfg.seed, epoch)
                sampler.set_plan(plan.indices)
                torch.manual_seed(derive_seed(cfg.seed, epoch, info.rank, 7))  # dropout / drop-path of this epoch
                set_train_mode(model_ddp, cfg.freeze_bn)
                lr = optimizer.param_groups[0]["lr"]
                # sums over the steps since the last sync: total, cls, anchor, center, correct, n
                window = torch.zeros(6, dtype=torch.float64, device=device)
                totals = torch.zeros(6, dtype=torch.float64, device=device)
                ones = torch.ones(1, dtype=torch.float64, device=device)
                task = progress.add_task(f"epoch {epoch + 1}/{epochs}", total=len(sampler), info="")
                t0, seen = time.perf_counter(), 0
                for step, batch in enumerate(loader):
                    images = batch["images"].to(device, non_blocking=True)
                    y = batch["labels"].to(device, non_blocking=True)
                    if cfg.augment:
                        x = train_batch(images, uniforms[batch["pos"]], aug)
                    else:
                        x = eval_batch(images, crop=cfg.crop)
                    if cfg.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with autocast():
                        out = model_run(x)
                    progress_epochs = epoch + step / len(sampler)
                    criterion.aux_scale = warmup_ramp(progress_epochs, cfg.aux_warmup)
                    criterion.correction_scale = warmup_ramp(progress_epochs, cfg.correction_warmup)
                    losses = criterion(out, y)
                    loss = losses["total"]
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    with torch.no_grad():  # NaN / inf propagate into the sums: checked at the next sync
                        parts = torch.stack([losses[k].detach().double() for k in ("total", "cls", "anchor", "center")])
                        correct = (out.corrected.argmax(1) == y).sum().double()
                        window += torch.cat([parts * len(y), correct.view(1), ones * len(y)])
                    seen += len(y) * info.world_size
                    if (step + 1) % cfg.log_every == 0 or step + 1 == len(sampler):
                        gdist.all_reduce_sum(window)
                        w = window.cpu().numpy()
                        if not np.isfinite(w[:4]).all():
                            parts_txt = ", ".join(
                                f"{k} {v / max(w[5], 1):.4g}"
                                for k, v in zip(("total", "cls", "anchor", "center"), w[:4])
                            )
                            kept = (
                                f"kept the last good checkpoint {run / 'last.pt'} (epoch {last_saved})"
                                if last_saved
                                else "no epoch had finished, so there is no checkpoint"
                            )
                            raise TrainingDiverged(
                                f"loss became non-finite in epoch {epoch + 1}, "
                                f"steps {max(1, step + 2 - cfg.log_every)}..{step + 1} "
                                f"({parts_txt}; lr {lr:.3g}, {precision}); {kept}. Try a lower --lr, --precision fp32, "
                                "or a smaller --lambda-* for the part that blew up"
                                + (f", then --resume {run}" if last_saved else "")
                            )
                        totals += window
                        window.zero_()
                        el = time.perf_counter() - t0
                        t = totals.cpu().numpy()
                        progress.update(
                            task,
                            completed=step + 1,
                            info=(
                                f"loss {t[0] / t[5]:.3f} "
                                f"(cls {t[1] / t[5]:.3f} anc {t[2] / t[5]:.3f} cen {t[3] / t[5]:.3f}) "
                                f"acc {100 * t[4] / t[5]:.1f}% {seen / el:.0f} img/s"
                            ),
                        )
                train_time = time.perf_counter() - t0
                scheduler.step()
                validate = (epoch + 1) % cfg.val_every == 0 or epoch + 1 == last_epoch
                metrics = (
                    evaluate_split(
                        model_ddp.module if info.enabled else model_ddp,
                        val_loader,
                        device,
                        autocast,
                        criterion,
                        ds.num_classes,
                        cfg.crop,
                    )
                    if validate
                    else {}
                )
                t = totals.cpu().numpy()
                metrics = {
                    "epoch": epoch + 1,
                    "lr": float(lr),
                    "train_loss": float(t[0] / t[5]),
                    "train_cls": float(t[1] / t[5]),
                    "train_anchor": float(t[2] / t[5]),
                    "train_center": float(t[3] / t[5]),
                    "train_acc": float(t[4] / t[5]),
                    **metrics,
                    "images_per_s": float(seen / train_time),
                    "epoch_time_s": float(time.perf_counter() - t0),
                    "epoch_images": int(plan.n_real),
                    "short_classes": [ds.classes[c] for c in plan.short],
                }
                history.append(metrics)
                is_best = metrics.get("val_acc", -1) > best["val_acc"]
                if is_best:
                    best = {"epoch": epoch + 1, "val_acc": metrics["val_acc"]}
                ok, err = True, None
                save_last = (epoch + 1) % cfg.save_every == 0 or epoch + 1 == last_epoch
                if info.is_main:
                    try:
                        if save_last or is_best:
                            state = payload(epoch + 1, metrics)
                        if save_last:
                            _save(run / "last.pt", state, run)
                        if is_best:
                            _save(run / "best.pt", state, run)
                        _write_metrics(run, history)
                    except GrefelError as e:
                        ok, err = False, e
                if info.enabled:
                    ok = gdist.all_ok(ok, device)  # every rank stops together when rank 0 cannot write
                if not ok:
                    raise err or GrefelError(f"rank 0 could not write the checkpoint of epoch {epoch + 1}; see its log")
                if save_last:
                    last_saved = epoch + 1
                progress.remove_task(task)
                progress.update(
                    run_task,
                    completed=epoch + 1,
                    info=(
                        f"val acc {100 * metrics.get('val_acc', 0):.2f}% "
                        f"(best {100 * best['val_acc']:.2f}% @ {best['epoch']})"
                    ),
                )
                console.print(
                    f"epoch {epoch + 1}/{epochs}  loss {metrics['train_loss']:.4f} (cls {metrics['train_cls']:.4f} "
                    f"anchor {metrics['train_anchor']:.4f} center {metrics['train_center']:.4f})  train acc "
                    f"{100 * metrics['train_acc']:.2f}%  val acc "
                    + (f"{100 * metrics['val_acc']:.2f}%  " if "val_acc" in metrics else "-  ")
                    + f"{metrics['images_per_s']:.0f} img/s"
                    + ("  [best]" if is_best else "")
                    + (f"  short: {', '.join(metrics['short_classes'])}" if metrics["short_classes"] else "")
                )
        if last_epoch < epochs:
            console.print(f"stopped after epoch {last_epoch} of {epochs}: continue with `grefel train --resume {run}`")
        else:
            console.print(f"done: {run / 'best.pt'} (val acc {100 * best['val_acc']:.2f}% at epoch {best['epoch']})")
        return run
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        gdist.teardown()
