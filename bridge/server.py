"""The HTTP server (aiohttp): ``/metrics``, ``/-/healthy``, ``/-/ready``, ``/-/reload``, ``/api/v1/plugins``.

``/metrics`` negotiates Prometheus text 0.0.4 or OpenMetrics 1.0 by ``Accept`` and gzip by
``Accept-Encoding``; rendering and compression run in a worker thread, never on the event
loop. TLS and authentication (basic, bearer token) apply to every path but the two probes.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.config import ServerConfig, parse_listen
from bridge.exposition import choose_format, render
from bridge.logs import redact_text

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["HttpServer"]

log = logging.getLogger("monbridge.server")

_OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _wants_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding`` admits gzip (``gzip`` or ``*`` with a non-zero q)."""
    for part in (header or "").split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().replace(" ", "")
            try:
                return not (q.startswith("q=") and float(q[2:]) == 0)
            except ValueError:
                return True
    return False


class HttpServer:
    def __init__(self, runtime: Runtime, config: ServerConfig) -> None:
        self.runtime = runtime
        self.config = config
        self._runner: web.AppRunner | None = None
        self.bound: tuple[str, int] | None = None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_middleware])
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/-/healthy", self.healthy)
        app.router.add_get("/-/ready", self.ready)
        app.router.add_post("/-/reload", self.reload)
        app.router.add_get("/api/v1/plugins", self.plugins)
        app.router.add_get("/", self.index)
        from bridge.alerting.http import add_alert_routes

        add_alert_routes(app, self.runtime)
        return app

    async def start(self) -> None:
        host, port = parse_listen(self.config.listen)
        ssl_ctx = None
        if self.config.tls is not None:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(str(self.config.tls.cert_file), str(self.config.tls.key_file))
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_ctx, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise OSError(e.errno, f"cannot listen on {self.config.listen} (server.listen or --listen): "
                                   f"{e.strerror}") from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound = sockets[0].getsockname()[:2] if sockets else (host, port)
        scheme = "https" if ssl_ctx else "http"
        log.info("listening on %s://%s:%s (/metrics, /-/healthy, /-/ready, /api/v1/plugins)", scheme, *self.bound)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ auth

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = self.config.auth
        if auth is None or request.path in _OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if auth.bearer_token is not None and header.startswith("Bearer "):
            if hmac.compare_digest(header[7:].encode(), auth.bearer_token.get_secret_value().encode()):
                return await handler(request)
        if auth.basic is not None and header.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                user, pw = "", ""
            ok_user = hmac.compare_digest(user.encode(), auth.basic.username.encode())
            ok_pw = hmac.compare_digest(pw.encode(), auth.basic.password.get_secret_value().encode())
            if ok_user and ok_pw:
                return await handler(request)
        challenge = 'Basic realm="monbridge"' if auth.basic is not None else 'Bearer realm="monbridge"'
        return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": challenge})

    # ------------------------------------------------------------------ handlers

    async def metrics(self, request: web.Request) -> web.Response:
        rt = self.runtime
        rt.supervisor.refresh_self_metrics()
        openmetrics, ctype = choose_format(request.headers.get("Accept"))
        gz = _wants_gzip(request.headers.get("Accept-Encoding"))
        families = rt.pipeline.families()
        attrs = dict(rt.pipeline.resource.attributes)

        def work() -> bytes:
            body = render(families, attrs, openmetrics)
            return gzip.compress(body, compresslevel=1) if gz else body

        body = await asyncio.get_running_loop().run_in_executor(None, work)
        headers = {"Content-Type": ctype}
        if gz:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="monbridge is Healthy.\n")

    async def ready(self, request: web.Request) -> web.Response:
        sup = self.runtime.supervisor
        if sup.ready():
            return web.Response(text="monbridge is Ready.\n")
        waiting = [f"{r['plugin_id']}: {r['state']}" + (", first run pending" if r["state"] == "running" else "")
                   for r in sup.statuses() if r["state"] != "running" or (r["runs"] == 0 and r["interval_seconds"])]
        return web.Response(status=503, text="monbridge is not ready; plugins not running:\n  " + "\n  ".join(waiting) + "\n")

    async def reload(self, request: web.Request) -> web.Response:
        ok, message = await self.runtime.reload()
        return web.json_response({"status": "success" if ok else "error", "message": redact_text(message)},
                                 status=200 if ok else 400)

    async def plugins(self, request: web.Request) -> web.Response:
        data: list[dict[str, Any]] = []
        for st in self.runtime.plugin_statuses():
            if st.get("last_error"):
                st["last_error"] = redact_text(st["last_error"])
            data.append(st)
        return web.json_response({"status": "success", "data": data})

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="monbridge: /metrics /-/healthy /-/ready /api/v1/plugins\n")
