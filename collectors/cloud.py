"""What the cloud monitoring collectors share (``monitoring.metrics.cloudwatch``, ``.gcp``, ``.azure``):
their client library as an optional extra, checked when a config names the collector; Prometheus
names from the clouds' names; and the table of each collector's own metrics (up, API requests,
errors by reason, queries that found no data), one per API target."""

from __future__ import annotations

import importlib.util
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from bridge.api import AttributeValue, MetricKind
from collectors.system import MetricSpec, Point

__all__ = ["CLOUD_EXTRA", "CloudState", "cloud_metrics", "missing_library", "prometheus_part", "snake_case"]

#: The optional dependency group that installs the clouds' client libraries.
CLOUD_EXTRA = "cloud"


def missing_library(module: str, plugin_id: str, package: str) -> str | None:
    """What to tell a user whose config names ``plugin_id`` when ``module`` is not installed (None
    when it is). Looked up without importing it: validating a config stays cheap."""
    try:
        if importlib.util.find_spec(module) is not None:
            return None
    except (ImportError, ValueError):
        pass
    return (f"{plugin_id} needs the {package} package, which is not installed: install monbridge's "
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
