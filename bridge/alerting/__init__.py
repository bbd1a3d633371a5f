"""Alerting: the alert lifecycle, its OpenTelemetry spans and logs, processors, grouping and notifications.

``AlertEngine`` is the core (``bridge.alerting.engine``); rules, the built-in processors and
the notifiers are plugins (``monitoring.alerts.*``), built on the public ``bridge.notifiers``.
This package's ``__init__`` imports nothing: importing one of its modules (the config's
``bridge.alerting.settings``) does not load the engine.
"""
