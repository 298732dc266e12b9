"""Benchmark of `grefel study` on the demo's study: its own overhead, and the local pool against runs in turn.

Prints figures (medians over --repeats; ratios measured in the same process), asserts nothing.

    python bench/bench_study.py              # the demo's study (DemoSettings DEFAULT): long
    python bench/bench_study.py --quick      # the quick demo's settings
    python bench/bench_study.py --short      # tiny data and runs: checks that the script works
    python bench/bench_study.py --skip-pool  # (a) only

(a) overhead  `grefel demo` (its study path) in a fresh work folder: the wall time of the study step
              (plan, label sets, the pool, one process per run, train, evaluate, statistics) and of
              the report, against the training time of its runs (``train_s`` in each run's
              status.json: the `grefel train` call inside the run's process). P runs side by side
              give P x wall slot-seconds; what the runs did not spend training is the study's own:
                  overhead = (P x (study wall + report wall) - sum train_s) / sum train_s
              split into evaluation (sum ``evaluate_s``), the report (P x its wall) and the rest
              (planning, process start-up, scheduling, idle slots at the end, statistics). Goal < 5 %.
(b) pool      the same study again on the same prepared data, in fresh folders: ``--parallel 1`` (one
              run at a time with every core) and the default pool (runs side by side, the cores
              split); training images (each run's epoch_images, metrics.jsonl) per second of the
              study's wall time. Goal >= 1.2x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def settings(args):
    from grefel.demo import DEFAULT, QUICK, DemoSettings

    if args.short:
        s = DemoSettings(characters=2, per_class=24, imbalance=1.0, epochs=2, refine_per_class=12, seeds=2)
    else:
        s = QUICK if args.quick else DEFAULT
    return replace(s, tsne_points=0) if args.no_tsne else s


def overhead(work: Path, s, console) -> dict:
    """(a): the demo in ``work``; its study's and report's wall time against its runs' training time."""
    from grefel.core.devices import usable_cores
    from grefel.demo import STUDY, run_demo
    from grefel.study.folder import load_plan, read_status, run_folder
    from grefel.study.run import local_slots

    run_demo(work, settings=s, console=console)
    demo = json.loads((work / "demo.json").read_text())
    study_wall = next(x["seconds"] for x in demo["steps"] if x["step"].startswith("study"))
    report_wall = next(x["seconds"] for x in demo["steps"] if x["step"] == "report")
    plan = load_plan(work / STUDY)
    status = [read_status(run_folder(work / STUDY, r.name)) for r in plan.runs]
    train = sum(x["train_s"] for x in status)
    evaluate = sum(x["evaluate_s"] for x in status)
    p = len(local_slots(len(plan.runs), None, use_gpus=False))
    from grefel.study.spec import load_study

    t0 = time.perf_counter()
    load_study(work / f"{STUDY}.toml")
    planning = time.perf_counter() - t0
    total = p * (study_wall + report_wall) - train
    return {
        "runs": len(plan.runs),
        "slots": p,
        "cores": usable_cores(),
        "study_wall": study_wall,
        "report_wall": report_wall,
        "train": train,
        "overhead": total / train,
        "evaluate": evaluate / train,
        "report": p * report_wall / train,
        "rest": (p * study_wall - train - evaluate) / train,
        "planning_s": planning,
    }


def pool_vs_sequence(work: Path, s, repeat: int, console) -> dict:
    """(b): the demo's study run again in fresh folders, one run at a time and on the default pool."""
    from grefel.demo import study_text
    from grefel.study.run import run_study

    path = work / "bench-pool.toml"
    path.write_text(study_text("data/ferg", s))
    out = {}
    for name, parallel in (("sequence", 1), ("pool", None)):
        folder = work / f"bench-{name}-{repeat}"
        t0 = time.perf_counter()
        run_study(path, folder, executor="local", parallel=parallel, console=console)
        wall = time.perf_counter() - t0
        images = sum(
            json.loads(line)["epoch_images"]
            for m in (folder / "runs").glob("*/metrics.jsonl")
            for line in m.read_text().splitlines()
        )
        out[name] = {"wall": wall, "images": images, "images_per_s": images / wall}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the quick demo's settings")
    size.add_argument("--short", action="store_true", help="tiny data and runs: checks that the script works")
    p.add_argument("--repeats", type=int, default=1, help="repeats of (b), each a fresh pair of studies")
    p.add_argument("--no-tsne", action="store_true", help="report without its t-SNE (a smaller report share)")
    p.add_argument("--skip-pool", action="store_true", help="measure (a) only (the pool takes twice as long)")
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = p.parse_args()

    import torch
    from rich.console import Console

    from grefel.core.console import make_console

    quiet = Console(quiet=True)
    s = settings(args)
    out = make_console()
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        work = args.keep or Path(tmp)
        a = overhead(work / "demo", s, quiet)
        out.print(
            f"torch {torch.__version__}, {a['cores']} core(s); the demo's study: {a['runs']} runs, "
            f"{a['slots']} side by side; {s.epochs} epochs x {s.refine_per_class} images per class"
        )
        out.print(
            f"(a) study {a['study_wall']:.1f} s + report {a['report_wall']:.1f} s of wall time; "
            f"the runs trained {a['train']:.1f} s in all"
        )
        out.print(
            f"    overhead {100 * a['overhead']:.1f} % of training (goal < 5 %): evaluation "
            f"{100 * a['evaluate']:.1f} %, report {100 * a['report']:.1f} %, start-up / scheduling / idle "
            f"slots / statistics {100 * a['rest']:.1f} %; planning {1000 * a['planning_s']:.0f} ms"
        )
        if args.skip_pool:
            return
        rows = [pool_vs_sequence(work / "demo", s, i, quiet) for i in range(args.repeats)]
        seq = statistics.median(r["sequence"]["images_per_s"] for r in rows)
        par = statistics.median(r["pool"]["images_per_s"] for r in rows)
        ratio = statistics.median(r["pool"]["images_per_s"] / r["sequence"]["images_per_s"] for r in rows)
        out.print(
            f"(b) in sequence (--parallel 1, {a['cores']} threads) {seq:.0f} images/s, pool ({a['slots']} runs "
            f"side by side) {par:.0f} images/s: {ratio:.2f}x (goal >= 1.2x; medians of {len(rows)})"
        )


if __name__ == "__main__":
    main()
