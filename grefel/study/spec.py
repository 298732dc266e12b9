"""The study file: TOML parsing, validation (one-line errors with the line), grid expansion, run names.

::

    [study]
    dataset = "ferg"              # prepared dataset: a name under the data root, or a folder
    seeds = 3                     # 3 -> seeds 0, 1, 2; or a list [0, 4, 7]
    gpus_per_run = 1              # several: the run trains under torchrun (local) or as Slurm tasks

    [train]                       # settings every run shares (grefel train's, by TrainConfig name)
    preset = "tiny"
    epochs = 16

    [grid]                        # every combination of these x every seed is one run
    labels = ["clean", "sym20", "asym40"]
    reliability = ["both", "none"]
    loss = [{ name = "cls", lambda_anchor = 0.0, lambda_center = 0.0 }, { name = "all" }]

    [label_sets]                  # only for names that are not sym<P> / asym<P>[-s<seed>]
    noisy = { noise = 0.3, mode = "asymmetric", seed = 1 }
    eac-noise20 = { from_file = "noise02.txt", noise = 0.2 }    # a published list (grefel corrupt --from-file)

    [baseline]                    # what each grid axis is compared against (defaults below)
    reliability = "none"

    # in [study]: noise_per_seed = true draws each generated label set's noise per training seed
    # (sym20 for seed s is sym20-s<s>); primary = ["reliability"] names the axes Holm corrects

    [slurm]                       # only for the Slurm executor
    partition = "gpu"
    time = "24:00:00"

A grid key that is a TrainConfig field takes a list of values; any other key is a named axis whose
values are tables with a ``name`` and the settings they set together (a "setup"). Run names join
one short part per axis, in the file's axis order, and the seed: ``sym20-rb_none-K10-s1``. They
depend on the values only, so adding a seed or a grid value keeps the names of existing runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grefel.core import settings
from grefel.core.errors import GrefelError
from grefel.core.paths import plain_name
from grefel.core.recipe import BASELINE_PRESETS
from grefel.core.settings import MAX_SEED
from grefel.data.corrupt import MODES
from grefel.models.factory import method_presets
from grefel.models.presets import list_presets
from grefel.training.config import TrainConfig, defaults, validate_settings
from grefel.training.config import train_argv as argv
from grefel.training.recipes import method_conflict

STUDY_KEYS = ("name", "dataset", "data_root", "seeds", "gpus_per_run", "noise_per_seed", "primary")
TABLES = ("study", "train", "grid", "label_sets", "baseline", "slurm")
# TrainConfig fields the study itself sets: never in [train] or [grid]
STUDY_OWNED = {
    "dataset": "set it as dataset in [study]",
    "data_root": "set it as data_root in [study]",
    "seed": "set seeds in [study]",
    "name": "run names come from the grid values",
    "run_dir": "runs live in the study folder",
    "resume": "the study resumes stopped runs itself",
    "stop_after": "the study runs every run to its last epoch",
    "quiet": "the study keeps each run's output in its log",
}
PATH_FIELDS = ("data_root", "ir50", "mobilefacenet", "poster", "backbone_weights")
LABEL_SET_NAME = re.compile(r"^(a?sym)(\d+(?:\.\d+)?)(?:-s(\d+))?$")
NAME_CHARS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
SHORT = {  # name part of a grid value: K10, rb_none, ls0.11 ...
    "reliability": "rb_",
    "num_anchors": "K",
    "label_smoothing": "ls",
    "lambda_cls": "lcls",
    "lambda_anchor": "la",
    "lambda_center": "lc",
}
SLURM_KEYS = {
    "partition": str,
    "time": (str, int),
    "cpus_per_run": int,
    "mem_gb": (int, float),
    "max_requeue": int,
    "account": str,
    "qos": str,
    "constraint": str,
    "setup": list,
    "additional": dict,
}


@dataclass(frozen=True)
class LabelSetSpec:
    """How to make a missing label set with `grefel corrupt` (None fields: it must already exist)."""

    name: str
    noise: float | None = None
    mode: str | None = None
    seed: int = 0
    from_file: str | None = None  # a published list to import (mode "imported")


@dataclass
class AxisValue:
    label: str  # how tables show it: "both", "10", "sym20", a setup's name
    part: str  # its piece of the run name: "rb_both", "K10", "sym20"
    settings: dict  # the TrainConfig settings it sets


@dataclass
class Axis:
    name: str  # the grid key
    field: str | None  # the TrainConfig field it varies (None: a named setup axis)
    values: list[AxisValue]


@dataclass
class RunSpec:
    name: str
    seed: int
    cell: dict[str, str]  # axis -> value label
    settings: dict  # TrainConfig settings (without run_dir and name)


@dataclass
class Study:
    name: str
    dataset: str | None
    data_root: str | None
    seeds: list[int]
    base: dict
    axes: list[Axis]
    baselines: dict[str, str]
    label_sets: dict[str, LabelSetSpec]
    slurm: dict = field(default_factory=dict)
    gpus_per_run: int = 1
    runs: list[RunSpec] = field(default_factory=list)
    noise_per_seed: bool = False  # generated label sets drawn per training seed (sym20 -> sym20-s<seed>)
    primary: list[str] = field(default_factory=list)  # the grid axes whose comparisons Holm corrects

    def run(self, name: str) -> RunSpec:
        for r in self.runs:
            if r.name == name:
                return r
        raise GrefelError(f"study '{self.name}' has no run named '{name}'")

    def to_json(self) -> dict:
        return {"format": "grefel-study", "version": 1, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, d: dict) -> Study:
        """The study a study folder's study.json holds, its names and settings checked as a study file's
        are (the folder may come from another machine): a one-line GrefelError otherwise."""
        axes = [Axis(a["name"], a["field"], [AxisValue(**v) for v in a["values"]]) for a in d["axes"]]
        study = cls(
            name=d["name"],
            dataset=d["dataset"],
            data_root=d["data_root"],
            seeds=list(d["seeds"]),
            base=d["base"],
            axes=axes,
            baselines=d["baselines"],
            label_sets={k: LabelSetSpec(**v) for k, v in d["label_sets"].items()},
            slurm=d.get("slurm") or {},
            gpus_per_run=int(d.get("gpus_per_run", 1)),
            runs=[RunSpec(**r) for r in d["runs"]],
            noise_per_seed=bool(d.get("noise_per_seed", False)),
            primary=list(d.get("primary") or []),
        )
        check_names(study)
        for r in study.runs:
            validate_settings(r.settings)
        return study


def check_names(study: Study) -> None:
    """Every name that becomes a file or folder name is a plain name (:func:`grefel.core.paths.plain_name`):
    the study's, its runs' (``runs/<run>``) and its label sets' (``labels/<set>.h5``)."""
    plain_name(study.name, "study name")
    for r in study.runs:
        plain_name(r.name, "run name")
    for name in study.label_sets:
        plain_name(name, "label set name")


