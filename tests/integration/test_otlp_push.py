"""OTLP push (monitoring.integration.otlp) against real OTLP receivers, over HTTP/protobuf and gRPC,
in-process and through the CLI (graceful shutdown flushes; env-only configuration)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from bridge.api import HistogramValue, Metric, MetricKind, PluginError
from bridge.pipeline import Pipeline
from integrations.otlp import OtlpIntegration
import otlp_receiver
from otlp_receiver import attributes, metrics_by_name

# The receivers' fixtures (tests/integration/otlp_receiver.py), made available to this module's tests.
otlp_http_receiver = otlp_receiver.otlp_http_receiver
otlp_grpc_receiver = otlp_receiver.otlp_grpc_receiver

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "Bearer s3cr3t-t0ken-value"
CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE

HIST_START = 1_700_000_000_000_000_000
HIST_TIME = 1_700_000_060_000_000_000
REQ_START = 1_700_000_000_500_000_000


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch):
    """No OTEL_* variable of the developer's shell reaches the exporters or the child processes."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def recorded_pipeline() -> Pipeline:
    """A pipeline with collector-like series (through the SDK) and pre-aggregated ones (as they are)."""
    p = Pipeline()
    p.record("monitoring.metrics.test", [
        Metric("test.requests", MetricKind.COUNTER, 42, "{request}", "requests served", {"route": "/a", "code": 200}),
        Metric("test.temperature", MetricKind.GAUGE, 21.5, "Cel", "temperature", {"sensor": "s1"}),
        Metric("test.queue.length", MetricKind.UP_DOWN_COUNTER, -3, "{item}", "queue length",
               {"queue": "q1", "durable": True}),
    ])
    p.record("monitoring.integration.import", [
        Metric("test.latency", MetricKind.HISTOGRAM,
               HistogramValue(bounds=(0.1, 0.5, 1.0), bucket_counts=(3, 4, 2, 1), sum=4.25, count=10),
               "s", "latency", {"job": "api"}, timestamp_ns=HIST_TIME, start_time_ns=HIST_START),
        Metric("test.latency.minmax", MetricKind.HISTOGRAM,
               HistogramValue(bounds=(1.0,), bucket_counts=(1, 1), sum=3.0, count=2, min=0.5, max=2.5),
               "s", "", {}, timestamp_ns=HIST_TIME, start_time_ns=HIST_START),
        Metric("test.imported.requests", MetricKind.COUNTER, 1234.0, "{request}", "imported counter",
               {"instance": "a:9100"}, timestamp_ns=HIST_TIME, start_time_ns=REQ_START),
    ])
    return p


async def push(config: dict, pipeline: Pipeline) -> OtlpIntegration:
    plugin = OtlpIntegration()
    await plugin.initialize(config)
    try:
        await plugin.export_families(pipeline.families(), pipeline.resource)
    finally:
        await plugin.shutdown()
    return plugin


def check_request(request) -> None:
    """What ``recorded_pipeline()`` must look like at the receiver."""
    (rm,) = request.resource_metrics
    res = attributes(rm.resource.attributes)
    assert res["service.name"] == "monbridge"
    m = metrics_by_name(request)
    assert {"test.requests", "test.temperature", "test.queue.length", "test.latency", "test.latency.minmax",
            "test.imported.requests"} <= set(m)

    req = m["test.requests"]
    assert req.WhichOneof("data") == "sum" and req.unit == "{request}" and req.description == "requests served"
    assert req.sum.is_monotonic and req.sum.aggregation_temporality == CUMULATIVE
    (pt,) = req.sum.data_points
    assert attributes(pt.attributes) == {"route": "/a", "code": 200}
    assert pt.as_int == 42

    temp = m["test.temperature"]
    assert temp.WhichOneof("data") == "gauge"
    (pt,) = temp.gauge.data_points
    assert attributes(pt.attributes) == {"sensor": "s1"} and pt.as_double == 21.5

    q = m["test.queue.length"]
    assert q.WhichOneof("data") == "sum" and not q.sum.is_monotonic and q.sum.aggregation_temporality == CUMULATIVE
    (pt,) = q.sum.data_points
    assert attributes(pt.attributes) == {"queue": "q1", "durable": True} and pt.as_int == -3

    lat = m["test.latency"]
    assert lat.WhichOneof("data") == "histogram" and lat.unit == "s"
    assert lat.histogram.aggregation_temporality == CUMULATIVE
    (pt,) = lat.histogram.data_points
    assert list(pt.bucket_counts) == [3, 4, 2, 1]
    assert list(pt.explicit_bounds) == [0.1, 0.5, 1.0]
    assert (pt.sum, pt.count) == (4.25, 10)
    assert (pt.start_time_unix_nano, pt.time_unix_nano) == (HIST_START, HIST_TIME)  # as imported: not re-aggregated
    assert attributes(pt.attributes) == {"job": "api"}
    # Unknown min/max are left out (not sent as NaN).
    assert not pt.HasField("min") and not pt.HasField("max")

    (pt,) = m["test.latency.minmax"].histogram.data_points
    assert (pt.min, pt.max) == (0.5, 2.5)

    imp = m["test.imported.requests"]
    assert imp.WhichOneof("data") == "sum" and imp.sum.is_monotonic and imp.sum.aggregation_temporality == CUMULATIVE
    (pt,) = imp.sum.data_points
    assert (pt.start_time_unix_nano, pt.time_unix_nano, pt.as_double) == (REQ_START, HIST_TIME, 1234.0)
    assert attributes(pt.attributes) == {"instance": "a:9100"}


