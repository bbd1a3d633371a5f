"""The HTTP server on a real loopback socket: negotiation, gzip, probes, plugin API, auth, TLS, reload."""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import ssl
import subprocess

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from bridge.config import parse_config
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime
from bridge.supervisor import SupervisorSettings
from tests.unit.plugins_for_tests import FailingCollector, SteadyCollector

SECRET = "pa55-w0rd-xyz"


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def registry():
    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.steady", SteadyCollector)
    reg.register_plugin("monitoring.metrics.failing", FailingCollector)
    return reg


def config(extra_server="", plugins=None, value=1.0):
    plugins = plugins if plugins is not None else f"""
  - plugin_id: monitoring.metrics.steady
    config: {{collection_interval: 0.1, value: {value}, password: "{SECRET}"}}
"""
    return f"""
server:
  listen: "127.0.0.1:0"
{extra_server}
plugins:{plugins}
"""


async def started(text, reload_text=None):
    reg = registry()
    loaded = parse_config(text, "test.yaml", reg, env={})
    holder = {"text": reload_text or text}
    rt = Runtime(loaded, reg, reload_config=lambda: parse_config(holder["text"], "test.yaml", reg, env={}),
                 settings=SupervisorSettings(backoff_initial=0.05, max_failures=1))
    rt.reload_text = holder  # type: ignore[attr-defined]
    await rt.start()
    await asyncio.sleep(0.2)
    host, port = rt.server.bound
    return rt, f"http://{host}:{port}"


async def test_metrics_negotiation_and_gzip():
    rt, url = await started(config())
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"}) as r:
                assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                text = await r.text()
            fams = {f.name: f for f in parse_text(text)}
            assert fams["steady_value_ratio"].samples[0].value == 1.0
            assert fams["steady_value_ratio"].samples[0].labels == {"k": "v"}
            assert "target_info" in fams and fams["target_info"].samples[0].labels["service_name"] == "monbridge"
            accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            async with s.get(f"{url}/metrics", headers={"Accept": accept}) as r:
                assert r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
                om = await r.text()
            assert om.endswith("# EOF\n")
            om_fams = {f.name: f for f in parse_openmetrics(om)}
            assert om_fams["monbridge_plugin_runs"].type == "counter"
            assert om_fams["target"].type == "info"
            async with s.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                body = gzip.decompress(await r.read()).decode()
            # (the same families, and those the agent's own rounds added since the first scrape)
            assert set(fams) <= {f.name for f in parse_text(body)}
    finally:
        await rt.stop()


async def test_probes_and_plugin_api_with_a_failing_plugin():
    plugins = f"""
  - plugin_id: monitoring.metrics.steady
    config: {{collection_interval: 0.1, password: "{SECRET}"}}
  - plugin_id: monitoring.metrics.failing
    config: {{collection_interval: 0.05}}
"""
    rt, url = await started(config(plugins=plugins))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/-/healthy") as r:
                assert r.status == 200
            for _ in range(40):
                async with s.get(f"{url}/-/ready") as r:
                    if r.status == 503:
                        assert "monitoring.metrics.failing" in await r.text()
                        break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("never not-ready while a plugin failed")
            async with s.get(f"{url}/api/v1/plugins") as r:
                doc = await r.json()
        by_id = {p["plugin_id"]: p for p in doc["data"]}
        assert by_id["monitoring.metrics.steady"]["state"] == "running"
        assert by_id["monitoring.metrics.steady"]["config"]["password"] == "<secret>"
        assert by_id["monitoring.metrics.failing"]["errors"] >= 1
        assert "backend said no" in by_id["monitoring.metrics.failing"]["last_error"]
        assert SECRET not in str(doc)
    finally:
        await rt.stop()


async def plugins_api_with(plugin_id, cls, config, failed_yet):
    """Run ``cls`` alone as ``plugin_id`` with ``config`` (a YAML flow mapping) until
    ``failed_yet(runner)``; the ``/api/v1/plugins`` text then, and the runner."""
    reg = registry()
    reg.register_plugin(plugin_id, cls)
    loaded = parse_config(f'server: {{listen: "127.0.0.1:0"}}\nplugins:\n  - plugin_id: {plugin_id}\n'
                          f'    config: {config}\n', "t.yaml", reg, env={})
    rt = Runtime(loaded, reg)
    await rt.start()
    try:
        runner = rt.supervisor.runners[plugin_id]
        for _ in range(100):
            if failed_yet(runner):
                break
            await asyncio.sleep(0.02)
        host, port = rt.server.bound
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/api/v1/plugins") as r:
            return await r.text(), runner
    finally:
        await rt.stop()


