"""The remote-write encoder against protobuf's own decoder (prompb's messages: tests.unit.prompb) and
against exact bytes worked out by hand from the protobuf wire format."""

from __future__ import annotations

import math
import struct

import pytest

from bridge.api import ExponentialHistogramValue
from integrations.prometheus import remote_write
from integrations.prometheus.remote_write import (
    STALE_NAN,
    encode_labels,
    encode_named_labels,
    encode_native_histogram,
    encode_sample,
)
from tests.unit.prompb import WriteRequest


def decode(body: bytes):
    return WriteRequest.FromString(body)


def labels_of(ts) -> list[tuple[str, str]]:
    return [(lb.name, lb.value) for lb in ts.labels]


@pytest.fixture(autouse=True)
def _fresh_label_cache(monkeypatch):
    monkeypatch.setattr(remote_write, "_LABEL_FIELDS", {})


def test_a_sample_in_exact_bytes():
    body = encode_sample(encode_labels([("__name__", "up"), ("job", "a")]), 1.0, 1000)
    label_name = b"\x0a\x0e" + b"\x0a\x08__name__" + b"\x12\x02up"
    label_job = b"\x0a\x08" + b"\x0a\x03job" + b"\x12\x01a"
    sample = b"\x12\x0c" + b"\x09" + struct.pack("<d", 1.0) + b"\x10\xe8\x07"
    series = label_name + label_job + sample
    assert body == b"\x0a" + bytes((len(series),)) + series


@pytest.mark.parametrize(("value", "ts"), [
    (0.0, 0), (-0.0, 1), (1.5, 127), (2.0, 128), (-3.25, 16383), (1e308, 16384), (math.inf, 2**62),
    (-math.inf, 2**63 - 1), (5.0, -1), (6.0, -(2**63)), (7.0, 1_700_000_000_000),
])
def test_samples_decode_as_protobuf_reads_them(value, ts):
    labels = [("__name__", "m"), ("a", "x" * 200), ("b", "é")]
    (series,) = decode(encode_sample(encode_labels(labels), value, ts)).timeseries
    assert labels_of(series) == labels
    (sample,) = series.samples
    assert sample.timestamp == ts
    assert struct.pack("<d", sample.value) == struct.pack("<d", value)


def test_the_staleness_marker_keeps_its_bits():
    (series,) = decode(encode_sample(encode_labels([("__name__", "m")]), STALE_NAN, 5)).timeseries
    assert struct.pack("<d", series.samples[0].value) == struct.pack("<Q", 0x7FF0000000000002)


def test_labels_are_sorted_empty_values_dropped_and_repeats_refused():
    got = encode_labels([("z", "1"), ("__name__", "m"), ("e", ""), ("a", "2")])
    (series,) = decode(encode_sample(got, 1.0, 0)).timeseries
    assert labels_of(series) == [("__name__", "m"), ("a", "2"), ("z", "1")]
    with pytest.raises(ValueError, match="label 'a' given twice"):
        encode_labels([("a", "1"), ("b", "2"), ("a", "3")])
    assert encode_labels([]) == b""


@pytest.mark.parametrize("length", [0, 1, 60, 61, 62, 63, 123, 124, 125, 126, 127, 128, 300, 20_000])
def test_label_lengths_around_the_one_byte_boundary(length):
    """The short form writes every length in one byte; at 128 a varint takes two."""
    value = "v" * length
    labels = [("__name__", "n"), ("k", value)]
    (series,) = decode(encode_sample(encode_labels(labels), 1.0, 0)).timeseries
    assert labels_of(series) == [lb for lb in labels if lb[1]]
    assert encode_named_labels("n", [("k", value)]) == encode_labels(labels)


@pytest.mark.parametrize("pairs", [
    [], [("a", "1")], [("__a", "1"), ("b", "2")], [("_", "x"), ("__name__z", "y")], [("a", ""), ("b", "2")],
    [("instance", "h:9100"), ("job", "node"), ("zone", "")],
])
def test_named_labels_equal_labels_with_the_name_sorted_in(pairs):
    assert encode_named_labels("metric", pairs) == encode_labels([("__name__", "metric"), *pairs])
    assert encode_named_labels("metric", pairs) == encode_named_labels("metric", pairs)  # again, from the cache


