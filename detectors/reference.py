"""The reference sample a model's live traffic is compared with (the "profile" arrays)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors._arrays import FloatArray, IntArray, class_indices, float_matrix, readonly, require_finite
from detectors.errors import StatisticsError
from detectors.ks import KSIndex, sort_reference
from detectors.psi import bin_proportions, quantile_edges
from detectors.wasserstein import W1Index

__all__ = ["ReferenceSample", "build_reference"]


@dataclass(frozen=True, eq=False)
class ReferenceSample:
    """Everything the detectors need from the training/reference data.

    Attributes
    ----------
    feature_names : tuple of str
        Column names, in column order (F of them).
    sorted_values : ndarray, shape (n, F)
        Each column holds that feature's present (finite) reference values, possibly subsampled, sorted
        ascending and padded at the end with NaN: columns are ragged when features have missing values
        (``present[j]`` values in column ``j``, ``n = max(present)``).
    edges : ndarray, shape (F, bins - 1)
        Inner quantile bin edges per feature.
    proportions : ndarray, shape (F, bins)
        Reference proportion per bin (rows sum to 1).
    class_labels : tuple of str
        Names of the predicted classes (K of them); empty when unknown.
    class_priors : ndarray of shape (K,) or None
        Reference share of each predicted class, or None without reference predictions.  Derived as
        ``class_counts / class_counts.sum()`` when counts are given (priors given as well must agree).
    class_counts : ndarray of int64, shape (K,), or None
        Reference count of each predicted class.  :func:`detectors.drift.prediction_drift` needs them
        for its two-sample homogeneity test; a profile that has only ``class_priors`` (written before
        counts were stored) falls back to goodness of fit against the priors, which treats them as exact
        and alarms somewhat more often than ``alpha`` on undrifted traffic.
    missing_counts : ndarray of int64, shape (F,), or None
        Missing (NaN or infinite) values of each feature in the ``n_rows`` reference rows, counted before
        any subsampling; None (a profile written before missing values were kept) means 0.
    n_rows : int or None
        Reference rows the missing counts are out of; None means ``sorted_values.shape[0]``.
    present, complete
        Derived: present values per column (F,), and whether every column is full (no NaN padding).
    ks_index, w1_index, std
        Derived on construction from ``sorted_values`` (never stored): the search index of the KS
        test, the prefix sums of the Wasserstein distance, and the per-feature standard deviation
        (ddof 0, over present values) that normalises it.  For a ragged column the shared index holds
        the column padded with its largest value and is not used for that feature: :meth:`column_index`
        gives the exact one-feature index of its present values.

    Notes
    -----
    Shapes, finiteness and sortedness are checked on construction (a :class:`StatisticsError` names
    the problem), so a profile loaded from disk is validated too.  Equality is identity
    (``eq=False``): arrays have no single truth value.
    """

    feature_names: tuple[str, ...]
    sorted_values: FloatArray
    edges: FloatArray
    proportions: FloatArray
    class_labels: tuple[str, ...]
    class_priors: FloatArray | None = None
    class_counts: IntArray | None = None
    missing_counts: IntArray | None = None
    n_rows: int | None = None
    present: IntArray = field(init=False, repr=False)
    complete: bool = field(init=False, repr=False)
    _columns: dict[int, tuple[KSIndex, W1Index]] = field(default_factory=dict, init=False, repr=False)
    ks_index: KSIndex = field(init=False, repr=False)
    w1_index: W1Index = field(init=False, repr=False)
    std: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n_features = len(self.feature_names)
        sv, edges, props = self.sorted_values, self.edges, self.proportions
        if sv.ndim != 2 or sv.shape[1] != n_features or sv.shape[0] < 1:
            raise StatisticsError(
                f"sorted_values has shape {sv.shape} but there are {n_features} feature names"
            )
        if edges.ndim != 2 or edges.shape[0] != n_features:
            raise StatisticsError(f"edges has shape {edges.shape}; expected ({n_features}, bins-1)")
        if props.shape != (n_features, edges.shape[1] + 1):
            raise StatisticsError(f"proportions has shape {props.shape}; expected "
                                  f"({n_features}, {edges.shape[1] + 1})")
        if self.class_priors is not None and self.class_priors.shape != (len(self.class_labels),):
            raise StatisticsError(f"class_priors has shape {self.class_priors.shape} but there are "
                                  f"{len(self.class_labels)} class labels")
        if self.class_counts is not None:
            self._derive_priors(np.asarray(self.class_counts))
        sv = np.asarray(sv, dtype=np.float64)
        absent = np.isnan(sv)  # (n, F) padding: must be a suffix of each column
        present = (sv.shape[0] - absent.sum(axis=0)).astype(np.int64)  # (F,)
        if (absent[:-1] & ~absent[1:]).any():
            raise StatisticsError("sorted_values may hold NaN only as padding at the end of a column")
        if (present < 1).any():
            raise StatisticsError(f"feature(s) {[self.feature_names[j] for j in np.flatnonzero(present < 1)[:5]]} "
                                  "have no present reference value")
        require_finite(np.where(absent, 0.0, sv), "sorted_values", self.feature_names)
        filled = np.where(absent, sv[present - 1, np.arange(n_features)], sv)  # (n, F) pad with the column max
        unsorted = np.flatnonzero(np.any(filled[1:] < filled[:-1], axis=0))
        if unsorted.size:
            raise StatisticsError(f"sorted_values is not sorted in feature(s) "
                                  f"{[self.feature_names[j] for j in unsorted[:5]]}")
        self._check_missing(present)
        ks_index = KSIndex.from_sorted(filled)
        std = np.array([filled[: present[j], j].std() for j in range(n_features)]) if absent.any() \
            else ks_index.columns.std(axis=1)  # (F,)
        # derived, not stored: a frozen dataclass sets its own fields through object.__setattr__
        present.setflags(write=False)
        object.__setattr__(self, "present", present)
        object.__setattr__(self, "complete", not absent.any())
        object.__setattr__(self, "ks_index", ks_index)
        object.__setattr__(self, "w1_index", W1Index.from_columns(ks_index.columns))
        object.__setattr__(self, "std", readonly(std))

    def _check_missing(self, present: IntArray) -> None:
        """Validate ``missing_counts`` / ``n_rows`` and store them (int64, read-only)."""
        n_features = len(self.feature_names)
        rows = self.sorted_values.shape[0] if self.n_rows is None else self.n_rows
        if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 1:
            raise StatisticsError(f"n_rows must be a positive integer; got {self.n_rows!r}")
        missing = np.zeros(n_features, np.int64) if self.missing_counts is None else np.asarray(self.missing_counts)
        if missing.shape != (n_features,) or not np.issubdtype(missing.dtype, np.integer):
            raise StatisticsError(f"missing_counts must be {n_features} integer counts; got {missing!r}")
        if (missing < 0).any() or (missing >= rows).any():
            raise StatisticsError(f"missing_counts must be in [0, n_rows = {rows}); got {missing.tolist()}")
        exact = missing.astype(np.int64)
        exact.setflags(write=False)
        object.__setattr__(self, "missing_counts", exact)
        object.__setattr__(self, "n_rows", int(rows))

    @property
    def missing_rates(self) -> FloatArray:
        """Share of missing values of each feature in the reference rows, shape (F,)."""
        assert self.missing_counts is not None and self.n_rows is not None  # set in __post_init__
        return readonly(self.missing_counts / self.n_rows)

    def column_index(self, j: int) -> tuple[KSIndex, W1Index]:
        """The exact KS and Wasserstein indexes of feature ``j``'s present values alone (memoised)."""
        cache = self._columns
        if j not in cache:
            values = np.ascontiguousarray(self.sorted_values[: self.present[j], j : j + 1])  # (n_j, 1)
            index = KSIndex.from_sorted(values)
            cache[j] = (index, W1Index.from_columns(index.columns))
        return cache[j]

    def _derive_priors(self, counts: npt.NDArray[np.generic]) -> None:
        """Validate ``class_counts``, store them as read-only int64 and set ``class_priors`` from them."""
        n_classes = len(self.class_labels)
        if counts.shape != (n_classes,):
            raise StatisticsError(f"class_counts has shape {counts.shape} but there are {n_classes} class labels")
        if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
            raise StatisticsError(f"class_counts must be integer counts; got dtype {counts.dtype}")
        values = counts.astype(np.float64)  # (K,)
        if not np.isfinite(values).all() or (values < 0).any() or (values != np.round(values)).any():
            raise StatisticsError("class_counts must be non-negative integers")
        if values.sum() <= 0:
            raise StatisticsError("class_counts must have a positive total")
        exact = values.astype(np.int64)  # (K,)
        exact.setflags(write=False)
        priors = readonly(exact / exact.sum())  # (K,)
        if self.class_priors is not None and not np.allclose(self.class_priors, priors, rtol=0, atol=1e-9):
            raise StatisticsError("class_priors disagree with class_counts / class_counts.sum()")
        object.__setattr__(self, "class_counts", exact)
        object.__setattr__(self, "class_priors", priors)


