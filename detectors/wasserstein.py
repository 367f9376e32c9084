"""Wasserstein-1 (earth mover's) distance between the reference and the current sample, per feature.

With reference quantile function ``Q_a`` (n sorted values ``a``) and the sorted current sample
``c_0 <= ... <= c_{m-1}`` (whose quantile function is ``c_i`` on the level interval ``(i/m, (i+1)/m]``),

    W1 = integral_0^1 |Q_a(u) - Q_c(u)| du = sum_i integral_{i/m}^{(i+1)/m} |Q_a(u) - c_i| du.

With the reference prefix integral ``P(u) = integral_0^u Q_a`` (piecewise linear, read from prefix sums
of the sorted reference) and the crossing level ``u* = clip(#{a < c_i} / n, i/m, (i+1)/m)`` (``Q_a < c_i``
below it, ``>= c_i`` above it, because ``Q_a`` is non-decreasing), each interval contributes

    c_i (2 u* - i/m - (i+1)/m) + P(i/m) + P((i+1)/m) - 2 P(u*),

so the whole distance costs O(m) per feature after O(n) preparation of the reference.  The crossing is
clipped for most ``i`` and the knot brackets of :class:`detectors.ks.CurrentRanks` decide that; only the
other points need the exact count.  This is the exact W1 of the two empirical distributions (what
``scipy.stats.wasserstein_distance`` computes), up to floating-point rounding; values are centred on
the reference mean first so that prefix sums of large offsets do not cancel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors._arrays import FloatArray, IntArray, float_matrix, require_finite
from detectors.errors import StatisticsError
from detectors.ks import CurrentRanks, KSIndex, locate, reference_counts

__all__ = ["W1Index", "wasserstein_columns", "wasserstein_index"]


@dataclass(frozen=True, eq=False)
class W1Index:
    """Reference prefix sums for :func:`wasserstein_index`, computed once per reference.

    Attributes
    ----------
    center : ndarray, shape (F,)
        Reference mean per feature (values are centred on it).
    centered : ndarray, shape (F, n)
        Sorted reference minus ``center``.
    prefix : ndarray, shape (F, n + 1)
        ``prefix[:, k] = sum of the k smallest centred reference values``.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.wasserstein import W1Index
    >>> W1Index.from_columns(np.array([[0.0, 1.0, 2.0]])).prefix
    array([[ 0., -1., -1.,  0.]])
    """

    center: FloatArray
    centered: FloatArray
    prefix: FloatArray
    _levels: dict[int, tuple[FloatArray, FloatArray]] = field(default_factory=dict, init=False, repr=False,
                                                              compare=False)

    def level_mass(self, m: int) -> FloatArray:
        """``P((i+1)/m) - P(i/m)`` for ``i < m``, shape (F, m); memoised for the last few window sizes."""
        return self._level_grid(m)[1]

    def level_prefix(self, m: int) -> FloatArray:
        """``P(i/m)`` for ``i <= m``, shape (F, m + 1); memoised like :meth:`level_mass`."""
        return self._level_grid(m)[0]

    def _level_grid(self, m: int) -> tuple[FloatArray, FloatArray]:
        if m not in self._levels:
            n = self.centered.shape[1]
            # P at the levels i/m: k = floor(i n / m) whole reference values plus a fraction of a_k.
            level = np.arange(m + 1, dtype=np.int64) * n  # (m+1,) i n
            whole = level // m
            frac = (level - whole * m) / (n * m)  # (m+1,) i/m - k/n
            p_grid = self.prefix[:, whole] / n + frac * self.centered[:, np.minimum(whole, n - 1)]  # (F, m+1)
            if len(self._levels) >= 4:  # bounded: windows of a stream come in a few sizes
                self._levels.pop(next(iter(self._levels)))
            mass = np.diff(p_grid, axis=1)
            for arr in (p_grid, mass):
                arr.setflags(write=False)
            self._levels[m] = (p_grid, mass)
        return self._levels[m]

    @classmethod
    def from_columns(cls, columns: FloatArray) -> W1Index:
        """Build from sorted reference rows ``(F, n)``."""
        center = columns.mean(axis=1)  # (F,)
        centered = columns - center[:, None]  # (F, n)
        prefix = np.zeros((columns.shape[0], columns.shape[1] + 1))  # (F, n+1)
        np.cumsum(centered, axis=1, out=prefix[:, 1:])
        return cls(center, centered, prefix)


@functools.lru_cache(maxsize=16)
def _clip_thresholds(n: int, m: int, stride: int) -> tuple[IntArray, IntArray]:
    """Per level interval i, the knot counts k for which the crossing is surely clipped, (m,) each.

    ``#{a < c_i}`` lies in ``((k-1) stride, min(k stride, n)]`` (0 for k = 0): the crossing is at
    ``i/m`` when ``min(k stride, n) m <= i n`` (k <= low[i]) and at ``(i+1)/m`` when
    ``((k-1) stride + 1) m >= (i+1) n`` (k >= high[i]).
    """
    i = np.arange(m, dtype=np.int64)
    low = np.where(i * n >= n * m, np.iinfo(np.int64).max, (i * n) // (stride * m))  # k stride m <= i n
    need = (i + 1) * n - m  # (k-1) stride m >= need
    high = 1 + np.maximum(0, -(-need // (stride * m)))
    for arr in (low, high):
        arr.setflags(write=False)
    return low, high


def wasserstein_index(ks_index: KSIndex, w1_index: W1Index, ranks: CurrentRanks) -> FloatArray:
    """W1 per feature of a located current window against a prepared reference; returns (F,).

    Parameters
    ----------
    ks_index : KSIndex
        The reference's search index (also used by the KS test).
    w1_index : W1Index
        The reference's prefix sums.
    ranks : CurrentRanks
        The current window from :func:`detectors.ks.locate`.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.ks import KSIndex, locate
    >>> from detectors.wasserstein import W1Index, wasserstein_index
    >>> ref = np.array([[0.0, 1.0, 3.0]])
    >>> ks_index = KSIndex.from_sorted(ref.T)
    >>> wasserstein_index(ks_index, W1Index.from_columns(ref), locate(ks_index, np.array([[5.0, 6.0]])))
    array([4.16666667])
    """
    n, m, stride = ks_index.n_reference, ranks.m, ks_index.stride
    n_features = ranks.columns.shape[0]
    cur = ranks.columns - w1_index.center[:, None]  # (F, m) centred current
    mass = w1_index.level_mass(m)  # (F, m) integral of Q_a over (i/m, (i+1)/m]
    low, high = _clip_thresholds(n, m, stride)
    below = ranks.knots_lt <= low  # (F, m) crossing at i/m: Q_a >= c_i on the whole interval
    above = ranks.knots_lt >= high  # crossing at (i+1)/m: Q_a < c_i on the whole interval
    gap = mass - cur / m  # (F, m) integral of (Q_a - c_i)
    total = np.sum(gap, axis=1, where=below) - np.sum(gap, axis=1, where=above)  # (F,)

    inside = np.flatnonzero(~(below | above))  # flat f m + i
    counts = reference_counts(ks_index, ranks, inside, "left")  # exact #{a < c_i}
    feature, i = np.divmod(inside, m)
    c = cur.ravel()[inside]
    grid = w1_index.level_prefix(m).ravel()  # (F (m+1),) P(i/m) of feature f at f (m+1) + i
    p0 = grid[inside + feature]  # P(i/m)
    p1 = grid[inside + feature + 1]  # P((i+1)/m)
    # the bracket straddled the interval; the exact crossing may still be clipped to either end
    at_low, at_high = counts * m <= i * n, counts * m >= (i + 1) * n
    u_star = np.where(at_low, i / m, np.where(at_high, (i + 1) / m, counts / n))
    p_star = np.where(at_low, p0, np.where(at_high, p1, w1_index.prefix.ravel()[feature * (n + 1) + counts] / n))
    term = c * (2 * u_star - (2 * i + 1) / m) + p0 + p1 - 2 * p_star
    total += np.bincount(feature, weights=term, minlength=n_features)
    result: FloatArray = np.maximum(total, 0.0)
    return result


def wasserstein_columns(reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """Wasserstein-1 distance between each column of ``reference`` and of ``current``.

    Equal to ``scipy.stats.wasserstein_distance(reference[:, j], current[:, j])`` for every ``j``
    (to rounding), all features at once.

    Parameters
    ----------
    reference : array_like, shape (n, F)
        Finite reference sample (any order).
    current : array_like, shape (m, F)
        Finite current sample (any order).

    Returns
    -------
    ndarray, shape (F,)

    Raises
    ------
    StatisticsError
        On shape mismatch, empty samples or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.wasserstein import wasserstein_columns
    >>> wasserstein_columns([[0.0], [1.0], [3.0]], [[5.0], [6.0]])
    array([4.16666667])
    """
    ref = float_matrix(reference, "reference")
    cur = float_matrix(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise StatisticsError(f"current has {cur.shape[1]} features but reference has {ref.shape[1]}")
    require_finite(ref, "reference")
    require_finite(cur, "current")
    ks_index = KSIndex.from_sorted(np.sort(ref, axis=0))
    ranks = locate(ks_index, np.sort(np.ascontiguousarray(cur.T), axis=1))
    return wasserstein_index(ks_index, W1Index.from_columns(ks_index.columns), ranks)
