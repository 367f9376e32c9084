"""Drift decisions for one window: per-feature input drift and predicted-class drift.

A feature drifts when its KS test is significant after multiple-testing correction **and** the KS
statistic reaches an effect-size floor: with large windows, statistically significant but tiny
differences are common, and ``min_effect`` (a maximum ECDF gap, in [0, 1]) keeps them from alerting.

Why the default floor is 0.025.  For a normal feature a mean shift of ``k`` standard deviations moves
the ECDF by at most ``2 Phi(k/2) - 1 ~ 0.4 k``, so a 0.1-sd shift gives KS ~0.040 and is found.  On
undrifted data the KS statistic of ``n`` reference and ``m`` window rows has the asymptotic Kolmogorov
tail ``P(D > d) ~ 2 exp(-2 lambda^2)`` with ``lambda = d / sqrt((n + m) / (n m))``.  With n = 100,000
and m = 10,000, ``d = 0.025`` gives ``lambda ~ 2.38`` and a tail of ~2e-5, so 22 features x 100 windows
expect ~0.05 false windows.  The previous floor 0.02 sat below the Bonferroni cut-off at that size
(alpha 0.01 over 22 tests: KS ~0.0214) and so removed nothing: undrifted windows alarmed at the alpha
level.  With a smaller reference (n = 20,000, m = 10,000) the Bonferroni cut-off itself is ~0.025 and
the floor adds little; with larger windows it is the floor that keeps significant gaps of a few
thousandths quiet.  The categorical and predicted-class floors (Jensen–Shannon distance) stay at 0.02.

:func:`window_drift` tests numeric and categorical features of one window together, with the
multiple-testing correction spanning all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import get_args

import numpy as np
import numpy.typing as npt

from detectors._arrays import FloatArray, class_indices
from detectors.categorical import (
    CategoricalDriftResult,
    CategoricalReference,
    CategoricalTests,
    categorical_tests,
    decide_categorical,
)
from detectors.chi2 import Chi2Test, chi2_goodness_of_fit, chi2_homogeneity
from detectors.errors import StatisticsError
from detectors.ks import KSResult, column_keys, ks_2samp_index, locate
from detectors.multiple_testing import Correction, adjust_p_values
from detectors.psi import jensen_shannon, psi
from detectors.reference import ReferenceSample
from detectors.wasserstein import wasserstein_index

__all__ = [
    "Correction",
    "FeatureDrift",
    "FeatureDriftResult",
    "PredictionDriftResult",
    "WindowDriftResult",
    "feature_drift",
    "prediction_drift",
    "window_drift",
]


@dataclass(frozen=True)
class FeatureDrift:
    """Drift statistics of one feature (NaN statistics when the window was insufficient).

    ``wasserstein`` is the W1 distance between reference and window divided by the reference
    standard deviation (inf when that is 0 and the window differs, 0 when both are constant-equal).
    """

    name: str
    ks_statistic: float
    p_value: float
    p_adjusted: float
    psi: float
    js_distance: float
    drifted: bool
    wasserstein: float = math.nan


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
    """Predicted-class mix of one window against the reference's.

    ``test`` is ``"homogeneity"`` (reference class counts against window counts), or
    ``"goodness_of_fit"`` for a reference that has class priors but no class counts.
    """

    statistic: float
    p_value: float
    dof: int
    js_distance: float
    n_current: int
    drifted: bool
    insufficient: bool
    observed: tuple[int, ...]
    expected_probs: tuple[float, ...]
    test: Chi2Test = "homogeneity"


def _check_thresholds(alpha: float, min_effect: float, min_samples: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha!r}")
    if not 0.0 <= min_effect <= 1.0:
        raise StatisticsError(f"min_effect must be in [0, 1]; got {min_effect!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int | np.integer) or min_samples < 1:
        raise StatisticsError(f"min_samples must be a positive integer; got {min_samples!r}")


@dataclass(frozen=True, eq=False)
class _NumericTests:
    """Raw per-feature statistics of a window (before correction), each of shape (F,)."""

    ks: KSResult
    psi: FloatArray
    js: FloatArray
    wasserstein: FloatArray


def _clean_window(reference: ReferenceSample, current: npt.ArrayLike) -> tuple[FloatArray, int]:
    """The window as float64 (m, F) without its non-finite rows, and how many rows were dropped."""
    n_features = len(reference.feature_names)
    cur = np.asarray(current, dtype=np.float64)
    if cur.ndim != 2:
        raise StatisticsError(f"current window must be 2-D (rows, features); got shape {cur.shape}")
    if cur.shape[1] != n_features:
        raise StatisticsError(
            f"current window has {cur.shape[1]} features but the reference has {n_features}"
        )
    finite_rows = np.isfinite(cur).all(axis=1)  # (m,)
    excluded = int(cur.shape[0] - np.count_nonzero(finite_rows))
    return (cur[finite_rows] if excluded else cur), excluded


def _numeric_tests(reference: ReferenceSample, cur: FloatArray) -> _NumericTests:
    """KS, PSI, JS and normalised W1 of every feature of a finite window (m >= 1, F)."""
    columns = np.sort(np.ascontiguousarray(cur.T), axis=1)  # (F, m) sorted per feature
    m = columns.shape[1]
    ranks = locate(reference.ks_index, columns)
    ks = ks_2samp_index(reference.ks_index, ranks)  # (F,) each
    w1 = wasserstein_index(reference.ks_index, reference.w1_index, ranks)  # (F,)
    std = reference.std
    with np.errstate(divide="ignore", invalid="ignore"):
        w1_norm = np.where(std > 0, w1 / std, np.where(w1 > 0, np.inf, 0.0))  # (F,)
    # PSI/JS bins: #{current <= edge} for every inner edge of every feature, one search for all.
    n_features, n_edges = reference.edges.shape
    at_or_below = np.searchsorted(ranks.keys, column_keys(reference.edges), side="right").reshape(
        n_features, n_edges) - np.arange(n_features)[:, None] * m  # (F, B-1)
    cumulative = np.concatenate([np.zeros((n_features, 1), np.int64), at_or_below,
                                 np.full((n_features, 1), m)], axis=1)  # (F, B+1)
    props = np.diff(cumulative, axis=1) / m  # (F, B)
    return _NumericTests(ks, psi(reference.proportions, props), jensen_shannon(reference.proportions, props), w1_norm)


def _numeric_result(
    reference: ReferenceSample,
    tests: _NumericTests | None,
    p_adjusted: FloatArray | None,
    n_current: int,
    excluded: int,
    alpha: float,
    correction: str,
    min_effect: float,
) -> FeatureDriftResult:
    names = reference.feature_names
    if tests is None or p_adjusted is None:
        nan = math.nan
        features = tuple(FeatureDrift(name, nan, nan, nan, nan, nan, False, nan) for name in names)
    else:
        drifted = (p_adjusted < alpha) & (tests.ks.statistic >= min_effect)  # (F,)
        features = tuple(
            FeatureDrift(name, float(d), float(p), float(pa), float(s), float(j), bool(flag), float(w))
            for name, d, p, pa, s, j, flag, w in zip(
                names, tests.ks.statistic, tests.ks.p_value, p_adjusted, tests.psi, tests.js, drifted,
                tests.wasserstein, strict=True)
        )
    return FeatureDriftResult(
        features=features,
        n_reference=reference.ks_index.n_reference,
        n_current=n_current,
        alpha=float(alpha),
        correction=str(correction),
        min_effect=float(min_effect),
        insufficient=tests is None,
        excluded_rows=excluded,
    )


def feature_drift(
    reference: ReferenceSample,
    current: npt.ArrayLike,
    alpha: float = 0.01,
    correction: Correction = "bonferroni",
    min_effect: float = 0.025,
    min_samples: int = 30,
) -> FeatureDriftResult:
    """Test every feature of a window for drift against the reference, in one vectorised pass.

    Rows of ``current`` holding any NaN/inf are dropped (counted in ``excluded_rows``).  With fewer
    than ``min_samples`` rows left the result is ``insufficient`` (NaN statistics, nothing drifted).
    Otherwise each feature gets the two-sample KS statistic and p-value, PSI and Jensen–Shannon
    distance on the reference quantile bins and the normalised Wasserstein distance; p-values are
    adjusted across the F features, and

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
        Effect-size floor on the KS statistic (default 0.025: a 0.1-sd mean shift of a normal
        feature gives KS ~0.040 and passes, while an undrifted feature exceeds 0.025 with probability
        ~2e-5 at n = 100,000 and m = 10,000; see the module docstring).
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
    cur, excluded = _clean_window(reference, current)
    n_current = int(cur.shape[0])
    if n_current < min_samples:
        return _numeric_result(reference, None, None, n_current, excluded, alpha, correction, min_effect)
    tests = _numeric_tests(reference, cur)
    p_adjusted = adjust_p_values(tests.ks.p_value, correction)  # (F,)
    return _numeric_result(reference, tests, p_adjusted, n_current, excluded, alpha, correction, min_effect)


