"""Close the loop: each alerting window's rows go back to the training run, so the next run can train on them.

:meth:`RunSampleHook.links` promises ``links["window_sample"]`` (no I/O): the artifact's page in the MLflow UI,
the file's ``file://`` URI for an offline W&B run or a folder run, else the run's page. :meth:`RunSampleHook.fired`
copies a seeded uniform sample of at most ``max_rows`` of the window's rows and queues it; one worker thread
resolves each model's run once (:func:`monitor.runs.resolve_run`, bounded by ``timeout_s``), writes
``{window}.npz`` (``features`` (k, F), ``feature_names`` (F,), ``predictions`` (k,) class indices, -1 where an
event carried none, ``class_labels``, ``rows`` (k,) each row's place in the window, and the raw payloads the
window's events carried: ``payload_rows`` (m,) places in the window and ``payloads`` (m,) JSON texts — only the
requests the collectors' payload policy sampled and redacted carry one) and logs it under
``inferwatch/windows/`` (:func:`monitor.runs.log_artifact`). An unreachable tracker or a run that is gone is
logged and counted (``inferwatch_run_samples_total{outcome="failed"}``); the alert has been sent already and never
waits.

This module imports the alerting package, which imports :mod:`monitor.runs`; it is therefore not re-exported from
:mod:`monitor.runs` (import it as ``monitor.runs.samples``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.alerts import Alert, AlertedWindow, HookWorker
from monitor.config import Config, RunsConfig, default_of
from monitor.profiles import Profile
from monitor.reports import report_name, window_sample
from monitor.runs import RunError, TrainingRun, local_artifact_uri, log_artifact, parse_run_uri, resolve_run, run_url

__all__ = ["ARTIFACT_PATH", "RunSampleHook", "RunSampleMetrics", "SampleJob", "WatchedRun", "watched_runs"]

log = logging.getLogger(__name__)

#: Where in the run the window samples go.
ARTIFACT_PATH = "inferwatch/windows"
OUTCOMES = ("logged", "failed", "dropped")


@dataclass(frozen=True)
class WatchedRun:
    """The training run of one model: ``uri`` names it to its tracker, ``url`` is its page ("" when unknown)."""

    uri: str
    url: str


def watched_runs(config: Config, profiles: Mapping[str, Profile]) -> dict[str, WatchedRun]:
    """The run each configured model was trained in, by ``model/version``, where one can take an artifact: the
    run a profile was built from (unless ``models[].training_run`` names another), else a configured or recorded
    ``training_run`` that names a run by its tracker or a folder. Plain links and free text (a path without a
    scheme where no folder is) name no run to log to."""
    runs = {}
    for m in config.models:
        profile = profiles.get(m.key)
        info = None if profile is None else profile.training_run_info
        named = m.training_run or (None if profile is None else profile.training_run)
        uri = named
        built_from, built_url = (None, None) if info is None else (info.get("uri"), info.get("url"))
        if isinstance(built_from, str) and (not m.training_run or m.training_run in (built_from, built_url)):
            uri = built_from
        if not uri:
            continue
        try:
            ref = parse_run_uri(uri, config.runs.tracking_uri)
        except RunError:
            continue
        free_text = ref.scheme == "file" and "://" not in uri and not (ref.path is not None and ref.path.is_dir())
        if ref.scheme != "url" and not free_text:
            runs[m.key] = WatchedRun(uri, run_url(named, info))
    return runs


class RunSampleMetrics:
    """The hook's metrics, made on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = Counter("inferwatch_run_samples_total", "Alerting-window samples logged back to the training "
                               "run, by outcome (logged, failed, dropped: the queue was full).", ("outcome",),
                               registry=registry)
        for outcome in OUTCOMES:
            self.samples.labels(outcome=outcome)
        self.pending = Gauge("inferwatch_run_samples_pending", "Window samples queued or being logged.",
                             registry=registry)


@dataclass(frozen=True, eq=False)
class SampleJob:
    """One window's sample to log: copies of its rows."""

    key: str  # model/version
    name: str  # report_name(window_id)
    window_id: str
    features: np.ndarray  # (k, F) float64
    predictions: np.ndarray  # (k,) int64 class indices, -1: none
    rows: np.ndarray  # (k,) int64: each row's place in the window
    payloads: tuple[tuple[int, bytes], ...]  # (place in the window, JSON) of the sampled raw payloads


