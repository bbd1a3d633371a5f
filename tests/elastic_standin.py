"""A stand-in for Elasticsearch (its 9.x behaviour, as documented for the APIs the export uses),
on aiohttp, for tests: no Elasticsearch server can run here.

What it keeps of Elasticsearch:

* ``GET /`` (the client's info) and every answer carrying ``X-Elastic-Product: Elasticsearch``,
  which the official client checks;
* ``PUT``/``GET``/``HEAD`` ``/_component_template/<name>`` and ``/_index_template/<name>``
  (HEAD: 200 or 404, as ``exists_*`` reads it);
* ``POST /_bulk``: NDJSON ``create`` operations; a write to a data stream that does not exist
  creates it from the matching index template of highest priority (no ``data_stream`` in it, or
  no template: the item fails as Elasticsearch fails it); each document is checked against the
  template's mappings (its component templates' and its own), the ``dynamic_templates`` the
  operation names (an unknown name fails the item with 400) and ``path_match`` dynamic templates;
  a value that the field's type cannot take, or a field mapped earlier with another type, fails
  the item with 400 ``document_parsing_exception``; in ``time_series`` mode a document without
  ``@timestamp``, with one outside the writable range (now - 2h to now + 30m) or without any
  routing-path field fails (400), and a second document with the
  same dimensions and timestamp gets 409 (the time series ``_id``); the answer's ``errors`` flag
  and per-item statuses are as Elasticsearch gives them (with a ``filter_path``, each item keeps
  only ``status`` and ``error``: the paths the export asks for).

Faults a test injects: ``standin.item_429`` (the next N items answered 429
``es_rejected_execution_exception``), ``standin.request_status`` (the next N bulk requests
answered with this status as a whole), ``standin.hostile`` (the next bulk requests, one mode
each, answered with ``hostile_bytes`` of JSON no Elasticsearch sends and nothing indexed:
``large`` with its ``Content-Length``, ``chunked`` without one, ``gzip`` a gzip bomb that
inflates to that much from a few kB); an outage is the server stopped (``StandInServer.stop``)
and started again on its port.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import ipaddress
import json
import time
from typing import Any

from aiohttp import web

PRODUCT = {"X-Elastic-Product": "Elasticsearch"}
VERSION = "9.1.0"


def _resp(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers=PRODUCT)


def _flatten(doc: dict[str, Any], prefix: str, out: dict[str, Any], leaf_types: dict[str, str]) -> None:
    for k, v in doc.items():
        path = prefix + k
        if isinstance(v, dict) and leaf_types.get(path) != "histogram" and not _looks_histogram(v):
            _flatten(v, path + ".", out, leaf_types)
        else:
            out[path] = v


def _looks_histogram(v: dict[str, Any]) -> bool:
    return set(v) == {"values", "counts"}


def _props(properties: dict[str, Any], prefix: str, out: dict[str, dict[str, Any]]) -> None:
    for k, m in properties.items():
        if "properties" in m:
            _props(m["properties"], prefix + k + ".", out)
        else:
            out[prefix + k] = m


def check_value(typ: str, v: Any) -> str | None:
    """Why Elasticsearch would refuse ``v`` for a field of type ``typ`` (None: it takes it)."""
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    if typ in ("double", "float", "scaled_float"):
        return None if num else f"failed to parse field of type [{typ}]: {v!r}"
    if typ == "long":
        return None if isinstance(v, int) and not isinstance(v, bool) else f"failed to parse [long]: {v!r}"
    if typ in ("keyword", "constant_keyword", "match_only_text", "wildcard"):
        return None if isinstance(v, (str, int, float, bool)) else f"failed to parse [{typ}]: {v!r}"
    if typ == "ip":
        try:
            ipaddress.ip_address(v)
            return None
        except (ValueError, TypeError):
            return f"'{v}' is not an IP string literal"
    if typ in ("date", "date_nanos"):
        return None if num or isinstance(v, str) else f"failed to parse date field [{v!r}]"
    if typ == "histogram":
        if not (isinstance(v, dict) and isinstance(v.get("values"), list) and isinstance(v.get("counts"), list)):
            return "histogram needs [values] and [counts]"
        vals, counts = v["values"], v["counts"]
        if len(vals) != len(counts):
            return "expected same length from [values] and [counts]"
        if any(b <= a for a, b in zip(vals, vals[1:], strict=False)):
            return "[values] must be in increasing order"
        if any(not isinstance(c, int) or c < 0 for c in counts):
            return "[counts] elements must be non-negative integers"
        return None
    if typ == "boolean":
        return None if isinstance(v, bool) else "failed to parse boolean"
    return f"type [{typ}] not known to the stand-in"


class ElasticStandIn:
    """The stand-in's state (templates, data streams with their documents and learnt field
    mappings) and its aiohttp application (``make_app``)."""

    def __init__(self) -> None:
        self.component_templates: dict[str, dict[str, Any]] = {}
        self.index_templates: dict[str, dict[str, Any]] = {}
        self.streams: dict[str, dict[str, Any]] = {}  # name -> {"template", "fields", "docs", "ids"}
        self.item_429 = 0
        self.request_status: tuple[int, int] | None = None  # (status, how many requests)
        self.bulk_requests = 0
        self.refused: list[tuple[str, int, dict[str, Any]]] = []  # (index, status, error) of failed items but 429s, 409s
        self.conflicts = 0  # 409s: a time series document that exists already
        #: A time series data stream takes documents from now - look_back to now + look_ahead
        #: (``index.look_back_time`` 2h and ``index.look_ahead_time`` 30m by default).
        self.look_back_s = 7200.0
        self.look_ahead_s = 1800.0
        self.headers_seen: list[dict[str, str]] = []
        self.hostile: list[str] = []
        self.hostile_bytes = 4 << 20

    def make_app(self) -> web.Application:
        """A new aiohttp application on this state (one per start of a server)."""
        app = web.Application(client_max_size=200 << 20)
        r = app.router
        r.add_get("/", self.info)
        r.add_route("*", "/_component_template/{name}", self.component)
        r.add_route("*", "/_index_template/{name}", self.index_template)
        r.add_post("/_bulk", self.bulk)
        r.add_put("/_bulk", self.bulk)
        return app

    def docs(self, stream: str) -> list[dict[str, Any]]:
        return self.streams[stream]["docs"] if stream in self.streams else []

    async def info(self, request: web.Request) -> web.Response:
        return _resp({"name": "standin", "cluster_name": "standin", "version": {"number": VERSION},
                      "tagline": "You Know, for Search"})

    async def _templates(self, request: web.Request, store: dict[str, dict[str, Any]], key: str) -> web.Response:
        name = request.match_info["name"]
        self.headers_seen.append(dict(request.headers))
        if request.method == "HEAD":
            return web.Response(status=200 if name in store else 404, headers=PRODUCT)
        if request.method == "GET":
            if name not in store:
                return _resp({"error": {"type": "resource_not_found_exception"}, "status": 404}, 404)
            return _resp({key: [{"name": name, key[:-1]: store[name]}]})
        if request.method in ("PUT", "POST"):
            store[name] = await request.json()
            return _resp({"acknowledged": True})
        return _resp({"error": "method"}, 405)

    async def component(self, request: web.Request) -> web.Response:
        return await self._templates(request, self.component_templates, "component_templates")

    async def index_template(self, request: web.Request) -> web.Response:
        return await self._templates(request, self.index_templates, "index_templates")

    def _resolve(self, index: str) -> dict[str, Any] | None:
        best = None
        for t in self.index_templates.values():
            if any(fnmatch.fnmatchcase(index, p) for p in t.get("index_patterns", ())):
                if best is None or t.get("priority", 0) > best.get("priority", 0):
                    best = t
        if best is None:
            return None
        mappings: dict[str, Any] = {"fields": {}, "dynamic": [], "settings": {}}
        parts = [self.component_templates.get(c, {}).get("template", {}) for c in best.get("composed_of", ())]
        parts.append(best.get("template", {}))
        for p in parts:
            m = p.get("mappings", {})
            _props(m.get("properties", {}), "", mappings["fields"])
            mappings["dynamic"] += m.get("dynamic_templates", [])
            mappings["settings"].update(p.get("settings", {}))
        mappings["data_stream"] = "data_stream" in best
        return mappings

    def _stream(self, index: str) -> dict[str, Any] | str:
        s = self.streams.get(index)
        if s is None:
            t = self._resolve(index)
            if t is None or not t["data_stream"]:
                return f"no data stream template matches [{index}]"
            s = self.streams[index] = {"template": t, "fields": dict(t["fields"]), "docs": [], "ids": set()}
        return s

    def _index_one(self, action: dict[str, Any], doc: Any) -> tuple[int, dict[str, Any] | None]:
        index = action.get("_index")
        if not isinstance(index, str) or not isinstance(doc, dict):
            return 400, {"type": "illegal_argument_exception", "reason": "bad operation"}
        s = self._stream(index)
        if isinstance(s, str):
            return 400, {"type": "index_not_found_exception", "reason": s}
        t = s["template"]
        named = action.get("dynamic_templates") or {}
        by_name = {next(iter(d)): next(iter(d.values())) for d in t["dynamic"]}
        for path, name in named.items():
            if name not in by_name:
                return 400, {"type": "document_parsing_exception",
                             "reason": f"Can't find dynamic template for dynamic template name [{name}] of field [{path}]"}
        leaf_types = {p: m["type"] for p, m in s["fields"].items()}
        leaf_types.update({p: by_name[n]["mapping"]["type"] for p, n in named.items()})
        flat: dict[str, Any] = {}
        _flatten(doc, "", flat, leaf_types)
        new_fields: dict[str, dict[str, Any]] = {}
        for path, v in flat.items():
            mapping = s["fields"].get(path) or new_fields.get(path)
            if mapping is None and path in named:
                mapping = by_name[named[path]]["mapping"]
            if mapping is None:
                for d in t["dynamic"]:
                    spec = next(iter(d.values()))
                    if "path_match" in spec and fnmatch.fnmatchcase(path, spec["path_match"]):
                        mapping = spec["mapping"]
                        break
            if mapping is None:
                mapping = {"type": "long" if isinstance(v, int) and not isinstance(v, bool) else
                           "double" if isinstance(v, float) else "boolean" if isinstance(v, bool) else "keyword"}
            for other in list(s["fields"]) + list(new_fields):
                if other.startswith(path + ".") or path.startswith(other + "."):
                    return 400, {"type": "document_parsing_exception",
                                 "reason": f"field [{path}] conflicts with the object or value [{other}]"}
            if path in named and path in s["fields"] and s["fields"][path]["type"] != mapping["type"]:
                return 400, {"type": "document_parsing_exception", "reason": f"field [{path}] mapped as another type"}
            why = check_value(mapping["type"], v)
            if why is not None:
                return 400, {"type": "document_parsing_exception", "reason": f"[{path}] {why}"}
            if mapping["type"] == "keyword" and mapping.get("time_series_dimension") and len(str(v).encode()) > 1024:
                return 400, {"type": "document_parsing_exception", "reason": f"dimension [{path}] is too long"}
            if path not in s["fields"]:
                new_fields[path] = dict(mapping)
        settings = t["settings"]
        if settings.get("index.mode") == "time_series":
            if "@timestamp" not in flat:
                return 400, {"type": "document_parsing_exception",
                             "reason": "data stream timestamp field [@timestamp] is missing"}
            ts = flat["@timestamp"]
            ms = ts if isinstance(ts, (int, float)) else None
            now_ms = time.time() * 1000
            if ms is not None and not now_ms - self.look_back_s * 1000 <= ms <= now_ms + self.look_ahead_s * 1000:
                return 400, {"type": "illegal_argument_exception",
                             "reason": f"the document timestamp [{ts}] is outside of ranges of currently writable "
                                       f"indices [{index}]"}
            routing = settings.get("index.routing_path", [])
            if not any(fnmatch.fnmatchcase(p, r) for p in flat for r in routing):
                return 400, {"type": "illegal_argument_exception",
                             "reason": "Error extracting routing: source didn't contain any routing fields"}
            fields = {**s["fields"], **new_fields}
            dims = sorted((p, str(v)) for p, v in flat.items() if fields.get(p, {}).get("time_series_dimension"))
            _id = hashlib.sha256(json.dumps([dims, flat["@timestamp"]]).encode()).hexdigest()
            if _id in s["ids"]:
                return 409, {"type": "version_conflict_engine_exception",
                             "reason": f"[{_id[:20]}]: version conflict, document already exists"}
            s["ids"].add(_id)
        s["fields"].update(new_fields)
        s["docs"].append(doc)
        return 201, None

    async def bulk(self, request: web.Request) -> web.Response:
        self.headers_seen.append(dict(request.headers))
        self.bulk_requests += 1
        if self.request_status is not None and self.request_status[1] > 0:
            status, n = self.request_status
            self.request_status = (status, n - 1)
            return _resp({"error": {"type": "es_rejected_execution_exception", "reason": "rejected"},
                          "status": status}, status)
        if self.hostile:
            return await self._hostile(request, self.hostile.pop(0))
        body = await request.read()
        lines = [ln for ln in body.split(b"\n") if ln.strip()]
        items: list[dict[str, Any]] = []
        errors = False
        for i in range(0, len(lines) - 1, 2):
            op = json.loads(lines[i])
            kind, action = next(iter(op.items()))
            if self.item_429 > 0:
                self.item_429 -= 1
                items.append({kind: {"_index": action.get("_index"), "status": 429, "error": {
                    "type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}})
                errors = True
                continue
            if kind != "create":
                items.append({kind: {"status": 400, "error": {"type": "illegal_argument_exception",
                                                              "reason": "only create operations go to data streams"}}})
                errors = True
                continue
            status, err = self._index_one(action, json.loads(lines[i + 1]))
            item: dict[str, Any] = {"_index": action.get("_index"), "status": status}
            if err is not None:
                item["error"] = err
                errors = True
                if status == 409:
                    self.conflicts += 1
                else:
                    self.refused.append((str(action.get("_index")), status, err))
            items.append({kind: item})
        if "filter_path" in request.query:  # the paths the export asks for: status and error of each item
            items = [{k: {f: v[f] for f in ("status", "error") if f in v}} for it in items for k, v in it.items()]
            return _resp({"errors": errors, "items": items})
        return _resp({"took": 1, "errors": errors, "items": items})


    async def _hostile(self, request: web.Request, mode: str) -> web.StreamResponse:
        await request.read()
        pad = self.hostile_bytes
        head, tail = b'{"errors":false,"items":[],"pad":"', b'"}'
        if mode == "large":
            return web.Response(body=head + b"x" * pad + tail, content_type="application/json", headers=PRODUCT)
        if mode == "gzip":
            bomb = gzip.compress(head + b"0" * pad + tail, 9)
            return web.Response(body=bomb, headers={**PRODUCT, "Content-Type": "application/json",
                                                    "Content-Encoding": "gzip"})
        assert mode == "chunked", mode
        resp = web.StreamResponse(headers={**PRODUCT, "Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(head)
        chunk = b"x" * (64 << 10)
        try:
            for _ in range(pad // len(chunk)):
                await resp.write(chunk)
            await resp.write(tail)
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client stopped reading
        return resp


class StandInServer:
    """The stand-in served on a loopback port from a thread with its own event loop; ``stop()``
    and ``start()`` again on the same port make an outage."""

    def __init__(self, port: int) -> None:
        import asyncio
        import threading

        self.es = ElasticStandIn()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self.start()

    def _call(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        async def go() -> web.AppRunner:
            runner = web.AppRunner(self.es.make_app(), handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
            return runner

        self._runner = self._call(go())

    def stop(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
            self._runner = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
