"""Drift decisions of ``detectors.drift`` on seeded synthetic windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import (
    Correction,
    ReferenceSample,
    StatisticsError,
    build_reference,
    feature_drift,
    prediction_drift,
)

NAMES = [f"f{i}" for i in range(8)]
PRIORS = np.array([0.5, 0.3, 0.2])


@pytest.fixture(scope="module")
def reference() -> ReferenceSample:
    rng = np.random.default_rng(100)
    x = rng.normal(loc=np.arange(8.0), scale=np.linspace(1.0, 3.0, 8), size=(6000, 8))
    predictions = rng.choice(3, size=6000, p=PRIORS)
    return build_reference(x, NAMES, predictions=predictions, class_labels=["cat", "dog", "bird"],
                           max_rows=5000)


def _window(m: int, seed: int, shift_sd: dict[int, float] | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.linspace(1.0, 3.0, 8)
    loc = np.arange(8.0)
    for j, k in (shift_sd or {}).items():
        loc[j] += k * scale[j]
    return rng.normal(loc=loc, scale=scale, size=(m, 8))


def test_build_reference(reference: ReferenceSample) -> None:
    assert reference.sorted_values.shape == (5000, 8)
    assert np.all(np.diff(reference.sorted_values, axis=0) >= 0)
    assert reference.edges.shape == (8, 9) and reference.proportions.shape == (8, 10)
    np.testing.assert_allclose(reference.proportions, 0.1, atol=1e-3)
    assert reference.class_labels == ("cat", "dog", "bird")
    assert reference.class_priors is not None
    np.testing.assert_allclose(reference.class_priors, PRIORS, atol=0.02)
    assert not reference.sorted_values.flags.writeable


def test_build_reference_subsample_is_seeded() -> None:
    x = np.random.default_rng(1).normal(size=(300, 2))
    a = build_reference(x, ["a", "b"], max_rows=100, seed=7)
    b = build_reference(x, ["a", "b"], max_rows=100, seed=7)
    c = build_reference(x, ["a", "b"], max_rows=100, seed=8)
    np.testing.assert_array_equal(a.sorted_values, b.sorted_values)
    assert not np.array_equal(a.sorted_values, c.sorted_values)
    assert np.isin(a.sorted_values[:, 0], x[:, 0]).all()  # rows drawn, not invented


def test_build_reference_errors_name_the_problem() -> None:
    x = np.zeros((10, 3))
    x[4, 2] = np.nan
    with pytest.raises(StatisticsError, match="'gamma'"):
        build_reference(x, ["alpha", "beta", "gamma"])
    with pytest.raises(StatisticsError, match="3 features but 2 feature names"):
        build_reference(np.zeros((10, 3)), ["a", "b"])
    with pytest.raises(StatisticsError, match=r"\[0, 2\).*\[2\]"):
        build_reference(np.zeros((10, 1)), ["a"], predictions=[0, 1, 2], class_labels=["x", "y"])
    ref = build_reference(np.zeros((10, 1)), ["a"], predictions=[0, 3])
    assert ref.class_labels == ("0", "1", "2", "3")
    with pytest.raises(StatisticsError, match="proportions has shape"):
        ReferenceSample(("a",), np.zeros((4, 1)), np.zeros((1, 2)), np.zeros((1, 2)), (), None)


@pytest.mark.parametrize("correction", ["bonferroni", "bh"])
def test_same_distribution_does_not_drift(reference: ReferenceSample, correction: Correction) -> None:
    for seed in range(3):
        result = feature_drift(reference, _window(1000, seed), correction=correction)
        assert not result.insufficient
        assert result.drifted_features == ()
        assert not result.drifted
        assert all(f.ks_statistic < 0.1 and f.psi < 0.05 for f in result.features)


@pytest.mark.parametrize("correction", ["bonferroni", "bh"])
def test_half_sd_shift_names_exactly_the_shifted_features(
    reference: ReferenceSample, correction: Correction
) -> None:
    window = _window(1000, 42, shift_sd={0: 0.5, 3: 0.5})
    result = feature_drift(reference, window, correction=correction)
    assert result.drifted
    assert result.drifted_features == ("f0", "f3")
    assert [f.name for f in result.features] == NAMES
    assert (result.n_reference, result.n_current, result.correction) == (5000, 1000, correction)
    shifted = result.features[3]
    assert shifted.p_adjusted < 1e-6 and shifted.psi > 0.1 and shifted.js_distance > 0.1


def test_effect_size_floor_suppresses_tiny_significant_shift(reference: ReferenceSample) -> None:
    window = _window(10000, 5, shift_sd={2: 0.15})
    strict = feature_drift(reference, window, min_effect=0.1)
    loose = feature_drift(reference, window, min_effect=0.0)
    assert strict.features[2].p_adjusted < 0.01 and strict.features[2].ks_statistic < 0.1
    assert strict.drifted_features == ()
    assert loose.drifted_features == ("f2",)


def test_non_finite_rows_are_excluded_and_counted(reference: ReferenceSample) -> None:
    window = _window(500, 9)
    dirty = window.copy()
    dirty[[3, 50, 51, 400], [0, 7, 2, 5]] = [np.nan, np.inf, -np.inf, np.nan]
    result = feature_drift(reference, dirty)
    clean = feature_drift(reference, np.delete(window, [3, 50, 51, 400], axis=0))
    assert (result.excluded_rows, result.n_current) == (4, 496)
    assert result.features == clean.features
    assert all(math.isfinite(f.ks_statistic) for f in result.features)


def test_insufficient_window(reference: ReferenceSample) -> None:
    window = _window(100, 3, shift_sd={0: 5.0})
    window[:75, 1] = np.nan  # 25 usable rows < 30
    result = feature_drift(reference, window)
    assert result.insufficient and not result.drifted and result.drifted_features == ()
    assert (result.excluded_rows, result.n_current) == (75, 25)
    assert math.isnan(result.features[0].ks_statistic)
    assert not feature_drift(reference, window, min_samples=20).insufficient


def test_feature_count_mismatch_names_both_counts(reference: ReferenceSample) -> None:
    with pytest.raises(StatisticsError, match=r"7 features but the reference has 8"):
        feature_drift(reference, np.zeros((50, 7)))
    with pytest.raises(StatisticsError, match="correction"):
        feature_drift(reference, _window(50, 1), correction="holm")  # type: ignore[arg-type]


def test_prediction_drift_detects_class_mix_shift(reference: ReferenceSample) -> None:
    rng = np.random.default_rng(77)
    shifted = prediction_drift(reference, rng.choice(3, size=2000, p=[0.3, 0.3, 0.4]))
    assert shifted.drifted and not shifted.insufficient
    assert shifted.p_value < 1e-10 and shifted.js_distance >= 0.1 and shifted.dof == 2
    assert sum(shifted.observed) == shifted.n_current == 2000
    assert reference.class_priors is not None
    assert shifted.expected_probs == tuple(reference.class_priors.tolist())
    same = prediction_drift(reference, rng.choice(3, size=2000, p=PRIORS))
    assert not same.drifted and same.p_value > 0.01 and same.js_distance < 0.05


def test_prediction_drift_validation(reference: ReferenceSample) -> None:
    with pytest.raises(StatisticsError, match=r"\[0, 3\).*\[3, 7\]"):
        prediction_drift(reference, np.array([0, 1, 3, 7]))
    no_priors = build_reference(np.zeros((10, 1)), ["a"])
    with pytest.raises(StatisticsError, match="no class priors"):
        prediction_drift(no_priors, np.zeros(50, dtype=int))
    few = prediction_drift(reference, np.full(10, 2))
    assert few.insufficient and not few.drifted and few.observed == (0, 0, 10)
