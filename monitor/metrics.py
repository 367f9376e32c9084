"""Prometheus metrics of the daemon, made on a registry that is passed in (never the global one).

Label values are bounded: ``model``/``version`` come from the configured models (events of unknown models
are rejected before any labelled metric is touched), ``feature`` from their profiles, ``reason`` from
:data:`monitor.events.REJECT_REASONS`, ``detector`` from the registry of detectors. The detectors' own gauges
are declared by the detectors (:attr:`monitor.detection.Detector.gauges`) and made here, once each.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.detection import BY_NAME, DETECTOR_NAMES, gauge_specs
from monitor.evaluation import WindowResult
from monitor.events import REJECT_REASONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DaemonMetrics:
    events_consumed: Counter
    feedback_consumed: Counter
    records_consumed: Counter
    events_rejected: Counter
    deadletters: Counter
    windows_closed: Counter
    window_events: Gauge
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
    detector_gauges: Mapping[str, Gauge]


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
        window_events=Gauge("inferwatch_window_open_events", "Events held in open windows.",
                            registry=registry),
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
        detector_gauges={spec.name: Gauge(spec.name, spec.help, (*mv, *spec.labels), registry=registry)
                         for spec in gauge_specs().values()},
    )
    for detector in DETECTOR_NAMES:
        m.detector_errors.labels(detector=detector)
    for reason in REJECT_REASONS:
        m.events_rejected.labels(reason=reason)
    return m


def export_result(m: DaemonMetrics, r: WindowResult) -> None:
    """Set the gauges of one window result (the last window's values are what Prometheus scrapes) and count
    the detectors that failed on it."""
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
