"""LLM output quality: acceptance rate from joined feedback, output length and mean log-probability (KS),
empty and refusal rates (binomial); time to first token and per output token reported."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from detectors import LLMQualityResult, llm_quality
from monitor.detection.base import DetectorBase, Finding, GaugeSpec, Inputs, ModelContext, Sample

#: The order of the values of the window's ``llm`` column.
LLM_COLUMNS = ("output_tokens", "mean_logprob", "empty", "refusal", "ttft_s", "tpot_s")


class LLMQuality(DetectorBase):
    name: ClassVar[str] = "llm_quality"
    needs: ClassVar[tuple[str, ...]] = ("llm", "acceptances")
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_llm_response_ratio",
                  "Share of the last window's responses accepted (joined feedback), empty, or refused.", ("kind",)),
        GaugeSpec("inferwatch_llm_latency_seconds",
                  "Percentiles of time to first token and time per output token in the last window.",
                  ("kind", "quantile"), type="summary"),
        GaugeSpec("inferwatch_llm_output_tokens", "Percentiles of output length in tokens in the last window.",
                  ("quantile",), type="summary"),
        GaugeSpec("inferwatch_llm_mean_logprob",
                  "Mean over the last window's outputs of their mean token log-probability (nats)."),
    )

    def __init__(self, model: ModelContext) -> None:
        self._model = model

    @classmethod
    def build(cls, model: ModelContext) -> LLMQuality | None:
        return cls(model) if model.profile.llm is not None else None

    def evaluate(self, inputs: Inputs) -> LLMQualityResult | None:
        rows = inputs.column("llm")
        reference = self._model.profile.llm
        if rows is None or reference is None:
            return None
        feedback = inputs.feedback
        accepted = np.array(feedback.accepted, dtype=bool) if feedback.accepted else None
        feedback.accepted.clear()
        cfg = self._model.detect
        return llm_quality(reference, output_tokens=rows[:, 0], mean_logprob=rows[:, 1], empty=rows[:, 2] > 0,
                           refusal=rows[:, 3] > 0, ttft_s=rows[:, 4], tpot_s=rows[:, 5], accepted=accepted,
                           alpha=cfg.alpha, min_samples=self._model.window.min_samples, min_effect=cfg.min_effect_llm)

    @staticmethod
    def finding(result: LLMQualityResult) -> Finding:
        return Finding(LLMQuality.name, result.drifted, not result.tests, (),
                       "; ".join(result.findings) or "LLM outputs as in the reference")

    @staticmethod
    def samples(result: LLMQualityResult) -> Iterator[Sample]:
        for test in result.tests:
            if test.name in ("acceptance", "empty", "refusal"):
                yield Sample("inferwatch_llm_response_ratio", test.value, (test.name,))
        for kind, pct in (("time_to_first_token", result.ttft_s), ("time_per_output_token", result.tpot_s)):
            for q, value in (("0.5", pct.p50), ("0.95", pct.p95), ("0.99", pct.p99)):
                if not math.isnan(value):
                    yield Sample("inferwatch_llm_latency_seconds", value, (kind, q))
        tokens = result.output_tokens
        for q, value in (("0.5", tokens.p50), ("0.95", tokens.p95), ("0.99", tokens.p99)):
            if not math.isnan(value):
                yield Sample("inferwatch_llm_output_tokens", value, (q,))
        if not math.isnan(result.mean_logprob):
            yield Sample("inferwatch_llm_mean_logprob", result.mean_logprob)
