"""Quality of a text generator's window against its reference: feedback, output shape, refusals, latency.

Five tests, each run only when its window has at least ``min_samples`` values:

=================  ==========================================  =====================  =================
test               statistic                                   p-value                effect
=================  ==========================================  =====================  =================
``acceptance``     share of accepted outputs (user feedback)   exact binomial, less   reference - rate
``output_tokens``  KS distance of output lengths               two-sample KS          D
``mean_logprob``   KS distance of mean token log-probability   two-sample KS          D
``empty``          share of empty outputs                      exact binomial, more   rate - reference
``refusal``        share of refusals (as flagged at capture)   exact binomial, more   rate - reference
=================  ==========================================  =====================  =================

The p-values of the tests that ran are Bonferroni-adjusted together; a test is significant when its
adjusted p-value is below ``alpha`` **and** its effect reaches ``min_effect``.  Time to first token and
time per output token are summarised (p50/p95/p99) but not tested here: latency has its own SLO detector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from detectors._arrays import BoolArray, FloatArray, readonly
from detectors.errors import StatisticsError
from detectors.ks import ks_2samp_columns
from detectors.multiple_testing import adjust_p_values

__all__ = [
    "LLMQualityResult",
    "LLMReference",
    "LLMTest",
    "LLMTestName",
    "Percentiles",
    "build_llm_reference",
    "llm_quality",
]

LLMTestName = Literal["acceptance", "output_tokens", "mean_logprob", "empty", "refusal"]

@dataclass(frozen=True, eq=False)
class LLMReference:
    """Reference distributions of a generator, from validation traffic.

    Attributes
    ----------
    output_tokens_sorted : ndarray, shape (n,)
        Output lengths in tokens, sorted ascending.
    mean_logprob_sorted : ndarray, shape (n_lp,)
        Finite mean token log-probabilities, sorted ascending (may be empty when unavailable).
    empty_rate, refusal_rate : float
        Shares of empty outputs and of refusals.
    acceptance_rate : float or None
        Share of accepted outputs among those with feedback, when feedback was available.
    """

    output_tokens_sorted: FloatArray
    mean_logprob_sorted: FloatArray
    empty_rate: float
    refusal_rate: float
    acceptance_rate: float | None = None

    def __post_init__(self) -> None:
        for name in ("output_tokens_sorted", "mean_logprob_sorted"):
            arr = getattr(self, name)
            if arr.ndim != 1 or not np.isfinite(arr).all() or (np.diff(arr) < 0).any():
                raise StatisticsError(f"{name} must be a 1-D, finite, ascending array")
        if self.output_tokens_sorted.size < 1:
            raise StatisticsError("output_tokens_sorted must not be empty")
        for name in ("empty_rate", "refusal_rate", "acceptance_rate"):
            rate = getattr(self, name)
            if rate is not None and not (0.0 <= rate <= 1.0):
                raise StatisticsError(f"{name} must be in [0, 1]; got {rate}")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for an ``.npz`` read with ``allow_pickle=False`` (acceptance None is stored as NaN)."""
        acceptance = np.nan if self.acceptance_rate is None else self.acceptance_rate
        return {
            "output_tokens_sorted": np.asarray(self.output_tokens_sorted, dtype=np.float64),
            "mean_logprob_sorted": np.asarray(self.mean_logprob_sorted, dtype=np.float64),
            "empty_rate": np.array(self.empty_rate, dtype=np.float64),
            "refusal_rate": np.array(self.refusal_rate, dtype=np.float64),
            "acceptance_rate": np.array(acceptance, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> LLMReference:
        """Rebuild from :meth:`to_arrays` output; raises :class:`StatisticsError` if malformed."""
        keys = {"output_tokens_sorted", "mean_logprob_sorted", "empty_rate", "refusal_rate", "acceptance_rate"}
        missing = keys - set(arrays)
        if missing:
            raise StatisticsError(f"LLM reference arrays lack {sorted(missing)}")
        acceptance = float(arrays["acceptance_rate"])
        return cls(
            output_tokens_sorted=readonly(np.array(arrays["output_tokens_sorted"], dtype=np.float64)),
            mean_logprob_sorted=readonly(np.array(arrays["mean_logprob_sorted"], dtype=np.float64)),
            empty_rate=float(arrays["empty_rate"]),
            refusal_rate=float(arrays["refusal_rate"]),
            acceptance_rate=None if np.isnan(acceptance) else acceptance,
        )


def _vector(x: npt.ArrayLike, name: str, dtype: type[np.generic], m: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise StatisticsError(f"{name} must be 1-D; got shape {arr.shape}")
    if m is not None and arr.shape[0] != m:
        raise StatisticsError(f"{name} has {arr.shape[0]} entries but output_tokens has {m}")
    return arr


def build_llm_reference(
    output_tokens: npt.ArrayLike,
    mean_logprob: npt.ArrayLike,
    empty: npt.ArrayLike,
    refusal: npt.ArrayLike,
    accepted: npt.ArrayLike | None = None,
) -> LLMReference:
    """Reference distributions from a generator's validation outputs.

    Parameters
    ----------
    output_tokens : array_like, shape (n,)
        Output lengths in tokens (finite).
    mean_logprob : array_like, shape (n,)
        Mean token log-probability per output; NaN where unavailable (excluded).
    empty, refusal : array_like of bool, shape (n,)
    accepted : array_like of bool, shape (k,), optional
        Accept/reject feedback on (some of) the outputs.

    Returns
    -------
    LLMReference

    Examples
    --------
    >>> from detectors.llm import build_llm_reference
    >>> ref = build_llm_reference([3, 1, 2, 0], [-1.0, -0.5, float("nan"), -2.0],
    ...                           [False, False, False, True], [False, True, False, False], [True, False])
    >>> ref.output_tokens_sorted, ref.mean_logprob_sorted, ref.refusal_rate, ref.acceptance_rate
    (array([0., 1., 2., 3.]), array([-2. , -1. , -0.5]), 0.25, 0.5)
    """
    tokens = _vector(output_tokens, "output_tokens", np.float64)
    m = tokens.shape[0]
    if m < 1 or not np.isfinite(tokens).all():
        raise StatisticsError("output_tokens must be a non-empty array of finite lengths")
    logprob = _vector(mean_logprob, "mean_logprob", np.float64, m)
    is_empty = _vector(empty, "empty", np.bool_, m)
    is_refusal_ = _vector(refusal, "refusal", np.bool_, m)
    acceptance = None
    if accepted is not None:
        acc = _vector(accepted, "accepted", np.bool_)
        acceptance = float(acc.mean()) if acc.size else None
    return LLMReference(
        output_tokens_sorted=readonly(np.sort(tokens)),
        mean_logprob_sorted=readonly(np.sort(logprob[np.isfinite(logprob)])),
        empty_rate=float(is_empty.mean()),
        refusal_rate=float(is_refusal_.mean()),
        acceptance_rate=acceptance,
    )


@dataclass(frozen=True)
class LLMTest:
    """One test of a window: ``value`` and ``reference`` are the window's and the reference's rate (or, for
    the KS tests, median); ``effect`` is what is compared with ``min_effect``: the rate difference in the
    tested direction, or the KS distance D."""

    name: LLMTestName
    n: int
    value: float
    reference: float
    effect: float
    p_value: float
    p_adjusted: float
    significant: bool


@dataclass(frozen=True)
class Percentiles:
    """p50/p95/p99 of the finite values of a window (NaN when it has none)."""

    p50: float
    p95: float
    p99: float
    n: int


@dataclass(frozen=True)
class LLMQualityResult:
    """The tests of one generator window.

    Attributes
    ----------
    n : int
        Outputs in the window.
    tests : tuple of LLMTest
        The tests that had enough data, in the order of the module table.
    skipped : tuple of str
        Tests that did not run (too few values, or no reference acceptance rate).
    ttft_s, tpot_s : Percentiles
        Time to first token and time per output token, in seconds.
    findings : tuple of str
        One short sentence per significant test, naming what moved.
    output_tokens : Percentiles
        Output length in tokens.
    mean_logprob : float
        Mean of the outputs' mean token log-probabilities (NaN when none carried one).
    """

    n: int
    tests: tuple[LLMTest, ...]
    skipped: tuple[str, ...]
    ttft_s: Percentiles
    tpot_s: Percentiles
    findings: tuple[str, ...]
    output_tokens: Percentiles = Percentiles(math.nan, math.nan, math.nan, 0)
    mean_logprob: float = math.nan

    @property
    def drifted(self) -> bool:
        """Whether any test was significant."""
        return any(t.significant for t in self.tests)

    def test(self, name: LLMTestName) -> LLMTest | None:
        """The test called ``name``, or None when it was skipped."""
        return next((t for t in self.tests if t.name == name), None)


def _percentiles(x: FloatArray) -> Percentiles:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return Percentiles(np.nan, np.nan, np.nan, 0)
    p50, p95, p99 = np.percentile(finite, [50, 95, 99])
    return Percentiles(float(p50), float(p95), float(p99), int(finite.size))


def _finding(t: LLMTest) -> str:
    p = f"p={t.p_adjusted:.1g}"
    if t.name == "acceptance":
        return f"acceptance {t.value:.2f} < reference {t.reference:.2f} ({p})"
    if t.name in ("empty", "refusal"):
        what = "empty outputs" if t.name == "empty" else "refusals"
        return f"{what} {t.value:.2f} > reference {t.reference:.2f} ({p})"
    what = "output length" if t.name == "output_tokens" else "mean log-prob"
    side = ">" if t.value > t.reference else "<" if t.value < t.reference else "="
    return f"{what} median {t.value:.3g} {side} reference {t.reference:.3g} (KS D={t.effect:.2f}, {p})"


def llm_quality(
    reference: LLMReference,
    output_tokens: npt.ArrayLike,
    mean_logprob: npt.ArrayLike,
    empty: npt.ArrayLike,
    refusal: npt.ArrayLike,
    ttft_s: npt.ArrayLike,
    tpot_s: npt.ArrayLike,
    accepted: npt.ArrayLike | None = None,
    alpha: float = 0.01,
    min_samples: int = 30,
    min_effect: float = 0.05,
) -> LLMQualityResult:
    """Test a window of generator outputs against the reference (see the module docstring).

    Parameters
    ----------
    reference : LLMReference
    output_tokens : array_like, shape (m,)
        Output lengths in tokens (finite).
    mean_logprob, ttft_s, tpot_s : array_like, shape (m,)
        Mean token log-probability, time to first token and time per output token; NaN where unknown.
    empty, refusal : array_like of bool, shape (m,)
    accepted : array_like of bool, shape (k,), optional
        Accept/reject feedback joined to this window's outputs.
    alpha : float, optional
        Family-wise significance level (Bonferroni over the tests that ran).
    min_samples : int, optional
        Fewest values a test needs to run.
    min_effect : float, optional
        Smallest absolute rate difference or KS distance that counts.

    Returns
    -------
    LLMQualityResult

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.llm import build_llm_reference, llm_quality
    >>> rng = np.random.default_rng(0)
    >>> ref = build_llm_reference(rng.poisson(100, 500), rng.normal(-1, 0.2, 500),
    ...                           np.zeros(500, bool), rng.random(500) < 0.02)
    >>> nan = np.full(200, np.nan)
    >>> res = llm_quality(ref, rng.poisson(100, 200), rng.normal(-1, 0.2, 200),
    ...                   np.zeros(200, bool), rng.random(200) < 0.15, nan, nan)
    >>> res.drifted, res.findings
    (True, ('refusals 0.12 > reference 0.02 (p=6e-10)',))
    """
    if not (0.0 < alpha < 1.0):
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha}")
    if not (0.0 <= min_effect <= 1.0):
        raise StatisticsError(f"min_effect must be in [0, 1]; got {min_effect}")
    if min_samples < 1:
        raise StatisticsError(f"min_samples must be >= 1; got {min_samples}")
    tokens = _vector(output_tokens, "output_tokens", np.float64)
    m = tokens.shape[0]
    if not np.isfinite(tokens).all():
        raise StatisticsError("output_tokens contains non-finite values")
    logprob = _vector(mean_logprob, "mean_logprob", np.float64, m)
    if np.isinf(logprob).any():
        raise StatisticsError("mean_logprob contains infinite values (NaN marks a missing one)")
    is_empty: BoolArray = _vector(empty, "empty", np.bool_, m)
    is_ref: BoolArray = _vector(refusal, "refusal", np.bool_, m)
    ttft = _vector(ttft_s, "ttft_s", np.float64, m)
    tpot = _vector(tpot_s, "tpot_s", np.float64, m)

    # (name, n, value, reference, effect, p) of every test that can run
    raw: list[tuple[LLMTestName, int, float, float, float, float]] = []
    skipped: list[str] = []
    if accepted is not None and reference.acceptance_rate is not None:
        acc = _vector(accepted, "accepted", np.bool_)
        if acc.size >= min_samples:
            rate, ref = float(acc.mean()), reference.acceptance_rate
            p = stats.binomtest(int(acc.sum()), acc.size, ref, alternative="less").pvalue
            raw.append(("acceptance", acc.size, rate, ref, ref - rate, float(p)))
        else:
            skipped.append("acceptance")
    else:
        skipped.append("acceptance")
    finite_lp = logprob[np.isfinite(logprob)]
    samples: tuple[tuple[LLMTestName, FloatArray, FloatArray], ...] = (
        ("output_tokens", reference.output_tokens_sorted, tokens),
        ("mean_logprob", reference.mean_logprob_sorted, finite_lp),
    )
    for name, ref_sorted, cur in samples:
        if cur.size >= min_samples and ref_sorted.size >= 1:
            ks = ks_2samp_columns(ref_sorted[:, None], cur[:, None])
            d = float(ks.statistic[0])
            medians = float(np.median(cur)), float(np.median(ref_sorted))
            raw.append((name, cur.size, *medians, d, float(ks.p_value[0])))
        else:
            skipped.append(name)
    rates: tuple[tuple[LLMTestName, BoolArray, float], ...] = (
        ("empty", is_empty, reference.empty_rate),
        ("refusal", is_ref, reference.refusal_rate),
    )
    for name, flags, ref_rate in rates:
        if m >= min_samples:
            rate = float(flags.mean())
            p = stats.binomtest(int(flags.sum()), m, ref_rate, alternative="greater").pvalue
            raw.append((name, m, rate, ref_rate, rate - ref_rate, float(p)))
        else:
            skipped.append(name)

    tests: tuple[LLMTest, ...] = ()
    if raw:
        p_adj = adjust_p_values([r[5] for r in raw], "bonferroni")  # (T,)
        tests = tuple(
            LLMTest(name, n, value, ref, effect, p, float(pa), bool(pa < alpha and effect >= min_effect))
            for (name, n, value, ref, effect, p), pa in zip(raw, p_adj, strict=True)
        )
    return LLMQualityResult(
        n=m,
        tests=tests,
        skipped=tuple(skipped),
        ttft_s=_percentiles(ttft),
        tpot_s=_percentiles(tpot),
        findings=tuple(_finding(t) for t in tests if t.significant),
        output_tokens=_percentiles(tokens),
        mean_logprob=float(finite_lp.mean()) if finite_lp.size else math.nan,
    )
