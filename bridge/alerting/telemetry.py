"""Alerts as OpenTelemetry data: every transition a log record, every alert's life one span.

An alert's span starts when it fires (at ``starts_at``) and ends when it resolves; its events
are the acknowledgment, each notification and each escalation. Transition log records carry
the span's context, so a backend links them. Both go through the SDK's TracerProvider and
LoggerProvider; the processors registered on them (``add_processor``) see every record, in the
order they were added: the engine's processor chain first, then the OTLP exporters.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode

from bridge.api import Alert, AlertState

__all__ = ["ATTR_EVENT", "AlertTelemetry", "EVENT_TRANSITION"]

log = logging.getLogger("monbridge.alerting.telemetry")

SCOPE = "monbridge.alerts"
ATTR_EVENT = "monbridge.alert.event"
EVENT_TRANSITION = "transition"
_CONTEXTS_KEPT = 10_000

_SEVERITY = {
    "critical": SeverityNumber.ERROR, "error": SeverityNumber.ERROR, "page": SeverityNumber.ERROR,
    "warning": SeverityNumber.WARN, "warn": SeverityNumber.WARN, "info": SeverityNumber.INFO,
}


def alert_attributes(alert: Alert) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "alert.id": alert.id, "alert.name": alert.name, "alert.severity": alert.severity,
        "alert.state": alert.state.value, "alert.fingerprint": alert.fingerprint,
        "alert.starts_at": float(alert.starts_at),
    }
    if alert.value is not None:
        attrs["alert.value"] = float(alert.value)
    for k, v in alert.labels.items():
        attrs[f"alert.label.{k}"] = v
    for k, v in alert.annotations.items():
        attrs[f"alert.annotation.{k}"] = v
    return attrs


class AlertTelemetry:
    """The providers and the open span of each active alert."""

    def __init__(self, resource: Resource) -> None:
        self.tracer_provider = TracerProvider(resource=resource)
        self.logger_provider = LoggerProvider(resource=resource)
        from bridge import __version__

        self.tracer = self.tracer_provider.get_tracer(SCOPE, __version__)
        self.logger = self.logger_provider.get_logger(SCOPE, __version__)
        self.spans: dict[str, Span] = {}
        # Span contexts of alerts, kept after their span ended: later records (a resolved
        # notification's delivery) still carry the alert's trace.
        self.contexts: OrderedDict[str, SpanContext] = OrderedDict()
        self._exporting: list[Any] = []

    def add_processor(self, processor: Any) -> None:
        """Register a span processor, a log record processor, or an object that is both."""
        if isinstance(processor, SpanProcessor):
            self.tracer_provider.add_span_processor(processor)
        if isinstance(processor, LogRecordProcessor):
            self.logger_provider.add_log_record_processor(processor)

    def export_to(self, span_exporter: Any, log_exporter: Any, delay_ms: int = 1000) -> None:
        """Send spans and log records to these exporters (an integration's), in batches; either
        may be None (that integration takes only the other)."""
        if span_exporter is not None:
            sp = BatchSpanProcessor(span_exporter, schedule_delay_millis=delay_ms)
            self.tracer_provider.add_span_processor(sp)
            self._exporting.append(sp)
        if log_exporter is not None:
            lp = BatchLogRecordProcessor(log_exporter, schedule_delay_millis=delay_ms)
            self.logger_provider.add_log_record_processor(lp)
            self._exporting.append(lp)

    # ------------------------------------------------------------------ spans

    def open_span(self, alert: Alert) -> Span:
        span = self.spans.get(alert.id)
        if span is None:
            span = self.tracer.start_span(
                f"alert {alert.name}", kind=trace.SpanKind.INTERNAL, attributes=alert_attributes(alert),
                start_time=int(alert.starts_at * 1e9),
            )
            self.spans[alert.id] = span
            self.contexts[alert.id] = span.get_span_context()
            while len(self.contexts) > _CONTEXTS_KEPT:
                self.contexts.popitem(last=False)
        return span

    def span_event(self, alert_id: str, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        span = self.spans.get(alert_id)
        if span is not None and span.is_recording():
            span.add_event(name, dict(attributes or {}))

    def end_span(self, alert: Alert) -> None:
        span = self.spans.pop(alert.id, None)
        if span is None:
            return
        span.set_attribute("alert.state", alert.state.value)
        span.set_status(Status(StatusCode.OK))
        span.end(end_time=int((alert.ends_at or 0) * 1e9) or None)

    # ------------------------------------------------------------------ log records

    def emit(self, alert: Alert, event: str, body: str, extra: Mapping[str, Any] | None = None) -> None:
        """One log record about ``alert`` (``monbridge.alert.event`` = ``event``), in its span's context."""
        span_context = self.contexts.get(alert.id)
        ctx = trace.set_span_in_context(NonRecordingSpan(span_context)) if span_context is not None else None
        attrs = alert_attributes(alert)
        attrs[ATTR_EVENT] = event
        attrs.update(extra or {})
        severity = _SEVERITY.get(alert.severity.lower(), SeverityNumber.WARN)
        if alert.state is AlertState.RESOLVED:
            severity = SeverityNumber.INFO
        self.logger.emit(body=body, attributes=attrs, severity_number=severity, severity_text=severity.name,
                         event_name=f"alert.{event}", context=ctx)

    def transition(self, alert: Alert, from_state: AlertState | None, by: str) -> None:
        """Record a transition: open the span on firing, add an event on acknowledgment, emit the
        log record, and end the span on resolution (after the record, so it carries the span)."""
        if alert.state is AlertState.FIRING:
            self.open_span(alert)
        elif alert.state is AlertState.ACKNOWLEDGED:
            self.span_event(alert.id, "acknowledged", {"by": by})
        frm = from_state.value if from_state else "new"
        self.emit(alert, EVENT_TRANSITION, f"alert {alert.name} {frm} -> {alert.state.value}",
                  {"alert.previous_state": frm, "alert.transition.by": by})
        if alert.state is AlertState.RESOLVED:
            self.end_span(alert)

    def flush(self, timeout_ms: int = 3000) -> None:
        self.tracer_provider.force_flush(timeout_ms)
        self.logger_provider.force_flush(timeout_ms)

    def shutdown(self, timeout_ms: int = 3000) -> None:
        # Spans of still-active alerts are not ended: the alert's life goes on after a restart.
        self.spans.clear()
        self.flush(timeout_ms)
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
