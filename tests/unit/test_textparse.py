"""The scrape parser (integrations.prometheus.textparse) on the exposition corpus, against
prometheus_client 0.26's parsers, and its per-target cache against cold parses.

The corpus' expected outcomes are what Prometheus 2.42 does (tests/integration/test_textparse_prometheus.py
checks them against a real one); where prometheus_client's parser differs, Prometheus is right
and the case is listed in CLIENT_DISAGREES with the reason.
"""

from __future__ import annotations

import gc
import math
import random
import re

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as client_parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as client_parse_text

from integrations.prometheus.textparse import ParseError, TextParser, go_float, parse
from tests.unit.exposition_corpus import cases, expected, is_openmetrics, outcome, parse_outcome, payload, value_text

# case -> why prometheus_client's parser does not do what Prometheus 2.42 does with it
CLIENT_DISAGREES = {
    # text 0.0.4: the client is line-based and lenient where Prometheus' lexer is not ...
    "text_err_crlf.prom": "the client strips the \\r of CRLF line ends; Prometheus reads it as part of the value",
    "text_err_extra_token.prom": "the client takes the first and the last of 3 tokens; Prometheus refuses a third",
    "text_err_leading_comma.prom": "the client skips a leading comma in a label set; Prometheus wants a label name",
    "text_err_leading_whitespace.prom": "the client strips lines; Prometheus keeps the whitespace in the name, which is invalid",
    "text_err_timestamp_float.prom": "the client reads a float timestamp; Prometheus wants int64 milliseconds",
    "text_err_timestamp_negative.prom": "the client reads a negative timestamp; Prometheus' lexer takes digits only",
    "text_err_timestamp_overflow.prom": "the client reads a timestamp past int64; Prometheus' ParseInt fails",
    "text_err_type_trailing_space.prom": "the client splits the TYPE line on spaces; Prometheus finds type 'counter '",
    "text_err_value_overflow.prom": "Python's float('1e400') is inf; Go's ParseFloat fails with a range error",
    "text_err_value_signed_nan.prom": "Python reads '-NaN'; Go's ParseFloat takes no sign on NaN",
    # ... and strict where it is lenient
    "text_comments.prom": "the client fails on a bare '# TYPE' line; to Prometheus it is a comment",
    "text_multiline_label.prom": "the client is line-based; Prometheus' lexer allows a raw newline in a label value",
    "text_nul_stop.prom": "the client parses past a NUL; Prometheus' lexer ends the body at a NUL starting an entry",
    "text_value_sign_after_name.prom": "the client wants whitespace after the name; Prometheus lexes 'a+1' as name and value",
    "text_no_comma.prom": "the client wants commas between labels; Prometheus' parser makes them optional",
    "text_help_tabs.prom": "the client strips HELP text; Prometheus drops only the one separator character",
    "text_values.prom": "the client reads '-0' as int 0 and loses the sign; Prometheus keeps -0.0",
    # OpenMetrics
    "om_err_space_in_labels.om": "the client strips spaces around '='; OpenMetrics (and Prometheus) allow none",
    "om_duplicates.om": "the client drops a repeated series; Prometheus yields it (and keeps the first sample)",
    "om_exemplars.om": "the client allows exemplars by type (counter, bucket); Prometheus 2.42 by name (*_total, *_bucket)",
    "om_lenient_semantics.om": "the client checks histogram/counter/summary semantics (+Inf bucket, negative counter, metadata "
                               "after samples, quantile range); Prometheus 2.42's parser does not",
}


# --------------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("case", cases())
def test_corpus(case):
    assert parse_outcome(case) == expected(case)


def _flat(out: dict) -> list[tuple]:
    return [(s[0], tuple(map(tuple, s[1])), s[2], s[3]) for f in out["families"] for s in f["samples"]]


