"""Latency SLO: multiwindow, multi-burn-rate alerting (SRE workbook) on total latency, when ``detect.slo`` is set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from detectors import SLO, BurnRateMonitor, BurnRateResult
from monitor.detection.base import DetectorBase, Evidence, Finding, GaugeSpec, Inputs, ModelContext, Sample


class LatencySLO(DetectorBase):
    name: ClassVar[str] = "latency_slo"
    needs: ClassVar[tuple[str, ...]] = ("latency",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_slo_burn_rate", "Latency SLO error-budget burn rate per window length.", ("window",)),
    )

    def __init__(self, slo: SLO) -> None:
        self._burn = BurnRateMonitor(slo)

    @classmethod
    def build(cls, model: ModelContext) -> LatencySLO | None:
        slo = model.detect.slo
        return cls(SLO(slo.threshold_s, slo.objective)) if slo is not None else None

    def evaluate(self, inputs: Inputs) -> BurnRateResult:
        window = inputs.window
        total = window.columns["latency"][:, 0]
        total = total[~np.isnan(total)]
        if total.size:
            self._burn.observe(window.last_time, total)
        return self._burn.evaluate(window.last_time)

    def state(self) -> dict[str, list[int]]:
        return self._burn.snapshot()

    def restore(self, state: Any) -> None:
        self._burn.restore(state)

    @staticmethod
    def finding(result: BurnRateResult) -> Finding:
        return Finding(LatencySLO.name, result.page, False, (),
                       f"error-budget burn {result.page_long:.1f}x (1 h) / {result.page_short:.1f}x (5 min)",
                       (Evidence("", "burn_rate_1h", result.page_long),
                        Evidence("", "burn_rate_5m", result.page_short)))

    @staticmethod
    def samples(result: BurnRateResult) -> Iterator[Sample]:
        for window, value in (("1h", result.page_long), ("5m", result.page_short), ("6h", result.ticket_long),
                              ("30m", result.ticket_short)):
            yield Sample("inferwatch_slo_burn_rate", value, (window,))
