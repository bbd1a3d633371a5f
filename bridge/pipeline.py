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

Plugins' OpenTelemetry metrics API instruments are an input (``bridge.sdk_input``): their
MeterProvider's data is recorded here as one source before every batch; no second copy of the
series is kept for any sink.

Exporters and ``/metrics`` read it through a ``Batch`` (``Pipeline.batch``): a read-only
snapshot of the families, each family's snapshot kept until the family changes (a record, an
expiry), so a batch copies only what changed since the last one; its ``metrics()`` and
``to_otel()`` are built once per batch and shared by the sinks exporting it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import groupby, repeat
from operator import attrgetter
from types import MappingProxyType
from typing import Any, NoReturn, overload

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Metric as OtelMetric
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from bridge import exposition
from bridge.accumulate import add_delta
from bridge.api import (
    ExponentialHistogramValue,
    HistogramValue,
    IngestResult,
    Metric,
    MetricKind,
    PrometheusView,
    SummaryValue,
)
from bridge.ledger import LEDGER
from bridge.sdk_input import SdkInput
from bridge.selector import Selector, parse_selector
from bridge.tasks import gc_paused, release_free_memory

try:  # the per-series loops in C (setup.py builds it; the Python twins below give the same results)
    from bridge import _pipefast
except ImportError:  # pragma: no cover - a build without a C compiler
    _pipefast = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_CARDINALITY_LIMIT",
    "Batch",
    "Family",
    "FamilySnapshot",
    "Pipeline",
    "Retained",
    "Series",
    "SeriesPoint",
    "Summary",
    "SummaryDataPoint",
    "default_resource",
    "otel_metric",
    "otel_point",
    "paused_gc",
]

log = logging.getLogger("monbridge.pipeline")

DEFAULT_CARDINALITY_LIMIT = 10_000
_SCOPE = InstrumentationScope("monbridge", "0.1.0")
_PREAGG_SCOPE = InstrumentationScope("monbridge.preaggregated", "0.1.0")
_OTEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]{0,254}$")
_PROMETHEUS_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
#: Between an integration's source and the name of one of its ingest parts (``PipelineIngest.part``).
PART_SEPARATOR = "#"
_DROP_LOG_EVERY_S = 60.0
#: Metrics whose drops are logged each on its own; past that many (names pushed by a hostile
#: client, say) further names share one line a minute per reason, and memory stays bounded.
_DROP_LOG_NAMES = 256
_MAX_ALIASES = 4  # attribute orders remembered per series
#: Metrics in a batch from which it is a large one: an import that large is recorded in a worker
#: thread, and a collector that reported one builds its next batch with the cyclic GC paused
#: across the collection's awaits. (Recording a batch pauses the GC from ``GC_PAUSE_MIN``.)
GC_PAUSE_MIN_BATCH = 10_000

AttrKey = tuple[tuple[str, Any], ...]
#: New series in one record from which the C heap's free memory is given back (``release_free_memory``).
TRIM_AFTER_NEW_SERIES = 5_000


def default_resource(extra: Mapping[str, Any] | None = None) -> Resource:
    """``service.name=monbridge``, ``host.name``, then ``OTEL_RESOURCE_ATTRIBUTES`` and
    ``OTEL_SERVICE_NAME`` (which win, as the SDK's detector makes them)."""
    import socket

    from bridge import __version__

    base = Resource.create(
        {"service.name": "monbridge", "service.version": __version__, "host.name": socket.gethostname(), **(extra or {})}
    )
    return base


def paused_gc() -> AbstractContextManager[None]:
    """Hold off CPython's cyclic garbage collector while a large batch of metrics is built or
    recorded (``bridge.tasks.gc_paused`` for a batch of ``GC_PAUSE_MIN_BATCH``: nested and
    concurrent pauses allowed).

    A collection of N series allocates N ``Metric`` objects that live until they are recorded,
    so they are promoted to the oldest generation, and each such promotion of a quarter of the
    long-lived objects triggers a full collection, which walks every ``Series`` the pipeline
    holds: measured with 100k series, two full collections per collection round, about half of
    its CPU (benchmarks/bench_render.py). None of these objects forms a cycle; once recorded,
    reference counting frees them, and the collector's next run finds them gone.
    """
    return gc_paused(GC_PAUSE_MIN_BATCH)


