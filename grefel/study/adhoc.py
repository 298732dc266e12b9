"""Runs given to `grefel report` read as an ad-hoc study, summarised by the study's own statistics.

Each predictions file records the training configuration of the run it evaluated
(:func:`grefel.evaluation.predictions.training_settings`). From those:

* the **settings** of a run are its TrainConfig fields, less the ones that say where and how it
  ran rather than what it trained (:data:`BOOKKEEPING`: paths, device, threads, logging, its
  name);
* the settings that **differ** between the runs become the grid's **axes**, each compared against
  the study's default baseline (reliability ``none``, the smallest K, clean labels, else the first
  value in sorted order);
* the **training seed** recorded in the configuration is the replicate: seed s of one setting is
  paired with seed s of another. Label noise drawn per seed (``sym20-s<s>`` for the run of seed s,
  every noisy run alike) counts as one label set drawn per replicate.

The settings a table shows come from the configuration, never from the built model's anchor
count: a run without reliability balancing is "reliability none", not "K = 0". Two runs with the
same settings and seed are one replicate twice; the second is left out with a note. The summary is
:func:`grefel.study.stats.summarize`'s, the very numbers a study of the same runs gets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from grefel.evaluation.predictions import read_predictions_meta, training_settings
from grefel.study.folder import RunStatus
from grefel.study.spec import SHORT, Axis, AxisValue, LabelSetSpec, RunSpec, Study, default_baseline
from grefel.study.stats import run_metrics, summarize
from grefel.training.config import TrainConfig, resumable_settings

# settings that say where and how a run ran, not what it trained: never an axis
BOOKKEEPING = frozenset(
    (set(resumable_settings()) - {"epochs"})
    | {"seed", "name", "run_dir", "dataset", "data_root", "ir50", "mobilefacenet", "poster"}
)
AXIS_ORDER = [f.name for f in fields(TrainConfig)]


def summarize_runs(runs: Sequence[tuple[str, str | os.PathLike]]) -> dict:
    """The study summary of predictions files ``[(name, path)]`` read as an ad-hoc study (see the
    module docstring); ``summary["problems"]`` lists runs left out and mixed evaluations."""
    entries = _unique_names([_entry(name, path) for name, path in runs])
    per_seed = _noise_per_seed(entries)
    for e in entries:
        if per_seed and e["noise"]:
            e["settings"]["labels"] = e["settings"]["labels"].removesuffix(f"-s{e['seed']}")
    axes = _axes(entries)
    problems = _mixed_evaluations(entries)
    specs, states, seen = [], [], {}
    for e in entries:
        cell = {a.name: _label(e["settings"][a.name]) for a in axes}
        key = (tuple(cell.values()), e["seed"])
        if key in seen:
            problems.append(
                f"{e['name']} has the settings and training seed ({e['seed']}) of {seen[key]}: one replicate twice, "
                "left out of the comparison"
            )
            continue
        seen[key] = e["name"]
        specs.append(RunSpec(e["name"], e["seed"], cell, {**e["settings"]}))
        states.append(_state(e, cell))
    study = Study(
        name="runs",
        dataset=", ".join(sorted({e["dataset"] for e in entries if e["dataset"]})) or None,
        data_root=None,
        seeds=sorted({e["seed"] for e in entries}),
        base={},
        axes=axes,
        baselines={a.name: default_baseline(a) for a in axes},
        label_sets=_label_sets(entries),
        runs=specs,
        noise_per_seed=per_seed,
    )
    return {**summarize(study, states, Path.cwd(), kind="ad hoc"), "problems": problems}


def _entry(name: str, path: str | os.PathLike) -> dict:
    meta = read_predictions_meta(path)
    settings = training_settings(meta)
    info = meta.get("train_label_set_info") or {}
    noise = info.get("noise") if settings["labels"] != "clean" else 0.0
    return {
        "name": name,
        "path": Path(path).resolve(),
        "meta": meta,
        "seed": int(settings["seed"]),
        "settings": {k: v for k, v in settings.items() if k not in BOOKKEEPING},
        "noise": noise,
        "mode": info.get("mode"),
        "noise_seed": info.get("seed"),
        "dataset": (meta.get("dataset") or {}).get("name"),
    }


def _unique_names(entries: list[dict]) -> list[dict]:
    """Names that tell runs apart: predictions files of one name (``best-test``) get their run folder's."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["name"]] = counts.get(e["name"], 0) + 1
    seen: dict[str, int] = {}
    for e in entries:
        if counts[e["name"]] > 1:
            folder = e["path"].parent.parent if e["path"].parent.name == "predictions" else e["path"].parent
            e["name"] = f"{folder.name}/{e['name']}"
        seen[e["name"]] = seen.get(e["name"], 0) + 1
        if seen[e["name"]] > 1:
            e["name"] = f"{e['name']} ({seen[e['name']]})"
    return entries


