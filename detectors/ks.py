"""Two-sample Kolmogorov–Smirnov test, vectorised over the columns (features) of a window.

For each feature ``j`` with reference sample ``a`` (size n) and current sample ``b`` (size m),

    D_j = max_v |F_a(v) - F_b(v)|,   F_a(v) = #{a_i <= v} / n,

the maximum running over all pooled values ``v`` (exactly what ``scipy.stats.ks_2samp`` evaluates,
so ties are handled identically).  With the current sample sorted, ``c_0 <= ... <= c_{m-1}``, the two
one-sided gaps are attained at current points (0-based ``i``; ties need no special care because the
maximum over a run of equal ``c_i`` lands on its last / first copy):

    D+ = max_i (i + 1) / m - #{a <= c_i} / n,     D- = max_i #{a < c_i} / n - i / m,

so only the reference counts at the m current points are needed.  They are found without a merge:
every ``stride``-th sorted reference value is a *knot*; locating the few knots among the current
values brackets each count to within ``stride``, the brackets bound every gap (run by run: the points
between two knots share a bracket), and the exact count is looked up (``np.searchsorted`` in the
feature's sorted reference row, with the points in ascending order) only for the points whose upper
bound can still reach the largest lower bound.  Every search compares float64 values as they are: exact
and tie-preserving.

The p-value follows ``ks_2samp(method='auto')``: the exact Smirnov law when ``max(n, m) <= 10000``
(with SciPy's fallback to the asymptotic law when the exact computation is numerically unreliable),
otherwise ``kstwo.sf(D, round(n*m/(n+m)))``, evaluated for all features at once by
:func:`detectors.kolmogorov.kstwo_sf`.  :func:`ks_2samp_index` gives that value for every feature.

The exact law costs about ``max(n, m) * 2 D * min(n, m)`` steps per feature (milliseconds at 10,000
against 1,000 rows, tens of them against 5,000), and a drift decision needs the settled p-value only
where it can change a verdict.  :func:`ks_p_values` therefore starts from an approximation ``p_approx``
of every feature's p-value, with a bracket ``[lower, upper]`` that holds the settled one, and
:meth:`KSPValues.settle` computes the settled value for the features a caller names
(:func:`detectors.drift.feature_drift` names those whose bracket straddles a decision threshold).
``p_approx`` is the Kolmogorov limit at Stephens' (1970) corrected argument,
``Q((sqrt(en) + 0.12 + 0.11 / sqrt(en)) D)`` with ``en = n m / (n + m)`` (``scipy.special.kolmogorov``:
microseconds for all features).  With ``x = ln(1 / p_approx)`` the bracket is

    |ln(p_settled / p_approx)| <= (2 + x / 2) (1 / sqrt(en) + 8 / en)      (en >= 32, p_approx >= 1e-16).

We know of no rigorous bound of this kind, so it is an empirical one with a margin.  Against the exact
law (``max(n, m) <= 10,000``) it was checked at 133,000 lattice points ``D = h / lcm(n, m)`` of 774
pairs ``(n, m)`` with ``en >= 32`` (equal, adjacent, multiple, coprime and random sizes; at least 15,000
points in each of ``en`` in [32, 64), [64, 140), [140, 512) and [512, 5,000]): the largest
``|ln(p_exact / p_approx)|`` used 0.56 of the band (at ``n = 33, m = 7,933``, deep in the tail) and 0.34
for ``en >= 64``.  Against ``kstwo.sf(D, round(en))`` (the settled value when ``max(n, m) > 10,000``) it
was checked at 21,800 points for ``en`` from 32 to 10^6: 0.57 of the band (``en = 32``, deep in the tail).
At 10,000 against 1,000 rows near ``p = 4.5e-4`` (0.01 over 22 tests) the band is a factor of 1.28 either
way.  ``tests/test_detectors_stats.py`` rechecks a seeded part of that grid.  Below ``p_approx = 1e-16``
the settled value is bounded by monotonicity instead: ``P(D >= d)`` does not increase with ``d``, so it is
at most the band's upper end at a lattice point below ``d`` whose ``p_approx`` is still above the floor.
Below ``en = 32`` the settled p-value is computed at once: the exact law is cheap there (``min(n, m) <
64``) and the approximation near ``D = 1`` is too far off to bracket it; so it is wherever the exact law
costs fewer than ``EAGER_STEPS`` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from detectors._arrays import BoolArray, FloatArray, IntArray, float_matrix, readonly, require_finite
from detectors.errors import StatisticsError
from detectors.kolmogorov import kstwo_sf
from detectors.smirnov import smirnov_sf_exact

__all__ = ["BRACKET_FLOOR", "EAGER_EN", "EAGER_STEPS", "KNOTS", "MAX_EXACT_N", "CurrentRanks",
           "KSIndex", "KSPValues", "KSResult", "bracket_log_ratio", "ks_2samp_columns", "ks_2samp_index",
           "ks_p_values", "ks_smallest_p_value", "ks_statistic", "locate", "min_detectable_rows",
           "reference_counts", "search_rows", "sort_reference"]

#: Largest sample size for which the exact p-value is used (SciPy's ``MAX_AUTO_N``).
MAX_EXACT_N: int = 10000
#: Knots per feature of a :class:`KSIndex` (every ``ceil(n / KNOTS)``-th sorted reference value).
KNOTS: int = 1024

#: ``"right"``: count values ``<= c``; ``"left"``: count values ``< c`` (as in ``np.searchsorted``).
Side = Literal["left", "right"]


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


def ks_smallest_p_value(n: int | npt.ArrayLike, m: int | npt.ArrayLike) -> FloatArray:
    """Smallest p-value any two-sample KS test of ``n`` against ``m`` values can give: ``2 / C(n + m, m)``.

    The most extreme outcome is ``D = 1`` (every window value below, or every one above, the whole
    reference).  Under the null all ``C(n + m, m)`` interleavings of the pooled sample are equally likely
    and exactly two of them give ``D = 1``, so the exact Smirnov law (:func:`detectors.smirnov.smirnov_sf_exact`
    with ``h = lcm``) puts ``P(D >= 1) = 2 / C(n + m, m)`` (``1`` when ``n = m = 1``).  This is the bound
    whatever method reports the p-value: SciPy's asymptotic branch (``max(n, m) > 10000``) gives 0 at
    ``D = 1``, which is not an outcome the exact null allows.  Computed in logs, so it never overflows.

    Parameters
    ----------
    n, m : int or array_like of int
        Sample sizes (>= 0; a size of 0 gives 1: nothing can be tested).

    Returns
    -------
    ndarray of float
        The bound, broadcast over ``n`` and ``m``.

    Examples
    --------
    >>> from detectors.ks import ks_smallest_p_value
    >>> float(ks_smallest_p_value(5, 5))  # 2 / C(10, 5)
    0.007936507936507936
    >>> round(float(ks_smallest_p_value(2000, 1)), 9)  # one value beyond 2,000 reference values: 2 / 2001
    0.0009995
    """
    from scipy import special

    nn = np.asarray(n, dtype=np.float64)
    mm = np.asarray(m, dtype=np.float64)
    log_binom = special.gammaln(nn + mm + 1) - special.gammaln(nn + 1) - special.gammaln(mm + 1)
    out: FloatArray = np.where((nn < 1) | (mm < 1), 1.0, np.minimum(1.0, np.exp(math.log(2.0) - log_binom)))
    return out


def min_detectable_rows(n_reference: int, alpha_adjusted: float) -> int:
    """Fewest window rows for which a KS test against ``n_reference`` rows can reach ``alpha_adjusted``.

    The smallest ``m`` with ``2 / C(n + m, m) <= alpha_adjusted`` (:func:`ks_smallest_p_value`); with
    Bonferroni over ``k`` tests pass ``alpha / k``.  Raises when no window size can (``n_reference`` too
    small for the level even with ``m`` rows as large as 10^6).

    Examples
    --------
    >>> from detectors.ks import min_detectable_rows
    >>> min_detectable_rows(20_000, 0.01), min_detectable_rows(20_000, 0.01 / 20)
    (1, 1)
    >>> min_detectable_rows(20, 0.01 / 20), min_detectable_rows(2_000, 0.01 / 20_000)
    (4, 3)
    """
    if isinstance(n_reference, bool) or not isinstance(n_reference, int | np.integer) or n_reference < 1:
        raise StatisticsError(f"n_reference must be a positive integer; got {n_reference!r}")
    if not 0.0 < alpha_adjusted < 1.0:
        raise StatisticsError(f"alpha_adjusted must be in (0, 1); got {alpha_adjusted!r}")
    m = 1
    while float(ks_smallest_p_value(n_reference, m)) > alpha_adjusted:
        m *= 2
        if m > 1_000_000:
            raise StatisticsError(f"no window of up to 10^6 rows can reach p <= {alpha_adjusted:g} against "
                                  f"{n_reference} reference rows")
    lo, hi = m // 2, m  # p(lo) > alpha >= p(hi) (lo = 0 when m = 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if float(ks_smallest_p_value(n_reference, mid)) <= alpha_adjusted else (mid, hi)
    return hi


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


def search_rows(rows: FloatArray, values: FloatArray, side: Side = "left") -> IntArray:
    """``np.searchsorted(rows[j], values[j], side)`` for every row ``j``; rows (F, n) sorted, values (F, k).

    Returns (F, k).  One C search per feature (a loop over the F rows, not over values): NumPy's search
    compares float64 values exactly, ties included, and runs fastest when ``values[j]`` is sorted too.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.ks import search_rows
    >>> search_rows(np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]), np.array([[2.0], [0.5]]), side="right")
    array([[2],
           [3]])
    """
    out = np.empty(values.shape, dtype=np.int64)  # (F, k)
    for j in range(rows.shape[0]):
        out[j] = np.searchsorted(rows[j], values[j], side=side)
    return out


@dataclass(frozen=True, eq=False)
class KSIndex:
    """Everything the KS statistic needs from a sorted reference, computed once.

    Attributes
    ----------
    columns : ndarray, shape (F, n)
        Sorted reference values, one row per feature.
    knots : ndarray, shape (F, K)
        Every ``stride``-th reference value (``K = ceil(n / stride)``).
    stride : int
        Reference values between knots.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.ks import KSIndex
    >>> index = KSIndex.from_sorted(np.arange(10.0).reshape(5, 2), stride=2)
    >>> index.columns.shape, index.knots.shape
    ((2, 5), (2, 3))
    """

    columns: FloatArray
    knots: FloatArray
    stride: int
    _coarser: dict[int, KSIndex] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_sorted(cls, reference_sorted: FloatArray, stride: int | None = None) -> KSIndex:
        """Build from a finite reference ``(n, F)`` already sorted along axis 0.

        ``stride`` defaults to ``ceil(n / KNOTS)``: about :data:`KNOTS` knots per feature whatever n
        is, so locating a window costs the same and brackets counts to ``1 / KNOTS`` of the ECDF.
        """
        n = reference_sorted.shape[0]
        step = -(-n // KNOTS) if stride is None else stride
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise StatisticsError(f"stride must be a positive integer; got {stride!r}")
        columns = np.ascontiguousarray(reference_sorted.T)  # (F, n)
        return cls(columns=columns, knots=np.ascontiguousarray(columns[:, ::step]), stride=step)  # knots (F, K)

    @property
    def n_reference(self) -> int:
        """Reference sample size n."""
        return int(self.columns.shape[1])

    def for_window(self, m: int) -> KSIndex:
        """This index, or one with every ``r``-th knot (``r`` a power of two) for a window of ``m`` values.

        Locating a window costs about one search per knot, and the brackets leave open a share of the ``m``
        points that grows with the stride, each closed in ``log2(stride)`` steps; about ``m / 4`` knots per
        feature balance the two (at 10,000 against 1,000 values, 256 knots instead of 1,024 locate four
        times faster for a few hundred more open points).  The coarser indexes share the reference arrays
        and are kept (one per factor, at most ``log2(KNOTS)``).
        """
        n_knots = self.knots.shape[1]
        factor = 1
        while n_knots // (2 * factor) >= max(m // 4, 16):
            factor *= 2
        if factor == 1:
            return self
        if factor not in self._coarser:
            knots = np.ascontiguousarray(self.knots[:, ::factor])  # (F, K / r): a[j r s]
            self._coarser[factor] = KSIndex(self.columns, knots, self.stride * factor)
        return self._coarser[factor]


@dataclass(frozen=True, eq=False)
class CurrentRanks:
    """A sorted current window located among the knots of a :class:`KSIndex`.

    Attributes
    ----------
    columns : ndarray, shape (F, m)
        Sorted current values, one row per feature.
    knots_le, knots_lt : ndarray of int, shape (F, m)
        Number of knots ``<= c_i`` and ``< c_i``.  With ``s = stride`` the exact reference counts satisfy
        ``(k - 1) s < #{a <= c_i} <= k s`` for ``k = knots_le`` (and likewise ``#{a < c_i}`` with
        ``knots_lt``), clipped to [0, n].
    le_from, lt_from : ndarray of int, shape (F, K)
        The same from the knots' side: knot ``k`` is ``<= c_i`` exactly for ``i >= le_from[:, k]``
        (``#{current < knot_k}``) and ``< c_i`` for ``i >= lt_from[:, k]`` (``#{current <= knot_k}``).
    """

    columns: FloatArray
    knots_le: IntArray
    knots_lt: IntArray
    le_from: IntArray
    lt_from: IntArray

    @property
    def m(self) -> int:
        """Current sample size."""
        return int(self.columns.shape[1])


def locate(index: KSIndex, current_sorted: FloatArray) -> CurrentRanks:
    """Bracket the reference counts at every current point (see :class:`CurrentRanks`).

    Parameters
    ----------
    index : KSIndex
    current_sorted : ndarray, shape (F, m)
        Finite, each row sorted ascending (not validated).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.ks import KSIndex, locate
    >>> ranks = locate(KSIndex.from_sorted(np.arange(8.0)[:, None], stride=2), np.array([[2.0, 7.5]]))
    >>> ranks.knots_le, ranks.knots_lt
    (array([[2, 4]]), array([[1, 4]]))
    """
    n_features, m = current_sorted.shape
    # Knot k is <= c_i exactly for i >= #{current < knot_k}, and < c_i for i >= #{current <= knot_k};
    # the two differ only where a knot equals a current value.
    le_from = search_rows(current_sorted, index.knots, side="left")  # (F, K)
    rows = np.arange(n_features)[:, None]
    tied = (le_from < m) & (current_sorted[rows, np.minimum(le_from, m - 1)] == index.knots)  # (F, K)
    lt_from = search_rows(current_sorted, index.knots, side="right") if tied.any() else le_from
    n_knots = le_from.shape[1]
    run = np.tile(np.arange(n_knots + 1, dtype=np.int64), n_features)  # (F*(K+1),) knots passing on each run

    def knots_below(first: IntArray) -> IntArray:
        bounds = np.empty((n_features, n_knots + 2), dtype=np.int64)  # run k covers [bounds[k], bounds[k+1])
        bounds[:, 0], bounds[:, 1:-1], bounds[:, -1] = 0, first, m
        below: IntArray = np.repeat(run, np.diff(bounds, axis=1).ravel()).reshape(n_features, m)  # (F, m)
        return below

    knots_le = knots_below(le_from)
    knots_lt = knots_below(lt_from) if lt_from is not le_from else knots_le
    return CurrentRanks(current_sorted, knots_le, knots_lt, le_from, lt_from)


def reference_counts(index: KSIndex, ranks: CurrentRanks, flat: IntArray, side: Side) -> IntArray:
    """Exact ``#{a <= c}`` (side ``"right"``) or ``#{a < c}`` (``"left"``) at flat positions ``f m + i``.

    ``flat`` (q,) must be ascending: then the values of each feature come sorted, and one
    ``np.searchsorted`` per feature in its reference row finds them all (each search starts where the
    previous one ended), faster than a vectorised binary search inside the knot brackets.
    """
    return _row_counts(index, flat // ranks.m, ranks.columns.ravel()[flat], side)


def _row_counts(index: KSIndex, feature: IntArray, current: FloatArray, side: Side) -> IntArray:
    """:func:`reference_counts` of values ``current`` (q,) of ``feature`` (q,, ascending)."""
    bounds = np.searchsorted(feature, np.arange(index.columns.shape[0] + 1))  # feature j: [bounds[j], bounds[j+1])
    count = np.empty(current.shape, dtype=np.int64)
    # This loop runs over the features that have points to count: one C search each.
    for j in np.flatnonzero(np.diff(bounds)):
        part = slice(bounds[j], bounds[j + 1])
        count[part] = np.searchsorted(index.columns[j], current[part], side=side)
    return count


def _ranges(starts: IntArray, stops: IntArray) -> IntArray:
    """Concatenation of ``arange(start, stop)`` over the pairs (empty ranges allowed)."""
    lengths = np.maximum(stops - starts, 0)
    ends = np.cumsum(lengths)
    out: IntArray = np.arange(int(ends[-1]) if ends.size else 0) + np.repeat(starts - (ends - lengths), lengths)
    return out


def _max_gap(index: KSIndex, ranks: CurrentRanks, side: Side) -> FloatArray:
    """``D+`` (side ``"right"``) or ``D-`` (side ``"left"``) per feature; returns (F,).

    Works in integer units of ``1 / (n m)``: the exact gap at current point ``i`` is
    ``g_i = (i+1) n - m #{a <= c_i}`` (D+) or ``m #{a < c_i} - i n`` (D-).  The current points with ``k``
    knots passing form a run ``[L_k, R_k)`` (from ``le_from`` / ``lt_from``), on which the count lies in
    ``[lo_k, hi_k] = [(k-1) s + 1, min(k s, n)]`` (0 for ``k = 0``).  So each run bounds its gaps from
    below at one end (``R_k n - m hi_k`` at its last point for D+, ``m lo_k - L_k n`` at its first for
    D-), the best of these bounds the maximum from below, and only the points whose upper bound
    (``(i+1) n - m lo_k``, resp. ``m hi_k - i n``) reaches it need their exact count.  All bounds are
    taken over the ``K + 1`` runs per feature, not the ``m`` points.
    """
    n, stride, m = index.n_reference, index.stride, ranks.m
    starts = ranks.le_from if side == "right" else ranks.lt_from  # (F, K): run k+1 starts where knot k passes
    n_features, n_knots = starts.shape
    run_lo = np.zeros((n_features, n_knots + 1), dtype=np.int64)  # (F, K+1) L_k
    run_lo[:, 1:] = starts
    run_hi = np.full((n_features, n_knots + 1), m, dtype=np.int64)  # (F, K+1) R_k
    run_hi[:, :-1] = starts
    k = np.arange(n_knots + 1, dtype=np.int64)
    lo = np.maximum(k * stride - (stride - 1), 0)  # (K+1,) bounds of the reference count on run k
    hi = np.minimum(k * stride, n)
    empty = run_hi <= run_lo  # (F, K+1)
    if side == "right":
        sure = run_hi * n - m * hi  # (F, K+1) lower bound of the gap at the run's last point
    else:
        sure = m * lo - run_lo * n  # ... at its first point
    best = np.where(empty, np.iinfo(np.int64).min, sure).max(axis=1, keepdims=True)  # (F, 1)
    # Points that can still reach `best`: (i+1) n - m lo >= best (D+), m hi - i n >= best (D-).
    if side == "right":
        first = np.maximum(run_lo, -((-best - m * lo) // n) - 1)  # ceil((best + m lo) / n) - 1
        last = run_hi
    else:
        first = run_lo
        last = np.minimum(run_hi, (m * hi - best) // n + 1)
    row = np.arange(n_features, dtype=np.int64)[:, None] * m
    open_runs = np.flatnonzero(last > first)  # flat f (K+1) + k, sorted by feature
    cand = _ranges((first + row).ravel()[open_runs], (last + row).ravel()[open_runs])  # flat f m + i, sorted
    feature, i = np.divmod(cand, m)
    counts = _row_counts(index, feature, ranks.columns.ravel()[cand], side)
    # Same float operations as scipy: searchsorted(...)/n1 - searchsorted(...)/n2.
    gap = (i + 1) / m - counts / n if side == "right" else counts / n - i / m
    result: FloatArray = np.maximum.reduceat(gap, np.searchsorted(feature, np.arange(n_features)))  # (F,)
    return result


def ks_statistic(index: KSIndex, ranks: CurrentRanks) -> FloatArray:
    """Two-sided statistic ``D = max(D+, D-)`` of every feature against a prepared reference; returns (F,).

    Exactly the statistic of ``scipy.stats.ks_2samp`` (before SciPy snaps it to the lattice
    ``h / lcm(n, m)`` in its exact mode; :func:`ks_p_values` does that).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.ks import KSIndex, ks_statistic, locate
    >>> index = KSIndex.from_sorted(np.array([[1.0], [2.0], [3.0], [4.0]]))
    >>> ks_statistic(index, locate(index, np.array([[3.5, 4.5, 5.5, 6.5]])))
    array([0.75])
    """
    d_plus = _max_gap(index, ranks, "right")  # (F,)
    d_minus = _max_gap(index, ranks, "left")  # (F,)
    statistic: FloatArray = np.clip(np.maximum(d_plus, d_minus), 0.0, 1.0)
    return statistic


#: Exact-regime tests with an effective size ``n m / (n + m)`` below this get the exact p-value at once.
EAGER_EN: float = 32.0
#: ... and so do those whose exact law costs fewer steps than this (about ``2 D n m``; a step is a few ns).
EAGER_STEPS: float = 2e4
#: Smallest approximate p-value at which the bracket of :func:`ks_p_values` was validated.
BRACKET_FLOOR: float = 1e-16
#: Approximate p-value aimed at for the lattice point that bounds the tail below the floor (above the floor).
_TAIL_ANCHOR: float = 1e-14


def bracket_log_ratio(en: npt.ArrayLike, p_approx: npt.ArrayLike) -> FloatArray:
    """Half-width of the bracket around the approximate p-value, in log units (see the module docstring).

    ``|ln(p_settled / p_approx)| <= (2 + x / 2) (1 / sqrt(en) + 8 / en)`` with ``x = ln(1 / p_approx)``, for
    ``en >= EAGER_EN`` and ``p_approx >= BRACKET_FLOOR`` (validated empirically, not proved).

    Examples
    --------
    >>> from detectors.ks import bracket_log_ratio
    >>> round(float(bracket_log_ratio(10_000 * 1_000 / 11_000, 4.5e-4)), 3)  # a factor of 1.28 either way
    0.246
    """
    x = -np.log(np.asarray(p_approx, dtype=np.float64))
    e = np.asarray(en, dtype=np.float64)
    half_width: FloatArray = (2.0 + x / 2.0) * (1.0 / np.sqrt(e) + 8.0 / e)
    return half_width


@dataclass(frozen=True, eq=False)
class KSPValues:
    """Two-sided KS p-values of several tests, each settled or bracketed (see :func:`ks_p_values`).

    A *settled* p-value is the one ``scipy.stats.ks_2samp(method='auto')`` reports; an unsettled one is the
    Kolmogorov limit at Stephens' argument (:func:`ks_p_values`), and the settled value is known to lie in
    ``[lower, upper]``.

    Attributes
    ----------
    statistic : ndarray, shape (F,)
        ``D`` per test, on the lattice ``h / lcm(n, m)`` in the exact regime as SciPy reports it.
    p_value : ndarray, shape (F,)
        Settled value, or the approximation.
    lower, upper : ndarray, shape (F,)
        Bounds of the settled value (both equal to ``p_value`` once settled).
    settled : ndarray of bool, shape (F,)
    exact : ndarray of bool, shape (F,)
        Whether ``p_value`` comes from the exact Smirnov law (settled in the exact regime, and the exact
        computation succeeded).
    n, m : ndarray of int, shape (F,)
        Sample sizes of each test.
    """

    statistic: FloatArray
    p_value: FloatArray
    lower: FloatArray
    upper: FloatArray
    settled: BoolArray
    exact: BoolArray
    n: IntArray
    m: IntArray

    def settle(self, which: npt.ArrayLike) -> KSPValues:
        """Settle the tests selected by the boolean mask ``which`` (F,); returns a new :class:`KSPValues`.

        In the exact regime each costs one evaluation of the exact law per distinct ``(n, m, D)``; where
        that is numerically unreliable the settled value is SciPy's fallback, ``kstwo.sf(D, round(en))``
        (in the grid of the module docstring this happened only at ``p ~ 1``: equal sizes and a tiny
        ``D``).  In the asymptotic regime the settled value is ``kstwo.sf(D, round(en))``.
        """
        todo = np.flatnonzero(np.asarray(which, dtype=bool) & ~self.settled)
        if todo.size == 0:
            return self
        p, lower, upper = self.p_value.copy(), self.lower.copy(), self.upper.copy()
        settled, exact = self.settled.copy(), self.exact.copy()
        regime = np.maximum(self.n[todo], self.m[todo]) <= MAX_EXACT_N  # (k,)
        lcm = self.n // np.gcd(self.n, self.m) * self.m  # (F,)
        h = np.round(self.statistic * lcm).astype(np.int64)  # (F,) exact: the statistic is on the lattice
        # The exact law depends only on (n, m, h): one evaluation per distinct triple (ties, shared sizes).
        # This loop runs over the few tests being settled, for the scalar exact kernel.
        done: dict[tuple[int, int, int], float | None] = {}
        fallback = []
        for j in todo[regime]:
            key = (int(self.n[j]), int(self.m[j]), int(h[j]))
            if key not in done:
                done[key] = smirnov_sf_exact(*key)
            prob = done[key]
            if prob is None:  # SciPy: "Exact calculation unsuccessful. Switching to method=asymp"
                fallback.append(j)
            else:
                p[j] = min(max(prob, 0.0), 1.0)
                exact[j] = True
        asymptotic = np.concatenate([todo[~regime], np.array(fallback, dtype=np.int64)])
        if asymptotic.size:
            p[asymptotic] = _kstwo_p(self.statistic[asymptotic],
                                     _effective_size(self.n[asymptotic], self.m[asymptotic]))
        lower[todo] = upper[todo] = p[todo]
        settled[todo] = True
        return KSPValues(self.statistic, readonly(p), readonly(lower), readonly(upper), _readonly_mask(settled),
                         _readonly_mask(exact), self.n, self.m)

    @property
    def method(self) -> str:
        """``"exact"``, ``"asymp"``, ``"exact+asymp"`` (some exact, some asymptotic) or ``"bracketed"``."""
        if not self.settled.all():
            return "bracketed"
        if not (np.maximum(self.n, self.m) <= MAX_EXACT_N).any():
            return "asymp"
        return "exact" if self.exact.all() else "exact+asymp"


def _readonly_mask(x: BoolArray) -> BoolArray:
    x.setflags(write=False)
    return x


def _effective_size(n: IntArray, m: IntArray) -> IntArray:
    """``round(n m / (n + m))``, the size SciPy gives the asymptotic law."""
    size: IntArray = np.round(n * m / (n + m)).astype(np.int64)
    return size


def _kstwo_p(d: FloatArray, en: IntArray) -> FloatArray:
    """``kstwo.sf(D, en)`` per test (SciPy's asymptotic p-value); shapes (k,).

    :func:`detectors.kolmogorov.kstwo_sf` takes one ``en`` at a time: this loop runs over the distinct
    sample sizes (one for a window without missing values).
    """
    p = np.empty_like(d)
    for size in np.unique(en):
        group = en == size
        p[group] = kstwo_sf(d[group], int(size))
    return p


def _approximate_p(d: FloatArray, n: IntArray, m: IntArray) -> FloatArray:
    """The approximation that :func:`ks_p_values` brackets, (k,): the Kolmogorov limit ``Q(lambda)`` at
    Stephens' (1970) ``lambda = (sqrt(en) + 0.12 + 0.11 / sqrt(en)) D`` (``scipy.special.kolmogorov``)."""
    from scipy import special

    root = np.sqrt(n * m / (n + m))
    p: FloatArray = special.kolmogorov((root + 0.12 + 0.11 / root) * d)
    return p


def ks_p_values(statistic: npt.ArrayLike, n: npt.ArrayLike, m: npt.ArrayLike) -> KSPValues:
    """Approximate p-values of two-sample KS statistics, each bracketing the settled one (or settled).

    Tests with ``en = n m / (n + m) < EAGER_EN``, and exact-regime tests whose exact law costs fewer than
    :data:`EAGER_STEPS` steps, are settled at once.  The others carry the Kolmogorov limit at Stephens'
    argument and the bracket of the module docstring, and :meth:`KSPValues.settle` computes their settled
    value on demand: the exact Smirnov law when ``max(n, m) <= MAX_EXACT_N``, else ``kstwo.sf(D,
    round(en))`` (SciPy's ``'auto'`` is asymptotic there).

    Parameters
    ----------
    statistic : array_like, shape (F,)
        Two-sided statistics ``D`` (e.g. from :func:`ks_statistic`).
    n, m : int or array_like of int, shape (F,)
        Sample sizes of each test (>= 1), broadcast against ``statistic``.

    Returns
    -------
    KSPValues

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import stats
    >>> from detectors.ks import ks_p_values
    >>> res = ks_p_values([0.05, 0.2], 10_000, 1_000)  # D = 0.05 and 0.2, 10,000 against 1,000 values
    >>> res.method, res.settled, round(float(res.p_value[0]), 5)
    ('bracketed', array([False, False]), 0.02045)
    >>> exact = res.settle([True, False])
    >>> round(float(exact.p_value[0]), 5), bool(res.lower[0] <= exact.p_value[0] <= res.upper[0])
    (0.02064, True)
    >>> round(float(stats.ks_2samp(np.zeros(10_000), np.repeat([1.0, 0.0], [50, 950])).pvalue), 5)
    0.02064
    """
    d = np.atleast_1d(np.asarray(statistic, dtype=np.float64))
    if d.ndim != 1 or not np.all((d >= 0.0) & (d <= 1.0)):
        raise StatisticsError("statistic must be a 1-D array of values in [0, 1]")
    sizes = np.broadcast_arrays(np.asarray(n), np.asarray(m), d)
    nn, mm = (np.asarray(v).astype(np.int64) for v in sizes[:2])
    if (nn < 1).any() or (mm < 1).any():
        raise StatisticsError("sample sizes n and m must be positive")
    exact_regime = np.maximum(nn, mm) <= MAX_EXACT_N  # (F,)
    lcm = nn // np.gcd(nn, mm) * mm  # (F,) <= 10^8 in the exact regime
    # SciPy's exact mode reports the statistic snapped to the lattice h / lcm.
    d = np.where(exact_regime, np.round(d * lcm) / lcm, d)
    en = nn * mm / (nn + mm)  # (F,) effective size, as SciPy computes it
    steps = np.maximum(nn, mm) * (2.0 * d * np.minimum(nn, mm) + 1.0)  # (F,) cost of the exact law
    eager = (en < EAGER_EN) | (exact_regime & (steps < EAGER_STEPS))
    lazy = ~eager
    p = np.full(d.shape, np.nan)  # eager tests get theirs when settled below
    p[lazy] = _approximate_p(d[lazy], nn[lazy], mm[lazy])

    with np.errstate(divide="ignore"):
        factor = np.exp(bracket_log_ratio(np.maximum(en, EAGER_EN), np.maximum(p, BRACKET_FLOOR)))  # (F,)
    lower, upper = p / factor, np.minimum(p * factor, 1.0)
    tail = lazy & (p < BRACKET_FLOOR)
    if tail.any():
        lower[tail] = 0.0
        upper[tail] = _tail_bound(d[tail], nn[tail], mm[tail])
    unsettled = np.zeros(d.shape, dtype=bool)
    result = KSPValues(readonly(d), readonly(p), readonly(lower), readonly(upper), _readonly_mask(unsettled),
                       _readonly_mask(unsettled.copy()), nn, mm)
    return result.settle(eager)


def _tail_bound(d: FloatArray, n: IntArray, m: IntArray) -> FloatArray:
    """Upper bound of the exact p-value of tests whose approximate p-value is below the bracket's floor.

    ``P(D >= d)`` does not increase with ``d``: it is at most its value at any lattice point ``d' <= d``,
    and there at most ``p_approx(d') exp(bracket_log_ratio)`` when ``p_approx(d') >= BRACKET_FLOOR``.
    ``d'`` is the lattice point just below where the Kolmogorov tail ``2 exp(-2 en d^2)`` reaches
    ``_TAIL_ANCHOR``.  Where no such point exists (a coarse lattice) the bound is 1: unknown.
    """
    lcm = n // np.gcd(n, m) * m  # (k,)
    en = n * m / (n + m)
    anchor = np.sqrt(np.log(2.0 / _TAIL_ANCHOR) / 2.0 / en)  # (k,) D where 2 exp(-2 en D^2) = anchor
    d_anchor = np.minimum(np.floor(anchor * lcm), lcm) / lcm  # (k,) a lattice point
    p_anchor = _approximate_p(d_anchor, n, m)
    usable = (p_anchor >= BRACKET_FLOOR) & (d_anchor <= d)  # the second holds whenever the first does
    with np.errstate(divide="ignore"):
        bound = p_anchor * np.exp(bracket_log_ratio(en, np.maximum(p_anchor, BRACKET_FLOOR)))
    result: FloatArray = np.where(usable, np.minimum(bound, 1.0), 1.0)
    return result


def ks_2samp_index(index: KSIndex, ranks: CurrentRanks) -> KSResult:
    """KS test of every feature against a prepared reference; the fast path of :func:`ks_2samp_columns`.

    Every p-value is settled (exact law in the exact regime); a drift decision that needs the exact law
    only near its thresholds uses :func:`ks_statistic` and :func:`ks_p_values` instead.

    Parameters
    ----------
    index : KSIndex
        Prepared reference (``ReferenceSample.ks_index``).
    ranks : CurrentRanks
        The current window located by :func:`locate`.

    Returns
    -------
    KSResult

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.ks import KSIndex, ks_2samp_index, locate
    >>> index = KSIndex.from_sorted(np.array([[1.0], [2.0], [3.0], [4.0]]))
    >>> ks_2samp_index(index, locate(index, np.array([[3.5, 4.5, 5.5, 6.5]]))).statistic
    array([0.75])
    """
    lazy = ks_p_values(ks_statistic(index, ranks), index.n_reference, ranks.m)
    res = lazy.settle(np.ones(lazy.statistic.shape, dtype=bool))
    return KSResult(res.statistic, res.p_value, res.method)


def ks_2samp_columns(reference_sorted: npt.ArrayLike, current: npt.ArrayLike) -> KSResult:
    """Two-sided two-sample KS test of every feature of ``current`` against the reference.

    Equivalent to ``scipy.stats.ks_2samp(reference_sorted[:, j], current[:, j])`` for each column
    ``j`` (statistic identical, p-value within 1e-9), but all features are computed in one
    vectorised pass.  Builds a :class:`KSIndex` each call; a daemon keeps one per reference and calls
    :func:`ks_2samp_index`.

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
    n_features = ref.shape[1]
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
    current_sorted = np.sort(np.ascontiguousarray(cur.T), axis=1)  # (F, m)
    index = KSIndex.from_sorted(ref)
    return ks_2samp_index(index, locate(index, current_sorted))
