"""Drift decisions for one window: per-feature input drift and predicted-class drift.

A feature drifts when its KS test is significant after multiple-testing correction **and** the KS
statistic reaches an effect-size floor: with large windows, statistically significant but tiny
differences are common, and ``min_effect`` (a maximum ECDF gap, in [0, 1]) keeps them from alerting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import get_args

import numpy as np
import numpy.typing as npt

from detectors._arrays import class_indices, float_matrix
from detectors.chi2 import chi2_goodness_of_fit
from detectors.errors import StatisticsError
from detectors.ks import ks_2samp_columns
from detectors.multiple_testing import Correction, adjust_p_values
from detectors.psi import bin_proportions, jensen_shannon, psi
from detectors.reference import ReferenceSample

__all__ = [
    "Correction",
    "FeatureDrift",
    "FeatureDriftResult",
    "PredictionDriftResult",
    "feature_drift",
    "prediction_drift",
]


@dataclass(frozen=True)
class FeatureDrift:
    """Drift statistics of one feature (NaN statistics when the window was insufficient)."""

    name: str
    ks_statistic: float
    p_value: float
    p_adjusted: float
    psi: float
    js_distance: float
    drifted: bool


@dataclass(frozen=True)
class FeatureDriftResult:
    """Per-feature drift of one window against the reference.

    ``n_current`` counts the rows actually tested (after dropping the ``excluded_rows`` rows that
    held a non-finite value).
    """

    features: tuple[FeatureDrift, ...]
    n_reference: int
    n_current: int
    alpha: float
    correction: str
    min_effect: float
    insufficient: bool
    excluded_rows: int

    @property
    def drifted(self) -> bool:
        """True when any feature drifted (always False for an insufficient window)."""
        return not self.insufficient and any(f.drifted for f in self.features)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Names of the drifted features, in feature order."""
        return tuple(f.name for f in self.features if f.drifted)


@dataclass(frozen=True)
class PredictionDriftResult:
    """Predicted-class mix of one window against the reference class priors."""

    statistic: float
    p_value: float
    dof: int
    js_distance: float
    n_current: int
    drifted: bool
    insufficient: bool
    observed: tuple[int, ...]
    expected_probs: tuple[float, ...]


