"""Data files for ``inferwatch drift`` and ``inferwatch baseline``: ``.npz`` and ``.csv``.

* ``.npz``: a 2-D float array ``X`` (rows x features), optional ``feature_names`` (strings) and optional
  ``predictions`` (integer class per row). Read without pickle.
* ``.csv``: a header row of feature names, then numeric rows. A column named ``prediction`` holds integer
  predicted classes. Empty cells and ``nan`` read as NaN (and are excluded, counted, by the detectors).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.errors import DataError

PREDICTION_COLUMN = "prediction"


@dataclass(frozen=True)
class Table:
    x: np.ndarray  # (n, F) float64
    feature_names: tuple[str, ...]
    predictions: np.ndarray | None  # (n,) int64


def read_table(path: str | Path) -> Table:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _read_npz(p)
    if suffix == ".csv":
        return _read_csv(p)
    raise DataError(f"{p}: unsupported file type {suffix!r}; use .npz (array X) or .csv (header row)")


def _read_npz(p: Path) -> Table:
    try:
        with np.load(p, allow_pickle=False) as data:
            if "X" not in data.files:
                raise DataError(f"{p}: no array named 'X' (found: {', '.join(data.files) or 'none'})")
            x = np.asarray(data["X"], dtype=np.float64)
            names = tuple(str(n) for n in data["feature_names"]) if "feature_names" in data.files else None
            predictions = data["predictions"] if "predictions" in data.files else None
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: not a readable .npz file: {exc}") from exc
    if x.ndim != 2:
        raise DataError(f"{p}: X must be 2-D (rows x features), got shape {x.shape}")
    names = names or tuple(f"f{i}" for i in range(x.shape[1]))
    if len(names) != x.shape[1]:
        raise DataError(f"{p}: {len(names)} feature_names for {x.shape[1]} columns of X")
    return Table(x, names, _predictions(p, predictions, x.shape[0]))


def _read_csv(p: Path) -> Table:
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise DataError(f"{p}: empty file; expected a header row of feature names")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{p}: cannot read CSV: {exc}") from exc
    header = [h.strip() for h in header]
    width = len(header)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{p}: line {i + 2} has {len(row)} fields, the header has {width}")
    try:
        values = np.array([[float(v) if v.strip() else np.nan for v in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{p}: non-numeric value: {exc}") from exc
    values = values.reshape(len(rows), width)
    predictions = None
    if PREDICTION_COLUMN in header:
        j = header.index(PREDICTION_COLUMN)
        predictions = values[:, j]
        values = np.delete(values, j, axis=1)
        header.pop(j)
    return Table(values, tuple(header), _predictions(p, predictions, len(rows)))


def _predictions(p: Path, predictions: np.ndarray | None, n: int) -> np.ndarray | None:
    if predictions is None:
        return None
    arr = np.asarray(predictions)
    if arr.shape != (n,):
        raise DataError(f"{p}: predictions must have one entry per row ({n}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr.astype(np.float64))) or np.any(arr.astype(np.float64) % 1 != 0) or np.any(arr < 0):
        raise DataError(f"{p}: predictions must be non-negative integer class indices")
    return arr.astype(np.int64)
