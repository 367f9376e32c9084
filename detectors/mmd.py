"""Embedding drift: the kernel two-sample test with the maximum mean discrepancy (MMD).

With the Gaussian RBF kernel ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` (alibi-detect's ``GaussianRBF``),
a reference sample ``X`` (n rows) and a current window ``Y`` (m rows), the unbiased estimate of the squared
MMD (Gretton et al. 2012, "A Kernel Two-Sample Test", JMLR 13, eq. 3) is

    MMD²_u = 1/(n(n-1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m-1)) Σ_{i≠j} k(y_i, y_j) - 2/(nm) Σ_{i,j} k(x_i, y_j).

Up to ``linear_above`` pooled rows its p-value comes from a permutation test, ``p = (1 + #{MMD²_π >= MMD²}) / (1 + P)``.
All P permuted statistics come from one pooled kernel matrix ``K0`` (N x N, N = n + m, zero diagonal): with the
0/1 "row goes to X" matrix ``A`` (N, P) and ``B = 1 - A``, permutation p has

    S_XX = a_pᵀ K0 a_p,   S_XY = b_pᵀ K0 a_p = 1ᵀ K0 a_p - S_XX,   S_YY = b_pᵀ K0 b_p = 1ᵀ K0 1 - 2·1ᵀ K0 a_p + S_XX,

so a single product ``K0 @ A`` (N, P) and column sums give every MMD²_π, and ``K0`` is never copied or indexed.
Above ``linear_above`` rows the linear-time statistic (Gretton et al. 2012, section 6) with its Gaussian
approximation is used instead, in O(N d) memory.

Two backends compute the same statistics: torch (CPU or GPU, the ``device``) and numpy (CPU, float64 sums
like torch's), chosen by ``backend``: ``"auto"`` takes torch when it can be imported and numpy otherwise, so the
detector needs numpy alone; ``"torch"`` insists on torch, with an install hint when it is missing.  The observed
MMD² of both agrees to rounding (about 1e-12 in float64); the permutations come from different generators (torch's
``Generator`` and numpy's ``default_rng``, both seeded with ``seed``), so their permutation p-values, each a valid
one, differ, and so do the rows that the linear-time test pairs.  The numpy backend never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from detectors._arrays import FloatArray, float_matrix, require_finite
from detectors.errors import StatisticsError

if TYPE_CHECKING:
    import torch

__all__ = ["Backend", "MMDDetector", "MMDResult", "Method", "TorchDtype", "median_bandwidth"]

Method = Literal["permutation", "linear"]
TorchDtype = Literal["float32", "float64"]
Backend = Literal["auto", "torch", "numpy"]

_Floats = npt.NDArray[np.floating[Any]]  # float32 or float64, the numpy backend's ``dtype``
_TORCH_HINT = "MMD drift needs torch: pip install 'inferwatch[torch]'"
_MIN_ROWS = 4  # the linear-time test needs two pairs of rows for its variance


def median_bandwidth(reference: npt.ArrayLike, max_rows: int = 2000, seed: int = 0) -> float:
    """Median-heuristic RBF bandwidth of the reference sample, in alibi-detect's convention.

    ``sigma = sqrt(med / 2)`` where ``med`` is the lower median of the squared Euclidean distances
    ``||x_i - x_j||^2`` over the K = r(r-1)/2 distinct pairs ``i < j`` (0-based order statistic
    ``(K - 1) // 2``), so that the kernel is ``k(x, y) = exp(-||x - y||^2 / med)``.  This is exactly
    ``alibi_detect.utils.pytorch.kernels.sigma_median(x, x, dist)``, which takes element
    ``n + (n² - n) // 2 - 1`` of the sorted full distance matrix (n zero diagonal entries first).

    Parameters
    ----------
    reference : array_like, shape (n, d)
        Reference embeddings.
    max_rows : int
        Use at most this many rows, a seeded uniform subset without replacement when ``n > max_rows``
        (the distance matrix is ``max_rows²``); with ``n <= max_rows`` the result equals alibi-detect's.
    seed : int
        Seed of the row subset.

    Returns
    -------
    float
        The bandwidth ``sigma`` (> 0).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.mmd import median_bandwidth
    >>> median_bandwidth(np.array([[0.0], [1.0], [3.0]]))  # squared distances 1, 4, 9: median 4
    1.4142135623730951
    """
    x = float_matrix(reference, "reference")
    require_finite(x, "reference")
    if max_rows < 2:
        raise StatisticsError(f"max_rows must be >= 2; got {max_rows}")
    if x.shape[0] < 2:
        raise StatisticsError(f"the median bandwidth needs at least 2 reference rows; got {x.shape[0]}")
    if x.shape[0] > max_rows:
        rows = np.random.default_rng(seed).choice(x.shape[0], size=max_rows, replace=False)
        x = x[np.sort(rows)]
    sq = np.einsum("ij,ij->i", x, x)  # (r,)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)  # (r, r) squared distances
    pairs = d2[np.triu_indices(x.shape[0], k=1)]  # (K,) distinct pairs i < j
    k = (pairs.size - 1) // 2
    med = float(np.partition(pairs, k)[k])
    if not med > 0.0:
        raise StatisticsError("median bandwidth is 0: more than half of the reference row pairs are identical")
    return math.sqrt(med / 2.0)


@dataclass(frozen=True)
class MMDResult:
    """MMD two-sample test of one current window against the reference.

    ``mmd2`` and ``p_value`` are NaN when the window was ``insufficient`` (fewer than ``min_samples``
    rows); ``permutations`` is 0 for the linear-time test.
    """

    mmd2: float
    p_value: float
    bandwidth: float
    permutations: int
    n_reference: int
    n_current: int
    method: Method
    drifted: bool
    insufficient: bool


class MMDDetector:
    """Embedding drift detector: MMD test of each current window against a fixed reference.

    Parameters
    ----------
    reference : ndarray, shape (n, d)
        Reference embeddings (n >= 4), converted to a tensor (torch) or an array of ``dtype`` (numpy) once.
    bandwidth : float, optional
        RBF bandwidth ``sigma``; default :func:`median_bandwidth` of the reference.
    permutations : int
        Number of permutations P of the exact test.
    alpha : float
        A window drifts when ``p_value < alpha``.
    linear_above : int
        Use the linear-time test when ``n + m > linear_above`` (the exact test holds an (N, N) kernel).
    min_samples : int
        Windows with fewer rows are ``insufficient`` and never drift.
    device : str, optional
        torch device; default ``"cuda"`` when available, else ``"cpu"``.  The numpy backend runs on the CPU:
        with it, anything but ``None`` or ``"cpu"`` is a :class:`StatisticsError`.
    dtype : {"float32", "float64"}
        Precision of the kernel computations (sums of the statistic are always float64), on both backends.
    seed : int
        Seed of the permutations and of the linear test's row order; every ``test`` call restarts
        from it, so a window always gets the same p-value.
    backend : {"auto", "torch", "numpy"}
        ``"auto"``: torch when it can be imported, else numpy; ``"torch"`` raises :class:`ImportError` with an
        install hint when torch is missing; ``"numpy"`` never imports torch.  The choice is ``self.backend``.

    Notes
    -----
    When an exact test is possible (``n + min_samples <= linear_above``) the zero-diagonal reference block of
    the kernel is computed once here and kept: n² values (200 MB for n = 5,000 in float64).  A window then
    costs O(n m d) for its kernel blocks plus O(N² P) for the one product ``K0 @ A``, on either backend.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.mmd import MMDDetector
    >>> rng = np.random.default_rng(0)
    >>> detector = MMDDetector(rng.normal(size=(200, 8)), permutations=200, backend="numpy")
    >>> detector.backend
    'numpy'
    >>> detector.test(rng.normal(size=(100, 8))).drifted
    False
    >>> detector.test(rng.normal(0.5, 1.0, size=(100, 8))).drifted
    True
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        bandwidth: float | None = None,
        permutations: int = 100,
        alpha: float = 0.01,
        linear_above: int = 20_000,
        min_samples: int = 30,
        device: str | None = None,
        dtype: TorchDtype = "float64",
        seed: int = 0,
        backend: Backend = "auto",
    ) -> None:
        if backend not in get_args(Backend):
            raise StatisticsError(f"backend must be one of {get_args(Backend)}; got {backend!r}")
        torch_missing: ImportError | None = None
        if backend != "numpy":
            try:
                import torch  # noqa: F401  (only whether it imports; the torch backend imports it again)
            except ImportError as exc:
                if backend == "torch":
                    raise ImportError(_TORCH_HINT) from exc
                torch_missing = exc
        x = float_matrix(reference, "reference")
        require_finite(x, "reference")
        if x.shape[0] < _MIN_ROWS:
            raise StatisticsError(f"reference must have at least {_MIN_ROWS} rows; got {x.shape[0]}")
        if permutations < 1:
            raise StatisticsError(f"permutations must be >= 1; got {permutations}")
        if not 0.0 < alpha < 1.0:
            raise StatisticsError(f"alpha must be in (0, 1); got {alpha}")
        if linear_above < 0:
            raise StatisticsError(f"linear_above must be >= 0; got {linear_above}")
        if min_samples < _MIN_ROWS:
            raise StatisticsError(f"min_samples must be >= {_MIN_ROWS}; got {min_samples}")
        if dtype not in get_args(TorchDtype):
            raise StatisticsError(f"dtype must be one of {get_args(TorchDtype)}; got {dtype!r}")
        if bandwidth is None:
            bandwidth = median_bandwidth(x, seed=seed)
        elif not (math.isfinite(bandwidth) and bandwidth > 0.0):
            raise StatisticsError(f"bandwidth must be finite and > 0; got {bandwidth}")
        use_numpy = backend == "numpy" or torch_missing is not None
        if use_numpy and device not in (None, "cpu"):
            why = f": {_TORCH_HINT}" if torch_missing is not None else ""
            raise StatisticsError(
                f"device {device!r} needs the torch backend; the numpy backend runs on the CPU "
                f"(device None or 'cpu'){why}"
            )

        self.bandwidth = float(bandwidth)
        self.permutations = permutations
        self.alpha = alpha
        self.linear_above = linear_above
        self.min_samples = min_samples
        self.dtype: TorchDtype = dtype
        self.seed = seed

        self._n, self._d = int(x.shape[0]), int(x.shape[1])
        gamma = 1.0 / (2.0 * self.bandwidth**2)  # k = exp(-gamma ||x - y||^2)
        # The reference block of K0 and its row sums serve every exact test: kept when one can happen.
        keep_k_xx = x.shape[0] + min_samples <= linear_above
        self._kernels: _TorchKernels | _NumpyKernels
        if use_numpy:
            self.backend: Literal["torch", "numpy"] = "numpy"
            self.device: torch.device | None = None
            self._kernels = _NumpyKernels(x, dtype, gamma, keep_k_xx)
        else:
            self.backend = "torch"
            self._kernels = _TorchKernels(x, dtype, device, gamma, keep_k_xx)
            self.device = self._kernels.device

    @property
    def n_reference(self) -> int:
        """Rows of the reference sample."""
        return self._n

    def test(self, current: npt.ArrayLike) -> MMDResult:
        """Test one current window (m, d) against the reference; pure: the detector is not changed.

        Parameters
        ----------
        current : array_like, shape (m, d)
            Current embeddings, same ``d`` as the reference.

        Returns
        -------
        MMDResult
        """
        y = _window(current, self._d)
        n, m = self.n_reference, int(y.shape[0])
        method: Method = "linear" if n + m > self.linear_above else "permutation"
        if m < self.min_samples:
            return MMDResult(
                mmd2=math.nan,
                p_value=math.nan,
                bandwidth=self.bandwidth,
                permutations=0,
                n_reference=n,
                n_current=m,
                method=method,
                drifted=False,
                insufficient=True,
            )
        if method == "linear":
            mmd2, p_value = self._kernels.linear_test(y, self.seed)
            permutations = 0
        else:
            mmd2, p_value = self._kernels.permutation_test(y, self.permutations, self.seed)
            permutations = self.permutations
        return MMDResult(
            mmd2=mmd2,
            p_value=p_value,
            bandwidth=self.bandwidth,
            permutations=permutations,
            n_reference=n,
            n_current=m,
            method=method,
            drifted=p_value < self.alpha,
            insufficient=False,
        )


