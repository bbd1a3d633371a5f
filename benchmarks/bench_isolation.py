#!/usr/bin/env python3
"""The cost of isolation: one collector reporting N series, in process vs in a worker process.

    python benchmarks/bench_isolation.py [--series 10000] [--rounds 20] [--warmup 3]

The collector (``BenchCollector``) builds fresh data every round: new ``Metric`` objects with new
attribute dicts and new values, 10 families of N/10 series with 3 string attributes each. One
round is what the supervisor does for a collection: the host's ``collect`` and the pipeline's
``record`` of what came back.

  in_process  ``InProcessHost``: the plugin runs on the agent's event loop.
  worker      ``ProcessHost``: the plugin runs in a worker process; its metrics cross the socket
              pair as ``bridge.wire`` frames and are decoded in the agent.

Each side runs alone in a fresh interpreter (``--side NAME``). Figures per round: CPU of both
sides (the agent's and, for the worker, the worker's own from /proc: user + system), wall time
(the added latency is the difference), and the memory per series (RSS growth of the agent and
the worker over the interpreter's baseline, divided by N). The worker runs sandboxed, under
``WORKER_LIMITS_ARGS`` (no CPU quota: the default budget's would throttle it). The goal: worker CPU <= 1.5x
in-process CPU. ``SIDES`` maps a side's name to a function that runs it; another host (e.g.
a WASM one) is one more entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.api import (  # noqa: E402
    CollectorConfig,
    Metric,
    MetricCollectorPlugin,
    MetricKind,
    PluginMetadata,
    PluginType,
)

FAMILIES = 10
#: The worker's limits here: room for 10k series, and no CPU quota (the default budget's 20 %
#: burst quota would throttle the collection, which is the limit working, not the isolation's cost).
WORKER_LIMITS_ARGS = {"memory_mb": 1024, "cpu_percent": 100, "cpu_burst_percent": 100}


class BenchConfig(CollectorConfig):
    series: int = 10_000


class BenchCollector(MetricCollectorPlugin):
    config_model = BenchConfig

    def __init__(self) -> None:
        self.series = 10_000
        self.round = 0

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("monitoring.metrics.bench", "bench", "1", "bench", "", PluginType.METRIC_COLLECTOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.series = BenchConfig.model_validate(dict(config)).series

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def collect_metrics(self) -> Sequence[Metric]:
        self.round += 1
        r = self.round
        per = self.series // FAMILIES
        out = []
        for f in range(FAMILIES):
            name, kind = (f"bench.requests_{f}", MetricKind.COUNTER) if f % 2 else (f"bench.queue_{f}", MetricKind.GAUGE)
            out.extend(Metric(name, kind, float(i * 3 + r), "1", "bench data",
                              {"host": f"host-{i % 50}", "path": f"/api/{i}", "zone": f"z{(i + r) % 3}"})
                       for i in range(per))
        return out


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _measure(host: Any, series: int, rounds: int, warmup: int, worker_pid: Callable[[], int | None]) -> dict:
    from contextlib import nullcontext

    from bridge.pipeline import GC_PAUSE_MIN_BATCH, Pipeline, paused_gc

    pipeline = Pipeline(cardinality_limit=series * 2)

    async def collect() -> int:  # as the supervisor runs a collection (bridge.supervisor._once)
        with paused_gc() if series >= GC_PAUSE_MIN_BATCH else nullcontext():
            got = await host.collect(60.0)
            pipeline.record("bench", got)
        return len(got)

    base_rss = rss_bytes()
    await host.initialize({"series": series}, 60.0)
    await host.start(10.0)
    wpid = worker_pid()
    worker_base = rss_bytes(wpid) if wpid else 0
    for _ in range(warmup):
        await collect()
    cpu0, wcpu0, t0 = self_cpu(), proc_cpu(wpid) if wpid else 0.0, time.perf_counter()
    walls = []
    for _ in range(rounds):
        t = time.perf_counter()
        n = await collect()
        walls.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    agent_cpu = self_cpu() - cpu0
    worker_cpu = (proc_cpu(wpid) - wcpu0) if wpid else 0.0
    assert n == series, n
    mem = rss_bytes() - base_rss + ((rss_bytes(wpid) - worker_base) if wpid else 0)
    worker_rss = rss_bytes(wpid) if wpid else 0
    await host.shutdown(10.0)
    walls.sort()
    return {"agent_cpu_ms": 1000 * agent_cpu / rounds, "worker_cpu_ms": 1000 * worker_cpu / rounds,
            "cpu_ms": 1000 * (agent_cpu + worker_cpu) / rounds, "wall_ms": 1000 * wall / rounds,
            "wall_p50_ms": 1000 * walls[len(walls) // 2], "bytes_per_series": mem / series,
            "worker_rss_mb": worker_rss / 2**20}


async def side_in_process(series: int, rounds: int, warmup: int) -> dict:
    from bridge.pluginhost import InProcessHost

    host = InProcessHost(BenchCollector())
    return await _measure(host, series, rounds, warmup, lambda: None)


async def side_worker(series: int, rounds: int, warmup: int) -> dict:
    from bridge.isolation import Isolation, Limits
    from bridge.pluginhost import Placement, ProcessHost

    WORKER_LIMITS = Limits(**WORKER_LIMITS_ARGS)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    host = ProcessHost("monitoring.metrics.bench", PluginType.METRIC_COLLECTOR,
                       Placement(Isolation.PROCESS, "benchmarks.bench_isolation:BenchCollector", limits=WORKER_LIMITS),
                       cardinality_limit=series * 2)
    return await _measure(host, series, rounds, warmup, lambda: host.pid)


#: A side's name -> the function that measures it (in a fresh interpreter of its own).
SIDES: dict[str, Callable[[int, int, int], Awaitable[dict]]] = {
    "in_process": side_in_process,
    "worker": side_worker,
}


def run_side(name: str, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, __file__, "--side", name, "--series", str(args.series),
                          "--rounds", str(args.rounds), "--warmup", str(args.warmup)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--side", choices=sorted(SIDES), help="run one side here and print its figures as JSON")
    args = ap.parse_args()
    if args.side:
        print(json.dumps(asyncio.run(SIDES[args.side](args.series, args.rounds, args.warmup))))
        return
    results = {name: run_side(name, args) for name in SIDES}
    base = results["in_process"]
    print(f"{args.series} series, {args.rounds} rounds (after {args.warmup} warm-up), fresh data every round\n")
    print(f"{'side':<12} {'CPU/round':>10} {'agent':>8} {'worker':>8} {'wall/round':>11} {'p50':>8} "
          f"{'B/series':>9} {'CPU x':>6}")
    for name, r in results.items():
        print(f"{name:<12} {r['cpu_ms']:>8.1f}ms {r['agent_cpu_ms']:>6.1f}ms {r['worker_cpu_ms']:>6.1f}ms "
              f"{r['wall_ms']:>9.1f}ms {r['wall_p50_ms']:>6.1f}ms {r['bytes_per_series']:>9.0f} "
              f"{r['cpu_ms'] / base['cpu_ms']:>6.2f}")
    w = results["worker"]
    print(f"\nadded latency (worker - in process, median wall per collection): "
          f"{w['wall_p50_ms'] - base['wall_p50_ms']:.1f} ms; worker RSS {w['worker_rss_mb']:.0f} MiB")
    ratio = w["cpu_ms"] / base["cpu_ms"]
    print(f"goal worker CPU <= 1.5x in process: {ratio:.2f}x {'met' if ratio <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