def _client_outcome(case: str) -> dict:
    """prometheus_client's parse of the case, in our shape: {"error": True} or {"samples": [...], "metadata": {...}}."""
    body = payload(case)
    try:
        text = body.decode("utf-8")
        om = is_openmetrics(case)
        families = list((client_parse_openmetrics if om else client_parse_text)(text))
    except Exception:  # noqa: BLE001 - any failure of the client's parser is a refusal
        return {"error": True}
    samples, metadata = [], {}
    for fam in families:
        name, typ = fam.name, fam.type
        if not om and typ == "counter":
            # the client strips _total from a counter's family name and adds it to sample names
            if f"# TYPE {name}_total counter" in text:
                name = f"{name}_total"
            else:
                fam.samples = [s._replace(name=s.name.removesuffix("_total")) for s in fam.samples]
        if not om and typ == "unknown":
            typ = "untyped"  # the client's Metric calls it unknown
        if fam.documentation or typ not in ("untyped", "unknown"):
            metadata[name] = (typ, fam.documentation, fam.unit)
        for s in fam.samples:
            ts = s.timestamp
            if ts is not None:
                ts = ts.sec * 1000 + ts.nsec // 1_000_000 if hasattr(ts, "sec") else round(ts * 1000)
            samples.append((s.name, tuple(s.labels.items()), value_text(float(s.value)), ts))
    return {"samples": samples, "metadata": metadata}


def _agrees(case: str) -> bool:
    ours = expected(case)
    client = _client_outcome(case)
    if "error_line" in ours or "error" in client:
        return ("error_line" in ours) == ("error" in client)
    if _flat(ours) != client["samples"]:
        return False
    by_name = {f["name"]: f for f in ours["families"]}
    return all(name in by_name and (by_name[name]["type"], by_name[name]["help"], by_name[name]["unit"]) == md
               for name, md in client["metadata"].items())


@pytest.mark.parametrize("case", cases())
def test_prometheus_client_differential(case):
    if case in CLIENT_DISAGREES:
        assert not _agrees(case), f"prometheus_client now agrees on {case}: drop it from CLIENT_DISAGREES"
    else:
        assert _agrees(case), f"prometheus_client: {_client_outcome(case)}\nours: {expected(case)}"


# --------------------------------------------------------------------------- errors and values


@pytest.mark.parametrize(("body", "om", "line", "quoted"), [
    (b"a 1\nb 2\nc{d=\"e\"} x\n", False, 3, "'x'"),
    (b"a 1\nb{c=\"multi\nline\"} 1\nd{e=\"f\"} 1_0\n", False, 4, "'1_0'"),
    (b"a 1\nb{c=\"never closed} 1\nd 2\n", False, 2, "never closed"),
    (b"# TYPE a counter\na_total 1\n", True, 3, None),
    (b"a 1\n# EOF\nb 2\n", True, 3, "'b 2'"),
    (b"a 1\n\n# EOF\n", True, 2, None),
    (b"a{b=\"c\"} 1 # {x=\"y\"} 1\n# EOF\n", True, 1, None),
])
def test_parse_error_line_and_message(body, om, line, quoted):
    with pytest.raises(ParseError) as info:
        parse(body, om)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")
    if quoted:
        assert quoted in str(info.value)


def test_parse_error_quotes_at_most_80_characters():
    with pytest.raises(ParseError) as info:
        parse(b"a " + b"x" * 500 + b"\n")
    assert len(str(info.value)) < 160 and "xxx..." in str(info.value)


@pytest.mark.parametrize(("text", "value"), [
    ("1", 1.0), ("-1.5e3", -1500.0), (".5", 0.5), ("5.", 5.0), ("+12", 12.0), ("NaN", math.nan), ("nan", math.nan),
    ("+Inf", math.inf), ("-inf", -math.inf), ("Infinity", math.inf), ("1e-400", 0.0), ("-0", -0.0),
])
def test_go_float_accepts(text, value):
    got = go_float(text)
    assert (math.isnan(got) and math.isnan(value)) or (got == value and math.copysign(1, got) == math.copysign(1, value))