class _TorchKernels:
    """torch backend: the reference tensor on ``device`` and, when an exact test can happen, its K0 block."""

    def __init__(self, x: FloatArray, dtype: TorchDtype, device: str | None, gamma: float, keep_k_xx: bool) -> None:
        import torch

        try:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError as exc:
            raise StatisticsError(f"device {device!r} is not a torch device: {exc}") from exc
        self.gamma = gamma
        self.x = torch.as_tensor(x, dtype=getattr(torch, dtype), device=self.device)  # (n, d)
        self.x_sq = (self.x * self.x).sum(dim=1)  # (n,)
        self.k_xx: torch.Tensor | None = None
        self.k_xx_rowsum: torch.Tensor | None = None
        if keep_k_xx:
            self.k_xx = _rbf(self.x, self.x, self.x_sq, self.x_sq, gamma).fill_diagonal_(0.0)  # (n, n)
            self.k_xx_rowsum = self.k_xx.sum(dim=1)  # (n,)

    def linear_test(self, y_np: FloatArray, seed: int) -> tuple[float, float]:
        import torch

        y = torch.as_tensor(y_np, dtype=self.x.dtype, device=self.device)  # (m, d)
        return _linear_test(self.x, y, self.gamma, torch.Generator().manual_seed(seed))

    def permutation_test(self, y_np: FloatArray, permutations: int, seed: int) -> tuple[float, float]:
        import torch

        k_xx, k_xx_rowsum = self.k_xx, self.k_xx_rowsum
        if k_xx is None or k_xx_rowsum is None:  # unreachable: m >= min_samples here
            raise RuntimeError("internal: no reference kernel although n + m <= linear_above")
        y = torch.as_tensor(y_np, dtype=self.x.dtype, device=self.device)  # (m, d)
        generator = torch.Generator().manual_seed(seed)
        n, m = int(self.x.shape[0]), int(y.shape[0])
        y_sq = (y * y).sum(dim=1)  # (m,)
        k_xy = _rbf(self.x, y, self.x_sq, y_sq, self.gamma)  # (n, m)
        k_yy = _rbf(y, y, y_sq, y_sq, self.gamma).fill_diagonal_(0.0)  # (m, m)
        assign = _assignments(n, m, permutations, generator).to(device=self.device, dtype=y.dtype)  # (N, P+1)
        row_sums = torch.cat([k_xx_rowsum + k_xy.sum(dim=1), k_xy.sum(dim=0) + k_yy.sum(dim=1)])  # (N,)
        stats = _block_mmd2(k_xx, k_xy, k_yy, assign, row_sums)  # (P+1,) float64, [0] observed
        observed = stats[0]
        exceed = int((stats[1:] >= observed).sum().item())
        return float(observed.item()), (1.0 + exceed) / (1.0 + permutations)


