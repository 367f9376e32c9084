"""The report hook: a link on every firing alert, and the report written behind it by one background worker.

:meth:`ReportHook.links` promises ``{base_url}/reports/{model}/{version}/{window}.html`` (no I/O).
:meth:`ReportHook.fired` copies a bounded, seeded sample of the alerting window's rows (so the pipeline's arrays
are not held) and queues it; when the queue is full the oldest job is dropped, counted, and its URL then says so.
The worker has the report built with Evidently (:mod:`monitor.reports.evidently_report`) — in the daemon in a
child process (:mod:`monitor.reports.process`), so that it never holds the detection thread's GIL — and writes it
to the :class:`~monitor.reports.store.ReportStore`; a report that fails is logged, counted and
recorded, and its URL serves the reason. :func:`report_page` serves the store over HTTP.
"""

from __future__ import annotations

import html
import logging
import socket
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.alerts import Alert, AlertedWindow, HookWorker
from monitor.config import ReportsConfig, ServerConfig, default_of
from monitor.errors import ConfigError
from monitor.profiles import Profile
from monitor.reports.evidently_report import sample_rows
from monitor.reports.process import ProcessBuilder
from monitor.reports.store import ReportNameError, ReportStore, report_name, safe_name
from monitor.windows import ClosedWindow

__all__ = ["ReportHook", "ReportJob", "ReportMetrics", "default_base_url", "report_page", "window_sample"]

log = logging.getLogger(__name__)

#: What a page handler returns: (status code, body, content type).
Page = tuple[int, bytes, str]
_HTML_TYPE = "text/html; charset=utf-8"
_BUILD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def default_base_url(server: ServerConfig) -> str:
    """``http://{host}:{port}`` of the daemon's server; the machine's hostname when it listens on every address."""
    host = server.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{server.port}"


class ReportMetrics:
    """The report worker's metrics, made on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reports = Counter("inferwatch_reports_total", "Alerting-window reports, by outcome (written, failed, "
                               "dropped: the queue was full).", ("outcome",), registry=registry)
        for outcome in ("written", "failed", "dropped"):
            self.reports.labels(outcome=outcome)
        self.build_seconds = Histogram("inferwatch_report_build_seconds", "Time to build and write one report "
                                       "(off the detection thread).", buckets=_BUILD_BUCKETS, registry=registry)
        self.pending = Gauge("inferwatch_reports_pending", "Reports queued or being built.", registry=registry)


@dataclass(frozen=True, eq=False)
class ReportJob:
    """One window's report to build: a copied sample of its rows and the labels joined with it."""

    model: str
    version: str
    name: str  # report_name(window_id)
    window_id: str
    features: np.ndarray  # (k, F) copy of a sample of the window's rows
    predictions: np.ndarray  # (k,) class indices, -1: none
    labels: tuple[np.ndarray, np.ndarray] | None  # (true, predicted) (m,), copies


Builder = Callable[[Profile, ReportJob, int, int], bytes]


def build_html(profile: Profile, job: ReportJob, reference_rows: int, window_rows: int) -> bytes:
    """The report page of ``job`` against ``profile`` (imports evidently on the first call)."""
    from monitor.reports.evidently_report import ReportError, build_report, labels_frame, reference_frame, window_frame

    if profile.reference is None:
        raise ReportError(f"the profile of {job.model}/{job.version} has no numeric reference sample")
    classes = profile.class_labels
    # predicted classes only where the reference has their mix to compare with
    predictions = job.predictions if profile.reference.class_priors is not None else None
    labels = None
    if job.labels is not None and len(job.labels[0]) and classes:
        labels = labels_frame(job.labels[0], job.labels[1], classes)
    report = build_report(reference_frame(profile.reference, reference_rows, seed=0),
                          window_frame(job.features, profile.feature_names, predictions, classes),
                          labels=labels, title=f"{job.model}/{job.version} window {job.window_id}",
                          reference_rows=reference_rows, current_rows=window_rows)
    return report.html


