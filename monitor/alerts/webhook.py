"""Webhook channel: the alert as JSON, signed per the Standard Webhooks spec (https://www.standardwebhooks.com).

Headers: ``webhook-id`` (the notification id, the same on every attempt), ``webhook-timestamp`` (the attempt's
Unix time) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per secret,
space-separated, so that receivers keep verifying while a secret rotates). Signing uses the
``standardwebhooks`` package itself; without a secret the POST is unsigned (the ``alerts.webhook`` shorthand).
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks import Webhook

from monitor.alerts.delivery import HttpRequest
from monitor.alerts.notification import Alert


class WebhookFormat:
    repost_s = 0.0

    def __init__(self, url: str, secrets: list[str] = (), name: str = "webhook") -> None:  # type: ignore[assignment]
        self.name = name
        self.url = url
        self._signers = [Webhook(secret) for secret in secrets]

    def request(self, alert: Alert, now: float) -> HttpRequest:
        body = alert.to_json()
        headers = {"Content-Type": "application/json", "Idempotency-Key": alert.id, "webhook-id": alert.id,
                   "webhook-timestamp": str(int(now))}
        if self._signers:
            when = datetime.fromtimestamp(int(now), tz=UTC)
            text = body.decode()
            headers["webhook-signature"] = " ".join(s.sign(alert.id, when, text) for s in self._signers)
        return HttpRequest(self.url, body, headers)
