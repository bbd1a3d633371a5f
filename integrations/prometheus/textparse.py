"""Parse a scraped body, Prometheus text exposition 0.0.4 or OpenMetrics 1.0 text, exactly as
Prometheus 2.42 does: the same bodies accepted and rejected, the same series and values yielded.

Why hand-written: parsing is the measured hot path of the scrape import. prometheus_client 0.26's
parser (``prometheus_client.parser`` / ``prometheus_client.openmetrics.parser``) is the baseline,
and it is both slower than we need and more lenient or stricter than Prometheus in places. The
goal is at least 10x its speed on repeated scrapes of the same target, which a general-purpose
parser cannot reach: :class:`TextParser` remembers, per target, the exact text of every series
part it has already validated, so a repeated line costs a split, one dict look-up and a float
conversion; and it remembers the previous body's shape (every line but the sample values), so a
body that differs from the previous one only in values costs a split, two tuple comparisons and
the conversion of the values that changed (``benchmarks/bench_parse.py`` measures it). A body
parsed anew (a new target's first, or one whose shape changed) in the plain form of text 0.0.4
(``name{a="x"} value``, HELP and TYPE lines, no escape, timestamp or exemplar) is read by the C
extension ``integrations.prometheus._promfast`` where it is built, which gives what the parser below
gives and hands any other body, and so every error, to it (``benchmarks/bench_scrape_scale.py``'s
first round: 350 ms of Python for a 100k-series body, 64 ms in C).

The grammar is that of Prometheus' ``model/textparse`` (``promlex.l`` + ``promparse.go`` and
``openmetricslex.l`` + ``openmetricsparse.go`` as of 2.42), quirks included:

* text 0.0.4: spaces and tabs between any tokens, blank lines, free comments; a trailing comma
  in a label set, and even no comma between two labels; a value right after ``}`` (or a sign
  right after the name: ``a+1``) with no space; a raw newline inside a quoted label value; a
  NUL byte at the start of an entry ends the body; the end of the body ends the last line; HELP
  text loses its first character (the separator, whatever it is); ``# TYPE`` is case-sensitive;
  timestamps are int64 milliseconds, digits only. Whitespace before a sample's name fails the
  scrape (Prometheus keeps it in the name), and so does a repeated label name or ``__name__``
  among the labels.
* OpenMetrics: exactly one space between tokens, no blank lines, no free comments, no trailing
  comma, ``# EOF`` last; float timestamps in seconds (``int64(ts * 1000)``); exemplars parsed and
  dropped; a ``# UNIT`` must be a ``_``-separated suffix of its metric name.
* values and timestamps are what Go's ``strconv.ParseFloat`` accepts with ``p``, ``P`` and ``_``
  banned (``NaN``, ``Inf``, ``+inf``, ``Infinity``, exponents; no hex, no underscores, no
  out-of-range literals such as ``1e400``); label values and HELP must be valid UTF-8;
  exemplars only on samples named ``*_total`` or ``*_bucket``.

Every step is linear in the body, whatever it holds (a scrape target is a peer like any other):
the regexes are possessive, so no run of digits or characters is ever taken back and tried again; a
text label value over many lines is joined once; timestamps are read after their leading zeros,
at most 19 digits. ``ParseError`` is the only error a body raises.

Families (Prometheus itself has none; they are our grouping): samples are grouped under the
family of the ``# TYPE`` / ``# HELP`` / ``# UNIT`` line in force when their name is that family's
name plus a suffix allowed for its type (``_bucket``, ``_sum``, ``_count``, ``_created`` ...);
any other sample starts a family of its own, named as the sample. Family names are unique in the
result: a name seen again later appends to the family first seen.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field
from itertools import compress, repeat, takewhile
from operator import attrgetter, itemgetter, ne
from sys import intern

try:  # the plain-form body in C, where it is built (setup.py); the Python parser below is its twin
    from integrations.prometheus import _promfast
except ImportError:  # pragma: no cover - a build without the C extension
    _promfast = None  # type: ignore[assignment]

__all__ = ["ParseError", "ParsedFamily", "ParsedSample", "TextParser", "go_float", "parse"]

ParsedSample = tuple[str, tuple[tuple[str, str], ...], float, "int | None", str]
"""(sample name, labels in exposition order, value, timestamp in ms or None, series key)."""


class ParseError(ValueError):
    """The body is not valid exposition; ``line`` is the 1-based line of the offending text."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(slots=True)
class ParsedFamily:
    name: str
    type: str
    help: str
    unit: str
    samples: list[ParsedSample] = field(default_factory=list)


# --------------------------------------------------------------------------- lexical pieces

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
# Possessive quantifiers and no two adjacent runs that can take the same digits: the regex engine
# never backtracks into a run, so a long run of digits costs linear time whether it matches or not.
_GO_DECIMAL = re.compile(r"[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][+-]?+[0-9]++)?+")
_INF = float("inf")
_GO_SPECIAL = {"inf": _INF, "+inf": _INF, "-inf": -_INF, "infinity": _INF, "+infinity": _INF,
               "-infinity": -_INF, "nan": float("nan")}
_FINITE_TAIL = "0123456789."
_SPACE_OR_UNDERSCORE = re.compile("[\t\r\x0b\x0c\x1c-\x1f _]")  # ASCII whitespace to Python, "_"
_INT64_MAX = 2**63 - 1
_ESCAPE = re.compile(r'\\([\\"n])')
_HELP_ESCAPE = re.compile(r"\\([\\n])")
_UNESCAPED = {"\\": "\\", '"': '"', "n": "\n"}

TEXT_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary",
              "untyped": "untyped"}  # case-sensitive in 2.42
OPENMETRICS_TYPES = frozenset({"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset",
                               "unknown"})

# Sample-name suffixes that keep a sample in the family in force, by family type.
_TEXT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("",),
    "summary": ("", "_count", "_sum", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}
