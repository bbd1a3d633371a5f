"""The Elasticsearch export against a stand-in (``tests.elastic_standin``: Elasticsearch 9.x's
documented behaviour for the root info and its product header, index and component templates,
data streams created on first write, and ``_bulk`` with per-item statuses; no Elasticsearch can
run here).

Every document the stand-in takes is checked against the mappings of the template that created
its data stream (an item it refuses fails the test unless the test provokes it), and every ECS
field written is checked against the type the ECS table (``tests/data/elastic/ecs-fields.tsv``)
gives it. Round trips: a Prometheus scrape through a full agent (``python -m bridge.cli run``) to
the documents, values and dimensions exact; alert lifecycles to ECS events in order; delivery
across an outage, a restart on the same queue, per-item 429s and mapping errors; secrets in no
log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.api import Alert, AlertState, HistogramValue, Metric, MetricKind
from integrations.elasticsearch.client import OFF_LOOP_BYTES, make_client
from integrations.elasticsearch.config import ElasticsearchConfig
from integrations.elasticsearch.ecs_gen import parse
from integrations.elasticsearch.events import LogShipper
from integrations.elasticsearch.export import ElasticExporter
from integrations.elasticsearch.templates import LOGS_TEMPLATE
from tests.conftest import _free_port
from tests.elastic_standin import StandInServer, check_value
from tests.integration.alerting_peers import api
from tests.integration.conftest import wait_until
from tests.integration.otlp_receiver import HttpReceiver, attributes
from tests.integration.test_alerting_end_to_end import reload_with
from tests.integration.test_datadog_export import Exposition

pytestmark = pytest.mark.integration

TSV = Path(__file__).resolve().parents[1] / "data" / "elastic" / "ecs-fields.tsv"
ECS_TYPES = {f: t for f, t, _ in parse(TSV.read_text())}
API_KEY = "es-api-key-0123456789abcdef"
PASSWORD = "s3cret-pa55word-xyz"
STREAM = "metrics-monbridge-default"
ALERTS = "logs-monbridge.alerts-default"
LOGS = "logs-monbridge.log-default"


def flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict) and set(v) != {"values", "counts"}:
            out.update(flat(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def check_ecs(docs: list[dict[str, Any]]) -> None:
    """Every ECS field of ``docs`` holds a value of the type ECS gives it."""
    for d in docs:
        for f, v in flat(d).items():
            if f in ECS_TYPES:
                assert check_value(ECS_TYPES[f], v) is None, (f, ECS_TYPES[f], v)
                if ECS_TYPES[f] in ("keyword", "constant_keyword"):
                    assert isinstance(v, str), (f, v)


@pytest.fixture
def es() -> Iterator[StandInServer]:
    server = StandInServer(_free_port())
    yield server
    server.close()


@pytest.fixture
def otlp_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


def config(es: StandInServer, tmp_path: Path | None = None, **kw: Any) -> ElasticsearchConfig:
    queue: dict[str, Any] = {"min_backoff": 0.05, "max_backoff": 0.2}
    if tmp_path is not None:
        queue["path"] = str(tmp_path / "esq")
    queue.update(kw.pop("queue", {}))
    return ElasticsearchConfig.model_validate({"hosts": [es.url], "api_key": API_KEY, "request_timeout": 2,
                                               "queue": queue, **kw})


async def started(cfg: ElasticsearchConfig) -> ElasticExporter:
    exporter = ElasticExporter(cfg, make_client(cfg))
    await exporter.start()
    return exporter


async def stop(exporter: ElasticExporter, timeout: float = 2.0) -> None:
    await exporter.shutdown(timeout)
    await exporter.client.close()


def gauge(name: str, value: float, t: int | None = None, **attrs: str) -> Metric:
    return Metric(name, MetricKind.GAUGE, value, attributes=attrs, timestamp_ns=t or time.time_ns())


async def until(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """``wait_until`` for a test on the exporter's event loop (which must go on turning)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        await asyncio.sleep(0.1)
    return value


def dropped(exporter: ElasticExporter) -> dict[str, float]:
    return {m.attributes["reason"]: m.value for m in exporter.self_metrics()  # type: ignore[misc]
            if m.name.endswith(".dropped")}


# --------------------------------------------------------------------------- Prometheus scrape → documents


