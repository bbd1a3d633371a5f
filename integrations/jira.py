"""``monitoring.alerts.jira``: one Jira Cloud issue per alert group (REST API v3).

The group's fingerprint is stored in the issue twice: as the label ``monbridge-<fp>`` (so JQL
``labels = "monbridge-<fp>"`` finds the issue again, an exact field match rather than a text
search) and in the issue property ``monbridge`` with the key of the last notification applied.
A firing group without an open issue creates one (``POST /rest/api/3/issue``); a later
notification comments on it (``POST .../comment``); a resolved group comments and is
transitioned (``GET``/``POST .../transitions``, to ``resolve_transition``). A notification whose
key the property already holds is not applied twice, across restarts too.

Two-way: every ``poll_interval`` seconds the issues monbridge opened are read back
(``GET /rest/api/3/issue/<key>?fields=status``); one whose status is in the ``done`` category
(closed or resolved in Jira, by any workflow) acknowledges its alerts in monbridge, or resolves
them with ``on_close: resolve``.

Config::

    url: "https://example.atlassian.net"
    email: "bot@example.org"
    api_token: "${JIRA_API_TOKEN}"      # secret; basic auth email:api_token
    project: OPS
    issue_type: Task
    resolve_transition: Done
    on_close: acknowledge               # or resolve: what closing the issue in Jira does to its alerts
    poll_interval: 60
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, SecretStr

from bridge.api import PluginConfig, PluginMetadata, PluginType
from bridge.helpers import cancel_and_wait
from bridge.notifiers import (
    BaseUrl,
    HttpNotifier,
    Notification,
    NotifierConfig,
    PermanentDeliveryError,
    TicketState,
    close_ticket_alerts,
    group_fingerprint,
    poll_tickets,
    ticket_text,
)

if TYPE_CHECKING:
    from bridge.notifiers import AlertContext

__all__ = ["JiraConfig", "JiraNotifier", "adf"]

PLUGIN_ID = "monitoring.alerts.jira"
PROPERTY = "monbridge"


class JiraConfig(NotifierConfig):
    url: BaseUrl = Field(description="the site, https://<site>.atlassian.net")
    email: str
    api_token: SecretStr
    project: str = Field(pattern=r"^[A-Z][A-Z0-9_]+$", description="project key")
    issue_type: str = "Task"
    resolve_transition: str = Field(default="Done", description="name of the transition that resolves an issue")
    labels: list[str] = Field(default_factory=list, description="extra labels on created issues")
    on_close: Literal["acknowledge", "resolve"] = Field(
        default="acknowledge", description="what an issue closed in Jira does to its alerts in monbridge")
    poll_interval: float = Field(default=60.0, gt=0, description="seconds between reading open issues back")


def adf(lines: list[str]) -> dict[str, Any]:
    """Lines as an Atlassian Document Format document, one paragraph each."""
    return {"type": "doc", "version": 1,
            "content": [{"type": "paragraph", "content": [{"type": "text", "text": line}]} for line in lines if line]}


class JiraNotifier(HttpNotifier):
    config_model: ClassVar[type[PluginConfig]] = JiraConfig
    plugin_id = PLUGIN_ID

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN_ID, "Jira", "0.1.0", "monbridge",
                              "one Jira Cloud issue per alert group; closing it acknowledges (or resolves) the alerts",
                              PluginType.ALERT_PROCESSOR)

    async def setup(self) -> None:
        await super().setup()
        self.state = TicketState(None)
        self.ctx: AlertContext | None = None
        self._poller: asyncio.Task[None] | None = None

    def attach(self, ctx: AlertContext) -> None:
        self.ctx = ctx
        self.state = TicketState(ctx.engine.state_path("jira.json"))
        self._poller = asyncio.create_task(poll_tickets("jira", lambda: self.config.poll_interval, self.poll),
                                           name=f"{PLUGIN_ID}:poll")

    def _auth(self) -> tuple[str, str]:
        return self.config.email, self.config.api_token.get_secret_value()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        _, out = await self.client.request("jira", method, self.config.url + path, json_body=body, basic_auth=self._auth(),
                                           headers={"Accept": "application/json"})
        return out

    async def _find(self, fp: str) -> str | None:
        known = self.state.get(fp)
        if known:
            return str(known["issue"])
        jql = f'project = "{self.config.project}" AND labels = "monbridge-{fp}" AND statusCategory != Done'
        res = await self._call("POST", "/rest/api/3/search/jql", {"jql": jql, "fields": ["status"], "maxResults": 1})
        issues = (res or {}).get("issues") or []
        return str(issues[0]["key"]) if issues else None

    async def send(self, notification: Notification) -> None:
        cfg: JiraConfig = self.config
        fp = group_fingerprint(PLUGIN_ID, notification.group_key)
        key = await self._find(fp)
        resolved = notification.status == "resolved"
        alert_ids = [a.id for a in notification.alerts]
        if key is None:
            if resolved:
                return  # no open issue for a group that resolved: nothing to close
            created = await self._call("POST", "/rest/api/3/issue", {"fields": {
                "project": {"key": cfg.project},
                "issuetype": {"name": cfg.issue_type},
                "summary": notification.title()[:250],
                "description": adf(ticket_text(notification)),
                "labels": ["monbridge", f"monbridge-{fp}", *cfg.labels],
            }})
            key = str(created["key"])
            await self._call("PUT", f"/rest/api/3/issue/{key}/properties/{PROPERTY}",
                             {"fingerprint": fp, "group_key": notification.group_key, "last_notification": notification.key})
            self.state.put(fp, issue=key, last_key=notification.key, alert_ids=alert_ids)
            return
        prop = await self._property(key)
        if prop.get("last_notification") == notification.key:
            return  # applied before a restart
        await self._call("POST", f"/rest/api/3/issue/{key}/comment", {"body": adf(ticket_text(notification))})
        if resolved:
            transitions = (await self._call("GET", f"/rest/api/3/issue/{key}/transitions")) or {}
            wanted = cfg.resolve_transition.lower()
            match = [t for t in transitions.get("transitions", []) if str(t.get("name", "")).lower() == wanted]
            if not match:
                names = ", ".join(str(t.get("name")) for t in transitions.get("transitions", []))
                raise PermanentDeliveryError(f"jira: issue {key} has no transition {cfg.resolve_transition!r} "
                                             f"(resolve_transition); it has: {names or 'none'}")
            await self._call("POST", f"/rest/api/3/issue/{key}/transitions", {"transition": {"id": str(match[0]["id"])}})
        await self._call("PUT", f"/rest/api/3/issue/{key}/properties/{PROPERTY}",
                         {"fingerprint": fp, "group_key": notification.group_key, "last_notification": notification.key})
        if resolved:
            self.state.drop(fp)
        else:
            self.state.put(fp, issue=key, last_key=notification.key, alert_ids=alert_ids)

    async def poll(self) -> None:
        """Read the open issues back; one closed in Jira (status category ``done``) acknowledges
        (or, with ``on_close: resolve``, resolves) its alerts."""
        if self.ctx is None:
            return
        for fp, entry in list(self.state.tickets.items()):
            key = str(entry["issue"])
            doc = await self._call("GET", f"/rest/api/3/issue/{key}?fields=status")
            fields = (doc or {}).get("fields") if isinstance(doc, dict) else None
            status = (fields or {}).get("status") if isinstance(fields, dict) else None
            category = (status or {}).get("statusCategory") if isinstance(status, dict) else None
            if not isinstance(category, dict) or category.get("key") != "done":
                continue
            close_ticket_alerts(self.ctx.engine, entry.get("alert_ids", []), self.config.on_close, f"jira:{key}")
            self.state.drop(fp)

    async def shutdown(self) -> None:
        await cancel_and_wait(self._poller)
        await super().shutdown()

    async def _property(self, key: str) -> dict[str, Any]:
        try:
            doc = await self._call("GET", f"/rest/api/3/issue/{key}/properties/{PROPERTY}")
        except PermanentDeliveryError as e:
            if "HTTP 404" in str(e):
                return {}
            raise
        value = (doc or {}).get("value")
        return value if isinstance(value, dict) else {}
