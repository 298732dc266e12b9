"""`grefel report`: one self-contained HTML page (plus PNG/SVG figures and a JSON of every number).

The report reads predictions files (:mod:`grefel.evaluation.predictions`, written by `grefel
evaluate`) and nothing else: it never loads a checkpoint or runs a model. Turning checkpoints into
predictions first is :func:`grefel.study.pipeline.evaluate_and_report`'s job. Reads top to bottom:

1. each run is a predictions table and the name it is shown under (:class:`ReportRun`);
2. :func:`analyze` computes the numbers of one run (scikit-learn metrics, calibration, t-SNE ...);
3. :func:`draw_run_figures` turns them into figures (PNG and SVG on disk, PNG embedded in the page);
4. every run is placed beside the paper's Table 1 (a comparison of several runs is a section the
   caller adds: `grefel report` adds an ad-hoc study's, :func:`grefel.study.pipeline.comparison_sections`);
5. sections the caller adds (:class:`~grefel.report.page.Section`: tables, figures, numbers) and
   the runs are rendered by the Jinja2 template ``report.html.j2`` (package
   ``grefel.report_assets``) into one page (:mod:`grefel.report.page`).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grefel.core.devices import usable_cores
from grefel.core.errors import GrefelError
from grefel.core.io import writable_dir, writable_file
from grefel.core.settings import check_seed
from grefel.core.version import __version__
from grefel.data.shards import PreparedDataset
from grefel.evaluation import metrics as M
from grefel.evaluation.predictions import Predictions, read_predictions, training_settings
from grefel.report import figures as F
from grefel.report.page import Section, section_contexts, unique_slugs, write_page
from grefel.report.paper import dataset_column, table1

GAP_MIN_COUNT = 10  # a group needs this many samples to decide the largest accuracy gap


# -- 1. runs ------------------------------------------------------------------------------------------
@dataclass
class ReportRun:
    """One run on the page: its predictions and the name it is shown under.

    ``source``: what the user named for it (a checkpoint or a predictions file), shown on the page;
    default: the predictions file.
    """

    predictions: Predictions
    name: str
    source: str = ""


def as_report_run(run: ReportRun | Predictions | str | os.PathLike) -> ReportRun:
    """A :class:`ReportRun` from itself, from loaded predictions or from a predictions file (named by its stem)."""
    if isinstance(run, ReportRun):
        return run
    if isinstance(run, Predictions):
        return ReportRun(run, Path(run.path).stem if run.path else "run", str(run.path or ""))
    path = Path(run)
    if path.suffix != ".parquet":
        raise GrefelError(
            f"{path} is not a predictions file (.parquet): the report reads predictions; evaluate the checkpoint "
            "first (grefel.evaluation.evaluate.evaluate) or report it with grefel.study.pipeline.evaluate_and_report"
        )
    if not path.is_file():
        raise GrefelError(f"predictions file {path} not found: write it with `grefel evaluate`")
    return ReportRun(read_predictions(path), path.stem, str(path))


def check_report_options(
    *, samples: Sequence[int] = (), n_changed: int = 6, tsne_points: int = 2000, seed: int = 0, **_
) -> None:
    """One-line errors for analysis settings out of range (before any work is done)."""
    check_seed(seed)
    for name, v in (("n_changed", n_changed), ("tsne_points", tsne_points)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise GrefelError(f"{name} must be a whole number of at least 0 (got {v!r})")
    bad = [s for s in samples if isinstance(s, bool) or not isinstance(s, (int, np.integer))]
    if bad:
        raise GrefelError(f"samples must be global sample indices (whole numbers), got {bad[0]!r}")


# -- 2. numbers ---------------------------------------------------------------------------------------
@dataclass
class _Labelled:
    """The labelled samples of one run (label in 0..C-1), the arrays every number is computed from."""

    y: np.ndarray  # clean labels
    primary: np.ndarray  # (N, C) eq. 9
    corrected: np.ndarray  # (N, C) eq. 19
    pp: np.ndarray  # argmax of primary
    pc: np.ndarray  # argmax of corrected
    index: np.ndarray  # global sample indices
    ok: np.ndarray  # mask of these rows in the file


def _labelled(pred: Predictions) -> _Labelled:
    t = pred.table
    y_all = t["label"].to_numpy().astype(np.int64)
    ok = (y_all >= 0) & (y_all < len(pred.classes))
    return _Labelled(
        y=y_all[ok],
        primary=pred.arrays["primary"][ok],
        corrected=pred.arrays["corrected"][ok],
        pp=t["pred_primary"].to_numpy()[ok],
        pc=t["pred_corrected"].to_numpy()[ok],
        index=t["index"].to_numpy()[ok],
        ok=ok,
    )


def analyze(
    pred: Predictions, *, samples: Sequence[int] = (), n_changed: int = 6, tsne_points: int = 2000, seed: int = 0
) -> dict:
    """Every number of one run's section; also the data the figures need (under ``"_plot"``)."""
    v = _labelled(pred)
    res = {"n": int(v.ok.sum()), "n_unlabelled": int((~v.ok).sum()), **_scores(v, len(pred.classes))}
    if "label_noisy" in pred.table:
        res["noisy"] = _noisy_labels(v, pred.table["label_noisy"].to_numpy()[v.ok])
    res["groups"] = _groups(pred, v)
    chosen, changed, res["samples"] = _fig9_samples(v, len(pred.classes), samples, n_changed, seed)
    plot = {"y": v.y, "primary": v.primary, "corrected": v.corrected, "index": v.index}
    plot.update(chosen=chosen, changed=changed)
    if tsne_points and len(v.y) >= 5 and "embedding" in pred.arrays:
        res["clusters"], xy, y_sub = _clusters(pred.arrays["embedding"][v.ok], v.y, tsne_points, seed)
        plot.update(tsne_xy=xy, tsne_y=y_sub)
    res["_plot"] = plot
    return res


