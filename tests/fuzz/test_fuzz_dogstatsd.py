"""Fuzzing the DogStatsD parser (``integrations.datadog.dogstatsd.parse_datagram``): whatever a
datagram holds, parsing never raises and gives only documented results -- samples, events and
service checks within the parser's bounds, errors with a reason of ``ERROR_REASONS`` and at most
64 bytes -- one result per non-empty message (a bad message never takes a neighbour with it), and
the same results as its messages parsed one by one; in bounded time and memory.

A datagram of up to 64 KB (what a socket can carry) is also aggregated
(``integrations.datadog.aggregate``) and flushed: that never raises either, and its metrics are
well-formed (finite numbers, exponential histograms whose counts add up).

Seeds: ``corpus/dogstatsd/``: every metric type and field, events, service checks, datagrams as
the official ``datadog`` client writes them, malformed and non-UTF-8 messages.
"""

from __future__ import annotations

import math

import pytest

from bridge.api import ExponentialHistogramValue, MetricKind
from integrations.datadog.aggregate import Aggregator
from integrations.datadog.config import DogStatsDConfig
from integrations.datadog.dogstatsd import (
    ALERT_TYPES,
    ERROR_REASONS,
    KINDS,
    MAX_NAME,
    MAX_TAG,
    MIN_SAMPLE_RATE,
    PRIORITIES,
    Parsed,
    parse_datagram,
)
from tests.fuzz.harness import run_fuzz, seeds

TOKENS = [b"|", b"\n", b"\r\n", b":", b",", b"#", b"@", b"|@0.5", b"|#a:b,c", b"|T1657100430", b"|c:ci-1", b"|c",
          b"|g", b"|ms", b"|h", b"|d", b"|s", b"_e{", b"_sc|", b"}:", b"\\n", b"m:", b"d:", b"h:", b"p:low",
          b"t:error", b"1e308", b"nan", b"-0", b"\xff", b"\xc3", b"\xed\xb2\x80", b"\x00"]
MAX_TAGS = 20  # smaller than the default, so that the bound is hit often
#: Inputs up to this size are also parsed message by message (the independence check).
SPLIT_CHECK = 8192
#: Inputs up to this size (a datagram's largest) are also aggregated and flushed.
AGGREGATE_CHECK = 65535
AGGREGATOR = Aggregator(DogStatsDConfig(listen_udp="127.0.0.1:8125", max_contexts=5000,
                                        histogram_aggregates=["max", "min", "median", "avg", "sum", "count"],
                                        histogram_percentiles=[0.5, 0.95, 0.99]))
_now = [2e9]


def _aggregate(p: Parsed) -> None:
    AGGREGATOR.add(p.samples)
    _now[0] += 10
    out = AGGREGATOR.flush(_now[0])
    for m in out.gauges + out.deltas:
        if m.kind is MetricKind.EXPONENTIAL_HISTOGRAM:
            h = m.value
            assert isinstance(h, ExponentialHistogramValue)
            assert h.count == h.zero_count + sum(h.positive_counts) + sum(h.negative_counts), h
        else:  # finite samples can still overflow a sum: inf, never an exception
            assert isinstance(m.value, float) and m.kind in (MetricKind.GAUGE, MetricKind.COUNTER), m
    assert set(AGGREGATOR.dropped) <= {"max_contexts", "timestamped_unsupported", "histogram_values",
                                       "set_members", "distribution_buckets"}


def _check_items(p: Parsed) -> None:
    for s in p.samples[:2000]:
        assert s.kind in KINDS and 0 < len(s.name) <= MAX_NAME and " " not in s.name, s
        if s.kind == "s":
            assert len(s.values) == 1 and isinstance(s.values[0], str) and s.values[0], s
        else:
            assert s.values and all(isinstance(v, float) and math.isfinite(v) for v in s.values), s
        assert MIN_SAMPLE_RATE <= s.sample_rate <= 1.0, s
        assert len(s.tags) <= MAX_TAGS and all(0 < len(t) <= MAX_TAG for t in s.tags), s
        assert s.timestamp is None or s.timestamp >= 1, s
    for e in p.events[:2000]:
        assert e.title and e.priority in PRIORITIES and e.alert_type in ALERT_TYPES and len(e.tags) <= MAX_TAGS, e
    for c in p.service_checks[:2000]:
        assert c.status in (0, 1, 2, 3) and c.name and len(c.tags) <= MAX_TAGS, c
    for reason, excerpt in p.errors[:2000]:
        assert reason in ERROR_REASONS and isinstance(excerpt, bytes) and len(excerpt) <= 64, (reason, excerpt)


def _messages(data: bytes) -> list[bytes]:
    """The non-empty messages, as they came (a line without its one trailing ``\\r`` is the message)."""
    return [m for m in data.split(b"\n") if m and m != b"\r"]


def parse(data: bytes) -> None:
    p = parse_datagram(data, MAX_TAGS)
    _check_items(p)
    messages = _messages(data)
    results = len(p.samples) + len(p.events) + len(p.service_checks) + len(p.errors)
    assert results == max(1, len(messages)), (results, len(messages))
    if not messages:
        assert [r for r, _ in p.errors] == ["empty"]
    if len(data) <= SPLIT_CHECK and len(messages) > 1:
        alone = Parsed()
        for m in messages:
            q = parse_datagram(m, MAX_TAGS)
            alone.samples += q.samples
            alone.events += q.events
            alone.service_checks += q.service_checks
            alone.errors += q.errors
        assert alone == p, (alone, p)
    if len(data) <= AGGREGATE_CHECK:
        _aggregate(p)


@pytest.mark.fuzz
def test_fuzz_dogstatsd() -> None:
    pool = seeds("dogstatsd")
    for data in pool:
        parse(data)
    assert any(parse_datagram(d).samples for d in pool) and any(parse_datagram(d).errors for d in pool)
    assert run_fuzz(parse, pool, allowed=(), tokens=TOKENS) >= len(pool)
