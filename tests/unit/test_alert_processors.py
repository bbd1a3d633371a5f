"""The processor chain and the dispatcher: grouping and repeats as Alertmanager means them,
silences, inhibition, correlation, escalation, dedup, routing by matchers, and the outbox's
retries and restart safety. The engine runs on a ManualClock: the timers (group_wait,
group_interval, repeat_interval, escalations, silences' ends, retries, housekeeping) fire when a
test advances it, at the times they are due, which the tests assert exactly; times that must
compare exactly are binary fractions (0.25 s), which the wall time's floats hold exactly."""

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
from bridge.delivery import ManualClock
from tests.unit.alerting_helpers import CollectingNotifier, EngineUnderTest, make_alert


async def plugin(cls, config):
    p = cls()
    await p.initialize(config)
    return p


async def notifier(pid="monitoring.alerts.collect", fail=0, **config):
    n = CollectingNotifier(fail)
    await n.initialize(config)
    return pid, n


def fire(t, alert):
    """Report ``alert`` as begun now on ``t``'s clock."""
    alert.starts_at = t.engine.clock()
    return t.engine.fire(alert, "test")


async def settle(t, seconds=0.15):
    """Move ``t``'s clock on by ``seconds``, with everything in flight done before and after."""
    await t.advance(seconds)


async def test_grouping_wait_interval_and_repeat(tmp_path):
    grouping = await plugin(GroupingProcessor, {"group_by": ["alertname"], "group_wait": 0.25, "group_interval": 0.25,
                                                "repeat_interval": 0.75})
    pid, n = await notifier()
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), (pid, n)], clock=ManualClock())
    await t.engine.start()
    try:
        t0 = t.engine.clock()
        a = fire(t, make_alert(host="h1"))
        b = fire(t, make_alert(host="h2"))
        await settle(t, 0.125)
        assert n.sent == []  # group_wait
        await settle(t, 0.125)
        [first] = n.sent
        assert first.created_at - t0 == 0.25  # at the end of group_wait
        assert sorted(x.labels["host"] for x in first.alerts) == ["h1", "h2"]  # one notification for the group
        assert first.group_key == '{}:{alertname="HighCPU"}'
        await settle(t, 0.5)
        assert len(n.sent) == 1  # nothing changed at the two group_interval flushes, repeat_interval not over
        await settle(t, 0.25)
        assert len(n.sent) == 2 and n.sent[1].key != first.key  # the repeat
        assert n.sent[1].created_at - first.created_at == 0.75  # after repeat_interval exactly
        t.engine.acknowledge(a.id, "x")
        t.engine.acknowledge(b.id, "x")
        await settle(t, 1.0)
        assert len(n.sent) == 2  # acknowledged alerts are not repeated
        t.engine.resolve(a.id)  # at a flush's time: the next is a group_interval away
        await settle(t, 0.125)
        assert len(n.sent) == 2
        await settle(t, 0.125)
        assert len(n.sent) == 3 and {x.fingerprint: x.state for x in n.sent[2].alerts}[a.fingerprint] is AlertState.RESOLVED
        assert n.sent[2].created_at - t0 == 2.25
    finally:
        await t.engine.stop()


