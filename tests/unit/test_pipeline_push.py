"""Pushed data in the pipeline: merge (``Pipeline.push``), delta to cumulative (``bridge.accumulate``),
age-based expiry, and exponential histograms exposed as explicit buckets."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from bridge.accumulate import MAX_BUCKETS, add_delta, downscale
from bridge.api import ExponentialHistogramValue, HistogramValue, Metric, MetricKind
from bridge.exposition import as_histogram, render
from bridge.pipeline import Pipeline

G, C = MetricKind.GAUGE, MetricKind.COUNTER
S = 1_000_000_000


@pytest.fixture
def pipeline():
    p = Pipeline()
    yield p
    p.shutdown()


def values(p: Pipeline, name: str) -> dict[tuple, object]:
    fam = p.family(name)
    return {} if fam is None else {s.key: s.value for s in fam.series.values()}


def test_push_merges_instead_of_replacing(pipeline):
    pipeline.push("rx", [Metric("a", G, 1.0, attributes={"k": "1"})])
    pipeline.push("rx", [Metric("a", G, 2.0, attributes={"k": "2"})])
    assert values(pipeline, "a") == {(("k", "1"),): 1.0, (("k", "2"),): 2.0}
    res = pipeline.push("rx", [Metric("a", G, 5.0, attributes={"k": "1"})])
    assert res.accepted == 1 and res.rejected == {} and res.message == ""
    assert values(pipeline, "a") == {(("k", "1"),): 5.0, (("k", "2"),): 2.0}


def test_pushed_series_expire_by_age_only(pipeline):
    import time

    pipeline.push("rx", [Metric("a", G, 1.0, attributes={"k": "old"})])
    now = time.monotonic()
    assert pipeline.expire_pushed("rx", 60, now=now) == 0
    assert pipeline.expire_pushed("rx", 60, now=now + 61) == 1
    assert values(pipeline, "a") == {}
    assert pipeline.expired_total == 1
    # A series pushed again stays while the others expire.
    pipeline.push("rx", [Metric("b", G, 1.0, attributes={"k": "x"}), Metric("b", G, 1.0, attributes={"k": "y"})])
    t = time.monotonic()
    assert pipeline.expire_pushed("rx", 60, now=t + 30) == 0
    assert pipeline.ingest("rx", 60).expire() == 0


def test_remove_source_forgets_pushed_series(pipeline):
    import time

    pipeline.push("rx", [Metric("a", G, 1.0)])
    pipeline.remove_source("rx")
    assert values(pipeline, "a") == {}
    assert pipeline.expire_pushed("rx", 0, now=time.monotonic() + 10) == 0


def test_ingest_parts_expire_and_bound_apart_and_go_with_their_source(pipeline):
    import time

    ingest = pipeline.ingest("dd", 60)
    dsd, intake = ingest.part("dogstatsd"), ingest.part("intake")
    intake.expire_after, intake.max_series = 3600, 1
    assert dsd.push([Metric("a", G, 1.0, attributes={"k": "1"})]).accepted == 1
    assert intake.push([Metric("b", G, 1.0, attributes={"k": "1"})]).accepted == 1
    assert intake.push([Metric("b", G, 1.0, attributes={"k": "2"})]).rejected_total == 1  # its own max_series
    assert dsd.push([Metric("a", G, 1.0, attributes={"k": "2"})]).accepted == 1  # not counted against intake's
    later = time.monotonic() + 120
    # The intake's expiry (an hour) does not keep the DogStatsD part's series, nor the other way round.
    assert pipeline.expire_pushed(intake.source, intake.expire_after, now=later) == 0
    assert pipeline.expire_pushed(dsd.source, dsd.expire_after, now=later) == 2
    assert values(pipeline, "a") == {} and values(pipeline, "b") == {(("k", "1"),): 1.0}
    dsd.push([Metric("a", G, 3.0)])
    pipeline.remove_source("dd")  # the integration stopped: its parts' series go too
    assert values(pipeline, "a") == {} and values(pipeline, "b") == {}
    pipeline.push("dd2", [Metric("c", G, 1.0)])
    pipeline.remove_source("d")  # not a prefix of another source's name
    assert values(pipeline, "c") == {(): 1.0}


def test_a_series_another_source_took_over_does_not_expire_with_the_pusher(pipeline):
    import time

    pipeline.push("rx", [Metric("a", G, 1.0)])
    pipeline.record("collector", [Metric("a", G, 2.0)])
    assert pipeline.expire_pushed("rx", 0, now=time.monotonic() + 10) == 0
    assert values(pipeline, "a") == {(): 2.0}


def test_push_reports_what_it_refuses(pipeline):
    p = Pipeline(cardinality_limit=2)
    try:
        res = p.push("rx", [Metric("wide", G, float(i), attributes={"i": i}) for i in range(4)]
                     + [Metric("wide", C, 1.0, start_time_ns=1, attributes={"i": 0})])
        assert res.accepted == 2 and res.rejected == {"cardinality": 2, "conflict": 1}
        assert "2 rejected (cardinality): wide: family already has 2 series (pipeline.cardinality_limit)" in res.message
        assert "conflict" in res.message
        assert p.dropped["cardinality"] == 2
    finally:
        p.shutdown()


def test_delta_sums_accumulate_in_the_series_itself(pipeline):
    pipeline.push("rx", [Metric("d", C, 3.0, timestamp_ns=2 * S, start_time_ns=1 * S)], delta=True)
    pipeline.push("rx", [Metric("d", C, 4.0, timestamp_ns=3 * S, start_time_ns=2 * S)], delta=True)
    # A gap (nothing measured between 3 s and 5 s) continues the total too.
    pipeline.push("rx", [Metric("d", C, 1.0, timestamp_ns=6 * S, start_time_ns=5 * S)], delta=True)
    (s,) = pipeline.family("d").series.values()
    assert (s.value, s.start_ns, s.time_ns) == (8.0, 1 * S, 6 * S)
    for start, end in ((5 * S, 6 * S), (4 * S, 7 * S), (6 * S, 6 * S)):  # repeat, overlap, empty
        res = pipeline.push("rx", [Metric("d", C, 1.0, timestamp_ns=end, start_time_ns=start)], delta=True)
        assert res.rejected == {"out_of_order": 1}, (start, end)
    assert s.value == 8.0


def test_delta_histograms_accumulate_and_changed_bounds_start_again(pipeline):
    h1 = HistogramValue((1.0, 2.0), (1, 0, 2), 7.0, 3, 0.5, 5.0)
    h2 = HistogramValue((1.0, 2.0), (0, 1, 1), 4.5, 2, 1.5, 3.0)
    pipeline.push("rx", [Metric("h", MetricKind.HISTOGRAM, h1, timestamp_ns=2 * S, start_time_ns=S)], delta=True)
    pipeline.push("rx", [Metric("h", MetricKind.HISTOGRAM, h2, timestamp_ns=3 * S, start_time_ns=2 * S)], delta=True)
    (s,) = pipeline.family("h").series.values()
    assert s.value == HistogramValue((1.0, 2.0), (1, 1, 3), 11.5, 5, 0.5, 5.0)
    h3 = HistogramValue((5.0,), (1, 1), 9.0, 2)
    pipeline.push("rx", [Metric("h", MetricKind.HISTOGRAM, h3, timestamp_ns=4 * S, start_time_ns=3 * S)], delta=True)
    assert s.value == h3 and s.start_ns == 3 * S


# ---------------------------------------------------------------------------- exponential histograms


def _index(v: float, scale: int) -> int:
    """The bucket of ``|v|`` at ``scale``: ``(base ** i, base ** (i + 1)]`` (exact for these test values)."""
    return math.ceil(math.log2(abs(v)) * 2 ** scale) - 1


def _exp(values: list[float], scale: int) -> ExponentialHistogramValue:
    pos = [_index(v, scale) for v in values if v > 0]
    neg = [_index(v, scale) for v in values if v < 0]

    def dense(idx: list[int]) -> tuple[int, tuple[int, ...]]:
        if not idx:
            return 0, ()
        lo = min(idx)
        counts = [0] * (max(idx) - lo + 1)
        for i in idx:
            counts[i - lo] += 1
        return lo, tuple(counts)

    (po, pc), (no, nc) = dense(pos), dense(neg)
    return ExponentialHistogramValue(scale=scale, zero_count=sum(1 for v in values if v == 0), positive_offset=po,
                                     positive_counts=pc, negative_offset=no, negative_counts=nc, count=len(values),
                                     sum=sum(values))


def _values(rng: random.Random, n: int) -> list[float]:
    return [rng.choice((-1, 1)) * rng.uniform(0.01, 1000) if rng.random() > 0.05 else 0.0 for _ in range(n)]


def test_as_histogram_counts_exactly_at_every_boundary():
    rng = random.Random(7)
    for scale in (-2, 0, 3):
        vals = _values(rng, 300)
        h = as_histogram(_exp(vals, scale))
        assert h.count == len(vals) and h.bucket_counts[-1] == 0
        cum = 0
        for le, c in zip(h.bounds, h.bucket_counts, strict=False):
            cum += c
            assert cum == sum(1 for v in vals if v <= le + abs(le) * 1e-12), (scale, le)


def test_as_histogram_survives_extreme_scales_and_offsets():
    v = ExponentialHistogramValue(scale=-10, zero_count=0, positive_offset=5, positive_counts=(1, 2),
                                  negative_offset=0, negative_counts=(), count=3)
    h = as_histogram(v)  # 2 ** (1024 * 6) overflows a float: those buckets fold into +Inf
    assert h.bucket_counts[-1] == 3 and all(math.isfinite(b) for b in h.bounds)


def test_exponential_deltas_merge_at_the_coarser_scale_exactly():
    rng = random.Random(11)
    a, b = _values(rng, 200), _values(rng, 200)
    merged = add_delta(_exp(a, 3), _exp(b, 1))
    assert isinstance(merged, ExponentialHistogramValue)
    want = _exp(a + b, 1)
    assert merged.sum == pytest.approx(want.sum)
    assert dataclasses.replace(merged, sum=want.sum) == want


def test_exponential_merge_stays_bounded_for_far_apart_buckets():
    a = ExponentialHistogramValue(scale=5, zero_count=0, positive_offset=-100_000, positive_counts=(1,),
                                  negative_offset=0, negative_counts=(), count=1)
    b = ExponentialHistogramValue(scale=5, zero_count=0, positive_offset=100_000, positive_counts=(1,),
                                  negative_offset=0, negative_counts=(), count=1)
    merged = add_delta(a, b)
    assert isinstance(merged, ExponentialHistogramValue)
    assert len(merged.positive_counts) <= MAX_BUCKETS and sum(merged.positive_counts) == 2


def test_downscale():
    assert downscale(3, (1, 2, 3, 4), 1) == (1, (1, 5, 4))
    assert downscale(-3, (1, 1, 1), 2) == (-1, (3,))
    assert downscale(0, (), 3) == (0, ())


# ---------------------------------------------------------------------------- exposition


def test_pushed_target_info_joins_the_one_target_info_family(pipeline):
    pipeline.push("rx", [Metric("target_info", G, 1, attributes={"job": "shop", "instance": "i-1", "env": "prod"})])
    for openmetrics in (False, True):
        text = render(pipeline.families(), {"service.name": "monbridge"}, openmetrics).decode()
        assert text.count("# TYPE target") == 1, text
        assert 'target_info{service_name="monbridge"} 1\n' in text
        assert 'target_info{env="prod",instance="i-1",job="shop"} 1' in text
    # Without a resource of its own, the pushed series are the family.
    text = render(pipeline.families(), {}).decode()
    assert "# TYPE target_info gauge" in text and 'target_info{env="prod"' in text


def test_exponential_histograms_render_as_histograms(pipeline):
    v = _exp([0.5, 3.0, 3.5, 100.0], 0)
    pipeline.push("rx", [Metric("payload", MetricKind.EXPONENTIAL_HISTOGRAM, v, "By", start_time_ns=S)])
    text = render(pipeline.families()).decode()
    assert "# TYPE payload_bytes histogram" in text
    assert 'payload_bytes_bucket{le="0.5"} 1' in text and 'payload_bytes_bucket{le="4.0"} 3' in text
    assert 'payload_bytes_bucket{le="128.0"} 4' in text and 'payload_bytes_bucket{le="+Inf"} 4' in text
    assert "payload_bytes_sum 107.0" in text and "payload_bytes_count 4" in text


def test_drop_logging_stays_bounded_for_many_distinct_names(pipeline, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="monbridge.pipeline")
    res = pipeline.push("rx", [Metric(f"bad name {i}", G, 1.0) for i in range(2000)])
    assert res.rejected == {"invalid_name": 2000}
    assert pipeline.dropped["invalid_name"] == 2000  # every drop counted
    assert len(pipeline._drop_logged) <= 257
    assert 200 <= len(caplog.records) <= 257  # a line per name up to the bound, then one for the rest


def test_new_families_while_the_sdk_collects_do_not_deadlock():
    """New families are pushed while another thread takes batches, each of which collects the
    OpenTelemetry metrics API's instruments into the pipeline first (the SDK's lock, then the
    pipeline's): neither may wait for the other. A deadlock leaves the threads hanging."""
    import threading

    p = Pipeline()
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            p.batch()

    def add() -> None:
        for i in range(400):
            p.push("rx", [Metric(f"family.{i}", G, 1.0, attributes={"i": i})])

    collector = threading.Thread(target=collect, daemon=True)
    adder = threading.Thread(target=add, daemon=True)
    collector.start()
    adder.start()
    adder.join(60)
    stop.set()
    collector.join(60)
    hung = adder.is_alive() or collector.is_alive()
    if not hung:
        p.shutdown()
    assert not hung, "record/push and the SDK's collection deadlocked"
    assert len(p.families()) == 400
