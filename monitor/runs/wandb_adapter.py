"""Weights & Biases runs (``pip install 'inferwatch[wandb]'``).

Offline runs are read straight from their run directory, no network: ``run-<id>.wandb`` is wandb's transaction
log, a LevelDB-log framed stream (https://github.com/google/leveldb/blob/main/doc/log_format.md) of
``wandb_internal_pb2.Record`` protobufs. The file starts with a 7-byte header (``:W&B``, magic 0xBEE1,
version 0); then 32 KiB blocks of records, each ``crc32: u32 | length: u16 | type: u8 | data``, little-endian,
where the CRC is zlib's CRC-32 of the type byte then the data (wandb's, not LevelDB's masked CRC-32C), and a
protobuf longer than a block's remainder is split FIRST/MIDDLE…/LAST. A block's last < 7 bytes are zero
padding. The run's config is the run record's plus later config records; its summary is the run record's plus
every summary record's updates and removals, in order. Artifacts are the files in the directory's ``files/``.

Online runs (``wandb://ENTITY/PROJECT/RUN_ID``) always get their URL; parameters, metrics and files are read
with ``wandb.Api()`` only when wandb finds credentials (``WANDB_API_KEY``, or ``wandb login``'s netrc entry),
and never through an interactive prompt.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from monitor.runs.local import artifact_path, copy_into, list_files, missing_artifact, move_into_place, staging
from monitor.runs.model import MAX_ARTIFACTS, TrainingRun, flatten_metrics, flatten_params
from monitor.runs.uri import RunError, RunRef

_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_RECORD = struct.Struct("<IHB")  # crc32, length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_INSTALL = "pip install 'inferwatch[wandb]'"
WEB = "https://wandb.ai"


def read_log(uri: str, path: Path) -> Iterator[bytes]:
    """The records of a wandb transaction log, in order. A record cut short at the end of the file (a run that
    is still writing) ends the stream; a record whose CRC does not match is an error naming the offset."""
    data = path.read_bytes()
    if len(data) < _HEADER.size or _HEADER.unpack_from(data)[:2] != (b":W&B", 0xBEE1):
        raise RunError(f"run {uri!r}: {path.name} is not a W&B transaction log (no ':W&B' header)")
    pos, pending = _HEADER.size, bytearray()
    while pos + _RECORD.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD.size:  # zero padding at the end of a block
            pos += left
            continue
        crc, length, kind = _RECORD.unpack_from(data, pos)
        if kind == 0:  # zeros: preallocated space, the rest of the block is empty
            pos += left
            continue
        body = data[pos + _RECORD.size: pos + _RECORD.size + length]
        if len(body) < length:
            return
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
            raise RunError(f"run {uri!r}: {path.name} is corrupt at byte {pos} (CRC mismatch)")
        pos += _RECORD.size + length
        if kind == _FULL:
            yield body
        elif kind == _FIRST:
            pending = bytearray(body)
        elif kind == _MIDDLE:
            pending += body
        elif kind == _LAST:
            yield bytes(pending + body)
            pending = bytearray()


def _apply(target: dict[str, Any], items: Any, remove: bool = False) -> None:
    """Apply wandb ConfigItem/SummaryItem updates (``key`` or a ``nested_key`` path, JSON values)."""
    for item in items:
        keys = list(item.nested_key) or [item.key]
        node = target
        for key in keys[:-1]:
            child = node.get(key)
            node[key] = child = child if isinstance(child, dict) else {}
            node = child
        if remove:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = json.loads(item.value_json)


def _offline_log(ref: RunRef, folder: Path) -> Path:
    if not folder.is_dir():
        raise RunError(f"run {ref.uri!r}: no W&B run directory at {folder}; "
                       "e.g. wandb/offline-run-20250101_120000-1x2y3z4w")
    logs = sorted(folder.glob("run-*.wandb"))
    if len(logs) != 1:
        raise RunError(f"run {ref.uri!r}: a W&B run directory holds one run-<id>.wandb log, {folder} holds "
                       f"{len(logs)}")
    return logs[0]


def resolve_offline(ref: RunRef, folder: Path) -> TrainingRun:
    try:
        from wandb.proto import wandb_internal_pb2
    except ImportError:
        raise RunError(f"run {ref.uri!r}: reading W&B runs needs wandb: {_INSTALL}") from None
    log_file = _offline_log(ref, folder)
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    run_id, name, entity, project, created = "", "", "", "", None
    try:
        for raw in read_log(ref.uri, log_file):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                run_id, name, entity, project = run.run_id, run.display_name, run.entity, run.project
                created = run.start_time.seconds + run.start_time.nanos / 1e9 if run.HasField("start_time") else None
                _apply(config, run.config.update)
                _apply(summary, run.summary.update)
            elif kind in ("config", "summary"):
                part = record.config if kind == "config" else record.summary
                _apply(config if kind == "config" else summary, part.update)
                _apply(config if kind == "config" else summary, part.remove, remove=True)
    except (ValueError, OSError) as exc:  # protobuf's DecodeError and json's errors are ValueErrors
        raise RunError(f"run {ref.uri!r}: cannot read {log_file.name}: {exc}") from None
    if not run_id:
        raise RunError(f"run {ref.uri!r}: {log_file.name} has no run record (wandb.init did not get far)")
    config.pop("_wandb", None)
    files = folder / "files"
    artifacts, cut = list_files(files) if files.is_dir() else ((), False)
    synced = (f"; once synced: {WEB}/{entity}/{project}/runs/{run_id}" if entity and project
              else f"; wandb sync puts it at {WEB}/ENTITY/{project or 'PROJECT'}/runs/{run_id}")
    return TrainingRun(
        uri=folder.as_uri(), source="wandb-offline", id=run_id, name=name or run_id, url=folder.as_uri(),
        created=created, params=flatten_params(config), metrics=flatten_metrics(summary), artifacts=artifacts,
        note="offline W&B run" + synced + (f"; artifacts listed up to {MAX_ARTIFACTS}" if cut else ""))


def download_offline(run: TrainingRun, folder: Path, name: str, dest: Path) -> Path:
    return copy_into(run.uri, artifact_path(run.uri, folder / "files", name), dest)


def log_offline(run: TrainingRun, folder: Path, path: Path, artifact: str | None) -> str:
    """Write into the run's ``files/`` folder, where ``wandb.save(policy="end")`` puts files. The run's
    transaction log does not name the file, so whether ``wandb sync`` uploads it depends on the wandb version;
    to be certain, save it from the training script or attach it to the synced run with ``wandb.Api``."""
    target = folder / "files"
    if artifact:
        target = target.joinpath(*Path(artifact).parts)
    return copy_into(run.uri, path, target).as_uri()


def _api(uri: str, timeout_s: float) -> Any | None:
    """``wandb.Api()`` when wandb finds credentials without prompting, else None."""
    import wandb
    from wandb.sdk.lib import wbauth

    try:
        auth = wbauth.authenticate_session(host="https://api.wandb.ai", source="inferwatch", prompt=False,
                                           update_session=False)
    except Exception as exc:  # wandb's AuthenticationError: credentials found but malformed
        raise RunError(f"run {uri!r}: W&B credentials are unusable: {exc}") from None
    return None if auth is None else wandb.Api(timeout=max(1, round(timeout_s)))


def resolve_online(ref: RunRef, timeout_s: float) -> TrainingRun:
    url = f"{WEB}/{ref.entity}/{ref.project}/runs/{ref.run_id}"
    bare = TrainingRun(uri=ref.uri, source="wandb", id=ref.run_id, name=ref.run_id, url=url, created=None,
                       params={}, metrics={}, artifacts=())
    try:
        api = _api(ref.uri, timeout_s)
    except ImportError:
        return _with_note(bare, f"only the URL: reading the run's details needs wandb ({_INSTALL}) and "
                                "WANDB_API_KEY")
    if api is None:
        return _with_note(bare, "only the URL: reading the run's details needs WANDB_API_KEY (or `wandb login`)")
    try:
        run = api.run(f"{ref.entity}/{ref.project}/{ref.run_id}")
        files = [f.name for f in run.files()]
    except Exception as exc:  # wandb's CommError / requests' errors
        raise RunError(f"run {ref.uri!r}: cannot read it from W&B: {exc}") from None
    created = run.created_at
    return TrainingRun(
        uri=ref.uri, source="wandb", id=run.id, name=run.name or run.id, url=run.url or url,
        created=_timestamp(created), params=flatten_params(dict(run.config)),
        metrics=flatten_metrics(dict(run.summary)), artifacts=tuple(sorted(files)[:MAX_ARTIFACTS]))


def _with_note(run: TrainingRun, note: str) -> TrainingRun:
    return TrainingRun(**{**run.__dict__, "note": note})


def _timestamp(created: Any) -> float | None:
    from datetime import UTC, datetime

    if not isinstance(created, str):
        return None
    stamp = datetime.fromisoformat(created.replace("Z", "+00:00"))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def _online_run(run: TrainingRun, timeout_s: float = 60.0) -> Any:
    from monitor.runs.uri import parse_run_uri

    ref = parse_run_uri(run.uri)
    try:
        api = _api(run.uri, timeout_s)
    except ImportError:
        api = None
    if api is None:
        raise RunError(f"run {run.uri!r}: reaching an online W&B run needs wandb ({_INSTALL}) and WANDB_API_KEY")
    try:
        return api.run(f"{ref.entity}/{ref.project}/{ref.run_id}")
    except Exception as exc:
        raise RunError(f"run {run.uri!r}: cannot read it from W&B: {exc}") from None


def download_online(run: TrainingRun, name: str, dest: Path) -> Path:
    online = _online_run(run)
    try:
        names = [f.name for f in online.files()]
        if name not in names:
            raise missing_artifact(run.uri, name, names)
        with staging(dest) as stage:
            online.file(name).download(root=str(stage), replace=True)
            local = stage.joinpath(*Path(name).parts)
            return move_into_place(local, dest / local.name)
    except RunError:
        raise
    except Exception as exc:
        raise RunError(f"run {run.uri!r}: downloading {name!r} from W&B failed: {exc}") from None


def log_online(run: TrainingRun, path: Path) -> str:
    online = _online_run(run)
    if not path.is_file():
        raise RunError(f"run {run.uri!r}: W&B takes one file at a time; {path} is not a file")
    try:
        online.upload_file(str(path), root=str(path.parent))
    except Exception as exc:
        raise RunError(f"run {run.uri!r}: uploading {path.name} to W&B failed: {exc}") from None
    return f"{run.url}/files/{path.name}"
