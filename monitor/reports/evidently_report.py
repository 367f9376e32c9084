"""An Evidently report on one window: data drift against the reference, classification quality on joined labels.

The frames are built here from what inferwatch keeps: :func:`reference_frame` from a profile's reference sample,
:func:`window_frame` from a window's feature matrix and predicted classes, :func:`labels_frame` from labelled
predictions. :func:`build_report` caps both sides by a seeded uniform sample, runs Evidently's
``DataDriftPreset`` (per-column tests, Evidently's own choice of method and threshold) and, given labels, its
``ClassificationPreset``, and renders both into one self-contained HTML page.

pandas and evidently are imported on the first call, never at import: evidently takes seconds to import, and the
daemon and the sidecar must start without it. Evidently sends usage telemetry unless ``DO_NOT_TRACK`` is set;
it is set (if unset) before the import, so a report never phones home.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from detectors import ReferenceSample
from monitor.config import ReportsConfig, default_of
from monitor.datafiles import Table
from monitor.errors import InferwatchError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PREDICTION", "ClassificationQuality", "ColumnDrift", "EvidentlyReport", "ReportError", "build_report",
           "labels_frame", "load_evidently", "reference_frame", "sample_rows", "table_report", "window_frame"]

#: The column of predicted classes in the drift frames (categorical, the profile's class labels).
PREDICTION = "predicted_class"
REFERENCE_ROWS: int = default_of(ReportsConfig, "reference_rows")
WINDOW_ROWS: int = default_of(ReportsConfig, "window_rows")


class ReportError(InferwatchError):
    """A report cannot be built (evidently missing, nothing to compare)."""


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's verdict on one column: ``score`` by ``method`` against ``threshold`` (a p-value below it, or a
    distance at or above it, is drift)."""

    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass(frozen=True)
class ClassificationQuality:
    """Evidently's classification metrics on ``n`` labelled predictions (precision, recall, F1 macro-averaged)."""

    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True, eq=False)
class EvidentlyReport:
    """A built report: its HTML page, the per-column drift and the quality it shows, and Evidently's snapshots
    (``snapshots[0].dict()`` is the drift run, ``snapshots[1]`` the classification run when there was one)."""

    html: bytes
    drift: tuple[ColumnDrift, ...]
    quality: ClassificationQuality | None
    reference_rows: int
    current_rows: int
    skipped: tuple[str, ...] = ()  # features with no value on one side, left out of the drift tests
    quality_error: str | None = None  # why the classification section is missing although labels were given
    snapshots: tuple[Any, ...] = ()

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.drift if c.drifted)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_bytes(self.html)
        return p


