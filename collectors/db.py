"""What the database collectors share: targets with one connection each, time bounds, ``up`` and
the reasons a target or a part of it could not be read.

A collector subclasses :class:`DbCollector` with a driver (``connect``, ``close``), the sections it
reads (``read``: one query or command each, by name) and its metric table (``MetricSpec`` rows read
from a :class:`Sample`, as ``collectors.system``). Each collection reads every target concurrently:

* one connection per target, opened on first use and kept between collections (a pool of one);
  it is closed and opened again after any failure.
* a target that cannot be reached, refuses the login or answers a query later than
  ``query_timeout`` reports ``<system>.up`` 0 and nothing else for that collection; the reason
  (one line, no stack trace, no secret) is logged when it changes and kept in ``reasons``.
* a section the server refuses is skipped, the others are kept: for want of a privilege, its
  error names the grant that is missing; or with an error answer (a column an older server lacks,
  an extension not loaded). It is counted in ``<system>.collector.errors`` and logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.api import AttributeValue, Metric, MetricCollectorPlugin, MetricKind, PluginConfig, PluginError
from bridge.helpers import LogLimit, redact_text
from collectors.dbconfig import DbCollectorConfig, DbTarget, DbTls
from collectors.system import MetricSpec

__all__ = ["DbCollector", "MetricSpec", "Sample", "Target", "build", "client_tls_context", "column", "columns"]


class QueryTimeout(Exception):
    pass


@dataclass(slots=True)
class Sample:
    """What one collection read from one target: each section's result by name (absent when it
    failed), and the attributes every point of the target carries (``base``)."""

    sections: dict[str, Any] = field(default_factory=dict)
    base: Mapping[str, AttributeValue] = field(default_factory=dict)
    _rows: dict[tuple[str, Any, Any], list[tuple[Mapping[str, Any], Mapping[str, AttributeValue]]]] = field(
        default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.sections.get(name, default)

    def with_base(self, attributes: Mapping[str, AttributeValue]) -> Mapping[str, AttributeValue]:
        """``base`` and ``attributes``, for a point of no section's rows."""
        return {**self.base, **attributes} if attributes else self.base

    def rows(self, section: str, columns: tuple[tuple[str, str], ...],
             const: tuple[tuple[str, AttributeValue], ...] = ()) -> list[tuple[Mapping[str, Any], Mapping[str, AttributeValue]]]:
        """Each row of ``section`` (a list of dicts) with its points' attributes: ``base``, then
        attribute <- column for ``columns``, then ``const``. Built once per sample and shared by
        every point that has them (a collection's Metrics share attribute dicts; none changes one)."""
        key = (section, columns, const)
        found = self._rows.get(key)
        if found is None:
            if const:
                extra = dict(const)
                found = [(row, {**attrs, **extra}) for row, attrs in self.rows(section, columns)]
            else:
                base = self.base
                found = [(row, {**base, **{a: _attr(row[c]) for a, c in columns}})
                         for row in self.sections.get(section) or ()]
            self._rows[key] = found
        return found


def client_tls_context(tls: DbTls | None, where: str) -> ssl.SSLContext | None:
    """A client TLS context for ``tls`` (None without it); PluginError naming the config path
    (``where``, the target's: ``targets[1]``, or "" for the one ``dsn``) and the file when a file
    cannot be loaded."""
    if tls is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as e:
        raise PluginError(f"{_path(where, 'tls')}: {type(e).__name__}: {e}") from None
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class Target:
    """One server of a collector: where it is, its credentials, its one connection."""

    def __init__(self, config: DbTarget, where: str) -> None:
        self.config = config
        self.where = where  # the config path, e.g. targets[1]; "" for the one dsn
        u = urllib.parse.urlsplit(config.dsn)
        self.scheme = u.scheme
        self.host = u.hostname or ""
        self.port = u.port
        self.user = urllib.parse.unquote(u.username) if u.username else None
        self.database = urllib.parse.unquote(u.path.lstrip("/"))
        self.query = dict(urllib.parse.parse_qsl(u.query))
        self._dsn_password = urllib.parse.unquote(u.password) if u.password else None
        self._file_password: str | None = None  # the last read from password_file
        self.name = config.name or f"{self.host}:{self.port}"
        self.tls = client_tls_context(config.tls, where)
        self.connection: Any = None
        self.reason: str | None = None  # why the last collection failed (None: it did not)
        self.problems: dict[str, str] = {}  # section -> why it was skipped in the last collection

    def password(self) -> str | None:
        """The password: ``password``, else ``password_file`` (read now), else the DSN's."""
        if self.config.password is not None:
            return self.config.password.get_secret_value()
        if self.config.password_file is not None:
            try:
                with open(self.config.password_file, encoding="utf-8") as f:
                    self._file_password = f.read(65536).rstrip("\r\n")
                    return self._file_password
            except OSError as e:
                raise PluginError(f"{_path(self.where, 'password_file')} {self.config.password_file}: "
                                  f"{e.strerror or e}") from None
        return self._dsn_password

    def secrets(self) -> list[str]:
        out = [p for p in (self._dsn_password, self._file_password) if p]
        if self.config.password is not None:
            out.append(self.config.password.get_secret_value())
        return out


