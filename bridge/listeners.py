"""TLS and authentication of a listener, the same for every one: the HTTP server's and a
plugin's own (the OTLP receivers): ``tls_context`` loads a server certificate (errors name the
config path and the file), ``authorized`` checks an ``Authorization`` header against a bearer
token or basic credentials in constant time, ``auth_challenge`` is a 401's ``WWW-Authenticate``;
``ConnectionGuard`` closes an HTTP connection that sends no request in time (slowloris, idle);
``HttpListener`` is a plugin's own aiohttp listener with both.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.config import AuthConfig, TLSConfig, parse_listen

__all__ = ["ConnectionGuard", "HttpListener", "auth_challenge", "authorized", "tls_context"]


def tls_context(tls: TLSConfig | None, where: str) -> ssl.SSLContext | None:
    """A server TLS context for ``tls`` (None without it); OSError naming ``where`` (the config
    path, e.g. ``server.tls``) and the file when a file cannot be read or loaded."""
    if tls is None:
        return None
    for key, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if not os.access(path, os.R_OK):
            why = "no such file" if not path.exists() else "not readable"
            raise OSError(f"{where}.{key}: cannot read {path}: {why}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (ssl.SSLError, OSError) as e:
        raise OSError(f"{where}: cannot load the certificate {tls.cert_file} with the key {tls.key_file}: "
                      f"{getattr(e, 'reason', None) or e}") from None
    return ctx


def authorized(auth: AuthConfig, header: str) -> bool:
    """Whether an ``Authorization`` header value carries ``auth``'s bearer token or basic
    credentials (compared in constant time)."""
    if auth.bearer_token is not None and header.startswith("Bearer "):
        if hmac.compare_digest(header[7:].encode(), auth.bearer_token.get_secret_value().encode()):
            return True
    if auth.basic is not None and header.startswith("Basic "):
        try:
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            user, pw = "", ""
        ok_user = hmac.compare_digest(user.encode(), auth.basic.username.encode())
        ok_pw = hmac.compare_digest(pw.encode(), auth.basic.password.get_secret_value().encode())
        if ok_user and ok_pw:
            return True
    return False


def auth_challenge(auth: AuthConfig) -> str:
    """The ``WWW-Authenticate`` value a 401 for ``auth`` carries."""
    return 'Basic realm="monbridge"' if auth.basic is not None else 'Bearer realm="monbridge"'


class ConnectionGuard:
    """An aiohttp listener's guard against slowloris and idle connections: a connection gets
    ``read_timeout`` seconds to send a request (its headers complete) after it connects or was
    answered, else it is closed. ``on_silent()`` is called for a connection closed before it sent
    any request (to count and log it as refused); one idle after its answers is closed as
    keep-alive connections are. Wrap the runner's protocol factory with :meth:`connections` and
    each request handler with :meth:`handler`; :meth:`close` when the listener stops."""

    def __init__(self, read_timeout: float, on_silent: Callable[[], None]) -> None:
        self.read_timeout = read_timeout
        self.on_silent = on_silent
        self._waiting: dict[Any, asyncio.TimerHandle] = {}
        self._open = True

    def connections(self, factory: Callable[[], Any]) -> Callable[[], Any]:
        """``factory`` (an ``AppRunner``'s ``server``) with each new connection's timer started."""

        def connection() -> Any:
            protocol = factory()
            self._wait(protocol, first=True)
            return protocol

        return connection

    def handler(self, handle: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        """``handle`` with its connection's timer stopped while it answers, restarted after."""

        async def guarded(request: Any) -> Any:
            protocol = request.protocol
            timer = self._waiting.pop(protocol, None)
            if timer is not None:
                timer.cancel()
            try:
                return await handle(request)
            finally:
                if self._open:
                    self._wait(protocol, first=False)

        return guarded

    def close(self) -> None:
        self._open = False
        for timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()

    def _wait(self, protocol: Any, first: bool) -> None:
        loop = asyncio.get_running_loop()
        self._waiting[protocol] = loop.call_later(self.read_timeout, self._expire, protocol, first)

    def _expire(self, protocol: Any, first: bool) -> None:
        self._waiting.pop(protocol, None)
        transport = getattr(protocol, "transport", None)
        if transport is None or transport.is_closing():
            return
        if first:
            self.on_silent()
        transport.close()


class HttpListener:
    """A plugin's own aiohttp listener (the OTLP/HTTP receiver's, the Datadog intake's): no access
    log, request bodies left as sent (``auto_decompress=False``: read with ``receive_body``,
    decompressed with ``inflate`` in a worker thread), TLS when given, and a
    :class:`ConnectionGuard` (``guard``; wrap each handler with ``guard.handler``)."""

    def __init__(self, read_timeout: float, on_silent: Callable[[], None]) -> None:
        self.guard = ConnectionGuard(read_timeout, on_silent)
        self.bound: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._runner: Any = None

    async def start(self, app: Any, listen: str, ssl_ctx: ssl.SSLContext | None) -> tuple[str, int]:
        """Serve the ``aiohttp.web.Application`` ``app`` on ``listen`` (``HOST:PORT``); the address
        bound. OSError when it cannot bind (nothing is left running then)."""
        from aiohttp import web

        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
        await self._runner.setup()
        host, port = parse_listen(listen)
        try:
            self._server = await asyncio.get_running_loop().create_server(
                self.guard.connections(self._runner.server), host, port, ssl=ssl_ctx, reuse_address=True)
        except OSError:
            await self.stop()
            raise
        sockets = self._server.sockets or ()
        self.bound = sockets[0].getsockname()[:2] if sockets else (host, port)
        return self.bound

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
        self.guard.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
