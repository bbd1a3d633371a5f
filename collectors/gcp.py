"""Google Cloud Monitoring metrics through ``ListTimeSeries`` (google-cloud-monitoring), named as
stackdriver_exporter names them.

Each configured metric type is one ``ListTimeSeries`` request in project ``project_id``: the
filter ``metric.type = "<type>"`` (and the metric's own ``filter``), the window ``[end - range,
end]`` with ``end`` ``delay`` before now rounded down to ``period``, and, when an ``aligner`` is
given, the aggregation (``alignment_period`` = ``period``, the aligner, an optional reducer and
its ``group_by`` fields). Every time series answered is a series here with its newest point.
The pages are followed up to ``max_series`` series a collection (the rest are counted, not read).

Names: ``stackdriver_<resource type>_<metric type>`` with ``.`` and ``/`` as ``_``
(``stackdriver_gce_instance_compute_googleapis_com_instance_cpu_utilization``); the labels are
the metric's and the monitored resource's labels, and ``unit`` when the series has one. GAUGE and
DELTA series are gauges; CUMULATIVE ones counters, starting at their interval's start; BOOL values
are 1 or 0; DISTRIBUTION values histograms (explicit, linear or exponential buckets); STRING and
MONEY values are counted (``unsupported_value``) and skipped.

Credentials are Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, the gcloud
user, the metadata server's service account); ``api_endpoint`` overrides the endpoint (a
regional or Private Service Connect one). The client blocks: it is made and called in a worker
thread. The collector's own metrics are ``gcp_monitoring_up``, ``_requests_total``,
``_errors_total{reason}`` and ``_queries_without_data``, labelled with the ``project_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, model_validator

from bridge.api import (
    AttributeValue,
    CollectorConfig,
    HistogramValue,
    Metric,
    MetricKind,
    PluginConfig,
    PluginMetadata,
    PluginType,
    validate_plugin_id,
)
from collectors.cloud import CloudCollector, cloud_metrics, prometheus_part, require_library

__all__ = ["PLUGIN_ID", "GcpConfig", "GcpMetric", "GcpMonitoringCollector", "metric_name", "requests"]

PLUGIN_ID = validate_plugin_id("monitoring.metrics.gcp", PluginType.METRIC_COLLECTOR)

log = logging.getLogger("monbridge.collectors.gcp")

#: The most buckets a distribution may have to become a histogram (Cloud Monitoring allows 200).
MAX_BUCKETS = 1000
#: Series asked for a page.
PAGE_SIZE = 1000


class GcpMetric(PluginConfig):
    """One metric type and how its series are aligned."""

    type: str = Field(min_length=1, max_length=500, description="e.g. compute.googleapis.com/instance/cpu/utilization")
    filter: str | None = Field(default=None, min_length=1, max_length=2000,
                               description='more of the filter, ANDed: e.g. resource.labels.zone = "europe-west1-b"')
    aligner: str | None = Field(default=None, pattern=r"^ALIGN_[A-Z0-9_]+$",
                                description="per-series aligner, e.g. ALIGN_MEAN, ALIGN_RATE (default: none, raw points)")
    reducer: str | None = Field(default=None, pattern=r"^REDUCE_[A-Z0-9_]+$", description="cross-series reducer")
    group_by: tuple[str, ...] = Field(default=(), description="fields the reducer keeps, e.g. resource.labels.zone")
    period: int = Field(default=60, ge=1, description="alignment period in seconds")
    delay: int | None = Field(default=None, ge=0, description="this metric's delay (default: the collector's)")
    range: int | None = Field(default=None, ge=1, description="this metric's window (default: the collector's)")

    @model_validator(mode="after")
    def _check(self) -> GcpMetric:
        if self.reducer is not None and self.aligner is None:
            raise ValueError("a reducer needs an aligner")
        if self.group_by and self.reducer is None:
            raise ValueError("group_by needs a reducer")
        return self


class GcpConfig(CollectorConfig):
    collection_interval: float = Field(default=60.0, gt=0, description="seconds between collections")
    project_id: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9\-:.]*$",
                            description="the project whose time series are listed")
    api_endpoint: str | None = Field(default=None, min_length=1, description="host[:port] of the Monitoring API")
    delay: int = Field(default=0, ge=0, description="seconds the window ends before now")
    range: int = Field(default=300, ge=1, description="seconds of the window searched for each series' newest point")
    metrics: tuple[GcpMetric, ...] = Field(min_length=1, description="the metric types read")
    max_series: int = Field(default=10_000, ge=1, description="most series read a collection")

    @model_validator(mode="after")
    def _library(self) -> GcpConfig:
        require_library(PLUGIN_ID, ("google.cloud.monitoring_v3", "google-cloud-monitoring"))
        return self


@dataclass(frozen=True, slots=True)
class Request:
    """One ListTimeSeries request: ``where`` is its metric's config path."""

    where: str
    metric: GcpMetric
    body: Mapping[str, Any]


