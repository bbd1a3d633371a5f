"""The renderer's pieces on their edges: unit words, exponential buckets that meet, the Prometheus
view of a series, kept texts, pushed target_info."""

from __future__ import annotations

import math

import pytest

from bridge import ExponentialHistogramValue, HistogramValue, Metric, MetricKind, SummaryValue
from bridge.api import PrometheusView
from bridge.exposition import as_histogram, prom_family, prometheus_unit, render, series_view
from bridge.pipeline import Pipeline

G, C, H, S, E = (MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.HISTOGRAM, MetricKind.SUMMARY,
                 MetricKind.EXPONENTIAL_HISTOGRAM)


# The unit words of the OpenTelemetry → Prometheus compatibility rules (UCUM unit → word).
@pytest.mark.parametrize(("unit", "word"), [
    ("d", "days"), ("h", "hours"), ("min", "minutes"), ("s", "seconds"), ("ms", "milliseconds"),
    ("us", "microseconds"), ("ns", "nanoseconds"), ("By", "bytes"), ("KiBy", "kibibytes"), ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"), ("TiBy", "tibibytes"), ("KBy", "kilobytes"), ("MBy", "megabytes"), ("GBy", "gigabytes"),
    ("TBy", "terabytes"), ("m", "meters"), ("V", "volts"), ("A", "amperes"), ("J", "joules"), ("W", "watts"),
    ("g", "grams"), ("Cel", "celsius"), ("Hz", "hertz"), ("%", "percent"),
    ("1/s", "1_per_second"), ("/s", "per_second"), ("m/s", "meters_per_second"), ("By/min", "bytes_per_min"),
    ("{x}/h", "per_hour"), ("/d", "per_day"), ("/w", "per_week"), ("/mo", "per_month"), ("/y", "per_year"),
    ("/m", "per_minute"), ("furlongs", "furlongs"), ("a.b-c", "a_b_c"), ("__x__", "x"), ("{only}", ""), ("", ""),
])
def test_unit_words(unit, word):
    assert prometheus_unit(unit, G) == word


def test_unit_one_is_ratio_for_gauges_only():
    assert prometheus_unit("1", G) == "ratio"
    assert prometheus_unit("1", C) == "" and prometheus_unit("1", H) == ""


def test_exponential_buckets_that_meet_the_zero_bucket_are_one_bucket():
    # scale 0: positive bucket -1 is (0.5, 1], its upper bound 1.0, the zero threshold's too
    h = as_histogram(ExponentialHistogramValue(0, 2, -1, (3, 4), 0, (), 9, 5.0, 1.0))
    assert h.bounds == (1.0, 2.0) and h.bucket_counts == (5, 4, 0)
    assert (h.sum, h.count) == (5.0, 9)


def test_exponential_buckets_past_float_range_go_to_the_inf_buckets():
    """Bounds past a float's range: a negative one is -Inf (written ``-Inf``), positive ones join +Inf."""
    h = as_histogram(ExponentialHistogramValue(0, 0, 1020, (1, 1, 1, 1, 1), 1030, (2,), 7, None, 0.0, -1.0, 2.0))
    assert h.bounds == (-math.inf, 2.0**1021, 2.0**1022, 2.0**1023)
    assert h.bucket_counts == (2, 1, 1, 1, 2)
    assert math.isnan(h.sum) and (h.min, h.max) == (-1.0, 2.0)
    p = Pipeline()
    p.record("s", [Metric("e", E, ExponentialHistogramValue(0, 0, 0, (1,), 1030, (2,), 3))])
    assert render(p.families(), {}).decode().splitlines()[2:5] == [
        'e_bucket{le="-Inf"} 2', 'e_bucket{le="2.0"} 3', 'e_bucket{le="+Inf"} 3']


def _series(p: Pipeline, name: str):
    fam = p.family(name)
    (s,) = fam.series.values()
    return prom_family(fam), s


def test_series_view_of_every_kind():
    p = Pipeline()
    p.record("s", [
        Metric("g", G, 1.0, attributes={"b": "2", "a": "1"}),
        Metric("c", C, 1),
        Metric("odd.names", G, 1.0, attributes={"a.b": "x\ny", "n": 5, "c\\d": 'q"\\'}),
        Metric("h", H, HistogramValue((0.5, 1.0), (1, 1, 1), 2.0, 3), "s"),
        Metric("q", S, SummaryValue(((0.5, 1.0), (0.9, 2.0)), 3.0, 2)),
        Metric("e", E, ExponentialHistogramValue(0, 0, 0, (1,), 0, (), 1, 1.5)),
    ])
    pf, s = _series(p, "g")
    assert series_view(pf, s, s.value) == PrometheusView("g", (("a", "1"), ("b", "2")))
    pf, s = _series(p, "c")
    assert series_view(pf, s, s.value) == PrometheusView("c_total", ())
    pf, s = _series(p, "odd.names")
    assert series_view(pf, s, s.value) == PrometheusView(
        "odd_names", (("a_b", "x\ny"), ("c_d", 'q"\\'), ("n", "5")))
    pf, s = _series(p, "h")
    assert series_view(pf, s, s.value) == PrometheusView("h_seconds", (), ("0.5", "1.0", "+Inf"))
    pf, s = _series(p, "q")
    assert series_view(pf, s, s.value) == PrometheusView("q", (), ("0.5", "0.9"))
    pf, s = _series(p, "e")
    assert series_view(pf, s, s.value) == PrometheusView("e", (), ("2.0", "+Inf"))
    p.record("s", [Metric("h", H, HistogramValue((0.25,), (1, 1), 2.0, 2), "s")])
    pf, s = _series(p, "h")
    assert series_view(pf, s, s.value).le == ("0.25", "+Inf")  # new bounds: new texts


def test_a_text_asked_for_again_is_kept_across_a_change(monkeypatch):
    from bridge import exposition

    renders: list[str] = []
    real = exposition._render_family
    monkeypatch.setattr(exposition, "_render_family", lambda fam, om: renders.append(fam.name) or real(fam, om))
    p = Pipeline()
    p.record("s", [Metric("a", G, 1.0)])
    first = render(p.families(), {})
    assert render(p.families(), {}) == first and renders == ["a"]  # asked for again: served as kept
    p.record("s", [Metric("a", G, 2.0)])
    second = render(p.families(), {})
    assert second == b"# HELP a a\n# TYPE a gauge\na 2.0\n" and renders == ["a", "a"]
    assert render(p.families(), {}) == second and renders == ["a", "a"]  # kept, as its last text was asked for
    assert render(p.families(), {}, openmetrics=True) == b"# HELP a a\n# TYPE a gauge\na 2.0\n# EOF\n"
    assert renders == ["a", "a", "a"]


@pytest.mark.parametrize("openmetrics", [False, True])
def test_pushed_target_info_series_join_the_one_target_info_family(openmetrics):
    p = Pipeline()
    p.record("otlp", [Metric("target_info", G, 1, "", "d", {"job": "x", "instance": "i:1"})], prometheus_names=True)
    body = render(p.families(), {"service.name": "me"}, openmetrics=openmetrics).decode()
    head = "# HELP target Target metadata\n# TYPE target info\n" if openmetrics else \
        "# HELP target_info Target metadata\n# TYPE target_info gauge\n"
    assert body == (head + 'target_info{service_name="me"} 1\ntarget_info{instance="i:1",job="x"} 1\n'
                    + ("# EOF\n" if openmetrics else ""))
    alone = render(p.families(), {}, openmetrics=False).decode()
    assert alone == '# HELP target_info d\n# TYPE target_info gauge\ntarget_info{instance="i:1",job="x"} 1\n'
