"""Typed, versioned inference and feedback events, and the Kafka record shapes that carry them.

A Kafka record's value is either one event or a batch envelope of many (``inferwatch.batch/v1``), so the
producer's per-record cost is amortised. Every object carries a ``schema`` field naming its type and
version; decoding validates types, required fields, finiteness, sizes and ranges, and raises
:class:`~monitor.errors.EventError` whose ``reason`` is one of :data:`REJECT_REASONS`.

What the statistics can use is checked here, at the door, so that no window ever holds a value that breaks a
detector:

* every count lies in [0, 2**53] (``MAX_COUNT``, exact as a float64), every other number within
  ``±MAX_MAGNITUDE`` (1e30): squares and sums of squares of such values over any
  window stay far below the float64 limit (1e30² × 1e6 rows = 1e66 ≪ 1.8e308), while a single ±1e308 overflows
  the first square in a Wasserstein distance, a variance or an MMD kernel;
* ``probabilities`` form a distribution: each value in [0, 1] and their sum within
  ``PROBABILITY_SUM_TOLERANCE`` (1e-3) of 1 (a float32 softmax over 100,000 classes is well inside it);
* a feature value may be ``null``: a missing value, which the statistics skip per feature (not an error).

Anything else (invalid UTF-8, nesting deeper than the decoder allows) is rejected too, never raised.

>>> ev = InferenceEvent(request_id="r1", time=1.0, model="m", version="1", task="classification",
...                     features={"mean": 0.5}, prediction=3, latency=Latency(total_s=0.002))
>>> [e.request_id for e in decode_record(encode_event(ev))]
['r1']
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

from monitor.errors import EventError

INFERENCE_SCHEMA: Final = "inferwatch.inference/v1"
FEEDBACK_SCHEMA: Final = "inferwatch.feedback/v1"
BATCH_SCHEMA: Final = "inferwatch.batch/v1"
COLUMNS_SCHEMA: Final = "inferwatch.columns/v1"
SCHEMAS: Final = (INFERENCE_SCHEMA, FEEDBACK_SCHEMA, BATCH_SCHEMA, COLUMNS_SCHEMA)

#: Every reason a record can be rejected for; bounded, so it is safe as a metric label.
REJECT_REASONS: Final = (
    "malformed_json",
    "unknown_schema",
    "missing_field",
    "invalid_value",
    "non_finite",
    "too_large",
    "unknown_model",
    "no_baseline",  # a configured model, but a version with no profile
    "feature_mismatch",
    "out_of_range",
    "future_time",  # by event time: later than this machine's clock allows (window.max_future_s)
    "processing_error",  # the pipeline failed on a record that decoded (a bug, logged with its traceback)
)

MAX_RECORD_BYTES: Final = 4 * 1024 * 1024
MAX_BATCH_EVENTS: Final = 10_000
MAX_FEATURES: Final = 1024
MAX_EMBEDDING: Final = 8192
MAX_CLASSES: Final = 100_000
MAX_ATTRIBUTES: Final = 16
MAX_PAYLOAD_CHARS: Final = 1_000_000
#: Largest magnitude of any number in an event (see the module docstring for why 1e30).
MAX_MAGNITUDE: Final = 1e30
#: Largest count (tokens, characters, bytes, batch size): 2**53, the largest integer a float64 holds exactly.
MAX_COUNT: Final = 2**53
#: ``|sum(probabilities) - 1|`` must not exceed this.
PROBABILITY_SUM_TOLERANCE: Final = 1e-3

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
ShortText = Annotated[str, msgspec.Meta(max_length=1024)]
Number = Annotated[float, msgspec.Meta(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=MAX_MAGNITUDE)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
Feature = Annotated[Number | None, msgspec.Meta(
    description="A numeric input summary; null is a missing value (skipped by the statistics, never an error).")]
Probabilities = Annotated[list[Probability], msgspec.Meta(
    max_length=MAX_CLASSES,
    description=f"Class probabilities: each in [0, 1], summing to 1 within {PROBABILITY_SUM_TOLERANCE:g}.")]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
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
    mean_logprob: Number | None = None
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
    temperature_celsius: Number | None = None


class InferenceEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, tag_field="schema",
                     tag=INFERENCE_SCHEMA):
    """One inference (one sample of a batch) as captured beside the model."""

    request_id: Name
    time: NonNegative
    model: Name
    version: Name
    task: Task
    features: Annotated[dict[Name, Feature], msgspec.Meta(max_length=MAX_FEATURES)] = {}
    categories: Annotated[dict[Name, ShortText], msgspec.Meta(max_length=MAX_FEATURES)] = {}
    embedding: Annotated[list[Number], msgspec.Meta(max_length=MAX_EMBEDDING)] | None = None
    prediction: int | str | None = None
    probabilities: Probabilities | None = None
    generation: Generation | None = None
    latency: Latency | None = None
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)] = 1
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
    time: NonNegative
    model: Name
    version: Name
    label: int | Name | None = None
    accepted: bool | None = None
    score: Number | None = None

    @property
    def key(self) -> str:
        return f"{self.model}/{self.version}"


Event = InferenceEvent | FeedbackEvent


class BatchEnvelope(msgspec.Struct, forbid_unknown_fields=True, tag_field="schema", tag=BATCH_SCHEMA):
    """Many events of one model version in one Kafka record (the published shape)."""

    events: Annotated[list[InferenceEvent | FeedbackEvent], msgspec.Meta(max_length=MAX_BATCH_EVENTS)]


class ColumnBatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, tag_field="schema",
                  tag=COLUMNS_SCHEMA):
    """Many inference events of one model version in one Kafka record, column by column (``inferwatch.columns/v1``).

    The detector decodes it into arrays without an object per event (the batch envelope's fast path): row ``i`` of
    every column is the event ``i``. It carries what a classifier's capture has (features, prediction,
    probabilities, total and GPU latency, batch size) and, shared by every row, the device and attributes;
    events with anything else (categorical features, embeddings, generations, GPU samples, payloads, other
    latency parts) travel in a batch envelope. A column left out, or ``null`` in a row, is absent for that event.

    >>> events = [InferenceEvent(f"r{i}", 1.0 + i, "m", "1", "classification", features={"a": float(i), "b": None},
    ...                          prediction=i % 2, latency=Latency(total_s=0.01)) for i in range(3)]
    >>> batch = ColumnBatch.of(events)
    >>> batch.features, batch.prediction, batch.events() == events
    ([[0.0, None], [1.0, None], [2.0, None]], [0, 1, 0], True)
    """

    model: Name
    version: Name
    task: Task
    request_id: Annotated[list[Name], msgspec.Meta(max_length=MAX_BATCH_EVENTS)]
    time: Annotated[list[NonNegative], msgspec.Meta(max_length=MAX_BATCH_EVENTS)]
    feature_names: Annotated[list[Name], msgspec.Meta(max_length=MAX_FEATURES)] = []
    #: one row per event, in ``feature_names`` order; ``null`` is a missing value
    features: Annotated[list[Annotated[list[Feature], msgspec.Meta(max_length=MAX_FEATURES)]],
                        msgspec.Meta(max_length=MAX_BATCH_EVENTS)] = []
    prediction: Annotated[list[int | str | None], msgspec.Meta(max_length=MAX_BATCH_EVENTS)] | None = None
    probabilities: Annotated[list[Probabilities | None], msgspec.Meta(max_length=MAX_BATCH_EVENTS)] | None = None
    latency_total_s: Annotated[list[NonNegative | None], msgspec.Meta(max_length=MAX_BATCH_EVENTS)] | None = None
    latency_gpu_s: Annotated[list[NonNegative | None], msgspec.Meta(max_length=MAX_BATCH_EVENTS)] | None = None
    batch_size: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]],
                          msgspec.Meta(max_length=MAX_BATCH_EVENTS)] | None = None
    device: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    attributes: Annotated[dict[Name, ShortText], msgspec.Meta(max_length=MAX_ATTRIBUTES)] = {}

    @property
    def key(self) -> str:
        return f"{self.model}/{self.version}"

    def __len__(self) -> int:
        return len(self.request_id)

    @classmethod
    def of(cls, events: Sequence[InferenceEvent]) -> ColumnBatch | None:
        """The events as columns, or None when they do not fit (see the class docstring): another model version,
        another device or attributes, a field the columns do not carry, features named differently."""
        if not events or len(events) > MAX_BATCH_EVENTS:
            return None
        first = events[0]
        if not all(isinstance(e, InferenceEvent) for e in events):
            return None
        names = list(first.features)
        for e in events:
            if (e.model, e.version, e.task, e.device, e.attributes) != \
                    (first.model, first.version, first.task, first.device, first.attributes) or \
                    e.categories or e.embedding is not None or e.generation is not None or e.gpu is not None or \
                    e.payload is not None or list(e.features) != names or \
                    (e.latency is not None and (e.latency.queue_s is not None or
                                                e.latency.time_to_first_token_s is not None or
                                                e.latency.time_per_output_token_s is not None)):
                return None
        latencies = [e.latency for e in events]
        return cls(
            model=first.model, version=first.version, task=first.task,
            request_id=[e.request_id for e in events], time=[e.time for e in events], feature_names=names,
            features=[list(e.features.values()) for e in events] if names else [],
            prediction=_column([e.prediction for e in events]),
            probabilities=_column([e.probabilities for e in events]),
            latency_total_s=_column([None if lat is None else lat.total_s for lat in latencies]),
            latency_gpu_s=_column([None if lat is None else lat.gpu_s for lat in latencies]),
            batch_size=None if all(e.batch_size == 1 for e in events) else [e.batch_size for e in events],
            device=first.device, attributes=first.attributes)

    def events(self) -> list[InferenceEvent]:
        """The rows as events (checked by :func:`decode_record_lenient` first: every column is as long as
        ``request_id`` and every row of features as long as ``feature_names``)."""
        n = len(self.request_id)
        empty: list[None] = [None] * n
        names = self.feature_names
        prediction = self.prediction or empty
        probabilities = self.probabilities or empty
        total = self.latency_total_s or empty
        gpu = self.latency_gpu_s or empty
        batch_size = self.batch_size or [1] * n
        return [InferenceEvent(
            request_id=self.request_id[i], time=self.time[i], model=self.model, version=self.version, task=self.task,
            features=dict(zip(names, self.features[i], strict=True)) if names else {}, prediction=prediction[i],
            probabilities=probabilities[i],
            latency=None if total[i] is None else Latency(total_s=total[i], gpu_s=gpu[i]),  # type: ignore[arg-type]
            batch_size=batch_size[i], device=self.device, attributes=dict(self.attributes))
            for i in range(n)]

    def shape_error(self) -> EventError | None:
        """What the types cannot say about the columns' shape: every column as long as ``request_id``, every row
        of features as long as ``feature_names``, no feature named twice, a GPU time only beside a total."""
        n = len(self.request_id)
        for name in ("time", "prediction", "probabilities", "latency_total_s", "latency_gpu_s", "batch_size"):
            column = getattr(self, name)
            if column is not None and len(column) != n:
                return EventError("invalid_value", f"column {name} has {len(column)} values for {n} events")
        if len(set(self.feature_names)) != len(self.feature_names):
            return EventError("invalid_value", "feature_names names a feature twice")
        width = len(self.feature_names)
        if width and len(self.features) != n:
            return EventError("invalid_value", f"features has {len(self.features)} rows for {n} events")
        if not width and self.features:
            return EventError("invalid_value", "features without feature_names")
        if any(len(row) != width for row in self.features):
            return EventError("invalid_value", f"a row of features does not have the {width} values feature_names "
                                               f"names")
        if self.latency_gpu_s is not None and \
                any(g is not None and t is None for g, t in zip(self.latency_gpu_s, self.latency_total_s or [None] * n,
                                                                strict=True)):
            return EventError("invalid_value", "latency_gpu_s given for an event without latency_total_s")
        return None


def _column(values: list[Any]) -> list[Any] | None:
    """A column, or None (left out) when no event carries it."""
    return None if all(v is None for v in values) else values


class _LazyBatch(msgspec.Struct, forbid_unknown_fields=True, tag_field="schema", tag=BATCH_SCHEMA):
    """A batch whose events stay raw JSON, so that each is decoded (and rejected) on its own."""

    events: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_BATCH_EVENTS)]


_record_decoder = msgspec.json.Decoder(InferenceEvent | FeedbackEvent | _LazyBatch | ColumnBatch)
_batch_decoder = msgspec.json.Decoder(BatchEnvelope)
_event_decoder = msgspec.json.Decoder(InferenceEvent | FeedbackEvent)
_encoder = msgspec.json.Encoder()

_NON_FINITE_TOKEN = re.compile(rb"[:,\[]\s*-?(NaN|Infinity)\b")
_PATH = re.compile(r" - at `(?P<path>[^`]*)`$")
_BOUND = re.compile(r"Expected `(float|int)` [<>]=? ")


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
    #: a column batch whose every row is valid, when the caller asked for columns (then ``events`` is empty)
    columns: ColumnBatch | None = None


def decode_record(value: bytes) -> list[Event]:
    """Decode a record value holding one event or a batch; raise on the first invalid part."""
    decoded = decode_record_lenient(value)
    if decoded.errors:
        raise decoded.errors[0]
    return decoded.events


def decode_record_lenient(value: bytes, columns: bool = False) -> Decoded:
    """Decode a record value, keeping every valid event of a batch and an error for each invalid one.

    A record that is not valid JSON (or not UTF-8), too large, nested too deep, or not a known schema yields no
    events and one error; so does a column batch whose columns do not line up. With ``columns`` a column batch
    whose rows are all valid comes back as it is (:attr:`Decoded.columns`), else as events. Nothing a client sends
    makes this raise.
    """
    if len(value) > MAX_RECORD_BYTES:
        return Decoded([], [EventError("too_large", f"record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")])
    try:
        obj = _record_decoder.decode(value)
    except msgspec.ValidationError as exc:
        by_row = _columns_by_row(value) if _ROW_VALUE.search(str(exc)) else None
        return by_row or Decoded([], [_classify(exc)])
    except msgspec.DecodeError as exc:
        # NaN and Infinity are not JSON, but Python's json module writes them: name the real problem.
        if _NON_FINITE_TOKEN.search(value):
            return Decoded([], [EventError("non_finite", f"record holds NaN or Infinity ({exc})")])
        return Decoded([], [EventError("malformed_json", str(exc))])
    except (UnicodeDecodeError, RecursionError) as exc:
        return Decoded([], [_undecodable(exc)])
    if isinstance(obj, ColumnBatch):
        return _decode_columns(obj, columns)
    if not isinstance(obj, _LazyBatch):
        invalid = _check_values(obj)
        return Decoded([obj], []) if invalid is None else Decoded([], [invalid])
    return _decode_batch(value, obj)


def _decode_batch(value: bytes, lazy: _LazyBatch) -> Decoded:
    """The events of a batch record: all of them in one typed decode when every one is valid (the common case:
    no Python code runs per event but the value checks), else each part on its own, so that every invalid one
    gets its own error and the valid ones go on."""
    try:
        events: list[Event] = _batch_decoder.decode(value).events
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass
    else:
        if not any(map(_check_values, events)):
            return Decoded(events, [], batch=True)
    events = []
    errors: list[EventError] = []
    for i, raw in enumerate(lazy.events):
        try:
            event = _event_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            error: EventError | None = _classify(exc, prefix=f"$.events[{i}]")
        except msgspec.DecodeError as exc:  # msgspec 0.23 reports invalid UTF-8 inside a Raw part so
            error = EventError("malformed_json", f"{exc} at $.events[{i}]")
        except (UnicodeDecodeError, RecursionError) as exc:
            error = _undecodable(exc, f" at $.events[{i}]")
        else:
            error = _check_values(event)
        if error is None:
            events.append(event)
        else:
            error.part = bytes(raw)
            errors.append(error)
    return Decoded(events, errors, batch=True)


def _decode_columns(batch: ColumnBatch, keep: bool) -> Decoded:
    """A column batch: rejected whole when its columns do not line up; else kept as columns (``keep``) when every
    row's probabilities form a distribution, or else as its events, each invalid one with its own error."""
    shape = batch.shape_error()
    if shape is not None:
        return Decoded([], [shape])
    probabilities = batch.probabilities or ()
    if keep and not any(p is not None and not abs(math.fsum(p) - 1.0) <= PROBABILITY_SUM_TOLERANCE
                        for p in probabilities):
        return Decoded([], [], batch=True, columns=batch)
    events: list[Event] = []
    errors: list[EventError] = []
    for event in batch.events():
        error = _check_values(event)
        if error is None:
            events.append(event)
        else:
            error.part = encode_event(event)
            errors.append(error)
    return Decoded(events, errors, batch=True)


