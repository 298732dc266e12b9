"""`grefel demo`: the whole pipeline on the built-in synthetic dataset, on a CPU, as a small study.

synth (FERG-DB layout) -> prepare ferg -> refine (seeded split) -> corrupt (20 % symmetric noise)
-> a study (:mod:`grefel.study`): the tiny preset trained on the noisy labels with reliability
balancing on (``reliability both``) and off (``none``), several seeds each, every run evaluated on
the clean test split -> the study's report, with the paired difference of RB on against RB off,
its 95 % interval, the paired t-test and its verdict.

Every step calls the same library function as its command: the demo writes a study file into its
work folder and runs it with :func:`grefel.study.run.run_study` (the local pool), so each training
run is exactly a `grefel train` run. Everything lives under one work folder (``./grefel-demo`` by
default); rerunning the demo there reuses finished steps and runs, and resumes a stopped run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from grefel.core.console import make_console
from grefel.core.devices import usable_cores
from grefel.core.errors import GrefelError
from grefel.core.io import atomic_path, write_json
from grefel.data.corrupt import corrupt
from grefel.data.prepare import prepare
from grefel.data.refine import refine
from grefel.study.report import study_report
from grefel.study.run import run_study
from grefel.study.stats import MIN_SEEDS
from grefel.study.tables import dims, fmt_p
from grefel.synth.faces import generate

DEMO_SIZE = 128  # synthesised, stored and model-input size (the demo trains without random crops)
STUDY = "study"  # the study's name: its file is <work>/study.toml, its folder <work>/study/
RB_ON_OFF = ("both", "none")  # reliability balancing on, off (Table 2's switch); "none" is the baseline


@dataclass(frozen=True)
class DemoSettings:
    """The demo's recipe and sizes, in one place (default: the full demo; quick: what CI runs).

    Data: ``characters`` x up to ``per_class`` synthetic faces per expression (``imbalance``: most
    / least frequent expression), split and corrupted with ``seed``. Study: ``seeds`` training
    seeds (``seed``, ``seed + 1`` ...) for each of RB on and off, ``epochs`` epochs of
    ``refine_per_class`` images per class. ``second_noise`` (e.g. 0.4 with ``second_mode``
    "asymmetric") adds a second label set to the grid, so that the report shows RB's effect under
    both regimes; off by default (it doubles the runs).

    The training settings differ from the paper's recipe because the tiny model starts from
    scratch on a CPU budget of minutes (measured, see docs/demo.md): lr 1e-3 instead of 3e-4, batch
    64 (1.13x the images/s of batch 32 on one CPU thread, and on the noisy labels the seeds spread
    less: 78-81 % against 69-87 % after the same time); lambda_c = 0.1 ramped in over two epochs
    (``aux_warmup``), since the center loss at full weight from the first step keeps a randomly
    initialised encoder at chance; the correction of
    eq. (20) ramped in over two epochs (``correction_warmup``), since a uniform primary head gets
    almost no gradient through eq. (19); no augmentation (the synthetic faces are already jittered
    in pose, scale and lighting, and every augmentation tried delayed the start of learning); no
    per-group cap (six characters, 512 each would drop most of the images); no label smoothing.
    """

    characters: int
    per_class: int  # synthetic images per character of the most frequent expression
    imbalance: float  # most / least frequent expression
    epochs: int
    refine_per_class: int  # B of the paper's data refinement: images per class and epoch
    seeds: int = 3  # training seeds per setting (the paired test needs at least 3)
    batch_size: int = 64
    lr: float = 1e-3
    augment: bool = False
    lambda_center: float = 0.1
    aux_warmup: float = 2.0
    correction_warmup: float = 2.0
    channels_last: bool = False  # NCHW: on CPUs channels_last is faster on some, slower on others
    noise: float = 0.2
    second_noise: float | None = None  # a second label set (e.g. 0.4), trained with RB on and off too
    second_mode: str = "asymmetric"
    seed: int = 0  # data: synthesis, split, label noise; and the first training seed
    tsne_points: int = 1000  # t-SNE of the report's per-run sections (0 skips it)
    val_every: int = 0  # validate every N epochs; 0: once, after the last (best.pt is the last epoch)


DEFAULT = DemoSettings(characters=6, per_class=600, imbalance=3.0, epochs=10, refine_per_class=300)
QUICK = DemoSettings(
    characters=6, per_class=80, imbalance=3.0, epochs=4, refine_per_class=100, batch_size=32, tsne_points=500
)


def train_settings(s: DemoSettings) -> dict:
    """The `grefel train` settings (TrainConfig names) every run of the demo's study shares."""
    return {
        "preset": "tiny",
        "epochs": s.epochs,
        "val_every": s.val_every or s.epochs,
        "per_class": s.refine_per_class,
        "batch_size": s.batch_size,
        "lr": s.lr,
        "lambda_center": s.lambda_center,
        "label_smoothing": 0.0,  # the demo's runs were measured without it (the recipe's default is 0.11)
        "aux_warmup": s.aux_warmup,
        "correction_warmup": s.correction_warmup,
        "channels_last": s.channels_last,
        "crop": DEMO_SIZE,
        "augment": s.augment,
        "n_pg": None,
        "device": "cpu",
        "workers": 0,
    }


