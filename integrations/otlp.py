"""OTLP push: the pipeline's metrics to any OpenTelemetry backend over OTLP/HTTP (protobuf) or gRPC.

The supervisor hands this integration the pipeline's ``MetricsData`` every ``interval`` (and once
more on a graceful stop: the flush); it is sent with the OpenTelemetry SDK's own exporters, so
the standard ``OTEL_EXPORTER_OTLP_*`` environment variables keep working. Only what the config
sets is passed to the exporter explicitly; everything else the SDK reads from the environment
as it always does.

Config (``plugins[].config``)::

    endpoint: "http://127.0.0.1:4318"   # default: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT
    protocol: http/protobuf             # or grpc; default: OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
                                        #   OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf
    interval: 10                        # seconds; default: OTEL_METRIC_EXPORT_INTERVAL (ms), else 60
    timeout: 10                         # seconds one export may take (retries included)
    compression: gzip                   # gzip | none; default: OTEL_EXPORTER_OTLP_(METRICS_)COMPRESSION
    headers: {authorization: "Bearer ..."}  # secrets; merged over OTEL_EXPORTER_OTLP_(METRICS_)HEADERS
    insecure: false                     # grpc only: plaintext without TLS
    tls: {ca_file: ..., cert_file: ..., key_file: ...}

With ``http/protobuf`` an endpoint written as a base URL (``http://host:4318``) gets
``/v1/metrics`` appended, as the SDK does for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (but not for its
``endpoint=`` argument); one that already ends in ``/v1/metrics`` is used as it is.

Header values are ``SecretStr``: they never appear in logs, errors, the config API or reprs.
Headers from the environment are read into the model too, so the log redactor knows them.

Receiving: ``receive: {grpc: {listen: "127.0.0.1:4317"}, http: {listen: "127.0.0.1:4318"}}``
starts OTLP receivers (TLS, auth and limits as documented in ``integrations/otlp_receive.py``);
``endpoint`` and ``receive`` may both be set. With ``receive`` and no endpoint (in the config or
``OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT``), nothing is pushed.

Temporality is cumulative: the pipeline's data is cumulative (``OTEL_EXPORTER_OTLP_METRICS_
TEMPORALITY_PREFERENCE`` cannot change that and is ignored with a warning).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from bridge.api import (
    Alert,
    ExportResult,
    IntegrationConfig,
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
from bridge.helpers import peer_excerpt
from integrations.otlp_receive import OtlpReceiveConfig, OtlpReceiver

__all__ = ["PLUGIN_ID", "OtlpConfig", "OtlpIntegration", "OtlpTLSConfig", "metrics_to_otel"]

PLUGIN_ID = validate_plugin_id("monitoring.integration.otlp", PluginType.INTEGRATION)

log = logging.getLogger("monbridge.integrations.otlp")

Protocol = Literal["http/protobuf", "grpc"]
PROTOCOLS: tuple[str, ...] = ("http/protobuf", "grpc")
DEFAULT_INTERVAL_S = 60.0
METRICS_PATH = "/v1/metrics"

# The SDK exporters' loggers: their last error line in the exporting thread explains a FAILURE.
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)


# ---------------------------------------------------------------------------- config


class OtlpTLSConfig(PluginConfig):
    model_config = ConfigDict(hide_input_in_errors=True)

    ca_file: Path | None = Field(None, description="PEM CA bundle to verify the backend (default: system CAs)")
    cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS), with key_file")
    key_file: Path | None = Field(None, description="PEM client private key (mutual TLS), with cert_file")

    @model_validator(mode="after")
    def _pair(self) -> OtlpTLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate needs its key)")
        return self


def _env(*names: str) -> str | None:
    for name in names:
        v = os.environ.get(name, "").strip()
        if v:
            return v
    return None


class OtlpConfig(IntegrationConfig):
    """Where and how to push. Defaults come from the standard OpenTelemetry environment variables."""

    # Validation errors never echo the input: it may hold a header value.
    model_config = ConfigDict(hide_input_in_errors=True)

    # protocol is declared before endpoint: the endpoint's validator needs it.
    protocol: Protocol = Field(
        "http/protobuf",
        description="http/protobuf or grpc (default: OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, "
        "OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf)",
    )
    endpoint: str | None = Field(
        None,
        description="backend URL; for http/protobuf a base URL gets /v1/metrics appended (default: "
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, read by the SDK)",
    )
    interval: float = Field(
        DEFAULT_INTERVAL_S, gt=0,
        description="seconds between pushes (default: OTEL_METRIC_EXPORT_INTERVAL in milliseconds, else 60)",
    )
    compression: Literal["gzip", "none"] | None = Field(
        None, description="gzip or none (default: OTEL_EXPORTER_OTLP_METRICS_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION)"
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="request headers / gRPC metadata, secret values; merged over OTEL_EXPORTER_OTLP_METRICS_HEADERS "
        "or OTEL_EXPORTER_OTLP_HEADERS (the config wins per name)",
    )
    insecure: bool | None = Field(None, description="grpc only: plaintext, no TLS (default: from the endpoint's scheme)")
    tls: OtlpTLSConfig | None = None
    receive: OtlpReceiveConfig | None = None

    @property
    def pushes(self) -> bool:
        """Whether to push: always, unless only ``receive`` is configured (no endpoint anywhere)."""
        return self.receive is None or self.endpoint is not None or _env(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT") is not None

    @model_validator(mode="before")
    @classmethod
    def _environment_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if data.get("protocol") is None:
            env_protocol = _env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
            if env_protocol is not None:
                if env_protocol not in PROTOCOLS:
                    raise ValueError(
                        f"protocol from OTEL_EXPORTER_OTLP_(METRICS_)PROTOCOL is {env_protocol!r}; "
                        f"expected one of {', '.join(PROTOCOLS)}"
                    )
                data["protocol"] = env_protocol
        if data.get("interval") is None:
            raw = _env("OTEL_METRIC_EXPORT_INTERVAL")
            if raw is not None:
                try:
                    ms = float(raw)
                except ValueError:
                    ms = -1.0
                if not (ms > 0 and math.isfinite(ms)):
                    raise ValueError(
                        f"interval from OTEL_METRIC_EXPORT_INTERVAL is {raw!r}; expected a positive number of milliseconds"
                    )
                data["interval"] = ms / 1000.0
        env_headers = _env("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
        if env_headers is not None:
            from opentelemetry.util.re import parse_env_headers

            configured = data.get("headers") or {}
            if isinstance(configured, Mapping):
                merged: dict[str, Any] = dict(parse_env_headers(env_headers, liberal=True))
                merged.update({str(k).lower(): v for k, v in configured.items()})
                data["headers"] = merged
        return data

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return None
        v = v.strip()
        protocol = info.data.get("protocol")
        if protocol == "grpc":
            if "://" in v:
                u = urllib.parse.urlsplit(v)
                if u.scheme not in ("http", "https") or not u.netloc:
                    raise ValueError("expected http://HOST:PORT, https://HOST:PORT or HOST:PORT for grpc")
            elif not v:
                raise ValueError("expected http://HOST:PORT, https://HOST:PORT or HOST:PORT for grpc")
            return v
        u = urllib.parse.urlsplit(v)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError("expected an http:// or https:// URL, e.g. http://127.0.0.1:4318")
        path = u.path.rstrip("/")
        if not path.endswith(METRICS_PATH):
            path += METRICS_PATH
        return urllib.parse.urlunsplit((u.scheme, u.netloc, path, u.query, u.fragment))

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        out = {}
        for name, value in v.items():
            # gRPC metadata keys must be lower case; HTTP header names are case-insensitive.
            key = name.strip().lower()
            if not key or any(c in key for c in " \t\r\n:"):
                raise ValueError("header names must be non-empty and contain no whitespace or ':'")
            if any(c in value.get_secret_value() for c in "\r\n"):
                raise ValueError(f"header {key}: value must not contain line breaks")
            out[key] = value
        return out

    @model_validator(mode="after")
    def _consistent(self) -> OtlpConfig:
        if self.insecure is not None and self.protocol != "grpc":
            raise ValueError("insecure applies to protocol grpc only (for http/protobuf use an http:// endpoint)")
        if self.insecure and self.tls is not None:
            raise ValueError("insecure: true and tls contradict each other")
        return self


# ---------------------------------------------------------------------------- conversion


def metrics_to_otel(metrics: Sequence[Metric], resource: Any) -> Any:
    """Plugin-API ``Metric``s as one OTel ``MetricsData`` (one scope; cumulative sums, gauges and
    explicit-bucket histograms, as they are: nothing is re-aggregated)."""
    import time

    from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from bridge import __version__
    from bridge.otel import otel_metric, otel_point

    now = time.time_ns()
    families: dict[str, tuple[Metric, list[Any]]] = {}
    for m in metrics:
        fam = families.get(m.name)
        if fam is None:
            fam = families[m.name] = (m, [])
        elif fam[0].kind is not m.kind:
            log.warning("metric %s reported as %s and %s; the %s points are not exported",
                        m.name, fam[0].kind.value, m.kind.value, m.kind.value)
            continue
        fam[1].append(otel_point(dict(m.attributes), m.start_time_ns, m.timestamp_ns or now, m.value))
    out = [otel_metric(name, first.kind, first.unit, first.description, points)
           for name, (first, points) in families.items()]
    scope = ScopeMetrics(scope=InstrumentationScope("monbridge", __version__), metrics=out, schema_url="")
    return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")])


def _without_unknown_min_max(data: Any) -> Any:
    """``data`` with NaN histogram min/max (meaning "unknown") replaced by None.

    The SDK's encoder copies min/max into the protobuf's ``optional double`` fields as they are:
    NaN would be sent as present-and-NaN, None leaves them out as OTLP intends.
    """
    from opentelemetry.sdk.metrics.export import Histogram

    def bad(p: Any) -> bool:
        return (p.min is not None and math.isnan(p.min)) or (p.max is not None and math.isnan(p.max))

    def fix(p: Any) -> Any:
        if not bad(p):
            return p
        return replace(p, min=None if p.min is None or math.isnan(p.min) else p.min,
                       max=None if p.max is None or math.isnan(p.max) else p.max)

    if not any(isinstance(m.data, Histogram) and any(bad(p) for p in m.data.data_points)
               for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
        return data
    return replace(data, resource_metrics=[
        replace(rm, scope_metrics=[
            replace(sm, metrics=[
                replace(m, data=replace(m.data, data_points=[fix(p) for p in m.data.data_points]))
                if isinstance(m.data, Histogram) else m
                for m in sm.metrics
            ])
            for sm in rm.scope_metrics
        ])
        for rm in data.resource_metrics
    ])


def _install_summary_encoding() -> None:
    """Teach the SDK's OTLP metrics encoder our ``Summary`` data (imported Prometheus summaries).

    The SDK never produces summaries, so its encoder logs "unsupported data type" for them and
    leaves the metric empty. This wraps the encoder's per-metric function (pinned SDK 1.45.2;
    covered by tests/unit/test_otlp_config.py) to encode OTLP ``Summary`` points and delegate
    everything else. Idempotent.
    """
    from opentelemetry.exporter.otlp.proto.common._internal import metrics_encoder as enc

    if getattr(enc._encode_metric, "_monbridge_summaries", False):
        return
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    from bridge.otel import Summary

    original = enc._encode_metric

    def encode_metric(metric: Any, pb2_metric: Any) -> None:
        if not isinstance(metric.data, Summary):
            original(metric, pb2_metric)
            return
        for p in metric.data.data_points:
            pt = metrics_pb2.SummaryDataPoint(
                attributes=enc._encode_attributes(p.attributes), start_time_unix_nano=p.start_time_unix_nano,
                time_unix_nano=p.time_unix_nano, count=p.count, sum=p.sum,
                quantile_values=[metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=q, value=v)
                                 for q, v in p.quantile_values])
            pb2_metric.summary.data_points.append(pt)

    encode_metric._monbridge_summaries = True  # type: ignore[attr-defined]
    enc._encode_metric = encode_metric


# ---------------------------------------------------------------------------- why an export failed


class _LastError(logging.Handler):
    """Remembers the SDK exporters' last warning/error line per thread, so a FAILURE can say why."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._last: dict[int, str] = {}
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break an export
            return
        with self._lock2:
            self._last[record.thread or 0] = msg

    def pop(self, thread: int) -> str | None:
        with self._lock2:
            return self._last.pop(thread, None)


