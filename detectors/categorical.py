"""Drift of categorical features: chi-squared homogeneity and Jensen–Shannon distance, all at once.

Each categorical feature ``c`` has reference levels ``L_c`` (sorted) with reference counts; a window is
given as integer codes (``-1`` = a value the reference never saw).  For every feature the reference and
current counts over ``L_c + ["other"]`` (``"other"`` has reference count 0) form a 2 x (L_c + 1)
contingency table, tested for homogeneity with the small-count pooling of
:func:`detectors.chi2.chi2_homogeneity`, and the Jensen–Shannon distance (base 2) of the two mixes is
the effect size:

    drifted_c = (p_adjusted_c < alpha) and (js_distance_c >= min_effect).

Features have different level counts; they are laid out as rows of one ``(C, L + 1)`` table with
padding cells masked out, so counting, testing and distances run without a loop over features.

A reference with proportions but no counts (written before counts were stored) is tested by goodness
of fit against its proportions instead (``"other"`` floored by :data:`detectors.chi2.PROB_FLOOR`); that
test takes the proportions as exact and alarms somewhat more often than ``alpha`` on undrifted data
(see :mod:`detectors.chi2`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
import numpy.typing as npt

from detectors._arrays import BoolArray, FloatArray, IntArray, readonly
from detectors._verdict import PerFeatureVerdict
from detectors.chi2 import (
    Chi2Rows,
    Chi2Test,
    chi2_goodness_of_fit_rows,
    chi2_homogeneity_rows,
    smallest_p_value_rows,
)
from detectors.errors import StatisticsError
from detectors.multiple_testing import Correction, adjust_p_values
from detectors.psi import jensen_shannon

__all__ = [
    "CategoricalDrift",
    "CategoricalDriftResult",
    "CategoricalReference",
    "CategoricalTests",
    "build_categorical_reference",
    "categorical_drift",
    "categorical_smallest_p_value",
    "categorical_tests",
    "decide_categorical",
    "encode_categories",
]


@dataclass(frozen=True, eq=False)
class CategoricalReference:
    """Reference levels, counts and proportions of C categorical features.

    Attributes
    ----------
    feature_names : tuple of str
        C distinct names.
    levels : tuple of tuple of str
        Sorted distinct reference values of each feature; code ``k`` means ``levels[c][k]``.
    proportions : ndarray, shape (C, L)
        Reference share of each level, ``L = max(len(levels[c]))``; padding cells are 0, rows sum to 1.
        Replaced by ``counts / counts.sum(axis=1)`` when counts are given (they must agree).
    counts : ndarray of int64, shape (C, L), or None
        Reference count of each level (padding cells 0).  None only for references saved before counts
        were stored; :func:`categorical_drift` then falls back to goodness of fit (module docstring).
    expected : ndarray, shape (C, L + 1)
        Derived: ``proportions`` plus a last "other" column of 0.
    valid : ndarray of bool, shape (C, L + 1)
        Derived: real level cells and the "other" cell.

    Examples
    --------
    >>> from detectors.categorical import build_categorical_reference
    >>> ref = build_categorical_reference([["a", "x"], ["b", "x"], ["a", "y"], ["a", "x"]], ["s", "t"])
    >>> ref.levels, ref.counts
    ((('a', 'b'), ('x', 'y')), array([[3, 1],
           [3, 1]]))
    >>> ref.proportions
    array([[0.75, 0.25],
           [0.75, 0.25]])
    """

    feature_names: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    proportions: FloatArray
    counts: IntArray | None = None
    expected: FloatArray = field(init=False, repr=False)
    valid: BoolArray = field(init=False, repr=False)
    _vocabulary: npt.NDArray[np.str_] = field(init=False, repr=False)
    _codes: IntArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n_features = len(self.feature_names)
        if n_features < 1 or len(set(self.feature_names)) != n_features:
            raise StatisticsError(f"feature_names must be distinct and non-empty; got {self.feature_names}")
        if len(self.levels) != n_features:
            raise StatisticsError(f"levels has {len(self.levels)} entries but there are {n_features} features")
        counts = np.array([len(lv) for lv in self.levels], dtype=np.int64)  # (C,)
        if (counts < 1).any() or any(list(lv) != sorted(set(lv)) for lv in self.levels):
            raise StatisticsError("each feature needs at least one level, sorted and distinct")
        width = int(counts.max())
        props = np.asarray(self.proportions, dtype=np.float64)
        if props.shape != (n_features, width):
            raise StatisticsError(f"proportions has shape {props.shape}; expected ({n_features}, {width})")
        real = np.arange(width) < counts[:, None]  # (C, L)
        if (props < 0).any() or (props[~real] != 0).any() or not np.allclose(props.sum(axis=1), 1.0):
            raise StatisticsError("proportions must be non-negative, 0 on padding, and sum to 1 per feature")
        if self.counts is not None:
            props = self._store_counts(np.asarray(self.counts), real, props)
        object.__setattr__(self, "expected", readonly(np.concatenate([props, np.zeros((n_features, 1))], axis=1)))
        object.__setattr__(self, "valid", np.concatenate([real, np.ones((n_features, 1), dtype=np.bool_)], axis=1))
        # Encoding table: one sorted vocabulary of every level of every feature, and per feature the
        # code of each vocabulary entry (-1 where that feature lacks it; last column: not in vocabulary).
        vocabulary = np.unique(np.array([v for lv in self.levels for v in lv], dtype=np.str_))  # (V,)
        table = np.full((n_features, vocabulary.size + 1), -1, dtype=np.int64)  # (C, V+1)
        flat_levels = np.array([v for lv in self.levels for v in lv], dtype=np.str_)
        owner = np.repeat(np.arange(n_features), counts)
        table[owner, np.searchsorted(vocabulary, flat_levels)] = np.concatenate([np.arange(k) for k in counts])
        object.__setattr__(self, "_vocabulary", vocabulary)
        object.__setattr__(self, "_codes", table)

    def _store_counts(self, counts: npt.NDArray[np.generic], real: BoolArray, props: FloatArray) -> FloatArray:
        """Validate ``counts`` (C, L), store them read-only as int64 and return the proportions they give."""
        if counts.shape != real.shape:
            raise StatisticsError(f"counts has shape {counts.shape}; expected {real.shape}")
        if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
            raise StatisticsError(f"counts must be integer counts; got dtype {counts.dtype}")
        values = counts.astype(np.float64)  # (C, L)
        if not np.isfinite(values).all() or (values < 0).any() or (values != np.round(values)).any():
            raise StatisticsError("counts must be non-negative integers")
        if (values[~real] != 0).any() or (values.sum(axis=1) <= 0).any():
            raise StatisticsError("counts must be 0 on padding and have a positive total per feature")
        exact = values.astype(np.int64)
        exact.setflags(write=False)
        derived = readonly(exact / exact.sum(axis=1, keepdims=True))  # (C, L)
        if not np.allclose(props, derived, rtol=0, atol=1e-9):
            raise StatisticsError("proportions disagree with counts / counts.sum(axis=1)")
        object.__setattr__(self, "counts", exact)
        object.__setattr__(self, "proportions", derived)
        return derived

    @property
    def n_levels(self) -> IntArray:
        """Number of reference levels per feature, shape (C,)."""
        return np.array([len(lv) for lv in self.levels], dtype=np.int64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (loadable with ``allow_pickle=False``); see :meth:`from_arrays`.

        Keys: ``feature_names`` (C,), ``levels`` (C, L) padded with ``""``, ``n_levels`` (C,),
        ``proportions`` (C, L) and, when known, ``counts`` (C, L) int64.
        """
        width = self.proportions.shape[1]
        levels = np.array([list(lv) + [""] * (width - len(lv)) for lv in self.levels], dtype=np.str_)  # (C, L)
        arrays = {
            "feature_names": np.array(self.feature_names, dtype=np.str_),
            "levels": levels,
            "n_levels": self.n_levels,
            "proportions": np.asarray(self.proportions, dtype=np.float64),
        }
        if self.counts is not None:
            arrays["counts"] = np.asarray(self.counts, dtype=np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> CategoricalReference:
        """Rebuild from :meth:`to_arrays` output (or an ``np.load`` of it).

        Needs ``feature_names``, ``levels``, ``n_levels`` and ``counts`` or ``proportions`` (or both);
        arrays saved before counts were stored (no ``counts``) give a reference without counts.

        Examples
        --------
        >>> from detectors.categorical import CategoricalReference, build_categorical_reference
        >>> ref = build_categorical_reference([["a"], ["b"], ["b"]], ["s"])
        >>> CategoricalReference.from_arrays(ref.to_arrays()).counts
        array([[1, 2]])
        >>> old = {k: v for k, v in ref.to_arrays().items() if k != "counts"}
        >>> CategoricalReference.from_arrays(old).counts is None
        True
        """
        try:
            names, levels, n_levels = (arrays[k] for k in ("feature_names", "levels", "n_levels"))
        except KeyError as exc:
            raise StatisticsError(f"categorical reference arrays lack {exc}") from exc
        counts = np.array(arrays["counts"]) if "counts" in arrays else None
        if "proportions" in arrays:
            props = np.array(arrays["proportions"], dtype=np.float64)
        elif counts is not None:
            props = counts / counts.sum(axis=1, keepdims=True)
        else:
            raise StatisticsError("categorical reference arrays lack both 'counts' and 'proportions'")
        return cls(
            feature_names=tuple(str(v) for v in names),
            levels=tuple(tuple(str(v) for v in row[: int(k)]) for row, k in zip(levels, n_levels, strict=True)),
            proportions=readonly(props),
            counts=counts,
        )


def build_categorical_reference(values: npt.ArrayLike, feature_names: Sequence[str]) -> CategoricalReference:
    """Levels, counts and proportions of each column of ``values`` (n, C) of strings.

    Examples
    --------
    >>> from detectors.categorical import build_categorical_reference
    >>> ref = build_categorical_reference([["a"], ["b"], ["b"], ["b"]], ["s"])
    >>> ref.counts, ref.proportions
    (array([[1, 3]]), array([[0.25, 0.75]]))
    """
    vals = np.asarray(values, dtype=np.str_)
    names = tuple(feature_names)
    if vals.ndim != 2 or vals.shape[0] < 1 or vals.shape[1] != len(names):
        raise StatisticsError(f"values must be (rows, {len(names)} features) of strings; got shape {vals.shape}")
    vocabulary, ids = np.unique(vals, return_inverse=True)  # ids (n*C,) into the shared vocabulary
    n_features, size = vals.shape[1], vocabulary.size
    cells = ids.reshape(vals.shape) + np.arange(n_features) * size  # (n, C): feature c, vocabulary entry v
    counts = np.bincount(cells.ravel(), minlength=n_features * size).reshape(n_features, size)  # (C, V)
    present = counts > 0
    width = int(present.sum(axis=1).max())
    # Left-align each feature's present levels (vocabulary order = sorted) into a (C, L) table.
    slot = np.cumsum(present, axis=1) - 1  # (C, V) column of each present level
    level_counts = np.zeros((n_features, width), dtype=np.int64)  # (C, L)
    rows, cols = np.nonzero(present)
    level_counts[rows, slot[rows, cols]] = counts[rows, cols]
    levels = tuple(tuple(str(v) for v in vocabulary[present[c]]) for c in range(n_features))
    return CategoricalReference(names, levels, readonly(level_counts / vals.shape[0]), level_counts)


def encode_categories(reference: CategoricalReference, values: npt.ArrayLike) -> IntArray:
    """Integer codes (m, C) of string values (m, C); ``-1`` for values the reference never saw.

    Examples
    --------
    >>> from detectors.categorical import build_categorical_reference, encode_categories
    >>> ref = build_categorical_reference([["a", "x"], ["b", "y"]], ["s", "t"])
    >>> encode_categories(ref, [["b", "x"], ["zzz", "a"]])
    array([[ 1,  0],
           [-1, -1]])
    """
    vals = np.asarray(values, dtype=np.str_)
    n_features = len(reference.feature_names)
    if vals.ndim != 2 or vals.shape[1] != n_features:
        raise StatisticsError(f"values must be (rows, {n_features} features); got shape {vals.shape}")
    vocab = reference._vocabulary
    pos = np.searchsorted(vocab, vals)  # (m, C)
    found = vocab[np.minimum(pos, vocab.size - 1)] == vals
    entry = np.where(found, pos, vocab.size)  # (m, C), V = "not in the vocabulary"
    codes: IntArray = reference._codes[np.arange(n_features), entry]  # (m, C)
    return codes


@dataclass(frozen=True)
class CategoricalDrift:
    """Drift statistics of one categorical feature (NaN statistics when the window was insufficient)."""

    name: str
    chi2: float
    p_value: float
    p_adjusted: float
    dof: int
    js_distance: float
    drifted: bool


@dataclass(frozen=True)
class CategoricalDriftResult(PerFeatureVerdict):
    """Per-feature categorical drift of one window against the reference.

    ``test`` is ``"homogeneity"``, or ``"goodness_of_fit"`` for a reference without counts.
    """

    features: tuple[CategoricalDrift, ...]
    n_current: int
    alpha: float
    correction: str
    min_effect: float
    insufficient: bool
    test: Chi2Test = "homogeneity"



@dataclass(frozen=True, eq=False)
class CategoricalTests:
    """Raw (unadjusted) per-feature statistics of :func:`categorical_tests`."""

    chi2: Chi2Rows
    js_distance: FloatArray
    counts: IntArray
    n_current: int
    test: Chi2Test = "homogeneity"


def categorical_tests(reference: CategoricalReference, codes: npt.ArrayLike) -> CategoricalTests:
    """Count the codes (m, C) and test every feature; no decision, no correction.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.categorical import build_categorical_reference, categorical_tests
    >>> ref = build_categorical_reference([["a"], ["b"]], ["s"])
    >>> categorical_tests(ref, np.array([[0]] * 60 + [[1]] * 40 + [[-1]] * 5)).counts
    array([[60, 40,  5]])
    """
    arr = np.asarray(codes)
    n_features = len(reference.feature_names)
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise StatisticsError(f"codes must be (rows, {n_features} features); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise StatisticsError(f"codes must be integers; got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    width = reference.expected.shape[1]  # L + 1, last column = "other"
    bad = (arr < -1) | (arr >= reference.n_levels)  # (m, C)
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        raise StatisticsError(f"codes of feature {reference.feature_names[col]!r} must be in "
                              f"[-1, {reference.n_levels[col]}); found {np.unique(arr[bad[:, col], col])[:5].tolist()}")
    cells = np.where(arr < 0, width - 1, arr) + np.arange(n_features) * width  # (m, C)
    counts = np.bincount(cells.ravel(), minlength=n_features * width).reshape(n_features, width)  # (C, L+1)
    js = (jensen_shannon(reference.expected, counts) if arr.shape[0] > 0
          else np.full(n_features, math.nan))  # (C,)
    if reference.counts is None:  # a reference saved without counts: goodness of fit to its proportions
        chi2 = chi2_goodness_of_fit_rows(counts, reference.expected, reference.valid)
        return CategoricalTests(chi2, js, counts, int(arr.shape[0]), "goodness_of_fit")
    # Row c is the 2 x (L_c + 1) table [reference counts; current counts]; "other" has reference count 0.
    reference_counts = np.concatenate([reference.counts, np.zeros((n_features, 1), np.int64)], axis=1)  # (C, L+1)
    chi2 = chi2_homogeneity_rows(reference_counts, counts, reference.valid)
    return CategoricalTests(chi2, js, counts, int(arr.shape[0]), "homogeneity")


def categorical_smallest_p_value(reference: CategoricalReference, m: int) -> FloatArray:
    """Smallest p-value each feature's chi-squared test could give on ``m`` rows; shape (C,).

    The most extreme window puts every row in one level (or in "other"); see
    :func:`detectors.chi2.smallest_p_value_rows`.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.categorical import build_categorical_reference, categorical_smallest_p_value
    >>> ref = build_categorical_reference(np.array([["a"], ["b"]] * 500), ["s"])
    >>> float(categorical_smallest_p_value(ref, 2)[0]), bool(categorical_smallest_p_value(ref, 50)[0] < 1e-6)
    (1.0, True)
    """
    n_features = len(reference.feature_names)
    if reference.counts is None:
        return smallest_p_value_rows(reference.expected, m, reference.valid, test="goodness_of_fit")
    counts = np.concatenate([reference.counts, np.zeros((n_features, 1), np.int64)], axis=1)  # (C, L+1)
    return smallest_p_value_rows(counts, m, reference.valid)


def decide_categorical(
    reference: CategoricalReference,
    tests: CategoricalTests,
    p_adjusted: FloatArray,
    alpha: float,
    correction: str,
    min_effect: float,
    insufficient: bool,
) -> CategoricalDriftResult:
    """Turn raw tests and (possibly jointly) adjusted p-values into a :class:`CategoricalDriftResult`."""
    names = reference.feature_names
    if insufficient:
        nan = math.nan
        features = tuple(CategoricalDrift(name, nan, nan, nan, 0, nan, False) for name in names)
    else:
        drifted = (p_adjusted < alpha) & (tests.js_distance >= min_effect)  # (C,)
        features = tuple(
            CategoricalDrift(name, float(s), float(p), float(pa), int(d), float(j), bool(flag))
            for name, s, p, pa, d, j, flag in zip(names, tests.chi2.statistic, tests.chi2.p_value, p_adjusted,
                                                 tests.chi2.dof, tests.js_distance, drifted, strict=True)
        )
    return CategoricalDriftResult(features, tests.n_current, float(alpha), str(correction), float(min_effect),
                                  insufficient, tests.test)


def categorical_drift(
    reference: CategoricalReference,
    codes: npt.ArrayLike,
    alpha: float = 0.01,
    correction: Correction = "bonferroni",
    min_effect: float = 0.02,
    min_samples: int = 1,
) -> CategoricalDriftResult:
    """Test every categorical feature of a window (codes from :func:`encode_categories`) for drift.

    Parameters
    ----------
    reference : CategoricalReference
    codes : array_like of int, shape (m, C)
        Level codes, ``-1`` for values unseen in the reference (counted in an "other" bin).
    alpha : float, optional
        Significance level for the adjusted p-values (default 0.01).
    correction : {"bonferroni", "bh"}, optional
        Multiple-testing correction across the C features (default Bonferroni).
    min_effect : float, optional
        Floor on the Jensen–Shannon distance (default 0.02).
    min_samples : int, optional
        An extra floor (default 1): with fewer rows the result is ``insufficient``.  It is also
        insufficient when no feature's test could reach ``alpha / C`` whatever the window held
        (:func:`categorical_smallest_p_value`).

    Returns
    -------
    CategoricalDriftResult

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.categorical import build_categorical_reference, categorical_drift
    >>> ref = build_categorical_reference(np.array([["a"], ["b"]] * 50), ["s"])
    >>> categorical_drift(ref, np.array([[0]] * 80 + [[1]] * 20)).drifted_features
    ('s',)
    """
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"alpha must be in (0, 1); got {alpha!r}")
    if not 0.0 <= min_effect <= 1.0:
        raise StatisticsError(f"min_effect must be in [0, 1]; got {min_effect!r}")
    if correction not in get_args(Correction):
        raise StatisticsError(f"correction must be one of {get_args(Correction)}; got {correction!r}")
    tests = categorical_tests(reference, codes)
    level = alpha / len(reference.feature_names)
    insufficient = tests.n_current < min_samples or bool(
        (categorical_smallest_p_value(reference, tests.n_current) > level).all())
    p_adjusted = adjust_p_values(tests.chi2.p_value, correction)
    return decide_categorical(reference, tests, p_adjusted, alpha, correction, min_effect, insufficient)
