#!/usr/bin/env python3
"""One PostgreSQL collection by monbridge against the same queries run with the bare driver, in
the same run, against the same real server; and the memory a series costs.

    python benchmarks/bench_postgresql.py [--tables 300] [--databases 5] [--statements 300] [--rounds 30]

A Debian PostgreSQL server is started in a temporary directory (tests/integration/dbservers.py,
as ``nobody`` under root) and filled: ``--databases`` extra databases, ``--tables`` tables with
rows in the DSN's database, ``--statements`` distinct statements in ``pg_stat_statements``.

* monbridge: ``PostgresqlCollector.collect_metrics()`` (every section's query on its one kept
  connection, the rows turned into ``Metric``s by the table), default limits (200 tables, 20
  statements);
* the driver: the same query text (``collectors.postgresql.QUERIES``, the same limits, the
  extension check) with ``asyncpg.Connection.fetch`` on one kept connection, the rows read and
  dropped, as postgres_exporter runs its queries.

The two alternate round by round (warm: one untimed round each first). Reported: milliseconds
per collection (median and the best) and this process' CPU time per collection (the server's is
the same for both), the ratio (goal: ≤ 1.2× the driver's own query time), the
series one collection gives; then, in a fresh interpreter, the RSS those series cost once the
pipeline holds them (bytes per series). It takes well under 2 minutes on 2 cores. Exit status 0
when both sides ran.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collectors.postgresql import BGWRITER_17, HAS_STATEMENTS, QUERIES, PostgresqlCollector  # noqa: E402
from tests.integration.dbservers import SUPERUSER_PASSWORD, Postgres  # noqa: E402


async def fill(pg: Postgres, tables: int, databases: int, statements: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg.dsn(), password=SUPERUSER_PASSWORD)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for i in range(databases):
            await conn.execute(f"CREATE DATABASE bench_{i}")
        for i in range(tables):
            await conn.execute(f"CREATE TABLE t_{i} (id int PRIMARY KEY, v text);"
                               f" INSERT INTO t_{i} SELECT g, 'x' FROM generate_series(1, {1 + i % 50}) g")
        for i in range(statements):
            await conn.fetch(f"SELECT count(*) AS c{i} FROM t_{i % tables} WHERE id > $1", i)
    finally:
        await conn.close()


async def bare_collection(conn: Any, tables_limit: int, statements_limit: int) -> int:
    """The collector's queries with the bare driver; returns the rows read."""
    rows = 0
    for name in ("settings", "activity", "database", "locks", "recovery", "replication"):
        rows += len(await conn.fetch(QUERIES[name]))
    rows += len(await conn.fetch(BGWRITER_17 if conn.get_server_version().major >= 17 else QUERIES["bgwriter"]))
    rows += len(await conn.fetch(QUERIES["tables"], tables_limit))
    rows += len(await conn.fetch(QUERIES["wal"]))
    if await conn.fetchval(HAS_STATEMENTS) is not None:
        rows += len(await conn.fetch(QUERIES["statements"], statements_limit))
    return rows


async def timings(pg: Postgres, rounds: int) -> dict[str, Any]:
    import asyncpg

    config = {"dsn": pg.dsn(), "password": SUPERUSER_PASSWORD, "query_timeout": 30}
    collector = PostgresqlCollector()
    await collector.initialize(config)
    conn = await asyncpg.connect(pg.dsn(), password=SUPERUSER_PASSWORD, statement_cache_size=len(QUERIES) + 4)
    mine: list[float] = []
    bare: list[float] = []
    cpu = {"monbridge": 0.0, "driver": 0.0}
    try:
        series = len(await collector.collect_metrics())  # warm: connect, prepare
        rows = await bare_collection(conn, 200, 20)
        assert collector.reasons == {}, collector.reasons
        for _ in range(rounds):
            t, c = time.perf_counter(), time.process_time()
            await collector.collect_metrics()
            mine.append(time.perf_counter() - t)
            cpu["monbridge"] += time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            await bare_collection(conn, 200, 20)
            bare.append(time.perf_counter() - t)
            cpu["driver"] += time.process_time() - c
    finally:
        await collector.shutdown()
        await conn.close()
    return {"series": series, "rows": rows, "monbridge": mine, "driver": bare,
            "cpu": {k: v / rounds for k, v in cpu.items()}}


RSS_CHILD = r"""
import asyncio, gc, json, sys
sys.path.insert(0, sys.argv[1])
from bridge.pipeline import Pipeline
from collectors.postgresql import PostgresqlCollector

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

async def main():
    c = PostgresqlCollector()
    await c.initialize({"dsn": sys.argv[2], "password": sys.argv[3], "query_timeout": 30})
    pipeline = Pipeline()
    pipeline.record("pg", await c.collect_metrics())  # connection, prepared statements, families
    gc.collect()
    before = rss()
    pipeline = Pipeline()
    metrics = await c.collect_metrics()
    pipeline.record("pg", metrics)
    del metrics
    gc.collect()
    after = rss()
    series = sum(len(f.series) for f in pipeline.batch().families())
    await c.shutdown()
    print(json.dumps({"series": series, "bytes": after - before}))

asyncio.run(main())
"""


def rss_per_series(pg: Postgres) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(REPO), pg.dsn(), SUPERUSER_PASSWORD],
                         capture_output=True, text=True, check=True, timeout=120)
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=300)
    parser.add_argument("--databases", type=int, default=5)
    parser.add_argument("--statements", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    started = time.monotonic()
    pg = Postgres()
    try:
        asyncio.run(fill(pg, args.tables, args.databases, args.statements))
        print(f"server started and filled in {time.monotonic() - started:.1f} s", flush=True)
        r = asyncio.run(timings(pg, args.rounds))
        gc.collect()
        rss = rss_per_series(pg)
    finally:
        pg.stop()
    m, d = statistics.median(r["monbridge"]), statistics.median(r["driver"])
    print(f"one collection: {r['series']} series from {r['rows']} rows, {args.rounds} rounds each")
    for side, median in (("monbridge", m), ("driver", d)):
        print(f"  {side:9}  median {median * 1e3:7.2f} ms   best {min(r[side]) * 1e3:7.2f} ms"
              f"   this process' CPU {r['cpu'][side] * 1e3:6.2f} ms")
    ratio = m / d
    print(f"  ratio {ratio:.2f}x the driver's own query time (goal <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})")
    print(f"RSS: {rss['bytes'] / max(rss['series'], 1):.0f} bytes per series in the pipeline"
          f" ({rss['series']} series, {rss['bytes'] / 1e6:.2f} MB)")
    print(f"total {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
