"""`grefel inspect PREPARED`: counts, skipped items, provenance and a contact sheet of a prepared dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command()
def inspect(
    prepared: str | None = typer.Argument(
        None, help="Prepared dataset name under the data root, or its folder \\[default: the only one]."
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Data root \\[default: $GREFEL_DATA_ROOT, else ~/.local/share/grefel]."
    ),
    sheet: Path | None = typer.Option(
        None, "--sheet", help="Contact-sheet PNG to write \\[default: <prepared>/contact-sheet.png]."
    ),
    per_class: int = typer.Option(8, "--per-class", min=1, help="Faces per class on the contact sheet."),
    labels: str | None = typer.Option(None, "--labels", help="Label set from `grefel corrupt` \\[default: clean]."),
    splits: str | None = typer.Option(
        None, "--splits", help="Split set from `grefel refine` \\[default: refined 'default' if any, else official]."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the faces picked for the contact sheet."),
    verify: bool = typer.Option(
        False, "--verify", help="Check every shard's sha256 against the manifest (reads all the images)."
    ),
):
    """Show what a prepared dataset holds and write a contact sheet of aligned faces per class.

    Prints counts per split x class, groups, attributes, skipped items by reason and the
    provenance. Shard sizes are always checked; --verify checks their sha256 too.

    [bold]Examples:[/bold]

      grefel inspect rafdb

      grefel inspect affectnet8 --per-class 12 --sheet affectnet8.png

      grefel inspect ferplus --labels sym20

      grefel inspect /scratch/grefel/jaffe --verify
    """
    from grefel.data.inspect import inspect as run

    run(
        prepared,
        data_root=data_root,
        sheet=sheet,
        per_class=per_class,
        label_set=labels,
        split_set=splits,
        seed=seed,
        verify=verify,
    )
