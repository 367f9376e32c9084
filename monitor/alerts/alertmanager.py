"""Alertmanager channel: each notification becomes one postable alert for ``POST /api/v2/alerts``.

Alertmanager identifies an alert by its label set (the fingerprint it computes), so the labels carry only what
names the alert: ``alertname`` (``Inferwatch`` + the detector in CamelCase, as Prometheus alerting rules are
named), ``model``, ``version``, ``detector``, ``severity`` and, for a one-feature alert, ``feature``. Everything
that changes between windows (numbers, window ids, links) goes into annotations, so a re-post updates the same
alert instead of creating a new one.

Alertmanager resolves an alert by itself once its ``endsAt`` has passed. A firing alert is therefore posted with
``endsAt`` a few re-post periods ahead (:func:`firing_ends_at`) and :class:`~monitor.alerts.delivery.Delivery`
posts it again every ``repost_s``; if inferwatch stops, the alert resolves on its own instead of firing forever.
A resolve posts ``endsAt`` = the time it ended.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from monitor.alerts.delivery import HttpRequest
from monitor.alerts.notification import Alert, Evidence

#: Alertmanager keeps a firing alert at least this long after each post, however short ``repost_s`` is.
MIN_HOLD_S = 300.0
#: Evidence lines in the description; the full list is in the report link.
TOP_EVIDENCE = 5


class AlertmanagerFormat:
    """Renders notifications for Alertmanager's API v2; ``generator_url`` is the fallback for ``generatorURL``
    when the alert has no dashboard link."""

    def __init__(self, url: str, repost_s: float, name: str = "alertmanager", generator_url: str = "") -> None:
        self.name = name
        self.repost_s = repost_s
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.generator_url = generator_url

    def request(self, alert: Alert, now: float) -> HttpRequest:
        body = json.dumps([self.postable(alert, now)], allow_nan=False).encode()
        return HttpRequest(self.url, body, {"Content-Type": "application/json"})

    def postable(self, alert: Alert, now: float) -> dict[str, Any]:
        """One ``postableAlert`` of the API v2 schema."""
        if alert.status == "resolved":
            ends_at = alert.ended_at if alert.ended_at is not None else now
        else:
            ends_at = firing_ends_at(now, self.repost_s)
        ends_at = max(ends_at, alert.started_at)  # Alertmanager refuses (400) an alert that ends before it starts
        out: dict[str, Any] = {"labels": alert_labels(alert),
                               "annotations": alert_annotations(alert),
                               "startsAt": rfc3339(alert.started_at), "endsAt": rfc3339(ends_at)}
        generator = alert.links.get("dashboard") or self.generator_url
        if generator:
            out["generatorURL"] = generator
        return out


def firing_ends_at(now: float, repost_s: float) -> float:
    """When Alertmanager should consider a firing alert over unless it is posted again: four re-post periods
    (so that a few lost re-posts do not resolve it), and never under :data:`MIN_HOLD_S`."""
    return now + max(4 * repost_s, MIN_HOLD_S)


def alertname(detector: str) -> str:
    """``Inferwatch`` + the detector name in CamelCase.

    >>> alertname("drift"), alertname("no_data"), alertname("p95-latency")
    ('InferwatchDrift', 'InferwatchNoData', 'InferwatchP95Latency')
    """
    return "Inferwatch" + "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", detector))


def alert_labels(alert: Alert) -> dict[str, str]:
    """The identity of the alert; empty values are left out (Alertmanager treats them as absent anyway, and
    an empty value would make two otherwise equal alerts look different to other tools)."""
    out = {"alertname": alertname(alert.detector), "model": alert.model, "version": alert.version,
           "detector": alert.detector, "severity": alert.severity}
    if len(alert.features) == 1:
        out["feature"] = alert.features[0]
    return {k: str(v) for k, v in out.items() if v}


def alert_annotations(alert: Alert) -> dict[str, str]:
    """What a person reads: the title and summary, the window and its evidence, and the configured links."""
    summary = f"{alert.title}: {alert.summary}" if alert.summary else alert.title
    out = {"summary": summary, "description": alert_description(alert)}
    out.update((k, v) for k, v in alert.links.items() if v)
    if alert.training_run and "training_run" not in out:
        out["training_run"] = alert.training_run
    return out


def alert_description(alert: Alert) -> str:
    lines = [f"window {alert.window_id} ({rfc3339(alert.window_start)} to {rfc3339(alert.window_end)}), "
             f"{alert.n_events} events"]
    if alert.features:
        lines.append("features: " + ", ".join(alert.features))
    lines.extend(evidence_line(e) for e in alert.evidence[:TOP_EVIDENCE])
    if len(alert.evidence) > TOP_EVIDENCE:
        lines.append(f"and {len(alert.evidence) - TOP_EVIDENCE} more")
    return "\n".join(lines)


def evidence_line(e: Evidence) -> str:
    """``f1: ks=0.31 (threshold 0.1), p=1.2e-09, wasserstein_sd=0.52``"""
    text = f"{e.feature or 'model'}: {e.statistic}={e.value:.4g}"
    if e.threshold is not None:
        text += f" (threshold {e.threshold:.4g})"
    if e.p_value is not None:
        text += f", p={e.p_value:.2g}"
    if e.effect is not None:
        text += f", {e.effect_name or 'effect'}={e.effect:.4g}"
    return text


def rfc3339(t: float) -> str:
    """Unix seconds as RFC 3339 UTC with milliseconds, e.g. ``2023-11-14T22:13:20.000Z``."""
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