class ReportHook:
    """An :class:`~monitor.alerts.AlertHook` that writes an Evidently report for every alerting window.

    Parameters
    ----------
    store : where reports go.
    profiles : reference profiles by ``model/version``.
    registry : where :class:`ReportMetrics` are made.
    base_url : prefix of the report links; None: no link is added (``alerts.report_url`` links instead), the
        reports are still written.
    reference_rows, window_rows : caps of the two samples compared (seeded uniform samples).
    queue_size : windows that may wait for the worker; beyond it the oldest is dropped.
    builder : turns (profile, job, reference_rows, window_rows) into the HTML page (default :func:`build_html` in
        the worker thread; the daemon's :meth:`from_config` builds in a child process, :class:`ProcessBuilder`).
    """

    name = "report"

    def __init__(self, store: ReportStore, profiles: Mapping[str, Profile], registry: CollectorRegistry, *,
                 base_url: str | None, reference_rows: int = default_of(ReportsConfig, "reference_rows"),
                 window_rows: int = default_of(ReportsConfig, "window_rows"),
                 queue_size: int = default_of(ReportsConfig, "queue_size"), builder: Builder | None = None) -> None:
        self.store = store
        self.base_url = None if base_url is None else base_url.rstrip("/")
        self.reference_rows = reference_rows
        self.window_rows = window_rows
        self.queue_size = queue_size
        self.metrics = ReportMetrics(registry)
        self._profiles = dict(profiles)
        self._builder = build_html if builder is None else builder
        # failure pages of dropped jobs, written by the worker before its next job (a drop always comes with one)
        self._dropped: deque[ReportJob] = deque(maxlen=max(queue_size, 64))
        self._refused: set[tuple[str, str]] = set()  # models whose names cannot be paths (logged once)
        self._worker = HookWorker("inferwatch-reports", self._work, queue_size=queue_size, dropped=self._drop,
                                  depth=self._depth)

    @classmethod
    def from_config(cls, config: ReportsConfig, server: ServerConfig, profiles: Mapping[str, Profile],
                    registry: CollectorRegistry, link: bool = True) -> ReportHook:
        """The hook the ``reports:`` section describes (``config.dir`` must be set); ``link=False`` when another
        setting (``alerts.report_url``) links the report."""
        if config.dir is None:
            raise ValueError("reports.dir is not set: reports are off")
        base = (config.base_url or default_base_url(server)) if link else None
        try:
            store = ReportStore(config.dir, config.max_reports, config.max_bytes)
        except OSError as exc:
            raise ConfigError(f"cannot use {config.dir} for reports: {exc.strerror or exc} at reports.dir") from exc
        return cls(store, profiles, registry, base_url=base,
                   reference_rows=config.reference_rows, window_rows=config.window_rows,
                   queue_size=config.queue_size, builder=ProcessBuilder(profiles))

    # -- the hook ------------------------------------------------------------------------------------------
    def url(self, model: str, version: str, window_id: str) -> str | None:
        """The stable URL of a window's report, or None (no base URL, or names that cannot be paths)."""
        if self.base_url is None or not self._writable(model, version):
            return None
        return f"{self.base_url}/reports/{model}/{version}/{report_name(window_id)}.html"

    def links(self, alert: Alert) -> Mapping[str, str]:
        profile = self._profiles.get(f"{alert.model}/{alert.version}")
        if alert.status != "firing" or not alert.has_window or profile is None or profile.reference is None:
            return {}  # no report will be written: no link
        url = self.url(alert.model, alert.version, alert.window_id)
        return {} if url is None else {"report": url}

    def fired(self, alerts: Sequence[Alert], window: AlertedWindow) -> None:
        result = window.result
        if not any(a.status == "firing" for a in alerts) or not self._writable(result.model, result.version):
            return
        profile = self._profiles.get(f"{result.model}/{result.version}")
        if profile is None or profile.reference is None:
            return
        name = report_name(result.window_id)
        _, features, predictions = window_sample(window.window, self.window_rows, result.window_id)
        labels = None if window.labels is None else (window.labels[0].copy(), window.labels[1].copy())
        job = ReportJob(model=result.model, version=result.version, name=name, window_id=result.window_id,
                        features=features, predictions=predictions, labels=labels)
        self.store.pending(job.model, job.version, job.name)
        if not self._worker.submit(job):  # closing
            self.store.forget(job.model, job.version, job.name)

    def close(self, timeout_s: float = 10.0) -> None:
        """Build what is queued within ``timeout_s``; the URLs of reports not built by then say so."""
        left = self._worker.close(timeout_s)
        for job in left:
            self._record_failure(job, "the daemon shut down before this window's report was written")
        if left:
            log.warning("reports: %d queued report(s) not written before shutdown", len(left))
        if isinstance(self._builder, ProcessBuilder):
            self._builder.close()

    @property
    def backlog(self) -> int:
        """Reports queued or being built."""
        return self._worker.backlog

    # -- the worker ----------------------------------------------------------------------------------------
    def _depth(self, waiting: int, busy: int) -> None:
        self.metrics.pending.set(waiting + busy)

    def _drop(self, old: ReportJob) -> None:
        self._dropped.append(old)
        self.metrics.reports.labels(outcome="dropped").inc()
        log.warning("report queue full (%d): dropped the report of window %s, the oldest waiting",
                    self.queue_size, old.window_id)

    def _work(self, job: ReportJob) -> None:
        while self._dropped:
            self._record_failure(self._dropped.popleft(), f"the report queue was full ({self.queue_size} windows "
                                 "waiting), so this window's report, the oldest waiting, was dropped")
        self._build(job)

    def _build(self, job: ReportJob) -> None:
        started = time.perf_counter()
        try:
            page = self._builder(self._profiles[f"{job.model}/{job.version}"], job, self.reference_rows,
                                 self.window_rows)
            self.store.write(job.model, job.version, job.name, page)
        except Exception as exc:
            log.exception("report of window %s failed", job.window_id)
            self.metrics.reports.labels(outcome="failed").inc()
            self._record_failure(job, f"{type(exc).__name__}: {exc}")
            return
        elapsed = time.perf_counter() - started
        self.metrics.build_seconds.observe(elapsed)
        self.metrics.reports.labels(outcome="written").inc()
        log.info("report of window %s written in %.2f s", job.window_id, elapsed)

    def _record_failure(self, job: ReportJob, reason: str) -> None:
        try:
            self.store.fail(job.model, job.version, job.name, reason)
        except Exception:  # a full or read-only disk: the log says so, the worker goes on
            log.exception("could not record the failure of the report of window %s", job.window_id)
            self.store.forget(job.model, job.version, job.name)

    def _writable(self, model: str, version: str) -> bool:
        if safe_name(model) and safe_name(version):
            return True
        if (model, version) not in self._refused:
            self._refused.add((model, version))
            log.warning("no reports for %s/%s: a model and version must be 1-128 of [A-Za-z0-9._-] to be a path",
                        model[:80], version[:80])
        return False


