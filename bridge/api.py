"""The plugin API: the specification's four plugin traits as async ABCs, and the types they exchange.

Everything a plugin author needs is importable from ``bridge`` (see ``bridge/__init__.py``).
Values crossing the API are plain data (dataclasses of str/float/int, JSON-like dicts), so a
plugin can later be hosted in a worker process or a WASM sandbox without changing it. The
data types and hooks are defined in ``bridge.apitypes`` and loaded when one is first used.
"""

from __future__ import annotations

import abc
import enum
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bridge.lazy import lazy_names

if TYPE_CHECKING:  # the data types and hooks (bridge.apitypes) are loaded when one is first used
    from bridge.apitypes import (
        Alert,
        AlertContextHook,
        AlertSourceHook,
        AlertState,
        AttributeValue,
        ComponentDefinition,
        ComponentEvent,
        EscalationHook,
        ExponentialHistogramValue,
        ExportPreviewHook,
        ExportResult,
        ExportSink,
        ExportStatus,
        FamilyView,
        GroupingHook,
        GroupingSettings,
        HistogramValue,
        IngestResult,
        Metric,
        MetricBatch,
        MetricIngest,
        MetricKind,
        MuteHook,
        NotificationPreviewHook,
        NotifierHook,
        PluginMetadata,
        PrometheusView,
        ReportHook,
        SeriesView,
        SummaryValue,
        TelemetryExporterHook,
        TestReport,
        export_failure,
    )

__all__ = [
    "Alert",
    "AttributeValue",
    "AlertState",
    "AlertProcessorPlugin",
    "CollectorConfig",
    "ExponentialHistogramValue",
    "ExportResult",
    "ExportSink",
    "ExportStatus",
    "export_failure",
    "FamilyView",
    "MetricBatch",
    "PrometheusView",
    "SeriesView",
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


class PluginConfig(BaseModel):
    """Base of every plugin's typed config model: unknown keys are errors, and validation errors
    never quote the input (it may be a secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, defer_build=True)


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


__all__ += [
    "AlertContextHook",
    "AlertSourceHook",
    "EscalationHook",
    "GroupingHook",
    "GroupingSettings",
    "MuteHook",
    "NotifierHook",
    "TelemetryExporterHook",
    "ReportHook",
    "TestReport",
    "ExportPreviewHook",
    "NotificationPreviewHook",
]


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

    Its export side is the ``ExportSink`` contract: ``export(batch, timeout)`` (by default the
    specification's ``export_metrics`` with ``batch.metrics()``; an exception becomes a
    retryable result with the reason), ``force_flush(timeout)`` and an idempotent
    ``shutdown(timeout)``. An integration that exports to several places returns one sink per
    place from ``export_sinks``.
    """

    plugin_type = PluginType.INTEGRATION
    config_model: ClassVar[type[PluginConfig]] = IntegrationConfig
    #: The names of imported metrics are Prometheus names (``node_cpu_seconds_total``,
    #: ``job:rate5m``): they are exposed and exported as they are, not translated from OTel names.
    imports_prometheus_names: ClassVar[bool] = False

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        """Export one batch; the default hands ``batch.metrics()`` to ``export_metrics``."""
        from bridge.apitypes import ExportResult, export_failure

        try:
            await self.export_metrics(batch.metrics())
        except Exception as e:  # noqa: BLE001 - the contract reports failures, it does not raise them
            return export_failure(e)
        return ExportResult.success()

    async def force_flush(self, timeout: float) -> bool:
        """Deliver what the integration buffered; nothing by default."""
        return True

    @abc.abstractmethod
    async def shutdown(self, timeout: float | None = None) -> None:
        """Release the integration (within ``timeout`` seconds when given); a second call does
        nothing. The specification's ``shutdown()`` (no argument) still overrides it."""

    def export_sinks(self) -> Mapping[str, ExportSink]:
        """Where this integration exports, by sink name. The supervisor exports the round's
        batch to each sink on its own, within the round's timeout, and keeps its state: one sink's
        failure is that sink's (shown in ``/api/v1/plugins``), never the plugin's or another
        sink's. The default is one sink, ``export``: the integration itself."""
        return {"export": self}

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


#: The data types and hooks, defined in ``bridge.apitypes``, loaded with it when one is first used
#: (PEP 562): checking a config needs only the plugin types and ids, the config models and the ABCs.
__getattr__, __dir__ = lazy_names(__name__, dict.fromkeys(
    [name for name in __all__ if name not in globals()], "bridge.apitypes"), globals())
