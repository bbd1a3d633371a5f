"""Fuzz target ``otlp_inflate``: an OTLP/HTTP body as sent with ``Content-Encoding`` gzip or
deflate, through what the HTTP receiver's worker thread does with it: ``inflate`` (bounded by
``max_decompressed_bytes``) and then ``decode_request`` and ``convert_request``. The documented
errors are ``BodyError`` (the body is no valid stream of its encoding, or decompresses past the
limit) and ``RequestError`` (the decompressed body is no OTLP request). Seeds:
``corpus/otlp_inflate/`` (every metric kind in protobuf and JSON, gzip and deflate, an empty
stream, and 1 MiB of zeros: a bomb past the target's 64 KiB limit)."""

from __future__ import annotations

import pytest

from bridge.helpers import BodyError, BodyLimits, inflate
from integrations.otlp_receive import ReceiveLimits, RequestError, convert_request, decode_request
from tests.fuzz.harness import CORPUS, fuzz_seconds, run_fuzz, seeds

LIMIT = BodyLimits(max_bytes=64 << 10)
TOKENS = [b"\x1f\x8b\x08\x00", b"\x78\x9c", b"\x78\x01", b"\x00\x00\xff\xff", b"\x03\x00", b"\xff" * 4, b"\x00" * 8]


def one(coding: str, data: bytes) -> None:
    body = inflate(data, coding, LIMIT)
    assert len(body) <= LIMIT.max_bytes
    fmt = "json" if body.lstrip().startswith(b"{") else "protobuf"
    convert_request(decode_request(body, fmt), ReceiveLimits(max_data_points=10_000))


@pytest.mark.fuzz
def test_fuzz_otlp_inflate() -> None:
    pool = seeds("otlp_inflate")
    half = fuzz_seconds() / 2
    tried = run_fuzz(lambda d: one("gzip", d), pool, allowed=(BodyError, RequestError), tokens=TOKENS, seconds=half)
    tried += run_fuzz(lambda d: one("deflate", d), pool, allowed=(BodyError, RequestError), tokens=TOKENS,
                      seconds=half)
    assert tried >= 2 * len(pool)


def test_the_corpus_bomb_is_refused_naming_the_limit() -> None:
    bomb = (CORPUS / "otlp_inflate" / "bomb.gz").read_bytes()
    with pytest.raises(BodyError) as e:
        inflate(bomb, "gzip", LIMIT)
    assert e.value.status == 413 and str(LIMIT.max_bytes) in e.value.message
