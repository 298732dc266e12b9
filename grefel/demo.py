"""`grefel demo`: the paper's Table 7 in miniature, on the built-in synthetic faces, on a CPU.

synth (FERG-DB layout) -> prepare ferg -> refine (seeded split) -> a study (:mod:`grefel.study`):
the tiny preset, fine-tuned from the encoder shipped with grefel (``grefel pretrain``'s, made from
characters the demo never draws), trained on clean labels and on 20 % symmetric label noise drawn
anew for every seed, with reliability balancing on (``reliability both``) and off (``none``), five
seeds each, every run evaluated on the clean test split -> the study's report, with the paired
difference of RB on against RB off at each noise level, its 95 % interval, the paired t-test, the
verdict, and the effect against noise beside the paper's Table 7.

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
from grefel.data.prepare import prepare
from grefel.data.refine import refine
from grefel.report.paper import table7_effect
from grefel.study.report import study_report
from grefel.study.run import run_study
from grefel.study.stats import MIN_SEEDS
from grefel.study.tables import dims, fmt_p
from grefel.synth.faces import generate

DEMO_SIZE = 128  # synthesised and stored size; training crops the recipe's 112 and the tiny preset sees 48
STUDY = "study"  # the study's name: its file is <work>/study.toml, its folder <work>/study/
RB_ON_OFF = ("both", "none")  # reliability balancing on, off (Table 2's switch); "none" is the baseline
EFFECT_FIGURE = "figures/section-effect/effect-vs-noise.png"  # in the report folder


@dataclass(frozen=True)
class DemoSettings:
    """The demo's recipe and sizes, in one place (default: the full demo; quick: a smoke test).

    Data: ``characters`` x up to ``per_class`` synthetic faces per expression (``imbalance``: most
    / least frequent expression), split with ``seed``. Study: for each of ``noise_levels`` (0 =
    the clean labels; others: symmetric noise, drawn per training seed) RB on and off x ``seeds``
    training seeds (``seed``, ``seed + 1`` ...), ``epochs`` epochs of ``refine_per_class`` images
    per class, fine-tuning the shipped tiny encoder (``from_scratch``: random weights instead).

    Every other setting is the paper's recipe (`grefel train`'s defaults: Adam, lr 3e-4, label
    smoothing T = 11, augmentation, K = 10, lambda_cls = lambda_a = 1). The departures, each
    measured on these faces (docs/demo.md): 2 x 200 images per class per run instead of 1000 x 500
    (the demo's five-minute target); batch 64 (the paper gives none); lambda_c = 0.1 instead of 1 (at 1 the
    center loss on noisy labels pulls the pretrained embedding apart: RB on's paired sd 1.3 instead
    of 0.5 points over ten seeds at 20 % noise); the correction of eq. (20) ramped in over the first
    epoch (``correction_warmup``; without it RB on's primary head lagged in one seed of five and
    RB on's sd over seeds was 3.4-6.7 points instead of 0.7-1.4); no per-group cap (six characters).
    """

    characters: int = 6
    per_class: int = 600  # synthetic images per character of the most frequent expression
    imbalance: float = 3.0  # most / least frequent expression
    noise_levels: tuple[float, ...] = (0.0, 0.2)  # label noise the runs train on (0: clean labels)
    seeds: int = 5  # training seeds per setting (the paired test needs at least 3)
    epochs: int = 2
    refine_per_class: int = 200  # B of the paper's data refinement: images per class and epoch
    batch_size: int = 64
    lambda_center: float = 0.1
    correction_warmup: float = 1.0
    from_scratch: bool = False
    seed: int = 0  # data: synthesis and split; and the first training seed
    tsne_points: int = 1000  # t-SNE of the report's per-run sections (0 skips it)


DEFAULT = DemoSettings()
QUICK = DemoSettings(per_class=80, seeds=3, epochs=2, refine_per_class=50, tsne_points=0)


def label_set_name(noise: float) -> str:
    """The label set of a noise level: ``clean``, or ``sym20`` (drawn per seed by the study)."""
    return "clean" if noise == 0 else f"sym{round(100 * noise)}"


def train_settings(s: DemoSettings) -> dict:
    """The `grefel train` settings (TrainConfig names) every run of the demo's study shares."""
    return {
        "preset": "tiny",
        "epochs": s.epochs,
        "val_every": s.epochs,  # once, after the last epoch
        "per_class": s.refine_per_class,
        "batch_size": s.batch_size,
        "lambda_center": s.lambda_center,
        "correction_warmup": s.correction_warmup,
        "n_pg": None,
        "from_scratch": s.from_scratch,
        "device": "cpu",
        "workers": 0,
    }


def study_text(dataset: str, s: DemoSettings) -> str:
    """The demo's study file: each noise level (drawn per seed) x RB on and off x ``s.seeds`` seeds."""

    def toml(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(toml(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    train = {k: (0 if k == "n_pg" else v) for k, v in train_settings(s).items()}  # n_pg 0: no cap
    labels = [label_set_name(n) for n in s.noise_levels]
    grid = {"labels": labels, "reliability": list(RB_ON_OFF)}
    if len(labels) == 1:
        train["labels"] = grid.pop("labels")[0]
    lines = ["# written by grefel demo: RB on and off at each noise level, noise drawn per seed", "[study]"]
    lines += [f"name = {toml(STUDY)}", f"dataset = {toml(dataset)}"]
    lines += [f"seeds = {toml([s.seed + i for i in range(s.seeds)])}"]
    lines += ["noise_per_seed = true", 'primary = ["reliability"]', "", "[train]"]
    lines += [f"{k} = {toml(v)}" for k, v in train.items()]
    lines += ["", "[grid]", *(f"{k} = {toml(v)}" for k, v in grid.items())]
    lines += ["", "[baseline]", 'reliability = "none"']
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
    ds_path = _data_steps(step, work, s, cores, console)
    n_runs = len(s.noise_levels) * len(RB_ON_OFF) * s.seeds
    levels = " and ".join("clean labels" if n == 0 else f"{n:.0%} label noise (drawn per seed)" for n in s.noise_levels)
    result = step(
        f"study: {n_runs} runs, reliability balancing on / off x {s.seeds} seeds on {levels}",
        lambda: _run_study(work, ds_path, s, console),
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


def _data_steps(step: _Steps, work: Path, s: DemoSettings, cores: int, console: Console) -> Path:
    """synth -> prepare -> refine in ``work``; the prepared dataset (the study draws the label noise)."""

    raw, data_root = work / "raw", work / "data"
    size = dict(characters=s.characters, per_class=s.per_class, size=DEMO_SIZE, imbalance=s.imbalance)
    step("synthesise faces (FERG-DB layout)", lambda: generate(raw, **size, seed=s.seed, workers=min(2, cores)))
    ds_path = step("prepare ferg", lambda: prepare("ferg", raw, data_root=data_root))
    step(
        "refine: seeded split and the paper's per-epoch refinement",
        lambda: refine(ds_path, seed=s.seed, per_class=s.refine_per_class, console=console),
    )
    return ds_path


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


def _run_study(work: Path, ds_path: Path, s: DemoSettings, console: Console) -> dict:
    """Write the study file into the work folder and run it on the local pool (runs side by side,
    the cores split between them; finished runs are reused, stopped ones resumed)."""

    path = work / f"{STUDY}.toml"
    text = study_text(os.path.relpath(ds_path, work), s)
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
        noise = d["noise"] or 0
        regime = "clean labels" if not noise else f"{noise:g} % {d['mode']} label noise (drawn per seed)"
        paper = table7_effect().get(noise)  # K = 10 minus K = 0 at this noise; None where the paper has none
        keys = ("n", "seeds", "diff_mean", "diff_std", "ci", "test", "t", "df", "p", "p_holm", "holm_family")
        keys += ("ci_verdict", "ci_verdict_confidence", "mde")
        out.append(
            {
                "label_set": setting["label_set"]["name"],
                "regime": regime,
                "noise": noise,
                "paper_effect": paper,
                "value": c["value"],
                "baseline": c["baseline"],
                **{k: c.get(k) for k in keys},
                "verdict": c["verdict"],
                "wilcoxon_p": c.get("wilcoxon_p"),
                "mcnemar": c.get("mcnemar"),
                "sentence": rb_sentence(c, regime, paper),
            }
        )
    return sorted(out, key=lambda e: e["noise"])


def rb_sentence(c: dict, regime: str, paper: float | None = None) -> str:
    """What one RB comparison shows, plainly, never more than its verdict allows; ``paper``: the
    paper's Table 7 effect at this noise level, quoted beside it."""

    head = f"Reliability balancing on vs off, trained on {regime}"
    quote = "" if paper is None else f" The paper's Table 7 reports {paper:+.1f} points here (K = 10 vs 0, Aff-Wild2)."
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
        return f"{head}: {diff} {tail}: significant at 0.05 on these faces.{quote}"
    return (
        f"{head}: {diff} {tail}: not significant; these runs do not show that RB changes accuracy here, "
        f"the effect could lie anywhere from {lo:+.1f} to {hi:+.1f} points.{quote}"
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
    figure = report.parent / EFFECT_FIGURE
    if figure.is_file():
        console.print(f"[bold green]RB effect against noise, beside the paper's Table 7:[/bold green] {figure}")
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
