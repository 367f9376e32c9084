"""A stand-in for Grafana's HTTP API on 127.0.0.1, for the one service the tests cannot run here.

It serves exactly the documented endpoints inferwatch uses, with Grafana's documented responses, and checks
the contract rather than answering canned success: the bearer token (401 otherwise, except ``/api/health``,
which Grafana serves without one), the method (405), the path (404), and the body's shape (400 with the
reason). Every dashboard it is sent, saved or inside a snapshot, must round-trip through the Grafana Foundation
SDK's ``Dashboard`` model; a snapshot must be local (``external: false``) and carry its panels' data as data
frames. State lives in memory (folders, data sources, versioned dashboards, annotations, snapshots) and every
request is recorded for assertions.

==========  ==================================  ==============================================================
GET         /api/health                         ``{database: "ok", version}``
GET, POST   /api/folders                        list; create ``{uid, title}`` (409 when uid or title exists)
GET         /api/folders/:uid                   the folder, or 404
GET, POST   /api/datasources                    list; create ``{name, type, url, access, uid}`` (409: name/uid)
GET         /api/datasources/uid/:uid           the data source, or 404
POST        /api/dashboards/db                  ``{dashboard, folderUid, overwrite, message}`` (412: exists and
                                                not overwrite) → ``{id, uid, url, status, version, slug}``
GET         /api/dashboards/uid/:uid            ``{dashboard, meta}``, or 404
GET, POST   /api/annotations                    list; ``{dashboardUID, panelId, time, timeEnd, tags, text}`` →
                                                ``{message, id}``
POST        /api/snapshots                      ``{dashboard, name, expires, external, key, deleteKey}`` →
                                                ``{key, deleteKey, url, deleteUrl, id}`` (409: key exists)
GET         /api/snapshots/:key                 ``{dashboard, meta}``, or 404
==========  ==================================  ==============================================================
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TOKEN = "glsa_inferwatchTestToken_0123456789abcdef"
VERSION = "11.6.0"
_UID = re.compile(r"[A-Za-z0-9_-]{1,40}")


class Refused(Exception):
    """An answer other than 200: status and Grafana's ``{"message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str | None
    body: Any
    status: int


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _check(condition: bool, message: str, status: int = 400) -> None:
    if not condition:
        raise Refused(status, message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_dashboard(dashboard: Any, where: str = "dashboard") -> None:
    """A Grafana JSON model that the SDK's ``Dashboard`` reads and writes back unchanged in what matters: uid,
    title, panels (id, type, queries) and variables."""
    _check(isinstance(dashboard, dict), f"{where} must be a JSON object")
    _check(isinstance(dashboard.get("title"), str) and dashboard["title"].strip() != "", f"{where}.title is required")
    uid = dashboard.get("uid")
    _check(uid is None or (isinstance(uid, str) and _UID.fullmatch(uid) is not None), f"{where}.uid is invalid")
    panels = dashboard.get("panels", [])
    _check(isinstance(panels, list), f"{where}.panels must be a list")
    for p in panels:
        _check(isinstance(p, dict) and _is_int(p.get("id")) and isinstance(p.get("type"), str),
               f"{where}.panels: every panel needs an integer id and a type")
        _check(isinstance(p.get("gridPos", {}), dict), f"{where}.panels[{p.get('id')}].gridPos must be an object")
        _check(isinstance(p.get("targets", []), list), f"{where}.panels[{p.get('id')}].targets must be a list")
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()
    try:
        back = json.loads(JSONEncoder().encode(Dashboard.from_json(dashboard)))
    except Exception as exc:  # the SDK raises whatever its parsing hits
        raise Refused(400, f"{where} does not parse as a Grafana dashboard model: {exc!r}") from exc

    def shape(d: dict[str, Any]) -> list[tuple[Any, ...]]:
        out = []
        for p in d.get("panels") or []:
            for q in (p, *(p.get("panels") or [])):
                out.append((q.get("id"), q.get("type"), [t.get("expr") for t in q.get("targets") or []]))
        return out

    _check((back.get("uid"), back.get("title")) == (dashboard.get("uid"), dashboard.get("title")),
           f"{where}: uid or title changed on the SDK round trip")
    _check(shape(back) == shape(dashboard), f"{where}: panels changed on the SDK round trip")
    names = [v.get("name") for v in (back.get("templating") or {}).get("list") or []]
    _check(names == [v.get("name") for v in (dashboard.get("templating") or {}).get("list") or []],
           f"{where}: variables changed on the SDK round trip")


def check_frames(panel: dict[str, Any], where: str) -> None:
    """``snapshotData``: Grafana data frames, ``{name, refId, fields: [{name, type, values}]}``, fields of one
    length."""
    frames = panel.get("snapshotData")
    _check(isinstance(frames, list), f"{where}.snapshotData must be a list of data frames")
    for frame in frames:
        _check(isinstance(frame, dict) and isinstance(frame.get("fields"), list) and frame["fields"] != [],
               f"{where}: a data frame needs fields")
        lengths = set()
        for field in frame["fields"]:
            _check(isinstance(field, dict) and isinstance(field.get("name"), str)
                   and field.get("type") in ("time", "number", "string", "boolean")
                   and isinstance(field.get("values"), list), f"{where}: a field needs name, type and values")
            lengths.add(len(field["values"]))
        _check(len(lengths) == 1, f"{where}: the fields of a frame differ in length")


class FakeGrafana:
    """The server; ``url`` is its root. ``fail_next(n)`` answers the next ``n`` authorised requests 503."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> {dashboard, folderUid, version, id, message}
        self.annotations: list[dict[str, Any]] = []
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self._ids = 0
        self._failures = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self._routes: list[tuple[re.Pattern[str], dict[str, Callable[..., Any]]]] = [
            (re.compile(r"/api/health"), {"GET": self._health}),
            (re.compile(r"/api/folders"), {"GET": lambda _: list(self.folders.values()), "POST": self._new_folder}),
            (re.compile(r"/api/folders/([^/]+)"), {"GET": lambda _, uid: self._get(self.folders, uid, "folder")}),
            (re.compile(r"/api/datasources"), {"GET": lambda _: list(self.datasources.values()),
                                               "POST": self._new_datasource}),
            (re.compile(r"/api/datasources/uid/([^/]+)"),
             {"GET": lambda _, uid: self._get(self.datasources, uid, "Data source")}),
            (re.compile(r"/api/dashboards/db"), {"POST": self._save_dashboard}),
            (re.compile(r"/api/dashboards/uid/([^/]+)"), {"GET": self._get_dashboard}),
            (re.compile(r"/api/annotations"), {"GET": lambda _: self.annotations, "POST": self._annotate}),
            (re.compile(r"/api/snapshots"), {"POST": self._snapshot}),
            (re.compile(r"/api/snapshots/([^/]+)"), {"GET": lambda _, key: self._get(self.snapshots, key,
                                                                                      "Snapshot")}),
        ]

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._failures = n

    def close(self) -> None:
        """Stop serving and close the port: Grafana is down."""
        self.server.shutdown()
        self.server.server_close()

    def of(self, path: str, method: str = "POST") -> list[Request]:
        """The recorded requests to ``path`` with ``method``."""
        return [r for r in list(self.requests) if r.path == path and r.method == method]

    # -- dispatch ------------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        auth = h.headers.get("Authorization")
        body: Any = None
        status, answer = 200, None
        try:
            length = int(h.headers.get("Content-Length") or 0)
            raw = h.rfile.read(length) if length else b""
            if method in ("POST", "PUT"):
                _check(h.headers.get("Content-Type", "").startswith("application/json"),
                       "Content-Type must be application/json")
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise Refused(400, f"bad request data: {exc}") from exc
            for pattern, methods in self._routes:
                match = pattern.fullmatch(path)
                if match is None:
                    continue
                if method not in methods:
                    raise Refused(405, f"method {method} not allowed on {path}")
                if path != "/api/health" and auth != f"Bearer {self.token}":
                    raise Refused(401, "Invalid API key")
                with self._lock:
                    if self._failures > 0:
                        self._failures -= 1
                        raise Refused(503, "fake outage")
                    answer = methods[method](body, *match.groups())
                break
            else:
                raise Refused(404, "Not found")
        except Refused as exc:
            status, answer = exc.status, {"message": exc.message}
        self.requests.append(Request(method, path, auth, body, status))
        data = json.dumps(answer).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    @staticmethod
    def _get(store: dict[str, dict[str, Any]], key: str, what: str) -> dict[str, Any]:
        _check(key in store, f"{what} not found", 404)
        return store[key]

    # -- endpoints -----------------------------------------------------------------------------------------
    def _health(self, _: Any) -> dict[str, Any]:
        return {"commit": "fake", "database": "ok", "version": VERSION}

    def _new_folder(self, body: Any) -> dict[str, Any]:
        _check(isinstance(body, dict) and set(body) <= {"uid", "title", "parentUid", "description"},
               "folder: unknown fields")
        title, uid = body.get("title"), body.get("uid") or f"f{self._ids + 1}"
        _check(isinstance(title, str) and title.strip() != "", "folder title cannot be empty")
        _check(isinstance(uid, str) and _UID.fullmatch(uid) is not None, "uid contains illegal characters")
        _check(uid not in self.folders, "a folder with the same uid already exists", 409)
        _check(all(f["title"] != title for f in self.folders.values()), "a folder with the same name already "
               "exists", 409)
        folder = {"id": self._next_id(), "uid": uid, "title": title, "url": f"/dashboards/f/{uid}/{_slug(title)}",
                  "version": 1, "hasAcl": False, "canSave": True}
        self.folders[uid] = folder
        return folder

    def _new_datasource(self, body: Any) -> dict[str, Any]:
        _check(isinstance(body, dict), "data source must be a JSON object")
        name, kind, url = body.get("name"), body.get("type"), body.get("url")
        _check(isinstance(name, str) and name != "" and isinstance(kind, str) and kind != "",
               "name and type are required")
        _check(kind != "prometheus" or (isinstance(url, str) and url.startswith(("http://", "https://"))),
               "a prometheus data source needs an http(s) url")
        _check(body.get("access", "proxy") in ("proxy", "direct"), "access must be proxy or direct")
        _check(all(d["name"] != name for d in self.datasources.values()),
               "data source with the same name already exists", 409)
        uid = body.get("uid") or f"ds{self._ids + 1}"
        _check(uid not in self.datasources, "data source with the same uid already exists", 409)
        datasource = {**body, "id": self._next_id(), "uid": uid, "access": body.get("access", "proxy")}
        self.datasources[uid] = datasource
        return {"datasource": datasource, "id": datasource["id"], "message": "Datasource added", "name": name}

    def _save_dashboard(self, body: Any) -> dict[str, Any]:
        _check(isinstance(body, dict) and set(body) <= {"dashboard", "folderUid", "folderId", "overwrite",
                                                         "message"}, "dashboards/db: unknown fields")
        _check(isinstance(body.get("overwrite", False), bool), "overwrite must be a boolean")
        _check(isinstance(body.get("message", ""), str), "message must be a string")
        dashboard = body.get("dashboard")
        check_dashboard(dashboard)
        folder = body.get("folderUid", "")
        _check(folder in ("", None) or folder in self.folders, "folder not found", 400)
        uid = dashboard.get("uid") or f"d{self._ids + 1}"
        saved = self.dashboards.get(uid)
        _check(saved is None or body.get("overwrite") is True, "A dashboard with the same uid already exists", 412)
        version = 1 if saved is None else saved["version"] + 1
        ident = self._next_id() if saved is None else saved["id"]
        self.dashboards[uid] = {"dashboard": {**dashboard, "uid": uid, "id": ident, "version": version},
                                "folderUid": folder, "version": version, "id": ident,
                                "message": body.get("message", "")}
        slug = _slug(dashboard["title"])
        return {"id": ident, "uid": uid, "url": f"/d/{uid}/{slug}", "status": "success", "version": version,
                "slug": slug}

    def _get_dashboard(self, _: Any, uid: str) -> dict[str, Any]:
        saved = self._get(self.dashboards, uid, "Dashboard")
        return {"dashboard": saved["dashboard"], "meta": {"folderUid": saved["folderUid"],
                                                          "version": saved["version"], "slug": _slug(
                                                              saved["dashboard"]["title"])}}

    def _annotate(self, body: Any) -> dict[str, Any]:
        _check(isinstance(body, dict) and set(body) <= {"dashboardUID", "dashboardId", "panelId", "time", "timeEnd",
                                                         "tags", "text", "data"}, "annotation: unknown fields")
        text, start, end = body.get("text"), body.get("time"), body.get("timeEnd", body.get("time"))
        _check(isinstance(text, str) and text.strip() != "", "Failed to save annotation: text is required")
        _check(_is_int(start) and _is_int(end), "time and timeEnd must be integers (epoch milliseconds)")
        _check(start >= 10**12 and end >= start, "time must be epoch milliseconds and timeEnd not before it")
        uid = body.get("dashboardUID")
        _check(isinstance(uid, str) and uid in self.dashboards, "Invalid dashboard UID in annotation request")
        panel = body.get("panelId")
        ids = [p["id"] for p in self.dashboards[uid]["dashboard"].get("panels", [])]
        _check(panel is None or panel in ids, f"panelId {panel} is not a panel of dashboard {uid}")
        tags = body.get("tags", [])
        _check(isinstance(tags, list) and all(isinstance(t, str) for t in tags), "tags must be strings")
        ident = self._next_id()
        self.annotations.append({**body, "id": ident})
        return {"message": "Annotation added", "id": ident}

    def _snapshot(self, body: Any) -> dict[str, Any]:
        _check(isinstance(body, dict) and set(body) <= {"dashboard", "name", "expires", "external", "key",
                                                         "deleteKey"}, "snapshot: unknown fields")
        _check(body.get("external") is False, "REFUSED: an external snapshot would publish the data outside this "
                                              "Grafana; inferwatch must send external: false")
        dashboard = body.get("dashboard")
        check_dashboard(dashboard, "snapshot dashboard")
        _check(dashboard.get("panels", []) != [], "snapshot dashboard has no panels")
        for p in dashboard["panels"]:
            if p.get("type") != "row":
                check_frames(p, f"snapshot panel {p['id']}")
        _check(_is_int(body.get("expires", 0)) and body.get("expires", 0) >= 0, "expires must be seconds >= 0")
        key, delete_key = body.get("key"), body.get("deleteKey")
        _check(isinstance(key, str) and key != "" and isinstance(delete_key, str) and delete_key != "",
               "key and deleteKey must be strings")
        _check(key not in self.snapshots, "snapshot with the same key already exists", 409)
        ident = self._next_id()
        self.snapshots[key] = {"dashboard": dashboard, "meta": {"name": body.get("name", ""), "external": False,
                                                                "expires": body.get("expires", 0), "id": ident,
                                                                "deleteKey": delete_key}}
        return {"key": key, "deleteKey": delete_key, "url": f"{self.url}/dashboard/snapshot/{key}",
                "deleteUrl": f"{self.url}/api/snapshots-delete/{delete_key}", "id": ident}


@pytest.fixture(name="fake_grafana")
def fake_grafana_fixture() -> Iterator[FakeGrafana]:
    """A running :class:`FakeGrafana` whose token is :data:`TOKEN`; closed afterwards."""
    fake = FakeGrafana()
    try:
        yield fake
    finally:
        fake.close()
