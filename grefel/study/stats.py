"""The statistics of a study, from scipy.stats and statsmodels, as JSON-able dicts.

For every setting (a grid cell, over its seeds) and metric: the number of seeds n, mean, standard
deviation (ddof 1) and a 95 % **t-interval** for the mean over seeds. Not a bootstrap: with the 3-10
seeds a study affords, resampling seeds gives intervals that are too narrow and jump between
reruns; the t-interval is the exact interval for normal seed-to-seed variation, and accuracy over
hundreds of test images varies close to normally.

For every comparison of a grid value against its axis's baseline (reliability balancing on vs off
with the same seed and label set, K vs the smallest K, noisy vs clean labels, any value vs the
first listed), all other axes held equal:

* the paired difference (value minus baseline) over the seeds both have, its mean, standard
  deviation and 95 % t-interval;
* a **paired t-test** across seeds (``scipy.stats.ttest_rel``, two-sided) decides. Why not the
  Wilcoxon signed-rank test: it uses only the signs and ranks of the differences, so with n pairs
  its smallest two-sided p is 2 / 2^n: it cannot reach p < 0.05 with fewer than 6 pairs, whatever
  the effect. Its p (``scipy.stats.wilcoxon``, exact) is given beside the t-test's as a check that
  does not assume normal differences;
* **McNemar's test** per seed on the same test images (``statsmodels`` ``mcnemar``): the images one
  run gets right and the other wrong. Exact (binomial) when fewer than 25 images differ, else the
  chi-square statistic with continuity correction. It asks whether *these two trained models*
  differ, not whether the setting does: seeds, not images, carry the setting's uncertainty;
* **Holm's correction** over all comparisons of a metric that have enough seeds
  (``statsmodels.stats.multitest.multipletests``, method "holm"); the verdict uses the adjusted p
  at alpha 0.05.

A comparison with fewer than 3 paired seeds is reported as "not enough seeds", never as significant,
and is left out of the Holm family. Every figure carries its number of seeds.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from pathlib import Path

import numpy as np

from grefel.core.errors import GrefelError
from grefel.core.io import writable_file, write_json
from grefel.evaluation.metrics import classification_metrics
from grefel.evaluation.predictions import read_predictions_meta
from grefel.study.folder import SUMMARY_JSON, load_plan, study_files, study_states

ALPHA = 0.05
CONFIDENCE = 0.95
MIN_SEEDS = 3
WILCOXON_MIN_PAIRS = 6  # below this the signed-rank test cannot reach p < 0.05 (two-sided)
MCNEMAR_EXACT_BELOW = 25  # discordant images: exact binomial test below, chi-square at or above
METRICS = {
    "accuracy": "accuracy of the corrected distribution (eq. 19) on the clean test split",
    "accuracy_primary": "accuracy of the primary distribution (eq. 9) on the clean test split",
    "macro_f1": "macro F1 of the corrected distribution on the clean test split",
}
PER_IMAGE = {"accuracy": "pred_corrected", "accuracy_primary": "pred_primary"}  # metrics McNemar applies to
METHODS = {
    "setting_ci": "95 % t-interval of the mean over seeds (scipy.stats.t), std with ddof 1",
    "difference_ci": "95 % t-interval of the mean paired difference over seeds (scipy.stats.ttest_rel)",
    "paired_test": "paired t-test across seeds, two-sided (scipy.stats.ttest_rel); decides the verdict",
    "wilcoxon": "Wilcoxon signed-rank across seeds, exact, two-sided (scipy.stats.wilcoxon); a check only: "
    "cannot reach p < 0.05 with fewer than 6 pairs",
    "mcnemar": "McNemar per seed on the same test images (statsmodels mcnemar): exact binomial when fewer "
    "than 25 images differ, else chi-square with continuity correction",
    "multiplicity": "Holm over all comparisons of one metric with at least 3 seeds "
    "(statsmodels multipletests, method 'holm')",
    "alpha": ALPHA,
    "min_seeds": MIN_SEEDS,
}


# -- one run -------------------------------------------------------------------------------------
def read_outcomes(path: str | os.PathLike):
    """Per test image of a predictions file: index, clean label, both predictions (labelled images only)."""
    import pandas as pd

    try:
        df = pd.read_parquet(path, columns=["index", "label", "pred_primary", "pred_corrected"])
    except (OSError, ValueError, KeyError) as e:
        raise GrefelError(f"cannot read predictions {path} ({str(e)[:120]}): evaluate the run again") from None
    return df[df["label"] >= 0].set_index("index").sort_index()


def run_metrics(path: str | os.PathLike) -> dict:
    """The metrics of one run from its predictions file (those of the HTML report)."""

    df = read_outcomes(path)
    k = len(read_predictions_meta(path)["classes"])
    y = df["label"].to_numpy()
    corrected = classification_metrics(y, df["pred_corrected"].to_numpy(), k)
    primary = classification_metrics(y, df["pred_primary"].to_numpy(), k)
    return {
        "n": corrected["n"],
        "accuracy": corrected["accuracy"],
        "accuracy_primary": primary["accuracy"],
        "macro_f1": corrected["macro_f1"],
        "balanced_accuracy": corrected["balanced_accuracy"],
    }


# -- the tests -------------------------------------------------------------------------------------
def _f(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def describe(values) -> dict:
    """n, mean, std (ddof 1), and the 95 % t-interval of the mean of ``values`` (one per seed)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    out = {"n": n, "mean": _f(x.mean()) if n else None, "std": None, "ci": None, "ci_kind": "t"}
    if n >= 2:
        std = float(x.std(ddof=1))
        out["std"] = std
        if std > 0:
            lo, hi = stats.t.interval(CONFIDENCE, n - 1, loc=x.mean(), scale=std / math.sqrt(n))
        else:
            lo = hi = float(x.mean())
        out["ci"] = [float(lo), float(hi)]
    return out


