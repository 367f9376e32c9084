"""A stream of schema-valid hostile events leaves the pipeline running and healthy, on both transports.

Probabilities that are not a distribution, a prediction outside the profile's classes, features of ±1e308 and a
window of constant values: every hostile event is counted by reason and dead-lettered, the constant window is
evaluated without a detector failure, and the clean window after it is evaluated. On Kafka a second consumer
group replays the same stream from the start and gets the same results.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.config import Config, DetectConfig, KafkaConfig, ModelConfig, TopicsConfig, WindowConfig
from monitor.events import REJECT_REASONS, InferenceEvent, encode_event
from monitor.metrics import daemon_metrics
from monitor.pipeline import Pipeline, WindowResult
from monitor.profiles import load_profile
from monitor.transport import KafkaTransport, MemoryBus, Transport, ensure_topics
from tests.support import DEADLINE_S, MODEL, VERSION, events, wait_until, write_profile

KEY = f"{MODEL}/{VERSION}"
SIZE = 100


@dataclass
class Setup:
    transport: Transport
    config: Config


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    suffix = uuid.uuid4().hex[:10]
    topics = TopicsConfig(events=f"ev-{suffix}", feedback=f"fb-{suffix}", results=f"res-{suffix}",
                          deadletter=f"dl-{suffix}")
    kafka, transport = None, None
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        ensure_topics(bootstrap, {topics.events: 1, topics.feedback: 1, topics.results: 1, topics.deadletter: 1})
        kafka = KafkaConfig(bootstrap=bootstrap, group=f"g-{suffix}")
        transport = KafkaTransport(bootstrap)
    config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile=str(write_profile(tmp_path)))],
                    kafka=kafka, topics=topics, window=WindowConfig(size=SIZE, max_seconds=3600, min_samples=30),
                    detect=DetectConfig())
    s = Setup(transport or MemoryBus(), config)
    yield s
    s.transport.close()


def _hostile(template: InferenceEvent) -> list[bytes]:
    """Schema-valid records that no statistic can use (each encoded as a client would send it)."""
    def variant(**changes: object) -> bytes:
        fields = {f: getattr(template, f) for f in template.__struct_fields__}
        fields.update(changes, request_id=uuid.uuid4().hex)
        return encode_event(InferenceEvent(**fields))  # type: ignore[arg-type]

    first = next(iter(template.features))
    return [variant(probabilities=[2.0, -1.0, 0.0]), variant(probabilities=[0.2, 0.2, 0.2]),
            variant(probabilities=[0.0, 0.0, 0.0]), variant(prediction=7), variant(prediction="zebra"),
            variant(features={**template.features, first: 1e308}),
            variant(features={**template.features, first: -1e308})]


def _run(s: Setup, group: str, until: int) -> tuple[list[WindowResult], CollectorRegistry]:
    registry, results = CollectorRegistry(), list[WindowResult]()
    consumer = s.transport.consumer([s.config.topics.events], group)
    pipeline = Pipeline(s.config, {KEY: load_profile(s.config.models[0].profile)}, consumer, s.transport.producer(),
                        daemon_metrics(registry), on_result=results.append)
    # A group join on a broker starved by a busy machine has taken more than a minute in CI: be generous.
    wait_until(lambda: pipeline.step(0.1) >= 0 and pipeline.messages >= until, f"{until} records consumed",
               timeout_s=3 * DEADLINE_S)
    pipeline.commit()
    consumer.close()
    return results, registry


def test_hostile_events_are_counted_and_the_clean_windows_after_them_evaluated(setup: Setup) -> None:
    rng = np.random.default_rng(11)
    clean = events(SIZE, rng)
    constant = [msgspec.structs.replace(e, features=dict.fromkeys(e.features, 0.5)) for e in events(SIZE, rng)]
    after = events(SIZE, rng)
    hostile = _hostile(clean[0]) * 3
    producer = setup.transport.producer()
    topic = setup.config.topics.events
    records = [encode_event(e) for e in clean] + hostile + [encode_event(e) for e in constant + after]
    for record in records:
        producer.send(topic, record, KEY.encode())
    producer.flush()

    for group in ("detect", "replay") if setup.config.kafka else ("detect",):
        results, registry = _run(setup, f"{group}-{uuid.uuid4().hex[:6]}", len(records))
        rejected = {r: registry.get_sample_value("inferwatch_events_rejected_total", {"reason": r}) or 0
                    for r in (*REJECT_REASONS, "processing_error")}
        assert sum(rejected.values()) == len(hostile), rejected
        assert rejected["processing_error"] == 0
        assert registry.get_sample_value("inferwatch_deadletters_total") == len(hostile)
        assert [r.n_events for r in results] == [SIZE, SIZE, SIZE]
        assert all(not r.failures for r in results), [r.failures for r in results]
        assert not results[0].drifted and not results[2].drifted
        assert results[1].drift is not None and results[1].drift.drifted  # a constant window is drift, not a crash
