"""Redis metrics (``monitoring.metrics.redis``) read with redis-py's asyncio client: the INFO sections
(clients, memory, persistence, stats, CPU, replication, keyspace), the time a PING takes and the
slow log's length.

Names are those of the OpenTelemetry Collector's redis receiver where it has one
(``redis.clients.connected``, ``redis.db.keys``, ...); README.md maps them to redis_exporter's.
Every metric is one row of ``REDIS_METRICS``.

An ACL user needs ``+ping +info +slowlog|len`` (``+@connection``); a section the server refuses is
skipped and the error names the missing permission.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from bridge.api import MetricKind, PluginConfig, PluginMetadata, PluginType, validate_plugin_id
from collectors.db import DbCollector, MetricSpec, Point, Reader, Sample, Target
from collectors.dbconfig import DbCollectorConfig, RedisConfig

__all__ = ["PLUGIN_ID", "REDIS_METRICS", "RedisCollector"]

PLUGIN_ID = validate_plugin_id("monitoring.metrics.redis", PluginType.METRIC_COLLECTOR)

#: The ACL permission each section needs (named when the server refuses it).
GRANTS = {"ping": "+ping", "info": "+info", "slowlog": "+slowlog|len"}

_G, _C, _U = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.UP_DOWN_COUNTER


def _info(field: str, scale: float = 1.0) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        v = (s.get("info") or {}).get(field)
        if isinstance(v, (int, float)):
            yield s.base, float(v) * scale

    return read


def _infos(attribute: str, fields: Mapping[str, str]) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        info = s.get("info") or {}
        for value, field in fields.items():
            v = info.get(field)
            if isinstance(v, (int, float)):
                yield s.with_base({attribute: value}), float(v)

    return read


def _flag(field: str, true: object) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        info = s.get("info") or {}
        if field in info:
            yield s.base, 1.0 if info[field] == true else 0.0

    return read


def _keyspace(field: str) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        for name, db in _databases(s):
            v = db.get(field)
            if isinstance(v, (int, float)):
                yield s.with_base({"db.namespace": name[2:]}), float(v)

    return read


def _database_names(info: Mapping[str, Any]) -> list[str]:
    """The keyspace's databases (``db0``, ``db1``, ...) in number order."""
    return sorted((k for k, v in info.items() if k.startswith("db") and k[2:].isdigit() and isinstance(v, dict)),
                  key=lambda k: int(k[2:]))


def _databases(s: Sample) -> Iterator[tuple[str, Mapping[str, Any]]]:
    info = s.get("info") or {}
    for k in _database_names(info):
        yield k, info[k]


def _replicas(field: str) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        info = s.get("info") or {}
        for k, v in info.items():
            if k.startswith("slave") and k[5:].isdigit() and isinstance(v, dict) and isinstance(v.get(field), (int, float)):
                yield s.with_base({"redis.replica.address": f"{v.get('ip', '')}:{v.get('port', '')}"}), float(v[field])

    return read


def _value(section: str) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        v = s.get(section)
        if v is not None:
            yield s.base, float(v)

    return read


