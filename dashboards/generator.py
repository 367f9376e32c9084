"""The generator (LLM) dashboard: time to first token, time per output token, throughput, output length,
log-probability, acceptance, refusals and empty answers, prompt drift, alerts (one model, its versions side by
side)."""

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
    timeseries,
)

_TTFT = "inferwatch_gen_ai_server_time_to_first_token_seconds_bucket"
_TPOT = "inferwatch_gen_ai_server_time_per_output_token_seconds_bucket"
_DURATION = "inferwatch_gen_ai_server_request_duration_seconds_bucket"
_TOKENS = "inferwatch_gen_ai_client_token_usage"


def generator_dashboard(uid: str) -> dict[str, Any]:
    d = new_dashboard(uid, "inferwatch / generator", "One generative model watched by inferwatch: latency per "
                      "token, throughput, output length and log-probability, acceptance, refusals, prompt drift "
                      "(embedding and text features), alerts.", ["inferwatch", "generator"])
    for variable in model_variables("generator"):
        d = d.with_variable(variable)

    d = d.with_row(row(100, "Latency and throughput"))
    d = d.with_panel(timeseries(
        1, "Time to first token", "p50/p95/p99 from the request to the first streamed token (histogram), and "
        "the last window's exact p50/p95 (dashed steps). Rising TTFT with flat time per token is queueing or "
        "longer prompts.", "s",
        [*quantile_queries(_TTFT, MV),
         query("D", f'inferwatch_llm_latency_seconds{{{MV}, kind="time_to_first_token", quantile=~"0.5|0.95"}}',
               "window q{{quantile}} v{{version}}")], width=8))
    d = d.with_panel(timeseries(
        2, "Time per output token", "p50/p95/p99 of the time between output tokens after the first "
        "(histogram), and the last window's exact p50/p95.", "s",
        [*quantile_queries(_TPOT, MV),
         query("D", f'inferwatch_llm_latency_seconds{{{MV}, kind="time_per_output_token", quantile=~"0.5|0.95"}}',
               "window q{{quantile}} v{{version}}")], width=8))
    d = d.with_panel(timeseries(
        3, "Request duration", "p50/p95/p99 of the whole request, first byte in to last byte out.", "s",
        quantile_queries(_DURATION, MV), width=8))
    d = d.with_panel(timeseries(
        4, "Tokens per second", "Output (and input) tokens per second over all requests: the rate of the token "
        "usage histogram's sum.", "short",
        [query("A", f"sum by (gen_ai_token_type) (rate({_TOKENS}_sum{{{MV}}}[$__rate_interval]))",
               "{{gen_ai_token_type}} tokens/s"),
         query("B", f"sum by (version) (rate(inferwatch_events_consumed_total{{{MV}}}[$__rate_interval]))",
               "requests/s v{{version}}")], width=12))
    d = d.with_panel(timeseries(
        5, "Output length", "Output tokens per request: percentiles in the last window, and the mean over "
        "requests (usage histogram). A shift against the reference length is one of the LLM drift tests.",
        "short",
        [query("A", f"inferwatch_llm_output_tokens{{{MV}}}", "window q{{quantile}} v{{version}}"),
         query("B", f'sum(rate({_TOKENS}_sum{{{MV}, gen_ai_token_type="output"}}[$__rate_interval])) / '
                    f'sum(rate({_TOKENS}_count{{{MV}, gen_ai_token_type="output"}}[$__rate_interval]))',
               "mean")], width=12))

    d = d.with_row(row(101, "Output quality"))
    d = d.with_panel(timeseries(
        6, "Mean log-probability", "Mean per-token log-probability of the answers in the last window. Lower "
        "means the model is less sure of what it writes: new kinds of prompts, or a changed model.", "none",
        [query("A", f"inferwatch_llm_mean_logprob{{{MV}}}", "v{{version}}")], width=8))
    d = d.with_panel(timeseries(
        7, "Acceptance rate", "Share of answers users accepted (joined feedback) in the last window.",
        "percentunit", [query("A", f'inferwatch_llm_response_ratio{{{MV}, kind="acceptance"}}',
                               "accepted v{{version}}")],
        width=8, min_value=0, max_value=1))
    d = d.with_panel(timeseries(
        8, "Refusal and empty-answer rates", "Share of answers that refused or were empty in the last window.",
        "percentunit", [query("A", f'inferwatch_llm_response_ratio{{{MV}, kind=~"refusal|empty"}}',
                               "{{kind}} v{{version}}")],
        width=8, min_value=0))

    d = d.with_row(row(102, "Prompt drift and alerts"))
    d = d.with_panel(timeseries(
        9, "Prompt drift (embedding MMD²)", "Squared maximum mean discrepancy between the window's prompt "
        "embeddings and the reference embeddings (left), with its permutation p-value (right, dashed): a small "
        "p-value means the prompts come from elsewhere.", "none",
        [query("A", f"inferwatch_embedding_mmd2{{{MV}}}", "MMD² v{{version}}"),
         query("B", f"inferwatch_embedding_p_value{{{MV}}}", "p-value v{{version}}")])
        .override_by_regexp("p-value.*", [
            override("custom.axisPlacement", "right"), override("unit", "none"), override("max", 1),
            override("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})]))
    d = d.with_panel(state_timeline(
        10, "Detector state", "Per detector, whether its last window found drift (red) or not (green).",
        [query("A", f"max by (detector) (inferwatch_drift_detected{{{MV}}})", "{{detector}}")], STATES_DRIFT,
        width=8))
    d = d.with_panel(stat(
        11, "Alerts firing (all models)", "Alerts firing now, by severity.", "short",
        [query("A", "sum by (severity) (inferwatch_alerts_firing)", "{{severity}}")], width=4, height=8,
        red_above=1))
    d = d.with_panel(timeseries(
        12, "Prompt and answer text (sidecar text features)", "How far each text feature the sidecar computes "
        "from the prompts and answers alone (length in characters and tokens, share of letters, digits, "
        "punctuation, other scripts) moved from the reference in the last window: Wasserstein distance in "
        "reference standard deviations. Support questions instead of play lines raise the punctuation and digit "
        "shares of the prompts long before anyone reads them.", "none",
        [query("A", f'inferwatch_drift_wasserstein_sd{{{MV}, feature=~"(prompt|completion)[.].*"}}',
               "{{feature}} v{{version}}")], width=24))
    return encode(d)

