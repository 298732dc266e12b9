"""`grefel synth OUT`: a procedurally drawn facial-expression dataset in FERG-DB layout."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write (new or empty; rerun the same command to resume)."),
    characters: int = typer.Option(6, "--characters", min=1, help="Number of characters (the groups; FERG-DB has 6)."),
    per_class: int = typer.Option(
        100, "--per-class", min=1, help="Images per character of the most frequent expression (joy)."
    ),
    imbalance: float = typer.Option(
        3.0,
        "--imbalance",
        min=1.0,
        max=1000.0,
        metavar="<float>",
        help="Most / least frequent expression ratio; 1 = balanced.",
    ),
    size: int = typer.Option(128, "--size", min=32, max=1024, metavar="<int>", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives byte-identical files."),
    workers: int = typer.Option(1, "--workers", min=1, help="Drawing processes."),
):
    """Draw synthetic faces showing the seven basic expressions, in the FERG-DB raw layout.

    Writes OUT/<char>/<char>_<expr>/<char>_<expr>_<n>.png (char: character, expr: expression) with the
    expression made by facial geometry only (brows, eyelids, mouth), varied per character (head,
    colours, hair, feature placement) and per image (pose, lighting, noise); about 30 % of the
    PNGs are RGBA. Per character, the expression of rank r in joy, neutral, sadness, surprise,
    anger, disgust, fear gets round(PER_CLASS x IMBALANCE^(-r/6)) images. Prepare it with
    `grefel prepare ferg OUT`. See docs/synth.md.

    [bold]Examples:[/bold]

      grefel synth ~/synth-ferg

      grefel synth /tmp/tiny --characters 4 --per-class 20 --imbalance 1

      grefel synth ~/synth-ferg --per-class 400 --seed 1 --workers 2 \\
        && grefel prepare ferg ~/synth-ferg
    """
    from grefel.synth.faces import generate

    generate(
        out, characters=characters, per_class=per_class, size=size, seed=seed, imbalance=imbalance, workers=workers
    )
