"""Column batches (``inferwatch.columns/v1``) take the pipeline's array path: the same windows, results, alerts,
joins, drops, dead letters and metrics as the same events sent in batch envelopes (whose equivalence with one
event per record the rest of the suite checks; window ids differ there by design: they name positions)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts import MemoryChannel
from monitor.config import Config, DetectConfig, ModelConfig, TopicsConfig, WindowConfig
from monitor.events import ColumnBatch, FeedbackEvent, InferenceEvent, Latency, encode_batch, encode_event
from monitor.metrics import daemon_metrics
from monitor.pipeline import Pipeline
from monitor.profiles import load_profile
from monitor.transport import MemoryBus
from tests.support import MODEL, VERSION, events, write_profile

KEY = f"{MODEL}/{VERSION}"
RECORD = 100  # events per batch record
# Metrics that count records or time, not events: they differ between the encodings by design.
PER_RECORD = ("inferwatch_records_consumed", "inferwatch_window_evaluation_seconds", "inferwatch_consumer_lag")


def stream(seed: int) -> tuple[list[InferenceEvent], list[FeedbackEvent]]:
    """Events with what the array path must get right: a shift (drift and an alert), retried requests inside a
    record and across records, missing and null features, features in another order, no latency, GPU time,
    classes by name; and feedback that arrives before its inference."""
    rng = np.random.default_rng(seed)
    out = events(1200, rng) + events(900, rng, shift=0.8, shifted=(0, 2), start=1_700_002_000.0)
    for i, e in enumerate(out):
        e.request_id = f"q{seed}-{i}"
        if i % 7 == 0:
            e.latency = Latency(total_s=0.002, gpu_s=0.001)
        if 300 <= i < 400:
            e.latency = None
            e.prediction = "abc"[int(e.prediction) % 3]  # type: ignore[arg-type]
    retried = [msgspec.structs.replace(out[i], time=out[i].time + 0.5) for i in (10, 11, 205)]
    out = [*out[:50], retried[0], *out[50:250], *retried[1:], *out[250:]]  # one inside a record, two across
    for i in range(500, 600):  # one record: a feature missing, another null
        out[i].features = {"f3": out[i].features["f3"], "f1": None, "f0": out[i].features["f0"]}
    for i in range(700, 800):  # one record: the profile's features in another order
        out[i].features = dict(reversed(list(out[i].features.items())))
    feedback = [FeedbackEvent(request_id=f"q{seed}-{i}", time=1_700_000_000.0 + i, model=MODEL, version=VERSION,
                              label=int(rng.integers(3))) for i in range(0, 2100, 3)]
    return out, feedback


def records(evs: list[InferenceEvent], how: str) -> list[bytes]:
    chunks = [evs[i:i + RECORD] for i in range(0, len(evs), RECORD)]
    if how == "batch":
        return [encode_batch(c) for c in chunks]
    out = []
    for c in chunks:
        batch = ColumnBatch.of(c)
        assert batch is not None, "every record of the stream fits a column batch"
        out.append(msgspec.json.encode(batch))
    return out


def run(tmp_path: Path, how: str, window: WindowConfig, evs: list[InferenceEvent],
        feedback: list[FeedbackEvent]) -> dict[str, Any]:
    """Everything a pipeline tells about the stream sent ``how``: results, alerts, dead letters, metrics."""
    profile = write_profile(tmp_path)
    config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile=str(profile))], topics=TopicsConfig(),
                    window=window, detect=DetectConfig(alpha=0.01, min_effect=0.1))
    bus, registry, channel = MemoryBus(), CollectorRegistry(), MemoryChannel()
    pipeline = Pipeline(config, {KEY: load_profile(profile)}, bus.consumer(
        [config.topics.events, config.topics.feedback], "detect"), bus.producer(), daemon_metrics(registry),
        [channel], clock=lambda: 0.0)
    producer = bus.producer()
    for f in feedback:  # first, so that the inferences meet it
        producer.send(config.topics.feedback, encode_event(f))
    drive(pipeline, len(feedback))
    values = records(evs, how)
    for value in values:
        producer.send(config.topics.events, value)
    drive(pipeline, len(feedback) + len(values))
    pipeline.close_open_windows()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for metric in registry.collect()
               for s in metric.samples if not s.name.endswith("_created") and not s.name.startswith(PER_RECORD)}
    results = [(m.headers, json.loads(m.value)) for m in read(bus, config.topics.results)]
    deadletters = [(m.headers, m.value) for m in read(bus, config.topics.deadletter)]
    return {"results": results, "alerts": [(a.status, a.detector, a.window) for a in channel.alerts],
            "deadletters": deadletters, "metrics": samples}


def drive(pipeline: Pipeline, until: int) -> None:
    deadline = time.monotonic() + 120.0
    while pipeline.messages < until:
        assert time.monotonic() < deadline, f"consumed {pipeline.messages} of {until} records"
        pipeline.step(0.0)


def read(bus: MemoryBus, topic: str) -> list[Any]:
    consumer, out = bus.consumer([topic], "reader"), []
    while batch := consumer.poll(0.0):
        out += batch
    return out


@pytest.mark.parametrize("window", [
    WindowConfig(size=400, max_seconds=3600, min_samples=30),
    WindowConfig(size=400, max_seconds=3600, min_samples=30, duration_s=300.0, lateness_s=30.0, late_events="next"),
], ids=["by count", "by event time"])
def test_column_batches_give_what_batch_envelopes_give(tmp_path: Path, window: WindowConfig) -> None:
    evs, feedback = stream(3)
    seen = {how: run(tmp_path / how, how, window, evs, feedback) for how in ("batch", "columns")}
    reference = seen["batch"]
    assert len(reference["results"]) >= 5 and any(a[0] == "firing" for a in reference["alerts"])
    assert reference["metrics"][("inferwatch_window_dropped_events_total",
                                 (("model", MODEL), ("reason", "duplicate"), ("version", VERSION)))] >= 2
    assert reference["metrics"][("inferwatch_feedback_joined_total", ())] > 0
    for part in ("results", "alerts", "deadletters", "metrics"):
        assert seen["columns"][part] == reference[part], f"{part} differ"


def test_a_row_the_profile_rejects_takes_the_rows_one_by_one(tmp_path: Path) -> None:
    """A class the profile does not know: that row is dead-lettered with its reason, the other rows go on."""
    evs = events(RECORD, np.random.default_rng(5))
    evs[17].prediction = 7
    window = WindowConfig(size=50, max_seconds=3600, min_samples=30)
    batch, columns = run(tmp_path / "b", "batch", window, evs, []), run(tmp_path / "c", "columns", window, evs, [])
    assert columns == batch
    assert [json.loads(value)["request_id"] for _, value in columns["deadletters"]] == [evs[17].request_id]
    assert [r["n_events"] for _, r in columns["results"]] == [50, 49]
