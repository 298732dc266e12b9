"""A study's HTML report: the single-run report of :mod:`grefel.report` with the study's sections first.

:func:`study_report` reads a study folder (nothing but the folder: paths in it are relative, so a
moved or copied folder reports the same) and writes one self-contained page; :func:`study_sections`
makes the same sections for any study summary, such as the ad-hoc study of runs given to `grefel
report` (:mod:`grefel.study.pipeline`):

1. **Study** (for runs given to `grefel report`: **Comparison of runs**): what ran, what varied per
   replicate and what stayed fixed, every run with its state (a failed run with its error and log,
   also listed at the top of the page), and per setting the mean ± half-width of its 95 %
   t-interval, the sd and n seeds;
2. **Paper tables**: Tables 2, 3, 5, 6, 7 and 8 in the paper's layout where the grid covers them
   (:mod:`grefel.study.tables`), each cell mean ± CI half-width and n, beside the paper's number;
3. **Paired comparisons**: a forest plot per grid axis (reliability balancing first) of the paired
   differences with the interval each verdict rests on, the test, the p it rests on and the MDE,
   and the table of every comparison and metric;
4. **Accuracy against label noise**, one line per setting with its 95 % band, where the grid holds
   two noise levels or more, and **reliability balancing's effect against label noise**: the paired
   difference RB on - off (or K against K = 0) with its 95 % interval at each noise level, beside
   the paper's Table 7 difference K = 10 - K = 0;
5. the per-run sections of the existing report for one run per setting (its lowest finished seed),
   all runs, or none.

Every number is :func:`grefel.study.stats.summarize`'s; ``report.json`` keeps the summary (per
setting and per comparison: n, mean, CI, the test, p, Holm p, the verdict's interval, MDE, Wilcoxon,
and McNemar per seed pair, which no table shows) under the first section's ``data``, and each
table's numbers under its own.
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
from grefel.report.paper import reference_curves, table7_effect
from grefel.study.noisy_bench import grefel_only, noisy_bench_section
from grefel.study.stats import summarize_study
from grefel.study.tables import (
    PCT,
    PLUS_MINUS,
    axis_fields,
    context_text,
    contexts,
    dims,
    fmt_diff,
    fmt_p,
    fmt_p_verdict,
    fmt_verdict_ci,
    study_tables,
)

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
    sections += filter(None, [_noise_section(summary), _effect_section(summary)])
    return sections


# -- 1. the study ---------------------------------------------------------------------------------
def _overview(summary: dict) -> Section:

    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items() if v)
    axes = "; ".join(f"{a['name']}: {', '.join(a['values'])} (baseline {a['baseline']})" for a in summary["axes"])
    common = (
        "Every figure is computed over the seeds whose run finished (n); ± is the half-width of the 95 % "
        "t-interval of the mean over seeds (scipy.stats.t, not a bootstrap), sd the standard deviation over "
        "seeds. Metrics on the evaluated split, in percent. "
    ) + (summary.get("replicates") or {}).get("text", "")
    if summary.get("kind") == "ad hoc":
        text = (
            f"The {len(summary['runs'])} runs given, read as an ad-hoc study: each run's settings come from the "
            "training configuration its predictions file records, the settings that differ between runs are the "
            f"axes ({axes or 'none: the runs differ only in their seed'}), and the training seed it records is "
            f"the replicate (seeds {summary['seeds']}). " + common
        )
        title, sid = "Comparison of runs", "comparison"
    else:
        text = (
            f"Study '{summary['study']}' on dataset {summary['dataset']}: {len(summary['runs'])} runs ({counts}); "
            f"seeds {summary['seeds']}; grid {axes or 'none'}. " + common
        )
        title, sid = "Study", "study"
    settings = Table(
        [
            "setting",
            "label set",
            "n / planned",
            "accuracy ± 95 % CI",
            "sd",
            "95 % CI",
            "primary accuracy ±",
            "macro F1 ±",
        ]
        + ["seeds"],
        [_setting_row(s) for s in summary["settings"]],
        title="Per setting: mean ± half-width of the 95 % t-interval over seeds; sd over seeds",
        note="accuracy: corrected distribution (eq. 19, with RB); primary: eq. 9 (without RB). " + PLUS_MINUS + ".",
    )
    runs = Table(
        ["run", "seed", "state", "accuracy", "primary accuracy", "note"],
        [_run_row(r) for r in summary["runs"]],
        title="Runs",
    )
    return Section(title, text=text, tables=[settings, runs], data={"summary": summary}, id=sid)


def _mean_ci(m: dict, scale: float = PCT, digits: int = 1) -> str:
    """``mean ± half-width of the 95 % t-interval``."""
    if m.get("mean") is None:
        return "–"
    half = f" ± {scale * (m['ci'][1] - m['ci'][0]) / 2:.{digits}f}" if m.get("ci") else ""
    return f"{scale * m['mean']:.{digits}f}{half}"


def _setting_row(s: dict) -> list:
    m = s["metrics"]
    ci, sd = m["accuracy"].get("ci"), m["accuracy"].get("std")
    label_set = s["label_set"]["name"] + (" (drawn per seed)" if s["label_set"].get("per_seed") else "")
    return [
        s["name"],
        label_set,
        f"{m['accuracy']['n']} / {s['planned_seeds']}",
        _mean_ci(m["accuracy"]),
        "–" if sd is None else f"{PCT * sd:.1f}",
        "–" if not ci else f"{PCT * ci[0]:.1f} – {PCT * ci[1]:.1f}",
        _mean_ci(m["accuracy_primary"]),
        _mean_ci(m["macro_f1"], 1, 3),
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
        "The settings in the layout of the paper's ablation tables. Each cell: corrected accuracy (or macro "
        "F1) on the evaluated split (a study's: the clean test split), mean ± half-width of the 95 % "
        "t-interval over the n seeds in brackets; beside or below it the paper's number (Aff-Wild2, one run "
        "each, so another dataset: compare shapes, not levels). Paired changes: mean difference over the "
        "same seeds with the interval its verdict rests on (Holm: at its Holm step's level; unadjusted: the "
        "plain 95 % interval, for exploratory comparisons), the paired t-test across seeds and its p (see the "
        "comparisons below). One seed pair is one run against one run: an anecdote, no interval."
    )
    page = [Table(t["columns"], t["rows"], title=t["title"], note=t.get("note", "")) for t in tables]
    data = {"tables": [{k: t[k] for k in ("layout", "title", "context", "columns", "data")} for t in tables]}
    return Section("Paper tables", text=text, tables=page, data=data, id="paper-tables")


# -- 3. paired comparisons -----------------------------------------------------------------------
def _axis_order(summary: dict) -> list[dict]:
    """Grid axes with comparisons, reliability balancing first."""
    axes = [a for a in summary["axes"] if any(c["axis"] == a["name"] for c in summary["comparisons"])]
    return sorted(axes, key=lambda a: a["field"] != "reliability")


def forest_rows(summary: dict, axis: str, metric: str = "accuracy") -> list[dict]:
    """One row of the forest plot per comparison along ``axis``: the mean paired difference, the
    interval its verdict rests on, and a note with n, that interval's kind, the p, the MDE and the verdict."""
    rows = []
    for c in summary["comparisons"]:
        if c["axis"] != axis or c["metric"] != metric:
            continue
        where = context_text(c["context"])
        diff = None if c["diff_mean"] is None else PCT * c["diff_mean"]
        ci = c.get("ci_verdict", c.get("ci"))
        ci = [PCT * ci[0], PCT * ci[1]] if ci else None
        if c["n"] < 2:
            note = f"{'–' if diff is None else f'{diff:+.1f}'}  n={c['n']}  {c['verdict']}"
        else:
            mde = "" if c.get("mde") is None else f"  MDE {PCT * c['mde']:.1f}"
            note = f"{fmt_verdict_ci(c)}  n={c['n']}  {c['test']}, {fmt_p_verdict(c)}{mde}  {c['verdict']}"
        label = f"{c['value']} vs {c['baseline']}" + (f" | {where}" if where else "")
        rows.append({"label": label, "diff": diff, "ci": ci, "note": note, "verdict": c["verdict"]})
    return rows