_OM_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "info": ("_info",),
}
_NO_SUFFIX = ("",)


def go_float(s: str) -> float:
    """``strconv.ParseFloat(s, 64)`` as Prometheus calls it (``p``, ``P``, ``_`` refused); ValueError otherwise."""
    if _GO_DECIMAL.fullmatch(s):
        v = float(s)
        if v == _INF or v == -_INF:
            raise ValueError(f"value out of range: {_quote(s)}")
        return v
    special = _GO_SPECIAL.get(s.lower())
    if special is None:
        raise ValueError(f"invalid float syntax: {_quote(s)}")
    return special


def _value(val: str) -> float:
    """``go_float(val)``, faster for the common case of a finite decimal."""
    try:
        v = float(val)
    except ValueError:
        return go_float(val)
    if val[-1] in _FINITE_TAIL and val[0] > " " and val.isascii() and "_" not in val and v - v == 0.0:
        return v
    return go_float(val)


def _quote(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _unescape(raw: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], raw) if "\\" in raw else raw


class _Invalid(Exception):
    """A lexing or parsing error at offset ``pos`` of the entry's text."""

    def __init__(self, pos: int, message: str) -> None:
        self.pos = pos
        self.message = message


class _NeedMore(Exception):
    """Text format: a quoted label value runs on past the end of the line."""


_STOP = object()  # text format: a NUL byte where an entry starts ends the body
_SKIP = ("skip",)  # cached for a line that is no entry (blank, or a comment): skipped at once when seen again
_SLOW_ENTRIES = 4096  # the most sample entries read by the slow path that a parse keeps, to reuse on the same lines


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and (s[i] == " " or s[i] == "\t"):
        i += 1
    return i


def _token_at(s: str, i: int) -> str:
    """What the lexer found at ``i``, for messages."""
    if i >= len(s):
        return "end of line"
    return _quote(s[i:])


# --------------------------------------------------------------------------- one entry, the slow way


def _quoted_end(s: str, i: int, om: bool, has_nl: bool) -> int:
    """``s[i]`` is the opening quote; the offset just after the closing quote. The lexer's rule is
    ``"(\\\\.|[^\\\\"])*"``, ``.`` being anything but a newline; a text line without the closing
    quote may go on on the next line (OpenMetrics lines never hold a newline)."""
    j = i + 1
    q = -1
    while True:
        if q < j:  # found once per closing-quote candidate: escapes before it do not scan again
            q = s.find('"', j)
        if q < 0:
            if has_nl and not om:
                raise _NeedMore
            raise _Invalid(i, f"unterminated label value {_quote(s[i:])}")
        b = s.find("\\", j, q)
        if b < 0:
            return q + 1
        if s[b + 1] == "\n":
            raise _Invalid(b, f"backslash before a newline in label value {_quote(s[i:b])}")
        j = b + 2


# A series part in the plainest form both formats share: a name, and optionally a non-empty label set
# with one comma between pairs, no blanks and no quote, backslash or newline in a value (which the
# lexer then takes as it is written).
_SIMPLE_SERIES = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*+(?:\{[a-zA-Z_][a-zA-Z0-9_]*+="[^"\\\n]*+"'
                            r'(?:,[a-zA-Z_][a-zA-Z0-9_]*+="[^"\\\n]*+")*+\})?+')
_NO_QUOTE_OR_BACKSLASH = re.compile(r'[^"\\]*+').fullmatch  # a line that leaves a quoted value open or closed
# From inside a quoted value: values closed and opened again, as many as follow; one value closed.
_CLOSED_AND_OPENED = re.compile(r'(?:(?:[^"\\]++|\\.)*+"[^"]*+")*+')
_CLOSES = re.compile(r'(?:[^"\\]++|\\.)*+"')
# Text format: one ``name = "value"`` pair and the blanks after it, as the lexer takes it (a raw newline
# may be in the value, a backslash before one may not). Possessive throughout: linear, match or not.
_TEXT_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*+)[ \t]*+=[ \t]*+"((?:[^"\\]++|\\.)*+)"[ \t]*+')
# A run of such pairs, each after blanks and before an optional comma (as the loop of ``_labels`` reads
# them): matched at once, and its pairs' names and values found in one more pass.
_TEXT_PAIRS = re.compile(r'(?:[ \t]*+[a-zA-Z_][a-zA-Z0-9_]*+[ \t]*+=[ \t]*+"(?:[^"\\]++|\\.)*+"[ \t]*+,?+)*+')
_TEXT_PAIR_UNITS = re.compile(r'[ \t]*+([a-zA-Z_][a-zA-Z0-9_]*+)[ \t]*+=[ \t]*+"((?:[^"\\]++|\\.)*+)"[ \t]*+,?+').findall


def _quoted_after(line: str, quoted: bool) -> bool:
    """Whether a quoted label value is open at the end of ``line``, given whether one was at its start
    (the lexer's rule ``"(\\\\.|[^\\\\"])*"``; a backslash at the end escapes the newline after it).
    Linear at C speed: with no backslash, each quote opens or closes a value; else the values closed
    and opened again are matched at once, and then whether one more closes."""
    if "\\" not in line:
        return quoted != (line.count('"') % 2 == 1)
    i = 0
    if not quoted:  # outside a value a backslash is only a character
        i = line.find('"') + 1
        if not i:
            return False
    i = _CLOSED_AND_OPENED.match(line, i).end()  # type: ignore[union-attr]  # it matches an empty run too
    return _CLOSES.match(line, i) is None


