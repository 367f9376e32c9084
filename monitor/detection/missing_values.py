"""Missing values: a change in a feature's missing rate is a finding of its own (one of the commonest production
failures: an upstream join breaks, a sensor goes quiet). Per feature a two-proportion test of the window's
missing count against the reference's (Fisher's exact test, or the pooled z-test for large tables), with the
window's multiple-testing correction and an effect floor on Cohen's h (:func:`detectors.missing_rate_drift`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from detectors import MissingRateResult, missing_rate_drift
from monitor.detection.base import DetectorBase, Evidence, Finding, GaugeSpec, Inputs, ModelContext, Sample


class MissingValues(DetectorBase):
    name: ClassVar[str] = "missing_values"
    needs: ClassVar[tuple[str, ...]] = ("numeric",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_feature_missing_ratio", "Share of the last window's events without this feature "
                  "(absent or null).", ("feature",)),
        GaugeSpec("inferwatch_feature_missing_p_value", "Adjusted p-value of the change in a feature's missing "
                  "rate against the reference.", ("feature",)),
    )

    def __init__(self, model: ModelContext) -> None:
        self._model = model

    @classmethod
    def build(cls, model: ModelContext) -> MissingValues | None:
        reference = model.profile.reference
        return cls(model) if reference is not None and reference.feature_names else None

    def evaluate(self, inputs: Inputs) -> MissingRateResult | None:
        reference, cfg = self._model.profile.reference, self._model.detect
        x = inputs.window.features  # (n, F), NaN where an event lacked the feature
        if reference is None or not x.shape[0]:
            return None
        assert reference.missing_counts is not None and reference.n_rows is not None  # set by ReferenceSample
        return missing_rate_drift(reference.feature_names, reference.missing_counts, reference.n_rows,
                                  np.count_nonzero(~np.isfinite(x), axis=0), x.shape[0], alpha=cfg.alpha,
                                  correction=cfg.correction, min_effect=cfg.min_effect_missing)

    @staticmethod
    def finding(result: MissingRateResult) -> Finding:
        if result.insufficient:
            text = f"insufficient data: {result.reason}"
        elif result.drifted:
            text = "missing rate changed: " + ", ".join(
                f"{f.name} {f.reference_rate:.1%} -> {f.current_rate:.1%} (p={f.p_adjusted:.2g}, h={f.cohens_h:.2f})"
                for f in result.features if f.drifted)
        else:
            worst = max(result.features, key=lambda f: abs(f.current_rate - f.reference_rate), default=None)
            text = "missing rates as in the reference" + (
                f" (largest change {worst.name} {worst.reference_rate:.1%} -> {worst.current_rate:.1%})"
                if worst is not None and worst.current_rate != worst.reference_rate else "")
        evidence = tuple(Evidence(f.name, "missing_rate", f.current_rate, threshold=f.reference_rate,
                                  p_value=f.p_adjusted, effect=f.cohens_h, effect_name="cohens_h")
                         for f in result.features if f.drifted)
        return Finding(MissingValues.name, result.drifted, result.insufficient, result.drifted_features, text,
                       evidence)

    @staticmethod
    def samples(result: MissingRateResult) -> Iterator[Sample]:
        for f in result.features:
            yield Sample("inferwatch_feature_missing_ratio", f.current_rate, (f.name,))
            if not result.insufficient:
                yield Sample("inferwatch_feature_missing_p_value", f.p_adjusted, (f.name,))