def build_reference(
    x: npt.ArrayLike,
    feature_names: Sequence[str],
    predictions: npt.ArrayLike | None = None,
    class_labels: Sequence[str] | None = None,
    bins: int = 10,
    max_rows: int = 20000,
    seed: int = 0,
) -> ReferenceSample:
    """Build a :class:`ReferenceSample` from reference inputs (and optionally predictions).

    Parameters
    ----------
    x : array_like, shape (N, F)
        Reference feature values; NaN (or infinite) cells are missing.  Each feature keeps its own
        present values (no row is dropped because another feature is missing) and its missing count.
    feature_names : sequence of str
        F distinct names, in column order.
    predictions : array_like of int, shape (P,), optional
        Predicted class indices in ``[0, K)`` on reference traffic; all P of them are counted (they
        need not be aligned with the rows of ``x``, nor subsampled with them).
    class_labels : sequence of str, optional
        K class names; when None, ``str(i)`` for ``i in range(max(predictions) + 1)``.
    bins : int, optional
        Quantile bins per feature for PSI / JS (default 10).
    max_rows : int, optional
        Values kept per feature: larger inputs are subsampled without replacement (default 20000); without
        missing values the same rows are kept for every feature.
    seed : int, optional
        Seed of the subsampling generator (default 0).

    Returns
    -------
    ReferenceSample
        With read-only arrays.  ``class_counts`` (int64) and ``class_priors = class_counts / P``, or
        both None without predictions.

    Raises
    ------
    StatisticsError
        Naming the problem: shape mismatch, non-finite feature, bad class index, ...

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.reference import build_reference
    >>> x = np.random.default_rng(0).normal(size=(500, 2))
    >>> ref = build_reference(x, ["a", "b"], predictions=[0, 1, 1, 1], bins=4)
    >>> ref.sorted_values.shape, ref.edges.shape, ref.proportions.shape
    ((500, 2), (2, 3), (2, 4))
    >>> ref.class_labels, ref.class_counts, ref.class_priors
    (('0', '1'), array([1, 3]), array([0.25, 0.75]))
    """
    values = float_matrix(x, "reference x")
    names = tuple(feature_names)
    if any(not isinstance(name, str) or not name for name in names):
        raise StatisticsError("feature_names must be non-empty strings")
    if len(names) != values.shape[1]:
        raise StatisticsError(f"x has {values.shape[1]} features but {len(names)} feature names were given")
    if len(set(names)) != len(names):
        dup = sorted({name for name in names if names.count(name) > 1})
        raise StatisticsError(f"feature_names must be distinct; repeated: {dup}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int | np.integer) or max_rows < 1:
        raise StatisticsError(f"max_rows must be a positive integer; got {max_rows!r}")
    finite = np.isfinite(values)  # (N, F)
    n_rows = int(values.shape[0])
    missing = (n_rows - finite.sum(axis=0)).astype(np.int64)  # (F,)
    if (missing == n_rows).any():
        empty = [names[j] for j in np.flatnonzero(missing == n_rows)[:5]]
        raise StatisticsError(f"reference x has no finite value in feature(s) {empty}")
    if not missing.any():
        if n_rows > max_rows:
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(n_rows, size=max_rows, replace=False))
            values = values[keep]
        sorted_values = sort_reference(values)  # (n, F)
        edges = quantile_edges(sorted_values, bins)  # (F, bins-1)
        proportions = bin_proportions(sorted_values, edges)  # (F, bins)
    else:
        sorted_values, edges, proportions = _ragged(values, finite, bins, max_rows, seed)

    labels: tuple[str, ...] = tuple(class_labels) if class_labels is not None else ()
    counts: IntArray | None = None
    if predictions is not None:
        pred = class_indices(predictions, "predictions")
        if pred.size == 0:
            raise StatisticsError("predictions must not be empty")
        if class_labels is None:
            if pred.min() < 0:
                raise StatisticsError(f"predictions must be >= 0; found {int(pred.min())}")
            labels = tuple(str(i) for i in range(int(pred.max()) + 1))
        n_classes = len(labels)
        outside = (pred < 0) | (pred >= n_classes)
        if outside.any():
            raise StatisticsError(f"predictions must be class indices in [0, {n_classes}); found "
                                  f"{np.unique(pred[outside])[:5].tolist()}")
        counts = np.bincount(pred, minlength=n_classes)  # (K,)

    return ReferenceSample(
        feature_names=names,
        sorted_values=readonly(sorted_values),
        edges=readonly(edges),
        proportions=readonly(proportions),
        class_labels=labels,
        class_counts=counts,
        missing_counts=missing,
        n_rows=n_rows,
    )


def _ragged(values: FloatArray, finite: npt.NDArray[np.bool_], bins: int, max_rows: int,
            seed: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Sorted present values per feature (NaN-padded), their quantile edges and bin proportions.

    A loop over features, run once per profile: each feature has its own present values and sample size.
    """
    rng = np.random.default_rng(seed)
    columns = []
    for j in range(values.shape[1]):
        column = values[finite[:, j], j]  # (N_j,)
        if column.size > max_rows:
            column = column[np.sort(rng.choice(column.size, size=max_rows, replace=False))]
        columns.append(np.sort(column))
    width = max(c.size for c in columns)
    sorted_values = np.full((width, len(columns)), np.nan)  # (n, F) NaN padding last
    for j, column in enumerate(columns):
        sorted_values[: column.size, j] = column
    edges = np.concatenate([quantile_edges(c[:, None], bins) for c in columns])  # (F, bins-1)
    proportions = np.concatenate([bin_proportions(c[:, None], e[None, :]) for c, e in zip(columns, edges,
                                                                                           strict=True)])  # (F, B)
    return sorted_values, edges, proportions
