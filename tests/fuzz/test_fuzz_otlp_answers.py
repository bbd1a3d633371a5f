"""Fuzzing what an OTLP backend answers a push, and the attribute text the push encodes.

Whatever bytes come back, the push's reading of them returns and raises nothing: the body of a
2xx as an ``ExportMetricsServiceResponse`` (its partial success logged), an error body as a
``google.rpc.Status`` or as text, gRPC trailing metadata as a ``RetryInfo``, a ``Retry-After``
header (seconds or an HTTP date; never negative). And any text as attribute keys and values
encodes to a ``KeyValue`` list that ``opentelemetry-proto`` decodes back to the same attributes.

Seeds: a partial success, a Status, a RetryInfo, Retry-After values and a text body in
``corpus/otlp_answers/``.
"""

from __future__ import annotations

import logging

import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValueList

from bridge.delivery import retry_after_seconds
from integrations.otlp import _partial_success, _retry_info, _status_message
from integrations.otlp_wire import encode_attributes
from tests.fuzz.harness import run_fuzz, seeds
from tests.otlp_view import attributes

TOKENS = [b"\x08", b"\x0a", b"\x12", b"\x1a", b"\x10\x01", b"\xff" * 10, b"\x80" * 11, b"GMT", b"1e999", b"-1",
          b"nan", b"inf", b"\x00"]


def answer(data: bytes) -> None:
    _partial_success(data, "fuzz (http/protobuf)")
    assert isinstance(_status_message(data, "application/x-protobuf"), str)
    assert isinstance(_status_message(data, "text/plain"), str)
    delay = _retry_info((("google.rpc.retryinfo-bin", data),))
    assert delay is None or delay >= 0
    after = retry_after_seconds(data.decode("latin-1"))
    assert after is None or after >= 0
    text = data.decode("utf-8", "replace")
    attrs = {"t": text, text[:12]: len(data), "b": bool(data), "f": len(text) / 3.0}
    assert attributes(KeyValueList.FromString(encode_attributes(0x0A, attrs)).values) == attrs


@pytest.mark.fuzz
def test_fuzz_otlp_answers() -> None:
    log = logging.getLogger("monbridge.integrations.otlp")
    pool = seeds("otlp_answers")
    log.disabled = True  # partial successes are logged: not for every input
    try:
        assert run_fuzz(answer, pool, allowed=(), tokens=TOKENS) >= len(pool)
    finally:
        log.disabled = False


def test_partial_success_seed_is_reported(caplog) -> None:
    from tests.fuzz.harness import CORPUS

    _partial_success((CORPUS / "otlp_answers" / "partial_success.bin").read_bytes(), "b (http/protobuf)")
    assert "rejected 3 data points: points too old" in caplog.text
