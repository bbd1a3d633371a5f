"""Nagios threshold ranges, perfdata and plugin output, as the monitoring plugins development
guidelines and Nagios Core's parse_check_output define them."""

from __future__ import annotations

import math

import pytest

from integrations.nagios.output import MAX_PLUGIN_OUTPUT_LENGTH, State, parse_plugin_output, state_from_exit
from integrations.nagios.perfdata import PerfItem, format_item, format_perfdata, parse_perfdata
from integrations.nagios.ranges import Range, RangeError, format_number, parse_range

# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize("text, start, end, inside, alerting, quiet", [
    ("10", 0, 10, False, [-1, 10.5, 11], [0, 5, 10]),
    ("10:", 10, math.inf, False, [9.99, -5], [10, 1e9]),
    ("~:10", -math.inf, 10, False, [10.01, 100], [-1e9, 10]),
    ("10:20", 10, 20, False, [9, 21], [10, 15, 20]),
    ("@10:20", 10, 20, True, [10, 15, 20], [9.9, 20.1]),
    (":10", 0, 10, False, [-0.5, 11], [0, 10]),
    ("-5:-1", -5, -1, False, [0, -6], [-5, -3, -1]),
    ("@~:0", -math.inf, 0, True, [0, -3], [0.1]),
    ("1e3", 0, 1000, False, [1001], [999]),
    ("0.5:1.5", 0.5, 1.5, False, [0.4, 1.6], [1]),
])
def test_every_range_form_of_the_guidelines(text, start, end, inside, alerting, quiet):
    r = parse_range(text)
    assert (r.start, r.end, r.inside) == (start, end, inside)
    assert all(r.alerts(v) for v in alerting), [v for v in alerting if not r.alerts(v)]
    assert not any(r.alerts(v) for v in quiet), [v for v in quiet if r.alerts(v)]
    assert str(r) == text  # kept as written
    assert parse_range(r.render()) == Range(start, end, inside, r.render())


@pytest.mark.parametrize("text, why", [
    ("", "empty"), ("@", "empty"), ("20:10", "above end"), ("abc", "not a Nagios range"), ("1:2:3", "not a"),
    ("~", "not a"), ("10:~", "not a"), ("inf", "not a"), ("nan:", "not a"), ("0x10", "not a"), ("1e999", "not a"),
    ("x" * 300, "longer than"), ("@@1", "not a"),
])
def test_bad_ranges_are_refused_with_the_reason(text, why):
    with pytest.raises(RangeError, match=why):
        parse_range(text)


def test_numbers_are_written_shortest():
    assert [format_number(v) for v in (10.0, -3.0, 0.5, 1e20, 2.5e-7)] == ["10", "-3", "0.5", "1e+20", "2.5e-07"]


# --------------------------------------------------------------------------- perfdata


def one(text: str) -> PerfItem:
    parsed = parse_perfdata(text)
    assert parsed.errors == [] and len(parsed.items) == 1, parsed
    return parsed.items[0]


def test_the_full_form_with_every_field():
    item = one("'time'=0.012s;0.5;1;0;10")
    assert (item.label, item.value, item.uom, item.min, item.max) == ("time", 0.012, "s", 0.0, 10.0)
    assert item.warn == parse_range("0.5") and item.crit == parse_range("1")


@pytest.mark.parametrize("uom, unit, factor", [
    ("", "", 1), ("s", "s", 1), ("ms", "s", 1e-3), ("us", "s", 1e-6), ("%", "%", 1), ("B", "By", 1),
    ("KB", "By", 1024), ("MB", "By", 1024 ** 2), ("GB", "By", 1024 ** 3), ("TB", "By", 1024 ** 4), ("c", "", 1),
])
def test_every_uom_of_the_guidelines(uom, unit, factor):
    item = one(f"x=2{uom};;;1;3")
    assert (item.value, item.uom, item.otel_unit, item.known_uom) == (2.0, uom, unit, True)
    assert item.converted(item.value) == pytest.approx(2 * factor)
    assert item.converted(item.min) == pytest.approx(factor) and item.converted(item.max) == pytest.approx(3 * factor)
    assert item.counter == (uom == "c")


