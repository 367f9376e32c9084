"""`inferwatch demo`: no alert before the injection, an alert within two windows after it; the trainers' runs in
the demo's local MLflow store (and W&B offline runs), linked from the alerts and holding the alerting windows."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import pytest

from collectors.text_features import generation_feature_names

pytest.importorskip("torch", reason="the demo trains a torch CNN (install inferwatch[torch])")
pytestmark = pytest.mark.slow


def run_demo(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "demo", "--json", *args], capture_output=True,
                          text=True, timeout=600)  # minutes on a busy 2-core machine; seconds when idle
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def check(report: dict[str, object]) -> None:
    injected = report["drift_injected_at_window"]
    alerts = report["alerts"]
    assert isinstance(injected, int) and isinstance(alerts, list) and report["windows"] == 12
    firing = [a["window"] for a in alerts if a["status"] == "firing"]
    assert firing, "no alert after the injection"
    assert min(firing) >= injected, f"alert before the injection at window {injected}: {alerts}"
    assert min(firing) <= injected + 1, f"first alert {min(firing)} is more than two windows after {injected}"
    assert all({"window", "model", "detector"} <= set(a) for a in alerts)


def test_embedded_demo_with_noise_sends_its_alerts_to_a_signed_webhook_from_alerts_config(tmp_path: Path) -> None:
    from standardwebhooks import Webhook

    from tests.test_alert_delivery import Receiver, secret

    key = tmp_path / "hook.secret"
    key.write_text(secret())
    receiver = Receiver()
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text(f"alerts:\n  channels:\n    - {{type: webhook, url: '{receiver.url}', secret_file: '{key}'}}\n")
    out = tmp_path / "out"
    try:
        report = run_demo("--model", "cnn", "--alerts-config", str(alerts), "--out", str(out))
    finally:
        receiver.close()
    check(report)
    received = [Webhook(key.read_text()).verify(body, headers) for _, headers, body in receiver.requests]
    assert [(a["status"], a["window"]) for a in received] == [
        (a["status"], a["window"]) for a in report["alerts"]]  # type: ignore[union-attr]
    check_out(out, received)
    run, alerts = report["run"], report["alerts"]
    assert isinstance(run, dict) and isinstance(alerts, list)
    assert Path(urllib.parse.urlsplit(run["uri"]).path).is_relative_to(out / "runs")  # --out keeps the runs
    saved = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    check_run(run, saved, "digits-cnn", data=("train.npz", "validation.npz"),
              params={"seed": "7", "epochs": "25", "lr": "0.003", "train_rows": "935"},
              metrics=("train_accuracy", "validation_accuracy", "test_accuracy"), features=7)
    assert [a["links"] for a in alerts] == [a["links"] for a in saved]  # the --json report links them too


def check_run(run: Mapping[str, str | None], alerts: list[dict[str, object]], model: str, data: tuple[str, ...],
              params: Mapping[str, str], metrics: tuple[str, ...], features: int) -> None:
    """The trainer's run is in the local MLflow store, found by its URI alone, with its params, metrics, data and
    the profile built from it; every firing alert links the run and its window's sample, which the run holds
    under inferwatch/windows/; with wandb installed, the W&B offline run holds the same config and summary."""
    import numpy as np

    from monitor.reports import report_name
    from monitor.runs import resolve_run

    uri, url = run["uri"], run["url"]
    assert uri is not None and uri.startswith("mlflow+sqlite:///") and url is not None
    recorded = resolve_run(uri)
    assert (recorded.uri, recorded.url, recorded.source) == (uri, url, "mlflow")
    assert params.items() <= recorded.params.items() and set(metrics) <= set(recorded.metrics)
    assert {*data, f"{model}.profile.npz"} <= set(recorded.artifacts)
    folder = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))  # the run's artifact folder
    firing = [a for a in alerts if a["status"] == "firing"]
    assert firing
    for alert in firing:
        links = alert["links"]
        assert isinstance(links, dict) and links["training_run"] == url and alert["training_run"] == uri
        name = f"{report_name(str(alert['window_id']))}.npz"
        assert links["window_sample"] == f"{url}/inferwatch/windows/{name}"
        assert f"inferwatch/windows/{name}" in recorded.artifacts
        with np.load(folder / "inferwatch" / "windows" / name) as sample:
            assert sample["features"].shape[1] == features and 0 < len(sample["predictions"]) <= 2000
    if importlib.util.find_spec("wandb") is None:
        assert run["wandb_dir"] is None
        return
    assert run["wandb_dir"] is not None and Path(run["wandb_dir"]).is_dir()
    offline = resolve_run(run["wandb_dir"])
    assert offline.source == "wandb-offline" and offline.params == recorded.params
    assert offline.metrics == pytest.approx(recorded.metrics)
    assert set(data) <= set(offline.artifacts)


def check_out(out: Path, received: list[dict[str, object]]) -> None:
    """``--out DIR`` holds the dashboards, every window result, every alert, a report per firing alert with a
    window and the Grafana requests it would have sent (each snapshot's key is the one its alert links)."""
    assert {p.name for p in (out / "dashboards").iterdir()} == {"classifier.json", "generator.json", "fleet.json",
                                                               "provisioning.yaml"}
    windows = [json.loads(line) for line in (out / "windows.jsonl").read_text().splitlines()]
    assert [w["index"] for w in windows] == list(range(12))
    saved = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert [a["id"] for a in saved] == [a["id"] for a in received]
    firing = [a for a in saved if a["status"] == "firing"]
    for alert in firing:
        links = alert["links"]
        report = out / "reports" / alert["model"] / alert["version"] / Path(links["report"]).name
        assert report.exists() and alert["window_id"] in report.read_text(errors="replace"), links["report"]
        snapshot_key = links["snapshot"].rsplit("/", 1)[1]
        snapshots = [json.loads(p.read_text()) for p in (out / "grafana").glob("*-snapshot-*.json")]
        assert [s["external"] for s in snapshots if s["key"] == snapshot_key] == [False]
    annotations = [json.loads(p.read_text()) for p in (out / "grafana").glob("*-annotation-*.json")]
    assert len(annotations) == len(saved) and all(a["dashboardUID"] == "inferwatch-classifier" for a in annotations)


def test_demo_refuses_a_bad_alerts_config_naming_the_key(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text("alerts:\n  channels:\n    - {type: sms, url: 'http://127.0.0.1:9/x'}\n")
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "demo", "--alerts-config", str(alerts)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode != 0 and "alerts.channels[0].type" in done.stderr


@pytest.mark.kafka
def test_kafka_demo_with_a_class_mix_shift(kafka_bootstrap: str, tmp_path: Path) -> None:
    report = run_demo("--model", "cnn", "--kafka", kafka_bootstrap, "--drift", "classmix",
                      "--runs-dir", str(tmp_path / "runs"))
    check(report)
    assert report["transport"] == "kafka"
    run = report["run"]
    assert isinstance(run, dict) and run["uri"].startswith(f"mlflow+sqlite://{tmp_path / 'runs' / 'mlflow.db'}/")
    assert any(a["detector"] == "prediction_drift" for a in report["alerts"])  # type: ignore[union-attr]


def test_llm_demo_through_the_sidecar_alerts_after_the_domain_shift(tmp_path: Path) -> None:
    from monitor.demo import run_llm_demo
    from monitor.demo.output import DemoOutput
    from monitor.demo.runs import RunStore

    report = run_llm_demo(windows=6, window_size=30, seed=11, out=DemoOutput(tmp_path),
                          runs=RunStore(tmp_path / "runs"))
    assert report.captured >= 0.97 * 6 * 30  # the sidecar captured (nearly) every completion
    firing = [a for a in report.alerts if a["status"] == "firing"]
    assert firing, "no LLM alert after prompts moved to another domain"
    shift = report.drift_injected_at_window
    assert min(int(a["window"]) for a in firing) >= shift  # type: ignore[call-overload]
    # the prompt shift is found from the prompts' text alone (the sidecar's text features, no model): an alert
    # of the embedding or the text-feature drift detector within two windows of the shift, none before it
    from_text = [a for a in firing if a["detector"] in ("embedding_drift", "feature_drift")]
    assert from_text and min(int(a["window"]) for a in from_text) <= shift + 1, report.alerts  # type: ignore[call-overload]
    clean = [w for w in report.per_window if not w.drift_injected]
    assert clean and not any(w.text_drifted or "embedding_drift" in w.detectors for w in clean), clean
    assert all(w.prompt_mmd_p < 0.05 for w in report.per_window if w.window in (shift, shift + 1))
    assert all(w.ttft_p50_s > 0 for w in report.per_window)  # the sidecar measured time to first token
    # the generator's alerts annotate and snapshot the generator dashboard; its profile holds the text features,
    # so each alert links the drift report of its window
    saved = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert saved
    for alert in saved:
        page = tmp_path / "reports" / alert["model"] / alert["version"] / Path(alert["links"]["report"]).name
        assert alert["links"]["report"] and page.exists(), alert["links"]
    annotations = [json.loads(p.read_text()) for p in (tmp_path / "grafana").glob("*-annotation-*.json")]
    assert len(annotations) == len(saved) and {a["dashboardUID"] for a in annotations} == {"inferwatch-generator"}
    assert report.run is not None
    check_run(vars(report.run), saved, "charlm", data=("reference.npz",), params={"seed": "11", "n_layer": "2"},
              metrics=("train_loss", "val_loss"),
              features=len(generation_feature_names()))
