"""The noisy-label bench in a study's report: GReFEL against EAC, SCN, RUL and CE over noise levels and seeds.

Where a study's grid varies the training ``method`` (``[grid] method = ["grefel", "eac", ...]``, or a
named axis whose setups set it), the report adds one section (:func:`noisy_bench_section`):

1. **the noisy-RAF-DB table**: one row per method, one column per noise level of the label sets
   the runs trained on (clean = 0 %), each cell the mean accuracy on the clean test split ± the
   half-width of its 95 % t-interval over the seeds (n), with the number the method's own paper
   published for that level beside it where one could be read and cited
   (``reports/noisy-rafdb-published.csv``; every other cell says "not confirmed" and is compared
   with nothing). Published numbers are RAF-DB's: on another dataset the column stays empty.
2. **paired differences against GReFEL**: per method and level, the mean over seeds of (method -
   GReFEL) with its 95 % interval, the paired test and the Holm-adjusted p, as the study's
   comparison engine computed them (:mod:`grefel.study.stats`).
3. **Fig. 8 per method**: each true class's share of all wrong predictions on the clean test split
   (the paper's Fig. 8 shows SCN's), averaged over the seeds, one panel per noise level.

Kept apart from the report's other sections: it reads the study summary and the runs' predictions only.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np

from grefel.evaluation.metrics import wrong_prediction_shares
from grefel.evaluation.predictions import read_predictions_meta
from grefel.report.figures import method_error_shares_figure
from grefel.report.page import Section, SectionFigure, Table
from grefel.study.stats import read_outcomes

_PCT = 100.0
METHOD_NAMES = {"grefel": "GReFEL", "eac": "EAC", "scn": "SCN", "rul": "RUL", "ce": "CE baseline"}
NOT_CONFIRMED = "not confirmed"


@lru_cache(maxsize=1)
def published_noisy_rafdb() -> dict[tuple[str, float], dict]:
    """(method, noise %) -> ``{"value", "backbone", "source"}`` of reports/noisy-rafdb-published.csv."""
    text = files("grefel.report_assets").joinpath("noisy-rafdb-published.csv").read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return {
        (r["method"], float(r["noise"])): {"value": float(r["value"]), "backbone": r["backbone"], "source": r["source"]}
        for r in csv.DictReader(io.StringIO("\n".join(lines)))
    }


def method_of(setting: dict) -> str:
    return setting["settings"].get("method") or "grefel"


def grefel_only(summary: dict) -> dict:
    """The summary with GReFEL's settings only: the paper's ablation tables are GReFEL's, and a
    baseline's unused GReFEL settings (its label smoothing, say) must not read as an ablation."""
    return {**summary, "settings": [s for s in summary["settings"] if method_of(s) == "grefel"]}


def noise_of(setting: dict) -> float | None:
    noise = (setting.get("label_set") or {}).get("noise")
    return None if noise is None else round(_PCT * float(noise), 4)


def _method_axes(summary: dict) -> list[str]:
    """Grid axes along which the method changes (every other axis equal)."""
    out = []
    for a in summary["axes"]:
        seen: dict[tuple, set] = {}
        for s in summary["settings"]:
            rest = tuple(v for k, v in s["cell"].items() if k != a["name"])
            seen.setdefault(rest, set()).add(method_of(s))
        if any(len(m) > 1 for m in seen.values()):
            out.append(a["name"])
    return out


def _contexts(summary: dict, skip: set[str]) -> dict[tuple, list[dict]]:
    """Settings grouped by the cell values of the axes that move neither the method nor the labels."""
    groups: dict[tuple, list[dict]] = {}
    for s in summary["settings"]:
        key = tuple((k, v) for k, v in s["cell"].items() if k not in skip)
        groups.setdefault(key, []).append(s)
    return groups


def _cell(m: dict) -> str:
    if not m or m.get("mean") is None:
        return "–"
    half = f" ± {_PCT * (m['ci'][1] - m['ci'][0]) / 2:.1f}" if m.get("ci") else ""
    return f"{_PCT * m['mean']:.1f}{half} (n {m['n']})"


def _published(method: str, level: float, on_rafdb: bool) -> tuple[str, dict | None]:
    if not on_rafdb:
        return "–", None
    ref = published_noisy_rafdb().get((method, level))
    return (f"{ref['value']:.2f}", ref) if ref else (NOT_CONFIRMED, None)


def bench_table(summary: dict) -> list[dict]:
    """One table per context: rows methods, columns noise levels with the published number beside each cell."""
    axes = _method_axes(summary)
    if not axes:
        return []
    label_axes = {a["name"] for a in summary["axes"] if a["field"] == "labels"}
    on_rafdb = "rafdb" in str(summary.get("dataset") or "").lower()
    out = []
    for key, settings in _contexts(summary, set(axes) | label_axes).items():
        levels = sorted({noise_of(s) for s in settings} - {None})
        methods = sorted({method_of(s) for s in settings}, key=lambda m: list(METHOD_NAMES).index(m))
        columns = ["method"] + [c for lv in levels for c in (f"{lv:g} % noise", "published")]
        rows, data, cited = [], [], {}
        for m in methods:
            row = [METHOD_NAMES.get(m, m)]
            for lv in levels:
                s = next((s for s in settings if method_of(s) == m and noise_of(s) == lv), None)
                acc = s["metrics"]["accuracy"] if s else {}
                shown, ref = _published(m, lv, on_rafdb)
                row += [_cell(acc), shown]
                if ref:
                    cited[f"{METHOD_NAMES.get(m, m)} {lv:g} %"] = f"{ref['backbone']}: {ref['source']}"
                data.append({"method": m, "noise": lv, "accuracy": acc or None, "published": ref})
            rows.append(row)
        context = ", ".join(f"{k} {v}" for k, v in key)
        out.append({"context": context, "columns": columns, "rows": rows, "data": data, "cited": cited})
    return out