async def test_routing_by_matchers_and_send_resolved(tmp_path):
    grouping = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.1})
    crit = await notifier("monitoring.alerts.crit", match=['severity="critical"'], send_resolved=False)
    everyone = await notifier("monitoring.alerts.all")
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), crit, everyone], clock=ManualClock())
    await t.engine.start()
    try:
        c = fire(t, make_alert("A", severity="critical"))
        fire(t, make_alert("B", severity="warning"))
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
    grouping = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.125})
    pid, n = await notifier()
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), (pid, n)], clock=ManualClock())
    await t.engine.start()
    try:
        now = t.engine.clock()
        s = t.engine.silences.add(Silence.from_request({"matchers": ['host="h1"'], "duration": 0.5}, now))
        fire(t, make_alert(host="h1"))
        await settle(t, 0.375)
        assert n.sent == [] and s.state(t.engine.clock()) == "active"  # muted at the flushes so far
        await settle(t, 0.125)
        [note] = n.sent  # expired: the flush at its end notifies
        assert note.created_at - now == 0.5 and s.state(note.created_at) == "expired"
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
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), ("monitoring.alerts.inhibit", inhibit), (pid, n)],
                        clock=ManualClock())
    await t.engine.start()
    try:
        fire(t, make_alert("NodeDown", severity="critical", host="h1"))
        fire(t, make_alert("HighLoad", severity="warning", host="h1"))
        other = fire(t, make_alert("HighLoad", severity="warning", host="h2"))
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
                                   (pid, n)], clock=ManualClock())
    await t.engine.start()
    try:
        a = fire(t, make_alert("Disk", host="h1"))
        b = fire(t, make_alert("Load", host="h1"))
        c = fire(t, make_alert("Load", host="h2"))
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
                                   first, pager], clock=ManualClock())
    await t.engine.start()
    try:
        a = fire(t, make_alert("A"))
        b = fire(t, make_alert("B"))
        await settle(t, 0.1)
        t.engine.acknowledge(b.id, "bob")
        await settle(t, 0.199)
        assert len(first[1].sent) == 2 and pager[1].sent == []  # the pager only gets escalations, and not yet
        await settle(t, 0.001)
        [e] = pager[1].sent
        assert e.alerts[0].id == a.id and e.escalation_level == 1
        assert e.created_at - t.engine.store.get(a.id).starts_at == pytest.approx(0.3, abs=1e-6)  # `after` it fired
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


async def test_dedup_drops_a_repeat_within_its_window_on_the_engines_clock(tmp_path):
    from bridge.alerting.base import AlertContext

    clock = ManualClock()
    t = EngineUnderTest(tmp_path, clock=clock)
    d = await plugin(DedupProcessor, {"window": 0.5})
    d.attach(AlertContext(t.engine, None, t.engine.resource))
    a = make_alert()
    a.id, a.fingerprint = "a1", "f1"
    await d.process_alert(a)
    await clock.advance(0.499)
    with pytest.raises(AlertSuppressed, match="duplicate of fingerprint f1"):
        await d.process_alert(a)
    await clock.advance(0.001)
    assert (await d.process_alert(a)) is a  # the window since the last one passed is over


async def test_outbox_retries_and_survives_a_restart_without_doubles(tmp_path):
    clock = ManualClock()
    grouping = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.1})
    pid, down = await notifier(fail=10**6)  # the receiver is down
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), (pid, down)], clock=clock)
    await t.engine.start()
    a = fire(t, make_alert())
    await settle(t, 0.3)
    assert len(t.engine.outbox.pending(pid)) == 1 and down.sent == []
    await t.engine.stop()  # a restart while the notification is pending
    grouping2 = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.1})
    _, up = await notifier(fail=2)  # up again after two more failures
    t2 = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping2), (pid, up)], clock=clock)
    await t2.engine.start()
    try:
        fire(t2, make_alert())  # the same alert reported again after the restart
        await settle(t2, 0.6)
        [note] = up.sent
        assert note.alerts[0].id == a.id
        assert t2.engine.outbox.pending() == []
    finally:
        await t2.engine.stop()


