"""`grefel demo --quick`: the README's first command, end to end on the built-in synthetic faces.

The demo is a small study: the tiny preset trained on 20 % noisy labels with reliability balancing
on and off, 3 seeds each, through `grefel study` (the local pool), evaluated on the clean test split,
reported with the paired difference of RB on against off. The quick flavour trains each run on
4 x 700 images, too few for the model from scratch to leave chance by much (docs/demo.md): this test
checks the pipeline, its files, that the comparison printed and stored is the one the study's
statistics give for these runs, that training lowers the loss, and that a rerun reuses every run.
"""

from __future__ import annotations

import json
import re
import statistics

from typer.testing import CliRunner

from grefel_cli.main import app

RUNS = [f"rb_{rb}-s{seed}" for rb in ("both", "none") for seed in range(3)]


def test_quick_demo_is_a_small_study_with_its_paired_comparison(tmp_path):
    from grefel.study.stats import summarize_study

    work = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--workdir", str(work)])
    assert result.exit_code == 0, result.output
    report = work / "report" / "report.html"
    assert report.is_file() and report.stat().st_size > 10_000
    printed = " ".join(result.output.split())

    summary = json.loads((work / "demo.json").read_text())
    assert summary["quick"] is True and summary["settings"]["seeds"] == 3 and summary["study"] == "study"
    names = [s["step"] for s in summary["steps"]]
    assert names[0].startswith("synthesise") and names[-1] == "report" and len(names) == 6
    runs = summary["runs"]
    assert sorted(runs) == sorted(RUNS) and {r["state"] for r in runs.values()} == {"done"}

    # the paired comparison: the study's statistics of these very runs, printed and in demo.json
    (effect,) = summary["rb_effect"]
    stats = summarize_study(work / "study")
    (c,) = [c for c in stats["comparisons"] if c["metric"] == "accuracy" and c["axis"] == "reliability"]
    assert (effect["value"], effect["baseline"], effect["n"], effect["test"]) == ("both", "none", 3, "paired t")
    for key in ("diff_mean", "ci", "p", "p_holm", "verdict", "wilcoxon_p", "mcnemar"):
        assert effect[key] == c[key], key
    diffs = [runs[f"rb_both-s{s}"]["corrected"] - runs[f"rb_none-s{s}"]["corrected"] for s in range(3)]
    assert abs(effect["diff_mean"] - statistics.fmean(diffs)) < 1e-12  # accuracies <= 1: float64 error ~1e-16
    assert effect["ci"][0] <= effect["diff_mean"] <= effect["ci"][1]
    assert effect["verdict"] in ("significant", "not significant", "no variation between seeds")
    assert " ".join(effect["sentence"].split()) in printed and f"{effect['verdict']}:" in printed
    assert "20 % symmetric label noise" in effect["sentence"]
    assert f"{100 * effect['diff_mean']:+.1f} points" in effect["sentence"]

    # the report holds the same statistics, Table 2's layout and the forest plot of the RB effect
    data = json.loads((work / "report" / "report.json").read_text())
    sections = {s["id"]: s for s in data["sections"]}
    assert sections["section-study"]["data"]["summary"]["comparisons"] == json.loads(json.dumps(stats["comparisons"]))
    (t2,) = sections["section-paper-tables"]["data"]["tables"]
    assert t2["layout"] == "Table 2" and [r["row"] for r in t2["data"]] == ["Without RB", "Both"]
    assert t2["data"][1]["paired"]["diff_mean"] == effect["diff_mean"]
    assert [f["png"] for f in sections["section-comparisons"]["figures"]] == [
        "figures/section-comparisons/forest-reliability.png"
    ]
    for run in stats["runs"]:
        assert run["metrics"]["n"] > 50  # the clean test split

    epochs = summary["settings"]["epochs"]
    for name in RUNS:  # training makes progress: the classification loss falls in every run
        hist = [
            json.loads(line) for line in (work / "study" / "runs" / name / "metrics.jsonl").read_text().splitlines()
        ]
        assert len(hist) == epochs and hist[-1]["train_cls"] < hist[0]["train_cls"], [h["train_cls"] for h in hist]
    finished = {
        p: p.stat().st_mtime_ns
        for name in RUNS
        for p in (work / "study" / "runs" / name / f for f in ("best.pt", "last.pt", "metrics.jsonl", "status.json"))
    }
    finished[work / "data" / "ferg" / "manifest.json"] = (work / "data" / "ferg" / "manifest.json").stat().st_mtime_ns

    # a second run in the same folder reuses every finished step and run: no checkpoint, metrics
    # file, run status or prepared dataset is written again, and the comparison is the same
    again = CliRunner().invoke(app, ["demo", "--quick", "--workdir", str(work)])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert "0 to run" in " ".join(again.output.split())
    second = json.loads((work / "demo.json").read_text())
    assert second["runs"] == runs and second["rb_effect"] == summary["rb_effect"]


