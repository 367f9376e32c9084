"""Apache Kafka transport on kafka-python (3.x): self-healing idempotent producer, manually committed consumers.

Also :func:`ensure_topics` and :func:`wait_until_ready` for deployment and tests. kafka-python logs a
lot at INFO; importing this module raises the ``kafka`` logger to WARNING unless a level was set.

Why the producer heals itself: in kafka-python 3.0.12, when a batch that was already sent once expires
(``delivery_timeout_ms`` passed, as in any broker outage longer than that under traffic), the sender calls
``TransactionManager.reset_producer_id()``. That clears the producer id but leaves the manager in ``READY``,
and the sender only asks for a new id from ``UNINITIALIZED``: from then on it waits for an id that is never
requested, sends nothing, and never completes a future, even after the broker is back. A fatal error (a
non-retriable produce error, fencing) also ends the client for good. :class:`KafkaTransport`'s producer checks
its client before each send and flush and, in such a state, replaces it with a new ``KafkaProducer`` (records
still held by the old one fail with ``TransportError``, so the caller can spool and resend them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from kafka import AsyncConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from monitor.errors import CommitRejected, TransportError
from monitor.transport.base import (
    Consumer,
    DoneCallback,
    Message,
    Producer,
    Transport,
    validate_topic,
)

__all__ = ["REBUILD_REASONS", "KafkaTransport", "RebuildReason", "ensure_topics", "read_tail", "rebuild_counter",
           "wait_until_ready"]

log = logging.getLogger(__name__)

# How long a forced producer close waits for kafka-python's I/O thread to fail the pending batches.
_FORCE_CLOSE_JOIN_S = 5.0
#: How long a new consumer waits for its topics to appear in its metadata before joining its group anyway
#: (a topic that does not exist yet is created on first use by the broker, or never).
_TOPIC_METADATA_WAIT_S = 10.0
#: Least time between two rebuilds of one producer: a client that breaks again at once (a fatal error on every
#: send) is not replaced in a loop; sends in between fail with TransportError.
_REBUILD_INTERVAL_S = 1.0
#: How often a flush checks that its client can still complete records.
_FLUSH_CHECK_S = 0.5
#: Bytes of records kafka-python gathers into one record batch of a partition. Its default (16 KiB) is smaller than
#: one batch envelope (up to 900 KB), so each envelope would travel alone in its own batch and produce request;
#: 1,000,000 fits several under the broker's default ``message.max.bytes`` (1,048,588): fewer batches, requests
#: and responses for kafka-python's I/O thread to handle (about 1.5 times the events/s of
#: benchmarks/producer_throughput.py's batched run, and 1.8 times its one-event-per-record run).
_BATCH_SIZE = 1_000_000

#: Why a producer's kafka-python client was replaced (the ``reason`` label of the rebuilds counter).
RebuildReason = Literal["producer_id_reset", "fatal_error", "io_thread_stopped", "closed"]
REBUILD_REASONS: tuple[RebuildReason, ...] = ("producer_id_reset", "fatal_error", "io_thread_stopped", "closed")

_kafka_log = logging.getLogger("kafka")
if _kafka_log.level == logging.NOTSET:
    _kafka_log.setLevel(logging.WARNING)


def rebuild_counter(registry: CollectorRegistry | None) -> Counter:
    """``inferwatch_transport_producer_rebuilds_total{reason}`` on ``registry`` (a private one if None), every
    reason present from the start; both Kafka backends count their producer rebuilds in it."""
    counter = Counter(
        "inferwatch_transport_producer_rebuilds_total",
        "Kafka producer clients replaced because they could no longer deliver (producer id reset after an "
        "expired batch, a fatal error, their I/O thread gone, or closed under us), by reason.",
        ("reason",), registry=CollectorRegistry() if registry is None else registry)
    for reason in REBUILD_REASONS:
        counter.labels(reason=reason)
    return counter


def _unreachable(bootstrap: str, timeout_s: float, exc: BaseException) -> TransportError:
    err = TransportError(f"Kafka broker unreachable at {bootstrap} after {timeout_s:g} s: {exc}")
    err.__cause__ = exc
    return err


def _admin(bootstrap: str, timeout_s: float, client_id: str) -> KafkaAdminClient:
    """Connect an admin client, raising :class:`TransportError` if bootstrap fails within ``timeout_s``."""
    timeout_ms = max(1, int(timeout_s * 1000))
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=max(timeout_ms, 1000),
        )
    except KafkaError as exc:
        raise _unreachable(bootstrap, timeout_s, exc) from exc


def wait_until_ready(bootstrap: str, timeout_s: float = 30) -> None:
    """Return once the cluster at ``bootstrap`` answers a metadata request naming a broker.

    Raises
    ------
    TransportError
        No usable metadata within about ``timeout_s`` seconds; the message names ``bootstrap``.
    """
    admin = _admin(bootstrap, timeout_s, "inferwatch-ready")
    try:
        cluster = admin.describe_cluster()
    except KafkaError as exc:
        raise _unreachable(bootstrap, timeout_s, exc) from exc
    finally:
        admin.close()
    if not cluster.get("brokers"):
        raise TransportError(f"Kafka at {bootstrap} answered but lists no brokers")


def read_tail(bootstrap: str, topic: str, records: int, timeout_s: float = 30.0) -> list[Message]:
    """The last ``records`` records of every partition of ``topic`` (fewer where a partition holds fewer), up to
    the end offsets at the time of the call, in partition then offset order; read without a consumer group
    (nothing is committed). A topic that does not exist yet has no tail.

    Raises
    ------
    TransportError
        The broker is unreachable, or the records are not all read within ``timeout_s``.
    """
    validate_topic(topic)
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                 client_id="inferwatch-tail", request_timeout_ms=max(1000, int(timeout_s * 1000)),
                                 consumer_timeout_ms=500)
    except KafkaError as exc:
        raise _unreachable(bootstrap, timeout_s, exc) from exc
    deadline = time.monotonic() + timeout_s
    out: list[Message] = []
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        begin = consumer.beginning_offsets(tps)
        remaining = set()
        for tp in tps:
            consumer.seek(tp, max(begin[tp], end[tp] - records))
            if max(begin[tp], end[tp] - records) < end[tp]:
                remaining.add(tp)
        while remaining:
            if time.monotonic() > deadline:
                raise TransportError(f"reading the last {records} records of {topic!r} at {bootstrap} took more "
                                     f"than {timeout_s:g} s")
            for tp, batch in consumer.poll(timeout_ms=200, max_records=5000).items():
                out.extend(_message(r) for r in batch if r.offset < end[tp])
            for tp in list(remaining):
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
    except KafkaError as exc:
        raise TransportError(f"reading the tail of {topic!r} at {bootstrap} failed: {exc}") from exc
    finally:
        consumer.close()
    return sorted(out, key=lambda m: (m.partition, m.offset))


def _message(r: Any) -> Message:
    """A kafka-python ``ConsumerRecord`` as a :class:`Message`."""
    return Message(topic=r.topic, partition=r.partition, offset=r.offset, key=r.key,
                   value=b"" if r.value is None else r.value,
                   headers=tuple((name, data) for name, data in (r.headers or ())), timestamp_ms=r.timestamp)


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    timeout_s: float = 30,
    *,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create ``{topic: partitions}`` with replication factor 1; existing topics are left as they are.

    ``configs`` gives topic configs for the topics it names (``{topic: {"cleanup.policy": "compact"}}``); they
    apply only when the topic is created here: an existing topic keeps its configs.

    Returns once every topic has a leader for each partition.

    Raises
    ------
    TransportError
        The broker is unreachable, refuses a creation, or the topics are not ready in ``timeout_s``.
    """
    for name, partitions in topics.items():
        validate_topic(name)
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"partitions for {name!r} must be an int >= 1, got {partitions!r}")
    for name, topic_configs in (configs or {}).items():
        if name not in topics:
            raise ValueError(f"configs name topic {name!r}, which is not among the topics to ensure")
        for key, value in topic_configs.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"configs for {name!r} must map str to str, got {key!r}: {value!r}")
    if not topics:
        return
    request: dict[str, dict[str, Any]] = {name: {"num_partitions": n, "replication_factor": 1}
                                          for name, n in topics.items()}
    for name, topic_configs in (configs or {}).items():
        if topic_configs:
            request[name]["configs"] = dict(topic_configs)
    timeout_ms = max(1, int(timeout_s * 1000))
    admin = _admin(bootstrap, timeout_s, "inferwatch-admin")
    try:
        result = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
        for topic in result["topics"]:
            code = topic["error_code"]
            if code not in (0, TopicAlreadyExistsError.errno):
                raise TransportError(
                    f"cannot create topic {topic['name']!r} at {bootstrap}: "
                    f"error {code} {topic.get('error_message') or ''}".rstrip()
                )
        admin.wait_for_topics(list(topics), timeout_ms=timeout_ms)
    except KafkaError as exc:
        raise TransportError(f"creating topics {sorted(topics)} at {bootstrap} failed: {exc}") from exc
    finally:
        admin.close()


