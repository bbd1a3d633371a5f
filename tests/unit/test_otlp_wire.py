"""The hand-written OTLP encoder (integrations/otlp_wire.py) against the OpenTelemetry SDK's path.

The reference is what monbridge sent before the encoder existed: collected families replayed
through the SDK's observable instruments, pre-aggregated ones as SDK data points, encoded by the
SDK's OTLP encoder. Both are decoded with opentelemetry-proto and compared: names, units,
descriptions, types, temporality, attributes of every value type, start/time, values and bucket
data, min/max left out when unknown. Then: exponential histograms and summaries as they came,
requests split by size, temporality preferences, and what cannot be encoded.
"""

from __future__ import annotations

import dataclasses
import math
import struct

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Metric as OtelMetric
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from bridge.api import ExponentialHistogramValue, HistogramValue, Metric, MetricKind, SummaryValue
from bridge.pipeline import Pipeline, otel_metric, otel_point
from integrations.otlp_wire import CUMULATIVE, DELTA, OtlpEncoder, temporality_of
from tests.otlp_view import attributes, decoded, metrics_of, number, points, scopes_of

T0 = 1_700_000_000_000_000_000
T1 = T0 + 10 * 10**9

# Every attribute value type the SDK encodes.
ATTRS = {"s": "a", "empty": "", "uni": "Grüße ✓", "b": True, "f": False, "i": -7, "big": 2**62, "d": 0.25,
         "strs": ("x", "y"), "ints": (1, 2), "bools": (True,)}


def family_pairs(p: Pipeline):
    return [(f, list(f.series.values())) for f in p.families()]


def sdk_reference(p: Pipeline):
    """The pipeline through the OTel SDK as monbridge exported it before: observable instruments
    for collected families, SDK data points for pre-aggregated ones (a NaN histogram min/max made
    None first, as the integration did), the SDK's OTLP encoder."""

    def known(v):
        if isinstance(v, HistogramValue):
            return dataclasses.replace(v, min=None if v.min is None or math.isnan(v.min) else v.min,
                                       max=None if v.max is None or math.isnan(v.max) else v.max)
        return v

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=p.resource, metric_readers=[reader],
                             views=[View(instrument_name="*", aggregation_cardinality_limit=100_000)])
    meter = provider.get_meter("monbridge", "0.1.0")
    pre = []
    for fam in p.families():
        if fam.preaggregated:
            pre.append(otel_metric(fam.name, fam.kind, fam.unit, fam.description, [
                otel_point(s.attributes, s.start_ns if s.start_ns is not None or fam.kind is MetricKind.GAUGE
                           else min(s.first_ns, s.time_ns), s.time_ns, known(s.value)) for s in fam.series.values()]))
            continue

        def callback(_o: CallbackOptions, fam=fam):
            return [Observation(s.value, s.attributes) for s in fam.series.values()]

        create = {MetricKind.GAUGE: meter.create_observable_gauge, MetricKind.COUNTER: meter.create_observable_counter,
                  MetricKind.UP_DOWN_COUNTER: meter.create_observable_up_down_counter}[fam.kind]
        create(fam.name, callbacks=[callback], unit=fam.unit, description=fam.description)
    data = reader.get_metrics_data()
    scopes = list(data.resource_metrics[0].scope_metrics) if data is not None else []
    if pre:
        scopes.append(ScopeMetrics(scope=InstrumentationScope("monbridge.preaggregated", "0.1.0"), metrics=pre,
                                   schema_url=""))
    provider.shutdown()
    return encode_metrics(MetricsData([ResourceMetrics(resource=p.resource, scope_metrics=scopes, schema_url="")]))


