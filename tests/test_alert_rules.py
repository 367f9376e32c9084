"""Alert rules and lifecycle: k-of-n firing, resolution, overrides, repeats, no_data, and state across restarts."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts import (
    Alert,
    AlertedWindow,
    Alerting,
    AlertMetrics,
    AlertRules,
    FileStore,
    MemoryChannel,
    Observation,
)
from monitor.config import AlertsConfig, RuleConfig, load_config_text
from monitor.detection.base import Evidence
from monitor.errors import ConfigError


def obs(window: int, drifted: bool, insufficient: bool = False, detector: str = "feature_drift",
        model: str = "m") -> Observation:
    return Observation(model=model, version="1", detector=detector, window=window,
                       window_id=f"{model}/1@t-0:{window}", window_start=float(window), window_end=window + 1.0,
                       drifted=drifted, insufficient=insufficient, features=("f1", "f3") if drifted else (),
                       evidence=(Evidence("f1", "ks", 0.4, threshold=0.01, p_value=1e-9, effect=0.8,
                                          effect_name="wasserstein_sd"),) if drifted else ())


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("breaches", "of", "expected"), [
    (2, 2, [("firing", 3), ("resolved", 9)]),  # k consecutive
    (2, 3, [("firing", 2), ("resolved", 9)]),  # 2 of the last 3: windows 0 and 2
    (1, 1, [("firing", 0), ("resolved", 9)]),  # window 1 is clean but one clean window does not resolve
])
def test_alert_fires_after_k_of_n_and_resolves_after_r_clean(breaches: int, of: int,
                                                             expected: list[tuple[str, int]]) -> None:
    rules = AlertRules(AlertsConfig(breaches=breaches, of=of, resolve_after=2))
    pattern = [True, False, True, True, True, None, False, True, False, False, False]
    events = []
    for i, p in enumerate(pattern):
        alert = rules.observe(obs(i, drifted=bool(p), insufficient=p is None))
        if alert is not None:
            events.append((alert.status, alert.window))
    assert events == expected
    assert rules.firing == []


def test_alert_ids_are_stable_and_fingerprints_separate_detectors() -> None:
    a = AlertRules(AlertsConfig(breaches=1, of=1)).observe(obs(4, True))
    b = AlertRules(AlertsConfig(breaches=1, of=1)).observe(obs(4, True))
    c = AlertRules(AlertsConfig(breaches=1, of=1)).observe(obs(4, True, detector="prediction_drift"))
    assert a is not None and b is not None and c is not None
    assert a.id == b.id and a.fingerprint == b.fingerprint  # a replayed window re-sends the same id
    assert c.fingerprint != a.fingerprint


def test_a_window_read_again_after_a_rebalance_counts_once() -> None:
    rules = AlertRules(AlertsConfig(breaches=2, of=3))
    assert rules.observe(obs(0, True)) is None
    assert rules.observe(obs(0, True)) is None  # the same window again: still one breach, so nothing fires
    fired = rules.observe(obs(1, True))
    assert fired is not None and fired.status == "firing"


def test_the_most_specific_rule_wins_and_sets_severity_and_persistence() -> None:
    config = load_config_text("""
models: []
alerts:
  rules:
    - {detector: feature_drift, model: digits, severity: critical, breaches: 3, of: 4}
    - {detector: feature_drift, severity: info}
    - {detector: latency_slo, severity: critical}
