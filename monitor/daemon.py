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
from monitor.server import DaemonServer, PageHandler, check_server
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
#: Heap blocks from this size up are mapped on their own and unmapped when freed (glibc's ``M_MMAP_THRESHOLD``).
#: glibc raises the threshold by itself (up to 32 MiB) after the first large blocks are freed, and large window
#: arrays and detector temporaries then come from the heap, where freed memory stays resident: the 10M-event soak's
#: RSS grew 6.6% from 1M events, settling only after 3M; with the threshold fixed it is flat. 128 KiB (glibc's
#: initial value) did the same for memory but cost ~10% of the detector's speed in page faults; 1 MiB did not.
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def tune_process() -> None:
    """Tune the process that runs the detector loop (``inferwatch run``): fewer, cheaper garbage collections (what
    start-up made is frozen out of every later collection, young collections wait for
    :data:`GC_YOUNG_THRESHOLD` allocations) and large heap blocks handed back to the system when freed
    (:data:`MMAP_THRESHOLD_BYTES`; glibc only, elsewhere nothing). Process-wide: called by the command, not by
    :func:`run_daemon`, which tests run in their own process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.warning("could not set the C library's mmap threshold: freed memory may stay resident")


def run_daemon(config: Config, stop: threading.Event | None = None) -> int:
    """Watch the configured models until ``stop`` is set (or, in the main thread, SIGTERM or SIGINT).

    A server beyond loopback with neither ``server.token_file`` nor ``server.allow_unauthenticated`` is refused
    (:class:`~monitor.errors.ConfigError`) before anything is built."""
    guard = check_server(config.server.host, config.server.token_file, config.server.allow_unauthenticated)
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
        f"the embedded bus (POST events to http://{config.server.host}:{server.port}/v1/events" + \
        (", with the bearer token of server.token_file)" if guard.enabled else ")")
    log.info("inferwatch watching %s from %s; metrics on http://%s:%d/metrics",
             ", ".join(m.key for m in config.models), source, config.server.host, server.port)
    started = time.monotonic()
    try:
        wiring.run()
    finally:
        wiring.close()
        server.close()
        for timer in watchdog:
            timer.cancel()
    log.info("stopped after %.0f s: %d records consumed", time.monotonic() - started, wiring.pipeline.messages)
    return 0
