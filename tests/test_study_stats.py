"""Study statistics: against hand-computed cases (paired t with 2 degrees of freedom has a closed form;
McNemar's exact test is a binomial sum), against scipy / statsmodels on fixed inputs, and the whole
summary of a study folder built from fixed predictions (no training)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from grefel.study import stats as S
from grefel.study.folder import PREDICTIONS, rel_run, run_folder, save_plan, study_states, write_status
from grefel.study.power import minimum_detectable_effect
from grefel.study.spec import parse_study

# float64 sums and products of a handful of numbers below 10: relative error a few ulp (~1e-15);
# scipy's t quantile and CDF come from iterative special functions, good to ~1e-13 relative.
REL = 1e-11


def _t2_quantile(q: float) -> float:
    """Student t quantile with 2 degrees of freedom: t = (2q - 1) / sqrt(2 q (1 - q))."""
    return (2 * q - 1) / math.sqrt(2 * q * (1 - q))


def test_setting_mean_std_and_t_interval_by_hand():
    d = S.describe([1.0, 2.0, 3.0])
    half = _t2_quantile(0.975) * 1.0 / math.sqrt(3)  # std 1, n 3
    assert d["n"] == 3 and d["mean"] == 2.0 and d["std"] == 1.0 and d["ci_kind"] == "t"
    assert d["ci"] == pytest.approx([2 - half, 2 + half], rel=REL)
    assert S.describe([0.7])["ci"] is None and S.describe([0.7])["std"] is None
    assert S.describe([0.5, 0.5, 0.5])["ci"] == [0.5, 0.5]


def test_paired_t_by_hand():
    """Differences 1, 2, 3: mean 2, sd 1, t = 2 sqrt(3); with 2 degrees of freedom the two-sided
    p is 1 - t / sqrt(2 + t^2)."""
    r = S.paired([1.0, 3.0, 5.0], [0.0, 1.0, 2.0])
    t = 2 * math.sqrt(3)
    assert r["n"] == 3 and r["df"] == 2 and r["diff_mean"] == 2.0 and r["diff_std"] == 1.0
    assert r["t"] == pytest.approx(t, rel=REL)
    assert r["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=REL)  # 0.0742
    half = _t2_quantile(0.975) / math.sqrt(3)
    assert r["ci"] == pytest.approx([2 - half, 2 + half], rel=REL)
    # the signed-rank test on 3 positive differences: smallest possible p, 2 / 2^3
    assert r["wilcoxon_p"] == pytest.approx(0.25, rel=REL) and "cannot reach" in r["wilcoxon_note"]


def test_wilcoxon_cannot_reach_significance_with_five_pairs():
    r = S.paired([0.9, 0.8, 0.85, 0.95, 0.7], [0.5, 0.5, 0.5, 0.5, 0.5])
    assert r["wilcoxon_p"] == pytest.approx(2 / 2**5, rel=REL) and r["p"] < 0.01


def test_paired_and_describe_match_scipy_on_fixed_inputs():
    a = np.array([0.712, 0.698, 0.731, 0.705, 0.720, 0.689, 0.741])
    b = np.array([0.701, 0.702, 0.715, 0.690, 0.712, 0.695, 0.722])
    r = S.paired(a, b)
    ref = st.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert (r["t"], r["p"]) == pytest.approx((ref.statistic, ref.pvalue), rel=REL)
    assert r["ci"] == pytest.approx([ci.low, ci.high], rel=REL)
    assert r["wilcoxon_p"] == pytest.approx(st.wilcoxon(a, b).pvalue, rel=REL) and r["wilcoxon_note"] is None
    d = S.describe(a)
    lo, hi = st.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=st.sem(a))
    assert d["ci"] == pytest.approx([lo, hi], rel=REL) and d["std"] == pytest.approx(a.std(ddof=1), rel=REL)


def test_equal_differences_are_not_a_t_test():
    r = S.paired([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])  # +0.1 every seed, up to rounding
    assert r["p"] is None and r["ci"] == pytest.approx([0.1, 0.1]) and "undefined" in r["p_note"]
    assert S.verdict(3, None) == "no variation between seeds"


def _outcomes(b: int, c: int, both: int = 5, neither: int = 3):
    x = np.array([True] * both + [True] * b + [False] * c + [False] * neither)
    y = np.array([True] * both + [False] * b + [True] * c + [False] * neither)
    return x, y


def test_mcnemar_exact_by_hand():
    """1 image right only here, 7 only in the baseline: exact two-sided p = 2 (C(8,0) + C(8,1)) / 2^8."""
    r = S.mcnemar_test(*_outcomes(1, 7))
    assert (r["b"], r["c"], r["exact"], r["n"]) == (1, 7, True, 16)
    assert r["p"] == pytest.approx(2 * (1 + 8) / 256, rel=REL) and r["statistic"] == 1.0


def test_mcnemar_chi_square_by_hand_and_against_statsmodels():
    """10 vs 30 discordant images: (|10 - 30| - 1)^2 / 40 = 9.025; p = erfc(sqrt(9.025 / 2)) (1 df)."""
    r = S.mcnemar_test(*_outcomes(10, 30))
    assert r["exact"] is False and r["statistic"] == pytest.approx(9.025, rel=REL)
    assert r["p"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)), rel=REL)
    ref = mcnemar([[5, 10], [30, 3]], exact=False, correction=True)
    assert (r["statistic"], r["p"]) == pytest.approx((ref.statistic, ref.pvalue), rel=REL)
    assert S.mcnemar_test(*_outcomes(0, 0))["p"] == 1.0


def test_holm_by_hand_and_against_statsmodels():
    adjusted = S.holm([0.01, 0.04, None, 0.03])
    assert adjusted[2] is None
    assert [adjusted[i] for i in (0, 1, 3)] == pytest.approx([0.03, 0.06, 0.06], rel=REL)
    p = [0.001, 0.2, 0.013, 0.04, 0.008]
    assert S.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]), rel=REL)


def test_fewer_than_three_seeds_is_never_significant():
    assert S.verdict(2, 1e-9) == "not enough seeds"
    assert S.verdict(3, 0.01) == "significant" and S.verdict(3, 0.2) == "not significant"


# -- a whole study folder from fixed predictions ------------------------------------------------------
STUDY = """\
[study]
dataset = "toy"
seeds = 3

