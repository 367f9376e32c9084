"""Transport-neutral types: the record a consumer sees and the producer/consumer/transport protocols.

Three implementations exist: :class:`monitor.transport.memory.MemoryBus` (embedded, in-process), and for
Apache Kafka :class:`monitor.transport.kafka.KafkaTransport` (kafka-python) and
:class:`monitor.transport.confluent.ConfluentTransport` (confluent-kafka). Code above this layer depends only
on the protocols defined here, so any of them can be swapped in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Consumer", "DoneCallback", "Message", "Producer", "Transport", "validate_topic"]

#: Called once per record: ``None`` once the record is durably stored, else the failure.
DoneCallback = Callable[[BaseException | None], None]

_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


def validate_topic(topic: str) -> str:
    """Return ``topic`` if it is a legal Kafka topic name, else raise :class:`ValueError`.

    Both transports apply the same rule so that code tested on the in-process bus also works on Kafka.
    """
    if not isinstance(topic, str) or not _TOPIC_RE.fullmatch(topic) or topic in {".", ".."}:
        raise ValueError(f"invalid topic name {topic!r}: use 1-249 characters from [A-Za-z0-9._-]")
    return topic


@dataclass(frozen=True)
class Message:
    """One consumed record.

    Attributes
    ----------
    topic, partition, offset
        Where the record lives; ``offset + 1`` is what to commit once it is processed.
    key
        Partitioning key, or ``None``.
    value
        Payload bytes (a Kafka tombstone is delivered as ``b""``).
    headers
        ``(name, value)`` pairs in the order they were sent.
    timestamp_ms
        Record timestamp (producer create time), milliseconds since the Unix epoch.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


@runtime_checkable
class Producer(Protocol):
    """Asynchronous record publisher."""

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        on_done: DoneCallback | None = None,
    ) -> None:
        """Enqueue one record.

        Parameters
        ----------
        topic
            Destination topic (created on first use where the transport allows it).
        value, key, headers
            Record contents; records with the same key keep their order.
        on_done
            Called exactly once: ``on_done(None)`` after the broker acknowledged (or the bus
            stored) the record, ``on_done(exc)`` on failure (``exc`` is a ``TransportError``).
            It may run on a client I/O thread (Kafka) or synchronously inside ``send``
            (memory bus): keep it short and non-blocking. Exceptions it raises are logged.

        Raises
        ------
        TransportError
            The record cannot be enqueued (producer closed, buffer full beyond ``max_block_ms``,
            topic metadata unavailable).
        ValueError, TypeError
            Invalid topic name or argument types (a programming error).
        """
        ...

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every record sent so far has completed (``on_done`` was called).

        Raises
        ------
        TransportError
            The records did not complete within ``timeout_s`` (``None``: wait indefinitely).
        """
        ...

    def close(self, timeout_s: float | None = None) -> None:
        """Flush (up to ``timeout_s``) and release the producer; idempotent."""
        ...


@runtime_checkable
class Consumer(Protocol):
    """Group member reading the topics it subscribed to; offsets are committed explicitly."""

    @property
    def rebalances(self) -> int:
        """How many times this member's partitions were (re)assigned, counting the first assignment.

        A partition it keeps goes on from where it was; one it gains starts at the group's committed offset. A
        reader that holds uncommitted state (open windows) drops it when this number changes, ignores the
        records of that poll and calls :meth:`rewind`."""
        ...

    def rewind(self) -> None:
        """Read every partition this member owns from the group's committed offset again (the earliest record
        where none was committed)."""
        ...

    def on_revoke(self, listener: Callable[[Sequence[tuple[str, int]]], None] | None) -> None:
        """Have ``listener(partitions)`` called from inside :meth:`poll` when a rebalance is about to take
        partitions from this member: the last moment to commit their offsets (it may call :meth:`commit`). On
        Kafka it runs before another member is given them; on the embedded bus at this member's next poll.
        None removes it."""
        ...

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        """Return up to ``max_records`` records, waiting up to ``timeout_s`` if none are ready.

        Records are ordered by partition, then offset. Returns ``[]`` on timeout. A rebalance happens inside
        ``poll`` (see :attr:`rebalances`).

        Raises
        ------
        TransportError
            The consumer or its transport is closed, or the client failed.
        """
        ...

    def lag(self) -> dict[tuple[str, int], int]:
        """``{(topic, partition): records}`` between this member's position and the end of each assigned
        partition, as of the last :meth:`poll` (no request of its own); a partition whose end is not known yet
        (nothing fetched from it) is left out.

        Raises
        ------
        TransportError
            The consumer is closed.
        """
        ...

    def commit(self, offsets: Mapping[tuple[str, int], int],
               metadata: Mapping[tuple[str, int], str] | None = None) -> None:
        """Synchronously commit ``{(topic, partition): next offset to read}`` for the group.

        Only the partitions passed are committed; an empty mapping is a no-op. ``metadata`` attaches a
        short string to a partition's commit (Kafka's offset metadata), read back by :meth:`committed`.

        Raises
        ------
        CommitRejected
            The group is rebalancing or this member's generation is stale; poll again (nothing was lost).
        TransportError
            The commit was not accepted for another reason.
        """
        ...

    def committed(self, topic: str, partition: int) -> tuple[int, str] | None:
        """The group's committed offset and its metadata for one partition, or None if never committed.

        Raises
        ------
        TransportError
            The consumer is closed or the lookup failed.
        """
        ...

    def close(self) -> None:
        """Leave the group and release resources without committing; idempotent."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Factory of producers and consumers bound to one bus or cluster."""

    def producer(self) -> Producer:
        """Create a producer."""
        ...

    def consumer(self, topics: Sequence[str], group: str) -> Consumer:
        """Create a consumer of ``topics`` in consumer group ``group``."""
        ...

    def close(self) -> None:
        """Close every producer and consumer still open; idempotent."""
        ...
