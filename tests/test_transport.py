"""The same contract tests against the in-process bus and a real Kafka broker through each Kafka client library
(kafka-python and confluent-kafka), plus specifics of each."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import pytest
from kafka import KafkaAdminClient
from prometheus_client import CollectorRegistry

from monitor.config import Config, KafkaConfig
from monitor.errors import CommitRejected, TransportError
from monitor.transport import (
    ConfluentTransport,
    Consumer,
    KafkaTransport,
    MemoryBus,
    Message,
    Producer,
    Transport,
    ensure_topics,
    read_tail,
)
from monitor.transport.kafka import wait_until_ready
from monitor.wiring import build_transport
from tests.support import DEADLINE_S, free_port, wait_until

PARTITIONS = 3
#: The Kafka backends (``kafka.client`` in the config); every Kafka test here runs once with each.
KAFKA_CLIENTS = ("kafka-python", "confluent")


class KafkaBroker(Protocol):
    """What the ``kafka_broker`` fixture (tests/conftest.py) offers."""

    bootstrap: str

    def start(self) -> str: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Harness:
    transport: Transport
    new_topic: Callable[[], str]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def kafka_transport(client: str, bootstrap: str, registry: CollectorRegistry | None = None,
                    **options: int) -> KafkaTransport | ConfluentTransport:
    """The transport of ``client`` (a ``kafka.client`` value), with the same settings for either library."""
    if client == "confluent":
        pytest.importorskip("confluent_kafka", reason="the confluent backend needs inferwatch[confluent]")
        return ConfluentTransport(bootstrap, client_id="inferwatch-test", registry=registry, **options)
    return KafkaTransport(bootstrap, client_id="inferwatch-test", registry=registry, **options)


@pytest.fixture(params=KAFKA_CLIENTS)
def kafka_client(request: pytest.FixtureRequest) -> str:
    """Each Kafka backend in turn."""
    return str(request.param)


@pytest.fixture(params=["memory", *(pytest.param(c, marks=pytest.mark.kafka) for c in KAFKA_CLIENTS)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    transport: Transport
    if request.param == "memory":
        transport = MemoryBus(partitions=PARTITIONS)

        def new_topic() -> str:
            return _name("t")

    else:
        bootstrap: str = request.getfixturevalue("kafka_bootstrap")
        transport = kafka_transport(request.param, bootstrap)

        def new_topic() -> str:
            name = _name("t")
            ensure_topics(bootstrap, {name: PARTITIONS})
            return name

    yield Harness(transport, new_topic)
    transport.close()


def drain(consumer: Consumer, count: int, deadline_s: float = DEADLINE_S) -> list[Message]:
    """Poll until ``count`` records arrived (fail after ``deadline_s``)."""
    out: list[Message] = []
    end = time.monotonic() + deadline_s
    while len(out) < count:
        if time.monotonic() > end:
            pytest.fail(f"got {len(out)} of {count} records within {deadline_s} s")
        out.extend(consumer.poll(0.5))
    return out


def send_all(
    producer: Producer, topic: str, records: Sequence[tuple[bytes | None, bytes]]
) -> list[BaseException | None]:
    results: list[BaseException | None] = []
    lock = threading.Lock()

    def done(exc: BaseException | None) -> None:
        with lock:
            results.append(exc)

    for key, value in records:
        producer.send(topic, value, key=key, on_done=done)
    producer.flush(DEADLINE_S)
    return results


def test_round_trip_value_key_headers(harness: Harness) -> None:
    topic = harness.new_topic()
    producer = harness.transport.producer()
    headers = [("schema", b"v1"), ("trace", b"\x00\xff"), ("schema", b"dup")]
    results: list[BaseException | None] = []
    producer.send(topic, b"payload", key=b"model-a", headers=headers, on_done=results.append)
    producer.send(topic, b"no-key")
    producer.flush(DEADLINE_S)
    assert results == [None]
    consumer = harness.transport.consumer([topic], _name("g"))
    got = {m.value: m for m in drain(consumer, 2)}
    first = got[b"payload"]
    assert (first.topic, first.key, first.headers) == (topic, b"model-a", tuple(headers))
    assert 0 <= first.partition < PARTITIONS and first.offset >= 0
    assert abs(first.timestamp_ms - time.time() * 1000) < 60_000
    assert got[b"no-key"].key is None and got[b"no-key"].headers == ()


def test_per_key_order_of_1000_records(harness: Harness) -> None:
    topic = harness.new_topic()
    records = [(f"k{i % 7}".encode(), f"k{i % 7}:{i}".encode()) for i in range(1000)]
    results = send_all(harness.transport.producer(), topic, records)
    assert len(results) == 1000 and not any(results)
    got = drain(harness.transport.consumer([topic], _name("g")), 1000, deadline_s=30)
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    partitions: dict[bytes | None, set[int]] = defaultdict(set)
    for m in got:
        by_key[m.key].append(int(m.value.split(b":")[1]))
        partitions[m.key].add(m.partition)
    assert sorted(i for seqs in by_key.values() for i in seqs) == list(range(1000))
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"key {key!r} out of order"
        assert len(partitions[key]) == 1
    assert len({p for ps in partitions.values() for p in ps}) > 1  # the keys do spread


def test_on_done_called_once_per_record_after_flush(harness: Harness) -> None:
    topic = harness.new_topic()
    results = send_all(harness.transport.producer(), topic, [(None, b"%d" % i) for i in range(300)])
    assert results == [None] * 300


def test_commit_then_new_member_resumes_and_gets_uncommitted_tail(harness: Harness) -> None:
    topic, group = harness.new_topic(), _name("g")
    send_all(harness.transport.producer(), topic, [(b"k%d" % (i % 5), b"%d" % i) for i in range(40)])
    first = harness.transport.consumer([topic], group)
    got = drain(first, 40)
    per_partition: dict[int, list[Message]] = defaultdict(list)
    for m in got:
        per_partition[m.partition].append(m)
    commit: dict[tuple[str, int], int] = {}
    tail: set[bytes] = set()
    for partition, msgs in per_partition.items():
        half = len(msgs) // 2
        commit[(topic, partition)] = msgs[half].offset if half < len(msgs) else msgs[-1].offset + 1
        tail.update(m.value for m in msgs[half:])
    first.commit(commit)
    first.close()
    second = harness.transport.consumer([topic], group)
    again = drain(second, len(tail))
    assert {m.value for m in again} == tail and len(again) == len(tail)
    for m in again:
        assert m.offset >= commit[(topic, m.partition)]
    # Committing everything leaves nothing for a third member.
    second.commit({(topic, p): msgs[-1].offset + 1 for p, msgs in per_partition.items()})
    second.close()
    third = harness.transport.consumer([topic], group)
    assert third.poll(1.0) == []


def test_committed_offsets_carry_their_metadata(harness: Harness) -> None:
    topic = harness.new_topic()
    send_all(harness.transport.producer(), topic, [(b"k", b"%d" % i) for i in range(5)])
    group = _name("g")
    consumer = harness.transport.consumer([topic], group)
    partition = drain(consumer, 5)[0].partition
    assert consumer.committed(topic, partition) is None
    consumer.commit({(topic, partition): 3}, {(topic, partition): "skip=42"})
    consumer.close()
    other = harness.transport.consumer([topic], group)
    assert other.committed(topic, partition) == (3, "skip=42")
    assert [m.offset for m in drain(other, 2)] == [3, 4]  # joins the group; resumes at the commit
    other.commit({(topic, partition): 4})
    assert other.committed(topic, partition) == (4, "")


def test_two_groups_each_see_all_records(harness: Harness) -> None:
    topic = harness.new_topic()
    send_all(harness.transport.producer(), topic, [(None, b"%d" % i) for i in range(50)])
    a = harness.transport.consumer([topic], _name("ga"))
    b = harness.transport.consumer([topic], _name("gb"))
    expected = {b"%d" % i for i in range(50)}
    assert {m.value for m in drain(a, 50)} == expected
    assert {m.value for m in drain(b, 50)} == expected


def test_poll_returns_batches_of_at_most_max_records_in_partition_then_offset_order(harness: Harness) -> None:
    topic = harness.new_topic()
    send_all(harness.transport.producer(), topic, [(b"k%d" % (i % 6), b"%d" % i) for i in range(200)])
    consumer = harness.transport.consumer([topic], _name("g"))
    got: list[Message] = []
    sizes: list[int] = []
    end = time.monotonic() + DEADLINE_S
    while len(got) < 200 and time.monotonic() < end:
        batch = consumer.poll(0.5, max_records=32)
        assert [(m.partition, m.offset) for m in batch] == sorted((m.partition, m.offset) for m in batch)
        got.extend(batch)
        sizes.append(len(batch))
    assert sorted(int(m.value) for m in got) == list(range(200))
    assert max(sizes) <= 32 and max(sizes) > 1  # batches of what is ready, bounded; not one record per poll
    for partition in {m.partition for m in got}:
        offsets = [m.offset for m in got if m.partition == partition]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_lag_is_what_is_left_of_each_partition_after_the_last_poll(harness: Harness) -> None:
    topic = harness.new_topic()
    send_all(harness.transport.producer(), topic, [(b"one-key", b"%d" % i) for i in range(30)])
    consumer = harness.transport.consumer([topic], _name("g"))
    got: list[Message] = []
    end = time.monotonic() + DEADLINE_S
    while len(got) < 10 and time.monotonic() < end:
        got.extend(consumer.poll(0.5, max_records=10 - len(got)))
    assert len(got) == 10
    tp = (topic, got[0].partition)  # one key: every record is in this partition
    lag = consumer.lag()
    assert lag[tp] == 20
    assert all(records == 0 for other, records in lag.items() if other != tp)  # the empty partitions
    drain(consumer, 20)
    assert consumer.lag()[tp] == 0


def test_rewind_reads_again_from_the_committed_offset_or_the_start(harness: Harness) -> None:
    topic = harness.new_topic()
    send_all(harness.transport.producer(), topic, [(b"one-key", b"%d" % i) for i in range(20)])
    consumer = harness.transport.consumer([topic], _name("g"))
    first = drain(consumer, 20)
    partition = first[0].partition
    assert [m.offset for m in first] == list(range(20))
    consumer.rewind()  # nothing committed: from the earliest record
    assert [m.offset for m in drain(consumer, 20)] == list(range(20))
    consumer.commit({(topic, partition): 5})
    consumer.rewind()
    assert [m.offset for m in drain(consumer, 15)] == list(range(5, 20))
    assert consumer.poll(0.5) == []


def test_poll_without_data_returns_empty_after_timeout(harness: Harness) -> None:
    consumer = harness.transport.consumer([harness.new_topic()], _name("g"))
    consumer.poll(0.2)  # let a Kafka consumer join its group first
    start = time.monotonic()
    assert consumer.poll(1.0) == []
    assert time.monotonic() - start >= 0.9  # it waited for data (how much longer depends on the machine's load)


def test_closed_clients_raise(harness: Harness) -> None:
    topic = harness.new_topic()
    consumer = harness.transport.consumer([topic], _name("g"))
    consumer.close()
    with pytest.raises(TransportError):
        consumer.poll(0.1)
    producer = harness.transport.producer()
    producer.close(5)
    with pytest.raises((TransportError,)):
        producer.send(topic, b"x")


# -- MemoryBus specifics -----------------------------------------------------------------------------


def test_memory_bound_fails_send_until_group_commits() -> None:
    bus = MemoryBus(partitions=1, max_records_per_partition=5)
    consumer = bus.consumer(["t"], "g")
    producer = bus.producer()
    results = send_all(producer, "t", [(None, b"%d" % i) for i in range(6)])
    assert results[:5] == [None] * 5
    assert isinstance(results[5], TransportError) and "bus full" in str(results[5])
    assert [m.value for m in consumer.poll(0)] == [b"%d" % i for i in range(5)]
    consumer.commit({("t", 0): 2})  # records 0 and 1 may now go
    assert send_all(producer, "t", [(None, b"5"), (None, b"6"), (None, b"7")])[:2] == [None, None]
    late = bus.consumer(["t"], "late")  # new group: starts at the earliest retained record
    assert [m.value for m in late.poll(0)] == [b"2", b"3", b"4", b"5", b"6"]
    bus.close()


def test_memory_keeps_what_every_group_read_only_up_to_the_retention_bound() -> None:
    """The backlog may grow to ``max_bytes_per_partition``; records every group committed past (or of a topic
    nobody reads) are kept only up to ``retain_bytes_per_partition``."""
    bus = MemoryBus(partitions=1, max_bytes_per_partition=1000, retain_bytes_per_partition=300)
    consumer = bus.consumer(["t"], "g")
    producer = bus.producer()
    values = [b"%03d" % i + b"x" * 97 for i in range(12)]  # 100 bytes each
    assert send_all(producer, "t", [(None, v) for v in values[:9]]) == [None] * 9  # a backlog past 300 bytes
    assert len(consumer.poll(0)) == 9
    consumer.commit({("t", 0): 9})
    assert send_all(producer, "t", [(None, values[9])]) == [None]
    assert [m.value[:3] for m in bus.tail("t", 100)] == [b"007", b"008", b"009"]  # what was read: 300 bytes
    unread = bus.producer()
    assert send_all(unread, "results", [(None, v) for v in values]) == [None] * 12
    assert [m.value[:3] for m in bus.tail("results", 100)] == [b"009", b"010", b"011"]
    bus.close()


def test_memory_group_members_share_partitions() -> None:
    bus = MemoryBus(partitions=4)
    a, b = bus.consumer(["t"], "g"), bus.consumer(["t"], "g")
    send_all(bus.producer(), "t", [(b"k%d" % i, b"%d" % i) for i in range(100)])
    got_a, got_b = a.poll(0, 1000), b.poll(0, 1000)
    assert {m.partition for m in got_a}.isdisjoint({m.partition for m in got_b})
    assert sorted(m.value for m in got_a + got_b) == sorted(b"%d" % i for i in range(100))
    assert a.rebalances == b.rebalances == 1
    a.commit({(m.topic, m.partition): m.offset + 1 for m in got_a})
    b.close()  # a owns every partition now, each read from the group's committed offset (b's: none, the start)
    assert {m.value for m in a.poll(0, 1000)} == {m.value for m in got_b}
    assert a.rebalances == 2
    a.rewind()  # and from the committed offsets again, its own partitions included
    assert {m.value for m in a.poll(0, 1000)} == {m.value for m in got_b}  # a committed its own
    bus.close()


def test_memory_commit_is_rejected_while_the_group_rebalances() -> None:
    bus = MemoryBus(partitions=2)
    send_all(bus.producer(), "t", [(b"k%d" % i, b"%d" % i) for i in range(10)])
    a = bus.consumer(["t"], "g")
    got = a.poll(0, 1000)
    b = bus.consumer(["t"], "g")  # a's assignment is stale until it polls again
    with pytest.raises(CommitRejected, match="rebalancing"):
        a.commit({(m.topic, m.partition): m.offset + 1 for m in got})
    assert bus.consumer(["t"], "other").committed("t", 0) is None  # nothing was written
    a.poll(0)
    assert a.rebalances == 2
    a.commit({("t", 0): 0})  # settled: accepted
    b.close()
    bus.close()


def test_a_new_member_makes_the_group_read_again_from_the_last_commit(harness: Harness) -> None:
    """What the pipeline relies on (Consumer.rebalances, Consumer.rewind): a member sees each rebalance, and
    after a rewind reads every partition it owns from the committed offset again, including those it kept."""
    topic, group = harness.new_topic(), _name("g")
    values = {b"%d" % i for i in range(30)}
    send_all(harness.transport.producer(), topic, [(b"k%d" % i, v) for i, v in enumerate(sorted(values))])
    a = harness.transport.consumer([topic], group)
    assert {m.value for m in drain(a, 30)} == values and a.rebalances >= 1  # nothing committed
    alone = a.rebalances  # (a Kafka member may be assigned twice as the topic's metadata arrives)
    b = harness.transport.consumer([topic], group)
    seen: dict[str, set[bytes]] = {"a": set(), "b": set()}

    def settled() -> bool:
        for name, member in (("a", a), ("b", b)):
            before = member.rebalances
            got = member.poll(0.1)
            if member.rebalances != before:  # as the pipeline does: forget, rewind, ignore this poll's records
                seen[name].clear()
                member.rewind()
                continue
            seen[name].update(m.value for m in got)
        return a.rebalances > alone and b.rebalances >= 1 and seen["a"] | seen["b"] == values

    wait_until(settled, "both members assigned and every record read again from the (empty) commit")
    assert not seen["a"] & seen["b"]  # the partitions are split, not shared


def test_a_member_about_to_lose_partitions_is_told_inside_poll_and_may_commit_them(harness: Harness) -> None:
    """What the pipeline's revoke listener relies on: before a partition moves to a new member, the member that
    had it hears which ones go, from inside its poll, and a commit it makes then is what the group keeps."""
    topic, group = harness.new_topic(), _name("g")
    send_all(harness.transport.producer(), topic, [(b"k%d" % i, b"%d" % i) for i in range(30)])
    a = harness.transport.consumer([topic], group)
    revoked: list[tuple[str, int]] = []

    def listener(partitions: Sequence[tuple[str, int]]) -> None:
        revoked.extend(partitions)
        a.commit({tp: 1 for tp in partitions}, {tp: "skip=1" for tp in partitions})

    a.on_revoke(listener)
    drain(a, 30)
    b = harness.transport.consumer([topic], group)
    wait_until(lambda: (a.poll(0.1), b.poll(0.1)) and bool(revoked) and b.rebalances >= 1,
               "the first member told its partitions are revoked")
    assert all(t == topic for t, _ in revoked)
    for tp in set(revoked):
        assert b.committed(*tp) == (1, "skip=1")
    a.on_revoke(None)


def test_memory_poll_wakes_on_send_and_close() -> None:
    """A poll waiting an hour returns as soon as a record arrives, and raises as soon as the bus closes: the
    generous deadline below is a minute, so a poll that only looked again at its timeout cannot pass."""
    bus = MemoryBus()
    consumer = bus.consumer(["t"], "g")
    outcome: list[object] = []

    def poll() -> None:
        try:
            outcome.append([m.value for m in consumer.poll(3600)])
        except TransportError as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=poll, daemon=True)
    waiting.start()
    bus.producer().send("t", b"x")
    wait_until(lambda: outcome, "the waiting poll to return the record")
    assert outcome == [[b"x"]]
    waiting = threading.Thread(target=poll, daemon=True)
    waiting.start()
    bus.close()
    wait_until(lambda: len(outcome) == 2, "the waiting poll to end when the bus closed")
    assert isinstance(outcome[1], TransportError)


# -- Kafka specifics ---------------------------------------------------------------------------------


def test_wait_until_ready_names_unreachable_address_and_its_timeout() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(TransportError, match=f"unreachable at {address} after 1 s"):
        wait_until_ready(address, timeout_s=1.0)


def test_clients_for_an_unreachable_broker_fail_naming_it(kafka_client: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    transport = kafka_transport(kafka_client, address, request_timeout_ms=1000)
    try:
        with pytest.raises(TransportError, match=address):
            transport.producer()
        with pytest.raises(TransportError, match=address):
            transport.consumer(["t"], "g")
    finally:
        transport.close()


@pytest.mark.kafka
def test_wait_until_ready_and_ensure_topics_idempotent(kafka_bootstrap: str) -> None:
    wait_until_ready(kafka_bootstrap, timeout_s=10)
    name = _name("t")
    ensure_topics(kafka_bootstrap, {name: 2})
    ensure_topics(kafka_bootstrap, {name: 2})  # already there: no error
    ensure_topics(kafka_bootstrap, {name: 5})  # an existing topic is left as it is
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="inferwatch-test")
    try:
        (topic,) = admin.describe_topics([name])
    finally:
        admin.close()
    assert (topic["name"], topic["error_code"]) == (name, 0)
    assert sorted(p["partition_index"] for p in topic["partitions"]) == [0, 1]


@pytest.mark.kafka
def test_broker_restart_keeps_data_offsets_and_address(kafka_broker: KafkaBroker, kafka_client: str) -> None:
    bootstrap = kafka_broker.bootstrap
    topic, group = _name("t"), _name("g")
    ensure_topics(bootstrap, {topic: 1})
    transport = kafka_transport(kafka_client, bootstrap)
    try:
        producer = transport.producer()
        assert send_all(producer, topic, [(None, b"%d" % i) for i in range(4)]) == [None] * 4
        consumer = transport.consumer([topic], group)
        drain(consumer, 4)
        consumer.commit({(topic, 0): 2})
        consumer.close()
        kafka_broker.stop()
        assert kafka_broker.start() == bootstrap
        assert send_all(producer, topic, [(None, b"4")]) == [None]  # the old producer reconnects
        again = transport.consumer([topic], group)
        assert [m.value for m in drain(again, 3)] == [b"2", b"3", b"4"]
    finally:
        transport.close()


@pytest.mark.kafka
def test_a_record_the_broker_refuses_does_not_end_the_producer(kafka_bootstrap: str, kafka_client: str) -> None:
    """kafka-python turns a non-retriable produce error of an idempotent producer (here a record over the topic's
    ``max.message.bytes``) into a fatal state that fails every later record; the transport replaces the client.
    librdkafka's idempotent producer fails that record only and goes on with the same client."""
    topic = _name("t")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="inferwatch-test")
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1,
                                     "configs": {"max.message.bytes": "2048"}}}, wait_for_metadata=True)
    finally:
        admin.close()
    registry = CollectorRegistry()
    transport = kafka_transport(kafka_client, kafka_bootstrap, registry=registry)
    try:
        producer = transport.producer()
        assert send_all(producer, topic, [(None, b"before")]) == [None]
        (refused,) = send_all(producer, topic, [(None, b"x" * 10_000)])
        assert isinstance(refused, TransportError) and re.search(r"(?i)size.?too.?large", str(refused))
        assert send_all(producer, topic, [(None, b"after-%d" % i) for i in range(5)]) == [None] * 5
        assert registry.get_sample_value("inferwatch_transport_producer_rebuilds_total",
                                         {"reason": "fatal_error"}) == (1 if kafka_client == "kafka-python" else 0)
        consumer = transport.consumer([topic], _name("g"))
        assert [m.value for m in drain(consumer, 6)] == [b"before"] + [b"after-%d" % i for i in range(5)]
    finally:
        transport.close()


