"""OTLP receive: metrics pushed by OpenTelemetry SDKs and Collectors, over OTLP/gRPC and OTLP/HTTP.

The OTLP integration's ``receive`` block (``integrations/otlp.py``) starts these receivers::

    receive:
      grpc: {listen: "127.0.0.1:4317"}          # OTLP/gRPC, MetricsService/Export
      http: {listen: "127.0.0.1:4318"}          # OTLP/HTTP, POST /v1/metrics, protobuf or JSON; gzip, deflate or zstd
      # each may have tls: {cert_file, key_file} and auth: {bearer_token | basic: {username, password}},
      # as the server block has, max_decompressed_bytes (16 MiB) and read_timeout (30 s); http
      # also max_request_bytes, the body as sent (4 MiB)
      expire_after: 300                         # seconds a series stays after its last push
      max_data_points: 100000                   # per request
      max_series: 200000                        # held at once, from every client
      max_metrics: 10000                        # metric names ever created (a name, once made, stays)
      max_attributes: 128                       # per data point
      max_attribute_length: 4096                # characters of one attribute value
      promote_resource_attributes: [k8s.namespace.name]   # resource attributes kept as labels

Received data enters the pipeline as it came (``bridge.api.MetricIngest``: merged, not replacing
what the client sent before): gauges, sums, histograms, exponential histograms and summaries.
Exponential histograms are exposed on ``/metrics`` as explicit-bucket histograms at their own
boundaries, and remote-written that way or as native histograms (``send_native_histograms``).
Delta sums and histograms become cumulative (the running total per series is the pipeline's
series value); a delta that does not continue its total is rejected. Resource attributes
follow the OpenTelemetry → Prometheus compatibility rules: ``job`` is ``service.namespace/
service.name`` (or ``service.name``), ``instance`` is ``service.instance.id``, the scope's name
and version are ``otel_scope_name`` / ``otel_scope_version``, and every other resource
attribute goes to a ``target_info`` series with that ``job`` and ``instance`` (those listed in
``promote_resource_attributes`` become labels of every series too). Names are OTel names,
exposed on ``/metrics`` as Prometheus names with unit suffixes and ``_total``.

Bounds, all answered with what was wrong: the request as sent (``max_request_bytes``: HTTP 413)
and decompressed (``max_decompressed_bytes``: HTTP 413, gRPC RESOURCE_EXHAUSTED; gRPC bounds the
message decompressed, as it decompresses), data points per request (413 / RESOURCE_EXHAUSTED), an unknown
content type or encoding (415), a body that is no OTLP message (400 / INVALID_ARGUMENT), a
request from a web page (an ``Origin`` header: 403; no CORS is served, so a page that reached
the port under its own name, DNS rebinding, cannot push).
A connection gets ``read_timeout`` to send a request (over HTTP: its headers, then its body)
after it connects or was answered, else it is closed (HTTP 408 for a slow body; a connection
that never sent a request counts as refused, ``read_timeout``): slowloris and idle connections
hold no socket for long. HTTP bodies are read as sent and decompressed, within
``max_decompressed_bytes``, in the worker thread that decodes them: a bomb is no work for the
event loop. Decoding runs in a worker thread, at most ``DECODE_SLOTS`` at once. Points refused one by one
(a bad value, too many or too long attributes, an invalid name, the pipeline's cardinality
limit, ``max_series``, ``max_metrics``, a delta out of order) are answered as OTLP's partial success (``rejected_data_points``
and an ``error_message`` naming the metric and the reason), counted in
``monbridge_otlp_receive_points_total{result="rejected", reason}`` and logged at most once a
minute per reason; refused requests in ``monbridge_otlp_receive_requests_total``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.api import (
    AttributeValue,
    ExponentialHistogramValue,
    HistogramValue,
    IngestResult,
    Metric,
    MetricIngest,
    MetricKind,
    PluginError,
    SummaryValue,
)
from bridge.helpers import HttpListener, LogLimit, parse_listen
from bridge.ledger import loss_counter
from bridge.otel import MAX_BUCKETS
from integrations.otlp_config import GrpcReceiveConfig, HttpReceiveConfig, OtlpReceiveConfig

__all__ = [
    "Converted",
    "OtlpReceiveConfig",
    "OtlpReceiver",
    "ReceiveLimits",
    "RequestError",
    "convert_request",
    "decode_request",
]

log = logging.getLogger("monbridge.integrations.otlp.receive")

METRICS_PATH = "/v1/metrics"
GRPC_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
#: Requests decoded at once (each in a worker thread); more wait their turn.
DECODE_SLOTS = 4
#: OTLP/HTTP requests read or decoded at once (each holds its body in memory); one more is
#: answered 503 with Retry-After, which OTLP clients retry. gRPC bounds its calls the same way.
IN_FLIGHT = 4 * DECODE_SLOTS
_LOG_EVERY_S = 60.0
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
# OTLP's AggregationTemporality values.
_DELTA, _CUMULATIVE = 1, 2
_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE


@dataclass(frozen=True)
class ReceiveLimits:
    max_data_points: int = 100_000
    max_attributes: int = 128
    max_attribute_length: int = 4096
    promote: tuple[str, ...] = ()

    @classmethod
    def of(cls, cfg: OtlpReceiveConfig) -> ReceiveLimits:
        return cls(cfg.max_data_points, cfg.max_attributes, cfg.max_attribute_length,
                   tuple(cfg.promote_resource_attributes))


# ---------------------------------------------------------------------------- decoding


class RequestError(ValueError):
    """A request refused whole: ``status`` (400, 413, 415), ``reason`` (for counting), ``message``."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message[:500]


