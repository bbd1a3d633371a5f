"""monbridge core: plugin API, registry, supervisor, config, meter pipeline and HTTP server.

The plugin API's names (``bridge.Metric`` and so on, from ``bridge.api``) are loaded when first
used, so ``import bridge`` (for ``__version__``: ``monbridge --version``) loads nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.api import (
        Alert,
        AlertProcessorPlugin,
        AlertState,
        CollectorConfig,
        ComponentDefinition,
        ComponentEvent,
        DashboardComponentPlugin,
        ExponentialHistogramValue,
        ExportResult,
        ExportSink,
        ExportStatus,
        FamilyView,
        HistogramValue,
        IntegrationConfig,
        Metric,
        MetricBatch,
        MetricCollectorPlugin,
        MetricKind,
        MonitoringIntegrationPlugin,
        Plugin,
        PluginConfig,
        PluginError,
        PluginMetadata,
        PluginType,
        PrometheusView,
        SeriesView,
        SummaryValue,
    )

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AlertProcessorPlugin",
    "AlertState",
    "CollectorConfig",
    "ComponentDefinition",
    "ComponentEvent",
    "DashboardComponentPlugin",
    "ExponentialHistogramValue",
    "ExportResult",
    "ExportSink",
    "ExportStatus",
    "FamilyView",
    "HistogramValue",
    "IntegrationConfig",
    "Metric",
    "MetricBatch",
    "MetricCollectorPlugin",
    "MetricKind",
    "MonitoringIntegrationPlugin",
    "Plugin",
    "PluginConfig",
    "PluginError",
    "PluginMetadata",
    "PluginType",
    "PrometheusView",
    "SeriesView",
    "SummaryValue",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        from bridge import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
