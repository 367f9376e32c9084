"""The Slack and PagerDuty channels, delivered through :class:`Delivery` to real HTTP receivers on 127.0.0.1.

The receivers answer what each test scripts (Slack's 200 and 429 with ``Retry-After``, PagerDuty's 202 and 400)
and record every request with its monotonic arrival time, so that the tests check what went over the wire and
wait on conditions instead of sleeping.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts.delivery import AlertMetrics, Delivery, Format
from monitor.alerts.notification import Alert, Evidence
from monitor.alerts.pagerduty import PagerDutyFormat, dedup_key
from monitor.alerts.slack import SlackFormat, message
from monitor.config import PagerDutyChannelConfig, SlackChannelConfig, _Channel
from tests.support import wait_until

T0 = 1_700_000_000.0
N_FEATURES = 12


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the request arrived
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and answers the scripted ``(status, headers)`` in turn,
    then ``default`` for the rest."""

    def __init__(self, script: list[tuple[int, dict[str, str]]] | None = None, default: int = 200,
                 body: bytes = b"ok") -> None:
        self.requests: list[Received] = []
        self._script = list(script or [])
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.monotonic()
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.requests.append(Received(at, self.path, dict(self.headers.items()), data))
                    status, headers = receiver._script.pop(0) if receiver._script else (default, {})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="test-receiver",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class Channel:
    """A :class:`Delivery` with its registry and a dead-letter sink that records ``(alert, channel, reason)``."""

    def __init__(self, fmt: Format, config: _Channel) -> None:
        self.registry = CollectorRegistry()
        self.dead: list[tuple[Alert, str, str]] = []
        self.delivery = Delivery(fmt, config, AlertMetrics(self.registry),
                                 lambda alert, channel, reason: self.dead.append((alert, channel, reason)))

    def count(self, outcome: str) -> float | None:
        return self.registry.get_sample_value("inferwatch_alert_notifications_total",
                                              {"channel": self.delivery.name, "outcome": outcome})


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*args: Any, **kwargs: Any) -> Receiver:
        started.append(Receiver(*args, **kwargs))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def channels() -> Iterator[Callable[[Format, _Channel], Channel]]:
    opened: list[Channel] = []

    def open_(fmt: Format, config: _Channel) -> Channel:
        opened.append(Channel(fmt, config))
        return opened[-1]

    yield open_
    for channel in opened:
        channel.delivery.close(timeout_s=5)


def make_alert(status: str = "firing", severity: str = "critical", **changes: Any) -> Alert:
    """A drift alert over 12 features (f11 strongest) with a 5000-character summary: past every Slack limit."""
    evidence = tuple(Evidence(feature=f"f{i}", statistic="ks", value=0.01 * (i + 1), threshold=0.05,
                              p_value=10.0 ** -(i + 1), effect=0.1 * i, effect_name="wasserstein_sd")
                     for i in range(N_FEATURES))
    alert = Alert(id=secrets.token_hex(8), fingerprint="fp-tabular-7-drift", status="firing",
                  severity="critical", model="tabular", version="7", detector="drift", window=3,
                  window_id="tabular/7/3", window_start=T0, window_end=T0 + 300, started_at=T0 + 300,
                  n_events=4000, features=tuple(f"f{i}" for i in range(N_FEATURES)),
                  summary="distribution shift <& detail> " + "x" * 4970, evidence=evidence,
                  links={"dashboard": "http://grafana.local/d/inferwatch?var-model=tabular&from=now-1h",
                         "report": "", "training_run": ""},
                  training_run="runs/42")
    return replace(alert, status=status, severity=severity, **changes)  # type: ignore[arg-type]


def resolved(alert: Alert) -> Alert:
    return replace(alert, id=secrets.token_hex(8), status="resolved", ended_at=alert.window_end + 600)


def check_slack_limits(msg: dict[str, Any]) -> None:
    assert isinstance(msg["text"], str) and 0 < len(msg["text"]) <= 3000
    blocks = msg["blocks"]
    assert 0 < len(blocks) <= 50
    headers = [b for b in blocks if b["type"] == "header"]
    assert len(headers) == 1 and headers[0]["text"]["type"] == "plain_text"
    assert 0 < len(headers[0]["text"]["text"]) <= 150
    for block in blocks:
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert 0 < len(block["text"]["text"]) <= 3000
            fields = block.get("fields", [])
            assert len(fields) <= 10
            assert all(0 < len(f["text"]) <= 2000 for f in fields)
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            assert all(0 < len(e["text"]) <= 3000 for e in block["elements"])


def slack_text(msg: dict[str, Any]) -> str:
    """Every piece of text in the message, to search in."""
    parts = [msg["text"]]
    for block in msg["blocks"]:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [f["text"] for f in block.get("fields", [])] + [e["text"] for e in block.get("elements", [])]
    return "\n".join(parts)


