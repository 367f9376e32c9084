"""Prometheus metrics of the daemon, made on a registry that is passed in (never the global one).

Label values are bounded: ``model``/``version`` come from the configured models (events of unknown models
are rejected before any labelled metric is touched), ``feature`` and ``class`` from their profiles, ``reason``
from :data:`monitor.events.REJECT_REASONS`, ``detector`` from the registry of detectors, ``topic``/``partition``
from the consumer's assignment. The detectors' own gauges are declared by the detectors
(:attr:`monitor.detection.Detector.gauges`) and made here, once each.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from detectors import PredictionDriftResult
from monitor.buildinfo import build_info
from monitor.detection import BY_NAME, DETECTOR_NAMES, GaugeSpec, gauge_specs
from monitor.evaluation import WindowResult
from monitor.events import REJECT_REASONS, InferenceEvent
from monitor.genai import GenAIMetrics, genai_metrics, observe_generation

log = logging.getLogger(__name__)

#: Buckets of ``inferwatch_inference_latency_seconds``: 0.5 ms to 10 s, the span of CNN and tabular models on a
#: GPU or a CPU (generators have the GenAI request-duration histogram, up to 82 s).
INFERENCE_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                    5.0, 10.0)


class WindowQuantiles(Collector):
    """Quantiles of the last window, exposed as a Prometheus summary of ``quantile`` samples only.

    Prometheus reserves the label ``quantile`` for summaries (``promtool check metrics`` rejects a gauge that
    has it). A summary's quantiles are those of a recent time window anyway; ``_sum`` and ``_count`` are left
    out because a window's events are counted by the per-event histograms."""

    def __init__(self, spec: GaugeSpec, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self._spec = spec
        self._labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Quantile:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._spec.name} takes labels {self._labelnames}, got {values}")
        return _Quantile(self._values, tuple(values))

    def describe(self) -> Iterable[Metric]:
        return [Metric(self._spec.name, self._spec.help, "summary")]

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self._spec.name, self._spec.help, "summary")
        for values, value in sorted(self._values.items()):
            metric.add_sample(self._spec.name, dict(zip(self._labelnames, values, strict=True)), value)
        return [metric]


class _Quantile:
    """One series of a :class:`WindowQuantiles`, set like a gauge's child."""

    def __init__(self, values: dict[tuple[str, ...], float], key: tuple[str, ...]) -> None:
        self._values, self._key = values, key

    def set(self, value: float) -> None:
        self._values[self._key] = float(value)


@dataclass(frozen=True)
class DaemonMetrics:
    events_consumed: Counter
    feedback_consumed: Counter
    records_consumed: Counter
    events_rejected: Counter
    deadletters: Counter
    windows_closed: Counter
    windows_replayed: Counter
    window_events: Gauge
    window_dropped: Counter
    late_events: Counter
    drift_detected: Gauge
    window_seconds: Histogram
    commits: Counter
    commits_rejected: Counter
    rebalances: Counter
    feedback_pending: Gauge
    feedback_joined: Counter
    feedback_expired: Counter
    feedback_evicted: Counter
    detector_errors: Counter
    detector_gauges: Mapping[str, Gauge | WindowQuantiles]
    build_info: Info
    model_info: Info
    inference_latency: Histogram
    genai: GenAIMetrics
    class_ratio: Gauge
    consumer_lag: Gauge
    variant_mismatches: Counter


def _detector_gauge(spec: GaugeSpec, registry: CollectorRegistry) -> Gauge | WindowQuantiles:
    labelnames = ("model", "version", *spec.labels)
    if spec.type == "summary":
        return WindowQuantiles(spec, labelnames, registry)
    return Gauge(spec.name, spec.help, labelnames, registry=registry)


