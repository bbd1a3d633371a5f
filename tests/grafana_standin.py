"""A stand-in for Grafana's HTTP API (as documented at grafana.com/docs/grafana/latest/developers/
http_api/: folder, dashboard and annotations APIs), on aiohttp, for tests: no Grafana server can
run here.

What it keeps of Grafana:

* every route needs ``Authorization: Bearer <token>`` (else 401 ``{"message": "Unauthorized"}``);
* ``GET /api/folders/:uid`` (200 the folder, 404 ``Folder not found``), ``POST /api/folders``
  (``{uid, title}``; 409 when the uid exists);
* ``GET /api/dashboards/uid/:uid`` (200 ``{dashboard, meta: {folderUid, version}}``, 404),
  ``POST /api/dashboards/db`` (``{dashboard, folderUid, overwrite, message}``): a dashboard is
  stored with an ``id`` and a ``version`` that grows by one a save; without ``overwrite``, a
  save whose ``version`` is not the stored one is refused with 412 ``version-mismatch``, one
  whose uid exists without an id 412 ``name-exists`` is not modelled (uids only); a
  ``folderUid`` that does not exist is 400 ``folder not found``; the answer is
  ``{id, uid, url, status: "success", version, slug}``; each save is kept in ``history``;
* ``POST /api/annotations`` (``{time, timeEnd?, tags, text, dashboardUID?}`` → ``{message, id}``;
  400 without ``text``), ``PATCH /api/annotations/:id`` (the fields given replaced; 404 for an
  unknown id), ``GET /api/annotations`` (every annotation, newest first).

Faults a test injects: ``standin.faults``, a list of (method and path prefix, status, body or
bytes, headers) the next matching requests are answered with, once each, before Grafana's
behaviour.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class GrafanaStandIn:
    def __init__(self, token: str = "glsa_test_token") -> None:
        self.token = token
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> {"dashboard", "folderUid"}
        self.history: list[dict[str, Any]] = []  # every dashboard save request
        self.annotations: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.faults: list[tuple[str, int, Any, dict[str, str]]] = []
        self._ids = 0
        self.app = web.Application(middlewares=[self._middleware])
        r = self.app.router
        r.add_get("/api/folders/{uid}", self.get_folder)
        r.add_post("/api/folders", self.create_folder)
        r.add_get("/api/dashboards/uid/{uid}", self.get_dashboard)
        r.add_post("/api/dashboards/db", self.save_dashboard)
        r.add_post("/api/annotations", self.create_annotation)
        r.add_patch("/api/annotations/{id}", self.patch_annotation)
        r.add_get("/api/annotations", self.list_annotations)

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        for i, (prefix, status, body, headers) in enumerate(self.faults):
            if f"{request.method} {request.path}".startswith(prefix):
                del self.faults[i]
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                return web.Response(status=status, body=data, headers=headers, content_type="application/json")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"message": "Unauthorized"}, status=401)
        return await handler(request)

    async def get_folder(self, request: web.Request) -> web.Response:
        folder = self.folders.get(request.match_info["uid"])
        if folder is None:
            return web.json_response({"message": "Folder not found", "status": "not-found"}, status=404)
        return web.json_response(folder)

    async def create_folder(self, request: web.Request) -> web.Response:
        body = await request.json()
        uid = body.get("uid") or f"f{self._next_id()}"
        if uid in self.folders:
            return web.json_response({"message": "a folder with the same uid already exists"}, status=409)
        self.folders[uid] = {"id": self._next_id(), "uid": uid, "title": body["title"], "version": 1}
        return web.json_response(self.folders[uid])

    async def get_dashboard(self, request: web.Request) -> web.Response:
        stored = self.dashboards.get(request.match_info["uid"])
        if stored is None:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        d = stored["dashboard"]
        return web.json_response({"dashboard": d, "meta": {"folderUid": stored["folderUid"], "version": d["version"],
                                                           "slug": d["title"].lower().replace(" ", "-")}})

    async def save_dashboard(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.history.append(body)
        d = dict(body["dashboard"])
        folder = body.get("folderUid", "")
        if folder and folder not in self.folders:
            return web.json_response({"message": "folder not found", "status": "not-found"}, status=400)
        uid = d.get("uid") or f"d{self._next_id()}"
        stored = self.dashboards.get(uid)
        if stored is not None and not body.get("overwrite") and d.get("version") != stored["dashboard"]["version"]:
            return web.json_response({"message": "The dashboard has been changed by someone else",
                                      "status": "version-mismatch"}, status=412)
        d["uid"] = uid
        d["id"] = stored["dashboard"]["id"] if stored else self._next_id()
        d["version"] = stored["dashboard"]["version"] + 1 if stored else 1
        self.dashboards[uid] = {"dashboard": d, "folderUid": folder}
        return web.json_response({"id": d["id"], "uid": uid, "url": f"/d/{uid}/x", "status": "success",
                                  "version": d["version"], "slug": "x"})

    async def create_annotation(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("text"):
            return web.json_response({"message": "Failed to save annotation: text is required"}, status=400)
        ident = self._next_id()
        self.annotations[ident] = {"id": ident, "time": body.get("time"), "timeEnd": body.get("timeEnd", body.get("time")),
                                   "tags": body.get("tags", []), "text": body["text"],
                                   "dashboardUID": body.get("dashboardUID", "")}
        return web.json_response({"message": "Annotation added", "id": ident})

    async def patch_annotation(self, request: web.Request) -> web.Response:
        try:
            a = self.annotations[int(request.match_info["id"])]
        except (KeyError, ValueError):
            return web.json_response({"message": "Could not find annotation to update"}, status=404)
        body = await request.json()
        for k in ("time", "timeEnd", "tags", "text"):
            if k in body:
                a[k] = body[k]
        return web.json_response({"message": "Annotation patched"})

    async def list_annotations(self, request: web.Request) -> web.Response:
        return web.json_response(sorted(self.annotations.values(), key=lambda a: -a["time"]))
