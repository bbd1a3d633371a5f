"""The metric pipeline: collected series reaching the OTLP view from the cache, limits counted,
series expiring, pre-aggregated data reaching exporters unchanged. Assertions go through the
OTLP encoding of the pipeline (what an OTLP push sends), decoded with opentelemetry-proto."""

from __future__ import annotations

import logging

import pytest

from bridge import HistogramValue, Metric, MetricKind
from bridge.exposition import render
from bridge.pipeline import Pipeline
from tests.otlp_view import attributes, encode, metrics_of, number, points, scopes_of


def gauge(name, value, **attrs):
    return Metric(name, MetricKind.GAUGE, value, "1", "", attrs)


def test_collectors_reach_otel_from_the_cache():
    p = Pipeline()
    p.record("c", [Metric("system.cpu.time", MetricKind.COUNTER, 12.5, "s", "cpu", {"cpu.mode": "user"}),
                   Metric("system.memory.usage", MetricKind.UP_DOWN_COUNTER, 100, "By", "mem", {"state": "used"})])
    requests = encode(p)
    data = metrics_of(requests)
    cpu = data["system.cpu.time"]
    assert cpu.WhichOneof("data") == "sum" and cpu.sum.is_monotonic and cpu.unit == "s"
    assert [(attributes(pt.attributes), number(pt)) for pt in cpu.sum.data_points] == [({"cpu.mode": "user"}, 12.5)]
    mem = data["system.memory.usage"]
    assert mem.WhichOneof("data") == "sum" and not mem.sum.is_monotonic
    resource = attributes(requests[0].resource_metrics[0].resource.attributes)
    assert resource["service.name"] == "monbridge"
    assert "host.name" in resource
    # A second read sees the cached value again; nothing re-collects.
    p.record("c", [Metric("system.cpu.time", MetricKind.COUNTER, 13.0, "s", "cpu", {"cpu.mode": "user"}),
                   Metric("system.memory.usage", MetricKind.UP_DOWN_COUNTER, 100, "By", "mem", {"state": "used"})])
    assert [number(pt) for pt in points(metrics_of(p)["system.cpu.time"])] == [13.0]


