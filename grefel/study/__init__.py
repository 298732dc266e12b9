"""`grefel study`: many `grefel train` runs (a grid of settings x seeds) and their statistics.

A study is a small TOML file (:mod:`grefel.study.spec`): the dataset, the seeds, the settings every
run shares and a grid over any `grefel train` setting. It expands to runs with stable names
(``sym20-rb_none-K10-s1``), each exactly a `grefel train` run followed by `grefel evaluate` on the
clean test split. :mod:`grefel.study.run` executes them on a local pool or as one Slurm job array
(submitit); :mod:`grefel.study.folder` keeps their state in the study folder; :mod:`grefel.study.stats`
turns the finished runs into per-setting means with confidence intervals and paired comparisons
against baselines (scipy.stats, statsmodels), :mod:`grefel.study.power` says what a number of seeds
can detect, and :mod:`grefel.study.adhoc` reads runs given to `grefel report` as an ad-hoc study
for the same statistics (:mod:`grefel.study.pipeline` evaluates, compares and reports them).
docs/study.md is the manual.
"""
