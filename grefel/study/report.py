"""A study's HTML report: the single-run report of :mod:`grefel.report` with the study's sections first.

:func:`study_report` reads a study folder (nothing but the folder: paths in it are relative, so a
moved or copied folder reports the same) and writes one self-contained page:

1. **Study**: what ran, every run with its state (a failed run with its error and log, also listed
   at the top of the page), and per setting the mean ± std, the 95 % t-interval and n seeds;
2. **Paper tables**: Tables 2, 3, 5, 6, 7 and 8 in the paper's layout where the grid covers them
   (:mod:`grefel.study.tables`), each cell mean ± CI half-width and n, beside the paper's number;
3. **Paired comparisons**: a forest plot per grid axis (reliability balancing first) of the paired
   differences with their intervals, the test and the Holm-adjusted p, and the table of every
   comparison and metric;
4. **Accuracy against label noise**, one line per setting with its 95 % band, where the grid holds
   two noise levels or more;
5. the per-run sections of the existing report for one run per setting (its lowest finished seed),
   all runs, or none.

Every number is :func:`grefel.study.stats.summarize_study_study`'s; ``report.json`` keeps the summary (per
setting and per comparison: n, mean, CI, the test, p, Holm p, Wilcoxon and McNemar) under the
study section's ``data``, and each table's numbers under its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from grefel.core.errors import GrefelError
from grefel.evaluation.predictions import read_predictions
from grefel.report.build import ReportRun, build_report
from grefel.report.figures import ci_curves_figure, forest_figure
from grefel.report.page import Section, SectionFigure, Table
from grefel.report.paper import reference_curves
from grefel.study.noisy_bench import grefel_only, noisy_bench_section
from grefel.study.stats import summarize_study
from grefel.study.tables import PCT, context_text, contexts, dims, fmt_diff, fmt_p, study_tables

if TYPE_CHECKING:
    from grefel.report.page import Section

RUN_CHOICES = ("one", "all", "none")  # per-run sections: one run per setting, every run, none
METRIC_NAMES = {"accuracy": "accuracy", "accuracy_primary": "primary accuracy", "macro_f1": "macro F1"}


def study_report(
    study_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    runs: str = "one",
    samples: Sequence[int] = (),
    n_changed: int = 6,
    tsne_points: int = 2000,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the study's report (default ``<study>/report/``); return the path of ``report.html``.

    ``runs``: which runs also get the single-run sections: ``"one"`` per setting (its lowest
    finished seed), ``"all"`` or ``"none"``. ``samples``, ``n_changed``, ``tsne_points``, ``seed``:
    as :func:`grefel.report.build.build_report`.
    """

    if runs not in RUN_CHOICES:
        raise GrefelError(f"runs must be one of {', '.join(RUN_CHOICES)} (got {runs!r})")
    study_dir = Path(study_dir)
    summary = summarize_study(study_dir)
    out = Path(out) if out is not None else study_dir / "report"
    log = log or (lambda s: None)
    chosen = _chosen_runs(summary, runs)
    log(f"study {summary['study']}: {len(summary['runs'])} runs, {len(chosen)} with their own section")
    report_runs = [
        ReportRun(read_predictions(study_dir / r["predictions"]), r["name"], r["predictions"]) for r in chosen
    ]
    return build_report(
        report_runs,
        out,
        sections=[*study_sections(summary), *filter(None, [noisy_bench_section(summary, study_dir)])],
        problems=problems(summary),
        title=f"GReFEL study: {summary['study']}",
        samples=samples,
        n_changed=n_changed,
        tsne_points=tsne_points,
        seed=seed,
        log=log,
    )


def _chosen_runs(summary: dict, which: str) -> list[dict]:
    done = [r for r in summary["runs"] if r["state"] == "done" and r.get("predictions")]
    if which == "all":
        return done
    if which == "none":
        return []
    first: dict[tuple, dict] = {}
    for r in sorted(done, key=lambda r: r["seed"]):
        first.setdefault(tuple(sorted(r["cell"].items())), r)
    order = {r["name"]: i for i, r in enumerate(summary["runs"])}
    return sorted(first.values(), key=lambda r: order[r["name"]])


def problems(summary: dict) -> list[str]:
    """One line per failed run (its error and log) and one for the runs not finished yet."""
    lines = [
        f"run {f['name']} failed: {f['error'] or 'no error recorded'} (log: {f['log']})" for f in summary["failed"]
    ]
    waiting = [r["name"] for r in summary["runs"] if r["state"] not in ("done", "failed")]
    if waiting:
        lines.append(
            f"{len(waiting)} run(s) not finished: {', '.join(waiting[:12])}" + (" ..." if len(waiting) > 12 else "")
        )
    return lines


def study_sections(summary: dict) -> list[Section]:
    """The study's sections of the page, in order (see the module docstring)."""
    sections = [_overview(summary)]
    tables = study_tables(grefel_only(summary))  # GReFEL's ablations; the baselines have their own section
    if tables:
        sections.append(_paper_section(tables))
    if summary["comparisons"]:
        sections.append(_comparisons_section(summary))
    noise = _noise_section(summary)
    if noise:
        sections.append(noise)
    return sections


