"""Elasticsearch searches, cluster health and node stats as gauges (the integration's import side).

Each configured query runs on its own ``interval`` (never twice at once): a ``_search`` of
``index`` for ``query`` AND ``time_field`` within the last ``window`` seconds, with the query's
``aggs``, ``size: 0`` and ``track_total_hits: true``, the client's request timeout set to the
query's ``timeout``. Every import round returns the latest results of every query and the
import's own metrics.

Naming (OTel style, dots): the query's name, then the names of the aggregations on the way
down, then what is measured. A bucket aggregation gives its buckets' keys as a label named
after the aggregation (``key_as_string`` when Elasticsearch gives one, else ``key``)::

    <query>.hits                                  hits in the window
    <query>.<agg>.doc_count{<agg>=<key>}          a bucket aggregation's buckets
    <query>.<agg>.<sub>.doc_count{<agg>=..., <sub>=...}
    <query>[.<bucket agg>...].<metric agg>        avg, sum, min, max, value_count, cardinality, ...
    <query>[...].<percentiles agg>{percentile=95.0}
    <query>[...].<stats agg>.<stat>               stats / extended_stats: count, min, max, avg, sum, ...

For ``errors_by_service`` (``aggs: {by_service: {terms: {field: service.name}}}``)::

    errors_by_service.hits 42
    errors_by_service.by_service.doc_count{by_service="checkout"} 30
    errors_by_service.by_service.doc_count{by_service="cart"} 12

For ``latency`` (``aggs: {p: {percentiles: {field: event.duration, percents: [95]}}}``)::

    latency.hits 1000
    latency.p{percentile="95.0"} 230000000

On ``/metrics`` the dots become underscores, and a gauge whose name ends in ``_count`` or
``_sum`` gets ``_value`` added (``bridge.exposition``'s rule):
``errors_by_service_by_service_doc_count_value{by_service="checkout"}``.

Bucket aggregations: ``terms``, ``rare_terms``, ``significant_terms``, ``multi_terms``,
``histogram``, ``range``, ``date_range``, ``ip_range``, ``filters``, ``composite`` (one label per
source, named after the source) and the single-bucket ones (``filter``, ``global``, ``missing``,
``nested``, ``reverse_nested``, ``sampler``: no label). ``date_histogram`` gives no label (a label
per time would be a new series every interval): its *last complete* bucket is taken — the newest
bucket that a later bucket follows or whose interval ended before the window's end — since the
newest bucket of a window that ends now is still filling. Any other aggregation type is left
out (logged once, counted as dropped with reason ``unsupported``). A metric whose value is null
(the average of no documents) gives no series.

Bounds: a run gives at most ``max_series`` series (the rest are dropped, counted in
``monbridge.elasticsearch.query.series.dropped{query,reason="max_series"}`` and logged once);
aggregations nest at most ``MAX_AGG_DEPTH`` deep (the config is refused beyond); label values
are cut at ``MAX_LABEL_CHARS``; the pipeline's cardinality limit applies after. The walk over a
large response runs in a thread.

Failures: a query that fails (connection refused, an error answer — its type and reason are
logged —, a timeout, a response of unexpected shape) fails that query only. As with a failed
Prometheus scrape its series vanish (they are stale, not kept at their last value),
``monbridge.elasticsearch.query.up{query}`` is 0 and
``monbridge.elasticsearch.query.failures{query,reason}`` counts it (``reason``: ``connection``,
``timeout``, ``http_<status>``, ``bad_response``: also an answer larger than ``max_response_bytes``,
refused while it is read); the other queries go on. The log says why, once
a minute per query and reason, without secrets.

Cluster metrics (``cluster_metrics: true``), every import round, named and united as the OTel
Collector's ``elasticsearchreceiver`` names them (the cluster and node names as the attributes
``elasticsearch.cluster.name`` and ``elasticsearch.node.name``; it has them as resource
attributes) — the meaning of the prometheus-community exporter's ``elasticsearch_cluster_health_*``
and ``elasticsearch_{jvm,indices,thread_pool,filesystem}_*`` series:

* ``_cluster/health``: ``elasticsearch.cluster.health{status}`` (1 for the current status, 0 for
  the others), ``elasticsearch.cluster.health.status`` (0 green, 1 yellow, 2 red),
  ``elasticsearch.cluster.nodes``, ``elasticsearch.cluster.data_nodes``,
  ``elasticsearch.cluster.shards{state}`` (active, active_primary, relocating, initializing,
  unassigned, unassigned_delayed), ``elasticsearch.cluster.pending_tasks``,
  ``elasticsearch.cluster.in_flight_fetch``;
* ``_nodes/stats`` per node: ``jvm.memory.heap.used|max|committed`` (By),
  ``jvm.gc.collections.count{name}``, ``jvm.gc.collections.elapsed{name}`` (ms),
  ``elasticsearch.node.documents{state}``, ``elasticsearch.node.shards.size`` (store, By),
  ``elasticsearch.node.operations.completed{operation}`` and ``.time{operation}`` (ms; index,
  delete, get, query, fetch, scroll, suggest, refresh, flush, merge),
  ``elasticsearch.node.thread_pool.tasks.finished{thread_pool_name,state}`` (completed, rejected),
  ``elasticsearch.node.thread_pool.tasks.queued{thread_pool_name}``,
  ``elasticsearch.node.thread_pool.threads{thread_pool_name,state}`` (active, idle),
  ``elasticsearch.node.fs.disk.total|available|free`` (By), ``elasticsearch.node.open_files``,
  ``elasticsearch.node.http.connections``.

Their failure is ``monbridge.elasticsearch.cluster.up`` 0 and
``monbridge.elasticsearch.cluster.failures{reason}``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.api import AttributeValue, Metric, MetricKind
from bridge.helpers import peer_excerpt
from bridge.ledger import loss_counter
from integrations.elasticsearch.config import MAX_AGG_DEPTH, ElasticsearchConfig, QueryConfig

__all__ = [
    "MAX_LABEL_CHARS",
    "BadResponse",
    "SearchImporter",
    "Walked",
    "cluster_health_metrics",
    "node_stats_metrics",
    "search_body",
    "search_metrics",
]

log = logging.getLogger("monbridge.elasticsearch.search")

MAX_LABEL_CHARS = 256
#: A response whose body is larger than this (or of unknown size) is walked in a thread.
THREAD_BYTES = 64 << 10
#: Most nodes and thread pools per node read from ``_nodes/stats``.
MAX_NODES = 1000
MAX_POOLS = 100
_LOG_EVERY_S = 60.0

_BUCKETS = frozenset(("terms", "rare_terms", "significant_terms", "multi_terms", "histogram", "range",
                      "date_range", "ip_range", "filters", "composite"))
_SINGLE = frozenset(("filter", "global", "missing", "nested", "reverse_nested", "sampler"))
_VALUE = frozenset(("avg", "sum", "min", "max", "value_count", "cardinality", "median_absolute_deviation",
                    "weighted_avg"))
_STATS = frozenset(("stats", "extended_stats"))
_PERCENTILES = frozenset(("percentiles",))
#: The keys of an aggregation's definition that are not its type.
_NOT_TYPE = frozenset(("aggs", "aggregations", "meta"))
_NAME_PART = re.compile(r"[^A-Za-z0-9_]")
#: date_histogram interval lengths in milliseconds (fixed units and the fixed-length calendar ones).
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_CALENDAR = {"minute": "1m", "hour": "1h", "day": "1d", "week": "1w"}


class BadResponse(ValueError):
    """A search response of a shape Elasticsearch does not give: the query's run fails."""


