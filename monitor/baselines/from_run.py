"""Reference profiles from training runs: the run's reference data, the run's identity stored in the profile, and
the profile logged back to the run.

The artifact is the one named, or else the first of ``train.npz``, ``reference.npz``, any other ``.npz``, any
``.csv`` among the run's artifacts (by file name, wherever they sit in the run); a run that holds only a ready
profile (``*.profile.npz``) has it used as it is, with the run's reference added. The profile records the run
(:attr:`monitor.profiles.Profile.training_run_info`: its URI, source, id, name, URL and its own metrics, such as
accuracy or loss) and its URL as ``training_run``. The profile goes back to the run (MLflow, a folder, an offline
W&B run) before the output file is renamed into place, so a failure anywhere leaves no output file at all.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal

from monitor.datafiles import read_table
from monitor.errors import InferwatchError
from monitor.offline import build_profile
from monitor.profiles import Profile, load_profile, save_profile

__all__ = ["LOGGED_SOURCES", "RunBaseline", "baseline_from_run", "choose_artifact"]

#: Run sources the profile is logged back to (a plain URL holds nothing; online W&B needs credentials).
LOGGED_SOURCES = ("mlflow", "file", "wandb-offline")
_PREFERRED = ("train.npz", "reference.npz")


@dataclass(frozen=True)
class RunBaseline:
    """What :func:`baseline_from_run` did: the profile written, the artifact it came from and where the profile
    was logged (None when the run's source takes no artifacts)."""

    profile: Profile
    artifact: str
    rows: int | None  # None when a ready profile was used
    logged: str | None


def choose_artifact(uri: str, artifacts: tuple[str, ...], name: str | None = None) -> str:
    """The run artifact to build from: ``name`` when given (an artifact path, or the file name of exactly one
    artifact), else the first of train.npz, reference.npz, other .npz, .csv, and only then a ``*.profile.npz``.

    >>> choose_artifact("file:///r", ("inferwatch/m.profile.npz", "data/b.csv", "data/train.npz"))
    'data/train.npz'
    """
    from monitor.runs import RunError

    if name is not None:
        if name in artifacts:
            return name
        matches = [a for a in artifacts if PurePosixPath(a).name == name]
        if len(matches) == 1:
            return matches[0]
        shown = ", ".join(artifacts[:20]) or "no artifacts"
        which = "several artifacts are" if matches else "no artifact is"
        raise RunError(f"run {uri!r}: {which} named {name!r}; it has: {shown}")
    data = [a for a in artifacts if not a.endswith(".profile.npz")]
    ranked = [
        [a for a in data if PurePosixPath(a).name == preferred] for preferred in _PREFERRED
    ] + [[a for a in data if a.endswith(".npz")], [a for a in data if a.endswith(".csv")],
         [a for a in artifacts if a.endswith(".profile.npz")]]
    for candidates in ranked:
        if candidates:
            return sorted(candidates, key=lambda a: (a.count("/"), a))[0]
    raise RunError(f"run {uri!r} has no reference data: none of its {len(artifacts)} artifacts is an .npz or .csv "
                   f"file; name one with --artifact, or log train.npz to the run")


def baseline_from_run(uri: str, out: Path, model: str | None, version: str | None, *, artifact: str | None = None,
                      tracking_uri: str | None = None, timeout_s: float = 10.0, bins: int = 10,
                      calibration: Literal["temperature", "isotonic"] = "temperature",
                      max_rows: int = 20_000) -> RunBaseline:
    """Build the profile of run ``uri``'s reference data, log it back to the run and write it to ``out``.

    ``model``/``version`` default to the ready profile's own, else to the run's name and "1". Any failure is an
    :class:`~monitor.errors.InferwatchError` whose message names ``uri``; ``out`` is then left as it was."""
    from monitor.runs import RunError, download_artifact, log_artifact, resolve_run

    run = resolve_run(uri, tracking_uri=tracking_uri, timeout_s=timeout_s)
    chosen = choose_artifact(uri, run.artifacts, artifact)
    info = {**replace(run, params={}, artifacts=()).to_dict(), "artifact": chosen}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".inferwatch-baseline-", dir=out.parent) as tmp:
        local = download_artifact(run, chosen, Path(tmp) / "artifact")
        rows = None
        try:
            if chosen.endswith(".profile.npz"):
                profile = load_profile(local)
            else:
                table = read_table(local)
                rows = table.rows
                profile = build_profile(table, model or run.name, version or "1", bins=bins,
                                        calibration=calibration, max_rows=max_rows)
        except InferwatchError as exc:  # an unreadable file or profile: name the run it came from
            raise RunError(f"run {uri!r}: artifact {chosen!r}: {exc}") from exc
        profile = replace(profile, model=model or profile.model, version=version or profile.version,
                          training_run=run.url, training_run_info=info)
        staged = Path(tmp) / out.name
        save_profile(staged, profile)
        logged = log_artifact(run, staged) if run.source in LOGGED_SOURCES else None
        os.replace(staged, out)
    return RunBaseline(profile=profile, artifact=chosen, rows=rows, logged=logged)
