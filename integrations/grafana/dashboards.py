"""Grafana dashboards for monbridge's plugin families, built with Grafana's own
``grafana-foundation-sdk`` from the metrics the plugins declare (``integrations.grafana.catalog``).

One dashboard per family (``FAMILIES``), one panel per metric, chosen by the metric's kind:

* counter: a time series of its per-second ``rate`` (Prometheus' ``_total`` samples);
* gauge and up/down counter: a time series of the value; an ``up`` gauge (``*.up``, ``*_up``) a stat
  (red 0, green 1),
  a ``*timestamp`` gauge a stat of how long ago;
* histogram (explicit or exponential, exposed as ``_bucket``s): a heatmap of the buckets' rates and
  a time series of the 50th, 90th and 99th percentiles (``histogram_quantile``);
* summary: a time series of the quantiles as the source computed them, and the mean.

Every query is templated on ``$job`` and ``$instance`` (from ``monbridge_plugin_up``, which every
monbridge exposes) and on ``$host_name``, the ``host.name`` resource attribute (``target_info``,
joined on job and instance), for a Prometheus data source chosen by ``$datasource``. Alert
transitions that ``monitoring.integration.grafana`` writes as annotations (tag ``monbridge``)
are shown on every dashboard.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from grafana_foundation_sdk.builders import common as viz
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement, SortOrder, TooltipDisplayMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from bridge import __version__
from bridge.api import MetricKind
from integrations.grafana.catalog import FAMILIES, Family, MetricInfo, catalog

__all__ = ["ANNOTATION_TAG", "DATASOURCE", "VARIABLES", "build", "dashboard_json", "dashboards", "panel_queries", "uid"]

#: The tag of the annotations monbridge writes; every dashboard shows them.
ANNOTATION_TAG = "monbridge"
#: The data source every panel queries: the dashboard's ``datasource`` variable.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The label matchers of every query.
SELECTOR = 'job=~"$job",instance=~"$instance"'
#: What joins a query to the ``host.name`` chosen.
HOST_JOIN = ' * on (job, instance) group_left () group by (job, instance) (target_info{host_name=~"$host_name"})'
#: The template variables (besides ``datasource``) and what a query substitutes for "All".
VARIABLES = ("job", "instance", "host_name")
QUANTILES = (0.5, 0.9, 0.99)

_UNITS = {"s": "s", "ms": "ms", "us": "µs", "ns": "ns", "By": "bytes", "KiBy": "kbytes", "MiBy": "mbytes",
          "1": "percentunit", "%": "percent", "Hz": "hertz"}
#: Per-second rates: bytes a second, CPU seconds a second (a share of one CPU), else operations a second.
_RATE_UNITS = {"By": "Bps", "s": "percentunit"}


def uid(family: Family) -> str:
    return f"monbridge-{family.key}"


def _grafana_unit(m: MetricInfo, rate: bool = False) -> str:
    if rate:
        return _RATE_UNITS.get(m.unit, "ops")
    return _UNITS.get(m.unit, "short")


def _host(expr: str) -> str:
    return f"({expr}){HOST_JOIN}"


def panel_queries(m: MetricInfo) -> list[str]:
    """The PromQL queries of ``m``'s panels, in the panels' order (templated on ``VARIABLES``)."""
    name = m.prom_name
    if m.kind is MetricKind.COUNTER:
        total = name if m.native else f"{name}_total"
        return [_host(f"rate({total}{{{SELECTOR}}}[$__rate_interval])")]
    if m.kind in (MetricKind.HISTOGRAM, MetricKind.EXPONENTIAL_HISTOGRAM):
        buckets = f"rate({name}_bucket{{{SELECTOR}}}[$__rate_interval])"
        return [f"sum by (le) ({_host(buckets)})",
                *(f"histogram_quantile({q}, sum by (le, job, instance) ({_host(buckets)}))" for q in QUANTILES)]
    if m.kind is MetricKind.SUMMARY:
        return [_host(f'{name}{{{SELECTOR},quantile!=""}}'),
                _host(f"rate({name}_sum{{{SELECTOR}}}[$__rate_interval]) / rate({name}_count{{{SELECTOR}}}[$__rate_interval])")]
    if _is_timestamp(m):
        return [_host(f"{name}{{{SELECTOR}}}") + " * 1000"]
    return [_host(f"{name}{{{SELECTOR}}}")]


def _is_timestamp(m: MetricInfo) -> bool:
    return m.kind is MetricKind.GAUGE and m.unit == "s" and "timestamp" in m.name


def _is_up(m: MetricInfo) -> bool:
    return m.kind is MetricKind.GAUGE and m.unit in ("", "1") and (
        m.name == "up" or m.name.endswith(".up") or (m.native and m.name.endswith("_up")))


def _query(expr: str, ref: str, legend: str = "__auto", fmt: PromQueryFormat | None = None) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).legend_format(legend).range()
    return q.format(fmt) if fmt is not None else q


def _title(m: MetricInfo) -> str:
    return m.prom_name + ("_total" if m.kind is MetricKind.COUNTER and not m.native else "")


def _description(m: MetricInfo, what: str) -> str:
    unit = f" [{m.unit}]" if m.unit else ""
    return f"{m.description or m.name}{unit}. {what} ({m.kind.value} {m.name})."


def _series_panel() -> timeseries.Panel:
    return (timeseries.Panel().datasource(DATASOURCE).height(8).span(12).line_width(1).fill_opacity(10)
            .legend(viz.VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM)
                    .show_legend(True))
            .tooltip(viz.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)))


def _stat_panel() -> stat.Panel:
    return (stat.Panel().datasource(DATASOURCE).height(6).span(12)
            .reduce_options(viz.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def _panels(m: MetricInfo) -> Iterator[Any]:
    queries = panel_queries(m)
    if m.kind is MetricKind.COUNTER:
        yield (_series_panel().title(f"{_title(m)} (rate)").description(_description(m, "Per-second rate"))
               .unit(_grafana_unit(m, rate=True)).with_target(_query(queries[0], "A")))
    elif m.kind in (MetricKind.HISTOGRAM, MetricKind.EXPONENTIAL_HISTOGRAM):
        yield (heatmap.Panel().title(f"{m.prom_name} (buckets)").description(_description(m, "Buckets' rates"))
               .datasource(DATASOURCE).calculate(False).unit(_grafana_unit(m))
               .with_target(_query(queries[0], "A", "{{le}}", PromQueryFormat.HEATMAP)).height(8).span(12))
        panel = (_series_panel().title(f"{m.prom_name} (percentiles)")
                 .description(_description(m, "50th, 90th and 99th percentiles")).unit(_grafana_unit(m)))
        for i, (q, expr) in enumerate(zip(QUANTILES, queries[1:], strict=True)):
            panel = panel.with_target(_query(expr, "ABC"[i], f"p{q * 100:g} {{{{instance}}}}"))
        yield panel
    elif m.kind is MetricKind.SUMMARY:
        yield (_series_panel().title(f"{m.prom_name} (quantiles)")
               .description(_description(m, "Quantiles as the source computed them, and the mean"))
               .unit(_grafana_unit(m)).with_target(_query(queries[0], "A"))
               .with_target(_query(queries[1], "B", "mean {{instance}}")))
    elif _is_up(m):
        yield (_stat_panel().title(m.prom_name).description(_description(m, "1 up, 0 down"))
               .with_target(_query(queries[0], "A"))
               .thresholds(dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
                   [Threshold(color="red", value=None), Threshold(color="green", value=1)])))
    elif _is_timestamp(m):
        yield (_stat_panel().title(m.prom_name).description(_description(m, "How long ago"))
               .unit("dateTimeFromNow").with_target(_query(queries[0], "A")))
    else:
        yield (_series_panel().title(m.prom_name).description(_description(m, "Value"))
               .unit(_grafana_unit(m)).with_target(_query(queries[0], "A")))


def _variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (dash.QueryVariable(name).label(label).query(query).datasource(DATASOURCE)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*")
            .current(_ALL))


_ALL = VariableOption(selected=True, text="All", value="$__all")


def build(family: Family, metrics: Sequence[MetricInfo] | None = None) -> dict[str, Any]:
    """The dashboard of ``family`` (of ``metrics``, default the ones it declares) as Grafana's JSON model."""
    d = (dash.Dashboard(f"monbridge / {family.title}").uid(uid(family))
         .description(f"{family.description}. Generated by monbridge {__version__} from the metrics its plugins "
                      "declare.")
         .tags(["monbridge", family.key]).time("now-1h", "now").refresh("30s").timezone("browser")
         .tooltip(DashboardCursorSync.CROSSHAIR)
         .with_variable(dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
         .with_variable(_variable("job", "job", "label_values(monbridge_plugin_up, job)"))
         .with_variable(_variable("instance", "instance", 'label_values(monbridge_plugin_up{job=~"$job"}, instance)'))
         .with_variable(_variable("host_name", "host.name",
                                  'label_values(target_info{job=~"$job",instance=~"$instance"}, host_name)'))
         .annotation(dash.AnnotationQuery().name("monbridge alerts").datasource(
             DataSourceRef(type_val="grafana", uid="-- Grafana --")).enable(True).icon_color("red")
             .target(dash.AnnotationTarget().type("tags").tags([ANNOTATION_TAG]).match_any(True).limit(1000))))
    for m in catalog(family) if metrics is None else metrics:
        if m.name == "target_info":
            continue
        for panel in _panels(m):
            d = d.with_panel(panel)
    doc: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    return doc


def dashboards() -> dict[str, dict[str, Any]]:
    """Every family's dashboard, by family key."""
    return {f.key: build(f) for f in FAMILIES}


def dashboard_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"

