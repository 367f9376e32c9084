"""Alert state on Kafka: a compacted topic keyed by fingerprint (the :class:`~monitor.alerts.state.StateStore` of
the Kafka deployment).

Each record is one fingerprint's whole state: key = the fingerprint (UTF-8), value = its state as sorted,
NaN-free JSON; a deletion is a tombstone (value ``None``). With ``cleanup.policy=compact`` the broker keeps at
least the last record of every key, so reading the topic from the beginning and letting the last record per key
win gives back every fingerprint's last saved state, however long the topic has lived.

:meth:`TopicStore.load` creates the topic if needed (1 partition, replication factor 1, compacted; an existing
topic is left as it is, with a warning if it is not compacted, since retention would then delete live state),
then reads it to the end offsets taken when reading starts, without a consumer group (nothing is committed).
:meth:`TopicStore.save` sends the changed fingerprints with an idempotent ``acks="all"`` producer and flushes:
when it returns, the broker has them all; when it raises :class:`~monitor.errors.TransportError`, some may be
written and some not, and the caller saves them again. A producer that failed is closed and replaced by a new one
on the next save (in kafka-python 3.0.12 a producer whose batch expired can stop delivering for good: see
:mod:`monitor.transport.kafka`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from monitor.alerts.state import State
from monitor.errors import TransportError
from monitor.transport.base import validate_topic
from monitor.transport.kafka import _force_close, ensure_topics

__all__ = ["TopicStore"]

log = logging.getLogger(__name__)

#: Topic configs of a topic this store creates.
TOPIC_CONFIGS: Mapping[str, str] = {"cleanup.policy": "compact"}
#: How many undecodable records :meth:`TopicStore.load` logs one by one (the rest only in its summary).
_LOGGED_SKIPS = 10
#: Longest single poll while reading the topic.
_POLL_MS = 500


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _decode(value: bytes) -> State:
    """One record's state; ValueError when it is not a JSON object (NaN and Infinity refused, as on save)."""
    state = json.loads(value.decode("utf-8"), parse_constant=_no_constant)
    if not isinstance(state, dict):
        raise ValueError(f"a JSON {type(state).__name__}, not an object")
    return state


