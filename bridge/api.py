"""The plugin API: the specification's four plugin traits as async ABCs, and the types they exchange.

Everything a plugin author needs is importable from ``bridge`` (see ``bridge/__init__.py``).
Values crossing the API are plain data (dataclasses of str/float/int, JSON-like dicts), so a
plugin can later be hosted in a worker process or a WASM sandbox without changing it.
"""

from __future__ import annotations

import abc
import enum
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "Alert",
    "AttributeValue",
    "AlertState",
    "AlertProcessorPlugin",
    "CollectorConfig",
    "ExponentialHistogramValue",
    "ExportResult",
    "ExportStatus",
    "IntegrationConfig",
    "ComponentDefinition",
    "ComponentEvent",
    "DashboardComponentPlugin",
    "HistogramValue",
    "Metric",
    "MetricCollectorPlugin",
    "MetricKind",
    "MonitoringIntegrationPlugin",
    "HttpUrl",
    "IngestResult",
    "MetricIngest",
    "Plugin",
    "PluginConfig",
    "PluginError",
    "PluginMetadata",
    "PluginType",
    "SummaryValue",
    "http_url",
    "validate_plugin_id",
]

AttributeValue = str | bool | int | float


class PluginError(Exception):
    """A plugin failed; the message is safe to log (it never carries secret values)."""


class PluginType(enum.StrEnum):
    """The four plugin types of the specification; the value is the spec's type name."""

    METRIC_COLLECTOR = "metric_collector"
    DASHBOARD_COMPONENT = "dashboard_component"
    ALERT_PROCESSOR = "alert_processor"
    INTEGRATION = "integration"

    @property
    def id_kind(self) -> str:
        """The ``<kind>`` part of plugin ids of this type (``monitoring.<kind>.<name>``)."""
        return _ID_KIND[self]

    @property
    def entry_point_group(self) -> str:
        return _EP_GROUP[self]


_ID_KIND = {
    PluginType.METRIC_COLLECTOR: "metrics",
    PluginType.DASHBOARD_COMPONENT: "dashboard",
    PluginType.ALERT_PROCESSOR: "alerts",
    PluginType.INTEGRATION: "integration",
}
_EP_GROUP = {
    PluginType.METRIC_COLLECTOR: "monbridge.collectors",
    PluginType.DASHBOARD_COMPONENT: "monbridge.dashboard_components",
    PluginType.ALERT_PROCESSOR: "monbridge.alert_processors",
    PluginType.INTEGRATION: "monbridge.integrations",
}

_PLUGIN_ID = re.compile(r"^monitoring\.(metrics|dashboard|alerts|integration)\.[a-z0-9][a-z0-9_\-]*(\.[a-z0-9][a-z0-9_\-]*)*$")


def validate_plugin_id(plugin_id: str, plugin_type: PluginType | None = None) -> str:
    """Return ``plugin_id`` if it has the form ``monitoring.<kind>.<name>``, else raise ValueError."""
    m = _PLUGIN_ID.match(plugin_id)
    if not m:
        raise ValueError(
            f"invalid plugin id {plugin_id!r}: expected 'monitoring.<kind>.<name>' with kind one of "
            "metrics, dashboard, alerts, integration and a lower-case name"
        )
    if plugin_type is not None and m.group(1) != plugin_type.id_kind:
        raise ValueError(
            f"plugin id {plugin_id!r} does not match its type {plugin_type.value}: "
            f"expected 'monitoring.{plugin_type.id_kind}.<name>'"
        )
    return plugin_id


@dataclass(frozen=True, slots=True)
class PluginMetadata:
    id: str
    name: str
    version: str
    author: str
    description: str
    plugin_type: PluginType


class PluginConfig(BaseModel):
    """Base of every plugin's typed config model: unknown keys are errors, and validation errors
    never quote the input (it may be a secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def http_url(v: str) -> str:
    """``v`` if it is an http:// or https:// URL with a host, else ValueError (for config validators)."""
    u = urllib.parse.urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return v


#: A config field holding an http(s) URL with a host (checked by ``http_url``).
HttpUrl = Annotated[str, AfterValidator(http_url)]


class CollectorConfig(PluginConfig):
    """Scheduling settings every collector has; the supervisor reads them."""

    collection_interval: float = Field(default=15.0, gt=0, description="seconds between collections")
    timeout: float | None = Field(default=None, gt=0, description="seconds one collection may take (default: the interval)")


