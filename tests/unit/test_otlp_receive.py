"""OTLP receive: the receivers on loopback (real aiohttp and gRPC servers, real clients) feeding a
real pipeline; config; conversion; hostile input (sizes, gzip bombs, garbage, unknown content
types, huge and deep attributes, NaN/Inf, too many series), each answered with what was wrong,
counted and logged."""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

from bridge.api import MetricKind
from bridge.exposition import render
from bridge.pipeline import Pipeline
from integrations.otlp import OtlpConfig, OtlpIntegration
from integrations.otlp_receive import (
    GRPC_SERVICE,
    OtlpReceiveConfig,
    OtlpReceiver,
    ReceiveLimits,
    RequestError,
    convert_request,
    decode_request,
)

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def request(*metrics: m.Metric, resource: dict[str, Any] | None = None) -> ExportMetricsServiceRequest:
    res = {"service.name": "shop", "service.instance.id": "i-1"} if resource is None else resource
    return ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(
        resource={"attributes": [kv(k, v) for k, v in res.items()]},
        scope_metrics=[m.ScopeMetrics(scope={"name": "lib", "version": "2"}, metrics=list(metrics))])])


def gauge(name: str, *values: float, unit: str = "", attrs: dict[str, Any] | None = None) -> m.Metric:
    return m.Metric(name=name, unit=unit, gauge=m.Gauge(data_points=[
        m.NumberDataPoint(as_double=v, time_unix_nano=T0, attributes=[kv(k, x) for k, x in (attrs or {"i": i}).items()])
        for i, v in enumerate(values)]))


def counter(name: str, value: float, start: int, end: int, delta: bool = False, unit: str = "") -> m.Metric:
    return m.Metric(name=name, unit=unit, sum=m.Sum(
        is_monotonic=True, aggregation_temporality=1 if delta else 2,
        data_points=[m.NumberDataPoint(as_double=value, start_time_unix_nano=start, time_unix_nano=end)]))


# ---------------------------------------------------------------------------- fixtures


