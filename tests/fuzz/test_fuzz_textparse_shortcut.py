"""Fuzz target ``textparse_shortcut``: the parser's shortcut for a new series in the plain form
(``name{a="x",b="y"} value``) against its general path, on the same body, text 0.0.4 or
OpenMetrics: the same families and samples, or the same ``ParseError`` at the same line. Any
difference escapes as an AssertionError (a defect); ``ParseError`` is the documented error."""

from __future__ import annotations

import pytest

from integrations.prometheus.textparse import ParseError, parse
from tests.fuzz.harness import DATA, run_fuzz, seeds
from tests.unit.test_scrape_first_round import SIMPLE_LINES, outcome, parse_without_shortcut

pytestmark = pytest.mark.fuzz

TOKENS = [
    b'{a="x"}', b'{a="x",b="y"}', b'{a="x",a="y"}', b'{__name__="x"}', b'="', b'",', b'"', b",", b"}", b"{", b" ",
    b"  ", b"\t", b"\n", b"\\", b'\\"', b"1", b"1.5", b"1_0", b"NaN", b"+Inf", b"0x1", b" 1700000000000", b"# EOF\n",
    b"# TYPE a counter\n", b"# TYPE a histogram\n", b"a_bucket", b'le="+Inf"', b"\xff", b"\xc3\xa9", b"\0",
]


def _files() -> list:
    return [*sorted((DATA / "exposition").glob("*.prom")), *sorted((DATA / "exposition").glob("*.om"))]


def same_parse(data: bytes) -> None:
    openmetrics = data.rstrip().endswith(b"# EOF")
    want = outcome(parse_without_shortcut, data, openmetrics)
    got = outcome(parse, data, openmetrics)
    if got != want:
        raise AssertionError(f"the shortcut parses {data[:200]!r} as {got[:300]}, the general path as {want[:300]}")
    if want.startswith("ParseError"):
        raise ParseError(0, want)


def test_fuzz_textparse_shortcut() -> None:
    simple = [("# TYPE a gauge\n" + line + "\n").encode() for line in SIMPLE_LINES]
    tried = run_fuzz(same_parse, [*seeds("textparse_shortcut", _files()), *simple], allowed=(ParseError,),
                     tokens=TOKENS)
    assert tried > len(_files())
