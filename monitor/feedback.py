"""Joining feedback (a true label, accept/reject, a score) to the inference it is about, by request id.

Feedback can arrive hours after its inference, or, through a different topic or partition, before it.
Both sides wait in insertion-ordered maps keyed by ``(key, request_id)`` (``key`` is the model/version)
until their partner arrives, for at most ``ttl_s`` and at most ``max_pending`` entries in all (both from
:class:`~monitor.config.QualityConfig`, ``detect.quality`` in the config file):

* **Age.** An entry is stamped with the later of its event time and the latest event time seen before it,
  so stamps never decrease in arrival order and :meth:`FeedbackJoin.expire` only ever looks at the
  oldest entries (O(1) amortised).  An out-of-order straggler therefore lives slightly longer than
  ``ttl_s`` after its own event time, never shorter.
* **Bound.** When ``max_pending`` entries wait, the oldest (by arrival, of either kind) is evicted.
* **Duplicates.** The ids of the last ``max_pending`` joins (within ``ttl_s``) are remembered, so a
  redelivered inference or a second feedback for an already-joined request is counted and ignored.

Every dropped entry is counted (:class:`FeedbackStats`); memory holds at most ``2 * max_pending`` ids.
Pending inferences without feedback expiring is normal (most requests get none); expiring *feedback*
means its inference never arrived, which is worth a metric.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from monitor.config import QualityConfig
from monitor.errors import ConfigError, EventError

__all__ = ["FeedbackJoin", "FeedbackStats", "Joined"]

_Id = tuple[str, str]  # (key, request_id)


@dataclass(frozen=True, eq=False)
class Joined:
    """An inference and its feedback; ``delay_s`` is the feedback's event time minus the inference's."""

    key: str
    request_id: str
    prediction: int | None
    probs: np.ndarray | None
    label: int | None
    accepted: bool | None
    score: float | None
    delay_s: float


@dataclass(frozen=True)
class FeedbackStats:
    """Counters and sizes of a :class:`FeedbackJoin` (counters are totals since it was made)."""

    pending_inferences: int
    pending_feedback: int
    remembered_joins: int
    joined: int
    expired_inferences: int
    expired_feedback: int
    evicted_inferences: int
    evicted_feedback: int
    duplicate_inferences: int
    duplicate_feedback: int

    @property
    def expired(self) -> int:
        """Pending entries of both kinds dropped for age."""
        return self.expired_inferences + self.expired_feedback


class _Inference(NamedTuple):  # a tuple: made once per event, cheaper than a frozen dataclass
    stamp: float
    seq: int
    time: float
    prediction: int | None
    probs: np.ndarray | None


_new_tuple = tuple.__new__  # a named tuple from a tuple, in C: ``_Inference._make`` adds a Python call per event


class _Feedback(NamedTuple):  # a tuple: made once per event, cheaper than a frozen dataclass
    stamp: float
    seq: int
    time: float
    label: int | None
    accepted: bool | None
    score: float | None


class FeedbackJoin:
    """Bounded join of feedback to inferences by request id (see the module docstring).

    Parameters
    ----------
    quality : QualityConfig
        ``ttl_s``: how long an entry waits for its partner; ``max_pending``: most entries (inferences plus
        feedback) waiting at once, also how many joined ids are remembered.

    Examples
    --------
    >>> from monitor.config import QualityConfig
    >>> from monitor.feedback import FeedbackJoin
    >>> join = FeedbackJoin(QualityConfig(ttl_s=3600.0, max_pending=1000))
    >>> join.add_feedback("cnn/1", "r1", time=50.0, label=3) is None  # early: held
    True
    >>> join.add_inference("cnn/1", "r1", time=10.0, prediction=3).delay_s
    40.0
    >>> join.add_inference("cnn/1", "r2", time=20.0, prediction=7)  # waits for feedback
    >>> join.expire(now=4000.0), join.stats.expired_inferences  # r2 stamped at the watermark, 50 s
    (1, 1)
    """

    def __init__(self, quality: QualityConfig) -> None:
        # A QualityConfig made in code is not validated (a loaded file is): check what the join relies on.
        ttl_s, max_pending = quality.ttl_s, quality.max_pending
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ConfigError(f"Expected a finite number > 0, got {ttl_s!r} at detect.quality.ttl_s")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigError(f"Expected an integer >= 1, got {max_pending!r} at detect.quality.max_pending")
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._reset()

    def _reset(self) -> None:
        self._inferences: OrderedDict[_Id, _Inference] = OrderedDict()
        self._feedback: OrderedDict[_Id, _Feedback] = OrderedDict()
        self._joined_ids: OrderedDict[_Id, float] = OrderedDict()  # id -> stamp of the join
        self._watermark = -math.inf  # latest event time seen
        self._seq = 0  # arrival counter: orders entries of both kinds for eviction
        self._joined = 0
        self._expired_inferences = 0
        self._expired_feedback = 0
        self._evicted_inferences = 0
        self._evicted_feedback = 0
        self._duplicate_inferences = 0
        self._duplicate_feedback = 0

    def __len__(self) -> int:
        """Entries waiting for their partner."""
        return len(self._inferences) + len(self._feedback)

    @property
    def stats(self) -> FeedbackStats:
        """A snapshot of the sizes and counters."""
        return FeedbackStats(
            pending_inferences=len(self._inferences),
            pending_feedback=len(self._feedback),
            remembered_joins=len(self._joined_ids),
            joined=self._joined,
            expired_inferences=self._expired_inferences,
            expired_feedback=self._expired_feedback,
            evicted_inferences=self._evicted_inferences,
            evicted_feedback=self._evicted_feedback,
            duplicate_inferences=self._duplicate_inferences,
            duplicate_feedback=self._duplicate_feedback,
        )

    def add_inference(
        self, key: str, request_id: str, time: float, prediction: int | None, probs: np.ndarray | None = None
    ) -> Joined | None:
        """Record an inference; returns the join when its feedback was already waiting."""
        stamp = self._stamp(time, request_id)
        ident = (key, request_id)
        if ident in self._joined_ids or ident in self._inferences:
            self._duplicate_inferences += 1
            return None
        inference = _Inference(stamp, self._next_seq(), time, prediction, probs)
        feedback = self._feedback.pop(ident, None)
        if feedback is not None:
            return self._join(ident, inference, feedback)
        self._make_room()
        self._inferences[ident] = inference
        return None

    def add_inferences(self, key: str, request_ids: Sequence[str], times: Sequence[float],
                       predictions: Sequence[int]) -> list[Joined]:
        """:meth:`add_inference` of many inferences of one version in order (finite times, no probabilities);
        returns the joins, in order."""
        joins: list[Joined] = []
        inferences, feedback, joined_ids = self._inferences, self._feedback, self._joined_ids
        watermark, seq, duplicates = self._watermark, self._seq, 0
        for request_id, time, prediction in zip(request_ids, times, predictions, strict=True):
            if time > watermark:
                watermark = time
            ident = (key, request_id)
            if ident in joined_ids or ident in inferences:
                duplicates += 1
                continue
            seq += 1
            inference: _Inference = _new_tuple(_Inference, (watermark, seq, time, prediction, None))
            partner = feedback.pop(ident, None)
            if partner is not None:
                joins.append(self._join(ident, inference, partner))
                continue
            if len(inferences) + len(feedback) >= self.max_pending:
                self._seq = seq
                self._make_room()
            inferences[ident] = inference
        self._watermark, self._seq = watermark, seq
        self._duplicate_inferences += duplicates
        return joins

    def add_feedback(
        self,
        key: str,
        request_id: str,
        time: float,
        label: int | None = None,
        accepted: bool | None = None,
        score: float | None = None,
    ) -> Joined | None:
        """Record feedback; returns the join when its inference is known, else holds it (bounded)."""
        stamp = self._stamp(time, request_id)
        ident = (key, request_id)
        if ident in self._joined_ids or ident in self._feedback:
            self._duplicate_feedback += 1
            return None
        feedback = _Feedback(stamp, self._next_seq(), time, label, accepted, score)
        inference = self._inferences.pop(ident, None)
        if inference is not None:
            return self._join(ident, inference, feedback)
        self._make_room()
        self._feedback[ident] = feedback
        return None

    def expire(self, now: float) -> int:
        """Drop the entries stamped more than ``ttl_s`` before ``now``; returns how many were pending."""
        cutoff = now - self.ttl_s
        dropped = 0
        while self._inferences and next(iter(self._inferences.values())).stamp < cutoff:
            self._inferences.popitem(last=False)
            self._expired_inferences += 1
            dropped += 1
        while self._feedback and next(iter(self._feedback.values())).stamp < cutoff:
            self._feedback.popitem(last=False)
            self._expired_feedback += 1
            dropped += 1
        while self._joined_ids and next(iter(self._joined_ids.values())) < cutoff:
            self._joined_ids.popitem(last=False)
        return dropped

    def _stamp(self, time: float, request_id: str) -> float:
        if not math.isfinite(time):
            raise EventError("non_finite", f"request {request_id!r} has a non-finite event time {time!r}")
        self._watermark = max(self._watermark, time)
        return self._watermark

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _make_room(self) -> None:
        """Evict the oldest pending entries, of either kind, until one more fits."""
        while len(self._inferences) + len(self._feedback) >= self.max_pending:
            oldest_inference = next(iter(self._inferences.values())).seq if self._inferences else math.inf
            oldest_feedback = next(iter(self._feedback.values())).seq if self._feedback else math.inf
            if oldest_inference < oldest_feedback:
                self._inferences.popitem(last=False)
                self._evicted_inferences += 1
            else:
                self._feedback.popitem(last=False)
                self._evicted_feedback += 1

    def _join(self, ident: _Id, inference: _Inference, feedback: _Feedback) -> Joined:
        self._joined += 1
        if len(self._joined_ids) >= self.max_pending:
            self._joined_ids.popitem(last=False)  # forget the oldest join: bounded duplicate detection
        self._joined_ids[ident] = max(inference.stamp, feedback.stamp)
        return Joined(
            key=ident[0],
            request_id=ident[1],
            prediction=inference.prediction,
            probs=inference.probs,
            label=feedback.label,
            accepted=feedback.accepted,
            score=feedback.score,
            delay_s=feedback.time - inference.time,
        )