class Series:
    """One attribute set of a family: its latest value and who reported it.

    Its attributes are kept once, as (name, value) pairs: ``key`` (sorted, the identity) and
    ``aliases`` (the orders sources gave them in, the first one the order ``attributes`` has),
    pairs shared with the family's other series where they are equal (``Family.shared``). The
    ``attributes`` dict is made from them when asked for: a dict of its own per series would
    cost more than the series' value, times and text together."""

    __slots__ = ("name", "key", "value", "start_ns", "time_ns", "source", "prom", "aliases", "first_ns", "otlp",
                 "accumulated")

    def __init__(self, name: str, attributes: Mapping[str, Any] | None, key: AttrKey, source: str) -> None:
        self.name = name
        self.key = key
        self.source = source
        self.value: float | HistogramValue | SummaryValue = 0.0
        self.start_ns: int | None = None
        self.time_ns = 0
        self.prom: Any = None  # its Prometheus view (bridge.exposition.series_view): text, or a view object
        self.first_ns = 0  # when the pipeline first saw it: the start of a cumulative point that has none
        # the unsorted attribute tuples seen for it other than its key (an alias too): a tuple, grown on
        # the rare new order (a list costs 40 bytes more)
        self.aliases: tuple[tuple[tuple[str, Any], ...], ...] = ()
        self.otlp: bytes | None = None  # the OTLP encoder's cached bytes of its attributes (integrations.otlp_wire)
        self.accumulated = False  # its value is a total built here from delta pushes (SeriesView.accumulated)
        if attributes is not None and list(attributes) != [k for k, _ in key]:
            self.aliases = (tuple(attributes.items()),)  # the given order, which ``attributes`` keeps

    @property
    def attributes(self) -> dict[str, Any]:
        """The attributes, in the order the first report gave them (a new dict at each call)."""
        return dict(self.aliases[0] if self.aliases else self.key)


def _ryu_tables() -> tuple[bytes, bytes]:
    """The powers of 5 of ``bridge._pipefast``'s float formatter (Ryu's tables, 125 bits each),
    computed exactly: 2^(bits(5^i) - 1 + 125) / 5^i rounded up, for i < 342, and 5^i cut to
    its top 125 bits, for i < 326; each as two 64-bit words, low first, in native order."""
    inv, fwd = bytearray(), bytearray()
    mask = (1 << 64) - 1
    for i in range(342):
        p = 5**i
        v = (1 << (p.bit_length() - 1 + 125)) // p + 1
        inv += (v & mask).to_bytes(8, sys.byteorder) + (v >> 64).to_bytes(8, sys.byteorder)
    for i in range(326):
        p = 5**i
        shift = p.bit_length() - 125
        v = p >> shift if shift >= 0 else p << -shift
        fwd += (v & mask).to_bytes(8, sys.byteorder) + (v >> 64).to_bytes(8, sys.byteorder)
    return bytes(inv), bytes(fwd)


if _pipefast is not None:
    _pipefast.setup(Metric, Series, *_ryu_tables())

_NAME = attrgetter("name")


def _record_in_place(fam: Family, run: list[Metric], source: str, now: int) -> list[Series] | None:
    """Record ``run``, a report of every series of ``fam`` in the order the family keeps them
    (the order of the last full report: ``Pipeline._record_run``), without looking any series
    up: each metric's attribute tuple is compared with the one the series at its position
    keeps (its key, or the first order its attributes came in), which costs no hashing of the
    report's new strings, no dict probe and no set of the series seen. Returns the series, or
    None when the report is not such a report (another length, order or attribute set, a kind
    or unit the family does not have, a bool to turn into an int, a series another source
    owns): ``_record_run`` then does it series by series, with the same outcome (what was
    stored here before it stopped is stored again, the same)."""
    series = fam.series
    n = len(run)
    if n != len(series):
        return None
    refs = list(series.values())
    if run.__class__ is not list:
        run = list(run)
    stored, changed = _store_run(refs, run, fam.kind, fam.unit, not fam.preaggregated, source, now)
    if changed:
        fam.version += 1  # only a new series or a changed value invalidates the rendered text
    return refs if stored == n else None


def _store_run_py(refs: list[Series], run: list[Metric], kind: MetricKind, unit: str, plain: bool, source: str,
                  now: int) -> tuple[int, bool]:
    """The loop of ``_record_in_place`` (``bridge._pipefast.store_run`` where it is built): each
    series takes its metric's value, start and time while the metric's attributes come in the
    series' first order and its kind, unit and source are the family's. Returns how many were
    stored (the index of the first that could not be, or all) and whether a value changed."""
    changed = False
    stored = 0
    for s, m in zip(refs, run, strict=False):
        aliases = s.aliases
        a = m.attributes
        if ((tuple(a.items()) if a else ()) != (aliases[0] if aliases else s.key) or m.kind is not kind
                or m.unit != unit or s.source != source):
            break
        v = m.value
        if v.__class__ is bool and plain:
            break
        if not changed:
            old = s.value
            changed = old != v or old.__class__ is not v.__class__
        s.value = v
        s.start_ns = m.start_time_ns
        s.time_ns = m.timestamp_ns or now
        stored += 1
    return stored, bool(changed)


