"""Sidecar overhead: latency added at a steady 200 requests/s, peak throughput next to nginx, and start time.

A tiny asyncio model server on 127.0.0.1 answers every OIP v2 ``POST /v2/models/bench/infer`` with the same
JSON body (a batch of one, three class scores). Measured, in one run:

(a) added latency: an open-loop client paced at 200 requests/s (keep-alive, one connection) sends the same
    request straight to the model server, then through the sidecar, then through nginx (one worker), for
    ``--seconds`` each. Latency is timed from each request's *scheduled* send time (no coordinated omission);
    "added" is a proxy's percentile minus the direct one. Targets (sidecar): p50 <= 0.5 ms, p99 <= 2 ms.
(b) peak throughput: ``wrk -t1 -c32 -d10s --latency -s post.lua`` against the model server itself, the
    sidecar, and nginx (Debian package, ``worker_processes 1`` and ``2``, ``proxy_pass`` with an upstream
    ``keepalive`` pool). Target: sidecar >= 0.5 x nginx with one worker. Each run also reports the proxy's CPU
    time per request (user + system, all its threads or processes: less sensitive to a busy machine than req/s)
    and how busy each CPU was: when CPU 0 (the model server and wrk) is the busier one, the load generator side
    is the limit, for nginx and the sidecar alike.
(c) start to serving: ``inferwatch sidecar`` (the real CLI, Kafka unreachable: it is fail-open) from process
    start to its first ``/healthz`` 200 on the admin port, median of 5 starts. Target: < 1 s.

The sidecar runs in its own process with its real capture path (events built on the producer thread and
published to an in-process bus). CPU pinning on the 2-core machine: every proxy under test (the sidecar,
nginx's master and workers) is pinned to CPU 1; the model server, the latency client and wrk share CPU 0.
So every proxy gets one full core, the same one.

Run::

    .venv/bin/python benchmarks/sidecar_latency.py            # 20 s per latency phase, 10 s per wrk run
    .venv/bin/python benchmarks/sidecar_latency.py --quick    # a few seconds each (CI smoke)
    .venv/bin/python benchmarks/sidecar_latency.py --json     # one JSON object on stdout

If nginx or wrk is missing, the nginx parts are skipped and the output says so. The sidecar runs on uvloop (a
core dependency) when it is installed, as ``inferwatch sidecar`` does; the output names the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATH = "/v2/models/bench/infer"
REQUEST_BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32",
                                       "data": [[float(i) / 16 for i in range(16)]]}]}).encode()
RESPONSE_BODY = json.dumps({"model_name": "bench", "model_version": "1", "outputs": [
    {"name": "probs", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.7, 0.2]}]}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(RESPONSE_BODY), RESPONSE_BODY))
PROXY_CPU, OTHER_CPU = 1, 0


# -- the model server and the sidecar, each run as `python sidecar_latency.py --role ...` ------------------------
class _Upstream(asyncio.Protocol):
    """Answers each complete request (head + Content-Length body) with the fixed response."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length:]
            out.append(RESPONSE)
        if out:
            self.transport.write(b"".join(out))  # type: ignore[attr-defined]


def _serve_upstream(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Upstream, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        await server.serve_forever()
    asyncio.run(main())


def _serve_sidecar(port: int, upstream_port: int) -> None:
    from prometheus_client import CollectorRegistry

    from collectors import EventProducer
    from collectors.sidecar import SidecarConfig, run_sidecar
    from monitor.transport import MemoryBus

    config = SidecarConfig(upstream=f"http://127.0.0.1:{upstream_port}", listen_host="127.0.0.1", listen_port=port,
                           admin_host="127.0.0.1", admin_port=0)
    registry = CollectorRegistry()
    producer = EventProducer(MemoryBus(max_records_per_partition=10_000).producer(), "events", registry=registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    loop: list[str] = []

    def started(_: object) -> None:
        loop.append(type(asyncio.get_running_loop()).__module__.split(".")[0])  # uvloop or asyncio
        print("ready", flush=True)

    run_sidecar(config, producer, registry, stop, on_started=started)
    print("loop", *loop, flush=True)
    producer.close(5)
    captured = registry.get_sample_value("inferwatch_sidecar_captured_events_total", {"route": "oip"})
    print(f"captured {captured:.0f}", flush=True)


# -- helpers -----------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def _spawn(args: list[str], cpu: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: _pin(cpu))
    if proc.stdout is None or proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc


def _wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _paced_latencies(port: int, rate: float, seconds: float) -> np.ndarray:
    """Open loop: request k is due at start + k/rate; latency runs from its due time to the response's last byte."""
    request = (b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
               % (PATH.encode(), len(REQUEST_BODY), REQUEST_BODY))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(50):  # warm-up: connections opened, code paths hot
        sock.sendall(request)
        _read_response(sock)
    n = int(rate * seconds)
    out = np.empty(n)
    start = time.perf_counter() + 0.01
    for k in range(n):
        due = start + k / rate
        while (now := time.perf_counter()) < due:
            if due - now > 0.0005:
                time.sleep(due - now - 0.0004)
        sock.sendall(request)
        _read_response(sock)
        out[k] = time.perf_counter() - due
    sock.close()
    return out


def _read_response(sock: socket.socket) -> None:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0])
            if len(data) >= end + 4 + length:
                return


