"""The statistics of a study, from scipy.stats and statsmodels, as JSON-able dicts.

One engine, :func:`summarize`, serves a study folder (:func:`summarize_study`) and runs given to
`grefel report` read as an ad-hoc study (:mod:`grefel.study.adhoc`).

For every setting (a grid cell, over its seeds) and metric: the number of seeds n, mean, standard
deviation ("sd", ddof 1) and a 95 % **t-interval** for the mean over seeds. Not a bootstrap: with
the 3-10 seeds a study affords, resampling seeds gives intervals that are too narrow and jump
between reruns; the t-interval is the exact interval for normal seed-to-seed variation, and
accuracy over hundreds of test images varies close to normally. Wherever a table prints "±", it is
the half-width of this 95 % interval; the sd is printed as "sd".

For every comparison of a grid value against its axis's baseline (reliability balancing on vs off
with the same seed and label set, K vs the smallest K, noisy vs clean labels, any value vs the
first listed), all other axes held equal:

* the paired difference (value minus baseline) over the seeds both have, its mean, sd and 95 %
  t-interval (unadjusted);
* a **paired t-test** across seeds (``scipy.stats.ttest_rel``, two-sided) decides;
* **Holm's correction** (``statsmodels.stats.multitest.multipletests``, method "holm") over a
  family: the study's primary comparisons (the headline metric, corrected accuracy, along the
  axes named ``primary``) when it names them, else all comparisons of each metric. Comparisons
  outside the primary family are *exploratory*: unadjusted p, and a verdict that says so;
* beside each verdict an interval that agrees with it: for a Holm family member the t-interval at
  the level of the Holm step that decided it (confidence 1 - 0.05 / (m - k + 1) for the k-th
  smallest of m p-values; after the first step that fails, that step's level), which excludes 0
  exactly when the verdict is "significant"; elsewhere the unadjusted 95 % interval, labelled so;
* the **minimum detectable effect** the comparison achieved: the true mean difference a two-sided
  paired t-test at alpha 0.05 (unadjusted) finds with 80 % power from its n and observed sd
  (:mod:`grefel.study.power`);
* the **Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``, two-sided), as a check that does not
  assume normal differences: on the differences rounded to 12 decimals (equal accuracy
  differences tie), zero differences dropped (``zero_method="wilcox"``), the exact null
  distribution when no differences tie or are zero, else the normal approximation without
  continuity correction; the method used is recorded per comparison. With n pairs its smallest
  two-sided p is 2 / 2^n: it cannot reach p < 0.05 with fewer than 6 pairs, whatever the effect;
* **McNemar's test** per seed pair on the same test images (``statsmodels`` ``mcnemar``), kept in
  the JSON only: it asks whether *these two trained models* differ on these images, not whether
  the setting does (seeds, not images, carry the setting's uncertainty), so no table or verdict
  uses it.

A comparison with fewer than 3 paired seeds is reported as "not enough seeds" (one seed pair: "one
run against one run: an anecdote, no interval"), never as significant, and is left out of the Holm
family. Every figure carries its number of seeds.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from grefel.core.errors import GrefelError
from grefel.core.io import writable_file, write_json
from grefel.evaluation.metrics import classification_metrics
from grefel.evaluation.predictions import read_predictions_meta
from grefel.study.folder import SUMMARY_JSON, load_plan, study_files, study_states
from grefel.study.power import POWER, ci_half_width, minimum_detectable_effect, seeds_for_half_width
from grefel.study.spec import per_seed_label_set

ALPHA = 0.05
CONFIDENCE = 0.95
MIN_SEEDS = 3
WILCOXON_MIN_PAIRS = 6  # below this the signed-rank test cannot reach p < 0.05 (two-sided)
WILCOXON_EXACT_MAX = 50  # pairs: the exact null distribution up to here (scipy's own limit for "auto")
MCNEMAR_EXACT_BELOW = 25  # discordant images: exact binomial test below, chi-square at or above
HEADLINE_METRIC = "accuracy"  # the metric a study's primary comparisons are about
METRICS = {
    "accuracy": "accuracy of the corrected distribution (eq. 19) on the clean test split",
    "accuracy_primary": "accuracy of the primary distribution (eq. 9) on the clean test split",
    "macro_f1": "macro F1 of the corrected distribution on the clean test split",
}
PER_IMAGE = {"accuracy": "pred_corrected", "accuracy_primary": "pred_primary"}  # metrics McNemar applies to
ANECDOTE = "one run against one run: an anecdote, no interval"
METHODS = {
    "plus_minus": "± is the half-width of the 95 % t-interval everywhere; sd is the standard deviation over seeds",
    "setting_ci": "95 % t-interval of the mean over seeds (scipy.stats.t), sd with ddof 1",
    "difference_ci": "95 % t-interval of the mean paired difference over seeds (scipy.stats.ttest_rel), unadjusted",
    "paired_test": "paired t-test across seeds, two-sided (scipy.stats.ttest_rel); decides the verdict",
    "multiplicity": "Holm (statsmodels multipletests, method 'holm') over the primary comparisons (corrected "
    "accuracy along the axes the study names primary) with at least 3 seeds; the others are exploratory, "
    "unadjusted. A study without primary axes: Holm over all comparisons of each metric with at least 3 seeds",
    "verdict_interval": "beside a Holm verdict: the t-interval at the level of the Holm step that decided it "
    "(1 - 0.05/(m - k + 1) for the k-th smallest of m p-values; after the first step that fails, that step's "
    "level), which excludes 0 exactly when the verdict is significant; beside an exploratory or untested "
    "comparison: the unadjusted 95 % t-interval",
    "mde": "minimum detectable effect: the mean difference a two-sided paired t-test at alpha 0.05 (unadjusted) "
    "detects with 80 % power from the comparison's n and sd (statsmodels TTestPower)",
    "wilcoxon": "Wilcoxon signed-rank across seeds, two-sided (scipy.stats.wilcoxon) on the differences rounded "
    "to 12 decimals: zero differences dropped (zero_method 'wilcox'); the exact null distribution when no "
    "difference ties or is zero (and at most 50 pairs), else the normal approximation without continuity "
    "correction; a check only: cannot reach p < 0.05 with fewer than 6 pairs",
    "mcnemar": "McNemar per seed pair on the same test images (statsmodels mcnemar): exact binomial when fewer "
    "than 25 images differ, else chi-square with continuity correction. About the two trained models of that "
    "seed pair, not about the setting: in the JSON only, never part of a verdict",
    "alpha": ALPHA,
    "power": POWER,
    "min_seeds": MIN_SEEDS,
}


# -- one run -------------------------------------------------------------------------------------
def read_outcomes(path: str | os.PathLike):
    """Per test image of a predictions file: index, clean label, both predictions (labelled images only)."""
    import pandas as pd  # lazy: pandas takes a second to import

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
    from scipy import stats  # lazy: scipy.stats takes a second to import

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
    from scipy import stats  # lazy: scipy.stats takes a second to import

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
        "wilcoxon_method": None,
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
    out.update(_wilcoxon(d))
    return out


def _wilcoxon(d: np.ndarray) -> dict:
    """scipy's signed-rank test on the differences, with the method it ran named."""
    from scipy import stats  # lazy: scipy.stats takes a second to import

    d = np.round(d, 12)  # accuracy differences are multiples of 1/N: equal ones must tie, not differ by 1e-17
    nonzero = d[d != 0]
    if not len(nonzero):
        return {}
    zeros, ties = len(d) - len(nonzero), len(np.unique(np.abs(nonzero))) < len(nonzero)
    exact = not zeros and not ties and len(d) <= WILCOXON_EXACT_MAX
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.wilcoxon(d, zero_method="wilcox", method="exact" if exact else "asymptotic")
    why = ", ".join(w for w, on in (("tied differences", ties), (f"{zeros} zero difference(s) dropped", zeros)) if on)
    method = "exact" if exact else f"normal approximation ({why or f'more than {WILCOXON_EXACT_MAX} pairs'})"
    return {"wilcoxon_p": _f(res.pvalue), "wilcoxon_method": method}