class IntegrationConfig(PluginConfig):
    """Scheduling settings every integration has; the supervisor reads them."""

    interval: float = Field(default=15.0, gt=0, description="seconds between import/export rounds")
    timeout: float | None = Field(default=None, gt=0, description="seconds one round may take (default: the interval)")


# --------------------------------------------------------------------------- metrics


class MetricKind(enum.StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"  # monotonic sum, cumulative
    UP_DOWN_COUNTER = "updowncounter"  # non-monotonic sum, cumulative
    HISTOGRAM = "histogram"  # explicit-bucket histogram, cumulative
    SUMMARY = "summary"  # quantiles, sum and count as a source computed them (Prometheus summaries)
    EXPONENTIAL_HISTOGRAM = "exponential_histogram"  # OTel base-2 exponential histogram, cumulative


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """Explicit-bucket histogram: ``bucket_counts[i]`` counts values in ``(bounds[i-1], bounds[i]]``
    (not cumulative, OTel's layout); the last bucket is ``(bounds[-1], +Inf)``."""

    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    sum: float
    count: int
    min: float | None = None
    max: float | None = None
    #: The ``le`` label values as an imported histogram's source wrote them ("1" or "1.0"):
    #: Prometheus 2 keeps them as text, so re-exposed with other text they would be other series.
    le_labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.bucket_counts) != len(self.bounds) + 1:
            raise ValueError(
                f"histogram has {len(self.bounds)} bounds and {len(self.bucket_counts)} bucket counts; "
                "expected len(bounds) + 1 bucket counts"
            )
        if any(b >= a for a, b in zip(self.bounds[1:], self.bounds, strict=False)):
            raise ValueError("histogram bounds must be strictly increasing")
        if self.le_labels is not None and len(self.le_labels) != len(self.bucket_counts):
            raise ValueError("histogram le_labels must name every bucket, +Inf included")


@dataclass(frozen=True, slots=True)
class SummaryValue:
    """A summary as its source computed it: ``quantiles`` are (quantile, value) pairs, with
    ``sum`` and ``count`` of the observations since ``start_time_ns``."""

    quantiles: tuple[tuple[float, float], ...]
    sum: float
    count: float
    #: The ``quantile`` label values as an imported summary's source wrote them (see HistogramValue.le_labels).
    quantile_labels: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ExponentialHistogramValue:
    """OTel's base-2 exponential histogram (OTLP ``ExponentialHistogramDataPoint``), as it came.

    With ``base = 2 ** (2 ** -scale)``, ``positive_counts[i]`` counts values in
    ``(base ** (positive_offset + i), base ** (positive_offset + i + 1)]``; ``negative_counts``
    mirror it for negative values; ``zero_count`` counts values within ``zero_threshold`` of 0.
    The counts are per bucket (not cumulative).
    """

    scale: int
    zero_count: int
    positive_offset: int
    positive_counts: tuple[int, ...]
    negative_offset: int
    negative_counts: tuple[int, ...]
    count: int
    sum: float | None = None
    zero_threshold: float = 0.0
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if not -10 <= self.scale <= 20:
            raise ValueError(f"exponential histogram scale {self.scale} is outside [-10, 20]")


@dataclass(slots=True)
class Metric:
    """One series' value at one time.

    ``start_time_ns`` is the start of a cumulative sum or histogram; a Metric that carries one
    (or any histogram) is pre-aggregated and reaches exporters as it is. Timestamps are Unix
    nanoseconds; ``timestamp_ns`` defaults to the time of collection.
    """

    name: str
    kind: MetricKind
    value: float | HistogramValue | SummaryValue
    unit: str = ""
    description: str = ""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    timestamp_ns: int | None = None
    start_time_ns: int | None = None

    def __post_init__(self) -> None:
        c = self.value.__class__
        if (c is float or c is int) and self.kind not in _AGGREGATES:
            # The common case, checked first and with module constants (an enum member looked up
            # on its class costs more than this whole check): a Metric is built per series per collection.
            return
        if (self.kind is MetricKind.HISTOGRAM) != isinstance(self.value, HistogramValue):
            raise ValueError(f"metric {self.name!r}: histograms need a HistogramValue and only histograms take one")
        if (self.kind is MetricKind.SUMMARY) != isinstance(self.value, SummaryValue):
            raise ValueError(f"metric {self.name!r}: summaries need a SummaryValue and only summaries take one")
        if (self.kind is MetricKind.EXPONENTIAL_HISTOGRAM) != isinstance(self.value, ExponentialHistogramValue):
            raise ValueError(f"metric {self.name!r}: exponential histograms need an ExponentialHistogramValue "
                             "and only they take one")

    @property
    def preaggregated(self) -> bool:
        return self.kind in _AGGREGATES or self.start_time_ns is not None


