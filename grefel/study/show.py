"""What `grefel study plan|status|summary` print (rich), from the plan, the run states and the summary."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.table import Table

from grefel.study.folder import STATES
from grefel.study.job import evaluate_command, train_command


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def print_plan(study, study_dir: Path, console) -> None:
    """The runs of a study with the exact `grefel train` command of each."""

    axes = " x ".join(f"{a.name} ({len(a.values)})" for a in study.axes) or "no grid"
    console.print(
        f"[bold]study {study.name}[/bold]: {len(study.runs)} runs = {axes} x {len(study.seeds)} seed(s) "
        f"{study.seeds}; study folder {study_dir}"
    )
    if study.axes:
        console.print("baselines: " + ", ".join(f"{a} = {v}" for a, v in study.baselines.items()))
    for spec in study.label_sets.values():
        how = f"{spec.noise:.0%} {spec.mode}, seed {spec.seed}" if spec.noise is not None else "must exist"
        if spec.from_file:
            how = f"{spec.noise:.0%} noise, the list {spec.from_file}"
        console.print(f"label set {spec.name}: {how} (made with grefel corrupt when the dataset lacks it)")
    if study.runs:
        ev = shlex.join(evaluate_command(study.runs[0])).replace(study.runs[0].name, "<run>")
        console.print(f"each run: the grefel train command below, then grefel {ev}; both inside the study folder")
    for r in study.runs:
        console.print(f"\n[bold]{r.name}[/bold]")
        console.print("  grefel " + shlex.join(train_command(r)), highlight=False)


def print_status(states: list, console, title: str = "runs") -> None:
    """One row per run: state, epochs, clean test accuracy, and the log of a failed run."""
    table = Table(title=title)
    for col, just in (("run", "left"), ("state", "left"), ("epochs", "right"), ("acc %", "right"), ("note", "left")):
        table.add_column(col, justify=just, overflow="fold")
    style = {"done": "green", "failed": "red", "running": "cyan"}
    for s in states:
        note = f"{s.error} (log: {s.log})" if s.state == "failed" else (f"job {s.job}" if s.state == "queued" else "")
        table.add_row(
            s.name,
            f"[{style.get(s.state, '')}]{s.state}" if s.state in style else s.state,
            f"{s.epochs_done}/{s.epochs}",
            _pct(s.metrics.get("accuracy")),
            note,
        )
    console.print(table)
    counts = {k: sum(s.state == k for s in states) for k in STATES}
    console.print(", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no runs")


def _mean_std(d: dict) -> str:
    if d.get("mean") is None:
        return "-"
    return f"{_pct(d['mean'])} ± {_pct(d['std'])}" if d.get("std") is not None else _pct(d["mean"])


def _ci(ci: list | None, sign: str = "") -> str:
    return "-" if not ci else f"{100 * ci[0]:{sign}.1f}, {100 * ci[1]:{sign}.1f}"


def print_summary(summary: dict, console) -> None:
    """Per-setting means with CIs, then the paired comparisons of the headline metric."""
    from rich import box

    table = Table(
        title=f"{summary['study']}: clean test split (%), mean ± std over n seeds", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col in ("setting", "n", "accuracy", "95 % CI", "primary acc.", "macro F1"):
        table.add_column(col, justify="left" if col == "setting" else "right", overflow="fold")
    for s in summary["settings"]:
        ms = s["metrics"]
        table.add_row(
            s["name"],
            str(ms["accuracy"]["n"]),
            _mean_std(ms["accuracy"]),
            _ci(ms["accuracy"]["ci"]),
            _mean_std(ms["accuracy_primary"]),
            _mean_std(ms["macro_f1"]),
        )
    console.print(table)
    comps = [c for c in summary["comparisons"] if c["metric"] == "accuracy"]
    parts = {a["name"]: dict(zip(a["values"], a["parts"])) for a in summary["axes"]}
    groups: dict[tuple, list] = {}
    for c in comps:
        groups.setdefault((c["axis"], c["value"], c["baseline"]), []).append(c)
    for (axis, value, base), rows in groups.items():
        _print_comparison(f"{axis} {value} vs {base}", rows, parts, console)
    if comps:
        family = comps[0].get("holm_family", 0)
        console.print(
            f"p: paired t-test across seeds; Holm: corrected over the {family} comparison(s) with at least "
            "3 seeds (alpha 0.05); McNemar: seeds whose two runs differ on the same test images (p < 0.05); "
            "fewer than 3 seeds: not enough seeds. docs/study.md says how to read them."
        )
    if summary["failed"]:
        console.print(
            f"[red]{len(summary['failed'])} failed run(s):[/red] "
            + "; ".join(f"{f['name']} ({f['log']})" for f in summary["failed"])
        )


def _print_comparison(title: str, rows: list[dict], parts: dict, console) -> None:
    from rich import box

    table = Table(title=f"{title}: accuracy difference on the same seeds (points)", box=box.SIMPLE_HEAD, pad_edge=False)
    wheres = ["-".join(parts[k][v] for k, v in c["context"].items()) or "all" for c in rows]
    for col in ("where", "n", "diff", "95 % CI", "p", "Holm", "McNemar", "verdict"):
        wide = dict(min_width=min(28, max(map(len, wheres)))) if col == "where" else dict(no_wrap=True)
        table.add_column(col, justify="left" if col in ("where", "verdict") else "right", overflow="fold", **wide)
    for c, where in zip(rows, wheres):
        diff = "-" if c["diff_mean"] is None else f"{100 * c['diff_mean']:+.1f}"
        mc = c.get("mcnemar") or []
        mc_txt = f"{sum(x['p'] < 0.05 for x in mc)}/{len(mc)}" if mc else "-"
        verdict = c["verdict"]
        colour = {"significant": "green", "not enough seeds": "yellow"}.get(verdict)
        table.add_row(
            where,
            str(c["n"]),
            diff,
            _ci(c.get("ci"), "+"),
            _p(c.get("p")),
            _p(c.get("p_holm")),
            mc_txt,
            f"[{colour}]{verdict}" if colour else verdict,
        )
    console.print(table)


def _p(p: float | None) -> str:
    return "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")
