"""The sidecar's Prometheus metrics, made on a registry that is passed in. Every label value is bounded: the
GenAI histograms' ``model``/``version`` are those of the configured ``models`` mapping, and ``other`` for any
model the mapping does not name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from monitor.buildinfo import build_info
from monitor.genai import GenAIMetrics, genai_metrics

#: Routes the proxy tells apart (a bounded label).
ROUTES: Final = ("oip", "completions", "chat_completions", "other")
#: Why a request of a captured route produced no event.
CAPTURE_SKIP_REASONS: Final = ("too_large", "invalid_json", "malformed", "non_finite", "upstream_status",
                               "incomplete", "internal_error", "queue_full")
#: Upstream failures, each answered 502/504 (before the response head) or cut (after it).
UPSTREAM_ERRORS: Final = ("connect_refused", "connect_timeout", "response_timeout", "idle_timeout", "reset",
                          "bad_response")
#: Client-side failures.
CLIENT_ERRORS: Final = ("bad_request", "bad_chunk", "head_too_large", "disconnect", "idle_timeout",
                        "too_many_connections")
#: Why a response was cut after its head had reached the client (the client connection is reset, not closed):
#: the upstream reset or closed before the body's end, stalled, or the request body failed or timed out.
CUT_REASONS: Final = ("upstream_reset", "upstream_closed", "upstream_stalled", "request_timeout", "bad_request")
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class SidecarMetrics:
    requests: Counter
    request_seconds: Histogram
    captured: Counter
    capture_skipped: Counter
    upstream_errors: Counter
    client_errors: Counter
    responses_cut: Counter
    connections: Gauge
    connections_limit: Gauge
    upstream_connections: Gauge
    upstream_pool_size: Gauge
    upstream_waiting: Gauge
    genai: GenAIMetrics
    build_info: Info


def sidecar_metrics(registry: CollectorRegistry) -> SidecarMetrics:
    """Make (and pre-label) the sidecar's metrics on ``registry``."""
    m = SidecarMetrics(
        requests=Counter("inferwatch_sidecar_requests_total", "Requests proxied, by route and status class.",
                         ("route", "status"), registry=registry),
        request_seconds=Histogram("inferwatch_sidecar_request_duration_seconds",
                                  "Request head received to last response byte written, by route.", ("route",),
                                  buckets=_LATENCY_BUCKETS, registry=registry),
        captured=Counter("inferwatch_sidecar_captured_events_total", "Inference events captured, by route.",
                         ("route",), registry=registry),
        capture_skipped=Counter("inferwatch_sidecar_capture_skipped_total",
                                "Requests of a captured route that gave no event (still proxied), by reason.",
                                ("route", "reason"), registry=registry),
        upstream_errors=Counter("inferwatch_sidecar_upstream_errors_total", "Upstream failures, by reason.",
                                ("reason",), registry=registry),
        client_errors=Counter("inferwatch_sidecar_client_errors_total", "Client-side failures, by reason.",
                              ("reason",), registry=registry),
        responses_cut=Counter("inferwatch_sidecar_responses_cut_total",
                              "Responses cut short after their head was relayed (the client connection is reset), "
                              "by reason.", ("reason",), registry=registry),
        connections=Gauge("inferwatch_sidecar_connections", "Open client connections.", registry=registry),
        connections_limit=Gauge("inferwatch_sidecar_connections_limit", "Most client connections at once.",
                                registry=registry),
        upstream_connections=Gauge("inferwatch_sidecar_upstream_connections",
                                   "Open (or opening) upstream connections.", registry=registry),
        upstream_pool_size=Gauge("inferwatch_sidecar_upstream_pool_size", "Most upstream connections at once.",
                                 registry=registry),
        upstream_waiting=Gauge("inferwatch_sidecar_upstream_waiting_requests",
                               "Requests waiting for a free upstream connection.", registry=registry),
        genai=genai_metrics(registry),
        build_info=build_info(registry),
    )
    for route in ROUTES:
        m.request_seconds.labels(route=route)
        for status in STATUS_CLASSES[1:]:
            m.requests.labels(route=route, status=status)
        if route != "other":
            m.captured.labels(route=route)
            for reason in CAPTURE_SKIP_REASONS:
                m.capture_skipped.labels(route=route, reason=reason)
    for reason in UPSTREAM_ERRORS:
        m.upstream_errors.labels(reason=reason)
    for reason in CLIENT_ERRORS:
        m.client_errors.labels(reason=reason)
    for reason in CUT_REASONS:
        m.responses_cut.labels(reason=reason)
    return m


__all__ = ["CAPTURE_SKIP_REASONS", "CLIENT_ERRORS", "CUT_REASONS", "ROUTES", "UPSTREAM_ERRORS", "SidecarMetrics",
           "sidecar_metrics"]
