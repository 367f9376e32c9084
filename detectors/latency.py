"""Latency histograms and multiwindow, multi-burn-rate SLO alerts.

:class:`LatencyHistogram` counts latencies in fixed log-spaced buckets shared by every process
(:data:`LATENCY_BOUNDS_S`), so histograms built beside different model replicas merge exactly by adding
their counts, and quantiles read from them carry a known relative error (see
:meth:`LatencyHistogram.quantile`).

:class:`BurnRateMonitor` evaluates a latency SLO the way the Google SRE workbook, chapter "Alerting on
SLOs", recommends (strategy 6, multiwindow multi-burn-rate): the burn rate of a window is its bad-event
ratio divided by the error budget ``1 - objective``; a page fires when both a long and a short window
burn faster than ``page_burn`` (14.4: 2% of a 30-day budget in one hour), a ticket when both ticket
windows burn faster than ``ticket_burn``.  The long window makes the alert significant, the short one
makes it reset soon after the burn stops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from detectors._arrays import FloatArray, IntArray
from detectors.errors import StatisticsError

__all__ = [
    "LATENCY_BOUNDS_S",
    "LATENCY_BUCKET_GROWTH",
    "SLO",
    "BurnRateMonitor",
    "BurnRateResult",
    "LatencyHistogram",
    "burn_rate",
]

_LOWEST_S = 1e-6
_HIGHEST_S = 1e3
_N_LOG_BUCKETS = math.ceil(math.log(_HIGHEST_S / _LOWEST_S) / math.log(1.02))  # 1047 buckets of <= 2% width

#: Ratio of the upper to the lower edge of every finite bucket (just under 1.02).
LATENCY_BUCKET_GROWTH: float = (_HIGHEST_S / _LOWEST_S) ** (1.0 / _N_LOG_BUCKETS)

#: Bucket edges in seconds, 1 µs .. 1000 s, geometric with ratio :data:`LATENCY_BUCKET_GROWTH`; shape (1048,).
#: Below the first edge is an underflow bucket ``[0, 1 µs)``, above the last an overflow bucket ``[1000 s, inf)``.
LATENCY_BOUNDS_S: FloatArray = _LOWEST_S * LATENCY_BUCKET_GROWTH ** np.arange(_N_LOG_BUCKETS + 1, dtype=np.float64)
LATENCY_BOUNDS_S.setflags(write=False)


def _latencies(values: npt.ArrayLike, name: str) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StatisticsError(f"{name} must be numeric: {exc}") from exc
    return arr.reshape(-1)


class LatencyHistogram:
    """Mergeable histogram of latencies in seconds with fixed log-spaced buckets.

    Bucket ``0`` is ``[0, bounds[0])``, bucket ``i`` is ``[bounds[i-1], bounds[i])`` and the last bucket
    is ``[bounds[-1], inf)``.  NaN, infinite and negative values are not added; they are counted in
    :attr:`rejected`.

    Parameters
    ----------
    bounds : array_like, optional
        Strictly increasing positive finite bucket edges in seconds.  Defaults to :data:`LATENCY_BOUNDS_S`;
        keep the default so that histograms from different processes merge.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.latency import LatencyHistogram
    >>> h = LatencyHistogram()
    >>> h.add(np.array([0.010, 0.020, 0.030, float("nan")]))
    >>> h.count, h.rejected, round(h.sum, 3)
    (3, 1, 0.06)
    >>> bool(abs(h.quantile(0.5) - 0.020) <= 0.02 * 0.020)
    True
    """

    def __init__(self, bounds: npt.ArrayLike | None = None) -> None:
        if bounds is None:
            self.bounds = LATENCY_BOUNDS_S
        else:
            edges = np.array(bounds, dtype=np.float64)
            if edges.ndim != 1 or edges.shape[0] < 2:
                raise StatisticsError(f"bounds must be a 1-D array of at least 2 edges; got shape {edges.shape}")
            if not np.isfinite(edges).all() or edges[0] <= 0.0 or np.any(np.diff(edges) <= 0.0):
                raise StatisticsError("bounds must be finite, positive and strictly increasing")
            edges.setflags(write=False)
            self.bounds = edges
        self._reset()

    def _reset(self) -> None:
        self._counts: IntArray = np.zeros(self.bounds.shape[0] + 1, dtype=np.int64)  # (B+1,) incl. under/overflow
        self._sum = 0.0
        self._rejected = 0

    def reset(self) -> None:
        """Forget every value (the bounds are kept)."""
        self._reset()

    @property
    def counts(self) -> IntArray:
        """Read-only view of the counts, shape ``(len(bounds) + 1,)``, underflow first, overflow last."""
        view = self._counts.view()
        view.setflags(write=False)
        return view

    @property
    def count(self) -> int:
        """Number of values added."""
        return int(self._counts.sum())

    @property
    def sum(self) -> float:
        """Sum of the values added, in seconds."""
        return self._sum

    @property
    def rejected(self) -> int:
        """Number of NaN, infinite or negative values that were not added."""
        return self._rejected

    def add(self, values: npt.ArrayLike) -> None:
        """Count ``values`` (seconds, any shape) into their buckets."""
        v = _latencies(values, "values")
        ok = np.isfinite(v) & (v >= 0.0)
        v = v[ok]
        self._rejected += int(ok.size - v.size)
        # side="right": a value equal to an edge belongs to the bucket that starts there.
        index = np.searchsorted(self.bounds, v, side="right")  # (m,) in 0..B
        self._counts += np.bincount(index, minlength=self._counts.shape[0])
        self._sum += float(v.sum())

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Return a new histogram holding the values of both ``self`` and ``other``."""
        if other.bounds is not self.bounds and not np.array_equal(other.bounds, self.bounds):
            raise StatisticsError(
                f"cannot merge histograms with different bucket bounds ({self.bounds.shape[0]} edges "
                f"from {self.bounds[0]:g} s vs {other.bounds.shape[0]} edges from {other.bounds[0]:g} s)"
            )
        merged = LatencyHistogram(None if self.bounds is LATENCY_BOUNDS_S else self.bounds)
        merged._counts = self._counts + other._counts
        merged._sum = self._sum + other._sum
        merged._rejected = self._rejected + other._rejected
        return merged

    @overload
    def quantile(self, q: float) -> float: ...

    @overload
    def quantile(self, q: npt.NDArray[np.float64]) -> FloatArray: ...

    def quantile(self, q: float | npt.NDArray[np.float64]) -> float | FloatArray:
        """Estimate quantiles of the values added.

        The estimate follows ``np.percentile(values, 100 * q)`` (linear interpolation between the order
        statistics of rank ``floor(r)`` and ``ceil(r)``, ``r = q (count - 1)``), with each order statistic
        replaced by a point inside its bucket: the ``j``-th of the ``c`` values of bucket ``[a, b)`` is put at
        ``a (b / a) ** ((j + 0.5) / c)`` (geometric spacing; linear in the underflow bucket).  An order
        statistic and its estimate share a bucket, so for every value in ``[bounds[0], bounds[-1])``

            |estimate - exact| < (b - a) <= (LATENCY_BUCKET_GROWTH - 1) * exact,

        a relative error below 2% with the default bounds, and a convex combination of two such estimates
        keeps the bound.  Values in the overflow bucket are reported as ``bounds[-1]``.

        Parameters
        ----------
        q : float or ndarray
            Quantile level(s) in ``[0, 1]``.

        Returns
        -------
        float or ndarray
            Latency in seconds, shaped like ``q``.

        Raises
        ------
        StatisticsError
            If the histogram is empty or ``q`` is outside ``[0, 1]``.
        """
        levels = np.asarray(q, dtype=np.float64)
        if not np.all((levels >= 0.0) & (levels <= 1.0)):
            raise StatisticsError(f"quantile level(s) must lie in [0, 1]; got {q!r}")
        total = self.count
        if total == 0:
            raise StatisticsError("quantile of an empty LatencyHistogram")
        rank = levels * (total - 1)  # fractional 0-based rank, as np.percentile(method="linear")
        low = np.floor(rank)
        value = self._order_statistic(low)
        frac = rank - low
        upper = self._order_statistic(np.minimum(low + 1.0, total - 1))
        result = value + frac * (upper - value)
        if np.ndim(q) == 0:
            return float(result)
        out: FloatArray = np.asarray(result, dtype=np.float64)
        return out

    def _order_statistic(self, rank: FloatArray) -> FloatArray:
        """Estimated value of the order statistics of integer 0-based ``rank`` (any shape)."""
        cum = np.cumsum(self._counts)  # (B+1,)
        k = rank.astype(np.int64)
        bucket = np.searchsorted(cum, k, side="right")  # first bucket whose cumulative count exceeds k
        in_bucket = self._counts[bucket]
        position = (k - (cum[bucket] - in_bucket) + 0.5) / in_bucket  # (j + 0.5) / c in (0, 1)
        edges = np.concatenate([[0.0], self.bounds, [self.bounds[-1]]])  # lower edge of bucket i is edges[i]
        lower, upper = edges[bucket], edges[bucket + 1]
        geometric = lower * (upper / np.where(lower > 0.0, lower, 1.0)) ** position
        linear = lower + position * (upper - lower)
        out: FloatArray = np.where(bucket == 0, linear, geometric)
        return out

    def to_arrays(self) -> tuple[FloatArray, IntArray, float, int]:
        """Return ``(bounds, counts, sum, rejected)``, copies that :meth:`from_arrays` turns back into a histogram."""
        return self.bounds.copy(), self._counts.copy(), self._sum, self._rejected

    @classmethod
    def from_arrays(
        cls, bounds: npt.ArrayLike, counts: npt.ArrayLike, sum_s: float, rejected: int = 0
    ) -> LatencyHistogram:
        """Rebuild a histogram from :meth:`to_arrays` output (for example after it crossed a process boundary).

        Examples
        --------
        >>> from detectors.latency import LatencyHistogram
        >>> h = LatencyHistogram()
        >>> h.add([0.5, 1.5])
        >>> LatencyHistogram.from_arrays(*h.to_arrays()).count
        2
        """
        edges = np.asarray(bounds, dtype=np.float64)
        histogram = cls(None if np.array_equal(edges, LATENCY_BOUNDS_S) else edges)
        values = np.asarray(counts)
        if values.shape != histogram._counts.shape:
            raise StatisticsError(
                f"counts must have shape {histogram._counts.shape} (len(bounds) + 1); got {values.shape}"
            )
        if not np.issubdtype(values.dtype, np.integer) or np.any(values < 0):
            raise StatisticsError("counts must be non-negative integers")
        if not math.isfinite(sum_s) or int(rejected) < 0:
            raise StatisticsError(f"sum_s must be finite and rejected non-negative; got {sum_s!r}, {rejected!r}")
        histogram._counts = values.astype(np.int64)
        histogram._sum = float(sum_s)
        histogram._rejected = int(rejected)
        return histogram