class Receiving:
    def __init__(self, pipeline: Pipeline, receiver: OtlpReceiver, session: aiohttp.ClientSession) -> None:
        self.pipeline = pipeline
        self.receiver = receiver
        self.session = session

    @property
    def url(self) -> str:
        host, port = self.receiver.http_bound or ("", 0)
        return f"http://{host}:{port}/v1/metrics"

    async def post(self, body: bytes, ctype: str = "application/x-protobuf",
                   headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
        async with self.session.post(self.url, data=body, headers={"Content-Type": ctype, **(headers or {})}) as r:
            return r.status, await r.read(), r.headers.get("Content-Type", "")

    async def export(self, req: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
        status, body, _ = await self.post(req.SerializeToString())
        assert status == 200, body
        return ExportMetricsServiceResponse.FromString(body)

    async def grpc_export(self, body: bytes, metadata: tuple[tuple[str, str], ...] = (),
                          compression: Any = None, credentials: Any = None) -> bytes:
        host, port = self.receiver.grpc_bound or ("", 0)
        channel = (grpc.aio.secure_channel(f"{host}:{port}", credentials, compression=compression)
                   if credentials is not None else grpc.aio.insecure_channel(f"{host}:{port}", compression=compression))
        async with channel:
            call = channel.unary_unary(f"/{GRPC_SERVICE}/Export")
            return bytes(await call(body, metadata=metadata, timeout=10))

    def text(self) -> str:
        return render(self.pipeline.families()).decode()


async def _receiving(config: dict[str, Any], cardinality_limit: int = 10_000) -> AsyncIterator[Receiving]:
    pipeline = Pipeline(cardinality_limit=cardinality_limit)
    receiver = OtlpReceiver(OtlpReceiveConfig.model_validate(config), pipeline.ingest("otlp", 300.0))
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Receiving(pipeline, receiver, session)
    finally:
        await receiver.stop()
        pipeline.shutdown()


LOOPBACK = {"grpc": {"listen": "127.0.0.1:0"}, "http": {"listen": "127.0.0.1:0"}}


@pytest.fixture
async def rx() -> AsyncIterator[Receiving]:
    async for r in _receiving(LOOPBACK):
        yield r


# ---------------------------------------------------------------------------- config


def test_receive_only_does_not_push(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    assert not OtlpConfig.model_validate({"receive": {"http": {"listen": "127.0.0.1:4318"}}}).pushes
    assert OtlpConfig.model_validate({"receive": {"http": {}}, "endpoint": "http://x:4318"}).pushes
    assert OtlpConfig.model_validate({}).pushes  # push alone, as before
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert OtlpConfig.model_validate({"receive": {"http": {}}}).pushes


@pytest.mark.parametrize("receive, fragment", [
    ({}, "receive needs grpc, http or both"),
    ({"http": {"listen": "nowhere"}}, "HOST:PORT"),
    ({"http": {"listen": "127.0.0.1:4318", "max_request_bytes": 10}}, "greater than or equal to 1024"),
    ({"grpc": {"listen": "127.0.0.1:4317", "max_request_bytes": 4096}}, "Extra inputs are not permitted"),
    ({"http": {}, "expire_after": 0}, "greater than 0"),
    ({"http": {"tls": {"cert_file": "c.pem"}}}, "key_file"),
    ({"http": {}, "unknown": 1}, "Extra inputs are not permitted"),
])
def test_receive_config_errors_name_the_problem(receive, fragment):
    with pytest.raises(ValueError, match=fragment):
        OtlpConfig.model_validate({"receive": receive})


async def test_receive_only_integration_listens_and_has_no_sinks(free_port, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    pipeline = Pipeline()
    plugin = OtlpIntegration()
    plugin.bind_ingest(pipeline.ingest("monitoring.integration.otlp", 300.0))
    port = free_port()
    await plugin.initialize({"interval": 1, "receive": {"http": {"listen": f"127.0.0.1:{port}"}}})
    try:
        assert plugin.export_sinks() == {}
        assert plugin.telemetry_exporters() is None  # alerts' spans/logs not pushed either
        async with aiohttp.ClientSession() as s:
            body = request(gauge("room.temp", 20.5, unit="Cel")).SerializeToString()
            async with s.post(f"http://127.0.0.1:{port}/v1/metrics", data=body,
                              headers={"Content-Type": "application/x-protobuf"}) as r:
                assert r.status == 200
        assert await plugin.import_metrics() == []  # the round keeps pushed series and adds self-metrics
        text = render(pipeline.families()).decode()
        assert 'room_temp_celsius{i="0",instance="i-1",job="shop",otel_scope_name="lib",otel_scope_version="2"} 20.5' in text
        assert 'monbridge_otlp_receive_requests_total{result="ok",transport="http"} 1' in text
    finally:
        await plugin.shutdown()
        pipeline.shutdown()


async def test_a_taken_port_is_an_error_naming_the_config_path(free_port):
    pipeline = Pipeline()
    first = OtlpReceiver(OtlpReceiveConfig.model_validate(LOOPBACK), pipeline.ingest("a", 300.0))
    await first.start()
    try:
        host, port = first.http_bound or ("", 0)
        taken = OtlpReceiver(OtlpReceiveConfig.model_validate({"http": {"listen": f"127.0.0.1:{port}"}}),
                             pipeline.ingest("b", 300.0))
        with pytest.raises(Exception, match=r"receive\.http\.listen: cannot listen on 127\.0\.0\.1:"):
            await taken.start()
        gport = (first.grpc_bound or ("", 0))[1]
        taken = OtlpReceiver(OtlpReceiveConfig.model_validate({"grpc": {"listen": f"127.0.0.1:{gport}"}}),
                             pipeline.ingest("c", 300.0))
        with pytest.raises(Exception, match=r"receive\.grpc\.listen: cannot listen on"):
            await taken.start()
    finally:
        await first.stop()
        pipeline.shutdown()


# ---------------------------------------------------------------------------- data


async def test_every_kind_over_http_protobuf(rx):
    hist = m.Metric(name="http.server.duration", unit="s", histogram=m.Histogram(
        aggregation_temporality=2, data_points=[m.HistogramDataPoint(
            start_time_unix_nano=T0, time_unix_nano=T0 + S, count=4, sum=3.5, bucket_counts=[1, 2, 1],
            explicit_bounds=[0.5, 1.0])]))
    exp = m.Metric(name="payload", unit="By", exponential_histogram=m.ExponentialHistogram(
        aggregation_temporality=2, data_points=[m.ExponentialHistogramDataPoint(
            start_time_unix_nano=T0, time_unix_nano=T0 + S, count=5, sum=20.0, scale=0, zero_count=1,
            positive=m.ExponentialHistogramDataPoint.Buckets(offset=1, bucket_counts=[2, 0, 1]),
            negative=m.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[1]))]))
    summ = m.Metric(name="rpc.latency", unit="ms", summary=m.Summary(data_points=[m.SummaryDataPoint(
        start_time_unix_nano=T0, time_unix_nano=T0 + S, count=10, sum=55.0,
        quantile_values=[m.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=5.0),
                         m.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=9.5)])]))
    updown = m.Metric(name="queue.size", sum=m.Sum(is_monotonic=False, aggregation_temporality=2, data_points=[
        m.NumberDataPoint(as_int=-3, start_time_unix_nano=T0, time_unix_nano=T0 + S)]))
    resp = await rx.export(request(counter("jobs.done", 12, T0, T0 + S), hist, exp, summ, updown,
                                   resource={"service.name": "shop", "service.namespace": "demo",
                                             "service.instance.id": "i-9", "host.name": "h1"}))
    assert not resp.HasField("partial_success")
    text = rx.text()
    lab = 'instance="i-9",job="demo/shop",otel_scope_name="lib",otel_scope_version="2"'
    assert f"jobs_done_total{{{lab}}} 12.0" in text
    assert "# TYPE http_server_duration_seconds histogram" in text
    assert f'http_server_duration_seconds_bucket{{{lab},le="1.0"}} 3' in text
    assert f'http_server_duration_seconds_bucket{{{lab},le="+Inf"}} 4' in text
    # The exponential histogram, scale 0 (base 2): -1 in (-2, -1], zero 1, 2 in (2, 4], 1 in (8, 16].
    assert "# TYPE payload_bytes histogram" in text
    for le, n in (("-1.0", 1), ("0.0", 2), ("4.0", 4), ("16.0", 5), ("+Inf", 5)):
        assert f'payload_bytes_bucket{{{lab},le="{le}"}} {n}' in text, le
    assert f'rpc_latency_milliseconds{{{lab},quantile="0.99"}} 9.5' in text
    assert f"rpc_latency_milliseconds_count{{{lab}}} 10" in text
    assert f"queue_size{{{lab}}} -3" in text
    assert 'target_info{host_name="h1",instance="i-9",job="demo/shop"} 1' in text
    fam = rx.pipeline.family("payload")
    assert fam is not None and fam.kind is MetricKind.EXPONENTIAL_HISTOGRAM  # kept as it came


async def test_json_with_camel_case_string_integers_and_hex_ids_and_gzip(rx):
    doc = {"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
           "scopeMetrics": [{"scope": {"name": "web"}, "metrics": [{
               "name": "hits", "sum": {"isMonotonic": True, "aggregationTemporality": 2, "dataPoints": [{
                   "asInt": "9007199254740993", "startTimeUnixNano": str(T0), "timeUnixNano": str(T0 + S),
                   "attributes": [{"key": "ok", "value": {"boolValue": True}}],
                   "exemplars": [{"asDouble": 1.0, "timeUnixNano": str(T0), "traceId": "5b8efff798038103d269b633813fc60c",
                                  "spanId": "eee19b7ec3c1b174"}]}]},
               "futureField": {"x": 1}}]}]}]}
    body = gzip.compress(json.dumps(doc).encode())
    status, out, ctype = await rx.post(body, "application/json", {"Content-Encoding": "gzip"})
    assert status == 200 and ctype == "application/json", out
    assert json.loads(out) == {}
    assert 'hits_total{job="js",ok="true",otel_scope_name="web"} 9007199254740993' in rx.text()