class _NumpyKernels:
    """numpy backend (CPU): the reference array in ``dtype`` and, when an exact test can happen, its K0 block.

    The same computation as :class:`_TorchKernels`, with numpy's ``default_rng(seed)`` for the permutations and
    the linear test's row order; torch is never imported.
    """

    def __init__(self, x: FloatArray, dtype: TorchDtype, gamma: float, keep_k_xx: bool) -> None:
        self.gamma = gamma
        self.x: _Floats = np.ascontiguousarray(x, dtype=np.dtype(dtype))  # (n, d)
        self.x_sq = (self.x * self.x).sum(axis=1)  # (n,)
        self.k_xx: _Floats | None = None
        self.k_xx_rowsum: _Floats | None = None
        if keep_k_xx:
            self.k_xx = _rbf_np(self.x, self.x, self.x_sq, self.x_sq, gamma)  # (n, n)
            np.fill_diagonal(self.k_xx, 0.0)
            self.k_xx_rowsum = self.k_xx.sum(axis=1)  # (n,)

    def linear_test(self, y_np: FloatArray, seed: int) -> tuple[float, float]:
        y = y_np.astype(self.x.dtype, copy=False)  # (m, d)
        return _linear_test_np(self.x, y, self.gamma, np.random.default_rng(seed))

    def permutation_test(self, y_np: FloatArray, permutations: int, seed: int) -> tuple[float, float]:
        k_xx, k_xx_rowsum = self.k_xx, self.k_xx_rowsum
        if k_xx is None or k_xx_rowsum is None:  # unreachable: m >= min_samples here
            raise RuntimeError("internal: no reference kernel although n + m <= linear_above")
        y = np.ascontiguousarray(y_np, dtype=self.x.dtype)  # (m, d)
        n, m = int(self.x.shape[0]), int(y.shape[0])
        y_sq = (y * y).sum(axis=1)  # (m,)
        k_xy = _rbf_np(self.x, y, self.x_sq, y_sq, self.gamma)  # (n, m)
        k_yy = _rbf_np(y, y, y_sq, y_sq, self.gamma)  # (m, m)
        np.fill_diagonal(k_yy, 0.0)
        assign = _assignments_np(n, m, permutations, np.random.default_rng(seed)).astype(y.dtype, copy=False)
        row_sums = np.concatenate([k_xx_rowsum + k_xy.sum(axis=1), k_xy.sum(axis=0) + k_yy.sum(axis=1)])  # (N,)
        stats = _block_mmd2_np(k_xx, k_xy, k_yy, assign, row_sums)  # (P+1,) float64, [0] observed
        observed = float(stats[0])
        exceed = int(np.count_nonzero(stats[1:] >= observed))
        return observed, (1.0 + exceed) / (1.0 + permutations)


