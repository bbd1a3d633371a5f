"""The Prometheus bridge end to end, with real peers only: node_exporter 1.5 and Pushgateway as
scrape targets, Prometheus 2.42 as remote-write receiver, as a second scraper (the reference),
as a federation source and as an alert source, and Alertmanager 0.25 receiving alerts."""

from __future__ import annotations

import asyncio
import http.server
import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from alerting_peers import alertmanager_server  # noqa: F401 - the fixture
from conftest import wait_until
from peers import peers, push  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

PLUGIN = "monitoring.integration.prometheus"

PUSHED = """\
# HELP demo_requests_total Requests served.
# TYPE demo_requests_total counter
demo_requests_total{code="200",path="/a b"} 1027
demo_requests_total{code="500",path="/quote\\"d"} 3
# HELP demo_temperature_celsius A gauge with UTF-8 in a label: \\\\ and \\n escaped.
# TYPE demo_temperature_celsius gauge
demo_temperature_celsius{room="küche"} -4.25
demo_temperature_celsius{room="attic"} +Inf
# TYPE demo_latency_seconds histogram
demo_latency_seconds_bucket{le="0.1"} 2
demo_latency_seconds_bucket{le="1"} 5
demo_latency_seconds_bucket{le="2.5"} 7
demo_latency_seconds_bucket{le="+Inf"} 9
demo_latency_seconds_sum 12.5
demo_latency_seconds_count 9
# TYPE demo_rpc_seconds summary
demo_rpc_seconds{quantile="0.5"} 0.25
demo_rpc_seconds{quantile="0.99"} 1.5
demo_rpc_seconds_sum 40
demo_rpc_seconds_count 100
demo_untyped 42
"""


def _series(result: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], str]:
    return {tuple(sorted(r["metric"].items())): r["value"][1] for r in result}


def _same_value(a: str, b: str) -> bool:
    fa, fb = float(a), float(b)
    return (math.isnan(fa) and math.isnan(fb)) or fa == fb


def _remote_write_receiver(prometheus_server, port: int | None = None):
    return prometheus_server(config={"global": {"scrape_interval": "1s"}, "scrape_configs": []}, port=port,
                             extra_args=["--web.enable-remote-write-receiver"])


def _reference(prometheus_server, jobs: dict[str, str], honor_labels: bool = False):
    """A Prometheus scraping the same targets itself, every second."""
    return prometheus_server(config={
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": job, "honor_labels": honor_labels, "static_configs": [{"targets": [addr]}]}
                           for job, addr in jobs.items()],
    })


def _bridge_config(targets: list[dict[str, Any]], **plugin: Any) -> dict[str, Any]:
    return {"plugins": [{"plugin_id": PLUGIN, "config": {"scrape": {"interval": 1, "timeout": 1, "targets": targets}, **plugin}}]}


def test_remote_write_matches_prometheus_own_scrape(peers, prometheus_server, run_monbridge, tmp_path):  # noqa: F811
    node = peers.node_exporter()
    pg = peers.pushgateway()
    push(pg, "demo", PUSHED)
    receiver = _remote_write_receiver(prometheus_server)
    addr = {"node": f"127.0.0.1:{node.port}", "pushgateway": f"127.0.0.1:{pg.port}"}
    reference = _reference(prometheus_server, addr)
    run_monbridge(_bridge_config(
        [{"job": job, "url": f"http://{a}/metrics"} for job, a in addr.items()],
        remote_write=[{"url": f"{receiver.url}/api/v1/write", "queue": {"path": str(tmp_path / "rwq")}}]))

    for prom in (receiver, reference):
        prom.wait_for('up{job="pushgateway"} == 1')
        prom.wait_for('up{job="node"} == 1')
    time.sleep(3)  # a few scrapes on both sides

    # Pushgateway: every series, every value, exactly (scrape timing series aside).
    ours = _series(receiver.query('{job="pushgateway",__name__!~"scrape_duration_seconds|scrape_series_added"}'))
    theirs = _series(reference.query('{job="pushgateway",__name__!~"scrape_duration_seconds|scrape_series_added"}'))
    assert set(ours) == set(theirs), f"only via monbridge: {set(ours) - set(theirs)}; only direct: {set(theirs) - set(ours)}"
    assert len(ours) >= 20
    moving = re.compile(r"(go|process|pushgateway)_.*")  # the Pushgateway's own metrics change between scrapes
    checked = 0
    for key, v in theirs.items():
        if not moving.fullmatch(dict(key)["__name__"]):
            assert _same_value(ours[key], v), f"{dict(key)}: {ours[key]} via monbridge, {v} scraped directly"
            checked += 1
    assert checked >= 15
    le = {dict(k).get("le") for k in ours if dict(k)["__name__"] == "demo_latency_seconds_bucket"}
    assert le == {"0.1", "1", "2.5", "+Inf"}  # le texts as the target wrote them
    assert ('path', '/quote"d') in next(k for k in ours if dict(k).get("code") == "500")

    # node_exporter: the same series set; values equal where they do not move between scrapes.
    ours = _series(receiver.query('{job="node"}'))
    theirs = _series(reference.query('{job="node"}'))
    assert set(ours) == set(theirs), f"only via monbridge: {set(ours) - set(theirs)}; only direct: {set(theirs) - set(ours)}"
    stable = re.compile(r"node_memory_MemTotal_bytes|node_uname_info|node_filesystem_size_bytes|node_boot_time_seconds|up")
    checked = 0
    for key, v in theirs.items():
        if stable.fullmatch(dict(key)["__name__"]):
            assert _same_value(ours[key], v), f"{dict(key)}: {ours[key]} via monbridge, {v} scraped directly"
            checked += 1
    assert checked >= 4


