"""Who may send: bearer tokens on the daemon's HTTP server and the sidecar's admin listener.

A listener that is reachable beyond this machine (any address but loopback: ``0.0.0.0`` and ``::`` are *not*
loopback) needs a token, read from a file at start, or an explicit ``allow_unauthenticated: true`` (a warning
is logged then). With a token, every request except the probes (``GET``/``HEAD`` ``/healthz`` and ``/readyz``)
must carry ``Authorization: Bearer <token>``; others are answered 401 with ``WWW-Authenticate: Bearer``, and
counted by reason: ``missing`` (no header), ``malformed`` (not one ``Bearer <token>``: another scheme, several
headers, bytes that are not visible ASCII) or ``wrong``. The presented token is compared with
:func:`hmac.compare_digest` and is never logged.

Pure standard library plus prometheus_client: the sidecar imports it and must stay slim.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter

from monitor.errors import ConfigError

__all__ = ["MIN_TOKEN_CHARS", "PROBE_PATHS", "REASONS", "WWW_AUTHENTICATE", "Guard", "is_loopback", "listener_guard",
           "read_token_file", "refusal_counter"]

log = logging.getLogger(__name__)

#: Why a request was refused (the ``reason`` label of the refusal counters).
REASONS: Final = ("missing", "malformed", "wrong")
#: Paths answered without a token (``GET`` and ``HEAD`` only): kubelet and load-balancer probes carry none.
PROBE_PATHS: Final = frozenset({"/healthz", "/readyz"})
#: The challenge sent with every 401.
WWW_AUTHENTICATE: Final = 'Bearer realm="inferwatch"'
#: Shortest token accepted: a guessable token is no protection (``openssl rand -hex 32`` makes 64 characters).
MIN_TOKEN_CHARS: Final = 16

_WHY: Final = {
    "missing": b"unauthorized: no Authorization header; send Authorization: Bearer <token>\n",
    "malformed": b"unauthorized: malformed Authorization header; send exactly one Authorization: Bearer <token>\n",
    "wrong": b"unauthorized: wrong bearer token\n",
}


def is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this machine only.

    ``127.0.0.0/8``, ``::1`` (also as ``::ffff:127.x.y.z``) and ``localhost`` are; the wildcard addresses
    (``0.0.0.0``, ``::``, ``""``) are not. Another name is loopback only when every address it resolves to is.

    >>> [is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "::", "")]
    [True, True, True, True, True, False, False, False]
    """
    name = host.strip().strip("[]")
    if not name:
        return False
    if name.lower() == "localhost" or name.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return False  # binding fails on it anyway, with its own message
    return bool(resolved) and all(is_loopback(str(a)) for a in resolved)


def read_token_file(path: str | Path, key: str) -> str:
    """The token in ``path``: its first non-empty line, stripped. ``key`` names the setting in errors.

    Refused (:class:`~monitor.errors.ConfigError`): a file that cannot be read, holds no token, or holds a token
    shorter than :data:`MIN_TOKEN_CHARS` or with characters other than visible ASCII (a header cannot carry them
    reliably). The token itself never appears in a message.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read the token file {p}: "
                          f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from exc
    token = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not token:
        raise ConfigError(f"{key}: the token file {p} is empty; put the token on its first line "
                          f"(e.g. openssl rand -hex 32 > {p})")
    if not all(0x21 <= ord(c) <= 0x7E for c in token):
        raise ConfigError(f"{key}: the token in {p} has spaces or characters other than visible ASCII")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{key}: the token in {p} has {len(token)} characters, fewer than {MIN_TOKEN_CHARS} "
                          f"(e.g. openssl rand -hex 32 > {p})")
    return token


def refusal_counter(registry: CollectorRegistry, name: str, documentation: str) -> Counter:
    """A counter of refused requests by ``reason`` (one of :data:`REASONS`, each pre-labelled at 0)."""
    counter = Counter(name, documentation, ("reason",), registry=registry)
    for reason in REASONS:
        counter.labels(reason=reason)
    return counter


@dataclass(frozen=True)
class Guard:
    """Decides whether a request may pass: every request without a token configured, else those that carry it.

    >>> guard = Guard(b"s3cret-s3cret-s3cret")
    >>> [guard.check(v) for v in ([], ["Bearer s3cret-s3cret-s3cret"], ["bearer  nope"], ["Basic dTpw"])]
    ['missing', None, 'wrong', 'malformed']
    """

    token: bytes | None = None
    refused: Counter | None = field(default=None, compare=False)

    @property
    def enabled(self) -> bool:
        """Whether a token is required."""
        return self.token is not None

    def check(self, authorization: Iterable[str | bytes]) -> str | None:
        """``None`` when a request whose ``Authorization`` header values are ``authorization`` may pass, else the
        reason it may not (counted)."""
        if self.token is None:
            return None
        reason = _reason(list(authorization), self.token)
        if reason is not None and self.refused is not None:
            self.refused.labels(reason=reason).inc()
        return reason

    @staticmethod
    def body(reason: str) -> bytes:
        """The 401 body that says why."""
        return _WHY.get(reason, b"unauthorized\n")


def _reason(values: list[str | bytes], token: bytes) -> str | None:
    if not values:
        return "missing"
    if len(values) > 1:
        return "malformed"
    value = values[0]
    if isinstance(value, str):
        try:
            value = value.encode("latin-1")  # http.server decodes header bytes as latin-1: this is the wire form
        except UnicodeEncodeError:
            return "malformed"
    parts = value.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        return "malformed"
    presented = parts[1].strip()
    if not presented or any(not 0x21 <= b <= 0x7E for b in presented):
        return "malformed"
    return None if hmac.compare_digest(presented, token) else "wrong"


def listener_guard(host: str, token_file: str | None, allow_unauthenticated: bool, *, host_key: str,
                   token_key: str, allow_key: str, what: str, counter: Counter | None = None,
                   token_flag: str | None = None, warn: bool = True) -> Guard:
    """The :class:`Guard` of a listener on ``host``, or :class:`~monitor.errors.ConfigError` when it would be open
    beyond loopback without a token and without ``allow_unauthenticated``.

    ``host_key``, ``token_key``, ``allow_key`` (and ``token_flag``, a command-line flag) name the settings in the
    message; ``what`` says what the listener serves. With ``allow_unauthenticated`` and no token on a
    non-loopback ``host``, a warning is logged (unless ``warn`` is false: a check ahead of the real start).
    """
    if token_file is not None:
        return Guard(read_token_file(token_file, token_key).encode("ascii"), counter)
    if is_loopback(host):
        return Guard(None, counter)
    if allow_unauthenticated:
        if warn:
            log.warning("%s listens on %s (%s) without a token (%s: true): anyone who can reach it can use it; "
                        "limit who can reach it (NetworkPolicy, firewall) or set %s", what, host or "all addresses",
                        host_key, allow_key, token_key)
        return Guard(None, counter)
    flag = f" ({token_flag} FILE)" if token_flag else ""
    raise ConfigError(
        f"{host_key} is {host!r}, beyond loopback: anyone who can reach it could use {what}. Set {token_key}"
        f"{flag} to a file holding a bearer token (at least {MIN_TOKEN_CHARS} characters; clients then send "
        f"Authorization: Bearer <token>), or set {allow_key}: true to serve without one (e.g. when a service mesh "
        f"or NetworkPolicy already limits who can reach it); or listen on 127.0.0.1")