def decode_request(body: bytes, fmt: Literal["protobuf", "json"], max_depth: int = 64) -> Any:
    """An ``ExportMetricsServiceRequest`` from a body (OTLP protobuf, or OTLP JSON: lowerCamelCase
    or snake_case keys, hex trace and span ids, 64-bit integers as strings); RequestError if it is none."""
    from google.protobuf import json_format  # type: ignore[import-untyped]
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    req = ExportMetricsServiceRequest()
    if fmt == "protobuf":
        try:
            req.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as e:
            raise RequestError(400, "bad_protobuf", f"body: not an OTLP ExportMetricsServiceRequest: {e}") from None
        return req
    from bridge.helpers import BodyError, parse_json

    try:
        doc = parse_json(body, max_depth, where="body")
    except BodyError as e:
        raise RequestError(400, e.reason, e.message) from None
    _hex_ids_to_base64(doc)
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True, max_recursion_depth=max_depth)
    except (json_format.ParseError, RecursionError, ValueError, TypeError, AttributeError) as e:
        raise RequestError(400, "bad_json", f"body: not an OTLP ExportMetricsServiceRequest in JSON: "
                                            f"{str(e)[:300]}") from None
    return req


def _hex_ids_to_base64(doc: Any) -> None:
    """OTLP JSON writes exemplars' trace and span ids in hex; protobuf's JSON mapping expects base64."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in ("traceId", "spanId", "trace_id", "span_id"):
                v = node.get(key)
                if isinstance(v, str):
                    try:
                        node[key] = base64.b64encode(bytes.fromhex(v)).decode()
                    except ValueError:
                        node[key] = ""  # not hex: the id is dropped (exemplars are not kept anyway)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))


# ---------------------------------------------------------------------------- conversion


@dataclass
class Converted:
    """A request's points as Metrics: cumulative (and gauges) and delta ones, and those refused."""

    cumulative: list[Metric] = field(default_factory=list)
    delta: list[Metric] = field(default_factory=list)
    #: One ``target_info`` series per resource (not the client's data points).
    info: list[Metric] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=lambda: loss_counter("otlp_receive"))
    why: dict[str, str] = field(default_factory=dict)
    points: int = 0

    def reject(self, reason: str, name: str, text: str) -> None:
        self.rejected[reason] += 1
        self.why.setdefault(reason, f"{name[:100]}: {text}")


def count_points(req: Any) -> int:
    n = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                data = m.WhichOneof("data")
                if data is not None:
                    n += len(getattr(m, data).data_points)
    return n


