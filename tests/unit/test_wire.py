"""bridge.wire: the agent <-> worker codec, and what it refuses from a hostile worker."""

from __future__ import annotations

import re
import struct

import pytest

from bridge.api import Alert, AlertState, HistogramValue, Metric, MetricKind
from bridge.wire import (
    WireError,
    WireLimits,
    alert_from_value,
    alert_value,
    decode_frame_header,
    decode_metrics,
    decode_value,
    encode_metrics,
    encode_value,
    frame,
)
from tests.unit.isolation_plugins import all_kinds

LIMITS = WireLimits()


def test_every_kind_round_trips_exactly():
    ms = all_kinds()
    got, native = decode_metrics(encode_metrics(ms), LIMITS)
    assert got == ms and native == set()
    for a, b in zip(got, ms, strict=True):
        assert type(a.value) is type(b.value) and a.attributes == b.attributes
        # (attribute order is the family's key order: not part of a series' identity)
        assert {k: type(v) for k, v in a.attributes.items()} == {k: type(v) for k, v in b.attributes.items()}


def test_families_keep_first_appearance_order_and_native_names():
    ms = [Metric("a", MetricKind.GAUGE, 1.0, attributes={"x": "1"}), Metric("b_total", MetricKind.COUNTER, 2.0),
          Metric("a", MetricKind.GAUGE, 3.0, attributes={"x": "2"})]
    got, native = decode_metrics(encode_metrics(ms, {"b_total"}), LIMITS)
    assert got == [ms[0], ms[2], ms[1]] and native == {"b_total"}


def test_repeated_strings_are_sent_once():
    ms = [Metric("req", MetricKind.COUNTER, float(i), attributes={"host": "web-1", "path": f"/p{i % 10}"})
          for i in range(1000)]
    body = encode_metrics(ms)
    n_str, n_text = struct.unpack_from("=II", body)
    assert n_str == 1 + 1 + 2 + 1 + 10  # name, "" (unit and description), the keys, "web-1", the paths
    assert len(body) < 1000 * 16 + 200  # 8 bytes of value and 2 x 4 of attribute codes per series, a small header
    assert decode_metrics(body, LIMITS)[0] == ms


@pytest.mark.parametrize("value", [None, True, False, 0, -(2**63), 2**63 - 1, 1.5, float("inf"), "", "ü→\x00",
                                   [1, "a", [None]], {"m": "initialize", "a": [{"k": [1.0]}]}])
def test_plain_values_round_trip(value):
    assert decode_value(encode_value(value), WireLimits(max_depth=8)) == value


def test_plain_values_refuse_what_the_limits_do_not_allow():
    nested = encode_value([[[[["deep"]]]]])
    with pytest.raises(WireError, match="nested deeper than 4"):
        decode_value(nested, LIMITS)
    with pytest.raises(WireError, match="4000000000 items"):
        decode_value(b"l" + struct.pack(">I", 4_000_000_000), LIMITS)
    with pytest.raises(WireError, match="unknown tag 0x7a at byte 0"):
        decode_value(b"z", LIMITS)
    with pytest.raises(WireError, match="truncated"):
        decode_value(encode_value("abc")[:-1], LIMITS)
    with pytest.raises(WireError, match="1 bytes after the value"):
        decode_value(encode_value(1) + b"N", LIMITS)
    with pytest.raises(WireError, match="not UTF-8"):
        decode_value(b"s" + struct.pack(">I", 1) + b"\xff", LIMITS)
    with pytest.raises(WireError, match="over the limit of 3"):
        decode_value(encode_value("abcd"), WireLimits(max_string=3))


def test_metrics_over_the_cardinality_limit_are_refused_naming_the_family():
    ms = [Metric("big", MetricKind.GAUGE, float(i), attributes={"i": str(i)}) for i in range(11)]
    with pytest.raises(WireError, match=r"family 0 \('big'\): more than 10 series"):
        decode_metrics(encode_metrics(ms), WireLimits(max_series=10))


def test_a_histogram_over_the_bucket_limit_is_refused():
    h = HistogramValue(tuple(float(i) for i in range(20)), (1,) * 21, 1.0, 21)
    with pytest.raises(WireError, match="series 0: 20 buckets is over the limit of 10"):
        decode_metrics(encode_metrics([Metric("h", MetricKind.HISTOGRAM, h)]), WireLimits(max_buckets=10))


def test_a_value_the_api_refuses_is_a_wire_error_saying_where():
    good = encode_metrics([Metric("h", MetricKind.HISTOGRAM, HistogramValue((1.0, 2.0), (1, 1, 1), 1.0, 3))])
    # Swap the bounds (they must be strictly increasing): HistogramValue refuses it.
    i = good.index(struct.pack("=dd", 1.0, 2.0))
    bad = good[:i] + struct.pack("=dd", 2.0, 1.0) + good[i + 16:]
    with pytest.raises(WireError, match=r"family 0 \('h'\) series 0: histogram bounds must be strictly increasing"):
        decode_metrics(bad, LIMITS)


def test_streams_must_be_used_up():
    body = encode_metrics([Metric("g", MetricKind.GAUGE, 1.0)])
    n_str, n_text, n_u, n_q, n_d, n_other = struct.unpack_from("=IIIIII", body)
    longer = struct.pack("=IIIIII", n_str, n_text, n_u, n_q, n_d + 1, n_other) + body[24:] + struct.pack("=d", 0.0)
    with pytest.raises(WireError, match=r"streams not used up \(.*f64 1/2\)"):
        decode_metrics(longer, LIMITS)


def test_frame_headers_are_bounded():
    assert decode_frame_header(frame(ord("R"), b"abc")[:4], LIMITS) == 4
    with pytest.raises(WireError, match="over the limit of 100"):
        decode_frame_header(struct.pack(">I", 101), WireLimits(max_frame=100))
    with pytest.raises(WireError, match="empty frame"):
        decode_frame_header(b"\0\0\0\0", LIMITS)


def test_alerts_round_trip_and_a_hostile_one_is_refused_naming_the_field():
    a = Alert("a1", "Down", "critical", AlertState.ACKNOWLEDGED, {"job": "x"}, {"summary": "s"}, 1.5, 10.0, 12.0, "fp")
    assert alert_from_value(decode_value(encode_value(alert_value(a)), LIMITS), "alert 0") == a
    for bad, where in [([], "alert 0: an alert is a map"), ({"labels": {"a": 1}}, "alert 0.labels: not a map of strings"),
                       ({"state": "gone"}, "alert 0.state"), ({"value": "x"}, "alert 0.value: not a number"),
                       ({"name": 3}, "alert 0.name: not a string"), ({"evil": 1}, "unknown alert field 'evil'")]:
        with pytest.raises(WireError, match=re.escape(where)):
            alert_from_value(bad, "alert 0")
