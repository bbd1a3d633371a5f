"""Fuzz target ``textparse_fast``: the C reader of a text body in the plain form
(``integrations.prometheus._promfast``, through ``TextParser.parse``) against the Python parser it
stands in front of, on the same body: the same families and samples, or the same ``ParseError`` at
the same line; and the body parsed again by a parser that keeps its template (made from the C
reader's shape where it took the body) gives them again. Any difference escapes as an
AssertionError (a defect); ``ParseError`` is the documented error. Seeds: the text bodies of the
exposition corpus and bodies in the plain form, which the C reader takes whole (mutations then
make some it hands on)."""

from __future__ import annotations

import os

import pytest

from integrations.prometheus import textparse
from integrations.prometheus.textparse import ParsedFamily, ParseError, TextParser
from tests.fuzz.harness import DATA, run_fuzz, seeds
from tests.unit.test_textparse_fast import outcome, same

pytestmark = pytest.mark.fuzz

TOKENS = [
    b'{a="x"}', b'{a="x",b="y"}', b'{a="x",a="y"}', b'{__name__="x"}', b'="', b'",', b'"', b",", b"}", b"{", b" ",
    b"\t", b"\n", b"\\", b"1", b"-1.5e-3", b".5", b"5.", b"1_0", b"NaN", b"+Inf", b"1e400", b" 1700000000000",
    b"# TYPE a counter\n", b"# TYPE a histogram\n", b"# TYPE a summary\n", b"# HELP a x\n", b"#", b"a_bucket",
    b"a_sum", b"a_count", b'le="+Inf"', b"\xc3\xa9", b"\0", b"\r",
]

PLAIN = [
    b'# HELP a Things.\n# TYPE a histogram\na_bucket{le="1"} 1\na_bucket{le="+Inf"} 2\na_sum 3.5\na_count 2\n',
    b'# TYPE r counter\nr{path="/a",code="200"} 1\nr{path="/b",code="500"} 2e3\n\n# a comment\ng 7\n',
    b'# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 2\ns_count 3\n# HELP s again\ns_created 4\nx:y{_z="1"} -0\n',
]


def same_parse(data: bytes) -> None:
    got, want = outcome(data, True), outcome(data, False)
    if not same(got, want):
        raise AssertionError(f"the C reader parses {data[:200]!r} as {repr(got)[:300]}, the Python parser as "
                             f"{repr(want)[:300]}")
    if isinstance(want, str):
        raise ParseError(0, want)
    # Parsed again by a parser that keeps a template (from the C reader's shape where it took the body):
    # the same families, replayed.
    parser = TextParser()
    parser.parse(data)
    again = [(f.name, f.type, f.help, f.unit, f.samples) for f in parser.parse(data)]
    if not same(again, want):
        raise AssertionError(f"{data[:200]!r} parsed again with its template gives {repr(again)[:300]}, the Python "
                             f"parser {repr(want)[:300]}")


def test_fuzz_textparse_fast() -> None:
    if textparse._promfast is None:
        if os.environ.get("CI"):
            pytest.fail("integrations.prometheus._promfast is not built (setup.py's extension): the C reader is not fuzzed")
        pytest.skip("integrations.prometheus._promfast is not built here (python setup.py build_ext --inplace)")
    pool = [*seeds("textparse_fast", sorted((DATA / "exposition").glob("*.prom"))), *PLAIN]
    assert sum(textparse._promfast.parse_text(b.decode("utf-8", "surrogateescape"), ParsedFamily) is not None
               for b in pool) >= len(PLAIN)
    # Each input is parsed four times (the C reader, the Python parser, and twice with a template: built,
    # then replayed) and the outcomes compared: twice the harness' bound for one parse.
    assert run_fuzz(same_parse, pool, allowed=(ParseError,), tokens=TOKENS, cpu_per_100kb=0.2) >= len(pool)
