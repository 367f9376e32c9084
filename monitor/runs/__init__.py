"""Training runs: name a run by URI, read what its tracker recorded, fetch a reference artifact from it and
log inferwatch's profile back to it.

URI forms (:func:`parse_run_uri`): ``mlflow://HOST:PORT/RUN_ID`` (``mlflow+https://`` for TLS; ``runs:/RUN_ID``
with the tracking URI from config), ``mlflow+sqlite:///ABS/PATH/mlflow.db/RUN_ID`` (a local MLflow store),
``wandb://ENTITY/PROJECT/RUN_ID``, a W&B run directory (``wandb/offline-run-…``), a folder
(``file:///data/runs/42`` or a plain path), or an ``https://`` link. MLflow and wandb are imported only when a run
of theirs is used.
"""

from __future__ import annotations

from pathlib import Path

from monitor.runs import file_adapter, wandb_adapter
from monitor.runs.model import TrainingRun, run_url
from monitor.runs.uri import RunError, RunRef, parse_run_uri

__all__ = ["RunError", "RunRef", "TrainingRun", "download_artifact", "local_artifact_uri", "log_artifact",
           "parse_run_uri", "resolve_run", "run_url"]


def _folder(ref: RunRef) -> Path:
    if ref.path is None:  # the parser sets it for every folder and W&B directory
        raise RunError(f"run {ref.uri!r}: the reference has no folder")
    return ref.path


def resolve_run(uri: str, *, tracking_uri: str | None = None, timeout_s: float = 10.0) -> TrainingRun:
    """Read the run ``uri`` names from its tracker; ``tracking_uri`` serves ``runs:/RUN_ID``, ``timeout_s``
    bounds each request to a tracking server (an unreachable one is a :class:`RunError` naming the URI, not
    minutes of retries). The returned run's ``uri`` finds it again with no other configuration.

    A plain https link is not fetched: its run holds the link and nothing else."""
    ref = parse_run_uri(uri, tracking_uri)
    if ref.scheme == "mlflow":
        from monitor.runs import mlflow_adapter

        return mlflow_adapter.resolve(ref, timeout_s)
    if ref.scheme == "wandb":
        return wandb_adapter.resolve_online(ref, timeout_s)
    if ref.scheme == "wandb-offline":
        return wandb_adapter.resolve_offline(ref, _folder(ref))
    if ref.scheme == "file":
        return file_adapter.resolve(ref, _folder(ref))
    return TrainingRun(uri=ref.url, source="url", id=ref.url, name=ref.url.rstrip("/").rsplit("/", 1)[-1],
                       url=ref.url, created=None, params={}, metrics={}, artifacts=(),
                       note="a link only: nothing is read from a plain URL")


def download_artifact(run: TrainingRun, name: str, dest: Path) -> Path:
    """Fetch the artifact ``name`` (a path relative to the run's artifact root) into the folder ``dest`` and
    return its local path (``dest/<basename>``; a folder artifact arrives as a folder). It is written to a
    temporary folder inside ``dest`` and renamed into place when complete, replacing what was there. A run
    without that artifact is a :class:`RunError` naming the run, the artifact and the artifacts the run has."""
    ref = parse_run_uri(run.uri)
    if ref.scheme == "mlflow":
        from monitor.runs import mlflow_adapter

        return mlflow_adapter.download(run, name, dest)
    if ref.scheme == "wandb":
        return wandb_adapter.download_online(run, name, dest)
    if ref.scheme == "wandb-offline":
        return wandb_adapter.download_offline(run, _folder(ref), name, dest)
    if ref.scheme == "file":
        return file_adapter.download(run, _folder(ref), name, dest)
    raise RunError(f"run {run.uri!r}: a URL run has no artifacts to download")


def local_artifact_uri(uri: str, artifact_path: str, name: str) -> str:
    """The ``file://`` URI :func:`log_artifact` gives a file ``name`` logged under ``artifact_path`` to the run
    ``uri`` names, known before it is logged (no I/O): for an offline W&B run and a folder run; "" for a run whose
    files live in a tracker (or an unparseable URI)."""
    try:
        ref = parse_run_uri(uri)
    except RunError:
        return ""
    if ref.scheme == "wandb-offline":
        folder = _folder(ref) / "files"
    elif ref.scheme == "file":
        folder = _folder(ref) / file_adapter.LOG_FOLDER
    else:
        return ""
    return folder.joinpath(*Path(artifact_path).parts, name).as_uri()


def log_artifact(run: TrainingRun, path: Path, artifact_path: str | None = None) -> str:
    """Attach the file (or folder) ``path`` to the run, under ``artifact_path`` when given, and return where it
    went: ``runs:/RUN_ID/ARTIFACT_PATH/NAME`` for MLflow; a ``file://`` URI in the run directory's ``files/``
    for an offline W&B run (see :func:`monitor.runs.wandb_adapter.log_offline` for what ``wandb sync`` does with
    it) or under ``inferwatch/`` in a folder run; the file's page for an online W&B run (needs credentials).
    Nothing is half-written: local copies are renamed into place when complete."""
    ref = parse_run_uri(run.uri)
    if ref.scheme == "mlflow":
        from monitor.runs import mlflow_adapter

        return mlflow_adapter.log(run, path, artifact_path)
    if ref.scheme == "wandb":
        return wandb_adapter.log_online(run, path)
    if ref.scheme == "wandb-offline":
        return wandb_adapter.log_offline(run, _folder(ref), path, artifact_path)
    if ref.scheme == "file":
        return file_adapter.log(run, _folder(ref), path, artifact_path)
    raise RunError(f"run {run.uri!r}: cannot log to a URL run (a plain link); name the run by its tracker, "
                   "e.g. mlflow://HOST:PORT/RUN_ID")