# ---------------------------------------------------------------------------------------------
# settings -> `grefel train` arguments, and value checks: TrainConfig's own declarations
# ---------------------------------------------------------------------------------------------
def run_argv(settings: dict) -> list[str]:
    """``grefel train`` arguments for TrainConfig ``settings`` (:func:`grefel.training.config.train_argv`);
    unset (None) settings and the clean label set are left out."""

    return argv({k: v for k, v in settings.items() if v is not None and not (k == "labels" and v == "clean")})


def check_model_args(model_args: dict) -> None:
    """``model_args`` (create_model overrides) checked against the model's constructor without building it."""
    from grefel.models.grefel import check_overrides  # lazy: torch, only for a study that sets model_args

    check_overrides(model_args)


def check_setting(key: str, value: Any) -> str | None:
    """Why ``value`` is not a valid value of TrainConfig field ``key`` (None when it is), from the
    field's declaration (type, range, choices); presets are checked against the registry."""

    _, spec, base, optional = settings.specs(TrainConfig)[key]
    why = settings.problem(value, spec, base, optional)
    presets = list_presets() + [p for p in BASELINE_PRESETS if p not in list_presets()]
    if why is None and key == "preset" and value not in presets:
        why = f"must be one of {', '.join(presets)} (got {value!r})"
    return why


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, bool)) or value is None else str(value)


