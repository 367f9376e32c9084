"""Array coercion and validation shared by the detectors (private)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from detectors.errors import StatisticsError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def float_matrix(x: npt.ArrayLike, name: str) -> FloatArray:
    """Return ``x`` as a 2-D float64 array with at least one row and one column."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StatisticsError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 2:
        raise StatisticsError(f"{name} must be 2-D (rows, features); got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise StatisticsError(f"{name} must have at least one row and one feature; got shape {arr.shape}")
    return arr


def float_vector(x: npt.ArrayLike, name: str) -> FloatArray:
    """Return ``x`` as a non-empty 1-D float64 array of finite values."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StatisticsError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise StatisticsError(f"{name} must be a non-empty 1-D array; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise StatisticsError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def require_finite(x: FloatArray, name: str, feature_names: Sequence[str] | None = None) -> None:
    """Raise naming the features (columns) of the 2-D ``x`` that hold NaN or inf."""
    bad_counts = np.count_nonzero(~np.isfinite(x), axis=0)  # (F,)
    bad = np.flatnonzero(bad_counts)
    if bad.size == 0:
        return
    shown = [
        f"{feature_names[j]!r} (column {j}, {bad_counts[j]} values)"
        if feature_names is not None
        else f"column {j} ({bad_counts[j]} values)"
        for j in bad[:5]
    ]
    more = f" and {bad.size - 5} more" if bad.size > 5 else ""
    raise StatisticsError(f"{name} has non-finite values (NaN or inf) in feature {', '.join(shown)}{more}")


def class_indices(x: npt.ArrayLike, name: str) -> IntArray:
    """Return ``x`` as a 1-D int64 array of integer-valued class indices (range not checked)."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise StatisticsError(f"{name} must be a 1-D array of class indices; got shape {arr.shape}")
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.floating):
        raise StatisticsError(f"{name} must hold integer class indices; got dtype {arr.dtype}")
    if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
        raise StatisticsError(
            f"{name} must hold integer class indices; found non-integer or non-finite values"
        )
    return arr.astype(np.int64)


def readonly(x: FloatArray) -> FloatArray:
    """Mark a freshly created array read-only (results are immutable) and return it."""
    x.setflags(write=False)
    return x
