"""Turn one proxied exchange (request and response bodies, the proxy's timings) into inference events.

This runs on the producer's sender thread, never on the proxy's event loop: the loop only keeps the raw
bodies (within the capture cap) and a few timestamps. Two protocols are understood:

* Open Inference Protocol v2 (KServe, Triton) ``POST /v2/models/{name}[/versions/{v}]/infer``: one
  ``classification`` event per sample of the batch (the first dimension shared by the inputs' shapes, when
  they have two or more dimensions; otherwise the request is one sample). Features are ``{input}.mean``,
  ``.std``, ``.min`` and ``.max`` over each numeric input's values for that sample (``BYTES`` inputs are
  skipped). The prediction is the argmax of the first output when it has shape ``[B, C]`` with ``C >= 2`` and a
  floating datatype (the probabilities are kept when each row lies in [0, 1] and sums to 1 within 1e-3); an
  integer or ``BYTES`` output of shape ``[B]`` or ``[B, 1]`` is taken as the predicted label itself.
* OpenAI-compatible ``POST /v1/completions`` and ``/v1/chat/completions``: one ``generation`` event for
  choice 0. Token counts come from ``usage``. When a stream carries no ``usage`` (``stream_options`` not set),
  the output token count is the number of server-sent events that carried text for choice 0 (servers send
  about one token per event; this is a proxy, flagged with the attribute ``usage=estimated``) and the prompt
  token count is 0. Time to first token is from the request head reaching the proxy to the first such event
  reaching it; time per output token is ``(last - first event) / (tokens - 1)``. A non-streamed answer has
  neither (the proxy cannot see its tokens arrive). With ``text_features`` (the default) the event also carries
  what the texts look like, computed from the text alone (:func:`collectors.text_features.generation_features`):
  ``prompt.chars``, ``prompt.tokens`` (when the server reports usage), ``completion.chars`` and each text's
  character mix as features, and the prompt's hashed character n-gram embedding, which the embedding (MMD)
  detector compares with the reference prompts'. Neither is the text: raw text leaves only in sampled payloads.
"""

from __future__ import annotations

import base64
import bisect
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from collectors.refusal import is_refusal
from collectors.sidecar.metrics import SidecarMetrics
from collectors.text_features import generation_features
from monitor.config import ModelRef, SidecarConfig
from monitor.errors import InferwatchError
from monitor.events import Generation, InferenceEvent, Latency, Payload
from monitor.genai import observe_generation

log = logging.getLogger(__name__)

Route = Literal["oip", "completions", "chat_completions", "other"]
#: ``redact(text) -> (redacted text, number of redactions)``.
Redactor = Callable[[str], tuple[str, int]]

MAX_SAMPLES: Final = 1024  # a larger OIP batch becomes one event summarising all of it
MAX_INPUTS: Final = 256  # 4 features each, within the event's 1024
_FLOAT_TYPES: Final = ("FP16", "FP32", "FP64", "BF16")
_INT_TYPES: Final = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")


def route_of(method: str, target: str) -> Route:
    """Which captured route a request goes to (``other``: proxied without capture)."""
    if method != "POST":
        return "other"
    path = target.split("?", 1)[0]
    if path == "/v1/completions":
        return "completions"
    if path == "/v1/chat/completions":
        return "chat_completions"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "oip"
    return "other"


@dataclass(frozen=True, slots=True)
class Exchange:
    """What the proxy saw of one request of a captured route.

    ``pieces`` holds, for each piece of the response body as it arrived, its arrival time (monotonic seconds)
    and the offset in ``response_body`` where it ends; ``started``/``finished`` are monotonic too, ``time`` is
    the wall-clock start.
    """

    route: Route
    path: str
    request_id: str
    time: float
    request_body: bytes
    status: int
    response_body: bytes
    event_stream: bool
    pieces: Sequence[tuple[float, int]]
    started: float
    finished: float


