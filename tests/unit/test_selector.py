"""Series selectors (bridge.selector): matching, and regexes that come from whoever sends a query."""

from __future__ import annotations

import pytest

from bridge.api import MetricKind
from bridge.dashboard.history import History
from bridge.dashboard.query import QueryError, evaluate, parse_query
from bridge.selector import parse_selector


def test_matchers_are_anchored_and_a_missing_label_is_the_empty_string():
    sel = parse_selector('req_total{code=~"5..", method!="GET", zone=~"|eu"}')
    assert sel.matches("req_total", {"code": "500", "method": "POST"})
    assert sel.matches("req_total", {"code": "503", "method": "PUT", "zone": "eu"})
    assert not sel.matches("req_total", {"code": "5000", "method": "POST"})  # anchored
    assert not sel.matches("req_total", {"code": "500", "method": "GET"})
    assert not sel.matches("req_totals", {"code": "500"})
    assert parse_selector('{__name__=~"te.*"}').matches("temp", {})
    assert parse_selector('x{job!~"a|b"}').matches("x", {"job": "c"})
    assert not parse_selector('x{job!~"a|b"}').matches("x", {"job": "b"})
    assert parse_selector('x{job=~"a.*"}').matches("x", {"job": "a\udcff"})  # a lone surrogate, as JSON allows
    assert not parse_selector('x{job=~"b.*"}').matches("x", {"job": "a\udcff"})


def test_a_backtracking_pattern_matches_in_linear_time():
    """``(.*){40}x``-like patterns make a backtracking engine try every split of the value; RE2
    answers at once. Python's ``re`` needed minutes for this one on a 9-character name, holding
    the interpreter. (No timing is asserted: the test would not end if the engine backtracked.)"""
    sel = parse_selector('{__name__=~"' + ".*" * 60 + 'z", job="a"}')
    assert not sel.matches("req_total" * 40, {"job": "a"})
    assert sel.matches("req_total" * 40 + "z", {"job": "a"})


@pytest.mark.parametrize("pattern", [r"(a)\\1", "(?<=a)b", "(?!a)", "["])
def test_what_re2_refuses_is_an_error_naming_the_selector(pattern, capfd):
    with pytest.raises(ValueError, match="invalid regular expression for job") as e:
        parse_selector('{job=~"' + pattern + '"}')
    assert str(e.value).startswith("selector ")
    assert capfd.readouterr().err == ""  # RE2's own error log is off


def test_the_dashboard_query_with_a_backtracking_pattern_answers():
    h = History(300.0, 15.0, 1 << 20)
    h.write_row([(("req_total", (("code", "200"),)), MetricKind.COUNTER, 1.0)],
                1_700_000_000.0)
    q = parse_query({"metric": '{__name__=~"' + ".*" * 100 + 'z"}'}, 1_700_000_100.0, 15.0, "x", 300.0)
    assert evaluate(h, q)["series"] == []
    with pytest.raises(QueryError, match="metric"):
        parse_query({"metric": '{__name__=~"(a)\\\\1"}'}, 1_700_000_100.0, 15.0, "x", 300.0)
