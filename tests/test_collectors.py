"""The collector: batching producer, bounded queue with counted drops, torch hooks, fail-open capture."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from collectors import EventProducer, Events
from collectors.producer import Encoding
from monitor.events import (
    BATCH_SCHEMA,
    COLUMNS_SCHEMA,
    FEEDBACK_SCHEMA,
    INFERENCE_SCHEMA,
    ColumnBatch,
    Event,
    FeedbackEvent,
    InferenceEvent,
    Latency,
    Payload,
    decode_record,
    decode_record_lenient,
    encode_batch,
    encode_event,
)
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


@pytest.mark.parametrize("encoding", ["columns", "rows"])
def test_events_arrive_batched_keyed_and_with_cloudevents_headers(encoding: Encoding) -> None:
    bus = MemoryBus()
    registry = CollectorRegistry()
    # A linger longer than the test: batches close by count (or at close), never because the submitting thread
    # was slow, so the sizes below do not depend on the machine's load.
    producer = EventProducer(bus.producer(), "events", registry=registry, batch_events=100, linger_s=DEADLINE_S,
                             encoding=encoding)
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
        assert headers["ce_type"] == json.loads(r.value)["schema"].encode()
        assert headers["ce_type"] == (COLUMNS_SCHEMA if encoding == "columns" else BATCH_SCHEMA).encode()
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


@pytest.mark.parametrize("encoding", ["columns", "rows"])
def test_a_capture_of_interleaved_keys_keeps_each_keys_order_within_the_byte_bound(encoding: Encoding) -> None:
    bus = MemoryBus()
    registry = CollectorRegistry()
    rng = np.random.default_rng(3)
    first, other = events(120, rng), events(45, rng, model="other")
    mixed = [e for pair in zip(first[:45], other, strict=True) for e in pair] + first[45:]
    size = len(encode_event(first[0]))
    bound = 7 * (size + 1)  # about seven events per envelope: a whole capture is far above it
    producer = EventProducer(bus.producer(), "events", registry=registry, batch_events=50, batch_bytes=bound,
                             linger_s=DEADLINE_S, encoding=encoding)
    assert producer.submit(Events(mixed))
    producer.close()
    records = drain(bus, "events")
    by_key: dict[bytes, list[str]] = {}
    for r in records:
        parts = decode_record(r.value)
        if encoding == "rows":
            assert sum(len(encode_event(e)) + 1 for e in parts) <= bound or len(parts) == 1
        else:  # the same events per record, as columns: smaller
            assert json.loads(r.value)["schema"] == COLUMNS_SCHEMA
            assert sum(len(encode_event(e)) + 1 for e in parts) <= bound or len(parts) == 1
            assert len(r.value) < len(encode_batch(parts)) or len(parts) == 1
        by_key.setdefault(r.key, []).extend(e.request_id for e in parts)
    assert by_key[first[0].key.encode()] == [e.request_id for e in first]
    assert by_key[other[0].key.encode()] == [e.request_id for e in other]
    assert registry.get_sample_value("inferwatch_collector_events_acked_total") == len(mixed)


def test_batch_events_above_the_envelope_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_events"):
        EventProducer(MemoryBus().producer(), "events", batch_events=10_001)


# -- encoding="columns": what fits a column batch leaves as one


def records_of(bus: MemoryBus) -> list[tuple[bytes | None, str, list[Event]]]:
    """Each record's key, schema field and events (checking that its ce_type header names the same schema)."""
    return [(r.key, schema, decode_record(r.value)) for r, schema in typed_records(bus)]


def typed_records(bus: MemoryBus) -> list[tuple[Message, str]]:
    out = []
    for r in drain(bus, "events"):
        schema = json.loads(r.value)["schema"]
        assert dict(r.headers)["ce_type"] == schema.encode()
        out.append((r, schema))
    return out


def test_a_capture_that_fits_leaves_as_one_column_record_of_the_same_events() -> None:
    bus = MemoryBus()
    registry = CollectorRegistry()
    sent = events(300, np.random.default_rng(4))
    sent[5] = msgspec.structs.replace(sent[5], probabilities=[0.2, 0.8], batch_size=4)  # columns only some carry
    sent[9] = msgspec.structs.replace(sent[9], latency=Latency(total_s=0.5, gpu_s=0.25))
    producer = EventProducer(bus.producer(), "events", registry=registry, linger_s=DEADLINE_S)
    assert producer.encoding == "columns"  # the default
    assert producer.submit(Events(sent))
    producer.close()
    ((record, schema),) = typed_records(bus)
    assert (record.key, schema, decode_record(record.value)) == (sent[0].key.encode(), COLUMNS_SCHEMA, sent)
    assert record.value == msgspec.json.encode(ColumnBatch.of(sent))
    assert len(record.value) < 0.75 * len(encode_batch(sent))
    decoded = decode_record_lenient(record.value, columns=True)
    assert decoded.columns is not None and decoded.columns.events() == sent
    assert registry.get_sample_value("inferwatch_collector_events_acked_total") == len(sent)