[grid]
labels = ["clean", "sym20"]
reliability = ["both", "none"]
"""
N = 40
CORRECT = {  # images right out of 40, per run (the first k images of the split)
    "clean-rb_both": [30, 32, 35],
    "clean-rb_none": [28, 29, 30],
    "sym20-rb_both": [26, 27, 31],
    "sym20-rb_none": [20, 24, None],  # seed 2 failed
}


def _write_run(study_dir, name: str, k: int) -> None:
    from grefel.evaluation.predictions import write_predictions

    y = np.arange(N) % 4
    pred = np.where(np.arange(N) < k, y, (y + 1) % 4)
    path = study_dir / rel_run(name, PREDICTIONS)
    cols = {"index": np.arange(100, 100 + N), "label": y, "pred_primary": y, "pred_corrected": pred}
    write_predictions(path, cols, {"classes": ["a", "b", "c", "d"]})
    write_status(
        run_folder(study_dir, name), state="done", predictions=rel_run(name, PREDICTIONS), metrics=S.run_metrics(path)
    )


@pytest.fixture
def study_dir(tmp_path):
    d = tmp_path / "study"
    d.mkdir()
    save_plan(d, parse_study(STUDY), STUDY)
    for cell, ks in CORRECT.items():
        for seed, k in enumerate(ks):
            if k is None:
                write_status(run_folder(d, f"{cell}-s{seed}"), state="failed", error="boom", log="runs/x/run.log")
            else:
                _write_run(d, f"{cell}-s{seed}", k)
    return d


def test_summary_of_a_study_folder(study_dir):
    s = S.summarize_study(study_dir)
    assert s["counts"]["done"] == 11 and s["counts"]["failed"] == 1
    assert s["failed"] == [{"name": "sym20-rb_none-s2", "log": "runs/x/run.log", "error": "boom"}]
    cells = {x["name"]: x for x in s["settings"]}
    acc = cells["clean-rb_both"]["metrics"]["accuracy"]
    assert acc["n"] == 3 and acc["values"] == pytest.approx([30 / 40, 32 / 40, 35 / 40], rel=REL)
    assert acc["mean"] == pytest.approx(97 / 120, rel=REL)
    assert (
        cells["sym20-rb_none"]["metrics"]["accuracy"]["n"] == 2 and cells["sym20-rb_none"]["label_set"]["noise"] == 0.2
    )
    assert cells["clean-rb_none"]["metrics"]["accuracy_primary"]["mean"] == 1.0

    comps = {(c["axis"], tuple(c["context"].values())): c for c in s["comparisons"] if c["metric"] == "accuracy"}
    assert len(comps) == 4
    rb_clean = comps[("reliability", ("clean",))]
    assert (rb_clean["value"], rb_clean["baseline"], rb_clean["n"]) == ("both", "none", 3)
    ref = st.ttest_rel(np.array([30, 32, 35]) / 40, np.array([28, 29, 30]) / 40)
    assert rb_clean["p"] == pytest.approx(ref.pvalue, rel=REL)
    # nested right answers: only "b" images; seed 0 differs on 2 images, exact p = 2 / 2^2
    assert [(m["b"], m["c"]) for m in rb_clean["mcnemar"]] == [(2, 0), (3, 0), (5, 0)]
    assert rb_clean["mcnemar"][0]["p"] == pytest.approx(0.5, rel=REL)
    rb_sym = comps[("reliability", ("sym20",))]
    assert rb_sym["n"] == 2 and rb_sym["verdict"] == "not enough seeds" and rb_sym["p_holm"] is None
    family = [c for c in comps.values() if c["n"] >= 3]
    assert len(family) == 2 and all(c["holm_family"] == 2 for c in comps.values())
    adjusted = multipletests([c["p"] for c in family], method="holm")[1]
    assert [c["p_holm"] for c in family] == pytest.approx(list(adjusted), rel=REL)
    assert {c["verdict"] for c in family} <= {"significant", "not significant"}
    assert {c["metric"] for c in s["comparisons"]} == set(S.METRICS)
    assert s["methods"]["min_seeds"] == 3 and "t-interval" in s["methods"]["setting_ci"]


def test_a_moved_study_folder_reports_the_same(study_dir, tmp_path):
    before = S.summarize_study(study_dir)
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(study_dir, moved)
    shutil.rmtree(study_dir)
    assert S.summarize_study(moved) == before
    assert [x.state for x in study_states(moved)].count("done") == 11


def test_summary_json_and_cli(study_dir):
    import json

    from typer.testing import CliRunner

    from grefel_cli.main import app

    res = CliRunner().invoke(app, ["study", "summary", str(study_dir)])
    assert res.exit_code == 0, res.output
    assert "not enough seeds" in res.output and "clean-rb_both" in res.output
    data = json.loads((study_dir / "summary.json").read_text())
    assert data["format"] == "grefel-study-summary" and len(data["comparisons"]) == 4 * len(S.METRICS)
    res = CliRunner().invoke(app, ["study", "status", str(study_dir)])
    assert res.exit_code == 0 and "failed" in res.output and "runs/x/run.log" in res.output


# -- the audit's fixes ----------------------------------------------------------------------------------
def test_plus_minus_is_the_ci_half_width_in_the_cli_and_the_report_and_sd_is_labelled(study_dir):
    from typer.testing import CliRunner

    from grefel.study.report import study_sections
    from grefel_cli.main import app

    s = S.summarize_study(study_dir)
    acc = next(x for x in s["settings"] if x["name"] == "clean-rb_both")["metrics"]["accuracy"]
    half = (acc["ci"][1] - acc["ci"][0]) / 2
    assert abs(half - acc["std"]) > 0.05  # the two readings of "±" differ here: the test can tell them apart
    cell = f"{100 * acc['mean']:.1f} ± {100 * half:.1f}"
    res = CliRunner().invoke(app, ["study", "summary", str(study_dir)], terminal_width=200)
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.strip().startswith("clean-rb_both"))
    assert cell in row and f"{100 * acc['std']:.1f}" in row.replace(cell, "")
    assert "± = half-width of the 95 % t-interval" in res.output and "sd = standard deviation" in res.output
    overview = study_sections(s)[0]
    (settings, _) = overview.tables
    row = next(r for r in settings.rows if r[0] == "clean-rb_both")
    assert row[3] == cell and row[4] == f"{100 * acc['std']:.1f}" and "± = half-width" in settings.note


def test_mcnemar_is_no_evidence_about_the_setting_anywhere_it_is_shown(study_dir):
    from typer.testing import CliRunner

    from grefel.study.report import study_sections
    from grefel_cli.main import app

    s = S.summarize_study(study_dir)
    assert all(c["mcnemar"] for c in s["comparisons"] if c["metric"] == "accuracy" and c["n"])  # still in the JSON
    res = CliRunner().invoke(app, ["study", "summary", str(study_dir)], terminal_width=200)
    assert "McNemar" not in res.output
    for section in study_sections(s):
        for table in section.tables:
            assert not any("McNemar" in col for col in table.columns)
        assert "McNemar" not in section.text or "not evidence about the setting" in section.text
    assert "not about the setting" in s["methods"]["mcnemar"]


@pytest.mark.parametrize(
    "p, text, verdict",
    [(0.0496, "0.0496", "significant"), (0.0504, "0.050", "not significant"), (0.04996, "0.04996", "significant")],
)
def test_a_p_value_at_the_boundary_is_printed_on_the_side_of_its_verdict(p, text, verdict):
    from grefel.study.tables import fmt_p, fmt_paired

    assert fmt_p(p) == text and (float(text) < S.ALPHA) == (p < S.ALPHA)
    assert fmt_p(0.0123) == "0.012" and fmt_p(0.0004) == "<0.001" and fmt_p(0.5) == "0.500"
    c = {**S.paired([0.9, 0.8, 0.85], [0.8, 0.78, 0.8]), "p_holm": p, "adjusted": True}
    c["verdict"] = S.verdict(c["n"], p)
    assert c["verdict"] == verdict and f"Holm p {text}, {verdict} (n 3)" in fmt_paired(c)


def test_wilcoxon_names_the_method_scipy_ran():
    exact = S.paired([0.9, 0.8, 0.85, 0.95, 0.7], [0.5, 0.5, 0.5, 0.5, 0.5])
    assert exact["wilcoxon_method"] == "exact"
    tied = S.paired([0.7, 0.8, 0.8, 0.9], [0.6, 0.7, 0.75, 0.8])  # differences 0.1, 0.1, 0.05, 0.1 tie
    d = np.round(np.array([0.1, 0.1, 0.05, 0.1]), 12)
    assert tied["wilcoxon_method"] == "normal approximation (tied differences)"
    assert tied["wilcoxon_p"] == pytest.approx(st.wilcoxon(d, method="asymptotic").pvalue, rel=REL)
    zero = S.paired([0.7, 0.8, 0.9, 0.6], [0.7, 0.6, 0.5, 0.3])  # one zero difference, dropped
    assert zero["wilcoxon_method"] == "normal approximation (1 zero difference(s) dropped)"
    ref = st.wilcoxon(np.array([0.0, 0.2, 0.4, 0.3]), zero_method="wilcox", method="asymptotic")
    assert zero["wilcoxon_p"] == pytest.approx(ref.pvalue, rel=REL)
    assert "zero_method 'wilcox'" in S.METHODS["wilcoxon"] and "exact null distribution" in S.METHODS["wilcoxon"]


def test_holm_levels_by_hand():
    """m = 3: alphas 0.05/3, 0.05/2, 0.05 while every step rejects; after the first failing step, its alpha."""
    assert S.holm_levels([0.01, 0.04, 0.02]) == pytest.approx([0.05 / 3, 0.05, 0.05 / 2], rel=REL)
    assert S.holm_levels([0.001, 0.04, 0.03]) == pytest.approx([0.05 / 3, 0.05 / 2, 0.05 / 2], rel=REL)


def test_the_interval_beside_a_verdict_agrees_with_it():
    """Holm family members: the interval excludes 0 exactly when the verdict is significant; it is the
    t-interval at the level of the comparison's Holm step."""
    rng = np.random.default_rng(3)
    comparisons = []
    for k, shift in enumerate((0.004, 0.01, 0.02, 0.03, 0.05, 0.0, 0.015, 0.025)):
        base = rng.normal(0.7, 0.01, 5)
        c = {"metric": "accuracy", "axis": f"a{k}", **S.paired(base + shift + rng.normal(0, 0.01, 5), base)}
        comparisons.append(c)
    S.adjust_comparisons(comparisons)
    verdicts = {c["verdict"] for c in comparisons}
    assert verdicts == {"significant", "not significant"}  # both kinds occur: the check below can fail
    ps = [c["p"] for c in comparisons]
    for c, level in zip(comparisons, S.holm_levels(ps)):
        lo, hi = c["ci_verdict"]
        assert (not lo <= 0 <= hi) == (c["verdict"] == "significant") and c["ci_verdict_kind"] == "Holm"
        ref = st.t.interval(1 - level, c["n"] - 1, loc=c["diff_mean"], scale=c["diff_std"] / math.sqrt(c["n"]))
        assert c["ci_verdict"] == pytest.approx(list(ref), rel=REL) and c["holm_family"] == 8


