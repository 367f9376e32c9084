"""Per-model detector state and the evaluation of one closed window against the model's profile.

:class:`WatchedModel` knows which columns a model's windows hold (from its profile: numeric and categorical
features, classes, calibration, embeddings, LLM distributions) and owns the detectors with state across
windows (the MMD detector's reference tensor, CUSUM, SLO burn rates, the labels joined since the last
window). :func:`evaluate` turns a :class:`~monitor.windows.ClosedWindow` into a frozen :class:`WindowResult`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detectors import (
    CUSUM,
    SLO,
    BurnRateMonitor,
    BurnRateResult,
    CBPEResult,
    LatencyHistogram,
    LLMQualityResult,
    PredictionDriftResult,
    QualityResult,
    WindowDriftResult,
    cbpe,
    labelled_quality,
    llm_quality,
    prediction_drift,
    window_drift,
    z_from_p,
)
from detectors.mmd import MMDDetector, MMDResult
from monitor.config import Config
from monitor.errors import EventError
from monitor.events import InferenceEvent
from monitor.profiles import Profile
from monitor.windows import ClosedWindow, Column, Layout, Values

log = logging.getLogger(__name__)

LLM_COLUMNS = ("output_tokens", "mean_logprob", "empty", "refusal", "ttft_s", "tpot_s")


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


@dataclass(frozen=True)
class SlowDrift:
    """CUSUM over windows of the feature-drift evidence."""

    statistic: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class WindowResult:
    """Everything the detectors said about one window; published to the results topic as JSON."""

    window_id: str
    model: str
    version: str
    index: int
    n_events: int
    first_time: float
    last_time: float
    closed_by: str
    training_run: str | None
    drift: WindowDriftResult | None = None
    prediction: PredictionDriftResult | None = None
    embedding: MMDResult | None = None
    cbpe: CBPEResult | None = None
    quality: QualityResult | None = None
    llm: LLMQualityResult | None = None
    latency: LatencySummary | None = None
    slo: BurnRateResult | None = None
    slow_drift: SlowDrift | None = None

    @property
    def prediction_drifted(self) -> bool:
        return self.prediction is not None and self.prediction.drifted

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return () if self.drift is None else tuple(self.drift.drifted_features)


@dataclass
class _Labels:
    """Joined labels waiting for the next labelled-quality evaluation; the newest ``limit`` are kept."""

    limit: int
    y_true: list[int] = field(default_factory=list)
    y_pred: list[int] = field(default_factory=list)
    accepted: list[bool] = field(default_factory=list)

    def add(self, y_true: Sequence[int], y_pred: Sequence[int]) -> None:
        self.y_true.extend(y_true)
        self.y_pred.extend(y_pred)
        del self.y_true[: -self.limit], self.y_pred[: -self.limit]

    def add_accepted(self, accepted: Sequence[bool]) -> None:
        self.accepted.extend(accepted)
        del self.accepted[: -self.limit]


class WatchedModel:
    """One model version: its profile, the layout of its windows, and detectors with cross-window state."""

    def __init__(self, profile: Profile, config: Config, training_run: str | None = None) -> None:
        self.profile = profile
        self.config = config
        self.training_run = training_run or profile.training_run
        self.names = profile.feature_names
        self.categories = profile.categorical_names
        self.label_index = {label: i for i, label in enumerate(profile.class_labels)}
        self.n_classes = len(profile.class_labels)
        self._level_codes = [{level: i for i, level in enumerate(levels)}
                             for levels in (profile.categorical.levels if profile.categorical else ())]
        layout: dict[str, Column] = {"numeric": Column(len(self.names)), "prediction": Column(None, np.int64, -1),
                                     "latency": Column(2)}
        if self.categories:
            layout["codes"] = Column(len(self.categories), np.int64, -1)
        if profile.calibrator is not None and self.n_classes:
            layout["probs"] = Column(self.n_classes)
        if profile.embeddings is not None:
            layout["embedding"] = Column(int(profile.embeddings.shape[1]))
        if profile.llm is not None:
            layout["llm"] = Column(len(LLM_COLUMNS))
        self.layout: Layout = layout
        detect = config.detect
        self._mmd: MMDDetector | None = None
        self._mmd_failed = False
        self._cusum = CUSUM(k=detect.slow_drift.k, false_alarm_rate=detect.slow_drift.false_alarm_rate) \
            if detect.slow_drift.enabled and self.names else None
        self._burn = BurnRateMonitor(SLO(detect.slo.threshold_s, detect.slo.objective)) if detect.slo else None
        self._labels = _Labels(limit=detect.quality.window)

    # -- events -> window values -----------------------------------------------------------------------
    def values(self, event: InferenceEvent) -> Values | EventError:
        """The event's window values in profile order, or why the profile cannot take it."""
        missing = [name for name in self.names if name not in event.features]
        if missing:
            return EventError("feature_mismatch", f"{event.key} event {event.request_id!r} lacks feature(s) "
                                                  f"{missing[:5]} of the profile")
        if len(event.features) != len(self.names):
            extra = sorted(set(event.features) - set(self.names))[:5]
            return EventError("feature_mismatch", f"{event.key} event {event.request_id!r} has feature(s) {extra} "
                                                  f"the profile does not know")
        prediction = self.class_index(event.prediction)
        if isinstance(prediction, EventError):
            return prediction
        latency = event.latency
        values: dict[str, object] = {
            "numeric": [event.features[name] for name in self.names],
            "prediction": prediction,
            "latency": None if latency is None else (latency.total_s, np.nan if latency.gpu_s is None
                                                     else latency.gpu_s),
        }
        if self.categories:
            missing_cats = [c for c in self.categories if c not in event.categories]
            if missing_cats:
                return EventError("feature_mismatch", f"{event.key} event {event.request_id!r} lacks categorical "
                                                      f"feature(s) {missing_cats[:5]}")
            # A level the reference never saw is code -1: the detectors pool it into an "other" bin.
            values["codes"] = [codes.get(event.categories[c], -1)
                               for c, codes in zip(self.categories, self._level_codes, strict=True)]
        if "probs" in self.layout and event.probabilities is not None:
            if len(event.probabilities) != self.n_classes:
                return EventError("invalid_value", f"{event.key} event {event.request_id!r} has "
                                                   f"{len(event.probabilities)} probabilities, the profile "
                                                   f"{self.n_classes} classes")
            values["probs"] = event.probabilities
        if "embedding" in self.layout and event.embedding is not None:
            if len(event.embedding) != self.layout["embedding"].width:
                return EventError("invalid_value", f"{event.key} event {event.request_id!r} has an embedding of "
                                                   f"{len(event.embedding)} values, the profile "
                                                   f"{self.layout['embedding'].width}")
            values["embedding"] = event.embedding
        if "llm" in self.layout and event.generation is not None:
            g, lat = event.generation, event.latency
            values["llm"] = (g.output_tokens, np.nan if g.mean_logprob is None else g.mean_logprob,
                             float(g.output_chars == 0), float(bool(g.refusal)),
                             np.nan if lat is None or lat.time_to_first_token_s is None else lat.time_to_first_token_s,
                             np.nan if lat is None or lat.time_per_output_token_s is None
                             else lat.time_per_output_token_s)
        return values  # type: ignore[return-value]

    def class_index(self, label: int | str | None) -> int | EventError | None:
        if label is None or not self.label_index:
            return None
        index = self.label_index.get(label) if isinstance(label, str) else \
            label if 0 <= label < self.n_classes else None
        if index is None:
            return EventError("invalid_value", f"class {label!r} is not a class of the profile")
        return index

    # -- feedback ----------------------------------------------------------------------------------------
    def add_labels(self, y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> None:
        """True and predicted classes joined from feedback, for the next labelled-quality evaluation."""
        self._labels.add([int(v) for v in y_true], [int(v) for v in y_pred])

    def add_acceptances(self, accepted: Sequence[bool] | np.ndarray) -> None:
        """Accept/reject feedback joined to generations."""
        self._labels.add_accepted([bool(v) for v in accepted])

    # -- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, window: ClosedWindow) -> WindowResult:
        cfg, p = self.config.detect, self.profile
        min_samples = self.config.window.min_samples
        name, version = window.key.rsplit("/", 1)
        drift = None
        if p.reference is not None:
            drift = window_drift(p.reference, window.features, categorical=p.categorical,
                                 codes=window.columns.get("codes"), alpha=cfg.alpha, correction=cfg.correction,
                                 min_effect=cfg.min_effect, min_effect_categorical=cfg.min_effect_categorical,
                                 min_samples=min_samples)
        prediction = None
        if p.reference is not None and p.reference.class_priors is not None and window.predictions.size:
            prediction = prediction_drift(p.reference, window.predictions, alpha=cfg.alpha,
                                          min_effect=cfg.min_effect_classes, min_samples=min_samples)
        probs = window.present("probs")
        estimated = None
        if probs is not None and p.calibrator is not None and p.reference_accuracy is not None:
            # seeded by the window id: a replayed window gets the same bootstrap interval
            estimated = cbpe(probs, p.calibrator, p.reference_accuracy, alpha=cfg.alpha,
                             min_effect=cfg.min_effect_quality, min_samples=min_samples,
                             seed=zlib.crc32(window.window_id.encode()))
        return WindowResult(
            window_id=window.window_id, model=name, version=version, index=window.index, n_events=window.n,
            first_time=window.first_time, last_time=window.last_time, closed_by=window.reason,
            training_run=self.training_run, drift=drift, prediction=prediction,
            embedding=self._embedding(window), cbpe=estimated, quality=self._quality(), llm=self._llm(window),
            latency=_latency(window), slo=self._slo(window), slow_drift=self._slow(drift))

    def _embedding(self, window: ClosedWindow) -> MMDResult | None:
        current = window.present("embedding")
        if current is None or self.profile.embeddings is None or self._mmd_failed:
            return None
        cfg = self.config.detect.embedding
        if self._mmd is None:
            try:
                self._mmd = MMDDetector(self.profile.embeddings, bandwidth=self.profile.embedding_bandwidth,
                                        permutations=cfg.permutations, alpha=self.config.detect.alpha,
                                        linear_above=cfg.linear_above, min_samples=self.config.window.min_samples)
            except ImportError as exc:  # torch is an optional extra: say so once, keep the other detectors
                self._mmd_failed = True
                log.error("embedding drift disabled for %s/%s: %s", self.profile.model, self.profile.version, exc)
                return None
        return self._mmd.test(current[: cfg.max_rows])

    def _quality(self) -> QualityResult | None:
        labels, cfg = self._labels, self.config.detect
        if len(labels.y_true) < self.config.window.min_samples or self.profile.reference_accuracy is None:
            return None
        result = labelled_quality(np.array(labels.y_true), np.array(labels.y_pred), self.n_classes,
                                  self.profile.reference_accuracy, alpha=cfg.alpha,
                                  min_effect=cfg.min_effect_quality, min_samples=self.config.window.min_samples)
        labels.y_true.clear()
        labels.y_pred.clear()
        return result

    def _llm(self, window: ClosedWindow) -> LLMQualityResult | None:
        rows = window.present("llm")
        if rows is None or self.profile.llm is None:
            return None
        accepted = np.array(self._labels.accepted, dtype=bool) if self._labels.accepted else None
        self._labels.accepted.clear()
        cfg = self.config.detect
        return llm_quality(self.profile.llm, output_tokens=rows[:, 0], mean_logprob=rows[:, 1],
                           empty=rows[:, 2] > 0, refusal=rows[:, 3] > 0, ttft_s=rows[:, 4], tpot_s=rows[:, 5],
                           accepted=accepted, alpha=cfg.alpha, min_samples=self.config.window.min_samples,
                           min_effect=cfg.min_effect_llm)

    def _slo(self, window: ClosedWindow) -> BurnRateResult | None:
        if self._burn is None:
            return None
        total = window.columns["latency"][:, 0]
        total = total[~np.isnan(total)]
        if total.size:
            self._burn.observe(window.last_time, total)
        return self._burn.evaluate(window.last_time)

    def _slow(self, drift: WindowDriftResult | None) -> SlowDrift | None:
        """Accumulate evidence across windows; report only what no single window showed."""
        if self._cusum is None or drift is None or drift.numeric.insufficient:
            return None
        # The window's evidence: the smallest adjusted p-value across its features, as a N(0,1) score.
        p_min = min((f.p_adjusted for f in drift.numeric.features), default=1.0)
        alarm = self._cusum.update(float(z_from_p(p_min)))
        statistic = self._cusum.statistic
        if alarm or drift.drifted:  # evidence used up: a window-level finding already reports this change
            self._cusum.reset()
        return SlowDrift(statistic=float(statistic), threshold=float(self._cusum.threshold),
                         drifted=alarm and not drift.drifted)


def _latency(window: ClosedWindow) -> LatencySummary | None:
    latency = window.columns["latency"]
    total, gpu = latency[:, 0], latency[:, 1]
    total, gpu = total[~np.isnan(total)], gpu[~np.isnan(gpu)]
    if not total.size:
        return None
    hist = LatencyHistogram()
    hist.add(total)
    p50, p95, p99 = (float(q) for q in hist.quantile(np.array([0.5, 0.95, 0.99])))
    if not gpu.size:
        return LatencySummary(n=int(total.size), p50=p50, p95=p95, p99=p99)
    gpu_hist = LatencyHistogram()
    gpu_hist.add(gpu)
    g50, g95, g99 = (float(q) for q in gpu_hist.quantile(np.array([0.5, 0.95, 0.99])))
    return LatencySummary(n=int(total.size), p50=p50, p95=p95, p99=p99, gpu_n=int(gpu.size), gpu_p50=g50,
                          gpu_p95=g95, gpu_p99=g99)
