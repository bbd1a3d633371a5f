"""The loss ledger: every place that drops data counts it in ``monbridge_dropped_total{component,
reason, plugin}``, for the plugin it dropped it for, shown per plugin in ``/api/v1/plugins``."""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
from collections import Counter
from collections.abc import Sequence

import aiohttp
from prometheus_client.parser import text_string_to_metric_families as parse_text

from bridge.alerting.notify import PermanentDeliveryError
from bridge.alerting.outbox import Outbox
from bridge.api import Metric, MetricKind
from bridge.config import parse_config
from bridge.ledger import LEDGER, LossLedger, acting_for, count_loss, loss_counter
from bridge.pipeline import Pipeline
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime
from bridge.supervisor import SupervisorSettings
from tests.unit.plugins_for_tests import SteadyCollector
from tests.unit.test_outbox_lanes import STALE, notification

PID = "monitoring.integration.lossy"


class Delta:
    """The ledger's counts since it was made."""

    def __init__(self) -> None:
        self.before = LEDGER.counts()

    def __call__(self, component: str, reason: str | None = None, plugin: str | None = None) -> float:
        now = LEDGER.counts()
        return sum(n - self.before.get(k, 0) for k, n in now.items()
                   if k[0] == component and reason in (None, k[1]) and plugin in (None, k[2]))


# --------------------------------------------------------------------------- the ledger itself


def test_counts_by_component_reason_and_the_running_plugin():
    led = LossLedger()
    led.count("scrape", "duplicate", 3, plugin="a")
    led.count("scrape", "duplicate", 2, plugin="a")
    with acting_for("b"):
        led.count("scrape", "sample_limit", 7)
    led.count("pipeline", "cardinality")  # the agent's own: plugin ""
    led.count("scrape", "nothing", 0, plugin="a")  # nothing dropped: no key
    assert led.counts() == {("scrape", "duplicate", "a"): 5, ("scrape", "sample_limit", "b"): 7,
                            ("pipeline", "cardinality", ""): 1}
    assert led.of_plugin("a") == {"scrape": {"duplicate": 5}}
    assert led.total("scrape") == 12 and led.total("scrape", plugin="b") == 7


def test_a_loss_counter_counts_every_increment_in_the_ledger():
    d = Delta()
    with acting_for("made-for"):
        c = loss_counter("part")
    c["a"] += 2
    c[("check_x", "b")] += 1  # a (name, reason) key counts under its reason
    with acting_for("running"):
        c["a"] += 3  # the running plugin's, when there is one
    c.update({"a": 1}, b=4)
    c["a"] -= 1  # not a drop
    assert dict(c) == {"a": 5, ("check_x", "b"): 1, "b": 4}
    assert d("part", "a", "made-for") == 3 and d("part", "a", "running") == 3 and d("part", "b", "made-for") == 5
    # Copies are plain counters: counting them again counts nothing twice.
    for other in (Counter(c), copy.copy(c)):
        other["a"] += 10
    assert d("part", "a") == 6


def test_a_loss_counter_made_for_a_plugin_counts_its_threads_drops_for_it():
    d = Delta()
    with acting_for("p"):
        c = loss_counter("part")

    def reader() -> None:  # a thread does not inherit the running plugin
        for _ in range(100):
            c["x"] += 1

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert d("part", "x", "p") == 400


def test_a_new_reason_past_the_bound_counts_as_other(monkeypatch):
    from bridge import ledger

    monkeypatch.setattr(ledger, "_MAX_KEYS", 2)
    led = LossLedger()
    for r in ("a", "b", "c", "d"):
        led.count("part", r, plugin="p")
    assert led.counts() == {("part", "a", "p"): 1, ("part", "b", "p"): 1, ("part", "other", "p"): 2}


def test_count_loss_with_detail_logs_once_a_minute(caplog):
    led = LossLedger()
    for _ in range(3):
        led.count("notification", "refused", plugin="n", detail="the receiver said 400")
    lines = [r.getMessage() for r in caplog.records if "notification dropped" in r.getMessage()]
    assert lines == ["notification dropped 1 for plugin n (refused): the receiver said 400; counted in "
                     "monbridge_dropped_total, logged at most once a minute"]
    assert led.total("notification") == 3


# --------------------------------------------------------------------------- each place that drops


