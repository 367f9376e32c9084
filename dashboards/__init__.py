"""Grafana dashboards as code, annotations and snapshots (not built yet: see the README's roadmap)."""

from __future__ import annotations

__all__: list[str] = []
