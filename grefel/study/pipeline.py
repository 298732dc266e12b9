"""`grefel report --ckpt`: evaluate checkpoints, read the runs as an ad-hoc study, report them.

:mod:`grefel.report` reads predictions files only; whether a checkpoint must be evaluated first is
decided here (by :func:`grefel.evaluation.evaluate.evaluate`, which reuses an up-to-date predictions
file). Two runs or more are compared as an ad-hoc study (:mod:`grefel.study.adhoc`), shown by the
study's own sections (:func:`grefel.study.report.study_sections`) with the same statistics.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from grefel.core.errors import GrefelError
from grefel.evaluation.evaluate import check_batch_size, evaluate
from grefel.evaluation.predictions import read_predictions
from grefel.report.build import ReportRun, build_report, check_report_folder, check_report_options
from grefel.study.adhoc import summarize_runs
from grefel.study.report import study_sections


def run_name(source: str | os.PathLike) -> str:
    """``<run folder>/<checkpoint stem>`` for ``runs/k10/best.pt``; the stem for a predictions file."""
    p = Path(source)
    if p.suffix == ".parquet":
        return p.stem
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem


def predictions_for(source: str | os.PathLike, **evaluate_options) -> Path:
    """The predictions file of ``source``: itself for a ``.parquet`` file, else the checkpoint's,
    evaluated now when it is missing or stale (``evaluate_options``: see
    :func:`grefel.evaluation.evaluate.evaluate`)."""
    source = Path(source)
    if source.suffix == ".parquet":
        if not source.is_file():
            raise GrefelError(f"predictions file {source} not found: write it with `grefel evaluate`")
        return source

    return evaluate(source, **evaluate_options)


def evaluate_and_report(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    split: str = "test",
    label_set: str | None = None,
    dataset: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | None = None,
    amp: bool | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
    **report_options,
) -> Path:
    """Report on checkpoints and predictions files; return the path of ``report.html``.

    Each checkpoint is evaluated first when the predictions beside it are missing or stale. A
    source that cannot be used (missing, truncated, for another class set) becomes one line on the
    page and in ``log``; the others are reported. Two runs or more are compared as an ad-hoc study
    (:func:`comparison_sections`). ``out`` defaults to ``<folder of the first source>/report``.
    ``report_options`` (samples, n_changed, tsne_points, seed, sections, title) go to
    :func:`grefel.report.build.build_report`.
    """

    if not sources:
        raise GrefelError("no run given: name one or more checkpoints or predictions files")
    check_batch_size(batch_size)
    check_report_options(**report_options)
    out = Path(out) if out is not None else Path(sources[0]).parent / "report"
    fresh = not out.exists()
    check_report_folder(out, sources)  # before any evaluation: an unusable folder fails now, in one line
    log = log or (lambda s: None)
    options = {"split": split, "label_set": label_set, "dataset": dataset, "data_root": data_root}
    options.update(batch_size=batch_size, device=device, amp=amp, show_progress=show_progress)
    try:
        runs, problems = _load_runs(sources, options, log)
        sections, more = comparison_sections(runs, log)
        report_options["sections"] = [*report_options.get("sections", ()), *sections]
        return build_report(runs, out, problems=problems + more, log=log, **report_options)
    except BaseException:
        if fresh:
            with contextlib.suppress(OSError):
                out.rmdir()  # no report: leave no empty folder behind
        raise


def _load_runs(sources, evaluate_options: dict, log: Callable[[str], None]):
    """Predictions of every source that can be used, and one line for each that cannot."""

    runs, problems = [], []
    for src in sources:
        try:
            pred = read_predictions(predictions_for(src, **evaluate_options))
        except GrefelError as e:
            problems.append(f"{src}: {e}")
            log(f"skipped {src}: {e}")
            continue
        runs.append(ReportRun(pred, run_name(src), str(src)))
    return runs, problems


def comparison_sections(runs: Sequence[ReportRun], log: Callable[[str], None] | None = None) -> tuple[list, list[str]]:
    """The page's comparison of ``runs`` (two or more) as an ad-hoc study: the study's sections and
    one line per run the comparison leaves out; nothing for one run."""
    if len(runs) < 2:
        return [], []
    summary = summarize_runs([(r.name, r.predictions.path) for r in runs])
    axes = ", ".join(a["name"] for a in summary["axes"]) or "none"
    (log or (lambda s: None))(f"comparing {len(runs)} runs as an ad-hoc study: axes {axes}, seeds {summary['seeds']}")
    return study_sections(summary), summary["problems"]
