"""Fuzzing series selectors (``match[]``, as the Pushgateway's ``match:`` config and
``MetricBatch.select`` take them): whatever text ``parse_selector`` gets, it returns a selector,
which then matches label sets, or raises ValueError naming the selector, in bounded time and
memory.

Seeds: selectors with every operator, quoting and escape in ``corpus/selector/``.
"""

from __future__ import annotations

import pytest

from bridge.selector import parse_selector
from tests.fuzz.harness import run_fuzz, seeds

TOKENS = [b"{", b"}", b",", b"=", b"!=", b"=~", b"!~", b'"', b"'", b"\\", b"\\n", b"__name__", b"job", b"up",
          b":", b"_", b" ", b"(", b")", b"*", b"+", b"[", b"]", b".*", b"\xff", b"\x00"]
SERIES = [("up", {"job": "node", "instance": "a:9100"}), ("http_requests_total", {"code": "500", "path": "/a/b"}),
          ("x", {})]


def select(data: bytes) -> None:
    """Parse ``data`` as a selector and match it against a few series, as ``select`` does."""
    sel = parse_selector(data.decode("utf-8", "replace"))
    for name, labels in SERIES:
        sel.name_matches(name)
        sel.matches(name, labels)


@pytest.mark.fuzz
def test_fuzz_selector() -> None:
    pool = seeds("selector")
    for data in pool:
        select(data)  # the seeds are all valid selectors
    assert run_fuzz(select, pool, allowed=(ValueError,), tokens=TOKENS) >= len(pool)