def _labels(s: str, i: int, om: bool, has_nl: bool, bad_utf8: bool, where: str = "label set",
            ) -> tuple[int, list[tuple[str, str]]]:
    """``s[i-1]`` is ``{``; parse up to and including ``}``. Returns (offset after ``}``, raw pairs)."""
    pairs: list[tuple[str, str]] = []
    if om:
        first = True
        while True:
            if i < len(s) and s[i] == "}":
                return i + 1, pairs
            if not first:
                if i >= len(s) or s[i] != ",":
                    raise _Invalid(i, f"expected comma or right brace in {where}, got {_token_at(s, i)}")
                i += 1
            m = _LABEL_NAME.match(s, i)
            if m is None:
                what = "label name or right brace" if first else "label name after comma"
                raise _Invalid(i, f"expected {what} in {where}, got {_token_at(s, i)}")
            first = False
            i = _label_value(s, m, True, has_nl, bad_utf8, pairs)
    end = _TEXT_PAIRS.match(s, i).end()  # type: ignore[union-attr]  # it matches an empty run too
    if end > i and not (bad_utf8 and not _encodes(s[i:end])):  # else the loop says which value is not UTF-8
        found = _TEXT_PAIR_UNITS(s, i, end)
        pairs = list(zip(map(intern, map(itemgetter(0), found)), map(itemgetter(1), found), strict=True))
        i = end
    while True:
        i = _skip_ws(s, i)
        if i < len(s) and s[i] == "}":
            return i + 1, pairs
        p = _TEXT_PAIR.match(s, i)
        if p is not None:  # a well-formed pair in one step; anything else is read below, and its error said
            if bad_utf8:
                _check_utf8(p.group(2), p.start(2) - 1, "label value")
            name, value = p.group(1, 2)
            pairs.append((intern(name), value))  # one string per label name, not one per series
            i = p.end()
        else:
            m = _LABEL_NAME.match(s, i)
            if m is None:
                raise _Invalid(i, f"expected label name or right brace in {where}, got {_token_at(s, i)}")
            i = _skip_ws(s, _label_value(s, m, False, has_nl, bad_utf8, pairs))
        if i < len(s) and s[i] == ",":  # a comma is optional, a trailing one allowed
            i += 1


def _label_value(s: str, name: re.Match[str], om: bool, has_nl: bool, bad_utf8: bool,
                 pairs: list[tuple[str, str]]) -> int:
    """``= "value"`` after the label name ``name`` (text: whitespace allowed around ``=``); appends
    the raw pair and returns the offset after the closing quote."""
    i = name.end() if om else _skip_ws(s, name.end())
    if i >= len(s) or s[i] != "=":
        raise _Invalid(i, f"expected '=' after label name {name.group()!r}, got {_token_at(s, i)}")
    i = i + 1 if om else _skip_ws(s, i + 1)
    if i >= len(s) or s[i] != '"':
        raise _Invalid(i, f"expected quoted label value, got {_token_at(s, i)}")
    end = _quoted_end(s, i, om, has_nl)
    raw = s[i + 1:end - 1]
    if bad_utf8:
        _check_utf8(raw, i, "label value")
    pairs.append((name.group(), raw))
    return end


def _check_label_names(pairs: list[tuple[str, str]], pos: int) -> None:
    """Prometheus fails a scrape whose sample repeats a label name (``__name__`` included)."""
    if pairs:
        seen = {"__name__"}
        for k, _ in pairs:
            if k in seen:
                raise _Invalid(pos, f"label name {k!r} is not unique")
            seen.add(k)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_utf8(text: str, pos: int, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(pos, f"{what} is not valid UTF-8: {_quote(text)}") from None


def _float_at(s: str, start: int, end: int, what: str) -> float:
    try:
        return go_float(s[start:end])
    except ValueError as e:
        raise _Invalid(start, f"invalid {what}: {e}") from None


def _entry_text(s: str, has_nl: bool, bad_utf8: bool) -> tuple | object | None:
    """One entry of a text 0.0.4 body starting at ``s[0]`` (one line, or several when a quoted
    label value holds raw newlines). Returns None (blank line, comment), _STOP, ("meta", kind,
    name, text) or ("sample", key, name, raw label pairs, value, timestamp)."""
    n = len(s)
    i = _skip_ws(s, 0)
    if i == n:
        return None
    c = s[i]
    if c == "\0":
        return _STOP
    if i and c != "#":
        # Prometheus takes the whitespace into the metric name, then finds the name invalid.
        raise _Invalid(0, f"invalid metric name (leading whitespace) in {_quote(s)}")
    if c == "#":
        j = _skip_ws(s, i + 1)
        if j == i + 1 or not (s.startswith("HELP", j) or s.startswith("TYPE", j)) or j + 4 >= n or s[j + 4] not in " \t":
            return None
        kind = s[j:j + 4]
        k = _skip_ws(s, j + 4)
        m = _METRIC_NAME.match(s, k)
        if m is None:
            raise _Invalid(k, f"expected metric name after {kind}, got {_token_at(s, k)}")
        # The lexer's {C}* loses to its whitespace rule on blank text; otherwise its first character,
        # whatever it is, is dropped.
        rest = s[m.end():]
        text = rest[1:] if rest.strip(" \t") else ""
        if kind == "TYPE":
            typ = TEXT_TYPES.get(text)
            if typ is None:
                raise _Invalid(m.end() + 1, f"invalid metric type {_quote(text)}")
            return ("meta", kind, m.group(), typ)
        if bad_utf8:
            _check_utf8(text, m.end() + 1, "HELP text")
        if "\\" in text:
            text = _HELP_ESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], text)
        return ("meta", kind, m.group(), text)
    m = _METRIC_NAME.match(s, i)
    if m is None:
        raise _Invalid(i, f"expected metric name, comment or blank line, got {_token_at(s, i)}")
    j = _skip_ws(s, m.end())
    pairs: list[tuple[str, str]] = []
    if j < n and s[j] == "{":
        j, pairs = _labels(s, j + 1, False, has_nl, bad_utf8)
        key = s[i:j]
        j = _skip_ws(s, j)
    else:
        key = m.group()
    k = j
    while k < n and s[k] not in "{ \t":
        k += 1
    if k == j:
        raise _Invalid(j, f"expected value after metric {_quote(key)}, got {_token_at(s, j)}")
    value = _float_at(s, j, k, "value")
    k = _skip_ws(s, k)
    ts = None
    if k < n:
        t = k
        while t < n and "0" <= s[t] <= "9":
            t += 1
        if t == k:
            raise _Invalid(k, f"expected timestamp or end of line, got {_token_at(s, k)}")
        digits = s[k:t].lstrip("0")
        # int64: at most 19 significant digits (also keeps int() off inputs beyond its digit limit)
        if len(digits) > 19 or (digits and int(digits) > _INT64_MAX):
            raise _Invalid(k, f"timestamp out of range: {_quote(s[k:t])}")
        ts = int(digits) if digits else 0
        t2 = _skip_ws(s, t)
        if t2 < n:
            raise _Invalid(t2, f"expected end of line after timestamp, got {_token_at(s, t2)}")
    _check_label_names(pairs, i)
    return ("sample", key, intern(m.group()), pairs, value, ts)  # a name is shared by its family's series


