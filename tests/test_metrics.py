"""Report numbers: scikit-learn's on fixed predictions, ECE on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from grefel.evaluation import metrics as M


@pytest.fixture
def fixed():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 300)  # class 5 never true
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 6, 300))
    p[p == 4] = 3  # class 4 never predicted
    return y, p


def test_classification_metrics_equal_sklearn(fixed):
    y, p = fixed
    m = M.classification_metrics(y, p, 6)
    assert m["n"] == 300
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    with pytest.warns(UserWarning):  # sklearn warns about class 5; ours keeps quiet but agrees
        ref = skm.balanced_accuracy_score(y, p)
    assert m["balanced_accuracy"] == pytest.approx(ref)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, p, labels=range(6), zero_division=0)
    np.testing.assert_allclose(m["per_class"]["precision"], pr)
    np.testing.assert_allclose(m["per_class"]["recall"], rc)
    np.testing.assert_allclose(m["per_class"]["f1"], f1)
    assert m["per_class"]["support"] == sup.tolist()
    cm = skm.confusion_matrix(y, p, labels=range(6))
    assert m["confusion"] == cm.tolist()
    with np.errstate(invalid="ignore"):  # class 5's empty row: sklearn gives NaN, we give 0
        ref_norm = np.nan_to_num(skm.confusion_matrix(y, p, labels=range(6), normalize="true"))
    np.testing.assert_allclose(m["confusion_normalized"], ref_norm)
    assert m["per_class"]["recall"][4] == 0 and m["per_class"]["precision"][4] == 0


def test_row_normalize_keeps_empty_rows_zero():
    cm = np.array([[3, 1], [0, 0]])
    np.testing.assert_allclose(M.row_normalize(cm), [[0.75, 0.25], [0, 0]])


def test_correction_effect_counts():
    y = np.array([0, 1, 2, 0, 1])
    prim = np.array([0, 0, 2, 1, 2])  # right, wrong, right, wrong, wrong
    corr = np.array([0, 1, 1, 1, 0])  # right, right, wrong, wrong, wrong
    e = M.correction_effect(y, prim, corr)
    assert e == {"n": 5, "changed": 3, "fixed": 1, "broke": 1, "both_right": 1, "both_wrong": 2}


def test_ece_perfect_and_worst():
    onehot = np.eye(3)[[0, 1, 2, 0]]
    assert M.expected_calibration_error(onehot, np.array([0, 1, 2, 0]))["ece"] == pytest.approx(0.0)
    assert M.expected_calibration_error(onehot, np.array([1, 2, 0, 1]))["ece"] == pytest.approx(1.0)


def test_ece_calibrated_bin_is_zero():
    probs = np.tile([0.8, 0.2], (10, 1))
    y = np.array([0] * 8 + [1] * 2)  # 80 % right at confidence 0.8
    r = M.expected_calibration_error(probs, y, n_bins=10)
    assert r["ece"] == pytest.approx(0.0, abs=1e-12)
    assert sum(r["count"]) == 10 and r["accuracy"][7] == pytest.approx(0.8)  # 0.8 falls in (0.7, 0.8]


def test_ece_two_bins_by_hand():
    # 4 samples at confidence 0.9, all right: gap 0.1; 4 at confidence 0.6, half right: gap 0.1
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    r = M.expected_calibration_error(probs, y, n_bins=15)
    assert r["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.1)
    assert sorted(c for c in r["count"] if c) == [4, 4]
    # overconfident by 0.3 in one bin, exact in the other: weighted 3/4 and 1/4
    probs = np.array([[0.9, 0.1]] * 6 + [[0.5, 0.5]] * 2)
    y = np.array([0, 0, 0, 0, 1, 1, 0, 1])  # 4/6 right at 0.9; 1/2 right at 0.5
    r = M.expected_calibration_error(probs, y, n_bins=10)
    assert r["ece"] == pytest.approx(0.75 * (0.9 - 4 / 6) + 0.25 * 0.0)


def test_wrong_prediction_shares():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    p = np.array([1, 0, 0, 2, 0, 1, 2])  # wrong: true 0 once, true 1 twice, true 2 twice
    s = M.wrong_prediction_shares(y, p, 4)
    assert s["n_wrong"] == 5
    np.testing.assert_allclose(s["by_true_class"], [0.2, 0.4, 0.4, 0.0])
    np.testing.assert_allclose(s["by_predicted_class"], [0.4, 0.4, 0.2, 0.0])


def test_group_accuracy_and_gap():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    p = np.array([0, 1, 0, 0, 1, 0, 0, 1])
    g = np.array([0, 0, 0, 0, 1, 1, -1, 2])
    r = M.group_accuracy(y, p, g, {0: "male", 1: "female"}, min_count=2)
    by = {x["name"]: x for x in r["groups"]}
    assert by["male"]["accuracy"] == pytest.approx(0.75) and by["male"]["n"] == 4
    assert by["female"]["accuracy"] == 0.0 and by["2"]["n"] == 1  # unnamed code keeps its number; -1 left out
    assert r["gap"] == {"value": pytest.approx(0.75), "best": "male", "worst": "female"}  # group "2" too small


def test_cluster_scores_equal_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = rng.normal(size=(90, 5)) + 4 * np.eye(5)[y]
    s = M.cluster_scores(x, y)
    assert s["davies_bouldin"] == pytest.approx(skm.davies_bouldin_score(x, y))
    assert s["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(x, y))
    assert M.cluster_scores(x, np.zeros(90)) == {"davies_bouldin": None, "calinski_harabasz": None}


def test_subsample_is_stratified_seeded_and_capped():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    a = M.subsample(1000, 100, y, seed=1)
    assert len(a) == 100 and np.array_equal(a, M.subsample(1000, 100, y, seed=1)) and np.all(np.diff(a) > 0)
    assert np.bincount(y[a]).tolist() == [50, 30, 20]
    assert len(M.subsample(50, 100, y[:50])) == 50


def test_total_variation_and_distribution_stats():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    c = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(M.total_variation(p, c), [0.25, 1.0])
    s = M.distribution_stats(c)
    assert s["max"] == 1.0 and s["min"] == 0.0 and s["mean_top"] == pytest.approx(0.75)
