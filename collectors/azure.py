"""Azure Monitor platform metrics through the metrics batch API (azure-monitor-querymetrics'
``MetricsClient.query_resources``, the successor of azure-monitor-query's ``MetricsQueryClient``).

Each configured query names a metric namespace, its metric names and aggregations, and the
resources (which the batch API needs in one subscription and region, behind the regional
``endpoint``: ``https://<region>.metrics.monitor.azure.com``). The calls follow the API's limits:
at most 50 resources and 20 metric names a call. The window is ``[end - range, end]`` with
``end`` ``delay`` before now rounded down to the ``interval`` (the granularity); each time series'
value is its newest data point that has the aggregation.

Names: ``azure_<namespace>_<metric>_<aggregation>`` in snake case
(``azure_microsoft_compute_virtual_machines_percentage_cpu_average``), labelled with the
resource (``resource_id``, ``subscription_id``, ``resource_group``, ``resource_name``) and the
time series' dimension values (a query's ``filter`` asks for them).

Credentials come from azure-identity's ``DefaultAzureCredential`` chain (environment, workload
identity, managed identity, the Azure CLI's login). The client blocks: it is made and called in
a worker thread. The collector's own metrics are ``azure_monitor_up``, ``_requests_total``,
``_errors_total{reason}`` and ``_queries_without_data``, labelled with the ``endpoint``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from bridge.api import (
    AttributeValue,
    CollectorConfig,
    HttpUrl,
    Metric,
    MetricKind,
    PluginConfig,
    PluginMetadata,
    PluginType,
    validate_plugin_id,
)
from collectors.cloud import CloudCollector, cloud_metrics, prometheus_part, require_library, snake_case

__all__ = ["MAX_METRICS", "MAX_RESOURCES", "PLUGIN_ID", "AzureConfig", "AzureMonitorCollector", "AzureQuery", "Call",
           "calls", "resource_labels"]

PLUGIN_ID = validate_plugin_id("monitoring.metrics.azure", PluginType.METRIC_COLLECTOR)

log = logging.getLogger("monbridge.collectors.azure")

#: The metrics batch API's limits: resources and metric names in one call.
MAX_RESOURCES = 50
MAX_METRICS = 20

AGGREGATIONS = {"Average": "average", "Minimum": "minimum", "Maximum": "maximum", "Total": "total", "Count": "count"}
_RESOURCE_ID = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/[^/]+/[^/]+/([^/]+)", re.I)


class AzureQuery(PluginConfig):
    """Metrics of one namespace, for a set of resources."""

    namespace: str = Field(min_length=1, max_length=200, description="e.g. Microsoft.Compute/virtualMachines")
    metrics: tuple[str, ...] = Field(min_length=1, description="metric names, e.g. Percentage CPU")
    aggregations: tuple[str, ...] = Field(default=("Average",), min_length=1,
                                          description="Average, Minimum, Maximum, Total and/or Count")
    resource_ids: tuple[str, ...] = Field(min_length=1, description="the resources' ids (one subscription and region)")
    interval: int = Field(default=60, ge=60, description="granularity in seconds (a multiple of 60)")
    filter: str | None = Field(default=None, min_length=1, max_length=2000,
                               description="dimension filter, e.g. \"LUN eq '*'\" (a series per LUN)")

    @field_validator("aggregations")
    @classmethod
    def _aggregations(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for a in v:
            if a not in AGGREGATIONS:
                raise ValueError(f"unknown aggregation {a[:40]!r}: expected one of {', '.join(AGGREGATIONS)}")
        return v

    @field_validator("resource_ids")
    @classmethod
    def _resource_ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, r in enumerate(v):
            if not _RESOURCE_ID.match(r):
                raise ValueError(f"resource_ids[{i}] is not a resource id "
                                 "(/subscriptions/<id>/resourceGroups/<group>/providers/<provider>/<type>/<name>)")
        if len({r.split("/")[2].lower() for r in v}) > 1:
            raise ValueError("the resources are in more than one subscription: give a query per subscription")
        return v

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: int) -> int:
        if v % 60:
            raise ValueError("expected a multiple of 60 seconds")
        return v


class AzureConfig(CollectorConfig):
    collection_interval: float = Field(default=60.0, gt=0, description="seconds between collections")
    endpoint: HttpUrl = Field(description="the regional metrics endpoint, e.g. https://westeurope.metrics.monitor.azure.com")
    delay: int = Field(default=120, ge=0, description="seconds the window ends before now: Azure Monitor's lag")
    range: int = Field(default=600, ge=60, description="seconds of the window searched for each series' newest point")
    queries: tuple[AzureQuery, ...] = Field(min_length=1, description="what is read")

    @model_validator(mode="after")
    def _library(self) -> AzureConfig:
        require_library(PLUGIN_ID, ("azure.monitor.querymetrics", "azure-monitor-querymetrics"),
                        ("azure.identity", "azure-identity"))
        return self


# --------------------------------------------------------------------------- planning the calls


@dataclass(frozen=True, slots=True)
class Call:
    """One query_resources call: ``where`` is its query's config path."""

    where: str
    query: AzureQuery
    resource_ids: tuple[str, ...]
    metrics: tuple[str, ...]
    start: datetime
    end: datetime


def calls(cfg: AzureConfig, now: float) -> list[Call]:
    """The calls of ``cfg`` at ``now``: each query's resources by 50 and metric names by 20."""
    out: list[Call] = []
    for i, q in enumerate(cfg.queries):
        end = int((now - cfg.delay) // q.interval) * q.interval
        start = end - max(cfg.range, q.interval)
        for r in range(0, len(q.resource_ids), MAX_RESOURCES):
            for m in range(0, len(q.metrics), MAX_METRICS):
                out.append(Call(f"queries[{i}]", q, q.resource_ids[r:r + MAX_RESOURCES], q.metrics[m:m + MAX_METRICS],
                                datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)))
    return out


