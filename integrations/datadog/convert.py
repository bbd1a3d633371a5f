"""The pipeline's series as Datadog takes them: ``/api/v2/series`` series and
``/api/v1/distribution_points`` series (plain JSON-ready dicts, the shapes of datadog-api-client's
``MetricSeries`` and ``DistributionPointsSeries``).

Conversion (``Converter.add``):

==============================  ==========================================================
OTel / monbridge kind           Datadog
==============================  ==========================================================
gauge                           gauge (``type`` 3)
non-monotonic sum               gauge (its value)
monotonic sum, cumulative       count (``type`` 1) of the increase since the last point,
                                with ``interval`` its seconds (see the first-point rule)
monotonic sum, delta            count of its value, ``interval`` from its start
histogram (explicit buckets)    distribution points of the increase (each bucket's count at
                                the bucket's representative value) and the counts
                                ``<name>.count`` and ``<name>.sum``
exponential histogram           the same; a bucket's value is the representative of the
                                DDSketch key it is (the harmonic mean of its bounds)
summary                         gauges ``<name>.sum``, ``<name>.count`` and
                                ``<name>.quantile`` tagged ``quantile:<q>``
==============================  ==========================================================

Cumulative to delta (counters and histograms), per series (name, kind and attributes):

* **the first point** of a series (none remembered) sends its whole value as the increase over
  ``[start, time]`` when its start time is known and not before the *horizon*; otherwise it is the
  baseline the next point's increase is taken from, and nothing is sent for it. The horizon is when
  this exporter first ran with its state (kept with the queue, so a restart does not move it), raised
  to the last point of any series it had to forget. A series that started while the exporter
  watched has nothing before its start that anyone sent, so its first value is all new; a counter
  that was already counting before (or whose start is unknown: a text-format scrape without
  ``_created``) carries an unknown amount some earlier sender may have sent already. A total the
  pipeline built from delta pushes (DogStatsD and intake counts: ``SeriesView.accumulated``) and
  first saw at or after the horizon is sent whole too, though its first window starts before it:
  all of it was received here;
* **next points**: the increase since the remembered point, over that interval, whatever its
  length (a gap of missed rounds is one longer interval: nothing is lost). A point not later than
  the remembered one sends nothing;
* **a reset** (a value lower than the remembered one, any histogram bucket or count lower, or a
  later start time): the whole value is the increase since the reset: over ``[start, time]`` when
  the start is known, else over the interval since the remembered point;
* a histogram whose buckets changed otherwise (other bounds) becomes a new baseline;
  exponential histograms of different scales are compared at the smaller scale.

The OTel Collector's ``initial_value: auto`` applies the same test against the start of its
process, so after each restart it drops the first point of every series that started earlier
(the increase across the restart is lost); here the horizon and the last points are kept with the
queue, so the first point after a restart is an increase over the last point sent before it.

What is remembered is bounded (``max_series``, the least recently updated forgotten first, which
raises the horizon) and kept with the queue across restarts (``state()``/``restore()``), so a
restart neither loses the increase across it nor sends a counter's total twice.

A distribution point expands to at most ``max_values`` values: beyond it every bucket's count is
scaled to the bound (largest remainders, a bucket that had any keeps at least one while the bound
allows), the exact count and sum still going out as ``<name>.count`` and ``<name>.sum``.
Non-finite values are never sent (JSON has no NaN): they are skipped and counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.api import ExponentialHistogramValue, HistogramValue, MetricKind, SummaryValue

__all__ = ["COUNT", "GAUGE", "Converted", "Converter", "Point", "bucket_values", "tags_of"]

#: MetricIntakeType of ``/api/v2/series``.
COUNT, RATE, GAUGE = 1, 2, 3
STATE_VERSION = 1


@dataclass(slots=True)
class Point:
    """One series' value at one time, as the converter reads it."""

    name: str
    kind: MetricKind
    value: Any
    attributes: Mapping[str, Any]
    start_ns: int | None
    time_ns: int
    delta: bool = False
    #: A total the pipeline built from delta pushes, first seen at ``first_ns`` (SeriesView.accumulated).
    accumulated: bool = False
    first_ns: int = 0


