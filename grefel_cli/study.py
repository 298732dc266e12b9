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
    sd: float | None = typer.Option(
        None,
        "--sd",
        help="Standard deviation of the paired differences (points of accuracy) for the power of each comparison.",
        show_default=False,
    ),
    pilot: Path | None = typer.Option(
        None,
        "--pilot",
        help="A finished pilot study folder: each comparison's sd of paired differences comes from it.",
        show_default=False,
    ),
    half_width: float | None = typer.Option(
        None,
        "--half-width",
        help="A 95 % CI half-width (points): print the seeds each comparison needs for it (with --sd or --pilot).",
        show_default=False,
    ),
):
    """Print a study's runs: their stable names and the exact `grefel train` command of each.

    Checks the study file (an unknown key or a bad value is an error naming its line) and trains
    nothing. With --sd or --pilot it also prints, per comparison, the minimum detectable effect at
    80 % power (paired t-test, two-sided, alpha 0.05) with the study's seeds and, with
    --half-width, the number of seeds a 95 % CI of that half-width needs.

    [bold]Examples:[/bold]

      grefel study plan rb-noise.toml

      grefel study plan rb-noise.toml --sd 1.2 --half-width 2

      grefel study plan rb-noise.toml --pilot rb-noise-pilot --half-width 2
    """
    from grefel.core.console import make_console
    from grefel.study.run import open_study
    from grefel.study.show import print_plan, print_power
    from grefel.study.stats import power_plan

    if sd is not None and pilot is not None:
        raise typer.BadParameter("give --sd or --pilot, not both", param_hint="--pilot")
    if half_width is not None and sd is None and pilot is None:
        raise typer.BadParameter("needs --sd or --pilot (the spread of paired differences)", param_hint="--half-width")
    study, folder, _ = open_study(file, out)
    power = power_plan(study, sd=sd, pilot=pilot, half_width=half_width)  # before printing: bad input fails first
    console = make_console()
    print_plan(study, folder, console)
    if power is not None:
        console.print()
        print_power(power, console)


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

    Per setting: mean ± half-width of the 95 % t-interval, the sd and the interval over seeds. Per
    comparison with its baseline (same seeds, other settings equal): the paired difference, the
    interval its verdict rests on, the paired t-test (Holm-corrected over the primary comparisons,
    or over each metric's), and the minimum detectable effect at 80 % power. summary.json adds the
    Wilcoxon signed-rank p and McNemar's test per seed pair. Fewer than 3 seeds: "not enough seeds".

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
