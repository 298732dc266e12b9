"""The study files shipped in examples/: each parses with the study loader (no dataset on disk), and the
paper-table studies hold exactly the paper's grid, as grefel/report_assets/paper-results.csv records it."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from grefel.study.spec import load_study

REPO = Path(__file__).parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.toml"))
PAPER_CSV = REPO / "grefel" / "report_assets" / "paper-results.csv"


def paper_table(table: str) -> dict[tuple[str, str], float]:
    """``{(row, column): value}`` of one table of paper-results.csv (its first line is a comment)."""
    with PAPER_CSV.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {(r["row"], r["column"]): float(r["value"]) for r in rows if r["table"] == table and r["value"]}


def paper_axis(table: str, prefix: str) -> tuple[list[int], list[float]]:
    """The K values of a table's rows (``K=3``) and the numbers of its columns (``noise 20``)."""
    cells = paper_table(table)
    ks = sorted({int(row.removeprefix("K=")) for row, _ in cells})
    cols = sorted({float(col.removeprefix(prefix)) for _, col in cells})
    assert len(cells) == len(ks) * len(cols), f"{table} is not a full K x column grid"
    return ks, cols


def k_of(run) -> int:
    """The paper's K of a run: its num_anchors, or 0 without anchors (reliability mhsa)."""
    if run.settings.get("reliability") == "mhsa":
        assert "num_anchors" not in run.settings
        return 0
    assert run.settings.get("reliability", "both") == "both"
    return run.settings["num_anchors"]


def planned_runs(path: Path) -> int:
    """The run count the file's opening comment states first ("... = 330 runs", "45 runs")."""
    m = re.search(r"\b(\d+) runs\b", path.read_text(encoding="utf-8"))
    assert m, f"{path.name} does not state its run count"
    return int(m.group(1))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_parses_without_a_dataset(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing beside the working directory either
    study = load_study(path)
    assert study.runs and study.seeds
    assert set(study.primary) <= {a.name for a in study.axes}
    assert all(r.settings.get("preset", "full") == "full" for r in study.runs)  # the paper's models
    assert not any(r.settings.get("from_scratch") for r in study.runs)  # from the registered weights
    assert len(study.runs) == planned_runs(path)


def test_table7_is_the_papers_k_by_noise_grid():
    path = REPO / "examples" / "table7.toml"
    study = load_study(path)
    ks, noise = paper_axis("T7", "noise ")
    assert ks == list(range(11)) and noise == [0, 5, 10, 15, 20, 25, 30, 35, 40, 50]

    assert [a.name for a in study.axes] == ["K", "labels"]
    assert study.dataset == "affwild2"  # the paper's Table 7 is on Aff-Wild2
    assert study.primary == ["K"] and study.baselines == {"K": "K0", "labels": "clean"}
    assert study.noise_per_seed and study.seeds == [0, 1, 2]
    assert len(study.runs) == len(ks) * len(noise) * 3 == 330

    cells = set()
    for run in study.runs:
        labels = run.settings.get("labels", "clean")
        if labels == "clean":
            pct = 0.0
        else:  # each seed draws its own symmetric noise: sym20-s<seed>, made with that seed
            spec = study.label_sets[labels]
            assert labels.endswith(f"-s{run.seed}") and spec.seed == run.seed and spec.mode == "symmetric"
            pct = round(100 * spec.noise, 6)
        cells.add((k_of(run), pct))
        assert run.settings["label_smoothing"] == 0.0
    assert cells == {(k, n) for k in ks for n in noise}


def test_table7_trains_without_label_smoothing_because_the_paper_did():
    """Table 7's clean column is Table 8's T = 0 column, row for row: the reason for label_smoothing = 0."""
    t7, t8 = paper_table("T7"), paper_table("T8")
    for k in range(11):
        assert t7[(f"K={k}", "noise 0")] == t8[(f"K={k}", "smoothing 0")]
    assert t8[("K=10", "smoothing 11")] != t7[("K=10", "noise 0")]


def test_table8_is_the_papers_k_by_smoothing_grid():
    path = REPO / "examples" / "table8.toml"
    study = load_study(path)
    ks, terms = paper_axis("T8", "smoothing ")
    assert ks == list(range(11)) and terms == [0, 5, 10, 11, 15, 18, 20, 25, 30, 35, 40, 50]

    assert [a.name for a in study.axes] == ["K", "label_smoothing"]
    assert study.dataset == "affwild2"  # the paper's Table 8 is on Aff-Wild2
    assert study.primary == ["K"] and study.baselines == {"K": "K0", "label_smoothing": "0.11"}
    assert not study.noise_per_seed and study.label_sets == {} and study.seeds == [0, 1, 2]
    assert len(study.runs) == len(ks) * len(terms) * 3 == 396

    cells = {(k_of(r), round(100 * r.settings["label_smoothing"], 6)) for r in study.runs}
    assert cells == {(k, t) for k in ks for t in terms}
    assert all(r.settings.get("labels", "clean") == "clean" for r in study.runs)


def test_the_paper_tables_read_reliability_mhsa_as_k_zero():
    """Tables 6-8's K = 0 is the MHSA without anchors, which `grefel train` spells `--reliability mhsa`."""
    from grefel.study.tables import dims

    assert dims({"settings": {"reliability": "mhsa"}})["K"] == 0
    assert dims({"settings": {"reliability": "both", "num_anchors": 4}})["K"] == 4
    assert dims({"settings": {"reliability": "none"}})["K"] is None  # no RB at all: Table 2's "Without RB" row