def test_prometheus_scrape_to_bulk_documents(es, run_monbridge, tmp_path):
    """A full agent scraping an OpenMetrics exposition: the gauge, the counter's cumulative values
    and the histogram's buckets arrive exact, with the scrape's labels as ECS labels."""
    target = Exposition()
    created = time.time()
    target.set(5, (1, 2, 1), 2.5, created)
    mb = run_monbridge({"plugins": [
        {"plugin_id": "monitoring.integration.prometheus", "config": {
            "interval": 0.5, "scrape": {"interval": 0.5, "timeout": 0.5, "targets": [{"job": "app", "url": target.url}]}}},
        {"plugin_id": "monitoring.integration.elasticsearch", "config": {
            "hosts": [es.url], "api_key": API_KEY, "interval": 0.5,
            "queue": {"path": str(tmp_path / "esq"), "min_backoff": 0.05}}},
    ]})

    def docs_with(field: str) -> list[dict[str, Any]]:
        return [d for d in es.es.docs(STREAM) if field in d]

    (temp, *_) = wait_until(lambda: docs_with("app_temp"), what="the gauge in Elasticsearch")
    assert temp["app_temp"] == 21.5 and temp["labels.job"] == "app"
    (req, *_) = wait_until(lambda: docs_with("app_requests_total"), what="the counter")
    assert req["app_requests_total"] == 5.0 and req["labels.code"] == "200" and req["labels.job"] == "app"
    (lat, *_) = wait_until(lambda: docs_with("app_latency"), what="the histogram")
    assert lat["app_latency"] == {"values": [0.05, 0.55, 1.0], "counts": [1, 2, 1]}
    target.set(12, (1, 4, 3), 9.0, created)
    wait_until(lambda: any(d["app_requests_total"] == 12.0 for d in docs_with("app_requests_total")),
               what="the counter's cumulative 12")
    wait_until(lambda: any(d["app_latency"] == {"values": [0.05, 0.55, 1.0], "counts": [1, 4, 3]}
                           for d in docs_with("app_latency")), what="the histogram's second buckets")
    # the template is Elasticsearch's time-series one; its dynamic templates typed the metrics
    fields = es.es.streams[STREAM]["fields"]
    assert fields["app_temp"] == {"type": "double", "time_series_metric": "gauge"}
    assert fields["app_requests_total"] == {"type": "double", "time_series_metric": "counter"}
    assert fields["app_latency"]["type"] == "histogram"
    assert es.es.streams[STREAM]["template"]["settings"]["index.mode"] == "time_series"
    # self-metrics go along
    wait_until(lambda: docs_with("monbridge.elasticsearch.export.documents.sent")
               or docs_with("metrics.monbridge.elasticsearch.export.documents.sent"), what="the exporter's own counts")
    check_ecs(es.es.docs(STREAM))
    assert not es.es.refused, es.es.refused
    assert es.es.conflicts == 0, "a point not collected again was written twice"
    assert API_KEY not in mb.log_text()


# --------------------------------------------------------------------------- mapping and templates


async def test_ecs_resource_fields_and_metrics_typed_as_ecs_says(es):
    exporter = await started(config(es))
    try:
        now = time.time_ns()
        metrics = [Metric("system.cpu.utilization", MetricKind.GAUGE, 0.5,
                          attributes={"host.name": "h1", "service.name": "api", "host.ip": "10.1.2.3"}, timestamp_ns=now),
                   Metric("system.uptime", MetricKind.COUNTER, 99.4,
                          attributes={"host.name": "h1", "service.name": "api", "host.ip": "10.1.2.3"}, timestamp_ns=now),
                   Metric("rpc", MetricKind.HISTOGRAM, HistogramValue((1.0, 2.0), (1, 0, 3), 9.0, 4),
                          attributes={"service.name": "api", "http.response.status_code": "500"}, timestamp_ns=now)]
        assert (await exporter.export_metrics(metrics)).ok
        d1, d2 = es.es.docs(STREAM)
        assert (d1["host.name"], d1["service.name"], d1["host.ip"]) == ("h1", "api", "10.1.2.3")
        assert d1["host.cpu.usage"] == 0.5 and d1["host.uptime"] == 99
        assert d2["labels.http_response_status_code"] == "500" and d2["rpc"]["counts"] == [1, 3]
        check_ecs(es.es.docs(STREAM))
        fields = es.es.streams[STREAM]["fields"]
        for f in ("host.name", "host.ip", "host.cpu.usage", "host.uptime", "service.name"):
            assert fields[f]["type"] == ECS_TYPES[f], f
        assert not es.es.refused
    finally:
        await stop(exporter)


