"""Data files for ``inferwatch drift`` and ``inferwatch baseline``: ``.npz`` and ``.csv``.

``.npz`` (read without pickle), every array optional except that at least one part must be present:

==================  ==========  =====================================================================
name                shape       meaning
==================  ==========  =====================================================================
``X``               (n, F)      numeric input features; names in ``feature_names`` (default f0, f1, ...)
``categorical``     (n, C)      categorical features as strings; names in ``categorical_names``
``predictions``     (n,)        predicted class index
``probabilities``   (n, K)      predicted class probabilities
``labels``          (n,)        true class index
``embeddings``      (n, d)      embeddings (penultimate layer, prompt embedding)
``output_tokens``   (n,)        LLM: generated tokens per request (with ``mean_logprob``, ``empty``,
                                ``refusal`` and optionally ``accepted``, one entry per request)
==================  ==========  =====================================================================

``.csv``: a header row, then rows. Numeric columns are features; a column with any non-numeric value is a
categorical feature; ``prediction`` and ``label`` hold integer classes and ``prob_0 .. prob_{K-1}``
probabilities. An empty cell in a numeric column is a missing value (NaN), and the column stays numeric; in a
categorical column it reads as the level "".

Missing numeric values (NaN cells in ``X``, empty CSV cells) are kept: every statistic runs per feature on that
feature's present values, and the profile records each feature's missing rate.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.errors import DataError

LLM_ARRAYS = ("output_tokens", "mean_logprob", "empty", "refusal")


@dataclass(frozen=True)
class LLMColumns:
    output_tokens: np.ndarray  # (n,)
    mean_logprob: np.ndarray  # (n,) NaN where unknown
    empty: np.ndarray  # (n,) bool
    refusal: np.ndarray  # (n,) bool
    accepted: np.ndarray | None  # (k,) bool


@dataclass(frozen=True)
class Table:
    x: np.ndarray  # (n, F) float64, F may be 0
    feature_names: tuple[str, ...]
    categorical: np.ndarray | None = None  # (n, C) str
    categorical_names: tuple[str, ...] = ()
    predictions: np.ndarray | None = None  # (n,) int64
    probabilities: np.ndarray | None = None  # (n, K) float64
    labels: np.ndarray | None = None  # (n,) int64
    embeddings: np.ndarray | None = None  # (n, d) float64
    llm: LLMColumns | None = None

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


def read_table(path: str | Path) -> Table:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _read_npz(p)
    if suffix == ".csv":
        return _read_csv(p)
    raise DataError(f"{p}: unsupported file type {suffix!r}; use .npz (arrays X, ...) or .csv (header row)")


def _read_npz(p: Path) -> Table:
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: not a readable .npz file: {exc}") from exc
    known = {"X", "feature_names", "categorical", "categorical_names", "predictions", "probabilities", "labels",
             "embeddings", "accepted", *LLM_ARRAYS}
    if not known & set(arrays) - {"feature_names", "categorical_names"}:
        raise DataError(f"{p}: no array named 'X' or any other known part (found: {', '.join(arrays) or 'none'})")
    n = _rows(p, arrays)
    x = np.asarray(arrays.get("X", np.empty((n, 0))), dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"{p}: X must be 2-D (rows x features), got shape {x.shape}")
    names = _names(p, arrays.get("feature_names"), x.shape[1], "feature_names", "f")
    categorical = arrays.get("categorical")
    categorical_names: tuple[str, ...] = ()
    if categorical is not None:
        categorical = np.asarray(categorical).astype(str)
        if categorical.ndim != 2:
            raise DataError(f"{p}: categorical must be 2-D (rows x features), got shape {categorical.shape}")
        categorical_names = _names(p, arrays.get("categorical_names"), categorical.shape[1], "categorical_names", "c")
    llm = None
    if "output_tokens" in arrays:
        missing = [k for k in LLM_ARRAYS if k not in arrays]
        if missing:
            raise DataError(f"{p}: LLM arrays need {', '.join(LLM_ARRAYS)}; missing {', '.join(missing)}")
        llm = LLMColumns(output_tokens=_vector(p, arrays, "output_tokens", n, np.float64),
                         mean_logprob=_vector(p, arrays, "mean_logprob", n, np.float64),
                         empty=_vector(p, arrays, "empty", n, bool), refusal=_vector(p, arrays, "refusal", n, bool),
                         accepted=np.asarray(arrays["accepted"], dtype=bool) if "accepted" in arrays else None)
    probabilities = arrays.get("probabilities")
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.ndim != 2 or probabilities.shape[0] != n:
            raise DataError(f"{p}: probabilities must be (rows, classes) with {n} rows, got {probabilities.shape}")
    embeddings = arrays.get("embeddings")
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[0] != n:
            raise DataError(f"{p}: embeddings must be (rows, dims) with {n} rows, got {embeddings.shape}")
    return Table(x=x, feature_names=names, categorical=categorical, categorical_names=categorical_names,
                 predictions=_classes(p, arrays.get("predictions"), n, "predictions"),
                 probabilities=probabilities, labels=_classes(p, arrays.get("labels"), n, "labels"),
                 embeddings=embeddings, llm=llm)


def _rows(p: Path, arrays: dict[str, np.ndarray]) -> int:
    sizes = {name: int(np.shape(a)[0]) for name, a in arrays.items()
             if name not in ("feature_names", "categorical_names", "accepted") and np.ndim(a) >= 1}
    if len(set(sizes.values())) > 1:
        raise DataError(f"{p}: arrays disagree on the number of rows: "
                        + ", ".join(f"{k}={v}" for k, v in sorted(sizes.items())))
    return next(iter(sizes.values()), 0)


def _names(p: Path, given: np.ndarray | None, width: int, what: str, prefix: str) -> tuple[str, ...]:
    names = tuple(str(n) for n in given) if given is not None else tuple(f"{prefix}{i}" for i in range(width))
    if len(names) != width:
        raise DataError(f"{p}: {len(names)} {what} for {width} columns")
    if len(set(names)) != len(names):
        raise DataError(f"{p}: {what} repeat a name")
    return names


def _vector(p: Path, arrays: dict[str, np.ndarray], name: str, n: int, dtype: type) -> np.ndarray:
    arr = np.asarray(arrays[name])
    if arr.shape != (n,):
        raise DataError(f"{p}: {name} must have one entry per row ({n}), got shape {arr.shape}")
    return arr.astype(dtype)


def _classes(p: Path, values: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise DataError(f"{p}: {what} must have one entry per row ({n}), got shape {arr.shape}")
    as_float = arr.astype(np.float64)
    if not np.all(np.isfinite(as_float)) or np.any(as_float % 1 != 0) or np.any(as_float < 0):
        raise DataError(f"{p}: {what} must be non-negative integer class indices")
    return arr.astype(np.int64)


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
    cells = np.array(rows, dtype=str).reshape(len(rows), width)
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        column = np.char.strip(cells[:, j])
        try:
            numeric[name] = np.where(column == "", "nan", column).astype(np.float64)
        except ValueError as exc:
            if name in ("prediction", "label") or name.startswith("prob_"):
                raise DataError(f"{p}: column {name!r} must be numeric: {exc}") from exc
            categorical[name] = column
    n = len(rows)
    special = {"prediction", "label"} | {h for h in numeric if h.startswith("prob_")}
    features = [h for h in header if h in numeric and h not in special]
    probs = sorted((h for h in numeric if h.startswith("prob_")), key=lambda h: int(h[5:]) if h[5:].isdigit() else -1)
    return Table(
        x=np.column_stack([numeric[h] for h in features]) if features else np.empty((n, 0)),
        feature_names=tuple(features),
        categorical=np.column_stack([categorical[h] for h in categorical]) if categorical else None,
        categorical_names=tuple(categorical),
        predictions=_classes(p, numeric.get("prediction"), n, "prediction"),
        probabilities=np.column_stack([numeric[h] for h in probs]) if probs else None,
        labels=_classes(p, numeric.get("label"), n, "label"))
