"""Datadog intake: monbridge as the Datadog API that Datadog Agents and Datadog's API clients submit to.

The ``intake`` part of ``monitoring.integration.datadog`` listens on ``intake.listen`` (a port of
its own, with its own ``tls`` and ``auth``) and answers as Datadog's API does:

* ``POST /api/v2/series``: a JSON ``MetricPayload`` (``series``: ``metric``, ``type`` 0
  unspecified, 1 count, 2 rate, 3 gauge, ``points`` ``{timestamp, value}``, ``resources``
  ``[{name, type}]``, ``tags``, ``unit``, ``interval``); 202 ``{"errors": []}``.
* ``POST /api/v1/series``: JSON ``series`` (``metric``, ``points`` ``[[timestamp, value]]``,
  ``type`` gauge, count or rate, ``host``, ``device``, ``tags``, ``interval``); 202 ``{"status": "ok"}``.
* ``POST /api/v1/check_run``: a JSON list of check runs (``check``, ``host_name``, ``status`` 0
  OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, ``timestamp``, ``message``, ``tags``); 202 ``{"status": "ok"}``.
* ``GET /api/v1/validate``: 200 ``{"valid": true}``.

Every route wants an API key of ``api_keys`` in the ``DD-API-KEY`` header or the ``api_key``
query parameter (compared in constant time); without one: 403 ``{"errors": ["Forbidden"]}``.
With ``auth`` configured, the ``Authorization`` header is checked first (401). Bodies may be
sent raw or with ``Content-Encoding`` gzip, deflate or zstd (``zstd1``, as Datadog's API
clients name it, too). The Agent's protobuf series (``application/x-protobuf``) are answered
415: an Agent submits here with ``use_v2_api.series: false`` (JSON series on ``/api/v1/series``).

Mapping into the pipeline (``bridge.api.MetricIngest``):

* gauge, and a v2 series of type 0 (unspecified, which Datadog stores as a gauge): a gauge;
* rate: a gauge of the per-second rate as sent (Datadog's rate value is per second already);
* count: a monotonic counter, each point a delta over ``[timestamp - interval, timestamp]``
  added to the series' running total (``push(..., delta=True)``), so ``/metrics`` shows a
  growing counter. A count without ``interval`` (absent or 0) is the change at its timestamp
  alone. A point that overlaps the total's last one is rejected (``out_of_order``); a negative
  count is rejected (``negative_count``): a counter only grows;
* the host (v1 ``host``, a v2 resource of type ``host``) is the attribute ``host``; another v2
  resource is the attribute named by its type; v1 ``device`` is the attribute ``device``;
* tags as the OpenTelemetry Collector's datadog receiver turns them into attributes: ``k:v``
  is ``k`` = ``v`` (split at the first colon), a bare tag ``flag`` is ``unnamed_flag`` =
  ``flag``; a name given several values (``role:a``, ``role:b``) has them sorted and joined by
  commas (``a,b``: Datadog's tags are a set, so their order does not make another series); a
  tag with an empty name (``:x``) rejects its series (``invalid_tag``), as do more than
  ``max_tags`` tags (``too_many_tags``);
* ``unit``: Datadog's units with an OpenTelemetry (UCUM) equivalent become it (``byte`` is
  ``By``, ``second`` is ``s``, see ``UNITS``); others are left out;
* a point without ``value`` (the payload's JSON leaves zero out) is 0, one without ``timestamp``
  is taken at its arrival.

Check runs become alerts (``take_alerts``): CRITICAL fires an alert of severity ``critical``,
WARNING one of ``warning``, UNKNOWN one of ``unknown_severity`` (warning by default; ``none``:
as OK), OK resolves the alert of that check, host and tags. Labels: ``alertname`` (the check),
``severity``, ``datadog_check``, ``host`` and the tags' attributes; annotations ``summary`` (the
message) and ``datadog_status``. At most ``max_alerts`` check runs alert at once (more are
dropped and counted), and at most ``MAX_PENDING`` changes wait for the next ``take_alerts``.

Bounds, answered as ``{"errors": ["<what is wrong>"]}``: the body as sent
(``max_request_bytes``) and decompressed (``max_decompressed_bytes``; a bomb is decompressed
in a worker thread and stopped at the limit): 413; points (or check runs) per request
(``max_points``): 413; JSON nesting (``MAX_DEPTH``), bad JSON or a bad shape: 400 naming the
place (``series[3].points[0].value: not a number``); an unknown ``Content-Encoding`` or a
content type other than JSON: 415. A connection gets ``read_timeout`` to send a request and
its body (slowloris and idle connections are closed; a slow body is answered 408). Points the
pipeline or the mapping rejects one by one are reported in the answer (``errors``) and counted.

Self-metrics, pushed each round: ``monbridge.datadog.intake.requests`` (route, code),
``monbridge.datadog.intake.points`` (series points and check runs, by result accepted or
rejected, and reason),
``monbridge.datadog.intake.refused`` (requests refused whole, by reason) and
``monbridge.datadog.intake.check_runs`` (status, result). Each refusal is logged at most once a
minute per reason, never with the API key.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.api import Alert, AlertState, IngestResult, Metric, MetricIngest, MetricKind, PluginError
from bridge.helpers import BodyError, BodyLimits, HttpListener, LogLimit, inflate, parse_json
from bridge.ledger import loss_counter
from integrations.datadog.config import IntakeConfig

__all__ = [
    "ROUTES",
    "UNITS",
    "CheckRun",
    "Decoded",
    "IntakeLimits",
    "IntakeServer",
    "decode",
    "tag_attributes",
]

log = logging.getLogger("monbridge.datadog.intake")

#: Path → route name (the ``route`` of the self-metrics).
ROUTES = {"/api/v2/series": "series_v2", "/api/v1/series": "series_v1", "/api/v1/check_run": "check_run",
          "/api/v1/validate": "validate"}
#: JSON nesting a request may have (a v2 payload needs 4 levels).
MAX_DEPTH = 16
#: Characters of one tag; a longer one rejects its series (Datadog cuts tags at 200).
MAX_TAG_LENGTH = 1000
#: Characters of a check run's message kept in the alert's summary.
MAX_MESSAGE = 4000
#: Requests decoded at once (each in a worker thread), and read or decoded at once (one more is 503).
DECODE_SLOTS = 4
IN_FLIGHT = 4 * DECODE_SLOTS
#: Alert changes held for the next ``take_alerts`` (the most one import takes).
MAX_PENDING = 10_000
_LOG_EVERY_S = 60.0
#: Latest Unix time in seconds a timestamp may have (the year 5138); later is a bad timestamp.
_MAX_SECONDS = 1e11
_NS = 1_000_000_000
#: Datadog's units that have an OpenTelemetry (UCUM) name.
UNITS = {
    "bit": "bit", "byte": "By", "kibibyte": "KiBy", "mebibyte": "MiBy", "gibibyte": "GiBy", "tebibyte": "TiBy",
    "kilobyte": "kBy", "megabyte": "MBy", "gigabyte": "GBy", "terabyte": "TBy",
    "nanosecond": "ns", "microsecond": "us", "millisecond": "ms", "second": "s", "minute": "min", "hour": "h",
    "day": "d", "percent": "%", "hertz": "Hz", "joule": "J", "watt": "W", "volt": "V", "ampere": "A",
    "degree celsius": "Cel", "celsius": "Cel", "meter": "m",
}
_STATUS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
_V1_TYPES = ("gauge", "count", "rate")
_V2_TYPES = ("unspecified", "count", "rate", "gauge")
#: A point: (Unix time in nanoseconds, value).
_Point = tuple[int, float]


class _Reject(Exception):
    """One series or check run rejected: ``reason``, ``text``."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


