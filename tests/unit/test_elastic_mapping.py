"""The Elasticsearch export's document mapping: grouping, data stream routing, ECS and OTel modes,
histograms, summaries; every ECS field written has the type ECS gives it (the in-repo ECS table)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from bridge.api import ExponentialHistogramValue, HistogramValue, MetricKind, SummaryValue
from integrations.elasticsearch import ecs
from integrations.elasticsearch.config import ElasticsearchConfig
from integrations.elasticsearch.ecs_gen import generate, parse
from integrations.elasticsearch.events import MAX_MESSAGE_CHARS, LogShipper, log_document, transition_document
from integrations.elasticsearch.export import pack
from integrations.elasticsearch.mapping import Mapper, Point, histogram_field
from integrations.elasticsearch.templates import LOGS_TEMPLATE, component_templates, index_templates

TSV = Path(__file__).resolve().parents[1] / "data" / "elastic" / "ecs-fields.tsv"
ECS_TYPES = {f: t for f, t, _ in parse(TSV.read_text())}
T = 1_700_000_000_123_000_000


def cfg(**kw: Any) -> ElasticsearchConfig:
    return ElasticsearchConfig.model_validate({"hosts": ["http://127.0.0.1:9200"], **kw})


def docs(mapper: Mapper, points: list[Point]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(json.loads(a), json.loads(d)) for a, d in mapper.operations(points)]


def test_generated_table_is_current() -> None:
    assert (Path(ecs.__file__).read_text()) == generate(TSV.read_text())


def test_one_document_per_stream_timestamp_and_attributes() -> None:
    m = Mapper(cfg(datasets=[{"prefix": "node_", "dataset": "node"}, {"prefix": "node_cpu", "dataset": "cpu",
                                                                       "namespace": "prod"}]))
    out = docs(m, [
        Point("up", MetricKind.GAUGE, 1.0, {"job": "a"}, T),
        Point("scrape_duration", MetricKind.GAUGE, 0.5, {"job": "a"}, T),
        Point("up", MetricKind.GAUGE, 0.0, {"job": "b"}, T),
        Point("node_load1", MetricKind.GAUGE, 2.0, {"job": "a"}, T),
        Point("node_cpu_seconds_total", MetricKind.COUNTER, 7.0, {"job": "a"}, T),
    ])
    assert [(a["create"]["_index"], d.get("labels.job")) for a, d in out] == [
        ("metrics-monbridge-default", "a"), ("metrics-monbridge-default", "b"), ("metrics-node-default", "a"),
        ("metrics-cpu-prod", "a")]
    a, d = out[0]
    assert d["up"] == 1.0 and d["scrape_duration"] == 0.5 and d["@timestamp"] == T // 1_000_000
    assert a["create"]["dynamic_templates"] == {"up": "gauge_double", "scrape_duration": "gauge_double"}
    assert out[3][1]["node_cpu_seconds_total"] == 7.0
    assert out[3][0]["create"]["dynamic_templates"] == {"node_cpu_seconds_total": "counter_double"}
    assert d["data_stream.dataset"] == "monbridge" and out[3][1]["data_stream.namespace"] == "prod"
    assert d["_metric_names_hash"] != out[2][1]["_metric_names_hash"]


def test_ecs_mode_maps_attributes_and_metrics_with_ecs_types() -> None:
    m = Mapper(cfg(), {"service.name": "api", "host.name": "h1", "host.ip": "10.0.0.1",
                       "deployment.environment.name": "prod"})
    out = docs(m, [
        Point("system.cpu.utilization", MetricKind.GAUGE, 0.25, {"http.response.status_code": 200}, T),
        Point("system.uptime", MetricKind.COUNTER, 12.6, {"http.response.status_code": 200}, T),
        Point("host.weird", MetricKind.GAUGE, 1.0, {"host.ip": "not-an-ip", "a.b": True}, T),
    ])
    (_, d1), (a2, d2) = out
    assert d1["service.name"] == "api" and d1["host.name"] == "h1" and d1["service.environment"] == "prod"
    assert d1["http.response.status_code"] == 200 and d1["host.cpu.usage"] == 0.25 and d1["host.uptime"] == 13
    assert d2["labels.host_ip"] == "not-an-ip" and d2["labels.a_b"] == "true"
    assert d2["metrics.host.weird"] == 1.0 and a2["create"]["dynamic_templates"] == {"metrics.host.weird": "gauge_double"}
    for _, d in out:
        for f, v in d.items():
            if f in ECS_TYPES:
                typ = ECS_TYPES[f]
                ok = {"keyword": isinstance(v, str), "constant_keyword": isinstance(v, str),
                      "long": isinstance(v, int) and not isinstance(v, bool), "ip": isinstance(v, str),
                      "date": isinstance(v, int), "scaled_float": isinstance(v, float)}[typ]
                assert ok, (f, typ, v)


def test_otel_mode_keeps_names() -> None:
    m = Mapper(cfg(mapping="otel"), {"service.name": "api"})
    ((a, d),) = docs(m, [Point("http.server.duration", MetricKind.GAUGE, 3.0, {"http.method": "GET"}, T)])
    assert d["resource.attributes.service.name"] == "api" and d["attributes.http.method"] == "GET"
    assert d["metrics.http.server.duration"] == 3.0
    assert a["create"]["dynamic_templates"] == {"metrics.http.server.duration": "gauge_double"}


def test_histograms_and_summaries() -> None:
    h = HistogramValue((1.0, 2.0, 4.0), (3, 0, 2, 1), 10.0, 6)
    assert histogram_field(h) == {"values": [0.5, 3.0, 4.0], "counts": [3, 2, 1]}
    assert histogram_field(HistogramValue((-1.0, 1.0), (1, 1, 0), 0.0, 2)) == {"values": [-1.0, 0.0], "counts": [1, 1]}
    assert histogram_field(HistogramValue((1.0,), (0, 0), 0.0, 0)) is None
    e = ExponentialHistogramValue(0, 2, 0, (1, 3), -1, (4,), 10)
    assert histogram_field(e) == {"values": [-0.75, 0.0, 1.5, 3.0], "counts": [4, 2, 1, 3]}
    m = Mapper(cfg())
    ((a, d),) = docs(m, [Point("lat", MetricKind.HISTOGRAM, h, {}, T),
                         Point("rpc", MetricKind.SUMMARY, SummaryValue(((0.5, 1.0), (0.99, 9.0)), 20.0, 4), {}, T),
                         Point("nan", MetricKind.GAUGE, float("nan"), {}, T)])
    assert d["lat"] == {"values": [0.5, 3.0, 4.0], "counts": [3, 2, 1]}
    assert (d["rpc.sum"], d["rpc.count"], d["rpc.quantile_0_5"], d["rpc.quantile_0_99"]) == (20.0, 4.0, 1.0, 9.0)
    assert a["create"]["dynamic_templates"] == {"lat": "histogram", "rpc.sum": "counter_double",
                                                "rpc.count": "counter_double", "rpc.quantile_0_5": "gauge_double",
                                                "rpc.quantile_0_99": "gauge_double"}
    assert "nan" not in d and m.counts.non_finite == 1


def test_templates_use_ecs_types() -> None:
    comp = component_templates(cfg())["monbridge-metrics@mappings"]["template"]["mappings"]

    def walk(props: dict[str, Any], prefix: str = "") -> dict[str, str]:
        out = {}
        for k, v in props.items():
            out.update(walk(v["properties"], prefix + k + ".") if "properties" in v else {prefix + k: v["type"]})
        return out

    fields = walk(comp["properties"])
    assert fields["host.name"] == "keyword" and fields["host.cpu.usage"] == "scaled_float"
    for f, t in fields.items():
        if f in ECS_TYPES:
            assert ECS_TYPES[f] == t, f
    idx = index_templates(cfg(datasets=[{"prefix": "x", "dataset": "xs"}]))
    assert {n for n in idx} == {"monbridge-metrics-monbridge", "monbridge-metrics-xs", "monbridge-alerts"}
    assert idx["monbridge-metrics-xs"]["index_patterns"] == ["metrics-xs-*"]


def test_pack_bounds() -> None:
    ops = [(b'{"create":{}}', b'{"a":' + str(i).encode() + b"}") for i in range(10)]
    bodies, big = pack(ops, 3, 1 << 20)
    assert [n for _, n in bodies] == [3, 3, 3, 1] and not big
    assert b"".join(b for b, _ in bodies).count(b"\n") == 20
    bodies, big = pack([(b"x" * 10, b"y" * 2000), *ops[:2]], 100, 1024)
    assert big == [0] and [n for _, n in bodies] == [2]


def _record(msg: str, *args: Any, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise KeyError("boom")
        except KeyError:
            exc_info = sys.exc_info()
    return logging.LogRecord("monbridge.x", logging.ERROR, "/a/b/mod.py", 12, msg, args, exc_info, "fn")


def test_log_documents_are_ecs_and_bounded() -> None:
    d = log_document(_record("a %s b", "x"), "prod")
    assert d["message"] == "a x b" and d["log.level"] == "error" and d["log.logger"] == "monbridge.x"
    assert d["log.origin.file.name"] == "mod.py" and d["log.origin.file.line"] == 12 and d["log.origin.function"] == "fn"
    assert d["data_stream.namespace"] == "prod" and d["event.kind"] == "event" and "error.type" not in d
    assert log_document(_record("x" * 100_000), "p")["message"] == "x" * MAX_MESSAGE_CHARS
    odd = log_document(_record("a %d format with too few arguments %s", 1), "p")  # a broken call, not an error
    assert odd["message"].startswith("a %d format with too few arguments %s (unformattable arguments")
    e = log_document(_record("failed", exc=True), "p")
    assert e["error.type"] == "KeyError" and "Traceback" in e["error.stack_trace"]


def test_log_shipper_buffer_is_bounded_and_counts_what_it_drops() -> None:
    shipper = LogShipper("default", logging.INFO, max_buffered=3)
    logger = logging.getLogger("monbridge.test.bounded")
    logger.addHandler(shipper)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("below the level")
        for i in range(5):
            logger.warning("m%d", i)
    finally:
        logger.removeHandler(shipper)
    docs, dropped = shipper.take()
    assert [d["message"] for d in docs] == ["m0", "m1", "m2"] and dropped == 2
    assert shipper.take() == ([], 0)


def test_log_shipper_ignores_records_logged_while_it_builds_one() -> None:
    """A record logged from inside the handler (a ``__str__`` of an argument that logs) would
    recurse; it is left out."""
    shipper = LogShipper("default", logging.INFO)
    inner = logging.getLogger("monbridge.test.inner")
    inner.addHandler(shipper)
    inner.propagate = False
    try:
        class Loud:
            def __str__(self) -> str:
                inner.error("from inside")
                return "loud"

        inner.error("outer %s", Loud())
        docs, _ = shipper.take()
        assert [d["message"] for d in docs] == ["outer loud"]
    finally:
        inner.removeHandler(shipper)
        inner.propagate = True


def test_logs_template_only_with_logs() -> None:
    assert LOGS_TEMPLATE not in index_templates(cfg())
    t = index_templates(cfg(logs=True))[LOGS_TEMPLATE]
    assert t["index_patterns"] == ["logs-monbridge.log-*"] and "data_stream" in t


def test_names_and_values_that_are_not_utf8_map_to_json() -> None:
    """A name or attribute with a lone surrogate (bytes decoded with surrogateescape) is escaped,
    not an error (found by tests/fuzz/test_fuzz_elastic_bulk_answer.py)."""
    m = Mapper(cfg())
    ((a, d),) = docs(m, [Point("\udc80", MetricKind.GAUGE, 1.0, {"k\udc80": "v\udc80"}, T)])
    assert d["\udc80"] == 1.0 and d["labels.k\udc80"] == "v\udc80"


def test_transition_records_as_alert_events() -> None:
    attrs = {"monbridge.alert.event": "transition", "alert.id": "a1", "alert.name": "High", "alert.severity": "warning",
             "alert.state": "resolved", "alert.fingerprint": "fp", "alert.starts_at": 1_700_000_000.0,
             "alert.value": 3.0, "alert.label.team": "infra", "alert.label.k.x": "v",
             "alert.annotation.summary": "too high"}
    d = transition_document("prod", attrs, 1_700_000_060 * 10**9, 0xABC, 0x12)
    assert d is not None
    assert d["event.action"] == "resolved" and d["event.id"] == "fp" and d["rule.name"] == "High"
    assert d["trace.id"] == "00000000000000000000000000000abc" and d["span.id"] == "0000000000000012"
    assert d["event.start"] == "2023-11-14T22:13:20.000Z" and d["event.end"] == "2023-11-14T22:14:20.000Z"
    assert d["labels"] == {"team": "infra", "k_x": "v", "severity": "warning"} and d["event.severity"] == 4
    assert d["message"] == "High [warning] resolved (value 3): too high"
    assert d["data_stream.namespace"] == "prod"
    firing = transition_document("prod", {**attrs, "alert.state": "firing"}, None, 0, 0)
    assert firing is not None and "event.end" not in firing and "trace.id" not in firing and "span.id" not in firing
    assert transition_document("prod", {**attrs, "monbridge.alert.event": "notification"}, None, 1, 1) is None
