"""GPU training speed and model FLOPs utilisation (MFU) of a GReFEL preset; prints figures, asserts nothing.

    python bench/bench_model_gpu.py                               # full preset, bf16 autocast, batch 144, 224 input
    python bench/bench_model_gpu.py --batch 256 --compile         # torch.compile (mode max-autotune-no-cudagraphs)
    python bench/bench_model_gpu.py --precision fp32 --no-channels-last
    python bench/bench_model_gpu.py --peak-tflops 989             # override the GPU's dense bf16 peak
    python bench/bench_model_gpu.py --device cpu --preset tiny --batch 8 --steps 1 --repeats 1   # code-path check

One training step = forward, GReFELLoss, backward, Adam step (fused), as `grefel train` does. The
step's FLOPs are counted once by ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward,
the model only: matmuls, convolutions and attention; elementwise work is not counted, as usual
for MFU). MFU = counted FLOPs x steps/s / peak dense FLOP/s of the GPU at that precision (table
below, or ``--peak-tflops``). Also prints inference images/s (eval, inference_mode) and the peak
memory. Medians of ``--repeats`` timed windows of ``--steps`` steps each, after warm-up.
The POSTER++ baseline of bench/bench_model.py can be timed alongside with ``--baseline``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grefel.models.grefel import create_model  # noqa: E402
from grefel.models.losses import GReFELLoss

# dense (no sparsity) peak TFLOP/s: (bf16/fp16 tensor cores, tf32 tensor cores)
PEAK_TFLOPS = {
    "H200": (989.0, 494.0),
    "H100 SXM": (989.0, 494.0),
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10": (125.0, 62.5),
}


def peak_for(name: str, precision: str) -> float | None:
    for key, (bf16, tf32) in PEAK_TFLOPS.items():
        if key.lower() in name.lower():
            return (bf16 if precision == "bf16" else tf32) * 1e12
    return None


def step_flops(model, criterion, x, y, precision) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = criterion(model(x), y)["total"]
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full")
    ap.add_argument("--batch", type=int, default=144, help="POSTER++ trained with 144")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument(
        "--baseline", action="store_true", help="also time POSTER++ as its authors run it (fp32/bf16 alike)"
    )
    ap.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (checks the code path only)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "no CUDA device: run this on a GPU machine "
            "(bench/bench_model.py measures the CPU; --device cpu checks the code path)"
        )
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(dev) if cuda else "CPU (code-path check, not a measurement)"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_for(name, args.precision)
    print(
        f"{name}, torch {torch.__version__}, preset {args.preset}, batch {args.batch}, input {args.size}, "
        f"{args.precision}, channels_last {args.channels_last}, compile {args.compile}"
    )
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    y = torch.randint(0, 7, (args.batch,), device=dev)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    def sync():
        if cuda:
            torch.cuda.synchronize()

    x = x.contiguous(memory_format=fmt)

    models = {"GReFEL": (create_model(args.preset, 7), GReFELLoss())}
    if args.baseline:
        from bench_model import PosterPPBaseline

        ce = torch.nn.CrossEntropyLoss()
        models["POSTER++ (authors' forward)"] = (PosterPPBaseline(7), lambda out, t: {"total": ce(out, t)})
    for label, (model, criterion) in models.items():
        model = model.to(dev, memory_format=fmt).train()
        flops = step_flops(model, criterion, x, y, args.precision) if label == "GReFEL" else None
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 3e-4, fused=cuda)
        run = torch.compile(model, mode="max-autotune-no-cudagraphs") if args.compile else model

        def step(criterion=criterion, run=run, opt=opt):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = criterion(run(x), y)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t0 = time.perf_counter()
        for _ in range(3):
            step()
        sync()
        warm = time.perf_counter() - t0
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        windows = []
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            windows.append((time.perf_counter() - t) / args.steps)
        sec = statistics.median(windows)
        mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        print(f"\n{label}: warm-up (3 steps{', compile' if args.compile else ''}) {warm:.1f} s")
        print(
            f"  train  {args.batch / sec:9.1f} images/s   ({sec * 1e3:.1f} ms/step; "
            f"windows: {', '.join(f'{args.batch / w:.0f}' for w in windows)})   peak memory {mem:.1f} GiB"
        )
        if flops is not None:
            print(
                f"  FLOPs per training step {flops / 1e12:.3f} TFLOP "
                f"({flops / args.batch / 1e9:.1f} GFLOP/image, torch FlopCounterMode)"
            )
            if peak:
                print(
                    f"  MFU {flops / sec / peak * 100:.1f} %  "
                    f"(achieved {flops / sec / 1e12:.1f} TFLOP/s of {peak / 1e12:.0f} peak)"
                )
            else:
                print("  MFU: unknown GPU peak, pass --peak-tflops")
        model.eval()
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            for _ in range(3):
                run(x)
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                run(x)
            sync()
        print(f"  infer  {args.batch * args.steps / (time.perf_counter() - t):9.1f} images/s")


if __name__ == "__main__":
    main()
