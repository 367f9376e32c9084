"""Issue 10, parts 3-4: ``inferwatch baseline --from-events`` (a JSON-lines file, a Kafka topic range on the real
broker) and ``--from-run`` (a folder run; a real MLflow server when its fixture exists), and the sidecar's OIP
input features as a public function."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from collectors.sidecar import Capturer, Exchange, SidecarConfig, oip_features, sidecar_metrics
from monitor.cli import main
from monitor.config import DetectConfig, WindowConfig
from monitor.evaluation import WatchedModel
from monitor.events import InferenceEvent, encode_batch, encode_event
from monitor.profiles import Profile, load_profile
from tests.mlflow_server import mlflow_server  # noqa: F401  (the module-scoped server fixture)
from tests.support import free_port

T0 = 1_700_000_000.0
NAMES = ("f0", "f1", "f2")


def _events(n: int, seed: int = 0, model: str = "tab", version: str = "2", start: float = T0) -> list[InferenceEvent]:
    """``n`` events, one a second from ``start``; f2 is missing (null or absent) in about a tenth of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    probs = rng.dirichlet(np.ones(3), size=n)
    out = []
    for i in range(n):
        features: dict[str, float | None] = {"f0": float(x[i, 0]), "f1": float(x[i, 1]), "f2": float(x[i, 2])}
        if i % 10 == 3:
            features["f2"] = None
        elif i % 10 == 7:
            del features["f2"]
        out.append(InferenceEvent(request_id=f"r{i}", time=start + i, model=model, version=version,
                                  task="classification", features=features, prediction=int(probs[i].argmax()),
                                  probabilities=[float(p) for p in probs[i]]))
    return out


def _npz(path: Path, events: list[InferenceEvent]) -> Path:
    x = np.array([[np.nan if e.features.get(n) is None else e.features[n] for n in NAMES] for e in events])
    np.savez(path, X=x, feature_names=np.array(NAMES), predictions=np.array([e.prediction for e in events]),
             probabilities=np.array([e.probabilities for e in events]))
    return path


def _jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _same_reference(a: Profile, b: Profile) -> None:
    ra, rb = a.reference, b.reference
    assert ra is not None and rb is not None
    assert ra.feature_names == rb.feature_names
    assert ra.class_labels == rb.class_labels
    np.testing.assert_array_equal(ra.sorted_values, rb.sorted_values)  # NaN padding compares equal
    np.testing.assert_array_equal(ra.edges, rb.edges)
    np.testing.assert_array_equal(ra.proportions, rb.proportions)
    np.testing.assert_array_equal(ra.class_counts, rb.class_counts)
    np.testing.assert_array_equal(ra.class_priors, rb.class_priors)
    np.testing.assert_array_equal(ra.missing_counts, rb.missing_counts)