async def test_otel_mode_documents_take_the_template(es):
    exporter = await started(config(es, mapping="otel", datasets=[{"prefix": "db.", "dataset": "db"}]))
    try:
        assert (await exporter.export_metrics([gauge("db.conns", 3.0, **{"db.system": "pg"}),
                                               gauge("other", 1.0)])).ok
        (d,) = es.es.docs("metrics-db-default")
        assert d["metrics.db.conns"] == 3.0 and d["attributes.db.system"] == "pg"
        assert es.es.docs(STREAM)[0]["metrics.other"] == 1.0
        assert not es.es.refused
    finally:
        await stop(exporter)


async def test_templates_installed_when_missing_and_kept_unless_overwrite(es):
    es.es.index_templates["monbridge-metrics-monbridge"] = {"index_patterns": ["metrics-monbridge-*"],
                                                            "data_stream": {}, "priority": 500, "_meta": {"user": 1}}
    exporter = await started(config(es))
    await stop(exporter)
    assert es.es.index_templates["monbridge-metrics-monbridge"]["_meta"] == {"user": 1}
    assert "monbridge-alerts" in es.es.index_templates and "monbridge-metrics@mappings" in es.es.component_templates
    exporter = await started(config(es, templates={"overwrite": True}))
    await stop(exporter)
    assert es.es.index_templates["monbridge-metrics-monbridge"]["_meta"] == {"managed_by": "monbridge"}


# --------------------------------------------------------------------------- delivery


async def test_item_429_retried_and_mapping_error_dropped_counted_logged(es, caplog):
    exporter = await started(config(es))
    try:
        es.es.item_429 = 2
        t = time.time_ns()
        assert (await exporter.export_metrics([gauge("a", 1.0, t, k="1"), gauge("a", 2.0, t, k="2"),
                                               gauge("a", 3.0, t, k="3")])).ok
        assert sorted(d["a"] for d in es.es.docs(STREAM)) == [1.0, 2.0, 3.0]
        assert any(m.name.endswith(".retries") and m.value == 2 for m in exporter.self_metrics())
        with caplog.at_level(logging.WARNING, "monbridge.elasticsearch.export"):
            # "a" is a number in this data stream: "a.b" cannot be mapped under it
            # (one document per attribute set: "c" with other attributes is written, "a.b" dropped alone)
            assert (await exporter.export_metrics([gauge("a.b", 1.0, k="9"), gauge("c", 1.0, k="8")])).ok
        assert [d["c"] for d in es.es.docs(STREAM) if "c" in d] == [1.0]
        assert not any("a.b" in d for d in es.es.docs(STREAM))
        assert dropped(exporter) == {"document_parsing_exception": 1.0}
        assert "document_parsing_exception" in caplog.text and "[a.b]" in caplog.text
        assert [e[1] for e in es.es.refused] == [400]
        es.es.refused.clear()
    finally:
        await stop(exporter)


async def test_points_older_than_the_data_streams_range_dropped_counted_logged(es, caplog):
    """Elasticsearch takes time series documents from now - 2h (its look-back): an older point
    (held in the queue through a long outage) is dropped with its reason, the others written."""
    exporter = await started(config(es))
    try:
        old = time.time_ns() - 3 * 3600 * 10**9
        with caplog.at_level(logging.WARNING, "monbridge.elasticsearch.export"):
            assert (await exporter.export_metrics([gauge("g", 1.0, old), gauge("g", 2.0)])).ok
        assert [d["g"] for d in es.es.docs(STREAM)] == [2.0]
        assert dropped(exporter) == {"illegal_argument_exception": 1.0}
        assert "outside of ranges of currently writable indices" in caplog.text
        es.es.refused.clear()
    finally:
        await stop(exporter)


async def test_alert_times_that_are_no_dates_are_written_as_now(es):
    exporter = await started(config(es))
    try:
        await exporter.export_alerts([Alert("x", "Odd", "info", starts_at=float("inf"), fingerprint="f")])
        assert await exporter.force_flush(5)
        (e,) = es.es.docs(ALERTS)
        assert e["event.start"].startswith(time.strftime("%Y-", time.gmtime())) and e["event.severity"] == 6
        assert not es.es.refused
    finally:
        await stop(exporter)


