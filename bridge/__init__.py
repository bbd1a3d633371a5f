"""monbridge core: plugin API, registry, supervisor, config, meter pipeline and HTTP server."""

from bridge.api import (
    Alert,
    AlertProcessorPlugin,
    AlertState,
    CollectorConfig,
    ComponentDefinition,
    ComponentEvent,
    DashboardComponentPlugin,
    HistogramValue,
    IntegrationConfig,
    Metric,
    MetricCollectorPlugin,
    MetricKind,
    MonitoringIntegrationPlugin,
    Plugin,
    PluginConfig,
    PluginError,
    PluginMetadata,
    PluginType,
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
    "HistogramValue",
    "IntegrationConfig",
    "Metric",
    "MetricCollectorPlugin",
    "MetricKind",
    "MonitoringIntegrationPlugin",
    "Plugin",
    "PluginConfig",
    "PluginError",
    "PluginMetadata",
    "PluginType",
    "SummaryValue",
    "__version__",
]
