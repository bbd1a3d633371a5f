"""The alerting HTTP API (under the server's TLS and authentication).

* ``GET /api/v1/alerts``: current (firing and acknowledged) alerts; ``?state=firing|acknowledged|
  resolved`` one state, ``?state=all`` every alert still remembered (the last 1000 resolved)
* ``GET /api/v1/alerts/history`` (``?alert_id=``, ``?limit=``): transitions, oldest first
* ``POST /api/v1/alerts/{id}/ack``, ``POST /api/v1/alerts/{id}/resolve``
* ``POST /api/v1/alerts/alertmanager``: Alertmanager's webhook (payload version 4) as a receiver
* ``GET /api/v1/silences``, ``POST /api/v1/silences``, ``DELETE /api/v1/silences/{id}``

Answers are ``{"status": "success", "data": ...}`` or ``{"status": "error", "error": "..."}``
with 400 naming the request field at fault, 404 for an unknown id, 409 for a transition the
lifecycle does not allow, 413 for a body over a limit (named in the error) and 415 for a
``Content-Encoding`` other than gzip, deflate, br, zstd or identity. Bodies are read with
``bridge.httpbody`` (bounded size before and after decompression, bounded JSON depth); a
webhook takes at most ``MAX_WEBHOOK_ALERTS`` alerts in ``WEBHOOK_LIMITS.max_bytes``, far above
what an Alertmanager alert storm sends (10,000 alerts are about 2.6 MB), and is parsed in a
worker thread and applied as one batch (``AlertEngine.report``). Every refused request is
counted in ``monbridge_alerting_requests_refused_total{route, reason}`` and logged.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.alerting.model import alert_to_json, parse_rfc3339
from bridge.alerting.silences import Silence
from bridge.alerting.store import IllegalAlertTransition, UnknownAlert
from bridge.api import Alert, AlertState
from bridge.httpbody import BodyError, BodyLimits, read_json

if TYPE_CHECKING:
    from bridge.alerting.engine import AlertEngine

__all__ = ["API_LIMITS", "MAX_WEBHOOK_ALERTS", "WEBHOOK_LIMITS", "Webhook", "add_alert_routes", "alerts_from_webhook",
           "silence_from_request", "webhook_from_request"]

log = logging.getLogger("monbridge.alerting.http")

RECEIVER = "monitoring.alerts.receiver.alertmanager"

#: An Alertmanager webhook: 16 MiB (decompressed and as sent), at most 50,000 alerts.
WEBHOOK_LIMITS = BodyLimits(max_bytes=16 << 20, max_depth=16)
MAX_WEBHOOK_ALERTS = 50_000
#: Every other request body of the alerting API (a silence).
API_LIMITS = BodyLimits(max_bytes=1 << 20, max_depth=16)


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"status": "success", "data": data}, status=status)


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"status": "error", "error": message}, status=status)


def _who(request: web.Request) -> str:
    return request.headers.get("X-Monbridge-User", "").strip()[:100] or "api"


def alerts_from_webhook(doc: Any) -> list[Alert]:
    """The alerts of an Alertmanager webhook payload (version 4); ValueError names the field at fault."""
    if not isinstance(doc, Mapping):
        raise ValueError("body: expected a JSON object (Alertmanager webhook payload version 4)")
    version = doc.get("version")
    if version != "4":
        raise ValueError(f"version: expected \"4\", got {json.dumps(version)}")
    raw = doc.get("alerts")
    if not isinstance(raw, list):
        raise ValueError("alerts: expected a list")
    if len(raw) > MAX_WEBHOOK_ALERTS:
        raise BodyError(413, "too_many_alerts",
                        f"alerts: {len(raw)} alerts is more than the limit of {MAX_WEBHOOK_ALERTS} per request")
    out = []
    for i, a in enumerate(raw):
        where = f"alerts[{i}]"
        if not isinstance(a, Mapping):
            raise ValueError(f"{where}: expected an object")
        labels = a.get("labels")
        if not isinstance(labels, Mapping) or not labels:
            raise ValueError(f"{where}.labels: expected a non-empty object of strings")
        annotations = a.get("annotations") or {}
        if not isinstance(annotations, Mapping):
            raise ValueError(f"{where}.annotations: expected an object of strings")
        for field, d in (("labels", labels), ("annotations", annotations)):
            for k, v in d.items():
                if not isinstance(v, str):
                    raise ValueError(f"{where}.{field}.{k}: expected a string")
        status = a.get("status")
        if status not in ("firing", "resolved"):
            raise ValueError(f"{where}.status: expected \"firing\" or \"resolved\"")
        if a.get("fingerprint") is not None and not isinstance(a["fingerprint"], str):
            raise ValueError(f"{where}.fingerprint: expected a string")
        starts = parse_rfc3339(a.get("startsAt"), f"{where}.startsAt")
        ends = parse_rfc3339(a.get("endsAt"), f"{where}.endsAt")
        name = str(labels.get("alertname", "")) or "unnamed"
        alert = Alert(id="", name=name, severity=str(labels.get("severity", "")),
                      state=AlertState.RESOLVED if status == "resolved" else AlertState.FIRING,
                      labels={str(k): str(v) for k, v in labels.items()},
                      annotations={str(k): str(v) for k, v in annotations.items()},
                      fingerprint=str(a.get("fingerprint") or ""), ends_at=ends)
        if starts is not None:
            alert.starts_at = starts
        out.append(alert)
    return out


@dataclass(frozen=True)
class Webhook:
    receiver: str
    alerts: list[Alert]


def webhook_from_request(doc: Any) -> Webhook:
    """The webhook route's reading of a parsed body: BodyError (400 naming the field, or 413) or a Webhook."""
    try:
        alerts = alerts_from_webhook(doc)
        receiver = doc.get("receiver")
        if receiver is not None and not isinstance(receiver, str):
            raise ValueError("receiver: expected a string")
    except BodyError:
        raise
    except ValueError as e:
        raise BodyError(400, "invalid", str(e)) from None
    return Webhook(receiver or "alertmanager", alerts)


