"""A stand-in for Elasticsearch's search side, as Elasticsearch 9.1 documents it (REST API
reference, 9.x): ``GET /`` (with the ``X-Elastic-Product: Elasticsearch`` header the official
client checks, on every answer), ``_search`` evaluated over documents a test loads, ``_cluster/health``
and ``_nodes/stats``.

``_search`` really evaluates a small subset of the query DSL — ``match_all``, ``match`` (the whole
value, case-insensitively: a single-token field), ``term``,
``terms``, ``range`` (numbers, and dates as ISO-8601 text or epoch milliseconds, ``format:
epoch_millis``), ``exists`` and ``bool`` (``must``, ``filter``, ``should``, ``must_not``) — and of the
aggregations — ``terms`` (``size``, ordered by doc_count then key, ``sum_other_doc_count``),
``avg``, ``sum``, ``min``, ``max``, ``value_count``, ``percentiles`` (exact, linear interpolation
between ranks; Elasticsearch's TDigest is exact at these sizes), ``date_histogram``
(``fixed_interval`` and the fixed-length ``calendar_interval`` units) — with sub-aggregations in
buckets. ``hits.total`` is exact with ``track_total_hits: true`` and capped at 10,000
(``relation: gte``) otherwise.

Errors come in Elasticsearch's error body (``{"error": {"root_cause": [...], "type", "reason"},
"status"}``): a named index that does not exist is ``index_not_found_exception`` 404 (a wildcard
matching nothing is an empty result); an unparseable date in a range is
``search_phase_execution_exception`` 400 (root cause ``parse_exception``); an unknown query or
aggregation is ``parsing_exception`` 400. A test makes an index answer 429
(``es_rejected_execution_exception``), 503 (``search_phase_execution_exception``, all shards failed),
answer slowly (a search whose connection the client closes is cancelled, as
Elasticsearch does), or answer a body of its own (``StandIn.fail``, ``.delay``, ``.override``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

VERSION = "9.1.0"
CONTENT_TYPE = "application/vnd.elasticsearch+json;compatible-with=9"
HEADERS = {"X-Elastic-Product": "Elasticsearch"}
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_CALENDAR = {"minute": "1m", "1m": "1m", "hour": "1h", "1h": "1h", "day": "1d", "1d": "1d", "week": "1w", "1w": "1w"}


class EsError(Exception):
    def __init__(self, status: int, type_: str, reason: str, root: tuple[str, str] | None = None, **extra: Any):
        super().__init__(reason)
        self.status, self.type, self.reason, self.root, self.extra = status, type_, reason, root, extra

    def body(self) -> dict[str, Any]:
        rtype, rreason = self.root or (self.type, self.reason)
        return {"error": {"root_cause": [{"type": rtype, "reason": rreason}], "type": self.type,
                          "reason": self.reason, **self.extra}, "status": self.status}


def _get(doc: Mapping[str, Any], path: str) -> Any:
    """A field's value: dotted keys as stored (``"log.level"``) or as nested objects."""
    if path in doc:
        return doc[path]
    head, _, rest = path.partition(".")
    while rest:
        if head in doc and isinstance(doc[head], Mapping):
            return _get(doc[head], rest)
        nxt, _, rest = rest.partition(".")
        head = f"{head}.{nxt}"
    return doc.get(head)


def _values(doc: Mapping[str, Any], path: str) -> list[Any]:
    v = _get(doc, path)
    return [] if v is None else list(v) if isinstance(v, list) else [v]