@dataclass(frozen=True)
class IntakeLimits:
    max_decompressed_bytes: int = 64 << 20
    max_points: int = 100_000
    max_tags: int = 100

    @classmethod
    def of(cls, cfg: IntakeConfig) -> IntakeLimits:
        return cls(cfg.max_decompressed_bytes, cfg.max_points, cfg.max_tags)


@dataclass(frozen=True)
class CheckRun:
    check: str
    host: str
    status: int
    timestamp: float | None
    message: str
    attributes: Mapping[str, str]


@dataclass
class Decoded:
    """A request as the pipeline takes it: gauges, deltas (counts), check runs, and what was rejected."""

    gauges: list[Metric] = field(default_factory=list)
    deltas: list[Metric] = field(default_factory=list)
    checks: list[CheckRun] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=lambda: loss_counter("datadog_intake"))
    why: dict[str, str] = field(default_factory=dict)
    points: int = 0

    def reject(self, reason: str, where: str, text: str, n: int = 1) -> None:
        self.rejected[reason] += n
        self.why.setdefault(reason, f"{where}: {text}")


# ---------------------------------------------------------------------------- decoding


def _bad(path: str, text: str) -> BodyError:
    return BodyError(400, "invalid", f"{path}: {text}")


def _number(v: Any, path: str) -> float:
    if v.__class__ is bool or not isinstance(v, (int, float)):
        raise _bad(path, "not a number")
    try:
        f = float(v)
    except OverflowError:
        raise _bad(path, "out of range") from None
    if not math.isfinite(f):
        raise _bad(path, "out of range")
    return f


