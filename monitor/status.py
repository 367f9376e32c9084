"""The status page (``GET /`` on the daemon's port): what a user of the embedded default looks at.

One server-rendered HTML page, no build step, no script, no external asset: the watched models, each model's
last windows with a verdict per detector, the alerts that fire now, and links to their reports, snapshots and
dashboards. :class:`StatusBoard` keeps what the page shows, bounded (the last ``keep`` windows per model); it is
fed from the pipeline's ``on_result`` callback and read by the HTTP server's thread, under one lock.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from monitor.alerts.notification import Alert
from monitor.evaluation import WindowResult

__all__ = ["StatusBoard", "WatchedModelInfo", "WindowRow", "favicon", "render_status"]

#: Verdicts in a window row, worst first (the order the page sorts a model's summary by).
VERDICTS = ("failed", "drift", "insufficient", "ok")


@dataclass(frozen=True)
class WatchedModelInfo:
    """A configured model as the page names it: ``training_run`` as configured (a URI or free text), and
    ``training_run_url`` the run's page when known (:func:`monitor.runs.run_url`), which the name links to;
    ``variant`` (A/B, canary) and ``compare_with``, the peer version its windows are compared with, when set."""

    model: str
    version: str
    profile: str
    training_run: str | None = None
    training_run_url: str = ""
    variant: str | None = None
    compare_with: str | None = None


@dataclass(frozen=True)
class WindowRow:
    """One closed window: its identity and one verdict per detector (``ok``, ``drift``, ``insufficient`` or
    ``failed``) with the detector's one-line summary."""

    window_id: str
    index: int
    n_events: int
    first_time: float
    last_time: float
    closed_by: str
    verdicts: tuple[tuple[str, str, str], ...]  # (detector, verdict, summary)

    @classmethod
    def of(cls, result: WindowResult) -> WindowRow:
        verdicts = [(f.detector, "drift" if f.drifted else "insufficient" if f.insufficient else "ok", f.summary)
                    for f in result.findings]
        verdicts += [(f.detector, "failed", f.error) for f in result.failures]
        return cls(result.window_id, result.index, result.n_events, result.first_time, result.last_time,
                   result.closed_by, tuple(verdicts))


class StatusBoard:
    """The last ``keep`` windows of every model (thread-safe; bounded by models × ``keep``).

    Parameters
    ----------
    models : the configured models, in the order the page lists them.
    firing : returns the alerts that fire now (the alert rules' state).
    dashboard_url : a template linked from each model (``{model}``, ``{version}``), optional.
    keep : windows kept per model.
    clock : wall-clock seconds (the page's "updated" time and ages).
    """

    def __init__(self, models: Sequence[WatchedModelInfo], firing: Callable[[], Iterable[Alert]] = tuple,
                 dashboard_url: str | None = None, keep: int = 12, clock: Callable[[], float] = time.time) -> None:
        self.models = list(models)
        self._firing = firing
        self._dashboard_url = dashboard_url
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], deque[WindowRow]] = {
            (m.model, m.version): deque(maxlen=keep) for m in self.models}
        self._counts: dict[tuple[str, str], int] = dict.fromkeys(self._windows, 0)

    def add(self, result: WindowResult) -> None:
        """Record one window result (the pipeline's ``on_result``)."""
        key = (result.model, result.version)
        row = WindowRow.of(result)
        with self._lock:
            rows = self._windows.get(key)
            if rows is None:  # a model the config does not name: not ours to show (the pipeline rejects those)
                return
            rows.appendleft(row)
            self._counts[key] += 1

    def snapshot(self) -> tuple[dict[tuple[str, str], list[WindowRow]], dict[tuple[str, str], int], list[Alert]]:
        """The rows (newest first), the window counts and the firing alerts, as of now."""
        with self._lock:
            rows = {key: list(q) for key, q in self._windows.items()}
            counts = dict(self._counts)
        return rows, counts, sorted(self._firing(), key=lambda a: (a.model, a.version, a.detector))

    def page(self) -> bytes:
        """The page, rendered now."""
        rows, counts, firing = self.snapshot()
        return render_status(self.models, rows, counts, firing, now=self._clock(), started=self._started,
                             dashboard_url=self._dashboard_url)

    def handler(self, _path: str) -> tuple[int, bytes, str]:
        """The HTTP server's page handler for ``/``."""
        return 200, self.page(), "text/html; charset=utf-8"