def _window(current: npt.ArrayLike, d: int) -> FloatArray:
    """Return the current window as (m, d) float64; zero rows are allowed (an insufficient window)."""
    try:
        y = np.asarray(current, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StatisticsError(f"current must be numeric: {exc}") from exc
    if y.ndim != 2 or y.shape[1] != d:
        raise StatisticsError(f"current must be 2-D (rows, {d} features) like the reference; got shape {y.shape}")
    require_finite(y, "current")
    return y


def _rbf(x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor, gamma: float) -> torch.Tensor:
    """Kernel block ``exp(-gamma ||x_i - y_j||^2)`` (a, b), distances as ``|x|² + |y|² - 2 x·y`` like alibi."""
    import torch

    d2 = torch.addmm(y_sq[None, :], x, y.T, alpha=-2.0).add_(x_sq[:, None]).clamp_min_(0.0)  # (a, b)
    return d2.mul_(-gamma).exp_()


def _assignments(n: int, m: int, permutations: int, generator: torch.Generator) -> torch.Tensor:
    """0/1 float64 matrix (N, P+1): column 0 is the observed split, column p a uniform random n-subset (p >= 1)."""
    import torch

    size = n + m
    assign = torch.zeros(size, permutations + 1, dtype=torch.float64)  # (N, P+1)
    assign[:n, 0] = 1.0
    # argsort of iid uniforms is a uniform permutation per column; its first n rows go to X.
    order = torch.rand(size, permutations, generator=generator, dtype=torch.float64).argsort(dim=0)  # (N, P)
    assign[:, 1:].scatter_(0, order[:n], 1.0)
    return assign


def _block_mmd2(
    k_xx: torch.Tensor, k_xy: torch.Tensor, k_yy: torch.Tensor, assign: torch.Tensor, row_sums: torch.Tensor
) -> torch.Tensor:
    """Unbiased MMD² of every split (column) of ``assign`` from the blocks of the pooled zero-diagonal K0.

    ``k_xx`` (n, n) and ``k_yy`` (m, m) have zero diagonals, ``k_xy`` is (n, m); ``assign`` (N, Q) holds n ones
    per column; ``row_sums`` (N,) is ``K0 @ 1``.  Returns float64 (Q,).
    """
    import torch

    n, m = int(k_xy.shape[0]), int(k_xy.shape[1])
    a_x, a_y = assign[:n], assign[n:]  # (n, Q), (m, Q)
    ka = torch.cat([torch.addmm(k_xy @ a_y, k_xx, a_x), torch.addmm(k_yy @ a_y, k_xy.T, a_x)])  # K0 @ A: (N, Q)
    ka, a = ka.double(), assign.double()
    col = ka.sum(dim=0)  # 1ᵀ K0 a: (Q,)
    s_xx = (a * ka).sum(dim=0)  # aᵀ K0 a
    s_xy = col - s_xx  # bᵀ K0 a
    s_yy = row_sums.double().sum() - 2.0 * col + s_xx  # bᵀ K0 b
    return s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)