def _store_run_c(refs: list[Series], run: list[Metric], kind: MetricKind, unit: str, plain: bool, source: str,
                 now: int) -> tuple[int, bool]:
    if unit.__class__ is not str or source.__class__ is not str or now.__class__ is not int:
        return _store_run_py(refs, run, kind, unit, plain, source, now)
    return _pipefast.store_run(refs, run, kind, unit, plain, source, now)  # type: ignore[no-any-return, union-attr]


_store_run = _store_run_py if _pipefast is None else _store_run_c


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
    stamp: int = 0  # changes whenever ``version`` does or a record reports the family (new sample times)
    frozen: FamilySnapshot | None = None  # the last snapshot taken (a batch's), reused while nothing changed
    # (name, value) pairs of its series' keys, each kept once: most recur across series (job,
    # instance, code="200"). Emptied when it outgrows the series (what recurs comes back at once).
    pairs: dict[tuple[str, Any], tuple[str, Any]] = field(default_factory=dict)

    def shared(self, items: AttrKey) -> AttrKey:
        """``items`` with each pair replaced by the equal one a series of the family holds."""
        pairs = self.pairs
        if len(pairs) > 4 * len(self.series) + 64:
            pairs.clear()
        return tuple(map(pairs.setdefault, items, items))

    def snapshot(self) -> FamilySnapshot:
        """The family as it is now, read-only; the same object until it changes. Call it under
        the pipeline's lock (``Pipeline.batch`` does)."""
        snap = self.frozen
        if snap is None or snap.version != self.version or snap.stamp != self.stamp:
            snap = self.frozen = FamilySnapshot(self)
        return snap


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
        #: Pushed series by source, with when each was last pushed (monotonic seconds): see push().
        self._pushed: dict[str, dict[Series, int]] = {}
        self._pushed_families: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.expired_total = 0
        self._drop_logged: dict[tuple[str, str], float] = {}
        self._records: Counter[str] = Counter()  # records of each source so far
        self.created_total = 0  # series made by record
        self._last_batch: weakref.ref[Batch] | None = None
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
        # A large batch allocates a container per new series; the cyclic collector would walk
        # every live object again and again while it grows (measured: 60% of a cold 100k-series
        # record). Nothing recorded here forms a cycle, so it waits for the end.
        created = self.created_total
        with gc_paused(len(metrics) if isinstance(metrics, Sized) else 0):
            accepted = self._record(source, metrics, now_ns, prometheus_names)
        if self.created_total - created >= TRIM_AFTER_NEW_SERIES:
            # A new large source (a target's first scrape): what the C heap holds free after
            # building its series goes back to the system, else it stays in the process's RSS
            # (measured: 0.8 kB a series at 10k series).
            release_free_memory()
        return accepted

    def _record(self, source: str, metrics: Iterable[Metric], now_ns: int | None, native: bool) -> int:
        now = now_ns if now_ns is not None else time.time_ns()
        # Series are tracked by identity (hashed and compared by id): building and hashing a
        # (name, attribute tuple) pair per series, then comparing the pairs in the set
        # difference below, cost more than everything else a record does.
        seen: set[Series] = set()
        placed: list[list[Series]] = []  # the runs recorded in place (_record_in_place), each a whole family
        placed_names: set[str] = set()
        over_limit: list[Metric] = []
        accepted = 0
        with self._lock:
            families = self._families
            # Metrics come grouped by name: a family is looked up once a run.
            for name, run in _runs(metrics):
                fam = families.get(name)
                if fam is None:
                    # A dotted name cannot be a Prometheus name: it is an OTel name (an
                    # importing plugin's own self-metrics). A name refused is refused for
                    # every metric of the run, each counted.
                    fam = next(filter(None, (self._new_family(m, source, native and "." not in name) for m in run)),
                               None)
                    if fam is None:
                        continue
                fam.stamp += 1  # its series get new times (and maybe values): a new snapshot
                refs = _record_in_place(fam, run, source, now)
                if refs is not None:
                    placed.append(refs)
                    placed_names.add(name)
                    accepted += len(refs)
                else:
                    accepted += self._record_run(fam, run, source, now, seen, over_limit)
            self._records[source] += 1
            old = self._owned.get(source)
            if (old is not None and not seen and not over_limit and len(placed_names) == len(placed)
                    and source not in self._pushed
                    and sum(map(len, placed)) == len(old)):
                # Every series reported was recorded in place, each family once: each is the
                # source's (a series in place is ``source``'s, and every series of a source is in
                # its owned set), as many as it owns, so they are exactly the series it owns and
                # none expires. Spares a set of every series and a difference of two (~10 ms a
                # collection of 100k series).
                pass
            else:
                for refs in placed:
                    seen.update(refs)
                if old:
                    self._expire(old - seen)
                self._owned[source] = seen
            if over_limit:
                accepted += self._record_over_limit(source, over_limit, seen, now)
        return accepted

    def _record_run(self, fam: Family, run: list[Metric], source: str, now: int, seen: set[Series],
                    over_limit: list[Metric]) -> int:
        """Record a run of one family's metrics series by series (``_record_in_place`` could not);
        a run that reports every series of the family leaves them in its order, so that the same
        report next time is recorded in place."""
        name = fam.name
        seen_add = seen.add
        limit = self.cardinality_limit
        series = fam.series
        aliases = fam.aliases
        order: list[Series] = []
        add = order.append
        over = len(over_limit)
        for m in run:
            if fam.kind is not m.kind or fam.unit != m.unit:
                self._drop("conflict", name, source, f"reported as {m.kind.value} {m.unit!r}, "
                           f"family is {fam.kind.value} {fam.unit!r}")
                continue
            attrs = m.attributes
            # Attributes in the order the source gave them find the series through an alias,
            # which spares sorting them on every report; the sorted tuple is the identity.
            items = tuple(attrs.items()) if attrs else ()
            s = aliases.get(items)
            if s is None:
                key: AttrKey = tuple(sorted(items))
                s = series.get(key)
                if s is None:
                    if len(series) >= limit:
                        # Decided once this source's absent series have expired and freed slots.
                        over_limit.append(m)
                        continue
                    in_order = key == items
                    items = fam.shared(items)  # kept: with the pairs other series hold
                    key = items if in_order else tuple(sorted(items))
                    s = series[key] = Series(name, None, key, source)
                    s.first_ns = now
                    fam.version += 1
                    self.created_total += 1
                if key == items:
                    # already in order (as scrapes mostly are): its key is its alias, and no
                    # tuple of aliases is kept for it (48 bytes)
                    aliases[s.key] = s
                elif len(s.aliases) < _MAX_ALIASES:
                    s.aliases += (items,)
                    aliases[items] = s
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
            add(s)
        if len(order) == len(series) and len(over_limit) == over and list(series.values()) != order:
            # The whole family, in an order of its own: kept in that order, which the next
            # report most likely has again (unless a series was reported twice, and so another
            # left out).
            reordered = {s.key: s for s in order}
            if len(reordered) == len(series):
                fam.series = reordered
        return len(order)

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
                s = fam.series[key] = Series(m.name, m.attributes, fam.shared(key), source)
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
        """Expire every series ``source`` reported (a plugin that stopped), its ingest parts' too."""
        prefix = source + PART_SEPARATOR
        with self._lock:
            for name in [source, *(k for k in (self._owned.keys() | self._pushed.keys()) if k.startswith(prefix))]:
                old = self._owned.pop(name, None)
                self._records.pop(name, None)
                self._pushed.pop(name, None)
                if old:
                    self._expire(old)

    def retain(self, source: str) -> Retained:
        """What ``source`` (and its ingest parts) holds now, to be let go later with ``release``: a
        plugin replaced on reload keeps its series on view until its successor's first collection
        replaces them (``Supervisor.stop(keep_series=True)``)."""
        prefix = source + PART_SEPARATOR
        with self._lock:
            held = {name: (owned, {s: s.time_ns for s in owned}, self._records[name])
                    for name, owned in self._owned.items() if name == source or name.startswith(prefix)}
        return Retained(source, held)

    def release(self, retained: Retained) -> int:
        """Expire what ``retained`` held that its source has not reported again since: a source
        recorded since (``record`` replaced its series) keeps what it reported; a series neither
        recorded nor pushed again since (its time unchanged) expires. Returns how many expired."""
        gone: set[Series] = set()
        with self._lock:
            for name, (owned_then, times, records_then) in retained.held.items():
                owned = self._owned.get(name)
                if (owned is not owned_then or self._records[name] != records_then) and name not in self._pushed:
                    continue  # recorded since: what was not reported again has expired already
                stale = {s for s, t in times.items() if s.time_ns == t and s.source == name}
                if owned is not None:
                    owned -= stale
                pushed = self._pushed.get(name)
                if pushed is not None:
                    for s in stale:
                        pushed.pop(s, None)
                gone |= stale
            n = len(gone)
            self._expire(gone)
        return n

    def push(self, source: str, metrics: Iterable[Metric], now_ns: int | None = None, *,
             delta: bool = False, max_series: int | None = None, max_families: int | None = None) -> IngestResult:
        """Merge ``metrics`` into ``source``'s series (a push receiver's data): unlike ``record``,
        the source's other series stay, until ``expire_pushed`` finds them not pushed for a while.

        With ``delta`` each value is the change over ``[start_time_ns, timestamp_ns]``: it is added
        to the series' value, the running total, when it continues it (it starts at or after the
        total's last point); a new series' total starts with it. A delta that starts before the
        total's last point (a repeat, or out of order) is rejected as ``out_of_order``. What is
        refused (bad name, a kind or unit other than its family's, the cardinality limit) is
        dropped, counted by reason and logged as ``record`` does, and returned. ``max_series``
        bounds the series ``source`` holds (``series_limit``), ``max_families`` the metric families
        its pushes ever created (``family_limit``: a family, once made, stays).
        """
        now = now_ns if now_ns is not None else time.time_ns()
        pushed_at = int(time.monotonic())  # one int object shared by every series of this push
        accepted = 0
        rejected: Counter[str] = Counter()
        why: dict[str, str] = {}

        def reject(reason: str, name: str, text: str) -> None:
            rejected[reason] += 1
            why.setdefault(reason, f"{name}: {text}")

        limit = self.cardinality_limit
        with self._lock:
            families = self._families
            owned = self._owned.setdefault(source, set())
            pushed = self._pushed.setdefault(source, {})
            for m in metrics:
                name = m.name
                fam = families.get(name)
                if fam is None:
                    if max_families is not None and self._pushed_families[source] >= max_families:
                        text = f"{source} has made {max_families} metric families already (max_families)"
                        self._drop("family_limit", name, source, text)
                        reject("family_limit", name, text)
                        continue
                    fam = self._new_family(m, source)
                    if fam is None:
                        reject("invalid_name", name, "not an OpenTelemetry instrument name")
                        continue
                    self._pushed_families[source] += 1
                if fam.kind is not m.kind or fam.unit != m.unit:
                    text = f"reported as {m.kind.value} {m.unit!r}, family is {fam.kind.value} {fam.unit!r}"
                    self._drop("conflict", name, source, text)
                    reject("conflict", name, text)
                    continue
                # The attributes in the order the pusher sent them find the series through an
                # alias (as in record), sparing the sort; the sorted tuple is the identity.
                items = tuple(m.attributes.items())
                s = fam.aliases.get(items)
                key: AttrKey = s.key if s is not None else tuple(sorted(items))
                if s is None:
                    s = fam.series.get(key)
                    if s is not None and len(s.aliases) < _MAX_ALIASES:
                        s.aliases += (items,)
                        fam.aliases[items] = s
                value: Any = m.value
                start = m.start_time_ns
                t = m.timestamp_ns or now
                if s is not None and delta:
                    if start is None or start < s.time_ns or t <= s.time_ns:
                        self._drop("out_of_order", name, source, "a delta point overlaps the running total")
                        reject("out_of_order", name, f"a delta point from {start} to {t} overlaps the running "
                                                     f"total, which ends at {s.time_ns}")
                        continue
                    try:
                        value = add_delta(s.value, value)  # type: ignore[arg-type]
                        start = s.start_ns
                    except ValueError:
                        pass  # the buckets changed: the total starts again with this delta
                if s is None:
                    if len(fam.series) >= limit:
                        text = f"family already has {limit} series (pipeline.cardinality_limit)"
                        self._drop("cardinality", name, source, text)
                        reject("cardinality", name, text)
                        continue
                    if max_series is not None and len(pushed) >= max_series:
                        text = f"{source} holds {max_series} series already (max_series)"
                        self._drop("series_limit", name, source, text)
                        reject("series_limit", name, text)
                        continue
                    s = fam.series[key] = Series(name, dict(m.attributes), key, source)
                    s.first_ns = now
                    s.aliases = (items,)
                    fam.aliases[items] = s
                    fam.version += 1
                elif s.source != source:
                    moved_from = self._owned.get(s.source)
                    if moved_from is not None:
                        moved_from.discard(s)
                    s.source = source
                if s.value != value or s.value.__class__ is not value.__class__:
                    fam.version += 1
                fam.stamp += 1  # a new sample time (and maybe value): batches take a new snapshot
                s.value = value
                s.start_ns = start
                s.time_ns = t
                s.accumulated = delta
                owned.add(s)
                pushed[s] = pushed_at
                accepted += 1
        message = "; ".join(f"{n} rejected ({reason}): {why[reason]}" for reason, n in sorted(rejected.items()))
        return IngestResult(accepted, dict(rejected), message)

    def expire_pushed(self, source: str, older_than_s: float, now: float | None = None) -> int:
        """Expire ``source``'s pushed series not pushed for ``older_than_s`` seconds (by
        ``time.monotonic()``, or ``now`` on that clock); return how many."""
        cutoff = (time.monotonic() if now is None else now) - older_than_s
        with self._lock:
            pushed = self._pushed.get(source)
            if not pushed:
                return 0
            gone = {s for s, at in pushed.items() if at < cutoff}
            if not gone:
                return 0
            for s in gone:
                del pushed[s]
            owned = self._owned.get(source)
            if owned is not None:
                owned -= gone
            mine = {s for s in gone if s.source == source}  # another source may have taken one over since
            self._expire(mine)
            return len(mine)

    def ingest(self, source: str, expire_after: float) -> PipelineIngest:
        """A push ingest handle for ``source`` (``bridge.api.MetricIngest``)."""
        return PipelineIngest(self, source, expire_after)

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
            fam.aliases.pop(key, None)
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
                fam.pairs.clear()

    def _drop(self, reason: str, name: str, source: str, why: str) -> None:
        self.dropped[reason] += 1
        LEDGER.count("pipeline", reason, plugin=source.partition(PART_SEPARATOR)[0])
        now = time.monotonic()
        k = (reason, name)
        if k not in self._drop_logged and len(self._drop_logged) >= _DROP_LOG_NAMES:
            k = (reason, "")
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

    def batch(self) -> Batch:
        """A read-only snapshot of the pipeline now (``bridge.api.MetricBatch``). Families that did
        not change since the last batch are reused as they are, and while a batch is held, the
        next call with nothing changed returns that same batch (its Metrics and MetricsData are
        built once and shared). The OpenTelemetry metrics API's instruments are collected into the
        pipeline first."""
        self.inputs.collect()
        with self._lock:
            fams = []
            for _, f in sorted(self._families.items()):
                if f.series:
                    fams.append(f.snapshot())
                else:
                    f.frozen = None  # an emptied family's last snapshot must not keep its expired series
            last = self._last_batch() if self._last_batch is not None else None
            if last is not None and len(last._families) == len(fams) and all(
                    a is b for a, b in zip(last._families, fams, strict=True)):
                return last
            b = Batch(tuple(fams), self.resource)
            self._last_batch = weakref.ref(b)
            return b

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
class Retained:
    """A source's series as ``Pipeline.retain`` found them: by owner, the owned set then and
    each series' time then."""

    source: str
    held: Mapping[str, tuple[set[Series], dict[Series, int], int]]


