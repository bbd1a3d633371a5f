"""monitoring.metrics.azure: no emulator of Azure Monitor exists here, so the request/response
mapping is tested against the library's own types: azure-monitor-querymetrics' real
``MetricsClient`` (its request building, its azure-core pipeline with bearer-token auth and its
response models) talks HTTPS to a recorder on a loopback port that answers ``metrics:getBatch``
with recorded responses shaped as the Azure Monitor REST API documents them
(``MetricResults``: ``values`` of ``starttime``/``endtime``/``interval``/``value``), which the
library deserializes into its ``MetricsQueryResult`` models."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.parse

import pytest
from azure.core.credentials import AccessToken
from azure.monitor.querymetrics import MetricsClient

from bridge.api import MetricKind
from bridge.config import ConfigError, parse_config
from bridge.registry import PluginRegistry
from collectors.azure import MAX_METRICS, MAX_RESOURCES, AzureConfig, AzureMonitorCollector, calls, resource_labels
from tests.http_recorder import HttpRecorder
from tests.tls_cert import self_signed

NOW = 1_700_000_123.0
END = 1_699_999_980  # NOW - 120 s delay, rounded down to the minute
SUB = "0a1b2c3d-0000-4000-8000-123456789abc"
VM = f"/subscriptions/{SUB}/resourceGroups/web-rg/providers/Microsoft.Compute/virtualMachines"
TOKEN = "eyJ0eXAi.token-for-tests.sig"


class TokenCredential:
    """An azure-core TokenCredential giving one token (the client asks it for the metrics scope)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)


def iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def metric(resource: str, name: str, unit: str, timeseries: list) -> dict:
    return {"id": f"{resource}/providers/Microsoft.Insights/metrics/{name}", "type": "Microsoft.Insights/metrics",
            "name": {"value": name, "localizedValue": name}, "displayDescription": f"{name} of the VM", "unit": unit,
            "timeseries": timeseries, "errorCode": "Success"}


def answer(request) -> tuple[int, object, dict]:
    """A recorded metrics:getBatch response for the request's resources and metric names."""
    body = request.json()
    names = urllib.parse.unquote(request.query["metricnames"][0]).split(",")
    values = []
    for resource in body["resourceids"]:
        vm = resource.rsplit("/", 1)[1]
        value = []
        for name in names:
            if name == "Percentage CPU":
                value.append(metric(resource, name, "Percent", [{"metadatavalues": [], "data": [
                    {"timeStamp": iso(END - 120), "average": 70.5, "maximum": 99.0},
                    {"timeStamp": iso(END - 60), "average": 12.25, "maximum": 30.0},
                    {"timeStamp": iso(END)}]}]))  # the newest minute has no value yet
            elif name == "Disk Read Bytes":
                value.append(metric(resource, name, "Bytes", [
                    {"metadatavalues": [{"name": {"value": "LUN", "localizedValue": "LUN"}, "value": lun}],
                     "data": [{"timeStamp": iso(END - 60), "average": 1000.0 * (int(lun) + 1), "total": 5.0}]}
                    for lun in ("0", "1")]))
            else:
                value.append(metric(resource, name, "Count", [{"metadatavalues": [], "data": [
                    {"timeStamp": iso(END - 60), "average": float(len(vm))}]}]))
        values.append({"starttime": request.query["starttime"][0], "endtime": request.query["endtime"][0],
                       "interval": request.query["interval"][0], "namespace": "microsoft.compute/virtualmachines",
                       "resourceregion": "westeurope", "resourceid": resource, "value": value})
    return 200, {"values": values}, {}


@pytest.fixture
def tls(tmp_path):
    cert, key = self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx, str(cert)


@pytest.fixture
def recorder(tls):
    rec = HttpRecorder(answer, ssl_context=tls[0])
    yield rec
    rec.stop()