# ---------------------------------------------------------------------------------------------
# errors that name the key and its line
# ---------------------------------------------------------------------------------------------
class StudyFileError(GrefelError):
    """A study file that does not parse or holds an unknown key or a bad value."""


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")


def find_line(text: str, table: str | None, *keys: str) -> int | None:
    """1-based line of ``keys`` (a key, then keys nested in its value) under ``[table]``.

    tomllib reports no positions for valid TOML, so the text is scanned: the table's header, the
    first ``key =`` inside it, then each further key after that line. Falls back to the deepest
    part found.
    """
    lines = text.splitlines()
    start, end = 0, len(lines)
    if table:
        heads = [i for i, line in enumerate(lines) if (m := _HEADER.match(line)) and m.group(1) == table]
        if not heads:
            return None
        start = heads[0] + 1
        end = next((i for i in range(start, len(lines)) if _HEADER.match(lines[i])), len(lines))
    if not table and keys:  # a table's own header
        head = next((i for i, line in enumerate(lines) if (m := _HEADER.match(line)) and m.group(1) == keys[0]), None)
        if head is not None:
            return head + 1
    found = start if table else None
    pos = start
    for depth, key in enumerate(keys):
        pat = re.compile(
            rf'(^\s*|[{{,]\s*)["\']?{re.escape(key)}["\']?\s*=' if depth else rf'^\s*["\']?{re.escape(key)}["\']?\s*='
        )
        hit = next((i for i in range(pos, end) if pat.search(lines[i])), None)
        if hit is None:
            break
        found, pos = hit + 1, hit
    return found


class _Errors:
    """Raises :class:`StudyFileError` as ``file:line: message`` (one line)."""

    def __init__(self, path: Path | None, text: str):
        self.path, self.text = path, text

    def __call__(self, message: str, table: str | None = None, *keys: str) -> StudyFileError:
        line = find_line(self.text, table, *keys) if (table or keys) else None
        where = f"{self.path or 'study'}" + (f":{line}" if line else "")
        return StudyFileError(f"{where}: {message}")


def _unknown(key: str, known, what: str) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"unknown {what} '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------
def load_study(path: str | os.PathLike) -> Study:
    """Read, check and expand a study file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GrefelError(f"no study file {path}: give the path of a study TOML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise GrefelError(f"cannot read study file {path} ({getattr(e, 'strerror', None) or e})") from None
    return parse_study(text, path)


def parse_study(text: str, path: Path | None = None) -> Study:
    """:func:`load_study` on the file's text; ``path`` names the file in errors and anchors relative paths."""
    err = _Errors(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"^(.*?)\s*\(at line (\d+), column \d+\)$", str(e))
        where, why = (f"{path or 'study'}:{m.group(2)}", m.group(1)) if m else (f"{path or 'study'}", str(e))
        raise StudyFileError(f"{where}: not valid TOML ({why})") from None
    for key in doc:
        if key not in TABLES:
            raise err(
                _unknown(key, TABLES, "table") + f": a study has {', '.join(f'[{t}]' for t in TABLES)}", None, key
            )
        if not isinstance(doc[key], dict):
            raise err(f"'{key}' must be a table ([{key}])", None, key)
    here = path.parent if path else Path.cwd()
    head = doc.get("study", {})
    for key in head:
        if key not in STUDY_KEYS:
            raise err(_unknown(key, STUDY_KEYS, "key") + " in [study]", "study", key)
    name = head.get("name", path.stem if path else "study")
    if not isinstance(name, str) or not NAME_CHARS.match(name):
        raise err(f"name {_show(name)} must be letters, digits, '.', '_', '-'", "study", "name")
    seeds = _seeds(head.get("seeds", 3), err)
    dataset = head.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise err("dataset must be a string (a prepared dataset's name or folder)", "study", "dataset")
    data_root = head.get("data_root")
    if data_root is not None and not isinstance(data_root, str):
        raise err("data_root must be a string (a folder)", "study", "data_root")
    gpus = head.get("gpus_per_run", 1)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
        raise err(f"gpus_per_run = {_show(gpus)}: give a number of GPUs (0: the CPU)", "study", "gpus_per_run")
    base = _settings(doc.get("train", {}), err, "train", here)
    axes = _axes(doc.get("grid", {}), err, here)
    label_sets = _label_sets(doc.get("label_sets", {}), base, axes, err, here)
    noise_per_seed = head.get("noise_per_seed", False)
    if not isinstance(noise_per_seed, bool):
        raise err("noise_per_seed must be true or false", "study", "noise_per_seed")
    if noise_per_seed:
        label_sets = _per_seed_label_sets(label_sets, doc.get("label_sets", {}), seeds, err)
    primary = _primary(head.get("primary", []), axes, err)
    baselines = _baselines(doc.get("baseline", {}), axes, err)
    slurm = _slurm(doc.get("slurm", {}), err)
    study = Study(
        name=name,
        dataset=_dataset(dataset, here, data_root),
        data_root=str((here / data_root).expanduser().resolve()) if data_root else None,
        seeds=seeds,
        base=base,
        axes=axes,
        baselines=baselines,
        label_sets=label_sets,
        slurm=slurm,
        gpus_per_run=gpus,
        noise_per_seed=noise_per_seed,
        primary=primary,
    )
    study.runs = expand(study, err)
    check_names(study)
    return study


