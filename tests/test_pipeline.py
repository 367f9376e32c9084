"""The detection pipeline over both transports: windows, drift, alerts, rejections, commits and replay."""

from __future__ import annotations

import json
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts import MemoryChannel
from monitor.config import Config, DetectConfig, KafkaConfig, ModelConfig, TopicsConfig, WindowConfig
from monitor.events import encode_batch, encode_event
from monitor.metrics import daemon_metrics
from monitor.pipeline import Pipeline, WindowResult
from monitor.profiles import load_profile
from monitor.transport import KafkaTransport, MemoryBus, Message, Transport, ensure_topics
from tests.support import MODEL, VERSION, events, wait_until, write_profile

KEY = f"{MODEL}/{VERSION}"


@dataclass
class Setup:
    transport: Transport
    config: Config
    kind: str


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    suffix = uuid.uuid4().hex[:10]
    topics = TopicsConfig(events=f"ev-{suffix}", feedback=f"fb-{suffix}", results=f"res-{suffix}",
                          deadletter=f"dl-{suffix}")
    kafka = None
    transport: Transport
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        ensure_topics(bootstrap, {topics.events: 1, topics.feedback: 1, topics.results: 1, topics.deadletter: 1})
        kafka = KafkaConfig(bootstrap=bootstrap, group=f"g-{suffix}")
        transport = KafkaTransport(bootstrap)
    else:
        transport = MemoryBus()
    config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile=str(write_profile(tmp_path)))],
                    kafka=kafka, topics=topics, window=WindowConfig(size=400, max_seconds=3600, min_samples=30),
                    detect=DetectConfig(alpha=0.01, min_effect=0.1))
    yield Setup(transport, config, request.param)
    transport.close()


def make_pipeline(s: Setup, registry: CollectorRegistry, channel: MemoryChannel,
                  results: list[WindowResult]) -> Pipeline:
    profile = load_profile(s.config.models[0].profile)
    consumer = s.transport.consumer([s.config.topics.events, s.config.topics.feedback],
                                    s.config.kafka.group if s.config.kafka else "detect")
    return Pipeline(s.config, {KEY: profile}, consumer, s.transport.producer(), daemon_metrics(registry), [channel],
                    on_result=results.append)


def drive(pipeline: Pipeline, until: int, timeout_s: float = 120.0) -> None:
    """Step the pipeline until it has consumed ``until`` records."""
    deadline = time.monotonic() + timeout_s
    while pipeline.messages < until:
        if time.monotonic() > deadline:
            raise AssertionError(f"pipeline consumed {pipeline.messages} of {until} records in {timeout_s} s")
        pipeline.step(0.1)


def read_all(s: Setup, topic: str, expected: int, timeout_s: float = 20.0) -> list[Message]:
    consumer = s.transport.consumer([topic], f"reader-{uuid.uuid4().hex[:8]}")
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        out += consumer.poll(0.2)
    consumer.close()
    return out


