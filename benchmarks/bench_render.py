#!/usr/bin/env python3
"""Render a full /metrics body for N series three ways and compare the cost of a scrape.

    python benchmarks/bench_render.py [--series 100000] [--families 100] [--repeat 9] [--warmup 1]

The same data (``--families`` metric families × ``--series/--families`` series; counters of
int bytes and float seconds, gauges of bytes and of a unitless count; 2 or 3 attributes a
series, one of them an int) is rendered by:

Every iteration's Metrics carry new attribute dicts and new label-value strings, as a
collector's output does.

(a) monbridge: ``Pipeline.record(source, metrics)`` then
    ``bridge.exposition.render(pipeline.families(), resource_attributes)``.
      cold    a fresh Pipeline, first record + first render (no per-series label cache).
      steady  every iteration records NEW values for every series, then renders: the cost
              of one scrape interval with changed data. The HEADLINE figure is this
              record + render; the render part alone is shown too.
      cached  re-render with nothing changed (per-family render cache hit). Shown for
              information only, never used for a ratio.
(b) opentelemetry-exporter-prometheus: ``PrometheusMetricReader`` on an SDK ``MeterProvider``
    (a View raises the per-instrument cardinality limit above --series; scope labels off so
    the label sets match monbridge's) with one observable instrument a family whose callback
    yields the iteration's values; a scrape = ``generate_latest(registry)`` = callbacks +
    SDK collect + translation + text generation.
(c) prometheus_client custom collector: ``collect()`` builds Counter/GaugeMetricFamily from
    the iteration's data each scrape; a scrape = ``generate_latest`` on a CollectorRegistry
    that holds only it.

The baselines read the iteration's ``Metric`` list directly (no state update of their own is
timed), while monbridge's steady figure includes ``record``: the comparison leans toward the
baselines, not toward monbridge.

Before any figure is printed, the three bodies of the same iteration are parsed with
``prometheus_client.parser.text_string_to_metric_families`` and compared sample by sample
(name, labels, value), and the cached re-render must equal the steady render byte for byte;
any difference exits with status 1.

The HEADLINE is end to end, over HTTP, with fresh data every scrape: both sides start from the
plugin's own data (per series an index and a value) and end with the bytes on the socket.
monbridge runs as a real ``Runtime`` (supervisor, pipeline, HTTP server) with a third-party
collector that builds its ``Metric``s from that data; each scrape is one collection (as the
supervisor runs it) and a GET /metrics. prometheus_client serves its own HTTP server
(``start_http_server``) with a custom collector that builds its families from the same data
inside the scrape. Each side runs alone in a fresh interpreter of its own (its data built there
first), so that neither pays for the other's objects (a full garbage collection walks every
object of the process); the client is a child process of that one. The figure is the serving
process' CPU time (user + system, all threads) per scrape, and the bench families of the two
bodies must parse to the same samples; the bytes of every timed scrape, as the client read them
off the socket, must be those of a whole body. Beside it, the memory per served series: the serving
process' RSS after the last scrape (and its high-water mark) less its RSS with its data alone,
before the server started, divided by the series. Both sides serve uncompressed text (the
client asks for no gzip). The in-process figures above follow, for information. monbridge's
per-series loops run in C where ``setup.py`` built ``bridge._pipefast`` (the header says whether).

Goals: end to end, monbridge ≥ 5× less CPU per scrape than prometheus_client; in process,
steady ≥ 20× faster than (b), ≥ 5× faster than (c).
Exit status: 0 when the outputs agree (goals met or not; they are reported), 1 when they differ.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The installed (or PYTHONPATH's) ``bridge`` wins; the repository root is the fallback, so a
# patched copy can be measured with PYTHONPATH=/path/to/copy.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: E402
from opentelemetry.metrics import CallbackOptions, Observation  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.view import View  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bridge import exposition  # noqa: E402
from bridge.api import Metric, MetricKind  # noqa: E402
from bridge.pipeline import Pipeline  # noqa: E402

GOAL_VS_OTEL = 20.0
GOAL_VS_CLIENT = 5.0
SOURCE = "bench"

# --------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class FamilySpec:
    name: str            # OTel name
    kind: MetricKind
    unit: str
    description: str
    prom_base: str       # Prometheus name without unit suffix / _total (for the hand-written collector)
    prom_unit: str       # Prometheus unit word ("" for none)
    label_keys: tuple[str, ...]
    per: int             # series in the family
    three: bool          # 3 attributes (one an int) rather than 2
    is_int: bool

    def attributes(self, j: int) -> dict[str, Any]:
        """Series j's attributes, built anew (new dict, new strings) as a collector does each time."""
        if self.three:
            return {"host": f"host-{j // 8:04d}", "cpu": j % 8, "mode": f"m{j % 3}"}
        return {"host": f"host-{j // 10:04d}", "state": _STATES[j % 10]}


