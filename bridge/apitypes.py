"""The plugin API's data types and optional hooks: the metrics, export results, the export batch's
views, push ingest, alerts and dashboard events, the typed hooks a plugin may implement.

Plugins import them from ``bridge.api`` (or ``bridge``), which loads this module when one of them
is first used: reading and checking a config (``monbridge validate``) needs only the plugin types,
ids and config models, and builds none of these classes.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bridge.api import PluginType

if TYPE_CHECKING:  # the OTel SDK's trace and log parts are loaded only where alerting runs
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricsData
    from opentelemetry.sdk.trace.export import SpanExporter

AttributeValue = str | bool | int | float


@dataclass(frozen=True, slots=True)
class PluginMetadata:
    id: str
    name: str
    version: str
    author: str
    description: str
    plugin_type: PluginType

# --------------------------------------------------------------------------- metrics


class MetricKind(enum.StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"  # monotonic sum, cumulative
    UP_DOWN_COUNTER = "updowncounter"  # non-monotonic sum, cumulative
    HISTOGRAM = "histogram"  # explicit-bucket histogram, cumulative
    SUMMARY = "summary"  # quantiles, sum and count as a source computed them (Prometheus summaries)
    EXPONENTIAL_HISTOGRAM = "exponential_histogram"  # OTel base-2 exponential histogram, cumulative


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """Explicit-bucket histogram: ``bucket_counts[i]`` counts values in ``(bounds[i-1], bounds[i]]``
    (not cumulative, OTel's layout); the last bucket is ``(bounds[-1], +Inf)``."""

    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    sum: float
    count: int
    min: float | None = None
    max: float | None = None
    #: The ``le`` label values as an imported histogram's source wrote them ("1" or "1.0"):
    #: Prometheus 2 keeps them as text, so re-exposed with other text they would be other series.
    le_labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.bucket_counts) != len(self.bounds) + 1:
            raise ValueError(
                f"histogram has {len(self.bounds)} bounds and {len(self.bucket_counts)} bucket counts; "
                "expected len(bounds) + 1 bucket counts"
            )
        if any(b >= a for a, b in zip(self.bounds[1:], self.bounds, strict=False)):
            raise ValueError("histogram bounds must be strictly increasing")
        if self.le_labels is not None and len(self.le_labels) != len(self.bucket_counts):
            raise ValueError("histogram le_labels must name every bucket, +Inf included")


@dataclass(frozen=True, slots=True)
class SummaryValue:
    """A summary as its source computed it: ``quantiles`` are (quantile, value) pairs, with
    ``sum`` and ``count`` of the observations since ``start_time_ns``."""

    quantiles: tuple[tuple[float, float], ...]
    sum: float
    count: float
    #: The ``quantile`` label values as an imported summary's source wrote them (see HistogramValue.le_labels).
    quantile_labels: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ExponentialHistogramValue:
    """OTel's base-2 exponential histogram (OTLP ``ExponentialHistogramDataPoint``), as it came.

    With ``base = 2 ** (2 ** -scale)``, ``positive_counts[i]`` counts values in
    ``(base ** (positive_offset + i), base ** (positive_offset + i + 1)]``; ``negative_counts``
    mirror it for negative values; ``zero_count`` counts values within ``zero_threshold`` of 0.
    The counts are per bucket (not cumulative).
    """

    scale: int
    zero_count: int
    positive_offset: int
    positive_counts: tuple[int, ...]
    negative_offset: int
    negative_counts: tuple[int, ...]
    count: int
    sum: float | None = None
    zero_threshold: float = 0.0
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if not -10 <= self.scale <= 20:
            raise ValueError(f"exponential histogram scale {self.scale} is outside [-10, 20]")


_NO_ATTRIBUTES: Any = object()  # Metric's default attributes: a new dict each


