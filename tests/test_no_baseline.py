"""Events of a version that has no profile: dead-lettered as ``no_baseline`` (counted), and one ``no_baseline``
alert for the model — not one per event, nor per version — that resolves once such traffic stops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from monitor.alerts import Alerting, AlertMetrics, AlertRules, FileStore, MemoryChannel
from monitor.config import AlertsConfig, Config, ModelConfig, RuleConfig, WindowConfig
from monitor.events import encode_batch
from monitor.wiring import build_pipeline
from tests.support import MODEL, VERSION, events, wait_until, write_profile
from tests.test_alert_rules import Clock


def test_one_alert_per_model_however_many_events_and_versions_then_resolved_after_quiet(tmp_path: Path) -> None:
    clock = Clock(0.0)
    config = AlertsConfig(rules=(RuleConfig(detector="no_baseline", severity="critical", after_s=300),))
    channel = MemoryChannel()
    alerting = Alerting(AlertRules(config, FileStore(tmp_path / "state.json")), [channel],
                        AlertMetrics(CollectorRegistry()), clock=clock)
    for i in range(1000):
        alerting.unprofiled("digits", "4" if i % 2 else "5", 1_700_000_000.0 + i)
    alerting.unprofiled("other", "1", 1_700_000_000.0)
    assert [(a.model, a.version, a.detector, a.status, a.severity) for a in channel.alerts] == [
        ("digits", "*", "no_baseline", "firing", "critical"), ("other", "*", "no_baseline", "firing", "critical")]
    first = channel.alerts[0]
    assert "version 5" in first.summary and not first.has_window and first.evidence[0].value == 1
    clock.now = 299.0
    assert alerting.tick() == []
    alerting.unprofiled("other", "1", 1_700_000_300.0)  # other keeps sending
    clock.now = 301.0
    assert [(a.model, a.status) for a in alerting.tick()] == [("digits", "resolved")]
    alerting.close(timeout_s=1)
    # a restart remembers the firing alert (not sent again) and resolves it after a quiet period from start
    after = MemoryChannel()
    restarted = Alerting(AlertRules(config, FileStore(tmp_path / "state.json")), [after],
                         AlertMetrics(CollectorRegistry()), clock=clock)
    restarted.unprofiled("other", "1", 1_700_000_400.0)
    assert after.alerts == []
    clock.now = 700.0
    assert [(a.model, a.status) for a in restarted.tick()] == [("other", "resolved")]


def test_the_pipeline_dead_letters_unprofiled_versions_and_raises_no_baseline_once(tmp_path: Path) -> None:
    config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile=str(write_profile(tmp_path)))],
                    window=WindowConfig(size=100, max_seconds=3600))
    channel, registry = MemoryChannel(), CollectorRegistry()
    wiring = build_pipeline(config, channels=[channel], registry=registry)
    rng = np.random.default_rng(2)
    canary = [e.__class__(**{**{f: getattr(e, f) for f in e.__struct_fields__}, "version": "8"})
              for e in events(250, rng)]
    stranger = [e.__class__(**{**{f: getattr(e, f) for f in e.__struct_fields__}, "model": "stranger"})
                for e in events(5, rng)]
    try:
        wiring.start()
        wiring.producer.send(config.topics.events, encode_batch(canary))
        wiring.producer.send(config.topics.events, encode_batch(stranger))
        wiring.producer.send(config.topics.events, encode_batch(events(100, rng)))  # its own version: a window

        def rejected(reason: str) -> float:
            return registry.get_sample_value("inferwatch_events_rejected_total", {"reason": reason}) or 0.0

        wait_until(lambda: rejected("no_baseline") == 250 and rejected("unknown_model") == 5, "the rejections")
        wait_until(lambda: (registry.get_sample_value("inferwatch_windows_closed_total",
                                                      {"model": MODEL, "version": VERSION, "reason": "full"})
                            or 0) == 1, "the window of the profiled version")
    finally:
        wiring.close()
    no_baseline = [a for a in channel.alerts if a.detector == "no_baseline"]
    assert [(a.model, a.status) for a in no_baseline] == [(MODEL, "firing")]
    assert "version 8" in no_baseline[0].summary
    assert registry.get_sample_value("inferwatch_deadletters_total") == 255
