"""Benchmark of `grefel prepare`: throughput against the detector alone, flat memory, stored size.

Prints figures (medians of several runs; ratios measured in the same run), asserts nothing.

    python bench/bench_prepare.py                      # all parts, defaults below
    python bench/bench_prepare.py --part throughput --n 1000 --repeats 3
    python bench/bench_prepare.py --part memory --memory-sizes 10000,50000
    python bench/bench_prepare.py --part size
    python bench/bench_prepare.py --part listing --n 20000

Parts:

throughput  RAF-DB-layout tree of ``n`` 100 x 100 (``--image-sizes``) JPEG faces (crops of skimage's astronaut and
            matplotlib's grace_hopper with random jitter). Images/s of ``prepare`` with
            ``--align none`` and with the offline detector (``retinaface-onnx``), and the detector's
            own images/s on the same, already decoded images: one session with its default threads, and
            one-thread runs in as many threads as prepare's lanes (the faster of the two is the
            reference). The target: prepare with the detector keeps >= 80 % of that rate.
memory      Peak resident memory of ``prepare --align none`` (in a child process) on 10k and 50k images:
            it must not grow with the dataset (items stream, shards are written sample by sample).
listing     What identifying the input costs before a run: the listing pass (every item's name, label, split
            and its files' size and mtime, hashed per chunk; what a rerun compares) against merely counting
            the items, on a RAF-DB tree with the manual annotation, per item and as a ratio.
size        For stored sizes S in 112..256: bytes per image (raw and gzip), random batch read speed,
            and how faithful the network's 112 x 112 evaluation view is (PSNR against a view
            rendered directly from the source at 4x and area-reduced), with the paper's
            resize-256 / crop-224 / nearest-112 path as the S = 256 row.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def face_crops(n: int, size: int = 100, seed: int = 0) -> list[bytes]:
    """``n`` JPEG byte strings of jittered face crops from the two photographs shipped in packages."""
    import cv2
    import matplotlib.cbook as cbook
    import skimage.data
    from PIL import Image

    from grefel.data.align import FaceAligner

    photos = [
        skimage.data.astronaut(),
        np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")),
    ]
    boxes = [FaceAligner(size=size).detect(p)[0][0] for p in photos]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = i % 2
        p, (x1, y1, x2, y2) = photos[k], boxes[k]
        side = (x2 - x1) * rng.uniform(1.8, 2.4)
        cx, cy = (x1 + x2) / 2 + rng.uniform(-0.1, 0.1) * side, (y1 + y2) / 2 + rng.uniform(-0.1, 0.1) * side
        s = size / side
        m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
        img = cv2.warpAffine(p, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
        img = np.clip(img.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        ok, enc = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(enc.tobytes())
    return out


def make_rafdb_tree(root: Path, n: int, distinct: int | None = None, original: bool = True, size: int = 100) -> Path:
    """RAF-DB layout: the same bytes under Image/aligned (for --align none) and Image/original (detector)."""
    crops = face_crops(min(n, distinct or n), size)
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    if original:
        (root / "Image" / "original").mkdir(parents=True)
    lines = []
    for i in range(n):
        stem = f"train_{i + 1:05d}" if i < 99999 else f"train_{i + 1}"
        data = crops[i % len(crops)]
        (root / "Image" / "aligned" / f"{stem}_aligned.jpg").write_bytes(data)
        if original:
            (root / "Image" / "original" / f"{stem}.jpg").write_bytes(data)
        lines.append(f"{stem}.jpg {1 + i % 7}")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def time_prepare(raw: Path, out: Path, align: str, workers: int, threads: int | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one prepare run."""
    from grefel.data.prepare import prepare

    shutil.rmtree(out, ignore_errors=True)
    t, c = time.perf_counter(), time.process_time()
    prepare("rafdb", raw, out=out, align=align, workers=workers, threads=threads, progress=False)
    return time.perf_counter() - t, time.process_time() - c


def time_detector(images: list[np.ndarray], threads: int | None = None, lanes: int = 1) -> tuple[float, float]:
    """(wall, CPU) seconds of the detector alone on decoded images (its own pre/post-processing included).

    ``lanes > 1``: that many threads share one session, each run on one thread (what prepare's
    one-process pipeline does), the most images/s the detector gives on this machine.
    """
    from concurrent.futures import ThreadPoolExecutor

    from grefel.data.align import FaceAligner

    al = FaceAligner("retinaface-onnx", size=128, threads=1 if lanes > 1 else threads)
    al.detect(images[0])
    t, c = time.perf_counter(), time.process_time()
    if lanes > 1:
        with ThreadPoolExecutor(lanes) as pool:
            for _ in pool.map(al.detect, images, chunksize=16):
                pass
    else:
        for im in images:
            al.detect(im)
    return time.perf_counter() - t, time.process_time() - c


