"""Input drift: every numeric and categorical feature of a window against the reference, in one pass.

Per numeric feature a two-sample KS test (with PSI, Jensen–Shannon and Wasserstein beside it), per categorical
feature a chi-squared test of homogeneity; one multiple-testing correction spans them all, and a finding needs
significance and an effect-size floor (:func:`detectors.window_drift`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from detectors import WindowDriftResult, window_drift
from monitor.detection.base import DetectorBase, Evidence, Finding, GaugeSpec, Inputs, ModelContext, Sample


class FeatureDrift(DetectorBase):
    name: ClassVar[str] = "feature_drift"
    needs: ClassVar[tuple[str, ...]] = ("numeric", "codes")
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_drift_ks_statistic",
                  "Kolmogorov–Smirnov statistic of the last window against the reference.", ("feature",)),
        GaugeSpec("inferwatch_drift_p_value", "Multiple-testing adjusted KS p-value of the last window.",
                  ("feature",)),
        GaugeSpec("inferwatch_drift_psi", "Population stability index of the last window.", ("feature",)),
        GaugeSpec("inferwatch_drift_wasserstein_sd",
                  "Wasserstein distance of the last window from the reference, in reference sds.", ("feature",)),
        GaugeSpec("inferwatch_drift_categorical_js_distance",
                  "Jensen–Shannon distance of a categorical feature's level frequencies.", ("feature",)),
        GaugeSpec("inferwatch_drift_categorical_p_value", "Adjusted chi-squared p-value of a categorical feature.",
                  ("feature",)),
    )

    def __init__(self, model: ModelContext) -> None:
        self._model = model

    @classmethod
    def build(cls, model: ModelContext) -> FeatureDrift | None:
        return cls(model) if model.profile.reference is not None else None

    def evaluate(self, inputs: Inputs) -> WindowDriftResult | None:
        p, cfg = self._model.profile, self._model.detect
        assert p.reference is not None  # build() checked
        return window_drift(p.reference, inputs.window.features, categorical=p.categorical,
                            codes=inputs.window.columns.get("codes"), alpha=cfg.alpha, correction=cfg.correction,
                            min_effect=cfg.min_effect, min_effect_categorical=cfg.min_effect_categorical)

    @staticmethod
    def finding(result: WindowDriftResult) -> Finding:
        numeric = result.numeric
        if numeric.insufficient:
            text = f"insufficient data: {numeric.reason}" if numeric.reason else \
                f"insufficient data ({numeric.n_current} rows)"
        elif result.drifted:
            parts = [f"{f.name} (KS={f.ks_statistic:.3f}, p={f.p_adjusted:.2g}, W={f.wasserstein:.2f}sd)"
                     for f in numeric.features if f.drifted]
            if result.categorical is not None:
                parts += [f"{c.name} (chi2 p={c.p_adjusted:.2g}, JS={c.js_distance:.3f})"
                          for c in result.categorical.features if c.drifted]
            text = "drift in " + ", ".join(parts)
        else:
            worst = max(numeric.features, key=lambda f: f.ks_statistic, default=None)
            text = "no feature drifted" + (f" (largest KS {worst.ks_statistic:.3f} on {worst.name})" if worst else "")
        evidence = [Evidence(f.name, "ks", f.ks_statistic, threshold=numeric.min_effect, p_value=f.p_adjusted,
                             effect=f.wasserstein, effect_name="wasserstein_sd")
                    for f in sorted(numeric.features, key=lambda f: -f.ks_statistic) if f.drifted]
        if result.categorical is not None:
            evidence += [Evidence(c.name, "chi2", c.chi2, p_value=c.p_adjusted, effect=c.js_distance,
                                  effect_name="js_distance")
                         for c in result.categorical.features if c.drifted]
        return Finding(FeatureDrift.name, result.drifted, numeric.insufficient, tuple(result.drifted_features), text,
                       tuple(evidence))

    @staticmethod
    def samples(result: WindowDriftResult) -> Iterator[Sample]:
        if result.numeric.insufficient:
            return
        for f in result.numeric.features:
            yield Sample("inferwatch_drift_ks_statistic", f.ks_statistic, (f.name,))
            yield Sample("inferwatch_drift_p_value", f.p_adjusted, (f.name,))
            yield Sample("inferwatch_drift_psi", f.psi, (f.name,))
            yield Sample("inferwatch_drift_wasserstein_sd", f.wasserstein, (f.name,))
        for c in result.categorical.features if result.categorical is not None else ():
            yield Sample("inferwatch_drift_categorical_js_distance", c.js_distance, (c.name,))
            yield Sample("inferwatch_drift_categorical_p_value", c.p_adjusted, (c.name,))

    @staticmethod
    def details(result: WindowDriftResult) -> list[str]:
        numeric = result.numeric
        categorical = result.categorical.features if result.categorical is not None else ()
        lines = []
        if numeric.features or categorical:
            lines.append(f"{'feature':<24} {'KS':>7} {'p-value':>10} {'p-adj':>10} {'PSI':>7} {'JS':>7} "
                         f"{'W (sd)':>7}  drifted")
        for f in numeric.features:
            lines.append(f"{f.name:<24} {f.ks_statistic:>7.4f} {f.p_value:>10.3g} {f.p_adjusted:>10.3g} "
                         f"{f.psi:>7.3f} {f.js_distance:>7.3f} {f.wasserstein:>7.3f}  {'YES' if f.drifted else 'no'}")
        for c in categorical:
            lines.append(f"{c.name:<24} {'chi2':>7} {c.p_value:>10.3g} {c.p_adjusted:>10.3g} {'':>7} "
                         f"{c.js_distance:>7.3f} {'':>7}  {'YES' if c.drifted else 'no'}")
        if lines:
            lines.append(f"{len(result.drifted_features)} of {len(numeric.features) + len(categorical)} "
                         "features drifted")
        return lines