class PipelineIngest:
    """``bridge.api.MetricIngest`` for one source of a pipeline (see ``Pipeline.push``)."""

    def __init__(self, pipeline: Pipeline, source: str, expire_after: float) -> None:
        self.pipeline = pipeline
        self.source = source
        self.expire_after = expire_after
        self.max_series: int | None = None
        self.max_families: int | None = None

    def push(self, metrics: Sequence[Metric], *, delta: bool = False) -> IngestResult:
        return self.pipeline.push(self.source, metrics, delta=delta, max_series=self.max_series,
                                  max_families=self.max_families)

    def expire(self) -> int:
        return self.pipeline.expire_pushed(self.source, self.expire_after)

    def part(self, name: str) -> PipelineIngest:
        return PipelineIngest(self.pipeline, f"{self.source}{PART_SEPARATOR}{name}", self.expire_after)


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
    if isinstance(value, ExponentialHistogramValue):  # pushed to the OTLP receiver, passed on as it came
        return ExponentialHistogramDataPoint(
            attributes=attributes, start_time_unix_nano=start, time_unix_nano=time_ns, count=value.count,
            sum=value.sum,
            scale=value.scale, zero_count=value.zero_count,
            positive=Buckets(value.positive_offset, value.positive_counts),
            negative=Buckets(value.negative_offset, value.negative_counts), flags=0,
            min=value.min, max=value.max)
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
    elif kind is MetricKind.EXPONENTIAL_HISTOGRAM:
        data = ExponentialHistogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
    elif kind is MetricKind.GAUGE:
        data = Gauge(data_points=points)
    else:
        data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE,
                   is_monotonic=kind is MetricKind.COUNTER)
    return OtelMetric(name=name, description=description, unit=unit, data=data)