def part_throughput(work: Path, n: int, repeats: int, size: int = 100) -> None:
    import cv2

    from grefel.core.images import decode_image
    from grefel.data.prepare import _lanes

    cv2.setNumThreads(1)  # as prepare runs OpenCV
    lanes = _lanes("retinaface-onnx", 1, None)
    raw = make_rafdb_tree(work / "raw", n, size=size)
    images = [decode_image(p.read_bytes()) for p in sorted((raw / "Image" / "original").iterdir())]
    keys = ("none w1", "none w2", "detector w1", "detector w2", "detector alone", f"detector alone x{lanes}")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    wall_ratio, cpu_ratio, cpu_ms = [], [], []
    for r in range(repeats):
        det = n / time_detector(images)[0]
        det_lanes = n / time_detector(images, lanes=lanes)[0]
        pipe = n / time_prepare(raw, work / "out", "retinaface-onnx", 1)[0]
        rows["detector alone"].append(det)
        rows[f"detector alone x{lanes}"].append(det_lanes)
        rows["detector w1"].append(pipe)
        wall_ratio.append(pipe / max(det, det_lanes))
        rows["detector w2"].append(n / time_prepare(raw, work / "out", "retinaface-onnx", 2)[0])
        rows["none w1"].append(n / time_prepare(raw, work / "out", "none", 1)[0])
        rows["none w2"].append(n / time_prepare(raw, work / "out", "none", 2)[0])
        # CPU time with a one-thread detector and one lane: insensitive to other users of the machine
        det_cpu = time_detector(images, threads=1)[1]
        pipe_cpu = time_prepare(raw, work / "out", "retinaface-onnx", 1, threads=1)[1]
        cpu_ratio.append(det_cpu / pipe_cpu)
        cpu_ms.append((1000 * det_cpu / n, 1000 * pipe_cpu / n))
        print(
            f"  run {r + 1}/{repeats}: "
            + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rows.items())
            + f"; CPU ms/image detector {cpu_ms[-1][0]:.2f}, prepare {cpu_ms[-1][1]:.2f}",
            flush=True,
        )
    print(
        f"\nthroughput, {n} {size}x{size} JPEG faces, {os.cpu_count()} CPU cores, median of {repeats} runs (images/s):"
    )
    for k, v in rows.items():
        print(f"  {k:<22} {statistics.median(v):8.0f}   (min {min(v):.0f}, max {max(v):.0f})")
    print(
        f"  prepare with detector (1 worker, {lanes} lanes) / the faster detector-alone row, wall clock: "
        f"{statistics.median(wall_ratio):.2f} (runs: {', '.join(f'{x:.2f}' for x in wall_ratio)}); target >= 0.80"
    )
    print(
        f"  CPU time, 1-thread detector, 1 lane: detector / prepare {statistics.median(cpu_ratio):.2f} "
        f"(detector {statistics.median(c[0] for c in cpu_ms):.2f} ms/image, prepare "
        f"{statistics.median(c[1] for c in cpu_ms):.2f} ms/image)"
    )
    alone = max(statistics.median(rows["detector alone"]), statistics.median(rows[f"detector alone x{lanes}"]))
    print(f"  2 workers / the faster detector-alone row: {statistics.median(rows['detector w2']) / alone:.2f}")


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"child failed: {' '.join(cmd)}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t


def part_memory(work: Path, sizes: list[int], workers: int) -> None:
    print(f"\npeak resident memory of prepare --align none ({workers} worker(s); child process):")
    for n in sizes:
        raw = make_rafdb_tree(work / f"raw{n}", n, distinct=500, original=False)
        out = work / f"out{n}"
        code = (
            "import sys; from grefel.data.prepare import prepare; "
            f"prepare('rafdb', sys.argv[1], out=sys.argv[2], workers={workers}, progress=False)"
        )
        rss, secs = peak_rss_mib([sys.executable, "-c", code, str(raw), str(out)])
        print(f"  {n:>7,} images: peak RSS {rss:7.1f} MiB, {secs:6.1f} s ({n / secs:,.0f} images/s)", flush=True)
        shutil.rmtree(raw), shutil.rmtree(out)


def part_listing(work: Path, n: int, repeats: int) -> None:
    from grefel.data.prepare import _list_items
    from grefel.data.raw import open_reader

    raw = make_rafdb_tree(work / "raw", n, distinct=200, original=False)
    (raw / "Annotation" / "manual").mkdir(parents=True)
    for i in range(n):
        (raw / "Annotation" / "manual" / f"train_{i + 1:05d}_manu_attri.txt").write_text("1 2\n" * 5 + "0\n0\n0\n")
    reader = open_reader("rafdb", raw, align="none")
    count, listing = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        sum(1 for _ in reader.items())
        count.append(time.perf_counter() - t)
        t = time.perf_counter()
        _list_items(reader, 1024)
        listing.append(time.perf_counter() - t)
    c, li = statistics.median(count), statistics.median(listing)
    print(f"\nlisting {n:,} items (median of {repeats}): counting {c * 1e6 / n:.1f} us/item, listing with stamps")
    print(f"  {li * 1e6 / n:.1f} us/item ({li:.2f} s), {li / c:.1f}x the count")
    shutil.rmtree(raw)


