"""The pipeline's bookkeeping, by outcome: what record and push accept, refuse, count, version and
expire; what a batch, a selection and a snapshot hold."""

from __future__ import annotations

import logging
import time

import pytest

from bridge import HistogramValue, Metric, MetricKind
from bridge.pipeline import Pipeline

G, C, H = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.HISTOGRAM
NOW = 1_700_000_000_000_000_000


@pytest.fixture
def p():
    pipeline = Pipeline(cardinality_limit=3)
    yield pipeline
    pipeline.shutdown()


def values(p: Pipeline, name: str) -> dict[tuple, object]:
    fam = p.family(name)
    return {} if fam is None else {s.key: s.value for s in fam.series.values()}


def test_the_cardinality_limit_is_at_least_one():
    with pytest.raises(ValueError, match="cardinality_limit must be at least 1"):
        Pipeline(cardinality_limit=0)
    one = Pipeline(cardinality_limit=1)
    assert one.record("s", [Metric("a", G, 1, attributes={"k": "1"}), Metric("a", G, 2, attributes={"k": "2"})]) == 1
    assert one.dropped == {"cardinality": 1}


def test_record_returns_what_it_accepted_and_counts_each_drop(p):
    metrics = [Metric("a", G, float(i), attributes={"k": str(i)}) for i in range(5)]
    metrics += [Metric("a", C, 1), Metric("a", G, 1, "s"), Metric("9bad", G, 1), Metric("9bad", G, 2)]
    assert p.record("s", metrics, NOW) == 3
    assert p.dropped == {"cardinality": 2, "conflict": 2, "invalid_name": 2}
    assert values(p, "a") == {(("k", "0"),): 0.0, (("k", "1"),): 1.0, (("k", "2"),): 2.0}
    assert p.family("9bad") is None


def test_series_a_source_no_longer_reports_free_their_slots_in_the_same_record(p):
    p.record("s", [Metric("a", G, float(i), attributes={"k": str(i)}) for i in range(3)], NOW)
    got = p.record("s", [Metric("a", G, float(i), attributes={"k": str(i)}) for i in range(3, 6)], NOW + 1)
    assert got == 3 and p.dropped == {}
    assert values(p, "a") == {(("k", "3"),): 3.0, (("k", "4"),): 4.0, (("k", "5"),): 5.0}
    assert p.expired_total == 3
    fam = p.family("a")
    assert all(s.first_ns == NOW + 1 and s.time_ns == NOW + 1 for s in fam.series.values())


def test_versions_change_with_values_and_series_only(p):
    p.record("s", [Metric("a", G, 1.0, attributes={"k": "1"})], NOW)
    fam = p.family("a")
    v, stamp = fam.version, fam.stamp
    p.record("s", [Metric("a", G, 1.0, attributes={"k": "1"})], NOW + 1)
    assert fam.version == v and fam.stamp == stamp + 1
    p.record("s", [Metric("a", G, 1, attributes={"k": "1"})], NOW + 2)  # same number, another type
    assert fam.version == v + 1
    p.record("s", [Metric("a", G, 2, attributes={"k": "1"})], NOW + 3)
    assert fam.version == v + 2
    p.record("s", [Metric("a", G, 2, attributes={"k": "1"}), Metric("a", G, 2, attributes={"k": "2"})], NOW + 4)
    assert fam.version == v + 4  # a new series, and its first value
    p.record("s", [Metric("a", G, 2, attributes={"k": "1"})], NOW + 5)  # k=2 expires
    assert fam.version == v + 5


def test_bools_are_recorded_as_ints_and_times_default_to_now(p):
    p.record("s", [Metric("up", G, True), Metric("t", G, 1.0, timestamp_ns=5, start_time_ns=3)], NOW)
    (up,) = p.family("up").series.values()
    assert up.value == 1 and up.value.__class__ is int and up.time_ns == NOW and up.start_ns is None
    (t,) = p.family("t").series.values()
    assert (t.time_ns, t.start_ns, t.first_ns) == (5, 3, NOW)