async def test_partial_success_names_what_was_rejected_and_counts_it(rx, caplog):
    caplog.set_level(logging.WARNING)
    bad_hist = m.Metric(name="h", histogram=m.Histogram(aggregation_temporality=2, data_points=[
        m.HistogramDataPoint(time_unix_nano=T0, count=1, bucket_counts=[1], explicit_bounds=[1.0, 2.0])]))
    req = request(gauge("ok.gauge", 1.0), gauge("bad name!", 1.0), counter("neg", -1, T0, T0 + S), bad_hist,
                  gauge("long", 1.0, attrs={"a": "x" * 5000}))
    resp = await rx.export(req)
    ps = resp.partial_success
    assert ps.rejected_data_points == 4
    for fragment in ("invalid_name", "bad name!", "2 rejected (invalid_value)", "neg", "negative",
                     "invalid_attribute", "max_attribute_length"):
        assert fragment in ps.error_message, fragment
    assert "ok_gauge" in rx.text()
    counts = rx.receiver.points
    assert counts[("accepted", "")] == 1
    assert counts[("rejected", "invalid_value")] == 2
    assert counts[("rejected", "invalid_name")] == 1 and counts[("rejected", "invalid_attribute")] == 1
    assert rx.pipeline.dropped["invalid_name"] == 1
    assert any("data points rejected" in r.getMessage() for r in caplog.records)
    text = rx.text()
    assert 'monbridge_otlp_receive_points_total{reason="invalid_value",result="rejected"} 2' in text


