"""`grefel refine --dataset NAME`: split files for datasets without one + a preview of the refined epoch."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command()
def refine(
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Prepared dataset name or folder \\[default: the only one]."
    ),
    method: str = typer.Option(
        "auto", "--method", help="Split method: auto, carve-val, folds, random, group, none (auto: see below)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits and of the previewed refined epoch."),
    val_fraction: float = typer.Option(
        0.1,
        "--val-fraction",
        min=0.0,
        max=1.0,
        metavar="<float>",
        help="Share of the training images held out for validation.",
    ),
    test_fraction: float = typer.Option(
        0.1,
        "--test-fraction",
        min=0.0,
        max=1.0,
        metavar="<float>",
        help="Share held out for testing (datasets with no split at all).",
    ),
    n_pg: int = typer.Option(
        512, "--n-pg", min=0, help="N_pg: at most this many images per video / face group per epoch (0: no cap)."
    ),
    per_class: int = typer.Option(
        500, "--per-class", min=1, help="B: images per class per epoch (with replacement where a class is short)."
    ),
    epoch: int = typer.Option(
        0, "--epoch", min=0, help="Which epoch's refined draw to preview (training draws epoch 0, 1, ...)."
    ),
    split_set: str | None = typer.Option(
        None, "--split-set", help="Split set to preview \\[default: default, fold0 for JAFFE, else official]."
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Label set (from `grefel corrupt`) the refinement balances \\[default: clean]."
    ),
    force: bool = typer.Option(False, "--force", help="Rewrite split files that already exist."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Data root \\[default: $GREFEL_DATA_ROOT, else ~/.local/share/grefel]."
    ),
):
    """Write the split files a dataset lacks and show the paper's per-epoch data refinement.

    Splits (written once to <dataset>/splits/, deterministic for --seed): a dataset with an
    official train split but no validation split gets one carved out of train, stratified by
    class, with no subject / video in both (splits/default.h5; the official test split is kept).
    JAFFE gets ten leave-one-subject-out folds (splits/fold0.h5 .. fold9.h5). FERG gets a seeded
    split stratified by class and character. Other datasets without any split get a
    group-disjoint train / val / test split.

    Refinement (section 4.1, applied by `grefel train` at every epoch): at most N_pg images from
    each group, then B images per class, so an epoch holds B x N_cls images. The table shows the
    class histogram of the training split before and after, and which classes are short.

    [bold]Examples:[/bold]

      grefel refine --dataset rafdb

      grefel refine --dataset jaffe

      grefel refine --dataset affwild2 --n-pg 512 --per-class 500 --epoch 3

      grefel refine --dataset ferg --seed 1 --force
    """
    options = dict(locals())  # the library's arguments, by name (the label set is --labels here)
    options.update(n_pg=n_pg or None, label_set=options.pop("labels"))
    from grefel.data.refine import refine as run

    run(**options)
