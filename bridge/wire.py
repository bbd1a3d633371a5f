"""The wire between the agent and a plugin's worker process: length-prefixed frames on a socket.

A frame is a 4-byte big-endian length, then that many bytes: a 1-byte message type and its body.
Messages (``T_*``): the agent sends ``SETUP`` once, then ``CALL``s (a call id, a method and its
arguments) and ``BATCH``es (an export batch, sent once and exported to each sink by id); the
worker answers each call with ``RESULT`` (a plain value), ``METRICS`` (a collection's or an
import's metrics) or ``ERROR`` (the exception's type and message).

Plain values (call arguments and results) are a small tagged encoding: None, bools, int64,
float64, strings, lists and string-keyed maps, nested at most ``max_depth`` deep. Nothing is
pickled: the worker runs a third party's code and everything it sends is hostile input.

Metrics are sent as families: a family's name, kind, unit and description once, its attribute
keys once, then per series one code per key (an index into the message's string table, so a
repeated attribute value is sent once) and its values packed into three ``array`` streams
(uint32 codes and counts, int64 counts and timestamps, float64 values), each in the host's
byte order (both ends are on one machine). Decoding checks every count and index against the
frame and the limits it was given (``WireLimits``); anything out of place is a ``WireError``
saying where in the frame (family, series, field).
"""

from __future__ import annotations

import math
import struct
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import Any

from bridge.api import (
    Alert,
    AlertState,
    ExponentialHistogramValue,
    HistogramValue,
    Metric,
    MetricKind,
    SummaryValue,
)

__all__ = [
    "alert_from_value", "alert_value", "Frame", "WireError", "WireLimits", "decode_frame_header", "decode_losses",
    "decode_metrics", "decode_value",
    "encode_metrics", "encode_value", "frame", "T_BATCH", "T_CALL", "T_ERROR", "T_LEDGER", "T_METRICS", "T_RESULT", "T_SETUP",
]

T_SETUP = ord("S")
T_CALL = ord("C")
T_BATCH = ord("B")
T_RESULT = ord("R")
T_METRICS = ord("M")
T_ERROR = ord("X")
#: What the worker's plugin dropped since its last such frame: [[component, reason, n], …], sent
#: unasked (call id 0) before the answer to a call; the agent counts it in its own loss ledger.
T_LEDGER = ord("L")
MAX_LEDGER_ENTRIES = 512  # per T_LEDGER frame
MAX_LEDGER_TEXT = 200  # characters of a component or reason
WORKER_TYPES = frozenset((T_RESULT, T_METRICS, T_ERROR, T_LEDGER))

_LEN = struct.Struct(">I")
_ID = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_U32 = struct.Struct(">I")
_NONE_INT = -(2**63)  # an absent timestamp or optional count in the int64 stream

_KINDS = tuple(MetricKind)
_KIND_CODE = {k: i for i, k in enumerate(_KINDS)}
_SCALAR = frozenset((MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.UP_DOWN_COUNTER))
_H, _S, _E = MetricKind.HISTOGRAM, MetricKind.SUMMARY, MetricKind.EXPONENTIAL_HISTOGRAM


class WireError(ValueError):
    """A frame that is not what the wire allows; the message says where in it."""


@dataclass(frozen=True)
class WireLimits:
    """What a decoder accepts from the other end."""

    max_frame: int = 64 << 20  # bytes of one frame
    max_series: int = 100_000  # series in one metrics message (the pipeline's cardinality limit)
    max_families: int = 10_000
    max_string: int = 64 << 10  # characters of one string
    max_strings: int = 1_000_000  # entries of one string table
    max_buckets: int = 10_000  # buckets or quantiles of one series
    max_items: int = 100_000  # entries of one list or map of a plain value
    max_depth: int = 4  # nesting of a plain value


@dataclass(frozen=True)
class Frame:
    type: int
    body: memoryview


def frame(mtype: int, *parts: bytes | bytearray | memoryview) -> bytes:
    """One frame: its length, its type and its body (the parts, joined)."""
    size = 1 + sum(len(p) for p in parts)
    return b"".join((_LEN.pack(size), bytes((mtype,)), *parts))


