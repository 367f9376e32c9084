"""Windows (bounded, exact ids, safe commits) and alert rules (k-of-n firing, resolution, dedup)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts import AlertRules, Observation, WebhookChannel
from monitor.config import AlertsConfig, WebhookConfig
from monitor.errors import ConfigError
from monitor.metrics import daemon_metrics
from monitor.windows import ClosedWindow, Column, Windows
from tests.support import wait_until

LAYOUT = {"numeric": Column(2), "prediction": Column(None, np.int64, -1), "embedding": Column(3)}


def add(ws: Windows, key: str, offset: int, now: float = 0.0, index: int = 0) -> ClosedWindow | None:
    values = {"numeric": [float(offset), 1.0], "prediction": offset % 3,
              "embedding": [1.0, 2.0, 3.0] if offset % 2 else None}
    return ws.add(key, LAYOUT, values, ("t", 0, offset, index), float(offset), now)


def test_windows_close_at_size_per_key_with_ids_from_the_first_position() -> None:
    ws = Windows(size=3, max_seconds=60, min_samples=2)
    closed = [w for off in range(8) if (w := add(ws, "a/1" if off % 2 == 0 else "b/1", off)) is not None]
    assert [(w.key, w.window_id, w.n) for w in closed] == [("a/1", "a/1@t-0:0", 3), ("b/1", "b/1@t-0:1", 3)]
    assert closed[0].features[:, 0].tolist() == [0.0, 2.0, 4.0]
    assert closed[0].predictions.tolist() == [0, 2, 1]
    assert closed[1].present("embedding").tolist() == [[1.0, 2.0, 3.0]] * 3  # only odd offsets carry one
    assert closed[0].present("embedding") is None
    assert ws.open_events == 2


def test_safe_positions_never_pass_an_open_window() -> None:
    ws = Windows(size=3, max_seconds=60, min_samples=2)
    for off in range(5):  # a/1 closes at 0,1,2; a second window opens at 3
        add(ws, "a/1", off)
    assert ws.safe_positions({("t", 0): 5, ("t", 1): 9}) == {("t", 0): (3, 0), ("t", 1): (9, 0)}
    add(ws, "a/1", 5)  # closes the window that started at 3
    assert ws.safe_positions({("t", 0): 6}) == {("t", 0): (6, 0)}


def test_a_window_opening_inside_a_batch_record_resumes_there() -> None:
    ws = Windows(size=3, max_seconds=60, min_samples=2)
    layout = {"numeric": Column(1)}
    closed = [ws.add("a/1", layout, {"numeric": [float(i)]}, ("t", 0, 40, i), 0.0, 0.0) for i in range(5)]
    assert [w.window_id for w in closed if w is not None] == ["a/1@t-0:40"]
    assert ws.safe_positions({("t", 0): 41}) == {("t", 0): (40, 3)}  # skip the 3 events already windowed
    window = ws.add("a/1", layout, {"numeric": [5.0]}, ("t", 0, 41, 0), 0.0, 0.0)
    assert window is not None and (window.window_id, window.n) == ("a/1@t-0:40+3", 3)


def test_timeout_closes_only_windows_with_enough_samples() -> None:
    ws = Windows(size=100, max_seconds=10, min_samples=2)
    add(ws, "a/1", 0, now=0.0)
    add(ws, "b/1", 1, now=0.0)
    add(ws, "b/1", 2, now=1.0)
    assert ws.expired(now=5.0) == []
    (w,) = ws.expired(now=10.5)
    assert (w.key, w.n, w.reason) == ("b/1", 2, "timeout")


def obs(window: int, drifted: bool, insufficient: bool = False, detector: str = "feature_drift") -> Observation:
    return Observation(model="m", version="1", detector=detector, window=window, window_id=f"m/1@t-0:{window}",
                       window_start=float(window), window_end=window + 1.0, drifted=drifted,
                       insufficient=insufficient)


@pytest.mark.parametrize(("breaches", "of", "expected"), [
    (2, 2, [("firing", 3), ("resolved", 9)]),  # k consecutive
    (2, 3, [("firing", 2), ("resolved", 9)]),  # 2 of the last 3: windows 0 and 2
    (1, 1, [("firing", 0), ("resolved", 9)]),  # window 1 is clean but one clean window does not resolve
])
def test_alert_fires_after_k_of_n_and_resolves_after_r_clean(breaches: int, of: int,
                                                             expected: list[tuple[str, int]]) -> None:
    rules = AlertRules(AlertsConfig(breaches=breaches, of=of, resolve_after=2))
    pattern = [True, False, True, True, True, None, False, True, False, False, False]
    events = []
    for i, p in enumerate(pattern):
        alert = rules.observe(obs(i, drifted=bool(p), insufficient=p is None))
        if alert is not None:
            events.append((alert.status, alert.window))
    assert events == expected
    assert rules.firing == []


def test_alert_ids_are_stable_and_fingerprints_separate_detectors() -> None:
    a = AlertRules(AlertsConfig(breaches=1, of=1)).observe(obs(4, True))
    b = AlertRules(AlertsConfig(breaches=1, of=1)).observe(obs(4, True))
    c = AlertRules(AlertsConfig(breaches=1, of=1)).observe(obs(4, True, detector="prediction_drift"))
    assert a is not None and b is not None and c is not None
    assert a.id == b.id and a.fingerprint == b.fingerprint  # a replayed window re-sends the same id
    assert c.fingerprint != a.fingerprint


def test_a_model_can_have_its_own_window_size_and_no_numeric_features() -> None:
    ws = Windows(size=3, max_seconds=60, min_samples=1, sizes={"llm/1": 2})
    layout = {"numeric": Column(0), "llm": Column(2)}
    first = ws.add("llm/1", layout, {"numeric": [], "llm": [5.0, -1.0]}, ("t", 0, 0, 0), 0.0, 0.0)
    second = ws.add("llm/1", layout, {"numeric": []}, ("t", 0, 1, 0), 0.0, 0.0)
    assert first is None and second is not None and second.n == 2
    assert second.features.shape == (2, 0)
    assert second.present("llm").tolist() == [[5.0, -1.0]]


# -- AlertRules takes its config section ---------------------------------------------------------------------------


def test_alert_rules_take_the_alerts_section_and_its_defaults() -> None:
    rules = AlertRules(AlertsConfig(breaches=1, of=2, resolve_after=3))
    assert (rules.breaches, rules.of, rules.resolve_after) == (1, 2, 3)
    defaults = AlertsConfig()
    assert (AlertRules().breaches, AlertRules().of, AlertRules().resolve_after) == (
        defaults.breaches, defaults.of, defaults.resolve_after)
    with pytest.raises(ConfigError, match="breaches <= of"):
        AlertRules(AlertsConfig(breaches=3, of=2))


# -- probe item 9: a webhook that never answers, and alerts queued at exit -----------------------------------------


class _Silent:
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


def test_probe_9_close_gives_up_on_a_silent_webhook_after_the_grace_and_logs_every_alert(
        caplog: pytest.LogCaptureFixture) -> None:
    silent = _Silent()
    registry = CollectorRegistry()
    # Each attempt would wait 60 s for an answer; the grace at close is 0.2 s.
    channel = WebhookChannel.from_config(WebhookConfig(url=silent.url, timeout_s=60, max_attempts=3,
                                                       close_grace_s=0.2), daemon_metrics(registry))
    alerts = [AlertRules(AlertsConfig(breaches=1, of=1)).observe(obs(i, True, detector=f"d{i}")) for i in range(3)]
    try:
        for alert in alerts:
            assert alert is not None
            channel.send(alert)
        wait_until(lambda: silent.accepted, "the first delivery attempt to connect")
        with caplog.at_level(logging.WARNING, logger="monitor.alerts"):
            channel.close(timeout_s=60)
        # close() returned while the first attempt still waits for its answer: it did not wait out the timeouts
        assert channel._thread.is_alive()
        assert registry.get_sample_value("inferwatch_alert_delivery_failures_total", {"channel": "webhook"}) == 3
        assert registry.get_sample_value("inferwatch_alerts_sent_total", {"channel": "webhook", "status": "firing"}) \
            in (None, 0.0)
        logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        for alert in alerts:
            assert alert is not None and alert.fingerprint in logged
        late = AlertRules(AlertsConfig(breaches=1, of=1)).observe(obs(9, True))
        assert late is not None
        channel.send(late)  # after close: not queued to be lost, counted and logged
        assert registry.get_sample_value("inferwatch_alert_delivery_failures_total", {"channel": "webhook"}) == 4
    finally:
        silent.close()


class _Ok(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        type(self).received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_close_delivers_what_is_queued_within_the_grace() -> None:
    _Ok.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    registry = CollectorRegistry()
    channel = WebhookChannel.from_config(WebhookConfig(url=f"http://127.0.0.1:{hook.server_address[1]}/",
                                                       close_grace_s=60), daemon_metrics(registry))
    try:
        for i in range(5):
            alert = AlertRules(AlertsConfig(breaches=1, of=1)).observe(obs(i, True, detector=f"d{i}"))
            assert alert is not None
            channel.send(alert)
        channel.close()
        assert len(_Ok.received) == 5
        sent = registry.get_sample_value("inferwatch_alerts_sent_total", {"channel": "webhook", "status": "firing"})
        assert sent == 5
        assert registry.get_sample_value("inferwatch_alert_delivery_failures_total", {"channel": "webhook"}) in (
            None, 0.0)
    finally:
        hook.shutdown()
        hook.server_close()


def test_a_window_read_again_after_a_rebalance_counts_once() -> None:
    rules = AlertRules(AlertsConfig(breaches=2, of=3))
    first = Observation("m", "1", "feature_drift", 0, "m/1@t-0:0", 0.0, 1.0, drifted=True)
    assert rules.observe(first) is None
    assert rules.observe(first) is None  # the same window again: still one breach, so nothing fires
    fired = rules.observe(Observation("m", "1", "feature_drift", 1, "m/1@t-0:400", 1.0, 2.0, drifted=True))
    assert fired is not None and fired.status == "firing"
