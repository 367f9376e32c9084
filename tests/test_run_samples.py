"""Every finding names its training run and links the run's page, and an alerting window's rows go back to that
run: the sample appears as an artifact of the run on a real MLflow server, with the window's rows."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts import MemoryChannel
from monitor.config import AlertsConfig, Config, ModelConfig, RunsConfig, WindowConfig, load_config_text
from monitor.errors import ConfigError
from monitor.evaluation import WindowResult
from monitor.events import InferenceEvent, Payload, encode_batch
from monitor.profiles import Profile, load_profile
from monitor.reports import report_name
from monitor.runs import run_url
from monitor.runs.samples import watched_runs
from monitor.wiring import Wiring, build_pipeline
from tests.mlflow_server import mlflow_server  # noqa: F401  (the module-scoped server fixture)
from tests.support import FEATURES, MODEL, VERSION, events, free_port, wait_until, write_profile
from tests.test_runs import offline_run  # noqa: F401  (a W&B offline run made by wandb)

KEY = f"{MODEL}/{VERSION}"
MINIMAL = "models:\n  - {name: digits, version: 1, profile: digits.profile.npz}\n"


def _profile(folder: Path, uri: str, url: str) -> Profile:
    """The support profile, as ``inferwatch baseline --from-run`` records its run."""
    info = {"uri": uri, "source": "mlflow", "id": uri.rsplit("/", 1)[-1], "name": "cnn-baseline", "url": url,
            "created": None, "metrics": {"accuracy": 0.93}, "artifact": "data/train.npz"}
    return dataclasses.replace(load_profile(write_profile(folder)), training_run=url, training_run_info=info)


def _wiring(profile: Profile, channel: MemoryChannel, registry: CollectorRegistry, results: list[WindowResult],
            runs: RunsConfig | None = None, training_run: str | None = None) -> Wiring:
    config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile="(in memory)", training_run=training_run)],
                    window=WindowConfig(size=400, max_seconds=3600, min_samples=30),
                    alerts=AlertsConfig(breaches=1, of=1, resolve_after=1), runs=runs or RunsConfig())
    return build_pipeline(config, {KEY: profile}, channels=[channel], registry=registry, on_result=results.append)


def _drifted_window(wiring: Wiring, payloads: dict[int, Payload] | None = None) -> list[InferenceEvent]:
    """A clean window, then a drifted one (f1 shifted 2 sd) whose events at the keys of ``payloads`` carry those
    raw payloads; returns the drifted window's events."""
    rng = np.random.default_rng(5)
    wiring.producer.send(wiring.config.topics.events, encode_batch(events(400, rng)))
    drifted = events(400, rng, shift=2.0, start=1_700_001_000.0)
    for row, payload in (payloads or {}).items():
        drifted[row] = msgspec.structs.replace(drifted[row], payload=payload)
    wiring.producer.send(wiring.config.topics.events, encode_batch(drifted))
    return drifted


def _firing(channel: MemoryChannel):  # type: ignore[no-untyped-def]
    return wait_until(lambda: next((a for a in channel.alerts if a.status == "firing"), None), "the alert")


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# -- the run's page, everywhere --------------------------------------------------------------------------------
def test_the_run_url_is_what_a_person_can_open_and_never_a_guess() -> None:
    info = {"uri": "mlflow://tracker:5000/abc", "url": "http://tracker:5000/#/experiments/1/runs/abc"}
    assert run_url(None, info) == info["url"]
    assert run_url("mlflow://tracker:5000/abc", info) == info["url"]  # the configured run is the profile's
    assert run_url("https://wandb.ai/acme/digits/runs/zz", info) == "https://wandb.ai/acme/digits/runs/zz"
    assert run_url("mlflow://other:5000/def", info) == ""  # another run: its page is not known without asking
    assert run_url("runs/42", None) == "" and run_url(None, None) == ""


