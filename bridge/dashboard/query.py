"""The data query of the time-series components: parsing (bounded) and evaluation on the history.

``GET /api/v1/components/{id}/data`` takes, besides the component's own parameters:

* ``from``, ``to``: Unix seconds (``to`` defaults to now, ``from`` to ``to`` minus an hour, or
  the history's window when shorter);
* ``step``: seconds or a Prometheus duration (``15s``, ``1m``), at least the history's resolution;

and a chart also ``metric`` (a Prometheus series selector), ``rate`` (true: per-second rate of
counters, resets handled as Prometheus does), ``aggregate`` (none, sum, avg, min, max, count)
``by`` (comma-separated labels to keep when aggregating), ``stacked`` (true/false, for display),
``limit`` (most series in the answer) and ``encoding`` (``json``: values as numbers, null for
none; ``f64``: as the base64 of little-endian doubles, NaN for none, as the web UI asks: decimal
formatting is most of the cost of a large answer). Every parameter is bounded: a window of at most
``MAX_RANGE_S``, at most ``MAX_POINTS`` points a series, ``MAX_SERIES`` series, ``MAX_PARAMS``
parameters of at most ``MAX_VALUE_LENGTH`` characters each. A refused query raises ``QueryError``
naming the parameter.
"""

from __future__ import annotations

import base64
import math
import re
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.api import MetricKind
from bridge.dashboard.history import History, HistorySeries, Key
from bridge.selector import Selector, parse_selector

__all__ = ["AGGREGATES", "DataQuery", "MAX_POINTS", "MAX_RANGE_S", "MAX_SERIES", "QueryError", "Window",
           "evaluate", "parse_query", "parse_window"]