_STATES = ("user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice", "guest", "other")


def make_specs(n_series: int, n_families: int) -> list[FamilySpec]:
    per = n_series // n_families
    if per < 1 or per * n_families != n_series:
        raise SystemExit(f"--series ({n_series}) must be a positive multiple of --families ({n_families})")
    specs = []
    for i in range(n_families):
        variant = i % 4
        if variant == 0:
            name, kind, unit, pu, is_int = f"bench.fam{i:03d}.io", MetricKind.COUNTER, "By", "bytes", True
        elif variant == 1:
            name, kind, unit, pu, is_int = f"bench.fam{i:03d}.cpu.time", MetricKind.COUNTER, "s", "seconds", False
        elif variant == 2:
            name, kind, unit, pu, is_int = f"bench.fam{i:03d}.memory.usage", MetricKind.GAUGE, "By", "bytes", False
        else:
            name, kind, unit, pu, is_int = f"bench.fam{i:03d}.queue.depth", MetricKind.GAUGE, "{items}", "", False
        three = i % 2 == 1  # odd families: 3 attributes, one an int
        keys = ("cpu", "host", "mode") if three else ("host", "state")
        specs.append(FamilySpec(name, kind, unit, f"Benchmark family {i} ({kind.value})",
                                name.replace(".", "_"), pu, keys, per, three, is_int))
    return specs


def make_iteration(specs: Sequence[FamilySpec], it: int, rng: random.Random) -> list[list[Metric]]:
    """The Metrics of one collection, per family: counters grow, gauges change at random."""
    out = []
    for fi, spec in enumerate(specs):
        ms = []
        for j in range(spec.per):
            if spec.kind is MetricKind.COUNTER:
                v: float = (fi * 1_000_003 + j * 7919 + it * (j + 1) * 13) if spec.is_int \
                    else (j * 0.25 + it * 1.5 + rng.random())
            else:
                v = rng.random() * 1e9 if spec.unit == "By" else float(rng.randrange(0, 5000))
            ms.append(Metric(spec.name, spec.kind, v, spec.unit, spec.description, spec.attributes(j)))
        out.append(ms)
    return out


def flat(per_family: list[list[Metric]]) -> list[Metric]:
    return [m for fam in per_family for m in fam]


# --------------------------------------------------------------------------- the three renderers


class MonbridgeBench:
    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.attrs = dict(resource.attributes)
        self.pipeline = Pipeline(resource=resource)

    def record(self, metrics: list[Metric]) -> None:
        self.pipeline.record(SOURCE, metrics)

    def render(self) -> bytes:
        return exposition.render(self.pipeline.batch().families(), self.attrs)  # as /metrics does

    def close(self) -> None:
        self.pipeline.shutdown()


