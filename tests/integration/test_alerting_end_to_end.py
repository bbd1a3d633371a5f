"""Alerting end to end through `monbridge run`: a real metric from a plugin crosses a threshold,
the alert fires, the webhook is delivered, the alert is acknowledged over the API, resolves,
and its span and log records arrive at an OTLP receiver; and a SIGKILL while the webhook
receiver is down loses no notification and doubles none."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import alerting_peers
import otlp_receiver
import pytest
import yaml
from alerting_peers import api
from otlp_receiver import attributes

from bridge.alerting.outbox import read_outbox
from tests.http_recorder import HttpRecorder

pytestmark = pytest.mark.integration
otlp_http_receiver = otlp_receiver.otlp_http_receiver
alertmanager_server = alerting_peers.alertmanager_server


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def hook():
    h = HttpRecorder()
    yield h
    h.stop()


def config(state, hook_url, value, otlp=None):
    plugins = [
        {"plugin_id": "monitoring.metrics.example", "config": {"collection_interval": 0.2, "value": value}},
        {"plugin_id": "monitoring.alerts.rules", "config": {"evaluation_interval": 0.5, "rules": [
            {"name": "ExampleHigh", "metric": "example.value", "match": {"source": "example"}, "aggregate": "max",
             "op": ">", "threshold": 10, "for": 0, "severity": "critical", "labels": {"team": "infra"},
             "annotations": {"summary": "example.value is {{ value }} on {{ host.name }}"}}]}},
        {"plugin_id": "monitoring.alerts.grouping", "config": {"group_wait": 0, "group_interval": 0.5}},
        {"plugin_id": "monitoring.alerts.webhook", "config": {"url": f"{hook_url}/hook", "send_resolved": True}},
    ]
    if otlp:
        plugins.append({"plugin_id": "monitoring.integration.otlp", "config": {"endpoint": otlp, "interval": 1}})
    return {"alerting": {"state_dir": str(state)}, "plugins": plugins}


def reload_with(mb, cfg):
    """Rewrite the running instance's config (keeping its server section) and reload it."""
    cfg = {**cfg, "server": yaml.safe_load(mb.config_path.read_text())["server"]}
    mb.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    req = urllib.request.Request(mb.url + "/-/reload", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_threshold_to_webhook_ack_resolve_and_otlp(run_monbridge, hook, otlp_http_receiver, tmp_path):
    otlp = otlp_http_receiver.endpoint
    mb = run_monbridge(config(tmp_path / "state", hook.url, 1, otlp))
    time.sleep(1.0)
    assert hook.requests == [] and api(mb.url, "GET", "/api/v1/alerts") == []
    reload_with(mb, config(tmp_path / "state", hook.url, 50, otlp))  # the metric crosses the threshold
    [fired] = hook.wait_for(lambda r: r.json()["status"] == "firing")
    body = fired.json()
    assert body["alerts"][0]["labels"] == {"alertname": "ExampleHigh", "severity": "critical", "team": "infra",
                                           "source": "example"}
    assert body["alerts"][0]["annotations"]["summary"].startswith("example.value is 50 on ")
    [alert] = api(mb.url, "GET", "/api/v1/alerts")
    assert alert["state"] == "firing" and alert["value"] == 50
    acked = api(mb.url, "POST", f"/api/v1/alerts/{alert['id']}/ack")
    assert acked["state"] == "acknowledged"
    reload_with(mb, config(tmp_path / "state", hook.url, 1, otlp))  # back under the threshold
    [resolved] = hook.wait_for(lambda r: r.json()["status"] == "resolved")
    assert resolved.json()["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert api(mb.url, "GET", "/api/v1/alerts?state=resolved")[0]["id"] == alert["id"]

    def mine(x):
        return attributes(x.attributes).get("alert.id") == alert["id"]

    [span] = otlp_http_receiver.wait_for_signal("spans", mine)
    assert span.name == "alert ExampleHigh"
    events = [e.name for e in span.events]
    assert events[:2] == ["notification", "acknowledged"], events
    delivered = attributes(span.events[0].attributes)
    assert delivered["notification.notifier"] == "monitoring.alerts.webhook"
    assert delivered["notification.outcome"] == "delivered"
    assert delivered["notification.key"] == fired.headers["idempotency-key"]
    assert attributes(span.attributes)["alert.state"] == "resolved"
    deadline = time.monotonic() + 15
    while True:
        records = [r for r in otlp_http_receiver.log_records if mine(r)]
        states = [attributes(r.attributes)["alert.state"] for r in records
                  if attributes(r.attributes)["monbridge.alert.event"] == "transition"]
        if len(states) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert states == ["firing", "acknowledged", "resolved"]
    assert all(r.trace_id == span.trace_id for r in records)
    assert len([r for r in hook.requests if r.path == "/hook"]) == 2  # one firing, one resolved


def test_sigkill_mid_notification_loses_nothing_and_doubles_nothing(run_monbridge, hook, tmp_path):
    hook.down = True
    state = tmp_path / "state"
    cfg = config(state, hook.url, 50)
    first = run_monbridge(cfg)
    outbox = state / "outbox"
    deadline = time.monotonic() + 15
    while not read_outbox(outbox):
        assert time.monotonic() < deadline, f"no notification in the outbox; log:\n{first.log_text()}"
        time.sleep(0.1)
    time.sleep(1.0)  # a few failed attempts against the receiver that is down
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    hook.down = False
    second = run_monbridge(cfg)
    [delivered] = hook.wait_for(lambda r: r.path == "/hook")
    time.sleep(2.0)  # time for any double to show up (group_interval is 0.5 s)
    assert len(hook.requests) == 1, [r.json()["status"] for r in hook.requests]
    assert delivered.json()["status"] == "firing"
    assert not read_outbox(outbox)
    [alert] = api(second.url, "GET", "/api/v1/alerts")
    assert alert["state"] == "firing" and delivered.json()["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert '"notification ' in second.log_text() and "delivered to monitoring.alerts.webhook" in second.log_text()
