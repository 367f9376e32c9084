"""Slow drift: a one-sided CUSUM over windows of the feature-drift evidence, for drifts too slow for any single
window. It reads the feature-drift result of the same window, so it is registered after that detector."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from detectors import CUSUM, WindowDriftResult, z_from_p
from monitor.detection.base import DetectorBase, Finding, GaugeSpec, Inputs, ModelContext, Sample
from monitor.detection.feature_drift import FeatureDrift


@dataclass(frozen=True)
class SlowDriftResult:
    """CUSUM over windows of the feature-drift evidence."""

    statistic: float
    threshold: float
    drifted: bool


class SlowDrift(DetectorBase):
    name: ClassVar[str] = "slow_drift"
    needs: ClassVar[tuple[str, ...]] = ("numeric",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_slow_drift_cusum", "CUSUM statistic of feature-drift evidence."),
    )

    def __init__(self, cusum: CUSUM) -> None:
        self._cusum = cusum

    @classmethod
    def build(cls, model: ModelContext) -> SlowDrift | None:
        cfg = model.detect.slow_drift
        if not cfg.enabled or not model.profile.feature_names or model.profile.reference is None:
            return None
        return cls(CUSUM(k=cfg.k, false_alarm_rate=cfg.false_alarm_rate))

    def evaluate(self, inputs: Inputs) -> SlowDriftResult | None:
        """Accumulate evidence across windows; report only what no single window showed."""
        drift = inputs.earlier.get(FeatureDrift.name)
        if not isinstance(drift, WindowDriftResult) or drift.numeric.insufficient:
            return None
        # The window's evidence: the smallest adjusted p-value across its features, as a N(0,1) score.
        p_min = min((f.p_adjusted for f in drift.numeric.features), default=1.0)
        alarm = self._cusum.update(float(z_from_p(p_min)))
        statistic = self._cusum.statistic
        if alarm or drift.drifted:  # evidence used up: a window-level finding already reports this change
            self._cusum.reset()
        return SlowDriftResult(statistic=float(statistic), threshold=float(self._cusum.threshold),
                               drifted=alarm and not drift.drifted)

    def state(self) -> list[float | bool]:
        return list(self._cusum.snapshot())

    def restore(self, state: Any) -> None:
        statistic, alarmed = state
        self._cusum.restore(float(statistic), bool(alarmed))

    @staticmethod
    def finding(result: SlowDriftResult) -> Finding:
        return Finding(SlowDrift.name, result.drifted, False, (),
                       f"CUSUM {result.statistic:.2f} of threshold {result.threshold:.2f}")

    @staticmethod
    def samples(result: SlowDriftResult) -> Iterator[Sample]:
        yield Sample("inferwatch_slow_drift_cusum", result.statistic)
