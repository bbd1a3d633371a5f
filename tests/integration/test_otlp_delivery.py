"""How the OTLP push delivers: retries and Retry-After (HTTP) / RetryInfo (gRPC), permanent
failures not retried, partial success, requests split by size, TLS, and the OTEL_EXPORTER_OTLP_*
variables (endpoint, compression, temporality), against real HTTP (aiohttp) and gRPC (grpcio)
receivers on loopback."""

from __future__ import annotations

import ssl
import time
from concurrent import futures
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google.protobuf.duration_pb2 import Duration
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from bridge.api import ExportStatus, Metric, MetricKind, PluginError
from bridge.pipeline import Pipeline
from integrations.otlp import OtlpIntegration
from tests.otlp_view import attributes, metrics_of, points, without_otel_env
from tests.tls_cert import self_signed

pytestmark = pytest.mark.integration

TOKEN = "Bearer s3cr3t-t0ken-value"


clean_otel_env = pytest.fixture(autouse=True)(without_otel_env)


def pipeline(n: int = 3) -> Pipeline:
    p = Pipeline()
    p.record("c", [Metric("d.requests", MetricKind.COUNTER, 10 + i, "", "", {"i": str(i)}) for i in range(n)])
    return p


class HttpBackend:
    """An OTLP/HTTP receiver answering from a script of (status, headers, body); then 200."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]] | None = None) -> None:
        self.script = list(script or [])
        self.requests: list[tuple[float, dict[str, str], ExportMetricsServiceRequest]] = []
        self.ok_body = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self.handle)
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has already undone the Content-Encoding
        self.paths.append(request.path)
        self.requests.append((time.monotonic(), dict(request.headers), ExportMetricsServiceRequest.FromString(body)))
        if self.script:
            status, headers, answer = self.script.pop(0)
            return web.Response(status=status, headers=headers, body=answer)
        return web.Response(status=200, body=self.ok_body, content_type="application/x-protobuf")


async def serve(backend: HttpBackend, ssl_context: ssl.SSLContext | None = None) -> TestServer:
    server = TestServer(backend.app, host="127.0.0.1")
    await server.start_server(ssl=ssl_context)
    return server


async def plugin_for(config: dict[str, Any]) -> OtlpIntegration:
    plugin = OtlpIntegration()
    await plugin.initialize(config)
    return plugin


async def push_once(backend: HttpBackend, config: dict[str, Any]) -> tuple[Any, int]:
    """One push of ``pipeline()`` to ``backend`` (served for the push) with ``config``; the
    result and the port it listened on."""
    server = await serve(backend)
    port = server.port
    assert port is not None
    plugin = await plugin_for({"endpoint": f"http://127.0.0.1:{port}", **config})
    try:
        p = pipeline()
        return await plugin.push(p.families(), p.resource), port
    finally:
        await plugin.shutdown()
        await server.close()


async def test_http_retry_after_is_honoured_then_delivered():
    backend = HttpBackend([(429, {"Retry-After": "0.3"}, b"slow down"), (503, {}, b"busy")])
    result, _ = await push_once(backend, {"timeout": 10})
    assert result.ok, result.reason
    assert len(backend.requests) == 3
    assert backend.requests[1][0] - backend.requests[0][0] >= 0.3  # the Retry-After wait
    assert metrics_of([backend.requests[2][2]])["d.requests"].sum.data_points


async def test_http_retry_after_beyond_the_timeout_ends_the_retries(caplog):
    backend = HttpBackend([(503, {"Retry-After": "3600"}, b"come back later")])
    t0 = time.monotonic()
    result, port = await push_once(backend, {"timeout": 5, "headers": {"authorization": TOKEN}})
    assert time.monotonic() - t0 < 4
    assert result.status is ExportStatus.RETRYABLE and result.retry_after == 3600
    assert "HTTP 503" in result.reason and "come back later" in result.reason
    assert f"127.0.0.1:{port}/v1/metrics (http/protobuf)" in result.reason
    assert len(backend.requests) == 1
    assert "s3cr3t" not in result.reason and "s3cr3t" not in caplog.text


async def test_http_permanent_error_is_not_retried_and_says_why():
    status = status_pb2.Status(code=3, message="metric name d.requests is invalid").SerializeToString()
    backend = HttpBackend([(400, {"Content-Type": "application/x-protobuf"}, status)])
    server = await serve(backend)
    plugin = await plugin_for({"endpoint": f"http://127.0.0.1:{server.port}", "timeout": 5})
    try:
        p = pipeline()
        with pytest.raises(PluginError) as err:
            await plugin.export_families(p.families(), p.resource)
        result = await plugin.push(p.families(), p.resource)
    finally:
        await plugin.shutdown()
        await server.close()
    assert "HTTP 400" in str(err.value) and "metric name d.requests is invalid" in str(err.value)
    assert result.ok  # the script is spent: the next push is delivered
    assert len(backend.requests) == 2


async def test_partial_success_is_logged(caplog):
    partial = metrics_service_pb2.ExportMetricsServiceResponse(
        partial_success=metrics_service_pb2.ExportMetricsPartialSuccess(rejected_data_points=2,
                                                                         error_message="too old")).SerializeToString()
    backend = HttpBackend([(200, {"Content-Type": "application/x-protobuf"}, partial)])
    result, _ = await push_once(backend, {})
    assert result.ok
    assert "rejected 2 data points: too old" in caplog.text


class TwoPieceBackend(HttpBackend):
    """Answers 200 with ``answer`` sent in two pieces, a moment apart (as a proxy or a slow
    backend may): the exporter must read it to its end before it parses it."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer

    async def handle(self, request: web.Request) -> web.StreamResponse:  # type: ignore[override]
        import asyncio

        await request.read()
        r = web.StreamResponse(status=200, headers={"Content-Type": "application/x-protobuf"})
        r.content_length = len(self.answer)
        await r.prepare(request)
        half = len(self.answer) // 2
        await r.write(self.answer[:half])
        await asyncio.sleep(0.2)
        await r.write(self.answer[half:])
        await r.write_eof()
        return r