async def test_whole_request_503_retried(es):
    exporter = await started(config(es))
    try:
        es.es.request_status = (503, 2)
        r = await exporter.export_metrics([gauge("g", 4.0)])
        assert r.status.value == "retryable" and "HTTP 503" in r.reason
        assert await exporter.force_flush(10)
        assert [d["g"] for d in es.es.docs(STREAM)] == [4.0]
        assert es.es.bulk_requests == 3
    finally:
        await stop(exporter)


async def test_whole_request_400_dropped_counted_logged(es, caplog):
    exporter = await started(config(es))
    try:
        es.es.request_status = (400, 1)
        with caplog.at_level(logging.WARNING, "monbridge.elasticsearch.export"):
            assert (await exporter.export_metrics([gauge("g", 1.0, k="1"), gauge("g", 2.0, k="2")])).ok
        assert dropped(exporter) == {"http_400": 2.0} and not es.es.docs(STREAM)
        assert "2 documents dropped: http_400" in caplog.text
        assert (await exporter.export_metrics([gauge("g", 3.0)])).ok  # what comes next is not held up
        assert [d["g"] for d in es.es.docs(STREAM)] == [3.0]
    finally:
        await stop(exporter)


async def test_outage_then_recovery_loses_nothing(es, tmp_path):
    exporter = await started(config(es, tmp_path))
    try:
        es.stop()
        r = await exporter.export_metrics([gauge("g", float(i), k=str(i)) for i in range(5)])
        assert not r.ok and r.status.value == "retryable"
        es.start()
        assert await exporter.force_flush(10)
        assert sorted(d["g"] for d in es.es.docs(STREAM)) == [0.0, 1.0, 2.0, 3.0, 4.0]
    finally:
        await stop(exporter)


async def test_templates_installed_before_the_first_write_when_the_cluster_was_down_at_start(es):
    es.stop()
    exporter = await started(config(es))
    try:
        assert not (await exporter.export_metrics([gauge("g", 1.0)])).ok
        es.start()
        assert await exporter.force_flush(10)
        assert "monbridge-metrics-monbridge" in es.es.index_templates
        assert [d["g"] for d in es.es.docs(STREAM)] == [1.0]
        assert es.es.streams[STREAM]["template"]["settings"]["index.mode"] == "time_series"
    finally:
        await stop(exporter)


async def test_restart_on_the_same_queue_loses_nothing(es, tmp_path):
    es.stop()
    exporter = await started(config(es, tmp_path))
    r = await exporter.export_metrics([gauge("g", float(i), k=str(i)) for i in range(3)])
    assert not r.ok
    await stop(exporter, 0.2)
    es.start()
    exporter = await started(config(es, tmp_path))
    try:
        assert await exporter.force_flush(10)
        assert sorted(d["g"] for d in es.es.docs(STREAM)) == [0.0, 1.0, 2.0]
    finally:
        await stop(exporter)


async def test_bulk_requests_sized_by_documents_and_bytes(es):
    exporter = await started(config(es, bulk={"max_documents": 4, "max_bytes": 2048}))
    try:
        t = time.time_ns()
        assert (await exporter.export_metrics([gauge("g", float(i), t, k=str(i)) for i in range(10)])).ok
        assert len(es.es.docs(STREAM)) == 10 and es.es.bulk_requests == 3
        big = "x" * 3000
        assert (await exporter.export_metrics([gauge("g", 1.0, t, k=big)])).ok
        assert dropped(exporter) == {"too_large": 1.0}
    finally:
        await stop(exporter)


# --------------------------------------------------------------------------- alerts