def _build(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["baseline", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_profile_from_an_events_file_equals_one_from_the_same_rows_as_npz(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = _events(500) + _events(20, model="other")
    # singles and batches, with another model's events among them
    lines = [encode_event(e) for e in events[:200]] + [encode_batch(events[200:350]), encode_batch(events[350:])]
    source = _jsonl(tmp_path / "events.jsonl", lines)
    npz = _npz(tmp_path / "rows.npz", events[:500])

    code, out, _ = _build(capsys, "--from-events", str(source), "--model", "tab/2", "--out", str(tmp_path / "e.npz"))
    assert code == 0, out
    assert "500 events" in out and "20 of other models" in out
    assert main(["baseline", "--data", str(npz), "--model", "tab/2", "--out", str(tmp_path / "d.npz")]) == 0
    from_events, from_npz = load_profile(tmp_path / "e.npz"), load_profile(tmp_path / "d.npz")
    _same_reference(from_events, from_npz)
    assert (from_events.model, from_events.version) == (from_npz.model, from_npz.version) == ("tab", "2")
    assert from_events.reference_period == (T0, T0 + 499)
    assert from_npz.reference_period is None  # and an older profile, without the field, loads as None too

    # The daemon, watching with that profile, maps each event to the same row the profile was built from.
    watched = WatchedModel(from_events, DetectConfig(), WindowConfig())
    rows = np.array([watched.values(e)["numeric"] for e in events[:500]])  # type: ignore[index]
    np.testing.assert_array_equal(rows, np.load(npz)["X"])


def test_since_and_until_keep_exactly_the_events_in_range_and_the_profile_records_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = _events(300)
    source = _jsonl(tmp_path / "events.jsonl", [encode_event(e) for e in events[::-1]])  # any order
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 100))
    code, out, _ = _build(capsys, "--from-events", str(source), "--model", "tab", "--version", "2", "--since", since,
                          "--until", str(T0 + 199), "--out", str(tmp_path / "p.npz"))
    assert code == 0, out
    assert "100 events" in out and "200 outside the period" in out
    profile = load_profile(tmp_path / "p.npz")
    assert profile.reference_period == (T0 + 100, T0 + 199)
    _npz(tmp_path / "range.npz", events[100:200])
    assert main(["baseline", "--data", str(tmp_path / "range.npz"), "--out", str(tmp_path / "r.npz")]) == 0
    _same_reference(profile, load_profile(tmp_path / "r.npz"))


def test_hostile_lines_are_counted_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _events(50)
    bad_in_batch = json.loads(encode_batch(good[40:42]))
    bad_in_batch["events"][1]["probabilities"] = [0.5, 0.6, 0.1]  # sums to 1.2
    lines = [encode_event(e) for e in good[:40]] + [
        b'{"schema": "inferwatch.inference/v1", "request_id": ',  # malformed JSON
        b'{"schema": "inferwatch.inference/v1", "request_id": "n", "time": 1, "model": "tab", "version": "2", '
        b'"task": "classification", "features": {"f0": NaN}}',  # non-finite
        b" " * 10 + b'"' + b"x" * (5 * 1024 * 1024) + b'"',  # a line larger than any record may be
        encode_event(_events(1, model="elsewhere")[0]),  # another model
        b"",  # blank
        json.dumps(bad_in_batch).encode(),  # one good and one bad event in a batch
    ] + [encode_event(e) for e in good[42:]]
    source = _jsonl(tmp_path / "hostile.jsonl", lines)
    code, out, _ = _build(capsys, "--from-events", str(source), "--model", "tab/2", "--out", str(tmp_path / "p.npz"))
    assert code == 0, out
    assert "49 events" in out
    assert "4 rejected (malformed_json 1, non_finite 1, out_of_range 1, too_large 1)" in out
    assert "1 of other models" in out
    assert load_profile(tmp_path / "p.npz").reference.missing_counts is not None  # type: ignore[union-attr]

    only_bad = _jsonl(tmp_path / "bad.jsonl", lines[40:44])
    code, out, err = _build(capsys, "--from-events", str(only_bad), "--model", "tab/2",
                            "--out", str(tmp_path / "none.npz"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and str(only_bad) in err and "no event of tab/2" in err
    assert not (tmp_path / "none.npz").exists()


def _oip_exchange(x: np.ndarray, scores: np.ndarray, request_id: str) -> Exchange:
    request = {"inputs": [{"name": "pixels", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    response = {"outputs": [{"name": "probs", "shape": list(scores.shape), "datatype": "FP32",
                             "data": scores.ravel().tolist()}]}
    return Exchange(route="oip", path="/v2/models/digits/versions/3/infer", request_id=request_id, time=T0,
                    request_body=json.dumps(request).encode(), status=200, response_body=json.dumps(response).encode(),
                    event_stream=False, pieces=(), started=0.0, finished=0.001)


@pytest.mark.parametrize("batch", [8, 64])  # 8 x 64 values: summed in Python; 64 x 64: in numpy
def test_the_public_oip_features_equal_what_the_sidecar_captures(batch: int) -> None:
    from sklearn.datasets import load_digits

    x = load_digits().data[:batch].astype(np.float32)  # (B, 64) training tensor
    scores = np.full((batch, 10), 0.1, dtype=np.float32)
    captured = Capturer(SidecarConfig(), sidecar_metrics(CollectorRegistry())).capture(
        _oip_exchange(x, scores, "r"))
    assert len(captured) == batch
    features = oip_features({"pixels": x})
    assert list(features) == list(captured[0].features) == ["pixels.mean", "pixels.std", "pixels.min", "pixels.max"]
    for name, values in features.items():
        assert values.tolist() == [e.features[name] for e in captured]  # to the last bit


def test_a_profile_of_sidecar_traffic_matches_one_of_the_training_tensor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The use the public function is for: a baseline of training tensors with the sidecar's feature names, to
    watch sidecar traffic with. Requests of one sample each sum in another order than the whole tensor: the values
    agree to rounding, the feature names and rows exactly."""
    from sklearn.datasets import load_digits

    x = load_digits().data[:300]  # (300, 64)
    capturer = Capturer(SidecarConfig(), sidecar_metrics(CollectorRegistry()))
    events = [e for i in range(len(x))
              for e in capturer.capture(_oip_exchange(x[i:i + 1], np.array([[0.3, 0.7]]), f"r{i}"))]
    source = _jsonl(tmp_path / "sidecar.jsonl", [encode_event(e) for e in events])
    features = oip_features({"pixels": x})
    np.savez(tmp_path / "train.npz", X=np.column_stack(list(features.values())), feature_names=list(features))
    assert _build(capsys, "--from-events", str(source), "--model", "digits/3", "--out", str(tmp_path / "e.npz"))[0] == 0
    assert _build(capsys, "--data", str(tmp_path / "train.npz"), "--out", str(tmp_path / "t.npz"))[0] == 0
    live, train = load_profile(tmp_path / "e.npz").reference, load_profile(tmp_path / "t.npz").reference
    assert live is not None and train is not None
    assert live.feature_names == train.feature_names
    np.testing.assert_allclose(live.sorted_values, train.sorted_values, rtol=1e-12, atol=1e-12)


@pytest.mark.kafka
def test_a_kafka_topic_range_gives_exactly_that_range(kafka_bootstrap: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from kafka import KafkaProducer

    from monitor.transport.kafka import ensure_topics

    topic = f"baseline-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, {topic: 3})
    events = _events(120, start=T0)  # one a minute below, each in a record stamped with its own time
    events = [InferenceEvent(**{**{f: getattr(e, f) for f in e.__struct_fields__}, "time": T0 + 60 * i})
              for i, e in enumerate(events)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        for i, e in enumerate(events):
            producer.send(topic, encode_event(e), partition=i % 3, timestamp_ms=int(e.time * 1000))
        producer.send(topic, encode_batch(_events(5, model="other", start=T0 + 3000)), partition=0,
                      timestamp_ms=int((T0 + 3000) * 1000))
        producer.send(topic, b"not json", partition=1, timestamp_ms=int((T0 + 3000) * 1000))
        producer.flush(timeout=60)
    finally:
        producer.close()

    since, until = T0 + 60 * 40, T0 + 60 * 79
    code, out, err = _build(capsys, "--from-events", f"kafka://{kafka_bootstrap}/{topic}", "--model", "tab/2",
                            "--since", str(since), "--until", str(until), "--out", str(tmp_path / "k.npz"))
    assert code == 0, err
    assert "40 events" in out and "1 rejected (malformed_json 1)" in out and "5 of other models" in out
    profile = load_profile(tmp_path / "k.npz")
    assert profile.reference_period == (since, until)
    _npz(tmp_path / "range.npz", events[40:80])
    assert main(["baseline", "--data", str(tmp_path / "range.npz"), "--out", str(tmp_path / "r.npz")]) == 0
    _same_reference(profile, load_profile(tmp_path / "r.npz"))

    code, out, err = _build(capsys, "--from-events", f"kafka://{kafka_bootstrap}/no-such-{topic}", "--model",
                            "tab/2", "--out", str(tmp_path / "none.npz"))
    assert code == 2 and f"no-such-{topic}" in err and not (tmp_path / "none.npz").exists()


def _folder_run(root: Path, data: bool = True) -> Path:
    run = root / "run-42"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"lr": 0.01, "epochs": 5}))
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.93, "loss": 0.21}))
    if data:
        _npz(run / "train.npz", _events(400))
    return run


def test_from_a_folder_run_the_profile_records_the_run_and_goes_back_into_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _folder_run(tmp_path)
    out_path = tmp_path / "out" / "tab.profile.npz"
    code, out, err = _build(capsys, "--from-run", run.as_uri(), "--model", "tab/2", "--out", str(out_path))
    assert code == 0, err
    profile = load_profile(out_path)
    info = profile.training_run_info
    assert info is not None
    assert (info["id"], info["source"], info["url"], info["artifact"]) == ("run-42", "file", run.as_uri(), "train.npz")
    assert info["metrics"] == {"accuracy": 0.93, "loss": 0.21}
    assert profile.training_run == run.as_uri()
    _npz(tmp_path / "same.npz", _events(400))
    assert main(["baseline", "--data", str(tmp_path / "same.npz"), "--out", str(tmp_path / "same.profile.npz")]) == 0
    _same_reference(profile, load_profile(tmp_path / "same.profile.npz"))
    logged = run / "inferwatch" / out_path.name
    assert logged.read_bytes() == out_path.read_bytes()
    assert str(logged.as_uri()) in out

    # Built again, the run now also holds that profile: the data is still what the profile is built from.
    assert main(["baseline", "--from-run", run.as_uri(), "--out", str(out_path)]) == 0
    assert load_profile(out_path).training_run_info["artifact"] == "train.npz"  # type: ignore[index]


def _bad(capsys: pytest.CaptureFixture[str], out: Path, uri: str, *extra: str) -> str:
    code, stdout, err = _build(capsys, "--from-run", uri, "--out", str(out), *extra)
    assert code == 2, (stdout, err)
    assert err.startswith("inferwatch: error: ") and err.count("\n") == 1, err
    assert uri in err, err
    assert not out.exists() and not list(out.parent.glob(".inferwatch-baseline-*"))
    return err


def test_bad_run_uris_exit_2_naming_the_uri_and_write_nothing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.npz"
    assert "unknown scheme" in _bad(capsys, out, "s3://bucket/runs/42")
    _bad(capsys, out, (tmp_path / "missing-run").as_uri())
    _bad(capsys, out, f"mlflow://127.0.0.1:{free_port()}/0123456789abcdef")  # nothing listens there
    run = _folder_run(tmp_path, data=False)
    assert "no reference data" in _bad(capsys, out, run.as_uri())
    _npz(run / "train.npz", _events(50))
    assert "valid.npz" in _bad(capsys, out, run.as_uri(), "--artifact", "valid.npz")
    assert not (run / "inferwatch").exists()  # nothing logged to the run either


def test_from_an_mlflow_run_the_profile_records_the_run_and_is_logged_back(
        mlflow_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.create_experiment(f"baseline-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    run_id = run.info.run_id
    client.log_metric(run_id, "accuracy", 0.91)
    client.log_metric(run_id, "loss", 0.3)
    client.log_artifact(run_id, str(_npz(tmp_path / "train.npz", _events(300))))
    client.set_terminated(run_id)

    host_port = mlflow_server.removeprefix("http://").rstrip("/")
    out_path = tmp_path / "tab.profile.npz"
    code, out, err = _build(capsys, "--from-run", f"mlflow://{host_port}/{run_id}", "--model", "tab/2",
                            "--out", str(out_path))
    assert code == 0, err
    info = load_profile(out_path).training_run_info
    assert info is not None and info["id"] == run_id and info["source"] == "mlflow"
    assert info["metrics"]["accuracy"] == 0.91 and run_id in info["url"]
    assert f"logged to runs:/{run_id}/{out_path.name}" in out
    assert sorted(a.path for a in client.list_artifacts(run_id)) == [out_path.name, "train.npz"]
    logged = Path(client.download_artifacts(run_id, out_path.name, str(tmp_path)))
    assert logged.read_bytes() == out_path.read_bytes()


def test_an_unreachable_broker_or_a_bad_source_is_one_line_naming_it(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for source in (f"kafka://127.0.0.1:{free_port()}/events", "kafka://no-port/events", "s3://bucket/events.jsonl",
                   str(tmp_path / "absent.jsonl")):
        code, out, err = _build(capsys, "--from-events", source, "--model", "tab/2", "--out", str(tmp_path / "p.npz"))
        assert code == 2 and out == "" and err.count("\n") == 1 and source in err, err
        assert not (tmp_path / "p.npz").exists()
    code, _, err = _build(capsys, "--from-events", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "p.npz"))
    assert code == 2 and "--model NAME/VERSION" in err
