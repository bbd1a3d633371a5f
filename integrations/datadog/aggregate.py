"""DogStatsD aggregation per flush interval, as the Datadog Agent's aggregator does it.

A context is (name, type, tags): the tags sorted and without repeats, so ``#a,b`` and ``#b,a,a``
are one context (the ``|c:`` container field is not part of it). Per interval:

* ``c`` counts: the values summed, each scaled by 1/sample_rate (the Agent's ``Counter``); out as
  a delta monotonic sum over the interval (the Agent sends it as a RATE, sum/interval: the same
  information, which a delta sum keeps for Prometheus and OTLP).
* ``g`` gauges: the last value (sample rates do not apply); a gauge.
* ``s`` sets: the number of distinct members; a gauge.
* ``h`` histograms and ``ms`` timers: ``histogram_aggregates`` and ``histogram_percentiles``
  exactly as the Agent's ``Histogram`` (``pkg/metrics/histogram.go``) computes them. Each value
  weighs w = 1/sample_rate; with the values sorted and the weights summed in that order (count =
  sum of w), ``median`` is the first value whose running weight exceeds (count - 1)/2, the p-th
  percentile the first whose running weight exceeds (p * count - 1)/100 where p =
  int(100 * percentile + 0.5) (0.95 -> ``name.95percentile``); ``avg`` = sum(v * w)/count, ``sum``
  = sum(v * w), ``min``/``max`` the extremes. These are gauges (a timer's in unit ``ms``), except
  ``name.count``: the Agent sends it as a RATE (count/interval) like a counter, so it is a delta
  monotonic sum here, like a counter.
* ``d`` distributions: a DDSketch (Datadog's ``ddsketch`` package) per context, kept on the
  result (``Flushed.sketches``) so an export to Datadog can send it as a distribution, and out to
  the pipeline as a delta OpenTelemetry exponential histogram. A value at rate r counts
  int(1/r) times (the Agent's sketch truncates 1/r so that bucket counts stay whole).

Bucket layout: the sketch's mapping is a ``LogarithmicMapping`` whose gamma is exactly
2^(2^-SCALE) (``SCALE`` = 5: gamma = 2^(1/32) = 1.0219, relative accuracy (gamma-1)/(gamma+1) =
1.08 %). The package's ``key(v)`` is ceil(log_gamma(v)), so its bucket k holds
(gamma^(k-1), gamma^k], which is OTel's exponential bucket k-1 at scale SCALE
((base^i, base^(i+1)], base = gamma): ``positive_offset`` = lowest key - 1, and the counts are
the sketch's bins as they are. Negative values map the same way on their magnitude into the
negative buckets; 0 (and subnormal values below the mapping's least, 2.2e-308) into the zero
bucket, whose threshold is 0. At most ``BIN_LIMIT`` (the Agent's 4096) buckets per sign: a
context whose values span more keeps the highest, its lowest collapsed into one (the package's
``CollapsingLowestDenseStore``); a new bucket beyond twice that in one interval is dropped and
counted.

Timestamped samples (``|T``) are not aggregated, as in the Agent (its no-aggregation pipeline):
a gauge goes out as it came, at its own time, and a count as a delta over the flush interval
ending at its time (points of one context with the same time are merged: a gauge's last value,
a count's sum); histograms, timers, distributions and sets with a timestamp are dropped and
counted as ``timestamped_unsupported``, which the Agent does too. (A timestamped count that
starts before its series' last point in the pipeline is refused there as out of order, and
counted by the pipeline.)

Tags become attributes as the OpenTelemetry Collector's Datadog receiver makes them: ``k:v`` is
``k=v`` (split at the first colon); a tag without a value (``flag``, or ``:x``) is
``unnamed_flag=flag`` -- not ``flag=""``, which Prometheus would treat as no label at all, losing
the tag. A key given more than once (``env:a,env:b``) gets its values joined with ``,`` in sorted
order, so two contexts never become one series.

Bounds: ``max_contexts`` contexts per interval (beyond, a sample of a new context is dropped and
counted ``max_contexts``); ``MAX_STORED_VALUES`` histogram and timer values and
``MAX_SET_MEMBERS`` set members held per interval (``histogram_values``, ``set_members``).
``add`` and ``flush`` are thread-safe; ``flush`` does its arithmetic outside the lock.

Cost, measured (CPU time, gc paused) on the 2-core CI machine (about 3x slower than a desktop):
Where ``integrations.datadog._dsdfast`` is built, ``LineCache.feed`` runs its loop over the
lines of remembered contexts in C (193 ns a line on the benchmark's statsd stream, in batches of 32
datagrams), and the flush sorts histogram values in C without the interpreter lock; the figures
below are the Python loop's, which remains where the extension is not built. ``add`` takes about 0.8 µs per sample of a context already seen for counts, gauges and sets,
1.2 to 1.4 µs for histograms and timers, 1.6 to 2.1 µs for distributions; parse and add of a
realistic mixed stream (10 000 messages in 8-message datagrams, ~4 000 contexts) runs at 150 000
to 190 000 messages/s on one core, and its flush (7 000 metrics) takes 40 to 50 ms. A reader's
``LineCache`` (parse and aggregation fused for the contexts it has seen) halves the cost of a
message: on the benchmark's statsd stream (``benchmarks/bench_dogstatsd.py``, 10 000 contexts, in
batches of 32 datagrams), 3.5 to 3.8 µs a message against 6.7 to 7.5 µs for ``parse_datagram`` then
``add``, and 5.8 to 6.0 against 11.3 to 12.6 µs on its tagged DogStatsD stream, measured with the
machine loaded about 3x (``sum(range(1000))`` in 80 µs).
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import mul
from typing import Any

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import CollapsingLowestDenseStore

from bridge.api import ExponentialHistogramValue, Metric, MetricKind
from bridge.ledger import loss_counter
from integrations.datadog.config import DogStatsDConfig
from integrations.datadog.dogstatsd import Parsed, Sample, parse_datagram, parse_lines

try:  # the C loop of LineCache (setup.py builds it where a compiler is; the Python loop gives the same results)
    from integrations.datadog import _dsdfast
except ImportError:  # pragma: no cover - a build without the C extension
    _dsdfast = None  # type: ignore[assignment]

__all__ = [
    "BIN_LIMIT",
    "DROP_REASONS",
    "MAX_SET_MEMBERS",
    "MAX_STORED_VALUES",
    "SCALE",
    "Aggregator",
    "DistributionSketch",
    "Flushed",
    "LineCache",
    "OTelMapping",
    "exponential_histogram",
    "new_sketch",
    "percentile_suffix",
    "tags_to_attributes",
]

#: The OTel exponential histogram scale of distributions (and the sketches' gamma = 2^(2^-SCALE)).
SCALE = 5
#: Most buckets per sign in a distribution's sketch (the Agent's sketch bin limit).
BIN_LIMIT = 4096
#: Most histogram and timer values held in one interval, all contexts together (8 bytes each).
MAX_STORED_VALUES = 1 << 23
#: Most set members held in one interval, all contexts together.
MAX_SET_MEMBERS = 1 << 20
#: Every reason ``Aggregator.dropped`` counts (samples, i.e. messages, not values).
DROP_REASONS = ("max_contexts", "timestamped_unsupported", "histogram_values", "set_members",
                "distribution_buckets")

_MULT = float(2 ** SCALE)  # log_gamma(v) = log2(v) * 2^SCALE, exactly (a power of two)
_CANON_CACHE = 1 << 13  # tag lists remembered sorted, of at most _CANON_TAGS tags (~8 MB at most)
_CANON_TAGS = 20
#: Message contexts a LineCache remembers (emptied when full), and the longest context text kept.
LINE_CACHE = 1 << 15
_CACHED_LINE = 512


class OTelMapping(LogarithmicMapping):
    """The ddsketch ``LogarithmicMapping`` with gamma exactly 2^(2^-scale): key(v) =
    ceil(log2(v) * 2^scale), so key k is OTel's exponential bucket k - 1 at ``scale``. (The
    package's own constructor derives gamma from a relative accuracy, which does not round-trip
    exactly.)"""

    def __init__(self, scale: int = SCALE) -> None:
        gamma = 2.0 ** (2.0 ** -scale)
        super().__init__((gamma - 1) / (gamma + 1))
        self.scale = scale
        self.gamma = gamma
        self._multiplier = float(2 ** scale)
        self.min_possible = 2.2250738585072014e-308 * gamma
        self.max_possible = 1.7976931348623157e308 / gamma

    def _log_gamma(self, value: float) -> float:
        return math.log2(value) * self._multiplier

    def _pow_gamma(self, value: float) -> float:
        return 2.0 ** (value / self._multiplier)


_MAPPING = OTelMapping()
_MIN_POSITIVE = _MAPPING.min_possible


class DogSketch(BaseDDSketch):
    """A DDSketch of the OTel-aligned mapping and collapsing stores, built from whole buckets."""

    def __init__(self, positive: CollapsingLowestDenseStore | None = None,
                 negative: CollapsingLowestDenseStore | None = None, zero_count: float = 0.0) -> None:
        super().__init__(mapping=_MAPPING,
                         store=positive if positive is not None else CollapsingLowestDenseStore(BIN_LIMIT),
                         negative_store=negative if negative is not None else CollapsingLowestDenseStore(BIN_LIMIT),
                         zero_count=zero_count)

    def set_stats(self, total: float, least: float, most: float) -> None:
        """The exact sum, min and max of the values its buckets count."""
        self._sum, self._min, self._max = total, least, most

    @property
    def min(self) -> float:
        return float(self._min)

    @property
    def max(self) -> float:
        return float(self._max)

    @property
    def positive_store(self) -> CollapsingLowestDenseStore:
        return self._store

    @property
    def negative_store(self) -> CollapsingLowestDenseStore:
        return self._negative_store

    @property
    def zero_count(self) -> float:
        return float(self._zero_count)


def new_sketch() -> DogSketch:
    """An empty distribution sketch of monbridge's layout (``add`` values to it as to any DDSketch)."""
    return DogSketch()


