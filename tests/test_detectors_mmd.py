"""MMD embedding drift: statistic, permutation p-values and bandwidth against brute-force numpy references.

Both backends run here: numpy always, torch when it is installed (tests marked ``needs_torch`` skip otherwise).
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist

from detectors.errors import StatisticsError
from detectors.mmd import (
    Backend,
    MMDDetector,
    MMDResult,
    _assignments,
    _assignments_np,
    _block_mmd2,
    _block_mmd2_np,
    _linear_pairs_np,
    median_bandwidth,
)

try:
    import torch
except ImportError:  # the numpy backend is tested all the same
    torch = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
needs_torch = pytest.mark.skipif(torch is None, reason="the torch backend needs torch (install inferwatch[torch])")
BACKENDS = [pytest.param("torch", marks=needs_torch), "numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    name: Backend = request.param
    return name


def gram(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    """RBF kernel from explicit differences (not the |a|² + |b|² - 2ab expansion the detector uses)."""
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)  # (a, b)
    k: np.ndarray = np.exp(-d2 / (2.0 * sigma**2))
    return k


def mmd2_brute(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased MMD² of Gretton et al. (2012), eq. 3, written out term by term."""
    n, m = len(x), len(y)
    k_xx, k_yy, k_xy = gram(x, x, sigma), gram(y, y, sigma), gram(x, y, sigma)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def median_bandwidth_brute(x: np.ndarray) -> float:
    """Lower median of the squared distances over pairs i < j, sigma = sqrt(median / 2)."""
    d2 = [float(np.sum((x[i] - x[j]) ** 2)) for i in range(len(x)) for j in range(i + 1, len(x))]
    return math.sqrt(sorted(d2)[(len(d2) - 1) // 2] / 2.0)


def median_bandwidth_alibi_convention(x: np.ndarray) -> float:
    """alibi-detect's sigma_median: element n + (n² - n) // 2 - 1 of the sorted full distance matrix."""
    n = len(x)
    d2 = np.sort(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1).ravel())
    return math.sqrt(0.5 * d2[n + (n * n - n) // 2 - 1])


def shifted_pair(seed: int, n: int, m: int, d: int, shift: float, dims: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    y[:, :dims] += shift
    return x, y


def fp_bound(alpha: float, trials: int) -> float:
    return alpha + 3.0 * math.sqrt(alpha * (1.0 - alpha) / trials)


def mmd2_cdist(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Closed-form unbiased MMD² with scipy's cdist: the sums of the kernel matrices without their diagonals."""
    n, m = len(x), len(y)
    k_xx, k_yy, k_xy = (np.exp(-cdist(a, b, "sqeuclidean") / (2.0 * sigma**2)) for a, b in ((x, x), (y, y), (x, y)))
    return float((k_xx.sum() - n) / (n * (n - 1)) + (k_yy.sum() - m) / (m * (m - 1)) - 2.0 * k_xy.sum() / (n * m))


# --- statistic and permutations ----------------------------------------------------------------------------


def test_mmd2_equals_brute_force(backend: Backend) -> None:
    x, y = shifted_pair(1, 40, 25, 6, 0.5, 2)
    sigma = 1.7
    result = MMDDetector(x, bandwidth=sigma, permutations=10, min_samples=4, device="cpu", backend=backend).test(y)
    assert result.method == "permutation"
    assert result.mmd2 == pytest.approx(mmd2_brute(x, y, sigma), abs=1e-10)


@needs_torch
def test_block_sums_equal_per_permutation_recomputation() -> None:
    x, y = shifted_pair(2, 30, 20, 4, 0.3, 2)
    n, m, sigma = len(x), len(y), 1.3
    pooled = np.vstack([x, y])  # (N, d)
    perms = [np.random.default_rng(10 + p).permutation(n + m) for p in range(25)]
    brute = [mmd2_brute(pooled[p[:n]], pooled[p[n:]], sigma) for p in perms]  # alibi-style re-indexing

    assign = np.zeros((n + m, len(perms)))
    for col, p in enumerate(perms):
        assign[p[:n], col] = 1.0
    k = gram(pooled, pooled, sigma)
    np.fill_diagonal(k, 0.0)
    k_xx, k_xy, k_yy = (torch.from_numpy(b) for b in (k[:n, :n], k[:n, n:], k[n:, n:]))
    got = _block_mmd2(k_xx, k_xy, k_yy, torch.from_numpy(assign), torch.from_numpy(k.sum(axis=1)))
    np.testing.assert_allclose(got.numpy(), brute, rtol=0, atol=1e-12)
    got_np = _block_mmd2_np(k[:n, :n], k[:n, n:], k[n:, n:], assign, k.sum(axis=1))
    np.testing.assert_allclose(got_np, brute, rtol=0, atol=1e-12)


@needs_torch
def test_p_value_counts_the_detectors_own_permutations() -> None:
    x, y = shifted_pair(3, 40, 30, 5, 0.3, 2)
    sigma, perms, seed = 2.0, 60, 7
    result = MMDDetector(x, bandwidth=sigma, permutations=perms, min_samples=4, device="cpu", seed=seed).test(y)

    assign = _assignments(len(x), len(y), perms, torch.Generator().manual_seed(seed)).numpy().astype(bool)
    assert (assign.sum(axis=0) == len(x)).all()
    pooled = np.vstack([x, y])
    observed = mmd2_brute(pooled[assign[:, 0]], pooled[~assign[:, 0]], sigma)
    permuted = np.array([mmd2_brute(pooled[a], pooled[~a], sigma) for a in assign[:, 1:].T])
    assert 0 < np.sum(permuted >= observed) < perms  # a p-value strictly inside the grid tests the count
    assert result.p_value == (1 + np.sum(permuted >= observed)) / (1 + perms)


def test_plus_one_correction_keeps_p_above_zero(backend: Backend) -> None:
    x, _ = shifted_pair(4, 60, 1, 4, 0.0, 0)
    far = MMDDetector(x, permutations=50, alpha=0.05, device="cpu", backend=backend).test(x[:40] + 5.0)
    assert far.p_value == 1 / 51  # every permutation falls below the observed statistic, yet p > 0
    assert far.drifted

    same = MMDDetector(x, permutations=50, alpha=0.05, device="cpu", backend=backend).test(x.copy())
    assert same.p_value > 0 and not same.drifted


def test_same_seed_same_p_value_and_test_is_pure(backend: Backend) -> None:
    x, y = shifted_pair(5, 80, 40, 4, 0.2, 2)
    det = MMDDetector(x, permutations=40, device="cpu", seed=3, backend=backend)
    first = det.test(y)
    assert det.test(y) == first
    assert MMDDetector(x, permutations=40, device="cpu", seed=3, backend=backend).test(y) == first


def test_float32_agrees_with_float64(backend: Backend) -> None:
    x, y = shifted_pair(6, 300, 100, 32, 0.2, 4)
    r64 = MMDDetector(x, permutations=50, device="cpu", dtype="float64", backend=backend).test(y)
    r32 = MMDDetector(x, permutations=50, device="cpu", dtype="float32", backend=backend).test(y)
    assert r32.mmd2 == pytest.approx(r64.mmd2, abs=1e-6)
    assert r32.bandwidth == r64.bandwidth


# --- bandwidth ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [31, 32])  # 465 pairs (odd: the median) and 496 pairs (even: the lower median)
def test_median_bandwidth_equals_brute_force_and_alibi_convention(n: int) -> None:
    x = np.random.default_rng(n).normal(size=(n, 5))
    assert median_bandwidth(x) == pytest.approx(median_bandwidth_brute(x), rel=1e-12)
    assert median_bandwidth(x) == pytest.approx(median_bandwidth_alibi_convention(x), rel=1e-12)


def test_median_bandwidth_subsamples_seeded_rows() -> None:
    x = np.random.default_rng(8).normal(size=(300, 3)) * np.arange(1, 301)[:, None]  # rows of different scale
    rows = np.sort(np.random.default_rng(4).choice(300, size=50, replace=False))
    assert median_bandwidth(x, max_rows=50, seed=4) == pytest.approx(median_bandwidth_brute(x[rows]), rel=1e-12)
    assert median_bandwidth(x, max_rows=50, seed=4) != median_bandwidth(x, max_rows=50, seed=5)


def test_detector_defaults_to_median_bandwidth(backend: Backend) -> None:
    x = np.random.default_rng(9).normal(size=(50, 4))
    assert MMDDetector(x, device="cpu", backend=backend).bandwidth == median_bandwidth(x)


# --- detection ---------------------------------------------------------------------------------------------


def test_embedding_shift_is_detected_and_unshifted_sample_is_not(backend: Backend) -> None:
    x, y = shifted_pair(10, 500, 200, 64, 0.3, 8)  # power ~1: 60 of 60 seeds detected (5 dims: 58 of 60)
    det = MMDDetector(x, device="cpu", backend=backend)  # alpha 0.01, 100 permutations
    shifted = det.test(y)
    assert shifted.drifted and shifted.p_value < 0.01
    assert (shifted.n_reference, shifted.n_current, shifted.permutations) == (500, 200, 100)
    unshifted = det.test(np.random.default_rng(11).normal(size=(200, 64)))
    assert not unshifted.drifted and unshifted.p_value > 0.05


def test_false_positive_rate_on_undrifted_splits(backend: Backend) -> None:
    alpha, splits = 0.05, 100
    alarms = 0
    for seed in range(splits):
        x, y = shifted_pair(1000 + seed, 100, 50, 8, 0.0, 0)
        alarms += MMDDetector(x, alpha=alpha, device="cpu", seed=seed, backend=backend).test(y).drifted
    assert alarms / splits <= fp_bound(alpha, splits)


@needs_torch
def test_linear_statistic_equals_brute_force_on_the_same_rows() -> None:
    x, y = shifted_pair(12, 64, 50, 3, 0.4, 1)
    sigma, seed = 1.5, 2
    result = MMDDetector(x, bandwidth=sigma, linear_above=0, min_samples=4, device="cpu", seed=seed).test(y)
    assert result.method == "linear" and result.permutations == 0

    generator = torch.Generator().manual_seed(seed)  # the detector's row order: reference first, then current
    xs = x[torch.randperm(64, generator=generator).numpy()[:50]]
    ys = y[torch.randperm(50, generator=generator).numpy()[:50]]
    check_linear(result, xs, ys, sigma)


def test_linear_test_detects_shift_on_large_sample_and_not_without(backend: Backend) -> None:
    x, y = shifted_pair(13, 4000, 4000, 16, 0.5, 4)
    det = MMDDetector(x, linear_above=1000, device="cpu", backend=backend)
    shifted = det.test(y)
    assert shifted.method == "linear" and shifted.drifted
    unshifted = det.test(np.random.default_rng(14).normal(size=(4000, 16)))
    assert unshifted.method == "linear" and not unshifted.drifted


def test_linear_false_positive_rate_on_undrifted_splits(backend: Backend) -> None:
    alpha, splits = 0.05, 200
    alarms = 0
    for seed in range(splits):
        x, y = shifted_pair(5000 + seed, 200, 200, 8, 0.0, 0)
        alarms += MMDDetector(x, alpha=alpha, linear_above=0, device="cpu", seed=seed, backend=backend).test(y).drifted
    assert alarms / splits <= fp_bound(alpha, splits)


@pytest.mark.skipif(torch is None or not torch.cuda.is_available(),
                    reason="needs torch and a CUDA GPU: torch.cuda.is_available() is False")
def test_cuda_matches_cpu() -> None:
    x, y = shifted_pair(15, 400, 150, 32, 0.2, 4)
    on_cpu = MMDDetector(x, permutations=100, device="cpu").test(y)
    on_gpu = MMDDetector(x, permutations=100).test(y)  # CUDA chosen automatically
    assert on_gpu.mmd2 == pytest.approx(on_cpu.mmd2, abs=1e-10)
    assert on_gpu.p_value == on_cpu.p_value
    linear = MMDDetector(x, linear_above=0).test(y)
    assert linear.mmd2 == pytest.approx(MMDDetector(x, linear_above=0, device="cpu").test(y).mmd2, abs=1e-10)


# --- windows and arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [0, 29])
def test_small_window_is_insufficient_not_drifted(rows: int, backend: Backend) -> None:
    x = np.random.default_rng(16).normal(size=(50, 4))
    result = MMDDetector(x, device="cpu", backend=backend).test(np.full((rows, 4), 9.0))
    assert result.insufficient and not result.drifted
    assert math.isnan(result.mmd2) and math.isnan(result.p_value)
    assert isinstance(result, MMDResult) and result.n_current == rows


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reference": np.zeros((3, 2))}, "at least 4 rows"),
        ({"reference": np.zeros(8)}, "2-D"),
        ({"reference": np.array([[0.0, np.nan]] * 8)}, "non-finite"),
        ({"permutations": 0}, "permutations"),
        ({"alpha": 1.0}, "alpha"),
        ({"bandwidth": 0.0}, "bandwidth"),
        ({"bandwidth": math.inf}, "bandwidth"),
        ({"min_samples": 3}, "min_samples"),
        ({"linear_above": -1}, "linear_above"),
        ({"dtype": "float16"}, "dtype"),
        ({"device": "no-such-device"}, "device"),
        ({"backend": "jax"}, "backend"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str, backend: Backend) -> None:
    args: dict[str, object] = {"reference": np.random.default_rng(17).normal(size=(20, 2)), "device": "cpu",
                               "backend": backend}
    with pytest.raises(StatisticsError, match=match):
        MMDDetector(**{**args, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "match"),
    [(np.zeros((40, 3)), "40, 3"), (np.zeros(40), "2-D"), (np.array([[np.inf, 0.0]] * 40), "non-finite")],
)
def test_bad_window_raises(current: np.ndarray, match: str, backend: Backend) -> None:
    det = MMDDetector(np.random.default_rng(18).normal(size=(20, 2)), device="cpu", backend=backend)
    with pytest.raises(StatisticsError, match=match):
        det.test(current)


def test_median_bandwidth_rejects_degenerate_reference() -> None:
    with pytest.raises(StatisticsError, match="identical"):
        median_bandwidth(np.ones((10, 3)))
    with pytest.raises(StatisticsError, match="at least 2"):
        median_bandwidth(np.ones((1, 3)))



# --- numpy backend -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m", "d", "sigma"), [(40, 25, 6, 1.7), (120, 60, 256, 20.0), (30, 30, 1, 0.5)])
def test_numpy_mmd2_equals_cdist_closed_form(n: int, m: int, d: int, sigma: float) -> None:
    x, y = shifted_pair(20 + d, n, m, d, 0.3, 1)
    result = MMDDetector(x, bandwidth=sigma, permutations=5, min_samples=4, backend="numpy").test(y)
    assert result.method == "permutation" and result.permutations == 5
    assert result.mmd2 == pytest.approx(mmd2_cdist(x, y, sigma), abs=1e-10)
    assert result.mmd2 == pytest.approx(mmd2_brute(x, y, sigma), abs=1e-10)


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_and_torch_backends_agree(dtype: str) -> None:
    x, y = shifted_pair(21, 200, 80, 256, 0.1, 16)
    args: dict[str, Any] = {"permutations": 50, "device": "cpu", "dtype": dtype, "seed": 4}
    on_torch = MMDDetector(x, backend="torch", **args)
    on_numpy = MMDDetector(x, backend="numpy", **args)
    assert (on_torch.backend, on_numpy.backend) == ("torch", "numpy")
    assert on_numpy.bandwidth == on_torch.bandwidth and on_numpy.device is None
    a, b = on_torch.test(y), on_numpy.test(y)
    assert b.mmd2 == pytest.approx(a.mmd2, abs=1e-10 if dtype == "float64" else 1e-6)
    assert (b.n_reference, b.n_current, b.permutations, b.method) == (a.n_reference, a.n_current, 50, "permutation")
    assert b.p_value in {k / 51 for k in range(1, 52)}  # another generator: another valid p-value, on the grid


@needs_torch
def test_numpy_blocks_give_torchs_p_value_on_torchs_permutations() -> None:
    """Handed torch's assignment matrix, the numpy block sums give every permuted MMD² and so torch's p-value."""
    x, y = shifted_pair(22, 50, 35, 5, 0.25, 2)
    sigma, perms, seed = 2.0, 80, 9
    result = MMDDetector(x, bandwidth=sigma, permutations=perms, min_samples=4, device="cpu", seed=seed,
                         backend="torch").test(y)
    assign = _assignments(len(x), len(y), perms, torch.Generator().manual_seed(seed)).numpy()  # (N, P+1)
    pooled = np.vstack([x, y])
    k = np.exp(-cdist(pooled, pooled, "sqeuclidean") / (2.0 * sigma**2))
    np.fill_diagonal(k, 0.0)
    n = len(x)
    got = _block_mmd2_np(k[:n, :n], k[:n, n:], k[n:, n:], assign, k.sum(axis=1))  # (P+1,)
    assert got[0] == pytest.approx(result.mmd2, abs=1e-12)
    assert (1 + np.sum(got[1:] >= got[0])) / (1 + perms) == result.p_value


def test_numpy_p_value_counts_the_detectors_own_permutations() -> None:
    x, y = shifted_pair(3, 40, 30, 5, 0.3, 2)
    sigma, perms, seed = 2.0, 60, 7
    result = MMDDetector(x, bandwidth=sigma, permutations=perms, min_samples=4, seed=seed, backend="numpy").test(y)

    assign = _assignments_np(len(x), len(y), perms, np.random.default_rng(seed)).astype(bool)  # (N, P+1)
    assert (assign.sum(axis=0) == len(x)).all() and assign[: len(x), 0].all()
    pooled = np.vstack([x, y])
    observed = mmd2_brute(pooled[assign[:, 0]], pooled[~assign[:, 0]], sigma)
    permuted = np.array([mmd2_brute(pooled[a], pooled[~a], sigma) for a in assign[:, 1:].T])
    assert 0 < np.sum(permuted >= observed) < perms  # a p-value strictly inside the grid tests the count
    assert result.p_value == (1 + np.sum(permuted >= observed)) / (1 + perms)


def test_numpy_assignments_are_uniform_subsets() -> None:
    """Each row goes to X in n/N of the permutations, and the columns differ (independent permutations)."""
    n, m, perms = 6, 4, 20_000
    assign = _assignments_np(n, m, perms, np.random.default_rng(0))[:, 1:]  # (N, P)
    share = assign.mean(axis=1)  # (N,) each ~ n/N = 0.6, binomial sd 0.0035
    np.testing.assert_allclose(share, n / (n + m), atol=5 * math.sqrt(0.6 * 0.4 / perms))
    assert len({tuple(col) for col in assign.T}) == math.comb(n + m, n)  # all 210 subsets occur in 20,000 draws


def test_numpy_permutation_p_values_are_uniform_under_the_null() -> None:
    """Same-distribution windows: P(p <= q) = q on the p-value grid, within a binomial bound for 200 repetitions."""
    reps, perms = 200, 99
    p_values = np.array([
        MMDDetector(x, permutations=perms, min_samples=4, seed=seed, backend="numpy").test(y).p_value
        for seed, (x, y) in enumerate(shifted_pair(7000 + s, 30, 20, 3, 0.0, 0) for s in range(reps))
    ])
    assert np.all(np.isin(np.round(p_values * (perms + 1)), np.arange(1, perms + 2)))  # on the grid k / (P+1)
    for q in (0.05, 0.25, 0.5, 0.75):
        bound = 4.0 * math.sqrt(q * (1.0 - q) / reps)  # ~4 sd of a binomial fraction
        assert abs(np.mean(p_values <= q) - q) <= bound, (q, np.mean(p_values <= q))
    assert stats.kstest(p_values, "uniform").pvalue > 0.001


def test_numpy_clear_shift_gives_the_smallest_p_value() -> None:
    x, y = shifted_pair(23, 100, 60, 16, 1.0, 16)
    perms = 100
    result = MMDDetector(x, permutations=perms, backend="numpy").test(y)
    assert result.p_value == 1 / (perms + 1) and result.drifted


def test_numpy_linear_statistic_equals_brute_force_on_its_rows() -> None:
    x, y = shifted_pair(12, 64, 50, 3, 0.4, 1)
    sigma, seed = 1.5, 2
    result = MMDDetector(x, bandwidth=sigma, linear_above=0, min_samples=4, seed=seed, backend="numpy").test(y)
    assert result.method == "linear" and result.permutations == 0

    rng = np.random.default_rng(seed)  # the detector's row order: reference first, then current
    xs, ys = x[rng.permutation(64)[:50]], y[rng.permutation(50)[:50]]
    check_linear(result, xs, ys, sigma)


@needs_torch
def test_numpy_linear_statistic_equals_torchs_on_torchs_rows() -> None:
    """The two backends pair different rows (different generators); on the same rows their statistics agree."""
    x, y = shifted_pair(24, 300, 250, 32, 0.2, 4)
    seed = 5
    det = MMDDetector(x, linear_above=0, device="cpu", seed=seed, backend="torch")
    result = det.test(y)
    generator = torch.Generator().manual_seed(seed)
    xs = x[torch.randperm(300, generator=generator).numpy()[:250]]
    ys = y[torch.randperm(250, generator=generator).numpy()[:250]]
    mmd2, p_value = _linear_pairs_np(xs, ys, 1.0 / (2.0 * det.bandwidth**2))
    assert mmd2 == pytest.approx(result.mmd2, abs=1e-12)
    assert p_value == pytest.approx(result.p_value, rel=1e-9)


@needs_torch
@pytest.mark.parametrize(
    ("reference", "current", "kwargs"),
    [
        (np.array([[0.0, np.nan]] * 8), None, {}),
        (np.zeros((3, 2)), None, {}),
        (np.zeros(8), None, {}),
        (None, np.zeros((40, 3)), {}),
        (None, np.array([[np.nan, 0.0]] * 40), {}),
        (None, np.zeros(40), {}),
        (None, None, {"permutations": 0}),
        (None, None, {"min_samples": 2}),
    ],
)
def test_bad_input_raises_the_same_error_on_both_backends(
    reference: np.ndarray | None, current: np.ndarray | None, kwargs: dict[str, Any]
) -> None:
    ref = np.random.default_rng(19).normal(size=(20, 2)) if reference is None else reference
    messages = []
    backends: tuple[Backend, ...] = ("torch", "numpy")
    for backend in backends:
        with pytest.raises(StatisticsError) as caught:
            MMDDetector(ref, device="cpu", backend=backend, **kwargs).test(np.zeros((40, 2)) if current is None
                                                                          else current)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


def test_numpy_backend_runs_on_the_cpu_only() -> None:
    x = np.random.default_rng(25).normal(size=(20, 2))
    assert MMDDetector(x, backend="numpy").device is None
    assert MMDDetector(x, backend="numpy", device="cpu").backend == "numpy"
    with pytest.raises(StatisticsError, match="device 'cuda' needs the torch backend"):
        MMDDetector(x, backend="numpy", device="cuda")


@needs_torch
def test_auto_backend_is_torch_when_installed() -> None:
    assert MMDDetector(np.random.default_rng(26).normal(size=(20, 2)), device="cpu").backend == "torch"


class NoTorch:
    """A finder that refuses torch, as if it were not installed.  (``sys.modules['torch'] = None`` would also make
    ``import torch`` fail, but scipy's array-API helpers then break on that ``None``.)"""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}")


NO_TORCH_FINDER = (
    "import sys\n"
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'torch':\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
    "sys.meta_path.insert(0, NoTorch())\n"
)
NUMPY_RUN = (  # a detector on the default backend: its name, a shifted and an unshifted window, torch untouched
    "import numpy as np, detectors.mmd as mmd\n"
    "rng = np.random.default_rng(0)\n"
    "det = mmd.MMDDetector(rng.normal(size=(200, 16)), permutations=100)\n"
    "print(det.backend, det.test(rng.normal(size=(80, 16))).drifted, det.test(rng.normal(1, 1, (80, 16))).drifted)\n"
    "print(round(mmd.median_bandwidth(np.array([[0.0], [1.0], [3.0]])) ** 2, 12))\n"
    "try:\n    mmd.MMDDetector(np.zeros((8, 2)), backend='torch')\nexcept ImportError as exc:\n    print(exc)\n"
    "try:\n    mmd.MMDDetector(rng.normal(size=(8, 2)), device='cuda')\nexcept mmd.StatisticsError as exc:\n"
    "    print(str(exc).split(': ', 1)[1])\n"
)
HINT = "MMD drift needs torch: pip install 'inferwatch[torch]'"


def run_python(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_without_torch_the_numpy_backend_runs_and_torch_gives_install_hint() -> None:
    code = NO_TORCH_FINDER + NUMPY_RUN + "print('torch' in sys.modules)\n"
    assert run_python(code) == ["numpy False True", "2.0", HINT, HINT, "False"]


def test_numpy_backend_never_imports_torch_even_when_installed() -> None:
    code = (
        "import sys, numpy as np, detectors.mmd as mmd\n"
        "rng = np.random.default_rng(1)\n"
        "det = mmd.MMDDetector(rng.normal(size=(100, 8)), backend='numpy')\n"
        "det.test(rng.normal(size=(50, 8)))\n"
        "mmd.MMDDetector(rng.normal(size=(100, 8)), backend='numpy', linear_above=0).test(rng.normal(size=(50, 8)))\n"
        "print('torch' in sys.modules)\n"
    )
    assert run_python(code) == ["False"]


# --- the daemon's detector ---------------------------------------------------------------------------------


def embedding_drift_on(reference: np.ndarray) -> Any:
    from monitor.config import DetectConfig, WindowConfig
    from monitor.detection.embedding_drift import EmbeddingDrift

    profile = SimpleNamespace(model="m", version="v1", embeddings=reference, embedding_bandwidth=None)
    return EmbeddingDrift(SimpleNamespace(profile=profile, detect=DetectConfig(), window=WindowConfig()))  # type: ignore[arg-type]


def test_embedding_drift_falls_back_to_numpy_and_logs_it_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # `import torch` now fails as if it were not installed
    monkeypatch.setattr(sys, "meta_path", [NoTorch(), *sys.meta_path])
    rng = np.random.default_rng(27)
    detector = embedding_drift_on(rng.normal(size=(200, 16)))
    window = SimpleNamespace(column=lambda name: rng.normal(1.0, 1.0, size=(80, 16)) if name == "embedding" else None)
    with caplog.at_level(logging.INFO, logger="monitor.detection.embedding_drift"):
        results = [detector.evaluate(window) for _ in range(3)]
    assert all(r.drifted and r.p_value == 1 / 101 for r in results)
    logged = [r for r in caplog.records if r.name == "monitor.detection.embedding_drift"]
    assert len(logged) == 1 and logged[0].levelno == logging.INFO, logged
    assert "m/v1" in logged[0].getMessage() and "numpy" in logged[0].getMessage()


@needs_torch
def test_embedding_drift_uses_torch_when_installed_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(28)
    detector = embedding_drift_on(rng.normal(size=(200, 16)))
    window = SimpleNamespace(column=lambda name: rng.normal(size=(80, 16)))
    with caplog.at_level(logging.DEBUG, logger="monitor.detection.embedding_drift"):
        result = detector.evaluate(window)
    assert result is not None and not result.insufficient
    assert detector._mmd.backend == "torch"
    assert not [r for r in caplog.records if r.name == "monitor.detection.embedding_drift"]


def check_linear(result: MMDResult, xs: np.ndarray, ys: np.ndarray, sigma: float) -> None:
    """The linear-time statistic and its one-sided normal p-value, recomputed by brute force on the detector's own
    row pairs (Gretton et al. 2012, section 6)."""

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.exp(-((a - b) ** 2).sum(axis=1) / (2.0 * sigma**2))
        return out

    h = k(xs[0::2], xs[1::2]) + k(ys[0::2], ys[1::2]) - k(xs[0::2], ys[1::2]) - k(xs[1::2], ys[0::2])  # (pairs,)
    assert result.mmd2 == pytest.approx(h.mean(), abs=1e-12)
    z = h.mean() / (h.std(ddof=1) / math.sqrt(len(h)))
    assert result.p_value == pytest.approx(stats.norm.sf(z), rel=1e-9)
