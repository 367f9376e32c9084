"""``inferwatch sidecar --ingest URL`` (issue 12, item 4): captured events go to a daemon's HTTP ingest instead of
Kafka, with the same spool and drop accounting. A daemon that is down, busy or refusing the token loses nothing:
events are spooled and replayed once it accepts them; a record it rejects for good is counted.

The daemon is :class:`~monitor.server.DaemonServer` on the embedded bus, in process, with a token, on this machine's
own non-loopback address (loopback where it has none); the sidecar runs as ``inferwatch sidecar`` in front of a
small OIP v2 model server. Request ids are counted on the daemon's bus.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collectors import EventProducer, Events, Spool
from collectors.ingest import HttpIngestProducer
from monitor.errors import RecordRejected, TransportError
from monitor.events import InferenceEvent, decode_record
from monitor.server import DaemonServer
from monitor.transport import MemoryBus
from tests.support import DEADLINE_S, free_port, wait_until
from tests.test_auth import OWN, TOKEN
from tests.test_sidecar import Upstream, oip

HOST = OWN or "127.0.0.1"


class Daemon:
    """The daemon's HTTP ingest on the embedded bus at ``HOST:port``; what reached its bus, by request id."""

    def __init__(self, port: int, token_file: Path) -> None:
        self.bus = MemoryBus()
        self.registry = CollectorRegistry()
        self.server = DaemonServer(HOST, port, self.registry, ready=lambda: True, ingest=self.bus.producer(),
                                   topics={"events": "events", "feedback": "feedback"}, token_file=str(token_file))
        self.server.start()
        self.reader = self.bus.consumer(["events"], "reader")

    def ids(self) -> list[str]:
        return [e.request_id for m in self.reader.poll(0.05, 10_000) for e in decode_record(m.value)
                if isinstance(e, InferenceEvent)]

    def refused(self, reason: str) -> float:
        return self.registry.get_sample_value("inferwatch_http_unauthorized_total", {"reason": reason}) or 0.0

    def close(self) -> None:
        self.server.close()
        self.reader.close()
        self.bus.close()