def prediction_drift(
    reference: ReferenceSample,
    predictions: npt.ArrayLike,
    alpha: float = 0.01,
    min_effect: float = 0.02,
    min_samples: int = 30,
) -> PredictionDriftResult:
    """Test whether the predicted-class mix of a window departs from the reference's.

    Two-sample chi-squared test of homogeneity of the 2 x K table ``[reference.class_counts; window
    counts]`` (see :func:`detectors.chi2.chi2_homogeneity` for small-count pooling), plus the
    Jensen–Shannon distance (base 2) between window proportions and reference priors as effect size:

        drifted = (p_value < alpha) and (js_distance >= min_effect).

    A reference with ``class_priors`` but no ``class_counts`` (a profile written before counts were
    stored) is tested by goodness of fit against the priors instead
    (:func:`detectors.chi2.chi2_goodness_of_fit`); that test takes the priors as exact, so on undrifted
    traffic its statistic is inflated by ~``(1 + m/n)`` and it alarms somewhat more often than ``alpha``.
    Rebuild such profiles to get the homogeneity test.

    Parameters
    ----------
    reference : ReferenceSample
        Must carry ``class_counts`` (or, for old profiles, at least ``class_priors``).
    predictions : array_like of int, shape (m,)
        Predicted class indices in ``[0, K)``.
    alpha, min_effect : float, optional
        Significance level (default 0.01) and JS-distance floor (default 0.02).
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
    >>> ref = build_reference(np.zeros((4, 1)), ["x"], predictions=[0, 1] * 50)
    >>> res = prediction_drift(ref, np.array([0] * 90 + [1] * 10))
    >>> res.drifted, res.observed, res.expected_probs, res.test
    (True, (90, 10), (0.5, 0.5), 'homogeneity')
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
    test: Chi2Test = "homogeneity" if reference.class_counts is not None else "goodness_of_fit"
    if n_current < min_samples:
        nan = math.nan
        return PredictionDriftResult(nan, nan, 0, nan, n_current, False, True, observed, expected_probs, test)

    if reference.class_counts is not None:
        chi2 = chi2_homogeneity(reference.class_counts, counts)  # 2 x K table: reference, window
    else:  # an old profile with priors only
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
        test=test,
    )


@dataclass(frozen=True)
class WindowDriftResult:
    """Numeric and categorical drift of one window, corrected together across all F + C tests."""

    numeric: FeatureDriftResult
    categorical: CategoricalDriftResult | None

    @property
    def drifted(self) -> bool:
        """True when any numeric or categorical feature drifted."""
        return self.numeric.drifted or (self.categorical is not None and self.categorical.drifted)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Drifted numeric features, then drifted categorical features, each in feature order."""
        extra = self.categorical.drifted_features if self.categorical is not None else ()
        return self.numeric.drifted_features + extra


