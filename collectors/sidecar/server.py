"""The sidecar process: the proxy listener, the admin listener (probes and metrics), and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from collectors.producer import EventProducer
from collectors.sidecar.capture import Capturer, Redactor
from collectors.sidecar.http import HttpError, parse_request_head, parse_response_head, simple_response
from collectors.sidecar.metrics import sidecar_metrics
from collectors.sidecar.proxy import Client, Shared
from monitor.auth import PROBE_PATHS, WWW_AUTHENTICATE, Guard, listener_guard, refusal_counter
from monitor.config import SidecarConfig
from monitor.errors import ConfigError

log = logging.getLogger(__name__)

_SWEEP_S = 0.5


class Sidecar:
    """The proxy and its admin listener on the running event loop.

    ``/healthz`` (alive), ``/readyz`` (the upstream accepts a connection, and answers ``ready_path`` with 2xx
    when one is configured) and ``/metrics`` are served on ``admin_port``, never on the proxy port, so every
    path of the model server stays reachable through the proxy.

    Parameters
    ----------
    config : where to listen and what to proxy.
    producer : where captures go (``None``: captures are built and counted but not sent, for tests).
    registry : the sidecar's metrics registry, served on ``/metrics``.
    redact : applied to raw text before it is attached to a sampled payload.
    status : a line added to the ``/readyz`` answer (e.g. whether the Kafka producer is connected yet). It does
        not change readiness: the proxy serves, and spools events, while Kafka is away (fail-open).
    """

    def __init__(self, config: SidecarConfig, producer: EventProducer | None, registry: CollectorRegistry,
                 redact: Redactor | None = None, status: Callable[[], str] | None = None) -> None:
        self.config = config
        self.registry = registry
        self.metrics = sidecar_metrics(registry)
        self.metrics.connections_limit.set(config.max_connections)
        self.capturer = Capturer(config, self.metrics, redact)
        self._producer = producer
        self._status = status
        self._shared: Shared | None = None
        self._proxy: asyncio.Server | None = None
        self._admin: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._guard = admin_guard(config, registry)  # a non-loopback admin_host without a token: ConfigError

    async def start(self) -> None:
        """Listen on both ports (port 0 picks a free one: see :attr:`address`)."""
        loop = asyncio.get_running_loop()
        shared = self._shared = Shared(self.config, self.metrics, self.capturer, self._producer, loop)
        config = self.config
        try:
            self._proxy = await loop.create_server(lambda: Client(shared), config.listen_host, config.listen_port,
                                                   backlog=1024, reuse_address=True)
        except OSError as exc:  # in use, or an address this host does not have
            raise ConfigError(f"cannot listen on {config.listen_host}:{config.listen_port} (sidecar.listen_port): "
                              f"{exc.strerror or exc}") from exc
        try:
            self._admin = await asyncio.start_server(self._serve_admin, config.admin_host, config.admin_port,
                                                     reuse_address=True)
        except OSError as exc:
            self._proxy.close()
            raise ConfigError(f"cannot listen on {config.admin_host}:{config.admin_port} (sidecar.admin_port): "
                              f"{exc.strerror or exc}") from exc
        self._sweeper = loop.create_task(self._sweep())
        log.info("sidecar proxying %s:%d -> %s, admin on %s:%d", *self.address, self.config.upstream,
                 *self.admin_address)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the proxy listens on."""
        if self._proxy is None:
            raise RuntimeError("the sidecar is not started")
        host, port = self._proxy.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def admin_address(self) -> tuple[str, int]:
        """``(host, port)`` of the admin listener."""
        if self._admin is None:
            raise RuntimeError("the sidecar is not started")
        host, port = self._admin.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish for up to ``grace_s``, then cut what is left."""
        for server in (self._proxy, self._admin):
            if server is not None:
                server.close()
        shared = self._shared
        if shared is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace_s
            while any(c.flight is not None for c in shared.clients) and loop.time() < deadline:
                await asyncio.sleep(0.05)
            for client in list(shared.clients):
                if client.transport is not None:
                    client.transport.abort()
            shared.pool.close()
            shared.flush()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await asyncio.sleep(0)  # let the aborted transports report connection_lost

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            if self._shared is not None:
                self._shared.sweep()

    async def ready(self) -> tuple[bool, str]:
        """Whether the upstream is reachable (and ready, with ``ready_path``), and why not."""
        host, port = self.config.upstream_address
        timeout = self.config.connect_timeout_s
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            return False, f"upstream unreachable: {type(exc).__name__}"
        try:
            if self.config.ready_path is None:
                return True, "ready"
            writer.write(f"GET {self.config.ready_path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
                         .encode())
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status = parse_response_head(raw).status
            return (200 <= status < 300), f"upstream {self.config.ready_path} answered {status}"
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError) as exc:
            return False, f"upstream not ready: {type(exc).__name__}"
        finally:
            writer.close()

    async def _serve_admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.config.idle_timeout_s)
            head = parse_request_head(raw)
            path = head.target.split("?", 1)[0]
            probe = path in PROBE_PATHS and head.method in ("GET", "HEAD")
            refused = None if probe else self._guard.check([head.headers[b"authorization"]]
                                                           if b"authorization" in head.headers else [])
            if refused is not None:  # the token of sidecar.admin_token_file, missing or wrong (counted, not logged)
                out = simple_response(401, "Unauthorized", Guard.body(refused),
                                      extra=((b"www-authenticate", WWW_AUTHENTICATE.encode()),))
            elif head.method not in ("GET", "HEAD"):
                out = simple_response(405, "Method Not Allowed", b"GET only\n")
            elif path == "/healthz":
                out = simple_response(200, "OK", b"ok\n")
            elif path == "/readyz":
                ok, why = await self.ready()
                if self._status is not None:
                    why = f"{why}\n{self._status()}"
                out = simple_response(200 if ok else 503, "OK" if ok else "Service Unavailable", f"{why}\n".encode())
            elif path == "/metrics":
                out = simple_response(200, "OK", generate_latest(self.registry),
                                      content_type=CONTENT_TYPE_LATEST.encode())
            else:
                out = simple_response(404, "Not Found", b"admin paths: /healthz /readyz /metrics\n")
            writer.write(out)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError):
            pass  # a broken probe connection: nothing to answer
        finally:
            writer.close()


def admin_guard(config: SidecarConfig, registry: CollectorRegistry | None, warn: bool = True) -> Guard:
    """Who may use the admin listener (see :mod:`monitor.auth`): refusals are counted in
    ``inferwatch_sidecar_admin_unauthorized_total{reason}`` on ``registry`` (``None``: a check only); a non-loopback
    ``admin_host`` with neither ``admin_token_file`` nor ``allow_unauthenticated`` raises :class:`ConfigError`."""
    guard = listener_guard(config.admin_host, config.admin_token_file, config.allow_unauthenticated,
                           host_key="sidecar.admin_host", token_key="sidecar.admin_token_file",
                           allow_key="sidecar.allow_unauthenticated", token_flag="--admin-token-file",
                           what="the sidecar's admin listener (/metrics)", warn=warn)
    if registry is None:
        return guard
    counter = refusal_counter(registry, "inferwatch_sidecar_admin_unauthorized_total",
                              "Admin requests refused 401 for want of the bearer token (sidecar.admin_token_file), "
                              "by reason: missing, malformed, wrong.")
    return Guard(guard.token, counter)


async def serve(config: SidecarConfig, producer: EventProducer | None, registry: CollectorRegistry,
                stop: threading.Event | asyncio.Event, *, redact: Redactor | None = None,
                on_started: Callable[[Sidecar], None] | None = None, status: Callable[[], str] | None = None) -> None:
    """Run the sidecar on the running loop until ``stop`` is set."""
    sidecar = Sidecar(config, producer, registry, redact, status)
    await sidecar.start()
    try:
        if on_started is not None:
            on_started(sidecar)
        if isinstance(stop, asyncio.Event):
            await stop.wait()
        else:
            while not stop.is_set():
                await asyncio.sleep(0.1)
    finally:
        await sidecar.close()


def run_sidecar(config: SidecarConfig, producer: EventProducer | None, registry: CollectorRegistry,
                stop: threading.Event | asyncio.Event, *, redact: Redactor | None = None,
                on_started: Callable[[Sidecar], None] | None = None, status: Callable[[], str] | None = None) -> None:
    """Run the sidecar in this thread, on a new event loop, until ``stop`` is set; then stop cleanly.

    The producer is not closed: its owner flushes and closes it after this returns. An ``asyncio.Event``
    ``stop`` must be set from the sidecar's own loop (e.g. by a signal handler installed in ``on_started``).
    The loop is uvloop's when it is installed (a core dependency outside Windows): it roughly halves the
    proxy's CPU time per request; without it, asyncio's own loop is used and a line says so.
    """
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(config, producer, registry, stop, redact=redact, on_started=on_started, status=status))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when it can be imported, else asyncio's default (logged once per call)."""
    try:
        import uvloop  # imported here: the sidecar's only user, and optional on platforms without wheels
    except ImportError:
        log.info("uvloop is not installed: the sidecar runs on asyncio's own event loop (slower)")
        return asyncio.new_event_loop
    return uvloop.new_event_loop


__all__ = ["Sidecar", "admin_guard", "run_sidecar", "serve"]