MAX_SEEDS = 1000  # seeds of one study
MAX_RUNS = 10_000  # runs of one study (grid values x seeds)


def _seeds(value, err) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_SEEDS:
            raise err(f"seeds = {value}: give a count from 1 to {MAX_SEEDS}, or a list of seeds", "study", "seeds")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value) or min(value) < 0 or max(value) > MAX_SEED:
            raise err(f"seeds must be distinct whole numbers from 0 to {MAX_SEED:,}", "study", "seeds")
        if len(value) > MAX_SEEDS:
            raise err(f"seeds lists {len(value)} seeds: at most {MAX_SEEDS}", "study", "seeds")
        return list(value)
    raise err(f"seeds = {_show(value)}: give a count (3) or a list of integers ([0, 1, 2])", "study", "seeds")


def _dataset(dataset: str | None, here: Path, data_root: str | None) -> str | None:
    """A dataset given as a folder becomes absolute (relative to the study file); a name stays a name."""
    if dataset is None:
        return None
    p = Path(dataset).expanduser()
    looks_like_path = p.is_absolute() or "/" in dataset or dataset.startswith((".", "~"))
    if looks_like_path or ((here / p / "manifest.json").is_file() and not data_root):
        return str((here / p).resolve())
    return dataset


def _settings(table: dict, err, where: str, here: Path, *keys: str) -> dict:
    """Check one table of TrainConfig settings; path-valued ones become absolute."""

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for key, value in table.items():
        if key in STUDY_OWNED:
            raise err(f"'{key}' cannot be set in [{where}]: {STUDY_OWNED[key]}", where, *keys, key)
        if key not in fields:
            raise err(
                _unknown(key, fields, "setting") + f" in [{where}]: settings are grefel train's, "
                "by their TrainConfig names",
                where,
                *keys,
                key,
            )
        reason = check_setting(key, value)
        if reason:
            raise err(f"bad value for {key}: {reason}", where, *keys, key)
        if key == "model_args":
            try:
                check_model_args(value)
            except GrefelError as e:
                raise err(f"bad value for model_args: {e}", where, *keys, key) from None
        if key in PATH_FIELDS:
            value = str((here / Path(value).expanduser()).resolve())
        out[key] = value
    return out


def _fmt(value: Any) -> str:
    return format(value, ".10g") if isinstance(value, float) else str(value)


