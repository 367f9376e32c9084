"""Two live windows compared with each other: a version served beside its peer (A/B, canary).

Drift detectors compare a window with the training reference; here the reference is the peer version's last
window, so both samples are small and both are live. The tests are the drift tests run two-sample:

* numeric features: two-sample KS per feature, p-values adjusted across features (:func:`detectors.feature_drift`
  with the peer window as reference), a finding needs significance and the KS floor ``min_effect``;
* predicted classes: chi-squared homogeneity of the 2 x K table ``[peer counts; window counts]``
  (:func:`detectors.chi2.chi2_homogeneity`, equal to ``scipy.stats.chi2_contingency(table, correction=False)``
  when no category needs pooling), with the Jensen–Shannon distance as effect size;
* latency: Mann–Whitney U of total latency (``scipy.stats.mannwhitneyu``, two-sided), with the relative change of
  the median as effect size.

One comparison is one finding, so its false-alarm rate is controlled as a whole: the parts that have data on both
sides share ``alpha`` by Bonferroni (each is tested at ``alpha / parts``; within the features the configured
correction applies on top). Whether a part has data does not depend on its outcome, so the split is fixed before
any test is looked at. A part is insufficient when no outcome of it could reach its level (as in
:func:`detectors.feature_drift`), never below a fixed row count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np
import numpy.typing as npt

from detectors.chi2 import chi2_homogeneity, smallest_p_value_rows
from detectors.drift import FeatureDriftResult, PredictionDriftResult, feature_drift
from detectors.errors import StatisticsError
from detectors.ks import ks_smallest_p_value
from detectors.multiple_testing import Correction
from detectors.psi import jensen_shannon
from detectors.reference import build_reference

__all__ = ["LatencyShift", "WindowComparison", "class_mix_shift", "compare_windows", "latency_shift"]


@dataclass(frozen=True)
class LatencyShift:
    """Latency of a window against its peer's: Mann–Whitney U (two-sided) and the median's relative change.

    ``statistic`` is U of the window's values (``U / (n m)`` is the probability that a window request is slower
    than a peer request, ties counting half); ``change`` is ``p50 / peer_p50 - 1``. Percentiles are NaN and the
    test is not run (``insufficient``) when no outcome could reach ``alpha`` (``2 / C(n + m, n)``, the exact
    null's smallest two-sided p-value, is above it)."""

    n: int
    n_peer: int
    p50: float
    p95: float
    peer_p50: float
    peer_p95: float
    statistic: float
    p_value: float
    change: float
    alpha: float
    min_change: float
    drifted: bool
    insufficient: bool


def latency_shift(latency: npt.ArrayLike, peer_latency: npt.ArrayLike, alpha: float = 0.01,
                  min_change: float = 0.1) -> LatencyShift:
    """Compare the latencies (seconds, finite) of a window with its peer's.

        drifted = (p_value < alpha) and (|p50 / peer_p50 - 1| >= min_change)

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.comparison import latency_shift
    >>> rng = np.random.default_rng(0)
    >>> peer = rng.lognormal(np.log(0.02), 0.3, 400)
    >>> res = latency_shift(peer * 1.3, peer)
    >>> res.drifted, round(res.change, 2)
    (True, 0.3)
    >>> latency_shift(peer[:200], peer[200:]).drifted
    False
    """
    from scipy import stats

    x = np.asarray(latency, dtype=np.float64).ravel()  # (n,)
    y = np.asarray(peer_latency, dtype=np.float64).ravel()  # (m,)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise StatisticsError("latencies must be finite (drop the events that did not measure one)")
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha!r}")
    if not min_change >= 0:
        raise StatisticsError(f"min_change must be >= 0; got {min_change!r}")
    n, m = int(x.size), int(y.size)
    nan = math.nan
    if float(ks_smallest_p_value(n, m)) > alpha:  # 2 / C(n+m, n): also the exact MWU's two-sided floor
        return LatencyShift(n, m, nan, nan, nan, nan, nan, nan, nan, alpha, min_change, False, True)
    p50, p95 = (float(v) for v in np.percentile(x, [50, 95]))
    peer_p50, peer_p95 = (float(v) for v in np.percentile(y, [50, 95]))
    test = stats.mannwhitneyu(x, y, alternative="two-sided")
    with np.errstate(divide="ignore", invalid="ignore"):
        change = float(np.divide(p50, peer_p50) - 1.0) if peer_p50 > 0 else (math.inf if p50 > 0 else 0.0)
    drifted = float(test.pvalue) < alpha and abs(change) >= min_change
    return LatencyShift(n, m, p50, p95, peer_p50, peer_p95, float(test.statistic), float(test.pvalue), change,
                        alpha, min_change, bool(drifted), False)


