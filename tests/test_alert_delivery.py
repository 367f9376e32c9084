"""Delivery to real receivers on 127.0.0.1: Standard Webhooks signatures, retries through an outage, Retry-After,
dead letters, a bounded queue, and a shutdown that neither hangs nor loses count."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from monitor.alerts import Alert, AlertMetrics, AlertRules, Delivery, Observation, build_channels
from monitor.alerts.webhook import WebhookFormat
from monitor.config import AlertsConfig, WebhookChannelConfig, load_config_text
from monitor.errors import ConfigError
from tests.support import free_port, wait_until


def secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def alert(i: int = 0, detector: str = "feature_drift") -> Alert:
    fired = AlertRules(AlertsConfig(breaches=1, of=1)).observe(
        Observation("m", "1", detector, i, f"m/1@t-0:{i}", float(i), i + 1.0, True, features=("f1",),
                    summary="drift in f1"))
    assert fired is not None
    return fired


class Receiver:
    """A real HTTP receiver: records every request and answers from a script (then 200)."""

    def __init__(self, port: int = 0, script: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.script = list(script or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
                status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                self.send_response(status)
                for name, value in {**headers, "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Letters:
    def __init__(self) -> None:
        self.items: list[tuple[Alert, str, str]] = []

    def __call__(self, alert: Alert, channel: str, problem: str) -> None:
        self.items.append((alert, channel, problem))


def webhook(url: str, secrets: list[str], registry: CollectorRegistry, letters: Letters | None = None,
            **config: float) -> Delivery:
    return Delivery(WebhookFormat(url, secrets), WebhookChannelConfig(url=url, **config),  # type: ignore[arg-type]
                    AlertMetrics(registry), letters or Letters())


def test_signatures_verify_with_the_standardwebhooks_package_and_tampering_does_not(receiver: Receiver) -> None:
    old, new = secret(), secret()
    delivery = webhook(receiver.url, [new, old], CollectorRegistry())  # rotating: both signatures are sent
    sent = alert()
    delivery.send(sent)
    wait_until(lambda: receiver.requests, "the webhook to arrive")
    delivery.close()
    _, headers, body = receiver.requests[0]
    assert headers["webhook-id"] == sent.id
    for key in (new, old):  # a receiver that still has the old secret verifies too
        assert Webhook(key).verify(body, headers)["id"] == sent.id
    with pytest.raises(WebhookVerificationError):
        Webhook(secret()).verify(body, headers)  # someone else's secret
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body.replace(b'"firing"', b'"resolved"'), headers)  # a tampered body
    stale = {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(new).verify(body, stale)


@pytest.mark.slow
def test_a_receiver_down_for_60_s_gets_each_notification_exactly_once_with_the_same_id() -> None:
    port = free_port()
    registry, letters = CollectorRegistry(), Letters()
    url = f"http://127.0.0.1:{port}/hook"
    delivery = webhook(url, [secret()], registry, letters, max_attempts=100, backoff_s=0.5, max_backoff_s=2.0)
    sent = [alert(i, detector=f"d{i}") for i in range(3)]
    for a in sent:
        delivery.send(a)
    down_until = time.monotonic() + 60
    while time.monotonic() < down_until:  # nothing listens: every attempt is refused
        time.sleep(1)
    up = Receiver(port)
    try:
        wait_until(lambda: len(up.requests) >= 3, "the three notifications after the receiver came back",
                   timeout_s=120)
        delivery.close(timeout_s=30)
        ids = [h["webhook-id"] for _, h, _ in up.requests]
        assert sorted(ids) == sorted(a.id for a in sent)  # each once, under its own id
        assert letters.items == []
        assert registry.get_sample_value("inferwatch_alert_notifications_total",
                                         {"channel": "webhook", "outcome": "delivered"}) == 3
    finally:
        up.close()


def test_a_429_with_retry_after_is_honoured() -> None:
    r = Receiver(script=[(429, {"Retry-After": "2"})])
    try:
        delivery = webhook(r.url, [], CollectorRegistry(), backoff_s=0.01)
        delivery.send(alert())
        wait_until(lambda: len(r.requests) == 2, "the retry after Retry-After")
        delivery.close()
        (first, h1, _), (second, h2, _) = r.requests
        assert second - first >= 2.0  # no request before Retry-After said
        assert h1["webhook-id"] == h2["webhook-id"]
    finally:
        r.close()


def test_after_max_attempts_or_a_refusal_the_notification_is_dead_lettered_with_its_reason() -> None:
    r = Receiver(script=[(503, {})] * 3 + [(400, {})])
    registry, letters = CollectorRegistry(), Letters()
    try:
        delivery = webhook(r.url, [], registry, letters, max_attempts=3, backoff_s=0.01)
        first, second = alert(0, "d0"), alert(1, "d1")
        delivery.send(first)
        delivery.send(second)
        wait_until(lambda: len(letters.items) == 2, "both notifications dead-lettered")
        delivery.close()
        assert [(a.id, c) for a, c, _ in letters.items] == [(first.id, "webhook"), (second.id, "webhook")]
        assert "HTTP 503 after 3 attempt(s)" in letters.items[0][2]
        assert "HTTP 400" in letters.items[1][2] and "not retried" in letters.items[1][2]
        assert len(r.requests) == 4  # 3 attempts, then one: a 400 is not retried
        assert registry.get_sample_value("inferwatch_alert_notifications_total",
                                         {"channel": "webhook", "outcome": "dead_lettered"}) == 2
    finally:
        r.close()


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    gate = threading.Event()
    registry = CollectorRegistry()

    class Held(WebhookFormat):
        def request(self, alert: Alert, now: float):  # type: ignore[no-untyped-def]
            gate.wait(60)
            return super().request(alert, now)

    r = Receiver()
    try:
        delivery = Delivery(Held(r.url), WebhookChannelConfig(url=r.url, queue_size=2), AlertMetrics(registry),
                            Letters())
        sent = [alert(i, f"d{i}") for i in range(5)]
        for a in sent:
            delivery.send(a)
            if a is sent[0]:
                wait_until(lambda: delivery.depth == 0, "the first notification taken into flight")
        gate.set()
        wait_until(lambda: len(r.requests) == 3, "the notifications that were kept")
        delivery.close()
        got = [json.loads(body)["id"] for _, _, body in r.requests]
        assert got == [sent[0].id, sent[3].id, sent[4].id]  # 1 and 2 were the oldest in a full queue
        assert registry.get_sample_value("inferwatch_alert_notifications_total",
                                         {"channel": "webhook", "outcome": "dropped"}) == 2
    finally:
        r.close()


def test_a_channel_takes_only_the_severities_and_detectors_it_asks_for(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    delivery = Delivery(WebhookFormat(receiver.url), WebhookChannelConfig(
        url=receiver.url, min_severity="critical", detectors=("latency_slo",)), AlertMetrics(registry), Letters())
    delivery.send(alert(0, "latency_slo"))  # warning: below critical
    delivery.close()
    assert receiver.requests == []
    assert registry.get_sample_value("inferwatch_alert_notifications_total",
                                     {"channel": "webhook", "outcome": "filtered"}) == 1


# -- shutdown (hostile probe item 9): a webhook that never answers, and alerts queued at exit ----------------------


class Silent:
    """A receiver that accepts connections and never answers (nor reads)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.sock.accept()[0])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_close_gives_up_on_a_silent_receiver_after_the_grace_and_dead_letters_every_alert(
        caplog: pytest.LogCaptureFixture) -> None:
    silent = Silent()
    registry, letters = CollectorRegistry(), Letters()
    # Each attempt would wait 60 s for an answer; the grace at close is 0.2 s.
    delivery = webhook(silent.url, [], registry, letters, timeout_s=60, max_attempts=3, close_grace_s=0.2)
    sent = [alert(i, f"d{i}") for i in range(3)]
    try:
        for a in sent:
            delivery.send(a)
        wait_until(lambda: silent.accepted, "the first delivery attempt to connect")
        with caplog.at_level(logging.WARNING, logger="monitor.alerts"):
            delivery.close(timeout_s=60)
        assert delivery._thread.is_alive()  # close() returned while the first attempt still waits for its answer
        assert sorted(a.id for a, _, _ in letters.items) == sorted(a.id for a in sent)
        logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert all(a.fingerprint in logged for a in sent)
        late = alert(9)
        delivery.send(late)  # after close: not queued to be lost, dead-lettered and logged
        assert letters.items[-1][0].id == late.id
        assert registry.get_sample_value("inferwatch_alert_notifications_total",
                                         {"channel": "webhook", "outcome": "delivered"}) == 0
    finally:
        silent.close()


