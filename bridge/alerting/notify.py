"""What notifiers share: the notification they are given, their base class and config, and
Alertmanager's webhook payload (version 4), which several of them send.

A notifier is an ``AlertProcessorPlugin`` (``monitoring.alerts.<name>``): in the processor chain
it passes alerts on unchanged; the dispatcher hands it whole alert groups through ``send``,
from the outbox, with retries. ``send`` raises ``DeliveryError`` to have the notification
retried (after ``retry_after`` seconds when the receiver said so) and
``PermanentDeliveryError`` when retrying cannot help (a 400, say).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.alerting.base import BaseProcessor
from bridge.alerting.model import Matcher, alert_from_json, alert_to_json, rfc3339
from bridge.alerting.notifyconfig import BaseUrl, NotifierConfig, check_http_url
from bridge.api import Alert, AlertState, ExportStatus, PluginConfig, PluginError
from bridge.delivery import classify_status
from bridge.logs import peer_excerpt

__all__ = [
    "DeliveryError",
    "Notification",
    "Notifier",
    "NotifierConfig",
    "PermanentDeliveryError",
    "BaseUrl",
    "check_http_url",
    "http_delivery_error",
    "webhook_payload",
]

log = logging.getLogger("monbridge.alerting.notify")


class DeliveryError(PluginError):
    """The notification was not delivered and should be retried."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(PluginError):
    """The notification was refused in a way retrying cannot fix."""


def http_delivery_error(what: str, status: int, body: str, retry_after: str | None = None) -> PluginError:
    """The error for an HTTP answer ``status`` (``bridge.delivery.classify_status``): 408, 429 and
    5xx are retried (after the ``Retry-After`` the receiver sent, either form), other 4xx are not."""
    text = f"{what}: HTTP {status}: {peer_excerpt(body)}"
    result = classify_status(status, text, retry_after)
    if result.status is ExportStatus.RETRYABLE:
        return DeliveryError(text, result.retry_after)
    return PermanentDeliveryError(text)


@dataclass(slots=True)
class Notification:
    """One message to one notifier about one alert group."""

    notifier_id: str
    key: str  # the dedup key: the same notification always has the same key
    group_key: str
    group_labels: dict[str, str]
    alerts: list[Alert]
    external_url: str = ""
    created_at: float = 0.0
    escalation_level: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``firing`` when any alert is not resolved, else ``resolved`` (Alertmanager's group status)."""
        return "firing" if any(a.state is not AlertState.RESOLVED for a in self.alerts) else "resolved"

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state is not AlertState.RESOLVED]

    def common_labels(self) -> dict[str, str]:
        return _common([a.labels for a in self.alerts])

    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])

    def title(self) -> str:
        """``[FIRING:2] HighCPU (infra)`` as Alertmanager's default templates title a group."""
        n = len(self.firing) if self.status == "firing" else len(self.alerts)
        names = " ".join(v for k, v in sorted(self.group_labels.items()))
        return f"[{self.status.upper()}:{n}] {names}".rstrip()

    def to_json(self) -> dict[str, Any]:
        return {"notifier_id": self.notifier_id, "key": self.key, "group_key": self.group_key,
                "group_labels": self.group_labels, "alerts": [alert_to_json(a) for a in self.alerts],
                "external_url": self.external_url, "created_at": self.created_at,
                "escalation_level": self.escalation_level, "extra": self.extra}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Notification:
        return cls(d["notifier_id"], d["key"], d["group_key"], dict(d["group_labels"]),
                   [alert_from_json(a) for a in d["alerts"]], d.get("external_url", ""), d.get("created_at", 0.0),
                   d.get("escalation_level"), dict(d.get("extra") or {}))


def _common(sets: list[dict[str, str]]) -> dict[str, str]:
    if not sets:
        return {}
    out = dict(sets[0])
    for s in sets[1:]:
        out = {k: v for k, v in out.items() if s.get(k) == v}
    return out


def webhook_payload(n: Notification, receiver: str, generator_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook payload, version 4, field for field."""
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status,
        "receiver": receiver,
        "groupLabels": dict(n.group_labels),
        "commonLabels": n.common_labels(),
        "commonAnnotations": n.common_annotations(),
        "externalURL": n.external_url,
        "alerts": [
            {
                "status": "resolved" if a.state is AlertState.RESOLVED else "firing",
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(a.ends_at if a.state is AlertState.RESOLVED else None),
                "generatorURL": generator_url,
                "fingerprint": a.fingerprint,
            }
            for a in n.alerts
        ],
    }


class Notifier(BaseProcessor):
    """Base of the notifiers (``bridge.api.NotifierHook``): routed by ``match``, delivering groups
    through ``send``."""

    config_model: ClassVar[type[PluginConfig]] = NotifierConfig
    plugin_id: ClassVar[str] = ""

    def notification_route(self) -> tuple[tuple[Matcher, ...], bool]:
        """The config's ``match`` matchers and ``send_resolved``."""
        config: NotifierConfig = self.config
        return config.matchers(), config.send_resolved

    @abc.abstractmethod
    async def send(self, notification: Notification) -> None:
        """Deliver ``notification``; raise DeliveryError (retry) or PermanentDeliveryError."""
