"""Alert transitions and monbridge's own log records as ECS documents.

* ``alert_document``: an alert transition in ``logs-monbridge.alerts-<namespace>``
  (``event.kind: alert``, ``event.action`` the alert's new state, ``rule.name``,
  ``event.severity``, ``labels``, ``message``, ``event.start``/``event.end``, ``trace.id`` and
  ``span.id`` of the alert's span).
* ``AlertRecordExporter``: the alert engine's transition log records (``bridge.alerting``'s
  telemetry, through ``TelemetryExporterHook``) as those documents: every transition, in order,
  with the trace and span ids the record carries (the alert's span: it starts when the alert
  fires and ends when it resolves).
* ``LogShipper``: a ``logging`` handler that keeps monbridge's log records (at ``log_level`` and
  above) as ECS log documents for ``logs-monbridge.log-<namespace>`` (``log.level``,
  ``log.logger``, ``log.origin.*``, ``process.*``, ``error.*`` for an exception; the message
  redacted as the agent's own log output is, cut at ``MAX_MESSAGE_CHARS``). ``emit`` only builds
  the document and appends it to a bounded buffer (``MAX_BUFFERED`` records; beyond, records
  are dropped and counted): the exporter takes the buffer every ``LOG_FLUSH_S`` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.helpers import redact_text

__all__ = ["ALERTS_DATASET", "LOG_FLUSH_S", "LOGS_DATASET", "MAX_BUFFERED", "MAX_MESSAGE_CHARS", "SEVERITY_NUMBERS",
           "AlertRecordExporter", "LogShipper", "alert_document", "iso", "log_document", "transition_document"]

ALERTS_DATASET = "monbridge.alerts"
LOGS_DATASET = "monbridge.log"
#: Severity names as syslog numbers (``event.severity``); another name is 6 (informational).
SEVERITY_NUMBERS = {"emergency": 0, "page": 1, "alert": 1, "fatal": 2, "critical": 2, "high": 3, "error": 3,
                    "warning": 4, "warn": 4, "medium": 4, "notice": 5, "low": 5, "info": 6, "informational": 6,
                    "debug": 7}
#: Log records kept for the next flush; records beyond are dropped (counted).
MAX_BUFFERED = 10_000
#: Seconds between two flushes of the log buffer into the delivery queue.
LOG_FLUSH_S = 1.0
MAX_MESSAGE_CHARS = 8192
MAX_STACK_CHARS = 16_384
#: The record attribute naming the engine's telemetry event, and its value for a transition
#: (``bridge.alerting.telemetry``'s ``ATTR_EVENT``/``EVENT_TRANSITION``, which plugins do not import).
_ATTR_EVENT = "monbridge.alert.event"
_TRANSITION = "transition"


def iso(t: float, default: float | None = None) -> str:
    """``t`` (Unix seconds) as ISO 8601 UTC; ``default`` (else now) when ``t`` is no date."""
    try:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return iso(time.time() if default is None else default)


def alert_document(namespace: str, *, fingerprint: str, name: str, severity: str, action: str,
                   labels: Mapping[str, str], starts_at: float, now: float, end: float | None = None,
                   value: float | None = None, summary: str = "", trace_id: str | None = None,
                   span_id: str | None = None) -> dict[str, Any]:
    """One alert transition as an ECS event."""
    out_labels = {k.replace(".", "_"): v for k, v in labels.items()}
    if severity:
        out_labels.setdefault("severity", severity)
    shown = f" (value {value:g})" if value is not None else ""
    doc: dict[str, Any] = {
        "@timestamp": iso(now),
        "data_stream.type": "logs", "data_stream.dataset": ALERTS_DATASET, "data_stream.namespace": namespace,
        "event.kind": "alert", "event.action": action, "event.module": "monbridge",
        "event.dataset": ALERTS_DATASET, "event.id": fingerprint,
        "event.severity": SEVERITY_NUMBERS.get(severity.lower(), 6),
        "event.start": iso(starts_at, now),
        "rule.name": name, "labels": out_labels,
        "message": f"{name} [{severity or 'none'}] {action}{shown}" + (f": {summary}" if summary else ""),
    }
    if end is not None:
        doc["event.end"] = iso(end, now)
    if trace_id:
        doc["trace.id"] = trace_id
    if span_id:
        doc["span.id"] = span_id
    return doc


def _str(v: Any, limit: int = 1024) -> str:
    return (v if isinstance(v, str) else str(v))[:limit]


def transition_document(namespace: str, attrs: Mapping[str, Any], time_ns: int | None, trace_id: int,
                        span_id: int) -> dict[str, Any] | None:
    """The ECS event of one of the alert engine's transition log records (None: not a transition)."""
    if attrs.get(_ATTR_EVENT) != _TRANSITION:
        return None
    now = (time_ns / 1e9) if time_ns else time.time()
    action = _str(attrs.get("alert.state", ""))
    labels = {k[len("alert.label."):]: _str(v) for k, v in attrs.items() if k.startswith("alert.label.")}
    summary = attrs.get("alert.annotation.summary") or attrs.get("alert.annotation.description") or ""
    value = attrs.get("alert.value")
    starts = attrs.get("alert.starts_at")
    return alert_document(
        namespace, fingerprint=_str(attrs.get("alert.fingerprint") or attrs.get("alert.id", "")),
        name=_str(attrs.get("alert.name", "")), severity=_str(attrs.get("alert.severity", "")), action=action,
        labels=labels, starts_at=float(starts) if isinstance(starts, (int, float)) else now, now=now,
        end=now if action == "resolved" else None,
        value=float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
        summary=_str(summary, MAX_MESSAGE_CHARS),
        trace_id=f"{trace_id:032x}" if trace_id else None, span_id=f"{span_id:016x}" if span_id else None)