class KafkaTransport(Transport):
    """Factory of kafka-python producers and consumers for one cluster.

    Parameters
    ----------
    bootstrap
        ``host:port[,host:port...]`` of the cluster.
    client_id
        Client id the broker sees (consumers get ``{client_id}-{group}``).
    linger_ms
        Producer batching delay.
    max_block_ms
        Longest ``send`` may block for metadata or buffer space before raising ``TransportError``.
    request_timeout_ms
        Per-request timeout; also the bootstrap timeout of new clients and the commit timeout.
    extra_producer, extra_consumer
        Further kafka-python options, applied last (they override the defaults above).
    registry
        Where ``inferwatch_transport_producer_rebuilds_total{reason}`` is made: how often a producer's
        kafka-python client was found unable to deliver again and replaced (a private registry by default).
    """

    def __init__(
        self,
        bootstrap: str,
        client_id: str = "inferwatch",
        linger_ms: int = 5,
        max_block_ms: int = 1000,
        request_timeout_ms: int = 30000,
        extra_producer: Mapping[str, Any] | None = None,
        extra_consumer: Mapping[str, Any] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not bootstrap:
            raise ValueError("bootstrap must name at least one host:port")
        for name, value in (
            ("linger_ms", linger_ms),
            ("max_block_ms", max_block_ms),
            ("request_timeout_ms", request_timeout_ms),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self._producer_config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None,
            "batch_size": _BATCH_SIZE,
            "linger_ms": linger_ms,
            "max_block_ms": max_block_ms,
            "request_timeout_ms": request_timeout_ms,
            "bootstrap_timeout_ms": request_timeout_ms,
            **(extra_producer or {}),
        }
        self._consumer_config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "request_timeout_ms": request_timeout_ms,
            "bootstrap_timeout_ms": request_timeout_ms,
            # A member that joins its group before its metadata lists the subscribed topics gets an empty
            # assignment and keeps it until the next metadata refresh (kafka-python's default is 5 minutes):
            # refresh often enough that this costs seconds, not minutes.
            "metadata_max_age_ms": 5000,
            # kafka-python keeps one fetch in flight per broker, and fetches only partitions whose records are
            # all returned: while the events partition still holds buffered records, a fetch for the others
            # alone (the feedback topic, idle) waits fetch_max_wait_ms at the broker, and the events partition
            # waits behind it (measured: one-event records 3,400/s with the default 500 ms, 28,000/s with 20 ms,
            # 18,700/s reading the events topic alone). A short wait costs one empty fetch every 20 ms when idle.
            "fetch_max_wait_ms": 20,
            # A partition's fetch brings at most this much: the default 1 MiB is four column batches of 500
            # events, so the detector waited on a round trip every 2,000 events.
            "max_partition_fetch_bytes": 8 << 20,
            **(extra_consumer or {}),
        }
        self._lock = threading.Lock()
        self._open: set[_KafkaProducer | _KafkaConsumer] = set()
        self._closed = False
        self._rebuild_counter = rebuild_counter(registry)

    def producer(self) -> Producer:
        """Create an idempotent producer (``acks="all"``) that replaces its client when the client breaks.

        Raises
        ------
        TransportError
            The broker cannot be reached within ``request_timeout_ms`` or the options are invalid.
        """
        self._check_open()
        producer = _KafkaProducer(self._new_client(), self)
        self._register(producer)
        return producer

    def _new_client(self, api_version: tuple[int, ...] | None = None) -> KafkaProducer:
        """A kafka-python producer; with the ``api_version`` of an earlier client it does not wait for the
        broker (it connects in the background), so a rebuild never blocks the sending thread."""
        config = self._producer_config if api_version is None else {**self._producer_config,
                                                                     "api_version": api_version}
        try:
            return KafkaProducer(**config)
        except KafkaError as exc:
            raise self._connect_error("producer", exc) from exc

    def consumer(self, topics: Sequence[str], group: str) -> Consumer:
        """Create a consumer of ``topics`` in ``group`` (auto-commit off, earliest offset reset).

        Raises
        ------
        TransportError
            The broker cannot be reached within ``request_timeout_ms`` or the options are invalid.
        """
        if isinstance(topics, str):
            raise TypeError("topics must be a sequence of topic names, not a str")
        names = tuple(dict.fromkeys(validate_topic(t) for t in topics))
        if not names:
            raise ValueError("a consumer needs at least one topic")
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty str, got {group!r}")
        self._check_open()
        config = {"client_id": f"{self.client_id}-{group}", **self._consumer_config, "group_id": group}
        try:
            client = KafkaConsumer(**config)
            # Join the group only once this member's metadata lists the topics: a member that joins without it
            # is assigned nothing and waits for a metadata refresh and a rebalance (seen in CI: > 30 s).
            deadline = time.monotonic() + _TOPIC_METADATA_WAIT_S
            for name in names:
                while client.partitions_for_topic(name) is None and time.monotonic() < deadline:
                    time.sleep(0.05)
            consumer = _KafkaConsumer(client, self)
            client.subscribe(list(names), listener=_Assignments(consumer, client))
        except KafkaError as exc:
            raise self._connect_error("consumer", exc) from exc
        self._register(consumer)
        return consumer

    def close(self) -> None:
        """Close every client still open (producers flush for up to ``request_timeout_ms``)."""
        with self._lock:
            self._closed = True
            clients = list(self._open)
            self._open.clear()
        for client in clients:
            try:
                if isinstance(client, _KafkaProducer):
                    client.close(self.request_timeout_ms / 1000)
                else:
                    client.close()
            except Exception:
                log.exception("closing %r failed", client)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("Kafka transport is closed")

    def _connect_error(self, what: str, exc: KafkaError) -> TransportError:
        if isinstance(exc, KafkaTimeoutError):
            return _unreachable(self.bootstrap, self.request_timeout_ms / 1000, exc)
        return TransportError(f"cannot create a Kafka {what} for {self.bootstrap}: {exc}")

    def _register(self, client: _KafkaProducer | _KafkaConsumer) -> None:
        with self._lock:
            if not self._closed:
                self._open.add(client)
                return
        client.close()
        raise TransportError("Kafka transport is closed")

    def _forget(self, client: _KafkaProducer | _KafkaConsumer) -> None:
        with self._lock:
            self._open.discard(client)


