"""Fuzz target ``db_answers``: what a hostile Redis or MySQL server answers, turned into metrics.

The input is read as a Redis ``INFO`` reply (parsed by redis-py's own parser, as the collector
receives it; an answer that parser refuses is the driver's error, which makes the target down)
and as MySQL ``SHOW GLOBAL STATUS``/``SHOW REPLICA STATUS`` rows (``name<TAB>value`` lines). The
tables (``collectors.db.build``) document no error: a row whose value cannot be read is reported
and skipped, so nothing may escape, and every metric is a declared one with a float value."""

from __future__ import annotations

import pytest
from redis._parsers.helpers import parse_info

from collectors.db import Sample, build
from collectors.mysql import MYSQL_METRICS
from collectors.redis import REDIS_METRICS
from tests.fuzz.harness import run_fuzz, seeds

pytestmark = pytest.mark.fuzz

TOKENS = [b"\r\n", b"\t", b":", b",", b"=", b"db", b"slave", b"keys=", b"lag=", b"nan", b"inf", b"-", b"1e999",
          b"Yes", b"Uptime", b"Innodb_buffer_pool_bytes_dirty", b"Seconds_Behind_Master"]
REDIS_NAMES = {s.name for s in REDIS_METRICS}
MYSQL_NAMES = {s.name for s in MYSQL_METRICS}


def _checked(metrics: list, names: set[str]) -> None:
    for m in metrics:
        assert m.name in names and isinstance(m.value, float), m


def read(data: bytes) -> None:
    errors: list[str] = []
    base = {"server.address": "127.0.0.1", "server.port": 1}
    try:
        info = parse_info(data.decode("utf-8", "replace"))
    except Exception:  # the driver's own refusal: the collector reports the target down
        info = None
    if info is not None:
        sample = Sample(sections={"info": info, "ping": 0.001, "slowlog": 3}, base=base)
        _checked(build(REDIS_METRICS, sample, lambda name, exc: errors.append(name)), REDIS_NAMES)
    rows = dict(line.split("\t", 1) for line in data.decode("latin-1").splitlines() if "\t" in line)
    sample = Sample(sections={"status": rows, "variables": rows, "replica": [rows],
                              "schemas": [{"name": k, "data": v, "idx": v, "tables": v} for k, v in rows.items()]},
                    base=base)
    _checked(build(MYSQL_METRICS, sample, lambda name, exc: errors.append(name)), MYSQL_NAMES)


def test_a_value_that_cannot_be_read_loses_its_row_only() -> None:
    errors: list[str] = []
    sample = Sample(sections={"status": {"Uptime": "soon", "Connections": "7"}}, base={})
    metrics = build(MYSQL_METRICS, sample, lambda name, exc: errors.append(name))
    assert errors == ["mysql.uptime"]
    assert [(m.name, m.value) for m in metrics] == [("mysql.connection.count", 7.0)]


def test_fuzz_db_answers() -> None:
    pool = seeds("db_answers")  # an INFO reply and status rows
    tried = run_fuzz(read, pool, allowed=(), tokens=TOKENS)
    assert tried > len(pool)