@dataclass(slots=True)
class Walked:
    """A query response as metrics: ``series``, and how many more it had beyond ``max_series``
    (``dropped``) or of an aggregation type left out (``unsupported``, by aggregation path)."""

    series: list[Metric] = field(default_factory=list)
    dropped: int = 0
    unsupported: set[str] = field(default_factory=set)


def search_body(q: QueryConfig, now_ms: int) -> dict[str, Any]:
    """The ``_search`` body for ``q``: its query AND its time field within the window ending ``now_ms``."""
    window = {"range": {q.time_field: {"gte": now_ms - int(q.window * 1000), "lte": now_ms,
                                       "format": "epoch_millis"}}}
    body: dict[str, Any] = {"size": 0, "track_total_hits": True,
                            "query": {"bool": {"must": [q.query] if q.query else [], "filter": [window]}}}
    if q.aggs:
        body["aggs"] = q.aggs
    return body


def _agg_type(definition: Any) -> str | None:
    if not isinstance(definition, Mapping):
        return None
    types = [k for k in definition if k not in _NOT_TYPE]
    return types[0] if len(types) == 1 else None


def _sub_aggs(definition: Mapping[str, Any]) -> Mapping[str, Any]:
    sub = definition.get("aggs", definition.get("aggregations"))
    return sub if isinstance(sub, Mapping) else {}


