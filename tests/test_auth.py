"""Who may send (issue 12, item 5): the daemon's server and the sidecar's admin listener beyond loopback need a
bearer token (or an explicit ``allow_unauthenticated``); without it, with a wrong one and with the right one,
ingest answers 401, 401 and 202, refusals are counted by reason, and probes stay open.

"Beyond loopback" is tested for real: the servers bind this machine's own non-loopback address and the tests
connect to it there. A machine without one skips those tests, saying so.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from collectors.sidecar import Sidecar, SidecarConfig
from monitor.auth import MIN_TOKEN_CHARS, Guard, is_loopback, read_token_file
from monitor.errors import ConfigError
from monitor.events import encode_event
from monitor.server import DaemonServer
from monitor.transport import MemoryBus
from tests.support import DEADLINE_S, events, free_port, sidecar_thread, wait_until, write_profile

TOKEN = "9f2c4e7a1b3d5f60718293a4b5c6d7e8"
JSON = {"Content-Type": "application/json"}
EVENT = encode_event(events(1, np.random.default_rng(0))[0])


def own_address() -> str | None:
    """This machine's own non-loopback IPv4 address (the one its default route leaves from), or None."""
    candidates = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP: no packet is sent, the kernel only picks a source address
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    for address in candidates:
        if is_loopback(address) or address == "0.0.0.0":
            continue
        with socket.socket() as sock:
            try:
                sock.bind((address, 0))
            except OSError:
                continue
        return str(address)
    return None


OWN = own_address()
beyond_loopback = pytest.mark.skipif(OWN is None, reason="this machine has no non-loopback IPv4 address to bind")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(f"\n  {TOKEN}  \nsecond line ignored\n")
    return path


def raw(host: str, port: int, request: bytes) -> bytes:
    """Send ``request`` as is; everything the server answers before it closes."""
    with socket.create_connection((host, port), timeout=DEADLINE_S) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def request(host: str, port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=DEADLINE_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **JSON}


# -- the pieces -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("localhost", True), ("LocalHost", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False),
    ("192.0.2.7", False), ("fe80::1%lo", False), ("no-such-host.invalid", False),
])
def test_loopback_is_127_slash_8_ipv6_one_and_localhost_and_never_the_wildcards(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_token_file_gives_its_first_non_empty_line_and_bad_ones_name_the_key(tmp_path: Path,
                                                                               token_file: Path) -> None:
    assert read_token_file(token_file, "server.token_file") == TOKEN
    cases = {"missing": None, "empty": "\n \n", "short": "x" * (MIN_TOKEN_CHARS - 1), "spaced": "abc def " * 4,
             "non-ascii": "tökén" * 8}
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=r"^server\.token_file: ") as raised:
            read_token_file(path, "server.token_file")
        assert (text or "").strip() == "" or text.strip() not in str(raised.value)  # never echo the token
    unreadable = tmp_path / "dir"
    unreadable.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        read_token_file(unreadable, "sidecar.admin_token_file")


def test_the_guard_says_why_for_every_kind_of_bad_header() -> None:
    guard = Guard(TOKEN.encode())
    assert guard.check([f"Bearer {TOKEN}"]) is None
    assert guard.check([f"bearer   {TOKEN} "]) is None  # the scheme is case-insensitive
    assert guard.check([]) == "missing"
    for bad in ("", "Bearer", f"Basic {TOKEN}", f"Bearer {TOKEN} extra", "Bearer tök€n", f"Token {TOKEN}"):
        assert guard.check([bad]) == "malformed", bad
    assert guard.check([f"Bearer {TOKEN}", f"Bearer {TOKEN}"]) == "malformed"  # two headers
    assert guard.check([f"Bearer {TOKEN[:-1]}"]) == "wrong"  # another length
    assert guard.check([f"Bearer {TOKEN[:-1]}0"]) == "wrong"
    assert guard.check([b"Bearer " + b"a" * 100_000]) == "wrong"
    assert Guard(None).check([]) is None