async def test_alert_lifecycle_as_ecs_events_in_order(es, tmp_path):
    exporter = await started(config(es, tmp_path))
    try:
        a = Alert("a1", "HighLatency", "critical", labels={"service": "api", "alertname": "HighLatency"},
                  annotations={"summary": "p99 too high", "trace_id": "0123456789abcdef0123456789abcdef"},
                  value=2.5, fingerprint="fp1", starts_at=time.time() - 10)
        b = Alert("b1", "DiskFull", "warning", labels={"host": "h1"}, fingerprint="fp2")
        await exporter.export_alerts([a, b])
        await exporter.export_alerts([a, b])  # nothing changed: nothing written
        a.state = AlertState.ACKNOWLEDGED
        await exporter.export_alerts([a, b])
        await exporter.export_alerts([a])  # b gone: resolved
        await stop(exporter)
        exporter = await started(config(es, tmp_path))
        await exporter.export_alerts([])  # a resolved while monbridge was down
        assert await exporter.force_flush(5)
        events = [(e["rule.name"], e["event.action"]) for e in es.es.docs(ALERTS)]
        assert events == [("HighLatency", "firing"), ("DiskFull", "firing"), ("HighLatency", "acknowledged"),
                          ("DiskFull", "resolved"), ("HighLatency", "resolved")]
        first = es.es.docs(ALERTS)[0]
        assert first["event.kind"] == "alert" and first["event.severity"] == 2
        assert first["labels"] == {"service": "api", "alertname": "HighLatency", "severity": "critical"}
        assert first["trace.id"] == "0123456789abcdef0123456789abcdef"
        assert "p99 too high" in first["message"]
        assert "event.end" in es.es.docs(ALERTS)[-1]
        check_ecs(es.es.docs(ALERTS))
        assert not es.es.refused
    finally:
        await stop(exporter)


def _agent_config(es: StandInServer, tmp_path: Path, value: float, otlp: str) -> dict[str, Any]:
    return {"alerting": {"state_dir": str(tmp_path / "state")}, "plugins": [
        {"plugin_id": "monitoring.metrics.example", "config": {"collection_interval": 0.2, "value": value}},
        {"plugin_id": "monitoring.alerts.rules", "config": {"evaluation_interval": 0.5, "rules": [
            {"name": "ExampleHigh", "metric": "example.value", "match": {"source": "example"}, "aggregate": "max",
             "op": ">", "threshold": 10, "for": 0, "severity": "critical", "labels": {"team": "infra"},
             "annotations": {"summary": "example.value is {{ value }}"}}]}},
        {"plugin_id": "monitoring.integration.otlp", "config": {"endpoint": otlp, "interval": 1}},
        {"plugin_id": "monitoring.integration.elasticsearch", "config": {
            "hosts": [es.url], "api_key": API_KEY, "interval": 1, "export_metrics": False, "logs": True,
            "queue": {"path": str(tmp_path / "esq"), "min_backoff": 0.05}}},
    ]}


def test_alert_engine_lifecycle_to_ecs_events_with_the_alert_s_trace(es, run_monbridge, otlp_receiver, tmp_path):
    """A full agent: a rule on a pipeline metric fires, the alert is acknowledged over the API and
    resolves; each transition reaches Elasticsearch once, in order, as an ECS alert event carrying
    the trace and span ids of the alert's span (the span the OTLP integration exports beside it);
    the agent's own log lines about the alert arrive as log documents."""
    mb = run_monbridge(_agent_config(es, tmp_path, 1, otlp_receiver.endpoint))
    reload_with(mb, _agent_config(es, tmp_path, 50, otlp_receiver.endpoint))  # the metric crosses the threshold
    [alert] = wait_until(lambda: api(mb.url, "GET", "/api/v1/alerts"), what="the alert firing")

    def events() -> list[dict[str, Any]]:
        return [d for d in es.es.docs(ALERTS) if d["event.id"] == alert["fingerprint"]]

    wait_until(events, what="the firing event in Elasticsearch")
    assert api(mb.url, "POST", f"/api/v1/alerts/{alert['id']}/ack")["state"] == "acknowledged"
    wait_until(lambda: len(events()) >= 2, what="the acknowledged event")
    reload_with(mb, _agent_config(es, tmp_path, 1, otlp_receiver.endpoint))  # back under the threshold
    wait_until(lambda: len(events()) >= 3, what="the resolved event")
    time.sleep(2.5)  # two more alert rounds: a transition written twice would show now
    got = events()
    assert [e["event.action"] for e in got] == ["firing", "acknowledged", "resolved"]
    first = got[0]
    assert first["event.kind"] == "alert" and first["rule.name"] == "ExampleHigh" and first["event.severity"] == 2
    assert first["labels"] == {"alertname": "ExampleHigh", "severity": "critical", "team": "infra",
                               "source": "example"}
    assert first["message"].startswith("ExampleHigh [critical] firing (value 50): example.value is 50")
    assert "event.end" in got[2] and "event.end" not in got[0]
    assert len({e["event.start"] for e in got}) == 1

    [span] = otlp_receiver.wait_for_signal("spans", lambda x: attributes(x.attributes).get("alert.id") == alert["id"])
    assert {e["trace.id"] for e in got} == {span.trace_id.hex()}
    assert {e["span.id"] for e in got} == {span.span_id.hex()}
    check_ecs(got)
    logs = wait_until(lambda: [d for d in es.es.docs(LOGS) if d["log.logger"].startswith("monbridge.alerting")
                               and alert["id"] in d["message"]], what="the engine's log lines about the alert")
    assert any("firing" in d["message"] for d in logs)
    check_ecs(es.es.docs(LOGS))
    assert not es.es.refused, es.es.refused
    assert API_KEY not in mb.log_text()


