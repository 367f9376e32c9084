"""The collector's background producer: a bounded queue in front of the transport.

``submit`` never blocks and never raises: it either queues a capture or counts a drop. A single background
thread turns captures into events (the costly part, off the serving thread), groups them per
``model/version`` into batch envelopes bounded by count, bytes and linger, and sends them with CloudEvents
binary-mode headers, keyed by ``model/version``. By default a key's events that fit a column batch
(:class:`~monitor.events.ColumnBatch`: one classifier's features, predictions, probabilities and latencies, one
device and set of attributes) leave as one ``inferwatch.columns/v1`` record, which is smaller and which the
detector decodes into arrays; anything else leaves in a batch envelope (``encoding="rows"``: always). With a
:class:`~collectors.spool.Spool`, batches the broker does not take go to disk and are replayed when it answers
again. Every event is accounted for in the metrics: queued, sent, acknowledged, spooled, replayed, or dropped
with a reason.
"""

from __future__ import annotations

import itertools
import logging
import operator
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collectors.spool import Spool, SpoolError, SpoolRecord
from monitor.config import SidecarConfig, default_of
from monitor.errors import RecordRejected
from monitor.events import (
    BATCH_SCHEMA,
    COLUMNS_SCHEMA,
    FEEDBACK_SCHEMA,
    INFERENCE_SCHEMA,
    MAX_BATCH_EVENTS,
    ColumnBatch,
    Event,
    FeedbackEvent,
    InferenceEvent,
    join_batch,
)
from monitor.transport import Producer
from monitor.transport.base import DoneCallback

log = logging.getLogger(__name__)


class Capture(Protocol):
    """Something captured on the serving thread that becomes events later, off it."""

    def __len__(self) -> int: ...
    def events(self) -> Sequence[Event]: ...


@dataclass(frozen=True)
class Events:
    """Already-built events, as a capture."""

    items: Sequence[Event]

    def __len__(self) -> int:
        return len(self.items)

    def events(self) -> Sequence[Event]:
        return self.items


@dataclass(frozen=True)
class ProducerMetrics:
    queued: Gauge
    capacity: Gauge
    submitted: Counter
    dropped: Counter
    sent: Counter
    acked: Counter
    send_errors: Counter
    send_seconds: Histogram
    spooling: Gauge
    spool_bytes: Gauge
    spool_capacity: Gauge
    spool_segments: Gauge
    spooled: Counter
    replayed: Counter
    late_acked: Counter
    ack_timeouts: Counter
    spool_corrupt: Counter


#: Every reason an event can be dropped for (the ``reason`` label of the dropped counter).
DROP_REASONS = ("queue_full", "spool_full", "spool_error", "closed", "encode_error", "send_error", "rejected")


