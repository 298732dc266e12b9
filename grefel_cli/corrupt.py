"""`grefel corrupt --noise 0.2`: a named noisy label set beside the clean labels; `--from-file`: a published list."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command()
def corrupt(
    noise: float | None = typer.Option(
        None,
        "--noise",
        min=0.0,
        max=1.0,
        metavar="<float>",
        help="Fraction of labels to flip, e.g. 0.2 for 20 %. With --from-file: the level the list stands for "
        "(recorded for tables) \\[default: its realised rate, rounded].",
    ),
    from_file: Path | None = typer.Option(
        None,
        "--from-file",
        help="Import a published noisy label list instead of drawing noise: EAC's noise01-03.txt (RAF-DB "
        "format, 1-based) or SCN's 0.1noise_train.txt (paths, 0-based).",
    ),
    list_format: str = typer.Option(
        "auto", "--list-format", help="The list's format: auto, rafdb (name + code 1-7) or scn (path + 0-6)."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Prepared dataset name or folder \\[default: the only one]."
    ),
    mode: str = typer.Option(
        "symmetric", "--mode", help="symmetric (any other class) or asymmetric (a fixed confusable class)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same flips."),
    name: str | None = typer.Option(
        None, "--name", help="Label set name \\[default: sym20-s0 / asym20-s0 style; the list file's stem]."
    ),
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

    --from-file imports a published list instead (EAC's and SCN's noisy RAF-DB lists): each row
    is matched to the prepared dataset by image name, the list must cover the whole training split,
    and the flip rate per class and the transition matrix are printed and recorded.

    [bold]Examples:[/bold]

      grefel corrupt --noise 0.2

      grefel corrupt --noise 0.3 --dataset rafdb --mode asymmetric --seed 1

      grefel corrupt --noise 0.1 --dataset affwild2 --name noisy10

      grefel corrupt --dataset rafdb --from-file noise02.txt --name eac-noise20
    """
    from grefel.core.console import make_console
    from grefel.core.errors import GrefelError

    console = make_console()
    if from_file is not None:
        from grefel.data.noise_lists import import_noise_list

        res = import_noise_list(
            dataset, from_file, name, fmt=list_format, noise=noise, force=force, data_root=data_root
        )
        _print_import(console, res, from_file)
        return
    if noise is None:
        raise GrefelError("give --noise (a fraction to flip) or --from-file (a published noisy label list)")
    from grefel.data.corrupt import corrupt_dataset

    res = corrupt_dataset(dataset, noise, mode, seed, name, force=force, data_root=data_root)
    console.print(f"label set [bold]{res.name}[/bold]: {res.path}")
    console.print(
        f"flipped {res.flipped} of {res.eligible} labels: realised rate {res.realised:.4f} (asked {res.requested:.4f})"
    )
    _print_transitions(console, res.classes, res.transition)


def _print_import(console, res, from_file: Path) -> None:
    console.print(f"label set [bold]{res.name}[/bold]: {res.path}")
    console.print(
        f"{from_file.name} ({res.fmt} format): {res.matched} training images labelled, {res.ignored_test} test "
        f"rows ignored (the test split stays clean); flipped {res.flipped}: realised rate {res.realised:.4f} "
        f"(recorded as {res.noise:g})"
    )
    rates = ", ".join(f"{c} {100 * r:.1f} %" for c, r in zip(res.classes, res.per_class))
    console.print(f"flip rate per class: {rates}")
    _print_transitions(console, res.classes, res.transition)


def _print_transitions(console, classes, transition) -> None:
    from rich.table import Table

    short = [c[:4] for c in classes]  # column heads: the noisy class, first letters (one line at 80 columns)
    if len(set(short)) < len(short):
        short = list(classes)
    table = Table(title="realised transition matrix P(noisy | clean): rows clean, columns noisy")
    table.add_column("clean", no_wrap=True)
    for c in short:
        table.add_column(c, justify="right")
    for c, row in zip(classes, transition):
        table.add_row(c, *(f"{v:.2f}" for v in row))
    console.print(table)
