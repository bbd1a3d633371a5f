"""DogStatsD aggregation per interval: exact values against the Datadog Agent's definitions
(counter.go, gauge.go, set.go, histogram.go), distributions against ddsketch's own sketch and
OTel's exponential bucket bounds, bounds and thread safety, and the output pushed into a real
pipeline."""

from __future__ import annotations

import math
import random
import threading
import time

import pytest
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.store import DenseStore
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import LogarithmMapping

from bridge.api import ExponentialHistogramValue, Metric, MetricKind
from bridge.pipeline import Pipeline
from integrations.datadog.aggregate import (
    BIN_LIMIT,
    DROP_REASONS,
    SCALE,
    Aggregator,
    Flushed,
    OTelMapping,
    exponential_histogram,
    new_sketch,
    percentile_suffix,
    tags_to_attributes,
)
from integrations.datadog.config import DogStatsDConfig
from integrations.datadog.dogstatsd import Sample, parse_datagram

S = 1_000_000_000
T0 = float(int(time.time()) + 30 * 86400)  # ahead of the aggregators' start (their construction), however
# long after the import of this module a test runs (a whole suite takes half an hour)


def config(**kw) -> DogStatsDConfig:
    return DogStatsDConfig(listen_udp="127.0.0.1:8125", **kw)


def aggregator(**kw) -> Aggregator:
    return Aggregator(config(**kw))


def feed(agg: Aggregator, text: str) -> None:
    p = parse_datagram(text.encode())
    assert p.errors == [], p.errors
    agg.add(p.samples)


def by_name(metrics: list[Metric]) -> dict[tuple[str, tuple], Metric]:
    out = {}
    for m in metrics:
        key = (m.name, tuple(sorted(m.attributes.items())))
        assert key not in out, f"{key} twice"
        out[key] = m
    return out


def value(metrics: list[Metric], name: str, **attrs: str) -> float:
    return by_name(metrics)[(name, tuple(sorted(attrs.items())))].value


# --------------------------------------------------------------------------- the Agent's definitions, transcribed


def agent_histogram(samples: list[tuple[float, float]], aggregates, percentiles) -> dict[str, float]:
    """pkg/metrics/histogram.go's flush, line by line: samples are (value, sample_rate)."""
    ws = sorted(((v, 1 / (r if r != 0 else 1)) for v, r in samples), key=lambda s: s[0])
    count = sum(w for _, w in ws)
    total = math.fsum(v * w for v, w in ws)
    out = {}
    for agg in aggregates:
        if agg == "max":
            out[agg] = ws[-1][0]
        elif agg == "min":
            out[agg] = ws[0][0]
        elif agg == "median":
            weight, target = 0.0, (count - 1) / 2
            for v, w in ws:
                weight += w
                if weight > target:
                    out[agg] = v
                    break
        elif agg == "avg":
            out[agg] = total / count
        elif agg == "sum":
            out[agg] = total
        elif agg == "count":
            out[agg] = count
    targets = [(p * count - 1) / 100 for p in percentiles]
    weight, idx = 0.0, 0
    for v, w in ws:
        weight += w
        while idx < len(targets) and weight > targets[idx]:
            out[f"{percentiles[idx]}percentile"] = v
            idx += 1
        if idx >= len(percentiles):
            break
    return out


# --------------------------------------------------------------------------- counts, gauges, sets


def test_counts_are_summed_and_scaled_by_the_sample_rate():
    agg = aggregator()
    feed(agg, "hits:1|c\nhits:2|c|@0.5\nhits:1:3|c|@0.25\nhits:5|c|#a:b\nhits:-2|c")
    out = agg.flush(T0)
    assert value(out.deltas, "hits") == 1 + 2 * 2 + (1 + 3) * 4 - 2  # 19
    assert value(out.deltas, "hits", a="b") == 5
    m = by_name(out.deltas)[("hits", ())]
    assert m.kind is MetricKind.COUNTER and m.start_time_ns == out.start_ns and m.timestamp_ns == out.end_ns
    assert out.gauges == []


def test_gauges_keep_the_last_value_sets_count_distinct_members():
    agg = aggregator()
    feed(agg, "temp:10|g\ntemp:12.5|g|@0.1\ntemp:3:7|g\nusers:alice|s\nusers:bob|s\nusers:alice|s\nusers:a:b|s")
    out = agg.flush(T0)
    assert value(out.gauges, "temp") == 7.0
    assert value(out.gauges, "users") == 3.0  # alice, bob, "a:b"
    assert all(m.kind is MetricKind.GAUGE and m.start_time_ns is None for m in out.gauges)
    assert out.deltas == []


