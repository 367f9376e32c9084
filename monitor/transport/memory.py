"""The embedded, in-process transport: a bounded, partitioned log with consumer groups.

Semantics (a deliberately small subset of Kafka's):

* Every topic has the bus's ``partitions`` partitions and is created on first use (send or subscribe).
* A record's partition is ``zlib.crc32(key) % partitions``; records without a key go round robin.
* Each consumer group has committed offsets per partition. A consumer that gains a partition starts
  reading at the group's committed offset, or at the earliest retained record if there is none.
* Consumers of one group share partitions: the live members subscribed to a topic, in creation
  order, take partition ``p`` when ``p % members == rank``. The split is recomputed on every poll, so
  creating or closing a member rebalances the group at the other members' next poll (a member that
  loses a partition forgets its position; its successor resumes from the committed offset).
* A group is a reader of a topic from the moment one of its consumers subscribes to it, and stays one
  (like committed offsets in Kafka). When a partition holds ``max_records_per_partition`` records, a
  send drops the oldest one only if every reader group has committed past it; otherwise the send
  fails with ``on_done(TransportError("bus full ..."))``. A topic with no reader groups behaves like a
  retention-bounded log and just drops its oldest record. The same holds for ``max_bytes_per_partition``
  (the bytes of keys, values and headers a partition retains), so memory stays bounded whatever the
  records' sizes; a record larger than that bound on its own is refused. Records every reader group has
  committed past are kept only up to ``retain_bytes_per_partition``.
* ``send`` calls ``on_done`` synchronously, before it returns; ``flush`` is therefore a no-op.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence

from monitor.errors import CommitRejected, TransportError
from monitor.transport.base import (
    Consumer,
    DoneCallback,
    Message,
    Producer,
    Transport,
    validate_topic,
)

__all__ = ["MemoryBus"]

log = logging.getLogger(__name__)

# Compact a partition's list once this many dropped records sit at its head (and they are half of it).
_COMPACT_AFTER = 4096


class _Log:
    """One partition: a list of messages with a moving head; ``start`` is the oldest retained offset."""

    __slots__ = ("_head", "_items", "bytes", "start")

    def __init__(self) -> None:
        self._items: list[Message | None] = []  # None: dropped (released at once, compacted later)
        self._head = 0
        self.start = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    @property
    def end(self) -> int:
        """Offset the next appended record gets."""
        return self.start + len(self)

    def append(self, message: Message) -> None:
        self._items.append(message)
        self.bytes += _size(message)

    def drop_oldest(self) -> None:
        dropped = self._items[self._head]
        self.bytes -= 0 if dropped is None else _size(dropped)
        self._items[self._head] = None  # release the record now, not at the next compaction
        self._head += 1
        self.start += 1
        if self._head >= _COMPACT_AFTER and 2 * self._head >= len(self._items):
            del self._items[: self._head]
            self._head = 0

    def read(self, offset: int, limit: int) -> list[Message]:
        """Up to ``limit`` messages from ``offset`` (which must lie in ``[start, end]``)."""
        first = self._head + offset - self.start
        return [m for m in self._items[first : first + limit] if m is not None]


def _size(message: Message) -> int:
    """Bytes a retained record holds, for ``max_bytes_per_partition``."""
    return len(message.value) + len(message.key or b"") + sum(len(v) for _, v in message.headers)


class _Topic:
    __slots__ = ("logs", "next_rr")

    def __init__(self, partitions: int) -> None:
        self.logs = tuple(_Log() for _ in range(partitions))
        self.next_rr = itertools.count()


def _check_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    return bytes(value)


def _check_headers(headers: Sequence[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    out: list[tuple[str, bytes]] = []
    for item in headers:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"headers must be (str, bytes) pairs, got {item!r}")
        out.append((item[0], _check_bytes(f"header {item[0]!r}", item[1])))
    return tuple(out)


def _notify(on_done: DoneCallback | None, error: BaseException | None) -> None:
    if on_done is None:
        return
    try:
        on_done(error)
    except Exception:
        log.exception("on_done callback raised")


class MemoryBus(Transport):
    """Thread-safe in-process transport; see the module docstring for its semantics.

    Parameters
    ----------
    partitions
        Partitions of every topic (>= 1).
    max_records_per_partition
        Bound on the records one partition retains (>= 1).
    max_bytes_per_partition
        Bound on the bytes (keys, values, headers) one partition retains (>= 1).
    retain_bytes_per_partition
        Bound on the bytes of records every reader group has committed past (or of a topic no group reads) that
        one partition keeps; default: ``max_bytes_per_partition``. A smaller bound keeps the backlog a slow
        reader may build while memory stops growing sooner (the embedded daemon keeps 4 MiB).
    """

    def __init__(self, partitions: int = 1, max_records_per_partition: int = 1_000_000,
                 max_bytes_per_partition: int = 64 * 1024 * 1024,
                 retain_bytes_per_partition: int | None = None) -> None:
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"partitions must be an int >= 1, got {partitions!r}")
        if (
            isinstance(max_records_per_partition, bool)
            or not isinstance(max_records_per_partition, int)
            or max_records_per_partition < 1
        ):
            raise ValueError(
                f"max_records_per_partition must be an int >= 1, got {max_records_per_partition!r}"
            )
        if isinstance(max_bytes_per_partition, bool) or not isinstance(max_bytes_per_partition, int) \
                or max_bytes_per_partition < 1:
            raise ValueError(f"max_bytes_per_partition must be an int >= 1, got {max_bytes_per_partition!r}")
        self.partitions = partitions
        self.max_records_per_partition = max_records_per_partition
        self.max_bytes_per_partition = max_bytes_per_partition
        self.retain_bytes_per_partition = max_bytes_per_partition if retain_bytes_per_partition is None else \
            max(1, min(int(retain_bytes_per_partition), max_bytes_per_partition))
        self._cond = threading.Condition()
        self._topics: dict[str, _Topic] = {}
        self._committed: dict[str, dict[tuple[str, int], int]] = {}  # group -> {(topic, p): offset}
        self._metadata: dict[str, dict[tuple[str, int], str]] = {}  # group -> {(topic, p): commit metadata}
        self._readers: dict[str, set[str]] = {}  # topic -> groups that ever subscribed to it
        self._members: dict[str, list[_MemoryConsumer]] = {}  # group -> live consumers, creation order
        self._closed = False

    # -- Transport ----------------------------------------------------------------------------------

    def producer(self) -> Producer:
        """Create a producer; ``send`` stores the record before returning."""
        with self._cond:
            self._check_open()
        return _MemoryProducer(self)

    def consumer(self, topics: Sequence[str], group: str) -> Consumer:
        """Create a member of ``group`` reading ``topics`` (created if new)."""
        if isinstance(topics, str):
            raise TypeError("topics must be a sequence of topic names, not a str")
        names = tuple(dict.fromkeys(validate_topic(t) for t in topics))
        if not names:
            raise ValueError("a consumer needs at least one topic")
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty str, got {group!r}")
        with self._cond:
            self._check_open()
            member = _MemoryConsumer(self, names, group)
            for name in names:
                self._topic(name)
                self._readers.setdefault(name, set()).add(group)
            self._committed.setdefault(group, {})
            self._members.setdefault(group, []).append(member)
            self._cond.notify_all()
        return member

    def tail(self, topic: str, records: int) -> list[Message]:
        """The last ``records`` retained records of every partition of ``topic``, in partition then offset order
        (:func:`monitor.transport.kafka.read_tail` of this bus)."""
        with self._cond:
            self._check_open()
            found = self._topics.get(validate_topic(topic))
            if found is None:
                return []
            out: list[Message] = []
            for log in found.logs:
                first = max(log.start, log.end - records)
                out.extend(log.read(first, log.end - first))
            return out

    def close(self) -> None:
        """Close the bus: later sends, polls and commits raise; blocked polls wake up and raise."""
        with self._cond:
            self._closed = True
            self._members.clear()
            self._cond.notify_all()

    # -- internals (called with or without the lock as noted) ----------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("memory bus is closed")

    def _topic(self, name: str) -> _Topic:
        """Lock held."""
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(self.partitions)
        return topic

    def _append(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        on_done: DoneCallback | None,
    ) -> None:
        validate_topic(topic)
        value_b = _check_bytes("value", value)
        key_b = None if key is None else _check_bytes("key", key)
        header_t = _check_headers(headers)
        error: TransportError | None = None
        with self._cond:
            self._check_open()
            state = self._topic(topic)
            if key_b is None:
                partition = next(state.next_rr) % self.partitions
            else:
                partition = zlib.crc32(key_b) % self.partitions
            plog = state.logs[partition]
            size = len(value_b) + len(key_b or b"") + sum(len(v) for _, v in header_t)
            if size > self.max_bytes_per_partition:
                error = TransportError(f"record of {size} bytes exceeds the bus's bound of "
                                       f"{self.max_bytes_per_partition} bytes per partition")
            while error is None and len(plog):
                full = len(plog) >= self.max_records_per_partition or \
                    plog.bytes + size > self.max_bytes_per_partition
                if not full and plog.bytes + size <= self.retain_bytes_per_partition:
                    break
                laggards = self._groups_at(topic, partition, plog.start)
                if not laggards:
                    plog.drop_oldest()  # every reader is past it (or none reads the topic)
                elif full:
                    error = TransportError(
                        f"bus full: {topic}[{partition}] holds {len(plog)} records ({plog.bytes} bytes) and "
                        f"group(s) {', '.join(sorted(laggards))} have not committed past offset {plog.start}"
                    )
                else:
                    break
            if error is None:
                plog.append(
                    Message(
                        topic=topic,
                        partition=partition,
                        offset=plog.end,
                        key=key_b,
                        value=value_b,
                        headers=header_t,
                        timestamp_ms=time.time_ns() // 1_000_000,
                    )
                )
                self._cond.notify_all()
        _notify(on_done, error)

    def _groups_at(self, topic: str, partition: int, offset: int) -> list[str]:
        """Lock held: reader groups of ``topic`` whose committed offset is not past ``offset``."""
        return [
            group
            for group in self._readers.get(topic, ())
            if self._committed.get(group, {}).get((topic, partition), -1) <= offset
        ]

    def _assignment(self, member: _MemoryConsumer) -> list[tuple[str, int]]:
        """Lock held: the partitions ``member`` owns now, in subscription then partition order."""
        peers = self._members.get(member.group, [])
        out: list[tuple[str, int]] = []
        for name in member.topics:
            subscribed = [m for m in peers if name in m.topics]
            if member not in subscribed:
                continue
            rank = subscribed.index(member)
            out.extend((name, p) for p in range(rank, self.partitions, len(subscribed)))
        return out

    def _remove(self, member: _MemoryConsumer) -> None:
        with self._cond:
            peers = self._members.get(member.group)
            if peers is not None and member in peers:
                peers.remove(member)
            self._cond.notify_all()


class _MemoryProducer(Producer):
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self._closed = False

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        on_done: DoneCallback | None = None,
    ) -> None:
        if self._closed:
            raise TransportError("producer is closed")
        self._bus._append(topic, value, key, headers, on_done)

    def flush(self, timeout_s: float | None = None) -> None:
        return None

    def close(self, timeout_s: float | None = None) -> None:
        self._closed = True


class _MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus, topics: tuple[str, ...], group: str) -> None:
        self._bus = bus
        self.topics = topics
        self.group = group
        self._positions: dict[tuple[str, int], int] = {}
        self._assigned: list[tuple[str, int]] | None = None
        self._rebalances = 0
        self._revoke_listener: Callable[[Sequence[tuple[str, int]]], None] | None = None
        self._revoking = False
        self._closed = False

    @property
    def rebalances(self) -> int:
        return self._rebalances

    def on_revoke(self, listener: Callable[[Sequence[tuple[str, int]]], None] | None) -> None:
        self._revoke_listener = listener

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s!r}")
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise ValueError(f"max_records must be an int >= 1, got {max_records!r}")
        bus = self._bus
        deadline = time.monotonic() + timeout_s
        with bus._cond:
            while True:
                self._check_open()
                out = self._read(max_records)
                if out:
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                bus._cond.wait(remaining)

    def _read(self, max_records: int) -> list[Message]:
        """Lock held: follow the current assignment (a partition kept goes on, a new one starts at its committed
        offset), then read from the positions."""
        bus = self._bus
        assigned = bus._assignment(self)
        if assigned != self._assigned:
            revoked = sorted(set(self._assigned or ()) - set(assigned))
            if revoked and self._revoke_listener is not None:
                self._revoking = True  # it may commit what it still held (the lock is reentrant)
                try:
                    self._revoke_listener(revoked)
                finally:
                    self._revoking = False
            self._assigned = assigned
            self._rebalances += 1
        committed = bus._committed[self.group]
        positions = {tp: self._positions[tp] for tp in assigned if tp in self._positions}
        out: list[Message] = []
        for tp in assigned:
            plog = bus._topic(tp[0]).logs[tp[1]]
            pos = positions.get(tp)
            if pos is None:
                pos = committed.get(tp, plog.start)
            pos = min(max(pos, plog.start), plog.end)
            if len(out) < max_records:
                batch = plog.read(pos, max_records - len(out))
                out.extend(batch)
                pos += len(batch)
            positions[tp] = pos
        self._positions = positions
        return out

    def lag(self) -> dict[tuple[str, int], int]:
        bus = self._bus
        with bus._cond:
            self._check_open()
            return {tp: bus._topic(tp[0]).logs[tp[1]].end - pos for tp, pos in self._positions.items()}

    def rewind(self) -> None:
        with self._bus._cond:
            self._check_open()
            self._positions = {}

    def commit(self, offsets: Mapping[tuple[str, int], int],
               metadata: Mapping[tuple[str, int], str] | None = None) -> None:
        bus = self._bus
        with bus._cond:
            self._check_open()
            if offsets and not self._revoking and self._assigned is not None \
                    and bus._assignment(self) != self._assigned:
                raise CommitRejected(f"group {self.group!r} is rebalancing: poll again before committing")
            checked: dict[tuple[str, int], int] = {}
            for (topic, partition), offset in offsets.items():
                validate_topic(topic)
                if not 0 <= partition < bus.partitions:
                    raise ValueError(f"partition {partition} out of range for {topic}")
                end = bus._topic(topic).logs[partition].end
                if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= end:
                    raise ValueError(f"offset {offset!r} for {topic}[{partition}] is outside [0, {end}]")
                checked[(topic, partition)] = offset
            bus._committed[self.group].update(checked)
            notes = bus._metadata.setdefault(self.group, {})
            for tp in checked:
                notes[tp] = (metadata or {}).get(tp, "")
            for topic, _ in checked:
                bus._readers.setdefault(topic, set()).add(self.group)

    def committed(self, topic: str, partition: int) -> tuple[int, str] | None:
        bus = self._bus
        with bus._cond:
            self._check_open()
            offset = bus._committed[self.group].get((topic, partition))
            if offset is None:
                return None
            return offset, bus._metadata.get(self.group, {}).get((topic, partition), "")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._remove(self)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("consumer is closed")
        self._bus._check_open()
