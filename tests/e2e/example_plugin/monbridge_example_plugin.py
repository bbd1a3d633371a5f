"""A minimal third-party monbridge collector: one gauge, ``example.value``, with a configurable value,
and optionally a pre-aggregated histogram, ``example.latency``, with the buckets it is given.

It lives outside the ``monbridge`` distribution and is found only through its
``monbridge.collectors`` entry point, the way any third-party plugin is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import time
from typing import Any, ClassVar

import bridge


class ExampleHistogram(bridge.PluginConfig):
    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    sum: float


class ExampleConfig(bridge.CollectorConfig):
    value: float = 42.0
    histogram: ExampleHistogram | None = None


class ExampleCollector(bridge.MetricCollectorPlugin):
    config_model: ClassVar[type[bridge.PluginConfig]] = ExampleConfig

    def __init__(self) -> None:
        self._config = ExampleConfig()
        self._started_ns = time.time_ns()

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
        out = []
        h = self._config.histogram
        if h is not None:
            # Pre-aggregated: cumulative since the plugin started, reaching exporters as it is.
            out.append(bridge.Metric(
                name="example.latency",
                kind=bridge.MetricKind.HISTOGRAM,
                value=bridge.HistogramValue(h.bounds, h.bucket_counts, h.sum, sum(h.bucket_counts)),
                unit="s",
                description="A histogram taken from the plugin's config",
                attributes={"source": "example"},
                start_time_ns=self._started_ns,
            ))
        return out + [
            bridge.Metric(
                name="example.value",
                kind=bridge.MetricKind.GAUGE,
                value=self._config.value,
                unit="1",
                description="A constant taken from the plugin's config",
                attributes={"source": "example"},
            )
        ]