def _noise_per_seed(entries: list[dict]) -> bool:
    """True when every noisy run trained on a draw made with its own training seed (``<set>-s<seed>``),
    over two seeds or more."""
    noisy = [e for e in entries if e["noise"]]
    return (
        len({e["seed"] for e in noisy}) > 1
        and all(e["noise_seed"] == e["seed"] for e in noisy)
        and all(e["settings"]["labels"].endswith(f"-s{e['seed']}") for e in noisy)
    )


def _label(value) -> str:
    """How a setting's value is shown and keyed: ``10``, ``0.11``, ``both``, ``{"encoder": ...}``."""
    if isinstance(value, float):
        return format(value, ".10g")
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _part(key: str, value) -> str:
    """A value's piece of a setting's name, as in a study's run names: ``rb_none``, ``K10``, ``sym20``."""
    label = _label(value)
    if isinstance(value, bool):
        return key if value else f"no_{key}"
    if key == "labels":
        return label
    if key in SHORT:
        return f"{SHORT[key]}{label}"
    return f"{key}_{label}" if isinstance(value, str) else f"{key}{label}"


def _axes(entries: list[dict]) -> list[Axis]:
    """One axis per setting whose value differs between the runs, in TrainConfig's order."""
    axes = []
    for key in AXIS_ORDER:
        values = {_label(e["settings"].get(key)): e["settings"].get(key) for e in entries if key in e["settings"]}
        if len(values) < 2:
            continue
        ordered = sorted(values.items(), key=_value_order)
        axes.append(Axis(key, key, [AxisValue(lab, _part(key, v), {key: v}) for lab, v in ordered]))
    return axes


def _value_order(item: tuple) -> tuple:
    """Numbers ascending first, then everything else by its label."""
    label, value = item
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, label)


def _label_sets(entries: list[dict]) -> dict[str, LabelSetSpec]:
    out = {}
    for e in entries:
        name = e["settings"]["labels"]
        if name != "clean" and name not in out:
            noise = None if e["noise"] is None else float(e["noise"])
            out[name] = LabelSetSpec(name, noise, e["mode"], int(e["noise_seed"] or 0))
    return out


def _mixed_evaluations(entries: list[dict]) -> list[str]:
    """One line when the runs were evaluated on different datasets or splits."""
    seen = sorted({f"{e['dataset']}/{e['meta'].get('split')}" for e in entries})
    if len(seen) < 2:
        return []
    return [f"the runs were evaluated on different data ({', '.join(seen)}): their comparison mixes them"]


def _state(e: dict, cell: dict) -> RunStatus:
    return RunStatus(
        name=e["name"],
        state="done",
        epochs_done=int(e["meta"].get("epoch") or 0),
        epochs=int(e["settings"].get("epochs") or 0),
        seed=e["seed"],
        cell=cell,
        log="",
        metrics=run_metrics(e["path"]),
        predictions=str(e["path"]),
    )