def _wrk(port: int, seconds: float, folder: Path) -> dict[str, float]:
    script = folder / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(REQUEST_BODY.decode())}\n")
    done = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds:g}s", "--latency", "-s", str(script),
                           f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True, check=True,
                          preexec_fn=lambda: _pin(OTHER_CPU))
    out: dict[str, float] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            out["requests_per_s"] = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            out[f"p{parts[0][:-1]}_ms"] = _ms(parts[1])
        elif "Non-2xx" in line or "Socket errors" in line:
            out["errors"] = out.get("errors", 0) + sum(int(p.strip(",")) for p in parts if p.strip(",").isdigit())
    return out


def _ms(text: str) -> float:
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def _nginx(workers: int, upstream_port: int, folder: Path) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    prefix = folder / f"nginx{workers}"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""daemon off;
master_process on;
worker_processes {workers};
error_log {prefix}/logs/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 10000000;  # the paced client keeps one connection (nginx closes it after 1000 by default)
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream model {{ server 127.0.0.1:{upstream_port}; keepalive 64; keepalive_requests 10000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(prefix)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: _pin(PROXY_CPU))
    _wait_port(port)
    return proc, port


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (all their threads) so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _cpu_busy() -> list[tuple[int, int]]:
    """(busy, total) jiffies of each CPU, from /proc/stat."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            out.append((sum(values) - idle, sum(values)))
    return out


def _measured_wrk(port: int, seconds: float, folder: Path, pids: list[int]) -> dict[str, float]:
    """``_wrk`` plus the proxy's CPU time per request and how busy each CPU was meanwhile."""
    cpu0, busy0 = _cpu_seconds(pids), _cpu_busy()
    out = _wrk(port, seconds, folder)
    cpu1, busy1 = _cpu_seconds(pids), _cpu_busy()
    done = out.get("requests_per_s", 0.0) * seconds
    if pids and done:
        out["proxy_cpu_us_per_request"] = (cpu1 - cpu0) / done * 1e6
    for i, ((b0, t0), (b1, t1)) in enumerate(zip(busy0, busy1, strict=True)):
        out[f"cpu{i}_busy"] = (b1 - b0) / max(t1 - t0, 1)
    return out


def _children(pid: int) -> list[int]:
    try:
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    return [int(p) for p in found.split()]


def _start_times(starts: int) -> list[float]:
    """Seconds from starting ``inferwatch sidecar`` to its first /healthz 200, ``starts`` times."""
    times = []
    for _ in range(starts):
        port, admin = _free_port(), _free_port()
        began = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "sidecar", "--upstream", "http://127.0.0.1:9",
                                 "--kafka", "127.0.0.1:1", "--listen", f"127.0.0.1:{port}", "--admin",
                                 f"127.0.0.1:{admin}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, text=True, preexec_fn=lambda: _pin(PROXY_CPU))
        try:
            deadline = began + 60
            while True:
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError("inferwatch sidecar did not start")
                try:
                    with socket.create_connection(("127.0.0.1", admin), timeout=1) as sock:
                        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: b\r\n\r\n")
                        if sock.recv(64).startswith(b"HTTP/1.1 200"):
                            break
                except OSError:
                    time.sleep(0.002)
            times.append(time.perf_counter() - began)
        finally:
            _stop(proc)
    return times


def run(quick: bool, seconds: float | None) -> dict[str, Any]:
    latency_s = seconds or (2.0 if quick else 20.0)
    wrk_s = 2.0 if quick else 10.0
    py = sys.executable
    here = str(Path(__file__).resolve())
    have = {tool: shutil.which(tool) is not None for tool in ("nginx", "wrk")}
    report: dict[str, Any] = {"pinning": {"proxies_cpu": PROXY_CPU, "upstream_client_wrk_cpu": OTHER_CPU,
                                          "cpus": os.cpu_count()},
                              "sidecar_loop": None}
    _pin(OTHER_CPU)
    starts = _start_times(3 if quick else 5)
    report["start"] = {"seconds": starts, "median_s": float(np.median(starts)), "target_s": 1.0}
    upstream_port, sidecar_port = _free_port(), _free_port()
    upstream = _spawn([py, here, "--role", "upstream", "--port", str(upstream_port)], OTHER_CPU)
    sidecar = _spawn([py, here, "--role", "sidecar", "--port", str(sidecar_port), "--upstream-port",
                      str(upstream_port)], PROXY_CPU)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            q = (50, 99)
            phases = {"direct": _paced_latencies(upstream_port, 200.0, latency_s),
                      "sidecar": _paced_latencies(sidecar_port, 200.0, latency_s)}
            if have["nginx"]:
                nginx, port = _nginx(1, upstream_port, folder)
                try:
                    phases["nginx_1_worker"] = _paced_latencies(port, 200.0, latency_s)
                finally:
                    _stop(nginx)
            pct = {name: np.percentile(values, q) * 1e3 for name, values in phases.items()}
            lat: dict[str, Any] = {"rate_per_s": 200, "requests": len(phases["direct"]),
                                   "target_added_p50_ms": 0.5, "target_added_p99_ms": 2.0}
            for name, (p50, p99) in pct.items():
                lat[f"{name}_p50_ms"], lat[f"{name}_p99_ms"] = float(p50), float(p99)
                if name != "direct":
                    lat[f"{name}_added_p50_ms"] = float(p50 - pct["direct"][0])
                    lat[f"{name}_added_p99_ms"] = float(p99 - pct["direct"][1])
            report["latency"] = lat
            if not have["wrk"]:
                report["throughput"] = {"skipped": "wrk not installed"}
            else:
                runs = {"upstream_direct": _measured_wrk(upstream_port, wrk_s, folder, []),
                        "sidecar": _measured_wrk(sidecar_port, wrk_s, folder, [sidecar.pid])}
                for workers in (1, 2) if have["nginx"] else ():
                    nginx, port = _nginx(workers, upstream_port, folder)
                    try:
                        runs[f"nginx_{workers}_worker"] = _measured_wrk(port, wrk_s, folder,
                                                                        [nginx.pid, *_children(nginx.pid)])
                    finally:
                        _stop(nginx)
                tp: dict[str, Any] = {"wrk": f"-t1 -c32 -d{wrk_s:g}s", "runs": runs, "target_vs_nginx_1": 0.5}
                ours = runs["sidecar"]["requests_per_s"]
                for workers in (1, 2) if have["nginx"] else ():
                    tp[f"sidecar_vs_nginx_{workers}"] = ours / runs[f"nginx_{workers}_worker"]["requests_per_s"]
                if not have["nginx"]:
                    tp["nginx"] = "skipped: nginx not installed"
                report["throughput"] = tp
    finally:
        said = _stop(sidecar)
        tail = said.split()
        report["sidecar_captured_events"] = int(tail[-1]) if tail and tail[-1].isdigit() else None
        report["sidecar_loop"] = next((line.split()[1] for line in said.splitlines() if line.startswith("loop ")),
                                      None)
        _stop(upstream)
    report["targets"] = _targets(report)
    return report


def _targets(report: dict[str, Any]) -> dict[str, bool | None]:
    lat, tp = report["latency"], report.get("throughput", {})
    return {"added_p50_le_0.5ms": lat["sidecar_added_p50_ms"] <= 0.5,
            "added_p99_le_2ms": lat["sidecar_added_p99_ms"] <= 2.0,
            "peak_ge_0.5x_nginx_1": tp["sidecar_vs_nginx_1"] >= 0.5 if "sidecar_vs_nginx_1" in tp else None,
            "start_lt_1s": report["start"]["median_s"] < 1.0}


def _flag(met: bool | None) -> str:
    return "not measured" if met is None else "MET" if met else "NOT MET"


def _table(report: dict[str, Any]) -> str:
    lat, targets = report["latency"], report["targets"]
    proxies = [name for name in ("sidecar", "nginx_1_worker") if f"{name}_p50_ms" in lat]
    lines = [f"sidecar event loop: {report['sidecar_loop']}", "",
             f"added latency at {lat['rate_per_s']} requests/s ({lat['requests']} requests per phase, open loop)",
             f"{'':16}" + "".join(f"{name:>16}" for name in ["direct", *proxies]),
             f"{'p50 ms':16}" + "".join(f"{lat[f'{n}_p50_ms']:>16.3f}" for n in ["direct", *proxies]),
             f"{'p99 ms':16}" + "".join(f"{lat[f'{n}_p99_ms']:>16.3f}" for n in ["direct", *proxies]),
             f"{'added p50 ms':16}{'':>16}" + "".join(f"{lat[f'{n}_added_p50_ms']:>16.3f}" for n in proxies),
             f"{'added p99 ms':16}{'':>16}" + "".join(f"{lat[f'{n}_added_p99_ms']:>16.3f}" for n in proxies),
             f"sidecar added p50 {lat['sidecar_added_p50_ms']:.3f} ms (target <= 0.5): "
             f"{_flag(targets['added_p50_le_0.5ms'])}",
             f"sidecar added p99 {lat['sidecar_added_p99_ms']:.3f} ms (target <= 2.0): "
             f"{_flag(targets['added_p99_le_2ms'])}", ""]
    tp = report["throughput"]
    if "skipped" in tp:
        lines.append(f"throughput: skipped ({tp['skipped']})")
    else:
        base = tp["runs"].get("nginx_1_worker", {}).get("requests_per_s", float("nan"))
        lines.append(f"peak throughput, wrk {tp['wrk']} (proxies pinned to CPU {PROXY_CPU}; model server and wrk "
                     f"on CPU {OTHER_CPU})")
        lines.append(f"{'':18}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'x nginx-1':>11}{'proxy CPU':>14}"
                     f"{'CPU0 busy':>11}{'CPU1 busy':>11}")
        for name, r in tp["runs"].items():
            cpu = r.get("proxy_cpu_us_per_request")
            lines.append(f"{name:18}{r['requests_per_s']:>10.0f}{r.get('p50_ms', float('nan')):>9.3f}"
                         f"{r.get('p99_ms', float('nan')):>9.3f}{r['requests_per_s'] / base:>11.2f}"
                         f"{'' if cpu is None else f'{cpu:.1f} us/req':>14}"
                         f"{r.get('cpu0_busy', float('nan')):>11.0%}{r.get('cpu1_busy', float('nan')):>11.0%}")
        if "sidecar_vs_nginx_1" in tp:
            lines.append(f"sidecar / nginx(1 worker) = {tp['sidecar_vs_nginx_1']:.2f}  (target >= 0.5): "
                         f"{_flag(targets['peak_ge_0.5x_nginx_1'])}")
            lines.append(f"sidecar / nginx(2 workers) = {tp['sidecar_vs_nginx_2']:.2f}")
        else:
            lines.append(f"nginx: {tp.get('nginx')}")
    start = report["start"]
    lines += ["", f"start to serving (inferwatch sidecar to first /healthz 200): median {start['median_s']:.3f} s of "
              f"{', '.join(f'{t:.3f}' for t in start['seconds'])} (target < 1 s): {_flag(targets['start_lt_1s'])}",
              f"events captured by the sidecar: {report['sidecar_captured_events']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per measurement (CI smoke)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, help="length of each latency phase")
    parser.add_argument("--role", choices=("upstream", "sidecar"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "upstream":
        _serve_upstream(args.port)
        return 0
    if args.role == "sidecar":
        _serve_sidecar(args.port, args.upstream_port)
        return 0
    report = run(args.quick, args.seconds)
    print(json.dumps(report, indent=2, default=float) if args.json else _table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