REDIS_METRICS: tuple[MetricSpec[Sample], ...] = (
    MetricSpec("redis.uptime", _C, "s", "Seconds since the server started", _info("uptime_in_seconds")),
    MetricSpec("redis.ping.duration", _G, "s", "Time a PING took to be answered", _value("ping")),
    MetricSpec("redis.clients.connected", _U, "{client}", "Client connections (replicas excluded)",
               _info("connected_clients")),
    MetricSpec("redis.clients.blocked", _U, "{client}", "Clients waiting on a blocking call", _info("blocked_clients")),
    MetricSpec("redis.clients.max_input_buffer", _G, "By", "Biggest input buffer among the clients of late",
               _info("client_recent_max_input_buffer")),
    MetricSpec("redis.clients.max_output_buffer", _G, "By", "Biggest output buffer among the clients of late",
               _info("client_recent_max_output_buffer")),
    MetricSpec("redis.memory.used", _G, "By", "Memory the allocator holds for Redis", _info("used_memory")),
    MetricSpec("redis.memory.rss", _G, "By", "Memory the operating system sees Redis use", _info("used_memory_rss")),
    MetricSpec("redis.memory.peak", _G, "By", "Most memory Redis used", _info("used_memory_peak")),
    MetricSpec("redis.memory.lua", _G, "By", "Memory the Lua engine uses", _info("used_memory_lua")),
    MetricSpec("redis.memory.fragmentation_ratio", _G, "1", "Resident memory over used memory",
               _info("mem_fragmentation_ratio")),
    MetricSpec("redis.maxmemory", _G, "By", "The maxmemory setting (0: no limit)", _info("maxmemory")),
    MetricSpec("redis.rdb.changes_since_last_save", _U, "{change}", "Changes since the last RDB save",
               _info("rdb_changes_since_last_save")),
    MetricSpec("redis.rdb.last_save.time", _G, "s", "Unix time of the last successful RDB save",
               _info("rdb_last_save_time")),
    MetricSpec("redis.rdb.bgsave_in_progress", _G, "1", "1 while an RDB save runs", _info("rdb_bgsave_in_progress")),
    MetricSpec("redis.aof.enabled", _G, "1", "1 if the append-only file is on", _info("aof_enabled")),
    MetricSpec("redis.latest_fork", _G, "s", "Time the latest fork took", _info("latest_fork_usec", 1e-6)),
    MetricSpec("redis.commands.processed", _C, "{command}", "Commands processed", _info("total_commands_processed")),
    MetricSpec("redis.connections.received", _C, "{connection}", "Connections accepted",
               _info("total_connections_received")),
    MetricSpec("redis.connections.rejected", _C, "{connection}", "Connections refused for maxclients",
               _info("rejected_connections")),
    MetricSpec("redis.keys.expired", _C, "{event}", "Keys removed on expiry", _info("expired_keys")),
    MetricSpec("redis.keys.evicted", _C, "{event}", "Keys evicted for maxmemory", _info("evicted_keys")),
    MetricSpec("redis.keyspace.hits", _C, "{hit}", "Key lookups that found the key", _info("keyspace_hits")),
    MetricSpec("redis.keyspace.misses", _C, "{miss}", "Key lookups that did not", _info("keyspace_misses")),
    MetricSpec("redis.net.input", _C, "By", "Bytes read from the network", _info("total_net_input_bytes")),
    MetricSpec("redis.net.output", _C, "By", "Bytes written to the network", _info("total_net_output_bytes")),
    MetricSpec("redis.cpu.time", _C, "s", "CPU time of the server and its children, system and user",
               _infos("state", {"sys": "used_cpu_sys", "user": "used_cpu_user", "sys_children": "used_cpu_sys_children",
                                "user_children": "used_cpu_user_children"})),
    MetricSpec("redis.replication.is_replica", _G, "1", "1 if the server is a replica, else 0",
               _flag("role", "slave")),
    MetricSpec("redis.slaves.connected", _U, "{replica}", "Replicas connected to this server", _info("connected_slaves")),
    MetricSpec("redis.replication.offset", _G, "By", "The server's replication offset", _info("master_repl_offset")),
    MetricSpec("redis.replication.backlog_first_byte_offset", _G, "By", "The first byte the replication backlog holds",
               _info("repl_backlog_first_byte_offset")),
    MetricSpec("redis.replica.lag", _G, "s", "Seconds since each replica last acknowledged (on the primary)",
               _replicas("lag")),
    MetricSpec("redis.replica.offset", _G, "By", "The replication offset each replica acknowledged (on the primary)",
               _replicas("offset")),
    MetricSpec("redis.replication.master_link_up", _G, "1", "On a replica: 1 if its link to the primary is up",
               _flag("master_link_status", "up")),
    MetricSpec("redis.replication.master_last_io", _G, "s", "On a replica: seconds since the primary last spoke",
               _info("master_last_io_seconds_ago")),
    MetricSpec("redis.db.keys", _U, "{key}", "Keys in each database", _keyspace("keys")),
    MetricSpec("redis.db.expires", _U, "{key}", "Keys with an expiry in each database", _keyspace("expires")),
    MetricSpec("redis.db.avg_ttl", _G, "ms", "Average time to live of the keys with an expiry in each database",
               _keyspace("avg_ttl")),
    MetricSpec("redis.slowlog.length", _U, "{entry}", "Entries in the slow log", _value("slowlog")),
)