# --------------------------------------------------------------------------- batches


def _read_only(self: Any, *_: Any) -> NoReturn:
    raise AttributeError(f"{type(self).__name__} is read-only (a batch is a snapshot of the pipeline)")


class SeriesPoint(tuple):  # type: ignore[type-arg]
    """One series of a batch: the live series (identity, attributes, Prometheus view), its value,
    start and time as they were when the family's snapshot was taken, and its family's
    Prometheus naming. A tuple: it cannot be changed, and costs one small object per series."""

    __slots__ = ()

    @property
    def identity(self) -> Series:
        return self[0]  # type: ignore[no-any-return]

    @property
    def attributes(self) -> Mapping[str, Any]:
        return MappingProxyType(self[0].attributes)

    @property
    def value(self) -> Any:
        return self[1]

    @property
    def start_ns(self) -> int | None:
        return self[2]  # type: ignore[no-any-return]

    @property
    def time_ns(self) -> int:
        return self[3]  # type: ignore[no-any-return]

    @property
    def first_ns(self) -> int:
        return self[0].first_ns  # type: ignore[no-any-return]

    @property
    def accumulated(self) -> bool:
        return self[0].accumulated  # type: ignore[no-any-return]

    @property
    def prom(self) -> PrometheusView:
        return exposition.series_view(self[4], self[0], self[1])


