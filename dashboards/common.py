"""What the three dashboards share: the Prometheus datasource variable, the model/version variables, the
query and panel helpers, and the encoding of a built dashboard as the JSON model Grafana's API takes.

Every query reads ``${datasource}`` (a datasource variable of type prometheus), so one dashboard serves any
Prometheus that scrapes inferwatch. Per-model expressions select ``model="$model"`` (one model at a time) and
``version=~"$version"`` (several versions side by side, all by default).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import statetimeline as statetimeline_builders
from grafana_foundation_sdk.builders import statushistory as statushistory_builders
from grafana_foundation_sdk.builders import table as table_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

#: Every panel and query reads the Prometheus chosen in the dashboard's ``datasource`` variable.
DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")

#: The per-model selector of the classifier and generator dashboards.
MV = 'model="$model", version=~"$version"'

#: Percentiles drawn from histograms and window gauges, as (quantile, legend suffix).
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))

Unit = Literal["s", "percentunit", "short", "reqps", "ops", "bytes", "decbytes", "watt", "celsius", "none"]


def query(ref_id: str, expr: str, legend: str = "", *, instant: bool = False,
          table: bool = False) -> prometheus_builders.Dataquery:
    """One PromQL target on ``${datasource}``; ``instant`` for a value now (tables, stats), ``table`` for
    Prometheus's table format (one row per series, labels as columns)."""
    q = prometheus_builders.Dataquery().expr(expr).ref_id(ref_id).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    if table:
        q = q.format(prometheus_models.PromQueryFormat.TABLE)
    return q


def quantile_queries(bucket: str, selector: str, by: Sequence[str] = (), legend: str = "",
                     first_ref: str = "A") -> list[prometheus_builders.Dataquery]:
    """p50/p95/p99 of a Prometheus histogram: ``histogram_quantile`` over the rate of its ``_bucket`` series,
    summed by ``le`` and the labels in ``by``; refIds from ``first_ref`` on."""
    group = ", ".join(("le", *by))
    out = []
    for i, (q, name) in enumerate(QUANTILES):
        series = f"{bucket}{{{selector}}}" if selector else bucket
        expr = f"histogram_quantile({q}, sum by ({group}) (rate({series}[$__rate_interval])))"
        out.append(query(chr(ord(first_ref) + i), expr, f"{legend}{' ' if legend else ''}{name}"))
    return out


def timeseries(panel_id: int, title: str, description: str, unit: Unit,
               targets: Sequence[prometheus_builders.Dataquery], *, width: int = 12, height: int = 8,
               min_value: float | None = None, max_value: float | None = None) -> timeseries_builders.Panel:
    panel = (timeseries_builders.Panel().id(panel_id).title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(height).line_width(1).fill_opacity(10)
             .legend(common_builders.VizLegendOptions().show_legend(True)
                     .display_mode(common_models.LegendDisplayMode.LIST)
                     .placement(common_models.LegendPlacement.BOTTOM)))
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    for target in targets:
        panel = panel.with_target(target)
    return panel


def stat(panel_id: int, title: str, description: str, unit: Unit,
         targets: Sequence[prometheus_builders.Dataquery], *, width: int = 6, height: int = 4,
         red_above: float | None = None) -> stat_builders.Panel:
    """A last-value stat; green, turning red at ``red_above`` when given."""
    steps = [dashboard_models.Threshold(value=None, color="green")]
    if red_above is not None:
        steps.append(dashboard_models.Threshold(value=red_above, color="red"))
    panel = (stat_builders.Panel().id(panel_id).title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(height)
             .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .thresholds(dashboard_builders.ThresholdsConfig().mode(dashboard_models.ThresholdsMode.ABSOLUTE)
                         .steps(steps)))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def table(panel_id: int, title: str, description: str, targets: Sequence[prometheus_builders.Dataquery], *,
          width: int = 12, height: int = 8, unit: Unit = "short",
          hidden: Sequence[str] = ("Time",)) -> table_builders.Panel:
    """Instant table queries merged into one row per label set (Grafana's ``merge`` transformation), with the
    ``hidden`` columns dropped."""
    panel = (table_builders.Panel().id(panel_id).title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(height)
             .align(common_models.FieldTextAlignment.AUTO).inspect(False)
             .with_transformation(dashboard_models.DataTransformerConfig(id_val="merge", options={}))
             .with_transformation(dashboard_models.DataTransformerConfig(
                 id_val="organize", options={"excludeByName": dict.fromkeys(hidden, True)})))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def _state_mappings(states: Sequence[tuple[int, str, str]]) -> list[dashboard_models.ValueMapping]:
    return [dashboard_models.ValueMap(options={
        str(value): dashboard_models.ValueMappingResult(text=text, color=color, index=i)
        for i, (value, text, color) in enumerate(states)})]