class RedisCollector(DbCollector):
    """Redis statistics from one or many servers (see the module docstring)."""

    config_model: ClassVar[type[PluginConfig]] = RedisConfig
    system: ClassVar[str] = "redis"
    table: ClassVar[Sequence[MetricSpec[Sample]]] = REDIS_METRICS
    default_port: ClassVar[int] = 6379

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID, name="Redis metrics", version="0.1.0", author="monbridge",
            description="INFO sections (clients, memory, persistence, stats, replication, keyspace), PING time, slow log",
            plugin_type=PluginType.METRIC_COLLECTOR,
        )

    async def connect(self, target: Target, cfg: DbCollectorConfig) -> Any:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        tls = target.config.tls
        use_tls = tls is not None or target.scheme == "rediss"
        options: dict[str, Any] = {}
        if use_tls:
            options = {"ssl": True, "ssl_ca_certs": str(tls.ca_file) if tls and tls.ca_file else None,
                       "ssl_certfile": str(tls.cert_file) if tls and tls.cert_file else None,
                       "ssl_keyfile": str(tls.key_file) if tls and tls.key_file else None,
                       "ssl_cert_reqs": "required" if tls is None or tls.verify else "none",
                       "ssl_check_hostname": tls is None or tls.verify}
        db = int(target.database) if target.database.isdigit() else 0
        client = redis.asyncio.Redis(
            host=target.host, port=target.port or 6379, db=db, username=target.user, password=target.password(),
            socket_connect_timeout=cfg.connect_timeout, socket_timeout=cfg.query_timeout + 1,
            single_connection_client=True, retry=Retry(NoBackoff(), 0), client_name="monbridge", **options,
        )
        try:
            await client.initialize()
            await client.connection.connect()  # type: ignore[union-attr]
        except BaseException:
            await client.aclose()
            raise
        return client

    async def close(self, connection: Any) -> None:
        await connection.aclose()

    def sections(self, cfg: DbCollectorConfig) -> Sequence[tuple[str, Reader]]:
        assert isinstance(cfg, RedisConfig)
        limit = cfg.databases_limit

        async def info(conn: Any, target: Target) -> Any:
            info = await conn.info()
            for k in _database_names(info)[limit:]:  # the first databases_limit databases
                del info[k]
            return info

        return [("ping", _ping), ("info", info), ("slowlog", _slowlog)]

    def denied(self, exc: BaseException, section: str, target: Target) -> str | None:
        from redis.exceptions import NoPermissionError

        if not isinstance(exc, NoPermissionError):
            return None
        grant = GRANTS.get(section, "")
        user = target.user or "default"
        return f"{exc} (the ACL user lacks {grant}: ACL SETUSER {user} {grant})"

    def refused(self, exc: BaseException) -> bool:
        from redis.exceptions import ResponseError

        return isinstance(exc, ResponseError)  # an error reply; a lost connection is a ConnectionError


async def _ping(conn: Any, target: Target) -> float:
    start = time.perf_counter()
    await conn.ping()
    return time.perf_counter() - start


async def _slowlog(conn: Any, target: Target) -> int:
    return int(await conn.slowlog_len())
