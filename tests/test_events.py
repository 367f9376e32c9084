"""Event schema: round trips, the published JSON Schema, and every kind of bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest

from monitor.events import (
    MAX_MAGNITUDE,
    MAX_RECORD_BYTES,
    PROBABILITY_SUM_TOLERANCE,
    REJECT_REASONS,
    FeedbackEvent,
    Generation,
    InferenceEvent,
    Latency,
    decode_record,
    decode_record_lenient,
    encode_batch,
    encode_event,
    json_schema,
)

SCHEMA_FILE = Path(__file__).parents[1] / "monitor" / "schemas" / "record.schema.json"


def inference(i: int = 0, **overrides: object) -> InferenceEvent:
    fields: dict[str, object] = dict(
        request_id=f"req-{i}", time=1_700_000_000.0 + i, model="digits-cnn", version="1", task="classification",
        features={"mean": 0.25, "std": 0.1}, prediction=3, probabilities=[0.1, 0.9],
        latency=Latency(total_s=0.004, gpu_s=0.003), batch_size=8, device="cpu", attributes={"pod": "a"})
    fields.update(overrides)
    return InferenceEvent(**fields)  # type: ignore[arg-type]


def base_json(**overrides: object) -> bytes:
    obj: dict[str, object] = {"schema": "inferwatch.inference/v1", "request_id": "r", "time": 1.0, "model": "m",
                              "version": "1", "task": "classification", "features": {"x": 1.0}}
    obj.update(overrides)
    return json.dumps(obj).encode()


def test_round_trip_of_every_event_kind() -> None:
    gen = inference(task="generation", features={}, prediction=None, probabilities=None,
                    generation=Generation(prompt_tokens=12, output_tokens=40, output_chars=150, mean_logprob=-1.2,
                                          stop_reason="stop"),
                    latency=Latency(total_s=0.5, time_to_first_token_s=0.05, time_per_output_token_s=0.01))
    fb = FeedbackEvent(request_id="req-0", time=5.0, model="digits-cnn", version="1", label=3)
    for event in (inference(), gen, fb):
        assert decode_record(encode_event(event)) == [event]
    events = [inference(i) for i in range(5)] + [fb]
    assert decode_record(encode_batch(events)) == events


def test_key_is_model_slash_version() -> None:
    assert inference().key == "digits-cnn/1"


def test_published_schema_file_is_current() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), "run `inferwatch schema > " \
        "monitor/schemas/record.schema.json` after changing events.py"


def test_schema_accepts_what_we_encode_and_rejects_what_we_reject() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    good = [encode_event(inference()), encode_batch([inference(1), inference(2)]),
            encode_event(FeedbackEvent(request_id="a", time=1, model="m", version="1", accepted=True))]
    for value in good:
        validator.validate(json.loads(value))
    for bad in (base_json(schema="inferwatch.inference/v9"), base_json(task="classify"), base_json(request_id=""),
                base_json(bogus=1)):
        assert not validator.is_valid(json.loads(bad))
        assert decode_record_lenient(bad).errors


@pytest.mark.parametrize(("value", "reason"), [
    (b"{not json", "malformed_json"),
    (b"", "malformed_json"),
    (b"\xff\xfe", "malformed_json"),
    (b"[1, 2]", "invalid_value"),
    (base_json(schema="inferwatch.inference/v9"), "unknown_schema"),
    (b'{"request_id": "r"}', "unknown_schema"),
    (base_json(time=None), "invalid_value"),
    (b'{"schema": "inferwatch.inference/v1", "request_id": "r"}', "missing_field"),
    (base_json(features={"x": "high"}), "invalid_value"),
    (base_json(features={"x": 1e999}), "non_finite"),
    (base_json().replace(b"1.0}", b"NaN}"), "non_finite"),
    (base_json().replace(b"1.0}", b"-Infinity}"), "non_finite"),
    (base_json(probabilities=[0.5, 1e400]), "non_finite"),
    (base_json(features={f"f{i}": 1.0 for i in range(2000)}), "too_large"),
    (base_json(attributes={"note": "x" * 5000}), "too_large"),
    (base_json(time=-1), "out_of_range"),
    (base_json(batch_size=0), "out_of_range"),
    (b'{"schema": "inferwatch.feedback/v1", "request_id": "r", "time": 1, "model": "m", "version": "1"}',
     "invalid_value"),
    (b" " * (MAX_RECORD_BYTES + 1), "too_large"),
])
def test_bad_records_are_rejected_with_a_bounded_reason(value: bytes, reason: str) -> None:
    decoded = decode_record_lenient(value)
    assert decoded.events == []
    assert [e.reason for e in decoded.errors] == [reason]
    assert reason in REJECT_REASONS


def test_a_bad_event_in_a_batch_costs_only_itself() -> None:
    good = [encode_event(inference(i)) for i in range(3)]
    value = b'{"schema":"inferwatch.batch/v1","events":[%s,{"schema":"inferwatch.inference/v1"},7,%s]}' % (
        b",".join(good[:2]), good[2])
    decoded = decode_record_lenient(value)
    assert [e.request_id for e in decoded.events] == ["req-0", "req-1", "req-2"]
    assert [(e.reason, e.detail.rsplit(" at ", 1)[1]) for e in decoded.errors] == [
        ("missing_field", "$.events[2]"), ("invalid_value", "$.events[3]")]


def test_error_messages_name_the_field() -> None:
    (error,) = decode_record_lenient(base_json(task="classify")).errors
    assert "$.task" in str(error) and "classify" in str(error)


# -- semantic validation at the door: probabilities that are no distribution, magnitudes the statistics cannot use


@pytest.mark.parametrize("probabilities", [
    [2.0, -1.0], [0.2, 0.2], [0.9, 0.9, 0.9], [0.0, 0.0, 0.0], [-0.1, 1.1], [0.5, 0.5 + 2 * PROBABILITY_SUM_TOLERANCE],
    [],
])
def test_probabilities_that_are_not_a_distribution_are_rejected_out_of_range(probabilities: list[float]) -> None:
    decoded = decode_record_lenient(base_json(probabilities=probabilities))
    assert decoded.events == []
    assert [e.reason for e in decoded.errors] == ["out_of_range"], decoded.errors
    assert "probabilities" in str(decoded.errors[0])


@pytest.mark.parametrize("probabilities", [
    [1.0], [0.25, 0.75], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.9 - PROBABILITY_SUM_TOLERANCE / 2], [0.0, 1.0],
])
def test_distributions_within_the_stated_tolerance_are_accepted(probabilities: list[float]) -> None:
    (event,) = decode_record(base_json(probabilities=probabilities))
    assert isinstance(event, InferenceEvent) and event.probabilities == probabilities


@pytest.mark.parametrize("event", [
    {"features": {"x": 1e308}}, {"features": {"x": -1e308}}, {"features": {"x": 2 * MAX_MAGNITUDE}},
    {"embedding": [0.0, -1e300]}, {"latency": {"total_s": 1e300}}, {"time": 1e308}, {"batch_size": 10**30},
    {"task": "generation", "features": {}, "generation": {"prompt_tokens": 10**400, "output_tokens": 1,
                                                          "output_chars": 1}},
    {"task": "generation", "features": {}, "generation": {"prompt_tokens": 1, "output_tokens": 1,
                                                          "output_chars": 1, "mean_logprob": -1e300}},
])
def test_magnitudes_the_statistics_cannot_square_are_rejected_out_of_range(event: dict[str, object]) -> None:
    decoded = decode_record_lenient(base_json(**event))
    assert decoded.events == []
    assert [e.reason for e in decoded.errors] == ["out_of_range"], decoded.errors


def test_feedback_score_beyond_the_bound_is_rejected() -> None:
    value = b'{"schema":"inferwatch.feedback/v1","request_id":"r","time":1,"model":"m","version":"1","score":1e301}'
    assert [e.reason for e in decode_record_lenient(value).errors] == ["out_of_range"]


def test_the_largest_accepted_magnitude_squares_without_overflow() -> None:
    # The reason for the bound: a window's sum of squares of values at the bound stays finite in float64.
    (event,) = decode_record(base_json(features={"x": MAX_MAGNITUDE}, embedding=[-MAX_MAGNITUDE] * 8))
    assert isinstance(event, InferenceEvent)
    assert math.isfinite(sum(v * v for v in [event.features["x"] or 0.0] * 1_000_000))


def test_a_null_feature_is_a_missing_value_not_an_error() -> None:
    (event,) = decode_record(base_json(features={"x": None, "y": 2.0}))
    assert isinstance(event, InferenceEvent) and event.features == {"x": None, "y": 2.0}
    feature_schema = json_schema()["$defs"]["InferenceEvent"]["properties"]["features"]  # type: ignore[index]
    assert {"type": "null"} in feature_schema["additionalProperties"]["anyOf"]
    assert "missing" in feature_schema["additionalProperties"]["description"]


# -- hostile probe items 1 and 3: bytes that made msgspec raise outside its own error types


def test_invalid_utf8_in_a_string_is_malformed_json_not_an_exception() -> None:
    # probe item 1: `"request_id":"\xff"` raised UnicodeDecodeError and killed the daemon
    value = base_json().replace(b'"request_id": "r"', b'"request_id": "\xff"')
    assert b"\xff" in value
    (error,) = decode_record_lenient(value).errors
    assert error.reason == "malformed_json" and "UTF-8" in error.detail


def test_invalid_utf8_inside_a_batch_costs_only_its_event() -> None:
    good = encode_event(inference(1))
    bad = encode_event(inference(2)).replace(b'"req-2"', b'"\xfe\xff"')
    decoded = decode_record_lenient(b'{"schema":"inferwatch.batch/v1","events":[%s,%s]}' % (good, bad))
    assert [e.request_id for e in decoded.events] == ["req-1"]
    assert [(e.reason, e.part) for e in decoded.errors] == [("malformed_json", bad)]


DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


@pytest.mark.parametrize("value", [
    DEEP,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"schema":"inferwatch.inference/v1","features":' + DEEP + b"}",
    b'{"schema":"inferwatch.batch/v1","events":[' + DEEP + b"]}",
    b'{"schema":"inferwatch.batch/v1","events":[' + encode_event(inference()) + b"," + DEEP + b"]}",
])
def test_deeply_nested_objects_are_rejected_not_a_recursion_error(value: bytes) -> None:
    # probe item 3: 10,000-deep `{"a":{"a":...}}` at top level or inside a batch raised RecursionError
    decoded = decode_record_lenient(value)
    assert decoded.events == []
    assert len(decoded.errors) == 1 and decoded.errors[0].reason in REJECT_REASONS
