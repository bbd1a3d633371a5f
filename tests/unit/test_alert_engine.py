"""The alert lifecycle: store, fingerprints, history, OTel spans and log records, the processor chain."""

from __future__ import annotations

import pytest

from bridge.alerting.model import Matcher, fingerprint, parse_matchers
from bridge.alerting.store import AlertStore, IllegalAlertTransition
from bridge.api import AlertState
from tests.unit.alerting_helpers import EngineUnderTest, Recorder, make_alert


def test_fingerprint_is_alertmanagers_fnv1a_of_sorted_labels():
    # The empty label set hashes to FNV-1a's offset basis, as prometheus/common's emptyLabelSignature.
    assert fingerprint({}) == "cbf29ce484222325"
    a = fingerprint({"alertname": "HighCPU", "severity": "critical"})
    assert a == fingerprint({"severity": "critical", "alertname": "HighCPU"})
    assert len(a) == 16 and a != fingerprint({"alertname": "HighCPU", "severity": "warning"})
    # The separator byte keeps name/value boundaries apart.
    assert fingerprint({"ab": "c"}) != fingerprint({"a": "bc"})


def test_matchers_parse_and_match():
    ms = parse_matchers(['severity=~"crit.*"', 'team!="db"', "env=prod"])
    assert [str(m) for m in ms] == ['severity=~"crit.*"', 'team!="db"', 'env="prod"']
    assert all(m.matches({"severity": "critical", "team": "infra", "env": "prod"}) for m in ms)
    assert not ms[0].matches({"severity": "xcritical"})  # anchored, as in Alertmanager
    assert parse_matchers({"a": "1"}) == (Matcher("a", "=", "1"),)
    assert parse_matchers('{a="1", b=~"x,y"}') == (Matcher("a", "=", "1"), Matcher("b", "=~", "x,y"))
    with pytest.raises(ValueError, match="matcher 'nonsense'"):
        parse_matchers(["nonsense"])
    with pytest.raises(ValueError, match="invalid regular expression"):
        parse_matchers(['a=~"("'])


def test_regex_matchers_are_re2_matched_in_linear_time():
    """Silences and inhibit rules come from the alert API; their regexes are RE2, as Alertmanager's.
    Under Python's backtracking ``re`` this matcher needed minutes (the test would not end)."""
    m = Matcher("host", "=~", ".*" * 60 + "z")
    assert not m.matches({"host": "web-" * 100})
    assert m.matches({"host": "web-" * 100 + "z"})
    assert Matcher("host", "=~", "web.*").matches({"host": "web\udcff"})  # a lone surrogate, as JSON allows
    assert not Matcher("host", "!~", "web.*").matches({"host": "web\udcff"})
    with pytest.raises(ValueError, match="invalid regular expression"):  # RE2 has no lookarounds
        parse_matchers(['a=~"(?<=x)y"'])


def test_store_lifecycle_history_and_persistence(tmp_path):
    store = AlertStore(tmp_path / "alerts.json")
    a, new = store.fire(make_alert(host="h1"), "rules")
    assert new and a.state is AlertState.FIRING and a.labels["alertname"] == "HighCPU"
    again, new2 = store.fire(make_alert(host="h1"), "rules")
    assert again.id == a.id and not new2  # same fingerprint, still active: the same alert
    store.transition(a.id, AlertState.ACKNOWLEDGED, "alice")
    with pytest.raises(IllegalAlertTransition, match="acknowledged; it cannot become firing"):
        store.transition(a.id, AlertState.FIRING, "x")
    store.transition(a.id, AlertState.RESOLVED, "rules")
    b, new3 = store.fire(make_alert(host="h1"), "rules")
    assert new3 and b.id != a.id and b.fingerprint == a.fingerprint  # a new breach is a new alert
    store.save()
    restored = AlertStore(tmp_path / "alerts.json")
    assert restored.get(a.id).state is AlertState.RESOLVED
    assert restored.by_fingerprint(a.fingerprint).id == b.id
    assert [(t.from_state, t.to_state, t.by) for t in restored.transitions(a.id)] == [
        (None, AlertState.FIRING, "rules"),
        (AlertState.FIRING, AlertState.ACKNOWLEDGED, "alice"),
        (AlertState.ACKNOWLEDGED, AlertState.RESOLVED, "rules"),
    ]


async def test_each_alert_is_one_span_and_each_transition_a_log_record(tmp_path):
    calls: list[str] = []
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.first", Recorder("first", calls)),
                                   ("monitoring.alerts.second", Recorder("second", calls))])
    e = t.engine
    await e.start()
    try:
        a = e.fire(make_alert(host="h1"), "test")
        e.acknowledge(a.id, "alice")
        e.resolve(a.id, "test")
        await e.drain()
    finally:
        await e.stop()
    spans = t.spans.get_finished_spans()
    assert len(spans) == 1
    span = spans[0]
    assert span.name == "alert HighCPU"
    assert span.attributes["alert.id"] == a.id and span.attributes["alert.state"] == "resolved"
    assert [ev.name for ev in span.events] == ["acknowledged"]
    assert span.start_time == int(a.starts_at * 1e9)
    assert t.log_events() == [("transition", "firing"), ("transition", "acknowledged"), ("transition", "resolved")]
    for record in t.logs.get_finished_logs():  # every record sits in the alert's span
        assert record.log_record.trace_id == span.context.trace_id
        assert record.log_record.span_id == span.context.span_id
    # The processors run in config order, each transition through both, then ack and resolution hooks.
    assert calls == ["first:process:firing", "second:process:firing",
                     "first:process:acknowledged", "second:process:acknowledged", "first:ack", "second:ack",
                     "first:process:resolved", "second:process:resolved", "first:resolution", "second:resolution"]
    assert e.store.get(a.id).labels["seen_by"] == "firstsecond"  # enrichment kept, in order


async def test_a_suppressing_processor_stops_the_chain(tmp_path):
    calls: list[str] = []
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.stop", Recorder("stop", calls, suppress=True)),
                                   ("monitoring.alerts.after", Recorder("after", calls))])
    await t.engine.start()
    try:
        a = t.engine.fire(make_alert(), "test")
        await t.engine.drain()
        t.engine.resolve(a.id)
        await t.engine.drain()
    finally:
        await t.engine.stop()
    assert "after:process:firing" not in calls
    [span] = t.spans.get_finished_spans()
    # The resolution is processed after the span ended: only the firing's suppression is on it.
    assert [(ev.name, ev.attributes["processor"]) for ev in span.events] == [("suppressed", "monitoring.alerts.stop")]


async def test_active_alerts_survive_a_restart_with_a_new_span(tmp_path):
    t1 = EngineUnderTest(tmp_path)
    await t1.engine.start()
    a = t1.engine.fire(make_alert(), "test")
    await t1.engine.stop()
    assert t1.spans.get_finished_spans() == ()  # an active alert's span is not ended by a stop
    t2 = EngineUnderTest(tmp_path)
    await t2.engine.start()
    try:
        assert t2.engine.store.get(a.id).state is AlertState.FIRING
        t2.engine.resolve(a.id, "test")
        await t2.engine.drain()
    finally:
        await t2.engine.stop()
    [span] = t2.spans.get_finished_spans()
    assert span.attributes["alert.id"] == a.id and span.start_time == int(a.starts_at * 1e9)
