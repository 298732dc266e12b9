"""CPU images/s of an exported model through ONNX Runtime against the same model in PyTorch eager.

Prints figures (medians of ``--repeats`` timed runs after a warm-up; ORT and PyTorch are timed in the
same run, interleaved, so that machine load hits both alike); asserts nothing.

    python bench/bench_onnx.py                        # tiny and full presets, batch 32 and 1, 1 thread
    python bench/bench_onnx.py --presets tiny --batches 64 --threads 2

What is timed: one call on a batch of aligned uint8 faces (128 x 128, random pixels, random-weight
models) through the model interface `grefel predict` uses (``grefel.inference.classifier``): the evaluation
preset (centre crop 112, mean/std) plus the forward pass returning the primary and corrected
distributions and the embedding. PyTorch: ``TorchClassifier`` (eval mode, ``inference_mode``, fp32).
ONNX Runtime: ``OnnxClassifier`` on the file ``grefel export`` writes (preprocessing in numpy).
Both use ``--threads`` intra-op threads. The export itself (tens of seconds) is not timed.
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


def random_checkpoint(preset: str, out: Path) -> Path:
    """A random-weight checkpoint of ``preset`` with 7 classes (what `grefel export` and predict read)."""
    import torch

    from grefel.models.grefel import create_model
    from grefel.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model(preset, num_classes=7)
    classes = ["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    return save_checkpoint(
        out / f"{preset}.pt",
        {
            "model": model.state_dict(),
            "model_config": model.model_config,
            "model_kwargs": model.model_kwargs,
            "dataset": {"classes": classes},
        },
    )


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,full")
    ap.add_argument("--batches", default="32,1", help="batch sizes, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch

    from grefel.inference.export import export_onnx
    from grefel.inference.onnx_model import OnnxClassifier
    from grefel.inference.torch_model import TorchClassifier

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, threads {args.threads}, medians of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            ckpt = random_checkpoint(preset, Path(tmp))
            onnx = export_onnx(ckpt, Path(tmp) / f"{preset}.onnx").path
            engines = {"torch": TorchClassifier(ckpt, "cpu"), "onnxruntime": OnnxClassifier(onnx, threads=args.threads)}
            for batch in map(int, args.batches.split(",")):
                x = rng.integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8)
                for e in engines.values():
                    e.run(x)  # warm-up
                times = {k: [] for k in engines}
                for _ in range(args.repeats):
                    for k, e in engines.items():
                        times[k].append(timed(lambda e=e, x=x: e.run(x)))
                rate = {k: batch / statistics.median(v) for k, v in times.items()}
                print(
                    f"{preset:5s} batch {batch:3d}: torch eager {rate['torch']:8.1f} img/s, "
                    f"onnxruntime {rate['onnxruntime']:8.1f} img/s, ratio {rate['onnxruntime'] / rate['torch']:.2f}x"
                )


if __name__ == "__main__":
    main()
