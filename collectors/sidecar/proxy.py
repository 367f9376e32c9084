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
WebSocket: a request with ``Upgrade: websocket`` and ``Connection: Upgrade`` keeps those two fields on its way
upstream (they are hop-by-hop, and dropped from every other request). When the upstream answers ``101 Switching
Protocols``, the 101 head is relayed and the two connections become a tunnel: bytes are spliced both ways
unchanged, with the same backpressure and idle timeout, until either side closes, which closes the other (after
what it still has to write). The upstream connection leaves the pool for good. An upgrade is counted as route
``other``, status ``1xx``, when its 101 is relayed, and never captured. An upstream that answers an upgrade
request with anything else is relayed as a normal response. Other upgrades (``h2c``) lose their ``Upgrade``
field, so the upstream answers them as plain requests; a 101 to a request that did not ask for it is a 502.
Not supported: retrying a request whose pooled upstream connection was closed by the upstream at the same moment
(502).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Final, cast

from prometheus_client import Counter, Histogram

from collectors.producer import EventProducer
from collectors.sidecar.capture import Capturer, Exchange, ExchangeBatch, Route, route_of
from collectors.sidecar.http import (
    HOP_BY_HOP,
    NO_BODY,
    UNTIL_CLOSE,
    UPGRADE_FIELDS,
    ChunkedDecoder,
    Framing,
    HttpError,
    RequestHead,
    ResponseHead,
    is_websocket_upgrade,
    parse_request_head,
    parse_response_head,
    response_framing,
    simple_response,
    with_header,
    without_hop_by_hop,
)
from collectors.sidecar.metrics import ROUTES, STATUS_CLASSES, SidecarMetrics
from monitor.config import SidecarConfig
from monitor.events import InferenceEvent

log = logging.getLogger(__name__)

_REQUEST_ID: Final = re.compile(rb"[\x21-\x7e]{1,128}")
_X_REQUEST_ID: Final = b"x-request-id"
_BUFFER_LIMIT: Final = 256 * 1024  # pipelined/early client bytes kept before reading from the client pauses
_HANDOFF_EXCHANGES: Final = 256  # exchanges handed to the producer at once, at most ...
_HANDOFF_S: Final = 0.01  # ... and at the latest this long after the first of them ended
#: A response timeout at most this long gets its timer when the request goes upstream; a longer one only when the
#: sweep (every 0.5 s) finds its deadline this close, so that most requests (answered well before) never make one.
_TIMER_HORIZON_S: Final = 1.0
#: Durations and arrival times: the loop's clock is only for timers and idle sweeps, as uvloop's ticks in
#: milliseconds (once per loop iteration), too coarse for a latency histogram or a time to first token.
_monotonic: Final = time.monotonic
_STATUS_CLASS: Final = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")  # by status // 100, 5xx beyond

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
        self.id_prefix = os.urandom(8).hex().encode()  # request ids: this process's random prefix + a counter
        self.ids = itertools.count()
        self._handoff: list[Ended] = []
        self._handoff_timer: asyncio.TimerHandle | None = None

    def new_request_id(self) -> bytes:
        """32 hex digits, unique: cheaper than a uuid4 per request (no system call)."""
        return b"%s%016x" % (self.id_prefix, next(self.ids))

    def submit(self, ended: Ended) -> None:
        """Queue an ended request for capture; they reach the producer in batches (never waited on)."""
        if self.producer is None:
            self.capturer.capture(ended.exchange())
            return
        self._handoff.append(ended)
        if len(self._handoff) >= _HANDOFF_EXCHANGES:
            self.flush()
        elif self._handoff_timer is None:
            self._handoff_timer = self.loop.call_later(_HANDOFF_S, self.flush)

    def flush(self) -> None:
        """Hand the queued requests to the producer now."""
        if self._handoff_timer is not None:
            self._handoff_timer.cancel()
            self._handoff_timer = None
        batch, self._handoff = self._handoff, []
        if batch and self.producer is not None and not self.producer.submit(EndedBatch(self.capturer, batch)):
            for ended in batch:
                self.capturer.skip(ended.flight.route, "queue_full")

    def sweep(self) -> None:
        """Close idle keep-alive connections and cut stalled ones (called about once a second)."""
        now = self.loop.time()
        for client in list(self.clients):
            client.sweep(now)