def test_resource_attributes_from_environment(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=infra")
    p = Pipeline()
    attrs = p.resource.attributes
    assert attrs["deployment.environment"] == "prod" and attrs["team"] == "infra"
    assert attrs["service.name"] == "monbridge"


def test_cardinality_limit_drops_are_counted_and_logged(caplog):
    p = Pipeline(cardinality_limit=2500)
    with caplog.at_level(logging.WARNING, "monbridge.pipeline"):
        accepted = p.record("c", [gauge("many", float(i), i=str(i)) for i in range(3000)])
    assert accepted == 2500
    assert p.dropped["cardinality"] == 500
    assert sum("monbridge_series_dropped_total" in r.getMessage() for r in caplog.records) == 1
    # No second cap folds series silently: all 2,500 arrive.
    pts = points(metrics_of(p)["many"])
    assert len(pts) == 2500
    assert not any("otel.metric.overflow" in attributes(pt.attributes) for pt in pts)
    body = render(p.families(), {}).decode()
    assert body.count("\nmany_ratio{") == 2500


def test_series_missing_from_next_collection_expire_everywhere():
    p = Pipeline(cardinality_limit=10)
    p.record("proc", [gauge("process.threads", 1.0, pid=str(i)) for i in range(10)])
    p.record("proc", [gauge("process.threads", 1.0, pid=str(i)) for i in range(5)])
    assert p.expired_total == 5
    assert len(points(metrics_of(p).get("process.threads"))) == 5
    assert render(p.families(), {}).decode().count("process_threads_ratio{") == 5
    # Expired series free their slots.
    p.record("proc", [gauge("process.threads", 2.0, pid=str(i)) for i in range(100, 110)])
    assert p.dropped["cardinality"] == 0
    pts = points(metrics_of(p).get("process.threads"))
    assert sorted(attributes(pt.attributes)["pid"] for pt in pts) == [str(i) for i in range(100, 110)]
    p.remove_source("proc")
    assert render(p.families(), {}).decode() == ""
    assert points(metrics_of(p).get("process.threads")) == []


def test_histogram_end_to_end_is_not_reaggregated():
    p = Pipeline()
    h = HistogramValue(bounds=(0.1, 0.5, 1.0), bucket_counts=(3, 4, 2, 1), sum=4.25, count=10, min=0.01, max=2.5)
    p.record("import", [Metric("http.server.duration", MetricKind.HISTOGRAM, h, "s", "latency",
                               {"route": "/a"}, timestamp_ns=2_000, start_time_ns=1_000),
                        Metric("requests", MetricKind.COUNTER, 42, "", "reqs", {}, timestamp_ns=2_000,
                               start_time_ns=500)])
    requests = encode(p)
    data = metrics_of(requests)
    m = data["http.server.duration"]
    assert m.WhichOneof("data") == "histogram"
    (pt,) = m.histogram.data_points
    assert (pt.start_time_unix_nano, pt.time_unix_nano) == (1_000, 2_000)
    assert list(pt.bucket_counts) == [3, 4, 2, 1] and list(pt.explicit_bounds) == [0.1, 0.5, 1.0]
    assert (pt.sum, pt.count, pt.min, pt.max) == (4.25, 10, 0.01, 2.5)
    (c,) = points(data["requests"])
    assert (c.start_time_unix_nano, number(c)) == (500, 42)
    # Pre-aggregated data is exported as it came, in its own scope.
    assert scopes_of(requests)["http.server.duration"] == "monbridge.preaggregated"
    body = render(p.families(), {}).decode()
    assert 'http_server_duration_seconds_bucket{route="/a",le="0.1"} 3' in body
    assert 'http_server_duration_seconds_bucket{route="/a",le="0.5"} 7' in body
    assert 'http_server_duration_seconds_bucket{route="/a",le="+Inf"} 10' in body
    assert 'http_server_duration_seconds_count{route="/a"} 10' in body
    assert "requests_total 42" in body


def test_conflicting_kind_is_dropped_and_the_rest_kept():
    p = Pipeline()
    p.record("a", [gauge("x", 1.0)])
    n = p.record("b", [Metric("x", MetricKind.COUNTER, 2.0, "1"), gauge("y", 3.0)])
    assert n == 1 and p.dropped["conflict"] == 1
    assert p.family("y") is not None


def test_invalid_name_dropped():
    p = Pipeline()
    assert p.record("a", [gauge("9bad name", 1.0), gauge("ok", 1.0)]) == 1
    assert p.dropped["invalid_name"] == 1


def test_histogram_value_validates_layout():
    with pytest.raises(ValueError, match="bucket counts"):
        HistogramValue((1.0,), (1,), 1.0, 1)


def test_attribute_order_does_not_make_a_new_series():
    p = Pipeline()
    p.record("s", [Metric("g", MetricKind.GAUGE, 1.0, "", "", {"a": "1", "b": "2"})])
    p.record("s", [Metric("g", MetricKind.GAUGE, 2.0, "", "", {"b": "2", "a": "1"})])
    fam = p.family("g")
    assert len(fam.series) == 1 and next(iter(fam.series.values())).value == 2.0
    p.record("s", [])
    assert not fam.series and not fam.aliases  # aliases go with their series


def test_every_invalid_metric_is_counted():
    p = Pipeline()
    p.record("s", [gauge("bad name", 1.0, i="1"), gauge("bad name", 1.0, i="2")])
    assert p.dropped["invalid_name"] == 2


def test_paused_gc_nests_and_restores_what_was_there():
    import gc

    from bridge.pipeline import paused_gc

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def _values(p: Pipeline, name: str) -> dict:
    return {tuple(sorted(s.attributes.items())): s.value for s in p.family(name).series.values()}


def test_record_finds_each_series_whatever_the_order_of_the_report():
    """A source's series are looked up by their position in its last report first; a report in
    another order, with series moved between families, added or left out, still lands every
    value on its own series and expires exactly the absent ones."""
    p = Pipeline()
    a = [Metric("t.a", MetricKind.GAUGE, 1.0, "1", "", {"k": "x"}), Metric("t.a", MetricKind.GAUGE, 2.0, "1", "", {"k": "y"}),
         Metric("t.b", MetricKind.GAUGE, 3.0, "1", "", {"k": "x"})]
    assert p.record("src", a) == 3
    first = {k: s for k, s in p.family("t.a").series.items()}
    # attributes given in key order: the key is the alias, no tuple of aliases is kept per series
    assert all(s.aliases == () and p.family("t.a").aliases[k] is s for k, s in first.items())
    # reversed, new values; the same attributes in the other family trade places
    b = [Metric("t.b", MetricKind.GAUGE, 30.0, "1", "", {"k": "x"}), Metric("t.a", MetricKind.GAUGE, 20.0, "1", "", {"k": "y"}),
         Metric("t.a", MetricKind.GAUGE, 10.0, "1", "", {"k": "x"})]
    assert p.record("src", b) == 3
    assert _values(p, "t.a") == {(("k", "x"),): 10.0, (("k", "y"),): 20.0}
    assert _values(p, "t.b") == {(("k", "x"),): 30.0}
    assert all(p.family("t.a").series[k] is s for k, s in first.items())  # the same series, updated in place
    # one left out (it expires), one new in its place
    c = [Metric("t.b", MetricKind.GAUGE, 31.0, "1", "", {"k": "x"}), Metric("t.a", MetricKind.GAUGE, 5.0, "1", "", {"k": "z"}),
         Metric("t.a", MetricKind.GAUGE, 11.0, "1", "", {"k": "x"})]
    assert p.record("src", c) == 3
    assert _values(p, "t.a") == {(("k", "x"),): 11.0, (("k", "z"),): 5.0}
    assert p.expired_total == 1
    # the series that expired comes back as a new series, at a position that named another
    assert p.record("src", b) == 3
    assert _values(p, "t.a") == {(("k", "x"),): 10.0, (("k", "y"),): 20.0}
    assert p.family("t.a").series[(("k", "y"),)] is not first[(("k", "y"),)]


def test_record_by_position_never_revives_a_series_another_source_expired():
    """A series a source reported moves to another source that reports it, then expires from
    that one; the first source's next report (same position) makes it a new, live series."""
    p = Pipeline()
    m = [Metric("t.a", MetricKind.GAUGE, 1.0, "1", "", {"k": "x"})]
    p.record("one", m)
    old = p.family("t.a").series[(("k", "x"),)]
    p.record("two", [Metric("t.a", MetricKind.GAUGE, 2.0, "1", "", {"k": "x"})])  # ownership moves
    assert old.source == "two"
    p.record("two", [])  # and it expires there
    assert not p.family("t.a").series
    p.record("one", [Metric("t.a", MetricKind.GAUGE, 3.0, "1", "", {"k": "x"})])
    new = p.family("t.a").series[(("k", "x"),)]
    assert new is not old and new.value == 3.0 and new.source == "one"
    # and a source whose series another one took reports it back: ownership returns
    p.record("two", [Metric("t.a", MetricKind.GAUGE, 4.0, "1", "", {"k": "x"})])
    p.record("one", [Metric("t.a", MetricKind.GAUGE, 5.0, "1", "", {"k": "x"})])
    assert new.source == "one" and new.value == 5.0 and p.family("t.a").series[(("k", "x"),)] is new
    p.record("two", [])  # "two" owns nothing now: nothing expires
    assert p.family("t.a").series[(("k", "x"),)] is new


def _state(p):
    """Every family's series (key, value and its type, start, time, source) in the family's
    order, its version's and stamp's having changed, the rendered body and the drops."""
    fams = {}
    for name, fam in sorted(p._families.items()):
        fams[name] = [(k, s.value, type(s.value), s.start_ns, s.time_ns, s.source, s.attributes)
                      for k, s in fam.series.items()]
    owned = {src: sorted(s.key for s in ss) for src, ss in p._owned.items()}
    return fams, owned, render(p.batch().families(), {}), dict(p.dropped), p.expired_total


def _reports(rng, rounds):
    """Random collections of two sources: mostly the same series in the same order with new
    values, sometimes reordered, one left out or added, a kind or unit changed, a bool, a
    series reported twice, timestamps and start times, another source taking series over."""
    import random as _random

    assert isinstance(rng, _random.Random)
    base = [(f"f.{i % 3}", {"b": str(j), "a": j % 2} if i % 2 else {"a": j % 2, "b": str(j)})
            for i in range(3) for j in range(5)]
    for r in range(rounds):
        src = "one" if rng.random() < 0.8 else "two"
        rows = list(base)
        what = rng.randrange(10)
        if what == 0:
            rng.shuffle(rows)
        elif what == 1 and rows:
            rows.pop(rng.randrange(len(rows)))
        elif what == 2:
            rows.insert(rng.randrange(len(rows) + 1), (rows[0][0], {"a": 9, "b": f"new{r % 4}"}))
        elif what == 3:
            rows.insert(rng.randrange(len(rows)), rows[rng.randrange(len(rows))])
        rows.sort(key=lambda x: x[0])  # grouped by name, as collectors report
        out = []
        for name, attrs in rows:
            kind, unit = MetricKind.GAUGE, "1"
            if what == 4 and rng.random() < 0.2:
                unit = "By"  # a conflict with the family
            if what == 5 and rng.random() < 0.2:
                kind = MetricKind.COUNTER
            v = rng.choice([1, 2.5, float(rng.randrange(3)), True, r]) if what == 6 else float(rng.randrange(3))
            ts = rng.choice([None, 0, 1_000 + r]) if what == 7 else None
            st = rng.choice([None, 7]) if what == 8 else None
            out.append(Metric(name, kind, v, unit, "", dict(attrs), ts, st))
        yield src, out


def test_recording_in_place_has_the_outcome_of_recording_series_by_series(monkeypatch):
    """A report of a whole family in the order the family keeps (recorded in place, by
    position) leaves the pipeline exactly as the series-by-series path does, whatever comes:
    reorders, series left out and added, conflicts, bools, duplicates, times, another source.
    Each round is rendered on both sides: a value changed in place without a new family
    version would be served from the stale cached text."""
    import random

    import bridge.pipeline as pipeline_module

    in_place = pipeline_module._record_in_place
    used = []

    def counted(*args):
        refs = in_place(*args)
        used.append(refs is not None)
        return refs

    fast, slow = Pipeline(), Pipeline()
    monkeypatch.setattr(pipeline_module, "_record_in_place", counted)
    for i, (src, metrics) in enumerate(_reports(random.Random(7), 200)):
        accepted = fast.record(src, metrics, now_ns=10_000 + i)
        with monkeypatch.context() as m:
            m.setattr(pipeline_module, "_record_in_place", lambda *a: None)
            assert slow.record(src, metrics, now_ns=10_000 + i) == accepted
        assert _state(fast) == _state(slow), f"report {i}"
    assert used.count(True) > 150 and used.count(False) > 50  # both paths were taken, often


def test_a_full_report_in_another_order_is_kept_in_that_order_and_recorded_in_place_next(monkeypatch):
    import bridge.pipeline as pipeline_module

    in_place = pipeline_module._record_in_place
    used = []
    monkeypatch.setattr(pipeline_module, "_record_in_place", lambda *a: used.append(in_place(*a)) or used[-1])
    p = Pipeline()
    p.record("s", [gauge("m", 1.0, k=k) for k in "abc"])
    p.record("s", [gauge("m", 2.0, k=k) for k in "cab"])  # another order: series by series, then kept so
    assert [s.key for s in p.family("m").series.values()] == [(("k", k),) for k in "cab"]
    assert used[-1] is None
    p.record("s", [gauge("m", 3.0, k=k) for k in "cab"])  # the same order again: in place
    assert used[-1] is not None and [s.value for s in p.family("m").series.values()] == [3.0] * 3
    # a family that holds another source's series too keeps its order (no source reorders the
    # others' series), and each report goes series by series
    p.record("t", [gauge("m", 4.0, k="z")])
    p.record("s", [gauge("m", 5.0, k=k) for k in "abc"])
    assert [s.key[0][1] for s in p.family("m").series.values()] == list("cabz")
    assert used[-1] is None and _values(p, "m") == {(("k", "a"),): 5.0, (("k", "b"),): 5.0, (("k", "c"),): 5.0,
                                                    (("k", "z"),): 4.0}
