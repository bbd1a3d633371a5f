"""The Prometheus view of a series (name as exposed, labels, ``le``/``quantile`` texts) is computed
once, kept with the series, and read from the batch by ``/metrics``, remote write and the
Pushgateway alike."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

import bridge.exposition as exposition
from bridge.api import HistogramValue, Metric, MetricKind, PrometheusView, SummaryValue
from bridge.exposition import render
from bridge.pipeline import Pipeline
from integrations.prometheus.plugin import PrometheusIntegration, PrometheusIntegrationConfig
from integrations.prometheus.remote_write import RemoteWriter
from integrations.prometheus.textparse import parse

T = 1_700_000_000_000_000_000


def record(p: Pipeline, value: float, t: int = T) -> int:
    """Collector series (OTel names, a dotted attribute, an int value) and imported ones; returns
    how many series there are."""
    own = [Metric("app.requests", MetricKind.COUNTER, value, "{request}", "requests",
                  {"http.route": f"/r{i}", "code": 200}) for i in range(3)]
    own.append(Metric("app.temperature", MetricKind.GAUGE, value, "Cel", "t", {"room": "a"}))
    imported = [
        Metric("node_load1", MetricKind.GAUGE, value, "", "load", {"instance": "h:9100", "job": "node"}, t),
        Metric("lat", MetricKind.HISTOGRAM, HistogramValue((0.5, 1.0), (1, 2, int(value)), 3.0, 3 + int(value),
                                                            le_labels=("0.5", "1", "+Inf")),
               "", "latency", {"job": "api"}, t, T - 10**9),
        Metric("rpc", MetricKind.SUMMARY, SummaryValue(((0.5, 0.1), (0.99, value)), 3.0, 10.0), "", "rpc",
               {"job": "api"}, t, T - 10**9),
    ]
    p.record("col", own, t)
    p.record("imp", imported, t, prometheus_names=True)
    return len(own) + len(imported)


@pytest.fixture
def pushgateway():
    """A Pushgateway stand-in on loopback: records each PUT's path and body."""
    pushes: list[tuple[str, bytes]] = []

    async def put(request: web.Request) -> web.Response:
        pushes.append((request.path, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_put("/{tail:.*}", put)
    return app, pushes


def label_sets_in(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(name, tuple(sorted(labels))) for fam in parse(text.encode())
            for name, labels, *_ in fam.samples}


async def test_every_prometheus_consumer_reads_the_view_computed_once(monkeypatch, pushgateway):
    calls = []
    real = exposition.prometheus_labels

    def counting(attributes):
        calls.append(dict(attributes))
        return real(attributes)

    monkeypatch.setattr(exposition, "prometheus_labels", counting)
    app, pushes = pushgateway
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    p = Pipeline()
    n = record(p, 1.0)
    plugin = PrometheusIntegration()
    await plugin.initialize({"pushgateway": {"url": str(server.make_url("/")), "job": "mb"},
                             "remote_write": [{"url": "http://127.0.0.1:9/api/v1/write"}]})
    appended: list[list[tuple[bytes, float, int]]] = []
    monkeypatch.setattr(RemoteWriter, "append", lambda self, samples: appended.append(list(samples)) or len(samples))
    try:
        sinks = plugin.export_sinks()
        for value in (1.0, 2.0):
            if value == 2.0:
                record(p, value, T + 15 * 10**9)  # the same series, new values and times
            batch = p.batch()
            metrics_text = render(batch.families()).decode()
            for name in ("remote_write", "pushgateway"):
                assert (await sinks[name].export(batch, 5.0)).ok
            # Each series' labels were computed once, by whichever consumer read it first.
            assert len(calls) == n, calls
            assert pushes[-1][1].decode() == metrics_text  # the Pushgateway gets the same exposition
        rw = {(d["__name__"], tuple(sorted((k, v) for k, v in d.items() if k != "__name__")))
              for d in (decode_labels(lb) for lb, _, _ in appended[-1])}
    finally:
        await plugin.shutdown()
        await server.close()
    exposed = label_sets_in(metrics_text)
    # Remote write sends the same names and labels, except that collector series (those without a
    # job label of their own) also get the agent's job and instance.
    def without_agent_labels(name: str, labels: tuple) -> tuple:
        if name.startswith("app_"):
            assert ("job", "monbridge") in labels and any(k == "instance" for k, _ in labels)
            return tuple(kv for kv in labels if kv[0] not in ("job", "instance"))
        return labels

    assert {(name, without_agent_labels(name, labels)) for name, labels in rw} == exposed
    assert ("app_requests_total", (("code", "200"), ("http_route", "/r0"))) in exposed


def decode_labels(data: bytes) -> dict[str, str]:
    """An ``encode_labels`` field (repeated Label {1: name, 2: value}) back as a dict."""

    def fields(buf: bytes):
        i = 0
        while i < len(buf):
            tag = buf[i]
            n = shift = 0
            i += 1
            while True:
                b = buf[i]
                i += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            yield tag, buf[i:i + n]
            i += n

    out = {}
    for tag, label in fields(data):
        assert tag == 0x0A
        parts = dict(fields(label))
        out[parts[0x0A].decode()] = parts.get(0x12, b"").decode()
    return out


def test_the_view_of_each_kind():
    p = Pipeline()
    record(p, 4.0)
    b = p.batch()
    views = {(f.name, s.prom.name): s for f in b.families() for s in f.series}
    req = next(s for (fam, _), s in views.items() if fam == "app.requests")
    assert req.prom.name == "app_requests_total"
    assert req.prom.labels == (("code", "200"), ("http_route", req.attributes["http.route"]))
    temp = views[("app.temperature", "app_temperature_celsius")]
    assert temp.prom == PrometheusView("app_temperature_celsius", (("room", "a"),))
    # Labels that are the attributes as they are share the series' own attribute tuple: no copy.
    assert temp.prom.labels is temp.identity.key
    load = views[("node_load1", "node_load1")]
    assert load.prom.labels is load.identity.key
    lat = views[("lat", "lat")]
    assert lat.prom.le == ("0.5", "1", "+Inf")  # as the source wrote them
    kept = lat.identity.prom
    assert lat.prom == lat.prom and lat.identity.prom is kept  # kept on the series, not made again
    rpc = views[("rpc", "rpc")]
    assert rpc.prom.le == ("0.5", "0.99")
    # A histogram whose buckets change gets a new view.
    p.record("imp", [Metric("lat", MetricKind.HISTOGRAM, HistogramValue((2.0,), (1, 1), 1.0, 2), "", "latency",
                            {"job": "api"}, T + 1, T - 10**9)], T + 1, prometheus_names=True)
    (lat2,) = [s for f in p.batch().families() if f.name == "lat" for s in f.series]
    assert lat2.prom.le == ("2.0", "+Inf") and lat.prom.le == ("0.5", "1", "+Inf")


async def test_the_pushgateway_pushes_only_what_its_match_selects(pushgateway):
    app, pushes = pushgateway
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    p = Pipeline()
    record(p, 1.0)
    plugin = PrometheusIntegration()
    await plugin.initialize({"pushgateway": {"url": str(server.make_url("/")), "job": "mb",
                                             "match": ['{job="api"}', "app_temperature_celsius"]}})
    try:
        assert (await plugin.export(p.batch(), 5.0)).ok
    finally:
        await plugin.shutdown()
        await server.close()
    (path, body), = pushes
    assert path == "/metrics/job/mb"
    names = {name for name, _ in label_sets_in(body.decode())}
    assert names == {"lat_bucket", "lat_sum", "lat_count", "rpc", "rpc_sum", "rpc_count", "app_temperature_celsius"}


async def test_a_pushgateway_refusal_is_a_permanent_result_and_an_outage_a_retryable_one(free_port):
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=400, text="pushed metrics are invalid")

    app = web.Application()
    app.router.add_put("/{tail:.*}", refuse)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    p = Pipeline()
    record(p, 1.0)
    refusing, down = PrometheusIntegration(), PrometheusIntegration()
    await refusing.initialize({"pushgateway": {"url": str(server.make_url("/")), "job": "mb"}})
    await down.initialize({"pushgateway": {"url": f"http://127.0.0.1:{free_port()}", "job": "mb", "timeout": 2}})
    try:
        r1 = await refusing.export_sinks()["pushgateway"].export(p.batch(), 5.0)
        r2 = await down.export_sinks()["pushgateway"].export(p.batch(), 5.0)
    finally:
        for plugin in (refusing, down):
            await plugin.shutdown()
            await plugin.shutdown()  # idempotent
        await server.close()
    assert r1.status.value == "permanent" and "HTTP 400" in r1.reason and "pushed metrics are invalid" in r1.reason
    assert r2.status.value == "retryable" and "failed" in r2.reason


def test_a_bad_match_selector_is_a_config_error_naming_it():
    with pytest.raises(ValidationError) as err:
        PrometheusIntegrationConfig.model_validate({"pushgateway": {"url": "http://127.0.0.1:9091", "job": "j",
                                                                    "match": ["up", "up{"]}})
    assert "match[1]" in str(err.value) and "selector 'up{'" in str(err.value)


def test_a_label_set_read_back_from_the_kept_text_is_the_one_written():
    p = Pipeline()
    odd = 'a "quoted" \\ back\nslash'
    p.record("col", [Metric("app.odd", MetricKind.GAUGE, 1.0, "", "", {"x.y": odd, "n": 7, "flag": True, "k": "v"})])
    b = p.batch()
    (s,) = b.families()[0].series
    assert s.prom.labels == (("flag", "true"), ("k", "v"), ("n", "7"), ("x_y", odd))
    text = render(b.families()).decode()
    ((name, labels, *_),) = next(iter(parse(text.encode()))).samples
    assert name == "app_odd" and dict(labels) == dict(s.prom.labels)
