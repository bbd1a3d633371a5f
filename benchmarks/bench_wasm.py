#!/usr/bin/env python3
"""The cost of running a collector in the WASM host: 10k series, WASM vs a Python collector.

    python benchmarks/bench_wasm.py [--series 10000] [--rounds 20] [--warmup 2]

Both collectors report the same ``--series`` series each collection, with fresh values each
round: the gauge ``bench_series``, attribute ``id`` = the series' index, value = round × series
+ index. The WASM one is ``tests/data/wasm/series.wat`` (a WAT loop calling ``emit_metric`` once
a series) in ``bridge.wasmhost.WasmPlugin`` with the default limits but CPU (raised so the run is
not stopped); the Python one is an in-process ``MetricCollectorPlugin`` building the same
``Metric`` objects. In the same run, alternating, each collection is awaited as the supervisor
awaits it (``collect_metrics()`` on the event loop), and the figures are per collection:

  CPU      the process' CPU time (user + system, every thread: the WASM call runs in the
           plugin's thread, the epoch ticker in its own)
  latency  the wall time of the await; "added" is WASM's less Python's (medians)
  memory   per series: the Python heap a collection's result holds (tracemalloc, in a pass of
           its own, not timed) plus, for WASM, the guest's linear memory over the series

Before any figure, the two collectors' metrics of the same round must be equal (name, kind,
value, attributes); a difference exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent))

import wasmtime  # noqa: E402

from bridge.api import Metric, MetricCollectorPlugin, MetricKind, PluginMetadata, PluginType  # noqa: E402
from bridge.isolation import Grants, Limits  # noqa: E402
from bridge.wasmhost import WasmPlugin  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = {"id": "monitoring.metrics.bench", "name": "bench", "version": "1", "plugin_type": "metric_collector",
            "api_version": "1", "description": "10k series", "author": "benchmarks"}


class PythonCollector(MetricCollectorPlugin):
    """The same series as series.wat, in process."""

    def __init__(self) -> None:
        self.count = 0
        self.round = 0

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("monitoring.metrics.bench_py", "bench", "1", "benchmarks", "", PluginType.METRIC_COLLECTOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.count = int(config["count"])

    async def collect_metrics(self) -> Sequence[Metric]:
        self.round += 1
        base = self.round * self.count
        return [Metric("bench_series", MetricKind.GAUGE, float(base + i), attributes={"id": str(i)})
                for i in range(self.count)]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def shutdown(self) -> None: ...


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rows(metrics: Sequence[Metric]) -> list[tuple[str, MetricKind, float, dict[str, Any]]]:
    return [(m.name, m.kind, float(m.value), dict(m.attributes)) for m in metrics]  # type: ignore[arg-type]


async def held(plugin: Any) -> int:
    """Bytes of Python heap one collection's result holds."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    metrics = await plugin.collect_metrics()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del metrics
    return after - before


async def main(args: argparse.Namespace) -> int:
    config = {"count": args.series, "collection_interval": 60, "timeout": 30}
    code = wasmtime.wat2wasm((ROOT / "tests" / "data" / "wasm" / "series.wat").read_text())
    limits = Limits(cpu_percent=100 * 64, cpu_burst_percent=100 * 64)  # measured, not stopped
    wasm = WasmPlugin(code, MANIFEST, limits, Grants())
    py = PythonCollector()
    await wasm.initialize(config)
    await py.initialize(config)
    samples: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in ("wasm", "python")}
    for n in range(args.warmup + args.rounds):
        out = {}
        for name, plugin in (("wasm", wasm), ("python", py)):
            gc.collect()
            c0, t0 = cpu(), time.perf_counter()
            out[name] = await plugin.collect_metrics()
            wall, spent = time.perf_counter() - t0, cpu() - c0
            if n >= args.warmup:
                samples[name]["cpu"].append(spent)
                samples[name]["wall"].append(wall)
        if rows(out["wasm"]) != rows(out["python"]):
            print(f"round {n + 1}: the WASM and Python collectors' metrics differ", file=sys.stderr)
            return 1
        del out
    mem = {name: await held(plugin) / args.series for name, plugin in (("wasm", wasm), ("python", py))}
    assert wasm._memory is not None and wasm._store is not None
    linear = wasm._memory.data_len(wasm._store)
    await wasm.shutdown()

    print(f"bench_wasm: {args.series} series, {args.rounds} rounds (+{args.warmup} warm-up), "
          f"Python {platform.python_version()}, wasmtime {importlib.metadata.version('wasmtime')}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':8} {'CPU ms/collection':>18} {'wall ms (median)':>17} {'p90':>8} {'heap B/series':>14}")
    for name in ("python", "wasm"):
        s = samples[name]
        print(f"{name:8} {statistics.median(s['cpu']) * 1e3:18.1f} {statistics.median(s['wall']) * 1e3:17.1f} "
              f"{statistics.quantiles(s['wall'], n=10)[-1] * 1e3:8.1f} {mem[name]:14.0f}")
    ratio = statistics.median(samples["wasm"]["cpu"]) / statistics.median(samples["python"]["cpu"])
    added = statistics.median(samples["wasm"]["wall"]) - statistics.median(samples["python"]["wall"])
    print(f"WASM / Python CPU per collection: {ratio:.2f}x; added latency: {added * 1e3:.1f} ms "
          f"({added / args.series * 1e6:.2f} us a series); guest linear memory {linear // 1024} KiB "
          f"({linear / args.series:.1f} B a series)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    sys.exit(asyncio.run(main(parser.parse_args())))
