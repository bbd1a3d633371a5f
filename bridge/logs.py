"""Logging: logfmt-style text a person can read, or one JSON object a line; secrets redacted.

Every secret value of the loaded config is registered with ``secret_values``; the formatter
replaces any occurrence of one in a log line (message, arguments, traceback) with ``<secret>``,
so a plugin that puts a credential into an exception message does not leak it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "redact_text", "secret_values", "setup_logging"]


class _Secrets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def set(self, values: Iterable[str]) -> None:
        with self._lock:
            # Longest first, so a secret containing another is replaced whole; very short values
            # (one or two characters) would redact ordinary text and are left alone.
            self._values = tuple(sorted({v for v in values if v and len(v) >= 3}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, "<secret>")
        return text


secret_values = _Secrets()


def redact_text(text: str) -> str:
    return secret_values.redact(text)


def _ts(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``ts=… level=info logger=monbridge.x msg="…"`` (logfmt, as Prometheus logs)."""

    def format(self, record: logging.LogRecord) -> str:
        msg = redact_text(record.getMessage())
        line = f'ts={_ts(record)} level={record.levelname.lower()} logger={record.name} msg={_quote(msg)}'
        if record.exc_info:
            line += " err=" + _quote(redact_text(self.formatException(record.exc_info)))
        return line


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        if record.exc_info:
            doc["err"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless asked for.
    for noisy in ("aiohttp.access", "opentelemetry"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
