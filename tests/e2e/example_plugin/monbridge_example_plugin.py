"""A minimal third-party monbridge collector: one gauge, ``example.value``, with a configurable value.

It lives outside the ``monbridge`` distribution and is found only through its
``monbridge.collectors`` entry point, the way any third-party plugin is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import bridge


class ExampleConfig(bridge.CollectorConfig):
    value: float = 42.0


class ExampleCollector(bridge.MetricCollectorPlugin):
    config_model: ClassVar[type[bridge.PluginConfig]] = ExampleConfig

    def __init__(self) -> None:
        self._config = ExampleConfig()

    def metadata(self) -> bridge.PluginMetadata:
        return bridge.PluginMetadata(
            id="monitoring.metrics.example",
            name="Example collector",
            version="0.1.0",
            author="monbridge authors",
            description="Reports one constant gauge, example.value",
            plugin_type=bridge.PluginType.METRIC_COLLECTOR,
        )

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self._config = self.parse_config(config)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def collect_metrics(self) -> Sequence[bridge.Metric]:
        return [
            bridge.Metric(
                name="example.value",
                kind=bridge.MetricKind.GAUGE,
                value=self._config.value,
                unit="1",
                description="A constant taken from the plugin's config",
                attributes={"source": "example"},
            )
        ]