def _buckets(store: CollapsingLowestDenseStore) -> tuple[int, tuple[int, ...]]:
    """(OTel offset, counts) of one sign's store: key k is bucket k - 1."""
    if store.count == 0:
        return 0, ()
    lo, hi = store.min_key, store.max_key
    counts = store.bins[lo - store.offset:hi - store.offset + 1]
    return lo - 1, tuple(int(round(c)) for c in counts)


def exponential_histogram(sketch: DogSketch) -> ExponentialHistogramValue:
    """The sketch as an OTel exponential histogram at ``SCALE`` (the same buckets)."""
    pos_offset, pos = _buckets(sketch.positive_store)
    neg_offset, neg = _buckets(sketch.negative_store)
    zero = int(round(sketch.zero_count))
    count = zero + sum(pos) + sum(neg)
    return ExponentialHistogramValue(
        scale=SCALE, zero_count=zero, positive_offset=pos_offset, positive_counts=pos, negative_offset=neg_offset,
        negative_counts=neg, count=count, sum=sketch.sum, zero_threshold=0.0,
        min=sketch.min if count else None, max=sketch.max if count else None)


def percentile_suffix(p: float) -> tuple[int, str]:
    """The Agent's integer percentile of ``p`` (0 < p < 1) and its name suffix: 0.95 -> (95, ".95percentile")."""
    n = int(p * 100 + 0.5)
    return n, f".{n}percentile"


