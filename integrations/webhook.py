"""``monitoring.alerts.webhook``: alert groups POSTed as Alertmanager's webhook payload (version 4).

Any consumer of Alertmanager's webhooks works unchanged. Each request carries the
notification's dedup key in ``Idempotency-Key``, so a consumer can drop the repeat that a
crash between delivery and its bookkeeping may cause.

Config::

    url: "http://127.0.0.1:5001/hook"
    send_resolved: true
    headers: {authorization: "Bearer ${HOOK_TOKEN}"}   # secret values
    match: {severity: critical}                        # default: every alert group
"""

from __future__ import annotations

from typing import ClassVar

from bridge.api import PluginConfig, PluginMetadata, PluginType
from bridge.notifiers import HttpNotifier, Notification, webhook_payload
from integrations.config import WebhookConfig

__all__ = ["WebhookConfig", "WebhookNotifier"]

PLUGIN_ID = "monitoring.alerts.webhook"


class WebhookNotifier(HttpNotifier):
    config_model: ClassVar[type[PluginConfig]] = WebhookConfig
    plugin_id = PLUGIN_ID

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN_ID, "Webhook", "0.1.0", "monbridge",
                              "alert groups as Alertmanager webhook payloads (version 4)", PluginType.ALERT_PROCESSOR)

    async def send(self, notification: Notification) -> None:
        cfg: WebhookConfig = self.config
        headers = {k: v.get_secret_value() for k, v in cfg.headers.items()}
        headers["Idempotency-Key"] = notification.key
        await self.client.request("webhook", "POST", cfg.url, json_body=webhook_payload(notification, PLUGIN_ID),
                                  headers=headers)