# -- 1. the study ---------------------------------------------------------------------------------
def _overview(summary: dict) -> Section:

    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items() if v)
    axes = "; ".join(f"{a['name']}: {', '.join(a['values'])} (baseline {a['baseline']})" for a in summary["axes"])
    text = (
        f"Study '{summary['study']}' on dataset {summary['dataset']}: {len(summary['runs'])} runs ({counts}); "
        f"seeds {summary['seeds']}; grid {axes or 'none'}. Every figure is computed over the seeds "
        "whose run finished (n); the interval is the 95 % t-interval of the mean over seeds "
        "(scipy.stats.t), not a bootstrap. Metrics on the clean test split, in percent."
    )
    settings = Table(
        ["setting", "label set", "n / planned", "accuracy", "95 % CI", "primary accuracy", "macro F1", "seeds"],
        [_setting_row(s) for s in summary["settings"]],
        title="Per setting: mean ± std over seeds",
        note="accuracy: corrected distribution (eq. 19, with RB); primary: eq. 9 (without RB).",
    )
    runs = Table(
        ["run", "seed", "state", "accuracy", "primary accuracy", "note"],
        [_run_row(r) for r in summary["runs"]],
        title="Runs",
    )
    return Section("Study", text=text, tables=[settings, runs], data={"summary": summary}, id="study")


def _mean_std(m: dict, scale: float = PCT, digits: int = 1) -> str:
    if m.get("mean") is None:
        return "–"
    std = f" ± {scale * m['std']:.{digits}f}" if m.get("std") is not None else ""
    return f"{scale * m['mean']:.{digits}f}{std}"


def _setting_row(s: dict) -> list:
    m = s["metrics"]
    ci = m["accuracy"].get("ci")
    return [
        s["name"],
        s["label_set"]["name"],
        f"{m['accuracy']['n']} / {s['planned_seeds']}",
        _mean_std(m["accuracy"]),
        "–" if not ci else f"{PCT * ci[0]:.1f} – {PCT * ci[1]:.1f}",
        _mean_std(m["accuracy_primary"]),
        _mean_std(m["macro_f1"], 1, 3),
        ", ".join(map(str, m["accuracy"]["seeds"])),
    ]


def _run_row(r: dict) -> list:
    acc, prim = r["metrics"].get("accuracy"), r["metrics"].get("accuracy_primary")
    note = f"{r['error'] or 'failed'} (log: {r['log']})" if r["state"] == "failed" else ""
    pct = lambda v: "–" if v is None else f"{PCT * v:.2f}"  # noqa: E731
    return [r["name"], r["seed"], r["state"], pct(acc), pct(prim), note]


# -- 2. the paper's tables -----------------------------------------------------------------------
def _paper_section(tables: list[dict]) -> Section:

    text = (
        "The study's settings in the layout of the paper's ablation tables. Each cell: corrected accuracy "
        "(or macro F1) on the clean test split, mean ± half-width of the 95 % t-interval over the n seeds "
        "in brackets; beside or below it the paper's number (Aff-Wild2, one run each, so another dataset: "
        "compare shapes, not levels). Paired changes: mean difference over the same seeds with its 95 % "
        "interval, the paired t-test across seeds, Holm-adjusted p (see the comparisons below)."
    )
    page = [Table(t["columns"], t["rows"], title=t["title"]) for t in tables]
    data = {"tables": [{k: t[k] for k in ("layout", "title", "context", "columns", "data")} for t in tables]}
    return Section("Paper tables", text=text, tables=page, data=data, id="paper-tables")


# -- 3. paired comparisons -----------------------------------------------------------------------
def _axis_order(summary: dict) -> list[dict]:
    """Grid axes with comparisons, reliability balancing first."""
    axes = [a for a in summary["axes"] if any(c["axis"] == a["name"] for c in summary["comparisons"])]
    return sorted(axes, key=lambda a: a["field"] != "reliability")


def forest_rows(summary: dict, axis: str, metric: str = "accuracy") -> list[dict]:
    """One row of the forest plot per comparison along ``axis`` (points; CI, test, Holm p, verdict)."""
    rows = []
    for c in summary["comparisons"]:
        if c["axis"] != axis or c["metric"] != metric:
            continue
        where = context_text(c["context"])
        diff = None if c["diff_mean"] is None else PCT * c["diff_mean"]
        ci = [PCT * c["ci"][0], PCT * c["ci"][1]] if c.get("ci") else None
        est = "–" if diff is None else f"{diff:+.1f}" + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "")
        note = f"{est}  n={c['n']}  {c['test']}, Holm p={fmt_p(c.get('p_holm'))}  {c['verdict']}"
        label = f"{c['value']} vs {c['baseline']}" + (f" | {where}" if where else "")
        rows.append({"label": label, "diff": diff, "ci": ci, "note": note, "verdict": c["verdict"]})
    return rows