def _columns_by_row(value: bytes) -> Decoded | None:
    """A column batch with an invalid value in a row, row by row: each invalid row rejected with its own reason
    (and its row as the part), the valid ones kept, as a batch envelope's parts are. None when the record is no
    column batch, or its columns do not line up (then it is rejected whole)."""
    try:
        obj = msgspec.json.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("schema") != COLUMNS_SCHEMA:
        return None
    rows = _rows_of(obj)
    if rows is None:
        return None
    events: list[Event] = []
    errors: list[EventError] = []
    for i, row in enumerate(rows):
        error: EventError | None
        if not _finite(row):
            error = EventError("non_finite", f"a number beyond the float range at $.rows[{i}]")
        else:
            try:
                event = msgspec.convert(row, InferenceEvent)
            except msgspec.ValidationError as exc:
                error = _classify(exc, prefix=f"$.rows[{i}]")
            else:
                error = _check_values(event)
                if error is None:
                    events.append(event)
                    continue
        error.part = _encoder.encode({k: v for k, v in row.items() if _finite(v)})
        errors.append(error)
    return Decoded(events, errors, batch=True)


#: a validation error at one row's value of a column batch (the rest of it may be valid)
_ROW_VALUE = re.compile(r" - at `\$\.(request_id|time|features|prediction|probabilities|latency_total_s|latency_gpu_s|"
                        r"batch_size)\[\d+\]")