def _linear_test(x: torch.Tensor, y: torch.Tensor, gamma: float, generator: torch.Generator) -> tuple[float, float]:
    """Linear-time MMD²_l and its one-sided Gaussian p-value (Gretton et al. 2012, section 6, Corollary 16).

    With L = min(n, m) // 2 pairs of rows drawn in a seeded random order,
    ``h_i = k(x_2i, x_2i+1) + k(y_2i, y_2i+1) - k(x_2i, y_2i+1) - k(x_2i+1, y_2i)`` are iid with mean MMD², so
    ``z = mean(h) / sqrt(var(h) / L)`` is asymptotically N(0, 1) under the null and ``p = 1 - Φ(z)``.
    """
    import torch

    pairs = min(int(x.shape[0]), int(y.shape[0])) // 2
    xs = x[torch.randperm(x.shape[0], generator=generator)[: 2 * pairs].to(x.device)]  # (2L, d)
    ys = y[torch.randperm(y.shape[0], generator=generator)[: 2 * pairs].to(y.device)]  # (2L, d)
    x1, x2, y1, y2 = xs[0::2], xs[1::2], ys[0::2], ys[1::2]  # (L, d) each

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * (a - b).pow(2).sum(dim=1))  # (L,)

    h = (k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)).double()  # (L,)
    mmd2 = float(h.mean().item())
    std = float(h.std().item())
    if std == 0.0:
        return mmd2, 1.0 if mmd2 <= 0.0 else 0.0
    z = mmd2 / (std / math.sqrt(pairs))
    return mmd2, 0.5 * math.erfc(z / math.sqrt(2.0))


