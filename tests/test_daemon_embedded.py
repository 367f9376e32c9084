"""`inferwatch run` on the embedded bus: HTTP ingest, hostile HTTP input, /metrics, graceful stop; the shutdown
order of the pipeline that `build_pipeline` wires for the daemon and the demos."""

from __future__ import annotations

import http.client
import inspect
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from monitor import cli
from monitor.config import AlertsConfig, Config, ModelConfig, WebhookConfig, WindowConfig
from monitor.errors import TransportError
from monitor.evaluation import WindowResult
from monitor.events import encode_batch
from monitor.wiring import build_pipeline
from tests.support import (
    MODEL,
    VERSION,
    Daemon,
    events,
    running_daemon,
    wait_until,
    write_profile,
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path, "size: 300", "max_body_bytes: 200000") as d:
        yield d


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


class _SlowWebhook(BaseHTTPRequestHandler):
    """Records each alert it is sent, answering after a pause: delivery takes a while, as over a network."""

    received: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.5)
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_close_evaluates_the_open_window_and_delivers_its_alert_before_closing_the_transport(tmp_path: Path) -> None:
    # build_pipeline's close() order: stop consuming (the open window is evaluated on the embedded bus), deliver
    # the queued alert, then close consumer, producer and bus. Closing the channels or the bus first loses it.
    _SlowWebhook.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _SlowWebhook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile=str(write_profile(tmp_path)))],
                    window=WindowConfig(size=100, max_seconds=3600, min_samples=30),
                    alerts=AlertsConfig(breaches=1, of=1, resolve_after=1, webhook=WebhookConfig(
                        url=f"http://127.0.0.1:{hook.server_address[1]}/hook", max_attempts=1)))
    results: list[WindowResult] = []
    wiring = build_pipeline(config, on_result=results.append)
    rng = np.random.default_rng(3)
    wiring.producer.send(config.topics.events, encode_batch(events(100, rng)))  # one clean, full window
    wiring.producer.send(config.topics.events, encode_batch(events(60, rng, shift=3.0, start=1_700_000_100.0)))
    try:
        wiring.start()
        wait_until(lambda: len(results) == 1, "the full window to be evaluated")
        assert not results[0].drifted_features and wiring.running
    finally:
        wiring.close()
        hook.shutdown()
        hook.server_close()
    assert not wiring.running
    assert [r.n_events for r in results] == [100, 60]  # the open window, evaluated at shutdown
    assert results[1].drifted_features == ("f1",)
    firing = [a for a in _SlowWebhook.received if a["status"] == "firing"]  # delivered before close() returned
    assert [a["window"] for a in firing] == [results[1].index] and "f1" in firing[0]["features"]  # type: ignore
    with pytest.raises(TransportError):
        wiring.consumer.poll(0)
    with pytest.raises(TransportError):
        wiring.producer.send(config.topics.events, b"{}")


def test_a_generator_profile_without_input_features_loads_and_an_empty_one_is_refused(tmp_path: Path) -> None:
    from detectors import build_llm_reference
    from monitor.errors import ProfileError
    from monitor.profiles import Profile, save_profile
    from monitor.wiring import load_profiles

    rng = np.random.default_rng(1)
    llm = build_llm_reference(rng.poisson(50, 200).astype(float), rng.normal(-1, 0.2, 200), np.zeros(200, bool),
                              np.zeros(200, bool))
    save_profile(tmp_path / "gen.npz", Profile(model="charlm", version="1", llm=llm))
    save_profile(tmp_path / "empty.npz", Profile(model="charlm", version="2"))
    config = Config(models=[ModelConfig(name="charlm", version="1", profile=str(tmp_path / "gen.npz"))])
    assert load_profiles(config)["charlm/1"].llm is not None
    empty = Config(models=[ModelConfig(name="charlm", version="2", profile=str(tmp_path / "empty.npz"))])
    with pytest.raises(ProfileError, match="neither input features nor LLM outputs"):
        load_profiles(empty)


def test_a_shutdown_that_outlives_its_grace_period_exits_with_status_1() -> None:
    from monitor.daemon import exit_after

    exited: list[int] = []
    hung = exit_after(0.05, exited.append)  # nothing cancels it: the shutdown hangs
    wait_until(lambda: exited == [1], "the grace period to expire")
    finished = exit_after(60.0, exited.append)
    finished.cancel()  # the shutdown finished in time
    finished.join()
    hung.join()
    assert exited == [1]


def test_the_run_command_tunes_its_process_for_the_loop() -> None:
    """``tune_process`` is process-wide: checked in a process of its own (the soak benchmark measures its effect
    on memory, the end-to-end benchmark on speed)."""
    code = ("import gc, logging; from monitor.daemon import GC_YOUNG_THRESHOLD, tune_process; import monitor.cli; "
            "logging.basicConfig(); tune_process(); "
            "assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 700, gc.get_threshold(); "
            "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mmap threshold" not in done.stderr  # glibc took the fixed threshold
    assert "tune_process()" in inspect.getsource(cli._run)  # what `inferwatch run` calls before it starts
