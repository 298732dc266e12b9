"""Figures of a GReFEL report (seaborn on matplotlib), one function per figure.

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot, so nothing here
changes the caller's backend or global style: each function applies the seaborn style only while
it draws. Classes keep one colour and one order (the checkpoint's class order) in every figure:
:func:`class_palette`.

Paper counterparts: Fig. 4 (:func:`confusion_figure`), Fig. 5 (:func:`tsne_figure`), Fig. 7
(:func:`wrong_shares_figure`), Fig. 9 (:func:`distributions_figure`). A study's report (and the
comparison of several runs) adds :func:`forest_figure` (paired differences with
their intervals) and :func:`ci_curves_figure` (means with confidence bands).
"""

from __future__ import annotations

import base64
import functools
import io
import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from grefel.core.io import atomic_path
from grefel.evaluation.metrics import row_normalize
from grefel.inference.draw import class_palette

PRIMARY_LABEL = "primary (without RB)"
CORRECTED_LABEL = "corrected (with RB)"
DPI = 110


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw under seaborn's style without touching the global rcParams."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
            return fn(*args, **kwargs)

    return wrapper


def _color_ticks(labels, colors) -> None:
    for t, c in zip(labels, colors):
        t.set_color(c)
        t.set_fontweight("bold")


@_styled
def confusion_figure(cm_primary: np.ndarray, cm_corrected: np.ndarray, classes: Sequence[str]) -> Figure:
    """Fig. 4: confusion matrices without / with reliability balancing, counts and row-normalised."""

    c = len(classes)
    size = max(3.2, 0.55 * c + 1.2)
    fig = Figure(figsize=(2 * size + 0.6, 2 * size), layout="constrained")
    axes = fig.subplots(2, 2)
    colors = class_palette(classes)
    for col, (cm, name) in enumerate(((cm_primary, PRIMARY_LABEL), (cm_corrected, CORRECTED_LABEL))):
        cm = np.asarray(cm)
        for row, (mat, fmt, kind) in enumerate(((cm, "d", "counts"), (row_normalize(cm), ".2f", "row-normalised"))):
            ax = axes[row, col]
            sns.heatmap(
                mat,
                ax=ax,
                annot=c <= 12,
                fmt=fmt,
                cmap="Blues",
                cbar=False,
                square=True,
                xticklabels=classes,
                yticklabels=classes,
                vmin=0,
                vmax=1 if kind != "counts" else None,
                annot_kws={"fontsize": 7 if c > 8 else 8},
            )
            ax.set_title(f"{name}, {kind}")
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.tick_params(axis="x", labelrotation=45)
            ax.tick_params(axis="y", labelrotation=0)
            _color_ticks(ax.get_xticklabels(), colors)
            _color_ticks(ax.get_yticklabels(), colors)
    return fig


