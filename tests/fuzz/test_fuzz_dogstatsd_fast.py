"""Fuzzing the DogStatsD reader's C loop (``integrations.datadog._dsdfast``, through
``LineCache.feed``) against the Python loop it stands in for: whatever a batch of datagrams holds,
both give the same samples taken, events, service checks and errors (inputs up to a datagram's
largest, 64 KiB; larger ones go to the C loop alone, which must not raise), and the same aggregated
interval (flushed after every input, histograms sorted by ``_dsdfast.sort_values`` on one side
and by Python on the other); neither raises.

The two line caches and aggregators live across inputs, so the contexts of earlier inputs (the
seeds' and the mutations') are remembered and the C loop takes their lines; the inputs are fed as
the server feeds them, from a writable buffer.

Seeds: ``corpus/dogstatsd/`` (the parser's target's).
"""

from __future__ import annotations

from collections import Counter

import pytest

from integrations.datadog import aggregate
from integrations.datadog.aggregate import Aggregator, LineCache
from integrations.datadog.config import DogStatsDConfig
from tests.fuzz.harness import require_extension, run_fuzz, seeds
from tests.fuzz.test_fuzz_dogstatsd import TOKENS

CONFIG = DogStatsDConfig(listen_udp="127.0.0.1:8125", max_contexts=3000,
                         histogram_aggregates=["max", "min", "median", "avg", "sum", "count"],
                         histogram_percentiles=[0.5, 0.95, 0.99])


def _side(fast: bool) -> tuple[Aggregator, LineCache]:
    agg = Aggregator(CONFIG)
    agg.fast = fast
    return agg, LineCache(agg, 20, size=4096, fast=fast)


_C, _PY = _side(True), _side(False)
#: Inputs up to this size are fed twice.
REPEAT_CHECK = 16384
#: Inputs up to this size (a datagram's largest) are fed to both loops and compared; larger ones to
#: the C loop alone.
COMPARE_CHECK = 65536
_now = [2e9]


def _flushed(agg: Aggregator) -> tuple:
    out = agg.flush(_now[0])

    def key(m):  # (the two aggregators started apart: their first interval's start differs)
        return (m.name, m.kind, repr(m.value), sorted(m.attributes.items()), m.unit, m.timestamp_ns)
    return [key(m) for m in out.gauges], [key(m) for m in out.deltas], [(s.name, s.tags, s.sketch.count)
                                                                         for s in out.sketches]


def feed(data: bytes) -> None:
    _now[0] += 10
    if len(data) > COMPARE_CHECK:  # (the C loop alone: it must not raise; both would pass the harness's CPU bound)
        _C[1].feed(memoryview(bytearray(data)))
        _C[0].flush(_now[0])  # (and the two intervals start empty again)
        _PY[0].flush(_now[0])
        return
    drops = [Counter(agg.dropped) for agg in (_C[0], _PY[0])]
    # The second time, the input's own contexts are remembered and the C loop takes them (for inputs
    # of a datagram's usual size: a large one fed four times would cost more than the harness's CPU
    # bound allows, which is for one pass over the input).
    for _ in range(2 if len(data) <= REPEAT_CHECK else 1):
        got = []
        for _agg, cache in (_C, _PY):
            taken, p = cache.feed(memoryview(bytearray(data)))
            got.append((taken, p.samples, p.events, p.service_checks, p.errors))
        assert got[0] == got[1], (got[0], got[1])
    assert _flushed(_C[0]) == _flushed(_PY[0])
    assert Counter(_C[0].dropped) - drops[0] == Counter(_PY[0].dropped) - drops[1]


@pytest.mark.fuzz
def test_fuzz_dogstatsd_fast() -> None:
    require_extension(aggregate._dsdfast, "integrations.datadog._dsdfast")
    pool = seeds("dogstatsd")
    for data in pool:
        feed(data)
    assert len(_C[1]) > 5
    assert run_fuzz(feed, pool, allowed=(), tokens=TOKENS) >= len(pool)