def test_a_context_is_name_type_and_sorted_distinct_tags():
    agg = aggregator()
    feed(agg, "x:1|c|#b,a:1\nx:2|c|#a:1,b\nx:4|c|#a:1,b,b\nx:8|c|#a:1\nx:16|g|#a:1")
    assert agg.contexts == 3
    out = agg.flush(T0)
    assert value(out.deltas, "x", a="1", unnamed_b="b") == 7
    assert value(out.deltas, "x", a="1") == 8
    assert value(out.gauges, "x", a="1") == 16


def test_tags_become_attributes_as_the_datadog_receiver_makes_them():
    assert tags_to_attributes(("env:prod", "flag", "url:http://x:80/", ":odd", "host:web1")) == {
        "env": "prod", "unnamed_flag": "flag", "url": "http://x:80/", "unnamed_:odd": ":odd", "host": "web1"}
    assert tags_to_attributes(("env:a", "env:b")) == {"env": "a,b"}  # two contexts never one series
    assert tags_to_attributes(()) == {}


def test_intervals_follow_each_other_and_empty_contexts_are_not_sent():
    agg = aggregator()
    feed(agg, "a:1|c\nb:1|g")
    first = agg.flush(T0)
    feed(agg, "a:2|c")
    second = agg.flush(T0 + 10)
    assert second.start_ns == first.end_ns == int(T0 * S) and second.end_ns == int((T0 + 10) * S)
    assert [m.name for m in second.deltas] == ["a"] and second.gauges == [] and value(second.deltas, "a") == 2
    assert agg.contexts == 0
    third = agg.flush(T0 + 10)  # the same instant again: an interval still moves forward
    assert third.end_ns > third.start_ns and third.deltas == third.gauges == []


# --------------------------------------------------------------------------- histograms and timers


@pytest.mark.parametrize("aggregates, percentiles", [
    (["max", "median", "avg", "count"], [0.95]),  # the Agent's defaults
    (["max", "min", "median", "avg", "sum", "count"], [0.5, 0.75, 0.9, 0.95, 0.99]),
    (["median"], [0.01, 0.999]),
])
def test_histogram_aggregates_and_percentiles_are_the_agents(aggregates, percentiles):
    rng = random.Random(7)
    agg = aggregator(histogram_aggregates=aggregates, histogram_percentiles=percentiles)
    for n in (1, 2, 3, 4, 10, 99, 100, 101, 1000):
        samples = [(round(rng.uniform(-50, 500), 3), rng.choice([1, 1, 1, 0.5, 0.25, 0.1, 0.3])) for _ in range(n)]
        agg.add([Sample(f"h{n}", "h", (v,), r, (), None, None) for v, r in samples])
        expected = agent_histogram(samples, aggregates, [percentile_suffix(p)[0] for p in percentiles])
        out = agg.flush(T0 + n)
        for suffix, want in expected.items():
            metrics = out.deltas if suffix == "count" else out.gauges
            got = value(metrics, f"h{n}.{suffix}")
            assert got == pytest.approx(want, rel=1e-12, abs=1e-9), (n, suffix)
        assert len(out.gauges) + len(out.deltas) == len(expected)


def test_histogram_exact_values():
    agg = aggregator(histogram_aggregates=["max", "min", "median", "avg", "sum", "count"],
                     histogram_percentiles=[0.5, 0.95])
    # 1..100 in a scrambled order, unit weights
    feed(agg, "\n".join(f"lat:{v}|h" for v in random.Random(1).sample(range(1, 101), 100)))
    out = agg.flush(T0)
    got = {m.name: m.value for m in out.gauges + out.deltas}
    assert got == {"lat.max": 100, "lat.min": 1, "lat.median": 50, "lat.avg": 50.5, "lat.sum": 5050,
                   "lat.count": 100, "lat.50percentile": 50, "lat.95percentile": 95}
    # weights: 10 at rate 0.5 (2), 20 (1), 30 at rate 0.25 (4): count 7, median target 3 -> 30
    feed(agg, "w:10|h|@0.5\nw:20|h\nw:30|h|@0.25")
    got = {m.name: m.value for m in agg.flush(T0 + 1).gauges + []}
    assert got["w.median"] == 30 and got["w.avg"] == pytest.approx(160 / 7) and got["w.sum"] == 160
    assert got["w.max"] == 30 and got["w.min"] == 10 and got["w.95percentile"] == 30
    feed(agg, "w:10|h|@0.5\nw:20|h\nw:30|h|@0.25")
    assert value(agg.flush(T0 + 2).deltas, "w.count") == 7