@pytest.mark.parametrize("text", ["1_0", "0x10", "0x1p3", "1e400", "-NaN", "+nan", "infin", " 1", "1\t", "1\r", "٣", "", "1e",
                                  "e5", "."])
def test_go_float_refuses_what_go_refuses(text):
    with pytest.raises(ValueError):
        go_float(text)


@pytest.mark.parametrize(("text", "value"), [
    ("0" * 5000 + "1", 1.0), ("1" + "0" * 300, 1e300), ("0." + "0" * 5000 + "1e5000", 0.1), ("9" * 300, 1e300),
])
def test_go_float_reads_long_digit_runs(text, value):
    assert go_float(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["1" * 20_000 + "x", "1" * 400, "1." + "1" * 20_000 + "e", "." * 2 + "1" * 20_000])
def test_go_float_refuses_long_digit_runs(text):
    with pytest.raises(ValueError):
        go_float(text)


@pytest.mark.parametrize(("body", "ts"), [(b"a 1 " + b"0" * 5000 + b"42\n", 42), (b"a 1 9223372036854775807\n", 2**63 - 1)])
def test_timestamps_read_past_leading_zeros(body, ts):
    assert parse(body)[0].samples[0][3] == ts


@pytest.mark.parametrize("digits", [b"9223372036854775808", b"1" * 20, b"1" * 5000])
def test_timestamps_beyond_int64_are_parse_errors(digits):
    with pytest.raises(ParseError, match="line 2: timestamp out of range"):
        parse(b"a 1\na 1 " + digits + b"\n")


def test_label_values_over_many_lines_read_in_one_pass():
    body = b"a{" + b",".join(b'l%d="x\ny"' % i for i in range(2000)) + b"} 1\nb 2\n"
    fams = parse(body)
    assert [f.name for f in fams] == ["a", "b"] and len(fams[0].samples[0][1]) == 2000
    assert fams[0].samples[0][1][-1] == ("l1999", "x\ny")
    with pytest.raises(ParseError, match="line 1: label value opened on this line never closed"):
        parse(b'a{b="x\n' + b"y\n" * 100)


def test_bytes_and_str_parse_alike():
    for case in cases():
        if "error_line" not in expected(case):
            body = payload(case)
            assert outcome(parse(body.decode("utf-8", "surrogateescape"), is_openmetrics(case))) == expected(case)


# --------------------------------------------------------------------------- the per-target cache


def _body(rng: random.Random, series: list[tuple[str, str]], om: bool, types: dict[str, str]) -> str:
    out = []
    for fam in sorted({f for f, _ in series}):
        out.append(f"# HELP {fam} Family {fam}.\n# TYPE {fam} {types[fam]}\n")
        for f, labels in series:
            if f != fam:
                continue
            name = {"counter": fam + "_total" if om else fam, "histogram": fam + "_bucket"}.get(types[fam], fam)
            value = rng.choice(["NaN", "+Inf", "0", str(rng.randrange(10**6)), repr(rng.random() * 10**rng.randrange(-5, 20))])
            ts = rng.choice(["", " 1700000000123" if not om else " 1700000000.123"])
            out.append(f"{name}{labels} {value}{ts}\n")
    if om:
        out.append("# EOF\n")
    return "".join(out)


def _same(a, b) -> bool:
    """Parse results equal, NaN equal to NaN."""
    return outcome(a) == outcome(b)


