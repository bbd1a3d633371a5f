"""monitoring.metrics.mysql against Debian's MariaDB: a primary and a replica (GTID replication)
started once for this module (tests/integration/dbservers.py).

Every metric of MYSQL_METRICS is emitted with its declared kind and unit; values are checked
against what the server reports (inserts, slow queries, row-lock waits, schema sizes, replication);
and the hostile cases: a server that is not there, one that accepts and never speaks, a wrong
password, the server dropping the collector's connection, an account without REPLICA MONITOR; and
TLS (an account that requires it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from typing import Any

import aiomysql
import pytest

from collectors.mysql import MYSQL_METRICS, MysqlCollector
from tests.integration.dbservers import (
    Mariadb,
    ServerFailed,
    collect,
    free_port,
    no_tracebacks_or,
    one,
    points,
    primary_and_replica,
    section_lost,
)

pytestmark = pytest.mark.integration

MONITOR_PASSWORD = "my-m0nitor-pw-3e1"
PLAIN_PASSWORD = "my-pl4in-pw-8d0"


async def _sql(server: Mariadb, *statements: str, user: str = "root", password: str = "") -> list[Any]:
    conn = await aiomysql.connect(host="127.0.0.1", port=server.port, user=user, password=password, autocommit=True)
    out: list[Any] = []
    try:
        async with conn.cursor(aiomysql.DictCursor) as cur:
            for sql in statements:
                await cur.execute(sql)
                out.append(await cur.fetchall())
    finally:
        conn.close()
    return out


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Mariadb, Mariadb]]:
    yield from primary_and_replica(lambda: Mariadb(server_id=1, tls=True), lambda _: Mariadb(server_id=2), _setup)


async def _setup(primary: Mariadb, replica: Mariadb) -> None:
    await _sql(replica, f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, MASTER_USER='root',"
                        " MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos", "START SLAVE")
    await _sql(primary,
               f"CREATE USER monitor@'127.0.0.1' IDENTIFIED BY '{MONITOR_PASSWORD}'",
               "GRANT PROCESS, SLAVE MONITOR, SELECT ON *.* TO monitor@'127.0.0.1'",
               f"CREATE USER plain@'127.0.0.1' IDENTIFIED BY '{PLAIN_PASSWORD}'",
               f"CREATE USER tlsonly@'127.0.0.1' IDENTIFIED BY '{MONITOR_PASSWORD}' REQUIRE SSL",
               "CREATE DATABASE app", "GRANT SELECT ON app.* TO plain@'127.0.0.1'",
               "CREATE TABLE app.t (id INT PRIMARY KEY, x INT) ENGINE=InnoDB",
               "INSERT INTO app.t SELECT seq, 0 FROM app.seq_1_to_1000")
    for _ in range(400):  # the replica has caught up: it has the user and the table
        rows = (await _sql(replica, "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'app'"))[0]
        if rows[0]["n"] == 1:
            return
        await asyncio.sleep(0.05)
    raise ServerFailed("the replica did not catch up:\n" + replica.log())


def _target(server: Mariadb, user: str = "monitor", password: str = MONITOR_PASSWORD, **extra: Any) -> dict[str, Any]:
    return {"dsn": server.dsn(user), "password": password, **extra}







async def test_every_declared_metric_is_emitted_with_its_kind_and_unit(servers: tuple[Mariadb, Mariadb]) -> None:
    primary, replica = servers
    collector, metrics = await collect(MysqlCollector, {"targets": [_target(primary), _target(replica)]})
    assert collector.reasons == {}
    declared = {spec.name for spec in MYSQL_METRICS}
    emitted = {m.name for m in metrics} - {"mysql.up"}
    assert emitted == declared, f"declared, not emitted: {declared - emitted}; emitted, not declared: {emitted - declared}"
    for spec in MYSQL_METRICS:
        for m in points(metrics, spec.name):
            assert (m.kind, m.unit, m.description) == (spec.kind, spec.unit, spec.description), m
    on_replica = {"server.port": replica.port, "mysql.replica.source": f"127.0.0.1:{primary.port}"}
    assert one(metrics, "mysql.replica.io_running", **on_replica) == 1.0
    assert one(metrics, "mysql.replica.sql_running", **on_replica) == 1.0
    assert one(metrics, "mysql.replica.time_behind_source", **on_replica) >= 0
    assert not points(metrics, "mysql.replica.io_running", **{"server.port": primary.port})
    for server in (primary, replica):
        assert one(metrics, "mysql.up", **{"server.port": server.port}) == 1.0
        assert one(metrics, "mysql.schema.tables", **{"server.port": server.port, "mysql.schema.name": "app"}) == 1


async def test_values_are_the_servers(servers: tuple[Mariadb, Mariadb]) -> None:
    primary, _ = servers
    c = MysqlCollector()
    await c.initialize(_target(primary))
    try:
        before = await c.collect_metrics()
        n = 6
        await _sql(primary, *(f"INSERT INTO app.t VALUES ({2000 + i}, 1)" for i in range(n)))
        # one slow query (longer than the session's long_query_time)
        await _sql(primary, "SET SESSION long_query_time = 0.1", "SELECT SLEEP(0.3)")
        # one row-lock wait: a second session waits for a row the first holds
        holder = await aiomysql.connect(host="127.0.0.1", port=primary.port, user="root", password="")
        try:
            async with holder.cursor() as cur:
                await cur.execute("BEGIN")
                await cur.execute("SELECT x FROM app.t WHERE id = 1 FOR UPDATE")
                waiter = asyncio.create_task(_sql(primary, "UPDATE app.t SET x = 5 WHERE id = 1"))
                for _ in range(200):
                    waits = await _sql(primary, "SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_current_waits'")
                    if waits[0][0]["Value"] == "1":
                        break
                    await asyncio.sleep(0.02)
                during = await c.collect_metrics()
                await cur.execute("COMMIT")
                await waiter
        finally:
            holder.close()
        after = await c.collect_metrics()
        (sizes,) = await _sql(primary, "SELECT sum(data_length) AS d, sum(index_length) AS i FROM information_schema.tables"
                                       " WHERE table_schema = 'app'")
        (variables,) = await _sql(primary, "SELECT @@max_connections AS m, @@innodb_buffer_pool_size AS b")
    finally:
        await c.shutdown()

    def delta(name: str, **attrs: Any) -> float:
        return one(after, name, **attrs) - one(before, name, **attrs)

    assert delta("mysql.commands", command="insert") == n
    assert delta("mysql.query.slow.count") == 1
    assert delta("mysql.row_lock.waits") == 1
    assert one(during, "mysql.row_lock.current_waits") == 1 and one(after, "mysql.row_lock.current_waits") == 0
    assert delta("mysql.connection.count") >= 4  # the test's own connections, and none of the collector's
    assert one(after, "mysql.schema.size", kind="data", **{"mysql.schema.name": "app"}) == float(sizes[0]["d"])
    assert one(after, "mysql.schema.size", kind="index", **{"mysql.schema.name": "app"}) == float(sizes[0]["i"])
    assert one(after, "mysql.connection.max") == float(variables[0]["m"])
    assert one(after, "mysql.buffer_pool.limit") == float(variables[0]["b"]) == 16 * 1024 * 1024


async def test_a_server_that_is_not_there_or_never_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "monbridge")
    port = free_port()
    config = {"dsn": f"mysql://monitor@127.0.0.1:{port}/", "password": MONITOR_PASSWORD}
    collector, metrics = await collect(MysqlCollector, config)
    assert [(m.name, m.value) for m in metrics] == [("mysql.up", 0.0)]
    reason = collector.reasons[f"127.0.0.1:{port}"]
    assert "Can't connect" in reason and "2003" in reason and "Connect call failed" in reason
    # a peer that accepts the connection and never sends the server's greeting
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        config = {"dsn": f"mysql://monitor@127.0.0.1:{port}/", "password": MONITOR_PASSWORD, "connect_timeout": 0.5}
        collector, metrics = await collect(MysqlCollector, config)
    assert [(m.name, m.value) for m in metrics] == [("mysql.up", 0.0)]
    assert collector.reasons[f"127.0.0.1:{port}"] == "no answer within 0.5 s (connect_timeout)"
    no_tracebacks_or(caplog.records, MONITOR_PASSWORD)


async def test_a_wrong_password(servers: tuple[Mariadb, Mariadb], caplog: pytest.LogCaptureFixture) -> None:
    primary, _ = servers
    caplog.set_level(logging.INFO, "monbridge")
    wrong = "wr0ng-pw-5b7"
    collector, metrics = await collect(MysqlCollector, {"dsn": f"mysql://monitor:{wrong}@127.0.0.1:{primary.port}/"})
    assert [(m.name, m.value) for m in metrics] == [("mysql.up", 0.0)]
    reason = collector.reasons[f"127.0.0.1:{primary.port}"]
    assert "Access denied for user 'monitor'@'127.0.0.1'" in reason and "1045" in reason and wrong not in reason
    no_tracebacks_or(caplog.records, wrong)


async def test_a_dropped_connection_is_up_0_once_then_reopened(servers: tuple[Mariadb, Mariadb]) -> None:
    primary, _ = servers
    c = MysqlCollector()
    await c.initialize(_target(primary))
    try:
        assert one(await c.collect_metrics(), "mysql.up") == 1.0
        (rows,) = await _sql(primary, "SELECT id FROM information_schema.processlist WHERE user = 'monitor'")
        assert len(rows) == 1  # one connection per target, kept between collections
        await _sql(primary, f"KILL {rows[0]['id']}")
        metrics = await c.collect_metrics()
        assert [(m.name, m.value) for m in metrics if m.name == "mysql.up"] == [("mysql.up", 0.0)]
        assert "Lost connection to MySQL server during query (error 2013)" in c.reasons[f"127.0.0.1:{primary.port}"]
        assert one(await c.collect_metrics(), "mysql.up") == 1.0
        (rows,) = await _sql(primary, "SELECT id FROM information_schema.processlist WHERE user = 'monitor'")
        assert len(rows) == 1
    finally:
        await c.shutdown()


async def test_an_account_without_replica_monitor_loses_replication_only(servers: tuple[Mariadb, Mariadb],
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    _, replica = servers
    caplog.set_level(logging.INFO, "monbridge")
    collector, metrics = await collect(MysqlCollector, _target(replica, "plain", PLAIN_PASSWORD), times=2)
    why = section_lost(collector, metrics, "replica", {"mysql.replica.io_running", "mysql.replica.sql_running",
                                                       "mysql.replica.time_behind_source"},
                       {"mysql.query.count", "mysql.buffer_pool.usage", "mysql.schema.size"}, times=2)
    assert "SLAVE MONITOR" in why and "1227" in why
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SLAVE MONITOR" in warnings[0]
    no_tracebacks_or(caplog.records, PLAIN_PASSWORD)


async def test_tls(servers: tuple[Mariadb, Mariadb]) -> None:
    primary, _ = servers
    assert primary.cert is not None
    # an account that may log in over TLS only
    collector, metrics = await collect(MysqlCollector, _target(primary, "tlsonly", tls={"ca_file": str(primary.cert)}))
    assert one(metrics, "mysql.up") == 1.0 and collector.reasons == {}
    collector, metrics = await collect(MysqlCollector, _target(primary, "tlsonly"))
    assert one(metrics, "mysql.up") == 0.0
    assert "Access denied for user 'tlsonly'" in collector.reasons[f"127.0.0.1:{primary.port}"]
    collector, metrics = await collect(MysqlCollector, _target(primary, "tlsonly", tls={}))  # no CA the system trusts
    assert one(metrics, "mysql.up") == 0.0
    assert "certificate verify failed" in collector.reasons[f"127.0.0.1:{primary.port}"]
