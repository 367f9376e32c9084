"""`inferwatch sidecar` as a process: proxies an OpenAI-compatible upstream and sends captures to Kafka."""

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from monitor.events import InferenceEvent, decode_record
from monitor.transport import KafkaTransport, ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sidecar_process_proxies_and_captures_to_kafka(tmp_path: Path, kafka_bootstrap: str) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
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
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(log_path.read_text())
            time.sleep(0.2)
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
        code = process.wait(30)
        upstream.shutdown()
    assert code == 0, log_path.read_text()
    transport = KafkaTransport(kafka_bootstrap)
    consumer = transport.consumer([topic], f"check-{uuid.uuid4().hex[:6]}")
    events: list[InferenceEvent] = []
    deadline = time.monotonic() + 20
    while len(events) < 2 and time.monotonic() < deadline:
        events += [e for m in consumer.poll(0.5) for e in decode_record(m.value) if isinstance(e, InferenceEvent)]
    transport.close()
    by_id = {e.request_id: e for e in events}
    assert set(by_id) == {"req-Haml", "req-plea"}
    assert (by_id["req-Haml"].model, by_id["req-Haml"].version) == ("charlm", "3")
    assert by_id["req-plea"].generation is not None and by_id["req-plea"].generation.refusal is True
    assert by_id["req-Haml"].generation is not None and by_id["req-Haml"].generation.output_tokens == 7