def resource_labels(metric_id: str) -> dict[str, str]:
    """The resource's labels from a metric's id (``<resource id>/providers/Microsoft.Insights/metrics/<name>``)."""
    resource = re.split(r"/providers/microsoft\.insights/metrics/", metric_id, maxsplit=1, flags=re.I)[0]
    labels = {"resource_id": resource}
    m = _RESOURCE_ID.match(resource)
    if m:
        labels.update(subscription_id=m.group(1), resource_group=m.group(2), resource_name=m.group(3))
    return labels


def metric_name(namespace: str, metric: str, aggregation: str) -> str:
    return "azure_" + "_".join(prometheus_part(snake_case(p)).lower() for p in (namespace, metric, aggregation))


def convert(call: Call, results: Sequence[Any]) -> Iterator[Metric]:
    """The Metrics of one call's results (``azure.monitor.querymetrics.MetricsQueryResult``): each
    time series' newest point that has the aggregation, per aggregation."""
    q = call.query
    for result in results:
        for metric in result.metrics:
            base = resource_labels(metric.id or "")
            for series in metric.timeseries:
                attrs = dict(base)
                attrs.update((prometheus_part(snake_case(k)).lower(), str(v))
                             for k, v in (series.metadata_values or {}).items())
                for aggregation in q.aggregations:
                    field = AGGREGATIONS[aggregation]
                    points = [(p.timestamp, getattr(p, field)) for p in series.data if getattr(p, field) is not None]
                    if not points:
                        continue
                    ts, value = max(points, key=lambda p: p[0])
                    yield Metric(metric_name(q.namespace, metric.name, aggregation), MetricKind.GAUGE, float(value), "",
                                 f"Azure Monitor {q.namespace} {metric.name} ({metric.unit}), {aggregation}", attrs,
                                 int(ts.timestamp() * 1e9))


# --------------------------------------------------------------------------- the collector


class AzureMonitorCollector(CloudCollector):
    """Azure Monitor metrics by the metrics batch API (see the module docstring).

    ``client`` is an ``azure.monitor.querymetrics.MetricsClient`` to use instead of the one made
    from the config with ``DefaultAzureCredential`` (the registry makes plugins without it)."""

    config_model: ClassVar[type[PluginConfig]] = AzureConfig
    plugin_id = PLUGIN_ID
    own_metrics = cloud_metrics("azure_monitor", "metrics batch API")
    log = log

    def __init__(self, client: Any = None) -> None:
        super().__init__(client)
        self._credential: Any = None

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID,
            name="Azure Monitor metrics",
            version="0.1.0",
            author="monbridge",
            description="Azure Monitor platform metrics of configured resources, by the metrics batch API",
            plugin_type=PluginType.METRIC_COLLECTOR,
        )

    async def shutdown(self) -> None:
        await super().shutdown()
        credential, self._credential = self._credential, None
        if credential is not None:
            credential.close()

    def _target(self, cfg: AzureConfig) -> dict[str, AttributeValue]:
        return {"endpoint": cfg.endpoint}

    # ----------------------------------------------------------------- calls (worker thread)

    def _collect(self, cfg: AzureConfig, now: float) -> list[Metric]:
        from azure.core import exceptions as core_exceptions

        state = self._state
        out: list[Metric] = []
        if self._client is None:
            from azure.identity import DefaultAzureCredential
            from azure.monitor.querymetrics import MetricsClient

            self._credential = DefaultAzureCredential()
            self._client = MetricsClient(cfg.endpoint, self._credential)
        timeout = min(cfg.timeout or cfg.collection_interval, 60.0)
        for call in calls(cfg, now):
            what = (f"azure metrics {call.where} {call.query.namespace} ({len(call.resource_ids)} resources from "
                    f"{call.resource_ids[0]}, {len(call.metrics)} metrics from {call.metrics[0]!r})")
            state.requests += 1
            try:
                results = self._client.query_resources(
                    resource_ids=list(call.resource_ids), metric_namespace=call.query.namespace,
                    metric_names=list(call.metrics), timespan=(call.start, call.end),
                    granularity=timedelta(seconds=call.query.interval), aggregations=list(call.query.aggregations),
                    filter=call.query.filter, connection_timeout=timeout, read_timeout=timeout)
            except core_exceptions.ClientAuthenticationError as e:
                state.up = False
                state.failed(log, "credentials", what, _error_text(e))
                continue
            except core_exceptions.HttpResponseError as e:
                state.up = False
                code = getattr(getattr(e, "error", None), "code", None) or str(e.status_code or "error")
                state.failed(log, prometheus_part(snake_case(str(code))).lower(), what, _error_text(e))
                continue
            except core_exceptions.ServiceRequestError as e:
                state.up = False
                state.failed(log, "connection", what, _error_text(e))
                continue
            except core_exceptions.AzureError as e:
                state.up = False
                state.failed(log, "error", what, _error_text(e))
                continue
            state.recovered(log, what)
            found = list(convert(call, results))
            if not found:
                state.without_data += 1
            out.extend(found)
        return out


def _error_text(e: BaseException) -> str:
    """An Azure error's first lines: the code and message, not the response's headers."""
    text = getattr(e, "message", None) or str(e)
    return f"{type(e).__name__}: {' '.join(str(text).splitlines()[:3])[:300]}"