@pytest.mark.parametrize("om", [False, True])
def test_repeated_scrapes_equal_cold_parses(om):
    rng = random.Random(7)
    types = {f"fam{i}": rng.choice(["gauge", "counter", "histogram", "summary"]) for i in range(6)}
    universe = [(f"fam{i}", labels) for i in range(6)
                for labels in ("", "{}", '{a="1"}', '{a="2",b="x\\"y"}', '{le="+Inf"}', f'{{id="{i}",u="ü"}}')]
    parser = TextParser()
    series = rng.sample(universe, 20)
    for _ in range(30):
        body = _body(rng, series, om, types)
        assert _same(parser.parse(body.encode(), om), parse(body, om))
        change = rng.random()
        if change < 0.3:  # some series go, others come
            series = rng.sample(series, max(1, len(series) - 3)) + rng.sample(universe, 3)
        elif change < 0.4:  # a family changes type: its samples move to other families
            fam = rng.choice(sorted(types))
            types[fam] = rng.choice(["gauge", "counter", "histogram", "summary"])
        elif change < 0.5:
            rng.shuffle(series)


def test_cache_stays_bounded_under_churn():
    parser = TextParser()
    parser.fast = False  # the Python parser's cache (the C reader of the plain form keeps none)
    for scrape in range(50):
        body = "".join(f'churn{{scrape="{scrape}",i="{i}"}} {i}\n' for i in range(200))
        families = parser.parse(body)
        assert len(families[0].samples) == 200
        assert len(parser._series[False]) <= TextParser.CACHE_FACTOR * 200 + TextParser.CACHE_SLACK


def test_failed_scrape_leaves_the_cache_usable():
    parser = TextParser()
    good = 'a{b="1"} 1\na{b="2"} 2\n'
    parser.parse(good)
    with pytest.raises(ParseError):
        parser.parse('a{b="1"} 1\na{b="2"} oops\n')
    assert _same(parser.parse(good.replace("2\n", "3\n")), parse(good.replace("2\n", "3\n")))


def test_series_key_is_the_text_on_the_line():
    fams = parse('a { b = "1" , } 1\na{b="1"} 2\n')
    assert [s[4] for s in fams[0].samples] == ['a { b = "1" , }', 'a{b="1"}']
    assert [s[1] for s in fams[0].samples] == [(("b", "1"),), (("b", "1"),)]


# --------------------------------------------------------------------------- the per-target template


def _shape_body(values: list[str], om: bool = False) -> str:
    """A body of fixed shape: a counter, a histogram and a gauge with HELP (and UNIT), values filled in."""
    total = "_total" if om else ""
    lines = ["# HELP req Requests.", "# TYPE req counter", f'req{total}{{code="200"}} {{}}', f'req{total}{{code="500"}} {{}}',
             "# HELP lat_seconds Latency.", "# TYPE lat_seconds histogram"]
    if om:
        lines.append("# UNIT lat_seconds seconds")
    lines += ['lat_seconds_bucket{le="0.1"} {}', 'lat_seconds_bucket{le="+Inf"} {}', "lat_seconds_sum {}", "lat_seconds_count {}",
              "# TYPE temp gauge", 'temp{room="a b"} {}', "free {}"]
    body = "\n".join(lines).replace("{}", "\0")
    for v in values:
        body = body.replace("\0", v, 1)
    return body + ("\n# EOF\n" if om else "\n")


def _count_full_parses(monkeypatch, parser: TextParser) -> list[int]:
    calls = [0]
    full = TextParser._parse

    def counting(self, *args):
        calls[0] += self is parser
        return full(self, *args)

    monkeypatch.setattr(TextParser, "_parse", counting)
    return calls


_VALUES = ["1", "2", "3", "4", "5.5", "4", "21.5", "1e3"]


