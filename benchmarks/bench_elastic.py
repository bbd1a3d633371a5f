#!/usr/bin/env python3
"""100k series per round into Elasticsearch: documents per second, bytes per sample, CPU and
memory of monbridge's Elasticsearch export against the official client's ``helpers.async_bulk``
fed by the simplest hand-written loop over the same data, in the same run.

    python benchmarks/bench_elastic.py [--series 100000] [--metrics 20] [--rounds 3]

No Elasticsearch runs here: every side writes to the same minimal ``_bulk`` endpoint (aiohttp, in a
process of its own, answering every item 201 as Elasticsearch shapes it (with a ``filter_path``,
only the paths asked for) and with the product header the client checks), so what is measured
is the sending side: mapping, serialization and the client. The data: ``--series`` gauges,
``--metrics`` metric names over ``series/metrics`` label sets (``job``, ``instance``, ``shard``),
fresh each round (new values, a new timestamp, new ``Metric`` objects; built before the round's
clock starts, on every side).

Sides, each in a process of its own (so that its memory is its own):

* ``sink``: the agent's path: the round's metrics recorded into a ``bridge.pipeline.Pipeline`` and
  its batch given to ``ElasticExporter.export`` (what the agent calls every round: one document per
  label set and timestamp with every metric sharing them, bulk bodies built once and sent through
  the queue's delivery; in-memory queue, templates not installed). The pipeline's recording is
  not timed (the agent does it once for every sink);
* ``plugin``: the same exporter's ``export_metrics`` (the plugin API's path) on the Metric list;
* ``loop``: for each sample, ``{"@timestamp", "<name>": value, "labels": {...}}`` as a ``create``
  action to the same data stream, through ``helpers.async_bulk`` (chunk size 5000, the export's
  default ``bulk.max_documents``).

Reported per side: wall seconds per round and CPU seconds per round (the side's process, all its
threads; medians), samples per second of each, documents per second, request bytes per sample
(what the endpoint received), the process's peak RSS and its growth over the process's size
before the first round's data, per series. The machine's other load shows in wall time more
than in CPU time: compare the sides of one run, and run it more than once. Goal: monbridge's
samples per second ≥ 3× the loop's. Exit status 0 when every side ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge.api import Metric, MetricKind  # noqa: E402
from integrations.elasticsearch.client import make_client  # noqa: E402
from integrations.elasticsearch.config import ElasticsearchConfig  # noqa: E402
from integrations.elasticsearch.export import ElasticExporter  # noqa: E402

PRODUCT = {"X-Elastic-Product": "Elasticsearch"}


def serve(port: int) -> None:
    from aiohttp import web

    stats = {"bytes": 0, "items": 0, "requests": 0}

    async def info(request: web.Request) -> web.Response:
        return web.json_response({"version": {"number": "9.1.0"}}, headers=PRODUCT)

    async def bulk(request: web.Request) -> web.Response:
        body = await request.read()
        n = body.count(b"\n") // 2
        stats["bytes"] += len(body)
        stats["items"] += n
        stats["requests"] += 1
        item = b'{"create":{"status":201}}' if "filter_path" in request.query else \
            b'{"create":{"_index":"x","_id":"AAAAAAAAAAAAAAAAAAAA","_version":1,"result":"created","status":201}}'
        out = b'{"took":1,"errors":false,"items":[' + b",".join([item] * n) + b"]}"
        return web.Response(body=out, content_type="application/json", headers=PRODUCT)

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats, headers=PRODUCT)

    async def reset(request: web.Request) -> web.Response:
        stats.update(bytes=0, items=0, requests=0)
        return web.json_response({}, headers=PRODUCT)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/", info)
    app.router.add_route("*", "/_bulk", bulk)
    app.router.add_get("/_bench_stats", get_stats)
    app.router.add_post("/_bench_reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def data(series: int, metrics: int, t_ns: int, round_no: int = 0) -> list[Metric]:
    sets = max(series // metrics, 1)
    out = []
    for i in range(sets):
        attrs = {"job": "bench", "instance": f"host-{i % 500}:9100", "shard": str(i)}
        for m in range(metrics):
            out.append(Metric(f"bench_metric_{m}", MetricKind.GAUGE, float(i * metrics + m) + round_no * 0.5,
                              attributes=attrs, timestamp_ns=t_ns))
    return out


def rss_bytes() -> int:
    """The process's resident set now (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


Round = tuple[float, float, dict[str, int]]  # wall s, CPU s, the endpoint's counts


