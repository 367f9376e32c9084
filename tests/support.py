"""Helpers shared by the tests: free ports, waiting on a condition, a seeded reference and event streams."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from detectors import build_reference
from monitor.events import InferenceEvent, Latency
from monitor.profiles import Profile, save_profile

T = TypeVar("T")

#: How long tests wait for something that normally takes milliseconds: generous, because CI shares two cores
#: with other work. A test waits on a condition up to this deadline; it never asserts how fast it came.
DEADLINE_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], T], what: str, timeout_s: float = DEADLINE_S, interval_s: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail naming ``what`` after
    ``timeout_s``. Exceptions from ``condition`` count as "not yet" (a server still starting, say)."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # not there yet; the last one is reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}"
                                 + (f" (last error: {last!r})" if last is not None else ""))
        time.sleep(interval_s)


FEATURES = ("f0", "f1", "f2", "f3")
PRIORS = np.array([0.5, 0.3, 0.2])
MODEL, VERSION = "tabular", "7"


def write_profile(folder: Path, seed: int = 0, n: int = 5000) -> Path:
    """A profile of four standard-normal features and a 3-class prediction mix (0.5, 0.3, 0.2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    predictions = rng.choice(3, size=n, p=PRIORS)
    path = folder / "tabular.profile.npz"
    save_profile(path, Profile(reference=build_reference(x, FEATURES, predictions=predictions,
                                                         class_labels=["a", "b", "c"]),
                               model=MODEL, version=VERSION, training_run="runs/42"))
    return path


def events(n: int, rng: np.random.Generator, shift: float = 0.0, shifted: tuple[int, ...] = (1,),
           start: float = 1_700_000_000.0, model: str = MODEL) -> list[InferenceEvent]:
    """``n`` events like the reference; ``shift`` standard deviations added to the ``shifted`` features."""
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, list(shifted)] += shift
    predictions = rng.choice(3, size=n, p=PRIORS)
    return [InferenceEvent(request_id=uuid.uuid4().hex, time=start + i, model=model, version=VERSION,
                           task="classification", features=dict(zip(FEATURES, map(float, row), strict=True)),
                           prediction=int(p), latency=Latency(total_s=0.001))
            for i, (row, p) in enumerate(zip(x, predictions, strict=True))]


class Daemon:
    """HTTP client of a daemon running on 127.0.0.1: requests, and its /metrics read as Prometheus would."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE_S)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        """The sample's value on /metrics, 0 when it is not exported (yet)."""
        text = self.request("GET", "/metrics")[1].decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return 0.0

    def wait_metric(self, name: str, value: float, **labels: str) -> None:
        wait_until(lambda: self.metric(name, **labels) >= value, f"{name}{labels} to reach {value}")


@contextlib.contextmanager
def running_daemon(folder: Path, window: str, server: str = "", extra: str = "") -> Iterator[Daemon]:
    """``run_daemon`` on the embedded bus in a thread, watching the :func:`write_profile` model; ``window`` and
    ``server`` are the YAML flow-mapping bodies of those sections (the port is added), ``extra`` more top-level
    YAML (``reports: {dir: ...}``). Stops it at the end and fails if it does not stop."""
    from monitor.config import load_config_text
    from monitor.daemon import run_daemon

    port = free_port()
    config = load_config_text(f"""
models: [{{name: {MODEL}, version: {VERSION}, profile: "{write_profile(folder)}"}}]
window: {{{window}}}
server: {{port: {port}{", " + server if server else ""}}}
{extra}
""")
    stop = threading.Event()
    thread = threading.Thread(target=run_daemon, args=(config, stop), daemon=True)
    thread.start()
    d = Daemon(port)
    try:
        wait_until(lambda: d.request("GET", "/readyz")[0] == 200, "the daemon to be ready")
        yield d
    finally:
        stop.set()
        thread.join(DEADLINE_S)
    assert not thread.is_alive(), f"the daemon did not stop within {DEADLINE_S:.0f} s of the stop signal"


PROMETHEUS = shutil.which("prometheus")


def prometheus_query(port: int, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query against the Prometheus on ``port``."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    if body["status"] != "success":
        raise AssertionError(body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@contextlib.contextmanager
def running_prometheus(folder: Path, jobs: Mapping[str, int]) -> Iterator[int]:
    """A real Prometheus (Debian package) scraping ``jobs`` (job name → port on 127.0.0.1) every second, until
    every target is up; yields its port and stops it at the end."""
    assert PROMETHEUS is not None, "needs Prometheus: apt-get install prometheus (make test installs it)"
    port = free_port()
    scrape = "\n".join(f'  - {{job_name: {job}, static_configs: [{{targets: ["127.0.0.1:{p}"]}}]}}'
                       for job, p in jobs.items())
    (folder / "prometheus.yml").write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                                           f"scrape_configs:\n{scrape}\n")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(prometheus_query(port, "up == 1")) == len(jobs), "Prometheus to scrape every target",
                   interval_s=0.5)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def sidecar_thread(config: Any, producer: Any, registry: Any) -> tuple[Any, threading.Event, threading.Thread]:
    """Run :func:`collectors.sidecar.run_sidecar` in a daemon thread until the returned event is set: ``(the
    started Sidecar, stop, thread)``; raises when it has not started within the deadline."""
    from collectors.sidecar import Sidecar, run_sidecar

    stop, started = threading.Event(), threading.Event()
    holder: list[Sidecar] = []

    def on_started(sidecar: Sidecar) -> None:
        holder.append(sidecar)
        started.set()

    thread = threading.Thread(target=run_sidecar, args=(config, producer, registry, stop),
                              kwargs={"on_started": on_started}, daemon=True)
    thread.start()
    if not started.wait(DEADLINE_S):
        raise RuntimeError("the sidecar did not start")
    return holder[0], stop, thread