async def test_escalation_timers_come_back_after_a_restart(tmp_path):
    clock = ManualClock()

    async def build():
        grouping = await plugin(GroupingProcessor, {"group_wait": 0, "group_interval": 0.125})
        esc = await plugin(EscalationProcessor, {"levels": [{"after": 0.5, "notify": ["monitoring.alerts.pager"]}]})
        pager = await notifier("monitoring.alerts.pager")
        return EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping),
                                          ("monitoring.alerts.escalation", esc), pager], clock=clock), pager[1]

    t1, _ = await build()
    await t1.engine.start()
    a = fire(t1, make_alert("A"))
    await settle(t1, 0.125)
    await t1.engine.stop()  # before the escalation was due
    t2, pager = await build()
    await t2.engine.start()
    try:
        await settle(t2, 0.25)
        assert pager.sent == []
        await settle(t2, 0.125)  # 0.5 s after it fired, not 0.5 s after the restart
        [e] = pager.sent
        assert e.alerts[0].id == a.id and e.escalation_level == 1
        assert e.created_at - a.starts_at == 0.5
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
    from bridge.alerting.engine import HOUSEKEEPING_INTERVAL_S

    nagios = Nagios()
    t = EngineUnderTest(tmp_path, [("monitoring.integration.nagios", nagios)], clock=ManualClock(), import_interval=0.1)
    await t.engine.start()
    try:
        nagios.pending = [Alert("", "DiskFull", "critical", labels={"host": "db1"})]
        await settle(t, HOUSEKEEPING_INTERVAL_S - 0.001)
        assert t.engine.store.active_alerts() == [] and nagios.exported == []  # the first round is a second away
        await settle(t, 0.001)
        [a] = t.engine.store.active_alerts()
        assert a.name == "DiskFull" and t.engine.store.transitions(a.id)[0].by == "monitoring.integration.nagios"
        assert nagios.exported == [["DiskFull"]]
        gone = Alert("", "DiskFull", "critical", AlertState.RESOLVED, labels={"host": "db1"}, fingerprint=a.fingerprint)
        nagios.pending = [gone]
        await settle(t, HOUSEKEEPING_INTERVAL_S)
        assert t.engine.store.get(a.id).state is AlertState.RESOLVED and nagios.exported == [["DiskFull"], []]
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
    from bridge.tasks import CANCEL_GRACE_S

    nagios, stuck = Nagios(), Stuck()
    clock = ManualClock()
    t = EngineUnderTest(tmp_path, [("monitoring.integration.stuck", stuck), ("monitoring.integration.nagios", nagios)],
                        clock=clock, import_interval=0.1)
    await t.engine.start()
    try:
        nagios.pending = [Alert("", "DiskFull", "critical", labels={"host": "db1"})]
        await settle(t, 1.0)  # the first round: the other's import and export are done at once
        assert nagios.exported == [["DiskFull"]]
        # The stuck import is cut off at 1.2 s and abandoned at 1.7 s (its grace): the next round
        # is a housekeeping interval after that.
        await settle(t, 1.699)
        assert nagios.exported == [["DiskFull"]]
        await settle(t, 0.001)
        assert [a.name for a in t.engine.store.active_alerts()] == ["DiskFull"]
        assert nagios.exported == [["DiskFull"], ["DiskFull"]]  # round after round, beside the stuck one
    finally:
        stopping = asyncio.create_task(t.engine.stop())
        await clock.advance(CANCEL_GRACE_S)  # the grace of the stuck call the stop cancels
        await asyncio.wait_for(stopping, 5)
        stuck.stuck = False  # the abandoned calls end when the test's loop cancels what is left
    logged = [r.getMessage() for r in caplog.records]
    assert "alerts: monitoring.integration.stuck import/export of alerts timed out after 0.2s" in logged
    assert "alerts: monitoring.integration.stuck did not end its alert import/export when cancelled; abandoned" in logged


async def test_housekeeping_wakes_for_the_import_rounds_only(tmp_path, monkeypatch):
    """Between two rounds of the integrations (``import_interval``) the engine does not wake: its
    rounds (refresh, imports) come at 1 s, then every 10 s."""
    nagios = Nagios()
    t = EngineUnderTest(tmp_path, [("monitoring.integration.nagios", nagios)], clock=ManualClock(), import_interval=10)
    rounds = []
    real = t.engine.refresh
    monkeypatch.setattr(t.engine, "refresh", lambda: (rounds.append(1), real())[1])
    await t.engine.start()
    rounds.clear()  # (the start's own refresh)
    try:
        await settle(t, 1.0)
        assert len(rounds) == 1 and nagios.exported == [[]]
        await settle(t, 9.999)
        assert len(rounds) == 1 and len(nagios.exported) == 1
        await settle(t, 0.001)
        assert len(rounds) == 2 and len(nagios.exported) == 2
    finally:
        await t.engine.stop()


async def test_a_plugin_that_starts_or_stops_is_taken_up_at_once(tmp_path):
    """``plugins_changed`` (the supervisor's, on every plugin transition) takes up the running
    processors at the next turn of the loop, without a housekeeping round."""
    t = EngineUnderTest(tmp_path, clock=ManualClock(), import_interval=10)
    await t.engine.start()
    try:
        pid, n = await notifier()
        t.plugins.append((pid, n))
        assert t.engine._processors == []
        t.engine.plugins_changed()
        t.engine.plugins_changed()  # (one refresh for both)
        await asyncio.sleep(0)
        assert [p for p, _ in t.engine._processors] == [pid]
        t.plugins.clear()
        t.engine.plugins_changed()
        await asyncio.sleep(0)
        assert t.engine._processors == []
    finally:
        await t.engine.stop()
