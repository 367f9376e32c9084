"""Binned distribution distances: Population Stability Index and Jensen–Shannon distance.

Bins are per-feature reference quantiles.  Convention (right-closed bins, like
``np.searchsorted(edges, v, side='left')``): with inner edges ``e_1 <= ... <= e_{B-1}``,

    bin 0:   v <= e_1
    bin k:   e_k < v <= e_{k+1}
    bin B-1: v > e_{B-1}

Tied edges (a feature with a repeated value) simply produce empty bins; proportions still sum to 1.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

from detectors._arrays import FloatArray, float_matrix, require_finite
from detectors.errors import StatisticsError

__all__ = ["bin_proportions", "jensen_shannon", "psi", "quantile_edges"]


def quantile_edges(reference: npt.ArrayLike, bins: int = 10) -> FloatArray:
    """Inner bin edges at the reference quantiles ``k / bins``, ``k = 1 .. bins-1``.

    Parameters
    ----------
    reference : array_like, shape (n, F)
        Finite reference sample (sorted or not).
    bins : int, optional
        Number of bins B >= 2 (default 10).

    Returns
    -------
    ndarray, shape (F, bins - 1)
        Non-decreasing edges per feature (linear-interpolated quantiles; ties give equal edges).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.psi import quantile_edges
    >>> quantile_edges(np.arange(1.0, 6.0).reshape(5, 1), bins=2)
    array([[3.]])
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 2:
        raise StatisticsError(f"bins must be an integer >= 2; got {bins!r}")
    ref = float_matrix(reference, "reference")
    require_finite(ref, "reference")
    q = np.arange(1, bins) / bins  # (B-1,)
    edges: FloatArray = np.ascontiguousarray(np.quantile(ref, q, axis=0).T)  # (F, B-1)
    return edges


def bin_proportions(x: npt.ArrayLike, edges: npt.ArrayLike) -> FloatArray:
    """Proportion of the rows of ``x`` in each right-closed bin, per feature.

    Parameters
    ----------
    x : array_like, shape (m, F)
        Finite sample.
    edges : array_like, shape (F, B - 1)
        Non-decreasing inner edges per feature (see :func:`quantile_edges`).

    Returns
    -------
    ndarray, shape (F, B)
        Row ``j`` sums to 1.  Bin ``k`` holds ``edges[j, k-1] < v <= edges[j, k]``.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.psi import bin_proportions
    >>> bin_proportions(np.array([[0.5], [1.0], [1.5], [9.0]]), np.array([[1.0, 2.0]]))
    array([[0.5 , 0.25, 0.25]])
    """
    values = float_matrix(x, "x")
    require_finite(values, "x")
    e = np.asarray(edges, dtype=np.float64)
    n_features = values.shape[1]
    if e.ndim != 2 or e.shape[0] != n_features:
        raise StatisticsError(f"edges must have shape ({n_features}, bins-1) for x with {n_features} "
                              f"features; got {e.shape}")
    if np.any(e[:, 1:] < e[:, :-1]) or not np.isfinite(e).all():
        raise StatisticsError("edges must be finite and non-decreasing along each row")
    n_bins = e.shape[1] + 1
    # bin index = #{edges < v}, i.e. searchsorted(edges, v, side='left'), for all features at once
    idx = np.count_nonzero(values[:, :, None] > e[None, :, :], axis=2)  # (m, F)
    # One bincount over flattened (feature, bin) cells: cell = f * B + bin.
    cells = idx + np.arange(n_features) * n_bins  # (m, F)
    counts = np.bincount(cells.ravel(), minlength=n_features * n_bins).reshape(n_features, n_bins)
    props: FloatArray = counts / values.shape[0]  # (F, B)
    return props


def _props_pair(
    reference_props: npt.ArrayLike, current_props: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    r = np.asarray(reference_props, dtype=np.float64)
    c = np.asarray(current_props, dtype=np.float64)
    if r.shape != c.shape or r.ndim not in (1, 2) or r.shape[-1] < 1:
        raise StatisticsError(
            f"proportions must have equal shapes (B,) or (F, B); got {r.shape} and {c.shape}"
        )
    if not (np.isfinite(r).all() and np.isfinite(c).all()) or (r < 0).any() or (c < 0).any():
        raise StatisticsError("proportions must be finite and non-negative")
    return r, c


def psi(reference_props: npt.ArrayLike, current_props: npt.ArrayLike, eps: float = 1e-4) -> FloatArray:
    """Population Stability Index per feature.

    PSI = sum_k (c_k - r_k) * ln(c_k / r_k), with ``r`` and ``c`` first clipped below at ``eps``
    so that empty bins contribute a large but finite term (no renormalisation after clipping).

    Parameters
    ----------
    reference_props, current_props : array_like, shape (F, B) or (B,)
        Bin proportions (see :func:`bin_proportions`).
    eps : float, optional
        Floor applied to both proportions (default 1e-4).

    Returns
    -------
    ndarray, shape (F,) (or a 0-d array for 1-D input)

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.psi import psi
    >>> psi(np.array([[0.5, 0.5]]), np.array([[0.5, 0.5]]))
    array([0.])
    >>> round(float(psi(np.array([0.5, 0.5]), np.array([0.25, 0.75]))), 6)  # 0.25 * ln 3
    0.274653
    """
    if not eps > 0:
        raise StatisticsError(f"eps must be positive; got {eps!r}")
    r, c = _props_pair(reference_props, current_props)
    r = np.maximum(r, eps)
    c = np.maximum(c, eps)
    out: FloatArray = np.sum((c - r) * np.log(c / r), axis=-1)  # (F,)
    return out


def jensen_shannon(reference_props: npt.ArrayLike, current_props: npt.ArrayLike) -> FloatArray:
    """Jensen–Shannon distance (base 2, in [0, 1]) per feature.

    With p, q normalised to sum 1 and M = (p + q) / 2:
    JS = sqrt((KL(p || M) + KL(q || M)) / (2 ln 2)), equal to
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` along the last axis (tiny negative
    round-off under the square root is clipped to 0 instead of giving NaN).

    Parameters
    ----------
    reference_props, current_props : array_like, shape (F, B) or (B,)
        Non-negative weights per bin; each row must have a positive sum.

    Returns
    -------
    ndarray, shape (F,) (or a 0-d array for 1-D input)

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.psi import jensen_shannon
    >>> jensen_shannon(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[0.0, 1.0], [0.5, 0.5]]))
    array([1., 0.])
    """
    r, c = _props_pair(reference_props, current_props)
    r_sum = r.sum(axis=-1, keepdims=True)
    c_sum = c.sum(axis=-1, keepdims=True)
    if (r_sum <= 0).any() or (c_sum <= 0).any():
        raise StatisticsError("each row of proportions must have a positive sum")
    p = r / r_sum  # (F, B)
    q = c / c_sum  # (F, B)
    mid = (p + q) / 2.0
    # rel_entr(x, y) = x ln(x / y), 0 when x == 0
    js = np.sum(special.rel_entr(p, mid), axis=-1) + np.sum(special.rel_entr(q, mid), axis=-1)
    js = js / np.log(2.0)
    out: FloatArray = np.sqrt(np.maximum(js / 2.0, 0.0))
    return out
