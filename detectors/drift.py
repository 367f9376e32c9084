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
from dataclasses import dataclass, replace
from typing import get_args

import numpy as np
import numpy.typing as npt

from detectors._arrays import BoolArray, FloatArray, IntArray, class_indices, readonly
from detectors._verdict import PerFeatureVerdict
from detectors.categorical import (
    CategoricalDriftResult,
    CategoricalReference,
    CategoricalTests,
    categorical_smallest_p_value,
    categorical_tests,
    decide_categorical,
)
from detectors.chi2 import Chi2Test, chi2_goodness_of_fit, chi2_homogeneity, smallest_p_value_rows
from detectors.errors import StatisticsError
from detectors.ks import KSIndex, KSPValues, ks_p_values, ks_smallest_p_value, ks_statistic, locate, search_rows
from detectors.multiple_testing import Correction, adjust_p_values
from detectors.psi import jensen_shannon, psi
from detectors.reference import ReferenceSample
from detectors.wasserstein import W1Index, wasserstein_index

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
    """Drift statistics of one feature, on its own present values (NaN statistics when it had none).

    ``wasserstein`` is the W1 distance between reference and window divided by the reference
    standard deviation (inf when that is 0 and the window differs, 0 when both are constant-equal).
    ``n_current`` / ``n_reference`` count the feature's present (finite) values in the window and the
    reference; ``p_adjusted`` is NaN for a feature that took no part in the correction (no present value,
    or a part that could not reach significance).

    ``p_value`` is the two-sample KS p-value.  Where ``p_settled`` it is what ``scipy.stats.ks_2samp``
    (``method='auto'``) reports: the exact Smirnov law when ``max(n, m) <= 10,000``, else the asymptotic
    law ``kstwo.sf(D, round(n m / (n + m)))``.  It is settled wherever the verdict could depend on it, and
    for small samples (:func:`detectors.ks.ks_p_values`); elsewhere ``p_value`` is the Kolmogorov limit at
    Stephens' argument, within the bracket of :mod:`detectors.ks` of the settled value (a factor
    ``exp(bracket_log_ratio(en, p))``: 1.14 at 10,000 against 1,000 values and ``p = 0.1``, 1.28 at
    ``p = 4.5e-4``).  ``p_adjusted`` is computed from these values; every ``drifted`` verdict is the one
    settled p-values give.
    """

    name: str
    ks_statistic: float
    p_value: float
    p_adjusted: float
    psi: float
    js_distance: float
    drifted: bool
    wasserstein: float = math.nan
    n_current: int = 0
    n_reference: int = 0
    p_settled: bool = True


@dataclass(frozen=True)
class FeatureDriftResult(PerFeatureVerdict):
    """Per-feature drift of one window against the reference.

    ``n_current`` counts the window's rows; each feature is tested on its own present values (their
    count is :attr:`FeatureDrift.n_current`), so no row is dropped.  ``insufficient`` says that no outcome of
    any feature's KS test could have reached significance after correction, and ``reason`` says why (empty otherwise).
    ``smallest_p_value`` holds, per feature, the smallest p-value its test could have given
    (:func:`detectors.ks.ks_smallest_p_value`).
    """

    features: tuple[FeatureDrift, ...]
    n_reference: int
    n_current: int
    alpha: float
    correction: str
    min_effect: float
    insufficient: bool
    reason: str = ""
    smallest_p_value: tuple[float, ...] = ()



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
    smallest_p_value: float = math.nan


