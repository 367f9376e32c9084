"""Soak: resident memory of the embedded daemon pipeline over millions of events (target: <= 5% growth, 1M to 10M).

The pipeline is wired as ``inferwatch run`` wires it without ``kafka:`` (:func:`monitor.wiring.build_pipeline`
on the in-process :class:`~monitor.transport.MemoryBus`, default windows, detectors, alert rules and status
board), watching 10 model versions of 50 numeric features, a predicted class (3 classes) and a latency. Seeded,
undrifted events, each with its own request id and a later event time, are fed as the collector sends them
(column batches of 500 events of one model version, keyed ``model/version``; ``--encoding rows``: batch
envelopes), round robin over the versions,
and the pipeline is stepped in the same thread until it has consumed each round. The process's resident set
(``VmRSS`` of /proc/self/status, after a ``gc.collect()``, the process tuned as ``inferwatch run`` tunes it:
:func:`monitor.daemon.tune_process`) is recorded every tenth of the run; growth is measured
from the first checkpoint to the last. Each checkpoint line is printed as it is reached (without ``--json``)::

    nice -n 10 .venv/bin/python benchmarks/soak_memory.py                    # 10,000,000 events, RSS at every 1M
    .venv/bin/python benchmarks/soak_memory.py --events 2000000 --tracemalloc  # also Python's own allocations
    .venv/bin/python benchmarks/soak_memory.py --quick --json                # 10,000 events (a smoke test)

The feature values of an event are one of 20,000 seeded rows, encoded once: encoding 50 floats per event would
take a sixth of the run, and what the pipeline holds does not depend on where its bytes were made.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from detectors import build_reference
from monitor.config import Config, ModelConfig
from monitor.daemon import tune_process
from monitor.events import COLUMNS_SCHEMA, INFERENCE_SCHEMA, join_batch
from monitor.profiles import Profile
from monitor.wiring import Wiring, build_pipeline

SEED = 0
MODELS = 10
FEATURES = tuple(f"f{j:02d}" for j in range(50))
CLASSES = ("a", "b", "c")
PRIORS = (0.5, 0.3, 0.2)
ENVELOPE = 500  # events per record, as the collector batches them (100 with --quick)
POOL_ROWS = 20_000
TARGET_PCT = 5.0


@dataclass(frozen=True)
class Checkpoint:
    """Memory after ``events`` events were fed and consumed."""

    events: int
    rss_mib: float
    traced_mib: float | None  # Python allocations tracemalloc sees (with --tracemalloc)
    seconds: float  # since the first event


def rss_mib() -> float:
    """Resident set size of this process (``VmRSS``), in MiB."""
    found = re.search(r"^VmRSS:\s+(\d+) kB$", Path("/proc/self/status").read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit("no VmRSS in /proc/self/status: this soak needs Linux")
    return int(found.group(1)) / 1024


def model_keys() -> list[tuple[str, str]]:
    return [(f"model{m}", "1") for m in range(MODELS)]


def profiles(rng: np.random.Generator) -> dict[str, Profile]:
    """One reference per model version, drawn like the live traffic (standard-normal features)."""
    out = {}
    for name, version in model_keys():
        x = rng.normal(size=(5000, len(FEATURES)))  # (N, F)
        predictions = rng.choice(len(CLASSES), size=5000, p=PRIORS)
        out[f"{name}/{version}"] = Profile(
            reference=build_reference(x, FEATURES, predictions=predictions, class_labels=CLASSES),
            model=name, version=version)
    return out


class Feed:
    """Seeded records: round ``r`` holds events ``r * size`` to ``(r + 1) * size - 1`` of every model version, as
    one column batch (what the collectors send by default) or one batch envelope (``rows``) per version."""

    def __init__(self, rng: np.random.Generator, size: int, encoding: str) -> None:
        self.rng, self.size, self.encoding = rng, size, encoding
        rows = rng.normal(size=(POOL_ROWS, len(FEATURES))).tolist()  # (POOL_ROWS, F)
        self.pool = [msgspec.json.encode(dict(zip(FEATURES, row, strict=True)) if encoding == "rows" else row)
                     for row in rows]

    def round(self, index: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of one record per model version."""
        first = index * self.size
        for name, version in model_keys():
            rows = self.rng.integers(POOL_ROWS, size=self.size).tolist()
            predictions = self.rng.choice(len(CLASSES), size=self.size, p=PRIORS).tolist()
            latencies = self.rng.gamma(2.0, 0.005, size=self.size).tolist()
            if self.encoding == "columns":
                yield f"{name}/{version}".encode(), b'{"schema":"%s","model":"%s","version":"%s","task":' \
                    b'"classification","request_id":%s,"time":%s,"feature_names":%s,"features":[%s],' \
                    b'"prediction":%s,"latency_total_s":%s}' % (
                        COLUMNS_SCHEMA.encode(), name.encode(), version.encode(),
                        msgspec.json.encode([f"{name}-{first + i}" for i in range(self.size)]),
                        msgspec.json.encode([1.7e9 + (first + i) * 1e-3 for i in range(self.size)]),
                        msgspec.json.encode(FEATURES), b",".join(self.pool[row] for row in rows),
                        msgspec.json.encode(predictions), msgspec.json.encode(latencies))
                continue
            events = [b'{"schema":"%s","request_id":"%s-%d","time":%r,"model":"%s","version":"%s",'
                      b'"task":"classification","features":%s,"prediction":%d,"latency":{"total_s":%r}}'
                      % (INFERENCE_SCHEMA.encode(), name.encode(), first + i, 1.7e9 + (first + i) * 1e-3,
                         name.encode(), version.encode(), self.pool[row], prediction, latency)
                      for i, (row, prediction, latency) in enumerate(zip(rows, predictions, latencies, strict=True))]
            yield f"{name}/{version}".encode(), join_batch(events)


