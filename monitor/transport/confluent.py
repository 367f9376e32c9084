"""Apache Kafka transport on confluent-kafka (librdkafka): the same contract as :mod:`monitor.transport.kafka`.

``kafka.client: confluent`` in the config picks it; it is the ``inferwatch[confluent]`` extra, imported when a
:class:`ConfluentTransport` is made, so importing :mod:`monitor.transport` never needs it. Topics are created
and readiness is checked by :func:`~monitor.transport.kafka.ensure_topics` and
:func:`~monitor.transport.kafka.wait_until_ready` for both backends.

Where librdkafka differs from kafka-python, and what this module does about it:

* Callbacks (delivery reports, errors, logs) run only inside ``poll``/``flush``: each producer has a thread that
  polls its client, the "client I/O thread" on which ``on_done`` runs.
* ``produce`` never blocks: a full queue raises ``BufferError`` at once. ``send`` waits for room up to
  ``max_block_ms`` (kafka-python blocks for buffer space that long), then raises ``TransportError``.
* Clients connect in the background and never fail to be made: ``producer()`` and ``consumer()`` ask for the
  cluster's metadata first, so that an unreachable broker is a ``TransportError`` within ``request_timeout_ms``,
  as with kafka-python.
* ``Consumer.consume(n, timeout)`` waits until it has ``n`` records or the timeout passed; :meth:`poll` takes
  what is ready, and only when nothing is waits for the first record, so a poll returns as soon as records came.
* librdkafka holds a synchronous commit for an absent group coordinator up to ``session.timeout.ms`` (45 s), and
  a ``committed`` lookup or a ``close`` queued behind it as long: they run on a thread of the consumer's own and
  are waited for ``request_timeout_ms``, the bound kafka-python applies to them.
* librdkafka's idempotent producer survives expired and refused batches (it bumps its epoch), which
  kafka-python 3.0.12 does not; a fatal error still ends a client, which is then replaced as in
  :mod:`monitor.transport.kafka` (``inferwatch_transport_producer_rebuilds_total{reason="fatal_error"}``).
* The group protocol is eager in both (librdkafka's default ``range,roundrobin``): at a rebalance a member gives
  up every partition and reads those it gets back from the committed offset. That is what :meth:`Consumer.rewind`
  asks for, so a reader that rewinds after a rebalance sees the same records with either backend.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry

from monitor.errors import CommitRejected, ConfigError, TransportError
from monitor.transport.base import Consumer, DoneCallback, Message, Producer, Transport, validate_topic
from monitor.transport.kafka import RebuildReason, rebuild_counter

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["ConfluentTransport"]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: librdkafka's own log lines (connection retries and the like) go to this logger, WARNING and up unless set.
_librdkafka_log = logging.getLogger("confluent_kafka")
if _librdkafka_log.level == logging.NOTSET:
    _librdkafka_log.setLevel(logging.WARNING)

#: How long a producer's callback thread waits in one ``poll`` (it returns at once when there is work).
_SERVE_S = 0.1
#: How often a flush checks that its client can still complete records.
_FLUSH_CHECK_S = 0.5
#: Least time between two rebuilds of one producer (see monitor.transport.kafka).
_REBUILD_INTERVAL_S = 1.0
#: How long a send waits between two tries while librdkafka's queue is full.
_QUEUE_FULL_WAIT_S = 0.005
#: How long a new consumer waits for its topics to appear in the cluster's metadata before subscribing anyway.
_TOPIC_METADATA_WAIT_S = 10.0
#: librdkafka's delivery timeout is 300 s by default, kafka-python's 120 s: the transports keep the same bound.
_MESSAGE_TIMEOUT_MS = 120_000


def _library() -> ModuleType:
    """The ``confluent_kafka`` module, or :class:`ConfigError` with the install hint (after the first import, a
    lookup in ``sys.modules``)."""
    try:
        import confluent_kafka
    except ImportError as exc:
        raise ConfigError(f"kafka.client: confluent needs the confluent-kafka package ({exc}): "
                          "pip install 'inferwatch[confluent]'") from exc
    return confluent_kafka


def _describe(exc: BaseException) -> str:
    """``NAME: message`` of the KafkaError a KafkaException carries, else the exception's text."""
    err = exc.args[0] if exc.args else None
    if isinstance(err, _library().KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(exc)


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    """A consumed record's headers: librdkafka gives ``[(name, bytes | None), ...]``, or None for none."""
    return tuple((name, data or b"") for name, data in raw or ())


def _log_error(client: str, err: confluent_kafka.KafkaError) -> None:
    """A non-fatal error librdkafka reports (it retries on its own). It reports each failed connection attempt,
    which its own log has already said: those go to DEBUG, the loss of every broker to WARNING, the rest to INFO."""
    codes = _library().KafkaError
    level = {codes._ALL_BROKERS_DOWN: logging.WARNING, codes._TRANSPORT: logging.DEBUG}.get(err.code(), logging.INFO)
    log.log(level, "Kafka %s: %s: %s", client, err.name(), err.str())


def _unreachable(bootstrap: str, timeout_s: float, exc: BaseException) -> TransportError:
    err = TransportError(f"Kafka broker unreachable at {bootstrap} after {timeout_s:g} s: {_describe(exc)}")
    err.__cause__ = exc
    return err


class ConfluentTransport(Transport):
    """Factory of confluent-kafka (librdkafka) producers and consumers for one cluster.

    The parameters are those of :class:`~monitor.transport.kafka.KafkaTransport`, so either can be built from the
    same settings; ``extra_producer`` and ``extra_consumer`` take librdkafka's option names
    (``"message.timeout.ms"``), applied last.

    Raises
    ------
    ConfigError
        confluent-kafka is not installed (the message says how to install it).
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
        self._ck = _library()
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.max_block_ms = max_block_ms
        self.request_timeout_ms = request_timeout_ms
        self._producer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": True,
            # the Java client's (and kafka-python's) key hashing, so a key lands on the same partition whichever
            # client wrote it: librdkafka's default (CRC32) would split one model version's records
            "partitioner": "murmur2_random",
            "compression.type": "none",
            "linger.ms": linger_ms,
            "request.timeout.ms": max(1, request_timeout_ms),
            "message.timeout.ms": _MESSAGE_TIMEOUT_MS,
            "logger": _librdkafka_log,
            **(extra_producer or {}),
        }
        self._consumer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # A subscribed topic created after the member joined is noticed at the next refresh (5 min by default).
            "topic.metadata.refresh.interval.ms": 5000,
            "logger": _librdkafka_log,
            **(extra_consumer or {}),
        }
        self._lock = threading.Lock()
        self._open: set[_ConfluentProducer | _ConfluentConsumer] = set()
        self._closed = False
        self._rebuild_counter = rebuild_counter(registry)

    @property
    def _timeout_s(self) -> float:
        return self.request_timeout_ms / 1000

    def producer(self) -> Producer:
        """Create an idempotent producer (``acks=all``) once the cluster answers; a client that meets a fatal
        error is replaced.

        Raises
        ------
        TransportError
            The broker cannot be reached within ``request_timeout_ms`` or the options are invalid.
        """
        self._check_open()
        client = self._new_client()
        try:
            client.handle.list_topics(timeout=self._timeout_s)
        except self._ck.KafkaException as exc:
            client.retire()
            raise _unreachable(self.bootstrap, self._timeout_s, exc) from exc
        producer = _ConfluentProducer(client, self)
        self._register(producer)
        return producer

    def _new_client(self) -> _ProducerClient:
        try:
            return _ProducerClient(self._ck, self._producer_config)
        except self._ck.KafkaException as exc:
            raise TransportError(f"cannot create a Kafka producer for {self.bootstrap}: {_describe(exc)}") from exc

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
        config = {"client.id": f"{self.client_id}-{group}", **self._consumer_config, "group.id": group}
        try:
            handle: confluent_kafka.Consumer = self._ck.Consumer(config)
        except self._ck.KafkaException as exc:
            raise TransportError(f"cannot create a Kafka consumer for {self.bootstrap}: {_describe(exc)}") from exc
        consumer = _ConfluentConsumer(handle, self)
        try:
            # Subscribe once the topics are in the metadata: a member that joins without them is assigned nothing
            # and gets its partitions only at a metadata refresh and another rebalance.
            deadline = time.monotonic() + _TOPIC_METADATA_WAIT_S
            while not set(names) <= set(handle.list_topics(timeout=self._timeout_s).topics):
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            handle.subscribe(list(names), on_assign=consumer._on_assign, on_revoke=consumer._on_revoke,
                             on_lost=consumer._on_lost)
        except self._ck.KafkaException as exc:
            handle.close()
            raise _unreachable(self.bootstrap, self._timeout_s, exc) from exc
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
                if isinstance(client, _ConfluentProducer):
                    client.close(self._timeout_s)
                else:
                    client.close()
            except Exception:
                log.exception("closing %r failed", client)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("Kafka transport is closed")

    def _register(self, client: _ConfluentProducer | _ConfluentConsumer) -> None:
        with self._lock:
            if not self._closed:
                self._open.add(client)
                return
        client.close()
        raise TransportError("Kafka transport is closed")

    def _forget(self, client: _ConfluentProducer | _ConfluentConsumer) -> None:
        with self._lock:
            self._open.discard(client)


class _ProducerClient:
    """One librdkafka producer, the thread that serves its callbacks (they run only inside ``poll``), and the
    records it has not reported yet.

    confluent-kafka raises a fatal error from the ``poll`` or ``flush`` that meets it, instead of calling
    ``error_cb``, and the delivery reports that poll would have served can be lost with it. Every tracked record
    is therefore reported exactly once: by its delivery report, or, when the client is retired, as failed.
    """

    def __init__(self, ck: ModuleType, config: Mapping[str, Any]) -> None:
        self.fatal: str | None = None
        self.handle: confluent_kafka.Producer = ck.Producer({**config, "error_cb": self._on_error})
        self.pending: set[_Delivery] = set()  # bounded by librdkafka's queue (queue.buffering.max.messages)
        self._ck = ck
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="inferwatch-confluent-producer", daemon=True)
        self._thread.start()

    def _on_error(self, err: confluent_kafka.KafkaError) -> None:
        _log_error("producer", err)

    def failed(self, exc: BaseException) -> bool:
        """Whether ``exc`` (raised by a call on :attr:`handle`) is a fatal error; if so, remember it. A Python
        callback that librdkafka ran while the fatal error was already set fails with a SystemError whose cause
        is that error."""
        if isinstance(exc, SystemError) and isinstance(exc.__cause__, self._ck.KafkaException):
            exc = exc.__cause__
        err = exc.args[0] if isinstance(exc, self._ck.KafkaException) and exc.args else None
        if not isinstance(err, self._ck.KafkaError) or not (err.fatal() or err.code() == self._ck.KafkaError._FATAL):
            return False
        if self.fatal is None:
            self.fatal = f"{err.name()}: {err.str()}"
            log.error("Kafka producer: fatal error %s (the client is replaced at the next send)", self.fatal)
        return True

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self.handle.poll(_SERVE_S)
            except Exception as exc:  # the callbacks catch their own errors; this thread must go on serving
                if not self.failed(exc):
                    log.exception("serving the Kafka producer's callbacks failed")

    def broken(self) -> RebuildReason | None:
        """Why this client will never complete another record, or None while it can."""
        return "fatal_error" if self.fatal is not None else None

    def retire(self, close: bool = True) -> None:
        """Stop serving, fail whatever is still queued, in flight or unreported (``on_done(exc)``), and close the
        client (``close=False`` leaves that to the garbage collector, for a client other threads may still
        be calling)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        try:
            self.handle.purge(in_queue=True, in_flight=True)
            self.handle.poll(0)  # delivers the failures of the purged records
            if close:
                self.handle.close()
        except Exception as exc:
            if not self.failed(exc):
                raise
        finally:
            for delivery in list(self.pending):
                delivery.report(None, None, lost=True)


class _Delivery:
    """The librdkafka delivery callback of one record: calls ``on_done`` once, with a TransportError on failure."""

    __slots__ = ("_client", "_on_done", "_topic")

    def __init__(self, client: _ProducerClient, topic: str, on_done: DoneCallback) -> None:
        self._client = client
        self._topic = topic
        self._on_done = on_done
        client.pending.add(self)

    def __call__(self, err: confluent_kafka.KafkaError | None, _message: object) -> None:
        self.report(err, _message)

    def report(self, err: confluent_kafka.KafkaError | None, _message: object, lost: bool = False) -> None:
        # The outcome first: a callback run while a fatal error is set fails at its first call (SystemError),
        # and must then leave the record pending, for the client's replacement to report it lost.
        if self not in self._client.pending:
            return
        if lost:
            outcome: TransportError | None = TransportError(
                f"delivery to {self._topic} unknown: the Kafka producer client was replaced or closed before "
                f"reporting it ({self._client.fatal or 'closed'})")
        elif err is not None:
            outcome = TransportError(f"delivery to {self._topic} failed: {err.name()}: {err.str()}")
        else:
            outcome = None
        try:
            self._client.pending.remove(self)  # atomic: whoever removes it reports it
        except KeyError:
            return
        try:
            self._on_done(outcome)
        except Exception:
            log.exception("on_done of a record for %s raised", self._topic)

    def forget(self) -> None:
        """The record was never enqueued: nothing will report it."""
        self._client.pending.discard(self)


class _ConfluentProducer(Producer):
    """The transport's producer: one :class:`_ProducerClient`, replaced when it reports a fatal error."""

    def __init__(self, client: _ProducerClient, owner: ConfluentTransport) -> None:
        self._client = client
        self._owner = owner
        self._closed = False
        self._lock = threading.Lock()  # serialises rebuilds and close
        self._rebuilt_at = -_REBUILD_INTERVAL_S
        self._rebuilds = 0

    @property
    def rebuilds(self) -> int:
        """How many times the librdkafka client was replaced."""
        return self._rebuilds

    def _healthy(self) -> _ProducerClient:
        """The current client, or a new one if the current one met a fatal error (see KafkaTransport's)."""
        client = self._client
        if self._closed:
            raise TransportError("the Kafka producer is closed")
        reason = client.broken()
        if reason is None:
            return client
        with self._lock:
            if self._closed:
                raise TransportError("the Kafka producer is closed")
            if self._client is not client:  # another thread rebuilt it meanwhile
                return self._client
            now = time.monotonic()
            if now - self._rebuilt_at < _REBUILD_INTERVAL_S:
                raise TransportError(f"the Kafka producer's client is broken ({client.fatal}); it was replaced "
                                     f"{now - self._rebuilt_at:.1f} s ago and is replaced again shortly")
            self._rebuilt_at = now
            self._client = self._owner._new_client()
            self._rebuilds += 1
            self._owner._rebuild_counter.labels(reason=reason).inc()
        log.warning("Kafka producer for %s cannot deliver any more (%s): replaced it with a new client; its %d "
                    "undelivered record(s) fail with TransportError", self._owner.bootstrap, client.fatal,
                    len(client.pending))
        try:
            client.retire(close=False)  # another thread may still be flushing it: freed once the last one is done
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
        header_list: list[tuple[str, str | bytes | None]] | None = [(n, bytes(d)) for n, d in headers] or None
        client = self._healthy()
        delivery = None if on_done is None else _Delivery(client, topic, on_done)
        full_since: float | None = None
        while True:
            try:
                client.handle.produce(topic, value, key, on_delivery=delivery, headers=header_list)
                return
            except BufferError as exc:  # librdkafka's queue is full: wait for room as kafka-python would
                now = time.monotonic()
                full_since = now if full_since is None else full_since
                if now - full_since < self._owner.max_block_ms / 1000:
                    time.sleep(_QUEUE_FULL_WAIT_S)
                    continue
                error = TransportError(f"cannot enqueue record for {topic}: the producer's queue stayed full "
                                       f"({len(client.handle)} records) for {self._owner.max_block_ms} ms")
                cause: BaseException = exc
            except (self._owner._ck.KafkaException, RuntimeError, SystemError) as exc:  # RuntimeError: closed
                client.failed(exc)
                error, cause = TransportError(f"cannot enqueue record for {topic}: {_describe(exc)}"), exc
            if delivery is not None:
                delivery.forget()
            raise error from cause

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every record sent so far; a client found broken meanwhile is replaced, which fails its
        records and so completes them."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            client = self._healthy()
            step = _FLUSH_CHECK_S if deadline is None else max(0.0, min(_FLUSH_CHECK_S, deadline - time.monotonic()))
            try:
                left = client.handle.flush(step)
            except (self._owner._ck.KafkaException, RuntimeError, SystemError) as exc:
                if client.failed(exc) or isinstance(exc, RuntimeError):  # replaced at the next turn, or already
                    continue
                raise TransportError(f"flush failed: {_describe(exc)}") from exc
            if left == 0:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TransportError(f"flush did not complete within {timeout_s} s: {left} record(s) pending")

    def close(self, timeout_s: float | None = None) -> None:
        """Wait up to ``timeout_s`` for pending records, then fail the rest (``on_done(exc)``) and close."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client = self._client
        self._owner._forget(self)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        left = len(client.handle)
        while left and client.broken() is None:
            if deadline is not None and time.monotonic() >= deadline:
                break
            step = _FLUSH_CHECK_S if deadline is None else max(0.0, min(_FLUSH_CHECK_S, deadline - time.monotonic()))
            try:
                left = client.handle.flush(step)
            except (self._owner._ck.KafkaException, SystemError) as exc:
                if not client.failed(exc):
                    raise TransportError(f"closing the Kafka producer failed: {_describe(exc)}") from exc
        undelivered = max(left, len(client.pending))  # pending: those with on_done; left: librdkafka's count
        if undelivered:
            log.warning("closing a Kafka producer with %d undelivered record(s); they fail with TransportError",
                        undelivered)
        try:
            client.retire()
        except self._owner._ck.KafkaException as exc:
            raise TransportError(f"closing the Kafka producer failed: {_describe(exc)}") from exc


class _Worker:
    """One daemon thread that runs calls in order, each waited for as long as its caller likes: a call librdkafka
    holds delays the calls after it, never the caller beyond its wait nor the exit of the process."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((call, future))
        return future

    def stop(self) -> None:
        """End the thread once the calls submitted so far have run."""
        self._calls.put(None)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # handed to the waiting caller
                    future.set_exception(exc)


class _ConfluentConsumer(Consumer):
    def __init__(self, handle: confluent_kafka.Consumer, owner: ConfluentTransport) -> None:
        self._handle = handle
        self._owner = owner
        self._ck = owner._ck
        self._closed = False
        self._assigned = 0  # counted by _on_assign, inside poll()
        self._revoke_listener: Callable[[Sequence[tuple[str, int]]], None] | None = None
        self._in_callback = False
        # librdkafka holds a synchronous commit for the group coordinator up to session.timeout.ms (45 s), whatever
        # the request timeout, and a committed() lookup or a close behind it as long: they run on this thread, in
        # order, and are waited for request_timeout_ms.
        self._offsets = _Worker("inferwatch-confluent-offsets")
        self._rejected = frozenset(getattr(self._ck.KafkaError, name) for name in (
            "REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "STALE_MEMBER_EPOCH",
            "_ASSIGNMENT_LOST"))  # what a commit from a member that is rebalancing or was left behind meets

    # librdkafka calls these from inside consume(); when on_assign does not assign, the client does it after.
    def _on_assign(self, _client: object, partitions: list[confluent_kafka.TopicPartition]) -> None:
        self._assigned += 1
        log.info("Kafka consumer assigned %d partition(s): %s", len(partitions),
                 ", ".join(f"{tp.topic}-{tp.partition}" for tp in partitions) or "none")

    def _on_revoke(self, _client: object, partitions: list[confluent_kafka.TopicPartition]) -> None:
        log.info("Kafka consumer group rebalancing: %d partition(s) revoked", len(partitions))
        if partitions and self._revoke_listener is not None:
            self._in_callback = True  # its commits run right here, on the thread librdkafka called back on
            try:
                self._revoke_listener(sorted((tp.topic, tp.partition) for tp in partitions))
            finally:
                self._in_callback = False

    def on_revoke(self, listener: Callable[[Sequence[tuple[str, int]]], None] | None) -> None:
        self._revoke_listener = listener

    def _on_lost(self, _client: object, partitions: list[confluent_kafka.TopicPartition]) -> None:
        log.warning("Kafka consumer lost %d partition(s) (its session expired)", len(partitions))

    @property
    def rebalances(self) -> int:
        return self._assigned

    def _bounded(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` (a commit or an offset lookup) on the offsets thread, waited for ``request_timeout_ms``."""
        try:
            return self._offsets.submit(call).result(timeout=self._owner._timeout_s)
        except TimeoutError as exc:
            raise TransportError(f"{what} at {self._owner.bootstrap} did not complete within "
                                 f"{self._owner.request_timeout_ms} ms; is the group coordinator down?") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("consumer is closed")

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s!r}")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records!r}")
        self._check_open()
        try:
            # consume(n, t) waits for n records or t seconds: take what is ready, and wait only for a first one.
            records = self._handle.consume(max_records, 0)
            if not records and timeout_s > 0:
                first = self._handle.poll(timeout_s)
                if first is not None:
                    records = [first, *(self._handle.consume(max_records - 1, 0) if max_records > 1 else ())]
        except (self._ck.KafkaException, RuntimeError) as exc:
            raise TransportError(f"poll failed: {_describe(exc)}") from exc
        out: list[Message] = []
        for r in records:
            err = r.error()
            if err is not None:
                if err.fatal():
                    raise TransportError(f"poll failed: {err.name()}: {err.str()}")
                _log_error("consumer", err)
                continue
            out.append(Message(
                topic=r.topic() or "",
                partition=r.partition() or 0,
                offset=r.offset() or 0,
                key=r.key(),
                value=r.value() or b"",
                headers=_headers(r.headers()),
                timestamp_ms=r.timestamp()[1],
            ))
        out.sort(key=lambda m: (m.topic, m.partition))  # stable: offsets stay in order within a partition
        return out

    def lag(self) -> dict[tuple[str, int], int]:
        """Both numbers are local: the high watermark comes with every fetch response, the position moves as
        records are returned; a partition without either yet is left out."""
        self._check_open()
        out: dict[tuple[str, int], int] = {}
        try:
            for tp in self._handle.position(self._handle.assignment()):
                if tp.offset < 0:
                    continue
                _, end = self._handle.get_watermark_offsets(tp, cached=True)
                if end >= 0:
                    out[(tp.topic, tp.partition)] = max(0, end - tp.offset)
        except self._ck.KafkaException:  # e.g. unassigned by a rebalance since assignment() answered
            return out
        return out

    def rewind(self) -> None:
        """A seek on a partition that is not fetching yet (just assigned) fails with ``_STATE``; such a partition
        starts at the committed offset anyway, which is where the seek would have put it."""
        self._check_open()
        ck = self._ck
        try:
            assigned = self._handle.assignment()
            committed = self._bounded("fetching the committed offsets", lambda: self._handle.committed(
                assigned, timeout=self._owner._timeout_s)) if assigned else []
            for tp in committed:
                if tp.error is not None:
                    raise TransportError(f"rewinding {tp.topic}[{tp.partition}] failed: {tp.error.str()}")
                offset = tp.offset if tp.offset >= 0 else ck.OFFSET_BEGINNING
                try:
                    self._handle.seek(ck.TopicPartition(tp.topic, tp.partition, offset))
                except ck.KafkaException as exc:
                    if exc.args[0].code() != ck.KafkaError._STATE:
                        raise
        except ck.KafkaException as exc:
            raise TransportError(f"rewinding to the committed offsets failed: {_describe(exc)}") from exc

    def commit(self, offsets: Mapping[tuple[str, int], int],
               metadata: Mapping[tuple[str, int], str] | None = None) -> None:
        self._check_open()
        if not offsets:
            return
        ck = self._ck
        request = []
        for (topic, partition), offset in offsets.items():
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ValueError(f"offset for {topic}[{partition}] must be an int >= 0, got {offset!r}")
            note = (metadata or {}).get((topic, partition), "")
            request.append(ck.TopicPartition(topic, partition, offset, metadata=note))
        def commit() -> list[confluent_kafka.TopicPartition]:
            return self._handle.commit(offsets=request, asynchronous=False)

        try:
            # inside a rebalance callback librdkafka serves a commit made on its own thread (one from the offsets
            # thread could wait there until the callback returns)
            results = commit() if self._in_callback else self._bounded(f"commit of {len(request)} partition(s)",
                                                                       commit)
        except ck.KafkaException as exc:
            raise self._commit_error(len(request), exc.args[0], exc) from exc
        for tp in results:
            if tp.error is not None:
                raise self._commit_error(len(request), tp.error, None)

    def _commit_error(self, count: int, err: confluent_kafka.KafkaError, exc: BaseException | None) -> TransportError:
        if err.code() in self._rejected:
            error: TransportError = CommitRejected(f"commit of {count} partition(s) not accepted while the group "
                                                   f"rebalances: {err.name()}: {err.str()}")
        else:
            error = TransportError(f"commit of {count} partition(s) to {self._owner.bootstrap} failed: "
                                   f"{err.name()}: {err.str()}")
        error.__cause__ = exc
        return error

    def committed(self, topic: str, partition: int) -> tuple[int, str] | None:
        self._check_open()
        ck = self._ck
        try:
            query = [ck.TopicPartition(topic, partition)]
            (found,) = self._bounded(f"fetching the committed offset of {topic}[{partition}]",
                                     lambda: self._handle.committed(query, timeout=self._owner._timeout_s))
        except ck.KafkaException as exc:
            raise TransportError(f"fetching the committed offset of {topic}[{partition}] failed: "
                                 f"{_describe(exc)}") from exc
        if found.error is not None:
            raise TransportError(f"fetching the committed offset of {topic}[{partition}] failed: "
                                 f"{found.error.name()}: {found.error.str()}")
        if found.offset < 0:
            return None
        return found.offset, found.metadata or ""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner._forget(self)
        closing = self._offsets.submit(self._handle.close)  # leaves the group; commits nothing (no auto-commit)
        self._offsets.stop()
        try:
            closing.result(timeout=self._owner._timeout_s)
        except TimeoutError:
            log.warning("the Kafka consumer is still leaving its group after %d ms (a commit waits for the group "
                        "coordinator); it goes on in the background", self._owner.request_timeout_ms)
        except (self._ck.KafkaException, RuntimeError) as exc:
            raise TransportError(f"closing the consumer failed: {_describe(exc)}") from exc
