"""`grefel evaluate --ckpt CKPT`: every model output for every sample of a split, in one Parquet file."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command(no_args_is_help=True)
def evaluate(
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint of a `grefel train` run (best.pt or last.pt)."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Prepared dataset name or folder \\[default: the one the checkpoint records]."
    ),
    split: str = typer.Option("test", "--split", help="Split to evaluate: test, val or train."),
    labels: str | None = typer.Option(
        None,
        "--labels",
        help="Label set whose labels go beside the clean ones as label_noisy \\[default: the one the run trained on].",
    ),
    split_set: str | None = typer.Option(
        None, "--split-set", help="splits/<set>.h5 from `grefel refine` \\[default: the run's]."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Predictions file \\[default: <ckpt>-<split>-<labels>.parquet in <run>/predictions]."
    ),
    batch_size: int = typer.Option(128, "--batch-size", "-b", min=1, metavar="<int>", help="Images per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... \\[default: cuda when available]."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Data root \\[default: $GREFEL_DATA_ROOT, else ~/.local/share/grefel]."
    ),
    force: bool = typer.Option(False, "--force", help="Evaluate again even if an up-to-date predictions file exists."),
    fp32: bool = typer.Option(
        False, "--fp32", help="Float32 on CUDA too (default there: bf16 autocast, ~1.5x faster)."
    ),
):
    """Run a checkpoint over a split and write its predictions for every sample.

    The file (Parquet; any tool reads it) holds per sample the primary distribution (eq. 9), the geometric and attentive
    corrections (eq. 15, 17, 18), the corrected distribution (eq. 19), the confidences (eq. 10-11) and the embedding,
    beside the clean label, the noisy label of a label set, the group and the attributes. An interrupted evaluation
    resumes where it stopped. Columns and how to read the file: docs/report.md.

    [bold]Examples:[/bold]

      grefel evaluate --ckpt runs/rafdb-full-clean/best.pt

      grefel evaluate --ckpt runs/k10-noise20/best.pt --split val \\
        --labels sym20-s0

      grefel evaluate --ckpt best.pt --dataset /scratch/rafdb \\
        --out preds.parquet --device cuda
    """
    from grefel.core.console import make_console
    from grefel.evaluation.evaluate import evaluate as run

    path = run(
        ckpt,
        dataset=dataset,
        split=split,
        label_set=labels,
        out=out,
        batch_size=batch_size,
        device=device,
        split_set=split_set,
        data_root=data_root,
        force=force,
        amp=False if fp32 else None,
    )
    make_console().print(f"predictions: {path}")
