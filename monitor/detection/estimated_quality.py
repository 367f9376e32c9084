"""Quality without labels: CBPE expected accuracy and macro-F1 from probabilities calibrated on the reference."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import ClassVar

from detectors import CBPEResult, cbpe
from monitor.detection.base import DetectorBase, Finding, GaugeSpec, Inputs, ModelContext, Sample


class EstimatedQuality(DetectorBase):
    name: ClassVar[str] = "estimated_quality"
    needs: ClassVar[tuple[str, ...]] = ("probs",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_quality_accuracy",
                  "Accuracy from joined labels (source=labels) or estimated without labels (source=estimated, "
                  "CBPE).", ("source",)),
        GaugeSpec("inferwatch_quality_estimated_accuracy_bound", "Confidence bounds of the label-free accuracy "
                  "estimate.", ("bound",)),
        GaugeSpec("inferwatch_quality_macro_f1", "Macro-F1 from labels or estimated.", ("source",)),
    )

    def __init__(self, model: ModelContext) -> None:
        self._model = model

    @classmethod
    def build(cls, model: ModelContext) -> EstimatedQuality | None:
        p = model.profile
        return cls(model) if p.calibrator is not None and p.reference_accuracy is not None and model.n_classes \
            else None

    def evaluate(self, inputs: Inputs) -> CBPEResult | None:
        probs = inputs.column("probs")
        p, cfg = self._model.profile, self._model.detect
        if probs is None or p.calibrator is None or p.reference_accuracy is None:
            return None
        # Like with like: the window's estimate against the reference's own label-free estimate and its spread
        # (profiles from before they were stored fall back to the measured reference accuracy). Seeded by the
        # window id: a replayed window gets the same bootstrap interval.
        return cbpe(probs, p.calibrator, p.reference_accuracy, alpha=cfg.alpha, min_effect=cfg.min_effect_quality,
                    reference_estimate=p.reference_estimate, reference_spread=p.reference_estimate_sd,
                    seed=zlib.crc32(inputs.window.window_id.encode()))

    @staticmethod
    def finding(result: CBPEResult) -> Finding:
        lo, hi = result.accuracy_ci
        return Finding(EstimatedQuality.name, result.drifted, result.insufficient, (),
                       f"estimated accuracy {result.expected_accuracy:.3f} [{lo:.3f}, {hi:.3f}] without labels, "
                       f"reference {result.reference_accuracy:.3f}")

    @staticmethod
    def samples(result: CBPEResult) -> Iterator[Sample]:
        if result.insufficient:
            return
        yield Sample("inferwatch_quality_accuracy", result.expected_accuracy, ("estimated",))
        yield Sample("inferwatch_quality_macro_f1", result.expected_macro_f1, ("estimated",))
        yield Sample("inferwatch_quality_estimated_accuracy_bound", result.accuracy_ci[0], ("lower",))
        yield Sample("inferwatch_quality_estimated_accuracy_bound", result.accuracy_ci[1], ("upper",))