def test_a_series_reported_by_another_source_moves_to_it(p):
    p.record("one", [Metric("a", G, 1.0)], NOW)
    p.record("two", [Metric("a", G, 2.0)], NOW + 1)
    (s,) = p.family("a").series.values()
    assert s.source == "two" and s.value == 2.0
    p.record("one", [], NOW + 2)  # the first source's report no longer holds it: it is not the first's to expire
    assert values(p, "a") == {(): 2.0}
    p.record("two", [], NOW + 3)
    assert values(p, "a") == {} and p.families() == [] and p.expired_total == 1


def test_remove_source_takes_its_parts_too(p):
    p.record("rx", [Metric("a", G, 1.0)], NOW)
    p.push("rx#part", [Metric("b", G, 1.0)], NOW)
    p.push("rxother", [Metric("c", G, 1.0)], NOW)
    p.remove_source("rx")
    assert [f.name for f in p.families()] == ["c"]
    assert p.sources() == ["rxother"]


def test_push_refusals_are_counted_and_named(p):
    p.push("rx", [Metric("a", G, 1.0)], NOW)
    res = p.push("rx", [Metric("a", C, 1.0), Metric("9x", G, 1.0), Metric("b", G, 1.0), Metric("c", G, 1.0),
                        Metric("a", G, 2.0)], NOW, max_families=2)
    assert res.accepted == 2 and res.rejected == {"conflict": 1, "invalid_name": 1, "family_limit": 1}
    assert res.message == (
        "1 rejected (conflict): a: reported as counter '', family is gauge ''; "
        "1 rejected (family_limit): c: rx has made 2 metric families already (max_families); "
        "1 rejected (invalid_name): 9x: not an OpenTelemetry instrument name")
    assert p.dropped == {"conflict": 1, "invalid_name": 1, "family_limit": 1}
    assert values(p, "a") == {(): 2.0} and values(p, "b") == {(): 1.0} and p.family("c") is None


def test_push_series_and_cardinality_limits(p):
    res = p.push("rx", [Metric("a", G, float(i), attributes={"k": str(i)}) for i in range(3)], NOW, max_series=2)
    assert res.accepted == 2 and res.rejected == {"series_limit": 1}
    assert res.message == "1 rejected (series_limit): a: rx holds 2 series already (max_series)"
    res = p.push("rx", [Metric("a", G, 9.0, attributes={"k": "0"})], NOW, max_series=2)  # an existing series
    assert res.accepted == 1 and values(p, "a")[(("k", "0"),)] == 9.0
    res = p.push("ry", [Metric("a", G, float(i), attributes={"k": str(i)}) for i in range(2, 5)], NOW)
    assert res.accepted == 1 and res.rejected == {"cardinality": 2}
    assert "family already has 3 series (pipeline.cardinality_limit)" in res.message


def test_push_finds_a_series_by_its_attributes_in_any_order(p):
    p.push("rx", [Metric("a", G, 1.0, attributes={"x": "1", "y": "2"})], NOW)
    p.push("rx", [Metric("a", G, 2.0, attributes={"y": "2", "x": "1"})], NOW + 1)
    p.push("rx", [Metric("a", G, 3.0, attributes={"y": "2", "x": "1"})], NOW + 2)
    assert values(p, "a") == {(("x", "1"), ("y", "2")): 3.0}


@pytest.mark.parametrize(("start", "t", "accepted"), [
    (None, NOW + 20, False),    # a delta without a start
    (NOW + 5, NOW + 20, False),  # starts before the total's last point
    (NOW + 10, NOW + 10, False),  # ends at it
    (NOW + 10, NOW + 20, True),  # starts at it
    (NOW + 15, NOW + 20, True),
])
def test_a_delta_must_continue_the_running_total(p, start, t, accepted):
    p.push("rx", [Metric("c", C, 5, start_time_ns=NOW, timestamp_ns=NOW + 10)], NOW, delta=True)
    res = p.push("rx", [Metric("c", C, 2, start_time_ns=start, timestamp_ns=t)], NOW, delta=True)
    (s,) = p.family("c").series.values()
    if accepted:
        assert res.accepted == 1 and (s.value, s.start_ns, s.time_ns) == (7, NOW, t) and s.accumulated
    else:
        assert res.rejected == {"out_of_order": 1} and (s.value, s.time_ns) == (5, NOW + 10)
        assert p.dropped == {"out_of_order": 1}
        assert res.message == (f"1 rejected (out_of_order): c: a delta point from {start} to {t} overlaps the "
                               f"running total, which ends at {NOW + 10}")


