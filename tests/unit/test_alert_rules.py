"""Alert rules on the pipeline's metrics, in a real Runtime: threshold, for, aggregate, templating,
resolution; and the webhook notifier's Alertmanager v4 payload at a real HTTP server."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.alerting.rules import RulesConfig, render_template
from bridge.api import AlertState, Metric, MetricKind
from bridge.config import ConfigError, parse_config
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime
from tests.http_recorder import HttpRecorder


def test_template_rendering():
    assert render_template("CPU busy on {{ host.name }} ({{ value }})", {"host.name": "h1", "value": 0.93}) \
        == "CPU busy on h1 (0.93)"
    assert render_template("{{ .missing }}", {}) == "<no value>"


def test_rule_config_errors_name_the_path():
    reg = PluginRegistry().discover()
    text = """
plugins:
  - plugin_id: monitoring.alerts.rules
    config:
      rules:
        - {name: A, metric: m, threshold: 1, aggregate: median}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "t.yaml", reg, env={})
    assert "plugins[0].config.rules[0].aggregate" in str(e.value)
    cfg = RulesConfig.model_validate({"rules": [{"name": "A", "metric": "m", "threshold": 1, "for": 60}]})
    assert cfg.rules[0].for_ == 60


def config(hook_url: str, state_dir, value_op=">") -> str:
    return f"""
server: {{listen: "127.0.0.1:0"}}
alerting: {{state_dir: "{state_dir}"}}
plugins:
  - plugin_id: monitoring.alerts.rules
    config:
      evaluation_interval: 0.1
      rules:
        - name: HighCPU
          metric: test.cpu.utilization
          match: {{cpu.mode: user}}
          aggregate: avg
          op: "{value_op}"
          threshold: 0.9
          for: 0.3
          severity: critical
          labels: {{team: infra}}
          annotations: {{summary: "CPU busy on {{{{ host.name }}}}: {{{{ value }}}}"}}
  - plugin_id: monitoring.alerts.grouping
    config: {{group_by: [alertname], group_wait: 0, group_interval: 0.2}}
  - plugin_id: monitoring.alerts.webhook
    config: {{url: "{hook_url}/hook", send_resolved: true}}
"""


def cpu(pipeline, user: float, system: float = 0.99) -> None:
    pipeline.record("monitoring.metrics.test", [
        Metric("test.cpu.utilization", MetricKind.GAUGE, user, "1", "", {"cpu.mode": "user", "cpu": "0", "host.name": "h1"}),
        Metric("test.cpu.utilization", MetricKind.GAUGE, user, "1", "", {"cpu.mode": "user", "cpu": "1", "host.name": "h1"}),
        Metric("test.cpu.utilization", MetricKind.GAUGE, system, "1", "", {"cpu.mode": "system", "cpu": "0", "host.name": "h1"}),
    ])


