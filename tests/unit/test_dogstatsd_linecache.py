"""The DogStatsD reader's fused parse and aggregation (``LineCache``) against the full path
(``parse_datagram`` then ``Aggregator.add``): the same stream, in the same batches, gives the same
flushed metrics, the same drops and the same events, service checks and errors; its memory of
contexts stays bounded. Each case runs twice: with the C loop (``integrations.datadog._dsdfast``,
which must be built in CI) and with the Python loop."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from integrations.datadog import aggregate
from integrations.datadog.aggregate import Aggregator, Flushed, LineCache
from integrations.datadog.config import DogStatsDConfig
from integrations.datadog.dogstatsd import parse_datagram

T0 = float(int(time.time()) + 30 * 86400)  # ahead of the aggregators' start, however long after this import a test runs


def require_c_loop() -> None:
    if aggregate._dsdfast is None:
        if os.environ.get("CI"):
            pytest.fail("integrations.datadog._dsdfast is not built (setup.py's extension): the C loop is untested")
        pytest.skip("integrations.datadog._dsdfast is not built here (python setup.py build_ext --inplace)")


@pytest.fixture(params=["c", "python"])
def fast(request) -> bool:
    """Whether the LineCache under test runs the C loop."""
    if request.param == "c":
        require_c_loop()
    return request.param == "c"


def config(**kw) -> DogStatsDConfig:
    return DogStatsDConfig(listen_udp="127.0.0.1:8125", **kw)


def value(rnd: random.Random) -> str:
    return rnd.choice((str(rnd.randint(0, 100)), f"{rnd.uniform(-1e4, 1e4):.3f}", "1", "0", "2e3", "-0.5", "+7",
                       ".5", "1e-320", "3.4e300"))


def odd_value(rnd: random.Random) -> str:
    """A value the parser refuses or reads as several: the fused path must hand it on."""
    return rnd.choice(("nan", "inf", "-Inf", "1_000", " 1", "1 ", "0x10", "", "abc", "1:2", "3::4", "1:x", "\u0661",
                       "1e999", "١٢"))


def contexts(rnd: random.Random, n: int) -> list[str]:
    """Context templates: ``{}`` where the value goes."""
    out = []
    for i in range(n):
        kind = rnd.choice(("c", "c", "g", "g", "ms", "h", "d", "s"))
        name = f"m{i % 7}.x{i}"
        tail = "|" + kind
        if kind != "g" and rnd.random() < 0.3:
            tail += "|@" + rnd.choice(("0.5", "0.1", "0.25", "1", "0.001"))
        if rnd.random() < 0.6:
            tags = [f"k{rnd.randint(0, 3)}:v{rnd.randint(0, 2)}" for _ in range(rnd.randint(0, 4))]
            if rnd.random() < 0.2:
                tags.append("flag")
            tail += "|#" + ",".join(tags)
        if rnd.random() < 0.05:
            tail += "|c:ci-1234"
        if rnd.random() < 0.05:
            tail += "|e:x|card:low"
        out.append(name + ":{}" + tail)
    return out


def unusual(rnd: random.Random, ctx: list[str]) -> str:
    c = rnd.choice(ctx)
    return rnd.choice((
        c.format(odd_value(rnd)),
        c.format(f"{value(rnd)}:{value(rnd)}"),  # several values (a set's member holding ':')
        c.format(value(rnd)) + f"|T{int(T0) - rnd.randint(0, 5)}",
        c.format(value(rnd)) + "|Tx",
        c.format(value(rnd)) + "|@2",
        c.format(value(rnd)) + "|@0.5",  # the same context text less one field: another context text
        c.format(value(rnd)) + "\r",
        c.format(value(rnd)) + "|#" + ",".join(f"t{i}" for i in range(rnd.choice((3, 120)))),
        c.replace("|", "|zz", 1).format(value(rnd)),  # a bad type
        "m|c:5|c", "m:5|c|c", "a|g:1|g", "a:1|g|g", "x:1", "x|c", ":1|c", "bad name:1|c", "n:1|q", "",
        "_e{5,4}:title|text|t:error|#a:b", "_e{5,4}:tit", "_sc|chk|2|#a:b|m:down", "_sc|chk|9", "_scx:1|c",
        "_e{1,1}:a|b|#" + ",".join(f"t{i}" for i in range(101)),
        "n:" + "9" * 400 + "|c", "long." + "n" * 300 + ":1|c",
        "é:1|c", "m.é:1|g|#é:ü",
    ))


def stream(rnd: random.Random, n_ctx: int, batches: int) -> list[bytes]:
    ctx = contexts(rnd, n_ctx)
    out = []
    for _ in range(batches):
        lines = []
        for _ in range(rnd.randint(1, 40)):
            lines.append(unusual(rnd, ctx) if rnd.random() < 0.15 else rnd.choice(ctx).format(value(rnd)))
        data = "\n".join(lines).encode()
        if rnd.random() < 0.03:
            data += b"\nm:1|c\xff\n"  # invalid UTF-8: the whole batch through the parser
        if rnd.random() < 0.02:
            data = b"\n\r\n"
        out.append(data)
    return out


def normal(f: Flushed) -> tuple:
    def key(m):
        # (the two aggregators' first intervals start apart; timestamped points are at their own time)
        return (m.name, m.kind, repr(m.value), sorted(m.attributes.items()), m.unit,
                "end" if m.timestamp_ns == f.end_ns else m.timestamp_ns,
                "start" if m.start_time_ns == f.start_ns else m.start_time_ns)
    return ([key(m) for m in f.gauges], [key(m) for m in f.deltas],
            [(s.name, s.tags, repr(s.sketch.sum), s.sketch.count) for s in f.sketches])


def run_both(batches: list[bytes], flush_every: int, cache_size: int = 1 << 15, use_c: bool = True, **kw):
    full = Aggregator(config(**kw))
    fast = Aggregator(config(**kw))
    cache = LineCache(fast, 100, size=cache_size, fast=use_c)
    assert (cache._fast is not None) == use_c
    got_full, got_fast, flushes, most = [], [], [], 0
    now = T0
    for i, data in enumerate(batches):
        p = parse_datagram(data, 100)
        full.add(p.samples)
        got_full.append((len(p.samples), p.events, p.service_checks, p.errors))
        taken, q = cache.feed(memoryview(bytearray(data)))
        assert q.samples == []
        got_fast.append((taken, q.events, q.service_checks, q.errors))
        most = max(most, len(cache))
        assert full.contexts == fast.contexts
        if i % flush_every == flush_every - 1:
            now += 10
            flushes.append((normal(full.flush(now)), normal(fast.flush(now))))
    now += 10
    flushes.append((normal(full.flush(now)), normal(fast.flush(now))))
    return got_full, got_fast, flushes, full.dropped, fast.dropped, most


@pytest.mark.parametrize("seed", range(12))
def test_the_fused_path_gives_exactly_the_full_paths_results(seed, fast):
    rnd = random.Random(seed)
    kw = {"max_contexts": rnd.choice((15, 60, 100_000))}
    batches = stream(rnd, rnd.choice((5, 40, 300)), 150)
    got_full, got_fast, flushes, dropped_full, dropped_fast, _ = run_both(
        batches, rnd.choice((7, 50, 1000)), cache_size=rnd.choice((8, 1 << 15)), use_c=fast, **kw)
    assert got_fast == got_full
    for full, fast in flushes:
        assert fast == full
    assert dropped_fast == dropped_full
    assert sum(len(f[0][0]) + len(f[0][1]) for f in flushes) > 0  # (the stream did aggregate something)


@pytest.mark.parametrize("bounds", [(6, 3, 2), (40, 20, 8)])
def test_the_fused_path_keeps_the_bounds_of_the_full_path(fast, bounds, monkeypatch):
    """Histogram values, set members and distribution buckets reached mid-stream: the C loop stops
    at the bound and the Python line takes the drop, as the full path counts it."""
    stored, members, bins = bounds
    monkeypatch.setattr(aggregate, "MAX_STORED_VALUES", stored)
    monkeypatch.setattr(aggregate, "MAX_SET_MEMBERS", members)
    monkeypatch.setattr(aggregate, "BIN_LIMIT", bins)
    rnd = random.Random(sum(bounds))
    batches = []
    for _ in range(60):
        lines = [rnd.choice(("t.a:{}|ms", "t.b:{}|h|@0.5", "s.a:{}|s", "s.b:{}|s|#k:v", "d.a:{}|d", "c.a:{}|c"))
                 .format(rnd.choice((rnd.randint(0, 50), rnd.uniform(-1e6, 1e6), 2.0 ** rnd.randint(-60, 60))))
                 for _ in range(rnd.randint(1, 20))]
        batches.append("\n".join(lines).encode())
    got_full, got_fast, flushes, dropped_full, dropped_fast, _ = run_both(batches, 20, use_c=fast)
    assert got_fast == got_full
    for full, fast_out in flushes:
        assert fast_out == full
    assert dropped_fast == dropped_full
    assert dropped_full["histogram_values"] > 0 and dropped_full["set_members"] > 0
    assert dropped_full["distribution_buckets"] > 0


def test_the_c_loop_takes_remembered_contexts_without_the_python_loop(monkeypatch):
    require_c_loop()
    agg = Aggregator(config())
    cache = LineCache(agg, 100)
    cache.feed(b"a:1|c|#x:1\nb:2|g\nt:3|ms\ns:u1|s\nd:4|d")
    assert len(cache) == 5
    calls = []
    real = cache._feed_lines
    monkeypatch.setattr(cache, "_feed_lines", lambda lines, *a: calls.append(lines) or real(lines, *a))
    taken, p = cache.feed(memoryview(bytearray(b"a:2|c|#x:1\n\nb:5.5e0|g\nt:1|ms\ns:u2|s\ns:u1|s\nd:8|d\n")))
    assert taken == 6 and not p.errors and calls == []
    taken, p = cache.feed(b"a:2|c|#x:1\nb:1_0|g\nb:+7|g")  # one value of another form: that line alone in Python
    assert taken == 2 and calls == [("b:1_0|g",)] and [r for r, _ in p.errors] == ["bad_value"]
    out = agg.flush(T0)
    values = {m.name: m.value for m in out.gauges + out.deltas}
    assert values["a"] == 5.0 and values["b"] == 7.0 and values["s"] == 2.0 and values["t.count"] == 2.0


def test_the_fused_path_takes_repeated_contexts_without_parsing_them(fast):
    agg = Aggregator(config())
    cache = LineCache(agg, 100, fast=fast)
    cache.feed(b"a:1|c|#x:1\nb:2|g\nt:3|ms|@0.5\ns:u1|s\nd:4|d")
    assert len(cache) == 5
    # a message of a remembered context is aggregated even once the parser's caches are gone
    from integrations.datadog import dogstatsd
    dogstatsd._NAMES.clear()
    dogstatsd._TAGS.clear()
    taken, p = cache.feed(b"a:2|c|#x:1\nb:5|g\nt:1|ms|@0.5\ns:u2|s\ns:u1|s\nd:8|d")
    assert taken == 6 and not p.errors
    assert dogstatsd._NAMES == {} and dogstatsd._TAGS == {}
    out = agg.flush(T0)
    values = {m.name: m.value for m in out.gauges + out.deltas}
    assert values["a"] == 3.0 and values["b"] == 5.0 and values["s"] == 2.0 and values["t.count"] == 4.0
    assert out.sketches[0].sketch.count == 2


def test_the_fused_path_remembers_a_bounded_number_of_contexts(fast):
    rnd = random.Random(7)
    batches = [("\n".join(f"c{rnd.randint(0, 5000)}.n:{rnd.randint(0, 9)}|c|#a:{rnd.randint(0, 3)}"
                          for _ in range(30))).encode() for _ in range(400)]
    got_full, got_fast, flushes, dropped_full, dropped_fast, most = run_both(batches, 100, cache_size=256, use_c=fast)
    assert got_fast == got_full and dropped_fast == dropped_full
    for full, fast in flushes:
        assert fast == full
    assert 200 < most <= 256
    cache = LineCache(Aggregator(config()), 100, size=256)
    cache.feed(("n:1|c|#" + "t" * 600).encode())  # a context text too long to be kept
    assert len(cache) == 0


def test_fused_readers_and_flushes_in_threads_lose_nothing(fast):
    agg = Aggregator(config())
    lines = "\n".join(f"c{i}:1|c|#a:b" for i in range(50)).encode()
    total = 0.0
    stop = threading.Event()
    lock = threading.Lock()
    outs = []

    def reader():
        cache = LineCache(agg, 100, fast=fast)
        for _ in range(400):
            cache.feed(lines)

    def flusher():
        now = T0
        while not stop.is_set():
            now += 1
            with lock:
                outs.append(agg.flush(now))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    f = threading.Thread(target=flusher)
    f.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    f.join()
    outs.append(agg.flush(T0 + 1e6))
    total = sum(m.value for out in outs for m in out.deltas)
    assert total == 3 * 400 * 50


@pytest.mark.parametrize("seed", range(6))
def test_the_flush_sorts_histograms_in_c_as_in_python(seed):
    """Histogram and timer values sorted with ``_dsdfast.sort_values`` (without the interpreter
    lock) give the flush of the Python sort exactly: ties in their order of arrival (-0.0 and 0.0
    too), weights and their running sums, every aggregate and percentile."""
    require_c_loop()
    rnd = random.Random(seed)
    kw = {"histogram_aggregates": ["max", "min", "median", "avg", "sum", "count"],
          "histogram_percentiles": [0.5, 0.75, 0.95, 0.99]}
    lines = []
    for _ in range(3000):
        v = rnd.choice((rnd.randint(-3, 3), rnd.uniform(-1e3, 1e3), "0.0", "-0.0", "-0", 1e-300, 7))
        tail = rnd.choice(("|ms", "|h", "|ms|@0.5", "|h|@0.1", "|ms|#a:b", "|h|@0.25|#a:b"))
        lines.append(f"t{rnd.randint(0, 5)}:{v}{tail}")
    outs = []
    for use_c in (True, False):
        agg = Aggregator(config(**kw))
        agg.fast = use_c
        cache = LineCache(agg, 100, fast=use_c)
        for i in range(0, len(lines), 25):
            cache.feed("\n".join(lines[i:i + 25]).encode())
        outs.append(normal(agg.flush(T0)))
    assert outs[0] == outs[1]
    assert len(outs[0][0]) > 50
