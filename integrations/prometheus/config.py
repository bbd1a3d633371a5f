"""The Prometheus bridge's config models (``monitoring.integration.prometheus``).

Apart from the plugin's code: validating a config with them loads no scrape loop, remote writer,
HTTP client or event loop. Relabelling rules (``RelabelConfig``) are checked here as Prometheus
checks them, their regular expressions compiled (``relabel.py``, which holds no I/O). The
plugin's modules (``plugin.py``, ``remote_write.py``) import these names from here.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from bridge.api import HttpUrl, IntegrationConfig, PluginConfig
from bridge.helpers import MAX_SHARDS
from integrations.prometheus.relabel import LABEL_NAME_RE, RelabelConfig

__all__ = [
    "DEFAULT_BODY_SIZE_LIMIT",
    "AlertsEndpointConfig",
    "BasicAuth",
    "FederateConfig",
    "PrometheusIntegrationConfig",
    "PushgatewayConfig",
    "QueueConfig",
    "RelabelConfig",
    "RemoteWriteConfig",
    "ScrapeConfig",
    "ShardConfig",
    "StaticTargetConfig",
]

#: ``body_size_limit``'s default: 64 MiB of decompressed exposition. Prometheus' default is 0 (no
#: limit), which lets one target's gzip bomb or endless body take the agent's memory; the largest
#: expositions seen in practice (kube-state-metrics of a large cluster) stay well below it.
DEFAULT_BODY_SIZE_LIMIT = 64 << 20


# ---------------------------------------------------------------------------- remote write


class QueueConfig(PluginConfig):
    """The queue between ``append`` and the senders. Defaults are Prometheus 2.42's queue_config."""

    path: str | None = Field(
        default=None,
        description="directory of the on-disk queue; unset keeps the queue in memory (a restart loses what was not sent)")
    max_bytes: int = Field(default=256 << 20, gt=0, description="bound on the queue's size; when hit the oldest data is dropped")
    max_samples_per_send: int = Field(default=500, gt=0, description="samples per request at most (Prometheus' default)")
    shards: int = Field(default=4, gt=0, le=MAX_SHARDS,
                        description="concurrent senders; a series always goes through the same one")
    min_backoff: float = Field(default=0.03, gt=0, allow_inf_nan=False,
                               description="seconds before the first retry; doubled on each retry")
    max_backoff: float = Field(default=5.0, gt=0, allow_inf_nan=False, description="longest wait between retries, in seconds")
    max_retry_after: float = Field(default=300.0, gt=0, allow_inf_nan=False,
                                   description="longest wait a receiver's Retry-After is honoured for, in seconds")
    batch_send_deadline: float = Field(default=5.0, gt=0, description="seconds a partial batch waits for more samples")
    fsync: bool = Field(default=False, description="fsync every append: survives power loss, not only a killed process")

    @model_validator(mode="after")
    def _backoffs(self) -> QueueConfig:
        if self.max_backoff < self.min_backoff:
            raise ValueError("max_backoff must be at least min_backoff")
        return self


class BasicAuth(PluginConfig):
    username: str
    password: SecretStr


class RemoteWriteConfig(PluginConfig):
    """One remote-write endpoint."""

    model_config = ConfigDict(hide_input_in_errors=True)

    url: HttpUrl = Field(description="the receiver's write endpoint, e.g. http://prometheus:9090/api/v1/write")
    name: str | None = Field(default=None, description="name in logs and self-metrics (default: the url's host:port)")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra request headers; values are secrets")
    basic_auth: BasicAuth | None = None
    bearer_token: SecretStr | None = None
    timeout: float = Field(default=30.0, gt=0, description="seconds one request may take")
    queue: QueueConfig = Field(default_factory=lambda: QueueConfig())
    send_native_histograms: bool = Field(default=False, description=(
        "send exponential histograms as native histograms (Prometheus 2.40+ with "
        "--enable-feature=native-histograms); else as explicit-bucket histograms at their boundaries"))

    @model_validator(mode="after")
    def _check(self) -> RemoteWriteConfig:
        auth = [n for n, set_ in (("basic_auth", self.basic_auth is not None), ("bearer_token", self.bearer_token is not None),
                                  ("an Authorization header", any(k.lower() == "authorization" for k in self.headers)))
                if set_]
        if len(auth) > 1:
            raise ValueError(f"set only one of {' and '.join(auth)}")
        return self

    def secrets(self) -> list[str]:
        """Every secret value of this config (for redaction)."""
        out = [v.get_secret_value() for v in self.headers.values()]
        if self.basic_auth is not None:
            out.append(self.basic_auth.password.get_secret_value())
        if self.bearer_token is not None:
            out.append(self.bearer_token.get_secret_value())
        password = urllib.parse.urlsplit(self.url).password
        if password:
            out.append(password)
        return [s for s in out if len(s) >= 3]


# ---------------------------------------------------------------------------- the plugin


def _body_size_limit() -> Any:
    return Field(default=DEFAULT_BODY_SIZE_LIMIT, ge=0, description=(
        "bytes of a scrape's decompressed body above which the scrape fails (0 = no limit; Prometheus' "
        "body_size_limit). The default, 64 MiB, is above the largest expositions seen in practice and keeps a "
        "target's gzip bomb or endless body from taking the agent's memory"))


