"""A real Prometheus (Debian package) scrapes the daemon's /metrics and answers queries about it."""

from __future__ import annotations

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
from tests.support import (
    DEADLINE_S,
    PROMETHEUS,
    events,
    free_port,
    prometheus_query,
    running_prometheus,
    wait_until,
    write_profile,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PROMETHEUS is None, reason="needs Prometheus: apt-get install prometheus "
                                                              "(make test installs it)")]


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
    with running_prometheus(tmp_path, {"inferwatch": daemon_port}) as prom_port:
        def windows_closed() -> float:
            found = prometheus_query(prom_port, 'inferwatch_windows_closed_total{model="tabular",version="7"}')
            return sum(float(w["value"][1]) for w in found)

        # Prometheus may first scrape while the second window is still being evaluated: wait for both
        wait_until(lambda: windows_closed() >= 2, "Prometheus to scrape both closed windows", interval_s=0.5)
        assert windows_closed() == 2
        up = prometheus_query(prom_port, 'up{job="inferwatch"}')
        assert float(up[0]["value"][1]) == 1
        consumed = prometheus_query(prom_port, "sum(inferwatch_events_consumed_total)")
        assert float(consumed[0]["value"][1]) == 600