@pytest.mark.kafka
def test_a_fatal_error_replaces_the_confluent_client(kafka_bootstrap: str) -> None:
    """With librdkafka's gap-less guarantee on, a record the broker refuses is a fatal error that ends the client
    (confluent-kafka raises it from poll/flush, not through error_cb): the transport replaces the client, the
    refused record is reported failed exactly once, and the records after it are delivered."""
    pytest.importorskip("confluent_kafka", reason="the confluent backend needs inferwatch[confluent]")
    topic = _name("t")
    ensure_topics(kafka_bootstrap, {topic: 1}, configs={topic: {"max.message.bytes": "2048"}})
    registry = CollectorRegistry()
    transport = ConfluentTransport(kafka_bootstrap, client_id="inferwatch-test", registry=registry,
                                   extra_producer={"enable.gapless.guarantee": True})
    try:
        producer = transport.producer()
        assert send_all(producer, topic, [(None, b"before")]) == [None]
        (refused,) = send_all(producer, topic, [(None, b"x" * 10_000)])
        # its own delivery report, or (when librdkafka ran the report while the fatal error was already set, so
        # that the callback could not run) the replaced client's, which names the fatal error
        assert isinstance(refused, TransportError) and ("SIZE_TOO_LARGE" in str(refused)
                                                        or "Message size too large" in str(refused)), refused
        after = wait_until(lambda: send_all(producer, topic, [(None, b"after")]) == [None],
                           "a record delivered by the replaced client")  # a send may meet the 1 s rebuild interval
        assert after and registry.get_sample_value("inferwatch_transport_producer_rebuilds_total",
                                                   {"reason": "fatal_error"}) == 1
        consumer = transport.consumer([topic], _name("g"))
        assert [m.value for m in drain(consumer, 2)][:2] == [b"before", b"after"]
    finally:
        transport.close()


