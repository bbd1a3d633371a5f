"""``monbridge test --plugin`` for every plugin type, against real peers: the Prometheus bridge
scraping a real node_exporter (and a target whose exposition is broken at a known line) and
pushing to a real Pushgateway, the OTLP exporter against an OTLP/HTTP receiver, the webhook
notifier against a recording HTTP server. Without ``--send`` nothing reaches the peers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import otlp_receiver
import yaml
from peers import http_get, peers  # noqa: F401 - the fixture

from tests.http_recorder import HttpRecorder

otlp_http_receiver = otlp_receiver.otlp_http_receiver

SECRET = "hook-t0ken-never-printed"


def monbridge_test(config: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    path = cwd / "monbridge.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-m", "bridge.cli", "test", "--config", str(path), *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def system(interval: int = 15) -> dict:
    return {"plugin_id": "monitoring.metrics.system", "config": {"collection_interval": interval}}


def test_prometheus_bridge_reports_each_target_and_previews_its_sinks(tmp_path, peers, free_port):  # noqa: F811
    node = peers.node_exporter()
    pushgateway = peers.pushgateway()
    broken = HttpRecorder(lambda r: (200, b"# TYPE a counter\na_total 1\nb{x=\"1\" 2\n",
                                     {"Content-Type": "text/plain; version=0.0.4"}))
    try:
        config = {"plugins": [system(), {"plugin_id": "monitoring.integration.prometheus", "config": {
            "scrape": {"interval": 15, "timeout": 10, "targets": [{"job": "node", "url": f"{node.url}/metrics"}]},
            "pushgateway": {"url": pushgateway.url, "job": "monbridge-test"},
            "remote_write": [{"url": f"http://127.0.0.1:{free_port()}/api/v1/write",
                              "queue": {"path": str(tmp_path / "rw")}}],
        }}]}
        out = monbridge_test(config, "--plugin", "monitoring.integration.prometheus", cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        lines = out.stdout.splitlines()
        [scrape] = [line for line in lines if line.startswith("scrape node ")]
        assert scrape.startswith(f"scrape node {node.url}/metrics: up, ")
        samples = int(scrape.split("up, ")[1].split(" samples")[0])
        assert samples > 50  # node_exporter's cpu, meminfo, filesystem... series
        [imported] = [line for line in lines if line.startswith("import round: ")]
        assert int(imported.split()[2]) > samples  # its series and the target's report (up, scrape_*)
        [batch] = [line for line in lines if line.startswith("export batch: ")]
        assert int(batch.split()[2]) > int(imported.split()[2])  # the system collector's series too
        [rw] = [line for line in lines if line.startswith("sink remote_write: would POST http://127.0.0.1:")]
        assert "/api/v1/write" in rw and " bytes" in rw
        [pg] = [line for line in lines if line.startswith("sink pushgateway: would PUT ")]
        assert f"{pushgateway.url}/metrics/job/monbridge-test (text 0.0.4)" in pg
        _, _, body = http_get(f"{pushgateway.url}/metrics")
        assert b'job="monbridge-test"' not in body  # nothing sent without --send

        out = monbridge_test(config, "--plugin", "monitoring.integration.prometheus", "--send", cwd=tmp_path)
        assert "sink pushgateway: sent" in out.stdout, out.stdout + out.stderr
        _, _, body = http_get(f"{pushgateway.url}/metrics")
        assert b'node_memory_MemTotal_bytes{instance="' in body and b'job="monbridge-test"' in body
        # The remote-write endpoint is a closed port: its sink's export fails, and so does the round.
        assert out.returncode == 1 and "sink remote_write: export failed" in out.stdout, out.stdout

        # A target whose exposition breaks on line 3: the scrape's error names the line; exit 1.
        config["plugins"][1]["config"] = {"scrape": {"interval": 15, "timeout": 10, "targets": [
            {"job": "node", "url": f"{node.url}/metrics"}, {"job": "broken", "url": f"{broken.url}/metrics"}]}}
        out = monbridge_test(config, "--plugin", "monitoring.integration.prometheus", cwd=tmp_path)
        assert out.returncode == 1, out.stdout + out.stderr
        [bad] = [line for line in out.stdout.splitlines() if line.startswith("scrape broken ")]
        assert bad.startswith(f"scrape broken {broken.url}/metrics: DOWN: parse error at line 3"), bad
        assert any(line.startswith("scrape node ") and ": up, " in line for line in out.stdout.splitlines())
    finally:
        broken.stop()


def test_otlp_exporter_shows_its_payload_and_sends_only_with_send(tmp_path, otlp_http_receiver, free_port):
    endpoint = f"{otlp_http_receiver.endpoint}/v1/metrics"
    config = {"plugins": [system(), {"plugin_id": "monitoring.integration.otlp", "config": {
        "endpoint": endpoint, "headers": {"authorization": f"Bearer {SECRET}"}}}]}
    out = monbridge_test(config, "--plugin", "monitoring.integration.otlp", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    [line] = [x for x in out.stdout.splitlines() if x.startswith("sink export: would POST ")]
    assert line.startswith(f"sink export: would POST {endpoint} (http/protobuf): 1 request, ")
    assert int(line.split("1 request, ")[1].split(" bytes")[0]) > 1000
    assert "headers: authorization" in line
    assert "(nothing sent: --send exports the batch)" in out.stdout
    assert otlp_http_receiver.count() == 0
    assert SECRET not in out.stdout + out.stderr

    out = monbridge_test(config, "--plugin", "monitoring.integration.otlp", "--send", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sink export: sent" in out.stdout
    got = otlp_http_receiver.wait_for_metric("system.cpu.time", timeout=5)
    assert got.headers["authorization"] == f"Bearer {SECRET}"

    # Nothing listens there: the export fails, says why, and the round fails.
    config["plugins"][1]["config"] = {"endpoint": f"http://127.0.0.1:{free_port()}/v1/metrics", "timeout": 2}
    out = monbridge_test(config, "--plugin", "monitoring.integration.otlp", "--send", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    [failed] = [x for x in out.stdout.splitlines() if x.startswith("sink export: export failed (retryable): ")]
    assert "Connect" in failed or "refused" in failed, failed


def test_webhook_notifier_renders_the_request_and_sends_only_with_send(tmp_path):
    hook = HttpRecorder()
    try:
        config = {"plugins": [{"plugin_id": "monitoring.alerts.webhook", "config": {
            "url": f"{hook.url}/hook", "headers": {"authorization": f"Bearer {SECRET}"}}}]}
        out = monbridge_test(config, "--plugin", "monitoring.alerts.webhook", cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        text = out.stdout
        assert "sample alert: MonbridgeTestAlert firing" in text
        assert f"POST {hook.url}/hook\n  authorization: <secret>\n" in text
        assert '"alertname": "MonbridgeTestAlert"' in text and '"version": "4"' in text
        assert SECRET not in text + out.stderr
        assert hook.requests == []  # rendered, not sent

        out = monbridge_test(config, "--plugin", "monitoring.alerts.webhook", "--send", cwd=tmp_path)
        assert out.returncode == 0 and out.stdout.rstrip().endswith("sent"), out.stdout + out.stderr
        [r] = hook.requests
        assert r.method == "POST" and r.path == "/hook" and r.headers["authorization"] == f"Bearer {SECRET}"
        assert r.json()["alerts"][0]["labels"]["alertname"] == "MonbridgeTestAlert"

        hook.handler = lambda r: (500, {"error": "no"}, {})
        out = monbridge_test(config, "--plugin", "monitoring.alerts.webhook", "--send", cwd=tmp_path)
        assert out.returncode == 1 and "send failed: DeliveryError: " in out.stdout and "HTTP 500" in out.stdout
    finally:
        hook.stop()


def test_an_alert_processor_says_what_it_does_with_the_sample_alert(tmp_path):
    pid = "monitoring.alerts.dedup"
    out = monbridge_test({"plugins": [{"plugin_id": pid}]}, "--plugin", pid, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        f"# {pid}", out.stdout.splitlines()[1], "would pass it on unchanged"]
    assert out.stdout.splitlines()[1].startswith("sample alert: MonbridgeTestAlert firing {alertname=MonbridgeTestAlert,")