def class_mix_shift(predictions: npt.ArrayLike, peer_counts: npt.ArrayLike, alpha: float = 0.01,
                    min_effect: float = 0.02) -> PredictionDriftResult:
    """Predicted-class mix of a window against the peer window's class counts (K,): chi-squared homogeneity of
    ``[peer_counts; window counts]`` and the Jensen–Shannon distance of the two mixes (base 2).

        drifted = (p_value < alpha) and (js_distance >= min_effect)

    ``expected_probs`` of the result are the peer's shares. Insufficient when the peer has no prediction or no
    window of this size could reach ``alpha`` (:func:`detectors.chi2.smallest_p_value_rows`).

    Examples
    --------
    >>> from detectors.comparison import class_mix_shift
    >>> res = class_mix_shift([0] * 70 + [1] * 30, [50, 50])
    >>> res.drifted, res.observed, res.expected_probs
    (True, (70, 30), (0.5, 0.5))
    """
    peer = np.asarray(peer_counts, dtype=np.int64)  # (K,)
    pred = np.asarray(predictions, dtype=np.int64).ravel()  # (m,)
    if peer.ndim != 1 or peer.size < 1 or (peer < 0).any():
        raise StatisticsError(f"peer_counts must be non-negative counts (K,); got {peer!r}")
    if ((pred < 0) | (pred >= peer.size)).any():
        raise StatisticsError(f"predictions must be class indices in [0, {peer.size})")
    counts = np.bincount(pred, minlength=peer.size)  # (K,)
    observed = tuple(int(c) for c in counts)
    total = int(peer.sum())
    expected_probs = tuple(float(c) / total for c in peer) if total else (math.nan,) * peer.size
    nan = math.nan
    if not total:
        return PredictionDriftResult(nan, nan, 0, nan, int(pred.size), False, True, observed, expected_probs)
    smallest = float(smallest_p_value_rows(peer[None, :], int(pred.size))[0])
    if smallest > alpha:
        return PredictionDriftResult(nan, nan, 0, nan, int(pred.size), False, True, observed, expected_probs,
                                     smallest_p_value=smallest)
    chi2 = chi2_homogeneity(peer, counts)  # 2 x K table: peer window, this window
    js = float(jensen_shannon(counts, peer))
    drifted = chi2.p_value < alpha and js >= min_effect
    return PredictionDriftResult(chi2.statistic, chi2.p_value, chi2.dof, js, int(pred.size), bool(drifted), False,
                                 observed, expected_probs, smallest_p_value=smallest)


@dataclass(frozen=True)
class WindowComparison:
    """A window against its peer's last window: each part is None when either side had no data for it.

    ``level`` is the significance level each part was tested at (``alpha / parts``)."""

    features: FeatureDriftResult | None
    classes: PredictionDriftResult | None
    latency: LatencyShift | None
    alpha: float
    level: float

    @property
    def drifted(self) -> bool:
        """True when any part found a difference."""
        return any(part is not None and part.drifted for part in (self.features, self.classes, self.latency))

    @property
    def insufficient(self) -> bool:
        """True when no part could have found anything (no data, or too few rows to reach significance)."""
        return all(part is None or part.insufficient for part in (self.features, self.classes, self.latency))

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return () if self.features is None else self.features.drifted_features


def compare_windows(
    names: Sequence[str],
    features: npt.ArrayLike | None,
    peer_features: npt.ArrayLike | None,
    predictions: npt.ArrayLike | None = None,
    peer_class_counts: npt.ArrayLike | None = None,
    latency: npt.ArrayLike | None = None,
    peer_latency: npt.ArrayLike | None = None,
    alpha: float = 0.01,
    correction: Correction = "bonferroni",
    min_effect: float = 0.025,
    min_effect_classes: float = 0.02,
    min_latency_change: float = 0.1,
) -> WindowComparison:
    """Compare a window with its peer's: features (m, F) against peer features (n, F) in ``names`` order (NaN
    cells are missing), predicted classes against the peer's class counts (K,), latencies against the peer's.

    A part runs when both of its sides are given and non-empty; a feature the peer window has no value of is left
    out. The parts that run share ``alpha`` (Bonferroni, see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.comparison import compare_windows
    >>> rng = np.random.default_rng(1)
    >>> peer, same, shifted = rng.normal(size=(400, 2)), rng.normal(size=(400, 2)), rng.normal(size=(400, 2))
    >>> compare_windows(["a", "b"], same, peer).drifted
    False
    >>> compare_windows(["a", "b"], shifted + [0.0, 0.5], peer).drifted_features
    ('b',)
    """
    if correction not in get_args(Correction):
        raise StatisticsError(f"correction must be one of {get_args(Correction)}; got {correction!r}")
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha!r}")
    x = _rows(features, len(names))
    px = _rows(peer_features, len(names))
    keep = np.zeros(len(names), dtype=np.bool_)  # (F,) features the peer window has values of
    if x.size and px.size:
        keep[:] = np.isfinite(px).any(axis=0)
    pred = None if predictions is None else np.asarray(predictions, dtype=np.int64).ravel()
    has_features = bool(keep.any()) and x.shape[0] > 0
    has_classes = pred is not None and pred.size > 0 and peer_class_counts is not None
    lat = _finite(latency)
    peer_lat = _finite(peer_latency)
    has_latency = lat.size > 0 and peer_lat.size > 0
    parts = has_features + has_classes + has_latency
    level = alpha / max(parts, 1)
    feature_result = None
    if has_features:
        kept = [name for name, k in zip(names, keep.tolist(), strict=True) if k]
        reference = build_reference(px[:, keep], kept, max_rows=max(px.shape[0], 1))
        feature_result = feature_drift(reference, x[:, keep], alpha=level, correction=correction,
                                       min_effect=min_effect)
    classes = None
    if has_classes and pred is not None and peer_class_counts is not None:
        classes = class_mix_shift(pred, peer_class_counts, alpha=level, min_effect=min_effect_classes)
    latency_result = latency_shift(lat, peer_lat, alpha=level, min_change=min_latency_change) if has_latency \
        else None
    return WindowComparison(feature_result, classes, latency_result, float(alpha), float(level))


def _rows(values: npt.ArrayLike | None, n_features: int) -> npt.NDArray[np.float64]:
    """``values`` as float64 (rows, n_features); no rows when None."""
    if values is None:
        return np.empty((0, n_features))
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise StatisticsError(f"features must be (rows, {n_features}); got shape {arr.shape}")
    return arr


def _finite(values: npt.ArrayLike | None) -> npt.NDArray[np.float64]:
    """The finite values of a 1-D sample (latencies of the events that measured one)."""
    if values is None:
        return np.empty(0)
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]
