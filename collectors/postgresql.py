"""PostgreSQL metrics (``monitoring.metrics.postgresql``) read with asyncpg from the statistics views:
connections by state, transactions, tuples, blocks, deadlocks, temp files, database and table
sizes, locks, the background writer and checkpointer, replication (both ends), WAL size and the
top statements of ``pg_stat_statements`` when the extension is installed in the DSN's database.

Names are those of the OpenTelemetry Collector's postgresql receiver where it has one
(``postgresql.commits``, ``postgresql.db_size``, ...); README.md maps them to postgres_exporter's.
Every metric is one row of ``POSTGRESQL_METRICS``; each section is one query, see ``SECTIONS``.

The role needs ``pg_monitor`` (PostgreSQL 10+) for the WAL size and for other sessions' details;
without it those sections are skipped and the error names the grant.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from bridge.api import MetricKind, PluginConfig, PluginMetadata, PluginType, validate_plugin_id
from collectors.db import DbCollector, MetricSpec, Point, Reader, Sample, Target, column, columns
from collectors.dbconfig import DbCollectorConfig, PostgresqlConfig
from collectors.pgguard import PgGuard

__all__ = ["PLUGIN_ID", "POSTGRESQL_METRICS", "QUERIES", "PostgresqlCollector"]

PLUGIN_ID = validate_plugin_id("monitoring.metrics.postgresql", PluginType.METRIC_COLLECTOR)

# --------------------------------------------------------------------------- the queries

#: Each section's query; ``$1`` is its limit where it has one. The benchmark runs the same text.
QUERIES: dict[str, str] = {
    "settings": "SELECT current_setting('max_connections')::float8 AS max_connections,"
                " pg_is_in_recovery() AS in_recovery, current_database() AS datname",
    "activity": "SELECT coalesce(datname, '') AS datname, coalesce(state, 'unknown') AS state, count(*) AS n"
                " FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1, 2",
    "database": "SELECT datname, numbackends, xact_commit, xact_rollback, blks_read, blks_hit, tup_returned,"
                " tup_fetched, tup_inserted, tup_updated, tup_deleted, conflicts, temp_files, temp_bytes, deadlocks,"
                " CASE WHEN has_database_privilege(datid, 'CONNECT') THEN pg_database_size(datid) END AS size"
                " FROM pg_stat_database WHERE datname IS NOT NULL",
    "tables": "SELECT current_database() AS datname, schemaname, relname, n_live_tup, n_dead_tup, seq_scan,"
              " coalesce(idx_scan, 0) AS idx_scan, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd,"
              " vacuum_count, autovacuum_count, analyze_count, autoanalyze_count,"
              " pg_total_relation_size(relid) AS size"
              " FROM pg_stat_user_tables ORDER BY size DESC, relid LIMIT $1",
    "locks": "SELECT coalesce(d.datname, '') AS datname, l.mode, count(*) AS n"
             " FROM pg_locks l LEFT JOIN pg_database d ON d.oid = l.database GROUP BY 1, 2",
    "bgwriter": "SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time, checkpoint_sync_time,"
                " buffers_checkpoint, buffers_clean, maxwritten_clean, buffers_backend, buffers_backend_fsync,"
                " buffers_alloc FROM pg_stat_bgwriter",
    "replication": "SELECT coalesce(application_name, '') AS application_name,"
                   " coalesce(client_addr::text, '') AS client_addr, coalesce(state, '') AS state,"
                   " pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()"
                   " ELSE pg_current_wal_lsn() END, replay_lsn) AS replay_bytes,"
                   " extract(epoch FROM write_lag) AS write_lag, extract(epoch FROM flush_lag) AS flush_lag,"
                   " extract(epoch FROM replay_lag) AS replay_lag FROM pg_stat_replication",
    "recovery": "SELECT CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS is_replica,"
                " CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
                " END AS lag",
    "wal": "SELECT count(*) AS segments, coalesce(sum(size), 0) AS size FROM pg_ls_waldir()",
    "statements": "SELECT coalesce(d.datname, '') AS datname, coalesce(r.rolname, '') AS rolname,"
                  " s.queryid::text AS queryid, s.calls, s.total_exec_time / 1000.0 AS seconds, s.rows,"
                  " s.shared_blks_hit, s.shared_blks_read"
                  " FROM pg_stat_statements s LEFT JOIN pg_database d ON d.oid = s.dbid"
                  " LEFT JOIN pg_roles r ON r.oid = s.userid WHERE s.queryid IS NOT NULL"
                  " ORDER BY s.total_exec_time DESC LIMIT $1",
}

#: PostgreSQL 17 moved the checkpoints to pg_stat_checkpointer and dropped the backends' writes.
BGWRITER_17 = (
    "SELECT c.num_timed AS checkpoints_timed, c.num_requested AS checkpoints_req,"
    " c.write_time AS checkpoint_write_time, c.sync_time AS checkpoint_sync_time,"
    " c.buffers_written AS buffers_checkpoint, b.buffers_clean, b.maxwritten_clean, b.buffers_alloc"
    " FROM pg_stat_checkpointer c, pg_stat_bgwriter b"
)

HAS_STATEMENTS = "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"

#: The grant each section needs beyond a plain login (named when the server refuses it).
GRANTS = {
    "wal": "pg_monitor",
    "statements": "pg_read_all_stats",
}


# --------------------------------------------------------------------------- the metric table

DB = {"postgresql.database.name": "datname"}
TABLE = {"postgresql.database.name": "datname", "postgresql.schema.name": "schemaname",
         "postgresql.table.name": "relname"}
REPLICA = {"postgresql.replica.name": "application_name", "postgresql.replica.address": "client_addr"}
_G, _C, _U = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.UP_DOWN_COUNTER


def _settings(value: str) -> Any:
    def read(s: Sample) -> Iterator[Point]:
        row = s.get("settings")
        if row:
            yield s.base, float(row[0][value])

    return read


POSTGRESQL_METRICS: tuple[MetricSpec[Sample], ...] = (
    MetricSpec("postgresql.backends", _U, "{connection}", "Client connections by database and state",
               column("activity", "n", {**DB, "state": "state"})),
    MetricSpec("postgresql.connection.max", _G, "{connection}", "Most client connections the server allows",
               _settings("max_connections")),
    MetricSpec("postgresql.database.backends", _U, "{connection}", "Backends connected to each database",
               column("database", "numbackends", DB)),
    MetricSpec("postgresql.commits", _C, "{transaction}", "Transactions committed in each database",
               column("database", "xact_commit", DB)),
    MetricSpec("postgresql.rollbacks", _C, "{transaction}", "Transactions rolled back in each database",
               column("database", "xact_rollback", DB)),
    MetricSpec("postgresql.blks_read", _C, "{block}", "Disk blocks read in each database",
               column("database", "blks_read", DB)),
    MetricSpec("postgresql.blks_hit", _C, "{block}", "Disk blocks found in the buffer cache in each database",
               column("database", "blks_hit", DB)),
    MetricSpec("postgresql.tup_returned", _C, "{tuple}", "Rows returned by queries in each database",
               column("database", "tup_returned", DB)),
    MetricSpec("postgresql.tup_fetched", _C, "{tuple}", "Rows fetched by queries in each database",
               column("database", "tup_fetched", DB)),
    MetricSpec("postgresql.tup_inserted", _C, "{tuple}", "Rows inserted in each database",
               column("database", "tup_inserted", DB)),
    MetricSpec("postgresql.tup_updated", _C, "{tuple}", "Rows updated in each database",
               column("database", "tup_updated", DB)),
    MetricSpec("postgresql.tup_deleted", _C, "{tuple}", "Rows deleted in each database",
               column("database", "tup_deleted", DB)),
    MetricSpec("postgresql.database.conflicts", _C, "{query}", "Queries cancelled by recovery conflicts",
               column("database", "conflicts", DB)),
    MetricSpec("postgresql.deadlocks", _C, "{deadlock}", "Deadlocks detected in each database",
               column("database", "deadlocks", DB)),
    MetricSpec("postgresql.temp_files", _C, "{file}", "Temporary files created by queries in each database",
               column("database", "temp_files", DB)),
    MetricSpec("postgresql.temp.io", _C, "By", "Bytes written to temporary files in each database",
               column("database", "temp_bytes", DB)),
    MetricSpec("postgresql.db_size", _U, "By", "Disk space used by each database (those the role may connect to)",
               column("database", "size", DB)),
    MetricSpec("postgresql.table.size", _U, "By", "Disk space of each table with its indexes and TOAST",
               column("tables", "size", TABLE)),
    MetricSpec("postgresql.rows", _U, "{row}", "Live and dead rows of each table",
               columns("tables", "state", {"live": "n_live_tup", "dead": "n_dead_tup"}, TABLE)),
    MetricSpec("postgresql.operations", _C, "{operation}", "Rows inserted, updated, deleted and HOT-updated in each table",
               columns("tables", "operation", {"ins": "n_tup_ins", "upd": "n_tup_upd", "del": "n_tup_del",
                                                "hot_upd": "n_tup_hot_upd"}, TABLE)),
    MetricSpec("postgresql.sequential_scans", _C, "{sequential_scan}", "Sequential scans of each table",
               column("tables", "seq_scan", TABLE)),
    MetricSpec("postgresql.table.index_scans", _C, "{scan}", "Index scans of each table",
               column("tables", "idx_scan", TABLE)),
    MetricSpec("postgresql.table.vacuum.count", _C, "{vacuum}", "Vacuums of each table, manual and automatic",
               columns("tables", "type", {"manual": "vacuum_count", "auto": "autovacuum_count"}, TABLE)),
    MetricSpec("postgresql.table.analyze.count", _C, "{analyze}", "Analyzes of each table, manual and automatic",
               columns("tables", "type", {"manual": "analyze_count", "auto": "autoanalyze_count"}, TABLE)),
    MetricSpec("postgresql.database.locks", _U, "{lock}", "Locks held or awaited, by database and mode",
               column("locks", "n", {**DB, "mode": "mode"})),
    MetricSpec("postgresql.bgwriter.checkpoint.count", _C, "{checkpoint}", "Checkpoints, scheduled and requested",
               columns("bgwriter", "type", {"scheduled": "checkpoints_timed", "requested": "checkpoints_req"})),
    MetricSpec("postgresql.bgwriter.duration", _C, "s", "Time checkpoints spent writing and syncing files",
               columns("bgwriter", "type", {"write": "checkpoint_write_time", "sync": "checkpoint_sync_time"},
                       scale=0.001)),
    MetricSpec("postgresql.bgwriter.buffers.writes", _C, "{buffer}", "Buffers written, by who wrote them",
               columns("bgwriter", "source", {"checkpoints": "buffers_checkpoint", "bgwriter": "buffers_clean",
                                              "backend": "buffers_backend", "backend_fsync": "buffers_backend_fsync"})),
    MetricSpec("postgresql.bgwriter.buffers.allocated", _C, "{buffer}", "Buffers allocated",
               column("bgwriter", "buffers_alloc")),
    MetricSpec("postgresql.bgwriter.maxwritten", _C, "{stop}",
               "Times the background writer stopped a cleaning scan for having written too many buffers",
               column("bgwriter", "maxwritten_clean")),
    MetricSpec("postgresql.replication.data_delay", _U, "By", "WAL bytes each standby has yet to replay",
               column("replication", "replay_bytes", REPLICA)),
    MetricSpec("postgresql.wal.lag", _G, "s", "Time each standby took to write, flush and replay recent WAL",
               columns("replication", "operation", {"write": "write_lag", "flush": "flush_lag", "replay": "replay_lag"},
                       REPLICA)),
    MetricSpec("postgresql.replication.is_replica", _G, "1", "1 if the server is a standby (in recovery), else 0",
               column("recovery", "is_replica")),
    MetricSpec("postgresql.replication.lag", _G, "s", "On a standby: age of the last transaction replayed",
               column("recovery", "lag")),
    MetricSpec("postgresql.wal.size", _U, "By", "Size of the WAL directory's files (needs pg_monitor)",
               column("wal", "size")),
    MetricSpec("postgresql.wal.segments", _U, "{segment}", "Files in the WAL directory (needs pg_monitor)",
               column("wal", "segments")),
    MetricSpec("postgresql.statement.calls", _C, "{call}", "Calls of each top statement (pg_stat_statements)",
               column("statements", "calls", {**DB, "db.user": "rolname", "postgresql.query.id": "queryid"})),
    MetricSpec("postgresql.statement.time", _C, "s", "Time spent executing each top statement (pg_stat_statements)",
               column("statements", "seconds", {**DB, "db.user": "rolname", "postgresql.query.id": "queryid"})),
    MetricSpec("postgresql.statement.rows", _C, "{row}", "Rows returned or affected by each top statement",
               column("statements", "rows", {**DB, "db.user": "rolname", "postgresql.query.id": "queryid"})),
    MetricSpec("postgresql.statement.blocks", _C, "{block}", "Shared blocks each top statement found cached or read",
               columns("statements", "source", {"hit": "shared_blks_hit", "read": "shared_blks_read"},
                       {**DB, "db.user": "rolname", "postgresql.query.id": "queryid"})),
)


# --------------------------------------------------------------------------- the collector


class PostgresqlCollector(DbCollector):
    """PostgreSQL statistics from one or many servers (see the module docstring)."""

    config_model: ClassVar[type[PluginConfig]] = PostgresqlConfig
    system: ClassVar[str] = "postgresql"
    table: ClassVar[Sequence[MetricSpec[Sample]]] = POSTGRESQL_METRICS
    default_port: ClassVar[int] = 5432

    def __init__(self) -> None:
        super().__init__()
        self._guards: dict[int, PgGuard] = {}  # id(connection) -> its guard
        self._unguarded_told = False

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID, name="PostgreSQL metrics", version="0.1.0", author="monbridge",
            description="Connections, transactions, tuples, sizes, locks, checkpoints, replication and top statements",
            plugin_type=PluginType.METRIC_COLLECTOR,
        )

    async def connect(self, target: Target, cfg: DbCollectorConfig) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        # Through a guard that checks each message's frame first (collectors.pgguard says why);
        # TLS, when the target asks for it, is the guard's.
        # Where the guard cannot listen (a sandboxed worker has no Unix sockets), the worker's
        # isolation is the protection: the agent stops it at its timeout.
        guard: PgGuard | None = PgGuard(target.host, target.port or self.default_port, target.tls, cfg.connect_timeout)
        assert guard is not None
        try:
            await guard.start()
        except OSError as e:
            await guard.close()
            guard = None
            if not self._unguarded_told:
                self._unguarded_told = True
                self._log.info("postgresql: connecting without the frame guard (%s)", e.strerror or e)
        try:
            connection = await asyncpg.connect(
                host=guard.host if guard else target.host, port=guard.port if guard else target.port,
                user=target.user or "postgres", password=target.password(),
                database=target.database or None, ssl=False if guard else target.tls or False,
                timeout=cfg.connect_timeout,
                command_timeout=cfg.query_timeout, statement_cache_size=len(QUERIES) + 4,
                server_settings={"application_name": "monbridge",
                                 # the server stops a query the collector has given up on
                                 "statement_timeout": str(int(cfg.query_timeout * 1000) + 1000)},
            )
        except BaseException as e:
            if guard is not None:
                await guard.close()
                if guard.error is not None and isinstance(e, Exception):
                    raise ConnectionError(guard.error) from None
            raise
        if guard is not None:
            self._guards[id(connection)] = guard
        return connection

    async def close(self, connection: Any) -> None:
        guard = self._guards.pop(id(connection), None)
        try:
            await connection.close(timeout=2)
        finally:
            if guard is not None:
                await guard.close()

    def sections(self, cfg: DbCollectorConfig) -> Sequence[tuple[str, Reader]]:
        assert isinstance(cfg, PostgresqlConfig)
        out: list[tuple[str, Reader]] = [(name, _rows(QUERIES[name])) for name in
                                         ("settings", "activity", "database", "locks", "recovery", "replication")]
        out.append(("bgwriter", _bgwriter))
        if cfg.tables_limit:
            out.append(("tables", _rows(QUERIES["tables"], cfg.tables_limit)))
        out.append(("wal", _rows(QUERIES["wal"])))
        if cfg.statements_limit:
            out.append(("statements", _statements(cfg.statements_limit)))
        return out

    def denied(self, exc: BaseException, section: str, target: Target) -> str | None:
        if getattr(exc, "sqlstate", None) != "42501":  # insufficient_privilege
            return None
        role = target.user or "postgres"
        grant = GRANTS.get(section, "pg_monitor")
        return f"{exc} (the role lacks {grant}: GRANT {grant} TO {_ident(role)})"

    def refused(self, exc: BaseException) -> bool:
        # The server's error answer, but for classes 08 (connection exception) and 57P (shut down)
        state = getattr(exc, "sqlstate", None)
        return isinstance(state, str) and not state.startswith(("08", "57P"))

    def describe(self, exc: BaseException, target: Target) -> str:
        state = getattr(exc, "sqlstate", None)
        text = f"{type(exc).__name__}: {exc}" + (f" (SQLSTATE {state})" if state else "")
        if state == "42501" and target.connection is None:  # refused at login: the database's CONNECT
            role = target.user or "postgres"
            database = target.database or role
            text += f"; the role lacks CONNECT: GRANT CONNECT ON DATABASE {_ident(database)} TO {_ident(role)}"
        return text


def _ident(name: str) -> str:
    return name if name.isidentifier() and name.islower() else '"' + name.replace('"', '""') + '"'


def _rows(sql: str, *args: Any) -> Reader:
    async def read(conn: Any, target: Target) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return read


async def _bgwriter(conn: Any, target: Target) -> list[dict[str, Any]]:
    sql = BGWRITER_17 if conn.get_server_version().major >= 17 else QUERIES["bgwriter"]
    return [dict(r) for r in await conn.fetch(sql)]


def _statements(limit: int) -> Reader:
    async def read(conn: Any, target: Target) -> list[dict[str, Any]]:
        if await conn.fetchval(HAS_STATEMENTS) is None:
            return []
        return [dict(r) for r in await conn.fetch(QUERIES["statements"], limit)]

    return read
