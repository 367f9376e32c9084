"""Reference profiles from captured traffic: inference events read back from a JSON-lines file or a Kafka topic.

For a model whose training data is not at hand, or one watched through the sidecar (which derives its OIP input
features itself), the reference is a period of the model's own traffic. A source is

* a JSON-lines file: one Kafka record value per line, an event or a batch envelope
  (``inferwatch schema`` prints the JSON Schema), as ``kafka-console-consumer`` or a capture writes them;
* ``kafka://HOST:PORT/TOPIC``: every partition of the topic, from its beginning (or from ``since``, found
  through the record timestamps) to its end offsets at the time of the call.

Events of the model version are kept when their own ``time`` lies in ``[since, until]`` (both inclusive; the
record timestamp is only used to skip ahead in Kafka), up to ``max_rows`` of them, so memory is bounded. The
columns follow the daemon's own mapping (:meth:`monitor.evaluation.WatchedModel.values`): numeric features by
name in order of first appearance, a ``null`` or absent feature is a missing value (NaN), an absent categorical
feature is the level ``""``, and a generation becomes the LLM columns. The feature names are therefore exactly
those the collectors produce. Predictions, probabilities and generations go into the profile when every event
kept carries them; embeddings (often sampled) come from the events that carry one. Lines or records that do not
decode, events of other models, and events outside the period are counted and reported, never fatal unless no
event is left.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from monitor.datafiles import LLMColumns, Table
from monitor.errors import DataError
from monitor.events import MAX_RECORD_BYTES, InferenceEvent, decode_record_lenient
from monitor.offline import build_profile
from monitor.profiles import Profile

__all__ = ["Captured", "capture_rows", "file_records", "kafka_records", "profile_from_events", "read_events"]

#: Kafka records are skipped by timestamp up to this long before ``since``: a record is made after the event it
#: holds (so its timestamp is later), and this margin covers clocks that differ between event and producer.
SEEK_MARGIN_S = 300.0
#: How long a Kafka read waits for the next record before it gives up on a partition that should have more.
STALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Captured:
    """The rows of one model version read from captured events, and what was read to get them.

    ``class_labels`` names the classes when predictions were strings (in class-index order; empty when they
    were class indices); ``period`` is the first and last event time used; ``rejected`` counts records (or
    events in a batch) that failed validation, by reason; ``left_out`` says which parts did not make the table
    and why."""

    source: str
    table: Table
    class_labels: tuple[str, ...]
    embeddings: np.ndarray | None  # (m, d) from the m events that carried one
    period: tuple[float, float]
    records: int
    other_models: int
    outside_period: int
    rejected: Mapping[str, int]
    full: bool  # stopped at max_rows
    left_out: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"{self.table.rows} events of {_span(self.period)} from {self.records} records of {self.source}"]
        if self.full:
            parts.append("stopped at --max-rows")
        if self.other_models:
            parts.append(f"{self.other_models} of other models or feedback skipped")
        if self.outside_period:
            parts.append(f"{self.outside_period} outside the period skipped")
        if self.rejected:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
            parts.append(f"{sum(self.rejected.values())} rejected ({reasons})")
        return "; ".join(parts + list(self.left_out))


@dataclass
class _Rows:
    """Per-event values, in arrival order, until they become a :class:`Table`."""

    features: list[dict[str, float | None]] = field(default_factory=list)
    categories: list[dict[str, str]] = field(default_factory=list)
    predictions: list[int | str | None] = field(default_factory=list)
    probabilities: list[list[float] | None] = field(default_factory=list)
    embeddings: list[list[float]] = field(default_factory=list)
    generations: list[tuple[float, float, bool, bool] | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def add(self, e: InferenceEvent) -> None:
        self.features.append(e.features)
        self.categories.append(e.categories)
        self.predictions.append(e.prediction)
        self.probabilities.append(e.probabilities)
        if e.embedding is not None:
            self.embeddings.append(e.embedding)
        g = e.generation
        # LLM_COLUMNS order as in WatchedModel.values: tokens, mean logprob, empty, refusal
        self.generations.append(None if g is None else (
            float(g.output_tokens), math.nan if g.mean_logprob is None else g.mean_logprob, g.output_chars == 0,
            bool(g.refusal)))
        self.times.append(e.time)


def capture_rows(records: Iterable[bytes], source: str, model: str, version: str, since: float | None = None,
                 until: float | None = None, max_rows: int = 20_000) -> Captured:
    """The rows of ``model``/``version`` in ``records`` (record values), as :class:`Captured`.

    Raises :class:`DataError` naming ``source`` when no event of the model version is left."""
    if max_rows < 1:
        raise DataError(f"--max-rows must be at least 1, got {max_rows}")
    rows = _Rows()
    rejected: Counter[str] = Counter()
    n_records = other = outside = 0
    full = False
    for value in records:
        n_records += 1
        decoded = decode_record_lenient(value)
        for error in decoded.errors:
            rejected[error.reason] += 1
        for event in decoded.events:
            if not isinstance(event, InferenceEvent) or event.model != model or event.version != version:
                other += 1
            elif (since is not None and event.time < since) or (until is not None and event.time > until):
                outside += 1
            elif isinstance(event.prediction, int) and event.prediction < 0:
                rejected["invalid_value"] += 1
            else:
                rows.add(event)
        if len(rows.times) >= max_rows:
            full = True
            break
    if not rows.times:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "none"
        raise DataError(f"{source}: no event of {model}/{version}{_range(since, until)} in {n_records} records "
                        f"({other} of other models or feedback, {outside} outside the period, rejected: {reasons})")
    table, labels, left_out = _table(rows)
    embeddings = _embeddings(rows, left_out)
    return Captured(source=source, table=table, class_labels=labels, embeddings=embeddings,
                    period=(min(rows.times), max(rows.times)), records=n_records, other_models=other,
                    outside_period=outside, rejected=dict(rejected), full=full, left_out=tuple(left_out))


def profile_from_events(captured: Captured, model: str, version: str, bins: int = 10,
                        calibration: Literal["temperature", "isotonic"] = "temperature",
                        max_rows: int = 20_000, seed: int = 0) -> Profile:
    """A profile of the captured rows (as :func:`monitor.offline.build_profile` makes one of a data file), with
    the class names of string predictions and the reference period."""
    profile = build_profile(captured.table, model, version, bins=bins, calibration=calibration,
                            max_rows=max_rows, seed=seed)
    if captured.class_labels and profile.reference is not None:
        profile = replace(profile, reference=replace(profile.reference, class_labels=captured.class_labels))
    if captured.embeddings is not None:
        e = captured.embeddings
        sampled = build_profile(Table(x=np.empty((e.shape[0], 0)), feature_names=(), embeddings=e), model,
                                version, seed=seed)
        profile = replace(profile, embeddings=sampled.embeddings, embedding_bandwidth=sampled.embedding_bandwidth)
    return replace(profile, reference_period=captured.period)


def read_events(source: str, model: str, version: str, since: float | None = None, until: float | None = None,
                max_rows: int = 20_000, timeout_s: float = 10.0) -> Captured:
    """:func:`capture_rows` of a JSON-lines file or a ``kafka://HOST:PORT/TOPIC`` source."""
    if since is not None and until is not None and since > until:
        raise DataError(f"--since ({since:g}) is after --until ({until:g})")
    if source.startswith("kafka://"):
        bootstrap, topic = _kafka_address(source)
        consumer = _consumer(source, bootstrap, timeout_s)
        try:
            return capture_rows(kafka_records(consumer, topic, source, since), source, model, version, since,
                                until, max_rows)
        finally:
            consumer.close()
    if "://" in source:
        raise DataError(f"{source}: unknown event source; use a JSON-lines file or kafka://HOST:PORT/TOPIC")
    try:
        with open(Path(source), "rb") as f:
            return capture_rows(file_records(f), source, model, version, since, until, max_rows)
    except OSError as exc:
        raise DataError(f"{source}: cannot read the events file: {exc.strerror or exc}") from exc