def test_outage_and_sigkill_lose_nothing(peers, prometheus_server, run_monbridge, tmp_path, free_port):  # noqa: F811
    pg = peers.pushgateway()
    push(pg, "demo", "demo_gauge 1\n")
    port = free_port()
    receiver = _remote_write_receiver(prometheus_server, port)
    config = _bridge_config([{"job": "pg", "url": f"{pg.url}/metrics"}],
                            remote_write=[{"url": f"http://127.0.0.1:{port}/api/v1/write",
                                           "queue": {"path": str(tmp_path / "rwq"), "max_backoff": 0.5}}])
    workdir = tmp_path / "bridge"
    bridge = run_monbridge(config, workdir=workdir)
    receiver.wait_for('up{job="pg"}')
    down_at = time.time()
    receiver.stop()  # the backend goes away; monbridge keeps scraping into its queue
    time.sleep(4)
    bridge.proc.kill()  # SIGKILL mid-outage: the backlog is only on disk now
    bridge.proc.wait(10)
    killed_at = time.time()
    bridge = run_monbridge(config, workdir=workdir)
    time.sleep(2)
    back = _remote_write_receiver(prometheus_server, port)  # a fresh backend on the same address

    def samples() -> list[float]:
        r = back.query('up{job="pg"}[5m]')
        return sorted(float(t) for t, _ in r[0]["values"]) if r else []

    got = wait_until(lambda: [t for t in samples() if t > killed_at + 1] and samples(), 30, "samples after the restart")
    during = [t for t in got if down_at <= t <= killed_at]
    # Scraped every second while the backend was down and before the kill: all of it arrives.
    assert len(during) >= 3, f"{len(during)} samples between the outage and the kill: {got}"
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    assert max(gaps, default=0) < 2.5, f"a scrape's samples were lost during the outage: gaps {gaps}"
    assert got[0] <= down_at + 2.0, f"first delivered sample at {got[0]}, the outage began at {down_at}"


class _StaticTarget(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def static_target(free_port) -> Iterator[Any]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(body: str) -> str:
        handler = type("Handler", (_StaticTarget,), {"body": body.encode()})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/metrics"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _metrics(bridge) -> str:
    status, _, body = bridge.get("/metrics")
    assert status == 200
    return body.decode()


def _text_when(get, *needles: str, timeout: float = 15) -> str:
    """``get()`` polled until its text contains every needle."""
    def ready() -> str:
        text = get()
        return text if all(n in text for n in needles) else ""
    return wait_until(ready, timeout, f"{needles} to appear")


def test_parse_error_fails_that_target_only(peers, run_monbridge, static_target):  # noqa: F811
    pg = peers.pushgateway()
    push(pg, "demo", "demo_gauge 7\n")
    broken = static_target("ok_metric 1\nbroken_metric{a=\"1\" 2\n")
    bridge = run_monbridge(_bridge_config([{"job": "broken", "url": broken}, {"job": "pg", "url": f"{pg.url}/metrics"}]))
    text = _text_when(lambda: _metrics(bridge), 'job="broken"', 'job="pg"')
    up = {m.group(1): m.group(2) for m in re.finditer(r'^up\{[^}]*job="(\w+)"[^}]*\} (\S+)$', text, re.M)}
    assert up == {"broken": "0.0", "pg": "1.0"}
    assert "ok_metric" not in text  # a failed scrape keeps none of its samples
    assert re.search(r'^demo_gauge\{[^}]*job="pg"[^}]*\} 7', text, re.M)
    assert re.search(r"parse error at line 2", bridge.log_text())


def test_series_leaving_a_target_leave_monbridge(run_monbridge, static_target, tmp_path):
    url = static_target("kept 1\n")
    sd = tmp_path / "targets.json"
    sd.write_text(f'[{{"targets": ["{url.split("/")[2]}"], "labels": {{"job": "sd"}}}}]')
    bridge = run_monbridge({"plugins": [{"plugin_id": PLUGIN, "config": {"scrape": {
        "interval": 1, "timeout": 1, "file_sd": [str(tmp_path / "*.json")]}}}]})
    wait_until(lambda: re.search(r'^kept\{[^}]*job="sd"', _metrics(bridge), re.M), 15, "the file_sd target's series")
    sd.write_text("[]")  # the target goes away
    wait_until(lambda: not re.search(r"^kept\{", _metrics(bridge), re.M), 15, "its series to go")
    assert not re.search(r'^up\{[^}]*job="sd"', _metrics(bridge), re.M)


def test_federation_imports_prometheus_series(peers, prometheus_server, run_monbridge):  # noqa: F811
    node = peers.node_exporter()
    source = _reference(prometheus_server, {"node": f"127.0.0.1:{node.port}"})
    source.wait_for('node_memory_MemTotal_bytes{job="node"}')
    bridge = run_monbridge({"plugins": [{"plugin_id": PLUGIN, "config": {
        "interval": 1, "federate": [{"url": source.url, "match": ['{job="node",__name__=~"node_memory_MemTotal_bytes|up"}']}]}}]})
    expected = source.query('node_memory_MemTotal_bytes{job="node"}')[0]
    text = _text_when(lambda: _metrics(bridge), "node_memory_MemTotal_bytes{")
    line = re.search(r'^node_memory_MemTotal_bytes\{([^}]*)\} (\S+)$', text, re.M)
    assert line is not None
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line.group(1)))
    assert labels == {k: v for k, v in expected["metric"].items() if k != "__name__"}
    assert float(line.group(2)) == float(expected["value"][1])
    up = re.search(r'^up\{[^}]*instance="127.0.0.1:' + str(source.port) + r'"[^}]*job="federate"[^}]*\} (\S+)$', text, re.M)
    assert up is not None and float(up.group(1)) == 1.0