class Received:
    """Request ids the daemon (each incarnation of it) put on its bus."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def collect(self, daemon: Daemon) -> list[str]:
        self.ids += daemon.ids()
        return self.ids

    def wait(self, daemon: Daemon, expected: set[str], what: str) -> None:
        wait_until(lambda: expected <= set(self.collect(daemon)), what)


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def metric(port: int, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(get(port, "/metrics")[1]):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


class SidecarProcess:
    def __init__(self, tmp_path: Path, upstream: Upstream, ingest: str, token_file: Path) -> None:
        self.port, self.admin = free_port(), free_port()
        self.log_path = tmp_path / "sidecar.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "sidecar", "--upstream", f"http://127.0.0.1:{upstream.port}",
                 "--listen", f"127.0.0.1:{self.port}", "--admin", f"127.0.0.1:{self.admin}", "--ingest", ingest,
                 "--ingest-token-file", str(token_file), "--spool", str(tmp_path / "spool"),
                 "--model", "resnet=cnn/7"], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.alive() and get(self.admin, "/readyz")[0] == 200, "the sidecar to be ready")

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the sidecar exited {self.process.returncode}:\n{self.log_path.read_text()}")
        return True

    def infer(self, request_id: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE_S)
        try:
            conn.request("POST", "/v2/models/resnet/infer", json.dumps(oip(1)),
                         {"Content-Type": "application/json", "x-request-id": request_id})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        self.alive()
        return metric(self.admin, name, **labels)

    def wait_metric(self, name: str, value: float, **labels: str) -> None:
        wait_until(lambda: self.metric(name, **labels) >= value, f"{name}{labels} to reach {value}")

    def readyz(self) -> str:
        return get(self.admin, "/readyz")[1]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(DEADLINE_S)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "daemon.token"
    path.write_text(TOKEN + "\n")
    return path


def test_events_reach_the_daemon_and_survive_its_outage(tmp_path: Path, upstream: Upstream,
                                                         token_file: Path) -> None:
    port = free_port()
    daemon = Daemon(port, token_file)
    url = f"http://{HOST}:{port}"
    received = Received()
    sidecar = SidecarProcess(tmp_path, upstream, url, token_file)
    try:
        wait_until(lambda: f"ingest {url} reachable" in sidecar.readyz(), "/readyz to say the ingest is reachable")
        first = {f"up-{i}" for i in range(5)}
        for request_id in sorted(first):
            sidecar.infer(request_id)
        received.wait(daemon, first, "the first five events on the daemon's bus")
        assert daemon.refused("missing") == daemon.refused("wrong") == 0  # the sidecar sent the token

        daemon.close()  # the daemon goes away: events are spooled
        wait_until(lambda: f"ingest {url} unreachable" in sidecar.readyz(), "/readyz to say it is unreachable")
        down = {f"down-{i}" for i in range(5)}
        for request_id in sorted(down):
            sidecar.infer(request_id)
        sidecar.wait_metric("inferwatch_collector_events_spooled_total", 5)
        assert sidecar.metric("inferwatch_collector_spooling") == 1
        assert sidecar.metric("inferwatch_collector_ingest_requests_total", outcome="unreachable") >= 1

        daemon = Daemon(port, token_file)  # back, on the same address: the spool is replayed
        received.wait(daemon, first | down, "the spooled events replayed to the daemon")
        sidecar.wait_metric("inferwatch_collector_events_replayed_total", 5)
        wait_until(lambda: sidecar.metric("inferwatch_collector_spooling") == 0, "the spool to be empty")
        after = {f"after-{i}" for i in range(3)}
        for request_id in sorted(after):
            sidecar.infer(request_id)
        received.wait(daemon, first | down | after, "events sent after the replay")
        assert sidecar.metric("inferwatch_collector_events_dropped_total", reason="send_error") == 0
        assert sidecar.metric("inferwatch_collector_events_dropped_total", reason="spool_full") == 0
        assert f"ingest {url} reachable" in sidecar.readyz()
    finally:
        code = sidecar.stop()
        daemon.close()
    assert code == 0, sidecar.log_path.read_text()
    assert set(received.ids) == first | down | after  # nothing lost (at least once: a duplicate is allowed)
    assert TOKEN not in sidecar.log_path.read_text()


def test_a_wrong_ingest_token_is_counted_spooled_and_replayed_once_fixed(tmp_path: Path, upstream: Upstream,
                                                                          token_file: Path) -> None:
    port = free_port()
    daemon = Daemon(port, token_file)
    wrong = tmp_path / "sidecar.token"
    wrong.write_text("0" * len(TOKEN) + "\n")
    url = f"http://{HOST}:{port}"
    received = Received()
    sidecar = SidecarProcess(tmp_path, upstream, url, wrong)
    try:
        ids = {f"req-{i}" for i in range(4)}
        for request_id in sorted(ids):
            sidecar.infer(request_id)
        sidecar.wait_metric("inferwatch_collector_ingest_requests_total", 1, outcome="unauthorized")
        sidecar.wait_metric("inferwatch_collector_events_spooled_total", 4)  # kept, not dropped
        wait_until(lambda: daemon.refused("wrong") >= 1, "the daemon to count the wrong token")
        wait_until(lambda: "reachable, but the daemon refused the token (401" in sidecar.readyz(),
                   "/readyz to say why")
        assert received.collect(daemon) == []
        wrong.write_text(TOKEN + "\n")  # the secret is fixed (rotated): the sidecar reads it again after a 401
        received.wait(daemon, ids, "the spooled events, replayed with the right token")
        sidecar.wait_metric("inferwatch_collector_events_replayed_total", 4)
    finally:
        code = sidecar.stop()
        daemon.close()
    assert code == 0
    log = sidecar.log_path.read_text()
    assert "refused the token" in log and TOKEN not in log and "0" * len(TOKEN) not in log


# -- the producer alone -------------------------------------------------------------------------------------------


class Answers(BaseHTTPRequestHandler):
    """Answers each POST with the next status of the server's ``codes`` (202 when they run out)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Fake = self.server  # type: ignore[assignment]
        with server.lock:
            code = server.codes.pop(0) if server.codes else 202
            server.seen.append((body, self.headers.get("X-Inferwatch-Key"), self.headers.get("Authorization")))
        self.send_response(code)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"no\n")

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: object) -> None:
        return None


