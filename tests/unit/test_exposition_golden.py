"""/metrics bytes against golden files, both formats, and the OpenMetrics body through a strict parser.

The golden files are the specification: a change to them is a change to what every scraper
reads. ``python -m tests.unit.test_exposition_golden`` rewrites them from the renderer (review the diff).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from bridge import ExponentialHistogramValue, HistogramValue, Metric, MetricKind, SummaryValue
from bridge.exposition import render
from bridge.pipeline import Pipeline

G, C, U = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.UP_DOWN_COUNTER
H, E, S = MetricKind.HISTOGRAM, MetricKind.EXPONENTIAL_HISTOGRAM, MetricKind.SUMMARY
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
RESOURCE = {"service.name": "mon\\bridge", "host.name": 'h"1', "service.instance.id": "\n"}


def otel_metrics() -> list[Metric]:
    """OTel-named metrics covering every kind, the special values and the names and labels that need care."""
    return [
        Metric("http.server.duration", H, HistogramValue((0.005, 0.1, 1.0), (1, 0, 2, 1), 2.5, 4), "s",
               "Request time", {"http.method": "GET", "status": 200}),
        Metric("queue.wait", H, HistogramValue((1.0,), (3, 0), 1.25, 3), "ms", ""),  # no labels
        Metric("rpc.size", E, ExponentialHistogramValue(0, 1, 0, (2, 1), 0, (1,), 5, 9.0, 0.0), "By", "sizes",
               {"rpc": "x"}),
        Metric("latency", S, SummaryValue(((0.5, 0.25), (0.99, math.inf)), 12.5, 7), "s", "a summary",
               {"route": "/a"}),
        Metric("requests", C, 7, "{request}", "Requests\\served\nso far", {"ok": True, "code": 1.5}),
        Metric("errors.total", C, 0.0, "", "errors", {}),
        Metric("temperature", G, math.nan, "Cel", "nan", {"sensor": "a"}),
        Metric("temperature", G, math.inf, "Cel", "nan", {"sensor": "b"}),
        Metric("temperature", G, -math.inf, "Cel", "nan", {"sensor": "c"}),
        Metric("temperature", G, -1e-300, "Cel", "nan", {"sensor": "d"}),
        Metric("memory.usage", U, 1 << 70, "By", "a big int", {}),
        Metric("utilization", G, 0.5, "1", "", {"cpu.mode": "idle", "cpu_mode": "x", "cpu-mode": "y"}),
        Metric("escapes", G, 1, "", "labels", {"newline": "\n", "quote": '"', "backslash": "\\", "all": 'a\\b"c\nd',
                                               "0day": "digit", "é": "non-ascii"}),
        Metric("seconds", G, 3, "s", "a name that is its unit", {}),
        Metric("disk.io", C, 5, "By/s", "per second", {}),
        Metric("process.count", G, 4, "{process}", "reserved suffix", {}),
        Metric("flag", G, True, "", "a bool value", {}),
    ]


def imported_metrics() -> list[Metric]:
    """Prometheus-named metrics as a scrape imports them: names and le/quantile texts kept."""
    return [
        Metric("node_cpu_seconds_total", C, 10.5, "", "cpu", {"cpu": "0"}),
        Metric("node_boots", C, 3, "", "a counter not ending in _total", {}),
        Metric("node_temp_celsius", G, 40, "", "", {}),
        Metric("node_lat", H, HistogramValue((1.0,), (1, 1), 3.0, 2, le_labels=("1", "+Inf")), "", "h", {}),
        Metric("node_q", S, SummaryValue(((0.5, 1.0),), 2.0, 2, quantile_labels=("0.5",)), "", "q", {}),
        Metric("node_other", U, -2, "", "up-down", {}),
    ]


def rendered(openmetrics: bool) -> bytes:
    p = Pipeline()
    p.record("otel", otel_metrics(), now_ns=1_700_000_000_000_000_000)
    p.record("scrape", imported_metrics(), now_ns=1_700_000_000_000_000_000, prometheus_names=True)
    return render(p.families(), RESOURCE, openmetrics=openmetrics)


CASES = [(False, "metrics.prom"), (True, "metrics.om")]


@pytest.mark.parametrize(("openmetrics", "golden"), CASES)
def test_metrics_bytes_match_the_golden_file(openmetrics, golden):
    assert rendered(openmetrics) == (GOLDEN / golden).read_bytes()


@pytest.mark.parametrize(("openmetrics", "golden"), CASES)
def test_render_from_the_kept_texts_gives_the_same_bytes(openmetrics, golden):
    """A second render (kept family texts and series views) and a batch's snapshot render the same bytes."""
    p = Pipeline()
    p.record("otel", otel_metrics(), now_ns=1_700_000_000_000_000_000)
    p.record("scrape", imported_metrics(), now_ns=1_700_000_000_000_000_000, prometheus_names=True)
    expected = (GOLDEN / golden).read_bytes()
    assert render(p.families(), RESOURCE, openmetrics=openmetrics) == expected
    assert render(p.families(), RESOURCE, openmetrics=openmetrics) == expected
    assert render(p.families(), RESOURCE, openmetrics=openmetrics) == expected
    assert render(p.batch().families(), RESOURCE, openmetrics=openmetrics) == expected


def test_openmetrics_body_passes_a_strict_parser():
    text = rendered(True).decode()
    families = {f.name: f for f in openmetrics_families(text)}
    assert families["target"].type == "info"
    assert families["target"].samples[0].labels == {
        "service_name": "mon\\bridge", "host_name": 'h"1', "service_instance_id": "\n"}
    (labelled,) = [s for s in families["escapes"].samples]
    assert labelled.labels["all"] == 'a\\b"c\nd' and labelled.labels["newline"] == "\n"
    assert labelled.labels["key_0day"] == "digit" and labelled.labels["_"] == "non-ascii"
    assert families["requests"].type == "counter" and families["requests"].documentation == "Requests\\served\nso far"
    assert families["seconds"].unit == ""  # a name that is its unit has no "_seconds" suffix for UNIT to name
    assert families["temperature_celsius"].unit == "celsius"
    values = {s.labels["sensor"]: s.value for s in families["temperature_celsius"].samples}
    assert math.isnan(values["a"]) and values["b"] == math.inf and values["c"] == -math.inf
    assert families["node_boots"].type == "unknown"
    assert families["node_cpu_seconds"].type == "counter"
    merged = families["utilization_ratio"].samples[0].labels
    assert merged == {"cpu_mode": "idle;x;y"}


def test_text_body_parses_back_to_the_recorded_values():
    families = {f.name: f for f in text_families(rendered(False).decode())}
    buckets = [(s.labels["le"], s.value) for s in families["queue_wait_milliseconds"].samples if s.name.endswith("_bucket")]
    assert buckets == [("1.0", 3), ("+Inf", 3)]
    assert families["memory_usage_bytes"].samples[0].value == float(1 << 70)
    assert families["flag"].samples[0].value == 1


def rewrite() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for openmetrics, golden in CASES:
        (GOLDEN / golden).write_bytes(rendered(openmetrics))


if __name__ == "__main__":
    rewrite()
