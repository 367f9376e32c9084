"""A version served beside its peer (A/B, canary) against the peer's last window: features, class mix, latency.

Built only for a version that has a peer (``models[].variant`` / ``compare_with``, resolved by
:func:`monitor.config.variant_peers`); the pipeline hands it the peer's last closed window (a bounded
:class:`~monitor.detection.base.PeerWindow`) in :attr:`Inputs.peer`. The statistics are
:func:`detectors.compare_windows`: two-sample KS per feature with the configured correction, chi-squared
homogeneity of the predicted classes, Mann–Whitney U of latency, sharing ``alpha`` so that one comparison is one
controlled test. Features are matched by name (versions may add or drop features); predicted classes are compared
when both profiles name the same classes. A peer window that ended more than ``detect.variants.max_age_s`` (event
time) before this window began is not compared with: the result is insufficient and says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from detectors import WindowComparison, compare_windows
from monitor.detection.base import DetectorBase, Evidence, Finding, GaugeSpec, Inputs, ModelContext, Sample


@dataclass(frozen=True)
class VariantComparisonResult:
    """One window of a version against the last window of its ``peer`` version.

    ``comparison`` is None when nothing was compared, and ``reason`` says why (no peer window yet, or too old);
    ``gap_s`` is the event time from the end of the peer's window to the start of this one (negative when they
    overlap; NaN without a peer window)."""

    peer: str
    peer_window_id: str
    gap_s: float
    comparison: WindowComparison | None
    reason: str = ""

    @property
    def insufficient(self) -> bool:
        return self.comparison is None or self.comparison.insufficient

    @property
    def drifted(self) -> bool:
        return self.comparison is not None and self.comparison.drifted

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return () if self.comparison is None else self.comparison.drifted_features


class VariantComparison(DetectorBase):
    name: ClassVar[str] = "variant_comparison"
    needs: ClassVar[tuple[str, ...]] = ("numeric", "prediction", "latency")
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_variant_drifted_features",
                  "Features whose distribution differs from the peer version's last window.", ("peer",)),
        GaugeSpec("inferwatch_variant_p_value",
                  "P-value of the last window against the peer's: test=features (smallest adjusted KS p-value), "
                  "classes (chi-squared of the predicted-class mix), latency (Mann-Whitney U).", ("peer", "test")),
        GaugeSpec("inferwatch_variant_ks_statistic",
                  "Kolmogorov-Smirnov statistic of a feature in the last window against the peer's.",
                  ("peer", "feature")),
        GaugeSpec("inferwatch_variant_latency_change_ratio",
                  "Relative change of median total latency against the peer's last window (0.1: 10% slower).",
                  ("peer",)),
    )

    def __init__(self, model: ModelContext, peer: str) -> None:
        self._model = model
        self._peer = peer

    @classmethod
    def build(cls, model: ModelContext) -> VariantComparison | None:
        return cls(model, model.peer) if model.peer is not None else None

    def evaluate(self, inputs: Inputs) -> VariantComparisonResult:
        peer, window, cfg = inputs.peer, inputs.window, self._model.detect
        if peer is None or peer.version != self._peer:
            return VariantComparisonResult(self._peer, "", math.nan, None,
                                           f"no window of version {self._peer} has closed yet")
        gap = window.first_time - peer.last_time
        if gap > cfg.variants.max_age_s:
            return VariantComparisonResult(
                self._peer, peer.window_id, gap, None,
                f"no recent window of version {self._peer}: its last ({peer.window_id}) ended {gap:.0f} s before "
                f"this window began (detect.variants.max_age_s = {cfg.variants.max_age_s:g})")
        profile = self._model.profile
        at = {name: j for j, name in enumerate(peer.names)}
        own = [j for j, name in enumerate(profile.feature_names) if name in at]
        names = [profile.feature_names[j] for j in own]
        same_classes = peer.class_counts.size > 0 and tuple(profile.class_labels) == peer.class_labels
        comparison = compare_windows(
            names, window.features[:, own], peer.features[:, [at[n] for n in names]],
            predictions=window.predictions if same_classes else None,
            peer_class_counts=peer.class_counts if same_classes else None,
            latency=window.columns["latency"][:, 0], peer_latency=peer.latency,
            alpha=cfg.alpha, correction=cfg.correction, min_effect=cfg.min_effect,
            min_effect_classes=cfg.min_effect_classes, min_latency_change=cfg.variants.min_latency_change)
        reason = "" if not comparison.insufficient else _insufficient(comparison, len(names), same_classes)
        return VariantComparisonResult(self._peer, peer.window_id, gap, comparison, reason)

    @staticmethod
    def finding(result: VariantComparisonResult) -> Finding:
        c, peer = result.comparison, result.peer
        if c is None or c.insufficient:
            return Finding(VariantComparison.name, False, True, (), f"not compared with version {peer}: "
                                                                    f"{result.reason}")
        evidence: list[Evidence] = []
        found: list[str] = []
        features = c.features if c.features is not None and not c.features.insufficient else None
        for f in sorted(features.features if features else (), key=lambda f: -f.ks_statistic):
            if f.drifted and features is not None:
                found.append(f"{f.name} (KS={f.ks_statistic:.3f}, p={f.p_adjusted:.2g})")
                evidence.append(Evidence(f.name, "ks", f.ks_statistic, threshold=features.min_effect,
                                         p_value=f.p_adjusted, effect=f.wasserstein, effect_name="wasserstein_peer_sd"))
        classes = c.classes if c.classes is not None and not c.classes.insufficient else None
        if classes is not None and classes.drifted:
            found.append(f"predicted-class mix (chi2={classes.statistic:.1f}, p={classes.p_value:.2g}, "
                         f"JS={classes.js_distance:.3f})")
            evidence.append(Evidence("", "chi2", classes.statistic, p_value=classes.p_value,
                                     effect=classes.js_distance, effect_name="js_distance"))
        latency = c.latency if c.latency is not None and not c.latency.insufficient else None
        if latency is not None and latency.drifted:
            found.append(f"latency (p50 {latency.p50 * 1e3:.4g} ms vs {latency.peer_p50 * 1e3:.4g} ms, "
                         f"{latency.change:+.0%}; p95 {latency.p95 * 1e3:.4g} ms vs {latency.peer_p95 * 1e3:.4g} ms; "
                         f"Mann-Whitney p={latency.p_value:.2g})")
            evidence.append(Evidence("", "latency_p50_change", latency.change, threshold=latency.min_change,
                                     p_value=latency.p_value))
        if found:
            text = f"differs from version {peer} ({result.peer_window_id}): " + ", ".join(found)
        else:
            worst = max(features.features if features else (), key=lambda f: f.ks_statistic, default=None)
            text = f"no difference from version {peer} ({result.peer_window_id})" + (
                f"; largest KS {worst.ks_statistic:.3f} on {worst.name}" if worst else "")
        return Finding(VariantComparison.name, c.drifted, False, c.drifted_features, text, tuple(evidence))

    @staticmethod
    def samples(result: VariantComparisonResult) -> Iterator[Sample]:
        c, peer = result.comparison, result.peer
        if c is None or c.insufficient:
            return
        if c.features is not None and not c.features.insufficient:
            yield Sample("inferwatch_variant_drifted_features", len(c.features.drifted_features), (peer,))
            adjusted = [f.p_adjusted for f in c.features.features if not math.isnan(f.p_adjusted)]
            if adjusted:
                yield Sample("inferwatch_variant_p_value", min(adjusted), (peer, "features"))
            for f in c.features.features:
                if not math.isnan(f.ks_statistic):
                    yield Sample("inferwatch_variant_ks_statistic", f.ks_statistic, (peer, f.name))
        if c.classes is not None and not c.classes.insufficient:
            yield Sample("inferwatch_variant_p_value", c.classes.p_value, (peer, "classes"))
        if c.latency is not None and not c.latency.insufficient:
            yield Sample("inferwatch_variant_p_value", c.latency.p_value, (peer, "latency"))
            if math.isfinite(c.latency.change):
                yield Sample("inferwatch_variant_latency_change_ratio", c.latency.change, (peer,))

    @staticmethod
    def details(result: VariantComparisonResult) -> list[str]:
        c = result.comparison
        if c is None:
            return [f"not compared with version {result.peer}: {result.reason}"]
        lines = [f"against version {result.peer}, window {result.peer_window_id} (each part at level "
                 f"{c.level:.2g})"]
        if c.features is not None:
            lines.append(f"{'feature':<24} {'KS':>7} {'p-value':>10} {'p-adj':>10}  differs")
            lines += [f"{f.name:<24} {f.ks_statistic:>7.4f} {f.p_value:>10.3g} {f.p_adjusted:>10.3g}  "
                      f"{'YES' if f.drifted else 'no'}" for f in c.features.features]
        if c.classes is not None and not c.classes.insufficient:
            lines.append(f"predicted classes: {c.classes.observed} vs peer shares "
                         f"{tuple(round(p, 3) for p in c.classes.expected_probs)}, chi2={c.classes.statistic:.2f} "
                         f"p={c.classes.p_value:.3g} JS={c.classes.js_distance:.3f}")
        if c.latency is not None and not c.latency.insufficient:
            lat = c.latency
            lines.append(f"latency p50 {lat.p50:.4g} s vs {lat.peer_p50:.4g} s ({lat.change:+.1%}), p95 {lat.p95:.4g} s"
                         f" vs {lat.peer_p95:.4g} s, Mann-Whitney U={lat.statistic:.0f} p={lat.p_value:.3g}")
        return lines


def _insufficient(c: WindowComparison, n_features: int, same_classes: bool) -> str:
    """Why a comparison that ran could not have found anything."""
    if c.features is not None and c.features.reason:
        return f"features: {c.features.reason}"
    if c.features is None and c.classes is None and c.latency is None:
        missing = [] if n_features else ["no numeric feature in common"]
        missing += [] if same_classes else ["no predicted classes in common"]
        return "nothing to compare: " + ", ".join([*missing, "no latency on both sides"])
    return "too few rows in one of the two windows for any test to reach significance"

