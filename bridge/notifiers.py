"""Public plugin API for alert processors and notifiers: what they build on.

A notifier is an ``AlertProcessorPlugin`` deriving from ``Notifier`` (or ``HttpNotifier``, which
adds an HTTP client whose failures become ``DeliveryError``/``PermanentDeliveryError``); its
config derives from ``NotifierConfig``. A processor may derive from ``BaseProcessor``, raise
``AlertSuppressed`` from ``process_alert`` and implement the hooks of ``bridge.api``
(``AlertContextHook`` and so on); ``AlertContext`` is what ``attach`` receives.

Plugins import these names from here, never from ``bridge.alerting.*`` (the engine's internals).
Importing this module does not load the alert engine, and each name loads only the module that
defines it, when first used: a config model (``NotifierConfig``, ``BaseUrl``) does not load the
HTTP client, the outbox or the delivery machinery.
"""

from typing import TYPE_CHECKING

from bridge.lazy import lazy_names

if TYPE_CHECKING:
    from bridge.alerting.base import AlertContext, BaseProcessor
    from bridge.alerting.httpclient import HttpClient, HttpNotifier
    from bridge.alerting.model import AlertSuppressed, Matcher, fingerprint, matches_all, parse_matchers, rfc3339
    from bridge.alerting.notify import (
        DeliveryError,
        Notification,
        Notifier,
        PermanentDeliveryError,
        http_delivery_error,
        webhook_payload,
    )
    from bridge.alerting.notifyconfig import BaseUrl, NotifierConfig, check_http_url
    from bridge.alerting.tickets import TicketState, close_ticket_alerts, group_fingerprint, poll_tickets, ticket_text

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
    "close_ticket_alerts",
    "fingerprint",
    "group_fingerprint",
    "http_delivery_error",
    "matches_all",
    "parse_matchers",
    "poll_tickets",
    "rfc3339",
    "ticket_text",
    "webhook_payload",
]

#: Where each name is defined.
_MODULES = {
    "AlertContext": "bridge.alerting.base",
    "BaseProcessor": "bridge.alerting.base",
    "HttpClient": "bridge.alerting.httpclient",
    "HttpNotifier": "bridge.alerting.httpclient",
    "AlertSuppressed": "bridge.alerting.model",
    "Matcher": "bridge.alerting.model",
    "fingerprint": "bridge.alerting.model",
    "matches_all": "bridge.alerting.model",
    "parse_matchers": "bridge.alerting.model",
    "rfc3339": "bridge.alerting.model",
    "BaseUrl": "bridge.alerting.notifyconfig",
    "NotifierConfig": "bridge.alerting.notifyconfig",
    "check_http_url": "bridge.alerting.notifyconfig",
    "DeliveryError": "bridge.alerting.notify",
    "Notification": "bridge.alerting.notify",
    "Notifier": "bridge.alerting.notify",
    "PermanentDeliveryError": "bridge.alerting.notify",
    "http_delivery_error": "bridge.alerting.notify",
    "webhook_payload": "bridge.alerting.notify",
    "TicketState": "bridge.alerting.tickets",
    "group_fingerprint": "bridge.alerting.tickets",
    "ticket_text": "bridge.alerting.tickets",
    "close_ticket_alerts": "bridge.alerting.tickets",
    "poll_tickets": "bridge.alerting.tickets",
}


__getattr__, __dir__ = lazy_names(__name__, _MODULES, globals())
