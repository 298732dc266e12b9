"""What `grefel study plan|status|summary` print (rich), from the plan, the run states and the summary."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.table import Table

from grefel.study.folder import STATES
from grefel.study.job import evaluate_command, train_command
from grefel.study.spec import MAX_SEEDS
from grefel.study.stats import ANECDOTE
from grefel.study.tables import PLUS_MINUS, context_text, fmt_p


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
    specs = list(study.label_sets.values())
    if study.noise_per_seed:  # one line per label set, not one per seed
        specs = [x for x in specs if x.seed == study.seeds[0]]
    for spec in specs:
        how = f"{spec.noise:.0%} {spec.mode}, seed {spec.seed}" if spec.noise is not None else "must exist"
        name = spec.name
        if spec.from_file:
            how = f"{spec.noise:.0%} noise, the list {spec.from_file}"
        elif study.noise_per_seed:
            name = spec.name.removesuffix(f"-s{spec.seed}")
            how = f"{spec.noise:.0%} {spec.mode}, drawn per training seed: {name}-s<seed>, seeds {study.seeds}"
        console.print(f"label set {name}: {how} (made with grefel corrupt when the dataset lacks it)")
    if study.primary:
        console.print(f"primary comparisons (Holm corrects these alone): {', '.join(study.primary)}")
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
        note = f"{s.error} (log: {s.log})" if s.state == "failed" else ""
        if s.state in ("queued", "requeued"):
            note = f"job {s.job}" + (
                ", requeued by the scheduler: it continues from last.pt" if s.state == "requeued" else ""
            )
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


def _mean_ci(d: dict) -> str:
    """``mean ± half-width of its 95 % t-interval``, in percent."""
    if d.get("mean") is None:
        return "-"
    if not d.get("ci"):
        return _pct(d["mean"])
    return f"{_pct(d['mean'])} ± {_pct((d['ci'][1] - d['ci'][0]) / 2)}"


def print_summary(summary: dict, console) -> None:
    """Per-setting means with CIs, then the paired comparisons of the headline metric."""
    from rich import box  # lazy: only printing needs it

    table = Table(
        title=f"{summary['study']}: clean test split (%), over n seeds; {PLUS_MINUS}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("setting", "n", "accuracy ± 95 % CI", "sd", "primary acc. ±", "macro F1 ±"):
        table.add_column(col, justify="left" if col == "setting" else "right", overflow="fold")
    for s in summary["settings"]:
        ms = s["metrics"]
        sd = ms["accuracy"].get("std")
        table.add_row(
            s["name"],
            str(ms["accuracy"]["n"]),
            _mean_ci(ms["accuracy"]),
            "-" if sd is None else _pct(sd),
            _mean_ci(ms["accuracy_primary"]),
            _mean_ci(ms["macro_f1"]),
        )
    console.print(table)
    if summary.get("replicates"):
        console.print(summary["replicates"]["text"])
    comps = [c for c in summary["comparisons"] if c["metric"] == "accuracy"]
    parts = {a["name"]: dict(zip(a["values"], a["parts"])) for a in summary["axes"]}
    groups: dict[tuple, list] = {}
    for c in comps:
        groups.setdefault((c["axis"], c["value"], c["baseline"]), []).append(c)
    for (axis, value, base), rows in groups.items():
        _print_comparison(f"{axis} {value} vs {base}", rows, parts, console)
    if comps:
        console.print(comparisons_note(summary))
    if summary["failed"]:
        console.print(
            f"[red]{len(summary['failed'])} failed run(s):[/red] "
            + "; ".join(f"{f['name']} ({f['log']})" for f in summary["failed"])
        )


def comparisons_note(summary: dict) -> str:
    """How to read the comparisons of ``summary``: its Holm family, the interval, the MDE."""
    comps = [c for c in summary["comparisons"] if c["metric"] == "accuracy"]
    primary = summary.get("primary") or []
    family = max((c.get("holm_family", 0) for c in comps if c.get("adjusted", True)), default=0)
    if primary:
        holm = (
            f"Holm: corrected over the {family} primary comparison(s) ({', '.join(primary)}) with at least 3 seeds; "
            "the others are exploratory, their p unadjusted"
        )
    else:
        holm = f"Holm: corrected over the {family} accuracy comparison(s) with at least 3 seeds"
    return (
        "diff: mean paired difference (points) on the same seeds; interval: the one the verdict rests on "
        "(Holm: at the level of its Holm step, so it excludes 0 exactly when the verdict is significant; unadj.: "
        "the plain 95 % t-interval); p: the paired t-test's across seeds, Holm-adjusted unless the verdict says "
        f"unadjusted; {holm} (alpha 0.05); MDE: the smallest true difference these seeds detect with 80 % power "
        "(paired t, alpha 0.05); fewer than 3 seeds: not enough seeds. docs/study.md says how to read them."
    )


def _print_comparison(title: str, rows: list[dict], parts: dict, console) -> None:
    from rich import box  # lazy: only printing needs it

    table = Table(title=f"{title}: accuracy difference on the same seeds (points)", box=box.SIMPLE_HEAD, pad_edge=False)
    wheres = ["-".join(parts[k][v] for k, v in c["context"].items()) or "all" for c in rows]
    for col in ("where", "n", "diff", "interval", "p", "MDE", "verdict"):
        wide = dict(min_width=min(28, max(map(len, wheres)))) if col == "where" else dict(no_wrap=True)
        just = "left" if col in ("where", "verdict", "interval") else "right"
        table.add_column(col, justify=just, overflow="fold", **wide)
    for c, where in zip(rows, wheres):
        diff = "-" if c["diff_mean"] is None else f"{100 * c['diff_mean']:+.1f}"
        ci = c.get("ci_verdict")
        kind = "Holm" if c.get("ci_verdict_kind") == "Holm" else "unadj."
        verdict = c["verdict"]
        colour = {"significant": "green", "not enough seeds": "yellow", ANECDOTE: "yellow"}.get(verdict)
        table.add_row(
            where,
            str(c["n"]),
            diff,
            "-" if not ci or c["n"] < 2 else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] {kind}",
            fmt_p(c.get("p_holm") if c.get("adjusted", True) else c.get("p")).replace("–", "-"),
            "-" if c.get("mde") is None else _pct(c["mde"]),
            f"[{colour}]{verdict}" if colour else verdict,
        )
    console.print(table)


def print_power(power: dict, console) -> None:
    """The plan's power: per comparison, the MDE at 80 % power and the seeds a CI half-width needs."""
    from rich import box  # lazy: only printing needs it

    n, hw = power["n"], power["half_width"]
    table = Table(
        title=f"power of the paired t-test (two-sided, alpha 0.05, 80 % power) with {n} seed(s); "
        f"sd of paired differences: {power['sd_source']}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    cols = ["comparison", "where", "sd", "MDE", "MDE at 0.05/m", "± now"]
    cols += [f"seeds for ± {hw:g}"] if hw else []
    for col in cols:
        table.add_column(col, justify="left" if col in ("comparison", "where") else "right", overflow="fold")
    pts = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in power["comparisons"]:
        sd = pts(r["sd"], 2) + (f" (pilot n {r['pilot_n']})" if r["pilot_n"] else "")
        need = r["seeds_for_half_width"]
        row = [
            f"{r['axis']} {r['value']} vs {r['baseline']}" + (" (exploratory)" if r["family"] == "exploratory" else ""),
            context_text(r["context"]) or "all",
            sd if r["sd"] is not None else "- (not in the pilot)",
            pts(r["mde"]),
            pts(r["mde_holm_first_step"]) + (f" (m {r['family_size']})" if r["mde_holm_first_step"] else ""),
            pts(r["half_width_now"]),
        ]
        if hw:
            row.append("-" if r["sd"] is None else (str(need) if need else f"more than {MAX_SEEDS}"))
        table.add_row(*row)
    console.print(table)
    console.print(
        "MDE: the smallest true mean difference (points) these seeds detect with 80 % power; at 0.05/m: the same at "
        "the first step of Holm over the m comparisons of its family; ± now: the 95 % CI half-width these seeds "
        "give at that sd. Fix the number of seeds from this before the study runs: adding seeds until p < 0.05 "
        "makes a false 'significant' likelier (docs/study.md)."
    )
