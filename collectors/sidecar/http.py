"""Just enough HTTP/1.1 (RFC 9112) for a pass-through proxy: heads, body framing, chunked decoding.

The proxy forwards every byte it receives unchanged; these helpers only find where a head and a body end
(Content-Length, chunked, or until the connection closes) and, for captured routes, decode the body.

>>> head = parse_request_head(b"POST /v1/completions HTTP/1.1\\r\\nHost: m\\r\\nContent-Length: 2\\r\\n\\r\\n")
>>> head.method, head.target, head.framing.length, head.keep_alive
('POST', '/v1/completions', 2, True)
>>> d = ChunkedDecoder(); out: list[bytes] = []
>>> d.feed(b"3\\r\\nabc\\r\\n0\\r\\n\\r\\nNEXT", out), out, d.done
(13, [b'abc'], True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from monitor.errors import InferwatchError

MAX_LINE_BYTES: Final = 8192
_HEX: Final = re.compile(rb"[0-9A-Fa-f]{1,15}")
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_is_token: Final = _TOKEN.fullmatch
_VERSIONS: Final = (b"HTTP/1.1", b"HTTP/1.0")

FramingKind = Literal["none", "length", "chunked", "close"]


class HttpError(InferwatchError):
    """A peer sent something that is not HTTP/1.1; ``reason`` is a bounded metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# The head and framing classes are made once per message on the proxy's hot path: plain (not frozen) slotted
# dataclasses, as a frozen one sets each field through object.__setattr__, several times slower. Treat them as
# immutable all the same.
@dataclass(slots=True)
class Framing:
    """Where a message body ends: nowhere (``none``), after ``length`` bytes, at the last chunk, or at EOF."""

    kind: FramingKind
    length: int = 0


NO_BODY: Final = Framing("none")
CHUNKED: Final = Framing("chunked")
UNTIL_CLOSE: Final = Framing("close")


@dataclass(slots=True)
class RequestHead:
    """A parsed request head; ``raw`` is exactly what the client sent, final CRLF included."""

    method: str
    target: str
    headers: dict[bytes, bytes]
    framing: Framing
    keep_alive: bool
    raw: bytes


@dataclass(slots=True)
class ResponseHead:
    """A parsed response head; ``raw`` is exactly what the upstream sent, final CRLF included."""

    status: int
    headers: dict[bytes, bytes]
    keep_alive: bool
    chunked: bool
    length: int | None
    raw: bytes


def _headers(lines: list[bytes]) -> dict[bytes, bytes]:
    """Header fields (``lines[1:]``) by lower-cased name; repeated fields are joined with ``,`` (RFC 9110 §5.3)."""
    headers: dict[bytes, bytes] = {}
    for i in range(1, len(lines)):
        name, sep, value = lines[i].partition(b":")
        if not sep or not _is_token(name):
            raise HttpError("bad_header", f"invalid header line {lines[i][:64]!r}")
        key = name.lower()
        value = value.strip(b" \t")
        if key in headers:
            headers[key] += b"," + value
        else:
            headers[key] = value
    return headers


def _length(value: bytes) -> int:
    if not value.isdigit() or len(value) > 18:  # also rejects "1,2" from repeated, differing fields
        raise HttpError("bad_length", f"invalid Content-Length {value[:32]!r}")
    return int(value)


def _check_chunked(value: bytes) -> None:
    if value.rsplit(b",", 1)[-1].strip().lower() != b"chunked":
        raise HttpError("bad_transfer_encoding", f"unsupported Transfer-Encoding {value[:64]!r}")


def _keep_alive(version: bytes, headers: dict[bytes, bytes]) -> bool:
    connection = headers.get(b"connection")
    if version == b"HTTP/1.1":
        return connection is None or b"close" not in connection.lower()
    return connection is not None and b"keep-alive" in connection.lower()


