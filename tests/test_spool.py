"""The disk spool on its own, and the producer spooling and replaying over the in-process bus."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from collectors import DROP_REASONS, ConnectingProducer, EventProducer, Events
from collectors import producer as producer_module
from collectors.spool import Spool, SpoolError, SpoolRecord
from monitor.errors import TransportError
from monitor.events import decode_record
from monitor.transport import KafkaTransport, MemoryBus
from tests.support import DEADLINE_S, events, free_port, wait_until

HEADERS = (("ce_id", b"abc"), ("content-type", b"application/json"))


def record(i: int, size: int = 100) -> SpoolRecord:
    return SpoolRecord(b"%08d" % i + b"x" * (size - 8), b"model/1", HEADERS, events=i % 7 + 1)


def framed(rec: SpoolRecord) -> int:
    """Bytes one record takes on disk: frame (8) + fixed (10) + key + headers + value."""
    return 8 + 10 + len(rec.key or b"") + sum(2 + len(n) + 4 + len(v) for n, v in rec.headers) + len(rec.value)


def test_records_come_back_in_order_across_segments_and_segments_go_once_released(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    for i in range(100):
        assert spool.append(record(i))
    assert spool.segments == len(list(tmp_path.glob("*.seg"))) > 10
    got = spool.read(1000)
    assert [r.value for r in got] == [record(i).value for i in range(100)]
    assert [(r.key, r.headers, r.events) for r in got] == [(b"model/1", HEADERS, i % 7 + 1) for i in range(100)]
    assert spool.read(10) == got[:10]  # reading does not release
    segments = spool.segments
    spool.release(got[49])
    assert len(spool) == 50 and spool.read(1)[0].value == record(50).value
    assert spool.segments < segments
    spool.release(got[10])  # releasing behind the head is a no-op
    assert len(spool) == 50
    spool.release(got[-1])
    assert (len(spool), spool.segments, spool.bytes, list(tmp_path.glob("*.seg"))) == (0, 0, 0, [])
    assert spool.append(record(100)) and spool.read(5)[0].value == record(100).value  # usable after emptying


def test_read_is_bounded_by_records_and_bytes_but_returns_at_least_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=500)
    for i in range(20):
        spool.append(record(i, size=100))
    assert len(spool.read(7)) == 7
    assert len(spool.read(100, max_bytes=350)) == 4  # stops once 350 value bytes are reached
    assert len(spool.read(100, max_bytes=1)) == 1
    with pytest.raises(ValueError, match="max_records"):
        spool.read(0)


def test_max_bytes_bounds_the_files_and_refuses_appends(tmp_path: Path) -> None:
    rec = record(0, size=200)
    spool = Spool(tmp_path, max_bytes=10_000, segment_bytes=2_000)
    accepted = sum(spool.append(rec) for _ in range(100))
    per_segment = (2_000 - 8) // framed(rec) + 1  # a segment rolls once it reaches segment_bytes
    segment_size = 8 + per_segment * framed(rec)
    expected = (10_000 // segment_size) * per_segment + (10_000 % segment_size - 8) // framed(rec)
    assert accepted == expected == len(spool)
    assert spool.bytes == sum(p.stat().st_size for p in tmp_path.glob("*.seg")) <= 10_000
    spool.release(spool.read(per_segment)[-1])  # freeing a segment makes room again
    assert spool.append(rec)


def test_a_read_cut_short_by_bytes_inside_a_segment_never_skips_to_the_next(tmp_path: Path) -> None:
    """A read that the byte bound stops inside a segment used to go on at the start of the next one (it counted
    frame bytes while scanning and value bytes after), so the window skipped the rest of the segment and
    releasing its last record gave those records up unread: the chaos test lost a contiguous range of events."""
    spool = Spool(tmp_path, segment_bytes=20 * framed(record(0)))  # 20 records per segment
    for i in range(100):
        spool.append(record(i))
    window = spool.read(1000, max_bytes=1200)  # 12 values of 100 bytes, but 12 frames hold ~2000 bytes
    assert [r.value for r in window] == [record(i).value for i in range(12)]
    drained: list[bytes] = []
    while window := spool.read(1000, max_bytes=1200):
        drained += [r.value for r in window]
        spool.release(window[-1])
    assert drained == [record(i).value for i in range(100)]  # each record once, in order, none skipped
    assert (len(spool), spool.segments) == (0, 0)


@pytest.mark.parametrize("policy", ["always", "segment", "never"])
def test_every_fsync_policy_keeps_records_across_reopening(tmp_path: Path, policy: str) -> None:
    spool = Spool(tmp_path, segment_bytes=300, fsync=policy)  # type: ignore[arg-type]
    for i in range(10):
        spool.append(record(i))
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append(record(10))
    again = Spool(tmp_path, segment_bytes=300, fsync=policy)  # type: ignore[arg-type]
    assert [r.value for r in again.read(100)] == [record(i).value for i in range(10)]


def test_bad_settings_fail_with_a_message_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        Spool(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path, max_bytes=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match="cannot create"):
        Spool(tmp_path / "file" / "spool")


def test_reopening_resumes_after_the_released_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=2 * framed(record(0)) + 8)  # two records per segment
    for i in range(10):
        spool.append(record(i))
    got = spool.read(10)
    spool.release(got[3])  # the end of the second segment: both files go
    spool.release(got[4])  # half of the third: its file stays, so the record comes back after a restart
    del spool  # a crash: no close()
    again = Spool(tmp_path, segment_bytes=2 * framed(record(0)) + 8)
    assert [r.value for r in again.read(100)] == [record(i).value for i in range(4, 10)]
    assert again.append(record(10)) and again.read(100)[-1].value == record(10).value


@pytest.mark.parametrize("damage", ["cut", "garbage", "bad_crc"])
def test_a_torn_last_record_is_counted_and_skipped(tmp_path: Path, damage: str) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    for i in range(5):
        spool.append(record(i))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    size = segment.stat().st_size
    if damage == "cut":  # the process died in the middle of writing record 4
        os.truncate(segment, size - 30)
    elif damage == "garbage":
        with open(segment, "ab") as f:
            f.write(b"\x00\x00\x01")
    else:
        data = bytearray(segment.read_bytes())
        data[-5] ^= 0xFF
        segment.write_bytes(bytes(data))
    again = Spool(tmp_path, segment_bytes=1 << 20)
    assert again.corrupt_records == 1
    kept = 5 if damage == "garbage" else 4
    assert [r.value for r in again.read(100)] == [record(i).value for i in range(kept)]
    assert again.append(record(9))  # appends go after the last good record
    assert [r.value for r in Spool(tmp_path).read(100)][-1] == record(9).value


def test_a_segment_torn_before_its_magic_is_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(record(0))
    spool.close()
    (tmp_path / "00000000000000000002.seg").write_bytes(b"IWSP")
    again = Spool(tmp_path)
    assert (again.corrupt_records, len(again), again.segments) == (1, 1, 1)


# -- producer + spool over the in-process bus --------------------------------------------------------------


def ids_on(bus: MemoryBus, topic: str, group: str = "check") -> list[str]:
    consumer = bus.consumer([topic], group)
    out: list[str] = []
    while got := consumer.poll(0.2):
        out += [e.request_id for m in got for e in decode_record(m.value)]
    consumer.close()
    return out


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(f"inferwatch_collector_{name}", labels)
    return 0.0 if value is None else value


def test_a_full_bus_sends_batches_to_the_spool_and_they_are_replayed_in_order(tmp_path: Path) -> None:
    # A bus holding 5 records per partition refuses sends until its reader group commits: an outage.
    bus = MemoryBus(max_records_per_partition=5)
    reader = bus.consumer(["events"], "reader")
    registry = CollectorRegistry()
    producer = EventProducer(bus.producer(), "events", registry=registry, batch_events=10, linger_s=0.005,
                             spool=Spool(tmp_path, segment_bytes=20_000), ack_timeout_s=1.0)
    sent = events(400, np.random.default_rng(0))
    for i in range(0, 400, 10):
        assert producer.submit(Events(sent[i:i + 10]))
    assert producer.flush(DEADLINE_S)
    assert sample(registry, "events_spooled_total") == 350  # everything after the first 5 records
    assert sample(registry, "spool_bytes") > 0 and sample(registry, "spooling") == 1
    received: list[str] = []

    def drained() -> bool:  # read and commit: the bus takes replays again
        got = reader.poll(0.1)
        received.extend(e.request_id for m in got for e in decode_record(m.value))
        if got:
            reader.commit({("events", got[-1].partition): got[-1].offset + 1})
        return len(set(received)) == 400

    wait_until(drained, "all 400 events on the bus, replayed from the spool")
    producer.close(DEADLINE_S)
    assert set(received) == {e.request_id for e in sent}
    first_seen = list(dict.fromkeys(received))
    assert first_seen == [e.request_id for e in sent]  # one key: the order is kept through the spool
    assert sample(registry, "events_replayed_total") == sample(registry, "events_spooled_total")
    assert sample(registry, "events_acked_total") == 400
    assert sum(sample(registry, "events_dropped_total", reason=r) for r in ("queue_full", "spool_full")) == 0
    assert (sample(registry, "spool_bytes"), sample(registry, "spooling")) == (0, 0)
    assert list(tmp_path.glob("*.seg")) == []


def test_a_shutdown_during_an_outage_keeps_events_on_disk_for_the_next_run(tmp_path: Path) -> None:
    down = MemoryBus(max_records_per_partition=1)
    down.consumer(["events"], "reader")  # never commits: after one record every send fails
    sent = events(300, np.random.default_rng(1))
    first = EventProducer(down.producer(), "events", batch_events=50, spool=Spool(tmp_path), ack_timeout_s=1.0)
    assert first.submit(Events(sent))
    first.close(DEADLINE_S)
    assert len(Spool(tmp_path)) == 5  # one batch made it, five are on disk

    registry = CollectorRegistry()
    up = MemoryBus()
    second = EventProducer(up.producer(), "events", registry=registry, spool=Spool(tmp_path), ack_timeout_s=1.0)
    second.close(DEADLINE_S)
    assert sorted(ids_on(up, "events")) == sorted(e.request_id for e in sent[50:])
    assert sample(registry, "events_replayed_total") == 250
    assert list(tmp_path.glob("*.seg")) == []


def test_replay_windows_bounded_by_bytes_lose_nothing_across_segments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay windows cut short by their byte bound inside a segment (as the 8 MiB bound cuts 16 MiB segments in
    a long outage) must replay every record: each window's last record is released, with all before it."""
    down = MemoryBus(max_records_per_partition=1)
    down.consumer(["events"], "reader")
    sent = events(300, np.random.default_rng(4))
    first = EventProducer(down.producer(), "events", batch_events=1, spool=Spool(tmp_path, segment_bytes=20_000),
                          ack_timeout_s=1.0)
    assert first.submit(Events(sent))
    first.close(DEADLINE_S)
    assert len(Spool(tmp_path)) == 299 and len(list(tmp_path.glob("*.seg"))) > 3
    # Single events: a record's headers weigh about as much as its value, and a window stops inside a segment.
    monkeypatch.setattr(producer_module, "_REPLAY_BYTES", 4000)
    up, registry = MemoryBus(), CollectorRegistry()
    second = EventProducer(up.producer(), "events", registry=registry, spool=Spool(tmp_path), ack_timeout_s=1.0)
    wait_until(lambda: sample(registry, "spooling") == 0, "the spool replayed")
    second.close(DEADLINE_S)
    assert sorted(ids_on(up, "events")) == sorted(e.request_id for e in sent[1:])
    assert sample(registry, "events_replayed_total") == 299
    assert list(tmp_path.glob("*.seg")) == []


