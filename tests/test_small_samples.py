"""Small samples are tested, not refused: "insufficient" only when no outcome of a test could be significant."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from detectors import (
    build_categorical_reference,
    build_reference,
    categorical_drift,
    feature_drift,
    ks_smallest_p_value,
    min_detectable_rows,
    prediction_drift,
    smirnov_sf_exact,
    window_drift,
)


def test_a_25_row_window_shifted_by_2_sd_is_flagged() -> None:
    rng = np.random.default_rng(25)
    ref = build_reference(rng.normal(size=(2000, 1)), ["x"])
    window = rng.normal(size=(25, 1)) + 2.0
    result = window_drift(ref, window)
    assert not result.numeric.insufficient and result.drifted_features == ("x",)
    f = result.numeric.features[0]
    expected = stats.ks_2samp(ref.sorted_values[:, 0], window[:, 0])  # exact: max(n, m) <= 10,000
    assert f.ks_statistic == expected.statistic
    assert f.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300) and f.p_value < 1e-9


def test_insufficient_only_when_no_outcome_could_be_significant() -> None:
    rng = np.random.default_rng(2)
    names = [f"f{j}" for j in range(20)]
    ref = build_reference(rng.normal(size=(2000, 20)), names)
    # One row beyond all 2,000 reference values gives at best p = 2/2001 = 1.0e-3 > 0.01/20.
    one = feature_drift(ref, np.full((1, 20), 99.0))
    assert one.insufficient and not one.drifted
    assert "smallest p-value" in one.reason and "alpha / 20 tests" in one.reason and "0.001" in one.reason
    # Two rows can reach 2/C(2002, 2) = 1.0e-6: they are tested, and two values far out are drift.
    two = feature_drift(ref, np.full((2, 20), 99.0))
    assert not two.insufficient and len(two.drifted_features) == 20
    # Two rows against a 20-row reference, 2 features: at best 2/C(22, 2) = 0.0087 > 0.01/2.
    small = build_reference(rng.normal(size=(20, 2)), ["a", "b"])
    res = window_drift(small, rng.normal(size=(2, 2)) + 50.0)
    assert res.numeric.insufficient and not res.drifted and "0.0087" in res.numeric.reason


def test_smallest_p_value_is_the_exact_law_at_d_equal_1() -> None:
    for n, m in [(5, 5), (20, 3), (2000, 1), (2000, 25), (300, 70)]:
        bound = float(ks_smallest_p_value(n, m))
        exact = smirnov_sf_exact(n, m, n * m // math.gcd(n, m))
        assert exact is not None and bound == pytest.approx(exact, rel=1e-9)
        apart = stats.ks_2samp(np.arange(n, dtype=float), np.arange(m, dtype=float) + n)
        assert apart.statistic == 1.0 and bound == pytest.approx(apart.pvalue, rel=1e-9)
    # the numbers quoted in `inferwatch drift --help`
    assert min_detectable_rows(20_000, 0.01) == 1 and min_detectable_rows(20_000, 0.01 / 20) == 1
    assert min_detectable_rows(2000, 0.01 / 20) == 2 and min_detectable_rows(20, 0.01 / 20) == 4


def test_chi_squared_parts_use_their_most_extreme_outcome() -> None:
    ref = build_reference(np.zeros((10, 1)), ["x"], predictions=[0, 1] * 500)
    # 2 predictions: even both in one class cannot fill a bin of expected count 5 -> nothing testable
    assert prediction_drift(ref, [0, 0]).insufficient
    tested = prediction_drift(ref, [0] * 40)  # 40 of one class: tested and drifted
    assert not tested.insufficient and tested.drifted and tested.smallest_p_value < 1e-6
    cat = build_categorical_reference(np.array([["a"], ["b"]] * 500), ["s"])
    assert categorical_drift(cat, np.zeros((2, 1), dtype=np.int64)).insufficient
    assert categorical_drift(cat, np.zeros((40, 1), dtype=np.int64)).drifted
