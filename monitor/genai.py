"""LLM latency and token histograms under the OpenTelemetry GenAI semantic conventions, mapped to Prometheus.

The OTel instruments ``gen_ai.server.time_to_first_token``, ``gen_ai.server.time_per_output_token``,
``gen_ai.server.request.duration`` and ``gen_ai.client.token.usage`` become Prometheus histograms with the
``inferwatch_`` prefix, dots turned into underscores and the unit appended where it is a base unit (``s`` ->
``_seconds``; ``{token}`` is an annotation, so token usage has no unit suffix). The bucket boundaries are the
ones the conventions recommend, so that dashboards built for other GenAI servers read these too. The attribute
``gen_ai.token.type`` becomes the label ``gen_ai_token_type`` (``input`` or ``output``).

The daemon observes them for every valid generation event it consumes; the sidecar for every LLM request it
proxies. Both label them ``model`` and ``version``, bounded by their configuration.

>>> from prometheus_client import CollectorRegistry
>>> from monitor.events import Generation, InferenceEvent, Latency
>>> registry = CollectorRegistry()
>>> m = genai_metrics(registry)
>>> ev = InferenceEvent(request_id="r", time=0.0, model="m", version="1", task="generation",
...                     generation=Generation(prompt_tokens=12, output_tokens=30, output_chars=120),
...                     latency=Latency(total_s=1.5, time_to_first_token_s=0.2))
>>> observe_generation(m, ev, "m", "1")
>>> registry.get_sample_value("inferwatch_gen_ai_client_token_usage_sum",
...                           {"model": "m", "version": "1", "gen_ai_token_type": "input"})
12.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Histogram

from monitor.events import InferenceEvent

__all__ = [
    "REQUEST_DURATION_BUCKETS",
    "TIME_PER_OUTPUT_TOKEN_BUCKETS",
    "TIME_TO_FIRST_TOKEN_BUCKETS",
    "TOKEN_USAGE_BUCKETS",
    "GenAIMetrics",
    "genai_metrics",
    "observe_generation",
]

#: ``gen_ai.server.time_to_first_token`` (seconds).
TIME_TO_FIRST_TOKEN_BUCKETS: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                                      5.0, 7.5, 10.0)
#: ``gen_ai.server.time_per_output_token`` (seconds).
TIME_PER_OUTPUT_TOKEN_BUCKETS: Final = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
#: ``gen_ai.server.request.duration`` (seconds): 0.01 doubling up to 81.92.
REQUEST_DURATION_BUCKETS: Final = tuple(0.01 * 2**i for i in range(14))
#: ``gen_ai.client.token.usage`` (tokens): 1, then ×4 up to 4**13 = 67108864.
TOKEN_USAGE_BUCKETS: Final = tuple(float(4**i) for i in range(14))


@dataclass(frozen=True)
class GenAIMetrics:
    time_to_first_token: Histogram
    time_per_output_token: Histogram
    request_duration: Histogram
    token_usage: Histogram


def genai_metrics(registry: CollectorRegistry) -> GenAIMetrics:
    """Make the four GenAI histograms on ``registry``, labelled ``model`` and ``version``."""
    mv = ("model", "version")
    return GenAIMetrics(
        time_to_first_token=Histogram(
            "inferwatch_gen_ai_server_time_to_first_token_seconds",
            "Time to generate the first token of a request (OTel gen_ai.server.time_to_first_token).", mv,
            buckets=TIME_TO_FIRST_TOKEN_BUCKETS, registry=registry),
        time_per_output_token=Histogram(
            "inferwatch_gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first (OTel gen_ai.server.time_per_output_token).", mv,
            buckets=TIME_PER_OUTPUT_TOKEN_BUCKETS, registry=registry),
        request_duration=Histogram(
            "inferwatch_gen_ai_server_request_duration_seconds",
            "Generation request duration, first request byte to last response byte "
            "(OTel gen_ai.server.request.duration).", mv, buckets=REQUEST_DURATION_BUCKETS, registry=registry),
        token_usage=Histogram(
            "inferwatch_gen_ai_client_token_usage",
            "Tokens per request, input (prompt) or output (OTel gen_ai.client.token.usage; unit {token}).",
            (*mv, "gen_ai_token_type"), buckets=TOKEN_USAGE_BUCKETS, registry=registry),
    )


def observe_generation(m: GenAIMetrics, event: InferenceEvent, model: str, version: str) -> None:
    """Observe one generation event under the labels ``model`` and ``version`` (the caller bounds them).

    Events without ``generation`` are ignored. Token usage is observed only where the server reported it: an
    event whose usage the sidecar estimated (attribute ``usage: estimated``, a stream without a usage chunk) has
    no prompt token count and an output count taken from the stream's text events, so it is left out."""
    generation, latency = event.generation, event.latency
    if generation is None:
        return
    if latency is not None:
        m.request_duration.labels(model, version).observe(latency.total_s)
        if latency.time_to_first_token_s is not None:
            m.time_to_first_token.labels(model, version).observe(latency.time_to_first_token_s)
        if latency.time_per_output_token_s is not None:
            m.time_per_output_token.labels(model, version).observe(latency.time_per_output_token_s)
    if event.attributes.get("usage") != "estimated":
        m.token_usage.labels(model, version, "input").observe(generation.prompt_tokens)
        m.token_usage.labels(model, version, "output").observe(generation.output_tokens)