async def test_rule_fires_after_for_and_resolves_with_webhook_payload(tmp_path):
    hook = HttpRecorder()
    reg = PluginRegistry().discover()
    loaded = parse_config(config(hook.url, tmp_path), "t.yaml", reg, env={})
    rt = Runtime(loaded, reg)
    await rt.start()
    try:
        cpu(rt.pipeline, 0.5)  # the system series is over 0.9, but match keeps only user
        await asyncio.sleep(0.5)
        assert rt.alerts.store.query() == []
        t0 = time.time()
        cpu(rt.pipeline, 0.95)
        [req] = await asyncio.to_thread(hook.wait_for, lambda r: r.json()["status"] == "firing")
        assert time.time() - t0 >= 0.3  # `for` held it back
        [alert] = rt.alerts.store.query()
        body = req.json()
        assert set(body) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                             "commonLabels", "commonAnnotations", "externalURL", "alerts"}
        assert body["version"] == "4" and body["receiver"] == "monitoring.alerts.webhook"
        assert body["groupKey"] == '{}:{alertname="HighCPU"}'
        assert body["groupLabels"] == {"alertname": "HighCPU"}
        labels = {"alertname": "HighCPU", "severity": "critical", "team": "infra", "cpu.mode": "user"}
        assert body["commonLabels"] == labels
        [a] = body["alerts"]
        assert a["labels"] == labels and a["status"] == "firing" and a["endsAt"] == "0001-01-01T00:00:00Z"
        assert a["annotations"] == {"summary": "CPU busy on h1: 0.95"}
        assert a["fingerprint"] == alert.fingerprint and a["startsAt"].endswith("Z")
        assert req.headers["idempotency-key"] and req.headers["content-type"] == "application/json"

        cpu(rt.pipeline, 0.2)
        [res] = await asyncio.to_thread(hook.wait_for, lambda r: r.json()["status"] == "resolved")
        assert res.json()["alerts"][0]["status"] == "resolved"
        assert res.json()["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
        assert res.headers["idempotency-key"] != req.headers["idempotency-key"]
        assert rt.alerts.store.get(alert.id).state is AlertState.RESOLVED

        cpu(rt.pipeline, 0.97)  # a new breach after resolution: a new alert
        await asyncio.to_thread(hook.wait_for, lambda r: r.json()["status"] == "firing", count=2)
        firing = rt.alerts.store.query(AlertState.FIRING)
        assert len(firing) == 1 and firing[0].id != alert.id and firing[0].fingerprint == alert.fingerprint
    finally:
        await rt.stop()
        hook.stop()
    assert len(hook.requests) == 3  # firing, resolved, firing: nothing repeated


def test_readme_alerting_example_is_a_valid_config():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Alerting", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    env = {"TWILIO_TOKEN": "t" * 8, "JIRA_TOKEN": "j" * 8, "SNOW_PASSWORD": "p" * 8}
    loaded = parse_config(example.replace('"AC..."', '"AC' + "0" * 32 + '"'), "README.md", PluginRegistry().discover(),
                          env=env)
    assert [p.plugin_id for p in loaded.enabled_plugins][:2] == ["monitoring.alerts.rules", "monitoring.alerts.grouping"]
    assert loaded.model.alerting.external_url == "https://monbridge.example.org"


async def test_a_restored_alert_waits_for_its_metric_before_it_is_resolved(tmp_path):
    from bridge.alerting.engine import AlertContext
    from bridge.alerting.rules import RESTORED_GRACE_S, RulesSource
    from bridge.pipeline import Pipeline
    from tests.unit.alerting_helpers import EngineUnderTest

    rules = {"rules": [{"name": "High", "metric": "m.value", "op": ">", "threshold": 10, "severity": "critical"}]}
    pipeline = Pipeline()
    before = EngineUnderTest(tmp_path)
    first = RulesSource()
    await first.initialize(rules)
    first.ctx = AlertContext(before.engine, pipeline, before.engine.resource)
    pipeline.record("src", [Metric("m.value", MetricKind.GAUGE, 50.0)])
    first.evaluate()
    [fired] = before.engine.store.active_alerts()
    await before.engine.store.flush()  # what a stop does: the state written before the next start reads it

    # A restart: a new engine on the same state, an empty pipeline, a rules source attached anew.
    pipeline = Pipeline()
    after = EngineUnderTest(tmp_path)
    now = [1000.0]
    source = RulesSource()
    source.clock = lambda: now[0]
    await source.initialize(rules)
    source.attach(AlertContext(after.engine, pipeline, after.engine.resource))
    try:
        source.evaluate()  # no value reported yet since the start: no evidence the breach ended
        assert [a.id for a in after.engine.store.active_alerts()] == [fired.id]
        pipeline.record("src", [Metric("m.value", MetricKind.GAUGE, 60.0)])
        source.evaluate()  # still breached: the same alert goes on
        assert [a.id for a in after.engine.store.active_alerts()] == [fired.id]
        pipeline.remove_source("src")
        source.evaluate()  # reported, then gone: resolved as ever
        assert after.engine.store.active_alerts() == []
    finally:
        await source.shutdown()

    # A metric that never comes back no longer holds the alert after the grace.
    again = EngineUnderTest(tmp_path / "other")
    again.engine.store.fire(fired, "monitoring.alerts.rules")
    late = RulesSource()
    late.clock = lambda: now[0]
    await late.initialize(rules)
    late.attach(AlertContext(again.engine, Pipeline(), again.engine.resource))
    try:
        late.evaluate()
        assert len(again.engine.store.active_alerts()) == 1
        now[0] += RESTORED_GRACE_S + 1
        late.evaluate()
        assert again.engine.store.active_alerts() == []
    finally:
        await late.shutdown()


async def test_rules_are_evaluated_on_the_engines_clock_and_fire_after_for(tmp_path):
    """The evaluations keep ``evaluation_interval`` on the engine's clock; a breach fires the
    evaluation at which it has lasted ``for``, not earlier."""
    from bridge.alerting.engine import AlertContext
    from bridge.alerting.rules import RulesSource
    from bridge.delivery import ManualClock
    from bridge.pipeline import Pipeline
    from tests.unit.alerting_helpers import EngineUnderTest

    clock = ManualClock()
    t = EngineUnderTest(tmp_path, clock=clock)
    pipeline = Pipeline()
    source = RulesSource()
    await source.initialize({"evaluation_interval": 0.25, "rules": [
        {"name": "High", "metric": "m.value", "op": ">", "threshold": 10, "for": 0.5, "severity": "critical"}]})
    pipeline.record("src", [Metric("m.value", MetricKind.GAUGE, 50.0)])
    source.attach(AlertContext(t.engine, pipeline, t.engine.resource))
    t0 = clock.time()
    try:
        await clock.settle()
        assert source.evaluations == 1 and t.engine.store.active_alerts() == []  # the breach began
        await clock.advance(0.249)
        assert source.evaluations == 1
        await clock.advance(0.001)
        assert source.evaluations == 2 and t.engine.store.active_alerts() == []  # for: 0.25 s of 0.5 s
        await clock.advance(0.25)
        assert source.evaluations == 3
        [alert] = t.engine.store.active_alerts()
        assert alert.starts_at == t0  # it began with the breach
        await clock.advance(1.0)
        assert source.evaluations == 7
    finally:
        await source.shutdown()
