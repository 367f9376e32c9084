"""What each detector of a window result says, in one shape: for alert rules, logs and the demo."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.evaluation import WindowResult

DETECTORS = ("feature_drift", "prediction_drift", "embedding_drift", "estimated_quality", "labelled_quality",
             "llm_quality", "latency_slo", "slow_drift")


@dataclass(frozen=True)
class Finding:
    detector: str
    drifted: bool
    insufficient: bool
    features: tuple[str, ...]
    summary: str


def findings(r: WindowResult) -> list[Finding]:
    """One finding per detector that ran on this window (detectors without data are absent)."""
    out: list[Finding] = []
    if r.drift is not None:
        numeric = r.drift.numeric
        if numeric.insufficient:
            text = f"insufficient data ({numeric.n_current} usable rows)"
        elif r.drift.drifted:
            parts = [f"{f.name} (KS={f.ks_statistic:.3f}, p={f.p_adjusted:.2g}, W={f.wasserstein:.2f}sd)"
                     for f in numeric.features if f.drifted]
            if r.drift.categorical is not None:
                parts += [f"{c.name} (chi2 p={c.p_adjusted:.2g}, JS={c.js_distance:.3f})"
                          for c in r.drift.categorical.features if c.drifted]
            text = "drift in " + ", ".join(parts)
        else:
            worst = max(numeric.features, key=lambda f: f.ks_statistic, default=None)
            text = "no feature drifted" + (f" (largest KS {worst.ks_statistic:.3f} on {worst.name})" if worst else "")
        out.append(Finding("feature_drift", r.drift.drifted, numeric.insufficient, r.drifted_features, text))
    if r.prediction is not None:
        p = r.prediction
        out.append(Finding("prediction_drift", p.drifted, p.insufficient, (),
                           f"predicted-class mix chi2={p.statistic:.1f} p={p.p_value:.2g} JS={p.js_distance:.3f}"))
    if r.embedding is not None:
        e = r.embedding
        out.append(Finding("embedding_drift", e.drifted, e.insufficient, (),
                           f"embedding MMD²={e.mmd2:.4g} p={e.p_value:.2g} ({e.method}, {e.n_current} rows)"))
    if r.cbpe is not None:
        c = r.cbpe
        lo, hi = c.accuracy_ci
        out.append(Finding("estimated_quality", c.drifted, c.insufficient, (),
                           f"estimated accuracy {c.expected_accuracy:.3f} [{lo:.3f}, {hi:.3f}] without labels, "
                           f"reference {c.reference_accuracy:.3f}"))
    if r.quality is not None:
        q = r.quality
        out.append(Finding("labelled_quality", q.drifted, q.insufficient, (),
                           f"accuracy {q.accuracy:.3f} on {q.n} labels (reference {q.reference_accuracy:.3f}, "
                           f"p={q.p_value:.2g}), macro-F1 {q.macro_f1:.3f}"))
    if r.llm is not None:
        llm = r.llm
        out.append(Finding("llm_quality", llm.drifted, not llm.tests, (),
                           "; ".join(llm.findings) or "LLM outputs as in the reference"))
    if r.slo is not None:
        s = r.slo
        out.append(Finding("latency_slo", s.page, False, (),
                           f"error-budget burn {s.page_long:.1f}x (1 h) / {s.page_short:.1f}x (5 min)"))
    if r.slow_drift is not None:
        d = r.slow_drift
        out.append(Finding("slow_drift", d.drifted, False, (),
                           f"CUSUM {d.statistic:.2f} of threshold {d.threshold:.2f}"))
    return out
