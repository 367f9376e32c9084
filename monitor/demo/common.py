"""What both demo drivers share: a config for one model on its own topics, and waiting for its windows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry

from monitor.alerts import AlertHook, MemoryChannel
from monitor.config import AlertsConfig, Config, KafkaConfig, ModelConfig, RunsConfig, TopicsConfig, WindowConfig
from monitor.demo.output import DemoOutput
from monitor.errors import InferwatchError
from monitor.evaluation import WindowResult
from monitor.profiles import Profile
from monitor.wiring import Wiring, build_pipeline

#: How long a demo waits, after its last request, for the pipeline to evaluate every window.
RESULTS_TIMEOUT_S = 60.0
#: How long a demo's shutdown waits for each part; with ``--out``, the report worker's queue too (importing
#: evidently takes seconds, more on a busy machine, and each report about a second).
CLOSE_TIMEOUT_S = 10.0
OUT_CLOSE_TIMEOUT_S = 300.0


def close_timeout(out: DemoOutput | None) -> float:
    return CLOSE_TIMEOUT_S if out is None else OUT_CLOSE_TIMEOUT_S


def demo_config(name: str, model: str, version: str, profile: str, training_run: str | None, kafka: str | None,
                window: WindowConfig, alerts: AlertsConfig | None = None, log_window_samples: bool = False) -> Config:
    """One model on the embedded bus, or on Kafka with topics and a consumer group of its own (a fresh suffix
    per run, so a demo never reads an earlier run's events, nor its alert state); ``alerts`` (``--alerts-config``)
    sends the demo's alerts to real channels; ``log_window_samples`` logs each alerting window's rows to the
    model's training run (the demo's recorded run, :mod:`monitor.demo.runs`)."""
    alerts = AlertsConfig() if alerts is None else alerts
    runs = RunsConfig(log_window_samples=log_window_samples)
    if kafka is None:
        return Config(models=[ModelConfig(name=model, version=version, profile=profile, training_run=training_run)],
                      window=window, alerts=alerts, runs=runs)
    prefix = f"inferwatch.{name}-{uuid.uuid4().hex[:8]}"
    topics = TopicsConfig(events=f"{prefix}.events", feedback=f"{prefix}.feedback", results=f"{prefix}.results",
                          deadletter=f"{prefix}.deadletter")
    return Config(models=[ModelConfig(name=model, version=version, profile=profile, training_run=training_run)],
                  kafka=KafkaConfig(bootstrap=kafka, group=prefix), topics=topics, window=window, alerts=alerts,
                  runs=runs)


def demo_pipeline(config: Config, profiles: Mapping[str, Profile], channel: MemoryChannel,
                  results: list[WindowResult], out: DemoOutput | None = None) -> Wiring:
    """The pipeline of one demo: alerts collected in ``channel``, results in ``results``; with ``out`` (``--out``)
    reports, Grafana requests and window results are written there too."""
    if out is None:
        return build_pipeline(config, profiles, channels=[channel], on_result=results.append)
    registry = CollectorRegistry()
    config = out.configure(config)
    hooks: list[AlertHook] = out.hooks(config, registry, profiles)

    def on_result(result: WindowResult) -> None:
        results.append(result)
        out.window(result)

    try:
        return build_pipeline(config, profiles, channels=[channel], on_result=on_result, hooks=hooks,
                              registry=registry)
    except BaseException:
        for hook in hooks:
            hook.close(timeout_s=0)
        raise


def wait_for_results(wiring: Wiring, results: Sequence[WindowResult], windows: int, what: str = "windows",
                     timeout_s: float = RESULTS_TIMEOUT_S) -> None:
    """Wait until the background pipeline (:meth:`Wiring.start`) has evaluated ``windows`` windows; raise when
    it has not within ``timeout_s``, or has stopped."""
    deadline = time.monotonic() + timeout_s
    while len(results) < windows and time.monotonic() < deadline and wiring.running:
        time.sleep(0.05)
    if len(results) < windows:
        raise InferwatchError(f"only {len(results)} of {windows} {what} were evaluated within {timeout_s:.0f} s")
