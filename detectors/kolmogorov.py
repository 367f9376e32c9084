"""The one-sample two-sided Kolmogorov distribution ``P(D_n >= d)``, vectorised over ``d``.

For a sample of size ``n`` from a continuous law ``F`` with empirical CDF ``F_n``,
``D_n = sup_x |F_n(x) - F(x)|``.  :func:`kstwo_sf` evaluates ``scipy.stats.kstwo.sf(d, n)`` for many
``d`` at once; the two-sample KS test (:mod:`detectors.ks`) uses it with the effective size
``round(n m / (n + m))`` when the exact law is out of reach.  SciPy evaluates it one value at a time.

Branches (Simard & L'Ecuyer 2011, as in SciPy), with ``t = n d^2``:

* ``t >= 370``: 0 to double precision;
* ``2.2 <= t < 370``: ``2 * smirnov(n, d)``, the one-sided Birnbaum–Tingey sum doubled;
* ``t < 2.2``: ``1 - PelzGood(n, d)``, the Pelz–Good (1976) asymptotic series of the CDF;
* corner cases (``n <= 140``, ``n d <= 1``, ``d >= 0.5``, the Durbin-matrix region): SciPy itself.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from detectors._arrays import FloatArray, readonly

__all__ = ["kstwo_sf"]


@functools.lru_cache(maxsize=8)
def _log_binomials(n: int) -> FloatArray:
    """``log C(n, j)`` for ``j = 0..n``."""
    j = np.arange(n + 1, dtype=np.float64)
    return readonly(special.gammaln(n + 1.0) - special.gammaln(j + 1.0) - special.gammaln(n - j + 1.0))


#: Most terms (values x summands) that :func:`_smirnov_sf` holds at once: 8 MiB per temporary.
_SMIRNOV_CHUNK = 1 << 20


def _smirnov_sf(n: int, x: FloatArray) -> FloatArray:
    """One-sided ``P(D+_n >= x)``, like ``scipy.special.smirnov(n, x)``, for 0 < x < 1; shape of ``x``.

    Birnbaum & Tingey (1951): ``x * sum_{j=0}^{floor(n(1-x))} C(n,j) (1-x-j/n)^(n-j) (x+j/n)^(j-1)``,
    all terms positive, summed in log space.  (SciPy evaluates the same sum one value at a time.)  The
    values are taken in chunks so that memory stays bounded whatever ``n`` and ``x.size`` are.
    """
    if x.size == 0:
        return x.copy()
    j = np.arange(n + 1, dtype=np.float64)  # (J,)
    log_binomials = _log_binomials(n)
    out = np.empty_like(x)
    rows = max(1, _SMIRNOV_CHUNK // (n + 1))
    for start in range(0, x.size, rows):  # bounded memory: usually a single chunk
        xs = x[start: start + rows, None]  # (k, 1)
        rest = (n - j) / n - xs  # (k, J) 1 - x - j/n
        inside = rest > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            log_term = log_binomials + (n - j) * np.log(np.where(inside, rest, 1.0)) + (j - 1) * np.log(xs + j / n)
            terms = np.exp(np.where(inside, log_term, -np.inf))  # (k, J)
        out[start: start + rows] = xs[:, 0] * terms.sum(axis=1)
    return out


_PI2, _PI4, _PI6 = np.pi**2, np.pi**4, np.pi**6


def _pelz_good_cdf(n: int, x: FloatArray) -> FloatArray:
    """Pelz–Good (1976) approximation of ``P(D_n <= x)``, SciPy's ``_kolmogn_PelzGood`` vectorised."""
    if x.size == 0:
        return x.copy()
    z = np.sqrt(n) * x  # (k,)
    z2, z4, z6 = z**2, z**4, z**6
    qlog = -_PI2 / 8 / z2
    q = np.exp(qlog)
    max_k = int(np.ceil(16 * z.max() / np.pi))
    k = np.arange(1, max_k + 1, dtype=np.float64)[:, None]  # (K, 1)
    odd = 2 * k - 1
    # sum_k c_k q^((2k-1)^2) for K0..K3 (SciPy uses a Horner scheme; same sum)
    qp = q ** (odd**2)  # (K, k)
    k0 = qp.sum(axis=0)
    k1 = ((-z2) + _PI2 / 4 * odd**2) * qp
    k2 = ((6 * z6 + 2 * z4) + (2 * z4 - 5 * z2) * _PI2 / 4 * odd**2 + _PI4 * (1 - 2 * z2) / 16 * odd**4) * qp
    k3 = ((-30 * z6 - 90 * z**8) + _PI2 * (135 * z4 - 96 * z6) / 4 * odd**2
          + _PI4 * (-60 * z2 + 212 * z4) / 16 * odd**4 + _PI6 * (5 - 30 * z2) / 64 * odd**6) * qp
    root2pi = np.sqrt(2 * np.pi)
    kk = np.stack([k0, k1.sum(axis=0), k2.sum(axis=0), k3.sum(axis=0)]) * root2pi  # (4, k)
    kk /= np.stack([z, 6 * z4, 72 * z**7, 6480 * z**10])
    # second sum over all integers k: q2^(k^2) terms of K2 and K3
    q2pow = np.exp(-_PI2 / 2 / z2) ** (k**2)  # (K, k)
    kk[2] += np.sum(k**2 * q2pow, axis=0) * _PI2 * root2pi / (-36 * z**3)
    kk[3] += np.sum((3 * z2 - _PI2 * k**2) * k**2 * q2pow, axis=0) * _PI2 * root2pi / (216 * z6)
    kk /= np.power(float(n), np.arange(4) / 2.0)[:, None]
    cdf: FloatArray = np.where(qlog < -708, 0.0, kk.sum(axis=0))
    return cdf


