"""End to end on the real broker: CNN -> collector -> Apache Kafka -> `inferwatch run` -> webhook and /metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

torch = pytest.importorskip("torch", reason="the end-to-end test serves a torch CNN (install inferwatch[torch])")

from collectors import IMAGE_FEATURES, ClassifierCollector, EventProducer, image_summary  # noqa: E402
from detectors import build_reference  # noqa: E402
from monitor.demo.cnn import _digits, inject, train_cnn  # noqa: E402
from monitor.profiles import Profile, save_profile  # noqa: E402
from monitor.transport import KafkaTransport  # noqa: E402
from tests.support import DEADLINE_S, free_port, wait_until  # noqa: E402

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
WINDOW = 200


class Webhook:
    """A real HTTP receiver on 127.0.0.1 that records every alert POSTed to it."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, object]] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({**json.loads(body), "_idempotency_key": self.headers["Idempotency-Key"]})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/inferwatch"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_alert_after_injected_drift_and_none_before(tmp_path: Path, kafka_bootstrap: str, webhook: Webhook) -> None:
    x_train, x_test, y_train, _ = _digits(seed=3)
    model = train_cnn(x_train, y_train, seed=3, epochs=8)
    with torch.no_grad():
        predictions = model(torch.from_numpy(x_train)).argmax(1).numpy()
        features = image_summary(torch.from_numpy(x_train)).numpy().astype(np.float64)
    save_profile(tmp_path / "cnn.profile.npz", Profile(
        reference=build_reference(features, IMAGE_FEATURES, predictions=predictions,
                                  class_labels=[str(i) for i in range(10)]),
        model="cnn", version="2", training_run="runs/e2e"))
    suffix = uuid.uuid4().hex[:8]
    port = free_port()
    (tmp_path / "inferwatch.yaml").write_text(f"""
models:
  - {{name: cnn, version: 2, profile: cnn.profile.npz}}
kafka: {{bootstrap: "{kafka_bootstrap}", group: "detect-{suffix}"}}
topics: {{events: "events-{suffix}", feedback: "feedback-{suffix}", results: "results-{suffix}",
          deadletter: "deadletter-{suffix}"}}
window: {{size: {WINDOW}, max_seconds: 600}}
alerts: {{breaches: 1, of: 1, webhook: {{url: "{webhook.url}", backoff_s: 0.1}}}}
server: {{port: {port}}}
""")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log_file:
        daemon = subprocess.Popen([sys.executable, "-m", "monitor.cli", "run", "--config",
                                   str(tmp_path / "inferwatch.yaml")], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _ready(port) or daemon.poll() is not None, "the daemon's /readyz")
        assert daemon.poll() is None, log_path.read_text()

        transport = KafkaTransport(kafka_bootstrap)
        producer = EventProducer(transport.producer(), f"events-{suffix}")
        collector = ClassifierCollector(model, producer, "cnn", "2")
        rng = np.random.default_rng(11)

        def serve(windows: int, drifted: bool) -> None:
            for _ in range(windows):
                x = x_test[rng.integers(0, len(x_test), WINDOW)]
                if drifted:
                    x, _ = inject("noise", x, np.zeros(len(x), dtype=np.int64), rng)
                for lo in range(0, WINDOW, 20):
                    collector(torch.from_numpy(np.ascontiguousarray(x[lo:lo + 20])))
            assert producer.flush(DEADLINE_S)

        serve(4, drifted=False)
        raw = transport.producer()  # hostile records straight onto the topic: the daemon must go on
        for value in (b"\x00garbage", b'{"schema":"inferwatch.inference/v1"}', b"{}"):
            raw.send(f"events-{suffix}", value)
        raw.flush()
        labels = {"model": "cnn", "version": "2", "reason": "full"}
        wait_until(lambda: metric(scrape(port), "inferwatch_windows_closed_total", **labels) >= 4,
                   "4 clean windows")

        serve(2, drifted=True)
        wait_until(lambda: metric(scrape(port), "inferwatch_windows_closed_total", **labels) >= 6, "6 windows")
        wait_until(lambda: webhook.alerts, "the webhook alert")
        # Alerts are decided window by window and delivered in order by one thread, so an alert for a clean
        # window (0-3) would have reached the webhook before the first one for the drift injected at window 4.
        early = [a for a in webhook.alerts if a["window"] not in (4, 5)]
        assert early == [], f"an alert fired for a window without drift: {early}"
        alert = webhook.alerts[0]
        assert alert["status"] == "firing" and alert["detector"] == "feature_drift"
        assert alert["window"] in (4, 5), alert  # within two windows of the injection at window 4
        assert alert["model"] == "cnn" and alert["training_run"] == "runs/e2e"
        assert alert["_idempotency_key"] == alert["id"]

        # the webhook answered before the daemon counted the delivery: wait for the count
        def delivery_counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            samples = scrape(port)
            return samples if metric(samples, "inferwatch_alert_notifications_total", channel="webhook",
                                     outcome="delivered") >= 1 else None

        samples = wait_until(delivery_counted, "the alert delivery counted")
        assert metric(samples, "inferwatch_events_consumed_total", model="cnn", version="2") == 6 * WINDOW
        assert metric(samples, "inferwatch_events_rejected_total", reason="malformed_json") == 1
        assert metric(samples, "inferwatch_events_rejected_total", reason="missing_field") == 1
        assert metric(samples, "inferwatch_events_rejected_total", reason="unknown_schema") == 1
        assert metric(samples, "inferwatch_drift_detected", model="cnn", version="2", detector="feature_drift") == 1
        assert metric(samples, "inferwatch_alert_notifications_total", channel="webhook", outcome="delivered") >= 1
        assert metric(samples, "inferwatch_alerts_firing", severity="warning") == 1
        producer.close()
        transport.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            daemon.kill()
            raise
    log = log_path.read_text()
    assert code == 0, log
    assert "received SIGTERM" in log and "stopped after" in log


def _ready(port: int) -> bool:
    try:
        return bool(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200)
    except OSError:
        return False