def test_a_replay_acknowledged_at_once_is_not_held_for_the_ack_timeout(tmp_path: Path) -> None:
    """An in-process bus acknowledges inside ``send``, in the sender's own thread, before the sender waits: the
    replay must go on at once, not after ``ack_timeout_s``. The clock is frozen and the timeout an hour, so a
    sender that waited for it would never finish within the deadline."""
    down = MemoryBus(max_records_per_partition=1)
    down.consumer(["events"], "reader")
    sent = events(300, np.random.default_rng(2))
    first = EventProducer(down.producer(), "events", batch_events=50, spool=Spool(tmp_path), ack_timeout_s=1.0)
    assert first.submit(Events(sent))
    first.close(DEADLINE_S)
    up, registry = MemoryBus(), CollectorRegistry()
    second = EventProducer(up.producer(), "events", registry=registry, spool=Spool(tmp_path), ack_timeout_s=3600.0,
                           clock=lambda: 1000.0)
    wait_until(lambda: sample(registry, "events_replayed_total") == 250, "the spool replayed without an ack wait")
    second.close(DEADLINE_S)
    assert sorted(ids_on(up, "events")) == sorted(e.request_id for e in sent[50:])


def test_with_a_full_spool_drops_are_counted_as_spool_full(tmp_path: Path) -> None:
    bus = MemoryBus(max_records_per_partition=1)
    bus.consumer(["events"], "reader")
    registry = CollectorRegistry()
    producer = EventProducer(bus.producer(), "events", registry=registry, capacity=500, batch_events=20,
                             linger_s=0.001, spool=Spool(tmp_path, max_bytes=20_000), ack_timeout_s=1.0)
    rng = np.random.default_rng(2)
    for _ in range(300):
        # room for the next capture (the sender takes them one by one), whatever the machine's load
        wait_until(lambda: sample(registry, "queue_events") + 10 <= 500, "room in the queue")
        assert producer.submit(Events(events(10, rng)))
    producer.close(DEADLINE_S)
    dropped = {r: sample(registry, "events_dropped_total", reason=r) for r in ("spool_full", "queue_full")}
    assert dropped["spool_full"] > 2000 and dropped["queue_full"] == 0
    # every event is accounted for: on the bus, in the spool, or dropped (at submit, or at close from memory)
    assert sample(registry, "events_acked_total") + sample(registry, "events_spooled_total") \
        + sum(dropped.values()) == 3000
    assert sample(registry, "events_spooled_total") == sum(r.events for r in Spool(tmp_path).read(10_000)) > 0
    assert sample(registry, "spool_bytes") <= 20_000


