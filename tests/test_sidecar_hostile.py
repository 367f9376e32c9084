"""The sidecar against hostile peers, on raw sockets: an upstream that resets mid-body, request bodies whose
chunked framing is broken (the request-smuggling shape). A real proxy, a real upstream that records every byte."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from collectors.sidecar import Sidecar, SidecarConfig, run_sidecar
from tests.support import wait_until

BODY_BYTES = 30_000


@dataclass
class Connection:
    """What one upstream connection received, and whether the proxy has closed it."""

    received: bytearray = field(default_factory=bytearray)
    ended: threading.Event = field(default_factory=threading.Event)


class RawUpstream:
    """A TCP server on 127.0.0.1 that records every byte of every connection and hands the connection to
    ``answer(sock, connection)`` once a request head has arrived (``None``: only record, never answer); from then
    on ``answer`` owns the socket (it reads more itself if it needs to)."""

    def __init__(self, answer: Callable[[socket.socket, Connection], None] | None) -> None:
        self.answer = answer
        self.connections: list[Connection] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            connection = Connection()
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(sock, connection), daemon=True).start()

    def _serve(self, sock: socket.socket, connection: Connection) -> None:
        try:
            while data := sock.recv(65536):
                connection.received += data
                if b"\r\n\r\n" in connection.received and self.answer is not None:
                    self.answer(sock, connection)
                    return
        except OSError:
            pass
        finally:
            connection.ended.set()
            sock.close()

    def received(self) -> bytes:
        return b"".join(bytes(c.received) for c in self.connections)

    def close(self) -> None:
        self.listener.close()


@dataclass
class Proxy:
    sidecar: Sidecar
    registry: CollectorRegistry

    @property
    def port(self) -> int:
        return self.sidecar.address[1]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def proxy_to() -> Iterator[Callable[[RawUpstream], Proxy]]:
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(upstream: RawUpstream) -> Proxy:
        config = SidecarConfig(upstream=f"http://127.0.0.1:{upstream.port}", listen_host="127.0.0.1", listen_port=0,
                               admin_host="127.0.0.1", admin_port=0, connect_timeout_s=5.0)
        registry, stop, holder = CollectorRegistry(), threading.Event(), list[Sidecar]()
        thread = threading.Thread(target=run_sidecar, args=(config, None, registry, stop),
                                  kwargs={"on_started": holder.append}, daemon=True)
        thread.start()
        stops.append((stop, thread))
        wait_until(lambda: holder, "the sidecar to start")
        return Proxy(holder[0], registry)

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(30)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            raise AssertionError(f"connection ended after {len(out)} of {n} bytes")
        out += data
    return out


# -- defect 13: a reset mid-body on a close-delimited response must reach the client as a reset ---------------


@pytest.mark.parametrize("ending", ["reset", "close"])
def test_a_close_delimited_body_cut_by_an_upstream_reset_resets_the_client_too(
        proxy_to: Callable[[RawUpstream], Proxy], ending: str) -> None:
    """No Content-Length, not chunked: the body ends where the connection ends. A clean close is a complete
    body; a reset is not, and the client must see a reset too (before the fix: a 200 and a clean EOF)."""
    client_has_body = threading.Event()

    def answer(sock: socket.socket, _: Connection) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n" + b"x" * BODY_BYTES)
        client_has_body.wait(60)  # every byte sent has reached the client: only the ending is left
        if ending == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    upstream = RawUpstream(answer)
    proxy = proxy_to(upstream)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as client:
        client.sendall(b"GET /download HTTP/1.1\r\nhost: model\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(1)
        assert head.startswith(b"HTTP/1.1 200")
        assert recv_exactly(client, BODY_BYTES) == b"x" * BODY_BYTES
        client_has_body.set()
        if ending == "reset":
            with pytest.raises(ConnectionResetError):
                while client.recv(65536):
                    pass
        else:
            assert client.recv(65536) == b""  # a clean end: the body was complete
    if ending == "reset":
        wait_until(lambda: proxy.metric("inferwatch_sidecar_responses_cut_total", reason="upstream_reset") == 1,
                   "the cut counted as upstream_reset")
        assert proxy.metric("inferwatch_sidecar_upstream_errors_total", reason="reset") == 1
    else:
        wait_until(lambda: proxy.metric("inferwatch_sidecar_requests_total", route="other", status="2xx") == 1,
                   "the complete response counted")
        assert sum(proxy.metric("inferwatch_sidecar_responses_cut_total", reason=r)
                   for r in ("upstream_reset", "upstream_closed", "upstream_stalled")) == 0
    upstream.close()


def test_a_length_delimited_body_cut_short_by_a_clean_close_resets_the_client(
        proxy_to: Callable[[RawUpstream], Proxy]) -> None:
    def answer(sock: socket.socket, _: Connection) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"y" * 1000)
        sock.close()

    upstream = RawUpstream(answer)
    proxy = proxy_to(upstream)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as client:
        client.sendall(b"GET /short HTTP/1.1\r\nhost: model\r\n\r\n")
        got = b""
        with pytest.raises(ConnectionResetError):
            while data := client.recv(65536):
                got += data
    assert got.startswith(b"HTTP/1.1 200") and len(got) < 100_000
    assert proxy.metric("inferwatch_sidecar_responses_cut_total", reason="upstream_closed") == 1
    upstream.close()


# -- defect 15: broken chunked framing is answered 400 and never forwarded ------------------------------------

HEAD = b"POST /v1/completions HTTP/1.1\r\nhost: model\r\ntransfer-encoding: chunked\r\n\r\n"
BROKEN_BODIES = {
    "no CRLF after the chunk data": b"5\r\nhelloXX0\r\n\r\n",
    "a size that is not hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "a size line over 8 KiB": b"5;" + b"e" * 9000 + b"\r\nhello\r\n0\r\n\r\n",
    "a bare LF after the size": b"5\nhello\r\n0\r\n\r\n",
    "no final CRLF, a request behind it": b"5\r\nhello\r\n0\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
}


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "head-first"])
@pytest.mark.parametrize("body", list(BROKEN_BODIES.values()), ids=list(BROKEN_BODIES))
def test_broken_chunked_framing_is_answered_400_and_never_forwarded(
        proxy_to: Callable[[RawUpstream], Proxy], body: bytes, split: bool) -> None:
    upstream = RawUpstream(None)  # records, never answers
    proxy = proxy_to(upstream)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as client:
        if split:  # the head goes upstream first; the body must still stop at the proxy
            client.sendall(HEAD)
            wait_until(lambda: upstream.received().endswith(b"\r\n\r\n"), "the head to reach the upstream")
            client.sendall(body)
        else:
            client.sendall(HEAD + body)
        answer = b""
        while data := client.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:200]
    assert proxy.metric("inferwatch_sidecar_client_errors_total", reason="bad_chunk") == 1
    wait_until(lambda: upstream.connections and all(c.ended.is_set() for c in upstream.connections),
               "the proxy to close its upstream connection")
    received = upstream.received()
    assert b"hello" not in received and b"smuggled" not in received
    # at most the request head went upstream (with the proxy's x-request-id), and no byte after it
    assert received.count(b"\r\n\r\n") == (1 if split else received.count(b"\r\n\r\n")) <= 1
    assert received == b"" or (received.startswith(HEAD[:-2]) and received.endswith(b"\r\n\r\n"))
    upstream.close()


def test_a_valid_chunked_body_split_at_every_byte_reaches_the_upstream_intact(
        proxy_to: Callable[[RawUpstream], Proxy]) -> None:
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\ntrailer: yes\r\n\r\n"

    def answer(sock: socket.socket, connection: Connection) -> None:
        while not connection.received.endswith(body):
            connection.received += sock.recv(65536)
        sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    upstream = RawUpstream(answer)
    proxy = proxy_to(upstream)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.sendall(HEAD)
        for i in range(len(body)):
            client.sendall(body[i:i + 1])
        answer_bytes = b""
        while not answer_bytes.endswith(b"ok"):
            answer_bytes += client.recv(65536)
    assert answer_bytes.startswith(b"HTTP/1.1 200")
    assert upstream.received().endswith(body)
    upstream.close()
