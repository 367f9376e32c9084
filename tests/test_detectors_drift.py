"""Drift decisions of ``detectors.drift`` on seeded synthetic windows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from detectors import (
    PROB_FLOOR,
    CategoricalReference,
    Correction,
    ReferenceSample,
    StatisticsError,
    build_categorical_reference,
    build_reference,
    categorical_drift,
    encode_categories,
    feature_drift,
    prediction_drift,
    window_drift,
)
from detectors.ks import BRACKET_FLOOR, bracket_log_ratio

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


def assert_ks_p_value(p: float, settled: bool, scipy_p: float, n: int, m: int) -> None:
    """A settled KS p-value is SciPy's; an unsettled one is within the bracket of detectors.ks of it.

    (Shared with the other tests that check a drift result's p-values against ``scipy.stats.ks_2samp``.)"""
    if settled:
        assert p == pytest.approx(scipy_p, rel=1e-10, abs=1e-300)
    elif p >= BRACKET_FLOOR:
        assert abs(math.log(scipy_p / p)) <= bracket_log_ratio(n * m / (n + m), p)
    else:
        assert scipy_p < 1e-11


def test_build_reference(reference: ReferenceSample) -> None:
    assert reference.sorted_values.shape == (5000, 8)
    assert np.all(np.diff(reference.sorted_values, axis=0) >= 0)
    assert reference.edges.shape == (8, 9) and reference.proportions.shape == (8, 10)
    np.testing.assert_allclose(reference.proportions, 0.1, atol=1e-3)
    assert reference.class_labels == ("cat", "dog", "bird")
    assert reference.class_priors is not None and reference.class_counts is not None
    np.testing.assert_allclose(reference.class_priors, PRIORS, atol=0.02)
    assert reference.class_counts.dtype == np.int64 and reference.class_counts.sum() == 6000  # all predictions
    np.testing.assert_array_equal(reference.class_priors, reference.class_counts / 6000)
    assert not reference.sorted_values.flags.writeable and not reference.class_counts.flags.writeable


def test_reference_class_counts_and_priors_must_agree(reference: ReferenceSample) -> None:
    parts = (reference.feature_names, reference.sorted_values, reference.edges, reference.proportions,
             reference.class_labels)
    counts = np.array([50, 30, 20])
    derived = ReferenceSample(*parts, class_counts=counts)
    np.testing.assert_array_equal(derived.class_priors, [0.5, 0.3, 0.2])  # priors derived from counts
    ReferenceSample(*parts, class_priors=np.array([0.5, 0.3, 0.2]), class_counts=counts)  # a saved profile
    with pytest.raises(StatisticsError, match="disagree"):
        ReferenceSample(*parts, class_priors=np.array([0.4, 0.4, 0.2]), class_counts=counts)
    with pytest.raises(StatisticsError, match="class_counts has shape"):
        ReferenceSample(*parts, class_counts=np.array([5, 5]))
    with pytest.raises(StatisticsError, match="non-negative integers"):
        ReferenceSample(*parts, class_counts=np.array([5.5, 5.0, 1.0]))


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
    x[:, 2] = np.nan  # a missing cell is kept as missing; a feature with no present value is an error
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


def test_non_finite_cells_are_missing_values_of_their_feature_only(reference: ReferenceSample) -> None:
    window = _window(500, 9)
    dirty = window.copy()
    dirty[[3, 50, 51, 400], [0, 7, 2, 5]] = [np.nan, np.inf, -np.inf, np.nan]
    result = feature_drift(reference, dirty)
    assert result.n_current == 500  # no row is dropped
    for j, f in enumerate(result.features):
        present = dirty[np.isfinite(dirty[:, j]), j]
        assert f.n_current == present.size == (499 if j in (0, 7, 2, 5) else 500)
        expected = stats.ks_2samp(reference.sorted_values[:, j], present)
        assert f.ks_statistic == expected.statistic
        assert_ks_p_value(f.p_value, f.p_settled, expected.pvalue, f.n_reference, f.n_current)


def test_min_samples_is_an_extra_floor_per_feature(reference: ReferenceSample) -> None:
    window = _window(100, 3, shift_sd={0: 5.0})
    window[:75, 1] = np.nan  # 25 present values in f1
    result = feature_drift(reference, window, min_samples=30)
    assert not result.insufficient and result.drifted_features == ("f0",)
    assert result.features[1].n_current == 25 and math.isnan(result.features[1].p_adjusted)
    assert math.isfinite(result.features[1].ks_statistic)  # still measured, just not in the family
    none = feature_drift(reference, window, min_samples=200)
    assert none.insufficient and not none.drifted and "min_samples" in none.reason


def test_feature_count_mismatch_names_both_counts(reference: ReferenceSample) -> None:
    with pytest.raises(StatisticsError, match=r"7 features but the reference has 8"):
        feature_drift(reference, np.zeros((50, 7)))
    with pytest.raises(StatisticsError, match="correction"):
        feature_drift(reference, _window(50, 1), correction="holm")  # type: ignore[arg-type]


def test_prediction_drift_detects_class_mix_shift(reference: ReferenceSample) -> None:
    rng = np.random.default_rng(77)
    shifted = prediction_drift(reference, rng.choice(3, size=2000, p=[0.3, 0.3, 0.4]))
    assert shifted.drifted and not shifted.insufficient and shifted.test == "homogeneity"
    table = stats.chi2_contingency([reference.class_counts, shifted.observed], correction=False)
    assert shifted.statistic == pytest.approx(table.statistic, rel=1e-12)
    assert shifted.p_value == pytest.approx(table.pvalue, rel=1e-9, abs=1e-300)
    assert shifted.p_value < 1e-10 and shifted.js_distance >= 0.1 and shifted.dof == 2
    assert sum(shifted.observed) == shifted.n_current == 2000
    assert reference.class_priors is not None
    assert shifted.expected_probs == tuple(reference.class_priors.tolist())
    same = prediction_drift(reference, rng.choice(3, size=2000, p=PRIORS))
    assert not same.drifted and same.p_value > 0.01 and same.js_distance < 0.05


def test_prediction_drift_of_an_old_profile_falls_back_to_goodness_of_fit(reference: ReferenceSample) -> None:
    # a profile written before class counts were stored has priors only
    old = ReferenceSample(reference.feature_names, reference.sorted_values, reference.edges, reference.proportions,
                          reference.class_labels, class_priors=reference.class_priors)
    assert old.class_counts is None
    predictions = np.random.default_rng(78).choice(3, size=2000, p=[0.45, 0.3, 0.25])
    result = prediction_drift(old, predictions)
    assert result.test == "goodness_of_fit"
    assert old.class_priors is not None
    expected = stats.chisquare(np.bincount(predictions, minlength=3), 2000 * old.class_priors)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-9)
    # the same window against the counts: the reference's own noise is accounted for, a smaller statistic
    assert prediction_drift(reference, predictions).statistic < result.statistic