def _axes(grid: dict, err, here: Path) -> list[Axis]:

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    axes, owner = [], {}
    for key, values in grid.items():
        if key in STUDY_OWNED:
            raise err(f"'{key}' cannot be a grid axis: {STUDY_OWNED[key]}", "grid", key)
        if not isinstance(values, list) or not values:
            raise err(f"grid axis '{key}' must be a non-empty list of values", "grid", key)
        if key in fields and key != "model_args":
            axis = Axis(key, key, [_scalar_value(key, v, err, here) for v in values])
        elif all(isinstance(v, dict) for v in values):
            axis = Axis(key, None, [_setup_value(key, v, err, here) for v in values])
        else:
            known = sorted(fields - set(STUDY_OWNED))
            raise err(
                _unknown(key, known, "setting") + " in [grid]: a grid key is a grefel train setting "
                "(TrainConfig name) with a list of values, or a named axis whose values are tables with a name",
                "grid",
                key,
            )
        labels = [v.label for v in axis.values]
        if len(set(labels)) != len(labels):
            raise err(f"grid axis '{key}' lists a value twice", "grid", key)
        for v in axis.values:
            for f in v.settings:
                if owner.setdefault(f, key) != key:
                    raise err(f"'{f}' is set by two grid axes ('{owner[f]}' and '{key}'): set it in one", "grid", key)
        axes.append(axis)
    return axes


def _scalar_value(key: str, value, err, here: Path) -> AxisValue:
    if isinstance(value, (dict, list)):
        raise err(f"grid axis '{key}' takes plain values, got {_show(value)}", "grid", key)
    settings = _settings({key: value}, err, "grid", here)
    label = _fmt(value)
    if isinstance(value, bool):
        part = key if value else f"no_{key}"
    elif key in ("labels", "method"):
        part = value
    elif key in SHORT:
        part = f"{SHORT[key]}{label}"
    else:
        part = f"{key}_{label}" if isinstance(value, str) else f"{key}{label}"
    if not NAME_CHARS.match(part):
        raise err(
            f"grid value {_show(value)} of '{key}' cannot go into a folder name: use letters, digits, "
            "'.', '_', '+', '-'",
            "grid",
            key,
        )
    return AxisValue(label, part, settings)


def _setup_value(key: str, table: dict, err, here: Path) -> AxisValue:
    name = table.get("name")
    if not isinstance(name, str) or not NAME_CHARS.match(name):
        raise err(
            f"each value of grid axis '{key}' needs name = \"...\" (letters, digits, '.', '_', '+', '-')",
            "grid",
            key,
        )
    settings = _settings({k: v for k, v in table.items() if k != "name"}, err, "grid", here, key)
    return AxisValue(name, name, settings)


def _label_set_names(base: dict, axes: list[Axis]) -> list[str]:
    names = [base["labels"]] if "labels" in base else []
    names += [v.settings["labels"] for a in axes for v in a.values if "labels" in v.settings]
    return list(dict.fromkeys(n for n in names if n != "clean"))


def _label_sets(table: dict, base: dict, axes: list[Axis], err, here: Path) -> dict[str, LabelSetSpec]:
    """Label sets the runs use, with how to make each: [label_sets], else the name, else must exist."""

    out = {}
    keys = ("noise", "mode", "seed", "from_file")
    for name, spec in table.items():
        try:
            plain_name(name, "label set name")
        except GrefelError as e:
            raise err(str(e), "label_sets", name) from None
        if not isinstance(spec, dict):
            raise err(
                f"label set '{name}' must be a table: {{ noise = 0.2, mode = \"symmetric\", seed = 0 }}",
                "label_sets",
                name,
            )
        for k in spec:
            if k not in keys:
                raise err(_unknown(k, keys, "key") + f" in label set '{name}'", "label_sets", name, k)
        if "from_file" in spec:
            out[name] = _imported_label_set(name, spec, err, here)
            continue
        noise, mode, seed = spec.get("noise"), spec.get("mode", "symmetric"), spec.get("seed", 0)
        if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise < 1:
            raise err(
                f"label set '{name}': noise must be a fraction in [0, 1) (0.2 for 20 %)", "label_sets", name, "noise"
            )
        if mode not in MODES:
            raise err(f"label set '{name}': mode must be one of {', '.join(MODES)}", "label_sets", name, "mode")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise err(
                f"label set '{name}': seed must be a whole number from 0 to {MAX_SEED:,}", "label_sets", name, "seed"
            )
        out[name] = LabelSetSpec(name, float(noise), mode, seed)
    for name in _label_set_names(base, axes):
        if name in out:
            continue
        m = LABEL_SET_NAME.match(name)
        if m and float(m.group(2)) < 100:
            mode = "symmetric" if m.group(1) == "sym" else "asymmetric"
            out[name] = LabelSetSpec(name, float(m.group(2)) / 100, mode, int(m.group(3) or 0))
        else:
            out[name] = LabelSetSpec(name)  # must exist in the dataset
    return out


