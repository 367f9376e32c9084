"""A transport producer usable at once, while the real one is connected in the background.

``KafkaTransport.producer()`` blocks until the broker answers (and raises after its bootstrap timeout). A
collector must not wait for that: serving starts at once, and events go to the spool until the broker is
there. :class:`ConnectingProducer` calls ``connect`` on a background thread, again and again (backing off)
until it returns a producer; until then :meth:`send` raises :class:`~monitor.errors.TransportError`, which
:class:`~collectors.producer.EventProducer` answers by spooling (or, without a spool, by counting a drop).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.errors import TransportError
from monitor.transport import Producer
from monitor.transport.base import DoneCallback

__all__ = ["ConnectMetrics", "ConnectingProducer", "connect_metrics"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectMetrics:
    connected: Gauge
    connect_failures: Counter


def connect_metrics(registry: CollectorRegistry) -> ConnectMetrics:
    """Make the connection metrics on ``registry``."""
    return ConnectMetrics(
        connected=Gauge("inferwatch_collector_producer_connected",
                        "1 once the producer to the broker is connected; 0 while it is still connecting (events "
                        "go to the spool meanwhile).", registry=registry),
        connect_failures=Counter("inferwatch_collector_producer_connect_failures_total",
                                 "Failed attempts to connect the producer to the broker.", registry=registry),
    )


class ConnectingProducer(Producer):
    """A :class:`~monitor.transport.Producer` that refuses sends until ``connect`` has returned one.

    Parameters
    ----------
    connect : makes the real producer; may block and may raise (it is tried again after ``retry_s``,
        doubling up to ``retry_max_s``).
    registry : where :func:`connect_metrics` are made.
    retry_s, retry_max_s : backoff between attempts.

    Examples
    --------
    >>> from monitor.transport import MemoryBus
    >>> producer = ConnectingProducer(MemoryBus().producer, CollectorRegistry())
    >>> producer.wait_connected(5.0)
    True
    >>> producer.close()
    """

    def __init__(self, connect: Callable[[], Producer], registry: CollectorRegistry, retry_s: float = 1.0,
                 retry_max_s: float = 30.0) -> None:
        if not 0 < retry_s <= retry_max_s:
            raise ValueError(f"need 0 < retry_s <= retry_max_s, got {retry_s!r} and {retry_max_s!r}")
        self._connect = connect
        self._retry_s = retry_s
        self._retry_max_s = retry_max_s
        self.metrics = connect_metrics(registry)
        self._producer: Producer | None = None
        self._error = "not connected yet"
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="inferwatch-connect", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        """Whether the real producer exists (it may still fail sends while the broker is away)."""
        return self._ready.is_set()

    @property
    def status(self) -> str:
        """``connected``, or ``connecting`` with the last error, for probes and logs."""
        return "connected" if self.connected else f"connecting ({self._error})"

    def wait_connected(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for the connection; whether it is there."""
        return self._ready.wait(timeout_s)

    def _run(self) -> None:
        delay = self._retry_s
        while not self._closed.is_set():
            try:
                producer = self._connect()
            except Exception as exc:  # unreachable, refused, misconfigured: keep trying, the spool holds events
                self._error = f"{type(exc).__name__}: {exc}"[:300]
                self.metrics.connect_failures.inc()
                log.warning("producer not connected, retrying in %.2g s: %s", delay, self._error)
                self._closed.wait(delay)
                delay = min(2 * delay, self._retry_max_s)
                continue
            with self._lock:
                late = self._closed.is_set()
                if not late:
                    self._producer = producer
                    self._ready.set()
                    self.metrics.connected.set(1)
            if late:  # connected after close(): nobody will use it
                producer.close(0)
            else:
                log.info("producer connected")
            return

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = (),
             on_done: DoneCallback | None = None) -> None:
        producer = self._producer
        if producer is None:
            raise TransportError(f"the producer is not connected: {self._error}")
        producer.send(topic, value, key, headers, on_done)

    def flush(self, timeout_s: float | None = None) -> None:
        producer = self._producer
        if producer is not None:
            producer.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop connecting; close the real producer if there is one."""
        with self._lock:
            self._closed.set()
            producer = self._producer
        if producer is not None:
            producer.close(timeout_s)
