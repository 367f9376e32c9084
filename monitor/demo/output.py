"""``inferwatch demo --out DIR``: what the demo leaves behind for a person to open.

====================  ==========================================================================================
``dashboards/``       the rendered Grafana dashboards and a file-provisioning YAML (``inferwatch dashboards render``)
``windows.jsonl``     every window result, one JSON object per line, as published on the results topic
``reports/``          the Evidently report of each alert (``reports/{model}/{version}/{window_id}.html``)
``grafana/``          the annotation and snapshot bodies each alert sent to Grafana, or would have sent
``alerts.jsonl``      every notification, as the webhook channel posts it
====================  ==========================================================================================
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from monitor.alerts import Alert, AlertHook
from monitor.config import Config, GrafanaConfig
from monitor.errors import InferwatchError
from monitor.evaluation import WindowResult, plain
from monitor.profiles import Profile

__all__ = ["DemoOutput", "RecordedGrafana"]

#: Where the demo's links point when no Grafana is given: a name that never resolves (RFC 2606).
NO_GRAFANA = "http://grafana.invalid:3000"


class DemoOutput:
    """The folder one demo run writes into; thread-safe appends (the pipeline thread writes results)."""

    def __init__(self, folder: Path, grafana_url: str | None = None, grafana_token_file: Path | None = None) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InferwatchError(f"--out {folder}: cannot create it ({exc.strerror})") from exc
        self.folder = folder
        self.grafana_url = grafana_url
        self.grafana_token_file = grafana_token_file
        self._lock = threading.Lock()
        (folder / "windows.jsonl").write_bytes(b"")
        (folder / "alerts.jsonl").write_bytes(b"")

    def window(self, result: WindowResult) -> None:
        line = msgspec.json.encode(result, enc_hook=plain) + b"\n"
        with self._lock, (self.folder / "windows.jsonl").open("ab") as f:
            f.write(line)

    def alert(self, alert: Alert) -> None:
        with self._lock, (self.folder / "alerts.jsonl").open("ab") as f:
            f.write(alert.to_json() + b"\n")

    def configure(self, config: Config) -> Config:
        """``config`` with reports written under ``reports/`` and, when ``--grafana-url`` is given, Grafana."""
        reports = msgspec.structs.replace(config.reports, dir=str(self.folder / "reports"))
        grafana = None if self.grafana_url is None else GrafanaConfig(
            url=self.grafana_url, token_file=None if self.grafana_token_file is None else str(self.grafana_token_file))
        return msgspec.structs.replace(config, reports=reports, grafana=grafana)

    def hooks(self, config: Config, registry: CollectorRegistry, profiles: Mapping[str, Profile]) -> list[AlertHook]:
        """Without ``--grafana-url``: a Grafana hook whose requests are written to ``grafana/`` instead."""
        if config.grafana is not None:
            return []
        from dashboards import build_dashboards
        from monitor.grafana import GrafanaHook

        settings = GrafanaConfig(url=NO_GRAFANA, token_env="INFERWATCH_DEMO_UNUSED")
        return [GrafanaHook(RecordedGrafana(self.folder / "grafana"), settings, registry,  # type: ignore[arg-type]
                            build_dashboards(settings.dashboard_uid_prefix), secrets.token_hex(16), profiles)]

    def summary(self) -> str:
        """What the folder holds now, one line per part."""
        def count(pattern: str) -> int:
            return sum(1 for _ in self.folder.glob(pattern))

        lines = [f"left in {self.folder}:",
                 f"  dashboards/       {count('dashboards/*.json')} dashboards + provisioning.yaml",
                 f"  windows.jsonl     {_lines(self.folder / 'windows.jsonl')} window results",
                 f"  alerts.jsonl      {_lines(self.folder / 'alerts.jsonl')} notifications",
                 f"  reports/          {count('reports/**/*.html')} Evidently reports",
                 f"  grafana/          {count('grafana/*-annotation-*.json')} annotations, "
                 f"{count('grafana/*-snapshot-*.json')} snapshots " +
                 ("(sent to " + self.grafana_url + ")" if self.grafana_url else "(recorded, not sent)")]
        return "\n".join(lines)

    def dashboards(self) -> list[Path]:
        """Render the dashboards into ``dashboards/``."""
        from dashboards import write_dashboards

        return write_dashboards(self.folder / "dashboards")


class RecordedGrafana:
    """Stands in for :class:`monitor.grafana.Grafana`: writes the body of each annotation and snapshot request
    into ``folder`` (``annotation-N.json``, ``snapshot-N.json``) instead of sending it; dashboards and the folder
    count as present."""

    def __init__(self, out: Path, url: str = NO_GRAFANA) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.url = url
        self._n = 0
        self._lock = threading.Lock()

    def folder(self, uid: str) -> dict[str, Any]:
        return {"uid": uid, "title": uid}

    def create_folder(self, uid: str, title: str) -> dict[str, Any]:
        return {"uid": uid, "title": title}

    def datasource(self, uid: str) -> dict[str, Any]:
        return {"uid": uid}

    def create_datasource(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def dashboard(self, uid: str) -> dict[str, Any]:
        return {"dashboard": {"uid": uid}, "meta": {}}

    def save_dashboard(self, dashboard: dict[str, Any], folder_uid: str, message: str,
                       overwrite: bool = True) -> dict[str, Any]:
        return {"uid": dashboard.get("uid"), "status": "success"}

    def annotate(self, dashboard_uid: str, panel_id: int | None, time_ms: int, time_end_ms: int,
                 tags: list[str], text: str) -> dict[str, Any]:
        body = {"dashboardUID": dashboard_uid, "panelId": panel_id, "time": time_ms, "timeEnd": time_end_ms,
                "tags": tags, "text": text}
        return {"id": self._write("annotation", body, tags), "message": "Annotation added (recorded by the demo)"}

    def snapshot(self, dashboard: dict[str, Any], name: str, key: str, delete_key: str,
                 expires_s: int) -> dict[str, Any]:
        body = {"dashboard": dashboard, "name": name, "expires": expires_s, "external": False, "key": key,
                "deleteKey": delete_key}
        self._write("snapshot", body, [name])
        return {"key": key, "deleteKey": delete_key, "url": f"{self.url}/dashboard/snapshot/{key}"}

    def close(self) -> None:
        pass

    def _write(self, kind: str, body: dict[str, Any], words: list[str]) -> int:
        with self._lock:
            self._n += 1
            n = self._n
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(words[1:3] if kind == "annotation" else words))[:80]
        (self.out / f"{n:03d}-{kind}-{slug}.json").write_text(json.dumps(body, indent=1, default=str))
        return n


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0