def test_prediction_drift_validation(reference: ReferenceSample) -> None:
    with pytest.raises(StatisticsError, match=r"\[0, 3\).*\[3, 7\]"):
        prediction_drift(reference, np.array([0, 1, 3, 7]))
    no_priors = build_reference(np.zeros((10, 1)), ["a"])
    with pytest.raises(StatisticsError, match="no class priors"):
        prediction_drift(no_priors, np.zeros(50, dtype=int))
    few = prediction_drift(reference, np.full(10, 2))
    assert few.insufficient and not few.drifted and few.observed == (0, 0, 10)


def test_feature_wasserstein_is_scipy_w1_over_reference_sd(reference: ReferenceSample) -> None:
    window = _window(700, 13, shift_sd={1: 0.3})
    result = feature_drift(reference, window)
    ref = reference.sorted_values
    expected = [stats.wasserstein_distance(ref[:, j], window[:, j]) / ref[:, j].std() for j in range(8)]
    np.testing.assert_allclose([f.wasserstein for f in result.features], expected, rtol=1e-9)
    assert result.features[1].wasserstein == pytest.approx(0.3, abs=0.08)


def test_reference_rejects_unsorted_values() -> None:
    unsorted = np.array([[0.0, 2.0], [1.0, 1.0]])
    with pytest.raises(StatisticsError, match=r"not sorted in feature.*'b'"):
        ReferenceSample(("a", "b"), unsorted, np.zeros((2, 1)), np.full((2, 2), 0.5), (), None)


LEVELS = [f"l{i}" for i in range(6)]


@pytest.fixture(scope="module")
def categorical() -> CategoricalReference:
    rng = np.random.default_rng(5)
    values = np.column_stack([rng.choice(LEVELS, size=4000, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1]),
                              rng.choice(LEVELS[:3], size=4000)])
    return build_categorical_reference(values, ["colour", "shape"])


