"""`grefel report`: one self-contained HTML page (plus PNG/SVG figures and a JSON of every number).

Reads top to bottom:

1. each ``--ckpt`` becomes a predictions table (evaluated now unless an up-to-date one sits beside
   the checkpoint; a ``.parquet`` predictions file is also accepted directly);
2. :func:`analyze` computes the numbers of one run (scikit-learn metrics, calibration, t-SNE ...);
3. :func:`draw` turns them into figures (PNG and SVG on disk, PNG embedded in the page);
4. several runs add a comparison in the layout of Tables 6-8, and every run is placed beside the
   paper's Table 1;
5. the Jinja2 template ``report.html.j2`` (package ``grefel.report_assets``) renders the page.

A checkpoint that cannot be used (missing, truncated, for another class set) becomes one line in
the page and on the console; the other runs are still reported.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from grefel.errors import GrefelError
from grefel.io import atomic_path, write_json
from grefel.report import figures as F
from grefel.report import metrics as M
from grefel.report.compare import SETTING_LABELS, compare_runs, run_settings
from grefel.report.paper import dataset_column, table1
from grefel.report.predictions import Predictions, read_predictions

GAP_MIN_COUNT = 10  # a group needs this many samples to decide the largest accuracy gap


# -- 1. predictions ------------------------------------------------------------------------------------
def load_run(
    source: str | os.PathLike,
    *,
    split: str = "test",
    label_set: str | None = None,
    dataset: str | None = None,
    data_root: str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | None = None,
    amp: bool | None = None,
    show_progress: bool = True,
) -> Predictions:
    """Predictions of one checkpoint (evaluating it when needed) or of a predictions file."""
    source = Path(source)
    if source.suffix == ".parquet":
        if not source.is_file():
            raise GrefelError(f"predictions file {source} not found: write it with `grefel evaluate`")
        return read_predictions(source)
    from grefel.evaluate import evaluate

    path = evaluate(
        source,
        dataset=dataset,
        split=split,
        label_set=label_set,
        batch_size=batch_size,
        device=device,
        data_root=data_root,
        amp=amp,
        show_progress=show_progress,
    )
    return read_predictions(path)


def run_name(source: str | os.PathLike) -> str:
    """``<run folder>/<checkpoint stem>`` for ``runs/k10/best.pt``; the stem for a predictions file."""
    p = Path(source)
    if p.suffix == ".parquet":
        return p.stem
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


# -- 2. numbers ---------------------------------------------------------------------------------------
def analyze(
    pred: Predictions, *, samples: Sequence[int] = (), n_changed: int = 6, tsne_points: int = 2000, seed: int = 0
) -> dict:
    """Every number of one run's section; also the data the figures need (under ``"_plot"``)."""
    classes = pred.classes
    c = len(classes)
    t = pred.table
    y_all = t["label"].to_numpy().astype(np.int64)
    ok = (y_all >= 0) & (y_all < c)
    y = y_all[ok]
    primary, corrected = pred.arrays["primary"][ok], pred.arrays["corrected"][ok]
    pp, pc = t["pred_primary"].to_numpy()[ok], t["pred_corrected"].to_numpy()[ok]
    index = t["index"].to_numpy()[ok]

    res: dict = {
        "n": int(ok.sum()),
        "n_unlabelled": int((~ok).sum()),
        "metrics": {"primary": M.classification_metrics(y, pp, c), "corrected": M.classification_metrics(y, pc, c)},
        "correction": M.correction_effect(y, pp, pc),
        "calibration": {
            "primary": M.expected_calibration_error(primary, y),
            "corrected": M.expected_calibration_error(corrected, y),
        },
        "wrong_shares": {
            "primary": M.wrong_prediction_shares(y, pp, c),
            "corrected": M.wrong_prediction_shares(y, pc, c),
        },
        "distribution_stats": {"primary": M.distribution_stats(primary), "corrected": M.distribution_stats(corrected)},
    }

    # reliability balancing on label noise: flipped labels, and whether predictions recover the clean one
    if "label_noisy" in t:
        yn = t["label_noisy"].to_numpy()[ok]
        flipped = yn != y
        res["noisy"] = {
            "n_flipped": int(flipped.sum()),
            "accuracy_vs_noisy": {
                "primary": float((pp == yn).mean()) if len(y) else None,
                "corrected": float((pc == yn).mean()) if len(y) else None,
            },
            "recovered_clean_on_flipped": {
                "primary": float((pp[flipped] == y[flipped]).mean()) if flipped.any() else None,
                "corrected": float((pc[flipped] == y[flipped]).mean()) if flipped.any() else None,
            },
        }

    # per-group accuracy (RAF-DB gender / race / age)
    groups = {}
    for a in pred.attributes:
        if a not in t:
            continue
        codes = t[a].to_numpy()[ok]
        if not (codes >= 0).any():
            continue
        names = {int(k): v for k, v in (pred.meta.get("attribute_codes", {}).get(a) or {}).items()}
        groups[a] = {
            kind: M.group_accuracy(y, pr, codes, names, GAP_MIN_COUNT)
            for kind, pr in (("primary", pp), ("corrected", pc))
        }
    res["groups"] = groups

    # Fig. 9 samples: chosen ones (given, else one per class, preferring ones RB fixed) and most changed
    tv = M.total_variation(primary, corrected)
    pos = {int(g): i for i, g in enumerate(index)}
    chosen = [pos[int(s)] for s in samples if int(s) in pos]
    if not samples:
        rng = np.random.default_rng(seed)
        fixed = (pp != y) & (pc == y)
        for k in range(c):
            cand = np.flatnonzero((y == k) & fixed)
            cand = cand if len(cand) else np.flatnonzero(y == k)
            if len(cand):
                chosen.append(int(rng.choice(cand)))
    changed = [int(i) for i in np.argsort(-tv, kind="stable")[:n_changed]]
    res["samples"] = {
        "chosen": [int(index[i]) for i in chosen],
        "most_changed": [int(index[i]) for i in changed],
        "missing": [int(s) for s in samples if int(s) not in pos],
        "mean_change": float(tv.mean()) if len(tv) else None,
    }

    # Fig. 5: t-SNE of (at most tsne_points, stratified) embeddings, with cluster scores
    plot: dict = {
        "y": y,
        "primary": primary,
        "corrected": corrected,
        "index": index,
        "chosen": chosen,
        "changed": changed,
    }
    if tsne_points and len(y) >= 5 and "embedding" in pred.arrays:
        sub = M.subsample(len(y), tsne_points, y, seed)
        emb = pred.arrays["embedding"][ok][sub]
        xy = M.tsne_2d(emb, seed=seed)
        res["clusters"] = {
            "n_points": int(len(sub)),
            "embedding": M.cluster_scores(emb, y[sub]),
            "tsne": M.cluster_scores(xy, y[sub]),
        }
        plot.update(tsne_xy=xy, tsne_y=y[sub])
    res["_plot"] = plot
    return res


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
        from grefel.data.shards import PreparedDataset

        ds = PreparedDataset(path)
        if (meta.get("dataset") or {}).get("manifest_sha256") not in (None, ds.manifest_sha256):
            return None  # re-prepared since: indices may point at other faces
        try:
            return ds.read_images(np.asarray(indices))
        finally:
            ds.close()
    except (GrefelError, OSError, KeyError, IndexError):
        return None