# --- numpy backend: the same computations on arrays -------------------------------------------------------


def _rbf_np(x: _Floats, y: _Floats, x_sq: _Floats, y_sq: _Floats, gamma: float) -> _Floats:
    """:func:`_rbf` in numpy: ``exp(-gamma ||x_i - y_j||^2)`` (a, b) in the dtype of ``x``, in place on one array."""
    d2 = x @ y.T  # (a, b)
    d2 *= -2.0
    d2 += y_sq[None, :]
    d2 += x_sq[:, None]
    np.maximum(d2, 0.0, out=d2)
    d2 *= -gamma
    return np.exp(d2, out=d2)


def _assignments_np(n: int, m: int, permutations: int, rng: np.random.Generator) -> FloatArray:
    """:func:`_assignments` from a numpy generator: (N, P+1) 0/1 float64, column 0 the observed split."""
    size = n + m
    assign = np.zeros((size, permutations + 1))  # (N, P+1)
    assign[:n, 0] = 1.0
    # every column an independent uniform permutation of the rows; its first n rows go to X.
    order = rng.permuted(np.broadcast_to(np.arange(size)[:, None], (size, permutations)), axis=0)  # (N, P)
    np.put_along_axis(assign[:, 1:], order[:n], 1.0, axis=0)
    return assign


def _block_mmd2_np(k_xx: _Floats, k_xy: _Floats, k_yy: _Floats, assign: _Floats, row_sums: _Floats) -> FloatArray:
    """:func:`_block_mmd2` in numpy: unbiased MMD² of every split (column) of ``assign``, float64 (Q,)."""
    n, m = int(k_xy.shape[0]), int(k_xy.shape[1])
    a_x, a_y = assign[:n], assign[n:]  # (n, Q), (m, Q)
    ka = np.empty((n + m, assign.shape[1]), dtype=np.result_type(k_xy, assign))  # K0 @ A: (N, Q)
    np.matmul(k_xx, a_x, out=ka[:n])
    ka[:n] += k_xy @ a_y
    np.matmul(k_xy.T, a_x, out=ka[n:])
    ka[n:] += k_yy @ a_y
    ka64, a64 = ka.astype(np.float64, copy=False), assign.astype(np.float64, copy=False)
    col = ka64.sum(axis=0)  # 1ᵀ K0 a: (Q,)
    s_xx = (a64 * ka64).sum(axis=0)  # aᵀ K0 a
    s_xy = col - s_xx  # bᵀ K0 a
    s_yy = row_sums.astype(np.float64).sum() - 2.0 * col + s_xx  # bᵀ K0 b
    out: FloatArray = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)
    return out


def _linear_test_np(x: _Floats, y: _Floats, gamma: float, rng: np.random.Generator) -> tuple[float, float]:
    """:func:`_linear_test` with the row order drawn from a numpy generator (reference first, then current)."""
    pairs = min(int(x.shape[0]), int(y.shape[0])) // 2
    xs = x[rng.permutation(x.shape[0])[: 2 * pairs]]  # (2L, d)
    ys = y[rng.permutation(y.shape[0])[: 2 * pairs]]  # (2L, d)
    return _linear_pairs_np(xs, ys, gamma)


def _linear_pairs_np(xs: _Floats, ys: _Floats, gamma: float) -> tuple[float, float]:
    """MMD²_l and its Gaussian p-value of rows already in pair order: pairs (0, 1), (2, 3), ... of ``xs``, ``ys``."""
    pairs = int(xs.shape[0]) // 2
    x1, x2, y1, y2 = xs[0::2], xs[1::2], ys[0::2], ys[1::2]  # (L, d) each

    def k(a: _Floats, b: _Floats) -> _Floats:
        out: _Floats = np.exp(-gamma * np.square(a - b).sum(axis=1))  # (L,)
        return out

    h = (k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)).astype(np.float64)  # (L,)
    mmd2 = float(h.mean())
    std = float(h.std(ddof=1))
    if std == 0.0:
        return mmd2, 1.0 if mmd2 <= 0.0 else 0.0
    z = mmd2 / (std / math.sqrt(pairs))
    return mmd2, 0.5 * math.erfc(z / math.sqrt(2.0))