# -- the daemon ------------------------------------------------------------------------------------------------------


@pytest.fixture
def bus() -> Iterator[MemoryBus]:
    b = MemoryBus()
    yield b
    b.close()


def daemon_server(host: str, bus: MemoryBus, registry: CollectorRegistry, **kwargs: object) -> DaemonServer:
    server = DaemonServer(host, 0, registry, ready=lambda: True, ingest=bus.producer(),
                          topics={"events": "events", "feedback": "feedback"}, **kwargs)  # type: ignore[arg-type]
    server.start()
    return server


@beyond_loopback
def test_a_daemon_beyond_loopback_without_a_token_refuses_to_start_and_says_what_to_set(bus: MemoryBus) -> None:
    assert OWN is not None
    for host in (OWN, "0.0.0.0"):
        with pytest.raises(ConfigError) as raised:
            DaemonServer(host, 0, CollectorRegistry(), ready=lambda: True, ingest=bus.producer(),
                         topics={"events": "events"})
        message = str(raised.value)
        assert f"server.host is '{host}', beyond loopback" in message
        assert "server.token_file" in message and "server.allow_unauthenticated: true" in message


@beyond_loopback
def test_inferwatch_run_beyond_loopback_without_a_token_exits_2_with_the_message(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f'models: [{{name: tabular, version: "7", profile: "{write_profile(tmp_path)}"}}]\n'
                      f"server: {{host: {OWN}, port: {free_port()}}}\n")
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "inferwatch: error: server.host is" in done.stderr and "server.token_file" in done.stderr
    config.write_text(config.read_text().replace("}\n", ", token_file: missing.token}\n"))
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "server.token_file: cannot read the token file" in done.stderr, done.stderr