@dataclass(slots=True)
class Converted:
    """One round's conversion: v2 ``series`` and ``distributions`` (JSON-ready dicts)."""

    series: list[dict[str, Any]] = field(default_factory=list)
    distributions: list[dict[str, Any]] = field(default_factory=list)


#: The attribute name prefix of a bare tag (``flag`` is ``unnamed_flag=flag``).
_UNNAMED = "unnamed_"


def _tag_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(map(_tag_value, v))
    return str(v)


def tags_of(attributes: Mapping[str, Any], extra: Sequence[str] = ()) -> tuple[str | None, list[str]]:
    """The host (the ``host`` attribute) and the tags (``k:v`` of the other attributes, then ``extra``).

    A bare Datadog tag ``flag`` came in (DogStatsD, the intake) as the attribute
    ``unnamed_flag=flag``: it goes back out as ``flag``, as it was sent."""
    host: str | None = None
    tags: list[str] = []
    for k, v in attributes.items():
        if k == "host" and isinstance(v, str) and v:
            host = v
            continue
        value = _tag_value(v)
        tags.append(value if k.startswith(_UNNAMED) and k[len(_UNNAMED):] == value else f"{k}:{value}")
    tags.extend(extra)
    return host, tags


def _finite(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _explicit_reps(h: HistogramValue) -> list[float]:
    """The value each explicit bucket stands for: the midpoint of its bounds; the open first and
    last buckets their finite bound; all clamped into [min, max] when the source gave them."""
    b = h.bounds
    reps: list[float] = []
    for i in range(len(b) + 1):
        if not b:
            r = h.sum / h.count if h.count else 0.0
        elif i == 0:
            r = b[0]
        elif i == len(b):
            r = b[-1]
        else:
            r = (b[i - 1] + b[i]) / 2
        reps.append(r)
    lo = h.min if h.min is not None and math.isfinite(h.min) else None
    hi = h.max if h.max is not None and math.isfinite(h.max) else None
    if lo is not None:
        reps = [max(r, lo) for r in reps]
    if hi is not None:
        reps = [min(r, hi) for r in reps]
    return reps


def _exp_rep(scale: int, index: int) -> float:
    """The representative of exponential bucket ``index`` (``(base^i, base^(i+1)]``): the harmonic
    mean of its bounds, DDSketch's value for the key (``2·l·u/(l+u)``, within its relative accuracy
    ``(γ-1)/(γ+1)``; at scale 5, γ = 2^(1/32), the Agent's DogStatsD distribution buckets)."""
    try:
        lower = float(2.0 ** (index * 2.0 ** -scale))
        upper = float(2.0 ** ((index + 1) * 2.0 ** -scale))
    except OverflowError:
        return math.inf
    return 2 * lower * upper / (lower + upper)


def bucket_values(counts: Sequence[tuple[float, int]], max_values: int) -> list[float]:
    """Values standing for ``counts`` ((value, count) pairs): each value repeated its count times;
    when there are more than ``max_values`` in all, scaled down to ``max_values``: every bucket that
    has any keeps one (while there are no more buckets than the bound), the rest shared in proportion
    to the counts (largest remainders)."""
    nz = [(v, c) for v, c in counts if c > 0]
    total = sum(c for _, c in nz)
    if total <= max_values:
        return [v for v, c in nz for _ in range(c)]
    base = 1 if len(nz) <= max_values else 0
    weights = [c - base for _, c in nz]
    left = max_values - base * len(nz)
    wsum = sum(weights)
    shares = [w * left / wsum if wsum else 0.0 for w in weights]
    alloc = [int(x) for x in shares]
    rest = left - sum(alloc)
    for i in sorted(range(len(nz)), key=lambda i: shares[i] - alloc[i], reverse=True)[:rest]:
        alloc[i] += 1
    out: list[float] = []
    for (v, _), n in zip(nz, alloc, strict=True):
        out.extend([v] * (base + n))
    return out


def _downscale(offset: int, counts: Sequence[int], by: int) -> tuple[int, list[int]]:
    """Exponential buckets at a scale ``by`` lower (each 2^by buckets merged)."""
    if by <= 0 or not counts:
        return offset, list(counts)
    new_off = offset >> by
    out: dict[int, int] = {}
    for i, c in enumerate(counts):
        j = ((offset + i) >> by) - new_off
        out[j] = out.get(j, 0) + c
    n = max(out) + 1 if out else 0
    return new_off, [out.get(j, 0) for j in range(n)]


def _sub_buckets(cur: tuple[int, Sequence[int]], prev: tuple[int, Sequence[int]]) -> list[tuple[int, int]] | None:
    """(index, increase) of every bucket of ``cur`` over ``prev``; None when any went down."""
    (co, cc), (po, pc) = cur, prev
    out: list[tuple[int, int]] = []
    for i, c in enumerate(cc):
        j = co + i - po
        p = pc[j] if 0 <= j < len(pc) else 0
        if c < p:
            return None
        out.append((co + i, c - p))
    for j, p in enumerate(pc):  # a bucket the previous point had and this one lacks
        if p > 0 and not 0 <= po + j - co < len(cc):
            return None
    return out


def _encode_value(v: Any) -> Any:
    if isinstance(v, HistogramValue):
        return ["h", list(v.bounds), list(v.bucket_counts), v.sum, v.count]
    if isinstance(v, ExponentialHistogramValue):
        return ["e", v.scale, v.zero_count, v.positive_offset, list(v.positive_counts), v.negative_offset,
                list(v.negative_counts), v.sum, v.count]
    return float(v)


def _decode_value(v: Any) -> Any:
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list) and v and v[0] == "h" and len(v) == 5:
        return HistogramValue(tuple(map(float, v[1])), tuple(map(int, v[2])), float(v[3]), int(v[4]))
    if isinstance(v, list) and v and v[0] == "e" and len(v) == 9:
        return ExponentialHistogramValue(int(v[1]), int(v[2]), int(v[3]), tuple(map(int, v[4])), int(v[5]),
                                         tuple(map(int, v[6])), int(v[8]), None if v[7] is None else float(v[7]))
    raise ValueError(f"not a remembered value: {str(v)[:60]}")


