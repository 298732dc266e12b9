"""`grefel corrupt --noise 0.2`: a named noisy label set beside the clean labels."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command()
def corrupt(
    noise: float = typer.Option(
        ..., "--noise", min=0.0, max=1.0, metavar="<float>", help="Fraction of labels to flip, e.g. 0.2 for 20 %."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Prepared dataset name or folder \\[default: the only one]."
    ),
    mode: str = typer.Option(
        "symmetric", "--mode", help="symmetric (any other class) or asymmetric (a fixed confusable class)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same flips."),
    name: str | None = typer.Option(None, "--name", help="Label set name \\[default: sym20-s0 / asym20-s0 style]."),
    force: bool = typer.Option(False, "--force", help="Overwrite a label set of that name made with other settings."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Data root \\[default: $GREFEL_DATA_ROOT, else ~/.local/share/grefel]."
    ),
):
    """Write a noisy label set (labels/<name>.h5) for the noise studies of Tables 5 and 7.

    Exactly round(noise x n) labels are flipped among the labelled images outside the official
    test split, at the same rate in every class; the clean labels are never modified. The file
    records the request, the realised rate and transition matrix, and which images were flipped.
    Train on it with `grefel train --labels NAME`.

    [bold]Examples:[/bold]

      grefel corrupt --noise 0.2

      grefel corrupt --noise 0.3 --dataset rafdb --mode asymmetric --seed 1

      grefel corrupt --noise 0.1 --dataset affwild2 --name noisy10
    """
    from rich.table import Table

    from grefel.core.console import make_console
    from grefel.data.corrupt import corrupt_dataset

    res = corrupt_dataset(dataset, noise, mode, seed, name, force=force, data_root=data_root)
    console = make_console()
    console.print(f"label set [bold]{res.name}[/bold]: {res.path}")
    console.print(
        f"flipped {res.flipped} of {res.eligible} labels: realised rate {res.realised:.4f} (asked {res.requested:.4f})"
    )
    classes = res.classes
    short = [c[:4] for c in classes]  # column heads: the noisy class, first letters (one line at 80 columns)
    if len(set(short)) < len(short):
        short = list(classes)
    table = Table(title="realised transition matrix P(noisy | clean): rows clean, columns noisy")
    table.add_column("clean", no_wrap=True)
    for c in short:
        table.add_column(c, justify="right")
    for c, row in zip(classes, res.transition):
        table.add_row(c, *(f"{v:.2f}" for v in row))
    console.print(table)