def _scores(v: _Labelled, c: int) -> dict:
    """Scores without (primary) and with (corrected) reliability balancing, and what RB changed."""
    both = (("primary", v.pp, v.primary), ("corrected", v.pc, v.corrected))
    return {
        "metrics": {k: M.classification_metrics(v.y, p, c) for k, p, _ in both},
        "correction": M.correction_effect(v.y, v.pp, v.pc),
        "calibration": {k: M.expected_calibration_error(d, v.y) for k, _, d in both},
        "wrong_shares": {k: M.wrong_prediction_shares(v.y, p, c) for k, p, _ in both},
        "distribution_stats": {k: M.distribution_stats(d) for k, _, d in both},
    }


def _noisy_labels(v: _Labelled, yn: np.ndarray) -> dict:
    """Reliability balancing on label noise: flipped labels, and whether predictions recover the clean one."""
    flipped = yn != v.y
    pairs = (("primary", v.pp), ("corrected", v.pc))
    return {
        "n_flipped": int(flipped.sum()),
        "accuracy_vs_noisy": {k: float((p == yn).mean()) if len(v.y) else None for k, p in pairs},
        "recovered_clean_on_flipped": {
            k: float((p[flipped] == v.y[flipped]).mean()) if flipped.any() else None for k, p in pairs
        },
    }


def _groups(pred: Predictions, v: _Labelled) -> dict:
    """Per-group accuracy (RAF-DB gender / race / age) of every attribute with known values."""
    groups = {}
    for a in pred.attributes:
        if a not in pred.table:
            continue
        codes = pred.table[a].to_numpy()[v.ok]
        if not (codes >= 0).any():
            continue
        names = {int(k): n for k, n in (pred.meta.get("attribute_codes", {}).get(a) or {}).items()}
        groups[a] = {
            kind: M.group_accuracy(v.y, p, codes, names, GAP_MIN_COUNT)
            for kind, p in (("primary", v.pp), ("corrected", v.pc))
        }
    return groups


def _fig9_samples(v: _Labelled, c: int, samples: Sequence[int], n_changed: int, seed: int):
    """Fig. 9 rows: chosen ones (given, else one per class preferring ones RB fixed) and the most changed.

    Returns (chosen rows, changed rows, the JSON summary with global indices).
    """
    tv = M.total_variation(v.primary, v.corrected)
    pos = {int(g): i for i, g in enumerate(v.index)}
    chosen = [pos[int(s)] for s in samples if int(s) in pos]
    if not samples:
        rng = np.random.default_rng(seed)
        fixed = (v.pp != v.y) & (v.pc == v.y)
        for k in range(c):
            cand = np.flatnonzero((v.y == k) & fixed)
            cand = cand if len(cand) else np.flatnonzero(v.y == k)
            if len(cand):
                chosen.append(int(rng.choice(cand)))
    changed = [int(i) for i in np.argsort(-tv, kind="stable")[:n_changed]]
    summary = {
        "chosen": [int(v.index[i]) for i in chosen],
        "most_changed": [int(v.index[i]) for i in changed],
        "missing": [int(s) for s in samples if int(s) not in pos],
        "mean_change": float(tv.mean()) if len(tv) else None,
    }
    return chosen, changed, summary


def _clusters(emb: np.ndarray, y: np.ndarray, tsne_points: int, seed: int):
    """Fig. 5: t-SNE of at most ``tsne_points`` (stratified) embeddings, with cluster scores."""
    sub = M.subsample(len(y), tsne_points, y, seed)
    xy = M.tsne_2d(emb[sub], seed=seed)
    scores = {
        "n_points": int(len(sub)),
        "embedding": M.cluster_scores(emb[sub], y[sub]),
        "tsne": M.cluster_scores(xy, y[sub]),
    }
    return scores, xy, y[sub]