def producer_metrics(registry: CollectorRegistry) -> ProducerMetrics:
    m = ProducerMetrics(
        queued=Gauge("inferwatch_collector_queue_events", "Events waiting in the collector queue.",
                     registry=registry),
        capacity=Gauge("inferwatch_collector_queue_capacity_events", "Collector queue capacity.",
                       registry=registry),
        submitted=Counter("inferwatch_collector_events_submitted_total", "Events offered to the collector.",
                          registry=registry),
        dropped=Counter("inferwatch_collector_events_dropped_total", "Events dropped, by reason.", ("reason",),
                        registry=registry),
        sent=Counter("inferwatch_collector_events_sent_total",
                     "Events handed to the transport (replays and re-sends included).", registry=registry),
        acked=Counter("inferwatch_collector_events_acked_total",
                      "Events acknowledged by the broker (replayed ones included).", registry=registry),
        send_errors=Counter("inferwatch_collector_send_errors_total", "Failed batch sends.", registry=registry),
        send_seconds=Histogram("inferwatch_collector_send_duration_seconds", "Batch send to acknowledgement.",
                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                               registry=registry),
        spooling=Gauge("inferwatch_collector_spooling", "1 while batches go to the disk spool (broker unreachable "
                       "or the spool not yet replayed), else 0.", registry=registry),
        spool_bytes=Gauge("inferwatch_collector_spool_bytes", "Size of the spool's segment files.",
                          registry=registry),
        spool_capacity=Gauge("inferwatch_collector_spool_capacity_bytes", "Bound on the spool's size.",
                             registry=registry),
        spool_segments=Gauge("inferwatch_collector_spool_segments", "Segment files in the spool.",
                             registry=registry),
        spooled=Counter("inferwatch_collector_events_spooled_total", "Events written to the disk spool.",
                        registry=registry),
        replayed=Counter("inferwatch_collector_events_replayed_total",
                         "Spooled events acknowledged by the broker on replay.", registry=registry),
        late_acked=Counter("inferwatch_collector_events_late_acked_total",
                           "Events acknowledged after they had been spooled (they arrive twice).", registry=registry),
        ack_timeouts=Counter("inferwatch_collector_ack_timeouts_total",
                             "Batch sends not acknowledged within ack_timeout_s.", registry=registry),
        spool_corrupt=Counter("inferwatch_collector_spool_corrupt_records_total",
                              "Torn or corrupt spool records skipped (from a crash mid-write).", registry=registry),
    )
    for reason in DROP_REASONS:
        m.dropped.labels(reason=reason)
    return m