Reader = Callable[[Any, Target], Awaitable[Any]]
Point = tuple[Mapping[str, AttributeValue], float]


def column(section: str, value: str, attributes: Mapping[str, str] | None = None, scale: float = 1.0,
           const: tuple[tuple[str, AttributeValue], ...] = ()) -> Callable[[Sample], list[Point]]:
    """A table row's reader: one point per row of ``section`` (a list of dicts) with ``value``'s
    column (times ``scale``) and attributes from columns (attribute -> column); NULLs are skipped."""
    key = tuple((attributes or {}).items())

    def read(s: Sample) -> list[Point]:
        rows = s.rows(section, key, const)
        if scale == 1.0:
            return [(attrs, float(v)) for row, attrs in rows if (v := row.get(value)) is not None]
        return [(attrs, float(v) * scale) for row, attrs in rows if (v := row.get(value)) is not None]

    return read


def columns(section: str, attribute: str, values: Mapping[str, str], attributes: Mapping[str, str] | None = None,
            scale: float = 1.0) -> Callable[[Sample], list[Point]]:
    """Like ``column``, several columns into one metric told apart by ``attribute`` (its value ->
    the column): pg_stat_user_tables' n_live_tup and n_dead_tup as ``state`` live and dead."""
    readers = [column(section, c, attributes, scale, ((attribute, v),)) for v, c in values.items()]

    def read(s: Sample) -> list[Point]:
        return [p for r in readers for p in r(s)]

    return read


def build(specs: Sequence[MetricSpec[Sample]], sample: Sample,
          on_error: Callable[[str, BaseException], None]) -> list[Metric]:
    """One sample's Metrics, row by row of the table; a row that raises is reported to
    ``on_error`` and skipped (its points are not half kept). The points' attributes are complete
    (``Sample.base`` included) and shared, not copied."""
    out: list[Metric] = []
    for spec in specs:
        try:
            points = spec.read(sample)
            if not isinstance(points, list):
                points = list(points)
        except Exception as exc:  # one broken row must not lose the others
            on_error(spec.name, exc)
            continue
        name, kind, unit, description = spec.name, spec.kind, spec.unit, spec.description
        out += [Metric(name, kind, value, unit, description, attrs) for attrs, value in points]
    return out


def _attr(v: Any) -> AttributeValue:
    if isinstance(v, (str, bool, int, float)):
        return v
    return "" if v is None else str(v)


