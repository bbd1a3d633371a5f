"""The HTTP server (aiohttp): ``/metrics``, ``/-/healthy``, ``/-/ready``, ``/-/reload``, ``/api/v1/plugins``.

``/metrics`` negotiates Prometheus text 0.0.4 or OpenMetrics 1.0 by ``Accept`` and gzip by
``Accept-Encoding``; rendering and compression run in a worker thread, never on the event
loop. TLS and authentication (basic, bearer token) apply to every path but the two probes.

State-changing requests (POST, PUT, PATCH, DELETE on any route: ``/-/reload``, the alert
write API, silences, the Alertmanager webhook receiver) pass one guard first, so a web page
the operator happens to open cannot forge them (CSRF, DNS rebinding). Each is refused with
403 and the reason unless all of these hold:

* its ``Host`` names this server: localhost, an IP address, the listen host, this machine's
  host name when listening on all interfaces, or a name in ``server.allowed_hosts`` (a
  rebinding page reaches the server under its own domain name);
* it comes from no web page (no ``Origin``, ``Sec-Fetch-Site`` absent or ``none``), from one
  of monbridge's own pages (same origin), or from an origin in ``server.allowed_origins``;
* a body is JSON (``Content-Type: application/json``); a request without a body (``POST
  /-/reload``, ack, resolve) may have another content type or none, but never one a web page
  can send to any site without asking first (form or ``text/plain``), not even empty;
* without ``server.auth``, its client is in ``server.unauthenticated_writes_from`` (loopback
  by default); with it, the request is authenticated like every other.

A reload switches servers without a gap: the new server is built (TLS loaded, a new listen
address bound) while the old one serves, and on the same address it shares the old listening
socket.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import logging
import socket
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.api import Metric, MetricKind
from bridge.config import ServerConfig, parse_listen
from bridge.exposition import Clash, choose_format, render
from bridge.ledger import count_loss
from bridge.listeners import ConnectionGuard, auth_challenge, authorized, tls_context
from bridge.logs import redact_text

if TYPE_CHECKING:
    from bridge.pipeline import Pipeline
    from bridge.supervisor import Supervisor

__all__ = ["HttpServer"]

log = logging.getLogger("monbridge.server")

#: The pipeline source of ``monbridge_http_requests_refused_total``.
SERVER_SOURCE = "monbridge.server"
#: The key of connections closed silent (server.read_timeout) among the runtime's refusal counts.
_SILENT = "silent_connection"
REFUSAL_REASONS = ("host", "origin", "content_type", "credentials")
_REFUSAL_LOG_EVERY_S = 60.0
_CLASH_LOG_EVERY_S = 60.0
_OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The content types a web page may send to any site without asking it first (CORS-safelisted).
_BROWSER_SIMPLE_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_json(content_type: str) -> bool:
    """``application/json`` or ``application/<something>+json`` (parameters ignored)."""
    mime = content_type.partition(";")[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _split_host(header: str) -> tuple[str, int | None] | None:
    """(host name, port) of a ``Host`` header, lower-case, without IPv6 brackets; None when malformed."""
    h = header.strip().lower()
    port: str | None
    if h.startswith("["):
        name, sep, rest = h[1:].partition("]")
        if not sep or not _is_ip(name) or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    else:
        name, sep, port_text = h.partition(":")
        port = port_text if sep else None
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        return None
    return (name, int(port) if port is not None else None) if name else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_of(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an ``Origin`` value, the default port filled in; None when malformed."""
    try:
        u = urllib.parse.urlsplit(url.strip())
        scheme = u.scheme.lower()
        return (scheme, (u.hostname or "").lower(), u.port or _DEFAULT_PORTS.get(scheme))
    except ValueError:
        return None