def _check_thresholds(alpha: float, min_effect: float, min_samples: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha!r}")
    if not 0.0 <= min_effect <= 1.0:
        raise StatisticsError(f"min_effect must be in [0, 1]; got {min_effect!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int | np.integer) or min_samples < 1:
        raise StatisticsError(f"min_samples must be a positive integer; got {min_samples!r}")


def feature_drift(
    reference: ReferenceSample,
    current: npt.ArrayLike,
    alpha: float = 0.01,
    correction: Correction = "bonferroni",
    min_effect: float = 0.1,
    min_samples: int = 30,
) -> FeatureDriftResult:
    """Test every feature of a window for drift against the reference, in one vectorised pass.

    Rows of ``current`` holding any NaN/inf are dropped (counted in ``excluded_rows``).  With fewer
    than ``min_samples`` rows left the result is ``insufficient`` (NaN statistics, nothing drifted).
    Otherwise each feature gets the two-sample KS statistic and p-value, PSI and Jensen–Shannon
    distance on the reference quantile bins; p-values are adjusted across the F features, and

        drifted_j = (p_adjusted_j < alpha) and (ks_statistic_j >= min_effect).

    Parameters
    ----------
    reference : ReferenceSample
        From :func:`detectors.reference.build_reference` or a loaded profile.
    current : array_like, shape (m, F)
        Window, columns in ``reference.feature_names`` order.
    alpha : float, optional
        Significance level for the adjusted p-values (default 0.01).
    correction : {"bonferroni", "bh"}, optional
        Multiple-testing correction across features (default Bonferroni).
    min_effect : float, optional
        Effect-size floor on the KS statistic (default 0.1).
    min_samples : int, optional
        Fewest usable rows to test at all (default 30).

    Returns
    -------
    FeatureDriftResult

    Raises
    ------
    StatisticsError
        When the window is not 2-D, its feature count differs from the reference's, or a parameter
        is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors import build_reference, feature_drift
    >>> rng = np.random.default_rng(0)
    >>> ref = build_reference(rng.normal(size=(2000, 2)), ["a", "b"])
    >>> window = rng.normal(size=(500, 2)) + [0.0, 1.0]
    >>> feature_drift(ref, window).drifted_features
    ('b',)
    """
    _check_thresholds(alpha, min_effect, min_samples)
    if correction not in get_args(Correction):
        raise StatisticsError(f"correction must be one of {get_args(Correction)}; got {correction!r}")
    names = reference.feature_names
    n_features = len(names)
    cur = np.asarray(current, dtype=np.float64)
    if cur.ndim != 2:
        raise StatisticsError(f"current window must be 2-D (rows, features); got shape {cur.shape}")
    if cur.shape[1] != n_features:
        raise StatisticsError(
            f"current window has {cur.shape[1]} features but the reference has {n_features}"
        )
    finite_rows = np.isfinite(cur).all(axis=1)  # (m,)
    excluded = int(cur.shape[0] - np.count_nonzero(finite_rows))
    if excluded:
        cur = cur[finite_rows]
    n_current = int(cur.shape[0])

    def result(features: tuple[FeatureDrift, ...], insufficient: bool) -> FeatureDriftResult:
        return FeatureDriftResult(
            features=features,
            n_reference=int(reference.sorted_values.shape[0]),
            n_current=n_current,
            alpha=float(alpha),
            correction=str(correction),
            min_effect=float(min_effect),
            insufficient=insufficient,
            excluded_rows=excluded,
        )

    if n_current < min_samples:
        nan = math.nan
        return result(tuple(FeatureDrift(name, nan, nan, nan, nan, nan, False) for name in names), True)

    cur = float_matrix(cur, "current window")
    ks = ks_2samp_columns(reference.sorted_values, cur)  # (F,) each
    props = bin_proportions(cur, reference.edges)  # (F, B)
    psi_values = psi(reference.proportions, props)  # (F,)
    js_values = jensen_shannon(reference.proportions, props)  # (F,)
    p_adjusted = adjust_p_values(ks.p_value, correction)  # (F,)
    drifted = (p_adjusted < alpha) & (ks.statistic >= min_effect)  # (F,)

    features = tuple(
        FeatureDrift(name, float(d), float(p), float(pa), float(s), float(j), bool(flag))
        for name, d, p, pa, s, j, flag in zip(
            names, ks.statistic, ks.p_value, p_adjusted, psi_values, js_values, drifted, strict=True
        )
    )
    return result(features, False)


def prediction_drift(
    reference: ReferenceSample,
    predictions: npt.ArrayLike,
    alpha: float = 0.01,
    min_effect: float = 0.1,
    min_samples: int = 30,
) -> PredictionDriftResult:
    """Test whether the predicted-class mix of a window departs from the reference priors.

    Chi-squared goodness of fit of the class counts against ``reference.class_priors`` (see
    :func:`detectors.chi2.chi2_goodness_of_fit` for small-count pooling), plus the Jensen–Shannon
    distance (base 2) between observed proportions and priors as effect size:

        drifted = (p_value < alpha) and (js_distance >= min_effect).

    Parameters
    ----------
    reference : ReferenceSample
        Must carry ``class_priors``.
    predictions : array_like of int, shape (m,)
        Predicted class indices in ``[0, K)``.
    alpha, min_effect : float, optional
        Significance level (default 0.01) and JS-distance floor (default 0.1).
    min_samples : int, optional
        With fewer predictions the result is ``insufficient`` (NaN statistics, not drifted).

    Returns
    -------
    PredictionDriftResult

    Raises
    ------
    StatisticsError
        When the reference has no class priors or a prediction is outside ``[0, K)``.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors import build_reference, prediction_drift
    >>> ref = build_reference(np.zeros((4, 1)), ["x"], predictions=[0, 1, 0, 1])
    >>> res = prediction_drift(ref, np.array([0] * 90 + [1] * 10))
    >>> res.drifted, res.observed, res.expected_probs
    (True, (90, 10), (0.5, 0.5))
    """
    _check_thresholds(alpha, min_effect, min_samples)
    if reference.class_priors is None:
        raise StatisticsError("the reference has no class priors (build it with predictions=...)")
    priors = reference.class_priors  # (K,)
    n_classes = priors.shape[0]
    pred = class_indices(predictions, "predictions")
    outside = (pred < 0) | (pred >= n_classes)
    if outside.any():
        raise StatisticsError(f"predictions must be class indices in [0, {n_classes}); found "
                              f"{np.unique(pred[outside])[:5].tolist()}")
    counts = np.bincount(pred, minlength=n_classes)  # (K,)
    n_current = int(pred.size)
    observed = tuple(int(c) for c in counts)
    expected_probs = tuple(float(p) for p in priors)
    if n_current < min_samples:
        nan = math.nan
        return PredictionDriftResult(nan, nan, 0, nan, n_current, False, True, observed, expected_probs)

    chi2 = chi2_goodness_of_fit(counts, priors)
    js = float(jensen_shannon(counts, priors))
    drifted = chi2.p_value < alpha and js >= min_effect
    return PredictionDriftResult(
        statistic=chi2.statistic,
        p_value=chi2.p_value,
        dof=chi2.dof,
        js_distance=js,
        n_current=n_current,
        drifted=bool(drifted),
        insufficient=False,
        observed=observed,
        expected_probs=expected_probs,
    )