class _Points(Sequence[SeriesPoint]):
    """A snapshot's series as a read-only sequence of ``SeriesPoint`` (made as they are read)."""

    __slots__ = ("_f",)

    def __init__(self, f: FamilySnapshot) -> None:
        self._f = f

    def __len__(self) -> int:
        return len(self._f.refs)

    @overload
    def __getitem__(self, i: int) -> SeriesPoint: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[SeriesPoint, ...]: ...

    def __getitem__(self, i: int | slice) -> SeriesPoint | tuple[SeriesPoint, ...]:
        if isinstance(i, slice):
            return tuple(self)[i]
        f = self._f
        return tuple.__new__(SeriesPoint, (f.refs[i], f.values[i], f.starts[i], f.times[i], f.prom_family))

    def __iter__(self) -> Iterator[SeriesPoint]:
        f = self._f
        new = tuple.__new__
        pf = f.prom_family
        for p in zip(f.refs, f.values, f.starts, f.times, repeat(pf, len(f.refs)), strict=True):
            yield new(SeriesPoint, p)


_VALUE, _START, _TIME = attrgetter("value"), attrgetter("start_ns"), attrgetter("time_ns")


def _runs_py(metrics: Iterable[Metric]) -> Iterator[tuple[str, list[Metric]]]:
    """The metrics cut where the name changes (``bridge._pipefast.runs`` where it is built)."""
    for name, group in groupby(metrics, _NAME):
        yield name, list(group)