async def stats(client: Any, reset: bool = False) -> dict[str, int]:
    if reset:
        await client.perform_request("POST", "/_bench_reset")
        return {}
    r = await client.perform_request("GET", "/_bench_stats")
    return dict(r.body)


async def run_monbridge(url: str, args: argparse.Namespace, sink: bool) -> list[Round]:
    from bridge.pipeline import Pipeline

    cfg = ElasticsearchConfig.model_validate({"hosts": [url], "templates": {"install": False},
                                              "request_timeout": 120})
    client = make_client(cfg)
    exporter = ElasticExporter(cfg, client)
    await exporter.start()
    pipeline = Pipeline(cardinality_limit=args.series * 2)
    out = []
    try:
        for r in range(args.rounds):
            metrics = data(args.series, args.metrics, time.time_ns() + r, r)
            if sink:
                pipeline.record("bench", metrics)
                batch = pipeline.batch()
            await stats(client, reset=True)
            t0, c0 = time.perf_counter(), time.process_time()
            result = await (exporter.export(batch, 120) if sink else exporter.export_metrics(metrics))
            if not result.ok:
                raise SystemExit(f"monbridge round failed: {result.reason}")
            out.append((time.perf_counter() - t0, time.process_time() - c0, await stats(client)))
    finally:
        await exporter.shutdown(5)
        await client.close()
    return out


async def run_loop(url: str, args: argparse.Namespace) -> list[Round]:
    from elasticsearch import AsyncElasticsearch, helpers

    client = AsyncElasticsearch(hosts=[url], request_timeout=120, node_class="aiohttp")
    out = []
    try:
        for r in range(args.rounds):
            metrics = data(args.series, args.metrics, time.time_ns() + r, r)
            await stats(client, reset=True)
            t0, c0 = time.perf_counter(), time.process_time()

            def actions(metrics: list[Metric] = metrics) -> Any:
                for m in metrics:
                    yield {"_op_type": "create", "_index": "metrics-bench-default",
                           "_source": {"@timestamp": (m.timestamp_ns or 0) // 1_000_000, m.name: m.value,
                                       "labels": dict(m.attributes)}}

            ok, errors = await helpers.async_bulk(client, actions(), chunk_size=5000, max_chunk_bytes=5 << 20,
                                                  raise_on_error=False)
            if errors:
                raise SystemExit(f"the loop's round failed: {errors[:1]}")
            out.append((time.perf_counter() - t0, time.process_time() - c0, await stats(client)))
    finally:
        await client.close()
    return out


def side(name: str, url: str, args: argparse.Namespace, results: Any) -> None:
    """One side in this (child) process: its rounds, its peak RSS and its size before them."""
    base = rss_bytes()
    rounds = asyncio.run(run_loop(url, args) if name == "loop" else run_monbridge(url, args, name == "sink"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results.put((name, rounds, base, peak))


def report(name: str, rounds: list[Round], base: int, peak: int, samples: int) -> float:
    wall = statistics.median(t for t, _, _ in rounds)
    cpu = statistics.median(c for _, c, _ in rounds)
    st = rounds[-1][2]
    print(f"{name:7s} {wall:7.3f} s/round {samples / wall:9.0f} samples/s | CPU {cpu:7.3f} s/round "
          f"{samples / cpu:9.0f} samples/CPU-s | {st['items'] / wall:9.0f} docs/s {st['bytes'] / samples:6.1f} "
          f"bytes/sample | RSS peak {peak / 2**20:6.0f} MiB, {(peak - base) / samples:6.0f} bytes/series "
          f"({st['requests']} requests, {st['items']} docs per round)")
    return samples / cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--metrics", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    port = free_port()
    proc = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        samples = (args.series // args.metrics) * args.metrics
        got = {}
        for name in ("sink", "plugin", "loop"):  # one after the other: none competes with another
            results: Any = multiprocessing.Queue()
            p = multiprocessing.Process(target=side, args=(name, url, args, results))
            p.start()
            got[name] = results.get()
            p.join(30)
            if p.exitcode:
                raise SystemExit(f"the {name} side failed (exit status {p.exitcode})")
        print(json.dumps({"series": samples, "metrics_per_set": args.metrics, "rounds": args.rounds}))
        rates = {name: report(name, rounds, base, peak, samples) for name, rounds, base, peak in got.values()}
        for name in ("sink", "plugin"):
            print(f"{name} / loop: {rates[name] / rates['loop']:.2f}x samples per CPU-second (goal >= 3x)")
    finally:
        proc.terminate()
        proc.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
