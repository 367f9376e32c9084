"""Latency percentiles of a window (total and GPU time) from mergeable log-bucket histograms; reported, never a
finding on its own (the SLO detector decides when latency is a problem)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from detectors import LatencyHistogram
from monitor.detection.base import DetectorBase, GaugeSpec, Inputs, ModelContext, Sample


@dataclass(frozen=True)
class LatencySummary:
    """Per-window latency percentiles (seconds) from a mergeable histogram; GPU time where measured."""

    n: int
    p50: float
    p95: float
    p99: float
    gpu_n: int = 0
    gpu_p50: float = float("nan")
    gpu_p95: float = float("nan")
    gpu_p99: float = float("nan")


def _percentiles(values: np.ndarray) -> tuple[float, float, float]:
    hist = LatencyHistogram()
    hist.add(values)
    p50, p95, p99 = (float(q) for q in hist.quantile(np.array([0.5, 0.95, 0.99])))
    return p50, p95, p99


class Latency(DetectorBase):
    name: ClassVar[str] = "latency"
    needs: ClassVar[tuple[str, ...]] = ("latency",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_latency_seconds", "Percentiles of total and GPU latency in the last window.",
                  ("kind", "quantile"), type="summary"),
    )

    @classmethod
    def build(cls, model: ModelContext) -> Latency:
        return cls()

    def evaluate(self, inputs: Inputs) -> LatencySummary | None:
        latency = inputs.window.columns["latency"]
        total, gpu = latency[:, 0], latency[:, 1]
        total, gpu = total[~np.isnan(total)], gpu[~np.isnan(gpu)]
        if not total.size:
            return None
        p50, p95, p99 = _percentiles(total)
        if not gpu.size:
            return LatencySummary(n=int(total.size), p50=p50, p95=p95, p99=p99)
        g50, g95, g99 = _percentiles(gpu)
        return LatencySummary(n=int(total.size), p50=p50, p95=p95, p99=p99, gpu_n=int(gpu.size), gpu_p50=g50,
                              gpu_p95=g95, gpu_p99=g99)

    @staticmethod
    def finding(result: LatencySummary) -> None:
        return None

    @staticmethod
    def samples(result: LatencySummary) -> Iterator[Sample]:
        for kind, values in (("total", (result.p50, result.p95, result.p99)),
                             ("gpu", (result.gpu_p50, result.gpu_p95, result.gpu_p99))):
            for q, value in zip(("0.5", "0.95", "0.99"), values, strict=True):
                if not math.isnan(value):
                    yield Sample("inferwatch_latency_seconds", value, (kind, q))