def requests(cfg: GcpConfig, now: float) -> list[Request]:
    """The ListTimeSeries requests of ``cfg`` at ``now`` (as the dicts the library's request type takes)."""
    out: list[Request] = []
    for i, m in enumerate(cfg.metrics):
        delay = cfg.delay if m.delay is None else m.delay
        window = cfg.range if m.range is None else m.range
        end = int((now - delay) // m.period) * m.period
        text = f'metric.type = "{m.type}"' + (f" AND ({m.filter})" if m.filter else "")
        body: dict[str, Any] = {
            "name": f"projects/{cfg.project_id}",
            "filter": text,
            "interval": {"start_time": {"seconds": end - window}, "end_time": {"seconds": end}},
            "view": "FULL",
            "page_size": PAGE_SIZE,
        }
        if m.aligner is not None:
            agg: dict[str, Any] = {"alignment_period": {"seconds": m.period}, "per_series_aligner": m.aligner}
            if m.reducer is not None:
                agg["cross_series_reducer"] = m.reducer
                agg["group_by_fields"] = list(m.group_by)
            body["aggregation"] = agg
        out.append(Request(f"metrics[{i}]", m, body))
    return out


def metric_name(resource_type: str, metric_type: str) -> str:
    return f"stackdriver_{prometheus_part(resource_type)}_{prometheus_part(metric_type)}".lower()


# --------------------------------------------------------------------------- response -> Metric

_GAUGE, _DELTA, _CUMULATIVE = 1, 2, 3  # google.api.MetricDescriptor.MetricKind
_BOOL, _INT64, _DOUBLE, _STRING, _DISTRIBUTION, _MONEY = 1, 2, 3, 4, 5, 6  # .ValueType


class Unsupported(Exception):
    """A series whose value has no metric here (a string, money, a distribution too large)."""


def _bounds(options: Any) -> tuple[float, ...]:
    """The finite bucket boundaries of a Distribution's BucketOptions."""
    which = options.WhichOneof("options")  # a google.api.distribution_pb2 message (plain protobuf)
    if which == "explicit_buckets":
        return tuple(float(b) for b in options.explicit_buckets.bounds)
    if which == "linear_buckets":
        lin = options.linear_buckets
        if lin.num_finite_buckets > MAX_BUCKETS:
            raise Unsupported("too many buckets")
        return tuple(lin.offset + lin.width * i for i in range(lin.num_finite_buckets + 1))
    if which == "exponential_buckets":
        exp = options.exponential_buckets
        if exp.num_finite_buckets > MAX_BUCKETS:
            raise Unsupported("too many buckets")
        return tuple(exp.scale * exp.growth_factor ** i for i in range(exp.num_finite_buckets + 1))
    return ()


def histogram(dist: Any) -> HistogramValue:
    """A Cloud Monitoring Distribution as a HistogramValue (its counts padded: trailing zero
    buckets may be left out of a Distribution)."""
    bounds = _bounds(dist.bucket_options)
    if len(bounds) > MAX_BUCKETS:
        raise Unsupported("too many buckets")
    counts = [int(c) for c in dist.bucket_counts][: len(bounds) + 1]
    if not counts:
        counts = [int(dist.count)]
    counts += [0] * (len(bounds) + 1 - len(counts))
    if len(counts) != len(bounds) + 1:
        raise Unsupported("bucket counts do not match the bucket options")
    try:
        return HistogramValue(bounds, tuple(counts), float(dist.mean) * int(dist.count), int(dist.count))
    except ValueError as e:
        raise Unsupported(str(e)) from None


def _ns(ts: Any) -> int:
    """A protobuf timestamp (as the library gives it: a datetime with nanoseconds) in Unix ns."""
    nanos = getattr(ts, "nanosecond", None)
    if nanos is not None:
        return int(ts.timestamp()) * 10**9 + int(nanos)
    return int(ts.timestamp() * 1e9)


def convert(series: Any) -> Metric:
    """One TimeSeries (``google.cloud.monitoring_v3.TimeSeries``) as a Metric of its newest point;
    Unsupported for a value with no metric here, IndexError for a series without points."""
    point = max(series.points, key=lambda p: _ns(p.interval.end_time))
    value_type = int(series.value_type)
    kind_code = int(series.metric_kind)
    v = point.value
    value: float | HistogramValue
    if value_type == _DISTRIBUTION:
        value, kind = histogram(v.distribution_value), MetricKind.HISTOGRAM
    elif value_type == _DOUBLE:
        value, kind = float(v.double_value), MetricKind.GAUGE
    elif value_type == _INT64:
        value, kind = float(v.int64_value), MetricKind.GAUGE
    elif value_type == _BOOL:
        value, kind = 1.0 if v.bool_value else 0.0, MetricKind.GAUGE
    else:
        raise Unsupported(f"value type {value_type} (string or money)")
    start_ns = None
    if kind_code == _CUMULATIVE:
        start_ns = _ns(point.interval.start_time) or None
        if kind is MetricKind.GAUGE:
            kind = MetricKind.COUNTER
    attrs: dict[str, str] = {prometheus_part(k): str(val) for k, val in series.resource.labels.items()}
    attrs.update((prometheus_part(k), str(val)) for k, val in series.metric.labels.items())
    if series.unit:
        attrs["unit"] = series.unit
    name = metric_name(series.resource.type, series.metric.type)
    return Metric(name, kind, value, "", f"Cloud Monitoring {series.metric.type} of {series.resource.type}", attrs,
                  _ns(point.interval.end_time), start_ns)


# --------------------------------------------------------------------------- the collector


class GcpMonitoringCollector(CloudCollector):
    """Cloud Monitoring metrics by ListTimeSeries (see the module docstring).

    ``client`` is a ``google.cloud.monitoring_v3.MetricServiceClient`` to use instead of the one
    made from the config (the registry makes plugins without it)."""

    config_model: ClassVar[type[PluginConfig]] = GcpConfig
    plugin_id = PLUGIN_ID
    own_metrics = cloud_metrics("gcp_monitoring", "ListTimeSeries")
    log = log

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID,
            name="Google Cloud Monitoring metrics",
            version="0.1.0",
            author="monbridge",
            description="Cloud Monitoring time series of configured metric types, by ListTimeSeries",
            plugin_type=PluginType.METRIC_COLLECTOR,
        )

    def _close(self, client: Any) -> None:
        client.transport.close()

    def _target(self, cfg: GcpConfig) -> dict[str, AttributeValue]:
        return {"project_id": cfg.project_id}

    # ----------------------------------------------------------------- calls (worker thread)

    def _make_client(self, cfg: GcpConfig) -> Any:
        from google.cloud import monitoring_v3

        options = {"api_endpoint": cfg.api_endpoint} if cfg.api_endpoint else None
        return monitoring_v3.MetricServiceClient(client_options=options)

    def _collect(self, cfg: GcpConfig, now: float) -> list[Metric]:
        import google.auth.exceptions
        from google.api_core import exceptions as api_exceptions

        state = self._state
        out: list[Metric] = []
        what = f"gcp ListTimeSeries (project {cfg.project_id})"
        if self._client is None:
            try:
                self._client = self._make_client(cfg)
            except google.auth.exceptions.DefaultCredentialsError as e:
                state.up = False
                state.failed(log, "credentials", what, f"no Application Default Credentials: {str(e)[:300]}")
                return out
        budget = cfg.max_series
        timeout = min(cfg.timeout or cfg.collection_interval, 60.0)
        for req in requests(cfg, now):
            where = f"{what} {req.where} {req.metric.type}"
            try:
                found = self._list(req, budget, timeout, out)
            except api_exceptions.GoogleAPICallError as e:
                state.up = False
                status = e.grpc_status_code or e.code  # PERMISSION_DENIED, else the HTTP status
                code = getattr(status, "name", None) or str(status or "error")
                state.failed(log, prometheus_part(str(code)).lower(), where, f"{code}: {e.message}")
                continue
            except google.auth.exceptions.GoogleAuthError as e:
                state.up = False
                state.failed(log, "credentials", where, f"{type(e).__name__}: {str(e)[:300]}")
                continue
            except api_exceptions.RetryError as e:
                state.up = False
                state.failed(log, "timeout", where, str(e)[:300])
                continue
            state.recovered(log, where)
            budget -= found
            if found == 0:
                state.without_data += 1
            if budget <= 0:
                if found:
                    state.failed(log, "max_series", what, f"max_series ({cfg.max_series}) reached: the rest "
                                                          "of the metrics is not read this collection")
                break
        return out

    def _list(self, req: Request, budget: int, timeout: float, out: list[Metric]) -> int:
        """List one request's series into ``out``, at most ``budget``; returns how many were read."""
        from google.cloud import monitoring_v3

        state = self._state
        state.requests += 1
        pager = self._client.list_time_series(request=monitoring_v3.ListTimeSeriesRequest(req.body), timeout=timeout)
        found = 0
        pages: Iterable[Any] = pager.pages
        for i, page in enumerate(pages):
            if i:
                state.requests += 1
            for series in page.time_series:
                if found >= budget:
                    return found
                found += 1
                try:
                    out.append(convert(series))
                except Unsupported as e:
                    state.failed(log, "unsupported_value", f"gcp {req.where} {series.metric.type}", str(e))
                except ValueError:  # no points: nothing to report
                    pass
        return found

