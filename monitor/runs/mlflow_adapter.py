"""MLflow runs through MLflow's own client (``pip install 'inferwatch[mlflow]'``: mlflow-skinny).

MLflow's HTTP client retries a failed request for minutes by default and reads its retry count and per-request
timeout from the environment at each request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``).
Each call here sets both for its own duration (no retries; ``timeout_s`` per request) and restores them after,
under a lock, so that an unreachable tracking server is reported within the timeout instead of minutes later.

A local store (``mlflow+sqlite:///ABS/PATH/mlflow.db/RUN_ID``) is read through the same client, with no HTTP at
all (the bounds above then change nothing). It needs the full ``mlflow`` package (SQLAlchemy and Alembic, which
mlflow-skinny leaves out). Its runs have no web page: a run's URL is the ``file://`` URI of its artifact folder,
and its note says how to browse the store (``mlflow ui --backend-store-uri sqlite:////ABS/PATH/mlflow.db``).
MLflow 3 refuses a plain-folder store (``file:///…/mlruns``) unless told otherwise, so it is not a form here.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.runs.local import missing_artifact, move_into_place, staging
from monitor.runs.model import MAX_ARTIFACTS, TrainingRun, flatten_metrics
from monitor.runs.uri import RunError, RunRef, parse_run_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: Seconds per request for artifact transfers, which move whole files (MLflow's own default).
TRANSFER_TIMEOUT_S = 120.0

_env_lock = threading.RLock()


@contextlib.contextmanager
def _bounded(timeout_s: float) -> Iterator[None]:
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s)))}  # MLflow reads an int
    with _env_lock:
        saved = {key: os.environ.get(key) for key in settings}
        os.environ.update(settings)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _client(uri: str, ref: RunRef) -> MlflowClient:
    if ref.path is not None and not ref.path.is_file():  # MLflow would make an empty store there
        raise RunError(f"run {uri!r}: there is no MLflow store at {ref.path} (no such file); name the store's "
                       "database file, e.g. mlflow+sqlite:///data/runs/mlflow.db/0123456789abcdef")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise RunError(f"run {uri!r}: reading MLflow runs needs the MLflow client: "
                       "pip install 'inferwatch[mlflow]'") from None
    try:
        return MlflowClient(tracking_uri=ref.tracking_uri)  # a local store is opened (and migrated) here
    except ImportError as exc:
        raise RunError(f"run {uri!r}: a local MLflow store needs the full MLflow package ({exc}): "
                       "pip install mlflow") from None
    except Exception as exc:  # MlflowException, SQLAlchemy's: a file that is not an MLflow database
        raise RunError(f"run {uri!r}: cannot open the MLflow store {ref.path}: {exc}") from None


def _failure(uri: str, tracking_uri: str, run_id: str, exc: Exception) -> RunError:
    local = tracking_uri.startswith("sqlite:")  # a local store, named by its database
    tracker = f"the MLflow store {tracking_uri}" if local else f"the tracking server {tracking_uri}"
    code = getattr(exc, "error_code", "")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return RunError(f"run {uri!r}: {tracker} has no run {run_id!r}")
    if code == "INVALID_PARAMETER_VALUE":
        return RunError(f"run {uri!r}: {tracker} rejected run id {run_id!r}: {getattr(exc, 'message', exc)}")
    reading = tracker if local else f"the MLflow tracking server {tracking_uri}"
    return RunError(f"run {uri!r}: cannot read it from {reading}: {exc}")


def _canonical(ref: RunRef) -> str:
    if ref.path is not None:  # a local store, by its database file
        return f"mlflow+sqlite://{urllib.parse.quote(ref.path.as_posix())}/{ref.run_id}"
    base = ref.tracking_uri
    scheme = "mlflow+https" if base.startswith("https://") else "mlflow"
    return f"{scheme}://{base.split('://', 1)[1]}/{ref.run_id}"


def _local_url(artifact_uri: str) -> str:
    """The ``file://`` URI of a run's artifact folder, which MLflow records as a path or a URI."""
    return Path(artifact_uri).as_uri() if artifact_uri.startswith("/") else artifact_uri


def _list(client: MlflowClient, run_id: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """The run's files and folders (breadth first, up to :data:`MAX_ARTIFACTS` files) and whether cut."""
    files: list[str] = []
    folders: list[str] = []
    pending: list[str | None] = [None]
    while pending:
        for info in client.list_artifacts(run_id, pending.pop(0)):
            if info.is_dir:
                folders.append(info.path)
                pending.append(info.path)
            elif len(files) == MAX_ARTIFACTS:
                return tuple(sorted(files)), tuple(folders), True
            else:
                files.append(info.path)
    return tuple(sorted(files)), tuple(folders), False


def resolve(ref: RunRef, timeout_s: float) -> TrainingRun:
    uri = _canonical(ref)
    client = _client(ref.uri, ref)
    with _bounded(timeout_s):
        try:
            run = client.get_run(ref.run_id)
            artifacts, _, cut = _list(client, ref.run_id)
        except Exception as exc:  # MlflowException, or requests' own on a broken connection
            raise _failure(ref.uri, ref.tracking_uri, ref.run_id, exc) from None
    info = run.info
    notes = [f"artifacts listed up to {MAX_ARTIFACTS}"] if cut else []
    if ref.path is None:
        url = f"{ref.tracking_uri}/#/experiments/{info.experiment_id}/runs/{info.run_id}"
    else:  # no web page; the URL is the artifact folder
        url = _local_url(info.artifact_uri)
        notes.append(f"a local MLflow store: browse it with mlflow ui --backend-store-uri {ref.tracking_uri}")
    return TrainingRun(
        uri=uri, source="mlflow", id=info.run_id, name=info.run_name or info.run_id, url=url,
        created=info.start_time / 1000.0 if info.start_time else None,
        params=dict(run.data.params), metrics=flatten_metrics(run.data.metrics),
        artifacts=artifacts, note="; ".join(notes))


def download(run: TrainingRun, name: str, dest: Path) -> Path:
    ref = parse_run_uri(run.uri)
    client = _client(run.uri, ref)
    name = name.strip("/")
    with _bounded(TRANSFER_TIMEOUT_S):
        try:
            files, folders, _ = _list(client, ref.run_id)
        except Exception as exc:
            raise _failure(run.uri, ref.tracking_uri, ref.run_id, exc) from None
        if not name or (name not in files and name not in folders):
            raise missing_artifact(run.uri, name, files)
        with staging(dest) as stage:
            try:
                local = Path(client.download_artifacts(ref.run_id, name, dst_path=str(stage)))
            except Exception as exc:
                raise RunError(f"run {run.uri!r}: downloading artifact {name!r} failed: {exc}") from None
            return move_into_place(local, dest / local.name)


def log(run: TrainingRun, path: Path, artifact_path: str | None) -> str:
    ref = parse_run_uri(run.uri)
    if not path.exists():
        raise RunError(f"run {run.uri!r}: nothing to log at {path}")
    client = _client(run.uri, ref)
    folder = (artifact_path or "").strip("/")
    with _bounded(TRANSFER_TIMEOUT_S):
        try:
            if path.is_dir():  # log_artifact sends one file; a folder goes file by file under its own name
                client.log_artifacts(ref.run_id, str(path), f"{folder}/{path.name}".lstrip("/"))
            else:
                client.log_artifact(ref.run_id, str(path), folder or None)
        except Exception as exc:
            raise _failure(run.uri, ref.tracking_uri, ref.run_id, exc) from None
    return f"runs:/{ref.run_id}/{folder + '/' if folder else ''}{path.name}"