def file_records(f: IO[bytes]) -> Iterator[bytes]:
    """The non-blank lines of a JSON-lines file. Of a line longer than a record may be, only the head is kept
    (it decodes as ``too_large``) and the rest is read past in pieces: memory stays within one record."""
    while line := f.readline(MAX_RECORD_BYTES + 2):
        if not line.endswith(b"\n") and len(line) == MAX_RECORD_BYTES + 2:
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield line  # longer than MAX_RECORD_BYTES: rejected by size, never parsed
        elif line.strip():
            yield line


def kafka_records(consumer: Any, topic: str, source: str, since: float | None = None,
                  stall_timeout_s: float = STALL_TIMEOUT_S, clock: Callable[[], float] = time.monotonic
                  ) -> Iterator[bytes]:
    """Record values of every partition of ``topic``, from the beginning (or the first record stamped at or
    after ``since - SEEK_MARGIN_S``) to the end offsets at the time of the call. ``consumer`` is a
    ``kafka.KafkaConsumer`` without a group; it is assigned the partitions here."""
    from kafka.errors import KafkaError
    from kafka.structs import TopicPartition

    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise DataError(f"{source}: topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        start = consumer.beginning_offsets(tps)
        if since is not None:
            stamp = max(0, int((since - SEEK_MARGIN_S) * 1000))
            found = consumer.offsets_for_times(dict.fromkeys(tps, stamp))
            start = {tp: end[tp] if found.get(tp) is None else found[tp].offset for tp in tps}
        for tp in tps:
            consumer.seek(tp, start[tp])
        remaining = {tp for tp in tps if start[tp] < end[tp]}
        last_progress = clock()
        while remaining:
            batch = consumer.poll(timeout_ms=500, max_records=500)
            if batch:
                last_progress = clock()
            elif clock() - last_progress > stall_timeout_s:
                raise DataError(f"{source}: no record for {stall_timeout_s:g} s from partition(s) "
                                f"{sorted(tp.partition for tp in remaining)} before their end offsets")
            for tp, records in batch.items():
                for r in records:
                    if r.offset < end[tp] and r.value is not None:
                        yield r.value
            for tp in list(remaining):
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
    except KafkaError as exc:
        raise DataError(f"{source}: reading the topic failed: {exc}") from exc


def _consumer(source: str, bootstrap: str, timeout_s: float) -> Any:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    timeout_ms = max(1, int(timeout_s * 1000))
    try:
        return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             allow_auto_create_topics=False, bootstrap_timeout_ms=timeout_ms,
                             request_timeout_ms=max(timeout_ms, 1000), client_id="inferwatch-baseline")
    except KafkaError as exc:
        raise DataError(f"{source}: Kafka broker unreachable at {bootstrap} after {timeout_s:g} s: {exc}") from exc


