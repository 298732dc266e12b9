"""`grefel demo`: the whole pipeline on the built-in synthetic dataset, on a CPU, in minutes.

synth (FERG-DB layout) -> prepare ferg -> refine (seeded split) -> corrupt (20 % symmetric noise)
-> train the tiny preset twice on the noisy labels (reliability balancing on, and off) -> evaluate
both on the clean test split -> one report comparing them.

Every step calls the same library function as its command, so the demo exercises the real code
paths. Everything lives under one work folder (``./grefel-demo`` by default); rerunning the demo
there reuses finished steps and resumes an interrupted training run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

RUNS = {"rb-on": "both", "rb-off": "none"}  # run name -> reliability balancing (Table 2 switch)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo flavour (default: < 10 minutes on 2 CPU cores; quick: < 2 minutes)."""

    characters: int
    per_class: int  # synthetic images per character of the most frequent expression
    imbalance: float  # most / least frequent expression
    epochs: int
    refine_per_class: int  # B of the paper's data refinement: images per class and epoch
    batch_size: int
    noise: float = 0.2
    seed: int = 0


DEFAULT = DemoSettings(characters=6, per_class=60, imbalance=3.0, epochs=12, refine_per_class=300, batch_size=64)
QUICK = DemoSettings(characters=6, per_class=24, imbalance=3.0, epochs=6, refine_per_class=120, batch_size=64)


def run_demo(workdir: str | os.PathLike | None = None, quick: bool = False, settings: DemoSettings | None = None,
             console: Console | None = None) -> Path:
    """Run the demo pipeline in ``workdir``; return the path of the HTML report."""
    import torch

    from grefel.data.corrupt import corrupt
    from grefel.data.prepare import prepare
    from grefel.data.refine import refine
    from grefel.data.synth import generate
    from grefel.evaluate import evaluate
    from grefel.report.build import build_report

    s = settings or (QUICK if quick else DEFAULT)
    console = console or Console()
    work = Path(workdir or "grefel-demo").expanduser().resolve()
    raw, data_root, runs = work / "raw", work / "data", work / "runs"
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.perf_counter()
    steps: list[tuple[str, float]] = []

    def step(title: str, fn):
        console.rule(f"[bold]{len(steps) + 1}. {title}")
        t = time.perf_counter()
        result = fn()
        steps.append((title, time.perf_counter() - t))
        console.print(f"[green]done[/green] in {steps[-1][1]:.1f} s")
        return result

    step("synthesise faces (FERG-DB layout)", lambda: generate(raw, characters=s.characters, per_class=s.per_class,
                                                               size=128, seed=s.seed, imbalance=s.imbalance))
    ds_path = step("prepare ferg", lambda: prepare("ferg", raw, data_root=data_root))
    step("refine: seeded split and the paper's per-epoch refinement",
         lambda: refine(ds_path, seed=s.seed, per_class=s.refine_per_class, console=console))
    label_set = step(f"corrupt: {s.noise:.0%} symmetric label noise",
                     lambda: corrupt(ds_path, s.noise, "symmetric", seed=s.seed))
    ckpts = {}
    for name, reliability in RUNS.items():
        title = f"train tiny, reliability balancing {'on' if reliability != 'none' else 'off'} ({name})"
        ckpts[name] = step(title, lambda n=name, r=reliability: _train(ds_path, label_set, n, r, runs, s))
    preds = {}
    for name, ckpt in ckpts.items():
        preds[name] = step(f"evaluate {name} on the clean test split",
                           lambda c=ckpt: evaluate(c, ds_path, split="test", label_set=label_set))
    report = step("report", lambda: build_report(list(ckpts.values()), out=work / "report", split="test",
                                                 label_set=label_set, dataset=str(ds_path)))
    _summary(console, steps, preds, report, time.perf_counter() - t0)
    return report


def _train(ds_path: Path, label_set: str, name: str, reliability: str, runs: Path, s: DemoSettings) -> Path:
    """Train (or finish, or reuse) one demo run; return its best checkpoint."""
    from grefel.checkpoint import load_checkpoint
    from grefel.train import TrainConfig, train

    run = runs / name
    resume = None
    if (run / "last.pt").is_file():
        if int(load_checkpoint(run / "last.pt")["epoch"]) >= s.epochs and (run / "best.pt").is_file():
            return run / "best.pt"
        resume = str(run)
    cfg = TrainConfig(dataset=str(ds_path), labels=label_set, preset="tiny", reliability=reliability,
                      epochs=s.epochs, per_class=s.refine_per_class, batch_size=s.batch_size, seed=s.seed,
                      device="cpu", workers=0, run_dir=str(runs), name=name, resume=resume)
    return train(cfg) / "best.pt"


def _summary(console: Console, steps, preds: dict, report: Path, total: float) -> None:
    from grefel.report.predictions import read_predictions

    table = Table(title="clean test split (trained on 20 % noisy labels)")
    for col in ("run", "primary accuracy", "corrected accuracy"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, path in preds.items():
        t = read_predictions(path).table
        y = t["label"].to_numpy()
        table.add_row(name, f"{(t['pred_primary'].to_numpy() == y).mean():.1%}",
                      f"{(t['pred_corrected'].to_numpy() == y).mean():.1%}")
    console.print(table)
    times = Table(title="steps")
    times.add_column("step")
    times.add_column("seconds", justify="right")
    for title, sec in steps:
        times.add_row(title, f"{sec:.1f}")
    times.add_row("[bold]total", f"[bold]{total:.1f}")
    console.print(times)
    console.print(f"[bold green]report:[/bold green] {report}")