@dataclass(frozen=True)
class SLO:
    """A latency objective: a fraction ``objective`` of requests finish within ``threshold_s`` seconds.

    Examples
    --------
    >>> from detectors.latency import SLO
    >>> SLO(threshold_s=0.250, objective=0.99)
    SLO(threshold_s=0.25, objective=0.99)
    """

    threshold_s: float
    objective: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold_s) and self.threshold_s > 0.0):
            raise StatisticsError(f"SLO threshold_s must be positive and finite (seconds); got {self.threshold_s}")
        if not 0.0 < self.objective < 1.0:
            raise StatisticsError(f"SLO objective must lie strictly between 0 and 1; got {self.objective}")


def burn_rate(bad: float, total: float, objective: float) -> float:
    """Rate at which a window spends the error budget: ``(bad / total) / (1 - objective)``.

    A burn rate of 1 spends exactly the budget over the SLO period; a window without requests burns 0.

    Examples
    --------
    >>> from detectors.latency import burn_rate
    >>> round(burn_rate(bad=36, total=1000, objective=0.99), 6)
    3.6
    """
    if not 0.0 < objective < 1.0:
        raise StatisticsError(f"objective must lie strictly between 0 and 1; got {objective}")
    if not (0.0 <= bad <= total) or not math.isfinite(total):
        raise StatisticsError(f"need 0 <= bad <= total < inf; got bad={bad}, total={total}")
    if total == 0:
        return 0.0
    return (bad / total) / (1.0 - objective)


