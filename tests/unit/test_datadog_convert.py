"""integrations.datadog.convert: the pipeline's series as Datadog series and distribution points
(cumulative to delta with the first-point rule, resets, gaps, histograms, summaries), and the
request packing of integrations.datadog.export within Datadog's payload limits."""

from __future__ import annotations

import base64
import gzip
import json
import math
import zlib

import pytest

from bridge.api import ExponentialHistogramValue, HistogramValue, MetricKind, SummaryValue
from integrations.datadog.convert import COUNT, GAUGE, Converter, Point, bucket_values
from integrations.datadog.export import pack

S = 1_000_000_000
T0 = 1_700_000_000 * S
C = MetricKind.COUNTER


def conv(**kw: object) -> Converter:
    return Converter("box", ["env:test"], horizon_ns=T0, **kw)  # type: ignore[arg-type]


def one(c: Converter, p: Point) -> list[dict[str, object]]:
    return c.convert([p]).series


def counter(value: float, t: int, start: int | None = T0 + S, **attrs: str) -> Point:
    return Point("req", C, value, attrs, start, T0 + t * S)


def test_gauge_and_updown_as_gauges_with_host_and_tags() -> None:
    c = conv()
    out = c.convert([Point("temp", MetricKind.GAUGE, 21.5, {"room": "a", "host": "web1"}, None, T0 + 5 * S),
                     Point("queue", MetricKind.UP_DOWN_COUNTER, -3, {}, T0, T0 + 5 * S)]).series
    assert out[0] == {"metric": "temp", "type": GAUGE, "points": [{"timestamp": T0 // S + 5, "value": 21.5}],
                      "resources": [{"name": "web1", "type": "host"}], "tags": ["room:a", "env:test"]}
    assert out[1]["type"] == GAUGE and out[1]["points"] == [{"timestamp": T0 // S + 5, "value": -3.0}]
    assert out[1]["resources"] == [{"name": "box", "type": "host"}]


def test_first_point_of_a_series_started_after_the_horizon_is_sent_whole() -> None:
    c = conv()
    (s,) = one(c, counter(7, 11))  # started at T0+1, first seen at T0+11
    assert s["type"] == COUNT and s["points"] == [{"timestamp": T0 // S + 11, "value": 7.0}] and s["interval"] == 10
    (s,) = one(c, counter(12, 21))
    assert s["points"][0]["value"] == 5.0 and s["interval"] == 10


@pytest.mark.parametrize("start", [None, T0 - S], ids=["unknown start", "started before the horizon"])
def test_first_point_is_a_baseline_when_what_came_before_is_unknown(start: int | None) -> None:
    c = conv()
    assert one(c, counter(1000, 10, start)) == []
    assert c.counts.baseline == 1
    (s,) = one(c, counter(1004, 20, start))
    assert s["points"][0]["value"] == 4.0 and s["interval"] == 10


def test_a_total_built_from_pushed_deltas_is_sent_whole_though_its_window_starts_before_the_horizon() -> None:
    """A count pushed as a delta over [t - interval, t] makes a total whose start is before the
    horizon when it came within an interval of it; all of it was received here, so it is new."""
    c = conv()
    first = Point("orders", C, 3.0, {}, T0 - 5 * S, T0 + 5 * S, accumulated=True, first_ns=T0 + 5 * S)
    (s,) = one(c, first)
    assert s["points"] == [{"timestamp": T0 // S + 5, "value": 3.0}] and s["interval"] == 10
    (s,) = one(c, Point("orders", C, 7.0, {}, T0 - 5 * S, T0 + 15 * S, accumulated=True, first_ns=T0 + 5 * S))
    assert s["points"][0]["value"] == 4.0
    # one the pipeline had before the horizon (first seen before it) is still a baseline
    c2 = conv()
    assert one(c2, Point("orders", C, 9.0, {}, T0 - 50 * S, T0 + 5 * S, accumulated=True, first_ns=T0 - 40 * S)) == []
    assert c2.counts.baseline == 1


def test_reset_sends_the_whole_value_since_the_new_start() -> None:
    c = conv()
    one(c, counter(50, 10))
    (s,) = one(c, counter(3, 20, start=T0 + 17 * S))  # restarted at T0+17
    assert s["points"][0]["value"] == 3.0 and s["interval"] == 3
    (s,) = one(c, counter(2, 30, start=None))  # lower without a start: since the last point
    assert s["points"][0]["value"] == 2.0 and s["interval"] == 10


def test_gap_is_one_longer_interval_and_nothing_is_lost() -> None:
    c = conv()
    one(c, counter(10, 10))
    (s,) = one(c, counter(70, 310))  # five minutes of missed rounds
    assert s["points"][0]["value"] == 60.0 and s["interval"] == 300


def test_same_or_older_point_sends_nothing() -> None:
    c = conv()
    one(c, counter(10, 10))
    assert one(c, counter(10, 10)) == []
    assert one(c, counter(9, 5)) == [] and c.counts.out_of_order == 1
    (s,) = one(c, counter(11, 20))
    assert s["points"][0]["value"] == 1.0


def test_delta_sum_is_a_count_of_its_value() -> None:
    (s,) = one(conv(), Point("d", C, 4, {}, T0, T0 + 10 * S, delta=True))
    assert s["type"] == COUNT and s["points"][0]["value"] == 4.0 and s["interval"] == 10


def test_non_finite_values_are_skipped_and_counted() -> None:
    c = conv()
    assert c.convert([Point("g", MetricKind.GAUGE, math.nan, {}, None, T0),
                      counter(math.inf, 10)]).series == []
    assert c.counts.non_finite == 2


def test_summary_as_gauges() -> None:
    v = SummaryValue(((0.5, 1.5), (0.99, 9.0)), 30.0, 12)
    out = one(conv(), Point("lat", MetricKind.SUMMARY, v, {"a": "b"}, T0, T0 + 10 * S))
    got = {(s["metric"], tuple(s["tags"])): (s["type"], s["points"][0]["value"]) for s in out}  # type: ignore[index]
    assert got == {("lat.sum", ("a:b", "env:test")): (GAUGE, 30.0), ("lat.count", ("a:b", "env:test")): (GAUGE, 12.0),
                   ("lat.quantile", ("a:b", "env:test", "quantile:0.5")): (GAUGE, 1.5),
                   ("lat.quantile", ("a:b", "env:test", "quantile:0.99")): (GAUGE, 9.0)}


def test_histogram_deltas_as_distribution_points_and_counts() -> None:
    c = conv()
    h1 = HistogramValue((1.0, 5.0), (2, 1, 0), 4.0, 3)
    out = c.convert([Point("h", MetricKind.HISTOGRAM, h1, {}, T0 + S, T0 + 10 * S)])
    (d,) = out.distributions
    assert d["points"] == [[float(T0 // S + 10), [1.0, 1.0, 3.0]]] and d["type"] == "distribution"
    assert {s["metric"]: s["points"][0]["value"] for s in out.series} == {"h.count": 3.0, "h.sum": 4.0}
    h2 = HistogramValue((1.0, 5.0), (2, 3, 1), 20.0, 6)
    out = c.convert([Point("h", MetricKind.HISTOGRAM, h2, {}, T0 + S, T0 + 20 * S)])
    assert out.distributions[0]["points"][0][1] == [3.0, 3.0, 5.0]  # +2 in (1,5], +1 in (5,inf)
    assert {s["metric"]: (s["points"][0]["value"], s["interval"]) for s in out.series} == {
        "h.count": (3.0, 10), "h.sum": (16.0, 10)}
    # other bounds: a new baseline, nothing sent
    h3 = HistogramValue((1.0, 2.0, 5.0), (2, 3, 1, 1), 25.0, 7)
    out = c.convert([Point("h", MetricKind.HISTOGRAM, h3, {}, T0 + S, T0 + 30 * S)])
    assert out.distributions == [] and out.series == [] and c.counts.layout_changed == 1


def test_histogram_reset_sends_the_whole_value() -> None:
    c = conv()
    c.convert([Point("h", MetricKind.HISTOGRAM, HistogramValue((1.0,), (5, 5), 30.0, 10), {}, T0 + S, T0 + 10 * S)])
    out = c.convert([Point("h", MetricKind.HISTOGRAM, HistogramValue((1.0,), (1, 0), 0.5, 1), {}, T0 + 15 * S,
                           T0 + 20 * S)])
    assert out.distributions[0]["points"][0][1] == [1.0]
    assert {s["metric"]: (s["points"][0]["value"], s["interval"]) for s in out.series} == {
        "h.count": (1.0, 5), "h.sum": (0.5, 5)}


def test_exponential_histogram_buckets_are_ddsketch_keys() -> None:
    from ddsketch.mapping import LogarithmicMapping

    gamma = 2 ** (1 / 32)
    mapping = LogarithmicMapping((gamma - 1) / (gamma + 1))
    assert mapping.gamma == pytest.approx(gamma)
    c = conv()
    e = ExponentialHistogramValue(5, 1, 100, (2, 0, 1), -3, (1,), 5, 20.0)
    out = c.convert([Point("d", MetricKind.EXPONENTIAL_HISTOGRAM, e, {}, T0 + S, T0 + 10 * S)])
    values = out.distributions[0]["points"][0][1]
    # OTel bucket i, (2^(i/32), 2^((i+1)/32)], is DDSketch's key i+1: the same value stands for both.
    want = [0.0, mapping.value(101), mapping.value(101), mapping.value(103), -mapping.value(-2)]
    assert values == pytest.approx(want, rel=1e-12)
    for v, i in ((values[1], 100), (values[3], 102)):
        assert 2 ** (i / 32) < v <= 2 ** ((i + 1) / 32)
    # next point at scale 4 (a collector downscaled): compared at scale 4, +1 in bucket 50 only
    e2 = ExponentialHistogramValue(4, 1, 50, (3, 1), -2, (1,), 6, 30.0)
    out = c.convert([Point("d", MetricKind.EXPONENTIAL_HISTOGRAM, e2, {}, T0 + S, T0 + 20 * S)])
    (d,) = out.distributions
    assert len(d["points"][0][1]) == 1 and 2 ** (50 / 16) < d["points"][0][1][0] <= 2 ** (51 / 16)
    assert {s["metric"]: s["points"][0]["value"] for s in out.series} == {"d.count": 1.0, "d.sum": 10.0}


def test_distribution_values_are_bounded() -> None:
    c = conv(max_values=100)
    h = HistogramValue((1.0, 2.0), (10_000, 1, 0), 10_000.0, 10_001)
    out = c.convert([Point("h", MetricKind.HISTOGRAM, h, {}, T0 + S, T0 + 10 * S)])
    values = out.distributions[0]["points"][0][1]
    assert len(values) == 100 and values.count(1.5) == 1 and values.count(1.0) == 99  # the outlier kept
    assert c.counts.sampled_values == 10_001 - 100
    assert {s["metric"]: s["points"][0]["value"] for s in out.series} == {"h.count": 10_001.0, "h.sum": 10_000.0}
    assert sorted(bucket_values([(1.0, 3), (2.0, 1)], 2)) == [1.0, 2.0]
    assert sorted(bucket_values([(1.0, 30), (2.0, 10), (3.0, 0)], 6)) == [1.0] * 4 + [2.0] * 2
    assert len(bucket_values([(float(i), 2) for i in range(10)], 4)) == 4


def test_state_survives_a_restart_and_forgetting_raises_the_horizon() -> None:
    c = conv(max_series=2)
    one(c, counter(5, 10, a="1"))
    one(c, counter(5, 10, a="2"))
    c2 = conv(max_series=2)
    c2.restore(json.loads(json.dumps(c.state())))
    (s,) = one(c2, counter(9, 20, a="1"))
    assert s["points"][0]["value"] == 4.0  # neither the total again nor the increase lost
    one(c2, counter(1, 30, a="3"))  # a third series: "2", updated least recently, is forgotten
    assert c2.counts.forgotten == 1 and c2.horizon_ns == T0 + 10 * S
    assert one(c2, counter(6, 40, a="2")) == []  # it started before what was forgotten: a baseline
    with pytest.raises(ValueError):
        c2.restore({"version": 99})


def test_pack_stays_within_both_limits_and_drops_only_what_alone_exceeds() -> None:
    import random

    rnd = random.Random(1)
    items = [json.dumps({"metric": f"m{i}", "tags": [f"{rnd.getrandbits(128):032x}" for _ in range(20)]}).encode()
             for i in range(3000)]
    items.append(b'{"metric":"huge","tags":["' + b"x" * 400_000 + b'"]}')  # alone over the decompressed limit
    noise = base64.b64encode(rnd.randbytes(120_000)).decode()  # 160 kB that compress to over 100 kB
    items.append(json.dumps({"metric": "noisy", "tags": [noise]}).encode())
    bodies, big = pack(b"s", "series", items, max_compressed=100_000, max_decompressed=400_000)
    assert big == [3000, 3001]
    got = []
    for body, n in bodies:
        assert len(body) <= 100_000
        raw = gzip.decompress(body)
        assert len(raw) < 400_000
        doc = json.loads(raw)
        assert len(doc["series"]) == n
        got += [s["metric"] for s in doc["series"]]
    assert got == [f"m{i}" for i in range(3000)]
    assert len(bodies) > 3
    bodies, _ = pack(b"d", "series", items[:10])
    assert json.loads(zlib.decompress(bodies[0][0]))["series"][0]["metric"] == "m0"
