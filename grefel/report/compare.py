"""Several runs side by side, in the layout of the paper's Tables 6-8.

Each run's settings are read from what it recorded: the number of anchors K and reliability
balancing from its model configuration, label smoothing from its training configuration, and the
label-noise rate from the attributes of the label set it trained on (``grefel corrupt``). Settings
that vary across the runs decide the layout:

- K varies alone: Table 6 (accuracy per K, and the change against the smallest K);
- K and noise vary: Table 7 (rows K, columns noise rate);
- K and label smoothing vary: Table 8 (rows K, columns smoothing term);
- anything else that varies is listed in the summary table.

Runs that share every setting (e.g. seeds) are averaged in the pivot tables; the summary keeps each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from grefel.report.paper import reference_curves

SETTING_LABELS = {
    "num_anchors": "K",
    "noise": "noise (%)",
    "label_smoothing": "label smoothing",
    "reliability": "reliability balancing",
}


def _find(d: Any, names: Iterable[str]) -> Any:
    """First value under any of ``names`` in a nested dict (depth-first), else None."""
    names = tuple(names)
    if isinstance(d, dict):
        for n in names:
            if n in d and not isinstance(d[n], dict):
                return d[n]
        for v in d.values():
            found = _find(v, names)
            if found is not None:
                return found
    return None


def run_settings(meta: dict) -> dict:
    """K, noise rate (percent), label smoothing and reliability balancing of one predictions file."""
    model_cfg, cfg, built = meta.get("model_config") or {}, meta.get("config") or {}, meta.get("model") or {}
    k = built.get("num_anchors")  # what the evaluated model really had (presets fill model_config's gaps)
    if k is None:
        k = _find(model_cfg, ("num_anchors", "anchors_per_class"))
    if k is None:
        k = _find(cfg, ("num_anchors", "anchors_per_class"))
    # the noise the run trained with ({} when the evaluated copy of the dataset lacks that label set)
    info = meta["train_label_set_info"] if "train_label_set_info" in meta else (meta.get("label_set_info") or {})
    noise = _find(info, ("noise", "noise_rate", "rate"))
    if noise is None:
        noise = _find(cfg, ("noise", "noise_rate", "label_noise"))
    if noise is not None:
        noise = float(noise)
        noise = noise * 100 if noise <= 1 else noise
    ls = _find(cfg, ("label_smoothing", "smoothing"))
    rb = built.get("reliability")
    if rb is None:
        rb = _find(model_cfg, ("reliability", "reliability_balancing"))
    if rb is None:
        rb = _find(cfg, ("reliability", "reliability_balancing"))
    return {
        "num_anchors": None if k is None else int(k),
        "noise": None if noise is None else round(noise, 4),
        "label_smoothing": None if ls is None else float(ls),
        "reliability": rb if rb is None or isinstance(rb, (bool, str)) else bool(rb),
    }


def compare_runs(runs: list[dict]) -> dict:
    """Tables and curves for runs ``[{"name", "settings", "accuracy_primary", "accuracy_corrected", "macro_f1"}]``.

    Accuracies are fractions in; tables and curves show percent, like the paper.
    """
    varying = [s for s in SETTING_LABELS if len({_key(r["settings"].get(s)) for r in runs}) > 1]
    summary = [
        {
            "name": r["name"],
            **{s: r["settings"].get(s) for s in SETTING_LABELS},
            "accuracy_primary": 100 * r["accuracy_primary"],
            "accuracy_corrected": 100 * r["accuracy_corrected"],
            "macro_f1": r["macro_f1"],
            "n": r.get("n"),
        }
        for r in runs
    ]
    tables, curves = [], []
    k_varies = "num_anchors" in varying
    for other, title in (
        ("noise", "Table 7 layout: K vs label noise (%), accuracy (%) with RB"),
        ("label_smoothing", "Table 8 layout: K vs label smoothing, accuracy (%) with RB"),
    ):
        if other in varying:
            tables.append(_pivot(runs, "num_anchors", other, title))
            curves.append(
                _curve(runs, x=other, line="num_anchors", title=title.split(":")[0], x_label=SETTING_LABELS[other])
            )
    if k_varies and not any(o in varying for o in ("noise", "label_smoothing")):
        tables.append(_table6(runs))
        curves.append(_curve(runs, x="num_anchors", line=None, title="Table 6 layout", x_label="K (anchors per class)"))
    _add_references(curves)
    return {"varying": varying, "summary": summary, "tables": tables, "curves": curves}


def _key(v):
    return "None" if v is None else str(v)


def _cells(runs, row: str | None, col: str) -> dict:
    cells: dict = {}
    for r in runs:
        rk = r["settings"].get(row) if row else "accuracy"
        cells.setdefault((_key(rk), _key(r["settings"].get(col))), []).append(100 * r["accuracy_corrected"])
    return {k: float(np.mean(v)) for k, v in cells.items()}


def _sorted_values(runs, name) -> list:
    vals = {r["settings"].get(name) for r in runs}
    return sorted(vals, key=lambda v: (v is None, v if isinstance(v, (int, float)) else str(v)))


def _pivot(runs, row: str, col: str, title: str) -> dict:
    rows, cols = _sorted_values(runs, row), _sorted_values(runs, col)
    cells = _cells(runs, row, col)
    return {
        "title": title,
        "row_label": SETTING_LABELS[row],
        "columns": [_key(c) for c in cols],
        "rows": [{"label": _key(r), "values": [cells.get((_key(r), _key(c))) for c in cols]} for r in rows],
    }


def _table6(runs) -> dict:
    ks = _sorted_values(runs, "num_anchors")
    cells = _cells(runs, None, "num_anchors")
    acc = [cells.get(("accuracy", _key(k))) for k in ks]
    base = acc[0]
    delta = [None if (a is None or base is None) else a - base for a in acc]
    return {
        "title": "Table 6 layout: anchors per class K vs accuracy (%) with RB; "
        "second row: change against the smallest K",
        "row_label": "K",
        "columns": [_key(k) for k in ks],
        "rows": [
            {"label": "accuracy (%)", "values": acc},
            {"label": f"change vs K={_key(ks[0])}", "values": delta, "signed": True},
        ],
    }


def _curve(runs, x: str, line: str | None, title: str, x_label: str) -> dict:
    lines = []
    for lv in _sorted_values(runs, line) if line else [None]:
        pts: dict = {}
        for r in runs:
            if line and r["settings"].get(line) != lv:
                continue
            xv = r["settings"].get(x)
            if xv is None:
                continue
            pts.setdefault(float(xv) if not isinstance(xv, str) else xv, []).append(100 * r["accuracy_corrected"])
        if pts:
            xs = sorted(pts)
            lines.append(
                {
                    "label": f"K={_key(lv)}" if line else "this study",
                    "x": xs,
                    "y": [float(np.mean(pts[v])) for v in xs],
                    "line_value": lv,
                }
            )
    return {"title": title, "x_label": x_label, "x": x, "line": line, "lines": lines}


def _add_references(curves: list[dict]) -> None:
    """Dashed paper curves (Aff-Wild2, Tables 6-7) where the panel's axes match the paper's."""
    ref = reference_curves()
    for c in curves:
        if c["x"] == "num_anchors" and ref["anchors"]:
            xs, ys = zip(*ref["anchors"])
            c["lines"].append({"label": "paper, Aff-Wild2", "x": list(xs), "y": list(ys), "reference": True})
        elif c["x"] == "noise":
            for k, pts in ref["noise"].items():
                xs, ys = zip(*pts)
                c["lines"].append({"label": f"paper K={k}, Aff-Wild2", "x": list(xs), "y": list(ys), "reference": True})
