"""GPU benchmark: the full preset in bf16, images/s end to end (data included) and model FLOPs utilisation.

Prints figures, asserts nothing. Target: the paper's whole schedule (1000 epochs x 500 images x 8
classes = 4M images) in under 15 minutes on one H100, i.e. about 4,500 images/s end to end.

    python bench/bench_train_gpu.py                              # full preset, bf16, one GPU
    python bench/bench_train_gpu.py --compile --channels-last --batch 256 --workers 8
    torchrun --nproc_per_node 8 bench/bench_train_gpu.py --data /data/grefel/affectnet8   # all GPUs, end to end
    python bench/bench_train_gpu.py --tiny                       # CPU check of this script's code path

Parts (all in one run, on the same device):

flops        training FLOPs per image (forward + backward, counted by torch.utils.flop_counter on
             one batch of the model as trained; the frozen landmark stream has no weight gradients).
model only   forward + GReFELLoss + backward + Adam of the model on a batch already on the GPU
             (the ceiling of the device), with the same precision / compile / channels-last.
end to end   grefel.train.train on a prepared dataset (B x N_cls = 500 x 8 images per epoch, shards
             read by DataLoader workers, augmentation on the GPU, validation each epoch); images/s
             of the training loop of each epoch after the first, and wall time per epoch.
MFU          images/s x FLOPs per image / the device's peak dense bf16 FLOP/s (H100 SXM / H200:
             989 TFLOP/s; H100 PCIe: 756; A100: 312; --peak-tflops for others).
Projection   minutes for 4M images at the end-to-end rate (plus validation / checkpoint time per
             epoch as measured).
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

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
SCHEDULE_IMAGES = 1000 * 500 * 8


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, v in PEAK_BF16_TFLOPS.items():
        if key in name:
            return v
    return None


def train_flops_per_image(model, x, y, crit, autocast) -> float:
    """FLOPs of forward + backward per image, counted on one batch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with autocast():
            out = model(x)
        crit(out, y)["total"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def model_only(
    preset: str, classes: int, batch: int, steps: int, device, precision: str, compile_: bool, channels_last: bool
) -> tuple[float, float]:
    import contextlib

    import torch

    from grefel.models import GReFELLoss, create_model

    torch.manual_seed(0)
    model = create_model(preset, classes).to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    crit = GReFELLoss()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    x = torch.randn(batch, 3, 112, 112, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch, device=device) % classes
    flops = train_flops_per_image(model, x[: min(batch, 8)], y[: min(batch, 8)], crit, autocast)
    run = torch.compile(model) if compile_ else model
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-4, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step():
        with autocast():
            out = run(x)
        loss = crit(out, y)["total"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):  # warm-up (and compilation)
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - t), flops


