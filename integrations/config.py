"""Config models of built-in integrations and notifiers kept apart from their code, so that
validating a config imports the model alone (``bridge.registry.BUILTIN_PLUGINS`` names them):
``monitoring.alerts.webhook``'s does not load the HTTP client or the alert outbox."""

from __future__ import annotations

from pydantic import Field, SecretStr

from bridge.notifiers import BaseUrl, NotifierConfig

__all__ = ["WebhookConfig"]


class WebhookConfig(NotifierConfig):
    url: BaseUrl = Field(description="where to POST the payload")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra request headers (secret values)")
