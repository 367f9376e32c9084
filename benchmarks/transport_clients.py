"""Kafka consumer throughput by client library: kafka-python vs confluent-kafka behind the same transport interface.

Both backends (``kafka.client: kafka-python | confluent``) read the same pre-produced topics from the same broker,
each in a consumer group of its own, through what the daemon uses: ``Consumer.poll`` (500 records at most) and a
synchronous ``Consumer.commit`` every 500 records. Two topics, one partition each:

* ``single``: one inference event per record (what a collector sends without batching);
* ``batch``: batch envelopes of 100 events per record (what :class:`collectors.EventProducer` sends).

The clock starts once a member has joined its group and received its first record, and stops at the last; CPU
seconds are the whole process's (librdkafka works on threads of its own); the time spent in commits (a round trip
to the broker each) is reported beside the total. Records are not decoded: decoding costs the same with either
library. Without ``--bootstrap`` the script starts a private broker with
``deploy/local/kafka.sh start`` (in a temporary ``KAFKA_RUN_DIR``) and stops it at the end::

    .venv/bin/python benchmarks/transport_clients.py                  # 300,000 single / 5,000 batch records
    .venv/bin/python benchmarks/transport_clients.py --quick --json   # 5,000 / 200 (CI smoke)
    .venv/bin/python benchmarks/transport_clients.py --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from typing import Any

import confluent_kafka
import kafka
import numpy as np
from _kafka import broker

from monitor.events import InferenceEvent, encode_event, join_batch
from monitor.transport import ConfluentTransport, KafkaTransport, Transport, ensure_topics

SEED = 0
BATCH_EVENTS = 100  # events per batch record
COMMIT_EVERY = 500  # records between two commits
BACKENDS: dict[str, type[KafkaTransport] | type[ConfluentTransport]] = {
    "kafka-python": KafkaTransport, "confluent": ConfluentTransport}


def encoded_events(n: int) -> list[bytes]:
    """``n`` seeded inference events of 8 features and 3 class probabilities, JSON-encoded."""
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(n, 8))  # (n, F) features
    probs = rng.dirichlet(np.ones(3), size=n)  # (n, 3) class probabilities
    return [encode_event(InferenceEvent(
        request_id=f"bench-{i:08d}", time=1.7e9 + i * 1e-3, model="bench", version="1", task="classification",
        features={f"f{j}": float(v) for j, v in enumerate(row)}, prediction=int(p.argmax()),
        probabilities=[float(q) for q in p])) for i, (row, p) in enumerate(zip(x, probs, strict=True))]


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Write ``values`` to ``topic`` (not timed), every record acknowledged."""
    transport = ConfluentTransport(bootstrap, client_id="bench-fill", linger_ms=20)
    failures: list[BaseException] = []
    try:
        producer = transport.producer()
        for value in values:
            producer.send(topic, value, key=b"bench/1", on_done=lambda exc: exc is None or failures.append(exc))
        producer.flush(300)
    finally:
        transport.close()
    if failures:
        raise SystemExit(f"producing to {topic}: {len(failures)} records failed, the first: {failures[0]}")


def consume(transport: Transport, topic: str, records: int, events_per_record: int) -> dict[str, float]:
    """Read ``records`` records of ``topic`` in a new group, committing every COMMIT_EVERY records."""
    consumer = transport.consumer([topic], f"bench-{uuid.uuid4().hex[:8]}")
    try:
        deadline = time.monotonic() + 120
        while not (first := consumer.poll(1.0, max_records=1)):  # joins the group (not timed)
            if time.monotonic() > deadline:
                raise SystemExit(f"no record of {topic} within 120 s")
        got, since_commit = len(first), len(first)
        positions = {(m.topic, m.partition): m.offset + 1 for m in first}
        start, cpu_start, committing = time.perf_counter(), time.process_time(), 0.0
        while got < records:
            batch = consumer.poll(1.0)
            for m in batch:  # ordered by partition, then offset: the last one of a partition wins
                positions[(m.topic, m.partition)] = m.offset + 1
            got += len(batch)
            since_commit += len(batch)
            if since_commit >= COMMIT_EVERY:
                t0 = time.perf_counter()
                consumer.commit(positions)
                committing += time.perf_counter() - t0
                since_commit = 0
            if time.monotonic() > deadline + 600:
                raise SystemExit(f"read {got} of {records} records of {topic} in 600 s")
        consumer.commit(positions)
        seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        if got != records or consumer.committed(topic, 0) != (records, ""):
            raise SystemExit(f"{topic}: read {got} of {records} records, committed {consumer.committed(topic, 0)}")
    finally:
        consumer.close()
    timed = records - 1  # the first record came before the clock started
    return {"records": records, "seconds": seconds, "cpu_seconds": cpu_s, "commit_seconds": committing,
            "records_per_s": timed / seconds, "records_per_cpu_s": timed / cpu_s,
            "events_per_s": timed * events_per_record / seconds}


