"""Alerting: the alert lifecycle, its OpenTelemetry spans and logs, processors, grouping and notifications.

``AlertEngine`` is the core (``bridge.alerting.engine``); rules, the built-in processors and
the notifiers are plugins (``monitoring.alerts.*``).
"""

from bridge.alerting.engine import AlertContext, AlertEngine
from bridge.alerting.model import AlertSuppressed, Matcher, fingerprint
from bridge.alerting.notify import DeliveryError, Notification, Notifier, NotifierConfig, PermanentDeliveryError
from bridge.alerting.settings import AlertingSettings

__all__ = [
    "AlertContext",
    "AlertEngine",
    "AlertSuppressed",
    "AlertingSettings",
    "DeliveryError",
    "Matcher",
    "Notification",
    "Notifier",
    "NotifierConfig",
    "PermanentDeliveryError",
    "fingerprint",
]
