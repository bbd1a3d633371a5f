"""Native histograms in remote write (``encode_native_histogram``), read back with Prometheus'
``prompb`` messages (tests.unit.prompb)."""

from __future__ import annotations

import pytest

from bridge.api import ExponentialHistogramValue
from integrations.prometheus.remote_write import encode_labels, encode_native_histogram
from tests.unit.prompb import WriteRequest


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
