"""Evaluation throughput and numerical agreement across devices and precisions (`grefel evaluate`).

Builds a random-weight model of a preset and a generated prepared dataset (no downloads), then runs
:func:`grefel.evaluation.evaluate.evaluate` end to end (shard reads, preset, model, Parquet write) several
times per setting and prints the median wall time, images per second, the ratio against the first
setting measured in the same run, and how far the corrected distributions (eq. 19) are from the
first setting's (max absolute difference, share of equal top classes).

    python bench/evaluate_speed.py --preset tiny --n 512                  # CPU only
    python bench/evaluate_speed.py --preset full --n 2048 --settings cpu-fp32,cuda-fp32,cuda-bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grefel.core.io import write_json  # noqa: E402
from grefel.data.shards import PreparedDataset, Sample, shard_name, write_shard  # noqa: E402
from grefel.evaluation.evaluate import evaluate  # noqa: E402
from grefel.evaluation.predictions import read_predictions  # noqa: E402
from grefel.models.grefel import create_model  # noqa: E402
from grefel.training.checkpoint import save_checkpoint  # noqa: E402

SETTINGS = {"cpu-fp32": ("cpu", False), "cuda-fp32": ("cuda", False), "cuda-bf16": ("cuda", True)}


def make_data(root: Path, n: int, classes: int = 7, seed: int = 0) -> PreparedDataset:
    rng = np.random.default_rng(seed)
    names = [f"c{k}" for k in range(classes)]
    shards = []
    for s, start in enumerate(range(0, n, 1024)):
        m = min(1024, n - start)
        imgs = rng.integers(0, 256, (m, 128, 128, 3), dtype=np.uint8)
        samples = [
            Sample(image=imgs[i], label=int((start + i) % classes), split="test", source=f"{start + i}")
            for i in range(m)
        ]
        shards.append(
            write_shard(
                root / "shards" / shard_name(s),
                samples,
                first_index=start,
                dataset="bench",
                protocol="p",
                classes=names,
                image_size=128,
            )
        )
    write_json(
        root / "manifest.json",
        {
            "schema_version": 1,
            "dataset": "bench",
            "protocol": "p",
            "classes": names,
            "image_size": 128,
            "shards": shards,
        },
    )
    return PreparedDataset(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--n", type=int, default=512, help="test images")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--settings", default="cpu-fp32", help="comma list of " + ", ".join(SETTINGS))
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="grefel-bench-"))
    ds = make_data(tmp / "data", args.n)
    torch.manual_seed(0)
    model = create_model(args.preset, num_classes=ds.num_classes)
    ckpt = save_checkpoint(
        tmp / "run" / "best.pt",
        {
            "model": model.state_dict(),
            "model_config": model.model_config,
            "model_kwargs": model.model_kwargs,
            "label_set": "clean",
            "config": {},
            "epoch": 0,
            "metrics": {},
            "dataset": {
                "name": ds.name,
                "protocol": ds.protocol,
                "classes": ds.classes,
                "manifest_sha256": ds.manifest_sha256,
                "path": str(ds.root),
            },
        },
    )
    print(
        f"preset {args.preset}, {args.n} images, batch {args.batch_size}, torch {torch.__version__}, "
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda'}, "
        f"{torch.get_num_threads()} CPU threads",
        flush=True,
    )
    rows, ref = [], None
    for name in args.settings.split(","):
        device, amp = SETTINGS[name]
        if device == "cuda" and not torch.cuda.is_available():
            print(f"{name}: skipped (no CUDA)")
            continue
        out = tmp / f"{name}.parquet"
        times = []
        for r in range(args.repeats + 1):  # first run warms up (cuDNN autotune, allocator); not counted
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            evaluate(ckpt, out=out, device=device, amp=amp, batch_size=args.batch_size, force=True, show_progress=False)
            if r:
                times.append(time.perf_counter() - t)
        pred = read_predictions(out)
        med = statistics.median(times)
        row = {"setting": name, "median_s": med, "images_per_s": len(pred) / med, "runs": times}
        if ref is None:
            ref = (pred, med)
        else:
            a, b = ref[0].arrays["corrected"], pred.arrays["corrected"]
            row["speedup_vs_first"] = ref[1] / med
            row["max_abs_diff_corrected"] = float(np.abs(a - b).max())
            row["top_class_agreement"] = float((a.argmax(1) == b.argmax(1)).mean())
        if device == "cuda":
            row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
