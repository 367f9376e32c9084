"""In-process capture around a token-by-token text generator.

The protocol (:class:`GenerateLoop`) is the smallest a serving loop already has: called with the prompt's
token ids, it yields one ``(token_id, logprob)`` pair per generated token, as plain Python ``int`` and
``float`` (``logprob`` is the log-probability of the sampled token under the distribution it was sampled from,
or None when the loop does not compute it). The wrapper never touches the model's tensors, so it never forces
a GPU synchronisation. The loop's stop reason is

1. the loop's own return value, when it is a generator that ``return``\\ s a string (``"stop"``, ``"length"``,
   ``"content_filter"``...); otherwise
2. ``"stop"`` when the last token is one of ``eos_token_ids``, ``"length"`` when ``max_new_tokens`` tokens were
   produced, else None; and ``"cancelled"`` when the caller stopped reading a :meth:`~GeneratorCollector.stream`.

On the serving thread the wrapper reads the clock at the start, at the first token and at the end, appends each
token id and adds its log-probability: time to first token is ``t_first - t_start`` and time per output token
is ``(t_end - t_first) / (n - 1)`` (the OpenTelemetry GenAI definitions). Decoding the text for its length,
the refusal check (:func:`collectors.refusal.is_refusal`), redaction and JSON happen on the producer thread. The
tokens are handed back unchanged, and capture failures are counted and logged, never raised (fail-open).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from collectors.redaction import BernoulliSampler, PayloadPolicy
from collectors.refusal import is_refusal
from collectors.timing import DeviceTimer, Timing
from collectors.torch_hooks import DeviceContext, HookMetrics, hook_metrics
from monitor.events import MAX_EMBEDDING, Generation, InferenceEvent, Latency

if TYPE_CHECKING:
    import torch

    from collectors.gpu import GpuSampler
    from collectors.producer import EventProducer

log = logging.getLogger(__name__)

Step = tuple[int, float | None]


class GenerateLoop(Protocol):
    """A token-by-token generator: prompt token ids in, one ``(token_id, logprob)`` per generated token out.

    A generator function may ``return`` a stop reason string; it becomes the event's ``stop_reason``.
    """

    def __call__(self, prompt_ids: Sequence[int], /) -> Iterable[Step]: ...


@dataclass(frozen=True)
class Generated:
    """What one call generated, exactly as the loop yielded it."""

    token_ids: list[int]
    logprobs: list[float | None]
    text: str
    stop_reason: str | None


@dataclass(frozen=True)
class _GenerationCapture:
    """One generation, held in plain Python values (and an optional detached embedding) until the producer."""

    model: str
    version: str
    time: float
    request_id: str | None
    prompt_ids: Sequence[int]
    output_ids: Sequence[int]
    logprob_sum: float
    logprob_count: int
    time_to_first_token_s: float | None
    time_per_output_token_s: float | None
    timing: Timing
    stop_reason: str | None
    decode: Callable[[Sequence[int]], str]
    attributes: dict[str, str]
    context: DeviceContext
    embedding: torch.Tensor | None = None  # (D,)
    payload: PayloadPolicy | None = None  # set only when this request was sampled

    def __len__(self) -> int:
        return 1

    def events(self) -> list[InferenceEvent]:
        gpu_s, gpu = self.context.resolve(self.timing)
        text = self.decode(self.output_ids)
        mean = self.logprob_sum / self.logprob_count if self.logprob_count else None
        embedding = None
        if self.embedding is not None:
            embedding = self.embedding.float().cpu().tolist()
            self.context.metrics.embeddings.inc()
        payload = None
        if self.payload is not None:
            payload = self.payload.build(prompt=self.decode(self.prompt_ids), completion=text)
        return [InferenceEvent(
            request_id=self.request_id or uuid.uuid4().hex, time=self.time, model=self.model, version=self.version,
            task="generation", embedding=embedding,
            generation=Generation(prompt_tokens=len(self.prompt_ids), output_tokens=len(self.output_ids),
                                  output_chars=len(text),
                                  mean_logprob=mean if mean is not None and math.isfinite(mean) else None,
                                  stop_reason=self.stop_reason, refusal=is_refusal(text)),
            latency=Latency(total_s=self.timing.total_s, gpu_s=gpu_s,
                            time_to_first_token_s=self.time_to_first_token_s,
                            time_per_output_token_s=self.time_per_output_token_s),
            device=self.timing.device, gpu=gpu, payload=payload, attributes=self.attributes)]


class GeneratorCollector:
    """Wrap a generate loop: ``collector(prompt_ids)`` or ``for token_id, logprob in collector.stream(prompt_ids)``.

    Parameters
    ----------
    generate : GenerateLoop
        The model's token-by-token loop.
    decode : callable
        Token ids -> text (the tokenizer's decode); called on the producer thread too, so it must be thread-safe.
    producer : EventProducer
        Where captures go.
    name, version : str
        The model version events are keyed by.
    device : str or torch.device
        Where the loop runs; on ``cuda`` the whole loop is also timed with CUDA events.
    eos_token_ids : iterable of int
        End-of-sequence tokens (stop reason ``"stop"``).
    max_new_tokens : int, optional
        The loop's length limit (stop reason ``"length"``).
    embed : callable, optional
        Prompt token ids -> the prompt's mean-pooled hidden state, a (D,) or (1, D) tensor, supplied by the
        model. Called on the serving thread after the last token (so it never delays the first), only for an
        ``embedding_sample_rate`` fraction of requests chosen by a generator seeded with ``seed``.
    payload : PayloadPolicy, optional
        Raw prompt/completion capture; None (or a zero rate) captures none.
    gpu_sampler, gpu_timeout_s, metrics, attributes, clock, wall
        As for :class:`~collectors.torch_hooks.ClassifierCollector`.

    Examples
    --------
    >>> from collectors.producer import EventProducer
    >>> from monitor.transport import MemoryBus
    >>> def loop(prompt_ids):
    ...     yield from [(7, -0.5), (8, -1.5), (0, -0.1)]
    >>> producer = EventProducer(MemoryBus().producer(), "events")
    >>> collector = GeneratorCollector(loop, lambda ids: " ".join(map(str, ids)), producer, "lm", "1",
    ...                                eos_token_ids={0})
    >>> out = collector([1, 2, 3])
    >>> out.token_ids, out.text, out.stop_reason
    ([7, 8, 0], '7 8 0', 'stop')
    >>> producer.close()
    """

    def __init__(self, generate: GenerateLoop, decode: Callable[[Sequence[int]], str], producer: EventProducer,
                 name: str, version: str, *, device: str | torch.device = "cpu", eos_token_ids: Iterable[int] = (),
                 max_new_tokens: int | None = None, embed: Callable[[Sequence[int]], torch.Tensor] | None = None,
                 embedding_sample_rate: float = 1.0, seed: int = 0, payload: PayloadPolicy | None = None,
                 gpu_sampler: GpuSampler | None = None, gpu_timeout_s: float = 1.0,
                 metrics: HookMetrics | None = None, attributes: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.perf_counter, wall: Callable[[], float] = time.time) -> None:
        if gpu_timeout_s < 0:
            raise ValueError(f"gpu_timeout_s must be >= 0, got {gpu_timeout_s}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.generate = generate
        self.decode = decode
        self.producer = producer
        self.name = name
        self.version = version
        self.device = str(device)
        self.eos_token_ids = frozenset(eos_token_ids)
        self.max_new_tokens = max_new_tokens
        self.embed = embed
        self.embedding_sample_rate = embedding_sample_rate
        self.payload = payload
        self.attributes = dict(attributes or {})
        self.metrics = metrics if metrics is not None else hook_metrics(None)
        self.metrics.capture_errors.labels(model=name)
        self.capture_errors = 0
        self._clock = clock
        self._wall = wall
        self._timer = DeviceTimer(clock)
        self._context = DeviceContext(self.metrics, gpu_timeout_s, clock, gpu_sampler)
        self._embedding_sampler = BernoulliSampler(embedding_sample_rate, seed)

    def __call__(self, prompt_ids: Sequence[int], request_id: str | None = None) -> Generated:
        """Run the loop to its end; return its tokens, their log-probabilities, the decoded text and stop reason."""
        token_ids: list[int] = []
        logprobs: list[float | None] = []
        reason: list[str | None] = []
        for token, logprob in self._stream(prompt_ids, request_id, reason):
            token_ids.append(token)
            logprobs.append(logprob)
        return Generated(token_ids, logprobs, self.decode(token_ids), reason[0] if reason else None)

    def stream(self, prompt_ids: Sequence[int], request_id: str | None = None) -> Iterator[Step]:
        """Yield the loop's steps unchanged as they come; the event is captured when the stream ends or closes."""
        return self._stream(prompt_ids, request_id, [])

    def _stream(self, prompt_ids: Sequence[int], request_id: str | None,
                reason_out: list[str | None]) -> Iterator[Step]:
        prompt = list(prompt_ids)
        started = self._timer.begin(self.device)
        steps = iter(self.generate(prompt))
        output: list[int] = []
        logprob_sum, logprob_count = 0.0, 0
        first_at: float | None = None
        capturing, failed, outcome = True, False, "cancelled"  # "cancelled" unless the loop runs to its end
        try:
            while True:
                try:
                    step = next(steps)
                except StopIteration as stop:
                    outcome = stop.value[:64] if isinstance(stop.value, str) else ""
                    break
                except BaseException:
                    failed = True  # the model's own failure: it reaches the caller, and no event is made
                    raise
                if capturing:
                    try:
                        if first_at is None:
                            first_at = self._clock()
                        token, logprob = step
                        output.append(int(token))
                        if logprob is not None:
                            logprob_sum += float(logprob)
                            logprob_count += 1
                    except Exception:
                        capturing = False
                        self._failed()
                yield step
        finally:
            close = getattr(steps, "close", None)
            if outcome == "cancelled" and not failed and close is not None:
                close()  # let the model's loop release what it holds
            timing = self._timer.end(started)
            if outcome == "cancelled" and not failed:
                stop_reason: str | None = "cancelled"
            elif outcome:
                stop_reason = outcome
            elif output and output[-1] in self.eos_token_ids:
                stop_reason = "stop"
            elif self.max_new_tokens is not None and len(output) >= self.max_new_tokens:
                stop_reason = "length"
            else:
                stop_reason = None
            reason_out.append(stop_reason)
            if capturing and not failed:
                self._capture(prompt, output, logprob_sum, logprob_count, started.at, first_at, timing,
                              stop_reason, request_id)

    def _capture(self, prompt: list[int], output: list[int], logprob_sum: float, logprob_count: int,
                 started_at: float, first_at: float | None, timing: Timing, stop_reason: str | None,
                 request_id: str | None) -> None:
        try:
            embedding = None
            if self.embed is not None and self._embedding_sampler.sample():
                embedding = self.embed(prompt).detach().flatten()  # (D,)
                if embedding.shape[0] > MAX_EMBEDDING:
                    raise ValueError(f"the prompt embedding has {embedding.shape[0]} values; an event holds at "
                                     f"most {MAX_EMBEDDING}")
            sampled = self.payload if self.payload is not None and self.payload.enabled and self.payload.sample() \
                else None
            ended_at = started_at + timing.total_s
            n = len(output)
            self.producer.submit(_GenerationCapture(
                model=self.name, version=self.version, time=self._wall(), request_id=request_id, prompt_ids=prompt,
                output_ids=output, logprob_sum=logprob_sum, logprob_count=logprob_count,
                time_to_first_token_s=None if first_at is None else first_at - started_at,
                time_per_output_token_s=(ended_at - first_at) / (n - 1) if first_at is not None and n > 1 else None,
                timing=timing, stop_reason=stop_reason, decode=self.decode, attributes=self.attributes,
                context=self._context, embedding=embedding, payload=sampled))
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self.capture_errors += 1
        self.metrics.capture_errors.labels(model=self.name).inc()
        log.exception("capture failed for %s/%s; the generated tokens were returned unchanged", self.name,
                      self.version)


__all__ = ["GenerateLoop", "Generated", "GeneratorCollector", "Step"]
