"""Nagios threshold ranges, as the monitoring plugins development guidelines define them.

A range is ``[@]start:end``; a value outside ``[start, end]`` raises the alert, or, with the
leading ``@``, a value inside it:

=========  ==============================================
``10``     alert if < 0 or > 10   (start 0, end 10)
``10:``    alert if < 10          (end +infinity)
``~:10``   alert if > 10          (start -infinity)
``10:20``  alert if < 10 or > 20
``@10:20`` alert if >= 10 and <= 20
=========  ==============================================

An empty start (``:10``) is 0, as the monitoring plugins' own parser reads it. ``start`` must
not be above ``end``. Numbers are decimals with an optional sign and exponent (``1e3``);
``inf``/``nan`` words are refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["MAX_RANGE_CHARS", "Range", "RangeError", "format_number", "parse_number", "parse_range"]

#: A threshold longer than this is refused (no plugin writes one; a hostile one gets no further).
MAX_RANGE_CHARS = 256

_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,4})?")


class RangeError(ValueError):
    """A threshold that is not a Nagios range; the message names it."""


def parse_number(text: str) -> float:
    """``text`` as a float if it is a plain decimal number (no ``inf``, ``nan`` or hex), else ValueError."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{text[:40]!r} is not a number")
    v = float(text)
    if math.isinf(v):
        raise ValueError(f"{text[:40]!r} is out of range")
    return v


def format_number(v: float) -> str:
    """``v`` as the shortest text that reads back as the same float (``10`` rather than ``10.0``)."""
    if v == int(v) and abs(v) < 1e16:
        return str(int(v))
    return repr(v)


@dataclass(frozen=True, slots=True)
class Range:
    """A parsed range: ``start``/``end`` (``-inf``/``inf`` when open), ``inside`` for ``@``, and
    the ``text`` it was written as (kept, so a range goes back to Nagios as it came)."""

    start: float
    end: float
    inside: bool = False
    text: str = ""

    def alerts(self, value: float) -> bool:
        """True when ``value`` raises the alert this range stands for."""
        within = self.start <= value <= self.end
        return within if self.inside else not within

    def __str__(self) -> str:
        return self.text or self.render()

    def render(self) -> str:
        """The range in the canonical form (``10``, ``10:``, ``~:10``, ``10:20``, ``@10:20``)."""
        at = "@" if self.inside else ""
        if self.start == 0 and not math.isinf(self.end):
            return f"{at}{format_number(self.end)}"
        start = "~" if self.start == -math.inf else format_number(self.start)
        end = "" if self.end == math.inf else format_number(self.end)
        return f"{at}{start}:{end}"


def parse_range(text: str) -> Range:
    """Parse a Nagios range (``10``, ``10:``, ``~:10``, ``10:20``, ``@10:20``); RangeError says
    what is wrong with it."""
    if len(text) > MAX_RANGE_CHARS:
        raise RangeError(f"threshold of {len(text)} characters is longer than {MAX_RANGE_CHARS}")
    body = text.strip()
    inside = body.startswith("@")
    if inside:
        body = body[1:]
    if not body:
        raise RangeError(f"threshold {text!r} is empty")
    start_text, colon, end_text = body.partition(":")
    try:
        if not colon:
            start, end = 0.0, parse_number(body)
        else:
            start = -math.inf if start_text == "~" else (parse_number(start_text) if start_text else 0.0)
            end = parse_number(end_text) if end_text else math.inf
    except ValueError as e:
        raise RangeError(f"threshold {text[:60]!r} is not a Nagios range ([@]start:end): {e}") from None
    if start > end:
        raise RangeError(f"threshold {text[:60]!r}: start {format_number(start)} is above end {format_number(end)}")
    return Range(start, end, inside, text.strip())