def test_captures_that_do_not_fit_leave_as_batch_envelopes() -> None:
    rng = np.random.default_rng(5)
    unfit: list[list[Event]] = [
        [msgspec.structs.replace(e, payload=Payload(prompt="x")) if i == 3 else e
         for i, e in enumerate(events(20, rng))],
        [msgspec.structs.replace(e, attributes={"pod": str(i % 2)}) for i, e in enumerate(events(20, rng))],
        [msgspec.structs.replace(e, latency=Latency(total_s=0.1, queue_s=0.01)) for e in events(20, rng)],
        [msgspec.structs.replace(e, embedding=[0.0, 1.0]) for e in events(20, rng)],
        [FeedbackEvent(request_id=f"f{i}", time=1.0, model="m", version="1", label=i % 3) for i in range(20)],
    ]
    for capture in unfit:
        bus = MemoryBus()
        producer = EventProducer(bus.producer(), "events", linger_s=DEADLINE_S)
        assert producer.submit(Events(capture))
        producer.close()
        assert records_of(bus) == [(capture[0].key.encode(), BATCH_SCHEMA, capture)]
    bus = MemoryBus()  # a single event that does not fit goes alone, as an event
    producer = EventProducer(bus.producer(), "events", linger_s=DEADLINE_S)
    assert producer.submit(Events(unfit[3][:1]))
    producer.close()
    assert records_of(bus) == [(unfit[3][0].key.encode(), INFERENCE_SCHEMA, unfit[3][:1])]


def test_feedback_beside_columns_keeps_its_own_record_and_ce_type() -> None:
    bus = MemoryBus()
    inference = events(10, np.random.default_rng(9))
    feedback = FeedbackEvent(request_id="f", time=1.0, model="labels", version="1", label=1)
    producer = EventProducer(bus.producer(), "events", linger_s=DEADLINE_S)
    assert producer.submit(Events([*inference[:5], feedback, *inference[5:]]))
    producer.close()
    assert sorted(records_of(bus)) == sorted([(inference[0].key.encode(), COLUMNS_SCHEMA, inference),
                                              (b"labels/1", FEEDBACK_SCHEMA, [feedback])])


def test_mixed_captures_keep_each_keys_order() -> None:
    bus = MemoryBus()
    registry = CollectorRegistry()
    rng = np.random.default_rng(6)
    submitted: list[Event] = []
    producer = EventProducer(bus.producer(), "events", registry=registry, batch_events=40, linger_s=DEADLINE_S)
    for i in range(30):
        a, b = events(1 + i % 7, rng), events(1 + i % 5, rng, model="other")
        if i % 4 == 1:  # a capture that does not fit: a sampled payload
            a[0] = msgspec.structs.replace(a[0], payload=Payload(prompt="p"))
        if i % 6 == 2:  # another device: fits columns, but not the batch before it
            b = [msgspec.structs.replace(e, device="cuda:1") for e in b]
        capture = [e for pair in zip(a, b, strict=False) for e in pair] + a[len(b):] + b[len(a):]
        submitted += capture
        assert producer.submit(Events(capture))
    producer.close()
    records = records_of(bus)
    for model in ("tabular", "other"):
        mine = [e for e in submitted if e.model == model]
        got = [(schema, e) for key, schema, part in records if key == mine[0].key.encode() for e in part]
        assert [e for _, e in got] == mine  # every event, once, in the order submitted
        assert all(isinstance(e, InferenceEvent) and e.payload is None for schema, e in got if schema == COLUMNS_SCHEMA)
    schemas = {schema for _, schema, _ in records}
    assert schemas == {COLUMNS_SCHEMA, BATCH_SCHEMA} or schemas == {COLUMNS_SCHEMA, BATCH_SCHEMA, INFERENCE_SCHEMA}
    assert all(len(part) <= 40 for _, _, part in records)
    assert registry.get_sample_value("inferwatch_collector_events_acked_total") == len(submitted)


