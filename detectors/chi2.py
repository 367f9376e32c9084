"""Pearson chi-squared goodness-of-fit test of category counts, with small-count pooling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from detectors._arrays import float_vector
from detectors.errors import StatisticsError

__all__ = ["PROB_FLOOR", "Chi2Result", "chi2_goodness_of_fit"]

#: Expected probabilities are clipped below at this value and renormalised, so that a category
#: with expected probability 0 but observed counts gives a large finite statistic, not inf/nan.
PROB_FLOOR: float = 1e-6


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
    if not min_expected >= 0:
        raise StatisticsError(f"min_expected must be >= 0; got {min_expected!r}")

    probs = np.maximum(probs / probs.sum(), PROB_FLOOR)
    probs = probs / probs.sum()
    expected = obs.sum() * probs  # (K,)

    small = expected < min_expected  # (K,)
    merged_bins = 0
    if small.any():
        pooled = small.copy()
        if expected[pooled].sum() < min_expected and not pooled.all():
            # still too small: absorb the remaining category with the smallest expected count
            rest = np.flatnonzero(~pooled)
            pooled[rest[np.argmin(expected[rest])]] = True
        merged_bins = int(pooled.sum())
        obs = np.append(obs[~pooled], obs[pooled].sum())
        expected = np.append(expected[~pooled], expected[pooled].sum())

    dof = obs.size - 1
    if dof < 1:
        return Chi2Result(statistic=0.0, p_value=1.0, dof=0, merged_bins=merged_bins)
    statistic = float(np.sum((obs - expected) ** 2 / expected))
    p_value = float(stats.chi2.sf(statistic, dof))
    return Chi2Result(statistic=statistic, p_value=p_value, dof=dof, merged_bins=merged_bins)
