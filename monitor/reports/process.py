"""Reports built in a child process: Evidently's pure-Python work (pandas, plotly) then never holds the GIL that
the detection thread and the alert channels need.

One child is spawned on the first report, gets the reference profiles once, imports evidently once and builds
report after report; a job travels as its sample of rows (a few MB at most) and comes back as the page. A child
that dies (killed for memory, say) costs only the job it was building: the next job starts another. A job that
takes longer than ``timeout_s`` has its child killed and fails with that reason.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from monitor.profiles import Profile

if TYPE_CHECKING:
    from monitor.reports.worker import ReportJob

__all__ = ["ProcessBuilder", "ReportProcessError"]

log = logging.getLogger(__name__)


class ReportProcessError(RuntimeError):
    """The report could not be built in the child process (the message says why)."""


class ProcessBuilder:
    """A report :data:`~monitor.reports.worker.Builder` that builds in one long-lived child process.

    Parameters
    ----------
    profiles : reference profiles by ``model/version``, sent to the child once when it starts.
    timeout_s : longest a report may take before its child is killed.
    """

    def __init__(self, profiles: Mapping[str, Profile], timeout_s: float = 600.0) -> None:
        self._profiles = dict(profiles)
        self.timeout_s = timeout_s
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded daemon
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.started = 0  # children started (a restart after a death counts)

    def __call__(self, profile: Profile, job: ReportJob, reference_rows: int, window_rows: int) -> bytes:
        key = f"{job.model}/{job.version}"
        if key not in self._profiles:
            raise ReportProcessError(f"no profile for {key} in the report process")
        with self._lock:
            conn = self._child()
            conn.send((key, job, reference_rows, window_rows))
            deadline = time.monotonic() + self.timeout_s
            while not conn.poll(0.2):
                assert self._process is not None
                if not self._process.is_alive():
                    raise self._died()
                if time.monotonic() > deadline:
                    self._stop()
                    raise ReportProcessError(f"the report took longer than {self.timeout_s:.0f} s; its process was "
                                             "stopped")
            try:
                status, payload = conn.recv()
            except (EOFError, OSError) as exc:  # it died with its end of the pipe open
                raise self._died() from exc
        if status != "ok":
            raise ReportProcessError(str(payload))
        assert isinstance(payload, bytes)
        return payload

    def close(self) -> None:
        """Stop the child at once; a report it was building fails (its caller sees the process die)."""
        process = self._process
        if process is not None and process.is_alive():
            process.terminate()
            process.join(5)

    def _died(self) -> ReportProcessError:
        assert self._process is not None
        self._process.join(5)
        code = self._process.exitcode
        self._stop()
        return ReportProcessError(f"the report process died while building (exit code {code})")

    def _child(self) -> Connection:
        if self._process is None or self._conn is None or not self._process.is_alive():
            self._stop()
            parent, child = self._context.Pipe()
            process = self._context.Process(target=serve, args=(child, self._profiles), name="inferwatch-reports",
                                            daemon=True)
            process.start()
            child.close()
            self._process, self._conn = process, parent
            self.started += 1
            log.info("report process %d started", process.pid)
        return self._conn

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        self._process, self._conn = None, None


def serve(conn: Connection, profiles: Mapping[str, Profile]) -> None:
    """The child: build the report of each job received on ``conn`` and send back ``("ok", page)`` or
    ``("error", reason)``, until the parent closes its end."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently sends no usage telemetry from here either
    from monitor.reports.worker import build_html

    while True:
        try:
            key, job, reference_rows, window_rows = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, bytes | str] = ("ok", build_html(profiles[key], job, reference_rows, window_rows))
        except Exception as exc:  # the reason goes back to the parent, which records it for the report's URL
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
