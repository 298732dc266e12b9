"""`grefel report`: figures with the right panels, numbers equal to scikit-learn's, Table 1, comparisons."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm
from test_report_data import CLASSES, fake_predictions
from typer.testing import CliRunner

from grefel.evaluation.metrics import expected_calibration_error, group_accuracy
from grefel.evaluation.predictions import read_predictions
from grefel.report import figures as F
from grefel.report.build import build_report
from grefel.report.compare import compare_runs, run_settings


def _check_written(saved: dict, panels: int) -> None:
    assert saved["panels"] == panels
    png, svg = saved["png"], saved["svg"]
    with Image.open(png) as im:
        assert im.width > 100 and im.height > 100
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and len(text) > 1000
    assert saved["data_uri"].startswith("data:image/png;base64,")


def test_figures_written_with_their_panels(tmp_path):
    rng = np.random.default_rng(0)
    c = len(CLASSES)
    cm = rng.integers(0, 20, (c, c))
    _check_written(F.save_figure(F.confusion_figure(cm, cm.T, CLASSES), tmp_path / "confusion"), 4)
    p = rng.dirichlet(np.ones(c), 5)
    q = rng.dirichlet(np.ones(c), 5)
    y = np.array([0, 1, 2, 3, 4])
    _check_written(
        F.save_figure(F.distributions_figure(p, q, y, CLASSES, [f"s{i}" for i in range(5)]), tmp_path / "d"), 5
    )
    faces = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    _check_written(
        F.save_figure(F.distributions_figure(p, q, y, CLASSES, ["s"] * 5, faces), tmp_path / "df"), 10
    )  # face + bars each
    xy = rng.normal(size=(60, 2))
    _check_written(
        F.save_figure(
            F.tsne_figure(xy, rng.integers(0, c, 60), CLASSES, {"davies_bouldin": 1.5, "calinski_harabasz": 20.0}),
            tmp_path / "t",
        ),
        1,
    )
    _check_written(
        F.save_figure(F.wrong_shares_figure(np.ones(c) / c, np.ones(c) / c, CLASSES, (10, 8)), tmp_path / "w"), 2
    )
    cal = expected_calibration_error(p, y)
    _check_written(F.save_figure(F.reliability_figure(cal, cal), tmp_path / "cal"), 2)
    ga = group_accuracy(y, y, np.array([0, 1, 0, 1, 2]), {0: "male", 1: "female"})
    _check_written(
        F.save_figure(
            F.group_accuracy_figure(
                {"gender": {"primary": ga, "corrected": ga}, "race": {"primary": ga, "corrected": ga}}
            ),
            tmp_path / "g",
        ),
        2,
    )
    curves = [
        {"title": "a", "x_label": "K", "lines": [{"label": "x", "x": [0, 1], "y": [60, 70]}]},
        {"title": "b", "x_label": "noise", "lines": [{"label": "ref", "x": [0, 10], "y": [70, 60], "reference": True}]},
    ]
    _check_written(F.save_figure(F.comparison_figure(curves), tmp_path / "cmp"), 2)


def test_class_colours_are_stable():
    a, b = F.class_palette(CLASSES), F.class_palette(CLASSES)
    assert a == b and len(set(a)) == len(CLASSES)
    assert len(set(F.class_palette([str(i) for i in range(12)]))) == 12


def test_report_numbers_equal_sklearn(tmp_path):
    src = fake_predictions(tmp_path / "run.parquet", n=300, seed=2)
    html = build_report([src], out=tmp_path / "rep", tsne_points=120)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    pred = read_predictions(src)
    y = pred.table["label"].to_numpy()
    run = rep["runs"][0]
    for kind in ("primary", "corrected"):
        p = pred.table[f"pred_{kind}"].to_numpy()
        m = run["metrics"][kind]
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
        assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro"))
        assert m["confusion"] == skm.confusion_matrix(y, p, labels=range(7)).tolist()
    pp, pc = pred.table["pred_primary"].to_numpy(), pred.table["pred_corrected"].to_numpy()
    assert run["correction"]["fixed"] == int(((pp != y) & (pc == y)).sum()) > 0
    assert run["correction"]["broke"] == int(((pp == y) & (pc != y)).sum())
    emb = pred.arrays["embedding"]
    assert run["clusters"]["n_points"] == 120
    sub_scores = run["clusters"]["embedding"]
    assert sub_scores["davies_bouldin"] > 0 and sub_scores["calinski_harabasz"] > 0
    assert skm.davies_bouldin_score(emb, y) == pytest.approx(
        sub_scores["davies_bouldin"], rel=0.5
    )  # same structure on a sample
    # groups: gender with names from the file, -1 (unknown) left out; race keeps its codes
    g = run["groups"]["gender"]["corrected"]
    assert [x["name"] for x in g["groups"]] == ["male", "female", "unsure"]
    gender = pred.table["gender"].to_numpy()
    assert sum(x["n"] for x in g["groups"]) == int((gender >= 0).sum())
    assert [x["name"] for x in run["groups"]["race"]["corrected"]["groups"]] == ["0", "1", "2"]
    assert g["gap"]["value"] == pytest.approx(
        max(x["accuracy"] for x in g["groups"]) - min(x["accuracy"] for x in g["groups"])
    )
    # noisy labels evaluated alongside
    yn = pred.table["label_noisy"].to_numpy()
    assert run["noisy"]["n_flipped"] == int((yn != y).sum())
    # figures on disk, relative paths in the JSON; Table 1 row under RAF-DB
    names = set(run["figures"])
    assert {
        "confusion",
        "distributions-chosen",
        "distributions-most-changed",
        "tsne",
        "wrong-shares",
        "calibration",
        "groups",
    } <= names
    for f in run["figures"].values():
        assert (tmp_path / "rep" / f["png"]).stat().st_size > 1000 and (
            tmp_path / "rep" / f["svg"]
        ).stat().st_size > 1000
    this = rep["paper"]["this_runs"][0]
    assert this["column"] == "RAF-DB" and this["values"]["RAF-DB"] == pytest.approx(
        100 * run["metrics"]["corrected"]["accuracy"]
    )
    assert rep["paper"]["unmatched"] == []
    text = html.read_text()
    assert "this run: run" in text and "GReFEL (paper)" in text and text.count("<img ") == len(names)


def test_chosen_samples_and_unknown_dataset(tmp_path):
    src = fake_predictions(tmp_path / "syn.parquet", n=120, seed=3, dataset="synthetic", attributes=False)
    build_report([src], out=tmp_path / "rep", samples=[1, 4, 999999], n_changed=3, tsne_points=0)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    run = rep["runs"][0]
    assert run["samples"]["chosen"] == [1, 4] and run["samples"]["missing"] == [999999]
    assert len(run["samples"]["most_changed"]) == 3 and run["figures"]["distributions-most-changed"]["panels"] == 3
    assert "tsne" not in run["figures"] and "groups" not in run["figures"] and run["groups"] == {}
    assert rep["paper"]["unmatched"] == ["synthetic"] and rep["paper"]["this_runs"][0]["column"] is None
    assert "No Table 1 column matches dataset synthetic" in (tmp_path / "rep" / "report.html").read_text()


def _run(name, k, noise=None, ls=None, acc=0.7):
    return {
        "name": name,
        "settings": {"num_anchors": k, "noise": noise, "label_smoothing": ls, "reliability": "both"},
        "accuracy_primary": acc - 0.02,
        "accuracy_corrected": acc,
        "macro_f1": 0.6,
        "n": 100,
    }


def test_comparison_layouts():
    t6 = compare_runs([_run("a", 0, acc=0.68), _run("b", 10, acc=0.71), _run("c", 4, acc=0.70)])
    assert t6["varying"] == ["num_anchors"]
    table = t6["tables"][0]
    assert table["title"].startswith("Table 6") and table["columns"] == ["0", "4", "10"]
    np.testing.assert_allclose(table["rows"][0]["values"], [68, 70, 71])
    np.testing.assert_allclose(table["rows"][1]["values"], [0, 2, 3])  # change against K=0, as the paper prints it
    assert any(ln.get("reference") for ln in t6["curves"][0]["lines"])  # the paper's Table 6 dashed

    runs = [_run(f"k{k}n{n}", k, noise=n, acc=0.7 - n / 200 + k / 1000) for k in (0, 10) for n in (0, 10, 20)]
    runs.append(_run("k10n20-seed1", 10, noise=20, acc=0.6))  # same cell: averaged
    t7 = compare_runs(runs)
    assert set(t7["varying"]) == {"num_anchors", "noise"}
    table = t7["tables"][0]
    assert table["title"].startswith("Table 7") and table["columns"] == ["0", "10", "20"]
    assert [r["label"] for r in table["rows"]] == ["0", "10"]
    assert table["rows"][1]["values"][2] == pytest.approx(100 * (0.7 - 0.1 + 0.01 + 0.6) / 2)
    curve = t7["curves"][0]
    assert [ln["label"] for ln in curve["lines"] if not ln.get("reference")] == ["K=0", "K=10"]
    assert len(t7["summary"]) == 7

    t8 = compare_runs([_run("a", 0, ls=0.0), _run("b", 0, ls=0.1), _run("c", 10, ls=0.1)])
    assert t8["tables"][0]["title"].startswith("Table 8") and t8["tables"][0]["rows"][0]["values"][0] == pytest.approx(
        70
    )


def test_run_settings_from_recorded_config():
    meta = {
        "model": {"num_anchors": 0, "reliability": "mhsa"},
        "model_config": {"preset": "full"},
        "config": {"num_anchors": 10, "label_smoothing": 0.11, "reliability": "mhsa"},
        "label_set_info": {"noise": 0.2},
    }
    assert run_settings(meta) == {"num_anchors": 0, "noise": 20.0, "label_smoothing": 0.11, "reliability": "mhsa"}
    assert run_settings({"config": {"num_anchors": 4}})["num_anchors"] == 4


def test_report_from_checkpoints(tmp_path):
    """The checkpoint alone: evaluation runs first, then the report; a bad checkpoint is one line, not a crash."""
    from test_evaluate import error_line, make_checkpoint

    from grefel_cli.main import app

    k2 = make_checkpoint(tmp_path, num_anchors=2, name="k2")
    k3 = make_checkpoint(tmp_path, num_anchors=3, name="k3")
    (tmp_path / "broken.pt").write_bytes(k2.read_bytes()[:500])
    r = CliRunner().invoke(
        app,
        [
            "report",
            "--ckpt",
            str(k2),
            "--ckpt",
            str(k3),
            "--ckpt",
            str(tmp_path / "broken.pt"),
            "--tsne-points",
            "0",
            "--out",
            str(tmp_path / "rep"),
        ],
    )
    assert r.exit_code == 0, r.output + str(r.exception)
    assert (k2.parent / "predictions" / "best-test-noisy.parquet").is_file()
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [x["name"] for x in rep["runs"]] == ["k2/best", "k3/best"]
    assert len(rep["problems"]) == 1 and "truncated" in rep["problems"][0]
    assert rep["comparison"]["varying"] == ["num_anchors"] and rep["comparison"]["tables"][0]["columns"] == ["2", "3"]
    assert rep["runs"][0]["settings"]["noise"] == pytest.approx(20.0)  # from the label set the run trained on
    assert "gender" in rep["runs"][0]["groups"]
    r = CliRunner().invoke(app, ["report", "--ckpt", str(tmp_path / "broken.pt")])
    assert r.exit_code == 1 and "no report written" in error_line(r)


def test_synthetic_runs_get_their_own_table1_column(tmp_path):
    """The demo's faces go through `prepare ferg`, yet their accuracy must never sit under FERG-DB's column."""
    syn = fake_predictions(tmp_path / "syn.parquet", n=120, seed=4, dataset="ferg", synthetic=True, attributes=False)
    real = fake_predictions(tmp_path / "real.parquet", n=120, seed=5, dataset="ferg", attributes=False)
    build_report([syn, real], out=tmp_path / "rep", tsne_points=0)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    a, b = rep["paper"]["this_runs"]
    assert a["column"] == "synthetic faces" and a["values"]["FERG"] is None
    assert a["values"]["synthetic faces"] == pytest.approx(100 * rep["runs"][0]["metrics"]["corrected"]["accuracy"])
    assert b["column"] == "FERG" and b["values"]["synthetic faces"] is None  # real FERG-DB stays where it belongs
    assert rep["paper"]["columns"][-1] == "synthetic faces" and all(
        r["values"]["synthetic faces"] is None for r in rep["paper"]["rows"]
    )
    assert rep["paper"]["synthetic"] == ["ferg"] and rep["paper"]["unmatched"] == []
    assert "drawn by <code>grefel synth</code>" in (tmp_path / "rep" / "report.html").read_text()


FORBIDDEN = (
    "grefel.evaluation.evaluate",
    "grefel.training.checkpoint",
    "grefel.training.loop",
    "grefel.models",
    "grefel.report.pipeline",
    "torch",
)


def _imported_names(path) -> list[str]:
    """Every module an ``import`` statement in ``path`` names (top-level and inside functions)."""
    import ast

    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x / from ..x inside grefel/report
                base = ".".join(["grefel", "report"][: 3 - node.level] + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def test_report_reads_predictions_only():
    """grefel.report never evaluates, loads a checkpoint, trains or builds a model: no import of those, anywhere."""
    import subprocess
    import sys
    from pathlib import Path

    import grefel.report

    def bad(name: str) -> bool:
        return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)

    folder = Path(grefel.report.__file__).parent
    pages = [p for p in sorted(folder.glob("*.py")) if p.name != "pipeline.py"]  # the one module that evaluates first
    found = [f"{p.name}: {n}" for p in pages for n in _imported_names(p) if bad(n)]
    assert found == []
    code = (
        "import importlib, pkgutil, sys, grefel.report as R\n"
        "for m in pkgutil.iter_modules(R.__path__):\n"
        "    if m.name != 'pipeline': importlib.import_module('grefel.report.' + m.name)\n"
        "print('\\n'.join(sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "grefel.report.build" in loaded and [m for m in loaded if bad(m)] == []


def test_sections_added_to_the_page(tmp_path):
    """A caller (a study) adds tables, a figure, trusted HTML and numbers to the same single page."""
    from matplotlib.figure import Figure

    from grefel.report.page import Section, SectionFigure, Table

    src = fake_predictions(tmp_path / "run.parquet", n=80, seed=6, attributes=False)
    fig = Figure(figsize=(3, 2))
    fig.subplots().errorbar([0.5, 1.2], [0, 1], xerr=[0.3, 0.4], fmt="o")
    section = Section(
        "Study: reliability balancing",
        text="5 seeds <b>escaped</b>",
        tables=[
            Table(
                ["setting", "n", "accuracy"], [["rb on", 5, "71.2 ± 0.8"], ["rb off", 5, 69.94]], title="Mean", digits=1
            )
        ],
        figures=[SectionFigure("forest", fig, caption="Paired differences")],
        html="<p class='trusted'>as given</p>",
        data={"seeds": 5},
    )
    html = build_report([src], out=tmp_path / "rep", tsne_points=0, sections=[section], title="GReFEL study: rb")
    text = html.read_text()
    assert "<title>GReFEL study: rb</title>" in text
    assert text.index('id="section-Study-reliability-balancing"') < text.index('id="table1"')
    assert 'href="#section-Study-reliability-balancing"' in text
    assert "5 seeds &lt;b&gt;escaped&lt;/b&gt;" in text and "<p class='trusted'>as given</p>" in text
    assert "<td>71.2 ± 0.8</td>" in text and "<td>69.9</td>" in text and "<td>5</td>" in text
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    (sec,) = rep["sections"]
    assert sec["data"] == {"seeds": 5} and sec["tables"][0]["rows"][1] == ["rb off", 5, 69.94] and "html" not in sec
    (f,) = sec["figures"]
    assert f["png"] == "figures/section-Study-reliability-balancing/forest.png" and "data_uri" not in f
    assert (tmp_path / "rep" / f["png"]).stat().st_size > 1000 and (tmp_path / "rep" / f["svg"]).is_file()
    assert text.count("<img ") == len(rep["runs"][0]["figures"]) + 1

    only = build_report([], out=tmp_path / "only", sections=[Section("Summary", text="no runs")], title="t")
    assert "no runs" in only.read_text() and json.loads((tmp_path / "only" / "report.json").read_text())["runs"] == []


def test_build_report_takes_predictions_not_checkpoints(tmp_path):
    from test_evaluate import make_checkpoint

    from grefel.core.errors import GrefelError

    ckpt = make_checkpoint(tmp_path)
    with pytest.raises(GrefelError, match="not a predictions file"):
        build_report([ckpt], out=tmp_path / "rep")
    with pytest.raises(GrefelError, match="not found"):
        build_report([tmp_path / "gone.parquet"], out=tmp_path / "rep")
    with pytest.raises(GrefelError, match="no report written"):
        build_report([], out=tmp_path / "rep", problems=["a.pt: truncated"])
    for bad in ({"tsne_points": -1}, {"n_changed": -2}):
        with pytest.raises(GrefelError, match=f"{next(iter(bad))} must be a whole number of at least 0"):
            build_report([tmp_path / "x.parquet"], out=tmp_path / "rep", **bad)
    assert not (tmp_path / "rep").exists() and not (ckpt.parent / "predictions").exists()
