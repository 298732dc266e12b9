"""`grefel report --study DIR`: the study's tables, forest plot, noise curves with bands and report.json,
checked against grefel.study.stats on a small real study (tiny preset, one epoch, 12 runs); the
layouts of the tables that study does not cover, on summaries built with the same statistics; the
single-run report unchanged."""

from __future__ import annotations

import base64
import json
import re
import shutil

import pytest
from helpers import make_prepared
from typer.testing import CliRunner

from grefel.study import stats as S
from grefel.study.folder import rel_run, run_folder, write_status
from grefel.study.report import forest_rows, noise_curves, paper_effect_curve
from grefel.study.tables import dims, fmt_stat, study_tables
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
labels = ["clean", "sym10"]
reliability = ["both", "none"]
"""
FAILED = "sym10-rb_none-s2"


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """12 real runs: clean and 10 % noisy labels x reliability balancing on and off x 3 seeds."""
    root = tmp_path_factory.mktemp("study-report")
    dataset = make_prepared(
        root / "data" / "toy", n_per_class=8, num_classes=3, n_groups=2, split={"train": 0.5, "val": 0.25, "test": 0.25}
    )
    (root / "s.toml").write_text(STUDY.format(dataset=dataset))
    res = CliRunner().invoke(app, ["study", "run", str(root / "s.toml"), "--parallel", "2"])
    assert res.exit_code == 0, res.output
    return root / "s"


@pytest.fixture
def study(finished_study, tmp_path):
    """A copy of the study, moved elsewhere, with one run failed as the pool marks it."""
    moved = tmp_path / "moved" / "study"
    shutil.copytree(finished_study, moved)
    write_status(
        run_folder(moved, FAILED),
        state="failed",
        error="grefel train exited with status 1",
        log=rel_run(FAILED, "run.log"),
    )
    return moved


def _json(obj):
    return json.loads(json.dumps(obj))


@pytest.mark.slow
def test_study_report_tables_forest_curves_and_json_match_the_statistics(study, tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["report", "--study", str(study), "--out", str(out), "--tsne-points", "0"])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    data = json.loads((out / "report.json").read_text())
    summary = S.summarize_study(study)
    sections = {s["id"]: s for s in data["sections"]}
    assert list(sections) == [
        "section-study",
        "section-paper-tables",
        "section-comparisons",
        "section-noise",
        "section-effect",
    ]

    # every number of the statistics, including p-values and the test, is in report.json
    assert sections["section-study"]["data"]["summary"] == _json(summary)
    assert sections["section-comparisons"]["data"]["methods"] == _json(summary["methods"])
    assert {c["test"] for c in summary["comparisons"]} == {"paired t"}

    # the failed run: listed at the top of the page with its log, and left out of its setting's n
    problem = f"run {FAILED} failed: grefel train exited with status 1 (log: runs/{FAILED}/run.log)"
    assert data["problems"] == [problem] and problem in html
    cells = {s["name"]: s for s in summary["settings"]}
    assert (
        cells["sym10-rb_none"]["metrics"]["accuracy"]["n"] == 2
        and cells["clean-rb_none"]["metrics"]["accuracy"]["n"] == 3
    )

    # Table 2 (reliability) per label set, Table 5 (0 / 10 % noise) and Table 7 (noise, K = 10)
    tables = sections["section-paper-tables"]["data"]["tables"]
    assert sorted({t["layout"] for t in tables}) == ["Table 2", "Table 5", "Table 7"]
    t2 = next(t for t in tables if t["layout"] == "Table 2" and t["context"] == {"labels": "clean"})
    rows = {r["row"]: r for r in t2["data"]}
    assert set(rows) == {"Without RB", "Both"}
    both = cells["clean-rb_both"]["metrics"]
    assert rows["Both"]["accuracy"]["mean"] == both["accuracy"]["mean"]
    assert rows["Both"]["accuracy"]["ci"] == both["accuracy"]["ci"] and rows["Both"]["accuracy"]["n"] == 3
    assert rows["Both"]["macro_f1"]["mean"] == both["macro_f1"]["mean"]
    assert (rows["Without RB"]["paper_accuracy"], rows["Both"]["paper_accuracy"], rows["Both"]["paper_f1"]) == (
        68.15,
        72.48,
        0.731,
    )
    rb_clean = next(
        c
        for c in summary["comparisons"]
        if c["metric"] == "accuracy" and c["axis"] == "reliability" and c["context"] == {"labels": "clean"}
    )
    assert (
        rows["Both"]["paired"]["diff_mean"] == rb_clean["diff_mean"]
        and rows["Both"]["paired"]["p_holm"] == rb_clean["p_holm"]
    )
    assert rows["Without RB"]["paired"] is None  # the baseline
    t7 = next(t for t in tables if t["layout"] == "Table 7" and t["context"]["reliability"] == "both")
    assert t7["columns"] == ["K", "0", "10"]
    assert [(d["K"], d["noise"], d["paper"]) for d in t7["data"]] == [(10, 0.0, 71.25), (10, 10.0, 70.53)]
    assert t7["data"][1]["accuracy"]["mean"] == cells["sym10-rb_both"]["metrics"]["accuracy"]["mean"]
    assert "Table 2 layout: reliability balancing setups (labels clean)" in html
    assert fmt_stat(both["accuracy"]) in html  # a cell as it is shown: mean ± CI half-width (n seeds)

    # forest plot of the RB effects: one row per label set, the comparison's difference and interval
    rb = forest_rows(summary, "reliability")
    assert [r["label"] for r in rb] == ["both vs none | labels clean", "both vs none | labels sym10"]
    assert rb[0]["diff"] == pytest.approx(100 * rb_clean["diff_mean"], rel=1e-12)
    assert rb[0]["ci"] == pytest.approx([100 * x for x in rb_clean["ci_verdict"]], rel=1e-12)  # the verdict's
    tested = rb_clean["p"] is not None  # one-epoch runs may not vary between seeds: no t-test, no Holm step
    assert rb_clean["ci_verdict_kind"] == ("Holm" if tested else "unadjusted")
    if tested:
        lo, hi = rb_clean["ci_verdict"]
        assert (rb_clean["verdict"] == "significant") == (not lo <= 0 <= hi)
    assert "paired t, Holm p " in rb[0]["note"] and rb_clean["verdict"] in rb[0]["note"]
    assert rb[1]["verdict"] == "not enough seeds" and "n=2" in rb[1]["note"]

    # accuracy against noise: one line per RB setting, the means and 95 % bands of the statistics
    (panel,) = sections["section-noise"]["data"]["panels"]
    lines = {ln["label"]: ln for ln in panel["lines"]}
    on = lines["reliability both"]
    assert on["x"] == [0.0, 10.0] and on["n"] == [3, 3]
    for i, name in enumerate(("clean-rb_both", "sym10-rb_both")):
        m = cells[name]["metrics"]["accuracy"]
        assert on["y"][i] == pytest.approx(100 * m["mean"], rel=1e-12)
        assert [on["lo"][i], on["hi"][i]] == pytest.approx([100 * m["ci"][0], 100 * m["ci"][1]], rel=1e-12)

    # RB's effect against noise: the paired differences and their 95 % intervals, beside Table 7's K=10 - K=0
    (panel,) = sections["section-effect"]["data"]["panels"]
    (line,) = panel["lines"]
    assert line["label"] == "reliability both - none" and line["x"] == [0.0, 10.0] and line["n"] == [3, 2]
    for i, labels in enumerate(("clean", "sym10")):
        (c,) = [
            c
            for c in summary["comparisons"]
            if c["metric"] == "accuracy" and c["axis"] == "reliability" and c["context"] == {"labels": labels}
        ]
        assert line["y"][i] == pytest.approx(100 * c["diff_mean"], rel=1e-12)
        assert [line["lo"][i], line["hi"][i]] == pytest.approx([100 * x for x in c["ci"]], rel=1e-12)
    paper = paper_effect_curve(10)
    assert paper["x"] == [0.0, 5.0, 10.0] and paper["y"] == pytest.approx([71.25 - 68.92, 70.73 - 68.41, 70.53 - 67.7])

    # one self-contained file: every figure embedded, nothing fetched
    figures = [f for s in data["sections"] for f in s["figures"]]
    assert {f["png"] for f in figures} == {
        "figures/section-comparisons/forest-reliability.png",
        "figures/section-comparisons/forest-labels.png",
        "figures/section-noise/accuracy-vs-noise.png",
        "figures/section-effect/effect-vs-noise.png",
    }
    for f in figures:
        png = (out / f["png"]).read_bytes()
        assert "data:image/png;base64," + base64.b64encode(png).decode() in html
    assert not re.search(r'src="(?!data:)', html)
    # one run per setting (its lowest finished seed) keeps the single-run sections
    assert [r["name"] for r in data["runs"]] == [
        "clean-rb_both-s0",
        "clean-rb_none-s0",
        "sym10-rb_both-s0",
        "sym10-rb_none-s0",
    ]


@pytest.mark.slow
def test_the_single_run_report_is_unchanged(study, tmp_path):
    pred = study / "runs" / "clean-rb_both-s0" / "predictions" / "best-test.parquet"
    res = CliRunner().invoke(app, ["report", "--ckpt", str(pred), "--out", str(tmp_path / "r"), "--tsne-points", "0"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["sections"] == [] and data["problems"] == [] and [r["name"] for r in data["runs"]] == ["best-test"]
    assert data["title"] == "GReFEL report: best-test" and "comparison" not in data
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Paired comparisons" not in html and "Paper Table 1 with this run" in html


def test_report_needs_a_checkpoint_or_a_study_not_both(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["report", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--ckpt" in res.output
    res = runner.invoke(app, ["report", "--ckpt", "a.pt", "--study", str(tmp_path)])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(app, ["report", "--study", str(tmp_path / "nosuch")])
    assert res.exit_code == 1 and "is not a study folder" in res.output and res.output.strip().count("\n") == 0
    assert not (tmp_path / "nosuch").exists()


# -- layouts on summaries built with the study's statistics (no training) ------------------------------
def _summary(axes: list[tuple[str, str | None, list[str], str]], cells: dict[tuple, tuple[dict, list[float]]]) -> dict:
    """A summary as grefel.study.stats.summarize_study makes it: ``axes`` (name, field, values, baseline);
    ``cells`` maps the axis values to (settings, per-seed accuracy)."""
    names = [a[0] for a in axes]
    settings = []
    for combo, (cfg, acc) in cells.items():
        metric = {**S.describe(acc), "seeds": list(range(len(acc))), "values": acc}
        settings.append(
            {
                "cell": dict(zip(names, combo)),
                "name": "-".join(combo),
                "settings": cfg,
                "label_set": {"name": "clean", "noise": 0.0, "mode": None},
                "planned_seeds": len(acc),
                "metrics": {"accuracy": metric, "accuracy_primary": metric, "macro_f1": metric},
            }
        )
    comparisons = []
    for i, (axis, _, _, base) in enumerate(axes):
        for combo, (_, acc) in cells.items():
            if combo[i] == base:
                continue
            ref = cells[(*combo[:i], base, *combo[i + 1 :])][1]
            ctx = {n: v for j, (n, v) in enumerate(zip(names, combo)) if j != i}
            comparisons.append(
                {
                    "metric": "accuracy",
                    "axis": axis,
                    "value": combo[i],
                    "baseline": base,
                    "context": ctx,
                    **S.paired(acc, ref),
                }
            )
    S.adjust_comparisons(comparisons)
    axes_json = [{"name": n, "field": f, "values": v, "parts": v, "baseline": b} for n, f, v, b in axes]
    return {"axes": axes_json, "settings": settings, "comparisons": comparisons}


def test_table6_anchors_beside_the_paper_with_the_paired_change():
    acc = {"1": [0.60, 0.62, 0.61], "4": [0.63, 0.66, 0.64], "10": [0.65, 0.64, 0.69]}
    summary = _summary(
        [("num_anchors", "num_anchors", list(acc), "1")], {(k,): ({"num_anchors": int(k)}, v) for k, v in acc.items()}
    )
    (t6,) = study_tables(summary)
    assert t6["layout"] == "Table 6" and t6["columns"] == ["K", "1", "4", "10"] and t6["context"] == {}
    assert [d["paper"] for d in t6["data"]] == [70.74, 71.11, 71.21]
    assert t6["rows"][0][1:] == [fmt_stat(S.describe(v)) for v in acc.values()]
    assert t6["rows"][3][1:] == ["+1.82", "+2.19", "+2.29"]  # the paper's change against K = 0 (68.92)
    c10 = S.paired(acc["10"], acc["1"])
    assert t6["data"][2]["paired"]["diff_mean"] == c10["diff_mean"] and t6["data"][0]["paired"] is None
    assert t6["rows"][2][3].startswith(f"{100 * c10['diff_mean']:+.1f} [")


def test_table8_rows_k_columns_smoothing_term_and_table3_loss_setups():
    cells = {
        (k, ls): (
            {"num_anchors": int(k), "label_smoothing": float(ls)},
            [0.5 + 0.01 * j + 0.1 * float(ls) for j in range(3)],
        )
        for k in ("1", "10")
        for ls in ("0.0", "0.11")
    }
    summary = _summary(
        [
            ("num_anchors", "num_anchors", ["1", "10"], "1"),
            ("label_smoothing", "label_smoothing", ["0.0", "0.11"], "0.0"),
        ],
        cells,
    )
    layouts = {t["layout"]: t for t in study_tables(summary)}
    assert set(layouts) == {"Table 6", "Table 8"}
    t8 = layouts["Table 8"]
    assert t8["columns"] == ["K", "0", "11"] and [r[0] for r in t8["rows"]] == [
        "K=1 (this study)",
        "K=1 (paper)",
        "K=10 (this study)",
        "K=10 (paper)",
    ]
    assert t8["rows"][3][1:] == ["71.25", "72.48"]  # the paper's K = 10 row: T = 0 and T = 11
    assert t8["rows"][2][2] == fmt_stat(S.describe(cells[("10", "0.11")][1]))

    loss = {"cls": {"lambda_anchor": 0.0, "lambda_center": 0.0}, "cls+anchor": {"lambda_center": 0.0}, "all": {}}
    summary = _summary(
        [("loss", None, list(loss), "cls")], {(k,): (v, [0.6, 0.61 + len(k) / 100, 0.63]) for k, v in loss.items()}
    )
    (t3,) = study_tables(summary)
    assert t3["layout"] == "Table 3" and [d["row"] for d in t3["data"]] == ["L_cls", "L_cls+L_a", "L_cls+L_a+L_c"]
    assert [d["paper_accuracy"] for d in t3["data"]] == [68.15, 68.87, 72.48]
    assert [dims({"settings": v})["loss"] for v in loss.values()] == ["L_cls", "L_cls+L_a", "L_cls+L_a+L_c"]


def test_no_table_without_a_grid_and_noise_curves_need_two_noise_levels():
    summary = _summary([], {(): ({}, [0.7, 0.72, 0.71])})
    assert study_tables(summary) == [] and noise_curves(summary) == []
