"""The collector's background producer: a bounded queue in front of the transport.

``submit`` never blocks and never raises: it either queues a capture or counts a drop. A single background
thread turns captures into events (the costly part, off the serving thread), groups them per
``model/version`` into batch envelopes bounded by count, bytes and linger, and sends them with CloudEvents
binary-mode headers, keyed by ``model/version``. Every event is accounted for in the metrics: queued,
sent, acknowledged, or dropped with a reason.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.events import BATCH_SCHEMA, INFERENCE_SCHEMA, Event, encode_event, join_batch
from monitor.transport import Producer

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
        sent=Counter("inferwatch_collector_events_sent_total", "Events handed to the transport.",
                     registry=registry),
        acked=Counter("inferwatch_collector_events_acked_total", "Events acknowledged by the broker.",
                      registry=registry),
        send_errors=Counter("inferwatch_collector_send_errors_total", "Failed batch sends.", registry=registry),
        send_seconds=Histogram("inferwatch_collector_send_seconds", "Batch send to acknowledgement.",
                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                               registry=registry),
    )
    for reason in ("queue_full", "closed", "encode_error", "send_error"):
        m.dropped.labels(reason=reason)
    return m


class EventProducer:
    """Bounded, non-blocking capture queue with a batching sender thread.

    Parameters
    ----------
    producer : the transport producer (Kafka or the in-process bus).
    topic : topic for events.
    capacity : most events queued at once; beyond it ``submit`` drops and counts ``queue_full``.
    batch_events, batch_bytes : bounds of one batch envelope.
    linger_s : how long the sender waits to fill a batch.
    """

    def __init__(self, producer: Producer, topic: str, registry: CollectorRegistry | None = None,
                 capacity: int = 100_000, batch_events: int = 500, batch_bytes: int = 900_000,
                 linger_s: float = 0.02, source: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = topic
        self.capacity = capacity
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.linger_s = linger_s
        self.metrics = producer_metrics(registry or CollectorRegistry())
        self.metrics.capacity.set(capacity)
        self._producer = producer
        self._source = source or f"inferwatch/collector/{socket.gethostname()}"
        self._clock = clock
        self._queue: deque[Capture] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._inflight = 0
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
        """Wait until everything queued has been sent and acknowledged; True if it was within the time."""
        deadline = self._clock() + timeout_s
        with self._cond:
            while self._queued or self._inflight:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        self._producer.flush(max(0.0, deadline - self._clock()))
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting captures, send what is queued, and stop the thread."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    # -- sender thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        pending: dict[str, list[bytes]] = {}
        pending_bytes: dict[str, int] = {}
        opened: dict[str, float] = {}
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    wait = min((opened[k] + self.linger_s for k in opened), default=None)
                    self._cond.wait(None if wait is None else max(0.0, wait - self._clock()))
                captures = list(self._queue)
                self._queue.clear()
                closing = self._closed
            for capture in captures:
                self._encode(capture, pending, pending_bytes, opened)
            now = self._clock()
            for key in [k for k in pending if closing or now - opened[k] >= self.linger_s]:
                self._send(key, pending.pop(key))
                del pending_bytes[key], opened[key]
            if closing and not pending:
                with self._cond:
                    if not self._queue:
                        return

    def _encode(self, capture: Capture, pending: dict[str, list[bytes]], pending_bytes: dict[str, int],
                opened: dict[str, float]) -> None:
        n = len(capture)
        try:
            events = capture.events()
            encoded = [(e.key, encode_event(e)) for e in events]
        except Exception:  # a broken capture must not stop the sender: count, log, go on
            log.exception("could not encode a capture of %d events", n)
            self.metrics.dropped.labels(reason="encode_error").inc(n)
            encoded = []
        with self._cond:
            self._queued -= n
            self._inflight += len(encoded)
            self.metrics.queued.set(self._queued)
        for key, data in encoded:
            batch = pending.setdefault(key, [])
            if batch and (len(batch) >= self.batch_events or pending_bytes[key] + len(data) > self.batch_bytes):
                self._send(key, pending.pop(key))
                batch = pending.setdefault(key, [])
                pending_bytes[key] = 0
                opened[key] = self._clock()
            batch.append(data)
            pending_bytes[key] = pending_bytes.get(key, 0) + len(data) + 1
            opened.setdefault(key, self._clock())

    def _send(self, key: str, batch: list[bytes]) -> None:
        n = len(batch)
        single = n == 1
        value = batch[0] if single else join_batch(batch)
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", uuid.uuid4().hex.encode()),
            ("ce_source", self._source.encode()),
            ("ce_type", (INFERENCE_SCHEMA if single else BATCH_SCHEMA).encode()),
            ("ce_time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()),
            ("content-type", b"application/json"),
        ]
        started = self._clock()

        def done(error: BaseException | None) -> None:
            if error is None:
                self.metrics.acked.inc(n)
                self.metrics.send_seconds.observe(self._clock() - started)
            else:
                self.metrics.send_errors.inc()
                self.metrics.dropped.labels(reason="send_error").inc(n)
                log.warning("batch of %d events for %s failed: %s", n, key, error)
            with self._cond:
                self._inflight -= n
                self._cond.notify_all()

        try:
            self._producer.send(self.topic, value, key.encode(), headers, on_done=done)
            self.metrics.sent.inc(n)
        except Exception as exc:  # the transport refused synchronously (buffer full, closed)
            done(exc)


def submit_events(producer: EventProducer, events: Sequence[Event]) -> bool:
    """Queue already-built events (e.g. from a sidecar or a script)."""
    return producer.submit(Events(events))


__all__ = ["Capture", "EventProducer", "Events", "ProducerMetrics", "producer_metrics", "submit_events"]