""").alerts
    rules = AlertRules(config)
    assert rules.rule("feature_drift", "digits").severity == "critical"
    assert (rules.rule("feature_drift", "digits").breaches, rules.rule("feature_drift", "digits").of) == (3, 4)
    assert rules.rule("feature_drift", "other").severity == "info"
    assert rules.rule("feature_drift", "other").breaches == 2  # the section's default
    assert rules.rule("prediction_drift", "digits").severity == "warning"
    fired = [a for i in range(4) if (a := rules.observe(obs(i, True, model="digits")))]
    assert [(a.window, a.severity) for a in fired] == [(2, "critical")]  # 3 of 4, not the default 2 of 3


def test_a_firing_alert_repeats_after_renotify_s_only() -> None:
    clock = Clock()
    rules = AlertRules(AlertsConfig(breaches=1, of=1, renotify_s=3600), clock=clock)
    first = rules.observe(obs(0, True))
    assert first is not None and first.repeat == 0
    clock.now += 3599
    assert rules.observe(obs(1, True)) is None  # still firing: suppressed
    clock.now += 1
    again = rules.observe(obs(2, True))
    assert again is not None and again.status == "firing" and again.repeat == 1
    assert again.fingerprint == first.fingerprint and again.id != first.id
    assert again.started_at == first.started_at
    never = AlertRules(AlertsConfig(breaches=1, of=1, renotify_s=0), clock=clock)
    never.observe(obs(0, True))
    clock.now += 10**9
    assert never.observe(obs(1, True)) is None


def test_a_notification_carries_evidence_window_and_links() -> None:
    rules = AlertRules(AlertsConfig(breaches=1, of=1, dashboard_url="http://grafana:3000/d/iw?var-model={model}"
                                                                     "&from={from_ms}&to={to_ms}"))
    alert = rules.observe(Observation("digits", "3", "feature_drift", 7, "w7", 100.0, 160.5, True,
                                      features=("f1",), summary="drift in f1", training_run="runs/42",
                                      n_events=400, evidence=(Evidence("f1", "ks", 0.31, 0.01, 2e-12, 0.9, "w"),)))
    assert alert is not None
    payload = json.loads(alert.to_json())
    assert payload["schema"] == "inferwatch.alert/v2" and payload["n_events"] == 400
    assert payload["evidence"][0] == {"feature": "f1", "statistic": "ks", "value": 0.31, "threshold": 0.01,
                                      "p_value": 2e-12, "effect": 0.9, "effect_name": "w"}
    assert payload["links"] == {"dashboard": "http://grafana:3000/d/iw?var-model=digits&from=100000&to=160500",
                                "report": "", "snapshot": "", "training_run": "runs/42",
                                "window_sample": ""}  # not configured: empty
    assert Alert.from_dict(payload) == alert


def test_no_data_fires_once_when_a_model_goes_silent_and_resolves_when_traffic_returns() -> None:
    clock = Clock(0.0)
    config = AlertsConfig(rules=(RuleConfig(detector="no_data", after_s=600, severity="critical"),))
    channel = MemoryChannel()
    registry = CollectorRegistry()
    alerting = Alerting(AlertRules(config), [channel], AlertMetrics(registry), models=[("m", "1")], clock=clock)
    alerting.seen("m", "1", 50.0)
    clock.now = 599.0
    assert alerting.tick() == []
    clock.now = 601.0
    fired = alerting.tick()
    assert [(a.detector, a.status, a.severity) for a in fired] == [("no_data", "firing", "critical")]
    assert registry.get_sample_value("inferwatch_alerts_firing", {"severity": "critical"}) == 1
    clock.now = 5_000.0
    assert alerting.tick() == []  # fires once, however long the silence
    alerting.seen("m", "1", 60.0)
    assert [(a.detector, a.status) for a in channel.alerts] == [("no_data", "firing"), ("no_data", "resolved")]
    assert registry.get_sample_value("inferwatch_alerts_firing", {"severity": "critical"}) == 0


def test_no_data_counts_silence_from_start_for_a_model_that_never_sent_anything() -> None:
    clock = Clock(0.0)
    config = AlertsConfig(rules=(RuleConfig(detector="no_data", model="quiet", after_s=60),))
    alerting = Alerting(AlertRules(config), [], AlertMetrics(CollectorRegistry()),
                        models=[("quiet", "1"), ("busy", "1")], clock=clock)
    clock.now = 61.0
    assert [(a.model, a.detector) for a in alerting.tick()] == [("quiet", "no_data")]  # busy has no such rule


def test_state_survives_a_restart_without_resending_and_the_resolve_still_comes(tmp_path: Path) -> None:
    path = tmp_path / "state" / "alerts.json"
    config = AlertsConfig(breaches=2, of=3, resolve_after=2)
    first = MemoryChannel()
    before = Alerting(AlertRules(config, FileStore(path)), [first], AlertMetrics(CollectorRegistry()))
    for i in range(3):
        before.window([obs(i, True)])
    assert [a.status for a in first.alerts] == ["firing"]
    saved = json.loads(path.read_text())
    assert saved["schema"] == "inferwatch.alert-state/v1"
    assert [s["status"] for s in saved["fingerprints"].values()] == ["firing"]

    after = MemoryChannel()  # the restarted daemon, replaying window 2 and going on
    restarted = Alerting(AlertRules(config, FileStore(path)), [after], AlertMetrics(CollectorRegistry()))
    assert [a.detector for a in restarted.rules.firing] == ["feature_drift"]
    for i in (2, 3, 4):
        restarted.window([obs(i, True)])
    assert after.alerts == []  # still firing: nothing is sent again
    restarted.window([obs(5, False)])
    restarted.window([obs(6, False)])
    assert [(a.status, a.fingerprint, a.started_at) for a in after.alerts] == [
        ("resolved", first.alerts[0].fingerprint, first.alerts[0].started_at)]


def test_a_corrupt_state_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"alerts\.state\.path: .*alerts\.json is not a valid alert state file"):
        AlertRules(AlertsConfig(), FileStore(path))
    path.write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(ConfigError, match="not a valid alert state file"):
        AlertRules(AlertsConfig(), FileStore(path))


def test_the_state_file_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    store = FileStore(path)
    store.load()
    store.save({"a": {"status": "firing"}})
    store.save({"b": {"status": "pending"}, "a": None})
    assert json.loads(path.read_text())["fingerprints"] == {"b": {"status": "pending"}}
    assert [p.name for p in tmp_path.iterdir()] == ["alerts.json"]  # no temporary file left behind


@pytest.mark.parametrize(("text", "message"), [
    ("alerts: {breaches: 3, of: 2}", "alerts.breaches \\(3\\) cannot exceed alerts.of \\(2\\)"),
    ("alerts: {rules: [{detector: feature_drift, breaches: 5}]}", "alerts.rules\\[0\\]: breaches \\(5\\)"),
    ("alerts: {rules: [{detector: no_data}]}", "alerts.rules\\[0\\].after_s: a no_data rule needs after_s"),
    ("alerts: {rules: [{detector: feature_drift, after_s: 5}]}", "after_s applies to no_data and no_baseline"),
    ("alerts: {rules: [{detector: feature_drift, severity: page}]}", "at alerts.rules\\[0\\].severity"),
    ("alerts: {channels: [{type: sms, url: 'http://x'}]}", "Invalid value 'sms' at alerts.channels\\[0\\].type"),
    ("alerts: {channels: [{type: webhook, url: '127.0.0.1:9000/hook'}]}", "at alerts.channels\\[0\\].url"),
    ("alerts: {channels: [{type: alertmanager}]}", "missing required field `url` at alerts.channels\\[0\\]"),
    ("alerts: {channels: [{type: pagerduty}]}", "alerts.channels\\[0\\]: a pagerduty channel needs one of"),
    ("alerts: {channels: [{type: slack, url_file: /a, url_env: B}]}", "give one of url_file, url_env"),
    ("alerts: {channels: [{type: webhook, url: 'http://h/x', colour: red}]}", "colour"),
])
def test_bad_alert_config_fails_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text("models: []\n" + text)


def test_hooks_link_every_notification_before_it_is_sent_and_get_the_window_after() -> None:
    seen: list[tuple[list[Alert], AlertedWindow]] = []

    class Hook:
        name = "probe"

        def links(self, alert: Alert) -> dict[str, str]:
            return {"report": f"http://daemon/reports/{alert.model}/{alert.version}/{alert.window_id}.html"}

        def fired(self, alerts: list[Alert], window: AlertedWindow) -> None:
            seen.append((alerts, window))

        def close(self, timeout_s: float = 10.0) -> None:
            seen.clear()

    class Broken(Hook):
        name = "broken"

        def links(self, alert: Alert) -> dict[str, str]:
            raise RuntimeError("no links today")

        def fired(self, alerts: list[Alert], window: AlertedWindow) -> None:
            raise RuntimeError("no work today")

    channel = MemoryChannel()
    alerting = Alerting(AlertRules(AlertsConfig(breaches=1, of=1)), [channel], AlertMetrics(CollectorRegistry()),
                        hooks=[Broken(), Hook()])
    context = AlertedWindow(result=SimpleNamespace(window_id="w0"), window=object())  # type: ignore[arg-type]
    sent = alerting.window([Observation("digits", "3", "feature_drift", 0, "w0", 1.0, 2.0, True)], context)
    assert [a.links["report"] for a in channel.alerts] == ["http://daemon/reports/digits/3/w0.html"]
    assert seen == [(sent, context)]  # the broken hook cost only its own work
    assert alerting.window([Observation("digits", "3", "feature_drift", 1, "w1", 2.0, 3.0, True)], context) == []
    assert len(seen) == 1  # no notification (still firing, not yet due for a repeat): no call
    alerting.close(timeout_s=1)
    assert seen == []
