"""Detectors behind one protocol: the registry, isolation of a detector that raises, shutdown of the embedded bus."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detectors import build_reference, fit_calibrator
from monitor.alerts import MemoryChannel
from monitor.config import Config, DetectConfig, ModelConfig, TopicsConfig, WindowConfig
from monitor.detection import (
    BY_NAME,
    REGISTRY,
    DetectorBase,
    Finding,
    GaugeSpec,
    Inputs,
    ModelContext,
    Sample,
    gauge_specs,
)
from monitor.detection.feature_drift import FeatureDrift
from monitor.detection.prediction_drift import PredictionDrift
from monitor.evaluation import WatchedModel, WindowResult
from monitor.events import encode_event
from monitor.metrics import daemon_metrics
from monitor.pipeline import Pipeline
from monitor.profiles import Profile, load_profile
from monitor.transport import MemoryBus
from monitor.windows import ClosedWindow
from tests.support import MODEL, VERSION, events, write_profile

KEY = f"{MODEL}/{VERSION}"


class Exploding(DetectorBase):
    """A detector with a bug: it raises on every window."""

    name: ClassVar[str] = "exploding"
    needs: ClassVar[tuple[str, ...]] = ("numeric",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = ()

    @classmethod
    def build(cls, model: ModelContext) -> Exploding:
        return cls()

    def evaluate(self, inputs: Inputs) -> None:
        raise ZeroDivisionError(f"bug on {inputs.window.window_id}")

    @staticmethod
    def finding(result: object) -> Finding | None:
        return None


class MeanShift(DetectorBase):
    """A detector written as a user would add one: one class, registered by one line (here: the list passed in)."""

    name: ClassVar[str] = "mean_shift"
    needs: ClassVar[tuple[str, ...]] = ("numeric",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (GaugeSpec("inferwatch_mean_shift", "Largest |mean| of a feature."),)

    @classmethod
    def build(cls, model: ModelContext) -> MeanShift:
        return cls()

    def evaluate(self, inputs: Inputs) -> float:
        return float(np.nanmax(np.abs(np.nanmean(inputs.window.features, axis=0))))

    @staticmethod
    def finding(result: float) -> Finding:
        return Finding("mean_shift", result > 1.0, False, (), f"largest |mean| {result:.2f}")

    @staticmethod
    def samples(result: float) -> Iterator[Sample]:
        yield Sample("inferwatch_mean_shift", result)


def test_registry_names_are_unique_and_gauges_are_declared_once() -> None:
    names = [d.name for d in REGISTRY]
    assert len(names) == len(set(names)) and set(BY_NAME) == set(names)
    specs = gauge_specs()
    assert "inferwatch_drift_ks_statistic" in specs and "inferwatch_slo_burn_rate" in specs
    assert all(spec.name.startswith("inferwatch_") for spec in specs.values())
    # the slow-drift detector reads feature drift's result of the same window: it must come after it
    assert names.index("slow_drift") > names.index("feature_drift")


def _window(n: int, columns: dict[str, np.ndarray], window_id: str = "w") -> ClosedWindow:
    return ClosedWindow(key=KEY, index=0, window_id=window_id, n=n, columns=columns, first_time=0.0,
                        last_time=1.0, reason="full")


def test_a_detector_that_raises_costs_only_its_own_result(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path))
    model = WatchedModel(profile, DetectConfig(), WindowConfig(), registry=(FeatureDrift, Exploding, PredictionDrift))
    rng = np.random.default_rng(0)
    result = model.evaluate(_window(200, {"numeric": rng.normal(size=(200, 4)) + np.array([0, 3, 0, 0]),
                                          "prediction": rng.choice(3, size=200), "latency": np.full((200, 2), 0.01)},
                                    window_id="w-17"))
    assert [f.detector for f in result.failures] == ["exploding"]
    assert "ZeroDivisionError: bug on w-17" in result.failures[0].error
    assert set(result.results) == {"feature_drift", "prediction_drift"}
    assert result.drifted_features == ("f1",)


def test_a_new_detector_is_one_class_in_the_list(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path))
    model = WatchedModel(profile, DetectConfig(), WindowConfig(), registry=(*REGISTRY, MeanShift))
    x = np.random.default_rng(1).normal(size=(100, 4)) + np.array([0, 0, 2, 0])
    result = model.evaluate(_window(100, {"numeric": x, "prediction": np.zeros(100, dtype=np.int64),
                                          "latency": np.full((100, 2), np.nan)}))
    found = {f.detector: f for f in result.findings}
    assert found["mean_shift"].drifted and found["feature_drift"].drifted


def _calibrated_profile() -> Profile:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2000, 2)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(2000) < probs[:, 1]).astype(int)
    x = rng.normal(size=(2000, 4))
    reference = build_reference(x, ("f0", "f1", "f2", "f3"), predictions=probs.argmax(axis=1),
                                class_labels=["0", "1"])
    return Profile(model=MODEL, version=VERSION, reference=reference, calibrator=fit_calibrator(probs, labels),
                   reference_accuracy=float(np.mean(probs.argmax(axis=1) == labels)))


def test_a_poison_window_of_probabilities_never_raises_from_evaluate() -> None:
    """The probabilities of ``[2, -1]`` once made CBPE raise inside the pipeline and stop the daemon."""
    model = WatchedModel(_calibrated_profile(), DetectConfig(), WindowConfig())
    n = 60
    rng = np.random.default_rng(4)
    result = model.evaluate(_window(n, {"numeric": rng.normal(size=(n, 4)), "prediction": np.zeros(n, dtype=np.int64),
                                        "latency": np.full((n, 2), 0.01), "probs": np.tile([2.0, -1.0], (n, 1))}))
    assert "feature_drift" in result.results and "latency" in result.results
    assert "estimated_quality" in result.results or [f.detector for f in result.failures] == ["estimated_quality"]


def _config(tmp_path: Path, size: int = 400) -> Config:
    return Config(models=[ModelConfig(name=MODEL, version=VERSION, profile=str(write_profile(tmp_path)))],
                  topics=TopicsConfig(), window=WindowConfig(size=size, max_seconds=3600, min_samples=30),
                  detect=DetectConfig(alpha=0.01, min_effect=0.1))


def test_the_pipeline_counts_a_failing_detector_and_still_emits_every_window(tmp_path: Path) -> None:
    config = _config(tmp_path, size=100)
    bus, registry, results, channel = MemoryBus(), CollectorRegistry(), list[WindowResult](), MemoryChannel()
    consumer = bus.consumer([config.topics.events], "detect")
    pipeline = Pipeline(config, {KEY: load_profile(config.models[0].profile)}, consumer, bus.producer(),
                        daemon_metrics(registry), [channel], on_result=results.append,
                        registry=(FeatureDrift, Exploding))
    producer = bus.producer()
    for event in events(300, np.random.default_rng(5), shift=2.0):
        producer.send(config.topics.events, encode_event(event), KEY.encode())
    while pipeline.messages < 300:
        pipeline.step(0.05)
    assert [r.n_events for r in results] == [100, 100, 100]
    assert all(r.drift is not None and r.drift.drifted for r in results)
    assert registry.get_sample_value("inferwatch_detector_errors_total", {"detector": "exploding"}) == 3
    assert registry.get_sample_value("inferwatch_detector_errors_total", {"detector": "feature_drift"}) == 0
    assert [a.detector for a in channel.alerts] == ["feature_drift"]  # 2 of 3 windows: fired once
    bus.close()


@pytest.mark.parametrize("events_in_window", [80, 399])
def test_sigterm_on_the_embedded_bus_evaluates_open_windows(tmp_path: Path, events_in_window: int) -> None:
    """Nothing would replay an embedded bus after the process ends: open windows are evaluated at shutdown."""
    config = _config(tmp_path)
    bus, results = MemoryBus(), list[WindowResult]()
    pipeline = Pipeline(config, {KEY: load_profile(config.models[0].profile)}, bus.consumer([config.topics.events],
                        "detect"), bus.producer(), daemon_metrics(CollectorRegistry()), on_result=results.append)
    producer = bus.producer()
    for event in events(events_in_window, np.random.default_rng(6)):
        producer.send(config.topics.events, encode_event(event), KEY.encode())
    while pipeline.messages < events_in_window:
        pipeline.step(0.05)
    assert results == []
    stop = threading.Event()
    stop.set()
    pipeline.run(stop)
    assert [(r.n_events, r.closed_by) for r in results] == [(events_in_window, "shutdown")]
    bus.close()