def _om_timestamp(s: str, start: int, end: int, what: str) -> int:
    ts = _float_at(s, start, end, what)
    if ts != ts or ts == _INF or ts == -_INF:
        raise _Invalid(start, f"invalid {what} {_quote(s[start:end])}")
    ms = int(ts * 1000)
    return ms if -_INT64_MAX - 1 <= ms <= _INT64_MAX else -_INT64_MAX - 1  # Go's int64(float64) on amd64


def _om_token(s: str, i: int) -> int:
    """``s[i]`` is a space; the end of the ``{S}[^ \\n]+`` token starting there (``i`` if there is none)."""
    k = s.find(" ", i + 1)
    if k < 0:
        k = len(s)
    return k if k > i + 1 else i


def _entry_om(s: str, has_nl: bool, bad_utf8: bool) -> tuple | None:
    """One OpenMetrics line. Returns ("eof",), ("meta", kind, name, text) or ("sample", key, name,
    raw label pairs, value, timestamp)."""
    n = len(s)
    if n == 0:
        raise _Invalid(0, "blank line (not allowed in OpenMetrics)")
    if s[0] == "#":
        if s.startswith("# EOF"):
            if n > 5:
                raise _Invalid(5, f"unexpected data after # EOF: {_quote(s)}")
            return ("eof",)
        if n < 7 or s[1] != " " or s[2:7] not in ("HELP ", "TYPE ", "UNIT "):
            raise _Invalid(0, f"expected '# HELP ', '# TYPE ', '# UNIT ' or '# EOF', got {_quote(s)}")
        kind = s[2:6]
        m = _METRIC_NAME.match(s, 7)
        if m is None:
            raise _Invalid(7, f"expected metric name after {kind}, got {_token_at(s, 7)}")
        e = m.end()
        if e >= n or s[e] != " " or not has_nl:
            raise _Invalid(e, f"expected a space and text after {kind} {m.group()}, got {_token_at(s, e)}")
        name, text = m.group(), s[e + 1:]
        if kind == "TYPE":
            if text not in OPENMETRICS_TYPES:
                raise _Invalid(e + 1, f"invalid metric type {_quote(text)}")
        elif kind == "UNIT":
            if text and not (name.endswith(text) and len(name) > len(text) and name[-len(text) - 1] == "_"):
                raise _Invalid(e + 1, f"unit {_quote(text)} is not a suffix of metric {name!r}")
        else:
            if bad_utf8:
                _check_utf8(text, e + 1, "HELP text")
            text = _unescape(text)
        return ("meta", kind, name, text)
    m = _METRIC_NAME.match(s)
    if m is None:
        raise _Invalid(0, f"expected metric name or '# ', got {_quote(s)}")
    j = m.end()
    pairs: list[tuple[str, str]] = []
    if j < n and s[j] == "{":
        j, pairs = _labels(s, j + 1, True, has_nl, bad_utf8)
    key = s[:j]
    if j >= n or s[j] != " " or (k := _om_token(s, j)) == j:
        raise _Invalid(j, f"expected a space and a value after metric {_quote(key)}, got {_token_at(s, j)}")
    value = _float_at(s, j + 1, k, "value")
    ts = None
    if k < n and not s.startswith(" # {", k):
        t = _om_token(s, k)
        if t == k:
            raise _Invalid(k, f"expected timestamp or exemplar, got {_token_at(s, k)}")
        ts = _om_timestamp(s, k + 1, t, "timestamp")
        k = t
        if k < n and not s.startswith(" # {", k):
            raise _Invalid(k, f"expected end of line or exemplar after timestamp, got {_token_at(s, k)}")
    if k < n:
        if not m.group().endswith(("_total", "_bucket")):
            raise _Invalid(k, f"metric name {m.group()} does not support exemplars (only *_total and *_bucket do)")
        _exemplar(s, k + 4, has_nl, bad_utf8)
    elif not has_nl:
        raise _Invalid(n, "data does not end with # EOF")
    _check_label_names(pairs, 0)
    return ("sample", key, intern(m.group()), pairs, value, ts)  # a name is shared by its family's series


def _exemplar(s: str, i: int, has_nl: bool, bad_utf8: bool) -> None:
    """Validate the exemplar `` # {labels} value [timestamp]`` whose labels start at ``s[i]``; it is dropped."""
    n = len(s)
    j, _ = _labels(s, i, True, has_nl, bad_utf8, "exemplar labels")
    if j >= n or s[j] != " " or (k := _om_token(s, j)) == j:
        raise _Invalid(j, f"expected a space and a value after exemplar labels, got {_token_at(s, j)}")
    _float_at(s, j + 1, k, "exemplar value")
    if k < n:
        if s[k] != " " or (t := _om_token(s, k)) == k:
            raise _Invalid(k, f"expected exemplar timestamp or end of line, got {_token_at(s, k)}")
        _om_timestamp(s, k + 1, t, "exemplar timestamp")
        if t < n:
            raise _Invalid(t, f"expected end of line after exemplar timestamp, got {_token_at(s, t)}")
    if not has_nl:
        raise _Invalid(n, "data does not end with # EOF")


