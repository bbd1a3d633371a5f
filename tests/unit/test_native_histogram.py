"""Native histograms in remote write (``encode_native_histogram``), read back with Prometheus'
``prompb`` messages declared here from their field numbers (types.proto of Prometheus 2.42)."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from bridge.api import ExponentialHistogramValue
from integrations.prometheus.remote_write import encode_labels, encode_native_histogram

F = descriptor_pb2.FieldDescriptorProto


def _prompb() -> dict[str, type]:
    fd = descriptor_pb2.FileDescriptorProto(name="monbridge_test_prompb.proto", package="monbridge_test_prompb",
                                            syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".monbridge_test_prompb.{type_name}"

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("Label", ("name", 1, F.TYPE_STRING, opt, ""), ("value", 2, F.TYPE_STRING, opt, ""))
    message("BucketSpan", ("offset", 1, F.TYPE_SINT32, opt, ""), ("length", 2, F.TYPE_UINT32, opt, ""))
    message("Histogram", ("count_int", 1, F.TYPE_UINT64, opt, ""), ("sum", 3, F.TYPE_DOUBLE, opt, ""),
            ("schema", 4, F.TYPE_SINT32, opt, ""), ("zero_threshold", 5, F.TYPE_DOUBLE, opt, ""),
            ("zero_count_int", 6, F.TYPE_UINT64, opt, ""), ("negative_spans", 8, F.TYPE_MESSAGE, rep, "BucketSpan"),
            ("negative_deltas", 9, F.TYPE_SINT64, rep, ""), ("positive_spans", 11, F.TYPE_MESSAGE, rep, "BucketSpan"),
            ("positive_deltas", 12, F.TYPE_SINT64, rep, ""), ("timestamp", 15, F.TYPE_INT64, opt, ""))
    message("TimeSeries", ("labels", 1, F.TYPE_MESSAGE, rep, "Label"), ("histograms", 4, F.TYPE_MESSAGE, rep, "Histogram"))
    message("WriteRequest", ("timeseries", 1, F.TYPE_MESSAGE, rep, "TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"monbridge_test_prompb.{n}"))
            for n in ("WriteRequest",)}


WriteRequest = _prompb()["WriteRequest"]


def _decode(entry: bytes):
    (ts,) = WriteRequest.FromString(entry).timeseries
    return {lb.name: lb.value for lb in ts.labels}, ts.histograms[0]


def _counts(deltas) -> list[int]:
    out, c = [], 0
    for d in deltas:
        c += d
        out.append(c)
    return out


def test_a_native_histogram_as_the_spec_maps_it():
    v = ExponentialHistogramValue(scale=3, zero_count=2, positive_offset=-1, positive_counts=(4, 0, 7, 1),
                                  negative_offset=5, negative_counts=(3,), count=17, sum=12.5)
    labels, h = _decode(encode_native_histogram(encode_labels([("__name__", "x"), ("a", "b")]), v, 1234))
    assert labels == {"__name__": "x", "a": "b"}
    assert (h.count_int, h.sum, h.schema, h.zero_count_int, h.timestamp) == (17, 12.5, 3, 2, 1234)
    assert h.zero_threshold == 1e-128  # OTel's 0 (exact zeros), Prometheus' default
    # Prometheus indexes buckets by their upper bound: OTel's bucket i is its i + 1.
    assert [(s.offset, s.length) for s in h.positive_spans] == [(0, 4)]
    assert _counts(h.positive_deltas) == [4, 0, 7, 1]
    assert [(s.offset, s.length) for s in h.negative_spans] == [(6, 1)] and _counts(h.negative_deltas) == [3]


def test_scales_over_8_are_downscaled_and_under_minus_4_refused():
    v = ExponentialHistogramValue(scale=10, zero_count=0, positive_offset=5, positive_counts=(1, 1, 1, 1), count=4,
                                  negative_offset=0, negative_counts=())
    _, h = _decode(encode_native_histogram(b"", v, 1))
    # Scale 10 to 8: indexes 5..8 become 1, 1, 1, 2 (i >> 2), then + 1.
    assert h.schema == 8 and [(s.offset, s.length) for s in h.positive_spans] == [(2, 2)]
    assert _counts(h.positive_deltas) == [3, 1] and not h.negative_spans
    coarse = ExponentialHistogramValue(scale=-5, zero_count=0, positive_offset=0, positive_counts=(1,), count=1,
                                       negative_offset=0, negative_counts=())
    assert encode_native_histogram(b"", coarse, 1) is None


@pytest.mark.parametrize("total", [None, 3.5])
def test_a_missing_sum_is_nan(total):
    import math

    v = ExponentialHistogramValue(scale=0, zero_count=1, positive_offset=0, positive_counts=(), count=1,
                                  negative_offset=0, negative_counts=(), sum=total)
    _, h = _decode(encode_native_histogram(b"", v, 1))
    assert (math.isnan(h.sum) if total is None else h.sum == total)