@pytest.mark.kafka
def test_kafka_client_in_the_config_picks_the_backend(kafka_bootstrap: str, kafka_client: str) -> None:
    if kafka_client == "confluent":
        pytest.importorskip("confluent_kafka", reason="the confluent backend needs inferwatch[confluent]")
    config = Config(models=[], kafka=KafkaConfig(bootstrap=kafka_bootstrap, client=kafka_client))
    transport = build_transport(config)
    try:
        assert type(transport) is {"kafka-python": KafkaTransport, "confluent": ConfluentTransport}[kafka_client]
    finally:
        transport.close()


@pytest.mark.kafka
def test_kafka_assignment_cooperative_revokes_only_the_partitions_that_move(
        kafka_bootstrap: str, kafka_client: str) -> None:
    """``kafka.assignment: cooperative``: when a second member joins, the first gives up only the partitions
    that move to the newcomer and keeps the others (eager members give up all three: see the revoke test)."""
    if kafka_client == "confluent":
        pytest.importorskip("confluent_kafka", reason="the confluent backend needs inferwatch[confluent]")
    topic, group = _name("t"), _name("g")
    ensure_topics(kafka_bootstrap, {topic: PARTITIONS})
    config = Config(models=[], kafka=KafkaConfig(bootstrap=kafka_bootstrap, client=kafka_client,
                                                 assignment="cooperative", create_topics=False))
    transport = build_transport(config)
    try:
        send_all(transport.producer(), topic, [(b"k%d" % i, b"%d" % i) for i in range(30)])
        a = transport.consumer([topic], group)
        revoked: list[tuple[str, int]] = []
        a.on_revoke(revoked.extend)
        drain(a, 30)
        b = transport.consumer([topic], group)
        wait_until(lambda: (a.poll(0.1), b.poll(0.1)) and bool(revoked) and b.rebalances >= 1
                   and len(a.lag()) + len(b.lag()) == PARTITIONS, "the newcomer assigned its partitions")
        kept = set(a.lag())
        assert 0 < len(kept) < PARTITIONS and set(revoked) == {(topic, p) for p in range(PARTITIONS)} - kept
    finally:
        transport.close()


