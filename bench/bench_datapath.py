"""Benchmark of the training data path: images/s delivered to the model, fully augmented.

Prints figures (medians of several runs; the ratio is measured in the same run), asserts nothing.

    python bench/bench_datapath.py                         # defaults below
    python bench/bench_datapath.py --n 2048 --repeats 5 --batch 128 --workers 1

Both pipelines read the same ``n`` 128 x 128 faces (jittered crops of skimage's astronaut and
matplotlib's grace_hopper) and apply the same augmentation (random crop 112, horizontal flip,
rotation +-10 deg, brightness / contrast / saturation 0.2, normalisation, random erasing p 0.5
scale 0.02-0.25), ending with a normalised float (B, 3, 112, 112) batch:

grefel      prepared HDF5 shards -> grefel.data.loader (one read per shard per batch, uint8) ->
            grefel.data.transforms.train_batch (batched, per-sample parameters; on the GPU when
            training there, on the CPU here).
imagefolder what POSTER++ users run: the same images as JPEG files (quality 95) in an
            ImageFolder tree, torchvision.datasets.ImageFolder + PIL decode + the classic
            torchvision.transforms pipeline per image (RandomCrop, RandomHorizontalFlip,
            RandomRotation, ColorJitter, ToTensor, Normalize, RandomErasing), default collate.

"Per worker": both run with the same number of DataLoader workers (default 0: everything in the
one process) and one torch thread, so the figure is throughput per CPU core. Target: grefel
>= 3x imagefolder.
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


def faces(n: int, size: int = 128, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3): jittered square crops of two photographs shipped in packages."""
    import matplotlib.cbook as cbook
    import skimage.data
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    sources = [(skimage.data.astronaut(), (20, 260, 150, 390)), (hopper, (60, 380, 170, 490))]
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img, (y0, y1, x0, x1) = sources[i % 2]
        s = int((y1 - y0) * rng.uniform(0.9, 1.1))
        y = int(np.clip(y0 + rng.integers(-15, 16), 0, img.shape[0] - s))
        x = int(np.clip(x0 + rng.integers(-15, 16), 0, img.shape[1] - s))
        out[i] = np.asarray(Image.fromarray(img[y : y + s, x : x + s]).resize((size, size), Image.BILINEAR))
    return out


def write_both(images: np.ndarray, root: Path, num_classes: int = 7) -> tuple[Path, Path]:
    """The same images as a prepared dataset (shards) and as an ImageFolder tree of JPEGs."""
    from PIL import Image

    from grefel.core.io import write_json
    from grefel.data.shards import Sample, shard_name, write_shard

    classes = [f"c{k}" for k in range(num_classes)]
    labels = np.arange(len(images)) % num_classes
    prepared, folder = root / "prepared", root / "imagefolder"
    shards, per = [], 1024
    for s, start in enumerate(range(0, len(images), per)):
        samples = [
            Sample(image=images[i], label=int(labels[i]), split="train", source=f"{i}.jpg")
            for i in range(start, min(start + per, len(images)))
        ]
        shards.append(
            write_shard(
                prepared / "shards" / shard_name(s),
                samples,
                first_index=start,
                dataset="bench",
                protocol="bench",
                classes=classes,
                image_size=images.shape[1],
            )
        )
    write_json(
        prepared / "manifest.json",
        {
            "schema_version": 1,
            "dataset": "bench",
            "protocol": "bench",
            "classes": classes,
            "image_size": images.shape[1],
            "shards": shards,
        },
    )
    for i, img in enumerate(images):
        d = folder / classes[labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:06d}.jpg", quality=95)
    return prepared, folder


def run_grefel(prepared: Path, batch: int, workers: int, epoch: int) -> float:
    import torch

    from grefel.data.loader import RankBatches, epoch_plan, make_loader
    from grefel.data.shards import PreparedDataset
    from grefel.data.transforms import TrainAugment, augment_uniforms, train_batch

    ds = PreparedDataset(prepared)
    labels = ds.labels()
    plan = epoch_plan(
        labels,
        ds.meta["group"].to_numpy(),
        np.arange(len(ds)),
        num_classes=ds.num_classes,
        epoch=epoch,
        seed=0,
        global_batch=batch,
        refine=False,
    )
    u = augment_uniforms(len(plan.indices), 0, epoch)
    aug = TrainAugment()
    loader = make_loader(ds, labels, RankBatches(plan.indices, batch), workers=workers)
    n, t0 = 0, time.perf_counter()
    for b in loader:
        x = train_batch(b["images"], u[b["pos"]], aug)
        n += len(x)
    assert x.shape[1:] == (3, 112, 112) and x.dtype == torch.float32
    return n / (time.perf_counter() - t0)


def run_imagefolder(folder: Path, batch: int, workers: int, epoch: int) -> float:
    import torch
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.RandomCrop(112),
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(10),
            transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            transforms.RandomErasing(scale=(0.02, 0.25)),
        ]
    )
    ds = datasets.ImageFolder(str(folder), transform=tf)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(epoch)
    )
    n, t0 = 0, time.perf_counter()
    for x, _ in loader:
        n += len(x)
    assert x.shape[1:] == (3, 112, 112)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="images")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of each pipeline")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: per-core figures)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        prepared, folder = write_both(faces(args.n), Path(tmp))
        print(f"wrote {args.n} faces as shards and as JPEG ImageFolder in {time.perf_counter() - t:.1f} s")
        run_grefel(prepared, args.batch, args.workers, 99)  # warm-up (imports, file cache)
        run_imagefolder(folder, args.batch, args.workers, 99)
        g, f, r = [], [], []
        for k in range(args.repeats):  # interleaved, so load changes hit both alike
            g.append(run_grefel(prepared, args.batch, args.workers, k))
            f.append(run_imagefolder(folder, args.batch, args.workers, k))
            r.append(g[-1] / f[-1])
            print(f"  run {k + 1}: grefel {g[-1]:8.1f} img/s   imagefolder {f[-1]:8.1f} img/s   ratio {r[-1]:.2f}x")
    print(f"batch {args.batch}, workers {args.workers}, torch threads {args.threads}, {args.repeats} runs (medians):")
    print(f"  grefel shards + batched augmentation : {statistics.median(g):8.1f} img/s")
    print(f"  ImageFolder + PIL + torchvision      : {statistics.median(f):8.1f} img/s")
    print(f"  ratio (median of per-run ratios)     : {statistics.median(r):8.2f}x   (target >= 3x)")


if __name__ == "__main__":
    main()
