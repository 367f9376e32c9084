"""End-to-end events/s of one detector process on the real broker: consume -> decode -> window update -> detect.

A CNN-like model version: 20 numeric input summaries, a predicted class of 10, and latency (total and GPU time)
per event; its profile is built by the project's profile builder (:func:`monitor.baselines.capture_rows` and
:func:`monitor.baselines.profile_from_events`) from 20,000 seeded reference events. The live events come from
the same distribution, so windows rarely alert. Each arm pre-produces its events to a topic of its own, then
times a pipeline wired as ``inferwatch run`` wires it (:func:`monitor.wiring.build_pipeline`: the transport of
``kafka.client``, metrics, alert rules with their state topic, the status board) from its first poll after the
group assignment until every window's result is published (``on_result`` counted, then results flushed and
offsets committed). Arms:

* ``kafka-python, columns``: column batches of 500 events per record (``inferwatch.columns/v1``,
  :meth:`monitor.events.ColumnBatch.of`: what :class:`collectors.EventProducer` sends by default for such
  events), ``kafka.client: kafka-python``;
* ``confluent, columns``: the same records, ``kafka.client: confluent``;
* ``kafka-python, batches``: batch envelopes of 500 events per record (``inferwatch.batch/v1``: what
  ``EventProducer(encoding="rows")`` sends), ``kafka.client: kafka-python``;
* ``confluent, batches``: the same records, ``kafka.client: confluent``;
* ``kafka-python, one event``: one event per record (the baseline every ratio is taken against);
* ``confluent, one event``: one event per record, ``kafka.client: confluent``.

The process is tuned as ``inferwatch run`` tunes it (:func:`monitor.daemon.tune_process`). CPU seconds are the
whole process's over the timed span (the clients' own threads included, the broker not);
``detect`` is the time spent evaluating closed windows (``inferwatch_window_evaluation_seconds``). Every run
checks that the pipeline counted each event once and rejected none. Without ``--bootstrap`` the script starts
a private broker with ``deploy/local/kafka.sh start`` (in a temporary ``KAFKA_RUN_DIR``) and stops it at the end::

    .venv-bench/bin/python benchmarks/e2e_throughput.py                  # 200,000 batched / 50,000 single events
    .venv-bench/bin/python benchmarks/e2e_throughput.py --quick --json   # 5,000 / 1,000 events (CI smoke)
    .venv-bench/bin/python benchmarks/e2e_throughput.py --bootstrap 127.0.0.1:9092

("batched" counts are those of both the column and the envelope arms.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from typing import Any, Literal

import confluent_kafka
import kafka
import msgspec
import numpy as np
from _kafka import broker
from prometheus_client import CollectorRegistry
from transport_clients import produce

from monitor.baselines import capture_rows, profile_from_events
from monitor.config import (
    AlertsConfig,
    AlertStateConfig,
    Config,
    KafkaConfig,
    ModelConfig,
    TopicsConfig,
    WindowConfig,
)
from monitor.daemon import tune_process
from monitor.events import ColumnBatch, InferenceEvent, Latency, encode_batch, encode_event
from monitor.profiles import Profile
from monitor.wiring import build_pipeline

SEED = 0
F, CLASSES = 20, 10  # numeric features, predicted classes
MODEL, VERSION = "cnn", "1"
BATCH_EVENTS = 500  # events per batch envelope or column batch
TIMEOUT_S = 600.0
Client = Literal["kafka-python", "confluent"]
Shape = Literal["columns", "batches", "events"]
#: (name, kafka.client, record shape); the first one-event arm is the baseline of every ratio.
ARMS: tuple[tuple[str, Client, Shape], ...] = (
    ("kafka-python, columns", "kafka-python", "columns"),
    ("confluent, columns", "confluent", "columns"),
    ("kafka-python, batches", "kafka-python", "batches"),
    ("confluent, batches", "confluent", "batches"),
    ("kafka-python, one event", "kafka-python", "events"),
    ("confluent, one event", "confluent", "events"),
)
BASELINE = "kafka-python, one event"


def make_events(n: int, seed: int, start: float = 1.7e9) -> list[InferenceEvent]:
    """``n`` seeded CNN-like events: 20 numeric summaries, a class of 10, total and GPU latency."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F))  # (n, F) input summaries
    predictions = rng.choice(CLASSES, size=n, p=np.linspace(1.0, 2.0, CLASSES) / np.linspace(1.0, 2.0, CLASSES).sum())
    total = rng.lognormal(np.log(0.004), 0.3, size=n)  # (n,) seconds
    names = [f"f{j:02d}" for j in range(F)]
    return [InferenceEvent(request_id=f"bench-{seed}-{i:08d}", time=start + i * 1e-3, model=MODEL, version=VERSION,
                           task="classification", features=dict(zip(names, map(float, row), strict=True)),
                           prediction=int(p), latency=Latency(total_s=float(t), gpu_s=float(t) * 0.6))
            for i, (row, p, t) in enumerate(zip(x, predictions, total, strict=True))]


def make_profile(n: int) -> Profile:
    """The profile ``inferwatch baseline`` would build from ``n`` seeded reference events."""
    reference = [encode_event(e) for e in make_events(n, SEED)]
    captured = capture_rows(reference, "bench-reference", MODEL, VERSION, max_rows=n)
    return profile_from_events(captured, MODEL, VERSION, seed=SEED)


def records(events: list[InferenceEvent], shape: Shape) -> list[bytes]:
    """Record values: one event each, or batch envelopes or column batches of ``BATCH_EVENTS`` events."""
    if shape == "events":
        return [encode_event(e) for e in events]
    chunks = [events[lo:lo + BATCH_EVENTS] for lo in range(0, len(events), BATCH_EVENTS)]
    if shape == "batches":
        return [encode_batch(chunk) for chunk in chunks]
    batches = [ColumnBatch.of(chunk) for chunk in chunks]
    if any(b is None for b in batches):
        raise SystemExit("the benchmark's events do not fit a column batch")
    return [msgspec.json.encode(b) for b in batches]


