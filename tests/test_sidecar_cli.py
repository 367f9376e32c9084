"""`inferwatch sidecar` as a process: starts at once, proxies an OpenAI-compatible upstream, sends captures to
Kafka or, while Kafka is unreachable, to its spool; and its settings from the config file's `sidecar:` section."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from collectors.spool import Spool
from monitor.config import ModelRef, load_config, load_sidecar_config
from monitor.errors import ConfigError
from monitor.events import InferenceEvent, decode_record
from monitor.transport import KafkaTransport, ensure_topics
from tests.support import free_port, wait_until


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = "I'm sorry, I cannot do that." if "refuse" in request["prompt"] else "To be, or not to be."
        body = json.dumps({"id": "cmpl-1", "object": "text_completion", "model": request["model"],
                           "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read().decode()


def complete(port: int, prompt: str, request_id: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/completions", json.dumps({"model": "gpt-small", "prompt": prompt}),
                 {"Content-Type": "application/json", "x-request-id": request_id})
    response = conn.getresponse()
    assert json.loads(response.read())["usage"]["completion_tokens"] == 7
    return response.status


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_sidecar_serves_at_once_and_spools_while_kafka_is_unreachable(
        tmp_path: Path, upstream: ThreadingHTTPServer) -> None:
    """Defect 12: with the broker down, the sidecar used to wait 30 s for it, exit 2 and never listen."""
    port, admin = free_port(), free_port()
    config = tmp_path / "inferwatch.yaml"
    config.write_text(f"""
sidecar:
  upstream: http://127.0.0.1:1          # overridden by --upstream
  kafka: 127.0.0.1:{free_port()}        # nothing listens there
  spool: spool                          # relative to this file
  models:
    gpt-small: {{model: charlm, version: 3}}
