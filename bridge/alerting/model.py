"""Alert data helpers: fingerprints as Alertmanager computes them, label matchers, JSON forms.

``fingerprint(labels)`` is prometheus/common's ``LabelSet.Fingerprint``: FNV-1a 64 over the
sorted label names, each name and value followed by the separator byte 0xff, printed as 16 hex
digits, so an alert keeps its identity between monbridge and Alertmanager.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import re2  # type: ignore[import-untyped]

if TYPE_CHECKING:  # loaded where alerts are made: a notifier's config (parse_matchers) needs none
    from bridge.api import Alert

__all__ = [
    "AlertSuppressed",
    "Matcher",
    "copy_alert",
    "alert_from_json",
    "alert_to_json",
    "fingerprint",
    "format_labels",
    "parse_matchers",
    "rfc3339",
    "parse_rfc3339",
]

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1
_SEPARATOR = 0xFF


class AlertSuppressed(Exception):  # noqa: N818 - a signal to the chain, not an error
    """Raised by a processor's ``process_alert`` to stop the chain for this alert (a duplicate, a
    muted alert); the reason is recorded on the alert's span."""


def _fnv_add(h: int, data: bytes) -> int:
    for b in data:
        h ^= b
        h = (h * _FNV_PRIME) & _MASK
    return h


def fingerprint(labels: Mapping[str, str]) -> str:
    """The label set's fingerprint, as Alertmanager computes and prints it (16 hex digits)."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        h = _fnv_add(h, name.encode())
        h = _fnv_add(h, bytes((_SEPARATOR,)))
        h = _fnv_add(h, str(labels[name]).encode())
        h = _fnv_add(h, bytes((_SEPARATOR,)))
    return f"{h:016x}"


def format_labels(labels: Mapping[str, str]) -> str:
    """``{a="1", b="2"}`` (sorted; Alertmanager's LabelSet.String)."""
    return "{" + ", ".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --------------------------------------------------------------------------- matchers

#: A matcher's regex is at most this long and nests groups at most this deep (compiling costs
#: time in proportion to length, and Python's parser recurses, slowly, to its limit).
MAX_REGEX_LENGTH = 8192
MAX_REGEX_NESTING = 64


def _regex_nesting(pattern: str) -> int:
    """How deep ``pattern`` nests groups (escapes and character classes skipped); linear."""
    depth = deepest = i = 0
    in_class = False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 1 if pattern[i + 1 : i + 2] == "^" else 0
            i += 1 if pattern[i + 1 : i + 2] == "]" else 0  # a leading ] is a member
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        i += 1
    return deepest


# Possessive: a long quoted value is matched without a backtracking stack growing with its length.
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]++|\\.)*+)"|([^"\s,]*))\s*$')


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the matcher's ValueError, not a line on stderr


@functools.lru_cache(maxsize=1024)
def _regex(value: str) -> Any:
    """``value`` compiled by RE2, as Alertmanager's (Go) matchers are: matched in linear time.
    Silences and inhibit rules come from whoever may call the alert API, and Python's backtracking
    ``re`` let a pattern like ``(.*){30}x`` hold the engine's event loop for minutes."""
    return re2.compile(value, _RE2_OPTIONS)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher: ``name``, ``op`` (``=``, ``!=``, ``=~``, ``!~``) and ``value``. Regexes
    are anchored, as in Alertmanager; a missing label matches as the empty string."""

    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"matcher {self.name}: operator {self.op!r} is not one of =, !=, =~, !~")
        if self.op in ("=~", "!~"):
            if len(self.value) > MAX_REGEX_LENGTH:
                raise ValueError(f"matcher {self.name}{self.op}: regular expression longer than {MAX_REGEX_LENGTH} "
                                 "characters")
            if _regex_nesting(self.value) > MAX_REGEX_NESTING:
                raise ValueError(f"matcher {self.name}{self.op}: regular expression nests groups deeper than "
                                 f"{MAX_REGEX_NESTING} levels")
            try:
                _regex(self.value)
            except (re2.error, ValueError, TypeError, OverflowError) as e:  # refused by RE2, repeat counts too large
                why = e.args[0] if e.args else type(e).__name__
                why = why.decode("utf-8", "replace") if isinstance(why, bytes) else str(why)
                raise ValueError(f"matcher {self.name}{self.op}: invalid regular expression: "
                                 f"{why[:200] or type(e).__name__}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = str(labels.get(self.name, ""))
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        try:
            hit = _regex(self.value).fullmatch(v) is not None
        except UnicodeEncodeError:  # a lone surrogate (JSON allows "\udcff"): RE2 takes UTF-8 only
            hit = _regex(self.value).fullmatch(v.encode("utf-8", "replace").decode("utf-8")) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{_escape(self.value)}"'

    def to_json(self) -> dict[str, Any]:
        """Alertmanager API v2's matcher shape."""
        return {"name": self.name, "value": self.value, "isRegex": self.op in ("=~", "!~"),
                "isEqual": self.op in ("=", "=~")}

    @classmethod
    def from_json(cls, doc: Any) -> Matcher:
        """From ``'name="value"'`` (also ``!=``, ``=~``, ``!~``) or ``{name, value, isRegex, isEqual}``."""
        if isinstance(doc, str):
            m = _MATCHER.match(doc)
            if not m:
                raise ValueError(f"matcher {doc!r}: expected name=\"value\" (or !=, =~, !~)")
            raw = m.group(3) if m.group(3) is not None else m.group(4)
            return cls(m.group(1), m.group(2), re.sub(r"\\(.)", r"\1", raw))
        if isinstance(doc, Mapping):
            name, value = doc.get("name"), doc.get("value")
            if not isinstance(name, str) or not name or not isinstance(value, str):
                raise ValueError("matcher: expected an object with string fields name and value")
            regex, equal = doc.get("isRegex", False), doc.get("isEqual", True)
            if not isinstance(regex, bool) or not isinstance(equal, bool):
                raise ValueError("matcher: isRegex and isEqual must be true or false")
            return cls(name, ("=~" if equal else "!~") if regex else ("=" if equal else "!="), value)
        raise ValueError("matcher: expected a string such as severity=\"critical\" or an object {name, value, isRegex}")


