"""Raw payload capture: off by default, sampled, redacted before it leaves the process, size-capped.

A :class:`PayloadPolicy` decides, per model, whether a request's raw content (prompt and completion text,
input bytes as base64) travels with its event. Three rules, in this order:

1. **Sampling.** Only a ``sample_rate`` fraction of requests is captured, chosen by a seeded generator
   (:class:`BernoulliSampler`), so a replay of the same traffic samples the same requests. The default rate is 0.
2. **Redaction.** Text is passed through a redactor (by default the regexes of :data:`DEFAULT_PATTERNS`:
   e-mail addresses, API keys and tokens, bearer tokens, card-like numbers, phone numbers) *before* it is
   truncated, so a secret that straddles the size cap is never half-kept. Each match becomes
   ``[REDACTED:<name>]`` and is counted, per pattern, on the event and in a metric.
3. **Size cap.** Each field is cut to ``max_chars`` characters and the payload is marked ``truncated``.

Binary input is not redacted (no regex can see into pixels); it is base64-encoded and capped like text.
"""

from __future__ import annotations

import base64
import math
import random
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter

from monitor.events import MAX_PAYLOAD_CHARS, Payload


@dataclass(frozen=True)
class RedactionPattern:
    """One named regex; every match is replaced by ``[REDACTED:<name>]``. ``name`` is a metric label value."""

    name: str
    regex: re.Pattern[str]