def paired(values, baseline) -> dict:
    """Paired difference ``values - baseline`` (one pair per seed): mean, std, 95 % CI, paired t-test
    and, as a check, the Wilcoxon signed-rank test."""
    from scipy import stats

    a, b = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    d = a - b
    n = len(d)
    out = {
        "n": n,
        "diff_mean": _f(d.mean()) if n else None,
        "diff_std": None,
        "ci": None,
        "test": "paired t",
        "t": None,
        "df": n - 1 if n >= 2 else None,
        "p": None,
        "wilcoxon_p": None,
        "wilcoxon_note": None,
    }
    if n < 2:
        return out
    out["diff_std"] = float(d.std(ddof=1))
    if out["diff_std"] <= 1e-12 * max(1.0, abs(float(d.mean()))):  # every seed moved by the same amount
        out["ci"] = [float(d.mean())] * 2
        out["p_note"] = "no variation between seeds: the t-test is undefined"
    else:
        res = stats.ttest_rel(a, b)
        ci = res.confidence_interval(CONFIDENCE)
        out.update(t=float(res.statistic), p=_f(res.pvalue), ci=[float(ci.low), float(ci.high)])
    if n < WILCOXON_MIN_PAIRS:
        out["wilcoxon_note"] = f"fewer than {WILCOXON_MIN_PAIRS} pairs: the signed-rank test cannot reach p < 0.05"
    if np.any(d != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["wilcoxon_p"] = _f(stats.wilcoxon(a, b).pvalue)
    return out


def mcnemar_test(correct, correct_baseline) -> dict:
    """McNemar's test on the same images: ``b`` right only here, ``c`` right only in the baseline."""
    from statsmodels.stats.contingency_tables import mcnemar

    x, y = np.asarray(correct, bool), np.asarray(correct_baseline, bool)
    table = [[int(np.sum(x & y)), int(np.sum(x & ~y))], [int(np.sum(~x & y)), int(np.sum(~x & ~y))]]
    b, c = table[0][1], table[1][0]
    exact = b + c < MCNEMAR_EXACT_BELOW
    if b + c == 0:
        return {"n": int(len(x)), "b": 0, "c": 0, "exact": True, "statistic": 0.0, "p": 1.0}
    res = mcnemar(table, exact=exact, correction=True)
    return {"n": int(len(x)), "b": b, "c": c, "exact": exact, "statistic": float(res.statistic), "p": float(res.pvalue)}


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (None stays None and is not part of the family)."""
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if idx:
        adjusted = multipletests([pvalues[i] for i in idx], alpha=ALPHA, method="holm")[1]
        for i, p in zip(idx, adjusted):
            out[i] = float(p)
    return out


def verdict(n: int, p_holm: float | None) -> str:
    if n < MIN_SEEDS:
        return "not enough seeds"
    if p_holm is None:
        return "no variation between seeds"
    return "significant" if p_holm < ALPHA else "not significant"


# -- the study ---------------------------------------------------------------------------------------
def summarize_study(study_dir: str | os.PathLike) -> dict:
    """Everything a table or report of the study needs, JSON-able (see the module docstring)."""

    study_dir = Path(study_dir)
    study = load_plan(study_dir)
    states = study_states(study_dir, study)
    done = {s.name: s for s in states if s.finished}
    outcomes = _Outcomes(study_dir, done)
    by_cell = {(tuple(r.cell.get(a.name) for a in study.axes), r.seed): r for r in study.runs if r.name in done}
    settings = [_setting(study, combo, by_cell, done) for combo in _cells(study)]
    comparisons = [c for m in METRICS for c in _comparisons(study, m, by_cell, done, outcomes)]
    counts = {
        k: sum(s.state == k for s in states) for k in ("done", "running", "failed", "queued", "stopped", "pending")
    }
    return {
        "format": "grefel-study-summary",
        "version": 1,
        "study": study.name,
        "dataset": study.dataset,
        "seeds": study.seeds,
        "counts": counts,
        "metrics": METRICS,
        "methods": METHODS,
        "axes": [
            {
                "name": a.name,
                "field": a.field,
                "values": [v.label for v in a.values],
                "parts": [v.part for v in a.values],
                "baseline": study.baselines.get(a.name),
            }
            for a in study.axes
        ],
        "settings": settings,
        "comparisons": comparisons,
        "runs": [
            {
                "name": s.name,
                "seed": s.seed,
                "cell": s.cell,
                "state": s.state,
                "metrics": s.metrics,
                "log": s.log,
                "error": s.error,
                "predictions": s.predictions,
            }
            for s in states
        ],
        "failed": [{"name": s.name, "log": s.log, "error": s.error} for s in states if s.state == "failed"],
    }


def _cells(study) -> list[tuple[str, ...]]:
    return list(itertools.product(*([v.label for v in a.values] for a in study.axes)))


def _label_set(study, settings: dict) -> dict:
    name = settings.get("labels", "clean")
    if name == "clean":
        return {"name": "clean", "noise": 0.0, "mode": None}
    spec = study.label_sets.get(name)
    return {"name": name, "noise": spec.noise if spec else None, "mode": spec.mode if spec else None}


def _setting(study, combo, by_cell, done) -> dict:
    runs = [by_cell[(combo, s)] for s in study.seeds if (combo, s) in by_cell]
    any_run = next((r for r in study.runs if tuple(r.cell.get(a.name) for a in study.axes) == combo), None)
    settings = {k: v for k, v in (any_run.settings if any_run else {}).items() if k != "seed"}
    metrics = {}
    for m in METRICS:
        values = [done[r.name].metrics.get(m) for r in runs]
        pairs = [(r.seed, v) for r, v in zip(runs, values) if v is not None]
        metrics[m] = {
            **describe([v for _, v in pairs]),
            "seeds": [s for s, _ in pairs],
            "values": [v for _, v in pairs],
        }
    return {
        "cell": dict(zip((a.name for a in study.axes), combo)),
        "name": "-".join(next(v.part for v in a.values if v.label == lab) for a, lab in zip(study.axes, combo))
        or "all",
        "settings": settings,
        "label_set": _label_set(study, settings),
        "planned_seeds": len(study.seeds),
        "metrics": metrics,
    }


class _Outcomes:
    """Per-image correctness of finished runs, read once per run."""

    def __init__(self, study_dir: Path, done: dict):
        self.study_dir, self.done, self.cache = study_dir, done, {}

    def __call__(self, name: str):
        if name not in self.cache:
            self.cache[name] = read_outcomes(self.study_dir / self.done[name].predictions)
        return self.cache[name]


def _comparisons(study, metric: str, by_cell, done, outcomes) -> list[dict]:
    out = []
    for i, axis in enumerate(study.axes):
        base = study.baselines.get(axis.name)
        others = [a for j, a in enumerate(study.axes) if j != i]
        for value in (v.label for v in axis.values if v.label != base):
            for ctx in itertools.product(*([v.label for v in a.values] for a in others)):
                out.append(_compare(study, metric, i, value, base, ctx, by_cell, done, outcomes))
    adjusted = holm([c["p"] if c["n"] >= MIN_SEEDS else None for c in out])
    for c, p in zip(out, adjusted):
        c["p_holm"] = p
        c["verdict"] = verdict(c["n"], p)
        c["holm_family"] = sum(x is not None for x in adjusted)
    return out


def _compare(study, metric, i, value, base, ctx, by_cell, done, outcomes) -> dict:
    def combo(label):
        return (*ctx[:i], label, *ctx[i:])

    seeds, a, b, mc = [], [], [], []
    for s in study.seeds:
        ra, rb = by_cell.get((combo(value), s)), by_cell.get((combo(base), s))
        if ra is None or rb is None:
            continue
        va, vb = done[ra.name].metrics.get(metric), done[rb.name].metrics.get(metric)
        if va is None or vb is None:
            continue
        seeds.append(s)
        a.append(va)
        b.append(vb)
        if metric in PER_IMAGE:
            col = PER_IMAGE[metric]
            oa, ob = outcomes(ra.name), outcomes(rb.name)
            common = oa.index.intersection(ob.index)
            ca = (oa.loc[common, col] == oa.loc[common, "label"]).to_numpy()
            cb = (ob.loc[common, col] == ob.loc[common, "label"]).to_numpy()
            mc.append({"seed": s, **mcnemar_test(ca, cb)})
    axis = study.axes[i].name
    context = {a.name: lab for a, lab in zip((x for j, x in enumerate(study.axes) if j != i), ctx)}
    return {
        "metric": metric,
        "axis": axis,
        "value": value,
        "baseline": base,
        "context": context,
        "seeds": seeds,
        **paired(a, b),
        "values": a,
        "baseline_values": b,
        "mcnemar": mc or None,
    }


def write_summary(study_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> tuple[dict, Path]:
    """:func:`summarize_study` and write it as JSON (default ``<study>/summary.json``)."""

    path = Path(out) if out is not None else Path(study_dir) / SUMMARY_JSON
    writable_file(path, "summary file", inputs=study_files(study_dir))  # never one of the study's own files
    summary = summarize_study(study_dir)
    try:
        write_json(path, summary)
    except OSError as e:
        raise GrefelError(f"cannot write {path} ({e.strerror or e}): give another path for the summary") from None
    return summary, path