# -- 3. figures ---------------------------------------------------------------------------------------
def _titles(classes, plot, rows) -> list[str]:
    out = []
    for i in rows:
        t, p, c = int(plot["y"][i]), int(plot["primary"][i].argmax()), int(plot["corrected"][i].argmax())
        out.append(
            f"#{int(plot['index'][i])}  true {classes[t]}  |  "
            f"PD {classes[p]} {plot['primary'][i][p]:.2f} -> CD {classes[c]} {plot['corrected'][i][c]:.2f}"
        )
    return out


def _faces(meta: dict, indices: Sequence[int]):
    """The stored faces of ``indices`` when the dataset is still on disk (else None: bars only)."""
    path = (meta.get("dataset") or {}).get("path")
    if not indices or not path or not (Path(path) / "manifest.json").is_file():
        return None
    try:
        ds = PreparedDataset(path)
        if (meta.get("dataset") or {}).get("manifest_sha256") not in (None, ds.manifest_sha256):
            return None  # re-prepared since: indices may point at other faces
        try:
            return ds.read_images(np.asarray(indices))
        finally:
            ds.close()
    except (GrefelError, OSError, KeyError, IndexError):
        return None


def draw_run_figures(pred: Predictions, res: dict, fig_dir: Path, with_faces: bool = True) -> dict:
    """Write the run's figures under ``fig_dir``; return ``{name: {png, svg, data_uri, panels}}``."""
    classes, plot = pred.classes, res["_plot"]
    figs = {}

    def keep(name: str, fig):
        figs[name] = F.save_figure(fig, fig_dir / name)

    m = res["metrics"]
    keep(
        "confusion",
        F.confusion_figure(np.array(m["primary"]["confusion"]), np.array(m["corrected"]["confusion"]), classes),
    )
    for name, rows in (("distributions-chosen", plot["chosen"]), ("distributions-most-changed", plot["changed"])):
        if rows:
            faces = _faces(pred.meta, [int(plot["index"][i]) for i in rows]) if with_faces else None
            keep(
                name,
                F.distributions_figure(
                    plot["primary"][rows],
                    plot["corrected"][rows],
                    plot["y"][rows],
                    classes,
                    _titles(classes, plot, rows),
                    faces,
                ),
            )
    if "tsne_xy" in plot:
        keep("tsne", F.tsne_figure(plot["tsne_xy"], plot["tsne_y"], classes, res["clusters"]["embedding"]))
    ws = res["wrong_shares"]
    keep(
        "wrong-shares",
        F.wrong_shares_figure(
            ws["primary"]["by_true_class"],
            ws["corrected"]["by_true_class"],
            classes,
            (ws["primary"]["n_wrong"], ws["corrected"]["n_wrong"]),
        ),
    )
    keep("calibration", F.reliability_figure(res["calibration"]["primary"], res["calibration"]["corrected"]))
    if res["groups"]:
        keep("groups", F.group_accuracy_figure(res["groups"]))
    return figs


