"""The detection loop: consume records, validate, window, detect, emit results and alerts, commit.

Everything it talks to is passed in (consumer, producer, metrics, alert channels, clock), so the same loop
runs over Kafka and over the in-process bus, and tests drive it against both.

Ordering of effects per closed window: the result is produced to the results topic, dead letters and
results are flushed, and only then are offsets committed, up to (not past) the first event of any window
still open. A crash therefore replays the open windows, and a replayed window has the same id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import msgspec

from detectors import FeatureDriftResult, PredictionDriftResult, feature_drift, prediction_drift
from monitor.alerts import Alert, AlertRules, Channel, Observation
from monitor.config import Config
from monitor.errors import EventError
from monitor.events import FeedbackEvent, InferenceEvent, decode_record_lenient, encode_event
from monitor.metrics import DaemonMetrics
from monitor.profiles import Profile
from monitor.transport import Consumer, Message, Producer
from monitor.windows import ClosedWindow, Resume, TopicPartition, Windows

log = logging.getLogger(__name__)


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
    features: FeatureDriftResult
    prediction: PredictionDriftResult | None
    training_run: str | None

    @property
    def prediction_drifted(self) -> bool:
        return self.prediction is not None and self.prediction.drifted

    @property
    def drifted(self) -> bool:
        return self.features.drifted or self.prediction_drifted


class RateLimitedLog:
    """Logs at most one line per ``key`` every ``interval_s`` and says how many it held back."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str) -> None:
        now = self._clock()
        if now - self._last.get(key, -float("inf")) < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        self._logger.warning("%s%s", message, f" ({held} more like it suppressed)" if held else "")


class _Model:
    """A watched model version: its profile and the lookup from prediction labels to class indices."""

    def __init__(self, profile: Profile, training_run: str | None) -> None:
        self.profile = profile
        self.training_run = training_run or profile.training_run
        self.names = profile.feature_names
        self.label_index = {label: i for i, label in enumerate(profile.reference.class_labels)}