def test_an_unknown_uom_is_kept_as_written_and_not_converted():
    item = one("temp=21.5degC;30;40")
    assert (item.value, item.uom, item.known_uom, item.otel_unit, item.converted(21.5)) == (21.5, "degC", False, "", 21.5)


def test_quoted_labels_with_spaces_equals_and_doubled_quotes():
    parsed = parse_perfdata("'a b'=1 'x=y'=2 'it''s'=3 '''q'''=4 'tab\there'=5 ''''=6")
    assert parsed.errors == []
    assert [i.label for i in parsed.items] == ["a b", "x=y", "it's", "'q'", "tab\there", "'"]


def test_empty_fields_and_trailing_semicolons():
    assert one("a=1;;;;") == PerfItem("a", 1.0)
    assert one("a=1;;5") == PerfItem("a", 1.0, "", None, parse_range("5"))
    assert one("a=1;@1:2;;;9").warn == parse_range("@1:2")
    assert one("a=1;;;;9").max == 9.0


def test_undetermined_values():
    assert one("a=U").value is None
    assert one("a=U;1;2;0;10").value is None
    assert one("a=").value is None
    assert one("a=;;;;").value is None


@pytest.mark.parametrize("text, value", [("a=-1.5", -1.5), ("a=+2", 2.0), ("a=.5", 0.5), ("a=5.", 5.0),
                                         ("a=1e3", 1000.0), ("a=1E-2ms", 0.01), ("a=0,25", 0.25)])
def test_number_forms(text, value):
    assert one(text).value == value


def test_ranges_in_warn_and_crit():
    for r in ("10", "10:", "~:10", "10:20", "@10:20"):
        item = one(f"v=1;{r};{r}")
        assert item.warn == parse_range(r) and item.crit == parse_range(r)


def test_whitespace_between_items_of_any_kind_and_repeated():
    parsed = parse_perfdata("  a=1 \t b=2\n\nc=3  ")
    assert [i.label for i in parsed.items] == ["a", "b", "c"] and parsed.errors == []


@pytest.mark.parametrize("text, why", [
    ("a", "no '='"), ("=1", "empty label"), ("a=x", "not a number"), ("a=1;zz", "not a Nagios range"),
    ("a=1;;;min", "min"), ("a=1;;;0;max", "max"), ("a=1;1;2;3;4;5", "at most 5"), ("a=1;20:10", "above end"),
    ("'a'b=1", "no '='"), ("a=--1", "not a number"), ("a=inf", "not a number"), ("a=nan", "not a number"),
])
def test_a_bad_item_is_left_out_and_named_the_others_kept(text, why):
    parsed = parse_perfdata(f"ok1=1 {text} ok2=2")
    assert [i.label for i in parsed.items] == ["ok1", "ok2"]
    assert len(parsed.errors) == 1 and why in parsed.errors[0], parsed.errors


def test_an_unterminated_quote_ends_the_parse_with_an_error():
    parsed = parse_perfdata("a=1 'broken=2 c=3")
    assert [i.label for i in parsed.items] == ["a"]
    assert parsed.errors == ["item at character 4: unterminated quoted label"]


def test_item_count_is_bounded():
    parsed = parse_perfdata(" ".join(f"m{i}=1" for i in range(50)), max_items=10)
    assert len(parsed.items) == 10 and "more than 10 items" in parsed.errors[-1]