def silence_from_request(doc: Any, now: float) -> Silence:
    """The silences route's reading of a parsed body: BodyError (400 naming the field) or a Silence."""
    try:
        return Silence.from_request(doc, now)
    except ValueError as e:
        raise BodyError(400, "invalid", str(e)) from None


def add_alert_routes(app: web.Application, engine: AlertEngine) -> None:
    """The alert and silence API of ``engine`` on ``app`` (the runtime adds it to its server)."""
    api = _AlertApi(engine)
    r = app.router
    r.add_get("/api/v1/alerts", api.list_alerts)
    r.add_get("/api/v1/alerts/history", api.history)
    r.add_post("/api/v1/alerts/alertmanager", api.alertmanager_webhook)
    r.add_post("/api/v1/alerts/{id}/ack", api.ack)
    r.add_post("/api/v1/alerts/{id}/resolve", api.resolve)
    r.add_get("/api/v1/silences", api.list_silences)
    r.add_post("/api/v1/silences", api.add_silence)
    r.add_delete("/api/v1/silences/{id}", api.expire_silence)


class _AlertApi:
    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine

    def _refused(self, request: web.Request, route: str, e: BodyError) -> web.Response:
        counts: Counter[tuple[str, str]] = self.engine.refused_requests
        counts[(route, e.reason)] += 1
        log.warning("%s %s from %s refused (%d): %s", request.method, request.path, request.remote or "?",
                    e.status, e.message)
        return e.response({"status": "error", "error": e.message})

    async def list_alerts(self, request: web.Request) -> web.Response:
        state = request.query.get("state", "active")
        if state not in ("active", "all", *(s.value for s in AlertState)):
            return _error("state: expected one of active (the default), firing, acknowledged, resolved, all")
        if state == "active":
            alerts = sorted(self.engine.store.active_alerts(), key=lambda a: (a.starts_at, a.id))
        else:
            alerts = self.engine.store.query(None if state == "all" else AlertState(state))
        out = []
        for a in alerts:
            d = alert_to_json(a)
            muted = self.engine.muted(a) if a.state is not AlertState.RESOLVED else None
            d["muted_by"] = muted
            out.append(d)
        return _ok(out)

    async def history(self, request: web.Request) -> web.Response:
        limit_raw = request.query.get("limit")
        try:
            limit = int(limit_raw) if limit_raw else None
            if limit is not None and limit <= 0:
                raise ValueError
        except ValueError:
            return _error("limit: expected a positive integer")
        ts = self.engine.store.transitions(request.query.get("alert_id"), limit)
        return _ok([t.to_json() for t in ts])

    async def _transition(self, request: web.Request, to: AlertState) -> web.Response:
        alert_id = request.match_info["id"]
        who = _who(request)
        try:
            if to is AlertState.ACKNOWLEDGED:
                alert = self.engine.acknowledge(alert_id, who)
            else:
                alert = self.engine.resolve(alert_id, who)
        except UnknownAlert as e:
            return _error(str(e), 404)
        except IllegalAlertTransition as e:
            return _error(str(e), 409)
        await self.engine.store.flush()  # answered once it is on disk
        return _ok(alert_to_json(alert))

    async def ack(self, request: web.Request) -> web.Response:
        return await self._transition(request, AlertState.ACKNOWLEDGED)

    async def resolve(self, request: web.Request) -> web.Response:
        return await self._transition(request, AlertState.RESOLVED)

    async def alertmanager_webhook(self, request: web.Request) -> web.Response:
        try:
            hook: Webhook = await read_json(request, WEBHOOK_LIMITS, webhook_from_request)
        except BodyError as e:
            return self._refused(request, "alertmanager", e)
        fired, resolved = await self.engine.report(hook.alerts, f"alertmanager:{hook.receiver}")
        return _ok({"firing": fired, "resolved": resolved})

    async def list_silences(self, request: web.Request) -> web.Response:
        now = self.engine.clock()
        return _ok([s.to_json(now) for s in self.engine.silences.all()])

    async def add_silence(self, request: web.Request) -> web.Response:
        now = self.engine.clock()
        try:
            s: Silence = await read_json(request, API_LIMITS, lambda doc: silence_from_request(doc, now))
        except BodyError as e:
            return self._refused(request, "silences", e)
        if not s.created_by:
            s.created_by = _who(request)
        self.engine.silences.add(s)
        return _ok({"silenceID": s.id, **s.to_json(self.engine.clock())}, 200)

    async def expire_silence(self, request: web.Request) -> web.Response:
        try:
            s = self.engine.silences.expire(request.match_info["id"])
        except KeyError as e:
            return _error(str(e.args[0]), 404)
        return _ok(s.to_json(self.engine.clock()))