class RequestGuard:
    """Decides whether a state-changing request may proceed (see the module's docstring)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        listen_host = parse_listen(config.listen)[0].lower()
        names = ["localhost", listen_host, *(h.strip().lower() for h in config.allowed_hosts)]
        if listen_host in _WILDCARD_HOSTS:
            names.append(socket.gethostname().lower())
        self.hosts = frozenset(n for n in names if n and not n.startswith("*."))
        self.host_suffixes = tuple(n[1:] for n in names if n.startswith("*."))
        self.origins = frozenset(_origin_of(o) for o in config.allowed_origins)

    def host_allowed(self, name: str) -> bool:
        """Whether ``name`` (a Host header's, lower-case, without port) names this server."""
        return _is_ip(name) or name in self.hosts or name.endswith(self.host_suffixes)

    def refusal(self, request: web.Request) -> tuple[str, str] | None:
        """Why ``request`` (a state-changing one) is refused: (reason, message), or None."""
        h = request.headers
        return self.check(f"{request.method} {request.path}", request.scheme, h.get("Host", ""), h.get("Origin"),
                          h.get("Sec-Fetch-Site", ""), h.get("Content-Type"), request.body_exists, request.remote)

    def check(self, what: str, scheme: str, host: str, origin: str | None, fetch_site: str,
              ctype: str | None, body_exists: bool, remote: str | None) -> tuple[str, str] | None:
        """``refusal`` on the request's parts: ``what`` is "METHOD /path", the rest its scheme,
        headers (None: absent), whether it has a body, and its client's address."""
        name_port = _split_host(host)
        if name_port is None or not self.host_allowed(name_port[0]):
            return "host", (f"{what}: Host {host!r} is not a name of this server (server.allowed_hosts); "
                    "a page that reached it under another name (DNS rebinding) must not change its state")
        fetch_site = fetch_site.lower()
        if origin is not None or fetch_site not in ("", "none"):
            o = _origin_of(origin) if origin else None
            ours = (scheme, name_port[0], name_port[1] or _DEFAULT_PORTS.get(scheme))
            same = (o == ours and fetch_site in ("", "same-origin")
                    or o is None and not origin and fetch_site == "same-origin")
            if not same and (o is None or o not in self.origins):
                return "origin", (f"{what}: a request from another web page (Origin {origin or 'absent'}, Sec-Fetch-Site "
                        f"{fetch_site or 'absent'}) is refused; allow its origin in server.allowed_origins")
        mime = (ctype or "").partition(";")[0].strip().lower()
        if mime in _BROWSER_SIMPLE_TYPES or (body_exists and not _is_json(ctype or "")):
            return "content_type", (f"{what}: expected Content-Type: application/json, or no body (got "
                    f"{ctype or 'a body without a Content-Type'}); a web page can send form and text/plain "
                    "requests to any site, so they are never taken")
        if self.config.auth is None and not self._unauthenticated_allowed(remote):
            return "credentials", (f"{what}: a state-changing request from {remote} needs credentials: set server.auth "
                    "(bearer token or basic), or add the client's network to server.unauthenticated_writes_from")
        return None

    def _unauthenticated_allowed(self, remote: str | None) -> bool:
        try:
            addr = ipaddress.ip_address(remote or "")
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.config.unauthenticated_writes_from)


def _is_ui_asset(path: str) -> bool:
    """The dashboard's page or one of its static files (relative to the route prefix)."""
    return path in ("/ui", "/ui/") or (path.startswith("/ui/static/") and ".." not in path)


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


def _tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    return tls_context(config.tls, "server.tls")


