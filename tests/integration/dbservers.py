"""Real database servers for the database collectors' tests and benchmark: Debian's PostgreSQL,
MariaDB and Redis, each started in a fresh temporary directory on a free loopback port.

A missing program is a failure, never a skip (``.ci/test`` installs them). PostgreSQL refuses to
run as root: under root its files belong to ``nobody`` and its programs run as that user. Every
server is stopped and its directory removed by ``stop()``; ``log()`` is its log, shown when a
start fails.

Also the tests' helpers for a collector's output: ``collect`` (a collector's metrics after
``times`` collections), ``points``/``one`` (a metric's points with given attributes),
``section_lost`` (a target up without one section) and ``no_tracebacks_or`` (the captured log
has no stack trace and none of the secrets).
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bridge.api import Metric

START_TIMEOUT = 60.0
SUPERUSER_PASSWORD = "s3cret-superuser"  # the superuser's (postgres, root, default) password in every server


async def collect(cls: Any, config: dict[str, Any], times: int = 1) -> tuple[Any, list[Metric]]:
    """A new collector of class ``cls`` with ``config``, and its metrics of the last of ``times`` collections."""
    c = cls()
    await c.initialize(config)
    try:
        metrics: Sequence[Metric] = []
        for _ in range(times):
            metrics = await c.collect_metrics()
        return c, list(metrics)
    finally:
        await c.shutdown()


def points(metrics: Sequence[Metric], name: str, **attrs: Any) -> list[Metric]:
    return [m for m in metrics if m.name == name and all(m.attributes.get(k) == v for k, v in attrs.items())]


def one(metrics: Sequence[Metric], name: str, **attrs: Any) -> float:
    """The value of the one point of ``name`` with ``attrs`` (fails unless there is exactly one)."""
    found = points(metrics, name, **attrs)
    assert len(found) == 1, f"{name} {attrs}: {found}"
    value = found[0].value
    assert isinstance(value, float)
    return value


def section_lost(collector: Any, metrics: Sequence[Metric], section: str, lost: set[str], kept: set[str],
                 times: int) -> str:
    """Checks that the one target is up with ``section`` lost in each of ``times`` collections,
    none of ``lost`` emitted and all of ``kept``; returns why the section was lost."""
    system = collector.system
    names = {m.name for m in metrics}
    assert one(metrics, f"{system}.up") == 1.0 and collector.reasons == {}
    assert not names & lost and kept <= names, (names & lost, kept - names)
    assert one(metrics, f"{system}.collector.errors", section=section) == times
    why: str = collector.targets[0].problems[section]
    return why


def no_tracebacks_or(records: Sequence[Any], *secrets: str) -> None:
    """No log record has a stack trace or any of ``secrets``."""
    for record in records:
        assert record.exc_info is None, record.getMessage()
        for s in secrets:
            assert s not in record.getMessage()


S = TypeVar("S", bound="_Server")


def primary_and_replica(primary: Callable[[], S], replica: Callable[[S], S],
                        setup: Callable[[S, S], Awaitable[None]]) -> Iterator[tuple[S, S]]:
    """A module fixture's body: a primary, a replica of it, then ``setup(primary, replica)``;
    a server missing or failing to start fails the tests (never skips); both stop at the end."""
    import pytest

    started: list[S] = []
    try:
        started.append(primary())
        started.append(replica(started[0]))
        asyncio.run(setup(started[0], started[1]))
        yield started[0], started[1]
    except (ServerMissing, ServerFailed) as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        for s in reversed(started):
            s.stop()


class ServerMissing(Exception):
    """A server's program is not installed."""


