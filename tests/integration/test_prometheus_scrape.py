"""monbridge's /metrics as the real Prometheus and promtool see it.

Needs Debian's ``prometheus`` package (``prometheus`` and ``promtool``); .ci/test installs it.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

pytestmark = pytest.mark.integration

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def monbridge(run_monbridge, free_port):
    """monbridge with the system collector every second, on a free loopback port."""
    return run_monbridge(
        {
            "server": {"listen": f"127.0.0.1:{free_port()}"},
            "plugins": [
                {"plugin_id": "monitoring.metrics.system", "enabled": True, "config": {"collection_interval": 1}},
            ],
        }
    )


def metrics_body(mb, headers=None, must_contain: bytes = b"system_cpu_time", timeout: float = 15.0):
    """GET /metrics until the body has ``must_contain`` (the first collection may not have run yet)."""
    deadline = time.monotonic() + timeout
    while True:
        status, response_headers, body = mb.get("/metrics", headers=headers)
        assert status == 200, f"GET /metrics: HTTP {status}: {body[:500]!r}"
        plain = gzip.decompress(body) if response_headers.get("content-encoding") == "gzip" else body
        if must_contain in plain:
            return response_headers, body
        if time.monotonic() >= deadline:
            pytest.fail(f"/metrics has no {must_contain!r} after {timeout:.0f} s:\n{plain.decode(errors='replace')}")
        time.sleep(0.3)


def promtool_check(promtool: str, body: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)


def family_names(text: str) -> set[str]:
    return {family.name for family in parse_text(text)}


# --------------------------------------------------------------------------- the harness itself


def test_prometheus_fixture_scrapes_itself(prometheus_server, free_port):
    """The Prometheus fixture works on its own, so a failure below is monbridge's."""
    port = free_port()
    prometheus = prometheus_server([f"127.0.0.1:{port}"], port=port)
    result = prometheus.wait_for('up{job="monbridge"} == 1', timeout=30)
    assert result[0]["metric"]["instance"] == f"127.0.0.1:{port}"


def test_promtool_accepts_a_clean_exposition(require_binary):
    """promtool passes a known-clean text exposition silently and flags a bad one."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    promtool = require_binary("promtool")
    registry = CollectorRegistry()
    Counter("requests", "Requests served.", ["code"], registry=registry).labels("200").inc()
    clean = promtool_check(promtool, generate_latest(registry))
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, b"", b"")
    bad = promtool_check(promtool, b"# TYPE requests counter\nrequests 1\n")
    assert bad.returncode != 0 and (bad.stdout or bad.stderr)


# --------------------------------------------------------------------------- monbridge


def test_prometheus_scrapes_system_metrics(monbridge, prometheus_server):
    prometheus = prometheus_server([f"127.0.0.1:{monbridge.port}"], scrape_interval="1s")

    up = prometheus.wait_for('up{job="monbridge"} == 1', timeout=30)
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{monbridge.port}"

    cpu = prometheus.wait_for("system_cpu_time_seconds_total", timeout=30)
    assert all(r["metric"].get("job") == "monbridge" for r in cpu), cpu
    assert all("cpu_mode" in r["metric"] for r in cpu), f"system_cpu_time_seconds_total without cpu_mode: {cpu}"
    modes = {r["metric"]["cpu_mode"] for r in cpu}
    assert {"user", "system", "idle"} <= modes, modes
    assert all(float(r["value"][1]) >= 0 for r in cpu)

    memory = prometheus.wait_for("system_memory_usage_bytes", timeout=30)
    assert all(r["metric"].get("job") == "monbridge" for r in memory), memory
    assert sum(float(r["value"][1]) for r in memory) > 0

    target_info = prometheus.wait_for('target_info{job="monbridge"}', timeout=30)
    assert target_info, "target_info (the OTel resource) is missing"

    # Prometheus negotiated its preferred format and parsed every scrape without error.
    targets = json.loads(prometheus.get("/api/v1/targets")[2])["data"]["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")], targets


def test_promtool_check_metrics_text_format(monbridge, require_binary):
    promtool = require_binary("promtool")
    headers, body = metrics_body(monbridge)
    assert headers["content-type"].startswith("text/plain"), headers
    result = promtool_check(promtool, body)
    findings = (result.stdout + result.stderr).decode()
    assert (result.returncode, findings) == (0, ""), f"promtool check metrics (exit {result.returncode}):\n{findings}"


def test_openmetrics_by_content_negotiation(monbridge):
    """OpenMetrics on request, valid to a strict OpenMetrics parser.

    promtool 2.42's ``check metrics`` reads only the text format: on a correct OpenMetrics
    body it reports every counter (family ``x``, samples ``x_total``) as lacking help text and
    rejects the ``info`` type. So it lints the text format (above), and the OpenMetrics body is
    checked by prometheus_client's strict parser here and by Prometheus itself, which asks for
    OpenMetrics first when it scrapes (test_prometheus_scrapes_system_metrics).
    """
    headers, body = metrics_body(monbridge, headers={"Accept": OPENMETRICS})
    assert headers["content-type"].startswith("application/openmetrics-text"), headers
    text = body.decode()
    assert text.endswith("# EOF\n"), text[-200:]
    names = {family.name for family in parse_openmetrics(text)}
    assert "system_cpu_time_seconds" in names, sorted(names)
    assert "system_memory_usage_bytes" in names, sorted(names)


def test_metrics_gzip(monbridge):
    _, before = metrics_body(monbridge)
    headers, compressed = metrics_body(monbridge, headers={"Accept-Encoding": "gzip"})
    _, after = metrics_body(monbridge)
    assert headers.get("content-encoding") == "gzip", headers
    assert compressed[:2] == b"\x1f\x8b", compressed[:20]
    families = family_names(gzip.decompress(compressed).decode())
    # Self-metrics may add a family between two requests; none may be lost or invented by gzip.
    assert family_names(before.decode()) <= families <= family_names(after.decode())
    assert "system_cpu_time_seconds" in families, sorted(families)