def _timestamp(v: Any, path: str, now_ns: int) -> int:
    """A Unix time in seconds as nanoseconds (absent: ``now_ns``)."""
    if v is None:
        return now_ns
    f = _number(v, path)
    if not 0 < f < _MAX_SECONDS:
        raise _bad(path, "not a Unix time in seconds")
    return v * _NS if isinstance(v, int) else round(f * _NS)


def _interval(v: Any, path: str) -> int:
    if v is None:
        return 0
    if v.__class__ is bool or not isinstance(v, int) or not 0 <= v <= 86_400 * 366:
        raise _bad(path, "not an interval in seconds (an integer from 0 to a year)")
    return v


def _text(v: Any, path: str, required: bool = False) -> str:
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v):
        raise _bad(path, "not a string" if not required or not isinstance(v, str) else "empty")
    return v


def _string_list(v: Any, path: str) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise _bad(path, "not a list of strings")
    for i, t in enumerate(v):
        if not isinstance(t, str):
            raise _bad(f"{path}[{i}]", "not a string")
    return v


def tag_attributes(tags: Iterable[str], max_tags: int) -> dict[str, str]:
    """Datadog tags as attributes (see the module docstring); _Reject when one cannot be."""
    values: dict[str, set[str]] = {}
    n = 0
    for tag in tags:
        if not tag:
            continue
        n += 1
        if n > max_tags:
            raise _Reject("too_many_tags", f"more than intake.max_tags ({max_tags}) tags")
        if len(tag) > MAX_TAG_LENGTH:
            raise _Reject("invalid_tag", f"a tag is {len(tag)} characters long, more than {MAX_TAG_LENGTH}")
        key, sep, value = tag.partition(":")
        if not sep:
            key, value = "unnamed_" + tag, tag
        elif not key:
            raise _Reject("invalid_tag", f"the tag {tag[:60]!r} has an empty name")
        values.setdefault(key, set()).add(value)
    return {k: ",".join(sorted(v)) for k, v in values.items()}


def _count_points(items: list[Any], key: str, limits: IntakeLimits) -> int:
    n = sum(len(p) for s in items if isinstance(s, dict) and isinstance(p := s.get(key), list))
    if n > limits.max_points:
        raise BodyError(413, "too_many_points", f"request has {n} points, more than intake.max_points "
                                                  f"({limits.max_points})")
    return n


def _time_of(point: _Point) -> int:
    return point[0]


def _series(out: Decoded, path: str, name: str, kind: str, points: list[_Point], interval: int,
            unit: str, attrs: dict[str, str]) -> None:
    unit = UNITS.get(unit.lower(), "") if unit else ""
    points.sort(key=_time_of)  # (stable: of two points at one time, the later sent is the later pushed)
    if kind == "count":
        span = interval * _NS
        for t, v in points:
            if v < 0:
                out.reject("negative_count", f"{path} ({name[:100]})", f"a count of {v:g}: a counter only grows")
                continue
            out.deltas.append(Metric(name, MetricKind.COUNTER, v, unit, "", attrs, t, t - span))
    else:
        out.gauges.extend(Metric(name, MetricKind.GAUGE, v, unit, "", attrs, t) for t, v in points)