# -- Slack --------------------------------------------------------------------------------------------------------
def test_slack_delivers_a_firing_alert_within_slack_limits(receivers: Callable[..., Receiver],
                                                            channels: Callable[[Format, _Channel], Channel]) -> None:
    receiver = receivers()
    url = receiver.url + "/services/T000/B000/secret"
    channel = channels(SlackFormat(url), SlackChannelConfig(url=url, backoff_s=0.05))
    alert = make_alert()
    channel.delivery.send(alert)
    wait_until(lambda: channel.count("delivered") == 1, "the Slack message to be delivered")

    [request] = receiver.received()
    assert request.path == "/services/T000/B000/secret"
    assert request.headers["Content-Type"] == "application/json"
    msg = request.json()
    check_slack_limits(msg)
    assert msg["blocks"][0]["text"]["text"] == alert.title
    text = slack_text(msg)
    assert "*f11*" in text and "ks = 0.12" in text  # the strongest feature, with its numbers
    assert "*f0*" not in text and "and 7 more" in text  # only the top 5
    assert msg["blocks"][0]["text"]["text"].startswith("[CRITICAL]")
    assert ":rotating_light: *Firing*" in text and "resolved" not in text.lower()
    assert "&lt;&amp; detail&gt;" in text  # a detector's text cannot inject mrkdwn
    assert "2023-11-14T22:13:20Z" in text and "4,000 events" in text
    assert "<http://grafana.local/d/inferwatch?var-model=tabular&from=now-1h|Dashboard>" in text
    assert "Report" not in text  # an empty link is left out
    assert "runs/42" in text
    assert channel.dead == []


def test_slack_renders_a_resolved_alert_as_resolved(receivers: Callable[..., Receiver],
                                                    channels: Callable[[Format, _Channel], Channel]) -> None:
    receiver = receivers()
    channel = channels(SlackFormat(receiver.url + "/hook"), SlackChannelConfig(url=receiver.url, backoff_s=0.05))
    firing = make_alert()
    channel.delivery.send(firing)
    channel.delivery.send(resolved(firing))
    wait_until(lambda: channel.count("delivered") == 2, "both Slack messages to be delivered")

    first, second = (r.json() for r in receiver.received())
    check_slack_limits(second)
    assert second["blocks"][0]["text"]["text"].startswith("[resolved]")
    assert ":white_check_mark: *Resolved*" in slack_text(second)
    assert "Resolved" not in slack_text(first)


def test_slack_message_without_evidence_lists_the_features() -> None:
    msg = message(make_alert(evidence=(), features=tuple(f"feature_{i}" for i in range(30)), summary="",
                             links={"dashboard": "", "report": "", "training_run": ""}, training_run=None))
    check_slack_limits(msg)
    [fields] = [b["fields"] for b in msg["blocks"] if "fields" in b]
    assert [f["text"] for f in fields[:2]] == ["`feature_0`", "`feature_1`"]
    assert fields[-1]["text"] == "_and 21 more_"
    assert "<" not in slack_text(msg)  # no links configured: none rendered


def test_slack_clips_at_an_escape_and_in_the_header() -> None:
    msg = message(make_alert(model="m" * 200, summary="&" * 5000))
    check_slack_limits(msg)
    assert msg["blocks"][0]["text"]["text"].endswith("…")
    overview = msg["blocks"][1]["text"]["text"]
    assert overview.endswith("&amp;…")  # never half an escape


def test_slack_429_is_retried_after_retry_after(receivers: Callable[..., Receiver],
                                                 channels: Callable[[Format, _Channel], Channel]) -> None:
    receiver = receivers([(429, {"Retry-After": "2"})], body=b"rate_limited")
    channel = channels(SlackFormat(receiver.url + "/hook"), SlackChannelConfig(url=receiver.url, backoff_s=0.05))
    alert = make_alert()
    channel.delivery.send(alert)
    wait_until(lambda: channel.count("delivered") == 1, "the Slack message to be delivered after the 429")

    first, second = receiver.received()
    assert second.at - first.at >= 2.0  # Retry-After honoured (no upper bound: CI may be slow)
    assert first.body == second.body
    assert channel.count("dead_lettered") == 0 and channel.dead == []


def test_slack_repr_hides_the_webhook_path() -> None:
    fmt = SlackFormat("https://hooks.slack.com/services/T000/B000/XXXXSECRET")
    assert "XXXXSECRET" not in repr(fmt) and "hooks.slack.com" in repr(fmt)


# -- PagerDuty ----------------------------------------------------------------------------------------------------
PD_OK = b'{"status":"success","message":"Event processed","dedup_key":"x"}'