# --------------------------------------------------------------------------- hostile answers


@pytest.mark.parametrize("mode", ["large", "chunked", "gzip"])
async def test_hostile_bulk_answers_are_refused_while_read(es, caplog, mode):
    """An answer larger than ``max_response_bytes`` (with its length, without one, or a gzip bomb)
    is refused as it is read: its request's documents are dropped, counted and logged, and the
    export goes on."""
    exporter = await started(config(es, max_response_bytes=1 << 20))
    try:
        es.es.hostile = [mode]
        es.es.hostile_bytes = 8 << 20
        assert (await exporter.export_metrics([gauge("g", 1.0)])).ok
        assert dropped(exporter) == {"answer_too_large": 1.0}
        assert "max_response_bytes" in caplog.text
        assert (await exporter.export_metrics([gauge("g", 2.0)])).ok
        assert [d["g"] for d in es.es.docs(STREAM)] == [2.0]
    finally:
        await stop(exporter)


async def test_large_answers_are_parsed_off_the_event_loop(es, monkeypatch):
    """A large answer is read in a worker thread, whether every item was created (read without
    parsing each item: ``client.bulk_fast_path``) or not (parsed whole by the client's parser);
    the exporter accounts for every item either way."""
    import integrations.elasticsearch.client as client_module

    exporter = await started(config(es, request_timeout=60))
    ser = exporter.client.transport.serializers.get_serializer("application/json")
    seen: list[tuple[int, bool]] = []
    answers: list[Any] = []
    inner = ser.inner
    parse = client_module.parse_answer

    class Recording:
        mimetype = inner.mimetype

        def loads(self, data: bytes) -> Any:
            seen.append((len(data), threading.current_thread() is threading.main_thread()))
            return inner.loads(data)

    def recording_parse(raw: bytes, mimetype: str | None, serializers: dict[str, Any]) -> Any:
        out = parse(raw, mimetype, serializers)
        answers.append((len(raw), threading.current_thread() is threading.main_thread(), out.value))
        return out

    ser.inner = Recording()
    monkeypatch.setattr(client_module, "parse_answer", recording_parse)
    try:
        n = 4000  # an answer of ~100 kB (25 bytes an item with the export's filter_path)
        assert (await exporter.export_metrics([gauge("g", float(i), shard=str(i)) for i in range(n)])).ok
        assert len(es.es.docs(STREAM)) == n and exporter.documents_sent == n
        big = [(on_loop, value) for size, on_loop, value in answers if size >= OFF_LOOP_BYTES]
        assert [on_loop for on_loop, _ in big] == [False], answers
        items = big[0][1]["items"]
        assert len(items) == n and all(it is items[0] for it in items)  # every item created: read once
        assert not [size for size, _ in seen if size >= OFF_LOOP_BYTES]  # ... not by the whole parser
        es.es.item_429 = 1  # one item refused: the answer's items are parsed, each
        answers.clear()
        assert (await exporter.export_metrics([gauge("g", float(i), shard=str(i)) for i in range(n)])).ok
        assert len(es.es.docs(STREAM)) == 2 * n and exporter.documents_sent == 2 * n and exporter.retries == 1
        big = [(on_loop, value) for size, on_loop, value in answers if size >= OFF_LOOP_BYTES]
        assert [on_loop for on_loop, _ in big] == [False], answers
        assert big[0][1]["errors"] is True and [it["create"]["status"] for it in big[0][1]["items"]] == [429] + [201] * (n - 1)
        assert [on_loop for size, on_loop in seen if size >= OFF_LOOP_BYTES] == [False], seen
    finally:
        await stop(exporter)


# --------------------------------------------------------------------------- secrets