def kstwo_sf(d: npt.ArrayLike, n: int) -> FloatArray:
    """``scipy.stats.kstwo.sf(d, n)`` (one-sample two-sided KS law) for many ``d`` at once.

    Follows SciPy's branches (Simard & L'Ecuyer 2011): ``2 * smirnov(n, d)`` when ``n d^2 >= 2.2``,
    0 when ``n d^2 >= 370``, ``1 - PelzGood`` for smaller ``n d^2``; the remaining corner cases
    (``n <= 140``, ``n d <= 1``, ``d >= 0.5``, the Durbin-matrix region) are delegated to SciPy.

    Parameters
    ----------
    d : array_like, shape (k,)
        Statistics in [0, 1].
    n : int
        Sample size of the law (for two samples, ``round(n1 n2 / (n1 + n2))``).

    Returns
    -------
    ndarray, shape (k,)
        Survival probabilities, clipped to [0, 1].

    Examples
    --------
    >>> from scipy import stats
    >>> from detectors.kolmogorov import kstwo_sf
    >>> p = kstwo_sf([0.01, 0.02, 0.05], 9091)
    >>> bool(abs(p - stats.kstwo.sf([0.01, 0.02, 0.05], 9091)).max() < 1e-12)
    True
    """
    x = np.atleast_1d(np.asarray(d, dtype=np.float64))
    out = np.empty_like(x)
    t = n * x
    nx2 = t * x
    with np.errstate(invalid="ignore"):
        durbin = (nx2 < 2.2) & (n <= 100000) & (n * np.abs(x) ** 1.5 <= 1.4)
    delegate = (n <= 140) | (t <= 1.0) | (t >= n - 1) | (x >= 0.5) | durbin
    zero = ~delegate & (nx2 >= 370.0)
    smirnov = ~delegate & (nx2 >= 2.2) & ~zero
    pelz = ~delegate & (nx2 < 2.2)
    if delegate.any():
        out[delegate] = stats.kstwo.sf(x[delegate], n)
    out[zero] = 0.0
    out[smirnov] = 2.0 * _smirnov_sf(int(n), x[smirnov])
    out[pelz] = 1.0 - _pelz_good_cdf(int(n), x[pelz])
    result: FloatArray = np.clip(out, 0.0, 1.0)
    return result
