"""The pipeline's per-series loops in C (``bridge._pipefast``) against their Python twins: storing a
report in place, a snapshot's columns, a plain family's sample lines and the float text in them
give the same results as the Python loops and ``repr``. Also the record that keeps a source's
owned set when every series it reports was stored in place: expiry and ``retain``/``release``
behave as when the set is rebuilt. The C cases fail in CI (``CI=true``) when the extension is not
built."""

from __future__ import annotations

import math
import os
import random
import struct

import pytest

from bridge import exposition, pipeline
from bridge.api import Metric, MetricKind
from bridge.pipeline import Pipeline

GAUGE, COUNTER = MetricKind.GAUGE, MetricKind.COUNTER


def require_c() -> None:
    if pipeline._pipefast is None:
        if os.environ.get("CI"):
            pytest.fail("bridge._pipefast is not built (setup.py's extension): the C loops are untested")
        pytest.skip("bridge._pipefast is not built here (python setup.py build_ext --inplace)")


def edge_floats() -> list[float]:
    xs = [0.0, -0.0, 0.1, 0.3, 1.0, -1.5, 100.0, 1e15, 1e16, 1e17, 1234567890123456.0, 9007199254740993.0,
          1e-4, 1e-5, 0.0001, 0.00012345, 5e-324, 2.2250738585072014e-308, 2.225073858507201e-308,
          1.7976931348623157e308, 1e22, 1e23, 0.30000000000000004, 2.0**53, 2.0**63, 2.0**64, 123.456]
    for e in range(-1074, 1024, 7):
        x = 2.0**e
        xs += [x, math.nextafter(x, 0.0), math.nextafter(x, math.inf)]
    for e in range(-324, 309, 3):
        x = float(f"1e{e}")
        xs += [x, math.nextafter(x, 0.0), math.nextafter(x, math.inf), float(f"9.999999999999999e{e}")]
    xs += [struct.unpack("<d", struct.pack("<Q", i))[0] for i in range(1, 200)]  # the smallest subnormals
    xs += [float(k) for k in range(1000)] + [k / 10 for k in range(1000)] + [float(2**53 - k) for k in range(100)]
    return [x for x in xs if math.isfinite(x)] + [-x for x in xs if math.isfinite(x)]


def test_float_text_is_repr() -> None:
    require_c()
    fast = pipeline._pipefast
    rnd = random.Random(7)
    xs = edge_floats()
    while len(xs) < 300_000:
        x = struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0]  # every exponent alike
        if math.isfinite(x):
            xs.append(x)
        xs.append(rnd.random() * 10.0 ** rnd.randint(-20, 20))  # the digits metrics usually have
    wrong = [(repr(x), fast.float_repr(x)) for x in xs if fast.float_repr(x) != repr(x)]
    assert not wrong, wrong[:5]
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError):
            fast.float_repr(bad)


def _family_text(monkeypatch: pytest.MonkeyPatch, pipe: Pipeline, c: bool) -> bytes:
    monkeypatch.setattr(exposition, "_pipefast", pipeline._pipefast if c else None)
    for f in pipe.families():
        f.render_cache.clear()
    return exposition.render(pipe.batch().families(), {"service.name": "t"})


VALUES = [0, 1, -1, 2**63 - 1, -(2**63), 2**63, 10**30, -(10**40), 0.0, -0.0, 1.5, 1e300, 5e-324, 0.1,
          1e16, 123456789.123]