# --------------------------------------------------------------------------- in process, both protocols


async def test_http_protobuf_push(otlp_http_receiver):
    pipeline = recorded_pipeline()
    try:
        plugin = await push({"endpoint": otlp_http_receiver.endpoint, "protocol": "http/protobuf",
                             "compression": "gzip", "headers": {"Authorization": TOKEN}, "interval": 10},
                            pipeline)
    finally:
        pipeline.shutdown()
    assert plugin.endpoint == otlp_http_receiver.endpoint + "/v1/metrics"
    (received,) = otlp_http_receiver.requests()
    assert received.path == "/v1/metrics"
    assert received.content_encoding == "gzip"
    assert received.headers["content-type"] == "application/x-protobuf"
    assert received.headers["authorization"] == TOKEN
    check_request(received.request)


async def test_grpc_push(otlp_grpc_receiver):
    pipeline = recorded_pipeline()
    try:
        await push({"endpoint": otlp_grpc_receiver.endpoint, "protocol": "grpc", "compression": "gzip",
                    "headers": {"authorization": TOKEN}}, pipeline)
    finally:
        pipeline.shutdown()
    (received,) = otlp_grpc_receiver.requests()
    assert received.headers["authorization"] == TOKEN
    check_request(received.request)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_the_export_contract_sends_the_batch(protocol, otlp_http_receiver, otlp_grpc_receiver):
    """``export(batch, timeout)``: the batch's own MetricsData (``to_otel``) arrives as the
    pipeline's data always did."""
    receiver = otlp_http_receiver if protocol == "http/protobuf" else otlp_grpc_receiver
    pipeline = recorded_pipeline()
    plugin = OtlpIntegration()
    await plugin.initialize({"endpoint": receiver.endpoint, "protocol": protocol})
    try:
        result = await plugin.export(pipeline.batch(), 10.0)
    finally:
        await plugin.shutdown()
        await plugin.shutdown()  # idempotent
        pipeline.shutdown()
    assert result.ok, result.reason
    (received,) = receiver.requests()
    check_request(received.request)


async def answering_503(receiver) -> OtlpIntegration:
    """A plugin pushing, with the secret token, to ``receiver`` made to answer 503."""
    receiver.status = 503
    plugin = OtlpIntegration()
    await plugin.initialize({"endpoint": receiver.endpoint, "timeout": 1, "headers": {"authorization": TOKEN}})
    return plugin


async def test_a_failed_export_is_a_retryable_result_without_the_secret(otlp_http_receiver, caplog):
    pipeline = recorded_pipeline()
    plugin = await answering_503(otlp_http_receiver)
    try:
        result = await plugin.export(pipeline.batch(), 10.0)
    finally:
        await plugin.shutdown()
        pipeline.shutdown()
    assert result.status.value == "retryable"
    assert "503" in result.reason and otlp_http_receiver.endpoint + "/v1/metrics" in result.reason
    assert "s3cr3t" not in result.reason and "s3cr3t" not in caplog.text


async def test_plain_metric_path_is_converted(otlp_http_receiver):
    """``export_metrics(list[Metric])`` (the plugin API's path) sends the same data."""
    plugin = OtlpIntegration()
    await plugin.initialize({"endpoint": otlp_http_receiver.endpoint + "/v1/metrics"})
    pipeline = recorded_pipeline()
    try:
        await plugin.export_metrics(pipeline.snapshot())
    finally:
        await plugin.shutdown()
        pipeline.shutdown()
    (received,) = otlp_http_receiver.requests()
    m = metrics_by_name(received.request)
    (pt,) = m["test.latency"].histogram.data_points
    assert (list(pt.bucket_counts), pt.start_time_unix_nano, pt.time_unix_nano) == ([3, 4, 2, 1], HIST_START, HIST_TIME)
    assert m["test.requests"].sum.is_monotonic and not m["test.queue.length"].sum.is_monotonic
    assert m["test.temperature"].WhichOneof("data") == "gauge"


