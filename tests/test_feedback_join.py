"""The feedback join: late and early feedback, time-to-live, the size bound, duplicates."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from monitor.config import QualityConfig, load_config_text
from monitor.errors import ConfigError, EventError
from monitor.feedback import FeedbackJoin, FeedbackStats, Joined

KEY = "cnn/1"


def test_late_feedback_joins_its_inference() -> None:
    join = FeedbackJoin(QualityConfig(ttl_s=3600.0))
    probs = np.array([0.1, 0.9])
    assert join.add_inference(KEY, "r1", time=100.0, prediction=1, probs=probs) is None
    assert join.add_inference(KEY, "r2", time=101.0, prediction=0) is None
    joined = join.add_feedback(KEY, "r1", time=1900.0, label=0)
    assert isinstance(joined, Joined)
    assert (joined.key, joined.request_id, joined.prediction, joined.label, joined.delay_s) == (KEY, "r1", 1, 0, 1800.0)
    assert joined.probs is probs and joined.accepted is None and joined.score is None
    assert join.stats == FeedbackStats(pending_inferences=1, pending_feedback=0, remembered_joins=1, joined=1,
                                       expired_inferences=0, expired_feedback=0, evicted_inferences=0,
                                       evicted_feedback=0, duplicate_inferences=0, duplicate_feedback=0)


def test_early_feedback_is_held_and_joined_when_the_inference_arrives() -> None:
    join = FeedbackJoin(QualityConfig())
    assert join.add_feedback(KEY, "r1", time=10.0, accepted=False, score=0.2) is None
    assert join.stats.pending_feedback == 1
    joined = join.add_inference(KEY, "r1", time=8.0, prediction=None)
    assert joined is not None
    assert (joined.accepted, joined.score, joined.label, joined.delay_s) == (False, 0.2, None, 2.0)
    assert len(join) == 0 and join.stats.joined == 1


def test_same_request_id_of_another_model_does_not_join() -> None:
    join = FeedbackJoin(QualityConfig())
    join.add_inference("cnn/1", "r1", time=0.0, prediction=3)
    assert join.add_feedback("cnn/2", "r1", time=1.0, label=3) is None
    assert join.stats.pending_inferences == 1 and join.stats.pending_feedback == 1


def test_entries_expire_after_the_ttl_and_are_counted_by_kind() -> None:
    join = FeedbackJoin(QualityConfig(ttl_s=100.0))
    join.add_inference(KEY, "a", time=0.0, prediction=1)
    join.add_feedback(KEY, "orphan", time=50.0, label=2)
    join.add_inference(KEY, "b", time=90.0, prediction=1)
    assert join.expire(now=100.0) == 0  # nothing is older than 100 s yet
    assert join.expire(now=100.5) == 1  # "a" (t=0)
    assert join.expire(now=180.0) == 1  # the orphan feedback (t=50)
    assert join.add_feedback(KEY, "a", time=181.0, label=1) is None  # too late: held as an orphan
    stats = join.stats
    assert (stats.expired_inferences, stats.expired_feedback, stats.expired) == (1, 1, 2)
    assert (stats.pending_inferences, stats.pending_feedback) == (1, 1)
    assert join.add_feedback(KEY, "b", time=182.0, label=1) is not None  # "b" (t=90) still waiting


def test_out_of_order_straggler_is_aged_from_the_watermark() -> None:
    join = FeedbackJoin(QualityConfig(ttl_s=100.0))
    join.add_inference(KEY, "new", time=1000.0, prediction=1)
    join.add_inference(KEY, "old", time=0.0, prediction=1)  # arrives late, stamped 1000: lives >= ttl
    assert join.expire(now=1050.0) == 0
    assert join.add_feedback(KEY, "old", time=1060.0, label=0) is not None
    assert join.expire(now=1100.5) == 1  # "new"


def test_bound_evicts_the_oldest_of_either_kind_first() -> None:
    join = FeedbackJoin(QualityConfig(ttl_s=1e9, max_pending=3))
    join.add_inference(KEY, "i1", time=1.0, prediction=0)
    join.add_feedback(KEY, "f1", time=2.0, label=0)
    join.add_inference(KEY, "i2", time=3.0, prediction=0)
    join.add_inference(KEY, "i3", time=4.0, prediction=0)  # evicts i1
    join.add_feedback(KEY, "f2", time=5.0, label=0)  # evicts f1
    join.add_feedback(KEY, "f3", time=6.0, label=0)  # evicts i2
    stats = join.stats
    assert (stats.evicted_inferences, stats.evicted_feedback) == (2, 1)
    assert len(join) == 3
    assert join.add_feedback(KEY, "i1", time=7.0, label=0) is None  # i1 is gone (and evicts i3)
    assert join.add_inference(KEY, "f2", time=8.0, prediction=0) is not None  # f2 survived
    assert join.stats.evicted_inferences == 3


def test_memory_stays_bounded_on_an_endless_stream() -> None:
    join = FeedbackJoin(QualityConfig(ttl_s=1e9, max_pending=500))
    rng = np.random.default_rng(0)
    for i in range(20_000):  # 10 % of requests get feedback, some of it early, some for unknown ids
        join.add_inference(KEY, f"r{i}", time=float(i), prediction=int(rng.integers(10)), probs=rng.random(10))
        if rng.random() < 0.1:
            join.add_feedback(KEY, f"r{i - int(rng.integers(0, 300))}", time=float(i), label=1)
        if rng.random() < 0.05:
            join.add_feedback(KEY, f"future{i}", time=float(i), label=1)
        assert len(join) <= 500
    stats = join.stats
    assert stats.pending_inferences + stats.pending_feedback == 500
    assert stats.remembered_joins <= 500
    assert stats.joined > 1000 and stats.evicted_inferences > 15_000 and stats.evicted_feedback > 0


def test_every_entry_is_accounted_for() -> None:
    join = FeedbackJoin(QualityConfig(ttl_s=50.0, max_pending=100))
    rng = np.random.default_rng(1)
    inferences = feedback = 0
    for i in range(5000):
        if rng.random() < 0.6:
            inferences += 1
            join.add_inference(KEY, f"r{i}", time=float(i), prediction=1)
        else:
            feedback += 1
            join.add_feedback(KEY, f"r{i - int(rng.integers(0, 80))}", time=float(i), label=1)
        if i % 25 == 0:
            join.expire(now=float(i))
    s = join.stats
    assert inferences == s.joined + s.pending_inferences + s.expired_inferences + s.evicted_inferences + (
        s.duplicate_inferences)
    assert feedback == s.joined + s.pending_feedback + s.expired_feedback + s.evicted_feedback + s.duplicate_feedback
    assert s.expired_feedback > 0 and s.joined > 0


def test_duplicates_are_counted_and_ignored() -> None:
    join = FeedbackJoin(QualityConfig())
    join.add_inference(KEY, "r1", time=0.0, prediction=1)
    assert join.add_feedback(KEY, "r1", time=1.0, label=1) is not None
    assert join.add_feedback(KEY, "r1", time=2.0, label=0) is None  # after the join
    assert join.add_inference(KEY, "r1", time=0.0, prediction=1) is None  # a replayed inference
    join.add_feedback(KEY, "r2", time=3.0, label=0)
    assert join.add_feedback(KEY, "r2", time=4.0, label=1) is None  # twice before its inference
    joined = join.add_inference(KEY, "r2", time=2.5, prediction=0)
    assert joined is not None and joined.label == 0  # the first feedback wins
    join.add_inference(KEY, "r3", time=5.0, prediction=0)
    assert join.add_inference(KEY, "r3", time=5.0, prediction=0) is None
    s = join.stats
    assert (s.joined, s.duplicate_feedback, s.duplicate_inferences, len(join)) == (2, 2, 2, 1)


def test_the_join_takes_its_bounds_from_the_config_and_declares_no_defaults_of_its_own() -> None:
    # Regression: FeedbackJoin declared max_pending=1,000,000 while QualityConfig said 200,000.
    quality = load_config_text("models: []\ndetect: {quality: {ttl_s: 60, max_pending: 3}}").detect.quality
    join = FeedbackJoin(quality)
    assert (join.ttl_s, join.max_pending) == (60.0, 3)
    for i in range(5):
        join.add_inference(KEY, f"r{i}", time=float(i), prediction=0)
    assert len(join) == 3 and join.stats.evicted_inferences == 2
    assert inspect.signature(FeedbackJoin).parameters["quality"].default is inspect.Parameter.empty


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="ttl_s"):
        FeedbackJoin(QualityConfig(ttl_s=0.0))
    with pytest.raises(ConfigError, match="max_pending"):
        FeedbackJoin(QualityConfig(max_pending=0))
    with pytest.raises(EventError, match="non-finite event time"):
        FeedbackJoin(QualityConfig()).add_feedback(KEY, "r1", time=math.nan, label=1)


def test_many_inferences_at_once_join_evict_and_count_as_one_by_one() -> None:
    """``add_inferences`` (the column batches' path) against ``add_inference`` per event on a seeded stream with
    feedback waiting, duplicates, out-of-order times and a table small enough to evict."""
    rng = np.random.default_rng(11)
    one, many = (FeedbackJoin(QualityConfig(ttl_s=500.0, max_pending=150)) for _ in range(2))
    for join in (one, many):
        for i in range(0, 300, 4):
            join.add_feedback("m/1", f"r{i}", time=float(i), label=i % 3)
    ids = [f"r{int(i)}" for i in rng.integers(0, 300, size=400)]  # repeats: duplicates and joined ids again
    times = (np.arange(400) + rng.normal(0, 20, size=400)).clip(0).tolist()
    predictions = rng.integers(0, 3, size=400).tolist()
    expected = [j for j in (one.add_inference("m/1", r, t, p) for r, t, p in zip(ids, times, predictions, strict=True))
                if j is not None]
    got = [j for lo in range(0, 400, 37)
           for j in many.add_inferences("m/1", ids[lo:lo + 37], times[lo:lo + 37], predictions[lo:lo + 37])]
    assert [vars(j) for j in got] == [vars(j) for j in expected] and len(expected) > 10
    assert many.stats == one.stats and one.stats.evicted_inferences > 0 and one.stats.duplicate_inferences > 0
    assert one.expire(350.0) == many.expire(350.0) and many.stats == one.stats