def _kafka_address(source: str) -> tuple[str, str]:
    rest = source.removeprefix("kafka://")
    host_port, _, topic = rest.partition("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit() or not topic or "/" in topic:
        raise DataError(f"{source}: a Kafka source is kafka://HOST:PORT/TOPIC")
    return host_port, topic


def _table(rows: _Rows) -> tuple[Table, tuple[str, ...], list[str]]:
    n = len(rows.times)
    left_out: list[str] = []
    names = tuple(dict.fromkeys(name for f in rows.features for name in f))
    column = {name: j for j, name in enumerate(names)}
    x = np.full((n, len(names)), np.nan)  # (n, F); null or absent -> NaN, a missing value
    for i, f in enumerate(rows.features):
        for name, v in f.items():
            if v is not None:
                x[i, column[name]] = v
    cat_names = tuple(dict.fromkeys(name for c in rows.categories for name in c))
    categorical = None
    if cat_names:
        categorical = np.array([[c.get(name, "") for name in cat_names] for c in rows.categories], dtype=str)
    predictions, labels = _predictions(rows.predictions, left_out)
    probabilities = _all_or_none("probabilities", rows.probabilities, left_out)
    if probabilities is not None and labels:
        left_out.append("probabilities left out: their class order is unknown for named classes")
        probabilities = None
    if probabilities is not None and len({len(p) for p in probabilities}) != 1:
        left_out.append("probabilities left out: events disagree on the number of classes")
        probabilities = None
    generations = _all_or_none("generations", rows.generations, left_out)
    llm = None
    if generations is not None:
        g = np.array(generations, dtype=np.float64)  # (n, 4)
        llm = LLMColumns(output_tokens=g[:, 0], mean_logprob=g[:, 1], empty=g[:, 2].astype(bool),
                         refusal=g[:, 3].astype(bool), accepted=None)
    table = Table(x=x, feature_names=names, categorical=categorical, categorical_names=cat_names,
                  predictions=predictions,
                  probabilities=None if probabilities is None else np.array(probabilities, dtype=np.float64),
                  llm=llm)
    return table, labels, left_out


def _predictions(values: list[int | str | None], left_out: list[str]) -> tuple[np.ndarray | None, tuple[str, ...]]:
    present = _all_or_none("predictions", values, left_out)
    if present is None:
        return None, ()
    if all(isinstance(v, int) for v in present):
        return np.array(present, dtype=np.int64), ()
    if all(isinstance(v, str) for v in present):
        labels = tuple(sorted({str(v) for v in present}))
        index = {label: i for i, label in enumerate(labels)}
        return np.array([index[str(v)] for v in present], dtype=np.int64), labels
    left_out.append("predictions left out: events mix class indices and class names")
    return None, ()


def _all_or_none(what: str, values: list[Any], left_out: list[str]) -> list[Any] | None:
    carried = sum(v is not None for v in values)
    if carried == len(values):
        return values
    if carried:
        left_out.append(f"{what} left out: {carried} of {len(values)} events carry them (every event must)")
    return None


def _embeddings(rows: _Rows, left_out: list[str]) -> np.ndarray | None:
    if not rows.embeddings:
        return None
    if len({len(e) for e in rows.embeddings}) != 1:
        left_out.append("embeddings left out: events disagree on their length")
        return None
    return np.array(rows.embeddings, dtype=np.float64)  # (m, d)


def _span(period: tuple[float, float]) -> str:
    first, last = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in period)
    return f"{first} to {last}"


def _range(since: float | None, until: float | None) -> str:
    if since is None and until is None:
        return ""
    return f" between {since if since is not None else '-inf'} and {until if until is not None else 'inf'}"