async def test_partial_success_sent_in_pieces_is_read_whole(caplog):
    message = "points older than the retention window: " + "x" * 200
    partial = metrics_service_pb2.ExportMetricsServiceResponse(
        partial_success=metrics_service_pb2.ExportMetricsPartialSuccess(rejected_data_points=300,
                                                                         error_message=message)).SerializeToString()
    result, _ = await push_once(TwoPieceBackend(partial), {})
    assert result.ok
    assert f"rejected 300 data points: {message[:100]}" in caplog.text


async def test_big_push_is_split_into_bounded_requests():
    backend = HttpBackend()
    server = await serve(backend)
    plugin = await plugin_for({"endpoint": f"http://127.0.0.1:{server.port}", "compression": "gzip"})
    assert plugin._encoder is not None
    plugin._encoder.max_request_bytes = 4096
    try:
        p = pipeline(500)
        result = await plugin.push(p.families(), p.resource)
    finally:
        await plugin.shutdown()
        await server.close()
    assert result.ok
    assert len(backend.requests) > 3
    assert all(r[2].ByteSize() <= 4096 for r in backend.requests)
    got = metrics_of([r[2] for r in backend.requests])
    assert sorted(attributes(pt.attributes)["i"] for pt in points(got["d.requests"])) == sorted(str(i) for i in range(500))


async def test_https_with_a_ca_file(tmp_path):
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    backend = HttpBackend()
    server = await serve(backend, ctx)
    plugin = await plugin_for({"endpoint": f"https://127.0.0.1:{server.port}", "tls": {"ca_file": str(cert)}})
    untrusting = await plugin_for({"endpoint": f"https://127.0.0.1:{server.port}", "timeout": 1})
    try:
        p = pipeline()
        assert (await plugin.push(p.families(), p.resource)).ok
        refused = await untrusting.push(p.families(), p.resource)
    finally:
        await plugin.shutdown()
        await untrusting.shutdown()
        await server.close()
    assert len(backend.requests) == 1
    assert not refused.ok and "certificate" in refused.reason.lower()


async def test_env_endpoint_compression_and_delta_temporality(monkeypatch):
    backend = HttpBackend()
    server = await serve(backend)
    # The signal's own endpoint is used as it is (no /v1/metrics appended).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"http://127.0.0.1:{server.port}/custom/path")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "DELTA")
    plugin = await plugin_for({})
    try:
        p = Pipeline()
        p.record("c", [Metric("d.requests", MetricKind.COUNTER, 10, "", "", {}, 2_000)], now_ns=1_000)
        assert (await plugin.push(p.families(), p.resource)).ok
        p.record("c", [Metric("d.requests", MetricKind.COUNTER, 14, "", "", {}, 3_000)], now_ns=1_000)
        assert (await plugin.push(p.families(), p.resource)).ok
    finally:
        await plugin.shutdown()
        await server.close()
    assert backend.paths == ["/custom/path", "/custom/path"]
    assert backend.requests[0][1]["Content-Encoding"] == "gzip"
    first, second = (metrics_of([r[2] for r in backend.requests[i:i + 1]])["d.requests"].sum for i in (0, 1))
    assert first.aggregation_temporality == second.aggregation_temporality == 1  # DELTA
    assert [(pt.start_time_unix_nano, pt.as_int) for pt in first.data_points] == [(1_000, 10)]
    assert [(pt.start_time_unix_nano, pt.time_unix_nano, pt.as_int) for pt in second.data_points] == [(2_000, 3_000, 4)]


