"""The Grafana alert hook: an annotation and a snapshot of the model's dashboard for every alert.

For each notification :class:`GrafanaHook` sends

* an **annotation** on the model's dashboard (``{prefix}-generator`` for a model whose profile describes an
  LLM, ``{prefix}-classifier`` otherwise), on the panel that shows the alerting detector's numbers, spanning
  the window's time range; tags ``inferwatch``, ``model:…``, ``version:…``, ``detector:…``, ``severity:…``,
  ``status:…``; its text the alert's title and summary and its links as HTML anchors;
* for a firing notification (the first and every repeat) a **snapshot** of that dashboard with the window's
  data embedded as data frames (:mod:`monitor.grafana.snapshot`), always local to the Grafana (never
  ``external``), expiring after ``snapshot_expires_s``. A resolve gets its annotation only: the window that
  resolved an alert is a clean one, and the firing snapshot stays linked from the firing notification.

The snapshot's key is derived from the alert id with the token as HMAC key, so :meth:`GrafanaHook.links` knows
its URL (``{url}/dashboard/snapshot/{key}``) before the snapshot exists and puts it into the alert's
``snapshot`` link; the key cannot be guessed from the alert without the token. The dashboard link is added
only where ``alerts.dashboard_url`` did not already give one.

All requests are made by one worker thread from a bounded queue of alerting windows (full: the oldest is
dropped, counted and logged), each retried with backoff while Grafana is unreachable or answers 429/5xx.
Every request's outcome is counted in ``inferwatch_grafana_requests_total{kind, outcome}``; a failure is
logged and costs only that request, never the alert or the pipeline.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal
from urllib.parse import urlencode

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.alerts.hooks import AlertedWindow, HookWorker
from monitor.alerts.notification import Alert
from monitor.config import GrafanaConfig
from monitor.detection import BY_NAME
from monitor.errors import ConfigError
from monitor.evaluation import WindowResult
from monitor.grafana.client import Grafana, GrafanaError, with_retries
from monitor.grafana.provision import ensure_dashboard
from monitor.grafana.snapshot import panels, snapshot_dashboard
from monitor.profiles import Profile

__all__ = ["GrafanaHook", "GrafanaMetrics", "ModelKind", "annotation_panel", "grafana_hook"]

log = logging.getLogger(__name__)

ModelKind = Literal["classifier", "generator"]
RequestKind = Literal["annotation", "snapshot", "dashboard"]
REQUEST_KINDS: tuple[RequestKind, ...] = ("annotation", "snapshot", "dashboard")


@dataclass(frozen=True)
class GrafanaMetrics:
    """What the hook did: requests by kind and outcome, alerting windows waiting, windows dropped."""

    requests: Counter
    queue_depth: Gauge
    dropped: Counter

    @classmethod
    def on(cls, registry: CollectorRegistry) -> GrafanaMetrics:
        m = cls(requests=Counter("inferwatch_grafana_requests_total",
                                 "Grafana requests of the alert hook, by kind and final outcome (after retries).",
                                 ("kind", "outcome"), registry=registry),
                queue_depth=Gauge("inferwatch_grafana_queue_depth",
                                  "Alerting windows waiting for the Grafana worker.", registry=registry),
                dropped=Counter("inferwatch_grafana_dropped_total",
                                "Alerting windows dropped (queue full, or left at shutdown) before Grafana "
                                "got their annotations and snapshots.", registry=registry))
        for kind in REQUEST_KINDS:
            for outcome in ("ok", "error"):
                m.requests.labels(kind=kind, outcome=outcome)
        return m


@dataclass(frozen=True)
class _Job:
    alerts: tuple[Alert, ...]
    result: WindowResult


def annotation_panel(dashboard: Mapping[str, Any], detector: str) -> int | None:
    """The id of the panel that shows ``detector``'s numbers: the first whose queries read one of the
    detector's gauges, else the detector-state panel (``inferwatch_drift_detected``), else the first panel
    with queries; ``None`` for a dashboard without any."""
    cls = BY_NAME.get(detector)
    gauges = tuple(spec.name for spec in cls.gauges) if cls is not None else ()
    queried = [(p, " ".join(str(t.get("expr", "")) for t in p.get("targets", [])))
               for p in panels(dashboard) if p.get("targets")]
    for wanted in (gauges, ("inferwatch_drift_detected",)):
        for panel, exprs in queried:
            if any(g in exprs for g in wanted):
                return int(panel["id"])
    return int(queried[0][0]["id"]) if queried else None


class GrafanaHook:
    """An :class:`~monitor.alerts.AlertHook` that annotates and snapshots the model's Grafana dashboard.

    Parameters
    ----------
    grafana : Grafana
        The API client (made with the token and ``timeout_s``); closed by :meth:`close`.
    config : GrafanaConfig
        The ``grafana:`` section: prefix, folder, expiry, retries, queue size.
    registry : CollectorRegistry
        Where the hook's metrics are made.
    dashboards : mapping of kind to Grafana JSON model
        The dashboards to annotate and snapshot (:func:`dashboards.build_dashboards` with the prefix).
    secret : str
        Key of the HMAC that derives snapshot keys from alert ids (the token: known to nobody else).
    profiles : mapping of ``model/version`` to Profile
        Tells a generator (a profile with LLM distributions) from a classifier and names predicted classes.
    """

    name = "grafana"

    def __init__(self, grafana: Grafana, config: GrafanaConfig, registry: CollectorRegistry,
                 dashboards: Mapping[str, Mapping[str, Any]], secret: str,
                 profiles: Mapping[str, Profile] | None = None) -> None:
        self.grafana = grafana
        self.config = config
        self.metrics = GrafanaMetrics.on(registry)
        self._dashboards = dashboards
        self._secret = secret.encode()
        profiles = profiles or {}
        self._kinds: dict[str, ModelKind] = {
            key: "generator" if p.llm is not None else "classifier" for key, p in profiles.items()}
        self._classes = {key: tuple(p.class_labels) for key, p in profiles.items()}
        self._ready: set[str] = set()  # dashboard uids known to be in Grafana
        self._worker = HookWorker("inferwatch-grafana", self._send, queue_size=config.queue_size,
                                  dropped=self._dropped, depth=self._depth)

    # -- AlertHook -----------------------------------------------------------------------------------------
    def links(self, alert: Alert) -> dict[str, str]:
        """The snapshot this hook will make (firing notifications of a window) and, unless the alert has one,
        a dashboard link to the model's dashboard over the window's time range."""
        out = {}
        if alert.status == "firing" and alert.has_window:
            out["snapshot"] = f"{self.grafana.url}/dashboard/snapshot/{self.snapshot_key(alert)}"
        if not alert.links.get("dashboard"):
            query = urlencode({"var-model": alert.model, "var-version": alert.version,
                               "from": int(alert.window_start * 1000), "to": int(alert.window_end * 1000)})
            uid = self._dashboard(self.kind(f"{alert.model}/{alert.version}"))["uid"]
            out["dashboard"] = f"{self.grafana.url}/d/{uid}?{query}"
        return out

    def fired(self, alerts: Sequence[Alert], window: AlertedWindow) -> None:
        """Queue the window's notifications for the worker; the oldest queued window goes when it is full."""
        self._worker.submit(_Job(tuple(alerts), window.result))  # the result only: the rows are not kept

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued within ``min(timeout_s, close_grace_s)``; what is left then is dropped."""
        left = self._worker.close(min(timeout_s, self.config.close_grace_s), stop_wait_s=self.config.timeout_s)
        if left:
            log.warning("grafana: %d alerting window(s) not sent at shutdown", len(left))
            self.metrics.dropped.inc(len(left))
        self.grafana.close()

    # -- what the requests say -------------------------------------------------------------------------------
    def snapshot_key(self, alert: Alert) -> str:
        """The snapshot key of ``alert``'s notification: HMAC-SHA256 of its id, 32 hex digits."""
        return hmac.new(self._secret, f"snapshot\0{alert.id}".encode(), hashlib.sha256).hexdigest()[:32]

    def kind(self, model_key: str, result: WindowResult | None = None) -> ModelKind:
        """Generator when the model's profile (or else the window's results) has LLM outputs."""
        if model_key in self._kinds:
            return self._kinds[model_key]
        return "generator" if result is not None and "llm_quality" in result.results else "classifier"

    def annotation_text(self, alert: Alert) -> str:
        links = " · ".join(f'<a href="{html.escape(url)}">{html.escape(name)}</a>'
                           for name, url in alert.links.items() if url)
        text = f"<b>{html.escape(alert.title)}</b>"
        if alert.summary:
            text += f"<br>{html.escape(alert.summary)}"
        return text + (f"<br>{links}" if links else "")

    def tags(self, alert: Alert) -> list[str]:
        return ["inferwatch", f"model:{alert.model}", f"version:{alert.version}", f"detector:{alert.detector}",
                f"severity:{alert.severity}", f"status:{alert.status}"]

    def _dashboard(self, kind: ModelKind) -> Mapping[str, Any]:
        return self._dashboards[kind]

    # -- the worker --------------------------------------------------------------------------------------------
    def _depth(self, waiting: int, busy: int) -> None:
        self.metrics.queue_depth.set(waiting)

    def _dropped(self, old: _Job) -> None:
        self.metrics.dropped.inc()
        log.warning("grafana: queue full (%d windows); dropped the annotations and snapshots of window %s",
                    self.config.queue_size, old.result.window_id)

    def _send(self, job: _Job) -> None:
        result = job.result
        key = f"{result.model}/{result.version}"
        dashboard = self._dashboard(self.kind(key, result))
        uid = str(dashboard["uid"])
        if uid not in self._ready and self._request("dashboard", partial(
                ensure_dashboard, self.grafana, self.config.folder, dashboard, self.config.datasource_url), result):
            self._ready.add(uid)
        start_ms, end_ms = int(result.first_time * 1000), int(result.last_time * 1000)
        for alert in job.alerts:
            if alert.status == "firing" and alert.has_window:
                title = f"{alert.model}/{alert.version} {alert.detector} window #{alert.window}"
                snap = snapshot_dashboard(dashboard, result, title, self._classes.get(key, ()))
                self._request("snapshot", partial(self.grafana.snapshot, snap, title, self.snapshot_key(alert),
                                                  self._delete_key(alert), self.config.snapshot_expires_s), result)
            self._request("annotation", partial(self.grafana.annotate, uid, annotation_panel(dashboard, alert.detector),
                                                start_ms, end_ms, self.tags(alert), self.annotation_text(alert)),
                          result)

    def _request(self, kind: RequestKind, call: Callable[[], object], result: WindowResult) -> bool:
        """``call()`` with retries, counted; False (logged) when it failed."""
        began = time.monotonic()
        try:
            with_retries(call, self.config.max_attempts, self.config.backoff_s, stop=self._worker.stopping)
        except GrafanaError as exc:
            if kind == "snapshot" and exc.status == 409:  # an earlier attempt made it; its response was lost
                self.metrics.requests.labels(kind=kind, outcome="ok").inc()
                return True
            self.metrics.requests.labels(kind=kind, outcome="error").inc()
            log.error("grafana: %s for window %s failed after %.1f s: %s", kind, result.window_id,
                      time.monotonic() - began, exc)
            return False
        self.metrics.requests.labels(kind=kind, outcome="ok").inc()
        return True

    def _delete_key(self, alert: Alert) -> str:
        return hmac.new(self._secret, f"delete\0{alert.id}".encode(), hashlib.sha256).hexdigest()[:32]


