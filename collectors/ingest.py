"""Send records to a daemon's HTTP ingest instead of Kafka: ``inferwatch sidecar --ingest URL``.

:class:`HttpIngestProducer` is a :class:`~monitor.transport.Producer` that ``POST``-s each record value to
``{URL}/v1/events`` (what :mod:`monitor.server` accepts on the embedded bus: ``Content-Type: application/json``,
a ``Content-Length``, the key in ``X-Inferwatch-Key``, the bearer token in ``Authorization``), in the order they
were sent, on one background thread over one persistent connection. Put it under
:class:`~collectors.producer.EventProducer` exactly like a Kafka producer: a failure reported through ``on_done``
makes the EventProducer spool the batch and replay it later, with the same spool and drop accounting.

What each answer means for a record:

=========================================  ========  ==========================================================
answer                                     outcome   ``on_done``
=========================================  ========  ==========================================================
2xx (the daemon answers 202 Accepted)      accepted  ``None``: the record is on the daemon's bus
connection refused or reset, DNS failure   unreach.  ``TransportError``: spooled and replayed
no answer within ``timeout_s``             timeout   ``TransportError``: spooled (it may arrive twice, as with
                                                     Kafka; the detector drops a request id seen twice)
408, 429, 503 (the daemon is busy)         busy      ``TransportError``: spooled and replayed
other 5xx                                  5xx       ``TransportError``: spooled and replayed
401, 403 (wrong or missing token)          unauth.   ``TransportError``: spooled, logged loudly; the token file
                                                     is read again (at most every ``token_reread_s``), so a
                                                     fixed token (or rotated secret) lets the replay succeed
404 (no ingest there: a daemon on Kafka,   not       ``TransportError``: spooled, logged loudly; fixing the
or a wrong URL)                            found     URL or the daemon lets the replay succeed
any other 4xx (400, 411, 413, 415, ...)    rejected  ``RecordRejected``: the daemon refused this record for
                                                     good, and sending it again cannot succeed (a spooled record
                                                     would stop the replay of every later one): the
                                                     EventProducer drops it, counted in
                                                     ``inferwatch_collector_events_dropped_total
                                                     {reason="rejected"}``, and here in
                                                     ``inferwatch_collector_ingest_requests_total
                                                     {outcome="rejected"}``; logged (once a spell)
=========================================  ========  ==========================================================

(``413`` means the daemon's ``server.max_body_bytes`` is below the EventProducer's batch bytes, 900 kB: keep it at
its default of 4 MiB.) The first failure of a spell is logged, with its outcome, and so is the recovery; every
request is counted by outcome. The token is never logged.

:attr:`HttpIngestProducer.status` says whether the daemon is reachable, for the sidecar's ``/readyz``: from the
last request, or from a ``GET /healthz`` the sender makes when it has had nothing to send (nor probed) for
``probe_s``.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.auth import read_token_file
from monitor.errors import ConfigError, RecordRejected, TransportError
from monitor.transport import Producer
from monitor.transport.base import DoneCallback

__all__ = ["OUTCOMES", "HttpIngestProducer", "IngestMetrics", "ingest_metrics"]

log = logging.getLogger(__name__)

#: The ``outcome`` label of ``inferwatch_collector_ingest_requests_total`` (see the module's table).
OUTCOMES: Final = ("accepted", "unreachable", "timeout", "busy", "server_error", "unauthorized", "not_found",
                   "rejected")
_RETRYABLE_4XX: Final = {401: "unauthorized", 403: "unauthorized", 404: "not_found", 408: "busy", 429: "busy"}
_SAFE_HEADER = re.compile(rb"[\x20-\x7e]{1,1024}")
_MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class IngestMetrics:
    requests: Counter
    reachable: Gauge
    queued: Gauge


def ingest_metrics(registry: CollectorRegistry) -> IngestMetrics:
    """Make (and pre-label) the ingest producer's metrics on ``registry``."""
    m = IngestMetrics(
        requests=Counter("inferwatch_collector_ingest_requests_total",
                         "Records POSTed to the daemon's HTTP ingest, by outcome: accepted; unreachable, timeout, "
                         "busy, server_error, unauthorized, not_found (the record is spooled and replayed); "
                         "rejected (a 4xx that re-sending cannot fix: the record is dropped).", ("outcome",),
                         registry=registry),
        reachable=Gauge("inferwatch_collector_ingest_reachable",
                        "1 while the daemon's HTTP ingest answers (its last answer or probe), else 0.",
                        registry=registry),
        queued=Gauge("inferwatch_collector_ingest_queue_records", "Records waiting to be POSTed to the ingest.",
                     registry=registry),
    )
    for outcome in OUTCOMES:
        m.requests.labels(outcome=outcome)
    return m


