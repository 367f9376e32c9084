"""One-sided CUSUM on per-window scores, calibrated to a false-alarm rate, for slow drift.

A window test (KS, chi-squared, ...) gives one p-value per window.  :func:`z_from_p` turns it into
``z = Φ⁻¹(1 - p)``, which is N(0, 1) while nothing changes (for continuous p-values) and drifts upward when
the windows start to differ from the reference, even when no single window is significant.  :class:`CUSUM`
accumulates that evidence (Page 1954):

    S_0 = 0,    S_t = max(0, S_{t-1} + z_t - k),    alarm when S_t > h,

and restarts from 0 after each alarm.  ``k`` is half the shift (in standard deviations of ``z``) the chart is
tuned for; ``h`` is chosen so that the in-control average run length is ``ARL0 = 1 / false_alarm_rate``
windows, with Siegmund's (1985) approximation for a N(μ, 1) stream,

    ARL(μ) ≈ (exp(-2Δb) + 2Δb - 1) / (2Δ²),    Δ = μ - k,    b = h + 1.166,

(``b²`` when ``Δ = 0``), i.e. ``ARL0 ≈ (exp(2kb) - 2kb - 1) / (2k²)`` at ``μ = 0``.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from detectors._arrays import FloatArray, IntArray
from detectors.errors import StatisticsError

__all__ = ["CUSUM", "Z_MAX", "siegmund_arl", "z_from_p"]

#: Largest score :func:`z_from_p` returns, Φ⁻¹(1 - p) at the smallest normal float64 p (about 37.5).
Z_MAX: float = float(-special.ndtri(np.finfo(np.float64).tiny))

_SIEGMUND_CORRECTION = 1.166  # Siegmund's boundary correction for a N(μ, 1) stream: b = h + 1.166


@overload
def z_from_p(p: float) -> float: ...


@overload
def z_from_p(p: npt.NDArray[np.float64]) -> FloatArray: ...


def z_from_p(p: float | npt.NDArray[np.float64]) -> float | FloatArray:
    """Score ``z = Φ⁻¹(1 - p)`` of p-value(s) ``p``, clipped to ``[-Z_MAX, Z_MAX]`` so that 0 and 1 stay finite.

    Computed as ``-ndtri(p)``, accurate for tiny ``p`` where ``1 - p`` would round to 1.

    Examples
    --------
    >>> from detectors.cusum import z_from_p
    >>> round(z_from_p(0.025), 4), z_from_p(0.5)
    (1.96, 0.0)
    >>> z_from_p(0.0) == -z_from_p(1.0)
    True
    """
    arr = np.asarray(p, dtype=np.float64)
    if not np.all((arr >= 0.0) & (arr <= 1.0)):  # also rejects NaN
        raise StatisticsError(f"p-values must lie in [0, 1]; got {p!r}")
    z = np.clip(-special.ndtri(arr), -Z_MAX, Z_MAX) + 0.0  # + 0.0 turns -0.0 (at p = 0.5) into 0.0
    if np.ndim(p) == 0:
        return float(z)
    out: FloatArray = np.asarray(z, dtype=np.float64)
    return out


def siegmund_arl(shift: float, k: float, h: float) -> float:
    """Siegmund's approximation of the average run length of a one-sided CUSUM on a N(shift, 1) stream.

    Parameters
    ----------
    shift : float
        Mean of the scores (0 in control).
    k : float
        Reference value (allowance) of the CUSUM.
    h : float
        Decision threshold.

    Returns
    -------
    float
        Expected number of scores up to and including the first alarm, starting from ``S = 0``.

    Examples
    --------
    >>> from detectors.cusum import siegmund_arl
    >>> round(siegmund_arl(0.0, k=0.5, h=4.0), 1)  # the exact (Markov-chain) ARL0 is about 336
    338.1
    """
    if not (k > 0.0 and h >= 0.0 and math.isfinite(shift)):
        raise StatisticsError(f"need k > 0, h >= 0 and a finite shift; got k={k}, h={h}, shift={shift}")
    b = h + _SIEGMUND_CORRECTION
    delta = shift - k
    if abs(delta) < 1e-12:
        return b * b
    x = -2.0 * delta * b
    return (math.expm1(x) - x) / (2.0 * delta * delta)  # (exp(-2Δb) + 2Δb - 1) / (2Δ²)


def _calibrate_threshold(k: float, arl0: float) -> float:
    """Threshold ``h`` with ``siegmund_arl(0, k, h) == arl0`` (brentq on the log of the ARL)."""
    floor = siegmund_arl(0.0, k, 0.0)
    if arl0 <= floor:
        raise StatisticsError(
            f"false_alarm_rate {1.0 / arl0:g} is too high for k={k}: even h=0 gives ARL0 = {floor:.3g} windows"
        )
    # log ARL0 is increasing in h and ~ 2k h for large h, so the root lies below log(2k² ARL0) / (2k) + 1.
    upper = math.log(2.0 * k * k * arl0 + 1.0) / (2.0 * k) + 1.0
    return float(optimize.brentq(lambda h: math.log(siegmund_arl(0.0, k, h)) - math.log(arl0), 0.0, upper, xtol=1e-12))


class CUSUM:
    """One-sided upper CUSUM on scores that are N(0, 1) in control, with a calibrated false-alarm rate.

    Parameters
    ----------
    k : float
        Allowance: half the upward shift of the score mean the chart is tuned to detect fastest.
    false_alarm_rate : float
        Alarms per in-control score; the threshold is set so that ``ARL0 = 1 / false_alarm_rate``
        (Siegmund's approximation).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.cusum import CUSUM
    >>> cusum = CUSUM(k=0.5, false_alarm_rate=1e-3)
    >>> round(cusum.threshold, 3)
    5.063
    >>> z = np.r_[np.random.default_rng(7).normal(size=200), np.full(20, 1.5)]  # shift after 200 windows
    >>> [i for i, score in enumerate(z) if cusum.update(score)]
    [203, 209, 215]
    """

    def __init__(self, k: float = 0.5, false_alarm_rate: float = 1e-3) -> None:
        if not (math.isfinite(k) and k > 0.0):
            raise StatisticsError(f"k must be positive and finite; got {k}")
        if not 0.0 < false_alarm_rate < 1.0:
            raise StatisticsError(f"false_alarm_rate must lie strictly between 0 and 1; got {false_alarm_rate}")
        self.k = k
        self.false_alarm_rate = false_alarm_rate
        self._threshold = _calibrate_threshold(k, 1.0 / false_alarm_rate)
        self._reset()

    def _reset(self) -> None:
        self._statistic = 0.0
        self._drift_detected = False

    def reset(self) -> None:
        """Restart the chart from ``S = 0``."""
        self._reset()

    @property
    def threshold(self) -> float:
        """Decision threshold ``h``."""
        return self._threshold

    @property
    def statistic(self) -> float:
        """Current ``S_t`` (the value that crossed the threshold, right after an alarm)."""
        return self._statistic

    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` raised an alarm."""
        return self._drift_detected

    def snapshot(self) -> tuple[float, bool]:
        """``(S_t, alarmed)``: what :meth:`restore` needs to continue this chart in another process."""
        return self._statistic, self._drift_detected

    def restore(self, statistic: float, drift_detected: bool) -> None:
        """Continue from a :meth:`snapshot` (of a chart with the same ``k`` and threshold).

        >>> a, b = CUSUM(k=0.5), CUSUM(k=0.5)
        >>> _ = [a.update(z) for z in (1.0, 2.0)]
        >>> b.restore(*a.snapshot())
        >>> a.update(1.5) == b.update(1.5) and a.statistic == b.statistic
        True
        """
        if not (math.isfinite(statistic) and statistic >= 0.0):
            raise StatisticsError(f"a CUSUM statistic is finite and non-negative; got {statistic}")
        self._statistic, self._drift_detected = float(statistic), bool(drift_detected)

    def update(self, z: float) -> bool:
        """Add one score; return whether the chart alarms.  After an alarm the next update starts from 0."""
        if not math.isfinite(z):
            raise StatisticsError(f"score must be finite; got {z}")
        if self._drift_detected:
            self._reset()
        self._statistic = max(0.0, self._statistic + z - self.k)
        self._drift_detected = self._statistic > self._threshold
        return self._drift_detected

    def update_many(self, z: npt.ArrayLike) -> IntArray:
        """Add a sequence of scores; return the indices (into ``z``) of the alarms.

        Same result as calling :meth:`update` on each score (up to rounding in the running sums), but
        vectorised by chunks with the Lindley form of the recursion: with ``C_t`` the cumulative sum of
        ``z_i - k`` over the chunk and ``S_0`` the state before it,

            S_t = C_t - min(-S_0, min_{u <= t} C_u).

        Examples
        --------
        >>> import numpy as np
        >>> from detectors.cusum import CUSUM
        >>> CUSUM(k=0.5, false_alarm_rate=1e-3).update_many(np.r_[np.zeros(10), np.full(30, 1.5)])
        array([15, 21, 27, 33, 39])
        """
        scores = np.asarray(z, dtype=np.float64).reshape(-1)
        if not np.isfinite(scores).all():
            raise StatisticsError("scores must be finite")
        increments = scores - self.k  # (N,)
        alarms: list[int] = []
        start, chunk = 0, 256
        while start < increments.shape[0]:
            if self._drift_detected:
                self._reset()
            c = np.cumsum(increments[start : start + chunk])  # (L,)
            s = c - np.minimum(np.minimum.accumulate(c), -self._statistic)  # (L,) S_t, never below 0
            hit = np.flatnonzero(s > self._threshold)
            if hit.size:
                end = int(hit[0])
                alarms.append(start + end)
                self._statistic, self._drift_detected = float(s[end]), True
                start += end + 1
                chunk = max(256, 4 * (end + 1))  # alarms this close together: keep chunks near the gap
            else:
                self._statistic = float(s[-1])
                start += c.shape[0]
                chunk = min(4 * chunk, 1 << 16)
        return np.asarray(alarms, dtype=np.int64)
