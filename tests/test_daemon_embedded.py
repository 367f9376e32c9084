"""`inferwatch run` on the embedded bus: HTTP ingest, hostile HTTP input, /metrics, graceful stop."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import load_config_text
from monitor.daemon import run_daemon
from monitor.events import encode_batch
from tests.support import events, write_profile


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        out = (response.status, response.read())
        conn.close()
        return out

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.request("GET", "/metrics")
        for family in text_string_to_metric_families(text.decode()):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return 0.0

    def wait_metric(self, name: str, value: float, timeout_s: float = 10, **labels: str) -> None:
        deadline = time.monotonic() + timeout_s
        while self.metric(name, **labels) < value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} stayed at {self.metric(name, **labels)}, expected {value}")
            time.sleep(0.1)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    profile = write_profile(tmp_path)
    port = free_port()
    config = load_config_text(f"""
models: [{{name: tabular, version: 7, profile: "{profile}"}}]
window: {{size: 300}}
server: {{port: {port}, max_body_bytes: 200000}}
""")
    stop = threading.Event()
    thread = threading.Thread(target=run_daemon, args=(config, stop), daemon=True)
    thread.start()
    d = Daemon(port)
    deadline = time.monotonic() + 10
    while True:
        try:
            if d.request("GET", "/readyz")[0] == 200:
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield d
    stop.set()
    thread.join(15)
    assert not thread.is_alive(), "the daemon did not stop within 15 s of the stop signal"


def test_ingest_windows_and_metrics(daemon: Daemon) -> None:
    rng = np.random.default_rng(5)
    body = encode_batch(events(300, rng))
    assert daemon.request("POST", "/v1/events", body, {"Content-Type": "application/json"})[0] == 202
    daemon.wait_metric("inferwatch_windows_closed_total", 1, model="tabular", version="7", reason="full")
    assert daemon.metric("inferwatch_events_consumed_total", model="tabular", version="7") == 300
    assert daemon.request("GET", "/healthz") == (200, b"ok\n")


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"x" * 300_000, {"Content-Type": "application/json"}, 413),
    (b"{}", {"Content-Type": "text/csv"}, 415),
])
def test_hostile_http_is_refused_with_a_reason(daemon: Daemon, body: bytes, headers: dict[str, str],
                                               status: int) -> None:
    code, text = daemon.request("POST", "/v1/events", body, headers)
    assert code == status and text
    assert daemon.request("GET", "/healthz")[0] == 200  # and the daemon keeps serving


def test_missing_length_and_unknown_paths(daemon: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=5)
    conn.putrequest("POST", "/v1/events")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    assert daemon.request("GET", "/nope")[0] == 404
    assert daemon.request("POST", "/v1/other", b"{}")[0] == 404


def test_bad_events_over_http_are_counted_by_reason(daemon: Daemon) -> None:
    for body in (b"{broken", b'{"schema":"inferwatch.inference/v1","request_id":"x"}'):
        assert daemon.request("POST", "/v1/events", body, {"Content-Type": "application/json"})[0] == 202
    daemon.wait_metric("inferwatch_events_rejected_total", 1, reason="malformed_json")
    daemon.wait_metric("inferwatch_events_rejected_total", 1, reason="missing_field")
    assert daemon.metric("inferwatch_deadletters_total") == 2