def compare(bootstrap: str, topic: str, records: int, events_per_record: int) -> dict[str, Any]:
    """Both backends on ``topic``, one after the other, and confluent's speed-up over kafka-python."""
    out: dict[str, Any] = {}
    for name, backend in BACKENDS.items():
        transport = backend(bootstrap, client_id=f"bench-{name}")
        try:
            out[name] = consume(transport, topic, records, events_per_record)
        finally:
            transport.close()
    out["ratio"] = out["confluent"]["records_per_s"] / out["kafka-python"]["records_per_s"]
    out["cpu_ratio"] = out["confluent"]["records_per_cpu_s"] / out["kafka-python"]["records_per_cpu_s"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start a private one)")
    parser.add_argument("--quick", action="store_true", help="5,000 single / 200 batch records (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    n_single, n_batch = (5_000, 200) if args.quick else (300_000, 5_000)
    events = encoded_events(max(n_single, BATCH_EVENTS))
    single = events[:n_single]
    batches = [join_batch(events[(i * BATCH_EVENTS) % (len(events) - BATCH_EVENTS + 1):][:BATCH_EVENTS])
               for i in range(n_batch)]
    with broker(args.bootstrap) as bootstrap:
        suffix = uuid.uuid4().hex[:8]
        topics = {"single": f"bench-clients-single-{suffix}", "batch": f"bench-clients-batch-{suffix}"}
        ensure_topics(bootstrap, dict.fromkeys(topics.values(), 1))
        produce(bootstrap, topics["single"], single)
        produce(bootstrap, topics["batch"], batches)
        results = {"single": compare(bootstrap, topics["single"], n_single, 1),
                   "batch": compare(bootstrap, topics["batch"], n_batch, BATCH_EVENTS)}
    report = {
        "benchmark": "transport_clients",
        **results,
        "record_bytes": {"single": float(np.mean([len(v) for v in single])),
                         "batch": float(np.mean([len(v) for v in batches]))},
        "commit_every": COMMIT_EVERY,
        "kafka_python": kafka.__version__,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{'records':<32}{'kafka-python':>16}{'confluent':>16}{'ratio':>8}")
        for kind, label in (("single", "one event per record"), ("batch", f"{BATCH_EVENTS} events per record")):
            r = results[kind]
            print(f"{label + ' (records/s)':<32}{r['kafka-python']['records_per_s']:>16,.0f}"
                  f"{r['confluent']['records_per_s']:>16,.0f}{r['ratio']:>7.1f}x")
            print(f"{'  per CPU second':<32}{r['kafka-python']['records_per_cpu_s']:>16,.0f}"
                  f"{r['confluent']['records_per_cpu_s']:>16,.0f}{r['cpu_ratio']:>7.1f}x")
            print(f"{'  seconds, of which commits':<32}"
                  + "".join(f"{r[b]['seconds']:>9.2f} ({r[b]['commit_seconds']:.2f})".rjust(16) for b in BACKENDS))
        print(f"({n_single:,} single and {n_batch:,} batch records, commit every {COMMIT_EVERY}; kafka-python "
              f"{report['kafka_python']}, confluent-kafka {report['confluent_kafka']} on librdkafka "
              f"{report['librdkafka']})")
    return report


if __name__ == "__main__":
    main()