@beyond_loopback
def test_a_daemon_allowed_to_run_unauthenticated_starts_with_a_warning(bus: MemoryBus,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    assert OWN is not None
    with caplog.at_level(logging.WARNING, logger="monitor.auth"):
        server = daemon_server(OWN, bus, CollectorRegistry(), allow_unauthenticated=True)
    try:
        assert any("without a token" in r.getMessage() and "server.allow_unauthenticated" in r.getMessage()
                   for r in caplog.records), caplog.text
        assert request(OWN, server.port, "POST", "/v1/events", EVENT, JSON)[0] == 202
        assert request(OWN, server.port, "GET", "/metrics")[0] == 200
    finally:
        server.close()


def count(registry: CollectorRegistry, reason: str, name: str = "inferwatch_http_unauthorized_total") -> float:
    return registry.get_sample_value(name, {"reason": reason}) or 0.0


@beyond_loopback
def test_ingest_beyond_loopback_without_a_token_with_a_wrong_one_and_the_right_one_is_401_401_202(
        bus: MemoryBus, token_file: Path) -> None:
    """The issue's check, on this machine's own address."""
    assert OWN is not None
    registry = CollectorRegistry()
    server = daemon_server(OWN, bus, registry, token_file=str(token_file))
    reader = bus.consumer(["events"], "reader")
    try:
        status, headers, body = request(OWN, server.port, "POST", "/v1/events", EVENT, JSON)
        assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="inferwatch"')
        assert b"no Authorization header" in body and TOKEN.encode() not in body
        status, headers, body = request(OWN, server.port, "POST", "/v1/events", EVENT, bearer("x" * len(TOKEN)))
        assert status == 401 and b"wrong bearer token" in body and headers["connection"] == "close"
        assert request(OWN, server.port, "POST", "/v1/events", EVENT, bearer(TOKEN))[0] == 202
        assert (count(registry, "missing"), count(registry, "wrong"), count(registry, "malformed")) == (1, 1, 0)
        records = wait_until(lambda: reader.poll(0.1), "the accepted record on the bus")
        assert [m.value for m in records] == [EVENT]  # the refused two were never queued
        # Probes stay open; everything else needs the token.
        assert request(OWN, server.port, "GET", "/healthz")[0] == 200
        assert request(OWN, server.port, "GET", "/readyz")[0] == 200
        assert request(OWN, server.port, "GET", "/metrics")[0] == 401
        assert request(OWN, server.port, "GET", "/")[0] == 401
        assert request(OWN, server.port, "GET", "/no/such/page")[0] == 401  # nothing is revealed either
        status, _, text = request(OWN, server.port, "GET", "/metrics", headers=bearer(TOKEN))
        assert status == 200 and b'inferwatch_http_unauthorized_total{reason="missing"} 4.0' in text
    finally:
        reader.close()
        server.close()


@beyond_loopback
def test_hostile_authorization_headers_are_401_never_500(bus: MemoryBus, token_file: Path) -> None:
    assert OWN is not None
    registry = CollectorRegistry()
    server = daemon_server(OWN, bus, registry, token_file=str(token_file))
    try:
        port = server.port
        for header, reason in [
            (b"Basic dXNlcjpwYXNz", "malformed"),
            (b"Bearer " + "t\u00f6k\u00e9n".encode() + b"xxxxxxxxxxxxxxxx", "malformed"),  # bytes beyond ASCII
            (b"Bearer \xff\xfe\xfd" + b"x" * 30, "malformed"),
            (b"Bearer " + b"a" * 30_000, "wrong"),  # huge, but within a header line's limit
            (b"Bearer " + TOKEN.encode()[:-4], "wrong"),  # a token of another length
        ]:
            before = count(registry, reason)
            answer = raw(OWN, port, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    b"Content-Length: 2\r\nAuthorization: " + header + b"\r\n\r\n{}")
            assert answer.startswith(b"HTTP/1.0 401 "), (header[:40], answer[:200])
            assert count(registry, reason) == before + 1, header[:40]
        answer = raw(OWN, port, f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                                f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.0 401 ") and count(registry, "malformed") == 4
        # A header line beyond the standard library's 64 KiB limit is its own 431, not a crash.
        answer = raw(OWN, port, b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer " + b"a" * 70_000 + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 431 "), answer[:100]
        assert request(OWN, port, "GET", "/healthz")[0] == 200  # still serving
    finally:
        server.close()


@beyond_loopback
def test_the_401_comes_before_the_body_is_read_and_closes_the_connection(bus: MemoryBus, token_file: Path) -> None:
    """A client without the token that announces 4 MiB gets its 401 at once: the daemon does not wait for (or
    read) the body, and closes the connection so the unread body is not taken for a request."""
    assert OWN is not None
    server = daemon_server(OWN, bus, CollectorRegistry(), token_file=str(token_file))
    try:
        with socket.create_connection((OWN, server.port), timeout=DEADLINE_S) as sock:
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 4194304\r\n\r\n" + b"{" * 1000)
            chunks = []
            while chunk := sock.recv(65536):  # EOF: the daemon closed without waiting for the other 4 MB
                chunks.append(chunk)
        answer = b"".join(chunks)
        assert answer.startswith(b"HTTP/1.0 401 ") and b"Connection: close" in answer, answer[:300]
    finally:
        server.close()


def test_a_token_on_loopback_is_required_too(bus: MemoryBus, token_file: Path) -> None:
    registry = CollectorRegistry()
    server = daemon_server("127.0.0.1", bus, registry, token_file=str(token_file))
    try:
        assert request("127.0.0.1", server.port, "POST", "/v1/events", EVENT, JSON)[0] == 401
        assert request("127.0.0.1", server.port, "POST", "/v1/events", EVENT, bearer(TOKEN))[0] == 202
    finally:
        server.close()


def test_loopback_without_a_token_is_open_as_before(bus: MemoryBus) -> None:
    server = daemon_server("127.0.0.1", bus, CollectorRegistry())
    try:
        assert request("127.0.0.1", server.port, "POST", "/v1/events", EVENT, JSON)[0] == 202
        assert request("127.0.0.1", server.port, "GET", "/metrics")[0] == 200
    finally:
        server.close()


# -- the sidecar's admin listener -------------------------------------------------------------------------------------


def start_sidecar(config: SidecarConfig, registry: CollectorRegistry) -> tuple[Sidecar, threading.Event,
                                                                                threading.Thread]:
    sidecar, stop, thread = sidecar_thread(config, None, registry)
    return sidecar, stop, thread


@beyond_loopback
def test_a_sidecar_admin_beyond_loopback_without_a_token_refuses_to_start() -> None:
    assert OWN is not None
    for host in (OWN, "0.0.0.0"):
        config = SidecarConfig(listen_host="127.0.0.1", listen_port=0, admin_host=host, admin_port=0)
        with pytest.raises(ConfigError, match=r"sidecar\.admin_host is .*sidecar\.admin_token_file "
                                              r"\(--admin-token-file FILE\).*sidecar\.allow_unauthenticated: true"):
            Sidecar(config, None, CollectorRegistry())


@beyond_loopback
def test_a_sidecar_admin_with_a_token_guards_metrics_and_leaves_probes_open(token_file: Path) -> None:
    assert OWN is not None
    upstream = socket.create_server(("127.0.0.1", 0))  # accepts connections: /readyz is ready
    config = SidecarConfig(upstream=f"http://127.0.0.1:{upstream.getsockname()[1]}", listen_host="127.0.0.1",
                           listen_port=0, admin_host=OWN, admin_port=0, admin_token_file=str(token_file))
    registry = CollectorRegistry()
    sidecar, stop, thread = start_sidecar(config, registry)
    try:
        port = sidecar.admin_address[1]
        status, headers, body = request(OWN, port, "GET", "/metrics")
        assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="inferwatch"')
        assert b"no Authorization header" in body
        assert request(OWN, port, "GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})[0] == 401
        assert request(OWN, port, "GET", "/metrics", headers={"Authorization": f"Basic {TOKEN}"})[0] == 401
        assert raw(OWN, port, b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer \xff\xfe" + b"x" * 20 + b"\r\n\r\n"
                   ).startswith(b"HTTP/1.1 401 ")
        assert request(OWN, port, "POST", "/healthz")[0] == 401  # only GET and HEAD probes are open
        assert request(OWN, port, "GET", "/healthz")[0] == 200
        assert request(OWN, port, "HEAD", "/healthz")[0] == 200
        assert request(OWN, port, "GET", "/readyz")[0] == 200
        status, _, text = request(OWN, port, "GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert count(registry, "missing", "inferwatch_sidecar_admin_unauthorized_total") == 2
        assert count(registry, "wrong", "inferwatch_sidecar_admin_unauthorized_total") == 1
        assert count(registry, "malformed", "inferwatch_sidecar_admin_unauthorized_total") == 2
        assert b'inferwatch_sidecar_admin_unauthorized_total{reason="wrong"} 1.0' in text
    finally:
        stop.set()
        thread.join(DEADLINE_S)
        upstream.close()


@beyond_loopback
def test_a_sidecar_admin_allowed_unauthenticated_starts_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert OWN is not None
    config = SidecarConfig(listen_host="127.0.0.1", listen_port=0, admin_host=OWN, admin_port=0,
                           allow_unauthenticated=True)
    with caplog.at_level(logging.WARNING, logger="monitor.auth"):
        sidecar, stop, thread = start_sidecar(config, CollectorRegistry())
    try:
        assert "sidecar.allow_unauthenticated: true" in caplog.text
        assert request(OWN, sidecar.admin_address[1], "GET", "/metrics")[0] == 200
    finally:
        stop.set()
        thread.join(DEADLINE_S)


def test_the_sidecar_command_refuses_an_open_admin_listener_before_anything_else(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "sidecar", "--upstream", "http://127.0.0.1:1",
                           "--ingest", "http://127.0.0.1:1", "--listen", f"127.0.0.1:{free_port()}",
                           "--admin", f"0.0.0.0:{free_port()}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "inferwatch: error: sidecar.admin_host is '0.0.0.0', beyond loopback" in done.stderr
    assert "--admin-token-file" in done.stderr
