"""Nagios performance data, parsed and written as the monitoring plugins development guidelines
define it::

    'label'=value[UOM];[warn];[crit];[min];[max]

* items are separated by whitespace; a label with a space, ``=`` or ``'`` is quoted in ``'``,
  a ``'`` inside quotes written ``''``;
* the value is a decimal number (a decimal comma, which some locales make plugins write, is
  read as a point), or ``U`` (or nothing) when the plugin could not determine it;
* UOM is ``s ms us % B KB MB GB TB c``, none, or any other text (kept as written);
* warn and crit are ranges (``integrations.nagios.ranges``), min and max numbers; each may be
  empty and trailing empty fields may be left out.

``parse_perfdata`` never raises: an item it cannot read is left out and named in the result's
``errors`` (the caller counts and logs them); it reads at most ``max_items`` items.
``format_perfdata`` writes items back so that parsing the text gives the same items.

Units: ``UOMS`` maps each known UOM to its OpenTelemetry unit and factor: times to seconds,
sizes to bytes with 1024-based multiples (as the monitoring plugins' ``check_disk`` and
``check_swap`` compute their ``MB``), ``%`` kept as ``%`` (a 0-100 value, not a ratio, so the
number is the one the plugin wrote), ``c`` a count (a monotonic sum).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from integrations.nagios.ranges import Range, RangeError, format_number, parse_number, parse_range

__all__ = ["DEFAULT_MAX_ITEMS", "UOMS", "PerfData", "PerfItem", "format_item", "format_perfdata", "parse_perfdata"]

#: The most items one perfdata text may hold (more are left out, and said so).
DEFAULT_MAX_ITEMS = 1000
#: Label length bound (an item with a longer label is refused).
MAX_LABEL_CHARS = 256

#: A UOM is at most 16 characters, none of them a control character or a lone surrogate.
MAX_UOM_CHARS = 16
_BAD_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")

#: UOM -> (OpenTelemetry unit, factor to that unit).
UOMS: dict[str, tuple[str, float]] = {
    "": ("", 1.0),
    "s": ("s", 1.0),
    "ms": ("s", 1e-3),
    "us": ("s", 1e-6),
    "%": ("%", 1.0),
    "B": ("By", 1.0),
    "KB": ("By", 1024.0),
    "MB": ("By", 1024.0 ** 2),
    "GB": ("By", 1024.0 ** 3),
    "TB": ("By", 1024.0 ** 4),
    "c": ("", 1.0),
}


@dataclass(frozen=True, slots=True)
class PerfItem:
    """One perfdata item: ``value`` None for ``U`` or an empty value; ``uom`` as written."""

    label: str
    value: float | None
    uom: str = ""
    warn: Range | None = None
    crit: Range | None = None
    min: float | None = None
    max: float | None = None

    @property
    def known_uom(self) -> bool:
        return self.uom in UOMS

    @property
    def counter(self) -> bool:
        return self.uom == "c"

    def converted(self, v: float | None) -> float | None:
        """``v`` (the value, min or max) in the OpenTelemetry unit of the UOM (unknown UOMs: as is)."""
        if v is None:
            return None
        return v * UOMS[self.uom][1] if self.uom in UOMS else v

    @property
    def otel_unit(self) -> str:
        return UOMS[self.uom][0] if self.uom in UOMS else ""


@dataclass(slots=True)
class PerfData:
    """Parsed perfdata: the items in order, and what could not be read."""

    items: list[PerfItem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _is_space(c: str) -> bool:
    return c in " \t\r\n\v\f"


def parse_perfdata(text: str, max_items: int = DEFAULT_MAX_ITEMS) -> PerfData:
    """Parse a perfdata text (see the module doc). Linear in the text's length."""
    out = PerfData()
    n = len(text)
    i = 0
    while i < n:
        while i < n and _is_space(text[i]):
            i += 1
        if i >= n:
            break
        if len(out.items) >= max_items:
            out.errors.append(f"more than {max_items} items: the rest (from character {i}) is left out")
            break
        start = i
        if text[i] == "'":
            # quoted label: '' is a quote; the label ends at a quote not followed by another
            parts: list[str] = []
            i += 1
            closed = False
            while i < n:
                q = text.find("'", i)
                if q < 0:
                    break
                parts.append(text[i:q])
                if q + 1 < n and text[q + 1] == "'":
                    parts.append("'")
                    i = q + 2
                    continue
                i = q + 1
                closed = True
                break
            if not closed:
                out.errors.append(f"item at character {start}: unterminated quoted label")
                break
            label = "".join(parts)
            if i >= n or text[i] != "=":
                end = _token_end(text, i)
                out.errors.append(f"item at character {start} ({_excerpt(text[start:end])}): no '=' after the label")
                i = end
                continue
            i += 1
        else:
            j = i
            while j < n and text[j] != "=" and not _is_space(text[j]):
                j += 1
            if j >= n or text[j] != "=":
                out.errors.append(f"item at character {start} ({_excerpt(text[start:j])}): no '=' after the label")
                i = j
                continue
            label = text[i:j]
            i = j + 1
        end = _token_end(text, i)
        fields_text = text[i:end]
        i = end
        if not label:
            out.errors.append(f"item at character {start}: empty label")
            continue
        if len(label) > MAX_LABEL_CHARS:
            out.errors.append(f"item at character {start}: label longer than {MAX_LABEL_CHARS} characters")
            continue
        if _BAD_CHARS.search(label.replace("\t", " ")):
            out.errors.append(f"item at character {start}: label holds a control character or an invalid one")
            continue
        try:
            out.items.append(_item(label, fields_text))
        except ValueError as e:
            out.errors.append(f"item {_excerpt(label)!s} at character {start}: {e}")
    return out


