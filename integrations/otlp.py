"""OTLP push: the pipeline's metrics to any OpenTelemetry backend over OTLP/HTTP (protobuf) or gRPC.

The supervisor hands this integration the round's batch every ``interval`` (and once more on a
graceful stop: the flush). Its families are encoded straight into ``ExportMetricsServiceRequest``
bytes (``integrations.otlp_wire``: no OTel SDK objects, no second copy of the series), in a
worker thread (gzip too), split into requests of at most 4 MiB, and sent with aiohttp
(HTTP/protobuf) or a grpcio channel (gRPC, the bytes passed through as they are).
``export(batch, timeout)`` (through ``push(families, resource, timeout)``) is the whole export of
one round and returns an ``ExportResult``.

Config (``plugins[].config``)::

    endpoint: "http://127.0.0.1:4318"   # default: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT
    protocol: http/protobuf             # or grpc; default: OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
                                        #   OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf
    interval: 10                        # seconds; default: OTEL_METRIC_EXPORT_INTERVAL (ms), else 60
    timeout: 10                         # seconds one export may take, retries included; default:
                                        #   OTEL_EXPORTER_OTLP_(METRICS_)TIMEOUT (seconds), else 10
    compression: gzip                   # gzip | none; default: OTEL_EXPORTER_OTLP_(METRICS_)COMPRESSION
    headers: {authorization: "Bearer ..."}  # secrets; merged over OTEL_EXPORTER_OTLP_(METRICS_)HEADERS
    insecure: false                     # grpc only: plaintext without TLS; default: OTEL_EXPORTER_OTLP_
                                        #   (METRICS_)INSECURE, else from the endpoint's scheme
    tls: {ca_file: ..., cert_file: ..., key_file: ...}  # default: OTEL_EXPORTER_OTLP_(METRICS_)CERTIFICATE,
                                        #   ..._CLIENT_CERTIFICATE, ..._CLIENT_KEY
    temporality: cumulative             # cumulative | delta | lowmemory; default:
                                        #   OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, else cumulative

With ``http/protobuf`` an endpoint written as a base URL (``http://host:4318``) gets
``/v1/metrics`` appended, as the SDK does for ``OTEL_EXPORTER_OTLP_ENDPOINT``; one that already
ends in ``/v1/metrics`` is used as it is, as is ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``.

Receiving: ``receive: {grpc: {listen: "127.0.0.1:4317"}, http: {listen: "127.0.0.1:4318"}}``
starts OTLP receivers (TLS, auth and limits as documented in ``integrations/otlp_receive.py``);
``endpoint`` and ``receive`` may both be set. With ``receive`` and no endpoint (in the config or
``OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT``), nothing is pushed.

Temporality follows the SDK's OTLP exporters per instrument kind (see ``integrations.otlp_wire``):
``delta`` sends monotonic sums and histograms as deltas, ``lowmemory`` histograms only.

Failures: HTTP 429, 502, 503, 504, connection errors and timeouts, and the gRPC codes OTLP calls
retryable (UNAVAILABLE, DEADLINE_EXCEEDED, ...; RESOURCE_EXHAUSTED only with a RetryInfo) are
retried within ``timeout`` with exponential backoff and jitter; a ``Retry-After`` header or a
gRPC ``RetryInfo`` sets the wait instead (and ends the retries when it is beyond ``timeout``).
Anything else fails at once (permanent), redirects included (they are not followed: the
headers would go along). A backend's partial success (``rejected_data_points``)
is logged with its message. Errors name the endpoint and protocol, bound and mask what the
backend answered, and never carry a header value.

Header values are ``SecretStr``: they never appear in logs, errors, the config API or reprs.
Headers from the environment are read into the model too, so the log redactor knows them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import logging
import math
import os
import ssl
import threading
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bridge.api import (
    Alert,
    ExportResult,
    ExportStatus,
    Metric,
    MetricBatch,
    MetricIngest,
    MonitoringIntegrationPlugin,
    PluginConfig,
    PluginError,
    PluginMetadata,
    PluginType,
    validate_plugin_id,
)
from bridge.delivery import Backoff, retry_after_seconds
from bridge.helpers import EXCERPT_BYTES, peer_excerpt, read_up_to, redact_text, release_free_memory
from bridge.ledger import count_loss
from integrations.otlp_config import METRICS_PATH, OtlpConfig, OtlpTLSConfig, _env
from integrations.otlp_receive import OtlpReceiver
from integrations.otlp_wire import OtlpEncoder

__all__ = ["PLUGIN_ID", "OtlpConfig", "OtlpIntegration", "OtlpTLSConfig", "metrics_families"]

PLUGIN_ID = validate_plugin_id("monitoring.integration.otlp", PluginType.INTEGRATION)

log = logging.getLogger("monbridge.integrations.otlp")

DEFAULT_TIMEOUT_S = 10.0


# ---------------------------------------------------------------------------- the plugin API's Metrics


def metrics_families(metrics: Sequence[Metric], resource: Any = None) -> list[Any]:
    """Plugin-API ``Metric``s as the families the OTLP encoder takes, grouped by name (kinds,
    start times and histogram buckets kept; a metric whose kind or unit differs from the first of
    its name is dropped and logged, as the pipeline does)."""
    import time

    now = time.time_ns()
    families: dict[str, _MetricFamily] = {}
    for m in metrics:
        fam = families.get(m.name)
        if fam is None:
            fam = families[m.name] = _MetricFamily(m)
        elif fam.kind is not m.kind or fam.unit != m.unit:
            log.warning("metric %s reported as %s %r and %s %r; the second is not exported",
                        m.name, fam.kind.value, fam.unit, m.kind.value, m.unit)
            continue
        t = m.timestamp_ns or now
        fam.series.append(_Series(_MetricSeries(m.attributes, t), m.value, m.start_time_ns, t))
    return list(families.values())


class _MetricFamily:
    __slots__ = ("name", "kind", "unit", "description", "native", "preaggregated", "series")

    def __init__(self, m: Metric) -> None:
        self.name, self.kind, self.unit, self.description = m.name, m.kind, m.unit, m.description
        self.native = False
        self.preaggregated = m.preaggregated
        self.series: list[_Series] = []


class _MetricSeries:
    """What the encoder reads of a series besides its value: attributes, identity, first time."""

    __slots__ = ("attributes", "key", "first_ns", "otlp")

    def __init__(self, attributes: Mapping[str, Any], first_ns: int) -> None:
        self.attributes = attributes
        self.key = tuple(sorted(attributes.items()))
        self.first_ns = first_ns
        self.otlp: bytes | None = None


# ---------------------------------------------------------------------------- where and how to send


def _safe_url(url: str) -> str:
    """``url`` without user:password@ (an endpoint may carry credentials)."""
    try:
        u = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if u.username is None and u.password is None:
        return url
    netloc = u.hostname or ""
    if u.port is not None:
        netloc += f":{u.port}"
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def _env_file(name: str) -> Path | None:
    v = _env(f"OTEL_EXPORTER_OTLP_METRICS_{name}", f"OTEL_EXPORTER_OTLP_{name}")
    return Path(v) if v is not None else None


@dataclass(frozen=True)
class _Target:
    """Everything a send needs, resolved from the config and the OTEL_EXPORTER_OTLP_* variables."""

    protocol: str
    endpoint: str  # http: the URL; grpc: host:port
    timeout: float
    compression: str  # none | gzip | deflate
    headers: tuple[tuple[str, str], ...]
    insecure: bool  # grpc: plaintext
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None


def _resolve(cfg: OtlpConfig) -> _Target:
    """The send target from ``cfg`` and the environment, as the SDK's exporters resolve it;
    a bad variable is a PluginError naming it."""
    if cfg.timeout is not None:
        timeout = float(cfg.timeout)
    else:
        raw = _env("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
        try:
            timeout = float(raw) if raw is not None else DEFAULT_TIMEOUT_S
        except ValueError:
            timeout = -1.0
        if not (timeout > 0 and math.isfinite(timeout)):
            raise PluginError(f"{PLUGIN_ID}: OTEL_EXPORTER_OTLP_(METRICS_)TIMEOUT is {raw!r}; expected a positive "
                              "number of seconds")
    if cfg.compression is not None:
        compression = cfg.compression
    else:
        raw = _env("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
        compression = (raw or "none").lower()
        if compression not in ("gzip", "none", "deflate"):
            raise PluginError(f"{PLUGIN_ID}: OTEL_EXPORTER_OTLP_(METRICS_)COMPRESSION is {raw!r}; expected gzip, "
                              "deflate or none")
    tls = cfg.tls
    ca = tls.ca_file if tls is not None else _env_file("CERTIFICATE")
    cert = tls.cert_file if tls is not None else _env_file("CLIENT_CERTIFICATE")
    key = tls.key_file if tls is not None else _env_file("CLIENT_KEY")
    headers = tuple((k, v.get_secret_value()) for k, v in cfg.headers.items())
    if cfg.protocol == "grpc":
        endpoint = cfg.endpoint or _env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT") \
            or "http://localhost:4317"
        u = urllib.parse.urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        insecure = cfg.insecure
        if u.scheme == "https" or tls is not None:
            insecure = False
        elif insecure is None:
            raw = _env("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")
            insecure = raw.lower() == "true" if raw is not None else u.scheme == "http"
        return _Target("grpc", u.netloc or endpoint, timeout, compression, headers, bool(insecure), ca, cert, key)
    if cfg.endpoint is not None:
        url = cfg.endpoint
    else:
        url = _env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or ""
        if not url:
            base = _env("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
            url = base.rstrip("/") + METRICS_PATH
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise PluginError(f"{PLUGIN_ID}: OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT is {_safe_url(url)!r}; expected an "
                              "http:// or https:// URL")
    return _Target("http/protobuf", url, timeout, compression, headers, False, ca, cert, key)


# OTLP/gRPC: the codes a client retries (RESOURCE_EXHAUSTED only with a RetryInfo; see the module docstring).
_GRPC_RETRYABLE = ("CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS")
_HTTP_RETRYABLE = (429, 502, 503, 504)
_GRPC_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
_RETRIES = Backoff(initial=RETRY_INITIAL_S, maximum=RETRY_MAX_S)
_MAX_RESPONSE_BYTES = 64 * 1024


def _partial_success(body: bytes, where: str) -> None:
    """Log an ``ExportMetricsServiceResponse``'s partial success (data the backend rejected)."""
    if not body:
        return
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

    try:
        response = ExportMetricsServiceResponse.FromString(body)
    except Exception:  # noqa: BLE001 - a 2xx with a body that is not the response: nothing to report
        return
    ps = response.partial_success
    count_loss("otlp_export", "rejected_points", ps.rejected_data_points)
    if ps.rejected_data_points or ps.error_message:
        log.warning("OTLP export to %s: the backend rejected %d data points: %s", where, ps.rejected_data_points,
                    peer_excerpt(ps.error_message or "(no message)"))


