"""The fleet dashboard: every watched model at a glance, the daemon's health (lag, rejections, dead letters,
detector errors, alert delivery), the collectors and sidecars (drops, spool), and the GPUs (NVML)."""

from __future__ import annotations

from typing import Any

from dashboards.common import (
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
    table,
    timeseries,
)

_M = 'model=~"$model", version=~"$version"'


def fleet_dashboard(uid: str) -> dict[str, Any]:
    d = new_dashboard(uid, "inferwatch / fleet", "Every model inferwatch watches, the health of the daemon, "
                      "collectors and sidecars, and the GPUs.", ["inferwatch", "fleet"])
    for variable in model_variables(None):
        d = d.with_variable(variable)

    d = d.with_row(row(100, "Models"))
    d = d.with_panel(table(
        1, "Watched models", "One row per model version: its kind and training run, events per second, and how "
        "many of its detectors found drift in their last window (0: all clear).",
        [query("A", f"max by (model, version, kind, training_run) (inferwatch_model_info{{{_M}}})",
               instant=True, table=True),
         query("B", f"sum by (model, version) (rate(inferwatch_events_consumed_total{{{_M}}}[$__rate_interval]))",
               instant=True, table=True),
         query("C", f"sum by (model, version) (inferwatch_drift_detected{{{_M}}})", instant=True, table=True)],
        width=14, hidden=("Time", "Value #A"))
        .override_by_name("Value #B", [override("displayName", "events/s"), override("unit", "reqps")])
        .override_by_name("Value #C", [override("displayName", "detectors drifting")]))
    d = d.with_panel(stat(
        2, "Alerts firing", "Alerts firing now, by severity.", "short",
        [query("A", "sum by (severity) (inferwatch_alerts_firing)", "{{severity}}")], width=10, height=8,
        red_above=1))
    d = d.with_panel(timeseries(
        3, "Traffic by model", "Inference events the daemon consumed per second.", "reqps",
        [query("A", f"sum by (model, version) (rate(inferwatch_events_consumed_total{{{_M}}}[$__rate_interval]))",
               "{{model}} v{{version}}")]))
    d = d.with_panel(state_timeline(
        4, "Drift by model", "Per model version, whether any detector found drift in its last window.",
        [query("A", f"clamp_max(sum by (model, version) (inferwatch_drift_detected{{{_M}}}), 1)",
               "{{model}} v{{version}}")], STATES_DRIFT))

    d = d.with_row(row(101, "Daemon health"))
    d = d.with_panel(stat(
        5, "Daemon build", "inferwatch and Python versions of each daemon.", "none",
        [query("A", "count by (version, python) (inferwatch_build_info)", "inferwatch {{version}}, "
               "Python {{python}}")], width=6, height=8))
    d = d.with_panel(timeseries(
        6, "Consumer lag", "Records on the event and feedback topics the daemon has not read yet, by topic. A "
        "lag that keeps growing means the daemon cannot keep up.", "short",
        [query("A", "sum by (topic) (inferwatch_consumer_lag_records)", "{{topic}}")], width=9))
    d = d.with_panel(timeseries(
        7, "Rejected events and dead letters", "Events rejected by validation per second, by reason, and "
        "records sent to the dead-letter topic.", "ops",
        [query("A", "sum by (reason) (rate(inferwatch_events_rejected_total[$__rate_interval]))",
               "rejected: {{reason}}"),
         query("B", "sum(rate(inferwatch_deadletters_total[$__rate_interval]))", "dead letters")], width=9))
    d = d.with_panel(timeseries(
        8, "Window evaluation time", "p50/p95/p99 of the time to evaluate every detector on a closed window.",
        "s", quantile_queries("inferwatch_window_evaluation_seconds_bucket", "")))
    d = d.with_panel(timeseries(
        9, "Detector errors and alert delivery", "Windows on which a detector raised (its result is missing), "
        "and alert notifications per second by channel and outcome (dead_lettered or dropped need a look).",
        "ops",
        [query("A", "sum by (detector) (rate(inferwatch_detector_errors_total[$__rate_interval]))",
               "error: {{detector}}"),
         query("B", "sum by (channel, outcome) (rate(inferwatch_alert_notifications_total[$__rate_interval]))",
               "{{channel}} {{outcome}}")]))

    d = d.with_row(row(102, "Collectors and sidecars"))
    d = d.with_panel(timeseries(
        10, "Collector drops", "Events the collectors (in-process or sidecar) dropped per second, by reason. "
        "Any drop is a gap in what the daemon sees.", "ops",
        [query("A", "sum by (reason) (rate(inferwatch_collector_events_dropped_total[$__rate_interval]))",
               "{{reason}}")], width=8))
    d = d.with_panel(timeseries(
        11, "Spool fill", "Share of each collector's disk spool in use: events wait there while the broker is "
        "unreachable; at 100% new events are dropped.", "percentunit",
        [query("A", "inferwatch_collector_spool_bytes / inferwatch_collector_spool_capacity_bytes",
               "{{instance}}")], width=8, min_value=0, max_value=1))
    d = d.with_panel(timeseries(
        12, "Sidecar requests", "Requests proxied per second by route and status class, and captures skipped "
        "by reason (the request was still served).", "reqps",
        [query("A", "sum by (route, status) (rate(inferwatch_sidecar_requests_total[$__rate_interval]))",
               "{{route}} {{status}}"),
         query("B", "sum by (reason) (rate(inferwatch_sidecar_capture_skipped_total[$__rate_interval]))",
               "skipped: {{reason}}")], width=8))

    d = d.with_row(row(103, "GPUs"))
    d = d.with_panel(timeseries(
        13, "GPU utilisation", "Busy fraction of each GPU over NVML's sample period.", "percentunit",
        [query("A", "inferwatch_gpu_utilization_ratio", "{{instance}} GPU {{gpu}}")], width=8,
        min_value=0, max_value=1))
    d = d.with_panel(timeseries(
        14, "GPU memory", "Memory in use on each GPU, as a share of what is installed.", "percentunit",
        [query("A", "inferwatch_gpu_memory_used_bytes / inferwatch_gpu_memory_total_bytes",
               "{{instance}} GPU {{gpu}}")], width=8, min_value=0, max_value=1))
    d = d.with_panel(timeseries(
        15, "GPU power and temperature", "Board power draw (left) and core temperature (right).", "watt",
        [query("A", "inferwatch_gpu_power_watts", "{{instance}} GPU {{gpu}} W"),
         query("B", "inferwatch_gpu_temperature_celsius", "{{instance}} GPU {{gpu}} °C")], width=8)
        .override_by_query("B", [override("unit", "celsius"), override("custom.axisPlacement", "right")]))
    return encode(d)
