"""monitoring.metrics.gcp: no emulator of Cloud Monitoring exists here, so the request/response
mapping is tested against the library's own types: google-cloud-monitoring's real client, over
its real gRPC transport, talks to a gRPC server on a loopback port that answers ``ListTimeSeries``
with responses built from the library's types (``ListTimeSeriesResponse``, ``TimeSeries``,
``Point``, ``google.api.Distribution``) as Cloud Monitoring documents them, and records the
requests it got."""

from __future__ import annotations

import asyncio
import logging
from concurrent import futures

import grpc
import pytest
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

from bridge.api import HistogramValue, MetricKind
from bridge.config import ConfigError, parse_config
from bridge.registry import PluginRegistry
from collectors.gcp import GcpMonitoringCollector, requests

NOW = 1_700_000_123.0
END = 1_700_000_100  # NOW rounded down to the minute

CPU = "compute.googleapis.com/instance/cpu/utilization"
LATENCY = "loadbalancing.googleapis.com/https/total_latencies"
BYTES = "compute.googleapis.com/instance/network/received_bytes_count"
UPTIME = "custom.googleapis.com/job/healthy"


def ts(metric_type, resource_type, resource_labels, metric_labels, kind, value_type, unit, points):
    return monitoring_v3.TimeSeries(
        metric={"type": metric_type, "labels": metric_labels},
        resource={"type": resource_type, "labels": resource_labels},
        metric_kind=kind, value_type=value_type, unit=unit, points=points)


def point(end, value, start=None):
    interval = {"end_time": {"seconds": end}}
    if start is not None:
        interval["start_time"] = {"seconds": start}
    return {"interval": interval, "value": value}


GAUGE, DELTA, CUMULATIVE = 1, 2, 3
BOOL, INT64, DOUBLE, STRING, DISTRIBUTION = 1, 2, 3, 4, 5

ANSWERS = {
    CPU: [
        monitoring_v3.ListTimeSeriesResponse(time_series=[
            ts(CPU, "gce_instance", {"project_id": "proj-1", "zone": "europe-west1-b", "instance_id": "111"},
               {"instance_name": "web-1"}, GAUGE, DOUBLE, "10^2.%",
               [point(END - 60, {"double_value": 0.25}), point(END - 120, {"double_value": 0.75})]),
        ], next_page_token="page-2"),
        monitoring_v3.ListTimeSeriesResponse(time_series=[
            ts(CPU, "gce_instance", {"project_id": "proj-1", "zone": "europe-west1-b", "instance_id": "222"},
               {"instance_name": "web-2"}, GAUGE, DOUBLE, "10^2.%", [point(END - 60, {"double_value": 0.5})]),
        ]),
    ],
    LATENCY: [monitoring_v3.ListTimeSeriesResponse(time_series=[
        ts(LATENCY, "https_lb_rule", {"url_map_name": "web"}, {"response_code_class": "200"}, DELTA, DISTRIBUTION,
           "ms", [point(END, {"distribution_value": {
               "count": 6, "mean": 50.0,
               "bucket_options": {"exponential_buckets": {"num_finite_buckets": 3, "growth_factor": 2, "scale": 10}},
               "bucket_counts": [1, 2, 3]}})]),
    ])],
    BYTES: [monitoring_v3.ListTimeSeriesResponse(time_series=[
        ts(BYTES, "gce_instance", {"instance_id": "111"}, {}, CUMULATIVE, INT64, "By",
           [point(END, {"int64_value": "123456789012"}, start=END - 86400)]),
    ])],
    UPTIME: [monitoring_v3.ListTimeSeriesResponse(time_series=[
        ts(UPTIME, "global", {}, {"job": "etl"}, GAUGE, BOOL, "", [point(END, {"bool_value": True})]),
        ts(UPTIME, "global", {}, {"job": "name"}, GAUGE, STRING, "", [point(END, {"string_value": "x"})]),
        ts(UPTIME, "global", {}, {"job": "empty"}, GAUGE, BOOL, "", []),
    ])],
}


