"""`grefel demo --quick`: the README's first command, end to end on the built-in synthetic faces.

The demo is a small study, the paper's Table 7 in miniature: the tiny preset, fine-tuned from the
encoder shipped with grefel, trained on clean labels and on 20 % label noise drawn per seed, with
reliability balancing on and off, evaluated on the clean test split, reported with the paired
difference of RB on against off at each noise level and the effect against noise beside Table 7.
The quick flavour trains each run on 2 x 350 images and 3 seeds: this test checks the pipeline, its
files, that the comparisons printed and stored are the ones the study's statistics give for these
runs, that training lowers the loss, and that a rerun reuses every run.
"""

from __future__ import annotations

import json
import re
import statistics

from typer.testing import CliRunner

from grefel_cli.main import app

LABELS = ("clean", "sym20")
RUNS = [f"{labels}-rb_{rb}-s{seed}" for labels in LABELS for rb in ("both", "none") for seed in range(3)]


def test_quick_demo_is_table7_in_miniature_with_its_paired_comparisons(tmp_path):
    from grefel.demo import EFFECT_FIGURE
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
    assert names[0].startswith("synthesise") and names[-1] == "report" and len(names) == 5
    runs = summary["runs"]
    assert sorted(runs) == sorted(RUNS) and {r["state"] for r in runs.values()} == {"done"}
    for seed in range(3):  # noise drawn per replicate: seed s trains on its own draw, RB on and off alike
        for rb in ("both", "none"):
            cfg = json.loads((work / "study" / "runs" / f"sym20-rb_{rb}-s{seed}" / "config.json").read_text())
            assert cfg["label_set"] == f"sym20-s{seed}"
        pretrained = (work / "study" / "runs" / f"clean-rb_both-s{seed}" / "pretrained.txt").read_text()
        assert pretrained.startswith("tiny-encoder tiny-encoder.pth") and "0 missing" in pretrained

    # one paired comparison per noise level: the study's statistics of these very runs
    stats = summarize_study(work / "study")
    effects = summary["rb_effect"]
    assert [e["noise"] for e in effects] == [0, 20] and [e["paper_effect"] for e in effects] == [2.33, 5.34]
    for labels, effect in zip(LABELS, effects):
        (c,) = [
            c
            for c in stats["comparisons"]
            if c["metric"] == "accuracy" and c["axis"] == "reliability" and c["context"] == {"labels": labels}
        ]
        assert (effect["value"], effect["baseline"], effect["n"], effect["test"]) == ("both", "none", 3, "paired t")
        for key in ("diff_mean", "ci", "p", "p_holm", "verdict", "wilcoxon_p", "mcnemar"):
            assert effect[key] == c[key], key
        assert c["holm_family"] == 2  # primary = ["reliability"]: Holm over the two noise levels alone
        on_off = [runs[f"{labels}-rb_{rb}-s{s}"]["corrected"] for rb in ("both", "none") for s in range(3)]
        diffs = [on_off[s] - on_off[3 + s] for s in range(3)]
        assert abs(effect["diff_mean"] - statistics.fmean(diffs)) < 1e-12  # accuracies <= 1: float64 error ~1e-16
        assert effect["ci"][0] <= effect["diff_mean"] <= effect["ci"][1]
        assert effect["verdict"] in ("significant", "not significant", "no variation between seeds")
        assert " ".join(effect["sentence"].split()) in printed and f"{effect['verdict']}:" in printed
        assert f"{100 * effect['diff_mean']:+.1f} points" in effect["sentence"]
        assert f"Table 7 reports {effect['paper_effect']:+.1f} points" in effect["sentence"]
    assert "clean labels" in effects[0]["sentence"]
    assert "20 % symmetric label noise (drawn per seed)" in effects[1]["sentence"]

    # the report holds the same statistics, Tables 2 and 7's layouts, and the effect against noise
    data = json.loads((work / "report" / "report.json").read_text())
    sections = {s["id"]: s for s in data["sections"]}
    assert sections["section-study"]["data"]["summary"]["comparisons"] == json.loads(json.dumps(stats["comparisons"]))
    layouts = [t["layout"] for t in sections["section-paper-tables"]["data"]["tables"]]
    assert layouts == ["Table 2", "Table 2", "Table 7"]  # per noise level; Table 7 for RB on (RB off has no K)
    effect_section = sections["section-effect"]
    assert [f["png"] for f in effect_section["figures"]] == [EFFECT_FIGURE]
    (panel,) = effect_section["data"]["panels"]
    (line,) = panel["lines"]
    assert line["x"] == [0, 20] and line["y"] == [100 * e["diff_mean"] for e in effects]
    assert f"{(work / 'report' / EFFECT_FIGURE)}" in printed
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
    # file, run status or prepared dataset is written again, and the comparisons are the same
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
    """The study file the demo writes: each noise level (drawn per seed) x RB on and off x the
    seeds, each run the paper's recipe but for the DemoSettings departures (n_pg 0: no per-group
    cap, as `grefel train --n-pg 0` spells it), from the shipped encoder, NCHW on the CPU
    (channels_last is faster on some CPUs and slower on others: 0.47x NCHW's full-preset inference
    on one x86 machine, so no CPU path may pick it by default)."""
    from grefel.demo import DEFAULT, QUICK, DemoSettings, study_text
    from grefel.study.spec import parse_study
    from grefel.training.config import TrainConfig

    default = TrainConfig()
    assert default.channels_last is False
    (tmp_path / "data" / "ferg").mkdir(parents=True)
    for s in (DEFAULT, QUICK):
        study = parse_study(study_text("data/ferg", s), tmp_path / "study.toml")
        assert sorted(r.name for r in study.runs) == sorted(RUNS if s is QUICK else _runs(5))
        assert study.baselines == {"labels": "clean", "reliability": "none"}
        assert study.noise_per_seed and study.primary == ["reliability"]
        for r in study.runs:
            cfg = TrainConfig(**r.settings)
            assert cfg.channels_last is False and cfg.device == "cpu" and cfg.from_scratch is False
            assert cfg.labels in ("clean", f"sym20-s{r.seed}")
            assert (cfg.epochs, cfg.per_class, cfg.lambda_center) == (s.epochs, s.refine_per_class, s.lambda_center)
            # the paper's recipe where it fits: label smoothing T = 11, augmentation, Adam's lr 3e-4, K = 10
            paper = (default.label_smoothing, default.augment, default.lr, default.num_anchors)
            assert (cfg.label_smoothing, cfg.augment, cfg.lr, cfg.num_anchors) == paper == (0.11, True, None, 10)
            assert r.settings["n_pg"] == 0 and cfg.dataset == str((tmp_path / "data" / "ferg").resolve())
    two = DemoSettings(characters=2, per_class=4, imbalance=1.0, epochs=1, refine_per_class=4, seeds=4)
    two = DemoSettings(**{**two.__dict__, "noise_levels": (0.0, 0.2, 0.4)})
    study = parse_study(study_text("data/ferg", two), tmp_path / "study.toml")
    assert len(study.runs) == 3 * 2 * 4 and study.seeds == [0, 1, 2, 3]
    assert {r.cell["labels"] for r in study.runs} == {"clean", "sym20", "sym40"}
    assert re.search(r"^seeds = \[0, 1, 2, 3\]$", study_text("d", two), re.M)
    one = DemoSettings(**{**two.__dict__, "noise_levels": (0.2,)})
    assert {r.cell.get("labels") for r in parse_study(study_text("data/ferg", one), tmp_path / "s.toml").runs} == {None}