_AGGREGATES = frozenset((MetricKind.HISTOGRAM, MetricKind.SUMMARY, MetricKind.EXPONENTIAL_HISTOGRAM))


# --------------------------------------------------------------------------- export results


class ExportStatus(enum.StrEnum):
    SUCCESS = "success"
    RETRYABLE = "retryable"  # the same data may succeed later (a backend outage, 429, 5xx)
    PERMANENT = "permanent"  # the data will never be accepted (4xx, bad data): retrying is pointless


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What one export call did (the OTel SDK's ``MetricExportResult``, with the reason).

    ``reason`` is safe to log (no secrets); ``retry_after`` is the backend's ``Retry-After``, in
    seconds, when it sent one.
    """

    status: ExportStatus
    reason: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is ExportStatus.SUCCESS

    @classmethod
    def success(cls) -> ExportResult:
        return _SUCCESS

    @classmethod
    def retryable(cls, reason: str, retry_after: float | None = None) -> ExportResult:
        return cls(ExportStatus.RETRYABLE, reason, retry_after)

    @classmethod
    def permanent(cls, reason: str) -> ExportResult:
        return cls(ExportStatus.PERMANENT, reason)


_SUCCESS = ExportResult(ExportStatus.SUCCESS)


# --------------------------------------------------------------------------- push ingest


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one ``MetricIngest.push`` took: ``accepted`` points, ``rejected`` ones by reason
    (``cardinality``, ``conflict``, ``invalid_name``, ``out_of_order``, ...), and ``message``, a
    short text naming what was rejected and why (empty when nothing was), safe to send back."""

    accepted: int
    rejected: Mapping[str, int] = field(default_factory=dict)
    message: str = ""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class MetricIngest(Protocol):
    """A push receiver's way into the pipeline, given to an integration by ``bind_ingest``.

    Unlike an import round (which replaces the source's whole series set), a push merges: the
    series it names are set, the others stay. A series not pushed again within ``expire_after``
    seconds expires (from ``/metrics``, and remote write sends its staleness marker), as a
    scraped series that disappears does. The pipeline's limits apply; what they refuse is counted,
    logged and returned, never raised.
    """

    expire_after: float
    #: The most series the integration's pushes may hold at once, and the most metric families
    #: they may create (None: no bound but the cardinality limit's); beyond them points are rejected.
    max_series: int | None
    max_families: int | None

    def push(self, metrics: Sequence[Metric], *, delta: bool = False) -> IngestResult:
        """Merge ``metrics`` into the pipeline. With ``delta`` each value (a number, a
        HistogramValue or an ExponentialHistogramValue) is the change over ``[start_time_ns,
        timestamp_ns]`` and is added to the series' running total (delta to cumulative), when it
        continues it; a point that does not (it starts before the total's last point) is rejected."""
        ...

    def expire(self) -> int:
        """Expire the series not pushed for ``expire_after`` seconds; return how many."""
        ...


# --------------------------------------------------------------------------- alerts and dashboard


class AlertState(enum.StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(slots=True)
class Alert:
    id: str
    name: str
    severity: str
    state: AlertState = AlertState.FIRING
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    value: float | None = None
    starts_at: float = field(default_factory=time.time)
    ends_at: float | None = None
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class ComponentDefinition:
    id: str
    name: str
    kind: str  # chart type or widget kind, e.g. "timeseries", "status"
    description: str = ""
    params_schema: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ComponentEvent:
    component_id: str
    event_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- plugin ABCs


class Plugin(abc.ABC):
    """What every plugin has. ``config_model`` validates the ``config`` block of its entry."""

    plugin_type: ClassVar[PluginType]
    config_model: ClassVar[type[PluginConfig]] = PluginConfig

    @abc.abstractmethod
    def metadata(self) -> PluginMetadata: ...

    @abc.abstractmethod
    async def initialize(self, config: Mapping[str, Any]) -> None:
        """Take the plugin's ``config`` (JSON-like, validated against ``config_model``)."""

    @abc.abstractmethod
    async def shutdown(self) -> None: ...

    @classmethod
    def parse_config(cls, config: Mapping[str, Any]) -> Any:
        return cls.config_model.model_validate(dict(config))


class MetricCollectorPlugin(Plugin):
    plugin_type = PluginType.METRIC_COLLECTOR
    config_model: ClassVar[type[PluginConfig]] = CollectorConfig

    @abc.abstractmethod
    async def collect_metrics(self) -> Sequence[Metric]: ...

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...


class DashboardComponentPlugin(Plugin):
    plugin_type = PluginType.DASHBOARD_COMPONENT

    @abc.abstractmethod
    def get_component_definition(self) -> ComponentDefinition: ...

    @abc.abstractmethod
    async def get_data(self, params: Mapping[str, Any]) -> Any: ...

    @abc.abstractmethod
    async def handle_event(self, event: ComponentEvent) -> None: ...


class AlertProcessorPlugin(Plugin):
    plugin_type = PluginType.ALERT_PROCESSOR

    @abc.abstractmethod
    async def process_alert(self, alert: Alert) -> Alert: ...

    @abc.abstractmethod
    async def handle_acknowledgment(self, alert_id: str) -> None: ...

    @abc.abstractmethod
    async def handle_resolution(self, alert_id: str) -> None: ...


class MonitoringIntegrationPlugin(Plugin):
    """An integration with an outside system.

    Exporters that speak OpenTelemetry natively set ``wants_otel_data`` and implement
    ``export_metrics_data``: the supervisor then hands them the pipeline's
    ``opentelemetry.sdk.metrics.export.MetricsData`` (instrument data from the MeterProvider plus
    pre-aggregated data, not re-aggregated) instead of ``export_metrics``'s list of Metric.
    """

    plugin_type = PluginType.INTEGRATION
    config_model: ClassVar[type[PluginConfig]] = IntegrationConfig
    wants_otel_data: ClassVar[bool] = False
    #: In-process integrations that read the pipeline's families directly (``bridge.pipeline.Family``,
    #: live objects: read them without awaiting in between) set this and implement
    #: ``export_families``, which is then called instead of ``export_metrics``: it spares building a
    #: Metric per series every round on the remote-write hot path.
    wants_families: ClassVar[bool] = False
    #: The names of imported metrics are Prometheus names (``node_cpu_seconds_total``,
    #: ``job:rate5m``): they are exposed and exported as they are, not translated from OTel names.
    imports_prometheus_names: ClassVar[bool] = False

    async def export_metrics_data(self, data: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not take OpenTelemetry MetricsData")

    async def export_families(self, families: Sequence[Any], resource: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not take pipeline families")

    def export_sinks(self) -> Mapping[str, Callable[..., Awaitable[None]]]:
        """Where this integration exports, by sink name: each a coroutine function taking what
        its export method takes (``export_metrics_data``'s MetricsData, ``export_families``'
        families and resource, or ``export_metrics``' metrics). The supervisor calls each sink on
        its own every round, within the round's timeout, and keeps its state: one sink's failure
        is that sink's (shown in ``/api/v1/plugins``), never the plugin's or another sink's. The
        default is one sink, ``export``: the export method."""
        if self.wants_otel_data:
            return {"export": self.export_metrics_data}
        if self.wants_families:
            return {"export": self.export_families}
        return {"export": self.export_metrics}

    def bind_ingest(self, ingest: MetricIngest) -> None:
        """Called once before ``initialize`` with this integration's push ingest handle (see
        ``MetricIngest``). Integrations that receive pushed data keep it; the default ignores it."""

    @abc.abstractmethod
    async def export_metrics(self, metrics: Sequence[Metric]) -> None: ...

    @abc.abstractmethod
    async def export_alerts(self, alerts: Sequence[Alert]) -> None: ...

    @abc.abstractmethod
    async def import_metrics(self) -> Sequence[Metric]: ...

    @abc.abstractmethod
    async def import_alerts(self) -> Sequence[Alert]: ...