def connection_cause(error: BaseException | str) -> str:
    """What went wrong under ``error`` (an exception and what it wraps, or the text of one), in the
    words a reader looks for: ``connection refused``, ``TLS: certificate verify failed: ...``,
    ``cannot resolve the host``, ``connection reset``; else the error itself."""
    if isinstance(error, BaseException):
        seen: set[int] = set()
        stack: list[BaseException] = [error]
        while stack:
            e = stack.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            inner = [e.__cause__, e.__context__, getattr(e, "os_error", None), getattr(e, "certificate_error", None),
                     getattr(e, "reason", None), *getattr(e, "args", ())]
            wrapped = [x for x in inner if isinstance(x, BaseException)]
            if wrapped and type(e).__module__.startswith("aiohttp"):  # a client error that is also an ssl one
                stack += wrapped
                continue
            if isinstance(e, ssl.SSLCertVerificationError):
                return f"TLS: certificate verify failed: {getattr(e, 'verify_message', None) or e}"
            if isinstance(e, ssl.SSLError):
                return f"TLS: {getattr(e, 'reason', None) or e}"
            if isinstance(e, ConnectionRefusedError):
                return "connection refused"
            if isinstance(e, ConnectionResetError):
                return "connection reset by the peer"
            if isinstance(e, OSError) and type(e).__name__ == "gaierror":
                return f"cannot resolve the host: {e.strerror or e}"
            stack += wrapped
        text = f"{type(error).__name__}: {error}"
    else:
        text = error
    low = text.lower()
    if "connection refused" in low or "connect call failed" in low:
        return "connection refused"
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        return "TLS: certificate verify failed"
    if "ssl" in low and ("handshake" in low or "wrong version" in low or "record layer" in low):
        return f"TLS: {text}"
    return text