def _millis(v: Any, field_: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            if v.isdigit():
                return float(v)
            return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000
        except ValueError:
            pass
    raise EsError(400, "search_phase_execution_exception", "all shards failed",
                  ("parse_exception", f"failed to parse date field [{v}] with format [strict_date_optional_time||"
                                      f"epoch_millis]: [failed to parse date field [{v}]]"),
                  phase="query", grouped=True, failed_shards=[{"shard": 0, "index": field_}])


def _is_date(q: Mapping[str, Any], field_: str, docs: list[dict[str, Any]]) -> bool:
    if q.get("format") == "epoch_millis" or field_ == "@timestamp":
        return True
    return any(isinstance(v, str) for d in docs[:1] for v in _values(d, field_))


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return bool(a == b)


def matches(q: Any, doc: dict[str, Any], docs: list[dict[str, Any]]) -> bool:
    if not isinstance(q, Mapping) or len(q) != 1:
        raise EsError(400, "parsing_exception", "query malformed, must start with start_object")
    (kind, spec), = q.items()
    if kind == "match_all":
        return True
    if kind in ("match", "term"):
        (f, v), = spec.items()
        if isinstance(v, Mapping):
            v = v.get("query", v.get("value"))
        want = v if kind == "term" else v
        return any((_eq(x, want) if kind == "match" else x == want) for x in _values(doc, f))
    if kind == "terms":
        (f, vs), = spec.items()
        return any(x in vs for x in _values(doc, f))
    if kind == "exists":
        return bool(_values(doc, spec["field"]))
    if kind == "range":
        (f, cond), = spec.items()
        date = _is_date(cond, f, docs)
        conv = (lambda x: _millis(x, f)) if date else float
        ops = {"gte": lambda a, b: a >= b, "gt": lambda a, b: a > b, "lte": lambda a, b: a <= b,
               "lt": lambda a, b: a < b}
        bounds = [(ops[o], conv(cond[o])) for o in ops if o in cond]
        return any(all(op(conv(x), b) for op, b in bounds) for x in _values(doc, f))
    if kind == "bool":
        def clauses(k: str) -> list[Any]:
            c = spec.get(k, [])
            return c if isinstance(c, list) else [c]
        if not all(matches(c, doc, docs) for c in clauses("must") + clauses("filter")):
            return False
        if any(matches(c, doc, docs) for c in clauses("must_not")):
            return False
        should = clauses("should")
        if should:
            need = spec.get("minimum_should_match", 0 if clauses("must") or clauses("filter") else 1)
            return sum(matches(c, doc, docs) for c in should) >= int(need)
        return True
    raise EsError(400, "parsing_exception", f"unknown query [{kind}]", line=1, col=10)


def _percentile(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    rank = p / 100 * (len(sorted_vals) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (rank - lo)


def _iso(ms: float) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ms) % 1000:03d}Z"


def aggregate(aggs: Mapping[str, Any], docs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, definition in aggs.items():
        sub = definition.get("aggs", definition.get("aggregations", {}))
        kinds = [k for k in definition if k not in ("aggs", "aggregations", "meta")]
        if len(kinds) != 1:
            raise EsError(400, "parsing_exception", f"Expected [START_OBJECT] under [{name}]")
        kind, spec = kinds[0], definition[kinds[0]]
        nums = [float(v) for d in docs for v in _values(d, spec.get("field", ""))
                if isinstance(v, (int, float)) and not isinstance(v, bool)] if "field" in spec else []
        if kind == "terms":
            groups: dict[Any, list[dict[str, Any]]] = {}
            for d in docs:
                for v in set(map(_hashable, _values(d, spec["field"]))):
                    groups.setdefault(v, []).append(d)
            ranked = sorted(((k, len(g)) for k, g in groups.items()), key=lambda kv: (-kv[1], kv[0]))
            size = int(spec.get("size", 10))
            buckets = []
            for key, n in ranked[:size]:
                b = {"key": key, "doc_count": n}
                b.update(aggregate(sub, groups[key]))
                buckets.append(b)
            out[name] = {"doc_count_error_upper_bound": 0,
                         "sum_other_doc_count": sum(n for _, n in ranked[size:]), "buckets": buckets}
        elif kind in ("avg", "sum", "min", "max", "value_count"):
            value: float | None
            if kind == "value_count":
                value = len([v for d in docs for v in _values(d, spec["field"])])
            elif kind == "sum":
                value = sum(nums)
            elif not nums:
                value = None
            else:
                value = {"avg": sum(nums) / len(nums), "min": min(nums), "max": max(nums)}[kind]
            out[name] = {"value": value}
        elif kind == "percentiles":
            s = sorted(nums)
            percents = spec.get("percents", [1, 5, 25, 50, 75, 95, 99])
            if spec.get("keyed", True):
                out[name] = {"values": {str(float(p)): _percentile(s, float(p)) for p in percents}}
            else:
                out[name] = {"values": [{"key": float(p), "value": _percentile(s, float(p))} for p in percents]}
        elif kind == "date_histogram":
            interval = spec.get("fixed_interval") or _CALENDAR.get(spec.get("calendar_interval", ""))
            if not interval or interval[-2:] not in _UNIT_MS and interval[-1:] not in _UNIT_MS:
                raise EsError(400, "x_content_parse_exception", f"[date_histogram] failed to parse interval [{interval}]")
            unit = "ms" if interval.endswith("ms") else interval[-1]
            step = int(interval[: -len(unit)]) * _UNIT_MS[unit]
            times = [(_millis(v, spec["field"]), d) for d in docs for v in _values(d, spec["field"])]
            buckets = []
            if times:
                first = min(t for t, _ in times) // step * step
                last = max(t for t, _ in times) // step * step
                k = first
                while k <= last:
                    in_b = [d for t, d in times if k <= t < k + step]
                    b = {"key_as_string": _iso(k), "key": int(k), "doc_count": len(in_b)}
                    b.update(aggregate(sub, in_b))
                    buckets.append(b)
                    k += step
            out[name] = {"buckets": buckets}
        else:
            raise EsError(400, "parsing_exception", f"Unknown aggregation type [{kind}] did you mean [terms]?")
    return out


def _hashable(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (dict, list)) else v


@dataclass
class StandIn:
    """The documents (by index) and what a test makes the stand-in do."""

    indices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fail: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # index: (status, type, reason)
    delay: dict[str, float] = field(default_factory=dict)  # index: seconds before the answer
    override: dict[str, Any] = field(default_factory=dict)  # index: the body answered instead (bytes: raw)
    health: dict[str, Any] = field(default_factory=lambda: {
        "cluster_name": "standin", "status": "yellow", "timed_out": False, "number_of_nodes": 2,
        "number_of_data_nodes": 2, "active_primary_shards": 5, "active_shards": 8, "relocating_shards": 1,
        "initializing_shards": 0, "unassigned_shards": 2, "unassigned_primary_shards": 0,
        "delayed_unassigned_shards": 0, "number_of_pending_tasks": 3, "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0, "active_shards_percent_as_number": 80.0})
    searches: list[dict[str, Any]] = field(default_factory=list)  # bodies as received
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)  # searches ended by the client's going away

    def load(self, index: str, docs: list[dict[str, Any]]) -> None:
        self.indices.setdefault(index, []).extend(docs)

    def resolve(self, expr: str) -> list[str]:
        names: list[str] = []
        for part in expr.split(","):
            if "*" in part or "?" in part:
                names += [n for n in self.indices if fnmatch.fnmatchcase(n, part)]
            elif part in self.indices:
                names.append(part)
            else:
                raise EsError(404, "index_not_found_exception", f"no such index [{part}]",
                              **{"resource.type": "index_or_alias", "resource.id": part, "index": part})
        return names

    def search(self, expr: str, body: Mapping[str, Any]) -> dict[str, Any]:
        names = self.resolve(expr)
        docs = [d for n in names for d in self.indices[n]]
        q = body.get("query", {"match_all": {}})
        hits = [d for d in docs if matches(q, d, docs)]
        track = body.get("track_total_hits", 10_000)
        total = {"value": len(hits), "relation": "eq"}
        if track is not True and isinstance(track, int) and len(hits) > track:
            total = {"value": track, "relation": "gte"}
        out: dict[str, Any] = {"took": 1, "timed_out": False,
                               "_shards": {"total": len(names), "successful": len(names), "skipped": 0, "failed": 0},
                               "hits": {"total": total, "max_score": None, "hits": []}}
        aggs = body.get("aggs", body.get("aggregations"))
        if aggs:
            out["aggregations"] = aggregate(aggs, hits)
        return out

    def node_stats(self) -> dict[str, Any]:
        docs = sum(len(d) for d in self.indices.values())
        nodes = {}
        for i, name in enumerate(("es-1", "es-2")):
            nodes[f"node{i}ID"] = {
                "timestamp": 1700000000000, "name": name, "transport_address": f"127.0.0.1:930{i}",
                "host": "127.0.0.1", "ip": "127.0.0.1:9300", "roles": ["data", "master"],
                "indices": {"docs": {"count": docs if i == 0 else 0, "deleted": 1},
                            "store": {"size_in_bytes": 1000 * (i + 1), "reserved_in_bytes": 0},
                            "indexing": {"index_total": 10, "index_time_in_millis": 20, "index_current": 0,
                                         "delete_total": 1, "delete_time_in_millis": 2},
                            "get": {"total": 3, "time_in_millis": 4},
                            "search": {"query_total": len(self.searches), "query_time_in_millis": 7,
                                       "fetch_total": 0, "fetch_time_in_millis": 0, "scroll_total": 0,
                                       "scroll_time_in_millis": 0, "suggest_total": 0, "suggest_time_in_millis": 0},
                            "merges": {"total": 5, "total_time_in_millis": 6},
                            "refresh": {"total": 8, "total_time_in_millis": 9},
                            "flush": {"total": 1, "total_time_in_millis": 1}},
                "jvm": {"timestamp": 1700000000000, "uptime_in_millis": 1000,
                        "mem": {"heap_used_in_bytes": 500_000_000 + i, "heap_used_percent": 46,
                                "heap_committed_in_bytes": 1_073_741_824, "heap_max_in_bytes": 1_073_741_824,
                                "non_heap_used_in_bytes": 1, "non_heap_committed_in_bytes": 2},
                        "gc": {"collectors": {"young": {"collection_count": 12, "collection_time_in_millis": 34},
                                              "old": {"collection_count": 0, "collection_time_in_millis": 0}}}},
                "thread_pool": {"search": {"threads": 13, "queue": 2, "active": 3, "rejected": 4, "largest": 13,
                                           "completed": 100},
                                "write": {"threads": 8, "queue": 0, "active": 0, "rejected": 0, "largest": 8,
                                          "completed": 50}},
                "fs": {"timestamp": 1700000000000, "total": {"total_in_bytes": 100 << 30,
                                                             "free_in_bytes": 60 << 30,
                                                             "available_in_bytes": 55 << 30}},
                "process": {"open_file_descriptors": 300, "max_file_descriptors": 65535},
                "http": {"current_open": 4, "total_opened": 40}}
        return {"_nodes": {"total": 2, "successful": 2, "failed": 0}, "cluster_name": self.health["cluster_name"],
                "nodes": nodes}


def _json(body: Any, status: int = 200) -> web.Response:
    """``body`` as JSON (bytes: as they are, for a body no encoder makes)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return web.Response(status=status, body=raw, content_type=None,
                        headers={**HEADERS, "Content-Type": CONTENT_TYPE})


def app(state: StandIn) -> web.Application:
    async def root(request: web.Request) -> web.Response:
        return _json({"name": "es-1", "cluster_name": state.health["cluster_name"], "cluster_uuid": "standin-uuid",
                      "version": {"number": VERSION, "build_flavor": "default", "build_type": "tar",
                                  "lucene_version": "10.2.2", "minimum_wire_compatibility_version": "8.19.0",
                                  "minimum_index_compatibility_version": "8.0.0"},
                      "tagline": "You Know, for Search"})

    async def search(request: web.Request) -> web.Response:
        index = request.match_info.get("index", "*")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return _json(EsError(400, "parsing_exception", "request body is not valid JSON").body(), 400)
        state.searches.append({"index": index, "body": body})
        state.in_flight[index] += 1
        state.most_in_flight[index] = max(state.most_in_flight[index], state.in_flight[index])
        try:
            if index in state.delay:
                # Elasticsearch cancels a search whose HTTP connection closed (the client gave up).
                deadline = asyncio.get_running_loop().time() + state.delay[index]
                while asyncio.get_running_loop().time() < deadline:
                    if request.transport is None or request.transport.is_closing():
                        state.cancelled[index] += 1
                        return _json(EsError(400, "task_cancelled_exception", "cancelled").body(), 400)
                    await asyncio.sleep(0.02)
            if index in state.fail:
                status, type_, reason = state.fail[index]
                return _json(EsError(status, type_, reason).body(), status)
            if index in state.override:
                return _json(state.override[index])
            return _json(state.search(index, body))
        except EsError as e:
            return _json(e.body(), e.status)
        finally:
            state.in_flight[index] -= 1

    async def health(request: web.Request) -> web.Response:
        return _json(state.health)

    async def nodes_stats(request: web.Request) -> web.Response:
        return _json(state.node_stats())

    a = web.Application()
    a.router.add_route("GET", "/", root)
    a.router.add_route("HEAD", "/", root)
    a.router.add_route("*", "/_search", search)
    a.router.add_route("*", "/{index}/_search", search)
    a.router.add_route("GET", "/_cluster/health", health)
    a.router.add_route("GET", "/_nodes/stats", nodes_stats)
    a.router.add_route("GET", "/_nodes/stats/{metric}", nodes_stats)
    return a


async def serve(state: StandIn) -> tuple[web.AppRunner, str]:
    """The stand-in on a free loopback port: (runner to clean up, base URL)."""
    runner = web.AppRunner(app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
