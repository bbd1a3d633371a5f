"""Prometheus series selectors, as ``match[]`` takes them: ``up``, ``{job="node"}``,
``http_requests_total{code=~"5..", method!="GET"}``.

A selector is a metric name, a set of label matchers in braces, or both; the name is a matcher
on ``__name__``. Regexes are anchored, as in Prometheus; a label the series lacks matches as the
empty string. As in Prometheus' ``match[]``, a selector must have a matcher that does not match
the empty string (``{job=~".*"}`` alone would select everything by accident).

The regexes come from whoever sends a query (``/federate``, the dashboard's data API), so they are
RE2 regexes matched by RE2 (``google-re2``), as Prometheus' are: in linear time. Python's ``re``
backtracks, and a pattern like ``(.*){30}x`` held the interpreter (and with it the event loop) for
minutes; RE2 refuses backreferences and lookarounds instead, as Prometheus does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]

__all__ = ["MAX_SELECTOR_LENGTH", "Selector", "parse_selector"]

MAX_SELECTOR_LENGTH = 4096
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'')
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the caller's ValueError, not a line on stderr


@dataclass(frozen=True, slots=True)
class _Matcher:
    name: str
    op: str
    value: str
    regex: Any  # a compiled RE2 pattern (fullmatch), or None

    def matches(self, v: str) -> bool:
        if self.regex is not None:
            try:
                hit = self.regex.fullmatch(v) is not None
            except UnicodeEncodeError:  # a lone surrogate (JSON allows "\udcff"): RE2 takes UTF-8 only
                hit = self.regex.fullmatch(v.encode("utf-8", "replace").decode("utf-8")) is not None
            return hit == (self.op == "=~")
        return (v == self.value) == (self.op == "=")


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector; ``text`` is what it was parsed from."""

    text: str
    matchers: tuple[_Matcher, ...]

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        """Whether the series ``name`` with ``labels`` (its Prometheus view) is selected."""
        for m in self.matchers:
            if not m.matches(name if m.name == "__name__" else labels.get(m.name, "")):
                return False
        return True

    def name_matches(self, name: str) -> bool:
        """False when no series of the family ``name`` can be selected (spares walking its series)."""
        return all(m.matches(name) for m in self.matchers if m.name == "__name__")


def _unquote(m: re.Match[str]) -> str:
    raw = m.group(1) if m.group(1) is not None else m.group(2)
    return re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), "\\" + e.group(1)), raw)


def _matcher(name: str, op: str, value: str, where: str) -> _Matcher:
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re2.compile(value, _RE2_OPTIONS)
        except (re2.error, ValueError, TypeError, OverflowError) as e:
            why = e.args[0] if e.args else e
            why = why.decode("utf-8", "replace") if isinstance(why, bytes) else str(why)
            raise ValueError(f"{where}: invalid regular expression for {name}: {why[:200]}") from None
    return _Matcher(name, op, value, regex)


def parse_selector(text: str) -> Selector:
    """Parse one selector; a ValueError names the selector and what is wrong at which offset."""
    where = f"selector {text[:200]!r}"
    if len(text) > MAX_SELECTOR_LENGTH:
        raise ValueError(f"{where}: longer than {MAX_SELECTOR_LENGTH} characters")
    s = text.strip()
    matchers: list[_Matcher] = []
    pos = 0
    m = _NAME.match(s)
    if m:
        matchers.append(_Matcher("__name__", "=", m.group(0), None))
        pos = m.end()
    rest = s[pos:].strip()
    if rest:
        if not (rest.startswith("{") and rest.endswith("}")):
            raise ValueError(f"{where}: expected a metric name and/or label matchers in braces")
        body = rest[1:-1]
        i = 0
        while i < len(body):
            lm = _LABEL.match(body, i)
            if lm is None:
                raise ValueError(f"{where}: expected a label matcher at offset {i} of the braces")
            sm = _STRING.match(body, lm.end())
            if sm is None:
                raise ValueError(f"{where}: expected a quoted value for {lm.group(1)}")
            matchers.append(_matcher(lm.group(1), lm.group(2), _unquote(sm), where))
            i = sm.end()
            while i < len(body) and body[i].isspace():
                i += 1
            if i < len(body):
                if body[i] != ",":
                    raise ValueError(f"{where}: expected ',' or '}}' at offset {i} of the braces")
                i += 1
    if not any(not mt.matches("") for mt in matchers):
        raise ValueError(f"{where}: needs a matcher that does not match the empty string "
                         "(a metric name, or a label matcher such as job=\"node\")")
    return Selector(text, tuple(matchers))
