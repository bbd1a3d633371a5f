"""Public plugin API for alert processors and notifiers: what they build on.

A notifier is an ``AlertProcessorPlugin`` deriving from ``Notifier`` (or ``HttpNotifier``, which
adds an HTTP client whose failures become ``DeliveryError``/``PermanentDeliveryError``); its
config derives from ``NotifierConfig``. A processor may derive from ``BaseProcessor``, raise
``AlertSuppressed`` from ``process_alert`` and implement the hooks of ``bridge.api``
(``AlertContextHook`` and so on); ``AlertContext`` is what ``attach`` receives.

Plugins import these names from here, never from ``bridge.alerting.*`` (the engine's internals).
Importing this module does not load the alert engine.
"""

from bridge.alerting.base import AlertContext, BaseProcessor
from bridge.alerting.httpclient import HttpClient, HttpNotifier
from bridge.alerting.model import AlertSuppressed, Matcher, fingerprint, matches_all, parse_matchers, rfc3339
from bridge.alerting.notify import (
    BaseUrl,
    DeliveryError,
    Notification,
    Notifier,
    NotifierConfig,
    PermanentDeliveryError,
    check_http_url,
    http_delivery_error,
    webhook_payload,
)
from bridge.alerting.tickets import TicketState, group_fingerprint, ticket_text

__all__ = [
    "AlertContext",
    "AlertSuppressed",
    "BaseProcessor",
    "BaseUrl",
    "DeliveryError",
    "HttpClient",
    "HttpNotifier",
    "Matcher",
    "Notification",
    "Notifier",
    "NotifierConfig",
    "PermanentDeliveryError",
    "TicketState",
    "check_http_url",
    "fingerprint",
    "group_fingerprint",
    "http_delivery_error",
    "matches_all",
    "parse_matchers",
    "rfc3339",
    "ticket_text",
    "webhook_payload",
]