def _runs(metrics: Iterable[Metric]) -> Iterable[tuple[str, list[Metric]]]:
    if _pipefast is not None and metrics.__class__ is list:
        got = _pipefast.runs(metrics)
        if got is not None:
            return got  # type: ignore[no-any-return]
    return _runs_py(metrics)


def _columns_py(refs: tuple[Series, ...]) -> tuple[tuple[Any, ...], tuple[int | None, ...], tuple[int, ...]]:
    """A snapshot's values, starts and times (``bridge._pipefast.columns`` where it is built)."""
    return tuple(map(_VALUE, refs)), tuple(map(_START, refs)), tuple(map(_TIME, refs))


def _columns(refs: tuple[Series, ...]) -> tuple[tuple[Any, ...], tuple[int | None, ...], tuple[int, ...]]:
    if _pipefast is not None:
        got = _pipefast.columns(refs)
        if got is not None:
            return got  # type: ignore[no-any-return]
    return _columns_py(refs)


class FamilySnapshot:
    """A family as it was when a batch was taken (``bridge.api.FamilyView``): read-only, with
    ``version`` and the live family's render cache for the renderer.

    The series are kept as four parallel tuples (the live series, their values, start and sample
    times: references to what the series held, 32 bytes a series), not an object per series;
    ``series`` reads them as ``SeriesPoint`` tuples."""

    __slots__ = ("name", "kind", "unit", "description", "native", "preaggregated", "version", "stamp",
                 "refs", "values", "starts", "times", "render_cache", "prom_family")

    name: str
    kind: MetricKind
    unit: str
    description: str
    native: bool
    preaggregated: bool
    version: int
    stamp: int
    refs: tuple[Series, ...]
    values: tuple[Any, ...]
    starts: tuple[int | None, ...]
    times: tuple[int, ...]
    render_cache: dict[Any, Any]
    prom_family: exposition.PromFamily

    def __init__(self, fam: Family | FamilySnapshot, points: Sequence[SeriesPoint] | None = None,
                 render_cache: dict[Any, Any] | None = None) -> None:
        init = object.__setattr__
        if points is None:
            assert isinstance(fam, Family)
            refs = tuple(fam.series.values())
            cols = _columns(refs)
            init(self, "values", cols[0])
            init(self, "starts", cols[1])
            init(self, "times", cols[2])
        else:
            refs = tuple([p[0] for p in points])
            init(self, "values", tuple([p[1] for p in points]))
            init(self, "starts", tuple([p[2] for p in points]))
            init(self, "times", tuple([p[3] for p in points]))
        for k, v in (("name", fam.name), ("kind", fam.kind), ("unit", fam.unit), ("description", fam.description),
                     ("native", fam.native), ("preaggregated", fam.preaggregated), ("version", fam.version),
                     ("stamp", fam.stamp), ("refs", refs),
                     ("render_cache", fam.render_cache if render_cache is None else render_cache),
                     ("prom_family", exposition.prom_family(fam))):
            init(self, k, v)

    __setattr__ = _read_only
    __delattr__ = _read_only

    @property
    def series(self) -> _Points:
        return _Points(self)

    def __repr__(self) -> str:
        return f"FamilySnapshot({self.name!r}, {self.kind.value}, {len(self.refs)} series)"


