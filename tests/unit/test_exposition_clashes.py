"""Clashing names in ``/metrics``: whatever is imported, both formats stay valid and show the same
series. Bridged here: node_exporter's exposition (whose gauge ``go_memstats_alloc_bytes`` and
counter ``go_memstats_alloc_bytes_total`` claim one OpenMetrics family name) and every payload of
the exposition corpus (tests/data/exposition) and of the scrape fuzzer's corpus, all in one
pipeline as targets of one agent, judged by prometheus_client's strict OpenMetrics parser."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from bridge.api import HistogramValue, Metric, MetricKind
from bridge.exposition import Clash, render
from bridge.pipeline import Pipeline
from integrations.prometheus.scrape import Target, TargetScraper
from integrations.prometheus.textparse import ParseError, parse
from tests.unit.exposition_corpus import cases, is_openmetrics, payload

DATA = Path(__file__).resolve().parents[1] / "data"
SCRAPE_CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "scrape"
T0 = 1_700_000_000_000_000_000


def bridged(bodies: dict[str, tuple[bytes, bool]]) -> Pipeline:
    """A pipeline holding each body as a scraped target of its own (job = its name)."""
    p = Pipeline()
    for job, (body, om) in bodies.items():
        scraper = TargetScraper(Target(f"http://127.0.0.1:9/{job}", {"job": job, "instance": "127.0.0.1:9"}))
        try:
            metrics, _ = scraper.convert(body.decode("utf-8", "replace"), om, T0)
        except ParseError:
            continue  # a scrape that fails imports nothing
        p.record(f"monitoring.integration.prometheus#{job}", metrics, prometheus_names=True)
    return p


def corpus() -> dict[str, tuple[bytes, bool]]:
    out = {"node": ((DATA / "node_exporter_1.5.prom").read_bytes(), False)}
    out.update({c.replace(".", "_"): (payload(c), is_openmetrics(c)) for c in cases()})
    out.update({"fuzz_" + f.name.replace(".", "_"): (f.read_bytes(), f.suffix == ".om")
                for f in sorted(SCRAPE_CORPUS.iterdir())})
    return out


def samples(body: str, openmetrics: bool) -> dict[tuple[str, tuple[tuple[str, str], ...]], str]:
    """Every sample of an exposition by (name, labels), its value as text (NaN compares equal)."""
    return {(n, tuple(sorted(lb))): repr(v) if not math.isnan(v) else "NaN"
            for f in parse(body.encode(), openmetrics) for n, lb, v, _, _ in f.samples}


def both(p: Pipeline) -> tuple[str, str, list[Clash]]:
    clashes: list[Clash] = []
    text = render(p.batch().families(), {"service.name": "monbridge"}, False, clashes.append).decode()
    om = render(p.batch().families(), {"service.name": "monbridge"}, True, clashes.append).decode()
    return text, om, clashes


def test_bridged_node_exporter_is_valid_openmetrics_with_the_same_series_as_the_text_format():
    p = bridged({"node": ((DATA / "node_exporter_1.5.prom").read_bytes(), False)})
    text, om, clashes = both(p)
    fams = {f.name: f for f in parse_openmetrics(om)}  # strict: raises on a clash
    # The gauge keeps its name; the counter, whose OpenMetrics family name (without _total) is the
    # gauge's, keeps its samples and is declared unknown under its sample name.
    assert fams["go_memstats_alloc_bytes"].type == "gauge"
    assert fams["go_memstats_alloc_bytes_total"].type == "unknown"
    assert [s.name for s in fams["go_memstats_alloc_bytes_total"].samples] == ["go_memstats_alloc_bytes_total"]
    assert "# TYPE go_memstats_alloc_bytes_total counter" in text  # the text format can say it
    assert {(c.name, c.other, c.dropped) for c in clashes} == {
        ("go_memstats_alloc_bytes_total", "go_memstats_alloc_bytes", False)}
    assert samples(text, False) == samples(om, True)
    list(parse_text(text))


def test_every_bridged_corpus_payload_together_stays_valid_in_both_formats():
    p = bridged(corpus())
    text, om, clashes = both(p)
    list(parse_openmetrics(om))  # strict: one family a name, its samples together, no clashes
    parse(text.encode(), False)
    list(parse_text(text))
    # Both formats show the same samples; what is left out of them is reported, with its series.
    assert samples(text, False) == samples(om, True)
    dropped = {c.name for c in clashes if c.dropped}
    shown = {f.name for f in parse(text.encode(), False)}
    assert not dropped & shown
    every = {f.name for f in p.families()}
    assert every - shown <= dropped | {"target_info"}  # nothing left out silently


@pytest.mark.parametrize("openmetrics", [False, True])
def test_a_family_whose_sample_names_are_taken_is_left_out_of_both_formats(openmetrics):
    p = Pipeline()
    h = HistogramValue((1.0,), (1, 1), 3.0, 2)
    p.record("monitoring.integration.prometheus#a", [
        Metric("lat", MetricKind.HISTOGRAM, h),
        Metric("lat_count", MetricKind.GAUGE, 9.0, attributes={"x": "1"}),  # a sample name of lat's
        Metric("lat_count", MetricKind.GAUGE, 8.0, attributes={"x": "2"}),
        Metric("up_created", MetricKind.GAUGE, 1.0),  # claimed by the counter up_total (OpenMetrics)
        Metric("up_total", MetricKind.COUNTER, 5.0),
        Metric("ok", MetricKind.GAUGE, 1.0),
    ], prometheus_names=True)
    clashes: list[Clash] = []
    body = render(p.batch().families(), {}, openmetrics, clashes.append).decode()
    if openmetrics:
        list(parse_openmetrics(body))
    else:
        list(parse_text(body))
    assert 'lat_count{x="1"}' not in body and "lat_count 2" in body
    assert "ok 1.0" in body and "up_created 1.0" in body and "up_total 5.0" in body
    assert clashes == [Clash("lat_count", "lat", True, 2, "monitoring.integration.prometheus"),
                       Clash("up_total", "up_created", False, 1, "monitoring.integration.prometheus")]
    assert ("# TYPE up_total unknown" if openmetrics else "# TYPE up_total counter") in body


def test_an_otel_named_family_and_an_imported_one_of_the_same_prometheus_name():
    p = Pipeline()
    p.record("monitoring.metrics.app", [Metric("http.requests", MetricKind.COUNTER, 3.0)])
    p.record("monitoring.integration.prometheus#t", [Metric("http_requests_total", MetricKind.GAUGE, 4.0)],
             prometheus_names=True)
    clashes: list[Clash] = []
    for om in (False, True):
        body = render(p.batch().families(), {}, om, clashes.append).decode()
        assert "http_requests_total 3.0" in body and "4.0" not in body
    assert clashes == [Clash("http_requests_total", "http_requests_total", True, 1,
                             "monitoring.integration.prometheus")] * 2