class AlertRecordExporter:
    """An OTel ``LogRecordExporter`` (duck-typed: the SDK's batch processor calls ``export``,
    ``force_flush`` and ``shutdown``) of the engine's transition records, in the processor's
    thread: each batch's documents go to ``submit`` (the exporter's queue, thread-safe)."""

    def __init__(self, namespace: str, submit: Callable[[list[dict[str, Any]]], bool]) -> None:
        self.namespace = namespace
        self.submit = submit

    def export(self, batch: Sequence[Any]) -> Any:
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        docs = []
        for r in batch:
            rec = getattr(r, "log_record", r)
            doc = transition_document(self.namespace, rec.attributes or {}, rec.timestamp or rec.observed_timestamp,
                                      rec.trace_id or 0, rec.span_id or 0)
            if doc is not None:
                docs.append(doc)
        ok = self.submit(docs) if docs else True
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


_HOST = socket.gethostname()


def log_document(record: logging.LogRecord, namespace: str) -> dict[str, Any]:
    """One log record as an ECS log document (the message redacted and bounded)."""
    try:
        message = record.getMessage()
    except Exception as e:  # noqa: BLE001 - a record whose arguments do not fit its format
        message = f"{record.msg!s} (unformattable arguments: {type(e).__name__})"
    message = redact_text(message[:MAX_MESSAGE_CHARS])
    doc: dict[str, Any] = {
        "@timestamp": iso(record.created),
        "data_stream.type": "logs", "data_stream.dataset": LOGS_DATASET, "data_stream.namespace": namespace,
        "event.kind": "event", "event.module": "monbridge", "event.dataset": LOGS_DATASET,
        "log.level": record.levelname.lower(), "log.logger": record.name,
        "log.origin.file.name": record.filename, "log.origin.file.line": int(record.lineno),
        "log.origin.function": record.funcName or "",
        "process.pid": int(record.process or os.getpid()), "process.thread.name": record.threadName or "",
        "service.name": "monbridge", "host.name": _HOST,
        "message": message,
    }
    if record.exc_info and record.exc_info[0] is not None:
        etype, evalue = record.exc_info[0], record.exc_info[1]
        doc["error.type"] = etype.__name__
        doc["error.message"] = redact_text(str(evalue)[:MAX_MESSAGE_CHARS])
        stack = "".join(traceback.format_exception(*record.exc_info))
        doc["error.stack_trace"] = redact_text(stack[-MAX_STACK_CHARS:])
    return doc


class LogShipper(logging.Handler):
    """monbridge's log records as ECS documents, buffered for the exporter (see the module doc)."""

    def __init__(self, namespace: str, level: int, max_buffered: int = MAX_BUFFERED) -> None:
        super().__init__(level)
        self.namespace = namespace
        self.max_buffered = max_buffered
        self._buf: list[dict[str, Any]] = []
        self._buf_lock = threading.Lock()
        self._inside = threading.local()
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._inside, "on", False):  # a record logged while this one is built
            return
        self._inside.on = True
        try:
            with self._buf_lock:
                if len(self._buf) >= self.max_buffered:
                    self.dropped += 1
                    return
            doc = log_document(record, self.namespace)
            with self._buf_lock:
                if len(self._buf) >= self.max_buffered:
                    self.dropped += 1
                else:
                    self._buf.append(doc)
        except Exception:  # noqa: BLE001 - logging must not raise into the code that logs
            self.handleError(record)
        finally:
            self._inside.on = False

    def take(self) -> tuple[list[dict[str, Any]], int]:
        """The buffered documents and the records dropped since the last take."""
        with self._buf_lock:
            docs, self._buf = self._buf, []
            dropped, self.dropped = self.dropped, 0
        return docs, dropped