# --------------------------------------------------------------------------- gRPC


class GrpcBackend(metrics_service_pb2_grpc.MetricsServiceServicer):
    """Answers from a script of (code, RetryInfo delay or None); then OK."""

    def __init__(self, script: list[tuple[grpc.StatusCode, float | None]]) -> None:
        self.script = list(script)
        self.calls: list[tuple[float, dict[str, str]]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - grpc's naming
        self.calls.append((time.monotonic(), {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}))
        if self.script:
            code, delay = self.script.pop(0)
            if delay is not None:
                info = RetryInfo(retry_delay=Duration(seconds=int(delay), nanos=int((delay % 1) * 1e9)))
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
            context.abort(code, "backend says no")
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.mark.parametrize(("script", "ok", "calls"), [
    ([(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.3)], True, 2),  # RetryInfo: retried after its delay
    ([(grpc.StatusCode.UNAVAILABLE, None)], True, 2),  # retryable: backoff
    ([(grpc.StatusCode.RESOURCE_EXHAUSTED, None)], False, 1),  # without RetryInfo: not retried (OTLP)
    ([(grpc.StatusCode.INVALID_ARGUMENT, None)], False, 1),
])
async def test_grpc_retries_per_otlp(script, ok, calls, caplog):
    backend = GrpcBackend(script)
    plugin = await plugin_for({"endpoint": f"http://127.0.0.1:{backend.port}", "protocol": "grpc", "timeout": 5,
                               "headers": {"authorization": TOKEN}})
    try:
        p = pipeline()
        result = await plugin.push(p.families(), p.resource)
    finally:
        await plugin.shutdown()
        backend.server.stop(0)
    assert result.ok is ok, result.reason
    assert len(backend.calls) == calls
    assert backend.calls[0][1]["authorization"] == TOKEN
    if calls == 2 and script[0][1] is not None:
        assert backend.calls[1][0] - backend.calls[0][0] >= 0.3
    if not ok:
        assert result.status is ExportStatus.PERMANENT and "backend says no" in result.reason
        assert f"127.0.0.1:{backend.port} (grpc)" in result.reason
    assert "s3cr3t" not in result.reason and "s3cr3t" not in caplog.text


async def test_a_redirect_is_not_followed_with_the_headers():
    elsewhere = HttpBackend()
    other = await serve(elsewhere)
    backend = HttpBackend([(307, {"Location": f"http://127.0.0.1:{other.port}/v1/metrics"}, b"")])
    try:
        result, _ = await push_once(backend, {"headers": {"authorization": TOKEN}})
    finally:
        await other.close()
    assert result.status is ExportStatus.PERMANENT and "HTTP 307" in result.reason
    assert elsewhere.requests == []


async def test_grpc_over_tls_with_a_ca_file(tmp_path):
    cert, key = self_signed(tmp_path)
    backend = GrpcBackend([])
    backend.server.stop(0)
    backend.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(backend, backend.server)
    port = backend.server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())]))
    backend.server.start()
    plugin = await plugin_for({"endpoint": f"https://127.0.0.1:{port}", "protocol": "grpc",
                               "tls": {"ca_file": str(cert)}, "compression": "gzip"})
    untrusting = await plugin_for({"endpoint": f"https://127.0.0.1:{port}", "protocol": "grpc", "timeout": 1})
    try:
        p = pipeline()
        result = await plugin.push(p.families(), p.resource)
        refused = await untrusting.push(p.families(), p.resource)
    finally:
        await plugin.shutdown()
        await untrusting.shutdown()
        backend.server.stop(0)
    assert result.ok, result.reason
    assert len(backend.calls) == 1  # the one without the CA never got through
    assert not refused.ok and f"127.0.0.1:{port} (grpc)" in refused.reason
