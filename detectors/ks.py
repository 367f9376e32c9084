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
values brackets each count to within ``stride``, the brackets bound every gap, and the exact count is
looked up (binary search) only for the points whose upper bound can still reach the largest lower
bound.  Searches for all features run at once on complex keys ``feature + 1j * value``, which NumPy
orders lexicographically: exact, tie-preserving, and one disjoint key range per feature.

The p-value follows ``ks_2samp(method='auto')``: exact when ``max(n, m) <= 10000`` (with SciPy's
fallback to the asymptotic law when the exact computation is numerically unreliable), otherwise
``kstwo.sf(D, round(n*m/(n+m)))``, evaluated for all features at once by
:func:`detectors.kolmogorov.kstwo_sf`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from detectors._arrays import FloatArray, IntArray, float_matrix, readonly, require_finite
from detectors.errors import StatisticsError
from detectors.kolmogorov import kstwo_sf
from detectors.smirnov import smirnov_sf_exact

__all__ = ["KNOTS", "MAX_EXACT_N", "CurrentRanks", "KSIndex", "KSResult", "column_keys", "ks_2samp_columns",
           "ks_2samp_index", "ks_smallest_p_value", "locate", "min_detectable_rows", "reference_counts",
           "sort_reference"]

#: Largest sample size for which the exact p-value is used (SciPy's ``MAX_AUTO_N``).
MAX_EXACT_N: int = 10000
#: Knots per feature of a :class:`KSIndex` (every ``ceil(n / KNOTS)``-th sorted reference value).
KNOTS: int = 1024

ComplexArray = npt.NDArray[np.complex128]
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


def column_keys(columns: FloatArray) -> ComplexArray:
    """Flatten rows ``(F, k)`` into keys ``j + 1j * value`` (F*k,), sorted when each row is sorted.

    NumPy sorts and searches complex numbers lexicographically (real part first), so the key of
    feature ``j`` lies in its own block and compares values exactly, ties included.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.ks import column_keys
    >>> column_keys(np.array([[1.0, 2.0], [0.5, 0.5]]))
    array([0.+1.j , 0.+2.j , 1.+0.5j, 1.+0.5j])
    """
    keys = np.empty(columns.shape, dtype=np.complex128)  # (F, k)
    keys.real = np.arange(columns.shape[0])[:, None]
    keys.imag = columns
    return keys.ravel()


@dataclass(frozen=True, eq=False)
class KSIndex:
    """Everything the KS statistic needs from a sorted reference, computed once.

    Attributes
    ----------
    columns : ndarray, shape (F, n)
        Sorted reference values, one row per feature.
    keys : ndarray of complex, shape (F*n,)
        :func:`column_keys` of ``columns``.
    knots : ndarray of complex, shape (F*K,)
        Keys of every ``stride``-th reference value (``K = ceil(n / stride)``).
    knot_feature : ndarray of int, shape (F*K,)
        Feature of each knot.
    stride : int
        Reference values between knots.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.ks import KSIndex
    >>> index = KSIndex.from_sorted(np.arange(10.0).reshape(5, 2), stride=2)
    >>> index.columns.shape, index.knots.size
    ((2, 5), 6)
    """

    columns: FloatArray
    keys: ComplexArray
    knots: ComplexArray
    knot_feature: IntArray
    stride: int

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
        knot_values = np.ascontiguousarray(columns[:, ::step])  # (F, K)
        n_features, n_knots = knot_values.shape
        return cls(
            columns=columns,
            keys=column_keys(columns),
            knots=column_keys(knot_values),
            knot_feature=np.repeat(np.arange(n_features, dtype=np.int64), n_knots),
            stride=step,
        )

    @property
    def n_reference(self) -> int:
        """Reference sample size n."""
        return int(self.columns.shape[1])