class TopicStore:
    """Alert state in the compacted Kafka topic ``topic`` at ``bootstrap``.

    Parameters
    ----------
    bootstrap
        ``host:port[,host:port...]`` of the cluster.
    topic
        The state topic; created compacted at the first :meth:`load` when missing.
    request_timeout_ms
        Per-request timeout of the clients, the bootstrap timeout, the flush timeout of :meth:`save`, and how long
        :meth:`load` waits for reading to make progress.
    client_id
        Client id the broker sees.

    :meth:`save` is meant to be called from one thread (the pipeline). After a :meth:`load`, :attr:`skipped` is
    how many records it could not decode (logged and ignored).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = "inferwatch.alerts",
        request_timeout_ms: int = 30000,
        client_id: str = "inferwatch-alerts",
        namespace: str = "",
    ) -> None:
        """``namespace`` (the daemon's consumer group) prefixes every key as ``namespace/fingerprint``: daemons of
        different groups share the topic without reading each other's alerts."""
        if not bootstrap:
            raise ValueError("bootstrap must name at least one host:port")
        validate_topic(topic)
        # kafka-python's consumer wants its request timeout above its fetch wait (500 ms).
        if isinstance(request_timeout_ms, bool) or not isinstance(request_timeout_ms, int) \
                or request_timeout_ms <= _POLL_MS:
            raise ValueError(f"request_timeout_ms must be an int > {_POLL_MS}, got {request_timeout_ms!r}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.request_timeout_ms = request_timeout_ms
        self.client_id = client_id
        self.prefix = f"{namespace}/" if namespace else ""
        self.skipped = 0
        self._producer: Any = None  # a KafkaProducer, made at the first save
        self._closed = False

    def __repr__(self) -> str:
        return f"TopicStore({self.bootstrap!r}, {self.topic!r})"

    def _where(self) -> str:
        return f"topic {self.topic!r} at {self.bootstrap}"

    # -- load --------------------------------------------------------------------------------------------------

    def load(self) -> dict[str, State]:
        """Every fingerprint's last saved state, read from the beginning of the topic to its current end.

        Raises
        ------
        TransportError
            The broker is unreachable, refuses to create the topic, or reading stops making progress for
            ``request_timeout_ms``; the message names the topic and ``bootstrap``.
        """
        timeout_s = self.request_timeout_ms / 1000
        ensure_topics(self.bootstrap, {self.topic: 1}, timeout_s, configs={self.topic: TOPIC_CONFIGS})
        self._check_compacted()
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                request_timeout_ms=self.request_timeout_ms,
                bootstrap_timeout_ms=self.request_timeout_ms,
            )
        except KafkaError as exc:
            raise TransportError(f"cannot read alert state from {self._where()}: {exc}") from exc
        try:
            states, records, skipped = self._read(consumer)
        except KafkaError as exc:
            raise TransportError(f"reading alert state from {self._where()} failed: {exc}") from exc
        finally:
            try:
                consumer.close(autocommit=False)
            except Exception:
                log.exception("closing the alert state consumer of %s failed", self._where())
        self.skipped = skipped
        if skipped:
            log.warning("alert state %s: skipped %d undecodable record(s) of %d; their fingerprints start with no "
                        "state", self._where(), skipped, records)
        log.info("alert state %s: %d fingerprint(s) from %d record(s)", self._where(), len(states), records)
        return states

    def _read(self, consumer: Any) -> tuple[dict[str, State], int, int]:
        """Read every partition from its beginning to its end offset now: (states, records read, skipped)."""
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise TransportError(f"alert state {self._where()}: the topic has no partitions in the cluster metadata")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end: dict[Any, int] = consumer.end_offsets(tps, timeout_ms=self.request_timeout_ms)
        states: dict[str, State] = {}
        records = skipped = 0
        positions: dict[Any, int | None] = {}
        stall_s = self.request_timeout_ms / 1000
        stalled_at = time.monotonic() + stall_s
        while True:
            done = True
            for tp in tps:
                position = consumer.position(tp, timeout_ms=self.request_timeout_ms)
                if position != positions.get(tp):
                    positions[tp] = position
                    stalled_at = time.monotonic() + stall_s
                if position is None or position < end[tp]:
                    done = False
            if done:
                return states, records, skipped
            if time.monotonic() > stalled_at:
                where = ", ".join(f"partition {tp.partition} at {positions.get(tp)} of {end[tp]}" for tp in tps)
                raise TransportError(f"reading alert state from {self._where()} made no progress for "
                                     f"{stall_s:g} s ({where})")
            batches = consumer.poll(timeout_ms=_POLL_MS)
            for tp in sorted(batches, key=lambda tp: tp.partition):
                for record in batches[tp]:
                    records += 1
                    if not self._apply(states, record, skipped):
                        skipped += 1

    def _apply(self, states: dict[str, State], record: Any, skipped: int) -> bool:
        """Apply one record (the last one per key wins); False when it could not be decoded.

        An undecodable value still replaces what came before it for its key: it is the key's latest record, and
        compaction may already have removed the earlier ones, so keeping them would make the result depend on
        when the broker last compacted."""
        try:
            if record.key is None:
                raise ValueError("no key")
            fingerprint = record.key.decode("utf-8")
        except ValueError as exc:
            self._skip(record, f"key {record.key!r}: {exc}", skipped)
            return False
        if not fingerprint.startswith(self.prefix) or "/" in fingerprint[len(self.prefix):]:
            return True  # another namespace's
        fingerprint = fingerprint[len(self.prefix):]
        if record.value is None:
            states.pop(fingerprint, None)
            return True
        try:
            states[fingerprint] = _decode(record.value)
        except ValueError as exc:
            states.pop(fingerprint, None)
            self._skip(record, f"fingerprint {fingerprint!r}: {exc}", skipped)
            return False
        return True

    def _skip(self, record: Any, why: str, skipped: int) -> None:
        if skipped < _LOGGED_SKIPS:
            log.warning("alert state %s: skipping the undecodable record at partition %d offset %d (%s)",
                        self._where(), record.partition, record.offset, why)

    def _check_compacted(self) -> None:
        """Warn when an existing topic is not compacted only: retention would delete states still in use."""
        admin = None
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id,
                                     request_timeout_ms=self.request_timeout_ms,
                                     bootstrap_timeout_ms=self.request_timeout_ms)
            described = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, self.topic, ["cleanup.policy"])], config_filter="all")
            policy = described["topic"][self.topic]["cleanup.policy"]["value"]
        except (KafkaError, KeyError, TypeError) as exc:
            log.warning("alert state %s: cannot check its cleanup.policy: %s", self._where(), exc)
            return
        finally:
            if admin is not None:
                admin.close()
        if {p.strip() for p in str(policy).split(",")} != {"compact"}:
            log.warning("alert state %s has cleanup.policy=%s, not compact: the broker may delete states still in "
                        "use; set cleanup.policy=compact on it", self._where(), policy)

    # -- save --------------------------------------------------------------------------------------------------

    def save(self, changed: Mapping[str, State | None]) -> None:
        """Write the changed fingerprints (``None``: a tombstone); every one is on the broker when this returns.

        Raises
        ------
        TransportError
            A record was not acknowledged within ``request_timeout_ms`` (some of them may have been written: save
            them again), or the store is closed; the message names the topic and ``bootstrap``.
        TypeError, ValueError
            A state is not JSON (nothing is sent then).
        """
        if self._closed:
            raise TransportError(f"alert state store for {self._where()} is closed")
        if not changed:
            return
        records = [
            ((self.prefix + fingerprint).encode("utf-8"),
             None if state is None else json.dumps(state, sort_keys=True, allow_nan=False).encode())
            for fingerprint, state in changed.items()
        ]
        producer = self._producer_client()
        futures = []
        try:
            for key, value in records:
                futures.append(producer.send(self.topic, key=key, value=value))
            producer.flush(timeout=self.request_timeout_ms / 1000)
        except KafkaError as exc:
            self._discard(producer)
            raise TransportError(f"saving {len(records)} alert state(s) to {self._where()} failed: {exc}") from exc
        failed = [f for f in futures if not f.succeeded()]
        if failed:
            self._discard(producer)
            first = failed[0].exception or "not completed"
            err = TransportError(f"saving alert state to {self._where()} failed for {len(failed)} of "
                                 f"{len(records)} record(s): {first}")
            if isinstance(first, BaseException):
                err.__cause__ = first
            raise err

    def _producer_client(self) -> Any:
        if self._producer is None:
            try:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=0,
                    max_block_ms=self.request_timeout_ms,
                    request_timeout_ms=self.request_timeout_ms,
                    bootstrap_timeout_ms=self.request_timeout_ms,
                    delivery_timeout_ms=max(120000, self.request_timeout_ms),
                )
            except KafkaError as exc:
                raise TransportError(f"cannot create a Kafka producer to save alert state to {self._where()}: "
                                     f"{exc}") from exc
        return self._producer

    def _discard(self, producer: Any) -> None:
        """Close a producer that failed (its pending records fail); the next save makes a new one."""
        if self._producer is producer:
            self._producer = None
        try:
            _force_close(producer)
        except Exception:
            log.exception("closing the failed alert state producer of %s failed", self._where())

    def close(self) -> None:
        """Close the producer (waiting up to ``request_timeout_ms`` for anything pending); idempotent."""
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.flush(timeout=self.request_timeout_ms / 1000)
            producer.close(timeout=self.request_timeout_ms / 1000)
        except KafkaError as exc:
            log.warning("closing the alert state producer of %s: %s", self._where(), exc)
            self._discard(producer)