class Fake(ThreadingHTTPServer):
    def __init__(self, codes: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), Answers)
        self.codes = codes
        self.seen: list[tuple[bytes, str | None, str | None]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def outcomes(producer: HttpIngestProducer) -> Callable[[str], float]:
    return lambda outcome: producer.metrics.requests.labels(outcome=outcome)._value.get()


def test_the_producer_keeps_order_and_tells_retryable_from_rejected(token_file: Path) -> None:
    fake = Fake([202, 503, 429, 401, 404, 500, 413, 400])
    producer = HttpIngestProducer(fake.url, CollectorRegistry(), str(token_file))
    results: list[tuple[int, BaseException | None]] = []
    try:
        for i in range(10):
            producer.send("events", b'{"n":%d}' % i, f"m/{i % 2}".encode(),
                          on_done=lambda error, i=i: results.append((i, error)))
        producer.flush(DEADLINE_S)
    finally:
        producer.close(DEADLINE_S)
        fake.shutdown()
    assert [i for i, _ in results] == list(range(10))  # in send order, each reported once
    failed = [i for i, error in results if error is not None and not isinstance(error, RecordRejected)]
    assert failed == [1, 2, 3, 4, 5]  # 503, 429, 401, 404, 500: the EventProducer spools and replays these
    assert all(isinstance(error, TransportError) for i, error in results if i in failed)
    # 413 and 400: refused for good, the EventProducer drops them counted as "rejected"
    assert [i for i, error in results if isinstance(error, RecordRejected)] == [6, 7]
    count = outcomes(producer)
    assert (count("accepted"), count("busy"), count("unauthorized"), count("not_found"), count("server_error"),
            count("rejected")) == (3, 2, 1, 1, 1, 2)  # 413 and 400 cannot succeed: counted, not spooled
    assert [key for _, key, _ in fake.seen] == [f"m/{i % 2}" for i in range(10)]
    assert {auth for _, _, auth in fake.seen} == {f"Bearer {TOKEN}"}


def test_an_event_producer_over_ingest_spools_what_the_daemon_refuses_and_replays_it(tmp_path: Path) -> None:
    fake = Fake([503] * 3)
    registry = CollectorRegistry()
    producer = HttpIngestProducer(fake.url, registry)
    events = EventProducer(producer, "events", registry=registry, linger_s=0.001,
                           spool=Spool(tmp_path / "spool", max_bytes=1 << 20))
    try:
        for i in range(20):
            assert events.submit(Events([InferenceEvent(f"r{i}", 1.7e9, "cnn", "1", "classification",
                                                        prediction=i % 3)]))
        assert events.flush(DEADLINE_S)
        wait_until(lambda: registry.get_sample_value("inferwatch_collector_spooling") == 0, "the replay")
    finally:
        events.close(DEADLINE_S)
        producer.close(DEADLINE_S)
        fake.shutdown()
    got = {e.request_id for body, _, _ in fake.seen[3:] for e in decode_record(body)}
    assert got == {f"r{i}" for i in range(20)}
    assert registry.get_sample_value("inferwatch_collector_events_dropped_total", {"reason": "send_error"}) == 0


def test_close_fails_what_is_still_queued_and_later_sends_raise() -> None:
    producer = HttpIngestProducer(f"http://127.0.0.1:{free_port()}", CollectorRegistry(), timeout_s=1.0)
    errors: list[BaseException | None] = []
    for _ in range(3):
        producer.send("events", b"{}", None, on_done=errors.append)
    producer.close(DEADLINE_S)
    assert len(errors) == 3 and all(isinstance(e, TransportError) for e in errors)
    assert "unreachable" in producer.status
    with pytest.raises(TransportError, match="closed"):
        producer.send("events", b"{}")


def test_an_event_producer_drops_what_the_daemon_rejects_for_good_counted_and_goes_on(tmp_path: Path) -> None:
    """A 400 costs that record only, counted as dropped "rejected", whether it was sent directly or replayed
    from the spool; the records after it are delivered."""
    fake = Fake([400, 503, 400])  # direct: rejected; then a 503 spools; replay: the first spooled one rejected
    registry = CollectorRegistry()
    producer = HttpIngestProducer(fake.url, registry)
    events = EventProducer(producer, "events", registry=registry, linger_s=0.001, batch_events=1,
                           spool=Spool(tmp_path / "spool", max_bytes=1 << 20))
    dropped = events.metrics.dropped.labels(reason="rejected")
    try:
        for i in range(6):
            assert events.submit(Events([InferenceEvent(f"r{i}", 1.7e9, "cnn", "1", "classification",
                                                        features={"x": 1.0})]))
            assert events.flush(DEADLINE_S)
        wait_until(lambda: events.metrics.acked._value.get() + dropped._value.get() == 6,
                   "every event delivered or rejected")
    finally:
        events.close()
        producer.close(DEADLINE_S)
        fake.shutdown()
    assert (dropped._value.get(), events.metrics.acked._value.get()) == (2, 4)
    delivered = [json.loads(body)["request_id"] for body, _, _ in fake.seen[3:]]  # column batches of one
    assert sorted(delivered) == [["r2"], ["r3"], ["r4"], ["r5"]], delivered
