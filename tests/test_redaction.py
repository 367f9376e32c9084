"""Payload capture: off by default, seeded sampling at the configured rate, every pattern redacted, size cap."""

from __future__ import annotations

import base64
import itertools
import math
import re

import pytest
from prometheus_client import CollectorRegistry

from collectors.redaction import (
    DEFAULT_PATTERNS,
    BernoulliSampler,
    PayloadPolicy,
    Redaction,
    RedactionPattern,
    RegexRedactor,
    payload_metrics,
)


@pytest.mark.parametrize(("name", "secret"), [
    ("email", "jane.doe+billing@mail.example.co.uk"),
    ("api_key", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t"),
    ("api_key", "sk-ant-api03-abcdefghijklmnop_QRS"),
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
    ("access_token", "ghp_" + "a1B2c3D4e5" * 4),
    ("access_token", "xoxb-123456789012-abcdefABCDEF"),
    ("bearer_token", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_x"),
    ("card_number", "4111 1111 1111 1111"),
    ("card_number", "5500-0000-0000-0004"),
    ("card_number", "378282246310005"),
    ("phone", "+44 20 7946 0958"),
    ("phone", "+1-202-555-0143"),
    ("phone", "(415) 555-2671"),
    ("phone", "415.555.2671"),
])
def test_each_default_pattern_redacts_its_secret(name: str, secret: str) -> None:
    r = RegexRedactor()(f"please use {secret} for this.")
    assert secret not in r.text
    assert r.text == f"please use [REDACTED:{name}] for this."
    assert dict(r.counts) == {name: 1}


@pytest.mark.parametrize("text", [
    "The meeting is on 2024-01-15 at 10:30, room 204.",
    "Version 3.11.7 fixed issue #12345; see sk-short and the AKIA prefix alone.",
    "I scored 98 out of 100 and ran 5 km in 27 minutes.",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    r = RegexRedactor()(text)
    assert (r.text, r.total) == (text, 0)


def test_redaction_happens_before_truncation_so_no_secret_prefix_leaks() -> None:
    key = "sk-" + "Z" * 40
    policy = PayloadPolicy(sample_rate=1.0, max_chars=20)
    p = policy.build(prompt="key: " + key)
    assert p.prompt is not None and "ZZZZ" not in p.prompt and "sk-" not in p.prompt
    assert p.truncated and p.redactions == 1 and len(p.prompt) == 20


def test_payload_counts_and_metrics() -> None:
    registry = CollectorRegistry()
    policy = PayloadPolicy(sample_rate=1.0, max_chars=64, metrics=payload_metrics(registry))
    p = policy.build(prompt="a@b.io and c@d.io", completion="call +1 202 555 0143", input_bytes=b"\x00\x01\xff")
    assert p.prompt == "[REDACTED:email] and [REDACTED:email]"
    assert p.completion == "call [REDACTED:phone]"
    assert p.input_b64 is not None and base64.b64decode(p.input_b64) == b"\x00\x01\xff"
    assert (p.redactions, p.truncated) == (3, False)
    value = registry.get_sample_value
    assert value("inferwatch_collector_payload_redactions_total", {"pattern": "email"}) == 2
    assert value("inferwatch_collector_payload_redactions_total", {"pattern": "phone"}) == 1
    assert value("inferwatch_collector_payloads_captured_total") == 1
    assert value("inferwatch_collector_payloads_truncated_total") == 0


def test_input_bytes_are_capped_on_a_base64_boundary() -> None:
    data = bytes(range(256)) * 4  # 1024 bytes
    p = PayloadPolicy(sample_rate=1.0, max_chars=102).build(input_bytes=data)
    assert p.input_b64 is not None and p.truncated
    assert len(p.input_b64) == 100  # 25 groups of 4 characters = 75 bytes, still decodable
    assert base64.b64decode(p.input_b64) == data[:75]


def test_a_custom_redactor_replaces_the_patterns() -> None:
    def upper_only(text: str) -> Redaction:
        out, n = re.subn(r"secret", "[gone]", text)
        return Redaction(out, {"custom": n} if n else {})

    policy = PayloadPolicy(sample_rate=1.0, redactor=upper_only)
    p = policy.build(prompt="my secret is bob@example.com")
    assert (p.prompt, p.redactions) == ("my [gone] is bob@example.com", 1)
    assert PayloadPolicy(sample_rate=1.0, patterns=[RedactionPattern("x", re.compile("b+"))]).build(
        prompt="abba").prompt == "a[REDACTED:x]a"


def test_capture_is_off_by_default() -> None:
    policy = PayloadPolicy()
    assert all(policy.capture(prompt="hi", completion="there") is None for _ in range(1000))


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_sampling_rate_is_met_within_binomial_error(rate: float) -> None:
    n = 50_000
    policy = PayloadPolicy(sample_rate=rate, seed=7)
    captured = sum(policy.capture(prompt="x") is not None for _ in range(n))
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(captured - n * rate) < 4 * sd


def test_sampling_is_seeded_and_independent_of_batching() -> None:
    one_by_one = BernoulliSampler(0.2, seed=3)
    singles = [i for i in range(1000) if one_by_one.sample()]
    batched = BernoulliSampler(0.2, seed=3)
    in_batches = [start + i for start in range(0, 1000, 64) for i in batched.take(min(64, 1000 - start))]
    assert singles == in_batches
    assert singles != [i for i in range(1000) if BernoulliSampler(0.2, seed=4).sample()]


def test_selection_gaps_are_geometric() -> None:
    # With rate p the gap between selected trials (in trials) is geometric: mean 1/p, variance (1-p)/p^2.
    p = 0.05
    picked = BernoulliSampler(p, seed=11).take(400_000)
    gaps = [b - a for a, b in itertools.pairwise(picked)]
    mean = sum(gaps) / len(gaps)
    var = sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1)
    assert mean == pytest.approx(1 / p, rel=0.02)
    assert var == pytest.approx((1 - p) / p**2, rel=0.05)


@pytest.mark.parametrize("kwargs", [{"sample_rate": -0.1}, {"sample_rate": 1.5}, {"sample_rate": math.nan},
                                    {"max_chars": 0}, {"max_chars": 10_000_000}])
def test_invalid_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"sample rate|max_chars"):
        PayloadPolicy(**kwargs)  # type: ignore[arg-type]


def test_default_patterns_have_unique_bounded_names() -> None:
    names = [p.name for p in DEFAULT_PATTERNS]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"[a-z_]+", n) for n in names)