def decode_frame_header(header: bytes, limits: WireLimits) -> int:
    """The length of the frame whose 4-byte ``header`` this is; a WireError when over the limit."""
    n: int = _LEN.unpack(header)[0]
    if n < 1:
        raise WireError("frame header: empty frame")
    if n > limits.max_frame:
        raise WireError(f"frame header: frame of {n} bytes is over the limit of {limits.max_frame}")
    return n


def call_id(body: memoryview) -> int:
    if len(body) < 4:
        raise WireError("call id: truncated")
    return int(_ID.unpack_from(body)[0])


def pack_id(cid: int) -> bytes:
    return _ID.pack(cid)


# --------------------------------------------------------------------------- plain values


def encode_value(value: Any) -> bytes:
    out = bytearray()
    _encode_value(value, out)
    return bytes(out)


def _encode_value(v: Any, out: bytearray) -> None:
    if v is None:
        out += b"N"
    elif v is True:
        out += b"T"
    elif v is False:
        out += b"F"
    elif isinstance(v, int):
        if -(2**63) <= v < 2**63:
            out += b"i" + _I64.pack(v)
        else:
            _encode_str("s", str(v), out)
    elif isinstance(v, float):
        out += b"d" + _F64.pack(v)
    elif isinstance(v, str):
        _encode_str("s", v, out)
    elif isinstance(v, Mapping):
        out += b"m" + _U32.pack(len(v))
        for k, x in v.items():
            _encode_str("s", str(k), out)
            _encode_value(x, out)
    elif isinstance(v, (list, tuple)):
        out += b"l" + _U32.pack(len(v))
        for x in v:
            _encode_value(x, out)
    else:
        raise TypeError(f"cannot send a {type(v).__name__} over the wire")


def _encode_str(tag: str, s: str, out: bytearray) -> None:
    b = s.encode("utf-8", "surrogatepass")
    out += tag.encode() + _U32.pack(len(b)) + b


def decode_value(buf: memoryview | bytes, limits: WireLimits, where: str = "value") -> Any:
    """A plain value that fills ``buf`` exactly."""
    view = memoryview(buf)
    value, pos = _decode_value(view, 0, limits, 0, where)
    if pos != len(view):
        raise WireError(f"{where}: {len(view) - pos} bytes after the value")
    return value


def _need(view: memoryview, pos: int, n: int, where: str) -> None:
    if pos + n > len(view):
        raise WireError(f"{where}: truncated at byte {pos} (needs {n} more, has {len(view) - pos})")


def _decode_str(view: memoryview, pos: int, limits: WireLimits, where: str) -> tuple[str, int]:
    _need(view, pos, 4, where)
    (n,) = _U32.unpack_from(view, pos)
    pos += 4
    if n > 4 * limits.max_string:
        raise WireError(f"{where}: string of {n} bytes is over the limit")
    _need(view, pos, n, where)
    try:
        s = bytes(view[pos:pos + n]).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        raise WireError(f"{where}: string at byte {pos} is not UTF-8: {e.reason}") from None
    if len(s) > limits.max_string:
        raise WireError(f"{where}: string of {len(s)} characters is over the limit of {limits.max_string}")
    return s, pos + n


def _decode_value(view: memoryview, pos: int, limits: WireLimits, depth: int, where: str) -> tuple[Any, int]:
    _need(view, pos, 1, where)
    tag = view[pos]
    pos += 1
    if tag == 0x4E:  # N
        return None, pos
    if tag == 0x54:  # T
        return True, pos
    if tag == 0x46:  # F
        return False, pos
    if tag == 0x69:  # i
        _need(view, pos, 8, where)
        return _I64.unpack_from(view, pos)[0], pos + 8
    if tag == 0x64:  # d
        _need(view, pos, 8, where)
        return _F64.unpack_from(view, pos)[0], pos + 8
    if tag == 0x73:  # s
        return _decode_str(view, pos, limits, where)
    if tag in (0x6C, 0x6D):  # l, m
        if depth >= limits.max_depth:
            raise WireError(f"{where}: nested deeper than {limits.max_depth} at byte {pos - 1}")
        _need(view, pos, 4, where)
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        if n > limits.max_items or n > len(view) - pos:
            raise WireError(f"{where}: {n} items at byte {pos - 4} (over the limit or the frame)")
        if tag == 0x6C:
            items = []
            for i in range(n):
                x, pos = _decode_value(view, pos, limits, depth + 1, f"{where}[{i}]")
                items.append(x)
            return items, pos
        m: dict[str, Any] = {}
        for i in range(n):
            _need(view, pos, 1, where)
            if view[pos] != 0x73:
                raise WireError(f"{where}: key {i} at byte {pos} is not a string")
            k, pos = _decode_str(view, pos + 1, limits, where)
            m[k], pos = _decode_value(view, pos, limits, depth + 1, f"{where}.{k[:40]}")
        return m, pos
    raise WireError(f"{where}: unknown tag 0x{tag:02x} at byte {pos - 1}")