class Ended:
    """A request of a captured route that ended; its :class:`Exchange` is built on the producer's thread."""

    __slots__ = ("finished", "flight", "status")

    def __init__(self, flight: Flight, status: int, finished: float) -> None:
        self.flight = flight  # no longer touched by the loop
        self.status = status
        self.finished = finished

    def exchange(self) -> Exchange:
        f = self.flight
        return Exchange(route=f.route, path=f.head.target, request_id=f.request_id.decode(), time=f.wall,
                        request_body=b"".join(f.request_body or ()), status=self.status,
                        response_body=b"".join(f.capture_body or ()), event_stream=f.event_stream,
                        pieces=f.pieces, started=f.started, finished=self.finished)


class EndedBatch:
    """Ended requests as one :class:`~collectors.producer.Capture`: exchanges and events made off the loop."""

    __slots__ = ("capturer", "ended")

    def __init__(self, capturer: Capturer, ended: list[Ended]) -> None:
        self.capturer = capturer
        self.ended = ended

    def __len__(self) -> int:
        return len(self.ended)

    def events(self) -> list[InferenceEvent]:
        return ExchangeBatch(self.capturer, tuple(e.exchange() for e in self.ended)).events()


class Upstream(asyncio.Protocol):
    """One connection to the model server; while a request uses it, its bytes go to that :class:`Client`."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.client: Client | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.pooled = True  # False once it carries a WebSocket tunnel (see UpstreamPool.detach)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if self.client is not None:
            self.client.upstream_data(data)
        else:  # bytes nobody asked for: the connection cannot be trusted any more
            self.pool.discard(self)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pooled:
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

    def detach(self, up: Upstream) -> None:
        """A connection that became a WebSocket tunnel: no longer the pool's (it frees a place in it)."""
        up.pooled = False
        self.lost(up)

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

    __slots__ = ("capture_body", "capture_size", "chunks", "deadline", "event_stream", "framing", "head", "pieces",
                 "remaining", "request_body", "request_done", "request_id", "request_size", "response",
                 "response_buffer", "response_chunks", "response_remaining", "reusable", "route", "sent", "skip",
                 "started", "timer", "upgrade", "upstream", "wall")

    def __init__(self, head: RequestHead, route: Route, request_id: bytes, started: float) -> None:
        self.head = head
        self.route = route
        self.request_id = request_id
        self.started = started
        self.wall = time.time()
        self.upstream: Upstream | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0  # for the response head, once the request went upstream
        self.upgrade = False  # a WebSocket upgrade request
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
        self.tunnel: Upstream | None = None  # after a WebSocket upgrade: bytes go there unparsed
        self.buffer = bytearray()
        self.last = shared.loop.time()
        self.closed = False
        self._paused_buffer = False
        self._paused_upstream = False
        self._paused_writing = False

    # -- client side --------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport
        if len(self.s.clients) >= self.s.config.max_connections:
            self.s.metrics.client_errors.labels(reason="too_many_connections").inc()
            stream.write(simple_response(503, "Service Unavailable", b"sidecar: too many connections\n"))
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
            if self.tunnel is not None:
                if self.tunnel.transport is not None:
                    self.tunnel.transport.write(data)
                return
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
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:  # the upstream side of the tunnel is closed after what it still has to write
            tunnel.client = None
            if tunnel.transport is not None:
                tunnel.transport.close()
        flight, self.flight = self.flight, None
        if flight is not None:  # gone before its answer was complete
            self.s.metrics.client_errors.labels(reason="disconnect").inc()
            self._end(flight, 499, complete=False)
            if flight.upstream is not None:
                self.s.pool.discard(flight.upstream)

    def pause_writing(self) -> None:
        self._paused_writing = True
        up = self.flight.upstream if self.flight is not None else self.tunnel
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        up = self.flight.upstream if self.flight is not None else self.tunnel
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

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
        flight = self.flight
        if (flight is not None and flight.timer is None and flight.response is None and flight.upstream is not None
                and flight.deadline - now <= _TIMER_HORIZON_S):
            flight.timer = self.s.loop.call_at(flight.deadline, self._response_timeout, flight)
        idle = self.s.config.idle_timeout_s
        if self.closed or now - self.last < idle or self.transport is None:
            return
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
            upgrade = b"upgrade" in head.headers and is_websocket_upgrade(head.headers)
            route = "other" if upgrade else route_of(head.method, head.target)
            given = head.headers.get(_X_REQUEST_ID)
            request_id = given if given is not None else self.s.new_request_id()
            flight = self.flight = Flight(head, route, request_id, _monotonic())
            flight.upgrade = upgrade
            if route != "other":
                if given is not None and not _REQUEST_ID.fullmatch(given):
                    flight.skip = "malformed"
                elif head.framing.kind == "length" and head.framing.length > self.s.config.capture_max_bytes:
                    flight.skip = "too_large"
                else:
                    flight.request_body = []
            if self._paused_buffer and len(self.buffer) <= _BUFFER_LIMIT:
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
            out = without_hop_by_hop(out, flight.head.headers, UPGRADE_FIELDS if flight.upgrade else frozenset())
        if _X_REQUEST_ID not in flight.head.headers:
            out = with_header(out, _X_REQUEST_ID, flight.request_id)
        if not flight.request_done and self.buffer:
            pending = bytes(self.buffer)
            self.buffer.clear()
            out += self._request_body(flight, pending)
            if self.flight is not flight:  # the body was invalid and the request already answered
                return True
        timeout = self.s.config.response_timeout_s
        flight.deadline = self.s.loop.time() + timeout
        if timeout <= _TIMER_HORIZON_S:  # else armed by the sweep, if the answer is that late
            flight.timer = self.s.loop.call_at(flight.deadline, self._response_timeout, flight)
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
            if self.tunnel is not None and self.transport is not None:
                self.last = self.s.loop.time()
                self.transport.write(data)
            return
        self.last = self.s.loop.time()
        if flight.response is None:
            data = self._response_head(flight, data)
            if flight.response is None:
                return
            if flight.response.status == 101:
                self._switch(flight, data)
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
            if head.status == 101:
                if not flight.upgrade:  # a switch nobody asked for
                    self._fail(502, "Bad Gateway", b"sidecar: unrequested protocol switch\n", "bad_response")
                    return b""
                if flight.timer is not None:
                    flight.timer.cancel()
                    flight.timer = None
                flight.response = head
                return rest
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

    def _switch(self, flight: Flight, rest: bytes) -> None:
        """The upstream accepted a WebSocket upgrade: relay its 101 head, then splice the two connections."""
        up, response = flight.upstream, flight.response
        if up is None or response is None or self.transport is None or not flight.request_done:
            self._fail(502, "Bad Gateway", b"sidecar: protocol switch before the request ended\n", "bad_response")
            return
        head = response.raw
        if _X_REQUEST_ID not in response.headers:
            head = with_header(head, _X_REQUEST_ID, flight.request_id)
        flight.sent = True
        self.flight = None
        self.s.pool.detach(up)
        self.tunnel = up
        self._end(flight, 101, complete=True)  # route "other", counted 1xx, never captured
        self.transport.write(head + rest if rest else head)
        if self.buffer and up.transport is not None:  # bytes the client sent right after its request
            pending = bytes(self.buffer)
            self.buffer.clear()
            up.transport.write(pending)
        if self._paused_buffer:
            self.set_paused(buffer=False)
        if self._paused_writing and up.transport is not None:
            up.transport.pause_reading()

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
                flight.framing = UNTIL_CLOSE  # relay the rest as it comes, then close
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
                flight.pieces.append((_monotonic(), flight.capture_size))
        return take, done

    def upstream_lost(self, exc: Exception | None) -> None:
        """The upstream connection ended: cleanly (``exc`` None: EOF) or not (a reset, an I/O error)."""
        flight = self.flight
        if flight is None:
            if self.tunnel is not None:  # the upstream ended the tunnel: so does the client connection
                self.tunnel = None
                if exc is None:
                    self._close()  # after what is still to be written
                elif self.transport is not None:
                    self.closed = True
                    _reset(self.transport)
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
        if self._paused_buffer:
            self.set_paused(buffer=False)
        if self.buffer:
            self._next_request()

    def _end(self, flight: Flight, status: int, *, complete: bool) -> None:
        """Metrics for one ended request, and its capture handed to the producer (never waited on)."""
        s = self.s
        finished = _monotonic()
        s.requests[flight.route, _STATUS_CLASS[min(status // 100, 5)]].inc()
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
        s.submit(Ended(flight, status, finished))


def _reset(transport: asyncio.Transport) -> None:
    """Abort with a TCP reset (SO_LINGER 0) rather than a FIN, which a client could take for a clean end."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


__all__ = ["Client", "Shared", "Upstream", "UpstreamPool"]
