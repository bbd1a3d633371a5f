"""What the cloud monitoring collectors share (``monitoring.metrics.cloudwatch``, ``.gcp``, ``.azure``):
their client library as an optional extra, checked when a config names the collector; Prometheus
names from the clouds' names; and the table of each collector's own metrics (up, API requests,
errors by reason, queries that found no data), one per API target."""

from __future__ import annotations

import abc
import importlib.util
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.api import AttributeValue, Metric, MetricCollectorPlugin, MetricKind, PluginConfig, PluginError
from collectors.system import MetricSpec, Point, metrics_from_table

__all__ = ["CLOUD_EXTRA", "CloudCollector", "CloudState", "cloud_metrics", "require_library", "prometheus_part",
           "snake_case"]

#: The optional dependency group that installs the clouds' client libraries.
CLOUD_EXTRA = "cloud"


def require_library(plugin_id: str, *modules: tuple[str, str]) -> None:
    """ValueError (for a config model's validator) telling a user whose config names ``plugin_id``
    which ``(module, package)`` is not installed and how to install it. Looked up without
    importing it: validating a config stays cheap."""
    for module, package in modules:
        try:
            if importlib.util.find_spec(module) is not None:
                continue
        except (ImportError, ValueError):
            pass
        raise ValueError(f"{plugin_id} needs the {package} package, which is not installed: install monbridge's "
                         f"'{CLOUD_EXTRA}' extra (pip install 'monbridge[{CLOUD_EXTRA}]')")


_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_INVALID = re.compile(r"[^a-zA-Z0-9_]+")


def snake_case(name: str) -> str:
    """``CPUUtilization`` -> ``cpuutilization``, ``NetworkIn`` -> ``network_in``, ``InstanceId`` ->
    ``instance_id`` (cloudwatch_exporter's conversion: an underscore between a lower-case letter or
    digit and an upper-case one, then lower case)."""
    return _CAMEL.sub(r"\1_\2", name).lower()


def prometheus_part(text: str) -> str:
    """``text`` as part of a Prometheus name or label name: runs of other characters become ``_``."""
    part = _INVALID.sub("_", text).strip("_")
    return part or "_"


@dataclass(slots=True)
class CloudState:
    """A cloud collector's account of its API calls: the last round's and the running totals."""

    up: bool = False
    requests: int = 0  # API requests since initialize
    errors: Counter[str] = field(default_factory=Counter)  # reason -> count since initialize
    without_data: int = 0  # queries of the last round that found no data point
    logged: dict[str, str] = field(default_factory=dict)  # what -> the last message logged for it

    def failed(self, log: logging.Logger, reason: str, what: str, message: str) -> None:
        """Count an error and log it: a warning when it differs from the last one for ``what``.
        ``message`` may quote the peer: it is cut to one line, with anything like a credential masked."""
        from bridge.helpers import peer_excerpt

        self.errors[reason] += 1
        text = f"{what}: {peer_excerpt(message, 300)}"
        level = logging.DEBUG if self.logged.get(what) == text else logging.WARNING
        if len(self.logged) > 10_000:
            self.logged.clear()
        self.logged[what] = text
        log.log(level, "%s", text)

    def recovered(self, log: logging.Logger, what: str) -> None:
        if self.logged.pop(what, None) is not None:
            log.info("%s: answered again", what)


def _up(s: CloudState) -> Iterator[Point]:
    yield {}, 1.0 if s.up else 0.0


def _requests(s: CloudState) -> Iterator[Point]:
    yield {}, float(s.requests)


def _errors(s: CloudState) -> Iterator[Point]:
    for reason in sorted(s.errors):
        yield {"reason": reason}, float(s.errors[reason])


def _without_data(s: CloudState) -> Iterator[Point]:
    yield {}, float(s.without_data)


def cloud_metrics(prefix: str, api: str) -> tuple[MetricSpec[CloudState], ...]:
    """The collector's own metrics, named ``<prefix>_up`` and so on; ``api`` names the API in their help."""
    g, c = MetricKind.GAUGE, MetricKind.COUNTER
    return (
        MetricSpec(f"{prefix}_up", g, "", f"1 if every {api} request of the last collection succeeded", _up),
        MetricSpec(f"{prefix}_requests_total", c, "", f"{api} requests made", _requests),
        MetricSpec(f"{prefix}_errors_total", c, "", f"Failed {api} requests and queries, by reason", _errors),
        MetricSpec(f"{prefix}_queries_without_data", g, "",
                   "Queries of the last collection that found no data point in their window", _without_data),
    )


Attributes = Mapping[str, AttributeValue]


class CloudCollector(MetricCollectorPlugin):
    """The lifecycle of a cloud collector: a blocking client library called in a worker thread,
    one collection at a time, its own metrics (``own_metrics``) added to every collection.

    A subclass gives ``plugin_id``, ``own_metrics``, ``log``, ``_collect`` (the calls, blocking) and
    ``_target`` (the labels of its own metrics); ``client`` is a client to use instead of the one
    the subclass makes from the config (the registry makes plugins without it)."""

    plugin_id: ClassVar[str]
    own_metrics: ClassVar[tuple[MetricSpec[CloudState], ...]]
    log: ClassVar[logging.Logger]
    #: The series are named as the clouds' exporters name them: Prometheus names.
    imports_prometheus_names: ClassVar[bool] = True

    def __init__(self, client: Any = None) -> None:
        self._given_client = client
        self._client: Any = client
        self._config: Any = None
        self._state = CloudState()
        self._lock = threading.Lock()  # one collection at a time (a timed-out one may still run in its thread)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg: PluginConfig = self.parse_config(config)
        self._client = self._given_client
        self._state = CloudState()
        await self._prepare(cfg)
        self._config = cfg

    async def _prepare(self, cfg: Any) -> None:
        """What the subclass does with a new config before its first collection (nothing by default)."""

    async def start(self) -> None:
        """Nothing to start: the supervisor schedules the collections."""

    async def stop(self) -> None:
        """Nothing runs between collections."""

    async def shutdown(self) -> None:
        client, self._client = self._client, None
        if client is not None and client is not self._given_client:
            self._close(client)

    def _close(self, client: Any) -> None:
        client.close()

    async def collect_metrics(self) -> Sequence[Metric]:
        import asyncio
        import time

        return await asyncio.to_thread(self.collect_at, time.time())

    def collect_at(self, now: float) -> list[Metric]:
        """One collection as of ``now`` (Unix seconds), the collector's own metrics included
        (blocking: run it in a worker thread)."""
        cfg = self._config
        if cfg is None:
            raise PluginError(f"{self.plugin_id}: collect_at called before initialize")
        with self._lock:
            state = self._state
            state.up, state.without_data = True, 0
            metrics = self._collect(cfg, now)
            metrics.extend(metrics_from_table(self.own_metrics, state, self._row_failed, self._target(cfg)))
            return metrics

    def _row_failed(self, name: str, exc: BaseException) -> None:
        self.log.warning("%s: metric %s not built: %s: %s", self.plugin_id, name, type(exc).__name__, exc)

    @abc.abstractmethod
    def _collect(self, cfg: Any, now: float) -> list[Metric]:
        """The collection's metrics (blocking, in a worker thread, under the lock); failures are
        counted and logged in ``self._state``, which has ``up`` True when it is called."""

    @abc.abstractmethod
    def _target(self, cfg: Any) -> dict[str, AttributeValue]:
        """The labels of the collector's own metrics: what it calls (region, project, endpoint)."""
