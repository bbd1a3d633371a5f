"""Forged browser requests on a real server: every state-changing route refuses cross-origin,
form and text/plain requests, foreign Host names (DNS rebinding) and, without server.auth,
clients outside server.unauthenticated_writes_from, with 403 and the reason; the state stays."""

from __future__ import annotations

import json

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from bridge.api import AlertState
from bridge.config import parse_config
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime
from tests.unit.test_alert_api import am_payload

EVIL = "http://evil.example"
TOKEN = "wr1te-t0ken"


async def start(tmp_path, server_extra=""):
    reg = PluginRegistry().discover()
    text = f"""
server: {{listen: "127.0.0.1:0"{server_extra}}}
alerting: {{state_dir: "{tmp_path}"}}
plugins: []
"""
    reloads = []

    def reload_config():
        reloads.append(1)
        return parse_config(text, "t.yaml", reg, env={})

    rt = Runtime(parse_config(text, "t.yaml", reg, env={}), reg, reload_config=reload_config)
    rt.reloads = reloads  # type: ignore[attr-defined]
    await rt.start()
    host, port = rt.server.bound
    return rt, f"http://{host}:{port}"


@pytest.fixture
async def agent(tmp_path):
    rt, url = await start(tmp_path)
    # One firing alert to try to acknowledge.
    async with aiohttp.ClientSession() as s, s.post(url + "/api/v1/alerts/alertmanager", json=am_payload()) as r:
        assert r.status == 200
    yield rt, url
    await rt.stop()


def firing(rt):
    return [a for a in rt.alerts.store.active_alerts() if a.state is AlertState.FIRING]


async def post(url, path, **kw):
    async with aiohttp.ClientSession() as s, s.post(url + path, **kw) as r:
        return r.status, await r.json()


