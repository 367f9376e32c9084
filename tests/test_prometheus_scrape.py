"""A real Prometheus (Debian package) scrapes the daemon's /metrics and answers queries about it."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from monitor.config import load_config_text
from monitor.daemon import run_daemon
from monitor.events import encode_batch
from tests.support import DEADLINE_S, events, free_port, wait_until, write_profile

PROMETHEUS = shutil.which("prometheus")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PROMETHEUS is None, reason="needs Prometheus: apt-get install prometheus "
                                                              "(make test installs it)")]


def query(port: int, promql: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    if body["status"] != "success":
        raise AssertionError(body)
    result: list[dict[str, object]] = body["data"]["result"]
    return result


@pytest.fixture
def daemon_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    config = load_config_text(f"""
models: [{{name: tabular, version: 7, profile: "{write_profile(tmp_path)}"}}]
window: {{size: 300}}
server: {{port: {port}}}
""")
    stop = threading.Event()
    thread = threading.Thread(target=run_daemon, args=(config, stop), daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(DEADLINE_S)


def test_prometheus_scrapes_the_daemon(tmp_path: Path, daemon_port: int) -> None:
    body = encode_batch(events(600, np.random.default_rng(9)))
    request = urllib.request.Request(f"http://127.0.0.1:{daemon_port}/v1/events", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{daemon_port}/readyz", timeout=5).status == 200,
               "the daemon's /readyz")
    assert urllib.request.urlopen(request, timeout=DEADLINE_S).status == 202
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: inferwatch
    static_configs: [{{targets: ["127.0.0.1:{daemon_port}"]}}]
""")
    prometheus = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def windows_closed() -> float:
            found = query(prom_port, 'inferwatch_windows_closed_total{model="tabular",version="7"}')
            return sum(float(w["value"][1]) for w in found)  # type: ignore[index]

        # Prometheus may first scrape while the second window is still being evaluated: wait for both
        wait_until(lambda: windows_closed() >= 2, "Prometheus to scrape both closed windows", interval_s=0.5)
        assert windows_closed() == 2
        up = query(prom_port, 'up{job="inferwatch"}')
        assert float(up[0]["value"][1]) == 1  # type: ignore[index]
        consumed = query(prom_port, "sum(inferwatch_events_consumed_total)")
        assert float(consumed[0]["value"][1]) == 600  # type: ignore[index]
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(15)
        except subprocess.TimeoutExpired:
            prometheus.kill()
