"""MySQL and MariaDB metrics (``monitoring.metrics.mysql``) read with aiomysql: global status and the
variables that bound it (connections, threads, queries, slow queries, the InnoDB buffer pool, row
locks, row operations), replication (``SHOW REPLICA STATUS``) and per-schema sizes.

Names are those of the OpenTelemetry Collector's mysql receiver where it has one
(``mysql.buffer_pool.usage``, ``mysql.replica.time_behind_source``, ...); README.md maps them to
mysqld_exporter's. Every metric is one row of ``MYSQL_METRICS``.

The account needs ``REPLICA MONITOR`` (MariaDB) or ``REPLICATION CLIENT`` (MySQL) for the
replication section; without it that section is skipped and the server's error names the privilege.
Schema sizes cover the tables the account may see.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from bridge.api import MetricKind, PluginConfig, PluginMetadata, PluginType, validate_plugin_id
from collectors.db import DbCollector, MetricSpec, Point, Reader, Sample, Target, column, columns
from collectors.dbconfig import DbCollectorConfig, MysqlConfig

__all__ = ["MYSQL_METRICS", "PLUGIN_ID", "MysqlCollector"]

PLUGIN_ID = validate_plugin_id("monitoring.metrics.mysql", PluginType.METRIC_COLLECTOR)

VARIABLES = ("max_connections", "innodb_buffer_pool_size")
SYSTEM_SCHEMAS = ("information_schema", "performance_schema", "mysql", "sys")
SCHEMAS = ("SELECT table_schema AS name, coalesce(sum(data_length), 0) AS data, coalesce(sum(index_length), 0) AS idx,"
           " count(*) AS tables FROM information_schema.tables"
           f" WHERE table_schema NOT IN ({', '.join(repr(s) for s in SYSTEM_SCHEMAS)})"
           " GROUP BY table_schema ORDER BY sum(data_length + index_length) DESC LIMIT %s")
#: Access denied for a statement, a table, a column, a database (the server's message names it).
ACCESS_DENIED = {1227, 1142, 1143, 1044}
#: The grant each section needs beyond a login, for the error that does not name it.
GRANTS = {"replica": "REPLICA MONITOR (MariaDB) or REPLICATION CLIENT (MySQL)", "schemas": "SELECT on the schemas"}

_G, _C, _U = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.UP_DOWN_COUNTER


def _status(name: str, scale: float = 1.0) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        v = (s.get("status") or {}).get(name)
        if v not in (None, ""):
            yield s.base, float(v) * scale

    return read


def _statuses(attribute: str, names: Mapping[str, str]) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        status = s.get("status") or {}
        for value, name in names.items():
            v = status.get(name)
            if v not in (None, ""):
                yield s.with_base({attribute: value}), float(v)

    return read


def _variable(name: str) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        v = (s.get("variables") or {}).get(name)
        if v not in (None, ""):
            yield s.base, float(v)

    return read


def _clean_pages(s: Sample) -> Iterator[Point]:
    status = s.get("status") or {}
    data, dirty = status.get("Innodb_buffer_pool_bytes_data"), status.get("Innodb_buffer_pool_bytes_dirty")
    if data is not None and dirty is not None:
        yield s.with_base({"status": "dirty"}), float(dirty)
        yield s.with_base({"status": "clean"}), max(float(data) - float(dirty), 0.0)


def _running(thread: str) -> Any:
    """MariaDB's and older MySQL's ``Slave_<thread>_Running``, MySQL 8's ``Replica_<thread>_Running``."""
    def read(s: Sample) -> Iterator[Point]:
        for row in s.get("replica") or ():
            v = row.get(f"Slave_{thread}_Running", row.get(f"Replica_{thread}_Running"))
            yield s.with_base(_replica_attrs(row)), 1.0 if str(v).lower() == "yes" else 0.0

    return read


def _behind(s: Sample) -> Iterator[Point]:
    for row in s.get("replica") or ():
        v = row.get("Seconds_Behind_Master", row.get("Seconds_Behind_Source"))
        if v is not None:
            yield s.with_base(_replica_attrs(row)), float(v)


def _replica_attrs(row: Mapping[str, Any]) -> dict[str, Any]:
    host = row.get("Master_Host", row.get("Source_Host")) or ""
    port = row.get("Master_Port", row.get("Source_Port")) or ""
    return {"mysql.replica.source": f"{host}:{port}", "mysql.replica.channel": str(
        row.get("Connection_name", row.get("Channel_Name")) or "")}