_SELECTORS: dict[tuple[str, ...], tuple[Selector, ...]] = {}


def _selectors(texts: Sequence[str]) -> tuple[Selector, ...]:
    key = tuple(texts)
    parsed = _SELECTORS.get(key)
    if parsed is None:
        parsed = tuple(parse_selector(t) for t in key)
        if len(_SELECTORS) >= 256:
            _SELECTORS.clear()
        _SELECTORS[key] = parsed
    return parsed


class Batch:
    """One round of the pipeline, read-only (``bridge.api.MetricBatch``); from ``Pipeline.batch``."""

    __slots__ = ("_families", "_resource", "_time_ns", "_lock", "_metrics", "_otel", "__weakref__")

    _families: tuple[FamilySnapshot, ...]
    _resource: Resource
    _time_ns: int
    _lock: threading.Lock
    _metrics: list[Metric] | None
    _otel: MetricsData | None

    def __init__(self, families: tuple[FamilySnapshot, ...], resource: Resource, time_ns: int | None = None) -> None:
        init = object.__setattr__
        init(self, "_families", families)
        init(self, "_resource", resource)
        init(self, "_time_ns", time.time_ns() if time_ns is None else time_ns)
        init(self, "_lock", threading.Lock())
        init(self, "_metrics", None)
        init(self, "_otel", None)

    __setattr__ = _read_only
    __delattr__ = _read_only

    @property
    def time_ns(self) -> int:
        return self._time_ns

    @property
    def resource(self) -> Resource:
        return self._resource

    @property
    def resource_attributes(self) -> Mapping[str, Any]:
        return MappingProxyType(dict(self._resource.attributes))

    def families(self) -> tuple[FamilySnapshot, ...]:
        return self._families

    def metrics(self) -> list[Metric]:
        with self._lock:
            built = self._metrics
            if built is None:
                built = [Metric(f.name, f.kind, v, f.unit, f.description, dict(s.attributes), t, st)
                         for f in self._families for s, v, st, t in zip(f.refs, f.values, f.starts, f.times, strict=True)]
                object.__setattr__(self, "_metrics", built)
        return list(built)

    def to_otel(self) -> MetricsData:
        with self._lock:
            data = self._otel
            if data is None:
                data = self._build_otel()
                object.__setattr__(self, "_otel", data)
        return data

    def _build_otel(self) -> MetricsData:
        """Every family as OTel data, from the snapshot itself: the collectors' families under the
        ``monbridge`` scope, pre-aggregated (imported) ones under ``monbridge.preaggregated``."""
        by_scope: dict[bool, list[OtelMetric]] = {False: [], True: []}
        gauge = MetricKind.GAUGE
        for f in self._families:
            kind = f.kind
            points = [otel_point(s.attributes, st if st is not None or kind is gauge else min(s.first_ns, t), t, v)
                      for s, v, st, t in zip(f.refs, f.values, f.starts, f.times, strict=True)]
            by_scope[f.preaggregated].append(otel_metric(f.name, kind, f.unit, f.description, points))
        scopes = [ScopeMetrics(scope=scope, metrics=ms, schema_url="")
                  for scope, ms in ((_SCOPE, by_scope[False]), (_PREAGG_SCOPE, by_scope[True])) if ms]
        return MetricsData(resource_metrics=[ResourceMetrics(resource=self._resource, scope_metrics=scopes,
                                                             schema_url="")])

    def select(self, selectors: Sequence[str]) -> Batch:
        """The series any of ``selectors`` matches (see ``bridge.api.MetricBatch.select``)."""
        sels = _selectors(selectors)
        out: list[FamilySnapshot] = []
        for f in self._families:
            name = f.prom_family.sample
            candidates = [sel for sel in sels if sel.name_matches(name)]
            if not candidates:
                continue
            if any(len(sel.matchers) == 1 and sel.matchers[0].name == "__name__" for sel in candidates):
                out.append(f)  # a bare name selects the whole family
                continue
            kept = [p for p in f.series if any(sel.matches(name, dict(p.prom.labels)) for sel in candidates)]
            if len(kept) == len(f.refs):
                out.append(f)
            elif kept:
                out.append(FamilySnapshot(f, kept, {}))  # a part of the family: not the family's cached text
        return Batch(tuple(out), self._resource, self._time_ns)
