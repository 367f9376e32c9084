"""Statistics of ``detectors`` checked against SciPy and closed forms."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats
from scipy.spatial import distance

import detectors
import detectors.kolmogorov
import detectors.ks as ks_module
from detectors import (
    KSIndex,
    StatisticsError,
    adjust_p_values,
    bin_proportions,
    chi2_goodness_of_fit,
    chi2_goodness_of_fit_rows,
    jensen_shannon,
    ks_2samp_columns,
    kstwo_sf,
    psi,
    quantile_edges,
    smirnov_sf_exact,
    sort_reference,
    wasserstein_columns,
)
from detectors.chi2 import chi2_homogeneity, chi2_homogeneity_rows
from detectors.ks import (
    BRACKET_FLOOR,
    EAGER_EN,
    bracket_log_ratio,
    ks_2samp_index,
    ks_p_values,
    ks_statistic,
    locate,
    reference_counts,
)
from detectors.wasserstein import W1Index, wasserstein_index


def _samples(n: int, m: int, discrete: bool, seed: int, n_features: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n, n_features))
    cur = rng.normal(loc=np.linspace(0.0, 0.6, n_features), size=(m, n_features))
    if discrete:  # heavy ties, within and across samples
        ref, cur = np.round(ref * 2), np.round(cur * 2)
    return ref, cur


@pytest.mark.parametrize(
    ("n", "m", "discrete", "method"),
    [
        (1, 1, False, "exact"),
        (3, 5, False, "exact"),
        (1, 9, True, "exact"),
        (40, 40, False, "exact"),
        (40, 40, True, "exact"),
        (25, 61, True, "exact"),
        (300, 450, False, "exact"),
        (2000, 1500, True, "exact"),
        (10000, 64, False, "exact"),
        (12000, 300, False, "asymp"),
        (150, 10001, True, "asymp"),
    ],
)
def test_ks_matches_scipy(n: int, m: int, discrete: bool, method: str) -> None:
    ref, cur = _samples(n, m, discrete, seed=n * 7919 + m)
    res = ks_2samp_columns(sort_reference(ref), cur)
    expected = [stats.ks_2samp(ref[:, j], cur[:, j]) for j in range(ref.shape[1])]
    assert res.method == method
    np.testing.assert_array_equal(res.statistic, [e.statistic for e in expected])
    np.testing.assert_allclose(res.p_value, [e.pvalue for e in expected], rtol=0, atol=1e-9)


def test_ks_identical_and_disjoint_samples() -> None:
    x = np.arange(20.0).reshape(10, 2)
    same = ks_2samp_columns(x, x[::-1])
    np.testing.assert_array_equal(same.statistic, [0.0, 0.0])
    np.testing.assert_array_equal(same.p_value, [1.0, 1.0])
    apart = ks_2samp_columns(x, x + 100.0)
    np.testing.assert_array_equal(apart.statistic, [1.0, 1.0])
    assert apart.p_value[0] == pytest.approx(stats.ks_2samp(x[:, 0], x[:, 0] + 100).pvalue, abs=1e-12)


def test_ks_exact_fallback_to_asymptotic(monkeypatch: pytest.MonkeyPatch) -> None:
    ref, cur = _samples(80, 120, False, seed=3)
    monkeypatch.setattr(ks_module, "smirnov_sf_exact", lambda n1, n2, h: None)
    res = ks_2samp_columns(sort_reference(ref), cur)
    expected = [stats.ks_2samp(ref[:, j], cur[:, j], method="asymp").pvalue for j in range(ref.shape[1])]
    assert res.method == "exact+asymp"
    np.testing.assert_allclose(res.p_value, expected, rtol=0, atol=1e-9)


def test_smirnov_port_agrees_with_compiled_kernel() -> None:
    rng = np.random.default_rng(11)
    for _ in range(60):
        n1, n2 = (int(v) for v in rng.integers(1, 60, size=2))
        lcm = n1 * n2 // math.gcd(n1, n2)
        h = int(rng.integers(0, lcm + 1))
        port = smirnov_sf_exact(n1, n2, h, use_compiled=False)
        assert port == pytest.approx(smirnov_sf_exact(n1, n2, h), abs=1e-12)


def test_ks_validation() -> None:
    ref = sort_reference(np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(StatisticsError, match="not sorted"):
        ks_2samp_columns(ref[::-1], ref)
    with pytest.raises(StatisticsError, match="2 features but reference_sorted has 3"):
        ks_2samp_columns(ref, ref[:, :2])
    bad = ref.copy()
    bad[4, 1] = np.nan
    with pytest.raises(StatisticsError, match="column 1"):
        ks_2samp_columns(ref, bad)


def test_sort_reference_copies() -> None:
    x = np.asfortranarray(np.array([[3, 1], [1, 2], [2, 0]], dtype=np.int32))
    out = sort_reference(x)
    assert out.dtype == np.float64 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [[1, 0], [2, 1], [3, 2]])
    assert x[0, 0] == 3  # input untouched


def test_quantile_edges_and_ties() -> None:
    rng = np.random.default_rng(5)
    x = np.column_stack([rng.normal(size=400), np.full(400, 2.0), rng.integers(0, 3, size=400)])
    edges = quantile_edges(x, bins=5)
    assert edges.shape == (3, 4)
    np.testing.assert_allclose(edges[0], np.quantile(x[:, 0], [0.2, 0.4, 0.6, 0.8]))
    np.testing.assert_array_equal(edges[1], [2.0, 2.0, 2.0, 2.0])  # tied edges are fine
    props = bin_proportions(x, edges)
    np.testing.assert_allclose(props.sum(axis=1), 1.0)
    np.testing.assert_array_equal(props[1], [1.0, 0.0, 0.0, 0.0, 0.0])
    assert psi(props, bin_proportions(x, edges))[1] == 0.0


def test_bin_proportions_right_closed_convention() -> None:
    rng = np.random.default_rng(9)
    x = np.round(rng.normal(size=(300, 4)), 1)  # many values land exactly on edges
    edges = np.sort(np.round(rng.normal(size=(4, 6)), 1), axis=1)
    props = bin_proportions(x, edges)
    for j in range(4):  # reference implementation, one feature at a time
        idx = np.searchsorted(edges[j], x[:, j], side="left")
        np.testing.assert_array_equal(props[j], np.bincount(idx, minlength=7) / 300)
    with pytest.raises(StatisticsError, match="non-decreasing"):
        bin_proportions(x, edges[:, ::-1])


def test_psi_closed_form() -> None:
    r = np.array([[0.2, 0.3, 0.5], [0.5, 0.5, 0.0]])
    c = np.array([[0.1, 0.4, 0.5], [0.5, 0.25, 0.25]])
    eps = 1e-4
    expected = [
        0.1 * math.log(2.0) + 0.1 * math.log(4.0 / 3.0),  # (-0.1) ln(1/2) + 0.1 ln(4/3) + 0
        0.25 * math.log(2.0) + (0.25 - eps) * math.log(0.25 / eps),  # empty reference bin clipped
    ]
    np.testing.assert_allclose(psi(r, c, eps=eps), expected, rtol=1e-12)
    assert psi(r, c)[0] == pytest.approx(psi(c, r)[0])  # symmetric


def test_jensen_shannon_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    p = rng.random((6, 8))
    q = rng.random((6, 8))
    p[0, :3] = 0.0
    q[1, 4:] = 0.0
    expected = [distance.jensenshannon(p[i], q[i], base=2) for i in range(6)]
    np.testing.assert_allclose(jensen_shannon(p, q), expected, rtol=1e-12, atol=1e-15)
    assert jensen_shannon(p[0], p[0]) == 0.0
    assert jensen_shannon([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


def test_chi2_matches_scipy_without_merging() -> None:
    observed = np.array([48, 35, 15, 3 + 99])
    probs = np.array([0.25, 0.25, 0.1, 0.4])
    res = chi2_goodness_of_fit(observed, probs)
    ref = stats.chisquare(observed, observed.sum() * probs)
    assert (res.dof, res.merged_bins) == (3, 0)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_chi2_merges_small_expected_counts() -> None:
    observed = np.array([40, 30, 20, 4, 3, 3])
    probs = np.array([0.4, 0.3, 0.2, 0.04, 0.03, 0.03])  # expected 40, 30, 20, 4, 3, 3
    res = chi2_goodness_of_fit(observed, probs)
    ref = stats.chisquare([40, 30, 20, 10], [40.0, 30.0, 20.0, 10.0])
    assert (res.dof, res.merged_bins) == (3, 3)
    assert res.statistic == pytest.approx(ref.statistic, abs=1e-9)
    # one small category: the pooled bin (2) is still < 5, so it absorbs the smallest other bin (8)
    res = chi2_goodness_of_fit([9, 50, 1, 40], [0.08, 0.5, 0.02, 0.4])
    ref = stats.chisquare([50, 40, 10], [50.0, 40.0, 10.0])
    assert (res.dof, res.merged_bins) == (2, 2)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_chi2_edge_cases() -> None:
    res = chi2_goodness_of_fit([0, 500, 500], [0.0, 0.5, 0.5])  # zero probability, zero count
    assert res.merged_bins == 2  # pooled (0 vs 0.001) still < 5, so it absorbs a 500 bin
    assert res.statistic == pytest.approx(0.0, abs=1e-6) and res.p_value == pytest.approx(1.0, abs=1e-4)
    res = chi2_goodness_of_fit([10_000_000, 500, 500], [0.0, 0.5, 0.5])  # floored, not inf/nan
    assert math.isfinite(res.statistic) and res.statistic > 1e6 and res.p_value < 1e-12
    assert chi2_goodness_of_fit([2, 1], [0.5, 0.5]) == chi2_goodness_of_fit([0, 0], [0.5, 0.5])
    assert chi2_goodness_of_fit([2, 1], [0.5, 0.5]).dof == 0
    with pytest.raises(StatisticsError, match="3 categories"):
        chi2_goodness_of_fit([1, 2, 3], [0.5, 0.5])


def test_p_value_corrections_match_scipy() -> None:
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.random(15) ** 3, [0.02, 0.02, 0.5, 1.0, 0.0]])
    np.testing.assert_allclose(adjust_p_values(p, "bh"), stats.false_discovery_control(p, method="bh"),
                               rtol=1e-12)
    np.testing.assert_allclose(adjust_p_values(p, "bonferroni"), np.minimum(p * p.size, 1.0))
    with pytest.raises(StatisticsError):
        adjust_p_values([0.5, 1.5], "bh")


@pytest.mark.parametrize("n", [141, 500, 9091, 60000, 150000])
def test_kstwo_sf_matches_scipy_in_every_branch(n: int) -> None:
    # spans Durbin (delegated), Pelz-Good, 2*smirnov and the zero tail
    d = np.concatenate([np.geomspace(0.5 / n, 0.49, 40), [0.0, 0.6, 1.0]])
    np.testing.assert_allclose(kstwo_sf(d, n), stats.kstwo.sf(d, n), rtol=0, atol=1e-12)
    assert detectors.kstwo_sf is detectors.kolmogorov.kstwo_sf


@pytest.mark.parametrize("stride", [1, 3, 7, None])
def test_ks_index_brackets_are_exact_with_ties(stride: int | None) -> None:
    ref, cur = _samples(3000, 800, True, seed=21)
    index = KSIndex.from_sorted(sort_reference(ref), stride=stride)
    res = ks_2samp_index(index, locate(index, np.sort(cur.T, axis=1)))
    expected = [stats.ks_2samp(ref[:, j], cur[:, j]) for j in range(ref.shape[1])]
    np.testing.assert_array_equal(res.statistic, [e.statistic for e in expected])
    np.testing.assert_allclose(res.p_value, [e.pvalue for e in expected], rtol=0, atol=1e-9)


def test_reference_counts_are_searchsorted_inside_the_knot_brackets() -> None:
    rng = np.random.default_rng(3)
    for trial in range(200):  # ragged sizes, heavy ties within and across samples, every stride
        n, m, n_features = (int(v) for v in (rng.integers(1, 400), rng.integers(1, 150), rng.integers(1, 4)))
        ref = np.round(rng.normal(size=(n, n_features)) * rng.choice([1, 3, 10]))
        cur = np.sort(np.round(rng.normal(size=(n_features, m)) * 9) / 3, axis=1)
        index = KSIndex.from_sorted(sort_reference(ref), stride=int(rng.integers(1, 40)) if trial % 2 else None)
        ranks = locate(index, cur)
        for side in ("left", "right"):
            got = reference_counts(index, ranks, np.arange(n_features * m), side).reshape(n_features, m)
            want = [np.searchsorted(index.columns[j], cur[j], side=side) for j in range(n_features)]
            np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}, side {side}")


def test_ks_statistic_equals_scipy_on_random_tied_samples() -> None:
    rng = np.random.default_rng(5)
    for trial in range(150):
        n, m, n_features = (int(v) for v in (rng.integers(1, 300), rng.integers(1, 150), rng.integers(1, 4)))
        scale, digits = rng.choice([0.3, 1.0, 5.0]), int(rng.integers(0, 3))
        ref = np.round(rng.normal(size=(n, n_features)) * scale, digits)
        cur = np.round(rng.normal(loc=rng.normal(), size=(m, n_features)) * scale, digits)
        index = KSIndex.from_sorted(sort_reference(ref), stride=int(rng.integers(1, 30)) if trial % 2 else None)
        got = ks_statistic(index, locate(index, np.sort(cur.T, axis=1)))
        # method='asymp': the statistic before SciPy's exact mode snaps it to the lattice h / lcm(n, m)
        want = [stats.ks_2samp(ref[:, j], cur[:, j], method="asymp").statistic for j in range(n_features)]
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


def test_a_coarser_index_for_a_small_window_gives_the_same_statistics() -> None:
    ref, cur = _samples(10000, 300, True, seed=17)
    index = KSIndex.from_sorted(sort_reference(ref))
    small = index.for_window(300)
    assert small.stride == 8 * index.stride and small is index.for_window(300) and index.for_window(10000) is index
    current = np.sort(cur.T, axis=1)
    for used in (index, small):
        ranks = locate(used, current)
        expected = [stats.ks_2samp(ref[:, j], cur[:, j], method="asymp").statistic for j in range(ref.shape[1])]
        np.testing.assert_array_equal(ks_statistic(used, ranks), expected)
        w1 = wasserstein_index(used, W1Index.from_columns(used.columns), ranks)
        np.testing.assert_allclose(w1, [stats.wasserstein_distance(ref[:, j], cur[:, j]) for j in range(ref.shape[1])],
                                   rtol=1e-9, atol=1e-12)


def _lattice_grid(seed: int) -> list[tuple[int, int, int]]:
    """(n, m, h) with en >= EAGER_EN and D = h / lcm spanning p from ~0.9 to below 1e-16."""
    rng = np.random.default_rng(seed)
    pairs = [(40, 40), (64, 65), (33, 7933), (65, 8721), (100, 300), (287, 287), (500, 1000), (1000, 10000),
             (2000, 3000), (4999, 5000), (10000, 10000)]
    pairs += [tuple(sorted(int(v) for v in np.exp(rng.uniform(np.log(40), np.log(10000), 2)))) for _ in range(12)]
    grid = []
    for n, m in pairs:
        lcm = n // math.gcd(n, m) * m
        scale = math.sqrt((n + m) / (n * m))
        for lam in rng.uniform(0.4, 6.0, size=14 if n * m < 4e6 else 6):
            grid.append((n, m, max(1, min(lcm, round(lam * scale * lcm)))))
    return grid


def test_ks_p_values_bracket_the_exact_law() -> None:
    """The bracket of detectors.ks (empirical, validated offline on 133,000 lattice points) on a seeded grid."""
    checked = 0
    for n, m, h in _lattice_grid(seed=8):
        lcm = n // math.gcd(n, m) * m
        res = ks_p_values([h / lcm], n, m)
        exact = smirnov_sf_exact(n, m, h)
        if exact is None:  # SciPy's fallback: the asymptotic law, settled as such
            continue
        assert res.lower[0] <= exact <= res.upper[0], (n, m, h, exact, res.p_value[0])
        if res.settled[0]:
            assert res.p_value[0] == pytest.approx(exact, rel=1e-12, abs=1e-300)
        elif res.p_value[0] >= BRACKET_FLOOR:  # the stated relative error
            en = n * m / (n + m)
            assert abs(math.log(exact / res.p_value[0])) <= 0.6 * bracket_log_ratio(en, res.p_value[0])
            checked += 1
    assert checked > 100


@pytest.mark.parametrize(("n", "m"), [(10000, 1000), (300, 4000), (2500, 2500), (90, 300), (20, 5000)])
def test_settled_ks_p_values_are_scipys(n: int, m: int) -> None:
    # D = k / m: the reference is all zeros and k of the m window values are ones (SciPy's exact mode)
    ks = np.unique(np.geomspace(max(1, m // 50), m, 25).astype(int))
    res = ks_p_values(ks / m, n, m)
    assert res.settled.all() if n * m / (n + m) < EAGER_EN else res.method == "bracketed"
    settled = res.settle(np.ones(ks.size, dtype=bool))
    assert settled.method == "exact"
    expected = [stats.ks_2samp(np.zeros(n), np.repeat([1.0, 0.0], [k, m - k])).pvalue for k in ks]
    np.testing.assert_allclose(settled.p_value, expected, rtol=1e-10, atol=1e-300)
    assert np.all((res.lower <= settled.p_value) & (settled.p_value <= res.upper))
    assert settled.settle(np.ones(ks.size, dtype=bool)) is settled  # nothing left to do


def test_ks_p_values_settle_only_what_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(ks_module, "smirnov_sf_exact", lambda n1, n2, h: calls.append((n1, n2, h)) or 0.5)
    res = ks_p_values([0.02, 0.05, 0.05, 0.3], 10000, 1000)
    assert not res.settled.any() and calls == [] and res.method == "bracketed"
    settled = res.settle([False, True, True, False])  # two tests, one lattice value: one evaluation
    assert calls == [(10000, 1000, 500)]
    np.testing.assert_array_equal(settled.settled, [False, True, True, False])
    np.testing.assert_array_equal(settled.p_value[[0, 3]], res.p_value[[0, 3]])
    asymptotic = ks_p_values([0.02, 0.04, 0.3], 20000, 1000)  # max(n, m) > 10,000: SciPy's value is asymptotic
    assert asymptotic.method == "bracketed"
    expected = stats.kstwo.sf([0.02, 0.04, 0.3], round(20000 * 1000 / 21000))
    assert np.all((asymptotic.lower <= expected) & (expected <= asymptotic.upper))
    done = asymptotic.settle(np.ones(3, dtype=bool))
    assert done.method == "asymp" and calls == [(10000, 1000, 500)]  # the exact law is never computed there
    np.testing.assert_allclose(done.p_value, expected, rtol=1e-12, atol=1e-300)


def test_ks_p_values_below_the_floor_are_bounded_by_monotonicity() -> None:
    for n, m in [(40, 40), (33, 7933), (1000, 10000), (5000, 5000)]:
        lcm = n // math.gcd(n, m) * m
        d = np.array([7.0, 9.0, 12.0]) * math.sqrt((n + m) / (n * m))
        h = np.minimum(np.round(d * lcm), lcm).astype(int)
        res = ks_p_values(h / lcm, n, m)
        for j in range(h.size):
            exact = smirnov_sf_exact(n, m, int(h[j]))
            assert exact is not None and res.lower[j] <= exact <= res.upper[j] < 1e-11


def test_ks_p_values_validation() -> None:
    with pytest.raises(StatisticsError, match="in \\[0, 1\\]"):
        ks_p_values([1.5], 10, 10)
    with pytest.raises(StatisticsError, match="positive"):
        ks_p_values([0.5], 0, 10)


@pytest.mark.parametrize(("n", "m", "discrete"), [(1, 1, False), (7, 300, True), (137, 59, False),
                                                  (3000, 3000, True), (20000, 1000, False)])
def test_wasserstein_matches_scipy(n: int, m: int, discrete: bool) -> None:
    ref, cur = _samples(n, m, discrete, seed=n + m)
    expected = [stats.wasserstein_distance(ref[:, j], cur[:, j]) for j in range(ref.shape[1])]
    np.testing.assert_allclose(wasserstein_columns(ref, cur), expected, rtol=1e-9, atol=1e-12)


def test_wasserstein_large_offset_and_identical_samples() -> None:
    x = 1e6 + np.random.default_rng(3).normal(size=(500, 2))
    np.testing.assert_allclose(wasserstein_columns(x, x[::-1]), 0.0, atol=1e-9)
    np.testing.assert_allclose(wasserstein_columns(x, x + 0.25), 0.25, rtol=1e-6)


def test_chi2_rows_agree_with_single_test_and_scipy() -> None:
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(6), size=5)  # (5, 6)
    valid = np.arange(6) < np.array([6, 5, 4, 3, 2])[:, None]
    probs = np.where(valid, probs, 0.0)
    observed = np.where(valid, rng.integers(0, 40, size=(5, 6)), 0)
    observed[0] = [200, 150, 120, 90, 60, 30]  # no pooling in row 0
    rows = chi2_goodness_of_fit_rows(observed, probs, valid)
    for r in range(5):
        single = chi2_goodness_of_fit(observed[r, valid[r]], probs[r, valid[r]])
        assert (rows.dof[r], rows.merged_bins[r]) == (single.dof, single.merged_bins)
        assert rows.statistic[r] == pytest.approx(single.statistic, rel=1e-12, abs=1e-12)
        assert rows.p_value[r] == pytest.approx(single.p_value, rel=1e-12, abs=1e-15)
    p0 = probs[0] / probs[0].sum()
    ref = stats.chisquare(observed[0], observed[0].sum() * p0)
    assert rows.statistic[0] == pytest.approx(ref.statistic, rel=1e-12)
    assert rows.p_value[0] == pytest.approx(ref.pvalue, rel=1e-9)


def _contingency(table: npt.ArrayLike) -> tuple[float, float, int]:
    res = stats.chi2_contingency(np.asarray(table, dtype=float), correction=False)
    return float(res.statistic), float(res.pvalue), int(res.dof)


@pytest.mark.parametrize(("reference", "current"), [
    ([300, 200, 500], [40, 20, 40]),
    ([5000, 3000, 1500, 500], [900, 700, 250, 150]),  # drifted
    ([120, 80], [60, 40]),  # identical mixes
])
def test_chi2_homogeneity_matches_chi2_contingency_without_pooling(reference: list[int], current: list[int]) -> None:
    res = chi2_homogeneity(reference, current)
    statistic, p_value, dof = _contingency([reference, current])
    assert (res.dof, res.merged_bins) == (dof, 0)
    assert res.statistic == pytest.approx(statistic, rel=1e-12, abs=1e-12)
    assert res.p_value == pytest.approx(p_value, rel=1e-9)


def test_chi2_homogeneity_pools_small_expected_counts_like_chi2_contingency_of_the_pooled_table() -> None:
    # expected counts in the current row (m=120, N=1120): 53.6, 42.9, 10.7, 5.4, 4.6, 2.9 -> the last two
    # pool into one bin of expected 7.5 (>= 5 in both rows), which stays on its own
    res = chi2_homogeneity([450, 350, 90, 45, 40, 25], [50, 50, 10, 5, 3, 2])
    statistic, p_value, dof = _contingency([[450, 350, 90, 45, 65], [50, 50, 10, 5, 5]])
    assert (res.dof, res.merged_bins) == (dof, 2) == (4, 2)
    assert res.statistic == pytest.approx(statistic, rel=1e-12)
    assert res.p_value == pytest.approx(p_value, rel=1e-9)
    # one small category (expected 4.2 in the current row): the pooled bin is still < 5, so it absorbs
    # the remaining category of smallest expected count (the 90/10 one)
    res = chi2_homogeneity([450, 350, 90, 40], [50, 50, 10, 0])
    statistic, p_value, dof = _contingency([[450, 350, 130], [50, 50, 10]])
    assert (res.dof, res.merged_bins) == (dof, 2) == (2, 2)
    assert res.statistic == pytest.approx(statistic, rel=1e-12)
    assert res.p_value == pytest.approx(p_value, rel=1e-9)
    # a category absent from both samples takes no part (chi2_contingency rejects a zero column)
    assert chi2_homogeneity([300, 0, 200, 500], [40, 0, 20, 40]) == chi2_homogeneity([300, 200, 500], [40, 20, 40])


def test_chi2_homogeneity_edge_cases() -> None:
    # a category new in the window (reference count 0) is a plain column of the table, no floor needed
    res = chi2_homogeneity([500, 500, 0], [400, 400, 200])
    assert (res.statistic, res.p_value, res.dof) == pytest.approx(_contingency([[500, 500, 0], [400, 400, 200]]))
    empty = chi2_homogeneity([500, 500], [0, 0])  # no window counts: nothing to test
    assert (empty.statistic, empty.p_value, empty.dof) == (0.0, 1.0, 0)
    with pytest.raises(StatisticsError, match="positive total"):
        chi2_homogeneity([0, 0], [5, 5])
    with pytest.raises(StatisticsError, match="3 categories"):
        chi2_homogeneity([1, 2, 3], [5, 5])
    with pytest.raises(StatisticsError, match="non-negative"):
        chi2_homogeneity([1, 2], [5, -5])


def test_chi2_homogeneity_rows_agree_with_single_test() -> None:
    rng = np.random.default_rng(9)
    valid = np.arange(7) < np.array([7, 6, 5, 3, 2, 4])[:, None]  # (6, 7)
    probs = np.where(valid, rng.dirichlet(np.full(7, 0.7), size=6), 0.0)
    probs /= probs.sum(axis=1, keepdims=True)
    reference = np.array([rng.multinomial(n, p) for n, p in zip([5000, 800, 300, 60, 2000, 40], probs, strict=True)])
    current = np.array([rng.multinomial(m, p) for m, p in zip([600, 800, 40, 100, 30, 0], probs, strict=True)])
    reference[0], current[0] = [900, 700, 500, 400, 300, 200, 0], [150, 90, 60, 50, 40, 30, 60]  # no pooling
    rows = chi2_homogeneity_rows(reference, current, valid)
    assert rows.merged_bins[1:].any()  # some rows need pooling
    for r in range(6):
        single = chi2_homogeneity(reference[r, valid[r]], current[r, valid[r]])
        assert (rows.dof[r], rows.merged_bins[r]) == (single.dof, single.merged_bins)
        assert rows.statistic[r] == pytest.approx(single.statistic, rel=1e-12, abs=1e-12)
        assert rows.p_value[r] == pytest.approx(single.p_value, rel=1e-12, abs=1e-15)
    present = valid[0] & (reference[0] + current[0] > 0)
    assert rows.merged_bins[0] == 0
    statistic, p_value, _ = _contingency([reference[0, present], current[0, present]])
    assert rows.statistic[0] == pytest.approx(statistic, rel=1e-12)
    assert rows.p_value[0] == pytest.approx(p_value, rel=1e-9)
