"""Alert rules and the lifecycle of each alert: pending → firing → (repeated) → resolved, persisted.

An alert's fingerprint is (model, version, rule); a rule is named by its detector (``no_data`` included;
``no_baseline``, traffic of a version with no profile, is one alert per model, its version ``*``). It
is *pending* while some of the last ``of`` windows breached, *fires* when ``breaches`` of them did (k-of-n
persistence: one unlucky window does not page anyone), is repeated every ``renotify_s`` while it keeps
breaching, and *resolves* after ``resolve_after`` consecutive clean windows. Windows with insufficient data
neither advance nor reset a rule; a window seen twice (replayed after a restart or a rebalance) counts once.
The drifted features of one window go out together, in one notification.

Every change is saved through a :class:`~monitor.alerts.state.StateStore` at :meth:`AlertRules.flush`, and read
back at start: after a restart a firing alert is neither sent again nor forgotten (its resolve still comes).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.alerts.notification import LINKS, Alert, Status
from monitor.alerts.state import MemoryStore, State, StateStore
from monitor.config import AlertsConfig, RuleConfig, Severity
from monitor.detection.base import Evidence
from monitor.errors import ConfigError

log = logging.getLogger(__name__)

NO_DATA = "no_data"
NO_BASELINE = "no_baseline"
#: How long a model must send no event of an unprofiled version before its ``no_baseline`` alert resolves,
#: unless a ``no_baseline`` rule gives ``after_s``.
NO_BASELINE_QUIET_S = 600.0


@dataclass(frozen=True)
class Observation:
    """What one window said about one detector."""

    model: str
    version: str
    detector: str
    window: int
    window_id: str
    window_start: float
    window_end: float
    drifted: bool
    insufficient: bool = False
    features: tuple[str, ...] = ()
    summary: str = ""
    training_run: str | None = None
    n_events: int = 0
    evidence: tuple[Evidence, ...] = ()
    training_run_url: str = ""


@dataclass(frozen=True)
class Rule:
    """The effective rule for one (detector, model): config defaults with the most specific override applied."""

    detector: str
    severity: Severity
    breaches: int
    of: int
    resolve_after: int
    after_s: float | None = None


@dataclass
class _State:
    recent: deque[bool]  # the last `of` verdicts, True = breach
    seen: deque[str]  # their window ids
    clean: int = 0
    firing: Alert | None = None
    notified_at: float = 0.0  # wall-clock time of the last notification
    repeats: int = 0

    @property
    def status(self) -> str:
        return "firing" if self.firing is not None else "pending" if any(self.recent) else "inactive"

    def dump(self) -> State:
        return {"status": self.status, "recent": list(self.recent), "seen": list(self.seen), "clean": self.clean,
                "firing": None if self.firing is None else self.firing.to_dict(),
                "notified_at": self.notified_at, "repeats": self.repeats}

    @classmethod
    def restore(cls, state: Mapping[str, Any], of: int) -> _State:
        firing = state.get("firing")
        return cls(recent=deque((bool(v) for v in state.get("recent", ())), maxlen=of),
                   seen=deque((str(v) for v in state.get("seen", ())), maxlen=of), clean=int(state.get("clean", 0)),
                   firing=None if firing is None else Alert.from_dict(firing),
                   notified_at=float(state.get("notified_at", 0.0)), repeats=int(state.get("repeats", 0)))


class AlertRules:
    """k-of-n firing, r-consecutive resolution and repeats, per fingerprint, as the ``alerts:`` section says.

    >>> rules = AlertRules(AlertsConfig(breaches=2, of=3))
    >>> def window(i, drifted):
    ...     return Observation("m", "1", "feature_drift", i, f"w{i}", i, i + 1, drifted)
    >>> [a.status if (a := rules.observe(window(i, d))) else "-" for i, d in enumerate([1, 0, 1, 1, 0, 0])]
    ['-', '-', 'firing', '-', '-', 'resolved']
    """

    def __init__(self, alerts: AlertsConfig = AlertsConfig(),  # noqa: B008 - frozen, so safe to share
                 store: StateStore | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = alerts
        if not 1 <= alerts.breaches <= alerts.of:
            raise ConfigError(f"alerts: need 1 <= breaches <= of, got breaches={alerts.breaches}, of={alerts.of}")
        self.store: StateStore = store if store is not None else MemoryStore()
        self._clock = clock
        self._dirty: set[str] = set()  # fingerprints changed since the last flush
        self._rules: dict[tuple[str, str | None], RuleConfig] = {(r.detector, r.model): r for r in alerts.rules}
        self._state: dict[str, _State] = {}
        for fingerprint, saved in self.store.load().items():
            try:
                self._state[fingerprint] = _State.restore(saved, self._of(saved))
            except (TypeError, ValueError, KeyError) as exc:
                log.warning("alert state of %s is unreadable (%s): starting it afresh", fingerprint, exc)
        if self.firing:
            log.info("alert state restored: %d alert(s) still firing: %s", len(self.firing),
                     ", ".join(f"{a.detector} on {a.model}/{a.version}" for a in self.firing))

    # -- rules -------------------------------------------------------------------------------------------
    def rule(self, detector: str, model: str) -> Rule:
        c = self.config
        override = self._rules.get((detector, model)) or self._rules.get((detector, None))
        if override is None:
            return Rule(detector, "warning", c.breaches, c.of, c.resolve_after)
        return Rule(detector, override.severity, override.breaches or c.breaches, override.of or c.of,
                    override.resolve_after or c.resolve_after, override.after_s)

    def no_data_rule(self, model: str) -> Rule | None:
        """The ``no_data`` rule for ``model``, if one is configured."""
        rule = self.rule(NO_DATA, model)
        return rule if rule.after_s is not None else None

    # -- windows -----------------------------------------------------------------------------------------
    def observe(self, obs: Observation) -> Alert | None:
        """Update the rule with one window; return a notification when the alert fires, repeats or resolves."""
        rule = self.rule(obs.detector, obs.model)
        fingerprint = _fingerprint(obs.model, obs.version, obs.detector)
        st = self._state.setdefault(fingerprint, _State(recent=deque(maxlen=rule.of), seen=deque(maxlen=rule.of)))
        if obs.insufficient or obs.window_id in st.seen:
            return None
        st.seen.append(obs.window_id)
        st.recent.append(obs.drifted)
        self._dirty.add(fingerprint)
        now = self._clock()
        if obs.drifted:
            st.clean = 0
            if st.firing is None and sum(st.recent) >= rule.breaches:
                st.firing = self._alert(fingerprint, "firing", rule, obs, started_at=obs.window_end)
                st.notified_at, st.repeats = now, 0
                return st.firing
            renotify = self.config.renotify_s
            if st.firing is not None and renotify > 0 and now - st.notified_at >= renotify:
                st.notified_at, st.repeats = now, st.repeats + 1
                return self._alert(fingerprint, "firing", rule, obs, started_at=st.firing.started_at,
                                   repeat=st.repeats)
            return None
        st.clean += 1
        if st.firing is not None and st.clean >= rule.resolve_after:
            started = st.firing.started_at
            st.firing = None
            st.notified_at = now
            return self._alert(fingerprint, "resolved", rule, obs, started_at=started, ended_at=obs.window_end)
        return None

    # -- silence -----------------------------------------------------------------------------------------
    def silence(self, model: str, version: str, silent_s: float, last_event_time: float = 0.0) -> Alert | None:
        """A watched model has sent nothing for ``silent_s`` (0 when it just did): fire ``no_data`` once it
        passes the rule's ``after_s``, resolve when traffic returns."""
        rule = self.no_data_rule(model)
        if rule is None or rule.after_s is None:
            return None
        fingerprint = _fingerprint(model, version, NO_DATA)
        st = self._state.get(fingerprint)
        firing = st is not None and st.firing is not None
        if silent_s >= rule.after_s and not firing:
            now = self._clock()
            st = self._state.setdefault(fingerprint, _State(recent=deque(maxlen=1), seen=deque(maxlen=1)))
            summary = f"no events from {model}/{version} for {silent_s:.0f} s (rule: {rule.after_s:g} s)"
            obs = Observation(model, version, NO_DATA, -1, "", last_event_time, now, True, summary=summary,
                              evidence=(Evidence("", "silent_s", silent_s, threshold=rule.after_s),))
            st.firing = self._alert(fingerprint, "firing", rule, obs, started_at=now)
            st.notified_at = now
            self._dirty.add(fingerprint)
            return st.firing
        if silent_s < rule.after_s and st is not None and st.firing is not None:
            now = self._clock()
            started = st.firing.started_at
            obs = Observation(model, version, NO_DATA, -1, "", started, now, False,
                              summary=f"events from {model}/{version} arrive again")
            st.firing = None
            st.notified_at = now
            self._dirty.add(fingerprint)
            return self._alert(fingerprint, "resolved", rule, obs, started_at=started, ended_at=now)
        return None

    # -- versions without a profile ------------------------------------------------------------------------
    def unprofiled(self, model: str, version: str, event_time: float, count: int) -> Alert | None:
        """Events of ``model`` arrive for ``version``, which has no profile (``count`` so far): fire
        ``no_baseline`` for the model, once (the version is named in the first notification)."""
        fingerprint = _fingerprint(model, "*", NO_BASELINE)
        st = self._state.get(fingerprint)
        if st is not None and st.firing is not None:
            return None
        rule = self.rule(NO_BASELINE, model)
        now = self._clock()
        st = self._state.setdefault(fingerprint, _State(recent=deque(maxlen=1), seen=deque(maxlen=1)))
        summary = (f"events of {model} arrive for version {version}, which has no profile: they are dead-lettered, "
                   "not compared with anything (add the version to models: with its profile)")
        obs = Observation(model, "*", NO_BASELINE, -1, "", event_time, event_time, True, summary=summary,
                          evidence=(Evidence("", "events", float(count), threshold=0.0),))
        st.firing = self._alert(fingerprint, "firing", rule, obs, started_at=now)
        st.notified_at = now
        self._dirty.add(fingerprint)
        return st.firing

    def profiled_again(self, model: str, quiet_s: float) -> Alert | None:
        """No event of an unprofiled version of ``model`` for ``quiet_s``: resolve its ``no_baseline`` alert once
        that passes the rule's ``after_s`` (default :data:`NO_BASELINE_QUIET_S`)."""
        fingerprint = _fingerprint(model, "*", NO_BASELINE)
        st = self._state.get(fingerprint)
        rule = self.rule(NO_BASELINE, model)
        if st is None or st.firing is None or quiet_s < (rule.after_s or NO_BASELINE_QUIET_S):
            return None
        now = self._clock()
        started = st.firing.started_at
        obs = Observation(model, "*", NO_BASELINE, -1, "", started, now, False,
                          summary=f"no events of {model} without a profile for {quiet_s:.0f} s")
        st.firing = None
        st.notified_at = now
        self._dirty.add(fingerprint)
        return self._alert(fingerprint, "resolved", rule, obs, started_at=started, ended_at=now)

    # -- state -------------------------------------------------------------------------------------------
    @property
    def firing(self) -> list[Alert]:
        return [s.firing for s in self._state.values() if s.firing is not None]

    def firing_by_severity(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for alert in self.firing:
            counts[alert.severity] = counts.get(alert.severity, 0) + 1
        return counts

    def flush(self) -> None:
        """Save the fingerprints changed since the last flush (one write per window, not per detector)."""
        if not self._dirty:
            return
        changed = {fp: self._state[fp].dump() for fp in self._dirty if fp in self._state}
        self.store.save(changed)
        self._dirty = set()

    def _of(self, saved: Mapping[str, Any]) -> int:
        firing = saved.get("firing")
        if isinstance(firing, Mapping):
            return self.rule(str(firing.get("detector", "")), str(firing.get("model", ""))).of
        return max(len(saved.get("recent", ())), self.config.of, 1)

    def _alert(self, fingerprint: str, status: Status, rule: Rule, obs: Observation, started_at: float,
               ended_at: float | None = None, repeat: int = 0) -> Alert:
        # The id is the same for every delivery attempt of this notification (receivers deduplicate on it).
        ident = hashlib.sha256(f"{fingerprint}\0{status}\0{obs.window_id}\0{started_at}\0{repeat}".encode())
        return Alert(id=ident.hexdigest()[:32], fingerprint=fingerprint, status=status, severity=rule.severity,
                     model=obs.model, version=obs.version, detector=obs.detector, window=obs.window,
                     window_id=obs.window_id, window_start=obs.window_start, window_end=obs.window_end,
                     started_at=started_at, ended_at=ended_at, repeat=repeat, n_events=obs.n_events,
                     features=obs.features, summary=obs.summary, evidence=obs.evidence,
                     links=self._links(obs), training_run=obs.training_run)

    def _links(self, obs: Observation) -> dict[str, str]:
        fill = {"model": obs.model, "version": obs.version, "window_id": obs.window_id,
                "from_ms": int(obs.window_start * 1000), "to_ms": int(obs.window_end * 1000)}
        links = dict.fromkeys(LINKS, "")
        for name, template in (("dashboard", self.config.dashboard_url), ("report", self.config.report_url)):
            if template:
                try:
                    links[name] = template.format(**fill)
                except (KeyError, IndexError, ValueError) as exc:
                    log.warning("alerts.%s_url %r cannot be filled in: %s", name, template, exc)
        links["training_run"] = obs.training_run_url or obs.training_run or ""
        return links


def _fingerprint(model: str, version: str, rule: str) -> str:
    return hashlib.sha256(f"{model}\0{version}\0{rule}".encode()).hexdigest()[:16]
