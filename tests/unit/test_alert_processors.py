"""The processor chain and the dispatcher: grouping and repeats as Alertmanager means them,
silences, inhibition, correlation, escalation, dedup, routing by matchers, and the outbox's
retries and restart safety."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bridge.alerting.model import AlertSuppressed
from bridge.alerting.processors import (
    CorrelationProcessor,
    DedupProcessor,
    EscalationProcessor,
    GroupingProcessor,
    InhibitProcessor,
)
from bridge.alerting.silences import Silence
from bridge.api import Alert, AlertState, MonitoringIntegrationPlugin, PluginMetadata, PluginType
from tests.unit.alerting_helpers import CollectingNotifier, EngineUnderTest, make_alert


async def plugin(cls, config):
    p = cls()
    await p.initialize(config)
    return p


async def notifier(pid="monitoring.alerts.collect", fail=0, **config):
    n = CollectingNotifier(fail)
    await n.initialize(config)
    return pid, n


async def settle(t, seconds=0.15):
    await t.engine.drain()
    await asyncio.sleep(seconds)
    await t.engine.drain()


async def test_grouping_wait_interval_and_repeat(tmp_path):
    grouping = await plugin(GroupingProcessor, {"group_by": ["alertname"], "group_wait": 0.2, "group_interval": 0.2,
                                                "repeat_interval": 0.6})
    pid, n = await notifier()
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), (pid, n)])
    await t.engine.start()
    try:
        a = t.engine.fire(make_alert(host="h1"), "test")
        b = t.engine.fire(make_alert(host="h2"), "test")
        await settle(t, 0.1)
        assert n.sent == []  # group_wait
        await settle(t, 0.2)
        [first] = n.sent
        assert sorted(x.labels["host"] for x in first.alerts) == ["h1", "h2"]  # one notification for the group
        assert first.group_key == '{}:{alertname="HighCPU"}'
        await settle(t, 0.25)
        assert len(n.sent) == 1  # nothing changed, repeat_interval not over
        await settle(t, 0.5)
        assert len(n.sent) == 2 and n.sent[1].key != first.key  # the repeat
        t.engine.acknowledge(a.id, "x")
        t.engine.acknowledge(b.id, "x")
        await settle(t, 0.9)
        assert len(n.sent) == 2  # acknowledged alerts are not repeated
        t.engine.resolve(a.id)
        await settle(t, 0.3)
        assert len(n.sent) == 3 and {x.fingerprint: x.state for x in n.sent[2].alerts}[a.fingerprint] is AlertState.RESOLVED
    finally:
        await t.engine.stop()


async def test_routing_by_matchers_and_send_resolved(tmp_path):
    grouping = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.1})
    crit = await notifier("monitoring.alerts.crit", match=['severity="critical"'], send_resolved=False)
    everyone = await notifier("monitoring.alerts.all")
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), crit, everyone])
    await t.engine.start()
    try:
        c = t.engine.fire(make_alert("A", severity="critical"), "test")
        t.engine.fire(make_alert("B", severity="warning"), "test")
        await settle(t, 0.2)
        assert [x.alerts[0].name for x in crit[1].sent] == ["A"]
        assert sorted(x.alerts[0].name for x in everyone[1].sent) == ["A", "B"]
        assert crit[1].sent[0].group_key == '{}/{severity="critical"}:{alertname="A"}'
        t.engine.resolve(c.id)
        await settle(t, 0.3)
        assert len(crit[1].sent) == 1  # send_resolved: false
        assert [x.status for x in everyone[1].sent if x.alerts[0].name == "A"] == ["firing", "resolved"]
    finally:
        await t.engine.stop()


async def test_silences_mute_until_they_expire(tmp_path):
    grouping = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.1})
    pid, n = await notifier()
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), (pid, n)])
    await t.engine.start()
    try:
        now = t.engine.clock()
        s = t.engine.silences.add(Silence.from_request({"matchers": ['host="h1"'], "duration": 0.4}, now))
        t.engine.fire(make_alert(host="h1"), "test")
        await settle(t, 0.2)
        assert n.sent == [] and s.state(t.engine.clock()) == "active"
        await settle(t, 0.4)
        assert len(n.sent) == 1  # expired: the next flush notifies
        with pytest.raises(ValueError, match="endsAt: must be after startsAt"):
            Silence.from_request({"matchers": ["a=b"], "endsAt": "2000-01-01T00:00:00Z"}, now)
        with pytest.raises(ValueError, match="matchers: expected a non-empty list"):
            Silence.from_request({"matchers": [], "duration": 5}, now)
    finally:
        await t.engine.stop()


async def test_inhibition_mutes_targets_sharing_equal_labels(tmp_path):
    grouping = await plugin(GroupingProcessor, {"group_by": ["..."], "group_wait": 0, "group_interval": 0.1})
    inhibit = await plugin(InhibitProcessor, {"rules": [{"source_match": {"severity": "critical"},
                                                         "target_match": {"severity": "warning"}, "equal": ["host"]}]})
    pid, n = await notifier()
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), ("monitoring.alerts.inhibit", inhibit), (pid, n)])
    await t.engine.start()
    try:
        t.engine.fire(make_alert("NodeDown", severity="critical", host="h1"), "test")
        t.engine.fire(make_alert("HighLoad", severity="warning", host="h1"), "test")
        other = t.engine.fire(make_alert("HighLoad", severity="warning", host="h2"), "test")
        await settle(t, 0.2)
        names = sorted((x.alerts[0].name, x.alerts[0].labels["host"]) for x in n.sent)
        assert names == [("HighLoad", "h2"), ("NodeDown", "h1")]
        assert inhibit.muted(other) is None
    finally:
        await t.engine.stop()


async def test_correlation_folds_alerts_into_incidents(tmp_path):
    corr = await plugin(CorrelationProcessor, {"labels": ["host"], "window": 60})
    grouping = await plugin(GroupingProcessor, {"group_by": ["incident"], "group_wait": 0.1, "group_interval": 0.1})
    pid, n = await notifier()
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.correlation", corr), ("monitoring.alerts.grouping", grouping),
                                   (pid, n)])
    await t.engine.start()
    try:
        a = t.engine.fire(make_alert("Disk", host="h1"), "test")
        b = t.engine.fire(make_alert("Load", host="h1"), "test")
        c = t.engine.fire(make_alert("Load", host="h2"), "test")
        await settle(t, 0.3)
        inc = {x.id: t.engine.store.get(x.id).labels["incident"] for x in (a, b, c)}
        assert inc[a.id] == inc[b.id] != inc[c.id]
        assert sorted(len(x.alerts) for x in n.sent) == [1, 2]  # one notification per incident
    finally:
        await t.engine.stop()


async def test_escalation_goes_to_the_next_receiver_unless_acknowledged(tmp_path):
    grouping = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.1})
    esc = await plugin(EscalationProcessor, {"levels": [{"after": 0.3, "notify": ["monitoring.alerts.pager"]}]})
    first = await notifier("monitoring.alerts.first")
    pager = await notifier("monitoring.alerts.pager")
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), ("monitoring.alerts.escalation", esc),
                                   first, pager])
    await t.engine.start()
    try:
        a = t.engine.fire(make_alert("A"), "test")
        b = t.engine.fire(make_alert("B"), "test")
        await settle(t, 0.1)
        t.engine.acknowledge(b.id, "bob")
        await settle(t, 0.1)
        assert len(first[1].sent) == 2 and pager[1].sent == []  # the pager only gets escalations
        await settle(t, 0.4)
        [e] = pager[1].sent
        assert e.alerts[0].id == a.id and e.escalation_level == 1
        t.engine.resolve(a.id)
        await settle(t, 0.1)
    finally:
        await t.engine.stop()
    span = next(s for s in t.spans.get_finished_spans() if s.attributes["alert.id"] == a.id)
    assert [ev.name for ev in span.events][:2] == ["notification", "escalation"]


async def test_dedup_drops_a_repeated_state():
    d = await plugin(DedupProcessor, {})
    a = make_alert()
    a.id, a.fingerprint = "a1", "f1"
    await d.process_alert(a)
    with pytest.raises(AlertSuppressed, match="duplicate of fingerprint f1"):
        await d.process_alert(a)
    a.state = AlertState.RESOLVED
    assert (await d.process_alert(a)) is a


async def test_outbox_retries_and_survives_a_restart_without_doubles(tmp_path):
    grouping = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.1})
    pid, down = await notifier(fail=10**6)  # the receiver is down
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), (pid, down)])
    await t.engine.start()
    a = t.engine.fire(make_alert(), "test")
    await settle(t, 0.3)
    assert len(t.engine.outbox.pending(pid)) == 1 and down.sent == []
    await t.engine.stop()  # a restart while the notification is pending
    grouping2 = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.1})
    _, up = await notifier(fail=2)  # up again after two more failures
    t2 = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping2), (pid, up)])
    await t2.engine.start()
    try:
        t2.engine.fire(make_alert(), "test")  # the same alert reported again after the restart
        await settle(t2, 0.6)
        [note] = up.sent
        assert note.alerts[0].id == a.id
        assert t2.engine.outbox.pending() == []
    finally:
        await t2.engine.stop()


async def test_escalation_timers_come_back_after_a_restart(tmp_path):
    async def build():
        grouping = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.1})
        esc = await plugin(EscalationProcessor, {"levels": [{"after": 0.5, "notify": ["monitoring.alerts.pager"]}]})
        pager = await notifier("monitoring.alerts.pager")
        return EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping),
                                          ("monitoring.alerts.escalation", esc), pager]), pager[1]

    t1, _ = await build()
    await t1.engine.start()
    a = t1.engine.fire(make_alert("A"), "test")
    await settle(t1, 0.1)
    await t1.engine.stop()  # before the escalation was due
    t2, pager = await build()
    await t2.engine.start()
    try:
        await settle(t2, 0.6)
        [e] = pager.sent
        assert e.alerts[0].id == a.id and e.escalation_level == 1
    finally:
        await t2.engine.stop()


class Nagios(MonitoringIntegrationPlugin):
    """An integration whose alerts a test sets (``pending``); records what it is given (``exported``)."""

    def __init__(self):
        self.pending: list[Alert] = []
        self.exported: list[list[str]] = []

    def metadata(self):
        return PluginMetadata("monitoring.integration.nagios", "n", "1", "t", "", PluginType.INTEGRATION)

    async def initialize(self, config):
        return None

    async def shutdown(self):
        return None

    async def export_metrics(self, metrics):
        return None

    async def import_metrics(self):
        return []

    async def export_alerts(self, alerts: Sequence[Alert]):
        self.exported.append(sorted(a.name for a in alerts))

    async def import_alerts(self):
        out, self.pending = self.pending, []
        return out


async def test_integrations_import_and_export_alerts(tmp_path):
    nagios = Nagios()
    t = EngineUnderTest(tmp_path, [("monitoring.integration.nagios", nagios)], import_interval=0.1)
    await t.engine.start()
    try:
        nagios.pending = [Alert("", "DiskFull", "critical", labels={"host": "db1"})]
        await asyncio.sleep(1.3)
        [a] = t.engine.store.active_alerts()
        assert a.name == "DiskFull" and t.engine.store.transitions(a.id)[0].by == "monitoring.integration.nagios"
        assert nagios.exported[-1] == ["DiskFull"]
        gone = Alert("", "DiskFull", "critical", AlertState.RESOLVED, labels={"host": "db1"}, fingerprint=a.fingerprint)
        nagios.pending = [gone]
        await asyncio.sleep(1.2)
        assert t.engine.store.get(a.id).state is AlertState.RESOLVED and nagios.exported[-1] == []
    finally:
        await t.engine.stop()


class Stuck(Nagios):
    """An integration whose import never ends and ignores its cancellation while ``stuck``."""

    stuck = True

    def metadata(self):
        return PluginMetadata("monitoring.integration.stuck", "s", "1", "t", "", PluginType.INTEGRATION)

    async def import_alerts(self):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if not self.stuck:
                    raise


async def test_an_integration_that_hangs_holds_up_neither_the_others_nor_housekeeping(tmp_path, monkeypatch, caplog):
    from bridge.alerting import engine

    monkeypatch.setattr(engine, "INTEGRATION_CALL_TIMEOUT_S", 0.2)
    nagios, stuck = Nagios(), Stuck()
    t = EngineUnderTest(tmp_path, [("monitoring.integration.stuck", stuck), ("monitoring.integration.nagios", nagios)],
                        import_interval=0.1)
    await t.engine.start()
    try:
        nagios.pending = [Alert("", "DiskFull", "critical", labels={"host": "db1"})]
        for _ in range(100):
            if len(nagios.exported) >= 2:
                break
            await asyncio.sleep(0.1)
        assert [a.name for a in t.engine.store.active_alerts()] == ["DiskFull"]
        assert nagios.exported[-1] == ["DiskFull"]  # round after round, beside the stuck one
    finally:
        await asyncio.wait_for(t.engine.stop(), 5)
        stuck.stuck = False  # the abandoned calls end when the test's loop cancels what is left
    logged = [r.getMessage() for r in caplog.records]
    assert "alerts: monitoring.integration.stuck import/export of alerts timed out after 0.2s" in logged
    assert "alerts: monitoring.integration.stuck did not end its alert import/export when cancelled; abandoned" in logged
