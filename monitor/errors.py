"""One exception hierarchy for inferwatch, rooted in :class:`InferwatchError`."""

from __future__ import annotations


class InferwatchError(Exception):
    """Base class of every error inferwatch raises on purpose."""


class ConfigError(InferwatchError):
    """A configuration file or option is invalid; the message names the offending key."""


class ProfileError(InferwatchError):
    """A reference profile is missing, unreadable, or does not match the events it is used for."""


class DataError(InferwatchError):
    """An input data file (for ``inferwatch drift`` or ``baseline``) cannot be used."""


class TransportError(InferwatchError):
    """The event transport (Kafka or the in-process bus) failed in a way the caller must handle."""


class RecordRejected(TransportError):
    """The destination refused this record for good (an HTTP ingest's 400 or 413): sending it again cannot
    succeed. A producer drops it, counted as ``rejected``, instead of spooling it."""


class CommitRejected(TransportError):
    """The group did not accept an offset commit because it is rebalancing (or this member's generation
    is stale). Nothing is lost: the next poll completes the rebalance and every partition this member owns
    afterwards is read again from the group's last committed offset."""


class EventError(InferwatchError):
    """A record failed validation. ``reason`` is a short, bounded label used in metrics and dead letters;
    ``part`` holds the offending event's JSON when it came inside a batch (the rest of the batch is fine)."""

    def __init__(self, reason: str, detail: str, part: bytes | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.part = part
