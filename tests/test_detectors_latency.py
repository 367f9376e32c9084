"""Latency histograms against np.percentile, and SLO burn-rate alerts against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.errors import StatisticsError
from detectors.latency import (
    LATENCY_BOUNDS_S,
    LATENCY_BUCKET_GROWTH,
    SLO,
    BurnRateMonitor,
    LatencyHistogram,
    burn_rate,
)

GOOD_S, BAD_S = 0.05, 0.5  # latencies on either side of the 0.1 s SLO threshold used below


def test_bounds_are_shared_log_spaced_constants() -> None:
    assert LATENCY_BOUNDS_S[0] == pytest.approx(1e-6, rel=1e-12)
    assert LATENCY_BOUNDS_S[-1] == pytest.approx(1e3, rel=1e-9)
    ratios = LATENCY_BOUNDS_S[1:] / LATENCY_BOUNDS_S[:-1]
    np.testing.assert_allclose(ratios, LATENCY_BUCKET_GROWTH, rtol=1e-9)
    assert 1.019 < LATENCY_BUCKET_GROWTH <= 1.02
    assert not LATENCY_BOUNDS_S.flags.writeable
    assert LatencyHistogram().bounds is LATENCY_BOUNDS_S


def test_add_counts_like_np_histogram_and_rejects_bad_values() -> None:
    rng = np.random.default_rng(3)
    values = np.r_[rng.lognormal(mean=-4.0, sigma=2.0, size=5000), 0.0, 2e-7, 5e3, LATENCY_BOUNDS_S[10]]
    histogram = LatencyHistogram()
    histogram.add(values[:2000])
    histogram.add(np.r_[values[2000:], np.nan, -1e-3, np.inf])
    # np.histogram uses the same half-open buckets [a, b) (only its last one, [1000 s, inf], is closed).
    edges = np.r_[0.0, LATENCY_BOUNDS_S, np.inf]
    expected, _ = np.histogram(values, bins=edges)
    np.testing.assert_array_equal(histogram.counts, expected)
    assert histogram.counts[0] == 2 and histogram.counts[-1] == 1  # underflow 0 and 2e-7, overflow 5e3
    assert histogram.counts[11] >= 1  # a value on an edge starts the bucket above it
    assert histogram.count == values.size
    assert histogram.rejected == 3
    assert histogram.sum == pytest.approx(values.sum(), rel=1e-12)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_quantile_relative_error_is_within_one_bucket_width(sigma: float) -> None:
    rng = np.random.default_rng(int(sigma * 10))
    values = rng.lognormal(mean=math.log(0.02), sigma=sigma, size=20_000)  # median 20 ms
    histogram = LatencyHistogram()
    histogram.add(values)
    levels = np.r_[0.0, 0.001, 0.01, np.linspace(0.05, 0.95, 19), 0.99, 0.999, 0.9999, 1.0]
    estimate = histogram.quantile(levels)
    exact = np.percentile(values, 100 * levels)
    in_range = exact >= LATENCY_BOUNDS_S[0]  # the minimum can fall in the [0, 1 µs) underflow bucket
    relative = np.abs(estimate - exact)[in_range] / exact[in_range]
    assert relative.max() < LATENCY_BUCKET_GROWTH - 1.0  # the documented bound, < 2%
    assert np.all(np.abs(estimate - exact)[~in_range] < LATENCY_BOUNDS_S[0])
    assert np.median(relative) < 0.5 * (LATENCY_BUCKET_GROWTH - 1.0)  # in-bucket interpolation beats the edge
    assert histogram.quantile(0.5) == pytest.approx(float(np.median(values)), rel=0.02)


def test_quantile_of_underflow_overflow_and_errors() -> None:
    histogram = LatencyHistogram()
    with pytest.raises(StatisticsError, match="empty"):
        histogram.quantile(0.5)
    histogram.add([0.0, 0.0, 5000.0])
    assert 0.0 <= histogram.quantile(0.0) < 1e-6
    assert histogram.quantile(1.0) == pytest.approx(1000.0)  # overflow saturates at the last edge
    with pytest.raises(StatisticsError, match=r"\[0, 1\]"):
        histogram.quantile(1.5)


def test_merge_equals_histogram_of_all_values() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.lognormal(-3.0, 1.0, size=3000), rng.lognormal(-1.0, 0.5, size=1000)
    left, right, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    left.add(np.r_[a, np.nan])
    right.add(b)
    both.add(np.r_[a, b])
    merged = left.merge(right)
    np.testing.assert_array_equal(merged.counts, both.counts)
    assert merged.rejected == 1
    assert merged.sum == pytest.approx(both.sum, rel=1e-12)
    assert merged.quantile(0.9) == both.quantile(0.9)
    assert left.count == 3000  # merge does not modify its operands
    with pytest.raises(StatisticsError, match="different bucket bounds"):
        left.merge(LatencyHistogram(bounds=[0.001, 0.01, 0.1]))


def test_arrays_round_trip_and_validation() -> None:
    histogram = LatencyHistogram()
    histogram.add([0.001, 0.2, 0.2, -1.0])
    bounds, counts, total, rejected = histogram.to_arrays()
    copy = LatencyHistogram.from_arrays(bounds, counts, total, rejected)
    np.testing.assert_array_equal(copy.counts, histogram.counts)
    assert (copy.sum, copy.rejected, copy.bounds is LATENCY_BOUNDS_S) == (histogram.sum, 1, True)
    copy.add([0.3])  # independent of the original
    assert histogram.count == 3
    with pytest.raises(StatisticsError, match="shape"):
        LatencyHistogram.from_arrays(bounds, counts[:-1], total)
    with pytest.raises(StatisticsError, match="strictly increasing"):
        LatencyHistogram(bounds=[0.1, 0.1, 0.2])


def test_burn_rate_closed_form() -> None:
    assert burn_rate(bad=10, total=1000, objective=0.99) == pytest.approx(1.0)
    assert burn_rate(bad=144, total=1000, objective=0.99) == pytest.approx(14.4)
    assert burn_rate(bad=5, total=100, objective=0.999) == pytest.approx(50.0)
    assert burn_rate(bad=0, total=0, objective=0.99) == 0.0
    with pytest.raises(StatisticsError):
        burn_rate(bad=2, total=1, objective=0.99)
    with pytest.raises(StatisticsError):
        burn_rate(bad=0, total=1, objective=1.0)


def _minute(monitor: BurnRateMonitor, minute: int, good: int, bad: int) -> None:
    monitor.observe(60.0 * minute + 30.0, np.r_[np.full(good, GOOD_S), np.full(bad, BAD_S)])


def test_window_burn_rates_match_sums_over_buckets() -> None:
    slo = SLO(threshold_s=0.1, objective=0.995)
    monitor = BurnRateMonitor(slo)
    rng = np.random.default_rng(11)
    minutes = 500
    good = rng.integers(0, 200, size=minutes)
    bad = rng.integers(0, 20, size=minutes)
    for m in range(minutes):
        _minute(monitor, m, int(good[m]), int(bad[m]))
    monitor.observe(60.0 * minutes + 1.0, [slo.threshold_s])  # next minute; exactly at the threshold is good
    result = monitor.evaluate(now=60.0 * (minutes - 1) + 59.0)
    for window_min, rate in [(60, result.page_long), (5, result.page_short), (360, result.ticket_long),
                             (30, result.ticket_short)]:
        b, g = bad[-window_min:].sum(), good[-window_min:].sum()
        assert rate == pytest.approx((b / (b + g)) / (1.0 - slo.objective), rel=1e-12), window_min
    later = monitor.evaluate(now=60.0 * minutes + 59.0)  # the threshold request is good: no extra burn
    b, g = bad[-4:].sum(), good[-4:].sum() + 1
    assert later.page_short == pytest.approx((b / (b + g)) / (1.0 - slo.objective), rel=1e-12)


def test_fast_burn_pages_after_closed_form_delay_and_clears_with_short_window() -> None:
    monitor = BurnRateMonitor(SLO(threshold_s=0.1, objective=0.99))
    start, stop = 360, 380  # every request fails during minutes [360, 380)
    # The long hour needs a bad fraction of 14.4 * 1% = 0.144, i.e. ceil(0.144 * 60) = 9 bad minutes.
    first_page = start + math.ceil(0.144 * 60) - 1
    pages = []
    for m in range(stop + 10):
        _minute(monitor, m, good=0 if start <= m < stop else 100, bad=100 if start <= m < stop else 0)
        result = monitor.evaluate(now=60.0 * m + 59.0)
        assert not result.ticket  # 20 bad minutes are 5.6% of 6 h: burn 5.6 < 6
        if result.page:
            pages.append(m)
    # Once the errors stop, the 5-minute window holds (4 - j) bad minutes j minutes later: below 14.4
    # (0.72 bad minutes) from j = 4 on, while the hour still burns at 20/60/1% = 33.
    assert pages == list(range(first_page, stop + 4))
    assert monitor.evaluate(now=60.0 * (stop + 4) + 59.0).page_long == pytest.approx(20 / 60 / 0.01)


def test_slow_burn_opens_a_ticket_but_does_not_page() -> None:
    monitor = BurnRateMonitor(SLO(threshold_s=0.1, objective=0.99))
    for m in range(360):
        _minute(monitor, m, good=93, bad=7)  # burn 7: above the ticket rate 6, below the page rate 14.4
    result = monitor.evaluate(now=60.0 * 359 + 59.0)
    assert result.ticket_long == pytest.approx(7.0) and result.page_long == pytest.approx(7.0)
    assert result.ticket and not result.page


def test_memory_is_bounded_and_old_data_falls_out() -> None:
    monitor = BurnRateMonitor(SLO(threshold_s=0.1, objective=0.99))
    assert monitor.n_buckets == 361  # 6 h ticket window / 60 s buckets, and one spare
    for m in range(10):
        _minute(monitor, m, good=0, bad=100)
    assert monitor.evaluate(now=60.0 * 9 + 59.0).page
    after_6h = monitor.evaluate(now=60.0 * (9 + 360) + 59.0)  # no traffic since: every window is empty
    assert (after_6h.page_long, after_6h.ticket_long, after_6h.page, after_6h.ticket) == (0.0, 0.0, False, False)
    for m in range(10, 10 * 24 * 60, 7):  # ten days of healthy traffic
        _minute(monitor, m, good=10, bad=0)
    assert monitor.n_buckets == 361 and monitor._good.shape == monitor._bad.shape == (361,)
    assert monitor.evaluate(now=60.0 * 10 * 24 * 60).ticket_long == 0.0
    _minute(monitor, 5, good=0, bad=100)  # a straggler from day one
    assert monitor.late == 100
    monitor.observe(60.0 * 10 * 24 * 60, [np.nan, -1.0])
    assert monitor.rejected == 2


def test_monitor_and_slo_validation() -> None:
    with pytest.raises(StatisticsError, match="objective"):
        SLO(threshold_s=0.1, objective=1.0)
    with pytest.raises(StatisticsError, match="threshold_s"):
        SLO(threshold_s=0.0, objective=0.99)
    with pytest.raises(StatisticsError, match="whole number"):
        BurnRateMonitor(SLO(0.1, 0.99), bucket_s=70.0)
    with pytest.raises(StatisticsError, match=r"page_windows must be \(long, short\)"):
        BurnRateMonitor(SLO(0.1, 0.99), page_windows=(300.0, 3600.0))
    with pytest.raises(StatisticsError, match="finite"):
        BurnRateMonitor(SLO(0.1, 0.99)).evaluate(now=math.nan)
