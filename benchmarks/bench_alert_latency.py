"""Alert latency: a metric crosses its threshold → the webhook is delivered.

A monbridge Runtime (in this process, real HTTP) runs a collector reporting ``--alerts``
gauges every 50 ms and one rule per gauge (``monitoring.alerts.rules``, ``for: 0``), grouping
with ``group_wait: 0`` and the webhook notifier pointing at an aiohttp receiver in this
process. The gauges cross their thresholds one by one at random moments; for each alert the
latency is from the first collection that reported the crossing value to the webhook's
arrival. The goal is one evaluation interval + 100 ms.

The anchor, measured in the same run: a bare webhook POST of the same payload size from
aiohttp to the same receiver (what delivery costs without any alerting).

    python benchmarks/bench_alert_latency.py [--alerts 100] [--evaluation-interval 1.0] [--spread 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge import CollectorConfig, Metric, MetricCollectorPlugin, MetricKind, PluginMetadata, PluginType  # noqa: E402
from bridge.config import parse_config  # noqa: E402
from bridge.registry import PluginRegistry  # noqa: E402
from bridge.runtime import Runtime  # noqa: E402

VALUES: dict[str, float] = {}
CROSSED: dict[str, float] = {}  # metric -> when a collection first reported the crossing value


class Gauges(MetricCollectorPlugin):
    config_model: ClassVar[type[CollectorConfig]] = CollectorConfig

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("monitoring.metrics.bench", "bench", "1", "bench", "", PluginType.METRIC_COLLECTOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def collect_metrics(self) -> Sequence[Metric]:
        now = time.perf_counter()
        out = []
        for name, v in VALUES.items():
            if v > 1 and name not in CROSSED:
                CROSSED[name] = now
            out.append(Metric(name, MetricKind.GAUGE, v, "1", "", {"source": "bench"}))
        return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def main(n: int, interval: float, spread: float) -> int:
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("status") == "firing":
            for a in body["alerts"]:
                arrived.setdefault(a["labels"]["alertname"], time.perf_counter())
        if len(arrived) >= n:
            done.set()
        return web.json_response({})

    async def plain(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/plain", plain)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    names = [f"bench.gauge.{i:03d}" for i in range(n)]
    for name in names:
        VALUES[name] = 0.0
    rules = [{"name": f"Bench{i:03d}", "metric": name, "op": ">", "threshold": 1, "severity": "warning"}
             for i, name in enumerate(names)]
    state = tempfile.mkdtemp(prefix="bench-alerts-")
    config = {
        "server": {"listen": "127.0.0.1:0"},
        "alerting": {"state_dir": state},
        "plugins": [
            {"plugin_id": "monitoring.metrics.bench", "config": {"collection_interval": 0.05}},
            {"plugin_id": "monitoring.alerts.rules", "config": {"evaluation_interval": interval, "rules": rules}},
            {"plugin_id": "monitoring.alerts.grouping", "config": {"group_wait": 0, "group_interval": interval}},
            {"plugin_id": "monitoring.alerts.webhook", "config": {"url": f"http://127.0.0.1:{port}/hook"}},
        ],
    }
    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.bench", Gauges)
    rt = Runtime(parse_config(json.dumps(config), "<bench>", reg, env={}), reg)
    await rt.start()
    await asyncio.sleep(interval * 1.5)

    # The anchor: bare POSTs of a payload of the same size.
    sample = json.dumps({"version": "4", "alerts": [{"labels": {"alertname": "Bench000"}}], "pad": "x" * 900})
    anchor = []
    async with aiohttp.ClientSession() as s:
        for _ in range(50):
            t0 = time.perf_counter()
            async with s.post(f"http://127.0.0.1:{port}/plain", data=sample,
                              headers={"Content-Type": "application/json"}) as r:
                await r.read()
            anchor.append(time.perf_counter() - t0)

    rng = random.Random(4)
    order = names[:]
    rng.shuffle(order)
    for name in order:  # one crossing every spread/n seconds, at no particular phase of the evaluations
        await asyncio.sleep(spread / n * rng.uniform(0.5, 1.5))
        VALUES[name] = 5.0
    try:
        await asyncio.wait_for(done.wait(), spread + 10 * interval + 10)
    except TimeoutError:
        print(f"only {len(arrived)} of {n} webhooks arrived", file=sys.stderr)
    await rt.stop()
    await runner.cleanup()

    lat = [arrived[f"Bench{i:03d}"] - CROSSED[name] for i, name in enumerate(names)
           if f"Bench{i:03d}" in arrived and name in CROSSED]
    goal = interval + 0.1
    ms = 1000.0
    print(f"threshold crossed -> webhook delivered, {len(lat)} alerts, evaluation_interval {interval:.2f} s")
    print(f"  p50 {statistics.median(lat) * ms:7.1f} ms   p95 {pct(lat, 95) * ms:7.1f} ms   "
          f"max {max(lat) * ms:7.1f} ms   mean {statistics.fmean(lat) * ms:7.1f} ms")
    print(f"  goal (evaluation interval + 100 ms): {goal * ms:.0f} ms; max/goal = {max(lat) / goal:.2f}, "
          f"p95/goal = {pct(lat, 95) / goal:.2f}")
    print(f"  anchor, a bare POST to the same receiver: p50 {statistics.median(anchor) * ms:.2f} ms; "
          f"p50 alert latency / evaluation interval = {statistics.median(lat) / interval:.2f} (0.5 expected: "
          "crossings land uniformly within an interval)")
    return 0 if len(lat) == n and max(lat) <= goal else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=100)
    ap.add_argument("--evaluation-interval", type=float, default=1.0)
    ap.add_argument("--spread", type=float, default=10.0, help="seconds over which the crossings happen")
    args = ap.parse_args()
    sys.exit(asyncio.run(main(args.alerts, args.evaluation_interval, args.spread)))