def test_drift_is_found_after_the_change_and_not_before(setup: Setup) -> None:
    registry, channel, results = CollectorRegistry(), MemoryChannel(), []
    pipeline = make_pipeline(setup, registry, channel, results)
    rng = np.random.default_rng(1)
    stream = events(2000, rng) + events(1200, rng, shift=0.6, shifted=(1, 3), start=1_800_000_000.0)
    producer = setup.transport.producer()
    for i in range(0, len(stream), 100):  # batch envelopes of 100 events, as the collector sends them
        producer.send(setup.config.topics.events, encode_batch(stream[i:i + 100]), KEY.encode())
    producer.flush()
    drive(pipeline, until=len(stream) // 100)
    pipeline.commit()

    assert [r.index for r in results] == list(range(8))
    assert [r.drift.drifted for r in results] == [False] * 5 + [True] * 3
    assert all(r.drifted_features == ("f1", "f3") for r in results[5:])
    assert not any(r.prediction and r.prediction.drifted for r in results)
    firing = [a for a in channel.alerts if a.status == "firing"]
    # default persistence: 2 of the last 3 windows, so the alert fires on the second drifted window
    assert [(a.detector, a.window, a.features, a.training_run) for a in firing] == [
        ("feature_drift", 6, ("f1", "f3"), "runs/42")]
    labels = {"model": MODEL, "version": VERSION}
    assert registry.get_sample_value("inferwatch_events_consumed_total", labels) == 3200
    assert registry.get_sample_value("inferwatch_windows_closed_total", {**labels, "reason": "full"}) == 8
    assert registry.get_sample_value("inferwatch_drift_detected", {**labels, "detector": "feature_drift"}) == 1
    assert registry.get_sample_value("inferwatch_drift_ks_statistic", {**labels, "feature": "f1"}) > 0.2
    published = read_all(setup, setup.config.topics.results, 8)
    assert [json.loads(m.value)["window_id"] for m in published] == [r.window_id for r in results]


def test_bad_records_are_counted_dead_lettered_and_the_stream_goes_on(setup: Setup) -> None:
    registry, channel, results = CollectorRegistry(), MemoryChannel(), []
    pipeline = make_pipeline(setup, registry, channel, results)
    rng = np.random.default_rng(2)
    good = events(400, rng)
    wrong_model = events(1, rng, model="nobody")[0]
    # a profile feature that is absent or null is a missing value, not an error; none of them is a mismatch
    missing = good[0].__class__(**{**_fields(good[0]), "features": {}})
    extra = good[0].__class__(**{**_fields(good[0]), "features": {**good[0].features, "f9": 1.0}})
    bad_class = good[0].__class__(**{**_fields(good[0]), "prediction": 7})
    bad = [b"{oops", b'{"schema":"inferwatch.inference/v2"}', encode_event(good[0]).replace(b'"f0":', b'"f0":NaN,"x":'),
           encode_event(wrong_model), encode_event(missing), encode_event(extra), encode_event(bad_class)]
    producer = setup.transport.producer()
    topic = setup.config.topics.events
    for i, event in enumerate(good):
        producer.send(topic, encode_event(event), KEY.encode())
        if i % 50 == 0 and i // 50 < len(bad):
            producer.send(topic, bad[i // 50], KEY.encode())
    producer.flush()
    drive(pipeline, until=len(good) + len(bad))
    pipeline.commit()

    rejected = {r: registry.get_sample_value("inferwatch_events_rejected_total", {"reason": r})
                for r in ("malformed_json", "unknown_schema", "non_finite", "unknown_model", "feature_mismatch",
                          "invalid_value")}
    assert rejected == {"malformed_json": 1, "unknown_schema": 1, "non_finite": 1, "unknown_model": 1,
                        "feature_mismatch": 2, "invalid_value": 1}
    assert len(results) == 1 and results[0].n_events == 400  # every good event made it into the window
    letters = read_all(setup, setup.config.topics.deadletter, len(bad))
    assert sorted(m.value for m in letters) == sorted(bad)
    reasons = sorted(dict(m.headers)["inferwatch_reason"].decode() for m in letters)
    assert reasons == sorted(["malformed_json", "unknown_schema", "non_finite", "unknown_model", "feature_mismatch",
                              "feature_mismatch", "invalid_value"])


def test_open_window_is_replayed_after_a_restart_with_the_same_id(setup: Setup) -> None:
    rng = np.random.default_rng(3)
    stream = events(1000, rng)
    producer = setup.transport.producer()
    topic = setup.config.topics.events
    for event in stream[:600]:
        producer.send(topic, encode_event(event), KEY.encode())
    producer.flush()

    first: list[WindowResult] = []
    pipeline = make_pipeline(setup, CollectorRegistry(), MemoryChannel(), first)
    drive(pipeline, until=600)
    pipeline.commit()
    pipeline._consumer.close()  # a crash after the commit: window #1 (events 400..599) is still open
    assert [r.window_id for r in first] == [f"{KEY}@{topic}-0:0"]

    for event in stream[600:]:
        producer.send(topic, encode_event(event), KEY.encode())
    producer.flush()
    second: list[WindowResult] = []
    restarted = make_pipeline(setup, CollectorRegistry(), MemoryChannel(), second)
    drive(restarted, until=600)  # replays 400..599, then reads 600..999
    assert [(r.window_id, r.n_events) for r in second] == [(f"{KEY}@{topic}-0:400", 400)]


def _fields(event: object) -> dict[str, object]:
    import msgspec

    return msgspec.structs.asdict(event)  # type: ignore[arg-type]


def test_replay_skips_the_events_of_a_batch_record_that_closed_windows_already_hold(setup: Setup) -> None:
    rng = np.random.default_rng(4)
    stream = events(900, rng)
    producer = setup.transport.producer()
    topic = setup.config.topics.events

    def send(records: range) -> None:
        for r in records:  # batch records of 150 events: window 0 closes inside record 2, at its 100th event
            producer.send(topic, encode_batch(stream[r * 150:(r + 1) * 150]), KEY.encode())
        producer.flush()

    send(range(3))
    first: list[WindowResult] = []
    pipeline = make_pipeline(setup, CollectorRegistry(), MemoryChannel(), first)
    drive(pipeline, until=3)
    pipeline.commit()
    pipeline._consumer.close()
    assert [(r.window_id, r.n_events) for r in first] == [(f"{KEY}@{topic}-0:0", 400)]

    send(range(3, 6))
    registry, second = CollectorRegistry(), []
    restarted = make_pipeline(setup, registry, MemoryChannel(), second)
    drive(restarted, until=4)
    # window 1 is events 400..799 exactly once: it starts at the 100th event of record 2, not at its first
    assert [(r.window_id, r.n_events) for r in second] == [(f"{KEY}@{topic}-0:2+100", 400)]
    assert registry.get_sample_value("inferwatch_events_consumed_total",
                                     {"model": MODEL, "version": VERSION}) == 500


def test_a_bad_event_inside_a_batch_is_dead_lettered_alone(setup: Setup) -> None:
    registry, results = CollectorRegistry(), []
    pipeline = make_pipeline(setup, registry, MemoryChannel(), results)
    rng = np.random.default_rng(6)
    good = [encode_event(e) for e in events(5, rng)]
    stranger = encode_event(events(1, rng, model="nobody")[0])
    broken = b'{"schema":"inferwatch.inference/v1","request_id":"x"}'
    value = b'{"schema":"inferwatch.batch/v1","events":[%s]}' % b",".join([*good[:2], stranger, broken, *good[2:]])
    producer = setup.transport.producer()
    producer.send(setup.config.topics.events, value, KEY.encode())
    producer.flush()
    drive(pipeline, until=1)
    pipeline.commit()
    letters = read_all(setup, setup.config.topics.deadletter, 2)
    assert sorted(m.value for m in letters) == sorted([stranger, broken])
    assert registry.get_sample_value("inferwatch_events_consumed_total", {"model": MODEL, "version": VERSION}) == 5


def test_a_rebalance_drops_open_windows_and_reads_them_again_without_doubling(setup: Setup) -> None:
    """Another member joins the group and leaves while window #1 is open: the pipeline's commit may be refused
    meanwhile and every partition comes back from the last commit, so each window still holds its 400 events
    once and keeps its id (a pipeline that kept its open window would count 200 events twice)."""
    partition = 0
    if setup.kind == "memory":  # two partitions, so that the second member takes one of them
        setup = Setup(MemoryBus(partitions=2), setup.config, setup.kind)
        partition = zlib.crc32(KEY.encode()) % 2
    rng = np.random.default_rng(5)
    stream = events(1000, rng)
    producer = setup.transport.producer()
    topic = setup.config.topics.events
    for event in stream[:600]:
        producer.send(topic, encode_event(event), KEY.encode())
    producer.flush()
    registry, results = CollectorRegistry(), []
    pipeline = make_pipeline(setup, registry, MemoryChannel(), results)
    drive(pipeline, until=600)
    pipeline.commit()  # window #0 closed and committed; window #1 holds events 400..599, uncommitted

    group = setup.config.kafka.group if setup.config.kafka else "detect"
    intruder = setup.transport.consumer([topic, setup.config.topics.feedback], group)
    joined = threading.Event()

    def join() -> None:  # on Kafka a member's join completes only once the others rejoin too
        while intruder.rebalances == 0:
            intruder.poll(0.1)
        joined.set()

    joiner = threading.Thread(target=join, daemon=True)
    joiner.start()
    wait_until(lambda: (pipeline.step(0.1), joined.is_set())[1], "the second member joined the group")
    intruder.close()  # leaves: the pipeline gets every partition back
    for event in stream[600:]:
        producer.send(topic, encode_event(event), KEY.encode())
    producer.flush()
    wait_until(lambda: (pipeline.step(0.1), len(results) >= 2)[1], "window #1 closed after the rebalances")

    assert [(r.window_id, r.n_events) for r in results] == [(f"{KEY}@{topic}-{partition}:0", 400),
                                                            (f"{KEY}@{topic}-{partition}:400", 400)]
    assert registry.get_sample_value("inferwatch_consumer_rebalances_total") >= 2
    labels = {"model": MODEL, "version": VERSION}
    assert registry.get_sample_value("inferwatch_windows_closed_total", {**labels, "reason": "full"}) == 2


def test_a_restart_while_an_alert_fires_neither_resends_it_nor_forgets_to_resolve_it(setup: Setup,
                                                                                     tmp_path: Path) -> None:
    from monitor.alerts import Alerting, AlertMetrics, AlertRules, FileStore, StateStore
    from monitor.alerts.topic_state import TopicStore

    def store() -> StateStore:
        if setup.config.kafka is None:
            return FileStore(tmp_path / "alerts.json")
        return TopicStore(setup.config.kafka.bootstrap, f"alerts-{setup.config.kafka.group}",
                          namespace=setup.config.kafka.group)

    def pipeline(channel: MemoryChannel, results: list[WindowResult]) -> Pipeline:
        profile = load_profile(setup.config.models[0].profile)
        group = setup.config.kafka.group if setup.config.kafka else "detect"
        alerting = Alerting(AlertRules(setup.config.alerts, store()), [channel], AlertMetrics(CollectorRegistry()))
        return Pipeline(setup.config, {KEY: profile}, setup.transport.consumer([setup.config.topics.events], group),
                        setup.transport.producer(), daemon_metrics(CollectorRegistry()), alerting=alerting,
                        on_result=results.append)

    rng = np.random.default_rng(8)
    producer = setup.transport.producer()

    def send(stream: list[object]) -> None:
        for i in range(0, len(stream), 100):
            producer.send(setup.config.topics.events, encode_batch(stream[i:i + 100]), KEY.encode())  # type: ignore[arg-type]
        producer.flush()

    send(events(1200, rng, shift=0.8, shifted=(1, 3)))  # three drifted windows: fires on the second
    before, first = MemoryChannel(), []
    running = pipeline(before, first)
    wait_until(lambda: (running.step(0.1), len(first) >= 3)[1], "three windows before the restart")
    running.commit()
    running._consumer.close()
    running._alerting.close()
    assert [(a.status, a.window) for a in before.alerts] == [("firing", 1)]

    send(events(800, rng, shift=0.8, shifted=(1, 3), start=1_800_000_000.0))  # still drifting after the restart
    send(events(800, rng, start=1_800_100_000.0))  # then clean: resolves after two clean windows
    after, second = MemoryChannel(), []
    restarted = pipeline(after, second)
    wait_until(lambda: (restarted.step(0.1), len(second) >= 4)[1], "four windows after the restart")
    restarted._alerting.close()
    assert [r.drift.drifted for r in second] == [True, True, False, False]
    assert [(a.status, a.fingerprint, a.started_at) for a in after.alerts] == [
        ("resolved", before.alerts[0].fingerprint, before.alerts[0].started_at)]


def test_the_pipeline_is_ready_only_once_its_partitions_are_assigned(setup: Setup) -> None:
    pipeline = make_pipeline(setup, CollectorRegistry(), MemoryChannel(), [])
    assert not pipeline.assigned  # /readyz answers 503 until the group has given this member its partitions
    wait_until(lambda: pipeline.step(0.2) >= 0 and pipeline.assigned, "the first assignment")


def test_by_event_time_an_event_from_the_far_future_is_dead_lettered_and_closes_nothing(tmp_path: Path) -> None:
    bus = MemoryBus()
    config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile=str(write_profile(tmp_path)))],
                    window=WindowConfig(duration_s=60.0, lateness_s=0.0, min_samples=1))
    registry, results = CollectorRegistry(), []
    consumer = bus.consumer([config.topics.events, config.topics.feedback], "detect")
    pipeline = Pipeline(config, {KEY: load_profile(config.models[0].profile)}, consumer, bus.producer(),
                        daemon_metrics(registry), on_result=results.append)
    stream = events(100, np.random.default_rng(4))  # one a second from 1_700_000_000: two minutes, two windows
    bad_clock = msgspec.structs.replace(stream[0], request_id="skewed", time=time.time() + 10 * 86_400)
    producer = bus.producer()
    for event in [*stream[:30], bad_clock, *stream[30:]]:
        producer.send(config.topics.events, encode_event(event), KEY.encode())
    drive(pipeline, until=101)
    assert registry.get_sample_value("inferwatch_events_rejected_total", {"reason": "future_time"}) == 1
    # only the event of the next minute closed the first window: the skewed one moved no watermark
    assert [(r.window_id, r.n_events) for r in results] == [(f"{KEY}@t1699999980000", 40)]
    (letter,) = read_all(Setup(bus, config, "memory"), config.topics.deadletter, 1)
    assert dict(letter.headers)["inferwatch_reason"] == b"future_time"
