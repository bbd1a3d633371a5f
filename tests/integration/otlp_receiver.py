"""Real OTLP metric receivers for the integration tests, built on ``opentelemetry-proto``.

* ``HttpReceiver``: an HTTP server (``http.server`` in a thread) taking ``POST /v1/metrics``
  with ``application/x-protobuf`` bodies (gunzipped when ``Content-Encoding: gzip``), decoding
  each as an ``ExportMetricsServiceRequest`` and recording it with the request's headers.
  ``status`` makes it answer with another status (503, say) to test failures.
  ``POST /v1/traces`` and ``/v1/logs`` are decoded too; their spans and log records collect in
  ``spans`` and ``log_records`` (``wait_for_signal``).
* ``GrpcReceiver``: a gRPC server (grpcio) implementing ``MetricsService/Export``, recording
  each request with its invocation metadata.

Both listen on 127.0.0.1 only, on a free port chosen by the OS. The fixtures
``otlp_http_receiver`` and ``otlp_grpc_receiver`` start one each and stop it when the test ends;
import them into a test module to use them.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.otlp_view import attributes, value_of

__all__ = [
    "GrpcReceiver",
    "HttpReceiver",
    "Received",
    "attributes",
    "metrics_by_name",
    "otlp_grpc_receiver",
    "otlp_http_receiver",
    "value_of",
]


@dataclass
class Received:
    """One export request as the receiver saw it. ``headers`` have lower-case names."""

    request: ExportMetricsServiceRequest
    headers: dict[str, str]
    content_encoding: str | None = None
    path: str = ""

    def metric_names(self) -> set[str]:
        return set(metrics_by_name(self.request))


@dataclass
class _Base:
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cond: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._cond = threading.Condition(self._lock)

    def _record(self, r: Received) -> None:
        with self._cond:
            self.received.append(r)
            self._cond.notify_all()

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def wait_for(self, predicate: Callable[[Received], bool] = lambda r: True, timeout: float = 15.0,
                 after: int = 0) -> Received:
        """The first request (from index ``after`` on) for which ``predicate`` holds; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.received[after:]:
                    if predicate(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({n for r in self.received for n in r.metric_names()})
                    pytest.fail(f"no matching OTLP request within {timeout:.0f} s; {len(self.received)} received "
                                f"(metrics: {names[:40]}); receiver errors: {self.errors}", pytrace=False)
                self._cond.wait(min(left, 0.2))

    def wait_for_metric(self, name: str, timeout: float = 15.0, after: int = 0) -> Received:
        return self.wait_for(lambda r: name in r.metric_names(), timeout, after)


class HttpReceiver(_Base):
    """OTLP/HTTP (protobuf) on ``http://127.0.0.1:<port>``; ``.endpoint`` is the base URL."""

    def __init__(self) -> None:
        super().__init__()
        self.status = 200  # what POST /v1/metrics answers
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def _reply(self, status: int, body: bytes = b"", ctype: str = "application/x-protobuf") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path in _SIGNALS:
                    receiver._signal(self, body)
                    return
                if self.path != "/v1/metrics":
                    receiver.errors.append(f"POST {self.path}")
                    self._reply(404, b"not found", "text/plain")
                    return
                if receiver.status != 200:
                    self._reply(receiver.status, b"unavailable", "text/plain")
                    return
                ctype = self.headers.get("Content-Type", "")
                if ctype.split(";")[0].strip() != "application/x-protobuf":
                    receiver.errors.append(f"content-type {ctype!r}")
                    self._reply(415, b"expected application/x-protobuf", "text/plain")
                    return
                encoding = self.headers.get("Content-Encoding")
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    elif encoding not in (None, "", "identity"):
                        raise ValueError(f"unsupported Content-Encoding {encoding!r}")
                    request = ExportMetricsServiceRequest.FromString(body)
                except Exception as e:  # noqa: BLE001 - recorded for the test's failure message
                    receiver.errors.append(f"bad request: {type(e).__name__}: {e}")
                    self._reply(400, str(e).encode(), "text/plain")
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(Received(request, headers, encoding, self.path))
                self._reply(200, metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-http-receiver", daemon=True)
        self.spans: list[Any] = []
        self.log_records: list[Any] = []

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    # Traces and logs (``POST /v1/traces``, ``/v1/logs``): decoded requests in ``spans``/``log_records``.

    def _signal(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        request_type, response_type, out = _SIGNALS[handler.path]
        if handler.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = request_type.FromString(body)
        with self._cond:
            if handler.path == "/v1/traces":
                self.spans.extend(s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
            else:
                self.log_records.extend(r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records)
            self._cond.notify_all()
        data = response_type().SerializeToString()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/x-protobuf")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def wait_for_signal(self, what: str, predicate: Callable[[Any], bool], timeout: float = 15.0) -> list[Any]:
        """Every received span (``what="spans"``) or log record (``"log_records"``) matching ``predicate``,
        once there is at least one; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [x for x in getattr(self, what) if predicate(x)]
                if hits:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no matching {what} within {timeout:.0f} s; {len(getattr(self, what))} received",
                                pytrace=False)
                self._cond.wait(min(left, 0.2))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class GrpcReceiver(_Base):
    """OTLP/gRPC on ``127.0.0.1:<port>`` (plaintext); ``.endpoint`` is ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        super().__init__()
        self.status: grpc.StatusCode | None = None  # set to answer every Export with this error
        receiver = self

        class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: ExportMetricsServiceRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
                if receiver.status is not None:
                    context.abort(receiver.status, "receiver told to fail")
                headers = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
                receiver._record(Received(request, headers, headers.get("grpc-encoding"), "Export"))
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> GrpcReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1).wait(5)


_SIGNALS: dict[str, tuple[Any, Any, str]] = {
    "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse, "spans"),
    "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse, "log_records"),
}


@pytest.fixture
def otlp_http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def otlp_grpc_receiver() -> Iterator[GrpcReceiver]:
    receiver = GrpcReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


# ---------------------------------------------------------------------------- reading requests


def metrics_by_name(request: ExportMetricsServiceRequest) -> dict[str, Any]:
    """Every metric of ``request`` by name (the protobuf ``Metric`` messages)."""
    out: dict[str, Any] = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m
    return out