def recorded() -> Pipeline:
    p = Pipeline()
    p.record("collector", [
        Metric("c.requests", MetricKind.COUNTER, 42, "{request}", "requests", {**ATTRS, "route": "/a"}, T1),
        Metric("c.requests", MetricKind.COUNTER, 2.5, "{request}", "requests", {"route": "/b"}, T1),
        Metric("c.temp", MetricKind.GAUGE, 21.5, "Cel", "", {"sensor": "s1"}, T1),
        Metric("c.temp", MetricKind.GAUGE, -3, "Cel", "", {"sensor": "s2"}, T1),
        Metric("c.nan", MetricKind.GAUGE, math.nan, "", "", {}, T1),
        Metric("c.queue", MetricKind.UP_DOWN_COUNTER, -3, "{item}", "queue", {"q": "1", "durable": True}, T1),
    ], now_ns=T0)
    p.record("import", [
        Metric("i.latency", MetricKind.HISTOGRAM,
               HistogramValue((0.1, 0.5, 1.0), (3, 4, 2, 1), 4.25, 10), "s", "latency", {"job": "api"}, T1, T0),
        Metric("i.minmax", MetricKind.HISTOGRAM,
               HistogramValue((1.0,), (1, 1), 3.0, 2, min=0.5, max=2.5), "s", "", {}, T1, T0),
        Metric("i.nanminmax", MetricKind.HISTOGRAM,
               HistogramValue((1.0,), (1, 1), 3.0, 2, min=math.nan, max=2.5), "s", "", {}, T1, T0),
        Metric("i.total", MetricKind.COUNTER, 1234.0, "", "", {"instance": "a:9100"}, T1, T0 + 5),
        Metric("i.gauge", MetricKind.GAUGE, 7.0, "", "", {"x": "y"}, T1, T0),
    ], now_ns=T0)
    return p


def comparable(metric, exact_times: bool):
    """A decoded metric as plain data; collected families' times are the SDK's collection times
    in the reference, so they are compared separately."""
    kind = metric.WhichOneof("data")
    body = getattr(metric, kind)
    pts = []
    for pt in body.data_points:
        d = {f.name: v for f, v in pt.ListFields() if f.name not in ("attributes",)}
        if not exact_times:
            d.pop("start_time_unix_nano", None)
            d.pop("time_unix_nano", None)
        for k, v in list(d.items()):
            if isinstance(v, float) and math.isnan(v):
                d[k] = "NaN"
            elif not isinstance(v, int | float | str | bool):
                d[k] = str(v)
        pts.append((sorted(attributes(pt.attributes).items(), key=lambda kv: kv[0]).__repr__(), d))
    extra = {f.name: v for f, v in body.ListFields() if f.name != "data_points"}
    return (metric.name, metric.unit, metric.description, kind, extra, sorted(pts, key=repr))


def test_same_data_as_the_sdk_path():
    p = recorded()
    ours = decoded(OtlpEncoder().encode(family_pairs(p), p.resource))
    ref = sdk_reference(p)
    assert len(ours) == 1
    (rm,) = ours[0].resource_metrics
    assert rm.resource == ref.resource_metrics[0].resource
    ref_scopes = {sm.scope.name: sm.scope for sm in ref.resource_metrics[0].scope_metrics}
    assert {sm.scope.name: sm.scope for sm in rm.scope_metrics} == ref_scopes
    mine, theirs = metrics_of(ours), metrics_of([ref])
    # One difference on purpose: the SDK's observable instruments drop a NaN observation (logged);
    # a NaN gauge is sent as it is (Prometheus exposes it, OTLP carries it).
    (nan_point,) = mine.pop("c.nan").gauge.data_points
    assert math.isnan(nan_point.as_double) and "c.nan" not in theirs
    assert {k: v for k, v in scopes_of(ours).items() if k != "c.nan"} == {
        m.name: sm.scope.name for sm in ref.resource_metrics[0].scope_metrics for m in sm.metrics}
    assert set(mine) == set(theirs)
    for name in mine:
        exact = p.family(name).preaggregated
        assert comparable(mine[name], exact) == comparable(theirs[name], exact), name
    # Collected families: a sum starts when the series was first seen and is stamped with its
    # collection; a gauge has no start (as the SDK sends it).
    (a,) = [pt for pt in mine["c.requests"].sum.data_points if attributes(pt.attributes)["route"] == "/a"]
    assert (a.start_time_unix_nano, a.time_unix_nano, a.WhichOneof("value"), a.as_int) == (T0, T1, "as_int", 42)
    assert attributes(a.attributes) == {**ATTRS, "strs": ["x", "y"], "ints": [1, 2], "bools": [True], "route": "/a"}
    for pt in mine["c.temp"].gauge.data_points:
        assert (pt.start_time_unix_nano, pt.time_unix_nano) == (0, T1)
    # Unknown min/max are left out, known ones kept.
    (lat,) = mine["i.latency"].histogram.data_points
    assert not lat.HasField("min") and not lat.HasField("max") and lat.HasField("sum")
    (nan,) = mine["i.nanminmax"].histogram.data_points
    assert not nan.HasField("min") and nan.max == 2.5
    assert mine["i.latency"].histogram.aggregation_temporality == CUMULATIVE
    assert mine["c.requests"].sum.is_monotonic and not mine["c.queue"].sum.is_monotonic