def _delivery_error(topic: str, exc: BaseException) -> TransportError:
    err = TransportError(f"delivery to {topic} failed: {exc}")
    err.__cause__ = exc
    return err


def _broken(client: KafkaProducer) -> RebuildReason | None:
    """Why ``client`` will never complete another record, or None while it can.

    Reads kafka-python 3.x internals (``_sender``, ``_transaction_manager``); attributes it does not have
    count as healthy, so another version degrades to no healing rather than to an error.
    """
    if getattr(client, "_closed", False):
        return "closed"
    sender = getattr(client, "_sender", None)
    if sender is not None and not sender.is_alive():
        return "io_thread_stopped"
    manager = getattr(client, "_transaction_manager", None)
    if manager is None:
        return None
    if manager.has_fatal_error():
        return "fatal_error"
    # After reset_producer_id() the manager is READY without an id, and the sender requests one only from
    # UNINITIALIZED: it waits forever (module docstring). A request in progress is INITIALIZING or BUMPING.
    state = getattr(getattr(manager, "_current_state", None), "name", None)
    if not manager.is_transactional() and not manager.has_producer_id() and state == "READY":
        return "producer_id_reset"
    return None


def _undelivered(client: KafkaProducer) -> int:
    """Batches ``client`` has not completed (0 where kafka-python does not expose them)."""
    incomplete = getattr(getattr(client, "_accumulator", None), "_incomplete", None)
    return len(incomplete.all()) if incomplete is not None else 0