async def test_secrets_in_no_log_line(es, caplog):
    caplog.set_level(logging.DEBUG)
    for auth in ({"api_key": API_KEY}, {"basic_auth": {"username": "u", "password": PASSWORD}}):
        cfg = ElasticsearchConfig.model_validate({"hosts": [es.url], "request_timeout": 1, **auth,
                                                  "queue": {"min_backoff": 0.05, "max_backoff": 0.1}})
        exporter = await started(cfg)
        try:
            assert (await exporter.export_metrics([gauge("g", 1.0)])).ok
            es.stop()
            assert not (await exporter.export_metrics([gauge("g", 2.0)])).ok
            es.start()
            assert repr(exporter).count("es-api") == 0
        finally:
            await stop(exporter)
    seen = " ".join(h.get("Authorization", "") for h in es.es.headers_seen)
    assert "ApiKey " in seen and "Basic " in seen
    assert API_KEY not in caplog.text and PASSWORD not in caplog.text


# --------------------------------------------------------------------------- the agent's own logs


async def test_own_logs_as_ecs_log_documents(es, caplog):
    """With ``logs: true`` the agent's log records at ``log_level`` and above arrive in
    ``logs-monbridge.log-<namespace>`` as ECS log documents the template takes, redacted."""
    from bridge.logs import secret_values

    caplog.set_level(logging.DEBUG)
    secret_values.set([API_KEY])
    exporter = await started(config(es, logs=True, log_level="warning"))
    try:
        test_log = logging.getLogger("monbridge.test.elastic")
        test_log.info("below the level: not written")
        test_log.warning("disk %s nearly full (key %s)", "/var", API_KEY)
        try:
            raise ValueError(f"broken with {API_KEY}")
        except ValueError:
            test_log.exception("collect failed")

        def mine_all() -> list[dict[str, Any]] | None:
            docs = [d for d in es.es.docs(LOGS) if d["log.logger"] == "monbridge.test.elastic"]
            return docs if len(docs) >= 2 else None

        mine = await until(mine_all, "the log records in Elasticsearch")
        assert [d["log.level"] for d in mine] == ["warning", "error"]
        warn, exc = mine
        assert warn["message"] == "disk /var nearly full (key <secret>)"
        assert warn["event.dataset"] == "monbridge.log" and warn["data_stream.dataset"] == "monbridge.log"
        assert warn["log.origin.function"] == "test_own_logs_as_ecs_log_documents"
        assert warn["log.origin.file.name"] == "test_elastic_export.py" and isinstance(warn["log.origin.file.line"], int)
        assert warn["process.pid"] == os.getpid() and warn["service.name"] == "monbridge"
        assert exc["error.type"] == "ValueError" and exc["error.message"] == "broken with <secret>"
        assert "Traceback" in exc["error.stack_trace"] and API_KEY not in exc["error.stack_trace"]
        assert not any("below the level" in d["message"] for d in es.es.docs(LOGS))
        assert LOGS_TEMPLATE in es.es.index_templates
        check_ecs(es.es.docs(LOGS))
        assert not es.es.refused, es.es.refused
        assert {m.name: m.value for m in exporter.self_metrics()}["monbridge.elasticsearch.export.logs.sent"] >= 2
    finally:
        secret_values.set([])
        await stop(exporter)
    assert not any(isinstance(h, LogShipper) for h in logging.getLogger().handlers), "the handler outlives the export"


async def test_log_records_beyond_the_buffer_dropped_and_counted(es, caplog):
    caplog.set_level(logging.INFO)
    exporter = await started(config(es, logs=True, log_level="warning"))
    try:
        shipper = next(h for h in logging.getLogger().handlers if isinstance(h, LogShipper))
        shipper.max_buffered = 3
        for i in range(10):
            logging.getLogger("monbridge.test.flood").warning("flood %d", i)
        await until(lambda: dropped(exporter).get("log_buffer_full"), "the drop counted")
        assert dropped(exporter)["log_buffer_full"] >= 7
        assert "log_buffer_full" in caplog.text
        flood = await until(lambda: [d["message"] for d in es.es.docs(LOGS)
                                     if d["log.logger"] == "monbridge.test.flood"], "the buffered records")
        assert flood == ["flood 0", "flood 1", "flood 2"]
    finally:
        await stop(exporter)


def test_log_level_is_checked():
    with pytest.raises(ValueError, match="log_level"):
        ElasticsearchConfig.model_validate({"hosts": ["http://127.0.0.1:1"], "logs": True, "log_level": "loud"})
