"""The configured channels, built once at start: secrets read (never logged), each in its own :class:`Delivery`.

A secret comes from a file (``secret_file``, ``url_file``, ``routing_key_file``: the first line, or every line
for webhook secrets, which may rotate) or from an environment variable (``*_env``). One that cannot be read
fails the start with the key that names it.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from monitor.alerts.alertmanager import AlertmanagerFormat
from monitor.alerts.delivery import AlertMetrics, DeadLetter, Delivery, channel_names
from monitor.alerts.notification import Alert
from monitor.alerts.pagerduty import PagerDutyFormat
from monitor.alerts.slack import SlackFormat
from monitor.alerts.webhook import WebhookFormat
from monitor.config import (
    AlertmanagerChannelConfig,
    AlertsConfig,
    PagerDutyChannelConfig,
    SlackChannelConfig,
    WebhookChannelConfig,
)
from monitor.errors import ConfigError


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...
    def restore(self, firing: list[Alert]) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


@dataclass
class MemoryChannel:
    """Keeps alerts in a list: the in-process sink the demo reports from."""

    name: str = "memory"
    alerts: list[Alert] = field(default_factory=list)

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def restore(self, firing: list[Alert]) -> None:
        return None

    def close(self, timeout_s: float = 10.0) -> None:
        return None


def build_channels(alerts: AlertsConfig, metrics: AlertMetrics, dead_letter: DeadLetter,
                   environ: Mapping[str, str] = os.environ,
                   clock: Callable[[], float] | None = None) -> list[Delivery]:
    """One :class:`Delivery` per configured channel (``alerts.webhook`` first, as an unsigned webhook).

    Raises
    ------
    ConfigError
        A secret file cannot be read or is empty, an environment variable is unset, a webhook secret is not
        base64; the message names the key.
    """
    configs: list[tuple[str, str, object]] = []
    if alerts.webhook is not None:
        w = alerts.webhook
        configs.append(("alerts.webhook", "webhook", WebhookChannelConfig(
            url=w.url, timeout_s=w.timeout_s, max_attempts=w.max_attempts, backoff_s=w.backoff_s,
            close_grace_s=w.close_grace_s)))
    names = channel_names(alerts)
    configs += [(f"alerts.channels[{i}]", names[i], c) for i, c in enumerate(alerts.channels)]
    taken = [n for _, n, _ in configs]
    deliveries: list[Delivery] = []
    try:
        for key, name, config in configs:
            if name == "webhook" and taken.count("webhook") > 1:
                name = "webhook0" if key == "alerts.webhook" else name
            fmt = _format(key, name, config, environ)
            extra = {} if clock is None else {"clock": clock}
            deliveries.append(Delivery(fmt, config, metrics, dead_letter, **extra))  # type: ignore[arg-type]
    except BaseException:
        for delivery in deliveries:
            delivery.close(timeout_s=0)
        raise
    return deliveries


def _format(key: str, name: str, config: object, environ: Mapping[str, str]) -> object:
    if isinstance(config, WebhookChannelConfig):
        secrets = read_secrets(key, "secret", config.secret_file, config.secret_env, environ, every_line=True)
        for i, secret in enumerate(secrets):
            _check_webhook_secret(f"{key}.{'secret_file' if config.secret_file else 'secret_env'}", i, secret)
        return WebhookFormat(config.url, secrets, name=name)
    if isinstance(config, SlackChannelConfig):
        url = config.url or read_secrets(key, "url", config.url_file, config.url_env, environ)[0]
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"{key}: the Slack webhook URL must start with https:// (it read as something else)")
        return SlackFormat(url, name=name)
    if isinstance(config, AlertmanagerChannelConfig):
        return AlertmanagerFormat(config.url, config.repost_s, name=name)
    if isinstance(config, PagerDutyChannelConfig):
        routing_key = read_secrets(key, "routing_key", config.routing_key_file, config.routing_key_env, environ)[0]
        return PagerDutyFormat(config.url, routing_key, name=name)
    raise ConfigError(f"{key}: unknown channel {type(config).__name__}")


def read_secrets(key: str, what: str, path: str | None, env: str | None, environ: Mapping[str, str],
                 every_line: bool = False) -> list[str]:
    """The secret(s) a config section ``key`` names in ``{what}_file`` or ``{what}_env`` (a channel, Grafana);
    ``[]`` when it names none (an unsigned webhook). Unreadable or empty: :class:`ConfigError` naming the key."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key}.{what}_file: cannot read {path}: "
                              f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from exc
        source = f"{key}.{what}_file ({path})"
    elif env is not None:
        if env not in environ:
            raise ConfigError(f"{key}.{what}_env: the environment variable {env} is not set")
        text, source = environ[env], f"{key}.{what}_env ({env})"
    else:
        return []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"{source} is empty")
    return lines if every_line else lines[:1]


def _check_webhook_secret(key: str, index: int, secret: str) -> None:
    """Standard Webhooks secrets are base64 (usually ``whsec_`` + base64 of 24 to 64 random bytes)."""
    raw = secret.removeprefix("whsec_")
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) < 16:
        raise ConfigError(f"{key}: secret #{index + 1} is not a Standard Webhooks secret (whsec_ + base64 of at "
                          f"least 16 bytes; e.g. python -c \"import os,base64;print('whsec_'+"
                          f"base64.b64encode(os.urandom(32)).decode())\")")