def make_dataset(root: Path, classes: int, per_class: int) -> Path:
    from bench_train_cpu import make_dataset as make

    return make(root, classes, per_class)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full")
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=500, help="B: images per class per epoch")
    ap.add_argument("--batch", type=int, default=256, help="global batch")
    ap.add_argument("--epochs", type=int, default=4, help="end-to-end epochs (the first is a warm-up)")
    ap.add_argument("--steps", type=int, default=20, help="model-only timed steps")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the device")
    ap.add_argument("--skip-model-only", action="store_true")
    ap.add_argument(
        "--data", default=None, help="an existing prepared dataset (with a val split) instead of generated faces"
    )
    ap.add_argument("--tiny", action="store_true", help="CPU check of the code path: tiny preset, a few images")
    args = ap.parse_args(argv)
    if args.tiny:
        args.preset, args.classes, args.per_class, args.batch = "tiny", 4, 8, 16
        args.epochs, args.steps, args.workers = 2, 2, 0
        args.device = "cpu" if args.device == "auto" else args.device
        import torch

        torch.set_num_threads(1)

    import os

    import torch

    from grefel import distributed as gdist
    from grefel.train import TrainConfig, train

    world = int(os.environ.get("WORLD_SIZE", "1"))
    main_rank = int(os.environ.get("RANK", "0")) == 0
    info_dev = gdist._pick_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    name = torch.cuda.get_device_name(info_dev) if info_dev.type == "cuda" else "cpu"
    if main_rank:
        print(
            f"device: {name} x {world}, torch {torch.__version__}, preset {args.preset}, {args.precision}, "
            f"batch {args.batch}, compile {args.compile}, channels-last {args.channels_last}"
        )
    ips_model, flops = None, None
    if world == 1 and not args.skip_model_only:
        ips_model, flops = model_only(
            args.preset,
            args.classes,
            args.batch,
            args.steps,
            info_dev,
            args.precision,
            args.compile,
            args.channels_last,
        )
        print(f"training FLOPs per image (forward + backward): {flops / 1e9:.2f} GFLOP")
        print(f"model only : {ips_model:9.1f} img/s")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = args.data
        if data is None:
            if world > 1:
                raise SystemExit("under torchrun pass --data PATH: a prepared dataset every process can read")
            t = time.perf_counter()
            data = str(make_dataset(root / "bench", args.classes, args.per_class))
            print(
                f"dataset: {args.classes} x ({args.per_class} train + {max(2, args.per_class // 4)} val) faces "
                f"written in {time.perf_counter() - t:.1f} s"
            )
        from grefel.data.shards import PreparedDataset

        classes = PreparedDataset(data).num_classes
        t = time.perf_counter()
        run = train(
            TrainConfig(
                dataset=data,
                preset=args.preset,
                epochs=args.epochs,
                per_class=args.per_class,
                batch_size=args.batch,
                workers=args.workers,
                precision=args.precision,
                device=args.device,
                compile=args.compile,
                channels_last=args.channels_last,
                save_every=args.epochs,
                # random weights, but the paper's compute: the landmark stream frozen as when pretrained
                from_scratch=True,
                model_args={"encoder": {"freeze_landmarks": True}},
                quiet=True,
                run_dir=str(root / "runs") if world == 1 else "runs",
                name=f"bench-{int(time.time())}" if world > 1 else "bench",
            )
        )
        total = time.perf_counter() - t
        if not main_rank:
            return
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steady = rows[1:] or rows
    ips = statistics.median(r["images_per_s"] for r in steady)
    epoch_s = statistics.median(r["epoch_time_s"] for r in steady)
    per_epoch = args.per_class * classes
    print(
        f"end to end : {ips:9.1f} img/s in the training loop (median of epochs 2..{len(rows)}); "
        f"{epoch_s:.2f} s per epoch of {per_epoch} images incl. validation ({per_epoch / epoch_s:.1f} img/s); "
        f"whole run {total:.1f} s"
    )
    if ips_model:
        print(f"end to end / model only: {ips / ips_model:.2f}")
    peak = peak_tflops(name, args.peak_tflops)
    if flops and peak:
        print(
            f"MFU: {100 * ips * flops / (peak * 1e12):.1f} % end to end, "
            f"{100 * (ips_model or 0) * flops / (peak * 1e12):.1f} % model only (peak {peak:.0f} TFLOP/s bf16)"
        )
    elif flops:
        print(f"achieved: {ips * flops / 1e12:.3f} TFLOP/s end to end (no peak known for '{name}': pass --peak-tflops)")
    minutes = SCHEDULE_IMAGES / (per_epoch / epoch_s) / 60
    print(
        f"projection: paper schedule ({SCHEDULE_IMAGES:,} images = 1000 epochs x 500 x 8) in {minutes:.1f} min "
        f"at {per_epoch / epoch_s:.0f} img/s with validation (target < 15 min, about 4,500 img/s); "
        f"{SCHEDULE_IMAGES / ips / 60:.1f} min at the training-loop rate"
    )


if __name__ == "__main__":
    main()