@pytest.mark.parametrize("om", [False, True])
def test_template_same_shape_new_values(monkeypatch, om):
    parser = TextParser()
    parser.parse(_shape_body(_VALUES, om).encode(), om)
    calls = _count_full_parses(monkeypatch, parser)
    rng = random.Random(3)
    for changed in (0, 1, 3, 8):  # none, a few (line by line), all (at once)
        values = list(_VALUES)
        for i in rng.sample(range(len(values)), changed):
            values[i] = rng.choice(["NaN", "+Inf", "-Inf", "-0", ".5", "5.", "+12", "-1.5e-3", repr(rng.random() * 1e9)])
        body = _shape_body(values, om)
        assert _same(parser.parse(body.encode(), om), parse(body, om))
    assert calls[0] == 0  # all on the template: no full parse
    fams = {f.name: f for f in parser.parse(_shape_body(_VALUES, om).encode(), om)}
    lat = fams["lat_seconds"]
    assert (lat.type, lat.help, lat.unit) == ("histogram", "Latency.", "seconds" if om else "")
    assert [s[0] for s in lat.samples] == ["lat_seconds_bucket", "lat_seconds_bucket", "lat_seconds_sum", "lat_seconds_count"]
    assert (fams["temp"].type, fams["free"].type) == ("gauge", "unknown" if om else "untyped")


@pytest.mark.parametrize(("old", "new"), [
    ('req{code="500"} 2', 'req{code="501"} 2'),  # one label value
    ('req{code="500"} 2', 'req{code="500",x="y"} 2'),  # one label more
    ("# TYPE temp gauge", "# TYPE temp counter"),  # metadata: type
    ("# HELP lat_seconds Latency.", "# HELP lat_seconds Latency in seconds."),  # metadata: HELP text
    ("# TYPE lat_seconds histogram", "# TYPE lat_seconds summary"),  # lat_bucket leaves the family
    ("free 1e3", "free 1e3\nfree2 7"),  # a line added
    ('temp{room="a b"} 21.5\n', ""),  # a line removed
    ("# HELP req Requests.\n", ""),  # a metadata line removed
    ("free 1e3", "# a comment\nfree 1e3"),  # a comment added
    ("free 1e3", "free 1e3 1700000000000"),  # a timestamp appears
    ("free 1e3", "free  1e3"),  # two spaces
    ("free 1e3", "free 1e3\t"),  # trailing whitespace
    ("free 1e3", "free\t1e3"),  # a tab
    ("free 1e3\n", "free 1e3\n\n"),  # a blank line
    ("free 1e3\n", "free 1e3"),  # no newline at the end
])
def test_template_shape_changes_parse_as_cold(old, new):
    parser = TextParser()
    base = _shape_body(_VALUES)
    assert old in base
    parser.parse(base.encode())
    changed = base.replace(old, new)
    assert _same(parser.parse(changed.encode()), parse(changed))
    again = changed.replace("21.5", "22")  # and the template follows the new shape
    assert _same(parser.parse(again.encode()), parse(again))
    assert _same(parser.parse(base.encode()), parse(base))


def test_template_not_built_from_lines_it_cannot_replay(monkeypatch):
    for body in ["a 1 1700000000000\nb 2\n", "a{b=\"x\ny\"} 1\nc 2\n", "a 1\n\nb 2\n", "a  1\nb 2\n", "a 1\t\nb 2\n",
                 "a 1\nb 2"]:
        parser = TextParser()
        parser.parse(body)
        assert parser._templates[False] is None, body
        assert _same(parser.parse(body.replace(" 2", " 3")), parse(body.replace(" 2", " 3")))


@pytest.mark.parametrize("om", [False, True])
@pytest.mark.parametrize("changed", [1, 8])
@pytest.mark.parametrize("bad", ["1_0", "0x10", "1e400", "-NaN", "+nan", "١", "1,5", "", "1 2 3", "1e", "x"])
def test_template_invalid_value_reported_on_its_line(om, changed, bad):
    parser = TextParser()
    parser.parse(_shape_body(_VALUES, om).encode(), om)
    values = [str(float(v) + 1) for v in _VALUES] if changed == 8 else list(_VALUES)
    values[6] = bad  # temp{room="a b"}, line 12 of the text body, 13 of the OpenMetrics one
    body = _shape_body(values, om)
    with pytest.raises(ParseError) as cached:
        parser.parse(body.encode(), om)
    with pytest.raises(ParseError) as cold:
        parse(body.encode(), om)
    assert cached.value.line == cold.value.line == (13 if om else 12)
    assert str(cached.value) == str(cold.value)
    assert _same(parser.parse(_shape_body(_VALUES, om).encode(), om), parse(_shape_body(_VALUES, om), om))


