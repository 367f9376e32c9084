"""The detection loop: consume records, validate, window, detect, emit results and alerts, commit.

Everything it talks to is passed in (consumer, producer, metrics, alert channels, clock), so the same loop
runs over Kafka and over the in-process bus, and tests drive it against both.

Ordering of effects per closed window: the result is produced to the results topic, dead letters and
results are flushed, and only then are offsets committed, up to (not past) the first event of any window
still open. A crash therefore replays the open windows, and a replayed window has the same id.

Exactly once, across restarts and rebalances (on Kafka, where ``results_tail`` reads the results topic back):
each result record carries, in its ``inferwatch-state`` header, what the model's detectors carry to the next
window (a CUSUM, SLO burn-rate buckets), the window's index and the position of its last event in each
partition. On every assignment of partitions the pipeline reads the tail of the results topic: a model version
whose last published window is newer than what this process holds continues from that record (index and
detector state); the events of a model version read again up to the last event of its last published window
are skipped (a commit covers all the models of a partition, so it can lie before windows another model closed);
and a window read again whose id was published already is neither evaluated nor published again (counted in
``inferwatch_windows_replayed_total``). Commits also happen between the records of one poll, at most every
:data:`COMMIT_EVERY_S` once a window closed, so that a crash replays little.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import msgspec
import numpy as np
from prometheus_client import CollectorRegistry

from monitor.alerts import AlertedWindow, Alerting, AlertMetrics, AlertRules, Channel, Observation
from monitor.config import Config
from monitor.detection import REGISTRY, DetectorClass
from monitor.errors import CommitRejected, EventError, TransportError
from monitor.evaluation import WatchedModel, WindowResult, plain
from monitor.events import ColumnBatch, Decoded, FeedbackEvent, InferenceEvent, decode_record_lenient, encode_event
from monitor.feedback import FeedbackJoin
from monitor.metrics import DaemonMetrics, EventTally, export_lag, export_result, set_model_info
from monitor.profiles import Profile
from monitor.transport import Consumer, Message, Producer
from monitor.variants import MISMATCH_REASONS, VariantWatch
from monitor.windows import ClosedWindow, PublishedEnds, Resume, TopicPartition, Windows

log = logging.getLogger(__name__)

__all__ = ["COMMIT_EVERY_S", "STATE_HEADER", "Pipeline", "RateLimitedLog", "WindowResult"]

#: Least time between two commits made inside one poll's records (a commit also follows every poll that closed
#: a window, and every 5 s).
COMMIT_EVERY_S = 0.25
#: The results record header that carries a model's state after the window (JSON: index, detectors).
STATE_HEADER = "inferwatch-state"


class _Published(msgspec.Struct):
    """What a results record says about its window (the rest of the result is not decoded)."""

    window_id: str
    model: str
    version: str
    index: int


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


class Pipeline:
    def __init__(self, config: Config, profiles: Mapping[str, Profile], consumer: Consumer, producer: Producer,
                 metrics: DaemonMetrics, channels: Sequence[Channel] = (),
                 on_result: Callable[[WindowResult], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, registry: Sequence[DetectorClass] = REGISTRY,
                 alerting: Alerting | None = None,
                 results_tail: Callable[[], Sequence[Message]] | None = None) -> None:
        """``alerting`` (rules, state and channels, see :func:`monitor.wiring.build_alerting`) by default keeps
        its state in memory and delivers to ``channels``. ``results_tail`` reads the last records of every
        partition of the results topic (see the module docstring); None: no restart picks up where this one
        stopped (the embedded bus)."""
        self.config = config
        self._names = {m.name for m in config.models}
        self._variants = VariantWatch(config.models, {m.key: (profiles[m.key].feature_names,
                                                              profiles[m.key].class_labels) for m in config.models},
                                      config.detect.variants.max_rows)
        self._models = {m.key: WatchedModel(profiles[m.key], config.detect, config.window, m.training_run, registry,
                                            peer=self._variants.peer_version(m.key))
                        for m in config.models}
        for m in config.models:
            watched = self._models[m.key]
            set_model_info(metrics, m.name, m.version, watched.training_run, watched.profile.llm is not None,
                           m.variant)
            for reason in MISMATCH_REASONS if m.variant is not None else ():
                metrics.variant_mismatches.labels(model=m.name, version=m.version, reason=reason)
        self._consumer = consumer
        self._producer = producer
        consumer.on_revoke(self._revoked)
        self._metrics = metrics
        self._alerting = alerting if alerting is not None else Alerting(
            AlertRules(config.alerts), channels, AlertMetrics(CollectorRegistry()),
            models=[(m.name, m.version) for m in config.models], clock=clock)
        self._on_result = on_result
        self._clock = clock
        w = config.window
        self._windows = Windows(w.size, w.max_seconds, w.min_samples,
                                sizes={m.key: m.window_size for m in config.models if m.window_size is not None},
                                duration_s=w.duration_s, lateness_s=w.lateness_s, late=w.late_events,
                                max_rows=w.max_rows)
        self._dropped_exported: dict[tuple[str, str], int] = {}
        self._dropped_on_revoke = False  # open windows dropped at a revocation: read their events again
        quality = config.detect.quality
        self._joins = FeedbackJoin(quality)
        self._join_stats = self._joins.stats
        self._tally = EventTally(metrics)  # the events of the poll being handled
        self._latest_time = 0.0
        self._consumed: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, Resume] = {}
        self._resumed: set[TopicPartition] = set()
        self._assignments = 0
        self._lagging: set[TopicPartition] = set()  # partitions with an exported lag series
        self._bad = RateLimitedLog(log)
        self._last_commit = clock()
        self._results_tail = results_tail
        self._unflushed = False  # results sent since the last flush
        self._published: dict[str, int] = {}  # ids of windows read back from the results topic -> index
        # (model/version, partition) -> where its published windows ended there, while replaying
        self._done_until: dict[tuple[str, TopicPartition], PublishedEnds] = {}
        self._skipped: dict[tuple[str, TopicPartition], int] = {}
        self.messages = 0

    @property
    def assigned(self) -> bool:
        """Whether the consumer has joined its group and been given its partitions (on the embedded bus: once
        it polled); ``/readyz`` answers 503 before."""
        return self._assignments > 0

    # -- the loop --------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_messages: int | None = None, poll_timeout_s: float = 0.2) -> None:
        """Process until ``stop`` is set (or ``max_messages`` records), then commit what is safe.

        On the embedded bus nothing would replay the events of open windows after the process ends, so when
        ``stop`` is set their events are evaluated as partial windows (closed by ``"shutdown"``); on Kafka
        they stay uncommitted and the next run replays them under the same window ids."""
        while not stop.is_set() and (max_messages is None or self.messages < max_messages):
            self.step(poll_timeout_s)
        if stop.is_set() and self.config.kafka is None:
            self.close_open_windows()
        self.commit()

    def close_open_windows(self) -> int:
        """Evaluate every open window now, as it is (the embedded bus at shutdown); returns how many."""
        windows = self._windows.close_all("shutdown")
        for window in windows:
            log.info("shutdown: evaluating open window %s with %d events", window.window_id, window.n)
            self._evaluate(window)
        return len(windows)

    def step(self, poll_timeout_s: float = 0.2) -> int:
        """One poll: handle its records, close due windows, commit when a window closed or every 5 s."""
        messages = self._consumer.poll(poll_timeout_s)
        export_lag(self._metrics, self._consumer.lag(), self._lagging)
        if (self._consumer.rebalances != self._assignments or self._dropped_on_revoke) and self._reassigned():
            messages = []  # read again from the last commit, after the rewind
        closed = 0
        for message in messages:
            closing = self._handle(message)
            closed += closing
            if closing and self.config.kafka is not None and self._clock() - self._last_commit >= COMMIT_EVERY_S:
                self.commit()  # between the records of a poll: a crash replays less
        self._metrics.records_consumed.inc(len(messages))
        self._tally.flush()  # the poll's events, in the per-event metrics (once per series, not per event)
        for window in self._windows.expired(self._clock()):
            self._evaluate(window)
            closed += 1
        self._metrics.window_events.set(self._windows.open_events)
        self._export_dropped()
        self._alerting.tick()
        self._joins.expire(self._latest_time)  # feedback TTL runs on event time
        self._export_joins()
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
        if not safe and not self._unflushed:
            return
        self._producer.flush()  # results published: the next owner reads them back (even with no offset to move)
        self._unflushed = False
        if not safe:
            return
        try:
            self._consumer.commit({tp: offset for tp, (offset, _) in safe.items()},
                                  {tp: f"skip={skip}" for tp, (_, skip) in safe.items() if skip})
        except CommitRejected as exc:
            self._metrics.commits_rejected.inc()
            log.warning("offsets not committed, the group is rebalancing (the next poll settles it and reads "
                        "from the last commit again): %s", exc)
            return
        self._committed.update(safe)
        self._metrics.commits.inc()

    def _revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """A rebalance is about to take ``partitions`` (called from inside the poll, before another member is
        given them): publish what closed and commit what is safe while this member still may, so that the next
        owner reads as little again as it can; then drop every open window (nothing partial is published). The
        assignment that follows reads from those commits again (:meth:`_reassigned`)."""
        log.info("partitions revoked: %s; committing what is safe", ", ".join(f"{t}-{p}" for t, p in partitions))
        try:
            self.commit()
        except TransportError as exc:  # the next owner reads from the last commit that went through
            log.warning("offsets not committed before the rebalance: %s", exc)
        dropped = self._windows.drop_all()
        if dropped:
            self._dropped_on_revoke = True
            log.info("dropped %d event(s) of open windows, to be read again from the commit", dropped)

    def _reassigned(self) -> bool:
        """The consumer was (re)assigned partitions. If this pipeline held anything uncommitted (open windows,
        records read past the last commit), drop it and read every partition it owns again from the last commit,
        so that nothing is doubled or lost; returns whether it did. Holding nothing (at start), it goes on."""
        first = self._assignments == 0
        self._assignments = self._consumer.rebalances
        if not first:
            self._metrics.rebalances.inc()
        held = self._windows.open_events > 0 or self._dropped_on_revoke or any(
            self._committed.get(tp, (None, 0))[0] != offset for tp, offset in self._consumed.items())
        self._dropped_on_revoke = False
        self._resumed.clear()
        if held:
            self._producer.flush()  # this process's results are on the topic before it is read back
        self._resume_from_results()
        if not held:
            return False
        self._consumer.rewind()
        dropped = self._windows.drop_all()
        self._consumed.clear()
        self._committed.clear()
        self._metrics.window_events.set(0)
        log.warning("consumer group rebalanced: reading every assigned partition from its last commit again "
                    "(%d uncommitted event(s) in open windows dropped, to be read again)", dropped)
        return True

    def _resume_from_results(self) -> None:
        """Read the results topic's tail: continue every model version from its last published window where
        that is newer than what this process holds, and remember which window ids were published."""
        if self._results_tail is None:
            return
        latest: dict[str, tuple[int, dict[str, object]]] = {}
        published: dict[str, int] = {}
        ends_by: dict[tuple[str, TopicPartition], list[tuple[int, Resume]]] = {}
        for record in self._results_tail():
            try:
                p = msgspec.json.decode(record.value, type=_Published)
                header = next((v for k, v in record.headers if k == STATE_HEADER), None)
                state = {} if header is None else json.loads(header)
            except (msgspec.DecodeError, ValueError) as exc:
                self._bad.warning("results", f"results record {record.partition}:{record.offset} not read back: "
                                             f"{exc}")
                continue
            key = f"{p.model}/{p.version}"
            if key not in self._models or not isinstance(state, dict):
                continue
            published[p.window_id] = p.index
            ends, slot = state.get("ends"), state.get("slot", 0)
            for topic, partition, offset, event in ends if isinstance(ends, list) else ():
                ends_by.setdefault((key, (str(topic), int(partition))), []).append(
                    (int(slot) if isinstance(slot, int) else 0, (int(offset), int(event))))
            if p.index >= latest.get(key, (-1, {}))[0]:
                latest[key] = (p.index, state)
        resumed, watermarks = {}, {}
        for key, (index, state) in latest.items():
            if index < self._windows.next_index(key):
                continue  # this process holds that window's state, or a newer one
            detectors = state.get("detectors")
            refused = self._models[key].restore(detectors if isinstance(detectors, dict) else {})
            resumed[key] = index + 1
            if isinstance(watermark := state.get("watermark"), (int, float)):
                watermarks[key] = float(watermark)
            log.info("%s goes on after its window #%d, published before%s", key, index,
                     f" (starting afresh: {', '.join(refused)})" if refused else "")
        self._windows.resume(resumed, published, watermarks)
        self._published = published
        self._done_until = {where: PublishedEnds(ends) for where, ends in ends_by.items()}
        self._skipped = {}

    def _published_before(self, event: InferenceEvent, message: Message, index: int) -> bool:
        """Whether this event lies in a window already published (see :meth:`_resume_from_results` and
        :class:`~monitor.windows.PublishedEnds`)."""
        where = (event.key, (message.topic, message.partition))
        ends = self._done_until.get(where)
        if ends is None:
            return False
        position = (message.offset, index)
        if position <= ends.last:
            if not ends.covers(self._windows.natural_slot(event.time), position):
                return False
            self._skipped[where] = self._skipped.get(where, 0) + 1
            return True
        del self._done_until[where]
        if self._skipped.get(where):
            log.info("%s: skipped %d event(s) of %s-%d read again, already in published windows", event.key,
                     self._skipped.pop(where), message.topic, message.partition)
        return False

    # -- records ---------------------------------------------------------------------------------------
    def _handle(self, message: Message) -> int:
        """Handle one record; whatever it holds, an unexpected failure costs that record only (dead-lettered
        with reason ``processing_error``, logged with its traceback, counted), never the daemon.

        A :class:`~monitor.errors.TransportError` (a result, a dead letter or the alert state could not be
        handed to the broker) is not the record's fault: it is raised, and the daemon exits non-zero without
        committing, so that its restart (by its supervisor) reads the record again from the last commit and
        publishes exactly what was not published (see :meth:`_resume_from_results`)."""
        try:
            return self._handle_record(message)
        except TransportError:
            log.error("record %s-%d:%d: the broker did not take what it produced; stopping without committing "
                      "(a restart reads it again from the last commit)", message.topic, message.partition,
                      message.offset)
            raise
        except Exception as exc:
            log.exception("record %s-%d:%d could not be processed", message.topic, message.partition, message.offset)
            self._consumed[(message.topic, message.partition)] = message.offset + 1
            self._reject(message, EventError("processing_error", f"{type(exc).__name__}: {exc}"))
            return 0

    def _handle_record(self, message: Message) -> int:
        self.messages += 1
        tp = (message.topic, message.partition)
        skip = self._skip_on_resume(tp, message.offset)
        self._consumed[tp] = message.offset + 1
        decoded = decode_record_lenient(message.value, columns=True)
        if decoded.columns is not None:
            closed = self._add_columns(message, decoded.columns, skip)
            if closed is not None:
                return closed
            decoded = Decoded(list(decoded.columns.events()), [], batch=True)
        if not skip:  # a resumed record's invalid parts were dead-lettered before the restart
            for error in decoded.errors:
                self._reject(message, error)
        closed = 0
        for index, event in enumerate(decoded.events):
            if index < skip:
                continue
            model = self._models.get(event.key)
            if model is None:
                self._unknown(message, event, decoded.batch)
            elif isinstance(event, FeedbackEvent):
                self._metrics.feedback_consumed.labels(model=event.model, version=event.version).inc()
                self._feedback(message, model, event, decoded.batch)
            elif self._done_until and self._published_before(event, message, index):
                continue
            else:
                self._check_variant(event)
                closed += self._add(message, index, model, event, decoded.batch)
        return closed

    def _add_columns(self, message: Message, batch: ColumnBatch, skip: int) -> int | None:
        """The rows of a column batch whose every row is valid, as arrays (no object per event): the same
        windows, joins, metrics and results as :meth:`_add` row by row. None (nothing done) when a row needs
        more than that: a record resumed part-way or read again after a restart, a version that is not
        watched, a variant attribute that disagrees, an event too far ahead of the clock, a row the profile
        would reject; then the caller takes the rows one by one."""
        key = batch.key
        model = self._models.get(key)
        where = (message.topic, message.partition)
        if model is None or skip or (self._done_until and (key, where) in self._done_until):
            return None
        said = batch.attributes.get("variant")
        if said is not None and self._variants.variant(key) not in (None, said):
            return None
        times = np.array(batch.time, dtype=np.float64)
        if not len(times):
            return 0
        cut = self.config.window
        if cut.duration_s is not None and times.max() > time.time() + cut.max_future_s:
            return None
        columns = model.columns(batch)
        if columns is None:
            return None
        self._tally.add_rows(batch.model, batch.version, batch.latency_total_s, batch.latency_gpu_s, len(times))
        predictions = columns["prediction"].tolist()
        done = 0

        def take(upto: int) -> None:  # the rows before ``upto`` reach the alerts' clock and the feedback join
            nonlocal done
            if upto <= done:
                return
            rows = [i for i in range(done, upto) if predictions[i] >= 0]  # what has a class joins feedback
            if len(rows) == upto - done:
                joins = self._joins.add_inferences(key, batch.request_id[done:upto], batch.time[done:upto],
                                                   predictions[done:upto])
            else:
                joins = self._joins.add_inferences(key, [batch.request_id[i] for i in rows],
                                                   [batch.time[i] for i in rows], [predictions[i] for i in rows])
            for joined in joins:
                self._joined(model, joined.prediction, joined.label, joined.accepted)
            self._alerting.seen(batch.model, batch.version, batch.time[upto - 1])
            self._latest_time = max(self._latest_time, max(batch.time[done:upto]))
            done = upto

        def evaluate(window: ClosedWindow, upto: int) -> None:
            take(upto)
            self._evaluate(window)

        closed = self._windows.add_many(key, model.layout, columns, (*where, message.offset), times, self._clock(),
                                        batch.request_id, evaluate)
        take(len(times))
        return closed

    def _check_variant(self, event: InferenceEvent) -> None:
        """Count (and log, rate-limited) an event whose ``variant`` attribute disagrees with its version's configured
        variant; it is processed all the same: the version decides which windows it joins."""
        reason = self._variants.mismatch(event)
        if reason is None:
            return
        self._metrics.variant_mismatches.labels(model=event.model, version=event.version, reason=reason).inc()
        self._bad.warning(f"variant:{event.key}:{reason}",
                          f"{event.key} event {event.request_id!r} says variant "
                          f"{event.attributes.get('variant')!r}, but {event.key} is configured as variant "
                          f"{self._variants.variant(event.key)!r} ({reason}); processed as {event.key}")

    def _unknown(self, message: Message, event: InferenceEvent | FeedbackEvent, batch: bool) -> None:
        """An event of no configured model/version: dead-lettered; a version of a configured model without a
        profile also raises ``no_baseline`` for that model (one alert, not one per event)."""
        part = encode_event(event) if batch else None
        if event.model in self._names:
            self._reject(message, EventError("no_baseline", f"{event.model} has no profile for version "
                                                            f"{event.version!r}", part))
            self._alerting.unprofiled(event.model, event.version, event.time)
        else:
            self._reject(message, EventError("unknown_model", f"no profile is configured for {event.key!r}", part))

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

    def _add(self, message: Message, index: int, model: WatchedModel, event: InferenceEvent, batch: bool) -> int:
        cut = self.config.window
        if cut.duration_s is not None and event.time > time.time() + cut.max_future_s:
            self._reject(message, EventError(
                "future_time", f"{event.key} event {event.request_id!r} at {event.time:.0f} is more than "
                               f"window.max_future_s={cut.max_future_s:g} s ahead of this machine's clock: it would "
                               f"close every open window", encode_event(event) if batch else None))
            return 0
        values = model.values(event)
        if isinstance(values, EventError):
            values.part = encode_event(event) if batch else None
            self._reject(message, values)
            return 0
        self._tally.add(event)
        self._alerting.seen(event.model, event.version, event.time)
        self._latest_time = max(self._latest_time, event.time)
        prediction = values.get("prediction")
        if isinstance(prediction, int):
            joined = self._joins.add_inference(event.key, event.request_id, event.time, prediction)
            if joined is not None:
                self._joined(model, joined.prediction, joined.label, joined.accepted)
        elif event.generation is not None:
            joined = self._joins.add_inference(event.key, event.request_id, event.time, None)
            if joined is not None:
                self._joined(model, None, None, joined.accepted)
        payload = None if event.payload is None else msgspec.json.encode(event.payload)  # sampled ones only
        closed = self._windows.add(event.key, model.layout, values,
                                   (message.topic, message.partition, message.offset, index), event.time,
                                   self._clock(), payload, event.request_id)
        for window in closed:
            self._evaluate(window)
        return len(closed)

    def _feedback(self, message: Message, model: WatchedModel, event: FeedbackEvent, batch: bool) -> None:
        label = model.class_index(event.label) if event.label is not None else None
        if isinstance(label, EventError):
            label.part = encode_event(event) if batch else None
            self._reject(message, label)
            return
        self._latest_time = max(self._latest_time, event.time)
        joined = self._joins.add_feedback(event.key, event.request_id, event.time, label=label,
                                          accepted=event.accepted, score=event.score)
        if joined is not None:
            self._joined(model, joined.prediction, joined.label, joined.accepted)

    def _joined(self, model: WatchedModel, prediction: int | None, label: int | None, accepted: bool | None) -> None:
        if label is not None and prediction is not None:
            model.add_labels([label], [prediction])
        if accepted is not None:
            model.add_acceptances([accepted])

    def _export_joins(self) -> None:
        stats, before, m = self._joins.stats, self._join_stats, self._metrics
        m.feedback_pending.labels(kind="inference").set(stats.pending_inferences)
        m.feedback_pending.labels(kind="feedback").set(stats.pending_feedback)
        m.feedback_joined.inc(stats.joined - before.joined)
        m.feedback_expired.inc(stats.expired - before.expired)
        m.feedback_evicted.labels(kind="inference").inc(stats.evicted_inferences - before.evicted_inferences)
        m.feedback_evicted.labels(kind="feedback").inc(stats.evicted_feedback - before.evicted_feedback)
        self._join_stats = stats

    def _export_dropped(self) -> None:
        """Count the events windows set aside since the last call (late, duplicate request ids, full)."""
        for (key, reason), count in self._windows.dropped.items():
            new = count - self._dropped_exported.get((key, reason), 0)
            if not new:
                continue
            self._dropped_exported[(key, reason)] = count
            model, version = key.rsplit("/", 1)
            if reason == "late_next":
                self._metrics.late_events.labels(model=model, version=version, action="next_window").inc(new)
                continue
            self._metrics.window_dropped.labels(model=model, version=version, reason=reason).inc(new)
            if reason == "late":
                self._metrics.late_events.labels(model=model, version=version, action="dropped").inc(new)

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
        if self._published.pop(window.window_id, None) is not None:
            name, version = window.key.rsplit("/", 1)
            self._metrics.windows_replayed.labels(model=name, version=version).inc()
            log.info("window %s #%d was read again; its result was published before: not again",
                     window.window_id, window.index)
            return
        # what labelled quality is about to consume, for the alert hooks (a report's quality section)
        labels = model.joined_labels() if self._alerting.hooks else None
        started = time.perf_counter()
        result = model.evaluate(window, self._variants.peer_window(window.key))
        self._metrics.window_seconds.observe(time.perf_counter() - started)
        self._variants.closed(window)  # after its own evaluation: what a version compared with it reads next
        for failure in result.failures:
            self._bad.warning(f"detector:{failure.detector}", f"detector {failure.detector} failed on window "
                                                              f"{result.window_id}: {failure.error}")
        found = result.findings
        export_result(self._metrics, result, model.profile.class_labels)
        log.info("window %s #%d: %d events; %s", result.window_id, result.index, result.n_events,
                 "; ".join(f"{f.detector}: {f.summary}" for f in found if f.drifted) or "nothing found")
        carried = msgspec.json.encode({"index": result.index, "detectors": model.state(),
                                       "ends": [[t, p, o, e] for (t, p), (o, e) in window.last_positions.items()],
                                       "slot": window.slot, "watermark": self._windows.watermark(window.key)})
        self._producer.send(self.config.topics.results, msgspec.json.encode(result, enc_hook=plain),
                            window.key.encode(),
                            [("content-type", b"application/json"), (STATE_HEADER, carried)])
        self._unflushed = True
        if self._on_result is not None:
            self._on_result(result)
        observe = partial(Observation, model=result.model, version=result.version, window=result.index,
                          window_id=result.window_id, window_start=result.first_time, window_end=result.last_time,
                          training_run=result.training_run, training_run_url=result.training_run_url,
                          n_events=result.n_events)
        self._alerting.window((observe(detector=f.detector, drifted=f.drifted, insufficient=f.insufficient,
                                       features=f.features, summary=f.summary, evidence=f.evidence) for f in found),
                              AlertedWindow(result, window, labels))

