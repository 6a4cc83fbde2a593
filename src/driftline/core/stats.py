"""The small amount of statistics the distribution-drift tests need.

driftline must not depend on scipy (a large install for a few formulas), so
this module carries its own:

* :func:`chi2_sf`, the p-value of a chi-square statistic, from the
  regularized upper incomplete gamma function (:func:`upper_gamma_q`);
* :func:`chi2_homogeneity`, the two-sample chi-square test statistic that
  asks "could these two histograms come from one distribution?";
* :func:`psi`, the population stability index, the effect size that says
  whether a significant difference is also large enough to matter;
* :func:`benjamini_hochberg`, the multiple-testing control that keeps 200
  features from producing a steady trickle of false alarms.

>>> round(chi2_sf(3.841458820694124, 1), 12)  # the textbook 5 % point, one degree of freedom
0.05
>>> stat, df = chi2_homogeneity([50, 30, 20], [20, 30, 50])
>>> round(stat, 2), df, chi2_sf(stat, df) < 0.001
(25.71, 2, True)
>>> round(psi([50, 30, 20], [20, 30, 50]), 3)
0.55
>>> benjamini_hochberg([0.0001, 0.02, 0.04, 0.5], q=0.05)
[True, True, False, False]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PSI_EPSILON = 1e-4
"""Floor for a bin's proportion in :func:`psi`.

An empty bin would make the logarithm infinite. A floor of 0.01 % means a
bin that is empty on one side and holds 10 % on the other contributes about
0.7: clearly drift, yet finite and comparable across features.
"""

_EPS = 1e-16  # relative convergence target of the gamma series and fraction
_FINITE_SUM_MAX_DF = 60  # up to here the finite sum is as fast as the series
_FINITE_SUM_MAX_Z = 700.0  # exp(-700) is still a normal float
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_TINY = 1e-300  # guards the continued fraction against division by zero
_MAX_ITER = 100_000


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution: ``P(X >= x)``.

    This is the p-value of a chi-square test statistic ``x`` with ``df``
    degrees of freedom. It equals the regularized upper incomplete gamma
    function ``Q(df / 2, x / 2)``. Because ``df`` is a whole number, ``Q`` is
    a finite sum: the tail of a Poisson distribution for even ``df``, an
    ``erfc`` plus a similar sum for odd ``df``. That sum has ``df / 2``
    positive terms, so it is exact to a few ulps and, for the 10 or so
    degrees of freedom of a binned drift test, several times faster than
    the general method. Beyond 60 degrees of freedom, or where ``exp(-x / 2)``
    would underflow, the classic general method takes over: the power series
    for ``P = 1 - Q`` when ``x / 2 < df / 2 + 1`` (it converges fast there,
    and ``Q`` is not small, so ``1 - P`` loses nothing) and Lentz's continued
    fraction for ``Q`` directly in the tail (where ``Q`` is tiny and must
    keep its relative precision). Both are accurate to about 1e-13 relative.

    Parameters
    ----------
    x
        The statistic. Zero or negative gives 1.
    df
        Degrees of freedom, at least 1.

    Examples
    --------
    With two degrees of freedom the survival function is ``exp(-x / 2)``:

    >>> import math
    >>> abs(chi2_sf(10.0, 2) - math.exp(-5.0)) < 1e-15
    True

    The 0.1 % critical value for 9 degrees of freedom (10 bins) is 27.877:

    >>> round(chi2_sf(27.877, 9), 6)
    0.001
    >>> chi2_sf(0.0, 3), chi2_sf(math.inf, 3)
    (1.0, 0.0)
    """
    if df < 1:
        raise ValueError(f"chi2_sf: degrees of freedom must be at least 1, got {df}")
    if math.isnan(x):
        return math.nan
    if x == math.inf:
        return 0.0
    z = 0.5 * x
    if z <= 0.0:  # also a positive x so small that halving it underflows
        return 1.0
    if df <= _FINITE_SUM_MAX_DF and z < _FINITE_SUM_MAX_Z:
        return _upper_gamma_finite_sum(df, z)
    return upper_gamma_q(0.5 * df, z)


