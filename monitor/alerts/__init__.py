"""Alerting: rules and lifecycle over window findings, state that survives restarts, and channels that deliver.

* :mod:`~monitor.alerts.rules` — k-of-n firing, repeats, resolution, ``no_data``; per (model, version, rule).
* :mod:`~monitor.alerts.state` / :mod:`~monitor.alerts.topic_state` — the state in a file or a compacted topic.
* :mod:`~monitor.alerts.delivery` — one bounded queue and worker per channel, retries, dead letters, metrics.
* one module per channel format: :mod:`~monitor.alerts.webhook` (Standard Webhooks signatures),
  :mod:`~monitor.alerts.slack`, :mod:`~monitor.alerts.alertmanager`, :mod:`~monitor.alerts.pagerduty`.
* :mod:`~monitor.alerts.hooks` — links and work added to each alert (reports, Grafana annotations).
* :mod:`~monitor.alerts.service` — what the pipeline calls.

It depends on window findings and the config, never on the daemon's metrics module.
"""

from monitor.alerts.channels import Channel, MemoryChannel, build_channels
from monitor.alerts.delivery import AlertMetrics, Delivery
from monitor.alerts.hooks import AlertedWindow, AlertHook, HookWorker
from monitor.alerts.notification import Alert
from monitor.alerts.rules import AlertRules, Observation
from monitor.alerts.service import Alerting
from monitor.alerts.state import FileStore, MemoryStore, StateStore
from monitor.detection.base import Evidence

__all__ = ["Alert", "AlertHook", "AlertMetrics", "AlertRules", "AlertedWindow", "Alerting", "Channel", "Delivery",
           "Evidence", "FileStore", "HookWorker", "MemoryChannel", "MemoryStore", "Observation", "StateStore",
           "build_channels"]