def test_a_delta_histogram_with_other_bounds_starts_the_total_again(p):
    h1 = HistogramValue((1.0,), (1, 1), 3.0, 2)
    h2 = HistogramValue((2.0,), (1, 0), 1.0, 1)
    p.push("rx", [Metric("h", H, h1, start_time_ns=NOW, timestamp_ns=NOW + 1)], NOW, delta=True)
    p.push("rx", [Metric("h", H, h2, start_time_ns=NOW + 1, timestamp_ns=NOW + 2)], NOW, delta=True)
    (s,) = p.family("h").series.values()
    assert s.value == h2 and s.start_ns == NOW + 1


def test_expire_pushed_by_age_on_the_monotonic_clock(p):
    p.push("rx", [Metric("a", G, 1.0, attributes={"k": "1"})], NOW)
    now = time.monotonic()
    assert p.expire_pushed("rx", 60, now=now) == 0
    assert p.expire_pushed("nobody", 0, now=now + 1000) == 0
    p.record("other", [Metric("b", G, 1.0)], NOW)
    assert p.expire_pushed("rx", 60, now=now + 62) == 1
    assert values(p, "a") == {} and values(p, "b") == {(): 1.0}
    assert p.expire_pushed("rx", 60, now=now + 1000) == 0


def test_a_pushed_series_taken_over_is_not_expired_with_the_pusher(p):
    p.push("rx", [Metric("a", G, 1.0)], NOW)
    p.record("scrape", [Metric("a", G, 2.0)], NOW + 1)
    assert p.expire_pushed("rx", 0, now=time.monotonic() + 10) == 0
    assert values(p, "a") == {(): 2.0}


def test_ingest_handles_push_expire_and_make_parts(p):
    ingest = p.ingest("rx", expire_after=30)
    ingest.max_series = 1
    assert ingest.push([Metric("a", G, 1.0, attributes={"k": "1"}), Metric("a", G, 1.0, attributes={"k": "2"})]).accepted == 1
    part = ingest.part("p1")
    assert part.source == "rx#p1" and part.expire_after == 30
    assert part.push([Metric("b", G, 1.0)]).accepted == 1
    assert ingest.expire() == 0 and part.expire() == 0
    assert sorted(p.sources()) == ["rx", "rx#p1"]


def test_drops_are_logged_once_a_minute_per_metric(p, caplog):
    with caplog.at_level(logging.WARNING, logger="monbridge.pipeline"):
        for _ in range(3):
            p.record("s", [Metric("9x", G, 1.0)], NOW)
        p.record("s", [Metric("9y", G, 1.0)], NOW)
    logged = [r.getMessage() for r in caplog.records if "dropped series" in r.getMessage()]
    assert len(logged) == 2 and p.dropped == {"invalid_name": 4}
    assert logged[0].startswith("dropped series of 9x from s (invalid_name): expected an OpenTelemetry instrument name")
    assert "monbridge_series_dropped_total{reason='invalid_name'}" in logged[0]


def test_a_batch_is_reused_while_nothing_changes(p):
    p.record("s1", [Metric("a", G, 1.0)], NOW)
    p.record("s2", [Metric("b", G, 1.0)], NOW)
    first = p.batch()
    assert p.batch() is first
    p.record("s2", [Metric("b", G, 2.0)], NOW + 1)
    second = p.batch()
    assert second is not first
    a1, b1 = first.families()
    a2, b2 = second.families()
    assert a2 is a1 and b2 is not b1
    assert [(m.name, m.value) for m in first.metrics()] == [("a", 1.0), ("b", 1.0)]
    assert [(m.name, m.value) for m in second.metrics()] == [("a", 1.0), ("b", 2.0)]
    p.record("s2", [], NOW + 2)  # b expires: the family is left out, and forgets its snapshot
    assert [f.name for f in p.batch().families()] == ["a"]
    assert p.family("b").frozen is None


