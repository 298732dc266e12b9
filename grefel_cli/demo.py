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
    quick: bool = typer.Option(False, "--quick", help="Smaller data and shorter runs (under 2 minutes; what CI runs)."),
):
    """Run synth -> prepare -> refine -> corrupt -> a study of reliability balancing -> report.

    The study trains the tiny preset on 20 % noisy labels with reliability balancing on and off,
    3 seeds each (`grefel study`, runs side by side on the CPU cores), evaluates every run on the
    clean test split and reports the paired difference of RB on against off with its 95 % interval
    and test, and whether it is significant. Needs no GPU, no network and no dataset: the faces are
    drawn procedurally. Rerunning in the same --workdir reuses finished steps and runs.

    Examples:

      grefel demo

      grefel demo --quick --workdir /tmp/grefel-demo
    """
    from grefel.demo import run_demo

    run_demo(workdir, quick=quick)
