"""Confidence-based performance estimation (CBPE): a classifier's accuracy and macro-F1 without labels.

If the calibrated probabilities ``P`` (m, K) of a window are right, the true label of row ``i`` is a draw
from ``P_i``, so the model's prediction ``yhat_i`` (the argmax of its own, uncalibrated, output) is right
with probability ``c_i = P[i, yhat_i]``.  Then, given ``P``:

* **accuracy** is a mean of independent Bernoulli(c_i): ``E = mean(c)``, ``Var = sum c(1-c) / m^2``;
  the interval is the normal one at level ``1 - alpha`` (Lyapunov CLT; accurate for windows of tens).
* **macro-F1** uses the expected confusion counts of each class k:
  ``E[TP_k] = sum_{yhat_i = k} P_ik``, ``E[FP_k] = sum_{yhat_i = k} (1 - P_ik)``,
  ``E[FN_k] = sum_{yhat_i != k} P_ik``, and ``F1_k ~= 2 E[TP_k] / (2 E[TP_k] + E[FP_k] + E[FN_k])``:
  a ratio of expectations, not the expectation of the ratio (the bias is O(1/m) per class).
  scikit-learn averages F1 over the classes present in the labels or the predictions; a class never
  predicted has F1 = 0 and is present with probability ``1 - prod_i (1 - P_ik)``, so the macro average
  weights each class by its probability of being present (1 for predicted classes).
  Its interval is a parametric bootstrap: labels resampled from ``P`` (inverse CDF, one uniform matrix
  of shape (B, m)), the exact macro-F1 computed per replicate, and the ``alpha/2`` quantiles taken.

Both intervals are for the realised metric of *this* window (they include the label noise of m rows).
The estimate is only as good as the calibration, which is fitted on undrifted validation data
(:func:`detectors.calibration.fit_calibrator`): under covariate shift a model tends to stay confident
while it gets worse, so CBPE understates large drops; it is an early signal, not a substitute for labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from detectors._arrays import FloatArray, IntArray
from detectors.calibration import Calibrator, probability_matrix
from detectors.errors import StatisticsError

__all__ = ["CBPEResult", "cbpe", "expected_macro_f1"]


@dataclass(frozen=True)
class CBPEResult:
    """Label-free performance estimate of one window.

    Attributes
    ----------
    n : int
        Predictions in the window.
    expected_accuracy : float
    accuracy_ci : tuple of float
        Normal interval at level ``1 - alpha`` for the window's realised accuracy.
    expected_macro_f1 : float
    macro_f1_ci : tuple of float
        Parametric-bootstrap percentile interval at level ``1 - alpha``.
    reference_accuracy : float
    drifted : bool
        The interval's upper bound is below ``reference_accuracy - min_effect`` (never when insufficient).
    insufficient : bool
        Fewer than ``min_samples`` predictions.
    """

    n: int
    expected_accuracy: float
    accuracy_ci: tuple[float, float]
    expected_macro_f1: float
    macro_f1_ci: tuple[float, float]
    reference_accuracy: float
    drifted: bool
    insufficient: bool


def expected_macro_f1(calibrated: FloatArray, predicted: IntArray) -> float:
    """Expected macro-F1 from the expected confusion counts (see the module docstring).

    Parameters
    ----------
    calibrated : ndarray, shape (m, K)
        Calibrated probabilities.
    predicted : ndarray of int, shape (m,)
        The model's predicted class of each row.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.cbpe import expected_macro_f1
    >>> p = np.array([[1.0, 0.0], [0.0, 1.0]])  # certain and right: F1 = 1
    >>> expected_macro_f1(p, np.array([0, 1]))
    1.0
    """
    if calibrated.ndim != 2 or predicted.shape != (calibrated.shape[0],):
        raise StatisticsError(
            f"expected calibrated (m, K) and predicted (m,); got {calibrated.shape} and {predicted.shape}"
        )
    m, k = calibrated.shape
    if m and (predicted.min() < 0 or predicted.max() >= k):
        raise StatisticsError(f"predicted must hold class indices in [0, {k})")
    n_pred = np.bincount(predicted, minlength=k).astype(np.float64)  # (K,) rows predicted k
    tp = np.bincount(predicted, weights=calibrated[np.arange(m), predicted], minlength=k)  # (K,) E[TP_k]
    support = calibrated.sum(axis=0)  # (K,) E[TP_k + FN_k]
    # 2TP + FP + FN = (TP + FP) + (TP + FN) = n_pred + support
    f1 = np.divide(2.0 * tp, n_pred + support, out=np.zeros(k), where=(n_pred + support) > 0)  # (K,)
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf: the class is certainly present
        absent = np.exp(np.log1p(-calibrated).sum(axis=0))  # (K,) prod_i (1 - P_ik)
    weight = np.where(n_pred > 0, 1.0, 1.0 - absent)  # (K,) probability the class is present
    return float((weight * f1).sum() / weight.sum())


def _bootstrap_macro_f1(calibrated: FloatArray, predicted: IntArray, n_boot: int, seed: int) -> FloatArray:
    """Macro-F1 of ``n_boot`` label vectors drawn from ``calibrated``; returns (B,)."""
    m, k = calibrated.shape
    cdf = np.cumsum(calibrated, axis=1)  # (m, K)
    u = np.random.default_rng(seed).random((n_boot, m))  # (B, m)
    labels = np.zeros((n_boot, m), dtype=np.int64)  # (B, m): inverse CDF, #{k < K-1 : cdf_k <= u}
    for c in range(k - 1):  # a loop over classes; every step is vectorised over replicates and rows
        labels += u >= cdf[:, c]
    replicate = np.arange(n_boot)[:, None] * k  # (B, 1) offset of each replicate's K counters
    support = np.bincount((replicate + labels).ravel(), minlength=n_boot * k).reshape(n_boot, k)  # (B, K)
    hit = labels == predicted  # (B, m)
    tp = np.bincount((replicate + predicted)[hit], minlength=n_boot * k).reshape(n_boot, k)  # (B, K)
    n_pred = np.bincount(predicted, minlength=k)  # (K,), the same in every replicate
    denom = support + n_pred  # (B, K) 2TP + FP + FN
    present = denom > 0  # scikit-learn's classes: seen in the labels or the predictions
    f1 = np.divide(2.0 * tp, denom, out=np.zeros((n_boot, k)), where=present)  # (B, K)
    out: FloatArray = f1.sum(axis=1) / present.sum(axis=1)
    return out


def cbpe(
    probs: npt.ArrayLike,
    calibrator: Calibrator | None,
    reference_accuracy: float,
    alpha: float = 0.01,
    min_effect: float = 0.02,
    min_samples: int = 30,
    seed: int = 0,
    n_bootstrap: int = 200,
) -> CBPEResult:
    """Estimate a window's accuracy and macro-F1 from the model's probabilities alone.

    Parameters
    ----------
    probs : array_like, shape (m, K)
        The model's (uncalibrated) class probabilities; its predictions are their argmax.
    calibrator : Calibrator or None
        Calibration map fitted on validation data; None when ``probs`` are already calibrated.
    reference_accuracy : float
        Accuracy on the reference (validation) data, in [0, 1].
    alpha : float, optional
        One minus the confidence level of both intervals.
    min_effect : float, optional
        Smallest accuracy drop that counts as drift.
    min_samples : int, optional
        Windows with fewer rows are reported but never flagged.
    seed : int, optional
        Seed of the bootstrap (results are reproducible).
    n_bootstrap : int, optional
        Bootstrap replicates B (default 200).

    Returns
    -------
    CBPEResult

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.cbpe import cbpe
    >>> p = np.tile([[0.7, 0.2, 0.1]], (100, 1))  # every row: 70 % sure of class 0
    >>> res = cbpe(p, None, reference_accuracy=0.95)
    >>> round(res.expected_accuracy, 3), [round(b, 3) for b in res.accuracy_ci], res.drifted
    (0.7, [0.582, 0.818], True)
    """
    if not (0.0 <= reference_accuracy <= 1.0):
        raise StatisticsError(f"reference_accuracy must be in [0, 1]; got {reference_accuracy}")
    if not (0.0 < alpha < 1.0):
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha}")
    if not (0.0 <= min_effect <= 1.0):
        raise StatisticsError(f"min_effect must be in [0, 1]; got {min_effect}")
    if min_samples < 1:
        raise StatisticsError(f"min_samples must be >= 1; got {min_samples}")
    if n_bootstrap < 1:
        raise StatisticsError(f"n_bootstrap must be >= 1; got {n_bootstrap}")
    raw = probability_matrix(probs)
    calibrated = raw if calibrator is None else calibrator.apply(raw)  # (m, K)
    m = raw.shape[0]
    predicted = raw.argmax(axis=1)  # (m,) what the model served
    c = calibrated[np.arange(m), predicted]  # (m,) P(prediction is right)

    accuracy = float(c.mean())
    half = float(stats.norm.ppf(1.0 - alpha / 2.0) * np.sqrt(np.sum(c * (1.0 - c))) / m)
    accuracy_ci = (max(0.0, accuracy - half), min(1.0, accuracy + half))
    boot = _bootstrap_macro_f1(calibrated, predicted, n_bootstrap, seed)  # (B,)
    lo, hi = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    insufficient = m < min_samples
    return CBPEResult(
        n=m,
        expected_accuracy=accuracy,
        accuracy_ci=accuracy_ci,
        expected_macro_f1=expected_macro_f1(calibrated, predicted),
        macro_f1_ci=(float(lo), float(hi)),
        reference_accuracy=float(reference_accuracy),
        drifted=bool(not insufficient and accuracy_ci[1] < reference_accuracy - min_effect),
        insufficient=insufficient,
    )