@pytest.mark.parametrize("odd", [None, True, math.nan, math.inf, -math.inf, "rare"])
def test_plain_lines_as_python(monkeypatch: pytest.MonkeyPatch, odd: object) -> None:
    """Every value form: ints of any size, floats; with one odd value (a bool, NaN, an infinity)
    or a non-ASCII label value in the family, the Python loop writes it, the same body."""
    require_c()
    rnd = random.Random(3)
    pipe = Pipeline(cardinality_limit=10_000)
    ms = []
    for i in range(400):
        v: object = rnd.choice(VALUES) if i % 3 else rnd.random() * 10.0 ** rnd.randint(-30, 30)
        ms.append(Metric("t.gauge", GAUGE, v, "By", "d", {"i": i, "host": f"h{i % 7}"}))  # type: ignore[arg-type]
    if odd == "rare":
        ms.append(Metric("t.gauge", GAUGE, 1.0, "By", "d", {"i": 999, "host": "h\u00e9\u20ac"}))
    elif odd is not None:
        ms.append(Metric("t.gauge", GAUGE, odd, "By", "d", {"i": 999, "host": "x"}))  # type: ignore[arg-type]
    ms.append(Metric("t.reqs", COUNTER, 5, "", "d", {"q": 'a"b\\c\nd'}))
    pipe.record("s", ms)
    bodies = [_family_text(monkeypatch, pipe, c) for c in (False, True, False, True)]
    assert bodies[0] == bodies[1] == bodies[2] == bodies[3]
    assert b't_reqs_total{q="a\\"b\\\\c\\nd"} 5\n' in bodies[1]
    fam = pipe.batch().families()
    gauge = next(f for f in fam if f.name == "t.gauge")
    lines = pipeline._pipefast.plain_lines(gauge.refs, gauge.values)
    # the C loop writes exactly the plain families (a bool is stored as an int)
    assert (lines is None) == (odd not in (None, True))
    if lines is not None:
        values = list(gauge.values)
        values[0] = True  # any other type: the Python loop
        assert pipeline._pipefast.plain_lines(gauge.refs, values) is None
        assert pipeline._pipefast.plain_lines(gauge.refs, [1.0, *values[1:]]) is not None


def _series(n: int, source: str = "s") -> tuple[Pipeline, list[Metric]]:
    pipe = Pipeline(cardinality_limit=100_000)
    ms = [Metric("t.g", GAUGE, float(i), "By", "", {"b": f"v{i}", "a": i}) for i in range(n)]
    pipe.record(source, ms)
    return pipe, ms


def _state(pipe: Pipeline) -> list[tuple]:
    return [(f.name, f.version > 0, [(s.key, s.aliases, repr(s.value), s.start_ns, s.time_ns, s.source)
                                     for s in f.series.values()]) for f in pipe.families()]


def _reports(rnd: random.Random, n: int) -> list[list[Metric]]:
    """Reports of the same n series, most of them stored in place, some not: attributes in the
    other order, another kind or unit, a bool, NaN, a series missing or added, timestamps."""
    out = []
    for r in range(40):
        ms = [Metric("t.g", GAUGE, rnd.choice([float(i), float(i + r), i, math.nan]), "By", "",
                     {"b": f"v{i}", "a": i}, rnd.choice([None, 0, 10**18 + r])) for i in range(n)]
        k = rnd.randrange(n)
        change = rnd.randrange(10)
        if change == 0:
            ms[k] = Metric("t.g", GAUGE, 1.0, "By", "", {"a": k, "b": f"v{k}"})
        elif change == 1:
            ms[k] = Metric("t.g", COUNTER, 1.0, "By", "", {"b": f"v{k}", "a": k})
        elif change == 2:
            ms[k] = Metric("t.g", GAUGE, 1.0, "s", "", {"b": f"v{k}", "a": k})
        elif change == 3:
            ms[k] = Metric("t.g", GAUGE, True, "By", "", {"b": f"v{k}", "a": k})
        elif change == 4:
            del ms[k]
        elif change == 5:
            ms.append(Metric("t.g", GAUGE, 2.0, "By", "", {"b": "new", "a": -1}))
        elif change == 6:
            ms[k] = Metric("t.g", GAUGE, 1.0, "By", "", {"b": f"v{k}", "a": float(k)})  # equal, another type
        out.append(ms)
    return out


def test_store_run_as_python() -> None:
    """The same reports recorded with the C loop and with the Python loop leave the same series
    (values, times, keys, orders); each call returns the same (stored, changed)."""
    require_c()
    rnd = random.Random(11)
    reports = _reports(rnd, 50)
    pipes = [_series(50)[0], _series(50)[0]]
    for r, ms in enumerate(reports):
        now = 10**18 + 1000 * r
        got = []
        for pipe, fn in zip(pipes, (pipeline._store_run_c, pipeline._store_run_py), strict=True):
            fam = pipe.family("t.g")
            assert fam is not None
            refs = list(fam.series.values())
            got.append(fn(refs, list(ms), GAUGE, "By", True, "s", now))
        assert got[0] == got[1], (r, got)
        for pipe in pipes:
            pipe.record("s", ms, now)
        assert _state(pipes[0]) == _state(pipes[1])
    # another source's series, and metrics of a subclass, are left to the Python loop
    fam = pipes[0].family("t.g")
    assert fam is not None
    refs = list(fam.series.values())

    class MyMetric(Metric):
        __slots__ = ()

    run = [Metric("t.g", GAUGE, 1.0, "By", "", dict(s.aliases[0] if s.aliases else s.key)) for s in refs]
    assert pipeline._store_run_c(refs, run, GAUGE, "By", True, "other", 1)[0] == 0
    run[3] = MyMetric("t.g", GAUGE, 1.0, "By", "", dict(run[3].attributes))
    assert pipeline._store_run_c(refs, run, GAUGE, "By", True, "s", 1)[0] == 3