def per_seed_label_set(name: str, seed: int) -> str:
    """The label set a run of training seed ``seed`` trains on when noise is drawn per seed: ``sym20-s3``."""
    return f"{name}-s{seed}"


def _per_seed_label_sets(label_sets: dict, table: dict, seeds: list[int], err) -> dict[str, LabelSetSpec]:
    """noise_per_seed: every generated label set becomes one per training seed, drawn with that seed."""
    out = {}
    for name, spec in label_sets.items():
        if spec.noise is None or spec.mode == "imported":
            raise err(
                f"noise_per_seed needs label sets the study generates, but '{name}' must already exist in the "
                "dataset: define it under [label_sets] with noise and mode, or set noise_per_seed = false",
                "study",
                "noise_per_seed",
            )
        m = LABEL_SET_NAME.match(name)
        if (m and m.group(3) is not None) or "seed" in (table.get(name) or {}):
            where = ("label_sets", name, "seed") if name in table else ("study", "noise_per_seed")
            raise err(
                f"label set '{name}' fixes its noise seed, but noise_per_seed draws it from each run's "
                "training seed: name it without -s<seed> and without seed = ...",
                *where,
            )
        for seed in seeds:
            drawn = per_seed_label_set(name, seed)
            out[drawn] = LabelSetSpec(drawn, spec.noise, spec.mode, seed)
    return out