class OtelBench:
    """PrometheusMetricReader on a MeterProvider; callbacks read ``self.current``."""

    def __init__(self, resource: Resource, specs: Sequence[FamilySpec], n_series: int) -> None:
        self.current: list[list[Metric]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.reader = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        self.provider = MeterProvider(
            resource=resource, metric_readers=[self.reader],
            views=[View(instrument_name="*", aggregation_cardinality_limit=n_series + 1000)],
        )
        meter = self.provider.get_meter("monbridge.bench", "0.1.0")
        for fi, spec in enumerate(specs):
            def callback(_options: CallbackOptions, fi: int = fi) -> Iterable[Observation]:
                return [Observation(m.value, m.attributes) for m in self.current[fi]]  # type: ignore[arg-type]
            create = meter.create_observable_counter if spec.kind is MetricKind.COUNTER else meter.create_observable_gauge
            create(spec.name, callbacks=[callback], unit=spec.unit, description=spec.description)

    def set(self, per_family: list[list[Metric]]) -> None:
        self.current = per_family

    def scrape(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        self.provider.shutdown()


class ClientCollector:
    """A prometheus_client custom collector building its families from the data each scrape."""

    def __init__(self, resource: Resource, specs: Sequence[FamilySpec]) -> None:
        self.specs = specs
        self.current: list[list[Metric]] = []
        self.target = {k.replace(".", "_"): str(v) for k, v in resource.attributes.items()}

    def collect(self) -> Iterable[Any]:
        info = InfoMetricFamily("target", "Target metadata")
        info.add_metric([], self.target)
        yield info
        for spec, metrics in zip(self.specs, self.current, strict=False):
            keys = spec.label_keys
            cls = CounterMetricFamily if spec.kind is MetricKind.COUNTER else GaugeMetricFamily
            fam = cls(spec.prom_base, spec.description, labels=keys, unit=spec.prom_unit)
            add = fam.add_metric
            for m in metrics:
                a = m.attributes
                add([str(a[k]) for k in keys], m.value)
            yield fam


class ClientBench:
    def __init__(self, resource: Resource, specs: Sequence[FamilySpec]) -> None:
        self.collector = ClientCollector(resource, specs)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)  # type: ignore[arg-type]

    def set(self, per_family: list[list[Metric]]) -> None:
        self.collector.current = per_family

    def scrape(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def median_ms(xs: Sequence[float]) -> float:
    return statistics.median(xs) * 1000.0


@dataclass
class Result:
    cold: float = 0.0             # seconds (monbridge: record + render)
    cold_render: float = 0.0      # monbridge only: render part
    steady: list[float] | None = None        # record + render (monbridge) / scrape (baselines)
    steady_render: list[float] | None = None  # monbridge only
    steady_record: list[float] | None = None  # monbridge only
    cached: list[float] | None = None         # monbridge only
    body: bytes = b""             # the body of the last steady iteration
    cold_body: bytes = b""


def bench_monbridge(resource: Resource, iters: list[list[list[Metric]]], warmup: int, cold_repeat: int) -> Result:
    res = Result(steady=[], steady_render=[], steady_record=[], cached=[])
    colds, cold_renders = [], []
    for _ in range(cold_repeat):
        mb = MonbridgeBench(resource)
        data = flat(iters[0])
        t_rec, _ = timed(lambda: mb.record(data))  # noqa: B023 - called at once, in this iteration
        t_ren, body = timed(mb.render)
        colds.append(t_rec + t_ren)
        cold_renders.append(t_ren)
        res.cold_body = body
        mb.close()
    res.cold, res.cold_render = statistics.median(colds), statistics.median(cold_renders)

    mb = MonbridgeBench(resource)
    mb.record(flat(iters[0]))
    mb.render()
    for n, per_family in enumerate(iters[1:]):
        data = flat(per_family)
        t_rec, _ = timed(lambda: mb.record(data))  # noqa: B023 - called at once, in this iteration
        t_ren, body = timed(mb.render)
        t_hit, body2 = timed(mb.render)
        if body2 != body:
            fail("monbridge: a re-render of unchanged data differs from the render before it")
        if n >= warmup:
            res.steady.append(t_rec + t_ren)           # type: ignore[union-attr]
            res.steady_record.append(t_rec)            # type: ignore[union-attr]
            res.steady_render.append(t_ren)            # type: ignore[union-attr]
            res.cached.append(t_hit)                   # type: ignore[union-attr]
        res.body = body
    mb.close()
    return res


def bench_baseline(make: Callable[[], Any], iters: list[list[list[Metric]]], warmup: int, cold_repeat: int) -> Result:
    res = Result(steady=[])
    colds = []
    for _ in range(cold_repeat):
        b = make()
        b.set(iters[0])
        t, body = timed(b.scrape)
        colds.append(t)
        res.cold_body = body
        b.close()
    res.cold = statistics.median(colds)

    b = make()
    b.set(iters[0])
    b.scrape()
    for n, per_family in enumerate(iters[1:]):
        b.set(per_family)
        t, body = timed(b.scrape)
        if n >= warmup:
            res.steady.append(t)  # type: ignore[union-attr]
        res.body = body
    b.close()
    return res


# --------------------------------------------------------------------------- equivalence


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def samples_of(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            if key in out:
                fail(f"duplicate sample {s.name}{dict(s.labels)}")
            out[key] = s.value
    return out


def compare(label: str, ref: dict[Any, float], other_body: bytes, n_expected: int) -> None:
    other = samples_of(other_body)
    if len(ref) != n_expected:
        fail(f"monbridge rendered {len(ref)} samples, expected {n_expected} (series + target_info)")
    if len(other) != len(ref):
        fail(f"{label}: {len(other)} samples, monbridge {len(ref)}")
    only_ref = ref.keys() - other.keys()
    only_other = other.keys() - ref.keys()
    if only_ref or only_other:
        fail(f"{label}: sample sets differ; only in monbridge e.g. {sorted(only_ref, key=str)[:3]}, "
             f"only in {label} e.g. {sorted(only_other, key=str)[:3]}")
    bad = [(k, ref[k], other[k]) for k in ref if ref[k] != other[k]]
    if bad:
        fail(f"{label}: {len(bad)} values differ, e.g. {bad[:3]}")


# --------------------------------------------------------------------------- end to end, over HTTP


class _Fetcher:
    """A child process that GETs a URL when told to and answers with the body's length: the
    scrapes' client, outside this process, so that this process' CPU time is the server's."""

    CODE = ("import sys, urllib.request\n"
            "for url in sys.stdin:\n"
            "    with urllib.request.urlopen(url.strip(), timeout=120) as r:\n"
            "        body = r.read()\n"
            "    sys.stdout.write(f'{len(body)}\\n'); sys.stdout.flush()\n")

    def __init__(self) -> None:
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def get(self, url: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(url + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            fail(f"the fetcher got no answer from {url}")
        return int(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _fetch_body(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=120) as r:
        return bytes(r.read())


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class E2EResult:
    cpu: list[float]
    wall: list[float]
    body: bytes
    sizes: list[int] = field(default_factory=list)  # bytes of each timed scrape, as the client read them
    rss_base: int = 0    # bytes: the serving process with its data, before the server starts
    rss_after: int = 0   # bytes: the same after the last scrape
    rss_peak: int = 0    # bytes: the process' high-water mark

    def per_series(self, n: int) -> tuple[float, float]:
        """(held, peak) bytes per served series above the process with its data alone."""
        return (self.rss_after - self.rss_base) / n, (self.rss_peak - self.rss_base) / n


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, in bytes."""
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                got[k] = int(v.split()[0]) * 1024
    return got["VmRSS"], got["VmHWM"]


def _trim() -> None:
    """Give the C heap's free pages back (glibc ``malloc_trim``), on both sides alike, so that
    RSS shows what is held rather than what the allocator kept after a peak."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def e2e_child(side: str, n: int, n_families: int, iterations: int, warmup: int, seed: int, out: str) -> None:
    """One side of the end-to-end run, alone in this (child) process: its data built first, then
    the server, the scrapes and the memory it holds; the result is written to ``out`` (JSON) and
    the last body beside it."""
    import json

    import bridge.runtime  # noqa: F401 - both sides import the same before the baseline

    specs = make_specs(n, n_families)
    rng = random.Random(seed)
    raws = [raw_iteration(make_iteration(specs, it, rng)) for it in range(iterations)]
    _SPECS[:] = specs
    resource = Resource.create({"service.name": "bench", "host.name": "bench-host"})
    gc.collect()
    _trim()
    base, _ = _rss()
    if side == "monbridge":
        res = e2e_monbridge(raws, warmup)
    else:
        res = e2e_client(resource, specs, raws, warmup)
    Path(out + ".body").write_bytes(res.body)
    res.body = b""  # the client's copy of the last body is not the server's memory
    gc.collect()
    _trim()
    after, peak = _rss()
    Path(out).write_text(json.dumps({"cpu": res.cpu, "wall": res.wall, "sizes": res.sizes, "rss_base": base,
                                     "rss_after": after, "rss_peak": peak}))


def run_e2e_child(side: str, args: Any) -> E2EResult:
    """``e2e_child`` in a fresh interpreter: each side's CPU and memory are its own process'."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "result.json")
        subprocess.run([sys.executable, __file__, "--e2e-child", side, "--series", str(args.series),
                        "--families", str(args.families), "--repeat", str(args.repeat),
                        "--warmup", str(args.warmup), "--seed", str(args.seed), "--e2e-out", out], check=True)
        r = json.loads(Path(out).read_text())
        return E2EResult(r["cpu"], r["wall"], Path(out + ".body").read_bytes(), r["sizes"], r["rss_base"],
                         r["rss_after"], r["rss_peak"])


#: The plugin's data of the current iteration: per family, (series index, value) pairs. Both
#: sides turn it into their own objects inside the timed scrape, attributes built anew.
_RAW: list[list[tuple[int, float]]] = []
_SPECS: list[FamilySpec] = []


def raw_iteration(per_family: list[list[Metric]]) -> list[list[tuple[int, float]]]:
    return [[(j, float(m.value)) if not isinstance(m.value, int) else (j, m.value)  # type: ignore[misc]
             for j, m in enumerate(ms)] for ms in per_family]


def _bench_collector() -> type:
    from bridge import CollectorConfig, MetricCollectorPlugin, PluginMetadata, PluginType

    class BenchCollector(MetricCollectorPlugin):
        """A third-party collector reporting the benchmark's series from its data."""

        def metadata(self) -> PluginMetadata:
            return PluginMetadata("monitoring.metrics.bench", "bench", "1", "bench", "", PluginType.METRIC_COLLECTOR)

        async def initialize(self, config: Any) -> None:
            CollectorConfig.model_validate(dict(config))

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def shutdown(self) -> None:
            pass

        async def collect_metrics(self) -> list[Metric]:
            out: list[Metric] = []
            add = out.append
            for spec, rows in zip(_SPECS, _RAW, strict=True):
                name, kind, unit, desc, attrs = spec.name, spec.kind, spec.unit, spec.description, spec.attributes
                for j, v in rows:
                    add(Metric(name, kind, v, unit, desc, attrs(j)))
            return out

    return BenchCollector


def e2e_monbridge(raws: list[list[list[tuple[int, float]]]], warmup: int) -> E2EResult:
    """A real ``Runtime`` (supervisor, pipeline, HTTP server) in a thread of its own, with the
    bench collector; each scrape: one collection of fresh data (as the supervisor runs it),
    then GET /metrics from another process."""
    import asyncio
    import threading

    from bridge.config import parse_config
    from bridge.registry import PluginRegistry
    from bridge.runtime import Runtime

    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.bench", _bench_collector())
    text = ('server: {listen: "127.0.0.1:0"}\n'
            "plugins:\n  - plugin_id: monitoring.metrics.bench\n    config: {collection_interval: 86400}\n"
            f"pipeline: {{cardinality_limit: {max(len(r) for r in raws[0]) + 1}}}\n")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="monbridge", daemon=True)
    thread.start()

    def on_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    _RAW[:] = raws[0]
    rt = on_loop(_start_runtime(Runtime, parse_config(text, "bench.yaml", reg, env={}), reg))
    runner = rt.supervisor.runners["monitoring.metrics.bench"]
    host, port = rt.server.bound
    url = f"http://{host}:{port}/metrics"
    def collect() -> None:
        if not on_loop(rt.supervisor._once(runner, 300.0)):
            fail(f"monbridge: the bench collection failed: {runner.last_error}")

    try:
        return _scrapes(url, raws, warmup, collect)
    finally:
        on_loop(rt.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)


async def _start_runtime(runtime: Any, loaded: Any, reg: Any) -> Any:
    rt = runtime(loaded, reg)
    await rt.start()
    return rt


def e2e_client(resource: Resource, specs: Sequence[FamilySpec], raws: list[list[list[tuple[int, float]]]],
               warmup: int) -> E2EResult:
    """prometheus_client's own HTTP server with a custom collector that builds its families from
    the plugin's data inside each scrape; GET /metrics from another process."""
    from prometheus_client import start_http_server

    class RawCollector(ClientCollector):
        def collect(self) -> Iterable[Any]:
            info = InfoMetricFamily("target", "Target metadata")
            info.add_metric([], self.target)
            yield info
            for spec, rows in zip(self.specs, _RAW, strict=True):
                keys = spec.label_keys
                cls = CounterMetricFamily if spec.kind is MetricKind.COUNTER else GaugeMetricFamily
                fam = cls(spec.prom_base, spec.description, labels=keys, unit=spec.prom_unit)
                add, attrs = fam.add_metric, spec.attributes
                for j, v in rows:
                    a = attrs(j)
                    add([str(a[k]) for k in keys], v)
                yield fam

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RawCollector(resource, specs))  # type: ignore[arg-type]
    with socket_port() as port:
        pass
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{port}/metrics"
    _RAW[:] = raws[0]
    try:
        return _scrapes(url, raws, warmup, lambda: None)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def _scrapes(url: str, raws: list[list[list[tuple[int, float]]]], warmup: int,
             collect: Callable[[], None]) -> E2EResult:
    """One scrape per iteration of ``raws`` after the first: its data set, ``collect()`` (the
    server side's own collection, when it has one), then a GET of ``url`` from the fetcher
    process; this process' CPU and the wall time of each are kept after ``warmup``."""
    fetcher = _Fetcher()
    res = E2EResult([], [], b"")
    try:
        fetcher.get(url)
        for n, raw in enumerate(raws[1:]):
            _RAW[:] = raw
            gc.collect()
            c0, w0 = _cpu(), time.perf_counter()
            collect()
            got = fetcher.get(url)
            c1, w1 = _cpu(), time.perf_counter()
            if n >= warmup:
                res.cpu.append(c1 - c0)
                res.wall.append(w1 - w0)
                res.sizes.append(got)
        res.body = _fetch_body(url)
    finally:
        fetcher.close()
    # Every timed scrape carried a whole body: its bytes, counted by the client as they came off
    # the socket, are those of the last body (which is checked sample by sample) give or take
    # the changing values' digits.
    short = [b for b in res.sizes if abs(b - len(res.body)) > 0.05 * len(res.body)]
    if short:
        fail(f"{url}: scrapes of {short} bytes, the last body has {len(res.body)}")
    return res


class socket_port:
    """A loopback port that was free a moment ago."""

    def __enter__(self) -> int:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *_: Any) -> None:
        return None


def compare_bench_families(mb_body: bytes, cl_body: bytes, n: int) -> None:
    """The bench families of both bodies parse to the same n samples (monbridge's own self-metrics
    and the two target_info texts aside)."""
    mb = {k: v for k, v in samples_of(mb_body).items() if k[0].startswith("bench_")}
    cl = {k: v for k, v in samples_of(cl_body).items() if k[0].startswith("bench_")}
    if len(mb) != n or mb != cl:
        fail(f"end to end: the bench samples differ (monbridge {len(mb)}, prometheus_client {len(cl)}, "
             f"e.g. {sorted(set(mb.items()) ^ set(cl.items()), key=str)[:3]})")


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=100_000, help="total series (default 100000)")
    ap.add_argument("--families", type=int, default=100, help="metric families (default 100)")
    ap.add_argument("--repeat", type=int, default=9,
                    help="timed steady-state iterations and end-to-end scrapes (median taken; default 9)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steady-state iterations first (default 1)")
    ap.add_argument("--cold-repeat", type=int, default=3, help="fresh instances timed for the cold figure (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-verify", action="store_true", help="skip the output comparison (not for reported figures)")
    ap.add_argument("--e2e-child", choices=("monbridge", "client"), help=argparse.SUPPRESS)
    ap.add_argument("--e2e-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.e2e_child:
        e2e_child(args.e2e_child, args.series, args.families, 1 + args.warmup + args.repeat, args.warmup, args.seed,
                  args.e2e_out)
        return
    if args.repeat < 1 or args.warmup < 0 or args.cold_repeat < 1:
        ap.error("--repeat and --cold-repeat must be ≥ 1, --warmup ≥ 0")

    n = args.series
    print(f"bench_render: {n} series in {args.families} families, repeat {args.repeat} (median), "
          f"warmup {args.warmup}, cold x{args.cold_repeat}; Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs")
    from bridge import pipeline as _pipeline
    print(f"  bridge from {Path(exposition.__file__).resolve().parent}; its C loops (bridge._pipefast) "
          f"{'built' if _pipeline._pipefast is not None else 'NOT built: python setup.py build_ext --inplace'}")
    t0 = time.perf_counter()
    specs = make_specs(n, args.families)
    rng = random.Random(args.seed)
    iters = [make_iteration(specs, it, rng) for it in range(1 + args.warmup + args.repeat)]
    resource = Resource.create({"service.name": "bench", "host.name": "bench-host"})
    print(f"  data: {len(iters)} iterations built in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    mb = bench_monbridge(resource, iters, args.warmup, args.cold_repeat)
    print(f"  monbridge done in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    cl = bench_baseline(lambda: ClientBench(resource, specs), iters, args.warmup, args.cold_repeat)
    print(f"  prometheus_client custom collector done in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    ot = bench_baseline(lambda: OtelBench(resource, specs, n), iters, args.warmup, args.cold_repeat)
    print(f"  otel-exporter-prometheus done in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    e2e_mb = run_e2e_child("monbridge", args)
    e2e_cl = run_e2e_child("client", args)
    print(f"  end to end over HTTP done in {time.perf_counter() - t0:.1f} s")

    if not args.no_verify:
        t0 = time.perf_counter()
        compare_bench_families(e2e_mb.body, e2e_cl.body, n)
        expected = n + 1  # every series and target_info
        for which, ref_body, o_body, c_body in (("steady", mb.body, ot.body, cl.body),
                                                 ("cold", mb.cold_body, ot.cold_body, cl.cold_body)):
            ref = samples_of(ref_body)
            compare(f"otel-exporter-prometheus ({which})", ref, o_body, expected)
            compare(f"prometheus_client collector ({which})", ref, c_body, expected)
        print(f"  verified: the three bodies of the last steady iteration and of the cold one parse to "
              f"the same {expected} samples (names, labels, values) [{time.perf_counter() - t0:.1f} s]")

    def row(name: str, secs: float, note: str = "") -> None:
        print(f"  {name:<52} {secs * 1000:>10.1f} {n / secs / 1e6:>10.2f}  {note}")

    mb_steady = statistics.median(mb.steady)  # type: ignore[arg-type]
    mb_render = statistics.median(mb.steady_render)  # type: ignore[arg-type]
    mb_record = statistics.median(mb.steady_record)  # type: ignore[arg-type]
    mb_cached = statistics.median(mb.cached)  # type: ignore[arg-type]
    ot_steady = statistics.median(ot.steady)  # type: ignore[arg-type]
    cl_steady = statistics.median(cl.steady)  # type: ignore[arg-type]

    e2e_mb_cpu, e2e_cl_cpu = statistics.median(e2e_mb.cpu), statistics.median(e2e_cl.cpu)
    print()
    print(f"  {'end to end over HTTP, fresh data every scrape':<52} {'CPU ms':>10} {'wall ms':>10} {'bytes':>10}"
          "  CPU ms of each scrape")
    for label, e in (("monbridge: collection + GET /metrics  [HEADLINE]", e2e_mb),
                     ("prometheus_client server: GET /metrics", e2e_cl)):
        print(f"  {label:<52} {statistics.median(e.cpu) * 1000:>10.1f} {statistics.median(e.wall) * 1000:>10.1f} "
              f"{statistics.median(e.sizes):>10.0f}  {' '.join(f'{c * 1000:.0f}' for c in e.cpu)}")
    r = e2e_cl_cpu / e2e_mb_cpu
    print(f"  monbridge vs prometheus_client, CPU per scrape: {r:.1f}×  "
          f"(goal ≥ {GOAL_VS_CLIENT:g}×: {'met' if r >= GOAL_VS_CLIENT else 'NOT met'})")
    print(f"  {'memory per served series, above the process with its data':<52} {'held B':>10} {'peak B':>10}")
    for label, e in (("monbridge", e2e_mb), ("prometheus_client server", e2e_cl)):
        held, peak = e.per_series(n)
        print(f"  {label:<52} {held:>10.0f} {peak:>10.0f}")
    print()
    print("  in process (the data's Metric objects built before the timer; for information):")
    head = f"renderer (body bytes: mb {len(mb.body)}, otel {len(ot.body)}, client {len(cl.body)})"
    print(f"  {head:<52} "
          f"{'ms/render':>10} {'Mseries/s':>10}")
    row("monbridge steady: record + render", mb_steady)
    row("  of which record (new values)", mb_record)
    row("  of which render", mb_render)
    row("monbridge cold: first record + first render", mb.cold)
    row("  of which render (no label cache)", mb.cold_render)
    row("monbridge unchanged re-render (cache hit; info only)", mb_cached)
    row("otel-exporter-prometheus steady scrape", ot_steady)
    row("otel-exporter-prometheus cold (first) scrape", ot.cold)
    row("prometheus_client custom collector steady scrape", cl_steady)
    row("prometheus_client custom collector cold scrape", cl.cold)
    print()

    def ratio(label: str, base: float, ours: float, goal: float | None) -> None:
        r = base / ours
        verdict = "" if goal is None else (f"  (goal ≥ {goal:g}×: {'met' if r >= goal else 'NOT met'})")
        print(f"  {label}: {r:.1f}×{verdict}")

    ratio("monbridge vs otel-exporter-prometheus", ot_steady, mb_steady, GOAL_VS_OTEL)
    ratio("monbridge vs prometheus_client custom collector", cl_steady, mb_steady, GOAL_VS_CLIENT)
    print("  cold (first scrape; monbridge record + render):")
    ratio("  monbridge vs otel-exporter-prometheus", ot.cold, mb.cold, None)
    ratio("  monbridge vs prometheus_client custom collector", cl.cold, mb.cold, None)
    print("  render only (monbridge's record excluded; baselines unchanged), for information:")
    ratio("  steady: monbridge vs otel-exporter-prometheus", ot_steady, mb_render, None)
    ratio("  steady: monbridge vs prometheus_client custom collector", cl_steady, mb_render, None)
    ratio("  cold:   monbridge vs otel-exporter-prometheus", ot.cold, mb.cold_render, None)
    ratio("  cold:   monbridge vs prometheus_client custom collector", cl.cold, mb.cold_render, None)


if __name__ == "__main__":
    main()