# --------------------------------------------------------------------------- the parser


def _resolve(name: str, ctx: str, om: bool) -> tuple[str, str]:
    """The family a sample named ``name`` belongs to under context ``ctx`` ("type name" of the
    family in force, or ""), and the context after it."""
    if ctx:
        ctx_type, _, ctx_name = ctx.partition(" ")
        if name.startswith(ctx_name):
            allowed = (_OM_SUFFIXES if om else _TEXT_SUFFIXES).get(ctx_type, _NO_SUFFIX)
            if name[len(ctx_name):] in allowed:
                return intern(ctx_name), ctx  # kept with every series of the family: one string
    return name, ("unknown " if om else "untyped ") + name


class TextParser:
    """One per scrape target: keeps a cache of the previous scrapes' series so repeated scrapes are fast.

    The cache maps the exact text of a series part (``name{labels}``) to its parsed name and
    labels and to the family it fell in under the metadata in force; it is rebuilt from the last
    scrape's series when it grows past four times their number, so it stays bounded however the
    target's series churn. On top of it, one :class:`_Template` per format: the shape of the last
    body parsed, replayed when the next body differs from it only in sample values."""

    CACHE_FACTOR = 4
    CACHE_SLACK = 256

    def __init__(self, *, template: bool = True) -> None:
        # per format (False: text 0.0.4, True: OpenMetrics): series key -> entry, metadata line -> entry
        self._series: tuple[dict[str, tuple], dict[str, tuple]] = ({}, {})
        self._meta: tuple[dict[str, tuple], dict[str, tuple]] = ({}, {})
        self._templates: list[_Template | None] = [None, None]
        self._template = template  # False: a parser used once, whose template nothing would replay
        #: Whether a body is first offered to the C reader of the plain form (``_promfast``) where it is built.
        self.fast = True

    def parse(self, body: bytes | bytearray | str, openmetrics: bool = False) -> list[ParsedFamily]:
        """Parse one scraped body; raises ParseError when Prometheus would fail the scrape."""
        bad_utf8 = False
        if isinstance(body, str):
            text = body
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = body.decode("utf-8", "surrogateescape")
                bad_utf8 = True
        om = bool(openmetrics)
        # The template stands for parses of bodies decoded without error only (Prometheus then checks
        # the UTF-8 of label values and HELP text, and the template does not).
        template = None if bad_utf8 else self._templates[om]
        if template is not None:
            families = template.apply(text)
            if families is not None:
                return families
        series, meta = self._series[om], self._meta[om]
        self._templates[om] = None  # a failed parse leaves no template
        fast = None
        if _promfast is not None and self.fast and not om and not bad_utf8:
            # A text body wholly in the plain form (a new target's, or one whose shape changed), read
            # in C as the Python parser reads it, with its shape (None: it holds a blank line, which no
            # template replays); None for any other body, which the parser then reads.
            fast = _promfast.parse_text(text, ParsedFamily, True)
        if fast is not None:
            families, shape = fast
            if self._template:
                self._templates[om] = None if shape is None else _Template.from_shape(text, families, shape)
        else:
            families = self._parse(text, om, bad_utf8, series, meta)
            if not bad_utf8 and self._template:
                self._templates[om] = _Template.build(text, families)
        n_series = sum(len(f.samples) for f in families)
        if len(series) > self.CACHE_FACTOR * n_series + self.CACHE_SLACK:
            kept = {s[4]: series[s[4]] for f in families for s in f.samples if s[4] in series}
            series.clear()
            series.update(kept)
        # HELP, TYPE and UNIT lines, and blank and comment lines (cached as skipped): bounded by
        # what the body holds, so comments do not push the metadata out scrape after scrape.
        if len(meta) > self.CACHE_FACTOR * (len(families) * 3 + text.count("\n#") + text.count("\n\n")) + self.CACHE_SLACK:
            meta.clear()
        return families

    def _parse(self, text: str, om: bool, bad_utf8: bool, series: dict[str, tuple],
               meta: dict[str, tuple]) -> list[ParsedFamily]:
        get = series.get
        meta_get = meta.get
        families: dict[str, ParsedFamily] = {}
        out: list[ParsedFamily] = []
        default_type = "unknown" if om else "untyped"
        ctx = ""
        cur_name = ""
        cur_append = None
        lines = text.split("\n")
        last = lines.pop()  # "" when the body ends with a newline: the line after it is no line
        n_lines = len(lines)
        it = iter(lines)
        length_hint = it.__length_hint__
        entry_of = _entry_om if om else _entry_text
        simple_series = _SIMPLE_SERIES.fullmatch
        last_name = last_ctx = ""
        last_resolved = ("", "")
        slow: dict[str, tuple] = {}  # first line -> (sample entry, the lines it went on over), of the slow path
        for line in it:
            if not line and not om:  # a blank line, no entry in the text format
                continue
            # The fast path: "<known series part> <value>" or "<known series part> <value> <timestamp>".
            head, _, val = line.rpartition(" ")
            ent = get(head)
            ts = None
            if ent is None:
                if not line or line[:1] == "#":
                    m = meta_get(line)
                    if m is _SKIP:
                        continue
                    if m is not None and m[0] == "meta":  # a HELP, TYPE or UNIT line seen before
                        _, kind, fam_name, text, ctx = m  # ctx: the context after a TYPE, or of a new family
                        fam = families.get(fam_name)
                        if fam is None:
                            fam = families[fam_name] = ParsedFamily(fam_name, default_type, "", "", [])
                            out.append(fam)
                        elif kind != "TYPE":
                            ctx = f"{fam.type} {fam_name}"
                        if kind == "TYPE":
                            fam.type = text
                        elif kind == "HELP":
                            fam.help = text
                        else:
                            fam.unit = text
                        cur_name = fam_name
                        cur_append = fam.samples.append
                        continue
                head, _, tval = head.rpartition(" ")
                ent = get(head)
                if ent is not None:
                    val, tval = tval, val
                    if om:
                        try:
                            t = float(tval)
                        except ValueError:
                            ent = None
                        else:
                            if (t - t == 0.0 and tval.isascii() and "_" not in tval and tval[-1] in _FINITE_TAIL
                                    and tval[0] > " " and -9.2e15 < t < 9.2e15):
                                ts = int(t * 1000)
                            else:
                                ent = None
                    elif tval.isdigit() and tval.isascii() and len(tval) < 19:
                        ts = int(tval)
                    else:
                        ent = None
            if ent is not None:
                try:
                    v = float(val)
                except ValueError:
                    v = _INF
                if not (v - v == 0.0 and val[-1] in _FINITE_TAIL and val[0] > " " and val.isascii() and "_" not in val):
                    # NaN, Inf or a form float() does not take: what the slow path makes of the value of a
                    # known series, unless a tab or brace would end its token there first.
                    if "\t" in val or "{" in val:
                        ent = None
                    else:
                        try:
                            v = go_float(val)
                        except ValueError:
                            ent = None
            if ent is None and slow:
                # An entry the slow path has read in this body, on the same lines again: its series is known.
                seen = slow.get(line)
                if seen is not None:
                    i = n_lines - length_hint()  # the index of the next line
                    if lines[i:i + len(seen[1])] == seen[1]:
                        for _ in seen[1]:
                            next(it)
                        _, key, _, _, v, ts = seen[0]
                        ent = series[key]
            if ent is None and not bad_utf8:
                # A new series in the plainest form, ``name{a="x",b="y"} value`` (no blanks, escapes,
                # timestamp or exemplar), read in two passes: what the slow path makes of such a line,
                # at a fraction of its cost (a first scrape is all new series). A repeated label name
                # or an invalid value goes on to the slow path, which says what is wrong.
                head, sp, val = line.rpartition(" ")
                if sp and simple_series(head) is not None:
                    brace = head.find("{")
                    if brace < 0:
                        name, names, labels = intern(head), (), ()
                    else:
                        name = intern(head[:brace])
                        # No value holds a quote: every quote but the last is in a '="' or a '",', so with
                        # each '",' made a '="', splitting at '="' gives the names and values in turn.
                        flat = head[brace + 1:-2].replace('",', '="').split('="')
                        names = flat[::2]
                        labels = tuple(zip(map(intern, names), flat[1::2], strict=True))
                    try:
                        v = float(val)
                    except ValueError:
                        v = _INF
                    if (v - v == 0.0 and val[-1] in _FINITE_TAIL and val[0] > " " and val.isascii() and "_" not in val
                            and "__name__" not in names and (len(names) < 2 or len(set(names)) == len(names))):
                        ent, ts = (name, labels, head, None, "", ""), None  # its family is found below
            if ent is not None:
                name, labels, key, ctx_in, fam_name, ctx_out = ent
                if ctx_in != ctx:
                    if name != last_name or ctx != last_ctx:  # a family's series come one after another
                        last_name, last_ctx, last_resolved = name, ctx, _resolve(name, ctx, om)
                    fam_name, ctx_out = last_resolved
                    series[key] = (name, labels, key, ctx, fam_name, ctx_out)
                ctx = ctx_out
                if fam_name != cur_name:
                    fam = families.get(fam_name)
                    if fam is None:
                        fam = families[fam_name] = ParsedFamily(fam_name, default_type, "", "", [])
                        out.append(fam)
                    cur_name = fam_name
                    cur_append = fam.samples.append
                cur_append((name, labels, v, ts, key))  # type: ignore[misc]
                continue

            # The slow path: anything else, parsed as Prometheus' lexer does.
            lineno = n_lines - length_hint()  # also the index of the line after this one
            m = meta.get(line)
            extra = 0
            if m is None:
                m, extra = self._entry(entry_of, line, True, bad_utf8, it, lines, last, lineno)
                if extra < 0:
                    last = None
                elif m is None:
                    meta[line] = _SKIP
                elif m is not _STOP and m[0] == "meta":
                    meta[line] = (*m, f"{m[3] if m[1] == 'TYPE' else default_type} {m[2]}")
            if m is None or m is _SKIP:
                continue
            if m is _STOP:
                return out
            kind = m[0]
            if kind == "sample":
                ctx, cur_name, cur_append = self._add_sample(m, om, ctx, families, out, default_type, series)
                if extra >= 0:  # an entry the fast paths do not take, perhaps repeated: kept, its series known now
                    if len(slow) >= _SLOW_ENTRIES:
                        slow.clear()
                    slow[line] = (m, lines[lineno:lineno + extra])
            elif kind == "meta":
                ctx, cur_name = self._add_meta(m, families, out, default_type), ""
            else:
                if length_hint() or last:
                    raise ParseError(lineno + 1, f"unexpected data after # EOF: {_quote(next(it, last) or '')}")
                return out
        if last:
            lineno = n_lines + 1
            m, _ = self._entry(entry_of, last, False, bad_utf8, iter(()), [], None, lineno)
            if m is _STOP or (m is not None and m[0] == "eof"):
                return out
            if m is not None and m[0] == "sample":
                self._add_sample(m, om, ctx, families, out, default_type, series)
            elif m is not None:
                self._add_meta(m, families, out, default_type)
        if om:
            raise ParseError(n_lines + 1, "data does not end with # EOF")
        return out

    @staticmethod
    def _entry(entry_of, line: str, has_nl: bool, bad_utf8: bool, it, lines: list[str], last: str | None,
               lineno: int):
        """Parse one entry (joining following lines while a text label value runs on); returns it and
        how many extra lines it took (-1 when it took ``last``). ``it`` iterates over ``lines``, the
        next line being ``lines[lineno]``."""
        s = line
        extra = 0
        parts = [line]
        quoted: bool | None = None
        while True:
            try:
                return entry_of(s, has_nl, bad_utf8), extra
            except _NeedMore:
                # Take at once every line up to the first newline outside a quoted value, found in one
                # pass over them; parsing the entry again for each line added would be quadratic.
                if quoted is None:
                    quoted = _quoted_after(line, False)
                added = len(parts)
                while has_nl:
                    # The lines holding no quote or backslash leave an open value open: taken at once.
                    run = list(takewhile(_NO_QUOTE_OR_BACKSLASH, it)) if quoted else []
                    parts += run
                    extra += len(run)
                    if lineno + extra < len(lines):  # the line that ended the run, also taken from ``it``
                        nxt = lines[lineno + extra]
                        extra += 1
                    elif last:
                        nxt, has_nl, extra = last, False, -1
                    else:
                        break
                    parts.append(nxt)
                    quoted = _quoted_after(nxt, quoted)
                    if not quoted:
                        break
                if len(parts) == added:
                    raise ParseError(lineno, f"label value opened on this line never closed: {_quote(line)}") from None
                s = "\n".join(parts)
            except _Invalid as e:
                raise ParseError(lineno + s.count("\n", 0, e.pos), e.message) from None

    @staticmethod
    def _add_meta(m: tuple, families: dict[str, ParsedFamily], out: list[ParsedFamily], default_type: str) -> str:
        _, kind, name, text = m[:4]
        fam = families.get(name)
        if fam is None:
            fam = families[name] = ParsedFamily(name, default_type, "", "", [])
            out.append(fam)
        if kind == "TYPE":
            fam.type = text
        elif kind == "HELP":
            fam.help = text
        else:
            fam.unit = text
        return f"{fam.type} {name}"

    @staticmethod
    def _add_sample(m: tuple, om: bool, ctx: str, families: dict[str, ParsedFamily], out: list[ParsedFamily],
                    default_type: str, series: dict[str, tuple]):
        _, key, name, pairs, value, ts = m
        ent = series.get(key)
        if ent is not None and ent[3] == ctx:
            fam_name, ctx_out = ent[4], ent[5]
            labels = ent[1]
        else:
            labels = ent[1] if ent is not None else tuple((k, _unescape(v)) for k, v in pairs)
            fam_name, ctx_out = _resolve(name, ctx, om)
            series[key] = (name, labels, key, ctx, fam_name, ctx_out)
        fam = families.get(fam_name)
        if fam is None:
            fam = families[fam_name] = ParsedFamily(fam_name, default_type, "", "", [])
            out.append(fam)
        fam.samples.append((name, labels, value, ts, key))
        return ctx_out, fam_name, fam.samples.append


