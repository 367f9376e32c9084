"""Missing values: every numeric statistic per feature on its own present values (against SciPy), missing rates
in the profile, missing-rate drift as a finding of its own, and NaN / empty cells in data files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from detectors import build_reference, feature_drift, window_drift
from detectors.missing import missing_rate_drift, two_proportion_p_values
from detectors.psi import bin_proportions, jensen_shannon, psi
from monitor.datafiles import read_table
from monitor.offline import build_profile
from monitor.profiles import load_profile, save_profile
from tests.test_detectors_drift import assert_ks_p_value


def _with_missing(rng: np.random.Generator, n: int, rate: float, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, 3)) + shift
    x[rng.random(x.shape) < rate] = np.nan
    return x


def _present(column: np.ndarray) -> np.ndarray:
    return column[np.isfinite(column)]


def test_statistics_equal_scipy_on_each_features_present_values() -> None:
    # The case: 3 features, 4,000 rows, 5% missing cells (listwise deletion dropped ~600 rows).
    rng = np.random.default_rng(7)
    ref_x = _with_missing(rng, 4000, 0.05)
    cur_x = _with_missing(rng, 4000, 0.05, shift=0.05)
    assert (~np.isfinite(cur_x).all(axis=1)).sum() > 500  # what listwise deletion would have thrown away
    ref = build_reference(ref_x, ["a", "b", "c"], max_rows=10_000)
    result = feature_drift(ref, cur_x)
    assert result.n_current == 4000
    for j, f in enumerate(result.features):
        a, b = _present(ref_x[:, j]), _present(cur_x[:, j])
        assert (f.n_reference, f.n_current) == (a.size, b.size)
        expected = stats.ks_2samp(a, b)
        assert f.ks_statistic == expected.statistic
        assert_ks_p_value(f.p_value, f.p_settled, expected.pvalue, f.n_reference, f.n_current)
        assert f.wasserstein * a.std() == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9)
        props = bin_proportions(b[:, None], ref.edges[j : j + 1])
        assert f.psi == pytest.approx(float(psi(ref.proportions[j : j + 1], props)[0]), rel=1e-12)
        assert f.js_distance == pytest.approx(float(jensen_shannon(ref.proportions[j : j + 1], props)[0]), rel=1e-12)
    # a complete window takes the vectorised path against the ragged reference: same answer as SciPy
    complete = rng.normal(size=(700, 3))
    for j, f in enumerate(feature_drift(ref, complete).features):
        assert f.ks_statistic == stats.ks_2samp(_present(ref_x[:, j]), complete[:, j]).statistic


def test_a_feature_with_missing_values_does_not_change_the_others() -> None:
    rng = np.random.default_rng(3)
    ref = build_reference(rng.normal(size=(3000, 3)), ["a", "b", "c"])
    window = rng.normal(size=(800, 3))
    holed = window.copy()
    holed[::3, 1] = np.nan
    clean, dirty = feature_drift(ref, window).features, feature_drift(ref, holed).features
    assert (clean[0], clean[2]) == (dirty[0], dirty[2])  # the vectorised path, untouched
    assert dirty[1].n_current == 800 - len(range(0, 800, 3))
    assert dirty[1].ks_statistic == stats.ks_2samp(ref.sorted_values[:, 1], holed[1::3, 1].tolist()
                                                   + holed[2::3, 1].tolist()).statistic
    empty = window.copy()
    empty[:, 2] = np.nan  # a feature with no value in the window is not tested; the others are
    res = window_drift(ref, empty)
    assert not res.numeric.insufficient and np.isnan(res.numeric.features[2].p_adjusted)
    assert res.numeric.features[2].n_current == 0


def test_profile_keeps_missing_rates_and_old_profiles_still_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2000, 3))
    x[rng.random(2000) < 0.1, 1] = np.nan
    np.savez(tmp_path / "ref.npz", X=x, feature_names=np.array(["a", "b", "c"]))
    profile = build_profile(read_table(tmp_path / "ref.npz"), "m", "1")
    assert profile.reference is not None
    missing = int(np.isnan(x[:, 1]).sum())
    assert profile.reference.missing_counts.tolist() == [0, missing, 0]  # type: ignore[union-attr]
    assert profile.reference.present.tolist() == [2000, 2000 - missing, 2000]  # no row dropped
    assert "missing values" in profile.describe()
    save_profile(tmp_path / "p.npz", profile)
    loaded = load_profile(tmp_path / "p.npz")
    assert loaded.reference is not None and loaded.reference.missing_counts is not None
    assert loaded.reference.missing_counts.tolist() == [0, missing, 0] and loaded.reference.n_rows == 2000
    np.testing.assert_array_equal(loaded.reference.sorted_values, profile.reference.sorted_values)
    # a v2 profile written before missing values were kept: no missing_counts entry, rate 0
    with np.load(tmp_path / "p.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "missing_counts"}
    full = build_profile(read_table(tmp_path / "ref.npz"), "m", "1")
    assert full.reference is not None
    arrays["sorted_values"] = np.sort(rng.normal(size=(500, 3)), axis=0)
    np.savez(tmp_path / "old.npz", **arrays)
    old = load_profile(tmp_path / "old.npz")
    assert old.reference is not None and old.reference.missing_rates.tolist() == [0.0, 0.0, 0.0]


def test_two_proportion_test_equals_scipy() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):  # small and medium tables: Fisher's exact test
        n1, n2 = int(rng.integers(1, 3000)), int(rng.integers(1, 1500))
        x1, x2 = int(rng.integers(0, n1 + 1)), int(rng.integers(0, n2 + 1))
        expected = stats.fisher_exact([[n1 - x1, x1], [n2 - x2, x2]]).pvalue
        assert two_proportion_p_values(x1, n1, x2, n2)[0] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # a conditional support above 10,001 outcomes: the pooled z-test, i.e. the uncorrected chi-squared
    table = [[40_000, 60_000], [12_000, 18_500]]
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert two_proportion_p_values(60_000, 100_000, 18_500, 30_500)[0] == pytest.approx(expected, rel=1e-9)


def test_missing_rate_drift_on_a_seeded_stream() -> None:
    # Reference: 20,000 rows, feature b 5% missing.  Windows of 500-1,000 events go through feature_drift,
    # whose per-feature present counts give the window's missing counts.
    rng = np.random.default_rng(2026)
    ref_x = rng.normal(size=(20_000, 3))
    ref_x[rng.random(20_000) < 0.05, 1] = np.nan
    ref = build_reference(ref_x, ["a", "b", "c"])
    assert ref.missing_counts is not None and ref.n_rows == 20_000

    def window(rate: float) -> tuple[bool, tuple[str, ...]]:
        m = int(rng.integers(500, 1001))
        x = rng.normal(size=(m, 3))
        x[rng.random(m) < rate, 1] = np.nan
        drift = feature_drift(ref, x)
        missing = [m - f.n_current for f in drift.features]
        res = missing_rate_drift(ref.feature_names, ref.missing_counts, ref.n_rows, missing, m)
        assert not res.insufficient
        return res.drifted, res.drifted_features

    controls = [window(0.05) for _ in range(50)]
    false_alarms = sum(d for d, _ in controls)
    assert false_alarms == 0  # measured: 0 of 50 control windows
    changed = [window(0.20) for _ in range(50)]
    assert all(features == ("b",) for _, features in changed)  # found in every one of 50 windows


def test_missing_rate_floor_and_insufficient_window() -> None:
    # significant but tiny: 5.0% -> 5.6% in 2,000,000 rows (h = 0.027 < 0.1) is no finding
    big = missing_rate_drift(["a"], [100_000], 2_000_000, [112_000], 2_000_000)
    assert big.features[0].p_adjusted < 1e-10 and not big.drifted
    # 0% -> 1%: a broken upstream field, h = 0.20
    assert missing_rate_drift(["a"], [0], 20_000, [10], 1000).drifted
    one = missing_rate_drift(["a", "b"], [1000, 1000], 20_000, [1, 1], 1)
    assert one.insufficient and not one.drifted and "smallest p-value" in one.reason


def test_data_files_missing_cells(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b,colour,prediction\n1.5,,red,0\n,2.0,blue,1\n3.0,4.0,,1\n")
    t = read_table(tmp_path / "d.csv")
    assert t.feature_names == ("a", "b") and t.categorical_names == ("colour",)  # b stays numeric
    np.testing.assert_array_equal(np.isnan(t.x), [[False, True], [True, False], [False, False]])
    x = np.arange(12.0).reshape(6, 2)
    x[1, 0] = np.nan
    np.savez(tmp_path / "d.npz", X=x)
    t2 = read_table(tmp_path / "d.npz")
    assert t2.rows == 6 and int(np.isnan(t2.x).sum()) == 1
    profile = build_profile(t2, "m", "1")
    assert profile.reference is not None and profile.reference.present.tolist() == [5, 6]
