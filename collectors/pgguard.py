"""A guard in front of one PostgreSQL server: the collector's asyncpg connection goes through a
loopback UNIX socket to this module, which connects to the server (TLS here, when the target
asks for it) and forwards each message the server sends only after checking its frame.

Why: asyncpg parses the server's bytes in compiled code that holds the interpreter. A message
of type 0 with a length above 2 GiB (``00 d2 1d 8c 6e …``, what a hostile or broken peer on the
port sends) makes that parser loop for ever inside one read callback: the event loop, and the
whole agent with it (``/metrics``, every other plugin, SIGTERM), stops. No timeout can end it,
since no Python code runs. The guard refuses such a frame before asyncpg sees it: a message
type PostgreSQL's protocol 3.0 does not have, a length below 4 or above ``MAX_MESSAGE_BYTES``,
and the connection is closed with the reason, which the collector reports as the target's.

What goes from asyncpg to the server is passed on as it is. The guard costs one more hop on
loopback for each query's bytes; a collection reads a few kilobytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import tempfile

__all__ = ["BACKEND_TYPES", "MAX_MESSAGE_BYTES", "PgGuard", "check_frame"]

log = logging.getLogger("monbridge.collectors.postgresql")

#: The message types a PostgreSQL server sends (protocol 3.0).
BACKEND_TYPES = frozenset(b"123ACDEGHIKNRSTVWZcdnstv")
#: The largest message forwarded (the collector's rows and a server's notices are far smaller).
MAX_MESSAGE_BYTES = 16 << 20
_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
_PORT = 5432  # the socket's name asyncpg is given: <dir>/.s.PGSQL.5432


def check_frame(head: bytes) -> str | None:
    """Why a server message's first five bytes (type, length) are refused; None when they are not."""
    kind, length = head[0], int.from_bytes(head[1:5], "big")
    if kind not in BACKEND_TYPES:
        return f"a message of type 0x{kind:02x}, which PostgreSQL does not send"
    if not 4 <= length <= MAX_MESSAGE_BYTES + 4:
        return f"a message of type {chr(kind)!r} and length {length} (4 to {MAX_MESSAGE_BYTES + 4} allowed)"
    return None


class PgGuard:
    """One connection's guard: ``await start()``, then connect asyncpg to ``host``/``port`` (a
    UNIX socket) without TLS; ``close()`` when the connection is closed. ``error`` says why the
    guard closed the connection, if it did."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> None:
        self.server_host, self.server_port = host, port
        self.tls = tls
        self.timeout = timeout
        self.error: str | None = None
        self.dir: str | None = None
        self.host, self.port = "", _PORT  # where asyncpg connects, once started
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        """Listen; OSError where no temporary directory or Unix socket can be had."""
        self.dir = self.host = tempfile.mkdtemp(prefix="monbridge-pg-")
        self._server = await asyncio.start_unix_server(self._serve, os.path.join(self.dir, f".s.PGSQL.{_PORT}"))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for w in self._writers:
            w.close()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(cwriter)
        # Not one connection only: asyncpg cancels a query it gave up on over a second one.
        where = f"{self.server_host}:{self.server_port}"
        try:
            sreader, swriter = await asyncio.wait_for(self._open(), self.timeout)
        except asyncio.CancelledError:
            cwriter.close()
            self._tasks.discard(task)
            return
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as e:
            self.error = f"cannot connect to {where}: {e}"
            cwriter.close()
            self._tasks.discard(task)
            return
        self._writers.append(swriter)
        up = asyncio.ensure_future(self._pass(creader, swriter))
        down = asyncio.ensure_future(self._check(sreader, cwriter, where))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # closed: ends as a handler the stream server does not report as failed
        finally:
            for t in (up, down):
                t.cancel()
            swriter.close()
            cwriter.close()
            self._tasks.discard(task)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.server_host, self.server_port)
        if self.tls is not None:
            writer.write(_SSL_REQUEST)
            answer = await reader.readexactly(1)
            if answer != b"S":
                writer.close()
                raise ConnectionError(f"the server does not take TLS (it answered {answer!r})")
            await writer.start_tls(self.tls, server_hostname=self.server_host)
        return reader, writer

    @staticmethod
    async def _pass(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):  # the server went: the other direction ends too
            return

    async def _check(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str) -> None:
        try:
            while True:
                head = await reader.readexactly(5)
                why = check_frame(head)
                if why is not None:
                    self.error = f"{where} sent {why}: not a PostgreSQL server, or a broken one"
                    log.warning("postgresql: %s; the connection is closed", self.error)
                    return
                writer.write(head)
                left = int.from_bytes(head[1:5], "big") - 4
                while left:
                    chunk = await reader.read(min(left, 65536))
                    if not chunk:
                        return
                    writer.write(chunk)
                    left -= len(chunk)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
