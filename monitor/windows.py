"""Tumbling windows of inference events per model version, cut by count or by event time.

By count (the default) a window closes at ``size`` events, or after ``max_seconds`` of wall time once it holds
``min_samples``. Its id derives from the transport position of its first event (record offset, and the event's
index inside a batch record when it is not the first), so a window replayed after a crash or a rebalance gets the
same id and its result is recognised.

By event time (``duration_s``) window *k* of a model version holds the events whose time lies in
``[k·d, (k+1)·d)``, aligned to the Unix epoch so that every process cuts the same windows; its id names its start
in milliseconds (``m/1@t1700000000000``). It closes when the version's *watermark*, the latest event time seen,
passes its end by ``lateness_s``. An event whose window has closed is *late*: counted, and dropped or added to
the first window still open (``late="next"``). A window keeps at most ``max_rows`` events (more are counted and
dropped); a version that sends nothing for ``max_seconds`` of wall time has its open windows closed.

Either way an event whose request id its window already holds is dropped and counted (a retried request), and
a window's index, its place among its version's windows, is given as it closes. Memory is bounded by the watched
versions times their open windows (at most ``lateness_s / duration_s + 2`` each) times the rows they keep.

>>> ws = Windows(size=2, max_seconds=60.0, min_samples=1)
>>> layout = {"numeric": Column(1), "prediction": Column(None, np.int64, -1)}
>>> ws.add("m/1", layout, {"numeric": [0.5], "prediction": 1}, ("t", 0, 7, 0), event_time=1.0, now=0.0)
[]
>>> (closed,) = ws.add("m/1", layout, {"numeric": [0.7]}, ("t", 0, 8, 0), event_time=2.0, now=0.0)
>>> closed.window_id, closed.n, closed.features.tolist(), closed.predictions.tolist()
('m/1@t-0:7', 2, [[0.5], [0.7]], [1])

By event time, ten-second windows with two seconds of lateness:

>>> ws = Windows(size=2, max_seconds=60.0, min_samples=1, duration_s=10.0, lateness_s=2.0)
>>> [ws.add("m/1", layout, {"numeric": [t]}, ("t", 0, o, 0), event_time=t, now=0.0)
...  for o, t in enumerate([3.0, 11.0, 9.0, 12.5])][-1][0].window_id   # 9.0 is in time; 12.5 closes [0, 10)
'm/1@t0'
>>> ws.add("m/1", layout, {"numeric": [8.0]}, ("t", 0, 4, 0), event_time=8.0, now=0.0), ws.dropped
([], {('m/1', 'late'): 1})
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Raw payloads a window keeps (those the collectors sampled, encoded; the window's first ones within both caps).
MAX_PAYLOADS = 64
MAX_PAYLOAD_BYTES = 1 << 20

Position = tuple[str, int, int, int]
"""(topic, partition, offset, index of the event among the record's valid events)."""
TopicPartition = tuple[str, int]
Resume = tuple[int, int]
"""(offset, events of that record to skip): where a restarted consumer must resume."""


@dataclass(frozen=True)
class Column:
    """One per-event column of a window: ``width`` values per event (None: one scalar), filled with ``fill``
    where an event does not carry it."""

    width: int | None
    dtype: type = np.float64
    fill: float = np.nan


Layout = Mapping[str, Column]
"""The columns a model's windows hold, e.g. ``{"numeric": Column(7), "prediction": Column(None, np.int64, -1)}``."""

Values = Mapping[str, "Sequence[float] | float | None"]


@dataclass
class _Open:
    key: str
    slot: int  # 0 by count; the window's number (start / duration) by event time
    window_id: str
    opened_at: float  # wall clock
    updated_at: float  # wall clock of its latest event
    limit: int  # the most events it holds
    layout: Layout
    columns: dict[str, np.ndarray]  # name -> (capacity,) or (capacity, width)
    capacity: int
    n: int = 0
    first_time: float = float("inf")
    last_time: float = float("-inf")
    first_positions: dict[TopicPartition, Resume] = field(default_factory=dict)
    last_positions: dict[TopicPartition, Resume] = field(default_factory=dict)
    payloads: list[tuple[int, bytes]] = field(default_factory=list)
    payload_bytes: int = 0
    request_ids: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ClosedWindow:
    """The rows of one closed window, ready for the detectors: one array per column of the layout."""

    key: str
    index: int
    window_id: str
    n: int
    columns: Mapping[str, np.ndarray]
    first_time: float
    last_time: float
    reason: str  # "full", "watermark", "timeout", "shutdown" or "offline"
    #: (row, encoded payload) of raw payloads its events carried, in row order, within :data:`MAX_PAYLOADS` and
    #: :data:`MAX_PAYLOAD_BYTES`
    payloads: tuple[tuple[int, bytes], ...] = ()
    #: (offset, index in the record) of its last event in each partition it read from
    last_positions: Mapping[TopicPartition, Resume] = field(default_factory=dict)
    #: its number among event-time windows (start / duration); 0 by count
    slot: int = 0

    @property
    def features(self) -> np.ndarray:
        """(n, F) numeric input features."""
        return self.columns["numeric"]

    @property
    def predictions(self) -> np.ndarray:
        """(k,) class indices of the events that carried a prediction."""
        predictions = self.columns.get("prediction")
        return np.empty(0, dtype=np.int64) if predictions is None else predictions[predictions >= 0]

    def present(self, name: str) -> np.ndarray | None:
        """Rows of a vector column for the events that carried it (no fill values), or None if absent."""
        values = self.columns.get(name)
        if values is None:
            return None
        rows = values[~np.isnan(values).all(axis=1)] if values.ndim == 2 else values[~np.isnan(values)]
        return rows if len(rows) else None


LATE_ACTIONS = ("drop", "next")
"""What happens to an event whose event-time window has closed: dropped, or added to the first window still open."""
DROP_REASONS = ("late", "duplicate", "full")
"""Why :meth:`Windows.add` set an event aside (counted in :attr:`Windows.dropped`)."""
_GROW_FROM = 1024  # rows an event-time window allocates first; it doubles up to ``max_rows``


class Windows:
    """Tumbling windows per key (``model/version``): by count with a wall-clock timeout, or by event time."""

    def __init__(self, size: int, max_seconds: float, min_samples: int, sizes: Mapping[str, int] | None = None,
                 *, duration_s: float | None = None, lateness_s: float = 0.0, late: str = "drop",
                 max_rows: int = 100_000) -> None:
        if late not in LATE_ACTIONS:
            raise ValueError(f"late must be one of {LATE_ACTIONS}, got {late!r}")
        self.size = size
        self.sizes = dict(sizes or {})  # per-key sizes that override ``size`` (a slow LLM, a busy CNN)
        self.max_seconds = max_seconds
        self.min_samples = min_samples
        self.duration_s = duration_s
        self.lateness_s = lateness_s
        self.late = late
        self.max_rows = max_rows
        #: events set aside per (key, reason), reasons in :data:`DROP_REASONS`; late events added to the next
        #: window are counted under ``(key, "late_next")``
        self.dropped: dict[tuple[str, str], int] = {}
        self._open: dict[str, dict[int, _Open]] = {}  # key -> slot -> window
        self._watermark: dict[str, float] = {}  # key -> latest event time (event-time windows)
        self._next_index: dict[str, int] = {}
        self._known: dict[str, int] = {}  # window id -> index of windows closed by an earlier process

    def add(self, key: str, layout: Layout, values: Values, position: Position, event_time: float,
            now: float, payload: bytes | None = None, request_id: str = "") -> list[ClosedWindow]:
        """Append one event's values (missing names keep the column's fill) and its encoded raw payload, if it
        carried one and the window's payloads stay within :data:`MAX_PAYLOADS` and :data:`MAX_PAYLOAD_BYTES`
        (else it is not kept); return the windows it closed (a full one; by event time, those the watermark
        passed). A late event (when dropped), a request id its window holds or a full event-time window sets
        the event aside, counted in :attr:`dropped`."""
        if self.duration_s is None:
            w = self._window(key, 0, layout, position, now)
            if self._put(w, values, position, event_time, now, payload, request_id) and w.n >= w.limit:
                return [self._close(key, 0, "full")]
            return []
        slot, late = self._slot(key, event_time)
        if late:
            self._count(key, "late" if slot is None else "late_next")
        if slot is not None:
            w = self._window(key, slot, layout, position, now)
            self._put(w, values, position, event_time, now, payload, request_id)
        self._watermark[key] = max(self._watermark.get(key, event_time), event_time)
        return self._close_passed(key)

    def add_many(self, key: str, layout: Layout, columns: Mapping[str, np.ndarray], record: tuple[str, int, int],
                 times: np.ndarray, now: float, request_ids: Sequence[str],
                 on_close: Callable[[ClosedWindow, int], None]) -> int:
        """:meth:`add` for the rows of one record at once (row ``i`` of every column, at event time ``times[i]``,
        is the record's event ``i``; ``record`` is its topic, partition and offset): the same windows, rows,
        drops and ids as adding them one by one, without an object per event. Each window that closes is handed
        to ``on_close`` with the number of rows read when it closed (the row that closed it included), before
        the rows after it are added. Returns how many closed."""
        topic, partition, offset = record
        if self.duration_s is not None:  # the watermark moves with every row: one by one
            closed = 0
            for i, event_time in enumerate(times.tolist()):
                values = {name: column[i] for name, column in columns.items()}
                for window in self.add(key, layout, values, (topic, partition, offset, i), event_time, now,
                                       None, request_ids[i]):
                    on_close(window, i + 1)
                    closed += 1
            return closed
        n, i, closed = len(times), 0, 0
        while i < n:
            w = self._window(key, 0, layout, (topic, partition, offset, i), now)
            taken, i = self._take(w, request_ids, i, w.limit - w.n)
            if taken:
                rows = slice(taken[0], taken[-1] + 1) if taken[-1] - taken[0] + 1 == len(taken) else taken
                for name, column in columns.items():
                    w.columns[name][w.n: w.n + len(taken)] = column[rows]
                w.n += len(taken)
                w.updated_at = now
                w.first_time = min(w.first_time, float(times[rows].min()))
                w.last_time = max(w.last_time, float(times[rows].max()))
                w.first_positions.setdefault((topic, partition), (offset, taken[0]))
                w.last_positions[(topic, partition)] = (offset, taken[-1])
            if w.n >= w.limit:
                on_close(self._close(key, 0, "full"), i)
                closed += 1
        return closed

    def _take(self, w: _Open, request_ids: Sequence[str], start: int, room: int) -> tuple[list[int], int]:
        """The rows from ``start`` on that ``w`` takes (at most ``room``; a request id it holds is a counted
        duplicate), and the row after the last one looked at."""
        chunk = request_ids[start: start + room]
        if all(chunk) and len(set(chunk)) == len(chunk) and w.request_ids.isdisjoint(chunk):  # the usual case
            w.request_ids.update(chunk)
            return list(range(start, start + len(chunk))), start + len(chunk)
        taken: list[int] = []
        i = start
        while i < len(request_ids) and len(taken) < room:
            request_id = request_ids[i]
            if request_id:
                if request_id in w.request_ids:
                    self._count(w.key, "duplicate")
                    i += 1
                    continue
                w.request_ids.add(request_id)
            taken.append(i)
            i += 1
        return taken, i

    def natural_slot(self, event_time: float) -> int:
        """The number of the event-time window an event at ``event_time`` belongs to, late or not (0 by count)."""
        return 0 if self.duration_s is None else math.floor(event_time / self.duration_s)

    def expired(self, now: float) -> list[ClosedWindow]:
        """By count: close windows open longer than ``max_seconds`` that hold at least ``min_samples`` events.
        By event time: close every open window of a key that got no event for ``max_seconds`` (and move its
        watermark past them, so that their events are late from then on)."""
        if self.duration_s is None:
            due = [k for k, slots in self._open.items()
                   if now - slots[0].opened_at >= self.max_seconds and slots[0].n >= self.min_samples]
            return [self._close(k, 0, "timeout") for k in due]
        closed: list[ClosedWindow] = []
        for key in [k for k, slots in self._open.items()
                    if now - max(w.updated_at for w in slots.values()) >= self.max_seconds]:
            last = max(self._open[key])
            self._watermark[key] = max(self._watermark.get(key, 0.0),
                                       (last + 1) * self.duration_s + self.lateness_s)
            closed += [self._close(key, slot, "timeout") for slot in sorted(self._open[key])]
        return closed

    def close_all(self, reason: str) -> list[ClosedWindow]:
        """Close every open window now, whatever it holds (shutdown of the embedded bus)."""
        return [self._close(key, slot, reason) for key in list(self._open) for slot in sorted(self._open[key])]

    def drop_all(self) -> int:
        """Forget every open window (their events are read again after a rebalance); returns the events dropped.
        Window ids come from positions or event times, so the replayed windows keep theirs."""
        dropped = self.open_events
        self._open.clear()
        return dropped

    def safe_positions(self, consumed: Mapping[TopicPartition, int]) -> dict[TopicPartition, Resume]:
        """Where each partition may be committed: after everything consumed, except where an open window
        still holds events of that partition; then at that window's first event, which may sit inside a
        batch record (the events of the record before it belong to closed windows and are skipped on replay)."""
        safe = {tp: (offset, 0) for tp, offset in consumed.items()}
        for slots in self._open.values():
            for w in slots.values():
                for tp, first in w.first_positions.items():
                    if tp in safe:
                        safe[tp] = min(safe[tp], first)
        return safe

    def resume(self, next_index: Mapping[str, int], known: Mapping[str, int],
               watermarks: Mapping[str, float] | None = None) -> None:
        """Go on from where another process left off: per key, the index of its next new window (raised, never
        lowered) and, by event time, its watermark (likewise); ``known`` maps the ids of windows that process
        closed to their indices, so that a window read again (the same id) gets its index back. Replaces what an
        earlier call knew."""
        for key, index in next_index.items():
            self._next_index[key] = max(self._next_index.get(key, 0), index)
        for key, time in (watermarks or {}).items():
            self._watermark[key] = max(self._watermark.get(key, time), time)
        self._known = dict(known)

    def next_index(self, key: str) -> int:
        """The index the next window of ``key`` to close gets."""
        return self._next_index.get(key, 0)

    def watermark(self, key: str) -> float | None:
        """The latest event time of ``key`` (event-time windows; None by count or before its first event)."""
        return self._watermark.get(key)

    @property
    def open_events(self) -> int:
        return sum(w.n for slots in self._open.values() for w in slots.values())

    def _slot(self, key: str, event_time: float) -> tuple[int | None, bool]:
        """(the event-time window an event of ``key`` at ``event_time`` joins, None when late and dropped;
        whether it is late)."""
        slot = self.natural_slot(event_time)
        first_open = self._first_open_slot(key)
        if slot >= first_open:
            return slot, False
        return (None if self.late == "drop" else first_open), True

    def _time_window_id(self, key: str, slot: int) -> str:
        """The id of ``key``'s event-time window number ``slot``: its start, in milliseconds since the epoch."""
        assert self.duration_s is not None
        return f"{key}@t{round(slot * self.duration_s * 1000)}"

    def _first_open_slot(self, key: str) -> int:
        """The first event-time window of ``key`` the watermark has not closed (any, before its first event)."""
        assert self.duration_s is not None
        watermark = self._watermark.get(key)
        if watermark is None:
            return -(1 << 62)
        slot = math.floor((watermark - self.lateness_s) / self.duration_s)
        return slot + 1 if (slot + 1) * self.duration_s + self.lateness_s <= watermark else slot

    def _window(self, key: str, slot: int, layout: Layout, position: Position, now: float) -> _Open:
        slots = self._open.setdefault(key, {})
        w = slots.get(slot)
        if w is not None:
            return w
        if self.duration_s is None:
            topic, partition, offset, event = position
            window_id = f"{key}@{topic}-{partition}:{offset}" + (f"+{event}" if event else "")
            limit = capacity = self.sizes.get(key, self.size)
        else:
            window_id, limit = self._time_window_id(key, slot), self.max_rows
            capacity = min(_GROW_FROM, limit)
        w = _Open(key=key, slot=slot, window_id=window_id, opened_at=now, updated_at=now, limit=limit,
                  layout=layout, columns={name: _allocate(c, capacity) for name, c in layout.items()},
                  capacity=capacity)
        slots[slot] = w
        return w

    def _put(self, w: _Open, values: Values, position: Position, event_time: float, now: float,
             payload: bytes | None, request_id: str) -> bool:
        """Append an event to ``w`` unless its request id is there already or ``w`` is full; returns whether it
        was."""
        if request_id:
            if request_id in w.request_ids:
                self._count(w.key, "duplicate")
                return False
            w.request_ids.add(request_id)
        if w.n >= w.limit:
            self._count(w.key, "full")
            return False
        if w.n == w.capacity:  # event-time windows grow, doubling, up to their limit
            w.capacity = min(2 * w.capacity, w.limit)
            w.columns = {name: _grown(w.layout[name], values, w.capacity) for name, values in w.columns.items()}
        for name, value in values.items():
            if value is not None:
                w.columns[name][w.n] = value
        if payload is not None and len(w.payloads) < MAX_PAYLOADS and \
                w.payload_bytes + len(payload) <= MAX_PAYLOAD_BYTES:
            w.payloads.append((w.n, payload))
            w.payload_bytes += len(payload)
        w.n += 1
        w.updated_at = now
        w.first_time = min(w.first_time, event_time)
        w.last_time = max(w.last_time, event_time)
        w.first_positions.setdefault((position[0], position[1]), (position[2], position[3]))
        w.last_positions[(position[0], position[1])] = (position[2], position[3])
        return True

    def _close_passed(self, key: str) -> list[ClosedWindow]:
        """Close, oldest first, the event-time windows of ``key`` the watermark passed by ``lateness_s``."""
        first_open = self._first_open_slot(key)
        return [self._close(key, slot, "watermark") for slot in sorted(self._open.get(key, ())) if slot < first_open]

    def _count(self, key: str, reason: str) -> None:
        self.dropped[(key, reason)] = self.dropped.get((key, reason), 0) + 1

    def _close(self, key: str, slot: int, reason: str) -> ClosedWindow:
        slots = self._open[key]
        w = slots.pop(slot)
        if not slots:
            del self._open[key]
        index = self._known.pop(w.window_id, None)
        if index is None:
            index = self._next_index.get(key, 0)
            self._next_index[key] = index + 1
        # The buffers belong to this window alone (a new window allocates its own): slices, no copies.
        return ClosedWindow(key=w.key, index=index, window_id=w.window_id, n=w.n,
                            columns={name: values[: w.n] for name, values in w.columns.items()},
                            first_time=w.first_time, last_time=w.last_time, reason=reason,
                            payloads=tuple(w.payloads), last_positions=dict(w.last_positions), slot=w.slot)


class PublishedEnds:
    """Where the published windows of one model version ended in one partition, to tell which events read
    again after a restart were in one of them: an event at ``position`` whose own window is number ``slot``
    was in a published window if one numbered ``slot`` or later ended at or after ``position``.

    By count every window is number 0, so that is "at or before the last published end". By event time the
    rule also covers late events (in a window after their own, or dropped) and windows whose events
    interleave in the partition: a window that closed before an event was read ended before it.

    >>> ends = PublishedEnds([(3, (10, 0)), (4, (8, 0)), (5, (20, 0))])
    >>> ends.covers(4, (15, 0)), ends.covers(4, (21, 0)), ends.covers(5, (12, 0)), ends.last
    (True, False, True, (20, 0))
    """

    def __init__(self, ends: Sequence[tuple[int, Resume]]) -> None:
        ordered = sorted(ends)
        self._slots = [slot for slot, _ in ordered]
        self._latest: list[Resume] = []  # the latest end among windows numbered self._slots[i] or later
        for _, end in reversed(ordered):
            self._latest.append(max(end, self._latest[-1]) if self._latest else end)
        self._latest.reverse()
        self.last: Resume = self._latest[0] if self._latest else (-1, -1)

    def covers(self, slot: int, position: Resume) -> bool:
        i = bisect.bisect_left(self._slots, slot)
        return i < len(self._slots) and position <= self._latest[i]


def _allocate(column: Column, rows: int) -> np.ndarray:
    return np.full(rows if column.width is None else (rows, column.width), column.fill, dtype=column.dtype)


def _grown(column: Column, values: np.ndarray, rows: int) -> np.ndarray:
    grown = _allocate(column, rows)
    grown[: len(values)] = values
    return grown
