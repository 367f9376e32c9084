"""What Prometheus scrapes from the daemon and the sidecar: per-event latency and GenAI histograms with their exact
OTel buckets, info metrics, class ratios, LLM window gauges and consumer lag (values, not just presence), and
``promtool check metrics`` on live scrapes of both processes after they handled CNN-like and LLM-like traffic."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from collectors.sidecar import ModelRef
from detectors import build_llm_reference
from monitor.alerts import MemoryChannel
from monitor.config import Config, DetectConfig, ModelConfig, TopicsConfig, WindowConfig, load_config_text
from monitor.events import Generation, InferenceEvent, Latency, encode_batch, encode_event
from monitor.genai import (
    REQUEST_DURATION_BUCKETS,
    TIME_PER_OUTPUT_TOKEN_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
    TOKEN_USAGE_BUCKETS,
)
from monitor.metrics import INFERENCE_LATENCY_BUCKETS, daemon_metrics, observe_many
from monitor.pipeline import Pipeline
from monitor.profiles import Profile, load_profile, save_profile
from monitor.server import DaemonServer
from monitor.transport import KafkaTransport, MemoryBus, ensure_topics
from monitor.wiring import build_pipeline
from tests.support import DEADLINE_S, PRIORS, events, wait_until, write_profile
from tests.test_sidecar import call, start_stack

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="needs promtool: apt-get install prometheus")

LLM, LLM_VERSION = "llm", "1"
#: The OpenTelemetry GenAI semantic conventions' recommended boundaries, written out (not imported) so that a
#: change to the code's constants fails here.
OTEL_BUCKETS = {
    "inferwatch_gen_ai_server_time_to_first_token_seconds": (
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10),
    "inferwatch_gen_ai_server_time_per_output_token_seconds": (
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5),
    "inferwatch_gen_ai_server_request_duration_seconds": (
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
    "inferwatch_gen_ai_client_token_usage": (
        1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
}


def write_llm_profile(folder: Path) -> Path:
    rng = np.random.default_rng(3)
    n = 2000
    reference = build_llm_reference(rng.poisson(40, n) + 1, rng.normal(-1.0, 0.2, n), np.zeros(n, bool),
                                    rng.random(n) < 0.05)
    path = folder / "llm.profile.npz"
    save_profile(path, Profile(model=LLM, version=LLM_VERSION, llm=reference))
    return path


def llm_event(i: int, prompt: int, output: int, logprob: float, total_s: float, ttft_s: float | None,
              tpot_s: float | None, estimated: bool = False) -> InferenceEvent:
    return InferenceEvent(
        request_id=f"g{i}-{uuid.uuid4().hex[:6]}", time=1_700_000_000.0 + i, model=LLM, version=LLM_VERSION,
        task="generation", generation=Generation(prompt_tokens=prompt, output_tokens=output, output_chars=4 * output,
                                                 mean_logprob=logprob),
        latency=Latency(total_s=total_s, time_to_first_token_s=ttft_s, time_per_output_token_s=tpot_s),
        attributes={"usage": "estimated"} if estimated else {})


def llm_events(n: int, rng: np.random.Generator) -> list[InferenceEvent]:
    return [llm_event(i, int(rng.integers(5, 200)), int(rng.integers(2, 90)), float(rng.normal(-1, 0.2)),
                      float(rng.uniform(0.2, 5)), float(rng.uniform(0.01, 0.5)), float(rng.uniform(0.01, 0.1)))
            for i in range(n)]


def with_gpu(evs: list[InferenceEvent], rng: np.random.Generator) -> list[InferenceEvent]:
    """CNN-like latencies: total 1-50 ms, GPU time about half of it."""
    out = []
    for e in evs:
        total = float(rng.uniform(0.001, 0.05))
        out.append(msgspec.structs.replace(e, latency=Latency(total_s=total, gpu_s=total / 2)))
    return out


# -- the pipeline's observations, on the in-process bus -------------------------------------------------------
@pytest.fixture
def two_models(tmp_path: Path) -> Iterator[tuple[Pipeline, CollectorRegistry, MemoryBus, Config]]:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicsConfig(events=f"ev-{suffix}", feedback=f"fb-{suffix}", results=f"res-{suffix}",
                          deadletter=f"dl-{suffix}")
    config = Config(models=[ModelConfig(name="tabular", version="7", profile=str(write_profile(tmp_path))),
                            ModelConfig(name=LLM, version=LLM_VERSION, profile=str(write_llm_profile(tmp_path)),
                                        training_run="runs/llm-9")],
                    topics=topics, window=WindowConfig(size=200, max_seconds=3600, min_samples=30),
                    detect=DetectConfig(alpha=0.01, min_effect=0.1))
    profiles = {m.key: load_profile(m.profile) for m in config.models}
    bus, registry = MemoryBus(), CollectorRegistry()
    pipeline = Pipeline(config, profiles, bus.consumer([topics.events, topics.feedback], "detect"), bus.producer(),
                        daemon_metrics(registry), [MemoryChannel()])
    yield pipeline, registry, bus, config
    bus.close()


def drain(pipeline: Pipeline, records: int) -> None:
    wait_until(lambda: pipeline.step(0.05) >= 0 and pipeline.messages >= records, f"{records} records consumed")


def test_each_valid_event_is_observed_in_the_latency_and_genai_histograms(
        two_models: tuple[Pipeline, CollectorRegistry, MemoryBus, Config]) -> None:
    pipeline, registry, bus, config = two_models
    base = events(3, np.random.default_rng(1))
    cnn = [msgspec.structs.replace(base[0], latency=Latency(total_s=0.002, gpu_s=0.0015)),
           msgspec.structs.replace(base[1], latency=Latency(total_s=0.004, gpu_s=0.003)),
           msgspec.structs.replace(base[2], latency=Latency(total_s=0.020))]
    gen = [llm_event(0, prompt=12, output=30, logprob=-1.0, total_s=1.5, ttft_s=0.2, tpot_s=0.05),
           llm_event(1, prompt=100, output=3, logprob=-0.5, total_s=0.05, ttft_s=0.03, tpot_s=0.01),
           llm_event(2, prompt=0, output=7, logprob=-0.7, total_s=0.3, ttft_s=None, tpot_s=None, estimated=True)]
    unknown = msgspec.structs.replace(base[0], model="nobody")  # rejected: observed nowhere
    producer = bus.producer()
    for e in [*cnn, *gen, unknown]:
        producer.send(config.topics.events, encode_event(e))
    drain(pipeline, 7)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    cnn_total = {"model": "tabular", "version": "7", "kind": "total"}
    cnn_gpu = {"model": "tabular", "version": "7", "kind": "gpu"}
    assert value("inferwatch_inference_latency_seconds_count", **cnn_total) == 3
    assert value("inferwatch_inference_latency_seconds_sum", **cnn_total) == pytest.approx(0.026)
    assert value("inferwatch_inference_latency_seconds_bucket", **cnn_total, le="0.0025") == 1
    assert value("inferwatch_inference_latency_seconds_bucket", **cnn_total, le="0.005") == 2
    assert value("inferwatch_inference_latency_seconds_bucket", **cnn_total, le="0.01") == 2
    assert value("inferwatch_inference_latency_seconds_count", **cnn_gpu) == 2  # only events that measured it
    assert value("inferwatch_inference_latency_seconds_sum", **cnn_gpu) == pytest.approx(0.0045)
    assert value("inferwatch_inference_latency_seconds_count", model="nobody", version="7", kind="total") is None

    mv = {"model": LLM, "version": LLM_VERSION}
    assert value("inferwatch_gen_ai_server_request_duration_seconds_count", **mv) == 3
    assert value("inferwatch_gen_ai_server_request_duration_seconds_sum", **mv) == pytest.approx(1.85)
    assert value("inferwatch_gen_ai_server_request_duration_seconds_bucket", **mv, le="0.08") == 1
    assert value("inferwatch_gen_ai_server_time_to_first_token_seconds_count", **mv) == 2
    assert value("inferwatch_gen_ai_server_time_to_first_token_seconds_sum", **mv) == pytest.approx(0.23)
    assert value("inferwatch_gen_ai_server_time_to_first_token_seconds_bucket", **mv, le="0.04") == 1
    assert value("inferwatch_gen_ai_server_time_per_output_token_seconds_sum", **mv) == pytest.approx(0.06)
    # the estimated usage (a stream without a usage chunk) is left out of token usage
    inp, out = {**mv, "gen_ai_token_type": "input"}, {**mv, "gen_ai_token_type": "output"}
    assert value("inferwatch_gen_ai_client_token_usage_count", **inp) == 2
    assert value("inferwatch_gen_ai_client_token_usage_sum", **inp) == 112
    assert value("inferwatch_gen_ai_client_token_usage_sum", **out) == 33
    assert value("inferwatch_gen_ai_client_token_usage_bucket", **out, le="4.0") == 1
    assert value("inferwatch_gen_ai_client_token_usage_bucket", **out, le="64.0") == 2
    # a classifier's events are not generations
    assert value("inferwatch_gen_ai_server_request_duration_seconds_count", model="tabular", version="7") is None


def test_a_batch_of_latencies_fills_the_buckets_as_one_observe_per_value() -> None:
    """``observe_many`` (one update per bucket, for the events of a batch record) scrapes as per-value observes:
    values on a bound go in that bucket, values above the last in +Inf."""
    rng = np.random.default_rng(3)
    values = [*INFERENCE_LATENCY_BUCKETS, 0.0, 11.0, *rng.lognormal(np.log(0.004), 1.5, size=500).tolist()]
    batched, single = daemon_metrics(CollectorRegistry()), daemon_metrics(CollectorRegistry())
    observe_many(batched.inference_latency.labels("m", "1", "total"), values)
    for v in values:
        single.inference_latency.labels("m", "1", "total").observe(v)
    (got,), (want,) = batched.inference_latency.collect(), single.inference_latency.collect()
    assert [(s.name, s.labels) for s in got.samples] == [(s.name, s.labels) for s in want.samples]
    for g, w in zip(got.samples, want.samples, strict=True):
        assert g.value == pytest.approx(w.value, rel=1e-12), g


def test_model_info_class_ratios_and_llm_window_gauges(
        two_models: tuple[Pipeline, CollectorRegistry, MemoryBus, Config]) -> None:
    pipeline, registry, bus, config = two_models
    rng = np.random.default_rng(5)
    cnn, gen = events(200, rng), llm_events(200, rng)
    producer = bus.producer()
    producer.send(config.topics.events, encode_batch(cnn))
    producer.send(config.topics.events, encode_batch(gen))
    drain(pipeline, 2)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("inferwatch_model_info", model="tabular", version="7", training_run="runs/42",
                 kind="classifier") == 1
    assert value("inferwatch_model_info", model=LLM, version=LLM_VERSION, training_run="runs/llm-9",
                 kind="generator") == 1

    profile = load_profile(config.models[0].profile)
    predictions = np.array([e.prediction for e in cnn])
    for index, name in enumerate(("a", "b", "c")):
        assert value("inferwatch_prediction_class_ratio", model="tabular", version="7", source="window",
                     **{"class": name}) == pytest.approx(float(np.mean(predictions == index)))
        assert profile.reference is not None and profile.reference.class_priors is not None
        reference = value("inferwatch_prediction_class_ratio", model="tabular", version="7", source="reference",
                          **{"class": name})
        assert reference == pytest.approx(float(profile.reference.class_priors[index]))
        assert reference == pytest.approx(PRIORS[index], abs=0.03)  # the profile's sample of (0.5, 0.3, 0.2)

    tokens = np.array([e.generation.output_tokens for e in gen if e.generation is not None])
    logprobs = [e.generation.mean_logprob for e in gen if e.generation is not None]
    for q in ("0.5", "0.95", "0.99"):
        assert value("inferwatch_llm_output_tokens", model=LLM, version=LLM_VERSION, quantile=q) == pytest.approx(
            float(np.percentile(tokens, 100 * float(q))))
    assert value("inferwatch_llm_mean_logprob", model=LLM, version=LLM_VERSION) == pytest.approx(
        math.fsum(x for x in logprobs if x is not None) / len(logprobs))


def test_consumer_lag_is_the_records_behind_the_end_after_each_poll(
        two_models: tuple[Pipeline, CollectorRegistry, MemoryBus, Config]) -> None:
    pipeline, registry, bus, config = two_models
    producer = bus.producer()
    for e in events(700, np.random.default_rng(2)):
        producer.send(config.topics.events, encode_event(e))
    pipeline.step(0.5)  # one poll returns at most 500 records
    lag = {"topic": config.topics.events, "partition": "0"}
    assert pipeline.messages == 500
    assert registry.get_sample_value("inferwatch_consumer_lag_records", lag) == 200
    assert registry.get_sample_value("inferwatch_consumer_lag_records",
                                     {"topic": config.topics.feedback, "partition": "0"}) == 0
    pipeline.step(0.5)
    assert registry.get_sample_value("inferwatch_consumer_lag_records", lag) == 0


@pytest.mark.kafka
def test_kafka_consumer_lag_is_highwater_minus_position(kafka_bootstrap: str) -> None:
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, {topic: 1})
    transport = KafkaTransport(kafka_bootstrap)
    try:
        producer = transport.producer()
        for i in range(20):
            producer.send(topic, b"%d" % i)
        producer.flush(DEADLINE_S)
        consumer = transport.consumer([topic], f"g-{uuid.uuid4().hex[:8]}")
        got: list[object] = []
        wait_until(lambda: got.extend(consumer.poll(0.2, max_records=5)) or len(got) >= 5, "the first records")
        assert consumer.lag() == {(topic, 0): 20 - len(got)}
        consumer.close()
    finally:
        transport.close()


# -- live scrapes checked by promtool ------------------------------------------------------------------------
def promtool_problems(exposition: bytes) -> str:
    """What ``promtool check metrics`` says about an exposition ('' when nothing); fails on a non-zero exit."""
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    problems = (done.stdout + done.stderr).decode().strip()
    assert done.returncode == 0, problems
    return problems


_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_BUCKET = re.compile(r'^(\S+)_bucket\{(.*)\} \S+$', re.MULTILINE)


def check_names(exposition: str) -> dict[str, str]:
    """Every family is ``inferwatch_``-prefixed and every counter ends in ``_total``; returns name -> type."""
    types = dict(_TYPE.findall(exposition))
    assert types, "no metric families"
    assert not [n for n in types if not n.startswith("inferwatch_")]
    assert not [n for n, t in types.items() if t == "counter" and not n.endswith("_total")]
    assert not [n for n, t in types.items() if t != "counter" and n.endswith("_total")]
    return types


def bucket_bounds(exposition: str) -> dict[tuple[str, str], tuple[float, ...]]:
    """``(histogram, its other labels) -> upper bounds without +Inf`` for every histogram series."""
    bounds: dict[tuple[str, str], list[float]] = {}
    for name, labels in _BUCKET.findall(exposition):
        le = re.search(r'le="([^"]*)"', labels)
        assert le is not None
        rest = re.sub(r'le="[^"]*",?', "", labels)
        if le.group(1) != "+Inf":
            bounds.setdefault((name, rest), []).append(float(le.group(1)))
    return {key: tuple(values) for key, values in bounds.items()}


def check_otel_buckets(exposition: str, expected_series: int) -> None:
    bounds = bucket_bounds(exposition)
    seen = 0
    for (name, _), values in bounds.items():
        if name in OTEL_BUCKETS:
            assert values == tuple(float(b) for b in OTEL_BUCKETS[name]), name
            seen += 1
    assert seen == expected_series


def test_the_code_uses_the_otel_buckets() -> None:
    code = {"inferwatch_gen_ai_server_time_to_first_token_seconds": TIME_TO_FIRST_TOKEN_BUCKETS,
            "inferwatch_gen_ai_server_time_per_output_token_seconds": TIME_PER_OUTPUT_TOKEN_BUCKETS,
            "inferwatch_gen_ai_server_request_duration_seconds": REQUEST_DURATION_BUCKETS,
            "inferwatch_gen_ai_client_token_usage": TOKEN_USAGE_BUCKETS}
    assert {name: tuple(map(float, b)) for name, b in OTEL_BUCKETS.items()} == code


@pytest.fixture
def live_daemon(tmp_path: Path) -> Iterator[int]:
    """The daemon's pipeline and HTTP server on the embedded bus, watching a classifier and a generator (whose
    profile has no features, so it is handed in: ``inferwatch run`` loads profiles that have some)."""
    config = load_config_text(f"""
