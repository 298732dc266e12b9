"""How many seeds a comparison needs, and what it can detect: statsmodels' power of the paired t-test.

A comparison of a study is a paired t-test across seeds on the differences d_s (value minus
baseline at seed s). With n seeds and a standard deviation sd of those differences:

* the **minimum detectable effect** (MDE) is the true mean difference the two-sided test at alpha
  finds with the given power, ``effect_size x sd``: the effect size (Cohen's d of the differences)
  at which :class:`statsmodels.stats.power.TTestPower`'s power (noncentral t) equals the power
  asked for, found with ``scipy.optimize.brentq``. The two tails are summed separately because
  scipy's noncentral t returns NaN for the negligible far tail at a few (df, noncentrality), which
  makes statsmodels' two-sided power NaN there and its ``solve_power`` stop short of the root (at
  61 % power for 3 seeds and alpha 0.05 / 3);
* the **95 % CI half-width** is ``t(0.975, n - 1) x sd / sqrt(n)`` (``scipy.stats.t``): the
  number of seeds a chosen half-width needs is the smallest n that reaches it at that sd. The
  observed sd of a finished study varies around the true one, so its interval does too.

Units are the caller's (points of accuracy, or fractions): an MDE is in the unit of ``sd``.
"""

from __future__ import annotations

import math

import numpy as np

from grefel.core.errors import GrefelError
from grefel.study.spec import MAX_SEEDS  # the search for a half-width stops at a study's largest

POWER = 0.8


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float | None:
    """The smallest true mean paired difference a two-sided paired t-test at ``alpha`` detects with
    probability ``power`` from ``n`` seeds whose differences have standard deviation ``sd`` (None
    below 2 seeds, where the test does not exist)."""
    from scipy.optimize import brentq  # lazy: scipy takes a second to import
    from statsmodels.stats.power import TTestPower  # lazy: statsmodels takes a second to import

    if n < 2 or sd is None:
        return None
    test = TTestPower()

    def short_of(d: float) -> float:
        """The two-sided power at effect size d (each tail at alpha / 2), less the power asked for."""
        upper = float(test.power(effect_size=d, nobs=n, alpha=alpha / 2, alternative="larger"))
        lower = float(test.power(effect_size=-d, nobs=n, alpha=alpha / 2, alternative="larger"))
        # scipy's noncentral t gives NaN deep in the far tail (below 1e-15) for a few (df, nc): count it 0
        return upper + (0.0 if math.isnan(lower) else lower) - power

    top = 1.0
    while short_of(top) < 0:
        top *= 2
    return float(brentq(short_of, 0.0, top, xtol=1e-12)) * float(sd)


def ci_half_width(sd: float, n: int, confidence: float = 0.95) -> float | None:
    """Half-width of the t-interval of a mean difference over ``n`` seeds at standard deviation ``sd``."""
    from scipy import stats  # lazy: scipy.stats takes a second to import

    if n < 2:
        return None
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))


def seeds_for_half_width(sd: float, half_width: float, confidence: float = 0.95) -> int | None:
    """The fewest seeds (at least 2) whose t-interval at standard deviation ``sd`` is at most
    ``half_width`` wide on each side; None when more than :data:`MAX_SEEDS` would be needed."""
    from scipy import stats  # lazy: scipy.stats takes a second to import

    if not half_width > 0:
        raise GrefelError(f"the CI half-width must be above 0 (got {half_width})")
    n = np.arange(2, MAX_SEEDS + 1)
    reached = np.flatnonzero(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n) <= half_width)
    return int(n[reached[0]]) if len(reached) else None