def test_categorical_reference_round_trips_through_npz(categorical: CategoricalReference, tmp_path: Path) -> None:
    assert categorical.levels == (tuple(LEVELS), tuple(LEVELS[:3]))
    assert categorical.proportions.shape == (2, 6) and categorical.proportions[1, 3:].sum() == 0
    assert categorical.counts is not None and categorical.counts.dtype == np.int64
    np.testing.assert_array_equal(categorical.counts.sum(axis=1), [4000, 4000])
    np.savez(tmp_path / "cat.npz", **categorical.to_arrays())
    with np.load(tmp_path / "cat.npz", allow_pickle=False) as data:
        loaded = CategoricalReference.from_arrays(data)
    assert loaded.feature_names == categorical.feature_names and loaded.levels == categorical.levels
    np.testing.assert_array_equal(loaded.proportions, categorical.proportions)
    np.testing.assert_array_equal(loaded.counts, categorical.counts)
    # arrays written before counts were stored still load, without counts
    old = {k: v for k, v in categorical.to_arrays().items() if k != "counts"}
    loaded_old = CategoricalReference.from_arrays(old)
    assert loaded_old.counts is None
    np.testing.assert_array_equal(loaded_old.proportions, categorical.proportions)
    with pytest.raises(StatisticsError, match="disagree"):
        CategoricalReference.from_arrays({**categorical.to_arrays(),
                                          "proportions": np.vstack([np.full(6, 1 / 6), categorical.proportions[1]])})


def test_encode_categories_maps_unseen_values_to_minus_one(categorical: CategoricalReference) -> None:
    codes = encode_categories(categorical, [["l3", "l2"], ["l5", "l5"], ["new", "l0"]])
    np.testing.assert_array_equal(codes, [[3, 2], [5, -1], [-1, 0]])  # l5 is not a level of "shape"


def test_categorical_drift_matches_scipy_chi2_contingency(categorical: CategoricalReference) -> None:
    assert categorical.counts is not None
    rng = np.random.default_rng(6)
    colour = rng.choice(6, size=3000, p=[0.25, 0.25, 0.2, 0.1, 0.1, 0.1])
    shape = rng.choice(3, size=3000)
    shape[:30] = -1  # 1% unseen values land in "other" (reference count 0)
    result = categorical_drift(categorical, np.column_stack([colour, shape]))
    assert result.test == "homogeneity"
    # colour: no value unseen, so "other" is empty in both rows and takes no part; nothing is small
    table = stats.chi2_contingency([categorical.counts[0], np.bincount(colour, minlength=6)], correction=False)
    first = result.features[0]
    assert first.dof == table.dof == 5 and first.chi2 == pytest.approx(table.statistic, rel=1e-12)
    assert first.p_value == pytest.approx(table.pvalue, rel=1e-9)
    assert first.p_adjusted == pytest.approx(min(1.0, 2 * table.pvalue), rel=1e-9)
    assert first.js_distance == pytest.approx(
        distance.jensenshannon(np.bincount(colour, minlength=6), categorical.proportions[0], base=2), rel=1e-9)
    # shape: 3 levels + "other" (30 unseen values, expected 12.9 in the window row), nothing pooled
    shape_counts = np.append(np.bincount(shape[shape >= 0], minlength=3), 30)
    table = stats.chi2_contingency([np.append(categorical.counts[1, :3], 0), shape_counts], correction=False)
    assert result.features[1].dof == table.dof == 3
    assert result.features[1].chi2 == pytest.approx(table.statistic, rel=1e-12)
    assert result.drifted_features == ("colour", "shape")  # the unseen values alone are a clear change
    props = categorical.proportions[0]
    same = categorical_drift(categorical, np.column_stack([rng.choice(6, size=3000, p=props),
                                                           rng.choice(3, size=3000)]))
    assert not same.drifted and not same.insufficient
    with pytest.raises(StatisticsError, match=r"'shape'.*\[-1, 3\).*\[4\]"):
        categorical_drift(categorical, np.array([[0, 4]] * 40))
    assert categorical_drift(categorical, np.zeros((10, 2), dtype=int)).insufficient


def test_categorical_drift_pools_a_few_unseen_values(categorical: CategoricalReference) -> None:
    assert categorical.counts is not None
    rng = np.random.default_rng(16)
    shape = rng.choice(3, size=300)
    shape[:3] = -1  # 3 unseen values: expected 0.2 in the window row, pooled with the smallest level
    result = categorical_drift(categorical, np.column_stack([rng.choice(6, size=300), shape]))
    observed = np.bincount(shape[shape >= 0], minlength=3)
    reference = categorical.counts[1, :3]
    small = int(np.argmin(reference + observed))
    keep = [k for k in range(3) if k != small]
    pooled = [np.append(reference[keep], reference[small]), np.append(observed[keep], observed[small] + 3)]
    table = stats.chi2_contingency(pooled, correction=False)
    second = result.features[1]
    assert second.dof == table.dof == 2 and second.chi2 == pytest.approx(table.statistic, rel=1e-12)
    assert second.p_value == pytest.approx(table.pvalue, rel=1e-9)
    assert "shape" not in result.drifted_features