class ServerFailed(Exception):
    """A server did not start (the message ends with its log)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _program(candidates: list[str], package: str) -> str:
    for c in candidates:
        for path in sorted(glob.glob(c), reverse=True):
            if os.access(path, os.X_OK):
                return path
        found = shutil.which(c)
        if found:
            return found
    raise ServerMissing(f"{candidates[0]} not found: apt-get install {package} (or run .ci/test, which installs it)")


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerFailed(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerFailed(f"{what} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:.0f} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Server:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"monbridge-{name}-"))
        self.port = free_port()
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return _tail(self.log_path, 200)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- PostgreSQL


class Postgres(_Server):
    """A PostgreSQL cluster (initdb, pg_ctl) with pg_stat_statements preloaded and the superuser
    ``postgres`` logging in over TCP with ``SUPERUSER_PASSWORD`` (scram-sha-256)."""

    def __init__(self, primary: Postgres | None = None) -> None:
        super().__init__("pg")
        self.bin = os.path.dirname(_program(["/usr/lib/postgresql/*/bin/pg_ctl", "pg_ctl"], "postgresql"))
        self.data = self.dir / "data"
        self.as_user: dict[str, Any] = {}
        if os.geteuid() == 0:  # postgres refuses to run as root
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, 65534, 65534)
            self.as_user = {"user": "nobody", "group": 65534, "extra_groups": []}
        env = {**os.environ, "PGPASSWORD": SUPERUSER_PASSWORD}
        if primary is None:
            pwfile = self.dir / "pw"
            pwfile.write_text(SUPERUSER_PASSWORD)
            if self.as_user:
                os.chown(pwfile, 65534, 65534)
            self._run(["initdb", "-D", str(self.data), "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C",
                       "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"], env)
        else:
            self._run(["pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                       "-D", str(self.data), "-R", "-X", "stream", "--no-sync", "--checkpoint=fast"], env)
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
                   " -c shared_preload_libraries=pg_stat_statements -c fsync=off -c synchronous_commit=off"
                   " -c full_page_writes=off -c max_connections=50 -c shared_buffers=16MB -c wal_level=replica")
        self._run(["pg_ctl", "start", "-w", "-t", str(int(START_TIMEOUT)), "-D", str(self.data), "-l", str(self.log_path),
                   "-o", options], env)

    def _run(self, argv: list[str], env: dict[str, str]) -> None:
        argv = [os.path.join(self.bin, argv[0]), *argv[1:]]
        r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=START_TIMEOUT,
                           cwd=self.dir, **self.as_user)
        if r.returncode != 0:
            raise ServerFailed(f"{' '.join(argv[:2])} failed ({r.returncode}):\n{r.stdout.decode(errors='replace')}"
                               f"\n{self.log()}")

    def dsn(self, user: str = "postgres", database: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([os.path.join(self.bin, "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, cwd=self.dir,
                           **self.as_user)
        super().stop()


# --------------------------------------------------------------------------- MariaDB


class Mariadb(_Server):
    """A MariaDB server (mariadb-install-db, mariadbd) with the binary log on; ``root`` logs in
    over TCP without a password; with ``tls``, TLS too, with a self-signed certificate (``cert``)."""

    def __init__(self, server_id: int = 1, tls: bool = False) -> None:
        super().__init__("mariadb")
        install = _program(["mariadb-install-db", "mysql_install_db"], "mariadb-server")
        mariadbd = _program(["mariadbd", "/usr/sbin/mariadbd", "/usr/sbin/mysqld"], "mariadb-server")
        self.data = self.dir / "data"
        root = ["--user=root"] if os.geteuid() == 0 else []
        r = subprocess.run([install, "--no-defaults", f"--datadir={self.data}", "--auth-root-authentication-method=normal",
                            "--skip-test-db", "--skip-name-resolve", *root],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=START_TIMEOUT)
        if r.returncode != 0:
            raise ServerFailed(f"mariadb-install-db failed ({r.returncode}):\n{r.stdout.decode(errors='replace')}")
        self.socket = self.dir / "sock"
        argv = [mariadbd, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}", "--bind-address=127.0.0.1",
                f"--socket={self.socket}", f"--pid-file={self.dir / 'pid'}", f"--log-error={self.log_path}",
                "--skip-name-resolve", f"--server-id={server_id}", f"--log-bin={self.dir / 'binlog'}",
                "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--performance-schema=OFF",
                "--innodb-flush-log-at-trx-commit=0", "--skip-innodb-doublewrite", *root]
        self.cert: Path | None = None
        if tls:  # a self-signed certificate for 127.0.0.1 (tests/tls_cert.py)
            from tests.tls_cert import self_signed

            self.cert, key = self_signed(self.dir)
            argv += [f"--ssl-cert={self.cert}", f"--ssl-key={key}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "mariadbd", self.log_path)

    def dsn(self, user: str = "root") -> str:
        return f"mysql://{user}@127.0.0.1:{self.port}/"


# --------------------------------------------------------------------------- Redis


class Redis(_Server):
    """A redis-server without persistence, DEBUG enabled (a test's way to make it hang), the
    ``default`` user's password ``SUPERUSER_PASSWORD``; a replica of ``primary`` when given;
    listening with TLS only when ``tls`` (certificate, key) is given."""

    def __init__(self, primary: Redis | None = None, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__("redis")
        server = _program(["redis-server"], "redis-server")
        if tls is None:
            listen = ["--port", str(self.port)]
        else:  # TLS only, with the certificate and key given; clients need no certificate
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls[0]),
                      "--tls-key-file", str(tls[1]), "--tls-auth-clients", "no"]
        argv = [server, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--logfile", str(self.log_path), "--enable-debug-command", "yes",
                "--requirepass", SUPERUSER_PASSWORD, "--slowlog-log-slower-than", "0", "--slowlog-max-len", "128"]
        if primary is not None:
            argv += ["--replicaof", "127.0.0.1", str(primary.port), "--masterauth", SUPERUSER_PASSWORD]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "redis-server", self.log_path)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"
