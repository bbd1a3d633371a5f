"""``monitoring.alerts.servicenow``: one ServiceNow incident per alert group (Table API), two-way.

The group's fingerprint goes into the incident's ``correlation_id`` (the field meant for an
outside system's id), which finds the incident again:
``GET /api/now/table/incident?sysparm_query=correlation_id=<fp>^active=true``. A firing group
without an open incident creates one (``POST /api/now/table/incident``); a later notification
adds work notes (``PATCH``); a resolved group sets ``state`` to resolved with a close code and
notes. The last notification applied is remembered per incident, so a restart does not apply
one twice. Every ``poll_interval`` seconds the open incidents are read back: one that was
resolved or closed in ServiceNow acknowledges its firing alerts in monbridge.

Config::

    instance: "https://example.service-now.com"
    username: monbridge
    password: "${SNOW_PASSWORD}"       # secret (basic auth)
    assignment_group: "Network"        # optional
    poll_interval: 60
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SecretStr

from bridge.api import PluginConfig, PluginMetadata, PluginType
from bridge.helpers import cancel_and_wait
from bridge.notifiers import (
    BaseUrl,
    HttpNotifier,
    Notification,
    NotifierConfig,
    TicketState,
    close_ticket_alerts,
    group_fingerprint,
    poll_tickets,
    ticket_text,
)

if TYPE_CHECKING:
    from bridge.notifiers import AlertContext

__all__ = ["ServiceNowConfig", "ServiceNowNotifier"]

PLUGIN_ID = "monitoring.alerts.servicenow"
TABLE = "/api/now/table/incident"
RESOLVED_STATES = ("6", "7", "8")  # Resolved, Closed, Canceled


class ServiceNowConfig(NotifierConfig):
    instance: BaseUrl = Field(description="https://<instance>.service-now.com")
    username: str
    password: SecretStr
    assignment_group: str | None = None
    caller_id: str | None = None
    urgency: dict[str, str] = Field(default_factory=lambda: {"critical": "1", "warning": "2"},
                                    description="severity -> urgency (1 high, 2 medium, 3 low; default 3)")
    resolved_state: str = "6"
    close_code: str = Field(default="Solved (Permanently)", description="close_code set when resolving")
    poll_interval: float = Field(default=60.0, gt=0, description="seconds between reading open incidents back")


class ServiceNowNotifier(HttpNotifier):
    config_model: ClassVar[type[PluginConfig]] = ServiceNowConfig
    plugin_id = PLUGIN_ID

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN_ID, "ServiceNow", "0.1.0", "monbridge",
                              "one ServiceNow incident per alert group; closing it acknowledges the alerts",
                              PluginType.ALERT_PROCESSOR)

    async def setup(self) -> None:
        await super().setup()
        self.state = TicketState(None)
        self.ctx: AlertContext | None = None
        self._poller: asyncio.Task[None] | None = None

    def attach(self, ctx: AlertContext) -> None:
        self.ctx = ctx
        self.state = TicketState(ctx.engine.state_path("servicenow.json"))
        self._poller = asyncio.create_task(poll_tickets("servicenow", lambda: self.config.poll_interval, self.poll),
                                           name=f"{PLUGIN_ID}:poll")

    def _auth(self) -> tuple[str, str]:
        return self.config.username, self.config.password.get_secret_value()

    async def _call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        _, out = await self.client.request("servicenow", method, self.config.instance + path, json_body=body,
                                           basic_auth=self._auth(), params=params, headers={"Accept": "application/json"})
        return (out or {}).get("result") if isinstance(out, dict) else None

    async def _find(self, fp: str) -> dict[str, Any] | None:
        known = self.state.get(fp)
        if known:
            return known
        found = await self._call("GET", TABLE, params={"sysparm_query": f"correlation_id={fp}^active=true",
                                                       "sysparm_fields": "sys_id,number,state", "sysparm_limit": "1"})
        if found:
            return self.state.put(fp, sys_id=found[0]["sys_id"], number=found[0].get("number", ""), last_key="")
        return None

    async def send(self, notification: Notification) -> None:
        cfg: ServiceNowConfig = self.config
        fp = group_fingerprint(PLUGIN_ID, notification.group_key)
        incident = await self._find(fp)
        resolved = notification.status == "resolved"
        alert_ids = [a.id for a in notification.alerts]
        if incident is None:
            if resolved:
                return
            severity = min((a.severity for a in notification.alerts), key=lambda s: cfg.urgency.get(s, "3"))
            body: dict[str, Any] = {
                "short_description": notification.title()[:160],
                "description": "\n".join(ticket_text(notification)),
                "correlation_id": fp,
                "correlation_display": "monbridge",
                "urgency": cfg.urgency.get(severity, "3"),
                "impact": cfg.urgency.get(severity, "3"),
            }
            if cfg.assignment_group:
                body["assignment_group"] = cfg.assignment_group
            if cfg.caller_id:
                body["caller_id"] = cfg.caller_id
            created = await self._call("POST", TABLE, body)
            self.state.put(fp, sys_id=created["sys_id"], number=created.get("number", ""), last_key=notification.key,
                           alert_ids=alert_ids)
            return
        if incident.get("last_key") == notification.key:
            return
        update: dict[str, Any] = {"work_notes": "\n".join(ticket_text(notification))}
        if resolved:
            update.update({"state": cfg.resolved_state, "close_code": cfg.close_code,
                           "close_notes": f"Resolved in monbridge: {notification.title()}"})
        await self._call("PATCH", f"{TABLE}/{incident['sys_id']}", update)
        if resolved:
            self.state.drop(fp)
        else:
            self.state.put(fp, last_key=notification.key, alert_ids=alert_ids)

    async def poll(self) -> None:
        """Read open incidents back; a resolved or closed one acknowledges its firing alerts."""
        if self.ctx is None:
            return
        for fp, entry in list(self.state.tickets.items()):
            doc = await self._call("GET", f"{TABLE}/{entry['sys_id']}", params={"sysparm_fields": "state,number"})
            if not doc or str(doc.get("state")) not in RESOLVED_STATES:
                continue
            close_ticket_alerts(self.ctx.engine, entry.get("alert_ids", []), "acknowledge",
                                f"servicenow:{entry.get('number') or entry['sys_id']}")
            self.state.drop(fp)

    async def shutdown(self) -> None:
        await cancel_and_wait(self._poller)
        await super().shutdown()
