"""Fuzzing what Elasticsearch answers a search, ``_cluster/health`` and ``_nodes/stats``.

Whatever JSON comes back (the client parses it; bytes that are not JSON never reach the walk),
turning it into metrics returns the series or raises ``BadResponse`` — nothing else — for a
query with every kind of aggregation the walk knows, nested; and the series it returns are at
most the query's ``max_series``.

Seeds: documented response shapes in ``corpus/elastic_search/``.
"""

from __future__ import annotations

import json
import math

import pytest

from integrations.elasticsearch.config import QueryConfig
from integrations.elasticsearch.search import (
    BadResponse,
    cluster_health_metrics,
    node_stats_metrics,
    search_metrics,
)
from tests.fuzz.harness import run_fuzz, seeds

QUERY = QueryConfig(name="fz", index="logs-*", max_series=50, aggs={
    "svc": {"terms": {"field": "service.name"}, "aggs": {
        "p": {"percentiles": {"field": "d", "percents": [95, 99]}},
        "s": {"stats": {"field": "d"}}}},
    "h": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1m"}, "aggs": {"m": {"max": {"field": "d"}}}},
    "f": {"filters": {"filters": {"errors": {"match": {"l": "e"}}}}},
    "r": {"range": {"field": "d", "ranges": [{"to": 100}]}},
    "c": {"composite": {"sources": [{"host": {"terms": {"field": "host.name"}}}]}},
    "x": {"extended_stats": {"field": "d"}},
})
TOKENS = [b'"buckets":', b'"key":', b'"key_as_string":', b'"doc_count":', b'"value":', b'"values":', b"null",
          b'"hits":{"total":{"value":1}}', b'"nodes":', b'"status":"red"', b"1e999", b"-0", b"[", b"{", b"true"]


def answer(data: bytes) -> None:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return  # the client's concern: it refuses bodies that are not JSON
    for walk in (lambda: search_metrics(QUERY, body, 1).series, lambda: cluster_health_metrics(body, 1),
                 lambda: node_stats_metrics(body, 1)):
        try:
            series = walk()
        except BadResponse:
            continue
        assert all(isinstance(m.value, float) and math.isfinite(m.value) for m in series)
    try:
        assert len(search_metrics(QUERY, body, 1).series) <= QUERY.max_series
    except BadResponse:
        pass


@pytest.mark.fuzz
def test_fuzz_elastic_search() -> None:
    pool = seeds("elastic_search")
    assert len(pool) >= 4
    assert run_fuzz(answer, pool, allowed=(), tokens=TOKENS) >= len(pool)