@dataclass(slots=True, init=False)
class Metric:
    """One series' value at one time.

    ``start_time_ns`` is the start of a cumulative sum or histogram; a Metric that carries one
    (or any histogram) is pre-aggregated and reaches exporters as it is. Timestamps are Unix
    nanoseconds; ``timestamp_ns`` defaults to the time of collection.
    """

    name: str
    kind: MetricKind
    value: float | HistogramValue | SummaryValue
    unit: str = ""
    description: str = ""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    timestamp_ns: int | None = None
    start_time_ns: int | None = None

    def __init__(self, name: str, kind: MetricKind, value: float | HistogramValue | SummaryValue, unit: str = "",
                 description: str = "", attributes: Mapping[str, AttributeValue] = _NO_ATTRIBUTES,  # type: ignore[assignment]
                 timestamp_ns: int | None = None, start_time_ns: int | None = None) -> None:
        # Written out rather than generated: the generated one calls __post_init__ and builds the
        # default dict through a factory, 20% of a Metric's cost, and a Metric is built per
        # series per collection.
        self.name = name
        self.kind = kind
        self.value = value
        self.unit = unit
        self.description = description
        self.attributes = {} if attributes is _NO_ATTRIBUTES else attributes
        self.timestamp_ns = timestamp_ns
        self.start_time_ns = start_time_ns
        c = value.__class__
        if (c is float or c is int) and kind not in _AGGREGATES:
            # The common case, checked first and with module constants (an enum member looked up
            # on its class costs more than this whole check).
            return
        self.__post_init__()

    def __post_init__(self) -> None:
        if (self.kind is MetricKind.HISTOGRAM) != isinstance(self.value, HistogramValue):
            raise ValueError(f"metric {self.name!r}: histograms need a HistogramValue and only histograms take one")
        if (self.kind is MetricKind.SUMMARY) != isinstance(self.value, SummaryValue):
            raise ValueError(f"metric {self.name!r}: summaries need a SummaryValue and only summaries take one")
        if (self.kind is MetricKind.EXPONENTIAL_HISTOGRAM) != isinstance(self.value, ExponentialHistogramValue):
            raise ValueError(f"metric {self.name!r}: exponential histograms need an ExponentialHistogramValue "
                             "and only they take one")

    @property
    def preaggregated(self) -> bool:
        return self.kind in _AGGREGATES or self.start_time_ns is not None


_AGGREGATES = frozenset((MetricKind.HISTOGRAM, MetricKind.SUMMARY, MetricKind.EXPONENTIAL_HISTOGRAM))


# --------------------------------------------------------------------------- export results