async def test_nan_and_inf_are_values(rx):
    resp = await rx.export(request(gauge("g", math.nan, math.inf, -math.inf)))
    assert resp.partial_success.rejected_data_points == 0
    text = rx.text()
    assert 'g{i="0",instance="i-1",job="shop",otel_scope_name="lib",otel_scope_version="2"} NaN' in text
    assert "} +Inf" in text and "} -Inf" in text


async def test_too_many_series_over_the_cardinality_limit_are_rejected_as_partial_success():
    async for rx in _receiving(LOOPBACK, cardinality_limit=5):
        resp = await rx.export(request(gauge("wide", *[float(i) for i in range(8)])))
        assert resp.partial_success.rejected_data_points == 3
        assert "cardinality" in resp.partial_success.error_message
        assert "pipeline.cardinality_limit" in resp.partial_success.error_message
        assert rx.pipeline.dropped["cardinality"] == 3
        fam = rx.pipeline.family("wide")
        assert fam is not None and len(fam.series) == 5


async def test_delta_sums_become_cumulative_and_out_of_order_deltas_are_rejected(rx):
    await rx.export(request(counter("d", 3, T0, T0 + S, delta=True)))
    await rx.export(request(counter("d", 4, T0 + S, T0 + 2 * S, delta=True)))
    assert 'd_total{instance="i-1",job="shop",otel_scope_name="lib",otel_scope_version="2"} 7.0' in rx.text()
    resp = await rx.export(request(counter("d", 4, T0 + S, T0 + 2 * S, delta=True)))  # a retried request
    assert resp.partial_success.rejected_data_points == 1
    assert "out_of_order" in resp.partial_success.error_message
    assert "d_total{" in rx.text() and "} 7.0" in rx.text()
    s = next(iter(rx.pipeline.family("d").series.values()))
    assert s.start_ns == T0  # the running total starts where the first delta did


async def test_non_monotonic_delta_sums_are_rejected_as_the_spec_says(rx):
    metric = m.Metric(name="ud", sum=m.Sum(is_monotonic=False, aggregation_temporality=1, data_points=[
        m.NumberDataPoint(as_int=2, start_time_unix_nano=T0, time_unix_nano=T0 + S)]))
    resp = await rx.export(request(metric))
    assert resp.partial_success.rejected_data_points == 1
    assert "unsupported" in resp.partial_success.error_message


async def test_promoted_resource_attributes_become_labels():
    cfg = {**LOOPBACK, "promote_resource_attributes": ["k8s.namespace.name"]}
    async for rx in _receiving(cfg):
        await rx.export(request(gauge("g", 1.0), resource={"service.name": "s", "k8s.namespace.name": "prod",
                                                           "cloud.region": "eu"}))
        text = rx.text()
        assert 'g{i="0",job="s",k8s_namespace_name="prod",otel_scope_name="lib",otel_scope_version="2"} 1.0' in text
        assert 'target_info{cloud_region="eu",job="s",k8s_namespace_name="prod"} 1' in text


# ---------------------------------------------------------------------------- hostile input over HTTP


def _status_message(body: bytes, ctype: str) -> str:
    if ctype.startswith("application/json"):
        return json.loads(body)["message"]
    return status_pb2.Status.FromString(body).message


async def test_unknown_content_type_is_415(rx):
    status, body, ctype = await rx.post(b"x", "text/plain")
    assert status == 415 and "not an OTLP one" in _status_message(body, ctype)
    assert rx.receiver.requests[("http", "unsupported_media_type")] == 1


@pytest.mark.parametrize("body, ctype, fragment", [
    (b"\xff\xff\xff\xff", "application/x-protobuf", "not an OTLP ExportMetricsServiceRequest"),
    (b"{not json", "application/json", "not valid JSON"),
    (b'{"resourceMetrics": 5}', "application/json", "not an OTLP ExportMetricsServiceRequest in JSON"),
    (b"[" * 100 + b"]" * 100, "application/json", "nested deeper"),
])
async def test_garbage_is_400_saying_why(rx, body, ctype, fragment):
    status, out, rtype = await rx.post(body, ctype)
    assert status == 400, out
    assert fragment in _status_message(out, rtype)