def feed_round(wiring: Wiring, feed: Feed, index: int) -> int:
    """Send round ``index`` and step the pipeline until it consumed it; returns the events sent."""
    topic = wiring.config.topics.events
    errors: list[BaseException] = []
    records = wiring.pipeline.messages
    for key, value in feed.round(index):
        wiring.producer.send(topic, value, key, on_done=lambda e: errors.append(e) if e is not None else None)
        records += 1
    if errors:
        raise SystemExit(f"the memory bus refused a record: {errors[0]}")
    while wiring.pipeline.messages < records:
        wiring.pipeline.step(0)
    return MODELS * feed.size


def soak(total: int, every: int, size: int, trace: bool, show: bool, encoding: str = "columns") -> list[Checkpoint]:
    """Feed ``total`` events in envelopes of ``size``, with a checkpoint every ``every`` (printed if ``show``)."""
    rng = np.random.default_rng(SEED)
    tune_process()
    config = Config(models=[ModelConfig(name=n, version=v, profile=f"{n}-{v}.profile.npz") for n, v in model_keys()],
                    log_level="WARNING")
    wiring = build_pipeline(config, profiles(rng))
    feed = Feed(rng, size, encoding)
    if trace:
        tracemalloc.start()
    points: list[Checkpoint] = []
    fed, start = 0, time.perf_counter()
    if show:
        print(f"{'events':>12} {'RSS MiB':>9} {'traced MiB':>11} {'seconds':>8}", flush=True)
    try:
        for index in range(total // (MODELS * size)):
            fed += feed_round(wiring, feed, index)
            if fed % every == 0:
                gc.collect()
                traced = tracemalloc.get_traced_memory()[0] / 2**20 if trace else None
                points.append(Checkpoint(fed, rss_mib(), traced, time.perf_counter() - start))
                if show:
                    p = points[-1]
                    print(f"{p.events:>12,} {p.rss_mib:>9.1f} {'' if traced is None else f'{traced:.1f}':>11} "
                          f"{p.seconds:>8.1f}", flush=True)
    finally:
        wiring.close()
        if trace:
            tracemalloc.stop()
    consumed = sum(wiring.registry.get_sample_value("inferwatch_events_consumed_total",
                                                    {"model": n, "version": v}) or 0 for n, v in model_keys())
    if consumed != fed:
        raise SystemExit(f"the pipeline consumed {consumed:.0f} of {fed} events")
    return points


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000,
                        help="events to feed (a multiple of 50,000; RSS is recorded every tenth)")
    parser.add_argument("--quick", action="store_true", help="10,000 events in envelopes of 100 (a smoke test)")
    parser.add_argument("--tracemalloc", action="store_true", help="also record Python's traced allocations (slow)")
    parser.add_argument("--encoding", choices=("columns", "rows"), default="columns",
                        help="column batches (the collectors' default) or batch envelopes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    total, size = (10_000, 100) if args.quick else (args.events, ENVELOPE)
    if total < 10 * MODELS * size or total % (10 * MODELS * size):
        parser.error(f"--events must be a positive multiple of {10 * MODELS * size:,}")
    points = soak(total, total // 10, size, args.tracemalloc, show=not args.json, encoding=args.encoding)
    first, last = points[0], points[-1]
    growth = 100 * (last.rss_mib - first.rss_mib) / first.rss_mib
    report = {
        "benchmark": "soak_memory",
        "events": total,
        "models": MODELS,
        "features": len(FEATURES),
        "encoding": args.encoding,
        "checkpoints": [asdict(p) for p in points],
        "rss_growth_pct": growth,
        "target_pct": TARGET_PCT,
        "passed": growth <= TARGET_PCT,
        "events_per_s": last.events / last.seconds,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"RSS growth {first.events:,} -> {last.events:,} events: {growth:+.2f}% "
              f"({'PASS' if report['passed'] else 'FAIL'}: target <= {TARGET_PCT:g}%), "
              f"{report['events_per_s']:,.0f} events/s")
    return report


if __name__ == "__main__":
    main()
