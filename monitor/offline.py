"""Offline use of the detectors: build a profile from a data file, and compare two files as one window.

``inferwatch baseline`` and ``inferwatch drift`` call these. The comparison feeds the current file through
the same :class:`~monitor.evaluation.WatchedModel` the daemon uses, as one window, so an offline check in a
CI pipeline and the live daemon give the same verdict on the same data.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np

from detectors import (
    build_categorical_reference,
    build_llm_reference,
    build_reference,
    cbpe_reference,
    encode_categories,
    fit_calibrator,
    median_bandwidth,
)
from monitor.config import DetectConfig, QualityConfig, SlowDriftConfig, WindowConfig
from monitor.datafiles import Table
from monitor.errors import DataError
from monitor.evaluation import WatchedModel, WindowResult
from monitor.profiles import Profile
from monitor.windows import ClosedWindow

MAX_EMBEDDING_ROWS = 2000


def build_profile(table: Table, model: str, version: str, training_run: str | None = None, bins: int = 10,
                  calibration: Literal["temperature", "isotonic"] = "temperature", max_rows: int = 20_000,
                  seed: int = 0) -> Profile:
    """A profile of everything ``table`` holds.

    A NaN (or infinite) numeric cell is a missing value of its feature: each feature keeps its own present
    values and its missing rate (no row is dropped because another feature is missing)."""
    reference = None
    if table.x.shape[1] or table.predictions is not None:
        n_classes = None
        if table.probabilities is not None:
            n_classes = table.probabilities.shape[1]
        labels = [str(i) for i in range(n_classes)] if n_classes else None
        empty = [name for name, present in zip(table.feature_names, np.isfinite(table.x).any(axis=0), strict=True)
                 if not present]
        if empty:
            raise DataError(f"feature(s) {empty[:5]} have no finite value in the reference")
        reference = build_reference(table.x, table.feature_names, predictions=table.predictions,
                                    class_labels=labels, bins=bins, max_rows=max_rows, seed=seed)
    categorical = None
    if table.categorical is not None:
        categorical = build_categorical_reference(table.categorical, table.categorical_names)
    calibrator, reference_accuracy = None, None
    if table.labels is not None and table.predictions is not None:
        reference_accuracy = float(np.mean(table.labels == table.predictions))
    estimate = None
    if table.labels is not None and table.probabilities is not None:
        calibrator = fit_calibrator(table.probabilities, table.labels, method=calibration)
        # the reference's own label-free estimate: each window's estimate is compared with it, like with like
        estimate = cbpe_reference(table.probabilities, calibrator, table.labels)
    embeddings, bandwidth = None, None
    if table.embeddings is not None:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(table.rows, size=min(table.rows, MAX_EMBEDDING_ROWS), replace=False))
        embeddings = table.embeddings[keep]
        bandwidth = median_bandwidth(embeddings, seed=seed)
    llm = None
    if table.llm is not None:
        c = table.llm
        llm = build_llm_reference(c.output_tokens, c.mean_logprob, c.empty, c.refusal, accepted=c.accepted)
    return Profile(model=model, version=version, reference=reference, categorical=categorical,
                   calibrator=calibrator, reference_accuracy=reference_accuracy, embeddings=embeddings,
                   embedding_bandwidth=bandwidth, llm=llm, training_run=training_run,
                   reference_estimate=None if estimate is None else estimate.accuracy,
                   reference_estimate_sd=None if estimate is None else estimate.sd,
                   calibration_ece=None if estimate is None else estimate.ece)


def compare(reference: Table, current: Table, detect: DetectConfig, min_samples: int = 30) -> WindowResult:
    """Evaluate ``current`` as one window against a profile of ``reference``."""
    if reference.feature_names != current.feature_names:
        raise DataError(f"feature mismatch: the reference has {list(reference.feature_names)}, "
                        f"the current file {list(current.feature_names)}")
    if reference.categorical_names != current.categorical_names:
        raise DataError(f"categorical feature mismatch: the reference has {list(reference.categorical_names)}, "
                        f"the current file {list(current.categorical_names)}")
    profile = build_profile(reference, "offline", "reference", max_rows=max(reference.rows, 1))
    n = current.rows
    detect = msgspec.structs.replace(detect, quality=QualityConfig(window=max(n, 1)),
                                     slow_drift=SlowDriftConfig(enabled=False))
    model = WatchedModel(profile, detect, WindowConfig(size=max(n, 1), min_samples=min_samples))
    if current.labels is not None and current.predictions is not None:
        model.add_labels(current.labels, current.predictions)
    if current.llm is not None and current.llm.accepted is not None:
        model.add_acceptances(current.llm.accepted)
    return model.evaluate(ClosedWindow(key="offline/current", index=0, window_id="offline", n=n,
                                       columns=_columns(model, current), first_time=0.0, last_time=0.0,
                                       reason="offline"))


def _columns(model: WatchedModel, t: Table) -> dict[str, np.ndarray]:
    n = t.rows
    columns: dict[str, np.ndarray] = {
        "numeric": t.x,
        "prediction": t.predictions if t.predictions is not None else np.full(n, -1, dtype=np.int64),
        "latency": np.full((n, 2), np.nan),
    }
    if t.categorical is not None and model.profile.categorical is not None:
        columns["codes"] = encode_categories(model.profile.categorical, t.categorical)
    if "probs" in model.layout and t.probabilities is not None:
        columns["probs"] = t.probabilities
    if "embedding" in model.layout and t.embeddings is not None:
        columns["embedding"] = t.embeddings
    if "llm" in model.layout and t.llm is not None:
        c = t.llm
        # LLM_COLUMNS order; files carry no per-request timings
        columns["llm"] = np.column_stack([c.output_tokens, c.mean_logprob, c.empty, c.refusal,
                                          np.full(n, np.nan), np.full(n, np.nan)])
    return columns