def _series_items(doc: Any, limits: IntakeLimits, out: Decoded) -> Iterator[tuple[str, dict[str, Any], str]]:
    """A series payload's series: (its path, itself, its metric's name), the points counted first."""
    if not isinstance(doc, dict):
        raise _bad("body", "not a JSON object")
    series = doc.get("series")
    if not isinstance(series, list):
        raise _bad("series", "absent or not a list")
    out.points = _count_points(series, "points", limits)
    for i, s in enumerate(series):
        path = f"series[{i}]"
        if not isinstance(s, dict):
            raise _bad(path, "not an object")
        yield path, s, _text(s.get("metric"), f"{path}.metric", required=True)


def _attributes(out: Decoded, path: str, name: str, tags: list[str], n: int, limits: IntakeLimits) -> dict[str, str] | None:
    """The tags' attributes; None when they reject the series' ``n`` points (counted in ``out``)."""
    try:
        return tag_attributes(tags, limits.max_tags)
    except _Reject as e:
        out.reject(e.reason, f"{path} ({name[:100]})", e.text, n)
        return None


def _points(s: dict[str, Any], path: str, point: Callable[[Any, str, int], _Point], now_ns: int) -> list[_Point]:
    raw = s.get("points")
    if not isinstance(raw, list):
        raise _bad(f"{path}.points", "absent or not a list")
    return [point(p, f"{path}.points[{j}]", now_ns) for j, p in enumerate(raw)]


def _v2_point(p: Any, path: str, now_ns: int) -> _Point:
    """``{timestamp, value}``: a value left out is 0 (the payload's JSON omits zero), a time left out is now."""
    if not isinstance(p, dict):
        raise _bad(path, "not an object")
    v = p.get("value")
    return _timestamp(p.get("timestamp"), f"{path}.timestamp", now_ns), 0.0 if v is None else _number(v, f"{path}.value")


def _v1_point(p: Any, path: str, now_ns: int) -> _Point:
    """``[timestamp, value]``."""
    if not isinstance(p, list) or len(p) != 2:
        raise _bad(path, "not a [timestamp, value] pair")
    return _timestamp(p[0], f"{path}[0]", now_ns), _number(p[1], f"{path}[1]")


def _series_v2(doc: Any, limits: IntakeLimits, out: Decoded, now_ns: int) -> None:
    for path, s, name in _series_items(doc, limits, out):
        typ = s.get("type", 0)
        if typ is None:
            typ = 0
        if typ.__class__ is bool or not isinstance(typ, int) or not 0 <= typ <= 3:
            raise _bad(f"{path}.type", "not 0 (unspecified), 1 (count), 2 (rate) or 3 (gauge)")
        interval = _interval(s.get("interval"), f"{path}.interval")
        unit = _text(s.get("unit"), f"{path}.unit")
        resources = s.get("resources")
        if resources is not None and not isinstance(resources, list):
            raise _bad(f"{path}.resources", "not a list")
        named: dict[str, str] = {}
        for j, r in enumerate(resources or ()):
            rpath = f"{path}.resources[{j}]"
            if not isinstance(r, dict):
                raise _bad(rpath, "not an object")
            rtype = _text(r.get("type"), f"{rpath}.type", required=True)
            named[rtype[:MAX_TAG_LENGTH]] = _text(r.get("name"), f"{rpath}.name")[:MAX_TAG_LENGTH]
        tags = _string_list(s.get("tags"), f"{path}.tags")
        points = _points(s, path, _v2_point, now_ns)
        attrs = _attributes(out, path, name, tags, len(points), limits)
        if attrs is None:
            continue
        attrs.update(named)
        _series(out, path, name, _V2_TYPES[typ], points, interval, unit, attrs)