def part_size(work: Path, n: int) -> None:
    import cv2
    import h5py
    import matplotlib.cbook as cbook
    import skimage.data
    from PIL import Image

    from grefel.core.io import write_json
    from grefel.data.align import FaceAligner, align_landmarks
    from grefel.data.shards import PreparedDataset, Sample, write_shard

    photos = [
        skimage.data.astronaut(),
        np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")),
    ]
    photos += [cv2.resize(p, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC) for p in photos]  # high-res sources
    det = FaceAligner(size=128)
    lms = [det.detect(p)[2][0] for p in photos]

    def psnr(a, b):
        mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
        return 10 * np.log10(255**2 / mse)

    def eval_view(img_s: np.ndarray, s: int) -> np.ndarray:
        c = round(s * 112 / 128)  # the same 0.875 centre crop at every size
        o = (s - c) // 2
        crop = img_s[o : o + c, o : o + c]
        return crop if c == 112 else cv2.resize(crop, (112, 112), interpolation=cv2.INTER_NEAREST)  # model: nearest

    print("\nstored size: bytes per image, random read speed, fidelity of the 112 x 112 evaluation view")
    print(f"  {'S':>4} {'bytes/img':>10} {'gzip':>8} {'read img/s':>11} {'gzip img/s':>11} {'PSNR dB':>8}")
    crops = [Image.open(io.BytesIO(b)).convert("RGB") for b in face_crops(n)]
    for s in (112, 128, 160, 224, 256):
        # fidelity: reference = the same region rendered at 4 x 128 and area-reduced to 112
        scores = []
        for p, lm in zip(photos, lms):
            ref_big = align_landmarks(p, lm, 512).image
            ref = cv2.resize(ref_big[32:480, 32:480], (112, 112), interpolation=cv2.INTER_AREA)
            scores.append(psnr(eval_view(align_landmarks(p, lm, s).image, s), ref))
        # bytes and read speed on n aligned faces
        faces = [np.asarray(c.resize((s, s), Image.BILINEAR)) for c in crops]
        speeds, sizes = [], []
        for comp in (None, "gzip"):
            root = work / f"size{s}{comp or ''}"
            samples = [Sample(image=f, label=0, split="train", source=str(i)) for i, f in enumerate(faces)]
            e = write_shard(
                root / "shards" / "shard-00000.h5",
                samples,
                first_index=0,
                dataset="b",
                protocol="1",
                classes=["x"],
                image_size=s,
                compression=comp,
            )
            write_json(
                root / "manifest.json",
                {
                    "schema_version": 1,
                    "dataset": "b",
                    "protocol": "1",
                    "classes": ["x"],
                    "image_size": s,
                    "shards": [e],
                },
            )
            with h5py.File(root / e["file"], "r") as f:
                sizes.append(f["images"].id.get_storage_size() / n)
            ds = PreparedDataset(root)
            rng = np.random.default_rng(0)
            t = time.perf_counter()
            reps = 0
            while time.perf_counter() - t < 1.5:
                ds.read_images(rng.choice(n, size=min(128, n), replace=False))
                reps += 1
            speeds.append(reps * min(128, n) / (time.perf_counter() - t))
            ds.close()
            shutil.rmtree(root)
        label = " (paper: 256 -> crop 224 -> nearest 112)" if s == 256 else " (ours: crop 112)" if s == 128 else ""
        print(
            f"  {s:>4} {sizes[0]:>10,.0f} {sizes[1]:>8,.0f} {speeds[0]:>11,.0f} {speeds[1]:>11,.0f} "
            f"{statistics.mean(scores):>8.1f}{label}",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["all", "throughput", "memory", "size", "listing"], default="all")
    ap.add_argument("--n", type=int, default=1000, help="images for the throughput and size parts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--image-sizes", default="100", help="side of the generated JPEGs for the throughput part, e.g. 100,256"
    )
    ap.add_argument("--memory-sizes", default="10000,50000")
    ap.add_argument("--memory-workers", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="grefel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if a.part in ("all", "throughput"):
            for size in (int(x) for x in a.image_sizes.split(",")):
                part_throughput(work / f"tp{size}", a.n, a.repeats, size)
        if a.part in ("all", "memory"):
            part_memory(work / "mem", [int(x) for x in a.memory_sizes.split(",")], a.memory_workers)
        if a.part in ("all", "size"):
            part_size(work / "size", min(a.n, 512))
        if a.part in ("all", "listing"):
            part_listing(work / "listing", a.n, a.repeats)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
