"""Prometheus relabeling, with the semantics of Prometheus 2.42 (``model/relabel/relabel.go``).

``RelabelConfig`` is one entry of ``relabel_configs`` / ``metric_relabel_configs``, validated as
Prometheus validates it. ``Relabeler`` applies a list of them to a label set (``__name__``
included) and returns the new label set, or None when a ``keep``/``drop``/``keepequal``/
``dropequal`` rule dropped it.

Regular expressions are Go RE2 syntax, fully anchored (``^(?:regex)$``) as Prometheus anchors
them, and are translated to Python's ``re`` where the two differ: ``\\d``, ``\\w``, ``\\s``, ``\\b``
are ASCII-only, ``$`` is the end of the text (not before a final newline), ``\\z``, ``\\Q...\\E``,
``\\x{...}``, octal escapes, POSIX classes ``[[:alpha:]]``, Unicode general categories ``\\pL``,
flags ``(?imsU)`` anywhere in a group, ``a{,3}`` and ``a{01}`` are literals, group names such as
``(?P<1x>...)`` are allowed. What RE2 rejects (backreferences, lookaround, possessive and stacked
repetition, ``(?<name>``, repeat counts over 1000) is rejected here too. Unicode script classes
(``\\p{Greek}``) are not supported and are rejected with a message saying so.

Replacement templates are expanded as Go's ``Regexp.Expand`` does: ``$1``, ``${1}``, ``$name``,
``${name}``, ``$$`` for a literal ``$``; the longest run of letters, digits and ``_`` after ``$``
is the name, so ``$1x`` is the group named ``1x`` (use ``${1}x``); a group that does not exist or
did not take part in the match expands to ``""``; a ``$`` not followed by a name is literal.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bridge.api import PluginConfig

__all__ = [
    "LABEL_NAME_RE",
    "GoRegex",
    "GoRegexError",
    "RelabelConfig",
    "Relabeler",
    "compile_go_regex",
    "go_expand",
    "hashmod",
]

LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Prometheus' relabelTarget: what a replace action's target_label may be when it has a "$".
_RELABEL_TARGET_RE = re.compile(r"(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+\Z", re.ASCII)
_MAX_UINT64 = 2**64 - 1

Action = Literal[
    "replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "keepequal", "dropequal",
    "lowercase", "uppercase",
]

# ---------------------------------------------------------------------------- Go RE2 -> Python re


class GoRegexError(ValueError):
    """A regular expression that Go's regexp (RE2 syntax) rejects, or that cannot be translated."""


_MAX_RUNE = 0x10FFFF
_Ranges = list[tuple[int, int]]

_PERL_CLASSES: dict[str, _Ranges] = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_POSIX_CLASSES: dict[str, _Ranges] = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}
_GENERAL_CATEGORIES = {
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl", "No",
    "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
}
_REPEAT_RE = re.compile(r"\{([0-9]+)(,([0-9]*))?\}")
_HEX_BRACED_RE = re.compile(r"\{([0-9A-Fa-f]+)\}")
_HEX2_RE = re.compile(r"[0-9A-Fa-f]{2}")
_WORD = "[0-9A-Za-z_]"
_WORD_BOUNDARY = f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))"
_NOT_WORD_BOUNDARY = f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))"


@functools.cache
def _unicode_category(name: str) -> _Ranges:
    """Code point ranges of a Unicode general category (one or two letters), as Go's unicode tables."""
    ranges: _Ranges = []
    for cp in range(_MAX_RUNE + 1):
        cat = unicodedata.category(chr(cp))
        if cat == "Cn" or not cat.startswith(name):
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return ranges


