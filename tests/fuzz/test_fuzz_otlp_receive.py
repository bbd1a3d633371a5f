"""Fuzz target ``otlp_receive``: one OTLP/HTTP request body through what the receivers do with it
in their worker thread and on the event loop: ``decode_request`` (as protobuf and as JSON),
``convert_request``, ``Pipeline.push`` (cumulative and delta) and the ``/metrics`` render of what
was taken. The documented error is ``RequestError`` (the request refused whole); a point refused
alone is partial success, never an exception. Anything else escaping, or a body costing more
than the harness' CPU bound, is a defect. Seeds: ``corpus/otlp_receive/`` (every metric kind and
attribute type in protobuf and JSON, delta histograms of different scales, an attribute nested
past protobuf's recursion limit, empty bodies)."""

from __future__ import annotations

from typing import Literal

import pytest

from bridge.exposition import render
from bridge.pipeline import Pipeline
from integrations.otlp_receive import ReceiveLimits, RequestError, convert_request, decode_request
from tests.fuzz.harness import CORPUS, fuzz_seconds, run_fuzz, seeds

TOKENS = [b'"resourceMetrics"', b'"scopeMetrics"', b'"metrics"', b'"dataPoints"', b'"gauge"', b'"sum"',
          b'"histogram"', b'"exponentialHistogram"', b'"summary"', b'"asInt"', b'"asDouble"', b'"bucketCounts"',
          b'"explicitBounds"', b'"scale"', b'"offset"', b'"positive"', b'"negative"', b'"zeroCount"',
          b'"aggregationTemporality": 1', b'"isMonotonic": true', b'"attributes"', b'"kvlistValue"',
          b'"arrayValue"', b'"bytesValue"', b'"traceId"', b'"timeUnixNano"', b'"startTimeUnixNano"',
          b'"18446744073709551615"', b'"-9223372036854775808"', b"NaN", b"1e308", b"-0", b"{", b"}", b"[", b"]",
          b",", b":", b"\x08\x01", b"\x0a", b"\x12", b"\x1a", b"\x22", b"\x29", b"\x31", b"\x38", b"\x3a",
          b"\x42", b"\x48", b"\x50", b"\x58", b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
          b"\x00"]

LIMITS = ReceiveLimits(max_data_points=10_000)
_pipeline: list[Pipeline] = []


def _receive(data: bytes, fmt: Literal["protobuf", "json"]) -> None:
    if not _pipeline:
        _pipeline.append(Pipeline(cardinality_limit=100))
    p = _pipeline[0]
    conv = convert_request(decode_request(data, fmt), LIMITS)
    p.push("fuzz", conv.info)
    p.push("fuzz", conv.cumulative)
    p.push("fuzz", conv.delta, delta=True)
    p.push("fuzz", conv.delta, delta=True)  # again: out of order, rejected point by point
    render(p.families(), {}, openmetrics=False)
    p.remove_source("fuzz")


def as_protobuf(data: bytes) -> None:
    _receive(data, "protobuf")


def as_json(data: bytes) -> None:
    _receive(data, "json")


@pytest.mark.fuzz
def test_fuzz_otlp_receive() -> None:
    pool = seeds("otlp_receive")
    assert any(p.lstrip().startswith(b"{") for p in pool) and any(p.startswith(b"\x0a") for p in pool)
    half = fuzz_seconds() / 2
    try:
        tried = run_fuzz(as_protobuf, pool, allowed=(RequestError,), tokens=TOKENS, seconds=half)
        tried += run_fuzz(as_json, pool, allowed=(RequestError,), tokens=TOKENS, seconds=half)
    finally:
        while _pipeline:
            _pipeline.pop().shutdown()
    assert tried >= 2 * len(pool)


def test_corpus_inputs_are_taken_or_refused_with_request_errors() -> None:
    """Every corpus file is taken (with its points in the pipeline) or refused with a message."""
    taken = refused = 0
    for path in sorted((CORPUS / "otlp_receive").iterdir()):
        fmt: Literal["protobuf", "json"] = "json" if path.suffix == ".json" else "protobuf"
        try:
            conv = convert_request(decode_request(path.read_bytes(), fmt), LIMITS)
        except RequestError as e:
            refused += 1
            assert e.status == 400 and e.message.startswith("body: "), (path.name, e.message)
            continue
        taken += 1
        if path.stem == "every_kind":
            p = Pipeline()
            try:
                # The gauge (its second point has no recorded value), the sum and the summary; then
                # two delta sum points, the delta histogram and two exponential ones (scales 3 and -1).
                assert p.push("x", conv.cumulative).accepted == 3 and conv.rejected == {}
                assert p.push("x", conv.delta, delta=True).accepted == 5
                text = render(p.families(), {}).decode()
                assert "e_bytes_bucket" in text and "cd_total" in text and 'quantile="0.5"' in text
            finally:
                p.shutdown()
    assert taken >= 3 and refused >= 1