def draw(pred: Predictions, res: dict, fig_dir: Path, with_faces: bool = True) -> dict:
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
    ckpts: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    split: str = "test",
    label_set: str | None = None,
    dataset: str | None = None,
    data_root: str | os.PathLike | None = None,
    samples: Sequence[int] = (),
    n_changed: int = 6,
    tsne_points: int = 2000,
    batch_size: int = 128,
    device: str | None = None,
    seed: int = 0,
    amp: bool | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Build ``<out>/report.html`` (+ ``figures/``, ``report.json``) for one or more checkpoints.

    ``out`` defaults to ``<folder of the first checkpoint>/report``. Returns the HTML path.
    """
    if not ckpts:
        raise GrefelError("no checkpoint given: pass --ckpt runs/<run>/best.pt (repeat --ckpt to compare runs)")
    log = log or (lambda s: None)
    out = Path(out) if out is not None else Path(ckpts[0]).parent / "report"
    fig_root = out / "figures"
    runs, problems, used = [], [], set()
    for src in ckpts:
        name = run_name(src)
        try:
            pred = load_run(
                src,
                split=split,
                label_set=label_set,
                dataset=dataset,
                data_root=data_root,
                batch_size=batch_size,
                device=device,
                amp=amp,
                show_progress=show_progress,
            )
        except GrefelError as e:
            problems.append(f"{src}: {e}")
            log(f"skipped {src}: {e}")
            continue
        slug = _slug(name)
        while slug in used:
            slug += "-1"
        used.add(slug)
        log(
            f"analysing {name}: {len(pred)} samples"
            + (f", t-SNE of up to {tsne_points} embeddings" if tsne_points else "")
        )
        res = analyze(pred, samples=samples, n_changed=n_changed, tsne_points=tsne_points, seed=seed)
        log(f"drawing {name}: figures in {fig_root / slug}")
        res["figures"] = draw(pred, res, fig_root / slug)
        res.pop("_plot")
        meta = pred.meta
        ds_meta = meta.get("dataset") or {}
        runs.append(
            {
                "name": name,
                "slug": slug,
                "source": str(src),
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
                "settings": run_settings(meta),
                **res,
            }
        )
    if not runs:
        raise GrefelError("no report written: every checkpoint failed (" + "; ".join(problems)[:400] + ")")

    comparison = None
    if len(runs) > 1:
        comparison = compare_runs(
            [
                {
                    "name": r["name"],
                    "settings": r["settings"],
                    "n": r["n"],
                    "accuracy_primary": r["metrics"]["primary"]["accuracy"],
                    "accuracy_corrected": r["metrics"]["corrected"]["accuracy"],
                    "macro_f1": r["metrics"]["corrected"]["macro_f1"],
                }
                for r in runs
            ]
        )
        if comparison["curves"] and any(c["lines"] for c in comparison["curves"]):
            comparison["figure"] = F.save_figure(F.comparison_figure(comparison["curves"]), fig_root / "comparison")

    t1_columns, t1_rows = table1(synthetic=any(r["synthetic"] for r in runs))
    this_rows, unmatched = [], []
    for r in runs:
        col = dataset_column(r["dataset"], r["synthetic"])
        if col is None:
            unmatched.append(r["dataset"] or "unknown")
        this_rows.append(
            {
                "model": r["name"],
                "column": col,
                "values": {c: (100 * r["metrics"]["corrected"]["accuracy"] if c == col else None) for c in t1_columns},
            }
        )
    paper = {
        "columns": t1_columns,
        "rows": t1_rows,
        "this_runs": this_rows,
        "unmatched": sorted(set(unmatched)),
        "synthetic": sorted({r["dataset"] for r in runs if r["synthetic"]}),
    }

    from grefel import __version__

    context = {
        "title": "GReFEL report: " + ", ".join(r["name"] for r in runs),
        "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "version": __version__,
        "runs": runs,
        "problems": problems,
        "comparison": comparison,
        "paper": paper,
        "setting_labels": SETTING_LABELS,
        "gap_min_count": GAP_MIN_COUNT,
    }
    html_path = out / "report.html"
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(context), encoding="utf-8")
    write_json(out / "report.json", _jsonable({k: v for k, v in context.items() if k != "setting_labels"}, out))
    return html_path


def render_html(context: dict) -> str:
    """Render ``report.html.j2`` (with ``report.css`` inlined) from the package's report assets."""
    from importlib.resources import files

    import jinja2

    assets = files("grefel.report_assets")
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: assets.joinpath(name).read_text(encoding="utf-8")),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v, d=2: (
        "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.{d}f}"
    )
    env.filters["num"] = lambda v, d=3: (
        "–"
        if v is None or (isinstance(v, float) and np.isnan(v))
        else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    )
    env.filters["signed"] = lambda v, d=2: "–" if v is None else f"{v:+.{d}f}"
    return env.get_template("report.html.j2").render(**context)


def _jsonable(o, base: Path):
    """Figures lose their embedded data URIs (the PNG files sit beside the JSON, paths relative to it)."""
    if isinstance(o, dict):
        return {k: _jsonable(v, base) for k, v in o.items() if k != "data_uri"}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v, base) for v in o]
    if isinstance(o, Path):
        return os.path.relpath(o, base)
    if isinstance(o, float) and np.isnan(o):
        return None
    return o
