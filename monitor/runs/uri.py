"""Run references: one parser for every way of naming a training run.

>>> parse_run_uri("mlflow://127.0.0.1:5000/0123abcd").tracking_uri
'http://127.0.0.1:5000'
>>> parse_run_uri("mlflow+sqlite:///data/runs/mlflow.db/0123abcd").tracking_uri
'sqlite:////data/runs/mlflow.db'
>>> parse_run_uri("wandb://acme/digits/1x2y3z").run_id
'1x2y3z'
>>> parse_run_uri("s3://bucket/run")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
monitor.runs.uri.RunError: run URI 's3://bucket/run': unknown scheme 's3'; ...
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from monitor.errors import InferwatchError

RunScheme = Literal["mlflow", "wandb", "wandb-offline", "file", "url"]

#: Every accepted form, quoted in errors so that a bad URI is followed by a good one.
FORMS = ("mlflow://HOST:PORT/RUN_ID (mlflow+https:// for TLS), mlflow+sqlite:///ABS/PATH/mlflow.db/RUN_ID (a local "
         "MLflow store), runs:/RUN_ID with a tracking URI, wandb://ENTITY/PROJECT/RUN_ID, a W&B run directory "
         "(wandb/offline-run-…), file:///FOLDER, https://URL")

# wandb names a run directory `offline-run-YYYYMMDD_HHMMSS-<id>` (offline) or `run-YYYYMMDD_HHMMSS-<id>` (online).
_WANDB_DIR = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9]+)$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_SQLITE_EXAMPLE = "mlflow+sqlite:///data/runs/mlflow.db/0123456789abcdef0123456789abcdef"


class RunError(InferwatchError):
    """A training run cannot be named, reached or read, or lacks what was asked of it; the message names the
    run URI."""


@dataclass(frozen=True)
class RunRef:
    """A parsed run URI. ``uri`` is the text as given; the other fields are the parts the scheme uses
    (``tracking_uri`` and ``run_id`` for MLflow, and ``path``, the database file, for a local store
    (``tracking_uri`` ``sqlite:////ABS/PATH``); ``entity``/``project``/``run_id`` for W&B, ``path`` for a W&B run
    directory or a folder, ``url`` for a plain link)."""

    uri: str
    scheme: RunScheme
    run_id: str = ""
    tracking_uri: str = ""
    entity: str = ""
    project: str = ""
    path: Path | None = None
    url: str = ""


def _error(uri: str, what: str, example: str) -> RunError:
    return RunError(f"run URI {uri!r}: {what}; e.g. {example}")


def _mlflow_ref(uri: str, tracking_uri: str, run_id: str) -> RunRef:
    if not run_id or not _RUN_ID.match(run_id):
        raise _error(uri, f"the MLflow run id {run_id!r} is missing or has characters a run id cannot have",
                     _SQLITE_EXAMPLE if tracking_uri.startswith("sqlite:")
                     else "mlflow://mlflow.internal:5000/0123456789abcdef0123456789abcdef")
    if tracking_uri.startswith("sqlite:"):
        return RunRef(uri=uri, scheme="mlflow", run_id=run_id, tracking_uri=tracking_uri,
                      path=Path(tracking_uri.removeprefix("sqlite:///")))
    return RunRef(uri=uri, scheme="mlflow", run_id=run_id, tracking_uri=tracking_uri.rstrip("/"))


def _tracking_base(uri: str, tracking_uri: str) -> str:
    """The http(s) base URL of an MLflow tracking server given as http(s):// or mlflow://, or the
    ``sqlite:////ABS/PATH`` URI of a local store (SQLAlchemy's form: three slashes, then the absolute path)."""
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme == "sqlite" and not parts.netloc and parts.path.startswith("//"):
        return f"sqlite:///{parts.path[1:]}"
    scheme = {"mlflow": "http", "mlflow+https": "https", "http": "http", "https": "https"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise _error(uri, f"the tracking URI {tracking_uri!r} is neither an http(s) MLflow tracking server nor a "
                          "sqlite store named by its absolute path",
                     "tracking URI http://mlflow.internal:5000 or sqlite:////data/runs/mlflow.db")
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _sqlite_ref(uri: str, parts: urllib.parse.SplitResult) -> RunRef:
    """``mlflow+sqlite:///ABS/PATH/mlflow.db/RUN_ID``: a run in the local MLflow store whose database is that file
    (its path percent-encoded where it must be)."""
    if parts.netloc:
        raise _error(uri, f"a local MLflow store is named by its absolute path, after three slashes, not by "
                          f"{parts.netloc!r}", _SQLITE_EXAMPLE)
    database, _, run_id = urllib.parse.unquote(parts.path).rpartition("/")
    if not database.strip("/"):
        raise _error(uri, "no database file before the run id", _SQLITE_EXAMPLE)
    return _mlflow_ref(uri, f"sqlite:///{database}", run_id)


def parse_run_uri(uri: str, tracking_uri: str | None = None) -> RunRef:
    """Parse a run URI into a :class:`RunRef`; ``tracking_uri`` (an http(s) MLflow server, or a local store as
    ``sqlite:////ABS/PATH/mlflow.db``) is needed only by the ``runs:/RUN_ID`` form. Raises :class:`RunError`
    naming the URI, what is wrong and a good example.

    A path without a scheme is a folder run, or a W&B run directory when its name is wandb's
    (``offline-run-…``/``run-…``) or it holds a ``run-*.wandb`` log. Nothing is read over the network.
    """
    text = uri.strip()
    if not text:
        raise _error(uri, "the run URI is empty", FORMS)
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("mlflow", "mlflow+https"):
        if not parts.hostname:
            raise _error(uri, "no tracking host", "mlflow://mlflow.internal:5000/0123456789abcdef")
        prefix, _, run_id = parts.path.rstrip("/").rpartition("/")
        base = ("https" if scheme == "mlflow+https" else "http") + f"://{parts.netloc}{prefix}"
        return _mlflow_ref(uri, base, run_id)
    if scheme == "mlflow+sqlite":
        return _sqlite_ref(uri, parts)
    if scheme == "runs":
        run_id, _, rest = parts.path.lstrip("/").partition("/")
        if rest:
            raise _error(uri, "a run URI names a run, not an artifact inside it", "runs:/0123456789abcdef")
        if not tracking_uri:
            raise _error(uri, "runs:/ needs the MLflow tracking URI (none was configured)",
                         "mlflow://mlflow.internal:5000/" + (run_id or "0123456789abcdef"))
        return _mlflow_ref(uri, _tracking_base(uri, tracking_uri), run_id)
    if scheme == "wandb":
        names = [parts.netloc, *parts.path[1:].removesuffix("/").split("/")] if parts.path else [parts.netloc]
        if len(names) != 3 or not all(names):
            raise _error(uri, f"a W&B run is ENTITY/PROJECT/RUN_ID, three non-empty parts, not {'/'.join(names)!r}",
                         "wandb://acme/digits/1x2y3z4w")
        return RunRef(uri=uri, scheme="wandb", entity=names[0], project=names[1], run_id=names[2])
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise _error(uri, "the URL has no host", "https://mlflow.internal/#/experiments/1/runs/0123abcd")
        return RunRef(uri=uri, scheme="url", url=text)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _error(uri, f"a file URI names a folder on this machine, not on {parts.netloc!r}",
                         "file:///data/runs/42")
        if not parts.path:
            raise _error(uri, "the file URI has no path", "file:///data/runs/42")
        return _folder_ref(uri, Path(urllib.parse.unquote(parts.path)))
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise _error(uri, f"unknown scheme {parts.scheme!r}", FORMS)
    return _folder_ref(uri, Path(text).expanduser())


def _folder_ref(uri: str, path: Path) -> RunRef:
    """A W&B run directory by its name (``wandb/latest-run`` resolved) or its ``run-*.wandb`` log, else a
    folder run."""
    resolved = path.resolve()
    match = _WANDB_DIR.match(resolved.name) or _WANDB_DIR.match(path.name)
    if match or (resolved.is_dir() and any(resolved.glob("run-*.wandb"))):
        return RunRef(uri=uri, scheme="wandb-offline", path=resolved, run_id=match["id"] if match else "")
    return RunRef(uri=uri, scheme="file", path=resolved)