def _name_part(name: str) -> str:
    return _NAME_PART.sub("_", name)[:100] or "_"


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    return str(value)[:MAX_LABEL_CHARS]


def _finite(v: Any) -> float | None:
    """``v`` as a finite float; None for anything else (a bool, text, an integer beyond a float's range, inf, NaN)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _number(v: Any, where: str) -> float | None:
    """A metric value: a number, or None for Elasticsearch's null (no documents) and for a number
    no float holds."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadResponse(f"{where}: {type(v).__name__} where a number was expected")
    return _finite(v)


def _interval_ms(spec: Mapping[str, Any]) -> int | None:
    for key in ("fixed_interval", "calendar_interval", "interval"):
        v = spec.get(key)
        if isinstance(v, str):
            v = _CALENDAR.get(v, v)
            m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", v)
            if m and (key != "calendar_interval" or m.group(1) == "1"):
                return int(m.group(1)) * _UNIT_MS[m.group(2)]
            return None
    return None


class _Walk:
    def __init__(self, q: QueryConfig, time_ns: int, end_ms: int) -> None:
        self.q = q
        self.time_ns = time_ns
        self.end_ms = end_ms
        self.out = Walked()
        self.base = {str(k): v for k, v in q.labels.items()}

    def emit(self, name: str, value: float | None, labels: Mapping[str, str]) -> None:
        if value is None:
            return
        if len(self.out.series) >= self.q.max_series:
            self.out.dropped += 1
            return
        attrs: dict[str, AttributeValue] = dict(self.base)
        attrs.update(labels)
        self.out.series.append(Metric(name, MetricKind.GAUGE, value, "", "", attrs, self.time_ns))

    def aggs(self, defs: Mapping[str, Any], resp: Any, prefix: str, labels: dict[str, str], where: str,
             depth: int) -> None:
        if not defs:
            return
        if not isinstance(resp, Mapping):
            raise BadResponse(f"{where}: {type(resp).__name__} where the aggregations' object was expected")
        for agg, definition in defs.items():
            kind = _agg_type(definition)
            name = f"{prefix}.{_name_part(str(agg))}"
            if kind is None or not (kind in _BUCKETS or kind in _SINGLE or kind in _VALUE or kind in _STATS
                                    or kind in _PERCENTILES or kind == "date_histogram"):
                self.out.unsupported.add(f"{name} ({kind})")
                continue
            if depth >= MAX_AGG_DEPTH:
                raise BadResponse(f"{where}: aggregations nested deeper than {MAX_AGG_DEPTH}")
            if agg not in resp:
                raise BadResponse(f"{where}: aggregation {str(agg)[:100]!r} missing from the response")
            r = resp[agg]
            here = f"{where}.{str(agg)[:100]}"
            if not isinstance(r, Mapping):
                raise BadResponse(f"{here}: {type(r).__name__} where an object was expected")
            spec = definition[kind]
            if kind in _VALUE:
                self.emit(name, _number(r.get("value"), f"{here}.value"), labels)
            elif kind in _STATS:
                self.stats(r, name, labels, here)
            elif kind in _PERCENTILES:
                self.percentiles(r, name, labels, here)
            elif kind in _SINGLE:
                self.bucket(r, definition, name, labels, here, depth)
            elif kind == "date_histogram":
                b = self.last_complete(r, spec if isinstance(spec, Mapping) else {}, here)
                if b is not None:
                    self.bucket(b, definition, name, labels, here, depth)
            else:
                self.buckets(r, definition, kind, name, str(agg), labels, here, depth)

    def bucket(self, b: Any, definition: Mapping[str, Any], name: str, labels: dict[str, str], where: str,
               depth: int) -> None:
        if not isinstance(b, Mapping):
            raise BadResponse(f"{where}: {type(b).__name__} where a bucket was expected")
        self.emit(f"{name}.doc_count", _number(b.get("doc_count"), f"{where}.doc_count"), labels)
        self.aggs(_sub_aggs(definition), b, name, labels, where, depth + 1)

    def buckets(self, r: Mapping[str, Any], definition: Mapping[str, Any], kind: str, name: str, agg: str,
                labels: dict[str, str], where: str, depth: int) -> None:
        buckets = r.get("buckets")
        items: Any
        if isinstance(buckets, Mapping):  # keyed: filters, keyed ranges
            items = buckets.items()
        elif isinstance(buckets, list):
            items = enumerate(buckets)
        else:
            raise BadResponse(f"{where}.buckets: {type(buckets).__name__} where a list or object was expected")
        label_name = _name_part(agg)
        for i, b in items:
            if not isinstance(b, Mapping):
                raise BadResponse(f"{where}.buckets[{str(i)[:60]}]: {type(b).__name__} where a bucket was expected")
            if kind == "composite":
                key = b.get("key")
                if not isinstance(key, Mapping):
                    raise BadResponse(f"{where}.buckets[{i}].key: not an object (composite keys are objects)")
                mine = {**labels, **{_name_part(str(k)): _label(v) for k, v in key.items()}}
            elif isinstance(buckets, Mapping):
                mine = {**labels, label_name: _label(i)}
            else:
                key = b.get("key_as_string", b.get("key", i if kind == "filters" else None))
                if key is None or isinstance(key, (Mapping, list)) and kind != "multi_terms":
                    raise BadResponse(f"{where}.buckets[{i}]: no usable key")
                mine = {**labels, label_name: _label("|".join(map(str, key)) if isinstance(key, list) else key)}
            self.bucket(b, definition, name, mine, f"{where}.buckets[{str(i)[:60]}]", depth)

    def last_complete(self, r: Mapping[str, Any], spec: Mapping[str, Any], where: str) -> Any:
        buckets = r.get("buckets")
        if not isinstance(buckets, list):
            raise BadResponse(f"{where}.buckets: {type(buckets).__name__} where a list was expected")
        if not buckets:
            return None
        last = buckets[-1]
        if not isinstance(last, Mapping):
            raise BadResponse(f"{where}.buckets[-1]: {type(last).__name__} where a bucket was expected")
        step = _interval_ms(spec)
        key = last.get("key")
        if step is not None and isinstance(key, (int, float)) and not isinstance(key, bool) \
                and key + step <= self.end_ms:
            return last
        return buckets[-2] if len(buckets) > 1 else None

    def stats(self, r: Mapping[str, Any], name: str, labels: dict[str, str], where: str) -> None:
        for stat, v in r.items():
            if str(stat).endswith("_as_string"):
                continue
            if isinstance(v, Mapping):  # extended_stats: std_deviation_bounds {upper, lower, ...}
                for sub, w in v.items():
                    if not str(sub).endswith("_as_string"):
                        self.emit(f"{name}.{_name_part(str(stat))}.{_name_part(str(sub))}",
                                  _number(w, f"{where}.{stat}.{sub}"), labels)
            else:
                self.emit(f"{name}.{_name_part(str(stat))}", _number(v, f"{where}.{stat}"), labels)

    def percentiles(self, r: Mapping[str, Any], name: str, labels: dict[str, str], where: str) -> None:
        values = r.get("values")
        if isinstance(values, Mapping):
            pairs = [(k, v) for k, v in values.items() if not str(k).endswith("_as_string")]
        elif isinstance(values, list):  # keyed: false
            pairs = []
            for i, item in enumerate(values):
                if not isinstance(item, Mapping) or "key" not in item:
                    raise BadResponse(f"{where}.values[{i}]: not a {{key, value}} object")
                pairs.append((item["key"], item.get("value")))
        else:
            raise BadResponse(f"{where}.values: {type(values).__name__} where an object was expected")
        for k, v in pairs:
            f = _finite(k)
            pct = str(f) if f is not None else _label(k)
            self.emit(name, _number(v, f"{where}.values.{str(k)[:60]}"), {**labels, "percentile": pct})


