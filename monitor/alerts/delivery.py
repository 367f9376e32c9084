"""Delivery: one bounded queue and one worker thread per channel, so detection never waits on a receiver.

A channel is a :class:`Format` (how one notification becomes an HTTP request for one receiver) inside a
:class:`Delivery` (when and how often to send it). Retried: timeouts, connection errors, 408, 429 (after its
``Retry-After``, up to 10 minutes) and 5xx, with exponential backoff and full jitter (each wait at most
``max_backoff_s``), up to ``max_attempts``;
every attempt carries the same notification id. Not retried: other 4xx. A notification that is not delivered
goes to the dead-letter sink with its reason. A full queue drops its oldest notification and counts it.

Metrics (own registry passed in; alerting does not depend on the daemon's metrics module):
``inferwatch_alert_notifications_total{channel,outcome}`` (delivered, dead_lettered, dropped, filtered),
``inferwatch_alert_delivery_seconds{channel}`` (queued to delivered), ``inferwatch_alert_queue_depth{channel}``
and ``inferwatch_alerts_firing{severity}`` (set by the rules).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.alerts.notification import Alert, at_least
from monitor.config import SEVERITIES, AlertsConfig, _Channel

log = logging.getLogger(__name__)

#: The longest a receiver's ``Retry-After`` is waited out (it holds up the channel's queue meanwhile).
RETRY_AFTER_CAP_S = 600.0

OUTCOMES = ("delivered", "dead_lettered", "dropped", "filtered")

#: Called with a notification that will not be delivered, the channel and the reason.
DeadLetter = Callable[[Alert, str, str], None]


@dataclass(frozen=True)
class HttpRequest:
    """One POST to a receiver."""

    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Format(Protocol):
    """How one channel renders a notification. ``request`` is called for every attempt (a signature carries
    the attempt's time); ``repost_s`` > 0 asks for the firing alerts to be posted again that often."""

    name: str
    repost_s: float

    def request(self, alert: Alert, now: float) -> HttpRequest: ...


class AlertMetrics:
    """The alerting metrics, on the registry given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter("inferwatch_alert_notifications_total",
                                     "Alert notifications by channel and outcome: delivered, dead_lettered (given "
                                     "up after retries or refused), dropped (queue full), filtered (by the "
                                     "channel's min_severity or detectors).", ("channel", "outcome"),
                                     registry=registry)
        self.delivery_seconds = Histogram("inferwatch_alert_delivery_seconds",
                                          "Time from queueing a notification to its delivery, retries included.",
                                          ("channel",), buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800),
                                          registry=registry)
        self.queue_depth = Gauge("inferwatch_alert_queue_depth", "Notifications waiting in a channel's queue.",
                                 ("channel",), registry=registry)
        self.firing = Gauge("inferwatch_alerts_firing", "Alerts firing now, by severity.", ("severity",),
                            registry=registry)
        for severity in SEVERITIES:
            self.firing.labels(severity=severity)

    def channel(self, name: str) -> None:
        """Create a channel's series at zero, so that dashboards see them before the first alert."""
        for outcome in OUTCOMES:
            self.notifications.labels(channel=name, outcome=outcome)
        self.queue_depth.labels(channel=name)


class Retry(Exception):
    """A failed attempt that may be retried, after ``after_s`` when the receiver said so."""

    def __init__(self, problem: str, after_s: float | None = None) -> None:
        super().__init__(problem)
        self.after_s = after_s


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; ``None`` if absent or unreadable.

    >>> retry_after_s("2", 0.0)
    2.0
    >>> retry_after_s("Thu, 01 Jan 1970 00:00:10 GMT", 4.0)
    6.0
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def post(request: HttpRequest, timeout_s: float, now: float) -> None:
    """POST once: return on 2xx, raise :class:`Retry` when trying again may help, ``RuntimeError`` if not."""
    req = urllib.request.Request(request.url, data=request.body, method="POST",
                                 headers={"User-Agent": "inferwatch", **request.headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:
            response.read(1 << 16)
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code in (408, 429) or exc.code >= 500:
                raise Retry(f"HTTP {exc.code}", retry_after_s(exc.headers.get("Retry-After"), now)) from exc
            detail = exc.read(300).decode("utf-8", "replace").strip()
        raise RuntimeError(f"HTTP {exc.code}" + (f": {detail}" if detail else "")) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise Retry(str(getattr(exc, "reason", exc))) from exc


class Delivery:
    """One channel: its format, its filters, its queue and worker thread (see the module docstring)."""

    def __init__(self, fmt: Format, config: _Channel, metrics: AlertMetrics, dead_letter: DeadLetter,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] | None = None) -> None:
        self.name = fmt.name
        self.format = fmt
        self.config = config
        self._metrics = metrics
        self._dead_letter = dead_letter
        self._clock = clock
        self._queue: deque[tuple[Alert, float]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._abandoned = threading.Event()
        self._in_flight: Alert | None = None
        self._firing: dict[str, Alert] = {}  # for formats that post firing alerts again
        self._last_repost = clock()
        self._wait = sleep if sleep is not None else self._abandoned.wait
        metrics.channel(self.name)
        self._thread = threading.Thread(target=self._run, name=f"inferwatch-alerts-{self.name}", daemon=True)
        self._thread.start()

    # -- the pipeline's side ---------------------------------------------------------------------------
    def accepts(self, alert: Alert) -> bool:
        return at_least(alert.severity, self.config.min_severity) and (
            not self.config.detectors or alert.detector in self.config.detectors)

    def send(self, alert: Alert) -> None:
        """Queue ``alert`` (never blocks); a full queue drops its oldest notification."""
        if not self.accepts(alert):
            self._metrics.notifications.labels(channel=self.name, outcome="filtered").inc()
            return
        with self._cond:
            if self._closed:
                self._give_up(alert, "the channel is closed")
                return
            if len(self._queue) >= self.config.queue_size:
                dropped, _ = self._queue.popleft()
                self._metrics.notifications.labels(channel=self.name, outcome="dropped").inc()
                log.warning("alert channel %s: queue full (%d), dropped the oldest notification %s (%s %s)",
                            self.name, self.config.queue_size, dropped.id, dropped.status, dropped.detector)
            self._queue.append((alert, self._clock()))
            self._track(alert)
            self._metrics.queue_depth.labels(channel=self.name).set(len(self._queue))
            self._cond.notify()

    def restore(self, firing: list[Alert]) -> None:
        """Alerts still firing from before a restart, for formats that post firing alerts again."""
        if self.format.repost_s > 0:
            with self._cond:
                self._firing.update((a.fingerprint, a) for a in firing if self.accepts(a))
                self._cond.notify()

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued within ``min(close_grace_s, timeout_s)``; dead-letter what is left."""
        grace = min(self.config.close_grace_s, timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(grace)
        with self._cond:
            self._abandoned.set()
            left = [a for a, _ in self._queue] + ([self._in_flight] if self._in_flight is not None else [])
            self._queue.clear()
            self._in_flight = None
            self._metrics.queue_depth.labels(channel=self.name).set(0)
        for alert in left:
            self._give_up(alert, f"not delivered within the {grace:g} s shutdown grace")

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- the worker --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed and not self._repost_due():
                    self._cond.wait(self._repost_wait())
                if self._repost_due() and not self._closed:
                    self._queue_reposts()
                if not self._queue:
                    return  # closed and drained
                alert, queued_at = self._queue.popleft()
                self._in_flight = alert
                self._metrics.queue_depth.labels(channel=self.name).set(len(self._queue))
            problem = self._deliver(alert)
            with self._cond:
                if self._in_flight is None:
                    return  # given up on at close: dead-lettered there
                self._in_flight = None
            if problem is None:
                self._metrics.notifications.labels(channel=self.name, outcome="delivered").inc()
                self._metrics.delivery_seconds.labels(channel=self.name).observe(max(0.0, self._clock() - queued_at))
                log.info("alert %s %s %s/%s delivered to %s", alert.status, alert.detector, alert.model,
                         alert.version, self.name)
            else:
                self._give_up(alert, problem)

    def _deliver(self, alert: Alert) -> str | None:
        """Attempt until delivered (``None``) or given up (the reason)."""
        cfg = self.config
        problem = "closed before the first attempt"
        for attempt in range(1, cfg.max_attempts + 1):
            if self._abandoned.is_set():
                break
            now = self._clock()
            try:
                post(self.format.request(alert, now), cfg.timeout_s, now)
                return None
            except Retry as exc:
                problem = f"{exc} after {attempt} attempt(s)"
                if attempt == cfg.max_attempts:
                    break
                backoff = random.uniform(0, min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (attempt - 1)))
                wait = backoff if exc.after_s is None else max(exc.after_s, backoff)
                log.info("alert %s to %s: %s; retrying in %.1f s", alert.id, self.name, exc, wait)
                self._wait(min(wait, RETRY_AFTER_CAP_S))
            except Exception as exc:  # refused (4xx) or a format that cannot render: not retried
                return f"{exc} (not retried)"
        return problem

    def _give_up(self, alert: Alert, problem: str) -> None:
        self._metrics.notifications.labels(channel=self.name, outcome="dead_lettered").inc()
        log.warning("alert %s (fingerprint %s, %s %s) not delivered to %s: %s", alert.id, alert.fingerprint,
                    alert.status, alert.detector, self.name, problem)
        try:
            self._dead_letter(alert, self.name, problem)
        except Exception:
            log.exception("dead-lettering alert %s failed", alert.id)

    # -- posting firing alerts again -----------------------------------------------------------------------
    def _track(self, alert: Alert) -> None:
        """Lock held: what is firing now, as queued (a resolve that is never delivered still stops re-posts)."""
        if self.format.repost_s > 0:
            if alert.status == "firing":
                self._firing[alert.fingerprint] = alert
            else:
                self._firing.pop(alert.fingerprint, None)

    def _repost_wait(self) -> float | None:
        if self.format.repost_s <= 0 or not self._firing:
            return None
        return max(0.01, self._last_repost + self.format.repost_s - self._clock())

    def _repost_due(self) -> bool:
        return bool(self._firing) and self._clock() - self._last_repost >= self.format.repost_s > 0

    def _queue_reposts(self) -> None:
        """Lock held: queue every firing alert again (same id: the receiver sees the same alert), unless it is
        queued already."""
        now = self._clock()
        self._last_repost = now
        queued = {a.id for a, _ in self._queue}
        self._queue.extend((a, now) for a in self._firing.values() if a.id not in queued)


def channel_names(alerts: AlertsConfig) -> list[str]:
    """Unique names for the configured channels: the type, numbered when a type is used more than once."""
    kinds = [str(c.__struct_config__.tag) for c in alerts.channels]
    seen: dict[str, int] = {}
    out = []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        out.append(kind if kinds.count(kind) == 1 else f"{kind}{seen[kind]}")
    return out