# --------------------------------------------------------------------------- metrics

_HEAD = struct.Struct("=IIIIII")  # strings, characters of text, u32, i64, f64 entries, bytes of other values

_MISSING = object()
_INTS = 16  # a family's scalar values are all ints, in the int64 stream
_MIXED = 32  # floats and ints: the f64 stream, then which of them are ints
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


class _Encoder:
    __slots__ = ("table", "u", "q", "d", "others")

    def __init__(self) -> None:
        self.table: dict[str, int] = {}
        self.u = array("I")
        self.q = array("q")
        self.d = array("d")
        self.others: list[Any] = []

    def s(self, text: str) -> int:
        return self.table.setdefault(text, len(self.table))

    def opt_i(self, v: int | None) -> None:
        self.q.append(_NONE_INT if v is None else v)


def encode_metrics(metrics: Iterable[Metric], native: frozenset[str] | set[str] = frozenset()) -> bytes:
    """``metrics`` as families (in the order each family first appears, series in their order);
    a family whose name is in ``native`` carries Prometheus names (an export batch's ``native``)."""
    fams: dict[tuple[str, MetricKind, str, str], list[Metric]] = {}
    for m in metrics:
        key = (m.name, m.kind, m.unit, m.description)
        ms = fams.get(key)
        if ms is None:
            fams[key] = [m]
        else:
            ms.append(m)
    enc = _Encoder()
    u, q, d, s = enc.u, enc.q, enc.d, enc.s
    table, others = enc.table, enc.others
    u.append(len(fams))
    for (name, kind, unit, desc), ms in fams.items():
        kts = {tuple(m.attributes) for m in ms}
        keys: dict[str, None] = {}
        for kt in kts:
            keys.update(dict.fromkeys(kt))
        vals = [v for m in ms for v in m.attributes.values()] if len(kts) == 1 else []
        dense = len(kts) == 1 and set(map(type, vals)) <= {str}
        has_ts = any(m.timestamp_ns is not None for m in ms)
        has_start = any(m.start_time_ns is not None for m in ms)
        flags = has_ts | has_start << 1 | (name in native) << 2 | dense << 3
        scalars: list[Any] = [m.value for m in ms] if kind in _SCALAR else []
        value_types = set(map(type, scalars))
        if value_types and not value_types <= {float}:  # ints stay ints (rendered as such)
            flags |= _INTS if value_types == {int} and all(_I64_MIN <= v <= _I64_MAX for v in scalars) else _MIXED
        u.extend((s(name), _KIND_CODE[kind], s(unit), s(desc), flags, len(keys), len(ms)))
        keyl = list(kts.pop()) if dense else list(keys)
        u.extend(map(s, keyl))
        if dense:  # every series has these keys, in this order, and string values: their indices
            u.extend(map(table.setdefault, vals, map(len, repeat(table, len(vals)))))  # type: ignore[arg-type]
        else:
            get = table.get
            for m in ms:
                a = m.attributes
                for k in keyl:
                    v = a.get(k, _MISSING)
                    if v.__class__ is str:
                        i = get(v)
                        if i is None:
                            i = table[v] = len(table)
                        u.append(i << 1 | 1)
                    elif v is _MISSING:
                        u.append(0)
                    else:
                        u.append((len(others) + 1) << 1)
                        others.append(v)
        if flags & _INTS:
            q.extend(scalars)
        elif flags & _MIXED:
            ints = [i for i, v in enumerate(scalars) if v.__class__ is int]
            d.extend(map(float, scalars))
            u.append(len(ints))
            u.extend(ints)
        elif kind in _SCALAR:
            d.extend(scalars)
        else:
            for m in ms:
                _encode_aggregate(enc, kind, m)
        if has_ts:
            q.extend([_NONE_INT if m.timestamp_ns is None else m.timestamp_ns for m in ms])
        if has_start:
            q.extend([_NONE_INT if m.start_time_ns is None else m.start_time_ns for m in ms])
    strings = list(table)
    text = "".join(strings)
    blob = text.encode("utf-8", "surrogatepass")
    lengths = array("I", map(len, strings))
    other = encode_value(others) if others else b""
    head = _HEAD.pack(len(strings), len(blob), len(u), len(q), len(d), len(other))
    return b"".join((head, lengths.tobytes(), blob, u.tobytes(), q.tobytes(), d.tobytes(), other))