def mcnemar_test(correct, correct_baseline) -> dict:
    """McNemar's test on the same images: ``b`` right only here, ``c`` right only in the baseline."""
    from statsmodels.stats.contingency_tables import mcnemar  # lazy: statsmodels takes a second to import

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
    from statsmodels.stats.multitest import multipletests  # lazy: statsmodels takes a second to import

    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if idx:
        adjusted = multipletests([pvalues[i] for i in idx], alpha=ALPHA, method="holm")[1]
        for i, p in zip(idx, adjusted):
            out[i] = float(p)
    return out


def holm_levels(pvalues: Sequence[float]) -> list[float]:
    """The alpha of the Holm step that decides each p-value: 0.05 / (m - k + 1) for the k-th smallest
    while every step so far rejected; from the first step that fails on, that step's alpha."""
    order = np.argsort(np.asarray(pvalues, dtype=np.float64), kind="stable")
    m, out, failed = len(order), [0.0] * len(order), None
    for k, i in enumerate(order):
        level = ALPHA / (m - k)
        if failed is None and not pvalues[i] < level:
            failed = level
        out[i] = failed if failed is not None else level
    return out


def verdict(n: int, p: float | None, adjusted: bool = True) -> str:
    """What a comparison of ``n`` seed pairs says at alpha 0.05: ``p`` is Holm-adjusted, or the raw p
    of an exploratory comparison (``adjusted`` False)."""
    if n == 1:
        return ANECDOTE
    if n < MIN_SEEDS:
        return "not enough seeds"
    if p is None:
        return "no variation between seeds"
    word = "significant" if p < ALPHA else "not significant"
    return word if adjusted else f"{word} (exploratory, unadjusted)"