def test_hostile_inputs_stay_linear_and_bounded():
    huge = "x=1 " * 200_000  # 800 KB
    parsed = parse_perfdata(huge)
    assert len(parsed.items) == 1000 and len(parsed.errors) == 1
    deep = "'" + "''" * 100_000 + "'=1"  # a label of 100,000 quotes: refused by its length, in one pass
    assert "longer than 256" in parse_perfdata(deep).errors[0]
    bad = parse_perfdata("a=1\udcff b=\x00 c=\ufffd2")  # bytes that were not UTF-8, a NUL
    assert bad.items == [] and len(bad.errors) == 3
    assert "unit" in bad.errors[0]
    assert parse_perfdata("'a\x01b'=1").errors == ["item at character 0: label holds a control character or an invalid one"]
    assert parse_perfdata("a=1" + "u" * 17).errors[0].endswith("longer than 16 characters or holds a control character")
    long_label = parse_perfdata("y" * 300 + "=1")
    assert long_label.items == [] and "longer than 256" in long_label.errors[0]


def test_format_round_trips_every_item():
    text = ("'a b'=1.5ms;2;@3:4;0;10 c=5c 'it''s'=U;~:1 x=0.25%;10:;~:90 big=1099511627776B;;;0 "
            "plain=7 temp=21degC;30;40;-10;80 '='=1;;;;5")
    items = parse_perfdata(text).items
    assert len(items) == 8
    again = format_perfdata(items)
    assert parse_perfdata(again).items == items
    assert again == text  # written as the plugin wrote it


def test_labels_are_quoted_when_they_need_it():
    assert format_item(PerfItem("plain", 1.0)) == "plain=1"
    assert format_item(PerfItem("a b", 1.0, "s")) == "'a b'=1s"
    assert format_item(PerfItem("it's", None)) == "'it''s'=U"
    assert format_item(PerfItem("", 2.0)) == "''=2"
    assert format_item(PerfItem("x", 1.0, "", None, None, None, 5.0)) == "x=1;;;;5"


# --------------------------------------------------------------------------- plugin output


def test_first_line_text_and_perfdata():
    out = parse_plugin_output("DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n")
    assert out.text == "DISK OK - free space: / 3326 MB (56%):"  # Nagios' semicolons to colons
    assert out.long_text == "" and out.perfdata_text == "/=2643MB;5948;5958;0;5968"
    assert out.perfdata[0] == PerfItem("/", 2643.0, "MB", parse_range("5948"), parse_range("5958"), 0.0, 5968.0)


def test_long_text_and_more_perfdata_as_nagios_core_reads_them():
    # The example of the Nagios plugin API documentation.
    out = parse_plugin_output("DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n"
                              "/ 15272 MB (77%);\n"
                              "/boot 68 MB (69%);\n"
                              "/home 69357 MB (27%);\n"
                              "/var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n"
                              "/home=69357MB;253404;253409;0;253414 \n"
                              "/var/log=818MB;970;975;0;980\n")
    assert out.text == "DISK OK - free space: / 3326 MB (56%):"
    assert out.long_text == "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%); "
    assert [i.label for i in out.perfdata] == ["/", "/boot", "/home", "/var/log"]
    assert out.perfdata_errors == []


def test_output_edge_cases():
    assert parse_plugin_output("just text").text == "just text"
    assert parse_plugin_output("|a=1").text == "" and parse_plugin_output("|a=1").perfdata[0].label == "a"
    assert parse_plugin_output("  padded  | a=1 ").text == "padded"
    two_bars = parse_plugin_output("t | a=1 | b=2")
    assert two_bars.perfdata_text == "a=1 | b=2" and [i.label for i in two_bars.perfdata] == ["a", "b"]
    assert len(two_bars.perfdata_errors) == 1  # the second '|' is no perfdata item
    assert parse_plugin_output("text\x00 | hidden=1").perfdata == []  # read up to a NUL, as Nagios
    assert parse_plugin_output("a\n\nb\n").long_text == "\nb"


def test_states_of_exit_codes():
    assert [state_from_exit(c) for c in (0, 1, 2, 3)] == [State.OK, State.WARNING, State.CRITICAL, State.UNKNOWN]
    assert state_from_exit(4) is State.UNKNOWN and state_from_exit(-1) is State.UNKNOWN and state_from_exit(255) is State.UNKNOWN
    assert MAX_PLUGIN_OUTPUT_LENGTH == 8192