@dataclass
class _Item:
    value: bytes
    key: bytes | None
    on_done: DoneCallback | None


class HttpIngestProducer(Producer):
    """A :class:`~monitor.transport.Producer` that posts each record to a daemon's ``POST /v1/events``.

    Parameters
    ----------
    url : the daemon's server, ``http://host:port`` (``https://`` for a TLS-terminating proxy in front of it;
        a path prefix is kept: ``http://gw/inferwatch`` posts to ``http://gw/inferwatch/v1/events``).
    registry : where :func:`ingest_metrics` are made.
    token_file : file holding the bearer token (first non-empty line); ``None``: no ``Authorization`` header.
        Read here (a problem raises :class:`~monitor.errors.ConfigError`) and again after a 401 or 403.
    token_key : the setting that names ``token_file``, for messages.
    timeout_s : to connect, and to wait for each answer.
    capacity : records queued at most; a ``send`` beyond waits up to ``timeout_s`` for room, then raises
        :class:`~monitor.errors.TransportError` (the EventProducer spools the batch).
    probe_s : after this long without a request, the sender probes ``GET /healthz`` (no token needed).
    token_reread_s : the token file is read again after a 401 or 403 at most this often.

    Records leave one at a time, in ``send`` order (so per key too), over one kept-alive connection; the topic is
    not sent (the daemon puts events on its own ``topics.events``), nor are the record headers.
    """

    def __init__(self, url: str, registry: CollectorRegistry | None = None, token_file: str | None = None, *,
                 token_key: str = "sidecar.ingest_token_file", timeout_s: float = 5.0, capacity: int = 1024,
                 probe_s: float = 5.0, token_reread_s: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"ingest must look like http://host:port, got {url!r}")
        if not (timeout_s > 0 and capacity >= 1 and probe_s > 0 and token_reread_s >= 0):
            raise ValueError("timeout_s and probe_s must be > 0, capacity >= 1, token_reread_s >= 0")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        prefix = parts.path.rstrip("/")
        self._events_path = f"{prefix}/v1/events"
        self._health_path = f"{prefix}/healthz"
        self._token_file = token_file
        self._token_key = token_key
        self._token = read_token_file(token_file, token_key) if token_file is not None else None
        self._token_read_at = time.monotonic()
        self._token_reread_s = token_reread_s
        self.timeout_s = timeout_s
        self.capacity = capacity
        self._probe_s = probe_s
        self.metrics = ingest_metrics(registry or CollectorRegistry())
        self._queue: deque[_Item] = deque()
        self._busy = 0  # records taken by the sender and not yet reported
        self._cond = threading.Condition()
        self._closed = False
        self._conn: http.client.HTTPConnection | None = None
        self._conn_used = 0.0  # when the connection last finished a request
        self._reachable: bool | None = None  # None: not contacted yet
        self._unreachable_why = ""
        self._spell: str | None = None  # the outcome of the failing spell under way (logged once), or None
        self._spell_why = ""
        self._last_answer = time.monotonic() - probe_s  # probe at once
        self._thread = threading.Thread(target=self._run, name="inferwatch-ingest", daemon=True)
        self._thread.start()

    # -- the Producer protocol ----------------------------------------------------------------------------
    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = (),
             on_done: DoneCallback | None = None) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"value must be bytes, got {type(value).__name__}")
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while len(self._queue) >= self.capacity and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(f"the ingest queue is full ({self.capacity} records waiting for "
                                         f"{self.url})")
                self._cond.wait(left)
            if self._closed:
                raise TransportError("the ingest producer is closed")
            self._queue.append(_Item(bytes(value), key, on_done))
            self.metrics.queued.set(len(self._queue))
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TransportError(f"{len(self._queue) + self._busy} records not answered by {self.url} "
                                         f"within {timeout_s:g} s")
                self._cond.wait(left)

    def close(self, timeout_s: float | None = None) -> None:
        """Send what is queued (up to ``timeout_s``), then stop; records still queued fail (``on_done`` gets a
        :class:`~monitor.errors.TransportError`: the EventProducer spools them)."""
        with contextlib.suppress(TransportError):
            self.flush(timeout_s)
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self.metrics.queued.set(0)
            self._cond.notify_all()
        for item in left:
            self._report(item, TransportError("the ingest producer closed before this record was sent"))
        self._thread.join(None if timeout_s is None else max(timeout_s, 0.0) + self.timeout_s)
        conn, self._conn = self._conn, None
        if conn is not None and not self._thread.is_alive():
            conn.close()

    # -- state --------------------------------------------------------------------------------------------
    @property
    def reachable(self) -> bool:
        """Whether the daemon answered the last request or probe (any HTTP answer counts)."""
        return bool(self._reachable)

    @property
    def status(self) -> str:
        """``ingest URL reachable`` or ``ingest URL unreachable (why)``, and what else is wrong, for ``/readyz``."""
        if self._reachable is None:
            state = "not contacted yet"
        elif not self._reachable:
            state = f"unreachable ({self._unreachable_why})"
        elif self._spell in (None, "unreachable", "timeout"):
            state = "reachable"
        else:
            state = f"reachable, but {self._spell_why}"
        return f"ingest {self.url} {state}"

    # -- sender thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    self._cond.wait(self._idle_wait())
                if self._closed:
                    return
                item = self._queue.popleft() if self._queue else None
                if item is not None:
                    self._busy += 1
                    self.metrics.queued.set(len(self._queue))
            if item is None:
                if self._idle_wait() <= 0:
                    self._probe()
                continue
            try:
                error = self._post(item)
            except Exception as exc:  # a bug must not stop the sender: the record fails (and is spooled)
                log.exception("ingest: posting a record failed unexpectedly")
                error = TransportError(f"ingest failed: {type(exc).__name__}: {exc}")
            self._report(item, error)
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def _idle_wait(self) -> float:
        """Seconds until the next idle probe is due (``probe_s`` after the last answer or probe)."""
        return self._last_answer + self._probe_s - time.monotonic()

    @staticmethod
    def _report(item: _Item, error: BaseException | None) -> None:
        if item.on_done is None:
            return
        try:
            item.on_done(error)
        except Exception:
            log.exception("ingest: an on_done callback raised")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                import ssl

                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout_s,
                                                         context=ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        """One exchange; a kept-alive connection the daemon closed meanwhile is replaced once. Raises OSError
        (``TimeoutError`` included) or :class:`http.client.HTTPException`."""
        for attempt in (0, 1):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read(_MAX_ANSWER_BYTES)
                if response.will_close or not response.isclosed():  # closing, or more answer than we read
                    self._drop_connection()
                return response.status, answer
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                self._drop_connection()
                if not reused or attempt:  # a fresh connection failed: the daemon is away
                    raise
                log.debug("ingest: the kept-alive connection was closed (%s); reconnecting", exc)
            except BaseException:
                self._drop_connection()
                raise
            finally:
                self._conn_used = time.monotonic()
        raise AssertionError("unreachable")

    def _post(self, item: _Item) -> TransportError | None:
        headers = {"Content-Type": "application/json"}
        if item.key and _SAFE_HEADER.fullmatch(item.key):
            headers["X-Inferwatch-Key"] = item.key.decode("ascii")
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            status, answer = self._request("POST", self._events_path, item.value, headers)
        except TimeoutError:
            return self._failed("timeout", f"no answer within {self.timeout_s:g} s (timeout_s)")
        except (OSError, http.client.HTTPException) as exc:
            return self._failed("unreachable", f"{type(exc).__name__}: {exc}")
        self._answered()
        why = answer[:200].decode("utf-8", "replace").strip()
        if 200 <= status < 300:
            self._succeeded()
            return None
        if status >= 500:
            outcome = "busy" if status == 503 else "server_error"
            return self._failed(outcome, f"the daemon answered {status} ({why})")
        if status in _RETRYABLE_4XX:
            outcome = _RETRYABLE_4XX[status]
            if outcome == "unauthorized":
                self._reread_token()
                return self._failed(outcome, f"the daemon refused the token ({status}: {why}); check "
                                             f"{self._token_key} against the daemon's server.token_file")
            if outcome == "not_found":
                return self._failed(outcome, f"no ingest at {self.url}{self._events_path} (404: {why}); is the "
                                             "daemon on the embedded bus (no kafka: section)?")
            return self._failed(outcome, f"the daemon answered {status} ({why})")
        # Refused for good: re-sending cannot help, and spooling would block the replay of every later record.
        self.metrics.requests.labels(outcome="rejected").inc()
        self._spell_why = f"it rejected a record ({status}: {why})"
        if self._spell != "rejected":
            log.error("ingest: %s rejected a record of %d bytes with %d (%s): dropped, counted in "
                      "inferwatch_collector_ingest_requests_total{outcome=\"rejected\"}", self.url, len(item.value),
                      status, why)
        self._spell = "rejected"
        return RecordRejected(f"{self.url} rejected the record with {status} ({why})")

    def _answered(self) -> None:
        self._reachable = True
        self._last_answer = time.monotonic()
        self.metrics.reachable.set(1)

    def _succeeded(self) -> None:
        self.metrics.requests.labels(outcome="accepted").inc()
        if self._spell is not None:
            log.warning("ingest: %s accepts records again (after %s)", self.url, self._spell)
        self._spell = None

    def _failed(self, outcome: str, why: str) -> TransportError:
        self.metrics.requests.labels(outcome=outcome).inc()
        if outcome in ("unreachable", "timeout"):
            self._reachable = False
            self._unreachable_why = why
            self.metrics.reachable.set(0)
        self._spell_why = why
        if self._spell != outcome:
            level = logging.ERROR if outcome in ("unauthorized", "not_found") else logging.WARNING
            log.log(level, "ingest: %s: %s; records are spooled (or, without a spool, dropped and counted) and "
                           "replayed when it accepts them", self.url, why)
        self._spell = outcome
        return TransportError(f"ingest {self.url}: {why}")

    def _reread_token(self) -> None:
        if self._token_file is None or time.monotonic() - self._token_read_at < self._token_reread_s:
            return
        self._token_read_at = time.monotonic()
        try:
            token = read_token_file(self._token_file, self._token_key)
        except ConfigError as exc:
            log.error("ingest: cannot read the token again: %s", exc)
            return
        if token != self._token:
            log.warning("ingest: %s holds a new token; using it", self._token_file)
            self._token = token

    def _probe(self) -> None:
        """``GET /healthz`` (no token needed): is the daemon there at all?"""
        self._last_answer = time.monotonic()  # the next probe waits probe_s, whatever this one finds
        try:
            status, _ = self._request("GET", self._health_path, None, {})
        except (OSError, http.client.HTTPException) as exc:
            self._reachable = False
            self._unreachable_why = f"{type(exc).__name__}: {exc}"
            self.metrics.reachable.set(0)
            return
        self._answered()
        if status != 200:
            log.debug("ingest: %s answered %d", self._health_path, status)