def parse_request_head(raw: bytes) -> RequestHead:
    """Parse a request head (request line and fields, ending in an empty line)."""
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in _VERSIONS or not _is_token(parts[0]):
        raise HttpError("bad_request_line", f"invalid request line {lines[0][:64]!r}")
    headers = _headers(lines)
    coding = headers.get(b"transfer-encoding")
    value = headers.get(b"content-length")
    if coding is not None:
        _check_chunked(coding)
    length = _length(value) if value is not None else None
    if coding is not None:
        if length is not None:  # request smuggling guard (RFC 9112 §6.3)
            raise HttpError("bad_length", "both Transfer-Encoding and Content-Length")
        framing = CHUNKED
    else:
        framing = Framing("length", length) if length else NO_BODY
    return RequestHead(parts[0].decode("latin-1"), parts[1].decode("latin-1"), headers, framing,
                       _keep_alive(parts[2], headers), raw)


def parse_response_head(raw: bytes) -> ResponseHead:
    """Parse a response head (status line and fields, ending in an empty line)."""
    lines = raw[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version not in _VERSIONS or len(code) != 3 or not code.isdigit() or code[0] == 0x30:  # 000-099: invalid
        raise HttpError("bad_status_line", f"invalid status line {lines[0][:64]!r}")
    headers = _headers(lines)
    coding = headers.get(b"transfer-encoding")
    if coding is not None:
        _check_chunked(coding)
    value = headers.get(b"content-length")
    return ResponseHead(int(code), headers, _keep_alive(version, headers), coding is not None,
                        None if coding is not None or value is None else _length(value), raw)


def response_framing(head: ResponseHead, method: str) -> Framing:
    """How the body of ``head`` (an answer to ``method``) ends (RFC 9112 §6.3)."""
    if method == "HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
        return NO_BODY
    if head.chunked:
        return CHUNKED
    if head.length is not None:
        return Framing("length", head.length) if head.length else NO_BODY
    return UNTIL_CLOSE


#: Fields that describe one connection, not the message (RFC 9110 §7.6.1): never forwarded.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade"})


#: Kept on a WebSocket upgrade request, which asks the upstream to turn this connection into a tunnel.
UPGRADE_FIELDS: Final = frozenset({b"connection", b"upgrade"})


def is_websocket_upgrade(headers: dict[bytes, bytes]) -> bool:
    """Whether a request asks to switch its connection to WebSocket (RFC 6455 §4.1: ``Upgrade: websocket``
    and ``Connection: Upgrade``)."""
    upgrade = headers.get(b"upgrade")
    return (upgrade is not None and b"websocket" in upgrade.lower()
            and b"upgrade" in {t.strip() for t in headers.get(b"connection", b"").lower().split(b",")})


def without_hop_by_hop(raw: bytes, headers: dict[bytes, bytes], keep: frozenset[bytes] = frozenset()) -> bytes:
    r"""``raw`` head without its hop-by-hop fields and the fields its ``Connection`` names, except those in
    ``keep``: a client's ``Connection: close`` is about its connection to the sidecar, not the pooled one to the
    upstream. An HTTP/1.0 head is left as it is (its ``Connection: keep-alive`` is what keeps the upstream
    connection open).

    >>> raw = b"GET / HTTP/1.1\r\nHost: m\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n"
    >>> without_hop_by_hop(raw, {b"connection": b"close, X-Hop"})
    b'GET / HTTP/1.1\r\nHost: m\r\nX-Keep: 2\r\n\r\n'
    >>> raw = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nKeep-Alive: 5\r\n\r\n"
    >>> without_hop_by_hop(raw, {b"connection": b"keep-alive, Upgrade"}, UPGRADE_FIELDS)
    b'GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n'
    """
    lines = raw[:-4].split(b"\r\n")
    if not lines[0].endswith(b" HTTP/1.1"):
        return raw
    named = {token.strip().lower() for token in headers.get(b"connection", b"").split(b",")}
    drop = (HOP_BY_HOP | named) - keep
    kept = [lines[0], *(line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in drop)]
    return b"\r\n".join(kept) + b"\r\n\r\n"


def with_header(raw: bytes, name: bytes, value: bytes) -> bytes:
    """``raw`` head with one more field line before its final empty line."""
    return b"%s%s: %s\r\n\r\n" % (raw[:-2], name, value)


class ChunkedDecoder:
    """Incremental chunked-body decoder that reports how many bytes belong to the body (RFC 9112 §7.1).

    ``feed`` consumes bytes up to the end of the body and no further, appends the decoded data to ``out``
    (when given) and returns the number of bytes consumed; :attr:`done` tells whether the body ended.
    Framing is checked strictly, since a proxy and its upstream that disagree on where a body ends are a
    request-smuggling hole: a chunk size must be hexadecimal, every line must end in CRLF (no bare LF), chunk
    data must be followed by CRLF, trailer lines must be header fields, and lines (chunk sizes, trailers) are
    bounded by :data:`MAX_LINE_BYTES`. Anything else raises :class:`HttpError` (reason ``bad_chunk``).

    >>> ChunkedDecoder().feed(b"5\\r\\nhelloXX0\\r\\n\\r\\n", None)
    Traceback (most recent call last):
    ...
    collectors.sidecar.http.HttpError: bad_chunk: chunk data not followed by CRLF
    """

    __slots__ = ("_line", "_remaining", "_state", "done")

    _SIZE, _DATA, _CRLF, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0
        self._line = b""  # a line (or the CRLF after chunk data) split across feeds
        self.done = False

    def feed(self, data: bytes, out: list[bytes] | None) -> int:
        i, n = 0, len(data)
        while i < n and not self.done:
            if self._state in (self._SIZE, self._TRAILER):
                j = data.find(b"\n", i, i + MAX_LINE_BYTES + 1 - len(self._line))
                if j < 0:
                    self._line += data[i:]
                    if len(self._line) > MAX_LINE_BYTES:
                        raise HttpError("bad_chunk", "chunk line too long")
                    return n
                line = self._line + data[i:j]
                self._line = b""
                i = j + 1
                if not line.endswith(b"\r"):
                    raise HttpError("bad_chunk", "chunk line not ended by CRLF")
                line = line[:-1]
                if self._state == self._TRAILER:
                    name, sep, _ = line.partition(b":")
                    if line and (not sep or not _TOKEN.fullmatch(name)):
                        raise HttpError("bad_chunk", f"invalid trailer line {line[:32]!r}")
                    self.done = not line
                    continue
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise HttpError("bad_chunk", f"invalid chunk size {size[:32]!r}")
                self._remaining = int(size, 16)
                self._state = self._DATA if self._remaining else self._TRAILER
            elif self._state == self._DATA:
                take = min(self._remaining, n - i)
                if out is not None:
                    out.append(data[i:i + take])
                i += take
                self._remaining -= take
                if not self._remaining:
                    self._state = self._CRLF
            else:  # the CRLF that must end chunk data
                piece = data[i:i + 2 - len(self._line)]
                i += len(piece)
                self._line += piece
                if not b"\r\n".startswith(self._line):
                    raise HttpError("bad_chunk", "chunk data not followed by CRLF")
                if len(self._line) == 2:
                    self._line = b""
                    self._state = self._SIZE
        return i


def simple_response(status: int, reason: str, body: bytes, *, close: bool = True,
                    content_type: bytes = b"text/plain; charset=utf-8",
                    extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete response made by the sidecar itself (an error, a probe, /metrics)."""
    fields = b"".join(b"%s: %s\r\n" % kv for kv in extra)
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n%s" % (
        status, reason.encode(), content_type, len(body), fields, b"connection: close\r\n" if close else b"",
        body)


__all__ = [
    "CHUNKED",
    "HOP_BY_HOP",
    "NO_BODY",
    "UNTIL_CLOSE",
    "UPGRADE_FIELDS",
    "ChunkedDecoder",
    "Framing",
    "HttpError",
    "RequestHead",
    "ResponseHead",
    "is_websocket_upgrade",
    "parse_request_head",
    "parse_response_head",
    "response_framing",
    "simple_response",
    "with_header",
    "without_hop_by_hop",
]
