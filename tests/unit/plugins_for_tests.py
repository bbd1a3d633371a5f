"""Small collectors used by the core's unit tests: a steady one, a hanging one, a failing one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import SecretStr

from bridge import CollectorConfig, Metric, MetricCollectorPlugin, MetricKind, PluginMetadata, PluginType


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

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(self.plugin_id, "steady", "1.0", "tests", "a steady gauge", PluginType.METRIC_COLLECTOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.value = self.parse_config(config).value
        self.events.append("initialize")

    async def collect_metrics(self) -> Sequence[Metric]:
        self.calls.append(time.monotonic())
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
        self.calls.append(time.monotonic())
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
        self.calls.append(time.monotonic())
        raise RuntimeError("backend said no")


class SwallowingCollector(SteadyCollector):
    """Swallows every cancellation of its collection; ends it only when ``release`` is set."""

    plugin_id = "monitoring.metrics.swallowing"

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.cancellations = 0

    async def collect_metrics(self) -> Sequence[Metric]:
        self.calls.append(time.monotonic())
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
            self.calls.append(time.monotonic())
            return await SteadyCollector.collect_metrics(self)
        return await super().collect_metrics()

    async def stop(self) -> None:
        await self._hang()

    async def shutdown(self) -> None:
        await self._hang()
