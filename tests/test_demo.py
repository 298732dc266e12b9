"""`grefel demo --quick`: the README's first command, end to end on the built-in synthetic faces.

The quick flavour trains each run on 5 x 1,750 images of 20 % noisy labels: enough for the tiny
model from scratch to leave chance (43-50 % on the clean test split here, docs/demo.md), far from
the full demo's 94 %. This test checks the pipeline and its files, the consistency of the numbers
between them, that training lowers the loss, and that both runs end far above chance (1/7) and
above always answering the most frequent class.
"""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from grefel_cli.main import app


def test_quick_demo_writes_a_consistent_report(tmp_path):
    work = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--workdir", str(work)])
    assert result.exit_code == 0, result.output
    report = work / "report" / "report.html"
    assert report.is_file() and report.stat().st_size > 10_000
    assert str(report) in re.sub(r"\s+", "", result.output) or "report.html" in result.output

    summary = json.loads((work / "demo.json").read_text())
    assert summary["quick"] is True and set(summary["clean_test_accuracy"]) == {"rb-on", "rb-off"}
    names = [s["step"] for s in summary["steps"]]
    assert names[0].startswith("synthesise") and names[-1] == "report" and len(names) == 8

    data = json.loads((work / "report" / "report.json").read_text())
    runs = {r["name"].split("/")[0]: r for r in data["runs"]}  # "rb-on/best": run folder / checkpoint
    assert set(runs) == {"rb-on", "rb-off"}
    for name, run in runs.items():
        assert run["label_set"] is not None and run["n"] > 50  # clean test split, noisy label set recorded
        corrected = run["metrics"]["corrected"]["accuracy"]
        assert abs(corrected - summary["clean_test_accuracy"][name]["corrected"]) < 1e-9
        assert corrected >= 0.30, (name, corrected)  # chance 0.14; the most frequent class is 0.23 of the test split
    for sub in ("rb-on", "rb-off"):  # training makes progress: the classification loss falls
        hist = [json.loads(line) for line in (work / "runs" / sub / "metrics.jsonl").read_text().splitlines()]
        assert len(hist) == 5 and hist[-1]["train_cls"] < hist[0]["train_cls"], [h["train_cls"] for h in hist]
    finished = {
        p: p.stat().st_mtime_ns
        for sub in ("rb-on", "rb-off")
        for p in (
            work / "runs" / sub / "best.pt",
            work / "runs" / sub / "last.pt",
            work / "runs" / sub / "metrics.jsonl",
        )
    }
    finished[work / "data" / "ferg" / "manifest.json"] = (work / "data" / "ferg" / "manifest.json").stat().st_mtime_ns

    # a second run in the same folder reuses every finished step: no checkpoint, metrics file or
    # prepared dataset is written again, and the accuracies are those of the first run
    again = CliRunner().invoke(app, ["demo", "--quick", "--workdir", str(work)])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert json.loads((work / "demo.json").read_text())["clean_test_accuracy"] == summary["clean_test_accuracy"]


def test_demo_refuses_a_file_as_its_work_folder(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--quick", "--workdir", str(afile)])
    assert result.exit_code == 1 and "is a file, not a folder" in result.output
    assert "Traceback" not in result.output and afile.read_text() == "keep me"


def test_cpu_training_uses_nchw_unless_asked(tmp_path):
    """channels_last is faster on some CPUs and slower on others (0.47x NCHW's full-preset inference
    on one x86 machine): no CPU path may pick it by default."""
    from grefel.demo import DEFAULT, QUICK, _train_config
    from grefel.train import TrainConfig

    assert TrainConfig().channels_last is False
    for s in (DEFAULT, QUICK):
        assert _train_config(tmp_path / "ds", "noisy", "rb-on", "both", tmp_path, s).channels_last is False
