"""Reports on disk: one file per (model, version, window), written atomically, the oldest deleted beyond a cap.

A report lives at ``{directory}/{model}/{version}/{window}.html``; a report that could not be written leaves
``{window}.failed`` instead, holding the reason, so its URL explains itself rather than answering 404. Names are
checked before they become paths: each part may hold only ``[A-Za-z0-9._-]`` and may not start with a dot, so
no request can reach outside ``directory``.

>>> report_name("fraud/3@inferwatch.events-0:1200+4")
'inferwatch.events-0_1200.4'
>>> safe_name("..") or safe_name("a/b") or safe_name("")
False
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from monitor.errors import InferwatchError

__all__ = ["ReportNameError", "ReportStatus", "ReportStore", "report_name", "safe_name"]

log = logging.getLogger(__name__)

ReportStatus = Literal["pending", "ready", "failed", "unknown"]

_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_HTML, _FAILED = ".html", ".failed"


class ReportNameError(InferwatchError):
    """A model, version or window name that cannot be part of a report's path."""


def safe_name(name: str) -> bool:
    """Whether ``name`` may be one part of a report's path: 1–128 of ``[A-Za-z0-9._-]``, not starting with a dot."""
    return _SAFE.fullmatch(name) is not None


def report_name(window_id: str) -> str:
    """The file and URL name of a window's report.

    A window id is ``{model}/{version}@{topic}-{partition}:{offset}[+{event}]`` (see :mod:`monitor.windows`);
    the model and version are already in the path, so the name is the position, with ``:`` as ``_`` and ``+`` as
    ``.``. Kafka topic names hold only ``[A-Za-z0-9._-]``, and the name is read from the right (offset, then
    partition), so two windows never share a name. Any other id gets a hash of itself."""
    position = window_id.split("@", 1)[-1]
    name = position.replace(":", "_").replace("+", ".")
    if safe_name(name):
        return name
    return "w-" + hashlib.sha256(window_id.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class _File:
    path: Path
    size: int
    mtime_ns: int


class ReportStore:
    """The reports directory: paths, atomic writes, the status of each report, and retention.

    Parameters
    ----------
    directory : where reports are written (created if missing).
    max_reports : most report files (written or failed) kept; beyond it the oldest are deleted.
    max_bytes : most bytes they may take together; beyond it the oldest are deleted (the newest report is kept
        even when it alone is larger).

    Examples
    --------
    >>> import tempfile
    >>> store = ReportStore(tempfile.mkdtemp(), max_reports=2, max_bytes=1 << 20)
    >>> for window in ("w1", "w2", "w3"):
    ...     _ = store.write("m", "1", window, b"<html>" + window.encode() + b"</html>")
    >>> store.status("m", "1", "w1"), store.read("m", "1", "w3")
    ('unknown', b'<html>w3</html>')
    """

    def __init__(self, directory: str | Path, max_reports: int, max_bytes: int) -> None:
        if max_reports < 1 or max_bytes < 1:
            raise ValueError(f"max_reports and max_bytes must be >= 1, got {max_reports}, {max_bytes}")
        self.directory = Path(directory)
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pending: set[tuple[str, str, str]] = set()
        for stale in self.directory.glob("*/*/.*.tmp"):  # a write cut short by a crash
            stale.unlink(missing_ok=True)

    # -- names -------------------------------------------------------------------------------------------------
    def folder(self, model: str, version: str) -> Path:
        for what, name in (("model", model), ("version", version)):
            if not safe_name(name):
                raise ReportNameError(f"report {what} name {name[:80]!r} is not 1-128 of [A-Za-z0-9._-] "
                                      f"(not starting with a dot)")
        return self.directory / model / version

    def path(self, model: str, version: str, window: str) -> Path:
        """Where the report of ``window`` (a :func:`report_name`) is written; refuses unsafe names."""
        if not safe_name(window):
            raise ReportNameError(f"report window name {window[:80]!r} is not 1-128 of [A-Za-z0-9._-]")
        return self.folder(model, version) / f"{window}{_HTML}"

    # -- status ------------------------------------------------------------------------------------------------
    def pending(self, model: str, version: str, window: str) -> None:
        """Mark a report as on its way (kept in memory; no I/O)."""
        self.path(model, version, window)
        with self._lock:
            self._pending.add((model, version, window))

    def status(self, model: str, version: str, window: str) -> ReportStatus:
        path = self.path(model, version, window)
        with self._lock:
            if (model, version, window) in self._pending:
                return "pending"
        if path.is_file():
            return "ready"
        return "failed" if path.with_suffix(_FAILED).is_file() else "unknown"

    def read(self, model: str, version: str, window: str) -> bytes | None:
        """The report's HTML, or None when it is not written (pending, failed, unknown or deleted)."""
        try:
            return self.path(model, version, window).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def reason(self, model: str, version: str, window: str) -> str | None:
        """Why a failed report was not written, or None when it did not fail."""
        try:
            return self.path(model, version, window).with_suffix(_FAILED).read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
            return None

    # -- writes ------------------------------------------------------------------------------------------------
    def write(self, model: str, version: str, window: str, html: bytes) -> Path:
        """Write a report atomically (a temporary file renamed over the name), then apply retention."""
        path = self.path(model, version, window)
        self._replace(path, html)
        path.with_suffix(_FAILED).unlink(missing_ok=True)
        self._done(model, version, window)
        self.enforce(keep=path)
        return path

    def fail(self, model: str, version: str, window: str, reason: str) -> Path:
        """Record that a report will not be written, and why (served in its place)."""
        path = self.path(model, version, window).with_suffix(_FAILED)
        self._replace(path, reason[:4000].encode())
        self._done(model, version, window)
        self.enforce(keep=path)
        return path

    def forget(self, model: str, version: str, window: str) -> None:
        """Drop a pending mark without writing anything."""
        self._done(model, version, window)

    def enforce(self, keep: Path | None = None) -> int:
        """Delete the oldest files beyond ``max_reports`` or ``max_bytes`` (never ``keep``); returns how many."""
        files = sorted(self._files(), key=lambda f: (f.mtime_ns, f.path.name))
        count, total = len(files), sum(f.size for f in files)
        deleted = 0
        for f in files:
            if count <= self.max_reports and total <= self.max_bytes:
                break
            if f.path == keep:
                continue
            f.path.unlink(missing_ok=True)
            count, total, deleted = count - 1, total - f.size, deleted + 1
        if deleted:
            log.info("reports: deleted the %d oldest report(s) (keeping at most %d files, %d bytes)", deleted,
                     self.max_reports, self.max_bytes)
        return deleted

    def _files(self) -> list[_File]:
        found = []
        for path in self.directory.glob("*/*/*"):
            if path.name.startswith(".") or path.suffix not in (_HTML, _FAILED):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # deleted meanwhile
                continue
            found.append(_File(path, st.st_size, st.st_mtime_ns))
        return found

    def _replace(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _done(self, model: str, version: str, window: str) -> None:
        with self._lock:
            self._pending.discard((model, version, window))