class Pipeline:
    def __init__(self, config: Config, profiles: Mapping[str, Profile], consumer: Consumer, producer: Producer,
                 metrics: DaemonMetrics, channels: Sequence[Channel] = (),
                 on_result: Callable[[WindowResult], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._models = {m.key: _Model(profiles[m.key], m.training_run) for m in config.models}
        self._consumer = consumer
        self._producer = producer
        self._metrics = metrics
        self._channels = list(channels)
        self._on_result = on_result
        self._clock = clock
        self._windows = Windows(config.window.size, config.window.max_seconds, config.window.min_samples)
        self._rules = AlertRules(config.alerts.consecutive, config.alerts.resolve_after)
        self._consumed: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, Resume] = {}
        self._resumed: set[TopicPartition] = set()
        self._bad = RateLimitedLog(log)
        self._last_commit = clock()
        self.messages = 0

    # -- the loop --------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_messages: int | None = None, poll_timeout_s: float = 0.2) -> None:
        """Process until ``stop`` is set (or ``max_messages`` records), then commit what is safe."""
        while not stop.is_set() and (max_messages is None or self.messages < max_messages):
            self.step(poll_timeout_s)
        self.commit()

    def step(self, poll_timeout_s: float = 0.2) -> int:
        """One poll: handle its records, close due windows, commit when a window closed or every 5 s."""
        messages = self._consumer.poll(poll_timeout_s)
        closed = 0
        for message in messages:
            closed += self._handle(message)
        for window in self._windows.expired(self._clock()):
            self._evaluate(window)
            closed += 1
        self._metrics.window_events.set(self._windows.open_events)
        if closed or self._clock() - self._last_commit >= 5.0:
            self.commit()
        return len(messages)

    def commit(self) -> None:
        """Flush produced results and dead letters, then commit offsets that no open window needs.

        When an open window starts inside a batch record, the commit points at that record and its metadata
        says how many of its events belong to closed windows (``skip=N``), so a replay skips exactly those."""
        safe = {tp: pos for tp, pos in self._windows.safe_positions(self._consumed).items()
                if self._committed.get(tp) != pos}
        self._last_commit = self._clock()
        if not safe:
            return
        self._producer.flush()
        self._consumer.commit({tp: offset for tp, (offset, _) in safe.items()},
                              {tp: f"skip={skip}" for tp, (_, skip) in safe.items() if skip})
        self._committed.update(safe)
        self._metrics.commits.inc()

    # -- records ---------------------------------------------------------------------------------------
    def _handle(self, message: Message) -> int:
        self.messages += 1
        self._metrics.records_consumed.inc()
        tp = (message.topic, message.partition)
        skip = self._skip_on_resume(tp, message.offset)
        self._consumed[tp] = message.offset + 1
        decoded = decode_record_lenient(message.value)
        if not skip:  # a resumed record's invalid parts were dead-lettered before the restart
            for error in decoded.errors:
                self._reject(message, error)
        closed = 0
        for index, event in enumerate(decoded.events):
            if index < skip:
                continue
            model = self._models.get(event.key)
            if model is None:
                self._reject(message, EventError("unknown_model", f"no profile is configured for {event.key!r}",
                                                 encode_event(event) if decoded.batch else None))
            elif isinstance(event, FeedbackEvent):
                self._metrics.feedback_consumed.labels(model=event.model, version=event.version).inc()
            else:
                closed += self._add(message, index, model, event, decoded.batch)
        return closed

    def _skip_on_resume(self, tp: TopicPartition, offset: int) -> int:
        """Events to skip in the first record read from a partition: those a committed ``skip=N`` covers."""
        if tp in self._resumed:
            return 0
        self._resumed.add(tp)
        committed = self._consumer.committed(*tp)
        note = committed[1].removeprefix("skip=") if committed is not None and committed[0] == offset else ""
        if not note.isdigit():
            return 0
        skip = int(note)
        log.info("resuming %s-%d at offset %d, after its first %d events (already in closed windows)",
                 tp[0], tp[1], offset, skip)
        return skip

    def _add(self, message: Message, index: int, model: _Model, event: InferenceEvent, batch: bool) -> int:
        checked = _check_against_profile(model, event)
        if isinstance(checked, EventError):
            checked.part = encode_event(event) if batch else None
            self._reject(message, checked)
            return 0
        row, prediction = checked
        self._metrics.events_consumed.labels(model=event.model, version=event.version).inc()
        window = self._windows.add(event.key, len(model.names), row, prediction,
                                   (message.topic, message.partition, message.offset, index), event.time,
                                   self._clock())
        if window is None:
            return 0
        self._evaluate(window)
        return 1

    def _reject(self, message: Message, error: EventError) -> None:
        self._metrics.events_rejected.labels(reason=error.reason).inc()
        self._bad.warning(error.reason, f"rejected record {message.topic}-{message.partition}:{message.offset}: "
                                        f"{error}")
        headers = [*message.headers, ("inferwatch_reason", error.reason.encode()),
                   ("inferwatch_detail", str(error.detail)[:1000].encode()),
                   ("inferwatch_origin", f"{message.topic}-{message.partition}:{message.offset}".encode())]
        value = message.value if error.part is None else error.part
        self._producer.send(self.config.topics.deadletter, value, message.key, headers)
        self._metrics.deadletters.inc()

    # -- windows ---------------------------------------------------------------------------------------
    def _evaluate(self, window: ClosedWindow) -> None:
        model = self._models[window.key]
        detect = self.config.detect
        started = time.perf_counter()
        features = feature_drift(model.profile.reference, window.features, alpha=detect.alpha,
                                 correction=detect.correction, min_effect=detect.min_effect,
                                 min_samples=self.config.window.min_samples)
        prediction = None
        if model.profile.reference.class_priors is not None and window.predictions.size:
            prediction = prediction_drift(model.profile.reference, window.predictions, alpha=detect.alpha,
                                          min_effect=detect.min_effect, min_samples=self.config.window.min_samples)
        self._metrics.window_seconds.observe(time.perf_counter() - started)
        name, version = window.key.rsplit("/", 1)
        result = WindowResult(window_id=window.window_id, model=name, version=version, index=window.index,
                              n_events=window.n, first_time=window.first_time, last_time=window.last_time,
                              closed_by=window.reason, features=features, prediction=prediction,
                              training_run=model.training_run)
        self._export(result)
        self._producer.send(self.config.topics.results, msgspec.json.encode(result), window.key.encode(),
                            [("content-type", b"application/json")])
        if self._on_result is not None:
            self._on_result(result)
        for alert in self._alerts(result):
            for channel in self._channels:
                channel.send(alert)

    def _export(self, r: WindowResult) -> None:
        m, mv = self._metrics, {"model": r.model, "version": r.version}
        m.windows_closed.labels(**mv, reason=r.closed_by).inc()
        if not r.features.insufficient:
            for f in r.features.features:
                m.drift_ks.labels(**mv, feature=f.name).set(f.ks_statistic)
                m.drift_p_value.labels(**mv, feature=f.name).set(f.p_adjusted)
                m.drift_psi.labels(**mv, feature=f.name).set(f.psi)
            m.drift_detected.labels(**mv, detector="feature_drift").set(int(r.features.drifted))
        if r.prediction is not None and not r.prediction.insufficient:
            m.prediction_chi2.labels(**mv).set(r.prediction.statistic)
            m.prediction_p_value.labels(**mv).set(r.prediction.p_value)
            m.drift_detected.labels(**mv, detector="prediction_drift").set(int(r.prediction.drifted))
        log.info("window %s #%d: %d events, %s", r.window_id, r.index, r.n_events, _describe(r))

    def _alerts(self, r: WindowResult) -> list[Alert]:
        observe = partial(Observation, model=r.model, version=r.version, window=r.index, window_id=r.window_id,
                          window_start=r.first_time, window_end=r.last_time, training_run=r.training_run)
        observations = [observe(detector="feature_drift", drifted=r.features.drifted,
                                insufficient=r.features.insufficient, features=r.features.drifted_features,
                                summary=_describe_features(r.features))]
        if r.prediction is not None:
            observations.append(observe(
                detector="prediction_drift", drifted=r.prediction.drifted, insufficient=r.prediction.insufficient,
                summary=f"predicted-class mix chi2={r.prediction.statistic:.1f} p={r.prediction.p_value:.2g} "
                        f"JS={r.prediction.js_distance:.3f}"))
        alerts = [a for obs in observations if (a := self._rules.observe(obs)) is not None]
        for a in alerts:
            log.warning("alert %s: %s %s/%s window #%d: %s", a.status.upper(), a.detector, a.model, a.version,
                        a.window, a.summary)
        return alerts


def _check_against_profile(model: _Model, event: InferenceEvent) -> tuple[list[float], int | None] | EventError:
    """The event's feature row in profile order and its class index, or why the profile cannot take it."""
    missing = [name for name in model.names if name not in event.features]
    if missing:
        return EventError("feature_mismatch", f"{event.key} event {event.request_id!r} lacks feature(s) "
                                              f"{missing[:5]} of the profile")
    if len(event.features) != len(model.names):
        extra = sorted(set(event.features) - set(model.names))[:5]
        return EventError("feature_mismatch", f"{event.key} event {event.request_id!r} has feature(s) {extra} "
                                              f"the profile does not know")
    row = [event.features[name] for name in model.names]
    p = event.prediction
    if p is None or not model.label_index:
        return row, None
    index = model.label_index.get(p) if isinstance(p, str) else p if 0 <= p < len(model.label_index) else None
    if index is None:
        return EventError("invalid_value", f"{event.key} prediction {p!r} is not a class of the profile")
    return row, index


def _describe_features(f: FeatureDriftResult) -> str:
    if f.insufficient:
        return f"insufficient data ({f.n_current} usable rows)"
    if not f.drifted:
        worst = max(f.features, key=lambda x: x.ks_statistic, default=None)
        return "no feature drifted" + (f" (largest KS {worst.ks_statistic:.3f} on {worst.name})" if worst else "")
    parts = [f"{x.name} (KS={x.ks_statistic:.3f}, p={x.p_adjusted:.2g}, PSI={x.psi:.2f})"
             for x in f.features if x.drifted]
    return "drift in " + ", ".join(parts)


def _describe(r: WindowResult) -> str:
    text = _describe_features(r.features)
    if r.prediction is not None and r.prediction.drifted:
        text += f"; predicted-class mix shifted (p={r.prediction.p_value:.2g})"
    return text