def test_primary_comparisons_alone_are_holm_corrected_the_rest_exploratory(study_dir):
    text = STUDY.replace("seeds = 3", 'seeds = 3\nprimary = ["reliability"]')
    save_plan(study_dir, parse_study(text), text)
    s = S.summarize_study(study_dir)
    acc = {(c["axis"], tuple(c["context"].values())): c for c in s["comparisons"] if c["metric"] == "accuracy"}
    rb = acc[("reliability", ("clean",))]
    assert rb["family"] == "primary" and rb["adjusted"] and rb["holm_family"] == 1  # sym20: 2 seeds, untested
    assert rb["p_holm"] == pytest.approx(rb["p"], rel=REL) and rb["ci_verdict"] == pytest.approx(rb["ci"], rel=REL)
    lab = acc[("labels", ("both",))]
    assert lab["family"] == "exploratory" and lab["p_holm"] is None and lab["holm_family"] == 0
    assert lab["verdict"].endswith("(exploratory, unadjusted)") and lab["verdict"].startswith(
        "significant" if lab["p"] < 0.05 else "not significant"
    )
    assert lab["ci_verdict"] == lab["ci"] and lab["ci_verdict_kind"] == "unadjusted"
    assert all(c["family"] == "exploratory" for c in s["comparisons"] if c["metric"] != "accuracy")
    assert s["primary"] == ["reliability"]


def test_achieved_mde_from_the_observed_sd_and_n(study_dir):
    """The MDE is the effect at which the paired t-test has 80 % power: checked with the noncentral t."""
    s = S.summarize_study(study_dir)
    c = next(c for c in s["comparisons"] if c["metric"] == "accuracy" and c["n"] == 3)
    n, d = c["n"], c["mde"] / c["diff_std"]
    crit = st.t.ppf(0.975, n - 1)
    nct = st.nct(n - 1, d * math.sqrt(n))
    # the root is found to 1e-12 in the effect size, where the power's slope is below 1
    assert nct.sf(crit) + st.nct(n - 1, -d * math.sqrt(n)).sf(crit) == pytest.approx(0.8, abs=1e-9)
    assert minimum_detectable_effect(1.0, 1) is None
