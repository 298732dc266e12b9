"""A study's numbers in the layout of the paper's Tables 2, 3, 5, 6, 7 and 8, beside the paper's.

Every number is taken from the study's summary (:func:`grefel.study.stats.summarize_study`): per setting
the mean, the 95 % t-interval and the seeds over which they were computed; per comparison the
paired difference, its interval, the test and the Holm-adjusted p. Nothing is computed here but
the layout.

A table is built where the study's grid covers it, that is where the table's own setting varies
between the study's settings with everything else equal:

==========  =====================================================  =======================
table       varies                                                 rows x columns
==========  =====================================================  =======================
Table 2     reliability balancing (``reliability``)                setup x accuracy, F1
Table 3     the loss terms in use (``lambda_cls/anchor/center``)   loss x accuracy, F1
Table 5     augmentation on / off; 0 % and 10 % label noise        model x setting
Table 6     anchors per class K (``num_anchors``)                  accuracy, change x K
Table 7     label noise (the label set's noise rate), per K        K x noise %
Table 8     label smoothing (term T = 100 eps), per K              K x T
==========  =====================================================  =======================

The grid's other axes make one table each of their values ("context"): a study of K on clean and
noisy labels gets one Table 6 per label set. Settings a study leaves unset take TrainConfig's
defaults (the paper's recipe). The paper's numbers are Aff-Wild2 single runs (accuracy in %, F1):
compare shapes, not levels, on another dataset.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from grefel.report.paper import paper_value
from grefel.study.stats import ALPHA
from grefel.training.config import TrainConfig

PCT = 100.0
RB_ROWS = {"none": "Without RB", "anchors": "Anchors", "mhsa": "MHSA", "both": "Both"}  # Table 2's row names
LOSS_TERMS = (("lambda_cls", "L_cls"), ("lambda_anchor", "L_a"), ("lambda_center", "L_c"))
LOSS_ORDER = ("L_cls", "L_a", "L_c", "L_cls+L_a", "L_cls+L_c", "L_a+L_c", "L_cls+L_a+L_c")
# the TrainConfig fields each table dimension is read from (to tell a grid axis that moves it)
DIM_FIELDS = {
    "rb": {"reliability"},
    "loss": {"lambda_cls", "lambda_anchor", "lambda_center"},
    "K": {"num_anchors"},
    "noise": {"labels"},
    "T": {"label_smoothing"},
    "augment": {"augment"},
}


@lru_cache(maxsize=1)
def _defaults() -> dict:

    return dataclasses.asdict(TrainConfig())


def dims(setting: dict) -> dict:
    """The table dimensions of one summary setting: rb, loss, K, noise (%), mode, T, augment."""
    eff = {**_defaults(), **setting["settings"]}
    ls = setting.get("label_set") or {}
    noise = ls.get("noise")
    return {
        "rb": eff["reliability"],
        "loss": "+".join(t for f, t in LOSS_TERMS if float(eff[f]) > 0) or "none",
        "K": _anchors(eff["reliability"], eff["num_anchors"]),
        "noise": None if noise is None else round(PCT * float(noise), 4),
        "mode": ls.get("mode"),
        "T": round(PCT * float(eff["label_smoothing"]), 4),
        "augment": bool(eff["augment"]),
    }


# -- which grid axes move which settings ---------------------------------------------------------
def axis_fields(summary: dict) -> dict[str, set]:
    """For each grid axis, the settings that change along it (other axes held equal)."""
    names = [a["name"] for a in summary["axes"]]
    out = {}
    for a in names:
        groups: dict[tuple, list[dict]] = {}
        for s in summary["settings"]:
            key = tuple(s["cell"][b] for b in names if b != a)
            groups.setdefault(key, []).append(s["settings"])
        fields = set()
        for group in groups.values():
            keys = set().union(*(g.keys() for g in group))
            fields |= {k for k in keys if len({repr(g.get(k)) for g in group}) > 1}
        out[a] = fields
    return out


def _anchors(reliability: str, num_anchors) -> int | None:
    """A run's K in the paper's Tables 6-8: 0 for the MHSA without anchors (``mhsa``, the paper's K = 0),
    None without reliability balancing (``none``: Table 2's "Without RB" row, no K), else ``num_anchors``."""
    return {"mhsa": 0, "none": None}.get(reliability, int(num_anchors))


def contexts(summary: dict, table_dims: list[str]) -> list[tuple[dict, list[dict], list[str]]]:
    """Settings grouped by the grid axes that do not move ``table_dims``: ``[(context, settings,
    table axes)]``, the context being ``{axis: value}`` of those other axes."""
    fields = set().union(*(DIM_FIELDS[d] for d in table_dims))
    moved = axis_fields(summary)
    table_axes = [a["name"] for a in summary["axes"] if moved[a["name"]] & fields]
    others = [a["name"] for a in summary["axes"] if a["name"] not in table_axes]
    groups: dict[tuple, list[dict]] = {}
    for s in summary["settings"]:
        groups.setdefault(tuple(s["cell"][o] for o in others), []).append(s)
    return [(dict(zip(others, key)), group, table_axes) for key, group in groups.items()]


def paired_for(summary: dict, setting: dict, axis: str, metric: str = "accuracy") -> dict | None:
    """The comparison of ``setting`` against its baseline along ``axis`` (None for the baseline itself)."""
    value = setting["cell"].get(axis)
    context = {k: v for k, v in setting["cell"].items() if k != axis}
    for c in summary["comparisons"]:
        if c["metric"] == metric and c["axis"] == axis and c["value"] == value and c["context"] == context:
            return c
    return None


# -- formatting -----------------------------------------------------------------------------------
PLUS_MINUS = "± = half-width of the 95 % t-interval over the n seeds; sd = standard deviation over seeds"


def fmt_stat(m: dict | None, scale: float = PCT, digits: int = 1) -> str:
    """``mean ± half-width of the 95 % CI (n seeds)``; ``–`` without a finished run."""
    if not m or m.get("mean") is None:
        return "–"
    mean = scale * m["mean"]
    if m.get("ci"):
        half = scale * (m["ci"][1] - m["ci"][0]) / 2
        return f"{mean:.{digits}f} ± {half:.{digits}f} (n {m['n']})"
    return f"{mean:.{digits}f} (n {m['n']})"


def fmt_paper(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_p(p: float | None, alpha: float = ALPHA) -> str:
    """A p-value with 3 decimals, or more where 3 would put it on the other side of ``alpha`` than
    its verdict (0.0496 is "0.0496", not "0.050"; 0.0504 is "0.050", which is not below 0.05)."""
    if p is None:
        return "–"
    if p < 0.001:
        return "<0.001"
    for digits in range(3, 12):
        text = f"{p:.{digits}f}"
        if (float(text) < alpha) == (p < alpha):
            return text
    return repr(p)


def fmt_diff(c: dict, scale: float = PCT) -> str:
    """A comparison's mean paired difference and its unadjusted 95 % interval: ``+1.2 [-0.4, +2.8]``."""
    if c.get("diff_mean") is None:
        return "–"
    ci = f" [{scale * c['ci'][0]:+.1f}, {scale * c['ci'][1]:+.1f}]" if c.get("ci") else ""
    return f"{scale * c['diff_mean']:+.1f}{ci}"


def fmt_verdict_ci(c: dict, scale: float = PCT) -> str:
    """The interval beside a comparison's verdict, with its kind: ``[-0.4, +2.8] Holm 98.3 %`` or
    ``[-0.4, +2.8] unadjusted 95 %``; ``–`` without one."""
    ci = c.get("ci_verdict", c.get("ci"))
    if not ci:
        return "–"
    kind = c.get("ci_verdict_kind", "unadjusted")
    level = f"{100 * c.get('ci_verdict_confidence', 0.95):.1f}".removesuffix(".0")
    return f"[{scale * ci[0]:+.1f}, {scale * ci[1]:+.1f}] {kind} {level} %"


def fmt_p_verdict(c: dict) -> str:
    """The p a verdict rests on, named: ``Holm p 0.330`` or ``p 0.012 (unadjusted)``."""
    if c.get("adjusted", True):
        return f"Holm p {fmt_p(c.get('p_holm'))}"
    return f"p {fmt_p(c.get('p'))} (unadjusted)"


def fmt_paired(c: dict | None, scale: float = PCT) -> str:
    """``+1.2 [-0.4, +2.8] Holm 95 %, paired t Holm p 0.330, not significant (n 3)``; ``baseline`` for None."""
    if c is None:
        return "baseline"
    if c.get("diff_mean") is None:
        return f"{c['verdict']} (n {c['n']})"
    if c["n"] < 2:
        return f"{scale * c['diff_mean']:+.1f}, {c['verdict']} (n {c['n']})"
    est = f"{scale * c['diff_mean']:+.1f} {fmt_verdict_ci(c, scale)}"
    return f"{est}, {c['test']} {fmt_p_verdict(c)}, {c['verdict']} (n {c['n']})"


def context_text(context: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in context.items())


def _stat(m: dict | None) -> dict | None:
    """The numbers of one cell for report.json."""
    if not m:
        return None
    return {k: m.get(k) for k in ("n", "mean", "std", "ci", "ci_kind", "seeds", "values")}


PAIRED_KEYS = (
    "axis",
    "value",
    "baseline",
    "context",
    "n",
    "diff_mean",
    "diff_std",
    "ci",
    "test",
    "p",
    "p_holm",
    "family",
    "adjusted",
    "ci_verdict",
    "ci_verdict_kind",
    "ci_verdict_confidence",
    "mde",
    "verdict",
)


def _paired_data(c: dict | None) -> dict | None:
    if c is None:
        return None
    return {k: c.get(k) for k in PAIRED_KEYS}


# -- the tables -------------------------------------------------------------------------------------
def study_tables(summary: dict) -> list[dict]:
    """Every paper table the study covers, each ``{"layout", "title", "context", "columns", "rows",
    "note", "data"}``: ``rows`` of display strings for the page, ``data`` the numbers behind them."""
    out = []
    for build in (_table2, _table3, _table5, _table6, _table7, _table8):
        out += build(summary)
    return out


def _setup_table(summary: dict, dim: str, layout: str, paper: str, order, row_name) -> list[dict]:
    """Tables 2 and 3: one row per setup, accuracy and F1 beside the paper's, paired change."""
    out = []
    for context, settings, axes in contexts(summary, [dim]):
        by = {dims(s)[dim]: s for s in settings}
        if len(by) < 2 or len(axes) != 1:
            continue
        rows, data = [], []
        for key in sorted(by, key=lambda k: order.index(k) if k in order else len(order)):
            s, name = by[key], row_name(key)
            acc, f1 = s["metrics"]["accuracy"], s["metrics"]["macro_f1"]
            pa, pf = paper_value(paper, name, "accuracy"), paper_value(paper, name, "F1")
            c = paired_for(summary, s, axes[0])
            rows.append([name, fmt_stat(acc), fmt_paper(pa), fmt_stat(f1, 1, 3), fmt_paper(pf, 3), fmt_paired(c)])
            data.append(
                {
                    "row": name,
                    "setting": s["name"],
                    "accuracy": _stat(acc),
                    "paper_accuracy": pa,
                    "macro_f1": _stat(f1),
                    "paper_f1": pf,
                    "paired": _paired_data(c),
                }
            )
        columns = [
            "setup",
            "accuracy %",
            "paper",
            "macro F1",
            "paper F1",
            f"paired change vs {_baseline(summary, axes[0])}",
        ]
        out.append(_table(layout, context, columns, rows, data))
    return out


def _table2(summary: dict) -> list[dict]:
    return _setup_table(summary, "rb", "Table 2", "T2", list(RB_ROWS), lambda k: RB_ROWS.get(k, k))


def _table3(summary: dict) -> list[dict]:
    return _setup_table(summary, "loss", "Table 3", "T3", LOSS_ORDER, lambda k: k)


def _table5(summary: dict) -> list[dict]:
    """Table 5: with / without augmentation, and 10 % / 0 % label noise, under the paper's rows."""
    out = []
    for context, settings, axes in contexts(summary, ["augment"]):
        by = {dims(s)["augment"]: s for s in settings}
        if set(by) == {True, False}:
            cols = [("with augmentation", by[True]), ("without augmentation", by[False])]
            out.append(_table5_part(summary, context, axes, cols, ("POSTER++", "GReFEL")))
    for context, settings, axes in contexts(summary, ["noise"]):
        for mode in sorted({dims(s)["mode"] for s in settings} - {None}):
            by = {dims(s)["noise"]: s for s in settings if dims(s)["mode"] in (mode, None)}
            if 10.0 in by and 0.0 in by:
                cols = [("10% noise", by[10.0]), ("0% noise", by[0.0])]
                out.append(_table5_part(summary, {**context, "noise": mode}, axes, cols, ("EAC", "GReFEL")))
    return out


def _table5_part(summary, context, axes, cols, models) -> dict:
    rows = [[f"{m} (paper)", *(fmt_paper(paper_value("T5", m, c)) for c, _ in cols), ""] for m in models]
    c = paired_for(summary, cols[1][1], axes[0]) if len(axes) == 1 else None
    c = c or (paired_for(summary, cols[0][1], axes[0]) if len(axes) == 1 else None)
    rows.append(["this study", *(fmt_stat(s["metrics"]["accuracy"]) for _, s in cols), fmt_paired(c) if c else ""])
    data = {
        "paper": {m: {col: paper_value("T5", m, col) for col, _ in cols} for m in models},
        "study": {col: {"setting": s["name"], "accuracy": _stat(s["metrics"]["accuracy"])} for col, s in cols},
        "paired": _paired_data(c),
    }
    columns = ["model", *(col for col, _ in cols), "paired change (this study)"]
    return _table("Table 5", context, columns, rows, [data])


def _table6(summary: dict) -> list[dict]:
    """Table 6: accuracy per K, and the paired change against the baseline K (the paper: vs K = 0)."""
    out = []
    for context, settings, axes in contexts(summary, ["K"]):
        by = {dims(s)["K"]: s for s in settings if dims(s)["K"] is not None}
        if len(by) < 2:
            continue
        ks = sorted(by)
        pairs = [paired_for(summary, by[k], axes[0]) if len(axes) == 1 else None for k in ks]
        paper = [paper_value("T6", f"K={k}", "accuracy") for k in ks]
        base = paper_value("T6", "K=0", "accuracy")
        rows = [
            ["accuracy % (this study)", *(fmt_stat(by[k]["metrics"]["accuracy"]) for k in ks)],
            ["accuracy % (paper)", *(fmt_paper(v) for v in paper)],
            [f"paired change vs {_baseline(summary, axes[0])} (this study)", *(fmt_paired(c) for c in pairs)],
            ["change vs K=0 (paper)", *("–" if v is None else f"{v - base:+.2f}" for v in paper)],
        ]
        data = [
            {"K": k, "setting": by[k]["name"], "accuracy": _stat(by[k]["metrics"]["accuracy"]), "paper": p}
            | {"paired": _paired_data(c)}
            for k, p, c in zip(ks, paper, pairs)
        ]
        out.append(_table("Table 6", context, ["K", *map(str, ks)], rows, data))
    return out


def _grid_table(summary: dict, layout: str, dim: str, paper: str, column) -> list[dict]:
    """Tables 7 and 8: rows K (this study, then the paper's row), columns the values of ``dim``."""
    out = []
    for context, settings, _ in contexts(summary, ["K", dim]):
        modes = sorted({dims(s)["mode"] for s in settings} - {None}) if dim == "noise" else [None]
        for mode in modes or [None]:
            group = [s for s in settings if dim != "noise" or dims(s)["mode"] in (mode, None)]
            group = [s for s in group if dims(s)["K"] is not None]  # runs without RB have no K
            cells = {(dims(s)["K"], dims(s)[dim]): s for s in group}
            values = sorted({v for _, v in cells if v is not None})
            if len(values) < 2:
                continue
            rows, data = [], []
            for k in sorted({k for k, _ in cells}):
                study = [cells.get((k, v)) for v in values]
                ref = [paper_value(paper, f"K={k}", column(v)) for v in values]
                rows.append([f"K={k} (this study)", *(fmt_stat(s["metrics"]["accuracy"]) if s else "–" for s in study)])
                rows.append([f"K={k} (paper)", *(fmt_paper(v) for v in ref)])
                for v, s, p in zip(values, study, ref):
                    data.append(
                        {
                            "K": k,
                            dim: v,
                            "setting": s and s["name"],
                            "accuracy": s and _stat(s["metrics"]["accuracy"]),
                            "paper": p,
                        }
                    )
            ctx = {**context, "noise": mode} if mode else context
            out.append(_table(layout, ctx, ["K", *(f"{v:g}" for v in values)], rows, data))
    return out


def _table7(summary: dict) -> list[dict]:
    return _grid_table(summary, "Table 7", "noise", "T7", lambda v: f"noise {v:g}")


def _table8(summary: dict) -> list[dict]:
    return _grid_table(summary, "Table 8", "T", "T8", lambda v: f"smoothing {v:g}")


TITLES = {
    "Table 2": "Table 2 layout: reliability balancing setups",
    "Table 3": "Table 3 layout: loss setups",
    "Table 5": "Table 5 layout: augmentation and label noise",
    "Table 6": "Table 6 layout: anchors per class K",
    "Table 7": "Table 7 layout: K against label noise (%)",
    "Table 8": "Table 8 layout: K against the label-smoothing term T (eps = T/100)",
}


def _table(layout: str, context: dict, columns: list, rows: list, data: list) -> dict:
    title = TITLES[layout] + (f" ({context_text(context)})" if context else "")
    note = PLUS_MINUS + "; the paper's numbers are single runs"
    return {
        "layout": layout,
        "title": title,
        "context": context,
        "columns": columns,
        "rows": rows,
        "data": data,
        "note": note,
    }


def _baseline(summary: dict, axis: str) -> str:
    a = next(a for a in summary["axes"] if a["name"] == axis)
    return f"{axis} {a['baseline']}"