def _runs(seeds: int) -> list[str]:
    return [f"{labels}-rb_{rb}-s{seed}" for labels in LABELS for rb in ("both", "none") for seed in range(seeds)]


def test_the_demo_never_says_more_than_the_verdict():
    """The sentence the demo ends with, for each verdict of the study's statistics."""
    from grefel.demo import rb_sentence
    from grefel.study import stats as S

    def comparison(on, off):
        c = S.paired(on, off)
        c["p_holm"] = S.holm([c["p"] if c["n"] >= S.MIN_SEEDS else None])[0]
        return {**c, "verdict": S.verdict(c["n"], c["p_holm"])}

    two = rb_sentence(comparison([0.90, 0.95], [0.80, 0.82]), "20 % symmetric label noise", paper=5.34)
    assert "not enough seeds" in two and "no conclusion" in two and "significant" not in two
    clear = comparison([0.90, 0.91, 0.92, 0.93], [0.80, 0.80, 0.81, 0.80])
    assert clear["verdict"] == "significant"
    text = rb_sentence(clear, "clean labels", paper=2.33)
    assert text.endswith("The paper's Table 7 reports +2.3 points here (K = 10 vs 0, Aff-Wild2).")
    text = rb_sentence(clear, "clean labels")
    assert text.endswith("significant at 0.05 on these faces.") and f"{100 * clear['diff_mean']:+.1f} points" in text
    unclear = comparison([0.90, 0.70, 0.95], [0.85, 0.88, 0.86])
    assert unclear["verdict"] == "not significant"
    text = rb_sentence(unclear, "clean labels")
    lo, hi = (100 * x for x in unclear["ci"])
    assert "not significant" in text and f"anywhere from {lo:+.1f} to {hi:+.1f} points" in text
    same = comparison([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert "t-test is undefined" in rb_sentence(same, "clean labels")