def _force_close(client: KafkaProducer) -> None:
    """Fail every record ``client`` still holds (their errbacks run) and close it without waiting."""
    sender = getattr(client, "_sender", None)
    if sender is not None and sender.is_alive():
        sender.force_close()  # fails every incomplete batch, then the I/O thread exits
        if threading.current_thread() is not sender:
            sender.join(_FORCE_CLOSE_JOIN_S)
    client.close(timeout=0)


class _KafkaProducer(Producer):
    """The transport's producer: one kafka-python client, replaced when :func:`_broken` says it is done.

    The check runs before every ``send`` and, every ``_FLUSH_CHECK_S``, during ``flush``; it reads a few
    attributes, so it costs nothing next to a send. The replacement gets the old client's ``api_version``
    and so is made without waiting for the broker. Records the old client held fail (``on_done(exc)``):
    they may or may not have reached the broker, and the caller decides whether to send them again.
    """

    def __init__(self, client: KafkaProducer, owner: KafkaTransport) -> None:
        self._client = client
        self._owner = owner
        self._closed = False
        self._lock = threading.Lock()  # serialises rebuilds and close
        self._rebuilt_at = -_REBUILD_INTERVAL_S
        self._rebuilds = 0

    @property
    def rebuilds(self) -> int:
        """How many times the kafka-python client was replaced."""
        return self._rebuilds

    def _healthy(self) -> KafkaProducer:
        """The client to use: the current one, or a new one if the current one is broken.

        Raises
        ------
        TransportError
            The producer is closed, or its client is broken and was replaced less than
            ``_REBUILD_INTERVAL_S`` ago (or a new one could not be made).
        """
        client = self._client
        if self._closed:
            raise TransportError("the Kafka producer is closed")
        reason = _broken(client)
        if reason is None:
            return client
        with self._lock:
            if self._closed:
                raise TransportError("the Kafka producer is closed")
            if self._client is not client:  # another thread rebuilt it meanwhile
                return self._client
            now = time.monotonic()
            if now - self._rebuilt_at < _REBUILD_INTERVAL_S:
                raise TransportError(f"the Kafka producer's client is broken ({reason}); it was replaced "
                                     f"{now - self._rebuilt_at:.1f} s ago and is replaced again shortly")
            self._rebuilt_at = now
            self._client = self._owner._new_client(api_version=client.config.get("api_version"))
            self._rebuilds += 1
            self._owner._rebuild_counter.labels(reason=reason).inc()
        log.warning("Kafka producer for %s cannot deliver any more (%s): replaced it with a new client; its %d "
                    "undelivered batch(es) fail with TransportError", self._owner.bootstrap, reason,
                    _undelivered(client))
        try:
            _force_close(client)
        except Exception:  # the old client is gone either way; the new one is in place
            log.exception("closing the replaced Kafka producer client failed")
        return self._client

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        on_done: DoneCallback | None = None,
    ) -> None:
        validate_topic(topic)
        header_list = [(name, bytes(data)) for name, data in headers]
        client = self._healthy()
        try:
            future = client.send(topic, value=value, key=key, headers=header_list)
        except KafkaError as exc:
            raise TransportError(f"cannot enqueue record for {topic}: {exc}") from exc
        if on_done is not None:
            future.add_callback(lambda _metadata: on_done(None))
            future.add_errback(lambda exc: on_done(_delivery_error(topic, exc)))

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every record sent so far; a client found broken meanwhile is replaced, which fails its
        records and so completes them."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            client = self._healthy()
            step = _FLUSH_CHECK_S if deadline is None else max(0.0, min(_FLUSH_CHECK_S, deadline - time.monotonic()))
            try:
                client.flush(timeout=step)
                return
            except KafkaError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TransportError(f"flush did not complete within {timeout_s} s: {exc}") from exc

    def close(self, timeout_s: float | None = None) -> None:
        """Wait up to ``timeout_s`` for pending records, then fail the rest (``on_done(exc)``) and close.

        kafka-python's own ``close(timeout)`` raises ``KafkaTimeoutError`` from its internal flush when
        records are still pending and leaves the producer open (its ``__del__`` then raises again), so
        the flush is done here first and, on timeout, the I/O thread is force-closed before ``close``.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client = self._client
        self._owner._forget(self)
        # Flush in steps so that a client that breaks meanwhile (it would never complete) is noticed.
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pending = _broken(client) is not None
        while not pending:
            step = _FLUSH_CHECK_S if deadline is None else max(0.0, min(_FLUSH_CHECK_S, deadline - time.monotonic()))
            try:
                client.flush(timeout=step)
                break
            except KafkaError:
                pending = (deadline is not None and time.monotonic() >= deadline) or _broken(client) is not None
        try:
            if pending:
                log.warning("closing a Kafka producer with %d undelivered batch(es); their records fail with "
                            "TransportError", _undelivered(client))
                _force_close(client)
            else:
                client.close(timeout=timeout_s)
        except KafkaError as exc:
            raise TransportError(f"closing the Kafka producer failed: {exc}") from exc


class _Assignments(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Counts assignments and hands revocations to the consumer's listener. kafka-python 3 runs these on its IO
    thread, inside the loop that a blocking call (a commit, a flush) needs: the listener runs on a thread of its
    own while this coroutine waits for it without holding the loop, so that its commit (and the heartbeats) go
    through. The caller's ``poll`` does not return before."""

    def __init__(self, consumer: _KafkaConsumer, client: KafkaConsumer) -> None:
        self._consumer = consumer
        self._client = client

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("Kafka consumer group rebalancing: %d partition(s) revoked", len(revoked))
        listener = self._consumer.revoke_listener
        if not revoked or listener is None:
            return
        partitions = sorted((tp.topic, tp.partition) for tp in revoked)
        done, failed = threading.Event(), []

        def call() -> None:
            try:
                listener(partitions)
            except BaseException as exc:  # raised again on the loop, where kafka-python logs it
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=call, name="inferwatch-revoke", daemon=True).start()
        while not done.is_set():
            await self._client._net.sleep(0.005)
        if failed:
            raise failed[0]

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._consumer.assigned += 1
        log.info("Kafka consumer assigned %d partition(s): %s", len(assigned),
                 ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(assigned)) or "none")