def daemon_metrics(registry: CollectorRegistry) -> DaemonMetrics:
    mv = ("model", "version")
    m = DaemonMetrics(
        events_consumed=Counter("inferwatch_events_consumed_total",
                                "Valid inference events consumed.", mv, registry=registry),
        feedback_consumed=Counter("inferwatch_feedback_consumed_total",
                                  "Valid feedback events consumed.", mv, registry=registry),
        records_consumed=Counter("inferwatch_records_consumed_total",
                                 "Transport records consumed (one record may hold a batch of events).",
                                 registry=registry),
        events_rejected=Counter("inferwatch_events_rejected_total",
                                "Events or records rejected by validation, by reason.", ("reason",),
                                registry=registry),
        deadletters=Counter("inferwatch_deadletters_total",
                            "Records sent to the dead-letter topic.", registry=registry),
        windows_closed=Counter("inferwatch_windows_closed_total", "Windows closed and evaluated.",
                               (*mv, "reason"), registry=registry),
        windows_replayed=Counter("inferwatch_windows_replayed_total",
                                 "Windows read again after a restart or rebalance whose result an earlier run had "
                                 "published already: not evaluated nor published again.", mv, registry=registry),
        window_events=Gauge("inferwatch_window_open_events", "Events held in open windows.",
                            registry=registry),
        window_dropped=Counter("inferwatch_window_dropped_events_total",
                               "Valid events no window took: late (their event-time window had closed), duplicate "
                               "(their request id was in the window already) or full (the window held "
                               "window.max_rows).", (*mv, "reason"), registry=registry),
        late_events=Counter("inferwatch_late_events_total",
                            "Events whose event-time window had closed, by what became of them (window.late_events).",
                            (*mv, "action"), registry=registry),
        drift_detected=Gauge("inferwatch_drift_detected",
                             "1 when the last window of this detector found drift, else 0.",
                             (*mv, "detector"), registry=registry),
        window_seconds=Histogram("inferwatch_window_evaluation_seconds",
                                 "Time to evaluate the detectors on one closed window.",
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                                 registry=registry),
        commits=Counter("inferwatch_offset_commits_total", "Offset commits after durable emission.",
                        registry=registry),
        commits_rejected=Counter("inferwatch_offset_commits_rejected_total",
                                 "Offset commits the consumer group refused while rebalancing (retried after "
                                 "the rebalance; nothing is lost).", registry=registry),
        rebalances=Counter("inferwatch_consumer_rebalances_total",
                           "Partition reassignments after the first; open windows are dropped and read again "
                           "from the last commit.", registry=registry),
        feedback_pending=Gauge("inferwatch_feedback_pending", "Inferences and feedback waiting to be joined.",
                               ("kind",), registry=registry),
        feedback_joined=Counter("inferwatch_feedback_joined_total", "Feedback joined to its inference.",
                                registry=registry),
        feedback_expired=Counter("inferwatch_feedback_expired_total",
                                 "Unjoined inferences or feedback dropped after the time-to-live.", registry=registry),
        feedback_evicted=Counter("inferwatch_feedback_evicted_total",
                                 "Unjoined entries evicted because the join store was full.", ("kind",),
                                 registry=registry),
        detector_errors=Counter("inferwatch_detector_errors_total",
                                "Windows on which a detector raised; its result is missing, the others stand.",
                                ("detector",), registry=registry),
        detector_gauges={spec.name: _detector_gauge(spec, registry) for spec in gauge_specs().values()},
        build_info=build_info(registry),
        model_info=Info("inferwatch_model", "1 for every watched model version: its training run (empty when "
                        "unknown), kind (classifier or generator) and variant (A/B, canary; only where "
                        "configured).", mv, registry=registry),
        inference_latency=Histogram("inferwatch_inference_latency_seconds",
                                    "Latency of each consumed inference event: total, and GPU time where the "
                                    "event measured it.", (*mv, "kind"), buckets=INFERENCE_LATENCY_BUCKETS,
                                    registry=registry),
        genai=genai_metrics(registry),
        class_ratio=Gauge("inferwatch_prediction_class_ratio",
                          "Share of each predicted class: in the last window (source=window) and in the "
                          "reference profile (source=reference).", (*mv, "class", "source"), registry=registry),
        consumer_lag=Gauge("inferwatch_consumer_lag_records",
                           "Records between the consumer's position and the end of each assigned partition, as "
                           "of the last poll.", ("topic", "partition"), registry=registry),
        variant_mismatches=Counter("inferwatch_variant_mismatched_events_total",
                                   "Events whose variant attribute disagrees with their version's configured "
                                   "variant (processed as their version says), by reason.", (*mv, "reason"),
                                   registry=registry),
    )
    for detector in DETECTOR_NAMES:
        m.detector_errors.labels(detector=detector)
    for reason in REJECT_REASONS:
        m.events_rejected.labels(reason=reason)
    return m


def set_model_info(m: DaemonMetrics, model: str, version: str, training_run: str | None, generator: bool,
                   variant: str | None = None) -> None:
    """Say that ``model``/``version`` is watched (``inferwatch_model_info``), with its ``variant`` label when it has
    one (PromQL reads a missing label as empty, so ``{variant=""}`` also selects versions without)."""
    info = {"training_run": training_run or "", "kind": "generator" if generator else "classifier"}
    m.model_info.labels(model=model, version=version).info(info if variant is None else {**info, "variant": variant})