class DbCollector(MetricCollectorPlugin):
    """The shared collection loop of the database collectors (see the module docstring)."""

    config_model: ClassVar[type[PluginConfig]] = DbCollectorConfig
    system: ClassVar[str] = ""  # "postgresql": the metric prefix and db.system.name
    table: ClassVar[Sequence[MetricSpec[Sample]]] = ()
    default_port: ClassVar[int] = 0

    def __init__(self) -> None:
        self.config: DbCollectorConfig | None = None
        self.targets: list[Target] = []
        self.read_errors = 0
        """Sections lost since initialize (refused, failed or cut); each is also logged."""
        self._log = logging.getLogger(f"monbridge.collectors.{self.system}")
        self._limit = LogLimit()
        self._target_errors: dict[tuple[str, str], int] = {}

    # ----------------------------------------------------------------- the driver (subclasses)

    async def connect(self, target: Target, cfg: DbCollectorConfig) -> Any:
        raise NotImplementedError

    async def close(self, connection: Any) -> None:
        raise NotImplementedError

    def sections(self, cfg: DbCollectorConfig) -> Sequence[tuple[str, Reader]]:
        """The sections read each collection, in order: (name, reader(connection, target))."""
        raise NotImplementedError

    def denied(self, exc: BaseException, section: str, target: Target) -> str | None:
        """The message of a permission error naming the grant it lacks; None for any other error."""
        return None

    def refused(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the server's error answer to one query (a column an older server
        lacks, an extension not loaded), the connection still good; not a lost connection."""
        return False

    # ----------------------------------------------------------------- lifecycle

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg: DbCollectorConfig = self.parse_config(config)
        many = cfg.dsn is None
        self.targets = [Target(t, f"targets[{i}]" if many else "") for i, t in enumerate(cfg.all_targets())]
        for t in self.targets:
            if t.port is None:
                t.port = self.default_port
                t.name = t.config.name or f"{t.host}:{t.port}"
        self.config = cfg
        self.read_errors = 0
        self._target_errors = {}

    async def start(self) -> None:
        """Nothing to start: connections are opened by the first collection."""

    async def stop(self) -> None:
        await self._close_all()

    async def shutdown(self) -> None:
        await self._close_all()

    async def _close_all(self) -> None:
        await asyncio.gather(*(self._drop(t) for t in self.targets))

    async def _drop(self, target: Target) -> None:
        conn, target.connection = target.connection, None
        if conn is not None:
            try:
                await asyncio.wait_for(self.close(conn), 2.0)
            except Exception as e:  # closing a broken connection may fail: it is gone either way
                self._log.debug("%s: closing %s: %s", self.system, target.name, type(e).__name__)

    # ----------------------------------------------------------------- collecting

    async def collect_metrics(self) -> Sequence[Metric]:
        if self.config is None:
            raise PluginError(f"{self.system}: collect_metrics called before initialize")
        cfg = self.config
        results = await asyncio.gather(*(self._collect(t, cfg) for t in self.targets))
        return [m for ms in results for m in ms]

    def attributes(self, target: Target) -> dict[str, AttributeValue]:
        return {"server.address": target.host, "server.port": target.port or 0}

    async def _collect(self, target: Target, cfg: DbCollectorConfig) -> list[Metric]:
        attrs = self.attributes(target)
        sample = Sample(base=attrs)
        try:
            sample.sections = await self._read(target, cfg)
        except PluginError as e:
            self._down(target, str(e))
        except QueryTimeout as e:
            self._down(target, str(e))
        except TimeoutError:
            self._down(target, f"no answer within {cfg.connect_timeout:g} s (connect_timeout)")
        except (OSError, ssl.SSLError) as e:
            self._down(target, f"cannot connect: {e.strerror or e}" if isinstance(e, OSError) else f"TLS: {e}")
        except Exception as e:
            self._down(target, self.describe(e, target))
        else:
            if target.reason is not None:
                self._log.info("%s %s: up again", self.system, target.name)
            target.reason = None
        up = Metric(f"{self.system}.up", MetricKind.GAUGE, 0.0 if target.reason else 1.0, "1",
                    "1 if the last collection from the server succeeded, else 0", attrs)
        errors = [Metric(f"{self.system}.collector.errors", MetricKind.COUNTER, float(n), "{error}",
                         "Sections of a collection lost (refused, failed or cut) since the collector started",
                         {**attrs, "section": name}) for name, n in sorted(self._errors_of(target).items())]
        if target.reason is not None:
            return [up, *errors]
        metrics = build(self.table, sample, lambda name, exc: self._row_failed(target, name, exc))
        return [*metrics, up, *errors]

    def describe(self, exc: BaseException, target: Target) -> str:
        """One line saying why the target could not be read (no stack trace, no secret)."""
        return f"{type(exc).__name__}: {exc}"

    async def _read(self, target: Target, cfg: DbCollectorConfig) -> dict[str, Any]:
        if target.connection is None:
            target.connection = await asyncio.wait_for(self.connect(target, cfg), cfg.connect_timeout)
        out: dict[str, Any] = {}
        problems: dict[str, str] = {}
        try:
            for name, reader in self.sections(cfg):
                try:
                    async with asyncio.timeout(cfg.query_timeout):  # no task a query, as wait_for makes
                        out[name] = await reader(target.connection, target)
                except TimeoutError:
                    self._count(target, name)
                    raise QueryTimeout(f"query {name!r} did not finish within {cfg.query_timeout:g} s "
                                       "(query_timeout): cut") from None
                except Exception as e:
                    why = self.denied(e, name, target)
                    if why is None and self.refused(e):
                        why = self.describe(e, target)
                    if why is None:
                        raise
                    self._count(target, name)
                    problems[name] = why
                    self._warn(target, f"{name}: {why}")
        except BaseException:
            await self._drop(target)
            raise
        target.problems = problems
        return out

    # ----------------------------------------------------------------- reporting

    def _errors_of(self, target: Target) -> dict[str, int]:
        return {section: n for (where, section), n in self._target_errors.items() if where == target.where}

    def _count(self, target: Target, section: str) -> None:
        key = (target.where, section)
        self._target_errors[key] = self._target_errors.get(key, 0) + 1
        self.read_errors += 1

    def _warn(self, target: Target, message: str) -> None:
        text = self._redact(target, message)
        if self._limit.due(f"{target.where}:{text}"):
            self._log.warning("%s %s: %s", self.system, target.name, text)

    def _redact(self, target: Target, text: str) -> str:
        for s in target.secrets():
            text = text.replace(s, "<secret>")
        return redact_text(text)[:500]

    def _down(self, target: Target, reason: str) -> None:
        reason = self._redact(target, reason)
        if reason != target.reason:
            self._log.warning("%s %s: down: %s", self.system, target.name, reason)
        target.reason = reason

    def _row_failed(self, target: Target, name: str, exc: BaseException) -> None:
        self._count(target, f"metric {name}")
        self._warn(target, f"metric {name} skipped: {type(exc).__name__}: {exc}")

    @property
    def reasons(self) -> dict[str, str]:
        """Why each target that is down is down, by target name."""
        return {t.name: t.reason for t in self.targets if t.reason}

    async def test_report(self) -> Sequence[str]:
        lines = []
        for t in self.targets:
            state = f"down: {t.reason}" if t.reason else "up"
            lines.append(f"{t.name}: {state}")
            lines += [f"{t.name}: {section} skipped: {why}" for section, why in t.problems.items()]
        return lines