@dataclass(frozen=True)
class BurnRateResult:
    """Burn rates of the four windows and the alert decisions at one instant.

    Attributes
    ----------
    page_long, page_short, ticket_long, ticket_short : float
        Burn rate of each window (0 for a window without requests).
    page : bool
        Both page windows burn at least ``page_burn``.
    ticket : bool
        Both ticket windows burn at least ``ticket_burn``.
    """

    page_long: float
    page_short: float
    ticket_long: float
    ticket_short: float
    page: bool
    ticket: bool


class BurnRateMonitor:
    """Multiwindow, multi-burn-rate alerting on a latency :class:`SLO` (Google SRE workbook, "Alerting on SLOs").

    Requests are counted good (latency ``<= slo.threshold_s``) or bad per time bucket of ``bucket_s`` seconds,
    in a ring buffer of ``longest window / bucket_s + 1`` buckets (the spare one keeps every window that ends
    in the previous bucket intact while events of the next bucket arrive): memory does not grow with the stream.
    A window of ``w`` seconds evaluated at ``now`` covers the ``w / bucket_s`` buckets ending with the one that
    holds ``now``.  The clock is always passed in.

    Parameters
    ----------
    slo : SLO
        The objective.
    bucket_s : float
        Time resolution in seconds; every window must be a whole number of buckets.
    page_windows : tuple of float
        ``(long, short)`` page windows in seconds.
    page_burn : float
        Burn rate both page windows must reach to page.
    ticket_windows : tuple of float
        ``(long, short)`` ticket windows in seconds.
    ticket_burn : float
        Burn rate both ticket windows must reach to open a ticket.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.latency import SLO, BurnRateMonitor
    >>> monitor = BurnRateMonitor(SLO(threshold_s=0.1, objective=0.99))
    >>> for minute in range(60):  # an hour with 20% of requests too slow
    ...     monitor.observe(60.0 * minute, np.array([0.05] * 80 + [0.5] * 20))
    >>> result = monitor.evaluate(now=3599.0)
    >>> round(result.page_long, 6), result.page, result.ticket
    (20.0, True, True)
    """

    def __init__(
        self,
        slo: SLO,
        bucket_s: float = 60.0,
        page_windows: tuple[float, float] = (3600.0, 300.0),
        page_burn: float = 14.4,
        ticket_windows: tuple[float, float] = (21600.0, 1800.0),
        ticket_burn: float = 6.0,
    ) -> None:
        if not (math.isfinite(bucket_s) and bucket_s > 0.0):
            raise StatisticsError(f"bucket_s must be a positive finite number of seconds; got {bucket_s}")
        if not (page_burn > 0.0 and ticket_burn > 0.0):
            raise StatisticsError(f"page_burn and ticket_burn must be positive; got {page_burn}, {ticket_burn}")
        for name, (long_s, short_s) in (("page_windows", page_windows), ("ticket_windows", ticket_windows)):
            if not long_s >= short_s:
                raise StatisticsError(f"{name} must be (long, short) seconds; got {(long_s, short_s)}")
        self.slo = slo
        self.bucket_s = bucket_s
        self.page_windows = page_windows
        self.page_burn = page_burn
        self.ticket_windows = ticket_windows
        self.ticket_burn = ticket_burn
        # Window lengths in buckets, order (page_long, page_short, ticket_long, ticket_short).
        lengths = []
        for window in (*page_windows, *ticket_windows):
            n = window / bucket_s
            if not (math.isfinite(n) and n >= 1.0 and abs(n - round(n)) < 1e-9 * n):
                raise StatisticsError(f"window {window} s is not a positive whole number of {bucket_s} s buckets")
            lengths.append(round(n))
        self._window_buckets: IntArray = np.array(lengths, dtype=np.int64)  # (4,)
        self._reset()

    def _reset(self) -> None:
        n_slots = int(self._window_buckets.max()) + 1
        self._epoch: IntArray = np.full(n_slots, np.iinfo(np.int64).min, dtype=np.int64)  # bucket held by each slot
        self._good: IntArray = np.zeros(n_slots, dtype=np.int64)
        self._bad: IntArray = np.zeros(n_slots, dtype=np.int64)
        self._rejected = 0
        self._late = 0

    def reset(self) -> None:
        """Forget every observation."""
        self._reset()

    @property
    def n_buckets(self) -> int:
        """Size of the ring buffer (buckets of the longest window, plus one); fixed at construction."""
        return int(self._epoch.shape[0])

    @property
    def rejected(self) -> int:
        """Latencies not counted because they were NaN, infinite or negative."""
        return self._rejected

    @property
    def late(self) -> int:
        """Latencies not counted because their bucket had already left the longest window."""
        return self._late

    def snapshot(self) -> dict[str, list[int]]:
        """The counts of the buckets still in the ring (``epoch``, ``good``, ``bad`` lists, oldest first) and the
        ``rejected``/``late`` totals: what :meth:`restore` needs to continue in another process."""
        held = np.flatnonzero(self._epoch != np.iinfo(np.int64).min)
        held = held[np.argsort(self._epoch[held])]
        return {"epoch": self._epoch[held].tolist(), "good": self._good[held].tolist(),
                "bad": self._bad[held].tolist(), "totals": [self._rejected, self._late]}

    def restore(self, snapshot: Mapping[str, Sequence[int]]) -> None:
        """Continue from a :meth:`snapshot` of a monitor with the same windows and bucket size.

        >>> import numpy as np
        >>> from detectors.latency import SLO, BurnRateMonitor
        >>> a, b = BurnRateMonitor(SLO(0.1, 0.99)), BurnRateMonitor(SLO(0.1, 0.99))
        >>> a.observe(60.0, np.array([0.05, 0.5, 0.5]))
        >>> b.restore(a.snapshot())
        >>> a.evaluate(100.0) == b.evaluate(100.0)
        True
        """
        self._reset()
        epochs, good, bad = (np.asarray(snapshot[k], dtype=np.int64) for k in ("epoch", "good", "bad"))
        if not (epochs.shape == good.shape == bad.shape) or (good < 0).any() or (bad < 0).any():
            raise StatisticsError("a burn-rate snapshot has epoch, good and bad lists of one length, counts >= 0")
        slots = epochs % self.n_buckets
        self._epoch[slots], self._good[slots], self._bad[slots] = epochs, good, bad
        self._rejected, self._late = (int(v) for v in snapshot.get("totals", (0, 0)))

    def observe(self, time_s: float, latencies: npt.ArrayLike) -> None:
        """Count the requests that completed at ``time_s`` (seconds) with the given ``latencies`` (seconds)."""
        if not math.isfinite(time_s):
            raise StatisticsError(f"time_s must be finite; got {time_s}")
        v = _latencies(latencies, "latencies")
        ok = np.isfinite(v) & (v >= 0.0)
        self._rejected += int(v.size - np.count_nonzero(ok))
        bad = int(np.count_nonzero(v[ok] > self.slo.threshold_s))
        good = int(np.count_nonzero(ok)) - bad
        epoch = math.floor(time_s / self.bucket_s)
        slot = epoch % self.n_buckets
        if epoch < self._epoch[slot]:  # the slot already holds a newer bucket: this one fell out of every window
            self._late += good + bad
            return
        if epoch > self._epoch[slot]:  # recycle the slot
            self._epoch[slot], self._good[slot], self._bad[slot] = epoch, 0, 0
        self._good[slot] += good
        self._bad[slot] += bad

    def evaluate(self, now: float) -> BurnRateResult:
        """Burn rates of the four windows ending at ``now`` (seconds) and the page and ticket decisions."""
        if not math.isfinite(now):
            raise StatisticsError(f"now must be finite; got {now}")
        current = math.floor(now / self.bucket_s)
        age = current - self._epoch  # (S,) buckets since each slot's bucket; negative for the future
        inside = (age[None, :] >= 0) & (age[None, :] < self._window_buckets[:, None])  # (4, S)
        bad = inside @ self._bad  # (4,)
        total = bad + inside @ self._good  # (4,)
        # burn = (bad / total) / (1 - objective); an empty window burns nothing.
        rates = np.divide(bad, total, out=np.zeros(4), where=total > 0) / (1.0 - self.slo.objective)
        page_long, page_short, ticket_long, ticket_short = (float(r) for r in rates)
        return BurnRateResult(
            page_long=page_long,
            page_short=page_short,
            ticket_long=ticket_long,
            ticket_short=ticket_short,
            page=page_long >= self.page_burn and page_short >= self.page_burn,
            ticket=ticket_long >= self.ticket_burn and ticket_short >= self.ticket_burn,
        )
