"""Chaos on the real broker: stop Kafka under steady traffic; nothing is lost and serving never waits.

Both tests stop the session broker and always start it again (``finally``), since other tests share it.
The measured submit latencies and counts are attached to the test report (``record_property``) and printed, for
information only: how fast ``submit`` is belongs in benchmarks/producer_*.py, not in an assertion that a busy
machine can break. What is asserted here holds under any load: every submit is answered (accepted, or refused and
counted), nothing accepted is lost, and serving never waits for the broker.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from collectors import EventProducer, Events
from collectors.spool import Spool
from monitor.events import InferenceEvent, decode_record
from monitor.transport.kafka import KafkaTransport, ensure_topics
from tests.conftest import KafkaBroker
from tests.support import DEADLINE_S, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RATE = 2000  # events per second, one submit() per event
OUTAGE_S = 30.0
ACK_TIMEOUT_S = 2.0


def transport(bootstrap: str) -> KafkaTransport:
    """kafka-python as EventProducer's docstring recommends: reconnect quickly. Unacknowledged records are kept
    (no expiry) for longer than the outage, so that these tests exercise the spool alone; an outage longer than
    the delivery timeout (the client is then replaced) is tests/test_producer_recovery.py's."""
    return KafkaTransport(bootstrap, client_id="chaos", request_timeout_ms=1500, max_block_ms=500,
                          extra_producer={"delivery_timeout_ms": 120_000, "reconnect_backoff_max_ms": 500})


@dataclass
class Traffic:
    """A serving thread: one event per submit() at a steady rate, each submit timed."""

    producer: EventProducer
    rate: float = RATE
    # Enough for every wait of a test (500 s at RATE): a traffic that ran out while the broker came back (about
    # 100 s into the test on a busy machine) would leave nothing to go "straight to the broker again".
    max_events: int = 1_000_000

    def __post_init__(self) -> None:
        self.latency_s = np.zeros(self.max_events)  # (max_events,) seconds per submit
        self.accepted = np.zeros(self.max_events, dtype=bool)
        self.count = 0
        self.prefix = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def request_id(self, i: int) -> str:
        return f"{self.prefix}-{i:07d}"

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set() and self.count < self.max_events:
            due = min(int((time.perf_counter() - started) * self.rate), self.max_events)
            while self.count < due:
                i = self.count
                event = InferenceEvent(self.request_id(i), 1.7e9 + i / self.rate, "chaos", "1", "classification",
                                       features={"x": float(i % 97)}, prediction=i % 3)
                t0 = time.perf_counter()
                ok = self.producer.submit(Events((event,)))
                self.latency_s[i] = time.perf_counter() - t0
                self.accepted[i] = ok
                self.count += 1
            time.sleep(0.001)

    def summary(self) -> dict[str, float]:
        lat = self.latency_s[: self.count]
        return {"events": self.count, "submit_p99_ms": float(np.quantile(lat, 0.99) * 1e3),
                "submit_max_ms": float(lat.max() * 1e3)}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(f"inferwatch_collector_{name}", labels)
    return 0.0 if value is None else value


def consume_ids(bootstrap: str, topic: str, expected: int, idle_s: float = 30) -> list[str]:
    """Every request id on ``topic`` (duplicates included), read by a fresh group: until all ``expected`` came
    (and 3 s more, for duplicates), or nothing came for ``idle_s`` (a busy machine reads slowly, but reads)."""
    kafka = KafkaTransport(bootstrap)
    consumer = kafka.consumer([topic], f"check-{uuid.uuid4().hex[:8]}")
    ids: list[str] = []
    idle_since = time.monotonic()
    try:
        while time.monotonic() - idle_since < idle_s:
            got = consumer.poll(0.5, max_records=2000)
            ids += [e.request_id for m in got for e in decode_record(m.value)]
            if got:
                idle_since = time.monotonic()
            elif len(set(ids)) >= expected and time.monotonic() - idle_since > 3:
                break
    finally:
        kafka.close()
    return ids


