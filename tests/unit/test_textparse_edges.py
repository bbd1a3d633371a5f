"""The scrape parser on the edges of the formats: values and timestamps at the limits, names and
labels that break the rules, and the line each error is reported at."""

from __future__ import annotations

import math

import pytest

from integrations.prometheus.textparse import ParseError, parse

INT64_MIN = -(2**63)


def _error(body: bytes, om: bool) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(body, om)
    return info.value


@pytest.mark.parametrize("ts", [b"Inf", b"+Inf", b"-Inf", b"NaN", b"nan", b"+inf"])
def test_openmetrics_timestamps_that_are_not_finite_are_errors(ts):
    err = _error(b"# TYPE a gauge\na 1 " + ts + b"\n# EOF\n", True)
    assert err.line == 2 and "invalid timestamp" in err.message and ts.decode() in err.message


@pytest.mark.parametrize("ts", [b"1e400", b"-1e400"])
def test_openmetrics_timestamps_past_float_range_are_errors(ts):
    err = _error(b"a 1\na 1 " + ts + b"\n# EOF\n", True)
    assert err.line == 2 and "timestamp" in err.message


@pytest.mark.parametrize(("ts", "ms"), [
    (b"1e300", INT64_MIN), (b"-1e300", INT64_MIN), (b"9223372036854775.808", INT64_MIN),
    (b"9.2e15", 9_200_000_000_000_000_000), (b"-9223372036854775.808", INT64_MIN),
    (b"1.5", 1500), (b"-0.0015", -1), (b"0", 0),
])
def test_openmetrics_timestamps_beyond_int64_read_as_go_converts_them(ts, ms):
    """Seconds to int64 milliseconds as Go's int64(float64) on amd64: out of range is the minimum."""
    (fam,) = parse(b"a 1 " + ts + b"\n# EOF\n", True)
    assert fam.samples[0][3] == ms


@pytest.mark.parametrize("om", [False, True])
@pytest.mark.parametrize("value", [b"-1e400", b"1e400", b"+1e309"])
def test_values_past_float_range_are_errors(value, om):
    body = b"a 0\na " + value + b"\n" + (b"# EOF\n" if om else b"")
    err = _error(body, om)
    assert err.line == 2 and "out of range" in err.message and value.decode() in err.message


@pytest.mark.parametrize("om", [False, True])
def test_a_value_below_float_range_reads_as_zero_with_its_sign(om):
    (fam,) = parse(b"a -1e-400\n" + (b"# EOF\n" if om else b""), om)
    value = fam.samples[0][2]
    assert value == 0.0 and math.copysign(1, value) == -1


@pytest.mark.parametrize("om", [False, True])
def test_duplicate_label_names_are_errors(om):
    body = b'a{x="1"} 1\na{x="1",y="2",x="3"} 1\n' + (b"# EOF\n" if om else b"")
    err = _error(body, om)
    assert err.line == 2 and err.message == "label name 'x' is not unique"


@pytest.mark.parametrize(("unit_line", "ok"), [
    (b"# UNIT a_seconds seconds\n", True),
    (b"# UNIT a_seconds \n", True),            # an empty unit names nothing
    (b"# UNIT a_seconds second\n", False),     # not a whole suffix
    (b"# UNIT a_seconds bytes\n", False),
    (b"# UNIT seconds seconds\n", False),      # the name is only its unit: no "_seconds" suffix
    (b"# UNIT aseconds seconds\n", False),     # a suffix, but not after "_"
])
def test_unit_must_be_a_suffix_of_the_name_after_an_underscore(unit_line, ok):
    name = unit_line.split(b" ")[2]
    body = b"# TYPE " + name + b" gauge\n" + unit_line + name + b" 1\n# EOF\n"
    if ok:
        (fam,) = parse(body, True)
        assert fam.unit == unit_line.split(b" ", 3)[3].strip().decode()
    else:
        err = _error(body, True)
        assert err.line == 2 and "is not a suffix of metric" in err.message


@pytest.mark.parametrize("om", [False, True])
def test_a_label_value_that_is_only_a_newline(om):
    (fam,) = parse(b'a{x="\\n"} 1\n' + (b"# EOF\n" if om else b""), om)
    assert fam.samples[0][1] == (("x", "\n"),)