async def test_oversized_and_gzip_bomb_are_413_naming_the_limit():
    cfg = {"http": {"listen": "127.0.0.1:0", "max_request_bytes": 2048, "max_decompressed_bytes": 65536}}
    async for rx in _receiving(cfg):
        status, out, ctype = await rx.post(b"\0" * 4096)
        assert status == 413 and "(receive.http.max_request_bytes) of 2048" in _status_message(out, ctype)
        bomb = gzip.compress(b"\0" * (10 << 20))  # 10 MiB of zeros, ~10 KB compressed... over 2048 too
        small_bomb = gzip.compress(b"\0" * 200_000)
        assert len(small_bomb) < 2048 < len(bomb)
        status, out, ctype = await rx.post(small_bomb, headers={"Content-Encoding": "gzip"})
        assert status == 413
        assert "decoded body is larger than the limit (receive.http.max_decompressed_bytes) of 65536" in \
            _status_message(out, ctype)
        status, out, ctype = await rx.post(b"not gzip", headers={"Content-Encoding": "gzip"})
        assert status == 400
        assert rx.receiver.requests[("http", "too_large")] == 2


async def test_zstd_bodies_are_taken_and_a_zstd_bomb_is_413():
    import cramjam

    cfg = {"http": {"listen": "127.0.0.1:0", "max_request_bytes": 2048, "max_decompressed_bytes": 65536}}
    async for rx in _receiving(cfg):
        body = bytes(cramjam.zstd.compress(request(gauge("zstd.gauge", 2.5)).SerializeToString()))
        status, out, _ = await rx.post(body, headers={"Content-Encoding": "zstd"})
        assert status == 200, out
        assert 'zstd_gauge{i="0",instance="i-1",job="shop",otel_scope_name="lib",otel_scope_version="2"} 2.5' in rx.text()
        bomb = bytes(cramjam.zstd.compress(b"\0" * (32 << 20)))
        assert len(bomb) < 2048
        status, out, ctype = await rx.post(bomb, headers={"Content-Encoding": "zstd"})
        assert status == 413
        assert "decoded body is larger than the limit (receive.http.max_decompressed_bytes) of 65536" in \
            _status_message(out, ctype)


async def test_too_many_points_is_413():
    async for rx in _receiving({**LOOPBACK, "max_data_points": 3}):
        status, out, ctype = await rx.post(request(gauge("g", 1, 2, 3, 4)).SerializeToString())
        assert status == 413
        assert "4 data points, more than receive.max_data_points (3)" in _status_message(out, ctype)


async def test_huge_and_deep_attribute_values_are_bounded(rx):
    deep = AnyValue(string_value="leaf")
    for _ in range(20):
        deep = AnyValue(kvlist_value={"values": [KeyValue(key="k", value=deep)]})
    many = [kv(f"a{i}", i) for i in range(200)]
    req = request(gauge("ok", 1.0))
    metric = req.resource_metrics[0].scope_metrics[0].metrics
    metric.append(m.Metric(name="deep", gauge=m.Gauge(data_points=[
        m.NumberDataPoint(as_double=1.0, attributes=[KeyValue(key="d", value=deep)])])))
    metric.append(m.Metric(name="many", gauge=m.Gauge(data_points=[m.NumberDataPoint(as_double=1.0, attributes=many)])))
    resp = await rx.export(req)
    # The 20-deep map is kept as JSON text (well under the length limit); 200 attributes are too many.
    assert resp.partial_success.rejected_data_points == 1
    assert "max_attributes (128)" in resp.partial_success.error_message
    fam = rx.pipeline.family("deep")
    assert fam is not None
    (s,) = fam.series.values()
    assert json.loads(s.attributes["d"])["k"]["k"]["k"]  # nested maps as JSON
    # Deeper than protobuf's recursion limit (built by hand: the library will not build it): the
    # request is refused whole, never a crash.
    status, out, ctype = await rx.post(too_deep_request(500))
    assert status == 400 and "not an OTLP" in _status_message(out, ctype)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    n, size = len(payload), b""
    while True:
        b = n & 0x7F
        n >>= 7
        size += bytes([b | (0x80 if n else 0)])
        if not n:
            return bytes([field << 3 | 2]) + size + payload