def _comparisons_section(summary: dict) -> Section:

    figures = []
    for a in _axis_order(summary):
        what = "reliability balancing" if a["field"] == "reliability" else a["name"]
        title = f"Paired effect of {what} on accuracy (points), with the interval of its verdict;\n" + _family_text(
            summary, a["name"]
        )
        fig = forest_figure(forest_rows(summary, a["name"]), title, "difference in accuracy (points)")
        figures.append(
            SectionFigure(f"forest-{a['name']}", fig, caption=f"{a['name']}: each value against {a['baseline']}")
        )
    table = Table(
        ["metric", "comparison", "where", "n", "difference [unadjusted 95 % CI]", "sd", "interval of the verdict"]
        + ["p", "Holm p", "MDE", "Wilcoxon p (method)", "verdict"],
        [_comparison_row(c) for c in summary["comparisons"]],
        title="Every comparison",
        note="difference: value minus baseline over the same seeds, points (macro F1: x100), with its unadjusted 95 % "
        "t-interval; interval of the verdict: at the level of the comparison's Holm step (it excludes 0 exactly "
        "when the verdict is significant), or the unadjusted 95 % one for exploratory comparisons; p: paired t-test "
        "across seeds, two-sided; MDE: the true difference these seeds detect with 80 % power (alpha 0.05); "
        "Wilcoxon signed-rank p as a check, with the method scipy ran (cannot reach 0.05 with fewer than 6 seeds).",
    )
    text = (
        "Each grid value against its axis's baseline, every other axis equal, seed s against seed s. "
        f"{_family_text(summary)} The verdict is 'significant' when the Holm-adjusted p is below 0.05; "
        "with fewer than 3 paired seeds it is 'not enough seeds' (one pair: an anecdote), never significant. "
        "Per seed pair, McNemar's test on the same test images (in report.json) tells whether those two trained "
        "models differ; it is not evidence about the setting."
    )
    methods = summary["methods"]
    return Section(
        "Paired comparisons", text=text, tables=[table], figures=figures, data={"methods": methods}, id="comparisons"
    )