def _check_thresholds(alpha: float, min_effect: float, min_samples: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha!r}")
    if not 0.0 <= min_effect <= 1.0:
        raise StatisticsError(f"min_effect must be in [0, 1]; got {min_effect!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int | np.integer) or min_samples < 1:
        raise StatisticsError(f"min_samples must be a positive integer; got {min_samples!r}")


@dataclass(frozen=True, eq=False)
class _NumericTests:
    """Raw per-feature statistics of a window (before correction), each of shape (F,).

    ``present`` counts each feature's finite window values; ``smallest_p`` is the smallest p-value its
    KS test could give (:func:`detectors.ks.ks_smallest_p_value`).  Statistics are NaN where a feature
    has no present value.  ``ks`` holds the KS p-values of the features with a present value
    (``observed``, in feature order): approximate and bracketed until :func:`_settle_family` settles the
    ones a verdict depends on.
    """

    statistic: FloatArray
    ks: KSPValues
    observed: IntArray
    psi: FloatArray
    js: FloatArray
    wasserstein: FloatArray
    present: IntArray
    smallest_p: FloatArray
    n_rows: int

    @property
    def p_value(self) -> FloatArray:
        """KS p-value per feature (F,), NaN where a feature has no present value."""
        p = np.full(self.statistic.shape, np.nan)
        p[self.observed] = self.ks.p_value
        return readonly(p)


def _window(reference: ReferenceSample, current: npt.ArrayLike) -> FloatArray:
    """The window as float64 (m, F), checked against the reference's feature count."""
    n_features = len(reference.feature_names)
    cur = np.asarray(current, dtype=np.float64)
    if cur.ndim != 2:
        raise StatisticsError(f"current window must be 2-D (rows, features); got shape {cur.shape}")
    if cur.shape[1] != n_features:
        raise StatisticsError(
            f"current window has {cur.shape[1]} features but the reference has {n_features}"
        )
    return cur


def _dense_tests(ks_index: KSIndex, w1_index: W1Index, std: FloatArray, edges: FloatArray,
                 proportions: FloatArray, columns: FloatArray) -> tuple[FloatArray, ...]:
    """KS statistic, PSI, JS and normalised W1 of sorted finite rows ``columns`` (F, m >= 1)."""
    m = columns.shape[1]
    ks_index = ks_index.for_window(m)  # fewer knots for a small window
    ranks = locate(ks_index, columns)
    statistic = ks_statistic(ks_index, ranks)  # (F,)
    w1 = wasserstein_index(ks_index, w1_index, ranks)  # (F,)
    with np.errstate(divide="ignore", invalid="ignore"):
        w1_norm = np.where(std > 0, w1 / std, np.where(w1 > 0, np.inf, 0.0))  # (F,)
    # PSI/JS bins: #{current <= edge} for every inner edge of every feature, one search for all.
    n_features = edges.shape[0]
    at_or_below = search_rows(columns, edges, side="right")  # (F, B-1)
    cumulative = np.concatenate([np.zeros((n_features, 1), np.int64), at_or_below,
                                 np.full((n_features, 1), m)], axis=1)  # (F, B+1)
    props = np.diff(cumulative, axis=1) / m  # (F, B)
    return statistic, psi(proportions, props), jensen_shannon(proportions, props), w1_norm


def _numeric_tests(reference: ReferenceSample, cur: FloatArray) -> _NumericTests:
    """KS, PSI, JS and normalised W1 of every feature of a window (m, F) on each feature's present values.

    Features with a full reference column and no missing window value (the common case) run in one
    vectorised pass over all features; a feature with missing values (in the window, or a ragged reference
    column) is tested alone on its present values against its own reference index, exactly as
    ``scipy.stats.ks_2samp`` on those values.
    """
    m, n_features = cur.shape
    finite = np.isfinite(cur)  # (m, F)
    present = np.full(n_features, m, dtype=np.int64) if finite.all() else np.count_nonzero(finite, axis=0)  # (F,)
    alone = (present < m) | (reference.present < reference.sorted_values.shape[0])  # (F,)
    out = np.full((4, n_features), np.nan)  # statistic, psi, js, w1 per feature
    if m and not alone.all():
        dense = np.where(alone, 0.0, cur) if alone.any() else cur  # alone columns are recomputed below
        columns = np.sort(np.ascontiguousarray(dense.T), axis=1)  # (F, m) sorted per feature
        out[:] = _dense_tests(reference.ks_index, reference.w1_index, reference.std, reference.edges,
                              reference.proportions, columns)
        out[:, alone] = np.nan
    # This loop runs only over the features that have missing values, each its own (n_j, m_j) test.
    for j in np.flatnonzero(alone & (present > 0)):
        ks_index, w1_index = reference.column_index(int(j))
        column = np.sort(cur[finite[:, j], j])[None, :]  # (1, m_j)
        out[:, j] = [v[0] for v in _dense_tests(ks_index, w1_index, reference.std[j: j + 1],
                                                reference.edges[j: j + 1], reference.proportions[j: j + 1],
                                                column)]
    smallest = ks_smallest_p_value(reference.present, present)  # (F,)
    observed = np.flatnonzero(present > 0)  # each test has its own sizes: n_j reference and m_j window values
    ks = ks_p_values(out[0, observed], reference.present[observed], present[observed])
    out[0, observed] = ks.statistic  # on SciPy's lattice h / lcm(n, m) in the exact regime
    statistic, psi_, js, w1 = (readonly(np.ascontiguousarray(row)) for row in out)
    return _NumericTests(statistic, ks, observed, psi_, js, w1, present=present, smallest_p=readonly(smallest),
                         n_rows=int(m))


def _reaches(effect: FloatArray, floor: float) -> BoolArray:
    """Where an effect size reaches its floor (False for NaN): the verdicts that turn on the p-value."""
    with np.errstate(invalid="ignore"):
        reached: BoolArray = effect >= floor
    return reached


#: Relative margin around ``alpha`` inside which a bracketed verdict counts as open (rounding of the correction).
_MARGIN = 1e-9


def _settle_family(tests: _NumericTests, family: BoolArray, matters: BoolArray, other_p: FloatArray,
                   other_matters: BoolArray, alpha: float, correction: Correction) -> tuple[_NumericTests, FloatArray]:
    """Settle the KS p-values that a verdict depends on; return the tests and the adjusted p of the family.

    The family is the numeric features in ``family`` (F,), in feature order, then the fixed p-values
    ``other_p`` (categorical tests).  ``matters`` (F,) and ``other_matters`` say whose verdict turns on its
    adjusted p-value (its effect size reaches the floor).  Each KS p-value is known to lie in its bracket
    (:func:`detectors.ks.ks_p_values`), and both corrections are monotone in every p-value, so the
    adjusted p-values of the lower ends and of the upper ends bound those of the settled p-values: a verdict
    that is the same at both ends is the verdict of the settled computation.  Until every verdict that
    matters is, the p-values of the tests left open are settled (SciPy's value): first those whose own
    verdict is open, then (Benjamini–Hochberg, where one test's p-value moves another's cut-off) those
    that could still be rejected, then all.  A feature far from every threshold keeps its approximate
    p-value.
    """
    position = np.full(family.size, -1)
    position[tests.observed] = np.arange(tests.observed.size)
    members = position[family]  # (k,) positions in tests.ks of the family's numeric tests
    n_members = members.size
    if n_members + other_p.size == 0:
        return tests, np.empty(0)
    ks = tests.ks
    needed = np.concatenate([matters[family], other_matters])  # (k + C,)
    while True:
        low = adjust_p_values(np.concatenate([ks.lower[members], other_p]), correction)  # (k + C,)
        high = adjust_p_values(np.concatenate([ks.upper[members], other_p]), correction)
        certain = (high < alpha * (1 - _MARGIN)) | (low >= alpha * (1 + _MARGIN))
        if (certain | ~needed).all():
            break
        open_ = ~ks.settled[members]  # (k,)
        pick = open_ & ~certain[:n_members] & needed[:n_members]
        if not pick.any():
            pick = open_ & (low[:n_members] < alpha * (1 + _MARGIN))
        if not pick.any():
            pick = open_
        if not pick.any():  # every p-value is settled: the verdicts are the settled ones
            break
        chosen = np.zeros(ks.settled.shape, dtype=bool)
        chosen[members[pick]] = True
        ks = ks.settle(chosen)
    adjusted = adjust_p_values(np.concatenate([ks.p_value[members], other_p]), correction)
    return replace(tests, ks=ks), adjusted


def _numeric_result(
    reference: ReferenceSample,
    tests: _NumericTests,
    p_adjusted: FloatArray | None,
    alpha: float,
    correction: str,
    min_effect: float,
    reason: str,
) -> FeatureDriftResult:
    """``p_adjusted`` is (F,) with NaN for features outside the family, or None for an insufficient part."""
    names = reference.feature_names
    adjusted = np.full(len(names), np.nan) if p_adjusted is None else p_adjusted
    with np.errstate(invalid="ignore"):
        drifted = (adjusted < alpha) & (tests.statistic >= min_effect)  # (F,) False where NaN
    settled = np.zeros(len(names), dtype=bool)
    settled[tests.observed] = tests.ks.settled
    features = tuple(
        FeatureDrift(name, float(d), float(p), float(pa), float(s), float(j), bool(flag), float(w), int(mj), int(nj),
                     bool(ok))
        for name, d, p, pa, s, j, flag, w, mj, nj, ok in zip(
            names, tests.statistic, tests.p_value, adjusted, tests.psi, tests.js, drifted, tests.wasserstein,
            tests.present, reference.present, settled, strict=True)
    )
    return FeatureDriftResult(
        features=features,
        n_reference=reference.ks_index.n_reference,
        n_current=tests.n_rows,
        alpha=float(alpha),
        correction=str(correction),
        min_effect=float(min_effect),
        insufficient=p_adjusted is None,
        reason=reason,
        smallest_p_value=tuple(float(v) for v in tests.smallest_p),
    )


def _numeric_family(tests: _NumericTests, min_samples: int, alpha: float, n_tests: int) -> tuple[BoolArray, str]:
    """Which features enter the correction, and why none does (empty reason when some do).

    A feature is tested when it has at least ``min_samples`` present values; the part is insufficient
    when none of them could reach ``alpha / n_tests`` even at ``D = 1`` (the Bonferroni level of the
    whole family; excluding tests that cannot reach significance from the family is Tarone's 1990
    refinement and keeps the family-wise error rate).
    """
    tested = tests.present >= max(min_samples, 1)  # (F,)
    level = alpha / max(n_tests, 1)
    if tested.any() and (tests.smallest_p[tested] <= level).any():
        return tested, ""
    if not tested.any():
        return tested, (f"no feature has {max(min_samples, 1)} present value(s) in the window of {tests.n_rows} "
                        f"row(s) (min_samples)")
    best = float(tests.smallest_p[tested].min())
    return tested, (f"with {int(tests.present[tested].max())} present value(s) per feature in the window the "
                    f"smallest p-value any KS test could give (D = 1, exact Smirnov law) is {best:.2g}, above "
                    f"alpha / {n_tests} tests = {level:.2g}: no outcome could be significant")


def feature_drift(
    reference: ReferenceSample,
    current: npt.ArrayLike,
    alpha: float = 0.01,
    correction: Correction = "bonferroni",
    min_effect: float = 0.025,
    min_samples: int = 1,
) -> FeatureDriftResult:
    """Test every feature of a window for drift against the reference, in one vectorised pass.

    NaN/inf cells of ``current`` are missing values: each feature is tested on its own present values
    (KS equal to ``scipy.stats.ks_2samp`` on them), and no row is dropped.  The result is
    ``insufficient`` (nothing drifted, ``reason`` says why) only when no feature's KS test could reach
    significance after correction whatever the window held: the smallest attainable p-value,
    ``2 / C(n + m, m)`` at ``D = 1`` (:func:`detectors.ks.ks_smallest_p_value`), exceeds ``alpha / F``
    for every feature.  Each feature gets the two-sample KS statistic and p-value, PSI and Jensen–Shannon
    distance on the reference quantile bins and the normalised Wasserstein distance; p-values are
    adjusted across the features with present values, and

        drifted_j = (p_adjusted_j < alpha) and (ks_statistic_j >= min_effect).

    SciPy's p-value (the exact Smirnov law when ``max(n, m) <= 10,000``) is computed only for the features
    whose verdict could depend on it; the others keep an approximation (:attr:`FeatureDrift.p_settled` is
    False), and every verdict is the one SciPy's p-values give (:func:`_settle_family`).

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
        An extra floor: fewest present values for a feature to be tested (default 1, so that the
        attainable-significance bound alone decides).

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
    tests = _numeric_tests(reference, _window(reference, current))
    tested, reason = _numeric_family(tests, min_samples, alpha, len(reference.feature_names))
    if reason:
        return _numeric_result(reference, tests, None, alpha, correction, min_effect, reason)
    tests, adjusted = _settle_family(tests, tested, _reaches(tests.statistic, min_effect), np.empty(0),
                                     np.empty(0, dtype=bool), alpha, correction)
    p_adjusted = np.full(tested.size, np.nan)
    p_adjusted[tested] = adjusted  # (F,)
    return _numeric_result(reference, tests, p_adjusted, alpha, correction, min_effect, "")


def prediction_drift(
    reference: ReferenceSample,
    predictions: npt.ArrayLike,
    alpha: float = 0.01,
    min_effect: float = 0.02,
    min_samples: int = 1,
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
        An extra floor (default 1): with fewer predictions the result is ``insufficient``.  It is also
        insufficient when no window of this size could give a p-value below ``alpha`` (every prediction in
        one class is the most extreme outcome: :func:`detectors.chi2.smallest_p_value_rows`).

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
    base = reference.class_counts if reference.class_counts is not None else priors
    smallest = float(smallest_p_value_rows(base[None, :], n_current, test=test)[0])
    if n_current < min_samples or smallest > alpha:
        nan = math.nan
        return PredictionDriftResult(nan, nan, 0, nan, n_current, False, True, observed, expected_probs, test,
                                     smallest)

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
        smallest_p_value=smallest,
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
    min_samples: int = 1,
) -> WindowDriftResult:
    """Drift of a window's numeric and categorical features with one multiple-testing correction.

    The F KS p-values and C chi-squared p-values are adjusted together (Bonferroni multiplies by
    F + C); numeric features then use the KS floor ``min_effect`` and categorical features the
    Jensen–Shannon floor ``min_effect_categorical``.  A part none of whose tests could reach
    ``alpha / (F + C)`` with this many rows (or with fewer than ``min_samples`` rows) is ``insufficient``
    and takes no part in the correction; numeric features are tested on their own present values.

    Parameters
    ----------
    reference : ReferenceSample
    current : array_like, shape (m, F)
        Numeric window; NaN/inf cells are missing (each feature uses its own present values).
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
    numeric = _numeric_tests(reference, _window(reference, current))
    cat_tests: CategoricalTests | None = None
    n_categorical = 0
    if categorical is not None and codes is not None:
        cat_tests = categorical_tests(categorical, codes)
        n_categorical = len(categorical.feature_names)
    n_tests = len(reference.feature_names) + n_categorical
    tested, reason = _numeric_family(numeric, min_samples, alpha, n_tests)
    cat_ok = False
    if cat_tests is not None and categorical is not None:
        smallest = categorical_smallest_p_value(categorical, cat_tests.n_current)  # (C,)
        cat_ok = cat_tests.n_current >= min_samples and bool((smallest <= alpha / n_tests).any())

    # One family: the p-values of every part that could reach significance (Tarone), of features with values.
    in_family = tested if not reason else np.zeros_like(tested)
    other_p, other_matters = np.empty(0), np.empty(0, dtype=bool)
    if cat_tests is not None and cat_ok:
        other_p, other_matters = cat_tests.chi2.p_value, _reaches(cat_tests.js_distance, min_effect_categorical)
    numeric, adjusted = _settle_family(numeric, in_family, _reaches(numeric.statistic, min_effect), other_p,
                                       other_matters, alpha, correction)
    n_numeric = int(in_family.sum())
    numeric_adjusted = None
    if not reason:
        numeric_adjusted = np.full(in_family.size, np.nan)
        numeric_adjusted[in_family] = adjusted[:n_numeric]
    numeric_result = _numeric_result(reference, numeric, numeric_adjusted, alpha, correction, min_effect, reason)
    categorical_result = None
    if categorical is not None and cat_tests is not None:
        categorical_result = decide_categorical(categorical, cat_tests, adjusted[n_numeric:], alpha, correction,
                                                min_effect_categorical, not cat_ok)
    return WindowDriftResult(numeric_result, categorical_result)
