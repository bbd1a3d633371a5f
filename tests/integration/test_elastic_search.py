"""Elasticsearch searches as metrics: the official client (``elasticsearch`` 9, async, aiohttp)
against ``tests/elastic_search_standin.py``, which follows Elasticsearch 9.1's documented
behaviour for ``GET /``, ``_search`` with aggregations (evaluated over the documents each test
loads), its error answers, ``_cluster/health`` and ``_nodes/stats``; and a full agent whose
queries' results appear on ``/metrics``."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import wait_until

from integrations.elasticsearch.client import make_client
from integrations.elasticsearch.config import ElasticsearchConfig
from integrations.elasticsearch.search import SearchImporter
from tests.elastic_search_standin import StandIn, serve

API_KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHM="
#: An interval shorter than any round: the query is due every round.
EVERY_ROUND = 1e-6
SERVICES = {"checkout": 5, "cart": 3, "search": 1}  # error logs per service within the window


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def app_logs(now: float) -> list[dict[str, Any]]:
    """Error logs per ``SERVICES`` within the last 5 minutes, plus info logs and errors older than that."""
    docs: list[dict[str, Any]] = []
    for svc, n in SERVICES.items():
        docs += [{"@timestamp": iso(now - 20 - 10 * i), "log": {"level": "error"}, "service": {"name": svc},
                  "event": {"duration": 1000 * (i + 1)}} for i in range(n)]
        docs += [{"@timestamp": iso(now - 30), "log.level": "info", "service.name": svc}]
        docs += [{"@timestamp": iso(now - 900), "log.level": "error", "service.name": svc}]  # outside the window
    return docs


ERRORS_BY_SERVICE = {"name": "errors_by_service", "index": "logs-*", "interval": 60, "window": 300,
                     "query": {"match": {"log.level": "error"}},
                     "aggs": {"by_service": {"terms": {"field": "service.name"}}}}


def config(url: str, *queries: dict[str, Any], **kw: Any) -> ElasticsearchConfig:
    return ElasticsearchConfig.model_validate({"hosts": [url], "api_key": API_KEY, "export_metrics": False,
                                               "alerts": False, "queries": list(queries), **kw})


def by_name(metrics: Any) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    return {(m.name, tuple(sorted(m.attributes.items()))): m.value for m in metrics}


@pytest.fixture
async def standin() -> AsyncIterator[tuple[StandIn, str]]:
    state = StandIn()
    runner, url = await serve(state)
    yield state, url
    await runner.cleanup()


class Importer:
    """A SearchImporter on the official client; closes both."""

    def __init__(self, cfg: ElasticsearchConfig) -> None:
        self.client = make_client(cfg)
        self.importer = SearchImporter(cfg, self.client)

    async def __aenter__(self) -> SearchImporter:
        await self.importer.start()
        return self.importer

    async def __aexit__(self, *exc: object) -> None:
        await self.importer.stop()
        await self.client.close()


async def test_error_logs_per_service_over_the_window(standin) -> None:
    state, url = standin
    now = time.time()
    state.load("logs-app", app_logs(now))
    state.load("metrics-x", [{"@timestamp": iso(now), "log.level": "error", "service.name": "elsewhere"}])
    async with Importer(config(url, ERRORS_BY_SERVICE)) as importer:
        got = by_name(await importer.import_metrics())
    assert got[("errors_by_service.hits", ())] == sum(SERVICES.values())
    buckets = {dict(k[1])["by_service"]: v for k, v in got.items() if k[0] == "errors_by_service.by_service.doc_count"}
    assert buckets == SERVICES
    assert got[("monbridge.elasticsearch.query.up", (("query", "errors_by_service"),))] == 1.0
    (sent,) = state.searches
    assert sent["index"] == "logs-*"
    assert sent["body"]["size"] == 0 and sent["body"]["track_total_hits"] is True
    window = sent["body"]["query"]["bool"]["filter"][0]["range"]["@timestamp"]
    assert window["lte"] - window["gte"] == 300_000


async def test_p95_latency(standin) -> None:
    state, url = standin
    now = time.time()
    durations = [float((i * 7919) % 1000) for i in range(200)]
    state.load("traces-app", [{"@timestamp": iso(now - i), "event.duration": d} for i, d in enumerate(durations)])
    query = {"name": "latency", "index": "traces-app", "window": 300,
             "aggs": {"p": {"percentiles": {"field": "event.duration", "percents": [95]}},
                      "slowest": {"max": {"field": "event.duration"}}}}
    async with Importer(config(url, query, cluster_metrics=False)) as importer:
        got = by_name(await importer.import_metrics())
    assert got[("latency.p", (("percentile", "95.0"),))] == pytest.approx(
        statistics.quantiles(durations, n=100, method="inclusive")[94])
    assert got[("latency.slowest", ())] == max(durations)
    assert got[("latency.hits", ())] == 200


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_failing_query_fails_alone_its_series_vanish_and_it_is_counted(standin, caplog) -> None:
    state, url = standin
    now = time.time()
    state.load("logs-app", app_logs(now))
    state.load("dates", [{"@timestamp": iso(now), "when": "yesterday-ish"}])
    queries = [ERRORS_BY_SERVICE,
               {"name": "missing_index", "index": "nope", "interval": EVERY_ROUND},
               {"name": "bad_dates", "index": "dates", "time_field": "when", "interval": EVERY_ROUND},
               {"name": "flaky", "index": "logs-app", "interval": EVERY_ROUND,
                "aggs": {"by_service": {"terms": {"field": "service.name"}}}}]
    caplog.set_level(logging.DEBUG, "monbridge.elasticsearch")
    async with Importer(config(url, *queries)) as importer:
        first = by_name(await importer.import_metrics())
        # the errors and the info log of the service
        assert first[("flaky.by_service.doc_count", (("by_service", "checkout"),))] == SERVICES["checkout"] + 1
        for status, type_ in ((429, "es_rejected_execution_exception"), (503, "search_phase_execution_exception")):
            state.fail["logs-app"] = (status, type_, f"{type_} reason text")
            got = by_name(await importer.import_metrics())
            # the failed query's series are gone (stale), not kept at their last values
            assert not [k for k in got if k[0].startswith("flaky.")]
            assert got[("monbridge.elasticsearch.query.up", (("query", "flaky"),))] == 0.0
            assert got[("monbridge.elasticsearch.query.failures", (("query", "flaky"), ("reason", f"http_{status}")))] == 1
            assert f"HTTP {status} {type_}: {type_} reason text" in caplog.text
        # errors_by_service (not due again: interval 60) keeps its results of the first run
        assert got[("errors_by_service.hits", ())] == sum(SERVICES.values())
        assert got[("monbridge.elasticsearch.query.up", (("query", "errors_by_service"),))] == 1.0
        assert got[("monbridge.elasticsearch.query.failures", (("query", "missing_index"), ("reason", "http_404")))] >= 1
        assert got[("monbridge.elasticsearch.query.failures", (("query", "bad_dates"), ("reason", "http_400")))] >= 1
        state.fail.clear()
        got = by_name(await importer.import_metrics())
        assert got[("flaky.by_service.doc_count", (("by_service", "cart"),))] == SERVICES["cart"] + 1
        assert got[("monbridge.elasticsearch.query.up", (("query", "flaky"),))] == 1.0
    assert "index_not_found_exception: no such index [nope]" in caplog.text
    assert ("search_phase_execution_exception: all shards failed (caused by parse_exception: "
            "failed to parse date field [yesterday-ish]") in caplog.text
    # one warning a minute per query and reason; the rest at debug level
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "missing_index" in r.getMessage()]
    assert len(warned) == 1
    assert API_KEY not in caplog.text


async def test_connection_refused_fails_the_query(caplog) -> None:
    cfg = config(f"http://127.0.0.1:{closed_port()}", {"name": "q", "index": "x"})
    async with Importer(cfg) as importer:
        got = by_name(await importer.import_metrics())
    assert got[("monbridge.elasticsearch.query.up", (("query", "q"),))] == 0.0
    assert got[("monbridge.elasticsearch.query.failures", (("query", "q"), ("reason", "connection")))] == 1
    assert not [k for k in got if k[0].startswith("q.")]
    assert "query q failed (connection)" in caplog.text


async def test_a_slow_answer_times_out_and_a_query_never_runs_twice_at_once(standin) -> None:
    state, url = standin
    now = time.time()
    state.load("logs-app", app_logs(now))
    state.load("slow", [{"@timestamp": iso(now)}])
    state.delay["slow"] = 60.0  # beyond the query's timeout
    # (margins for a loaded machine: the quick query has 1.6 s a round; three rounds, 4.8 s at most,
    # stay well within the slow one's 12 s)
    queries = [{"name": "slow_one", "index": "slow", "interval": EVERY_ROUND, "timeout": 12.0},
               {"name": "quick", "index": "logs-app", "interval": EVERY_ROUND}]
    # a round waits at most 0.8 x its timeout; a run still going is left to finish
    async with Importer(config(url, *queries, timeout=2.0)) as importer:
        for _ in range(3):
            got = by_name(await importer.import_metrics())
            assert got[("quick.hits", ())] == sum(SERVICES.values()) + len(SERVICES)  # errors and info logs
            assert ("monbridge.elasticsearch.query.up", (("query", "slow_one"),)) not in got  # not run to its end yet
        # due every round, but still running: not started again
        assert [s["index"] for s in state.searches].count("slow") == 1
        assert [s["index"] for s in state.searches].count("logs-app") == 3
        for _ in range(2000):  # until the slow query's own timeout ends it
            got = by_name(await importer.import_metrics())
            if ("monbridge.elasticsearch.query.up", (("query", "slow_one"),)) in got:
                break
            await asyncio.sleep(0.05)
        assert got[("monbridge.elasticsearch.query.up", (("query", "slow_one"),))] == 0.0
        assert got[("monbridge.elasticsearch.query.failures", (("query", "slow_one"), ("reason", "timeout")))] == 1
        assert not [k for k in got if k[0].startswith("slow_one.")]
    assert state.most_in_flight["logs-app"] == 1
    # (awaited, not wait_until: the stand-in answers on this event loop, which a blocking wait would hold)
    for _ in range(400):
        if state.cancelled["slow"] >= 1:
            break
        await asyncio.sleep(0.05)
    assert state.cancelled["slow"] >= 1, "the abandoned search was not cancelled"


async def test_a_bucket_explosion_is_bounded_counted_and_logged_once(standin, caplog) -> None:
    state, url = standin
    now = time.time()
    state.load("many", [{"@timestamp": iso(now), "service.name": f"svc-{i}"} for i in range(5000)])
    query = {"name": "boom", "index": "many", "interval": EVERY_ROUND, "max_series": 500,
             "aggs": {"s": {"terms": {"field": "service.name", "size": 5000}}}}
    async with Importer(config(url, query)) as importer:
        await importer.import_metrics()
        got = by_name(await importer.import_metrics())
    assert len([k for k in got if k[0].startswith("boom.")]) == 500
    assert got[("monbridge.elasticsearch.query.series.dropped", (("query", "boom"), ("reason", "max_series")))] == \
        2 * (5001 - 500)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "beyond max_series" in r.getMessage()]
    assert len(warned) == 1


async def test_hostile_bodies_fail_their_query_only(standin) -> None:
    state, url = standin
    now = time.time()
    state.load("logs-app", app_logs(now))
    for index in ("deep", "shape", "shallow"):
        state.load(index, [])
    state.override["deep"] = b'{"a":' * 100_000 + b"1" + b"}" * 100_000  # deeper than a JSON parser recurses
    state.override["shape"] = {"hits": {"total": {"value": 1}}, "aggregations": {"t": {"buckets": 5}}}
    nested: Any = {"doc_count": 1}
    for _ in range(200):
        nested = {"doc_count": 1, "t": {"buckets": [{"key": "k", **nested}]}}
    state.override["shallow"] = {"hits": {"total": {"value": 1}}, "aggregations": {"t": {"buckets": [
        {"key": "k", **nested}]}}}
    terms = {"t": {"terms": {"field": "f"}}}
    queries = [{"name": "deep", "index": "deep"}, {"name": "shape", "index": "shape", "aggs": terms},
               {"name": "shallow", "index": "shallow", "aggs": terms}, ERRORS_BY_SERVICE]
    async with Importer(config(url, *queries)) as importer:
        got = by_name(await importer.import_metrics())
    assert got[("monbridge.elasticsearch.query.failures", (("query", "deep"), ("reason", "bad_response")))] == 1
    assert got[("monbridge.elasticsearch.query.failures", (("query", "shape"), ("reason", "bad_response")))] == 1
    # nesting the request did not ask for is not followed
    assert {k: v for k, v in got.items() if k[0].startswith("shallow.")} == {
        ("shallow.hits", ()): 1.0, ("shallow.t.doc_count", (("t", "k"),)): 1.0}
    assert got[("errors_by_service.hits", ())] == sum(SERVICES.values())


async def test_an_answer_beyond_max_response_bytes_fails_its_query_only(standin, caplog) -> None:
    """A search answer larger than ``max_response_bytes`` is refused while it is read; a large
    one within the bound (parsed off the event loop) gives its series."""
    state, url = standin
    now = time.time()
    state.load("logs-app", app_logs(now))
    state.load("huge", [])
    state.load("big", [])
    state.override["huge"] = b'{"hits":{"total":{"value":1}},"pad":"' + b"x" * (3 << 20) + b'"}'
    state.override["big"] = {"hits": {"total": {"value": 7}}, "pad": "y" * (512 << 10)}
    queries = [{"name": "huge", "index": "huge"}, {"name": "big", "index": "big"}, ERRORS_BY_SERVICE]
    async with Importer(config(url, *queries, max_response_bytes=1 << 20)) as importer:
        got = by_name(await importer.import_metrics())
    assert got[("monbridge.elasticsearch.query.failures", (("query", "huge"), ("reason", "bad_response")))] == 1
    assert got[("monbridge.elasticsearch.query.up", (("query", "huge"),))] == 0
    assert "max_response_bytes" in caplog.text
    assert got[("big.hits", ())] == 7
    assert got[("errors_by_service.hits", ())] == sum(SERVICES.values())


async def test_cluster_health_and_node_stats(standin) -> None:
    state, url = standin
    state.load("logs-app", app_logs(time.time()))
    async with Importer(config(url, cluster_metrics=True)) as importer:
        got = by_name(await importer.import_metrics())
        state.health["status"] = "red"
        importer.jobs[0].next_due = 0  # the next round's run
        again = by_name(await importer.import_metrics())
    c = ("elasticsearch.cluster.name", "standin")
    assert got[("elasticsearch.cluster.health.status", (c,))] == 1.0
    assert got[("elasticsearch.cluster.health", (c, ("status", "yellow")))] == 1.0
    assert again[("elasticsearch.cluster.health.status", (c,))] == 2.0
    assert got[("elasticsearch.cluster.shards", (c, ("state", "unassigned")))] == 2.0
    node = (c, ("elasticsearch.node.name", "es-1"))
    assert got[("jvm.memory.heap.used", tuple(sorted(node)))] == 500_000_000
    assert got[("elasticsearch.node.documents", tuple(sorted((*node, ("state", "active")))))] == len(app_logs(0))
    assert got[("monbridge.elasticsearch.cluster.up", ())] == 1.0


# ---------------------------------------------------------------------------- a full agent


@pytest.fixture
def standin_thread() -> Iterator[tuple[StandIn, str]]:
    """The stand-in on its own event loop in a thread (the agent is another process)."""
    state = StandIn()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def up() -> None:
        box["runner"], box["url"] = await serve(state)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(up()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield state, box["url"]
    asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_query_results_on_metrics_of_a_running_agent(standin_thread, run_monbridge) -> None:
    state, url = standin_thread
    now = time.time()
    state.load("logs-app", app_logs(now))
    state.load("many", [{"@timestamp": iso(now), "service.name": f"svc-{i}"} for i in range(300)])
    boom = {"name": "boom", "index": "many", "aggs": {"s": {"terms": {"field": "service.name", "size": 1000}}}}
    mb = run_monbridge({"pipeline": {"cardinality_limit": 100}, "plugins": [
        {"plugin_id": "monitoring.integration.elasticsearch", "config": {
            "hosts": [url], "interval": 0.5, "export_metrics": False, "alerts": False,
            "queries": [ERRORS_BY_SERVICE, {"name": "broken", "index": "nope", "interval": 0.5}, boom]}}]})

    def metrics() -> str:
        status, _, body = mb.get("/metrics")
        text = body.decode()
        return text if status == 200 and "errors_by_service_by_service_doc_count" in text \
            and "monbridge_elasticsearch_query_failures" in text and "boom_s_doc_count" in text else ""

    text = wait_until(metrics, what="the query's series on /metrics")
    for svc, n in SERVICES.items():
        # a gauge's name ending in _count is exposed with _value added (the exposition's rule)
        assert re.search(rf'^errors_by_service_by_service_doc_count_value{{by_service="{svc}"}} {n}(\.0)?$',
                         text, re.M), text
    assert re.search(r"^errors_by_service_hits(\{[^}]*\})? 9(\.0)?$", text, re.M), text
    assert re.search(r'^monbridge_elasticsearch_query_up\{[^}]*query="broken"[^}]*\} 0(\.0)?$', text, re.M), text
    assert re.search(r'^monbridge_elasticsearch_query_failures(_total)?\{[^}]*query="broken"[^}]*reason="http_404"',
                     text, re.M), text
    # the pipeline's cardinality limit caps the bucket explosion (max_series, 10,000, did not)
    assert len(re.findall(r"^boom_s_doc_count_value\{", text, re.M)) == 100
    dropped = re.search(r'^monbridge_series_dropped_total\{reason="cardinality"\} (\d+)', text, re.M)
    assert dropped and int(dropped.group(1)) >= 200, text
