"""Per-model detector state and the evaluation of one closed window against the model's profile.

:class:`WatchedModel` knows which columns a model's windows hold (from its profile: numeric and categorical
features, classes, calibration, embeddings, LLM distributions), builds the registered detectors the profile and
config give something to do (:data:`monitor.detection.REGISTRY`), and turns a
:class:`~monitor.windows.ClosedWindow` into a frozen :class:`WindowResult`. A detector that raises on a window is
isolated: the failure is recorded in the result (the pipeline counts and logs it) and every other detector's
result for that window still stands.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors import (
    BurnRateResult,
    CBPEResult,
    LLMQualityResult,
    PredictionDriftResult,
    QualityResult,
    WindowDriftResult,
)
from detectors.mmd import MMDResult
from monitor.config import DetectConfig, WindowConfig
from monitor.detection import (
    LLM_COLUMNS,
    REGISTRY,
    Detector,
    DetectorClass,
    Finding,
    Inputs,
    JoinedFeedback,
    LatencySummary,
    ModelContext,
    PeerWindow,
    SlowDriftResult,
    VariantComparisonResult,
)
from monitor.errors import EventError
from monitor.events import ColumnBatch, InferenceEvent
from monitor.profiles import Profile
from monitor.runs import run_url
from monitor.windows import ClosedWindow, Column, Layout, Values

log = logging.getLogger(__name__)

__all__ = ["DetectorFailure", "WatchedModel", "WindowResult", "plain"]


@dataclass(frozen=True)
class DetectorFailure:
    """A detector that raised on a window: its name and the exception, in one line."""

    detector: str
    error: str


@dataclass(frozen=True)
class WindowResult:
    """Everything the detectors said about one window; published to the results topic as JSON.

    ``results`` maps each detector that ran to its frozen result, ``findings`` holds what they said (one per
    detector that can find something), ``failures`` the detectors that raised on this window."""

    window_id: str
    model: str
    version: str
    index: int
    n_events: int
    first_time: float
    last_time: float
    closed_by: str
    training_run: str | None
    results: dict[str, Any]
    findings: tuple[Finding, ...] = ()
    failures: tuple[DetectorFailure, ...] = ()
    training_run_url: str = ""  # the run's page, when known without asking its tracker (monitor.runs.run_url)

    @property
    def drifted(self) -> bool:
        return any(f.drifted for f in self.findings)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return () if self.drift is None else tuple(self.drift.drifted_features)

    # Typed views of the built-in detectors' results (None when the detector did not run on this window).
    @property
    def drift(self) -> WindowDriftResult | None:
        return self.results.get("feature_drift")

    @property
    def prediction(self) -> PredictionDriftResult | None:
        return self.results.get("prediction_drift")

    @property
    def prediction_drifted(self) -> bool:
        return self.prediction is not None and self.prediction.drifted

    @property
    def embedding(self) -> MMDResult | None:
        return self.results.get("embedding_drift")

    @property
    def cbpe(self) -> CBPEResult | None:
        return self.results.get("estimated_quality")

    @property
    def quality(self) -> QualityResult | None:
        return self.results.get("labelled_quality")

    @property
    def llm(self) -> LLMQualityResult | None:
        return self.results.get("llm_quality")

    @property
    def latency(self) -> LatencySummary | None:
        return self.results.get("latency")

    @property
    def slo(self) -> BurnRateResult | None:
        return self.results.get("latency_slo")

    @property
    def slow_drift(self) -> SlowDriftResult | None:
        return self.results.get("slow_drift")

    @property
    def variant(self) -> VariantComparisonResult | None:
        """This window against the last window of the peer version (A/B, canary), when this version has one."""
        return self.results.get("variant_comparison")


class WatchedModel:
    """One model version: its profile, the layout of its windows, and its detectors (some with state across
    windows: the MMD reference tensor, CUSUM, SLO burn rates, the labels joined since the last window)."""

    def __init__(self, profile: Profile, detect: DetectConfig, window: WindowConfig,
                 training_run: str | None = None, registry: Sequence[DetectorClass] = REGISTRY,
                 peer: str | None = None) -> None:
        """``peer``: the version this one's windows are also compared with (``models[].variant``)."""
        self.profile = profile
        self.training_run = training_run or profile.training_run
        self.training_run_url = run_url(self.training_run, profile.training_run_info)
        self.names = profile.feature_names
        self._known = frozenset(self.names)
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
        context = ModelContext(profile=profile, detect=detect, window=window, peer=peer)
        self.detectors: list[Detector[Any]] = [d for d in (cls.build(context) for cls in registry) if d is not None]
        self._feedback = JoinedFeedback(limit=detect.quality.window)

    # -- events -> window values -----------------------------------------------------------------------
    def values(self, event: InferenceEvent) -> Values | EventError:
        """The event's window values in profile order, or why the profile cannot take it.

        A profile feature that is absent or ``null`` is missing (NaN): the statistics run per feature on the
        values present. A feature the profile does not know, or an event with none of the profile's features,
        is a mismatch (most likely events of another model). Not so for a generation: its features describe the
        prompt and completion texts (the sidecar's ``text_features``), so a profile built without them, or with
        some of them, takes the ones it knows and ignores the rest; and a generation's embedding of another width
        than the profile's (the sidecar's 256-dim text hash, where the profile holds a model's own prompt
        embeddings) is left out of the embedding test rather than rejected."""
        features = event.features
        if event.generation is not None:
            if not features.keys() <= self._known:
                features = {name: value for name, value in features.items() if name in self._known}
        elif not features.keys() <= self._known:
            extra = sorted(set(features) - self._known)[:5]
            return EventError("feature_mismatch", f"{event.key} event {event.request_id!r} has feature(s) "
                                                  f"{extra} the profile does not know")
        if self.names and not features and event.generation is None:
            return EventError("feature_mismatch", f"{event.key} event {event.request_id!r} has none of the "
                                                  f"profile's features {list(self.names[:5])}")
        prediction = self.class_index(event.prediction)
        if isinstance(prediction, EventError):
            return prediction
        latency = event.latency
        numeric = list(map(features.get, self.names))
        if None in numeric:  # absent or null: missing
            numeric = [math.nan if v is None else v for v in numeric]
        values: dict[str, object] = {
            "numeric": numeric,
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
            if len(event.embedding) == self.layout["embedding"].width:
                values["embedding"] = event.embedding
            elif event.generation is None:  # a generation's is another embedder's: left out (docstring)
                return EventError("invalid_value", f"{event.key} event {event.request_id!r} has an embedding of "
                                                   f"{len(event.embedding)} values, the profile "
                                                   f"{self.layout['embedding'].width}")
        if "llm" in self.layout and event.generation is not None:
            g, lat = event.generation, event.latency
            values["llm"] = (g.output_tokens, np.nan if g.mean_logprob is None else g.mean_logprob,
                             float(g.output_chars == 0), float(bool(g.refusal)),
                             np.nan if lat is None or lat.time_to_first_token_s is None else lat.time_to_first_token_s,
                             np.nan if lat is None or lat.time_per_output_token_s is None
                             else lat.time_per_output_token_s)
        return values  # type: ignore[return-value]

    def columns(self, batch: ColumnBatch) -> dict[str, np.ndarray] | None:
        """The window columns of a column batch's rows, equal to what :meth:`values` gives row by row (what a
        row does not carry keeps its column's fill); None when a row would be rejected, or the profile needs
        what column batches do not carry (categorical features): then the rows go one by one."""
        n = len(batch)
        names = batch.feature_names
        if "codes" in self.layout or (self.names and not names) or not self._known.issuperset(names):
            return None
        predictions = self._class_indices(batch.prediction, n)
        if predictions is None:
            return None
        numeric = np.array(batch.features, dtype=np.float64).reshape(n, len(names))  # null -> NaN
        if tuple(names) != self.names:  # another order, or some of the profile's features (the rest missing)
            ordered = np.full((n, len(self.names)), np.nan)
            ordered[:, [self.names.index(name) for name in names]] = numeric
            numeric = ordered
        columns = {"numeric": numeric, "prediction": predictions,
                   "latency": np.column_stack([np.array(batch.latency_total_s or [None] * n, dtype=np.float64),
                                               np.array(batch.latency_gpu_s or [None] * n, dtype=np.float64)])}
        if "probs" in self.layout and batch.probabilities is not None:
            probs = np.full((n, self.n_classes), np.nan)
            for i, row in enumerate(batch.probabilities):
                if row is not None:
                    if len(row) != self.n_classes:
                        return None
                    probs[i] = row
            columns["probs"] = probs
        return columns

    def _class_indices(self, labels: Sequence[int | str | None] | None, n: int) -> np.ndarray | None:
        """:meth:`class_index` of every label (-1: none), or None when one is not a class of the profile."""
        if labels is None or not self.label_index:
            return np.full(n, -1, dtype=np.int64)
        n_classes, by_name = self.n_classes, self.label_index
        indices = [-1 if label is None else label if isinstance(label, int) and 0 <= label < n_classes
                   else by_name.get(label, -2) if isinstance(label, str) else -2 for label in labels]
        return None if -2 in indices else np.array(indices, dtype=np.int64)

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
        self._feedback.add_labels([int(v) for v in y_true], [int(v) for v in y_pred])

    def joined_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the (true, predicted) classes joined since the last labelled-quality evaluation (k,)."""
        return (np.array(self._feedback.y_true, dtype=np.int64), np.array(self._feedback.y_pred, dtype=np.int64))

    def add_acceptances(self, accepted: Sequence[bool] | np.ndarray) -> None:
        """Accept/reject feedback joined to generations."""
        self._feedback.add_accepted([bool(v) for v in accepted])

    # -- state across windows ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What the detectors carry to the next window, by detector name (those that carry nothing left out)."""
        carried = {d.name: d.state() for d in self.detectors}
        return {name: value for name, value in carried.items() if value is not None}

    def restore(self, state: Mapping[str, Any]) -> list[str]:
        """Continue every detector from :meth:`state` of another process; returns the detectors whose state
        could not be taken (logged; they start afresh) — a detector no longer configured is ignored."""
        refused = []
        for detector in self.detectors:
            if detector.name not in state:
                continue
            try:
                detector.restore(state[detector.name])
            except Exception as exc:  # a state written by another version, or damaged: start afresh
                refused.append(detector.name)
                log.warning("detector %s of %s/%s starts afresh: its saved state was refused (%s: %s)",
                            detector.name, self.profile.model, self.profile.version, type(exc).__name__, exc)
        return refused

    # -- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, window: ClosedWindow, peer: PeerWindow | None = None) -> WindowResult:
        """Run every detector on the window; one that raises is recorded in ``failures`` and skipped. ``peer`` is
        the last closed window of the peer version, for a version compared with one."""
        results: dict[str, Any] = {}
        found: list[Finding] = []
        failures: list[DetectorFailure] = []
        inputs = Inputs(window=window, feedback=self._feedback, earlier=results, peer=peer)
        for detector in self.detectors:
            try:
                result = detector.evaluate(inputs)
                finding = None if result is None else detector.finding(result)
            except Exception as exc:  # isolation: one detector's failure must not cost the others' results
                failures.append(DetectorFailure(detector.name, f"{type(exc).__name__}: {exc}"[:500]))
                log.debug("detector %s failed on window %s", detector.name, window.window_id, exc_info=True)
                continue
            if result is not None:
                results[detector.name] = result
            if finding is not None:
                found.append(finding)
        name, version = window.key.rsplit("/", 1)
        return WindowResult(window_id=window.window_id, model=name, version=version, index=window.index,
                            n_events=window.n, first_time=window.first_time, last_time=window.last_time,
                            closed_by=window.reason, training_run=self.training_run, results=results,
                            findings=tuple(found), failures=tuple(failures), training_run_url=self.training_run_url)


def plain(value: object) -> object:
    """``enc_hook`` for msgspec: numpy scalars and arrays in a result, as JSON-able Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise NotImplementedError(f"cannot encode {type(value).__name__} in a window result")