def _negate(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    nxt = 0
    for lo, hi in sorted(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= _MAX_RUNE:
        out.append((nxt, _MAX_RUNE))
    return out


def _class_source(ranges: _Ranges) -> str:
    if not ranges:
        return "(?!)"  # an empty class matches nothing
    parts = []
    for lo, hi in sorted(ranges):
        parts.append(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}")
    return "[" + "".join(parts) + "]"


def _is_go_word_rune(ch: str) -> bool:
    """unicode.IsLetter || unicode.IsDigit || '_', as Go's Regexp.Expand reads a name."""
    if ch == "_":
        return True
    cat = unicodedata.category(ch)
    return cat.startswith("L") or cat == "Nd"


@dataclass
class _Flags:
    fold_case: bool = False  # i
    multi_line: bool = False  # m
    dot_nl: bool = False  # s
    non_greedy: bool = False  # U

    def copy(self) -> _Flags:
        return _Flags(self.fold_case, self.multi_line, self.dot_nl, self.non_greedy)


_FLAG_ATTRS = {"i": "fold_case", "m": "multi_line", "s": "dot_nl", "U": "non_greedy"}


class _Translator:
    """Recursive-descent parser of Go's regexp/syntax (Perl flags) emitting an equivalent Python pattern."""

    def __init__(self, src: str) -> None:
        self.s = src
        self.i = 0
        self.names: list[str] = [""]  # by group index; group 0 is the whole match

    def error(self, what: str, start: int | None = None) -> GoRegexError:
        at = self.i if start is None else start
        return GoRegexError(f"{what} (at offset {at})")

    def peek(self, n: int = 0) -> str:
        j = self.i + n
        return self.s[j] if j < len(self.s) else ""

    def translate(self) -> str:
        body = self.group_body(_Flags())
        if self.i < len(self.s):  # only a ")" stops group_body early
            raise self.error("unexpected )")
        return body

    # A group: alternatives sharing one flag state, which (?flags) changes for the rest of the group.
    def group_body(self, flags: _Flags) -> str:
        branches = [self.concat(flags)]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.concat(flags))
        return "|".join(branches)

    def concat(self, flags: _Flags) -> str:
        pieces: list[str] = []
        last_was_repeat = False
        while self.i < len(self.s) and self.peek() not in "|)":
            start = self.i
            c = self.peek()
            if c in "*+?" or (c == "{" and self.repeat_counts() is not None):
                if not pieces:
                    raise self.error("missing argument to repetition operator", start)
                if last_was_repeat:
                    raise self.error("invalid nested repetition operator", start)
                pieces[-1] = self.repeat(pieces[-1], flags)
                last_was_repeat = True
                continue
            last_was_repeat = False
            pieces.extend(self.atom(flags))
        return "".join(pieces)

    def repeat_counts(self) -> tuple[int, int | None] | None:
        """``{n}``, ``{n,}``, ``{n,m}`` at the cursor (without consuming it), else None: then ``{`` is a literal."""
        m = _REPEAT_RE.match(self.s, self.i)
        if not m:
            return None
        lo_s, comma, hi_s = m.group(1), m.group(2), m.group(3)
        for digits in (lo_s, hi_s):
            if digits and len(digits) > 1 and digits[0] == "0":
                return None  # Go's parseInt refuses leading zeros: the brace is literal
        lo = int(lo_s)
        hi: int | None = lo if comma is None else (int(hi_s) if hi_s else None)
        return lo, hi

    def repeat(self, piece: str, flags: _Flags) -> str:
        start = self.i
        c = self.peek()
        if c == "{":
            counts = self.repeat_counts()
            assert counts is not None
            lo, hi = counts
            if lo > 1000 or (hi is not None and (hi > 1000 or hi < lo)):
                raise self.error("invalid repeat count", start)
            self.i = self.s.index("}", self.i) + 1
            op = f"{{{lo}}}" if hi == lo else f"{{{lo},{'' if hi is None else hi}}}"
        else:
            self.i += 1
            op = c
        lazy = flags.non_greedy
        if self.peek() == "?":
            self.i += 1
            lazy = not lazy
        return f"(?:{piece}){op}{'?' if lazy else ''}"

    def literal(self, ch: str, flags: _Flags) -> str:
        lit = re.escape(ch) if ch.isascii() else f"\\U{ord(ch):08x}"
        return f"(?i:{lit})" if flags.fold_case else lit

    def klass(self, src: str, flags: _Flags) -> str:
        return f"(?i:{src})" if flags.fold_case else src

    def atom(self, flags: _Flags) -> list[str]:
        """One or more pieces (``\\Q...\\E`` gives one piece per character, as Go parses it)."""
        start = self.i
        c = self.peek()
        if c == "(":
            group = self.group(flags)
            return [group] if group else []  # (?flags) alone matches nothing: a quantifier after it repeats what precedes
        if c == "[":
            return [self.klass(_class_source(self.char_class()), flags)]
        self.i += 1
        if c == ".":
            return ["(?s:.)" if flags.dot_nl else r"[^\n]"]
        if c == "^":
            return ["(?m:^)" if flags.multi_line else r"\A"]
        if c == "$":
            return ["(?m:$)" if flags.multi_line else r"\Z"]
        if c != "\\":
            return [self.literal(c, flags)]
        nxt = self.peek()
        if nxt == "":
            raise self.error("trailing backslash at end of expression", start)
        if nxt in "AzbBCQ":
            self.i += 1
            if nxt == "A":
                return [r"\A"]
            if nxt == "z":
                return [r"\Z"]
            if nxt == "b":
                return [_WORD_BOUNDARY]
            if nxt == "B":
                return [_NOT_WORD_BOUNDARY]
            if nxt == "C":
                raise self.error("invalid escape sequence: \\C", start)
            end = self.s.find("\\E", self.i)
            text = self.s[self.i:] if end < 0 else self.s[self.i:end]
            self.i = len(self.s) if end < 0 else end + 2
            return [self.literal(ch, flags) for ch in text]
        self.i = start
        ranges = self.class_escape()
        if ranges is not None:
            return [self.klass(_class_source(ranges), flags)]
        return [self.literal(self.escape(), flags)]

    def group(self, flags: _Flags) -> str:
        start = self.i
        self.i += 1
        inner = flags.copy()
        if self.peek() == "?":
            if self.s.startswith("(?P<", start):
                end = self.s.find(">", start)
                name = self.s[start + 4:end] if end >= 0 else ""
                if end < 0 or not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                    raise self.error("invalid named capture", start)
                self.i = end + 1
                self.names.append(name)
                body = self.group_body(inner)
                self.close(start)
                return f"({body})"
            self.i += 1
            sign = 1
            saw_flag = False
            while True:
                c = self.peek()
                self.i += 1
                if c and c in _FLAG_ATTRS:
                    setattr(inner, _FLAG_ATTRS[c], sign > 0)
                    saw_flag = True
                elif c == "-" and sign > 0:
                    sign = -1
                    saw_flag = False
                elif c in (":", ")") and c != "" and (sign > 0 or saw_flag):
                    break
                else:
                    raise self.error("invalid or unsupported Perl syntax", start)
            if c == ")":
                # (?flags): the flags hold for the rest of the enclosing group.
                for attr in _FLAG_ATTRS.values():
                    setattr(flags, attr, getattr(inner, attr))
                return ""
            body = self.group_body(inner)
            self.close(start)
            return f"(?:{body})"
        self.names.append("")
        body = self.group_body(inner)
        self.close(start)
        return f"({body})"

    def close(self, start: int) -> None:
        if self.peek() != ")":
            raise self.error("missing closing )", start)
        self.i += 1

    def class_escape(self) -> _Ranges | None:
        r"""``\d \D \s \S \w \W \pX \p{X} \PX \P{X}`` at the cursor (a backslash), consumed; else None."""
        c = self.peek(1)
        if c and c in "dDsSwW":
            self.i += 2
            ranges = _PERL_CLASSES[c.lower()]
            return _negate(ranges) if c.isupper() else list(ranges)
        if c in ("p", "P"):
            start = self.i
            self.i += 2
            negate = c == "P"
            if self.peek() == "{":
                end = self.s.find("}", self.i)
                if end < 0:
                    raise self.error("invalid character class range", start)
                name = self.s[self.i + 1:end]
                self.i = end + 1
            else:
                name = self.peek()
                if not name:
                    raise self.error("invalid character class range", start)
                self.i += 1
            if name.startswith("^"):
                negate = not negate
                name = name[1:]
            if name == "Any":
                ranges = [(0, _MAX_RUNE)]
            elif name in _GENERAL_CATEGORIES:
                ranges = list(_unicode_category(name))
            else:
                raise self.error("Unicode script and other non-category classes (\\p{Name}) are not supported", start)
            return _negate(ranges) if negate else ranges
        return None

    def escape(self) -> str:
        """A single-character escape at the cursor (a backslash), consumed: Go's parseEscape."""
        start = self.i
        self.i += 1
        c = self.peek()
        self.i += 1
        if c == "":
            raise self.error("trailing backslash at end of expression", start)
        if c in "1234567" and not ("0" <= self.peek() <= "7"):
            raise self.error("invalid escape sequence (backreferences are not supported)", start)
        if c in "01234567":
            value = int(c)
            for _ in range(2):
                if "0" <= self.peek() <= "7":
                    value = value * 8 + int(self.peek())
                    self.i += 1
            return chr(value)
        if c == "x":
            if self.peek() == "{":
                m = _HEX_BRACED_RE.match(self.s, self.i)
                if not m or int(m.group(1), 16) > _MAX_RUNE:
                    raise self.error("invalid escape sequence", start)
                self.i = m.end()
                return chr(int(m.group(1), 16))
            m = _HEX2_RE.match(self.s, self.i)
            if not m:
                raise self.error("invalid escape sequence", start)
            self.i = m.end()
            return chr(int(m.group(0), 16))
        simple = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
        if c in simple:
            return simple[c]
        if c and c.isascii() and not c.isalnum():
            return c
        raise self.error("invalid escape sequence", start)

    def char_class(self) -> _Ranges:
        start = self.i
        self.i += 1
        ranges: _Ranges = []
        negate = False
        if self.peek() == "^":
            negate = True
            self.i += 1
        first = True
        while first or self.peek() != "]":
            if self.i >= len(self.s):
                raise self.error("missing closing ]", start)
            first = False
            if self.s.startswith("[:", self.i):
                end = self.s.find(":]", self.i + 2)
                if end >= 0:
                    name = self.s[self.i + 2:end]
                    neg = name.startswith("^")
                    posix = _POSIX_CLASSES.get(name.lstrip("^"))
                    if posix is None:
                        raise self.error("invalid character class range", self.i)
                    ranges.extend(_negate(posix) if neg else posix)
                    self.i = end + 2
                    continue
            if self.peek() == "\\":
                escaped = self.class_escape()
                if escaped is not None:
                    ranges.extend(escaped)
                    continue
            lo = self.class_char(start)
            hi = lo
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                hi = self.class_char(start)
                if ord(hi) < ord(lo):
                    raise self.error("invalid character class range", start)
            ranges.append((ord(lo), ord(hi)))
        self.i += 1
        return _negate(ranges) if negate else ranges

    def class_char(self, class_start: int) -> str:
        c = self.peek()
        if c == "":
            raise self.error("missing closing ]", class_start)
        if c == "\\":
            return self.escape()
        self.i += 1
        return c


@dataclass(frozen=True)
class GoRegex:
    """A Go regular expression, anchored as Prometheus anchors it, compiled to Python's re."""

    source: str  # as written in the config, without the anchors
    compiled: re.Pattern[str]
    group_names: tuple[str, ...]  # by group index ("" for unnamed groups and group 0)

    def fullmatch(self, value: str) -> re.Match[str] | None:
        return self.compiled.match(value)


@functools.lru_cache(maxsize=1024)
def compile_go_regex(source: str) -> GoRegex:
    """Compile ``^(?:source)$`` with Go's semantics; raise GoRegexError if Go would reject it."""
    translator = _Translator(source)
    body = translator.translate()
    try:
        compiled = re.compile(rf"(?:{body})\Z")
    except re.error as e:  # pragma: no cover - the translation only emits valid Python syntax
        raise GoRegexError(f"cannot be translated: {e}") from None
    return GoRegex(source, compiled, tuple(translator.names))


def go_expand(template: str, regex: GoRegex, match: re.Match[str]) -> str:
    """Go's ``Regexp.ExpandString`` of ``template`` with the groups of ``match``."""
    if "$" not in template:
        return template
    out: list[str] = []
    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        out.append(before)
        if not dollar:
            break
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        brace = rest.startswith("{")
        j = 1 if brace else 0
        k = j
        while k < len(rest) and _is_go_word_rune(rest[k]):
            k += 1
        name = rest[j:k]
        if not name or (brace and (k >= len(rest) or rest[k] != "}")):
            out.append("$")  # malformed: the $ is literal text
            continue
        rest = rest[k + 1 if brace else k:]
        if name.isascii() and name.isdigit() and not (len(name) > 1 and name[0] == "0") and len(name) <= 9:
            num = int(name)
            if num < len(regex.group_names):
                out.append(match.group(num) or "")
            continue
        for index, group_name in enumerate(regex.group_names):
            if group_name == name and match.group(index) is not None:
                out.append(match.group(index))
                break
    return "".join(out)


# ---------------------------------------------------------------------------- config


class RelabelConfig(PluginConfig):
    """One relabeling rule, validated as Prometheus validates ``relabel_configs`` entries."""

    source_labels: list[str] = Field(default=[], description="labels whose values are joined with separator")
    separator: str = ";"
    regex: str = Field(default="(.*)", description="Go RE2 regular expression, anchored at both ends")
    modulus: int | None = Field(default=None, ge=0, le=_MAX_UINT64, description="for hashmod")
    target_label: str | None = None
    replacement: str = "$1"
    action: Action = "replace"

    @field_validator("action", mode="before")
    @classmethod
    def _lower_action(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v  # Prometheus accepts any case: "Replace", "KEEP"

    @field_validator("source_labels")
    @classmethod
    def _source_labels(cls, v: list[str]) -> list[str]:
        for i, name in enumerate(v):
            if not LABEL_NAME_RE.match(name):
                raise ValueError(f"source_labels[{i}] is not a valid label name (expected [a-zA-Z_][a-zA-Z0-9_]*)")
        return v

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            compile_go_regex(v)
        except GoRegexError as e:
            raise ValueError(f"regex is not a valid RE2 regular expression: {e}") from None
        return v

    @model_validator(mode="after")
    def _prometheus_rules(self) -> RelabelConfig:
        a = self.action
        target = self.target_label or ""
        modulus = self.modulus or 0
        if modulus == 0 and a == "hashmod":
            raise ValueError("relabel configuration for hashmod requires a non-zero 'modulus'")
        if a in ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal") and not target:
            raise ValueError(f"relabel configuration for {a} action requires 'target_label' (the label it writes or compares)")
        if a == "replace" and "$" not in target and not LABEL_NAME_RE.match(target):
            raise ValueError(f"'target_label' is not a valid label name for the {a} action")
        if a == "replace" and "$" in target and not _RELABEL_TARGET_RE.match(target):
            raise ValueError(f"'target_label' is invalid for the {a} action: expected a label name, "
                             "possibly with $1, ${1}, $name or ${name} references")
        if a in ("lowercase", "uppercase", "keepequal", "dropequal", "hashmod") and not LABEL_NAME_RE.match(target):
            raise ValueError(f"'target_label' is not a valid label name for the {a} action (no $ references here)")
        if a in ("lowercase", "uppercase", "keepequal", "dropequal") and self.replacement != "$1":
            raise ValueError(f"'replacement' can not be set for {a} action")
        if a == "labelmap" and not _RELABEL_TARGET_RE.match(self.replacement):
            raise ValueError(f"'replacement' is invalid for the {a} action: expected a label name, "
                             "possibly with $1, ${1}, $name or ${name} references")
        if a in ("keepequal", "dropequal") and ("regex" in self.model_fields_set or modulus != 0
                                                or self.separator != ";" or self.replacement != "$1"):
            raise ValueError(f"{a} action requires only 'source_labels' and 'target_label', and no other fields "
                             "(regex, modulus, separator, replacement)")
        if a in ("labeldrop", "labelkeep") and ("source_labels" in self.model_fields_set or target or modulus != 0
                                                or self.separator != ";" or self.replacement != "$1"):
            raise ValueError(f"{a} action requires only 'regex', and no other fields "
                             "(source_labels, target_label, modulus, separator, replacement)")
        return self


# ---------------------------------------------------------------------------- applying


def hashmod(value: str, modulus: int) -> int:
    """Prometheus' hashmod: the last 8 bytes of the MD5 of ``value``, big-endian, modulo ``modulus``."""
    if modulus <= 0:
        raise ValueError("modulus must be a positive integer")
    digest = hashlib.md5(value.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % modulus


# Characters whose Python str.lower()/upper() (full case mapping) differ from Go's per-rune simple mapping.
_SIMPLE_LOWER_EXCEPTIONS = {"\u0130": "i"}


def _go_lower(s: str) -> str:
    if s.isascii():
        return s.lower()
    out = []
    for ch in s:
        low = _SIMPLE_LOWER_EXCEPTIONS.get(ch) or ch.lower()
        out.append(low if len(low) == 1 else ch)
    return "".join(out)


def _go_upper(s: str) -> str:
    if s.isascii():
        return s.upper()
    out = []
    for ch in s:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


@dataclass(frozen=True)
class _Rule:
    cfg: RelabelConfig
    regex: GoRegex
    target: str
    default_regex: bool


class Relabeler:
    """Applies relabel configs in order, as Prometheus' ``relabel.Process``; results are memoized."""

    def __init__(self, configs: Sequence[RelabelConfig], *, memo_size: int = 4096) -> None:
        self._rules = tuple(
            _Rule(cfg, compile_go_regex(cfg.regex), cfg.target_label or "", cfg.regex == "(.*)") for cfg in configs
        )
        self._memo_size = memo_size
        self._memo: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...] | None] = {}

    def __len__(self) -> int:
        return len(self._rules)

    def apply(self, labels: dict[str, str]) -> dict[str, str] | None:
        """The relabeled label set (a new dict), or None if a rule dropped it."""
        if not self._rules:
            return {k: v for k, v in labels.items() if v != ""}
        key = tuple(labels.items())
        try:
            cached = self._memo[key]
        except KeyError:
            result = self._process(labels)
            cached = None if result is None else tuple(result.items())
            if self._memo_size > 0:
                if len(self._memo) >= self._memo_size:
                    try:
                        self._memo.pop(next(iter(self._memo)), None)  # the oldest entry
                    except (StopIteration, RuntimeError):
                        pass
                self._memo[key] = cached
            return result
        return None if cached is None else dict(cached)

    def _process(self, labels: dict[str, str]) -> dict[str, str] | None:
        lset = {k: v for k, v in labels.items() if v != ""}
        for rule in self._rules:
            if not self._relabel(rule, lset):
                return None
        return lset

    @staticmethod
    def _relabel(rule: _Rule, lset: dict[str, str]) -> bool:
        """One rule, in place on ``lset``; False when the label set is dropped."""
        cfg = rule.cfg
        action = cfg.action
        val = cfg.separator.join(lset.get(name, "") for name in cfg.source_labels)
        if action == "drop":
            return rule.regex.fullmatch(val) is None
        if action == "keep":
            return rule.regex.fullmatch(val) is not None
        if action == "dropequal":
            return lset.get(rule.target, "") != val
        if action == "keepequal":
            return lset.get(rule.target, "") == val
        if action == "replace":
            if val == "" and rule.default_regex and "$" not in rule.target and "$" not in cfg.replacement:
                _set(lset, rule.target, cfg.replacement)
                return True
            m = rule.regex.fullmatch(val)
            if m is None:
                return True
            target = go_expand(rule.target, rule.regex, m)
            if not LABEL_NAME_RE.match(target):
                return True
            _set(lset, target, go_expand(cfg.replacement, rule.regex, m))
        elif action == "lowercase":
            _set(lset, rule.target, _go_lower(val))
        elif action == "uppercase":
            _set(lset, rule.target, _go_upper(val))
        elif action == "hashmod":
            _set(lset, rule.target, str(hashmod(val, cfg.modulus or 0)))
        elif action == "labelmap":
            # Over the labels as they were before this rule, in label-name order (Prometheus' sorted label set).
            for name, value in sorted(lset.items()):
                m = rule.regex.fullmatch(name)
                if m is not None:
                    _set(lset, go_expand(cfg.replacement, rule.regex, m), value)
        elif action == "labeldrop":
            for name in [n for n in lset if rule.regex.fullmatch(n) is not None]:
                del lset[name]
        elif action == "labelkeep":
            for name in [n for n in lset if rule.regex.fullmatch(n) is None]:
                del lset[name]
        else:  # pragma: no cover - the config model admits no other action
            raise ValueError(f"unknown relabel action {action!r}")
        return True


def _set(lset: dict[str, str], name: str, value: str) -> None:
    """Prometheus' labels.Builder.Set: an empty value deletes the label."""
    if value == "":
        lset.pop(name, None)
    else:
        lset[name] = value
