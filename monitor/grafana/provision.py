"""Put inferwatch's dashboards into a Grafana over its API, idempotently: run it twice and Grafana holds the
same folder, the same data source and the same dashboards (same uids, one version more each).

:func:`push_dashboards` is ``inferwatch dashboards push``; :func:`ensure_dashboard` is what the daemon's
Grafana hook does before it first annotates a dashboard that may not be there (it creates, never overwrites).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from monitor.grafana.client import Grafana, GrafanaError

__all__ = ["DATASOURCE_UID", "PushSummary", "Pushed", "ensure_dashboard", "folder_uid", "push_dashboards"]

#: The uid of the Prometheus data source made by ``--datasource-url`` (``datasource_url`` in the config).
DATASOURCE_UID = "inferwatch-prometheus"

Action = Literal["created", "updated", "exists", "skipped"]


@dataclass(frozen=True)
class Pushed:
    """One dashboard after a push: its uid, whether it was new, and Grafana's version and URL of it."""

    kind: str
    uid: str
    action: Action
    version: int
    url: str


@dataclass(frozen=True)
class PushSummary:
    """What a push did: the folder and the data source (``skipped``: none was asked for) and each dashboard."""

    folder_uid: str
    folder: Action
    datasource: Action
    dashboards: tuple[Pushed, ...]


def folder_uid(title: str) -> str:
    """The uid of the folder titled ``title``: the title with everything but letters, digits, ``-`` and ``_``
    replaced by ``-``, at most 40 characters, so that the same title always finds the same folder.

    >>> folder_uid("ML monitoring / prod")
    'ML-monitoring---prod'
    """
    uid = re.sub(r"[^A-Za-z0-9_-]", "-", title.strip())[:40]
    if not uid.strip("-"):
        raise GrafanaError(f"folder name {title!r} has no letters or digits to make a uid of")
    return uid


def push_dashboards(grafana: Grafana, folder: str, dashboards: Mapping[str, dict[str, Any]],
                    datasource_url: str | None = None, message: str = "inferwatch dashboards push") -> PushSummary:
    """Make the folder titled ``folder`` if it is missing, the Prometheus data source ``inferwatch-prometheus``
    at ``datasource_url`` if one is given and missing, and save every dashboard of ``dashboards`` (kind →
    Grafana JSON model) into the folder, overwriting the one of the same uid.

    Raises
    ------
    GrafanaError
        Grafana cannot be reached, refuses the token, or rejects a request; the message says which.
    """
    grafana.health()  # reachable at all: a clear error before anything else is tried
    uid, folder_action = _folder(grafana, folder)
    datasource = _datasource(grafana, datasource_url) if datasource_url else "skipped"
    pushed = []
    for kind, dashboard in dashboards.items():
        existing = grafana.dashboard(str(dashboard["uid"]))
        saved = grafana.save_dashboard(dashboard, uid, message, overwrite=True)
        pushed.append(Pushed(kind, str(saved.get("uid", dashboard["uid"])),
                             "updated" if existing is not None else "created", int(saved.get("version", 0)),
                             grafana.url + str(saved.get("url", ""))))
    return PushSummary(uid, folder_action, datasource, tuple(pushed))


def ensure_dashboard(grafana: Grafana, folder: str, dashboard: Mapping[str, Any],
                     datasource_url: str | None = None) -> Action:
    """Save ``dashboard`` into ``folder`` unless Grafana already has its uid (then it is left as it is, with
    whatever a person changed in it): ``created`` or ``exists``."""
    if grafana.dashboard(str(dashboard["uid"])) is not None:
        return "exists"
    uid, _ = _folder(grafana, folder)
    if datasource_url:
        _datasource(grafana, datasource_url)
    try:
        grafana.save_dashboard(dict(dashboard), uid, "created by the inferwatch daemon on its first alert",
                               overwrite=False)
    except GrafanaError as exc:
        if exc.status != 412:  # 412: someone saved it meanwhile, and theirs stays
            raise
        return "exists"
    return "created"


def _folder(grafana: Grafana, title: str) -> tuple[str, Action]:
    uid = folder_uid(title)
    if grafana.folder(uid) is not None:
        return uid, "exists"
    try:
        grafana.create_folder(uid, title)
    except GrafanaError as exc:
        if exc.status not in (409, 412) or grafana.folder(uid) is None:  # not a race with another pusher
            raise
        return uid, "exists"
    return uid, "created"


def _datasource(grafana: Grafana, url: str) -> Action:
    if grafana.datasource(DATASOURCE_UID) is not None:
        return "exists"
    body = {"name": "Prometheus (inferwatch)", "type": "prometheus", "url": url, "access": "proxy",
            "uid": DATASOURCE_UID, "isDefault": False, "jsonData": {"httpMethod": "POST"}}
    try:
        grafana.create_datasource(body)
    except GrafanaError as exc:
        if exc.status == 409:
            raise GrafanaError(f"{exc}: a data source named {body['name']!r} exists with another uid than "
                               f"{DATASOURCE_UID}; rename or delete it, or leave out the data source URL",
                               exc.status) from exc
        raise
    return "created"