models:
  - {{name: tabular, version: 7, profile: "{write_profile(tmp_path)}"}}
  - {{name: {LLM}, version: {LLM_VERSION}, profile: "{write_llm_profile(tmp_path)}"}}
window: {{size: 300, min_samples: 30}}
server: {{port: 0}}
""")
    wiring = build_pipeline(config, {m.key: load_profile(m.profile) for m in config.models})
    server = DaemonServer.from_config(config.server, wiring.registry, ready=lambda: not wiring.stop.is_set(),
                                      ingest=wiring.producer, topics={"events": config.topics.events,
                                                                      "feedback": config.topics.feedback})
    server.start()
    wiring.start()
    try:
        yield server.port
    finally:
        wiring.close()
        server.close()


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DEADLINE_S) as response:
        body: bytes = response.read()
    return body


@pytest.mark.slow
@needs_promtool
def test_promtool_accepts_the_daemon_after_cnn_and_llm_traffic(live_daemon: int) -> None:
    base = f"http://127.0.0.1:{live_daemon}"
    wait_until(lambda: scrape(base + "/readyz") == b"ready\n", "the daemon's /readyz")
    rng = np.random.default_rng(11)
    for batch in (with_gpu(events(300, rng), rng), llm_events(300, rng)):
        request = urllib.request.Request(base + "/v1/events", data=encode_batch(batch), method="POST",
                                         headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(request, timeout=DEADLINE_S).status == 202

    def closed() -> bool:
        text = scrape(base + "/metrics").decode()
        return all(f'inferwatch_windows_closed_total{{model="{m}",reason="full",version="{v}"}} 1.0' in text
                   for m, v in (("tabular", "7"), (LLM, LLM_VERSION)))

    wait_until(closed, "a closed window of each model")
    exposition = scrape(base + "/metrics")
    assert promtool_problems(exposition) == ""
    text = exposition.decode()
    types = check_names(text)
    assert types["inferwatch_latency_seconds"] == "summary"  # window quantiles: the label is a summary's
    assert types["inferwatch_llm_output_tokens"] == "summary"
    assert types["inferwatch_build_info"] == types["inferwatch_model_info"] == "gauge"
    check_otel_buckets(text, expected_series=5)  # ttft, tpot, duration, tokens input and output
    latency = {labels: values for (name, labels), values in bucket_bounds(text).items()
               if name == "inferwatch_inference_latency_seconds"}
    assert set(latency) == {'kind="gpu",model="tabular",version="7"', 'kind="total",model="tabular",version="7"',
                            f'kind="total",model="{LLM}",version="{LLM_VERSION}"'}
    assert all(values == INFERENCE_LATENCY_BUCKETS for values in latency.values())
    assert 'inferwatch_consumer_lag_records{partition="0",topic="inferwatch.events"}' in text


@pytest.mark.slow
@needs_promtool
def test_promtool_accepts_the_sidecar_after_it_proxied_llm_requests() -> None:
    stack, stop, thread = start_stack(models={"resnet": ModelRef("cnn", "7"), "gpt": ModelRef(LLM, LLM_VERSION)})
    try:
        assert call(stack.port, "POST", "/v1/completions", {"model": "gpt", "prompt": "hello"})[0] == 200
        assert call(stack.port, "POST", "/v1/chat/completions",
                    {"model": "unmapped-model-name", "messages": [{"role": "user", "content": "hi"}]})[0] == 200
        stack.events(2)
        admin = f"http://127.0.0.1:{stack.sidecar.admin_address[1]}/metrics"
        exposition = scrape(admin)
        assert promtool_problems(exposition) == ""
        text = exposition.decode()
        check_names(text)
        check_otel_buckets(text, expected_series=2 * 3)  # duration and tokens in/out; both models (no ttft unstreamed)
        mv = {"model": LLM, "version": LLM_VERSION}
        assert stack.metric("inferwatch_gen_ai_client_token_usage_sum", **mv, gen_ai_token_type="input") == 9
        assert stack.metric("inferwatch_gen_ai_client_token_usage_sum", **mv, gen_ai_token_type="output") == 4
        assert stack.metric("inferwatch_gen_ai_server_request_duration_seconds_count", **mv) == 1
        # a model name the mapping does not list is not a label value of its own
        assert stack.metric("inferwatch_gen_ai_server_request_duration_seconds_count", model="other",
                            version="other") == 1
        assert "unmapped-model-name" not in text
        assert 'inferwatch_build_info{python="' in text
    finally:
        stop.set()
        thread.join(DEADLINE_S)
        stack.producer.close(DEADLINE_S)
        stack.upstream.close()
