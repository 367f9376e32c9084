"""Column batches (``inferwatch.columns/v1``): round trips, what does not fit, and hostile records; no broker."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import msgspec
import numpy as np
import pytest

from monitor.events import (
    COLUMNS_SCHEMA,
    MAX_BATCH_EVENTS,
    REJECT_REASONS,
    ColumnBatch,
    GpuStats,
    InferenceEvent,
    Latency,
    Payload,
    decode_record,
    decode_record_lenient,
    encode_batch,
    json_schema,
)

SCHEMA_FILE = Path(__file__).parents[1] / "monitor" / "schemas" / "record.schema.json"
FEATURES = ("mean", "std", "entropy")


def seeded(n: int, seed: int = 0, **overrides: object) -> list[InferenceEvent]:
    """``n`` classifier events of one model version with every column the batch carries, and its gaps: missing
    feature values, events without latency or without a GPU time, string and absent predictions."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        logits = rng.normal(size=4)
        probabilities = np.exp(logits) / np.exp(logits).sum()
        values: list[float | None] = [float(v) for v in rng.normal(size=len(FEATURES))]
        if i % 7 == 3:
            values[1] = None
        latency = None if i % 11 == 5 else Latency(total_s=float(rng.uniform(0.001, 0.01)),
                                                   gpu_s=None if i % 3 == 0 else float(rng.uniform(0, 0.001)))
        prediction: int | str | None = int(probabilities.argmax())
        if i % 13 == 4:
            prediction = "cat"
        elif i % 17 == 6:
            prediction = None
        fields: dict[str, object] = dict(
            request_id=f"req-{seed}-{i}", time=1_700_000_000.0 + i * 0.25, model="digits-cnn", version="3",
            task="classification", features=dict(zip(FEATURES, values, strict=True)), prediction=prediction,
            probabilities=None if i % 19 == 9 else [float(p) for p in probabilities], latency=latency,
            batch_size=1 + i % 8, device="cuda:0", attributes={"pod": "p-1", "variant": "b"})
        fields.update(overrides)
        out.append(InferenceEvent(**fields))  # type: ignore[arg-type]
    return out


def columns_json(**overrides: object) -> bytes:
    """A valid two-row column batch as JSON, with ``overrides`` applied."""
    obj: dict[str, object] = {
        "schema": COLUMNS_SCHEMA, "model": "m", "version": "1", "task": "classification",
        "request_id": ["a", "b"], "time": [1.0, 2.0], "feature_names": ["x", "y"],
        "features": [[1.0, 2.0], [3.0, None]], "prediction": [0, 1],
        "probabilities": [[0.25, 0.75], [0.5, 0.5]], "latency_total_s": [0.01, 0.02],
        "latency_gpu_s": [0.001, None], "batch_size": [2, 2]}
    obj.update(overrides)
    return json.dumps(obj).encode()


# -- round trip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_columns_decode_to_exactly_the_events_a_batch_envelope_carries(seed: int) -> None:
    sent = seeded(300, seed)
    batch = ColumnBatch.of(sent)
    assert batch is not None and len(batch) == len(sent) and batch.key == "digits-cnn/3"
    value = msgspec.json.encode(batch)
    as_columns = decode_record_lenient(value, columns=False)
    as_envelope = decode_record_lenient(encode_batch(sent))
    assert as_columns.errors == [] and as_envelope.errors == []
    assert as_columns.events == as_envelope.events == sent
    assert as_columns.batch and as_columns.columns is None
    assert decode_record(value) == sent
    # Asked for columns, a valid batch comes back as it is, and expands to the same events.
    kept = decode_record_lenient(value, columns=True)
    assert kept.events == [] and kept.errors == [] and kept.columns == batch
    assert kept.columns.events() == sent


def test_columns_left_out_when_no_event_carries_them() -> None:
    sent = seeded(5, features={}, prediction=None, probabilities=None, latency=None, batch_size=1, device=None,
                  attributes={})
    batch = ColumnBatch.of(sent)
    assert batch is not None
    assert json.loads(msgspec.json.encode(batch)).keys() == {"schema", "model", "version", "task", "request_id",
                                                             "time"}
    assert decode_record(msgspec.json.encode(batch)) == sent


def test_columns_are_smaller_than_the_envelope() -> None:
    sent = seeded(500)
    batch = ColumnBatch.of(sent)
    assert batch is not None
    assert len(msgspec.json.encode(batch)) < 0.75 * len(encode_batch(sent))


# -- what does not fit: ``of`` says None


def _other(events: list[InferenceEvent], i: int, **changes: object) -> list[InferenceEvent]:
    out = list(events)
    out[i] = msgspec.structs.replace(out[i], **changes)
    return out


