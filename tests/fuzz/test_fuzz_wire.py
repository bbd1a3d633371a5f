"""Fuzz target ``wire``: what a plugin's worker process sends the agent (``bridge.wire``).

The worker runs a third party's code, so its frames are hostile input. The first byte picks the
decoder (``M``: a metrics message, ``L``: a loss report, anything else: a plain value); decoding
documents one error,
``WireError`` (saying where in the frame). Whatever decodes is within the limits it was given:
at most ``max_series`` metrics, each a valid ``Metric``."""

from __future__ import annotations

import pytest

from bridge.api import Metric
from bridge.wire import (
    MAX_LEDGER_ENTRIES,
    MAX_LEDGER_TEXT,
    WireError,
    WireLimits,
    decode_losses,
    decode_metrics,
    decode_value,
    encode_metrics,
    encode_value,
)
from tests.fuzz.harness import run_fuzz, seeds
from tests.unit.isolation_plugins import all_kinds

pytestmark = pytest.mark.fuzz

LIMITS = WireLimits(max_frame=1 << 20, max_series=1000, max_families=100, max_string=256, max_strings=5000,
                    max_buckets=64, max_items=1000)
TOKENS = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x00\x00\x00", b"\x00\x00\xf0\x7f\x00\x00\x00\x00",
          b"l", b"m", b"s", b"i", b"d", b"N", b"T"]


def decode(data: bytes) -> None:
    if data[:1] == b"M":
        metrics, native = decode_metrics(data[1:], LIMITS)
        assert len(metrics) <= LIMITS.max_series
        assert all(isinstance(m, Metric) for m in metrics)
        assert native <= {m.name for m in metrics}
    elif data[:1] == b"L":
        losses = decode_losses(data[1:], LIMITS)
        assert len(losses) <= MAX_LEDGER_ENTRIES
        assert all(0 < len(c) <= MAX_LEDGER_TEXT and 0 < len(r) <= MAX_LEDGER_TEXT and 0 < n < 2**63
                   for c, r, n in losses)
    else:
        decode_value(data[1:], LIMITS)


def test_fuzz_wire() -> None:
    pool = seeds("wire") + [b"M" + encode_metrics(all_kinds()), b"V",
                            b"L" + encode_value([["scrape", "too_long", 3], ["x", "y", 1.5]])]
    tried = run_fuzz(decode, pool, allowed=(WireError,), tokens=TOKENS)
    assert tried > len(pool)