def test_template_results_share_no_mutable_state():
    parser = TextParser()
    body = _shape_body(_VALUES)
    first = parser.parse(body.encode())
    second = parser.parse(body.encode())
    third = parser.parse(_shape_body([str(float(v) + 1) for v in _VALUES]).encode())
    for a, b in ((first, second), (second, third), (first, third)):
        assert all(fa is not fb and fa.samples is not fb.samples for fa, fb in zip(a, b, strict=True))
    second[0].samples.clear()
    second[1].type = "gauge"
    second.pop()
    assert _same(parser.parse(body.encode()), parse(body))
    assert _same(first, parse(body))


def test_template_keeps_no_container_per_sample_between_parses():
    """What the template keeps from one parse to the next holds no container per sample: a parse's
    sample tuples die with its families, before the cyclic collector (paused meanwhile for a large
    body) would walk each one at its next young collection."""
    n = 20_000
    parser = TextParser()

    def body(step: int) -> bytes:
        return "".join(f'app_requests_total{{path="/p{i}"}} {i + step}\n' for i in range(n)).encode()

    parser.parse(body(0))
    parser.parse(body(1))  # the template is built, then replayed
    assert parser._templates[False] is not None
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects(generation=0))
        families = parser.parse(body(2))
        assert [s[2] for s in families[0].samples[:3]] == [2.0, 3.0, 4.0]
        assert len(gc.get_objects(generation=0)) - before > n  # the families' samples, while they live
        del families
        assert len(gc.get_objects(generation=0)) - before < n // 100
    finally:
        gc.enable()


def test_template_families_seen_again_and_interleaved():
    body = "# TYPE a counter\na 1\nb 2\n# TYPE a counter\na 3\nb 4\nc{x=\"1\"} 5\n# HELP b B.\nb 6\n"
    parser = TextParser()
    parser.parse(body)
    assert parser._templates[False] is not None and parser._templates[False].order is not None
    for values in (["7", "8", "9", "10", "11", "12"], ["NaN", "8", "-Inf", "10", "11", "0"]):
        new = body
        for old, v in zip(["1", "2", "3", "4", "5", "6"], values, strict=True):
            new = new.replace(f" {old}\n", f" {v}\n")
        assert _same(parser.parse(new), parse(new))
        assert [len(f.samples) for f in parser.parse(new)] == [2, 3, 1]


def test_comment_lines_do_not_push_the_metadata_out_of_the_cache():
    """Blank and comment lines are cached as skipped beside HELP/TYPE/UNIT; the cache's bound counts
    them, so a body with many comments keeps its families' metadata from scrape to scrape (the Python
    parser's cache: the C reader of the plain form, which keeps none, off)."""
    p = TextParser()
    p.fast = False
    body = ("".join(f"# TYPE m{i} gauge\n# HELP m{i} h\nm{i} 1\n" for i in range(10))
            + "".join(f"# comment {i}\n" for i in range(600))).encode()
    p.parse(body)
    meta = p._meta[0]
    assert sum(1 for v in meta.values() if v[0] == "meta") == 20 and len(meta) == 620


# --------------------------------------------------------------------------- cost by input shape (counted, not timed)


def _count_slow_entries(monkeypatch) -> list[int]:
    """How many entries the slow path (Prometheus' lexer, line by line) reads."""
    calls = [0]
    entry = TextParser._entry

    def counting(*args):
        calls[0] += 1
        return entry(*args)

    monkeypatch.setattr(TextParser, "_entry", staticmethod(counting))
    return calls