SCHEMA = {"mysql.schema.name": "name"}
HANDLERS = ("commit", "rollback", "delete", "update", "write", "read_first", "read_key", "read_next", "read_rnd",
            "read_rnd_next")
COMMANDS = {c: f"Com_{c}" for c in ("select", "insert", "update", "delete", "replace", "commit", "rollback", "begin")}

MYSQL_METRICS: tuple[MetricSpec[Sample], ...] = (
    MetricSpec("mysql.uptime", _C, "s", "Seconds since the server started", _status("Uptime")),
    MetricSpec("mysql.connection.count", _C, "{connection}", "Connection attempts, successful or not",
               _status("Connections")),
    MetricSpec("mysql.connection.errors", _C, "{error}", "Connections that failed or were aborted, by reason",
               _statuses("error", {"aborted": "Aborted_connects", "aborted_clients": "Aborted_clients",
                                   "accept": "Connection_errors_accept", "internal": "Connection_errors_internal",
                                   "max_connections": "Connection_errors_max_connections",
                                   "peer_address": "Connection_errors_peer_address",
                                   "select": "Connection_errors_select", "tcpwrap": "Connection_errors_tcpwrap"})),
    MetricSpec("mysql.connection.max", _G, "{connection}", "Most client connections the server allows (max_connections)",
               _variable("max_connections")),
    MetricSpec("mysql.connection.max_used", _G, "{connection}", "Most connections open at once since the server started",
               _status("Max_used_connections")),
    MetricSpec("mysql.threads", _U, "{thread}", "Threads cached, connected and running",
               _statuses("kind", {"cached": "Threads_cached", "connected": "Threads_connected",
                                  "running": "Threads_running"})),
    MetricSpec("mysql.query.count", _C, "{query}", "Statements executed, from clients and stored programs",
               _status("Queries")),
    MetricSpec("mysql.query.slow.count", _C, "{query}", "Queries slower than long_query_time", _status("Slow_queries")),
    MetricSpec("mysql.commands", _C, "{command}", "Statements executed, by command", _statuses("command", COMMANDS)),
    MetricSpec("mysql.client.network.io", _C, "By", "Bytes received from and sent to clients",
               _statuses("kind", {"received": "Bytes_received", "sent": "Bytes_sent"})),
    MetricSpec("mysql.tmp_resources", _C, "{resource}", "Temporary tables (in memory and on disk) and files created",
               _statuses("resource", {"tables": "Created_tmp_tables", "disk_tables": "Created_tmp_disk_tables",
                                      "files": "Created_tmp_files"})),
    MetricSpec("mysql.buffer_pool.limit", _U, "By", "Size of the InnoDB buffer pool (innodb_buffer_pool_size)",
               _variable("innodb_buffer_pool_size")),
    MetricSpec("mysql.buffer_pool.usage", _U, "By", "Bytes of the InnoDB buffer pool holding dirty and clean data",
               _clean_pages),
    MetricSpec("mysql.buffer_pool.pages", _U, "{page}", "InnoDB buffer pool pages holding data, free and misc",
               _statuses("kind", {"data": "Innodb_buffer_pool_pages_data", "free": "Innodb_buffer_pool_pages_free",
                                  "misc": "Innodb_buffer_pool_pages_misc"})),
    MetricSpec("mysql.buffer_pool.page_flushes", _C, "{flush}", "InnoDB buffer pool pages flushed",
               _status("Innodb_buffer_pool_pages_flushed")),
    MetricSpec("mysql.buffer_pool.operations", _C, "{operation}", "InnoDB buffer pool reads, writes and waits",
               _statuses("operation", {"read_requests": "Innodb_buffer_pool_read_requests",
                                       "reads": "Innodb_buffer_pool_reads",
                                       "read_ahead": "Innodb_buffer_pool_read_ahead",
                                       "write_requests": "Innodb_buffer_pool_write_requests",
                                       "wait_free": "Innodb_buffer_pool_wait_free"})),
    MetricSpec("mysql.row_lock.waits", _C, "{wait}", "Times an InnoDB row lock had to be waited for",
               _status("Innodb_row_lock_waits")),
    MetricSpec("mysql.row_lock.time", _C, "s", "Time spent waiting for InnoDB row locks",
               _status("Innodb_row_lock_time", 0.001)),
    MetricSpec("mysql.row_lock.current_waits", _U, "{wait}", "InnoDB row locks being waited for now",
               _status("Innodb_row_lock_current_waits")),
    MetricSpec("mysql.handlers", _C, "{operation}", "Row operations the storage engines were asked for, by kind",
               _statuses("kind", {k: f"Handler_{k}" for k in HANDLERS})),
    MetricSpec("mysql.replica.io_running", _G, "1", "1 if the replica's I/O thread (reading the source) runs",
               _running("IO")),
    MetricSpec("mysql.replica.sql_running", _G, "1", "1 if the replica's SQL thread (applying events) runs",
               _running("SQL")),
    MetricSpec("mysql.replica.time_behind_source", _G, "s", "How far the replica's applied events lag the source's",
               _behind),
    MetricSpec("mysql.schema.size", _U, "By", "Bytes of each schema's tables' data and indexes",
               columns("schemas", "kind", {"data": "data", "index": "idx"}, SCHEMA)),
    MetricSpec("mysql.schema.tables", _U, "{table}", "Tables (and views) in each schema", column("schemas", "tables", SCHEMA)),
)


