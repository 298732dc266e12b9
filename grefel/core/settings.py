"""Settings declared once: a dataclass field carries its default, help, range and resume rule.

A configuration dataclass (``grefel.training.config.TrainConfig``) declares each setting with
:func:`setting`; everything else is derived from that declaration:

* validation of a dict of settings, with messages that name the setting (:func:`validate`);
* the command-line arguments that express a dict of settings (:func:`to_argv`);
* the options of the command (``grefel_cli._settings`` builds Typer options from :func:`specs`).

Flag convention: field ``x_y`` is ``--x-y``; a bool field is ``--x-y/--no-x-y``; a dict field is a
repeatable ``--flag KEY=JSON``; ``Spec.flag`` overrides the name, ``Spec.short`` adds a short flag.
This module imports only the standard library (and grefel.core's name check), so the CLI can read
declarations at start-up.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from grefel.core.errors import GrefelError
from grefel.core.paths import plain_name

MAX_SEED = 2**32 - 1  # every seed: numpy's and torch's generators take it, HDF5 and JSON store it exactly


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` as a whole number in 0..MAX_SEED, else a one-line GrefelError saying ``what`` it seeds."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise GrefelError(f"{what} must be a whole number from 0 to {MAX_SEED:,} (got {seed!r})")
    return int(seed)


@dataclass(frozen=True)
class Spec:
    """What a setting means beyond its type and default (dataclass field metadata ``"spec"``)."""

    help: str
    panel: str  # group of the --help listing
    short: str | None = None  # short flag, e.g. "-b"
    flag: str | None = None  # long flag when it is not --field-name
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min itself is excluded
    max_open: bool = False
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # regular expression a string value must match in full
    path: bool = False  # a file or folder (a Path option on the command line, a str in the config)
    none_as: str | None = None  # how the command line spells None where the default is not None
    resumable: bool = False  # a resumed run may change it (all others come from the run)
    plain_name: bool = False  # names a file or folder inside a folder: checked by grefel.core.paths.plain_name


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, **spec: Any) -> Any:
    """A dataclass field with its :class:`Spec` (keyword arguments) as metadata."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"spec": Spec(**spec)})


def specs(cls) -> dict[str, tuple[dataclasses.Field, Spec, type, bool]]:
    """Field name -> (field, spec, base type, whether None is allowed), in declaration order."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        base, optional = _base_type(hints[f.name])
        out[f.name] = (f, f.metadata["spec"], base, optional)
    return out


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def flag_of(name: str, spec: Spec) -> str:
    return spec.flag or "--" + name.replace("_", "-")


def _base_type(hint: Any) -> tuple[type, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _base_type(rest[0])[0], len(rest) < len(args)
    return (typing.get_origin(hint) or hint), False


def describe_range(spec: Spec) -> str:
    """The allowed interval, e.g. '>= 2', 'in [0, 1)', '> 0'."""
    lo, hi = spec.min, spec.max
    if lo is not None and hi is not None:
        return f"in {'(' if spec.min_open else '['}{lo:g}, {hi:g}{')' if spec.max_open else ']'}"
    if lo is not None:
        return f"{'>' if spec.min_open else '>='} {lo:g}"
    return f"{'<' if spec.max_open else '<='} {hi:g}"


def problem(value: Any, spec: Spec, base: type, optional: bool) -> str | None:
    """Why ``value`` is not a valid value of the setting, or None when it is."""
    if value is None:
        return None if optional else "must be set (got None)"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}
    numeric = base is float and isinstance(value, int | float)
    if isinstance(value, bool) != (base is bool) or not (numeric or isinstance(value, base)):
        return f"must be {names.get(base, base.__name__)} (got {value!r})"
    if base in (int, float):
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number (got {value!r})"
        lo, hi = spec.min, spec.max
        low = lo is not None and (value <= lo if spec.min_open else value < lo)
        high = hi is not None and (value >= hi if spec.max_open else value > hi)
        if low or high:
            return f"must be {describe_range(spec)} (got {value!r})"
    if spec.choices and value not in spec.choices:
        return f"must be one of {', '.join(spec.choices)} (got {value!r})"
    if spec.pattern and not re.fullmatch(spec.pattern, value):
        return f"has an unknown value {value!r}"
    if spec.plain_name:
        try:
            plain_name(value, "the name")
        except GrefelError as e:
            return str(e).removeprefix("the name ")
    return None


def validate(cls, settings: Mapping[str, Any], what: str = "setting") -> None:
    """Raise a one-line :class:`GrefelError` naming the first unknown or invalid key of ``settings``."""
    declared = specs(cls)
    for key, value in settings.items():
        if key not in declared:
            near = difflib.get_close_matches(key, list(declared), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise GrefelError(f"unknown {what} {key!r}{hint}: the {what}s are the fields of {cls.__name__}")
        _, spec, base, optional = declared[key]
        why = problem(value, spec, base, optional)
        if why:
            raise GrefelError(f"{what} {key!r} {why}")


def to_argv(cls, settings: Mapping[str, Any]) -> list[str]:
    """The command-line arguments that give ``settings`` (validated first), in declaration order."""
    validate(cls, settings)
    argv: list[str] = []
    for name, (f, spec, base, _) in specs(cls).items():
        if name not in settings:
            continue
        value, flag = settings[name], flag_of(name, spec)
        if value is None and default_of(f) is None:  # unset: the declared default (e.g. the method's recipe)
            continue
        if base is bool:
            argv.append(flag if value else "--no-" + flag[2:])
        elif base is dict:
            for k, v in value.items():
                argv += [flag, f"{k}={json.dumps(v)}"]
        elif value is None:
            if default_of(f) is not None:
                argv += [flag, spec.none_as]
        else:
            argv += [flag, repr(value) if base is float else str(value)]
    return argv
