"""The config model of ``monitoring.integration.datadog``, apart from its code: validating a config
imports this, not the integration (``bridge.registry.BUILTIN_PLUGINS`` names it).

Three parts, each configured on its own and each optional (at least one is given)::

    dogstatsd: {listen_udp: "127.0.0.1:8125", listen_uds: /run/monbridge/dsd.socket, flush_interval: 10}
    intake: {listen: "127.0.0.1:8126", api_keys: ["${DD_INTAKE_KEY}"]}
    export: {site: datadoghq.com, api_key: "${DD_API_KEY}", interval: 10}   # or url: for a proxy
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.api import IntegrationConfig, PluginConfig
from bridge.helpers import AuthConfig, TLSConfig, parse_listen
from integrations.config import DeliveryQueue

__all__ = ["AGGREGATES", "DatadogConfig", "DeliveryQueue", "DogStatsDConfig", "ExportConfig", "IntakeConfig"]

#: The histogram and timer aggregates the Datadog Agent knows (``histogram_aggregates``).
AGGREGATES = ("max", "min", "median", "avg", "sum", "count")


#: The receive buffer a DogStatsD socket asks for unless told: the system's default (212,992 bytes on
#: Linux) holds 1-2 ms of a busy stream, and any pause of the reader longer than that loses datagrams
#: (bench_dogstatsd: 0.5-2 % at half of saturation, collectd's statsd plugin as much).
DEFAULT_SO_RCVBUF = 4 << 20


class DogStatsDConfig(PluginConfig):
    """``dogstatsd``: a DogStatsD server on UDP, a Unix datagram socket, or both."""

    listen_udp: str | None = Field(default=None, description="HOST:PORT of the UDP socket (the Agent's 8125)")
    listen_uds: str | None = Field(default=None, description="path of the Unix datagram socket")
    uds_mode: int = Field(default=0o660, ge=0, le=0o777, description="permissions of the Unix socket's file")
    buffer_size: int = Field(default=8192, ge=512, le=65535,
                             description="largest datagram read, in bytes (the Agent's dogstatsd_buffer_size); "
                                         "a longer one is cut and counted")
    so_rcvbuf: int | None = Field(default=DEFAULT_SO_RCVBUF, ge=4096, le=1 << 30,
                                  description="the sockets' receive buffer asked of the kernel, in bytes (the Agent's "
                                              "dogstatsd_so_rcvbuf); 4 MiB by default, which the kernel caps at "
                                              "net.core.rmem_max (and doubles); null keeps the system's default")
    reader_queue_bytes: int = Field(default=8 << 20, ge=0, le=1 << 30,
                                    description="bytes of datagrams each socket's reader holds between the kernel "
                                                "and the parser (the C reader: the socket is emptied by a thread that "
                                                "never waits for the interpreter, so a pause of the parser does not "
                                                "overflow the receive buffer); a datagram beyond it is dropped and "
                                                "counted reader_queue. Memory is taken only as it fills. 0: no queue, "
                                                "the parsing thread reads the socket itself")
    workers: int = Field(default=1, ge=1, le=64,
                         description="UDP sockets bound with SO_REUSEPORT, each read by a thread of its own")
    flush_interval: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False,
                                  description="seconds of one aggregation interval")
    histogram_aggregates: list[Literal["max", "min", "median", "avg", "sum", "count"]] = Field(
        default_factory=lambda: ["max", "median", "avg", "count"],
        description="aggregates of histograms and timers, as the Agent's histogram_aggregates")
    histogram_percentiles: list[float] = Field(
        default_factory=lambda: [0.95], description="percentiles of histograms and timers (0 < p < 1), as the "
                                                    "Agent's histogram_percentiles")
    max_contexts: int = Field(default=100_000, ge=1, description="most metric contexts (name, type, tags) in one "
                                                                "interval; beyond it samples are dropped and counted")
    max_tags: int = Field(default=100, ge=1, le=10_000, description="most tags of one sample")
    expire_after: float = Field(default=300.0, gt=0, description="seconds a series stays after its last sample")

    @field_validator("listen_udp")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            parse_listen(v)
        return v

    @field_validator("reader_queue_bytes")
    @classmethod
    def _queue(cls, v: int) -> int:
        if 0 < v < 1 << 17:
            raise ValueError("reader_queue_bytes must be 0 (no queue) or at least 131072")
        return v

    @field_validator("listen_uds")
    @classmethod
    def _uds(cls, v: str | None) -> str | None:
        if v is not None and (not v or len(v.encode()) > 107 or "\x00" in v):
            raise ValueError("listen_uds must be a socket path of at most 107 bytes")
        return v

    @field_validator("histogram_percentiles")
    @classmethod
    def _percentiles(cls, v: list[float]) -> list[float]:
        for p in v:
            if not (math.isfinite(p) and 0 < p < 1):
                raise ValueError(f"histogram_percentiles: {p!r} is not between 0 and 1 (0.95 is the 95th)")
        return v

    @model_validator(mode="after")
    def _queue_holds_datagrams(self) -> DogStatsDConfig:
        if self.reader_queue_bytes and self.reader_queue_bytes < 4 * (self.buffer_size + 17):
            raise ValueError(f"reader_queue_bytes ({self.reader_queue_bytes}) must hold at least four datagrams of "
                             f"buffer_size: at least {4 * (self.buffer_size + 17)}, or 0 (no queue)")
        return self

    @model_validator(mode="after")
    def _some(self) -> DogStatsDConfig:
        if self.listen_udp is None and self.listen_uds is None:
            raise ValueError('dogstatsd needs listen_udp, listen_uds or both, e.g. {listen_udp: "127.0.0.1:8125"}')
        return self


class IntakeConfig(PluginConfig):
    """``intake``: the HTTP routes Datadog Agents and API clients submit to, on a listener of its own."""

    listen: str = "127.0.0.1:8126"
    api_keys: list[SecretStr] = Field(min_length=1, description="the API keys accepted (DD-API-KEY header or "
                                                                "api_key parameter); any other gets 403")
    tls: TLSConfig | None = None
    auth: AuthConfig | None = None
    max_request_bytes: int = Field(default=3_200_000, ge=1024,
                                   description="largest request body as sent (compressed); beyond it 413")
    max_decompressed_bytes: int = Field(default=64 << 20, ge=1024,
                                        description="largest request body decompressed; beyond it 413")
    read_timeout: float = Field(default=30.0, gt=0, le=3600,
                                description="seconds a connection may take to send a request and its body")
    max_series: int = Field(default=200_000, ge=1, description="most series intake data may hold at once")
    max_points: int = Field(default=100_000, ge=1, description="most points in one request")
    expire_after: float = Field(default=300.0, gt=0, description="seconds a series stays after its last point")
    max_tags: int = Field(default=100, ge=1, le=10_000, description="most tags of one series or check run; "
                                                                   "beyond it the series is rejected")
    max_alerts: int = Field(default=10_000, ge=1, le=10_000,
                            description="most check runs (check, host, tags) alerting at once; beyond it a "
                                        "failing check run is dropped and counted")
    unknown_severity: Literal["warning", "critical", "none"] = Field(
        default="warning", description="severity of the alert a check run UNKNOWN (3) raises (none: it raises "
                                       "none and resolves the check's alert)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: list[SecretStr]) -> list[SecretStr]:
        if any(not k.get_secret_value().strip() for k in v):
            raise ValueError("api_keys holds an empty key")
        return v


def _env(name: str) -> str | None:
    v = os.environ.get(name, "").strip()
    return v or None


class ExportConfig(PluginConfig):
    """``export``: metrics, events and service checks to Datadog's API.

    Unset fields come from the environment as in the Datadog Agent: ``api_key`` from
    ``DD_API_KEY``, ``site`` from ``DD_SITE``, ``hostname`` from ``DD_HOSTNAME``, ``tags`` from
    ``DD_TAGS`` (space- or comma-separated ``key:value``)."""

    site: str | None = Field(default=None, description="the Datadog site (default DD_SITE, else datadoghq.com)")
    url: str | None = Field(default=None, description="a base URL to send to instead of https://api.<site> "
                                                      "(a proxy)")
    api_key: SecretStr | None = Field(default=None, description="the API key (default DD_API_KEY)")
    hostname: str | None = Field(default=None, description="the host of series without one (default DD_HOSTNAME, "
                                                           "else this machine's name)")
    tags: list[str] | None = Field(default=None, description="tags added to everything sent (default DD_TAGS)")
    interval: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False, description="seconds between exports")
    timeout: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False,
                           description="seconds one request may take")
    alerts: bool = Field(default=True, description="send alerts as events and service checks")
    max_series: int = Field(default=200_000, ge=1, description="most series whose last cumulative point is "
                                                              "remembered (for count deltas); beyond it the least "
                                                              "recently updated are forgotten")
    max_distribution_values: int = Field(default=4096, ge=1, le=1_000_000,
                                         description="most values one distribution point expands to; a histogram "
                                                     "with more is scaled down to it")
    queue: DeliveryQueue = Field(default_factory=DeliveryQueue)

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if data.get("api_key") is None and (key := _env("DD_API_KEY")) is not None:
            data["api_key"] = key
        if data.get("site") is None:
            data["site"] = _env("DD_SITE") or "datadoghq.com"
        if data.get("hostname") is None and (host := _env("DD_HOSTNAME")) is not None:
            data["hostname"] = host
        if data.get("tags") is None:
            data["tags"] = [t for t in (_env("DD_TAGS") or "").replace(",", " ").split() if t]
        return data

    @model_validator(mode="after")
    def _checks(self) -> ExportConfig:
        if self.api_key is None:
            raise ValueError("export needs api_key (or DD_API_KEY in the environment)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url[:80]!r} is not an http:// or https:// URL")
        return self


class DatadogConfig(IntegrationConfig):
    """DogStatsD and Datadog intake in, the Datadog API out: each part only where configured."""

    dogstatsd: DogStatsDConfig | None = None
    intake: IntakeConfig | None = None
    export: ExportConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _export_interval(cls, data: Any) -> Any:
        """``export.interval`` is the plugin's round interval (the supervisor exports each round)
        unless ``interval`` is given too."""
        if isinstance(data, Mapping) and isinstance(data.get("export"), Mapping) \
                and "interval" in data["export"] and "interval" not in data:
            data = {**data, "interval": data["export"]["interval"]}
        return data

    @model_validator(mode="after")
    def _some(self) -> DatadogConfig:
        if self.dogstatsd is None and self.intake is None and self.export is None:
            raise ValueError("give dogstatsd, intake, export, or several of them")
        return self
