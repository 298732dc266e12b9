"""The predictions file format, and `fake_predictions`: generated predictions tables for report tests.

Report code consumes a predictions file, not a model, so its tests start from a generated table
whose numbers are known (labels, predictions, distributions, embeddings with class structure).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from grefel.core.errors import GrefelError
from grefel.evaluation.predictions import read_predictions, read_predictions_meta, write_predictions

CLASSES = ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger")


def fake_predictions(
    path: Path,
    *,
    n: int = 400,
    classes=CLASSES,
    seed: int = 0,
    dim: int = 16,
    num_anchors: int = 10,
    noise: float = 0.1,
    label_smoothing: float = 0.0,
    attributes: bool = True,
    dataset: str = "rafdb",
    synthetic: bool = False,
) -> Path:
    """Write a predictions file with learnable structure: correction helps, embeddings cluster by class."""
    rng = np.random.default_rng(seed)
    c = len(classes)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 1.2
    primary = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    logits2 = logits.copy()
    logits2[np.arange(n), y] += 0.6
    corrected = np.exp(0.7 * logits2) / np.exp(0.7 * logits2).sum(1, keepdims=True)
    emb = rng.normal(0, 3, (c, dim))[y] + rng.normal(0, 1.5, (n, dim))
    cols = {
        "index": np.arange(n) * 3 + 1,
        "source": np.array([f"test_{i:05d}.jpg" for i in range(n)]),
        "group": np.array([f"s{i % 7}" for i in range(n)]),
        "split": np.array(["test"] * n),
        "label": y,
    }
    yn = y.copy()
    flip = rng.random(n) < noise
    yn[flip] = (y[flip] + 1) % c
    cols["label_noisy"] = yn
    if attributes:
        cols["gender"] = rng.integers(-1, 3, n)
        cols["race"] = rng.integers(0, 3, n)
    cols["pred_primary"] = primary.argmax(1)
    cols["pred_corrected"] = corrected.argmax(1)
    for k in ("conf_primary", "conf_geometric", "conf_attentive", "conf_correction"):
        cols[k] = rng.random(n).astype(np.float32)
    cols.update(
        primary=primary,
        geometric=corrected,
        attentive=corrected,
        correction=corrected,
        corrected=corrected,
        embedding=emb,
    )
    meta = {
        "classes": list(classes),
        "dataset": {"name": dataset, "protocol": "basic", "synthetic": synthetic},
        "split": "test",
        "label_set": f"noise{int(noise * 100)}",
        "label_set_info": {"noise": noise, "mode": "symmetric", "seed": 0},
        "model_config": {"preset": "tiny", "num_classes": c, "num_anchors": num_anchors},
        "config": {"label_smoothing": label_smoothing},
        "epoch": 3,
        "attributes": ["gender", "race"] if attributes else [],
        "attribute_codes": {"gender": {"0": "male", "1": "female", "2": "unsure"}},
    }
    return write_predictions(path, cols, meta)


def test_round_trip_keeps_every_column(tmp_path):
    p = fake_predictions(tmp_path / "p.parquet", n=50, dim=12)
    pred = read_predictions(p)
    assert pred.classes == list(CLASSES)
    assert pred.arrays["corrected"].shape == (50, 7) and pred.arrays["embedding"].shape == (50, 12)
    assert pred.arrays["primary"].dtype == np.float32
    np.testing.assert_allclose(pred.arrays["primary"].sum(1), 1, atol=1e-5)
    assert (pred.table["pred_corrected"].to_numpy() == pred.arrays["corrected"].argmax(1)).all()
    assert list(pred.table["index"][:3]) == [1, 4, 7]
    assert pred.attributes == ["gender", "race"]
    assert read_predictions_meta(p)["format"] == "grefel-predictions"


def test_file_is_plain_parquet(tmp_path):
    """Any Parquet reader gets the same numbers without grefel (pandas here)."""
    p = fake_predictions(tmp_path / "p.parquet", n=20)
    df = pd.read_parquet(p)
    pred = read_predictions(p)
    np.testing.assert_array_equal(np.stack(df["corrected"].to_numpy()), pred.arrays["corrected"])
    meta = json.loads(pq.read_schema(p).metadata[b"grefel"])
    assert meta["classes"] == list(CLASSES)


def test_not_a_predictions_file(tmp_path):
    import pyarrow as pa

    p = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), p)
    with pytest.raises(GrefelError, match="not a grefel predictions file"):
        read_predictions(p)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 truncated")
    with pytest.raises(GrefelError, match="cannot be read"):
        read_predictions(bad)
