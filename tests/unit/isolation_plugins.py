"""Third-party-style plugins for the worker-process tests: importable by a worker by reference
(``tests.unit.isolation_plugins:Class``), each a plugin author's bug or a hostile plugin."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import SecretStr

from bridge import (
    Alert,
    CollectorConfig,
    ExportResult,
    IntegrationConfig,
    Metric,
    MetricBatch,
    MetricCollectorPlugin,
    MetricKind,
    MonitoringIntegrationPlugin,
    PluginMetadata,
    PluginType,
)
from bridge.api import AlertState, ExponentialHistogramValue, HistogramValue, SummaryValue
from bridge.ledger import count_loss

REF = "tests.unit.isolation_plugins"


class MisbehavingConfig(CollectorConfig):
    sleep: float = 0.0  # time.sleep in collect_metrics (blocks the worker's event loop)
    spin: float = 0.0  # a CPU loop of this many seconds in collect_metrics
    exit_code: int | None = None  # os._exit in collect_metrics
    garbage: str | None = None  # hex of bytes written raw to the wire in collect_metrics
    leak_mb: int = 0  # memory kept from every collection on
    token: SecretStr | None = None  # a secret the tests look for in what the agent shows
    drop: int = 0  # items counted as dropped (bridge.ledger) in every collection


class MisbehavingCollector(MetricCollectorPlugin):
    """Well-behaved unless its config says how to misbehave in ``collect_metrics``."""

    config_model: ClassVar[type[CollectorConfig]] = MisbehavingConfig

    def __init__(self) -> None:
        self.cfg = MisbehavingConfig()
        self.kept: list[bytes] = []

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("monitoring.metrics.misbehaving", "misbehaving", "2.5", "tests", "",
                              PluginType.METRIC_COLLECTOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.cfg = self.parse_config(config)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def collect_metrics(self) -> Sequence[Metric]:
        c = self.cfg
        if c.sleep:
            time.sleep(c.sleep)
        if c.spin:
            end = time.monotonic() + c.spin
            while time.monotonic() < end:
                pass
        if c.exit_code is not None:
            os._exit(c.exit_code)
        if c.leak_mb:
            self.kept.append(os.urandom(c.leak_mb << 20))  # touched pages: resident
        if c.drop:
            count_loss("misbehaving", "made_up", c.drop)
        if c.garbage is not None:
            os.write(int(sys.argv[1]), bytes.fromhex(c.garbage))
            time.sleep(5)  # the agent kills the worker meanwhile
        return [Metric("misbehaving.pid", MetricKind.GAUGE, os.getpid(), "", "the worker's pid")]


def all_kinds() -> list[Metric]:
    """One metric of every kind, with every optional part, attribute types and absent keys."""
    h = HistogramValue((0.1, 1.0, 10.0), (1, 2, 3, 4), 55.5, 10, 0.01, 42.0, ("0.1", "1", "10", "+Inf"))
    e = ExponentialHistogramValue(3, 2, -4, (1, 0, 5), -2, (7,), 15, -3.25, 1e-9, -9.0, 11.0)
    return [
        Metric("q.depth", MetricKind.GAUGE, 12.5, "1", "queue depth", {"queue": "a", "prio": 3, "hot": True}),
        Metric("q.depth", MetricKind.GAUGE, -0.0, "1", "queue depth", {"queue": "b"}),
        Metric("q.depth", MetricKind.GAUGE, float("inf"), "1", "queue depth", {"ratio": 0.25, "queue": "ü→"}),
        Metric("q.done", MetricKind.COUNTER, 7.0, "", "", {}, 1_700_000_000_000_000_001, 1_600_000_000_000_000_000),
        Metric("q.inflight", MetricKind.UP_DOWN_COUNTER, -4.0, "", "in flight", {"queue": "a"}),
        Metric("q.bytes", MetricKind.COUNTER, 2**62 + 1, "By", "bytes", {"queue": "a"}),  # ints stay ints
        Metric("q.bytes", MetricKind.COUNTER, 0, "By", "bytes", {"queue": "b"}),
        Metric("q.mixed", MetricKind.GAUGE, 3, "", "", {"queue": "a"}),
        Metric("q.mixed", MetricKind.GAUGE, 3.0, "", "", {"queue": "b"}),
        Metric("q.mixed", MetricKind.GAUGE, 2**70, "", "", {"queue": "c"}),
        Metric("q.latency", MetricKind.HISTOGRAM, h, "s", "latency", {"queue": "a"}, 5, 1),
        Metric("q.latency", MetricKind.HISTOGRAM, HistogramValue((), (3,), 1.5, 3), "s", "latency", {"queue": "b"}),
        Metric("q.size", MetricKind.SUMMARY, SummaryValue(((0.5, 1.0), (0.99, 9.5)), 20.0, 4.0, ("0.5", "0.99")),
               "By", "sizes", {"queue": "a"}),
        Metric("q.size", MetricKind.SUMMARY, SummaryValue((), 0.0, 0.0), "By", "sizes", {"queue": "b"}),
        Metric("q.spread", MetricKind.EXPONENTIAL_HISTOGRAM, e, "ms", "spread", {"queue": "a"}, None, 9),
        Metric("q.spread", MetricKind.EXPONENTIAL_HISTOGRAM,
               ExponentialHistogramValue(0, 0, 0, (), 0, (), 0), "ms", "spread", {"queue": "b"}),
    ]


class AllKindsCollector(MisbehavingCollector):
    async def collect_metrics(self) -> Sequence[Metric]:
        return all_kinds()


class RecordingConfig(IntegrationConfig):
    out: str  # a directory: each export writes what it got there
    answer: str = "success"  # success | retryable
    imported: float = 3.0


class RecordingIntegration(MonitoringIntegrationPlugin):
    """Writes each export's batch (as JSON lines) to its ``out`` directory; imports one gauge."""

    config_model: ClassVar[type[IntegrationConfig]] = RecordingConfig
    imports_prometheus_names: ClassVar[bool] = True

    def __init__(self) -> None:
        self.cfg: RecordingConfig | None = None
        self.n = 0

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("monitoring.integration.recording", "recording", "0.3", "tests", "",
                              PluginType.INTEGRATION)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.cfg = RecordingConfig.model_validate(dict(config))

    async def shutdown(self, timeout: float | None = None) -> None:
        pass

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        assert self.cfg is not None
        self.n += 1
        rows = [{"name": f.name, "kind": f.kind.value, "native": f.native, "prom": s.prom.name,
                 "attributes": dict(s.attributes), "value": s.value, "time_ns": s.time_ns}
                for f in batch.families() for s in f.series]
        Path(self.cfg.out, f"export-{self.n}.json").write_text(json.dumps(
            {"pid": os.getpid(), "timeout": timeout, "rows": rows, "resource": dict(batch.resource_attributes)}))
        if self.cfg.answer == "retryable":
            return ExportResult.retryable("backend said 503", retry_after=2.5)
        return ExportResult.success()

    async def force_flush(self, timeout: float) -> bool:
        return False

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        raise NotImplementedError

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        assert self.cfg is not None
        Path(self.cfg.out, "alerts.json").write_text(json.dumps([[a.name, a.state.value, a.labels] for a in alerts]))

    async def import_metrics(self) -> Sequence[Metric]:
        assert self.cfg is not None
        return [Metric("recording_imported", MetricKind.GAUGE, self.cfg.imported, "", "imported", {"pid": str(os.getpid())})]

    async def import_alerts(self) -> Sequence[Alert]:
        return [Alert("a1", "QueueStuck", "critical", AlertState.FIRING, {"queue": "a"}, {"summary": "stuck"}, 9.0,
                      1_700_000_000.5, None, "fp-1")]
