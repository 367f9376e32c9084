"""TopicStore: alert state in a compacted Kafka topic keyed by fingerprint, against the session's real broker."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Protocol

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from monitor.alerts.topic_state import TopicStore
from monitor.errors import TransportError
from monitor.transport.kafka import ensure_topics
from tests.support import wait_until

pytestmark = pytest.mark.kafka


class KafkaBroker(Protocol):
    """What the ``broker`` fixture (tests/conftest.py) offers."""

    bootstrap: str

    def start(self) -> str: ...

    def stop(self) -> None: ...


def _topic() -> str:
    return f"alerts-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def stores(kafka_bootstrap: str) -> Iterator[list[TopicStore]]:
    """Stores a test makes (append them); all closed at the end."""
    made: list[TopicStore] = []
    yield made
    for store in made:
        store.close()


def _store(stores: list[TopicStore], bootstrap: str, topic: str) -> TopicStore:
    store = TopicStore(bootstrap, topic, request_timeout_ms=10000)
    stores.append(store)
    return store


def _cleanup_policy(bootstrap: str, topic: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="inferwatch-test")
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, ["cleanup.policy"])],
                                           config_filter="all")
    finally:
        admin.close()
    return str(described["topic"][topic]["cleanup.policy"]["value"])


def _produce_raw(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="inferwatch-test", acks="all")
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=30)


def test_saved_states_come_back_in_a_new_store_last_one_wins(kafka_bootstrap: str,
                                                              stores: list[TopicStore]) -> None:
    topic = _topic()
    writer = _store(stores, kafka_bootstrap, topic)
    assert writer.load() == {}
    writer.save({"fp-a": {"status": "firing", "since": 1.5}, "fp-b": {"status": "pending", "n": 1}})
    writer.save({"fp-a": {"status": "resolved", "since": 2.5, "labels": {"model": "m"}}})
    writer.save({})  # nothing to write: no error

    states = _store(stores, kafka_bootstrap, topic).load()
    assert states == {"fp-a": {"status": "resolved", "since": 2.5, "labels": {"model": "m"}},
                      "fp-b": {"status": "pending", "n": 1}}


def test_none_deletes_a_fingerprint(kafka_bootstrap: str, stores: list[TopicStore]) -> None:
    topic = _topic()
    writer = _store(stores, kafka_bootstrap, topic)
    writer.load()
    writer.save({"fp-a": {"status": "firing"}, "fp-b": {"status": "firing"}})
    writer.save({"fp-a": None, "fp-gone": None})  # a tombstone for a key never written is harmless too

    assert _store(stores, kafka_bootstrap, topic).load() == {"fp-b": {"status": "firing"}}


def test_topic_is_created_compacted_and_empty(kafka_bootstrap: str, stores: list[TopicStore]) -> None:
    topic = _topic()
    store = _store(stores, kafka_bootstrap, topic)
    assert store.load() == {}
    assert store.skipped == 0
    assert _cleanup_policy(kafka_bootstrap, topic) == "compact"
    assert store.load() == {}  # the topic exists now: left as it is, still empty


def test_existing_topic_that_is_not_compacted_is_left_alone_with_a_warning(
        kafka_bootstrap: str, stores: list[TopicStore], caplog: pytest.LogCaptureFixture) -> None:
    topic = _topic()
    ensure_topics(kafka_bootstrap, {topic: 1})
    store = _store(stores, kafka_bootstrap, topic)
    with caplog.at_level(logging.WARNING, logger="monitor.alerts.topic_state"):
        assert store.load() == {}
    assert _cleanup_policy(kafka_bootstrap, topic) == "delete"
    assert any("cleanup.policy=delete" in r.getMessage() and topic in r.getMessage() for r in caplog.records)


def test_undecodable_records_are_skipped_with_a_warning(kafka_bootstrap: str, stores: list[TopicStore],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    topic = _topic()
    writer = _store(stores, kafka_bootstrap, topic)
    writer.load()
    writer.save({"fp-a": {"status": "firing"}, "fp-b": {"status": "firing"}, "fp-c": {"status": "firing"}})
    # (A compacted topic refuses records without a key, InvalidRecordError: the broker keeps those out.)
    _produce_raw(kafka_bootstrap, topic, [
        (b"fp-garbage", b"\xff\xfenot json"),
        (b"fp-list", b"[1, 2]"),
        (b"fp-nan", b'{"x": NaN}'),
        (b"fp-b", b"{truncated"),  # the latest record of fp-b: its earlier state is no longer its state
        (b"\xff", b'{"status": "firing"}'),  # a key that is not UTF-8
    ])
    writer.save({"fp-d": {"status": "pending"}})

    store = _store(stores, kafka_bootstrap, topic)
    with caplog.at_level(logging.WARNING, logger="monitor.alerts.topic_state"):
        states = store.load()
    assert states == {"fp-a": {"status": "firing"}, "fp-c": {"status": "firing"}, "fp-d": {"status": "pending"}}
    assert store.skipped == 5
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("fp-garbage" in m and "undecodable" in m for m in messages)
    assert any("skipped 5 undecodable record(s)" in m and topic in m for m in messages)


def test_save_after_a_new_store_loaded_keeps_writing_to_the_same_keys(kafka_bootstrap: str,
                                                                      stores: list[TopicStore]) -> None:
    """A restarted daemon (a new store) overwrites and deletes what the previous one wrote."""
    topic = _topic()
    first = _store(stores, kafka_bootstrap, topic)
    first.load()
    first.save({"fp-a": {"v": 1}, "fp-b": {"v": 1}})
    first.close()

    second = _store(stores, kafka_bootstrap, topic)
    assert second.load() == {"fp-a": {"v": 1}, "fp-b": {"v": 1}}
    second.save({"fp-a": {"v": 2}, "fp-b": None})
    wait_until(lambda: _store(stores, kafka_bootstrap, topic).load() == {"fp-a": {"v": 2}},
               "a third store to see the second one's writes")


def test_unjsonable_state_sends_nothing(kafka_bootstrap: str, stores: list[TopicStore]) -> None:
    topic = _topic()
    store = _store(stores, kafka_bootstrap, topic)
    store.load()
    with pytest.raises(ValueError):
        store.save({"fp-a": {"v": 1}, "fp-b": {"v": float("nan")}})
    assert _store(stores, kafka_bootstrap, topic).load() == {}


def test_save_after_close_is_an_error_naming_the_topic(kafka_bootstrap: str, stores: list[TopicStore]) -> None:
    topic = _topic()
    store = _store(stores, kafka_bootstrap, topic)
    store.load()
    store.save({"fp-a": {"v": 1}})
    store.close()
    store.close()  # idempotent
    with pytest.raises(TransportError, match=topic):
        store.save({"fp-a": {"v": 2}})


def test_unreachable_broker_is_a_transport_error_naming_it() -> None:
    from tests.support import free_port

    bootstrap = f"127.0.0.1:{free_port()}"
    store = TopicStore(bootstrap, _topic(), request_timeout_ms=1000)
    try:
        with pytest.raises(TransportError, match=bootstrap):
            store.load()
        with pytest.raises(TransportError, match=bootstrap):
            store.save({"fp-a": {"v": 1}})
    finally:
        store.close()


@pytest.mark.slow
def test_a_save_that_fails_while_the_broker_is_down_is_retried_with_a_new_producer(
        broker: KafkaBroker, stores: list[TopicStore]) -> None:
    topic = _topic()
    store = TopicStore(broker.bootstrap, topic, request_timeout_ms=3000)
    stores.append(store)
    store.load()
    store.save({"fp-a": {"v": 1}})
    broker.stop()
    with pytest.raises(TransportError, match=topic):
        store.save({"fp-a": {"v": 2}, "fp-b": {"v": 2}})
    broker.start()
    # The failed producer was dropped; the caller saves the same changes again once the broker is back.

    def saved() -> bool:
        store.save({"fp-a": {"v": 2}, "fp-b": {"v": 2}})
        return True

    wait_until(saved, "a save to succeed again")
    assert _store(stores, broker.bootstrap, topic).load() == {"fp-a": {"v": 2}, "fp-b": {"v": 2}}


def test_daemons_of_different_groups_share_the_topic_without_seeing_each_others_alerts(
        kafka_bootstrap: str, stores: list[TopicStore]) -> None:
    topic = _topic()
    mine = TopicStore(kafka_bootstrap, topic, namespace="detect-a")
    theirs = TopicStore(kafka_bootstrap, topic, namespace="detect-b")
    stores += [mine, theirs]
    assert mine.load() == {} and theirs.load() == {}
    mine.save({"fp1": {"status": "firing"}})
    theirs.save({"fp1": {"status": "pending"}, "fp2": {"status": "firing"}})
    again = TopicStore(kafka_bootstrap, topic, namespace="detect-a")
    stores.append(again)
    assert again.load() == {"fp1": {"status": "firing"}}
