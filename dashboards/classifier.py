"""The classifier dashboard: traffic, latency, predicted-class mix, feature drift, accuracy, alerts (one model,
its versions side by side)."""

from __future__ import annotations

from typing import Any

from dashboards.common import (
    MV,
    STATES_DRIFT,
    encode,
    model_variables,
    new_dashboard,
    override,
    quantile_queries,
    query,
    row,
    stat,
    state_timeline,
    status_history,
    table,
    timeseries,
)


def classifier_dashboard(uid: str) -> dict[str, Any]:
    d = new_dashboard(uid, "inferwatch / classifier", "One classifier watched by inferwatch: traffic, latency, "
                      "predicted-class mix, feature drift, accuracy with and without labels, alerts.",
                      ["inferwatch", "classifier"])
    for variable in model_variables("classifier"):
        d = d.with_variable(variable)

    d = d.with_row(row(100, "Traffic and latency"))
    d = d.with_panel(timeseries(
        1, "Traffic", "Inference events the daemon consumed per second, by version.", "reqps",
        [query("A", f"sum by (version) (rate(inferwatch_events_consumed_total{{{MV}}}[$__rate_interval]))",
               "v{{version}}")], width=8))
    d = d.with_panel(timeseries(
        2, "Latency: total vs GPU", "p50/p95/p99 of each request's total (wall) and GPU time, from the latency "
        "histograms: the gap between the two is queueing, pre- and post-processing.", "s",
        quantile_queries("inferwatch_inference_latency_seconds_bucket", MV, ("kind",), "{{kind}}"), width=8))
    d = d.with_panel(timeseries(
        3, "Latency per window", "Exact p50/p95/p99 of total and GPU time in each closed window (the latency "
        "detector's view; a step per window).", "s",
        [query("A", f"inferwatch_latency_seconds{{{MV}}}", "{{kind}} q{{quantile}} v{{version}}")], width=8))

    d = d.with_row(row(101, "Predictions and drift"))
    d = d.with_panel(timeseries(
        4, "Predicted-class mix vs reference", "Share of each predicted class in the last window (solid) against "
        "its share in the reference profile (dashed). A class moving away from its dashed line is prediction "
        "drift.", "percentunit",
        [query("A", f'inferwatch_prediction_class_ratio{{{MV}, source="window"}}', "{{class}}"),
         query("B", f'inferwatch_prediction_class_ratio{{{MV}, source="reference"}}', "{{class}} reference")],
        min_value=0, max_value=1)
        .override_by_regexp(".* reference", [
            override("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
            override("custom.fillOpacity", 0)]))
    d = d.with_panel(timeseries(
        5, "Prediction drift (chi-squared p-value)", "p-value of the chi-squared test of the window's "
        "predicted-class counts against the reference priors; below the alert level (0.01 by default) the class "
        "mix has changed.", "none",
        [query("A", f"inferwatch_prediction_p_value{{{MV}}}", "v{{version}}")], min_value=0, max_value=1))
    d = d.with_panel(table(
        6, "Feature drift, last window", "Per feature: Kolmogorov–Smirnov statistic, its multiple-testing "
        "adjusted p-value, population stability index and Wasserstein distance in reference standard "
        "deviations. Sort by a column to find the features that moved.",
        [query("A", f"max by (feature) (inferwatch_drift_ks_statistic{{{MV}}})", instant=True, table=True),
         query("B", f"max by (feature) (inferwatch_drift_p_value{{{MV}}})", instant=True, table=True),
         query("C", f"max by (feature) (inferwatch_drift_psi{{{MV}}})", instant=True, table=True),
         query("D", f"max by (feature) (inferwatch_drift_wasserstein_sd{{{MV}}})", instant=True, table=True)])
        .override_by_name("Value #A", [override("displayName", "KS")])
        .override_by_name("Value #B", [override("displayName", "p (adj.)")])
        .override_by_name("Value #C", [override("displayName", "PSI")])
        .override_by_name("Value #D", [override("displayName",
                                                                           value="Wasserstein (sd)")]))
    d = d.with_panel(status_history(
        7, "Feature drift over time (adjusted p-value)", "One row per feature, one cell per interval: red where "
        "the adjusted KS p-value fell below 0.01, i.e. the feature's distribution differed from the reference "
        "in that window.",
        [query("A", f"max by (feature) (inferwatch_drift_p_value{{{MV}}})", "{{feature}}")], red_below=0.01,
        width=24))

    d = d.with_row(row(102, "Quality"))
    d = d.with_panel(timeseries(
        8, "Accuracy: labelled vs estimated (CBPE), v$version", "Accuracy from joined ground-truth labels (as "
        "feedback arrives) and estimated without labels by confidence-based performance estimation (CBPE), "
        "shaded between the bounds of its confidence interval. An estimate that falls while labels are still "
        "missing is an early warning; labelled accuracy outside the band means the model's confidence is no "
        "longer calibrated. Repeated per version.", "percentunit",
        [query("A", f'inferwatch_quality_accuracy{{{MV}, source="labels"}}', "labelled"),
         query("B", f'inferwatch_quality_accuracy{{{MV}, source="estimated"}}', "estimated"),
         query("C", f'inferwatch_quality_estimated_accuracy_bound{{{MV}, bound="lower"}}', "lower bound"),
         query("D", f'inferwatch_quality_estimated_accuracy_bound{{{MV}, bound="upper"}}', "upper bound")],
        width=24, max_value=1)
        .repeat("version").repeat_direction("v")
        .override_by_name("upper bound", [
            override("custom.fillBelowTo", "lower bound"),
            override("custom.lineWidth", 0)])
        .override_by_name("lower bound", [override("custom.lineWidth", 0)]))

    d = d.with_row(row(103, "Alerts"))
    d = d.with_panel(state_timeline(
        9, "Detector state", "Per detector, whether its last window found drift (red) or not (green). Alerts "
        "fire on repeated breaches, see the alert rules.",
        [query("A", f"max by (detector) (inferwatch_drift_detected{{{MV}}})", "{{detector}}")], STATES_DRIFT,
        width=18))
    d = d.with_panel(stat(
        10, "Alerts firing (all models)", "Alerts firing now, by severity.", "short",
        [query("A", "sum by (severity) (inferwatch_alerts_firing)", "{{severity}}")], height=8, red_above=1))
    return encode(d)
