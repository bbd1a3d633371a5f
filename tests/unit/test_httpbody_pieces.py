"""Large JSON bodies are parsed element by element at their top levels (``_loads_in_pieces``), so a
worker thread parsing one lets the event loop run between elements: the result and the errors
must be exactly ``json.loads``'s."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.httpbody import THREAD_ABOVE, BodyError, _finite, _loads_in_pieces, _refuse_constant, parse_json

LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
DOCS = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
                    max_leaves=40)


def reference(text: str) -> tuple[str, object]:
    try:
        # As parse_json reads a small body: NaN/Infinity refused, and a number beyond a float's
        # range too (json.loads alone would make it inf).
        return "ok", json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except ValueError:
        return "error", None


def pieces(text: str) -> tuple[str, object]:
    try:
        return "ok", _loads_in_pieces(text)
    except ValueError:
        return "error", None


@settings(max_examples=300, deadline=None)
@given(DOCS, st.sampled_from([None, 1, 2]), st.sampled_from([(",", ":"), (" , ", " : ")]))
def test_a_document_parses_as_json_loads_parses_it(doc, indent, separators):
    text = json.dumps(doc, indent=indent, separators=separators)
    assert pieces(text) == reference(text) == ("ok", json.loads(text))


def test_a_number_beyond_a_float_is_refused_in_pieces_as_in_one_piece():
    """A cut that joins two numbers into one beyond a float's range (found by the test below)."""
    text = "[1.0,123899993951949e+295]"
    assert pieces(text) == reference(text) == ("error", None)


@settings(max_examples=500, deadline=None)
@given(DOCS, st.data())
def test_a_broken_document_is_refused_as_json_loads_refuses_it(doc, data):
    text = json.dumps(doc)
    at = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 3))
    junk = data.draw(st.sampled_from(["", ",", "]", "}", ":", '"', "[", "{", " x", "NaN", "\x01"]))
    broken = text[:at] + junk + text[at + cut:]
    assert pieces(broken) == reference(broken)


def test_a_large_body_is_never_one_long_call_of_the_c_scanner(monkeypatch):
    """A 10,000-alert body is parsed by many short calls of json's C scanner (each holds the GIL
    for its whole length; between them a worker thread lets the event loop run): none covers more
    than one alert's text."""
    import bridge.httpbody as httpbody

    alert = {"status": "firing", "labels": {"alertname": "High"}, "annotations": {"summary": "s" * 200}}
    body = json.dumps({"version": "4", "alerts": [dict(alert, labels={"n": str(i)}) for i in range(10_000)]}).encode()
    assert len(body) > THREAD_ABOVE
    spans: list[int] = []
    scan = httpbody._SCAN

    def counting(text: str, i: int):
        value, end = scan(text, i)
        spans.append(end - i)
        return value, end

    monkeypatch.setattr(httpbody, "_SCAN", counting)
    doc = parse_json(body, 16)
    assert len(doc["alerts"]) == 10_000 and doc["alerts"][9_999]["labels"] == {"n": "9999"}
    one_alert = len(json.dumps(dict(alert, labels={"n": "9999"})))
    assert len(spans) > 10_000 and max(spans) <= one_alert, (len(spans), max(spans, default=0))


def test_large_bodies_keep_the_small_bodies_errors():
    big = b'{"alerts": [' + b'{"a": 1},' * 10_000 + b'{"a": NaN}]}'
    try:
        parse_json(big, 16)
    except BodyError as e:
        assert e.status == 400 and "not valid JSON" in e.message
    else:
        raise AssertionError("NaN accepted in a large body")
