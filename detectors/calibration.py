"""Probability calibration of a classifier's outputs: temperature scaling and multiclass isotonic regression.

A calibrator is fitted once, offline, on a labelled validation split (never the training split, where
the model is over-confident), stored in the reference profile as plain arrays, and applied to every
live window before label-free performance estimation (:mod:`detectors.cbpe`).

* **temperature** (Guo et al., 2017, "On Calibration of Modern Neural Networks"): with ``z = log p``
  (the logits up to a per-row constant, which softmax ignores), ``q = softmax(z / T)``; ``T`` minimises
  the validation negative log-likelihood.  One parameter, so it cannot over-fit, and it keeps the argmax.
* **isotonic** (Zadrozny & Elkan, 2002): for each class ``k`` a non-decreasing map
  ``g_k(p_k) ~= P(y = k | p_k)`` (one-vs-rest isotonic regression, pool-adjacent-violators), then rows
  are renormalised to sum to 1 (uniform where every ``g_k`` is 0), as scikit-learn's
  ``CalibratedClassifierCV(method="isotonic")`` does.
* **identity**: no change (rows renormalised).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from detectors._arrays import FloatArray, IntArray, class_indices, float_matrix, readonly
from detectors.errors import StatisticsError

__all__ = ["CalibrationMethod", "Calibrator", "fit_calibrator", "isotonic_fit", "probability_matrix"]

CalibrationMethod = Literal["temperature", "isotonic", "identity"]

#: Probabilities are floored here before the logarithm (float32 softmax underflows to exactly 0).
_LOG_FLOOR: float = 1e-300
#: Row sums of a probability matrix may differ from 1 by at most this much (float32 softmax rounding).
_ROW_SUM_TOL: float = 1e-3
#: Search interval of log T for temperature scaling: T in [e^-5, e^5] ~= [0.0067, 148].
_LOG_T_BOUNDS: tuple[float, float] = (-5.0, 5.0)


def probability_matrix(probs: npt.ArrayLike, name: str = "probs") -> FloatArray:
    """Validate a (m, K) matrix of class probabilities and return it as float64 with rows summing to 1.

    Parameters
    ----------
    probs : array_like, shape (m, K)
        Finite, non-negative rows that sum to 1 within 1e-3 (they are renormalised exactly).
    name : str, optional
        Name used in error messages.

    Returns
    -------
    ndarray, shape (m, K)

    Examples
    --------
    >>> from detectors.calibration import probability_matrix
    >>> probability_matrix([[0.2, 0.8], [0.5, 0.5]])
    array([[0.2, 0.8],
           [0.5, 0.5]])
    """
    p = float_matrix(probs, name)
    if p.shape[1] < 2:
        raise StatisticsError(f"{name} must have at least 2 class columns; got shape {p.shape}")
    if not np.isfinite(p).all():
        raise StatisticsError(f"{name} contains non-finite values (NaN or inf)")
    if (p < 0).any():
        raise StatisticsError(f"{name} contains negative probabilities")
    sums = p.sum(axis=1)  # (m,)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOL)
    if bad.size:
        raise StatisticsError(
            f"{name} rows must sum to 1; {bad.size} row(s) do not, e.g. row {bad[0]} sums to {sums[bad[0]]:.6g}"
        )
    out: FloatArray = p / sums[:, None]
    return out


def isotonic_fit(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Least-squares non-decreasing fit of ``y`` on ``x`` (pool-adjacent-violators), as interpolation knots.

    Equal ``x`` values are pooled first (their ``y`` averaged), so they share one fitted value, exactly
    as ``sklearn.isotonic.IsotonicRegression`` does.  The fitted function is the linear interpolation
    of the returned knots, constant beyond their ends:
    ``np.interp(v, knots_x, knots_y)`` equals ``IsotonicRegression(out_of_bounds="clip").predict(v)``.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Finite sample, ``n >= 1``.

    Returns
    -------
    knots_x : ndarray, shape (L,)
        Strictly increasing knot positions: the first and last ``x`` of every pooled block.
    knots_y : ndarray, shape (L,)
        Non-decreasing fitted values at the knots.

    Examples
    --------
    >>> from detectors.calibration import isotonic_fit
    >>> kx, ky = isotonic_fit([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0])
    >>> kx.tolist(), ky.tolist()
    ([1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 0.5, 1.0])
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape or xs.size < 1:
        raise StatisticsError(f"x and y must be non-empty 1-D arrays of equal length; got {xs.shape} and {ys.shape}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise StatisticsError("x and y must be finite")
    ux, inverse = np.unique(xs, return_inverse=True)  # (U,) sorted unique x
    weight = np.bincount(inverse).astype(np.float64)  # (U,) samples per unique x
    total = np.bincount(inverse, weights=ys)  # (U,) sum of y per unique x

    # Pool adjacent violators, vectorised: a block is [start, next start).  Each pass merges every maximal
    # run of blocks whose means strictly decrease.  Pooling a violating pair yields a mean >= the second
    # block's, which still exceeds the next one in the run, so merging whole runs is a valid sequence of
    # pairwise pools, and PAV's result does not depend on the order of pools.  Every pass that changes
    # anything removes at least one block, so at most U passes (a handful on calibration data).
    starts = np.arange(ux.size)  # (B,) first unique-x index of each block
    block_w, block_s = weight, total
    while True:
        means = block_s / block_w  # (B,)
        violates = means[:-1] > means[1:]  # (B-1,) block b+1 must merge into block b
        if not violates.any():
            break
        keep = np.concatenate(([True], ~violates))  # (B,) blocks that still start a block
        starts = starts[keep]
        block_w = np.add.reduceat(block_w, np.flatnonzero(keep))
        block_s = np.add.reduceat(block_s, np.flatnonzero(keep))
    means = block_s / block_w  # (B,) non-decreasing
    ends = np.append(starts[1:], ux.size) - 1  # (B,) last unique-x index of each block
    # Knots: (first x, mean) and (last x, mean) of each block; single-point blocks give one knot.
    kx = np.stack([ux[starts], ux[ends]], axis=1).ravel()  # (2B,)
    ky = np.repeat(means, 2)  # (2B,)
    distinct = np.concatenate(([True], kx[1:] != kx[:-1]))
    return kx[distinct], ky[distinct]


@dataclass(frozen=True, eq=False)
class Calibrator:
    """A fitted probability calibration map; see the module docstring for the methods.

    Attributes
    ----------
    method : {"temperature", "isotonic", "identity"}
    n_classes : int
        Number of classes K the map was fitted for.
    temperature : float
        Softmax temperature T (1.0 unless ``method == "temperature"``).
    knots_x, knots_y : ndarray, shape (L,)
        Isotonic knots of all classes, concatenated (empty unless ``method == "isotonic"``).
    knot_offsets : ndarray, shape (K + 1,)
        Class ``k`` owns ``knots_*[knot_offsets[k]:knot_offsets[k + 1]]`` (empty unless isotonic).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.calibration import Calibrator
    >>> cal = Calibrator("temperature", n_classes=2, temperature=2.0)
    >>> cal.apply(np.array([[0.2, 0.8]])).round(3)
    array([[0.333, 0.667]])
    >>> Calibrator.from_arrays(cal.to_arrays()).temperature
    2.0
    """

    method: CalibrationMethod
    n_classes: int
    temperature: float = 1.0
    knots_x: FloatArray = field(default_factory=lambda: np.zeros(0))
    knots_y: FloatArray = field(default_factory=lambda: np.zeros(0))
    knot_offsets: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.method not in get_args(CalibrationMethod):
            raise StatisticsError(f"method must be one of {get_args(CalibrationMethod)}; got {self.method!r}")
        if self.n_classes < 2:
            raise StatisticsError(f"n_classes must be >= 2; got {self.n_classes}")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise StatisticsError(f"temperature must be finite and > 0; got {self.temperature}")
        if self.method == "isotonic":
            off = self.knot_offsets
            if off.shape != (self.n_classes + 1,) or off[0] != 0 or off[-1] != self.knots_x.size:
                raise StatisticsError(
                    f"knot_offsets must have shape ({self.n_classes + 1},), start at 0 and end at "
                    f"{self.knots_x.size}; got {off.tolist()}"
                )
            if self.knots_y.shape != self.knots_x.shape or (np.diff(off) < 1).any():
                raise StatisticsError("isotonic knots are malformed: every class needs at least one knot")

    def apply(self, probs: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities of the rows of ``probs``.

        Parameters
        ----------
        probs : array_like, shape (m, K)
            Model probabilities (rows sum to 1).

        Returns
        -------
        ndarray, shape (m, K)
            Calibrated probabilities; rows sum to 1.
        """
        p = probability_matrix(probs)
        if p.shape[1] != self.n_classes:
            raise StatisticsError(f"probs has {p.shape[1]} classes but the calibrator was fitted for {self.n_classes}")
        if self.method == "temperature":
            return _tempered(np.log(np.maximum(p, _LOG_FLOOR)), self.temperature)
        if self.method == "identity":
            return p
        q = np.empty_like(p)  # (m, K); one interpolation per class, vectorised over rows
        for k in range(self.n_classes):
            lo, hi = self.knot_offsets[k], self.knot_offsets[k + 1]
            q[:, k] = np.interp(p[:, k], self.knots_x[lo:hi], self.knots_y[lo:hi])
        sums = q.sum(axis=1, keepdims=True)  # (m, 1)
        out: FloatArray = np.divide(q, sums, out=np.full_like(q, 1.0 / self.n_classes), where=sums > 0)
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The calibrator as plain arrays (no objects), for an ``.npz`` read with ``allow_pickle=False``."""
        return {
            "method": np.array(self.method),
            "n_classes": np.array(self.n_classes, dtype=np.int64),
            "temperature": np.array(self.temperature, dtype=np.float64),
            "knots_x": np.asarray(self.knots_x, dtype=np.float64),
            "knots_y": np.asarray(self.knots_y, dtype=np.float64),
            "knot_offsets": np.asarray(self.knot_offsets, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Calibrator:
        """Rebuild a calibrator from :meth:`to_arrays` output; raises :class:`StatisticsError` if malformed."""
        missing = {"method", "n_classes", "temperature", "knots_x", "knots_y", "knot_offsets"} - set(arrays)
        if missing:
            raise StatisticsError(f"calibrator arrays lack {sorted(missing)}")
        method = str(arrays["method"])
        if method not in get_args(CalibrationMethod):
            raise StatisticsError(f"calibrator method must be one of {get_args(CalibrationMethod)}; got {method!r}")
        return cls(
            method=method,  # type: ignore[arg-type]  # checked against the Literal just above
            n_classes=int(arrays["n_classes"]),
            temperature=float(arrays["temperature"]),
            knots_x=readonly(np.array(arrays["knots_x"], dtype=np.float64)),
            knots_y=readonly(np.array(arrays["knots_y"], dtype=np.float64)),
            knot_offsets=np.array(arrays["knot_offsets"], dtype=np.int64),
        )


def _tempered(log_p: FloatArray, temperature: float) -> FloatArray:
    """softmax(log_p / T) row-wise; (m, K) -> (m, K)."""
    out: FloatArray = special.softmax(log_p / temperature, axis=1)
    return out


def fit_calibrator(
    probs: npt.ArrayLike, y_true: npt.ArrayLike, method: CalibrationMethod = "temperature"
) -> Calibrator:
    """Fit a calibration map on a labelled validation split.

    Parameters
    ----------
    probs : array_like, shape (n, K)
        The model's probabilities on the validation rows.
    y_true : array_like, shape (n,)
        True class indices in ``[0, K)``.
    method : {"temperature", "isotonic", "identity"}, optional
        Temperature scaling minimises the mean NLL ``-mean_i log softmax(log p_i / T)[y_i]`` over
        ``log T`` (bounded Brent search, ``T`` in [e^-5, e^5]); isotonic fits one pool-adjacent-violators
        regression of ``[y == k]`` on ``p_k`` per class.

    Returns
    -------
    Calibrator

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.calibration import fit_calibrator
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 500)
    >>> over_confident = np.where(rng.random(500) < 0.8, y, 1 - y)  # 80 % right, claims 99 %
    >>> p = np.where(over_confident[:, None] == [0, 1], 0.99, 0.01)
    >>> round(fit_calibrator(p, y).temperature, 2)  # T > 1 softens the probabilities
    3.2
    """
    if method not in get_args(CalibrationMethod):
        raise StatisticsError(f"method must be one of {get_args(CalibrationMethod)}; got {method!r}")
    p = probability_matrix(probs)
    y = class_indices(y_true, "y_true")
    n, k = p.shape
    if y.shape[0] != n:
        raise StatisticsError(f"y_true has {y.shape[0]} labels but probs has {n} rows")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise StatisticsError(f"y_true must hold class indices in [0, {k}); got range [{y.min()}, {y.max()}]")
    if method == "identity":
        return Calibrator("identity", n_classes=k)
    if method == "temperature":
        log_p = np.log(np.maximum(p, _LOG_FLOOR))  # (n, K)
        rows = np.arange(n)

        def nll(log_t: float) -> float:
            z = log_p / np.exp(log_t)  # (n, K)
            return float(np.mean(special.logsumexp(z, axis=1) - z[rows, y]))

        res = optimize.minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
        return Calibrator("temperature", n_classes=k, temperature=float(np.exp(res.x)))
    fits = [isotonic_fit(p[:, c], (y == c).astype(np.float64)) for c in range(k)]  # one per class
    offsets = np.concatenate(([0], np.cumsum([kx.size for kx, _ in fits]))).astype(np.int64)
    return Calibrator(
        "isotonic",
        n_classes=k,
        knots_x=readonly(np.concatenate([kx for kx, _ in fits])),
        knots_y=readonly(np.concatenate([ky for _, ky in fits])),
        knot_offsets=offsets,
    )