def search_metrics(q: QueryConfig, body: Any, time_ns: int, end_ms: int | None = None) -> Walked:
    """A ``_search`` response of ``q``'s search as gauges at ``time_ns`` (see the module's
    docstring for the names); ``end_ms`` is the window's end (date_histogram's completeness).
    Raises ``BadResponse`` for a response of a shape Elasticsearch does not give."""
    if not isinstance(body, Mapping):
        raise BadResponse(f"response: {type(body).__name__} where an object was expected")
    hits = body.get("hits")
    total = hits.get("total") if isinstance(hits, Mapping) else None
    if isinstance(total, Mapping):
        total = total.get("value")
    if _finite(total) is None:
        raise BadResponse("response: no hits.total.value (track_total_hits is set, Elasticsearch gives it)")
    walk = _Walk(q, time_ns, end_ms if end_ms is not None else time_ns // 1_000_000)
    prefix = q.name
    walk.emit(f"{prefix}.hits", _finite(total), {})
    if q.aggs:
        walk.aggs(q.aggs, body.get("aggregations"), prefix, {}, "aggregations", 0)
    return walk.out


# ---------------------------------------------------------------------------- cluster metrics


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(p)
    return d


class _Out:
    def __init__(self, time_ns: int) -> None:
        self.time_ns = time_ns
        self.series: list[Metric] = []

    def add(self, name: str, kind: MetricKind, value: Any, unit: str, desc: str,
            attrs: Mapping[str, AttributeValue]) -> None:
        f = _finite(value)
        if f is None:
            return  # a field this version of Elasticsearch does not give
        self.series.append(Metric(name, kind, f, unit, desc, dict(attrs), self.time_ns))


_G, _C = MetricKind.GAUGE, MetricKind.COUNTER
_HEALTH = {"green": 0, "yellow": 1, "red": 2}
_SHARDS = (("active", "active_shards"), ("active_primary", "active_primary_shards"),
           ("relocating", "relocating_shards"), ("initializing", "initializing_shards"),
           ("unassigned", "unassigned_shards"), ("unassigned_delayed", "delayed_unassigned_shards"))


def cluster_health_metrics(health: Any, time_ns: int) -> list[Metric]:
    """``GET _cluster/health`` as metrics (see the module docstring)."""
    if not isinstance(health, Mapping) or health.get("status") not in _HEALTH:
        raise BadResponse("_cluster/health: no status green, yellow or red")
    out = _Out(time_ns)
    a = {"elasticsearch.cluster.name": _label(health.get("cluster_name", ""))}
    status = health["status"]
    for s in _HEALTH:
        out.add("elasticsearch.cluster.health", _G, int(s == status), "{status}",
                "the cluster's health status (1: this one)", {**a, "status": s})
    out.add("elasticsearch.cluster.health.status", _G, _HEALTH[status], "",
            "the cluster's health status: 0 green, 1 yellow, 2 red", a)
    out.add("elasticsearch.cluster.nodes", _G, health.get("number_of_nodes"), "{nodes}", "nodes in the cluster", a)
    out.add("elasticsearch.cluster.data_nodes", _G, health.get("number_of_data_nodes"), "{nodes}",
            "data nodes in the cluster", a)
    for state, key in _SHARDS:
        out.add("elasticsearch.cluster.shards", _G, health.get(key), "{shards}", "shards in the cluster, by state",
                {**a, "state": state})
    out.add("elasticsearch.cluster.pending_tasks", _G, health.get("number_of_pending_tasks"), "{tasks}",
            "cluster-level changes not yet executed", a)
    out.add("elasticsearch.cluster.in_flight_fetch", _G, health.get("number_of_in_flight_fetch"), "{fetches}",
            "unfinished shard fetches", a)
    return out.series


_OPERATIONS = (("index", "indexing", "index_total", "index_time_in_millis"),
               ("delete", "indexing", "delete_total", "delete_time_in_millis"),
               ("get", "get", "total", "time_in_millis"),
               ("query", "search", "query_total", "query_time_in_millis"),
               ("fetch", "search", "fetch_total", "fetch_time_in_millis"),
               ("scroll", "search", "scroll_total", "scroll_time_in_millis"),
               ("suggest", "search", "suggest_total", "suggest_time_in_millis"),
               ("refresh", "refresh", "total", "total_time_in_millis"),
               ("flush", "flush", "total", "total_time_in_millis"),
               ("merge", "merges", "total", "total_time_in_millis"))


def node_stats_metrics(stats: Any, time_ns: int) -> list[Metric]:
    """``GET _nodes/stats`` as metrics per node (see the module docstring); at most ``MAX_NODES``
    nodes and ``MAX_POOLS`` thread pools a node."""
    nodes = _get(stats, "nodes")
    if not isinstance(nodes, Mapping):
        raise BadResponse("_nodes/stats: no nodes object")
    out = _Out(time_ns)
    cluster = _label(_get(stats, "cluster_name") or "")
    for node_id, n in list(nodes.items())[:MAX_NODES]:
        if not isinstance(n, Mapping):
            raise BadResponse(f"_nodes/stats: nodes.{str(node_id)[:60]} is not an object")
        a = {"elasticsearch.cluster.name": cluster, "elasticsearch.node.name": _label(n.get("name", node_id))}
        mem = _get(n, "jvm", "mem")
        out.add("jvm.memory.heap.used", _G, _get(mem, "heap_used_in_bytes"), "By", "the current heap memory usage", a)
        out.add("jvm.memory.heap.max", _G, _get(mem, "heap_max_in_bytes"), "By", "the most memory the heap may use", a)
        out.add("jvm.memory.heap.committed", _G, _get(mem, "heap_committed_in_bytes"), "By",
                "the memory guaranteed to be available for the heap", a)
        collectors = _get(n, "jvm", "gc", "collectors")
        for gc, c in list(collectors.items())[:MAX_POOLS] if isinstance(collectors, Mapping) else ():
            ga = {**a, "name": _label(gc)}
            out.add("jvm.gc.collections.count", _C, _get(c, "collection_count"), "1", "garbage collections", ga)
            out.add("jvm.gc.collections.elapsed", _C, _get(c, "collection_time_in_millis"), "ms",
                    "the accumulated garbage collection time", ga)
        ind = _get(n, "indices")
        out.add("elasticsearch.node.documents", _G, _get(ind, "docs", "count"), "{documents}", "documents on the node",
                {**a, "state": "active"})
        out.add("elasticsearch.node.documents", _G, _get(ind, "docs", "deleted"), "{documents}",
                "documents on the node", {**a, "state": "deleted"})
        out.add("elasticsearch.node.shards.size", _G, _get(ind, "store", "size_in_bytes"), "By",
                "the size of the shards on the node", a)
        for op, section, total, spent in _OPERATIONS:
            oa = {**a, "operation": op}
            out.add("elasticsearch.node.operations.completed", _C, _get(ind, section, total), "{operations}",
                    "operations completed by the node", oa)
            out.add("elasticsearch.node.operations.time", _C, _get(ind, section, spent), "ms",
                    "time spent on operations by the node", oa)
        pools = _get(n, "thread_pool")
        for pool, p in list(pools.items())[:MAX_POOLS] if isinstance(pools, Mapping) else ():
            pa = {**a, "thread_pool_name": _label(pool)}
            for state in ("completed", "rejected"):
                out.add("elasticsearch.node.thread_pool.tasks.finished", _C, _get(p, state), "{tasks}",
                        "tasks finished by the thread pool", {**pa, "state": state})
            out.add("elasticsearch.node.thread_pool.tasks.queued", _G, _get(p, "queue"), "{tasks}",
                    "tasks queued in the thread pool", pa)
            threads, active = _get(p, "threads"), _get(p, "active")
            out.add("elasticsearch.node.thread_pool.threads", _G, active, "{threads}", "threads in the thread pool",
                    {**pa, "state": "active"})
            if isinstance(threads, int) and isinstance(active, int):
                out.add("elasticsearch.node.thread_pool.threads", _G, threads - active, "{threads}",
                        "threads in the thread pool", {**pa, "state": "idle"})
        fs = _get(n, "fs", "total")
        for what, key in (("total", "total_in_bytes"), ("available", "available_in_bytes"), ("free", "free_in_bytes")):
            out.add(f"elasticsearch.node.fs.disk.{what}", _G, _get(fs, key), "By",
                    f"disk space ({what}) across the node's file stores", a)
        out.add("elasticsearch.node.open_files", _G, _get(n, "process", "open_file_descriptors"), "{files}",
                "open file descriptors of the node", a)
        out.add("elasticsearch.node.http.connections", _G, _get(n, "http", "current_open"), "{connections}",
                "HTTP connections to the node", a)
    return out.series


# ---------------------------------------------------------------------------- the importer


def _failure(e: BaseException) -> tuple[str, str]:
    """(reason label, what the log says) for a failed request; the text is redacted and bounded."""
    from elastic_transport import ConnectionError as TransportConnectionError
    from elastic_transport import ConnectionTimeout
    from elasticsearch import ApiError

    from integrations.elasticsearch.client import too_large

    big = too_large(e)
    if big is not None:
        return "bad_response", str(big)
    if isinstance(e, (ConnectionTimeout, TimeoutError)):
        return "timeout", "timed out"
    if isinstance(e, ApiError):
        status = e.meta.status
        err = _get(e.body, "error")
        if isinstance(err, Mapping):
            what = f"{_get(err, 'type')}: {_get(err, 'reason')}"
            root = _get(err, "root_cause")
            cause = root[0] if isinstance(root, list) and root else None
            if isinstance(cause, Mapping) and (cause.get("type"), cause.get("reason")) != (err.get("type"),
                                                                                         err.get("reason")):
                what += f" (caused by {cause.get('type')}: {cause.get('reason')})"
        else:
            what = str(err if err is not None else e.message)
        return f"http_{status}" if 100 <= status <= 599 else "http_other", f"HTTP {status} {peer_excerpt(what)}"
    if isinstance(e, TransportConnectionError):
        return "connection", peer_excerpt(str(e))
    if isinstance(e, BadResponse):
        return "bad_response", peer_excerpt(str(e))
    return "bad_response", peer_excerpt(f"{type(e).__name__}: {e}")


@dataclass(slots=True)
class _Job:
    """A query (or the cluster metrics): its schedule, its latest series, its counts."""

    key: str  # the query's name, or "" for the cluster metrics
    interval: float
    run: Callable[[], Awaitable[Walked]]
    next_due: float = 0.0
    task: asyncio.Task[None] | None = None
    series: list[Metric] = field(default_factory=list)
    up: bool | None = None
    failures: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=lambda: loss_counter("elasticsearch_search"))
    duration: float | None = None
    logged: dict[str, float] = field(default_factory=dict)