def test_exponential_histogram_passes_through_as_it_came():
    v = ExponentialHistogramValue(scale=3, zero_count=2, positive_offset=-4, positive_counts=(1, 0, 5),
                                  negative_offset=7, negative_counts=(2,), count=10, sum=12.5,
                                  zero_threshold=1e-9, min=-130.0, max=9.5)
    empty_neg = ExponentialHistogramValue(scale=-2, zero_count=0, positive_offset=0, positive_counts=(3,),
                                          negative_offset=0, negative_counts=(), count=3, sum=None)
    p = Pipeline()
    p.record("import", [Metric("e.h", MetricKind.EXPONENTIAL_HISTOGRAM, v, "ms", "exp", {"a": "1"}, T1, T0),
                        Metric("e.h", MetricKind.EXPONENTIAL_HISTOGRAM, empty_neg, "ms", "exp", {"a": "2"}, T1, T0)])
    (m,) = metrics_of(decoded(OtlpEncoder().encode(family_pairs(p), p.resource))).values()
    assert m.WhichOneof("data") == "exponential_histogram"
    assert m.exponential_histogram.aggregation_temporality == CUMULATIVE
    got = {attributes(pt.attributes)["a"]: pt for pt in m.exponential_histogram.data_points}

    # The SDK's encoder of the same point is the reference.
    from opentelemetry.sdk.metrics._internal.point import Buckets

    def sdk_point(x, attrs):
        return ExponentialHistogramDataPoint(
            attributes=attrs, start_time_unix_nano=T0, time_unix_nano=T1, count=x.count, sum=x.sum,
            scale=x.scale, zero_count=x.zero_count, positive=Buckets(x.positive_offset, list(x.positive_counts)),
            negative=Buckets(x.negative_offset, list(x.negative_counts)), flags=0, min=x.min, max=x.max)

    ref = encode_metrics(MetricsData([ResourceMetrics(p.resource, [ScopeMetrics(
        InstrumentationScope("x"), [OtelMetric("e.h", "exp", "ms", ExponentialHistogram(
            [sdk_point(v, {"a": "1"})], AggregationTemporality.CUMULATIVE))], "")], "")]))
    ref_pt = ref.resource_metrics[0].scope_metrics[0].metrics[0].exponential_histogram.data_points[0]
    ref_pt.zero_threshold = 1e-9  # the SDK's data point has no zero_threshold; OTLP has
    assert got["1"] == ref_pt
    e = got["2"]
    assert (e.scale, e.count, e.HasField("sum"), e.HasField("negative"), e.HasField("min")) == (-2, 3, False, False, False)
    assert (e.positive.offset, list(e.positive.bucket_counts)) == (0, [3])


