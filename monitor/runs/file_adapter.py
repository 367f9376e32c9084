"""Folder runs: a directory written by a training script, holding ``config.json`` (parameters), ``metrics.json``
(summary metrics) and data files. Artifacts are the files in the folder; logged artifacts go under
``inferwatch/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monitor.runs.local import artifact_path, copy_into, list_files
from monitor.runs.model import MAX_ARTIFACTS, TrainingRun, flatten_metrics, flatten_params
from monitor.runs.uri import RunError, RunRef

#: Where :func:`log_artifact` puts files in a folder run.
LOG_FOLDER = "inferwatch"


def _read_json(uri: str, path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"run {uri!r}: cannot read {path.name}: {exc}") from None
    if not isinstance(data, dict):
        raise RunError(f"run {uri!r}: {path.name} holds a JSON {type(data).__name__}, not an object")
    return data


def resolve(ref: RunRef, folder: Path) -> TrainingRun:
    uri = folder.as_uri()
    if not folder.is_dir():
        raise RunError(f"run {ref.uri!r}: no folder at {folder}; e.g. file:///data/runs/42 holding config.json")
    config = folder / "config.json"
    artifacts, cut = list_files(folder)
    return TrainingRun(
        uri=uri, source="file", id=folder.name, name=folder.name, url=uri,
        created=config.stat().st_mtime if config.is_file() else None,  # when the script wrote its config
        params=flatten_params(_read_json(ref.uri, config)),
        metrics=flatten_metrics(_read_json(ref.uri, folder / "metrics.json")),
        artifacts=artifacts, note=f"artifacts listed up to {MAX_ARTIFACTS}" if cut else "")


def download(run: TrainingRun, folder: Path, name: str, dest: Path) -> Path:
    return copy_into(run.uri, artifact_path(run.uri, folder, name), dest)


def log(run: TrainingRun, folder: Path, path: Path, artifact_path: str | None) -> str:
    target = folder / LOG_FOLDER
    if artifact_path:
        target = target.joinpath(*Path(artifact_path).parts)
    return copy_into(run.uri, path, target).as_uri()
