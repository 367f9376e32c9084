"""The Alertmanager channel against a real Alertmanager (the Debian ``prometheus-alertmanager`` binary), which
forwards to a webhook receiver on 127.0.0.1: what we post is what Alertmanager accepts, groups, keeps active
while it is re-posted, resolves, and hands on as its webhook payload (``version`` "4")."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts.alertmanager import AlertmanagerFormat, alertname, firing_ends_at, rfc3339
from monitor.alerts.delivery import AlertMetrics, Delivery
from monitor.alerts.notification import Alert, Evidence
from monitor.config import AlertmanagerChannelConfig
from tests.support import free_port, wait_until

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
T0 = 1_700_000_000.0


# -- a receiver: Alertmanager's webhook target, or a stand-in for Alertmanager itself -------------------------
class Receiver:
    """An HTTP server on 127.0.0.1 recording every POST's path and JSON body; the first ``fail_first`` POSTs
    are answered 503 (and still recorded)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.fail_first = fail_first
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                with receiver._lock:
                    receiver.posts.append((self.path, body))
                    failing = len(receiver.posts) <= receiver.fail_first
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def bodies(self) -> list[Any]:
        with self._lock:
            return [body for _, body in self.posts]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# -- Alertmanager --------------------------------------------------------------------------------------------
class Alertmanager:
    """One Alertmanager process on a free port of 127.0.0.1, no clustering, its state and log in ``folder``,
    routing every alert to ``webhook_url`` (resolves included) with a 1 s group interval."""

    def __init__(self, folder: Path, webhook_url: str) -> None:
        assert BINARY is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "alertmanager.log"
        self._config = folder / "alertmanager.yml"
        self._config.write_text(f"""\
route:
  receiver: hook
  group_by: [alertname, model, version, detector]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: "{webhook_url}/hook"
        send_resolved: true
""")
        self._storage = folder / "data"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(BINARY), f"--config.file={self._config}", f"--storage.path={self._storage}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=debug"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_until(lambda: self._ready(), "Alertmanager to be ready")

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"Alertmanager exited with {self._process.returncode}:\n{self.log_tail()}")
        return _get(f"{self.url}/-/ready") is not None

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the active (not yet resolved) alerts."""
        return list(json.loads(_get(f"{self.url}/api/v2/alerts") or b"[]"))

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        self._process = None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def _get(url: str) -> bytes | None:
    """The body of a 200, else ``None``; connection errors propagate (``wait_until`` reads them as "not yet")."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read()) if response.status == 200 else None


@pytest.fixture
def stopped_alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[Alertmanager]:
    """An Alertmanager not yet started (tests of a receiver that is down at first); stopped at teardown, its
    log tail printed (pytest shows it when the test fails)."""
    if BINARY is None:
        pytest.skip("prometheus-alertmanager is not installed (Debian/Ubuntu: apt-get install prometheus-alertmanager)")
    am = Alertmanager(tmp_path, receiver.url)
    try:
        yield am
    finally:
        am.stop()
        print(f"--- {am.log} (tail) ---\n{am.log_tail()}")


@pytest.fixture
def alertmanager(stopped_alertmanager: Alertmanager) -> Alertmanager:
    stopped_alertmanager.start()
    return stopped_alertmanager


# -- the notifications and the channel -----------------------------------------------------------------------
def firing(**changes: Any) -> Alert:
    fields: dict[str, Any] = dict(
        id="n-1", fingerprint="fp-drift-tabular-7", status="firing", severity="critical", model="tabular",
        version="7", detector="drift", window=3, window_id="tabular/7/3", window_start=T0, window_end=T0 + 300,
        started_at=T0 + 300, n_events=1000, features=("f1",), summary="f1 shifted by 1.5 sd",
        evidence=(Evidence("f1", "ks", 0.52, threshold=0.1, p_value=1e-40, effect=1.5, effect_name="wasserstein_sd"),),
        links={"dashboard": "http://grafana.local/d/inferwatch", "report": "", "training_run": ""},
        training_run="runs/42")
    fields.update(changes)
    return Alert(**fields)


def resolved(alert: Alert, ended_at: float) -> Alert:
    fields = {**alert.__dict__, "id": alert.id + "-resolved", "status": "resolved", "ended_at": ended_at}
    return Alert(**fields)


@pytest.fixture
def channel() -> Iterator[Any]:
    """Makes Deliveries (small backoffs, so retries come quickly); closes them and checks that nothing was
    dead-lettered."""
    made: list[Delivery] = []
    dead: list[tuple[str, str]] = []

    def make(url: str, repost_s: float = 60.0, max_attempts: int = 8) -> Delivery:
        config = AlertmanagerChannelConfig(url=url, repost_s=repost_s, backoff_s=0.05, max_backoff_s=0.5,
                                           max_attempts=max_attempts, timeout_s=10.0)
        d = Delivery(AlertmanagerFormat(url, repost_s), config, AlertMetrics(CollectorRegistry()),
                     lambda alert, name, why: dead.append((alert.id, why)))
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
    assert not dead, f"dead-lettered: {dead}"


def _notification(receiver: Receiver, status: str, name: str) -> dict[str, Any]:
    """Wait for a webhook payload with ``status`` for the alert named ``name``; return it."""
    def find() -> dict[str, Any]:
        for body in receiver.bodies():
            if body.get("status") == status and any(a["labels"].get("alertname") == name for a in body["alerts"]):
                return dict(body)
        return {}
    return wait_until(find, f"a {status} notification for {name} from Alertmanager")


def _active(am: Alertmanager, name: str) -> dict[str, Any]:
    def find() -> dict[str, Any]:
        return next((a for a in am.alerts() if a["labels"].get("alertname") == name), {})
    return wait_until(find, f"{name} active in Alertmanager")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the rendering, without a server ---------------------------------------------------------------------------
