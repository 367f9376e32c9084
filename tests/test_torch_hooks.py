"""Torch hooks: device timing, sampled penultimate embeddings and payloads on the classifier, and the
generate-loop wrapper (a deterministic fake loop for exact numbers, and a real untrained GRU sampling tokens)."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from collectors import EventProducer
from collectors.generation import GeneratorCollector
from collectors.redaction import PayloadPolicy
from collectors.timing import DeviceTimer
from collectors.torch_hooks import ClassifierCollector, hook_metrics
from monitor.events import InferenceEvent, decode_record
from monitor.transport import MemoryBus
from tests.support import DEADLINE_S
from tests.test_collectors import drain

torch = pytest.importorskip("torch")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")
#: GPU clock cycles of spinning queued before a timed forward: about 2 s on any current GPU. The host has that long
#: to return from the collector (it takes milliseconds): a generous deadline, not a speed check.
SPIN_CYCLES = 4_000_000_000


def warmed_up(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """``model`` after one forward on ``x``: cuDNN set-up and kernel loading happen now, not in the timed call."""
    with torch.no_grad():
        model(x)
    torch.cuda.synchronize()
    return model


def received(bus: MemoryBus) -> list[InferenceEvent]:
    out = [e for r in drain(bus, "events") for e in decode_record(r.value)]
    assert all(isinstance(e, InferenceEvent) for e in out)
    return out  # type: ignore[return-value]


def digits_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(  # the demo's shape, untrained
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(512, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10)).eval()


# -- timing --------------------------------------------------------------------------------------------------

def test_cpu_timing_is_wall_time_only() -> None:
    ticks = iter([10.0, 10.25])
    timer = DeviceTimer(clock=lambda: next(ticks))
    t = timer.end(timer.begin(torch.device("cpu")))
    assert (t.total_s, t.device, t.ended_at, t.gpu, t.gpu_index) == (0.25, "cpu", 10.25, None, None)


def test_classifier_on_cpu_sends_no_gpu_time() -> None:
    bus, registry = MemoryBus(), CollectorRegistry()
    producer = EventProducer(bus.producer(), "events")
    collector = ClassifierCollector(digits_cnn(), producer, "cnn", "1", metrics=hook_metrics(registry))
    collector(torch.rand(5, 1, 8, 8))
    producer.close()
    events = received(bus)
    assert len(events) == 5
    for e in events:
        assert e.latency is not None and e.latency.total_s > 0 and e.latency.gpu_s is None
        assert (e.device, e.gpu, e.batch_size, e.embedding, e.payload) == ("cpu", None, 5, None, None)
    assert registry.get_sample_value("inferwatch_collector_gpu_timings_total", {"outcome": "resolved"}) == 0


@cuda
def test_cuda_forward_is_timed_by_events_without_blocking_the_caller() -> None:
    bus, registry = MemoryBus(), CollectorRegistry()
    producer = EventProducer(bus.producer(), "events")
    x = torch.rand(8, 1, 8, 8, device="cuda")
    model = warmed_up(digits_cnn().cuda(), x)

    def slow_model(x: torch.Tensor) -> torch.Tensor:
        torch.cuda._sleep(SPIN_CYCLES)  # ~2 s of GPU spinning, queued asynchronously
        out: torch.Tensor = model(x)
        return out

    collector = ClassifierCollector(slow_model, producer, "cnn", "1", metrics=hook_metrics(registry),
                                    gpu_timeout_s=DEADLINE_S)
    collector(x)
    assert not torch.cuda.current_stream().query()  # the collector returned while the GPU still works
    producer.close(DEADLINE_S)
    events = received(bus)
    assert len(events) == 8 and events[0].device == "cuda:0"
    latency = events[0].latency
    assert latency is not None and latency.gpu_s is not None and latency.gpu_s > 0.2  # the spin is in it
    assert registry.get_sample_value("inferwatch_collector_gpu_timings_total", {"outcome": "resolved"}) == 1


@cuda
def test_unresolved_cuda_timing_is_counted_and_the_event_still_sent() -> None:
    bus, registry = MemoryBus(), CollectorRegistry()
    producer = EventProducer(bus.producer(), "events")
    x = torch.rand(2, 1, 8, 8, device="cuda")
    model = warmed_up(digits_cnn().cuda(), x)

    def slow_model(x: torch.Tensor) -> torch.Tensor:
        torch.cuda._sleep(SPIN_CYCLES)  # ~2 s, far past the deadline of 0 s
        out: torch.Tensor = model(x)
        return out

    collector = ClassifierCollector(slow_model, producer, "cnn", "1", metrics=hook_metrics(registry),
                                    gpu_timeout_s=0.0)
    collector(x)
    producer.close()
    events = received(bus)
    assert len(events) == 2 and events[0].latency is not None and events[0].latency.gpu_s is None
    assert registry.get_sample_value("inferwatch_collector_gpu_timings_total", {"outcome": "unresolved"}) == 1


# -- classifier embeddings and payloads ----------------------------------------------------------------------

def test_sampled_penultimate_embedding_matches_the_layer_output() -> None:
    bus, registry = MemoryBus(), CollectorRegistry()
    producer = EventProducer(bus.producer(), "events")
    model = digits_cnn()
    collector = ClassifierCollector(model, producer, "cnn", "1", embedding_layer="7", embedding_sample_rate=0.3,
                                    seed=5, metrics=hook_metrics(registry))
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        expected = model[:8](x)  # (64, 64): the ReLU after the first linear layer
        logits = collector(x, request_ids=[f"r{i}" for i in range(64)])
        model(x)  # a forward outside the collector captures nothing
    producer.close()
    events = received(bus)
    with_embedding = [i for i, e in enumerate(events) if e.embedding is not None]
    from collectors.redaction import BernoulliSampler

    assert with_embedding == BernoulliSampler(0.3, seed=5).take(64)  # seeded, per sample
    assert 8 <= len(with_embedding) <= 32
    for i in with_embedding:
        np.testing.assert_allclose(events[i].embedding, expected[i].numpy(), rtol=1e-6)
    assert all(e.batch_size == 64 for e in events)
    assert events[0].prediction == int(logits[0].argmax())
    assert registry.get_sample_value("inferwatch_collector_embeddings_sampled_total") == len(with_embedding)
    collector.close()
    assert not model[7]._forward_hooks


def test_embedding_survives_a_later_in_place_op() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU(inplace=True),
                                torch.nn.Linear(8, 3))
    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events")
    collector = ClassifierCollector(model, producer, "m", "1", embedding_layer="1")
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        collector(x)
        pre_relu = model[1](model[0](x))  # (4, 8), negative values included
    producer.close()
    got = np.array([e.embedding for e in received(bus)])
    np.testing.assert_allclose(got, pre_relu.numpy(), rtol=1e-6)
    assert (got < 0).any()  # the ReLU(inplace) that ran after the hook did not change what was captured


def test_bad_embedding_layer_is_refused_at_construction() -> None:
    producer = EventProducer(MemoryBus().producer(), "events")
    with pytest.raises(ValueError, match="'nope' is not a submodule"):
        ClassifierCollector(digits_cnn(), producer, "cnn", "1", embedding_layer="nope")
    with pytest.raises(TypeError, match=r"needs a torch\.nn\.Module"):
        ClassifierCollector(lambda x: x, producer, "cnn", "1", embedding_layer="0")
    producer.close()


def test_classifier_payload_is_the_sampled_raw_input() -> None:
    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events")
    policy = PayloadPolicy(sample_rate=0.5, max_chars=4096, seed=1)
    collector = ClassifierCollector(digits_cnn(), producer, "cnn", "1", payload=policy)
    x = torch.rand(16, 1, 8, 8)
    collector(x)
    x.zero_()  # the caller reuses its buffer: the sampled copy must not change
    producer.close()
    events = received(bus)
    sampled = [i for i, e in enumerate(events) if e.payload is not None]
    assert sampled == PayloadPolicy(sample_rate=0.5, seed=1).select(16)
    for i in sampled:
        payload = events[i].payload
        assert payload is not None and payload.input_b64 is not None and not payload.truncated
        raw = np.frombuffer(base64.b64decode(payload.input_b64), dtype=np.float32)
        assert raw.shape == (64,) and raw.any()


# -- generation ----------------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fake_loop(clock: FakeClock, tokens: Sequence[int], logprobs: Sequence[float | None]) -> Iterator[
        tuple[int, float | None]]:
    clock.now += 0.5  # prefill
    for i, (t, lp) in enumerate(zip(tokens, logprobs, strict=True)):
        if i:
            clock.now += 0.1  # one decode step
        yield t, lp


def decode(ids: Sequence[int]) -> str:
    words = {1: "I'm", 2: "sorry,", 3: "but", 4: "no.", 5: "Sure:", 6: "hello", 7: "world", 0: ""}
    return " ".join(words[i] for i in ids if i).strip()


def make_generator(loop_tokens: Sequence[int], logprobs: Sequence[float | None], **kwargs: object) -> tuple[
        GeneratorCollector, MemoryBus, EventProducer, FakeClock]:
    bus, clock = MemoryBus(), FakeClock()
    producer = EventProducer(bus.producer(), "events")
    collector = GeneratorCollector(lambda prompt: fake_loop(clock, loop_tokens, logprobs), decode, producer, "lm",
                                   "2", clock=clock, eos_token_ids={0}, **kwargs)  # type: ignore[arg-type]
    return collector, bus, producer, clock


def test_generation_event_from_a_deterministic_loop() -> None:
    collector, bus, producer, _ = make_generator([5, 6, 7, 0], [-0.2, -1.0, -0.4, -0.2], attributes={"pod": "a"})
    out = collector([9, 9, 9, 9, 9], request_id="q1")
    assert (out.token_ids, out.logprobs, out.text, out.stop_reason) == (
        [5, 6, 7, 0], [-0.2, -1.0, -0.4, -0.2], "Sure: hello world", "stop")
    producer.close()
    (e,) = received(bus)
    assert (e.request_id, e.task, e.device, e.attributes) == ("q1", "generation", "cpu", {"pod": "a"})
    g = e.generation
    assert g is not None
    assert (g.prompt_tokens, g.output_tokens, g.output_chars, g.stop_reason, g.refusal) == (5, 4, 17, "stop", False)
    assert g.mean_logprob == pytest.approx(-0.45)
    lat = e.latency
    assert lat is not None and lat.gpu_s is None
    assert lat.time_to_first_token_s == pytest.approx(0.5)
    assert lat.time_per_output_token_s == pytest.approx(0.1)
    assert lat.total_s == pytest.approx(0.8)


def test_refusal_length_and_missing_logprobs() -> None:
    collector, bus, producer, _ = make_generator([1, 2, 3, 4], [None] * 4, max_new_tokens=4)
    assert collector([1]).text == "I'm sorry, but no."
    producer.close()
    (e,) = received(bus)
    assert e.generation is not None
    assert (e.generation.refusal, e.generation.stop_reason, e.generation.mean_logprob) == (True, "length", None)


def test_loop_return_value_is_the_stop_reason_and_streams_pass_through() -> None:
    bus, clock = MemoryBus(), FakeClock()
    producer = EventProducer(bus.producer(), "events")

    def loop(prompt: Sequence[int]) -> Iterator[tuple[int, float | None]]:
        yield from fake_loop(clock, [6, 7], [-1.0, -2.0])
        return "content_filter"

    collector = GeneratorCollector(loop, decode, producer, "lm", "2", clock=clock)
    assert list(collector.stream([1, 2])) == [(6, -1.0), (7, -2.0)]
    cancelled = collector.stream([1])
    assert next(cancelled) == (6, -1.0)
    cancelled.close()  # the client went away after one token
    producer.close()
    events = received(bus)
    reasons = [(e.generation.stop_reason, e.generation.output_tokens) for e in events if e.generation]
    assert reasons == [("content_filter", 2), ("cancelled", 1)]
    assert events[1].latency is not None and events[1].latency.time_per_output_token_s is None


def test_capture_failures_never_reach_the_caller() -> None:
    registry = CollectorRegistry()

    def broken_embed(prompt: Sequence[int]) -> torch.Tensor:
        raise RuntimeError("embedding bug")

    collector, bus, producer, _ = make_generator([6, 7], [-1.0, -1.0], embed=broken_embed,
                                                     metrics=hook_metrics(registry))
    assert collector([1]).token_ids == [6, 7]
    # a loop that breaks the protocol (bare ints) still streams unchanged
    odd = GeneratorCollector(lambda p: iter([6, 7]), decode, producer, "lm", "2",  # type: ignore[arg-type,return-value]
                             metrics=collector.metrics)
    assert list(odd.stream([1])) == [6, 7]
    producer.close()
    assert received(bus) == []
    assert registry.get_sample_value("inferwatch_collector_capture_errors_total", {"model": "lm"}) == 2


def test_model_errors_propagate_and_make_no_event() -> None:
    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events")

    def failing(prompt: Sequence[int]) -> Iterator[tuple[int, float | None]]:
        yield 6, -1.0
        raise RuntimeError("CUDA out of memory")

    collector = GeneratorCollector(failing, decode, producer, "lm", "2")
    with pytest.raises(RuntimeError, match="out of memory"):
        collector([1])
    producer.close()
    assert received(bus) == [] and collector.capture_errors == 0


def test_generation_payload_is_redacted_and_sampled() -> None:
    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events")
    vocab = "abcdefghijklmnopqrstuvwxyz@. "

    def text_of(ids: Sequence[int]) -> str:
        return "".join(vocab[i] for i in ids)

    def ids_of(text: str) -> list[int]:
        return [vocab.index(c) for c in text]

    reply = ids_of("mail ann@corp.io")
    collector = GeneratorCollector(lambda p: iter([(t, -0.1) for t in reply]), text_of, producer, "lm", "2",
                                   payload=PayloadPolicy(sample_rate=1.0, max_chars=64))
    collector(ids_of("who is bob@corp.io"))
    producer.close()
    (e,) = received(bus)
    assert e.payload is not None
    assert (e.payload.prompt, e.payload.completion, e.payload.redactions) == (
        "who is [REDACTED:email]", "mail [REDACTED:email]", 2)


class TinyGRU(torch.nn.Module):  # type: ignore[misc]
    def __init__(self, vocab: int = 32, dim: int = 16) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.rnn = torch.nn.GRU(dim, dim, batch_first=True)
        self.head = torch.nn.Linear(dim, vocab)

    def hidden(self, ids: Sequence[int]) -> torch.Tensor:
        h, _ = self.rnn(self.embed(torch.tensor([list(ids)])))  # (1, T, D)
        out: torch.Tensor = h
        return out

    def generate(self, prompt: Sequence[int], n: int, seed: int) -> Iterator[tuple[int, float | None]]:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            h, state = self.rnn(self.embed(torch.tensor([list(prompt)])))  # (1, T, D)
            last = h[:, -1]  # (1, D)
            for _ in range(n):
                logp = self.head(last).log_softmax(-1)  # (1, V)
                token = torch.multinomial(logp.exp(), 1, generator=g)  # (1, 1)
                yield int(token), float(logp[0, token[0, 0]])
                h, state = self.rnn(self.embed(token), state)  # (1, 1, D)
                last = h[:, -1]


def test_real_gru_sampling_twenty_tokens() -> None:
    torch.manual_seed(0)
    model = TinyGRU().eval()
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    reference = list(model.generate(prompt, 20, seed=42))  # the loop run bare, for comparison

    def embed(ids: Sequence[int]) -> torch.Tensor:
        with torch.no_grad():
            return model.hidden(ids).mean(1)  # (1, D): mean-pooled over the prompt

    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events")
    collector = GeneratorCollector(lambda p: model.generate(p, 20, seed=42), lambda ids: "".join(
        chr(97 + i % 26) for i in ids), producer, "gru", "0", max_new_tokens=20, embed=embed)
    out = collector(prompt)
    assert list(zip(out.token_ids, out.logprobs, strict=True)) == reference  # returned unchanged
    producer.close()
    (e,) = received(bus)
    g, lat = e.generation, e.latency
    assert g is not None and lat is not None
    assert (g.prompt_tokens, g.output_tokens, g.output_chars, g.stop_reason) == (8, 20, 20, "length")
    assert g.mean_logprob == pytest.approx(sum(lp for _, lp in reference if lp is not None) / 20, rel=1e-6)
    assert -math.log(32) * 3 < g.mean_logprob < 0
    assert lat.time_to_first_token_s is not None and lat.time_per_output_token_s is not None
    assert 0 < lat.time_to_first_token_s < lat.total_s
    assert lat.time_per_output_token_s == pytest.approx((lat.total_s - lat.time_to_first_token_s) / 19, rel=1e-6)
    assert e.embedding is not None and len(e.embedding) == 16
    np.testing.assert_allclose(e.embedding, embed(prompt)[0].numpy(), rtol=1e-6)


def test_prompt_embeddings_are_sampled_at_the_rate() -> None:
    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events")
    calls: list[int] = []

    def embed(ids: Sequence[int]) -> torch.Tensor:
        calls.append(len(ids))
        return torch.ones(4)

    collector = GeneratorCollector(lambda p: iter([(1, -0.5)]), lambda ids: "x", producer, "lm", "2", embed=embed,
                                   embedding_sample_rate=0.25, seed=3)
    for _ in range(400):
        collector([1, 2])
    producer.close()
    with_embedding = sum(e.embedding is not None for e in received(bus))
    assert with_embedding == len(calls)  # embed is called only for sampled requests
    assert 400 * 0.25 - 4 * math.sqrt(400 * 0.25 * 0.75) < with_embedding < 400 * 0.25 + 4 * math.sqrt(75)