def _upper_gamma_finite_sum(df: int, z: float) -> float:
    """``Q(df / 2, z)`` for a whole ``df``, a finite sum.

    ``Q(a + 1, z) = Q(a, z) + z**a e**-z / Gamma(a + 1)`` unrolls to:

    Even df: ``Q(1, z) = e**-z``, so ``Q = e**-z * sum(z**i / i!, i < df / 2)``.
    Odd df: ``Q(1/2, z) = erfc(sqrt(z))``, then terms ``z**(i + 1/2) e**-z / Gamma(i + 3/2)``.
    """
    if df % 2 == 0:
        term = math.exp(-z)
        total = term
        for i in range(1, df // 2):
            term *= z / i
            total += term
        return min(total, 1.0)  # a sum near 1 may round one ulp above
    total = math.erfc(math.sqrt(z))
    term = math.exp(-z) * math.sqrt(z) * _TWO_OVER_SQRT_PI  # Gamma(3/2) = sqrt(pi) / 2
    for i in range(df // 2):
        total += term
        term *= z / (i + 1.5)
    return min(total, 1.0)


def upper_gamma_q(a: float, z: float) -> float:
    """Regularized upper incomplete gamma ``Q(a, z)`` for any ``a > 0``, ``z > 0``.

    Examples
    --------
    >>> import math
    >>> abs(upper_gamma_q(1.0, 3.0) - math.exp(-3.0)) < 1e-15
    True
    """
    if z < a + 1.0:
        return max(0.0, 1.0 - _lower_gamma_series(a, z))
    return _upper_gamma_fraction(a, z)


def _log_prefactor(a: float, z: float) -> float:
    """``log(z**a * exp(-z) / Gamma(a))``, shared by the series and the fraction."""
    return a * math.log(z) - z - math.lgamma(a)


def _lower_gamma_series(a: float, z: float) -> float:
    """Regularized lower incomplete gamma ``P(a, z)`` by its power series."""
    term = 1.0 / a
    total = term
    ap = a
    for _ in range(_MAX_ITER):  # every term is positive: no abs() needed
        ap += 1.0
        term *= z / ap
        total += term
        if term < total * _EPS:
            break
    return total * math.exp(_log_prefactor(a, z))


def _upper_gamma_fraction(a: float, z: float) -> float:
    """Regularized upper incomplete gamma ``Q(a, z)`` by Lentz's continued fraction."""
    b = z + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(_log_prefactor(a, z)) * h


def chi2_homogeneity(
    reference: Sequence[float] | np.ndarray, window: Sequence[float] | np.ndarray
) -> tuple[float, int]:
    """Pearson's chi-square statistic for two histograms over the same bins.

    The reference is itself a sample, not the true distribution, so the
    right question is not "does the window fit the reference proportions"
    (a goodness-of-fit test that would blame the window for the reference's
    own sampling noise) but "could both samples come from one distribution"
    — the 2 x k contingency-table test of homogeneity. Bins empty on both
    sides carry no information and are dropped, so the degrees of freedom
    are the number of occupied bins less one. A bin empty in the reference
    only (a category never seen before) is fine: its expected count comes
    from the pooled sample.

    Parameters
    ----------
    reference, window
        Counts per bin, same length.

    Returns
    -------
    statistic, df
        ``df`` is 0 when fewer than two bins are occupied: nothing to test.

    Examples
    --------
    >>> chi2_homogeneity([10, 10], [10, 10])
    (0.0, 1)
    >>> chi2_homogeneity([10, 0, 0], [5, 0, 0])
    (0.0, 0)
    """
    r = np.asarray(reference, dtype=float)
    w = np.asarray(window, dtype=float)
    if r.shape != w.shape:
        raise ValueError(
            f"chi2_homogeneity: {r.shape[0]} reference bins but {w.shape[0]} window bins"
        )
    n_r = r.sum()
    n_w = w.sum()
    total = r + w
    occupied = total > 0
    df = int(occupied.sum()) - 1
    if df < 1 or n_r == 0 or n_w == 0:
        return 0.0, max(df, 0)
    # Sum over both rows of (observed - expected)^2 / expected, in one term per bin.
    num = (r[occupied] * n_w - w[occupied] * n_r) ** 2
    statistic = float((num / (n_r * n_w * total[occupied])).sum())
    return statistic, df


def psi(
    expected: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    eps: float = PSI_EPSILON,
) -> float:
    """Population stability index of ``actual`` against ``expected``.

    ``PSI = sum((a - e) * ln(a / e))`` over bins, with ``e`` and ``a`` the
    proportions (counts are normalised, so either may be given). It is a
    symmetrised Kullback-Leibler divergence: 0 for identical histograms,
    about 0.1 for a shift worth a look and 0.2 or more for one that matters
    (the usual credit-scoring rule of thumb, and driftline's default
    threshold). Unlike a p-value it does not grow with the sample size, which
    is why drift needs both. Proportions below ``eps`` are raised to it so
    that an empty bin gives a large but finite contribution.

    Examples
    --------
    >>> psi([25, 25, 25, 25], [25, 25, 25, 25])
    0.0
    >>> round(psi([0.5, 0.5], [0.6, 0.4]), 4)
    0.0405

    A bin that empties (or fills from nothing) weighs heavily:

    >>> round(psi([90, 10], [100, 0]), 3)
    0.701
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"psi: {e.shape[0]} expected bins but {a.shape[0]} actual bins")
    e_total = e.sum()
    a_total = a.sum()
    if e_total <= 0 or a_total <= 0:
        raise ValueError("psi: both histograms need a positive total")
    e = np.maximum(e / e_total, eps)
    a = np.maximum(a / a_total, eps)
    return float(((a - e) * np.log(a / e)).sum())


def benjamini_hochberg(p_values: Sequence[float], q: float) -> list[bool]:
    """Which hypotheses to reject so the false discovery rate stays at most ``q``.

    Testing 200 features each at level ``q`` would reject about ``200 q`` of
    them on a perfectly stable stream. The Benjamini-Hochberg step-up rule
    sorts the p-values, finds the largest ``k`` with
    ``p_(k) <= k q / m``, and rejects the ``k`` smallest. When nothing has
    drifted this bounds the chance of *any* false alarm by ``q``; when some
    features have drifted it stays far more sensitive than Bonferroni's
    ``q / m``. Ties and order do not matter: the answer is per input
    position.

    Examples
    --------
    Bonferroni (reject below 0.05 / 4) would keep only the first of these;
    BH sees that three small p-values out of four are no coincidence:

    >>> p = [0.01, 0.03, 0.02, 0.9]
    >>> [x <= 0.05 / len(p) for x in p]
    [True, False, False, False]
    >>> benjamini_hochberg(p, q=0.05)
    [True, True, True, False]
    >>> benjamini_hochberg([], q=0.05)
    []
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    cutoff = -1
    for rank, i in enumerate(order, start=1):
        if p_values[i] <= rank * q / m:
            cutoff = rank
    rejected = [False] * m
    for i in order[: max(cutoff, 0)]:
        rejected[i] = True
    return rejected
