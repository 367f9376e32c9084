"""The producer heals itself: a broker outage longer than kafka-python's delivery timeout, then the broker back.

kafka-python 3.0.12's idempotent producer resets its producer id when a batch it had already sent expires, and then
never sends again (see monitor/transport/kafka.py). Here the delivery timeout is shortened to 3 s so that a short
outage does what a two-minute one does with the default: the transport must notice, replace its client, and the
collector's spool must replay, with no process restart and no event lost.

The same outage runs through confluent-kafka (``kafka.client: confluent``): librdkafka's idempotent producer fails
the expired records and goes on with the same client (no rebuild); the spool must replay just the same.

The test stops the session broker and always starts it again (``finally``), since other tests share it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collectors import EventProducer, Events
from collectors.spool import Spool
from monitor.events import InferenceEvent, decode_record
from monitor.transport import ConfluentTransport, KafkaTransport, Transport, ensure_topics
from tests.conftest import KafkaBroker
from tests.support import DEADLINE_S, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DELIVERY_TIMEOUT_MS = 3000
RATE = 200  # events per second while the test runs, one submit() each


class Traffic:
    """A serving thread submitting one event at a time, at a steady rate, until stopped."""

    def __init__(self, producer: EventProducer, rate: float = RATE) -> None:
        self.producer = producer
        self.rate = rate
        self.prefix = uuid.uuid4().hex[:8]
        self.count = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)

    def request_id(self, i: int) -> str:
        return f"{self.prefix}-{i:07d}"

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(0.005):
            due = int((time.monotonic() - started) * self.rate)
            while self.count < due:
                i = self.count
                event = InferenceEvent(self.request_id(i), 1.7e9 + i / self.rate, "recovery", "1", "classification",
                                       features={"x": float(i % 97)}, prediction=i % 3)
                self.refused += not self.producer.submit(Events((event,)))
                self.count += 1


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def consume_ids(bootstrap: str, topic: str, expected: set[str]) -> set[str]:
    """The request ids on ``topic``, read by a fresh group until every expected one arrived (or the deadline)."""
    kafka = KafkaTransport(bootstrap)
    consumer = kafka.consumer([topic], f"check-{uuid.uuid4().hex[:8]}")
    ids: set[str] = set()

    def all_arrived() -> bool:
        ids.update(e.request_id for m in consumer.poll(0.5, max_records=2000) for e in decode_record(m.value))
        return expected <= ids

    try:
        wait_until(all_arrived, f"{len(expected)} request ids on {topic}", timeout_s=2 * DEADLINE_S)
    except AssertionError:
        pass  # the caller's comparison names what is missing
    finally:
        kafka.close()
    return ids


def recovery_transport(client: str, bootstrap: str, registry: CollectorRegistry) -> Transport:
    """The Kafka backend ``client`` with a 3 s delivery timeout and quick reconnects."""
    if client == "confluent":
        pytest.importorskip("confluent_kafka", reason="the confluent backend needs inferwatch[confluent]")
        return ConfluentTransport(bootstrap, client_id="recovery", request_timeout_ms=1000, max_block_ms=500,
                                  extra_producer={"message.timeout.ms": DELIVERY_TIMEOUT_MS,
                                                  "reconnect.backoff.max.ms": 500},
                                  registry=registry)
    return KafkaTransport(bootstrap, client_id="recovery", request_timeout_ms=1000, max_block_ms=500,
                          extra_producer={"delivery_timeout_ms": DELIVERY_TIMEOUT_MS, "reconnect_backoff_max_ms": 500},
                          registry=registry)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_an_outage_longer_than_the_delivery_timeout_heals_without_restart_and_loses_nothing(
        broker: KafkaBroker, tmp_path: Path, record_property: Callable[[str, object], None], client: str) -> None:
    topic = f"recovery-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, {topic: 1})
    registry = CollectorRegistry()
    kafka = recovery_transport(client, broker.bootstrap, registry)
    transport_producer = kafka.producer()
    producer = EventProducer(transport_producer, topic, registry=registry, spool=Spool(tmp_path / "spool"),
                             ack_timeout_s=10.0)

    def collector(name: str, **labels: str) -> float:
        return value(registry, f"inferwatch_collector_{name}", **labels)

    def rebuilds(reason: str = "producer_id_reset") -> float:
        return value(registry, "inferwatch_transport_producer_rebuilds_total", reason=reason)

    try:
        with Traffic(producer) as traffic:
            wait_until(lambda: collector("events_acked_total") > 0, "the first acknowledgements")
            broker.stop()  # under traffic: batches in flight fail, are retried, and expire after 3 s
            down_at = time.monotonic()
            if client == "kafka-python":
                # The expired batches reset kafka-python's producer id; the next send (a spool probe) finds the
                # client stuck and replaces it. Without the fix this never happens and the test fails here.
                wait_until(lambda: rebuilds() >= 1, "the stuck producer to be replaced")
            wait_until(lambda: collector("events_spooled_total") > 0, "events to go to the spool")
            # The outage lasts at least twice the delivery timeout, so that the new client's own records
            # expire too while the broker is away (time passing is the behaviour under test here).
            time.sleep(max(0.0, down_at + 2 * DELIVERY_TIMEOUT_MS / 1000 - time.monotonic()))
            outage_s = time.monotonic() - down_at
            broker.start()
            acked_before = collector("events_acked_total")
            wait_until(lambda: collector("spooling") == 0, "the spool to be replayed after the broker came back",
                       timeout_s=2 * DEADLINE_S)
            wait_until(lambda: collector("events_acked_total") > acked_before + RATE,
                       "new events to be acknowledged straight from the queue")
        assert producer.flush(DEADLINE_S), "events still in memory after the traffic stopped"
        assert collector("spooling") == 0  # acknowledged by the broker, not merely spooled
    finally:
        producer.close(DEADLINE_S)
        kafka.close()

    expected = {traffic.request_id(i) for i in range(traffic.count)}
    received = consume_ids(broker.bootstrap, topic, expected)
    stats = {"events": traffic.count, "outage_s": round(outage_s, 1), "delivery_timeout_s": DELIVERY_TIMEOUT_MS / 1000,
             "rebuilds": getattr(transport_producer, "rebuilds", None),
             "rebuilds_producer_id_reset": rebuilds(), "rebuilds_fatal_error": rebuilds("fatal_error"),
             "spooled": collector("events_spooled_total"), "replayed": collector("events_replayed_total"),
             "late_acked": collector("events_late_acked_total"), "received": len(received)}
    for name, stat in stats.items():
        record_property(name, stat)
    print("producer recovery:", stats)
    assert traffic.refused == 0
    assert expected - received == set(), f"{len(expected - received)} of {len(expected)} events never arrived"
    assert stats["rebuilds"] == sum(rebuilds(r) for r in ("producer_id_reset", "fatal_error", "io_thread_stopped",
                                                          "closed"))
    # kafka-python's client must be replaced; librdkafka's goes on by itself (it bumps its producer epoch)
    assert rebuilds() >= 1 if client == "kafka-python" else stats["rebuilds"] == 0
    assert collector("events_replayed_total") >= collector("events_spooled_total") > 0
    assert sum(value(registry, "inferwatch_collector_events_dropped_total", reason=r)
               for r in ("queue_full", "spool_full", "spool_error", "closed", "encode_error", "send_error")) == 0
    assert list((tmp_path / "spool").glob("*.seg")) == []
