"""The numbers of a GReFEL report, computed from a predictions table (no model, no images).

Every function takes plain arrays (true labels, predicted labels, distributions, embeddings) and
returns JSON-able dicts, so the same numbers go into the HTML page, the figures and report.json.
Classification scores and cluster scores come from scikit-learn; expected calibration error has
no scikit-learn function and is written out here (equal-width bins over the top probability).

Paper sections these reproduce: Table 1 / 2 (accuracy, F1), Fig. 4 (confusion matrices with and
without reliability balancing), Fig. 5 (t-SNE with Davies-Bouldin and Calinski-Harabasz scores),
Fig. 7 (share of each class among wrong predictions), Fig. 9 (primary vs corrected distributions).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix.

    Per-class scores cover every class (0 where undefined); macro-F1 and balanced accuracy follow
    scikit-learn's defaults (classes seen in ``y_true`` or ``y_pred`` / mean recall over true classes).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    labels = np.arange(num_classes)
    if len(y_true) == 0:
        zeros = [0.0] * num_classes
        return {
            "n": 0,
            "accuracy": float("nan"),
            "balanced_accuracy": float("nan"),
            "macro_f1": float("nan"),
            "per_class": {"precision": zeros, "recall": zeros, "f1": zeros, "support": [0] * num_classes},
            "confusion": np.zeros((num_classes, num_classes), np.int64).tolist(),
            "confusion_normalized": np.zeros((num_classes, num_classes)).tolist(),
        }
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected on small splits
        warnings.simplefilter("ignore", UserWarning)
        balanced = skm.balanced_accuracy_score(y_true, y_pred)
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.astype(int).tolist(),
        },
        "confusion": cm.tolist(),
        "confusion_normalized": row_normalize(cm).tolist(),
    }


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Confusion matrix rows divided by their sums (recall per true class); empty rows stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def correction_effect(y_true: np.ndarray, pred_primary: np.ndarray, pred_corrected: np.ndarray) -> dict:
    """What reliability balancing did to the top class: predictions it fixed, broke or changed."""
    y_true, p, c = (np.asarray(a, dtype=np.int64) for a in (y_true, pred_primary, pred_corrected))
    p_ok, c_ok = p == y_true, c == y_true
    return {
        "n": int(len(y_true)),
        "changed": int((p != c).sum()),
        "fixed": int((~p_ok & c_ok).sum()),  # primary wrong, corrected right
        "broke": int((p_ok & ~c_ok).sum()),  # primary right, corrected wrong
        "both_right": int((p_ok & c_ok).sum()),
        "both_wrong": int((~p_ok & ~c_ok).sum()),
    }


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> dict:
    """Expected calibration error of the top-class probability, with its reliability-diagram bins.

    Confidence = max probability; bin b holds confidences in ((b-1)/n, b/n] (the first also holds 0).
    ECE = sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|. Empty bins contribute nothing.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    n = len(y_true)
    conf = probs.max(axis=1) if n else np.zeros(0)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64) if n else np.zeros(0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    nz = count > 0
    mean_conf = np.divide(sum_conf, count, out=np.full(n_bins, np.nan), where=nz)
    acc = np.divide(sum_acc, count, out=np.full(n_bins, np.nan), where=nz)
    ece = float(np.sum(count[nz] / n * np.abs(acc[nz] - mean_conf[nz]))) if n else float("nan")
    return {
        "ece": ece,
        "n_bins": n_bins,
        "edges": edges.tolist(),
        "count": count.tolist(),
        "confidence": _nan_to_none(mean_conf),
        "accuracy": _nan_to_none(acc),
        "mean_confidence": float(conf.mean()) if n else float("nan"),
    }


def wrong_prediction_shares(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Fig. 7: each class's share of all wrong predictions, by true class and by predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    wrong = y_true != y_pred
    n_wrong = int(wrong.sum())
    by_true = np.bincount(y_true[wrong], minlength=num_classes)
    by_pred = np.bincount(y_pred[wrong], minlength=num_classes)
    denom = max(n_wrong, 1)
    return {
        "n_wrong": n_wrong,
        "by_true_class": (by_true / denom).tolist(),
        "by_predicted_class": (by_pred / denom).tolist(),
        "count_by_true_class": by_true.tolist(),
    }


def group_accuracy(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    codes: np.ndarray,
    names: Mapping[int, str] | None = None,
    min_count: int = 1,
) -> dict:
    """Accuracy per value of one attribute (code -1 = unknown, left out) and the largest gap.

    The gap is taken over groups with at least ``min_count`` samples, so a group of two images
    does not decide it.
    """
    y_true, y_pred, codes = (np.asarray(a, dtype=np.int64) for a in (y_true, y_pred, codes))
    groups = []
    for code in np.unique(codes[codes >= 0]):
        sel = codes == code
        groups.append(
            {
                "code": int(code),
                "name": (names or {}).get(int(code), str(int(code))),
                "n": int(sel.sum()),
                "accuracy": float((y_true[sel] == y_pred[sel]).mean()),
            }
        )
    ranked = [g for g in groups if g["n"] >= min_count]
    gap = None
    if len(ranked) >= 2:
        best = max(ranked, key=lambda g: g["accuracy"])
        worst = min(ranked, key=lambda g: g["accuracy"])
        gap = {"value": best["accuracy"] - worst["accuracy"], "best": best["name"], "worst": worst["name"]}
    return {"groups": groups, "gap": gap, "min_count": min_count}


def total_variation(primary: np.ndarray, corrected: np.ndarray) -> np.ndarray:
    """How much reliability balancing moved each distribution: 0.5 * ||L_final - l||_1, in [0, 1]."""
    return 0.5 * np.abs(np.asarray(corrected, np.float64) - np.asarray(primary, np.float64)).sum(axis=1)


def distribution_stats(probs: np.ndarray) -> dict:
    """Sec. 7's summary of a set of distributions: max, min, and mean per-sample standard deviation."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size == 0:
        return {"max": float("nan"), "min": float("nan"), "std": float("nan"), "mean_top": float("nan")}
    return {
        "max": float(probs.max()),
        "min": float(probs.min()),
        "std": float(probs.std(axis=1).mean()),
        "mean_top": float(probs.max(axis=1).mean()),
    }


def cluster_scores(points: np.ndarray, labels: np.ndarray) -> dict:
    """Fig. 5: Davies-Bouldin (lower is better) and Calinski-Harabasz (higher is better) scores."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or len(labels) <= len(np.unique(labels)):
        return {"davies_bouldin": None, "calinski_harabasz": None}
    points = np.asarray(points, dtype=np.float64)
    return {
        "davies_bouldin": float(skm.davies_bouldin_score(points, labels)),
        "calinski_harabasz": float(skm.calinski_harabasz_score(points, labels)),
    }


def subsample(n: int, cap: int, labels: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``cap`` of ``n`` samples, stratified by label when given (seeded)."""
    if cap <= 0 or n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, size=cap, replace=False))
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    strat = labels if counts.min() >= 2 else None
    keep, _ = train_test_split(np.arange(n), train_size=cap, stratify=strat, random_state=seed)
    return np.sort(keep)


def tsne_2d(embedding: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of the embeddings (scikit-learn, PCA initialisation, seeded)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(embedding, dtype=np.float32)
    if len(x) < 5:
        return np.zeros((len(x), 2), np.float32)
    perplexity = float(min(perplexity, (len(x) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    # One OpenMP thread: on a shared or busy machine, spinning OpenMP workers made scikit-learn's
    # Barnes-Hut t-SNE 5x slower here (9 s -> 50 s for 600 points on 2 busy cores).
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x).astype(np.float32)


def _nan_to_none(a: Sequence[float]) -> list:
    return [None if (v is None or np.isnan(v)) else float(v) for v in a]