def test_summary_as_it_came():
    p = Pipeline()
    p.record("import", [Metric("rpc", MetricKind.SUMMARY, SummaryValue(((0.5, 0.1), (0.99, 0.9)), 7.0, 20), "s", "",
                               {"m": "get"}, T1, T0)], prometheus_names=True)
    (m,) = metrics_of(decoded(OtlpEncoder().encode(family_pairs(p), p.resource))).values()
    (pt,) = m.summary.data_points
    assert (pt.count, pt.sum, pt.start_time_unix_nano, pt.time_unix_nano) == (20, 7.0, T0, T1)
    assert [(q.quantile, q.value) for q in pt.quantile_values] == [(0.5, 0.1), (0.99, 0.9)]
    assert attributes(pt.attributes) == {"m": "get"}


def test_big_pushes_are_split_by_size_and_lose_nothing():
    p = Pipeline(cardinality_limit=100_000)
    p.record("c", [Metric(f"g{i % 7}", MetricKind.GAUGE, float(i), "", "", {"series": str(i), "pad": "x" * 40}, T1)
                   for i in range(20_000)])
    p.record("h", [Metric("hist", MetricKind.HISTOGRAM, HistogramValue(tuple(range(1, 300)), (1,) * 300, 1.0, 300),
                          "", "", {"i": str(i)}, T1, T0) for i in range(40)])
    limit = 64 * 1024
    bodies = OtlpEncoder(max_request_bytes=limit).encode(family_pairs(p), p.resource)
    assert len(bodies) > 10
    assert all(len(b) <= limit for b in bodies)
    requests = decoded(bodies)
    for r in requests:  # every request is whole: resource and scope repeated
        assert attributes(r.resource_metrics[0].resource.attributes)["service.name"] == "monbridge"
        assert all(sm.scope.name for sm in r.resource_metrics[0].scope_metrics)
    got = metrics_of(requests)
    assert sorted(number(pt) for i in range(7) for pt in points(got[f"g{i}"])) == [float(i) for i in range(20_000)]
    assert len(points(got["hist"])) == 40


def test_a_point_bigger_than_the_bound_goes_alone():
    p = Pipeline()
    p.record("h", [Metric("huge", MetricKind.HISTOGRAM, HistogramValue(tuple(range(1, 200)), (1,) * 200, 1.0, 200),
                          "", "", {}, T1, T0), Metric("small", MetricKind.GAUGE, 1.0, "", "", {}, T1)])
    bodies = OtlpEncoder(max_request_bytes=1024).encode(family_pairs(p), p.resource)
    assert len(bodies) == 2
    assert set(metrics_of(decoded(bodies))) == {"huge", "small"}


@pytest.mark.parametrize(("pref", "expected"), [
    ("cumulative", {MetricKind.COUNTER: CUMULATIVE, MetricKind.UP_DOWN_COUNTER: CUMULATIVE,
                    MetricKind.HISTOGRAM: CUMULATIVE, MetricKind.EXPONENTIAL_HISTOGRAM: CUMULATIVE}),
    ("delta", {MetricKind.COUNTER: DELTA, MetricKind.UP_DOWN_COUNTER: CUMULATIVE,
               MetricKind.HISTOGRAM: DELTA, MetricKind.EXPONENTIAL_HISTOGRAM: DELTA}),
    ("lowmemory", {MetricKind.COUNTER: CUMULATIVE, MetricKind.UP_DOWN_COUNTER: CUMULATIVE,
                   MetricKind.HISTOGRAM: DELTA, MetricKind.EXPONENTIAL_HISTOGRAM: DELTA}),
])
def test_temporality_per_kind_as_the_sdk_defines_it(pref, expected, monkeypatch):
    """The SDK's OTLP exporter's table, read from the SDK itself: ObservableCounter,
    ObservableUpDownCounter and Histogram rows."""
    from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import OTLPMetricExporterMixin
    from opentelemetry.sdk.metrics import Histogram, ObservableCounter, ObservableUpDownCounter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", pref)
    table = OTLPMetricExporterMixin()._get_temporality({})
    sdk = {MetricKind.COUNTER: table[ObservableCounter], MetricKind.UP_DOWN_COUNTER: table[ObservableUpDownCounter],
           MetricKind.HISTOGRAM: table[Histogram], MetricKind.EXPONENTIAL_HISTOGRAM: table[Histogram]}
    assert {k: temporality_of(k, pref) for k in expected} == expected == {k: int(v.value) for k, v in sdk.items()}
    assert temporality_of(MetricKind.GAUGE, pref) is None and temporality_of(MetricKind.SUMMARY, pref) is None