def _token_end(text: str, i: int) -> int:
    n = len(text)
    while i < n and not _is_space(text[i]):
        i += 1
    return i


def _excerpt(s: str, limit: int = 60) -> str:
    return repr(s if len(s) <= limit else s[:limit] + "...")


def _split_value(v: str) -> tuple[float | None, str]:
    """(value, UOM) of ``value[UOM]``."""
    if v == "" or v == "U":
        return None, ""
    k = 0
    n = len(v)
    if k < n and v[k] in "+-":
        k += 1
    while k < n and (v[k].isdigit() and v[k].isascii() or v[k] in ".,"):
        k += 1
    if k < n and v[k] in "eE":  # an exponent, if digits follow
        m = k + 1
        if m < n and v[m] in "+-":
            m += 1
        if m < n and v[m].isdigit() and v[m].isascii():
            while m < n and v[m].isdigit() and v[m].isascii():
                m += 1
            k = m
    number, uom = v[:k], v[k:]
    if number.count(",") == 1 and "." not in number:
        number = number.replace(",", ".")
    if uom == "U" and number == "":
        return None, ""
    if len(uom) > MAX_UOM_CHARS or _BAD_CHARS.search(uom):
        raise ValueError(f"unit {uom[:20]!r} is longer than {MAX_UOM_CHARS} characters or holds a control character")
    try:
        value = parse_number(number)
    except ValueError:
        raise ValueError(f"value {v[:40]!r} is not a number with an optional unit") from None
    return value, uom


def _item(label: str, fields_text: str) -> PerfItem:
    fields = fields_text.split(";")
    if len(fields) > 5:
        raise ValueError(f"{len(fields)} fields separated by ';' (at most 5: value;warn;crit;min;max)")
    fields += [""] * (5 - len(fields))
    value, uom = _split_value(fields[0])
    try:
        warn = parse_range(fields[1]) if fields[1] else None
        crit = parse_range(fields[2]) if fields[2] else None
    except RangeError as e:
        raise ValueError(str(e)) from None
    lo = _bound("min", fields[3], uom)
    hi = _bound("max", fields[4], uom)
    return PerfItem(label, value, uom, warn, crit, lo, hi)


def _bound(name: str, text: str, uom: str) -> float | None:
    if not text:
        return None
    if uom and text.endswith(uom) and text != uom:
        text = text[: -len(uom)]  # some plugins repeat the unit on min/max
    try:
        return parse_number(text.replace(",", ".") if text.count(",") == 1 and "." not in text else text)
    except ValueError:
        raise ValueError(f"{name} {text[:40]!r} is not a number") from None


def _quote(label: str) -> str:
    if label and not any(_is_space(c) or c in "='" for c in label):
        return label
    return "'" + label.replace("'", "''") + "'"


def format_item(item: PerfItem) -> str:
    """One item as perfdata text (trailing empty fields left out)."""
    value = "U" if item.value is None else format_number(item.value) + item.uom
    rest = [str(item.warn) if item.warn is not None else "", str(item.crit) if item.crit is not None else "",
            format_number(item.min) if item.min is not None else "",
            format_number(item.max) if item.max is not None else ""]
    while rest and not rest[-1]:
        rest.pop()
    return ";".join([f"{_quote(item.label)}={value}", *rest])


def format_perfdata(items: list[PerfItem] | tuple[PerfItem, ...]) -> str:
    """Items as one perfdata text, space separated."""
    return " ".join(format_item(i) for i in items)
