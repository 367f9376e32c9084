"""What else happens when an alert fires: links filled in before anyone is told, and work done after.

A hook (the Evidently report writer, the Grafana annotator) sees every notification twice:

* :meth:`AlertHook.links` before the channels send it, to add the links it will serve (a report URL, a
  snapshot URL). It must be fast and do no I/O: the link is a promise, kept later by :meth:`AlertHook.fired`.
* :meth:`AlertHook.fired` after the notifications are queued, with the window that raised them (its result and
  its rows). It must not block the detection thread: heavy work goes to the hook's own bounded worker.

Notifications without a window (``no_data``) get links but no :meth:`~AlertHook.fired` call.

:class:`HookWorker` is the bounded queue and the one thread a hook's :meth:`~AlertHook.fired` hands its jobs to.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from monitor.alerts.notification import Alert
from monitor.evaluation import WindowResult
from monitor.windows import ClosedWindow

__all__ = ["AlertHook", "AlertedWindow", "HookWorker"]

log = logging.getLogger(__name__)
J = TypeVar("J")


@dataclass(frozen=True)
class AlertedWindow:
    """The window whose findings raised the alerts: what the detectors said and the rows they said it about.

    ``window`` is the pipeline's own closed window; a hook that keeps rows beyond :meth:`AlertHook.fired` copies
    a bounded sample of them. ``labels`` holds the (true, predicted) class indices (k,) of the feedback joined
    that labelled quality had not evaluated yet when this window was (joined since its last evaluation, most
    often during this window; a window keeps no request ids, so its own rows cannot be matched to their labels);
    None when the pipeline did not collect them."""

    result: WindowResult
    window: ClosedWindow
    labels: tuple[np.ndarray, np.ndarray] | None = None


class AlertHook(Protocol):
    name: str

    def links(self, alert: Alert) -> Mapping[str, str]:
        """Links to add to ``alert`` (name → URL) before it is sent; no I/O."""
        ...

    def fired(self, alerts: Sequence[Alert], window: AlertedWindow) -> None:
        """The notifications one window raised, after they were queued; returns at once."""
        ...

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish queued work within ``timeout_s``."""
        ...


class HookWorker(Generic[J]):
    """One thread that works a hook's jobs in order from a bounded queue, so that :meth:`AlertHook.fired` returns
    at once.

    Parameters
    ----------
    name : the thread's name (``inferwatch-…``).
    work : does one job on the worker thread; an exception it raises is logged and costs only that job.
    queue_size : jobs that may wait; :meth:`submit` beyond it pushes out the oldest waiting one.
    dropped : told (under the queue's lock: count and log, no I/O) of each job pushed out.
    depth : told ``(waiting, busy)`` whenever either changes, for a gauge.
    """

    def __init__(self, name: str, work: Callable[[J], None], *, queue_size: int,
                 dropped: Callable[[J], None] | None = None,
                 depth: Callable[[int, int], None] | None = None) -> None:
        self.queue_size = queue_size
        #: Set when :meth:`close`'s grace has ended: a job's retries should stop waiting.
        self.stopping = threading.Event()
        self._work = work
        self._dropped = dropped
        self._depth = depth
        self._queue: deque[J] = deque()
        self._busy = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: J) -> bool:
        """Queue ``job``; False (nothing queued) once :meth:`close` was called."""
        with self._cond:
            if self._closing:
                return False
            if len(self._queue) >= self.queue_size:
                old = self._queue.popleft()
                if self._dropped is not None:
                    self._dropped(old)
            self._queue.append(job)
            self._report()
            self._cond.notify()
        return True

    @property
    def backlog(self) -> int:
        """Jobs waiting or being worked."""
        with self._cond:
            return len(self._queue) + self._busy

    def close(self, timeout_s: float, stop_wait_s: float = 0.0) -> list[J]:
        """Take no more jobs and work those queued for up to ``timeout_s``; then set :attr:`stopping` and wait up
        to ``stop_wait_s`` more for the job in hand. Returns the jobs left unworked (taken off the queue)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        self.stopping.set()
        if stop_wait_s > 0:
            self._thread.join(stop_wait_s)
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
            self._report()
        return left

    def _report(self) -> None:
        if self._depth is not None:
            self._depth(len(self._queue), self._busy)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self.stopping.is_set():
                    return
                job = self._queue.popleft()
                self._busy = 1
                self._report()
            try:
                self._work(job)
            except Exception:  # a bug in one job must not end the worker: the next window still gets its work
                log.exception("%s: a job failed", self._thread.name)
            with self._cond:
                self._busy = 0
                self._report()
