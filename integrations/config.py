"""Config models of built-in integrations and notifiers kept apart from their code, so that
validating a config imports the model alone (``bridge.registry.BUILTIN_PLUGINS`` names them):
``monitoring.alerts.webhook``'s does not load the HTTP client or the alert outbox. ``DeliveryQueue`` is the
queue section of every network sink built on ``bridge.delivery``."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from bridge.api import PluginConfig
from bridge.notifiers import BaseUrl, NotifierConfig

__all__ = ["DeliveryQueue", "WebhookConfig"]


class WebhookConfig(NotifierConfig):
    url: BaseUrl = Field(description="where to POST the payload")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra request headers (secret values)")


class DeliveryQueue(PluginConfig):
    """What is not delivered yet, and how its delivery is retried (as remote write's queue)."""

    path: str | None = Field(default=None, description="directory of the on-disk queue; unset keeps it in memory "
                                                       "(a restart loses it)")
    max_bytes: int = Field(default=256 << 20, ge=1 << 16, description="bound on the queue; beyond it the oldest "
                                                                      "payloads are dropped and counted")
    min_backoff: float = Field(default=0.5, gt=0, allow_inf_nan=False, description="seconds before the first retry")
    max_backoff: float = Field(default=60.0, gt=0, allow_inf_nan=False, description="longest wait between retries")
    fsync: bool = False

    @model_validator(mode="after")
    def _backoffs(self) -> DeliveryQueue:
        if self.max_backoff < self.min_backoff:
            raise ValueError("max_backoff must be at least min_backoff")
        return self
