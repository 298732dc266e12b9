"""GPU benchmark: the full preset in bf16, images/s end to end (data and validation included) and MFU.

Prints figures, asserts nothing. Goal: the paper's whole schedule (1000 epochs x 500 images x 8
classes = 4M images), validation included, in under 12 minutes on one H200: at least 5,600
images/s end to end.

    python bench/bench_train_gpu.py                              # full preset, bf16, one GPU
    python bench/bench_train_gpu.py --compile --compile-mode reduce-overhead --channels-last --batch 256
    python bench/bench_train_gpu.py --compile --channels-last --profile --sync-debug   # where the time goes
    torchrun --nproc_per_node 8 bench/bench_train_gpu.py --data /data/grefel/affectnet8   # all GPUs, end to end
    python bench/bench_train_gpu.py --tiny                       # CPU check of this script's code path

Parts (all in one run, on the same device):

flops        training FLOPs per image (forward + backward, counted by torch.utils.flop_counter on
             one batch of the model as trained; the frozen landmark stream has no weight gradients).
model only   forward + GReFELLoss + backward + Adam of the model on a batch already on the GPU
             (the ceiling of the device), with the same precision / compile / channels-last.
end to end   grefel.training.loop.train on a prepared dataset (B x N_cls = 500 x 8 images per epoch; the
             faces held on the GPU or read by DataLoader workers, as --data-on-device says;
             augmentation on the GPU, validation each epoch); per epoch after the first: images/s
             of the training loop, seconds of validation and of checkpoint writing, wall time.
MFU          images/s x FLOPs per image / the device's peak dense bf16 FLOP/s (H100 SXM / H200:
             989 TFLOP/s; H100 PCIe: 756; A100: 312; --peak-tflops for others).
Projection   minutes for 4M images at the measured epoch time, validating every 1, 5 or 10 epochs.
--profile    one more epoch under torch.profiler: the top GPU kernels by time, GPU busy time
             against the epoch's wall time (the rest: the GPU waiting for the CPU to launch work),
             CPU time in CUDA launch calls and in synchronisations, kernels per step.
--sync-debug the same extra epoch with torch.cuda.set_sync_debug_mode("warn"): every place in the
             training step that makes the CPU wait for the GPU, with counts.
--json PATH  appends the figures as one JSON line (bench/gpu_session.sh builds its table from it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
SCHEDULE_IMAGES = 1000 * 500 * 8
GOAL_MINUTES = 12.0  # the project's goal for the whole schedule on one H200, validation included
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, v in PEAK_BF16_TFLOPS.items():
        if key in name:
            return v
    return None


def autocast_for(device, precision: str):
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return lambda: torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def train_flops_per_image(preset: str, classes: int, device, precision: str) -> float:
    """FLOPs of forward + backward per image, counted on one batch of 8 (eager)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from grefel.models.grefel import create_model
    from grefel.models.losses import GReFELLoss

    model = create_model(preset, classes).to(device).train()
    x = torch.randn(8, 3, 112, 112, device=device)
    y = torch.arange(8, device=device) % classes
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast_for(device, precision)():
            out = model(x)
        GReFELLoss()(out, y)["total"].backward()
    return counter.get_total_flops() / len(x)