@pytest.mark.parametrize(("body", "om", "line", "text"), [
    (b"# HELP\n# EOF\n", True, 1, "expected '# HELP ', '# TYPE ', '# UNIT ' or '# EOF'"),
    (b"a 1\n# TYPE 1a gauge\n# EOF\n", True, 2, "expected metric name after TYPE"),
    (b"# TYPE a gauge\n# TYPE b summery\n# EOF\n", True, 2, "invalid metric type 'summery'"),
    (b"a 1\n# EOF \n", True, 2, "unexpected data after # EOF"),
    (b"a 1\n.a 1\n# EOF\n", True, 2, "expected metric name or '# '"),
    (b"a 1\n1a 1\n", False, 2, ""),
    (b"a 1\na_total 1 2 # {x=\"y\"} 1 Inf\n# EOF\n", True, 2, "invalid exemplar timestamp"),
    (b"a 1\na_total 1 # {x=\"y\"} 1 2 3\n# EOF\n", True, 2, "expected end of line after exemplar timestamp"),
    (b"a 1\na_total 1 # {x=\"y\"}\n# EOF\n", True, 2, "expected a space and a value after exemplar labels"),
    (b"a 1\na_total 1 # {x=\"y\"} 1  \n# EOF\n", True, 2, "expected exemplar timestamp or end of line"),
    (b"a 1\na 1 2 3\n# EOF\n", True, 2, "expected end of line or exemplar after timestamp"),
    (b"a 1\na 1  \n# EOF\n", True, 2, "expected timestamp or exemplar"),
    (b"a 1\na\n# EOF\n", True, 2, "expected a space and a value after metric 'a'"),
    (b"a 1\n# HELP a\n# EOF\n", True, 2, "expected a space and text after HELP a"),
])
def test_errors_name_their_line(body, om, line, text):
    err = _error(body, om)
    assert err.line == line and text in err.message


def test_exemplars_on_total_and_bucket_samples_are_read_and_dropped():
    body = (b'# TYPE a counter\na_total 1 # {t="x"} 0.5 1.5\n# TYPE h histogram\n'
            b'h_bucket{le="+Inf"} 2 # {t="y"} 3\nh_count 2\nh_sum 3\n# EOF\n')
    fams = {f.name: f for f in parse(body, True)}
    assert fams["a"].samples[0][:4] == ("a_total", (), 1.0, None)
    assert [s[0] for s in fams["h"].samples] == ["h_bucket", "h_count", "h_sum"]


def test_openmetrics_families_take_their_suffixes_by_type():
    body = (b"# TYPE g gaugehistogram\ng_bucket{le=\"+Inf\"} 1\ng_gcount 1\ng_gsum 2\n"
            b"# TYPE i info\ni_info{v=\"1\"} 1\n# TYPE c counter\nc_total 1\nc_created 5\nc_other 1\n# EOF\n")
    fams = {f.name: f for f in parse(body, True)}
    assert [s[0] for s in fams["g"].samples] == ["g_bucket", "g_gcount", "g_gsum"]
    assert fams["i"].type == "info" and fams["i"].samples[0][0] == "i_info"
    assert [s[0] for s in fams["c"].samples] == ["c_total", "c_created"]
    assert fams["c_other"].type == "unknown"


def test_text_families_take_their_suffixes_by_type():
    body = (b"# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\ns_created 4\ns_bucket 1\n"
            b"# TYPE c counter\nc 1\nc_total 2\n")
    fams = {f.name: f for f in parse(body, False)}
    assert [s[0] for s in fams["s"].samples] == ["s", "s_sum", "s_count", "s_created"]
    assert fams["s_bucket"].type == "untyped" and fams["c_total"].type == "untyped"
    assert [s[0] for s in fams["c"].samples] == ["c"]


@pytest.mark.parametrize("om", [False, True])
def test_help_text_that_is_not_utf8_is_an_error_on_its_line(om):
    body = b"a 1\n# HELP a \xff\xfe\n" + (b"# EOF\n" if om else b"")
    err = _error(body, om)
    assert err.line == 2 and err.message.startswith("HELP text is not valid UTF-8")