def _primary(value, axes: list[Axis], err) -> list[str]:
    """The grid axes named as the study's primary comparisons (a name or a list of names)."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise err('primary must be a grid axis or a list of them: primary = ["reliability"]', "study", "primary")
    known = [a.name for a in axes]
    for n in names:
        if n not in known:
            axes_text = ", ".join(known) if known else "none: the study has no [grid]"
            raise err(
                _unknown(n, known, "grid axis") + f" in primary: name axes of [grid] ({axes_text})", "study", "primary"
            )
    return list(dict.fromkeys(names))


def default_baseline(axis: Axis) -> str:
    """What an axis is compared against without [baseline]: reliability 'none', the smallest K, clean
    labels, the method GReFEL, or the first value listed."""
    labels = [v.label for v in axis.values]
    if axis.field == "reliability" and "none" in labels:
        return "none"
    if axis.field == "num_anchors":
        return min(axis.values, key=lambda v: v.settings["num_anchors"]).label
    if axis.field == "labels" and "clean" in labels:
        return "clean"
    if axis.field == "method" and "grefel" in labels:  # every method against GReFEL
        return "grefel"
    return labels[0]


def _imported_label_set(name: str, spec: dict, err, here: Path) -> LabelSetSpec:
    """``{ from_file = "noise02.txt", noise = 0.2 }``: a published list, imported when the dataset lacks it."""
    file, noise = spec["from_file"], spec.get("noise")
    if not isinstance(file, str) or not file:
        raise err(f"label set '{name}': from_file must be the path of a list file", "label_sets", name, "from_file")
    if set(spec) - {"from_file", "noise"}:
        raise err(f"label set '{name}': a list from a file takes only from_file and noise", "label_sets", name)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise < 1:
        raise err(f"label set '{name}': give noise, the level the list stands for (0.2 for 20 %)", "label_sets", name)
    return LabelSetSpec(name, float(noise), "imported", -1, str((here / Path(file).expanduser()).resolve()))


def _baselines(table: dict, axes: list[Axis], err) -> dict[str, str]:
    """The value each axis is compared against: [baseline], else reliability 'none', the smallest
    K, clean labels, or the first value listed."""
    by_name = {a.name: a for a in axes}
    for key, value in table.items():
        if key not in by_name:
            raise err(_unknown(key, by_name, "grid axis") + " in [baseline]", "baseline", key)
        labels = [v.label for v in by_name[key].values]
        if _fmt(value) not in labels:
            raise err(
                f"baseline {key} = {_show(value)} is not one of its grid values ({', '.join(labels)})", "baseline", key
            )
    return {a.name: _fmt(table[a.name]) if a.name in table else default_baseline(a) for a in axes}


def _slurm(table: dict, err) -> dict:
    for key, value in table.items():
        if key not in SLURM_KEYS:
            raise err(_unknown(key, SLURM_KEYS, "key") + " in [slurm]", "slurm", key)
        if not isinstance(value, SLURM_KEYS[key]) or isinstance(value, bool):
            raise err(f"bad value for {key} in [slurm]: {_show(value)}", "slurm", key)
    if "time" in table:
        try:
            slurm_minutes(table["time"])
        except ValueError:
            raise err(
                f'time = {_show(table["time"])}: give minutes (240) or "HH:MM:SS" / "D-HH:MM:SS"', "slurm", "time"
            ) from None
    return dict(table)


def slurm_minutes(value: str | int) -> int:
    """Slurm time limit in minutes from 240, "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or "D-HH:MM:SS"."""
    if isinstance(value, int):
        if value < 1:
            raise ValueError(value)
        return value
    days, sep, rest = value.partition("-")
    if not sep:
        days, rest = "0", value
    parts = [int(p) for p in rest.split(":")]  # ValueError on anything else
    if sep:  # days-hours[:minutes[:seconds]]
        h, m, s = (parts + [0, 0])[:3] if len(parts) <= 3 else (-1, 0, 0)
    else:
        h, m, s = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}.get(len(parts), (-1, 0, 0))
    total = int(days) * 1440 + h * 60 + m + (1 if s else 0)
    if min(int(days), h, m, s) < 0 or total < 1:
        raise ValueError(value)
    return total


# ---------------------------------------------------------------------------------------------
# expansion
# ---------------------------------------------------------------------------------------------
def expand(study: Study, err=None) -> list[RunSpec]:
    """Every combination of the grid values x every seed, named from the values."""
    err = err or _Errors(None, "")
    n = len(study.seeds) * math.prod(len(a.values) for a in study.axes)
    if n > MAX_RUNS:
        raise err(f"the grid makes {n:,} runs (values x seeds): a study holds at most {MAX_RUNS:,}", "grid")
    runs, seen = [], {}
    for combo in itertools.product(*(a.values for a in study.axes)):
        for seed in study.seeds:
            name = "-".join([v.part for v in combo] + [f"s{seed}"])
            if name in seen:
                raise err(f"two runs would both be named '{name}': make the grid values distinct", "grid")
            settings = {"dataset": study.dataset, "data_root": study.data_root, **study.base}
            for v in combo:
                settings.update(v.settings)
            settings["seed"] = seed
            if study.noise_per_seed and settings.get("labels", "clean") != "clean":
                settings["labels"] = per_seed_label_set(settings["labels"], seed)
            settings = {k: v for k, v in settings.items() if v is not None}
            why = _method_problem(settings)
            if why:
                raise err(f"run {name}: {why}", "grid")
            seen[name] = True
            runs.append(RunSpec(name, seed, {a.name: v.label for a, v in zip(study.axes, combo)}, settings))
    return runs


def _method_problem(settings: dict) -> str | None:
    """Why a run's settings do not fit its method (a preset it lacks, another method's setting), or None."""
    method = settings.get("method", "grefel")
    preset = settings.get("preset", defaults()["preset"])
    if preset not in method_presets(method):
        return f"method {method} has no preset {preset!r} (use one of {', '.join(method_presets(method))})"
    return method_conflict(settings, defaults())
