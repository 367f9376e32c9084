"""Quality with labels: accuracy, macro-F1, per-class recall on the feedback labels joined since the last window,
with an exact binomial test against the reference accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from detectors import QualityResult, labelled_quality
from monitor.detection.base import DetectorBase, Finding, GaugeSpec, Inputs, ModelContext, Sample
from monitor.detection.estimated_quality import EstimatedQuality


class LabelledQuality(DetectorBase):
    name: ClassVar[str] = "labelled_quality"
    needs: ClassVar[tuple[str, ...]] = ("labels",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = tuple(
        g for g in EstimatedQuality.gauges if g.name != "inferwatch_quality_estimated_accuracy_bound")

    def __init__(self, model: ModelContext) -> None:
        self._model = model

    @classmethod
    def build(cls, model: ModelContext) -> LabelledQuality | None:
        return cls(model) if model.profile.reference_accuracy is not None and model.n_classes else None

    def evaluate(self, inputs: Inputs) -> QualityResult | None:
        labels, reference_accuracy = inputs.feedback, self._model.profile.reference_accuracy
        min_samples = self._model.window.min_samples
        if len(labels.y_true) < min_samples or reference_accuracy is None:
            return None  # too few joined labels yet: they are pooled with the next window's
        y_true, y_pred = np.array(labels.y_true), np.array(labels.y_pred)
        labels.y_true.clear()
        labels.y_pred.clear()
        cfg = self._model.detect
        return labelled_quality(y_true, y_pred, self._model.n_classes, reference_accuracy, alpha=cfg.alpha,
                                min_effect=cfg.min_effect_quality)

    @staticmethod
    def finding(result: QualityResult) -> Finding:
        return Finding(LabelledQuality.name, result.drifted, result.insufficient, (),
                       f"accuracy {result.accuracy:.3f} on {result.n} labels (reference "
                       f"{result.reference_accuracy:.3f}, p={result.p_value:.2g}), macro-F1 {result.macro_f1:.3f}")

    @staticmethod
    def samples(result: QualityResult) -> Iterator[Sample]:
        if not result.insufficient:
            yield Sample("inferwatch_quality_accuracy", result.accuracy, ("labels",))
            yield Sample("inferwatch_quality_macro_f1", result.macro_f1, ("labels",))