def load_evidently() -> SimpleNamespace:
    """pandas and the parts of evidently used here; ``DO_NOT_TRACK`` set first. Raises :class:`ReportError`
    with the install hint when they are missing."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # evidently reads it when it would send telemetry
    try:
        import pandas
        from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
        from evidently.core.metric_types import render_widgets
        from evidently.legacy.renderers.html_widgets import group_widget
        from evidently.presets import ClassificationPreset, DataDriftPreset
    except ImportError as exc:
        raise ReportError(f"reports need evidently and pandas < 3: pip install 'inferwatch[reports]' ({exc})") from exc
    return SimpleNamespace(pd=pandas, DataDefinition=DataDefinition, Dataset=Dataset, Report=Report,
                           MulticlassClassification=MulticlassClassification, render_widgets=render_widgets,
                           BinaryClassification=BinaryClassification,
                           group_widget=group_widget, ClassificationPreset=ClassificationPreset,
                           DataDriftPreset=DataDriftPreset)


def sample_rows(n: int, cap: int, seed: int = 0) -> np.ndarray:
    """Indices of a seeded uniform sample of ``min(n, cap)`` of ``n`` rows, in order (all rows when ``n <= cap``).

    >>> sample_rows(5, 10).tolist(), len(sample_rows(10_000, 3, seed=1))
    ([0, 1, 2, 3, 4], 3)
    """
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def reference_frame(reference: ReferenceSample, rows: int = REFERENCE_ROWS, seed: int = 0) -> pd.DataFrame:
    """At most ``rows`` reference rows from a profile's reference sample.

    A profile keeps each feature's present values sorted on their own (not the training rows), so each column
    is drawn on its own: a uniform sample of that feature's present values, with NaN at the feature's reference
    missing rate. The marginals are the reference's; the joint structure is not, which the per-column tests of
    a drift report do not use. With class counts, :data:`PREDICTION` is drawn from the reference class mix."""
    pd = load_evidently().pd
    rng = np.random.default_rng(seed)
    sv = reference.sorted_values  # (n, F), each column sorted, NaN-padded at the end
    n = min(rows, int(sv.shape[0]))
    missing = reference.missing_rates if reference.missing_counts is not None else np.zeros(sv.shape[1])
    columns: dict[str, Any] = {}
    for j, name in enumerate(reference.feature_names):
        present = int(reference.present[j])
        n_missing = round(n * float(missing[j]))
        values = np.full(n, np.nan)
        # (n - n_missing,) values drawn from the present ones; with replacement only when there are too few
        drawn = sv[rng.choice(present, size=n - n_missing, replace=present < n - n_missing), j]
        values[rng.permutation(n)[: n - n_missing]] = drawn
        columns[name] = values
    if reference.class_labels and reference.class_priors is not None and PREDICTION not in columns:
        labels = list(reference.class_labels)
        columns[PREDICTION] = pd.Categorical(rng.choice(labels, size=n, p=reference.class_priors),
                                             categories=labels)
    return pd.DataFrame(columns)


def window_frame(features: np.ndarray, names: Sequence[str], predictions: np.ndarray | None = None,
                 class_labels: Sequence[str] = ()) -> pd.DataFrame:
    """A window's rows: ``features`` (n, F) with NaN for missing values, and, given ``class_labels``, the
    predicted class indices (n,) as :data:`PREDICTION` (-1, no prediction, is missing)."""
    pd = load_evidently().pd
    if features.ndim != 2 or features.shape[1] != len(names):
        raise ReportError(f"features of shape {features.shape} do not match {len(names)} feature names")
    frame = pd.DataFrame(np.asarray(features, dtype=np.float64), columns=list(names))
    if predictions is not None and class_labels and PREDICTION not in frame.columns:
        if len(predictions) != len(frame):
            raise ReportError(f"{len(predictions)} predictions for {len(frame)} rows")
        frame[PREDICTION] = pd.Categorical.from_codes(np.where(predictions >= 0, predictions, -1).astype(np.int64),
                                                      categories=list(class_labels))
    return frame


def labels_frame(y_true: np.ndarray, y_pred: np.ndarray, class_labels: Sequence[str] = ()) -> pd.DataFrame:
    """Labelled predictions: class indices (n,) as columns ``target`` and ``prediction`` (class labels when
    given)."""
    pd = load_evidently().pd
    if len(y_true) != len(y_pred):
        raise ReportError(f"{len(y_true)} labels for {len(y_pred)} predictions")
    names = list(class_labels) if class_labels else [str(i) for i in range(int(max(y_true.max(initial=0),
                                                                                   y_pred.max(initial=0))) + 1)]
    return pd.DataFrame({"target": np.asarray(names, dtype=object)[np.asarray(y_true, dtype=np.int64)],
                         "prediction": np.asarray(names, dtype=object)[np.asarray(y_pred, dtype=np.int64)]})


def build_report(reference: pd.DataFrame, current: pd.DataFrame, *, labels: pd.DataFrame | None = None,
                 title: str = "inferwatch", reference_rows: int = REFERENCE_ROWS, current_rows: int = WINDOW_ROWS,
                 seed: int = 0) -> EvidentlyReport:
    """Data drift of ``current`` against ``reference`` and, given ``labels``, classification quality.

    Parameters
    ----------
    reference, current : DataFrame
        Numeric feature columns (NaN: missing) and optionally the categorical :data:`PREDICTION`; the columns
        of ``current`` are compared. Each is capped by a seeded uniform sample of ``reference_rows`` and
        ``current_rows`` rows. A feature with no value on either side is left out (listed in ``skipped``).
    labels : DataFrame, optional
        Labelled predictions, columns ``target`` and ``prediction`` (:func:`labels_frame`).
    title : str
        Heads the page's sections.
    """
    ev = load_evidently()
    missing = [c for c in current.columns if c not in reference.columns]
    if missing:
        raise ReportError(f"the reference has no column(s) {missing[:5]}")
    reference = reference.iloc[sample_rows(len(reference), reference_rows, seed)].reset_index(drop=True)
    current = current.iloc[sample_rows(len(current), current_rows, seed + 1)].reset_index(drop=True)
    columns = [c for c in current.columns if current[c].notna().any() and reference[c].notna().any()]
    skipped = tuple(c for c in current.columns if c not in columns)
    if not columns:
        raise ReportError(f"no column has values in both the reference ({len(reference)} rows) and the current "
                          f"data ({len(current)} rows)")
    categorical = [c for c in columns if isinstance(current[c].dtype, ev.pd.CategoricalDtype)]
    numerical = [c for c in columns if c not in categorical]
    definition = ev.DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    drift = ev.Report([ev.DataDriftPreset(columns=columns)], include_tests=True).run(
        current_data=ev.Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=ev.Dataset.from_pandas(reference[columns], data_definition=definition))
    snapshots = [drift]
    quality, quality_error = None, None
    if labels is not None and len(labels):
        # Evidently's multiclass metrics fail on two classes or fewer: those are a binary task, the positive class
        # the last in sorted order ("1" of "0"/"1", "yes" of "no"/"yes")
        classes = sorted(set(labels["target"]) | set(labels["prediction"]))
        tasks = [ev.BinaryClassification(target="target", prediction_labels="prediction", pos_label=classes[-1])
                 if len(classes) <= 2 else ev.MulticlassClassification(target="target", prediction_labels="prediction")]
        try:
            run = ev.Report([ev.ClassificationPreset()]).run(current_data=ev.Dataset.from_pandas(
                labels[["target", "prediction"]], data_definition=ev.DataDefinition(classification=tasks)))
            quality = _quality(run.dict(), len(labels))
            snapshots.append(run)
        except Exception as exc:  # evidently fails on some label sets (one class only): the drift part stands
            quality_error = f"{type(exc).__name__}: {exc}"[:500]
    sections = [ev.group_widget(title=f"{title}: data drift, {len(current)} window rows vs {len(reference)} "
                                      f"reference rows" + (f" (no values: {', '.join(skipped)})" if skipped else ""),
                                widgets=list(drift._widgets)), *drift._tests_widgets]
    if len(snapshots) > 1:
        n_labels = 0 if labels is None else len(labels)
        sections.append(ev.group_widget(title=f"{title}: classification quality on {n_labels} labelled predictions",
                                        widgets=list(snapshots[1]._widgets)))
    elif quality_error is not None:
        sections.append(ev.group_widget(title=f"{title}: classification quality could not be computed: "
                                              f"{quality_error}", widgets=[]))
    html = ev.render_widgets(sections, as_iframe=False)
    return EvidentlyReport(html=html.encode(), drift=_drift(drift.dict()), quality=quality,
                           reference_rows=len(reference), current_rows=len(current), skipped=skipped,
                           quality_error=quality_error, snapshots=tuple(snapshots))


def _drift(snapshot: dict[str, Any]) -> tuple[ColumnDrift, ...]:
    """Per-column results of a drift snapshot: scores from its ValueDrift metrics, verdicts from their tests."""
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in snapshot.get("tests", ())
              if t.get("id") == "drift"}
    out = []
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            out.append(ColumnDrift(column=str(config["column"]), method=str(config.get("method")),
                                   threshold=float(config.get("threshold") or np.nan), score=float(metric["value"]),
                                   drifted=bool(failed.get(metric["id"], False))))
    return tuple(out)


def _quality(snapshot: dict[str, Any], n: int) -> ClassificationQuality:
    values = {m["config"]["type"].rsplit(":", 1)[-1]: m["value"] for m in snapshot["metrics"]}

    def scalar(name: str) -> float:
        value = values.get(name)
        return float(value) if isinstance(value, int | float) else float("nan")

    return ClassificationQuality(n=n, accuracy=scalar("Accuracy"), precision=scalar("Precision"),
                                 recall=scalar("Recall"), f1=scalar("F1Score"))


def table_report(reference: Table, current: Table, *, title: str = "inferwatch drift",
                 reference_rows: int = REFERENCE_ROWS, current_rows: int = WINDOW_ROWS) -> EvidentlyReport:
    """The report ``inferwatch drift --report`` writes: the same as an alerting window's, with the reference
    file's own rows in place of a profile's sample, and the current file's labels (when it has labels and
    predictions) for the quality section. Numeric features and predicted classes are compared (as in the daemon's
    report); categorical features are not."""
    if reference.feature_names != current.feature_names:
        raise ReportError(f"feature mismatch: the reference has {list(reference.feature_names)}, the current file "
                          f"{list(current.feature_names)}")
    classes = [str(i) for i in range(1 + max((int(a.max()) for a in (reference.predictions, current.predictions,
                                                                      current.labels)
                                              if a is not None and len(a)), default=-1))]
    both = reference.predictions is not None and current.predictions is not None
    labels = None
    if current.labels is not None and current.predictions is not None:
        labels = labels_frame(current.labels, current.predictions, classes)
    return build_report(window_frame(reference.x, reference.feature_names, reference.predictions if both else None,
                                     classes),
                        window_frame(current.x, current.feature_names, current.predictions if both else None,
                                     classes),
                        labels=labels, title=title, reference_rows=reference_rows, current_rows=current_rows)