def test_histogram_count_is_a_delta_sum_other_aggregates_gauges_timers_in_ms():
    agg = aggregator()
    feed(agg, "q:5|ms|#db:a\nq:15|ms|#db:a\nh:1|h")
    out = agg.flush(T0)
    names = {(m.name, m.kind, m.unit) for m in out.gauges + out.deltas}
    assert names == {("q.max", MetricKind.GAUGE, "ms"), ("q.median", MetricKind.GAUGE, "ms"),
                     ("q.avg", MetricKind.GAUGE, "ms"), ("q.95percentile", MetricKind.GAUGE, "ms"),
                     ("q.count", MetricKind.COUNTER, ""), ("h.max", MetricKind.GAUGE, ""),
                     ("h.median", MetricKind.GAUGE, ""), ("h.avg", MetricKind.GAUGE, ""),
                     ("h.95percentile", MetricKind.GAUGE, ""), ("h.count", MetricKind.COUNTER, "")}
    assert value(out.gauges, "q.median", db="a") == 5 and value(out.gauges, "q.95percentile", db="a") == 15
    count = by_name(out.deltas)[("q.count", (("db", "a"),))]
    assert count.value == 2 and count.start_time_ns == out.start_ns


def test_sums_of_finite_values_may_overflow_but_never_raise():
    agg = aggregator(histogram_aggregates=["sum", "avg", "count"], histogram_percentiles=[])
    feed(agg, "h:1e308|h\nh:1e308|h\nh:1e308|h|@0.5\nc:1e308|c\nc:1e308|c\nd:1e308|d|@1e-9\nd:-1e308|d")
    out = agg.flush(T0)
    assert value(out.gauges, "h.sum") == math.inf and value(out.gauges, "h.avg") == math.inf
    assert value(out.deltas, "h.count") == 4 and value(out.deltas, "c") == math.inf
    (d,) = [m.value for m in out.deltas if m.name == "d"]
    assert d.count == int(1 / 1e-9) + 1 == 10 ** 9 and d.sum == math.inf  # 1/rate truncated, as the Agent does


def test_percentile_names_are_the_agents():
    assert [percentile_suffix(p) for p in (0.95, 0.5, 0.99, 0.29, 0.999)] == [
        (95, ".95percentile"), (50, ".50percentile"), (99, ".99percentile"), (29, ".29percentile"),
        (100, ".100percentile")]
    agg = aggregator(histogram_aggregates=[], histogram_percentiles=[0.951, 0.95])
    assert agg.percentiles == ((95, ".95percentile"),)  # one name, one series


# --------------------------------------------------------------------------- distributions


def reference_sketch() -> BaseDDSketch:
    return BaseDDSketch(mapping=OTelMapping(), store=DenseStore(), negative_store=DenseStore(), zero_count=0.0)


def test_the_mapping_is_otels_exponential_layout():
    m = OTelMapping()
    assert m.gamma == 2 ** (2 ** -SCALE) == 2 ** (1 / 32)
    assert m.relative_accuracy == pytest.approx(0.010830, abs=1e-6)
    otel = LogarithmMapping(SCALE)
    rng = random.Random(3)
    values = [rng.lognormvariate(0, 8) for _ in range(20000)] + [2.0 ** k for k in range(-60, 60)]
    for v in values:
        k = m.key(v)
        i = k - 1  # ddsketch key k is OTel bucket k - 1
        lower, upper = otel.get_lower_boundary(i), otel.get_lower_boundary(i + 1)
        if not math.isclose(v, lower, rel_tol=1e-12) and not math.isclose(v, upper, rel_tol=1e-12):
            assert lower < v <= upper, (v, k)
            assert otel.map_to_index(v) == i, (v, k)
    for e in range(-20, 20):  # exact powers of two: the upper bound of their bucket, as in OTel
        assert m.key(2.0 ** e) - 1 == otel.map_to_index(2.0 ** e) == e * 32 - 1