def dead_kafka(registry: CollectorRegistry) -> ConnectingProducer:
    """A producer for a broker address where nothing listens: every connection attempt fails (for real)."""
    transport = KafkaTransport(f"127.0.0.1:{free_port()}", request_timeout_ms=200)
    return ConnectingProducer(transport.producer, registry, retry_s=0.05, retry_max_s=0.2)


def accounted(registry: CollectorRegistry) -> float:
    return (sample(registry, "events_acked_total") + sample(registry, "events_spooled_total")
            + sum(sample(registry, "events_dropped_total", reason=r) for r in DROP_REASONS))


def test_beyond_a_full_spool_every_event_is_spooled_or_counted_as_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Defect 14: events beyond a full spool stayed in memory, counted nowhere, and were lost at shutdown."""
    registry = CollectorRegistry()
    kafka = dead_kafka(registry)
    producer = EventProducer(kafka, "events", registry=registry, batch_events=10, linger_s=0.001,
                             spool=Spool(tmp_path, max_bytes=20_000), ack_timeout_s=1.0)
    rng = np.random.default_rng(3)
    n = 0
    for _ in range(100):
        assert producer.submit(Events(events(10, rng)))
        n += 10
    assert producer.flush(DEADLINE_S)  # nothing waits in memory: each event is somewhere
    assert accounted(registry) == n
    assert sample(registry, "queue_events") == 0 and sample(registry, "events_acked_total") == 0
    spooled, full = sample(registry, "events_spooled_total"), sample(registry, "events_dropped_total",
                                                                          reason="spool_full")
    assert spooled > 0 and full > 0 and spooled + full == n
    assert sample(registry, "producer_connected") == 0
    producer.close(DEADLINE_S)
    assert accounted(registry) == n
    assert sample(registry, "events_spooled_total") == sum(r.events for r in Spool(tmp_path).read(10_000))
    assert sample(registry, "spool_bytes") <= 20_000

    # Events still in memory at shutdown (a batch lingering), with the spool full: counted, and logged.
    registry = CollectorRegistry()
    producer = EventProducer(kafka, "events", registry=registry, batch_events=1000, linger_s=3600,
                             spool=Spool(tmp_path, max_bytes=20_000), ack_timeout_s=1.0)
    assert producer.submit(Events(events(30, rng)))
    with caplog.at_level(logging.WARNING, logger="collectors.producer"):
        producer.close(DEADLINE_S)
    kafka.close()
    assert accounted(registry) == sample(registry, "events_dropped_total", reason="spool_full") == 30
    assert "close: 30 events could not be sent or spooled and were dropped" in caplog.text


def test_the_connecting_producer_refuses_sends_until_connected_then_passes_them_through() -> None:
    registry = CollectorRegistry()
    kafka = dead_kafka(registry)
    wait_until(lambda: sample(registry, "producer_connect_failures_total") >= 2, "two failed connection attempts")
    assert not kafka.connected and "connecting (" in kafka.status
    with pytest.raises(TransportError, match="not connected"):
        kafka.send("events", b"{}")
    kafka.close()

    bus = MemoryBus()
    reader = bus.consumer(["events"], "reader")
    registry = CollectorRegistry()
    live = ConnectingProducer(bus.producer, registry)
    assert live.wait_connected(DEADLINE_S) and live.status == "connected"
    assert sample(registry, "producer_connected") == 1
    acked: list[BaseException | None] = []
    live.send("events", b"{}", on_done=acked.append)
    wait_until(lambda: acked == [None], "the acknowledgement")
    assert [m.value for m in reader.poll(1.0)] == [b"{}"]
    live.close()
