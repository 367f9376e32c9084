"""The reference sample a model's live traffic is compared with (the "profile" arrays)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors._arrays import FloatArray, class_indices, float_matrix, readonly, require_finite
from detectors.errors import StatisticsError
from detectors.ks import sort_reference
from detectors.psi import bin_proportions, quantile_edges

__all__ = ["ReferenceSample", "build_reference"]


@dataclass(frozen=True, eq=False)
class ReferenceSample:
    """Everything the detectors need from the training/reference data.

    Attributes
    ----------
    feature_names : tuple of str
        Column names, in column order (F of them).
    sorted_values : ndarray, shape (n, F)
        Reference rows (possibly subsampled), each column sorted ascending.
    edges : ndarray, shape (F, bins - 1)
        Inner quantile bin edges per feature.
    proportions : ndarray, shape (F, bins)
        Reference proportion per bin (rows sum to 1).
    class_labels : tuple of str
        Names of the predicted classes (K of them); empty when unknown.
    class_priors : ndarray of shape (K,) or None
        Reference share of each predicted class, or None without reference predictions.

    Notes
    -----
    Shapes are checked on construction (a :class:`StatisticsError` names the mismatch), so a profile
    loaded from disk is validated too.  Equality is identity (``eq=False``): arrays have no
    single truth value.
    """

    feature_names: tuple[str, ...]
    sorted_values: FloatArray
    edges: FloatArray
    proportions: FloatArray
    class_labels: tuple[str, ...]
    class_priors: FloatArray | None

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
        Finite reference feature values.
    feature_names : sequence of str
        F distinct names, in column order.
    predictions : array_like of int, shape (P,), optional
        Predicted class indices in ``[0, K)`` on reference traffic; all P of them are used for the
        priors (they need not be aligned with the rows of ``x``).
    class_labels : sequence of str, optional
        K class names; when None, ``str(i)`` for ``i in range(max(predictions) + 1)``.
    bins : int, optional
        Quantile bins per feature for PSI / JS (default 10).
    max_rows : int, optional
        Rows kept: larger inputs are subsampled without replacement (default 20000).
    seed : int, optional
        Seed of the subsampling generator (default 0).

    Returns
    -------
    ReferenceSample
        With read-only arrays.  ``class_priors = counts / P``, or None without predictions.

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
    >>> ref.class_labels, ref.class_priors
    (('0', '1'), array([0.25, 0.75]))
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
    require_finite(values, "reference x", names)

    if values.shape[0] > max_rows:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(values.shape[0], size=max_rows, replace=False))
        values = values[keep]
    sorted_values = sort_reference(values)  # (n, F)
    edges = quantile_edges(sorted_values, bins)  # (F, bins-1)
    proportions = bin_proportions(sorted_values, edges)  # (F, bins)

    labels: tuple[str, ...] = tuple(class_labels) if class_labels is not None else ()
    priors: FloatArray | None = None
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
        priors = readonly(np.bincount(pred, minlength=n_classes) / pred.size)  # (K,)

    return ReferenceSample(
        feature_names=names,
        sorted_values=readonly(sorted_values),
        edges=readonly(edges),
        proportions=readonly(proportions),
        class_labels=labels,
        class_priors=priors,
    )
