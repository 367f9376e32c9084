"""MMD embedding drift: statistic, permutation p-values and bandwidth against brute-force numpy references."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch", reason="MMD drift needs torch (install inferwatch[torch])")

from detectors.errors import StatisticsError  # noqa: E402
from detectors.mmd import MMDDetector, MMDResult, _assignments, _block_mmd2, median_bandwidth  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


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


# --- statistic and permutations ----------------------------------------------------------------------------


def test_mmd2_equals_brute_force() -> None:
    x, y = shifted_pair(1, 40, 25, 6, 0.5, 2)
    sigma = 1.7
    result = MMDDetector(x, bandwidth=sigma, permutations=10, min_samples=4, device="cpu").test(y)
    assert result.method == "permutation"
    assert result.mmd2 == pytest.approx(mmd2_brute(x, y, sigma), abs=1e-10)


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


def test_plus_one_correction_keeps_p_above_zero() -> None:
    x, _ = shifted_pair(4, 60, 1, 4, 0.0, 0)
    far = MMDDetector(x, permutations=50, alpha=0.05, device="cpu").test(x[:40] + 5.0)
    assert far.p_value == 1 / 51  # every permutation falls below the observed statistic, yet p > 0
    assert far.drifted

    same = MMDDetector(x, permutations=50, alpha=0.05, device="cpu").test(x.copy())
    assert same.p_value > 0 and not same.drifted


def test_same_seed_same_p_value_and_test_is_pure() -> None:
    x, y = shifted_pair(5, 80, 40, 4, 0.2, 2)
    det = MMDDetector(x, permutations=40, device="cpu", seed=3)
    first = det.test(y)
    assert det.test(y) == first
    assert MMDDetector(x, permutations=40, device="cpu", seed=3).test(y) == first


def test_float32_agrees_with_float64() -> None:
    x, y = shifted_pair(6, 300, 100, 32, 0.2, 4)
    r64 = MMDDetector(x, permutations=50, device="cpu", dtype="float64").test(y)
    r32 = MMDDetector(x, permutations=50, device="cpu", dtype="float32").test(y)
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


def test_detector_defaults_to_median_bandwidth() -> None:
    x = np.random.default_rng(9).normal(size=(50, 4))
    assert MMDDetector(x, device="cpu").bandwidth == median_bandwidth(x)


# --- detection ---------------------------------------------------------------------------------------------


def test_embedding_shift_is_detected_and_unshifted_sample_is_not() -> None:
    x, y = shifted_pair(10, 500, 200, 64, 0.3, 8)  # power ~1: 60 of 60 seeds detected (5 dims: 58 of 60)
    det = MMDDetector(x, device="cpu")  # alpha 0.01, 100 permutations
    shifted = det.test(y)
    assert shifted.drifted and shifted.p_value < 0.01
    assert (shifted.n_reference, shifted.n_current, shifted.permutations) == (500, 200, 100)
    unshifted = det.test(np.random.default_rng(11).normal(size=(200, 64)))
    assert not unshifted.drifted and unshifted.p_value > 0.05


def test_false_positive_rate_on_undrifted_splits() -> None:
    alpha, splits = 0.05, 100
    alarms = 0
    for seed in range(splits):
        x, y = shifted_pair(1000 + seed, 100, 50, 8, 0.0, 0)
        alarms += MMDDetector(x, alpha=alpha, device="cpu", seed=seed).test(y).drifted
    assert alarms / splits <= fp_bound(alpha, splits)


def test_linear_statistic_equals_brute_force_on_the_same_rows() -> None:
    x, y = shifted_pair(12, 64, 50, 3, 0.4, 1)
    sigma, seed = 1.5, 2
    result = MMDDetector(x, bandwidth=sigma, linear_above=0, min_samples=4, device="cpu", seed=seed).test(y)
    assert result.method == "linear" and result.permutations == 0

    generator = torch.Generator().manual_seed(seed)  # the detector's row order: reference first, then current
    xs = x[torch.randperm(64, generator=generator).numpy()[:50]]
    ys = y[torch.randperm(50, generator=generator).numpy()[:50]]

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.exp(-((a - b) ** 2).sum(axis=1) / (2.0 * sigma**2))
        return out

    h = k(xs[0::2], xs[1::2]) + k(ys[0::2], ys[1::2]) - k(xs[0::2], ys[1::2]) - k(xs[1::2], ys[0::2])  # (25,)
    assert result.mmd2 == pytest.approx(h.mean(), abs=1e-12)
    z = h.mean() / (h.std(ddof=1) / math.sqrt(len(h)))
    assert result.p_value == pytest.approx(stats.norm.sf(z), rel=1e-9)


def test_linear_test_detects_shift_on_large_sample_and_not_without() -> None:
    x, y = shifted_pair(13, 4000, 4000, 16, 0.5, 4)
    det = MMDDetector(x, linear_above=1000, device="cpu")
    shifted = det.test(y)
    assert shifted.method == "linear" and shifted.drifted
    unshifted = det.test(np.random.default_rng(14).normal(size=(4000, 16)))
    assert unshifted.method == "linear" and not unshifted.drifted


def test_linear_false_positive_rate_on_undrifted_splits() -> None:
    alpha, splits = 0.05, 200
    alarms = 0
    for seed in range(splits):
        x, y = shifted_pair(5000 + seed, 200, 200, 8, 0.0, 0)
        alarms += MMDDetector(x, alpha=alpha, linear_above=0, device="cpu", seed=seed).test(y).drifted
    assert alarms / splits <= fp_bound(alpha, splits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False")
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
def test_small_window_is_insufficient_not_drifted(rows: int) -> None:
    x = np.random.default_rng(16).normal(size=(50, 4))
    result = MMDDetector(x, device="cpu").test(np.full((rows, 4), 9.0))
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
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"reference": np.random.default_rng(17).normal(size=(20, 2)), "device": "cpu"}
    with pytest.raises(StatisticsError, match=match):
        MMDDetector(**{**args, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "match"),
    [(np.zeros((40, 3)), "40, 3"), (np.zeros(40), "2-D"), (np.array([[np.inf, 0.0]] * 40), "non-finite")],
)
def test_bad_window_raises(current: np.ndarray, match: str) -> None:
    det = MMDDetector(np.random.default_rng(18).normal(size=(20, 2)), device="cpu")
    with pytest.raises(StatisticsError, match=match):
        det.test(current)


def test_median_bandwidth_rejects_degenerate_reference() -> None:
    with pytest.raises(StatisticsError, match="identical"):
        median_bandwidth(np.ones((10, 3)))
    with pytest.raises(StatisticsError, match="at least 2"):
        median_bandwidth(np.ones((1, 3)))


def test_module_imports_without_torch_and_detector_gives_install_hint() -> None:
    code = (  # a finder that refuses torch, as if it were not installed
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import numpy as np, detectors.mmd as mmd\n"
        "assert 'torch' not in sys.modules\n"
        "print(round(mmd.median_bandwidth(np.array([[0.0], [1.0], [3.0]])) ** 2, 12))\n"
        "try:\n    mmd.MMDDetector(np.zeros((8, 2)))\nexcept ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["2.0", "MMD drift needs torch: pip install 'inferwatch[torch]'"]