def render_status(models: Sequence[WatchedModelInfo], rows: dict[tuple[str, str], list[WindowRow]],
                  counts: dict[tuple[str, str], int], firing: Sequence[Alert], *, now: float, started: float,
                  dashboard_url: str | None = None) -> bytes:
    """The status page as UTF-8 HTML; every value from events or config is escaped."""
    e = html.escape
    parts = [_HEAD, f"<header><h1>inferwatch</h1><p>{len(models)} model(s) watched · up {_age(now - started)} · "
                    f"updated {e(_utc(now))} UTC · <a href=\"/metrics\">metrics</a></p></header>"]
    parts.append(f"<section><h2>Alerts firing ({len(firing)})</h2>")
    if firing:
        parts.append("<table><tr><th>severity</th><th>model</th><th>detector</th><th>since</th><th>window</th>"
                     "<th>summary</th><th>links</th></tr>")
        for a in firing:
            links = " ".join(f'<a href="{e(url)}">{e(name.replace("_", " "))}</a>'
                             for name, url in a.links.items() if url and _safe_url(url))
            parts.append(f'<tr class="{e(a.severity)}"><td>{e(a.severity)}</td><td>{e(a.model)}/{e(a.version)}</td>'
                         f"<td>{e(a.detector)}</td><td>{e(_utc(a.started_at))}</td><td>#{a.window}</td>"
                         f"<td>{e(a.summary)}</td><td>{links}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p class=\"quiet\">Nothing fires.</p>")
    parts.append("</section>")
    for m in models:
        key = (m.model, m.version)
        model_rows = rows.get(key, [])
        heading = f"{e(m.model)}/{e(m.version)}"
        if dashboard_url:
            url = dashboard_url.replace("{model}", m.model).replace("{version}", m.version)
            if _safe_url(url):
                heading += f' <a class="small" href="{e(url)}">dashboard</a>'
        run = f"training run {_run_link(m)}" if m.training_run or m.training_run_url else "no training run recorded"
        if m.variant is not None:
            heading += f' <span class="variant">{e(m.variant)}</span>'
        variant = "" if m.compare_with is None else \
            f" · compared with <b>{e(m.model)}/{e(m.compare_with)}</b> (variant_comparison)"
        parts.append(f"<section><h2>{heading}</h2><p>{counts.get(key, 0)} window(s) closed · profile "
                     f"<code>{e(m.profile)}</code> · {run}{variant}</p>")
        if not model_rows:
            parts.append("<p class=\"quiet\">No window has closed yet.</p></section>")
            continue
        detectors = list(dict.fromkeys(d for r in model_rows for d, _, _ in r.verdicts))
        parts.append("<table><tr><th>window</th><th>events</th><th>time (UTC)</th><th>closed by</th>"
                     + "".join(f"<th>{e(d)}</th>" for d in detectors) + "</tr>")
        for r in model_rows:
            by = {d: (v, s) for d, v, s in r.verdicts}
            cells = "".join(
                f'<td class="{e(by[d][0])}" title="{e(by[d][1])}">{e(by[d][0])}</td>' if d in by else "<td></td>"
                for d in detectors)
            parts.append(f'<tr><td title="{e(r.window_id)}">#{r.index}</td><td>{r.n_events}</td>'
                         f"<td>{e(_utc(r.first_time))} – {e(_utc(r.last_time)[11:])}</td><td>{e(r.closed_by)}</td>"
                         f"{cells}</tr>")
        parts.append("</table></section>")
    parts.append("</body></html>\n")
    return "".join(parts).encode()


#: The daemon's icon (an eye), for browsers that ask for ``/favicon.ico`` on every page (the reports do).
_ICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><ellipse cx="8" cy="8" rx="7" ry="4.5" '
         b'fill="#fff" stroke="#1d2330"/><circle cx="8" cy="8" r="2.5" fill="#2f6fde"/></svg>')


def favicon(_path: str) -> tuple[int, bytes, str]:
    """The HTTP server's page handler for ``/favicon.ico``."""
    return 200, _ICON, "image/svg+xml"


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t > 0 else "-"


def _age(seconds: float) -> str:
    s = max(int(seconds), 0)
    return f"{s // 3600}h {s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m {s % 60}s"


def _safe_url(url: str) -> bool:
    """Only web links and site-relative paths become anchors (a ``javascript:`` URL from a config never does)."""
    return url.startswith(("http://", "https://", "/"))


def _run_link(m: WatchedModelInfo) -> str:
    """The run's name (its URI, or its URL when it has no other name), linked to its page when that is known."""
    e = html.escape
    name = m.training_run or m.training_run_url
    if m.training_run_url and _safe_url(m.training_run_url):
        return f'<a href="{e(m.training_run_url)}">{e(name)}</a>'
    return _link_or_text(name)


def _link_or_text(value: str) -> str:
    e = html.escape
    return f'<a href="{e(value)}">{e(value)}</a>' if _safe_url(value) else f"<code>{e(value)}</code>"


_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="10"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>inferwatch status</title><link rel="icon" href="data:,"><style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#fafbfc}
h1{margin:0;font-size:1.5em}h2{font-size:1.15em;margin:1.2em 0 .3em}header p,.quiet{color:#5b6577}
table{border-collapse:collapse;background:#fff;font-size:13px}th,td{border:1px solid #d9dee7;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#eef1f5}td.drift,tr.critical td:first-child{background:#fbd5d5}
td.ok{background:#dcf3e2}td.insufficient{background:#f1f1f1;color:#777}td.failed{background:#ffe7b3}
tr.warning td:first-child{background:#fff0c2}a.small{font-size:.8em;font-weight:normal}
.variant{font-size:.75em;font-weight:normal;background:#e3ebfb;border-radius:3px;padding:1px 5px}
</style></head><body>
"""