async def test_secret_in_a_plugin_error_is_redacted(caplog):
    class Leaky(SteadyCollector):
        async def collect_metrics(self):
            raise RuntimeError(f"login failed for password {SECRET}")

    from bridge.logs import TextFormatter

    text, _ = await plugins_api_with("monitoring.metrics.leaky", Leaky,
                                     f'{{collection_interval: 0.05, password: "{SECRET}"}}', lambda r: r.errors)
    assert "login failed for password <secret>" in text and SECRET not in text
    lines = [TextFormatter().format(rec) for rec in caplog.records]
    assert any("<secret>" in line for line in lines)
    assert not any(SECRET in line for line in lines)


async def test_auth_guards_everything_but_probes():
    auth = f'  auth:\n    bearer_token: "tok-{SECRET}"\n    basic: {{username: admin, password: "{SECRET}"}}\n'
    rt, url = await started(config(extra_server=auth))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/metrics") as r:
                assert r.status == 401 and "WWW-Authenticate" in r.headers
            async with s.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with s.get(f"{url}/metrics", headers={"Authorization": f"Bearer tok-{SECRET}"}) as r:
                assert r.status == 200
            async with s.get(f"{url}/api/v1/plugins", headers=basic("admin", SECRET)) as r:
                assert r.status == 200
            async with s.get(f"{url}/api/v1/plugins", headers=basic("admin", "nope")) as r:
                assert r.status == 401
            async with s.get(f"{url}/-/healthy") as r:
                assert r.status == 200
    finally:
        await rt.stop()