class MonitoringServer:
    """A gRPC server with google.monitoring.v3.MetricService/ListTimeSeries, answering ANSWERS
    (or aborting with ``fail``); ``received`` holds the requests it got."""

    def __init__(self, port: int) -> None:
        self.received: list[monitoring_v3.ListTimeSeriesRequest] = []
        self.fail: grpc.StatusCode | None = None
        handler = grpc.method_handlers_generic_handler("google.monitoring.v3.MetricService", {
            "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                self.list_time_series,
                request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
                response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=(handler,))
        self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{port}"

    def list_time_series(self, request, context):
        self.received.append(request)
        if self.fail is not None:
            context.abort(self.fail, "Permission monitoring.timeSeries.list denied (or the resource may not exist).")
        pages = [monitoring_v3.ListTimeSeriesResponse()]
        for metric_type, answer in ANSWERS.items():
            if f'metric.type = "{metric_type}"' in request.filter:
                pages = answer
        return pages[1] if request.page_token == "page-2" else pages[0]


@pytest.fixture
def server(free_port):
    s = MonitoringServer(free_port())
    s.server.start()
    yield s
    s.server.stop(None)


def client_for(server: MonitoringServer) -> monitoring_v3.MetricServiceClient:
    return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(
        channel=grpc.insecure_channel(server.address)))


CONFIG = {"project_id": "proj-1", "metrics": [
    {"type": CPU, "filter": 'resource.labels.zone = "europe-west1-b"', "aligner": "ALIGN_MEAN", "period": 60},
    {"type": LATENCY, "aligner": "ALIGN_DELTA", "reducer": "REDUCE_SUM", "group_by": ["resource.labels.url_map_name"]},
    {"type": BYTES},
    {"type": UPTIME},
    {"type": "custom.googleapis.com/none"},
]}


def collect(collector, config, now=NOW):
    asyncio.run(collector.initialize(config))
    try:
        metrics = collector.collect_at(now)
    finally:
        asyncio.run(collector.shutdown())
    return {(m.name, tuple(sorted(m.attributes.items()))): m for m in metrics}


def test_list_time_series_requests_are_built_from_the_config(server):
    got = collect(GcpMonitoringCollector(client_for(server)), CONFIG)
    assert got  # the collection ran
    by_filter = {r.filter: r for r in server.received if not r.page_token}
    cpu = by_filter[f'metric.type = "{CPU}" AND (resource.labels.zone = "europe-west1-b")']
    assert cpu.name == "projects/proj-1"
    assert (cpu.interval.start_time.timestamp(), cpu.interval.end_time.timestamp()) == (END - 300, END)
    assert cpu.aggregation.alignment_period.total_seconds() == 60
    assert cpu.aggregation.per_series_aligner == monitoring_v3.Aggregation.Aligner.ALIGN_MEAN
    assert cpu.view == monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL
    lat = by_filter[f'metric.type = "{LATENCY}"']
    assert lat.aggregation.cross_series_reducer == monitoring_v3.Aggregation.Reducer.REDUCE_SUM
    assert list(lat.aggregation.group_by_fields) == ["resource.labels.url_map_name"]
    assert not by_filter[f'metric.type = "{BYTES}"'].aggregation.per_series_aligner  # raw points
    assert [r.page_token for r in server.received if CPU in r.filter] == ["", "page-2"]  # the pages followed