#: What the group coordinator answers a commit from a member that is rebalancing or was left behind.
_REBALANCING = (RebalanceInProgressError, CommitFailedError, IllegalGenerationError, UnknownMemberIdError)


class _KafkaConsumer(Consumer):
    def __init__(self, client: KafkaConsumer, owner: KafkaTransport) -> None:
        self._client = client
        self._owner = owner
        self._closed = False
        self.assigned = 0  # counted by _Assignments, inside poll()
        self.revoke_listener: Callable[[Sequence[tuple[str, int]]], None] | None = None

    @property
    def rebalances(self) -> int:
        return self.assigned

    def on_revoke(self, listener: Callable[[Sequence[tuple[str, int]]], None] | None) -> None:
        self.revoke_listener = listener

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s!r}")
        if self._closed:
            raise TransportError("consumer is closed")
        try:
            batches = self._client.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            raise TransportError(f"poll failed: {exc}") from exc
        out: list[Message] = []
        for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition)):
            out.extend(_message(r) for r in batches[tp])
        return out

    def lag(self) -> dict[tuple[str, int], int]:
        """The highwater mark comes with every fetch response and the position moves as records are returned,
        so both are known locally; ``position`` is asked with no time to wait, so a partition whose position
        is being reset (just assigned or rewound) costs no round trip and is left out until it has one."""
        if self._closed:
            raise TransportError("consumer is closed")
        out: dict[tuple[str, int], int] = {}
        try:
            for tp in self._client.assignment():
                end = self._client.highwater(tp)
                position = self._client.position(tp, timeout_ms=0) if end is not None else None
                if position is not None:
                    out[(tp.topic, tp.partition)] = max(0, end - position)
        except KafkaError:  # e.g. IllegalStateError: unassigned by a rebalance since assignment() answered
            return out
        return out

    def rewind(self) -> None:
        """kafka-python keeps the position of a partition that stays assigned across a rebalance; a reader that
        dropped what it held uncommitted needs those records again."""
        if self._closed:
            raise TransportError("consumer is closed")
        try:
            for tp in self._client.assignment():
                offset = self._client.committed(tp, timeout_ms=self._owner.request_timeout_ms)
                if offset is None:
                    self._client.seek_to_beginning(tp)
                else:
                    self._client.seek(tp, offset)
        except KafkaError as exc:
            raise TransportError(f"rewinding to the committed offsets failed: {exc}") from exc

    def commit(self, offsets: Mapping[tuple[str, int], int],
               metadata: Mapping[tuple[str, int], str] | None = None) -> None:
        if self._closed:
            raise TransportError("consumer is closed")
        if not offsets:
            return  # kafka-python's commit() with no offsets would commit every consumed position
        request = {}
        for (topic, partition), offset in offsets.items():
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ValueError(f"offset for {topic}[{partition}] must be an int >= 0, got {offset!r}")
            note = (metadata or {}).get((topic, partition), "")
            request[TopicPartition(topic, partition)] = OffsetAndMetadata(offset, note, -1)
        try:
            self._client.commit(request, timeout_ms=self._owner.request_timeout_ms)
        except _REBALANCING as exc:
            raise CommitRejected(f"commit of {len(request)} partition(s) not accepted while the group "
                                 f"rebalances: {exc}") from exc
        except KafkaError as exc:
            raise TransportError(
                f"commit of {len(request)} partition(s) to {self._owner.bootstrap} failed "
                f"(timeout {self._owner.request_timeout_ms} ms): {exc}"
            ) from exc

    def committed(self, topic: str, partition: int) -> tuple[int, str] | None:
        if self._closed:
            raise TransportError("consumer is closed")
        try:
            found = self._client.committed(TopicPartition(topic, partition), metadata=True,
                                           timeout_ms=self._owner.request_timeout_ms)
        except KafkaError as exc:
            raise TransportError(f"fetching the committed offset of {topic}[{partition}] failed: {exc}") from exc
        if found is None:
            return None
        return int(found.offset), str(found.metadata or "")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner._forget(self)
        try:
            self._client.close(autocommit=False)
        except KafkaError as exc:
            raise TransportError(f"closing the consumer failed: {exc}") from exc