def test_delta_points_are_differences_and_state_expires_with_the_series():
    enc = OtlpEncoder("delta")
    p = Pipeline()

    def push():
        return metrics_of(decoded(enc.encode(family_pairs(p), p.resource)))

    def hist(counts, total):
        return HistogramValue((1.0,), counts, total, sum(counts), min=0.1, max=5.0)

    p.record("c", [Metric("req", MetricKind.COUNTER, 10, "", "", {"a": "1"}, T0 + 1),
                   Metric("req", MetricKind.COUNTER, 5, "", "", {"a": "2"}, T0 + 1),
                   Metric("up", MetricKind.UP_DOWN_COUNTER, 3, "", "", {}, T0 + 1),
                   Metric("h", MetricKind.HISTOGRAM, hist((1, 2), 4.0), "", "", {}, T0 + 1, T0)], now_ns=T0)
    first = push()
    assert first["req"].sum.aggregation_temporality == DELTA and first["req"].sum.is_monotonic
    assert {attributes(pt.attributes)["a"]: (pt.start_time_unix_nano, pt.as_int) for pt in first["req"].sum.data_points} \
        == {"1": (T0, 10), "2": (T0, 5)}  # the first push: everything since the series' start
    assert first["up"].sum.aggregation_temporality == CUMULATIVE
    (h,) = first["h"].histogram.data_points
    assert (h.count, list(h.bucket_counts), h.min, h.max) == (3, [1, 2], 0.1, 5.0)

    p.record("c", [Metric("req", MetricKind.COUNTER, 16, "", "", {"a": "1"}, T0 + 2),
                   Metric("req", MetricKind.COUNTER, 2, "", "", {"a": "2"}, T0 + 2),  # went down: a reset
                   Metric("up", MetricKind.UP_DOWN_COUNTER, 1, "", "", {}, T0 + 2),
                   Metric("h", MetricKind.HISTOGRAM, hist((2, 5), 9.0), "", "", {}, T0 + 2, T0)], now_ns=T0)
    second = push()
    got = {attributes(pt.attributes)["a"]: (pt.start_time_unix_nano, pt.time_unix_nano, pt.as_int)
           for pt in second["req"].sum.data_points}
    assert got == {"1": (T0 + 1, T0 + 2, 6), "2": (T0, T0 + 2, 2)}
    assert second["up"].sum.data_points[0].as_int == 1  # up-down counters stay cumulative
    (h,) = second["h"].histogram.data_points
    assert (h.start_time_unix_nano, h.count, h.sum, list(h.bucket_counts)) == (T0 + 1, 4, 5.0, [1, 3])
    assert not h.HasField("min") and not h.HasField("max")  # unknown for an interval

    # Not reported again: no point. Gone: its state goes with it, and a series reborn starts over.
    p.record("c", [Metric("req", MetricKind.COUNTER, 16, "", "", {"a": "1"}, T0 + 2)], now_ns=T0)
    assert "req" not in push()
    assert len(enc._previous) == 1
    p.record("c", [Metric("req", MetricKind.COUNTER, 20, "", "", {"a": "1"}, T0 + 3)], now_ns=T0)
    (pt,) = push()["req"].sum.data_points
    assert (pt.start_time_unix_nano, pt.as_int) == (T0 + 2, 4)


