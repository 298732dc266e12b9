"""`grefel report --ckpt CKPT [--ckpt MORE ...]` or `grefel report --study DIR`: one self-contained HTML
report, figures and JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command(no_args_is_help=True)
def report(
    ckpt: list[Path] = typer.Option(
        [], "--ckpt", help="Checkpoint (or predictions .parquet); repeat to compare runs.", show_default=False
    ),
    study: Path | None = typer.Option(
        None,
        "--study",
        help="A study folder (`grefel study run`): its tables over seeds, paired comparisons and curves, "
        "then the sections of its runs (instead of --ckpt).",
        show_default=False,
    ),
    study_runs: str = typer.Option(
        "one",
        "--study-runs",
        help="With --study: which runs get their own section: one (per setting, its lowest seed), all, none.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report folder \\[default: <first run>/report; with --study: <study>/report]."
    ),
    split: str = typer.Option("test", "--split", help="Split to report on."),
    labels: str | None = typer.Option(None, "--labels", help="Label set for label_noisy \\[default: each run's own]."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Prepared dataset \\[default: the one each checkpoint records]."
    ),
    sample: list[int] = typer.Option(
        [], "--sample", help="Global sample index to show in the Fig. 9 panel; repeat \\[default: one per class]."
    ),
    most_changed: int = typer.Option(
        6, "--most-changed", min=0, metavar="<int>", help="How many of the samples RB changed most to show."
    ),
    tsne_points: int = typer.Option(
        2000, "--tsne-points", min=0, metavar="<int>", help="Embeddings in the t-SNE (stratified sample); 0 skips it."
    ),
    batch_size: int = typer.Option(
        128, "--batch-size", "-b", min=1, metavar="<int>", help="Images per forward pass when evaluation is needed."
    ),
    device: str | None = typer.Option(None, "--device", help="Device for evaluation \\[default: cuda when available]."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Data root \\[default: $GREFEL_DATA_ROOT, else ~/.local/share/grefel]."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the t-SNE and the default sample choice."),
    fp32: bool = typer.Option(False, "--fp32", help="Evaluate in float32 on CUDA too (default there: bf16 autocast)."),
):
    """Write report.html (opens offline, figures embedded), the figures as PNG and SVG, and report.json.

    The checkpoint alone is enough: it records its dataset, label set and configuration, and evaluation runs first when
    its predictions are missing or stale. The page shows accuracy, balanced accuracy, macro-F1 and per-class scores with
    and without reliability balancing, confusion matrices, primary vs corrected distributions, t-SNE with cluster
    scores, wrong predictions, calibration, per-group accuracy, Table 1; several checkpoints are compared as an
    ad-hoc study (axes: the settings that differ; replicate: the training seed). docs/report.md.

    With --study DIR (a `grefel study` folder) the page starts with the study: every setting's mean with its
    95 % interval over seeds, Tables 2, 3 and 5-8 in the paper's layout where the grid covers them, forest plots
    of the paired comparisons (test and Holm-adjusted p), accuracy against label noise with its bands, and the
    failed runs; report.json holds every number. docs/study.md.

    [bold]Examples:[/bold]

      grefel report --ckpt runs/rafdb-full-clean/best.pt

      grefel report --ckpt runs/k0/best.pt --ckpt runs/k4/best.pt \\
        --ckpt runs/k10/best.pt --out reports/anchors

      grefel report --ckpt runs/a/predictions/best-test-clean.parquet \\
        --sample 12 --sample 907

      grefel report --study rb-noise --tsne-points 0
    """
    if study is not None and ckpt:
        raise typer.BadParameter("give --ckpt or --study, not both", param_hint="--study")
    if study is None and not ckpt:
        raise typer.BadParameter("give a checkpoint (--ckpt) or a study folder (--study)", param_hint="--ckpt")
    shared = dict(samples=sample, n_changed=most_changed, tsne_points=tsne_points, seed=seed)
    if study is not None:
        html = _study(study, out, study_runs, shared)
    else:
        html = _checkpoints(ckpt, out, split, labels, dataset, data_root, batch_size, device, fp32, shared)
    from grefel.core.console import make_console

    make_console().print(f"report: {html}")


def _log():
    from grefel.core.console import make_console

    console = make_console(stderr=True)
    return lambda s: console.print(s, highlight=False)


def _study(study: Path, out: Path | None, runs: str, shared: dict) -> Path:
    from grefel.study.report import study_report

    return study_report(study, out, runs=runs, log=_log(), **shared)


def _checkpoints(ckpt, out, split, labels, dataset, data_root, batch_size, device, fp32: bool, shared: dict) -> Path:
    """Evaluate the checkpoints whose predictions are missing or stale, then report them."""
    from grefel.study.pipeline import evaluate_and_report

    return evaluate_and_report(
        ckpt,
        out,
        split=split,
        label_set=labels,
        dataset=dataset,
        data_root=data_root,
        batch_size=batch_size,
        device=device,
        amp=False if fp32 else None,
        log=_log(),
        **shared,
    )