def too_deep_request(depth: int) -> bytes:
    """An ExportMetricsServiceRequest whose resource has one attribute, a map nested ``depth`` deep."""
    value = _ld(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        value = _ld(6, _ld(1, _ld(1, b"k") + _ld(2, value)))  # AnyValue.kvlist_value.values[0] = {k: value}
    attribute = _ld(1, b"d") + _ld(2, value)
    return _ld(1, _ld(1, _ld(1, attribute)))  # resource_metrics[0].resource.attributes[0]


async def test_auth_and_tls_like_the_server(tmp_path):
    from tests.tls_cert import self_signed

    cert, key = self_signed(tmp_path)
    auth = {"bearer_token": "s3cret-token"}
    cfg = {"http": {"listen": "127.0.0.1:0", "auth": auth, "tls": {"cert_file": str(cert), "key_file": str(key)}},
           "grpc": {"listen": "127.0.0.1:0", "auth": auth, "tls": {"cert_file": str(cert), "key_file": str(key)}}}
    async for rx in _receiving(cfg):
        import ssl

        ctx = ssl.create_default_context(cafile=str(cert))
        host, port = rx.receiver.http_bound or ("", 0)
        url = f"https://{host}:{port}/v1/metrics"
        body = request(gauge("g", 1.0)).SerializeToString()
        hdr = {"Content-Type": "application/x-protobuf"}
        async with rx.session.post(url, data=body, headers=hdr, ssl=ctx) as r:
            assert r.status == 401 and "Bearer" in r.headers["WWW-Authenticate"]
        async with rx.session.post(url, data=body, headers={**hdr, "Authorization": "Bearer s3cret-token"},
                                   ssl=ctx) as r:
            assert r.status == 200
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await rx.grpc_export(body, credentials=creds)
        assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "s3cret" not in (e.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as e:  # plaintext to a TLS port
            await rx.grpc_export(body, metadata=(("authorization", "Bearer s3cret-token"),))
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE
        out = await rx.grpc_export(body, metadata=(("authorization", "Bearer s3cret-token"),), credentials=creds)
        assert not ExportMetricsServiceResponse.FromString(out).HasField("partial_success")
        assert rx.receiver.requests[("grpc", "unauthenticated")] == 1
        assert rx.receiver.requests[("http", "unauthenticated")] == 1


async def test_a_tls_file_that_cannot_be_read_is_named(tmp_path):
    cfg = OtlpReceiveConfig.model_validate({"http": {"listen": "127.0.0.1:0", "tls": {
        "cert_file": str(tmp_path / "nope.pem"), "key_file": str(tmp_path / "nope.key")}}})
    receiver = OtlpReceiver(cfg, Pipeline().ingest("x", 300.0))
    with pytest.raises(Exception, match=r"receive\.http\.tls\.cert_file: cannot read .*nope\.pem"):
        await receiver.start()


# ---------------------------------------------------------------------------- gRPC


async def test_grpc_takes_protobuf_gzip_and_answers_partial_success(rx):
    req = request(gauge("g", 1.0), gauge("bad name", 2.0))
    out = await rx.grpc_export(req.SerializeToString(), compression=grpc.Compression.Gzip)
    resp = ExportMetricsServiceResponse.FromString(out)
    assert resp.partial_success.rejected_data_points == 1
    assert "invalid_name" in resp.partial_success.error_message
    assert 'g{i="0",instance="i-1"' in rx.text()


async def test_grpc_garbage_is_invalid_argument_and_too_many_points_resource_exhausted():
    async for rx in _receiving({"grpc": {"listen": "127.0.0.1:0", "max_decompressed_bytes": 4096},
                                "max_data_points": 2}):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await rx.grpc_export(b"\xff\xff\xff")
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not an OTLP ExportMetricsServiceRequest" in (e.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await rx.grpc_export(request(gauge("g", 1, 2, 3)).SerializeToString())
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_data_points" in (e.value.details() or "")
        # Over the message limit, compressed or not (a gzip bomb is decompressed within the bound).
        big = request(gauge("g", 1.0, attrs={"a": "x" * 8000})).SerializeToString()
        for compression in (None, grpc.Compression.Gzip):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await rx.grpc_export(big, compression=compression)
            assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


# ---------------------------------------------------------------------------- decoding and conversion


def test_json_and_protobuf_decode_to_the_same_request():
    req = request(counter("c", 5, T0, T0 + S), gauge("g", 2.5, attrs={"flag": True, "n": 3}))
    as_json = json_format.MessageToJson(req).encode()
    assert decode_request(as_json, "json") == decode_request(req.SerializeToString(), "protobuf") == req


def test_conversion_keeps_types_and_splits_delta():
    conv = convert_request(request(counter("c", 5, T0, T0 + S, delta=True), gauge("g", 1.0)), ReceiveLimits())
    assert [x.name for x in conv.delta] == ["c"] and [x.name for x in conv.cumulative] == ["g"]
    assert conv.delta[0].kind is MetricKind.COUNTER and conv.delta[0].start_time_ns == T0
    assert conv.info == []  # no attributes but service.* : no target_info
    with pytest.raises(RequestError, match="max_data_points"):
        convert_request(request(gauge("g", 1, 2)), ReceiveLimits(max_data_points=1))


async def test_requests_over_the_in_flight_bound_are_told_to_retry(rx, monkeypatch):
    import asyncio

    import integrations.otlp_receive as receive

    monkeypatch.setattr(receive, "IN_FLIGHT", 2)
    release = asyncio.Event()
    body = request(gauge("slow", 1.0)).SerializeToString()

    async def slow_body():
        yield body[:5]
        await release.wait()
        yield body[5:]

    async def slow_post() -> int:
        async with rx.session.post(rx.url, data=slow_body(), headers={"Content-Type": "application/x-protobuf"}) as r:
            return r.status

    slow = [asyncio.create_task(slow_post()) for _ in range(2)]
    for _ in range(100):
        if rx.receiver._in_flight == 2:
            break
        await asyncio.sleep(0.02)
    status, out, ctype = await rx.post(body)
    assert status == 503 and "retry later" in _status_message(out, ctype)
    assert rx.receiver.requests[("http", "busy")] == 1
    release.set()
    assert await asyncio.gather(*slow) == [200, 200]
    status, _, _ = await rx.post(body)
    assert status == 200


async def test_received_data_is_pushed_on_as_it_came(monkeypatch):
    """``endpoint`` and ``receive`` together: what one monbridge receives, its OTLP push sends on
    (here to a second receiver), exponential histograms and delta-made-cumulative sums as they are."""

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", raising=False)
    async for downstream in _receiving({"http": {"listen": "127.0.0.1:0"}}):
        host, port = downstream.receiver.http_bound or ("", 0)
        upstream = Pipeline()
        plugin = OtlpIntegration()
        plugin.bind_ingest(upstream.ingest("monitoring.integration.otlp", 300.0))
        await plugin.initialize({"endpoint": f"http://{host}:{port}", "interval": 1,
                                 "receive": {"http": {"listen": "127.0.0.1:0"}}})
        try:
            assert "export" in plugin.export_sinks()
            exp = m.Metric(name="payload", unit="By", exponential_histogram=m.ExponentialHistogram(
                aggregation_temporality=1, data_points=[m.ExponentialHistogramDataPoint(
                    start_time_unix_nano=T0, time_unix_nano=T0 + S, count=3, sum=9.0, scale=2, zero_count=1,
                    positive=m.ExponentialHistogramDataPoint.Buckets(offset=3, bucket_counts=[1, 0, 1]),
                    attributes=[kv("route", "/a")])]))
            h, p = plugin._receiver.http_bound  # type: ignore[union-attr]
            async with downstream.session.post(f"http://{h}:{p}/v1/metrics", data=request(
                    exp, counter("d", 2, T0, T0 + S, delta=True)).SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"}) as r:
                assert r.status == 200
            assert (await plugin.export(upstream.batch(), 10.0)).ok
            (sent,) = upstream.family("payload").series.values()
            fam = downstream.pipeline.family("payload")
            assert fam is not None and fam.kind is MetricKind.EXPONENTIAL_HISTOGRAM
            (got,) = fam.series.values()
            assert got.value == sent.value and got.attributes["route"] == "/a"
            (d,) = downstream.pipeline.family("d").series.values()
            assert d.value == 2.0 and d.start_ns == T0
        finally:
            await plugin.shutdown()
            upstream.shutdown()


async def test_a_request_from_a_web_page_is_refused(rx):
    """A page that reached the receiver under its own name (DNS rebinding) sends an Origin: refused."""
    body = request(gauge("injected", 1.0)).SerializeToString()
    status, out, ctype = await rx.post(body, headers={"Origin": "http://evil.example"})
    assert status == 403 and "web page" in _status_message(out, ctype)
    assert rx.pipeline.family("injected") is None
    assert rx.receiver.requests[("http", "origin")] == 1


async def test_series_and_metric_names_a_receiver_holds_are_bounded():
    async for rx in _receiving({"http": {"listen": "127.0.0.1:0"}, "max_series": 6, "max_metrics": 3}):
        # The receiver's own self-metrics, pushed beside, take none of the clients' series or names.
        resp = await rx.export(request(gauge("a", 1, 2, 3, 4, 5)))
        assert resp.partial_success.rejected_data_points == 0
        resp = await rx.export(request(gauge("a", 1, 2, 3, 4, 5, 6, 7)))
        assert resp.partial_success.rejected_data_points == 1  # the 7th series
        assert "series_limit" in resp.partial_success.error_message
        assert "max_series" in resp.partial_success.error_message
        resp = await rx.export(request(gauge("b", 1.0), gauge("c", 1.0), gauge("d", 1.0)))
        assert resp.partial_success.rejected_data_points == 3  # b and c: no series left; d: the 4th name
        assert "family_limit" in resp.partial_success.error_message
        assert rx.pipeline.dropped["series_limit"] == 3 and rx.pipeline.dropped["family_limit"] == 1
        # ... and are never refused: a full receiver still says what it refused.
        text = rx.text()
        assert 'monbridge_otlp_receive_requests_total{result="ok",transport="http"} 3' in text
        assert 'monbridge_otlp_receive_points_total{reason="series_limit",result="rejected"} 3' in text
        assert 'monbridge_otlp_receive_points_total{reason="family_limit",result="rejected"} 1' in text
        assert len(rx.pipeline.family("a").series) == 6


async def test_a_receive_only_integration_builds_no_export_batch(monkeypatch):
    from bridge.supervisor import Supervisor

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    pipeline = Pipeline()
    calls = []
    real_batch = pipeline.batch
    monkeypatch.setattr(pipeline, "batch", lambda: calls.append(1) or real_batch())
    supervisor = Supervisor(pipeline)
    config = {"receive": {"http": {"listen": "127.0.0.1:0"}}}
    runner = supervisor.make_runner("monitoring.integration.otlp", OtlpIntegration, config,
                                    OtlpIntegration.parse_config(config))
    try:
        assert await supervisor.collect_once(runner)  # one whole round: import, then no export
        assert runner.host is not None and runner.host.sink_names() == [] and calls == []
    finally:
        await supervisor.stop(runner, flush=False)
        pipeline.shutdown()


# ---------------------------------------------------------------------------- slow clients, bombs off the loop


def test_inflate_decompresses_within_the_limit_and_names_what_is_wrong():
    from bridge.helpers import BodyError, BodyLimits, inflate

    data = b"x" * 5000
    assert inflate(gzip.compress(data), "gzip", BodyLimits(max_bytes=5000)) == data
    assert inflate(data, "identity", BodyLimits(max_bytes=10)) == data  # not compressed: as it came
    with pytest.raises(BodyError) as e:
        inflate(gzip.compress(data), "gzip", BodyLimits(max_bytes=4999))
    assert e.value.status == 413 and e.value.reason == "too_large" and "4999" in e.value.message
    with pytest.raises(BodyError) as e:
        inflate(gzip.compress(data)[:-20], "gzip", BodyLimits(max_bytes=5000))  # cut short
    assert e.value.status == 400 and e.value.reason == "bad_encoding"
    with pytest.raises(BodyError) as e:
        inflate(data, "br", BodyLimits(max_bytes=5000))
    assert e.value.status == 415 and e.value.reason == "unsupported_encoding"


async def test_a_compressed_body_is_decompressed_in_a_worker_thread(monkeypatch):
    import threading

    import bridge.helpers

    threads = []
    real = bridge.helpers.inflate

    def spy(*args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(bridge.helpers, "inflate", spy)
    async for r in _receiving(LOOPBACK):
        req = ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(scope_metrics=[
            m.ScopeMetrics(metrics=[gauge("zipped", 1.0)])])])
        status, _, _ = await r.post(gzip.compress(req.SerializeToString()), headers={"Content-Encoding": "gzip"})
        assert status == 200
        assert "zipped{" in r.text()
        # a bomb is refused there too, naming the limit
        status, out, ctype = await r.post(gzip.compress(bytes(17 << 20)), headers={"Content-Encoding": "gzip"})
        assert status == 413 and "(receive.http.max_decompressed_bytes) of 16777216" in _status_message(out, ctype)
    assert threads and all(t is not threading.main_thread() for t in threads)


async def test_slow_and_idle_http_connections_are_closed_counted_and_logged(caplog):
    import asyncio

    config = {"http": {"listen": "127.0.0.1:0", "read_timeout": 0.5}}
    async for r in _receiving(config):
        host, port = r.receiver.http_bound or ("", 0)
        idle_reader, idle_writer = await asyncio.open_connection(host, port)  # sends nothing
        slow_reader, slow_writer = await asyncio.open_connection(host, port)  # headers, then no body
        slow_writer.write(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                          b"Content-Length: 100\r\n\r\n")
        await slow_writer.drain()
        assert await asyncio.wait_for(idle_reader.read(), 30) == b""  # closed by the receiver
        answer = await asyncio.wait_for(slow_reader.read(), 30)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"receive.http.read_timeout (0.5 s)" in answer
        for w in (idle_writer, slow_writer):
            w.close()
        # a well-behaved client is answered meanwhile and after
        assert (await r.export(ExportMetricsServiceRequest())).partial_success.rejected_data_points == 0
        assert r.receiver.requests[("http", "read_timeout")] == 2
        r.receiver.round()
        assert 'monbridge_otlp_receive_requests_total{result="read_timeout",transport="http"} 2' in r.text()
    assert "OTLP/http request refused (read_timeout)" in caplog.text