def _any_value(v: Any, depth: int = 0) -> Any:
    """An OTLP AnyValue as plain data (JSON-like)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(x, depth + 1) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def _attribute(v: Any) -> AttributeValue:
    """An attribute value as the pipeline keeps it: str, bool, int or float as they are; arrays and
    maps as JSON text, bytes as base64 (the attribute specification's string forms)."""
    plain = _any_value(v)
    if plain is None:
        return ""
    if isinstance(plain, (str, bool, int, float)):
        return plain
    return json.dumps(plain, separators=(",", ":"), ensure_ascii=False)


class _Attrs(Exception):
    pass


_SCALARS = frozenset(("string_value", "int_value", "double_value", "bool_value"))


def _attributes(kvs: Iterable[Any], limits: ReceiveLimits, into: dict[str, AttributeValue]) -> None:
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        # Scalars (nearly every attribute) read directly; the rest through _attribute.
        value = getattr(v, which) if which in _SCALARS else _attribute(v)
        if value.__class__ is str and len(value) > limits.max_attribute_length:
            raise _Attrs(f"attribute {kv.key[:60]!r} is {len(value)} characters long, more than "
                         f"receive.max_attribute_length ({limits.max_attribute_length})")
        if len(kv.key) > limits.max_attribute_length:
            raise _Attrs(f"an attribute name is {len(kv.key)} characters long, more than "
                         f"receive.max_attribute_length ({limits.max_attribute_length})")
        into[kv.key] = value
        if len(into) > limits.max_attributes:
            raise _Attrs(f"more than receive.max_attributes ({limits.max_attributes}) attributes")


def _resource_labels(resource: Any, limits: ReceiveLimits) -> tuple[dict[str, AttributeValue], dict[str, AttributeValue]]:
    """(labels every series of the resource gets: job, instance, promoted attributes; the
    ``target_info`` series' labels: job, instance and every other attribute)."""
    attrs: dict[str, AttributeValue] = {}
    _attributes(resource.attributes, limits, attrs)
    name = str(attrs.pop("service.name", "") or "")
    namespace = str(attrs.pop("service.namespace", "") or "")
    instance = str(attrs.pop("service.instance.id", "") or "")
    ident: dict[str, AttributeValue] = {}
    if name:
        ident["job"] = f"{namespace}/{name}" if namespace else name
    if instance:
        ident["instance"] = instance
    labels = dict(ident)
    for key in limits.promote:
        if key in attrs:
            labels[key] = attrs[key]
    info = {**attrs, **ident} if attrs and ident else {}
    return labels, info


def _histogram(p: Any) -> HistogramValue:
    bounds = tuple(p.explicit_bounds)
    counts = tuple(p.bucket_counts) or (p.count,)
    if not all(math.isfinite(b) for b in bounds):
        raise ValueError("explicit_bounds must be finite numbers")
    return HistogramValue(bounds, counts, p.sum if p.HasField("sum") else math.nan, p.count,
                          p.min if p.HasField("min") else None, p.max if p.HasField("max") else None)


def _exponential(p: Any) -> ExponentialHistogramValue:
    pos, neg = tuple(p.positive.bucket_counts), tuple(p.negative.bucket_counts)
    if len(pos) > MAX_BUCKETS or len(neg) > MAX_BUCKETS:
        raise ValueError(f"more than {MAX_BUCKETS} buckets")
    if not (math.isfinite(p.zero_threshold) and p.zero_threshold >= 0):
        raise ValueError("zero_threshold must be a finite number >= 0")
    return ExponentialHistogramValue(
        scale=p.scale, zero_count=p.zero_count, positive_offset=p.positive.offset, positive_counts=pos,
        negative_offset=p.negative.offset, negative_counts=neg, count=p.count,
        sum=p.sum if p.HasField("sum") else None, zero_threshold=p.zero_threshold,
        min=p.min if p.HasField("min") else None, max=p.max if p.HasField("max") else None)


def _summary(p: Any) -> SummaryValue:
    qs = tuple((q.quantile, q.value) for q in p.quantile_values)
    if any(not 0.0 <= q <= 1.0 for q, _ in qs):
        raise ValueError("a quantile outside [0, 1]")
    return SummaryValue(qs, p.sum, p.count)


def convert_request(req: Any, limits: ReceiveLimits) -> Converted:
    """A decoded request's points as Metrics (see the module docstring); RequestError when it has
    more than ``limits.max_data_points`` points."""
    out = Converted()
    out.points = count_points(req)
    if out.points > limits.max_data_points:
        raise RequestError(413, "too_many_points", f"request has {out.points} data points, more than "
                                                   f"receive.max_data_points ({limits.max_data_points})")
    for rm in req.resource_metrics:
        try:
            base, info = _resource_labels(rm.resource, limits)
        except _Attrs as e:
            n = sum(len(getattr(m, m.WhichOneof("data")).data_points)
                    for sm in rm.scope_metrics for m in sm.metrics if m.WhichOneof("data"))
            out.rejected["invalid_attribute"] += n
            out.why.setdefault("invalid_attribute", f"resource: {e}")
            continue
        if info:
            out.info.append(Metric("target_info", MetricKind.GAUGE, 1, "", "Target metadata", info))
        for sm in rm.scope_metrics:
            scope = dict(base)
            if sm.scope.name:
                scope["otel_scope_name"] = sm.scope.name[:limits.max_attribute_length]
            if sm.scope.version:
                scope["otel_scope_version"] = sm.scope.version[:limits.max_attribute_length]
            for m in sm.metrics:
                _convert_metric(m, scope, limits, out)
    return out


def _convert_metric(m: Any, scope: Mapping[str, AttributeValue], limits: ReceiveLimits, out: Converted) -> None:
    name, unit, desc = m.name, m.unit, m.description
    data = m.WhichOneof("data")
    if data is None:
        out.reject("invalid_value", name, "a metric without data")
        return
    d = getattr(m, data)
    kind: MetricKind
    delta = False
    if data == "gauge":
        kind = MetricKind.GAUGE
    elif data == "sum":
        kind = MetricKind.COUNTER if d.is_monotonic else MetricKind.UP_DOWN_COUNTER
        delta = d.aggregation_temporality == _DELTA
        if d.aggregation_temporality not in (_DELTA, _CUMULATIVE) or (delta and not d.is_monotonic):
            for _ in d.data_points:
                out.reject("unsupported", name, "a sum must be cumulative, or delta and monotonic")
            return
    elif data == "summary":
        kind = MetricKind.SUMMARY
    else:
        kind = MetricKind.HISTOGRAM if data == "histogram" else MetricKind.EXPONENTIAL_HISTOGRAM
        delta = d.aggregation_temporality == _DELTA
        if d.aggregation_temporality not in (_DELTA, _CUMULATIVE):
            for _ in d.data_points:
                out.reject("unsupported", name, "a histogram's temporality must be cumulative or delta")
            return
    into = out.delta if delta else out.cumulative
    append = into.append
    number = kind is MetricKind.GAUGE or data == "sum"
    counter = kind is MetricKind.COUNTER
    gauge = kind is MetricKind.GAUGE
    for p in d.data_points:
        if p.flags & _NO_RECORDED_VALUE:
            continue  # no value this time: the series ages out if it never gets one again
        value: Any
        try:
            if number:
                which = p.WhichOneof("value")
                if which is None:
                    raise ValueError("a number data point without a value")
                value = getattr(p, which)
                if counter and value < 0:
                    raise ValueError(f"a monotonic sum's value {value} is negative")
            elif kind is MetricKind.HISTOGRAM:
                value = _histogram(p)
            elif kind is MetricKind.EXPONENTIAL_HISTOGRAM:
                value = _exponential(p)
            else:
                value = _summary(p)
        except ValueError as e:
            out.reject("invalid_value", name, str(e)[:200])
            continue
        attrs: dict[str, AttributeValue] = {}
        try:
            _attributes(p.attributes, limits, attrs)
        except _Attrs as e:
            out.reject("invalid_attribute", name, str(e))
            continue
        attrs.update(scope)
        append(Metric(name, kind, value, unit, desc, attrs, p.time_unix_nano or None,
                      None if gauge else p.start_time_unix_nano or None))


# ---------------------------------------------------------------------------- the receivers


class OtlpReceiver:
    """The gRPC and HTTP receivers of one ``receive`` config, feeding ``ingest``."""

    def __init__(self, config: OtlpReceiveConfig, ingest: MetricIngest) -> None:
        self.config = config
        self.ingest = ingest
        ingest.expire_after = config.expire_after
        ingest.max_series = config.max_series
        ingest.max_families = config.max_metrics
        self.limits = ReceiveLimits.of(config)
        self.requests: Counter[tuple[str, str]] = Counter()  # (transport, result or refusal reason)
        self.points: Counter[tuple[str, str]] = Counter()  # (result, reason)
        self._logged = LogLimit(_LOG_EVERY_S)
        self._slots: asyncio.Semaphore | None = None
        self._in_flight = 0
        self._http: HttpListener | None = None
        self._grpc: Any = None
        self.http_bound: tuple[str, int] | None = None
        self.grpc_bound: tuple[str, int] | None = None

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind and start the configured receivers; PluginError naming the config path on failure."""
        self._slots = asyncio.Semaphore(DECODE_SLOTS)
        try:
            if self.config.http is not None:
                await self._start_http(self.config.http)
            if self.config.grpc is not None:
                await self._start_grpc(self.config.grpc)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._grpc is not None:
            server, self._grpc = self._grpc, None
            await server.stop(1.0)
        if self._http is not None:
            http, self._http = self._http, None
            await http.stop()

    def round(self) -> None:
        """The integration's scheduled round: expire what stopped arriving, refresh the self-metrics."""
        self.ingest.expire()
        self._push_self_metrics()

    def _push_self_metrics(self) -> None:
        """The self-metrics, pushed beside the clients' series: never refused by the clients'
        ``max_series`` and ``max_metrics`` (a full receiver still says what it refused), nor
        counted in them (the clients get every slot the config gives them)."""
        own = self.self_metrics()
        ingest, cfg = self.ingest, self.config
        ingest.max_series = ingest.max_families = None
        try:
            ingest.push(own)
        finally:
            ingest.max_series = cfg.max_series + len(own)  # (each self-metric is one series)
            ingest.max_families = cfg.max_metrics + len({m.name for m in own})

    def self_metrics(self) -> list[Metric]:
        C = MetricKind.COUNTER
        out = [Metric("monbridge.otlp.receive.requests", C, n, "", "OTLP export requests received, by "
                      "transport and result (ok, or why it was refused)", {"transport": t, "result": r})
               for (t, r), n in sorted(self.requests.items())]
        out += [Metric("monbridge.otlp.receive.points", C, n, "", "OTLP data points received, by result "
                       "(accepted, rejected) and the reason of a rejection", {"result": r, "reason": why})
                for (r, why), n in sorted(self.points.items())]
        return out

    # -------------------------------------------------------------- one request

    def _refused(self, transport: str, reason: str, message: str) -> None:
        self.requests[(transport, reason)] += 1
        if self._logged.due(f"request:{transport}:{reason}"):
            log.warning("OTLP/%s request refused (%s): %s; counted in monbridge_otlp_receive_requests_total, "
                        "further refusals for this reason are logged at most once a minute", transport, reason, message)

    def _decode(self, body: bytes, fmt: Literal["protobuf", "json"], coding: str) -> Converted:
        if coding:
            from bridge.helpers import BodyError, BodyLimits, inflate

            assert self.config.http is not None  # (gRPC decompresses in grpcio, within its bound)
            limit = self.config.http.max_decompressed_bytes
            try:
                body = inflate(body, coding, BodyLimits(max_bytes=limit))
            except BodyError as e:
                raise RequestError(e.status, e.reason, e.message.replace(
                    "the limit of", "the limit (receive.http.max_decompressed_bytes) of")) from None
        return convert_request(decode_request(body, fmt), self.limits)

    async def _receive(self, transport: str, body: bytes, fmt: Literal["protobuf", "json"],
                       coding: str = "") -> IngestResult:
        """Decompress and decode (in a worker thread), then ingest one request; RequestError when
        refused whole."""
        assert self._slots is not None
        async with self._slots:
            try:
                conv = await asyncio.to_thread(self._decode, body, fmt, coding)
            except RequestError as e:
                self._refused(transport, e.reason, e.message)
                raise
        if conv.info:
            self.ingest.push(conv.info)  # what it refuses the pipeline counts and logs
        ingested = [self.ingest.push(conv.cumulative)] if conv.cumulative else []
        if conv.delta:
            ingested.append(self.ingest.push(conv.delta, delta=True))
        rejected = Counter(conv.rejected)
        messages = [f"{n} rejected ({r}): {conv.why[r]}" for r, n in sorted(conv.rejected.items())]
        accepted = 0
        for res in ingested:
            accepted += res.accepted
            rejected.update(res.rejected)
            if res.message:
                messages.append(res.message)
        self.requests[(transport, "ok")] += 1
        self.points[("accepted", "")] += accepted
        for reason, n in rejected.items():
            self.points[("rejected", reason)] += n
            if self._logged.due(f"points:{reason}"):
                log.warning("OTLP/%s: %d data points rejected (%s): %s; counted in "
                            "monbridge_otlp_receive_points_total{result=\"rejected\"}, logged at most once a "
                            "minute per reason", transport, n, reason, "; ".join(messages)[:500])
        self._push_self_metrics()
        return IngestResult(accepted, dict(rejected), "; ".join(messages)[:1000])

    @staticmethod
    def _response(result: IngestResult) -> Any:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

        resp = ExportMetricsServiceResponse()
        if result.rejected_total:
            resp.partial_success.rejected_data_points = result.rejected_total
            resp.partial_success.error_message = result.message
        return resp

    # -------------------------------------------------------------- HTTP

    async def _start_http(self, cfg: HttpReceiveConfig) -> None:
        from aiohttp import web

        from bridge.helpers import tls_context

        try:
            ssl_ctx = tls_context(cfg.tls, "receive.http.tls")
        except OSError as e:
            raise PluginError(str(e)) from None
        # aiohttp's own body limit sits above ours, so ours answers (with the limit's name). Bodies
        # are read as sent and decompressed in a worker thread (a bomb is no work for the loop).
        app = web.Application(client_max_size=cfg.max_decompressed_bytes + 1)
        # A connection that sends no request within read_timeout (slowloris, idle) is closed; one
        # that never sent a request counts as refused (read_timeout).
        self._http = HttpListener(cfg.read_timeout, lambda: self._refused(
            "http", "read_timeout", f"a connection sent no complete request within receive.http.read_timeout "
                                    f"({cfg.read_timeout:g} s)"))
        app.router.add_post(METRICS_PATH, self._http.guard.handler(self._http_answer))
        try:
            self.http_bound = await self._http.start(app, cfg.listen, ssl_ctx)
        except OSError as e:
            raise PluginError(f"receive.http.listen: cannot listen on {cfg.listen}: {e.strerror or e}") from None
        log.info("OTLP/HTTP receiver on %s://%s:%s%s", "https" if ssl_ctx else "http", *self.http_bound, METRICS_PATH)

    async def _http_answer(self, request: Any) -> Any:
        from aiohttp import web

        from bridge.helpers import auth_challenge, authorized

        cfg = self.config.http
        assert cfg is not None
        if cfg.auth is not None and not authorized(cfg.auth, request.headers.get("Authorization", "")):
            self._refused("http", "unauthenticated", "no valid credentials (receive.http.auth)")
            return web.Response(status=401, text="unauthorized\n",
                                headers={"WWW-Authenticate": auth_challenge(cfg.auth)})
        origin = request.headers.get("Origin")
        if origin is not None:
            # OTLP clients (SDKs, Collectors) send no Origin; a web page does, and one that reached
            # this port under its own name (DNS rebinding) must not push metrics. No CORS is served.
            message = f"a request from a web page (Origin {origin[:100]!r}) is refused"
            self._refused("http", "origin", message)
            return self._http_error(403, message, "json")
        if self._in_flight >= IN_FLIGHT:
            message = f"{IN_FLIGHT} requests are being received already; retry later"
            self._refused("http", "busy", message)
            resp = self._http_error(503, message, "json", close=True)
            resp.headers["Retry-After"] = "1"
            return resp
        self._in_flight += 1
        try:
            return await self._http_receive(request, cfg)
        finally:
            self._in_flight -= 1

    async def _http_receive(self, request: Any, cfg: HttpReceiveConfig) -> Any:
        from aiohttp import web

        from bridge.helpers import BodyError, BodyLimits, receive_body

        mime = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        fmt: Literal["protobuf", "json"]
        if mime == _PROTOBUF:
            fmt = "protobuf"
        elif mime == _JSON:
            fmt = "json"
        else:
            message = (f"Content-Type {mime[:60] or 'absent'!r} is not an OTLP one: expected {_PROTOBUF} "
                       f"or {_JSON}")
            self._refused("http", "unsupported_media_type", message)
            return self._http_error(415, message, "json", close=True)
        try:
            body = await receive_body(request, BodyLimits(max_bytes=cfg.max_decompressed_bytes,
                                                          max_wire_bytes=cfg.max_request_bytes),
                                      cfg.read_timeout, "receive.http")
        except BodyError as e:
            # (a 400 for a client gone is not sent: the connection is gone)
            self._refused("http", e.reason, e.message)
            return self._http_error(e.status, e.message, fmt, close=e.unread)
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        try:
            result = await self._receive("http", body, fmt, "" if coding == "identity" else coding)
        except RequestError as e:
            return self._http_error(e.status, e.message, fmt)
        resp = self._response(result)
        if fmt == "json":
            from google.protobuf import json_format

            return web.Response(body=json_format.MessageToJson(resp, indent=None).encode(), content_type=_JSON)
        return web.Response(body=resp.SerializeToString(), content_type=_PROTOBUF)

    @staticmethod
    def _http_error(status: int, message: str, fmt: str, close: bool = False) -> Any:
        """An OTLP/HTTP error: a ``google.rpc.Status`` in the request's encoding."""
        from aiohttp import web
        from google.rpc import status_pb2  # type: ignore[import-untyped]

        # INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE, else UNKNOWN
        code = {400: 3, 403: 7, 408: 4, 413: 8, 415: 3, 503: 14}.get(status, 2)
        st = status_pb2.Status(code=code, message=message)
        if fmt == "json":
            from google.protobuf import json_format

            resp = web.Response(status=status, body=json_format.MessageToJson(st, indent=None).encode(),
                                content_type=_JSON)
        else:
            resp = web.Response(status=status, body=st.SerializeToString(), content_type=_PROTOBUF)
        if close:
            resp.force_close()
        return resp

    # -------------------------------------------------------------- gRPC

    async def _start_grpc(self, cfg: GrpcReceiveConfig) -> None:
        import grpc  # type: ignore[import-untyped]

        ms = int(cfg.read_timeout * 1000)
        options = [("grpc.max_receive_message_length", cfg.max_decompressed_bytes),
                   ("grpc.max_send_message_length", 1 << 20),
                   # a connection that does not finish HTTP/2's handshake (slowloris), or holds no
                   # call for that long (idle), is closed
                   ("grpc.server_handshake_timeout_ms", ms),
                   ("grpc.max_connection_idle_ms", ms),
                   ("grpc.so_reuseport", 0)]  # a port another server holds is an error, not shared
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=IN_FLIGHT)
        handler = grpc.method_handlers_generic_handler(GRPC_SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(self._grpc_export),  # raw bytes in and out
        })
        server.add_generic_rpc_handlers((handler,))
        host, port = parse_listen(cfg.listen)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if cfg.tls is not None:
                try:
                    key, cert = cfg.tls.key_file.read_bytes(), cfg.tls.cert_file.read_bytes()
                except OSError as e:
                    raise PluginError(f"receive.grpc.tls: cannot read {e.filename}: {e.strerror}") from None
                bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError as e:
            bound = 0
            why = str(e)
        else:
            why = "address in use or not available"
        if not bound:
            await server.stop(None)
            raise PluginError(f"receive.grpc.listen: cannot listen on {cfg.listen}: {why}")
        await server.start()
        self._grpc = server
        self.grpc_bound = (host, bound)
        log.info("OTLP/gRPC receiver on %s:%s%s", host, bound, " (TLS)" if cfg.tls is not None else "")

    async def _grpc_export(self, body: bytes, context: Any) -> bytes:
        import grpc

        from bridge.helpers import authorized

        cfg = self.config.grpc
        assert cfg is not None
        if cfg.auth is not None:
            header = ""
            for k, v in context.invocation_metadata() or ():
                if k == "authorization":
                    header = v if isinstance(v, str) else ""
            if not authorized(cfg.auth, header):
                self._refused("grpc", "unauthenticated", "no valid credentials (receive.grpc.auth)")
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no valid credentials (receive.grpc.auth)")
        try:
            result = await self._receive("grpc", body, "protobuf")
        except RequestError as e:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if e.status == 413 else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, e.message)
        return bytes(self._response(result).SerializeToString())