@_styled
def distributions_figure(
    primary: np.ndarray,
    corrected: np.ndarray,
    y_true: np.ndarray,
    classes: Sequence[str],
    titles: Sequence[str],
    images: np.ndarray | None = None,
    ncols: int = 2,
) -> Figure:
    """Fig. 9: primary (PD) and corrected (CD) distribution of each sample, true class marked.

    One bar panel per sample (optionally with the face beside it). PD bars are pale and hatched,
    CD bars solid, both in the class colour; the true class carries a star and a bold label.
    """
    n = len(primary)
    c = len(classes)
    colors = class_palette(classes)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    per = 2 if images is not None else 1
    width_ratios = ([1, 3.2] if images is not None else [1]) * ncols
    fig = Figure(figsize=(ncols * (4.6 + 1.4 * (per - 1)) * max(1.0, c / 8), 2.6 * nrows), layout="constrained")
    gs = fig.add_gridspec(nrows, ncols * per, width_ratios=width_ratios)
    x = np.arange(c)
    for k in range(n):
        r, q = divmod(k, ncols)
        if images is not None:
            iax = fig.add_subplot(gs[r, q * per])
            iax.imshow(images[k])
            iax.set_axis_off()
        ax = fig.add_subplot(gs[r, q * per + per - 1])
        ax.bar(
            x - 0.2,
            primary[k],
            width=0.4,
            color=colors,
            alpha=0.45,
            hatch="//",
            edgecolor="0.35",
            linewidth=0.5,
            label="PD",
        )
        ax.bar(x + 0.2, corrected[k], width=0.4, color=colors, edgecolor="0.15", linewidth=0.5, label="CD")
        t = int(y_true[k])
        top = max(float(np.max(primary[k])), float(np.max(corrected[k])))
        if 0 <= t < c:
            ax.plot([t], [top * 1.12 + 0.02], marker="*", markersize=11, color="black", linestyle="none")
        ax.set_ylim(0, top * 1.25 + 0.05)
        ax.set_xticks(x, classes, rotation=40, ha="right", fontsize=7)
        for i, lab in enumerate(ax.get_xticklabels()):
            lab.set_color(colors[i])
            if i == t:
                lab.set_fontweight("bold")
        ax.set_title(titles[k], fontsize=8)
        ax.set_ylabel("probability", fontsize=7)
        if k == 0:
            ax.legend(fontsize=7, loc="upper right", frameon=False)
    return fig


@_styled
def tsne_figure(xy: np.ndarray, y: np.ndarray, classes: Sequence[str], scores: dict | None = None) -> Figure:
    """Fig. 5: t-SNE of the embeddings coloured by true class, with cluster scores in the title."""
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    names = np.asarray(classes, dtype=object)[np.asarray(y, dtype=np.int64)]
    sns.scatterplot(
        x=xy[:, 0],
        y=xy[:, 1],
        hue=names,
        hue_order=list(classes),
        palette=class_palette(classes),
        s=10,
        alpha=0.75,
        linewidth=0,
        ax=ax,
    )
    title = "t-SNE of embeddings (true class)"
    if scores and scores.get("davies_bouldin") is not None:
        title += (
            f"\nDavies-Bouldin {scores['davies_bouldin']:.3f} (lower is better), "
            f"Calinski-Harabasz {scores['calinski_harabasz']:.1f} (higher is better)"
        )
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


