"""CPU frames/s of `grefel predict` on a video, tiny and full presets, with the detector's share shown apart.

Prints figures (medians of ``--repeats`` runs after a warm-up; presets timed in the same run,
interleaved); asserts nothing.

    python bench/bench_predict_video.py                       # 48 frames of 640 x 360, two faces, 1 thread
    python bench/bench_predict_video.py --frames 96 --threads 2 --presets tiny

The video is written by the script from the synthetic faces (two faces a frame, one moving; MJPG
.avi). Models have random weights (7 classes); speed does not depend on them. Timed, per preset:

  decode      reading and converting the frames (OpenCV), nothing else
  detect      decode + the face detector and aligner (RetinaFace mobile0.25 in ONNX Runtime, the
              default ``retinaface-onnx``) on every frame
  predict     ``Predictor.run`` on the video: decode, detect, track, classify (PyTorch eager, batches
              of 32 faces), records; the same code as ``grefel predict clip.avi``

The detector's share is detect / predict; the classifier's is (predict - detect) / predict.
Detector and model get ``--threads`` threads each.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_onnx import random_checkpoint  # noqa: E402


def write_clip(path: Path, frames: int, size=(640, 360), rate: float = 25.0) -> Path:
    import cv2

    from grefel.synth import faces as synth

    a = np.asarray(synth.draw_image(0, 3, "anger", 1, size=128).convert("RGB"))
    b = np.asarray(synth.draw_image(0, 1, "joy", 1, size=160).convert("RGB"))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), rate, size)
    for k in range(frames):
        f = np.full((size[1], size[0], 3), 70, np.uint8)
        x = 40 + (3 * k) % 200
        f[100:228, x : x + 128] = a
        f[90:250, 420:580] = b
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,full")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from grefel.data.align import FaceAligner
    from grefel.inference.predict import Predictor
    from grefel.inference.video import VideoReader

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.avi", args.frames)
        aligner = FaceAligner("retinaface-onnx", size=128, threads=args.threads)
        predictors = {}
        for preset in args.presets.split(","):
            p = Predictor(random_checkpoint(preset, Path(tmp)), device="cpu")
            p._aligner = aligner  # the same detector with --threads threads (Predictor makes one with defaults)
            predictors[preset] = p

        def decode():
            for _ in VideoReader(clip):
                pass

        def detect():
            for _, _, rgb in VideoReader(clip):
                aligner.align(rgb)

        jobs = {"decode": decode, "detect": detect}
        jobs.update({f"predict {k}": (lambda p=p: p.run([clip], show_progress=False)) for k, p in predictors.items()})
        for fn in jobs.values():
            fn()  # warm-up
        times = {k: [] for k in jobs}
        for _ in range(args.repeats):
            for k, fn in jobs.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        n = args.frames
        print(f"torch {torch.__version__}, threads {args.threads}, {n} frames 640x360, medians of {args.repeats}")
        print(f"decode only          {n / med['decode']:8.1f} frames/s")
        print(f"decode + detect      {n / med['detect']:8.1f} frames/s")
        for preset in predictors:
            total = med[f"predict {preset}"]
            share = med["detect"] / total
            print(
                f"predict, {preset:5s}      {n / total:8.1f} frames/s   detector {share:5.1%} of the time, "
                f"classifier and the rest {1 - share:5.1%}"
            )


if __name__ == "__main__":
    main()