def test_distributions_match_ddsketch_and_otel_buckets():
    rng = random.Random(5)
    values = [rng.lognormvariate(3, 1.5) for _ in range(3000)] + [0.0] * 7 + [-rng.expovariate(0.1) for _ in range(500)]
    agg = aggregator()
    agg.add([Sample("lat", "d", (v,), 1.0, ("svc:a",), None, None) for v in values])
    out = agg.flush(T0)
    (sk,) = out.sketches
    assert (sk.name, sk.tags, sk.attributes, sk.start_ns, sk.end_ns) == ("lat", ("svc:a",), {"svc": "a"},
                                                                          out.start_ns, out.end_ns)
    ref = reference_sketch()
    for v in values:
        ref.add(v)
    assert sk.sketch.count == ref.count == len(values)
    assert sk.sketch.sum == pytest.approx(ref.sum, rel=1e-12)
    ordered = sorted(values)
    for q in (0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1):
        got = sk.sketch.get_quantile_value(q)
        assert got == ref.get_quantile_value(q), q
        rank = q * (len(values) - 1)  # ddsketch's rank: the value is one of its two neighbours, within 1.09 %
        assert any(abs(got - x) <= 0.0109 * abs(x) for x in (ordered[math.floor(rank)], ordered[math.ceil(rank)]))
    (m,) = [d for d in out.deltas if d.name == "lat"]
    assert m.kind is MetricKind.EXPONENTIAL_HISTOGRAM and m.start_time_ns == out.start_ns
    h = m.value
    assert isinstance(h, ExponentialHistogramValue) and h.scale == SCALE
    assert h.count == len(values) and h.zero_count == 7 and h.zero_threshold == 0.0
    assert h.min == min(values) and h.max == max(values) and h.sum == pytest.approx(sum(values), rel=1e-12)
    assert sum(h.positive_counts) == 3000 and sum(h.negative_counts) == 500
    # every value is counted in the OTel bucket whose bounds hold it
    otel = LogarithmMapping(SCALE)
    pos, neg = [0] * len(h.positive_counts), [0] * len(h.negative_counts)
    for v in values:
        if v > 0:
            pos[otel.map_to_index(v) - h.positive_offset] += 1
        elif v < 0:
            neg[otel.map_to_index(-v) - h.negative_offset] += 1
    assert tuple(pos) == h.positive_counts and tuple(neg) == h.negative_counts


def test_distribution_sample_rates_count_truncated_one_over_rate_times():
    agg = aggregator()
    feed(agg, "d:10|d|@0.5\nd:20|d|@0.3\nd:30|d\nd:40:50|d|@0.25")
    out = agg.flush(T0)
    h = out.deltas[0].value
    assert h.count == 2 + 3 + 1 + 4 + 4 and h.sum == 10 * 2 + 20 * 3 + 30 + 40 * 4 + 50 * 4
    assert out.sketches[0].sketch.count == 14


def test_a_distribution_spanning_more_than_the_bin_limit_collapses_its_lowest():
    agg = aggregator()
    values = [2.0 ** (k / 32) * 1.0001 for k in range(-3000, 3000, 1)]  # 6000 buckets
    agg.add([Sample("wide", "d", tuple(values), 1.0, (), None, None)])
    out = agg.flush(T0)
    h = out.deltas[0].value
    assert len(h.positive_counts) == BIN_LIMIT and h.count == 6000
    assert h.positive_counts[0] == 6000 - BIN_LIMIT + 1 and set(h.positive_counts[1:]) == {1}
    assert h.positive_offset + BIN_LIMIT - 1 == LogarithmMapping(SCALE).map_to_index(values[-1])


def test_new_sketch_is_the_same_layout():
    sk = new_sketch()
    for v in (1.0, 2.0, 3.0, -1.0, 0.0):
        sk.add(v)
    h = exponential_histogram(sk)
    assert (h.zero_count, h.count, h.positive_offset, h.negative_offset) == (1, 5, -1, -1)
    assert sum(h.positive_counts) == 3 and h.negative_counts == (1,)


# --------------------------------------------------------------------------- timestamps, bounds, threads