def tags_to_attributes(tags: Sequence[str]) -> dict[str, str]:
    """Attributes of (sorted, distinct) tags: ``k:v`` -> k=v, ``flag`` -> unnamed_flag=flag, a
    repeated key's values joined with ``,``."""
    out: dict[str, str] = {}
    for t in tags:
        k, sep, v = t.partition(":")
        if not sep or not k:
            k, v = "unnamed_" + t, t
        prev = out.get(k)
        out[k] = v if prev is None else prev + "," + v
    return out


@dataclass(slots=True)
class DistributionSketch:
    """One distribution context's sketch of one interval, for an export back to Datadog."""

    name: str
    tags: tuple[str, ...]
    sketch: DogSketch
    start_ns: int
    end_ns: int
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Flushed:
    """One interval's output: ``gauges`` to push with delta=False; ``deltas`` (counts, histogram
    counts, distributions) to push with delta=True, each over [start_ns, end_ns] (a timestamped
    count over its own interval); ``sketches`` the distributions as DDSketches."""

    gauges: list[Metric]
    deltas: list[Metric]
    sketches: list[DistributionSketch]
    start_ns: int
    end_ns: int


class _Hist:
    __slots__ = ("values", "weights", "count")

    def __init__(self) -> None:
        self.values = array("d")
        self.weights: array[float] | None = None  # only once a weight other than 1 comes
        self.count = 0.0


