"""The component runtime and its API on a real server: /api/v1/components, data, events, auth, route prefix."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import pytest

from bridge.api import (
    Alert,
    AlertState,
    ComponentDefinition,
    ComponentEvent,
    DashboardComponentPlugin,
    PluginConfig,
    PluginMetadata,
    PluginType,
)
from bridge.config import parse_config
from bridge.dashboard.host import EVENT_LIMITS
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime
from bridge.supervisor import SupervisorSettings
from tests.unit.plugins_for_tests import SteadyCollector

BUILTINS = {"monitoring.dashboard.timeseries": "timeseries", "monitoring.dashboard.status": "status",
            "monitoring.dashboard.topology": "topology", "monitoring.dashboard.correlation": "correlation",
            "monitoring.dashboard.alerts": "alerts"}
TOKEN = "t0ken-for-tests-123"


class GaugeConfig(PluginConfig):
    label: str = "meter"


class GaugeComponent(DashboardComponentPlugin):
    """A third-party component: it echoes its parameters and keeps the events it gets."""

    config_model: ClassVar[type[PluginConfig]] = GaugeConfig
    events: ClassVar[list[ComponentEvent]] = []

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("monitoring.dashboard.gauge", "gauge", "1.0", "tests", "a gauge",
                              PluginType.DASHBOARD_COMPONENT)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.label = self.parse_config(config).label

    def get_component_definition(self) -> ComponentDefinition:
        return ComponentDefinition("tests.gauge", self.label, "gauge", "a third-party gauge",
                                   {"params": {"x": "a number"}, "refresh_seconds": 2})

    async def get_data(self, params: Mapping[str, Any]) -> Any:
        if params.get("x") == "boom":
            raise RuntimeError("the gauge broke")
        return {"value": 42, "params": dict(params)}

    async def handle_event(self, event: ComponentEvent) -> None:
        if event.payload.get("bad"):
            raise ValueError("payload.bad: not taken")
        self.events.append(event)

    async def shutdown(self) -> None:
        pass


def registry():
    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.steady", SteadyCollector)
    reg.register_plugin("monitoring.dashboard.gauge", GaugeComponent)
    return reg


def config(tmp_path, server="", plugins=""):
    return f"""
