"""Alert rules over window results, and the channels that deliver alerts.

An alert's fingerprint is (model, version, detector). It fires when ``breaches`` of the last ``of``
windows found a problem (k-of-n persistence: one unlucky window does not page anyone), repeats are
suppressed while it stays firing, and it resolves after ``resolve_after`` consecutive clean windows; both
transitions are delivered. Windows with insufficient data neither advance nor reset a rule.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from monitor.config import AlertsConfig, WebhookConfig, default_of
from monitor.errors import ConfigError
from monitor.metrics import DaemonMetrics

log = logging.getLogger(__name__)

Status = Literal["firing", "resolved"]


@dataclass(frozen=True)
class Alert:
    """One alert notification (firing or resolved), JSON-serialisable as sent to webhooks."""

    id: str
    fingerprint: str
    status: Status
    model: str
    version: str
    detector: str
    window: int
    window_id: str
    window_start: float
    window_end: float
    started_at: float
    features: tuple[str, ...] = ()
    summary: str = ""
    training_run: str | None = None

    def to_json(self) -> bytes:
        return json.dumps({"schema": "inferwatch.alert/v1", **asdict(self)}, sort_keys=True).encode()


@dataclass
class _RuleState:
    recent: deque[bool]  # the last `of` verdicts, True = breach
    seen: deque[str]  # their window ids: a window read again after a rebalance or restart is not counted twice
    clean: int = 0
    firing: Alert | None = None


@dataclass(frozen=True)
class Observation:
    """What one window said about one detector."""

    model: str
    version: str
    detector: str
    window: int
    window_id: str
    window_start: float
    window_end: float
    drifted: bool
    insufficient: bool = False
    features: tuple[str, ...] = ()
    summary: str = ""
    training_run: str | None = None


class AlertRules:
    """k-of-n firing, r-consecutive resolution, per fingerprint, as the ``alerts:`` section says. State is one
    small record per (model, version, detector), which the configured models bound.

    >>> rules = AlertRules(AlertsConfig(breaches=2, of=3))
    >>> def window(i, drifted):
    ...     return Observation("m", "1", "feature_drift", i, f"w{i}", i, i + 1, drifted)
    >>> [a.status if (a := rules.observe(window(i, d))) else "-" for i, d in enumerate([1, 0, 1, 1, 0, 0])]
    ['-', '-', 'firing', '-', '-', 'resolved']
    """

    def __init__(self, alerts: AlertsConfig = AlertsConfig()) -> None:  # noqa: B008 - frozen, so safe to share
        self.breaches, self.of, self.resolve_after = alerts.breaches, alerts.of, alerts.resolve_after
        if not 1 <= self.breaches <= self.of or self.resolve_after < 1:
            raise ConfigError(f"alerts: need 1 <= breaches <= of and resolve_after >= 1, got breaches="
                              f"{self.breaches}, of={self.of}, resolve_after={self.resolve_after}")
        self._state: dict[str, _RuleState] = {}

    def observe(self, obs: Observation) -> Alert | None:
        """Update the rule with one window; return an alert when it fires or resolves."""
        fingerprint = hashlib.sha256(f"{obs.model}\0{obs.version}\0{obs.detector}".encode()).hexdigest()[:16]
        st = self._state.setdefault(fingerprint, _RuleState(recent=deque(maxlen=self.of),
                                                            seen=deque(maxlen=self.of)))
        if obs.insufficient or obs.window_id in st.seen:
            return None
        st.seen.append(obs.window_id)
        st.recent.append(obs.drifted)
        if obs.drifted:
            st.clean = 0
            if st.firing is None and sum(st.recent) >= self.breaches:
                st.firing = self._alert(fingerprint, "firing", obs, started_at=obs.window_end)
                return st.firing
            return None
        st.clean += 1
        if st.firing is not None and st.clean >= self.resolve_after:
            started = st.firing.started_at
            st.firing = None
            return self._alert(fingerprint, "resolved", obs, started_at=started)
        return None

    @property
    def firing(self) -> list[Alert]:
        return [s.firing for s in self._state.values() if s.firing is not None]

    @staticmethod
    def _alert(fingerprint: str, status: Status, obs: Observation, started_at: float) -> Alert:
        # The id is the same for every delivery attempt of this notification (receivers deduplicate on it).
        ident = hashlib.sha256(f"{fingerprint}\0{status}\0{obs.window_id}".encode()).hexdigest()[:32]
        return Alert(id=ident, fingerprint=fingerprint, status=status, model=obs.model, version=obs.version,
                     detector=obs.detector, window=obs.window, window_id=obs.window_id,
                     window_start=obs.window_start, window_end=obs.window_end, started_at=started_at,
                     features=obs.features, summary=obs.summary, training_run=obs.training_run)


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


@dataclass
class MemoryChannel:
    """Keeps alerts in a list: the in-process sink the demo reports from."""

    name: str = "memory"
    alerts: list[Alert] = field(default_factory=list)

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def close(self, timeout_s: float = 10.0) -> None:
        return None


def _default(field: str) -> Any:
    """A WebhookConfig default: declared once, in :mod:`monitor.config`."""
    return default_of(WebhookConfig, field)


class WebhookChannel:
    """POSTs each alert as JSON to a URL from a background thread, retrying timeouts, connection errors,
    408, 429 and 5xx with exponential backoff and full jitter; other 4xx are not retried. The queue is
    bounded; an alert that cannot be queued or delivered is counted as a delivery failure and logged.

    :meth:`close` gives the queued alerts a grace period (``close_grace_s``, at most its ``timeout_s``) to be
    delivered, then gives up on the rest: each undelivered alert (in flight or queued) is logged with its
    fingerprint and counted in ``inferwatch_alert_delivery_failures_total``. A receiver that accepts the
    connection and never answers therefore delays shutdown by the grace period, not by every retry.
    """

    name = "webhook"

    def __init__(self, url: str, metrics: DaemonMetrics, timeout_s: float = _default("timeout_s"),
                 max_attempts: int = _default("max_attempts"), backoff_s: float = _default("backoff_s"),
                 capacity: int = 1000, sleep: Callable[[float], None] = time.sleep,
                 close_grace_s: float = _default("close_grace_s")) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.close_grace_s = close_grace_s
        self._metrics = metrics
        self._sleep = sleep
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._pending: dict[str, Alert] = {}  # queued or in flight, by id; an alert leaves it exactly once
        self._closed = False
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferwatch-webhook", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: WebhookConfig, metrics: DaemonMetrics) -> WebhookChannel:
        """The channel that ``alerts.webhook`` describes."""
        return cls(config.url, metrics, timeout_s=config.timeout_s, max_attempts=config.max_attempts,
                   backoff_s=config.backoff_s, close_grace_s=config.close_grace_s)

    def send(self, alert: Alert) -> None:
        with self._lock:
            if self._closed:
                self._failed(alert, "the channel is closed")
                return
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                self._failed(alert, "the webhook queue is full")
                return
            self._pending[alert.id] = alert

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued within ``min(close_grace_s, timeout_s)``, then log and count what is left."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(min(self.close_grace_s, timeout_s))
        with self._lock:
            self._abandoned.set()
            left, self._pending = list(self._pending.values()), {}
        for alert in left:
            self._failed(alert, f"not delivered within the {min(self.close_grace_s, timeout_s):g} s shutdown grace")

    def _run(self) -> None:
        while not self._abandoned.is_set() and (alert := self._queue.get()) is not None:
            delivered, problem = self._deliver(alert)
            with self._lock:
                if self._pending.pop(alert.id, None) is None:
                    continue  # given up on at close: already logged and counted there
            if delivered:
                self._metrics.alerts_sent.labels(channel=self.name, status=alert.status).inc()
                log.info("alert %s %s delivered to %s", alert.status, alert.detector, self.url)
            else:
                self._failed(alert, problem)

    def _failed(self, alert: Alert, problem: str) -> None:
        self._metrics.alert_delivery_failures.labels(channel=self.name).inc()
        log.warning("alert %s (fingerprint %s, %s %s) not delivered to %s: %s", alert.id, alert.fingerprint,
                    alert.status, alert.detector, self.url, problem)

    def _deliver(self, alert: Alert) -> tuple[bool, str]:
        """Try until delivered, a non-retryable answer, ``max_attempts``, or :meth:`close` gives up."""
        body = alert.to_json()
        problem = "closed before the first attempt"
        for attempt in range(1, self.max_attempts + 1):
            if self._abandoned.is_set():
                break
            request = urllib.request.Request(self.url, data=body, method="POST", headers={
                "Content-Type": "application/json", "User-Agent": "inferwatch", "Idempotency-Key": alert.id})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                return True, ""
            except urllib.error.HTTPError as exc:
                retryable = exc.code in (408, 429) or exc.code >= 500
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                retryable, problem = True, str(getattr(exc, "reason", exc))
            problem = f"{problem} after {attempt} attempt(s)"
            if not retryable or attempt == self.max_attempts:
                break
            self._sleep(random.uniform(0, self.backoff_s * 2 ** (attempt - 1)))
        return False, problem
