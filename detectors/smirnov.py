"""Exact null distribution of the two-sided two-sample Kolmogorov–Smirnov (Smirnov) statistic.

A port of the two-sided branch of SciPy's ``scipy.stats._stats_py._attempt_exact_2kssamp`` (SciPy
1.17), so that :func:`detectors.ks.ks_2samp_columns` reproduces ``scipy.stats.ks_2samp(method='auto')``
p-values without calling into SciPy per feature.  With sample sizes ``n1``, ``n2``, ``g = gcd(n1, n2)``
and ``lcm = n1 * n2 / g``, every attainable statistic is ``D = h / lcm`` for an integer ``h`` and

    P(D_{n1,n2} >= h / lcm) = 1 - #{lattice paths (0,0)->(n1,n2) with |x/n1 - y/n2| < h/lcm} / C(n1+n2, n1)

(Hodges 1958; the "inside method" recursion for 1 - p of Viehmann 2021, arXiv:2102.08037).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["smirnov_sf_exact"]


def _prob_outside_square(n: int, h: int) -> float:
    """P(D_{n,n} >= h/n) for equal sample sizes (port of ``_compute_prob_outside_square``).

    P = 2 * (C(2n, n-h) - C(2n, n-2h) + C(2n, n-3h) - ...) / C(2n, n), evaluated Horner-style as
    P = 2 * A0 * (1 - A1 * (1 - A2 * (...))) to avoid subtractive cancellation.
    """
    p = 0.0
    k = n // h
    while k >= 0:
        p1 = 1.0
        # A_k = C(2n, n-kh) / C(2n, n-(k-1)h) as a product of h simple ratios
        for j in range(h):
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1)
        p = p1 * (1.0 - p)
        k -= 1
    return 2 * p


def _outer_prob_inside_port(m: int, n: int, g: int, h: int) -> float:
    """1 - (paths strictly inside |x/m - y/n| < h/lcm) / C(m+n, n); port of SciPy's pythran kernel.

    Keeps one sliding column of the path-count matrix A, rescaled so that it directly holds the
    complement probability (Viehmann's recursion).
    """
    if m < n:
        m, n = n, m
    mg = m // g
    ng = n // g
    minj, maxj = 0, min(math.ceil(h / mg), n + 1)
    curlen = maxj - minj
    len_a = min(2 * maxj + 2, n + 1)
    a = [1.0] * len_a
    for jj in range(minj, maxj):
        a[jj] = 0.0
    for i in range(1, m + 1):
        lastminj, lastlen = minj, curlen
        minj = min(max(math.floor((ng * i - h) / mg) + 1, 0), n)
        maxj = min(math.ceil((ng * i + h) / mg), n + 1)
        if maxj <= minj:
            return 1.0
        val = 0.0 if minj == 0 else 1.0
        for jj in range(maxj - minj):
            j = jj + minj
            # A(i, j) = (i * A(i-1, j) + j * A(i, j-1)) / (i + j), in probability scale
            val = (a[jj + minj - lastminj] * i + val * j) / (i + j)
            a[jj] = val
        curlen = maxj - minj
        if lastlen > curlen:
            for jj in range(maxj - minj, maxj - minj + (lastlen - curlen)):
                a[jj] = 1.0
    return a[maxj - minj - 1]


def _load_compiled_kernel() -> Callable[[int, int, int, int], float] | None:
    """SciPy's compiled version of :func:`_outer_prob_inside_port`, if this SciPy still ships it.

    The pure-Python port is O(max(n1, n2) * window) interpreted steps; the compiled kernel is the
    same algorithm and roughly 100x faster.  It is a private SciPy symbol, so any import problem
    or signature change silently falls back to the port.
    """
    try:
        from scipy.stats._stats_pythran import _compute_outer_prob_inside_method as kernel
    except Exception:  # pragma: no cover - depends on the installed SciPy
        return None
    try:
        probe = float(kernel(3, 2, 1, 3))
    except Exception:  # pragma: no cover
        return None
    if not math.isclose(probe, _outer_prob_inside_port(3, 2, 1, 3), rel_tol=1e-12, abs_tol=1e-15):
        return None  # pragma: no cover

    def call(m: int, n: int, g: int, h: int) -> float:
        return float(kernel(m, n, g, h))

    return call


_COMPILED = _load_compiled_kernel()


def smirnov_sf_exact(n1: int, n2: int, h: int, *, use_compiled: bool = True) -> float | None:
    """Exact two-sided p-value ``P(D >= h / lcm(n1, n2))`` of the two-sample KS statistic.

    Parameters
    ----------
    n1, n2 : int
        Sample sizes, both >= 1.
    h : int
        The statistic times ``lcm(n1, n2)``, rounded to an integer (``0 <= h <= lcm``).
    use_compiled : bool, optional
        Use SciPy's compiled kernel for unequal sizes when available (default).  ``False`` forces
        the pure-Python port (used by the tests to check the two agree).

    Returns
    -------
    float or None
        The p-value, or ``None`` when the computation is numerically unreliable (the caller then
        falls back to the asymptotic distribution, exactly as SciPy does).

    Examples
    --------
    >>> from detectors.smirnov import smirnov_sf_exact
    >>> round(smirnov_sf_exact(5, 5, 5), 6)  # D = 1 with n1 = n2 = 5: 2 / C(10, 5)
    0.007937
    """
    if h == 0:
        return 1.0
    g = math.gcd(n1, n2)
    try:
        with np.errstate(invalid="raise", over="raise"):
            if n1 == n2:
                prob = _prob_outside_square(n1, h)
            elif use_compiled and _COMPILED is not None:
                prob = _COMPILED(n1, n2, g, h)
            else:
                prob = _outer_prob_inside_port(n1, n2, g, h)
    except (FloatingPointError, OverflowError):  # pragma: no cover - mirrors SciPy's guard
        return None
    if not 0.0 <= prob <= 1.0:
        return None
    return prob
