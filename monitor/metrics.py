"""Prometheus metrics of the daemon, made on a registry that is passed in (never the global one).

Label values are bounded: ``model``/``version`` come from the configured models (events of unknown models
are rejected before any labelled metric is touched), ``feature`` from their profiles, ``reason`` from
:data:`monitor.events.REJECT_REASONS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.events import REJECT_REASONS


@dataclass(frozen=True)
class DaemonMetrics:
    events_consumed: Counter
    feedback_consumed: Counter
    records_consumed: Counter
    events_rejected: Counter
    deadletters: Counter
    windows_closed: Counter
    window_events: Gauge
    drift_ks: Gauge
    drift_p_value: Gauge
    drift_psi: Gauge
    drift_detected: Gauge
    prediction_chi2: Gauge
    prediction_p_value: Gauge
    window_seconds: Histogram
    alerts_sent: Counter
    alert_delivery_failures: Counter
    commits: Counter


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
        drift_ks=Gauge("inferwatch_drift_ks_statistic",
                       "Kolmogorov–Smirnov statistic of the last window against the reference.",
                       (*mv, "feature"), registry=registry),
        drift_p_value=Gauge("inferwatch_drift_p_value",
                            "Multiple-testing adjusted KS p-value of the last window.",
                            (*mv, "feature"), registry=registry),
        drift_psi=Gauge("inferwatch_drift_psi", "Population stability index of the last window.",
                        (*mv, "feature"), registry=registry),
        drift_detected=Gauge("inferwatch_drift_detected",
                             "1 when the last window of this detector found drift, else 0.",
                             (*mv, "detector"), registry=registry),
        prediction_chi2=Gauge("inferwatch_prediction_chi2_statistic",
                              "Chi-squared statistic of predicted-class counts against reference priors.",
                              mv, registry=registry),
        prediction_p_value=Gauge("inferwatch_prediction_p_value",
                                 "Chi-squared p-value of predicted-class counts.", mv, registry=registry),
        window_seconds=Histogram("inferwatch_window_evaluation_seconds",
                                 "Time to evaluate the detectors on one closed window.",
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                                 registry=registry),
        alerts_sent=Counter("inferwatch_alerts_sent_total", "Alert notifications delivered.",
                            ("channel", "status"), registry=registry),
        alert_delivery_failures=Counter("inferwatch_alert_delivery_failures_total",
                                        "Alert notifications given up after all retries.", ("channel",),
                                        registry=registry),
        commits=Counter("inferwatch_offset_commits_total", "Offset commits after durable emission.",
                        registry=registry),
    )
    for reason in REJECT_REASONS:
        m.events_rejected.labels(reason=reason)
    return m
