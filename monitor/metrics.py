"""Prometheus metrics of the daemon, made on a registry that is passed in (never the global one).

Label values are bounded: ``model``/``version`` come from the configured models (events of unknown models
are rejected before any labelled metric is touched), ``feature`` from their profiles, ``reason`` from
:data:`monitor.events.REJECT_REASONS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.evaluation import WindowResult
from monitor.events import REJECT_REASONS
from monitor.findings import Finding


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
    drift_wasserstein: Gauge
    categorical_js: Gauge
    categorical_p_value: Gauge
    embedding_mmd2: Gauge
    embedding_p_value: Gauge
    quality_accuracy: Gauge
    quality_accuracy_bound: Gauge
    quality_macro_f1: Gauge
    llm_rate: Gauge
    llm_seconds: Gauge
    latency_seconds: Gauge
    slo_burn_rate: Gauge
    slow_drift_cusum: Gauge
    feedback_pending: Gauge
    feedback_joined: Counter
    feedback_expired: Counter
    feedback_evicted: Counter


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
        drift_wasserstein=Gauge("inferwatch_drift_wasserstein_sd",
                                "Wasserstein distance of the last window from the reference, in reference sds.",
                                (*mv, "feature"), registry=registry),
        categorical_js=Gauge("inferwatch_drift_categorical_js_distance",
                             "Jensen–Shannon distance of a categorical feature's level frequencies.",
                             (*mv, "feature"), registry=registry),
        categorical_p_value=Gauge("inferwatch_drift_categorical_p_value",
                                  "Adjusted chi-squared p-value of a categorical feature.", (*mv, "feature"),
                                  registry=registry),
        embedding_mmd2=Gauge("inferwatch_embedding_mmd2", "Squared MMD of the last window's embeddings.", mv,
                             registry=registry),
        embedding_p_value=Gauge("inferwatch_embedding_p_value", "Permutation p-value of the embedding MMD.", mv,
                                registry=registry),
        quality_accuracy=Gauge("inferwatch_quality_accuracy",
                               "Accuracy from joined labels (source=labels) or estimated without labels "
                               "(source=estimated, CBPE).", (*mv, "source"), registry=registry),
        quality_accuracy_bound=Gauge("inferwatch_quality_estimated_accuracy_bound",
                                     "Confidence bounds of the label-free accuracy estimate.", (*mv, "bound"),
                                     registry=registry),
        quality_macro_f1=Gauge("inferwatch_quality_macro_f1", "Macro-F1 from labels or estimated.",
                               (*mv, "source"), registry=registry),
        llm_rate=Gauge("inferwatch_llm_rate", "Acceptance, empty-output and refusal rates of the last window.",
                       (*mv, "rate"), registry=registry),
        llm_seconds=Gauge("inferwatch_llm_latency_seconds",
                          "Percentiles of time to first token and time per output token in the last window.",
                          (*mv, "kind", "quantile"), registry=registry),
        latency_seconds=Gauge("inferwatch_latency_seconds",
                              "Percentiles of total and GPU latency in the last window.", (*mv, "kind", "quantile"),
                              registry=registry),
        slo_burn_rate=Gauge("inferwatch_slo_burn_rate", "Latency SLO error-budget burn rate per window length.",
                            (*mv, "window"), registry=registry),
        slow_drift_cusum=Gauge("inferwatch_slow_drift_cusum", "CUSUM statistic of feature-drift evidence.", mv,
                               registry=registry),
        feedback_pending=Gauge("inferwatch_feedback_pending", "Inferences and feedback waiting to be joined.",
                               ("kind",), registry=registry),
        feedback_joined=Counter("inferwatch_feedback_joined_total", "Feedback joined to its inference.",
                                registry=registry),
        feedback_expired=Counter("inferwatch_feedback_expired_total",
                                 "Unjoined inferences or feedback dropped after the time-to-live.", registry=registry),
        feedback_evicted=Counter("inferwatch_feedback_evicted_total",
                                 "Unjoined entries evicted because the join store was full.", ("kind",),
                                 registry=registry),
    )
    for reason in REJECT_REASONS:
        m.events_rejected.labels(reason=reason)
    return m


def export_result(m: DaemonMetrics, r: WindowResult, found: Sequence[Finding]) -> None:
    """Set the gauges of one window result (the last window's values are what Prometheus scrapes)."""
    mv = {"model": r.model, "version": r.version}
    m.windows_closed.labels(**mv, reason=r.closed_by).inc()
    for finding in found:
        if not finding.insufficient:
            m.drift_detected.labels(**mv, detector=finding.detector).set(int(finding.drifted))
    if r.drift is not None and not r.drift.numeric.insufficient:
        for f in r.drift.numeric.features:
            m.drift_ks.labels(**mv, feature=f.name).set(f.ks_statistic)
            m.drift_p_value.labels(**mv, feature=f.name).set(f.p_adjusted)
            m.drift_psi.labels(**mv, feature=f.name).set(f.psi)
            m.drift_wasserstein.labels(**mv, feature=f.name).set(f.wasserstein)
        for c in r.drift.categorical.features if r.drift.categorical is not None else ():
            m.categorical_js.labels(**mv, feature=c.name).set(c.js_distance)
            m.categorical_p_value.labels(**mv, feature=c.name).set(c.p_adjusted)
    if r.prediction is not None and not r.prediction.insufficient:
        m.prediction_chi2.labels(**mv).set(r.prediction.statistic)
        m.prediction_p_value.labels(**mv).set(r.prediction.p_value)
    if r.embedding is not None and not r.embedding.insufficient:
        m.embedding_mmd2.labels(**mv).set(r.embedding.mmd2)
        m.embedding_p_value.labels(**mv).set(r.embedding.p_value)
    if r.cbpe is not None and not r.cbpe.insufficient:
        m.quality_accuracy.labels(**mv, source="estimated").set(r.cbpe.expected_accuracy)
        m.quality_macro_f1.labels(**mv, source="estimated").set(r.cbpe.expected_macro_f1)
        m.quality_accuracy_bound.labels(**mv, bound="lower").set(r.cbpe.accuracy_ci[0])
        m.quality_accuracy_bound.labels(**mv, bound="upper").set(r.cbpe.accuracy_ci[1])
    if r.quality is not None and not r.quality.insufficient:
        m.quality_accuracy.labels(**mv, source="labels").set(r.quality.accuracy)
        m.quality_macro_f1.labels(**mv, source="labels").set(r.quality.macro_f1)
    if r.llm is not None:
        for test in r.llm.tests:
            if test.name in ("acceptance", "empty", "refusal"):
                m.llm_rate.labels(**mv, rate=test.name).set(test.value)
        for kind, pct in (("time_to_first_token", r.llm.ttft_s), ("time_per_output_token", r.llm.tpot_s)):
            for q, value in (("0.5", pct.p50), ("0.95", pct.p95), ("0.99", pct.p99)):
                if not math.isnan(value):
                    m.llm_seconds.labels(**mv, kind=kind, quantile=q).set(value)
    if r.latency is not None:
        lat = r.latency
        for kind, values in (("total", (lat.p50, lat.p95, lat.p99)), ("gpu", (lat.gpu_p50, lat.gpu_p95, lat.gpu_p99))):
            for q, value in zip(("0.5", "0.95", "0.99"), values, strict=True):
                if not math.isnan(value):
                    m.latency_seconds.labels(**mv, kind=kind, quantile=q).set(value)
    if r.slo is not None:
        for window, value in (("1h", r.slo.page_long), ("5m", r.slo.page_short), ("6h", r.slo.ticket_long),
                              ("30m", r.slo.ticket_short)):
            m.slo_burn_rate.labels(**mv, window=window).set(value)
    if r.slow_drift is not None:
        m.slow_drift_cusum.labels(**mv).set(r.slow_drift.statistic)