@pytest.mark.parametrize(("line", "om"), [
    ("a NaN", False), ("a +Inf 17", False), ("a -Inf", True), ("a{b=\"x\"} NaN 1.5", True),  # a known series, NaN or Inf
    ("a+1", False), ("a\t1", False), ("a 1 ", False), ("a{b=\"\\\\\"} 1", False),  # forms the fast paths leave alone
    ("a{b=\"x\ny\"} 1", False), ("a{b=\"x\n\n\"} 1 17", False),  # a label value over several lines
])
def test_a_repeated_entry_is_read_once_by_the_slow_path(monkeypatch, line, om):
    body = (line + "\n") * 500 + ("# EOF\n" if om else "")
    want = _parsed(parse_without_shortcut_or_cache, body, om)
    calls = _count_slow_entries(monkeypatch)
    got = parse(body, om)
    assert calls[0] <= 2 and len(got[0].samples) == 500  # the first line (and # EOF)
    assert outcome(got) == want


def test_the_slow_path_keeps_a_bounded_number_of_entries(monkeypatch):
    import integrations.prometheus.textparse as tp

    monkeypatch.setattr(tp, "_SLOW_ENTRIES", 8)
    body = "".join(f"a{i}+1\n" for i in range(20)) * 3
    calls = _count_slow_entries(monkeypatch)
    fams = parse(body)
    assert calls[0] == 60 and [len(f.samples) for f in fams] == [3] * 20  # 20 entries, 8 kept: none repeats in time
    calls[0] = 0
    fams = parse("".join(f"a{i}+1\n" for i in range(8)) * 3)
    assert calls[0] == 8 and [len(f.samples) for f in fams] == [3] * 8


def test_a_repeated_entry_seen_on_other_lines_is_read_again(monkeypatch):
    """An entry kept from the slow path is reused only when the lines it went on over are the same."""
    body = 'a{b="x\ny"} 1\na{b="x\nz"} 1\na{b="x\ny"} 1\n'
    calls = _count_slow_entries(monkeypatch)
    fams = parse(body)
    assert calls[0] == 3
    assert [s[1] for s in fams[0].samples] == [(("b", "x\ny"),), (("b", "x\nz"),), (("b", "x\ny"),)]


def test_a_value_open_over_many_lines_is_scanned_once(monkeypatch):
    import integrations.prometheus.textparse as tp

    calls = [0]
    quoted_after = tp._quoted_after

    def counting(line, quoted):
        calls[0] += 1
        return quoted_after(line, quoted)

    monkeypatch.setattr(tp, "_quoted_after", counting)
    fams = parse('a{b="' + "x\n" * 50_000 + '"} 1\n')
    assert fams[0].samples[0][1] == (("b", "x\n" * 50_000),)
    assert calls[0] == 2  # the line opening the value and the one closing it, not each between
    with pytest.raises(ParseError, match="line 1: label value opened on this line never closed"):
        parse('a{b="' + "x\n" * 1000)


@pytest.mark.parametrize("quotes", ['"' * 10_001, '"' * 10_000, '\\"' + '"' * 10_000])
def test_quotes_on_a_line_are_counted_at_once(quotes):
    body = f'a{{b="x\n{quotes}}} 1\n'
    assert _parsed(parse, body) == _parsed(parse_without_shortcut_or_cache, body)


def _parsed(parse_fn, body: str | bytes, om: bool = False) -> object:
    """A parse's outcome, or its error's line and message."""
    try:
        return outcome(parse_fn(body, om))
    except ParseError as e:
        return (e.line, e.message)