def paired_rows(summary: dict) -> list[list]:
    """Each method against GReFEL, per noise level and context: the study's paired comparisons."""
    axes = set(_method_axes(summary))
    by_cell = {tuple(sorted(s["cell"].items())): s for s in summary["settings"]}
    rows = []
    for c in summary["comparisons"]:
        if c["axis"] not in axes or c["metric"] != "accuracy":
            continue
        cell = tuple(sorted({**c["context"], c["axis"]: c["value"]}.items()))
        base = tuple(sorted({**c["context"], c["axis"]: c["baseline"]}.items()))
        s, b = by_cell.get(cell), by_cell.get(base)
        if s is None or b is None or method_of(b) != "grefel":
            continue
        diff = "–" if c.get("diff_mean") is None else f"{_PCT * c['diff_mean']:+.1f}"
        if c.get("ci") and c.get("diff_mean") is not None:
            diff += f" [{_PCT * c['ci'][0]:+.1f}, {_PCT * c['ci'][1]:+.1f}]"
        holm = c.get("p_holm")
        rows.append(
            [
                METHOD_NAMES.get(method_of(s), method_of(s)),
                "–" if noise_of(s) is None else f"{noise_of(s):g} %",
                ", ".join(f"{k} {v}" for k, v in c["context"].items() if k != c["axis"]) or "–",
                c["n"],
                diff,
                "–" if holm is None else ("<0.001" if holm < 0.001 else f"{holm:.3f}"),
                c["verdict"],
            ]
        )
    return rows


def error_shares(summary: dict, study_dir: Path) -> tuple[list[dict], list[str]]:
    """Fig. 8 numbers: per noise level, per method, the mean over finished seeds of each true class's share of
    the wrong predictions (from the runs' predictions files)."""
    by_cell = {tuple(sorted(s["cell"].items())): s for s in summary["settings"]}
    shares: dict[float | None, dict[str, list]] = {}
    classes: list[str] = []
    for r in summary["runs"]:
        s = by_cell.get(tuple(sorted(r["cell"].items())))
        if s is None or r["state"] != "done" or not r.get("predictions"):
            continue
        path = study_dir / r["predictions"]
        df = read_outcomes(path)
        if not classes:
            classes = list(read_predictions_meta(path)["classes"])
        w = wrong_prediction_shares(df["label"].to_numpy(), df["pred_corrected"].to_numpy(), len(classes))
        shares.setdefault(noise_of(s), {}).setdefault(method_of(s), []).append(w["by_true_class"])
    panels = []
    for level in sorted(shares, key=lambda v: -1 if v is None else v):
        methods = sorted(shares[level], key=lambda m: list(METHOD_NAMES).index(m))
        panel = {METHOD_NAMES.get(m, m): np.mean(shares[level][m], axis=0).tolist() for m in methods}
        n = {METHOD_NAMES.get(m, m): len(shares[level][m]) for m in methods}
        title = "label noise unknown" if level is None else f"{level:g} % label noise"
        panels.append(
            {"title": f"{title}: mean over seeds ({', '.join(f'{k} n {v}' for k, v in n.items())})", "methods": panel}
        )
    return panels, classes


def noisy_bench_section(summary: dict, study_dir: str | Path) -> Section | None:
    """The section (see the module docstring), or None when the study does not vary the method."""
    tables = bench_table(summary)
    if not tables:
        return None
    page = []
    for t in tables:
        cited = "; ".join(f"{k}: {v}" for k, v in t["cited"].items())
        note = (
            "Cells: accuracy (%) of the corrected distribution on the clean test split, mean ± half-width of the "
            "95 % t-interval over seeds (n). 'published': the method's own paper on RAF-DB with the published "
            f"list of that level; '{NOT_CONFIRMED}': no citable source was found, so nothing is compared with it."
            + (f" Sources: {cited}." if cited else "")
        )
        title = "Noisy RAF-DB layout: method x label noise" + (f" ({t['context']})" if t["context"] else "")
        page.append(Table(t["columns"], t["rows"], title=title, note=note))
    rows = paired_rows(summary)
    if rows:
        page.append(
            Table(
                ["method", "noise", "where", "n", "method - GReFEL (points) [95 % CI]", "Holm p", "verdict"],
                rows,
                title="Paired differences against GReFEL, seed by seed",
                note="The study's paired comparisons (each method against GReFEL on the same label set and seeds).",
            )
        )
    panels, classes = error_shares(summary, Path(study_dir))
    figures = []
    if panels:
        fig = method_error_shares_figure(panels, classes)
        caption = "Fig. 8 per method: each true class's share of all wrong test predictions, mean over seeds"
        figures.append(SectionFigure("error-shares-by-method", fig, caption=caption))
    text = (
        "GReFEL and the noisy-label baselines trained in the same harness (same prepared faces, label sets, "
        "seeds, sampling and evaluation). Baselines report one distribution: their accuracy is that of their "
        "own classifier."
    )
    data = {"tables": [{k: t[k] for k in ("context", "columns", "data")} for t in tables], "fig8": panels}
    return Section("Noisy-label bench", text=text, tables=page, figures=figures, data=data, id="noisy-bench")
