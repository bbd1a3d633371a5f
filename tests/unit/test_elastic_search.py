"""Search responses, cluster health and node stats as metrics: the walker on the response shapes
Elasticsearch's reference documents (9.x), its bounds, and the shapes it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from integrations.elasticsearch.config import MAX_AGG_DEPTH, ElasticsearchConfig, QueryConfig
from integrations.elasticsearch.search import (
    MAX_LABEL_CHARS,
    MAX_NODES,
    BadResponse,
    cluster_health_metrics,
    node_stats_metrics,
    search_body,
    search_metrics,
)

T_NS = 1_700_000_000_000_000_000
END_MS = T_NS // 1_000_000


def q(aggs: dict[str, Any] | None = None, **kw: Any) -> QueryConfig:
    return QueryConfig(name=kw.pop("name", "qq"), index="logs-*", aggs=aggs, **kw)


def resp(aggregations: dict[str, Any] | None = None, total: int = 7) -> dict[str, Any]:
    out: dict[str, Any] = {"took": 3, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0,
                                                                       "failed": 0},
                           "hits": {"total": {"value": total, "relation": "eq"}, "max_score": None, "hits": []}}
    if aggregations is not None:
        out["aggregations"] = aggregations
    return out


def series(walked: Any) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    return {(m.name, tuple(sorted(m.attributes.items()))): m.value for m in walked.series}


def test_hits_and_terms_with_a_metric_sub_aggregation() -> None:
    query = q({"by_service": {"terms": {"field": "service.name"}, "aggs": {"lat": {"avg": {"field": "d"}}}}},
              name="errors_by_service", labels={"team": "ops"})
    r = resp({"by_service": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [
        {"key": "checkout", "doc_count": 5, "lat": {"value": 12.5}},
        {"key": "cart", "doc_count": 2, "lat": {"value": None}}]}})
    got = series(search_metrics(query, r, T_NS))
    assert got == {
        ("errors_by_service.hits", (("team", "ops"),)): 7.0,
        ("errors_by_service.by_service.doc_count", (("by_service", "checkout"), ("team", "ops"))): 5.0,
        ("errors_by_service.by_service.lat", (("by_service", "checkout"), ("team", "ops"))): 12.5,
        ("errors_by_service.by_service.doc_count", (("by_service", "cart"), ("team", "ops"))): 2.0,
    }  # the average of no documents (null) gives no series
    assert all(m.timestamp_ns == T_NS for m in search_metrics(query, r, T_NS).series)


def test_total_hits_as_a_bare_number_too() -> None:
    body = resp()
    body["hits"]["total"] = 9  # rest_total_hits_as_int
    assert series(search_metrics(q(), body, T_NS)) == {("qq.hits", ()): 9.0}


@pytest.mark.parametrize("keyed", [True, False])
def test_percentiles_keyed_or_not(keyed: bool) -> None:
    values: Any = ({"95.0": 230.0, "99.0": 410.5, "95.0_as_string": "230"} if keyed
                   else [{"key": 95.0, "value": 230.0}, {"key": 99.0, "value": 410.5}])
    got = series(search_metrics(q({"p": {"percentiles": {"field": "d", "percents": [95, 99], "keyed": keyed}}},
                                  name="latency"), resp({"p": {"values": values}}), T_NS))
    assert got == {("latency.hits", ()): 7.0, ("latency.p", (("percentile", "95.0"),)): 230.0,
                   ("latency.p", (("percentile", "99.0"),)): 410.5}


def test_stats_and_extended_stats_one_series_per_stat() -> None:
    aggs = {"s": {"stats": {"field": "d"}}, "x": {"extended_stats": {"field": "d"}}}
    r = resp({"s": {"count": 2, "min": 1.0, "max": 3.0, "avg": 2.0, "sum": 4.0, "min_as_string": "1"},
              "x": {"count": 2, "min": 1.0, "max": 3.0, "avg": 2.0, "sum": 4.0, "sum_of_squares": 10.0,
                    "variance": 1.0, "variance_population": 1.0, "variance_sampling": 2.0, "std_deviation": 1.0,
                    "std_deviation_population": 1.0, "std_deviation_sampling": 1.41,
                    "std_deviation_bounds": {"upper": 4.0, "lower": 0.0, "upper_population": 4.0,
                                             "lower_population": 0.0, "upper_sampling": 4.8,
                                             "lower_sampling": -0.8}}})
    got = series(search_metrics(q(aggs), r, T_NS))
    assert got[("qq.s.count", ())] == 2.0 and got[("qq.s.avg", ())] == 2.0
    assert ("qq.s.min_as_string", ()) not in got
    assert got[("qq.x.variance", ())] == 1.0
    assert got[("qq.x.std_deviation_bounds.upper", ())] == 4.0
    assert got[("qq.x.std_deviation_bounds.lower_sampling", ())] == -0.8
    assert len(got) == 1 + 5 + 12 + 6  # hits, stats, extended_stats and its six bounds


def test_value_aggregations() -> None:
    kinds = ("avg", "sum", "min", "max", "value_count", "cardinality")
    aggs = {k: {k: {"field": "d"}} for k in kinds}
    r = resp({k: {"value": float(i)} for i, k in enumerate(kinds)})
    got = series(search_metrics(q(aggs), r, T_NS))
    assert {k: got[(f"qq.{k}", ())] for k in kinds} == {k: float(i) for i, k in enumerate(kinds)}


def test_nested_buckets_carry_every_level_s_label() -> None:
    aggs = {"svc": {"terms": {"field": "service.name"},
                    "aggs": {"status": {"histogram": {"field": "http.status", "interval": 100},
                                        "aggs": {"p": {"percentiles": {"field": "d", "percents": [50]}}}}}}}
    r = resp({"svc": {"buckets": [{"key": "api", "doc_count": 3, "status": {"buckets": [
        {"key": 200.0, "doc_count": 2, "p": {"values": {"50.0": 1.5}}},
        {"key": 500.0, "doc_count": 1, "p": {"values": {"50.0": 9.0}}}]}}]}})
    got = series(search_metrics(q(aggs), r, T_NS))
    assert got[("qq.svc.status.doc_count", (("status", "200"), ("svc", "api")))] == 2.0
    assert got[("qq.svc.status.p", (("percentile", "50.0"), ("status", "500"), ("svc", "api")))] == 9.0
    assert got[("qq.svc.doc_count", (("svc", "api"),))] == 3.0


def test_range_filters_composite_multi_terms_and_single_bucket_aggregations() -> None:
    aggs = {"r": {"range": {"field": "d", "ranges": [{"to": 100}, {"from": 100}]}},
            "rk": {"range": {"field": "d", "keyed": True, "ranges": [{"to": 100}]}},
            "f": {"filters": {"filters": {"errors": {"match": {"l": "e"}}, "warnings": {"match": {"l": "w"}}}}},
            "fa": {"filters": {"filters": [{"match": {"l": "e"}}]}},
            "c": {"composite": {"sources": [{"host": {"terms": {"field": "host.name"}}},
                                            {"day": {"date_histogram": {"field": "@timestamp",
                                                                        "calendar_interval": "1d"}}}]}},
            "mt": {"multi_terms": {"terms": [{"field": "a"}, {"field": "b"}]}},
            "only_errors": {"filter": {"term": {"l": "e"}}, "aggs": {"m": {"max": {"field": "d"}}}}}
    r = resp({"r": {"buckets": [{"key": "*-100.0", "to": 100.0, "doc_count": 4},
                                {"key": "100.0-*", "from": 100.0, "doc_count": 1}]},
              "rk": {"buckets": {"*-100.0": {"to": 100.0, "doc_count": 4}}},
              "f": {"buckets": {"errors": {"doc_count": 3}, "warnings": {"doc_count": 0}}},
              "fa": {"buckets": [{"doc_count": 3}]},
              "c": {"after_key": {"host": "b", "day": 1}, "buckets": [
                  {"key": {"host": "a", "day": 1700000000000}, "doc_count": 2}]},
              "mt": {"buckets": [{"key": ["x", 1], "key_as_string": "x|1", "doc_count": 5}]},
              "only_errors": {"doc_count": 3, "m": {"value": 42.0}}})
    got = series(search_metrics(q(aggs), r, T_NS))
    assert got[("qq.r.doc_count", (("r", "*-100.0"),))] == 4.0
    assert got[("qq.r.doc_count", (("r", "100.0-*"),))] == 1.0
    assert got[("qq.rk.doc_count", (("rk", "*-100.0"),))] == 4.0
    assert got[("qq.f.doc_count", (("f", "errors"),))] == 3.0
    assert got[("qq.f.doc_count", (("f", "warnings"),))] == 0.0
    assert got[("qq.fa.doc_count", (("fa", "0"),))] == 3.0
    assert got[("qq.c.doc_count", (("day", "1700000000000"), ("host", "a")))] == 2.0
    assert got[("qq.mt.doc_count", (("mt", "x|1"),))] == 5.0
    assert got[("qq.only_errors.doc_count", ())] == 3.0
    assert got[("qq.only_errors.m", ())] == 42.0


def _histogram(keys: list[int]) -> dict[str, Any]:
    return {"h": {"buckets": [{"key_as_string": str(k), "key": k, "doc_count": i + 1, "m": {"value": float(i)}}
                              for i, k in enumerate(keys)]}}


@pytest.mark.parametrize(("keys", "spec", "want"), [
    # the newest bucket contains the window's end: still filling; the one before is taken
    ([END_MS - 90_000, END_MS - 30_000], {"fixed_interval": "1m"}, 0.0),
    # the newest bucket ended before the window's end (no documents since): it is complete
    ([END_MS - 180_000, END_MS - 120_000], {"fixed_interval": "1m"}, 1.0),
    ([END_MS - 120_000], {"calendar_interval": "minute"}, 0.0),
    # a calendar month has no fixed length: only a bucket that a later one follows counts
    ([END_MS - 90 * 86_400_000, END_MS - 60 * 86_400_000], {"calendar_interval": "month"}, 0.0),
])
def test_date_histogram_gives_its_last_complete_bucket(keys: list[int], spec: dict[str, Any], want: float) -> None:
    aggs = {"h": {"date_histogram": {"field": "@timestamp", **spec}, "aggs": {"m": {"max": {"field": "d"}}}}}
    got = series(search_metrics(q(aggs), resp(_histogram(keys)), T_NS, END_MS))
    assert got == {("qq.hits", ()): 7.0, ("qq.h.doc_count", ()): want + 1, ("qq.h.m", ()): want}


def test_date_histogram_with_only_a_filling_bucket_gives_nothing() -> None:
    aggs = {"h": {"date_histogram": {"field": "@timestamp", "fixed_interval": "5m"}}}
    got = series(search_metrics(q(aggs), resp(_histogram([END_MS - 60_000])), T_NS, END_MS))
    assert got == {("qq.hits", ()): 7.0}


def test_max_series_bounds_a_run_and_counts_the_rest() -> None:
    aggs = {"t": {"terms": {"field": "f", "size": 5000}}}
    r = resp({"t": {"buckets": [{"key": f"k{i}", "doc_count": 1} for i in range(5000)]}})
    walked = search_metrics(q(aggs, max_series=100), r, T_NS)
    assert len(walked.series) == 100
    assert walked.dropped == 5000 + 1 - 100
    assert walked.series[0].name == "qq.hits"


def test_unsupported_aggregations_are_left_out_and_named() -> None:
    aggs = {"top": {"top_hits": {"size": 1}}, "m": {"max": {"field": "d"}}}
    walked = search_metrics(q(aggs), resp({"top": {"hits": {}}, "m": {"value": 1.0}}), T_NS)
    assert series(walked) == {("qq.hits", ()): 7.0, ("qq.m", ()): 1.0}
    assert walked.unsupported == {"qq.top (top_hits)"}


def test_the_walk_follows_the_request_not_the_response() -> None:
    """A response nesting deeper than the request asked (a hostile peer) is not followed."""
    deep: dict[str, Any] = {"doc_count": 1}
    for _ in range(10_000):
        deep = {"doc_count": 1, "x": {"buckets": [deep]}}
    r = resp({"t": {"buckets": [{"key": "a", **deep}]}})
    got = series(search_metrics(q({"t": {"terms": {"field": "f"}}}), r, T_NS))
    assert got == {("qq.hits", ()): 7.0, ("qq.t.doc_count", (("t", "a"),)): 1.0}


def test_long_bucket_keys_are_cut() -> None:
    r = resp({"t": {"buckets": [{"key": "x" * 10_000, "doc_count": 1}]}})
    (m,) = [m for m in search_metrics(q({"t": {"terms": {"field": "f"}}}), r, T_NS).series if m.name == "qq.t.doc_count"]
    assert m.attributes["t"] == "x" * MAX_LABEL_CHARS


@pytest.mark.parametrize(("body", "where"), [
    ([], "response: list"),
    ({"hits": {"hits": []}}, "hits.total"),
    ({"hits": {"total": {"value": "7"}}}, "hits.total"),
    (resp(), "aggregations: NoneType"),
    (resp({"t": {"buckets": "many"}}), "aggregations.t.buckets: str"),
    (resp({"t": {"buckets": [17]}}), "aggregations.t.buckets[0]: int"),
    (resp({"t": {"buckets": [{"doc_count": 1}]}}), "aggregations.t.buckets[0]: no usable key"),
    (resp({"t": {"buckets": [{"key": "a", "doc_count": "1"}]}}), "aggregations.t.buckets[0].doc_count: str"),
    (resp({"other": {}}), "aggregation 't' missing"),
    (resp({"t": []}), "aggregations.t: list"),
])
def test_bad_shapes_are_refused_naming_where(body: Any, where: str) -> None:
    with pytest.raises(BadResponse, match=where.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        search_metrics(q({"t": {"terms": {"field": "f"}}}), body, T_NS)


def test_bad_metric_values_are_refused() -> None:
    with pytest.raises(BadResponse, match=r"aggregations\.m\.value: str"):
        search_metrics(q({"m": {"avg": {"field": "d"}}}), resp({"m": {"value": "NaN"}}), T_NS)
    with pytest.raises(BadResponse, match=r"aggregations\.p\.values: NoneType"):
        search_metrics(q({"p": {"percentiles": {"field": "d"}}}), resp({"p": {}}), T_NS)


def test_aggregation_depth_is_bounded_in_the_config() -> None:
    def nest(n: int) -> dict[str, Any]:
        a: dict[str, Any] = {"leaf": {"max": {"field": "d"}}}
        for i in range(n - 1):
            a = {f"l{i}": {"terms": {"field": "f"}, "aggs": a}}
        return a

    q(nest(MAX_AGG_DEPTH))
    with pytest.raises(ValidationError, match=f"nest deeper than {MAX_AGG_DEPTH}"):
        q(nest(MAX_AGG_DEPTH + 1))
    with pytest.raises(ValidationError, match=r"aggs\.t: an aggregation's definition must be a mapping"):
        q({"t": ["terms"]})


def test_search_body_ands_the_query_with_the_window() -> None:
    query = QueryConfig(name="e", index="logs-*", window=300, time_field="event.created",
                        query={"match": {"log.level": "error"}}, aggs={"t": {"terms": {"field": "f"}}})
    body = search_body(query, 1_000_000_000)
    assert body == {"size": 0, "track_total_hits": True, "aggs": {"t": {"terms": {"field": "f"}}},
                    "query": {"bool": {"must": [{"match": {"log.level": "error"}}], "filter": [
                        {"range": {"event.created": {"gte": 1_000_000_000 - 300_000, "lte": 1_000_000_000,
                                                     "format": "epoch_millis"}}}]}}}
    assert search_body(QueryConfig(name="all", index="x"), 5)["query"]["bool"]["must"] == []


def test_query_names_are_unique_in_a_config() -> None:
    with pytest.raises(ValidationError, match="used by an earlier query"):
        ElasticsearchConfig(hosts=["http://x:9200"], queries=[{"name": "a", "index": "x"}, {"name": "a", "index": "y"}])


# ---------------------------------------------------------------------------- cluster health, node stats

HEALTH = {"cluster_name": "prod", "status": "red", "timed_out": False, "number_of_nodes": 3,
          "number_of_data_nodes": 2, "active_primary_shards": 10, "active_shards": 18, "relocating_shards": 1,
          "initializing_shards": 2, "unassigned_shards": 3, "unassigned_primary_shards": 1,
          "delayed_unassigned_shards": 1, "number_of_pending_tasks": 4, "number_of_in_flight_fetch": 5,
          "task_max_waiting_in_queue_millis": 0, "active_shards_percent_as_number": 75.0}


def test_cluster_health() -> None:
    got = {(m.name, tuple(sorted((k, v) for k, v in m.attributes.items() if k != "elasticsearch.cluster.name"))):
           m.value for m in cluster_health_metrics(HEALTH, T_NS)}
    assert got[("elasticsearch.cluster.health.status", ())] == 2.0
    assert [got[("elasticsearch.cluster.health", (("status", s),))] for s in ("green", "yellow", "red")] == [0, 0, 1]
    assert got[("elasticsearch.cluster.nodes", ())] == 3.0
    assert got[("elasticsearch.cluster.data_nodes", ())] == 2.0
    assert {s: got[("elasticsearch.cluster.shards", (("state", s),))] for s in
            ("active", "active_primary", "relocating", "initializing", "unassigned", "unassigned_delayed")} == \
        {"active": 18, "active_primary": 10, "relocating": 1, "initializing": 2, "unassigned": 3,
         "unassigned_delayed": 1}
    assert got[("elasticsearch.cluster.pending_tasks", ())] == 4.0
    assert got[("elasticsearch.cluster.in_flight_fetch", ())] == 5.0
    assert all(m.attributes["elasticsearch.cluster.name"] == "prod" for m in cluster_health_metrics(HEALTH, T_NS))
    with pytest.raises(BadResponse, match="no status"):
        cluster_health_metrics({**HEALTH, "status": "purple"}, T_NS)


def _node(name: str) -> dict[str, Any]:
    return {"name": name, "indices": {
        "docs": {"count": 100, "deleted": 2}, "store": {"size_in_bytes": 5000},
        "indexing": {"index_total": 10, "index_time_in_millis": 11, "delete_total": 1, "delete_time_in_millis": 2},
        "get": {"total": 3, "time_in_millis": 4},
        "search": {"query_total": 5, "query_time_in_millis": 6, "fetch_total": 7, "fetch_time_in_millis": 8,
                   "scroll_total": 0, "scroll_time_in_millis": 0, "suggest_total": 0, "suggest_time_in_millis": 0},
        "merges": {"total": 1, "total_time_in_millis": 1}, "refresh": {"total": 1, "total_time_in_millis": 1},
        "flush": {"total": 1, "total_time_in_millis": 1}},
        "jvm": {"mem": {"heap_used_in_bytes": 600, "heap_max_in_bytes": 1000, "heap_committed_in_bytes": 800},
                "gc": {"collectors": {"young": {"collection_count": 12, "collection_time_in_millis": 34}}}},
        "thread_pool": {"search": {"threads": 13, "queue": 2, "active": 3, "rejected": 4, "largest": 13,
                                   "completed": 100}},
        "fs": {"total": {"total_in_bytes": 1 << 30, "free_in_bytes": 1 << 29, "available_in_bytes": 1 << 28}},
        "process": {"open_file_descriptors": 300}, "http": {"current_open": 4}}


def test_node_stats() -> None:
    stats = {"_nodes": {"total": 1, "successful": 1, "failed": 0}, "cluster_name": "prod", "nodes": {"id1": _node("n1")}}
    got = {(m.name, tuple(sorted((k, v) for k, v in m.attributes.items()
                                 if k not in ("elasticsearch.cluster.name", "elasticsearch.node.name")))): (m.value, m.unit)
           for m in node_stats_metrics(stats, T_NS)}
    assert got[("jvm.memory.heap.used", ())] == (600.0, "By")
    assert got[("jvm.memory.heap.max", ())] == (1000.0, "By")
    assert got[("jvm.gc.collections.count", (("name", "young"),))] == (12.0, "1")
    assert got[("jvm.gc.collections.elapsed", (("name", "young"),))] == (34.0, "ms")
    assert got[("elasticsearch.node.documents", (("state", "active"),))][0] == 100.0
    assert got[("elasticsearch.node.shards.size", ())] == (5000.0, "By")
    assert got[("elasticsearch.node.operations.completed", (("operation", "index"),))][0] == 10.0
    assert got[("elasticsearch.node.operations.time", (("operation", "fetch"),))] == (8.0, "ms")
    assert got[("elasticsearch.node.thread_pool.tasks.finished",
                (("state", "rejected"), ("thread_pool_name", "search")))][0] == 4.0
    assert got[("elasticsearch.node.thread_pool.threads", (("state", "idle"), ("thread_pool_name", "search")))][0] == 10
    assert got[("elasticsearch.node.fs.disk.available", ())] == (float(1 << 28), "By")
    assert got[("elasticsearch.node.open_files", ())][0] == 300.0
    assert {m.attributes["elasticsearch.node.name"] for m in node_stats_metrics(stats, T_NS)} == {"n1"}


def test_node_stats_bounded_and_shapes_checked() -> None:
    many = {"cluster_name": "c", "nodes": {f"id{i}": {"name": f"n{i}"} for i in range(MAX_NODES + 50)}}
    assert node_stats_metrics(many, T_NS) == []  # no field given: nothing made up
    sparse = {"cluster_name": "c", "nodes": {f"id{i}": {"name": f"n{i}", "process": {"open_file_descriptors": 1}}
                                             for i in range(MAX_NODES + 50)}}
    assert len(node_stats_metrics(sparse, T_NS)) == MAX_NODES
    with pytest.raises(BadResponse, match="no nodes"):
        node_stats_metrics({"nodes": []}, T_NS)
    with pytest.raises(BadResponse, match="nodes.x is not an object"):
        node_stats_metrics({"nodes": {"x": 5}}, T_NS)


def test_numbers_no_float_holds_give_no_series() -> None:
    big = 10**400
    aggs = {"t": {"terms": {"field": "f"}, "aggs": {"p": {"percentiles": {"field": "d"}}, "m": {"max": {"field": "d"}}}}}
    r = resp({"t": {"buckets": [{"key": "a", "doc_count": big, "p": {"values": {str(big): 1.0, "95.0": big}},
                                 "m": {"value": float("nan")}}]}})
    got = series(search_metrics(q(aggs), r, T_NS))
    assert got == {("qq.hits", ()): 7.0, ("qq.t.p", (("percentile", str(big)[:MAX_LABEL_CHARS]), ("t", "a"))): 1.0}
    with pytest.raises(BadResponse, match="hits.total"):
        search_metrics(q(), {"hits": {"total": {"value": big}}}, T_NS)
    nodes = {"nodes": {"x": {"name": "n", "jvm": {"mem": {"heap_used_in_bytes": big}},
                             "thread_pool": {"p": {"threads": big, "active": 1}}}}}
    assert [m.name for m in node_stats_metrics(nodes, T_NS)] == ["elasticsearch.node.thread_pool.threads"]
    assert [m.value for m in cluster_health_metrics({**HEALTH, "number_of_nodes": big}, T_NS)
            if m.name == "elasticsearch.cluster.nodes"] == []
