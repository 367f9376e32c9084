"""Multiple-testing correction of per-feature p-values (family-wise or false-discovery rate)."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from detectors._arrays import FloatArray
from detectors.errors import StatisticsError

__all__ = ["Correction", "adjust_p_values"]

Correction = Literal["bonferroni", "bh"]


def adjust_p_values(p_values: npt.ArrayLike, correction: Correction = "bonferroni") -> FloatArray:
    """Adjust p-values for testing ``F`` features at once.

    * ``"bonferroni"``: p_adj = min(1, F * p) (controls the family-wise error rate).
    * ``"bh"``: Benjamini–Hochberg step-up; with p sorted ascending, p_adj_(i) =
      min_{k >= i} F * p_(k) / k, clipped to 1 (monotone; controls the false-discovery rate);
      equal to ``scipy.stats.false_discovery_control(p, method='bh')``.

    Parameters
    ----------
    p_values : array_like, shape (F,)
        Raw p-values in [0, 1].
    correction : {"bonferroni", "bh"}, optional

    Returns
    -------
    ndarray, shape (F,)
        Adjusted p-values, in the input order.

    Examples
    --------
    >>> from detectors.multiple_testing import adjust_p_values
    >>> adjust_p_values([0.01, 0.04, 0.03], "bonferroni")
    array([0.03, 0.12, 0.09])
    >>> adjust_p_values([0.01, 0.04, 0.03], "bh")
    array([0.03, 0.04, 0.04])
    """
    if correction not in get_args(Correction):
        raise StatisticsError(f"correction must be one of {get_args(Correction)}; got {correction!r}")
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or p.size < 1:
        raise StatisticsError(f"p_values must be a non-empty 1-D array; got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise StatisticsError("p_values must be finite and in [0, 1]")
    n_tests = p.size
    if correction == "bonferroni":
        bonf: FloatArray = np.minimum(p * n_tests, 1.0)
        return bonf
    order = np.argsort(p)  # (F,)
    ranked = p[order] * (n_tests / np.arange(1, n_tests + 1))  # F * p_(i) / i
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]  # running min from the largest p down
    adjusted: FloatArray = np.empty_like(p)
    adjusted[order] = np.clip(ranked, 0.0, 1.0)
    return adjusted