async def test_tls(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = f"  tls: {{cert_file: {cert}, key_file: {key}}}\n"
    rt, url = await started(config(extra_server=tls))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as s:
            async with s.get(url.replace("http:", "https:") + "/metrics", ssl=ctx) as r:
                assert r.status == 200 and "steady_value_ratio" in await r.text()
            with pytest.raises(aiohttp.ClientError):
                async with s.get(url + "/metrics") as r:
                    await r.read()
    finally:
        await rt.stop()


async def test_reload_applies_a_valid_config_and_refuses_an_invalid_one():
    rt, url = await started(config(value=1.0))
    try:
        rt.reload_text["text"] = config(value=1.0).replace("collection_interval: 0.1", "collection_interval: -5")
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/-/reload") as r:
                assert r.status == 400
                doc = await r.json()
            assert "plugins[0].config.collection_interval" in doc["message"]
            assert rt.supervisor.runners["monitoring.metrics.steady"].state.value == "running"
            rt.reload_text["text"] = config(value=7.0)
            async with s.post(f"{url}/-/reload") as r:
                assert r.status == 200
            await asyncio.sleep(0.3)
            async with s.get(f"{url}/metrics") as r:
                text = await r.text()
        assert 'steady_value_ratio{k="v"} 7.0' in text
    finally:
        await rt.stop()


class BrokenStart(SteadyCollector):
    """Initializes, then fails to start, naming its password."""

    async def initialize(self, config):
        await super().initialize(config)
        self.password = self.parse_config(config).password.get_secret_value()

    async def start(self):
        raise RuntimeError(f"port 4317 is taken (logged in with {self.password})")


def reload_metrics(text):
    fams = {f.name: f for f in parse_text(text)}
    return (fams["monbridge_config_last_reload_successful"].samples[0].value,
            fams["monbridge_config_last_reload_success_timestamp_seconds"].samples[0].value)


async def test_reload_that_cannot_be_applied_keeps_the_running_server_and_plugins(tmp_path):
    rt, url = await started(config(value=1.0))
    steady = rt.supervisor.runners["monitoring.metrics.steady"]
    old_server = rt.server
    cert, key = tmp_path / "missing-cert.pem", tmp_path / "missing-key.pem"
    added = '\n  - plugin_id: monitoring.metrics.failing\n    config: {collection_interval: 5}\n'
    plugins = f"""
  - plugin_id: monitoring.metrics.steady
    config: {{collection_interval: 0.1, value: 7.0, password: "{SECRET}"}}{added}"""
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/metrics") as r:
                ok_before, started_at = reload_metrics(await r.text())
            assert ok_before == 1 and started_at > 0  # the config it started with counts as loaded

            rt.reload_text["text"] = config(extra_server=f"  tls: {{cert_file: {cert}, key_file: {key}}}\n",
                                            plugins=plugins)
            async with s.post(f"{url}/-/reload") as r:
                assert r.status == 400
                doc = await r.json()
            assert doc["status"] == "error"
            assert f"server.tls.cert_file: cannot read {cert}: no such file" in doc["message"]
            # The old server still answers on the same address; the old plugins run as they were.
            assert rt.server is old_server
            assert rt.supervisor.runners["monitoring.metrics.steady"] is steady
            assert steady.state.value == "running" and steady.task is not None and not steady.task.done()
            assert "monitoring.metrics.failing" not in rt.supervisor.runners
            assert rt.loaded.model.server.tls is None
            calls = len(steady.host.plugin.calls)
            await asyncio.sleep(0.3)
            assert len(steady.host.plugin.calls) > calls
            async with s.get(f"{url}/metrics") as r:
                assert r.status == 200
                text = await r.text()
            assert 'steady_value_ratio{k="v"} 1.0' in text
            assert reload_metrics(text) == (0, started_at)

            # The files appear: the same reload now applies, TLS on the same port.
            from tests.tls_cert import self_signed

            made_cert, made_key = self_signed(tmp_path)
            made_cert.rename(cert)
            made_key.rename(key)
            async with s.post(f"{url}/-/reload") as r:
                assert r.status == 200, await r.text()
            assert rt.server is not old_server and rt.server.bound == old_server.bound
            assert rt.supervisor.runners["monitoring.metrics.steady"] is not steady
            assert "monitoring.metrics.failing" in rt.supervisor.runners
            await asyncio.sleep(0.3)
            ctx = ssl.create_default_context(cafile=str(cert))
            async with s.get(url.replace("http:", "https:") + "/metrics", ssl=ctx) as r:
                text = await r.text()
            assert 'steady_value_ratio{k="v"} 7.0' in text
            ok_after, reloaded_at = reload_metrics(text)
            assert ok_after == 1 and reloaded_at >= started_at
    finally:
        await rt.stop()


async def test_reload_whose_plugin_fails_to_start_keeps_the_running_config(caplog):
    reg = registry()
    reg.register_plugin("monitoring.metrics.broken", BrokenStart)
    text = config(value=1.0)
    loaded = parse_config(text, "test.yaml", reg, env={})
    new_secret = "n3w-s3cret-only-in-the-new-config"
    broken = f'\n  - plugin_id: monitoring.metrics.broken\n    config: {{collection_interval: 0.1, password: "{new_secret}"}}\n'
    new_text = config(plugins=f"""
  - plugin_id: monitoring.metrics.steady
    config: {{collection_interval: 0.1, value: 7.0}}{broken}""")
    rt = Runtime(loaded, reg, reload_config=lambda: parse_config(new_text, "test.yaml", reg, env={}))
    await rt.start()
    try:
        ok, message = await rt.reload()
        assert not ok
        assert "monitoring.metrics.broken: start failed: RuntimeError: port 4317 is taken" in message
        # The refused config's secrets are redacted too: in the answer (the handler redacts) and the logs.
        from bridge.logs import TextFormatter, redact_text

        assert new_secret in message and new_secret not in redact_text(message)
        logged = "\n".join(TextFormatter().format(rec) for rec in caplog.records)
        assert "port 4317 is taken" in logged and new_secret not in logged
        assert set(rt.supervisor.runners) == {"monitoring.metrics.steady"}
        await asyncio.sleep(0.3)
        # The changed plugin stopped for the attempt and runs again with the running config.
        steady = rt.supervisor.runners["monitoring.metrics.steady"]
        assert steady.state.value == "running" and steady.runs > 0
        assert steady.host.plugin.value == 1.0
        assert rt.loaded is loaded
        assert reload_metrics(render_metrics(rt))[0] == 0
    finally:
        await rt.stop()


async def test_reload_to_a_taken_address_keeps_serving(free_port):
    rt, url = await started(config())
    taken = free_port()
    blocker = socket.create_server(("127.0.0.1", taken))
    try:
        rt.reload_text["text"] = config().replace('"127.0.0.1:0"', f'"127.0.0.1:{taken}"')
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/-/reload") as r:
                assert r.status == 400
                assert f"cannot listen on 127.0.0.1:{taken}" in (await r.json())["message"]
            async with s.get(f"{url}/metrics") as r:
                assert r.status == 200
            blocker.close()
            async with s.post(f"{url}/-/reload") as r:
                assert r.status == 200
            async with s.get(f"http://127.0.0.1:{taken}/metrics") as r:
                assert reload_metrics(await r.text())[0] == 1
            await asyncio.sleep(0.1)  # the old server retires once the reload's answer is sent
            with pytest.raises(aiohttp.ClientConnectionError):
                async with s.get(f"{url}/metrics") as r:
                    await r.read()
    finally:
        blocker.close()
        await rt.stop()


def render_metrics(rt):
    from bridge.exposition import render

    rt.supervisor.refresh_self_metrics()
    return render(rt.pipeline.families(), dict(rt.pipeline.resource.attributes), False).decode()


async def test_a_secret_in_a_sink_error_is_redacted():
    from pydantic import SecretStr

    from bridge import IntegrationConfig, MonitoringIntegrationPlugin, PluginMetadata, PluginType

    class LeakyConfig(IntegrationConfig):
        password: SecretStr

    class LeakySink(MonitoringIntegrationPlugin):
        config_model = LeakyConfig

        def metadata(self):
            return PluginMetadata("monitoring.integration.leaky", "leaky", "1", "tests", "", PluginType.INTEGRATION)

        async def initialize(self, config):
            self.password = self.parse_config(config).password.get_secret_value()

        async def shutdown(self):
            pass

        async def import_metrics(self):
            return []

        async def import_alerts(self):
            return []

        async def export_alerts(self, alerts):
            pass

        async def export_metrics(self, metrics):
            raise ConnectionError(f"login refused for password {self.password}")

    text, runner = await plugins_api_with("monitoring.integration.leaky", LeakySink,
                                          f'{{interval: 0.05, password: "{SECRET}"}}',
                                          lambda r: "export" in r.sinks and r.sinks["export"].errors)
    assert "login refused for password <secret>" in text and SECRET not in text
    assert runner.state.value == "shut_down" and runner.restarts == 0


async def test_slow_and_idle_connections_are_closed_and_scrapes_go_on():
    """A client that connects and sends nothing, one that sends its headers a byte at a time
    (slowloris) and one left idle after an answer are closed after server.read_timeout; /metrics
    answers all the while; the connections closed before any request are counted and logged."""
    rt, url = await started(config(extra_server="  read_timeout: 0.5"))
    host, port = rt.server.bound
    try:
        silent = await asyncio.open_connection(host, port)
        slow = await asyncio.open_connection(host, port)
        idle = await asyncio.open_connection(host, port)
        idle[1].write(b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await asyncio.wait_for(idle[0].readline(), 5)).startswith(b"HTTP/1.1 200")
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        async with aiohttp.ClientSession() as s:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: loc":
                slow[1].write(bytes([byte]))
                async with s.get(f"{url}/metrics") as r:
                    assert r.status == 200
                if slow[1].is_closing() or slow[0].at_eof():
                    break
                await asyncio.sleep(0.05)
        for reader, _writer in (silent, slow, idle):
            assert await asyncio.wait_for(reader.read(), 5) is not None  # (read() returns at EOF: closed)
            assert reader.at_eof()
        assert loop.time() - started_at < 5
        async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
            body = await r.text()
        counted = [ln for ln in body.splitlines() if ln.startswith("monbridge_http_silent_connections_total")]
        assert counted and float(counted[0].split()[-1]) == 2.0  # (silent and slow: no request ever came)
    finally:
        await rt.stop()