@dataclass(slots=True)
class _Prev:
    start_ns: int | None
    time_ns: int
    value: Any


@dataclass(slots=True)
class Counts:
    """What conversions skipped, by reason (self-metrics)."""

    non_finite: int = 0
    baseline: int = 0
    out_of_order: int = 0
    layout_changed: int = 0
    forgotten: int = 0
    sampled_values: int = 0


class Converter:
    """Series to Datadog payload items, remembering what cumulative to delta needs (module doc).
    Not thread-safe: one conversion at a time."""

    def __init__(self, hostname: str, tags: Sequence[str] = (), *, horizon_ns: int, max_series: int = 200_000,
                 max_values: int = 4096) -> None:
        self.hostname = hostname
        self.tags = list(tags)
        self.horizon_ns = horizon_ns
        self.max_series = max_series
        self.max_values = max_values
        self.counts = Counts()
        self._prev: dict[str, _Prev] = {}

    # ------------------------------------------------------------------ state

    def __len__(self) -> int:
        return len(self._prev)

    def state(self) -> dict[str, Any]:
        """What is remembered, as JSON-ready data."""
        return {"version": STATE_VERSION, "horizon_ns": self.horizon_ns,
                "series": [[k, p.start_ns, p.time_ns, _encode_value(p.value)] for k, p in self._prev.items()]}

    def restore(self, doc: Any) -> int:
        """Take back what ``state()`` gave (the horizon too); returns how many series; entries that
        do not read are skipped. Raises ValueError when ``doc`` is not a state at all."""
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION or type(doc.get("horizon_ns")) is not int:
            raise ValueError("not a state of this exporter's version")
        self.horizon_ns = doc["horizon_ns"]
        for e in doc.get("series") or ():
            try:
                key, start, t, value = e
                if not isinstance(key, str) or (start is not None and type(start) is not int) or type(t) is not int:
                    continue
                self._prev[key] = _Prev(start, t, _decode_value(value))
            except (ValueError, TypeError):
                continue
        self._evict()
        return len(self._prev)

    def _remember(self, key: str, start: int | None, t: int, value: Any) -> None:
        self._prev.pop(key, None)  # re-inserted last: the dict's order is least recently updated first
        self._prev[key] = _Prev(start, t, value)
        self._evict()

    def _evict(self) -> None:
        while len(self._prev) > self.max_series:
            key = next(iter(self._prev))
            gone = self._prev.pop(key)
            self.horizon_ns = max(self.horizon_ns, gone.time_ns)
            self.counts.forgotten += 1

    # ------------------------------------------------------------------ conversion

    def convert(self, points: Iterable[Point]) -> Converted:
        out = Converted()
        for p in points:
            self.add(p, out)
        return out

    def add(self, p: Point, out: Converted) -> None:
        host, tags = tags_of(p.attributes, self.tags)
        host = host or self.hostname
        ts = p.time_ns // 1_000_000_000
        kind = p.kind
        if kind is MetricKind.GAUGE or kind is MetricKind.UP_DOWN_COUNTER:
            self._scalar(out, p.name, GAUGE, p.value, ts, host, tags)
        elif kind is MetricKind.SUMMARY:
            v: SummaryValue = p.value
            self._scalar(out, p.name + ".sum", GAUGE, v.sum, ts, host, tags)
            self._scalar(out, p.name + ".count", GAUGE, v.count, ts, host, tags)
            for q, qv in v.quantiles:
                self._scalar(out, p.name + ".quantile", GAUGE, qv, ts, host, [*tags, f"quantile:{q:g}"])
        elif kind is MetricKind.COUNTER:
            if not _finite(p.value):
                self.counts.non_finite += 1
                return
            inc = self._increase(p, float(p.value))
            if inc is not None:
                self._scalar(out, p.name, COUNT, inc[0], ts, host, tags, inc[1])
        elif kind in (MetricKind.HISTOGRAM, MetricKind.EXPONENTIAL_HISTOGRAM):
            inc = self._increase(p, p.value)
            if inc is not None:
                self._distribution(out, p.name, inc[0], ts, host, tags, inc[1])

    def _key(self, p: Point) -> str:
        return json.dumps([p.name, p.kind.value, sorted((k, _tag_value(v)) for k, v in p.attributes.items())],
                          separators=(",", ":"))

    def _increase(self, p: Point, value: Any) -> tuple[Any, int] | None:
        """(the increase, its interval in seconds) the point sends, or None; remembers the point."""
        t, start = p.time_ns, p.start_ns
        if p.delta:
            return value, _seconds(t - (start if start is not None else t))
        key = self._key(p)
        prev = self._prev.get(key)
        if prev is None:
            self._remember(key, start, t, value)
            if start is not None and start <= t and (
                    start >= self.horizon_ns or (p.accumulated and p.first_ns >= self.horizon_ns)):
                return value, _seconds(t - start)
            self.counts.baseline += 1
            return None
        if t <= prev.time_ns:
            self.counts.out_of_order += t < prev.time_ns
            return None
        restarted = start is not None and prev.start_ns is not None and start > prev.start_ns
        diff = None if restarted else _difference(value, prev.value)
        self._remember(key, start, t, value)
        if diff is _LAYOUT:
            self.counts.layout_changed += 1
            return None
        if diff is None:  # a reset: the whole value is new since it
            since = start if start is not None and prev.time_ns <= start <= t else prev.time_ns
            return value, _seconds(t - since)
        return diff, _seconds(t - prev.time_ns)

    def _scalar(self, out: Converted, name: str, kind: int, value: float, ts: int, host: str, tags: list[str],
                interval: int | None = None) -> None:
        if not _finite(value):
            self.counts.non_finite += 1
            return
        s: dict[str, Any] = {"metric": name, "type": kind, "points": [{"timestamp": ts, "value": float(value)}],
                             "resources": [{"name": host, "type": "host"}], "tags": tags}
        if interval is not None:
            s["interval"] = interval
        out.series.append(s)

    def _distribution(self, out: Converted, name: str, v: Any, ts: int, host: str, tags: list[str],
                      interval: int) -> None:
        total: float | None
        if isinstance(v, HistogramValue):
            pairs = list(zip(_explicit_reps(v), v.bucket_counts, strict=True))
            count, total = v.count, v.sum
        else:
            e: ExponentialHistogramValue = v
            pairs = [(0.0, e.zero_count)]
            pairs += [(_exp_rep(e.scale, e.positive_offset + i), c) for i, c in enumerate(e.positive_counts)]
            pairs += [(-_exp_rep(e.scale, e.negative_offset + i), c) for i, c in enumerate(e.negative_counts)]
            count, total = e.count, e.sum
        pairs = [(r, c) for r, c in pairs if c > 0]
        if any(not math.isfinite(r) for r, _ in pairs):
            self.counts.non_finite += 1
            pairs = [(r, c) for r, c in pairs if math.isfinite(r)]
        values = bucket_values(pairs, self.max_values)
        self.counts.sampled_values += max(0, sum(c for _, c in pairs) - len(values))
        if values:
            out.distributions.append({"metric": name, "points": [[float(ts), values]], "host": host, "tags": tags,
                                      "type": "distribution"})
        self._scalar(out, name + ".count", COUNT, float(count), ts, host, tags, interval)
        if total is not None:
            self._scalar(out, name + ".sum", COUNT, float(total), ts, host, tags, interval)


