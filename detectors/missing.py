"""Missing-rate drift: has the share of missing values of a feature changed from the reference's?

Per feature, the reference has ``x1`` missing values out of ``n1`` rows and the window ``x2`` out of ``n2``;
the two-sided test of ``H0: rate_ref = rate_window`` is

* **Fisher's exact test** (conditional on the total ``t = x1 + x2``, ``x2 ~ Hypergeometric(N, t, n2)``; the
  two-sided p-value sums the probabilities of every outcome no more likely than the observed one, with SciPy's
  relative tolerance ``1 + 1e-7``: exactly ``scipy.stats.fisher_exact``) whenever the conditional support
  ``[max(0, t - n1), min(t, n2)]`` has at most :data:`EXACT_SUPPORT` points.  That covers every table with a
  small count, where the normal approximation is poor (missing rates near 0 are the common case: a feature
  that is never missing in the reference and suddenly is), at a cost of one vectorised log-pmf per support
  point;
* **the pooled two-proportion z-test** (``z = (p2 - p1) / sqrt(p (1 - p) (1/n1 + 1/n2))``, equal to
  ``scipy.stats.chi2_contingency(table, correction=False)``) otherwise.  A support above 10,000 points needs
  ``t``, ``N - t``, ``n1`` and ``n2`` all above 10,000, so every expected cell count is at least
  ``10^8 / N``: above 5 for any reference of up to 2 x 10^7 rows, where the approximation is accurate.

p-values are corrected across features (:mod:`detectors.multiple_testing`) and a feature drifts when its
adjusted p-value is below ``alpha`` **and** the effect reaches a floor on **Cohen's h**,
``h = |2 asin sqrt(p2) - 2 asin sqrt(p1)|``.  Why h and not an absolute difference: the variance-stabilising
arcsine makes h scale with the evidence a change carries at any base rate, so a jump from 0 % to 1 % missing
(h = 0.20: a broken upstream field) counts as much as 40 % to 50 % (h = 0.20), while an absolute floor of 0.02
would ignore the first.  The default floor 0.1 (half of Cohen's "small") lets 5 % -> 8 % pass (h = 0.12) and
keeps significant wobbles of a few tenths of a percent in huge windows quiet.  The window is
``insufficient`` only when no outcome (every row missing, or none) could reach ``alpha / F`` for any feature.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from detectors._arrays import FloatArray, IntArray
from detectors._verdict import PerFeatureVerdict
from detectors.errors import StatisticsError
from detectors.multiple_testing import Correction, adjust_p_values

__all__ = ["EXACT_SUPPORT", "MissingRateFeature", "MissingRateResult", "cohens_h", "missing_rate_drift",
           "two_proportion_p_values"]

#: Largest conditional support (outcomes of the hypergeometric) for which Fisher's exact test is used.
EXACT_SUPPORT: int = 10_001
#: SciPy's relative tolerance for "no more likely than the observed table" in ``fisher_exact``.
_RELATIVE_TOLERANCE: float = 1 + 1e-7


@dataclass(frozen=True)
class MissingRateFeature:
    """Missing-rate change of one feature (``p_adjusted`` NaN when the window was insufficient)."""

    name: str
    reference_rate: float
    current_rate: float
    p_value: float
    p_adjusted: float
    drifted: bool
    cohens_h: float = math.nan


@dataclass(frozen=True)
class MissingRateResult(PerFeatureVerdict):
    """Missing-rate drift of one window against the reference."""

    features: tuple[MissingRateFeature, ...]
    n_reference: int
    n_current: int
    alpha: float
    correction: str
    min_effect: float
    insufficient: bool
    reason: str = ""



def cohens_h(p1: npt.ArrayLike, p2: npt.ArrayLike) -> FloatArray:
    """Cohen's h, ``|2 asin sqrt(p2) - 2 asin sqrt(p1)|``, elementwise.

    Examples
    --------
    >>> from detectors.missing import cohens_h
    >>> round(float(cohens_h(0.0, 0.01)), 4), round(float(cohens_h(0.05, 0.20)), 4)
    (0.2003, 0.4763)
    """
    a = np.asarray(p1, dtype=np.float64)
    b = np.asarray(p2, dtype=np.float64)
    out: FloatArray = np.abs(2.0 * np.arcsin(np.sqrt(b)) - 2.0 * np.arcsin(np.sqrt(a)))
    return out


def _fisher(x2: IntArray, n1: IntArray, n2: IntArray, t: IntArray) -> FloatArray:
    """Two-sided Fisher p-values of tables ``[[t - x2, n1 - t + x2], [x2, n2 - x2]]``, all at once; (F,)."""
    lo = np.maximum(0, t - n1)  # (F,) smallest possible x2
    hi = np.minimum(t, n2)  # (F,)
    width = int((hi - lo).max()) + 1
    k = lo[:, None] + np.arange(width)  # (F, S) support grid, masked beyond hi
    inside = k <= hi[:, None]
    total = n1 + n2
    # log hypergeometric pmf: C(t, k) C(N - t, n2 - k) / C(N, n2)
    def log_c(a: FloatArray, b: FloatArray) -> FloatArray:
        out: FloatArray = special.gammaln(a + 1) - special.gammaln(b + 1) - special.gammaln(a - b + 1)
        return out

    kk = np.where(inside, k, lo[:, None]).astype(np.float64)
    tt, nn2, nn = t[:, None].astype(np.float64), n2[:, None].astype(np.float64), total[:, None].astype(np.float64)
    log_pmf = log_c(tt, kk) + log_c(nn - tt, nn2 - kk) - log_c(nn, nn2)  # (F, S)
    pmf = np.where(inside, np.exp(log_pmf), 0.0)
    observed = pmf[np.arange(x2.size), x2 - lo]  # (F,)
    p: FloatArray = np.where(pmf <= observed[:, None] * _RELATIVE_TOLERANCE, pmf, 0.0).sum(axis=1)
    return np.minimum(p, 1.0)


def two_proportion_p_values(missing_reference: npt.ArrayLike, n_reference: npt.ArrayLike,
                            missing_current: npt.ArrayLike, n_current: npt.ArrayLike) -> FloatArray:
    """Two-sided p-values of "equal missing rates", per feature (Fisher exact or pooled z; module docstring).

    Parameters
    ----------
    missing_reference, n_reference, missing_current, n_current : array_like of int, shape (F,) or scalars
        Missing counts and row counts (``0 <= missing <= n``, ``n >= 1``).

    Returns
    -------
    ndarray, shape (F,)

    Examples
    --------
    >>> from scipy import stats
    >>> from detectors.missing import two_proportion_p_values
    >>> p = two_proportion_p_values([50], [1000], [30], [200])
    >>> bool(abs(p[0] - stats.fisher_exact([[950, 50], [170, 30]]).pvalue) < 1e-12)
    True
    """
    x1, n1, x2, n2 = (np.atleast_1d(np.asarray(v)).astype(np.int64)
                      for v in (missing_reference, n_reference, missing_current, n_current))
    x1, n1, x2, n2 = np.broadcast_arrays(x1, n1, x2, n2)
    if (n1 < 1).any() or (n2 < 1).any() or (x1 < 0).any() or (x2 < 0).any() or (x1 > n1).any() or (x2 > n2).any():
        raise StatisticsError("missing counts must be in [0, n] and row counts >= 1")
    t = x1 + x2
    support = np.minimum(t, n2) - np.maximum(0, t - n1) + 1  # (F,)
    exact = support <= EXACT_SUPPORT
    p = np.ones(x1.shape, dtype=np.float64)
    if exact.any():
        p[exact] = _fisher(x2[exact], n1[exact], n2[exact], t[exact])
    big = ~exact
    if big.any():
        pooled = t[big] / (n1[big] + n2[big])
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1[big] + 1 / n2[big]))
        z = (x2[big] / n2[big] - x1[big] / n1[big]) / se
        p[big] = 2.0 * stats.norm.sf(np.abs(z))
    return p


@functools.lru_cache(maxsize=64)
def _smallest_p_values(missing_reference: tuple[int, ...], n_reference: int, n_current: int) -> FloatArray:
    """The smallest p-value any window of ``n_current`` rows could give per feature: every row missing, or none
    (the same for every window of one profile and size, and an exact test over up to ``n_current + 1`` tables:
    computed once); read-only (F,)."""
    x1 = np.array(missing_reference, dtype=np.int64)
    smallest = np.minimum(two_proportion_p_values(x1, n_reference, n_current, n_current),
                          two_proportion_p_values(x1, n_reference, 0, n_current))
    smallest.setflags(write=False)
    return smallest


def missing_rate_drift(
    feature_names: Sequence[str],
    missing_reference: npt.ArrayLike,
    n_reference: int,
    missing_current: npt.ArrayLike,
    n_current: int,
    alpha: float = 0.01,
    correction: Correction = "bonferroni",
    min_effect: float = 0.1,
) -> MissingRateResult:
    """Test every feature's missing rate in a window against the reference's.

    ``drifted_j = (p_adjusted_j < alpha) and (cohens_h_j >= min_effect)``; see the module docstring for the
    test, the correction and why the floor is on Cohen's h.

    Parameters
    ----------
    feature_names : sequence of str
        F names.
    missing_reference : array_like of int, shape (F,)
        Missing values per feature among the ``n_reference`` reference rows
        (``ReferenceSample.missing_counts`` and ``ReferenceSample.n_rows``).
    missing_current : array_like of int, shape (F,)
        Missing values per feature among the window's ``n_current`` rows.
    alpha, correction
        Significance level and multiple-testing correction across the F features.
    min_effect : float, optional
        Floor on Cohen's h (default 0.1).

    Returns
    -------
    MissingRateResult

    Examples
    --------
    >>> from detectors.missing import missing_rate_drift
    >>> res = missing_rate_drift(["a", "b"], [500, 0], 10_000, [100, 0], 500)  # a: 5 % -> 20 %
    >>> res.drifted_features, round(res.features[0].current_rate, 2)
    (('a',), 0.2)
    """
    names = tuple(feature_names)
    x1 = np.asarray(missing_reference, dtype=np.int64)
    x2 = np.asarray(missing_current, dtype=np.int64)
    if x1.shape != (len(names),) or x2.shape != (len(names),):
        raise StatisticsError(f"missing counts must have one entry per feature ({len(names)}); "
                              f"got {x1.shape} and {x2.shape}")
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha!r}")
    if not min_effect >= 0.0:
        raise StatisticsError(f"min_effect must be >= 0; got {min_effect!r}")
    if correction not in get_args(Correction):
        raise StatisticsError(f"correction must be one of {get_args(Correction)}; got {correction!r}")
    if n_reference < 1:
        raise StatisticsError(f"n_reference must be >= 1; got {n_reference!r}")
    rate1 = x1 / n_reference
    if n_current < 1:
        nan = math.nan
        features = tuple(MissingRateFeature(n, float(r), nan, nan, nan, False) for n, r in zip(names, rate1,
                                                                                               strict=True))
        return MissingRateResult(features, int(n_reference), 0, float(alpha), correction, float(min_effect), True,
                                 "the window has no rows")
    rate2 = x2 / n_current
    p = two_proportion_p_values(x1, n_reference, x2, n_current)  # (F,)
    h = cohens_h(rate1, rate2)
    # Most extreme outcomes: every window row missing, or none.
    smallest = _smallest_p_values(tuple(x1.tolist()), int(n_reference), int(n_current))  # (F,)
    level = alpha / len(names)
    insufficient = bool((smallest > level).all())
    reason = ""
    if insufficient:
        reason = (f"with {n_current} row(s) the smallest p-value any missing-rate test could give is "
                  f"{float(smallest.min()):.2g}, above alpha / {len(names)} = {level:.2g}")
    adjusted = np.full(len(names), np.nan) if insufficient else adjust_p_values(p, correction)
    with np.errstate(invalid="ignore"):
        drifted = (adjusted < alpha) & (h >= min_effect)
    features = tuple(MissingRateFeature(n, float(r1), float(r2), float(pv), float(pa), bool(d), float(hh))
                     for n, r1, r2, pv, pa, d, hh in zip(names, rate1, rate2, p, adjusted, drifted, h, strict=True))
    return MissingRateResult(features, int(n_reference), int(n_current), float(alpha), correction,
                             float(min_effect), insufficient, reason)
