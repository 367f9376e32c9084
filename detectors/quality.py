"""Classifier quality on a window whose true labels are known (from joined feedback).

Accuracy, macro-F1 and per-class recall come from one confusion matrix ``C[t, p]`` (rows: true class,
columns: predicted class) built with a single ``np.bincount``; the expected calibration error uses the
standard 15 equal-width confidence bins (Guo et al., 2017).  The window is flagged when an exact one-sided
binomial test says its accuracy is below the reference accuracy **and** the drop is at least ``min_effect``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from detectors._arrays import FloatArray, IntArray, class_indices
from detectors.calibration import probability_matrix
from detectors.errors import StatisticsError

__all__ = ["ECE_BINS", "QualityResult", "confusion_matrix", "expected_calibration_error", "labelled_quality"]

#: Number of equal-width confidence bins of the expected calibration error.
ECE_BINS: int = 15


@dataclass(frozen=True)
class QualityResult:
    """Quality of one labelled window.

    Attributes
    ----------
    n : int
        Labelled predictions in the window.
    accuracy, macro_f1 : float
        Macro-F1 averages over the classes present in ``y_true`` or ``y_pred`` (scikit-learn's default).
    per_class_recall : tuple of float
        Recall of each of the K classes; NaN for a class absent from ``y_true``.
    ece : float or None
        Expected calibration error, when probabilities were given.
    reference_accuracy : float
    p_value : float
        Exact one-sided binomial p-value of "accuracy < reference_accuracy".
    drifted : bool
        ``p_value < alpha`` and ``reference_accuracy - accuracy >= min_effect`` (never when insufficient).
    insufficient : bool
        Fewer than ``min_samples`` labelled predictions, or too few for any outcome to be significant: the
        most extreme one, no prediction right, has p-value ``(1 - reference_accuracy)^n``, and while that is
        at least ``alpha`` nothing the window holds could be flagged.
    """

    n: int
    accuracy: float
    macro_f1: float
    per_class_recall: tuple[float, ...]
    ece: float | None
    reference_accuracy: float
    p_value: float
    drifted: bool
    insufficient: bool


def confusion_matrix(y_true: IntArray, y_pred: IntArray, n_classes: int) -> IntArray:
    """``C[t, p]`` = number of rows with true class t predicted as p; shape (K, K).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.quality import confusion_matrix
    >>> confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
    array([[1, 1],
           [0, 1]])
    """
    counts: IntArray = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )
    return counts


def expected_calibration_error(probs: npt.ArrayLike, y_true: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-class confidence.

    With confidence ``c_i = max_k p_ik``, prediction ``argmax_k p_ik`` and equal-width bins
    ``B_b = ((b-1)/bins, b/bins]`` (confidence 0 falls in the first bin),

        ECE = sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|.

    Parameters
    ----------
    probs : array_like, shape (n, K)
    y_true : array_like, shape (n,)
        True class indices.
    bins : int, optional
        Number of bins (default 15).

    Returns
    -------
    float

    Examples
    --------
    >>> from detectors.quality import expected_calibration_error
    >>> round(expected_calibration_error([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8]], [0, 1, 1]), 4)
    0.3333
    """
    p = probability_matrix(probs)
    y = class_indices(y_true, "y_true")
    if y.shape[0] != p.shape[0]:
        raise StatisticsError(f"y_true has {y.shape[0]} labels but probs has {p.shape[0]} rows")
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise StatisticsError(f"bins must be a positive integer; got {bins!r}")
    confidence = p.max(axis=1)  # (n,)
    correct = (p.argmax(axis=1) == y).astype(np.float64)  # (n,)
    # Right-closed bins: b = ceil(c * bins) - 1, so c = b/bins lands in bin b-1 and c = 0 in bin 0.
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)  # (n,)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)  # (bins,) sum(acc - conf)
    # sum_b |B_b|/n * |mean_B(acc) - mean_B(conf)| = sum_b |sum_B(acc - conf)| / n
    return float(np.abs(gap).sum() / y.shape[0])


