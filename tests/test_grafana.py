"""Grafana: `inferwatch dashboards render|push`, and an annotation and a snapshot on every alert, against the
fake Grafana of tests/fake_grafana.py (no Grafana server can run here), which checks the documented contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from dashboards import KINDS, build_dashboards, dashboard_uid
from monitor.alerts import Alert, MemoryChannel
from monitor.cli import main
from monitor.config import load_config_text
from monitor.evaluation import WindowResult
from monitor.events import encode_batch
from monitor.grafana import Grafana, GrafanaError, annotation_panel, snapshot_dashboard, window_series
from monitor.wiring import Wiring, build_pipeline
from tests.fake_grafana import TOKEN, FakeGrafana, fake_grafana_fixture  # noqa: F401 - the fixture
from tests.support import MODEL, VERSION, events, wait_until, write_profile


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "grafana.token"
    path.write_text(TOKEN + "\n")
    return path


def push(fake: FakeGrafana, token_file: Path, *extra: str) -> int:
    return main(["dashboards", "push", "--url", fake.url, "--token-file", str(token_file), *extra])


# -- dashboards render / push --------------------------------------------------------------------------------
def test_render_writes_each_dashboard_and_a_file_provider(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "boards"
    assert main(["dashboards", "render", "--out", str(out), "--prefix", "prod", "--folder", "ML"]) == 0
    printed = capsys.readouterr().out
    for kind in KINDS:
        model = json.loads((out / f"{kind}.json").read_text())
        assert model["uid"] == f"prod-{kind}" and f"{out / kind}.json" in printed
    (provider,) = yaml.safe_load((out / "provisioning.yaml").read_text())["providers"]
    assert (provider["type"], provider["folder"], provider["options"]["path"]) == ("file", "ML", str(out.resolve()))


def test_push_creates_folder_datasource_and_dashboards_and_again_changes_only_versions(
        fake_grafana: FakeGrafana, token_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert push(fake_grafana, token_file, "--folder", "ML monitoring", "--datasource-url", "http://prom:9090") == 0
    first = capsys.readouterr().out
    assert list(fake_grafana.folders) == ["ML-monitoring"] and fake_grafana.folders["ML-monitoring"]["title"] == \
        "ML monitoring"
    (ds,) = fake_grafana.datasources.values()
    assert (ds["uid"], ds["type"], ds["url"], ds["access"]) == ("inferwatch-prometheus", "prometheus",
                                                                "http://prom:9090", "proxy")
    uids = {dashboard_uid(kind) for kind in KINDS}
    assert set(fake_grafana.dashboards) == uids
    assert all(d["folderUid"] == "ML-monitoring" and d["version"] == 1 for d in fake_grafana.dashboards.values())
    assert first.count(" created ") == 3
    every = [r for r in fake_grafana.requests if r.path != "/api/health"]
    assert every and all(r.authorization == f"Bearer {TOKEN}" for r in every)

    assert push(fake_grafana, token_file, "--folder", "ML monitoring", "--datasource-url", "http://prom:9090") == 0
    second = capsys.readouterr().out
    assert second.count(" updated ") == 3 and "folder 'ML monitoring' (uid ML-monitoring): exists" in second
    assert len(fake_grafana.folders) == 1 and len(fake_grafana.datasources) == 1
    assert set(fake_grafana.dashboards) == uids and all(d["version"] == 2 for d in fake_grafana.dashboards.values())
    saves = fake_grafana.of("/api/dashboards/db")
    assert len(saves) == 6 and all(r.body["overwrite"] is True and r.status == 200 for r in saves)
    assert len(fake_grafana.of("/api/folders")) == 1 and len(fake_grafana.of("/api/datasources")) == 1


def test_a_refused_token_exits_2_naming_the_token_file(fake_grafana: FakeGrafana, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("glsa_not_the_token\n")
    assert push(fake_grafana, wrong) == 2
    err = capsys.readouterr().err
    assert "401" in err and str(wrong) in err and "glsa_not_the_token" not in err
    assert fake_grafana.dashboards == {}


@pytest.mark.parametrize("content", [None, "\n  \n"])
def test_a_missing_or_empty_token_file_exits_2(fake_grafana: FakeGrafana, tmp_path: Path, content: str | None,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    assert push(fake_grafana, path) == 2
    assert "--token-file" in capsys.readouterr().err and fake_grafana.requests == []


def test_an_unreachable_grafana_exits_2_with_one_clear_line(fake_grafana: FakeGrafana, token_file: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    fake_grafana.close()
    assert push(fake_grafana, token_file) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("inferwatch: error: cannot reach Grafana at " + fake_grafana.url)


def test_an_outage_is_retryable_and_a_rejection_is_not(fake_grafana: FakeGrafana) -> None:
    grafana = Grafana(fake_grafana.url, TOKEN)
    fake_grafana.fail_next(1)
    with pytest.raises(GrafanaError) as outage:
        grafana.folder("x")
    assert outage.value.status == 503 and outage.value.retryable
    with pytest.raises(GrafanaError) as rejected:
        grafana.create_folder("bad uid!", "x")
    assert rejected.value.status == 400 and not rejected.value.retryable
    assert grafana.folder("x") is None  # 404 is an answer
    grafana.close()


def test_the_fake_refuses_an_external_snapshot(fake_grafana: FakeGrafana) -> None:
    board = build_dashboards()["classifier"]
    for panel in board["panels"]:
        panel["snapshotData"] = []
    grafana = Grafana(fake_grafana.url, TOKEN)
    with pytest.raises(GrafanaError, match="external"):
        grafana._call("an external snapshot", lambda: grafana._api.snapshots.create_new_snapshot(
            dashboard=board, name="x", external=True, key="k", delete_key="d"))
    grafana.close()
    assert fake_grafana.snapshots == {}


# -- the snapshot's data --------------------------------------------------------------------------------------
def drifted_result(tmp_path: Path) -> WindowResult:
    """One 300-row window of the support model with f1 shifted by 1 sd, evaluated by every detector."""
    from monitor.config import DetectConfig, WindowConfig
    from monitor.evaluation import WatchedModel
    from monitor.profiles import load_profile
    from monitor.windows import ClosedWindow

    rng = np.random.default_rng(1)
    model = WatchedModel(load_profile(write_profile(tmp_path)), DetectConfig(), WindowConfig())
    window = ClosedWindow(key=f"{MODEL}/{VERSION}", index=0, window_id="w0", n=300, columns={
        "numeric": rng.normal(size=(300, 4)) + np.array([0, 1.0, 0, 0]),
        "prediction": rng.choice(3, size=300, p=[0.5, 0.3, 0.2]), "latency": np.full((300, 2), 0.01)},
        first_time=1_700_000_000.0, last_time=1_700_000_299.0, reason="full")
    return model.evaluate(window)


def test_snapshot_frames_hold_the_windows_drift_statistics(tmp_path: Path) -> None:
    result = drifted_result(tmp_path)
    board = build_dashboards()["classifier"]
    snap = snapshot_dashboard(board, result, "snap", ["a", "b", "c"])
    panels = {p["id"]: p for p in snap["panels"]}
    assert all(p.get("targets", []) == [] for p in panels.values())
    # "Feature drift, last window": one table frame per query (KS, adjusted p, PSI, Wasserstein), merged by
    # the panel's transformation into one row per feature
    tables = {frame["refId"]: {f["name"]: f["values"] for f in frame["fields"]}
              for frame in panels[6]["snapshotData"]}
    drift = result.drift
    assert drift is not None and drift.drifted_features == ("f1",)
    assert sorted(tables) == ["A", "B", "C", "D"]
    assert all(t["feature"] == [f.name for f in drift.numeric.features] for t in tables.values())
    assert tables["A"]["Value #A"] == [f.ks_statistic for f in drift.numeric.features]
    assert tables["B"]["Value #B"] == [f.p_adjusted for f in drift.numeric.features]
    mix = {frame["name"]: frame["fields"][1]["values"][0] for frame in panels[4]["snapshotData"]}
    assert set(mix) == {"a", "b", "c", "a reference", "b reference", "c reference"}
    prediction = result.prediction
    assert prediction is not None
    assert [mix[c] for c in "abc"] == [n / sum(prediction.observed) for n in prediction.observed]
    assert [mix[f"{c} reference"] for c in "abc"] == list(prediction.expected_probs)
    assert panels[1]["snapshotData"] == []  # a rate of a counter: not a window's value, so no data
    variables = {v["name"]: v["current"]["value"] for v in snap["templating"]["list"] if v["name"] != "datasource"}
    assert variables == {"model": MODEL, "version": [VERSION]}
    assert {s.metric for s in window_series(result)} >= {"inferwatch_drift_ks_statistic", "inferwatch_drift_detected"}
    assert annotation_panel(board, "feature_drift") == 6 and annotation_panel(board, "prediction_drift") == 5


# -- the alert hook, end to end -------------------------------------------------------------------------------
def pipeline(tmp_path: Path, grafana: str, channel: MemoryChannel, registry: CollectorRegistry) -> Wiring:
    config = load_config_text(f"""