def test_the_pipeline_counts_its_drops_for_the_source_s_plugin():
    d = Delta()
    p = Pipeline(cardinality_limit=2)
    g = MetricKind.GAUGE
    p.record("monitoring.metrics.a", [Metric("x", g, float(i), attributes={"i": str(i)}) for i in range(5)])
    p.ingest("monitoring.integration.b", 300).part("otlp").push([Metric("x", MetricKind.COUNTER, 1.0)])
    assert p.dropped == {"cardinality": 3, "conflict": 1}
    assert d("pipeline", "cardinality", "monitoring.metrics.a") == 3
    assert d("pipeline", "conflict", "monitoring.integration.b") == 1


def test_scrape_drops_are_counted():
    from integrations.prometheus.plugin import PrometheusIntegration

    d = Delta()
    plugin = PrometheusIntegration()
    with acting_for(PID):
        plugin._count("samples_dropped", "duplicate", 4)  # where a scrape's duplicates are counted
        plugin._count("scrapes", "success")  # not a drop
    assert d("scrape", "duplicate", PID) == 4 and d("scrape") == 4


async def test_remote_write_drops_are_counted():
    from integrations.prometheus.config import RemoteWriteConfig
    from integrations.prometheus.remote_write import RemoteWriter

    d = Delta()
    with acting_for(PID):
        w = RemoteWriter(RemoteWriteConfig(url="http://127.0.0.1:9/api/v1/write"))
        await w.stop(0.1)
        w.append([(b"series", 1.0, 1000), (b"series", 2.0, 2000)])
    assert w.dropped["stopped"] == 2
    assert d("remote_write", "stopped", PID) == 2


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_otlp_export_failures_are_counted():
    from integrations.otlp import OtlpIntegration

    d = Delta()
    plugin = OtlpIntegration()
    p = Pipeline()
    p.record("s", [Metric("x", MetricKind.GAUGE, 1.0, attributes={"i": str(i)}) for i in range(3)]
             + [Metric("y", MetricKind.COUNTER, 2.0)])
    with acting_for(PID):
        await plugin.initialize({"endpoint": f"http://127.0.0.1:{closed_port()}", "protocol": "http/protobuf",
                                 "timeout": 1})
        try:
            result = await plugin.export(p.batch(), 1.0)
        finally:
            await plugin.shutdown()
    assert not result.ok
    assert d("otlp_export", result.status.value, PID) == 4  # the data points of the round's one request


