"""The OTLP integration's config models (``monitoring.integration.otlp``): push and receive.

Apart from the plugin's code: validating a config with them loads no OTLP encoder, HTTP or gRPC
client, receiver or event loop. ``integrations.otlp`` and ``integrations.otlp_receive`` import
these names from here.
"""

from __future__ import annotations

import math
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from bridge.api import IntegrationConfig, PluginConfig
from bridge.helpers import AuthConfig, TLSConfig, parse_listen

__all__ = [
    "PROTOCOLS",
    "TEMPORALITY_PREFERENCES",
    "GrpcReceiveConfig",
    "HttpReceiveConfig",
    "OtlpConfig",
    "OtlpReceiveConfig",
    "OtlpTLSConfig",
    "Protocol",
    "Temporality",
]

Protocol = Literal["http/protobuf", "grpc"]
PROTOCOLS: tuple[str, ...] = ("http/protobuf", "grpc")
DEFAULT_INTERVAL_S = 60.0
METRICS_PATH = "/v1/metrics"
#: ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``'s values, as the SDK defines them.
Temporality = Literal["cumulative", "delta", "lowmemory"]
TEMPORALITY_PREFERENCES: tuple[str, ...] = ("cumulative", "delta", "lowmemory")


# ---------------------------------------------------------------------------- receive


class _ListenerConfig(PluginConfig):
    listen: str
    tls: TLSConfig | None = None
    auth: AuthConfig | None = None
    max_decompressed_bytes: int = Field(16 << 20, ge=1024, description="largest request body (message) decompressed")
    read_timeout: float = Field(30.0, gt=0, le=3600, description=(
        "seconds a connection may take to send a request (and, over HTTP, its body) after it connects or "
        "was answered; a slower or idle one is closed"))

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v


class GrpcReceiveConfig(_ListenerConfig):
    listen: str = "127.0.0.1:4317"


class HttpReceiveConfig(_ListenerConfig):
    listen: str = "127.0.0.1:4318"
    max_request_bytes: int = Field(4 << 20, ge=1024, description="largest request body as sent (compressed)")


class OtlpReceiveConfig(PluginConfig):
    """``receive``: the OTLP receivers (each only where configured)."""

    grpc: GrpcReceiveConfig | None = None
    http: HttpReceiveConfig | None = None
    expire_after: float = Field(300.0, gt=0, description="seconds a pushed series stays after its last push")
    max_data_points: int = Field(100_000, ge=1, description="most data points in one request")
    max_series: int = Field(200_000, ge=1, description="most series received data may hold at once")
    max_metrics: int = Field(10_000, ge=1, description="most metric names received data may create")
    max_attributes: int = Field(128, ge=1, description="most attributes of one data point (resource's included)")
    max_attribute_length: int = Field(4096, ge=1, description="most characters of one attribute value")
    promote_resource_attributes: list[str] = Field(default=[],
                                            description="resource attributes kept as labels of every series")

    @model_validator(mode="after")
    def _some(self) -> OtlpReceiveConfig:
        if self.grpc is None and self.http is None:
            raise ValueError("receive needs grpc, http or both, e.g. {http: {listen: \"127.0.0.1:4318\"}}")
        return self


# ---------------------------------------------------------------------------- push


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
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT)",
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
    temporality: Temporality = Field(
        "cumulative",
        description="cumulative, delta or lowmemory, per instrument kind as the OpenTelemetry SDK defines them "
        "(default: OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, else cumulative)",
    )
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
        if data.get("temporality") is None:
            env_pref = _env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
            if env_pref is not None:
                if env_pref.lower() not in TEMPORALITY_PREFERENCES:
                    raise ValueError(
                        f"temporality from OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE is {env_pref!r}; "
                        f"expected one of {', '.join(TEMPORALITY_PREFERENCES)} (any case)"
                    )
                data["temporality"] = env_pref.lower()
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
