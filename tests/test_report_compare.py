"""Several runs given to `grefel report`: an ad-hoc study summarised by the study's own statistics.

Predictions files are written here with known right answers and a recorded training configuration
(no training): the ad-hoc summary of runs at 3 seeds x 2 settings must equal the summary of the
same runs in a study folder, number for number; one seed per setting is labelled an anecdote; a run
without reliability balancing is never shown as K = 0.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from grefel.evaluation.predictions import write_predictions
from grefel.study import stats as S
from grefel.study.adhoc import summarize_runs
from grefel.study.folder import PREDICTIONS, rel_run, run_folder, save_plan, write_status
from grefel.study.spec import parse_study
from grefel.study.tables import dims, study_tables
from grefel_cli.main import app

N = 40
CLASSES = ["a", "b", "c", "d"]


def write_run(path, right: int, *, seed: int, reliability="both", num_anchors=10, labels="clean", noise=None):
    """A predictions file whose corrected prediction is right on the first ``right`` of 40 images, recording
    the configuration of the run (and, as evaluate does, the anchors the built model really has)."""
    y = np.arange(N) % 4
    pred = np.where(np.arange(N) < right, y, (y + 1) % 4)
    eye = np.eye(4, dtype=np.float32)
    cols = {
        "index": np.arange(100, 100 + N),
        "label": y,
        "pred_primary": y,
        "pred_corrected": pred,
        "primary": 0.7 * eye[y] + 0.075,
        "corrected": 0.7 * eye[pred] + 0.075,
    }
    anchors = num_anchors if reliability in ("both", "anchors") else 0
    info = {"noise": 0.0} if labels == "clean" else {"noise": noise, "mode": "symmetric", "seed": int(labels[-1])}
    meta = {
        "classes": CLASSES,
        "dataset": {"name": "toy", "protocol": "4cls", "synthetic": True},
        "split": "test",
        "model": {"num_anchors": anchors, "reliability": reliability},
        "model_config": {"preset": "tiny", "num_classes": 4, "num_anchors": num_anchors},
        "config": {"seed": seed, "reliability": reliability, "num_anchors": num_anchors, "labels": labels},
        "train_label_set": labels,
        "train_label_set_info": info,
        "epoch": 3,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_predictions(path, cols, meta)


# -- the same numbers as a study ------------------------------------------------------------------------
STUDY = """\
[study]
dataset = "toy"
seeds = 3