#: The default redactor's patterns, applied in this order (keys before the looser number patterns).
DEFAULT_PATTERNS: Final[tuple[RedactionPattern, ...]] = (
    # Authorization headers and bare bearer tokens: the scheme word and the token.
    RedactionPattern("bearer_token", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*")),
    # OpenAI/Anthropic-style secret keys: sk-..., sk-proj-..., sk-ant-...
    RedactionPattern("api_key", re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")),
    # AWS access key ids (long-term AKIA, temporary ASIA).
    RedactionPattern("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    # GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_) and Slack tokens (xoxb-, xoxp-, ...).
    RedactionPattern("access_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,})")),
    RedactionPattern("email", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")),
    # 13 to 19 digits, optionally grouped by single spaces or dashes (no Luhn check: redaction errs on caution).
    RedactionPattern("card_number", re.compile(r"\b\d(?:[ \-]?\d){12,18}\b")),
    # International numbers with a +country code, and North American numbers written with separators.
    RedactionPattern("phone", re.compile(r"\+\d{1,3}[\s.\-]?\(?\d{1,4}\)?(?:[\s.\-]?\d{2,4}){2,3}\b"
                                         r"|(?:\(\d{3}\)\s?|\b\d{3}[\s.\-])\d{3}[\s.\-]\d{4}\b")),
)


@dataclass(frozen=True)
class Redaction:
    """Redacted text and how many matches each pattern replaced."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Redactor(Protocol):
    """The redaction hook: text in, redacted text and per-pattern counts out. Must be thread-safe and pure."""

    def __call__(self, text: str) -> Redaction: ...


class RegexRedactor:
    """Replace every match of each pattern, in order, by ``[REDACTED:<name>]``.

    Examples
    --------
    >>> r = RegexRedactor()("mail ann@example.com, key sk-abcdefghijklmnopqrstu")
    >>> r.text, dict(r.counts)
    ('mail [REDACTED:email], key [REDACTED:api_key]', {'api_key': 1, 'email': 1})
    """

    def __init__(self, patterns: Sequence[RedactionPattern] = DEFAULT_PATTERNS) -> None:
        self.patterns = tuple(patterns)

    def __call__(self, text: str) -> Redaction:
        counts: dict[str, int] = {}
        for p in self.patterns:
            text, n = p.regex.subn(f"[REDACTED:{p.name}]", text)
            if n:
                counts[p.name] = n
        return Redaction(text, counts)


class BernoulliSampler:
    """Select each of a stream of trials independently with probability ``rate``, reproducibly from ``seed``.

    Instead of drawing one uniform per trial, it draws the gap to the next selected trial from the geometric
    distribution, ``gap = floor(log(1 - u) / log(1 - rate))`` (the number of failures before a success), so
    ``take(n)`` costs O(selected), not O(n), and the selection does not depend on how trials are batched.

    Examples
    --------
    >>> s = BernoulliSampler(0.25, seed=0)
    >>> s.take(16), s.take(16)
    ([6, 11, 13, 15], [2, 4, 10, 12, 15])
    >>> BernoulliSampler(1.0).take(3), BernoulliSampler(0.0).take(3)
    ([0, 1, 2], [])
    """

    def __init__(self, rate: float, seed: int = 0) -> None:
        if not 0.0 <= rate <= 1.0 or math.isnan(rate):
            raise ValueError(f"sample rate must be within [0, 1], got {rate}")
        self.rate = rate
        self.seed = seed
        self._reset()

    def _reset(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._log_q = math.log1p(-self.rate) if 0.0 < self.rate < 1.0 else 0.0
        self._skip = self._gap()  # trials to pass over before the next selected one

    def _gap(self) -> int:
        if self.rate >= 1.0:
            return 0
        if self.rate <= 0.0:
            return sys.maxsize
        return int(math.log(1.0 - self._rng.random()) / self._log_q)

    def take(self, n: int) -> list[int]:
        """Indices (0..n-1) of the selected trials among the next ``n``."""
        if self.rate <= 0.0:
            return []
        if self.rate >= 1.0:
            return list(range(n))
        picked: list[int] = []
        with self._lock:
            i = self._skip
            while i < n:
                picked.append(i)
                i += 1 + self._gap()
            self._skip = i - n
        return picked

    def sample(self) -> bool:
        """Whether the next single trial is selected."""
        return bool(self.take(1))


@dataclass(frozen=True)
class PayloadMetrics:
    captured: Counter
    truncated: Counter
    redactions: Counter


def payload_metrics(registry: CollectorRegistry | None) -> PayloadMetrics:
    """Payload counters on ``registry`` (one set per registry; share it between policies)."""
    return PayloadMetrics(
        captured=Counter("inferwatch_collector_payloads_captured_total", "Raw payloads sampled and captured.",
                         registry=registry),
        truncated=Counter("inferwatch_collector_payloads_truncated_total", "Captured payloads cut to max_chars.",
                          registry=registry),
        redactions=Counter("inferwatch_collector_payload_redactions_total", "Matches redacted, by pattern.",
                           ("pattern",), registry=registry),
    )


class PayloadPolicy:
    """Whether and how a request's raw content is captured: sampled, redacted, then size-capped.

    Parameters
    ----------
    sample_rate : float
        Fraction of requests whose payload is captured; 0 (the default) captures none.
    max_chars : int
        Cap on each field, in characters (base64 characters for input bytes).
    patterns : sequence of RedactionPattern
        Regexes of the default redactor.
    seed : int
        Seed of the sampling generator.
    redactor : Redactor, optional
        A custom redaction hook; replaces the regex redactor built from ``patterns``.
    metrics : PayloadMetrics, optional
        Counters to update (from :func:`payload_metrics`); unregistered ones by default.

    Examples
    --------
    >>> policy = PayloadPolicy(sample_rate=1.0, max_chars=25)
    >>> p = policy.capture(prompt="write to bob@example.org about the invoice")
    >>> p.prompt, p.truncated, p.redactions
    ('write to [REDACTED:email]', True, 1)
    >>> PayloadPolicy().capture(prompt="hello") is None  # off by default
    True
    """

    def __init__(self, sample_rate: float = 0.0, max_chars: int = 4096,
                 patterns: Sequence[RedactionPattern] = DEFAULT_PATTERNS, seed: int = 0,
                 redactor: Redactor | None = None, metrics: PayloadMetrics | None = None) -> None:
        if not 1 <= max_chars <= MAX_PAYLOAD_CHARS:
            raise ValueError(f"max_chars must be within [1, {MAX_PAYLOAD_CHARS}], got {max_chars}")
        self.sample_rate = sample_rate
        self.max_chars = max_chars
        self.patterns = tuple(patterns)
        self.seed = seed
        self.redactor: Redactor = redactor if redactor is not None else RegexRedactor(self.patterns)
        self.metrics = metrics if metrics is not None else payload_metrics(None)
        self._sampler = BernoulliSampler(sample_rate, seed)

    @property
    def enabled(self) -> bool:
        return self.sample_rate > 0.0

    def select(self, n: int) -> list[int]:
        """Which of the next ``n`` requests (e.g. the samples of a batch) to capture; cheap on the serving thread."""
        return self._sampler.take(n)

    def sample(self) -> bool:
        """Whether to capture the next request."""
        return self._sampler.sample()

    def build(self, prompt: str | None = None, completion: str | None = None,
              input_bytes: bytes | None = None) -> Payload:
        """Redact, cap and count one payload, already chosen by :meth:`select` or :meth:`sample`."""
        truncated = False
        redactions = 0
        texts: list[str | None] = []
        for text in (prompt, completion):
            if text is None:
                texts.append(None)
                continue
            r = self.redactor(text)
            for name, n in r.counts.items():
                self.metrics.redactions.labels(pattern=name).inc(n)
            redactions += r.total
            truncated |= len(r.text) > self.max_chars
            texts.append(r.text[:self.max_chars])
        encoded = None
        if input_bytes is not None:
            keep = self.max_chars // 4 * 3  # base64 turns every 3 bytes into 4 characters
            truncated |= len(input_bytes) > keep
            encoded = base64.b64encode(input_bytes[:keep]).decode("ascii")
        self.metrics.captured.inc()
        if truncated:
            self.metrics.truncated.inc()
        return Payload(prompt=texts[0], completion=texts[1], input_b64=encoded, truncated=truncated,
                       redactions=redactions)

    def capture(self, prompt: str | None = None, completion: str | None = None,
                input_bytes: bytes | None = None) -> Payload | None:
        """The payload of one request if it is sampled, else None."""
        if not self.enabled or not self.sample():
            return None
        return self.build(prompt, completion, input_bytes)


__all__ = [
    "DEFAULT_PATTERNS",
    "BernoulliSampler",
    "PayloadMetrics",
    "PayloadPolicy",
    "Redaction",
    "RedactionPattern",
    "Redactor",
    "RegexRedactor",
    "payload_metrics",
]