def test_lowmemory_keeps_counters_cumulative_and_histograms_delta():
    enc = OtlpEncoder("lowmemory")
    p = Pipeline()
    ev = ExponentialHistogramValue(scale=0, zero_count=1, positive_offset=2, positive_counts=(1, 1), negative_offset=0,
                                   negative_counts=(), count=3, sum=10.0)
    p.record("c", [Metric("req", MetricKind.COUNTER, 10, "", "", {}, T0 + 1),
                   Metric("e", MetricKind.EXPONENTIAL_HISTOGRAM, ev, "", "", {}, T0 + 1, T0)], now_ns=T0)
    enc.encode(family_pairs(p), p.resource)
    ev2 = ExponentialHistogramValue(scale=0, zero_count=1, positive_offset=1, positive_counts=(4, 1, 3),
                                    negative_offset=0, negative_counts=(), count=9, sum=30.0)
    p.record("c", [Metric("req", MetricKind.COUNTER, 12, "", "", {}, T0 + 2),
                   Metric("e", MetricKind.EXPONENTIAL_HISTOGRAM, ev2, "", "", {}, T0 + 2, T0)], now_ns=T0)
    got = metrics_of(decoded(enc.encode(family_pairs(p), p.resource)))
    assert got["req"].sum.aggregation_temporality == CUMULATIVE and got["req"].sum.data_points[0].as_int == 12
    e = got["e"].exponential_histogram
    assert e.aggregation_temporality == DELTA
    (pt,) = e.data_points
    # Buckets aligned by index: offset 1 now covers the old offset 2.
    assert (pt.count, pt.sum, pt.zero_count, pt.positive.offset, list(pt.positive.bucket_counts)) == (6, 20.0, 0, 1,
                                                                                                       [4, 0, 2])


def test_values_and_attributes_it_cannot_encode_as_they_are(caplog):
    p = Pipeline()
    p.record("c", [Metric("huge", MetricKind.GAUGE, 2**70, "", "", {"ok": "1", "bad": object(), "wide": 2**64}, T1)])
    (m,) = metrics_of(decoded(OtlpEncoder().encode(family_pairs(p), p.resource))).values()
    (pt,) = m.gauge.data_points
    assert pt.WhichOneof("value") == "as_double" and pt.as_double == float(2**70)  # outside int64: a double
    assert attributes(pt.attributes) == {"ok": "1"}
    assert "'bad'" in caplog.text and "'wide'" in caplog.text


def test_fixed_fields_are_little_endian_fixed64():
    """A gauge point's bytes spelled out (field 3 fixed64 time, field 4 double), no attributes."""
    p = Pipeline()
    p.record("c", [Metric("g", MetricKind.GAUGE, 1.5, "", "", {}, T1)])
    (body,) = OtlpEncoder().encode(family_pairs(p), p.resource)
    assert b"\x0a\x12\x19" + struct.pack("<Q", T1) + b"\x21" + struct.pack("<d", 1.5) in body
    req = decoded([body])[0]
    assert isinstance(req.resource_metrics[0].scope_metrics[0].metrics[0], metrics_pb2.Metric)


def test_attribute_values_of_every_type_as_the_sdk_encodes_them():
    """Beyond what the pipeline stores: lists, mappings, bytes, None (the SDK's _encode_attributes)."""
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_attributes
    from opentelemetry.proto.common.v1.common_pb2 import KeyValueList

    from integrations.otlp_wire import encode_attributes

    attrs = {**ATTRS, "list": ["a", 1, 2.5, True], "map": {"k": "v", "n": {"i": 1}}, "raw": b"\x00\xff", "none": None,
             "neg": -(2**63)}
    ours = KeyValueList.FromString(encode_attributes(0x0A, attrs))
    assert list(ours.values) == _encode_attributes(attrs)
