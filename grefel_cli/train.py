"""`grefel train --dataset NAME`: train GReFEL with the paper's recipe; every part of it a flag."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from grefel_cli.app import app

_D = "Data and refinement"
_A = "Augmentation (Table 5)"
_M = "Model and ablations (Tables 2, 6)"
_L = "Loss (eq. 23; Tables 3, 4, 8)"
_O = "Optimisation"
_R = "Run, devices and precision"


def _model_args(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--model-arg takes KEY=VALUE (JSON value), got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def train(
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Prepared dataset name or folder \\[default: the only one].", rich_help_panel=_D
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Label set from `grefel corrupt` (Table 7) \\[default: clean].", rich_help_panel=_D
    ),
    split_set: str | None = typer.Option(
        None,
        "--split-set",
        help="Split set from `grefel refine` (fold0..fold9 for JAFFE) \\[default: default, else official].",
        rich_help_panel=_D,
    ),
    refine: bool = typer.Option(
        True,
        "--refine/--no-refine",
        help="Per-epoch data refinement (section 4.1); off: an epoch is a pass over train.",
        rich_help_panel=_D,
    ),
    n_pg: int = typer.Option(
        512,
        "--n-pg",
        help="N_pg: at most this many images per video / face group per epoch (0: no cap).",
        rich_help_panel=_D,
    ),
    per_class: int = typer.Option(
        500, "--per-class", help="B: images per class per epoch (epoch = B x N_cls images).", rich_help_panel=_D
    ),
    data_root: Path | None = typer.Option(
        None,
        "--data-root",
        help="Data root \\[default: $GREFEL_DATA_ROOT, else ~/.local/share/grefel].",
        rich_help_panel=_D,
    ),
    augment: bool = typer.Option(
        True, "--augment/--no-augment", help="Heavy augmentation; off: centre crop only.", rich_help_panel=_A
    ),
    crop: int = typer.Option(
        112,
        "--crop",
        help="Random crop of the stored 128 px face (112 of 128 = the paper's 224 of 256).",
        rich_help_panel=_A,
    ),
    flip: float = typer.Option(0.5, "--flip", help="Probability of a horizontal flip.", rich_help_panel=_A),
    rotation: float = typer.Option(10.0, "--rotation", help="Rotation range in degrees (+-).", rich_help_panel=_A),
    color: float = typer.Option(
        0.2, "--color", help="Brightness / contrast / saturation jitter strength.", rich_help_panel=_A
    ),
    erase: float = typer.Option(0.5, "--erase", help="Probability of random erasing.", rich_help_panel=_A),
    preset: str = typer.Option(
        "full", "--preset", help="Model preset: full (the paper) or tiny (CPU-sized).", rich_help_panel=_M
    ),
    reliability: str = typer.Option(
        "both",
        "--reliability",
        help="Table 2: both, anchors, mhsa or none (no reliability balancing).",
        rich_help_panel=_M,
    ),
    num_anchors: int = typer.Option(
        10, "--num-anchors", "-K", help="K anchors per class (Table 6).", rich_help_panel=_M
    ),
    delta: float | None = typer.Option(
        None,
        "--delta",
        help="Anchor similarity temperature delta (eq. 14) \\[default: the model's].",
        rich_help_panel=_M,
    ),
    dropout: float = typer.Option(0.5, "--dropout", help="Dropout of the primary MLP.", rich_help_panel=_M),
    drop_path: float | None = typer.Option(
        None, "--drop-path", help="Stochastic depth of the encoder \\[default: the preset's].", rich_help_panel=_M
    ),
    model_arg: list[str] = typer.Option(
        [],
        "--model-arg",
        help="Further create_model override KEY=JSON, e.g. encoder='{\"depth\": 1}' (repeatable).",
        rich_help_panel=_M,
    ),
    ir50: Path | None = typer.Option(
        None, "--ir50", help="IR-50 weight file (face.evoLVe or POSTER++ format).", rich_help_panel=_M
    ),
    mobilefacenet: Path | None = typer.Option(
        None, "--mobilefacenet", help="MobileFaceNet landmark weight file.", rich_help_panel=_M
    ),
    poster: Path | None = typer.Option(
        None, "--poster", help="Trained POSTER++ checkpoint to start the encoder from.", rich_help_panel=_M
    ),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Accept weight files that cover only part of the model.", rich_help_panel=_M
    ),
    lambda_cls: float = typer.Option(
        1.0, "--lambda-cls", help="lambda_cls, class distribution loss (eq. 20).", rich_help_panel=_L
    ),
    lambda_anchor: float = typer.Option(
        1.0, "--lambda-anchor", help="lambda_a, anchor loss (eq. 21).", rich_help_panel=_L
    ),
    lambda_center: float = typer.Option(
        1.0, "--lambda-center", help="lambda_c, center loss (eq. 22).", rich_help_panel=_L
    ),
    label_smoothing: float = typer.Option(
        0.0,
        "--label-smoothing",
        help="Label smoothing eps in \\[0, 1); Table 8's term T is eps = T/100.",
        rich_help_panel=_L,
    ),
    aux_warmup: float = typer.Option(
        0.0,
        "--aux-warmup",
        help="Epochs over which lambda_a and lambda_c ramp in from 0 (not in the paper; helps from scratch).",
        rich_help_panel=_L,
    ),
    correction_warmup: float = typer.Option(
        0.0,
        "--correction-warmup",
        help="Epochs over which eq. 20 moves from the primary to the corrected distribution "
        "(ARBEx's ramp, not in the paper; helps from scratch).",
        rich_help_panel=_L,
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Epochs \\[default: 1000; with --resume: the run's own].", rich_help_panel=_O
    ),
    batch_size: int = typer.Option(
        128, "--batch-size", "-b", help="Global batch size (split over torchrun processes).", rich_help_panel=_O
    ),
    lr: float = typer.Option(3e-4, "--lr", help="Adam learning rate.", rich_help_panel=_O),
    gamma: float = typer.Option(
        0.995, "--gamma", help="Exponential learning-rate decay per epoch.", rich_help_panel=_O
    ),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Adam weight decay.", rich_help_panel=_O),
    seed: int = typer.Option(
        0, "--seed", help="Seed of initialisation, refinement, augmentation and dropout.", rich_help_panel=_O
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto, cpu, cuda or cuda:N (torchrun sets one GPU per process).", rich_help_panel=_R
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (bf16 on GPUs, fp16 + scaler without bf16, fp32 on CPU), bf16, fp16, fp32.",
        rich_help_panel=_R,
    ),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model.", rich_help_panel=_R),
    channels_last: bool = typer.Option(
        False, "--channels-last", help="Channels-last memory format (faster convolutions on GPUs).", rich_help_panel=_R
    ),
    freeze_bn: bool = typer.Option(
        False, "--freeze-bn", help="BatchNorm layers keep their running statistics (no update).", rich_help_panel=_R
    ),
    sync_bn: bool = typer.Option(
        True, "--sync-bn/--no-sync-bn", help="SyncBatchNorm when training on several GPUs.", rich_help_panel=_R
    ),
    deterministic: bool = typer.Option(
        False,
        "--deterministic",
        help="Deterministic kernels: bit-identical reruns and resumes (slower).",
        rich_help_panel=_R,
    ),
    workers: int = typer.Option(
        4, "--workers", "-j", help="Data-loading processes per training process.", rich_help_panel=_R
    ),
    eval_batch_size: int | None = typer.Option(
        None,
        "--eval-batch-size",
        help="Validation batch per process \\[default: 2 x the training batch].",
        rich_help_panel=_R,
    ),
    log_every: int = typer.Option(
        10, "--log-every", help="Steps between live-view updates (and NaN checks).", rich_help_panel=_R
    ),
    val_every: int = typer.Option(
        1, "--val-every", help="Validate every N epochs (and after the last).", rich_help_panel=_R
    ),
    save_every: int = typer.Option(
        1,
        "--save-every",
        help="Write last.pt every N epochs (and after the last); best.pt whenever it improves.",
        rich_help_panel=_R,
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Folder that holds run folders \\[default: ./runs].", rich_help_panel=_R
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help="Run folder name \\[default: the dataset, preset, label set and start time joined by dashes].",
        rich_help_panel=_R,
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Run folder (or its last.pt) to continue; its settings are reused.", rich_help_panel=_R
    ),
    stop_after: int | None = typer.Option(
        None,
        "--stop-after",
        help="Stop after this many epochs in this session (continue later with --resume).",
        rich_help_panel=_R,
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live view.", rich_help_panel=_R),
):
    """Train GReFEL on a prepared dataset; writes a run folder with best.pt and last.pt.

    Defaults are the paper's recipe (section 4.1): Adam lr 3e-4, exponential decay 0.995, lambda
    1/1/1, K = 10, dropout 0.5, 1000 epochs of B x N_cls refined images (B = 500, N_pg = 512),
    random crop / flip / rotation / colour / random erasing (on the GPU when training there).
    The best checkpoint is chosen on the validation split, never on test. A stopped run continues
    with --resume. Multi-GPU / multi-node: start the same command under torchrun (see
    docs/training.md).

    [bold]Examples:[/bold]

      grefel train --dataset rafdb --ir50 ir50.pth \\
        --mobilefacenet mobilefacenet_model_best.pth.tar

      grefel train --dataset ferg --preset tiny --epochs 20 --per-class 100

      grefel train --dataset affwild2 --reliability none \\
        --lambda-anchor 0 --lambda-center 0

      grefel train --dataset rafdb --labels sym20-s0 --num-anchors 4 \\
        --label-smoothing 0.11

      grefel train --dataset jaffe --split-set fold3 --no-augment

      grefel train --resume runs/rafdb-full-clean-20250101-120000

      torchrun --nproc_per_node 8 -m grefel_cli.main train \\
        --dataset affectnet8 --batch-size 512
    """
    from grefel.train import TrainConfig
    from grefel.train import train as run

    cfg = TrainConfig(
        dataset=dataset,
        labels=labels,
        split_set=split_set,
        data_root=str(data_root) if data_root else None,
        refine=refine,
        n_pg=n_pg or None,
        per_class=per_class,
        augment=augment,
        crop=crop,
        flip=flip,
        rotation=rotation,
        color=color,
        erase=erase,
        preset=preset,
        reliability=reliability,
        num_anchors=num_anchors,
        delta=delta,
        dropout=dropout,
        drop_path=drop_path,
        model_args=_model_args(model_arg),
        ir50=str(ir50) if ir50 else None,
        mobilefacenet=str(mobilefacenet) if mobilefacenet else None,
        poster=str(poster) if poster else None,
        allow_partial=allow_partial,
        lambda_cls=lambda_cls,
        lambda_anchor=lambda_anchor,
        lambda_center=lambda_center,
        label_smoothing=label_smoothing,
        aux_warmup=aux_warmup,
        correction_warmup=correction_warmup,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        gamma=gamma,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
        precision=precision,
        compile=compile,
        channels_last=channels_last,
        freeze_bn=freeze_bn,
        sync_bn=sync_bn,
        deterministic=deterministic,
        workers=workers,
        eval_batch_size=eval_batch_size,
        log_every=log_every,
        val_every=val_every,
        save_every=save_every,
        run_dir=str(run_dir) if run_dir else None,
        name=name,
        resume=str(resume) if resume else None,
        stop_after=stop_after,
        quiet=quiet,
    )
    run(cfg)
