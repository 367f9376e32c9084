"""Predicted-class mix: chi-squared of the window's predicted-class counts against the reference's, and JS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from detectors import PredictionDriftResult, prediction_drift
from monitor.detection.base import DetectorBase, Evidence, Finding, GaugeSpec, Inputs, ModelContext, Sample


class PredictionDrift(DetectorBase):
    name: ClassVar[str] = "prediction_drift"
    needs: ClassVar[tuple[str, ...]] = ("prediction",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_prediction_chi2_statistic",
                  "Chi-squared statistic of predicted-class counts against reference priors."),
        GaugeSpec("inferwatch_prediction_p_value", "Chi-squared p-value of predicted-class counts."),
    )

    def __init__(self, model: ModelContext) -> None:
        self._model = model

    @classmethod
    def build(cls, model: ModelContext) -> PredictionDrift | None:
        reference = model.profile.reference
        return cls(model) if reference is not None and reference.class_priors is not None else None

    def evaluate(self, inputs: Inputs) -> PredictionDriftResult | None:
        predictions = inputs.window.predictions
        reference, cfg = self._model.profile.reference, self._model.detect
        if not predictions.size or reference is None:
            return None
        return prediction_drift(reference, predictions, alpha=cfg.alpha, min_effect=cfg.min_effect_classes)

    @staticmethod
    def finding(result: PredictionDriftResult) -> Finding:
        return Finding(PredictionDrift.name, result.drifted, result.insufficient, (),
                       f"predicted-class mix chi2={result.statistic:.1f} p={result.p_value:.2g} "
                       f"JS={result.js_distance:.3f}",
                       (Evidence("", "chi2", result.statistic, p_value=result.p_value, effect=result.js_distance,
                                 effect_name="js_distance"),))

    @staticmethod
    def samples(result: PredictionDriftResult) -> Iterator[Sample]:
        if not result.insufficient:
            yield Sample("inferwatch_prediction_chi2_statistic", result.statistic)
            yield Sample("inferwatch_prediction_p_value", result.p_value)
