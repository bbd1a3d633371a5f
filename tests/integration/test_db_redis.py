"""monitoring.metrics.redis against Debian's redis-server: a primary and a replica started once for
this module (tests/integration/dbservers.py).

Every metric of REDIS_METRICS is emitted with its declared kind and unit; values are checked
against what the server reports (keys, expiries, hits and misses, slow log, replication); and the
hostile cases: a server that is not there or dies, a wrong password, a server blocked past the
timeout (DEBUG SLEEP), an ACL user without +slowlog|len, TLS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from collectors.redis import REDIS_METRICS, RedisCollector
from tests.integration.dbservers import (
    SUPERUSER_PASSWORD,
    Redis,
    ServerFailed,
    ServerMissing,
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

MONITOR_PASSWORD = "rd-m0nitor-pw-2a4"
PLAIN_PASSWORD = "rd-pl4in-pw-6c9"
#: What the collector needs: connection commands (AUTH, HELLO, CLIENT SETNAME, PING, SELECT), INFO, SLOWLOG LEN.
MONITOR_ACL = ["on", f">{MONITOR_PASSWORD}", "+@connection", "+info", "+slowlog|len"]
PLAIN_ACL = ["on", f">{PLAIN_PASSWORD}", "+@connection", "+info"]


@asynccontextmanager
async def _admin(server: Redis, db: int = 0) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis(host="127.0.0.1", port=server.port, db=db, password=SUPERUSER_PASSWORD)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Redis, Redis]]:
    yield from primary_and_replica(Redis, lambda primary: Redis(primary=primary), _setup)


async def _setup(primary: Redis, replica: Redis) -> None:
    for server in (primary, replica):  # ACL users are each server's own
        async with _admin(server) as admin:
            await admin.execute_command("ACL", "SETUSER", "monitor", *MONITOR_ACL)
            await admin.execute_command("ACL", "SETUSER", "plain", *PLAIN_ACL)
    async with _admin(replica) as admin:
        for _ in range(400):
            if (await admin.info("replication")).get("master_link_status") == "up":
                return
            await asyncio.sleep(0.05)
    raise ServerFailed("the replica did not connect to the primary:\n" + replica.log())


def _target(server: Redis, user: str = "monitor", password: str = MONITOR_PASSWORD, db: int = 0,
            **extra: Any) -> dict[str, Any]:
    return {"url": f"redis://{user}@127.0.0.1:{server.port}/{db}", "password": password, **extra}







async def test_every_declared_metric_is_emitted_with_its_kind_and_unit(servers: tuple[Redis, Redis]) -> None:
    primary, replica = servers
    async with _admin(primary) as admin:
        await admin.set("k", "v", ex=600)
    collector, metrics = await collect(RedisCollector, {"targets": [_target(primary), _target(replica)]})
    assert collector.reasons == {}
    declared = {spec.name for spec in REDIS_METRICS}
    emitted = {m.name for m in metrics} - {"redis.up"}
    assert emitted == declared, f"declared, not emitted: {declared - emitted}; emitted, not declared: {emitted - declared}"
    for spec in REDIS_METRICS:
        for m in points(metrics, spec.name):
            assert (m.kind, m.unit, m.description) == (spec.kind, spec.unit, spec.description), m
    p, r = {"server.port": primary.port}, {"server.port": replica.port}
    assert one(metrics, "redis.replication.is_replica", **p) == 0.0
    assert one(metrics, "redis.replication.is_replica", **r) == 1.0
    assert one(metrics, "redis.slaves.connected", **p) == 1.0
    assert one(metrics, "redis.replication.master_link_up", **r) == 1.0
    assert [m.attributes["redis.replica.address"] for m in points(metrics, "redis.replica.lag")] == [
        f"127.0.0.1:{replica.port}"]
    for server in (primary, replica):
        assert one(metrics, "redis.up", **{"server.port": server.port}) == 1.0


async def test_values_are_the_servers(servers: tuple[Redis, Redis]) -> None:
    primary, _ = servers
    c = RedisCollector()
    await c.initialize({**_target(primary), "databases_limit": 1})
    try:
        async with _admin(primary, db=5) as admin, _admin(primary, db=2) as db2:
            await admin.flushall()
            await admin.config_set("slowlog-log-slower-than", 100_000)  # 0.1 s
            await admin.config_set("maxmemory", 64 * 1024 * 1024)
            await admin.slowlog_reset()
            await db2.mset({f"key{i}": i for i in range(10)})
            for i in range(4):
                await db2.expire(f"key{i}", 600)
            await admin.set("beyond-the-limit", 1)  # db5: not the first database holding keys
            before = await c.collect_metrics()
            for _ in range(3):
                await db2.get("key1")
            for _ in range(2):
                await db2.get("missing")
            for _ in range(2):
                await admin.execute_command("DEBUG", "SLEEP", "0.15")
            after = await c.collect_metrics()
            avg_ttl = (await db2.info("keyspace"))["db2"]["avg_ttl"]
            await admin.config_set("slowlog-log-slower-than", 0)
            await admin.config_set("maxmemory", 0)
    finally:
        await c.shutdown()
    db = {"db.namespace": "2"}
    assert one(after, "redis.db.keys", **db) == 10 and one(after, "redis.db.expires", **db) == 4
    assert 0 < one(after, "redis.db.avg_ttl", **db) <= 600_000 and avg_ttl > 0
    assert [m.attributes["db.namespace"] for m in points(after, "redis.db.keys")] == ["2"]  # db5 is past the limit
    assert one(after, "redis.keyspace.hits") - one(before, "redis.keyspace.hits") == 3
    assert one(after, "redis.keyspace.misses") - one(before, "redis.keyspace.misses") == 2
    assert one(after, "redis.slowlog.length") == 2
    assert one(after, "redis.maxmemory") == 64 * 1024 * 1024
    assert one(after, "redis.commands.processed") - one(before, "redis.commands.processed") >= 7
    assert one(after, "redis.ping.duration") > 0


async def test_a_server_that_is_not_there_or_dies(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "monbridge")
    port = free_port()
    collector, metrics = await collect(RedisCollector, {"url": f"redis://127.0.0.1:{port}/0"})
    assert [(m.name, m.value) for m in metrics] == [("redis.up", 0.0)]
    assert "Error 111 connecting to" in collector.reasons[f"127.0.0.1:{port}"]
    server = Redis()
    c = RedisCollector()
    await c.initialize({"url": server.url(), "password": SUPERUSER_PASSWORD})
    try:
        assert one(await c.collect_metrics(), "redis.up") == 1.0
        server.stop()
        metrics = await c.collect_metrics()
        assert [(m.name, m.value) for m in metrics] == [("redis.up", 0.0)]
        assert c.reasons[f"127.0.0.1:{server.port}"]
    finally:
        await c.shutdown()
        server.stop()
    no_tracebacks_or(caplog.records, SUPERUSER_PASSWORD)


async def test_a_wrong_password(servers: tuple[Redis, Redis], caplog: pytest.LogCaptureFixture) -> None:
    primary, _ = servers
    caplog.set_level(logging.INFO, "monbridge")
    wrong = "wr0ng-rd-pw-1f"
    collector, metrics = await collect(RedisCollector, _target(primary, password=wrong))
    assert [(m.name, m.value) for m in metrics] == [("redis.up", 0.0)]
    reason = collector.reasons[f"127.0.0.1:{primary.port}"]
    assert "invalid username-password pair" in reason and wrong not in reason
    no_tracebacks_or(caplog.records, wrong)


async def test_a_server_blocked_past_the_timeout_is_cut(servers: tuple[Redis, Redis]) -> None:
    primary, _ = servers
    c = RedisCollector()
    await c.initialize({**_target(primary), "query_timeout": 0.5})
    try:
        assert one(await c.collect_metrics(), "redis.up") == 1.0
        async with _admin(primary) as admin:
            await admin.ping()
            sleeper = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "2"))
            await asyncio.sleep(0.1)  # the server is asleep (one thread: it answers no one)
            metrics = await c.collect_metrics()
            assert [(m.name, m.value) for m in metrics if m.name == "redis.up"] == [("redis.up", 0.0)]
            assert c.reasons[f"127.0.0.1:{primary.port}"] == "query 'ping' did not finish within 0.5 s (query_timeout): cut"
            assert one(metrics, "redis.collector.errors", section="ping") == 1
            await sleeper
        assert one(await c.collect_metrics(), "redis.up") == 1.0
    finally:
        await c.shutdown()


async def test_an_acl_user_without_slowlog_loses_the_slowlog_only(servers: tuple[Redis, Redis],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    primary, _ = servers
    caplog.set_level(logging.INFO, "monbridge")
    collector, metrics = await collect(RedisCollector, _target(primary, "plain", PLAIN_PASSWORD), times=2)
    why = section_lost(collector, metrics, "slowlog", {"redis.slowlog.length"}, {"redis.memory.used", "redis.ping.duration"},
                       times=2)
    assert "no permissions to run the 'slowlog|len' command" in why and "ACL SETUSER plain +slowlog|len" in why
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "+slowlog|len" in warnings[0]
    no_tracebacks_or(caplog.records, PLAIN_PASSWORD)


async def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    try:
        server = Redis(tls=(cert, key))
    except (ServerMissing, ServerFailed) as e:
        pytest.fail(str(e), pytrace=False)
    try:
        target = {"url": f"redis://127.0.0.1:{server.port}/0", "password": SUPERUSER_PASSWORD}
        collector, metrics = await collect(RedisCollector, {**target, "tls": {"ca_file": str(cert)}})
        assert one(metrics, "redis.up") == 1.0 and collector.reasons == {}
        collector, metrics = await collect(RedisCollector, {**target, "tls": {}})  # not signed by a CA the system trusts
        assert one(metrics, "redis.up") == 0.0
        assert "certificate verify failed" in collector.reasons[f"127.0.0.1:{server.port}"]
        collector, metrics = await collect(RedisCollector, target)  # plain text to a TLS port
        assert one(metrics, "redis.up") == 0.0
    finally:
        server.stop()
