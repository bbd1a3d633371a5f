"""Small plugins used by the core's unit tests: a steady collector, a hanging one, a failing one; an
integration with only the specification's ``export_metrics``; an export sink made of a function."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import SecretStr

from bridge import (
    Alert,
    CollectorConfig,
    ExportResult,
    Metric,
    MetricBatch,
    MetricCollectorPlugin,
    MetricKind,
    MonitoringIntegrationPlugin,
    PluginMetadata,
    PluginType,
)


class SteadyConfig(CollectorConfig):
    value: float = 1.0
    password: SecretStr | None = None


class SteadyCollector(MetricCollectorPlugin):
    """Reports one gauge and records when it was called."""

    config_model: ClassVar[type[CollectorConfig]] = SteadyConfig
    plugin_id = "monitoring.metrics.steady"

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.events: list[str] = []
        self.value = 1.0
        self.clock: Callable[[], float] = time.monotonic  # what ``calls`` are timed by (a test's clock)

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(self.plugin_id, "steady", "1.0", "tests", "a steady gauge", PluginType.METRIC_COLLECTOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.value = self.parse_config(config).value
        self.events.append("initialize")

    async def collect_metrics(self) -> Sequence[Metric]:
        self.calls.append(self.clock())
        return [Metric("steady.value", MetricKind.GAUGE, self.value, "1", "a value", {"k": "v"})]

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")

    async def shutdown(self) -> None:
        self.events.append("shutdown")


class HangingCollector(SteadyCollector):
    plugin_id = "monitoring.metrics.hanging"

    async def collect_metrics(self) -> Sequence[Metric]:
        self.calls.append(self.clock())
        await asyncio.sleep(3600)
        return []


class FailingCollector(SteadyCollector):
    """Raises on every collection, or only in initialize when ``fail_initialize`` is set."""

    plugin_id = "monitoring.metrics.failing"
    instances: ClassVar[list[FailingCollector]] = []

    def __init__(self) -> None:
        super().__init__()
        FailingCollector.instances.append(self)

    async def collect_metrics(self) -> Sequence[Metric]:
        self.calls.append(self.clock())
        raise RuntimeError("backend said no")


class SwallowingCollector(SteadyCollector):
    """Swallows every cancellation of its collection; ends it only when ``release`` is set."""

    plugin_id = "monitoring.metrics.swallowing"

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.cancellations = 0

    async def collect_metrics(self) -> Sequence[Metric]:
        self.calls.append(self.clock())
        await self._hang()
        return []

    async def _hang(self) -> None:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancellations += 1
                print(f"{self.plugin_id}: cancellation swallowed", flush=True)


class StuckCollector(SwallowingCollector):
    """Collects once; then its collections, ``stop`` and ``shutdown`` hang, swallowing cancellation."""

    plugin_id = "monitoring.metrics.stuck"

    async def collect_metrics(self) -> Sequence[Metric]:
        if not self.calls:
            self.calls.append(self.clock())
            return await SteadyCollector.collect_metrics(self)
        return await super().collect_metrics()

    async def stop(self) -> None:
        await self._hang()

    async def shutdown(self) -> None:
        await self._hang()


class SpecIntegration(MonitoringIntegrationPlugin):
    """An integration written to the specification only: ``export_metrics`` and ``shutdown()``
    without a timeout. ``fail`` makes its export raise."""

    plugin_id = "monitoring.integration.spec"

    def __init__(self) -> None:
        self.exported: list[list[Metric]] = []
        self.fail: Exception | None = None
        self.shutdowns = 0

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(self.plugin_id, "spec", "1.0", "tests", "export_metrics only", PluginType.INTEGRATION)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        pass

    async def shutdown(self) -> None:  # type: ignore[override]  # the specification's signature
        self.shutdowns += 1

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        if self.fail is not None:
            raise self.fail
        self.exported.append(list(metrics))

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        pass

    async def import_metrics(self) -> Sequence[Metric]:
        return []

    async def import_alerts(self) -> Sequence[Alert]:
        return []


class FunctionSink:
    """An export sink whose export is ``fn(batch, timeout)``; it counts flushes and shutdowns
    (a second shutdown does nothing)."""

    def __init__(self, fn: Callable[[MetricBatch, float], Awaitable[ExportResult]], flushed: bool = True) -> None:
        self.fn = fn
        self.flushed = flushed
        self.flushes: list[float] = []
        self.shutdowns = 0
        self._shut = False

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        return await self.fn(batch, timeout)

    async def force_flush(self, timeout: float) -> bool:
        self.flushes.append(timeout)
        return self.flushed

    async def shutdown(self, timeout: float | None = None) -> None:
        if not self._shut:
            self._shut = True
            self.shutdowns += 1