def model_only(args, device) -> float:
    """Images/s of forward + loss + backward + Adam on one batch already on the device."""
    import torch

    from grefel.models.grefel import create_model
    from grefel.models.losses import GReFELLoss

    torch.manual_seed(0)
    model = create_model(args.preset, args.classes).to(device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    crit, autocast = GReFELLoss(), autocast_for(device, args.precision)
    x = torch.randn(args.batch, 3, 112, 112, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(args.batch, device=device) % args.classes
    mode = None if args.compile_mode == "default" else args.compile_mode
    run = torch.compile(model, mode=mode) if args.compile else model
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-4, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    graphs = args.compile and args.compile_mode in ("reduce-overhead", "max-autotune") and device.type == "cuda"

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
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
    for _ in range(args.steps):
        step()
    sync()
    return args.steps * args.batch / (time.perf_counter() - t)


# ---------------------------------------------------------------------------------------------
# Where the time goes: torch.profiler and the CUDA sync debug mode, on one extra epoch
# ---------------------------------------------------------------------------------------------
def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of (start, end) intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def profile_summary(prof, wall_s: float, steps: int, top: int = 15) -> dict:
    """GPU busy time against the wall time, CPU time in launches and syncs, the top GPU kernels."""
    from torch.autograd import DeviceType

    events = list(prof.events())
    gpu = [e for e in events if e.device_type == DeviceType.CUDA]
    cpu = [e for e in events if e.device_type == DeviceType.CPU]
    busy_us = _union_us([(e.time_range.start, e.time_range.end) for e in gpu])
    launch_us = sum(e.time_range.elapsed_us() for e in cpu if e.name in LAUNCH_CALLS)
    sync_us = sum(e.time_range.elapsed_us() for e in cpu if "Synchronize" in e.name)
    kernels: dict[str, list[float]] = {}
    for e in gpu:
        kernels.setdefault(e.name, []).append(e.time_range.elapsed_us())
    ranked = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:top]
    ops = Counter()
    for e in cpu:
        if e.name.startswith("aten::"):
            ops[e.name] += e.self_cpu_time_total
    return {
        "wall_s": wall_s,
        "gpu_busy_s": busy_us / 1e6,
        "gpu_idle_share": max(0.0, 1 - busy_us / 1e6 / wall_s) if gpu else None,
        "cpu_launch_s": launch_us / 1e6,
        "cpu_sync_wait_s": sync_us / 1e6,
        "gpu_events_per_step": len(gpu) / max(steps, 1),
        "top_kernels": [
            {"name": n, "ms": sum(d) / 1e3, "count": len(d), "mean_us": sum(d) / len(d)} for n, d in ranked
        ],
        "top_cpu_ops": [{"name": n, "self_ms": t / 1e3} for n, t in ops.most_common(10)],
    }


def print_profile(p: dict) -> None:
    print(f"profile (one epoch, {p['wall_s']:.2f} s wall):")
    if p["gpu_idle_share"] is None:
        print("  no GPU kernels recorded (a CPU run): top CPU operators by self time")
    else:
        print(
            f"  GPU busy {p['gpu_busy_s']:.2f} s = {100 * (1 - p['gpu_idle_share']):.0f} % of the wall time "
            f"(idle {100 * p['gpu_idle_share']:.0f} %: waiting for the CPU); CPU in launch calls "
            f"{p['cpu_launch_s']:.2f} s, waiting in synchronisations {p['cpu_sync_wait_s']:.2f} s; "
            f"{p['gpu_events_per_step']:.0f} GPU kernels / copies per step"
        )
        busy_ms = 1e3 * p["gpu_busy_s"]
        for k in p["top_kernels"]:
            name = k["name"] if len(k["name"]) <= 90 else k["name"][:87] + "..."
            print(
                f"  {k['ms']:9.1f} ms {100 * k['ms'] / busy_ms:5.1f} % {k['count']:6d} x {k['mean_us']:8.1f} us  {name}"
            )
    for op in p["top_cpu_ops"]:
        print(f"  cpu {op['self_ms']:9.1f} ms  {op['name']}")


@contextlib.contextmanager
def sync_debug(report: dict, device):
    """Record each place that synchronises the CPU with the GPU (file:line, count)."""
    import torch

    if device.type != "cuda":
        report["sync_sites"] = None  # the sync debug mode is CUDA's
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = Counter(
        f"{'/'.join(Path(w.filename).parts[-2:])}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)
    )
    report["sync_sites"] = dict(sites.most_common())


def instrument(args, report: dict, device) -> None:
    """Time validation and checkpoints per epoch; profile / sync-debug the extra last epoch."""
    import torch

    import grefel.training.loop as gt
    import grefel.training.tblog as tblog

    timed = {"evaluate": (gt, "evaluate"), "save_epoch": (gt, "save_epoch"), "tensorboard": (tblog, "log_epoch")}
    originals = {name: getattr(module, attr) for name, (module, attr) in timed.items()}
    report["epoch_parts"] = parts = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timing(name):
        def wrapped(*a, **kw):
            t = time.perf_counter()
            out = originals[name](*a, **kw)
            parts[-1][name] = time.perf_counter() - t
            return out

        return wrapped

    original_epoch, original_sources = gt.train_one_epoch, gt.make_batch_sources

    def one_epoch(model, criterion, state, loader, uniforms, epoch, run, progress):
        parts.append({"start": time.perf_counter()})  # an epoch's wall time runs to the next one's start
        if epoch < args.epochs:  # the timed epochs
            return original_epoch(model, criterion, state, loader, uniforms, epoch, run, progress)
        with contextlib.ExitStack() as stack:
            prof = None
            if args.profile:
                acts = [torch.profiler.ProfilerActivity.CPU] + [torch.profiler.ProfilerActivity.CUDA] * (
                    device.type == "cuda"
                )
                prof = stack.enter_context(torch.profiler.profile(activities=acts))
            if args.sync_debug:
                stack.enter_context(sync_debug(report, device))
            sync()
            t = time.perf_counter()
            out = original_epoch(model, criterion, state, loader, uniforms, epoch, run, progress)
            sync()
            wall = time.perf_counter() - t
        if prof is not None:
            report["profile"] = profile_summary(prof, wall, len(loader))
            if args.trace:
                prof.export_chrome_trace(args.trace)
        return out

    def sources(run, data, sampler, val_sampler):
        t = time.perf_counter()
        out = original_sources(run, data, sampler, val_sampler)
        report["data_on_device_used"] = type(out[0]).__name__ == "ResidentBatches"
        report["data_setup_s"] = time.perf_counter() - t
        return out

    gt.train_one_epoch, gt.make_batch_sources = one_epoch, sources
    for name, (module, attr) in timed.items():
        setattr(module, attr, timing(name))


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------
def make_dataset(root: Path, classes: int, per_class: int) -> Path:
    from bench_train_cpu import make_dataset as make

    return make(root, classes, per_class)


def end_to_end(args, data: str, root: Path, world: int) -> Path:
    from grefel.training.config import TrainConfig
    from grefel.training.loop import train

    extra = int(args.profile or args.sync_debug)
    return train(
        TrainConfig(
            dataset=data,
            preset=args.preset,
            epochs=args.epochs + extra,
            per_class=args.per_class,
            batch_size=args.batch,
            workers=args.workers,
            precision=args.precision,
            device=args.device,
            compile=args.compile,
            compile_mode=args.compile_mode,
            channels_last=args.channels_last,
            data_on_device=args.data_on_device,
            tensorboard=args.tensorboard,
            save_every=args.epochs + extra,
            # random weights, but the paper's compute: the landmark stream frozen as when pretrained
            from_scratch=True,
            model_args={"encoder": {"freeze_landmarks": True}},
            quiet=True,
            run_dir=str(root / "runs") if world == 1 else "runs",
            name=f"bench-{int(time.time())}" if world > 1 else "bench",
        )
    )


def epoch_figures(rows: list[dict], parts: list[dict], epochs: int, end: float) -> dict:
    """Medians over the timed epochs after the first: wall time from one epoch's start to the next
    (plan, training loop, validation, checkpoints, logs), and its parts. TensorBoard's confusion
    images (every 10 epochs by default, and after the last) are counted once per 10 epochs."""
    starts = [p["start"] for p in parts] + [end]
    for k, p in enumerate(parts):
        p["wall"] = starts[k + 1] - starts[k]
    steady = list(zip(rows, parts))[1:epochs] or list(zip(rows, parts))[:epochs]
    train_s = statistics.median(r["epoch_images"] / r["images_per_s"] for r, _ in steady)
    val_s = statistics.median(p.get("evaluate", 0.0) for _, p in steady)
    save_s = statistics.median(p.get("save_epoch", 0.0) for _, p in steady)
    tb = [p.get("tensorboard", 0.0) for p in parts]
    tb_s = statistics.median(p.get("tensorboard", 0.0) for _, p in steady)
    tb_s += (max(tb) - tb_s) / 10  # the confusion images of the last epoch, once per 10 epochs
    walls = [p["wall"] - p.get("tensorboard", 0.0) for _, p in steady]
    epoch_s = statistics.median(walls) + tb_s
    images = rows[0]["epoch_images"]
    return {
        "train_loop_ips": statistics.median(r["images_per_s"] for r, _ in steady),
        "epoch_s": epoch_s,
        "end_to_end_ips": images / epoch_s,
        "val_s": val_s,
        "save_s": save_s,
        "tensorboard_s": tb_s,
        "other_s": max(0.0, epoch_s - train_s - val_s - save_s - tb_s),
        "train_s": train_s,
        "first_epoch_s": parts[0]["wall"],
        "epoch_images": images,
    }


def projected_minutes(f: dict, val_every: int) -> float:
    """Minutes of the paper's schedule (4M images) at the measured per-epoch times, validating every N epochs."""
    epochs = SCHEDULE_IMAGES / f["epoch_images"]
    return epochs * (f["epoch_s"] - f["val_s"] + f["val_s"] / val_every) / 60


def print_figures(args, f: dict, ips_model, flops, name: str, total: float) -> None:
    images = f["epoch_images"]
    print(
        f"end to end : {f['train_loop_ips']:9.1f} img/s in the training loop; {f['epoch_s']:.2f} s per epoch of "
        f"{images} images, all included ({f['end_to_end_ips']:.1f} img/s): training {f['train_s']:.2f} s, "
        f"validation {f['val_s']:.2f} s, checkpoints {f['save_s']:.2f} s, TensorBoard {f['tensorboard_s']:.2f} s, "
        f"rest {f['other_s']:.2f} s (medians "
        f"of epochs 2..{args.epochs}); first epoch {f['first_epoch_s']:.1f} s; whole run {total:.1f} s"
    )
    if ips_model:
        print(f"end to end / model only: {f['train_loop_ips'] / ips_model:.2f}")
    peak = peak_tflops(name, args.peak_tflops)
    if flops and peak:
        mfu = 100 * f["end_to_end_ips"] * flops / (peak * 1e12)
        print(f"MFU: {mfu:.1f} % end to end incl. validation (peak {peak:.0f} TFLOP/s bf16)")
    elif flops:
        print(f"achieved: {f['end_to_end_ips'] * flops / 1e12:.3f} TFLOP/s end to end (no peak known for '{name}')")
    for every in (1, 5, 10):
        minutes = projected_minutes(f, every)
        print(
            f"projection: paper schedule ({SCHEDULE_IMAGES:,} images) validating every {every:2d} epoch(s): "
            f"{minutes:5.1f} min ({SCHEDULE_IMAGES / minutes / 60:,.0f} img/s; "
            f"{'meets' if minutes < GOAL_MINUTES else 'misses'} the goal of < {GOAL_MINUTES:.0f} min, >= 5,600 img/s)"
        )


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="", help="name of this configuration in --json")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=500, help="B: images per class per epoch")
    ap.add_argument("--batch", type=int, default=256, help="global batch")
    ap.add_argument("--epochs", type=int, default=4, help="timed end-to-end epochs (the first is a warm-up)")
    ap.add_argument("--steps", type=int, default=20, help="model-only timed steps")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default="default", help="default, reduce-overhead, max-autotune, ...")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--data-on-device", default="auto", choices=("auto", "on", "off"))
    ap.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the device")
    ap.add_argument("--skip-model-only", action="store_true")
    ap.add_argument("--profile", action="store_true", help="profile one extra epoch (torch.profiler)")
    ap.add_argument("--trace", default=None, help="with --profile: write the Chrome trace here")
    ap.add_argument("--sync-debug", action="store_true", help="list CPU-GPU synchronisations of one extra epoch")
    ap.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    ap.add_argument(
        "--data", default=None, help="a prepared dataset with a val split; generated there first if it does not exist"
    )
    ap.add_argument("--tiny", action="store_true", help="CPU check of the code path: tiny preset, a few images")
    args = ap.parse_args(argv)
    if args.tiny:
        args.preset, args.classes, args.per_class, args.batch = "tiny", 4, 8, 16
        args.epochs, args.steps, args.workers = 3, 2, 0
        args.device = "cpu" if args.device == "auto" else args.device
    return args