def test_select_takes_families_and_series_by_selector(p):
    p.record("s", [Metric("a", G, 1.0, attributes={"k": "1"}), Metric("a", G, 2.0, attributes={"k": "2"}),
                   Metric("b", C, 3)], NOW)
    batch = p.batch()
    assert [f.name for f in batch.select(["a"]).families()] == ["a"]
    part = batch.select(['a{k="2"}', "b_total"])
    assert [(f.name, [s.value for s in f.series]) for f in part.families()] == [("a", [2.0]), ("b", [3])]
    assert batch.select(['a{k=~"1|2"}']).families()[0] is batch.families()[0]
    assert batch.select(["nothing"]).families() == ()
    assert part.time_ns == batch.time_ns and part.resource is batch.resource


def test_snapshot_is_every_series_as_a_metric(p):
    p.record("s", [Metric("a", G, 1.0, "By", "d", {"k": "1"}, timestamp_ns=7, start_time_ns=3)], NOW)
    assert p.snapshot() == [Metric("a", G, 1.0, "By", "d", {"k": "1"}, 7, 3)]


def test_imported_names_must_be_prometheus_names(p):
    assert p.record("scrape", [Metric("9x", G, 1.0), Metric("ok_name:x", G, 1.0), Metric("my.self", G, 1.0)],
                    NOW, prometheus_names=True) == 2
    assert p.dropped == {"invalid_name": 1}
    assert p.family("ok_name:x").native and not p.family("my.self").native


def test_a_push_of_the_same_value_at_a_new_time_makes_a_new_snapshot(p):
    p.push("rx", [Metric("a", G, 1.0, timestamp_ns=NOW)], NOW)
    first = p.batch()
    p.push("rx", [Metric("a", G, 1.0, timestamp_ns=NOW + 5)], NOW)
    second = p.batch()
    assert second is not first
    assert [m.timestamp_ns for m in first.metrics()] == [NOW] and [m.timestamp_ns for m in second.metrics()] == [NOW + 5]
    assert repr(second.families()[0]) == "FamilySnapshot('a', gauge, 1 series)"


def test_a_batch_as_otel_data(p):
    p.record("s", [Metric("g", G, 1.5, timestamp_ns=NOW + 9), Metric("c", C, 3)], NOW)
    p.record("imp", [Metric("h", H, HistogramValue((1.0,), (1, 2), 4.0, 3), start_time_ns=5)], NOW)
    batch = p.batch()
    data = batch.to_otel()
    assert batch.to_otel() is data  # built once
    (rm,) = data.resource_metrics
    assert rm.resource is p.resource
    scopes = {sm.scope.name: {m.name: m for m in sm.metrics} for sm in rm.scope_metrics}
    assert set(scopes) == {"monbridge", "monbridge.preaggregated"}
    own, pre = scopes["monbridge"], scopes["monbridge.preaggregated"]
    assert set(own) == {"c", "g"} and set(pre) == {"h"}
    (g,) = own["g"].data.data_points
    assert (g.value, g.start_time_unix_nano, g.time_unix_nano) == (1.5, NOW + 9, NOW + 9)  # a gauge: its own time
    (c,) = own["c"].data.data_points
    assert (c.value, c.start_time_unix_nano, c.time_unix_nano) == (3, NOW, NOW)  # a sum: since the series began
    assert own["c"].data.is_monotonic
    (h,) = pre["h"].data.data_points
    assert (h.count, h.start_time_unix_nano, list(h.bucket_counts)) == (3, 5, [1, 2])


def test_series_points_tell_totals_built_from_deltas(p):
    p.record("s", [Metric("r", C, 1)], NOW)
    p.push("rx", [Metric("d", C, 2, start_time_ns=NOW, timestamp_ns=NOW + 1)], NOW, delta=True)
    fams = {f.name: f for f in p.batch().families()}
    assert [s.accumulated for s in fams["r"].series] == [False]
    assert [s.accumulated for s in fams["d"].series] == [True]
    (point,) = fams["d"].series
    assert (point.value, point.start_ns, point.time_ns, point.first_ns) == (2, NOW, NOW + 1, NOW)