def test_columns_as_python() -> None:
    require_c()
    pipe, _ = _series(300)
    fam = pipe.family("t.g")
    assert fam is not None
    refs = tuple(fam.series.values())
    refs[5].start_ns = 77
    assert pipeline._pipefast.columns(refs) == pipeline._columns_py(refs)
    assert pipeline._pipefast.columns((*refs, "not a series")) is None


@pytest.mark.parametrize("c", [True, False])
def test_record_in_place_keeps_expiry_and_retain(monkeypatch: pytest.MonkeyPatch, c: bool) -> None:
    """A source's owned set kept when every series was stored in place: a family reported twice
    while another is missing still expires the missing one; a retained source whose series carry
    their own unchanged timestamps is not expired by ``release`` after a record in place."""
    if c:
        require_c()
    else:
        monkeypatch.setattr(pipeline, "_store_run", pipeline._store_run_py)
    pipe = Pipeline()
    a = [Metric("t.a", GAUGE, float(i), "", "", {"k": str(i)}, 5) for i in range(10)]
    b = [Metric("t.b", GAUGE, float(i), "", "", {"k": str(i)}, 5) for i in range(10)]
    pipe.record("s", a + b)
    pipe.record("s", a + b)  # in place, the same owned set
    assert sum(len(f.series) for f in pipe.families()) == 20
    retained = pipe.retain("s")
    pipe.record("s", a + b)  # recorded again, in place, the same timestamps
    assert pipe.release(retained) == 0
    assert sum(len(f.series) for f in pipe.families()) == 20
    pipe.record("s", a + a)  # t.a twice, as many series as the source owns: t.b expires
    assert [f.name for f in pipe.families()] == ["t.a"]
    pipe.record("s", a)
    pipe.record("s", a[:5] + a[5:])
    assert len(pipe.families()[0].series) == 10
    pipe.record("s", [])
    assert pipe.families() == []


def test_runs_as_groupby() -> None:
    """Metrics cut where the name changes, equal names that are other objects included; another
    type among them leaves the cut to Python."""
    require_c()
    rnd = random.Random(5)
    names = ["a", "b", "c.d", "".join(["c", ".d"])]
    for _ in range(200):
        ms = [Metric(rnd.choice(names) if rnd.random() < 0.3 else names[0], GAUGE, 1.0)
              for _ in range(rnd.randint(0, 30))]
        fast = pipeline._pipefast.runs(ms)
        assert [(n, [id(m) for m in r]) for n, r in fast] == \
            [(n, [id(m) for m in r]) for n, r in pipeline._runs_py(ms)]
        assert all(r.__class__ is list for _, r in fast)

    class MyMetric(Metric):
        __slots__ = ()

    assert pipeline._pipefast.runs([Metric("a", GAUGE, 1.0), MyMetric("a", GAUGE, 1.0)]) is None
    assert [n for n, _ in pipeline._runs([Metric("a", GAUGE, 1.0), MyMetric("b", GAUGE, 1.0)])] == ["a", "b"]


def test_a_large_new_source_gives_free_memory_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record that makes ``TRIM_AFTER_NEW_SERIES`` series or more gives the C heap's free pages
    back (a new target's first scrape); records of the series it has do not."""
    calls: list[int] = []
    monkeypatch.setattr(pipeline, "release_free_memory", lambda: calls.append(1))
    pipe = Pipeline(cardinality_limit=100_000)
    n = pipeline.TRIM_AFTER_NEW_SERIES
    ms = [Metric("t.g", GAUGE, float(i), "", "", {"i": str(i)}) for i in range(n)]
    pipe.record("s", ms[: n - 1])
    assert calls == []
    pipe.record("t", [Metric("t.h", GAUGE, float(i), "", "", {"i": str(i)}) for i in range(n)])
    assert calls == [1]
    pipe.record("t", [Metric("t.h", GAUGE, 2.0, "", "", {"i": str(i)}) for i in range(n)])
    assert calls == [1]


def test_release_free_memory_runs() -> None:
    pipeline.release_free_memory()
    pipeline.release_free_memory()  # (the library is looked up once)
    import bridge.tasks

    assert bridge.tasks._libc is not None