def window_sample(window: ClosedWindow, cap: int, window_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A uniform sample of at most ``cap`` of ``window``'s rows, seeded by the window id (a window always gets
    the same sample): the rows' places in the window (k,) int64, copies of their features (k, F) float64 and
    predicted class indices (k,) int64, -1 where the window has no predictions. The pipeline's buffers are not
    held past the call."""
    rows = sample_rows(window.n, cap, seed=zlib.crc32(window_id.encode()))
    predictions = window.columns.get("prediction")
    return (rows.astype(np.int64), np.asarray(window.features[rows], dtype=np.float64),  # indexing made a copy
            np.full(len(rows), -1, np.int64) if predictions is None else np.asarray(predictions[rows], dtype=np.int64))


# -- serving -------------------------------------------------------------------------------------------------
_PENDING = """<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>Report being written</title></head><body><p>The report of window <code>{window}</code> of {model}/{version} is
being written; this page reloads every 5 seconds.</p></body></html>"""
_FAILED = """<!doctype html><html><head><meta charset="utf-8"><title>Report failed</title></head><body>
<p>The report of window <code>{window}</code> of {model}/{version} was not written:</p><pre>{reason}</pre>
</body></html>"""


def report_page(store: ReportStore, prefix: str = "/reports/") -> Callable[[str], Page]:
    """A ``GET`` handler for ``{prefix}{model}/{version}/{window}.html``: 200 with the report when written, 202
    with a page that reloads itself while it is being written, 500 with the reason when it failed, 404 when
    unknown (never written, or deleted by retention), 400 for a path that is not a report's."""

    def page(path: str) -> Page:
        parts = path.removeprefix(prefix).split("/") if path.startswith(prefix) else []
        if len(parts) != 3 or not parts[2].endswith(".html"):
            return 400, b"not a report path: /reports/{model}/{version}/{window}.html\n", "text/plain; charset=utf-8"
        model, version, window = parts[0], parts[1], parts[2].removesuffix(".html")
        try:
            status = store.status(model, version, window)
        except ReportNameError as exc:
            return 400, f"{exc}\n".encode(), "text/plain; charset=utf-8"
        fill = {"model": html.escape(model), "version": html.escape(version), "window": html.escape(window)}
        if status == "ready":
            body = store.read(model, version, window)
            if body is not None:  # else deleted since the status was read
                return 200, body, _HTML_TYPE
        elif status == "pending":
            return 202, _PENDING.format(**fill).encode(), _HTML_TYPE
        elif status == "failed":
            reason = store.reason(model, version, window) or "(the reason was not recorded)"
            return 500, _FAILED.format(reason=html.escape(reason), **fill).encode(), _HTML_TYPE
        return 404, b"no such report (never written, or deleted to keep reports.max_reports / max_bytes)\n", \
            "text/plain; charset=utf-8"

    return page
