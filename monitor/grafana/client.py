"""A thin, typed wrapper over ``grafana-client``: one method per Grafana HTTP API call inferwatch makes, a
timeout on each, and errors that say what to do.

Every failure is a :class:`GrafanaError` whose message names the Grafana URL and, for a refused token (401) or
a token without the rights (403), where the token came from. ``retryable`` marks an outage worth retrying
(connection refused or reset, timeout, 429, 5xx); a rejected request (400, 404, 409, ...) is not.
:func:`with_retries` retries those with exponential backoff.

``grafana-client`` is the ``inferwatch[grafana]`` extra; it is imported when a :class:`Grafana` is made.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from monitor.errors import InferwatchError

__all__ = ["Grafana", "GrafanaError", "with_retries"]

T = TypeVar("T")

_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+|Failed to resolve '[^']+'")

class GrafanaError(InferwatchError):
    """A Grafana API call failed; ``status`` is the HTTP status (``None`` without a response), ``retryable``
    whether trying again later may succeed (an outage rather than a refusal)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class Grafana:
    """Grafana's HTTP API at ``url`` with a service-account ``token`` (sent as ``Authorization: Bearer``).

    Parameters
    ----------
    url : str
        Grafana's root URL, e.g. ``http://grafana:3000`` or ``https://example.org/grafana``.
    token : str
        A service-account token; Editor role for dashboards, annotations and snapshots, Admin to create the
        data source.
    timeout_s : float
        Limit of each request (connect and read).
    token_source : str
        Where the token came from (``--token-file /run/secrets/grafana``), named when Grafana refuses it.
    """

    def __init__(self, url: str, token: str, timeout_s: float = 5.0, token_source: str = "the token") -> None:
        try:
            from grafana_client.api import GrafanaApi
        except ImportError as exc:
            raise InferwatchError("talking to Grafana needs grafana-client: pip install 'inferwatch[grafana]'"
                                  ) from exc
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.token_source = token_source
        # grafana-client joins its path prefix and "api" without a slash: give it one.
        self._api: Any = GrafanaApi.from_url(self.url + "/", credential=token, timeout=timeout_s)

    def __repr__(self) -> str:  # never the token
        return f"Grafana({self.url!r})"

    # -- calls -------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /api/health``: ``{database, version, ...}``; needs no token, so it says only that Grafana
        answers."""
        return self._call("the health check", lambda: self._api.client.GET("/health"))

    def folder(self, uid: str) -> dict[str, Any] | None:
        """``GET /api/folders/:uid``; ``None`` when there is none."""
        return self._lookup(f"folder {uid}", lambda: self._api.folder.get_folder(uid))

    def create_folder(self, uid: str, title: str) -> dict[str, Any]:
        return self._call(f"creating folder {title!r}", lambda: self._api.folder.create_folder(title, uid=uid))

    def datasource(self, uid: str) -> dict[str, Any] | None:
        """``GET /api/datasources/uid/:uid``; ``None`` when there is none."""
        return self._lookup(f"data source {uid}", lambda: self._api.datasource.get_datasource_by_uid(uid))

    def create_datasource(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(f"creating data source {body.get('name')!r}",
                          lambda: self._api.datasource.create_datasource(body))

    def dashboard(self, uid: str) -> dict[str, Any] | None:
        """``GET /api/dashboards/uid/:uid``: ``{dashboard, meta}``; ``None`` when there is none."""
        return self._lookup(f"dashboard {uid}", lambda: self._api.dashboard.get_dashboard(uid))

    def save_dashboard(self, dashboard: dict[str, Any], folder_uid: str, message: str,
                       overwrite: bool = True) -> dict[str, Any]:
        """``POST /api/dashboards/db``: ``{id, uid, url, status, version, slug}``."""
        body = {"dashboard": dashboard, "folderUid": folder_uid, "overwrite": overwrite, "message": message}
        return self._call(f"saving dashboard {dashboard.get('uid')}",
                          lambda: self._api.dashboard.update_dashboard(body))

    def annotate(self, dashboard_uid: str, panel_id: int | None, time_ms: int, time_end_ms: int,
                 tags: list[str], text: str) -> dict[str, Any]:
        """``POST /api/annotations`` (a region from ``time_ms`` to ``time_end_ms``): ``{message, id}``."""
        return self._call(f"annotating dashboard {dashboard_uid}", lambda: self._api.annotations.add_annotation(
            dashboard_uid=dashboard_uid, panel_id=panel_id, time_from=time_ms, time_to=time_end_ms, tags=tags,
            text=text))

    def snapshot(self, dashboard: dict[str, Any], name: str, key: str, delete_key: str,
                 expires_s: int) -> dict[str, Any]:
        """``POST /api/snapshots``, always local (``external: false``: the data never leaves this Grafana);
        ``expires_s`` 0 keeps it forever. Returns ``{key, deleteKey, url, deleteUrl, id}``."""
        return self._call(f"creating snapshot {name!r}", lambda: self._api.snapshots.create_new_snapshot(
            dashboard=dashboard, name=name, expires=expires_s or None, external=False, key=key,
            delete_key=delete_key))

    def close(self) -> None:
        self._api.client.s.close()

    # -- errors ------------------------------------------------------------------------------------------
    def _lookup(self, what: str, call: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            return self._call(what, call)
        except GrafanaError as exc:
            if exc.status == 404:
                return None
            raise

    def _call(self, what: str, call: Callable[[], Any]) -> dict[str, Any]:
        from grafana_client.client import GrafanaException, GrafanaTimeoutError

        try:
            out = call()
        except GrafanaTimeoutError as exc:
            raise GrafanaError(f"Grafana at {self.url} did not answer {what} within {self.timeout_s:g} s",
                               retryable=True) from exc
        except GrafanaException as exc:
            raise self._refused(what, exc.status_code, exc.response) from exc
        except OSError as exc:  # niquests' ConnectionError and friends; refused, reset, DNS
            errno = _ERRNO.search(str(exc))  # the cause, deep inside urllib3's "Max retries exceeded" text
            raise GrafanaError(f"cannot reach Grafana at {self.url} ({what}): "
                               f"{errno.group(0) if errno else _short(str(exc))}", retryable=True) from exc
        if not isinstance(out, dict):
            raise GrafanaError(f"Grafana at {self.url} answered {what} with {_short(repr(out), 100)}, not a JSON "
                               "object: is this URL Grafana's root?")
        return out

    def _refused(self, what: str, status: int, response: object) -> GrafanaError:
        message = response.get("message") if isinstance(response, dict) else response
        detail = _short(str(message or ""))
        if status == 0:  # no response at all
            return GrafanaError(f"cannot reach Grafana at {self.url} ({what}): {detail}", retryable=True)
        if status == 401:
            return GrafanaError(f"Grafana at {self.url} refused the token from {self.token_source} (401 "
                                f"Unauthorized: {detail or 'invalid token'}); is it a current service-account "
                                "token of this Grafana?", status)
        if status == 403:
            return GrafanaError(f"the token from {self.token_source} may not do {what} on {self.url} (403 "
                                f"Forbidden: {detail}); give its service account the Editor role (Admin to create "
                                "a data source)", status)
        return GrafanaError(f"Grafana at {self.url} answered {status} to {what}: {detail}", status,
                            retryable=status == 429 or status >= 500)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def with_retries(call: Callable[[], T], max_attempts: int, backoff_s: float, max_backoff_s: float = 30.0,
                 stop: threading.Event | None = None) -> T:
    """``call()``, tried again after a retryable :class:`GrafanaError` up to ``max_attempts`` times in all,
    waiting ``backoff_s``, then twice as long each time (at most ``max_backoff_s``). A set ``stop`` ends the
    waiting early and re-raises the last error."""
    stop = stop if stop is not None else threading.Event()
    attempt = 1
    while True:
        try:
            return call()
        except GrafanaError as exc:
            if (not exc.retryable or attempt >= max_attempts
                    or stop.wait(min(backoff_s * 2 ** (attempt - 1), max_backoff_s))):
                raise
        attempt += 1