class ExportStatus(enum.StrEnum):
    SUCCESS = "success"
    RETRYABLE = "retryable"  # the same data may succeed later (a backend outage, 429, 5xx)
    PERMANENT = "permanent"  # the data will never be accepted (4xx, bad data): retrying is pointless


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What one export call did (the OTel SDK's ``MetricExportResult``, with the reason).

    ``reason`` is safe to log (no secrets); ``retry_after`` is the backend's ``Retry-After``, in
    seconds, when it sent one.
    """

    status: ExportStatus
    reason: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is ExportStatus.SUCCESS

    @classmethod
    def success(cls) -> ExportResult:
        return _SUCCESS

    @classmethod
    def retryable(cls, reason: str, retry_after: float | None = None) -> ExportResult:
        return cls(ExportStatus.RETRYABLE, reason, retry_after)

    @classmethod
    def permanent(cls, reason: str) -> ExportResult:
        return cls(ExportStatus.PERMANENT, reason)


_SUCCESS = ExportResult(ExportStatus.SUCCESS)


# --------------------------------------------------------------------------- the export batch


@dataclass(frozen=True, slots=True)
class PrometheusView:
    """A series as Prometheus sees it, computed once and kept with the series.

    ``name`` is the sample name as exposed (a non-imported counter's ends in ``_total``; a
    histogram's or summary's is the base its ``_bucket``/``_sum``/``_count`` samples extend);
    ``labels`` the label set (sorted by name, values unescaped, without ``__name__``); ``le`` the
    ``le`` texts of a histogram's buckets (``+Inf`` last) or the ``quantile`` texts of a summary,
    as the source wrote them when it was imported, else formatted as the renderer writes them.
    """

    name: str
    labels: tuple[tuple[str, str], ...]
    le: tuple[str, ...] = ()


class SeriesView(Protocol):
    """One series of a ``MetricBatch`` (read-only: its attributes cannot be set)."""

    @property
    def attributes(self) -> Mapping[str, AttributeValue]: ...
    @property
    def value(self) -> float | HistogramValue | SummaryValue | ExponentialHistogramValue: ...
    @property
    def start_ns(self) -> int | None: ...
    @property
    def time_ns(self) -> int: ...
    @property
    def first_ns(self) -> int:
        """When the pipeline first saw the series (the start of a cumulative point that has none)."""
    @property
    def accumulated(self) -> bool:
        """True when the value is a total the pipeline built from delta pushes (``MetricIngest.push``
        with ``delta``): all of it was received here since ``start_ns``, none of it is older history."""
    @property
    def identity(self) -> object:
        """The same object for the same series in every batch while the series lives (a key for
        what a sink remembers about it, e.g. what it last sent)."""
    @property
    def prom(self) -> PrometheusView: ...


class FamilyView(Protocol):
    """All series of one metric name in a ``MetricBatch``. ``native`` families have Prometheus
    names (imported from Prometheus), exposed as they are."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> MetricKind: ...
    @property
    def unit(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def native(self) -> bool: ...
    @property
    def series(self) -> Sequence[SeriesView]: ...


@runtime_checkable
class MetricBatch(Protocol):
    """A read-only snapshot of one round of the pipeline, shared by every sink exporting in it.

    Walk it as families and series (Prometheus-shaped sinks read each series' ``prom`` view), take
    it as the plugin API's ``Metric`` list (``metrics()``) or as OTel ``MetricsData``
    (``to_otel()``); both are built once per batch and shared, so treat them as read-only too.
    ``select`` narrows it to the series a sink's ``match[]`` selectors choose. Records after the
    batch was taken do not change it.
    """

    @property
    def time_ns(self) -> int:
        """When the batch was taken."""
    @property
    def resource_attributes(self) -> Mapping[str, AttributeValue]: ...

    def families(self) -> Sequence[FamilyView]:
        """The families that have series, in name order."""

    def metrics(self) -> list[Metric]:
        """Every series as a Metric (built once per batch; the list is the caller's, the Metrics are shared)."""

    def to_otel(self) -> MetricsData:
        """The batch as one OTel ``MetricsData`` (built once per batch and shared; blocking and
        thread-safe: call it from a worker thread)."""

    def select(self, selectors: Sequence[str]) -> MetricBatch:
        """The series that any of ``selectors`` (Prometheus series selectors, as ``match[]``
        takes them: ``up``, ``{job="node"}``, ``http_requests_total{code=~"5.."}``) matches, on the
        Prometheus view (``__name__`` is the family's exposed name). A bad selector is a
        ValueError naming it."""


class ExportSink(Protocol):
    """Where an integration exports, in the spirit of the OTel SDK's ``MetricExporter``.

    ``export`` sends one batch within ``timeout`` seconds and says how it went; it should not
    raise (an exception is recorded as a retryable failure). ``force_flush`` delivers what the sink
    has buffered, within ``timeout``; False when it could not. ``shutdown`` releases the sink; a
    second call does nothing.
    """

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult: ...

    async def force_flush(self, timeout: float) -> bool: ...

    async def shutdown(self, timeout: float | None = None) -> None: ...


def export_failure(e: BaseException) -> ExportResult:
    """An exception raised by an export as a retryable result naming it."""
    return ExportResult.retryable(f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------- push ingest


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one ``MetricIngest.push`` took: ``accepted`` points, ``rejected`` ones by reason
    (``cardinality``, ``conflict``, ``invalid_name``, ``out_of_order``, ...), and ``message``, a
    short text naming what was rejected and why (empty when nothing was), safe to send back."""

    accepted: int
    rejected: Mapping[str, int] = field(default_factory=dict)
    message: str = ""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class MetricIngest(Protocol):
    """A push receiver's way into the pipeline, given to an integration by ``bind_ingest``.

    Unlike an import round (which replaces the source's whole series set), a push merges: the
    series it names are set, the others stay. A series not pushed again within ``expire_after``
    seconds expires (from ``/metrics``, and remote write sends its staleness marker), as a
    scraped series that disappears does. The pipeline's limits apply; what they refuse is counted,
    logged and returned, never raised.
    """

    expire_after: float
    #: The most series the integration's pushes may hold at once, and the most metric families
    #: they may create (None: no bound but the cardinality limit's); beyond them points are rejected.
    max_series: int | None
    max_families: int | None

    def push(self, metrics: Sequence[Metric], *, delta: bool = False) -> IngestResult:
        """Merge ``metrics`` into the pipeline. With ``delta`` each value (a number, a
        HistogramValue or an ExponentialHistogramValue) is the change over ``[start_time_ns,
        timestamp_ns]`` and is added to the series' running total (delta to cumulative), when it
        continues it; a point that does not (it starts before the total's last point) is rejected."""
        ...

    def expire(self) -> int:
        """Expire the series not pushed for ``expire_after`` seconds; return how many."""
        ...

    def part(self, name: str) -> MetricIngest:
        """An ingest of its own for one part of the integration (a DogStatsD server beside an HTTP
        intake): its series, ``expire_after`` and ``max_series`` are apart from the other parts',
        and they go when the integration's do (it stops or fails)."""
        ...


# --------------------------------------------------------------------------- alerts and dashboard


class AlertState(enum.StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(slots=True)
class Alert:
    id: str
    name: str
    severity: str
    state: AlertState = AlertState.FIRING
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    value: float | None = None
    starts_at: float = field(default_factory=time.time)
    ends_at: float | None = None
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class ComponentDefinition:
    id: str
    name: str
    kind: str  # chart type or widget kind, e.g. "timeseries", "status"
    description: str = ""
    params_schema: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ComponentEvent:
    component_id: str
    event_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- optional hooks
#
# A plugin implements any of these besides its plugin type's ABC; the core looks for each with
# ``isinstance`` (the protocols are runtime-checkable: a plugin need not inherit from them, only
# define the methods; mypy checks their signatures where a plugin declares one as a base).


@dataclass(frozen=True, slots=True)
class GroupingSettings:
    """How alerts are grouped into notifications (Alertmanager's route settings): alerts with the
    same values of ``group_by`` form a group (``("...",)``: all labels); a new group waits
    ``group_wait`` seconds, a changed one ``group_interval``, an unchanged one ``repeat_interval``."""

    group_by: tuple[str, ...] = ("alertname",)
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 14_400.0


@runtime_checkable
class AlertContextHook(Protocol):
    """An alert processor that wants the alert engine's context."""

    def attach(self, ctx: Any) -> None:
        """Called once per plugin instance by the alert engine, on the event loop, before the
        instance sees its first alert (at start and when a reload brings a new instance), with a
        ``bridge.notifiers.AlertContext``: the engine (store, ``fire``/``resolve``/``escalate``,
        ``state_path``), the metric pipeline and the resource."""


@runtime_checkable
class GroupingHook(Protocol):
    """An alert processor that sets how alerts are grouped into notifications."""

    def grouping_settings(self) -> GroupingSettings:
        """Called by the alert engine at start, every second and on reload; the last processor in
        config order that has this hook wins (without one: ``GroupingSettings()``)."""


@runtime_checkable
class MuteHook(Protocol):
    """An alert processor that mutes alerts (an inhibition)."""

    def muted(self, alert: Alert) -> str | None:
        """Why ``alert`` is muted now, or None. Called by the dispatcher, on the event loop, for
        each alert of a group about to be notified (silences are asked first); must not block."""


@runtime_checkable
class EscalationHook(Protocol):
    """An alert processor that escalates to notifiers of its own."""

    def escalation_notifiers(self) -> Sequence[str]:
        """The plugin ids of the notifiers that only get escalations: the engine routes no
        grouped notification to them. Called at start, every second and on reload."""


@runtime_checkable
class NotifierHook(Protocol):
    """An alert processor that delivers notifications (``bridge.notifiers.Notifier`` is the base
    to build one on)."""

    def notification_route(self) -> tuple[tuple[Any, ...], bool]:
        """The matchers (``bridge.notifiers.Matcher``) the alerts it is notified about must
        satisfy (none: every alert), and whether it is also notified of resolutions. Called by the
        alert engine at start, every second and on reload."""

    async def send(self, notification: Any) -> None:
        """Deliver one ``bridge.notifiers.Notification`` (an alert group). Called on the event
        loop from the durable outbox, once the notification is on disk; the notifier bounds each
        attempt itself (its config's ``timeout``). ``PermanentDeliveryError`` drops the
        notification; any other exception (``DeliveryError``, with the receiver's
        ``retry_after``) has it retried with backoff."""


@runtime_checkable
class TelemetryExporterHook(Protocol):
    """An integration that carries the alert engine's spans and log records (OTLP; Elasticsearch
    takes the transitions' log records)."""

    def telemetry_exporters(self) -> tuple[SpanExporter | None, LogRecordExporter | None] | None:
        """A span exporter and a log record exporter for the alert engine's telemetry (each
        alert's span, each transition's log record; either None when the integration takes only
        the other), or None when this instance, as configured, has nowhere to send them (an OTLP
        integration that only receives). Called by the alert engine after ``initialize``; every
        integration that gives exporters gets the telemetry. An exception is logged and the
        engine goes on without exporting through that integration."""


@runtime_checkable
class AlertSourceHook(Protocol):
    """A collector that raises alerts of its own (the Nagios collector's hard states)."""

    async def import_alerts(self) -> Sequence[Alert]:
        """Called by the alert engine every import round (``alerting.import_interval``), as an
        integration's ``import_alerts``: a firing alert fires (or, with the fingerprint of an
        active one, updates it); a resolved one resolves the active alert with its fingerprint.
        Bounded like an integration's call; an exception is logged and the round goes on."""


@runtime_checkable
class ReportHook(Protocol):
    """A collector or integration that describes what it collected or imported in its own terms
    for ``monbridge test``."""

    async def test_report(self) -> Sequence[str]:
        """Called by ``monbridge test`` once the plugin is running and has collected once (an
        integration: once its import round ran); the lines are printed before the metrics, which a
        collector collects again after it. A ``TestReport`` with ``failed`` set says the round
        failed (a target that could not be scraped): ``monbridge test`` then exits 1."""


class TestReport(list[str]):
    """``ReportHook.test_report``'s lines, with whether what they report is a failure."""

    __test__ = False  # not a test class, whatever pytest's name patterns say

    def __init__(self, lines: Iterable[str] = (), failed: bool = False) -> None:
        super().__init__(lines)
        self.failed = failed


@runtime_checkable
class ExportPreviewHook(Protocol):
    """An export sink that can say what ``export`` would send, without sending (``monbridge test``
    without ``--send``)."""

    async def preview_export(self, batch: MetricBatch) -> Sequence[str]:
        """Lines naming where ``batch`` would go and what would be sent (requests, bytes, series);
        nothing is sent and no queue is touched. Credentials never appear in them."""


@runtime_checkable
class NotificationPreviewHook(Protocol):
    """A notifier that can render what ``send`` would deliver, without delivering (``monbridge
    test`` without ``--send``)."""

    async def preview(self, notification: Any) -> Sequence[str]:
        """Lines showing the request(s) or message ``send(notification)`` would make (destination,
        method, headers, body); nothing is sent. Secrets are shown as ``<secret>``."""
