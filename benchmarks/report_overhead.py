"""Detection latency of an alerting window with Evidently reports off and on, and the report's own build time.

A model with 20 standard-normal numeric features and a 20,000-row reference profile; windows of 10,000 rows.
Alerting windows (f0-f4 shifted by 1 sd) alternate with clean ones, so each drifted window fires a fresh alert
(``breaches: 1 of 1``, ``resolve_after: 1``). Two pipelines, identical but for ``reports.dir``, are driven in
turns (off, on, off, on, ...): the report worker of the second builds its reports in the background while both
keep detecting, so any cost it puts on the detection thread (the copy in ``fired``, sending the job to the report
process) shows up in the "on" latencies. (Reports were first built in a thread of the daemon: the GIL held by
pandas and Evidently then cost one alerting window 1.55 s; they are built in a child process since.)

Detection latency is from handing the closed window to the pipeline (``Pipeline._evaluate``: detectors,
result, alert rules, hooks) to the alert being handed to the channel, timed on the detection thread. The
report's build time (Evidently import excluded: it is timed once, separately) is read from
``inferwatch_report_build_seconds``; ``fired`` is timed on its own too.

    .venv-bench/bin/python benchmarks/report_overhead.py            # 10,000-row windows, 12 alerts per arm
    .venv-bench/bin/python benchmarks/report_overhead.py --quick    # 1,000-row windows, 2 alerts per arm
    .venv-bench/bin/python benchmarks/report_overhead.py --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors import build_reference
from monitor.alerts import Alert, AlertHook, MemoryChannel
from monitor.config import AlertsConfig, Config, DetectConfig, ModelConfig, ReportsConfig, WindowConfig
from monitor.metrics import daemon_metrics
from monitor.pipeline import Pipeline
from monitor.profiles import Profile
from monitor.reports import ReportHook
from monitor.transport import MemoryBus
from monitor.windows import ClosedWindow
from monitor.wiring import build_alerting

F, CLASSES, SHIFTED = 20, ("a", "b", "c"), 5
MODEL, VERSION = "bench", "1"


class TimedChannel(MemoryChannel):
    """Keeps the alerts and when each firing one was handed over (perf_counter, detection thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_at: list[float] = []

    def send(self, alert: Alert) -> None:
        if alert.status == "firing":
            self.sent_at.append(time.perf_counter())
        super().send(alert)


def _profile(seed: int) -> Profile:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20_000, F))  # (n_ref, F)
    reference = build_reference(x, tuple(f"f{j}" for j in range(F)), predictions=rng.choice(3, size=20_000),
                                class_labels=list(CLASSES))
    return Profile(model=MODEL, version=VERSION, reference=reference)


def _window(i: int, n: int, drifted: bool, rng: np.random.Generator) -> ClosedWindow:
    x = rng.normal(size=(n, F))  # (n, F)
    if drifted:
        x[:, :SHIFTED] += 1.0
    return ClosedWindow(key=f"{MODEL}/{VERSION}", index=i, window_id=f"{MODEL}/{VERSION}@events-0:{i * n}", n=n,
                        columns={"numeric": x, "prediction": rng.choice(3, size=n).astype(np.int64),
                                 "latency": np.full((n, 2), np.nan)},
                        first_time=float(i), last_time=float(i) + 1.0, reason="full")