def test_otlp_encoder_tells_the_points_of_each_request():
    """A push split into several requests: each request's count (what a failed send of it
    loses) is the data points it holds, and they add up to every point of the round."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from integrations.otlp_wire import OtlpEncoder

    p = Pipeline()
    p.record("s", [Metric("x", MetricKind.GAUGE, float(i), attributes={"i": str(i), "pad": "v" * 40})
                   for i in range(300)] + [Metric("y", MetricKind.COUNTER, 1.0)])
    enc = OtlpEncoder(max_request_bytes=4096)
    fams = [(f, list(f.series.values())) for f in p.families()]
    counts = []
    for body in enc.requests(fams, None):
        req = ExportMetricsServiceRequest.FromString(body)
        points = sum(len(getattr(m, m.WhichOneof("data")).data_points)
                     for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
        assert enc.last_points == points
        counts.append(points)
    assert len(counts) > 1 and sum(counts) == 301


async def test_refused_and_expired_notifications_are_counted(tmp_path):
    d = Delta()
    outbox = Outbox(tmp_path)
    outcomes: list[str] = []

    async def send(n):  # type: ignore[no-untyped-def]
        raise PermanentDeliveryError("400 Bad Request")

    try:
        outbox.start("monitoring.alerts.webhook", send, lambda n, outcome, why: outcomes.append(outcome))
        outbox.put(notification("k1", STALE, outbox.clock()))
        for _ in range(200):
            if outcomes:
                break
            await asyncio.sleep(0.02)
    finally:
        await outbox.stop()
    assert outcomes == ["failed"]
    assert d("notification", "refused", "monitoring.alerts.webhook") == 1


def test_datadog_elasticsearch_and_nagios_sinks_count_their_drops():
    from integrations.datadog.config import ExportConfig
    from integrations.datadog.export import DatadogExporter
    from integrations.elasticsearch.config import ElasticsearchConfig
    from integrations.elasticsearch.export import ElasticExporter
    from integrations.nagios.export import NagiosExporter

    d = Delta()
    with acting_for(PID):
        dd = DatadogExporter(ExportConfig.model_validate({"url": "http://127.0.0.1:9", "api_key": "k"}))
        es = ElasticExporter(ElasticsearchConfig.model_validate({"hosts": ["http://127.0.0.1:9"]}), None)
        ng = NagiosExporter()
    # Where each counts what it drops (a full queue, a permanent refusal, a result too large).
    dd._count_drop(3, "max_bytes")
    es._count_drop(2, "rejected")
    ng._count_drop(1, "too_large")
    assert d("datadog_export", "max_bytes", PID) == 3
    assert d("elasticsearch_export", "rejected", PID) == 2
    assert d("nagios_export", "too_large", PID) == 1


def test_the_receivers_count_what_they_refuse():
    from integrations.datadog.aggregate import Aggregator
    from integrations.datadog.config import DogStatsDConfig
    from integrations.datadog.dsd_server import DogStatsDServer
    from integrations.datadog.intake import Decoded
    from integrations.elasticsearch.search import _Job
    from integrations.nagios.collector import NagiosCollector
    from integrations.otlp_receive import Converted

    d = Delta()
    with acting_for(PID):
        agg = Aggregator(DogStatsDConfig(listen_udp="127.0.0.1:0"))
        agg._add_late("h.metric", "h", (1.0,), 1.0, (), 1.0)  # a timestamped histogram: unsupported
        dec = Decoded()
        dec.reject("invalid_point", "series 'x'", "no points", 2)
        conv = Converted()
        conv.reject("invalid_name", "x y", "not an OpenTelemetry instrument name")
        job = _Job("q", 10.0, lambda: None)  # type: ignore[arg-type, return-value]
        job.dropped["max_series"] += 5
        nagios = NagiosCollector()
        nagios._dropped[("check_disk", "invalid")] += 1
        dsd = DogStatsDServer(DogStatsDConfig(listen_udp="127.0.0.1:0"), Pipeline().ingest(PID, 300))
    dsd._drop("parse_error", "a line", b"x:y|q")  # in a reader thread: counted for the plugin it was made for
    assert d("dogstatsd", "timestamped_unsupported", PID) == 1
    assert d("dogstatsd", "parse_error", PID) == 1
    assert d("datadog_intake", "invalid_point", PID) == 2
    assert d("otlp_receive", "invalid_name", PID) == 1
    assert d("elasticsearch_search", "max_series", PID) == 5
    assert d("nagios_perfdata", "invalid", PID) == 1


# --------------------------------------------------------------------------- self-metric and plugin API


class Lossy(SteadyCollector):
    """Drops two items of its own each collection, and reports two metrics whose Prometheus names
    are one."""

    plugin_id = "monitoring.metrics.lossy"

    async def collect_metrics(self) -> Sequence[Metric]:
        count_loss("lossy_part", "too_big", 2)  # the supervisor's call: counted for this plugin
        return [Metric("lossy.clash", MetricKind.COUNTER, 1.0, "", "a"),
                Metric("lossy_clash", MetricKind.COUNTER, 2.0, "", "b", {"k": "v"})]


async def test_drops_show_in_metrics_and_per_plugin_in_the_api():
    d = Delta()
    reg = PluginRegistry().discover()
    reg.register_plugin(Lossy.plugin_id, Lossy)
    text = f"""
server:
  listen: "127.0.0.1:0"
plugins:
  - plugin_id: {Lossy.plugin_id}
    config: {{collection_interval: 0.1}}
"""
    rt = Runtime(parse_config(text, "test.yaml", reg, env={}), reg, settings=SupervisorSettings())
    await rt.start()
    try:
        host, port = rt.server.bound  # type: ignore[misc]
        url = f"http://{host}:{port}"
        while d("lossy_part") < 2:
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/metrics") as r:
                body = await r.text()
            async with s.get(f"{url}/metrics") as r:  # a second render counts its clash again
                body = await r.text()
            async with s.get(f"{url}/api/v1/plugins") as r:
                doc = await r.json()
    finally:
        await rt.stop()
    fams = {f.name: f for f in parse_text(body)}
    # lossy.clash and lossy_clash are both lossy_clash_total: the first in name order is shown.
    assert [s.labels for s in fams["lossy_clash"].samples] == [{}]
    assert d("exposition", "name_clash", Lossy.plugin_id) >= 2
    samples = {(s.labels["component"], s.labels["reason"], s.labels["plugin"]): s.value
               for s in fams["monbridge_dropped"].samples}
    assert samples[("lossy_part", "too_big", Lossy.plugin_id)] >= 2
    (st,) = [p for p in doc["data"] if p["plugin_id"] == Lossy.plugin_id]
    assert st["dropped"]["lossy_part"]["too_big"] >= 2
    assert st["dropped"]["exposition"]["name_clash"] >= 2