def _encode_aggregate(enc: _Encoder, kind: MetricKind, m: Metric) -> None:
    v: Any = m.value
    u, q, d = enc.u, enc.q, enc.d
    if kind is _H:
        flags = (v.min is not None) | (v.max is not None) << 1 | (v.le_labels is not None) << 2
        u.extend((len(v.bounds), flags))
        d.extend(v.bounds)
        q.extend(v.bucket_counts)
        d.append(v.sum)
        q.append(v.count)
        if v.min is not None:
            d.append(v.min)
        if v.max is not None:
            d.append(v.max)
        if v.le_labels is not None:
            u.extend(enc.s(t) for t in v.le_labels)
    elif kind is _S:
        u.extend((len(v.quantiles), v.quantile_labels is not None))
        for qq, x in v.quantiles:
            d.append(qq)
            d.append(x)
        d.append(v.sum)
        d.append(v.count)
        if v.quantile_labels is not None:
            u.extend(enc.s(t) for t in v.quantile_labels)
    else:
        flags = (v.sum is not None) | (v.min is not None) << 1 | (v.max is not None) << 2
        u.extend((len(v.positive_counts), len(v.negative_counts), flags))
        q.extend((v.scale, v.zero_count, v.positive_offset, v.negative_offset, v.count))
        q.extend(v.positive_counts)
        q.extend(v.negative_counts)
        d.append(v.zero_threshold)
        for x in (v.sum, v.min, v.max):
            if x is not None:
                d.append(x)


class _Reader:
    """Sequential reads of the three streams, each checked against its end."""

    __slots__ = ("streams", "pos")
    NAMES = ("u32", "i64", "f64")

    def __init__(self, u: array[int], q: array[int], d: array[float]) -> None:
        self.streams: tuple[array[Any], ...] = (u, q, d)
        self.pos = [0, 0, 0]

    def _take(self, i: int, n: int, what: str) -> array[Any]:
        p, stream = self.pos[i], self.streams[i]
        if p + n > len(stream):
            raise WireError(f"{what}: the {self.NAMES[i]} stream ends at {len(stream)}, needs {p + n}")
        self.pos[i] = p + n
        return stream[p:p + n]

    def take_u(self, n: int, what: str) -> array[int]:
        return self._take(0, n, what)

    def take_q(self, n: int, what: str) -> array[int]:
        return self._take(1, n, what)

    def take_d(self, n: int, what: str) -> array[float]:
        return self._take(2, n, what)

    def used_up(self) -> str | None:
        """None when every stream was read to its end, else how far each was."""
        if all(p == len(st) for p, st in zip(self.pos, self.streams, strict=True)):
            return None
        return ", ".join(f"{name} {p}/{len(st)}" for name, p, st in zip(self.NAMES, self.pos, self.streams, strict=True))


def _array(code: str, view: memoryview, pos: int, n: int, what: str) -> tuple[array[Any], int]:
    a = array(code)
    size = n * a.itemsize
    if pos + size > len(view):
        raise WireError(f"metrics: the {what} ({n} entries) run past the end of the frame")
    a.frombytes(view[pos:pos + size])
    return a, pos + size


