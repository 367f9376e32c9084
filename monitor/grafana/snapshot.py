"""A dashboard snapshot of one window: the model's dashboard with each panel's queries replaced by the data
they would have shown for that window, embedded as Grafana data frames.

A live dashboard asks Prometheus; a snapshot carries its data. The data of a window is what the daemon exported
for it (:func:`window_series`: the series :func:`monitor.metrics.export_result` sets, one value each). Each
panel query is answered from those series the way Prometheus would answer it over the window's time range:
the metric names in the PromQL, their label matchers (``model`` and ``version`` are the alert's), and a
``sum|max|min|avg by (...)`` around them. A query over what a window does not hold (rates of counters,
histograms) gets no frame, and its panel shows "No data" rather than something made up.

Frames use Grafana's data-frame JSON (``{"name", "refId", "fields": [{"name", "type", "values", ...}]}``):
a table query gets one wide frame (``Time``, one string field per label, ``Value #<refId>``), as Prometheus's
table format does; any other query one frame per series, the value drawn across the window.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from monitor.detection import BY_NAME, gauge_specs
from monitor.evaluation import WindowResult

__all__ = ["Series", "panels", "series_frames", "snapshot_dashboard", "window_series"]


class Series(NamedTuple):
    """One exported series of a window: metric name, labels (without model and version), value."""

    metric: str
    labels: Mapping[str, str]
    value: float


def window_series(result: WindowResult, class_labels: Sequence[str] = ()) -> list[Series]:
    """The series the daemon exports for ``result``: every detector gauge, ``inferwatch_drift_detected``
    per finding, and ``inferwatch_prediction_class_ratio`` (window and reference shares of each class)."""
    from monitor.metrics import class_ratios  # the daemon's own naming of classes

    specs = gauge_specs()
    out = [Series("inferwatch_drift_detected", {"detector": f.detector}, float(f.drifted))
           for f in result.findings if not f.insufficient]
    for name, detector_result in result.results.items():
        detector = BY_NAME.get(name)
        for sample in detector.samples(detector_result) if detector is not None else ():
            label_names = specs[sample.gauge].labels if sample.gauge in specs else ()
            out.append(Series(sample.gauge, dict(zip(label_names, sample.labels, strict=False)), sample.value))
    prediction = result.prediction
    if prediction is not None:
        out += [Series("inferwatch_prediction_class_ratio", {"class": cls, "source": source}, share)
                for cls, source, share in class_ratios(prediction, class_labels)]
    return out


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of ``dashboard`` in order, the ones inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def snapshot_dashboard(dashboard: Mapping[str, Any], result: WindowResult, title: str,
                       class_labels: Sequence[str] = ()) -> dict[str, Any]:
    """A copy of ``dashboard`` for a snapshot of ``result``'s window: its time range, ``model`` and
    ``version`` variables set to the window's, and every panel's ``targets`` replaced by ``snapshotData``
    (the frames of :func:`series_frames`). Queries, variable queries and panel links are taken out, as
    Grafana does for a snapshot."""
    series = window_series(result, class_labels)
    start_ms, end_ms = _range_ms(result.first_time, result.last_time)
    snap = copy.deepcopy(dict(dashboard))
    snap.pop("id", None)
    snap.update(title=title, editable=False, refresh="",
                time={"from": _iso(start_ms), "to": _iso(end_ms)})
    values = {"model": result.model, "version": result.version}
    for variable in snap.get("templating", {}).get("list", []):
        if variable.get("name") in values:
            current = {"selected": True, "text": [values[variable["name"]]] if variable.get("multi")
                       else values[variable["name"]], "value": [values[variable["name"]]]
                       if variable.get("multi") else values[variable["name"]]}
            variable.update(current=current, options=[current], query="", refresh=0)
    for panel in panels(snap):
        targets = panel.pop("targets", None)
        if targets is None:
            continue  # a row
        panel["snapshotData"] = [frame for target in targets
                                 for frame in series_frames(target, series, start_ms, end_ms)]
        panel["targets"] = []
        panel.pop("links", None)
    return snap


def series_frames(target: Mapping[str, Any], series: Sequence[Series], start_ms: int,
                  end_ms: int) -> list[dict[str, Any]]:
    """The data frames that answer one panel query from a window's ``series`` (see the module docstring)."""
    ref = str(target.get("refId", "A"))
    expr = str(target.get("expr", ""))
    matched = _select(expr, series)
    if not matched:
        return []
    if target.get("format") == "table":
        names = sorted({k for labels, _ in matched for k in labels})
        return [{"name": ref, "refId": ref, "fields": [
            {"name": "Time", "type": "time", "values": [end_ms] * len(matched)},
            *({"name": n, "type": "string", "values": [labels.get(n, "") for labels, _ in matched]} for n in names),
            {"name": f"Value #{ref}", "type": "number", "values": [_finite(v) for _, v in matched]}]}]
    legend = str(target.get("legendFormat", ""))
    frames = []
    for labels, value in matched:
        display = _legend(legend, labels)
        frames.append({"name": display, "refId": ref, "fields": [
            {"name": "Time", "type": "time", "values": [start_ms, end_ms]},
            {"name": "Value", "type": "number", "labels": dict(labels), "config": {"displayNameFromDS": display},
             "values": [_finite(value)] * 2}]})
    return frames


