"""The C reader of a text body in the plain form (``integrations.prometheus._promfast``, which must be
built in CI) against the Python parser it stands in front of: on the exposition corpus, on bodies
made of every kind of line it takes and of lines it must hand on, and on a large scrape, both give
the same families and samples, or the same ``ParseError`` at the same line; the bodies it takes
are taken (so the comparison is not of the Python parser with itself)."""

from __future__ import annotations

import marshal
import os
import random

import pytest

from integrations.prometheus import textparse
from integrations.prometheus.textparse import ParsedFamily, ParseError, TextParser
from tests.unit.exposition_corpus import cases, payload


def require_c_reader() -> None:
    if textparse._promfast is None:
        if os.environ.get("CI"):
            pytest.fail("integrations.prometheus._promfast is not built (setup.py's extension): the C reader is untested")
        pytest.skip("integrations.prometheus._promfast is not built here (python setup.py build_ext --inplace)")


def outcome(body: bytes | str, fast: bool, *, template: bool = False) -> list | str:
    """A parse's families (name, type, HELP, UNIT, samples), or its error with its line."""
    parser = TextParser(template=template)
    parser.fast = fast
    try:
        return [(f.name, f.type, f.help, f.unit, f.samples) for f in parser.parse(body, False)]
    except ParseError as e:
        return f"ParseError at line {e.line}: {e.message}"


def same(a: list | str, b: list | str) -> bool:
    """Equal as marshal writes them (a float by its bits, types kept), or as text (NaN equal to NaN)."""
    return marshal.dumps(a, 2) == marshal.dumps(b, 2) or (repr(a) == repr(b) and "nan" in repr(a))


def taken(body: bytes | str) -> bool:
    """Whether the C reader takes ``body`` (decoded as the parser decodes it)."""
    text = body if isinstance(body, str) else body.decode("utf-8", "surrogateescape")
    return textparse._promfast.parse_text(text, ParsedFamily) is not None


@pytest.fixture(autouse=True)
def _built() -> None:
    require_c_reader()


@pytest.mark.parametrize("case", [c for c in cases() if c.endswith(".prom")])
def test_corpus_parses_as_the_python_parser_has_it(case):
    body = payload(case)
    assert same(outcome(body, True), outcome(body, False))


def test_the_corpus_holds_bodies_the_c_reader_takes():
    assert sum(taken(payload(c)) for c in cases() if c.endswith(".prom")) >= 5


# Lines the C reader takes, and lines it hands on (valid or not) with the whole body.
TAKEN = [
    "", "   ", "\t \t", "# a comment", "#", "#HELP x y", "# HELP", "# HELP a", "# HELP a ", "# HELP a  text",
    "# HELP a\ttext\twith tabs", "# HELP a-text", "# HELP a_total Requests total.", "# TYPE a counter",
    "# TYPE a gauge", "# TYPE a histogram", "# TYPE a summary", "# TYPE a untyped", "#  TYPE\ta\tgauge",
    "# TYPE a_bucket counter", "# HELP b other", "# TYPE b gauge", "# EOF", "# UNIT a seconds",
    "a 1", "a -1.5e-3", "a +.5", "a 5.", "a -0", "a 1e-400", "a 00012", "a_total 3", "a_bucket 1", "a_sum 2",
    "a_count 3", "a_created 4", "a_x 5", 'a{b="x"} 1', 'a{b="x",c="y z"} 2', 'a{b=""} 3', 'a{le="+Inf"} 4',
    'a_bucket{le="0.5"} 1', 'a_bucket{le="+Inf"} 2', 'a{quantile="0.5"} 1', 'a{b="\0\r\t"} 1', "b 7", "c:d 8",
    "_e 9",
]
HANDED_ON = [
    "a 1 1700000000000", "a NaN", "a +Inf", "a 1_0", "a 0x1", "a 1e400", 'a{b="x",} 1', "a{} 1", 'a{b="x\\"y"} 1',
    'a { b="x" } 1', 'a{b ="x"} 1', 'a{b="x"}1', "a+1", 'a{b="x",b="y"} 1', 'a{__name__="x"} 1', " a 1",
    " # TYPE a gauge", "# TYPE a counter ", "# TYPE a Counter", "# TYPE a", "# HELP a x\\ny", "# HELP 1a x",
    "a", "a ", "1a 2", "{a} 1", "\0", 'a{b="x"} 1 # {c="d"} 1', 'a{b="é"} 1', 'a{b="x\ny"} 1',
    "a{" + ",".join(f'l{i}="v"' for i in range(40)) + "} 1", 'a{b="x"}   1', 'a{b="x"} 1 ',
]


