"""A study over training methods: `[grid] method = [...]` names, baselines, imported label sets, per-run
checks, and the report's noisy-label bench (table with published numbers, paired differences against
GReFEL, Fig. 8 per method), on a small real study (tiny presets, one epoch, 12 runs)."""

from __future__ import annotations

import json

import pytest
from helpers import make_prepared
from typer.testing import CliRunner

from grefel.study import stats as S
from grefel.study.noisy_bench import bench_table, noisy_bench_section, paired_rows, published_noisy_rafdb
from grefel.study.spec import StudyFileError, parse_study
from grefel_cli.main import app

STUDY = """
[study]
dataset = "{dataset}"
seeds = 3

[train]
preset = "tiny"
epochs = 1
per_class = 4
batch_size = 4
workers = 0
device = "cpu"
tensorboard = false

[grid]
labels = ["sym10", "sym20"]
method = ["grefel", "eac"]
"""


def test_method_axis_names_baseline_and_checks(tmp_path):
    study = parse_study(STUDY.format(dataset="toy"), tmp_path / "s.toml")
    axis = next(a for a in study.axes if a.name == "method")
    assert [v.part for v in axis.values] == ["grefel", "eac"] and study.baselines["method"] == "grefel"
    assert study.runs[0].name == "sym10-grefel-s0" and study.runs[1].settings["method"] == "grefel"
    bad = STUDY.replace("tensorboard = false", "tensorboard = false\nlabel_smoothing = 0.0")
    with pytest.raises(StudyFileError, match="run sym10-eac-s0: label_smoothing is a GReFEL setting"):
        parse_study(bad.format(dataset="toy"), tmp_path / "s.toml")
    bad = STUDY.replace('preset = "tiny"', 'preset = "resnet50"')
    with pytest.raises(StudyFileError, match="method grefel has no preset 'resnet50'"):
        parse_study(bad.format(dataset="toy"), tmp_path / "s.toml")
    imported = STUDY.format(dataset="toy") + '\n[label_sets]\nsym10 = { from_file = "noise01.txt", noise = 0.1 }\n'
    spec = parse_study(imported, tmp_path / "s.toml").label_sets["sym10"]
    assert (spec.mode, spec.noise, spec.from_file) == ("imported", 0.1, str(tmp_path / "noise01.txt"))
    with pytest.raises(StudyFileError, match="give noise, the level the list stands for"):
        parse_study(STUDY.format(dataset="toy") + '\n[label_sets]\nsym10 = { from_file = "n.txt" }\n')


def test_published_numbers_are_only_citable_ones():
    pub = published_noisy_rafdb()
    assert set(pub) == {("eac", 10.0)} and pub[("eac", 10.0)]["value"] == 88.02
    assert "issue #3" in pub[("eac", 10.0)]["source"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("study-methods")
    dataset = make_prepared(
        root / "data" / "rafdb", n_per_class=8, num_classes=3, split={"train": 0.5, "val": 0.25, "test": 0.25}
    )
    (root / "s.toml").write_text(STUDY.format(dataset=dataset))
    res = CliRunner().invoke(app, ["study", "run", str(root / "s.toml"), "--parallel", "2"])
    assert res.exit_code == 0, res.output
    return root / "s"


@pytest.mark.slow
def test_bench_section_numbers_come_from_the_study(finished, tmp_path):
    summary = S.summarize_study(finished)
    (table,) = bench_table(summary)
    assert table["columns"] == ["method", "10 % noise", "published", "20 % noise", "published"]
    assert [r[0] for r in table["rows"]] == ["GReFEL", "EAC"]
    cells = {(d["method"], d["noise"]): d for d in table["data"]}
    eac10 = next(s for s in summary["settings"] if s["cell"] == {"labels": "sym10", "method": "eac"})
    assert cells[("eac", 10.0)]["accuracy"] == eac10["metrics"]["accuracy"]
    assert cells[("eac", 10.0)]["published"]["value"] == 88.02  # the dataset folder is called rafdb
    assert table["rows"][1][2] == "88.02" and table["rows"][0][2] == "not confirmed"
    rows = paired_rows(summary)
    assert [(r[0], r[1]) for r in rows] == [("EAC", "10 %"), ("EAC", "20 %")]
    c = next(c for c in summary["comparisons"] if c["axis"] == "method" and c["context"] == {"labels": "sym10"})
    assert rows[0][3] == c["n"] == 3 and rows[0][4].startswith(f"{100 * c['diff_mean']:+.1f}")
    section = noisy_bench_section(summary, finished)
    shares = section.data["fig8"]
    assert [p["title"].split(":")[0] for p in shares] == ["10 % label noise", "20 % label noise"]
    for p in shares:
        assert set(p["methods"]) == {"GReFEL", "EAC"}
        assert all(abs(sum(v) - 1) < 1e-9 or sum(v) == 0 for v in p["methods"].values())
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["report", "--study", str(finished), "--out", str(out), "--study-runs", "none"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    assert "section-noisy-bench" in [s["id"] for s in data["sections"]]
    assert (out / "figures" / "section-noisy-bench" / "error-shares-by-method.png").is_file()


def test_the_shipped_noisy_rafdb_study_parses():
    from pathlib import Path

    path = Path(__file__).parents[1] / "examples" / "noisy-rafdb.toml"
    study = parse_study(path.read_text(), path)
    assert len(study.runs) == 3 * 5 * 3 and study.baselines["method"] == "grefel"
    assert {s.name: (s.noise, s.mode) for s in study.label_sets.values()} == {
        "eac-noise10": (0.1, "imported"),
        "eac-noise20": (0.2, "imported"),
        "eac-noise30": (0.3, "imported"),
    }
    assert study.label_sets["eac-noise20"].from_file == str(path.parent / "noise02.txt")
    assert {r.settings.get("method") for r in study.runs} == {"grefel", "eac", "scn", "rul", "ce"}


def test_paper_tables_see_grefel_settings_only():
    """A baseline's unused GReFEL settings (here its default label smoothing against GReFEL's 0) must not
    make a Table 8 out of a method comparison."""
    from grefel.study.noisy_bench import grefel_only
    from grefel.study.tables import study_tables

    acc = {"n": 3, "mean": 0.5, "std": 0.1, "ci": [0.4, 0.6], "seeds": [0, 1, 2], "values": [0.4, 0.5, 0.6]}
    metrics = {"accuracy": acc, "accuracy_primary": acc, "macro_f1": acc}
    settings = [
        {
            "cell": {"model": m},
            "name": m,
            "settings": {"method": m, **extra},
            "label_set": {"name": "sym20"},
            "metrics": metrics,
        }
        for m, extra in (("grefel", {"label_smoothing": 0.0}), ("eac", {}))
    ]
    summary = {
        "axes": [{"name": "model", "field": None, "values": ["grefel", "eac"]}],
        "settings": settings,
        "comparisons": [],
    }
    assert [t["layout"] for t in study_tables(summary)] == ["Table 8"]  # what the filter prevents
    assert study_tables(grefel_only(summary)) == []
