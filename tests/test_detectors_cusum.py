"""CUSUM: calibration against Siegmund's formula, Monte Carlo run lengths, and seeded change points."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from detectors.cusum import CUSUM, Z_MAX, siegmund_arl, z_from_p
from detectors.errors import StatisticsError


def test_z_from_p_is_the_normal_upper_quantile() -> None:
    p = np.r_[1e-300, 1e-20, 1e-6, 0.01, 0.3, 0.5, 0.7, 0.99, 1 - 1e-9]
    np.testing.assert_allclose(z_from_p(p), stats.norm.isf(p), rtol=1e-12, atol=1e-12)
    assert z_from_p(0.0) == Z_MAX and z_from_p(1.0) == -Z_MAX and 37.0 < Z_MAX < 38.0
    # Uniform p-values give N(0, 1) scores.
    u = np.random.default_rng(1).uniform(size=50_000)
    assert stats.kstest(z_from_p(u), "norm").pvalue > 0.01
    with pytest.raises(StatisticsError, match=r"\[0, 1\]"):
        z_from_p(np.array([0.5, np.nan]))


def test_siegmund_formula_closed_forms() -> None:
    k, h = 0.5, 4.0
    b = h + 1.166
    assert siegmund_arl(0.0, k, h) == pytest.approx((math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k), rel=1e-12)
    assert siegmund_arl(k, k, h) == pytest.approx(b * b, rel=1e-12)  # the Δ = 0 limit ...
    assert siegmund_arl(k + 1e-6, k, h) == pytest.approx(b * b, rel=1e-5)  # ... is continuous
    assert siegmund_arl(0.0, k, h) == pytest.approx(336, rel=0.01)  # Markov-chain value for k = 0.5, h = 4


@pytest.mark.parametrize(("k", "rate"), [(0.5, 1e-3), (0.5, 1e-2), (0.25, 1e-4), (1.0, 1e-2)])
def test_threshold_is_calibrated_to_the_false_alarm_rate(k: float, rate: float) -> None:
    cusum = CUSUM(k=k, false_alarm_rate=rate)
    assert siegmund_arl(0.0, k, cusum.threshold) == pytest.approx(1.0 / rate, rel=1e-9)


def test_bad_arguments_raise() -> None:
    with pytest.raises(StatisticsError, match="k must be positive"):
        CUSUM(k=0.0)
    with pytest.raises(StatisticsError, match="false_alarm_rate"):
        CUSUM(false_alarm_rate=1.0)
    with pytest.raises(StatisticsError, match="too high"):
        CUSUM(k=0.5, false_alarm_rate=0.9)
    with pytest.raises(StatisticsError, match="finite"):
        CUSUM().update(math.inf)


@pytest.mark.parametrize("k", [0.5, 1.0])
def test_monte_carlo_arl0_matches_the_target(k: float) -> None:
    n = 200_000
    cusum = CUSUM(k=k, false_alarm_rate=1e-2)
    alarms = cusum.update_many(np.random.default_rng(2024).normal(size=n))
    # Alarm-and-restart is a renewal process: the mean run length is n / (number of alarms).
    assert n / alarms.size == pytest.approx(100.0, rel=0.2)


def test_update_many_replays_update() -> None:
    rng = np.random.default_rng(8)
    z = np.r_[rng.normal(size=12_000), rng.normal(loc=0.7, size=3000)]
    looped = CUSUM(false_alarm_rate=1e-2)
    expected = [i for i, score in enumerate(z) if looped.update(float(score))]
    batched = CUSUM(false_alarm_rate=1e-2)
    got = np.r_[batched.update_many(z[:5000]), 5000 + batched.update_many(z[5000:])]  # state carries over
    np.testing.assert_array_equal(got, expected)
    assert len(expected) > 50
    assert batched.statistic == pytest.approx(looped.statistic, abs=1e-9)
    assert batched.drift_detected == looped.drift_detected


def test_alarm_then_restart_from_zero() -> None:
    cusum = CUSUM(k=0.5, false_alarm_rate=1e-3)
    steps = math.floor(cusum.threshold / 2.5) + 1  # z = 3 adds 2.5 per step
    assert [cusum.update(3.0) for _ in range(steps)] == [False] * (steps - 1) + [True]
    assert cusum.drift_detected and cusum.statistic == pytest.approx(2.5 * steps)
    assert not cusum.update(3.0) and cusum.statistic == pytest.approx(2.5)  # restarted
    cusum.reset()
    assert cusum.statistic == 0.0 and not cusum.drift_detected


def test_seeded_stream_alarms_only_after_the_change() -> None:
    rng = np.random.default_rng(42)
    change = 500  # half the default ARL0 of 1000 windows
    z = np.r_[rng.normal(size=change), rng.normal(loc=1.0, size=100)]
    cusum = CUSUM()
    alarms = cusum.update_many(z)
    assert alarms.tolist() == [514, 519, 526, 537, 550, 564, 577, 589]
    assert alarms[0] - change + 1 <= 2 * siegmund_arl(1.0, cusum.k, cusum.threshold)  # 15 <= 2 x 10.5


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_detection_delay_is_below_twice_siegmund_arl1(delta: float) -> None:
    rng = np.random.default_rng(int(100 * delta))
    change, n_streams = 50, 400
    cusum = CUSUM()  # default false_alarm_rate 1e-3: ARL0 = 1000 windows
    arl1 = siegmund_arl(delta, cusum.k, cusum.threshold)
    length = change + int(10 * arl1)
    streams = np.c_[rng.normal(size=(n_streams, change)), rng.normal(loc=delta, size=(n_streams, length - change))]
    first, early = [], 0
    for z in streams:
        cusum.reset()
        alarms = cusum.update_many(z)
        early += int(alarms.size > 0 and alarms[0] < change)
        after = alarms[alarms >= change]
        first.append(after[0] - change + 1 if after.size else length)  # run length counted from the change
    assert np.median(first) < 2.0 * arl1
    assert np.median(first) > 0.3 * arl1  # a threshold set far too low would also be wrong
    # An alarm in 50 in-control windows is rare (ARL0 = 1000; a cold start makes it rarer still).
    assert early <= 0.05 * n_streams