@pytest.mark.parametrize("line", TAKEN + HANDED_ON)
def test_a_line_after_a_family_parses_as_the_python_parser_has_it(line):
    body = "# HELP a Things.\n# TYPE a histogram\na_bucket{le=\"+Inf\"} 1\n" + line + "\na_count 1\nz 2\n"
    assert same(outcome(body, True), outcome(body, False))
    assert taken(body) == (line in TAKEN)


def test_random_bodies_of_such_lines_parse_as_the_python_parser_has_them():
    rnd = random.Random(11)
    took = 0
    for _ in range(3000):
        lines = rnd.choices(TAKEN + HANDED_ON[:3], k=rnd.randint(0, 12))
        body = "\n".join(lines) + rnd.choice(["\n", "\n", ""])
        assert same(outcome(body, True), outcome(body, False)), body
        took += taken(body)
    assert took > 500


@pytest.mark.parametrize("body", ["", "a 1", "a 1\nb 2", "a 1\n\0b 2\n", "a 1\r\n"])
def test_bodies_it_hands_on_whole(body):
    assert not taken(body)
    assert same(outcome(body, True), outcome(body, False))


def test_a_large_scrape_and_its_next_scrapes():
    """A new target's body in C, then the template replays the next one; a body of another shape in C again."""
    def body(n: int, step: int) -> str:
        out = ["# HELP req_total Requests.\n# TYPE req_total counter\n"]
        out += [f'req_total{{path="/p{i}",code="200",method="GET"}} {i * 10 + step}\n' for i in range(n)]
        out.append("# TYPE lat histogram\n")
        out += [f'lat_bucket{{le="{le}"}} {step}\n' for le in ("0.1", "1", "+Inf")]
        out += [f"lat_sum {step * 0.5}\n", f"lat_count {step}\n"]
        return "".join(out)

    assert taken(body(20_000, 0))
    fast, slow = TextParser(), TextParser()
    slow.fast = False
    for b in (body(20_000, 0), body(20_000, 1), body(20_001, 2), body(20_001, 3)):
        got = [(f.name, f.type, f.help, f.unit, f.samples) for f in fast.parse(b.encode())]
        want = [(f.name, f.type, f.help, f.unit, f.samples) for f in slow.parse(b.encode())]
        assert same(got, want)


def test_results_share_no_mutable_state():
    body = 'a{b="1"} 1\na{b="2"} 2\n'
    first = TextParser().parse(body)
    first[0].samples.clear()
    assert len(TextParser().parse(body)[0].samples) == 2


def _fields(t: textparse._Template | None) -> tuple | None:
    if t is None:
        return None
    return (t.n_lines, t.comments, t.lines, t.prefixes, t.names, t.labels, t.keys, t.order, t.families, t.values)


def _bodies(rnd: random.Random, n: int) -> list[str]:
    lines = [line for line in TAKEN if line.strip()]  # no blank line: bodies a template may replay
    out = []
    for _ in range(n):
        body = "\n".join(rnd.choices(lines, k=rnd.randint(1, 14))) + "\n"
        out.append(body)
    return out


def test_the_template_read_from_the_c_readers_shape_is_the_one_built():
    """A body the C reader takes gets the template ``_Template.build`` makes of it (its lines matched to
    samples again) from the reader's shape; a body with a blank line gets none, as from build."""
    rnd = random.Random(3)
    made = ambiguous = 0
    for body in _bodies(rnd, 3000) + [payload(c).decode() for c in cases() if c.endswith(".prom") and taken(payload(c))]:
        fams, shape = textparse._promfast.parse_text(body, ParsedFamily, True)
        built = textparse._Template.build(body, fams)
        if shape is None:
            assert built is None
            continue
        got = textparse._Template.from_shape(body, fams, shape)
        if built is not None:
            assert _fields(got) == _fields(built), body
            made += 1
        elif got is not None:  # a key two families wait for at once: build gives up, the shape knows
            parser = TextParser()
            parser.parse(body)
            assert parser._templates[False] is not None
            values = body.replace(" 1\n", " 9.5\n")
            got_values = [(f.name, f.type, f.help, f.unit, f.samples) for f in parser.parse(values)]
            assert same(got_values, outcome(values, False)), body
            ambiguous += 1
    assert made > 1000 and ambiguous > 10


def test_a_template_from_the_shape_replays_new_values():
    rnd = random.Random(4)
    for body in _bodies(rnd, 500):
        parser = TextParser()
        parser.parse(body)
        for old, new in ((" 1\n", " 2\n"), (" 2\n", " NaN\n"), ("7\n", "7.5\n")):
            body = body.replace(old, new)
            want = outcome(body, False)
            got = parser.parse(body)
            assert same([(f.name, f.type, f.help, f.unit, f.samples) for f in got], want), body
