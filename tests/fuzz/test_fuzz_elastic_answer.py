"""Fuzzing how the Elasticsearch client's answers are parsed off the event loop
(``integrations.elasticsearch.client.parse_answer`` and the serializers that hand its result to the
client).

The first byte of an input picks the answer's ``Content-Type`` (JSON, Elasticsearch's
compatibility JSON, NDJSON, plain text, a mimetype the client does not know, none), the rest is
the body. Whatever the body, parsing it in a worker thread and reading it back through the
client's serializer gives a value or raises ``SerializationError`` (the error the client raises for
an answer it cannot read): never a ``RecursionError`` of a deeply nested document or another
parser error. Nothing else may escape (``allowed=(SerializationError,)``). A JSON body that
``bulk_fast_path`` reads (a bulk answer of created items, read without parsing each) gives what
the JSON parser gives it.

Seeds: ``corpus/elastic_answer/`` (bulk answers: compact, with whitespace, of several items, one
whose ``errors`` is false but an item failed; a search answer with aggregations, NDJSON, JSON
nested deeper than the parser recurses, an unknown mimetype).
"""

from __future__ import annotations

import json

import pytest
from elastic_transport import SerializationError

from integrations.elasticsearch.client import _Parsed, answer_serializers, bulk_fast_path, parse_answer
from tests.fuzz.harness import run_fuzz, seeds

SERIALIZERS = answer_serializers()
MIMETYPES = ["application/json", "application/vnd.elasticsearch+json; compatible-with=9", "application/x-ndjson",
             "text/plain; charset=utf-8", "application/x-unknown", None]
TOKENS = [b"{", b"}", b"[", b"]", b'"items":', b'"status":201', b"\n", b"1e999", b"-0", b"null", b"\\ud800",
          b'"\\u0000"', b"NaN", b"Infinity", b'"errors":false,', b'{"create":{"status":201}},', b" ", b"\x0b", b"\x00"]


def read(data: bytes) -> None:
    mimetype = MIMETYPES[data[0] % len(MIMETYPES)] if data else None
    body = data[1:]
    parsed = parse_answer(body, mimetype, SERIALIZERS)
    assert isinstance(parsed, _Parsed) and bytes(parsed) == body
    key = (mimetype or "application/json").partition(";")[0]
    serializer = SERIALIZERS.get(key) or SERIALIZERS.get(key.partition("/")[0] + "/*")
    if serializer is None:
        assert isinstance(parsed.error, SerializationError)
        raise parsed.error
    fast = bulk_fast_path(body) if key in ("application/json", "application/vnd.elasticsearch+json") else None
    if fast is not None:  # what the JSON parser gives, compared as JSON text (NaN is not equal to itself)
        assert json.dumps(fast) == json.dumps(json.loads(body))
    serializer.loads(parsed)


@pytest.mark.fuzz
def test_fuzz_elastic_answer() -> None:
    pool = seeds("elastic_answer")
    assert run_fuzz(read, pool, allowed=(SerializationError,), tokens=TOKENS) >= len(pool)


def test_deep_nesting_is_a_serialization_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    parsed = parse_answer(deep, "application/json", SERIALIZERS)
    with pytest.raises(SerializationError, match="RecursionError"):
        SERIALIZERS["application/json"].loads(parsed)


def test_values_come_back_as_the_client_parses_them() -> None:
    parsed = parse_answer(b'{"errors":false,"items":[]}', "application/json; charset=UTF-8", SERIALIZERS)
    assert SERIALIZERS["application/json"].loads(parsed) == {"errors": False, "items": []}
    parsed = parse_answer(b"ok", "text/plain", SERIALIZERS)
    assert SERIALIZERS["text/*"].loads(parsed) == "ok"


def same_as_parsed(raw: bytes) -> list[object]:
    """``raw`` read by ``bulk_fast_path``, checked against the JSON parser; its items."""
    fast = bulk_fast_path(raw)
    assert fast is not None and fast == json.loads(raw)
    for mimetype in ("application/json", "application/vnd.elasticsearch+json; compatible-with=9"):
        assert SERIALIZERS["application/json"].loads(parse_answer(raw, mimetype, SERIALIZERS)) == fast
    items: list[object] = fast["items"]
    return items


def test_bulk_answer_of_created_items_is_read_without_parsing_each() -> None:
    item = b'{"create":{"status":201}}'
    for raw in (b'{"errors":false,"items":[' + b",".join([item] * 5000) + b"]}",  # as Elasticsearch writes it
                b'{"took":3,"errors":false,"ingest_took":0,"items":[' + item + b"]}",
                b' {"errors": false, "took": 1, "items": [' + b", ".join([b'{"create": {"status": 201}}'] * 3)
                + b"] }\n"):
        items = same_as_parsed(raw)
        assert all(it is items[0] for it in items)  # one item parsed
    assert same_as_parsed(b'{"errors":false,"items":[ ]}') == []
    # an item's own text decides: an ASCII head does not make a NUL-led item UTF-16
    assert bulk_fast_path(b'{"errors":false,"items":[{\x00}\x00]}') is None


@pytest.mark.parametrize("raw", [
    b'{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":429,"error":{"type":"x"}}}]}',
    b'{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":429}}]}',  # a peer's lie: each read
    b'{"errors":false,"items":[{"create":{"status":201,"_id":"a,b"}},{"create":{"status":201,"_id":"a,b"}}]}',
    b'{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}},]}',
    b'{"errors":false,"items":[NaN,NaN]}',
    b'{"errors":false,"items":[1,1]}',
    b'{"errors":0,"items":[{"a":1}]}',
    b'{"errors":false,"took":01,"items":[{"a":1}]}',
    b'{"errors":false,"items":[{"a":1}]\x0b}',
    b'{"errors":false,"items":[{"a":1}]}x',
    b'{"errors":false,"items":[' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"]}",
])
def test_other_answers_are_parsed_whole(raw: bytes) -> None:
    """An answer with a failed item, or any the fast path does not read, is the JSON parser's
    (its value, or the error the client raises)."""
    assert bulk_fast_path(raw) is None
    parsed = parse_answer(raw, "application/json", SERIALIZERS)
    try:
        expected = json.loads(raw)
    except (ValueError, RecursionError):
        with pytest.raises(SerializationError):
            SERIALIZERS["application/json"].loads(parsed)
        return
    got = SERIALIZERS["application/json"].loads(parsed)
    assert json.dumps(got) == json.dumps(expected)
    if isinstance(got, dict) and isinstance(got.get("items"), list) and len(got["items"]) > 1 \
            and isinstance(got["items"][0], dict):
        assert got["items"][0] is not got["items"][1]
