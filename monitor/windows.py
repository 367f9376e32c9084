"""Tumbling windows of inference events, one open window per model version.

A window holds at most ``size`` rows in preallocated arrays (memory is bounded by the number of watched
model versions times ``size``). Its id is derived from the transport position of its first event — record
offset, and the event's index inside a batch record when it is not the first — so a window replayed after a
crash or rebalance gets the same id and a consumer of results can recognise it.

>>> ws = Windows(size=2, max_seconds=60.0, min_samples=1)
>>> layout = {"numeric": Column(1), "prediction": Column(None, np.int64, -1)}
>>> ws.add("m/1", layout, {"numeric": [0.5], "prediction": 1}, ("t", 0, 7, 0), event_time=1.0, now=0.0)
>>> closed = ws.add("m/1", layout, {"numeric": [0.7]}, ("t", 0, 8, 0), event_time=2.0, now=0.0)
>>> closed.window_id, closed.n, closed.features.tolist(), closed.predictions.tolist()
('m/1@t-0:7', 2, [[0.5], [0.7]], [1])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    index: int
    window_id: str
    opened_at: float
    size: int
    columns: dict[str, np.ndarray]  # name -> (size,) or (size, width)
    n: int = 0
    first_time: float = float("inf")
    last_time: float = float("-inf")
    first_positions: dict[TopicPartition, Resume] = field(default_factory=dict)
    last_positions: dict[TopicPartition, Resume] = field(default_factory=dict)
    payloads: list[tuple[int, bytes]] = field(default_factory=list)
    payload_bytes: int = 0


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
    reason: str  # "full", "timeout", "shutdown" or "offline"
    #: (row, encoded payload) of raw payloads its events carried, in row order, within :data:`MAX_PAYLOADS` and
    #: :data:`MAX_PAYLOAD_BYTES`
    payloads: tuple[tuple[int, bytes], ...] = ()
    #: (offset, index in the record) of its last event in each partition it read from
    last_positions: Mapping[TopicPartition, Resume] = field(default_factory=dict)

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


class Windows:
    """Count-based tumbling windows with a wall-clock timeout, per key (``model/version``)."""

    def __init__(self, size: int, max_seconds: float, min_samples: int, sizes: Mapping[str, int] | None = None) -> None:
        self.size = size
        self.sizes = dict(sizes or {})  # per-key sizes that override ``size`` (a slow LLM, a busy CNN)
        self.max_seconds = max_seconds
        self.min_samples = min_samples
        self._open: dict[str, _Open] = {}
        self._next_index: dict[str, int] = {}
        self._known: dict[str, int] = {}  # window id -> index of windows closed by an earlier process

    def add(self, key: str, layout: Layout, values: Values, position: Position, event_time: float,
            now: float, payload: bytes | None = None) -> ClosedWindow | None:
        """Append one event's values (missing names keep the column's fill) and its encoded raw payload, if it
        carried one and the window's payloads stay within :data:`MAX_PAYLOADS` and :data:`MAX_PAYLOAD_BYTES`
        (else it is not kept); return the window if it is full."""
        w = self._open.get(key)
        if w is None:
            w = self._start(key, layout, position, now)
        for name, value in values.items():
            if value is not None:
                w.columns[name][w.n] = value
        if payload is not None and len(w.payloads) < MAX_PAYLOADS and \
                w.payload_bytes + len(payload) <= MAX_PAYLOAD_BYTES:
            w.payloads.append((w.n, payload))
            w.payload_bytes += len(payload)
        w.n += 1
        w.first_time = min(w.first_time, event_time)
        w.last_time = max(w.last_time, event_time)
        w.first_positions.setdefault((position[0], position[1]), (position[2], position[3]))
        w.last_positions[(position[0], position[1])] = (position[2], position[3])
        return self._close(key, "full") if w.n >= w.size else None

    def expired(self, now: float) -> list[ClosedWindow]:
        """Close windows open longer than ``max_seconds`` that hold at least ``min_samples`` events."""
        due = [k for k, w in self._open.items() if now - w.opened_at >= self.max_seconds and w.n >= self.min_samples]
        return [self._close(k, "timeout") for k in due]

    def close_all(self, reason: str) -> list[ClosedWindow]:
        """Close every open window now, whatever it holds (shutdown of the embedded bus)."""
        return [self._close(k, reason) for k in list(self._open)]

    def drop_all(self) -> int:
        """Forget every open window (their events are read again after a rebalance); returns the events dropped.
        Window ids come from positions, so the replayed windows keep theirs."""
        dropped = self.open_events
        self._open.clear()
        return dropped

    def safe_positions(self, consumed: Mapping[TopicPartition, int]) -> dict[TopicPartition, Resume]:
        """Where each partition may be committed: after everything consumed, except where an open window
        still holds events of that partition; then at that window's first event, which may sit inside a
        batch record (the events of the record before it belong to closed windows and are skipped on replay)."""
        safe = {tp: (offset, 0) for tp, offset in consumed.items()}
        for w in self._open.values():
            for tp, first in w.first_positions.items():
                if tp in safe:
                    safe[tp] = min(safe[tp], first)
        return safe

    def resume(self, next_index: Mapping[str, int], known: Mapping[str, int]) -> None:
        """Go on from where another process left off: per key, the index of its next new window (raised, never
        lowered); ``known`` maps the ids of windows that process closed to their indices, so that a window read
        again (the same first event: the same id) gets its index back. Replaces what an earlier call knew."""
        for key, index in next_index.items():
            self._next_index[key] = max(self._next_index.get(key, 0), index)
        self._known = dict(known)

    def next_index(self, key: str) -> int:
        """The index the next new window of ``key`` gets."""
        return self._next_index.get(key, 0)

    @property
    def open_events(self) -> int:
        return sum(w.n for w in self._open.values())

    def _start(self, key: str, layout: Layout, position: Position, now: float) -> _Open:
        topic, partition, offset, event = position
        window_id = f"{key}@{topic}-{partition}:{offset}" + (f"+{event}" if event else "")
        index = self._known.pop(window_id, None)
        if index is None:
            index = self._next_index.get(key, 0)
            self._next_index[key] = index + 1
        size = self.sizes.get(key, self.size)
        columns: dict[str, np.ndarray] = {
            name: np.full(size if c.width is None else (size, c.width), c.fill, dtype=c.dtype)
            for name, c in layout.items()}
        w = _Open(key=key, index=index, window_id=window_id, opened_at=now, size=size, columns=columns)
        self._open[key] = w
        return w

    def _close(self, key: str, reason: str) -> ClosedWindow:
        w = self._open.pop(key)
        # The buffers belong to this window alone (a new window allocates its own): slices, no copies.
        return ClosedWindow(key=w.key, index=w.index, window_id=w.window_id, n=w.n,
                            columns={name: values[: w.n] for name, values in w.columns.items()},
                            first_time=w.first_time, last_time=w.last_time, reason=reason,
                            payloads=tuple(w.payloads), last_positions=dict(w.last_positions))