def _comparisons_section(summary: dict) -> Section:

    family = next((c["holm_family"] for c in summary["comparisons"] if c["metric"] == "accuracy"), 0)
    figures = []
    for a in _axis_order(summary):
        what = "reliability balancing" if a["field"] == "reliability" else a["name"]
        title = (
            f"Paired effect of {what} on corrected accuracy (points), 95 % t-interval over seeds;\n"
            f"paired t-test across seeds, Holm-adjusted over the {family} accuracy comparison(s) with at least 3 seeds"
        )
        fig = forest_figure(forest_rows(summary, a["name"]), title, "difference in accuracy (points)")
        figures.append(
            SectionFigure(f"forest-{a['name']}", fig, caption=f"{a['name']}: each value against {a['baseline']}")
        )
    table = Table(
        ["metric", "comparison", "where", "n", "difference", "test", "p", "Holm p", "Wilcoxon p", "McNemar", "verdict"],
        [_comparison_row(c) for c in summary["comparisons"]],
        title="Every comparison",
        note="difference: value minus baseline over the same seeds, points (macro F1: x100), with its 95 % "
        "t-interval; p: paired t-test across seeds, two-sided; Holm: adjusted over the comparisons of the "
        "metric with at least 3 seeds; Wilcoxon signed-rank p as a check (cannot reach 0.05 with fewer than "
        "6 seeds); McNemar: seed pairs whose two models differ on the same test images (p < 0.05) of all pairs.",
    )
    text = (
        "Each grid value against its axis's baseline, every other axis equal, seed s against seed s. "
        "The verdict is 'significant' when the Holm-adjusted p is below 0.05; with fewer than 3 paired "
        "seeds it is 'not enough seeds', never significant."
    )
    methods = summary["methods"]
    return Section(
        "Paired comparisons", text=text, tables=[table], figures=figures, data={"methods": methods}, id="comparisons"
    )


def _comparison_row(c: dict) -> list:
    mc = c.get("mcnemar") or []
    return [
        METRIC_NAMES.get(c["metric"], c["metric"]),
        f"{c['axis']} {c['value']} vs {c['baseline']}",
        context_text(c["context"]) or "–",
        c["n"],
        fmt_diff(c),
        c["test"],
        fmt_p(c.get("p")),
        fmt_p(c.get("p_holm")),
        fmt_p(c.get("wilcoxon_p")),
        f"{sum(x['p'] < 0.05 for x in mc)}/{len(mc)}" if mc else "–",
        c["verdict"],
    ]


# -- 4. accuracy against noise ---------------------------------------------------------------------
def noise_curves(summary: dict) -> list[dict]:
    """Panels (one per noise mode) of lines (one per value of the other grid axes): noise %, mean, CI."""
    by_mode: dict[str, list] = {}
    for context, settings, _ in contexts(summary, ["noise"]):
        for mode in sorted({dims(s)["mode"] for s in settings} - {None}):
            pts = [(dims(s)["noise"], s["metrics"]["accuracy"]) for s in settings if dims(s)["mode"] in (mode, None)]
            pts = [p for p in pts if p[0] is not None]
            if len({x for x, _ in pts}) >= 2:
                by_mode.setdefault(mode, []).append(_line(context, pts))
    return [
        {"title": f"{mode} label noise", "x_label": "label noise (%)", "mode": mode, "lines": lines}
        for mode, lines in by_mode.items()
    ]


def _line(context: dict, pts: list) -> dict:
    pts = sorted(pts, key=lambda p: p[0])
    scaled = lambda v: None if v is None else PCT * v  # noqa: E731
    return {
        "label": context_text(context) or "this study",
        "context": context,
        "x": [p for p, _ in pts],
        "y": [scaled(m["mean"]) for _, m in pts],
        "lo": [scaled(m["ci"][0]) if m.get("ci") else None for _, m in pts],
        "hi": [scaled(m["ci"][1]) if m.get("ci") else None for _, m in pts],
        "n": [m["n"] for _, m in pts],
    }


def _noise_section(summary: dict) -> Section | None:

    panels = noise_curves(summary)
    if not panels:
        return None
    ref = reference_curves()["noise"]
    drawn = []
    for p in panels:
        top = max(x for ln in p["lines"] for x in ln["x"])  # the paper's curves over the study's range only
        refs = [
            {"label": f"paper K={k}, Aff-Wild2", "x": [x for x, _ in v if x <= top], "y": [y for x, y in v if x <= top]}
            for k, v in ref.items()
        ]
        drawn.append({**p, "lines": p["lines"] + [{**r, "reference": True} for r in refs]})
    fig = ci_curves_figure(drawn)
    text = (
        "Corrected accuracy on the clean test split against the noise of the labels the runs trained on "
        "(clean = 0 %), mean over seeds with its 95 % t-interval as a band; dashed grey: the paper's "
        "Table 7 on Aff-Wild2 (another dataset: compare shapes, not levels)."
    )
    fig_ = SectionFigure("accuracy-vs-noise", fig, caption="Accuracy against label noise, 95 % bands over seeds")
    return Section("Accuracy against label noise", text=text, figures=[fig_], data={"panels": panels}, id="noise")