class _HttpSender:
    """POSTs request bodies to the OTLP/HTTP endpoint (aiohttp; one session, kept alive)."""

    def __init__(self, target: _Target) -> None:
        import aiohttp

        ctx: ssl.SSLContext | None = None
        if target.endpoint.startswith("https:"):
            ctx = ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
            if target.cert_file is not None and target.key_file is not None:
                ctx.load_cert_chain(str(target.cert_file), str(target.key_file))
        self._ssl: ssl.SSLContext | bool = ctx if ctx is not None else True
        self.url = target.endpoint
        headers = {"Content-Type": "application/x-protobuf", "User-Agent": f"monbridge/{_version()}"}
        if target.compression != "none":
            headers["Content-Encoding"] = target.compression
        headers.update(dict(target.headers))
        self._headers = headers
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))

    async def send(self, body: bytes, timeout: float, where: str, redact: Callable[[str], str]) -> ExportResult:
        import aiohttp

        try:
            # Redirects are not followed: the headers (credentials) would go to wherever the answer says.
            async with self._session.post(self.url, data=body, headers=self._headers, ssl=self._ssl,
                                          allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                status = r.status
                if 200 <= status < 300:  # the whole answer: a part of a protobuf reads as another message
                    _partial_success(await read_up_to(r.content, _MAX_RESPONSE_BYTES), where)
                    return ExportResult.success()
                answer = await r.content.read(EXCERPT_BYTES)
                why = f"HTTP {status} {r.reason or ''}".rstrip()
                text = _status_message(answer, r.headers.get("Content-Type", ""))
                if text.strip():
                    why += f": {peer_excerpt(redact(text), 300)}"
                if status in _HTTP_RETRYABLE:
                    return ExportResult.retryable(why, retry_after_seconds(r.headers.get("Retry-After")))
                return ExportResult.permanent(why)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return ExportResult.retryable(f"no answer within {timeout:.3g} s")
        except (aiohttp.ClientError, OSError, ValueError) as e:
            cause = connection_cause(e)
            detail = f"{type(e).__name__}: {peer_excerpt(redact(str(e)), 300)}"
            return ExportResult.retryable(detail if cause == f"{type(e).__name__}: {e}" else f"{cause} ({detail})")

    async def close(self) -> None:
        await self._session.close()


def _status_message(body: bytes, content_type: str) -> str:
    """What an OTLP/HTTP error body says: a ``google.rpc.Status``'s message when it is protobuf, else the text."""
    if "protobuf" in content_type:
        try:
            from google.rpc import status_pb2

            return str(status_pb2.Status.FromString(body).message)
        except Exception:  # noqa: BLE001 - not a Status after all: shown as text
            pass
    return body.decode("utf-8", "replace")


class _GrpcSender:
    """Calls ``MetricsService/Export`` with the encoded request as it is (grpcio's asyncio channel,
    no (de)serializer: the bytes pass through)."""

    def __init__(self, target: _Target) -> None:
        import grpc  # type: ignore[import-untyped]

        compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}.get(
            target.compression, grpc.Compression.NoCompression)
        options = [("grpc.max_send_message_length", -1)]
        if target.insecure:
            self._channel = grpc.aio.insecure_channel(target.endpoint, options=options, compression=compression)
        else:
            def read(p: Path | None) -> bytes | None:
                return p.read_bytes() if p is not None else None

            try:
                creds = grpc.ssl_channel_credentials(root_certificates=read(target.ca_file),
                                                     private_key=read(target.key_file),
                                                     certificate_chain=read(target.cert_file))
            except OSError as e:
                raise PluginError(f"{PLUGIN_ID}: tls: cannot read {e.filename}: {e.strerror}") from None
            self._channel = grpc.aio.secure_channel(target.endpoint, creds, options=options, compression=compression)
        self._call = self._channel.unary_unary(_GRPC_METHOD)
        self._metadata = target.headers

    async def send(self, body: bytes, timeout: float, where: str, redact: Callable[[str], str]) -> ExportResult:
        import grpc

        try:
            answer = await self._call(body, timeout=timeout, metadata=self._metadata)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            code = e.code()
            details = e.details() or ""
            why = f"gRPC {code.name}: {peer_excerpt(redact(details), 300)}"
            if (cause := connection_cause(details)) != details:
                why = f"{cause} ({why})"
            delay = _retry_info(e.trailing_metadata())
            if code.name in _GRPC_RETRYABLE or (code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
                return ExportResult.retryable(why, delay)
            return ExportResult.permanent(why)
        _partial_success(bytes(answer or b"")[:_MAX_RESPONSE_BYTES], where)
        return ExportResult.success()

    async def close(self) -> None:
        await self._channel.close()


def _retry_info(metadata: Any) -> float | None:
    """The delay of a ``google.rpc.RetryInfo`` in gRPC trailing metadata, in seconds."""
    try:
        raw = dict(metadata or ()).get("google.rpc.retryinfo-bin")
        if raw is None:
            return None
        from google.rpc.error_details_pb2 import RetryInfo

        info = RetryInfo.FromString(raw)
        return max(0.0, info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    except Exception:  # noqa: BLE001 - a malformed RetryInfo is no RetryInfo
        return None




def _version() -> str:
    from bridge import __version__

    return __version__


async def with_retries(attempt: Callable[[float], Awaitable[ExportResult]], timeout: float) -> ExportResult:
    """Call ``attempt(seconds left)`` until it does not ask for a retry or ``timeout`` is spent:
    the delivery module's backoff with jitter (``bridge.delivery.Backoff``), or the peer's longer
    Retry-After / RetryInfo when it gave one (a wait beyond what is left ends the retries)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    tries = 0
    while True:
        result = await attempt(max(deadline - loop.time(), 0.001))
        if result.status is not ExportStatus.RETRYABLE:
            return result
        tries += 1
        delay = _RETRIES.delay(tries, result.retry_after)
        if delay >= deadline - loop.time():
            return result
        await asyncio.sleep(delay)


# ---------------------------------------------------------------------------- the plugin


class OtlpIntegration(MonitoringIntegrationPlugin):
    """Pushes the pipeline's metrics over OTLP (HTTP/protobuf or gRPC)."""

    config_model: ClassVar[type[PluginConfig]] = OtlpConfig

    def __init__(self) -> None:
        self.config: OtlpConfig | None = None
        self._target: _Target | None = None
        self._sender: _HttpSender | _GrpcSender | None = None
        self._encoder: OtlpEncoder | None = None
        self._endpoint = ""
        self._inflight: asyncio.Future[Any] | None = None
        self._resource: Any = None
        # One thread encodes: its allocator arena is the only one that holds a push's bytes.
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="otlp-encode")
        self._ingest: MetricIngest | None = None
        self._receiver: OtlpReceiver | None = None

    def bind_ingest(self, ingest: MetricIngest) -> None:
        self._ingest = ingest

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID,
            name="OTLP",
            version="0.1.0",
            author="monbridge",
            description="pushes metrics to an OpenTelemetry backend over OTLP/HTTP (protobuf) or gRPC",
            plugin_type=PluginType.INTEGRATION,
        )

    @property
    def endpoint(self) -> str:
        """Where the pushes go (the URL for http/protobuf, host:port for grpc; no credentials)."""
        return self._endpoint

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg: OtlpConfig = config if isinstance(config, OtlpConfig) else self.parse_config(config)
        self.config = cfg
        if cfg.tls is not None:
            for key in ("ca_file", "cert_file", "key_file"):
                path = getattr(cfg.tls, key)
                if path is not None and not os.access(path, os.R_OK):
                    raise PluginError(f"{PLUGIN_ID}: tls.{key}: cannot read {path}")
        if cfg.receive is not None:
            if self._ingest is None:
                raise PluginError(f"{PLUGIN_ID}: receive needs the pipeline's ingest (bind_ingest) before initialize")
            self._receiver = OtlpReceiver(cfg.receive, self._ingest)
            await self._receiver.start()
        if not cfg.pushes:
            return  # receive only: nothing to push to, alerts' spans and log records included
        target = _resolve(cfg)
        try:
            self._sender = _GrpcSender(target) if target.protocol == "grpc" else _HttpSender(target)
        except PluginError:
            raise
        except (OSError, ssl.SSLError, ValueError) as e:  # a bad certificate file, say
            raise PluginError(f"{PLUGIN_ID}: cannot set up the {cfg.protocol} client: {type(e).__name__}: "
                              f"{self._redact(str(e))}") from None
        self._target = target
        self._encoder = OtlpEncoder(cfg.temporality)
        self._endpoint = _safe_url(target.endpoint)
        log.info("OTLP push to %s (%s, %s temporality) every %ss", self._endpoint, cfg.protocol, cfg.temporality,
                 cfg.interval)

    def _redact(self, text: str) -> str:
        if self.config is not None:
            for v in self.config.headers.values():
                s = v.get_secret_value()
                if len(s) >= 3:
                    text = text.replace(s, "<secret>")
        return text

    def _next_body(self, requests: Iterator[bytes]) -> bytes | None:
        """The next request of the round, compressed for HTTP, or None (runs in a worker thread)."""
        assert self._target is not None
        body = next(requests, None)
        if body is None:
            # glibc keeps what a push freed (bodies of megabytes): with 100k series (bench_otlp_push)
            # OTLP on adds 9 % RSS without the trim, 5 % with it.
            release_free_memory()
            return None
        if self._target.protocol == "grpc":  # grpcio compresses on the channel
            return body
        if self._target.compression == "gzip":
            return gzip.compress(body, compresslevel=1)
        if self._target.compression == "deflate":
            return zlib.compress(body, 1)
        return body

    async def push(self, families: Sequence[Any], resource: Any, timeout: float | None = None) -> ExportResult:
        """One round's export: ``families`` encoded (in a worker thread) and sent, retried within
        ``timeout`` (default: the configured one). Never raises for the backend's failures: they
        are the result (the reason names the endpoint and holds no secret)."""
        sender, target = self._sender, self._target
        if sender is None or target is None or self.config is None:
            return ExportResult.permanent(f"{PLUGIN_ID}: export called before initialize (or after shutdown)")
        where = f"{self._endpoint} ({target.protocol})"
        previous = self._inflight
        if previous is not None and not previous.done():
            # A round cancelled by its timeout (or by a stop, before the flush) leaves its encoding
            # running in its thread: wait for it rather than run two at once or pile up threads.
            try:
                await asyncio.shield(previous)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - that round has already been reported as failed
                pass
        # The series lists are taken here, on the event loop, where the pipeline changes them;
        # the worker thread reads only these lists.
        batch = []
        for fam in families:
            ser = fam.series
            batch.append((fam, list(ser.values() if isinstance(ser, Mapping) else ser)))
        assert self._encoder is not None
        requests = self._encoder.requests(batch, resource)
        # The configured timeout bounds each push; within a round's ``timeout`` the push ends a
        # little before the caller gives up, so that its result (the reason, the endpoint) is
        # what the caller gets rather than a bare timeout.
        budget = target.timeout if timeout is None else min(target.timeout, timeout * 0.9)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        failed: list[ExportResult] = []
        sent = 0
        while True:
            # Each request is encoded (and compressed) in a worker thread, then sent: a push holds
            # one request's bytes at a time.
            self._inflight = asyncio.ensure_future(loop.run_in_executor(self._thread, self._next_body, requests))
            try:
                body: bytes | None = await asyncio.shield(self._inflight)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a bug in the encoder must be a failed round, not a crash
                log.exception("OTLP: encoding the push failed")
                return ExportResult.permanent(f"OTLP export to {where} failed: cannot encode: {type(e).__name__}: {e}")
            if body is None:
                break
            sent += 1
            points = self._encoder.last_points

            async def attempt(left: float, body: bytes = body) -> ExportResult:
                return await sender.send(body, left, where, self._redact)

            result = await with_retries(attempt, max(deadline - loop.time(), 0.001))
            del body
            if not result.ok:
                failed.append(result)
                count_loss("otlp_export", result.status.value, points,
                           detail=f"a request of {points} data points to {where}: {result.reason}")
        if not failed:
            return ExportResult.success()
        worst = next((r for r in failed if r.status is ExportStatus.PERMANENT), failed[-1])
        part = f" ({len(failed)} of {sent} requests)" if sent > 1 else ""
        reason = f"OTLP export to {where} failed{part}: {self._redact(worst.reason)}"
        if worst.status is ExportStatus.PERMANENT:
            return ExportResult.permanent(reason)
        return ExportResult.retryable(reason, worst.retry_after)

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        """The round's ``batch``, encoded from its families' snapshot (values as the batch took
        them) and sent within ``timeout``."""
        return await self.push([_Family(f) for f in batch.families()],
                               getattr(batch, "resource", None) or _Resource(batch.resource_attributes), timeout)

    async def preview_export(self, batch: MetricBatch) -> list[str]:
        """Where ``batch`` would be pushed and how many requests and bytes it makes, encoded as
        ``export`` encodes it (by an encoder of its own: the pushes' delta state is left alone),
        nothing sent (``bridge.api.ExportPreviewHook``)."""
        target, cfg = self._target, self.config
        if target is None or cfg is None:
            return ["nothing to push to (receive only)"]
        families = [_Family(f) for f in batch.families()]
        snapshot = [(fam, list(fam.series.values() if isinstance(fam.series, Mapping) else fam.series))
                    for fam in families]
        requests = OtlpEncoder(cfg.temporality).requests(
            snapshot, getattr(batch, "resource", None) or _Resource(batch.resource_attributes))

        def sizes() -> list[int]:
            out = []
            while (body := self._next_body(requests)) is not None:
                out.append(len(body))
            return out

        sent = await asyncio.get_running_loop().run_in_executor(self._thread, sizes)
        series = sum(len(s) for _, s in snapshot)
        how = "gRPC Export to" if target.protocol == "grpc" else "POST"
        compression = "" if target.compression == "none" else f", {target.compression}"
        headers = f"; headers: {', '.join(k for k, _ in target.headers)}" if target.headers else ""
        return [f"would {how} {self._endpoint} ({target.protocol}{compression}): {len(sent)} request"
                f"{'s' if len(sent) != 1 else ''}, {sum(sent)} bytes, {series} series of {len(families)} metrics"
                f"{headers}"]

    def export_sinks(self) -> Mapping[str, Any]:
        return super().export_sinks() if self.config is None or self.config.pushes else {}

    async def export_families(self, families: Sequence[Any], resource: Any) -> None:
        """Send ``families``; raise PluginError when the backend did not take them."""
        result = await self.push(families, resource)
        if not result.ok:
            raise PluginError(result.reason)

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        """The plugin API's path: ``metrics`` are grouped into families (see ``metrics_families``:
        kinds, start times and histogram buckets kept) and exported."""
        if self._resource is None:
            from bridge.otel import default_resource

            self._resource = default_resource()
        await self.export_families(metrics_families(metrics, self._resource), self._resource)

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        """Nothing to do: alerts reach OTLP as log records (each transition) and spans (each
        alert's life) through the alert engine, with the exporters of ``telemetry_exporters``."""

    def _common_kwargs(self, cfg: OtlpConfig) -> dict[str, Any]:
        """The SDK exporter arguments both protocols take; only what the config sets is passed."""
        kwargs: dict[str, Any] = {}
        if cfg.endpoint is not None:
            kwargs["endpoint"] = cfg.endpoint
        if cfg.headers:
            kwargs["headers"] = {k: v.get_secret_value() for k, v in cfg.headers.items()}
        if cfg.timeout is not None:
            kwargs["timeout"] = cfg.timeout
        return kwargs

    @staticmethod
    def _http_kwargs(cfg: OtlpConfig) -> dict[str, Any]:
        """Compression and TLS arguments of the SDK's HTTP exporters (spans, logs)."""
        from opentelemetry.exporter.otlp.proto.http import Compression

        kwargs: dict[str, Any] = {}
        if cfg.compression is not None:
            kwargs["compression"] = Compression.Gzip if cfg.compression == "gzip" else Compression.NoCompression
        if cfg.tls is not None:
            if cfg.tls.ca_file is not None:
                kwargs["certificate_file"] = str(cfg.tls.ca_file)
            if cfg.tls.cert_file is not None and cfg.tls.key_file is not None:
                kwargs["client_certificate_file"] = str(cfg.tls.cert_file)
                kwargs["client_key_file"] = str(cfg.tls.key_file)
        return kwargs

    def telemetry_exporters(self) -> tuple[Any, Any] | None:
        """The SDK's span and log record exporters for the alert engine (``_sdk_exporters``), each
        failing export logged once per state change with its cause, the SDK's own retry warnings
        and errors for that export left out (``_QuietExport``)."""
        exporters = self._sdk_exporters()
        if exporters is None:
            return None
        where = self._endpoint
        for what, exporter in zip(("spans", "log records"), exporters, strict=True):
            exporter.export = _QuietExport(f"alert {what}", where, exporter)
        return exporters

    def _sdk_exporters(self) -> tuple[Any, Any] | None:
        """A span exporter and a log record exporter with this integration's endpoint, protocol,
        headers, compression, timeout and TLS (the alert engine's spans and transition records
        go out through them); None when it only receives. For http/protobuf, ``/v1/metrics``
        becomes ``/v1/traces`` and ``/v1/logs``."""
        cfg = self.config
        if cfg is None:
            raise PluginError(f"{PLUGIN_ID}: telemetry_exporters called before initialize")
        if not cfg.pushes:
            return None
        kwargs = self._common_kwargs(cfg)
        if cfg.protocol == "grpc":
            import grpc
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

            if cfg.compression is not None:
                kwargs["compression"] = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
            if cfg.insecure is not None:
                kwargs["insecure"] = cfg.insecure
            if cfg.tls is not None:
                tls = cfg.tls
                kwargs["credentials"] = grpc.ssl_channel_credentials(
                    *(p.read_bytes() if p is not None else None for p in (tls.ca_file, tls.key_file, tls.cert_file)))
                kwargs["insecure"] = False
            return GrpcSpanExporter(**kwargs), GrpcLogExporter(**kwargs)
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        kwargs.update(self._http_kwargs(cfg))
        endpoint = kwargs.pop("endpoint", None)
        spans = dict(kwargs)
        logs = dict(kwargs)
        if endpoint is not None:
            base_url = endpoint[: -len(METRICS_PATH)] if endpoint.endswith(METRICS_PATH) else endpoint
            spans["endpoint"] = base_url + "/v1/traces"
            logs["endpoint"] = base_url + "/v1/logs"
        return OTLPSpanExporter(**spans), OTLPLogExporter(**logs)

    async def import_metrics(self) -> Sequence[Metric]:
        if self._receiver is not None:
            self._receiver.round()
        return []

    async def import_alerts(self) -> Sequence[Alert]:
        return []

    async def shutdown(self, timeout: float | None = None) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            await receiver.stop()
        sender, self._sender = self._sender, None
        if sender is not None:
            await sender.close()
        self._thread.shutdown(wait=False)