def labelled_quality(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    n_classes: int,
    reference_accuracy: float,
    probs: npt.ArrayLike | None = None,
    alpha: float = 0.01,
    min_effect: float = 0.02,
    min_samples: int = 1,
) -> QualityResult:
    """Quality of a window of labelled predictions, and whether accuracy fell below the reference.

    Parameters
    ----------
    y_true, y_pred : array_like of int, shape (n,)
        True and predicted class indices in ``[0, n_classes)``; ``n >= 1``.
    n_classes : int
        Number of classes K >= 2.
    reference_accuracy : float
        Accuracy on the reference (validation) data, in [0, 1].
    probs : array_like, shape (n, K), optional
        Class probabilities, for the expected calibration error.
    alpha : float, optional
        Significance level of the binomial test.
    min_effect : float, optional
        Smallest accuracy drop (absolute) that counts as drift.
    min_samples : int, optional
        An extra floor (default 1): windows with fewer labelled predictions are reported but never flagged;
        so are windows too small for any outcome to be significant (see ``QualityResult.insufficient``).

    Returns
    -------
    QualityResult

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.quality import labelled_quality
    >>> y = np.arange(100) % 4
    >>> pred = np.where(np.arange(100) < 70, y, (y + 1) % 4)  # 70 % right
    >>> res = labelled_quality(y, pred, n_classes=4, reference_accuracy=0.9)
    >>> res.accuracy, res.drifted, f"{res.p_value:.1e}"
    (0.7, True, '2.4e-08')
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 2:
        raise StatisticsError(f"n_classes must be an integer >= 2; got {n_classes!r}")
    if not (0.0 <= reference_accuracy <= 1.0):
        raise StatisticsError(f"reference_accuracy must be in [0, 1]; got {reference_accuracy}")
    if not (0.0 < alpha < 1.0):
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha}")
    if not (0.0 <= min_effect <= 1.0):
        raise StatisticsError(f"min_effect must be in [0, 1]; got {min_effect}")
    if min_samples < 1:
        raise StatisticsError(f"min_samples must be >= 1; got {min_samples}")
    t = class_indices(y_true, "y_true")
    p = class_indices(y_pred, "y_pred")
    n = t.shape[0]
    if p.shape[0] != n:
        raise StatisticsError(f"y_pred has {p.shape[0]} entries but y_true has {n}")
    if n == 0:
        raise StatisticsError("y_true is empty: quality needs at least one labelled prediction")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.min() < 0 or arr.max() >= n_classes:
            raise StatisticsError(f"{name} must hold class indices in [0, {n_classes}); got [{arr.min()}, {arr.max()}]")

    n_classes = int(n_classes)
    c = confusion_matrix(t, p, n_classes).astype(np.float64)  # (K, K)
    tp = np.diag(c)  # (K,)
    support = c.sum(axis=1)  # (K,) true count per class
    predicted = c.sum(axis=0)  # (K,) predicted count per class
    correct = int(tp.sum())
    accuracy = correct / n
    # F1_k = 2 TP / (2 TP + FP + FN) = 2 TP / (support + predicted), over classes seen in either.
    present = (support + predicted) > 0
    f1 = 2.0 * tp[present] / (support[present] + predicted[present])
    recall: FloatArray = np.divide(tp, support, out=np.full(n_classes, np.nan), where=support > 0)

    ece = None
    if probs is not None:
        pm = probability_matrix(probs)
        if pm.shape != (n, n_classes):
            raise StatisticsError(f"probs has shape {pm.shape}; expected ({n}, {n_classes})")
        ece = expected_calibration_error(pm, t)

    p_value = float(stats.binomtest(correct, n, reference_accuracy, alternative="less").pvalue)
    # The smallest attainable p-value of the one-sided exact test: 0 of n right, P = (1 - p0)^n.
    insufficient = n < min_samples or (1.0 - reference_accuracy) ** n >= alpha
    # A small tolerance keeps a drop of exactly min_effect from failing on float rounding.
    big_enough = reference_accuracy - accuracy >= min_effect - 1e-12
    return QualityResult(
        n=n,
        accuracy=accuracy,
        macro_f1=float(f1.mean()),
        per_class_recall=tuple(float(r) for r in recall),
        ece=ece,
        reference_accuracy=float(reference_accuracy),
        p_value=p_value,
        drifted=bool(not insufficient and p_value < alpha and big_enough),
        insufficient=insufficient,
    )