def test_categorical_drift_of_old_arrays_falls_back_to_goodness_of_fit(categorical: CategoricalReference) -> None:
    old = CategoricalReference.from_arrays({k: v for k, v in categorical.to_arrays().items() if k != "counts"})
    rng = np.random.default_rng(6)
    colour = rng.choice(6, size=3000, p=[0.25, 0.25, 0.2, 0.1, 0.1, 0.1])
    result = categorical_drift(old, np.column_stack([colour, rng.choice(3, size=3000)]))
    assert result.test == "goodness_of_fit"
    props = old.proportions[0]
    # chi2 rules by hand: "other" (reference share 0) is floored to PROB_FLOOR, its tiny expected count
    # pooled with the smallest real category; nothing else is small.
    probs = np.maximum(np.append(props, 0.0), PROB_FLOOR)
    probs /= probs.sum()
    small = int(np.argmin(props))
    observed, expect = np.bincount(colour, minlength=7), 3000 * probs
    keep = [k for k in range(6) if k != small]
    expected = stats.chisquare(np.append(observed[keep], observed[small] + observed[6]),
                               np.append(expect[keep], expect[small] + expect[6]))
    first = result.features[0]
    assert first.dof == 5 and first.chi2 == pytest.approx(expected.statistic, rel=1e-9)
    assert first.p_value == pytest.approx(expected.pvalue, rel=1e-6)
    # the homogeneity test on the same window: smaller by about 1 + m/n = 1 + 3000/4000
    homogeneous = categorical_drift(categorical, np.column_stack([colour, rng.choice(3, size=3000)]))
    assert first.chi2 / homogeneous.features[0].chi2 == pytest.approx(1.75, rel=0.1)


def test_window_drift_corrects_across_numeric_and_categorical(
    reference: ReferenceSample, categorical: CategoricalReference
) -> None:
    rng = np.random.default_rng(12)
    window = _window(1000, 14, shift_sd={2: 0.5})
    codes = np.column_stack([rng.choice(6, size=1000, p=[0.45, 0.15, 0.1, 0.1, 0.1, 0.1]), rng.choice(3, size=1000)])
    joint = window_drift(reference, window, categorical, codes)
    assert joint.drifted and joint.drifted_features == ("f2", "colour")
    alone = feature_drift(reference, window)
    raw = np.array([f.p_value for f in alone.features])
    np.testing.assert_allclose([f.p_adjusted for f in joint.numeric.features], np.minimum(1.0, 10 * raw))
    assert joint.categorical is not None
    cat_alone = categorical_drift(categorical, codes)
    assert joint.categorical.features[0].p_adjusted == pytest.approx(
        min(1.0, 5 * cat_alone.features[0].p_adjusted), rel=1e-12)
    numeric_only = window_drift(reference, window)
    assert numeric_only.categorical is None and numeric_only.drifted_features == ("f2",)
    with pytest.raises(StatisticsError, match="together"):
        window_drift(reference, window, categorical, None)


