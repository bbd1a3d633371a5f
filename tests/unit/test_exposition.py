"""Prometheus names and text by the OTel → Prometheus compatibility rules."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge import HistogramValue, Metric, MetricKind
from bridge.exposition import choose_format, prometheus_label_name, prometheus_name, render
from bridge.pipeline import Pipeline

G, C, U, H = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.UP_DOWN_COUNTER, MetricKind.HISTOGRAM


@pytest.mark.parametrize(("name", "unit", "kind", "expected"), [
    ("system.cpu.time", "s", C, "system_cpu_time_seconds"),
    ("system.cpu.utilization", "1", G, "system_cpu_utilization_ratio"),
    ("system.memory.usage", "By", U, "system_memory_usage_bytes"),
    ("system.network.packets", "{packet}", C, "system_network_packets"),
    ("http.requests.total", "", C, "http_requests"),
    ("io.rate", "By/s", G, "io_rate_bytes_per_second"),
    ("latency_seconds", "s", H, "latency_seconds"),
    ("system.process.count", "{process}", U, "system_process_count_value"),
    ("queue.sum", "", G, "queue_sum_value"),
    ("jobs.total", "", G, "jobs_total_value"),
    ("jobs.created", "", C, "jobs_created_value"),
    ("jobs.total", "", H, "jobs_total_value"),
    ("rpc.duration", "ms", H, "rpc_duration_milliseconds"),
    # leading digits and dots, runs of invalid characters, a name that is (or ends in) its unit
    ("9lives", "", G, "_9lives"), (".hidden.name", "", G, "hidden_name"), ("..", "", G, "_"),
    ("a..b--c", "", G, "a_b_c"), ("seconds", "s", G, "seconds"), ("x_seconds", "s", G, "x_seconds"),
    ("xseconds", "s", G, "xseconds_seconds"), ("ratio", "1", G, "ratio"), ("count", "1", C, "count"),
    ("a", "{x}/s", G, "a_per_second"), ("a", "By/fortnight", G, "a_bytes_per_fortnight"), ("a", " {req} ", G, "a"),
    ("h.total", "", H, "h_total_value"), ("c.total", "", C, "c"), ("u.total", "", U, "u_total_value"),
    ("h.count", "", MetricKind.EXPONENTIAL_HISTOGRAM, "h_count"), ("s.count", "", MetricKind.SUMMARY, "s_count_value"),
])
def test_names(name, unit, kind, expected):
    assert prometheus_name(name, unit, kind) == expected


def test_label_names():
    assert prometheus_label_name("cpu.mode") == "cpu_mode"
    assert prometheus_label_name("0day") == "key_0day"
    assert prometheus_label_name("http.request-id") == "http_request_id"


def test_render_parses_back_exactly_with_escapes_and_special_values():
    p = Pipeline()
    p.record("s", [
        Metric("weird", G, 1.5, "", 'help with \\ and\nnewline', {"path": 'C:\\dir "x"\nnext', "ok": True}),
        Metric("nan.value", G, math.nan, "", "n", {}),
        Metric("inf.value", G, math.inf, "", "i", {"a": "b"}),
        Metric("ints", C, 7, "", "i", {"é": "ü"}),
        Metric("h", H, HistogramValue((1.0, 2.0), (1, 0, 2), 9.5, 3), "s", "h", {"x": "1"}),
    ])
    text = render(p.families(), {"service.name": "monbridge"}).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    (w,) = fams["weird"].samples
    assert w.labels == {"path": 'C:\\dir "x"\nnext', "ok": "true"} and w.value == 1.5
    assert fams["weird"].documentation == "help with \\ and\nnewline"
    assert math.isnan(fams["nan_value"].samples[0].value)
    assert fams["inf_value"].samples[0].value == math.inf
    assert fams["ints"].samples[0].labels == {"_": "ü"} and fams["ints"].samples[0].value == 7
    buckets = [(s.labels["le"], s.value) for s in fams["h_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets == [("1.0", 1), ("2.0", 1), ("+Inf", 3)]
    assert fams["target_info"].samples[0].labels == {"service_name": "monbridge"}


def test_unchanged_family_is_served_from_cache_and_changes_show():
    p = Pipeline()
    p.record("s", [Metric("a", G, 1.0, "", "a", {})])
    first = render(p.families(), {})
    assert render(p.families(), {}) == first
    p.record("s", [Metric("a", G, 2.0, "", "a", {})])
    assert b"a 2.0" in render(p.families(), {})



def test_rendered_text_is_kept_only_while_it_is_asked_for_again(monkeypatch):
    """A family whose values change between every two scrapes holds no copy of its rendered
    text; one scraped again unchanged (a second scraper, scrapes faster than collections) is
    served from its kept text, and keeps it across changes while that goes on."""
    from bridge import exposition

    renders: list[str] = []
    real = exposition._render_family

    def counting(fam, openmetrics):
        renders.append(fam.name)
        return real(fam, openmetrics)

    monkeypatch.setattr(exposition, "_render_family", counting)
    p = Pipeline()

    def scrape():
        return render(p.batch().families(), {})

    def held():
        return p.family("a").render_cache[False][2]

    for v in (1.0, 2.0, 3.0):  # one scrape per change
        p.record("s", [Metric("a", G, v, "", "a", {"k": str(i)}) for i in range(3)])
        assert b'a{k="2"} %r' % v in scrape()
    assert len(renders) == 3 and held() is None  # the last text is not held: never asked for again
    body = scrape()  # asked for again unchanged: rendered once more, and kept from now on
    assert scrape() == body and len(renders) == 4 and held() is not None
    p.record("s", [Metric("a", G, 4.0, "", "a", {"k": str(i)}) for i in range(3)])
    body = scrape()
    assert held() is not None  # its last text was asked for again: this one is kept too
    assert scrape() == body and scrape() == body and len(renders) == 5
    p.record("s", [Metric("a", G, 5.0, "", "a", {"k": str(i)}) for i in range(3)])
    scrape()
    p.record("s", [Metric("a", G, 6.0, "", "a", {"k": str(i)}) for i in range(3)])
    assert b'a{k="0"} 6.0' in scrape()
    assert held() is None and len(renders) == 7  # changes between every two scrapes again: let go


def test_content_negotiation():
    assert choose_format(None) == (False, "text/plain; version=0.0.4; charset=utf-8")
    assert choose_format("application/openmetrics-text; version=1.0.0")[0] is True
    assert choose_format("text/plain;version=0.0.4")[0] is False


def test_values_written_in_bulk_read_as_each_written_alone():
    """A plain family's lines are written in bulk (repr of ints and finite floats); a family
    holding anything else (NaN, infinities, a pre-aggregated bool, an int past a float's range
    beside a float, a float subclass, finite floats whose sum overflows) is written value by
    value, and a series new since the last render gets its text among the kept ones."""

    class Tagged(float):
        def __repr__(self) -> str:
            return "tagged"

    g = MetricKind.GAUGE
    cases = {
        "plain": ([1, 2.5, -0.0, 1e-300, 2**70], ["1", "2.5", "-0.0", "1e-300", str(2**70)]),
        "special": ([1, math.nan, math.inf, -math.inf], ["1", "NaN", "+Inf", "-Inf"]),
        "overflow": ([1.7e308, 1.7e308], ["1.7e+308", "1.7e+308"]),
        "huge": ([10**400, 1.5], [str(10**400), "1.5"]),
        "subclass": ([Tagged(2.0), 3.0], ["2.0", "3.0"]),
    }
    p = Pipeline()
    metrics = [Metric(f"v.{name}", g, v, "", "d", {"i": str(i)}) for name, (vs, _) in cases.items()
               for i, v in enumerate(vs)]
    metrics.append(Metric("v.pre", MetricKind.COUNTER, True, "", "d", {"i": "0"}, start_time_ns=1))
    p.record("s", metrics)
    body = render(p.batch().families(), {}).decode()
    lines = [line for line in body.splitlines() if not line.startswith("#")]
    expected = [f'v_{name}{{i="{i}"}} {text}' for name, (_, texts) in sorted(cases.items())
                for i, text in enumerate(texts)]
    assert sorted(lines) == sorted(expected + ['v_pre_total{i="0"} 1.0'])
    # a series new since the last render, among series whose text is kept (in the order of
    # the report, which named every series of the family)
    p.record("s", metrics[:2] + [Metric("v.plain", g, 7.25, "", "d", {"i": "new"})] + metrics[2:])
    body = render(p.batch().families(), {}).decode()
    plain = [f'v_plain{{i="{i}"}} {t}' for i, t in enumerate(cases["plain"][1])]
    assert [line for line in body.splitlines() if line.startswith("v_plain{")] == \
        plain[:2] + ['v_plain{i="new"} 7.25'] + plain[2:]
