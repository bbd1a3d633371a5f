"""The component runtime: hosts the dashboard components and serves them and the web UI.

* ``GET /api/v1/components``: every component (the built-ins and those of the enabled
  ``DashboardComponentPlugin``s): id, plugin, type, title, description, data schema, refresh.
* ``GET /api/v1/components/{id}/data?from=&to=&step=&…``: the component's ``get_data`` with the
  request's parameters (``from``, ``to`` and ``step`` checked and bounded first, see
  ``bridge.dashboard.query``; they reach the component as numbers). 400 names the parameter at
  fault, 404 an unknown component, 504 a component that did not answer within
  ``CALL_TIMEOUT_S``, 500 one that failed (logged).
* ``POST /api/v1/components/{id}/events``: ``{"type": "...", "payload": {...}}`` (at most
  ``EVENT_LIMITS``) to the component's ``handle_event``; 400 for a refused event, 404 for an
  unknown component or an object the event names (an alert), 409 for a transition the alert
  lifecycle does not allow.
* ``/ui/``: the web dashboard (static files inside the package); ``/`` redirects to it.

Answers are ``{"status": "success", "data": ...}`` or ``{"status": "error", "error": "..."}``.
A component's answer is encoded to JSON in a worker thread. Refused requests and failed calls
are counted in ``monbridge_dashboard_requests_refused_total{reason}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from array import array
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.alerting.store import IllegalAlertTransition
from bridge.api import ComponentEvent, DashboardComponentPlugin, Metric, MetricKind
from bridge.dashboard.components import BUILTIN_COMPONENTS, DashboardContext, DashboardContextHook
from bridge.dashboard.query import QueryError, parse_window
from bridge.httpbody import BodyError, BodyLimits, read_json
from bridge.logs import redact_text

__all__ = ["CALL_TIMEOUT_S", "EVENT_LIMITS", "UI_DIR", "ComponentHost"]

log = logging.getLogger("monbridge.dashboard")

CALL_TIMEOUT_S = 10.0
EVENT_LIMITS = BodyLimits(max_bytes=64 << 10, max_depth=8)
UI_DIR = Path(__file__).parent / "ui"
SOURCE = "monbridge.dashboard"
REASONS = ("bad_request", "not_found", "conflict", "body", "timeout", "error")
_LOG_EVERY_S = 60.0


def _ok(data: Any) -> web.Response:
    return web.json_response({"status": "success", "data": data})


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"status": "error", "error": message}, status=status)


_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode


_MEMO_MAX = 1 << 16
_INFINITIES = (math.inf, -math.inf)


class _FloatText:
    """Arrays of doubles as JSON lists, NaN and infinities as null (JSON has none).

    Shortest decimal text (``float.__repr__``) is most of a large answer's cost, and the values of
    a window repeat (a steady gauge, an idle counter, ``up``): each distinct value is formatted
    once an answer (at most ``_MEMO_MAX`` of them). While repeats are rare (under a third of an
    array's values), arrays go whole to the C encoder instead, whose NaN, Infinity and -Infinity
    (in a list of numbers nothing else) become null."""

    def __init__(self) -> None:
        self.memo: dict[float, str] = {}
        self.memoize = True

    def __call__(self, values: array[float]) -> str:
        if not self.memoize:
            text = _dumps(values.tolist())
            if "N" in text or "I" in text:
                text = text.replace("-Infinity", "null").replace("Infinity", "null").replace("NaN", "null")
            return text
        memo = self.memo
        get = memo.get
        parts = []
        misses = 0
        for v in values.tolist():
            t = get(v)
            if t is None:
                misses += 1
                if v != v:
                    t = "null"  # each NaN is another object: never found, so not kept
                else:
                    t = "null" if v in _INFINITIES else repr(v)
                    if len(memo) < _MEMO_MAX:
                        memo[v] = t
            parts.append(t)
        if misses * 3 > 2 * len(values) and len(values) >= 16:
            self.memoize = False
        return "[" + ",".join(parts) + "]"


def _to_json(v: Any, out: list[str], floats: _FloatText) -> None:
    """``v`` as JSON text into ``out``: dicts and lists walked, ``array('d')`` leaves by ``floats``,
    other leaves by the C encoder (a float NaN or infinity as null)."""
    if isinstance(v, dict):
        out.append("{")
        for i, (k, x) in enumerate(v.items()):
            out.append(("," if i else "") + _dumps(str(k)) + ":")
            _to_json(x, out, floats)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _to_json(x, out, floats)
        out.append("]")
    elif isinstance(v, array):
        out.append(floats(v))
    elif isinstance(v, float) and not math.isfinite(v):
        out.append("null")
    else:
        out.append(_dumps(v))


def _encode(data: Any) -> bytes:
    out: list[str] = ['{"status":"success","data":']
    _to_json(data, out, _FloatText())
    out.append("}")
    return "".join(out).encode()


class ComponentHost:
    """The components by id: the built-ins (replaced by an enabled plugin of the same id) and the
    running ``DashboardComponentPlugin``s, given by ``plugins()``."""

    def __init__(self, ctx: DashboardContext,
                 plugins: Callable[[], list[tuple[str, DashboardComponentPlugin]]] = lambda: []) -> None:
        self.ctx = ctx
        self._plugins = plugins
        self._builtins: dict[str, DashboardComponentPlugin] = {}
        for cls in BUILTIN_COMPONENTS:
            c = cls()
            self._builtins[c.plugin_id] = c
        self._attached: set[int] = set()
        self.refused: Counter[str] = Counter({r: 0 for r in REASONS})
        self._logged: dict[str, float] = {}
        self._sampler: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ components

    def components(self) -> dict[str, tuple[str, DashboardComponentPlugin]]:
        """component id -> (plugin id, component), built-ins first, then plugins in config order."""
        out: dict[str, tuple[str, DashboardComponentPlugin]] = {pid: (pid, c) for pid, c in self._builtins.items()}
        for pid, p in self._plugins():
            if pid in out:
                del out[pid]  # the configured instance of a built-in takes the default's place
            try:
                cid = p.get_component_definition().id
            except Exception as e:  # noqa: BLE001 - a plugin's failure stays with it
                self._log("error", f"{pid}: get_component_definition failed: {type(e).__name__}: {e}")
                continue
            out[cid] = (pid, p)
        for _pid, c in out.values():
            if id(c) not in self._attached and isinstance(c, DashboardContextHook):
                self._attached.add(id(c))
                c.attach(self.ctx)
        return out

    # ------------------------------------------------------------------ history sampling

    async def start(self) -> None:
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample_loop(), name="dashboard:history")

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            try:
                await self._sampler
            except asyncio.CancelledError:
                pass
            self._sampler = None
        for c in self._builtins.values():
            await c.shutdown()

    async def sample_once(self) -> None:
        """One row of history: the pipeline's batch now (self-metrics refreshed first)."""
        ctx = self.ctx
        ctx.refresh()
        ctx.pipeline.record(SOURCE, self.self_metrics())
        batch = ctx.pipeline.batch()
        await asyncio.to_thread(ctx.history.sample, batch.families(), ctx.clock())

    async def _sample_loop(self) -> None:
        res = self.ctx.history.resolution
        while True:
            try:
                await self.sample_once()
            except Exception:  # the next round tries again
                log.exception("dashboard history: sampling failed")
            await asyncio.sleep(res - (time.time() % res))

    def self_metrics(self) -> list[Metric]:
        return [*self.ctx.history.self_metrics(), *(
            Metric("monbridge.dashboard.requests.refused", MetricKind.COUNTER, n, "",
                   "dashboard API requests refused or failed, by reason", {"reason": r})
            for r, n in sorted(self.refused.items()))]

    # ------------------------------------------------------------------ HTTP

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/components", self.list_components)
        r.add_get("/api/v1/components/{id}/data", self.data)
        r.add_post("/api/v1/components/{id}/events", self.event)
        r.add_get("/ui", self.ui_redirect)
        r.add_get("/ui/", self.ui_index)
        r.add_static("/ui/static/", UI_DIR, show_index=False, follow_symlinks=False)

    def _count(self, reason: str, message: str) -> None:
        self.refused[reason] += 1
        self.ctx.pipeline.record(SOURCE, self.self_metrics())
        self._log(reason, message)

    def _log(self, reason: str, message: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[reason] = now
            log.warning("dashboard API: %s (counted in monbridge_dashboard_requests_refused_total{reason=%r}; "
                        "logged at most once a minute a reason)", redact_text(message), reason)

    def _refuse(self, request: web.Request, reason: str, status: int, message: str) -> web.Response:
        self._count(reason, f"{request.method} {request.path}: {message}")
        return _error(redact_text(message), status)

    async def list_components(self, request: web.Request) -> web.Response:
        out = []
        for cid, (pid, c) in self.components().items():
            try:
                d = c.get_component_definition()
            except Exception as e:  # noqa: BLE001
                self._log("error", f"{pid}: get_component_definition failed: {type(e).__name__}: {e}")
                continue
            schema = dict(d.params_schema)
            out.append({"id": cid, "plugin_id": pid, "type": d.kind, "title": d.name, "description": d.description,
                        "schema": schema, "refresh_seconds": schema.get("refresh_seconds", 15.0)})
        return _ok(out)

    def _find(self, request: web.Request) -> tuple[str, DashboardComponentPlugin] | web.Response:
        cid = request.match_info["id"]
        found = self.components().get(cid)
        if found is None:
            return self._refuse(request, "not_found", 404, f"no component {cid[:200]!r} (see GET /api/v1/components)")
        return found

    async def data(self, request: web.Request) -> web.StreamResponse:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        pid, comp = found
        params: dict[str, Any] = {}
        for k, v in request.query.items():
            if k in params:
                return self._refuse(request, "bad_request", 400, f"{k[:100]}: given more than once")
            params[k] = v
        try:
            h = self.ctx.history
            w = parse_window(params, self.ctx.clock(), h.resolution, h.default_range)
        except QueryError as e:
            return self._refuse(request, "bad_request", 400, str(e))
        params.update({"from": w.start, "to": w.end, "step": w.step})
        try:
            data = await asyncio.wait_for(comp.get_data(params), CALL_TIMEOUT_S)
        except QueryError as e:
            return self._refuse(request, "bad_request", 400, str(e))
        except TimeoutError:
            return self._refuse(request, "timeout", 504, f"{pid}: get_data did not answer within {CALL_TIMEOUT_S}s")
        except Exception as e:  # noqa: BLE001 - a component's failure stays with it
            log.exception("%s: get_data failed", pid)
            return self._refuse(request, "error", 500, f"{pid}: get_data failed: {type(e).__name__}: {e}")
        body = await asyncio.to_thread(_encode, data)
        return web.Response(body=body, content_type="application/json")

    async def event(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        pid, comp = found
        cid = request.match_info["id"]
        try:
            doc = await read_json(request, EVENT_LIMITS, _event_from)
        except BodyError as e:
            self._count("body", f"{request.method} {request.path}: {e.message}")
            return e.response({"status": "error", "error": e.message})
        try:
            await asyncio.wait_for(comp.handle_event(ComponentEvent(cid, doc[0], doc[1])), CALL_TIMEOUT_S)
        except LookupError as e:
            return self._refuse(request, "not_found", 404, str(e.args[0] if e.args else e))
        except IllegalAlertTransition as e:
            return self._refuse(request, "conflict", 409, str(e))
        except ValueError as e:
            return self._refuse(request, "bad_request", 400, str(e))
        except TimeoutError:
            return self._refuse(request, "timeout", 504, f"{pid}: handle_event did not answer within {CALL_TIMEOUT_S}s")
        except Exception as e:  # noqa: BLE001
            log.exception("%s: handle_event failed", pid)
            return self._refuse(request, "error", 500, f"{pid}: handle_event failed: {type(e).__name__}: {e}")
        return _ok({"component": cid, "type": doc[0]})

    async def ui_redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.path + "/")

    async def ui_index(self, request: web.Request) -> web.Response:
        return web.Response(body=(UI_DIR / "index.html").read_bytes(), content_type="text/html",
                            headers={"Cache-Control": "no-cache"})


def _event_from(doc: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(doc, dict):
        raise BodyError(400, "invalid", "body: expected a JSON object {\"type\": ..., \"payload\": {...}}")
    t = doc.get("type")
    if not isinstance(t, str) or not t or len(t) > 100:
        raise BodyError(400, "invalid", "type: expected the event's type, a string of 1 to 100 characters")
    payload = doc.get("payload", {})
    if not isinstance(payload, dict):
        raise BodyError(400, "invalid", "payload: expected a JSON object")
    return t, payload
