"""Slack channel: an incoming-webhook message in Block Kit (https://api.slack.com/block-kit).

Slack rejects a whole message (``400 invalid_blocks``) when one block breaks a limit, and a rejected message is
not retried, so every piece of text is clipped to its limit here (ending in "…") rather than trusted to be short:
a header's plain text 150 characters, a section's text 3000, at most 10 fields of 2000 each, at most 10 context
elements, at most 50 blocks. Text that came from elsewhere (a detector's summary, feature names) is escaped for
mrkdwn, where ``&``, ``<`` and ``>`` are control characters; clipping never cuts an escape in half. Slack's 429
carries ``Retry-After``, which :class:`~monitor.alerts.delivery.Delivery` honours.

The webhook URL is the channel's only credential, so :meth:`SlackFormat.__repr__` shows its host, not its path.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from monitor.alerts.delivery import HttpRequest
from monitor.alerts.notification import Alert, Evidence

HEADER_MAX = 150
TEXT_MAX = 3000  # a section's text, a context element's text, and (by our choice) the fallback ``text``
FIELD_MAX = 2000
FIELDS_MAX = 10
CONTEXT_MAX = 10
BLOCKS_MAX = 50
#: Features shown with their numbers; the rest are counted ("and 7 more"), the full list is in the report.
TOP_FEATURES = 5
ELLIPSIS = "…"

_SEVERITY_ICON = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}
_LINK_LABELS = {"dashboard": "Dashboard", "report": "Report", "training_run": "Training run"}


class SlackFormat:
    """Renders an :class:`Alert` as a Slack incoming-webhook message."""

    repost_s = 0.0  # Slack keeps messages: nothing to post again

    def __init__(self, url: str, name: str = "slack") -> None:
        self.name = name
        self._url = url

    def __repr__(self) -> str:
        parts = urllib.parse.urlsplit(self._url)
        return f"SlackFormat(name={self.name!r}, url='{parts.scheme}://{parts.netloc}/{ELLIPSIS}')"

    def request(self, alert: Alert, now: float) -> HttpRequest:
        body = json.dumps(message(alert), allow_nan=False).encode()
        return HttpRequest(self._url, body, {"Content-Type": "application/json"})


def message(alert: Alert) -> dict[str, Any]:
    """The webhook's JSON: ``text`` (what notifications and old clients show) and ``blocks``."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(alert.title, HEADER_MAX), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _overview(alert)}},
    ]
    fields = _feature_fields(alert)
    if fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
    context = _context(alert)
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": c} for c in context]})
    fallback = f"{alert.title}: {alert.summary}" if alert.summary else alert.title
    return {"text": clip_mrkdwn(escape(fallback), TEXT_MAX), "blocks": blocks[:BLOCKS_MAX]}


def _overview(alert: Alert) -> str:
    """Status, severity, where, which window; then the detector's summary, clipped so the whole fits."""
    if alert.status == "resolved":
        status = ":white_check_mark: *Resolved*"
        if alert.ended_at is not None:
            status += f" at {_iso(alert.ended_at)}"
    else:
        status = ":rotating_light: *Firing*" + (f" (reminder {alert.repeat})" if alert.repeat else "")
    icon = _SEVERITY_ICON.get(alert.severity, "")
    facts = "\n".join([
        f"{status} · {icon} severity *{alert.severity}*",
        f"*Model:* `{escape(alert.model)}/{escape(alert.version)}` · *Detector:* `{escape(alert.detector)}`",
        f"*Window:* `{escape(alert.window_id)}` {_iso(alert.window_start)} → {_iso(alert.window_end)} "
        f"({alert.n_events:,} events)",
        f"*Started:* {_iso(alert.started_at)}",
    ])
    facts = clip_mrkdwn(facts, TEXT_MAX)  # only a pathological model name or window id gets here
    room = TEXT_MAX - len(facts) - 2
    if not alert.summary or room <= len(ELLIPSIS):
        return facts
    return f"{facts}\n\n{clip_mrkdwn(escape(alert.summary), room)}"