def decode_metrics(buf: memoryview | bytes, limits: WireLimits) -> tuple[list[Metric], set[str]]:
    """The metrics ``encode_metrics`` made, and the names of its native families; a WireError
    naming where when ``buf`` is not such a message or breaks ``limits``."""
    view = memoryview(buf)
    if len(view) < _HEAD.size:
        raise WireError("metrics: truncated header")
    n_str, n_text, n_u, n_q, n_d, n_other = _HEAD.unpack_from(view)
    if n_str > limits.max_strings:
        raise WireError(f"metrics: {n_str} strings in the table is over the limit of {limits.max_strings}")
    pos = _HEAD.size
    lengths, pos = _array("I", view, pos, n_str, "string lengths")
    if pos + n_text > len(view):
        raise WireError("metrics: the string table runs past the end of the frame")
    try:
        text = bytes(view[pos:pos + n_text]).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        raise WireError(f"metrics: string table byte {e.start} is not UTF-8: {e.reason}") from None
    pos += n_text
    if lengths and max(lengths) > limits.max_string:
        raise WireError(f"metrics: string {lengths.index(max(lengths))} is over the limit of {limits.max_string} characters")
    if sum(lengths) != len(text):
        raise WireError(f"metrics: string lengths add up to {sum(lengths)}, the table has {len(text)} characters")
    ends = list(accumulate(lengths))
    strings = [text[a:b] for a, b in zip([0, *ends], ends, strict=False)]
    u, pos = _array("I", view, pos, n_u, "u32 stream")
    q, pos = _array("q", view, pos, n_q, "i64 stream")
    d, pos = _array("d", view, pos, n_d, "f64 stream")
    if pos + n_other != len(view):
        raise WireError(f"metrics: {len(view) - pos} bytes of other values, the header says {n_other}")
    others: list[Any] = []
    if n_other:
        others = decode_value(view[pos:], WireLimits(max_depth=1, max_items=limits.max_series * 64,
                                                     max_string=limits.max_string), "metrics: other values")
        if not isinstance(others, list) or any(isinstance(o, (list, dict)) or o is None for o in others):
            raise WireError("metrics: other attribute values must be a flat list of bools, numbers and strings")
    return _decode_families(_Reader(u, q, d), strings, others, limits)


def _decode_families(r: _Reader, strings: list[str], others: list[Any],
                     limits: WireLimits) -> tuple[list[Metric], set[str]]:
    out: list[Metric] = []
    native: set[str] = set()
    (n_fam,) = r.take_u(1, "metrics: family count")
    if n_fam > limits.max_families:
        raise WireError(f"metrics: {n_fam} families is over the limit of {limits.max_families}")
    total = 0
    n_strings = len(strings)
    for fi in range(n_fam):
        where = f"metrics: family {fi}"
        name_i, kind_i, unit_i, desc_i, flags, n_keys, n_series = r.take_u(7, where)
        if max(name_i, unit_i, desc_i) >= n_strings:
            raise WireError(f"{where}: a string index is past the table ({n_strings})")
        if kind_i >= len(_KINDS):
            raise WireError(f"{where}: unknown kind {kind_i}")
        name, kind, unit, desc = strings[name_i], _KINDS[kind_i], strings[unit_i], strings[desc_i]
        where = f"metrics: family {fi} ({name[:80]!r})"
        total += n_series
        if total > limits.max_series:
            raise WireError(f"{where}: more than {limits.max_series} series (the cardinality limit)")
        if n_keys > 1000:
            raise WireError(f"{where}: {n_keys} attribute keys is over the limit of 1000")
        key_idx = r.take_u(n_keys, f"{where} keys")
        if any(i >= n_strings for i in key_idx):
            raise WireError(f"{where}: an attribute key's index is past the table")
        keys = [strings[i] for i in key_idx]
        if len(set(keys)) != len(keys):
            raise WireError(f"{where}: an attribute key is repeated")
        if flags & 4 and n_series:
            native.add(name)
        codes = r.take_u(n_keys * n_series, f"{where} attributes")
        attrs_list = _attributes(codes, keys, n_series, strings, others, bool(flags & 8), where)
        if kind in _SCALAR and flags & _INTS:
            values: list[Any] = r.take_q(n_series, f"{where} values").tolist()
        elif kind in _SCALAR:
            values = r.take_d(n_series, f"{where} values").tolist()
            if flags & _MIXED:
                (n_ints,) = r.take_u(1, f"{where} integer values")
                for i in r.take_u(min(n_ints, n_series + 1), f"{where} integer values"):
                    if i >= n_series or not math.isfinite(values[i]):
                        raise WireError(f"{where}: integer value {i} is not one of its {n_series} finite values")
                    values[i] = int(values[i])
        else:
            values = [_decode_aggregate(r, kind, strings, limits, f"{where} series {si}") for si in range(n_series)]
        ts: Sequence[int | None] = [None] * n_series
        starts: Sequence[int | None] = ts
        if flags & 1:
            ts = [None if t == _NONE_INT else t for t in r.take_q(n_series, f"{where} timestamps")]
        if flags & 2:
            starts = [None if t == _NONE_INT else t for t in r.take_q(n_series, f"{where} start times")]
        try:
            out.extend(map(Metric, repeat(name, n_series), repeat(kind), values, repeat(unit), repeat(desc),
                           attrs_list, ts, starts))
        except (ValueError, TypeError) as e:
            raise WireError(f"{where}: {e}") from None
    left = r.used_up()
    if left is not None:
        raise WireError(f"metrics: streams not used up ({left})")
    return out, native