def study_text(dataset: str, label_sets: list[str], s: DemoSettings) -> str:
    """The demo's study file: RB on and off x ``s.seeds`` seeds on each label set."""

    def toml(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(toml(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    train = {k: (0 if k == "n_pg" else v) for k, v in train_settings(s).items()}  # n_pg 0: no cap
    grid = {"reliability": list(RB_ON_OFF)}
    if len(label_sets) == 1:
        train["labels"] = label_sets[0]
    else:
        grid = {"labels": label_sets, **grid}
    lines = ["# written by grefel demo: RB on and off on the noisy labels, several seeds", "[study]"]
    lines += [f"name = {toml(STUDY)}", f"dataset = {toml(dataset)}"]
    lines += [f"seeds = {toml([s.seed + i for i in range(s.seeds)])}", "", "[train]"]
    lines += [f"{k} = {toml(v)}" for k, v in train.items()]
    lines += ["", "[grid]", *(f"{k} = {toml(v)}" for k, v in grid.items())]
    return "\n".join(lines) + "\n"


def run_demo(
    workdir: str | os.PathLike | None = None,
    quick: bool = False,
    settings: DemoSettings | None = None,
    console: Console | None = None,
) -> Path:
    """Run the demo pipeline in ``workdir``; return the path of the HTML report.

    Raises :class:`~grefel.core.errors.GrefelError` at the end when a run of the study failed (the
    report lists it with its log).
    """
    import torch

    s = settings or (QUICK if quick else DEFAULT)
    if s.seeds < 1:
        raise GrefelError(f"seeds must be at least 1 (3 or more for the paired test), got {s.seeds}")
    console = console or make_console()
    work = _work_folder(workdir)
    cores = usable_cores()
    torch.set_num_threads(cores)  # the steps in this process; each run of the study sets its own
    t0 = time.perf_counter()
    step = _Steps(console)
    ds_path, label_sets = _data_steps(step, work, s, cores, console)
    n_runs = len(label_sets) * len(RB_ON_OFF) * s.seeds
    result = step(
        f"study: train and evaluate {n_runs} runs (reliability balancing on / off x {s.seeds} seeds)",
        lambda: _run_study(work, ds_path, label_sets, s, console),
    )
    report = step(
        "report",
        lambda: study_report(result["folder"], out=work / "report", tsne_points=s.tsne_points),
    )
    total = time.perf_counter() - t0
    summary = result["summary"]
    effects = rb_effects(summary)
    _print_end(console, step.done, total, effects, report)
    _write_demo_json(work, s, quick, step.done, total, summary, effects, report)
    if summary["failed"]:
        failed = summary["failed"]
        raise GrefelError(
            f"{len(failed)} of the demo's {n_runs} runs failed ({', '.join(f['log'] for f in failed[:3])} in "
            f"{work / STUDY}); the report lists them; running the demo again retries them"
        )
    return report


class _Steps:
    """Runs each step of the demo under a numbered rule and keeps its time (``done``)."""

    def __init__(self, console: Console):
        self.console, self.done = console, []

    def __call__(self, title: str, fn):
        self.console.rule(f"[bold]{len(self.done) + 1}. {title}")
        t = time.perf_counter()
        result = fn()
        self.done.append((title, time.perf_counter() - t))
        self.console.print(f"[green]done[/green] in {self.done[-1][1]:.1f} s")
        return result


def _data_steps(step: _Steps, work: Path, s: DemoSettings, cores: int, console: Console) -> tuple[Path, list[str]]:
    """synth -> prepare -> refine -> corrupt in ``work``; the prepared dataset and its label sets."""

    raw, data_root = work / "raw", work / "data"
    size = dict(characters=s.characters, per_class=s.per_class, size=DEMO_SIZE, imbalance=s.imbalance)
    step("synthesise faces (FERG-DB layout)", lambda: generate(raw, **size, seed=s.seed, workers=min(2, cores)))
    ds_path = step("prepare ferg", lambda: prepare("ferg", raw, data_root=data_root))
    step(
        "refine: seeded split and the paper's per-epoch refinement",
        lambda: refine(ds_path, seed=s.seed, per_class=s.refine_per_class, console=console),
    )
    regimes = [(s.noise, "symmetric")] + ([(s.second_noise, s.second_mode)] if s.second_noise else [])
    label_sets = step(
        "corrupt: " + " and ".join(f"{n:.0%} {m} label noise" for n, m in regimes),
        lambda: [corrupt(ds_path, n, m, seed=s.seed) for n, m in regimes],
    )
    return ds_path, label_sets


def _work_folder(workdir) -> Path:
    work = Path(workdir or "grefel-demo").expanduser().resolve()
    if work.exists() and not work.is_dir():
        raise GrefelError(f"{work} is a file, not a folder: give --workdir a folder (it is created if missing)")
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GrefelError(
            f"cannot use {work} as the demo's work folder ({e.strerror}): give --workdir a folder you can write to"
        ) from None
    return work


def _run_study(work: Path, ds_path: Path, label_sets: list[str], s: DemoSettings, console: Console) -> dict:
    """Write the study file into the work folder and run it on the local pool (runs side by side,
    the cores split between them; finished runs are reused, stopped ones resumed)."""

    path = work / f"{STUDY}.toml"
    text = study_text(os.path.relpath(ds_path, work), label_sets, s)
    if not path.is_file() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return run_study(path, work / STUDY, executor="local", console=console)


# -- what the demo concludes ---------------------------------------------------------------------------
def rb_effects(summary: dict) -> list[dict]:
    """Reliability balancing on vs off, per label set (corrected accuracy on the clean test split):
    the comparison's numbers from the study's statistics and one plain sentence."""

    out = []
    for c in summary["comparisons"]:
        if c["metric"] != "accuracy" or c["axis"] != "reliability":
            continue
        cell = {**c["context"], "reliability": c["value"]}
        setting = next(x for x in summary["settings"] if x["cell"] == cell)
        d = dims(setting)
        regime = "clean labels" if not d["noise"] else f"{d['noise']:g} % {d['mode']} label noise"
        keys = ("n", "seeds", "diff_mean", "diff_std", "ci", "test", "t", "df", "p", "p_holm", "holm_family")
        keys += ("ci_verdict", "ci_verdict_confidence", "mde")
        out.append(
            {
                "label_set": setting["label_set"]["name"],
                "regime": regime,
                "value": c["value"],
                "baseline": c["baseline"],
                **{k: c.get(k) for k in keys},
                "verdict": c["verdict"],
                "wilcoxon_p": c.get("wilcoxon_p"),
                "mcnemar": c.get("mcnemar"),
                "sentence": rb_sentence(c, regime),
            }
        )
    return out


def rb_sentence(c: dict, regime: str) -> str:
    """What one RB comparison shows, plainly, never more than its verdict allows."""

    head = f"Reliability balancing on vs off, trained on {regime}"
    if c["n"] < MIN_SEEDS:
        return (
            f"{head}: only {c['n']} seed pair(s) finished, not enough seeds to test (at least {MIN_SEEDS}); "
            "no conclusion."
        )
    diff = f"{100 * c['diff_mean']:+.1f} points of corrected accuracy"
    if c["verdict"] == "no variation between seeds":
        return f"{head}: {diff} on every one of {c['n']} seeds; without variation the t-test is undefined."
    lo, hi = (100 * x for x in (c.get("ci_verdict") or c["ci"]))  # the interval the verdict rests on
    level = f"{100 * c.get('ci_verdict_confidence', 0.95):.1f}".removesuffix(".0")
    kind = "Holm-adjusted " if c.get("ci_verdict_kind") == "Holm" and level != "95" else ""
    tail = f"({kind}{level} % CI {lo:+.1f} to {hi:+.1f}, {c['n']} seeds; paired t-test p = {fmt_p(c['p'])}"
    tail += f", Holm-adjusted {fmt_p(c['p_holm'])})"
    if c["verdict"] == "significant":
        return f"{head}: {diff} {tail}: significant at 0.05 on these faces."
    return (
        f"{head}: {diff} {tail}: not significant; these runs do not show that RB changes accuracy here, "
        f"the effect could lie anywhere from {lo:+.1f} to {hi:+.1f} points."
    )


def _print_end(console: Console, steps, total: float, effects: list[dict], report: Path) -> None:
    times = Table(title="steps")
    times.add_column("step")
    times.add_column("seconds", justify="right")
    for title, sec in steps:
        times.add_row(title, f"{sec:.1f}")
    times.add_row("[bold]total", f"[bold]{total:.1f}")
    console.print(times)
    for e in effects:
        style = "green" if e["verdict"] == "significant" else "yellow"
        console.print(f"[bold {style}]{e['verdict']}:[/bold {style}] {e['sentence']}")
    if not effects:
        console.print("[yellow]no comparison of RB on and off: no pair of runs finished[/yellow]")
    console.print(f"[bold green]report:[/bold green] {report}")


def _write_demo_json(work, s, quick, steps, total, summary, effects, report) -> None:
    runs = {
        r["name"]: {
            "seed": r["seed"],
            "state": r["state"],
            **r["cell"],
            "primary": r["metrics"].get("accuracy_primary"),
            "corrected": r["metrics"].get("accuracy"),
        }
        for r in summary["runs"]
    }
    settings = [
        {"setting": x["name"], "label_set": x["label_set"]["name"], **x["cell"], **x["metrics"]["accuracy"]}
        for x in summary["settings"]
    ]
    write_json(
        work / "demo.json",
        {
            "settings": asdict(s),
            "quick": quick,
            "total_s": round(total, 1),
            "steps": [{"step": t, "seconds": round(sec, 1)} for t, sec in steps],
            "study": STUDY,
            "runs": runs,
            "accuracy_by_setting": settings,
            "rb_effect": effects,
            "failed": summary["failed"],
            "report": os.path.relpath(report, work),
        },
    )
