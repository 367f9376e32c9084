"""What the pipeline talks to: rules, state and channels behind three calls.

:meth:`Alerting.window` observes a window's findings (one notification per detector, its drifted features
grouped), saves the changed state, then hands the notifications to every channel's queue; :meth:`Alerting.tick`
checks silent models (``no_data``); :meth:`Alerting.close` delivers what is queued within the grace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from monitor.alerts.channels import Channel
from monitor.alerts.delivery import AlertMetrics
from monitor.alerts.hooks import AlertedWindow, AlertHook
from monitor.alerts.notification import Alert
from monitor.alerts.rules import NO_BASELINE, NO_DATA, AlertRules, Observation
from monitor.config import SEVERITIES

log = logging.getLogger(__name__)


class Alerting:
    def __init__(self, rules: AlertRules, channels: Sequence[Channel], metrics: AlertMetrics,
                 models: Iterable[tuple[str, str]] = (), clock: Callable[[], float] = time.monotonic,
                 hooks: Sequence[AlertHook] = ()) -> None:
        self.rules = rules
        self.channels = list(channels)
        self.hooks = list(hooks)
        self._metrics = metrics
        self._clock = clock
        start = clock()
        self._start = start
        # Silence is counted from start: a model that never sends anything fires no_data too.
        self._last_seen = {model: start for model in models}
        self._unprofiled_seen: dict[str, float] = {}  # model -> when an event of a version without profile came
        self._unprofiled_count: dict[str, int] = {}
        self._last_event_time: dict[tuple[str, str], float] = {}
        self._silent: set[tuple[str, str]] = set()  # models whose no_data alert fires
        firing = rules.firing
        for channel in self.channels:
            channel.restore(firing)
        self._export()

    def window(self, observations: Iterable[Observation], context: AlertedWindow | None = None) -> list[Alert]:
        """Observe one window's findings; the notifications they raise are sent, then handed to the hooks with
        ``context`` (the window itself)."""
        alerts = [a for obs in observations if (a := self.rules.observe(obs)) is not None]
        self._publish(alerts)
        if alerts and context is not None:
            for hook in self.hooks:
                try:
                    hook.fired(alerts, context)
                except Exception:  # a hook's failure costs its own work, never the alert or the pipeline
                    log.exception("alert hook %s failed on window %s", hook.name, context.result.window_id)
        return alerts

    def seen(self, model: str, version: str, event_time: float) -> None:
        """Traffic from a model: resolves its ``no_data`` alert if one is firing."""
        key = (model, version)
        self._last_seen[key] = self._clock()
        self._last_event_time[key] = event_time
        if key in self._silent:
            alert = self.rules.silence(model, version, 0.0)
            if alert is not None:
                self._publish([alert])

    def unprofiled(self, model: str, version: str, event_time: float) -> None:
        """An event of ``model`` for ``version``, which has no profile: ``no_baseline`` fires for the model once."""
        count = self._unprofiled_count.get(model, 0) + 1
        self._unprofiled_count[model] = count
        self._unprofiled_seen[model] = self._clock()
        alert = self.rules.unprofiled(model, version, event_time, count)
        if alert is not None:
            self._publish([alert])

    def tick(self) -> list[Alert]:
        """Fire ``no_data`` for every watched model silent for longer than its rule allows; resolve
        ``no_baseline`` of models whose events of unprofiled versions stopped."""
        now = self._clock()
        alerts = [a for (model, version), last in self._last_seen.items()
                  if (a := self.rules.silence(model, version, now - last,
                                              self._last_event_time.get((model, version), 0.0))) is not None]
        for model in {a.model for a in self.rules.firing if a.detector == NO_BASELINE}:  # restored ones too
            resolved = self.rules.profiled_again(model, now - self._unprofiled_seen.get(model, self._start))
            if resolved is not None:
                alerts.append(resolved)
        self._publish(alerts)
        return alerts

    def close(self, timeout_s: float = 10.0) -> None:
        for channel in self.channels:
            channel.close(timeout_s=timeout_s)
        for hook in self.hooks:
            hook.close(timeout_s=timeout_s)
        self.rules.store.close()

    def _publish(self, alerts: list[Alert]) -> None:
        for hook in self.hooks:  # links first: the saved state and every channel carry them
            for alert in alerts:
                try:
                    alert.links.update(hook.links(alert))
                except Exception:
                    log.exception("alert hook %s could not link alert %s", hook.name, alert.id)
        self.rules.flush()  # durable before anyone is told: a restart never sends a notification twice
        for alert in alerts:
            log.warning("alert %s%s: %s %s/%s window #%d: %s", alert.status.upper(),
                        f" (repeat {alert.repeat})" if alert.repeat else "", alert.detector, alert.model,
                        alert.version, alert.window, alert.summary)
            for channel in self.channels:
                channel.send(alert)
        if alerts:
            self._export()

    def _export(self) -> None:
        self._silent = {(a.model, a.version) for a in self.rules.firing if a.detector == NO_DATA}
        counts = self.rules.firing_by_severity()
        for severity in SEVERITIES:
            self._metrics.firing.labels(severity=severity).set(counts.get(severity, 0))