server:
  listen: "127.0.0.1:0"
{server}
alerting: {{state_dir: "{tmp_path}"}}
dashboard: {{history: {{window: 600, resolution: 1}}}}
plugins:
  - plugin_id: monitoring.metrics.steady
    config: {{collection_interval: 0.05, value: 3.5}}
  - plugin_id: monitoring.dashboard.gauge
    config: {{label: "My gauge"}}
  - plugin_id: monitoring.alerts.correlation
    config: {{labels: [service], window: 600}}
{plugins}
"""


async def started(text):
    reg = registry()
    loaded = parse_config(text, "test.yaml", reg, env={})
    rt = Runtime(loaded, reg, settings=SupervisorSettings(backoff_initial=0.05, max_failures=1))
    await rt.start()
    await asyncio.sleep(0.2)
    host, port = rt.server.bound
    return rt, f"http://{host}:{port}{loaded.model.server.route_prefix}"


@pytest.fixture
async def agent(tmp_path):
    rt, url = await started(config(tmp_path))
    try:
        for _ in range(3):
            await rt.dashboard.sample_once()
            await asyncio.sleep(1.05)
        yield rt, url
    finally:
        await rt.stop()


async def get(s, url, status=200):
    async with s.get(url) as r:
        body = await r.json()
        assert r.status == status, body
        return body


async def post(s, url, doc, status=200, **kw):
    async with s.post(url, json=doc, **kw) as r:
        body = await r.json()
        assert r.status == status, body
        return body


async def test_every_builtin_and_enabled_component_is_listed_and_answers(agent):
    rt, url = agent
    async with aiohttp.ClientSession() as s:
        listed = (await get(s, f"{url}/api/v1/components"))["data"]
        by_id = {c["id"]: c for c in listed}
        assert {cid: by_id[cid]["type"] for cid in BUILTINS} == BUILTINS
        gauge = by_id["tests.gauge"]
        assert (gauge["plugin_id"], gauge["title"], gauge["type"], gauge["refresh_seconds"]) == (
            "monitoring.dashboard.gauge", "My gauge", "gauge", 2)
        for cid in by_id:
            assert (await get(s, f"{url}/api/v1/components/{cid}/data"))["status"] == "success"

        # The chart: the steady gauge's value in every row sampled since it first reported.
        now = time.time()
        chart = (await get(s, f"{url}/api/v1/components/monitoring.dashboard.timeseries/data"
                              f"?metric=steady_value_ratio&rate=false&from={now - 60}&to={now}&step=1"))["data"]
        assert [x["labels"] for x in chart["series"]] == [{"k": "v"}]
        values = [v for v in chart["series"][0]["values"] if v is not None]
        assert len(values) >= 2 and set(values) == {3.5}
        assert len(chart["timestamps"]) == len(chart["series"][0]["values"])

        status = (await get(s, f"{url}/api/v1/components/monitoring.dashboard.status/data"))["data"]
        plugins = {i["name"]: i["level"] for i in status["items"] if i["group"] == "plugins"}
        assert plugins["monitoring.metrics.steady"] == "ok"

        topo = (await get(s, f"{url}/api/v1/components/monitoring.dashboard.topology/data"))["data"]
        edge = next(e for e in topo["edges"] if e["from"] == "monitoring.metrics.steady")
        assert edge["to"] == "pipeline" and edge["rate"] > 0 and edge["errors"] == 0

        # A third-party component gets the request's parameters, the window as numbers.
        g = (await get(s, f"{url}/api/v1/components/tests.gauge/data?x=7&from=100&to=200&step=20"))["data"]
        assert g["value"] == 42 and g["params"] == {"x": "7", "from": 100.0, "to": 200.0, "step": 20.0}
        await post(s, f"{url}/api/v1/components/tests.gauge/events", {"type": "click", "payload": {"at": 3}})
        assert GaugeComponent.events[-1] == ComponentEvent("tests.gauge", "click", {"at": 3})


async def test_alert_view_acks_resolves_and_silences_through_the_alert_engine(agent):
    rt, url = agent
    a = rt.alerts.fire(Alert("a1", "DiskFull", "critical", labels={"service": "db", "host": "h1"}))
    b = rt.alerts.fire(Alert("a2", "SlowQueries", "warning", labels={"service": "db", "host": "h2"}))
    c = rt.alerts.fire(Alert("a3", "Other", "warning", labels={"host": "h3"}))
    await rt.alerts.drain()
    events = f"{url}/api/v1/components/monitoring.dashboard.alerts/events"
    async with aiohttp.ClientSession() as s:
        view = (await get(s, f"{url}/api/v1/components/monitoring.dashboard.alerts/data"))["data"]
        assert {x["id"] for x in view["alerts"]} == {a.id, b.id, c.id}
        await post(s, events, {"type": "ack", "payload": {"alert_id": a.id}})
        api = {x["id"]: x["state"] for x in (await get(s, f"{url}/api/v1/alerts"))["data"]}
        assert api[a.id] == "acknowledged"
        await post(s, events, {"type": "ack", "payload": {"alert_id": a.id}}, 409)
        await post(s, events, {"type": "resolve", "payload": {"alert_id": b.id}})
        assert rt.alerts.store.get(b.id).state is AlertState.RESOLVED
        await post(s, events, {"type": "silence", "payload": {"alert_id": c.id, "duration": 600}})
        silences = (await get(s, f"{url}/api/v1/silences"))["data"]
        assert [m["value"] for m in silences[0]["matchers"]][:2] == ["Other", "h3"]
        assert rt.alerts.muted(rt.alerts.store.get(c.id))
        await post(s, events, {"type": "ack", "payload": {"alert_id": "nope"}}, 404)
        await post(s, events, {"type": "explode", "payload": {"alert_id": c.id}}, 400)
        await post(s, events, {"type": "ack", "payload": {}}, 400)

        # The correlation processor put a1 and a2 (service=db) in one incident; a3 has none.
        corr = (await get(s, f"{url}/api/v1/components/monitoring.dashboard.correlation/data"))["data"]
        assert [sorted(x["id"] for x in i["alerts"]) for i in corr["incidents"]] == [["a1", "a2"]]
        assert corr["uncorrelated"] == 1 and corr["incidents"][0]["active"] is True


async def test_hostile_requests_are_refused_naming_the_fault_and_counted(agent):
    rt, url = agent
    data = f"{url}/api/v1/components/monitoring.dashboard.timeseries/data"
    async with aiohttp.ClientSession() as s:
        assert "no component" in (await get(s, f"{url}/api/v1/components/nope/data", 404))["error"]
        await post(s, f"{url}/api/v1/components/nope/events", {"type": "x"}, 404)
        assert (await get(s, f"{data}?step=0.001", 400))["error"].startswith("step:")
        assert (await get(s, f"{data}?from=0&to=2000000&step=1", 400))["error"].startswith("step:")
        assert (await get(s, f"{data}?metric=%7B%7D", 400))["error"].startswith("metric:")
        assert (await get(s, f"{data}?step=1&step=2", 400))["error"].startswith("step: given more than once")
        assert "the gauge broke" in (await get(s, f"{url}/api/v1/components/tests.gauge/data?x=boom", 500))["error"]
        gauge_events = f"{url}/api/v1/components/tests.gauge/events"
        await post(s, gauge_events, {"type": "x", "payload": {"bad": 1}}, 400)
        await post(s, gauge_events, {"payload": {}}, 400)
        await post(s, gauge_events, {"type": "x", "payload": []}, 400)
        await post(s, gauge_events, {"type": "x", "payload": {"p": "x" * EVENT_LIMITS.max_bytes}}, 413)
        async with s.post(gauge_events, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with s.get(f"{url}/metrics") as r:
            text = await r.text()
    assert 'monbridge_dashboard_requests_refused_total{reason="not_found"} 2' in text
    assert 'monbridge_dashboard_requests_refused_total{reason="body"} 4' in text
    assert "monbridge_dashboard_history_memory_bytes " in text


async def test_auth_and_route_prefix(tmp_path):
    server = f"""  route_prefix: /mb/
  auth: {{bearer_token: "{TOKEN}"}}"""
    rt, url = await started(config(tmp_path, server))
    root = url.removesuffix("/mb")
    assert url.endswith("/mb")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/api/v1/components") as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            async with s.get(f"{url}/api/v1/components", headers=auth) as r:
                assert r.status == 200
            async with s.get(f"{root}/api/v1/components", headers=auth) as r:
                assert r.status == 404
            async with s.get(f"{url}/ui/") as r:  # the page holds no data: it asks for credentials itself
                assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            async with s.get(f"{url}/ui/static/app.js") as r:
                assert r.status == 200
            async with s.get(f"{url}/ui/static/../../metrics") as r:
                assert r.status in (401, 403, 404)
            async with s.get(f"{url}/", headers=auth, allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/mb/ui/"
            async with s.get(f"{root}/-/healthy") as r:
                assert r.status == 200
            async with s.get(f"{url}/-/ready") as r:
                assert r.status in (200, 503)
            async with s.post(f"{url}/api/v1/components/tests.gauge/events", json={"type": "t"}) as r:
                assert r.status == 401
            async with s.post(f"{url}/api/v1/components/tests.gauge/events", json={"type": "t"}, headers=auth) as r:
                assert r.status == 200
            # A forged request from another page is refused before it reaches a component.
            async with s.post(f"{url}/api/v1/components/tests.gauge/events", data=json.dumps({"type": "t"}),
                              headers={**auth, "Content-Type": "text/plain", "Origin": "http://evil.example"}) as r:
                assert r.status == 403
    finally:
        await rt.stop()


async def test_basic_auth_and_a_disabled_dashboard(tmp_path):
    server = """  auth: {basic: {username: u, password: "pw"}}"""
    text = config(tmp_path, server).replace("dashboard: {history: {window: 600, resolution: 1}}",
                                            "dashboard: {enabled: false}")
    rt, url = await started(text)
    try:
        creds = {"Authorization": "Basic " + base64.b64encode(b"u:pw").decode()}
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/api/v1/plugins", headers=creds) as r:
                assert r.status == 200
            async with s.get(f"{url}/api/v1/components", headers=creds) as r:
                assert r.status == 404
            async with s.get(f"{url}/", headers=creds) as r:
                assert r.status == 200 and "/metrics" in await r.text()
    finally:
        await rt.stop()