class SearchImporter:
    """Runs the queries (each on its own interval) and reads the cluster's health and node stats."""

    def __init__(self, cfg: ElasticsearchConfig, client: Any) -> None:
        self.cfg = cfg
        self.client = client
        self.jobs: list[_Job] = [_Job(q.name, q.interval, self._query_runner(q)) for q in cfg.queries]
        if cfg.cluster_metrics:
            self.jobs.append(_Job("", cfg.interval, self._cluster))
        self._told: set[str] = set()
        self._stopped = False

    async def start(self) -> None:
        """Nothing to set up: the first import round runs every query."""
        self._stopped = False

    async def stop(self) -> None:
        self._stopped = True
        tasks = [j.task for j in self.jobs if j.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def import_metrics(self) -> list[Metric]:
        """Starts the runs that are due (none of a job still running) and waits for them within
        the round's budget; a run that takes longer keeps going and its results come in a later
        round. Returns every job's latest series and the import's own metrics."""
        if self._stopped:
            return []
        now = time.monotonic()
        started = []
        for j in self.jobs:
            if j.task is None and now >= j.next_due:
                j.next_due = now + j.interval
                j.task = asyncio.create_task(self._run(j), name=f"elasticsearch search {j.key or 'cluster'}")
                started.append(j.task)
        if started:
            await asyncio.wait(started, timeout=self._budget())
        out: list[Metric] = []
        for j in self.jobs:
            out.extend(j.series)
        out.extend(self.self_metrics())
        return out

    def _budget(self) -> float:
        """How long a round waits for its runs: under the round's own timeout."""
        round_s = self.cfg.timeout if self.cfg.timeout is not None else self.cfg.interval
        return max(0.1, round_s * 0.8)

    async def _run(self, j: _Job) -> None:
        t0 = time.monotonic()
        try:
            walked = await j.run()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a run's failure fails that run only
            reason, text = _failure(e)
            j.series = []
            j.up = False
            j.failures[reason] += 1
            self._log(j, reason, logging.WARNING, f"{self._what(j)} failed ({reason}): {text}")
        else:
            j.series = walked.series
            j.up = True
            if walked.dropped:
                j.dropped["max_series"] += walked.dropped
                self._log(j, "max_series", logging.WARNING,
                          f"{self._what(j)}: {walked.dropped} series beyond max_series "
                          f"({self._max_series(j)}) dropped")
            for agg in walked.unsupported:
                j.dropped["unsupported"] += 1
                if agg not in self._told:
                    self._told.add(agg)
                    log.warning("%s: aggregation %s is of a type not turned into metrics; left out",
                                self._what(j), agg)
        finally:
            j.duration = time.monotonic() - t0
            j.task = None

    def _max_series(self, j: _Job) -> int:
        return next((q.max_series for q in self.cfg.queries if q.name == j.key), 0)

    @staticmethod
    def _what(j: _Job) -> str:
        return f"query {j.key}" if j.key else "cluster metrics"

    @staticmethod
    def _log(j: _Job, reason: str, level: int, text: str) -> None:
        now = time.monotonic()
        if now - j.logged.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            j.logged[reason] = now
            log.log(level, "%s", text)
        else:
            log.debug("%s", text)

    def _query_runner(self, q: QueryConfig) -> Callable[[], Awaitable[Walked]]:
        async def run() -> Walked:
            now_ns = time.time_ns()
            end_ms = now_ns // 1_000_000
            body = search_body(q, end_ms)
            client = self.client.options(request_timeout=q.timeout)
            # The client's own timeout ends the request; this one ends a peer that trickles.
            resp = await asyncio.wait_for(client.search(index=q.index, **body), q.timeout + 1.0)
            return await self._walk(resp, lambda b: search_metrics(q, b, now_ns, end_ms))
        return run

    async def _cluster(self) -> Walked:
        now_ns = time.time_ns()
        client = self.client.options(request_timeout=self.cfg.request_timeout)
        limit = self.cfg.request_timeout + 1.0
        health = await asyncio.wait_for(client.cluster.health(), limit)
        stats = await asyncio.wait_for(client.nodes.stats(metric="jvm,indices,thread_pool,fs,process,http"), limit)
        series = cluster_health_metrics(health.body, now_ns)
        series += (await self._walk(stats, lambda b: Walked(node_stats_metrics(b, now_ns)))).series
        return Walked(series)

    @staticmethod
    async def _walk(resp: Any, walk: Callable[[Any], Walked]) -> Walked:
        """``walk`` over the response's body, in a thread when the body is large (or of unknown size)."""
        length = resp.meta.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) <= THREAD_BYTES:
            return walk(resp.body)
        return await asyncio.to_thread(walk, resp.body)

    def self_metrics(self) -> list[Metric]:
        out: list[Metric] = []
        for j in self.jobs:
            if j.key:
                a: dict[str, AttributeValue] = {"query": j.key}
                up, fail, drop, dur = ("monbridge.elasticsearch.query.up", "monbridge.elasticsearch.query.failures",
                                       "monbridge.elasticsearch.query.series.dropped",
                                       "monbridge.elasticsearch.query.duration")
            else:
                a = {}
                up, fail, drop, dur = ("monbridge.elasticsearch.cluster.up", "monbridge.elasticsearch.cluster.failures",
                                       "", "monbridge.elasticsearch.cluster.duration")
            if j.up is not None:
                out.append(Metric(up, MetricKind.GAUGE, float(j.up), "", "1 if the last run succeeded, else 0", a))
            if j.duration is not None:
                out.append(Metric(dur, MetricKind.GAUGE, j.duration, "s", "seconds the last run took", a))
            out += [Metric(fail, MetricKind.COUNTER, float(n), "{run}", "failed runs, by reason", {**a, "reason": r})
                    for r, n in sorted(j.failures.items())]
            if drop:
                out += [Metric(drop, MetricKind.COUNTER, float(n), "{series}", "series left out, by reason",
                               {**a, "reason": r}) for r, n in sorted(j.dropped.items())]
        return out
