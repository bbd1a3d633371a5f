"""Fuzz target ``retry_after``: a ``Retry-After`` header value from a hostile peer. Reading it
documents no error: a value it cannot read is "no wait asked for" (None). So nothing may escape,
and what it returns is a finite number of seconds from 0 to the maximum given; the wait the
policy makes of it is at most ``retry_after_max`` (or the backoff's own maximum)."""

from __future__ import annotations

import math

import pytest

from bridge.delivery import Backoff, retry_after_seconds
from tests.fuzz.harness import run_fuzz, seeds

pytestmark = pytest.mark.fuzz

NOW = 1_700_000_000.0
POLICY = Backoff(initial=0.1, maximum=5.0, retry_after_max=60.0)
SEEDS = [b"120", b"0", b"0.5", b"Wed, 21 Oct 2015 07:28:00 GMT", b"Tue, 14 Nov 2023 22:13:20 GMT",
         b"Sunday, 06-Nov-94 08:49:37 GMT", b"Sun Nov  6 08:49:37 1994", b"Mon, 01 Jan 99999 00:00:00 +9999",
         b"-1", b"1e308", b"nan"]
TOKENS = [b"GMT", b" ", b",", b":", b"-0000", b"+2359", b"99999", b"Feb", b"Mon", b".", b"9" * 30]


def read(data: bytes) -> None:
    value = data.decode("latin-1")
    seconds = retry_after_seconds(value, now=NOW, maximum=3600.0)
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= 3600.0), seconds
    wait = POLICY.delay(3, retry_after_seconds(value, now=NOW))
    assert 0 < wait <= POLICY.retry_after_max, wait


def test_fuzz_retry_after() -> None:
    pool = seeds("retry_after") + SEEDS
    tried = run_fuzz(read, pool, allowed=(), tokens=TOKENS)
    assert tried > len(pool)