def test_the_label_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(remote_write, "_LABEL_FIELDS_MAX", 4)
    for i in range(10):
        assert encode_labels([("k", str(i))]) == b"\x0a" + bytes((5 + len(str(i)),)) + b"\x0a\x01k\x12" + \
            bytes((len(str(i)),)) + str(i).encode()
        assert len(remote_write._LABEL_FIELDS) <= 4
    for i in range(10):
        encode_named_labels("m", [("k", str(i)), ("l", str(i))])
        assert len(remote_write._LABEL_FIELDS) <= 4
    assert decode(encode_sample(encode_named_labels("m", [("k", "9")]), 1.0, 0)).timeseries[0].labels[1].value == "9"


def _native(h: ExponentialHistogramValue, ts: int = 1234):
    body = encode_native_histogram(encode_labels([("__name__", "h")]), h, ts)
    assert body is not None
    (series,) = decode(body).timeseries
    assert labels_of(series) == [("__name__", "h")] and not series.samples
    (hist,) = series.histograms
    return hist


def test_a_native_histogram_decodes_with_spans_and_deltas():
    h = ExponentialHistogramValue(scale=3, zero_count=2, positive_offset=-2, positive_counts=(1, 0, 5, 2),
                                  negative_offset=4, negative_counts=(3, 1), count=14, sum=-2.5, zero_threshold=0.001)
    hist = _native(h)
    assert (hist.count_int, hist.sum, hist.schema, hist.zero_threshold, hist.zero_count_int, hist.timestamp) == \
        (14, -2.5, 3, 0.001, 2, 1234)
    assert [(s.offset, s.length) for s in hist.positive_spans] == [(-1, 4)]
    assert list(hist.positive_deltas) == [1, -1, 5, -3]
    assert [(s.offset, s.length) for s in hist.negative_spans] == [(5, 2)]
    assert list(hist.negative_deltas) == [3, -2]


def test_a_native_histogram_without_buckets_sum_or_threshold():
    h = ExponentialHistogramValue(scale=0, zero_count=0, positive_offset=0, positive_counts=(),
                                  negative_offset=0, negative_counts=(), count=0)
    hist = _native(h, 0)
    assert math.isnan(hist.sum) and hist.zero_threshold == 1e-128
    assert not hist.positive_spans and not hist.negative_spans and hist.count_int == 0


@pytest.mark.parametrize(("scale", "offset", "counts", "schema", "span_offset", "cumulative"), [
    (-4, 0, (7,), -4, 1, [7]),
    (8, 0, (1, 2), 8, 1, [1, 2]),
    (9, 0, (1, 2), 8, 1, [3]),
    (9, 1, (1, 2), 8, 1, [1, 2]),
    (10, -2, (1, 2), 8, 0, [3]),
    (20, 4096, (3,), 8, 2, [3]),
])
def test_native_histogram_schemas_are_capped_at_8_by_downscaling(scale, offset, counts, schema, span_offset,
                                                                   cumulative):
    h = ExponentialHistogramValue(scale=scale, zero_count=0, positive_offset=offset, positive_counts=counts,
                                  negative_offset=offset, negative_counts=counts, count=2 * sum(counts), sum=1.0)
    hist = _native(h)
    assert hist.schema == schema
    for spans, deltas in ((hist.positive_spans, hist.positive_deltas), (hist.negative_spans, hist.negative_deltas)):
        assert [(s.offset, s.length) for s in spans] == [(span_offset, len(cumulative))]
        assert [sum(list(deltas)[: i + 1]) for i in range(len(deltas))] == cumulative


def test_a_scale_prometheus_cannot_take_is_not_encoded():
    h = ExponentialHistogramValue(scale=-5, zero_count=0, positive_offset=0, positive_counts=(1,),
                                  negative_offset=0, negative_counts=(), count=1)
    assert encode_native_histogram(b"", h, 0) is None
