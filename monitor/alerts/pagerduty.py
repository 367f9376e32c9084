"""PagerDuty channel: Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/).

A firing alert (and each reminder) is a ``trigger``, a resolved one a ``resolve``; both carry the same
``dedup_key``, derived from the alert's fingerprint, so PagerDuty folds reminders into the open incident and a
resolve closes it, also after an inferwatch restart. PagerDuty answers 202 on success; a 400 means the event
itself is wrong (not retried, dead-lettered); 429 and 5xx are retried by
:class:`~monitor.alerts.delivery.Delivery`.

The routing key is a credential: it lives in ``_routing_key`` and only in request bodies, never in a repr, so
it cannot reach a log line by way of ``%r`` or an error message.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from monitor.alerts.delivery import HttpRequest
from monitor.alerts.notification import Alert
from monitor.config import Severity

SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
#: Bounds on the lists in ``custom_details``: PagerDuty refuses events over 512 KB, and a page does not need
#: the 40th feature's numbers (the report has them all).
EVIDENCE_MAX = 50
FEATURES_MAX = 200
ELLIPSIS = "…"

#: Ours are a subset of PagerDuty's (critical, error, warning, info); ``error`` is not used.
SEVERITY: dict[Severity, str] = {"critical": "critical", "warning": "warning", "info": "info"}


class PagerDutyFormat:
    """Renders an :class:`Alert` as a PagerDuty Events API v2 event."""

    repost_s = 0.0  # PagerDuty keeps the incident open until it is resolved: nothing to post again

    def __init__(self, url: str, routing_key: str, name: str = "pagerduty", source: str = "inferwatch") -> None:
        routing_key = routing_key.strip()  # read from a file, it may end in a newline
        if not routing_key:
            raise ValueError("the PagerDuty routing key is empty")
        self.name = name
        self.url = url
        self.source = source
        self._routing_key = routing_key

    def __repr__(self) -> str:
        return f"PagerDutyFormat(name={self.name!r}, url={self.url!r}, source={self.source!r}, routing_key=<hidden>)"

    def request(self, alert: Alert, now: float) -> HttpRequest:
        body = json.dumps(self.event(alert), allow_nan=False, default=str).encode()
        return HttpRequest(self.url, body, {"Content-Type": "application/json"})

    def event(self, alert: Alert) -> dict[str, Any]:
        """The event's JSON; a resolve carries only what PagerDuty needs to find the incident."""
        event: dict[str, Any] = {"routing_key": self._routing_key,
                                 "event_action": "resolve" if alert.status == "resolved" else "trigger",
                                 "dedup_key": dedup_key(alert.fingerprint)}
        if alert.status == "resolved":
            return event
        payload: dict[str, Any] = {
            "summary": _clip(f"{alert.title}: {alert.summary}" if alert.summary else alert.title, SUMMARY_MAX),
            "source": self.source,
            "severity": SEVERITY.get(alert.severity, "warning"),  # an unknown one still pages
            "component": f"{alert.model}/{alert.version}",
            "group": alert.model,
            "class": alert.detector,
            "custom_details": _details(alert),
        }
        timestamp = _iso(alert.window_end)
        if timestamp is not None:  # optional; PagerDuty refuses one it cannot parse
            payload["timestamp"] = timestamp
        event["payload"] = payload
        links = [{"href": url, "text": key.replace("_", " ")} for key, url in alert.links.items() if url]
        if links:
            event["links"] = links
        event["client"] = "inferwatch"
        if alert.links.get("dashboard"):
            event["client_url"] = alert.links["dashboard"]
        return event


def dedup_key(fingerprint: str) -> str:
    """Stable per alert; a fingerprint too long for PagerDuty's 255 characters is hashed (still stable).

    >>> dedup_key("abc")
    'inferwatch-abc'
    """
    key = f"inferwatch-{fingerprint}"
    if len(key) <= DEDUP_KEY_MAX:
        return key
    return f"inferwatch-sha256-{hashlib.sha256(fingerprint.encode()).hexdigest()}"


def _details(alert: Alert) -> dict[str, Any]:
    """What a responder needs without opening the report: the window, the features and their numbers."""
    data = alert.to_dict()  # non-finite numbers already None: PagerDuty takes strict JSON only
    evidence = sorted(data["evidence"], key=lambda e: e["value"] if e["value"] is not None else float("-inf"),
                      reverse=True)
    details: dict[str, Any] = {
        "summary": alert.summary,
        "window_id": alert.window_id,
        "window_start": _iso(alert.window_start),
        "window_end": _iso(alert.window_end),
        "n_events": alert.n_events,
        "started_at": _iso(alert.started_at),
        "repeat": alert.repeat,
        "features": list(alert.features[:FEATURES_MAX]),
        "evidence": evidence[:EVIDENCE_MAX],
        "training_run": alert.training_run,
        "alert_id": alert.id,
        "fingerprint": alert.fingerprint,
    }
    if len(alert.features) > FEATURES_MAX:
        details["features_omitted"] = len(alert.features) - FEATURES_MAX
    if len(evidence) > EVIDENCE_MAX:
        details["evidence_omitted"] = len(evidence) - EVIDENCE_MAX
    return details


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - len(ELLIPSIS)] + ELLIPSIS


def _iso(t: float) -> str | None:
    """ISO 8601 in UTC with milliseconds, or ``None`` for a time that is not one."""
    try:
        return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None
