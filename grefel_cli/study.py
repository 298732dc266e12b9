"""`grefel study plan|run|status|summary`: a grid of `grefel train` runs over seeds, with statistics."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from grefel_cli.app import _Group, app

study_app = typer.Typer(
    cls=_Group,
    name="study",
    help="Many training runs (a grid of settings x seeds) with error bars and paired tests: docs/study.md.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(study_app, name="study")


class Executor(StrEnum):
    local = "local"
    slurm = "slurm"


_OUT = typer.Option(
    None,
    "--out",
    "-o",
    help="Study folder \\[default: beside the study file, named after the study].",
    show_default=False,
)


@study_app.command("plan", no_args_is_help=True)
def plan(
    file: Path = typer.Argument(..., help="Study file (TOML).", show_default=False),
    out: Path | None = _OUT,
):
    """Print a study's runs: their stable names and the exact `grefel train` command of each.

    Checks the study file (an unknown key or a bad value is an error naming its line) and trains
    nothing.

    [bold]Examples:[/bold]

      grefel study plan rb-noise.toml
    """
    from grefel.core.console import make_console
    from grefel.study.run import open_study
    from grefel.study.show import print_plan

    study, folder, _ = open_study(file, out)
    print_plan(study, folder, make_console())


@study_app.command("run", no_args_is_help=True)
def run(
    source: Path = typer.Argument(..., help="Study file (TOML), or a study folder to continue.", show_default=False),
    out: Path | None = _OUT,
    executor: Executor = typer.Option(
        Executor.local,
        "--executor",
        "-x",
        help="local: a pool on this machine (one run per GPU, else runs side by side on the CPU cores); "
        "slurm: one job array through submitit (settings in the study's \\[slurm] table).",
    ),
    parallel: int | None = typer.Option(
        None,
        "--parallel",
        "-p",
        min=1,
        help="Runs at a time \\[default: one per GPU (group), else one per CPU core; Slurm: all].",
        show_default=False,
    ),
    rerun: list[str] = typer.Option(
        [],
        "--rerun",
        help="Train this run again from scratch (its folder is deleted first), e.g. after one of its settings "
        "changed; repeat for several.",
        show_default=False,
    ),
):
    """Run every unfinished run of a study: `grefel train`, then `grefel evaluate` on the clean test split.

    Finished runs are skipped, stopped ones resume from their last.pt, failed ones are retried;
    a run that fails is marked failed with its log and the others go on. Label sets the grid
    needs are made with `grefel corrupt` first. At the end the statistics go to summary.json in
    the study folder and are printed. A second `grefel study run` on the same folder refuses
    while this one runs.

    [bold]Examples:[/bold]

      grefel study run rb-noise.toml

      grefel study run rb-noise.toml --out /scratch/studies/rb --parallel 2

      grefel study run rb-noise.toml --executor slurm

      grefel study run rb-noise.toml --rerun sym20-rb_none-s1
    """
    from grefel.core.console import make_console
    from grefel.study.run import run_study

    console = make_console()
    try:
        result = run_study(source, out, executor=executor.value, parallel=parallel, rerun=rerun, console=console)
    except KeyboardInterrupt:
        console.print("interrupted: runs stopped where they were; `grefel study run` again continues them")
        raise typer.Exit(130) from None
    if result["failed"]:
        console.print(
            f"[red]{len(result['failed'])} run(s) failed[/red]: their logs are listed above; "
            f"`grefel study run {result['folder']}` retries them"
        )
        raise typer.Exit(1)


@study_app.command("status", no_args_is_help=True)
def status(folder: Path = typer.Argument(..., help="Study folder.", show_default=False)):
    """List a study's runs: done, running, failed (with the path of its log) and pending.

    Reads the study folder alone (wherever it was moved); a run is running while a process holds it.

    [bold]Examples:[/bold]

      grefel study status rb-noise
    """
    from grefel.core.console import make_console
    from grefel.study.folder import study_states
    from grefel.study.show import print_status

    print_status(study_states(folder), make_console(), title=f"study {folder}")


@study_app.command("summary", no_args_is_help=True)
def summary(
    folder: Path = typer.Argument(..., help="Study folder.", show_default=False),
    json_out: Path | None = typer.Option(
        None, "--json", help="Where to write the statistics \\[default: <study>/summary.json].", show_default=False
    ),
):
    """Print a study's statistics and write them as JSON.

    Per setting: mean ± std and the 95 % t-interval over seeds. Per comparison with its baseline
    (same seeds, other settings equal): the paired difference with its 95 % CI, the paired
    t-test (Holm-corrected), the Wilcoxon signed-rank p, and McNemar's test per seed on the
    same test images. Fewer than 3 seeds: "not enough seeds".

    [bold]Examples:[/bold]

      grefel study summary rb-noise

      grefel study summary rb-noise --json rb-noise.json
    """
    from grefel.core.console import make_console
    from grefel.study.show import print_summary
    from grefel.study.stats import write_summary

    data, path = write_summary(folder, json_out)
    console = make_console()
    print_summary(data, console)
    console.print(f"[bold green]summary:[/bold green] {path}")
