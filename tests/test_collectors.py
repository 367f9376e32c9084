"""The collector: batching producer, bounded queue with counted drops, torch hooks, fail-open capture."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from collectors import EventProducer, Events
from monitor.events import BATCH_SCHEMA, Event, InferenceEvent, decode_record, encode_event
from monitor.transport import MemoryBus, Message
from tests.support import DEADLINE_S, events, wait_until


def drain(bus: MemoryBus, topic: str, timeout_s: float = 5.0) -> list[Message]:
    consumer = bus.consumer([topic], "reader")
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = consumer.poll(0.1)
        if not got and out:
            break
        out += got
    return out


def test_events_arrive_batched_keyed_and_with_cloudevents_headers() -> None:
    bus = MemoryBus()
    registry = CollectorRegistry()
    # A linger longer than the test: batches close by count (or at close), never because the submitting thread
    # was slow, so the sizes below do not depend on the machine's load.
    producer = EventProducer(bus.producer(), "events", registry=registry, batch_events=100, linger_s=DEADLINE_S)
    rng = np.random.default_rng(0)
    sent = events(250, rng) + events(30, rng, model="other")
    for i in range(0, len(sent), 10):
        assert producer.submit(Events(sent[i:i + 10]))
    producer.close()
    records = drain(bus, "events")
    received = [e for r in records for e in decode_record(r.value)]
    assert sorted(e.request_id for e in received) == sorted(e.request_id for e in sent)
    for r in records:
        headers = dict(r.headers)
        assert headers["ce_specversion"] == b"1.0" and headers["content-type"] == b"application/json"
        assert r.key == decode_record(r.value)[0].key.encode()
        if len(decode_record(r.value)) > 1:
            assert headers["ce_type"] == BATCH_SCHEMA.encode()
    assert sorted(len(decode_record(r.value)) for r in records) == [30, 50, 100, 100]  # bounded by count, per key
    assert registry.get_sample_value("inferwatch_collector_events_acked_total") == len(sent)


class SlowCapture:
    """A capture whose conversion blocks until released: the sender thread is stuck, the queue fills."""

    def __init__(self, items: Sequence[Event], release: threading.Event) -> None:
        self.items, self.release = items, release
        self.entered, self.returned = threading.Event(), threading.Event()

    def __len__(self) -> int:
        return len(self.items)

    def events(self) -> Sequence[Event]:
        self.entered.set()
        self.release.wait(DEADLINE_S)
        self.returned.set()
        return self.items


def test_full_queue_drops_are_counted_and_submit_never_blocks() -> None:
    registry = CollectorRegistry()
    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events", registry=registry, capacity=50)
    release = threading.Event()
    rng = np.random.default_rng(1)
    slow = SlowCapture(events(10, rng), release)
    assert producer.submit(slow)
    wait_until(slow.entered.is_set, "the sender thread inside the slow capture")
    accepted = [producer.submit(Events(events(10, rng))) for _ in range(10)]
    # Every submit returned while the sender was still stuck: none of them waited for room in the queue.
    assert not slow.returned.is_set()
    assert accepted == [True] * 4 + [False] * 6  # 10 being converted + 40 queued fill the 50
    assert registry.get_sample_value("inferwatch_collector_events_dropped_total", {"reason": "queue_full"}) == 60
    release.set()
    producer.close()
    assert len([e for r in drain(bus, "events") for e in decode_record(r.value)]) == 50
    assert producer.submit(Events(events(1, rng))) is False
    assert registry.get_sample_value("inferwatch_collector_events_dropped_total", {"reason": "closed"}) == 1


def test_core_packages_import_without_torch() -> None:
    code = ("import sys, monitor.cli, monitor.daemon, monitor.pipeline, collectors, detectors; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


torch = pytest.importorskip("torch")


def test_classifier_hook_records_each_sample() -> None:
    from collectors import IMAGE_FEATURES, ClassifierCollector

    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    collector = ClassifierCollector(model, producer, "cnn", "1", attributes={"pod": "p-1"})
    x = torch.rand(6, 1, 8, 8)
    logits = collector(x, request_ids=[f"r{i}" for i in range(6)])
    producer.close()
    received = [e for r in drain(bus, "events") for e in decode_record(r.value)]
    assert [e.request_id for e in received] == [f"r{i}" for i in range(6)]
    first = received[0]
    assert isinstance(first, InferenceEvent)
    assert tuple(first.features) == IMAGE_FEATURES
    assert first.features["mean"] == pytest.approx(float(x[0].mean()), rel=1e-5)
    assert first.prediction == int(logits[0].argmax())
    assert first.probabilities is not None and sum(first.probabilities) == pytest.approx(1.0, abs=1e-4)
    assert first.latency is not None and first.latency.total_s > 0
    assert (first.batch_size, first.device, first.attributes) == (6, "cpu", {"pod": "p-1"})


def test_capture_failure_never_reaches_the_caller() -> None:
    from collectors import ClassifierCollector

    def broken(_: object) -> object:
        raise RuntimeError("summary bug")

    producer = EventProducer(MemoryBus().producer(), "events")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    collector = ClassifierCollector(model, producer, "cnn", "1", summarize=broken)  # type: ignore[arg-type]
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(collector(x), model(x))
    assert collector.capture_errors == 1
    producer.close()


def test_a_capture_of_interleaved_keys_keeps_each_keys_order_within_the_byte_bound() -> None:
    bus = MemoryBus()
    registry = CollectorRegistry()
    rng = np.random.default_rng(3)
    first, other = events(120, rng), events(45, rng, model="other")
    mixed = [e for pair in zip(first[:45], other, strict=True) for e in pair] + first[45:]
    size = len(encode_event(first[0]))
    bound = 7 * (size + 1)  # about seven events per envelope: a whole capture is far above it
    producer = EventProducer(bus.producer(), "events", registry=registry, batch_events=50, batch_bytes=bound,
                             linger_s=DEADLINE_S)
    assert producer.submit(Events(mixed))
    producer.close()
    records = drain(bus, "events")
    by_key: dict[bytes, list[str]] = {}
    for r in records:
        parts = decode_record(r.value)
        assert sum(len(encode_event(e)) + 1 for e in parts) <= bound or len(parts) == 1
        by_key.setdefault(r.key, []).extend(e.request_id for e in parts)
    assert by_key[first[0].key.encode()] == [e.request_id for e in first]
    assert by_key[other[0].key.encode()] == [e.request_id for e in other]
    assert registry.get_sample_value("inferwatch_collector_events_acked_total") == len(mixed)


def test_batch_events_above_the_envelope_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_events"):
        EventProducer(MemoryBus().producer(), "events", batch_events=10_001)
