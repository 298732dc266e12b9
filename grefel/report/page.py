"""The report page: sections a caller adds, the Jinja2 template, and writing ``report.html`` + ``report.json``.

A :class:`Section` is how a caller puts its own part on the page without touching the template: a
title, a paragraph, tables (:class:`Table`), matplotlib figures (:class:`SectionFigure`, saved as
PNG + SVG and embedded like the runs' figures), optionally trusted HTML, and the numbers behind it
for ``report.json``. Sections come first on the page, after the list of runs that could not be
reported and before Table 1 and the runs themselves. Example: a study adds a table of mean ± CI
half-width per setting and a forest plot of paired differences::

    Section(
        "Study: reliability balancing",
        text="Corrected accuracy over 5 seeds; 95 % t-interval.",
        tables=[Table(["setting", "n", "accuracy"], [["rb on", 5, "71.2 ± 0.8"], ["rb off", 5, "69.9 ± 1.1"]])],
        figures=[SectionFigure("forest", forest_figure(...), caption="Paired differences, Holm-corrected.")],
        data={"comparisons": [...]},
    )
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grefel.core.io import atomic_path, write_json
from grefel.report import figures as F


@dataclass
class Table:
    """A table the template renders (cells are escaped). Float cells show ``digits`` decimals."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    title: str = ""
    note: str = ""
    digits: int = 2


@dataclass
class SectionFigure:
    """A matplotlib figure of a section: saved as ``figures/<section id>/<name>.png`` and ``.svg``."""

    name: str
    figure: Any  # matplotlib.figure.Figure, e.g. from grefel.report.figures
    caption: str = ""
    alt: str = ""


@dataclass
class Section:
    """A part of the page added by the caller (see the module docstring).

    ``id``: the HTML anchor and figure folder (default: from the title). ``html``: a trusted
    fragment inserted as it is, after the tables and figures; the caller escapes what it puts in.
    ``data``: JSON-able numbers, written to ``report.json`` under ``sections``.
    """

    title: str
    text: str = ""
    tables: Sequence[Table] = ()
    figures: Sequence[SectionFigure] = ()
    html: str = ""
    data: dict = field(default_factory=dict)
    id: str = ""


def slug(name: str) -> str:
    """A file- and anchor-safe form of ``name``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def unique_slugs(names: Sequence[str], taken: Sequence[str] = ()) -> list[str]:
    """One slug per name, made unique by appending ``-1`` as often as needed."""
    used, out = set(taken), []
    for name in names:
        s = slug(name)
        while s in used:
            s += "-1"
        used.add(s)
        out.append(s)
    return out


def section_contexts(sections: Sequence[Section], fig_root: Path) -> list[dict]:
    """What the template needs of each section; its figures are written under ``fig_root``."""
    from markupsafe import Markup

    ids = unique_slugs([s.id or s.title for s in sections], taken=("table1",))
    out = []
    for sec, sid in zip(sections, ids):
        figures = [
            {**F.save_figure(f.figure, fig_root / f"section-{sid}" / slug(f.name)), "caption": f.caption, "alt": f.alt}
            for f in sec.figures
        ]
        tables = [
            {
                "title": t.title,
                "note": t.note,
                "digits": t.digits,
                "columns": list(t.columns),
                "rows": [list(r) for r in t.rows],
            }
            for t in sec.tables
        ]
        out.append(
            {
                "id": f"section-{sid}",
                "title": sec.title,
                "text": sec.text,
                "tables": tables,
                "figures": figures,
                "html": Markup(sec.html),
                "data": sec.data,
            }
        )
    return out


def write_page(out: Path, context: dict) -> Path:
    """Write ``out/report.html`` and ``out/report.json`` (every number, figure paths relative to it)."""
    html_path = out / "report.html"
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(context), encoding="utf-8")
    doc = dict(context)
    doc["sections"] = [{k: v for k, v in s.items() if k != "html"} for s in context.get("sections", [])]
    write_json(out / "report.json", _jsonable(doc, out))
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
    env.filters["pct"] = lambda v, d=2: "–" if _missing(v) else f"{100 * v:.{d}f}"
    env.filters["num"] = lambda v, d=3: "–" if _missing(v) else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    env.filters["signed"] = lambda v, d=2: "–" if v is None else f"{v:+.{d}f}"
    return env.get_template("report.html.j2").render(**context)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


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
