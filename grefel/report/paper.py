"""The paper's published numbers (shipped as ``grefel.report_assets/paper-results.csv``).

Table 1 compares accuracy across datasets; a report puts this run's accuracy beside it under the
column of the run's dataset. Table 7 (accuracy against label noise) gives the dashed reference
curves of a study's accuracy-against-noise figure. A study's report puts its means beside the
cells of Tables 2, 3 and 5-8 (:func:`paper_value`).
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from importlib.resources import files

# prepared-dataset name -> Table 1 column
DATASET_COLUMNS = {
    "rafdb": "RAF-DB",
    "affectnet": "AffectNet",
    "affectnet7": "AffectNet",
    "affectnet8": "AffectNet",
    "ferplus": "FER+",
    "ferg": "FERG",
    "jaffe": "JAFFE",
    "affwild2": "AffWild2",
}


@lru_cache(maxsize=1)
def paper_results() -> list[dict]:
    """Rows ``{"table", "row", "column", "value"}`` of paper-results.csv (value None when not reported)."""
    text = files("grefel.report_assets").joinpath("paper-results.csv").read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    out = []
    for r in csv.DictReader(io.StringIO("\n".join(lines))):
        v = r["value"].strip()
        out.append({"table": r["table"], "row": r["row"], "column": r["column"], "value": float(v) if v else None})
    return out


SYNTHETIC_COLUMN = "synthetic faces"  # for runs on `grefel synth` data, which no published number shares


def table1(synthetic: bool = False) -> tuple[list[str], list[dict]]:
    """Table 1 as (columns, rows); each row ``{"model", "values": {column: accuracy or None}}``.

    ``synthetic``: add the (empty) column of :data:`SYNTHETIC_COLUMN` after the paper's.
    """
    columns: list[str] = []
    rows: dict[str, dict] = {}
    for r in paper_results():
        if r["table"] != "T1":
            continue
        if r["column"] not in columns:
            columns.append(r["column"])
        rows.setdefault(r["row"], {})[r["column"]] = r["value"]
    if synthetic:
        columns.append(SYNTHETIC_COLUMN)
    return columns, [{"model": m, "values": {c: vals.get(c) for c in columns}} for m, vals in rows.items()]


def dataset_column(dataset_name: str | None, synthetic: bool = False) -> str | None:
    """Table 1 column of a prepared dataset, or None (unknown datasets).

    ``synthetic`` (faces drawn by ``grefel synth``, whatever the reader's name, e.g. ``ferg``):
    :data:`SYNTHETIC_COLUMN`, never a real dataset's column.
    """
    if synthetic:
        return SYNTHETIC_COLUMN
    if not dataset_name:
        return None
    return DATASET_COLUMNS.get(dataset_name.lower().replace("-", "").replace("_", ""))


def paper_value(table: str, row: str, column: str) -> float | None:
    """One published number: ``paper_value("T7", "K=10", "noise 20")`` is 60.33 (None: not in the paper)."""
    return _cells().get((table, row, column))


@lru_cache(maxsize=1)
def _cells() -> dict:
    return {(r["table"], r["row"], r["column"]): r["value"] for r in paper_results()}


REFERENCE_K = (0, 10)  # the paper's Table 7 rows drawn as reference curves (the smallest and largest K)


def reference_curves() -> dict:
    """Paper Table 7 (accuracy vs noise for K = 0 and 10), Aff-Wild2: ``{"noise": {K: [(noise %, acc)]}}``."""
    t7: dict[int, list] = {}
    for r in paper_results():
        if r["table"] == "T7" and r["value"] is not None and int(r["row"].split("=")[1]) in REFERENCE_K:
            t7.setdefault(int(r["row"].split("=")[1]), []).append((float(r["column"].split()[-1]), r["value"]))
    return {"noise": {k: sorted(v) for k, v in t7.items()}}


def table7_effect() -> dict[float, float]:
    """The paper's Table 7 effect of the anchors, Aff-Wild2: noise % -> accuracy at K = 10 minus K = 0."""
    ref = reference_curves()["noise"]
    k0, k10 = dict(ref[0]), dict(ref[10])
    return {x: round(k10[x] - k0[x], 2) for x in sorted(k0) if x in k10}
