"""Fuzzing how the Elasticsearch client's answers are parsed off the event loop
(``integrations.elasticsearch.client.parse_answer`` and the serializers that hand its result to the
client).

The first byte of an input picks the answer's ``Content-Type`` (JSON, Elasticsearch's
compatibility JSON, NDJSON, plain text, a mimetype the client does not know, none), the rest is
the body. Whatever the body, parsing it in a worker thread and reading it back through the
client's serializer gives a value or raises ``SerializationError`` (the error the client raises for
an answer it cannot read): never a ``RecursionError`` of a deeply nested document or another
parser error. Nothing else may escape (``allowed=(SerializationError,)``).

Seeds: ``corpus/elastic_answer/`` (a bulk answer, a search answer with aggregations, NDJSON, JSON
nested deeper than the parser recurses, an unknown mimetype).
"""

from __future__ import annotations

import pytest
from elastic_transport import SerializationError

from integrations.elasticsearch.client import _Parsed, answer_serializers, parse_answer
from tests.fuzz.harness import run_fuzz, seeds

SERIALIZERS = answer_serializers()
MIMETYPES = ["application/json", "application/vnd.elasticsearch+json; compatible-with=9", "application/x-ndjson",
             "text/plain; charset=utf-8", "application/x-unknown", None]
TOKENS = [b"{", b"}", b"[", b"]", b'"items":', b'"status":201', b"\n", b"1e999", b"-0", b"null", b"\\ud800",
          b'"\\u0000"', b"NaN", b"Infinity"]


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
