"""A plugin that reports through the OpenTelemetry metrics API (``opentelemetry.metrics.get_meter``)
instead of returning Metrics: its counters, up-down counters, histograms and observable gauges
reach ``/metrics`` and an OTLP push of a running runtime, through the pipeline (the SDK is an input)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import otlp_receiver
import pytest
from opentelemetry import metrics as otel_metrics
from otlp_receiver import attributes, metrics_by_name

from bridge import Metric, MetricCollectorPlugin, PluginMetadata, PluginType
from bridge.config import parse_config
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime

otlp_http_receiver = otlp_receiver.otlp_http_receiver

pytestmark = pytest.mark.integration

PLUGIN = "monitoring.metrics.otelapi"


class OtelApiCollector(MetricCollectorPlugin):
    """Third-party style: instruments from the global meter; ``collect_metrics`` only records."""

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN, "otel api", "1.0", "tests", "reports through opentelemetry.metrics",
                              PluginType.METRIC_COLLECTOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        meter = otel_metrics.get_meter("test.otelapi", "1.2.3")
        self.requests = meter.create_counter("otelapi.requests", unit="{request}", description="requests served")
        self.inflight = meter.create_up_down_counter("otelapi.inflight", unit="{request}")
        self.latency = meter.create_histogram("otelapi.latency", unit="s", description="latency",
                                              explicit_bucket_boundaries_advisory=[0.1, 1.0])
        meter.create_observable_gauge("otelapi.temperature", callbacks=[self._temperature], unit="Cel")
        self.rounds = 0

    def _temperature(self, _options: Any) -> list[otel_metrics.Observation]:
        return [otel_metrics.Observation(21.5, {"sensor": "s1"}), otel_metrics.Observation(-4, {"sensor": "s2"})]

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def collect_metrics(self) -> Sequence[Metric]:
        if self.rounds == 0:  # recorded once: the values are known exactly
            self.requests.add(3, {"route": "/a"})
            self.requests.add(2, {"route": "/a"})
            self.requests.add(1, {"route": "/b"})
            self.inflight.add(5)
            self.inflight.add(-2)
            for v in (0.05, 0.5, 0.7, 3.0):
                self.latency.record(v, {"route": "/a"})
        self.rounds += 1
        return []


async def test_otel_api_instruments_reach_metrics_and_otlp(otlp_http_receiver):
    text = f"""
server: {{listen: "127.0.0.1:0"}}
plugins:
  - plugin_id: {PLUGIN}
    config: {{collection_interval: 0.2}}
  - plugin_id: monitoring.integration.otlp
    config: {{endpoint: "{otlp_http_receiver.endpoint}", interval: 0.3}}
"""
    reg = PluginRegistry().discover()
    reg.register_plugin(PLUGIN, OtelApiCollector)
    rt = Runtime(parse_config(text, "t.yaml", reg, env={}), reg)
    await rt.start()
    host, port = rt.server.bound
    try:
        def complete(r: Any) -> bool:
            m = metrics_by_name(r.request)
            return {"otelapi.requests", "otelapi.inflight", "otelapi.latency", "otelapi.temperature"} <= set(m)

        received = await asyncio.to_thread(otlp_http_receiver.wait_for, complete, 20)
        m = metrics_by_name(received.request)
        req = m["otelapi.requests"]
        assert req.WhichOneof("data") == "sum" and req.sum.is_monotonic and req.unit == "{request}"
        assert req.description == "requests served"
        by_route = {attributes(pt.attributes)["route"]: pt for pt in req.sum.data_points}
        assert (by_route["/a"].as_int, by_route["/b"].as_int) == (5, 1)
        assert 0 < by_route["/a"].start_time_unix_nano < by_route["/a"].time_unix_nano
        inflight = m["otelapi.inflight"]
        assert inflight.WhichOneof("data") == "sum" and not inflight.sum.is_monotonic
        assert [pt.as_int for pt in inflight.sum.data_points] == [3]
        lat = m["otelapi.latency"]
        assert lat.WhichOneof("data") == "histogram"
        (pt,) = lat.histogram.data_points
        assert (list(pt.explicit_bounds), list(pt.bucket_counts), pt.count) == ([0.1, 1.0], [1, 2, 1], 4)
        assert (pt.sum, pt.min, pt.max) == (pytest.approx(4.25), 0.05, 3.0)
        temp = m["otelapi.temperature"]
        assert temp.WhichOneof("data") == "gauge"
        assert {attributes(p.attributes)["sensor"]: getattr(p, p.WhichOneof("value"))
                for p in temp.gauge.data_points} == {"s1": 21.5, "s2": -4}

        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/metrics") as r:
            body = await r.text()
        assert 'otelapi_requests_total{route="/a"} 5' in body
        assert 'otelapi_requests_total{route="/b"} 1' in body
        assert "otelapi_inflight 3" in body
        assert 'otelapi_latency_seconds_bucket{route="/a",le="1.0"} 3' in body
        assert 'otelapi_latency_seconds_count{route="/a"} 4' in body
        assert 'otelapi_temperature_celsius{sensor="s1"} 21.5' in body
    finally:
        await rt.stop()


def test_monbridge_test_shows_what_a_plugin_reports_through_the_api(monkeypatch):
    """``monbridge test --plugin`` collects once and prints the OpenTelemetry API's series too."""
    from click.testing import CliRunner

    import bridge.cli

    def registry() -> PluginRegistry:
        reg = PluginRegistry().discover()
        reg.register_plugin(PLUGIN, OtelApiCollector)
        return reg

    monkeypatch.setattr(bridge.cli, "_registry", registry)
    out = CliRunner().invoke(bridge.cli.main, ["test", "--plugin", PLUGIN])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert any(line.startswith("otelapi.requests") and "route" in line and " 5" in line for line in lines), out.output
    assert any(line.startswith("otelapi.temperature") and "21.5" in line for line in lines), out.output