def _family_text(summary: dict, axis: str | None = None) -> str:
    """Which comparisons Holm corrects together, in words."""
    primary = summary.get("primary") or []
    acc = [c for c in summary["comparisons"] if c["metric"] == "accuracy"]
    family = max((c.get("holm_family", 0) for c in acc if c.get("adjusted", True)), default=0)
    if not primary:
        return f"Holm-adjusted over the {family} accuracy comparison(s) with at least 3 seeds."
    if axis is not None and axis not in primary:
        return "exploratory (not a primary comparison): p unadjusted, interval the unadjusted 95 % one."
    return (
        f"Holm-adjusted over the {family} primary comparison(s) ({', '.join(primary)}) with at least 3 seeds; "
        "every other comparison is exploratory: p unadjusted, labelled so."
    )


def _comparison_row(c: dict) -> list:
    wilcoxon = fmt_p(c.get("wilcoxon_p")) + (f" ({c['wilcoxon_method']})" if c.get("wilcoxon_method") else "")
    return [
        METRIC_NAMES.get(c["metric"], c["metric"]),
        f"{c['axis']} {c['value']} vs {c['baseline']}",
        context_text(c["context"]) or "–",
        c["n"],
        fmt_diff(c),
        "–" if c.get("diff_std") is None else f"{PCT * c['diff_std']:.1f}",
        fmt_verdict_ci(c) if c["n"] >= 2 else "–",
        fmt_p(c.get("p")),
        fmt_p(c.get("p_holm")) if c.get("adjusted", True) else "– (exploratory)",
        "–" if c.get("mde") is None else f"{PCT * c['mde']:.1f}",
        wilcoxon,
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
    label = context_text(context) or "these runs"
    if max(m["n"] for _, m in pts) < 2:
        label += " (one run per point: no interval)"
    return {
        "label": label,
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
        "(clean = 0 %), mean over seeds with its 95 % t-interval as a band (a point of one run has none: an "
        "anecdote); dashed grey: the paper's Table 7 on Aff-Wild2 (another dataset: compare shapes, not levels)."
    )
    fig_ = SectionFigure("accuracy-vs-noise", fig, caption="Accuracy against label noise, 95 % bands over seeds")
    return Section("Accuracy against label noise", text=text, figures=[fig_], data={"panels": panels}, id="noise")


# -- 4b. reliability balancing's effect against noise --------------------------------------------------
EFFECT_FIELDS = {"reliability", "num_anchors"}  # an axis moving these compares RB setups (Tables 2, 6, 7)


def effect_curves(summary: dict) -> list[dict]:
    """Panels (one per noise mode) of lines (one per comparison along an axis that moves
    :data:`EFFECT_FIELDS`, value against its baseline, per value of the other axes; clean labels
    count as 0 % in every mode): noise %, paired difference of corrected accuracy in points, its
    95 % interval, n seed pairs."""
    settings = {tuple(sorted(x["cell"].items())): x for x in summary["settings"]}
    rb_axes = {a for a, fields in axis_fields(summary).items() if fields & EFFECT_FIELDS}
    points: dict[tuple, list] = {}  # (axis, value, baseline, other axes) -> [(mode, noise %, comparison)]
    for c in summary["comparisons"]:
        if c["metric"] != "accuracy" or c["axis"] not in rb_axes or c.get("diff_mean") is None:
            continue
        d = dims(settings[tuple(sorted({**c["context"], c["axis"]: c["value"]}.items()))])
        if d["noise"] is not None:
            others = tuple(sorted((k, v) for k, v in c["context"].items() if k != "labels"))
            points.setdefault((c["axis"], c["value"], c["baseline"], others), []).append((d["mode"], d["noise"], c))
    modes = sorted({m for pts in points.values() for m, _, _ in pts} - {None})
    panels = []
    for mode in modes:
        lines = []
        for (axis, value, baseline, others), pts in points.items():
            own = sorted(((x, c) for m, x, c in pts if m in (mode, None)), key=lambda p: p[0])
            if len({x for x, _ in own}) >= 2:
                lines.append(_effect_line(axis, value, baseline, dict(others), own))
        if lines:
            title = f"{mode} label noise"
            panels.append(
                {"title": title, "x_label": "label noise (%)", "y_label": "difference (points)", "lines": lines}
            )
    return panels


def _effect_line(axis: str, value, baseline, others: dict, pts: list) -> dict:
    label = f"{axis} {value} - {baseline}"
    label += f" ({context_text(others)})" if others else ""
    return {
        "label": label,
        "x": [x for x, _ in pts],
        "y": [PCT * c["diff_mean"] for _, c in pts],
        "lo": [PCT * c["ci"][0] if c.get("ci") else None for _, c in pts],
        "hi": [PCT * c["ci"][1] if c.get("ci") else None for _, c in pts],
        "n": [c["n"] for _, c in pts],
    }


def paper_effect_curve(top: float) -> dict:
    """The paper's Table 7 effect, accuracy at K = 10 minus K = 0 against noise (Aff-Wild2), up to ``top`` %."""
    effect = {x: y for x, y in table7_effect().items() if x <= top}
    return {"label": "paper K=10 - K=0, Aff-Wild2", "x": list(effect), "y": list(effect.values()), "reference": True}


def _effect_section(summary: dict) -> Section | None:
    panels = effect_curves(summary)
    if not panels:
        return None
    drawn = []
    for p in panels:
        top = max(x for ln in p["lines"] for x in ln["x"])
        drawn.append({**p, "lines": [*p["lines"], paper_effect_curve(top)], "zero": True})
    text = (
        "The paired difference of corrected accuracy on the clean test split (runs with reliability balancing, "
        "or K anchors, minus the baseline run of the same seed) against the noise of the labels the runs trained "
        "on (clean = 0 %), mean over seed pairs with its 95 % t-interval as a band; dashed grey: the paper's "
        "Table 7 difference, K = 10 minus K = 0, on Aff-Wild2 (one run per cell in the paper, no interval)."
    )
    fig = SectionFigure(
        "effect-vs-noise", ci_curves_figure(drawn), caption="Reliability balancing's effect against label noise"
    )
    return Section(
        "Reliability balancing's effect against label noise",
        text=text,
        figures=[fig],
        data={"panels": panels},
        id="effect",
    )