def collect(collector: AzureMonitorCollector, config: dict) -> dict[tuple, object]:
    asyncio.run(collector.initialize(config))
    try:
        metrics = collector.collect_at(NOW)
    finally:
        asyncio.run(collector.shutdown())
    return {(m.name, tuple(sorted(m.attributes.items()))): m for m in metrics}


def client(recorder: HttpRecorder, tls, credential=None) -> MetricsClient:
    return MetricsClient(recorder.url, credential or TokenCredential(), connection_verify=tls[1])


def config(recorder: HttpRecorder, **kw) -> dict:
    return {"endpoint": recorder.url, "queries": [{
        "namespace": "Microsoft.Compute/virtualMachines", "metrics": ["Percentage CPU", "Disk Read Bytes"],
        "aggregations": ["Average", "Maximum", "Total"], "resource_ids": [f"{VM}/vm-1", f"{VM}/vm-2"],
        "filter": "LUN eq '*'"}], **kw}


def test_the_batch_request_is_built_from_the_config(recorder, tls):
    credential = TokenCredential()
    collect(AzureMonitorCollector(client(recorder, tls, credential)), config(recorder))
    (r,) = recorder.requests
    assert (r.method, r.path) == ("POST", f"/subscriptions/{SUB}/metrics:getBatch")
    q = {k: urllib.parse.unquote(v[0]) for k, v in r.query.items()}
    assert q["metricnamespace"] == "Microsoft.Compute/virtualMachines"
    assert q["metricnames"] == "Percentage CPU,Disk Read Bytes"
    assert q["aggregation"] == "Average,Maximum,Total"
    assert q["interval"] == "PT1M"
    assert (q["starttime"], q["endtime"]) == ("2023-11-14T22:03:00.000Z", "2023-11-14T22:13:00.000Z")  # END - 600, END
    assert q["filter"] == "LUN eq '*'"
    assert r.json() == {"resourceids": [f"{VM}/vm-1", f"{VM}/vm-2"]}
    assert r.headers["authorization"] == f"Bearer {TOKEN}"
    assert credential.scopes == [("https://metrics.monitor.azure.com/.default",)]


def test_results_become_series_per_resource_dimension_and_aggregation(recorder, tls):
    got = collect(AzureMonitorCollector(client(recorder, tls)), config(recorder))
    vm1 = {"resource_id": f"{VM}/vm-1", "subscription_id": SUB, "resource_group": "web-rg", "resource_name": "vm-1"}
    key = tuple(sorted(vm1.items()))
    cpu = got[("azure_microsoft_compute_virtual_machines_percentage_cpu_average", key)]
    # the newest point that has a value, with its own time
    assert (cpu.kind, cpu.value, cpu.timestamp_ns) == (MetricKind.GAUGE, 12.25, (END - 60) * 10**9)
    assert got[("azure_microsoft_compute_virtual_machines_percentage_cpu_maximum", key)].value == 30.0
    assert ("azure_microsoft_compute_virtual_machines_percentage_cpu_total", key) not in got  # no such values
    lun1 = tuple(sorted({**vm1, "lun": "1"}.items()))
    assert got[("azure_microsoft_compute_virtual_machines_disk_read_bytes_average", lun1)].value == 2000.0
    assert got[("azure_microsoft_compute_virtual_machines_disk_read_bytes_total", lun1)].value == 5.0
    vm2 = tuple(sorted({**vm1, "resource_id": f"{VM}/vm-2", "resource_name": "vm-2", "lun": "0"}.items()))
    assert got[("azure_microsoft_compute_virtual_machines_disk_read_bytes_average", vm2)].value == 1000.0
    e = (("endpoint", recorder.url),)
    assert got[("azure_monitor_up", e)].value == 1.0
    assert got[("azure_monitor_requests_total", e)].value == 1.0