def run_arm(bootstrap: str, profile: Profile, client: Client, values: list[bytes], n_events: int,
            window: int) -> dict[str, float]:
    """Time one pipeline over ``values`` (``n_events`` events), from the first poll after its assignment to
    the last window published; the records are produced once the group has assigned the (empty) topic."""
    suffix = uuid.uuid4().hex[:8]
    config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile="-")],
                    kafka=KafkaConfig(bootstrap=bootstrap, group=f"bench-e2e-{suffix}", client=client),
                    topics=TopicsConfig(events=f"bench-e2e-ev-{suffix}", feedback=f"bench-e2e-fb-{suffix}",
                                        results=f"bench-e2e-res-{suffix}", deadletter=f"bench-e2e-dl-{suffix}"),
                    window=WindowConfig(size=window, max_seconds=3600.0),
                    alerts=AlertsConfig(state=AlertStateConfig(topic=f"bench-e2e-alerts-{suffix}")))
    registry = CollectorRegistry()
    published: list[str] = []
    wiring = build_pipeline(config, {f"{MODEL}/{VERSION}": profile}, registry=registry,
                            on_result=lambda r: published.append(r.window_id))
    pipeline, expected = wiring.pipeline, n_events // window
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not pipeline.assigned:  # joins the group (not timed)
            pipeline.step(0.2)
            if time.monotonic() > deadline:
                raise SystemExit(f"the {client} pipeline was not assigned its partitions in {TIMEOUT_S:.0f} s")
        produce(bootstrap, config.topics.events, values)
        start, cpu_start = time.perf_counter(), time.process_time()
        while len(published) < expected:
            pipeline.step(0.2)
            if time.monotonic() > deadline:
                raise SystemExit(f"{client}: {len(published)} of {expected} windows in {TIMEOUT_S:.0f} s")
        pipeline.commit()
        seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        wiring.close()
    consumed = registry.get_sample_value("inferwatch_events_consumed_total", {"model": MODEL, "version": VERSION})
    rejected = sum(registry.get_sample_value("inferwatch_events_rejected_total", {"reason": reason}) or 0.0
                   for reason in ("feature_mismatch", "invalid_value", "processing_error"))
    if consumed != expected * window or rejected or len(set(published)) != expected:
        raise SystemExit(f"{client}: {consumed} events counted (expected {expected * window}), {rejected} "
                         f"rejected, {len(set(published))} distinct windows of {expected}")
    return {"events": float(expected * window), "records": float(len(values)),
            "bytes_per_event": sum(map(len, values)) / n_events, "seconds": seconds,
            "cpu_seconds": cpu_s, "events_per_s": expected * window / seconds,
            "events_per_cpu_s": expected * window / cpu_s,
            "detect_seconds": registry.get_sample_value("inferwatch_window_evaluation_seconds_sum") or 0.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start a private one)")
    parser.add_argument("--quick", action="store_true",
                        help="5,000 batched / 1,000 single events, windows of 500, a reference of 2,000 (a smoke test)")
    parser.add_argument("--window", type=int, default=5000, help="window size in events (default 5,000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    n_batched, n_single, n_reference = (5_000, 1_000, 2_000) if args.quick else (200_000, 50_000, 20_000)
    window = 500 if args.quick else args.window
    if n_single % window or n_batched % window:
        raise SystemExit(f"--window must divide {n_single:,} and {n_batched:,}")
    profile = make_profile(n_reference)
    events = make_events(n_batched, SEED + 1)
    sizes: dict[Shape, int] = {"columns": n_batched, "batches": n_batched, "events": n_single}
    values = {shape: records(events[:n], shape) for shape, n in sizes.items()}
    tune_process()  # as ``inferwatch run`` does, once started
    with broker(args.bootstrap) as bootstrap:
        arms = {name: run_arm(bootstrap, profile, client, values[shape], sizes[shape], window)
                for name, client, shape in ARMS}
    for r in arms.values():
        r["ratio"] = r["events_per_s"] / arms[BASELINE]["events_per_s"]
        r["cpu_ratio"] = r["events_per_cpu_s"] / arms[BASELINE]["events_per_cpu_s"]
    report = {"benchmark": "e2e_throughput", "arms": arms, "window": window, "batch_events": BATCH_EVENTS,
              "features": F, "classes": CLASSES, "kafka_python": kafka.__version__,
              "confluent_kafka": confluent_kafka.__version__, "python": platform.python_version(),
              "cpus": os.cpu_count(), "quick": args.quick}
    if args.json:
        print(json.dumps(report))
        return report
    print(f"{'arm':<26}{'events':>9}{'B/event':>9}{'events/s':>11}{'CPU s':>8}{'events/CPU s':>14}"
          f"{'detect s':>10}{'vs baseline':>13}")
    for name, r in arms.items():
        print(f"{name:<26}{r['events']:>9,.0f}{r['bytes_per_event']:>9,.0f}{r['events_per_s']:>11,.0f}"
              f"{r['cpu_seconds']:>8.2f}{r['events_per_cpu_s']:>14,.0f}{r['detect_seconds']:>10.2f}"
              f"{r['ratio']:>12.1f}x")
    print(f"(windows of {window:,} events, batch envelopes and column batches of {BATCH_EVENTS}; baseline: "
          f"{BASELINE}; kafka-python "
          f"{report['kafka_python']}, confluent-kafka {report['confluent_kafka']}; {report['cpus']} CPUs)")
    return report


if __name__ == "__main__":
    main()
