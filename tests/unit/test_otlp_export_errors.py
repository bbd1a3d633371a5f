"""An OTLP export that fails says why in the words a reader looks for (connection refused, TLS,
the HTTP status), and the alert engine's SDK exporters report their failures once per state
change, without the SDK's retry warnings, against real servers on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from bridge.api import Metric, MetricKind
from integrations.otlp import OtlpIntegration, connection_cause
from tests.http_recorder import HttpRecorder
from tests.tls_cert import self_signed


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


async def push_reason(config: dict) -> str:
    plugin = OtlpIntegration()
    await plugin.initialize({"timeout": 1, **config})
    try:
        result = await plugin.export(_batch(Metric("t.value", MetricKind.GAUGE, 1.0)), 1.0)
    finally:
        await plugin.shutdown()
    assert not result.ok
    return result.reason


def _batch(metric: Metric):
    from bridge.pipeline import Pipeline

    p = Pipeline()
    p.record("test", [metric])
    return p.batch()


async def test_connection_refused_is_named_for_http_and_grpc():
    port = closed_port()
    reason = await push_reason({"endpoint": f"http://127.0.0.1:{port}/v1/metrics"})
    assert f"OTLP export to http://127.0.0.1:{port}/v1/metrics (http/protobuf) failed: connection refused (" in reason
    reason = await push_reason({"endpoint": f"http://127.0.0.1:{port}", "protocol": "grpc", "insecure": True})
    assert "failed: connection refused (gRPC UNAVAILABLE: " in reason, reason


async def _ok(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def test_tls_failure_is_named(tmp_path):
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/v1/metrics", _ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        reason = await push_reason({"endpoint": f"https://127.0.0.1:{port}/v1/metrics"})  # its CA not trusted
        assert "failed: TLS: certificate verify failed: self-signed certificate (" in reason, reason
        # Plain HTTP to the TLS port: the server's answer is no HTTP; the reason says what came back.
        reason = await push_reason({"endpoint": f"http://127.0.0.1:{port}/v1/metrics"})
        assert "failed: " in reason and "Traceback" not in reason
    finally:
        await runner.cleanup()


async def test_http_status_is_named():
    srv = HttpRecorder(lambda r: (401, {"error": "who are you"}, {}))
    try:
        reason = await push_reason({"endpoint": f"{srv.url}/v1/metrics"})
    finally:
        srv.stop()
    assert "failed: HTTP 401 Unauthorized: " in reason


def test_connection_cause_reads_wrapped_errors_and_texts():
    refused = ConnectionRefusedError(111, "Connection refused")
    wrapped = OSError("cannot connect")
    wrapped.__cause__ = refused
    assert connection_cause(wrapped) == "connection refused"
    assert connection_cause("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: "
                            "Failed to connect to remote host: Connection refused") == "connection refused"
    assert connection_cause(ValueError("something else")) == "ValueError: something else"


def _span():
    tracer = TracerProvider().get_tracer("test")
    span = tracer.start_span("alert")
    span.end()
    return span


async def test_sdk_exporters_fail_once_per_state_change_with_the_cause_and_no_retry_warnings(caplog):
    caplog.set_level(logging.DEBUG)
    srv = HttpRecorder(lambda r: (200, b"", {"Content-Type": "application/x-protobuf"}))
    srv.down = True  # 503 with a body: retried by the SDK until its timeout
    plugin = OtlpIntegration()
    # 3 s: the SDK retries the 503 once (its first backoff is 1 s) before it gives up
    await plugin.initialize({"endpoint": f"{srv.url}/v1/metrics", "timeout": 3})
    try:
        spans, logs = plugin.telemetry_exporters()
        for _ in range(2):
            assert (await asyncio.to_thread(spans.export, [_span()])).name == "FAILURE"
        srv.down = False
        assert (await asyncio.to_thread(spans.export, [_span()])).name == "SUCCESS"
        assert (await asyncio.to_thread(spans.export, [_span()])).name == "SUCCESS"
        spans.shutdown()
        logs.shutdown()
    finally:
        await plugin.shutdown()
        srv.stop()
    mine = [r.getMessage() for r in caplog.records if r.name == "monbridge.integrations.otlp" and "alert spans" in r.getMessage()]
    assert len(mine) == 2, mine
    assert mine[0].startswith(f"OTLP export of alert spans to {srv.url}/v1/metrics is failing: ")
    assert "Service Unavailable" in mine[0], mine[0]
    assert mine[1] == f"OTLP export of alert spans to {srv.url}/v1/metrics recovered"
    sdk = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
    assert sdk == [], sdk


async def test_sdk_exporter_names_a_refused_connection(caplog):
    caplog.set_level(logging.WARNING)
    port = closed_port()
    plugin = OtlpIntegration()
    await plugin.initialize({"endpoint": f"http://127.0.0.1:{port}/v1/metrics", "timeout": 1})
    try:
        spans, logs = plugin.telemetry_exporters()
        for _ in range(2):
            assert (await asyncio.to_thread(spans.export, [_span()])).name == "FAILURE"
        spans.shutdown()
        logs.shutdown()
    finally:
        await plugin.shutdown()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"OTLP export of alert spans to http://127.0.0.1:{port}/v1/metrics is failing: connection refused "
                     "(logged again when it recovers)"], lines