@pytest.mark.kafka
def test_both_clients_put_a_key_on_the_same_partition(kafka_bootstrap: str) -> None:
    """Collectors write with kafka-python, a detector may write with confluent: one model version's records must
    share a partition whichever client wrote them (the Java client's murmur2 hashing)."""
    topic = _name("keys")
    ensure_topics(kafka_bootstrap, {topic: 8})
    keys = [f"model-{i}/v{i % 3}".encode() for i in range(40)]
    placed: dict[str, dict[bytes, int]] = {}
    for client in KAFKA_CLIENTS:
        transport = kafka_transport(client, kafka_bootstrap)
        try:
            producer = transport.producer()
            for key in keys:
                producer.send(topic, client.encode(), key=key)
            producer.flush(DEADLINE_S)
            consumer = transport.consumer([topic], _name("g"))
            got = drain(consumer, len(keys) * (1 + len(placed)))
            placed[client] = {m.key: m.partition for m in got if m.value == client.encode() and m.key is not None}
        finally:
            transport.close()
    first, *others = placed.values()
    assert len(first) == len(keys) and len(set(first.values())) > 1
    assert all(other == first for other in others)


@pytest.mark.kafka
def test_read_tail_gives_the_last_records_of_every_partition(kafka_bootstrap: str) -> None:
    topic = _name("tail")
    ensure_topics(kafka_bootstrap, {topic: 3})
    assert read_tail(kafka_bootstrap, _name("absent"), 5) == []  # a topic not there yet has no tail
    transport = KafkaTransport(kafka_bootstrap)
    try:
        producer = transport.producer()
        for i in range(30):
            producer.send(topic, f"{i}".encode(), key=f"k{i % 7}".encode(), headers=[("n", f"{i}".encode())])
        producer.flush(DEADLINE_S)
        everything = drain(transport.consumer([topic], _name("g")), 30)
    finally:
        transport.close()
    tail = read_tail(kafka_bootstrap, topic, 4)
    expected = []
    for partition in range(3):
        mine = sorted((m for m in everything if m.partition == partition), key=lambda m: m.offset)
        expected += [(m.partition, m.offset, m.value, m.headers) for m in mine[-4:]]
    assert [(m.partition, m.offset, m.value, m.headers) for m in tail] == expected


def test_memory_tail_gives_the_last_records_of_every_partition() -> None:
    bus = MemoryBus(partitions=2)
    producer = bus.producer()
    for i in range(9):
        producer.send("t", f"{i}".encode(), key=b"a" if i % 3 else b"b")
    by_partition: dict[int, list[bytes]] = {}
    for m in bus.tail("t", 100):
        by_partition.setdefault(m.partition, []).append(m.value)
    assert sorted(v for values in by_partition.values() for v in values) == [f"{i}".encode() for i in range(9)]
    assert [m.value for m in bus.tail("t", 2)] == [v for p in sorted(by_partition) for v in by_partition[p][-2:]]
    assert bus.tail("absent", 3) == []
