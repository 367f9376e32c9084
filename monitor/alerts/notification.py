"""What an alert notification says: one immutable record, rendered by each channel in its own format.

Every channel sends the same facts: what changed and by how much (the detector's summary and, per feature, the
statistic, its threshold, the p-value and the effect size), the window's time range and size, the features,
and links (dashboard, report, Grafana snapshot, training run, the window's sample logged to that run). A link
whose target is not configured is present and empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from monitor.config import SEVERITIES, Severity
from monitor.detection.base import Evidence

__all__ = ["LINKS", "Alert", "Evidence", "Status", "at_least"]

Status = Literal["firing", "resolved"]

#: The link fields every alert carries, in this order (empty when the target is not configured).
LINKS: tuple[str, ...] = ("dashboard", "report", "snapshot", "training_run", "window_sample")


@dataclass(frozen=True)
class Alert:
    """One notification: an alert that fires, fires again (``repeat`` > 0, after ``renotify_s``) or resolves.

    ``id`` is the same on every delivery attempt of this notification (receivers deduplicate on it) and differs
    between notifications; ``fingerprint`` is the same for every notification of one alert (model, version,
    rule). ``started_at`` is when it began firing, ``ended_at`` when it resolved (``None`` while firing); times
    are Unix seconds."""

    id: str
    fingerprint: str
    status: Status
    severity: Severity
    model: str
    version: str
    detector: str
    window: int
    window_id: str
    window_start: float
    window_end: float
    started_at: float
    n_events: int = 0
    ended_at: float | None = None
    repeat: int = 0
    features: tuple[str, ...] = ()
    summary: str = ""
    evidence: tuple[Evidence, ...] = ()
    links: dict[str, str] = field(default_factory=lambda: dict.fromkeys(LINKS, ""))
    training_run: str | None = None

    @property
    def has_window(self) -> bool:
        """Whether a window raised it (``no_data`` and ``no_baseline`` are about traffic, not a window)."""
        return bool(self.window_id)

    @property
    def title(self) -> str:
        """One line: what, where, how bad."""
        what = "resolved" if self.status == "resolved" else self.severity.upper()
        return f"[{what}] {self.detector} on {self.model}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; a non-finite number (a p-value that could not be computed) becomes ``None``."""
        plain: dict[str, Any] = _finite({"schema": "inferwatch.alert/v2", **asdict(self)})
        return plain

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False, default=str).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """The inverse of :meth:`to_dict` (alert state read back after a restart)."""
        fields = {k: v for k, v in data.items() if k != "schema"}
        fields["features"] = tuple(fields.get("features", ()))
        fields["evidence"] = tuple(Evidence(**e) for e in fields.get("evidence", ()))
        return cls(**fields)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def at_least(severity: Severity, floor: Severity) -> bool:
    """Whether ``severity`` is ``floor`` or above (info < warning < critical)."""
    return SEVERITIES.index(severity) >= SEVERITIES.index(floor)