async def _listen(host: str, port: int, listen: str) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to (as asyncio's create_server binds)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        raise OSError(f"cannot listen on {listen} (server.listen or --listen): {e.strerror or e}") from None
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
    except OSError as e:
        for sock in socks:
            sock.close()
        raise OSError(e.errno, f"cannot listen on {listen} (server.listen or --listen): {e.strerror}") from None
    return socks


@dataclass(frozen=True)
class ServerContext:
    """What a server serves, handed to it by the runtime (which wires the parts together)."""

    pipeline: Pipeline
    supervisor: Supervisor
    #: ``POST /-/reload``: (applied, message).
    reload: Callable[[], Awaitable[tuple[bool, str]]]
    #: ``/api/v1/plugins``' data.
    plugin_statuses: Callable[[], list[dict[str, Any]]]
    #: State-changing requests refused, by reason (shared by the servers a reload switches between).
    refused_requests: dict[str, int]
    #: Each adds routes of another part (the alert API) to the server's application.
    add_routes: Sequence[Callable[[web.Application], None]] = ()
    #: The web dashboard is served (``/`` redirects to ``/ui/``).
    dashboard: bool = False


class HttpServer:
    """One server for one ``server`` config: ``prepare`` builds it (TLS, listening sockets) without
    serving, ``serve`` starts answering, ``stop`` closes it; ``start`` is both."""

    def __init__(self, context: ServerContext, config: ServerConfig) -> None:
        self.context = context
        self.config = config
        self.guard = RequestGuard(config)
        #: Connections that send no request within server.read_timeout are closed (slowloris, idle).
        self.connections = ConnectionGuard(config.read_timeout, self._silent)
        self._servers: list[asyncio.AbstractServer] = []
        self._refusal_logged: dict[str, float] = {}
        self._clash_logged: dict[str, float] = {}
        self._runner: web.AppRunner | None = None
        self._ssl: ssl.SSLContext | None = None
        self._sockets: list[socket.socket] = []
        self.bound: tuple[str, int] | None = None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._connection_middleware, self._guard_middleware, self._auth_middleware])
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/-/healthy", self.healthy)
        app.router.add_get("/-/ready", self.ready)
        app.router.add_post("/-/reload", self.reload)
        app.router.add_get("/api/v1/plugins", self.plugins)
        app.router.add_get("/", self.index)
        for add in self.context.add_routes:
            add(app)
        prefix = self.config.route_prefix
        if not prefix:
            return app
        # Everything under the prefix; the probes answer at the root too (for probes that know no prefix).
        root = web.Application(middlewares=[self._connection_middleware])
        root.router.add_get("/-/healthy", self.healthy)
        root.router.add_get("/-/ready", self.ready)
        root.add_subapp(prefix, app)
        return root

    async def start(self) -> None:
        await self.prepare()
        await self.serve()

    async def prepare(self, previous: HttpServer | None = None) -> None:
        """Load TLS and get listening sockets: ``previous``'s when it listens on the same address
        (shared, so the switch has no gap), else new ones. Raises OSError saying what failed;
        nothing is left open then."""
        self._ssl = _tls_context(self.config)
        if previous is not None and previous.config.listen == self.config.listen and previous._sockets:
            self._sockets = [sock.dup() for sock in previous._sockets]
        else:
            host, port = parse_listen(self.config.listen)
            self._sockets = await _listen(host, port, self.config.listen)
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        try:
            await self._runner.setup()
        except BaseException:
            await self.stop()
            raise
        self.bound = self._sockets[0].getsockname()[:2]

    async def serve(self) -> None:
        assert self._runner is not None, "prepare() first"
        loop = asyncio.get_running_loop()
        protocols = self._runner.server
        assert protocols is not None, "set up by prepare()"
        for sock in self._sockets:
            # (as web.SockSite serves, with each connection's request timer: ConnectionGuard)
            self._servers.append(await loop.create_server(self.connections.connections(protocols), sock=sock,
                                                          ssl=self._ssl, backlog=128))
        scheme = "https" if self._ssl else "http"
        log.info("listening on %s://%s:%s (/metrics, /-/healthy, /-/ready, /api/v1/plugins)", scheme, *self.bound or ())

    async def stop(self) -> None:
        """Stop serving (requests under way get a few seconds) and close the sockets; the sockets'
        duplicates held by a successor stay open."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()  # (no new connections; the runner's cleanup below ends those open)
        self.connections.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    # ------------------------------------------------------------------ guard and auth

    @web.middleware
    async def _connection_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The connection's request timer stopped while it is answered, restarted after."""
        return await self.connections.handler(handler)(request)  # type: ignore[no-any-return]

    def _silent(self) -> None:
        counts = self.context.refused_requests  # (kept by the runtime: counts go on across reloads)
        counts[_SILENT] = counts.get(_SILENT, 0) + 1
        self.context.pipeline.record(SERVER_SOURCE + ".connections", [
            Metric("monbridge.http.silent_connections", MetricKind.COUNTER, counts[_SILENT], "{connection}",
                   "connections closed because they sent no request within server.read_timeout")])
        now = time.monotonic()
        if now - self._refusal_logged.get("read_timeout", -1e9) >= 60.0:
            self._refusal_logged["read_timeout"] = now
            log.warning("a connection sent no request within server.read_timeout (%gs) and was closed; counted in "
                        "monbridge_http_silent_connections_total, logged at most once a minute", self.config.read_timeout)

    @web.middleware
    async def _guard_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in _STATE_CHANGING:
            refused = self.guard.refusal(request)
            if refused is not None:
                self._count_refusal(*refused)
                return web.json_response({"status": "error", "error": refused[1]}, status=403)
        return await handler(request)

    def _count_refusal(self, reason: str, message: str) -> None:
        """Count in ``monbridge_http_requests_refused_total{reason}``; log at most once a minute a reason."""
        counts = self.context.refused_requests
        counts[reason] = counts.get(reason, 0) + 1
        self.context.pipeline.record(SERVER_SOURCE, [
            Metric("monbridge.http.requests.refused", MetricKind.COUNTER, counts.get(r, 0), "",
                   "state-changing HTTP requests refused (403), by reason", {"reason": r})
            for r in REFUSAL_REASONS])
        now = time.monotonic()
        last = self._refusal_logged.get(reason)
        if last is None or now - last >= _REFUSAL_LOG_EVERY_S:
            self._refusal_logged[reason] = now
            log.warning("refused: %s (counted in monbridge_http_requests_refused_total{reason=%r}; further "
                        "refusals for this reason are logged at most once a minute)", message, reason)

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = self.config.auth
        path = request.path.removeprefix(self.config.route_prefix)
        # The dashboard's page and assets hold no data (the page asks for credentials to read the API).
        if auth is None or path in _OPEN_PATHS or (request.method == "GET" and _is_ui_asset(path)):
            return await handler(request)
        if authorized(auth, request.headers.get("Authorization", "")):
            return await handler(request)
        return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": auth_challenge(auth)})

    # ------------------------------------------------------------------ handlers

    async def metrics(self, request: web.Request) -> web.Response:
        rt = self.context
        rt.supervisor.refresh_self_metrics()
        openmetrics, ctype = choose_format(request.headers.get("Accept"))
        gz = _wants_gzip(request.headers.get("Accept-Encoding"))
        families = rt.pipeline.batch().families()
        attrs = dict(rt.pipeline.resource.attributes)

        def work() -> bytes:
            body = render(families, attrs, openmetrics, self._clash)
            return gzip.compress(body, compresslevel=1) if gz else body

        body = await asyncio.get_running_loop().run_in_executor(None, work)
        headers = {"Content-Type": ctype}
        if gz:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    def _clash(self, c: Clash) -> None:
        """A family ``/metrics`` could not show as it is (``bridge.exposition``): counted when left
        out, logged at most once a minute a family."""
        what = (f"{c.series} series of {c.name} left out of /metrics: its names clash with {c.other}'s"
                if c.dropped else f"{c.name} is declared 'unknown' in OpenMetrics: its family name clashes "
                f"with {c.other}'s (its samples are kept)")
        if c.dropped:
            count_loss("exposition", "name_clash", c.series, plugin=c.source, detail=what)
        now = time.monotonic()
        if not c.dropped and now - self._clash_logged.get(c.name, -_CLASH_LOG_EVERY_S) >= _CLASH_LOG_EVERY_S:
            if len(self._clash_logged) >= 1024:
                self._clash_logged.clear()
            self._clash_logged[c.name] = now
            log.info("%s (logged at most once a minute)", what)

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="monbridge is Healthy.\n")

    async def ready(self, request: web.Request) -> web.Response:
        sup = self.context.supervisor
        if sup.ready():
            return web.Response(text="monbridge is Ready.\n")
        waiting = [f"{r['plugin_id']}: {r['state']}" + (", first run pending" if r["state"] == "running" else "")
                   for r in sup.statuses() if r["state"] != "running" or (r["runs"] == 0 and r["interval_seconds"])]
        return web.Response(status=503, text="monbridge is not ready; plugins not running:\n  " + "\n  ".join(waiting) + "\n")

    async def reload(self, request: web.Request) -> web.Response:
        ok, message = await self.context.reload()
        return web.json_response({"status": "success" if ok else "error", "message": redact_text(message)},
                                 status=200 if ok else 400)

    async def plugins(self, request: web.Request) -> web.Response:
        data: list[dict[str, Any]] = []
        for st in self.context.plugin_statuses():
            if st.get("last_error"):
                st["last_error"] = redact_text(st["last_error"])
            data.append(st)
        return web.json_response({"status": "success", "data": data})

    async def index(self, request: web.Request) -> web.Response:
        if self.context.dashboard:
            raise web.HTTPFound(self.config.route_prefix + "/ui/")
        return web.Response(text="monbridge: /metrics /-/healthy /-/ready /api/v1/plugins\n")