def window_drift(
    reference: ReferenceSample,
    current: npt.ArrayLike,
    categorical: CategoricalReference | None = None,
    codes: npt.ArrayLike | None = None,
    alpha: float = 0.01,
    correction: Correction = "bonferroni",
    min_effect: float = 0.025,
    min_effect_categorical: float = 0.02,
    min_samples: int = 30,
) -> WindowDriftResult:
    """Drift of a window's numeric and categorical features with one multiple-testing correction.

    The F KS p-values and C chi-squared p-values are adjusted together (Bonferroni multiplies by
    F + C); numeric features then use the KS floor ``min_effect`` and categorical features the
    Jensen–Shannon floor ``min_effect_categorical``.  A part with fewer than ``min_samples`` rows is
    ``insufficient`` and takes no part in the correction.

    Parameters
    ----------
    reference : ReferenceSample
    current : array_like, shape (m, F)
        Numeric window (rows with NaN/inf are dropped, as in :func:`feature_drift`).
    categorical : CategoricalReference, optional
    codes : array_like of int, shape (m, C), optional
        Level codes from :func:`detectors.categorical.encode_categories`; required with ``categorical``.
    alpha, correction, min_effect, min_effect_categorical, min_samples
        As in :func:`feature_drift` and :func:`detectors.categorical.categorical_drift`.

    Returns
    -------
    WindowDriftResult

    Examples
    --------
    >>> import numpy as np
    >>> from detectors import build_categorical_reference, build_reference, encode_categories, window_drift
    >>> rng = np.random.default_rng(0)
    >>> ref = build_reference(rng.normal(size=(2000, 2)), ["a", "b"])
    >>> cat = build_categorical_reference(rng.choice(["x", "y"], size=(2000, 1)), ["c"])
    >>> codes = encode_categories(cat, np.array([["x"]] * 450 + [["y"]] * 50))
    >>> window_drift(ref, rng.normal(size=(500, 2)), cat, codes).drifted_features
    ('c',)
    """
    _check_thresholds(alpha, min_effect, min_samples)
    _check_thresholds(alpha, min_effect_categorical, min_samples)
    if correction not in get_args(Correction):
        raise StatisticsError(f"correction must be one of {get_args(Correction)}; got {correction!r}")
    if (categorical is None) != (codes is None):
        raise StatisticsError("categorical and codes must be given together")
    cur, excluded = _clean_window(reference, current)
    n_current = int(cur.shape[0])
    numeric = _numeric_tests(reference, cur) if n_current >= min_samples else None
    cat_tests: CategoricalTests | None = None
    cat_ok = False
    if categorical is not None and codes is not None:
        cat_tests = categorical_tests(categorical, codes)
        cat_ok = cat_tests.n_current >= min_samples

    # One family: the p-values of every part that was actually tested.
    parts = [numeric.ks.p_value] if numeric is not None else []
    if cat_tests is not None and cat_ok:
        parts.append(cat_tests.chi2.p_value)
    adjusted = adjust_p_values(np.concatenate(parts), correction) if parts else np.empty(0)
    n_numeric = len(reference.feature_names) if numeric is not None else 0
    numeric_result = _numeric_result(reference, numeric, adjusted[:n_numeric] if numeric is not None else None,
                                     n_current, excluded, alpha, correction, min_effect)
    categorical_result = None
    if categorical is not None and cat_tests is not None:
        categorical_result = decide_categorical(categorical, cat_tests, adjusted[n_numeric:], alpha, correction,
                                                min_effect_categorical, not cat_ok)
    return WindowDriftResult(numeric_result, categorical_result)
