"""Grafana: dashboards pushed over the API, and an annotation and a snapshot on every alert.

* :mod:`~monitor.grafana.client` — :class:`Grafana`, a thin wrapper over ``grafana-client`` with timeouts and
  clear errors (:class:`GrafanaError`), and :func:`with_retries`.
* :mod:`~monitor.grafana.provision` — :func:`push_dashboards` (``inferwatch dashboards push``), idempotent.
* :mod:`~monitor.grafana.snapshot` — a window's exported series as Grafana data frames in a dashboard copy.
* :mod:`~monitor.grafana.annotate` — :class:`GrafanaHook`, the alert hook the ``grafana:`` config section adds.

``grafana-client`` and ``grafana-foundation-sdk`` are the ``inferwatch[grafana]`` extra; they are imported
when a client is made or dashboards are built, never at import of this package.
"""

from __future__ import annotations

from monitor.grafana.annotate import GrafanaHook, GrafanaMetrics, annotation_panel, grafana_hook
from monitor.grafana.client import Grafana, GrafanaError, with_retries
from monitor.grafana.provision import DATASOURCE_UID, Pushed, PushSummary, ensure_dashboard, folder_uid, push_dashboards
from monitor.grafana.snapshot import Series, snapshot_dashboard, window_series

__all__ = [
    "DATASOURCE_UID",
    "Grafana",
    "GrafanaError",
    "GrafanaHook",
    "GrafanaMetrics",
    "PushSummary",
    "Pushed",
    "Series",
    "annotation_panel",
    "ensure_dashboard",
    "folder_uid",
    "grafana_hook",
    "push_dashboards",
    "snapshot_dashboard",
    "window_series",
    "with_retries",
]