def test_demo_refuses_a_file_as_its_work_folder(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--quick", "--workdir", str(afile)])
    assert result.exit_code == 1 and "is a file, not a folder" in result.output
    assert "Traceback" not in result.output and afile.read_text() == "keep me"


def test_the_demo_study_file_trains_each_run_as_the_recipe_says(tmp_path):
    """The study file the demo writes: RB on and off x the seeds, each run the DemoSettings recipe
    (n_pg 0: no per-group cap, as `grefel train --n-pg 0` spells it), NCHW on the CPU
    (channels_last is faster on some CPUs and slower on others: 0.47x NCHW's full-preset inference
    on one x86 machine, so no CPU path may pick it by default)."""
    from grefel.demo import DEFAULT, QUICK, DemoSettings, study_text
    from grefel.study.spec import parse_study
    from grefel.training.config import TrainConfig

    assert TrainConfig().channels_last is False
    (tmp_path / "data" / "ferg").mkdir(parents=True)
    for s in (DEFAULT, QUICK):
        study = parse_study(study_text("data/ferg", ["sym20-s0"], s), tmp_path / "study.toml")
        assert sorted(r.name for r in study.runs) == sorted(RUNS) and study.baselines == {"reliability": "none"}
        for r in study.runs:
            cfg = TrainConfig(**r.settings)
            assert cfg.channels_last is False and cfg.device == "cpu" and cfg.labels == "sym20-s0"
            assert (cfg.epochs, cfg.per_class, cfg.lr, cfg.label_smoothing) == (s.epochs, s.refine_per_class, s.lr, 0.0)
            assert (
                r.settings["n_pg"] == 0
                and cfg.augment is False
                and cfg.dataset == str((tmp_path / "data" / "ferg").resolve())
            )
    two = DemoSettings(characters=2, per_class=4, imbalance=1.0, epochs=1, refine_per_class=4, seeds=4)
    study = parse_study(study_text("data/ferg", ["sym20-s0", "asym40-s0"], two), tmp_path / "study.toml")
    assert len(study.runs) == 2 * 2 * 4 and study.seeds == [0, 1, 2, 3]
    assert {r.cell["labels"] for r in study.runs} == {"sym20-s0", "asym40-s0"}
    assert re.search(r"^seeds = \[0, 1, 2, 3\]$", study_text("d", ["x"], two), re.M)


def test_the_demo_never_says_more_than_the_verdict():
    """The sentence the demo ends with, for each verdict of the study's statistics."""
    from grefel.demo import rb_sentence
    from grefel.study import stats as S

    def comparison(on, off):
        c = S.paired(on, off)
        c["p_holm"] = S.holm([c["p"] if c["n"] >= S.MIN_SEEDS else None])[0]
        return {**c, "verdict": S.verdict(c["n"], c["p_holm"])}

    two = rb_sentence(comparison([0.90, 0.95], [0.80, 0.82]), "20 % symmetric label noise")
    assert "not enough seeds" in two and "no conclusion" in two and "significant" not in two
    clear = comparison([0.90, 0.91, 0.92, 0.93], [0.80, 0.80, 0.81, 0.80])
    assert clear["verdict"] == "significant"
    text = rb_sentence(clear, "clean labels")
    assert text.endswith("significant at 0.05 on these faces.") and f"{100 * clear['diff_mean']:+.1f} points" in text
    unclear = comparison([0.90, 0.70, 0.95], [0.85, 0.88, 0.86])
    assert unclear["verdict"] == "not significant"
    text = rb_sentence(unclear, "clean labels")
    lo, hi = (100 * x for x in unclear["ci"])
    assert "not significant" in text and f"anywhere from {lo:+.1f} to {hi:+.1f} points" in text
    same = comparison([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert "t-test is undefined" in rb_sentence(same, "clean labels")