# --------------------------------------------------------------------------- failures


async def test_http_503_raises_plugin_error_without_the_secret(otlp_http_receiver, caplog):
    pipeline = recorded_pipeline()
    plugin = await answering_503(otlp_http_receiver)
    try:
        with pytest.raises(PluginError) as err:
            await plugin.export_families(pipeline.families(), pipeline.resource)
    finally:
        await plugin.shutdown()
        pipeline.shutdown()
    msg = str(err.value)
    assert otlp_http_receiver.endpoint + "/v1/metrics" in msg and "http/protobuf" in msg
    assert "503" in msg
    assert "s3cr3t" not in msg and "s3cr3t" not in caplog.text


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_receiver_not_running_raises_plugin_error(protocol, free_port, caplog):
    port = free_port()
    pipeline = recorded_pipeline()
    plugin = OtlpIntegration()
    await plugin.initialize({"endpoint": f"http://127.0.0.1:{port}", "protocol": protocol, "timeout": 1,
                             "headers": {"authorization": TOKEN}})
    t0 = time.monotonic()
    try:
        with pytest.raises(PluginError) as err:
            await plugin.export_families(pipeline.families(), pipeline.resource)
    finally:
        await plugin.shutdown()
        pipeline.shutdown()
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and protocol in msg
    assert "s3cr3t" not in msg and "s3cr3t" not in caplog.text


# --------------------------------------------------------------------------- through the CLI


def test_cli_pushes_and_flushes_on_sigterm(run_monbridge, otlp_http_receiver):
    """The real CLI with the system collector and OTLP push every second: system.cpu.time arrives,
    and SIGTERM ends the process within 5 s with status 0 after a last push (the flush)."""
    mb = run_monbridge({
        "plugins": [
            {"plugin_id": "monitoring.metrics.system", "config": {"collection_interval": 1}},
            {"plugin_id": "monitoring.integration.otlp",
             "config": {"endpoint": otlp_http_receiver.endpoint, "protocol": "http/protobuf", "interval": 1,
                        "compression": "gzip", "headers": {"authorization": TOKEN}}},
        ],
    })
    received = otlp_http_receiver.wait_for_metric("system.cpu.time", timeout=20)
    assert received.headers["authorization"] == TOKEN and received.content_encoding == "gzip"
    assert attributes(received.request.resource_metrics[0].resource.attributes)["service.name"] == "monbridge"
    before = otlp_http_receiver.count()
    mb.proc.send_signal(signal.SIGTERM)
    try:
        status = mb.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"monbridge did not exit within 5 s of SIGTERM; its log:\n{mb.log_text()}", pytrace=False)
    assert status == 0, mb.log_text()
    # The stop must be orderly, not the runtime's 5 s budget running out with the plugins still scheduled.
    assert "did not shut down" not in mb.log_text(), mb.log_text()
    assert otlp_http_receiver.count() > before, "no push after SIGTERM: the shutdown did not flush"
    assert "s3cr3t" not in mb.log_text()


def test_cli_pushes_with_only_otel_env_vars(otlp_http_receiver, free_port, tmp_path):
    """No --config: OTEL_EXPORTER_OTLP_ENDPOINT alone adds OTLP push to the embedded default config,
    with the interval from OTEL_METRIC_EXPORT_INTERVAL (milliseconds)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_http_receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "1000"})
    log_path = tmp_path / "monbridge.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--listen", f"127.0.0.1:{port}"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"monbridge exited with {proc.returncode}:\n{log_path.read_text()}", pytrace=False)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"monbridge not ready within 20 s:\n{log_path.read_text()}", pytrace=False)
            time.sleep(0.2)
        first = otlp_http_receiver.wait_for(timeout=10)
        assert first.path == "/v1/metrics"
        otlp_http_receiver.wait_for_metric("system.cpu.time", timeout=20)
        # Pushed every second (OTEL_METRIC_EXPORT_INTERVAL=1000), not every 60.
        n = otlp_http_receiver.count()
        otlp_http_receiver.wait_for(after=n + 1, timeout=5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(log_path.read_text())
    assert proc.returncode == 0