def test_pushgateway_export(peers, run_monbridge, static_target):  # noqa: F811
    pg = peers.pushgateway()
    url = static_target("# TYPE app_jobs_total counter\napp_jobs_total{queue=\"mail\"} 12\n")
    run_monbridge(_bridge_config([{"job": "app", "url": url}], pushgateway={"url": pg.url, "job": "monbridge"}))

    def pushed() -> str:
        return pg.get("/metrics")[2].decode()

    text = _text_when(pushed, "app_jobs_total{")
    assert re.search(r'^app_jobs_total\{[^}]*job="monbridge"[^}]*queue="mail"[^}]*\} 12$', text, re.M)
    assert re.search(r'^monbridge_plugin_up\{[^}]*plugin_id="monitoring.integration.prometheus"', text, re.M)


def test_alerts_to_alertmanager_and_from_prometheus(alertmanager_server, prometheus_server, tmp_path):  # noqa: F811
    from bridge.api import Alert, AlertState
    from integrations.prometheus.plugin import PrometheusIntegration

    am = alertmanager_server({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
    rules = tmp_path / "rules.yml"
    rules.write_text('groups: [{name: g, interval: 1s, rules: [{alert: AlwaysFiring, expr: "vector(3)", '
                     'labels: {severity: page}, annotations: {summary: "it fires"}}]}]\n')
    prom = prometheus_server(config={"global": {"evaluation_interval": "1s"}, "rule_files": [str(rules)],
                                     "scrape_configs": []})

    import json

    def am_alerts() -> list[tuple[Any, Any, Any]]:
        return [(a["labels"], a["annotations"], a["status"]["state"]) for a in json.loads(am.get("/api/v2/alerts")[2])]

    async def run() -> tuple[list[Alert], list[Any], list[Any]]:
        plugin = PrometheusIntegration()
        await plugin.initialize({"export_alerts": {"url": am.url}, "import_alerts": {"url": prom.url}})
        try:
            await plugin.export_alerts([Alert(id="a1", name="DiskFull", severity="critical", labels={"host": "db1"},
                                              annotations={"summary": "disk full"})])
            sent = am_alerts()
            await plugin.export_alerts([])  # no longer current: sent once more as resolved
            after = am_alerts()
            for _ in range(40):
                imported = await plugin.import_alerts()
                if imported:
                    return list(imported), sent, after
                await asyncio.sleep(0.5)
            return [], sent, after
        finally:
            await plugin.shutdown()

    imported, sent, after = asyncio.run(run())
    assert [(a.name, a.severity, a.state, a.value, a.annotations) for a in imported] == [
        ("AlwaysFiring", "page", AlertState.FIRING, 3.0, {"summary": "it fires"})]
    assert imported[0].labels == {"alertname": "AlwaysFiring", "severity": "page"}
    assert sent == [({"alertname": "DiskFull", "severity": "critical", "host": "db1"}, {"summary": "disk full"}, "active")]
    assert after == []  # Alertmanager resolved it at once
