"""``inferwatch run``: the pipeline of :func:`~monitor.wiring.build_pipeline` behind the HTTP server; stops on
SIGTERM or SIGINT.

Shutdown order: stop consuming (commit what no open window needs; on the embedded bus the open windows are
evaluated as partial windows, on Kafka they are replayed by the next run), deliver queued alerts, close the
transport (:meth:`~monitor.wiring.Wiring.close`), then stop the HTTP server.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from monitor.config import Config
from monitor.reports import report_page
from monitor.server import DaemonServer, PageHandler
from monitor.status import favicon
from monitor.wiring import build_pipeline

log = logging.getLogger("inferwatch")


def exit_after(grace_s: float, exit: Callable[[int], object] = os._exit) -> threading.Timer:
    """A started timer that ends the process with status 1 unless it is cancelled within ``grace_s`` seconds: a
    shutdown that hangs (a broker that does not answer a commit, a channel that does not answer) does not keep
    a stopping detector, and its partitions, from the group."""
    def expire() -> None:
        log.error("shutdown did not finish within shutdown_grace_s=%g s: exiting now (what was not committed is "
                  "read again by the next run)", grace_s)
        exit(1)

    timer = threading.Timer(grace_s, expire)
    timer.daemon = True
    timer.start()
    return timer


#: CPython starts a young-generation collection after 700 container allocations by default. The detector makes
#: and drops containers in bulk (a decoded record holds a list per row) and keeps few reference cycles: in
#: process, column batches of 500 went from ~170,000 to ~240,000 events/s with this threshold.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a process that runs the detector loop (``inferwatch run``): what
    start-up made (modules, profiles, reference arrays) is frozen out of every later collection, and young
    collections wait for :data:`GC_YOUNG_THRESHOLD` allocations. Process-wide: called by the command, not by
    :func:`run_daemon`, which tests run in their own process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)


#: How often a running daemon hands the heap memory it freed back to the system (:func:`release_freed_memory`).
TRIM_EVERY_S = 30.0


def release_freed_memory(every_s: float, stop: threading.Event) -> threading.Thread | None:
    """Every ``every_s`` until ``stop`` is set, hand the heap memory the process has freed back to the system
    (glibc's ``malloc_trim``), so that its resident size shows what it holds: freed blocks otherwise stay
    resident (the soak saw ~20 MiB of them, settling after 3M events, with a flat live heap). Returns the thread,
    or None where the C library has no ``malloc_trim`` (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def loop() -> None:
        while not stop.wait(every_s):
            trim(0)

    thread = threading.Thread(target=loop, name="inferwatch-release-memory", daemon=True)
    thread.start()
    return thread


def run_daemon(config: Config, stop: threading.Event | None = None) -> int:
    """Watch the configured models until ``stop`` is set (or, in the main thread, SIGTERM or SIGINT)."""
    wiring = build_pipeline(config, stop=stop)
    embedded = config.kafka is None
    pages: dict[str, PageHandler] = {"/": wiring.status.handler, "/favicon.ico": favicon}
    if wiring.reports is not None:
        pages["/reports/"] = report_page(wiring.reports.store)
    try:
        server = DaemonServer.from_config(config.server, wiring.registry,
                                          ready=lambda: not wiring.stop.is_set() and wiring.pipeline.assigned,
                                          ingest=wiring.producer if embedded else None,
                                          topics={"events": config.topics.events, "feedback": config.topics.feedback},
                                          pages=pages)
    except BaseException:
        wiring.close()
        raise

    watchdog: list[threading.Timer] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing (at most %.0f s, shutdown_grace_s)", signal.Signals(signum).name,
                 config.shutdown_grace_s)
        wiring.stop.set()
        if not watchdog:
            watchdog.append(exit_after(config.shutdown_grace_s))

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    server.start()
    source = f"Kafka at {config.kafka.bootstrap}" if config.kafka else \
        f"the embedded bus (POST events to http://{config.server.host}:{server.port}/v1/events)"
    log.info("inferwatch watching %s from %s; metrics on http://%s:%d/metrics",
             ", ".join(m.key for m in config.models), source, config.server.host, server.port)
    started = time.monotonic()
    release_freed_memory(TRIM_EVERY_S, wiring.stop)
    try:
        wiring.run()
    finally:
        wiring.close()
        server.close()
        for timer in watchdog:
            timer.cancel()
    log.info("stopped after %.0f s: %d records consumed", time.monotonic() - started, wiring.pipeline.messages)
    return 0