class _Dist:
    __slots__ = ("pos", "neg", "zero", "total", "least", "most")

    def __init__(self) -> None:
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.zero = 0
        self.total = 0.0
        self.least = math.inf
        self.most = -math.inf


#: A new context's state, by type: a count's sum and a gauge's last value in a one-element list.
_NEW: dict[str, Callable[[], Any]] = {"c": lambda: [0.0], "g": lambda: [0.0], "s": set, "h": _Hist, "ms": _Hist,
                                      "d": _Dist}


class Aggregator:
    """Per-interval DogStatsD aggregation (see the module docstring)."""

    def __init__(self, config: DogStatsDConfig) -> None:
        self.config = config
        self.max_contexts = config.max_contexts
        self.aggregates = tuple(config.histogram_aggregates)
        seen: dict[int, str] = {}
        for p in sorted(config.histogram_percentiles):
            n, suffix = percentile_suffix(p)
            seen.setdefault(n, suffix)
        self.percentiles = tuple(seen.items())  # (p in 1..100, suffix), ascending
        self.dropped: Counter[str] = loss_counter("dogstatsd")
        #: Whether the flush sorts histogram values in C (``_dsdfast.sort_values``) where it is built.
        self.fast = True
        self._lock = threading.Lock()
        self._canon: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._start_ns = time.time_ns()
        self._reset()

    def _reset(self) -> None:
        # one dict of contexts per type; a count's or gauge's state is a one-element list
        self._by_kind: dict[str, dict[tuple[str, tuple[str, ...]], Any]] = {k: {} for k in _NEW}
        self._late: dict[tuple[str, str, tuple[str, ...], float], float] = {}
        self._n = 0
        self._stored = 0
        self._members = 0
        self._gen = getattr(self, "_gen", 0) + 1  # (a LineCache's slots of an older interval are stale)

    @property
    def contexts(self) -> int:
        """How many contexts the current interval holds."""
        return self._n

    def _canonical(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        """Sorted and distinct; remembered for the tag lists of a usual size (bounded memory)."""
        canon = tuple(sorted(set(tags)))
        if len(tags) <= _CANON_TAGS:
            if len(self._canon) >= _CANON_CACHE:
                self._canon.clear()
            self._canon[tags] = canon
        return canon

    def add(self, samples: Sequence[Sample]) -> None:
        """Aggregate ``samples`` into the current interval (thread-safe)."""
        with self._lock:
            self._add(samples)

    def _add(self, samples: Sequence[Sample]) -> None:
        canon = self._canon
        limit = self.max_contexts
        dropped = self.dropped
        by_kind = self._by_kind
        n_contexts = self._n
        try:
            for name, kind, values, rate, tags, ts, _container in samples:
                if len(tags) > 1:
                    tags = canon.get(tags) or self._canonical(tags)
                if ts is not None:
                    self._n = n_contexts
                    self._add_late(name, kind, values, rate, tags, ts)
                    n_contexts = self._n
                    continue
                contexts = by_kind[kind]
                key = (name, tags)
                state = contexts.get(key)
                if state is None:
                    if n_contexts >= limit:
                        dropped["max_contexts"] += 1
                        continue
                    n_contexts += 1
                    state = contexts[key] = _NEW[kind]()
                if kind == "c":
                    total = values[0] if len(values) == 1 else sum(values)  # type: ignore[arg-type]
                    state[0] += total if rate == 1.0 else total * (1.0 / rate)  # type: ignore[operator]
                elif kind == "g":
                    state[0] = values[-1]
                elif kind == "ms" or kind == "h":
                    self._add_hist(state, values, rate)  # type: ignore[arg-type]
                elif kind == "d":
                    if not self._add_dist(state, values, max(1, int(1.0 / rate))):  # type: ignore[arg-type]
                        dropped["distribution_buckets"] += 1
                elif values[0] not in state:  # "s"
                    if self._members >= MAX_SET_MEMBERS:
                        dropped["set_members"] += 1
                        continue
                    self._members += 1
                    state.add(values[0])
        finally:
            self._n = n_contexts

    def _add_hist(self, h: _Hist, values: tuple[float, ...], rate: float) -> None:
        n = len(values)
        if self._stored + n > MAX_STORED_VALUES:
            self.dropped["histogram_values"] += 1
            return
        self._stored += n
        h.values.extend(values)
        if rate == 1.0:
            h.count += n
            if h.weights is not None:
                h.weights.extend((1.0,) * n)
        else:
            w = 1.0 / rate
            h.count += n * w
            if h.weights is None:
                h.weights = array("d", (1.0,) * (len(h.values) - n))
            h.weights.extend((w,) * n)

    @staticmethod
    def _add_dist(d: _Dist, values: tuple[float, ...], w: int) -> bool:
        """Count ``values`` (each ``w`` times) into their buckets; False if one needed a bucket
        beyond the bound (the others are counted)."""
        ok = True
        log2, ceil = math.log2, math.ceil
        for v in values:
            if v > _MIN_POSITIVE:
                buckets = d.pos
                k = ceil(log2(v) * _MULT)
            elif v < -_MIN_POSITIVE:
                buckets = d.neg
                k = ceil(log2(-v) * _MULT)
            else:
                d.zero += w
                k = None
            if k is not None:
                c = buckets.get(k)
                if c is None:
                    if len(buckets) >= 2 * BIN_LIMIT:
                        ok = False
                        continue
                    c = 0
                buckets[k] = c + w
            d.total += v * w
            if v < d.least:
                d.least = v
            if v > d.most:
                d.most = v
        return ok

    def _add_late(self, name: str, kind: str, values: tuple[float, ...] | tuple[str, ...], rate: float,
                  tags: tuple[str, ...], ts: float) -> None:
        if kind != "g" and kind != "c":
            self.dropped["timestamped_unsupported"] += 1
            return
        key = (kind, name, tags, ts)
        prev = self._late.get(key)
        if prev is None:
            if self._n >= self.max_contexts:
                self.dropped["max_contexts"] += 1
                return
            self._n += 1
            prev = 0.0
        # the Agent's no-aggregation pipeline sends a timestamped count's value as it came
        self._late[key] = values[-1] if kind == "g" else prev + sum(values)  # type: ignore[assignment,arg-type]

    def flush(self, now: float) -> Flushed:
        """End the current interval at ``now`` (Unix seconds) and return its metrics."""
        with self._lock:
            start_ns = self._start_ns
            end_ns = max(int(now * 1e9), start_ns + 1)
            self._start_ns = end_ns
            by_kind, late = self._by_kind, self._late
            self._reset()
        out = Flushed([], [], [], start_ns, end_ns)
        attrs: dict[tuple[str, ...], dict[str, str]] = {}

        def attributes(tags: tuple[str, ...]) -> dict[str, str]:
            a = attrs.get(tags)
            if a is None:
                a = attrs[tags] = tags_to_attributes(tags)
            return a

        gauge, counter = MetricKind.GAUGE, MetricKind.COUNTER
        for (name, tags), (total,) in by_kind["c"].items():
            out.deltas.append(Metric(name, counter, total, attributes=attributes(tags), timestamp_ns=end_ns,
                                     start_time_ns=start_ns))
        for (name, tags), (last,) in by_kind["g"].items():
            out.gauges.append(Metric(name, gauge, last, attributes=attributes(tags), timestamp_ns=end_ns))
        for (name, tags), members in by_kind["s"].items():
            out.gauges.append(Metric(name, gauge, float(len(members)), attributes=attributes(tags),
                                     timestamp_ns=end_ns))
        for unit, kind in (("", "h"), ("ms", "ms")):
            for (name, tags), h in by_kind[kind].items():
                self._histogram(out, name, attributes(tags), h, unit)
        interval_ns = int(self.config.flush_interval * 1e9)
        for (kind, name, tags, ts), value in late.items():
            t = int(ts) * 1_000_000_000
            if kind == "g":
                out.gauges.append(Metric(name, gauge, value, attributes=attributes(tags), timestamp_ns=t))
            else:
                out.deltas.append(Metric(name, counter, value, attributes=attributes(tags), timestamp_ns=t,
                                         start_time_ns=t - interval_ns))
        for (name, tags), d in by_kind["d"].items():
            sketch = _sketch(d)
            a = attributes(tags)
            out.sketches.append(DistributionSketch(name, tags, sketch, start_ns, end_ns, a))
            out.deltas.append(Metric(name, MetricKind.EXPONENTIAL_HISTOGRAM, exponential_histogram(sketch),  # type: ignore[arg-type]
                                     attributes=a, timestamp_ns=end_ns, start_time_ns=start_ns))
        return out

    def _histogram(self, out: Flushed, name: str, attributes: dict[str, str], h: _Hist, unit: str) -> None:
        """The configured aggregates and percentiles of one histogram or timer context."""
        end_ns = out.end_ns
        if _dsdfast is not None and self.fast:
            # the same order, weights and running sums as below, sorted in C without the interpreter lock
            raw_values, raw_weights, raw_cumulative = _dsdfast.sort_values(h.values, h.weights)
            values = memoryview(raw_values).cast("d")  # type: ignore[assignment]
            if raw_weights is None:
                cumulative: Sequence[float] = range(1, len(values) + 1)
                total = _sum(values)
            else:
                cumulative = memoryview(raw_cumulative).cast("d")  # type: ignore[assignment]
                total = _sum(list(map(mul, values, memoryview(raw_weights).cast("d"))))
        elif h.weights is None:
            values = sorted(h.values)
            cumulative = range(1, len(values) + 1)
            total = _sum(values)
        else:
            order = sorted(range(len(h.values)), key=h.values.__getitem__)
            values = [h.values[i] for i in order]
            weights = [h.weights[i] for i in order]
            cumulative = list(accumulate(weights))
            total = _sum([v * w for v, w in zip(values, weights, strict=True)])
        count = h.count
        last = len(values) - 1

        def first_above(target: float) -> float:
            """The first value whose running weight exceeds ``target``."""
            return values[min(bisect_right(cumulative, target), last)]

        gauge = MetricKind.GAUGE
        for agg in self.aggregates:
            if agg == "count":
                out.deltas.append(Metric(name + ".count", MetricKind.COUNTER, count, attributes=attributes,
                                         timestamp_ns=end_ns, start_time_ns=out.start_ns))
                continue
            if agg == "max":
                value = values[last]
            elif agg == "min":
                value = values[0]
            elif agg == "median":
                value = first_above((count - 1) / 2)
            elif agg == "avg":
                value = total / count
            else:  # "sum"
                value = total
            out.gauges.append(Metric(name + "." + agg, gauge, value, unit=unit, attributes=attributes,
                                     timestamp_ns=end_ns))
        for p, suffix in self.percentiles:
            out.gauges.append(Metric(name + suffix, gauge, first_above((p * count - 1) / 100), unit=unit,
                                     attributes=attributes, timestamp_ns=end_ns))


class LineCache:
    """One reader's fused parse and aggregation of DogStatsD text, for the common case of a
    stream repeating its contexts with new values.

    A metric message ``name:value|type[|fields...]`` has its context in its text less the value:
    the name and the ``|...`` tail from the first ``|`` on. The first time such a context text is
    seen, the message goes through the full parser (``parse_lines``) and ``Aggregator.add``, and
    when it gave one untimestamped sample, the context text is remembered with what it parsed to
    (type, sample rate, name, sorted tags) and the interval's aggregation slot. A message whose
    context text is remembered then costs finding ``:`` and ``|``, ``float`` of its value (with
    the parser's own checks), one dict lookup and the slot's update. Whatever else (a value the
    parser would refuse or read as several, events, service checks, ``|T``, an unknown context,
    bad input) goes through the full parser and ``add``, in its place among the others: the
    results and every count are those of ``parse_datagram`` then ``add``.

    Bounded: at most ``size`` context texts of at most 512 characters (emptied when full). Not
    thread-safe itself (one per reader thread); ``feed`` holds the aggregator's lock for the
    whole text, so a flush falls between two ``feed`` calls and the slots of a former interval
    are never updated (they are looked up again, counted against ``max_contexts`` as ``add``
    counts them)."""

    def __init__(self, aggregator: Aggregator, max_tags: int = 100, size: int = LINE_CACHE,
                 fast: bool = True) -> None:
        self.aggregator = aggregator
        #: The C loop (``integrations.datadog._dsdfast``), None where it is not built or not wanted.
        self._fast = _dsdfast if fast else None
        self.max_tags = max_tags
        self.size = size
        # context text -> [interval, slot (None: not held), type, rate, name, sorted tags, a distribution's
        # weight, 1 / rate, the type's code for the C loop]
        self._lines: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._lines)

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[int, Parsed]:
        """Parse and aggregate the messages of ``data`` (newline-separated, as one datagram or
        several joined); returns how many metric samples were handed to aggregation (taken or
        dropped by it, as ``add`` counts them) and the rest as ``parse_datagram`` gives it: events,
        service checks and errors (``samples`` holds none of them)."""
        if self._fast is not None and self._fast.isascii(data):
            return self._feed_fast(data)
        agg = self.aggregator
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError:
            p = parse_datagram(bytes(data), self.max_tags)
            agg.add(p.samples)
            taken = len(p.samples)
            p.samples = []
            return taken, p
        out = Parsed()
        with agg._lock:
            taken = self._feed_lines(text.split("\n"), out, agg._gen, text.isascii())
        if not (taken or out.events or out.service_checks or out.errors):
            out.errors.append(("empty", bytes(data[:64])))
        return taken, out

    def _feed_fast(self, data: bytes | bytearray | memoryview) -> tuple[int, Parsed]:
        """``feed`` of ASCII text with the C loop (``_dsdfast.feed``): it takes the lines of
        remembered contexts and stops at any other, which ``_feed_lines`` takes in its place."""
        agg = self.aggregator
        out = Parsed()
        taken = 0
        lines = self._lines
        fast_feed = self._fast.feed  # type: ignore[union-attr]
        n = len(data)
        raw: bytes | None = None
        pos = misses = 0
        with agg._lock:
            gen = agg._gen
            while pos < n:
                pos, k, stored, members = fast_feed(data, pos, lines, gen, MAX_STORED_VALUES - agg._stored,
                                                    MAX_SET_MEMBERS - agg._members, _MIN_POSITIVE, 2 * BIN_LIMIT)
                taken += k
                agg._stored += stored
                agg._members += members
                if pos >= n:
                    break
                if raw is None:
                    raw = bytes(data)
                misses = misses + 1 if not k else 0
                if misses > _MISSES:  # (lines the C loop does not take, one after another: the rest in Python)
                    taken += self._feed_lines(raw[pos:].decode("ascii").split("\n"), out, gen, True)
                    break
                end = raw.find(b"\n", pos)
                if end < 0:
                    end = n
                taken += self._feed_lines((raw[pos:end].decode("ascii"),), out, gen, True)
                pos = end + 1
        if not (taken or out.events or out.service_checks or out.errors):
            out.errors.append(("empty", bytes(data[:64])))
        return taken, out

    def _feed_lines(self, text_lines: Sequence[str], out: Parsed, gen: int, ascii: bool) -> int:
        """``feed``'s loop over decoded lines (the aggregator's lock held); the samples taken."""
        agg = self.aggregator
        taken = 0
        lines = self._lines
        for line in text_lines:
            if not line:
                continue
            i = line.find(":")
            j = line.find("|")
            if 0 < i < j:
                key = line[:i] + line[j:]
                e = lines.get(key)
                if e is not None:
                    raw = line[i + 1:j]
                    kind = e[2]
                    if kind != "s":
                        try:
                            v = float(raw)
                        except ValueError:
                            e = None
                        else:
                            # the parser's check: float() also takes '1_000', spaces, nan, inf
                            if v - v != 0.0 or not (ascii or raw.isascii()) or not raw.isdigit() and (
                                    "_" in raw or raw[0] <= " " or raw[-1] <= " "):
                                e = None
                    elif not raw:
                        e = None
                    if e is not None:
                        taken += 1
                        state = e[1]
                        if e[0] != gen:
                            state = self._slot(e, gen)
                            if state is None:
                                continue
                        if kind == "c":
                            state[0] += v if e[3] == 1.0 else v * e[7]
                        elif kind == "g":
                            state[0] = v
                        elif kind == "ms" or kind == "h":
                            weights = state.weights
                            if agg._stored >= MAX_STORED_VALUES or e[3] != 1.0 and weights is None:
                                agg._add_hist(state, (v,), e[3])  # (a drop, or the first weight)
                                continue
                            agg._stored += 1
                            state.values.append(v)
                            if e[3] == 1.0:
                                state.count += 1
                                if weights is not None:
                                    weights.append(1.0)
                            else:
                                state.count += e[7]
                                weights.append(e[7])
                        elif kind == "d":
                            if not agg._add_dist(state, (v,), e[6]):
                                agg.dropped["distribution_buckets"] += 1
                        elif raw not in state:  # "s"
                            if agg._members >= MAX_SET_MEMBERS:
                                agg.dropped["set_members"] += 1
                                continue
                            agg._members += 1
                            state.add(raw)
                        continue
            else:
                key = None
            taken += self._full(line, key, out, gen)
        return taken

    def _full(self, line: str, key: str | None, out: Parsed, gen: int) -> int:
        """``line`` through the parser and ``add`` (the aggregator's lock held); its context
        remembered when it is a usual one. Returns the samples it gave."""
        samples = out.samples
        parse_lines((line,), self.max_tags, out)
        if not samples:
            return 0
        agg = self.aggregator
        agg._add(samples)
        sample = samples[0]
        samples.clear()
        if key is not None and sample[5] is None and len(key) <= _CACHED_LINE:
            name, kind, _values, rate, tags, _ts, _container = sample
            if len(tags) > 1:
                tags = agg._canon.get(tags) or agg._canonical(tags)
            state = agg._by_kind[kind].get((name, tags))
            if len(self._lines) >= self.size:
                self._lines.clear()
            self._lines[key] = [gen if state is not None else 0, state, kind, rate, name, tags,
                                max(1, int(1.0 / rate)), 1.0 / rate, _KIND_CODE[kind]]
        return 1

    def _slot(self, e: list[Any], gen: int) -> Any:
        """The current interval's slot of a remembered context (a new one if it has none, None
        and counted when ``max_contexts`` are held); the aggregator's lock held."""
        agg = self.aggregator
        contexts = agg._by_kind[e[2]]
        key = (e[4], e[5])
        state = contexts.get(key)
        if state is None:
            if agg._n >= agg.max_contexts:
                agg.dropped["max_contexts"] += 1
                return None
            agg._n += 1
            state = contexts[key] = _NEW[e[2]]()
        e[0], e[1] = gen, state
        return state


#: Lines in a row the C loop leaves to Python (new contexts, bad lines) after which ``feed`` gives
#: Python the rest of the text at once (a line at a time costs a call each).
_MISSES = 16
#: The C loop's code of each type (``_dsdfast.c``'s K_*).
_KIND_CODE = {"c": 0, "g": 1, "ms": 2, "h": 2, "d": 3, "s": 4}


def _sum(values: Sequence[float]) -> float:
    """The correctly rounded sum, or +-inf (or nan) where finite values overflow it."""
    try:
        return math.fsum(values)
    except OverflowError:
        return sum(values)


def _sketch(d: _Dist) -> DogSketch:
    pos = CollapsingLowestDenseStore(BIN_LIMIT)
    for k in sorted(d.pos, reverse=True):  # highest first: a range too wide collapses its lowest
        pos.add(k, d.pos[k])
    neg = CollapsingLowestDenseStore(BIN_LIMIT)
    for k in sorted(d.neg, reverse=True):
        neg.add(k, d.neg[k])
    sketch = DogSketch(pos, neg, float(d.zero))
    sketch.set_stats(d.total, d.least, d.most)
    return sketch
