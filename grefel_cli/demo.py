"""`grefel demo`: the whole pipeline on the built-in synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command()
def demo(
    workdir: Path = typer.Option(
        Path("grefel-demo"),
        "--workdir",
        help="Folder for everything the demo writes (raw images, prepared data, runs, report).",
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Smaller data and shorter training (under 2 minutes; what CI runs)."
    ),
):
    """Run synth -> prepare -> refine -> corrupt -> train (reliability balancing on and off) -> evaluate -> report.

    Needs no GPU, no network and no dataset: the faces are drawn procedurally. Rerunning in the
    same --workdir reuses finished steps.

    Examples:

      grefel demo

      grefel demo --quick --workdir /tmp/grefel-demo
    """
    from grefel.demo import run_demo

    run_demo(workdir, quick=quick)