#: The SDK exporters' loggers: what they log inside a ``_QuietExport`` call is its cause, not a line.
_SDK_LOGGERS = ("opentelemetry.exporter.otlp.common.http", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                "opentelemetry.exporter.otlp.proto.http._log_exporter", "opentelemetry.exporter.otlp.proto.grpc.exporter")
_quiet = threading.local()


class _SdkLogFilter(logging.Filter):
    """Keeps a record an SDK exporter logs inside a ``_QuietExport`` call (on that thread) from
    the log: the call notes it as the failure's cause instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        active: _QuietExport | None = getattr(_quiet, "active", None)
        if active is None:
            return True
        active.note(record)
        return False


_SDK_FILTER = _SdkLogFilter()


class _QuietExport:
    """An SDK exporter's ``export``, reporting like the metrics' sinks do: a failure is logged once
    when the exports start failing, naming the cause (connection refused, TLS, the HTTP status or
    gRPC code), and once when they recover; the SDK's retry warnings and its error for each failed
    export are not logged."""

    def __init__(self, what: str, where: str, exporter: Any) -> None:
        self.what, self.where, self._export = what, where, exporter.export
        self.failing = False
        self.cause: str | None = None
        for name in _SDK_LOGGERS:
            logger = logging.getLogger(name)
            if _SDK_FILTER not in logger.filters:
                logger.addFilter(_SDK_FILTER)
        # The HTTP exporters' client says how its last attempt ended (status, reason, error) even
        # when the SDK gives up without a retry warning (a timeout shorter than its first backoff).
        client = getattr(exporter, "_client", None)
        send = getattr(client, "export", None)
        if callable(send):
            def export(data: Any, *args: Any, **kwargs: Any) -> Any:
                result = send(data, *args, **kwargs)
                status, reason = getattr(result, "status_code", None), getattr(result, "reason", None)
                error = getattr(result, "error", None)
                if status is not None and not 200 <= status < 400:
                    self.cause = f"HTTP {status} {reason or ''}".rstrip()
                elif isinstance(error, BaseException):
                    self.cause = peer_excerpt(redact_text(connection_cause(error)), 300)
                return result

            client.export = export

    def note(self, record: logging.LogRecord) -> None:
        if self.cause is not None and "Failed to export" in record.msg:
            return  # the SDK giving up says less than the attempt's own cause
        error = next((a for a in (record.args if isinstance(record.args, tuple) else ())
                      if isinstance(a, BaseException)), None)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
        self.cause = peer_excerpt(redact_text(connection_cause(error if error is not None else record.getMessage())), 300)

    def __call__(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        self.cause = None
        _quiet.active = self
        try:
            result = self._export(batch, *args, **kwargs)
        finally:
            _quiet.active = None
        ok = getattr(result, "name", "") == "SUCCESS"
        if not ok and not self.failing:
            log.error("OTLP export of %s to %s is failing: %s (logged again when it recovers)", self.what, self.where,
                      self.cause or "the exporter gave no reason")
        elif ok and self.failing:
            log.info("OTLP export of %s to %s recovered", self.what, self.where)
        self.failing = not ok
        return result


class _Resource:
    __slots__ = ("attributes",)

    def __init__(self, attributes: Mapping[str, Any]) -> None:
        self.attributes = attributes


class _Family:
    """A batch family as the encoder reads it: the snapshot's own fields, and its series as
    ``_Series`` (the live series for identity, attributes and the encoder's kept bytes; the value
    and times as the snapshot took them)."""

    __slots__ = ("name", "kind", "unit", "description", "native", "preaggregated", "series")

    def __init__(self, f: Any) -> None:
        self.name, self.kind, self.unit, self.description, self.native = f.name, f.kind, f.unit, f.description, f.native
        self.preaggregated = getattr(f, "preaggregated", f.native)
        refs = getattr(f, "refs", None)
        if refs is not None:  # the pipeline's snapshot: parallel tuples, read without a view per series
            self.series = list(map(_Series, refs, f.values, f.starts, f.times))
        else:
            self.series = list(f.series)


class _Series:
    __slots__ = ("live", "value", "start_ns", "time_ns")

    def __init__(self, live: Any, value: Any, start_ns: int | None, time_ns: int) -> None:
        self.live, self.value, self.start_ns, self.time_ns = live, value, start_ns, time_ns

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self.live.attributes  # type: ignore[no-any-return]

    @property
    def first_ns(self) -> int:
        return self.live.first_ns  # type: ignore[no-any-return]

    @property
    def key(self) -> Any:
        return self.live.key

    @property
    def otlp(self) -> bytes | None:
        return self.live.otlp  # type: ignore[no-any-return]

    @otlp.setter
    def otlp(self, value: bytes) -> None:
        self.live.otlp = value