# -- PromQL, the little of it the dashboards use --------------------------------------------------------
_SELECTOR = re.compile(r"\b(inferwatch_[A-Za-z0-9_:]+)\s*(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_BY = re.compile(r"^\s*(sum|max|min|avg)\s+by\s*\(([^)]*)\)\s*\((.*)\)\s*$", re.S)
_OWN = ("model", "version")  # fixed by the window; the dashboard's $model/$version select it


def _select(expr: str, series: Sequence[Series]) -> list[tuple[dict[str, str], float]]:
    """The window's answer to ``expr``: the series its selectors pick, grouped as its ``by`` says."""
    by = _BY.match(expr)
    inner = by.group(3) if by else expr
    if "(" in inner:  # rate(), histogram_quantile(), arithmetic of series: not a window's value
        return []
    picked = [s for m in _SELECTOR.finditer(inner) for s in series
              if s.metric == m.group(1) and _matches(m.group(2) or "", s.labels)]
    if not by:
        return [(dict(s.labels), s.value) for s in picked]
    keep = [k.strip() for k in by.group(2).split(",") if k.strip()]
    groups: dict[tuple[str, ...], list[float]] = {}
    for s in picked:
        groups.setdefault(tuple(s.labels.get(k, "") for k in keep), []).append(s.value)
    how = _AGGREGATE[by.group(1)]
    return [(dict(zip(keep, key, strict=True)), how(values)) for key, values in groups.items()]


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


_AGGREGATE: dict[str, Callable[[list[float]], float]] = {"sum": math.fsum, "max": max, "min": min, "avg": _mean}


def _matches(matchers: str, labels: Mapping[str, str]) -> bool:
    for name, op, value in _MATCHER.findall(matchers):
        if name in _OWN:
            continue
        have = labels.get(name, "")  # PromQL: an absent label is the empty string
        ok = {"=": have == value, "!=": have != value,
              "=~": re.fullmatch(value, have) is not None, "!~": re.fullmatch(value, have) is None}[op]
        if not ok:
            return False
    return True


def _legend(legend: str, labels: Mapping[str, str]) -> str:
    if not legend:
        return ", ".join(f"{k}={v}" for k, v in labels.items()) or "value"
    return re.sub(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend).strip()


def _finite(value: float) -> float | None:
    """JSON has no NaN: a value that could not be computed is null, which Grafana draws as a gap."""
    return float(value) if math.isfinite(value) else None


def _range_ms(first: float, last: float) -> tuple[int, int]:
    start, end = int(first * 1000), int(last * 1000)
    return start, max(end, start + 1000)  # a window of one event still spans a visible second


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