_last_error = _LastError()
for _name in _SDK_LOGGERS:
    logging.getLogger(_name).addHandler(_last_error)


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


# ---------------------------------------------------------------------------- the plugin


class OtlpIntegration(MonitoringIntegrationPlugin):
    """Pushes the pipeline's metrics over OTLP (HTTP/protobuf or gRPC) with the SDK's exporters."""

    config_model: ClassVar[type[PluginConfig]] = OtlpConfig

    def __init__(self) -> None:
        self.config: OtlpConfig | None = None
        self._exporter: Any = None
        self._endpoint = ""
        self._inflight: asyncio.Future[Any] | None = None
        self._resource: Any = None
        self._outcomes = threading.local()
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
        """The endpoint the exporter sends to (as the SDK resolved it; no credentials)."""
        return self._endpoint

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg: OtlpConfig = config if isinstance(config, OtlpConfig) else self.parse_config(config)
        self.config = cfg
        pref = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "").strip().upper()
        if pref and pref != "CUMULATIVE":
            log.warning("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=%s is ignored: monbridge's pipeline "
                        "exports cumulative data", pref)
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
            # Receive only: nothing to push to, alerts' spans and log records included (the alert
            # engine looks the method up by name and passes over an integration without it).
            self.telemetry_exporters = None  # type: ignore[assignment, method-assign]
            return
        _install_summary_encoding()
        try:
            if cfg.protocol == "grpc":
                self._exporter = self._grpc_exporter(cfg)
            else:
                self._exporter = self._http_exporter(cfg)
        except PluginError:
            raise
        except Exception as e:  # the SDK rejects a bad OTEL_* value, say
            raise PluginError(f"{PLUGIN_ID}: cannot create the {cfg.protocol} exporter: {type(e).__name__}: "
                              f"{self._redact(str(e))}") from None
        self._endpoint = _safe_url(str(getattr(self._exporter, "_endpoint", cfg.endpoint or "")))
        log.info("OTLP push to %s (%s) every %ss", self._endpoint, cfg.protocol, cfg.interval)

    @staticmethod
    def _cumulative() -> dict[type, Any]:
        from opentelemetry.sdk.metrics import (
            Counter,
            Histogram,
            ObservableCounter,
            ObservableGauge,
            ObservableUpDownCounter,
            UpDownCounter,
        )
        from opentelemetry.sdk.metrics.export import AggregationTemporality

        return {k: AggregationTemporality.CUMULATIVE for k in (
            Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)}

    def _common_kwargs(self, cfg: OtlpConfig) -> dict[str, Any]:
        """The exporter arguments both protocols take; only what the config sets is passed."""
        kwargs: dict[str, Any] = {"preferred_temporality": self._cumulative()}
        if cfg.endpoint is not None:
            kwargs["endpoint"] = cfg.endpoint
        if cfg.headers:
            kwargs["headers"] = {k: v.get_secret_value() for k, v in cfg.headers.items()}
        if cfg.timeout is not None:
            kwargs["timeout"] = cfg.timeout
        return kwargs

    def _http_exporter(self, cfg: OtlpConfig) -> Any:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        kwargs = self._common_kwargs(cfg)
        kwargs.update(self._http_kwargs(cfg))
        exporter = OTLPMetricExporter(**kwargs)
        self._observe_http_client(exporter)
        return exporter

    @staticmethod
    def _http_kwargs(cfg: OtlpConfig) -> dict[str, Any]:
        """Compression and TLS arguments of the SDK's HTTP exporters (metrics, spans, logs)."""
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

    def _observe_http_client(self, exporter: Any) -> None:
        """Remember the HTTP status (or connection error) of the last attempt in this thread: the
        SDK only returns FAILURE and does not always log the status. Reaches into the pinned SDK's
        ``_client``; without it the message just has less detail."""
        client: Any = getattr(exporter, "_client", None)
        send = getattr(client, "export", None)
        if client is None or send is None:
            return
        outcomes = self._outcomes

        def export(data: bytes) -> Any:
            result = send(data)
            outcomes.last = result
            return result

        client.export = export

    def _grpc_exporter(self, cfg: OtlpConfig) -> Any:
        import grpc  # type: ignore[import-untyped]
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        kwargs = self._common_kwargs(cfg)
        if cfg.compression is not None:
            kwargs["compression"] = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
        if cfg.insecure is not None:
            kwargs["insecure"] = cfg.insecure
        if cfg.tls is not None:
            def read(p: Path | None) -> bytes | None:
                return p.read_bytes() if p is not None else None

            try:
                kwargs["credentials"] = grpc.ssl_channel_credentials(
                    root_certificates=read(cfg.tls.ca_file),
                    private_key=read(cfg.tls.key_file),
                    certificate_chain=read(cfg.tls.cert_file),
                )
            except OSError as e:
                raise PluginError(f"{PLUGIN_ID}: tls: cannot read {e.filename}: {e.strerror}") from None
            kwargs["insecure"] = False  # tls given: never plaintext, even for an http:// endpoint
        return OTLPMetricExporter(**kwargs)

    def _redact(self, text: str) -> str:
        if self.config is not None:
            for v in self.config.headers.values():
                s = v.get_secret_value()
                if len(s) >= 3:
                    text = text.replace(s, "<secret>")
        return text

    def _export_blocking(self, data: Any) -> tuple[Any, str | None]:
        """Export in this (worker) thread; return the result and, on failure, why."""
        thread = threading.get_ident()
        _last_error.pop(thread)
        self._outcomes.last = None
        result = self._exporter.export(data)
        logged = _last_error.pop(thread)
        outcome = self._outcomes.last
        why = []
        if outcome is not None and not getattr(outcome, "success", True):
            status = getattr(outcome, "status_code", None)
            error = getattr(outcome, "error", None)
            if status is not None:
                why.append(f"HTTP {status} {getattr(outcome, 'reason', None) or ''}".rstrip())
            elif error is not None:
                why.append(f"{type(error).__name__}: {peer_excerpt(str(error), 300)}")
        if logged:
            why.append(peer_excerpt(logged, 300))  # what the backend answered, bounded and with credentials masked
        return result, "; ".join(why) or None

    async def export_metrics_data(self, data: Any) -> None:
        """Send ``data`` (an OTel ``MetricsData``); raise PluginError when the backend did not take it.

        The blocking SDK call runs in a worker thread. If the previous call is still running (its
        round timed out, or was cancelled by a stop just before the flush), it is waited for first,
        so exports never overlap and threads never pile up; the round's timeout still bounds the wait.
        """
        from opentelemetry.sdk.metrics.export import MetricExportResult

        if self._exporter is None or self.config is None:
            raise PluginError(f"{PLUGIN_ID}: export called before initialize (or after shutdown)")
        where = f"{self._endpoint} ({self.config.protocol})"
        previous = self._inflight
        if previous is not None and not previous.done():
            # A round cancelled by its timeout (or by a stop, before the flush) leaves its export
            # running in its thread: wait for it rather than run two at once or pile up threads.
            try:
                await asyncio.shield(previous)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - that round has already been reported as failed
                pass
        data = _without_unknown_min_max(data)
        self._inflight = asyncio.ensure_future(asyncio.to_thread(self._export_blocking, data))
        try:
            result, why = await asyncio.shield(self._inflight)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the SDK raised instead of returning FAILURE
            raise PluginError(f"OTLP export to {where} failed: {type(e).__name__}: {self._redact(str(e))}") from None
        if result is not MetricExportResult.SUCCESS:
            detail = f": {self._redact(why)}" if why else ""
            raise PluginError(f"OTLP export to {where} failed{detail}")

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        """Send the batch as OTel ``MetricsData`` (``batch.to_otel()``, built in a worker thread
        and shared with any other OTel-shaped sink); the SDK's FAILURE is a retryable result."""
        try:
            data = await asyncio.to_thread(batch.to_otel)
            await self.export_metrics_data(data)
        except PluginError as e:
            return ExportResult.retryable(str(e))
        return ExportResult.success()

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        """The plugin API's path: ``metrics`` are converted to one ``MetricsData`` (see
        ``metrics_to_otel``: kinds, start times and histogram buckets kept) and exported."""
        if self._resource is None:
            from bridge.otel import default_resource

            self._resource = default_resource()
        await self.export_metrics_data(metrics_to_otel(metrics, self._resource))

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        """Nothing to do: alerts reach OTLP as log records (each transition) and spans (each
        alert's life) through the alert engine, with the exporters of ``telemetry_exporters``."""

    def telemetry_exporters(self) -> tuple[Any, Any]:
        """A span exporter and a log record exporter with this integration's endpoint, protocol,
        headers, compression, timeout and TLS (the alert engine's spans and transition records
        go out through them). For http/protobuf, ``/v1/metrics`` becomes ``/v1/traces`` and ``/v1/logs``."""
        cfg = self.config
        if cfg is None:
            raise PluginError(f"{PLUGIN_ID}: telemetry_exporters called before initialize")
        kwargs = self._common_kwargs(cfg)
        kwargs.pop("preferred_temporality", None)
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

    def export_sinks(self) -> Mapping[str, Callable[..., Awaitable[None]]]:
        return super().export_sinks() if self.config is None or self.config.pushes else {}

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
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            await asyncio.to_thread(exporter.shutdown)