def _scipy_verdicts(ref: np.ndarray, window: np.ndarray, alpha: float, correction: Correction, min_effect: float,
                    other_p: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drift verdicts from SciPy: ks_2samp(method='auto') per feature (exact law where max(n, m) <= 10,000), the
    correction over the family (plus ``other_p``), and the effect floor.  Returns (drifted, p, statistic)."""
    tests = [stats.ks_2samp(ref[:, j], window[:, j]) for j in range(ref.shape[1])]
    p = np.array([t.pvalue for t in tests])
    statistic = np.array([t.statistic for t in tests])
    family = np.concatenate([p, [] if other_p is None else other_p])
    adjusted = (np.minimum(family * family.size, 1.0) if correction == "bonferroni"
                else stats.false_discovery_control(family, method="bh"))
    return (adjusted[: p.size] < alpha) & (statistic >= min_effect), p, statistic


def _drift_case(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Six features: shifts from none to large; features 4 and 5 rounded (heavy ties)."""
    rng = np.random.default_rng(seed)
    shifts = np.array([0.0, 0.6, 1.2, 2.5, 4.0, 12.0]) / math.sqrt(n * m / (n + m))  # KS lambda ~ shift / 2.5
    ref = rng.normal(size=(n, 6))
    window = rng.normal(size=(m, 6)) + shifts
    ref[:, 4:], window[:, 4:] = np.round(ref[:, 4:] * 2), np.round(window[:, 4:] * 2)
    return ref, window, [f"x{j}" for j in range(6)]


@pytest.mark.parametrize(("n", "m"), [(20, 20), (40, 3000), (200, 150), (2000, 500), (10000, 1000), (1500, 1500),
                                      (6000, 9000), (10000, 10000), (20000, 800)])
@pytest.mark.parametrize("correction", ["bonferroni", "bh"])
def test_verdicts_equal_scipys_exact_p_values_on_a_seeded_grid(n: int, m: int, correction: Correction) -> None:
    ref, window, names = _drift_case(n, m, seed=n + 7 * m)
    reference = build_reference(ref, names, max_rows=n)
    for alpha in (0.001, 0.01, 0.05, 0.3):
        result = feature_drift(reference, window, alpha=alpha, correction=correction, min_effect=0.0)
        drifted, p, statistic = _scipy_verdicts(ref, window, alpha, correction, 0.0)
        np.testing.assert_array_equal([f.drifted for f in result.features], drifted, err_msg=f"alpha {alpha}")
        np.testing.assert_array_equal([f.ks_statistic for f in result.features], statistic)
        for f, expected in zip(result.features, p, strict=True):
            assert_ks_p_value(f.p_value, f.p_settled, expected, n, m)


@pytest.mark.parametrize("correction", ["bonferroni", "bh"])
@pytest.mark.parametrize(("n", "m"), [(10000, 1000), (3000, 3000), (500, 120)])
def test_verdicts_at_the_threshold_are_the_exact_ones(n: int, m: int, correction: Correction) -> None:
    """alpha a hair above and below each feature's exact adjusted p-value: the verdict flips exactly there, even
    where the asymptotic p-value lies on the other side."""
    ref, window, names = _drift_case(n, m, seed=3)
    reference = build_reference(ref, names, max_rows=n)
    _, p, _ = _scipy_verdicts(ref, window, 0.5, correction, 0.0)
    adjusted = np.minimum(p * p.size, 1.0) if correction == "bonferroni" else stats.false_discovery_control(p)
    flips = 0
    for j in np.flatnonzero((adjusted > 1e-12) & (adjusted < 0.5)):
        for factor in (1 + 1e-9, 1 - 1e-9):
            alpha = float(adjusted[j] * factor)
            result = feature_drift(reference, window, alpha=alpha, correction=correction, min_effect=0.0)
            expected, _, _ = _scipy_verdicts(ref, window, alpha, correction, 0.0)
            np.testing.assert_array_equal([f.drifted for f in result.features], expected)
            assert result.features[j].drifted == (factor > 1) and result.features[j].p_settled
            flips += 1
    assert flips >= 4


def test_window_drift_verdicts_equal_scipys_with_categorical_features_in_the_family(
    categorical: CategoricalReference
) -> None:
    ref, window, names = _drift_case(10000, 1000, seed=11)
    reference = build_reference(ref, names, max_rows=10000)
    rng = np.random.default_rng(12)
    codes = np.column_stack([rng.choice(6, size=1000, p=[0.32, 0.2, 0.18, 0.1, 0.1, 0.1]), rng.choice(3, size=1000)])
    other = np.array([f.p_value for f in categorical_drift(categorical, codes).features])
    for correction in ("bonferroni", "bh"):
        for alpha in (0.001, 0.01, 0.1):
            result = window_drift(reference, window, categorical, codes, alpha=alpha, correction=correction,
                                  min_effect=0.0, min_effect_categorical=0.0)
            drifted, _, _ = _scipy_verdicts(ref, window, alpha, correction, 0.0, other)
            np.testing.assert_array_equal([f.drifted for f in result.numeric.features], drifted)


def test_only_features_near_the_threshold_get_the_exact_p_value() -> None:
    ref, window, names = _drift_case(10000, 1000, seed=6)
    result = feature_drift(build_reference(ref, names, max_rows=10000), window, min_effect=0.0)
    assert [f.p_settled for f in result.features] == [False, False, False, True, False, False]
    near = result.features[3]  # p ~ 0.0017 against the Bonferroni level 0.01 / 6 ~ 0.00167: exact, and not drifted
    assert near.p_value == pytest.approx(stats.ks_2samp(ref[:, 3], window[:, 3]).pvalue, rel=1e-10)
    assert near.p_value > 0.01 / 6 and not near.drifted
    assert result.drifted_features == ("x4", "x5")  # p ~ 5e-4 and ~0: far below the level, approximate p-values