_SAMPLES = attrgetter("samples")


def _picker(idx: list[int]):
    """``seq -> tuple(seq[i] for i in idx)``, at C speed."""
    if len(idx) > 1:
        return itemgetter(*idx)
    if idx:
        i = idx[0]
        return lambda seq: (seq[i],)
    return lambda seq: ()


class _Template:
    """The shape of a parsed body: its comment lines whole and, for its sample lines, the text before
    the value (the series key followed by one space) and where the sample went. It is built only from
    a body ending with a newline whose every line is either a ``#`` line or exactly ``<series key>
    <value>`` (one space, a value Go's ParseFloat takes, no timestamp, no exemplar). A body with the
    same lines but for the values then parses as that body did, provided its values are valid too:
    each line's entry depends on its text only, and the family a sample joins on the metadata lines
    and sample names before it, all unchanged."""

    __slots__ = ("n_lines", "comments_at", "comments", "samples_at", "prefixes", "names", "labels",
                 "keys", "order", "families", "lines", "values")

    # Above this share of changed values (as seen on every BULK_STRIDE-th sample line), all values are
    # read again at once with C-level passes rather than the changed ones line by line.
    BULK_SHARE = 0.25
    BULK_STRIDE = 16

    @classmethod
    def build(cls, text: str, out: list[ParsedFamily]) -> _Template | None:
        """The template of ``text``, which parsed as ``out``; None when the body does not qualify."""
        lines = text.split("\n")
        if lines.pop():
            return None
        # Sample lines are matched, in order, to the next sample of a family (each family's samples
        # are in line order): the one family whose next sample's key is the text before the value.
        nxt: dict[str, list[int]] = {}
        pos = [0] * len(out)
        for fi, fam in enumerate(out):
            if fam.samples:
                nxt.setdefault(fam.samples[0][4], []).append(fi)
        comment_idx: list[int] = []
        sample_idx: list[int] = []
        fam_of: list[int] = []
        samples: list[ParsedSample] = []
        for n, line in enumerate(lines):
            if line[:1] == "#":
                comment_idx.append(n)
                continue
            head, sep, val = line.rpartition(" ")
            cands = nxt.pop(head, None) if sep else None
            if cands is None or len(cands) != 1:
                return None
            fi = cands[0]
            fam_samples = out[fi].samples
            sample = fam_samples[pos[fi]]
            if sample[3] is not None:
                return None
            try:
                # The line is "<key> <value>" then, so its own sample's key is the head, and its family
                # the one candidate: the matching is right.
                _value(val)  # go_float, faster for a finite decimal
            except ValueError:
                return None
            pos[fi] += 1
            if pos[fi] < len(fam_samples):
                nxt.setdefault(fam_samples[pos[fi]][4], []).append(fi)
            sample_idx.append(n)
            fam_of.append(fi)
            samples.append(sample)
        if nxt or not samples:  # a sample left unmatched (one spanning lines, after a NUL ...), or no sample
            return None
        return cls._make(lines, comment_idx, sample_idx, samples, fam_of, out)

    @classmethod
    def from_shape(cls, text: str, out: list[ParsedFamily], shape: bytes) -> _Template | None:
        """The template of ``text``, which the C reader (``_promfast.parse_text``) parsed as ``out``,
        reading its shape there: ``shape`` holds an int32 per line, -1 for a ``#`` line, else the
        index in ``out`` of the family the line's sample joined (the reader gives it only for a body
        whose every line is one or the other, each sample line ``<series key> <value>``). What
        ``build`` makes of the body when it makes a template, without matching lines to samples
        again; None when there is no sample."""
        fam_of = array("i")
        fam_of.frombytes(shape)
        lines = text.split("\n")
        lines.pop()
        sample_idx = list(compress(range(len(fam_of)), map((-1).__lt__, fam_of)))
        if not sample_idx or len(fam_of) != len(lines):
            return None
        comment_idx = list(compress(range(len(fam_of)), map((-1).__eq__, fam_of)))
        fam_seq = [fam_of[i] for i in sample_idx]
        taken = [iter(f.samples) for f in out]
        samples = [next(taken[fi]) for fi in fam_seq]
        return cls._make(lines, comment_idx, sample_idx, samples, fam_seq, out)

    @classmethod
    def _make(cls, lines: list[str], comment_idx: list[int], sample_idx: list[int], samples: list[ParsedSample],
              fam_of: list[int], out: list[ParsedFamily]) -> _Template:
        """The template of a body's ``lines``: its ``#`` lines at ``comment_idx``, its sample lines at
        ``sample_idx`` holding ``samples``, each of the family ``out[fam_of[i]]``."""
        t = cls()
        t.n_lines = len(lines)
        t.comments_at = _picker(comment_idx)
        t.comments = t.comments_at(lines)
        t.samples_at = _picker(sample_idx)
        t.lines = t.samples_at(lines)
        t.prefixes = tuple(s[4] + " " for s in samples)
        t.names = tuple(s[0] for s in samples)
        t.labels = tuple(s[1] for s in samples)
        t.keys = tuple(s[4] for s in samples)
        order = sorted(range(len(samples)), key=fam_of.__getitem__)
        t.order = None if order == list(range(len(samples))) else order
        slices = []
        start = 0
        for count in map(len, map(_SAMPLES, out)):
            slices.append(slice(start, start + count))
            start += count
        # the families' names, types, HELP, UNIT and the slices of their samples (grouped by family)
        t.families = (tuple(f.name for f in out), tuple(f.type for f in out), tuple(f.help for f in out),
                      tuple(f.unit for f in out), tuple(slices))
        # The last values, not the last samples: a tuple per sample kept from one scrape to the next
        # outlives the scrape's pause of the cyclic collector, which then walks every one of them
        # (a young collection over 500k tuples each round at 500k series, benchmarks/README.md).
        t.values = [s[2] for s in samples]
        return t

    def apply(self, text: str) -> list[ParsedFamily] | None:
        """The parse of ``text`` if it has this shape and valid values; None otherwise (the full parser
        then says what is wrong, and where)."""
        lines = text.split("\n")
        if lines.pop() or len(lines) != self.n_lines or self.comments_at(lines) != self.comments:
            return None
        sample_lines = self.samples_at(lines)
        values = self.values
        if sample_lines != self.lines:
            prev, stride = self.lines, self.BULK_STRIDE
            if sum(map(ne, sample_lines[::stride], prev[::stride])) > self.BULK_SHARE * len(prev[::stride]):
                read = self._read(sample_lines, None)
            else:
                read = self._read(sample_lines, list(compress(range(len(prev)), map(ne, sample_lines, prev))))
            if read is None:
                return None
            self.lines = sample_lines
            values = self.values = read
        samples = list(zip(self.names, self.labels, values, repeat(None), self.keys))
        if self.order is not None:
            samples = [samples[i] for i in self.order]
        fams = self.families
        return list(map(ParsedFamily, fams[0], fams[1], fams[2], fams[3], map(samples.__getitem__, fams[4])))

    def _read(self, sample_lines: tuple[str, ...], changed: list[int] | None) -> list[float] | None:
        """The values, the sample lines at ``changed`` (all when None) read again, with C-level passes."""
        lines, prefixes = sample_lines, self.prefixes
        if changed is not None:
            pick = _picker(changed)
            lines, prefixes = pick(lines), pick(prefixes)
        if not all(map(str.startswith, lines, prefixes)):
            return None
        vals = list(map(str.removeprefix, lines, prefixes))
        try:
            floats = list(map(float, vals))  # Python's float takes all that Go's ParseFloat takes ...
        except ValueError:
            return None
        # ... and also names (inf, nan), whitespace around, underscores, non-ASCII digits and out-of-range
        # literals (to inf): none of them among finite ASCII values without whitespace or underscores.
        joined = "\n".join(vals)
        if not joined.isascii() or _SPACE_OR_UNDERSCORE.search(joined) or (total := sum(floats)) - total != 0.0:
            try:
                floats = list(map(_value, vals))
            except ValueError:
                return None
        if changed is None:
            return floats
        values = self.values.copy()
        for i, value in zip(changed, floats, strict=True):
            values[i] = value
        return values


def parse(body: bytes | bytearray | str, openmetrics: bool = False) -> list[ParsedFamily]:
    """Parse one body with no cache kept (see TextParser for repeated scrapes), and so no template built."""
    return TextParser(template=False).parse(body, openmetrics)