class CaptureError(InferwatchError):
    """An exchange could not be turned into events; ``reason`` is one of the sidecar's skip reasons."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# -- wire shapes (unknown fields are ignored) ----------------------------------------------------------------
class _Tensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class _InferRequest(msgspec.Struct):
    inputs: list[_Tensor]


class _InferResponse(msgspec.Struct):
    outputs: list[_Tensor]
    model_version: str | None = None


class _Message(msgspec.Struct):
    role: str = ""
    content: str | list[Any] | None = None


class _CompletionRequest(msgspec.Struct):
    model: str = ""
    prompt: str | list[Any] | None = None
    messages: list[_Message] | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _TokenLogprob(msgspec.Struct):
    logprob: float


class _Logprobs(msgspec.Struct):
    token_logprobs: list[float | None] | None = None
    content: list[_TokenLogprob] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    text: str | None = None
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _Completion(msgspec.Struct):
    model: str = ""
    choices: list[_Choice] = []
    usage: _Usage | None = None


_infer_request = msgspec.json.Decoder(_InferRequest)
_infer_response = msgspec.json.Decoder(_InferResponse)
_completion_request = msgspec.json.Decoder(_CompletionRequest)
_completion = msgspec.json.Decoder(_Completion)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes, what: str) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise CaptureError("malformed", f"{what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise CaptureError("invalid_json", f"{what}: {exc}") from None


def _text(content: str | list[Any] | None) -> str:
    """Text of a chat message content: a string, or the ``text`` of its parts."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))


def _choice_text(choice: _Choice) -> str:
    if choice.text is not None:
        return choice.text
    message = choice.delta or choice.message
    return _text(message.content) if message is not None else ""


def _logprobs(choice: _Choice) -> list[float]:
    lp = choice.logprobs
    if lp is None:
        return []
    if lp.content is not None:
        return [t.logprob for t in lp.content]
    return [v for v in lp.token_logprobs or () if v is not None]