def _series_v1(doc: Any, limits: IntakeLimits, out: Decoded, now_ns: int) -> None:
    for path, s, name in _series_items(doc, limits, out):
        typ = s.get("type")
        if typ is None or typ == "":
            typ = "gauge"
        if typ not in _V1_TYPES:
            raise _bad(f"{path}.type", "not gauge, count or rate")
        interval = _interval(s.get("interval"), f"{path}.interval")
        host = _text(s.get("host"), f"{path}.host")[:MAX_TAG_LENGTH]
        device = _text(s.get("device"), f"{path}.device")[:MAX_TAG_LENGTH]
        tags = _string_list(s.get("tags"), f"{path}.tags")
        points = _points(s, path, _v1_point, now_ns)
        attrs = _attributes(out, path, name, tags, len(points), limits)
        if attrs is None:
            continue
        if host:
            attrs["host"] = host
        if device:
            attrs["device"] = device
        _series(out, path, name, typ, points, interval, "", attrs)


def _check_runs(doc: Any, limits: IntakeLimits, out: Decoded) -> None:
    if not isinstance(doc, list):
        raise _bad("body", "not a JSON list of check runs")
    if len(doc) > limits.max_points:
        raise BodyError(413, "too_many_points", f"request has {len(doc)} check runs, more than "
                                                  f"intake.max_points ({limits.max_points})")
    out.points = len(doc)
    for i, c in enumerate(doc):
        path = f"[{i}]"
        if not isinstance(c, dict):
            raise _bad(path, "not an object")
        check = _text(c.get("check"), f"{path}.check", required=True)[:MAX_TAG_LENGTH]
        host = _text(c.get("host_name"), f"{path}.host_name")[:MAX_TAG_LENGTH]
        status = c.get("status")
        if status.__class__ is bool or not isinstance(status, int) or not 0 <= status <= 3:
            raise _bad(f"{path}.status", "not 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN)")
        ts = c.get("timestamp")
        when = None if ts is None else _timestamp(ts, f"{path}.timestamp", 0) / _NS
        message = _text(c.get("message"), f"{path}.message")[:MAX_MESSAGE]
        attrs = _attributes(out, path, check, _string_list(c.get("tags"), f"{path}.tags"), 1, limits)
        if attrs is None:
            continue
        out.checks.append(CheckRun(check, host, status, when, message, attrs))


def decode(route: str, body: bytes, coding: str, limits: IntakeLimits, now_ns: int | None = None) -> Decoded:
    """A request body of ``route`` (a value of ``ROUTES``) as sent with Content-Encoding ``coding``:
    decompressed within ``limits``, parsed and converted (the module docstring's mapping);
    BodyError (400, 413, 415) when it is refused whole. Runs in a worker thread."""
    coding = coding.strip().lower()
    try:
        data = inflate(body, "zstd" if coding == "zstd1" else coding, BodyLimits(max_bytes=limits.max_decompressed_bytes))
    except BodyError as e:
        raise BodyError(e.status, e.reason, e.message.replace(
            "the limit of", "the limit (intake.max_decompressed_bytes) of")) from None
    doc = parse_json(data, MAX_DEPTH, where="body")
    out = Decoded()
    now = time.time_ns() if now_ns is None else now_ns
    if route == "series_v2":
        _series_v2(doc, limits, out, now)
    elif route == "series_v1":
        _series_v1(doc, limits, out, now)
    elif route == "check_run":
        _check_runs(doc, limits, out)
    else:
        raise ValueError(f"no route {route!r} takes a body")
    return out


# ---------------------------------------------------------------------------- the server


_Key = tuple[str, str, tuple[tuple[str, str], ...]]