def state_timeline(panel_id: int, title: str, description: str,
                   targets: Sequence[prometheus_builders.Dataquery], states: Sequence[tuple[int, str, str]], *,
                   width: int = 12, height: int = 8) -> statetimeline_builders.Panel:
    """One lane per series; each value in ``states`` (value, text, colour) is drawn as its text and colour."""
    panel = (statetimeline_builders.Panel().id(panel_id).title(title).description(description)
             .datasource(DATASOURCE).span(width).height(height).fill_opacity(70).line_width(0)
             .mappings(_state_mappings(states))
             .show_value(common_models.VisibilityMode.NEVER))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def status_history(panel_id: int, title: str, description: str,
                   targets: Sequence[prometheus_builders.Dataquery], red_below: float, *, unit: Unit = "short",
                   width: int = 12, height: int = 8) -> statushistory_builders.Panel:
    """A heatmap of one value per series (rows) and interval (columns): red below ``red_below``."""
    panel = (statushistory_builders.Panel().id(panel_id).title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(height).fill_opacity(70).line_width(1)
             .thresholds(dashboard_builders.ThresholdsConfig().mode(dashboard_models.ThresholdsMode.ABSOLUTE)
                         .steps([dashboard_models.Threshold(value=None, color="red"),
                                 dashboard_models.Threshold(value=red_below, color="green")])))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def override(key: str, value: object) -> dashboard_models.DynamicConfigValue:
    """One field-config property of an override, e.g. ``override("custom.fillBelowTo", "lower bound")``."""
    return dashboard_models.DynamicConfigValue(id_val=key, value=value)


def row(panel_id: int, title: str) -> dashboard_builders.Row:
    return dashboard_builders.Row(title).id(panel_id)


def datasource_variable() -> dashboard_builders.DatasourceVariable:
    return dashboard_builders.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def model_variables(kind: Literal["classifier", "generator"] | None) -> list[dashboard_builders.QueryVariable]:
    """``model`` and ``version`` from ``inferwatch_model_info`` (of one kind; all models when ``kind`` is None).
    A per-kind dashboard shows one model at a time and all its versions by default; the fleet dashboard
    starts with every model."""
    info = "inferwatch_model_info" if kind is None else f'inferwatch_model_info{{kind="{kind}"}}'
    model = (dashboard_builders.QueryVariable("model").label("Model").datasource(DATASOURCE)
             .query(f"label_values({info}, model)")
             .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
             .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC))
    selector = 'model=~"$model"' if kind is None else f'kind="{kind}", model=~"$model"'
    version = (dashboard_builders.QueryVariable("version").label("Version").datasource(DATASOURCE)
               .query(f"label_values(inferwatch_model_info{{{selector}}}, version)")
               .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
               .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
               .multi(True).include_all(True).all_value(".*"))
    if kind is None:
        model = model.multi(True).include_all(True).all_value(".*")
    return [model, version]


def new_dashboard(uid: str, title: str, description: str, tags: Sequence[str]) -> dashboard_builders.Dashboard:
    """An empty dashboard: the last 6 hours, refreshed every minute, the datasource variable first."""
    return (dashboard_builders.Dashboard(title).uid(uid).description(description).tags(list(tags))
            .time("now-6h", "now").refresh("1m").timezone("browser").editable()
            .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
            .with_variable(datasource_variable()))


def encode(dashboard: dashboard_builders.Dashboard) -> dict[str, Any]:
    """The dashboard as the plain JSON model Grafana's API and file provisioning take."""
    out: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(dashboard.build()))
    return out


STATES_DRIFT = ((0, "ok", "green"), (1, "drift", "red"))