# -- 4 + 5. the page ----------------------------------------------------------------------------------
def build_report(
    runs: Sequence[ReportRun | Predictions | str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    sections: Sequence[Section] = (),
    problems: Sequence[str] = (),
    title: str | None = None,
    samples: Sequence[int] = (),
    n_changed: int = 6,
    tsne_points: int = 2000,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Build ``<out>/report.html`` (+ ``figures/``, ``report.json``) from predictions; return the HTML path.

    ``runs``: predictions files, loaded :class:`~grefel.evaluation.predictions.Predictions` or
    :class:`ReportRun` (to name them). ``out`` defaults to ``<folder of the first predictions
    file>/report``. ``sections`` come first on the page (:mod:`grefel.report.page`);
    ``problems``: one line per run the caller could not produce, listed at the top.
    """
    check_report_options(samples=samples, n_changed=n_changed, tsne_points=tsne_points, seed=seed)
    runs = [as_report_run(r) for r in runs]
    if not runs and not sections:
        why = f"every run failed ({'; '.join(problems)[:400]})" if problems else "no predictions given"
        raise GrefelError(f"no report written: {why}")
    out = check_report_folder(_report_folder(runs, out), [r.predictions.path for r in runs])
    log = log or (lambda s: None)
    fig_root = out / "figures"
    options = {"samples": samples, "n_changed": n_changed, "tsne_points": tsne_points, "seed": seed}
    slugs = unique_slugs([r.name for r in runs])
    contexts = _run_contexts(runs, slugs, fig_root, options, log)

    context = {
        "title": title or "GReFEL report: " + ", ".join(r["name"] for r in contexts),
        "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "version": __version__,
        "problems": list(problems),
        "sections": section_contexts(sections, fig_root),
        "paper": _paper_table(contexts),
        "runs": contexts,
        "gap_min_count": GAP_MIN_COUNT,
    }
    return write_page(out, context)


def check_report_folder(out: str | os.PathLike, inputs) -> Path:
    """The report folder, created and checked before any work: writable, and neither report.html nor
    report.json there is one of ``inputs`` (a checkpoint, a predictions file) or a file grefel keeps."""
    out = writable_dir(out, "report folder")
    for name in ("report.html", "report.json"):
        writable_file(out / name, "report file", inputs=inputs)
    return out


def _report_folder(runs: list[ReportRun], out) -> Path:
    if out is not None:
        return Path(out)
    first = runs[0].predictions.path if runs else None
    if first is None:
        raise GrefelError("no report folder given and no predictions file to put it beside: give the output folder")
    return Path(first).parent / "report"


def _run_contexts(runs: list[ReportRun], slugs: list[str], fig_root: Path, options: dict, log) -> list[dict]:
    """Every run's section; with several runs and cores, one worker process per core (each run's
    t-SNE and figures are single-threaded, so runs side by side take about 1 / cores the time)."""

    workers = min(len(runs), usable_cores())
    if workers < 2:
        return [_run_context(r, s, fig_root, options, log) for r, s in zip(runs, slugs)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    log(f"analysing and drawing {len(runs)} runs, {workers} at a time")
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_context, r, s, fig_root, options, _quiet) for r, s in zip(runs, slugs)]
        return [f.result() for f in futures]


def _quiet(message: str) -> None:
    """The log of a worker process (the parent logs for it)."""


def _run_context(run: ReportRun, slug: str, fig_root: Path, options: dict, log: Callable[[str], None]) -> dict:
    """Numbers, figures and recorded facts of one run: what the template shows in the run's section."""
    pred, name = run.predictions, run.name
    tsne = options["tsne_points"]
    log(f"analysing {name}: {len(pred)} samples" + (f", t-SNE of up to {tsne} embeddings" if tsne else ""))
    res = analyze(pred, **options)
    log(f"drawing {name}: figures in {fig_root / slug}")
    res["figures"] = draw_run_figures(pred, res, fig_root / slug)
    res.pop("_plot")
    meta = pred.meta
    ds_meta = meta.get("dataset") or {}
    return {
        "name": name,
        "slug": slug,
        "source": run.source or str(pred.path),
        "predictions": str(pred.path),
        "classes": pred.classes,
        "dataset": ds_meta.get("name"),
        "synthetic": bool(ds_meta.get("synthetic")),
        "protocol": ds_meta.get("protocol"),
        "split": meta.get("split"),
        "label_set": meta.get("label_set"),
        "train_label_set": meta.get("train_label_set"),
        "epoch": meta.get("epoch"),
        "checkpoint": meta.get("checkpoint"),
        "settings": run_settings_line(meta),
        **res,
    }


def run_settings_line(meta: dict) -> dict:
    """The settings a run's section names, from its recorded training configuration: K (only where
    the reliability setup uses anchors), reliability balancing, label smoothing, the noise of the
    labels it trained on (%) and its training seed."""
    s = training_settings(meta)
    info = meta["train_label_set_info"] if "train_label_set_info" in meta else (meta.get("label_set_info") or {})
    noise = info.get("noise") if isinstance(info, dict) else None
    uses_anchors = s["reliability"] in ("both", "anchors")
    return {
        "K": s["num_anchors"] if uses_anchors else f"none (reliability {s['reliability']}: no anchors)",
        "reliability balancing": s["reliability"],
        "label smoothing": s["label_smoothing"],
        "label noise (%)": None if noise is None else round(100 * float(noise), 4),
        "training seed": s["seed"],
    }


def _paper_table(runs: list[dict]) -> dict:
    """The paper's Table 1 with one row per run under the column of its dataset."""
    columns, rows = table1(synthetic=any(r["synthetic"] for r in runs))
    this_rows, unmatched = [], []
    for r in runs:
        col = dataset_column(r["dataset"], r["synthetic"])
        if col is None:
            unmatched.append(r["dataset"] or "unknown")
        acc = 100 * r["metrics"]["corrected"]["accuracy"]
        this_rows.append({"model": r["name"], "column": col, "values": {c: acc if c == col else None for c in columns}})
    return {
        "columns": columns,
        "rows": rows,
        "this_runs": this_rows,
        "unmatched": sorted(set(unmatched)),
        "synthetic": sorted({r["dataset"] for r in runs if r["synthetic"]}),
    }