def _attributes(codes: array[int], keys: list[str], n_series: int, strings: list[str], others: list[Any],
                dense: bool, where: str) -> list[dict[str, Any]]:
    """Each series' attributes from its codes: string indices (``dense``), else per code 0 for
    absent, an odd code for string ``code >> 1``, an even one for other value ``(code >> 1) - 1``."""
    if dense:
        lut: list[Any] = strings
    else:
        ns, no = len(strings), len(others)
        lut = [_MISSING] * (2 * max(ns, no + 1))
        lut[1:2 * ns:2] = strings
        lut[2:2 * no + 2:2] = others
    try:
        vals = list(map(lut.__getitem__, codes))
    except IndexError:
        bad = next(i for i, c in enumerate(codes) if c >= len(lut))
        raise WireError(f"{where} series {bad // max(len(keys), 1)}: attribute {keys[bad % len(keys)][:80]!r} "
                        f"has code {codes[bad]}, past the string table and the other values") from None
    it = iter(vals)
    attrs = [dict(zip(keys, it, strict=False)) for _ in range(n_series)]
    if not dense and _MISSING in vals:
        attrs = [{k: v for k, v in a.items() if v is not _MISSING} for a in attrs]
    return attrs


def _counts(a: array[int], where: str, what: str) -> tuple[int, ...]:
    t = tuple(a)
    if t and min(t) < 0:
        raise WireError(f"{where}: a negative {what}")
    return t


def _labels(r: _Reader, n: int, strings: list[str], where: str) -> tuple[str, ...]:
    idx = r.take_u(n, f"{where} labels")
    if any(i >= len(strings) for i in idx):
        raise WireError(f"{where}: a label's index is past the string table")
    return tuple(strings[i] for i in idx)


def _decode_aggregate(r: _Reader, kind: MetricKind, strings: list[str], limits: WireLimits, where: str) -> Any:
    try:
        if kind is _H:
            n, flags = r.take_u(2, where)
            if n > limits.max_buckets:
                raise WireError(f"{where}: {n} buckets is over the limit of {limits.max_buckets}")
            bounds = tuple(r.take_d(n, f"{where} bounds"))
            counts = _counts(r.take_q(n + 1, f"{where} bucket counts"), where, "bucket count")
            (hsum,) = r.take_d(1, f"{where} sum")
            (count,) = r.take_q(1, f"{where} count")
            hmin = r.take_d(1, f"{where} min")[0] if flags & 1 else None
            hmax = r.take_d(1, f"{where} max")[0] if flags & 2 else None
            le = _labels(r, n + 1, strings, where) if flags & 4 else None
            if count < 0:
                raise WireError(f"{where}: a negative count")
            return HistogramValue(bounds, counts, hsum, count, hmin, hmax, le)
        if kind is _S:
            n, flags = r.take_u(2, where)
            if n > limits.max_buckets:
                raise WireError(f"{where}: {n} quantiles is over the limit of {limits.max_buckets}")
            pairs = r.take_d(2 * n, f"{where} quantiles")
            ssum, scount = r.take_d(2, f"{where} sum and count")
            ql = _labels(r, n, strings, where) if flags & 1 else None
            return SummaryValue(tuple(zip(pairs[::2], pairs[1::2], strict=True)), ssum, scount, ql)
        n_pos, n_neg, flags = r.take_u(3, where)
        if n_pos + n_neg > limits.max_buckets:
            raise WireError(f"{where}: {n_pos + n_neg} buckets is over the limit of {limits.max_buckets}")
        scale, zero_count, pos_off, neg_off, count = r.take_q(5, where)
        pos_counts = _counts(r.take_q(n_pos, f"{where} positive counts"), where, "bucket count")
        neg_counts = _counts(r.take_q(n_neg, f"{where} negative counts"), where, "bucket count")
        (zt,) = r.take_d(1, f"{where} zero threshold")
        esum = r.take_d(1, f"{where} sum")[0] if flags & 1 else None
        emin = r.take_d(1, f"{where} min")[0] if flags & 2 else None
        emax = r.take_d(1, f"{where} max")[0] if flags & 4 else None
        if min(zero_count, count) < 0:
            raise WireError(f"{where}: a negative count")
        if not math.isfinite(zt) or zt < 0:
            raise WireError(f"{where}: zero threshold {zt} is not a finite non-negative number")
        return ExponentialHistogramValue(scale, zero_count, pos_off, pos_counts, neg_off, neg_counts, count,
                                         esum, zt, emin, emax)
    except (ValueError, TypeError) as e:
        if isinstance(e, WireError):
            raise
        raise WireError(f"{where}: {e}") from None


