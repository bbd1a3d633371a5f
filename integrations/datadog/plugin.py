"""``monitoring.integration.datadog``: DogStatsD and Datadog intake in, the Datadog API out.

One integration, three parts, each started only where its config section is given
(``integrations.datadog.config``):

* ``dogstatsd`` (``integrations.datadog.dsd_server``): a DogStatsD server on UDP and/or a Unix
  datagram socket, aggregating per flush interval as the Datadog Agent does;
* ``intake`` (``integrations.datadog.intake``): the HTTP routes Datadog Agents and API clients
  submit series and check runs to;
* ``export`` (``integrations.datadog.export``): the pipeline's metrics, and alerts as events and
  service checks, to Datadog's API; the export sink ``datadog``.

What the servers take enters the pipeline through the integration's push ingest, a part of it each
(``MetricIngest.part``: their own expiry and series bounds); events and
service checks they receive become alerts through ``import_alerts``. One part's failure is that
part's: a listener that cannot bind fails ``initialize`` naming it, and nothing else is started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from bridge.api import (
    Alert,
    ExportSink,
    Metric,
    MetricIngest,
    MonitoringIntegrationPlugin,
    PluginConfig,
    PluginError,
    PluginMetadata,
    PluginType,
)
from integrations.datadog.config import DatadogConfig

__all__ = ["PLUGIN_ID", "DatadogIntegration"]

PLUGIN_ID = "monitoring.integration.datadog"
log = logging.getLogger("monbridge.datadog")
#: Seconds a part may take to stop (its listener closed, its queue flushed).
STOP_TIMEOUT_S = 10.0


class _Server(Protocol):
    """A receiving part (DogStatsD, intake)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def round(self) -> None:
        """Called each import round: expire what is due, push the part's self-metrics."""

    def take_alerts(self) -> list[Alert]:
        """Alerts raised or resolved since the last call (events, service checks)."""


class DatadogIntegration(MonitoringIntegrationPlugin):
    """DogStatsD and Datadog intake in, the Datadog API out."""

    config_model: ClassVar[type[PluginConfig]] = DatadogConfig

    def __init__(self) -> None:
        self.config: DatadogConfig | None = None
        self._ingest: MetricIngest | None = None
        self._servers: dict[str, _Server] = {}
        self._exporter: Any = None
        self._shut = False

    def bind_ingest(self, ingest: MetricIngest) -> None:
        self._ingest = ingest

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID,
            name="Datadog",
            version="0.1.0",
            author="monbridge",
            description="DogStatsD and Datadog intake in, metrics, events and service checks out to Datadog",
            plugin_type=PluginType.INTEGRATION,
        )

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg: DatadogConfig = config if isinstance(config, DatadogConfig) else self.parse_config(config)
        self.config = cfg
        if (cfg.dogstatsd is not None or cfg.intake is not None) and self._ingest is None:
            raise PluginError(f"{PLUGIN_ID}: dogstatsd and intake need the pipeline's ingest (bind_ingest) "
                              "before initialize")
        try:
            if cfg.export is not None:
                from integrations.datadog.export import DatadogExporter

                self._exporter = DatadogExporter(cfg.export)
                await self._exporter.start()
            if cfg.dogstatsd is not None:
                from integrations.datadog.dsd_server import DogStatsDServer

                assert self._ingest is not None
                await self._start("dogstatsd", DogStatsDServer(cfg.dogstatsd, self._ingest.part("dogstatsd")))
            if cfg.intake is not None:
                from integrations.datadog.intake import IntakeServer

                assert self._ingest is not None
                await self._start("intake", IntakeServer(cfg.intake, self._ingest.part("intake")))
        except BaseException:
            await self.shutdown()
            raise

    async def _start(self, name: str, server: _Server) -> None:
        try:
            await server.start()
        except OSError as e:
            raise PluginError(f"{PLUGIN_ID}: {name}: cannot listen: {e.strerror or e}") from None
        self._servers[name] = server

    def export_sinks(self) -> Mapping[str, ExportSink]:
        return {} if self._exporter is None else {"datadog": self._exporter}

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        """The specification's export: only through the ``datadog`` sink (``export``)."""
        if self._exporter is None:
            return
        from bridge.api import ExportResult

        result: ExportResult = await self._exporter.export_metrics(metrics)
        if not result.ok:
            raise PluginError(f"{PLUGIN_ID}: export: {result.reason}")

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        if self._exporter is not None and self.config is not None and self.config.export is not None \
                and self.config.export.alerts:
            await self._exporter.export_alerts(alerts)

    async def import_metrics(self) -> Sequence[Metric]:
        for server in self._servers.values():
            server.round()
        return [] if self._exporter is None else self._exporter.self_metrics()

    async def import_alerts(self) -> Sequence[Alert]:
        alerts: list[Alert] = []
        for server in self._servers.values():
            alerts.extend(server.take_alerts())
        return alerts

    async def force_flush(self, timeout: float) -> bool:
        return True if self._exporter is None else bool(await self._exporter.force_flush(timeout))

    async def shutdown(self, timeout: float | None = None) -> None:
        if self._shut:
            return
        self._shut = True
        servers, self._servers = self._servers, {}
        for name, server in servers.items():
            try:
                await asyncio.wait_for(server.stop(), STOP_TIMEOUT_S if timeout is None else timeout)
            except Exception as e:  # noqa: BLE001 - one part's failure to stop does not keep the others up
                log.warning("datadog: %s did not stop cleanly: %s: %s", name, type(e).__name__, e)
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            await exporter.shutdown(STOP_TIMEOUT_S if timeout is None else timeout)
