"""``monitoring.integration.elasticsearch``: metrics, alerts and logs into Elasticsearch as ECS;
Elasticsearch searches (and the cluster's health) as metrics.

Two parts on one client (``integrations.elasticsearch.client``):

* the export (``integrations.elasticsearch.export``): the round's batch into time-series data
  streams, alert transitions into ``logs-monbridge.alerts-<namespace>``, templates installed at
  start; the export sink ``elasticsearch``;
* the import (``integrations.elasticsearch.search``): the configured queries, each on its own
  interval, and cluster health and node stats, as gauges each import round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bridge.api import (
    Alert,
    ExportSink,
    Metric,
    MonitoringIntegrationPlugin,
    PluginConfig,
    PluginMetadata,
    PluginType,
)
from integrations.elasticsearch.config import ElasticsearchConfig

__all__ = ["PLUGIN_ID", "ElasticsearchIntegration"]

PLUGIN_ID = "monitoring.integration.elasticsearch"
log = logging.getLogger("monbridge.elasticsearch")
STOP_TIMEOUT_S = 10.0


class ElasticsearchIntegration(MonitoringIntegrationPlugin):
    """Metrics, alerts and logs into Elasticsearch; searches as metrics."""

    config_model: ClassVar[type[PluginConfig]] = ElasticsearchConfig

    def __init__(self) -> None:
        self.config: ElasticsearchConfig | None = None
        self._client: Any = None
        self._exporter: Any = None
        self._importer: Any = None
        self._shut = False

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID,
            name="Elasticsearch",
            version="0.1.0",
            author="monbridge",
            description="metrics, alerts and logs into Elasticsearch as ECS; searches as metrics",
            plugin_type=PluginType.INTEGRATION,
        )

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg: ElasticsearchConfig = config if isinstance(config, ElasticsearchConfig) else self.parse_config(config)
        self.config = cfg
        from integrations.elasticsearch.client import make_client

        self._client = make_client(cfg)
        try:
            if cfg.export_metrics or cfg.alerts or cfg.logs:
                from integrations.elasticsearch.export import ElasticExporter

                self._exporter = ElasticExporter(cfg, self._client)
                await self._exporter.start()
            if cfg.queries or cfg.cluster_metrics:
                from integrations.elasticsearch.search import SearchImporter

                self._importer = SearchImporter(cfg, self._client)
                await self._importer.start()
        except BaseException:
            await self.shutdown()
            raise

    def export_sinks(self) -> Mapping[str, ExportSink]:
        if self._exporter is None or self.config is None or not self.config.export_metrics:
            return {}
        return {"elasticsearch": self._exporter}

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        if self._exporter is not None:
            await self._exporter.export_metrics(metrics)

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        if self._exporter is not None and self.config is not None and self.config.alerts:
            await self._exporter.export_alerts(alerts)

    def telemetry_exporters(self) -> tuple[None, Any] | None:
        """The alert engine's transition records, as alert events with their trace and span ids
        (``bridge.api.TelemetryExporterHook``)."""
        if self._exporter is None or self.config is None or not self.config.alerts:
            return None
        return self._exporter.telemetry_exporters()  # type: ignore[no-any-return]

    async def import_metrics(self) -> Sequence[Metric]:
        out: list[Metric] = []
        if self._importer is not None:
            out.extend(await self._importer.import_metrics())
        if self._exporter is not None:
            out.extend(self._exporter.self_metrics())
        return out

    async def import_alerts(self) -> Sequence[Alert]:
        return []

    async def force_flush(self, timeout: float) -> bool:
        return True if self._exporter is None else bool(await self._exporter.force_flush(timeout))

    async def shutdown(self, timeout: float | None = None) -> None:
        if self._shut:
            return
        self._shut = True
        t = STOP_TIMEOUT_S if timeout is None else timeout
        importer, self._importer = self._importer, None
        if importer is not None:
            await importer.stop()
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            await exporter.shutdown(t)
        client, self._client = self._client, None
        if client is not None:
            await client.close()
