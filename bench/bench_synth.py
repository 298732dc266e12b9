"""Benchmark of `grefel synth`: images/s drawn and written, against writing the same PNGs alone.

Prints figures (medians of several runs; the ratio is measured in the same run), asserts nothing.

    python bench/bench_synth.py                        # defaults below
    python bench/bench_synth.py --n 700 --size 128 --repeats 5 --workers 1,2

Rows, each over the same ``n`` images (balanced over 7 expressions and 6 characters):

draw_image        draw_face only (PIL image in memory): the drawing cost.
png-only    encode + write already drawn images the way generate does (PNG, zlib RLE, temporary
            name, rename): the floor of any generator that writes PNG files.
generate    the whole ``generate`` call (plan, draw_image, encode, write, marker) into a fresh folder,
            for each worker count.

Figures are wall-clock img/s and, for the one-process rows, CPU img/s (process time: closer to
what an idle core gives when the machine is shared). Target: >= 200 img/s per core at 128 px.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grefel.synth.faces import EXPRESSIONS, draw_image, generate


def _jobs(n: int):
    return [(k % 6, EXPRESSIONS[k % 7], k // 42 + 1) for k in range(n)]


def bench_draw(n: int, size: int):
    t, c = time.perf_counter(), time.process_time()
    images = [draw_image(0, ch, e, i, size) for ch, e, i in _jobs(n)]
    return n / (time.perf_counter() - t), n / (time.process_time() - c), images


def bench_png(images, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    t, c = time.perf_counter(), time.process_time()
    for k, im in enumerate(images):
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
        tmp, final = folder / f".{k}.png.tmp", folder / f"{k}.png"
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, final)
    return len(images) / (time.perf_counter() - t), len(images) / (time.process_time() - c)


def bench_generate(n: int, size: int, workers: int, folder: Path):
    per_class = max(1, round(n / 42))  # 6 characters x 7 expressions, balanced
    total = 42 * per_class
    t, c = time.perf_counter(), time.process_time()
    generate(
        folder, characters=6, per_class=per_class, imbalance=1.0, size=size, seed=0, workers=workers, progress=False
    )
    return total / (time.perf_counter() - t), total / (time.process_time() - c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=420)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    rows: dict[str, list[tuple[float, float]]] = {}
    draw_image(0, 0, "joy", 1, args.size)  # warm caches
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            wall, cpu, images = bench_draw(args.n, args.size)
            rows.setdefault("draw_image", []).append((wall, cpu))
            rows.setdefault("png-only", []).append(bench_png(images, Path(tmp) / f"png{r}"))
            for w in workers:
                wall, cpu = bench_generate(args.n, args.size, w, Path(tmp) / f"gen{r}-{w}")
                rows.setdefault(f"generate w={w}", []).append((wall, cpu if w == 1 else float("nan")))
    print(f"synth at {args.size} px, {args.n} images, median of {args.repeats} runs, {os.cpu_count()} CPUs")
    print(f"{'row':<14}{'img/s wall':>12}{'img/s cpu':>12}")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in rows.items()}
    for k, (w, c) in med.items():
        print(f"{k:<14}{w:>12.0f}{c:>12.0f}")
    g = med["generate w=1"][0]
    print(f"share of generate's time (w=1, wall) spent encoding and writing the PNGs: {g / med['png-only'][0]:.0%}")


if __name__ == "__main__":
    main()
