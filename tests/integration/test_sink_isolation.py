"""A sink that is down stays that sink's problem: the Prometheus plugin with a Pushgateway on a
closed port keeps scraping a real node_exporter and remote-writing to a real Prometheus; it
is never restarted, and ``/api/v1/plugins`` shows the Pushgateway sink failing."""

from __future__ import annotations

import json
import socket

import pytest
from conftest import wait_until
from peers import peers  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

PLUGIN = "monitoring.integration.prometheus"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plugin_status(mb) -> dict:
    status, _, body = mb.get("/api/v1/plugins")
    assert status == 200
    return {p["plugin_id"]: p for p in json.loads(body)["data"]}[PLUGIN]


def test_a_down_pushgateway_fails_its_sink_not_the_plugin(run_monbridge, peers, prometheus_server):  # noqa: F811
    node = peers.node_exporter()
    prom = prometheus_server(config={"global": {"scrape_interval": "15s"}, "scrape_configs": []},
                             extra_args=["--web.enable-remote-write-receiver"])
    pg_port = closed_port()
    mb = run_monbridge({"plugins": [{"plugin_id": PLUGIN, "config": {
        "interval": 1,
        "scrape": {"interval": 1, "timeout": 1, "targets": [{"job": "node", "url": f"{node.url}/metrics"}]},
        "remote_write": [{"url": f"{prom.url}/api/v1/write", "name": "prom"}],
        "pushgateway": {"url": f"http://127.0.0.1:{pg_port}", "job": "monbridge", "timeout": 1},
    }}]})

    # Many rounds with the Pushgateway down: far more than the three failures that fail a plugin.
    st = wait_until(lambda: (s := plugin_status(mb))["runs"] >= 6 and s, what="six rounds")
    assert st["state"] == "running"
    assert st["restarts"] == 0 and st["errors"] == 0 and st["consecutive_failures"] == 0
    sinks = {s["name"]: s for s in st["sinks"]}
    assert sinks["pushgateway"]["state"] == "failing"
    assert sinks["pushgateway"]["errors"] >= 6
    assert f"127.0.0.1:{pg_port}" in sinks["pushgateway"]["last_error"]
    assert sinks["remote_write"]["state"] == "ok" and sinks["remote_write"]["errors"] == 0

    # Scraping goes on: node_exporter's series are on /metrics with up 1 ...
    _, _, body = mb.get("/metrics")
    text = body.decode()
    assert f'up{{instance="127.0.0.1:{node.port}",job="node"}} 1' in text
    assert "node_load1{" in text
    # ... the sink's failure is a self-metric per plugin and sink ...
    assert f'monbridge_plugin_sink_up{{plugin_id="{PLUGIN}",plugin_type="integration",sink="pushgateway"}} 0' in text
    failed = [line for line in text.splitlines() if line.startswith("monbridge_plugin_sink_exports_total{")
              and 'sink="pushgateway"' in line and 'result="error"' in line]
    assert failed and float(failed[0].rsplit(" ", 1)[1]) >= 6
    # ... and remote write delivers the scraped series to Prometheus.
    prom.wait_for(f'node_load1{{instance="127.0.0.1:{node.port}"}}')

    # The failure was logged once, when the sink went from ok to failing, not every round.
    log = mb.log_text()
    assert log.count("sink pushgateway is failing") == 1, log
    status, _, _ = mb.get("/-/ready")
    assert status == 200
