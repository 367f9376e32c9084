"""A bounded on-disk spool: the producer's store for batches the broker could not take.

The spool is a directory of segment files ``00000000000000000001.seg``, ``...02.seg``, ... appended in order.
Each segment starts with the 8-byte magic ``IWSPOOL1`` and holds length-prefixed records::

    record  = length:u32 crc32(payload):u32 payload            (big-endian)
    payload = events:u32 key_len:i32 key headers:u16 {name_len:u16 name value_len:u32 value}* value

A new segment is started once the current one reaches ``segment_bytes``; the total size of all segment files
is bounded by ``max_bytes`` (an append that would exceed it is refused). Records are read back oldest first
with :meth:`Spool.read` and given up with :meth:`Spool.release` once the broker acknowledged them; a segment
file is deleted only when every record in it was released. A spool opened on an existing directory resumes
with everything not yet released (records of a partly released head segment are read again, so replay after
a restart is at-least-once). A record torn by a crash (short or failing its CRC) ends its segment: it and
whatever follows are counted in :attr:`Spool.corrupt_records`, the file is truncated to its last good
record, and the spool goes on.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from monitor.config import SidecarConfig, default_of
from monitor.errors import InferwatchError

__all__ = ["FsyncPolicy", "Spool", "SpoolError", "SpoolRecord"]

FsyncPolicy = Literal["always", "segment", "never"]

MAGIC = b"IWSPOOL1"
_FRAME = struct.Struct(">II")  # payload length, crc32(payload)
_FIXED = struct.Struct(">IiH")  # events, key length (-1: no key), header count
_NAME = struct.Struct(">H")
_LEN = struct.Struct(">I")
_SUFFIX = ".seg"
_MAX_RECORD = 1 << 31  # a length above this cannot come from append(): the frame is torn


class SpoolError(InferwatchError):
    """The spool directory cannot be used (not a directory, unwritable, bad settings)."""


@dataclass(frozen=True)
class SpoolRecord:
    """One spooled record: a batch as it would have been sent.

    Attributes
    ----------
    value, key, headers
        The record as handed to :meth:`monitor.transport.Producer.send`.
    events
        How many events the record holds (for metrics).
    segment, end
        Where the record ends on disk; :meth:`Spool.release` takes the record to release up to.
    """

    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    events: int = 1
    segment: int = 0
    end: int = 0


def _encode(record: SpoolRecord) -> bytes:
    key = record.key
    parts = [_FIXED.pack(record.events, -1 if key is None else len(key), len(record.headers))]
    if key is not None:
        parts.append(key)
    for name, data in record.headers:
        raw = name.encode()
        parts += [_NAME.pack(len(raw)), raw, _LEN.pack(len(data)), data]
    parts.append(record.value)
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes, segment: int, end: int) -> SpoolRecord:
    events, key_len, n_headers = _FIXED.unpack_from(payload, 0)
    at = _FIXED.size
    key = None
    if key_len >= 0:
        key, at = payload[at:at + key_len], at + key_len
    headers = []
    for _ in range(n_headers):
        (name_len,), at = _NAME.unpack_from(payload, at), at + _NAME.size
        name, at = payload[at:at + name_len].decode(), at + name_len
        (value_len,), at = _LEN.unpack_from(payload, at), at + _LEN.size
        headers.append((name, payload[at:at + value_len]))
        at += value_len
    return SpoolRecord(payload[at:], key, tuple(headers), events, segment, end)


def _scan(path: Path, segment: int, offset: int, limit: int,
          budget: int | None = None) -> tuple[list[SpoolRecord], int, bool]:
    """Up to ``limit`` good records of one segment from ``offset`` (stopping once their values hold ``budget``
    bytes), the offset after them, and whether a torn or corrupt record stopped the scan."""
    out: list[SpoolRecord] = []
    taken = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while len(out) < limit and (budget is None or taken < budget):
            frame = f.read(_FRAME.size)
            if not frame:
                return out, offset, False
            if len(frame) < _FRAME.size:
                return out, offset, True
            length, crc = _FRAME.unpack(frame)
            payload = f.read(length) if length < _MAX_RECORD else b""
            if len(payload) != length or zlib.crc32(payload) != crc or length < _FIXED.size:
                return out, offset, True
            offset += _FRAME.size + length
            try:
                out.append(_decode(payload, segment, offset))
            except (struct.error, UnicodeDecodeError):  # a CRC-valid record we cannot parse: same as torn
                return out, offset - _FRAME.size - length, True
            taken += len(out[-1].value)  # value bytes, as Spool.read counts its budget
    return out, offset, False


class Spool:
    """Bounded, segmented, append-only record store on disk, read back in order.

    Thread-safe; :class:`collectors.producer.EventProducer` uses it from its sender thread only.

    Parameters
    ----------
    directory
        Folder of the segment files; created if missing. Existing segments are resumed.
    max_bytes
        Bound on the total size of the segment files; :meth:`append` refuses a record beyond it.
    segment_bytes
        A new segment is started once the current one reaches this size (one record may exceed it).
    fsync
        ``"always"``: fsync after every append (survives power loss, slowest); ``"segment"``: fsync when a
        segment is finished and on close (a crash of the process loses nothing, a power loss at most the
        open segment); ``"never"``: leave it to the OS.

    Examples
    --------
    >>> import tempfile
    >>> spool = Spool(tempfile.mkdtemp(), max_bytes=1 << 20, segment_bytes=50)
    >>> [spool.append(SpoolRecord(b"event %d" % i, b"model/1", (("ce_id", b"x"),))) for i in range(3)]
    [True, True, True]
    >>> spool.segments  # 8 bytes of magic + one 44-byte record fill a 50-byte segment
    3
    >>> first, second = spool.read(2)
    >>> first.value, first.key, first.headers
    (b'event 0', b'model/1', (('ce_id', b'x'),))
    >>> spool.release(second)
    >>> [r.value for r in spool.read(10)]
    [b'event 2']
    >>> spool.close()
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = default_of(SidecarConfig, "spool_max_bytes"),
                 segment_bytes: int = 16 << 20,
                 fsync: FsyncPolicy = "segment") -> None:
        for name, value in (("max_bytes", max_bytes), ("segment_bytes", segment_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if fsync not in ("always", "segment", "never"):
            raise ValueError(f"fsync must be 'always', 'segment' or 'never', got {fsync!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {self.directory}: {exc}") from exc
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise SpoolError(f"spool directory {self.directory} is not writable")
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._sizes: dict[int, int] = {}  # segment number -> file size, oldest first
        self._next = 1  # number of the next segment file
        self._head = (0, len(MAGIC))  # (segment, offset) of the oldest unreleased record
        self._pending = 0  # records appended and not released
        self._file: int | None = None  # fd of the newest segment, open for appending
        self._closed = False
        self.corrupt_records = 0
        self._recover()

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def bytes(self) -> int:
        """Total size of the segment files."""
        with self._lock:
            return sum(self._sizes.values())

    @property
    def segments(self) -> int:
        """Number of segment files."""
        with self._lock:
            return len(self._sizes)

    def __len__(self) -> int:
        """Records appended and not yet released."""
        with self._lock:
            return self._pending

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:020d}{_SUFFIX}"

    # -- recovery ----------------------------------------------------------------------------------------------
    def _recover(self) -> None:
        numbers = sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        for number in numbers:
            path = self._path(number)
            with open(path, "rb") as f:
                magic = f.read(len(MAGIC))
            if magic != MAGIC:  # a segment cut before its magic was written, or not ours
                self.corrupt_records += 1 if path.stat().st_size else 0
                path.unlink()
                continue
            count, end = 0, len(MAGIC)
            while True:
                records, end, torn = _scan(path, number, end, 4096, 8 << 20)
                count += len(records)
                if torn:
                    self.corrupt_records += 1
                    os.truncate(path, end)
                if torn or not records:
                    break
            self._sizes[number] = end
            self._pending += count
        self._next = max(numbers, default=0) + 1
        if self._sizes:
            self._head = (next(iter(self._sizes)), len(MAGIC))
        self._drop_empty()

    def _drop_empty(self) -> None:
        """Delete leading segments without unreleased records (never the one open for appending)."""
        while self._sizes:
            number = next(iter(self._sizes))
            segment, offset = self._head
            exhausted = (segment == number and offset >= self._sizes[number]) or segment > number
            if not exhausted:
                return
            if self._file is not None and number == max(self._sizes):
                os.close(self._file)
                self._file = None
            del self._sizes[number]
            self._path(number).unlink(missing_ok=True)
            if self._sizes and segment == number:
                self._head = (next(iter(self._sizes)), len(MAGIC))

    # -- writing -----------------------------------------------------------------------------------------------
    def append(self, record: SpoolRecord) -> bool:
        """Write ``record`` after every other; False (nothing written) if it would exceed ``max_bytes``.

        Raises
        ------
        SpoolError
            The spool is closed or the write failed (disk full, I/O error).
        """
        frame = _encode(record)
        with self._lock:
            if self._closed:
                raise SpoolError("the spool is closed")
            fd, last = self._file, max(self._sizes, default=0)
            roll = fd is None or self._sizes[last] >= self.segment_bytes
            if sum(self._sizes.values()) + len(frame) + (len(MAGIC) if roll else 0) > self.max_bytes:
                return False
            try:
                if fd is None or roll:
                    fd, last = self._roll()
                os.write(fd, frame)
                if self.fsync == "always":
                    os.fsync(fd)
            except OSError as exc:
                raise SpoolError(f"writing to spool segment {self._path(last)} failed: {exc}") from exc
            self._sizes[last] += len(frame)
            self._pending += 1
            return True

    def _roll(self) -> tuple[int, int]:
        """Finish the open segment (fsync per policy) and open a new one; its fd and number."""
        if self._file is not None:
            if self.fsync != "never":
                os.fsync(self._file)
            os.close(self._file)
            self._file = None
        number, self._next = self._next, self._next + 1
        if not self._sizes:
            self._head = (number, len(MAGIC))
        self._file = os.open(self._path(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(self._file, MAGIC)
        if self.fsync != "never":
            os.fsync(self._file)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # make the new file's name durable too
            finally:
                os.close(dir_fd)
        self._sizes[number] = len(MAGIC)
        return self._file, number

    # -- reading -----------------------------------------------------------------------------------------------
    def read(self, max_records: int, max_bytes: int | None = None) -> list[SpoolRecord]:
        """The oldest unreleased records: at most ``max_records``, and no more once ``max_bytes`` of values
        are reached (but always at least one). They follow one another from the oldest with none left out, so
        releasing the last one gives up exactly these. Reading does not release: the same records are returned
        until :meth:`release` passes them.
        """
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records!r}")
        out: list[SpoolRecord] = []
        budget = max_bytes
        with self._lock:
            segment, offset = self._head
            for number in [n for n in self._sizes if n >= segment]:
                start = offset if number == segment else len(MAGIC)
                records, end, torn = _scan(self._path(number), number, start, max_records - len(out), budget)
                if torn:  # only possible if the file was changed under us after recovery
                    self.corrupt_records += 1
                    self._sizes[number] = end
                    os.truncate(self._path(number), end)
                out += records
                if budget is not None:
                    budget -= sum(len(r.value) for r in records)
                if len(out) >= max_records or (budget is not None and budget <= 0):
                    break
                if end < self._sizes[number]:
                    # The scan stopped inside this segment: its next record comes before any of a later
                    # segment. Going on there would return records that are not contiguous from the head, and
                    # release(out[-1]) would then give up the ones skipped without their ever being read.
                    break
        return out

    def release(self, through: SpoolRecord) -> None:
        """Give up every record up to and including ``through`` (acknowledged by the broker)."""
        with self._lock:
            segment, offset = self._head
            if (through.segment, through.end) <= (segment, offset):
                return
            for number in [n for n in self._sizes if segment <= n <= through.segment]:
                start = offset if number == segment else len(MAGIC)
                stop = through.end if number == through.segment else self._sizes[number]
                self._pending -= _count(self._path(number), start, stop)
            self._head = (through.segment, through.end)
            self._drop_empty()

    def close(self) -> None:
        """Flush (per the fsync policy) and close the open segment; idempotent."""
        with self._lock:
            if self._file is not None:
                if self.fsync != "never":
                    os.fsync(self._file)
                os.close(self._file)
                self._file = None
            self._closed = True


def _count(path: Path, start: int, stop: int) -> int:
    """Number of records between two record boundaries of a segment (reads only the frame headers)."""
    n = 0
    with open(path, "rb") as f:
        f.seek(start)
        while start < stop:
            length, _ = _FRAME.unpack(f.read(_FRAME.size))
            start += _FRAME.size + length
            f.seek(start)
            n += 1
    return n