@pytest.mark.parametrize("changes", [
    {"version": "4"},
    {"model": "other"},
    {"embedding": [0.1, 0.2]},
    {"payload": Payload(prompt="hi")},
    {"gpu": GpuStats(index=0, utilization_ratio=0.5, memory_used_bytes=1, memory_total_bytes=2)},
    {"categories": {"colour": "red"}},
    {"features": {"mean": 0.1, "std": 0.2}},  # a feature fewer
    {"features": {"std": 0.2, "mean": 0.1, "entropy": 0.3}},  # other order
    {"features": {"mean": 0.1, "std": 0.2, "other": 0.3}},  # another name
    {"attributes": {"pod": "p-2", "variant": "b"}},
    {"attributes": {}},
    {"device": "cuda:1"},
    {"latency": Latency(total_s=0.01, queue_s=0.001)},
    {"latency": Latency(total_s=0.01, time_to_first_token_s=0.001)},
])
def test_events_that_do_not_fit_columns_give_none(changes: dict[str, object]) -> None:
    sent = seeded(20)
    assert ColumnBatch.of(sent) is not None
    for i in (0, 7, 19):
        assert ColumnBatch.of(_other(sent, i, **changes)) is None, (i, changes)


def test_too_many_or_no_events_give_none() -> None:
    (one,) = seeded(1)
    many = [msgspec.structs.replace(one, request_id=f"r{i}") for i in range(MAX_BATCH_EVENTS + 1)]
    assert ColumnBatch.of(many) is None
    assert ColumnBatch.of(many[:MAX_BATCH_EVENTS]) is not None
    assert ColumnBatch.of([]) is None


# -- hostile records: each rejected with its reason, nothing raised


@pytest.mark.parametrize(("value", "reason"), [
    (columns_json(time=[1.0]), "invalid_value"),  # a column shorter than request_id
    (columns_json(prediction=[0, 1, 2]), "invalid_value"),  # longer
    (columns_json(probabilities=[[1.0]]), "invalid_value"),
    (columns_json(latency_total_s=[0.01]), "invalid_value"),
    (columns_json(latency_gpu_s=[0.001, 0.001, 0.001]), "invalid_value"),
    (columns_json(batch_size=[1]), "invalid_value"),
    (columns_json(features=[[1.0, 2.0]]), "invalid_value"),  # fewer rows than events
    (columns_json(features=[[1.0, 2.0], [3.0]]), "invalid_value"),  # a row of the wrong width
    (columns_json(features=[[1.0, 2.0], [3.0, 4.0, 5.0]]), "invalid_value"),
    (columns_json(feature_names=["x", "x"]), "invalid_value"),
    (columns_json(feature_names=[]), "invalid_value"),  # features without names
    (columns_json(latency_total_s=[0.01, None], latency_gpu_s=[None, 0.001]), "invalid_value"),
    (columns_json(bogus=[1, 2]), "invalid_value"),
    (columns_json(schema="inferwatch.columns/v9"), "unknown_schema"),
    (columns_json().replace(b"[[1.0, 2.0]", b"[[NaN, 2.0]"), "non_finite"),
    (columns_json().replace(b"[0.01, 0.02]", b"[0.01, -Infinity]"), "non_finite"),
    (columns_json(features=[[1.0, 2.0], [3.0, 1e400]]), "non_finite"),
    (columns_json(time=[1.0, 1e400]), "non_finite"),
    (columns_json(feature_names=[f"f{i}" for i in range(1025)], features=[[1.0] * 1025] * 2), "too_large"),
    (columns_json(attributes={f"k{i}": "v" for i in range(17)}), "too_large"),
    (columns_json().replace(b'"features": [[1.0, 2.0]', b'"features": [' + b"[" * 50_000 + b"]" * 50_000), None),
])
def test_hostile_column_batches_are_rejected_whole_with_a_bounded_reason(value: bytes, reason: str | None) -> None:
    for columns in (False, True):
        decoded = decode_record_lenient(value, columns=columns)
        assert decoded.events == [] and decoded.columns is None
        assert len(decoded.errors) == 1, decoded.errors
        assert decoded.errors[0].reason in REJECT_REASONS
        if reason is not None:
            assert decoded.errors[0].reason == reason, decoded.errors


