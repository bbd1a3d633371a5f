"""The Prometheus bridge's conversions: a scrape into the pipeline's Metric type (types kept,
target labels, relabeling, limits, duplicates), the pipeline back out as exposition text and as
remote-write samples (new samples only, staleness markers), and its config errors."""

from __future__ import annotations

import struct

import pytest

from bridge.api import HistogramValue, MetricKind, SummaryValue
from bridge.exposition import render
from bridge.pipeline import Pipeline
from integrations.prometheus.plugin import PrometheusIntegration, PrometheusIntegrationConfig, alert_to_alertmanager
from integrations.prometheus.relabel import RelabelConfig, Relabeler
from integrations.prometheus.remote_write import STALE_NAN
from integrations.prometheus.scrape import ScrapeFailed, ScrapeLimits, Target, TargetScraper
from integrations.prometheus.textparse import ParseError, parse

TARGET = Target("http://127.0.0.1:9100/metrics", {"job": "node", "instance": "127.0.0.1:9100", "team": "infra"})
T0 = 1_700_000_000_123_456_789

BODY = """\
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200"} 10
http_requests_total{code="500",job="app"} 2
# TYPE temp gauge
temp{room="a"} 21.5
# TYPE lat histogram
lat_bucket{le="0.5"} 1
lat_bucket{le="1"} 3
lat_bucket{le="+Inf"} 4
lat_sum 2.5
lat_count 4
# TYPE rpc summary
rpc{quantile="0.5"} 0.1
rpc{quantile="0.99"} 0.9
rpc_sum 7
rpc_count 20
plain 1 1700000000000
"""


def convert(body: str, scraper: TargetScraper | None = None, openmetrics: bool = False):
    s = scraper or TargetScraper(TARGET)
    metrics, stats = s.convert(body, openmetrics, T0)
    return {(m.name, tuple(sorted(m.attributes.items()))): m for m in metrics}, stats


def key(name: str, **labels: str):
    return name, tuple(sorted({"instance": "127.0.0.1:9100", "job": "node", "team": "infra", **labels}.items()))


