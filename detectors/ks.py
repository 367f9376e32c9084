"""Two-sample Kolmogorov–Smirnov test, vectorised over the columns (features) of a window.

For each feature ``j`` with reference sample ``a`` (size n) and current sample ``b`` (size m),

    D_j = max_v |F_a(v) - F_b(v)|,   F_a(v) = #{a_i <= v} / n,

the maximum running over all pooled values ``v`` (exactly what ``scipy.stats.ks_2samp`` evaluates,
so ties are handled identically).  The p-value follows ``ks_2samp(method='auto')``: exact when
``max(n, m) <= 10000`` (with SciPy's fallback to the asymptotic law when the exact computation is
numerically unreliable), otherwise ``kstwo.sf(D, round(n*m/(n+m)))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from detectors._arrays import BoolArray, FloatArray, float_matrix, readonly, require_finite
from detectors.errors import StatisticsError
from detectors.smirnov import smirnov_sf_exact

__all__ = ["MAX_EXACT_N", "KSResult", "ks_2samp_columns", "sort_reference"]

#: Largest sample size for which the exact p-value is used (SciPy's ``MAX_AUTO_N``).
MAX_EXACT_N: int = 10000


@dataclass(frozen=True, eq=False)
class KSResult:
    """Per-feature two-sample KS statistics and p-values.

    Attributes
    ----------
    statistic : ndarray, shape (F,)
        Two-sided statistic ``D`` per feature.
    p_value : ndarray, shape (F,)
        Two-sided p-value per feature.
    method : str
        ``"exact"``, ``"asymp"``, or ``"exact+asymp"`` when some features fell back from the exact
        to the asymptotic distribution.
    """

    statistic: FloatArray
    p_value: FloatArray
    method: str


def sort_reference(x: npt.ArrayLike) -> FloatArray:
    """Return a C-contiguous float64 copy of ``x`` (n, F) sorted along axis 0.

    Parameters
    ----------
    x : array_like, shape (n, F)
        Reference sample, one column per feature.

    Returns
    -------
    ndarray, shape (n, F)
        Each column sorted ascending; the input is not modified.

    Examples
    --------
    >>> from detectors.ks import sort_reference
    >>> sort_reference([[3.0, 1.0], [1.0, 2.0], [2.0, 0.0]])
    array([[1., 0.],
           [2., 1.],
           [3., 2.]])
    """
    arr = float_matrix(x, "reference")
    return np.ascontiguousarray(np.sort(arr, axis=0))


def _statistic(ref_sorted: FloatArray, cur: FloatArray) -> FloatArray:
    """Two-sided KS statistic per column, all columns in one pass; returns (F,)."""
    n, m = ref_sorted.shape[0], cur.shape[0]
    # Pool both samples per feature, feature-major so each feature is one contiguous row.
    cur_sorted = np.sort(np.ascontiguousarray(cur.T), axis=1)  # (F, m)
    pooled = np.concatenate([ref_sorted.T, cur_sorted], axis=1)  # (F, n+m): two sorted runs
    # A stable sort of two sorted runs is a single merge (timsort); reference entries win ties.
    order = np.argsort(pooled, axis=1, kind="stable")  # (F, n+m)
    values = np.take_along_axis(pooled, order, axis=1)  # (F, n+m) sorted pooled values
    count_ref = np.cumsum(order < n, axis=1)  # (F, n+m): #{a_i <= v} up to this position
    count_cur = np.arange(1, n + m + 1) - count_ref  # (F, n+m): #{b_i <= v}
    # ECDFs are only defined after *all* copies of a tied value: evaluate at the last of each run.
    run_end: BoolArray = np.ones(values.shape, dtype=np.bool_)
    np.not_equal(values[:, 1:], values[:, :-1], out=run_end[:, :-1])
    # Same float operations as scipy: searchsorted(...)/n1 - searchsorted(...)/n2.
    diff = count_ref / n - count_cur / m  # (F, n+m)
    result: FloatArray = np.max(np.abs(diff), axis=1, where=run_end, initial=0.0)  # (F,)
    return result


def _asymptotic_p(d: FloatArray, n: int, m: int) -> FloatArray:
    """Asymptotic two-sided p-value ``kstwo.sf(D, round(n*m/(n+m)))`` as in SciPy; shape of ``d``."""
    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)  # effective sample size
    p: FloatArray = np.clip(np.asarray(stats.kstwo.sf(d, np.round(en)), dtype=np.float64), 0.0, 1.0)
    return p


def ks_2samp_columns(reference_sorted: npt.ArrayLike, current: npt.ArrayLike) -> KSResult:
    """Two-sided two-sample KS test of every feature of ``current`` against the reference.

    Equivalent to ``scipy.stats.ks_2samp(reference_sorted[:, j], current[:, j])`` for each column
    ``j`` (statistic identical, p-value within 1e-9), but the statistics of all features are
    computed in one vectorised pass.

    Parameters
    ----------
    reference_sorted : array_like, shape (n, F)
        Reference sample, each column already sorted ascending (see :func:`sort_reference`).
    current : array_like, shape (m, F)
        Current window, unsorted.  Both arrays must be finite.

    Returns
    -------
    KSResult
        ``statistic`` and ``p_value`` of shape (F,).  In the exact regime the statistic is snapped
        to the lattice ``h / lcm(n, m)`` exactly as SciPy reports it.

    Raises
    ------
    StatisticsError
        On shape mismatch, empty samples, non-finite values or an unsorted reference.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.ks import ks_2samp_columns
    >>> ref = np.array([[1.0], [2.0], [3.0], [4.0]])
    >>> res = ks_2samp_columns(ref, np.array([[3.5], [4.5], [5.5], [6.5]]))
    >>> res.statistic, res.method
    (array([0.75]), 'exact')
    >>> round(float(res.p_value[0]), 4)
    0.2286
    """
    ref = float_matrix(reference_sorted, "reference_sorted")
    cur = float_matrix(current, "current")
    n, n_features = ref.shape
    m = cur.shape[0]
    if cur.shape[1] != n_features:
        raise StatisticsError(
            f"current has {cur.shape[1]} features but reference_sorted has {n_features}"
        )
    require_finite(ref, "reference_sorted")
    require_finite(cur, "current")
    unsorted = np.flatnonzero(np.any(ref[1:] < ref[:-1], axis=0))
    if unsorted.size:
        raise StatisticsError(
            f"reference_sorted is not sorted along axis 0 in column(s) {unsorted[:5].tolist()}; "
            "use sort_reference()"
        )

    d = _statistic(ref, cur)  # (F,)
    if max(n, m) > MAX_EXACT_N:
        return KSResult(readonly(d), readonly(_asymptotic_p(d, n, m)), "asymp")

    # Exact regime: every attainable D is h / lcm; SciPy reports the snapped value.
    lcm = (n // math.gcd(n, m)) * m
    h = np.round(d * lcm).astype(np.int64)  # (F,)
    d = h / lcm
    p = np.full(n_features, np.nan)
    # The exact law depends only on (n, m, h): evaluate once per distinct h (cheap for ties).
    # This loop is over distinct lattice values for the p-value only, not over statistics.
    for h_value in np.unique(h):
        prob = smirnov_sf_exact(n, m, int(h_value))
        if prob is not None:
            p[h == h_value] = prob
    fallback = np.isnan(p)
    method = "exact"
    if fallback.any():  # SciPy: "Exact calculation unsuccessful. Switching to method=asymp"
        p[fallback] = _asymptotic_p(d[fallback], n, m)
        method = "exact+asymp"
    return KSResult(readonly(d), readonly(np.clip(p, 0.0, 1.0)), method)
