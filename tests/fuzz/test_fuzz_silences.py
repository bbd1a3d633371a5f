"""Fuzzing the silences API: whatever body ``POST /api/v1/silences`` gets, the route's reading of
it (``decode_json`` with ``API_LIMITS`` and ``silence_from_request``) returns a silence, which
is then added and answered as the route does, or raises ``BodyError`` (a 400 naming the field,
or a 413 naming the limit), in bounded time and memory.

Seeds: silences in Alertmanager v2's form and the API's own (string matchers, ``duration``) in
``corpus/silences/``.
"""

from __future__ import annotations

import pytest

from bridge.alerting.http import API_LIMITS, silence_from_request
from bridge.alerting.silences import Silence, Silences
from bridge.httpbody import BodyError, decode_json
from tests.fuzz.harness import CORPUS, run_fuzz, seeds

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TOKENS = [b"[", b"]", b"{", b"}", b'"', b"\\", b"\\u0000", b",", b":", b"null", b"true", b"false", b"NaN",
          b"1e999", b"1e308", b"-1", b"0", b"1" * 30, b'"matchers":[', b'"name":', b'"value":', b'"isRegex":true',
          b'"isEqual":false', b'"duration":', b'"startsAt":', b'"endsAt":', b'"9999-12-31T23:59:59Z"',
          b'"0001-01-01T00:00:00Z"', b'"createdBy":', b'"comment":', b'"id":', b'=~\\"', b'!~\\"', b'(', b'a{1000}',
          b"(a*)*", b"\xff"]


def add(data: bytes) -> None:
    """What the route does with a body: read it, add the silence (in memory), answer it as JSON."""
    s: Silence = decode_json(data, API_LIMITS, lambda doc: silence_from_request(doc, NOW))
    silences = Silences(None, clock=lambda: NOW)
    silences.add(s)
    s.to_json(NOW)
    silences.muting({"alertname": "HighCPU", "host": "h1"})


@pytest.mark.fuzz
def test_fuzz_silences() -> None:
    pool = seeds("silences")
    for path in sorted((CORPUS / "silences").glob("[!c]*.json")):
        add(path.read_bytes())  # the examples (not the crash-* inputs) are taken
    assert run_fuzz(add, pool, allowed=(BodyError,), tokens=TOKENS) >= len(pool)


def test_corpus_crashes_are_refused_as_body_errors() -> None:
    """The inputs the fuzzer found (``crash-*``) are refused with a BodyError."""
    for path in sorted((CORPUS / "silences").glob("crash-*")):
        with pytest.raises(BodyError):
            add(path.read_bytes())