def test_small_captures_with_columns_only_some_carry_leave_as_one_column_batch() -> None:
    rng = np.random.default_rng(7)
    sent = events(60, rng)
    for i in range(0, 60, 7):  # columns that only some captures carry: null (or 1) in the others' rows
        sent[i] = msgspec.structs.replace(sent[i], probabilities=[0.5, 0.5], prediction=None, batch_size=3)
    for i in range(0, 60, 11):
        sent[i] = msgspec.structs.replace(sent[i], latency=None)
    for i in range(3, 60, 13):
        sent[i] = msgspec.structs.replace(sent[i], latency=Latency(total_s=0.2, gpu_s=0.1))
    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events", linger_s=DEADLINE_S)
    start = 0
    while start < len(sent):  # captures of 1 to 4 events
        assert producer.submit(Events(sent[start:start + 1 + start % 4]))
        start += 1 + start % 4
    producer.close()
    assert [r.value for r in drain(bus, "events")] == [msgspec.json.encode(ColumnBatch.of(sent))]


def test_a_capture_larger_than_the_byte_bound_leaves_in_column_batches_within_it() -> None:
    rng = np.random.default_rng(8)
    names = [f"f{i}" for i in range(200)]
    sent: list[Event] = [InferenceEvent(f"r{i}", 1.0 + i, "wide", "1", "classification",
                                        features=dict(zip(names, map(float, rng.normal(size=200)), strict=True)),
                                        prediction=i % 2, latency=Latency(total_s=0.01)) for i in range(400)]
    bound = 60_000  # about 12 events as rows
    bus = MemoryBus()
    registry = CollectorRegistry()
    producer = EventProducer(bus.producer(), "events", registry=registry, batch_bytes=bound, linger_s=DEADLINE_S)
    assert producer.submit(Events(sent))
    producer.close()
    records = typed_records(bus)
    assert {schema for _, schema in records} == {COLUMNS_SCHEMA}
    assert all(len(r.value) <= bound for r, _ in records)
    assert [e for r, _ in records for e in decode_record(r.value)] == sent
    assert len(records) <= 2 * len(sent) * len(encode_event(sent[0])) / bound
    assert registry.get_sample_value("inferwatch_collector_events_acked_total") == len(sent)
    # An event larger than the bound goes alone, as itself.
    tiny_bus = MemoryBus()
    tiny = EventProducer(tiny_bus.producer(), "events", batch_bytes=100, linger_s=DEADLINE_S)
    assert tiny.submit(Events(sent[:3]))
    tiny.close()
    assert [(schema, part) for _, schema, part in records_of(tiny_bus)] == [(INFERENCE_SCHEMA, [e]) for e in sent[:3]]


def test_a_column_batch_over_the_byte_bound_is_cut_until_each_fits() -> None:
    sent = events(300, np.random.default_rng(10))
    batch = ColumnBatch.of(sent)
    assert batch is not None
    whole = len(msgspec.json.encode(batch))
    for bound in (whole, whole - 1, whole // 3, whole // 50, 10):
        producer = EventProducer(MemoryBus().producer(), "events", batch_bytes=bound)
        records = producer._column_records(batch, sent)
        producer.close()
        assert [e for value, _, _ in records for e in decode_record(value)] == sent
        for value, schema, n in records:
            assert json.loads(value)["schema"] == schema and len(decode_record(value)) == n
            assert len(value) <= bound or (n == 1 and schema == INFERENCE_SCHEMA)
        assert len(records) == 1 if bound == whole else len(records) >= 2


def test_a_failure_to_encode_columns_sends_the_envelope_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cls: type[ColumnBatch], events: Sequence[InferenceEvent]) -> ColumnBatch:
        raise RuntimeError("columns bug")

    monkeypatch.setattr(ColumnBatch, "of", classmethod(broken))
    bus = MemoryBus()
    registry = CollectorRegistry()
    sent = events(30, np.random.default_rng(11))
    producer = EventProducer(bus.producer(), "events", registry=registry, linger_s=DEADLINE_S)
    assert producer.submit(Events(sent))
    producer.close()
    assert records_of(bus) == [(sent[0].key.encode(), BATCH_SCHEMA, sent)]
    assert registry.get_sample_value("inferwatch_collector_events_acked_total") == len(sent)


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="encoding"):
        EventProducer(MemoryBus().producer(), "events", encoding="arrow")  # type: ignore[arg-type]
