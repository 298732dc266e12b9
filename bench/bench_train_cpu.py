"""Benchmark of training the tiny preset on the CPU: images/s end to end, against the model alone.

Prints figures (medians of several runs; the ratio is measured in the same run), asserts nothing.

    python bench/bench_train_cpu.py                        # defaults below
    python bench/bench_train_cpu.py --threads 2 --epochs 5 --per-class 32

model only   forward + GReFELLoss + backward + Adam step of ``create_model("tiny")`` on random
             normalised (B, 3, 112, 112) tensors already in memory: the ceiling.
end to end   ``grefel.training.loop.train`` (preset tiny, the paper's recipe: refinement, full
             augmentation, all three losses, validation each epoch) on a prepared dataset of
             128 px faces read from shards; the figure is the training loop's images/s of each
             epoch after the first (metrics.jsonl), so data loading and augmentation are included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_dataset(root: Path, classes: int, per_class: int, seed: int = 0) -> Path:
    """A prepared dataset of jittered face crops, ``per_class`` train + a quarter as many val per class."""
    from bench_datapath import faces

    from grefel.core.io import write_json
    from grefel.data.shards import Sample, shard_name, write_shard

    n_val = max(2, per_class // 4)
    n = classes * (per_class + n_val)
    imgs = faces(n, seed=seed)
    names = [f"c{k}" for k in range(classes)]
    samples = [
        Sample(
            image=imgs[i],
            label=i % classes,
            split="train" if i // classes < per_class else "val",
            source=f"{i}.png",
            group=f"g{i % 5}",
        )
        for i in range(n)
    ]
    shards = [
        write_shard(
            root / "shards" / shard_name(0),
            samples,
            first_index=0,
            dataset="bench",
            protocol="bench",
            classes=names,
            image_size=128,
        )
    ]
    write_json(
        root / "manifest.json",
        {
            "schema_version": 1,
            "dataset": "bench",
            "protocol": "bench",
            "classes": names,
            "image_size": 128,
            "shards": shards,
        },
    )
    return root


def model_only(preset: str, classes: int, batch: int, steps: int) -> float:
    import torch

    from grefel.models.grefel import create_model
    from grefel.models.losses import GReFELLoss

    torch.manual_seed(0)
    model = create_model(preset, classes).train()
    crit = GReFELLoss()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    x = torch.randn(batch, 3, 112, 112)
    y = torch.arange(batch) % classes

    def step():
        loss = crit(model(x), y)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def end_to_end(
    prepared: Path, runs: Path, name: str, preset: str, per_class: int, batch: int, epochs: int, workers: int
) -> list[float]:
    from grefel.training.config import TrainConfig
    from grefel.training.loop import train

    run = train(
        TrainConfig(
            dataset=str(prepared),
            preset=preset,
            epochs=epochs,
            per_class=per_class,
            batch_size=batch,
            workers=workers,
            quiet=True,
            run_dir=str(runs),
            name=name,
            device="cpu",
            # random weights, but the paper's compute: the landmark stream frozen as when pretrained
            from_scratch=True,
            model_args={"encoder": {"freeze_landmarks": True}},
        )
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["images_per_s"] for r in rows[1:]] or [rows[0]["images_per_s"]]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--per-class", type=int, default=32, help="B: images per class per epoch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4, help="end-to-end epochs per run (the first is a warm-up)")
    ap.add_argument("--steps", type=int, default=5, help="model-only steps per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = make_dataset(Path(tmp) / "bench", args.classes, args.per_class)
        m, e = [], []
        for k in range(args.repeats):  # interleaved, so load changes hit both alike
            m.append(model_only(args.preset, args.classes, args.batch, args.steps))
            e.append(
                statistics.median(
                    end_to_end(
                        prepared,
                        Path(tmp) / "runs",
                        f"r{k}",
                        args.preset,
                        args.per_class,
                        args.batch,
                        args.epochs,
                        args.workers,
                    )
                )
            )
            print(f"  run {k + 1}: model only {m[-1]:7.1f} img/s   end to end {e[-1]:7.1f} img/s")
    print(
        f"preset {args.preset}, batch {args.batch}, {args.threads} torch thread(s), workers {args.workers}, "
        f"epoch = {args.per_class} x {args.classes} images, {args.repeats} runs (medians):"
    )
    print(f"  model only (forward + loss + backward + Adam)   : {statistics.median(m):7.1f} img/s")
    print(f"  end to end (shards, refinement, augmentation)   : {statistics.median(e):7.1f} img/s")
    print(f"  end to end / model only                         : {statistics.median(e) / statistics.median(m):7.2f}")


if __name__ == "__main__":
    main()
