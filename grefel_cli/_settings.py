"""Typer options derived from declared settings (:mod:`grefel.core.settings`), and the config back.

``options(TrainConfig)`` gives one ``inspect.Parameter`` per field, named like the field, whose
default is a ``typer.Option`` carrying the field's flag, short flag, help, panel, range (Typer's
min / max, plus a callback for an excluded end) or choices (an ``Enum`` annotation), and a
``ctx`` parameter; a command function that takes ``**params`` and gets these as its
``__signature__`` has every setting as an option.
``build(TrainConfig, params)`` turns the parsed parameters back into the config, by name.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
from pathlib import Path
from typing import Any, Optional

import typer

from grefel.core import settings


def _half_open(flag: str, spec: settings.Spec):
    """A callback checking a range with an excluded end, which Typer's min / max (both inclusive)
    cannot express; None for closed ranges, which Typer checks and shows itself."""
    if not (spec.min_open or spec.max_open):
        return None

    def check(value):
        why = None if value is None else settings.problem(value, spec, float, True)
        if why:
            raise typer.BadParameter(f"{value:g} {why.split(' (got')[0]}", param_hint=f"'{flag}'")
        return value

    return check


def _option(name: str, f, spec: settings.Spec, base: type, optional: bool) -> inspect.Parameter:
    flag = settings.flag_of(name, spec)
    decls = [f"{flag}/--no-{flag[2:]}" if base is bool else flag] + ([spec.short] if spec.short else [])
    default, metavar = settings.default_of(f), None
    if base is dict:
        annotation, default, metavar = list[str], [], "KEY=JSON"
    elif spec.choices:
        # an Enum (every Typer version reads it); the choices go in the help, not a wrapped column
        annotation, metavar = enum.Enum(f"{name}_choices", [(c, c) for c in spec.choices], type=str), "<choice>"
    else:
        annotation = Path if spec.path else base
    if default is None or optional:
        annotation = Optional[annotation]  # noqa: UP045 (what Typer reads)
    check = _half_open(flag, spec)
    if spec.min is not None or spec.max is not None:
        metavar = f"<{base.__name__}>"  # Typer adds [lo<=x<=hi]; its "<float range>" would wrap into the help
    help = spec.help + (f" Range: {settings.describe_range(spec)}." if check else "")
    if spec.choices and not all(c in spec.help for c in spec.choices):
        help += f" One of: {', '.join(spec.choices)}."
    info = typer.Option(
        default,
        *decls,
        help=help.replace("[", "\\["),  # rich markup would swallow [...]
        rich_help_panel=spec.panel,
        min=None if check else spec.min,
        max=None if check else spec.max,
        callback=check,
        metavar=metavar,
    )
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def options(cls, more_help: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """One Typer option per field of the settings dataclass ``cls``, in declaration order;
    ``more_help`` appends command-specific text to the help of some of them."""
    out = []
    for name, (f, spec, base, optional) in settings.specs(cls).items():
        if more_help and name in more_help:
            spec = dataclasses.replace(spec, help=f"{spec.help} {more_help[name]}")
        out.append(_option(name, f, spec, base, optional))
    return [*out, inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]


def with_options(cls, more_help: dict[str, str] | None = None):
    """Decorator: give a ``**params`` command function the options of ``cls`` as its signature."""

    def wrap(fn):
        fn.__signature__ = inspect.Signature(options(cls, more_help))
        return fn

    return wrap


def _key_values(items: list[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{flag} takes KEY=VALUE (JSON value), got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build(cls, params: dict[str, Any]):
    """The ``cls`` instance of the parsed options ``params`` (Path -> str, KEY=JSON list -> dict)."""
    values = {}
    for name, (_, spec, base, _) in settings.specs(cls).items():
        v = params[name]
        if base is dict:
            v = _key_values(v, settings.flag_of(name, spec))
        elif isinstance(v, enum.Enum):
            v = v.value
        elif isinstance(v, Path):
            v = str(v)
        values[name] = v
    return cls(**values)


def given(cls, params: dict[str, Any]) -> list[str]:
    """Names of the settings the user gave on the command line (or in the environment)."""
    ctx = params["ctx"]
    sources = {name: ctx.get_parameter_source(name) for name in settings.specs(cls)}
    return [name for name, src in sources.items() if src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT")]


def flags(cls, names) -> list[str]:
    """The long flags of the settings ``names``."""
    declared = settings.specs(cls)
    return [settings.flag_of(n, declared[n][1]) for n in names]
