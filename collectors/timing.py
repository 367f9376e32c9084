"""Wall and GPU time of a forward or generate call, measured without stalling the serving thread.

On the serving thread, :meth:`DeviceTimer.begin` and :meth:`DeviceTimer.end` read ``perf_counter`` and, when the
input lives on a CUDA device, record a pair of ``torch.cuda.Event(enable_timing=True)`` on the current stream.
Recording is asynchronous: nothing waits for the GPU there. The pair travels with the capture, and the
producer thread resolves it with :meth:`PendingGpuTime.resolve`, polling ``end.query()`` (non-blocking)
until the kernels are done or a deadline passes; the GPU time is ``start.elapsed_time(end) / 1000`` seconds.
On the CPU only the wall time exists and the GPU time is None.

>>> timer = DeviceTimer()
>>> started = timer.begin("cpu")
>>> t = timer.end(started)
>>> t.device, t.gpu is None, t.total_s >= 0
('cpu', True, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class PendingGpuTime:
    """A pair of CUDA timing events recorded around one call; resolved later, off the serving thread."""

    start: Any  # torch.cuda.Event
    end: Any  # torch.cuda.Event

    def resolve(self, deadline: float, clock: Callable[[], float] = time.perf_counter,
                sleep: Callable[[float], None] = time.sleep) -> float | None:
        """GPU seconds between the events, or None if ``end`` has not completed by ``deadline`` (``clock`` time).

        Polls ``end.query()`` with a backoff from 50 µs to 2 ms; never calls ``synchronize``.
        """
        delay = 50e-6
        while not self.end.query():
            left = deadline - clock()
            if left <= 0:
                return None
            sleep(min(delay, left))
            delay = min(2 * delay, 2e-3)
        return float(self.start.elapsed_time(self.end)) / 1000.0

    def wait(self) -> None:
        """Make the calling thread's current CUDA stream wait (on the GPU) for the timed work to finish.

        Call before reading the call's outputs from another thread's stream; the host does not block.
        """
        self.end.wait()


@dataclass(frozen=True, slots=True)
class Timing:
    """What the serving thread measured around one call.

    Attributes
    ----------
    total_s : float
        Wall time of the call, in seconds (``perf_counter``).
    device : str
        Device of the input, e.g. ``"cpu"`` or ``"cuda:0"``.
    ended_at : float
        Clock reading at the end of the call; anchors the deadline for resolving ``gpu``.
    gpu : PendingGpuTime or None
        The recorded CUDA event pair, None on the CPU.
    """

    total_s: float
    device: str
    ended_at: float
    gpu: PendingGpuTime | None = None

    @property
    def gpu_index(self) -> int | None:
        """The CUDA device ordinal, or None for a non-CUDA device."""
        kind, _, index = self.device.partition(":")
        if kind != "cuda":
            return None
        return int(index) if index else 0


@dataclass(frozen=True, slots=True)
class Started:
    """The state :meth:`DeviceTimer.begin` hands to :meth:`DeviceTimer.end`."""

    at: float
    device: str
    start_event: Any  # torch.cuda.Event or None
    stream: Any  # torch.cuda.Stream or None


class DeviceTimer:
    """Times calls on the serving thread: wall time always, CUDA events when the device is a GPU.

    Parameters
    ----------
    clock : callable
        Monotonic clock in seconds (``time.perf_counter``).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock

    def begin(self, device: torch.device | str) -> Started:
        """Before the call: read the clock and, on CUDA, record the start event on the current stream."""
        name = str(device)
        if not name.startswith("cuda"):
            return Started(self.clock(), name, None, None)
        import torch

        stream = torch.cuda.current_stream(torch.device(name))
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record(stream)
        return Started(self.clock(), name, start, stream)

    def end(self, started: Started) -> Timing:
        """After the call: record the end event (asynchronously) and read the clock."""
        if started.start_event is None:
            now = self.clock()
            return Timing(now - started.at, started.device, now)
        import torch

        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end.record(started.stream)
        now = self.clock()
        return Timing(now - started.at, started.device, now, PendingGpuTime(started.start_event, end))


__all__ = ["DeviceTimer", "PendingGpuTime", "Started", "Timing"]