class MysqlCollector(DbCollector):
    """MySQL and MariaDB statistics from one or many servers (see the module docstring)."""

    config_model: ClassVar[type[PluginConfig]] = MysqlConfig
    system: ClassVar[str] = "mysql"
    table: ClassVar[Sequence[MetricSpec[Sample]]] = MYSQL_METRICS
    default_port: ClassVar[int] = 3306

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID, name="MySQL and MariaDB metrics", version="0.1.0", author="monbridge",
            description="Connections, threads, queries, the InnoDB buffer pool, row locks, replication and schema sizes",
            plugin_type=PluginType.METRIC_COLLECTOR,
        )

    async def connect(self, target: Target, cfg: DbCollectorConfig) -> Any:
        import aiomysql  # type: ignore[import-untyped]

        return await aiomysql.connect(
            host=target.host, port=target.port or 3306, user=target.user or "root", password=target.password() or "",
            db=target.database or None, ssl=target.tls, connect_timeout=cfg.connect_timeout, autocommit=True,
            program_name="monbridge",
        )

    async def close(self, connection: Any) -> None:
        connection.close()

    def sections(self, cfg: DbCollectorConfig) -> Sequence[tuple[str, Reader]]:
        assert isinstance(cfg, MysqlConfig)
        out: list[tuple[str, Reader]] = [("status", _status_rows), ("variables", _variables), ("replica", _replica)]
        if cfg.schemas_limit:
            out.append(("schemas", _schemas(cfg.schemas_limit)))
        return out

    def denied(self, exc: BaseException, section: str, target: Target) -> str | None:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code not in ACCESS_DENIED:
            return None
        message = exc.args[1] if len(exc.args) > 1 else str(exc)
        grant = GRANTS.get(section, "the privilege named")
        return f"{message} (error {code}; the account lacks {grant})"

    def refused(self, exc: BaseException) -> bool:
        # A server's error (codes under 2000, and MariaDB's 4000s), not a client's (2000s: the
        # connection lost) nor the server shutting down or the connection killed.
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return code is not None and not 2000 <= code < 3000 and code not in (1053, 1927)

    def describe(self, exc: BaseException, target: Target) -> str:
        if len(exc.args) >= 2 and isinstance(exc.args[0], int):
            text = f"{type(exc).__name__}: {exc.args[1]} (error {exc.args[0]})"
        else:
            text = f"{type(exc).__name__}: {exc}"
        cause = exc.__cause__  # aiomysql's "Can't connect" is raised from what failed: refused, TLS
        return text if cause is None else f"{text}: {type(cause).__name__}: {cause}"


async def _fetch(conn: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    import aiomysql

    async with conn.cursor(aiomysql.DictCursor) as cur:
        await cur.execute(sql, args or None)
        return list(await cur.fetchall())


async def _status_rows(conn: Any, target: Target) -> dict[str, str]:
    return {r["Variable_name"]: r["Value"] for r in await _fetch(conn, "SHOW GLOBAL STATUS")}


async def _variables(conn: Any, target: Target) -> dict[str, str]:
    names = ", ".join(f"'{v}'" for v in VARIABLES)
    return {r["Variable_name"]: r["Value"] for r in
            await _fetch(conn, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")}


async def _replica(conn: Any, target: Target) -> list[dict[str, Any]]:
    try:
        return await _fetch(conn, "SHOW REPLICA STATUS")
    except Exception as e:
        if not (e.args and e.args[0] == 1064):  # a syntax error: a server older than MySQL 8.0.22, MariaDB 10.5.1
            raise
        return await _fetch(conn, "SHOW SLAVE STATUS")


def _schemas(limit: int) -> Reader:
    async def read(conn: Any, target: Target) -> list[dict[str, Any]]:
        return await _fetch(conn, SCHEMAS, limit)

    return read
