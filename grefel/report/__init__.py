"""`grefel report`: metrics, figures and the self-contained HTML page built from a predictions table.

Modules: :mod:`~grefel.report.predictions` (the file format `grefel evaluate` writes),
:mod:`~grefel.report.metrics` (numbers), :mod:`~grefel.report.figures` (seaborn figures),
:mod:`~grefel.report.compare` (several runs, Tables 6-8), :mod:`~grefel.report.paper` (the paper's
published numbers) and :mod:`~grefel.report.build` (the page). Entry point: ``build_report``.
"""


def build_report(*args, **kwargs):
    """See :func:`grefel.report.build.build_report` (imported lazily: matplotlib is slow to load)."""
    from grefel.report.build import build_report as _build

    return _build(*args, **kwargs)
