"""How long `grefel report` takes for one run of N samples, and where the time goes (CPU only).

Generates a predictions file with class structure (N samples, 7 classes, 768-d embeddings, RAF-DB
style attributes), then times each stage of :mod:`grefel.report.build` several times and prints
medians: numbers without t-SNE, t-SNE alone, figures (PNG + SVG), and the whole report.

    python bench/report_speed.py --n 3000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grefel.evaluation import metrics as M  # noqa: E402
from grefel.evaluation.predictions import read_predictions, write_predictions  # noqa: E402
from grefel.report import build as B  # noqa: E402

CLASSES = ["Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger"]


def make_predictions(path: Path, n: int, dim: int = 768, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    c = len(CLASSES)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 1.5
    prim = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    logits[np.arange(n), y] += 0.5
    corr = np.exp(0.7 * logits) / np.exp(0.7 * logits).sum(1, keepdims=True)
    emb = (rng.normal(0, 1, (c, dim))[y] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    cols = {
        "index": np.arange(n),
        "source": np.array([f"{i}.jpg" for i in range(n)]),
        "group": np.array([""] * n),
        "split": np.array(["test"] * n),
        "label": y,
        "gender": rng.integers(-1, 3, n),
        "race": rng.integers(0, 3, n),
        "age": rng.integers(0, 5, n),
        "pred_primary": prim.argmax(1),
        "pred_corrected": corr.argmax(1),
    }
    for k in ("conf_primary", "conf_geometric", "conf_attentive", "conf_correction"):
        cols[k] = rng.random(n).astype(np.float32)
    cols.update(primary=prim, geometric=corr, attentive=corr, correction=corr, corrected=corr, embedding=emb)
    meta = {
        "classes": CLASSES,
        "dataset": {"name": "rafdb"},
        "split": "test",
        "label_set": "clean",
        "attributes": ["gender", "race", "age"],
        "attribute_codes": {},
    }
    return write_predictions(path, cols, meta)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--tsne-points", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="grefel-report-bench-"))
    src = make_predictions(tmp / "p.parquet", args.n)
    pred = read_predictions(src)
    r = args.repeats
    t_numbers, res = timed(lambda: B.analyze(pred, tsne_points=0), r)
    emb = pred.arrays["embedding"][M.subsample(len(pred), args.tsne_points, pred.table["label"].to_numpy())]
    t_tsne, _ = timed(lambda: M.tsne_2d(emb), r)
    full = B.analyze(pred, tsne_points=args.tsne_points)
    t_figs, _ = timed(lambda: B.draw_run_figures(pred, full, tmp / "figs"), r)
    t_all, _ = timed(lambda: B.build_report([src], out=tmp / "rep", tsne_points=args.tsne_points), r)
    print(f"{args.n} samples, t-SNE on {len(emb)}; medians of {r} runs")
    print(f"  numbers without t-SNE  {t_numbers:7.2f} s")
    print(f"  t-SNE                  {t_tsne:7.2f} s")
    print(f"  figures (PNG + SVG)    {t_figs:7.2f} s")
    print(
        f"  whole report           {t_all:7.2f} s   (HTML {(tmp / 'rep' / 'report.html').stat().st_size / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    main()
