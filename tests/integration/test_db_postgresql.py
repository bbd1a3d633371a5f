"""monitoring.metrics.postgresql against Debian's PostgreSQL: a primary and a streaming replica
started once for this module (tests/integration/dbservers.py).

Every metric of POSTGRESQL_METRICS is emitted with its declared kind and unit; values are checked
against what the server reports (transactions, rows, deadlocks, locks, sizes, statements); and the
hostile cases: a server that is not there, a wrong password, a rotated password file, a query held
up by a lock past the timeout, a role without pg_monitor, TLS.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bridge.api import Metric
from collectors.postgresql import POSTGRESQL_METRICS, PostgresqlCollector
from tests.integration.dbservers import (
    SUPERUSER_PASSWORD,
    Postgres,
    collect,
    free_port,
    no_tracebacks_or,
    one,
    points,
    primary_and_replica,
    section_lost,
)
from tests.tls_cert import self_signed

pytestmark = pytest.mark.integration

MONITOR_PASSWORD = "m0nitor-pw-7f3a"
PLAIN_PASSWORD = "pl4in-pw-91c2"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Postgres, Postgres]]:
    yield from primary_and_replica(Postgres, lambda primary: Postgres(primary=primary), _setup)


async def _setup(pg: Postgres, replica: Postgres) -> None:  # what the primary does, its replica replays
    conn = await asyncpg.connect(pg.dsn(), password=SUPERUSER_PASSWORD)
    try:
        for sql in ("CREATE EXTENSION pg_stat_statements",
                    f"CREATE ROLE monitor LOGIN PASSWORD '{MONITOR_PASSWORD}' IN ROLE pg_monitor",
                    f"CREATE ROLE plain LOGIN PASSWORD '{PLAIN_PASSWORD}'",
                    "CREATE DATABASE counts", "CREATE TABLE held (x int)",
                    "ALTER SYSTEM SET deadlock_timeout = '100ms'", "SELECT pg_reload_conf()"):
            await conn.execute(sql)
    finally:
        await conn.close()


def _target(pg: Postgres, user: str = "monitor", password: str = MONITOR_PASSWORD, **extra: Any) -> dict[str, Any]:
    return {"dsn": pg.dsn(user), "password": password, **extra}






async def _superuser(pg: Postgres, database: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(pg.dsn(database=database), password=SUPERUSER_PASSWORD)


# --------------------------------------------------------------------------- every metric


async def test_every_declared_metric_is_emitted_with_its_kind_and_unit(servers: tuple[Postgres, Postgres]) -> None:
    primary, replica = servers
    config = {"targets": [_target(primary), _target(replica)], "query_timeout": 10}
    conn = await _superuser(primary)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS everything (x int); INSERT INTO everything VALUES (1)")
        # The replica's lag needs a transaction it replayed; the primary's per-standby lags need recent WAL.
        metrics: list[Metric] = []
        declared = {spec.name for spec in POSTGRESQL_METRICS}
        for _ in range(100):
            await conn.execute("INSERT INTO everything VALUES (2)")
            await asyncio.sleep(0.05)
            collector, metrics = await collect(PostgresqlCollector, config)
            if declared <= {m.name for m in metrics}:
                break
    finally:
        await conn.close()
    assert collector.reasons == {}
    emitted = {m.name for m in metrics} - {"postgresql.up"}
    assert emitted == declared, f"declared, not emitted: {declared - emitted}; emitted, not declared: {emitted - declared}"
    for spec in POSTGRESQL_METRICS:
        for m in points(metrics, spec.name):
            assert (m.kind, m.unit, m.description) == (spec.kind, spec.unit, spec.description), m
    for pg in (primary, replica):
        assert one(metrics, "postgresql.up", **{"server.port": pg.port}) == 1.0
    assert one(metrics, "postgresql.replication.is_replica", **{"server.port": primary.port}) == 0.0
    assert one(metrics, "postgresql.replication.is_replica", **{"server.port": replica.port}) == 1.0
    # the replica is the primary's one standby, and reports its replay age
    assert {m.attributes["postgresql.replica.address"] for m in points(metrics, "postgresql.replication.data_delay")} \
        == {"127.0.0.1/32"}
    assert one(metrics, "postgresql.replication.lag", **{"server.port": replica.port}) >= 0


# --------------------------------------------------------------------------- values


async def test_values_are_the_servers(servers: tuple[Postgres, Postgres]) -> None:
    primary, _ = servers
    n = 7
    db = {"postgresql.database.name": "counts"}
    work = await _superuser(primary, "counts")
    try:
        await work.execute("DROP TABLE IF EXISTS v; CREATE TABLE v (id int PRIMARY KEY, x int);"
                           " INSERT INTO v SELECT generate_series(1, 3), 0")
        # one deadlock: each session holds a row the other wants
        other = await _superuser(primary, "counts")
        try:
            await work.execute("BEGIN; UPDATE v SET x = 1 WHERE id = 2")
            await other.execute("BEGIN; UPDATE v SET x = 1 WHERE id = 3")
            results = await asyncio.gather(work.execute("UPDATE v SET x = 2 WHERE id = 3"),
                                           other.execute("UPDATE v SET x = 2 WHERE id = 2"), return_exceptions=True)
            assert sum(isinstance(r, asyncpg.DeadlockDetectedError) for r in results) == 1, results
            await work.execute("ROLLBACK")
            await other.execute("ROLLBACK")
        finally:
            await other.close()
        # a temporary file: a sort bigger than work_mem
        await work.execute("SET work_mem = '64kB'; SELECT * FROM generate_series(1, 20000) g ORDER BY g DESC")
    finally:
        await work.close()  # a backend's statistics are flushed when it exits
    admin = await _superuser(primary)
    holder = await _superuser(primary, "counts")
    try:
        before = await _settled(admin, "counts")
        _, metrics = await collect(PostgresqlCollector, _target(primary))
        commits, inserted = one(metrics, "postgresql.commits", **db), one(metrics, "postgresql.tup_inserted", **db)
        assert (commits, inserted) == (before["xact_commit"], before["tup_inserted"])
        # n known transactions in counts
        tx = await _superuser(primary, "counts")
        for i in range(n):
            async with tx.transaction():
                await tx.execute("INSERT INTO v VALUES ($1, 0)", 100 + i)
        await tx.close()
        # an open transaction holding a lock in counts
        await holder.execute("BEGIN; LOCK TABLE v IN ACCESS EXCLUSIVE MODE")
        for _ in range(3):
            await admin.fetch("SELECT 42 AS monbridge_marker")
        marker = await admin.fetchrow("SELECT queryid::text AS id, calls FROM pg_stat_statements"
                                      " WHERE query LIKE 'SELECT $1 AS monbridge_marker'")
        # a table of the DSN's database (postgres): 5 rows in, 2 out
        await admin.execute("DROP TABLE IF EXISTS r; CREATE TABLE r (id int); INSERT INTO r SELECT generate_series(1, 5);"
                            " DELETE FROM r WHERE id <= 2")
        table_size = await admin.fetchval("SELECT pg_total_relation_size('r')")
        await admin.close()  # its statistics flushed
        admin = await _superuser(primary)
        for _ in range(200):
            if await admin.fetchval("SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = 'r'") == 2:
                break
            await asyncio.sleep(0.05)
        stats = await _settled(admin, "counts")
        size = await admin.fetchval("SELECT pg_database_size('counts')")
        # statements_limit: the marker's 3 calls among all statements
        collector, metrics = await collect(PostgresqlCollector, _target(primary, statements_limit=1000))
        assert await _settled(admin, "counts") == stats  # nothing ran in counts meanwhile
    finally:
        await holder.close()
        await admin.close()
    assert one(metrics, "postgresql.commits", **db) - commits == n + 1  # a session's start commits one too
    assert one(metrics, "postgresql.tup_inserted", **db) - inserted == n
    for name, column in (("postgresql.commits", "xact_commit"), ("postgresql.rollbacks", "xact_rollback"),
                         ("postgresql.tup_inserted", "tup_inserted"), ("postgresql.tup_deleted", "tup_deleted"),
                         ("postgresql.tup_updated", "tup_updated"), ("postgresql.deadlocks", "deadlocks"),
                         ("postgresql.temp_files", "temp_files"), ("postgresql.temp.io", "temp_bytes"),
                         ("postgresql.blks_hit", "blks_hit"), ("postgresql.blks_read", "blks_read"),
                         ("postgresql.tup_returned", "tup_returned"), ("postgresql.tup_fetched", "tup_fetched")):
        assert one(metrics, name, **db) == stats[column], name
    assert stats["deadlocks"] == 1 and stats["temp_files"] >= 1 and stats["xact_rollback"] >= 2
    assert one(metrics, "postgresql.db_size", **db) == size
    assert one(metrics, "postgresql.connection.max") == 50
    assert one(metrics, "postgresql.database.locks", mode="AccessExclusiveLock", **db) == 1
    assert one(metrics, "postgresql.backends", state="idle in transaction", **db) == 1
    table = {"postgresql.database.name": "postgres", "postgresql.table.name": "r", "postgresql.schema.name": "public"}
    assert one(metrics, "postgresql.rows", state="live", **table) == 3
    assert one(metrics, "postgresql.rows", state="dead", **table) == 2
    assert one(metrics, "postgresql.operations", operation="ins", **table) == 5
    assert one(metrics, "postgresql.operations", operation="del", **table) == 2
    assert one(metrics, "postgresql.table.size", **table) == table_size
    assert marker is not None and marker["calls"] == 3
    assert one(metrics, "postgresql.statement.calls", **{"postgresql.query.id": marker["id"]}) == 3


async def _settled(admin: asyncpg.Connection, database: str) -> dict[str, Any]:
    """``database``'s pg_stat_database row once a closed session's statistics have arrived (two reads agree)."""
    sql = ("SELECT xact_commit, xact_rollback, tup_inserted, tup_deleted, tup_updated, tup_returned, tup_fetched,"
           " deadlocks, temp_files, temp_bytes, blks_hit, blks_read FROM pg_stat_database WHERE datname = $1")
    last = dict(await admin.fetchrow(sql, database))
    for _ in range(100):
        await asyncio.sleep(0.1)
        now = dict(await admin.fetchrow(sql, database))
        if now == last:
            return now
        last = now
    raise AssertionError(f"the statistics of {database} kept changing")


# --------------------------------------------------------------------------- hostile and broken



async def test_a_server_that_is_not_there_is_up_0_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "monbridge")
    port = free_port()
    collector, metrics = await collect(PostgresqlCollector, {"dsn": f"postgresql://monitor@127.0.0.1:{port}/postgres",
                                         "password": MONITOR_PASSWORD, "connect_timeout": 3}, times=2)
    assert [(m.name, m.value) for m in metrics] == [("postgresql.up", 0.0)]
    reason = collector.reasons[f"127.0.0.1:{port}"]
    assert "cannot connect" in reason and str(port) in reason
    # logged once (the reason did not change), one line, no stack trace, no password
    downs = [r for r in caplog.records if "down" in r.getMessage()]
    assert len(downs) == 1 and reason in downs[0].getMessage()
    no_tracebacks_or(caplog.records, MONITOR_PASSWORD)


async def test_a_wrong_password_then_a_rotated_password_file(servers: tuple[Postgres, Postgres], tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    primary, _ = servers
    caplog.set_level(logging.INFO, "monbridge")
    secret = tmp_path / "pw"
    secret.write_text("not-the-password-x9\n")
    c = PostgresqlCollector()
    await c.initialize({"dsn": primary.dsn("monitor"), "password_file": str(secret)})
    try:
        metrics = await c.collect_metrics()
        assert [(m.name, m.value) for m in metrics] == [("postgresql.up", 0.0)]
        reason = c.reasons[f"127.0.0.1:{primary.port}"]
        assert 'password authentication failed for user "monitor"' in reason and "28P01" in reason
        secret.write_text(MONITOR_PASSWORD + "\n")  # the secret rotated: read at the next connection
        metrics = await c.collect_metrics()
        assert one(metrics, "postgresql.up") == 1.0 and c.reasons == {}
    finally:
        await c.shutdown()
    no_tracebacks_or(caplog.records, "not-the-password-x9", MONITOR_PASSWORD)


async def test_a_query_held_up_past_the_timeout_is_cut(servers: tuple[Postgres, Postgres]) -> None:
    primary, _ = servers
    holder = await _superuser(primary)
    admin = await _superuser(primary)
    c = PostgresqlCollector()
    await c.initialize({**_target(primary), "query_timeout": 1})
    try:
        # The table sizes wait for the lock, held by a session that sleeps.
        await holder.execute("BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        sleeper = asyncio.create_task(holder.execute("SELECT pg_sleep(60)"))
        metrics = await c.collect_metrics()
        assert [(m.name, m.value) for m in metrics if m.name == "postgresql.up"] == [("postgresql.up", 0.0)]
        assert one(metrics, "postgresql.collector.errors", section="tables") == 1
        assert c.reasons[f"127.0.0.1:{primary.port}"] == "query 'tables' did not finish within 1 s (query_timeout): cut"

        async def waiting() -> int:
            return int(await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'monbridge'"
                                            " AND wait_event_type = 'Lock'"))
        # the server stopped the query too: nothing of the collector waits for the lock
        for _ in range(200):
            if await waiting() == 0:
                break
            await asyncio.sleep(0.05)
        assert await waiting() == 0
        await admin.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")
        with pytest.raises(asyncpg.QueryCanceledError):
            await sleeper
        await holder.execute("ROLLBACK")
        metrics = await c.collect_metrics()
        assert one(metrics, "postgresql.up") == 1.0
    finally:
        await c.shutdown()
        await holder.close()
        await admin.close()


async def test_a_role_without_pg_monitor_loses_the_wal_section_only(servers: tuple[Postgres, Postgres],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    primary, _ = servers
    caplog.set_level(logging.INFO, "monbridge")
    collector, metrics = await collect(PostgresqlCollector, {"dsn": primary.dsn("plain"), "password": PLAIN_PASSWORD}, times=2)
    why = section_lost(collector, metrics, "wal", {"postgresql.wal.size", "postgresql.wal.segments"},
                       {"postgresql.commits", "postgresql.backends", "postgresql.bgwriter.buffers.allocated"}, times=2)
    assert "permission denied for function pg_ls_waldir" in why and "GRANT pg_monitor TO plain" in why
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "GRANT pg_monitor TO plain" in warnings[0]  # once a minute, not per collection
    report = await collector.test_report()
    assert report[0] == f"127.0.0.1:{primary.port}: up" and "GRANT pg_monitor TO plain" in report[1]
    no_tracebacks_or(caplog.records, PLAIN_PASSWORD)


async def test_tls(servers: tuple[Postgres, Postgres]) -> None:
    primary, _ = servers
    cert, key = self_signed(primary.dir)
    if os.geteuid() == 0:
        for f in (cert, key):
            os.chown(f, 65534, 65534)
    key.chmod(0o600)
    admin = await _superuser(primary)
    try:
        for sql in (f"ALTER SYSTEM SET ssl_cert_file = '{cert}'", f"ALTER SYSTEM SET ssl_key_file = '{key}'",
                    "ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"):
            await admin.execute(sql)
        for _ in range(100):
            if await admin.fetchval("SHOW ssl") == "on":
                break
            await asyncio.sleep(0.05)
        c = PostgresqlCollector()
        await c.initialize(_target(primary, tls={"ca_file": str(cert)}))
        try:
            metrics = await c.collect_metrics()
            assert one(metrics, "postgresql.up") == 1.0
            assert await admin.fetchval("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                                        " WHERE a.application_name = 'monbridge'") is True
        finally:
            await c.shutdown()
        # a certificate the system's CAs did not sign
        collector, metrics = await collect(PostgresqlCollector, _target(primary, tls={}))
        assert one(metrics, "postgresql.up") == 0.0
        assert "certificate verify failed" in collector.reasons[f"127.0.0.1:{primary.port}"]
    finally:
        await admin.execute("ALTER SYSTEM RESET ssl")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


async def test_a_query_the_server_refuses_loses_its_section_only(servers: tuple[Postgres, Postgres],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    primary, _ = servers
    caplog.set_level(logging.INFO, "monbridge")
    admin = await _superuser(primary)
    try:
        await admin.execute("CREATE DATABASE oldstats")
    finally:
        await admin.close()
    # pg_stat_statements left at 1.4 (as after an upgrade without ALTER EXTENSION ... UPDATE): no total_exec_time
    old = await _superuser(primary, "oldstats")
    try:
        await old.execute("CREATE EXTENSION pg_stat_statements VERSION '1.4'")
    finally:
        await old.close()
    collector, metrics = await collect(PostgresqlCollector, {"dsn": primary.dsn("monitor", "oldstats"),
                                                             "password": MONITOR_PASSWORD})
    statements = {s.name for s in POSTGRESQL_METRICS if s.name.startswith("postgresql.statement.")}
    why = section_lost(collector, metrics, "statements", statements,
                       {"postgresql.commits", "postgresql.wal.size", "postgresql.bgwriter.buffers.allocated"}, times=1)
    assert why.startswith("UndefinedColumnError: column s.total_exec_time does not exist") and "42703" in why
    no_tracebacks_or(caplog.records, MONITOR_PASSWORD)


async def test_a_database_the_role_may_not_connect_to(servers: tuple[Postgres, Postgres]) -> None:
    primary, _ = servers
    admin = await _superuser(primary)
    try:
        await admin.execute("CREATE DATABASE closed")
        await admin.execute("REVOKE CONNECT ON DATABASE closed FROM PUBLIC")
    finally:
        await admin.close()
    collector, metrics = await collect(PostgresqlCollector, {"dsn": primary.dsn("monitor", "closed"),
                                                             "password": MONITOR_PASSWORD})
    assert [(m.name, m.value) for m in metrics] == [("postgresql.up", 0.0)]
    reason = collector.reasons[f"127.0.0.1:{primary.port}"]
    assert 'permission denied for database "closed"' in reason and "GRANT CONNECT ON DATABASE closed TO monitor" in reason


async def test_a_query_given_up_on_is_cancelled_through_the_guard(servers: tuple[Postgres, Postgres]) -> None:
    """asyncpg cancels a query it stops waiting for over a second connection to the same address:
    the collector's frame guard (collectors.pgguard) takes that one too. The connection here has
    no statement_timeout, so only the cancel can end the 60 s sleep."""
    from collectors.pgguard import PgGuard

    primary, _ = servers
    admin = await _superuser(primary)
    guard = PgGuard("127.0.0.1", primary.port, None, 5.0)
    await guard.start()
    conn = await asyncpg.connect(host=guard.host, port=guard.port, user="postgres", password=SUPERUSER_PASSWORD,
                                 database="postgres", ssl=False, server_settings={"application_name": "guard-cancel"})
    try:
        with pytest.raises(TimeoutError):
            await conn.execute("SELECT pg_sleep(60)", timeout=0.5)

        async def sleeping() -> int:
            return int(await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                                            " 'guard-cancel' AND query = 'SELECT pg_sleep(60)' AND state = 'active'"))
        for _ in range(200):  # the cancel is asynchronous: wait for it, far less than the sleep
            if await sleeping() == 0:
                break
            await asyncio.sleep(0.05)
        assert await sleeping() == 0
        assert await conn.fetchval("SELECT 1") == 1  # the connection goes on
    finally:
        await conn.close()
        await guard.close()
        await admin.close()
