"""The metric pipeline: one store of series, fed by every source, read by every sink.

Collectors are run by the supervisor on their own schedule; what they return is recorded here
(``Pipeline.record``) and cached. Pre-aggregated data (cumulative sums with their own start
time, histograms with bucket counts: Prometheus imports, say) is kept as it came, never
re-aggregated. Plugins that use the OpenTelemetry metrics API (``opentelemetry.metrics``
instruments) are one more source: ``inputs`` (``bridge.sdk_input``) gives them a MeterProvider
whose reader records into the pipeline before every read of it (``families``, ``snapshot``).

Limits are set on purpose: each metric family holds at most ``cardinality_limit`` series; a
series past it is dropped, counted in ``monbridge.series.dropped{reason="cardinality"}`` and
logged. A source's series that are missing from its next collection (a process that exited)
expire at once.

Sinks read the families directly: the Prometheus renderer (``bridge.exposition``), remote
write, and the OTLP push (``integrations.otlp_wire`` encodes OTLP from them); no second copy
of the series is kept for any of them.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Metric as OtelMetric
from opentelemetry.sdk.resources import Resource

from bridge.api import HistogramValue, Metric, MetricKind, SummaryValue
from bridge.sdk_input import SdkInput

__all__ = [
    "DEFAULT_CARDINALITY_LIMIT",
    "Family",
    "Pipeline",
    "Series",
    "Summary",
    "SummaryDataPoint",
    "default_resource",
    "otel_metric",
    "otel_point",
]

log = logging.getLogger("monbridge.pipeline")

DEFAULT_CARDINALITY_LIMIT = 10_000
_OTEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]{0,254}$")
_PROMETHEUS_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_DROP_LOG_EVERY_S = 60.0
_MAX_ALIASES = 4  # attribute orders remembered per series
_GC_PAUSE_MIN_BATCH = 10_000

AttrKey = tuple[tuple[str, Any], ...]


def default_resource(extra: Mapping[str, Any] | None = None) -> Resource:
    """``service.name=monbridge``, ``host.name``, then ``OTEL_RESOURCE_ATTRIBUTES`` and
    ``OTEL_SERVICE_NAME`` (which win, as the SDK's detector makes them)."""
    import socket

    from bridge import __version__

    base = Resource.create(
        {"service.name": "monbridge", "service.version": __version__, "host.name": socket.gethostname(), **(extra or {})}
    )
    return base


class Series:
    """One attribute set of a family: its latest value and who reported it."""

    __slots__ = ("name", "attributes", "key", "value", "start_ns", "time_ns", "source", "prom", "aliases", "first_ns",
                 "otlp")

    def __init__(self, name: str, attributes: dict[str, Any], key: AttrKey, source: str) -> None:
        self.name = name
        self.attributes = attributes
        self.key = key
        self.source = source
        self.value: float | HistogramValue | SummaryValue = 0.0
        self.start_ns: int | None = None
        self.time_ns = 0
        self.prom: Any = None  # the renderer's cached label string
        self.first_ns = 0  # when the pipeline first saw it: the start of a cumulative point that has none
        self.aliases: list[tuple[tuple[str, Any], ...]] = []  # unsorted attribute tuples seen for it
        self.otlp: bytes | None = None  # the OTLP encoder's cached bytes of its attributes (integrations.otlp_wire)


@dataclass(eq=False)
class Family:
    """All series of one metric name. ``version`` changes whenever a series is added, expires or
    changes value (the renderer keeps its text until then). A ``native`` family's name is a
    Prometheus name (imported from Prometheus) and is exposed as it is."""

    name: str
    kind: MetricKind
    unit: str
    description: str
    preaggregated: bool
    native: bool = False
    series: dict[AttrKey, Series] = field(default_factory=dict)
    aliases: dict[tuple[tuple[str, Any], ...], Series] = field(default_factory=dict)
    version: int = 0
    render_cache: dict[Any, Any] = field(default_factory=dict)


class Pipeline:
    """The cache of collected series."""

    def __init__(
        self,
        resource: Resource | None = None,
        *,
        cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT,
    ) -> None:
        if cardinality_limit < 1:
            raise ValueError("cardinality_limit must be at least 1")
        self.resource = resource if resource is not None else default_resource()
        self.cardinality_limit = cardinality_limit
        self._lock = threading.RLock()
        self._families: dict[str, Family] = {}
        self._owned: dict[str, set[Series]] = {}
        self.dropped: Counter[str] = Counter()
        self.expired_total = 0
        self._drop_logged: dict[tuple[str, str], float] = {}
        #: The OpenTelemetry metrics API as a source (its MeterProvider is made on first use).
        self.inputs = SdkInput(self)

    # ------------------------------------------------------------------ recording

    def record(self, source: str, metrics: Iterable[Metric], now_ns: int | None = None, *,
               prometheus_names: bool = False) -> int:
        """Replace ``source``'s series with ``metrics``; return how many were accepted.

        Series of ``source`` absent from ``metrics`` expire. A metric that cannot be accepted
        (bad name, a kind or unit other than its family's, over the cardinality limit) is
        dropped, counted by reason and logged; the rest of the batch is kept. With
        ``prometheus_names`` the names are Prometheus names (imported data), kept as they are,
        except dotted names, which no Prometheus name is (the importer's own OTel-named metrics).
        """
        if isinstance(metrics, Sized) and len(metrics) >= _GC_PAUSE_MIN_BATCH:
            # A large batch allocates a container per new series; the cyclic collector would
            # walk every live object again and again while it grows (measured: 60% of a cold
            # 100k-series record). Nothing recorded here forms a cycle, so it waits for the end.
            paused = gc.isenabled()
            gc.disable()
            try:
                return self._record(source, metrics, now_ns, prometheus_names)
            finally:
                if paused:
                    gc.enable()
        return self._record(source, metrics, now_ns, prometheus_names)

    def _record(self, source: str, metrics: Iterable[Metric], now_ns: int | None, native: bool) -> int:
        now = now_ns if now_ns is not None else time.time_ns()
        # Series are tracked by identity (hashed and compared by id): building and hashing a
        # (name, attribute tuple) pair per series, then comparing the pairs in the set
        # difference below, cost more than everything else a record does.
        seen: set[Series] = set()
        seen_add = seen.add
        over_limit: list[Metric] = []
        accepted = 0
        limit = self.cardinality_limit
        with self._lock:
            families = self._families
            last_name: str | None = None
            fam: Family | None = None
            for m in metrics:
                name = m.name
                if name != last_name or fam is None:  # metrics come grouped by name: look up once a run
                    last_name = name
                    fam = families.get(name)
                    if fam is None:
                        # A dotted name cannot be a Prometheus name: it is an OTel name (an
                        # importing plugin's own self-metrics).
                        fam = self._new_family(m, source, native and "." not in name)
                if fam is None:
                    continue
                if fam.kind is not m.kind or fam.unit != m.unit:
                    self._drop("conflict", name, source, f"reported as {m.kind.value} {m.unit!r}, "
                               f"family is {fam.kind.value} {fam.unit!r}")
                    continue
                attrs = m.attributes
                # Attributes in the order the source gave them find the series through an alias,
                # which spares sorting them on every report; the sorted tuple is the identity.
                items = tuple(attrs.items()) if attrs else ()
                s = fam.aliases.get(items)
                if s is None:
                    key: AttrKey = tuple(sorted(items))
                    series = fam.series
                    s = series.get(key)
                    if s is None:
                        if len(series) >= limit:
                            # Decided once this source's absent series have expired and freed slots.
                            over_limit.append(m)
                            continue
                        s = series[key] = Series(name, dict(attrs), key, source)
                        s.first_ns = now
                        fam.version += 1
                    if len(s.aliases) < _MAX_ALIASES:
                        s.aliases.append(items)
                        fam.aliases[items] = s
                if s.source != source:
                    # Another source owns this series: the newest report wins, ownership moves.
                    owned = self._owned.get(s.source)
                    if owned is not None:
                        owned.discard(s)
                    s.source = source
                v = m.value
                if v.__class__ is bool and not fam.preaggregated:
                    v = int(v)  # type: ignore[arg-type, unused-ignore]
                old_v = s.value
                if old_v != v or old_v.__class__ is not v.__class__:
                    fam.version += 1  # only a new series or a changed value invalidates the rendered text
                s.value = v
                s.start_ns = m.start_time_ns
                s.time_ns = m.timestamp_ns or now
                seen_add(s)
                accepted += 1
            old = self._owned.get(source)
            if old:
                self._expire(old - seen)
            self._owned[source] = seen
            if over_limit:
                accepted += self._record_over_limit(source, over_limit, seen, now)
        return accepted

    def _record_over_limit(self, source: str, metrics: list[Metric], seen: set[Series], now: int) -> int:
        accepted = 0
        for m in metrics:
            fam = self._families[m.name]
            key: AttrKey = tuple(sorted(m.attributes.items()))
            s = fam.series.get(key)
            if s is None:
                if len(fam.series) >= self.cardinality_limit:
                    self._drop("cardinality", m.name, source,
                               f"family already has {self.cardinality_limit} series (pipeline.cardinality_limit)")
                    continue
                s = fam.series[key] = Series(m.name, dict(m.attributes), key, source)
                s.first_ns = now
            v = m.value
            if v.__class__ is bool and not fam.preaggregated:
                v = int(v)  # type: ignore[arg-type, unused-ignore]
            s.value, s.start_ns, s.time_ns = v, m.start_time_ns, m.timestamp_ns or now
            fam.version += 1
            seen.add(s)
            accepted += 1
        return accepted

    def remove_source(self, source: str) -> None:
        """Expire every series ``source`` reported (a plugin that stopped)."""
        with self._lock:
            old = self._owned.pop(source, None)
            if old:
                self._expire(old)

    def sources(self) -> list[str]:
        with self._lock:
            return sorted(self._owned)

    def _new_family(self, m: Metric, source: str, native: bool = False) -> Family | None:
        if native:
            if not _PROMETHEUS_NAME.match(m.name):
                self._drop("invalid_name", m.name, source, "expected a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
                return None
        elif not _OTEL_NAME.match(m.name):
            self._drop("invalid_name", m.name, source,
                       "expected an OpenTelemetry instrument name (a letter, then letters, digits, _ . - /)")
            return None
        fam = Family(m.name, m.kind, m.unit, m.description, m.preaggregated or native, native)
        self._families[m.name] = fam
        return fam

    def _expire(self, gone: set[Series]) -> None:
        by_family: dict[str, list[AttrKey]] = {}
        for s in gone:
            name, key = s.name, s.key
            fam = self._families.get(name)
            if fam is None or fam.series.get(key) is not s:
                continue
            del fam.series[key]
            for a in s.aliases:
                fam.aliases.pop(a, None)
            fam.version += 1
            by_family.setdefault(name, []).append(key)
        for name, keys in by_family.items():
            self.expired_total += len(keys)
            fam = self._families[name]
            if not fam.series:
                # An empty family is kept (its kind and unit stay claimed) but is not rendered.
                fam.render_cache.clear()

    def _drop(self, reason: str, name: str, source: str, why: str) -> None:
        self.dropped[reason] += 1
        now = time.monotonic()
        k = (reason, name)
        last = self._drop_logged.get(k)
        if last is None or now - last >= _DROP_LOG_EVERY_S:
            self._drop_logged[k] = now
            log.warning(
                "dropped series of %s from %s (%s): %s; counted in monbridge_series_dropped_total{reason=%r}, "
                "further drops of this metric are logged at most once a minute",
                name, source, reason, why, reason,
            )

    # ------------------------------------------------------------------ reading

    def families(self) -> list[Family]:
        """The families that have series, in name order (a list; the families are live).
        The OpenTelemetry metrics API's instruments are collected into the pipeline first."""
        self.inputs.collect()
        with self._lock:
            return [f for _, f in sorted(self._families.items()) if f.series]

    def family(self, name: str) -> Family | None:
        return self._families.get(name)

    def snapshot(self) -> list[Metric]:
        """Every cached series as a Metric (for integrations that take the plugin API's type)."""
        self.inputs.collect()
        out: list[Metric] = []
        with self._lock:
            for fam in self._families.values():
                for s in fam.series.values():
                    out.append(Metric(fam.name, fam.kind, s.value, fam.unit, fam.description,
                                      dict(s.attributes), s.time_ns, s.start_ns))
        return out

    def shutdown(self) -> None:
        self.inputs.shutdown()


@dataclass(frozen=True)
class SummaryDataPoint:
    """OTLP's SummaryDataPoint, which the OTel SDK has no type for (it never computes summaries;
    imported Prometheus summaries carry one). The OTLP integration encodes it."""

    attributes: Mapping[str, Any]
    start_time_unix_nano: int
    time_unix_nano: int
    count: int
    sum: float
    quantile_values: Sequence[tuple[float, float]]

    def to_json(self, indent: int | None = 4) -> str:
        import json

        return json.dumps({"attributes": dict(self.attributes), "start_time_unix_nano": self.start_time_unix_nano,
                           "time_unix_nano": self.time_unix_nano, "count": self.count, "sum": self.sum,
                           "quantile_values": [list(q) for q in self.quantile_values]}, indent=indent)


@dataclass(frozen=True)
class Summary:
    """OTLP's Summary data (cumulative by definition)."""

    data_points: Sequence[SummaryDataPoint]

    def to_json(self, indent: int | None = 4) -> str:
        return "{\"data_points\": [" + ", ".join(p.to_json(indent) for p in self.data_points) + "]}"


def otel_point(attributes: Mapping[str, Any], start_ns: int | None, time_ns: int,
               value: float | HistogramValue | SummaryValue) -> NumberDataPoint | HistogramDataPoint | SummaryDataPoint:
    """One OTel data point, as it is (a missing start time is the point's own time)."""
    start = start_ns if start_ns is not None else time_ns
    if isinstance(value, SummaryValue):
        return SummaryDataPoint(attributes=attributes, start_time_unix_nano=start, time_unix_nano=time_ns,
                                count=int(value.count), sum=value.sum, quantile_values=value.quantiles)
    if isinstance(value, HistogramValue):
        return HistogramDataPoint(
            attributes=attributes, start_time_unix_nano=start, time_unix_nano=time_ns,
            count=value.count, sum=value.sum, bucket_counts=list(value.bucket_counts),
            explicit_bounds=list(value.bounds),
            # None leaves the optional protobuf fields unset (NaN would be sent as a value).
            min=value.min,  # type: ignore[arg-type]
            max=value.max,  # type: ignore[arg-type]
        )
    return NumberDataPoint(attributes=attributes, start_time_unix_nano=start, time_unix_nano=time_ns, value=value)


def otel_metric(name: str, kind: MetricKind, unit: str, description: str, points: list[Any]) -> OtelMetric:
    """An OTel metric of ``kind`` (cumulative sums, histograms and summaries) holding ``points``."""
    data: Any
    if kind is MetricKind.SUMMARY:
        data = Summary(data_points=points)
    elif kind is MetricKind.HISTOGRAM:
        data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
    elif kind is MetricKind.GAUGE:
        data = Gauge(data_points=points)
    else:
        data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE,
                   is_monotonic=kind is MetricKind.COUNTER)
    return OtelMetric(name=name, description=description, unit=unit, data=data)