class Arm:
    """One pipeline (reports on or off) fed closed windows directly; the latency of each alerting window."""

    def __init__(self, profile: Profile, n: int, reports_dir: str | None, reference_rows: int) -> None:
        self.registry = CollectorRegistry()
        self.channel = TimedChannel()
        config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile="-")],
                        window=WindowConfig(size=n), detect=DetectConfig(),
                        alerts=AlertsConfig(breaches=1, of=1, resolve_after=1),
                        reports=ReportsConfig(dir=reports_dir, reference_rows=reference_rows))
        bus = MemoryBus()
        self.bus, producer = bus, bus.producer()
        self.hook: ReportHook | None = None
        hooks: list[AlertHook] = []
        if reports_dir is not None:
            self.hook = ReportHook.from_config(config.reports, config.server, {f"{MODEL}/{VERSION}": profile},
                                               self.registry)
            hooks.append(self.hook)
            fired = self.hook.fired
            self.fired_s: list[float] = []

            def timed(*args: Any) -> None:
                started = time.perf_counter()
                fired(*args)
                self.fired_s.append(time.perf_counter() - started)

            self.hook.fired = timed  # type: ignore[method-assign]
        self.alerting = build_alerting(config, self.registry, producer, [self.channel], hooks)
        self.pipeline = Pipeline(config, {f"{MODEL}/{VERSION}": profile}, bus.consumer([config.topics.events], "g"),
                                 producer, daemon_metrics(self.registry), alerting=self.alerting)
        self.latency_s: list[float] = []

    def run(self, window: ClosedWindow) -> None:
        before = len(self.channel.sent_at)
        started = time.perf_counter()
        self.pipeline._evaluate(window)
        if len(self.channel.sent_at) > before:
            self.latency_s.append(self.channel.sent_at[-1] - started)

    def close(self, timeout_s: float) -> None:
        self.alerting.close(timeout_s=timeout_s)
        self.bus.close()

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def run(quick: bool, repeats: int | None) -> dict[str, Any]:
    n, reference_rows = (1_000, 1_000) if quick else (10_000, 5_000)
    alerts = repeats or (2 if quick else 12)
    profile = _profile(0)
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    from monitor.reports.evidently_report import load_evidently

    load_evidently()
    import_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        off, on = Arm(profile, n, None, reference_rows), Arm(profile, n, folder, reference_rows)
        for arm in (off, on):  # warm-up: a clean window (detector set-up paths, first-call costs)
            arm.run(_window(0, n, False, rng))
        for i in range(1, 2 * alerts + 1):
            window = _window(i, n, drifted=i % 2 == 1, rng=rng)  # drifted (alert), then clean (resolve)
            for arm in ((off, on) if i % 4 < 2 else (on, off)):
                arm.run(window)
        backlog = on.hook.backlog if on.hook else 0
        waited = time.perf_counter()
        off.close(timeout_s=0)
        on.close(timeout_s=600)  # the reports still queued are built now
        drain_s = time.perf_counter() - waited
        written = on.sample("inferwatch_reports_total", outcome="written")
        build_sum = on.sample("inferwatch_report_build_seconds_sum")
        build_count = on.sample("inferwatch_report_build_seconds_count")
        report_bytes = [p.stat().st_size for p in Path(folder).rglob("*.html")]
    off_ms = statistics.median(off.latency_s) * 1e3
    on_ms = statistics.median(on.latency_s) * 1e3
    return {
        "window_rows": n, "features": F, "reference_rows": 20_000, "alerting_windows_per_arm": len(on.latency_s),
        "detection_latency_ms": {
            "reports_off": {"median": round(off_ms, 2), "max": round(max(off.latency_s) * 1e3, 2),
                            "all": [round(v * 1e3, 2) for v in off.latency_s]},
            "reports_on": {"median": round(on_ms, 2), "max": round(max(on.latency_s) * 1e3, 2),
                           "all": [round(v * 1e3, 2) for v in on.latency_s]},
            "ratio_on_off_median": round(on_ms / off_ms, 3),
        },
        "fired_ms_median": round(statistics.median(on.fired_s) * 1e3, 3),
        "report": {
            "evidently_import_s": round(import_s, 2),
            "build_s_mean": round(build_sum / build_count, 2) if build_count else None,
            "written": int(written), "dropped": int(on.sample("inferwatch_reports_total", outcome="dropped")),
            "failed": int(on.sample("inferwatch_reports_total", outcome="failed")),
            "backlog_after_last_alert": backlog, "drain_after_last_alert_s": round(drain_s, 2),
            "html_mb_median": round(statistics.median(report_bytes) / 1e6, 2) if report_bytes else None,
            "rows_compared": {"reference": reference_rows, "window": min(n, 10_000)},
        },
    }


def _print(report: dict[str, Any]) -> None:
    d, r = report["detection_latency_ms"], report["report"]
    print(f"{report['window_rows']:,}-row alerting windows x {report['features']} features, "
          f"{report['reference_rows']:,}-row reference, {report['alerting_windows_per_arm']} alerts per arm")
    print(f"{'detection latency (ms)':<26}{'reports off':>12}{'reports on':>12}{'on/off':>8}")
    print(f"{'  median':<26}{d['reports_off']['median']:>12.2f}{d['reports_on']['median']:>12.2f}"
          f"{d['ratio_on_off_median']:>8.3f}")
    print(f"{'  max':<26}{d['reports_off']['max']:>12.2f}{d['reports_on']['max']:>12.2f}")
    print(f"ReportHook.fired on the detection thread: {report['fired_ms_median']:.3f} ms (median)")
    print(f"report build (child process): {r['build_s_mean']} s mean over {r['written']} written "
          f"({r['dropped']} dropped, {r['failed']} failed), HTML {r['html_mb_median']} MB; evidently import "
          f"{r['evidently_import_s']} s once; {r['backlog_after_last_alert']} queued after the last alert, drained "
          f"in {r['drain_after_last_alert_s']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small windows, few alerts (smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=None, help="alerting windows per arm (default 12, quick 2)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    logging.basicConfig(level=logging.ERROR)
    report = run(args.quick, args.repeats)
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