def test_time_series_become_stackdriver_exporter_series(server, caplog):
    with caplog.at_level(logging.WARNING, "monbridge.collectors.gcp"):
        got = collect(GcpMonitoringCollector(client_for(server)), CONFIG)
    name = "stackdriver_gce_instance_compute_googleapis_com_instance_cpu_utilization"
    web1 = got[(name, (("instance_id", "111"), ("instance_name", "web-1"), ("project_id", "proj-1"), ("unit", "10^2.%"),
                       ("zone", "europe-west1-b")))]
    assert (web1.kind, web1.value, web1.timestamp_ns) == (MetricKind.GAUGE, 0.25, (END - 60) * 10**9)  # the newest point
    assert got[(name, (("instance_id", "222"), ("instance_name", "web-2"), ("project_id", "proj-1"), ("unit", "10^2.%"),
                       ("zone", "europe-west1-b")))].value == 0.5  # from the second page
    lat = got[("stackdriver_https_lb_rule_loadbalancing_googleapis_com_https_total_latencies",
               (("response_code_class", "200"), ("unit", "ms"), ("url_map_name", "web")))]
    assert lat.kind is MetricKind.HISTOGRAM
    assert lat.value == HistogramValue((10.0, 20.0, 40.0, 80.0), (1, 2, 3, 0, 0), 300.0, 6)
    rx = got[("stackdriver_gce_instance_compute_googleapis_com_instance_network_received_bytes_count",
              (("instance_id", "111"), ("unit", "By")))]
    assert (rx.kind, rx.value, rx.start_time_ns) == (MetricKind.COUNTER, 123456789012.0, (END - 86400) * 10**9)
    assert got[("stackdriver_global_custom_googleapis_com_job_healthy", (("job", "etl"),))].value == 1.0
    assert not any(dict(k[1]).get("job") in ("name", "empty") for k in got)
    p = (("project_id", "proj-1"),)
    assert got[("gcp_monitoring_up", p)].value == 1.0
    assert got[("gcp_monitoring_requests_total", p)].value == 6.0  # five metrics, one with two pages
    assert got[("gcp_monitoring_queries_without_data", p)].value == 1.0
    assert got[("gcp_monitoring_errors_total", (("project_id", "proj-1"), ("reason", "unsupported_value")))].value == 1.0
    assert "custom.googleapis.com/job/healthy" in caplog.text


def test_max_series_bounds_a_collection(server):
    got = collect(GcpMonitoringCollector(client_for(server)), {**CONFIG, "max_series": 2})
    assert sum(1 for k in got if k[0].startswith("stackdriver_")) == 2
    assert got[("gcp_monitoring_errors_total", (("project_id", "proj-1"), ("reason", "max_series")))].value == 1.0


def test_a_refused_request_is_up_0_with_its_code(server, caplog):
    server.fail = grpc.StatusCode.PERMISSION_DENIED
    with caplog.at_level(logging.WARNING, "monbridge.collectors.gcp"):
        got = collect(GcpMonitoringCollector(client_for(server)), {**CONFIG, "metrics": CONFIG["metrics"][:1]})
    assert got[("gcp_monitoring_up", (("project_id", "proj-1"),))].value == 0.0
    assert got[("gcp_monitoring_errors_total", (("project_id", "proj-1"), ("reason", "permission_denied")))].value == 1.0
    assert "monitoring.timeSeries.list" in caplog.text and "metrics[0]" in caplog.text
    assert not any(r.exc_info for r in caplog.records)


def test_requests_align_the_window_and_default_to_raw_points():
    from collectors.gcp import GcpConfig

    cfg = GcpConfig.model_validate({"project_id": "p", "delay": 120, "range": 600,
                                    "metrics": [{"type": "a/b", "period": 300}]})
    (r,) = requests(cfg, NOW)
    assert r.body["interval"] == {"start_time": {"seconds": 1_699_999_800 - 600}, "end_time": {"seconds": 1_699_999_800}}
    assert "aggregation" not in r.body


def test_bad_config_names_its_path():
    reg = PluginRegistry().discover()
    text = """plugins:
  - plugin_id: monitoring.metrics.gcp
    config:
      project_id: Proj_1
      metrics:
        - {type: a/b, reducer: REDUCE_SUM}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "agent.yaml", reg)
    assert "plugins[0].config.project_id" in str(e.value)
    assert "plugins[0].config.metrics[0]" in str(e.value) and "a reducer needs an aligner" in str(e.value)
