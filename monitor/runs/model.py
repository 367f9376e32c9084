"""What inferwatch keeps of a training run, whichever tracker it came from."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from monitor.runs.uri import RunError

#: A run lists at most this many artifacts (a folder run may hold a whole dataset); the note says when cut.
MAX_ARTIFACTS = 1000


@dataclass(frozen=True)
class TrainingRun:
    """A training run as read from its tracker.

    ``uri`` names the run so that :func:`monitor.runs.resolve_run` finds it again without other configuration
    (MLflow runs are named ``mlflow://HOST:PORT/RUN_ID``, or ``mlflow+sqlite:///ABS/PATH/mlflow.db/RUN_ID`` in a
    local store, even when given as ``runs:/RUN_ID``); ``source`` is the scheme (mlflow, wandb, wandb-offline,
    file, url); ``url`` is what a person opens (the artifact folder's ``file://`` URI for a run in a local MLflow
    store, which has no web page); ``created`` is the run's start in Unix seconds when the tracker records one;
    ``params`` are the run's parameters or config flattened to dotted keys and strings; ``metrics`` its summary
    (last) numeric values; ``artifacts`` the files it holds, as paths relative to the run's artifact root.
    ``note`` says what could not be read and why (a W&B run read without credentials), or how to browse a run
    that has no web page (a local MLflow store); empty otherwise.

    >>> run = TrainingRun(uri="file:///runs/42", source="file", id="42", name="42", url="file:///runs/42",
    ...                   created=None, params={"lr": "0.1"}, metrics={"acc": 0.9}, artifacts=("train.npz",))
    >>> TrainingRun.from_dict(run.to_dict()) == run
    True
    """

    uri: str
    source: str
    id: str
    name: str
    url: str
    created: float | None
    params: dict[str, str]
    metrics: dict[str, float]
    artifacts: tuple[str, ...]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in profiles)."""
        return {"uri": self.uri, "source": self.source, "id": self.id, "name": self.name, "url": self.url,
                "created": self.created, "params": dict(self.params), "metrics": dict(self.metrics),
                "artifacts": list(self.artifacts), "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingRun:
        """The inverse of :meth:`to_dict`; raises :class:`RunError` naming the field that is missing or wrong."""
        where = f"training run {data.get('uri')!r}" if isinstance(data, Mapping) else "training run"
        try:
            strings = {key: data[key] for key in ("uri", "source", "id", "name", "url")}
            for key, value in strings.items():
                if not isinstance(value, str):
                    raise TypeError(f"{key} is {type(value).__name__}, not a string")
            created = data["created"]
            if created is not None and (isinstance(created, bool) or not isinstance(created, int | float)):
                raise TypeError(f"created is {type(created).__name__}, not a number or null")
            params = {str(k): str(v) for k, v in dict(data["params"]).items()}
            metrics = {str(k): float(v) for k, v in dict(data["metrics"]).items()}
            artifacts = tuple(str(a) for a in data["artifacts"])
            note = data.get("note", "")
            if not isinstance(note, str):
                raise TypeError(f"note is {type(note).__name__}, not a string")
        except KeyError as exc:
            raise RunError(f"{where}: the stored run has no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise RunError(f"{where}: the stored run is malformed: {exc}") from None
        return cls(uri=strings["uri"], source=strings["source"], id=strings["id"], name=strings["name"],
                   url=strings["url"], created=None if created is None else float(created), params=params,
                   metrics=metrics, artifacts=artifacts, note=note)


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as dotted keys and strings: strings as they are, everything else as compact JSON.

    >>> flatten_params({"lr": 0.01, "opt": {"name": "adam"}, "layers": [64, 32]})
    {'lr': '0.01', 'opt.name': 'adam', 'layers': '[64,32]'}
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return flat


def flatten_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested summary as dotted keys; other values (strings, lists, tables) are not
    metrics and are left out, as are trackers' own keys (``_step``, ``_runtime``, ``_wandb``).

    >>> flatten_metrics({"acc": 0.9, "_step": 3, "best": {"loss": 1}, "model": "resnet", "ok": True})
    {'acc': 0.9, 'best.loss': 1.0}
    """
    flat: dict[str, float] = {}
    for key, value in summary.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def run_url(training_run: str | None, info: Mapping[str, Any] | None = None) -> str:
    """The page of a model's training run that a person can open, known without asking the tracker: the URL a
    profile built from the run recorded (``info``, :attr:`monitor.profiles.Profile.training_run_info`) when
    ``training_run`` is unset or names that same run, else ``training_run`` itself when it is a web link, else "".

    >>> run_url("mlflow://tracker:5000/abc", {"uri": "mlflow://tracker:5000/abc",
    ...                                       "url": "http://tracker:5000/#/experiments/1/runs/abc"})
    'http://tracker:5000/#/experiments/1/runs/abc'
    >>> run_url("https://wandb.ai/acme/digits/runs/1x2y"), run_url("runs/42")
    ('https://wandb.ai/acme/digits/runs/1x2y', '')
    """
    if info is not None:
        url = info.get("url")
        if isinstance(url, str) and url and (not training_run or training_run in (info.get("uri"), url)):
            return url
    if training_run and training_run.startswith(("http://", "https://")):
        return training_run
    return ""
