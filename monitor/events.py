"""Typed, versioned inference and feedback events, and the Kafka record shapes that carry them.

A Kafka record's value is either one event or a batch envelope of many (``inferwatch.batch/v1``), so the
producer's per-record cost is amortised. Every object carries a ``schema`` field naming its type and
version; decoding validates types, required fields, finiteness and sizes, and raises
:class:`~monitor.errors.EventError` whose ``reason`` is one of :data:`REJECT_REASONS`.

>>> ev = InferenceEvent(request_id="r1", time=1.0, model="m", version="1", task="classification",
...                     features={"mean": 0.5}, prediction=3, latency=Latency(total_s=0.002))
>>> [e.request_id for e in decode_record(encode_event(ev))]
['r1']
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Final, Literal

import msgspec

from monitor.errors import EventError

INFERENCE_SCHEMA: Final = "inferwatch.inference/v1"
FEEDBACK_SCHEMA: Final = "inferwatch.feedback/v1"
BATCH_SCHEMA: Final = "inferwatch.batch/v1"
SCHEMAS: Final = (INFERENCE_SCHEMA, FEEDBACK_SCHEMA, BATCH_SCHEMA)

#: Every reason a record can be rejected for; bounded, so it is safe as a metric label.
REJECT_REASONS: Final = (
    "malformed_json",
    "unknown_schema",
    "missing_field",
    "invalid_value",
    "non_finite",
    "too_large",
    "unknown_model",
    "feature_mismatch",
)

MAX_RECORD_BYTES: Final = 4 * 1024 * 1024
MAX_BATCH_EVENTS: Final = 10_000
MAX_FEATURES: Final = 1024
MAX_EMBEDDING: Final = 8192
MAX_CLASSES: Final = 100_000
MAX_ATTRIBUTES: Final = 16
MAX_PAYLOAD_CHARS: Final = 1_000_000

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
ShortText = Annotated[str, msgspec.Meta(max_length=1024)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Task = Literal["classification", "generation"]


class Latency(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Latency of one request in seconds. ``gpu_s`` is device time from CUDA events, when measured."""

    total_s: NonNegative
    gpu_s: NonNegative | None = None
    queue_s: NonNegative | None = None
    time_to_first_token_s: NonNegative | None = None
    time_per_output_token_s: NonNegative | None = None