_ROW_FIELDS = ("request_id", "time", "prediction", "probabilities", "batch_size")
_SHARED_FIELDS = ("model", "version", "task", "device", "attributes")


def _rows_of(obj: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The rows of a decoded column batch as inference event objects, or None when its columns do not line up."""
    n = len(obj["request_id"]) if isinstance(obj.get("request_id"), list) else -1
    columns = {name: obj[name] for name in (*_ROW_FIELDS, "features", "latency_total_s", "latency_gpu_s")
               if obj.get(name) is not None}
    names = obj.get("feature_names", [])
    if n < 0 or len(obj) > 20 or any(not isinstance(c, list) or len(c) != n for c in columns.values()) or \
            not isinstance(names, list) or \
            any(not isinstance(row, list) or len(row) != len(names) for row in columns.get("features", ())):
        return None
    shared = {name: obj[name] for name in _SHARED_FIELDS if name in obj}
    rows = []
    for i in range(n):
        row = {"schema": INFERENCE_SCHEMA, **shared, **{name: columns[name][i] for name in _ROW_FIELDS
                                                         if name in columns and columns[name][i] is not None}}
        if "features" in columns:
            row["features"] = dict(zip(names, columns["features"][i], strict=True))
        total = columns.get("latency_total_s", [None] * n)[i]
        gpu = columns.get("latency_gpu_s", [None] * n)[i]
        if total is not None or gpu is not None:
            row["latency"] = {"total_s": total, **({} if gpu is None else {"gpu_s": gpu})}
        rows.append(row)
    return rows


def _finite(value: object) -> bool:
    """Whether every number in ``value`` (nested lists and objects) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(map(_finite, value))
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    return True


def _undecodable(exc: UnicodeDecodeError | RecursionError, where: str = "") -> EventError:
    """What msgspec raises outside its own error types: a string that is not UTF-8 (JSON text must be), or
    objects nested deeper than the interpreter's recursion limit (an event is at most 4 levels deep)."""
    if isinstance(exc, UnicodeDecodeError):
        return EventError("malformed_json", f"invalid UTF-8 in a string ({exc.reason}){where}")
    return EventError("too_large", f"objects or arrays nested too deep to decode{where}")


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
    elif _BOUND.match(text):
        reason = "out_of_range"
    else:
        reason = "invalid_value"
    return EventError(reason, f"{text} at {where}")


def _check_values(event: Event) -> EventError | None:
    """What the types cannot say: exactly one feedback value, and probabilities that form a distribution.

    Finiteness needs no check here: every float field is bounded (``Number``, ``NonNegative``, ``Probability``),
    so a JSON number that overflows to infinity fails decoding (``Number out of range``: ``non_finite``), and
    JSON has no NaN (a record holding one does not decode: ``non_finite`` too)."""
    if isinstance(event, FeedbackEvent):
        given = (event.label is not None) + (event.accepted is not None) + (event.score is not None)
        if given != 1:
            return EventError("invalid_value", f"feedback {event.request_id!r} must carry exactly one of "
                                               f"label, accepted or score, got {given}")
        return None
    if event.probabilities is not None:
        # math.fsum: exact, so the tolerance is the only slack (each value is already in [0, 1]).
        total = math.fsum(event.probabilities)
        if not abs(total - 1.0) <= PROBABILITY_SUM_TOLERANCE:
            return EventError("out_of_range", f"probabilities of {event.request_id!r} sum to {total:.6g}, not 1 "
                                              f"(within {PROBABILITY_SUM_TOLERANCE:g})")
    return None


def json_schema() -> dict[str, object]:
    """JSON Schema (2020-12) of a record value: one inference event, one feedback event, a batch or a column batch."""
    schema, components = msgspec.json.schema_components([InferenceEvent | FeedbackEvent | BatchEnvelope | ColumnBatch])
    (record,) = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://inferwatch.dev/schemas/record.schema.json",
        "title": "inferwatch Kafka record value",
        "description": "One inference event, one feedback event, a batch envelope of either, or a column batch "
        "of inference events. "
        "Encoded as UTF-8 JSON; NaN and infinities are rejected by the daemon, and so are numbers beyond "
        f"±{MAX_MAGNITUDE:g} and probabilities that do not sum to 1 within {PROBABILITY_SUM_TOLERANCE:g}. A feature "
        "value may be null: a missing value.",
        **record,
        "$defs": components,
    }