[grid]
reliability = ["both", "none"]
"""
RIGHT = {"rb_both": [30, 33, 35], "rb_none": [28, 29, 33]}


def test_an_adhoc_summary_of_3_seeds_x_2_settings_equals_the_study_summary(tmp_path):
    study = tmp_path / "study"
    save_plan(study, parse_study(STUDY), STUDY)
    files = []
    for cell, rights in RIGHT.items():
        for seed, right in enumerate(rights):
            name = f"{cell}-s{seed}"
            path = write_run(study / rel_run(name, PREDICTIONS), right, seed=seed, reliability=cell[3:])
            write_status(run_folder(study, name), state="done", predictions=rel_run(name, PREDICTIONS))
            write_status(run_folder(study, name), metrics=S.run_metrics(path))
            files.append((f"runs/{name}/best", path))
    ref = S.summarize_study(study)
    adhoc = summarize_runs(files[::-1])  # in any order

    assert adhoc["kind"] == "ad hoc" and adhoc["problems"] == [] and adhoc["seeds"] == [0, 1, 2]
    assert adhoc["axes"] == ref["axes"]  # reliability: both vs none, baseline none, read from the configurations
    assert [s["name"] for s in adhoc["settings"]] == [s["name"] for s in ref["settings"]] == ["rb_both", "rb_none"]
    for a, b in zip(adhoc["settings"], ref["settings"]):
        assert a["cell"] == b["cell"] and a["metrics"] == b["metrics"]
    # every number of every comparison: difference, intervals, t, p, Holm, verdict, MDE, Wilcoxon, McNemar
    assert adhoc["comparisons"] == ref["comparisons"] and len(ref["comparisons"]) == len(S.METRICS)
    (c,) = [c for c in adhoc["comparisons"] if c["metric"] == "accuracy"]
    assert c["n"] == 3 and c["seeds"] == [0, 1, 2] and c["test"] == "paired t"
    assert c["diff_mean"] == pytest.approx((2 + 4 + 2) / 3 / N, rel=1e-12)


# -- one seed per setting ---------------------------------------------------------------------------------
def test_a_one_seed_pair_is_labelled_an_anecdote_in_the_summary_tables_and_page(tmp_path):
    on = write_run(tmp_path / "on.parquet", 30, seed=0, reliability="both")
    off = write_run(tmp_path / "off.parquet", 25, seed=0, reliability="none")
    summary = summarize_runs([("on", on), ("off", off)])
    (c,) = [c for c in summary["comparisons"] if c["metric"] == "accuracy"]
    assert c["n"] == 1 and c["verdict"] == S.ANECDOTE == "one run against one run: an anecdote, no interval"
    assert c["ci"] is None and c["ci_verdict"] is None and c["p"] is None and c["mde"] is None
    (t2,) = study_tables(summary)  # reliability balancing: the paper's Table 2, not Table 6
    assert t2["layout"] == "Table 2" and "an anecdote, no interval" in t2["rows"][-1][-1]

    out = tmp_path / "rep"
    res = CliRunner().invoke(
        app, ["report", "--ckpt", str(on), "--ckpt", str(off), "--out", str(out), "--tsne-points", "0"]
    )
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    data = json.loads((out / "report.json").read_text())
    assert [s["id"] for s in data["sections"]][0] == "section-comparison" and "comparison" not in data
    assert data["sections"][0]["data"]["summary"]["comparisons"] == json.loads(json.dumps(summary["comparisons"]))
    assert "one run against one run: an anecdote, no interval" in html and "Comparison of runs" in html


# -- reliability balancing off is not K = 0 ------------------------------------------------------------------
def test_rb_off_is_never_shown_as_k_0(tmp_path):
    runs = [
        ("off", write_run(tmp_path / "off.parquet", 25, seed=0, reliability="none")),
        ("k10", write_run(tmp_path / "k10.parquet", 30, seed=0, reliability="both", num_anchors=10)),
    ]
    summary = summarize_runs(runs)
    assert [a["name"] for a in summary["axes"]] == ["reliability"]  # not K: the configurations share K = 10
    assert {s["cell"]["reliability"]: dims(s)["K"] for s in summary["settings"]} == {
        "none": None,
        "both": 10,
    }  # off: no K
    assert [t["layout"] for t in study_tables(summary)] == ["Table 2"]

    runs.append(("k4", write_run(tmp_path / "k4.parquet", 27, seed=0, reliability="both", num_anchors=4)))
    summary = summarize_runs(runs)
    axes = {a["name"]: a for a in summary["axes"]}
    assert list(axes) == ["reliability", "num_anchors"] and axes["num_anchors"]["values"] == ["4", "10"]
    for t in study_tables(summary):
        if t["layout"] == "Table 6":
            assert t["columns"] == ["K", "4", "10"]
            assert all(d["K"] != 0 for d in t["data"])
    assert {s["cell"]["num_anchors"] for s in summary["settings"]} == {"4", "10"}

    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["report", "--ckpt", str(runs[0][1]), "--out", str(out), "--tsne-points", "0"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    assert data["runs"][0]["settings"]["K"] == "none (reliability none: no anchors)"
    assert "K none (reliability none: no anchors)" in (out / "report.html").read_text()


# -- replicates: noise drawn per seed, one replicate twice ----------------------------------------------------
def test_noise_drawn_per_seed_is_one_label_set_and_a_repeated_replicate_is_left_out(tmp_path):
    runs = [
        (f"{rb}-s{s}", write_run(tmp_path / f"{rb}{s}.parquet", 26 + s + (rb == "both"), seed=s, reliability=rb,
                                 labels=f"sym20-s{s}", noise=0.2))
        for rb in ("both", "none")
        for s in range(3)
    ]  # fmt: skip
    runs.append(("both-s0 again", runs[0][1]))
    summary = summarize_runs(runs)
    assert [a["name"] for a in summary["axes"]] == ["reliability"]  # not labels: one set, drawn per seed
    assert summary["noise_per_seed"] is True and "the label-noise draw" in summary["replicates"]["varies"]
    assert summary["settings"][0]["label_set"] == {"name": "sym20", "noise": 0.2, "mode": "symmetric", "per_seed": True}
    (c,) = [c for c in summary["comparisons"] if c["metric"] == "accuracy"]
    assert c["n"] == 3 and c["diff_mean"] == pytest.approx(1 / N, rel=1e-12)
    assert summary["problems"] == [
        "both-s0 again has the settings and training seed (0) of both-s0: one replicate twice, "
        "left out of the comparison"
    ]
