"""``monitoring.alerts.alertmanager``: alert groups forwarded to a real Alertmanager (API v2).

``POST {url}/api/v2/alerts`` with each alert's labels, annotations, ``startsAt`` and (once
resolved) ``endsAt``. Alertmanager's label names are ``[a-zA-Z_][a-zA-Z0-9_]*``: other characters
(the dots of OTel attribute names) become ``_``. Alertmanager expires an alert it has not
heard of for its ``resolve_timeout``, so keep ``repeat_interval`` below it.

Config::

    url: "http://127.0.0.1:9093"
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from bridge.api import AlertState, PluginConfig, PluginMetadata, PluginType
from bridge.notifiers import HttpNotifier, Notification, NotifierConfig, check_http_url, rfc3339

__all__ = ["AlertmanagerConfig", "AlertmanagerNotifier", "am_alerts", "label_name"]

PLUGIN_ID = "monitoring.alerts.alertmanager"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_name(name: str) -> str:
    out = _INVALID.sub("_", name)
    return "_" + out if out[:1].isdigit() else out


class AlertmanagerConfig(NotifierConfig):
    url: str = Field(description="Alertmanager's base URL, e.g. http://127.0.0.1:9093")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra request headers (secret values)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_http_url(v).rstrip("/")


def am_alerts(n: Notification) -> list[dict[str, Any]]:
    out = []
    for a in n.alerts:
        doc: dict[str, Any] = {
            "labels": {label_name(k): v for k, v in a.labels.items()},
            "annotations": {label_name(k): v for k, v in a.annotations.items()},
            "startsAt": rfc3339(a.starts_at),
        }
        if a.state is AlertState.RESOLVED and a.ends_at is not None:
            doc["endsAt"] = rfc3339(a.ends_at)
        if n.external_url:
            doc["generatorURL"] = n.external_url
        out.append(doc)
    return out


class AlertmanagerNotifier(HttpNotifier):
    config_model: ClassVar[type[PluginConfig]] = AlertmanagerConfig
    plugin_id = PLUGIN_ID

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN_ID, "Alertmanager", "0.1.0", "monbridge",
                              "forwards alerts to an Alertmanager (API v2)", PluginType.ALERT_PROCESSOR)

    async def send(self, notification: Notification) -> None:
        cfg: AlertmanagerConfig = self.config
        headers = {k: v.get_secret_value() for k, v in cfg.headers.items()}
        await self.client.request("alertmanager", "POST", cfg.url + "/api/v2/alerts", json_body=am_alerts(notification),
                                  headers=headers)