class EventTally:
    """The valid inference events of the poll being handled, counted (``inferwatch_events_consumed_total``) and
    observed (``inferwatch_inference_latency_seconds``) once per poll and series in :meth:`flush`: a poll of
    500 records costs one ``inc`` and one histogram update per series, not one per event. A generation is
    observed in the GenAI histograms as it comes (:func:`~monitor.genai.observe_generation`)."""

    def __init__(self, m: DaemonMetrics) -> None:
        self._m = m
        self._counts: dict[tuple[str, str], int] = {}  # (model, version) -> events
        self._latency: dict[tuple[str, str, str], list[float]] = {}  # (model, version, kind) -> seconds
        # the labelled children, looked up once per series (a one-event record would pay three lookups)
        self._counters: dict[tuple[str, str], Counter] = {}
        self._histograms: dict[tuple[str, str, str], Histogram] = {}

    def add(self, event: InferenceEvent) -> None:
        """Count one valid, consumed inference event of a configured model (the caller has checked it)."""
        mv = (event.model, event.version)
        self._counts[mv] = self._counts.get(mv, 0) + 1
        latency = event.latency
        if latency is not None:
            self._latency.setdefault((*mv, "total"), []).append(latency.total_s)
            if latency.gpu_s is not None:
                self._latency.setdefault((*mv, "gpu"), []).append(latency.gpu_s)
        if event.generation is not None:
            observe_generation(self._m.genai, event, event.model, event.version)

    def add_rows(self, model: str, version: str, total_s: Sequence[float | None] | None,
                 gpu_s: Sequence[float | None] | None, n: int) -> None:
        """:meth:`add` for ``n`` events of one version given as columns (a column batch: no generations)."""
        mv = (model, version)
        self._counts[mv] = self._counts.get(mv, 0) + n
        for kind, seconds in (("total", total_s), ("gpu", gpu_s)):
            present = [] if seconds is None else [s for s in seconds if s is not None]
            if present:
                self._latency.setdefault((*mv, kind), []).extend(present)

    def flush(self) -> None:
        """Add what was tallied since the last flush to the metrics."""
        for mv, n in self._counts.items():
            counter = self._counters.get(mv)
            if counter is None:
                counter = self._counters[mv] = self._m.events_consumed.labels(*mv)
            counter.inc(n)
        for labels, seconds in self._latency.items():
            histogram = self._histograms.get(labels)
            if histogram is None:
                histogram = self._histograms[labels] = self._m.inference_latency.labels(*labels)
            observe_many(histogram, seconds)
        self._counts.clear()
        self._latency.clear()


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every ``v`` of ``values`` (a labelled child), in one update per bucket.

    The same counts as one call per value: each value lands in the first bucket whose upper bound is at least
    the value (``np.searchsorted(bounds, values, side="left")``); ``_sum`` grows by their sum. It reads the
    child's ``_upper_bounds``, ``_buckets`` and ``_sum``, where prometheus_client's own ``observe`` keeps them."""
    if len(values) < 16:  # numpy's fixed cost is more than a few observe calls
        for value in values:
            histogram.observe(value)
        return
    bounds = histogram._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(math.fsum(values))
    for bucket, n in zip(histogram._buckets, counts.tolist(), strict=True):
        if n:
            bucket.inc(n)


def export_lag(m: DaemonMetrics, lag: Mapping[tuple[str, int], int], exported: set[tuple[str, int]]) -> None:
    """Set ``inferwatch_consumer_lag_records`` from a consumer's :meth:`~monitor.transport.Consumer.lag`, and
    remove the series of partitions no longer in it (``exported``, updated here, holds those set before)."""
    for topic, partition in exported - lag.keys():
        m.consumer_lag.remove(topic, str(partition))
    for (topic, partition), records in lag.items():
        m.consumer_lag.labels(topic=topic, partition=str(partition)).set(records)
    exported.clear()
    exported.update(lag)


def class_ratios(result: PredictionDriftResult, class_labels: Sequence[str]) -> Iterator[tuple[str, str, float]]:
    """``(class, source, share)`` of the window's predicted classes and of the reference priors; a class the
    profile has no label for is named by its index."""
    n = sum(result.observed)
    for index, (count, prior) in enumerate(zip(result.observed, result.expected_probs, strict=True)):
        name = class_labels[index] if index < len(class_labels) else str(index)
        if n:
            yield name, "window", count / n
        yield name, "reference", prior


def export_result(m: DaemonMetrics, r: WindowResult, class_labels: Sequence[str] = ()) -> None:
    """Set the gauges of one window result (the last window's values are what Prometheus scrapes) and count
    the detectors that failed on it. ``class_labels`` (the profile's) name the predicted classes."""
    mv = (r.model, r.version)
    m.windows_closed.labels(model=r.model, version=r.version, reason=r.closed_by).inc()
    for failure in r.failures:
        m.detector_errors.labels(detector=failure.detector).inc()
    for finding in r.findings:
        if not finding.insufficient:
            m.drift_detected.labels(*mv, finding.detector).set(int(finding.drifted))
    for name, result in r.results.items():
        try:
            for sample in BY_NAME[name].samples(result):
                m.detector_gauges[sample.gauge].labels(*mv, *sample.labels).set(sample.value)
        except Exception:  # a gauge that cannot be set must not stop the daemon: count it like a detector failure
            log.exception("exporting the metrics of %s for window %s failed", name, r.window_id)
            m.detector_errors.labels(detector=name).inc()
    prediction = r.results.get("prediction_drift")
    if isinstance(prediction, PredictionDriftResult):
        for name, source, share in class_ratios(prediction, class_labels):
            m.class_ratio.labels(*mv, name, source).set(share)