def grafana_hook(config: GrafanaConfig, registry: CollectorRegistry, profiles: Mapping[str, Profile] | None = None,
                 environ: Mapping[str, str] = os.environ) -> GrafanaHook:
    """The hook for the ``grafana:`` section, made at start: the token read (from ``token_file`` or the
    variable ``token_env`` of ``environ``), the dashboards built with ``dashboard_uid_prefix``.

    Raises
    ------
    ConfigError
        The token cannot be read or is empty, or grafana-foundation-sdk is not installed; the message names
        the key. Grafana itself is not asked anything here: an unreachable Grafana costs requests, not the start.
    """
    from monitor.alerts.channels import read_secrets  # the channels' secret reading: same files, same messages

    tokens = read_secrets("grafana", "token", config.token_file, config.token_env, environ)
    if not tokens:
        raise ConfigError("grafana: give one of token_file, token_env (a service-account token)")
    source = (f"grafana.token_file ({config.token_file})" if config.token_file is not None
              else f"grafana.token_env ({config.token_env})")
    try:
        from dashboards import build_dashboards

        boards = build_dashboards(config.dashboard_uid_prefix)
    except ImportError as exc:
        raise ConfigError(f"grafana: {exc}") from exc
    grafana = Grafana(config.url, tokens[0], config.timeout_s, token_source=source)
    return GrafanaHook(grafana, config, registry, boards, tokens[0], profiles)
