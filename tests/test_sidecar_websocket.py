"""WebSocket through the sidecar: the upgrade reaches a real WebSocket server (the `websockets` package), its 101 is
relayed and the connection is spliced both ways; an upstream that refuses the upgrade is relayed as a response; a
client that drops the tunnel closes its upstream side."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus

import pytest
from prometheus_client import CollectorRegistry

from collectors.sidecar import Sidecar, SidecarConfig
from tests.support import DEADLINE_S, sidecar_thread, wait_until

websockets_server = pytest.importorskip("websockets.asyncio.server")
websockets_client = pytest.importorskip("websockets.sync.client")


@dataclass
class EchoServer:
    """A WebSocket echo server on its own loop; ``/refuse`` is answered 403 instead of switching."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    port: int = 0
    opened: int = 0
    closed: int = 0
    upgrade_headers: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        started = threading.Event()

        async def listen() -> websockets_server.Server:
            return await websockets_server.serve(self._echo, "127.0.0.1", 0, max_size=None, compression=None,
                                                 process_request=self._check)

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.server = self.loop.run_until_complete(listen())
                self.port = self.server.sockets[0].getsockname()[1]
            finally:
                started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not started.wait(DEADLINE_S) or not self.port:
            raise RuntimeError("the WebSocket server did not start")

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(DEADLINE_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE_S)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.opened, self.closed

    def _check(self, connection: websockets_server.ServerConnection,
               request: websockets_server.Request) -> websockets_server.Response | None:
        self.upgrade_headers.append({k.lower(): v for k, v in request.headers.raw_items()})
        if request.path == "/refuse":
            return connection.respond(HTTPStatus.FORBIDDEN, "no WebSocket here\n")
        return None

    async def _echo(self, ws: websockets_server.ServerConnection) -> None:
        with self._lock:
            self.opened += 1
        try:
            async for message in ws:
                await ws.send(message)
        except Exception:  # an abrupt end of the connection ends the handler too
            pass
        finally:
            with self._lock:
                self.closed += 1


@dataclass
class Stack:
    upstream: EchoServer
    sidecar: Sidecar
    registry: CollectorRegistry

    @property
    def port(self) -> int:
        return self.sidecar.address[1]

    def requests(self, status: str) -> float:
        value = self.registry.get_sample_value("inferwatch_sidecar_requests_total",
                                               {"route": "other", "status": status})
        return value or 0.0


@pytest.fixture
def stack() -> Iterator[Stack]:
    upstream = EchoServer()
    upstream.start()
    config = SidecarConfig(upstream=f"http://127.0.0.1:{upstream.port}", listen_host="127.0.0.1", listen_port=0,
                           admin_host="127.0.0.1", admin_port=0, response_timeout_s=DEADLINE_S,
                           connect_timeout_s=DEADLINE_S)
    registry = CollectorRegistry()
    sidecar, stop, thread = sidecar_thread(config, None, registry)
    yield Stack(upstream, sidecar, registry)
    stop.set()
    thread.join(DEADLINE_S)
    upstream.stop()


def test_websocket_messages_pass_through_both_ways_and_close_cleanly(stack: Stack) -> None:
    big = os.urandom(1 << 20)
    with websockets_client.connect(f"ws://127.0.0.1:{stack.port}/chat", max_size=None, compression=None,
                                   open_timeout=DEADLINE_S, close_timeout=DEADLINE_S) as ws:
        assert ws.response is not None and ws.response.status_code == 101
        assert ws.response.headers.get("x-request-id")  # the proxy's own, as on every relayed response
        ws.send("hello")
        assert ws.recv(timeout=DEADLINE_S) == "hello"
        ws.send(b"\x00\x01\x02 binary")
        assert ws.recv(timeout=DEADLINE_S) == b"\x00\x01\x02 binary"
        ws.send(big)  # 1 MiB: more than the transports' write buffers, so backpressure both ways
        assert ws.recv(timeout=DEADLINE_S) == big
        for i in range(20):  # many small frames, possibly several in one TCP segment
            ws.send(f"m{i}")
        assert [ws.recv(timeout=DEADLINE_S) for _ in range(20)] == [f"m{i}" for i in range(20)]
    assert ws.close_code == 1000  # the close handshake went through the tunnel both ways
    headers = stack.upstream.upgrade_headers[-1]
    assert headers["upgrade"].lower() == "websocket" and "upgrade" in headers["connection"].lower()
    assert "x-request-id" in headers
    wait_until(lambda: stack.upstream.counts() == (1, 1), "the server side to see the close")
    assert stack.requests("1xx") == 1  # counted as route "other" when the 101 was relayed
    # the sidecar still proxies: a second WebSocket on a fresh connection
    with websockets_client.connect(f"ws://127.0.0.1:{stack.port}/again", open_timeout=DEADLINE_S) as ws:
        ws.send("again")
        assert ws.recv(timeout=DEADLINE_S) == "again"


def test_an_upgrade_the_upstream_refuses_is_relayed_as_a_response(stack: Stack) -> None:
    with pytest.raises(Exception) as raised:
        websockets_client.connect(f"ws://127.0.0.1:{stack.port}/refuse", open_timeout=DEADLINE_S)
    response = getattr(raised.value, "response", None)
    assert response is not None and response.status_code == 403, raised.value
    assert b"no WebSocket here" in response.body
    assert stack.requests("4xx") == 1 and stack.requests("1xx") == 0


def _handshake(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: model\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def test_a_client_that_drops_the_tunnel_closes_the_upstream_side(stack: Stack) -> None:
    sock = _handshake(stack.port, "/drop")
    wait_until(lambda: stack.upstream.counts()[0] == 1, "the server to open the WebSocket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset, no close frame
    wait_until(lambda: stack.upstream.counts() == (1, 1), "the server side of the tunnel to be closed")
    wait_until(lambda: stack.sidecar.metrics.connections._value.get() == 0, "the sidecar to drop the connection")


def test_a_client_that_half_closes_the_tunnel_closes_the_upstream_side(stack: Stack) -> None:
    sock = _handshake(stack.port, "/eof")
    wait_until(lambda: stack.upstream.counts()[0] == 1, "the server to open the WebSocket")
    sock.shutdown(socket.SHUT_WR)  # EOF, no close frame: the tunnel closes both ways
    wait_until(lambda: stack.upstream.counts() == (1, 1), "the server side of the tunnel to be closed")
    sock.settimeout(DEADLINE_S)
    while sock.recv(65536):  # whatever the server still had to say, then the end
        pass
    sock.close()