def test_close_delivers_what_is_queued_within_the_grace(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    delivery = webhook(receiver.url, [], registry, close_grace_s=60)
    for i in range(5):
        delivery.send(alert(i, f"d{i}"))
    delivery.close()
    assert len(receiver.requests) == 5
    assert registry.get_sample_value("inferwatch_alert_notifications_total",
                                     {"channel": "webhook", "outcome": "delivered"}) == 5


# -- building channels from config: secrets ------------------------------------------------------------------------


def test_secrets_come_from_files_or_the_environment_and_bad_ones_fail_naming_the_key(tmp_path: Path) -> None:
    good = tmp_path / "hook.secret"
    good.write_text(secret() + "\n" + secret() + "\n")
    text = f"""models: []
alerts:
  channels:
    - {{type: webhook, url: "http://127.0.0.1:9/x", secret_file: {good}}}
    - {{type: pagerduty, routing_key_env: IW_PD_KEY}}
"""
    alerts = load_config_text(text).alerts
    channels = build_channels(alerts, AlertMetrics(CollectorRegistry()), Letters(), environ={"IW_PD_KEY": "abc"})
    try:
        assert [c.name for c in channels] == ["webhook", "pagerduty"]
        assert "abc" not in repr(channels[1].format)
    finally:
        for c in channels:
            c.close(timeout_s=0)
    with pytest.raises(ConfigError, match=r"alerts.channels\[1\].routing_key_env: the environment variable "
                                          r"IW_PD_KEY is not set"):
        build_channels(alerts, AlertMetrics(CollectorRegistry()), Letters(), environ={})
    missing = load_config_text(text.replace(str(good), str(tmp_path / "nope"))).alerts
    with pytest.raises(ConfigError, match=r"alerts.channels\[0\].secret_file: cannot read .*nope"):
        build_channels(missing, AlertMetrics(CollectorRegistry()), Letters(), environ={"IW_PD_KEY": "abc"})
    (tmp_path / "weak").write_text("password\n")
    weak = load_config_text(text.replace(str(good), str(tmp_path / "weak"))).alerts
    with pytest.raises(ConfigError, match=r"alerts.channels\[0\].secret_file: secret #1 is not a Standard"):
        build_channels(weak, AlertMetrics(CollectorRegistry()), Letters(), environ={"IW_PD_KEY": "abc"})


def test_firing_alerts_restored_after_a_restart_are_posted_again_even_under_a_stream_of_others(
        receiver: Receiver) -> None:
    """Formats with ``repost_s`` (Alertmanager forgets alerts not re-sent) re-post what fires, from the start."""

    class Reposting(WebhookFormat):
        repost_s = 0.2

    restored = alert(0, "d0")
    delivery = Delivery(Reposting(receiver.url), WebhookChannelConfig(url=receiver.url),
                        AlertMetrics(CollectorRegistry()), Letters())
    delivery.restore([restored])

    def reposts() -> int:
        return sum(h["webhook-id"] == restored.id for _, h, _ in receiver.requests)

    wait_until(lambda: reposts() >= 2, "the restored alert posted again")
    before = reposts()
    for i in range(1, 40):  # other notifications keep coming, more often than repost_s
        delivery.send(alert(i, f"d{i}"))
    wait_until(lambda: reposts() >= before + 2, "re-posts going on between the other notifications")
    delivery.close()
