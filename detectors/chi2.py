"""Pearson chi-squared tests of category counts, with small-count pooling.

Two tests, each for many count vectors (one per categorical feature) at once and for one vector:

* **homogeneity** (:func:`chi2_homogeneity_rows`, :func:`chi2_homogeneity`): reference counts and
  current counts as the two rows of a 2 x K contingency table.  This is the drift test: both samples
  are noisy.
* **goodness of fit** (:func:`chi2_goodness_of_fit_rows`, :func:`chi2_goodness_of_fit`): current counts
  against probabilities taken as exact.  Used only when a reference kept proportions but no counts
  (profiles written before counts were stored).  Estimated from ``n`` reference rows, a share ``p``
  differs from a window's share by ``p (1 - p) (1/m + 1/n)`` in variance, not ``p (1 - p) / m``, so on
  undrifted data the goodness-of-fit statistic is ~``(1 + m/n)`` times a chi-squared variable and
  rejects more often than ``alpha``; the homogeneity test has the right level.

Both pool small expected counts with the same rules (see :func:`chi2_goodness_of_fit`): categories
whose expected count is below ``min_expected`` (in either row, for homogeneity) form one pooled bin,
and a pooled bin still below ``min_expected`` absorbs the remaining category of smallest expected count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from detectors._arrays import BoolArray, FloatArray, IntArray, float_vector
from detectors.errors import StatisticsError

__all__ = [
    "PROB_FLOOR",
    "Chi2Result",
    "Chi2Rows",
    "Chi2Test",
    "chi2_goodness_of_fit",
    "chi2_goodness_of_fit_rows",
    "chi2_homogeneity",
    "chi2_homogeneity_rows",
    "smallest_p_value_rows",
]

#: Expected probabilities are clipped below at this value and renormalised, so that a category
#: with expected probability 0 but observed counts gives a large finite statistic, not inf/nan.
PROB_FLOOR: float = 1e-6

#: Which chi-squared test produced a result: two-sample homogeneity, or goodness of fit to fixed proportions.
Chi2Test = Literal["homogeneity", "goodness_of_fit"]


@dataclass(frozen=True)
class Chi2Result:
    """Result of :func:`chi2_goodness_of_fit`.

    Attributes
    ----------
    statistic : float
        Pearson statistic sum (O - E)^2 / E over the bins after pooling.
    p_value : float
        Upper tail of chi^2(dof) at ``statistic``.
    dof : int
        Bins after pooling minus 1 (0 when everything collapsed into one bin).
    merged_bins : int
        Number of original categories folded into the pooled bin (0 when none were).
    """

    statistic: float
    p_value: float
    dof: int
    merged_bins: int


@dataclass(frozen=True, eq=False)
class Chi2Rows:
    """Result of :func:`chi2_goodness_of_fit_rows`: one entry per row, each of shape (R,).

    Attributes
    ----------
    statistic, p_value : ndarray of float
    dof, merged_bins : ndarray of int
        As in :class:`Chi2Result`.
    """

    statistic: FloatArray
    p_value: FloatArray
    dof: IntArray
    merged_bins: IntArray


def chi2_goodness_of_fit_rows(
    observed: npt.ArrayLike,
    expected_probs: npt.ArrayLike,
    valid: npt.ArrayLike | None = None,
    min_expected: float = 5.0,
) -> Chi2Rows:
    """Row-wise Pearson chi-squared tests of counts against expected probabilities, all rows at once.

    Row ``r`` gives exactly ``chi2_goodness_of_fit(observed[r, valid[r]], expected_probs[r, valid[r]])``
    (see there for the pooling rules); cells outside ``valid`` are padding and take no part.

    Parameters
    ----------
    observed : array_like, shape (R, K)
        Non-negative counts.
    expected_probs : array_like, shape (R, K)
        Non-negative probabilities (or weights) with a positive sum over the valid cells of each row.
    valid : array_like of bool, shape (R, K), optional
        Cells that are real categories (default: all).
    min_expected : float, optional
        Smallest acceptable expected count per bin (default 5).

    Returns
    -------
    Chi2Rows

    Examples
    --------
    >>> from detectors.chi2 import chi2_goodness_of_fit_rows
    >>> res = chi2_goodness_of_fit_rows([[30, 20, 50], [10, 10, 0]], [[0.25, 0.25, 0.5], [0.5, 0.5, 0.0]],
    ...                                 valid=[[True, True, True], [True, True, False]])
    >>> res.statistic, res.dof
    (array([2., 0.]), array([2, 1]))
    """
    obs = np.asarray(observed, dtype=np.float64)
    probs = np.asarray(expected_probs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape != probs.shape or obs.size == 0:
        raise StatisticsError(f"observed and expected_probs must have equal non-empty (R, K) shapes; "
                              f"got {obs.shape} and {probs.shape}")
    cells: BoolArray = np.ones(obs.shape, dtype=np.bool_) if valid is None else np.asarray(valid, dtype=np.bool_)
    if cells.shape != obs.shape:
        raise StatisticsError(f"valid has shape {cells.shape}; expected {obs.shape}")
    if not (np.isfinite(obs).all() and np.isfinite(probs).all()):
        raise StatisticsError("observed and expected_probs must be finite")
    if (obs < 0).any():
        raise StatisticsError("observed counts must be non-negative")
    probs = np.where(cells, probs, 0.0)
    if (probs < 0).any() or (probs.sum(axis=1) <= 0).any():
        raise StatisticsError("expected_probs must be non-negative with a positive sum in every row")
    if not min_expected >= 0:
        raise StatisticsError(f"min_expected must be >= 0; got {min_expected!r}")

    obs = np.where(cells, obs, 0.0)  # (R, K)
    probs = np.where(cells, np.maximum(probs / probs.sum(axis=1, keepdims=True), PROB_FLOOR), 0.0)
    probs /= probs.sum(axis=1, keepdims=True)
    expected = obs.sum(axis=1, keepdims=True) * probs  # (R, K)
    return _pearson_pooled(obs[:, None, :], expected[:, None, :], cells, min_expected)


def _pearson_pooled(observed: FloatArray, expected: FloatArray, cells: BoolArray, min_expected: float) -> Chi2Rows:
    """Pearson statistic of R tables of S samples x K categories after pooling small categories.

    ``observed`` and ``expected`` are (R, S, K) (S = 1: goodness of fit, S = 2: homogeneity), ``cells``
    (R, K) marks the categories that take part.  A category is small when its expected count in some
    sample is below ``min_expected``; all small ones form one pooled bin, which, when its expected count
    in some sample is still below ``min_expected``, absorbs the remaining category of smallest expected
    count (when one remains).  Then ``X^2 = sum_s sum_bins (O - E)^2 / E`` with ``bins - 1`` degrees of
    freedom ((S - 1)(bins - 1) for S <= 2).
    """
    low = expected.min(axis=1)  # (R, K) smallest expected count of each category over the samples
    pooled = cells & (low < min_expected)  # (R, K)
    rest = cells & ~pooled
    pool_low = np.where(pooled[:, None, :], expected, 0.0).sum(axis=2).min(axis=1)  # (R,)
    short = pooled.any(axis=1) & (pool_low < min_expected) & rest.any(axis=1)
    smallest = np.argmin(np.where(rest, low, np.inf), axis=1)  # (R,)
    rows = np.flatnonzero(short)
    pooled[rows, smallest[rows]] = True
    rest = cells & ~pooled
    merged = pooled.sum(axis=1)  # (R,)

    with np.errstate(divide="ignore", invalid="ignore"):
        kept = rest[:, None, :] & (expected > 0)  # (R, S, K)
        cell_terms = np.where(kept, (observed - expected) ** 2 / expected, 0.0).sum(axis=(1, 2))  # (R,)
        o_pool = np.where(pooled[:, None, :], observed, 0.0).sum(axis=2)  # (R, S)
        e_pool = np.where(pooled[:, None, :], expected, 0.0).sum(axis=2)  # (R, S)
        pool_terms = np.where((merged > 0)[:, None] & (e_pool > 0), (o_pool - e_pool) ** 2 / e_pool, 0.0)
    dof = rest.sum(axis=1) + (merged > 0) - 1  # bins after pooling minus 1
    testable = dof >= 1
    statistic = np.where(testable, cell_terms + pool_terms.sum(axis=1), 0.0)
    p_value = np.where(testable, stats.chi2.sf(statistic, np.maximum(dof, 1)), 1.0)
    return Chi2Rows(statistic, p_value, np.maximum(dof, 0).astype(np.int64), merged.astype(np.int64))


def chi2_goodness_of_fit(
    observed: npt.ArrayLike, expected_probs: npt.ArrayLike, min_expected: float = 5.0
) -> Chi2Result:
    """Pearson chi-squared test of observed counts against expected category probabilities.

    Expected counts are ``E = total * probs`` where ``probs`` is ``expected_probs`` normalised,
    clipped below at :data:`PROB_FLOOR` and renormalised.  Categories with ``E < min_expected``
    are pooled into one bin; if the pooled bin is still below ``min_expected`` it is merged with
    the remaining category of smallest ``E``.  Then

        X^2 = sum_k (O_k - E_k)^2 / E_k,   dof = bins - 1,   p = P(chi^2_dof >= X^2),

    and when ``dof < 1`` the result is ``statistic=0.0, p_value=1.0``.

    Parameters
    ----------
    observed : array_like, shape (K,)
        Non-negative counts per category.
    expected_probs : array_like, shape (K,)
        Non-negative expected probabilities (or weights) with a positive sum.
    min_expected : float, optional
        Smallest acceptable expected count per bin (default 5).

    Returns
    -------
    Chi2Result

    Examples
    --------
    >>> from detectors.chi2 import chi2_goodness_of_fit
    >>> res = chi2_goodness_of_fit([30, 20, 50], [0.25, 0.25, 0.5])
    >>> res.statistic, res.dof, round(res.p_value, 4)
    (2.0, 2, 0.3679)
    """
    obs = float_vector(observed, "observed")  # (K,)
    probs = float_vector(expected_probs, "expected_probs")  # (K,)
    if obs.shape != probs.shape:
        raise StatisticsError(f"observed has {obs.size} categories but expected_probs has {probs.size}")
    if (obs < 0).any():
        raise StatisticsError("observed counts must be non-negative")
    if (probs < 0).any() or probs.sum() <= 0:
        raise StatisticsError("expected_probs must be non-negative with a positive sum")
    rows = chi2_goodness_of_fit_rows(obs[None, :], probs[None, :], min_expected=min_expected)
    return Chi2Result(statistic=float(rows.statistic[0]), p_value=float(rows.p_value[0]), dof=int(rows.dof[0]),
                      merged_bins=int(rows.merged_bins[0]))


def chi2_homogeneity_rows(
    reference_counts: npt.ArrayLike,
    current_counts: npt.ArrayLike,
    valid: npt.ArrayLike | None = None,
    min_expected: float = 5.0,
) -> Chi2Rows:
    """Row-wise two-sample chi-squared tests of homogeneity, all rows at once.

    Row ``r`` gives exactly ``chi2_homogeneity(reference_counts[r, valid[r]], current_counts[r, valid[r]])``
    (see there for the pooling rules); cells outside ``valid`` are padding and take no part.

    Parameters
    ----------
    reference_counts, current_counts : array_like, shape (R, K)
        Non-negative counts; every row of ``reference_counts`` needs a positive total over its valid cells.
    valid : array_like of bool, shape (R, K), optional
        Cells that are real categories (default: all).
    min_expected : float, optional
        Smallest acceptable expected count per bin and sample (default 5).

    Returns
    -------
    Chi2Rows

    Examples
    --------
    >>> from detectors.chi2 import chi2_homogeneity_rows
    >>> res = chi2_homogeneity_rows([[50, 50, 0], [40, 60, 7]], [[30, 70, 0], [40, 60, 0]],
    ...                             valid=[[True, True, False], [True, True, True]])
    >>> res.statistic.round(3), res.dof, res.merged_bins
    (array([8.333, 0.327]), array([1, 1]), array([0, 2]))

    In row 1 the third category (7 reference counts, expected 3.4 in the current row) is pooled, and the
    pooled bin, still below 5, absorbs the first category: the table tested is ``[[47, 60], [40, 60]]``.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != cur.shape or ref.size == 0:
        raise StatisticsError(f"reference_counts and current_counts must have equal non-empty (R, K) shapes; "
                              f"got {ref.shape} and {cur.shape}")
    cells: BoolArray = np.ones(ref.shape, dtype=np.bool_) if valid is None else np.asarray(valid, dtype=np.bool_)
    if cells.shape != ref.shape:
        raise StatisticsError(f"valid has shape {cells.shape}; expected {ref.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(cur).all()):
        raise StatisticsError("reference_counts and current_counts must be finite")
    if (ref < 0).any() or (cur < 0).any():
        raise StatisticsError("counts must be non-negative")
    if not min_expected >= 0:
        raise StatisticsError(f"min_expected must be >= 0; got {min_expected!r}")
    ref, cur = np.where(cells, ref, 0.0), np.where(cells, cur, 0.0)
    if (ref.sum(axis=1) <= 0).any():
        raise StatisticsError("reference_counts must have a positive total in every row")
    cells = cells & (ref + cur > 0)  # a category absent from both samples is no category of the table

    # Expected counts under homogeneity: E_sk = R_s C_k / N (row total x column total / grand total).
    table = np.stack([ref, cur], axis=1)  # (R, 2, K)
    row_totals = table.sum(axis=2, keepdims=True)  # (R, 2, 1)
    col_totals = table.sum(axis=1, keepdims=True)  # (R, 1, K)
    expected = row_totals * col_totals / row_totals.sum(axis=1, keepdims=True)  # (R, 2, K)
    return _pearson_pooled(table, expected, cells, min_expected)


def chi2_homogeneity(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, min_expected: float = 5.0
) -> Chi2Result:
    """Pearson chi-squared test that two count vectors come from one categorical distribution.

    The counts are the rows of a 2 x K contingency table with row totals ``n`` (reference) and ``m``
    (current), column totals ``C_k`` and ``N = n + m``; under homogeneity the expected counts are
    ``E_ref,k = n C_k / N`` and ``E_cur,k = m C_k / N``.  Categories with no count in either row take no
    part.  Categories whose expected count in either row is below ``min_expected`` are pooled into one
    bin; if the pooled bin's expected count in either row is still below ``min_expected`` it is merged
    with the remaining category of smallest expected count.  Then, over the B bins left,

        X^2 = sum_{s in (ref, cur)} sum_b (O_sb - E_sb)^2 / E_sb,   dof = B - 1,   p = P(chi^2_dof >= X^2),

    without Yates' continuity correction: ``scipy.stats.chi2_contingency(pooled_table, correction=False)``.
    When ``dof < 1`` the result is ``statistic=0.0, p_value=1.0``.

    Parameters
    ----------
    reference_counts, current_counts : array_like, shape (K,)
        Non-negative counts per category; the reference needs a positive total.
    min_expected : float, optional
        Smallest acceptable expected count per bin and row (default 5).

    Returns
    -------
    Chi2Result

    Examples
    --------
    >>> from scipy import stats
    >>> from detectors.chi2 import chi2_homogeneity
    >>> res = chi2_homogeneity([300, 200, 500], [40, 20, 40])
    >>> res.dof, res.merged_bins, round(res.statistic, 3)
    (2, 0, 4.793)
    >>> bool(abs(res.p_value - stats.chi2_contingency([[300, 200, 500], [40, 20, 40]], correction=False).pvalue)
    ...      < 1e-12)
    True
    """
    ref = float_vector(reference_counts, "reference_counts")  # (K,)
    cur = float_vector(current_counts, "current_counts")  # (K,)
    if ref.shape != cur.shape:
        raise StatisticsError(f"reference_counts has {ref.size} categories but current_counts has {cur.size}")
    rows = chi2_homogeneity_rows(ref[None, :], cur[None, :], min_expected=min_expected)
    return Chi2Result(statistic=float(rows.statistic[0]), p_value=float(rows.p_value[0]), dof=int(rows.dof[0]),
                      merged_bins=int(rows.merged_bins[0]))


def smallest_p_value_rows(
    reference: npt.ArrayLike, m: int, valid: npt.ArrayLike | None = None, test: Chi2Test = "homogeneity"
) -> FloatArray:
    """Smallest p-value the chi-squared test of row ``r`` can give on a window of ``m`` rows; shape (R,).

    Without pooling, Pearson's statistic of ``[reference; current]`` is a sum of quadratic-over-linear
    terms, convex in the current counts, so over the simplex ``{c >= 0, sum c = m}`` it is largest at a
    vertex: every window row in one category.  The bound is the p-value of the test as implemented
    (small-count pooling included) at each of the K vertices, minimised over them.  ``reference`` is the
    reference counts (``test="homogeneity"``) or expected proportions (``"goodness_of_fit"``), (R, K).

    Examples
    --------
    >>> from detectors.chi2 import smallest_p_value_rows
    >>> float(smallest_p_value_rows([[50, 50]], 2)[0])  # two rows cannot even fill a bin of 5
    1.0
    >>> float(smallest_p_value_rows([[500, 500]], 30)[0]) < 1e-6
    True
    """
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 2:
        raise StatisticsError(f"reference must be (R, K); got shape {ref.shape}")
    rows, k = ref.shape
    cells: BoolArray = np.ones(ref.shape, dtype=np.bool_) if valid is None else np.asarray(valid, dtype=np.bool_)
    if m < 1:
        return np.ones(rows)
    vertex = np.repeat(ref, k, axis=0)  # (R*K, K): row r k = reference row r, window all in category k
    current = np.tile(np.eye(k) * float(m), (rows, 1))  # (R*K, K)
    mask = np.repeat(cells, k, axis=0)  # (R*K, K)
    if test == "homogeneity":
        res = chi2_homogeneity_rows(vertex, current, mask)
    else:
        res = chi2_goodness_of_fit_rows(current, vertex, mask)
    usable = mask[np.arange(rows * k), np.tile(np.arange(k), rows)]  # the vertex category must be real
    p = np.where(usable, res.p_value, 1.0).reshape(rows, k)  # (R, K)
    out: FloatArray = p.min(axis=1)
    return out