class IntakeServer:
    """The intake's HTTP server, feeding ``ingest`` and raising alerts from check runs."""

    def __init__(self, config: IntakeConfig, ingest: MetricIngest) -> None:
        self.config = config
        self.ingest = ingest
        ingest.expire_after = config.expire_after
        ingest.max_series = config.max_series
        ingest.max_families = None
        self.limits = IntakeLimits.of(config)
        self._keys = [k.get_secret_value().encode() for k in config.api_keys]
        self.requests: Counter[tuple[str, int]] = Counter()  # (route, HTTP status)
        self.points: Counter[tuple[str, str]] = Counter()  # (result, reason)
        self.refused: Counter[str] = Counter()  # reason
        self.check_runs: Counter[tuple[str, str]] = Counter()  # (status, result)
        self._logged = LogLimit(_LOG_EVERY_S)
        self._slots: asyncio.Semaphore | None = None
        self._in_flight = 0
        #: Closes the connections that send no (next) request within read_timeout (slowloris, idle).
        self._http = HttpListener(config.read_timeout, lambda: self._refused(
            "-", "read_timeout", f"a connection sent no complete request within intake.read_timeout "
                                 f"({config.read_timeout:g} s)"))
        self.bound: tuple[str, int] | None = None
        #: Check runs alerting now, by (check, host, tags); those seen this run (least recent first).
        self._active: dict[_Key, Alert] = {}
        self._seen: OrderedDict[_Key, None] = OrderedDict()
        #: Alert changes for the next take_alerts, by (fingerprint, state), in the order they happened.
        self._pending: dict[tuple[str, AlertState], Alert] = {}

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        from aiohttp import web

        from bridge.helpers import tls_context

        cfg = self.config
        self._slots = asyncio.Semaphore(DECODE_SLOTS)
        try:
            ssl_ctx = tls_context(cfg.tls, "intake.tls")
        except OSError as e:
            raise PluginError(str(e)) from None
        # aiohttp's own body limit sits above ours, so ours answers; bodies are read as sent and
        # decompressed in a worker thread.
        app = web.Application(client_max_size=max(cfg.max_request_bytes, cfg.max_decompressed_bytes) + 1)
        for path, route in ROUTES.items():
            handler = self._http.guard.handler(self._handler(route))
            if route == "validate":
                app.router.add_get(path, handler)
            else:
                app.router.add_post(path, handler)
        self.bound = await self._http.start(app, cfg.listen, ssl_ctx)
        log.info("Datadog intake on %s://%s:%s", "https" if ssl_ctx else "http", *self.bound)

    async def stop(self) -> None:
        await self._http.stop()

    def round(self) -> None:
        """Expire the series that stopped arriving; push the self-metrics."""
        self.ingest.expire()
        own = self.self_metrics()
        # The self-metrics are never refused by the clients' max_series, nor counted in it.
        self.ingest.max_series = None
        try:
            self.ingest.push(own)
        finally:
            self.ingest.max_series = self.config.max_series + len(own)

    def take_alerts(self) -> list[Alert]:
        alerts = list(self._pending.values())
        self._pending.clear()
        return alerts

    def self_metrics(self) -> list[Metric]:
        C = MetricKind.COUNTER
        out = [Metric("monbridge.datadog.intake.requests", C, n, "{request}", "Datadog intake requests answered, "
                      "by route and HTTP status", {"route": r, "code": str(code)})
               for (r, code), n in sorted(self.requests.items())]
        out += [Metric("monbridge.datadog.intake.points", C, n, "{point}", "Datadog intake points and check runs "
                       "received, by result (accepted, rejected) and the reason of a rejection",
                       {"result": r, "reason": why})
                for (r, why), n in sorted(self.points.items())]
        out += [Metric("monbridge.datadog.intake.refused", C, n, "{request}", "Datadog intake requests refused "
                       "whole, by reason", {"reason": why}) for why, n in sorted(self.refused.items())]
        out += [Metric("monbridge.datadog.intake.check_runs", C, n, "{run}", "Datadog check runs received, by "
                       "status and result (accepted, or why one was dropped)", {"status": s, "result": r})
                for (s, r), n in sorted(self.check_runs.items())]
        return out

    def _handler(self, route: str) -> Any:
        async def handle(request: Any) -> Any:
            resp = await self._answer(request, route)
            self.requests[(route, resp.status)] += 1
            return resp

        return handle

    # -------------------------------------------------------------- one request

    def _refused(self, route: str, reason: str, message: str) -> None:
        self.refused[reason] += 1
        if self._logged.due(f"refused:{reason}"):
            log.warning("Datadog intake: a request to %s refused (%s): %s; counted in "
                        "monbridge_datadog_intake_refused_total, further refusals for this reason are logged at "
                        "most once a minute", route, reason, message)

    def _key_ok(self, request: Any) -> bool:
        given = request.headers.get("DD-API-KEY") or request.query.get("api_key") or ""
        raw = given.encode("utf-8", "replace")
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(raw, key)
        return ok

    @staticmethod
    def _error(status: int, message: str, close: bool = False) -> Any:
        from aiohttp import web

        resp = web.json_response({"errors": [message]}, status=status)
        if close:
            resp.force_close()
        return resp

    async def _answer(self, request: Any, route: str) -> Any:
        from aiohttp import web

        from bridge.helpers import auth_challenge, authorized

        cfg = self.config
        if cfg.auth is not None and not authorized(cfg.auth, request.headers.get("Authorization", "")):
            self._refused(route, "unauthenticated", "no valid credentials (intake.auth)")
            resp = self._error(401, "Unauthorized", close=request.can_read_body)  # (its body is not read)
            resp.headers["WWW-Authenticate"] = auth_challenge(cfg.auth)
            return resp
        if not self._key_ok(request):
            self._refused(route, "forbidden", "no API key of intake.api_keys (DD-API-KEY header or api_key "
                                              "parameter)")
            return self._error(403, "Forbidden", close=request.can_read_body)
        if route == "validate":
            return web.json_response({"valid": True})
        mime = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if mime not in ("", "application/json", "text/json", "text/plain"):
            message = (f"Content-Type {mime[:60]!r} is not accepted: JSON only (a Datadog Agent submits here with "
                       "use_v2_api.series: false)")
            self._refused(route, "unsupported_media_type", message)
            return self._error(415, message, close=True)
        if self._in_flight >= IN_FLIGHT:
            message = f"{IN_FLIGHT} requests are being received already; retry later"
            self._refused(route, "busy", message)
            resp = self._error(503, message, close=True)
            resp.headers["Retry-After"] = "1"
            return resp
        self._in_flight += 1
        try:
            return await self._receive(request, route)
        finally:
            self._in_flight -= 1

    async def _receive(self, request: Any, route: str) -> Any:
        from aiohttp import web

        from bridge.helpers import receive_body

        cfg = self.config
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        if coding == "zstd1":  # Datadog's API clients' name of zstd
            request = request.clone(headers={**request.headers, "Content-Encoding": "zstd"})
        try:
            body = await receive_body(request, BodyLimits(max_bytes=cfg.max_decompressed_bytes,
                                                          max_wire_bytes=cfg.max_request_bytes),
                                      cfg.read_timeout, "intake")
        except BodyError as e:
            # (a 400 for a client gone is not sent: the connection is gone)
            self._refused(route, e.reason, e.message)
            return self._error(e.status, e.message, close=e.unread)
        assert self._slots is not None
        async with self._slots:
            try:
                decoded = await asyncio.to_thread(decode, route, body, coding, self.limits)
            except BodyError as e:
                self._refused(route, e.reason, e.message)
                return self._error(e.status, e.message)
        errors = self._ingest(route, decoded)
        if route == "series_v2":
            return web.json_response({"errors": errors}, status=202)
        return web.json_response({"status": "ok", **({"errors": errors} if errors else {})}, status=202)

    def _ingest(self, route: str, decoded: Decoded) -> list[str]:
        """Take a decoded request's check runs and push its points; the rejections' messages (one
        per reason of the mapping's, one per push of the pipeline's)."""
        taken = 0
        for run in decoded.checks:
            dropped = self._check_run(run)
            if dropped is None:
                taken += 1
            else:
                decoded.reject(dropped[0], f"check run {run.check[:100]!r}", dropped[1])
        results = [IngestResult(0, {r: n}, f"{n} rejected ({r}): {decoded.why[r]}")
                   for r, n in sorted(decoded.rejected.items())]
        if decoded.gauges:
            results.append(self.ingest.push(decoded.gauges))
        if decoded.deltas:
            results.append(self.ingest.push(decoded.deltas, delta=True))
        self.points[("accepted", "")] += taken + sum(r.accepted for r in results)
        for res in results:
            for reason, n in res.rejected.items():
                self.points[("rejected", reason)] += n
                if self._logged.due(f"points:{reason}"):
                    log.warning("Datadog intake: %d points of a request to %s rejected (%s): %s; counted in "
                                "monbridge_datadog_intake_points_total{result=\"rejected\"}, logged at most once "
                                "a minute per reason", n, route, reason, res.message[:500])
        return [r.message[:1000] for r in results if r.message][:20]

    # -------------------------------------------------------------- check runs → alerts

    def _severity(self, status: int) -> str | None:
        if status == 3:
            return None if self.config.unknown_severity == "none" else self.config.unknown_severity
        return {1: "warning", 2: "critical"}.get(status)

    @staticmethod
    def _labels(run: CheckRun, severity: str) -> dict[str, str]:
        labels = dict(run.attributes)
        if run.host:
            labels["host"] = run.host
        labels.update(alertname=run.check, severity=severity, datadog_check=run.check)
        return labels

    def _emit(self, alert: Alert) -> bool:
        key = (alert.fingerprint, alert.state)
        if key not in self._pending and len(self._pending) >= MAX_PENDING:
            return False
        self._pending.pop(key, None)  # (its latest change goes after the others)
        self._pending[key] = alert
        return True

    def _check_run(self, run: CheckRun) -> tuple[str, str] | None:
        """Raise, update or resolve the alert of ``run``'s check, host and tags; (reason, text) when
        it is dropped."""
        from bridge.notifiers import fingerprint

        status = _STATUS[run.status]
        key: _Key = (run.check, run.host, tuple(sorted(run.attributes.items())))
        severity = self._severity(run.status)
        now = time.time()
        active = self._active.get(key)
        if key not in self._seen:
            # First seen by this run of monbridge: an alert an earlier run raised (the alert
            # store keeps it) that this status no longer gives is resolved; the engine ignores
            # the resolution of an alert it does not hold.
            for other in ("warning", "critical"):
                if other != severity:
                    labels = self._labels(run, other)
                    self._emit(Alert(id="", name=run.check, severity=other, state=AlertState.RESOLVED, labels=labels,
                                     annotations={"datadog_status": status}, value=float(run.status),
                                     starts_at=now, ends_at=now, fingerprint=fingerprint(labels)))
        self._seen[key] = None
        self._seen.move_to_end(key)
        if len(self._seen) > 4 * self.config.max_alerts:
            self._seen.popitem(last=False)
        if active is not None and active.severity != severity:
            del self._active[key]
            self._emit(replace(active, state=AlertState.RESOLVED, ends_at=now))
            active = None
        annotations = {"summary": run.message or f"{run.check} is {status}", "datadog_status": status}
        if severity is None:
            self.check_runs[(status, "accepted")] += 1
            return None
        if active is not None:
            if active.annotations != annotations:
                active.annotations = annotations
                self._emit(replace(active, labels=dict(active.labels), annotations=dict(annotations)))
            self.check_runs[(status, "accepted")] += 1
            return None
        if len(self._active) >= self.config.max_alerts:
            return self._drop_run(run, "alert_limit", f"intake.max_alerts ({self.config.max_alerts}) check runs "
                                                      "are alerting already")
        labels = self._labels(run, severity)
        alert = Alert(id="", name=run.check, severity=severity, labels=labels, annotations=annotations,
                      value=float(run.status), starts_at=run.timestamp or now, fingerprint=fingerprint(labels))
        if not self._emit(alert):
            return self._drop_run(run, "pending_full", f"{MAX_PENDING} alert changes wait for the alert engine "
                                                       "already")
        self._active[key] = alert
        self.check_runs[(status, "accepted")] += 1
        return None

    def _drop_run(self, run: CheckRun, reason: str, text: str) -> tuple[str, str]:
        self.check_runs[(_STATUS[run.status], reason)] += 1
        return reason, text