def test_many_resources_and_metrics_are_sent_in_calls_within_the_api_limits(recorder, tls):
    resources = [f"{VM}/vm-{i}" for i in range(120)]
    names = [f"Metric {i}" for i in range(25)]
    got = collect(AzureMonitorCollector(client(recorder, tls)), {"endpoint": recorder.url, "queries": [{
        "namespace": "Microsoft.Compute/virtualMachines", "metrics": names, "resource_ids": resources}]})
    shapes = sorted((len(r.json()["resourceids"]), len(urllib.parse.unquote(r.query["metricnames"][0]).split(",")))
                    for r in recorder.requests)
    assert shapes == sorted([(50, 20), (50, 5), (50, 20), (50, 5), (20, 20), (20, 5)])
    assert len([k for k in got if k[0].startswith("azure_microsoft")]) == 120 * 25
    assert got[("azure_microsoft_compute_virtual_machines_metric_24_average", tuple(sorted(
        resource_labels(f"{VM}/vm-119").items())))].value == float(len("vm-119"))


def test_an_error_answer_is_up_0_with_its_code_and_no_token_in_the_log(recorder, tls, caplog):
    recorder.handler = lambda r: (403, {"error": {"code": "AuthorizationFailed", "message": (
        "The client does not have authorization to perform action 'Microsoft.Insights/Metrics/Read'")}}, {})
    with caplog.at_level(logging.WARNING, "monbridge.collectors.azure"):
        got = collect(AzureMonitorCollector(client(recorder, tls)), config(recorder))
    e = recorder.url
    assert got[("azure_monitor_up", (("endpoint", e),))].value == 0.0
    assert got[("azure_monitor_errors_total", (("endpoint", e), ("reason", "authorization_failed")))].value == 1.0
    assert "Microsoft.Insights/Metrics/Read" in caplog.text and "queries[0]" in caplog.text
    assert TOKEN not in caplog.text and not any(r.exc_info for r in caplog.records)


def test_an_endpoint_that_does_not_answer_is_a_connection_error(free_port, tls, caplog):
    url = f"https://127.0.0.1:{free_port()}"
    rec = type("R", (), {"url": url})()
    c = MetricsClient(url, TokenCredential(), connection_verify=tls[1], retry_total=0)
    with caplog.at_level(logging.WARNING, "monbridge.collectors.azure"):
        got = collect(AzureMonitorCollector(c), config(rec, timeout=2))
    assert got[("azure_monitor_errors_total", (("endpoint", url), ("reason", "connection")))].value == 1.0


def test_calls_window_and_limits():
    cfg = AzureConfig.model_validate({"endpoint": "https://westeurope.metrics.monitor.azure.com", "delay": 120,
                                      "range": 600, "queries": [{
                                          "namespace": "N/t", "metrics": [f"m{i}" for i in range(MAX_METRICS + 1)],
                                          "resource_ids": [f"{VM}/vm-{i}" for i in range(MAX_RESOURCES + 1)],
                                          "interval": 300}]})
    out = calls(cfg, NOW)
    assert [(len(c.resource_ids), len(c.metrics)) for c in out] == [(50, 20), (50, 1), (1, 20), (1, 1)]
    assert (out[0].start.timestamp(), out[0].end.timestamp()) == (1_699_999_800 - 600, 1_699_999_800)


def test_bad_config_names_its_path():
    reg = PluginRegistry().discover()
    text = f"""plugins:
  - plugin_id: monitoring.metrics.azure
    config:
      endpoint: https://westeurope.metrics.monitor.azure.com
      queries:
        - {{namespace: N/t, metrics: [m], aggregations: [Avg], resource_ids: ["{VM}/vm-1", "/not/a/resource"],
            interval: 90}}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "agent.yaml", reg)
    msg = str(e.value)
    assert "plugins[0].config.queries[0].aggregations" in msg and "unknown aggregation 'Avg'" in msg
    assert "plugins[0].config.queries[0].resource_ids" in msg and "resource_ids[1] is not a resource id" in msg
    assert "plugins[0].config.queries[0].interval" in msg