@_styled
def wrong_shares_figure(
    shares_primary: Sequence[float],
    shares_corrected: Sequence[float],
    classes: Sequence[str],
    n_wrong: Sequence[int] = (0, 0),
) -> Figure:
    """Fig. 7: each true class's share of all wrong predictions, without and with reliability balancing."""
    fig = Figure(figsize=(max(7.0, 0.9 * len(classes) * 2), 3.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colors = class_palette(classes)
    for ax, shares, name, nw in zip(
        axes, (shares_primary, shares_corrected), (PRIMARY_LABEL, CORRECTED_LABEL), n_wrong
    ):
        pct = 100 * np.asarray(shares, dtype=float)
        sns.barplot(
            x=list(classes),
            y=pct,
            hue=list(classes),
            palette=colors,
            legend=False,
            ax=ax,
            order=list(classes),
            hue_order=list(classes),
        )
        for i, v in enumerate(pct):
            ax.text(i, v + 0.5, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_title(f"{name}: {nw} wrong", fontsize=9)
        ax.set_ylabel("% of wrong predictions")
        ax.tick_params(axis="x", labelrotation=40)
        _color_ticks(ax.get_xticklabels(), colors)
    return fig


@_styled
def reliability_figure(cal_primary: dict, cal_corrected: dict) -> Figure:
    """Reliability diagrams: accuracy vs mean confidence per bin of the top probability, with ECE."""
    fig = Figure(figsize=(8.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, cal, name in zip(axes, (cal_primary, cal_corrected), (PRIMARY_LABEL, CORRECTED_LABEL)):
        edges = np.asarray(cal["edges"])
        centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        acc = np.array([np.nan if v is None else v for v in cal["accuracy"]], dtype=float)
        conf = np.array([np.nan if v is None else v for v in cal["confidence"]], dtype=float)
        has = ~np.isnan(acc)
        ax.bar(
            centers[has], acc[has], width=width[has], color=sns.color_palette()[0], edgecolor="white", label="accuracy"
        )
        ax.bar(
            centers[has],
            conf[has] - acc[has],
            bottom=acc[has],
            width=width[has],
            color="none",
            edgecolor="C3",
            hatch="//",
            linewidth=0.6,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], color="0.3", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_title(f"{name}\nECE = {cal['ece']:.4f}", fontsize=9)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left", frameon=False)
    return fig


@_styled
def group_accuracy_figure(per_attribute: dict) -> Figure:
    """Accuracy per group of each attribute (RAF-DB gender, race, age), without and with RB.

    ``per_attribute``: ``{attribute: {"primary": group_accuracy(...), "corrected": group_accuracy(...)}}``.
    """
    names = list(per_attribute)
    fig = Figure(figsize=(max(4.0, 3.6 * len(names)), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(names)), sharey=True))
    pal = sns.color_palette("Set2", 2)
    for ax, attr in zip(axes, names):
        rows = []
        for kind, label in (("primary", PRIMARY_LABEL), ("corrected", CORRECTED_LABEL)):
            for g in per_attribute[attr][kind]["groups"]:
                rows.append(
                    {"group": f"{g['name']}\n(n={g['n']})", "accuracy": 100 * g["accuracy"], "prediction": label}
                )
        if rows:
            import pandas as pd

            sns.barplot(data=pd.DataFrame(rows), x="group", y="accuracy", hue="prediction", palette=pal, ax=ax)
            ax.legend(fontsize=7, loc="lower right", frameon=True)
        gap = per_attribute[attr]["corrected"].get("gap")
        gap_txt = (
            f"largest gap {100 * gap['value']:.1f} pts ({gap['best']} vs {gap['worst']})" if gap else "one group only"
        )
        ax.set_title(f"{attr}: {gap_txt}", fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.tick_params(axis="x", labelsize=7)
    return fig


VERDICT_COLORS = {  # the rest (not significant, exploratory ...) grey
    "significant": "#1b7837",
    "not enough seeds": "#b8860b",
    "one run against one run: an anecdote, no interval": "#b8860b",
}


@_styled
def forest_figure(rows: Sequence[dict], title: str, x_label: str = "difference (points)") -> Figure:
    """Paired differences with their confidence intervals, one row each, and a line at 0.

    ``rows``: ``[{"label", "diff", "ci": [low, high] or None, "note", "verdict"}]``, top to bottom;
    ``note`` is printed at the right of the row (the test, n, adjusted p, verdict), ``verdict``
    picks the colour (:data:`VERDICT_COLORS`).
    """
    n = max(1, len(rows))
    fig = Figure(figsize=(9.5, 0.9 + 0.42 * n), layout="constrained")
    ax = fig.subplots()
    ys = np.arange(n)[::-1]
    for y, r in zip(ys, rows):
        color = VERDICT_COLORS.get(r.get("verdict"), "0.25")
        if r.get("diff") is None:
            continue
        if r.get("ci"):
            lo, hi = r["ci"]
            ax.plot([lo, hi], [y, y], color=color, linewidth=2)
        ax.plot([r["diff"]], [y], marker="s", markersize=6, color=color, linestyle="none")
    ax.axvline(0, color="0.5", linestyle="--", linewidth=1)
    ax.set_yticks(ys, [r["label"] for r in rows], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    right = ax.secondary_yaxis("right")
    right.set_yticks(ys, [r.get("note", "") for r in rows], fontsize=7)
    right.tick_params(length=0)
    ax.set_xlabel(x_label)
    wrapped = "\n".join(textwrap.fill(line, 110) for line in title.split("\n"))
    fig.suptitle(wrapped, fontsize=9)  # over the whole figure: a long title stays inside it
    ax.grid(axis="y", visible=False)
    return fig


@_styled
def ci_curves_figure(panels: Sequence[dict]) -> Figure:
    """Means against a setting with their confidence bands, one panel each.

    ``panels``: ``[{"title", "x_label", "y_label", "zero", "lines": [{"label", "x", "y", "lo", "hi", "reference"}]}]``;
    ``lo``/``hi`` (None where a point has no interval) shade the band; reference lines (the
    paper's numbers) are dashed grey without a band; ``zero`` draws the line y = 0.
    """
    n = max(1, len(panels))
    fig = Figure(figsize=(5.2 * n, 3.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, panel in zip(axes, panels):
        own = [ln for ln in panel["lines"] if not ln.get("reference")]
        pal = sns.color_palette("colorblind", max(1, len(own)))
        k = 0
        for ln in panel["lines"]:
            if ln.get("reference"):
                ax.plot(ln["x"], ln["y"], linestyle="--", marker=".", color="0.6", linewidth=1, label=ln["label"])
                continue
            x = np.asarray(ln["x"], dtype=float)
            ax.plot(x, ln["y"], marker="o", color=pal[k], linewidth=1.6, label=ln["label"])
            lo = np.array([np.nan if v is None else v for v in ln.get("lo") or [None] * len(x)], dtype=float)
            hi = np.array([np.nan if v is None else v for v in ln.get("hi") or [None] * len(x)], dtype=float)
            has = ~np.isnan(lo) & ~np.isnan(hi)
            if has.any():
                ax.fill_between(x, lo, hi, where=has, color=pal[k], alpha=0.2, linewidth=0)
            k += 1
        if panel.get("zero"):
            ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel(panel["x_label"])
        ax.set_ylabel(panel.get("y_label", "accuracy (%)"))
        ax.legend(fontsize=7, frameon=False)
    return fig


def save_figure(fig: Figure, stem: str | os.PathLike) -> dict:
    """Write ``stem.png`` and ``stem.svg`` (atomically); return their paths and the PNG as a data URI."""
    stem = Path(stem)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    png = buf.getvalue()
    with atomic_path(stem.with_suffix(".png")) as tmp:
        tmp.write_bytes(png)
    panels = len(fig.axes)
    fig.set_layout_engine("none")  # keep the layout the PNG got: constrained layout is the slow part
    with atomic_path(stem.with_suffix(".svg")) as tmp, matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(tmp, format="svg")  # text stays text: smaller, faster, editable
    return {
        "png": stem.with_suffix(".png"),
        "svg": stem.with_suffix(".svg"),
        "data_uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "panels": panels,
    }


@_styled
def method_error_shares_figure(panels: Sequence[dict], classes: Sequence[str]) -> Figure:
    """Fig. 8 per method: each true class's share of all wrong predictions, one bar per method and class.

    ``panels``: ``[{"title", "methods": {method: shares (one per class, summing to 1)}}]``, one panel each.
    """
    fig = Figure(figsize=(max(7.0, 0.75 * len(classes) * 2), 3.2 * len(panels)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(panels), 1, squeeze=False)[:, 0])
    for ax, panel in zip(axes, panels):
        methods = list(panel["methods"])
        width = 0.8 / max(len(methods), 1)
        x = np.arange(len(classes))
        for k, m in enumerate(methods):
            pct = 100 * np.asarray(panel["methods"][m], dtype=float)
            ax.bar(x + (k - (len(methods) - 1) / 2) * width, pct, width, label=m)
        ax.set_xticks(x, list(classes), rotation=30)
        ax.set_ylabel("% of wrong predictions")
        ax.set_title(panel["title"], fontsize=9)
        ax.legend(fontsize=7, ncol=len(methods))
    return fig