class Generation(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What a text generator produced for one request."""

    prompt_tokens: Count
    output_tokens: Count
    output_chars: Count
    mean_logprob: float | None = None
    stop_reason: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    refusal: bool | None = None


class Payload(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Raw request/response content, captured only when sampled, after redaction, within a size cap."""

    prompt: Annotated[str, msgspec.Meta(max_length=MAX_PAYLOAD_CHARS)] | None = None
    completion: Annotated[str, msgspec.Meta(max_length=MAX_PAYLOAD_CHARS)] | None = None
    input_b64: Annotated[str, msgspec.Meta(max_length=MAX_PAYLOAD_CHARS)] | None = None
    truncated: bool = False
    redactions: Count = 0


class GpuStats(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One NVML sample of the GPU that served the request, in base units."""

    index: Count
    utilization_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)]
    memory_used_bytes: Count
    memory_total_bytes: Count
    power_watts: NonNegative | None = None
    temperature_celsius: float | None = None


class InferenceEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, tag_field="schema",
                     tag=INFERENCE_SCHEMA):
    """One inference (one sample of a batch) as captured beside the model."""

    request_id: Name
    time: Annotated[float, msgspec.Meta(ge=0)]
    model: Name
    version: Name
    task: Task
    features: Annotated[dict[Name, float], msgspec.Meta(max_length=MAX_FEATURES)] = {}
    categories: Annotated[dict[Name, ShortText], msgspec.Meta(max_length=MAX_FEATURES)] = {}
    embedding: Annotated[list[float], msgspec.Meta(max_length=MAX_EMBEDDING)] | None = None
    prediction: int | str | None = None
    probabilities: Annotated[list[float], msgspec.Meta(max_length=MAX_CLASSES)] | None = None
    generation: Generation | None = None
    latency: Latency | None = None
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 1
    device: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    gpu: GpuStats | None = None
    payload: Payload | None = None
    attributes: Annotated[dict[Name, ShortText], msgspec.Meta(max_length=MAX_ATTRIBUTES)] = {}

    @property
    def key(self) -> str:
        return f"{self.model}/{self.version}"


class FeedbackEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, tag_field="schema",
                    tag=FEEDBACK_SCHEMA):
    """Ground truth for an earlier inference: exactly one of ``label``, ``accepted`` or ``score``."""

    request_id: Name
    time: Annotated[float, msgspec.Meta(ge=0)]
    model: Name
    version: Name
    label: int | Name | None = None
    accepted: bool | None = None
    score: float | None = None

    @property
    def key(self) -> str:
        return f"{self.model}/{self.version}"


Event = InferenceEvent | FeedbackEvent


class BatchEnvelope(msgspec.Struct, forbid_unknown_fields=True, tag_field="schema", tag=BATCH_SCHEMA):
    """Many events of one model version in one Kafka record (the published shape)."""

    events: Annotated[list[InferenceEvent | FeedbackEvent], msgspec.Meta(max_length=MAX_BATCH_EVENTS)]


class _LazyBatch(msgspec.Struct, forbid_unknown_fields=True, tag_field="schema", tag=BATCH_SCHEMA):
    """A batch whose events stay raw JSON, so that each is decoded (and rejected) on its own."""

    events: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_BATCH_EVENTS)]


_record_decoder = msgspec.json.Decoder(InferenceEvent | FeedbackEvent | _LazyBatch)
_event_decoder = msgspec.json.Decoder(InferenceEvent | FeedbackEvent)
_encoder = msgspec.json.Encoder()

_NON_FINITE_TOKEN = re.compile(rb"[:,\[]\s*-?(NaN|Infinity)\b")
_PATH = re.compile(r" - at `(?P<path>[^`]*)`$")


def encode_event(event: Event) -> bytes:
    """JSON bytes of one event (a complete record value)."""
    return _encoder.encode(event)


def encode_batch(events: Sequence[Event]) -> bytes:
    """JSON bytes of a batch envelope holding ``events``."""
    return join_batch([_encoder.encode(e) for e in events])


def join_batch(encoded: Sequence[bytes]) -> bytes:
    """A batch envelope around events that are already JSON-encoded (spliced in, not re-encoded)."""
    if len(encoded) > MAX_BATCH_EVENTS:
        raise ValueError(f"a batch holds at most {MAX_BATCH_EVENTS} events, got {len(encoded)}")
    return b'{"schema":"%s","events":[%s]}' % (BATCH_SCHEMA.encode(), b",".join(encoded))


class Decoded(msgspec.Struct, frozen=True):
    """Outcome of decoding one record: the valid events, and one :class:`EventError` per rejected part."""

    events: list[Event]
    errors: list[EventError]
    batch: bool = False


def decode_record(value: bytes) -> list[Event]:
    """Decode a record value holding one event or a batch; raise on the first invalid part."""
    decoded = decode_record_lenient(value)
    if decoded.errors:
        raise decoded.errors[0]
    return decoded.events


def decode_record_lenient(value: bytes) -> Decoded:
    """Decode a record value, keeping every valid event of a batch and an error for each invalid one.

    A record that is not valid JSON, too large, or not a known schema yields no events and one error.
    """
    if len(value) > MAX_RECORD_BYTES:
        return Decoded([], [EventError("too_large", f"record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")])
    try:
        obj = _record_decoder.decode(value)
    except msgspec.ValidationError as exc:
        return Decoded([], [_classify(exc)])
    except msgspec.DecodeError as exc:
        # NaN and Infinity are not JSON, but Python's json module writes them: name the real problem.
        if _NON_FINITE_TOKEN.search(value):
            return Decoded([], [EventError("non_finite", f"record holds NaN or Infinity ({exc})")])
        return Decoded([], [EventError("malformed_json", str(exc))])
    if not isinstance(obj, _LazyBatch):
        invalid = _check_finite(obj)
        return Decoded([obj], []) if invalid is None else Decoded([], [invalid])
    events: list[Event] = []
    errors: list[EventError] = []
    for i, raw in enumerate(obj.events):
        try:
            event = _event_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            error: EventError | None = _classify(exc, prefix=f"$.events[{i}]")
        else:
            error = _check_finite(event)
        if error is None:
            events.append(event)
        else:
            error.part = bytes(raw)
            errors.append(error)
    return Decoded(events, errors, batch=True)


def _classify(exc: msgspec.ValidationError, prefix: str = "$") -> EventError:
    """Map msgspec's validation message to a bounded reason, keeping the message (with its JSON path)."""
    message = str(exc)
    match = _PATH.search(message)
    path = match.group("path") if match else "$"
    where = prefix + path[1:]
    text = _PATH.sub("", message)
    if path == "$.schema" or text == "Object missing required field `schema`":
        reason = "unknown_schema"
    elif text.startswith("Object missing required field"):
        reason = "missing_field"
    elif text.startswith("Number out of range"):
        reason = "non_finite"
    elif "length" in text and ("<=" in text or "at most" in text):
        reason = "too_large"
    else:
        reason = "invalid_value"
    return EventError(reason, f"{text} at {where}")


def _check_finite(event: Event) -> EventError | None:
    """NaN and infinities are valid JSON numbers for msgspec but never valid model statistics."""
    if isinstance(event, FeedbackEvent):
        given = sum(x is not None for x in (event.label, event.accepted, event.score))
        if given != 1:
            return EventError("invalid_value", f"feedback {event.request_id!r} must carry exactly one of "
                                               f"label, accepted or score, got {given}")
        if event.score is not None and not math.isfinite(event.score):
            return EventError("non_finite", f"feedback {event.request_id!r} has a non-finite score")
        return None
    for name, v in event.features.items():
        if not math.isfinite(v):
            return EventError("non_finite", f"feature {name!r} of {event.request_id!r} is {v}")
    for field in ("embedding", "probabilities"):
        values = getattr(event, field)
        if values is not None and not all(map(math.isfinite, values)):
            return EventError("non_finite", f"{field} of {event.request_id!r} holds a non-finite value")
    if event.generation is not None and event.generation.mean_logprob is not None \
            and not math.isfinite(event.generation.mean_logprob):
        return EventError("non_finite", f"mean_logprob of {event.request_id!r} is not finite")
    if event.latency is not None and not all(
        v is None or math.isfinite(v) for v in msgspec.structs.astuple(event.latency)
    ):
        return EventError("non_finite", f"latency of {event.request_id!r} holds a non-finite value")
    return None


def json_schema() -> dict[str, object]:
    """JSON Schema (2020-12) of a record value: one inference event, one feedback event, or a batch."""
    schema, components = msgspec.json.schema_components([InferenceEvent | FeedbackEvent | BatchEnvelope])
    (record,) = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://inferwatch.dev/schemas/record.schema.json",
        "title": "inferwatch Kafka record value",
        "description": "One inference event, one feedback event, or a batch envelope of either. "
        "Encoded as UTF-8 JSON; NaN and infinities are rejected by the daemon.",
        **record,
        "$defs": components,
    }