def test_request_shape() -> None:
    fmt = AlertmanagerFormat("http://am:9093/", repost_s=60.0)
    req = fmt.request(firing(features=("f1", "f2"), links={"dashboard": "", "report": "", "training_run": ""}),
                      now=T0 + 400)
    assert req.url == "http://am:9093/api/v2/alerts"
    assert req.headers["Content-Type"] == "application/json"
    [posted] = json.loads(req.body)
    assert posted["labels"] == {"alertname": "InferwatchDrift", "model": "tabular", "version": "7",
                                "detector": "drift", "severity": "critical"}  # no "feature": two features
    assert posted["startsAt"] == rfc3339(T0 + 300) == "2023-11-14T22:18:20.000Z"
    assert posted["endsAt"] == rfc3339(firing_ends_at(T0 + 400, 60.0)) == rfc3339(T0 + 400 + 300)
    assert "generatorURL" not in posted  # no dashboard link, no fallback
    assert set(posted["annotations"]) == {"summary", "description", "training_run"}
    assert AlertmanagerFormat("http://am", 60.0, generator_url="http://g").postable(
        firing(links={}), T0)["generatorURL"] == "http://g"
    assert json.loads(fmt.request(resolved(firing(), T0 + 900), T0 + 950).body)[0]["endsAt"] == rfc3339(T0 + 900)
    assert alertname("no_data") == "InferwatchNoData"


# -- against Alertmanager ---------------------------------------------------------------------------------------
def test_firing_alert_reaches_the_receiver(alertmanager: Alertmanager, receiver: Receiver, channel: Any) -> None:
    channel(alertmanager.url).send(firing())
    payload = _notification(receiver, "firing", "InferwatchDrift")
    assert payload["version"] == "4"
    assert payload["groupLabels"] == {"alertname": "InferwatchDrift", "model": "tabular", "version": "7",
                                      "detector": "drift"}
    [alert] = payload["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": "InferwatchDrift", "model": "tabular", "version": "7",
                               "detector": "drift", "severity": "critical", "feature": "f1"}
    assert alert["annotations"]["summary"] == "[CRITICAL] drift on tabular/7: f1 shifted by 1.5 sd"
    assert "window tabular/7/3" in alert["annotations"]["description"]
    assert "f1: ks=0.52 (threshold 0.1), p=1e-40, wasserstein_sd=1.5" in alert["annotations"]["description"]
    assert alert["annotations"]["dashboard"] == alert["generatorURL"] == "http://grafana.local/d/inferwatch"
    assert _time(alert["startsAt"]).timestamp() == T0 + 300

    active = _active(alertmanager, "InferwatchDrift")
    assert active["status"]["state"] == "active"
    assert active["receivers"] == [{"name": "hook"}]


def test_resolve_reaches_the_receiver(alertmanager: Alertmanager, receiver: Receiver, channel: Any) -> None:
    delivery = channel(alertmanager.url)
    alert = firing()
    delivery.send(alert)
    _notification(receiver, "firing", "InferwatchDrift")
    fingerprint = _active(alertmanager, "InferwatchDrift")["fingerprint"]

    ended_at = time.time() - 1
    delivery.send(resolved(alert, ended_at))
    payload = _notification(receiver, "resolved", "InferwatchDrift")
    [gone] = payload["alerts"]
    assert gone["status"] == "resolved" and gone["fingerprint"] == fingerprint  # the same alert, resolved
    assert abs(_time(gone["endsAt"]).timestamp() - ended_at) < 0.01
    wait_until(lambda: not alertmanager.alerts(), "the resolved alert to leave the active alerts")


def test_firing_alerts_are_reposted(alertmanager: Alertmanager, receiver: Receiver, channel: Any) -> None:
    """Alertmanager resolves an alert by itself once ``endsAt`` passes: the channel posts firing alerts again,
    moving ``endsAt`` forward, and Alertmanager keeps one alert (same labels, same fingerprint)."""
    channel(alertmanager.url, repost_s=0.5).send(firing())
    first = _active(alertmanager, "InferwatchDrift")
    later = wait_until(lambda: next((a for a in alertmanager.alerts()
                                     if _time(a["endsAt"]) > _time(first["endsAt"])), {}),
                       "a re-post to move endsAt forward")
    assert later["fingerprint"] == first["fingerprint"] and later["startsAt"] == first["startsAt"]
    assert len(alertmanager.alerts()) == 1
    _notification(receiver, "firing", "InferwatchDrift")
    assert [b["status"] for b in receiver.bodies()] == ["firing"]  # a re-post is no news: not notified again


def test_alertmanager_down_then_up(stopped_alertmanager: Alertmanager, receiver: Receiver, channel: Any,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """Connection refused is retried; the alert gets through once Alertmanager is up."""
    caplog.set_level(logging.INFO, logger="monitor.alerts.delivery")
    channel(stopped_alertmanager.url, max_attempts=10_000).send(firing())
    wait_until(lambda: "retrying" in caplog.text, "a failed attempt to be retried")
    stopped_alertmanager.start()
    assert _notification(receiver, "firing", "InferwatchDrift")["version"] == "4"


def test_503_is_retried(channel: Any) -> None:
    """A plain receiver standing in for Alertmanager answers 503 twice: the third attempt is delivered."""
    stand_in = Receiver(fail_first=2)
    try:
        channel(stand_in.url + "/").send(firing())
        wait_until(lambda: len(stand_in.posts) >= 3, "three attempts")
        assert {path for path, _ in stand_in.posts} == {"/api/v2/alerts"}
        assert all(body[0]["labels"]["alertname"] == "InferwatchDrift" for _, body in stand_in.posts)
    finally:
        stand_in.close()