async def test_cross_origin_simple_posts_change_nothing(agent, caplog):
    rt, url = agent
    (alert,) = firing(rt)
    text_plain = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain;charset=UTF-8"}
    injected = json.dumps(am_payload(alertname="Injected", severity="critical"))
    for path, body in (("/-/reload", ""), ("/api/v1/alerts/alertmanager", injected),
                       (f"/api/v1/alerts/{alert.id}/ack", ""), (f"/api/v1/alerts/{alert.id}/resolve", "")):
        status, doc = await post(url, path, data=body, headers=text_plain)
        assert status == 403, path
        assert doc["status"] == "error" and f"POST {path}" in doc["error"]
    # A no-cors fetch without a body has no Content-Type: its Origin refuses it.
    status, doc = await post(url, f"/api/v1/alerts/{alert.id}/ack", headers={"Origin": EVIL})
    assert status == 403 and f"Origin {EVIL}" in doc["error"] and "server.allowed_origins" in doc["error"]
    # A form or text/plain body is refused even without Origin (an older browser's form post).
    for ctype in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"):
        status, doc = await post(url, "/api/v1/alerts/alertmanager", data=injected, headers={"Content-Type": ctype})
        assert status == 403 and "expected Content-Type: application/json" in doc["error"], ctype
    status, doc = await post(url, "/-/reload", data=b"", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403
    async with aiohttp.ClientSession() as s, s.delete(url + "/api/v1/silences/x", headers={"Origin": EVIL}) as r:
        assert r.status == 403
    async with aiohttp.ClientSession() as s:
        silence = {"matchers": [{"name": "alertname", "value": "DiskFull", "isRegex": False}],
                   "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2999-01-01T00:00:00Z", "comment": "x"}
        async with s.post(url + "/api/v1/silences", data=json.dumps(silence), headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 403

    assert rt.reloads == []
    assert firing(rt) == [alert] and [a.name for a in rt.alerts.store.active_alerts()] == ["DiskFull"]
    assert rt.alerts.silences.all() == []

    # Every refusal is counted by reason, and each reason logged once (then at most once a minute).
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        fams = {f.name: f for f in parse_text(await r.text())}
    counts = {smp.labels["reason"]: smp.value for smp in fams["monbridge_http_requests_refused"].samples
              if smp.name.endswith("_total")}
    assert counts == {"origin": 6, "content_type": 5, "host": 0, "credentials": 0}
    logged = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("refused: ")]
    assert len(logged) == 2 and "Origin http://evil.example" in logged[0]


async def test_a_foreign_host_name_is_refused_even_same_origin(agent):
    """DNS rebinding: the attacker's name now points at 127.0.0.1, so the page is same-origin."""
    rt, url = agent
    port = rt.server.bound[1]
    (alert,) = firing(rt)
    rebound = {"Host": f"evil.example:{port}", "Origin": f"{EVIL}:{port}", "Sec-Fetch-Site": "same-origin"}
    status, doc = await post(url, f"/api/v1/alerts/{alert.id}/ack", headers=rebound)
    assert status == 403 and f"Host 'evil.example:{port}'" in doc["error"] and "server.allowed_hosts" in doc["error"]
    status, _ = await post(url, "/-/reload", headers={"Host": f"evil.example:{port}"})
    assert status == 403
    assert rt.reloads == [] and firing(rt) == [alert]


async def test_same_origin_json_and_plain_clients_are_served(agent):
    rt, url = agent
    port = rt.server.bound[1]
    (alert,) = firing(rt)
    # monbridge's own page (same origin), a JSON body.
    page = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    status, doc = await post(url, "/api/v1/alerts/alertmanager", json=am_payload(alertname="Other"), headers=page)
    assert status == 200 and doc["data"]["firing"] == 1
    status, doc = await post(url, f"/api/v1/alerts/{alert.id}/ack", headers=page)
    assert status == 200 and doc["data"]["state"] == "acknowledged"
    # Non-browser clients (no Origin): curl -X POST, the CLI; localhost by name.
    status, _ = await post(url, "/-/reload", headers={"Host": f"localhost:{port}"})
    assert status == 200 and rt.reloads == [1]
    status, _ = await post(url, "/-/reload", headers={"Content-Type": "application/json"})
    assert status == 200


async def test_allowed_origins_and_hosts_are_configurable(tmp_path):
    extra = ', allowed_origins: ["https://grafana.example.org"], allowed_hosts: ["monbridge.internal", "*.svc"]'
    rt, url = await start(tmp_path, extra)
    try:
        port = rt.server.bound[1]
        status, _ = await post(url, "/-/reload", headers={"Origin": "https://grafana.example.org",
                                                           "Sec-Fetch-Site": "cross-site"})
        assert status == 200
        for host in ("monbridge.internal", f"monbridge.monitoring.svc:{port}"):
            status, _ = await post(url, "/-/reload", headers={"Host": host})
            assert status == 200, host
        for host in ("svc", "evil.example", f"evil.example:{port}", "monbridge.internal.evil.example"):
            status, doc = await post(url, "/-/reload", headers={"Host": host})
            assert status == 403 and "server.allowed_hosts" in doc["error"], host
        assert len(rt.reloads) == 3
    finally:
        await rt.stop()


async def test_writes_need_credentials_outside_the_unauthenticated_networks(tmp_path):
    rt, url = await start(tmp_path, ", unauthenticated_writes_from: []")
    try:
        status, doc = await post(url, "/-/reload")
        assert status == 403 and "needs credentials: set server.auth" in doc["error"]
        assert rt.reloads == []
        async with aiohttp.ClientSession() as s, s.get(url + "/api/v1/alerts") as r:
            assert r.status == 200  # reads stay open
    finally:
        await rt.stop()
    rt, url = await start(tmp_path, f', unauthenticated_writes_from: [], auth: {{bearer_token: "{TOKEN}"}}')
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/-/reload") as r:
                assert r.status == 401
            async with s.post(url + "/-/reload", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
        assert rt.reloads == [1]
    finally:
        await rt.stop()


@pytest.mark.parametrize("host", ["127.0.0.1:99999", "[::1]:x", "[::1", "127.0.0.1:\u00b9464", "evil.example:\u00b9464", ""])
async def test_a_malformed_host_is_refused_not_an_error(agent, host):
    """Raw requests (a client may send any bytes): 403 with the reason, never a 500."""
    rt, url = agent
    port = rt.server.bound[1]
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /-/reload HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n")
    writer.write(head.encode())
    response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 403 "), response[:200]
    assert b"is not a name of this server" in response
    assert rt.reloads == []
