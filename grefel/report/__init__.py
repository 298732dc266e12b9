"""`grefel report`: metrics, figures and the self-contained HTML page built from predictions files.

The report is a pure consumer of the predictions files `grefel evaluate` writes: nothing here
loads a checkpoint or runs a model (:func:`grefel.study.pipeline.evaluate_and_report`, one layer
up, evaluates first where needed and adds the comparison of several runs as an ad-hoc study).
Modules: :mod:`~grefel.evaluation.predictions` (the file format), :mod:`~grefel.evaluation.metrics`
(numbers), :mod:`~grefel.report.figures` (seaborn figures), :mod:`~grefel.report.paper` (the
paper's published numbers), :mod:`~grefel.report.page` (sections a caller adds, the template,
writing the page) and :mod:`~grefel.report.build` (the page of a list of runs). Entry point:
``build_report``.
"""
