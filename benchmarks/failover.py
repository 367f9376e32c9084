"""Failover: how soon a detector killed with SIGKILL and started again publishes its next window, with static
group membership (``kafka.instance_id``) beside a plain (dynamic) member, on a real broker in one run.

A detector process (``inferwatch run``) reads a one-partition topic holding windows of events; once it has
published ``--kill-after`` windows it is killed with SIGKILL and started again at once (same config). From the
kill, the clock reads when the new process serves HTTP (``/healthz``: start-up), when it holds its partition
(``/readyz``) and when its next window is on the results topic. A dynamic member waits for the group to drop the
dead member (``kafka.session_timeout_s`` after the kill); a static one takes its partition back as it joins.
The figure to compare is the wait for the partition once serving.

Without ``--bootstrap`` a private broker is started with ``deploy/local/kafka.sh``::

    .venv-bench/bin/python benchmarks/failover.py            # session timeout 10 s
    .venv-bench/bin/python benchmarks/failover.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from _kafka import broker

from detectors.reference import build_reference
from monitor.events import InferenceEvent, encode_event
from monitor.profiles import Profile, save_profile
from monitor.transport import KafkaTransport, ensure_topics, read_tail

SEED = 0
FEATURES = ("f0", "f1", "f2", "f3")
WINDOW = 200
WINDOWS = 8  # on the topic before the first start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _profile(folder: Path) -> Path:
    rng = np.random.default_rng(SEED)
    path = folder / "bench.profile.npz"
    save_profile(path, Profile(reference=build_reference(rng.normal(size=(5000, len(FEATURES))), FEATURES),
                               model="bench", version="1"))
    return path


def _produce(bootstrap: str, topic: str) -> None:
    rng = np.random.default_rng(SEED + 1)
    transport = KafkaTransport(bootstrap)
    try:
        producer = transport.producer()
        for i, row in enumerate(rng.normal(size=(WINDOWS * WINDOW, len(FEATURES)))):
            event = InferenceEvent(request_id=f"r{i}", time=1.7e9 + i, model="bench", version="1",
                                   task="classification", features=dict(zip(FEATURES, map(float, row), strict=True)))
            producer.send(topic, encode_event(event), b"bench/1")
        producer.flush(60)
    finally:
        transport.close()


def _results(bootstrap: str, topic: str) -> int:
    return len(read_tail(bootstrap, topic, 10_000))


def _answers(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait(condition: Any, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_arm(bootstrap: str, folder: Path, static: bool, session_timeout_s: float, kill_after: int) -> dict[str, Any]:
    """Kill a detector after ``kill_after`` windows, start it again, time its next window."""
    suffix = uuid.uuid4().hex[:8]
    topics = {"events": f"ev-{suffix}", "feedback": f"fb-{suffix}", "results": f"res-{suffix}",
              "deadletter": f"dl-{suffix}"}
    ensure_topics(bootstrap, {name: 1 for name in topics.values()})
    _produce(bootstrap, topics["events"])
    config = folder / f"{suffix}.yaml"
    instance = f', instance_id: "detector-{suffix}"' if static else ""
    port = _free_port()
    config.write_text(f"""
models: [{{name: bench, version: "1", profile: {_profile(folder)}}}]
kafka: {{bootstrap: "{bootstrap}", group: "g-{suffix}", session_timeout_s: {session_timeout_s}{instance}}}
topics: {json.dumps(topics)}
window: {{size: {WINDOW}, max_seconds: 3600}}
server: {{port: {port}}}
log_level: WARNING
""")
    command = [sys.executable, "-m", "monitor.cli", "run", "--config", str(config)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _results(bootstrap, topics["results"]) >= kill_after or first.poll() is not None,
              f"{kill_after} windows")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    published = _results(bootstrap, topics["results"])
    killed = time.monotonic()
    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marks: dict[str, float] = {}
    try:
        for name, done in (("serving_s", lambda: _answers(port, "/healthz")),
                           ("assigned_s", lambda: _answers(port, "/readyz")),
                           ("next_window_s", lambda: _results(bootstrap, topics["results"]) > published)):
            _wait(lambda d=done: d() or second.poll() is not None, name)
            if second.poll() is not None:
                raise SystemExit(f"the restarted detector exited with {second.returncode}")
            marks[name] = round(time.monotonic() - killed, 2)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    return {"membership": "static" if static else "dynamic", "session_timeout_s": session_timeout_s,
            "published_before_kill": published, **marks,
            "partition_wait_s": round(marks["assigned_s"] - marks["serving_s"], 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", help="an existing broker (default: start a private one)")
    parser.add_argument("--session-timeout-s", type=float, default=10.0, help="kafka.session_timeout_s (>= 6)")
    parser.add_argument("--kill-after", type=int, default=2, help="windows published before the kill")
    parser.add_argument("--quick", action="store_true", help="the shortest session timeout the broker allows (6 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    timeout = 6.0 if args.quick else args.session_timeout_s
    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as folder:
        arms = [run_arm(bootstrap, Path(folder), static, timeout, args.kill_after) for static in (True, False)]
    static, dynamic = (a["partition_wait_s"] for a in arms)
    report = {"benchmark": "failover", "machine": platform.machine(), "arms": arms,
              "partition_wait_dynamic_minus_static_s": round(dynamic - static, 2)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"seconds after the SIGKILL (session timeout {timeout:.0f} s):")
        print(f"{'membership':<10} {'serving':>8} {'assigned':>9} {'next window':>12} {'waited for it':>14}")
        for a in arms:
            print(f"{a['membership']:<10} {a['serving_s']:>8.1f} {a['assigned_s']:>9.1f} {a['next_window_s']:>12.1f} "
                  f"{a['partition_wait_s']:>14.1f}")
        print(f"a dynamic member waited {report['partition_wait_dynamic_minus_static_s']:.1f} s longer for its "
              f"partition")
    return report


if __name__ == "__main__":
    main()