MAX_RANGE_S = 31 * 86400.0
MAX_POINTS = 11_000  # as Prometheus' query_range
MAX_SERIES = 10_000
MAX_PARAMS = 64
MAX_VALUE_LENGTH = 4096
MAX_BY_LABELS = 32
DEFAULT_RANGE_S = 3600.0
AGGREGATES = ("none", "sum", "avg", "min", "max", "count")
#: How a series' values are written: JSON numbers (null for none), or ``f64``: the base64 of
#: their IEEE 754 doubles, little-endian (NaN for none), which costs no decimal formatting.
ENCODINGS = ("json", "f64")
_DURATION = re.compile(r"(\d++(?:\.\d++)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class QueryError(ValueError):
    """A refused query; the message names the parameter."""


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float
    step: float


@dataclass(frozen=True, slots=True)
class DataQuery:
    window: Window
    selector: Selector
    rate: bool = False
    aggregate: str = "none"
    by: tuple[str, ...] = ()
    stacked: bool = False
    limit: int = MAX_SERIES
    encoding: str = "json"


def _number(params: Mapping[str, str], name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        v = float(raw)
    except ValueError:
        raise QueryError(f"{name}: expected Unix seconds, got {raw[:100]!r}") from None
    if not math.isfinite(v) or v < 0:
        raise QueryError(f"{name}: expected finite, non-negative Unix seconds, got {raw[:100]!r}")
    return v


def parse_duration(raw: str, name: str) -> float:
    """Seconds (``15``, ``0.5``) or a Prometheus duration (``1m30s``)."""
    text = raw.strip()
    try:
        v = float(text)
    except ValueError:
        # One anchored match after another (a search from every position, as finditer makes, and
        # digits given back one by one when no unit follows them, were quadratic: 140 ms for a
        # 3 KB value of digits).
        pos, v = 0, 0.0
        while pos < len(text) and (m := _DURATION.match(text, pos)) is not None:
            v += float(m.group(1)) * _UNIT_S[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise QueryError(f"{name}: expected seconds or a duration such as 15s or 1m, got {raw[:100]!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise QueryError(f"{name}: expected a positive duration, got {raw[:100]!r}")
    return v


def _bool(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name, "false").strip().lower()
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no", ""):
        return False
    raise QueryError(f"{name}: expected true or false, got {raw[:100]!r}")


def check_params(params: Mapping[str, str]) -> None:
    """Bounds every component's parameters share: their number and each value's length."""
    if len(params) > MAX_PARAMS:
        raise QueryError(f"query: {len(params)} parameters, more than the limit of {MAX_PARAMS}")
    for k, v in params.items():
        if len(k) > 100:
            raise QueryError(f"query: a parameter name longer than 100 characters ({k[:40]!r}...)")
        if len(v) > MAX_VALUE_LENGTH:
            raise QueryError(f"{k}: longer than {MAX_VALUE_LENGTH} characters")


def parse_window(params: Mapping[str, str], now: float, resolution: float,
                 default_range: float = DEFAULT_RANGE_S) -> Window:
    """``from``, ``to`` and ``step``, bounded (see the module's docstring); without ``from`` the
    window is ``default_range`` seconds before ``to``."""
    check_params(params)
    end = _number(params, "to")
    end = now if end is None else end
    start = _number(params, "from")
    start = max(end - default_range, 0.0) if start is None else start
    if start > end:
        raise QueryError(f"from: {start} is after to ({end})")
    if end - start > MAX_RANGE_S:
        raise QueryError(f"from: the window from {start} to {end} is longer than {MAX_RANGE_S:.0f}s")
    raw_step = params.get("step")
    step = parse_duration(raw_step, "step") if raw_step else max(resolution, (end - start) / 250)
    if step < resolution:
        raise QueryError(f"step: {step}s is less than the history's resolution ({resolution}s)")
    if (end - start) / step > MAX_POINTS:
        raise QueryError(f"step: {(end - start) / step:.0f} points a series, more than the limit of {MAX_POINTS}; "
                         "raise step or shorten the window")
    return Window(start, end, step)


def parse_query(params: Mapping[str, str], now: float, resolution: float,
                default_metric: str | None = None, default_range: float = DEFAULT_RANGE_S) -> DataQuery:
    """A chart's query from its request parameters; QueryError names the parameter at fault."""
    window = parse_window(params, now, resolution, default_range)
    text = params.get("metric") or default_metric
    if not text:
        raise QueryError("metric: expected a series selector, e.g. up or node_load1{instance=\"a\"}")
    try:
        selector = parse_selector(text)
    except ValueError as e:
        raise QueryError(f"metric: {e}") from None
    aggregate = params.get("aggregate", "none") or "none"
    if aggregate not in AGGREGATES:
        raise QueryError(f"aggregate: expected one of {', '.join(AGGREGATES)}, got {aggregate[:100]!r}")
    by: tuple[str, ...] = ()
    raw_by = params.get("by", "")
    if raw_by.strip():
        by = tuple(dict.fromkeys(p.strip() for p in raw_by.split(",")))
        if len(by) > MAX_BY_LABELS:
            raise QueryError(f"by: {len(by)} labels, more than the limit of {MAX_BY_LABELS}")
        for label in by:
            if not _LABEL.fullmatch(label):
                raise QueryError(f"by: {label[:100]!r} is not a label name")
    limit = MAX_SERIES
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            raise QueryError(f"limit: expected an integer, got {params['limit'][:100]!r}") from None
        if not 1 <= limit <= MAX_SERIES:
            raise QueryError(f"limit: expected 1 to {MAX_SERIES}, got {limit}")
    encoding = params.get("encoding") or "json"
    if encoding not in ENCODINGS:
        raise QueryError(f"encoding: expected json or f64, got {encoding[:100]!r}")
    return DataQuery(window, selector, _bool(params, "rate"), aggregate, by, _bool(params, "stacked"), limit, encoding)


def _rate(values: Sequence[float], times: list[float]) -> array[float]:
    """Per-second increase between rows (a drop is a counter reset: the new value is the increase)."""
    out = array("d", [math.nan] if values else [])
    for i in range(1, len(values)):
        a, b, dt = values[i - 1], values[i], times[i] - times[i - 1]
        if a != a or b != b or dt <= 0:
            out.append(math.nan)
        else:
            out.append((b - a if b >= a else b) / dt)
    return out


def _aggregate(how: str, columns: list[array[float]], n: int) -> array[float]:
    out = array("d")
    for i in range(n):
        vals = [c[i] for c in columns if c[i] == c[i]]
        if not vals:
            out.append(math.nan)
        elif how == "sum":
            out.append(math.fsum(vals))
        elif how == "avg":
            out.append(math.fsum(vals) / len(vals))
        elif how == "min":
            out.append(min(vals))
        elif how == "max":
            out.append(max(vals))
        else:
            out.append(float(len(vals)))
    return out


def evaluate(history: History, q: DataQuery) -> dict[str, Any]:
    """The answer to ``q``: ``{"timestamps": [...], "series": [{"name", "labels", "values"}],
    "stacked", "truncated"}``; each series' values an ``array('d')``, NaN where it had none (the
    API writes null). CPU-bound: call it in a worker thread."""
    w = q.window
    # A rate needs the row before the first one.
    times, slots = history.grid(w.start - (w.step if q.rate else 0), w.end, w.step)
    sel = q.selector
    keys: list[Key] = []
    truncated = False
    for key, _kind in history.keys():
        name, pairs = key
        if sel.name_matches(name) and sel.matches(name, dict(pairs)):
            if len(keys) >= q.limit:
                truncated = True
                break
            keys.append(key)
    keys.sort()
    series: list[HistorySeries] = history.values(keys, slots)
    if q.rate:
        series = [HistorySeries(s.key, s.kind, _rate(s.values, times) if s.kind is MetricKind.COUNTER
                                else s.values) for s in series]
        if times and times[0] < w.start:
            times = times[1:]
            series = [HistorySeries(s.key, s.kind, s.values[1:]) for s in series]
    out: list[dict[str, Any]]
    if q.aggregate == "none":
        out = [{"name": s.key[0], "labels": dict(s.key[1]), "values": s.values} for s in series]
    else:
        groups: dict[tuple[tuple[str, str], ...], list[array[float]]] = {}
        for s in series:
            have = dict(s.key[1])
            g = tuple((k, have.get(k, "")) for k in q.by)
            groups.setdefault(g, []).append(s.values)
        out = [{"name": f"{q.aggregate}({q.selector.text})", "labels": dict(g),
                "values": _aggregate(q.aggregate, cols, len(times))}
               for g, cols in sorted(groups.items())]
    if q.encoding == "f64":
        for d in out:
            vals = d["values"]
            if sys.byteorder != "little":
                vals = array("d", vals)
                vals.byteswap()
            d["values"] = base64.b64encode(vals.tobytes()).decode()
    return {"timestamps": times, "step": w.step, "stacked": q.stacked, "truncated": truncated,
            "encoding": q.encoding, "series": out}