@dataclass(frozen=True)
class _Batch:
    """One record on its way: a batch envelope (or a single event) and when it was handed to the transport."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    events: int
    sent_at: float = 0.0


Encoding = Literal["columns", "rows"]
_ENCODING: Encoding = default_of(SidecarConfig, "encoding")


@dataclass
class _Pending:
    """Encoded events of one ``model/version`` waiting to leave as one record.

    Each part holds one or more encoded events joined by commas (a whole capture is encoded in one call), so
    ``join_batch(parts)`` splices them into an envelope as it would single events. With the ``columns`` encoding
    the events are kept too: if they all fit a column batch they leave as one (or more, should it exceed the
    byte bound), else as the envelope.
    """

    opened: float
    parts: list[bytes] = field(default_factory=list)
    events: int = 0
    size: int = 0  # bytes of the parts and their separators
    items: list[Event] = field(default_factory=list)  # the events themselves (``columns`` encoding only)
    first: str = INFERENCE_SCHEMA  # the schema of the first event (the record's, when it is the only one)


# One encoder for every event (it is what ``encode_event`` does, one event at a time): encoding a list of events
# in one call and splicing its inside costs about a third less per event than encoding them one by one.
_encoder = msgspec.json.Encoder()
_model_version = operator.attrgetter("model", "version")


def _by_key(events: Sequence[Event]) -> dict[str, list[Event]]:
    """``events`` per ``model/version`` key, in their order; a capture (one model batch) usually has one key."""
    if not events:
        return {}
    pairs = list(map(_model_version, events))
    if pairs.count(pairs[0]) == len(pairs):
        return {events[0].key: list(events)}
    groups: dict[tuple[str, str], list[Event]] = {}
    for pair, event in zip(pairs, events, strict=True):
        groups.setdefault(pair, []).append(event)
    return {group[0].key: group for group in groups.values()}


# Replay sends the spool's oldest records in windows of at most this many records / value bytes (kafka-python
# buffers 32 MiB by default), waits for every acknowledgement, then releases them from the spool.
_REPLAY_RECORDS = 1000
_REPLAY_BYTES = 8 << 20
# After a failed probe or window, the next probe (one record) waits this long, doubling up to the maximum.
_BACKOFF_S = 0.25
_BACKOFF_MAX_S = 4.0


class EventProducer:
    """Bounded, non-blocking capture queue with a batching sender thread and an optional disk spool.

    Without a spool a failed send is dropped and counted (``send_error``). With a :class:`~collectors.spool.Spool`
    nothing is dropped while the disk holds out: when a batch send fails (``on_done(exc)`` or a synchronous
    ``TransportError``) or is not acknowledged within ``ack_timeout_s``, that batch and every other one still
    unacknowledged go to the spool, in send order, and so does every new batch while the spool holds data (which
    keeps the per-key order). Meanwhile the sender probes the broker with the spool's oldest record (backing off
    from 0.25 s to 4 s between probes); once it is acknowledged, the spool is replayed oldest first in windows
    of up to 1,000 records; a record is released (and a segment file deleted) only once it and every record before
    it were acknowledged; when the spool is empty, batches go straight to the broker again. A spool directory that holds
    data when the producer starts is replayed first, so a crash or shutdown during an outage loses nothing.
    Delivery is at least once: a batch acknowledged after it was spooled (``late_acked``), or a replay window cut
    short, arrives twice; consumers recognise events by ``request_id``.

    When the spool is full, a batch that does not fit is dropped at once and counted (``spool_full``; the first
    drop of a full spell is logged): memory is not a second, unbounded spool. Every event submitted ends up
    acknowledged, spooled, or dropped with a reason (:meth:`flush` waits for that), including at :meth:`close`,
    which logs how many events it could not place. ``submit`` never blocks and never raises.

    To start before the broker answers (a sidecar must serve at once), pass a
    :class:`~collectors.connecting.ConnectingProducer`: until it is connected its sends fail, and batches go to the
    spool. With :class:`~monitor.transport.kafka.KafkaTransport`, ``ack_timeout_s`` (not kafka-python's retries) decides
    when the spool takes over, and kafka-python should reconnect quickly: ``KafkaTransport(bootstrap,
    extra_producer={"reconnect_backoff_max_ms": 1000})`` (its default backs off to 30 s). After an outage longer
    than kafka-python's ``delivery_timeout_ms`` (default 120 s), its idempotent client can no longer send; the
    transport then replaces it (counted in ``inferwatch_transport_producer_rebuilds_total``), its undelivered
    records fail, and they are spooled and replayed like any other failed send.

    Parameters
    ----------
    producer : the transport producer (Kafka or the in-process bus). It is not closed by :meth:`close`.
    topic : topic for events.
    capacity : most events held in memory (queued, or waiting for a full spool); beyond it ``submit`` drops.
    batch_events, batch_bytes : bounds of one record, in events and in bytes of its value (``batch_events`` at most
        10,000); a batch that reaches ``batch_events`` is sent at once, without lingering. Only a single event
        larger than ``batch_bytes`` exceeds it (alone in its record).
    encoding : ``columns``: a key's events that fit a column batch (``ColumnBatch.of`` says which) leave as one
        ``inferwatch.columns/v1`` record, smaller than a batch envelope and decoded into arrays by the detector;
        others as below. ``rows``: each record is a batch envelope (``inferwatch.batch/v1``), or a single event.
        Either way a key's events leave in the order they were submitted.
    linger_s : how long the sender waits to fill a batch.
    spool : where batches go while the broker is unreachable; ``None``: failed sends are dropped.
    ack_timeout_s : a send not acknowledged within this long counts as failed (only with a spool).

    Examples
    --------
    >>> import tempfile
    >>> from monitor.events import InferenceEvent
    >>> from monitor.transport import MemoryBus
    >>> registry = CollectorRegistry()
    >>> producer = EventProducer(MemoryBus().producer(), "events", registry=registry,
    ...                          spool=Spool(tempfile.mkdtemp(), max_bytes=64 << 20))
    >>> producer.submit(Events([InferenceEvent(f"r{i}", 1.7e9, "cnn", "1", "classification", prediction=i % 3)
    ...                         for i in range(100)]))
    True
    >>> producer.close()
    >>> registry.get_sample_value("inferwatch_collector_events_acked_total")
    100.0
    >>> registry.get_sample_value("inferwatch_collector_events_spooled_total")
    0.0
    """

    def __init__(self, producer: Producer, topic: str, registry: CollectorRegistry | None = None,
                 capacity: int = default_of(SidecarConfig, "queue_capacity"), batch_events: int = 500,
                 batch_bytes: int = 900_000,
                 linger_s: float = 0.02, source: str | None = None,
                 clock: Callable[[], float] = time.monotonic, spool: Spool | None = None,
                 ack_timeout_s: float = 10.0, encoding: Encoding = _ENCODING) -> None:
        if not ack_timeout_s > 0:
            raise ValueError(f"ack_timeout_s must be > 0, got {ack_timeout_s!r}")
        if encoding not in ("columns", "rows"):
            raise ValueError(f"encoding must be 'columns' or 'rows', got {encoding!r}")
        if isinstance(batch_events, bool) or not isinstance(batch_events, int) \
                or not 1 <= batch_events <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_events must be an int in [1, {MAX_BATCH_EVENTS}], got {batch_events!r}")
        self.topic = topic
        self.capacity = capacity
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.linger_s = linger_s
        self.encoding = encoding
        self.ack_timeout_s = ack_timeout_s
        self.spool = spool
        self.metrics = producer_metrics(registry or CollectorRegistry())
        self.metrics.capacity.set(capacity)
        self._producer = producer
        self._source = source or f"inferwatch/collector/{socket.gethostname()}"
        self._clock = clock
        self._queue: deque[Capture] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._stop_at = float("inf")  # close(): give up waiting for acknowledgements at this time
        self._held = 0  # events encoded and neither acknowledged, spooled nor dropped
        self._ids = itertools.count()
        # Direct sends awaiting acknowledgement, by send order; failed ones move to _returned (both under _cond).
        self._direct: dict[int, _Batch] = {}
        self._returned: dict[int, _Batch] = {}
        self._full = False  # the spool refused the last batch (logged once per full spell)
        self._drops = 0  # events dropped by the sender (for the log line of close())
        # Replay state: the window of spool records in flight and how it went (callbacks write under _cond).
        self._window: list[SpoolRecord] = []
        self._window_gen = 0
        self._window_acked: list[bool] = []
        self._window_rejected: list[int] = []  # events of each window record the destination rejected for good
        self._window_failed = False
        self._window_sent_at = 0.0  # when the window was sent, or its last acknowledgement came
        self._probe = True
        self._backoff = _BACKOFF_S
        self._next_try = 0.0
        self._spooling = False
        self._corrupt_seen = 0
        if spool is not None:
            self.metrics.spool_capacity.set(spool.max_bytes)
            self._spooling = len(spool) > 0  # a spool left by an earlier run is replayed first
            self.metrics.spooling.set(int(self._spooling))
            self._spool_gauges()
        self._thread = threading.Thread(target=self._run, name="inferwatch-producer", daemon=True)
        self._thread.start()

    def submit(self, capture: Capture) -> bool:
        """Queue a capture without blocking; return False (and count the drop) if it does not fit."""
        n = len(capture)
        with self._cond:
            self.metrics.submitted.inc(n)
            if self._closed:
                self.metrics.dropped.labels(reason="closed").inc(n)
                return False
            if self._queued + n > self.capacity:
                self.metrics.dropped.labels(reason="queue_full").inc(n)
                return False
            self._queue.append(capture)
            self._queued += n
            self.metrics.queued.set(self._queued)
            self._cond.notify()
        return True

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every event submitted so far was acknowledged by the broker, spooled or dropped.

        Returns True if that happened within ``timeout_s``. Spooled events may still be waiting for replay.
        """
        deadline = self._clock() + timeout_s
        with self._cond:
            while self._queued or self._held:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting captures, send what is queued, and stop the thread.

        Everything in memory ends up acknowledged by the broker or, if it is unreachable (no acknowledgement
        within ``ack_timeout_s``, or by the deadline), in the spool; a spool being replayed keeps replaying
        until it is empty, a replay fails, or ``timeout_s`` has passed. The spool is then closed.
        """
        with self._cond:
            self._closed = True
            self._stop_at = min(self._stop_at, self._clock() + timeout_s)
            self._cond.notify_all()
            drops = self._drops
        self._thread.join(timeout_s + 1.0)
        with self._cond:
            drops, stuck = self._drops - drops, self._queued + self._held
        if drops:
            log.warning("close: %d events could not be sent or spooled and were dropped (by reason in "
                        "inferwatch_collector_events_dropped_total)", drops)
        if self._thread.is_alive() and stuck:
            log.error("close: the sender did not stop within %.0f s; %d events in memory are lost", timeout_s, stuck)

    # -- sender thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        pending: dict[str, _Pending] = {}
        closing = False
        try:
            while not (closing and not pending and self._finished(self._clock())):
                with self._cond:
                    # Sleep unless there is work now: captures, or a close just requested.
                    if not self._queue and (closing or not self._closed):
                        self._cond.wait(self._timeout(pending))
                    captures = list(self._queue)
                    self._queue.clear()
                    closing = self._closed
                for capture in captures:
                    self._encode(capture, pending)
                now = self._clock()
                self._check_direct(now)
                for key in [k for k, p in pending.items() if closing or now - p.opened >= self.linger_s]:
                    self._send(key, pending.pop(key))
                if self.spool is not None and self._spooling:
                    self._replay(now)
        finally:
            self._shut_down()

    def _timeout(self, pending: dict[str, _Pending]) -> float | None:
        """How long the sender may sleep (under _cond): until a batch lingered enough, a send or replay window
        timed out, or the next probe is due."""
        times = [p.opened + self.linger_s for p in pending.values()]
        if self.spool is not None:
            if self._direct:
                times.append(next(iter(self._direct.values())).sent_at + self.ack_timeout_s)
            if self._window:
                # A window settled already (acknowledged in the sender's own thread, as by an in-process bus, so
                # its notify came before this wait) is handled now, not after the ack timeout.
                settled = all(self._window_acked) or self._window_failed
                times.append(self._clock() if settled else self._window_sent_at + self.ack_timeout_s)
            elif self._spooling:
                times.append(self._next_try)
        if self._closed:
            times.append(self._stop_at)
        if not times:
            return None
        return max(0.0, min(times) - self._clock())

    def _finished(self, now: float) -> bool:
        """While closing: True once nothing in memory waits for the broker (or the deadline has passed)."""
        with self._cond:
            if self._queue:
                return False
            if now >= self._stop_at:
                return True
            waiting = bool(self._direct or self._returned)
        if self.spool is None or not self._spooling:
            return not waiting
        # Replaying: go on while windows succeed; stop at the first failure (the broker is down).
        return not waiting and (not self._window and (self._next_try > now or len(self.spool) == 0))

    def _shut_down(self) -> None:
        """Spool what is still unacknowledged at the deadline, count what cannot be kept, close the spool."""
        if self.spool is None:
            with self._cond:
                waiting = sum(b.events for b in self._direct.values())
            if waiting:  # still in the transport: acknowledged or failed (and counted) when it closes
                log.warning("shutdown: %d events sent but not yet acknowledged by the broker (no spool)", waiting)
            return
        with self._cond:
            outstanding = [self._returned.pop(i) for i in sorted(self._returned)]
            outstanding += [self._direct.pop(i) for i in sorted(self._direct)]
        for batch in outstanding:
            self._to_spool(batch)
        self.spool.close()
        self._spool_gauges()

    def _encode(self, capture: Capture, pending: dict[str, _Pending]) -> None:
        """Encode a capture (a part per key and batch it goes to, in one encoder call each) and batch it."""
        n = len(capture)
        try:
            parts = [(key, chunk, _encoder.encode(chunk)[1:-1]) for key, chunk in self._split(capture, pending)]
        except Exception:  # a broken capture must not stop the sender: count, log, go on
            log.exception("could not encode a capture of %d events", n)
            self.metrics.dropped.labels(reason="encode_error").inc(n)
            parts = []
        encoded = sum(len(chunk) for _, chunk, _ in parts)
        with self._cond:
            self._drops += n - encoded
            self._queued -= n
            self._held += encoded
            self.metrics.queued.set(self._queued)
            self._cond.notify_all()
        for key, chunk, data in parts:
            self._add(key, chunk, data, pending)

    def _split(self, capture: Capture, pending: dict[str, _Pending]) -> list[tuple[str, list[Event]]]:
        """The capture's events per key, cut so that the first part fills the key's pending batch up to
        ``batch_events`` (a pending batch is never full: :meth:`_add` sends it when it is) and each further
        part fills a batch of its own."""
        out = []
        for key, events in _by_key(capture.events()).items():
            start, room = 0, self.batch_events - (pending[key].events if key in pending else 0)
            while start < len(events):
                out.append((key, events[start:start + room]))
                start, room = start + room, self.batch_events
        return out

    def _add(self, key: str, chunk: list[Event], data: bytes, pending: dict[str, _Pending]) -> None:
        """Add the encoded ``chunk`` to the key's batch, sending the batch first if the chunk does not fit and
        after if it is full. A chunk larger than ``batch_bytes`` (large events: payloads, embeddings)
        is encoded again and added event by event; an event larger than that goes alone."""
        batch = pending.get(key)
        if batch is not None and (batch.events + len(chunk) > self.batch_events
                                  or batch.size + len(data) + 1 > self.batch_bytes):
            self._send(key, pending.pop(key))
            batch = None
        if len(chunk) > 1 and len(data) + 1 > self.batch_bytes:
            for event in chunk:
                self._add(key, [event], _encoder.encode(event), pending)
            return
        if batch is None:
            batch = pending[key] = _Pending(
                self._clock(), first=FEEDBACK_SCHEMA if isinstance(chunk[0], FeedbackEvent) else INFERENCE_SCHEMA)
        batch.parts.append(data)
        if self.encoding == "columns":
            batch.items += chunk
        batch.events += len(chunk)
        batch.size += len(data) + 1
        if batch.events >= self.batch_events:
            self._send(key, pending.pop(key))

    def _send(self, key: str, batch: _Pending) -> None:
        """Send the key's batch: as a column batch when the encoding is ``columns`` and every event fits one
        (cut in two, again and again, while one exceeds ``batch_bytes``; a single event that does not fit the
        bound as columns goes as an event), else as the envelope of its parts (a single event as itself)."""
        records = None
        if self.encoding == "columns":
            try:
                columns = self._columns(batch.items)
                records = None if columns is None else self._column_records(columns, batch.items)
            except Exception:  # a bug here must not stop the sender: the envelope is encoded already
                log.exception("could not encode %d events of %s as columns; sending them as a batch envelope",
                              batch.events, key)
        if records is not None:
            for value, schema, n in records:
                self._send_record(key, value, schema, n)
        elif batch.events == 1:
            self._send_record(key, batch.parts[0], batch.first, 1)
        else:
            self._send_record(key, join_batch(batch.parts), BATCH_SCHEMA, batch.events)

    @staticmethod
    def _columns(events: Sequence[Event]) -> ColumnBatch | None:
        inference = [e for e in events if isinstance(e, InferenceEvent)]
        return ColumnBatch.of(inference) if len(inference) == len(events) else None

    def _column_records(self, columns: ColumnBatch, events: Sequence[Event]) -> list[tuple[bytes, str, int]]:
        """``(value, ce_type, events)`` of the records that carry ``events`` (which ``columns`` holds)."""
        value = _encoder.encode(columns)
        if len(value) <= self.batch_bytes:
            return [(value, COLUMNS_SCHEMA, len(events))]
        if len(events) == 1:  # an event over the bound as columns: as itself, perhaps within it
            return [(_encoder.encode(events[0]), INFERENCE_SCHEMA, 1)]
        half = len(events) // 2
        out = []
        for part in (events[:half], events[half:]):
            cut = self._columns(part)
            if cut is None:
                raise ValueError("a slice of events that fit a column batch does not fit one")
            out += self._column_records(cut, part)
        return out

    def _send_record(self, key: str, value: bytes, schema: str, n: int) -> None:
        headers = (
            ("ce_specversion", b"1.0"),
            ("ce_id", uuid.uuid4().hex.encode()),
            ("ce_source", self._source.encode()),
            ("ce_type", schema.encode()),
            ("ce_time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()),
            ("content-type", b"application/json"),
        )
        record = _Batch(key.encode(), value, headers, n, self._clock())
        if self._spooling:
            self._to_spool(record)
            return
        ident = next(self._ids)
        with self._cond:
            self._direct[ident] = record

        def done(error: BaseException | None) -> None:
            with self._cond:
                mine = self._direct.pop(ident, None)
                if mine is None:  # already spooled after a timeout or failure of another batch
                    if error is None:
                        self.metrics.late_acked.inc(n)
                    return
                if error is None:
                    self.metrics.acked.inc(n)
                    self.metrics.send_seconds.observe(self._clock() - record.sent_at)
                    self._held -= n
                elif isinstance(error, RecordRejected):  # for good: spooling it would block every later record
                    log.warning("batch of %d events for %s rejected, dropped: %s", n, key, error)
                    self.metrics.dropped.labels(reason="rejected").inc(n)
                    self._held -= n
                    self._drops += n
                else:
                    self.metrics.send_errors.inc()
                    log.warning("batch of %d events for %s failed: %s", n, key, error)
                    if self.spool is None:
                        self.metrics.dropped.labels(reason="send_error").inc(n)
                        self._held -= n
                        self._drops += n
                    else:
                        self._returned[ident] = record
                self._cond.notify_all()

        try:
            self._producer.send(self.topic, value, record.key, headers, on_done=done)
            self.metrics.sent.inc(n)
        except Exception as exc:  # the transport refused synchronously (buffer full, no metadata, closed)
            done(exc)

    # -- spool ---------------------------------------------------------------------------------------------
    def _check_direct(self, now: float) -> None:
        """On a failed or overdue direct send, move every unacknowledged batch to the spool, in send order."""
        if self.spool is None:
            return
        with self._cond:
            overdue = bool(self._direct) and now - next(iter(self._direct.values())).sent_at >= self.ack_timeout_s
            overdue = overdue or (bool(self._direct) and now >= self._stop_at)
            if not (self._returned or overdue):
                return
            if overdue:
                self.metrics.ack_timeouts.inc()
            batches = {**self._returned, **self._direct}
            self._returned.clear()
            self._direct.clear()
        if not self._spooling:
            log.warning("broker unreachable: spooling batches to %s", self.spool.directory)
            self._enter_spooling(now)
        for ident in sorted(batches):
            self._to_spool(batches[ident])

    def _enter_spooling(self, now: float) -> None:
        self._spooling = True
        self._probe = True
        self._backoff = _BACKOFF_S
        self._next_try = now + _BACKOFF_S
        self.metrics.spooling.set(1)

    def _to_spool(self, batch: _Batch) -> None:
        """Append ``batch`` to the spool; a full spool or a write error drops it (counted)."""
        if not self._spooling:
            self._enter_spooling(self._clock())
        if self.spool is None:  # only reached with a spool; without one, failed sends are dropped in done()
            self._drop(batch.events, "send_error")
            return
        try:
            written = self.spool.append(SpoolRecord(batch.value, batch.key, batch.headers, batch.events))
        except SpoolError:
            log.exception("spool write failed; dropping a batch of %d events", batch.events)
            self._drop(batch.events, "spool_error")
            return
        if not written:
            if not self._full:
                log.warning("spool %s is full (%d bytes): dropping batches until replay makes room",
                            self.spool.directory, self.spool.bytes)
            self._full = True
            self._drop(batch.events, "spool_full")
            return
        if self._full:
            log.warning("spool %s has room again", self.spool.directory)
            self._full = False
        self.metrics.spooled.inc(batch.events)
        with self._cond:
            self._held -= batch.events
            self._cond.notify_all()
        self._spool_gauges()

    def _drop(self, n: int, reason: str) -> None:
        self.metrics.dropped.labels(reason=reason).inc(n)
        with self._cond:
            self._held -= n
            self._drops += n
            self._cond.notify_all()

    def _spool_gauges(self) -> None:
        if self.spool is None:
            return
        self.metrics.spool_bytes.set(self.spool.bytes)
        self.metrics.spool_segments.set(self.spool.segments)
        corrupt = self.spool.corrupt_records
        if corrupt > self._corrupt_seen:
            self.metrics.spool_corrupt.inc(corrupt - self._corrupt_seen)
            self._corrupt_seen = corrupt

    def _replay(self, now: float) -> None:
        """Advance the replay: settle the window in flight, or send the next one (a single probe after a
        failure) when it is due; leave spooling mode once the spool and backlog are empty."""
        if self.spool is None:
            return
        if self._window:
            with self._cond:
                done = all(self._window_acked)
                failed = not done and (self._window_failed or now - self._window_sent_at >= self.ack_timeout_s)
                if not (failed or done):
                    return
                self._window_gen += 1  # later callbacks of this window are ignored
                acked = self._window_acked.index(False) if failed else len(self._window)
            window, self._window = self._window[:acked], []
            rejected = sum(self._window_rejected[:acked])
            if window:  # release the acknowledged (or rejected for good) prefix; the rest is sent again
                self.spool.release(window[-1])
                self.metrics.replayed.inc(sum(r.events for r in window))
                self.metrics.acked.inc(sum(r.events for r in window) - rejected)
                if rejected:
                    self.metrics.dropped.labels(reason="rejected").inc(rejected)
                    with self._cond:
                        self._drops += rejected
                self._spool_gauges()
            self._probe = failed
            if failed:
                self._next_try = now + self._backoff
                self._backoff = min(2 * self._backoff, _BACKOFF_MAX_S)
                return
            self._backoff = _BACKOFF_S
            self._next_try = now
        if now < self._next_try:
            return
        records = self.spool.read(1 if self._probe else _REPLAY_RECORDS, _REPLAY_BYTES)
        self._spool_gauges()
        if not records:
            log.warning("spool replayed: sending to the broker again")
            self._spooling = False
            self.metrics.spooling.set(0)
            return
        with self._cond:
            self._window_acked = [False] * len(records)
            self._window_rejected = [0] * len(records)
            self._window_failed = False
            self._window_sent_at = now
            gen = self._window_gen
        self._window = records
        for i, record in enumerate(records):
            try:
                self._producer.send(self.topic, record.value, record.key, record.headers,
                                    on_done=self._replay_done(gen, i, now, record.events))
                self.metrics.sent.inc(record.events)
            except Exception as exc:
                log.debug("replay send refused: %s", exc)
                with self._cond:
                    self._window_failed = True
                break

    def _replay_done(self, gen: int, index: int, sent_at: float, events: int) -> DoneCallback:
        def done(error: BaseException | None) -> None:
            with self._cond:
                if gen != self._window_gen:
                    return
                if isinstance(error, RecordRejected):  # settled: released with the window, counted as dropped
                    log.warning("a spooled batch of %d events was rejected, dropped: %s", events, error)
                    self._window_acked[index] = True
                    self._window_rejected[index] = events
                elif error is None:
                    self._window_acked[index] = True
                    self._window_sent_at = self._clock()  # a window times out only when acks stop coming
                    self.metrics.send_seconds.observe(self._clock() - sent_at)
                else:
                    self._window_failed = True
                    self.metrics.send_errors.inc()
                self._cond.notify_all()
        return done


def submit_events(producer: EventProducer, events: Sequence[Event]) -> bool:
    """Queue already-built events (e.g. from a sidecar or a script)."""
    return producer.submit(Events(events))


__all__ = ["DROP_REASONS", "Capture", "EventProducer", "Events", "ProducerMetrics", "producer_metrics",
           "submit_events"]
