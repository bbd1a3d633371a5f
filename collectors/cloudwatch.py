"""AWS CloudWatch metrics through ``GetMetricData``, named as cloudwatch_exporter names them.

Each configured metric (namespace, name, dimensions) and statistic is one query; its value is the
newest data point of the window ``[end - range, end]``, where ``end`` is ``now - delay`` rounded
down to the metric's period (CloudWatch publishes a period's statistics minutes after it ends:
``delay`` defaults to 600 s, as cloudwatch_exporter's ``delay_seconds``). The queries are sent in
as few ``GetMetricData`` calls as the API allows: at most 500 queries a call and 100,800 data
points (queries x points in the window) a call, one call per window; each call follows its
``NextToken`` pages (at most ``MAX_PAGES``).

Names: ``aws_<namespace>_<metric>_<statistic>`` in snake case with the dimensions as labels
(``aws_ec2_cpuutilization_average{instance_id="i-0abc"}``), as cloudwatch_exporter exposes them;
the data point's own time is the sample's time.

Credentials come from the standard AWS chain (environment, shared config and credentials files
with ``profile``, web identity, container and instance roles); ``endpoint_url`` points the client
at an emulator or a VPC endpoint. boto3 blocks: the client is made and called in a worker thread.

The collector's own metrics (``aws_cloudwatch_up``, ``aws_cloudwatch_requests_total``,
``aws_cloudwatch_errors_total{reason}``, ``aws_cloudwatch_queries_without_data``) carry the
``region``. A failed call (no credentials, access denied, throttling, an endpoint that does not
answer) makes ``up`` 0 for that collection, is counted by its error code and logged once, without
a stack trace; the other calls' metrics are still reported.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from bridge.api import (
    AttributeValue,
    CollectorConfig,
    HttpUrl,
    Metric,
    MetricKind,
    PluginConfig,
    PluginError,
    PluginMetadata,
    PluginType,
    validate_plugin_id,
)
from collectors.cloud import CloudCollector, cloud_metrics, prometheus_part, require_library, snake_case

__all__ = ["MAX_DATAPOINTS", "MAX_QUERIES", "PLUGIN_ID", "CloudWatchCollector", "CloudWatchConfig", "CloudWatchMetric",
           "Query", "batches", "plan"]

PLUGIN_ID = validate_plugin_id("monitoring.metrics.cloudwatch", PluginType.METRIC_COLLECTOR)

log = logging.getLogger("monbridge.collectors.cloudwatch")

#: GetMetricData's limits: queries in one call, and data points one call may return.
MAX_QUERIES = 500
MAX_DATAPOINTS = 100_800
#: NextToken pages followed for one call.
MAX_PAGES = 100

_STATISTIC = re.compile(r"^(SampleCount|Average|Sum|Minimum|Maximum|IQM|(p|tm|wm|tc|ts|pr)\d{1,2}(\.\d{1,10})?"
                        r"|(TM|WM|TC|TS|PR)\([0-9.%:]{1,40}\))$")


class CloudWatchMetric(PluginConfig):
    """One CloudWatch metric and the statistics read of it."""

    namespace: str = Field(min_length=1, max_length=255, description="e.g. AWS/EC2")
    name: str = Field(min_length=1, max_length=255, description="the metric's name, e.g. CPUUtilization")
    dimensions: dict[str, str] = Field(default_factory=dict, max_length=30, description="dimension name -> value")
    statistics: tuple[str, ...] = Field(
        default=("Average",), min_length=1,
        description="Average, Sum, Minimum, Maximum, SampleCount, or a percentile/extended statistic (p99, tm90)",
    )
    period: int = Field(default=60, ge=1, description="seconds a data point covers: 1, 5, 10, 30 or a multiple of 60")
    delay: int | None = Field(default=None, ge=0, description="this metric's delay (default: the collector's)")
    range: int | None = Field(default=None, ge=1, description="this metric's window (default: the collector's)")

    @field_validator("statistics")
    @classmethod
    def _statistics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for s in v:
            if not _STATISTIC.match(s):
                raise ValueError(f"unknown statistic {s[:40]!r}: expected Average, Sum, Minimum, Maximum, SampleCount, "
                                 "IQM or an extended statistic such as p99 or tm90")
        if len(set(v)) != len(v):
            raise ValueError("a statistic is named twice")
        return v

    @field_validator("period")
    @classmethod
    def _period(cls, v: int) -> int:
        if v not in (1, 5, 10, 30) and v % 60:
            raise ValueError("expected 1, 5, 10, 30 or a multiple of 60 seconds")
        return v


class CloudWatchConfig(CollectorConfig):
    collection_interval: float = Field(default=60.0, gt=0, description="seconds between collections")
    region: str | None = Field(default=None, min_length=1, description="AWS region (default: the AWS config chain's)")
    endpoint_url: HttpUrl | None = Field(default=None, description="the CloudWatch endpoint: an emulator, a VPC endpoint")
    profile: str | None = Field(default=None, min_length=1, description="a named profile of the shared AWS config files")
    delay: int = Field(default=600, ge=0, description="seconds the newest window ends before now: CloudWatch's lag")
    range: int = Field(default=600, ge=1, description="seconds of the window searched for each query's newest point")
    metrics: tuple[CloudWatchMetric, ...] = Field(min_length=1, description="the metrics read")
    max_queries: int = Field(default=5000, ge=1, description="most queries (metric x statistic) configured")

    @model_validator(mode="after")
    def _check(self) -> CloudWatchConfig:
        require_library(PLUGIN_ID, ("boto3", "boto3"))
        n = sum(len(m.statistics) for m in self.metrics)
        if n > self.max_queries:
            raise ValueError(f"metrics name {n} queries (metric x statistic), more than max_queries ({self.max_queries})")
        return self


# --------------------------------------------------------------------------- planning the calls


@dataclass(frozen=True, slots=True)
class Query:
    """One GetMetricData query: ``id`` is its MetricDataQuery Id, ``where`` its config path."""

    id: str
    where: str
    metric: CloudWatchMetric
    statistic: str
    name: str  # the Prometheus name
    attributes: Mapping[str, str]
    start: int  # the window, Unix seconds
    end: int

    @property
    def datapoints(self) -> int:
        return max(1, (self.end - self.start) // self.metric.period)

    def request(self) -> dict[str, Any]:
        m = self.metric
        return {"Id": self.id, "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": m.namespace, "MetricName": m.name,
                       "Dimensions": [{"Name": k, "Value": v} for k, v in m.dimensions.items()]},
            "Period": m.period, "Stat": self.statistic}}


def metric_name(namespace: str, name: str, statistic: str) -> str:
    return "_".join(prometheus_part(snake_case(p)) for p in (namespace, name, statistic))


def plan(cfg: CloudWatchConfig, now: float) -> list[Query]:
    """Every query of ``cfg`` with its window at ``now`` (period-aligned, ``delay`` before now)."""
    out: list[Query] = []
    for i, m in enumerate(cfg.metrics):
        delay = cfg.delay if m.delay is None else m.delay
        window = cfg.range if m.range is None else m.range
        end = int((now - delay) // m.period) * m.period
        start = end - max(1, math.ceil(window / m.period)) * m.period
        attrs = {prometheus_part(snake_case(k)): v for k, v in m.dimensions.items()}
        for j, stat in enumerate(m.statistics):
            out.append(Query(f"q{i}_{j}", f"metrics[{i}]", m, stat, metric_name(m.namespace, m.name, stat), attrs,
                             start, end))
    return out


def batches(queries: Sequence[Query]) -> list[list[Query]]:
    """The queries as GetMetricData calls: one window a call, at most MAX_QUERIES queries and
    MAX_DATAPOINTS data points (a query's points in its window) a call."""
    by_window: dict[tuple[int, int], list[Query]] = {}
    for q in queries:
        by_window.setdefault((q.start, q.end), []).append(q)
    out: list[list[Query]] = []
    for _, group in sorted(by_window.items()):
        call: list[Query] = []
        points = 0
        for q in group:
            if call and (len(call) == MAX_QUERIES or points + q.datapoints > MAX_DATAPOINTS):
                out.append(call)
                call, points = [], 0
            call.append(q)
            points += q.datapoints
        if call:
            out.append(call)
    return out


# --------------------------------------------------------------------------- the collector


class CloudWatchCollector(CloudCollector):
    """CloudWatch metrics by GetMetricData (see the module docstring)."""

    config_model: ClassVar[type[PluginConfig]] = CloudWatchConfig
    plugin_id = PLUGIN_ID
    own_metrics = cloud_metrics("aws_cloudwatch", "GetMetricData")
    log = log

    def __init__(self, client: Any = None) -> None:
        super().__init__(client)
        self._region = ""

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID,
            name="AWS CloudWatch metrics",
            version="0.1.0",
            author="monbridge",
            description="CloudWatch metrics of configured namespaces, dimensions and statistics, by GetMetricData",
            plugin_type=PluginType.METRIC_COLLECTOR,
        )

    async def _prepare(self, cfg: CloudWatchConfig) -> None:
        import asyncio

        client, self._region = await asyncio.to_thread(self._make_client, cfg)
        if self._client is None:
            self._client = client
        else:
            client.close()

    @staticmethod
    def _make_client(cfg: CloudWatchConfig) -> tuple[Any, str]:
        import boto3
        import botocore.config
        import botocore.exceptions

        try:
            session = boto3.session.Session(profile_name=cfg.profile)
        except botocore.exceptions.ProfileNotFound:
            raise PluginError(f"profile: no profile {cfg.profile!r} in the shared AWS config files") from None
        region = cfg.region or session.region_name
        if not region:
            raise PluginError("region: not set, and the AWS config chain (AWS_REGION, AWS_DEFAULT_REGION, the profile) "
                              "names none")
        timeout = cfg.timeout or cfg.collection_interval
        client_config = botocore.config.Config(
            connect_timeout=min(timeout, 10.0), read_timeout=min(timeout, 30.0),
            retries={"mode": "standard", "max_attempts": 2}, user_agent_extra="monbridge")
        return session.client("cloudwatch", region_name=region, endpoint_url=cfg.endpoint_url,
                              config=client_config), region

    def _target(self, cfg: CloudWatchConfig) -> dict[str, AttributeValue]:
        return {"region": self._region}

    # ----------------------------------------------------------------- calls (worker thread)

    def _collect(self, cfg: CloudWatchConfig, now: float) -> list[Metric]:
        state = self._state
        out: list[Metric] = []
        for call in batches(plan(cfg, now)):
            found = self._call(call)
            if found is None:
                state.up = False
                continue
            for q in call:
                point = found.get(q.id)
                if point is None:
                    state.without_data += 1
                    continue
                ts, value = point
                out.append(Metric(q.name, MetricKind.GAUGE, value, "",
                                  f"CloudWatch {q.metric.namespace} {q.metric.name}, statistic {q.statistic}",
                                  q.attributes, int(ts.timestamp() * 1e9)))
        return out

    def _call(self, call: list[Query]) -> dict[str, tuple[datetime, float]] | None:
        """One GetMetricData call, its pages followed: query id -> its newest (time, value); None
        when the call failed (counted and logged)."""
        import botocore.exceptions

        state = self._state
        what = f"cloudwatch GetMetricData ({self._region}, {len(call)} queries from {call[0].where})"
        by_id = {q.id: q for q in call}
        found: dict[str, tuple[datetime, float]] = {}
        kwargs: dict[str, Any] = {
            "MetricDataQueries": [q.request() for q in call],
            "StartTime": datetime.fromtimestamp(call[0].start, UTC),
            "EndTime": datetime.fromtimestamp(call[0].end, UTC),
            "ScanBy": "TimestampDescending",
        }
        for _ in range(MAX_PAGES):
            state.requests += 1
            try:
                answer = self._client.get_metric_data(**kwargs)
            except botocore.exceptions.ClientError as e:
                err = e.response.get("Error", {})
                code = str(err.get("Code") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "error")
                state.failed(log, prometheus_part(code), what, f"{code}: {str(err.get('Message', ''))[:300]}")
                return None
            except botocore.exceptions.NoCredentialsError:
                state.failed(log, "credentials", what, "no AWS credentials found by the standard chain (environment, "
                                                       "shared files, web identity, container or instance role)")
                return None
            except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError) as e:
                state.failed(log, "connection", what, str(e)[:300])
                return None
            except botocore.exceptions.BotoCoreError as e:
                state.failed(log, "error", what, f"{type(e).__name__}: {str(e)[:300]}")
                return None
            for result in answer.get("MetricDataResults", ()):
                q = by_id.get(result.get("Id", ""))
                if q is None:
                    continue
                status = result.get("StatusCode", "Complete")
                if status in ("Forbidden", "InternalError"):
                    messages = "; ".join(str(m.get("Value", ""))[:200] for m in result.get("Messages", ())[:3])
                    state.failed(log, f"query_{status.lower()}", f"cloudwatch {q.where} {q.metric.namespace} "
                                 f"{q.metric.name} {q.statistic}", f"{status}{': ' + messages if messages else ''}")
                    continue
                for ts, value in zip(result.get("Timestamps", ()), result.get("Values", ()), strict=False):
                    if q.id not in found or ts > found[q.id][0]:
                        found[q.id] = (ts, float(value))
            token = answer.get("NextToken")
            if not token:
                state.recovered(log, what)
                return found
            kwargs["NextToken"] = token
        state.failed(log, "pages", what, f"still paging after {MAX_PAGES} pages: the rest is not read")
        return found

