"""Grafana dashboards as code: a classifier, a generator and a fleet dashboard over inferwatch's metrics.

The dashboards are built with ``grafana-foundation-sdk`` (the ``inferwatch[grafana]`` extra, which pins its
Grafana 11.6 build) and handed out as the plain JSON model Grafana's HTTP API and its file provisioning take.
Every query reads the Prometheus picked in the dashboard's ``datasource`` variable; ``model`` and ``version``
come from ``inferwatch_model_info``.

================  ==============================================================================================
``classifier``    traffic; latency total vs GPU (p50/p95/p99); predicted-class mix against the reference; drift
                  per feature (table and status history); accuracy from labels vs estimated (CBPE) with its
                  band; detector state and alerts
``generator``     time to first token, time per output token, request duration; tokens/s; output length; mean
                  log-probability; acceptance, refusal and empty rates; prompt drift (embedding MMD²); alerts
``fleet``         every watched model at a glance; daemon health (build, consumer lag, rejections, dead
                  letters, evaluation time, detector errors, alert delivery); collector drops, spool fill,
                  sidecar traffic; GPU utilisation, memory, power and temperature (NVML)
================  ==============================================================================================

Two ways to put them in a Grafana:

- ``inferwatch dashboards render --out DIR`` calls :func:`write_dashboards`: ``DIR/{kind}.json`` and a file
  provisioning config ``DIR/provisioning.yaml``. Copy that YAML into Grafana's ``provisioning/dashboards/``
  (or mount both from one ConfigMap, with ``options.path`` where the JSON files are mounted).
- ``inferwatch dashboards push --url URL --token-file F [--folder NAME]`` posts :func:`build_dashboards`'s
  models to Grafana's API with a service-account token of Editor role.

Examples
--------
>>> dashboard_uid("generator")
'inferwatch-generator'
>>> dashboard_uid("fleet", prefix="staging")
'staging-fleet'
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from monitor.errors import ConfigError

__all__ = ["KINDS", "build_dashboards", "dashboard_uid", "panel_queries", "write_dashboards"]

KINDS = ("classifier", "generator", "fleet")

_UID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def dashboard_uid(kind: str, prefix: str = "inferwatch") -> str:
    """The Grafana uid of one dashboard, ``{prefix}-{kind}``: at most 40 characters of ``[A-Za-z0-9_-]``."""
    if kind not in KINDS:
        raise ConfigError(f"unknown dashboard kind {kind!r}: one of {', '.join(KINDS)}")
    uid = f"{prefix}-{kind}"
    if not _UID.fullmatch(uid):
        raise ConfigError(f"dashboard prefix {prefix!r} gives the uid {uid!r}: Grafana takes at most 40 "
                          "characters of letters, digits, '-' and '_'")
    return uid


def build_dashboards(prefix: str = "inferwatch") -> dict[str, dict[str, Any]]:
    """Each dashboard's Grafana JSON model, by kind (:data:`KINDS`); uids from :func:`dashboard_uid`."""
    try:
        from dashboards.classifier import classifier_dashboard
        from dashboards.fleet import fleet_dashboard
        from dashboards.generator import generator_dashboard
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("grafana_foundation_sdk"):
            raise
        raise ImportError("dashboards need grafana-foundation-sdk: pip install 'inferwatch[grafana]'") from exc
    builders = {"classifier": classifier_dashboard, "generator": generator_dashboard, "fleet": fleet_dashboard}
    return {kind: builders[kind](dashboard_uid(kind, prefix)) for kind in KINDS}


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[int, str, str]]:
    """``(panel id, refId, PromQL)`` of every query of ``dashboard``'s panels (those inside collapsed rows
    included), in panel order."""
    out = []
    for panel in dashboard.get("panels", []):
        for p in (panel, *panel.get("panels", [])):
            for target in p.get("targets", []):
                out.append((int(p["id"]), str(target["refId"]), str(target["expr"])))
    return out


def write_dashboards(out_dir: Path, prefix: str = "inferwatch", folder: str = "inferwatch") -> list[Path]:
    """Write ``{kind}.json`` for each dashboard and ``provisioning.yaml``, a Grafana dashboard provider of
    type ``file`` that loads them from ``out_dir`` into ``folder``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, model in build_dashboards(prefix).items():
        path = out_dir / f"{kind}.json"
        path.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")
        written.append(path)
    provider = {"name": prefix, "orgId": 1, "folder": folder, "type": "file", "disableDeletion": False,
                "allowUiUpdates": False, "updateIntervalSeconds": 60,
                "options": {"path": str(out_dir.resolve()), "foldersFromFilesStructure": False}}
    path = out_dir / "provisioning.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": 1, "providers": [provider]}, sort_keys=False))
    written.append(path)
    return written