class RunSampleHook:
    """An :class:`~monitor.alerts.AlertHook` that logs each alerting window's rows to the model's training run.

    Parameters
    ----------
    runs : the run of each model, by ``model/version`` (:func:`watched_runs`); other models are left alone.
    profiles : reference profiles by ``model/version`` (feature names and class labels).
    registry : where :class:`RunSampleMetrics` are made.
    max_rows, queue_size, timeout_s, tracking_uri : as in :class:`~monitor.config.RunsConfig`.
    """

    name = "run_samples"

    def __init__(self, runs: Mapping[str, WatchedRun], profiles: Mapping[str, Profile], registry: CollectorRegistry,
                 *, max_rows: int = default_of(RunsConfig, "max_rows"),
                 queue_size: int = default_of(RunsConfig, "queue_size"),
                 timeout_s: float = default_of(RunsConfig, "timeout_s"), tracking_uri: str | None = None) -> None:
        self.max_rows = max_rows
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.tracking_uri = tracking_uri
        self.metrics = RunSampleMetrics(registry)
        self._runs = dict(runs)
        self._profiles = dict(profiles)
        self._resolved: dict[str, TrainingRun] = {}  # worker thread only
        self._worker = HookWorker("inferwatch-run-samples", self._work, queue_size=queue_size,
                                  dropped=self._dropped, depth=self._depth)

    @classmethod
    def from_config(cls, config: Config, profiles: Mapping[str, Profile], registry: CollectorRegistry) -> RunSampleHook:
        """The hook the ``runs:`` section describes, for the configured models."""
        r = config.runs
        return cls(watched_runs(config, profiles), profiles, registry, max_rows=r.max_rows, queue_size=r.queue_size,
                   timeout_s=r.timeout_s, tracking_uri=r.tracking_uri)

    # -- the hook ------------------------------------------------------------------------------------------
    def url(self, key: str, window_id: str) -> str:
        """Where a person finds a window's sample: the artifact in the MLflow UI, else the run's page ("")."""
        run = self._runs.get(key)
        if run is None:
            return ""
        name = f"{report_name(window_id)}.npz"
        if "/#/experiments/" in run.url and "/runs/" in run.url:  # an MLflow run page: its UI selects the file
            return f"{run.url}/artifactPath/{ARTIFACT_PATH}/{name}"
        if run.url.startswith("file://"):  # a local MLflow store: the run's artifact folder
            return f"{run.url}/{ARTIFACT_PATH}/{name}"
        return local_artifact_uri(run.uri, ARTIFACT_PATH, name) or run.url

    def links(self, alert: Alert) -> Mapping[str, str]:
        key = f"{alert.model}/{alert.version}"
        if alert.status != "firing" or not alert.has_window or key not in self._runs:
            return {}
        url = self.url(key, alert.window_id)
        return {"window_sample": url} if url else {}

    def fired(self, alerts: Sequence[Alert], window: AlertedWindow) -> None:
        result = window.result
        key = f"{result.model}/{result.version}"
        if not any(a.status == "firing" for a in alerts) or key not in self._runs:
            return
        rows, features, predictions = window_sample(window.window, self.max_rows, result.window_id)
        job = SampleJob(key=key, name=report_name(result.window_id), window_id=result.window_id,
                        features=features, predictions=predictions, rows=rows, payloads=window.window.payloads)
        self._worker.submit(job)

    def close(self, timeout_s: float = 10.0) -> None:
        """Log what is queued within ``timeout_s``; samples not logged by then are abandoned (and logged as such)."""
        left = self._worker.close(timeout_s)
        if left:
            log.warning("run samples: %d queued window sample(s) not logged before shutdown", len(left))

    @property
    def backlog(self) -> int:
        """Samples queued or being logged."""
        return self._worker.backlog

    # -- the worker ----------------------------------------------------------------------------------------
    def _depth(self, waiting: int, busy: int) -> None:
        self.metrics.pending.set(waiting + busy)

    def _dropped(self, old: SampleJob) -> None:
        self.metrics.samples.labels(outcome="dropped").inc()
        log.warning("run sample queue full (%d): dropped the sample of window %s, the oldest waiting",
                    self.queue_size, old.window_id)

    def _work(self, job: SampleJob) -> None:
        try:
            where = self._log(job)
        except Exception as exc:  # RunError (tracker unreachable, run gone), a full disk: the loop goes on
            self.metrics.samples.labels(outcome="failed").inc()
            log.warning("the sample of window %s was not logged to run %s: %s", job.window_id,
                        self._runs[job.key].uri, exc, exc_info=not isinstance(exc, RunError))
        else:
            self.metrics.samples.labels(outcome="logged").inc()
            log.info("the sample of window %s (%d rows) is logged to %s", job.window_id, len(job.features), where)

    def _log(self, job: SampleJob) -> str:
        run = self._resolved.get(job.key)
        if run is None:  # once per model; a failure is retried with the next window
            run = resolve_run(self._runs[job.key].uri, tracking_uri=self.tracking_uri, timeout_s=self.timeout_s)
            self._resolved[job.key] = run
        profile = self._profiles[job.key]
        with tempfile.TemporaryDirectory(prefix="inferwatch-sample-") as folder:
            path = Path(folder) / f"{job.name}.npz"
            np.savez_compressed(path, features=job.features, feature_names=np.array(profile.feature_names, dtype=str),
                                predictions=job.predictions, class_labels=np.array(profile.class_labels, dtype=str),
                                rows=job.rows, payload_rows=np.array([r for r, _ in job.payloads], dtype=np.int64),
                                payloads=np.array([p.decode() for _, p in job.payloads], dtype=str))
            return log_artifact(run, path, artifact_path=ARTIFACT_PATH)
