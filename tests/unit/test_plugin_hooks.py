"""The optional hooks of ``bridge.api``: the engine finds each by its declared protocol, so a
plugin implementing one need not derive from any monbridge base class, and the built-in plugins
are seen as implementing what they implement."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.alerting.processors import EscalationProcessor, GroupingProcessor, InhibitProcessor
from bridge.alerting.rules import RulesSource
from bridge.api import (
    Alert,
    AlertContextHook,
    AlertProcessorPlugin,
    EscalationHook,
    GroupingHook,
    GroupingSettings,
    MuteHook,
    NotifierHook,
    PluginMetadata,
    PluginType,
    TelemetryExporterHook,
)
from bridge.notifiers import AlertContext, Notification, Notifier, parse_matchers
from integrations.otlp import OtlpIntegration
from integrations.webhook import WebhookNotifier
from tests.unit.alerting_helpers import EngineUnderTest, Recorder, make_alert


class _PlainProcessor(AlertProcessorPlugin):
    """An alert processor implementing every hook an alert processor may have, from no base but the ABC."""

    def __init__(self, mute_host: str) -> None:
        self.mute_host = mute_host
        self.ctx: Any = None
        self.sent: list[Notification] = []
        self.arrived = asyncio.Event()

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("monitoring.alerts.plain", "plain", "1", "tests", "", PluginType.ALERT_PROCESSOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def process_alert(self, alert: Alert) -> Alert:
        return alert

    async def handle_acknowledgment(self, alert_id: str) -> None:
        return None

    async def handle_resolution(self, alert_id: str) -> None:
        return None

    def attach(self, ctx: Any) -> None:
        self.ctx = ctx

    def grouping_settings(self) -> GroupingSettings:
        return GroupingSettings(group_by=("host",), group_wait=0.0, group_interval=0.1)

    def muted(self, alert: Alert) -> str | None:
        return "plain mutes it" if alert.labels.get("host") == self.mute_host else None

    def notification_route(self) -> tuple[tuple[Any, ...], bool]:
        return parse_matchers({"severity": "critical"}), False

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)
        self.arrived.set()


def test_the_built_in_plugins_implement_their_hooks_as_declared():
    assert isinstance(RulesSource(), AlertContextHook)
    assert isinstance(GroupingProcessor(), GroupingHook)
    assert isinstance(InhibitProcessor(), MuteHook)
    assert isinstance(EscalationProcessor(), EscalationHook)
    assert isinstance(WebhookNotifier(), NotifierHook)
    assert isinstance(OtlpIntegration(), TelemetryExporterHook)
    # and only those
    assert not isinstance(GroupingProcessor(), NotifierHook | MuteHook | EscalationHook)
    assert not isinstance(WebhookNotifier(), GroupingHook | MuteHook | EscalationHook)
    assert not isinstance(Recorder("r", []), AlertContextHook | GroupingHook | MuteHook | EscalationHook | NotifierHook)


def test_a_notifier_routes_by_its_configs_matchers():
    n = WebhookNotifier()
    n.config = n.parse_config({"url": "http://127.0.0.1:1/hook", "match": {"team": "db"}, "send_resolved": False})
    matchers, send_resolved = n.notification_route()
    assert [str(m) for m in matchers] == ['team="db"'] and send_resolved is False
    assert isinstance(n, Notifier)


async def test_the_engine_calls_every_hook_of_a_plugin_deriving_from_no_monbridge_base(tmp_path):
    plain = _PlainProcessor(mute_host="h2")
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.plain", plain)])
    await t.engine.start()
    try:
        assert isinstance(plain.ctx, AlertContext) and plain.ctx.engine is t.engine  # attach
        assert t.engine.dispatcher.settings == plain.grouping_settings()  # grouping_settings
        assert t.engine.muted(make_alert(host="h2")) == "plain mutes it"  # muted
        t.engine.fire(make_alert(host="h1", severity="warning"), "test")  # not on the route
        t.engine.fire(make_alert(host="h2"), "test")  # muted
        t.engine.fire(make_alert(host="h3"), "test")
        await t.engine.drain()
        await asyncio.wait_for(plain.arrived.wait(), 10)
    finally:
        await t.engine.stop()
    assert [[a.labels["host"] for a in n.alerts] for n in plain.sent] == [["h3"]]
    assert plain.sent[0].group_labels == {"host": "h3"}


async def test_escalation_notifiers_get_no_grouped_notifications(tmp_path):
    class Escalating(_PlainProcessor):
        def escalation_notifiers(self) -> Sequence[str]:
            return ["monitoring.alerts.plain"]

    plain = Escalating(mute_host="")
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.plain", plain)])
    await t.engine.start()
    try:
        alert = t.engine.fire(make_alert(host="h1"), "test")
        await t.engine.drain()
        await asyncio.sleep(0.3)  # three group intervals: a grouped notification would have gone
        assert plain.sent == []
        t.engine.escalate(alert, ["monitoring.alerts.plain"], 1)
        await asyncio.wait_for(plain.arrived.wait(), 10)
    finally:
        await t.engine.stop()
    assert [n.escalation_level for n in plain.sent] == [1]


class _HookSetToNone(_PlainProcessor):
    """Switches its hooks off the way Python switches a method off (``__hash__ = None``)."""

    grouping_settings = None  # type: ignore[assignment]
    muted = None  # type: ignore[assignment]


def test_a_hook_set_to_none_is_not_implemented(tmp_path):
    # hasattr found these; the protocols do not take a None member for the method.
    off = _HookSetToNone(mute_host="h1")
    assert not isinstance(off, GroupingHook) and not isinstance(off, MuteHook)
    assert isinstance(off, NotifierHook)
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.off", off)])
    t.engine.refresh()
    assert t.engine.dispatcher.settings == GroupingSettings()
    assert t.engine.muted(make_alert(host="h1")) is None