def test_types_labels_and_timestamps_survive_a_scrape():
    got, (scraped, post, added, dups) = convert(BODY)
    assert (scraped, post, added, dups) == (13, 13, 13, 0)
    c = got[key("http_requests_total", code="200")]
    assert (c.kind, c.value, c.timestamp_ns) == (MetricKind.COUNTER, 10.0, T0 // 1_000_000 * 1_000_000)
    # honor_labels false: the scraped job is kept as exported_job, the target's wins
    assert key("http_requests_total", code="500", exported_job="app") in got
    h = got[key("lat")].value
    assert isinstance(h, HistogramValue)
    assert (h.bounds, h.bucket_counts, h.sum, h.count, h.le_labels) == ((0.5, 1.0), (1, 2, 1), 2.5, 4, ("0.5", "1", "+Inf"))
    s = got[key("rpc")].value
    assert isinstance(s, SummaryValue) and s == SummaryValue(((0.5, 0.1), (0.99, 0.9)), 7.0, 20.0, ("0.5", "0.99"))
    assert got[key("plain")].timestamp_ns == 1_700_000_000_000 * 1_000_000  # honor_timestamps
    assert got[key("temp", room="a")].kind is MetricKind.GAUGE


def test_honor_labels_keeps_the_scraped_label():
    got, _ = convert(BODY, TargetScraper(TARGET, honor_labels=True))
    assert key("http_requests_total", code="500", job="app") in got


def test_openmetrics_created_is_the_start_time_and_a_series():
    body = ("# TYPE jobs counter\njobs_total{q=\"a\"} 5\njobs_created{q=\"a\"} 1700000000.5\n"
            "# TYPE lat histogram\nlat_bucket{le=\"1\"} 1\nlat_bucket{le=\"+Inf\"} 2\nlat_sum 3\nlat_count 2\n"
            "lat_created 1699999999\n# EOF\n")
    got, _ = convert(body, openmetrics=True)
    c = got[key("jobs_total", q="a")]
    assert (c.kind, c.value, c.start_time_ns) == (MetricKind.COUNTER, 5.0, 1_700_000_000_500_000_000)
    assert got[key("jobs_created", q="a")].value == 1700000000.5  # Prometheus 2 stores it as a series too
    assert got[key("lat")].start_time_ns == 1_699_999_999_000_000_000


def test_a_histogram_that_does_not_assemble_is_kept_sample_by_sample():
    body = "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"2\"} 2\nh_sum 1\nh_count 2\n"  # counts go down, no +Inf
    got, _ = convert(body)
    assert {k[0] for k in got} == {"h_bucket", "h_sum", "h_count"}
    assert all(m.kind is MetricKind.GAUGE for m in got.values())
    assert got[key("h_bucket", le="2")].value == 2.0


def test_an_le_prometheus_cannot_read_is_no_bucket():
    # Go's ParseFloat refuses "1_0" (Python's float() would read 10): that sample is a plain series.
    body = "# TYPE h histogram\nh_bucket{le=\"1_0\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n"
    got, _ = convert(body)
    assert got[key("h_bucket", le="1_0")].kind is MetricKind.GAUGE
    h = got[key("h")].value
    assert isinstance(h, HistogramValue) and (h.bounds, h.bucket_counts, h.le_labels) == ((), (2,), ("+Inf",))


def test_duplicates_keep_the_first():
    got, (scraped, post, _, dups) = convert("a 1\na 2\nb{x=\"1\",y=\"2\"} 3\nb{y=\"2\",x=\"1\"} 4\n")
    assert (scraped, post, dups) == (4, 2, 2)
    assert got[key("a")].value == 1.0 and got[key("b", x="1", y="2")].value == 3.0


def test_metric_relabeling_and_limits():
    relabel = Relabeler([RelabelConfig(source_labels=["__name__"], regex="temp", action="drop"),
                         RelabelConfig(regex="team", action="labeldrop")])
    got, (scraped, post, _, _) = convert(BODY, TargetScraper(TARGET, relabeler=relabel))
    assert not any(k[0] == "temp" for k in got) and (scraped, post) == (13, 12)
    assert all("team" not in dict(k[1]) for k in got)
    with pytest.raises(ScrapeFailed, match="sample_limit exceeded: 13 samples after relabeling, limit 10"):
        TargetScraper(TARGET, limits=ScrapeLimits(sample_limit=10)).convert(BODY, False, T0)
    with pytest.raises(ScrapeFailed, match="label_value_length_limit exceeded"):
        TargetScraper(TARGET, limits=ScrapeLimits(label_value_length_limit=5)).convert(BODY, False, T0)


def test_repeated_scrapes_equal_a_cold_one_and_count_new_series():
    s = TargetScraper(TARGET)
    convert(BODY, s)
    body2 = BODY.replace("temp{room=\"a\"} 21.5", "temp{room=\"a\"} 22\ntemp{room=\"b\"} 19").replace("10\n", "11\n")
    warm, (_, _, added, _) = convert(body2, s)
    cold, _ = convert(body2)
    assert added == 1
    assert {k: (m.kind, m.value) for k, m in warm.items()} == {k: (m.kind, m.value) for k, m in cold.items()}


def test_a_parse_error_names_the_line():
    with pytest.raises(ParseError, match="^line 3: "):
        TargetScraper(TARGET).convert("a 1\nb 2\nc{ 3\n", False, T0)


def test_report_series_are_prometheus_own():
    s = TargetScraper(TARGET)
    from integrations.prometheus.scrape import ScrapeResult

    names = [(m.name, m.value, dict(m.attributes)) for m in s.report(ScrapeResult(TARGET, [], False, 0.25), T0)]
    assert names[0] == ("up", 0.0, {"job": "node", "instance": "127.0.0.1:9100", "team": "infra"})
    assert [n for n, _, _ in names] == ["up", "scrape_duration_seconds", "scrape_samples_scraped",
                                        "scrape_samples_post_metric_relabeling", "scrape_series_added"]


def test_imported_families_render_as_they_came():
    s = TargetScraper(TARGET)
    metrics, _ = s.convert(BODY, False, T0)
    p = Pipeline()
    p.record("prom", metrics, prometheus_names=True)
    text = render(p.families()).decode()
    reparsed = {(n, tuple(sorted(lb))): v for f in parse(text) for n, lb, v, _, _ in f.samples}
    original = {}
    for f in parse(BODY):
        for n, lb, v, _, _ in f.samples:
            labels = dict(lb)
            if "job" in labels:
                labels["exported_job"] = labels.pop("job")
            original[(n, tuple(sorted({**labels, **TARGET.labels}.items())))] = v
    assert reparsed == original
    assert "# TYPE http_requests_total counter" in text and "# TYPE rpc summary" in text
    assert 'lat_bucket{instance="127.0.0.1:9100",job="node",team="infra",le="1"} 3' in text


def _decode(samples):
    """(labels dict, value, ts) of remote-write samples, decoding the label bytes."""
    out = []
    for lb, v, ts in samples:
        labels, i = {}, 0
        while i < len(lb):
            assert lb[i] == 0x0A
            n = lb[i + 1]
            inner = lb[i + 2:i + 2 + n]
            k_len = inner[1]
            k = inner[2:2 + k_len].decode()
            v_len = inner[3 + k_len]
            labels[k] = inner[4 + k_len:4 + k_len + v_len].decode()
            i += 2 + n
        out.append((labels, v, ts))
    return out


async def test_remote_write_sends_new_samples_and_marks_gone_series_stale():
    plugin = PrometheusIntegration()
    p = Pipeline()
    s = TargetScraper(TARGET)
    p.record("prom", s.convert(BODY, False, T0)[0], prometheus_names=True)
    first = _decode(plugin._remote_write_samples(p.batch()))
    names = sorted({d["__name__"] for d, _, _ in first})
    assert names == ["http_requests_total", "lat_bucket", "lat_count", "lat_sum", "plain", "rpc", "rpc_count", "rpc_sum",
                     "temp"]
    assert len(first) == 13
    buckets = sorted((d["le"], v) for d, v, _ in first if d["__name__"] == "lat_bucket")
    assert buckets == [("+Inf", 4.0), ("0.5", 1.0), ("1", 3.0)]  # cumulative again, le texts kept
    # The same data again: nothing new to send.
    assert plugin._remote_write_samples(p.batch()) == []
    # A later scrape without temp: new samples for the rest, a staleness marker for temp.
    p.record("prom", s.convert(BODY.replace('temp{room="a"} 21.5\n', ""), False, T0 + 15_000_000_000)[0],
             prometheus_names=True)
    second = _decode(plugin._remote_write_samples(p.batch()))
    stale = [(d, v) for d, v, _ in second if d["__name__"] == "temp"]
    assert len(stale) == 1 and struct.pack("<d", stale[0][1]) == struct.pack("<d", STALE_NAN)
    assert len(second) == 12  # 11 new samples and the marker; plain keeps its own timestamp: not resent


async def test_own_metrics_get_job_and_instance_and_prometheus_names():
    from bridge.api import Metric

    plugin = PrometheusIntegration()
    p = Pipeline()
    p.record("sys", [Metric("system.memory.usage", MetricKind.UP_DOWN_COUNTER, 5.0, "By", attributes={"state": "used"}),
                     Metric("demo.ops", MetricKind.COUNTER, 3, "{operation}")])
    got = {d["__name__"]: d for d, _, _ in _decode(plugin._remote_write_samples(p.batch()))}
    assert set(got) == {"system_memory_usage_bytes", "demo_ops_total"}
    assert got["system_memory_usage_bytes"]["job"] == "monbridge" and got["system_memory_usage_bytes"]["instance"]
    assert got["demo_ops_total"]["job"] == "monbridge" and "operation" not in got["demo_ops_total"]["__name__"]


def test_config_errors_say_where():
    with pytest.raises(Exception, match="scrape timeout 20s is greater than the scrape interval 15s"):
        PrometheusIntegrationConfig.model_validate({"scrape": {"timeout": 20}})
    with pytest.raises(Exception, match=r"scrape\.targets\.0\.url"):
        PrometheusIntegrationConfig.model_validate({"scrape": {"targets": [{"job": "a", "url": "ftp://x"}]}})
    with pytest.raises(Exception, match=r"federate\.0\.match"):
        PrometheusIntegrationConfig.model_validate({"federate": [{"url": "http://127.0.0.1:9090", "match": []}]})
    cfg = PrometheusIntegrationConfig.model_validate({"scrape": {"interval": 5, "timeout": 2}})
    assert cfg.interval == 5  # the round follows the scrape interval


def test_alert_payload_is_alertmanagers():
    from bridge.api import Alert, AlertState

    a = Alert(id="x", name="Disk", severity="warning", state=AlertState.RESOLVED, labels={"host": "a"},
              annotations={"summary": "s"}, starts_at=1700000000.0, ends_at=1700000060.0)
    assert alert_to_alertmanager(a, "http://mb") == {
        "labels": {"alertname": "Disk", "severity": "warning", "host": "a"}, "annotations": {"summary": "s"},
        "startsAt": "2023-11-14T22:13:20Z", "endsAt": "2023-11-14T22:14:20Z", "generatorURL": "http://mb"}


def test_imported_data_reaches_otel_as_it_came():
    from tests.otlp_view import attributes, metrics_of, number

    p = Pipeline()
    s = TargetScraper(TARGET)
    p.record("prom", s.convert(BODY, False, T0)[0], prometheus_names=True, now_ns=T0)
    p.record("prom", s.convert(BODY.replace(" 10\n", " 12\n"), False, T0 + 10**9)[0], prometheus_names=True,
             now_ns=T0 + 10**9)
    metrics = metrics_of(p)
    counter = metrics["http_requests_total"]
    assert counter.WhichOneof("data") == "sum" and counter.sum.is_monotonic
    point = next(pt for pt in counter.sum.data_points if attributes(pt.attributes)["code"] == "200")
    # No _created: the start is when the series was first seen, and stays so.
    assert (number(point), point.start_time_unix_nano, point.time_unix_nano) == (12.0, T0, (T0 + 10**9) // 10**6 * 10**6)
    assert metrics["lat"].WhichOneof("data") == "histogram"
    assert list(metrics["lat"].histogram.data_points[0].bucket_counts) == [1, 2, 1]
    rpc = metrics["rpc"].summary.data_points[0]
    assert (rpc.count, rpc.sum, [(q.quantile, q.value) for q in rpc.quantile_values]) == (20, 7.0, [(0.5, 0.1), (0.99, 0.9)])


async def test_imported_alerts_resolve_when_prometheus_stops_firing_them():
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from bridge.api import AlertState

    firing = [{"labels": {"alertname": "High", "severity": "page", "host": "a"}, "annotations": {"summary": "s"},
               "state": "firing", "activeAt": "2026-01-01T00:00:00Z", "value": "1e+00"},
              {"labels": {"alertname": "Soon"}, "state": "pending", "activeAt": "2026-01-01T00:00:00Z", "value": "0"}]

    async def alerts(_request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"alerts": firing}})

    app = web.Application()
    app.router.add_get("/api/v1/alerts", alerts)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    plugin = PrometheusIntegration()
    await plugin.initialize({"import_alerts": {"url": str(server.make_url("/"))}})
    try:
        first = await plugin.import_alerts()
        assert [(a.name, a.state, a.value, a.starts_at) for a in first] == [("High", AlertState.FIRING, 1.0, 1767225600.0)]
        firing = []
        second = await plugin.import_alerts()
        assert [(a.name, a.state, a.fingerprint) for a in second] == [("High", AlertState.RESOLVED, first[0].fingerprint)]
        assert await plugin.import_alerts() == []
    finally:
        await plugin.shutdown()
        await server.close()
