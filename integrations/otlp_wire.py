"""OTLP ``ExportMetricsServiceRequest`` bytes, straight from the pipeline's families.

Each family (``.name .kind .unit .description .native .series``; series with ``.attributes .value
.start_ns .time_ns .first_ns``) becomes one OTLP ``Metric`` of its kind: gauge, sum (monotonic or
not), histogram, exponential histogram (passed through as it came) or summary. Nothing is
re-aggregated and nothing is kept between pushes but what delta temporality needs.

Hand-written on purpose, as remote write's ``WriteRequest`` is, because it measured faster.
One request of 100k gauge series with three attributes each, CPU on this project's 2 shared
cores (``benchmarks/bench_otlp_push.py --encoders-only`` repeats it and checks both decode to
equal messages): building ``opentelemetry-proto``'s generated messages (upb) and serializing
them takes 1.26-1.50 s, most of it creating and filling a ``NumberDataPoint`` and three
``KeyValue``/``AnyValue`` messages per point from Python; this encoder takes 0.43 s on the
first push and 0.07-0.10 s on the following ones (15-17× less). A series' attribute bytes
(with its data point's key and length: they do not change while the series lives) are built
once and kept on the series (``Series.otlp``, ~100 bytes); a point's fixed fields are one
``struct`` pack; attribute keys are encoded once; lengths come from a table.
tests/unit/test_otlp_wire.py compares the decoded output with the SDK's encoder's for every
kind and attribute type.

Wire details kept from the SDK's encoder (``opentelemetry.exporter.otlp.proto.common``):

* an ``int`` value is ``as_int``, a ``float`` ``as_double`` (an int outside int64 is sent as a
  double rather than failing the push); gauges carry no start time; a NaN value is sent as it
  is (the SDK's observable instruments drop it);
* attribute values: bool, str, int, float, bytes, sequences (``array_value``), mappings
  (``kvlist_value``), None (an empty ``AnyValue``); an int outside int64 or a value of another
  type is left out of the point, logged once per key;
* a histogram's unknown ``min``/``max`` (None or NaN) are left out, not sent as NaN; empty
  exponential histogram bucket ranges are left out;
* families of instruments (collected values) are in scope ``monbridge``, pre-aggregated and
  imported families in ``monbridge.preaggregated``; the resource is the pipeline's.

Temporality (``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``) is applied as the SDK's
OTLP exporter defines it per instrument kind. The pipeline holds observed cumulative values, so
a monotonic sum is the SDK's ``ObservableCounter`` (DELTA under ``delta``, CUMULATIVE under
``lowmemory``), an up-down sum ``ObservableUpDownCounter`` (always CUMULATIVE), histograms and
exponential histograms the SDK's ``Histogram`` (DELTA under ``delta`` and ``lowmemory``);
gauges and summaries have no temporality. A delta point is the difference from the series'
previous push (start = the previous point's time); a series seen for the first time, or whose
value went down or whose start time moved (a reset), sends its whole cumulative value from its
own start. The previous value per series is the only state kept, and only for series that get
deltas: it is rebuilt every push from the series pushed, so it expires with the series.

Large pushes are split: no request is bigger than ``max_request_bytes`` (4 MiB by default, as
the OpenTelemetry Collector's exporter batches) before compression, except a request holding a
single point bigger than that. A family may be split across requests; each request repeats the
resource, the scope and the metric's name, unit and type.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from bridge import __version__
from bridge.api import ExponentialHistogramValue, HistogramValue, MetricKind, SummaryValue
from integrations.otlp_config import TEMPORALITY_PREFERENCES, Temporality

__all__ = [
    "CUMULATIVE",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DELTA",
    "TEMPORALITY_PREFERENCES",
    "OtlpEncoder",
    "Temporality",
    "encode_attributes",
    "temporality_of",
]

log = logging.getLogger("monbridge.integrations.otlp")

DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024

#: ``AggregationTemporality`` values of OTLP.
DELTA = 1
CUMULATIVE = 2

SCOPE_NAME = "monbridge"
PREAGGREGATED_SCOPE_NAME = "monbridge.preaggregated"
SCOPE_VERSION = __version__

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def temporality_of(kind: MetricKind, preference: str) -> int | None:
    """The OTLP temporality of a family of ``kind`` under ``preference`` (None: the kind has none)."""
    if kind is MetricKind.GAUGE or kind is MetricKind.SUMMARY:
        return None
    if kind is MetricKind.UP_DOWN_COUNTER or preference == "cumulative":
        return CUMULATIVE
    if kind is MetricKind.COUNTER:  # ObservableCounter
        return DELTA if preference == "delta" else CUMULATIVE
    return DELTA  # Histogram: DELTA under both delta and lowmemory


# ---------------------------------------------------------------------------- protobuf primitives


# Varints below 16384 (one or two bytes): every length of a point, a key or a value, mostly.
_SMALL = [bytes((n,)) if n < 128 else bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(16384)]


def _varint_slow(n: int) -> bytes:
    """Any varint (an int64 as two's complement, as remote write writes them)."""
    from integrations.prometheus.remote_write import _varint as varint

    return varint(n)


def _varint(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 16384 else _varint_slow(n)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _field(tag: int, data: bytes) -> bytes:
    """A length-delimited field (``tag`` is the key byte: field number << 3 | 2)."""
    n = len(data)
    return bytes((tag,)) + (_SMALL[n] if n < 16384 else _varint_slow(n)) + data


_D = struct.Struct("<d").pack
_Q = struct.Struct("<Q").pack
# NumberDataPoint's fixed fields: [start_time_unix_nano (2)], time_unix_nano (3), as_double (4) / as_int (6).
_GAUGE_DOUBLE = struct.Struct("<BQBd").pack
_GAUGE_INT = struct.Struct("<BQBq").pack
_SUM_DOUBLE = struct.Struct("<BQBQBd").pack
_SUM_INT = struct.Struct("<BQBQBq").pack
# start (2), time (3), count (4): histogram, exponential histogram and summary points.
_TIMES_COUNT = struct.Struct("<BQBQBQ").pack


# ---------------------------------------------------------------------------- attributes


def _any_value(v: Any) -> bytes | None:
    """An ``AnyValue``'s bytes, in the SDK encoder's order of types; None: not encodable."""
    c = v.__class__
    if c is str:
        return _field(0x0A, v.encode("utf-8", "replace"))
    if c is bool:
        return b"\x10\x01" if v else b"\x10\x00"
    if c is int:
        return b"\x18" + _varint_slow(v) if _INT64_MIN <= v <= _INT64_MAX else None
    if c is float:
        return b"\x21" + _D(v)
    if v is None:
        return b""
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, str):
        return _field(0x0A, str(v).encode("utf-8", "replace"))
    if isinstance(v, int):
        return b"\x18" + _varint_slow(int(v)) if _INT64_MIN <= v <= _INT64_MAX else None
    if isinstance(v, float):
        return b"\x21" + _D(float(v))
    if isinstance(v, bytes | bytearray | memoryview):
        return _field(0x3A, bytes(v))
    if isinstance(v, Sequence):
        parts = []
        for x in v:
            b = _any_value(x)
            if b is None:
                return None
            parts.append(_field(0x0A, b))
        return _field(0x2A, b"".join(parts))
    if isinstance(v, Mapping):
        kvs = []
        for k, x in v.items():
            b = _any_value(x)
            if b is None:
                return None
            kvs.append(_field(0x0A, _field(0x0A, str(k).encode("utf-8", "replace")) + _field(0x12, b)))
        return _field(0x32, b"".join(kvs))
    return None


_KEYS: dict[str, bytes] = {}  # attribute key -> KeyValue.key field bytes
_MAX_KEYS = 65536
_refused_keys: set[str] = set()


def _key(k: str) -> bytes:
    kb = _KEYS.get(k)
    if kb is None:
        if len(_KEYS) >= _MAX_KEYS:
            _KEYS.clear()  # bounded: a source with ever-new keys cannot grow it without end
        kb = _KEYS[k] = _field(0x0A, str(k).encode("utf-8", "replace"))
    return kb


def encode_attributes(tag: int, attributes: Mapping[str, Any]) -> bytes:
    """``attributes`` as repeated ``KeyValue`` fields with key byte ``tag`` (7 of a
    NumberDataPoint is 0x3A, 9 of a HistogramDataPoint 0x4A, ...)."""
    out = b""
    keys = _KEYS
    small = _SMALL
    head = _HEADS[tag]
    for k, v in attributes.items():
        kb = keys.get(k)
        if kb is None:
            kb = _key(k)
        if v.__class__ is str:
            try:
                b = v.encode()
            except UnicodeEncodeError:  # a lone surrogate: not UTF-8, as protobuf strings must be
                _refuse(k, v)
                continue
            n = len(b)
            size = len(kb) + n + 4
            if size < 128:  # every length fits in one byte: the common case, spelled out
                out += head + small[size] + kb + b"\x12" + small[n + 2] + b"\x0a" + small[n] + b
                continue
            av: bytes | None = b"\x0a" + _varint(n) + b
        else:
            av = _any_value(v)
            if av is None:
                _refuse(k, v)
                continue
        kv = kb + b"\x12" + _varint(len(av)) + av
        out += head + _varint(len(kv)) + kv
    return out


_HEADS = [bytes((i,)) for i in range(256)]


def _refuse(k: str, v: Any) -> None:
    if len(_refused_keys) < 1024 and k not in _refused_keys:
        _refused_keys.add(k)
        log.warning("OTLP: attribute %r with a value of type %s (an int outside int64, a string that is not "
                    "UTF-8, ...) cannot be encoded and is left out of the points that carry it", k, type(v).__name__)


# ---------------------------------------------------------------------------- points


def _sum_fixed(start: int, time_ns: int, v: Any) -> bytes:
    """A sum point's start, time and value (``_SUM_FIXED`` bytes)."""
    if isinstance(v, int) and _INT64_MIN <= v <= _INT64_MAX:
        return _SUM_INT(0x11, start, 0x19, time_ns, 0x31, int(v))
    return _SUM_DOUBLE(0x11, start, 0x19, time_ns, 0x21, float(v))


def _min_max(tag_min: int, tag_max: int, lo: float | None, hi: float | None) -> bytes:
    out = b""
    if lo is not None and not math.isnan(lo):
        out += bytes((tag_min,)) + _D(lo)
    if hi is not None and not math.isnan(hi):
        out += bytes((tag_max,)) + _D(hi)
    return out


def _histogram_point(attrs: bytes, start: int, time_ns: int, count: int, total: float,
                     counts: Sequence[int], bounds: Sequence[float], lo: float | None, hi: float | None) -> bytes:
    out = attrs + _TIMES_COUNT(0x11, start, 0x19, time_ns, 0x21, count) + b"\x29" + _D(total)
    if counts:
        out += _field(0x32, struct.pack(f"<{len(counts)}Q", *counts))
    if bounds:
        out += _field(0x3A, struct.pack(f"<{len(bounds)}d", *bounds))
    return out + _min_max(0x59, 0x61, lo, hi)


def _buckets(offset: int, counts: Sequence[int]) -> bytes:
    packed = b"".join(_varint(c) for c in counts)
    return b"\x08" + _varint(_zigzag(offset)) + _field(0x12, packed)


def _exponential_point(attrs: bytes, start: int, time_ns: int, v: ExponentialHistogramValue,
                       count: int, total: float | None, zero_count: int,
                       positive: tuple[int, Sequence[int]], negative: tuple[int, Sequence[int]],
                       with_min_max: bool) -> bytes:
    out = attrs + _TIMES_COUNT(0x11, start, 0x19, time_ns, 0x21, count)
    if total is not None:
        out += b"\x29" + _D(total)
    out += b"\x30" + _varint(_zigzag(v.scale)) + b"\x39" + _Q(zero_count)
    if positive[1]:
        out += _field(0x42, _buckets(*positive))
    if negative[1]:
        out += _field(0x4A, _buckets(*negative))
    if with_min_max:
        out += _min_max(0x61, 0x69, v.min, v.max)
    if v.zero_threshold:
        out += b"\x71" + _D(v.zero_threshold)
    return out


def _summary_point(attrs: bytes, start: int, time_ns: int, v: SummaryValue) -> bytes:
    out = attrs + _TIMES_COUNT(0x11, start, 0x19, time_ns, 0x21, int(v.count)) + b"\x29" + _D(v.sum)
    for q, x in v.quantiles:
        out += b"\x32\x12\x09" + _D(q) + b"\x11" + _D(x)
    return out


# ---------------------------------------------------------------------------- delta


def _diff_buckets(offset: int, counts: Sequence[int], p_offset: int,
                  p_counts: Sequence[int]) -> tuple[int, list[int]] | None:
    """``counts`` minus ``p_counts`` aligned by bucket index; None when a bucket went down or a
    previous bucket is no longer covered (a reset)."""
    if not p_counts:
        return offset, list(counts)
    if p_offset < offset or p_offset + len(p_counts) > offset + len(counts):
        return None
    out = list(counts)
    base = p_offset - offset
    for i, c in enumerate(p_counts):
        d = out[base + i] - c
        if d < 0:
            return None
        out[base + i] = d
    return offset, out


# ---------------------------------------------------------------------------- requests


class _Request:
    """Assembles requests of at most ``limit`` bytes from metrics' points."""

    def __init__(self, resource: bytes, limit: int) -> None:
        self.resource = resource
        self.limit = limit
        self.done: list[bytes] = []
        self.done_points: list[int] = []  # the data points in each of ``done``
        self.open_points = 0
        self.scopes: list[tuple[bytes, list[bytes]]] = []  # (scope bytes, metrics) of the open request
        self.size = len(resource) + 16

    def _close(self) -> None:
        """The open request's bytes, joined once (lengths are added up, not measured on copies)."""
        if not self.scopes:
            return
        parts: list[bytes] = []
        rm_len = len(self.resource)
        for scope, metrics in self.scopes:
            content = len(scope) + sum(map(len, metrics))
            head = b"\x12" + _varint(content)
            rm_len += len(head) + content
            parts.append(head)
            parts.append(scope)
            parts.extend(metrics)
        self.done.append(b"".join([b"\x0a", _varint(rm_len), self.resource, *parts]))
        self.done_points.append(self.open_points)
        self.open_points = 0
        self.scopes = []
        self.size = len(self.resource) + 16

    def add(self, scope: bytes, header: bytes, data_tag: int, points: list[bytes], tail: bytes) -> None:
        """One metric (``header``: name, description, unit) whose data field ``data_tag`` holds
        ``points`` (each a data_points entry) and ``tail`` (temporality, monotonic)."""
        i = 0
        n = len(points)
        tag = bytes((data_tag,))
        while i < n:
            room = self.limit - self.size - len(header) - len(tail) - len(scope) - 32
            j = i
            taken = 0
            while j < n and (taken + len(points[j]) <= room or (j == i and not self.scopes)):
                taken += len(points[j])
                j += 1
            if j == i:  # nothing fits in what is left of this request: start the next
                self._close()
                continue
            data_len = taken + len(tail)
            data_head = tag + _varint(data_len)
            metric_len = len(header) + len(data_head) + data_len
            entry = b"".join([b"\x12", _varint(metric_len), header, data_head, *points[i:j], tail])
            if not self.scopes or self.scopes[-1][0] is not scope:
                self.scopes.append((scope, []))
                self.size += len(scope) + 8
            self.scopes[-1][1].append(entry)
            self.size += len(entry)
            self.open_points += j - i
            i = j
            if i < n:
                self._close()

    def finish(self) -> list[bytes]:
        self._close()
        return self.done

    def take(self) -> Iterator[tuple[bytes, int]]:
        """The finished requests with their data point counts, each handed out once."""
        done, points = self.done, self.done_points
        self.done, self.done_points = [], []
        return zip(done, points, strict=True)


def _resource_bytes(resource: Any) -> bytes:
    attrs = getattr(resource, "attributes", None) or {}
    out = _field(0x0A, encode_attributes(0x0A, attrs))
    schema = getattr(resource, "schema_url", "") or ""
    if schema:
        out += _field(0x1A, schema.encode())
    return out


def _scope_bytes(name: str) -> bytes:
    return _field(0x0A, _field(0x0A, name.encode()) + _field(0x12, SCOPE_VERSION.encode()))


_SCOPE = _scope_bytes(SCOPE_NAME)
_PREAGG_SCOPE = _scope_bytes(PREAGGREGATED_SCOPE_NAME)


class OtlpEncoder:
    """Encodes pushes of families as OTLP requests; keeps, under delta temporality, the previous
    cumulative value of each series that is sent as deltas (nothing else)."""

    def __init__(self, temporality: Temporality = "cumulative",
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        if temporality not in TEMPORALITY_PREFERENCES:
            raise ValueError(f"temporality must be one of {', '.join(TEMPORALITY_PREFERENCES)}, not {temporality!r}")
        if max_request_bytes < 1024:
            raise ValueError("max_request_bytes must be at least 1024")
        self.temporality: Temporality = temporality
        self.max_request_bytes = max_request_bytes
        # The data points in the request ``requests`` yielded last: what a failed send loses.
        self.last_points = 0
        # (family name, series key) -> (start, time, value) of the last push, for delta series only.
        self._previous: dict[tuple[str, Any], tuple[int, int, Any]] = {}

    def encode(self, families: Iterable[tuple[Any, Sequence[Any]]], resource: Any) -> list[bytes]:
        """``ExportMetricsServiceRequest`` bytes for ``families``, given as (family, its series)
        pairs; several requests when they exceed ``max_request_bytes``; none when empty."""
        return list(self.requests(families, resource))

    def requests(self, families: Iterable[tuple[Any, Sequence[Any]]], resource: Any) -> Iterator[bytes]:
        """``encode``, one request at a time: each is yielded as soon as it is full, so a push
        holds one request's bytes at a time, not all of them. The delta state is updated when
        the iteration ends."""
        req = _Request(_resource_bytes(resource), self.max_request_bytes)
        previous = self._previous
        current: dict[tuple[str, Any], tuple[int, int, Any]] = {}
        pref = self.temporality
        for fam, series in families:
            if not series:
                continue
            kind = fam.kind
            temporality = temporality_of(kind, pref)
            header = _field(0x0A, fam.name.encode("utf-8", "replace"))
            if fam.description:
                header += _field(0x12, fam.description.encode("utf-8", "replace"))
            if fam.unit:
                header += _field(0x1A, fam.unit.encode("utf-8", "replace"))
            preaggregated = getattr(fam, "preaggregated", None)
            scope = _PREAGG_SCOPE if (fam.native if preaggregated is None else preaggregated) else _SCOPE
            if temporality == DELTA:
                points = self._delta_points(fam, series, previous, current)
            else:
                points = _cumulative_points(kind, series)
            if kind is MetricKind.GAUGE:
                req.add(scope, header, 0x2A, points, b"")
            elif kind is MetricKind.COUNTER or kind is MetricKind.UP_DOWN_COUNTER:
                tail = b"\x10" + _varint(temporality or CUMULATIVE)
                if kind is MetricKind.COUNTER:
                    tail += b"\x18\x01"
                req.add(scope, header, 0x3A, points, tail)
            elif kind is MetricKind.HISTOGRAM:
                req.add(scope, header, 0x4A, points, b"\x10" + _varint(temporality or CUMULATIVE))
            elif kind is MetricKind.EXPONENTIAL_HISTOGRAM:
                req.add(scope, header, 0x52, points, b"\x10" + _varint(temporality or CUMULATIVE))
            elif kind is MetricKind.SUMMARY:
                req.add(scope, header, 0x5A, points, b"")
            if req.done:
                for body, self.last_points in req.take():
                    yield body
        self._previous = current
        req.finish()
        for body, self.last_points in req.take():
            yield body

    # ------------------------------------------------------------------ delta

    def _delta_points(self, fam: Any, series: Sequence[Any], previous: dict[tuple[str, Any], tuple[int, int, Any]],
                      current: dict[tuple[str, Any], tuple[int, int, Any]]) -> list[bytes]:
        kind = fam.kind
        name = fam.name
        out: list[bytes] = []
        add = out.append
        tag = 0x3A if kind is MetricKind.COUNTER else 0x4A if kind is MetricKind.HISTOGRAM else 0x0A
        for s in series:
            key = getattr(s, "key", None)
            if key is None:
                key = tuple(sorted(s.attributes.items()))
            ident = (name, key)
            v = s.value
            t = s.time_ns
            start = s.start_ns if s.start_ns is not None else min(s.first_ns, t)
            prev = previous.get(ident)
            current[ident] = (start, t, v)
            if prev is not None and (prev[0] != start or prev[1] > t):
                prev = None  # a new start: the series was reset
            if prev is not None and prev[1] == t:
                continue  # not observed again since the last push: no point (a delta over no time)
            if kind is MetricKind.COUNTER:
                if prev is not None and prev[2] <= v:
                    add(_number_prefix(s, _SUM_FIXED) + _sum_fixed(prev[1], t, v - prev[2]))
                else:
                    add(_number_prefix(s, _SUM_FIXED) + _sum_fixed(start, t, v))
                continue
            attrs = encode_attributes(tag, s.attributes)
            if kind is MetricKind.HISTOGRAM:
                point = _histogram_delta(attrs, start, t, v, prev)
            else:
                point = _exponential_delta(attrs, start, t, v, prev)
            add(_field(0x0A, point))
        return out


def _histogram_delta(attrs: bytes, start: int, t: int, v: HistogramValue, prev: tuple[int, int, Any] | None) -> bytes:
    p = prev[2] if prev is not None else None
    if (p is not None and p.bounds == v.bounds and p.count <= v.count
            and all(a >= b for a, b in zip(v.bucket_counts, p.bucket_counts, strict=True))):
        counts = [a - b for a, b in zip(v.bucket_counts, p.bucket_counts, strict=True)]
        # min/max of the interval are unknown from two cumulative points: left out.
        return _histogram_point(attrs, prev[1], t, v.count - p.count, v.sum - p.sum,  # type: ignore[index]
                                counts, v.bounds, None, None)
    return _histogram_point(attrs, start, t, v.count, v.sum, v.bucket_counts, v.bounds, v.min, v.max)


def _exponential_delta(attrs: bytes, start: int, t: int, v: ExponentialHistogramValue,
                       prev: tuple[int, int, Any] | None) -> bytes:
    p = prev[2] if prev is not None else None
    if p is not None and p.scale == v.scale and p.count <= v.count and p.zero_count <= v.zero_count:
        pos = _diff_buckets(v.positive_offset, v.positive_counts, p.positive_offset, p.positive_counts)
        neg = _diff_buckets(v.negative_offset, v.negative_counts, p.negative_offset, p.negative_counts)
        if pos is not None and neg is not None:
            total = v.sum - p.sum if v.sum is not None and p.sum is not None else None
            return _exponential_point(attrs, prev[1], t, v, v.count - p.count, total,  # type: ignore[index]
                                      v.zero_count - p.zero_count, pos, neg, False)
    return _exponential_point(attrs, start, t, v, v.count, v.sum, v.zero_count,
                              (v.positive_offset, v.positive_counts), (v.negative_offset, v.negative_counts), True)


def _number_prefix(s: Any, fixed: int) -> bytes:
    """A number point's data_points entry up to its fixed fields: the entry's key and length and
    the point's attributes. The same for every push of the series (its attributes are its
    identity, and the fixed fields are ``fixed`` bytes whatever the value), so it is kept on the
    series when it has a place for it (``Series.otlp``) and built once."""
    pre: bytes | None = getattr(s, "otlp", None)
    if pre is None:
        attrs = encode_attributes(0x3A, s.attributes)
        pre = b"\x0a" + _varint(len(attrs) + fixed) + attrs
        try:
            s.otlp = pre
        except AttributeError:  # a series object without the slot: built again next push
            pass
    return pre


_GAUGE_FIXED = 18  # time (1 + 8) and the value (1 + 8)
_SUM_FIXED = 27  # start, time and the value


def _cumulative_points(kind: MetricKind, series: Sequence[Any]) -> list[bytes]:
    """Every series of a family as data_points entries, cumulative (as the pipeline holds them)."""
    out: list[bytes] = []
    add = out.append
    slotted = bool(series) and hasattr(series[0], "otlp")
    if kind is MetricKind.GAUGE:
        gd, gi = _GAUGE_DOUBLE, _GAUGE_INT
        for s in series:
            v = s.value
            pre = s.otlp if slotted else None
            if pre is None:
                pre = _number_prefix(s, _GAUGE_FIXED)
            if v.__class__ is float:
                add(pre + gd(0x19, s.time_ns, 0x21, v))
            elif isinstance(v, int) and _INT64_MIN <= v <= _INT64_MAX:
                add(pre + gi(0x19, s.time_ns, 0x31, int(v)))
            else:
                add(pre + gd(0x19, s.time_ns, 0x21, float(v)))
        return out
    if kind is MetricKind.COUNTER or kind is MetricKind.UP_DOWN_COUNTER:
        sd, si = _SUM_DOUBLE, _SUM_INT
        for s in series:
            v = s.value
            t = s.time_ns
            start = s.start_ns
            if start is None:
                start = s.first_ns if s.first_ns < t else t
            pre = s.otlp if slotted else None
            if pre is None:
                pre = _number_prefix(s, _SUM_FIXED)
            if v.__class__ is float:
                add(pre + sd(0x11, start, 0x19, t, 0x21, v))
            elif isinstance(v, int) and _INT64_MIN <= v <= _INT64_MAX:
                add(pre + si(0x11, start, 0x19, t, 0x31, int(v)))
            else:
                add(pre + sd(0x11, start, 0x19, t, 0x21, float(v)))
        return out
    for s in series:
        v = s.value
        t = s.time_ns
        start = s.start_ns if s.start_ns is not None else min(s.first_ns, t)
        if kind is MetricKind.HISTOGRAM:
            p = _histogram_point(encode_attributes(0x4A, s.attributes), start, t, v.count, v.sum, v.bucket_counts,
                                 v.bounds, v.min, v.max)
        elif kind is MetricKind.EXPONENTIAL_HISTOGRAM:
            p = _exponential_point(encode_attributes(0x0A, s.attributes), start, t, v, v.count, v.sum, v.zero_count,
                                   (v.positive_offset, v.positive_counts), (v.negative_offset, v.negative_counts),
                                   True)
        elif kind is MetricKind.SUMMARY:
            p = _summary_point(encode_attributes(0x3A, s.attributes), start, t, v)
        else:
            continue
        add(_field(0x0A, p))
    return out
