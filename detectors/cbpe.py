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

**What the window is compared with.**  The estimate is only as good as the calibration map: where it fits
poorly, CBPE's estimate on undrifted data differs from the accuracy measured with labels (a 3-class model
with 10 % label noise: estimated 0.80, measured 0.93), and comparing the two raises a false alarm on the
reference itself.  So the window's estimate is compared like with like: with the reference's *own* CBPE
estimate ``A_ref = mean_i c_i`` over the reference rows (:func:`cbpe_reference`, computed when the profile is
built), and its spread.  Undrifted, the window's ``c_i`` are draws from the reference's, so the window's
estimate has mean ``A_ref`` and standard deviation ``s / sqrt(m)`` with ``s`` the reference rows' standard
deviation of ``c`` (the analytic spread of the estimate over reference chunks of m rows).  The window drifts
when the one-sided z-test ``z = (A_ref - A) / (s / sqrt(m))`` gives ``p < alpha`` **and** the drop
``A_ref - A >= min_effect``.  Without a reference estimate (profiles built before it was stored), the old
rule applies: the interval's upper bound below ``reference_accuracy - min_effect``.

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

__all__ = ["CBPEReference", "CBPEResult", "cbpe", "cbpe_reference", "expected_macro_f1"]


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
        With a reference estimate: ``p_value < alpha`` and a drop of at least ``min_effect`` from it;
        without: the interval's upper bound is below ``reference_accuracy - min_effect``.  Never when
        insufficient.
    insufficient : bool
        Fewer than ``min_samples`` predictions, or no window of this size could be flagged (even an
        estimate of 0 would not be significant).
    reference_estimate : float
        The reference's own CBPE accuracy estimate (NaN when not given).
    p_value : float
        One-sided p-value of "the estimate fell below the reference estimate" (NaN without one).
    """

    n: int
    expected_accuracy: float
    accuracy_ci: tuple[float, float]
    expected_macro_f1: float
    macro_f1_ci: tuple[float, float]
    reference_accuracy: float
    drifted: bool
    insufficient: bool
    reference_estimate: float = float("nan")
    p_value: float = float("nan")


@dataclass(frozen=True)
class CBPEReference:
    """The reference's own CBPE estimate, its per-row spread, and how well the calibration fits.

    Attributes
    ----------
    accuracy : float
        ``mean_i c_i`` over the reference rows (``c_i`` the calibrated probability of the predicted class).
    sd : float
        Standard deviation (ddof 0) of ``c_i``: the estimate over m undrifted rows spreads by ``sd / sqrt(m)``.
    n : int
        Reference rows.
    ece : float or None
        Expected calibration error of the calibrated reference probabilities against the labels
        (:func:`detectors.quality.expected_calibration_error`), when labels were given.
    """

    accuracy: float
    sd: float
    n: int
    ece: float | None = None


def cbpe_reference(probs: npt.ArrayLike, calibrator: Calibrator | None,
                   labels: npt.ArrayLike | None = None) -> CBPEReference:
    """The reference's own CBPE estimate (see the module docstring), from its probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.cbpe import cbpe_reference
    >>> ref = cbpe_reference(np.array([[0.9, 0.1], [0.3, 0.7]]), None, labels=[0, 0])
    >>> round(ref.accuracy, 3), round(ref.sd, 3), ref.n, round(ref.ece, 3)
    (0.8, 0.1, 2, 0.4)
    """
    from detectors.quality import expected_calibration_error

    raw = probability_matrix(probs)
    calibrated = raw if calibrator is None else calibrator.apply(raw)  # (n, K)
    c = calibrated[np.arange(raw.shape[0]), raw.argmax(axis=1)]  # (n,)
    ece = None if labels is None else expected_calibration_error(calibrated, labels)
    return CBPEReference(float(c.mean()), float(c.std()), int(c.size), ece)


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
    min_samples: int = 1,
    seed: int = 0,
    n_bootstrap: int = 200,
    reference_estimate: float | None = None,
    reference_spread: float | None = None,
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
    reference_estimate, reference_spread : float, optional
        The reference's own estimate and per-row spread (:class:`CBPEReference` ``accuracy`` and ``sd``);
        given together, the window is tested against them (module docstring).

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
    if (reference_estimate is None) != (reference_spread is None):
        raise StatisticsError("reference_estimate and reference_spread must be given together")
    if reference_estimate is not None and reference_spread is not None and not (
            0.0 <= reference_estimate <= 1.0 and 0.0 <= reference_spread <= 0.5):
        raise StatisticsError(f"reference_estimate must be in [0, 1] and reference_spread in [0, 0.5]; got "
                              f"{reference_estimate}, {reference_spread}")
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
    p_value = float("nan")
    if reference_estimate is not None and reference_spread is not None:
        drop = reference_estimate - accuracy
        se = reference_spread / np.sqrt(m)
        # the most extreme outcome is an estimate of 0: insufficient when even that is not significant
        if se > 0:
            p_value = float(stats.norm.sf(drop / se))
            smallest = float(stats.norm.sf(reference_estimate / se))
        else:  # every reference row had the same confidence: any drop is certain
            p_value, smallest = (0.0 if drop > 0 else 1.0), (0.0 if reference_estimate > 0 else 1.0)
        insufficient = m < min_samples or smallest >= alpha
        drifted = not insufficient and p_value < alpha and drop >= min_effect - 1e-12
    else:  # a profile without a reference estimate: the interval against the measured accuracy
        insufficient = m < min_samples or reference_accuracy - min_effect <= 0.0
        drifted = not insufficient and accuracy_ci[1] < reference_accuracy - min_effect
    return CBPEResult(
        n=m,
        expected_accuracy=accuracy,
        accuracy_ci=accuracy_ci,
        expected_macro_f1=expected_macro_f1(calibrated, predicted),
        macro_f1_ci=(float(lo), float(hi)),
        reference_accuracy=float(reference_accuracy),
        drifted=bool(drifted),
        insufficient=bool(insufficient),
        reference_estimate=float("nan") if reference_estimate is None else float(reference_estimate),
        p_value=p_value,
    )
