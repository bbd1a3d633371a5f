#!/usr/bin/env python3
"""100k series per round into Elasticsearch: documents per second and bytes per sample of
monbridge's Elasticsearch export against the official client's ``helpers.async_bulk`` fed by the
simplest hand-written loop over the same data, in the same run.

    python benchmarks/bench_elastic.py [--series 100000] [--metrics 20] [--rounds 3]

No Elasticsearch runs here: both write to the same minimal ``_bulk`` endpoint (aiohttp, in a
process of its own, answering every item 201 as Elasticsearch shapes it (with a ``filter_path``,
only the paths asked for) and with the product header the client checks), so what is measured
is the sending side: mapping, serialization and the client. The machine's other load shows in
the figures: compare the two sides of one run, and run it more than once. The data:
``--series`` gauges, ``--metrics`` metric names over ``series/metrics`` label sets (``job``,
``instance``, ``shard``), one timestamp per round.

* monbridge: ``ElasticExporter.export_metrics`` (one document per label set and timestamp with
  every metric sharing them, bulk bodies built once and sent through the disk queue's delivery;
  in-memory queue, templates not installed);
* the loop: for each sample, ``{"@timestamp", "<name>": value, "labels": {...}}`` as a ``create``
  action to the same data stream, through ``helpers.async_bulk`` (chunk size 5000, the export's
  default ``bulk.max_documents``).

Reported per side: seconds per round (wall, median), samples per second, documents per second,
request bytes per sample (what the endpoint received). Goal: monbridge's samples per second ≥ 3×
the loop's. Exit status 0 when both ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
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


def data(series: int, metrics: int, t_ns: int) -> list[Metric]:
    sets = max(series // metrics, 1)
    out = []
    for i in range(sets):
        attrs = {"job": "bench", "instance": f"host-{i % 500}:9100", "shard": str(i)}
        for m in range(metrics):
            out.append(Metric(f"bench_metric_{m}", MetricKind.GAUGE, float(i * metrics + m), attributes=attrs,
                              timestamp_ns=t_ns))
    return out


async def stats(client: Any, reset: bool = False) -> dict[str, int]:
    if reset:
        await client.perform_request("POST", "/_bench_reset")
        return {}
    r = await client.perform_request("GET", "/_bench_stats")
    return dict(r.body)


async def run_monbridge(url: str, args: argparse.Namespace) -> list[tuple[float, dict[str, int]]]:
    cfg = ElasticsearchConfig.model_validate({"hosts": [url], "templates": {"install": False},
                                              "request_timeout": 120})
    client = make_client(cfg)
    exporter = ElasticExporter(cfg, client)
    await exporter.start()
    out = []
    try:
        for r in range(args.rounds):
            metrics = data(args.series, args.metrics, time.time_ns() + r)
            await stats(client, reset=True)
            t0 = time.perf_counter()
            result = await exporter.export_metrics(metrics)
            if not result.ok:
                raise SystemExit(f"monbridge round failed: {result.reason}")
            out.append((time.perf_counter() - t0, await stats(client)))
    finally:
        await exporter.shutdown(5)
        await client.close()
    return out


async def run_loop(url: str, args: argparse.Namespace) -> list[tuple[float, dict[str, int]]]:
    from elasticsearch import AsyncElasticsearch, helpers

    client = AsyncElasticsearch(hosts=[url], request_timeout=120, node_class="aiohttp")
    out = []
    try:
        for r in range(args.rounds):
            metrics = data(args.series, args.metrics, time.time_ns() + r)
            await stats(client, reset=True)
            t0 = time.perf_counter()

            def actions(metrics: list[Metric] = metrics) -> Any:
                for m in metrics:
                    yield {"_op_type": "create", "_index": "metrics-bench-default",
                           "_source": {"@timestamp": (m.timestamp_ns or 0) // 1_000_000, m.name: m.value,
                                       "labels": dict(m.attributes)}}

            ok, errors = await helpers.async_bulk(client, actions(), chunk_size=5000, max_chunk_bytes=5 << 20,
                                                  raise_on_error=False)
            if errors:
                raise SystemExit(f"the loop's round failed: {errors[:1]}")
            out.append((time.perf_counter() - t0, await stats(client)))
    finally:
        await client.close()
    return out


def report(name: str, rounds: list[tuple[float, dict[str, int]]], samples: int) -> float:
    secs = statistics.median(t for t, _ in rounds)
    st = rounds[-1][1]
    rate = samples / secs
    print(f"{name:10s} {secs:8.3f} s/round  {rate:10.0f} samples/s  {st['items'] / secs:10.0f} docs/s  "
          f"{st['bytes'] / samples:7.1f} bytes/sample  ({st['requests']} requests, {st['items']} docs per round)")
    return rate


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
        mb = asyncio.run(run_monbridge(url, args))
        loop = asyncio.run(run_loop(url, args))
        print(json.dumps({"series": samples, "metrics_per_set": args.metrics, "rounds": args.rounds}))
        a = report("monbridge", mb, samples)
        b = report("loop", loop, samples)
        print(f"monbridge / loop: {a / b:.2f}x samples per second (goal >= 3x)")
    finally:
        proc.terminate()
        proc.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