def test_results_alerts_metrics_and_the_status_page_link_the_runs_page(tmp_path: Path) -> None:
    uri, url = "mlflow://tracker.example:5000/0123abcd", "http://tracker.example:5000/#/experiments/3/runs/0123abcd"
    profile = dataclasses.replace(_profile(tmp_path, uri, url), training_run=uri)
    channel, registry, results = MemoryChannel(), CollectorRegistry(), []
    wiring = _wiring(profile, channel, registry, results)
    try:
        wiring.start()
        _drifted_window(wiring)
        alert = _firing(channel)
        page = wiring.status.page().decode()
    finally:
        wiring.close(timeout_s=60)
    assert [(r.training_run, r.training_run_url) for r in results] == [(uri, url)] * 2
    assert alert.training_run == uri and alert.links["training_run"] == url
    assert alert.links["window_sample"] == ""  # runs.log_window_samples is off
    assert f'training run <a href="{url}">{uri}</a>' in page
    assert _value(registry, "inferwatch_model_info", model=MODEL, version=VERSION, training_run=uri,
                  kind="classifier") == 1


def test_a_run_known_only_by_free_text_is_named_and_not_linked(tmp_path: Path) -> None:
    channel, registry, results = MemoryChannel(), CollectorRegistry(), []
    wiring = _wiring(load_profile(write_profile(tmp_path)), channel, registry, results)  # training_run="runs/42"
    try:
        wiring.start()
        _drifted_window(wiring)
        alert = _firing(channel)
        page = wiring.status.page().decode()
    finally:
        wiring.close(timeout_s=60)
    assert results[-1].training_run_url == "" and alert.links["training_run"] == "runs/42"
    assert "training run <code>runs/42</code>" in page


# -- the config and which runs take samples ----------------------------------------------------------------------
def test_runs_config_is_off_by_default_and_bad_values_name_the_key() -> None:
    r = load_config_text(MINIMAL).runs
    assert (r.log_window_samples, r.max_rows, r.queue_size, r.tracking_uri) == (False, 2000, 8, None)
    assert load_config_text(MINIMAL + "runs: {log_window_samples: true, max_rows: 50}").runs.max_rows == 50
    with pytest.raises(ConfigError, match=r"runs\.max_rows"):
        load_config_text(MINIMAL + "runs: {max_rows: 0}")
    local = "sqlite:////srv/runs/mlflow.db"  # a local MLflow store (the demo's), by its absolute path
    assert load_config_text(MINIMAL + f"runs: {{tracking_uri: '{local}'}}").runs.tracking_uri == local
    with pytest.raises(ConfigError, match=r"runs\.tracking_uri"):
        load_config_text(MINIMAL + "runs: {tracking_uri: 'sqlite:///relative.db'}")


def test_only_runs_named_by_their_tracker_or_an_existing_folder_take_samples(tmp_path: Path) -> None:
    uri, url = "mlflow://t:5000/abc", "http://t:5000/#/experiments/1/runs/abc"
    profile = _profile(tmp_path, uri, url)
    plain = load_profile(write_profile(tmp_path))  # training_run="runs/42": no such folder here, so free text
    folder = tmp_path / "runs" / "43"
    folder.mkdir(parents=True)
    config = Config(models=[ModelConfig(name="a", version="1", profile="p"),
                            ModelConfig(name="b", version="1", profile="p", training_run="https://wandb.ai/x/y/runs/z"),
                            ModelConfig(name="c", version="1", profile="p", training_run="file:///data/runs/7"),
                            ModelConfig(name="d", version="1", profile="p", training_run="demo://cnn/seed-0"),
                            ModelConfig(name="e", version="1", profile="p"),
                            ModelConfig(name="f", version="1", profile="p", training_run=str(folder))])
    runs = watched_runs(config, {"a/1": profile, "b/1": profile, "c/1": plain, "d/1": plain, "e/1": plain,
                                 "f/1": plain})
    assert {k: (r.uri, r.url) for k, r in runs.items()} == {
        "a/1": (uri, url), "c/1": ("file:///data/runs/7", ""), "f/1": (str(folder), "")}