def parse_without_shortcut_or_cache(body: str | bytes, om: bool = False) -> list:
    """The general path line by line: the C reader of the plain form, the plain-form shortcut, the run of
    label pairs and the kept entries off."""
    import integrations.prometheus.textparse as tp

    class Never:
        @staticmethod
        def fullmatch(s):
            return None

    saved = tp._SIMPLE_SERIES, tp._TEXT_PAIRS, tp._SLOW_ENTRIES
    tp._SIMPLE_SERIES, tp._TEXT_PAIRS, tp._SLOW_ENTRIES = Never, re.compile(""), 0  # type: ignore[assignment]
    try:
        parser = TextParser(template=False)
        parser.fast = False
        return parser.parse(body, om)
    finally:
        tp._SIMPLE_SERIES, tp._TEXT_PAIRS, tp._SLOW_ENTRIES = saved


@pytest.mark.parametrize("labels", [
    'b="1",' * 2000, 'b="1" ' * 2000, ' c = "x\\"y" ,' * 2000,  # a long run of pairs (a repeated name: an error)
    "".join(f'l{i}="v{i}",' for i in range(2000)), "".join(f'l{i} ="\\\\{i}"\t' for i in range(2000)),
    'a="1",b="2",c', 'a="1",,b="2"', 'a="1" b="2",}', 'a="1",b=2',  # a run, then what the loop says is wrong
])
def test_a_run_of_label_pairs_reads_as_pair_by_pair(monkeypatch, labels):
    import integrations.prometheus.textparse as tp

    body = f"a{{{labels}}} 1\n"
    want = _parsed(parse_without_shortcut_or_cache, body)
    calls = [0]
    pair = tp._TEXT_PAIR

    class Counting:
        @staticmethod
        def match(s, pos=0):
            calls[0] += 1
            return pair.match(s, pos)

    monkeypatch.setattr(tp, "_TEXT_PAIR", Counting)
    assert _parsed(parse, body) == want
    assert calls[0] <= 1  # the pairs in one run, not one by one


def test_a_run_of_label_pairs_with_a_value_not_utf8_names_it():
    body = b'a{x="1",' + b'b="1",' * 100 + b'c="\xff"} 1\n'
    with pytest.raises(ParseError, match=r"line 1: label value is not valid UTF-8: '\\udcff'"):
        parse(body)


def test_a_one_shot_parse_builds_no_template(monkeypatch):
    import integrations.prometheus.textparse as tp

    def build(*args):
        raise AssertionError("a template built")

    body = _shape_body(_VALUES)
    parser = TextParser()
    parser.parse(body)
    assert parser._templates[False] is not None
    monkeypatch.setattr(tp._Template, "build", build)
    assert _same(parse(body), parser.parse(body))


def _quoted_after_char_by_char(line: str, quoted: bool) -> bool:
    """The lexer's rule read one character at a time: a quote opens or closes a value, a backslash in
    a value escapes the character after it."""
    i = 0
    while i < len(line):
        if line[i] == '"':
            quoted = not quoted
        elif line[i] == "\\" and quoted:
            i += 1
        i += 1
    return quoted


def test_a_line_opens_or_closes_a_quoted_value_as_the_lexer_reads_it():
    import integrations.prometheus.textparse as tp

    rng = random.Random(5)
    lines = ["", "\\", '"', '\\"', '"\\', 'a\\\\"b"\\', "\\" * 100_001 + '"', '"' * 10_001 + "\\"]
    lines += ["".join(rng.choice('"\\ab') for _ in range(rng.randrange(12))) for _ in range(3000)]
    for line in lines:
        for quoted in (False, True):
            assert tp._quoted_after(line, quoted) is _quoted_after_char_by_char(line, quoted), (line[:40], quoted)


def test_a_value_open_over_a_run_of_backslashes_is_read_at_once():
    body = 'a 1\nb{c="d} 2\ne 3\n' + "\\" * 200_000 + '\n"} 4\n'
    fams = parse(body)
    assert [(s[0], s[2]) for f in fams for s in f.samples] == [("a", 1.0), ("b", 4.0)]
    assert fams[1].samples[0][1] == (("c", "d} 2\ne 3\n" + "\\" * 100_000 + "\n"),)
