"""The config model of ``monitoring.integration.elasticsearch``, apart from its code: validating a
config imports this, not the Elasticsearch client (``bridge.registry.BUILTIN_PLUGINS`` names it).

::

    hosts: ["https://es.example.org:9200"]     # or cloud_id
    api_key: "${ES_API_KEY}"                   # or basic_auth / bearer_token
    interval: 10
    mapping: ecs                               # or otel
    queries:
      - {name: errors_by_service, index: "logs-*", interval: 60, window: 300,
         query: {match: {log.level: error}}, aggs: {by_service: {terms: {field: service.name}}}}
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.api import IntegrationConfig, PluginConfig
from integrations.config import DeliveryQueue

__all__ = [
    "BasicAuth",
    "MAX_AGG_DEPTH",
    "BulkConfig",
    "DatasetRule",
    "ElasticsearchConfig",
    "ElasticTLS",
    "QueryConfig",
    "TemplatesConfig",
]

#: Elastic's data stream naming scheme: dataset and namespace parts (no '-' in a dataset or a
#: namespace; lower case; at most 100 bytes each).
_DATASET = re.compile(r"^[a-z0-9_.]{1,100}$")
_NAMESPACE = re.compile(r"^[a-z0-9_.]{1,100}$")
#: How deep a query's aggregations may nest (the walk of its response is bounded by it).
MAX_AGG_DEPTH = 8


def _dataset(v: str, what: str) -> str:
    if not _DATASET.match(v):
        raise ValueError(f"{what} {v[:60]!r} is not a data stream dataset/namespace (lower case a-z, 0-9, '_', '.'; "
                         "no '-'; at most 100 characters)")
    return v


class BasicAuth(PluginConfig):
    username: str = Field(min_length=1)
    password: SecretStr


class ElasticTLS(PluginConfig):
    ca_file: str | None = Field(default=None, description="CA bundle the server's certificate is checked against")
    ca_fingerprint: str | None = Field(default=None, description="SHA-256 fingerprint of the server's CA "
                                                                 "certificate (hex, ':' optional), as Elastic prints it")
    verify: bool = Field(default=True, description="check the server's certificate (false: only for tests)")

    @field_validator("ca_fingerprint")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9A-Fa-f]{64}", v.replace(":", "")):
            raise ValueError("ca_fingerprint must be 64 hex digits (SHA-256), ':' separators allowed")
        return v


class DatasetRule(PluginConfig):
    """Metrics whose name starts with ``prefix`` go to ``metrics-<dataset>-<namespace>``."""

    prefix: str = Field(min_length=1)
    dataset: str
    namespace: str | None = None

    @field_validator("dataset")
    @classmethod
    def _ds(cls, v: str) -> str:
        return _dataset(v, "dataset")

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str | None) -> str | None:
        return None if v is None else _dataset(v, "namespace")


class TemplatesConfig(PluginConfig):
    install: bool = Field(default=True, description="install monbridge's index and component templates when missing")
    overwrite: bool = Field(default=False, description="replace templates of the same name that exist already "
                                                       "(a user's own are kept unless this is set)")


class BulkConfig(PluginConfig):
    max_documents: int = Field(default=5000, ge=1, le=100_000, description="most documents in one bulk request")
    max_bytes: int = Field(default=5 << 20, ge=1024, le=100 << 20, description="most bytes in one bulk request body")


class QueryConfig(PluginConfig):
    """A search run every ``interval`` over the last ``window`` seconds; its hit count and its
    aggregations' values become gauges, labelled by bucket keys."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$", max_length=200)
    index: str = Field(min_length=1, max_length=1000)
    interval: float = Field(default=60.0, gt=0, le=86400, allow_inf_nan=False)
    window: float = Field(default=300.0, gt=0, le=366 * 86400, allow_inf_nan=False)
    time_field: str = Field(default="@timestamp", min_length=1)
    query: dict[str, Any] | None = None
    aggs: dict[str, Any] | None = None
    timeout: float = Field(default=30.0, gt=0, le=600, allow_inf_nan=False, description="seconds the search may take")
    labels: dict[str, str] = Field(default_factory=dict, description="labels added to the query's series")
    max_series: int = Field(default=10_000, ge=1, description="most series one run may produce (bucket explosion)")

    @field_validator("aggs")
    @classmethod
    def _aggs(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        def depth(aggs: Any, level: int, where: str) -> None:
            if not isinstance(aggs, dict):
                raise ValueError(f"{where}: not a mapping of aggregation names to definitions")
            if level > MAX_AGG_DEPTH:
                raise ValueError(f"{where}: aggregations nest deeper than {MAX_AGG_DEPTH}")
            for name, definition in aggs.items():
                if not isinstance(definition, dict):
                    raise ValueError(f"{where}.{name}: an aggregation's definition must be a mapping")
                for key in ("aggs", "aggregations"):
                    if key in definition:
                        depth(definition[key], level + 1, f"{where}.{name}.{key}")

        if v is not None:
            depth(v, 1, "aggs")
        return v


class ElasticsearchConfig(IntegrationConfig):
    """Metrics, alerts and (optionally) the agent's logs into Elasticsearch; searches as metrics."""

    hosts: list[str] | None = Field(default=None, min_length=1, description="node URLs (or cloud_id)")
    cloud_id: str | None = None
    api_key: SecretStr | None = None
    basic_auth: BasicAuth | None = None
    bearer_token: SecretStr | None = None
    tls: ElasticTLS | None = None
    request_timeout: float = Field(default=30.0, gt=0, le=600, allow_inf_nan=False)
    max_response_bytes: int = Field(default=32 << 20, ge=1024, le=1 << 30,
                                    description="the largest answer read (decompressed); a larger one fails its request")
    mapping: Literal["ecs", "otel"] = "ecs"
    dataset: str = Field(default="monbridge", description="dataset of metrics no rule in datasets names")
    namespace: str = Field(default="default", description="namespace of every data stream monbridge writes")
    datasets: list[DatasetRule] = Field(default_factory=list, description="dataset by metric name prefix "
                                                                          "(the longest matching prefix wins)")
    export_metrics: bool = Field(default=True, description="write the pipeline's metrics each round")
    alerts: bool = Field(default=True, description="write alert transitions to logs-monbridge.alerts-<namespace>")
    logs: bool = Field(default=False, description="write monbridge's own logs to logs-monbridge.log-<namespace>")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info", description="the least level of the log records written (with logs: true); records below "
                                    "the agent's own log level are not made at all")
    templates: TemplatesConfig = Field(default_factory=TemplatesConfig)
    bulk: BulkConfig = Field(default_factory=BulkConfig)
    queue: DeliveryQueue = Field(default_factory=DeliveryQueue)
    queries: list[QueryConfig] = Field(default_factory=list, max_length=1000)
    cluster_metrics: bool = Field(default=False, description="import cluster health and node stats as metrics")

    @field_validator("dataset", "namespace")
    @classmethod
    def _names(cls, v: str) -> str:
        return _dataset(v, "dataset/namespace")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str] | None) -> list[str] | None:
        for h in v or ():
            if not h.startswith(("http://", "https://")):
                raise ValueError(f"host {h[:80]!r} is not an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _shape(self) -> ElasticsearchConfig:
        if (self.hosts is None) == (self.cloud_id is None):
            raise ValueError("give exactly one of hosts and cloud_id")
        if sum(x is not None for x in (self.api_key, self.basic_auth, self.bearer_token)) > 1:
            raise ValueError("give at most one of api_key, basic_auth and bearer_token")
        names = [q.name for q in self.queries]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ValueError(f"queries[{i}]: name {n!r} is used by an earlier query")
        return self