_LAYOUT = object()


def _seconds(ns: int) -> int:
    return max(1, round(ns / 1e9))


def _difference(cur: Any, prev: Any) -> Any:
    """``cur - prev`` of two cumulative values of one series; None when it went down (a reset);
    ``_LAYOUT`` when they cannot be compared (other buckets)."""
    if isinstance(cur, float):
        if not isinstance(prev, float):
            return _LAYOUT
        return None if cur < prev else cur - prev
    if isinstance(cur, HistogramValue):
        if not isinstance(prev, HistogramValue) or cur.bounds != prev.bounds:
            return _LAYOUT
        counts = [c - p for c, p in zip(cur.bucket_counts, prev.bucket_counts, strict=True)]
        if cur.count < prev.count or any(c < 0 for c in counts):
            return None
        return HistogramValue(cur.bounds, tuple(counts), cur.sum - prev.sum, cur.count - prev.count)
    if isinstance(cur, ExponentialHistogramValue):
        if not isinstance(prev, ExponentialHistogramValue):
            return _LAYOUT
        if cur.count < prev.count or cur.zero_count < prev.zero_count:
            return None
        scale = min(cur.scale, prev.scale)
        cp = _downscale(cur.positive_offset, cur.positive_counts, cur.scale - scale)
        pp = _downscale(prev.positive_offset, prev.positive_counts, prev.scale - scale)
        cn = _downscale(cur.negative_offset, cur.negative_counts, cur.scale - scale)
        pn = _downscale(prev.negative_offset, prev.negative_counts, prev.scale - scale)
        pos, neg = _sub_buckets(cp, pp), _sub_buckets(cn, pn)
        if pos is None or neg is None:
            return None
        total = None if cur.sum is None or prev.sum is None else cur.sum - prev.sum
        return ExponentialHistogramValue(
            scale, cur.zero_count - prev.zero_count, cp[0], tuple(c for _, c in pos), cn[0],
            tuple(c for _, c in neg), cur.count - prev.count, total)
    return _LAYOUT
