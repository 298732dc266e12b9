"""`grefel report`: metrics, figures and the self-contained HTML page built from predictions files.

The report is a pure consumer of the predictions files `grefel evaluate` writes: nothing here
loads a checkpoint or runs a model (:func:`grefel.report.pipeline.evaluate_and_report` evaluates first
where needed). Modules: :mod:`~grefel.evaluation.predictions` (the file format),
:mod:`~grefel.evaluation.metrics` (numbers), :mod:`~grefel.report.figures` (seaborn figures),
:mod:`~grefel.report.compare` (several runs, Tables 6-8), :mod:`~grefel.report.paper` (the paper's
published numbers), :mod:`~grefel.report.page` (sections a caller adds, the template, writing the
page) and :mod:`~grefel.report.build` (the page of a list of runs). Entry point: ``build_report``.
"""