def adjust_comparisons(comparisons: list[dict], primary: Sequence[str] = ()) -> None:
    """Holm families, verdicts, the interval beside each verdict and the achieved MDE, in place."""
    families: dict[str, list[dict]] = {}
    for c in comparisons:
        if primary:
            c["family"] = "primary" if c["metric"] == HEADLINE_METRIC and c["axis"] in primary else "exploratory"
        else:
            c["family"] = c["metric"]
        families.setdefault(c["family"], []).append(c)
    for family, members in families.items():
        adjusted = family != "exploratory"
        tested = [c for c in members if c["n"] >= MIN_SEEDS and c.get("p") is not None]
        p_holm = holm([c["p"] for c in tested]) if adjusted else [None] * len(tested)
        levels = holm_levels([c["p"] for c in tested]) if adjusted else [None] * len(tested)
        step = {id(c): (p, a) for c, p, a in zip(tested, p_holm, levels)}
        for c in members:
            p, level = step.get(id(c), (None, None))
            c.update(adjusted=adjusted, p_holm=p, holm_family=len(tested) if adjusted else 0)
            c["verdict"] = verdict(c["n"], p if adjusted else c.get("p"), adjusted)
            c["mde"] = minimum_detectable_effect(c.get("diff_std"), c["n"], ALPHA)
            c.update(_verdict_interval(c, level))