# --------------------------------------------------------------------------- alerts

_ALERT_STR = ("id", "name", "severity", "fingerprint")
_ALERT_NUM = ("value", "starts_at", "ends_at")


def alert_value(a: Alert) -> dict[str, Any]:
    """An alert as a plain value."""
    return {"id": a.id, "name": a.name, "severity": a.severity, "state": a.state.value, "labels": dict(a.labels),
            "annotations": dict(a.annotations), "value": a.value, "starts_at": a.starts_at, "ends_at": a.ends_at,
            "fingerprint": a.fingerprint}


def alert_from_value(v: Any, where: str) -> Alert:
    """The alert ``alert_value`` made; a WireError naming ``where`` and the field when it is not one."""
    if not isinstance(v, dict):
        raise WireError(f"{where}: an alert is a map, not a {type(v).__name__}")
    unknown = set(v) - {*_ALERT_STR, *_ALERT_NUM, "state", "labels", "annotations"}
    if unknown:
        raise WireError(f"{where}: unknown alert field {sorted(unknown)[0][:40]!r}")
    for k in _ALERT_STR:
        if not isinstance(v.get(k, ""), str):
            raise WireError(f"{where}.{k}: not a string")
    for k in _ALERT_NUM:
        x = v.get(k)
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
            raise WireError(f"{where}.{k}: not a number")
    for k in ("labels", "annotations"):
        m = v.get(k, {})
        if not isinstance(m, dict) or not all(isinstance(x, str) for x in m.values()):
            raise WireError(f"{where}.{k}: not a map of strings")
    try:
        state = AlertState(v.get("state", "firing"))
    except ValueError:
        raise WireError(f"{where}.state: not an alert state") from None
    starts = v.get("starts_at")
    return Alert(v.get("id", ""), v.get("name", ""), v.get("severity", ""), state, dict(v.get("labels", {})),
                 dict(v.get("annotations", {})), v.get("value"), time.time() if starts is None else float(starts),
                 v.get("ends_at"), v.get("fingerprint", ""))


def decode_losses(payload: bytes | memoryview, limits: WireLimits) -> list[tuple[str, str, float]]:
    """A ``T_LEDGER`` frame's payload: (component, reason, count) entries, each count finite and
    above 0, names of 1 to ``MAX_LEDGER_TEXT`` characters, at most ``MAX_LEDGER_ENTRIES``;
    ``WireError`` saying which entry is not."""
    value = decode_value(payload, limits, "ledger")
    if not isinstance(value, list) or len(value) > MAX_LEDGER_ENTRIES:
        raise WireError(f"ledger: not a list of at most {MAX_LEDGER_ENTRIES} entries")
    out: list[tuple[str, str, float]] = []
    for i, entry in enumerate(value):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], str) and isinstance(entry[2], int | float)
                and not isinstance(entry[2], bool) and 0 < entry[2] < 2**63
                and 0 < len(entry[0]) <= MAX_LEDGER_TEXT and 0 < len(entry[1]) <= MAX_LEDGER_TEXT):
            raise WireError(f"ledger: entry {i} is not [component, reason, count > 0] with names of "
                            f"1 to {MAX_LEDGER_TEXT} characters")
        out.append((entry[0], entry[1], float(entry[2])))
    return out