def parse_matchers(spec: Mapping[str, Any] | Iterable[Any] | None) -> tuple[Matcher, ...]:
    """A ``match:`` block: a mapping (each entry an equality) or a list of matcher strings/objects."""
    if spec is None:
        return ()
    if isinstance(spec, Mapping):
        return tuple(Matcher(str(k), "=", str(v)) for k, v in spec.items())
    if isinstance(spec, str):
        return tuple(Matcher.from_json(part) for part in _split_matchers(spec))
    return tuple(Matcher.from_json(m) for m in spec)


def _split_matchers(text: str) -> list[str]:
    """``{a="1", b=~"x,y"}`` or ``a="1",b="2"`` into matcher strings (commas inside quotes kept)."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    out, cur, quoted, prev = [], "", False, ""
    for ch in text:
        if ch == '"' and prev != "\\":
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        prev = ch
    if cur.strip():
        out.append(cur)
    return [p for p in out if p.strip()]


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


# --------------------------------------------------------------------------- time and JSON

ZERO_TIME = "0001-01-01T00:00:00Z"


#: The times RFC 3339 text can hold (years 1 to 9999), as Unix seconds; the zero time aside.
MIN_TIME = -62_135_510_400.0  # 0001-01-02T00:00:00Z
MAX_TIME = 253_402_214_400.0  # 9999-12-31T00:00:00Z


def rfc3339(t: float | None) -> str:
    """Unix seconds as RFC 3339 UTC with milliseconds; None as Go's zero time (Alertmanager's "not set")."""
    if t is None:
        return ZERO_TIME
    d = dt.datetime.fromtimestamp(t, tz=dt.UTC)
    return f"{d.year:04d}-{d:%m-%dT%H:%M:%S}.{d.microsecond // 1000:03d}Z"


def parse_rfc3339(s: Any, where: str) -> float | None:
    """RFC 3339 text as Unix seconds; the zero time or empty as None. ``where`` names the field."""
    if s is None or s == "" or (isinstance(s, str) and s.startswith("0001-01-01")):
        return None
    if not isinstance(s, str):
        raise ValueError(f"{where}: expected an RFC 3339 time string")
    text = s.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Go prints up to nanoseconds; Python takes microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        t = dt.datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):
        raise ValueError(f"{where}: {s[:64]!r} is not an RFC 3339 time") from None
    if not MIN_TIME <= t <= MAX_TIME:
        raise ValueError(f"{where}: {s[:64]!r} is out of range (0001-01-02 to 9999-12-31)")
    return t


def alert_to_json(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id, "name": a.name, "severity": a.severity, "state": a.state.value,
        "labels": dict(a.labels), "annotations": dict(a.annotations), "value": a.value,
        "starts_at": a.starts_at, "ends_at": a.ends_at, "fingerprint": a.fingerprint,
    }


def alert_from_json(doc: Mapping[str, Any]) -> Alert:
    from bridge.api import Alert, AlertState

    return Alert(
        id=str(doc["id"]), name=str(doc["name"]), severity=str(doc.get("severity", "")),
        state=AlertState(doc.get("state", "firing")), labels={str(k): str(v) for k, v in doc.get("labels", {}).items()},
        annotations={str(k): str(v) for k, v in doc.get("annotations", {}).items()},
        value=doc.get("value"), starts_at=float(doc.get("starts_at", 0.0)),
        ends_at=doc.get("ends_at"), fingerprint=str(doc.get("fingerprint", "")),
    )


def copy_alert(a: Alert) -> Alert:
    """A copy whose labels and annotations can change without touching ``a``."""
    from bridge.api import Alert

    return Alert(a.id, a.name, a.severity, a.state, dict(a.labels), dict(a.annotations), a.value, a.starts_at,
                 a.ends_at, a.fingerprint)