def _verdict_interval(c: dict, level: float | None) -> dict:
    """The interval shown beside ``c``'s verdict: at its Holm step's level, else the unadjusted 95 %."""
    from scipy import stats  # lazy: scipy.stats takes a second to import

    if level is None or not c.get("diff_std"):
        return {"ci_verdict": c.get("ci"), "ci_verdict_confidence": CONFIDENCE, "ci_verdict_kind": "unadjusted"}
    n, mean, sd = c["n"], c["diff_mean"], c["diff_std"]
    lo, hi = stats.t.interval(1 - level, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return {"ci_verdict": [float(lo), float(hi)], "ci_verdict_confidence": 1 - level, "ci_verdict_kind": "Holm"}


# -- the study ---------------------------------------------------------------------------------------
def summarize_study(study_dir: str | os.PathLike) -> dict:
    """Everything a table or report of the study in ``study_dir`` needs, JSON-able (see the module docstring)."""

    study_dir = Path(study_dir)
    study = load_plan(study_dir)
    return summarize(study, study_states(study_dir, study), study_dir)


def summarize(study, states: list, root: Path, kind: str = "study") -> dict:
    """The statistics of ``study`` (a :class:`~grefel.study.spec.Study`) from the states of its runs
    (:class:`~grefel.study.folder.RunStatus`; predictions paths relative to ``root``)."""
    done = {s.name: s for s in states if s.finished}
    outcomes = _Outcomes(root, done)
    by_cell = {(tuple(r.cell.get(a.name) for a in study.axes), r.seed): r for r in study.runs if r.name in done}
    settings = [_setting(study, combo, by_cell, done) for combo in _cells(study)]
    keys = comparison_keys(study)
    comparisons = [_compare(study, m, *key, by_cell, done, outcomes) for m in METRICS for key in keys]
    adjust_comparisons(comparisons, study.primary)
    counts = {
        k: sum(s.state == k for s in states) for k in ("done", "running", "failed", "queued", "stopped", "pending")
    }
    return {
        "format": "grefel-study-summary",
        "version": 2,
        "kind": kind,
        "study": study.name,
        "dataset": study.dataset,
        "seeds": study.seeds,
        "primary": list(study.primary),
        "noise_per_seed": study.noise_per_seed,
        "replicates": replicate_note(study),
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
        "runs": [_run_entry(s) for s in states],
        "failed": [{"name": s.name, "log": s.log, "error": s.error} for s in states if s.state == "failed"],
    }


def _run_entry(s) -> dict:
    keys = ("name", "seed", "cell", "state", "metrics", "log", "error", "predictions")
    return {k: getattr(s, k) for k in keys}


def replicate_note(study) -> dict:
    """What a replicate (one training seed) changes, and what stays fixed across replicates."""
    noisy = any(r.settings.get("labels", "clean") != "clean" for r in study.runs)
    varies = ["initial weights", "data order and sampling", "augmentation and dropout"]
    fixed = ["the train / validation / test split", "the test images"]
    if noisy and study.noise_per_seed:
        varies.append("the label-noise draw")
    elif noisy:
        fixed.append("the label-noise draw (one per label set)")
    text = f"Per replicate (training seed) varied: {', '.join(varies)}; fixed: {', '.join(fixed)}."
    return {"replicate": "training seed", "varies": varies, "fixed": fixed, "text": text}


def _cells(study) -> list[tuple[str, ...]]:
    return list(itertools.product(*([v.label for v in a.values] for a in study.axes)))


def _label_set(study, settings: dict) -> dict:
    name = settings.get("labels", "clean")
    if name == "clean":
        return {"name": "clean", "noise": 0.0, "mode": None, "per_seed": False}
    spec = study.label_sets.get(name)
    if spec is None and study.noise_per_seed and study.seeds:
        spec = study.label_sets.get(per_seed_label_set(name, study.seeds[0]))
    return {
        "name": name,
        "noise": spec.noise if spec else None,
        "mode": spec.mode if spec else None,
        "per_seed": study.noise_per_seed,
    }


def _setting(study, combo, by_cell, done) -> dict:
    runs = [by_cell[(combo, s)] for s in study.seeds if (combo, s) in by_cell]
    any_run = next((r for r in study.runs if tuple(r.cell.get(a.name) for a in study.axes) == combo), None)
    settings = {k: v for k, v in (any_run.settings if any_run else {}).items() if k != "seed"}
    if study.noise_per_seed and "labels" in settings:  # the cell's label set, not seed 0's draw of it
        settings["labels"] = settings["labels"].removesuffix(f"-s{any_run.seed}")
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

    def __init__(self, root: Path, done: dict):
        self.root, self.done, self.cache = Path(root), done, {}

    def __call__(self, name: str):
        if name not in self.cache:
            self.cache[name] = read_outcomes(self.root / self.done[name].predictions)
        return self.cache[name]


def comparison_keys(study) -> list[tuple[int, str, str, tuple]]:
    """Every comparison of the grid: (axis index, value, its baseline, the other axes' values)."""
    out = []
    for i, axis in enumerate(study.axes):
        base = study.baselines.get(axis.name)
        others = [a for j, a in enumerate(study.axes) if j != i]
        for value in (v.label for v in axis.values if v.label != base):
            for ctx in itertools.product(*([v.label for v in a.values] for a in others)):
                out.append((i, value, base, ctx))
    return out


def _context(study, i: int, ctx: tuple) -> dict:
    return {a.name: lab for a, lab in zip((x for j, x in enumerate(study.axes) if j != i), ctx)}


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
    return {
        "metric": metric,
        "axis": study.axes[i].name,
        "value": value,
        "baseline": base,
        "context": _context(study, i, ctx),
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


# -- power, before a study ---------------------------------------------------------------------------
def power_plan(
    study,
    sd: float | None = None,
    pilot: str | os.PathLike | None = None,
    half_width: float | None = None,
) -> dict | None:
    """Per comparison of ``study`` (corrected accuracy): the minimum detectable effect at 80 % power
    with the study's seeds, and the seeds a 95 % CI ``half_width`` needs. ``sd``: the standard
    deviation of paired differences, in points, for every comparison; or ``pilot``: a finished study
    folder whose comparisons give each its own. None when neither is given."""
    if sd is not None and pilot is not None:
        raise GrefelError("give a standard deviation of paired differences or a pilot study, not both")
    if sd is None and pilot is None:
        if half_width is not None:
            raise GrefelError(
                "a CI half-width needs the spread of paired differences: give their standard deviation "
                "(points) or a finished pilot study"
            )
        return None
    for what, v in (("standard deviation of paired differences", sd), ("CI half-width", half_width)):
        if v is not None and not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise GrefelError(f"the {what} must be a number of points above 0 (got {v})")
    spreads = _pilot_spreads(pilot) if pilot is not None else None
    keys = comparison_keys(study)
    family = [k for k in keys if not study.primary or study.axes[k[0]].name in study.primary]
    n = len(study.seeds)
    rows = []
    for i, value, base, ctx in keys:
        context = _context(study, i, ctx)
        axis = study.axes[i].name
        sd_k, pilot_n = (sd, None) if spreads is None else spreads.get(_key(axis, value, base, context), (None, 0))
        family_name = "exploratory" if study.primary and axis not in study.primary else "Holm"
        rows.append(_power_row(axis, value, base, context, sd_k, pilot_n, n, half_width, len(family), family_name))
    source = "given" if pilot is None else f"pilot study {pilot}"
    return {"n": n, "sd_source": source, "half_width": half_width, "alpha": ALPHA, "power": POWER, "comparisons": rows}


def _key(axis: str, value: str, base: str, context: dict) -> tuple:
    return axis, value, base, tuple(sorted(context.items()))


def _pilot_spreads(pilot) -> dict:
    """(sd of paired differences in points, n) per accuracy comparison of a finished pilot study."""
    summary = summarize_study(pilot)
    comps = [c for c in summary["comparisons"] if c["metric"] == HEADLINE_METRIC]
    if not comps:
        raise GrefelError(f"pilot study {pilot} has no comparisons (no grid): give a pilot with the same grid")
    if max(c["n"] for c in comps) < 2:
        raise GrefelError(
            f"pilot study {pilot} has fewer than 2 finished seed pairs in every comparison: a standard deviation "
            "needs 2 or more; let its runs finish or give it more seeds"
        )
    return {
        _key(c["axis"], c["value"], c["baseline"], c["context"]): (
            None if c["diff_std"] is None else 100 * c["diff_std"],
            c["n"],
        )
        for c in comps
    }


def _power_row(axis, value, base, context, sd, pilot_n, n, half_width, family_size, family) -> dict:
    known = sd is not None
    m = family_size if family == "Holm" else 1
    return {
        "axis": axis,
        "value": value,
        "baseline": base,
        "context": context,
        "sd": sd,
        "pilot_n": pilot_n,
        "family": family,
        "mde": minimum_detectable_effect(sd, n, ALPHA) if known else None,
        "mde_holm_first_step": minimum_detectable_effect(sd, n, ALPHA / m) if known and m > 1 else None,
        "family_size": m,
        "half_width_now": ci_half_width(sd, n) if known else None,
        "seeds_for_half_width": seeds_for_half_width(sd, half_width) if known and half_width else None,
    }