# -- back to the run ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_alerting_windows_rows_are_logged_to_the_run_and_linked(mlflow_server: str,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment(f"samples-{tmp_path.name}")
    run_id = client.create_run(experiment, run_name="cnn-baseline").info.run_id
    uri = f"mlflow://{mlflow_server.split('://', 1)[1]}/{run_id}"
    url = f"{mlflow_server}/#/experiments/{experiment}/runs/{run_id}"
    channel, registry, results = MemoryChannel(), CollectorRegistry(), []
    wiring = _wiring(_profile(tmp_path, uri, url), channel, registry, results,
                     runs=RunsConfig(log_window_samples=True, max_rows=2000))
    payloads = {3: Payload(input_b64="aGVsbG8=", redactions=1), 250: Payload(prompt="a [EMAIL] asked", truncated=True)}
    try:
        wiring.start()
        drifted = _drifted_window(wiring, payloads)
        alert = _firing(channel)
        name = f"{report_name(alert.window_id)}.npz"
        assert alert.links["training_run"] == url
        assert alert.links["window_sample"] == f"{url}/artifactPath/inferwatch/windows/{name}"
        wait_until(lambda: _value(registry, "inferwatch_run_samples_total", outcome="logged") == 1,
                   "the sample to be logged", timeout_s=120)
    finally:
        wiring.close(timeout_s=60)
    listed = [a.path for a in client.list_artifacts(run_id, "inferwatch/windows")]
    assert listed == [f"inferwatch/windows/{name}"]
    local = client.download_artifacts(run_id, f"inferwatch/windows/{name}", str(tmp_path / "down"))
    with np.load(local) as sample:
        # the window is smaller than max_rows: every row, in the order the events came
        np.testing.assert_array_equal(sample["features"], [[e.features[f] for f in FEATURES] for e in drifted])
        np.testing.assert_array_equal(sample["predictions"], [e.prediction for e in drifted])
        assert tuple(sample["feature_names"]) == FEATURES and tuple(sample["class_labels"]) == ("a", "b", "c")
        np.testing.assert_array_equal(sample["rows"], np.arange(len(drifted)))
        # the raw payloads the collectors sampled (and redacted), at their rows, and no others
        assert sample["payload_rows"].tolist() == [3, 250]
        assert [msgspec.json.decode(str(p), type=Payload) for p in sample["payloads"]] == list(payloads.values())
    assert _value(registry, "inferwatch_run_samples_total", outcome="failed") == 0
    assert _value(registry, "inferwatch_run_samples_pending") == 0


def test_an_unreachable_tracker_is_counted_and_the_alert_still_goes_out(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("mlflow")
    port = free_port()  # nothing listens there
    uri, url = f"mlflow://127.0.0.1:{port}/0123abcd", f"http://127.0.0.1:{port}/#/experiments/1/runs/0123abcd"
    channel, registry, results = MemoryChannel(), CollectorRegistry(), []
    wiring = _wiring(_profile(tmp_path, uri, url), channel, registry, results,
                     runs=RunsConfig(log_window_samples=True, timeout_s=1.0))
    try:
        with caplog.at_level(logging.WARNING, logger="monitor.runs.samples"):
            wiring.start()
            _drifted_window(wiring)
            alert = _firing(channel)  # delivered whatever the tracker does
            wait_until(lambda: _value(registry, "inferwatch_run_samples_total", outcome="failed") == 1,
                       "the failure to be counted", timeout_s=120)
    finally:
        wiring.close(timeout_s=60)
    assert alert.links["window_sample"].startswith(f"{url}/artifactPath/inferwatch/windows/")
    assert _value(registry, "inferwatch_run_samples_total", outcome="logged") == 0
    assert any(re.search(rf"window {alert.window_id} was not logged to run {re.escape(uri)}", r.getMessage())
               for r in caplog.records)


def test_a_wandb_offline_runs_alerting_window_lands_in_its_files_and_the_alert_links_it(
        offline_run: Path, tmp_path: Path) -> None:  # noqa: F811
    profile = dataclasses.replace(load_profile(write_profile(tmp_path)), training_run=str(offline_run))
    channel, registry, results = MemoryChannel(), CollectorRegistry(), []
    wiring = _wiring(profile, channel, registry, results, runs=RunsConfig(log_window_samples=True, max_rows=100))
    try:
        wiring.start()
        drifted = _drifted_window(wiring)
        alert = _firing(channel)
        wait_until(lambda: _value(registry, "inferwatch_run_samples_total", outcome="logged") == 1,
                   "the sample to be logged", timeout_s=120)
    finally:
        wiring.close(timeout_s=60)
    target = offline_run / "files" / "inferwatch" / "windows" / f"{report_name(alert.window_id)}.npz"
    assert alert.training_run == str(offline_run) and alert.links["window_sample"] == target.as_uri()
    with np.load(target) as sample:  # a seeded sample of 100 of the window's 400 rows
        rows = sample["rows"]
        assert len(rows) == 100 and len(set(rows.tolist())) == 100
        expected = np.array([[e.features[f] for f in FEATURES] for e in drifted])[rows]
        np.testing.assert_array_equal(sample["features"], expected)
        assert sample["payloads"].shape == (0,)  # no event carried a payload