def test_timestamped_gauges_and_counts_are_not_aggregated_the_rest_dropped():
    agg = aggregator(flush_interval=10)
    feed(agg, "t:1|g|T1700000000\nt:2|g|T1700000000\nt:5|g|T1700000010\nn:3|c|T1700000000\nn:4|c|T1700000000|@0.5\n"
              "n:1|c\nh:1|h|T1700000000\nd:1|d|T1700000000\ns:x|s|T1700000000\nm:1|ms|T1700000000")
    out = agg.flush(T0 + 30)
    gauges = sorted((m.timestamp_ns, m.value) for m in out.gauges)
    assert gauges == [(1700000000 * S, 2.0), (1700000010 * S, 5.0)]
    late = [m for m in out.deltas if m.start_time_ns != out.start_ns]
    assert [(m.value, m.start_time_ns, m.timestamp_ns) for m in late] == [(7.0, 1699999990 * S, 1700000000 * S)]
    assert value([m for m in out.deltas if m not in late], "n") == 1
    assert agg.dropped == {"timestamped_unsupported": 4}


def test_contexts_beyond_max_contexts_are_dropped_and_counted():
    agg = aggregator(max_contexts=3)
    feed(agg, "a:1|c\nb:1|g\nc:1|h\nd:1|d\ne:x|s\na:2|c\nf:1|g|T1700000000\nb:2|g")
    assert agg.contexts == 3 and agg.dropped == {"max_contexts": 3}
    out = agg.flush(T0)
    assert value(out.deltas, "a") == 3 and value(out.gauges, "b") == 2
    feed(agg, "d:1|d")  # a new interval has room again
    assert agg.contexts == 1
    assert set(agg.dropped) <= set(DROP_REASONS)


def test_add_is_thread_safe():
    agg = aggregator()
    batch = parse_datagram(b"c:1|c|#t:1\nc:1|c|@0.5\nh:2|h\ns:a|s").samples

    def work(i: int) -> None:
        for _ in range(500):
            agg.add(batch)
        agg.add([Sample("s", "s", (f"m{i}",), 1.0, (), None, None)])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = agg.flush(T0)
    assert value(out.deltas, "c", t="1") == 4000 and value(out.deltas, "c") == 8000
    assert value(out.deltas, "h.count") == 4000 and value(out.gauges, "s") == 9


# --------------------------------------------------------------------------- into a real pipeline


def test_flushes_pushed_into_the_pipeline_accumulate():
    pipeline = Pipeline()
    try:
        ingest = pipeline.ingest("dogstatsd", 300)
        agg = aggregator()

        def push(out: Flushed) -> None:
            for delta, metrics in ((False, out.gauges), (True, out.deltas)):
                res = ingest.push(metrics, delta=delta)
                assert res.rejected == {}, res.message

        feed(agg, "hits:1|c|#env:a\nlat:5|d\nlat:7|d\nq:3|ms\ntemp:20|g")
        push(agg.flush(T0))
        feed(agg, "hits:2|c|@0.5|#env:a\nlat:5|d\nq:1|ms\ntemp:21|g")
        push(agg.flush(T0 + 10))
        fam = pipeline.family("hits")
        (series,) = fam.series.values()
        assert series.value == 5.0 and dict(series.key) == {"env": "a"}  # a growing counter
        (lat,) = pipeline.family("lat").series.values()
        assert lat.value.count == 3 and lat.value.sum == 17.0 and lat.value.scale == SCALE
        (qc,) = pipeline.family("q.count").series.values()
        assert qc.value == 2.0
        (temp,) = pipeline.family("temp").series.values()
        assert temp.value == 21.0
    finally:
        pipeline.shutdown()


def test_the_sorted_tag_lists_remembered_stay_bounded():
    from integrations.datadog import aggregate

    agg = aggregator(max_contexts=10 ** 6)
    agg.add([Sample("x", "g", (1.0,), 1.0, (f"b:{i}", "a"), None, None) for i in range(aggregate._CANON_CACHE + 10)])
    assert len(agg._canon) <= aggregate._CANON_CACHE
    many = tuple(f"t{i}" for i in range(aggregate._CANON_TAGS + 1))
    agg.add([Sample("y", "g", (1.0,), 1.0, many, None, None)])
    assert many not in agg._canon
    out = agg.flush(T0)
    assert value(out.gauges, "x", unnamed_a="a", b="7") == 1.0 and agg.contexts == 0
