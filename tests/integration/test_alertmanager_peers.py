"""monbridge with a real Alertmanager 0.25, both ways: Alertmanager's webhooks into monbridge's
receiver (fingerprints agree, resolution follows), and monbridge's alerts into Alertmanager."""

from __future__ import annotations

import time

import alerting_peers
import pytest
from alerting_peers import api
from conftest import wait_until

pytestmark = pytest.mark.integration
alertmanager_server = alerting_peers.alertmanager_server


def test_alertmanager_webhooks_reach_monbridge(run_monbridge, alertmanager_server, tmp_path):
    mb = run_monbridge({"alerting": {"state_dir": str(tmp_path / "state")}, "plugins": []})
    am = alertmanager_server({
        "route": {"receiver": "monbridge", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "monbridge", "webhook_configs": [
            {"url": f"{mb.url}/api/v1/alerts/alertmanager", "send_resolved": True}]}],
    })
    labels = {"alertname": "DiskFull", "severity": "warning", "instance": "db1:9100"}
    am.post_alerts([{"labels": labels, "annotations": {"summary": "disk full on db1"}}])
    [theirs] = wait_until(am.alerts, what="Alertmanager holding the alert")
    [ours] = wait_until(lambda: api(mb.url, "GET", "/api/v1/alerts"), what="monbridge receiving the webhook")
    # The same label set has the same fingerprint in both: monbridge computes it as Alertmanager does.
    assert ours["fingerprint"] == theirs["fingerprint"]
    assert ours["labels"] == labels and ours["annotations"] == {"summary": "disk full on db1"}
    assert ours["state"] == "firing"
    # Resolved in Alertmanager (endsAt now): the resolved webhook resolves monbridge's alert.
    am.post_alerts([{"labels": labels, "annotations": {}, "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}])
    wait_until(lambda: api(mb.url, "GET", "/api/v1/alerts") == [], what="resolution via the webhook")
    assert api(mb.url, "GET", "/api/v1/alerts?state=resolved")[0]["id"] == ours["id"]
    hist = api(mb.url, "GET", f"/api/v1/alerts/history?alert_id={ours['id']}")
    assert [(h["from"], h["to"], h["by"]) for h in hist] == [(None, "firing", "alertmanager:monbridge"),
                                                             ("firing", "resolved", "alertmanager:monbridge")]


def test_monbridge_alerts_reach_alertmanager(run_monbridge, alertmanager_server, tmp_path):
    am = alertmanager_server({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
    mb = run_monbridge({
        "alerting": {"state_dir": str(tmp_path / "state")},
        "plugins": [
            {"plugin_id": "monitoring.metrics.example", "config": {"collection_interval": 0.2, "value": 50}},
            {"plugin_id": "monitoring.alerts.rules", "config": {"evaluation_interval": 0.2, "rules": [
                {"name": "ExampleHigh", "metric": "example.value", "match": {"source": "example"}, "op": ">",
                 "threshold": 10, "severity": "critical", "annotations": {"summary": "value is {{ value }}"}}]}},
            {"plugin_id": "monitoring.alerts.grouping", "config": {"group_wait": 0, "group_interval": 1}},
            {"plugin_id": "monitoring.alerts.alertmanager", "config": {"url": am.url}},
        ],
    })
    [theirs] = wait_until(am.alerts, what="Alertmanager receiving monbridge's alert")
    [ours] = api(mb.url, "GET", "/api/v1/alerts")
    assert theirs["labels"] == {"alertname": "ExampleHigh", "severity": "critical", "source": "example"}
    assert theirs["annotations"] == {"summary": "value is 50"}
    assert theirs["status"]["state"] == "active"
    assert theirs["fingerprint"] == ours["fingerprint"]  # no label needed renaming here
    # Resolved in monbridge: Alertmanager gets endsAt and stops listing it as active.
    api(mb.url, "POST", f"/api/v1/alerts/{ours['id']}/resolve")
    wait_until(lambda: not [a for a in am.alerts() if a["status"]["state"] == "active"], what="resolution in Alertmanager")