def test_a_30_s_broker_outage_loses_no_event_and_never_blocks_serving(
        broker: KafkaBroker, tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, {topic: 1})
    kafka = transport(broker.bootstrap)
    registry = CollectorRegistry()
    producer = EventProducer(kafka.producer(), topic, registry=registry, spool=Spool(tmp_path / "spool"),
                             ack_timeout_s=ACK_TIMEOUT_S)
    phases: dict[str, float] = {}
    with Traffic(producer) as traffic:
        wait_until(lambda: sample(registry, "events_acked_total") > RATE, "the first acknowledgements")
        assert sample(registry, "events_spooled_total") == 0
        t0 = time.monotonic()
        broker.stop()
        phases["stop_s"] = time.monotonic() - t0
        time.sleep(OUTAGE_S)
        spooled_in_outage = sample(registry, "events_spooled_total")
        phases["spool_bytes_peak"] = sample(registry, "spool_bytes")
        t0 = time.monotonic()
        broker.start()
        phases["start_s"] = time.monotonic() - t0
        wait_until(lambda: sample(registry, "spooling") == 0, "the spool to be replayed", timeout_s=2 * DEADLINE_S)
        phases["replayed_after_start_s"] = time.monotonic() - t0
        acked = sample(registry, "events_acked_total")
        wait_until(lambda: sample(registry, "events_acked_total") > acked + RATE,
                   "events to go straight to the broker again")
    producer.close(30)
    kafka.close()
    ids = consume_ids(broker.bootstrap, topic, traffic.count)

    stats = {**traffic.summary(), **phases, "spooled": spooled_in_outage,
             "replayed": sample(registry, "events_replayed_total"),
             "late_acked": sample(registry, "events_late_acked_total"),
             "received": len(ids), "duplicates": len(ids) - len(set(ids))}
    for name, value in stats.items():
        record_property(name, value)
    print("chaos outage:", stats)
    assert traffic.accepted[: traffic.count].all()
    assert {traffic.request_id(i) for i in range(traffic.count)} - set(ids) == set(), "events were lost"
    assert spooled_in_outage > 0.5 * RATE * OUTAGE_S  # the spool took the outage, not kafka-python's buffer
    assert sample(registry, "events_replayed_total") >= spooled_in_outage
    assert sum(registry.get_sample_value("inferwatch_collector_events_dropped_total", {"reason": r}) or 0
               for r in ("queue_full", "spool_full", "spool_error", "closed", "encode_error", "send_error")) == 0
    assert sample(registry, "spool_bytes") == 0 and list((tmp_path / "spool").glob("*.seg")) == []


def test_a_tiny_spool_fills_drops_are_counted_and_submit_stays_non_blocking(
        broker: KafkaBroker, tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, {topic: 1})
    kafka = transport(broker.bootstrap)
    registry = CollectorRegistry()
    spool = Spool(tmp_path / "spool", max_bytes=100_000, segment_bytes=20_000)
    producer = EventProducer(kafka.producer(), topic, registry=registry, capacity=2000, spool=spool,
                             ack_timeout_s=ACK_TIMEOUT_S)
    # Beside it, a collector without a spool sending to a topic its client has no metadata for: while the
    # broker is away, every send blocks its sender thread for max_block_ms, so its queue fills. Serving must
    # not notice: each submit is answered at once, the overflow is refused and counted.
    stuck_kafka = transport(broker.bootstrap)
    stuck_registry = CollectorRegistry()
    stuck = EventProducer(stuck_kafka.producer(), f"chaos-unknown-{uuid.uuid4().hex[:8]}", registry=stuck_registry,
                          capacity=100)
    with Traffic(producer) as traffic:
        wait_until(lambda: sample(registry, "events_acked_total") > 0, "the first acknowledgements")
        broker.stop()
        # (the broker would create the unknown topic on first use: the second collector starts only now)
        with Traffic(stuck, rate=RATE / 2) as stuck_traffic:
            wait_until(lambda: sample(stuck_registry, "events_dropped_total", reason="queue_full") > 0,
                       "the queue of the blocked collector to fill")
        wait_until(lambda: sample(registry, "events_dropped_total", reason="spool_full") > RATE * 5,
                   "the tiny spool to fill and drops to be counted")
    producer.close(5)
    kafka.close()
    stuck.close(5)
    stuck_kafka.close()
    dropped = {r: sample(registry, "events_dropped_total", reason=r) for r in ("spool_full", "queue_full")}
    stats = {**traffic.summary(), **dropped, "spooled": sample(registry, "events_spooled_total"),
             "acked": sample(registry, "events_acked_total"),
             "blocked_collector": {**stuck_traffic.summary(), "queue_full": sample(
                 stuck_registry, "events_dropped_total", reason="queue_full")}}
    for name, value in stats.items():
        record_property(name, value)
    print("chaos tiny spool:", stats)
    assert sample(registry, "spool_bytes") <= 100_000 and sample(registry, "spool_capacity_bytes") == 100_000
    # every submitted event is accounted for: acknowledged, spooled, or dropped with a reason
    assert sample(registry, "events_acked_total") + sample(registry, "events_spooled_total") \
        + sum(dropped.values()) == traffic.count
    assert stats["spooled"] == sum(r.events for r in Spool(tmp_path / "spool").read(100_000))
    # the blocked collector: every submit was answered; those refused were counted, the rest sent or dropped
    refused = int((~stuck_traffic.accepted[: stuck_traffic.count]).sum())
    assert refused == sample(stuck_registry, "events_dropped_total", reason="queue_full") > 0
    assert sample(stuck_registry, "events_submitted_total") == stuck_traffic.count
    assert sample(stuck_registry, "events_acked_total") + sum(
        sample(stuck_registry, "events_dropped_total", reason=r)
        for r in ("queue_full", "spool_full", "spool_error", "closed", "encode_error", "send_error")
    ) == stuck_traffic.count