@pytest.mark.parametrize(("value", "reason"), [
    (columns_json(features=[[1.0, "high"], [3.0, 4.0]]), "invalid_value"),
    (columns_json(request_id=["a", ""]), "invalid_value"),
    (columns_json(features=[[1.0, 2.0], [3.0, 1e31]]), "out_of_range"),
    (columns_json(features=[[-1e31, 2.0], [3.0, 4.0]]), "out_of_range"),
    (columns_json(latency_total_s=[0.01, 1e300]), "out_of_range"),
    (columns_json(time=[-1.0, 2.0]), "out_of_range"),
    (columns_json(batch_size=[0, 1]), "out_of_range"),
    (columns_json(probabilities=[[1.5, -0.5], [0.5, 0.5]]), "out_of_range"),
    (columns_json(features=[[1.0, 2.0], [3.0, {"a": 1}]]), "invalid_value"),
])
def test_a_bad_value_in_a_row_costs_only_that_row(value: bytes, reason: str) -> None:
    """As in a batch envelope: the row is rejected with its reason and its own JSON as the part; the other row
    goes on (as events: the columns are not all valid)."""
    for columns in (False, True):
        decoded = decode_record_lenient(value, columns=columns)
        assert decoded.columns is None and len(decoded.events) == 1
        (error,) = decoded.errors
        assert error.reason == reason and "$.rows[" in error.detail, error
        assert json.loads(error.part or b"")["request_id"] != decoded.events[0].request_id


def test_a_batch_of_more_events_than_the_limit_is_too_large() -> None:
    n = MAX_BATCH_EVENTS + 1
    value = json.dumps({"schema": COLUMNS_SCHEMA, "model": "m", "version": "1", "task": "classification",
                        "request_id": [f"r{i}" for i in range(n)], "time": [1.0] * n}).encode()
    for columns in (False, True):
        decoded = decode_record_lenient(value, columns=columns)
        assert decoded.events == [] and decoded.columns is None
        assert [e.reason for e in decoded.errors] == ["too_large"]


def test_random_bytes_and_every_truncation_are_rejected_never_raised() -> None:
    rng = random.Random(7)
    valid = columns_json()
    values = [rng.randbytes(rng.randrange(0, 200)) for _ in range(500)]
    values += [bytes(rng.choice(b'{}[]",:0123456789.eE-+ nultrefa\\') for _ in range(rng.randrange(1, 80)))
               for _ in range(500)]
    values += [valid[:cut] for cut in range(len(valid))]
    values += [bytearray_flip(valid, rng) for _ in range(500)]
    for value in values:
        for columns in (False, True):
            decoded = decode_record_lenient(value, columns=columns)  # must not raise
            assert all(e.reason in REJECT_REASONS for e in decoded.errors)
    for cut in range(len(valid)):
        decoded = decode_record_lenient(valid[:cut], columns=True)
        assert decoded.events == [] and decoded.columns is None
        assert [e.reason for e in decoded.errors] == ["malformed_json"]


def bytearray_flip(value: bytes, rng: random.Random) -> bytes:
    """``value`` with one byte replaced by a random one."""
    out = bytearray(value)
    out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


# -- a row that is not a distribution costs only itself


def test_a_row_whose_probabilities_are_no_distribution_costs_only_itself() -> None:
    sent = seeded(6, probabilities=[0.25, 0.75])
    bad = msgspec.structs.replace(sent[2], probabilities=[0.25, 0.25])  # sums to 0.5
    rows = [*sent[:2], bad, *sent[3:]]
    batch = ColumnBatch.of(rows)
    assert batch is not None
    value = msgspec.json.encode(batch)
    for columns in (True, False):
        decoded = decode_record_lenient(value, columns=columns)
        assert decoded.columns is None  # not every row is valid: the rows come back as events
        assert decoded.events == [e for i, e in enumerate(rows) if i != 2]
        (error,) = decoded.errors
        assert error.reason == "out_of_range" and "probabilities" in error.detail and "0.5" in error.detail
        assert error.part is not None
        assert msgspec.json.decode(error.part, type=InferenceEvent) == bad  # the row, as one event


# -- the published JSON Schema


def test_published_schema_validates_column_batches() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema == json_schema(), "run `inferwatch schema > monitor/schemas/record.schema.json`"
    validator = jsonschema.Draft202012Validator(schema)
    good: list[bytes] = [msgspec.json.encode(ColumnBatch.of(seeded(50))), columns_json(),
                         msgspec.json.encode(ColumnBatch.of(seeded(3, features={}, latency=None)))]
    for value in good:
        validator.validate(json.loads(value))
        assert not decode_record_lenient(value, columns=True).errors
    for bad in (columns_json(schema="inferwatch.columns/v9"), columns_json(request_id=["a", ""]),
                columns_json(bogus=1), columns_json(features=[[1.0, "x"], [1.0, 2.0]]),
                columns_json(batch_size=[0, 1]), columns_json(task="classify")):
        assert not validator.is_valid(json.loads(bad))
        assert decode_record_lenient(bad, columns=True).errors

