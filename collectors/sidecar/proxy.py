"""The reverse proxy: asyncio protocols on both sides, a bounded pool of kept-alive upstream connections.

Every byte the client sends is forwarded to the upstream unchanged, and every byte the upstream answers is
forwarded to the client as it arrives (a server-sent-event stream reaches the client chunk by chunk), with one
exception each way: an ``x-request-id`` field is added to the request head when the client sent none, and to
the response head when the upstream did not echo it. The proxy only finds where messages end; for the captured
routes it also keeps the decoded bodies, up to the capture cap, for the capturer (which runs off the loop).

Failure handling, each case counted by reason: an unreachable upstream is answered 502, a connect or response
head timeout 504, a reset before the response head 502; a reset, an early close or a stall (longer than
``idle_timeout_s``) after the head cuts the client connection with a TCP reset, as the status line has already
gone out (a body that ends at the close must not end cleanly when the upstream's did not). A request body with
broken chunked framing is answered 400 and the bytes after the break are never forwarded. A client that
disconnects closes its upstream connection. Buffers are bounded: heads by ``max_head_bytes``, bodies in flight
by the transports' write-buffer limits (reading from one side pauses while the other side cannot keep up).
Not supported: ``101 Switching Protocols`` (upgrades are refused by closing the connection after the head), and
retrying a request whose pooled upstream connection was closed by the upstream at the same moment (502).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Final

from prometheus_client import Counter, Histogram

from collectors.producer import EventProducer
from collectors.sidecar.capture import Capturer, Exchange, ExchangeBatch, Route, route_of
from collectors.sidecar.http import (
    HOP_BY_HOP,
    NO_BODY,
    ChunkedDecoder,
    Framing,
    HttpError,
    RequestHead,
    ResponseHead,
    parse_request_head,
    parse_response_head,
    response_framing,
    simple_response,
    with_header,
    without_hop_by_hop,
)
from collectors.sidecar.metrics import ROUTES, STATUS_CLASSES, SidecarMetrics
from monitor.config import SidecarConfig

log = logging.getLogger(__name__)

_REQUEST_ID: Final = re.compile(rb"[\x21-\x7e]{1,128}")
_X_REQUEST_ID: Final = b"x-request-id"
_BUFFER_LIMIT: Final = 256 * 1024  # pipelined/early client bytes kept before reading from the client pauses
_HANDOFF_EXCHANGES: Final = 256  # exchanges handed to the producer at once, at most ...
_HANDOFF_S: Final = 0.01  # ... and at the latest this long after the first of them ended

#: ``callback(connection or None, failure reason) -> accepted``.
Waiter = Callable[["Upstream | None", str], bool]


class Shared:
    """What every connection of one proxy shares: config, pool, metrics, capturer and producer."""

    def __init__(self, config: SidecarConfig, metrics: SidecarMetrics, capturer: Capturer,
                 producer: EventProducer | None, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.metrics = metrics
        self.capturer = capturer
        self.producer = producer
        self.loop = loop
        self.pool = UpstreamPool(config, metrics, loop)
        self.clients: set[Client] = set()
        # label lookups cost more than the increments: resolve them once
        self.requests: dict[tuple[str, str], Counter] = {
            (r, s): metrics.requests.labels(route=r, status=s) for r in ROUTES for s in STATUS_CLASSES}
        self.seconds: dict[str, Histogram] = {r: metrics.request_seconds.labels(route=r) for r in ROUTES}
        self._handoff: list[Exchange] = []
        self._handoff_timer: asyncio.TimerHandle | None = None

    def submit(self, exchange: Exchange) -> None:
        """Queue an exchange for capture; they reach the producer in batches (never waited on)."""
        if self.producer is None:
            self.capturer.capture(exchange)
            return
        self._handoff.append(exchange)
        if len(self._handoff) >= _HANDOFF_EXCHANGES:
            self.flush()
        elif self._handoff_timer is None:
            self._handoff_timer = self.loop.call_later(_HANDOFF_S, self.flush)

    def flush(self) -> None:
        """Hand the queued exchanges to the producer now."""
        if self._handoff_timer is not None:
            self._handoff_timer.cancel()
            self._handoff_timer = None
        batch, self._handoff = self._handoff, []
        if batch and self.producer is not None and not self.producer.submit(ExchangeBatch(self.capturer,
                                                                                          tuple(batch))):
            for exchange in batch:
                self.capturer.skip(exchange.route, "queue_full")

    def sweep(self) -> None:
        """Close idle keep-alive connections and cut stalled ones (called about once a second)."""
        now = self.loop.time()
        for client in list(self.clients):
            client.sweep(now)


class Upstream(asyncio.Protocol):
    """One connection to the model server; while a request uses it, its bytes go to that :class:`Client`."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.client: Client | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("the upstream transport must be a stream transport")
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.client is not None:
            self.client.upstream_data(data)
        else:  # bytes nobody asked for: the connection cannot be trusted any more
            self.pool.discard(self)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        client, self.client = self.client, None
        if client is not None:
            client.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.set_paused(upstream=True)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.set_paused(upstream=False)


