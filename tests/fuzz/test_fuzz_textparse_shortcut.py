"""Fuzz target ``textparse_shortcut``: the parser's shortcut for a new series in the plain form
(``name{a="x",b="y"} value``) against its general path, on the same body, text 0.0.4 or
OpenMetrics: the same families and samples, or the same ``ParseError`` at the same line. Any
difference escapes as an AssertionError (a defect); ``ParseError`` is the documented error."""

from __future__ import annotations

import marshal
from collections.abc import Callable

import pytest

from integrations.prometheus.textparse import ParsedFamily, ParseError, parse
from tests.fuzz.harness import DATA, run_fuzz, seeds
from tests.unit.test_scrape_first_round import SIMPLE_LINES, parse_without_shortcut

pytestmark = pytest.mark.fuzz

TOKENS = [
    b'{a="x"}', b'{a="x",b="y"}', b'{a="x",a="y"}', b'{__name__="x"}', b'="', b'",', b'"', b",", b"}", b"{", b" ",
    b"  ", b"\t", b"\n", b"\\", b'\\"', b"1", b"1.5", b"1_0", b"NaN", b"+Inf", b"0x1", b" 1700000000000", b"# EOF\n",
    b"# TYPE a counter\n", b"# TYPE a histogram\n", b"a_bucket", b'le="+Inf"', b"\xff", b"\xc3\xa9", b"\0",
]


def _files() -> list:
    return [*sorted((DATA / "exposition").glob("*.prom")), *sorted((DATA / "exposition").glob("*.om"))]


def _result(parse_fn: Callable[[bytes, bool], list[ParsedFamily]], data: bytes, openmetrics: bool) -> list | str:
    """A parse's families (name, type, HELP, UNIT, samples), or its error as text."""
    try:
        return [(f.name, f.type, f.help, f.unit, f.samples) for f in parse_fn(data, openmetrics)]
    except ParseError as e:
        return f"ParseError at line {e.line}: {e.message}"


def _text(result: list | str) -> str:
    return result if isinstance(result, str) else repr(result)


def same_parse(data: bytes) -> None:
    openmetrics = data.rstrip().endswith(b"# EOF")
    want = _result(parse_without_shortcut, data, openmetrics)
    got = _result(parse, data, openmetrics)
    # Equal as marshal (format 2: no references, a float by its bits) writes them: the same values of the
    # same types, told in one C pass; else equal as text (NaN equal to NaN), which costs ten times more.
    if marshal.dumps(got, 2) != marshal.dumps(want, 2) and _text(got) != _text(want):
        raise AssertionError(f"the shortcut parses {data[:200]!r} as {_text(got)[:300]}, the general path as "
                             f"{_text(want)[:300]}")
    if isinstance(want, str):
        raise ParseError(0, want)


def test_fuzz_textparse_shortcut() -> None:
    simple = [("# TYPE a gauge\n" + line + "\n").encode() for line in SIMPLE_LINES]
    tried = run_fuzz(same_parse, [*seeds("textparse_shortcut", _files()), *simple], allowed=(ParseError,),
                     tokens=TOKENS)
    assert tried > len(_files())


#: Bodies of one short entry repeated, each over 100 KB, that cost up to 4 times the bound: every repeat read by
#: the slow path (``a+1``, a value over two lines), a template built for a body parsed once and the reprs
#: compared (the shape CI failed on), a label value over 100,000 lines or a run of backslashes read one by one.
SLOW_SHAPES = [
    b'a{b="x"} 1\n' * 10_000, b'a{b="x"} 1\n' * 10_000 + b"# EOF\n", b"sign_value+1\n" * 10_000,
    b"a 1\n" + b"\n" * 110_000, b'a{b="x\ny"} 1\n' * 8_000, b'a 1\nb{c="d} 2\ne 3\n' + b"\\" * 110_000 + b"\n",
]


def test_slow_shapes_within_the_bound() -> None:
    """Each shape costs at most the harness' CPU bound (checked by the harness itself, on the shapes alone)."""
    assert all(len(b) > 100_000 for b in SLOW_SHAPES)
    assert run_fuzz(same_parse, SLOW_SHAPES, allowed=(ParseError,), seconds=0) == len(SLOW_SHAPES)
