"""Logging: logfmt-style text a person can read, or one JSON object a line; secrets redacted.

Every secret value of the loaded config is registered with ``secret_values``; the formatter
replaces any occurrence of one in a log line (message, arguments, traceback) with ``<secret>``,
so a plugin that puts a credential into an exception message does not leak it. Its derived
forms are replaced too: URL-encoded and JSON-escaped, and any base64 run that decodes to text
holding a secret (an ``Authorization: Basic`` header of ``user:password``, a Jira
``email:token``, echoed back by a peer). A peer's response body is never logged as it is, only
as :func:`peer_excerpt`: bounded, on one line, credentials masked. :class:`LogLimit` says when
a warning repeated by a hostile peer is due again (once a minute per reason).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

__all__ = ["EXCERPT_BYTES", "JsonFormatter", "LogLimit", "TextFormatter", "peer_excerpt", "redact_text",
           "secret_values", "setup_logging"]

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")


class _Secrets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        self._raw: tuple[bytes, ...] = ()

    def set(self, values: Iterable[str]) -> None:
        # Very short values (one or two characters) would redact ordinary text and are left alone.
        secrets = {v for v in values if v and len(v) >= 3}
        forms = {f for v in secrets for f in _forms(v) if len(f) >= 3}
        with self._lock:
            # Longest first, so a secret containing another is replaced whole.
            self._values = tuple(sorted(forms, key=len, reverse=True))
            self._raw = tuple(v.encode() for v in secrets)

    def redact(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, "<secret>")
        if self._raw:
            text = _BASE64_RUN.sub(self._base64, text)
        return text

    def _base64(self, m: re.Match[str]) -> str:
        """A base64 run (standard or URL alphabet) that decodes to bytes holding a secret is one."""
        run = m.group(0)
        data = run.rstrip("=")
        if len(data) % 4 == 1:
            data = data[:-1]
        data += "=" * (-len(data) % 4)
        try:
            decoded = base64.b64decode(data.replace("-", "+").replace("_", "/"))
        except (binascii.Error, ValueError):
            return run
        return "<secret>" if any(v in decoded for v in self._raw) else run


def _forms(secret: str) -> set[str]:
    """``secret`` as it may appear in text: as it is, URL-encoded (path, query, form) and JSON-escaped."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret),
            urllib.parse.quote_plus(secret), json.dumps(secret, ensure_ascii=False)[1:-1],
            json.dumps(secret)[1:-1]}


secret_values = _Secrets()


def redact_text(text: str) -> str:
    return secret_values.redact(text)


EXCERPT_BYTES = 4096
"""How much of a peer's response body to read for an error message (the rest is not read)."""
EXCERPT_CHARS = 200
_AUTH_SCHEME = re.compile(r"(?i)\b(basic|bearer|digest|negotiate|token)(\s+)[A-Za-z0-9._~+/-]{6,}=*")
_CREDENTIAL_FIELD = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api[-_]?key|api[-_]?token|access[-_]?token|auth[-_]?token|password|"
    r"passwd|secret|cookie)([\"']?\s*[:=]\s*[\"']?)(?!<secret>)(?!(?:basic|bearer|digest|negotiate|token)\s)"
    r"[^\s\"',;&}<]{3,}")


def _without_last_word(text: str) -> str:
    """``text`` without the non-space characters at its end (a loop: ``re.sub(r"\\S*\\Z", "", text)``
    is quadratic on text without spaces, a quarter of a second for 4 KiB)."""
    i = len(text)
    while i and not text[i - 1].isspace():
        i -= 1
    return text[:i]


def peer_excerpt(body: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """What an error or log line may say of a peer's response body: at most ``limit`` characters
    on one line, with registered secrets (and their derived forms) redacted and anything shaped
    like a credential masked (``Basic …``, ``Bearer …``, ``"authorization": …``, ``api_key=…``),
    since a peer may echo the request's headers back. Pass at most ``EXCERPT_BYTES`` of it."""
    text = body[:EXCERPT_BYTES].decode("utf-8", "replace") if isinstance(body, bytes) else body[:EXCERPT_BYTES]
    if len(body) > EXCERPT_BYTES:
        text = _without_last_word(text)  # what the cut left of its last word may be part of a secret
    # Secrets are found in the text as it came, before squeezing white space moves any part of it
    # into the first ``limit`` characters.
    text = redact_text(text)
    text = _AUTH_SCHEME.sub(r"\1\2<secret>", text)
    text = _CREDENTIAL_FIELD.sub(r"\1\2<secret>", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return text or "(empty body)"


class LogLimit:
    """Whether a warning is due: at most once every ``every`` seconds per key (a refusal's reason)."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self.last.get(key, -self.every) < self.every:
            return False
        self.last[key] = now
        return True


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