""")
    log_path = tmp_path / "sidecar.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "sidecar", "--config", str(config),
             "--upstream", f"http://127.0.0.1:{upstream.server_port}", "--listen", f"127.0.0.1:{port}",
             "--admin", f"127.0.0.1:{admin}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> str:
            if process.poll() is not None:
                raise AssertionError(f"the sidecar exited {process.returncode}:\n{log_path.read_text()}")
            status, body = get(admin, "/readyz")
            return body if status == 200 else ""

        body = wait_until(ready, "the sidecar to answer /readyz")
        assert "kafka producer connecting" in body  # ready (fail-open), and saying Kafka is not there
        ids = [f"req-{i}" for i in range(5)]
        for i, request_id in enumerate(ids):
            assert complete(port, "please refuse" if i == 0 else "Hamlet?", request_id) == 200
        def spooled() -> str:
            text = get(admin, "/metrics")[1]
            return text if metric(text, "inferwatch_collector_events_spooled_total") == 5 else ""

        text = wait_until(spooled, "five events in the spool")
        assert metric(text, "inferwatch_collector_producer_connected") == 0
        assert metric(text, "inferwatch_collector_spooling") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0, log_path.read_text()
    records = [e for r in Spool(tmp_path / "spool").read(100) for e in decode_record(r.value)]
    by_id = {e.request_id: e for e in records if isinstance(e, InferenceEvent)}
    assert sorted(by_id) == ids
    assert (by_id["req-1"].model, by_id["req-1"].version) == ("charlm", "3")
    assert by_id["req-0"].generation is not None and by_id["req-0"].generation.refusal is True


def test_the_sidecar_section_loads_alone_and_overrides_win(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("sidecar:\n  upstream: http://model:9000\n  listen_port: 8001\n  spool: data/spool\n"
                    "  admin_token_file: secrets/admin\n  models: {a: {model: cnn, version: 2}}\n")
    config = load_sidecar_config(path, {"listen_port": 8100, "models": {"b": {"model": "gpt", "version": "1"}}})
    assert (config.upstream_address, config.listen_port) == (("model", 9000), 8100)
    assert config.spool == str((tmp_path / "data" / "spool").resolve())  # relative paths: to the file's folder
    assert config.admin_token_file == str((tmp_path / "secrets" / "admin").resolve())
    assert load_sidecar_config(path, {"admin_token_file": "t"}).admin_token_file == "t"  # a flag's: as given
    assert config.models == {"a": ModelRef("cnn", "2"), "b": ModelRef("gpt", "1")}
    assert config.admin_port == 9400 and config.kafka is None  # the defaults, declared once in monitor.config
    with pytest.raises(ConfigError, match=r"must look like http://host:port.* at sidecar\.upstream"):
        load_sidecar_config(path, {"upstream": "https://model"})


@pytest.mark.parametrize(("text", "where"), [
    ("sidecar:\n  listen_port: 70000\n", "at sidecar.listen_port"),
    ("sidecar:\n  upstrem: http://x:1\n", "unknown field `upstrem` at sidecar"),
    ("sidecar:\n  models: {a: {model: cnn}}\n", "missing required field `version` at sidecar.models"),
    ("sidecar:\n  ready_path: healthz\n", "at sidecar.ready_path"),
    ("sidecar:\n  idle_timeout_s: .inf\n", "at sidecar.idle_timeout_s"),
    ("models: []\n", "expected a `sidecar:` mapping"),
])
def test_a_bad_sidecar_section_is_refused_naming_the_key(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=where.replace(".", r"\.").replace("`", ".")):
        load_sidecar_config(path)


def test_the_daemon_config_accepts_a_sidecar_section(tmp_path: Path) -> None:
    path = tmp_path / "inferwatch.yaml"
    path.write_text("models:\n  - {name: m, version: '1', profile: m.npz}\nsidecar:\n  kafka: k:9092\n")
    config = load_config(path)
    assert config.sidecar is not None and config.sidecar.kafka == "k:9092"


def test_the_sidecar_command_reports_a_bad_config_key_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sidecar:\n  kafka: k:9092\n  admin_port: -1\n")
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "sidecar", "--config", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "at sidecar.admin_port" in done.stderr, done.stderr
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "sidecar", "--upstream", "http://m:1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no Kafka address" in done.stderr, done.stderr


def test_a_listen_port_in_use_is_a_message_and_exit_2(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "monitor.cli", "sidecar", "--upstream", "http://127.0.0.1:1",
                               "--kafka", f"127.0.0.1:{free_port()}", "--listen", f"127.0.0.1:{port}",
                               "--admin", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port} (sidecar.listen_port)" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_sidecar_imports_neither_scipy_nor_torch() -> None:
    """Issue item 6: the sidecar image stays small; before, `collectors.sidecar` pulled scipy via `detectors`."""
    code = ("import sys, collectors.sidecar, monitor.cli; "
            "print(sorted(m for m in ('scipy', 'torch', 'sklearn', 'detectors') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_the_sidecar_command_serves_healthz_soon_after_start(tmp_path: Path, upstream: ThreadingHTTPServer) -> None:
    """Issue 12 item 2: `inferwatch sidecar` starts serving at once (fail-open: Kafka is unreachable here). The time
    from process start to the first /healthz 200 is printed, not asserted (shared machines vary); the benchmark
    (benchmarks/sidecar_latency.py) reports it against the 1 s target."""
    port, admin = free_port(), free_port()
    log_path = tmp_path / "sidecar.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "sidecar", "--upstream", f"http://127.0.0.1:{upstream.server_port}",
             "--kafka", "127.0.0.1:1", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the sidecar exited {process.returncode}:\n{log_path.read_text()}")
            try:
                return get(admin, "/healthz") == (200, "ok\n")
            except OSError:
                return False

        wait_until(healthy, "the sidecar to answer /healthz", interval_s=0.01)
        print(f"inferwatch sidecar: process start to first /healthz 200 in {time.perf_counter() - started:.3f} s")
        assert complete(port, "Hamlet?", "req-up") == 200  # and it proxies
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0, log_path.read_text()


@pytest.mark.kafka
@pytest.mark.slow
def test_sidecar_process_proxies_and_captures_to_kafka(tmp_path: Path, kafka_bootstrap: str,
                                                       upstream: ThreadingHTTPServer) -> None:
    topic = f"sidecar-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, {topic: 1})
    port, admin = free_port(), free_port()
    log_path = tmp_path / "sidecar.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "sidecar", "--upstream", f"http://127.0.0.1:{upstream.server_port}",
             "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}", "--kafka", kafka_bootstrap,
             "--topic", topic, "--model", "gpt-small=charlm/3", "--spool", str(tmp_path / "spool")],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the sidecar exited {process.returncode}:\n{log_path.read_text()}")
            return get(admin, "/readyz")[0] == 200

        wait_until(ready, "the sidecar to answer /readyz")
        ids = []
        for prompt in ("Hamlet?", "please refuse"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/v1/completions", json.dumps({"model": "gpt-small", "prompt": prompt}),
                         {"Content-Type": "application/json", "x-request-id": f"req-{prompt[:4]}"})
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["usage"]["completion_tokens"] == 7
            ids.append(response.getheader("x-request-id"))
        assert ids == ["req-Haml", "req-plea"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0, log_path.read_text()
    transport = KafkaTransport(kafka_bootstrap)
    consumer = transport.consumer([topic], f"check-{uuid.uuid4().hex[:6]}")
    events: list[InferenceEvent] = []

    def both() -> bool:
        events.extend(e for m in consumer.poll(0.5) for e in decode_record(m.value) if isinstance(e, InferenceEvent))
        return len(events) >= 2

    wait_until(both, "both events on the topic")
    transport.close()
    by_id = {e.request_id: e for e in events}
    assert set(by_id) == {"req-Haml", "req-plea"}
    assert (by_id["req-Haml"].model, by_id["req-Haml"].version) == ("charlm", "3")
    assert by_id["req-plea"].generation is not None and by_id["req-plea"].generation.refusal is True
    assert by_id["req-Haml"].generation is not None and by_id["req-Haml"].generation.output_tokens == 7
