"""Helpers for the alerting unit tests: an engine on a temporary state directory with in-memory
OTel exporters, small processors and a notifier that record what they are given, and a webhook
receiver (aiohttp on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.alerting.engine import AlertEngine
from bridge.alerting.outbox import RetryPolicy
from bridge.alerting.settings import AlertingSettings
from bridge.api import Alert, AlertProcessorPlugin, Plugin, PluginMetadata, PluginType
from bridge.delivery import REAL_CLOCK, ManualClock
from bridge.notifiers import AlertSuppressed, Notification, Notifier


class Recorder(AlertProcessorPlugin):
    """Records every call; labels each alert it passes on with ``seen_by``."""

    def __init__(self, name: str, log: list[str], suppress: bool = False) -> None:
        self.name = name
        self.log = log
        self.suppress = suppress

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(f"monitoring.alerts.{self.name}", self.name, "1", "tests", "", PluginType.ALERT_PROCESSOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def process_alert(self, alert: Alert) -> Alert:
        self.log.append(f"{self.name}:process:{alert.state.value}")
        if self.suppress:
            raise AlertSuppressed("told to")
        if alert.state.value == "firing":
            alert.labels["seen_by"] = alert.labels.get("seen_by", "") + self.name
        return alert

    async def handle_acknowledgment(self, alert_id: str) -> None:
        self.log.append(f"{self.name}:ack")

    async def handle_resolution(self, alert_id: str) -> None:
        self.log.append(f"{self.name}:resolution")


class CollectingNotifier(Notifier):
    """Keeps every notification; fails the first ``fail`` sends."""

    plugin_id = "monitoring.alerts.collect"

    def __init__(self, fail: int = 0) -> None:
        super().__init__()
        self.sent: list[Notification] = []
        self.fail = fail
        self.arrived = asyncio.Event()

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(self.plugin_id, "collect", "1", "tests", "", PluginType.ALERT_PROCESSOR)

    async def send(self, notification: Notification) -> None:
        if self.fail > 0:
            self.fail -= 1
            from bridge.notifiers import DeliveryError

            raise DeliveryError("receiver down")
        self.sent.append(notification)
        self.arrived.set()


class EngineUnderTest:
    """An engine on ``state`` with ``plugins``; on ``clock`` (a test's ManualClock) when given."""

    def __init__(self, state: Path, plugins: Sequence[tuple[str, Plugin]] = (), clock: ManualClock | None = None,
                 **settings: Any) -> None:
        self.plugins = list(plugins)
        self.clock = clock
        self.engine = AlertEngine(
            AlertingSettings(state_dir=state, **settings),
            plugins=lambda t: [(i, p) for i, p in self.plugins if p.plugin_type is t],
            clock=clock or REAL_CLOCK,
            retry=RetryPolicy(initial=0.02, maximum=0.1),
        )
        self.spans = InMemorySpanExporter()
        self.logs = InMemoryLogRecordExporter()
        self.engine.telemetry.add_processor(SimpleSpanProcessor(self.spans))
        self.engine.telemetry.add_processor(SimpleLogRecordProcessor(self.logs))

    async def quiet(self) -> None:
        """Wait until nothing is in flight on the engine: the chain drained, every write to disk
        done (they run in threads) and what they woke run, so that only timers and waits on the
        clock are left (a bound on the rounds, not on time)."""
        assert self.clock is not None
        o = self.engine.outbox
        last: tuple[int, ...] = ()
        for _ in range(100):
            await self.engine.drain()
            await self.engine.dispatcher.flush()
            await o.flush()
            await self.clock.settle()
            now = (o.delivered_total, o.failed_total, o.superseded_total, len(o.pending()), len(self.clock.pending()),
                   self.engine.chain.queue.qsize() if self.engine.chain.queue is not None else 0)
            if now == last:
                return
            last = now
        raise AssertionError("the engine did not quieten")

    async def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` (firing what falls due), then wait until it is ``quiet``."""
        assert self.clock is not None
        await self.quiet()
        await self.clock.advance(seconds)
        await self.quiet()

    def log_events(self) -> list[tuple[str, str]]:
        out = []
        for r in self.logs.get_finished_logs():
            attrs = r.log_record.attributes or {}
            out.append((str(attrs.get("monbridge.alert.event")), str(attrs.get("alert.state"))))
        return out


async def configure(plugins: Sequence[tuple[str, Plugin]]) -> None:
    for _pid, p in plugins:
        await p.initialize({}) if not isinstance(p, Notifier) else None


def make_alert(name: str = "HighCPU", **labels: str) -> Alert:
    return Alert(id="", name=name, severity=labels.pop("severity", "critical"), labels=dict(labels))


class WebhookReceiver:
    """Takes Alertmanager webhooks (aiohttp on 127.0.0.1) and records (group key, idempotency key,
    status answered) of each; answers 503 about the groups in ``failing``; calls ``inspect`` with
    the idempotency key before answering."""

    def __init__(self, failing: Collection[str] = (), inspect: Callable[[str], None] | None = None) -> None:
        self.failing = failing
        self.inspect = inspect
        self.got: list[tuple[str, str, int]] = []
        self.changed = asyncio.Condition()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def hook(self, request: web.Request) -> web.Response:
        doc = await request.json()
        key = request.headers["Idempotency-Key"]
        if self.inspect is not None:
            self.inspect(key)
        status = 503 if doc["groupKey"] in self.failing else 200
        async with self.changed:
            self.got.append((doc["groupKey"], key, status))
            self.changed.notify_all()
        return web.json_response({}, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        self.url = f"http://{host}:{port}/hook"

    async def wait(self, n: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.got) >= n), 30)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