@dataclass(frozen=True, eq=False)
class CurrentRanks:
    """A sorted current window located among the knots of a :class:`KSIndex`.

    Attributes
    ----------
    columns : ndarray, shape (F, m)
        Sorted current values, one row per feature.
    keys : ndarray of complex, shape (F*m,)
        :func:`column_keys` of ``columns``.
    knots_le, knots_lt : ndarray of int, shape (F, m)
        Number of knots ``<= c_i`` and ``< c_i``.  With ``s = stride`` the exact reference counts satisfy
        ``(k - 1) s < #{a <= c_i} <= k s`` for ``k = knots_le`` (and likewise ``#{a < c_i}`` with
        ``knots_lt``), clipped to [0, n].
    """

    columns: FloatArray
    keys: ComplexArray
    knots_le: IntArray
    knots_lt: IntArray

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
    keys = column_keys(current_sorted)  # (F*m,)

    # Knot k is <= c_i exactly for i >= #{current < knot_k}, and < c_i for i >= #{current <= knot_k};
    # the two positions differ only for a knot equal to a current value, searched again on its own.
    pos_le = np.searchsorted(keys, index.knots, side="left")  # (F*K,) flat, in [f m, (f+1) m]
    pos_lt = pos_le.copy()
    tied = np.flatnonzero(keys[np.minimum(pos_le, keys.size - 1)] == index.knots)
    pos_lt[tied] = np.searchsorted(keys, index.knots[tied], side="right")

    def knots_below(pos: IntArray) -> IntArray:
        hits = np.bincount(pos + index.knot_feature, minlength=n_features * (m + 1))  # flat f (m+1) + local
        below: IntArray = np.cumsum(hits.reshape(n_features, m + 1)[:, :m], axis=1)  # (F, m)
        return below

    knots_le = knots_below(pos_le)
    return CurrentRanks(current_sorted, keys, knots_le, knots_below(pos_lt) if tied.size else knots_le)


def reference_counts(index: KSIndex, ranks: CurrentRanks, flat: IntArray, side: Side) -> IntArray:
    """Exact ``#{a <= c}`` (side ``"right"``) or ``#{a < c}`` (``"left"``) at flat positions ``f m + i``."""
    feature = flat // ranks.m
    counts: IntArray = np.searchsorted(index.keys, ranks.keys[flat], side=side) - feature * index.n_reference
    return counts


def _max_gap(index: KSIndex, ranks: CurrentRanks, side: Side) -> FloatArray:
    """``D+`` (side ``"right"``) or ``D-`` (side ``"left"``) per feature; returns (F,).

    Works in integer units of ``1 / (n m)``: the exact gap at current point ``i`` is
    ``(i+1) n - m #{a <= c_i}`` (D+) or ``m #{a < c_i} - i n`` (D-).
    """
    n, stride, m = index.n_reference, index.stride, ranks.m
    n_features = index.columns.shape[0]
    # The count lies in ((k-1) stride, k stride] with k = knots below, so `bound` is within stride*m of
    # the exact gap: a lower bound for D+, an upper bound for D-.
    step = np.arange(m, dtype=np.int64) * n  # (m,) i n
    if side == "right":
        bound = (step + n) - ranks.knots_le * (stride * m)  # (F, m)
    else:
        bound = ranks.knots_lt * (stride * m) - step  # (F, m)
    best = bound.max(axis=1, keepdims=True)  # (F, 1)
    # Only points whose bound interval reaches the best bound can hold the maximum.
    cand = np.flatnonzero(bound >= best - stride * m)  # flat f m + i, sorted; every feature has one
    counts = reference_counts(index, ranks, cand, side)
    feature, i = np.divmod(cand, m)
    # Same float operations as scipy: searchsorted(...)/n1 - searchsorted(...)/n2.
    gap = (i + 1) / m - counts / n if side == "right" else counts / n - i / m
    result: FloatArray = np.maximum.reduceat(gap, np.searchsorted(feature, np.arange(n_features)))  # (F,)
    return result


def _asymptotic_p(d: FloatArray, n: int, m: int) -> FloatArray:
    """Asymptotic two-sided p-value ``kstwo.sf(D, round(n*m/(n+m)))`` as in SciPy; shape of ``d``."""
    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)  # effective sample size
    return kstwo_sf(d, int(np.round(en)))


def ks_2samp_index(index: KSIndex, ranks: CurrentRanks) -> KSResult:
    """KS test of every feature against a prepared reference; the fast path of :func:`ks_2samp_columns`.

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
    n, m = index.n_reference, ranks.m
    n_features = ranks.columns.shape[0]
    d_plus = _max_gap(index, ranks, "right")  # (F,)
    d_minus = _max_gap(index, ranks, "left")  # (F,)
    d = np.clip(np.maximum(d_plus, d_minus), 0.0, 1.0)  # (F,)
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
