"""What else happens when an alert fires: links filled in before anyone is told, and work done after.

A hook (the Evidently report writer, the Grafana annotator) sees every notification twice:

* :meth:`AlertHook.links` before the channels send it, to add the links it will serve (a report URL, a
  snapshot URL). It must be fast and do no I/O: the link is a promise, kept later by :meth:`AlertHook.fired`.
* :meth:`AlertHook.fired` after the notifications are queued, with the window that raised them (its result and
  its rows). It must not block the detection thread: heavy work goes to the hook's own bounded worker.

Notifications without a window (``no_data``) get links but no :meth:`~AlertHook.fired` call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from monitor.alerts.notification import Alert
from monitor.evaluation import WindowResult
from monitor.windows import ClosedWindow

__all__ = ["AlertHook", "AlertedWindow"]


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
