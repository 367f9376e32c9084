"""Files of runs that live in local folders (folder runs, W&B run directories), and the staging that keeps
downloads and logged artifacts from ever being half-written: everything is written into a temporary folder
beside its destination and renamed into place only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from monitor.runs.model import MAX_ARTIFACTS
from monitor.runs.uri import RunError

STAGING_PREFIX = ".inferwatch-staging-"


def list_files(root: Path, limit: int = MAX_ARTIFACTS) -> tuple[tuple[str, ...], bool]:
    """Up to ``limit`` files under ``root`` as sorted posix paths relative to it, and whether there were more.
    Staging folders left by an interrupted download are not files of the run."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(STAGING_PREFIX))
        for name in sorted(files):
            if len(found) == limit:
                return tuple(sorted(found)), True
            found.append(Path(folder, name).relative_to(root).as_posix())
    return tuple(sorted(found)), False


def missing_artifact(uri: str, name: str, artifacts: Sequence[str]) -> RunError:
    shown = ", ".join(artifacts[:20]) + (f" and {len(artifacts) - 20} more" if len(artifacts) > 20 else "")
    return RunError(f"run {uri!r} has no artifact {name!r}; it has: {shown or 'no artifacts'}")


def artifact_path(uri: str, root: Path, name: str) -> Path:
    """The file or folder ``name`` under ``root``; a name that leaves ``root`` or does not exist is an error
    naming the run and what it has."""
    relative = PurePosixPath(name.strip("/"))
    if not name.strip("/") or relative.is_absolute() or ".." in relative.parts:
        raise RunError(f"run {uri!r}: artifact name {name!r} must be a path inside the run, like 'data/train.npz'")
    path = root.joinpath(*relative.parts)
    if not path.exists():
        raise missing_artifact(uri, name, list_files(root)[0] if root.is_dir() else ())
    return path


@contextlib.contextmanager
def staging(folder: Path) -> Iterator[Path]:
    """A fresh temporary folder inside ``folder`` (same filesystem, so the final rename is atomic); it and
    whatever is left in it are removed on the way out, success or not."""
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def move_into_place(staged: Path, target: Path) -> Path:
    """Rename a complete ``staged`` file or folder to ``target``, replacing what was there."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(staged, target)
    return target


def copy_into(uri: str, source: Path, folder: Path) -> Path:
    """Copy the file or folder ``source`` into ``folder`` under its own name, complete or not at all."""
    if not source.exists():
        raise RunError(f"run {uri!r}: nothing to log at {source}")
    with staging(folder) as stage:
        staged = stage / source.name
        if source.is_dir():
            shutil.copytree(source, staged)
        else:
            shutil.copy2(source, staged)
        return move_into_place(staged, folder / source.name)