def test_pagerduty_trigger_then_resolve_share_the_dedup_key(receivers: Callable[..., Receiver],
                                                            channels: Callable[[Format, _Channel], Channel]) -> None:
    receiver = receivers(default=202, body=PD_OK)
    key = secrets.token_hex(16)
    url = receiver.url + "/v2/enqueue"
    channel = channels(PagerDutyFormat(url, key), PagerDutyChannelConfig(url=url, backoff_s=0.05))
    firing = make_alert()
    channel.delivery.send(firing)
    channel.delivery.send(resolved(firing))
    wait_until(lambda: channel.count("delivered") == 2, "trigger and resolve to be delivered (202)")

    trigger, resolve = (r.json() for r in receiver.received())
    assert all(r.path == "/v2/enqueue" and r.headers["Content-Type"] == "application/json"
               for r in receiver.received())
    assert trigger["routing_key"] == resolve["routing_key"] == key
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == dedup_key(firing.fingerprint)
    assert trigger["dedup_key"] == "inferwatch-" + firing.fingerprint
    assert set(resolve) == {"routing_key", "event_action", "dedup_key"}

    payload = trigger["payload"]
    assert len(payload["summary"]) <= 1024 and payload["summary"].startswith(firing.title)
    assert payload["source"] == "inferwatch" and payload["severity"] == "critical"
    assert payload["timestamp"] == "2023-11-14T22:18:20.000+00:00"  # window_end
    assert (payload["component"], payload["group"], payload["class"]) == ("tabular/7", "tabular", "drift")
    details = payload["custom_details"]
    assert details["window_id"] == "tabular/7/3" and details["n_events"] == 4000
    assert details["window_start"] == "2023-11-14T22:13:20.000+00:00"
    assert details["summary"] == firing.summary and details["training_run"] == "runs/42"
    assert details["features"] == list(firing.features)
    assert len(details["evidence"]) == N_FEATURES and details["evidence"][0]["feature"] == "f11"
    assert trigger["links"] == [{"href": firing.links["dashboard"], "text": "dashboard"}]
    assert trigger["client"] == "inferwatch"
    assert channel.dead == []


@pytest.mark.parametrize("severity", ["critical", "warning", "info"])
def test_pagerduty_severity_mapping(severity: str) -> None:
    fmt = PagerDutyFormat("http://127.0.0.1:9/v2/enqueue", "k" * 32)
    event = json.loads(fmt.request(make_alert(severity=severity), T0).body)
    assert event["payload"]["severity"] == severity


def test_pagerduty_400_is_dead_lettered_not_retried(receivers: Callable[..., Receiver],
                                                    channels: Callable[[Format, _Channel], Channel]) -> None:
    receiver = receivers(default=400, body=b'{"status":"invalid event","message":"Event object is invalid"}')
    channel = channels(PagerDutyFormat(receiver.url, secrets.token_hex(16)),
                       PagerDutyChannelConfig(url=receiver.url, backoff_s=0.05, max_attempts=5))
    alert = make_alert()
    channel.delivery.send(alert)
    wait_until(lambda: channel.dead, "the refused event to be dead-lettered")

    [(dead, name, reason)] = channel.dead
    assert dead is alert and name == "pagerduty"
    assert "HTTP 400" in reason
    assert len(receiver.received()) == 1  # not retried
    assert channel.count("dead_lettered") == 1 and channel.count("delivered") == 0


def test_pagerduty_routing_key_stays_out_of_reprs_and_logs(receivers: Callable[..., Receiver],
                                                          channels: Callable[[Format, _Channel], Channel],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = "rk" + secrets.token_hex(15)
    receiver = receivers([(202, {}), (503, {"Retry-After": "0"}), (202, {}), (400, {})], body=PD_OK)
    fmt = PagerDutyFormat(receiver.url, key + "\n")
    assert key not in repr(fmt) and key not in str(fmt) and "hidden" in repr(fmt)

    channel = channels(fmt, PagerDutyChannelConfig(url=receiver.url, backoff_s=0.05))
    firing = make_alert()
    channel.delivery.send(firing)  # 202
    channel.delivery.send(resolved(firing))  # 503, then 202
    channel.delivery.send(make_alert(fingerprint="other"))  # 400: dead-lettered with the receiver's answer
    wait_until(lambda: channel.dead, "the third event to be dead-lettered")
    assert channel.count("delivered") == 2
    assert [r.json()["routing_key"] for r in receiver.received()] == [key] * 4  # stripped of its newline

    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "retrying" in logged and "not delivered" in logged  # the logs were captured...
    assert key not in logged  # ...and the key is not in them
    assert all(key not in reason for _, _, reason in channel.dead)


def test_pagerduty_refuses_an_empty_routing_key() -> None:
    with pytest.raises(ValueError, match="routing key is empty"):
        PagerDutyFormat("http://127.0.0.1:9/v2/enqueue", " \n")