class UpstreamPool:
    """At most ``upstream_pool_size`` upstream connections; idle ones are reused newest first."""

    def __init__(self, config: SidecarConfig, metrics: SidecarMetrics, loop: asyncio.AbstractEventLoop) -> None:
        self._host, self._port = config.upstream_address
        self._size = config.upstream_pool_size
        self._timeout = config.connect_timeout_s
        self._metrics = metrics
        self._loop = loop
        self._idle: list[Upstream] = []
        self._open = 0
        self._waiters: deque[Waiter] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.upstream_pool_size.set(self._size)

    def acquire(self, waiter: Waiter) -> None:
        """Call ``waiter`` with a free connection now, after one is opened, or when one is released."""
        while self._idle:
            up = self._idle.pop()
            if not up.closed:
                if not waiter(up, ""):
                    self._idle.append(up)
                return
        if self._open < self._size:
            self._connect(waiter)
        else:
            self._waiters.append(waiter)
            self._metrics.upstream_waiting.set(len(self._waiters))

    def release(self, up: Upstream) -> None:
        """Give back a connection whose last response was read completely."""
        up.client = None
        if up.closed:
            return
        if up.transport is not None and not up.transport.is_reading():
            up.transport.resume_reading()
        while self._waiters:
            waiter = self._waiters.popleft()
            self._metrics.upstream_waiting.set(len(self._waiters))
            if waiter(up, ""):
                return
        self._idle.append(up)

    def discard(self, up: Upstream) -> None:
        """Close a connection that must not be reused."""
        up.client = None
        if not up.closed and up.transport is not None:
            up.closed = True
            up.transport.abort()

    def lost(self, up: Upstream) -> None:
        if up in self._idle:
            self._idle.remove(up)
        self._open -= 1
        self._metrics.upstream_connections.set(self._open)
        if self._waiters and self._open < self._size:
            waiter = self._waiters.popleft()
            self._metrics.upstream_waiting.set(len(self._waiters))
            self._connect(waiter)

    def close(self) -> None:
        for up in list(self._idle):
            self.discard(up)
        for task in self._tasks:
            task.cancel()

    def _connect(self, waiter: Waiter) -> None:
        self._open += 1
        self._metrics.upstream_connections.set(self._open)
        task = self._loop.create_task(self._open_connection(waiter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_connection(self, waiter: Waiter) -> None:
        try:
            _, up = await asyncio.wait_for(
                self._loop.create_connection(lambda: Upstream(self), self._host, self._port), self._timeout)
        except (TimeoutError, OSError) as exc:
            self._open -= 1
            self._metrics.upstream_connections.set(self._open)
            waiter(None, "connect_timeout" if isinstance(exc, TimeoutError) else "connect_refused")
            return
        if not waiter(up, ""):
            self.release(up)


class Flight:
    """One request in flight on a client connection, and what has been seen of its response."""

    __slots__ = ("capture_body", "capture_size", "chunks", "event_stream", "framing", "head", "pieces", "remaining",
                 "request_body", "request_done", "request_id", "request_size", "response", "response_buffer",
                 "response_chunks", "response_remaining", "reusable", "route", "sent", "skip", "started", "timer",
                 "upstream", "wall")

    def __init__(self, head: RequestHead, route: Route, request_id: bytes, started: float) -> None:
        self.head = head
        self.route = route
        self.request_id = request_id
        self.started = started
        self.wall = time.time()
        self.upstream: Upstream | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.request_done = head.framing.kind == "none"
        self.remaining = head.framing.length
        self.chunks = ChunkedDecoder() if head.framing.kind == "chunked" else None
        self.request_body: list[bytes] | None = None
        self.request_size = 0
        self.skip: str | None = None
        self.response: ResponseHead | None = None
        self.response_buffer = b""
        self.framing: Framing = NO_BODY
        self.response_remaining = 0
        self.response_chunks: ChunkedDecoder | None = None
        self.capture_body: list[bytes] | None = None
        self.capture_size = 0
        self.pieces: list[tuple[float, int]] = []
        self.event_stream = False
        self.sent = False
        self.reusable = True


class Client(asyncio.Protocol):
    """One client connection: reads requests one at a time and relays each to an upstream connection."""

    def __init__(self, shared: Shared) -> None:
        self.s = shared
        self.transport: asyncio.Transport | None = None
        self.flight: Flight | None = None
        self.buffer = bytearray()
        self.last = shared.loop.time()
        self.closed = False
        self._paused_buffer = False
        self._paused_upstream = False
        self._paused_writing = False

    # -- client side --------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("the client transport must be a stream transport")
        self.transport = transport
        if len(self.s.clients) >= self.s.config.max_connections:
            self.s.metrics.client_errors.labels(reason="too_many_connections").inc()
            transport.write(simple_response(503, "Service Unavailable", b"sidecar: too many connections\n"))
            transport.close()
            self.closed = True
            return
        self.s.clients.add(self)
        self.s.metrics.connections.set(len(self.s.clients))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last = self.s.loop.time()
        flight = self.flight
        if flight is None:
            self.buffer += data
            self._next_request()
        elif flight.upstream is not None and not flight.request_done:
            part = self._request_body(flight, data)
            if part and flight.upstream.transport is not None:
                flight.upstream.transport.write(part)
        else:  # waiting for an upstream connection, or pipelined behind the current request
            self.buffer += data
            if len(self.buffer) > _BUFFER_LIMIT:
                self.set_paused(buffer=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.s.clients:
            self.s.clients.discard(self)
            self.s.metrics.connections.set(len(self.s.clients))
        flight, self.flight = self.flight, None
        if flight is not None:  # gone before its answer was complete
            self.s.metrics.client_errors.labels(reason="disconnect").inc()
            self._end(flight, 499, complete=False)
            if flight.upstream is not None:
                self.s.pool.discard(flight.upstream)

    def pause_writing(self) -> None:
        self._paused_writing = True
        if self.flight is not None and self.flight.upstream is not None and self.flight.upstream.transport:
            self.flight.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self.flight is not None and self.flight.upstream is not None and self.flight.upstream.transport:
            self.flight.upstream.transport.resume_reading()

    def set_paused(self, *, buffer: bool | None = None, upstream: bool | None = None) -> None:
        """Pause reading from the client while its bytes cannot go anywhere; resume when they can."""
        if buffer is not None:
            self._paused_buffer = buffer
        if upstream is not None:
            self._paused_upstream = upstream
        if self.transport is None or self.closed:
            return
        pause = self._paused_buffer or self._paused_upstream
        if pause and self.transport.is_reading():
            self.transport.pause_reading()
        elif not pause and not self.transport.is_reading():
            self.transport.resume_reading()

    def sweep(self, now: float) -> None:
        idle = self.s.config.idle_timeout_s
        if self.closed or now - self.last < idle or self.transport is None:
            return
        flight = self.flight
        if flight is None:
            if self.buffer:  # a head that never finished
                self.s.metrics.client_errors.labels(reason="idle_timeout").inc()
                self.transport.write(simple_response(408, "Request Timeout", b"sidecar: request head timed out\n"))
            self._close()
        elif flight.upstream is None:
            self._fail(503, "Service Unavailable", b"sidecar: no upstream connection became free\n", None)
        elif not flight.request_done:
            self.s.metrics.client_errors.labels(reason="idle_timeout").inc()
            self._fail(408, "Request Timeout", b"sidecar: request body timed out\n", None, cut="request_timeout")
        elif flight.response is not None:
            self._fail(504, "Gateway Timeout", b"sidecar: upstream stalled\n", "idle_timeout", cut="upstream_stalled")

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _next_request(self) -> None:
        while self.flight is None and self.buffer and not self.closed:
            end = self.buffer.find(b"\r\n\r\n", 0, self.s.config.max_head_bytes)
            if end < 0:
                if len(self.buffer) >= self.s.config.max_head_bytes:
                    self.s.metrics.client_errors.labels(reason="head_too_large").inc()
                    self._reply_and_close(431, "Request Header Fields Too Large", b"sidecar: head too large\n")
                return
            raw = bytes(self.buffer[:end + 4])
            del self.buffer[:end + 4]
            try:
                head = parse_request_head(raw)
            except HttpError as exc:
                self.s.metrics.client_errors.labels(reason="bad_request").inc()
                self._reply_and_close(400, "Bad Request", f"sidecar: {exc}\n".encode())
                return
            route = route_of(head.method, head.target)
            given = head.headers.get(_X_REQUEST_ID)
            request_id = given if given is not None else uuid.uuid4().hex.encode()
            flight = self.flight = Flight(head, route, request_id, self.s.loop.time())
            if route != "other":
                if given is not None and not _REQUEST_ID.fullmatch(given):
                    flight.skip = "malformed"
                elif head.framing.kind == "length" and head.framing.length > self.s.config.capture_max_bytes:
                    flight.skip = "too_large"
                else:
                    flight.request_body = []
            if len(self.buffer) <= _BUFFER_LIMIT:
                self.set_paused(buffer=False)
            self.s.pool.acquire(self._attach)

    def _reply_and_close(self, status: int, reason: str, body: bytes) -> None:
        if self.transport is not None:
            self.transport.write(simple_response(status, reason, body))
        self._close()

    def _attach(self, up: Upstream | None, failure: str) -> bool:
        """The pool's answer: a connection to send the current request on, or why there is none."""
        flight = self.flight
        if flight is None or self.closed or flight.upstream is not None:
            return False
        if up is None:
            if failure == "connect_timeout":
                self._fail(504, "Gateway Timeout", b"sidecar: upstream connect timed out\n", failure)
            else:
                self._fail(502, "Bad Gateway", b"sidecar: upstream unreachable\n", failure)
            return True
        if up.transport is None:
            return False
        flight.upstream = up
        up.client = self
        out = flight.head.raw
        if not HOP_BY_HOP.isdisjoint(flight.head.headers):
            out = without_hop_by_hop(out, flight.head.headers)
        if _X_REQUEST_ID not in flight.head.headers:
            out = with_header(out, _X_REQUEST_ID, flight.request_id)
        if not flight.request_done and self.buffer:
            pending = bytes(self.buffer)
            self.buffer.clear()
            out += self._request_body(flight, pending)
            if self.flight is not flight:  # the body was invalid and the request already answered
                return True
        flight.timer = self.s.loop.call_later(self.s.config.response_timeout_s, self._response_timeout, flight)
        up.transport.write(out)
        if self._paused_writing:
            up.transport.pause_reading()
        return True

    def _request_body(self, flight: Flight, data: bytes) -> bytes:
        """The part of ``data`` that belongs to the request body (the rest is the next request)."""
        body = flight.request_body
        if flight.chunks is not None:
            before = len(body) if body is not None else 0
            try:
                take = flight.chunks.feed(data, body)
            except HttpError as exc:  # never forwarded: the upstream connection is discarded
                self.s.metrics.client_errors.labels(reason="bad_chunk").inc()
                self._fail(400, "Bad Request", f"sidecar: invalid chunked request body: {exc}\n".encode(), None,
                           cut="bad_request")
                return b""
            flight.request_done = flight.chunks.done
            if body is not None:
                flight.request_size += sum(len(b) for b in body[before:])
        else:
            take = min(flight.remaining, len(data))
            flight.remaining -= take
            flight.request_done = flight.remaining == 0
            if body is not None:
                body.append(data[:take] if take < len(data) else data)
                flight.request_size += take
        if body is not None and flight.request_size > self.s.config.capture_max_bytes:
            flight.request_body, flight.skip = None, "too_large"
        if take == len(data):
            return data
        self.buffer += data[take:]
        return data[:take]

    # -- upstream side ------------------------------------------------------------------------------------------
    def upstream_data(self, data: bytes) -> None:
        flight = self.flight
        if flight is None or self.transport is None:
            return
        self.last = self.s.loop.time()
        if flight.response is None:
            data = self._response_head(flight, data)
            if flight.response is None:
                return
            head = flight.response.raw
            if _X_REQUEST_ID not in flight.response.headers:
                head = with_header(head, _X_REQUEST_ID, flight.request_id)
            flight.sent = True
            if data:
                take, done = self._response_body(flight, data)
                self.transport.write(head + (data if take == len(data) else data[:take]))
            else:
                done = flight.framing.kind == "none"
                self.transport.write(head)
        else:
            take, done = self._response_body(flight, data)
            self.transport.write(data if take == len(data) else data[:take])
        if done:
            self._finish(flight)

    def _response_head(self, flight: Flight, data: bytes) -> bytes:
        """Parse the response head once it is complete; return the bytes after it (body so far)."""
        buffered = flight.response_buffer + data
        end = buffered.find(b"\r\n\r\n")
        if end < 0:
            if len(buffered) > self.s.config.max_head_bytes:
                self._fail(502, "Bad Gateway", b"sidecar: upstream response head too large\n", "bad_response")
            else:
                flight.response_buffer = buffered
            return b""
        flight.response_buffer = b""
        try:
            head = parse_response_head(buffered[:end + 4])
        except HttpError:
            self._fail(502, "Bad Gateway", b"sidecar: invalid upstream response\n", "bad_response")
            return b""
        rest = buffered[end + 4:]
        if 100 <= head.status < 200:
            if head.status == 101:  # upgrades are not relayed
                self._fail(502, "Bad Gateway", b"sidecar: protocol upgrades are not supported\n", "bad_response")
                return b""
            if self.transport is not None:
                self.transport.write(head.raw)
            return self._response_head(flight, rest) if rest else b""
        if flight.timer is not None:
            flight.timer.cancel()
            flight.timer = None
        flight.response = head
        flight.framing = response_framing(head, flight.head.method)
        flight.response_remaining = flight.framing.length
        flight.response_chunks = ChunkedDecoder() if flight.framing.kind == "chunked" else None
        if flight.route != "other" and flight.skip is None and 200 <= head.status < 300:
            if head.length is not None and head.length > self.s.config.capture_max_bytes:
                flight.skip = "too_large"
            else:
                flight.capture_body = []
                flight.event_stream = head.headers.get(b"content-type", b"").startswith(b"text/event-stream")
        return rest

    def _response_body(self, flight: Flight, data: bytes) -> tuple[int, bool]:
        """How many bytes of ``data`` belong to the response body, and whether it is now complete."""
        kind = flight.framing.kind
        body = flight.capture_body
        if kind == "length":
            take = min(flight.response_remaining, len(data))
            flight.response_remaining -= take
            if body is not None:
                body.append(data if take == len(data) else data[:take])
                flight.capture_size += take
            done = flight.response_remaining == 0
        elif kind == "chunked" and flight.response_chunks is not None:
            before = len(body) if body is not None else 0
            try:
                take = flight.response_chunks.feed(data, body)
            except HttpError:
                self.s.metrics.upstream_errors.labels(reason="bad_response").inc()
                flight.reusable, flight.capture_body, flight.skip = False, None, "incomplete"
                flight.framing = Framing("close")  # relay the rest as it comes, then close
                return len(data), False
            done = flight.response_chunks.done
            if body is not None:
                flight.capture_size += sum(len(b) for b in body[before:])
        elif kind == "close":
            take = len(data)
            if body is not None:
                body.append(data)
                flight.capture_size += take
            done = False
        else:
            take, done = 0, True
        if take < len(data):  # bytes beyond the declared body: do not reuse this connection
            flight.reusable = False
        if body is not None:
            if flight.capture_size > self.s.config.capture_max_bytes:
                flight.capture_body, flight.skip = None, "too_large"
            elif flight.event_stream:
                flight.pieces.append((self.s.loop.time(), flight.capture_size))
        return take, done

    def upstream_lost(self, exc: Exception | None) -> None:
        """The upstream connection ended: cleanly (``exc`` None: EOF) or not (a reset, an I/O error)."""
        flight = self.flight
        if flight is None:
            return
        flight.upstream = None
        if flight.response is not None and flight.framing.kind == "close" and exc is None:
            flight.reusable = False  # a clean close is how this body ends
            self._finish(flight)
        else:  # before the head: answered 502; after it: the client connection is reset the same way
            self._fail(502, "Bad Gateway", b"sidecar: upstream closed the connection\n", "reset",
                       cut="upstream_closed" if exc is None else "upstream_reset")

    def _response_timeout(self, flight: Flight) -> None:
        if flight is self.flight and flight.response is None:
            flight.timer = None
            self._fail(504, "Gateway Timeout", b"sidecar: upstream response timed out\n", "response_timeout")

    # -- ends ---------------------------------------------------------------------------------------------------
    def _fail(self, status: int, reason: str, body: bytes, upstream_reason: str | None, *,
              cut: str = "upstream_reset") -> None:
        """End the current request with an error: a response of our own if nothing was sent yet, else a cut.

        A cut resets the client connection (RST, not a clean close), so that a client reading a body that ends
        at the close cannot take the truncated body for a complete one; it is counted by ``cut`` reason.
        """
        flight, self.flight = self.flight, None
        if flight is None:
            return
        if upstream_reason is not None:
            self.s.metrics.upstream_errors.labels(reason=upstream_reason).inc()
        if flight.timer is not None:
            flight.timer.cancel()
        if flight.upstream is not None:
            self.s.pool.discard(flight.upstream)
        self._end(flight, status if not flight.sent else 599, complete=False)
        self.closed = True
        if self.transport is not None:
            if flight.sent:
                self.s.metrics.responses_cut.labels(reason=cut).inc()
                _reset(self.transport)
            else:
                self.transport.write(simple_response(status, reason, body,
                                                     extra=((_X_REQUEST_ID, flight.request_id),)))
                self.transport.close()

    def _finish(self, flight: Flight) -> None:
        """The response is complete: account for it, recycle the upstream connection, take the next request."""
        self.flight = None
        if flight.timer is not None:
            flight.timer.cancel()
        response = flight.response
        status = response.status if response is not None else 502
        keep = (response is not None and response.keep_alive and flight.framing.kind != "close"
                and flight.request_done and flight.reusable)
        up = flight.upstream
        if up is not None:
            if keep:
                self.s.pool.release(up)
            else:
                self.s.pool.discard(up)
        self._end(flight, status, complete=flight.request_done)
        if not (keep and flight.head.keep_alive):
            self._close()
            return
        self.set_paused(buffer=False)
        if self.buffer:
            self._next_request()

    def _end(self, flight: Flight, status: int, *, complete: bool) -> None:
        """Metrics for one ended request, and its capture handed to the producer (never waited on)."""
        s = self.s
        finished = s.loop.time()
        s.requests[flight.route, f"{min(status // 100, 5)}xx"].inc()
        s.seconds[flight.route].observe(finished - flight.started)
        if flight.route == "other":
            return
        if flight.skip is None:
            if not complete:
                flight.skip = "incomplete"
            elif not 200 <= status < 300:
                flight.skip = "upstream_status"
        if flight.skip is not None or flight.request_body is None or flight.capture_body is None:
            s.capturer.skip(flight.route, flight.skip or "incomplete")
            return
        exchange = Exchange(route=flight.route, path=flight.head.target, request_id=flight.request_id.decode(),
                            time=flight.wall, request_body=b"".join(flight.request_body), status=status,
                            response_body=b"".join(flight.capture_body), event_stream=flight.event_stream,
                            pieces=flight.pieces, started=flight.started, finished=finished)
        s.submit(exchange)


def _reset(transport: asyncio.Transport) -> None:
    """Abort with a TCP reset (SO_LINGER 0) rather than a FIN, which a client could take for a clean end."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


__all__ = ["Client", "Shared", "Upstream", "UpstreamPool"]
