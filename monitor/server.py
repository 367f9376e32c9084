"""The daemon's HTTP server: ``/metrics``, ``/healthz``, ``/readyz``, pages (the status page on ``/``, reports
under ``/reports/``) and, on the embedded bus, ingest.

``POST /v1/events`` and ``POST /v1/feedback`` accept one record value (an event or a batch envelope, as in
``monitor/schemas/record.schema.json``) and put it on the bus; validation happens in the pipeline, exactly
as for records from Kafka, so a bad event is counted and dead-lettered there. The server itself refuses
only what it cannot take, and never queues a body it did not receive whole:

====  =================================================================================================
411   no ``Content-Length`` (``Transfer-Encoding: chunked`` included: a record is one sized body)
413   ``Content-Length`` over ``max_body_bytes``
415   a content type other than ``application/json`` or ``application/cloudevents+json``
400   an empty body, or a body shorter than its ``Content-Length`` (the client closed early)
408   the body did not arrive within ``read_timeout_s``
503   the bus is full (its readers lag), or ``max_connections`` connections are being served already
====  =================================================================================================

With a token (``server.token_file``, see :mod:`monitor.auth`), every request but ``GET /healthz`` and
``/readyz`` must carry ``Authorization: Bearer <token>``; otherwise it is answered 401 (``WWW-Authenticate:
Bearer``) before anything else, a ``POST`` before its body is read, and the connection is closed. A successful
ingest answers 202: the record is queued on the bus, not yet evaluated.

Connections beyond ``max_connections`` wait in a listen queue of ``backlog`` (the standard library's default
of 5 reset all but a handful of 200 simultaneous clients); an idle keep-alive connection is closed after
``read_timeout_s``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from monitor.auth import PROBE_PATHS, WWW_AUTHENTICATE, Guard, listener_guard, refusal_counter
from monitor.config import ServerConfig
from monitor.errors import ConfigError
from monitor.transport import Producer

__all__ = ["DaemonServer", "PageHandler", "check_server"]

#: Serves one ``GET``: takes the request path (no query), returns (status code, body, content type).
PageHandler = Callable[[str], tuple[int, bytes, str]]

log = logging.getLogger(__name__)

_DEFAULTS = ServerConfig()
_KNOWN = frozenset({"/metrics", "/healthz", "/readyz"})
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n" \
        b"Connection: close\r\n\r\ntoo many connections\n"


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them; beyond that a short 503 and close."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int,
                 backlog: int) -> None:
        self.request_queue_size = backlog  # read by server_activate() (listen) inside __init__
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(_BUSY)  # a few bytes into an empty socket buffer: never blocks
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: give its slot back
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class DaemonServer:
    """Serves metrics, health and (with ``ingest``) the embedded bus's ingest routes.

    Parameters
    ----------
    host, port : where to listen; a port or address that cannot be bound raises :class:`ConfigError`.
    registry : the metrics registry served on ``/metrics`` (the request counter is made on it).
    ready : answers ``/readyz``.
    ingest : the embedded bus's producer; ``None`` (on Kafka) disables ``POST``.
    topics : ``{"events": topic, "feedback": topic}``, the ingest routes' topics.
    max_body_bytes, read_timeout_s, max_connections, backlog : see :class:`~monitor.config.ServerConfig`.
    pages : ``GET`` handlers by path; a path that ends in ``/`` (other than ``/`` itself) serves everything
        under it. A handler that raises answers 500; the server goes on.
    token_file, allow_unauthenticated : who may send (see :class:`~monitor.config.ServerConfig`); a ``host``
        beyond loopback without either raises :class:`ConfigError`. Refusals are counted in
        ``inferwatch_http_unauthorized_total{reason}`` on ``registry``.
    """

    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool],
                 ingest: Producer | None = None, topics: dict[str, str] | None = None,
                 max_body_bytes: int = _DEFAULTS.max_body_bytes, read_timeout_s: float = _DEFAULTS.read_timeout_s,
                 max_connections: int = _DEFAULTS.max_connections, backlog: int = _DEFAULTS.backlog,
                 pages: Mapping[str, PageHandler] | None = None, token_file: str | None = None,
                 allow_unauthenticated: bool = False) -> None:
        guard = check_server(host, token_file, allow_unauthenticated, warn=True)
        requests = Counter("inferwatch_http_requests_total", "HTTP requests served by the daemon.",
                           ("path", "code"), registry=registry)
        unauthorized = refusal_counter(registry, "inferwatch_http_unauthorized_total",
                                       "Requests refused 401 for want of the bearer token (server.token_file), by "
                                       "reason: missing, malformed, wrong.")
        unauthorized_log = _SpellLog()
        routes = {f"/v1/{kind}": topic for kind, topic in (topics or {}).items()} if ingest else {}
        handlers: dict[str, PageHandler] = dict(pages or {})

        def page_of(path: str) -> str | None:
            """The ``pages`` key that serves ``path`` (also its bounded ``path`` label), if any."""
            if path in handlers:
                return path
            return next((key for key in handlers if key != "/" and key.endswith("/") and path.startswith(key)), None)

        class Handler(BaseHTTPRequestHandler):
            server_version = "inferwatch"
            timeout = read_timeout_s  # every socket read: request line, headers, an idle keep-alive connection

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s %s", self.address_string(), format % args)

            def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                       close: bool = False, extra: Mapping[str, str] | None = None) -> None:
                path = self.path.split("?", 1)[0]
                label = path if path in _KNOWN or path in routes else page_of(path) or "other"
                requests.labels(path=label, code=str(code)).inc()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                if close:
                    self.close_connection = True
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def _refused(self) -> bool:
                """Answer 401 and close (the body, if any, unread) unless the request carries the token."""
                if not guard.enabled:
                    return False
                reason = guard.check(self.headers.get_all("Authorization") or [])
                if reason is None:
                    return False
                if reason == "wrong":
                    unauthorized_log.warn(self.address_string())
                unauthorized.labels(reason=reason).inc()
                self._reply(401, guard.body(reason), close=True, extra={"WWW-Authenticate": WWW_AUTHENTICATE})
                return True

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path not in PROBE_PATHS and self._refused():
                    return
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._reply(200, b"ok\n")
                elif path == "/readyz":
                    ok = ready()
                    self._reply(200 if ok else 503, b"ready\n" if ok else b"starting\n")
                elif (key := page_of(path)) is not None:
                    try:
                        code, body, content_type = handlers[key](path)
                    except Exception:
                        log.exception("page %s failed", path[:200])
                        self._reply(500, b"this page failed; the daemon's log says why\n")
                        return
                    self._reply(code, body, content_type)
                else:
                    self._reply(404, b"not found\n")

            def do_POST(self) -> None:
                # Every refusal before the body is read closes the connection: the unread body must not be
                # taken for the next request.
                if self._refused():
                    return
                topic = routes.get(self.path.split("?", 1)[0])
                if topic is None or ingest is None:
                    self._reply(404, b"not found: POST /v1/events or /v1/feedback (embedded bus only)\n", close=True)
                    return
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit() or "Transfer-Encoding" in self.headers:
                    self._reply(411, b"Content-Length required (no Transfer-Encoding)\n", close=True)
                    return
                size = int(length)
                if size > max_body_bytes:
                    self._reply(413, f"body over {max_body_bytes} bytes\n".encode(), close=True)
                    return
                ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
                if ctype not in ("application/json", "application/cloudevents+json"):
                    self._reply(415, b"Content-Type must be application/json\n", close=True)
                    return
                if size == 0:
                    self._reply(400, b"empty body: send one event or a batch envelope\n")
                    return
                try:
                    body = self._read_body(size)
                except TimeoutError:
                    self._reply(408, f"body not received within {read_timeout_s:g} s\n".encode(), close=True)
                    return
                if len(body) < size:
                    self._reply(400, f"body ended after {len(body)} of {size} bytes\n".encode(), close=True)
                    return
                key = self.headers.get("X-Inferwatch-Key")
                errors: list[BaseException] = []
                ingest.send(topic, body, key.encode() if key else None,
                            on_done=lambda error: errors.append(error) if error is not None else None)
                if errors:
                    log.warning("ingest refused: %s", errors[0])
                    self._reply(503, f"not queued: {errors[0]}\n".encode())
                    return
                self._reply(202, b"accepted\n")

            def _read_body(self, size: int) -> bytes:
                """``size`` bytes, or fewer when the client closes early; ``TimeoutError`` when they take longer
                than ``read_timeout_s`` in all (a trickle of bytes does not extend the deadline)."""
                deadline = time.monotonic() + read_timeout_s
                chunks: list[bytes] = []
                received = 0
                while received < size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    self.connection.settimeout(remaining)
                    chunk = self.rfile.read1(min(size - received, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    received += len(chunk)
                self.connection.settimeout(read_timeout_s)
                return b"".join(chunks)

        try:
            self._httpd = _BoundedServer((host, port), Handler, max_connections, backlog)
        except OSError as exc:  # EADDRINUSE, EADDRNOTAVAIL, an unknown host name (socket.gaierror)
            reason = exc.strerror or str(exc)
            hint = "another process listens there; choose another server.port" if _in_use(exc) else \
                "server.host must be an address of this machine (127.0.0.1, 0.0.0.0, ...)"
            raise ConfigError(f"cannot listen on {host}:{port}: {reason} ({hint})") from exc
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="inferwatch-http", daemon=True)

    @classmethod
    def from_config(cls, config: ServerConfig, registry: CollectorRegistry, ready: Callable[[], bool],
                    ingest: Producer | None = None, topics: dict[str, str] | None = None,
                    pages: Mapping[str, PageHandler] | None = None) -> DaemonServer:
        """The server that the ``server:`` section of the config describes."""
        return cls(config.host, config.port, registry, ready, ingest, topics, max_body_bytes=config.max_body_bytes,
                   read_timeout_s=config.read_timeout_s, max_connections=config.max_connections,
                   backlog=config.backlog, pages=pages, token_file=config.token_file,
                   allow_unauthenticated=config.allow_unauthenticated)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()


def check_server(host: str, token_file: str | None, allow_unauthenticated: bool, warn: bool = False) -> Guard:
    """Who may use a daemon server on ``host`` (reads ``token_file``); :class:`ConfigError` when it would listen
    beyond loopback with neither a token nor ``allow_unauthenticated`` (see :func:`monitor.auth.listener_guard`)."""
    return listener_guard(host, token_file, allow_unauthenticated, host_key="server.host",
                          token_key="server.token_file", allow_key="server.allow_unauthenticated",
                          what="the daemon's HTTP server (event ingest, /metrics, status pages)", warn=warn)


class _SpellLog:
    """Logs the first refused token of a spell (and how many followed, once a quiet minute ends it), never the
    token itself: a client with a stale token must not flood the log."""

    def __init__(self, quiet_s: float = 60.0) -> None:
        self._quiet_s = quiet_s
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._count = 0

    def warn(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            fresh, count = now - self._last >= self._quiet_s, self._count
            self._last = now
            self._count = 1 if fresh else self._count + 1
        if fresh:
            tail = f" ({count} in the last spell)" if count > 1 else ""
            log.warning("refused a wrong bearer token from %s (counted in inferwatch_http_unauthorized_total)%s",
                        client, tail)


def _in_use(exc: OSError) -> bool:
    return not isinstance(exc, socket.gaierror) and exc.errno == errno.EADDRINUSE