models: [{{name: {MODEL}, version: "{VERSION}", profile: "{write_profile(tmp_path)}"}}]
window: {{size: 100, max_seconds: 3600, min_samples: 30}}
alerts: {{breaches: 1, of: 1, resolve_after: 1}}
{grafana}
""")
    return build_pipeline(config, channels=[channel], registry=registry)


def feed(wiring: Wiring) -> None:
    rng = np.random.default_rng(3)
    topic = wiring.config.topics.events
    wiring.producer.send(topic, encode_batch(events(100, rng)))
    wiring.producer.send(topic, encode_batch(events(100, rng, shift=3.0, start=1_700_000_100.0)))


def drift_alert(channel: MemoryChannel) -> Alert:
    return next(a for a in channel.alerts if a.detector == "feature_drift" and a.status == "firing")


def test_an_alert_gets_a_snapshot_with_the_windows_data_and_an_annotation(
        fake_grafana: FakeGrafana, token_file: Path, tmp_path: Path) -> None:
    channel, registry = MemoryChannel(), CollectorRegistry()
    wiring = pipeline(tmp_path, f"grafana: {{url: '{fake_grafana.url}', token_file: '{token_file}'}}", channel,
                      registry)
    feed(wiring)
    wiring.start()
    try:
        alert = wait_until(lambda: drift_alert(channel), "the drift alert")
        key = alert.links["snapshot"].rsplit("/", 1)[1]
        assert alert.links["snapshot"] == f"{fake_grafana.url}/dashboard/snapshot/{key}"
        assert alert.links["dashboard"].startswith(f"{fake_grafana.url}/d/inferwatch-classifier?var-model={MODEL}")
        snapshot = wait_until(lambda: fake_grafana.snapshots.get(key), "the snapshot in Grafana")
        annotation = wait_until(lambda: next(a for a in fake_grafana.annotations if "detector:feature_drift"
                                             in a["tags"]), "the annotation")
    finally:
        wiring.close()
    (request,) = [r for r in fake_grafana.of("/api/snapshots") if r.body["key"] == key]
    assert request.body["external"] is False and request.body["expires"] == 30 * 86_400
    assert snapshot["dashboard"]["uid"] == "inferwatch-classifier"
    table = next(p for p in snapshot["dashboard"]["panels"] if p["id"] == 6)["snapshotData"][0]
    fields = {f["name"]: f["values"] for f in table["fields"]}
    ks = dict(zip(fields["feature"], fields["Value #A"], strict=True))
    assert max(ks, key=lambda f: ks[f]) == "f1" and ks["f1"] > 0.5  # the shifted feature, by its KS statistic
    window_ms = (int(alert.window_start * 1000), int(alert.window_end * 1000))
    assert (annotation["time"], annotation["timeEnd"]) == window_ms
    assert (annotation["dashboardUID"], annotation["panelId"]) == ("inferwatch-classifier", 6)
    assert {"inferwatch", f"model:{MODEL}", f"version:{VERSION}", "detector:feature_drift"} <= set(annotation["tags"])
    assert f'<a href="{alert.links["snapshot"]}">snapshot</a>' in annotation["text"]
    assert "inferwatch-classifier" in fake_grafana.dashboards  # made on first use, it was not there
    assert registry.get_sample_value("inferwatch_grafana_requests_total",
                                     {"kind": "snapshot", "outcome": "ok"}) >= 1  # type: ignore[operator]
    assert registry.get_sample_value("inferwatch_grafana_requests_total",
                                     {"kind": "annotation", "outcome": "error"}) == 0


def test_with_grafana_down_the_alert_is_still_delivered_and_the_errors_counted(
        fake_grafana: FakeGrafana, token_file: Path, tmp_path: Path) -> None:
    fake_grafana.close()
    channel, registry = MemoryChannel(), CollectorRegistry()
    wiring = pipeline(tmp_path, f"grafana: {{url: '{fake_grafana.url}', token_file: '{token_file}', "
                                f"max_attempts: 2, backoff_s: 0.01}}", channel, registry)
    feed(wiring)
    results: list[Any] = []
    wiring.start()
    try:
        alert = wait_until(lambda: drift_alert(channel), "the drift alert")
        assert alert.links["snapshot"].startswith(fake_grafana.url)  # promised; Grafana is down, so not kept
        errors = {kind: lambda kind=kind: registry.get_sample_value(
            "inferwatch_grafana_requests_total", {"kind": kind, "outcome": "error"}) for kind in ("snapshot",
                                                                                                  "annotation")}
        for kind, count in errors.items():
            wait_until(count, f"a counted {kind} error")
        results.append(wiring.running)
    finally:
        wiring.close()
    assert results == [True]  # the pipeline kept going
    assert registry.get_sample_value("inferwatch_grafana_requests_total", {"kind": "snapshot", "outcome": "ok"}) == 0


def test_an_outage_is_retried_until_grafana_answers(fake_grafana: FakeGrafana, token_file: Path,
                                                   tmp_path: Path) -> None:
    channel, registry = MemoryChannel(), CollectorRegistry()
    fake_grafana.fail_next(2)
    wiring = pipeline(tmp_path, f"grafana: {{url: '{fake_grafana.url}', token_file: '{token_file}', "
                                f"backoff_s: 0.01}}", channel, registry)
    feed(wiring)
    wiring.start()
    try:
        key = wait_until(lambda: drift_alert(channel), "the drift alert").links["snapshot"].rsplit("/", 1)[1]
        wait_until(lambda: key in fake_grafana.snapshots, "the snapshot after the outage")
    finally:
        wiring.close()
    assert [r.status for r in fake_grafana.requests][:2] == [503, 503]
    assert registry.get_sample_value("inferwatch_grafana_requests_total", {"kind": "dashboard", "outcome": "ok"}) == 1


def test_without_a_grafana_section_there_is_no_hook_and_nothing_is_sent(fake_grafana: FakeGrafana,
                                                                        tmp_path: Path) -> None:
    channel, registry = MemoryChannel(), CollectorRegistry()
    wiring = pipeline(tmp_path, "", channel, registry)
    feed(wiring)
    wiring.start()
    try:
        alert = wait_until(lambda: drift_alert(channel), "the drift alert")
    finally:
        wiring.close()
    assert wiring.alerting.hooks == [] and alert.links["snapshot"] == "" and alert.links["dashboard"] == ""
    assert fake_grafana.requests == []
    assert registry.get_sample_value("inferwatch_grafana_requests_total", {"kind": "snapshot", "outcome": "ok"}) \
        is None


def test_an_unreadable_token_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    from monitor.errors import ConfigError

    with pytest.raises(ConfigError, match=r"grafana\.token_file: cannot read"):
        pipeline(tmp_path, f"grafana: {{url: 'http://127.0.0.1:1', token_file: '{tmp_path / 'none'}'}}",
                 MemoryChannel(), CollectorRegistry())