class Capturer:
    """Builds events from exchanges, counting every exchange that yields none by its reason.

    Parameters
    ----------
    config : the sidecar config (model mapping, payload sampling, attributes).
    metrics : the sidecar's metrics.
    redact : applied to any raw text before it goes into a sampled :class:`~monitor.events.Payload`.
    rng : decides which exchanges are payload-sampled.
    """

    def __init__(self, config: SidecarConfig, metrics: SidecarMetrics, redact: Redactor | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.redact = redact
        self._rng = rng or random.Random()
        self._configured = {(ref.model, ref.version) for ref in config.models.values()}

    def capture(self, exchange: Exchange) -> list[InferenceEvent]:
        """Events of ``exchange``, or ``[]`` with the reason counted; never raises."""
        try:
            events = self.events(exchange)
        except CaptureError as exc:
            self.skip(exchange.route, exc.reason)
            log.debug("no event for %s: %s", exchange.request_id, exc)
            return []
        except Exception:  # a capture bug must never reach the proxy: count it and go on
            log.exception("capture of %s failed", exchange.request_id)
            self.skip(exchange.route, "internal_error")
            return []
        self.metrics.captured.labels(route=exchange.route).inc(len(events))
        for event in events:
            if event.generation is not None:  # labels bounded by the configured models
                known = (event.model, event.version) in self._configured
                observe_generation(self.metrics.genai, event, *((event.model, event.version) if known
                                                                else ("other", "other")))
        return events

    def skip(self, route: Route, reason: str) -> None:
        self.metrics.capture_skipped.labels(route=route, reason=reason).inc()

    def events(self, exchange: Exchange) -> list[InferenceEvent]:
        """Events of ``exchange``; raise :class:`CaptureError` when it cannot be captured."""
        if not 200 <= exchange.status < 300:
            raise CaptureError("upstream_status", f"upstream answered {exchange.status}")
        if exchange.route == "oip":
            return self._oip(exchange)
        if exchange.route in ("completions", "chat_completions"):
            return [self._generation(exchange)]
        raise CaptureError("internal_error", f"route {exchange.route!r} is not captured")

    def _identity(self, name: str, version: str | None) -> ModelRef:
        ref = self.config.models.get(name)
        if ref is not None:
            return ref
        return ModelRef(name[:256] or "unknown", (version or self.config.default_version)[:256])

    def _payload(self, prompt: str | None, completion: str | None, raw: bytes | None = None) -> Payload | None:
        if self.config.payload_sample_rate <= 0 or self._rng.random() >= self.config.payload_sample_rate:
            return None
        cap, redactions, truncated = self.config.payload_max_chars, 0, False
        texts: list[str | None] = []
        for text in (prompt, completion):
            if text is not None and self.redact is not None:
                text, n = self.redact(text)
                redactions += n
            if text is not None and len(text) > cap:
                text, truncated = text[:cap], True
            texts.append(text)
        b64 = None
        if raw is not None:
            keep = cap * 3 // 4
            truncated = truncated or len(raw) > keep
            b64 = base64.b64encode(raw[:keep]).decode()
        return Payload(prompt=texts[0], completion=texts[1], input_b64=b64, truncated=truncated,
                       redactions=redactions)

    def _attributes(self, extra: Mapping[str, str] = {}) -> dict[str, str]:
        return {**self.config.attributes, **extra} if extra or self.config.attributes else {}

    # -- Open Inference Protocol v2 ---------------------------------------------------------------------------
    def _oip(self, ex: Exchange) -> list[InferenceEvent]:
        parts = ex.path.split("?", 1)[0].split("/")  # ['', 'v2', 'models', name, ('versions', v,) 'infer']
        url_version = parts[5] if len(parts) == 7 and parts[4] == "versions" else None
        request: _InferRequest = _decode(_infer_request, ex.request_body, "OIP request")
        response: _InferResponse = _decode(_infer_response, ex.response_body, "OIP response")
        if not request.inputs or len(request.inputs) > MAX_INPUTS:
            raise CaptureError("malformed", f"an OIP request needs 1 to {MAX_INPUTS} inputs")
        tensors = [t for t in request.inputs if t.datatype != "BYTES"]
        batch = _batch_size([t.shape for t in tensors] or [request.inputs[0].shape])
        samples = batch if 1 < batch <= MAX_SAMPLES else 1
        features: dict[str, list[float]] = {}
        for tensor in tensors:
            for stat, values in zip(_STATS, _summary(tensor, samples), strict=True):
                features[f"{tensor.name}.{stat}"] = values
        if not all(math.isfinite(v) for values in features.values() for v in values):
            raise CaptureError("non_finite", "an OIP input holds NaN or infinity")
        predictions, probabilities = _predictions(response.outputs[0], samples) if response.outputs else (
            None, None)
        ref = self._identity(parts[3], url_version or response.model_version)
        latency = Latency(total_s=ex.finished - ex.started)
        payload = self._payload(None, None, ex.request_body)
        events = []
        for i in range(samples):
            events.append(InferenceEvent(
                request_id=ex.request_id if samples == 1 else f"{ex.request_id}:{i}",
                time=ex.time, model=ref.model, version=ref.version, task="classification",
                features={k: v[i] for k, v in features.items()},
                prediction=predictions[i] if predictions is not None else None,
                probabilities=probabilities[i] if probabilities is not None else None,
                latency=latency, batch_size=batch, payload=payload if i == 0 else None,
                attributes=self._attributes()))
        return events

    # -- OpenAI-compatible completions ------------------------------------------------------------------------
    def _generation(self, ex: Exchange) -> InferenceEvent:
        request: _CompletionRequest = _decode(_completion_request, ex.request_body, "completion request")
        if ex.route == "chat_completions":
            if not request.messages:
                raise CaptureError("malformed", "a chat completion request needs messages")
            prompt = "\n".join(_text(m.content) for m in request.messages)
        elif isinstance(request.prompt, str):
            prompt = request.prompt
        elif isinstance(request.prompt, list):
            prompt = "\n".join(p for p in request.prompt if isinstance(p, str))
        else:
            raise CaptureError("malformed", "a completion request needs a prompt")
        ttft = tpot = None
        estimated = False
        if ex.event_stream:
            text, finish, usage, logprobs, times, model = self._stream(ex)
            if not times and finish is None:
                raise CaptureError("incomplete", "the stream carried no text event and no finish reason")
            # A stream that finished without text is an empty completion: exactly what the empty-output rate
            # must count, so it is an event (with no time to first token), not a skipped capture.
            estimated = usage is None
            prompt_tokens = usage.prompt_tokens if usage is not None else 0
            tokens = usage.completion_tokens if usage is not None else len(times)
            ttft = max(0.0, times[0] - ex.started) if times else None
            if tokens > 1 and times:
                tpot = max(0.0, times[-1] - times[0]) / (tokens - 1)
        else:
            response: _Completion = _decode(_completion, ex.response_body, "completion response")
            choice = next((c for c in response.choices if c.index == 0), None)
            if choice is None:
                raise CaptureError("malformed", "the completion response has no choice 0")
            text, finish, usage, logprobs, model = (_choice_text(choice), choice.finish_reason, response.usage,
                                                    _logprobs(choice), response.model)
            if usage is None:
                raise CaptureError("malformed", "the completion response has no usage")
            prompt_tokens, tokens = usage.prompt_tokens, usage.completion_tokens
        mean_logprob = math.fsum(logprobs) / len(logprobs) if logprobs else None
        if mean_logprob is not None and not math.isfinite(mean_logprob):
            mean_logprob = None
        ref = self._identity(request.model or model, None)
        features, embedding = (generation_features(prompt, text, prompt_tokens if prompt_tokens > 0 else None)
                               if self.config.text_features else ({}, None))
        return InferenceEvent(
            request_id=ex.request_id, time=ex.time, model=ref.model, version=ref.version, task="generation",
            features=features, embedding=embedding,
            generation=Generation(prompt_tokens=max(0, prompt_tokens), output_tokens=max(0, tokens),
                                  output_chars=len(text), mean_logprob=mean_logprob,
                                  stop_reason=finish[:64] if finish else None, refusal=is_refusal(text)),
            latency=Latency(total_s=ex.finished - ex.started, time_to_first_token_s=ttft,
                            time_per_output_token_s=tpot),
            payload=self._payload(prompt, text),
            attributes=self._attributes({"usage": "estimated"} if estimated else {}))

    def _stream(self, ex: Exchange) -> tuple[str, str | None, _Usage | None, list[float], list[float], str]:
        """Text, finish reason, usage, log-probabilities, text-event arrival times and model of an SSE body."""
        body, ends = ex.response_body, [end for _, end in ex.pieces]
        text: list[str] = []
        finish: str | None = None
        usage: _Usage | None = None
        logprobs: list[float] = []
        times: list[float] = []
        model = ""
        start = 0
        for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
            # offsets in the normalised body can only be earlier than in the raw one: a conservative arrival time
            start += len(block) + 2
            data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
            if not data or data == b"[DONE]":
                continue
            chunk: _Completion = _decode(_completion, data, "stream event")
            model = model or chunk.model
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                piece = _choice_text(choice)
                if piece:
                    text.append(piece)
                    at = min(bisect.bisect_left(ends, min(start - 2, len(body))), len(ends) - 1)
                    times.append(ex.pieces[at][0])
                finish = choice.finish_reason or finish
                logprobs += _logprobs(choice)
        return "".join(text), finish, usage, logprobs, times, model


_STATS: Final = ("mean", "std", "min", "max")
_SMALL: Final = 2048  # tensors up to this many values are summarised in plain Python (numpy's per-call cost dominates)


_Stats = tuple[list[float], list[float], list[float], list[float]]


def oip_features(inputs: Mapping[str, npt.ArrayLike]) -> dict[str, np.ndarray]:
    """The input features the sidecar captures for an OIP v2 request carrying ``inputs``, per sample.

    ``inputs`` maps each input's name to its tensor, in request order. The result maps ``{input}.mean``,
    ``.std``, ``.min`` and ``.max`` (in that order, input by input) to one value per sample: the samples are the
    first dimension shared by the inputs of two or more dimensions, else the tensors are one sample. String and
    object tensors (``BYTES``) are skipped, as the sidecar skips them. The arithmetic is the sidecar's own (the
    same functions, chosen by the same size rule), so the values equal what it captures for a request carrying
    these tensors. Unlike the sidecar, which summarises a request of more than ``MAX_SAMPLES`` samples in one
    event, any number of samples is kept: apply it to a training tensor of shape (N, ...) to get the N rows of a
    reference with the feature names the sidecar produces (computed at once, the mean and standard deviation may
    differ in the last bit from those of requests carrying one sample each, which sum in another order).

    >>> f = oip_features({"pixels": np.array([[0.0, 1.0], [2.0, 6.0]])})
    >>> {name: v.tolist() for name, v in f.items()}
    {'pixels.mean': [0.5, 4.0], 'pixels.std': [0.5, 2.0], 'pixels.min': [0.0, 2.0], 'pixels.max': [1.0, 6.0]}

    Raises :class:`CaptureError` for an empty input, a non-finite value, or more than ``MAX_INPUTS`` inputs.
    """
    arrays = {name: np.asarray(tensor) for name, tensor in inputs.items()}
    if not arrays or len(arrays) > MAX_INPUTS:
        raise CaptureError("malformed", f"an OIP request needs 1 to {MAX_INPUTS} inputs, got {len(arrays)}")
    numeric = {name: a for name, a in arrays.items() if a.dtype.kind in "biuf"}
    samples = _batch_size([a.shape for a in numeric.values()] or [next(iter(arrays.values())).shape])
    features: dict[str, np.ndarray] = {}
    for name, a in numeric.items():
        x = a.astype(np.float64)
        stats = _array_summary(name, x.reshape(samples, -1)) if x.size > _SMALL else \
            _list_summary(name, x.ravel().tolist(), samples)
        for stat, values in zip(_STATS, stats, strict=True):
            features[f"{name}.{stat}"] = np.asarray(values, dtype=np.float64)  # (S,)
    if not all(np.isfinite(v).all() for v in features.values()):
        raise CaptureError("non_finite", "an OIP input holds NaN or infinity")
    return features


def _summary(tensor: _Tensor, samples: int) -> _Stats:
    """Per-sample mean, (population) standard deviation, min and max of a numeric tensor's values."""
    size = _size(tensor)
    if size > _SMALL:
        return _array_summary(tensor.name, _array(tensor).reshape(samples, -1))
    return _list_summary(tensor.name, _numbers(tensor, size), samples)


def _array_summary(name: str, x: np.ndarray) -> _Stats:
    """:func:`_summary` of a large tensor, ``x`` (S, values per sample), in numpy."""
    if x.shape[1] == 0:
        raise CaptureError("malformed", f"input {name!r} is empty")
    with np.errstate(invalid="ignore", over="ignore"):
        return x.mean(axis=1).tolist(), x.std(axis=1).tolist(), x.min(axis=1).tolist(), x.max(axis=1).tolist()


def _list_summary(name: str, flat: list[float], samples: int) -> _Stats:
    """:func:`_summary` of a small tensor's ``flat`` values in plain Python (exactly rounded sums)."""
    size = len(flat)
    k = size // samples
    if k == 0:
        raise CaptureError("malformed", f"input {name!r} is empty")
    means, stds, mins, maxs = [], [], [], []
    try:
        for i in range(samples):
            row = flat[i * k:(i + 1) * k]
            mean = math.fsum(row) / k
            means.append(mean)
            stds.append(math.sqrt(math.fsum([(v - mean) ** 2 for v in row]) / k))
            mins.append(min(row))
            maxs.append(max(row))
    except (ValueError, OverflowError):  # fsum of +inf and -inf
        raise CaptureError("non_finite", f"input {name!r} holds NaN or infinity") from None
    return means, stds, mins, maxs


def _size(tensor: _Tensor) -> int:
    if tensor.datatype not in _FLOAT_TYPES + _INT_TYPES:
        raise CaptureError("malformed", f"input {tensor.name!r} has unknown datatype {tensor.datatype!r}")
    if any(d < 0 for d in tensor.shape):
        raise CaptureError("malformed", f"input {tensor.name!r} has a negative dimension in {tensor.shape}")
    return math.prod(tensor.shape)


def _numbers(tensor: _Tensor, size: int) -> list[float]:
    """A small tensor's values as a flat list of floats; its size must match its shape."""
    flat = _flatten(tensor.data) if tensor.data and isinstance(tensor.data[0], list) else tensor.data
    if len(flat) != size:
        raise CaptureError("malformed", f"input {tensor.name!r} holds {len(flat)} values, not {tensor.shape}")
    try:
        return [float(v) for v in flat]
    except (ValueError, TypeError) as exc:
        raise CaptureError("malformed", f"input {tensor.name!r}: {exc}") from None


def _array(tensor: _Tensor) -> np.ndarray:
    """A numeric tensor's values as float64, flat; its size must match its shape."""
    if tensor.datatype not in _FLOAT_TYPES + _INT_TYPES:
        raise CaptureError("malformed", f"input {tensor.name!r} has unknown datatype {tensor.datatype!r}")
    try:
        values = np.asarray(tensor.data, dtype=np.float64).ravel()
    except (ValueError, TypeError) as exc:
        raise CaptureError("malformed", f"input {tensor.name!r}: {exc}") from None
    if any(d < 0 for d in tensor.shape) or values.size != math.prod(tensor.shape):
        raise CaptureError("malformed", f"input {tensor.name!r} holds {values.size} values, not {tensor.shape}")
    return values


def _batch_size(shapes: Sequence[Sequence[int]]) -> int:
    """The first dimension shared by all inputs of two or more dimensions (1 if there is none)."""
    firsts = {s[0] for s in shapes if len(s) >= 2}
    return firsts.pop() if len(firsts) == 1 and min(firsts) > 0 else 1


def _predictions(output: _Tensor, samples: int) -> tuple[list[int | str] | None, list[list[float]] | None]:
    shape = output.shape
    rows = shape[0] if shape else 0
    if output.datatype == "BYTES" and shape in ([samples], [samples, 1]):
        labels: list[int | str] = [v for v in _flatten(output.data) if isinstance(v, str)]
        return (labels if len(labels) == samples else None), None
    if output.datatype in _INT_TYPES and shape in ([samples], [samples, 1]):
        return [int(v) for v in _numbers(output, _size(output))], None
    if output.datatype in _FLOAT_TYPES and len(shape) == 2 and rows == samples and shape[1] >= 2:
        flat = _numbers(output, _size(output))
        if not all(map(math.isfinite, flat)):
            return None, None
        c = shape[1]
        scores = [flat[i * c:(i + 1) * c] for i in range(samples)]  # (S, C)
        predictions: list[int | str] = [max(range(c), key=row.__getitem__) for row in scores]
        normalised = all(0 <= v <= 1 for v in flat) and all(abs(math.fsum(row) - 1) <= 1e-3 for row in scores)
        return predictions, scores if normalised else None
    return None, None


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v) if isinstance(v, list) else (v,))
    return out


@dataclass(frozen=True, slots=True)
class ExchangeBatch:
    """Exchanges as one :class:`~collectors.producer.Capture`, parsed into events on the producer's thread.

    The proxy hands exchanges over in batches so that the producer thread wakes (and takes the GIL from the
    event loop) about once per linger period rather than once per request.
    """

    capturer: Capturer
    exchanges: tuple[Exchange, ...]

    def __len__(self) -> int:
        return len(self.exchanges)

    def events(self) -> list[InferenceEvent]:
        return [e for exchange in self.exchanges for e in self.capturer.capture(exchange)]


@dataclass(frozen=True, slots=True)
class ExchangeCapture:
    """One exchange as a :class:`~collectors.producer.Capture`: parsed into events on the producer's thread."""

    capturer: Capturer
    exchange: Exchange

    def __len__(self) -> int:
        return 1

    def events(self) -> list[InferenceEvent]:
        return self.capturer.capture(self.exchange)


__all__ = ["CaptureError", "Capturer", "Exchange", "ExchangeBatch", "ExchangeCapture", "Redactor", "Route",
           "oip_features", "route_of"]