def main(argv=None) -> None:
    args = parse(argv)
    import torch

    from grefel.core.devices import torch_device

    if args.tiny:
        torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    main_rank = int(os.environ.get("RANK", "0")) == 0
    device = torch_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"label": args.label, "device": f"{name} x {world}", "torch": torch.__version__}
    report["config"] = {k: v for k, v in vars(args).items() if k not in ("json", "label", "trace")}
    if main_rank:
        print(
            f"device: {report['device']}, torch {torch.__version__}, preset {args.preset}, {args.precision}, batch "
            f"{args.batch}, compile {args.compile} ({args.compile_mode}), channels-last {args.channels_last}, "
            f"data on device {args.data_on_device}"
        )
    ips_model = flops = None
    if world == 1:
        flops = train_flops_per_image(args.preset, args.classes, device, args.precision)
        print(f"training FLOPs per image (forward + backward): {flops / 1e9:.2f} GFLOP")
        if not args.skip_model_only:
            ips_model = model_only(args, device)
            print(f"model only : {ips_model:9.1f} img/s")
    if device.type == "cuda":
        torch.cuda.empty_cache()  # free memory decides data_on_device auto: give back what the parts above cached
    report.update(flops_per_image=flops, model_only_ips=ips_model)
    with tempfile.TemporaryDirectory() as tmp:
        data = prepared_data(args, Path(tmp), world)
        instrument(args, report, device)
        t = time.perf_counter()
        run = end_to_end(args, data, Path(tmp), world)
        end = time.perf_counter()
        total = end - t
        if not main_rank:
            return
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    report.update(epoch_figures(rows, report["epoch_parts"], args.epochs, end), whole_run_s=total)
    print(f"data on device: {report['data_on_device_used']} (set up in {report['data_setup_s']:.1f} s)")
    print_figures(args, report, ips_model, flops, name, total)
    peak = peak_tflops(name, args.peak_tflops)
    report["mfu"] = report["end_to_end_ips"] * flops / (peak * 1e12) if flops and peak else None
    report["minutes_4m"] = {every: projected_minutes(report, every) for every in (1, 5, 10)}
    if "profile" in report:
        print_profile(report["profile"])
    if "sync_sites" in report:
        sites = report["sync_sites"]
        print("sync debug: " + ("CUDA only" if sites is None else f"{sum(sites.values())} synchronisations"))
        for site, n in (sites or {}).items():
            print(f"  {n:6d} x {site}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(report) + "\n")


def prepared_data(args, tmp: Path, world: int) -> str:
    """The dataset to train on: --data (generated there first when missing), else generated in tmp."""
    if args.data and (Path(args.data) / "manifest.json").is_file():
        return args.data
    if world > 1:
        raise SystemExit("under torchrun pass --data PATH: a prepared dataset every process can read")
    t = time.perf_counter()
    data = str(make_dataset(Path(args.data) if args.data else tmp / "bench", args.classes, args.per_class))
    print(
        f"dataset: {args.classes} x ({args.per_class} train + {max(2, args.per_class // 4)} val) faces "
        f"written in {time.perf_counter() - t:.1f} s"
    )
    return data


if __name__ == "__main__":
    main()
