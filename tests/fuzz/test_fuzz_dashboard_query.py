"""Fuzzing the dashboard's data query (``GET /api/v1/components/{id}/data``'s parameters): whatever
query string arrives, ``parse_query`` returns a bounded query, which is then evaluated on a small
history, or raises QueryError naming the parameter, in bounded time and memory.

Seeds: query strings with every parameter in ``corpus/dashboard_query/``.
"""

from __future__ import annotations

import urllib.parse

import pytest

from bridge.api import MetricKind
from bridge.dashboard.history import History
from bridge.dashboard.query import QueryError, evaluate, parse_query
from tests.fuzz.harness import run_fuzz, seeds

T0 = 1_700_000_000.0
TOKENS = [b"&", b"=", b"metric=", b"from=", b"to=", b"step=", b"rate=true", b"aggregate=", b"by=", b"limit=",
          b"stacked=", b"%7B", b"%7D", b"%22", b"=~", b"1e308", b"nan", b"inf", b"-", b"0.0001", b"ms", b"y",
          b"99999999999999999999", b",", b"%00", b"\xff"]


def history() -> History:
    h = History(300.0, 15.0, 1 << 20)
    for i in range(25):
        h.write_row([(("req_total", (("code", "200"), ("job", "a"))), MetricKind.COUNTER, 10.0 * i),
                     (("req_total", (("code", "500"), ("job", "a"))), MetricKind.COUNTER, float(i % 7)),
                     (("temp", (("room", "x"),)), MetricKind.GAUGE, 20.0 + i)], T0 + 15 * i)
    return h


HISTORY = history()


def query(data: bytes) -> None:
    """Read ``data`` as a request's query string (a name given twice is refused, as the API does) and
    evaluate it."""
    params: dict[str, str] = {}
    for k, v in urllib.parse.parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True):
        if k in params:
            raise QueryError(f"{k[:100]}: given more than once")
        params[k] = v
    q = parse_query(params, T0 + 400, HISTORY.resolution, "temp", HISTORY.default_range)
    out = evaluate(HISTORY, q)
    assert len(out["series"]) <= q.limit
    assert all(len(s["values"]) == len(out["timestamps"]) for s in out["series"])


@pytest.mark.fuzz
def test_fuzz_dashboard_query() -> None:
    pool = seeds("dashboard_query")
    for data in pool:
        query(data)  # the seeds are all valid queries
    assert run_fuzz(query, pool, allowed=(QueryError,), tokens=TOKENS) >= len(pool)
