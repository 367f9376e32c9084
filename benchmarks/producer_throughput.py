"""Producer throughput: events/s from enqueue to broker acknowledgement, batched records vs one event per record.

Every run sends the same seeded inference events to the same broker, with kafka-python's idempotent producer
(``acks=all``, as :class:`monitor.transport.kafka.KafkaTransport` configures it), encoding included:

* ``columns``: :class:`collectors.EventProducer` over ``KafkaTransport`` as configured by default
  (``encoding="columns"``); events are submitted in captures of 100 (one model batch), grouped per key into
  records of up to 500 events, each a column batch (``inferwatch.columns/v1``: the events all fit one), and the
  clock stops when ``flush`` has seen every event acknowledged;
* ``rows``: the same with ``encoding="rows"``: each record a batch envelope (``inferwatch.batch/v1``);
* ``per_record``: ``KafkaProducer.send`` of one ``encode_event`` record per event, then ``flush()``, with
  kafka-python's default 16 KiB record batches (the transport's producer gathers up to 1,000,000 bytes).

``ratio`` is ``columns`` over ``per_record``, ``rows_ratio`` ``rows`` over ``per_record``.

Without ``--bootstrap`` the script starts a private broker with ``deploy/local/kafka.sh start`` (in a temporary
``KAFKA_RUN_DIR``) and stops it at the end::

    .venv/bin/python benchmarks/producer_throughput.py                  # 500,000 / 100,000 events
    .venv/bin/python benchmarks/producer_throughput.py --quick --json   # 20,000 / 5,000 events (CI smoke)
    .venv/bin/python benchmarks/producer_throughput.py --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from typing import Any

import kafka
import msgspec
import numpy as np
from _kafka import broker
from kafka.record.util import crc32c_c
from prometheus_client import CollectorRegistry

from collectors import EventProducer, Events
from collectors.producer import Encoding
from monitor.events import ColumnBatch, InferenceEvent, encode_batch, encode_event
from monitor.transport.kafka import KafkaTransport, ensure_topics

SEED = 0
CAPTURE = 100  # events per submit(), one model batch


def make_events(n: int) -> list[InferenceEvent]:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(n, 8))  # (n, F) features
    probs = rng.dirichlet(np.ones(3), size=n)  # (n, 3) class probabilities
    return [InferenceEvent(request_id=f"bench-{i:08d}", time=1.7e9 + i * 1e-3, model="bench", version="1",
                           task="classification", features={f"f{j}": float(v) for j, v in enumerate(row)},
                           prediction=int(p.argmax()), probabilities=[float(q) for q in p])
            for i, (row, p) in enumerate(zip(x, probs, strict=True))]


def run_batched(bootstrap: str, topic: str, events: list[InferenceEvent], encoding: Encoding) -> dict[str, float]:
    transport = KafkaTransport(bootstrap, client_id=f"bench-{encoding}")
    registry = CollectorRegistry()
    producer = EventProducer(transport.producer(), topic, registry=registry, capacity=len(events) + CAPTURE,
                             encoding=encoding)
    try:
        warm = EventProducer(transport.producer(), topic, encoding=encoding)  # fetch metadata before the clock
        warm.submit(Events(events[:1]))
        warm.close(30)
        captures = [Events(events[i:i + CAPTURE]) for i in range(0, len(events), CAPTURE)]
        start = time.perf_counter()
        for capture in captures:
            if not producer.submit(capture):
                raise SystemExit(f"the {encoding} producer dropped events: raise its capacity")
        if not producer.flush(300):
            raise SystemExit(f"the {encoding} producer did not finish within 300 s")
        elapsed = time.perf_counter() - start
        acked = registry.get_sample_value("inferwatch_collector_events_acked_total")
        if acked != len(events):
            raise SystemExit(f"{encoding}: {acked} of {len(events)} events acknowledged")
        return {"events": len(events), "seconds": elapsed, "events_per_s": len(events) / elapsed}
    finally:
        producer.close(30)
        transport.close()


def run_per_record(bootstrap: str, topic: str, events: list[InferenceEvent]) -> dict[str, float]:
    client = kafka.KafkaProducer(bootstrap_servers=bootstrap, client_id="bench-per-record", acks="all",
                                 enable_idempotence=True, linger_ms=5, max_block_ms=10_000)
    try:
        client.send(topic, encode_event(events[0]), key=events[0].key.encode()).get(timeout=30)
        acked = 0

        def ok(_: object) -> None:
            nonlocal acked
            acked += 1

        start = time.perf_counter()
        for event in events:
            client.send(topic, encode_event(event), key=event.key.encode()).add_callback(ok)
        client.flush(timeout=300)
        elapsed = time.perf_counter() - start
        if acked != len(events):
            raise SystemExit(f"per_record: {acked} of {len(events)} records acknowledged")
        return {"events": len(events), "seconds": elapsed, "events_per_s": len(events) / elapsed}
    finally:
        client.close(timeout=10)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start a private one)")
    parser.add_argument("--quick", action="store_true", help="20,000 / 5,000 events (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    n_batched, n_single = (20_000, 5_000) if args.quick else (500_000, 100_000)
    events = make_events(n_batched)
    with broker(args.bootstrap) as bootstrap:
        suffix = uuid.uuid4().hex[:8]
        topics = {"columns": f"bench-columns-{suffix}", "rows": f"bench-rows-{suffix}",
                  "per_record": f"bench-single-{suffix}"}
        ensure_topics(bootstrap, dict.fromkeys(topics.values(), 1))
        columns = run_batched(bootstrap, topics["columns"], events, "columns")
        rows = run_batched(bootstrap, topics["rows"], events, "rows")
        single = run_per_record(bootstrap, topics["per_record"], events[:n_single])
    batch = ColumnBatch.of(events[:500])
    assert batch is not None  # the events fit: the columns run sends column batches
    report = {
        "benchmark": "producer_throughput",
        "columns": columns,
        "rows": rows,
        "per_record": single,
        "ratio": columns["events_per_s"] / single["events_per_s"],
        "rows_ratio": rows["events_per_s"] / single["events_per_s"],
        "event_bytes_mean": float(np.mean([len(encode_event(e)) for e in events[:1000]])),
        "record_bytes_per_event": {"columns": len(msgspec.json.encode(batch)) / 500,
                                   "rows": len(encode_batch(events[:500])) / 500},
        "kafka_python": kafka.__version__,
        # kafka-python checksums every record batch with CRC32C: in pure Python (~6 MB/s) unless the optional
        # ``crc32c`` package is installed, which then bounds both figures.
        "crc32c": "pure-python" if crc32c_c is None else "c",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for name, run in (("column batches of <=500 (EventProducer, default)", columns),
                          ("batch envelopes of <=500 (EventProducer, rows)", rows),
                          ("one event per record (KafkaProducer.send)", single)):
            print(f"{name:<50}{run['events_per_s']:>10,.0f} events/s ({run['events']:,} events in "
                  f"{run['seconds']:.2f} s)")
        print(f"ratio vs one event per record: columns {report['ratio']:.1f}x, rows {report['rows_ratio']:.1f}x "
              f"(kafka-python {report['kafka_python']}, CRC32C {report['crc32c']})")
    return report


if __name__ == "__main__":
    main()