class StaticTargetConfig(PluginConfig):
    job: str = Field(min_length=1, description="the job label of the target's series")
    url: HttpUrl = Field(description="the URL to scrape, e.g. http://127.0.0.1:9100/metrics")
    labels: dict[str, str] = Field(default_factory=dict, description="more target labels")

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not LABEL_NAME_RE.match(k) or k.startswith("__"):
                raise ValueError(f"invalid target label name {k!r}: expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __")
        return v


class ShardConfig(PluginConfig):
    index: int = Field(ge=0)
    count: int = Field(ge=1)

    @model_validator(mode="after")
    def _in_range(self) -> ShardConfig:
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} is not below shard count {self.count}")
        return self


class ScrapeConfig(PluginConfig):
    interval: float = Field(default=15.0, gt=0, description="seconds between scrapes")
    timeout: float = Field(default=10.0, gt=0, description="seconds one scrape may take")
    targets: list[StaticTargetConfig] = Field(default=[])
    file_sd: list[str] = Field(default=[], description="Prometheus file_sd files (globs), re-read on change")
    file_sd_job: str = Field(default="file_sd", min_length=1, description="job label of file_sd targets whose group sets none")
    file_sd_scheme: str = Field(default="http", pattern="^https?$")
    file_sd_metrics_path: str = Field(default="/metrics", pattern="^/")
    honor_labels: bool = False
    honor_timestamps: bool = True
    sample_limit: int = Field(default=0, ge=0, description="0 = no limit")
    label_limit: int = Field(default=0, ge=0)
    label_name_length_limit: int = Field(default=0, ge=0)
    label_value_length_limit: int = Field(default=0, ge=0)
    body_size_limit: int = _body_size_limit()
    metric_relabel_configs: list[RelabelConfig] = Field(default=[])
    shard: ShardConfig | None = Field(default=None, description="scrape only this shard's targets (default: "
                                                                "MONBRIDGE_SHARD_INDEX/COUNT or --shard-index/--shard-count)")

    @model_validator(mode="after")
    def _timeout(self) -> ScrapeConfig:
        if self.timeout > self.interval:
            raise ValueError(f"scrape timeout {self.timeout:g}s is greater than the scrape interval {self.interval:g}s")
        return self


class FederateConfig(PluginConfig):
    url: HttpUrl = Field(description="a Prometheus server's base URL or its /federate URL")
    match: list[str] = Field(min_length=1, description="series selectors, e.g. '{job=\"node\"}'")
    job: str = Field(default="federate", min_length=1)
    honor_labels: bool = True
    body_size_limit: int = _body_size_limit()

    def federate_url(self) -> str:
        u = urllib.parse.urlsplit(self.url)
        path = u.path.rstrip("/")
        if not path.endswith("/federate"):
            path += "/federate"
        query = urllib.parse.urlencode([("match[]", m) for m in self.match])
        return urllib.parse.urlunsplit((u.scheme, u.netloc, path, query, ""))


class PushgatewayConfig(PluginConfig):
    url: HttpUrl = Field(description="the Pushgateway's base URL, e.g. http://127.0.0.1:9091")
    job: str = Field(min_length=1)
    grouping: dict[str, str] = Field(default_factory=dict, description="more grouping key labels")
    timeout: float = Field(default=10.0, gt=0)
    match: list[str] = Field(default=[], description=(
        "series selectors as federation's match[] takes them (e.g. 'up', '{job=\"node\"}'): push only the "
        "series any of them selects (default: every series)"))

    @field_validator("match")
    @classmethod
    def _selectors(cls, v: list[str]) -> list[str]:
        from bridge.prometheus import parse_selector

        for i, text in enumerate(v):
            try:
                parse_selector(text)
            except ValueError as e:
                raise ValueError(f"match[{i}]: {e}") from None
        return v

    def push_url(self) -> str:
        parts = ["metrics", "job", urllib.parse.quote(self.job, safe="")]
        for k, v in self.grouping.items():
            parts += [k, urllib.parse.quote(v, safe="")] if v else [k + "@base64", "="]
        return self.url.rstrip("/") + "/" + "/".join(parts)


class AlertsEndpointConfig(PluginConfig):
    url: HttpUrl = Field(description="Alertmanager's (export) or Prometheus' (import) base URL")
    timeout: float = Field(default=10.0, gt=0)


class PrometheusIntegrationConfig(IntegrationConfig):
    """The plugin's config. ``interval`` (the round) defaults to ``scrape.interval``."""

    scrape: ScrapeConfig | None = None
    remote_write: list[RemoteWriteConfig] = Field(default=[])
    federate: list[FederateConfig] = Field(default=[])
    pushgateway: PushgatewayConfig | None = None
    export_alerts: AlertsEndpointConfig | None = Field(default=None, description="Alertmanager to send alerts to")
    import_alerts: AlertsEndpointConfig | None = Field(default=None, description="Prometheus to read alerts from")
    external_url: str = Field(default="", description="generatorURL of exported alerts")

    @model_validator(mode="before")
    @classmethod
    def _round_is_scrape_interval(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "interval" not in data and isinstance(data.get("scrape"), Mapping):
            iv = data["scrape"].get("interval")
            if isinstance(iv, int | float) and not isinstance(iv, bool):
                data = {**data, "interval": iv}
        return data