def _feature_fields(alert: Alert) -> list[str]:
    """The strongest findings (highest ``value``) with their numbers; the feature names when there are none."""
    if alert.evidence:
        top = sorted(alert.evidence, key=_strength, reverse=True)
        shown = [clip_mrkdwn(_evidence_text(e), FIELD_MAX) for e in top[:TOP_FEATURES]]
        if len(top) > TOP_FEATURES:
            shown.append(f"_and {len(top) - TOP_FEATURES} more_")
        return shown
    names = [f"`{clip_mrkdwn(escape(f), FIELD_MAX - 2)}`" for f in alert.features]
    if len(names) > FIELDS_MAX:
        names = [*names[:FIELDS_MAX - 1], f"_and {len(names) - FIELDS_MAX + 1} more_"]
    return names


def _strength(evidence: Evidence) -> float:
    """Sort key: a value that is not a number sorts last instead of breaking the order."""
    return evidence.value if math.isfinite(evidence.value) else -math.inf


def _evidence_text(e: Evidence) -> str:
    name = escape(e.feature) if e.feature else "(model)"
    line = f"{escape(e.statistic)} = {_num(e.value)}"
    if e.threshold is not None:
        line += f" (threshold {_num(e.threshold)})"
    extra = []
    if e.p_value is not None:
        extra.append(f"p = {_num(e.p_value)}")
    if e.effect is not None:
        extra.append(f"{escape(e.effect_name or 'effect')} = {_num(e.effect)}")
    return f"*{name}*\n{line}" + (f"\n{' · '.join(extra)}" if extra else "")


def _context(alert: Alert) -> list[str]:
    """Links that are configured (an empty one is left out), the training run, and the ids to grep for."""
    run = alert.training_run
    out = []
    for key, url in alert.links.items():
        if url:
            label = _LINK_LABELS.get(key, key.replace("_", " ").capitalize())
            if key == "training_run" and run:
                label = f"{label} {run}"
            out.append(_link(url, label))
    if run and not alert.links.get("training_run"):
        out.append(f"Training run: `{clip_mrkdwn(escape(run), TEXT_MAX - 20)}`")
    out.append(f"inferwatch · alert `{escape(alert.id)}` · fingerprint `{escape(alert.fingerprint)}`")
    return [clip_mrkdwn(c, TEXT_MAX) for c in out[:CONTEXT_MAX]]


def _link(url: str, label: str) -> str:
    """``<url|label>``; characters that would end the link early are percent-encoded in the URL. A URL too long
    for one element is shown as its label alone: a link cut short would point somewhere else."""
    for char, code in (("<", "%3C"), (">", "%3E"), ("|", "%7C")):
        url = url.replace(char, code)
    text = escape(label)
    if len(url) + len(text) + 3 > TEXT_MAX:
        return clip_mrkdwn(text, TEXT_MAX)
    return f"<{url}|{text}>"


def escape(text: str) -> str:
    """Escape mrkdwn's control characters.

    >>> escape("p < 0.05 & x > 1")
    'p &lt; 0.05 &amp; x &gt; 1'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and "…" in exactly ``limit``.

    >>> clip("abcdef", 4)
    'abc…'
    """
    return text if len(text) <= limit else text[:limit - len(ELLIPSIS)] + ELLIPSIS


def clip_mrkdwn(text: str, limit: int) -> str:
    """:func:`clip` for escaped text: an escape (``&amp;``) cut in half would show as garbage, so the cut moves
    before it.

    >>> clip_mrkdwn("a &amp; b", 5)
    'a …'
    """
    if len(text) <= limit:
        return text
    cut = text[:limit - len(ELLIPSIS)]
    amp = cut.rfind("&")
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + ELLIPSIS


def _iso(t: float) -> str:
    """UTC, to the second, ``Z``-suffixed; a time that is not a number shows as such instead of failing."""
    try:
        return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):  # NaN, infinity, or beyond datetime's years
        return "n/a"


def _num(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)
