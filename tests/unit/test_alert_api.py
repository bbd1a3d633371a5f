"""The alerting HTTP API and `monbridge alerts` on a real server: list, history, ack, resolve,
silences, the Alertmanager webhook receiver, errors naming the field, authentication."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import parse_config
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime
from tests.unit.alerting_helpers import make_alert

TOKEN = "t0ken-for-alerts-api"


def am_payload(status="firing", **labels):
    labels = {"alertname": "DiskFull", "severity": "warning", "instance": "db1:9100", **labels}
    return {
        "version": "4", "groupKey": '{}:{alertname="DiskFull"}', "truncatedAlerts": 0, "status": status,
        "receiver": "monbridge", "groupLabels": {"alertname": "DiskFull"}, "commonLabels": labels,
        "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{"status": status, "labels": labels, "annotations": {"summary": "disk full"},
                    "startsAt": "2026-01-02T03:04:05.123456789Z",
                    "endsAt": "2026-01-02T04:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom/graph", "fingerprint": ""}],
    }


async def start(tmp_path):
    reg = PluginRegistry().discover()
    text = f"""
server: {{listen: "127.0.0.1:0", auth: {{bearer_token: "{TOKEN}"}}}}
alerting: {{state_dir: "{tmp_path}"}}
plugins: []
"""
    rt = Runtime(parse_config(text, "t.yaml", reg, env={}), reg)
    await rt.start()
    host, port = rt.server.bound
    return rt, f"http://{host}:{port}"


async def test_receiver_ack_resolve_history_and_errors(tmp_path):
    rt, url = await start(tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=auth) as s:
            async with s.post(url + "/api/v1/alerts/alertmanager", json=am_payload()) as r:
                assert r.status == 200 and (await r.json())["data"] == {"firing": 1, "resolved": 0}
            async with s.post(url + "/api/v1/alerts/alertmanager", json=am_payload()) as r:
                assert r.status == 200  # the same alert again: still one alert
            async with s.get(url + "/api/v1/alerts") as r:
                [a] = (await r.json())["data"]
            assert a["state"] == "firing" and a["name"] == "DiskFull" and a["annotations"] == {"summary": "disk full"}
            assert a["starts_at"] == 1767323045.123456
            async with s.post(url + f"/api/v1/alerts/{a['id']}/ack", headers={"X-Monbridge-User": "alice"}) as r:
                assert r.status == 200 and (await r.json())["data"]["state"] == "acknowledged"
            async with s.post(url + f"/api/v1/alerts/{a['id']}/ack") as r:
                assert r.status == 409
                assert (await r.json())["error"] == f"alert {a['id']} is acknowledged; it cannot become acknowledged"
            async with s.post(url + "/api/v1/alerts/nope/resolve") as r:
                assert r.status == 404 and "no alert with id 'nope'" in (await r.json())["error"]
            async with s.post(url + "/api/v1/alerts/alertmanager", json=am_payload("resolved")) as r:
                assert (await r.json())["data"] == {"firing": 0, "resolved": 1}
            async with s.get(url + f"/api/v1/alerts/history?alert_id={a['id']}") as r:
                hist = (await r.json())["data"]
            assert [(h["from"], h["to"], h["by"]) for h in hist] == [
                (None, "firing", "alertmanager:monbridge"), ("firing", "acknowledged", "alice"),
                ("acknowledged", "resolved", "alertmanager:monbridge")]
            # Bad input: the field at fault is named.
            bad = am_payload()
            bad["alerts"][0]["labels"]["severity"] = 3
            for body, msg in ((bad, "alerts[0].labels.severity: expected a string"),
                              ({**am_payload(), "version": "3"}, 'version: expected "4", got "3"'),
                              ({**am_payload(), "alerts": [{"status": "firing", "labels": {"a": "b"},
                                                            "startsAt": "yesterday"}]},
                               "alerts[0].startsAt: 'yesterday' is not an RFC 3339 time")):
                async with s.post(url + "/api/v1/alerts/alertmanager", json=body) as r:
                    assert r.status == 400 and (await r.json())["error"] == msg
            async with s.get(url + "/api/v1/alerts?state=open") as r:
                assert r.status == 400 and "state: expected one of active (the default)" in (await r.json())["error"]
            async with s.get(url + "/api/v1/alerts") as r:
                assert (await r.json())["data"] == []  # resolved: no longer current
            async with s.get(url + "/api/v1/alerts?state=all") as r:
                assert [x["state"] for x in (await r.json())["data"]] == ["resolved"]
        async with aiohttp.ClientSession() as anon:
            async with anon.get(url + "/api/v1/alerts") as r:
                assert r.status == 401  # the server's authentication covers the alert API
    finally:
        await rt.stop()


async def test_cli_lists_acks_resolves_and_silences(tmp_path):
    rt, url = await start(tmp_path)
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(main, ["alerts", "--url", url, "--bearer-token", TOKEN, *args])

    try:
        a = rt.alerts.fire(make_alert(host="h1"), "test")
        out = await asyncio.to_thread(cli, "list")
        assert out.exit_code == 0, out.output
        assert a.id in out.output and "firing" in out.output and "host=h1" in out.output
        out = await asyncio.to_thread(cli, "silence", "alertname=HighCPU", 'host=~"h.*"', "--duration", "10m",
                                      "--comment", "maintenance")
        assert out.exit_code == 0, out.output
        silence_id = out.output.strip()
        out = await asyncio.to_thread(cli, "list")
        assert f"(muted: silence {silence_id})" in out.output
        out = await asyncio.to_thread(cli, "silence", "--list")
        assert silence_id in out.output and "active" in out.output and 'host=~"h.*"' in out.output
        out = await asyncio.to_thread(cli, "silence", "--expire", silence_id)
        assert out.exit_code == 0 and rt.alerts.muted(a) is None
        out = await asyncio.to_thread(cli, "ack", a.id)
        assert out.output.strip() == f"{a.id} HighCPU: acknowledged"
        out = await asyncio.to_thread(cli, "resolve", a.id)
        assert out.output.strip() == f"{a.id} HighCPU: resolved"
        out = await asyncio.to_thread(cli, "history")
        assert out.output.count(a.id) == 3 and "by cli" in out.output
        out = await asyncio.to_thread(cli, "resolve", a.id)
        assert out.exit_code == 1 and "HTTP 409" in out.output
        out = await asyncio.to_thread(cli, "silence", 'alertname=~"("')
        assert out.exit_code == 1 and "matchers[0]: matcher alertname=~: invalid regular expression" in out.output
        bad = await asyncio.to_thread(runner.invoke, main, ["alerts", "--url", url, "list"])
        assert bad.exit_code == 1 and "HTTP 401" in bad.output
    finally:
        await rt.stop()
    down = await asyncio.to_thread(runner.invoke, main, ["alerts", "--url", url, "list"])
    assert down.exit_code == 1 and f"cannot reach monbridge at {url} (--url)" in down.output
    assert json.loads((tmp_path / "silences.json").read_text())[0]["comment"] == "maintenance"
