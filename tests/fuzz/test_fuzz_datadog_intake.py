"""Fuzz target ``datadog_intake``: a request body of the Datadog intake, through what its worker
thread does with it (``integrations.datadog.intake.decode``: decompression within
``max_decompressed_bytes``, JSON within its depth, the shape's checks and the mapping to
Metrics and check runs) for each route that takes a body, then into a real pipeline as the
server pushes it. A body is decompressed as its first bytes say (gzip, zlib's deflate, zstd;
else as sent). The documented error is ``BodyError`` (the request refused whole); the
pipeline's push never raises. Seeds: ``corpus/datadog_intake/`` (v2 and v1 series of every
type, check runs, each compressed, an empty body, and zstd and gzip bombs past the target's
256 KiB limit)."""

from __future__ import annotations

import tracemalloc

import pytest

from bridge.helpers import BodyError
from bridge.pipeline import Pipeline
from integrations.datadog.intake import IntakeLimits, decode
from tests.fuzz.harness import CORPUS, run_fuzz, seeds

LIMITS = IntakeLimits(max_decompressed_bytes=256 << 10, max_points=10_000, max_tags=100)
ROUTES = ("series_v2", "series_v1", "check_run")
TOKENS = [b'"series"', b'"metric"', b'"points"', b'"timestamp"', b'"value"', b'"type"', b'"interval"',
          b'"resources"', b'"host"', b'"tags"', b'"unit"', b'"check"', b'"status"', b'"host_name"', b'"message"',
          b"[[", b"]]", b"{}", b"null", b"-1", b"1e308", b"9" * 30, b'"a:b"', b'":"', b"\\u0000", b"\\ud800",
          b"\x1f\x8b\x08\x00", b"\x78\x9c", b"\x28\xb5\x2f\xfd"]


def coding_of(data: bytes) -> str:
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if data[:1] == b"\x78":
        return "deflate"
    return ""


@pytest.mark.fuzz
def test_fuzz_datadog_intake() -> None:
    pipeline = Pipeline(cardinality_limit=1000)
    ingest = pipeline.ingest("datadog", 300.0)
    ingest.max_series, ingest.max_families = 2000, 200

    def one(data: bytes) -> None:
        coding = coding_of(data)
        refused = 0
        for route in ROUTES:
            try:
                out = decode(route, data, coding, LIMITS, now_ns=1_764_633_600 * 10**9)
            except BodyError as e:
                assert e.status in (400, 413, 415) and e.message
                refused += 1
                continue
            # every point (check run) is taken or counted as rejected
            assert len(out.gauges) + len(out.deltas) + len(out.checks) + sum(out.rejected.values()) == out.points
            assert out.points <= LIMITS.max_points
            if out.gauges:
                ingest.push(out.gauges)
            if out.deltas:
                ingest.push(out.deltas, delta=True)
        if refused == len(ROUTES):
            raise BodyError(400, "refused", "no route takes it")

    try:
        tried = run_fuzz(one, seeds("datadog_intake"), allowed=(BodyError,), tokens=TOKENS)
    finally:
        pipeline.shutdown()
    assert tried >= len(seeds("datadog_intake"))


@pytest.mark.parametrize("name, coding", [("bomb.zst", "zstd"), ("bomb.gz", "gzip")])
def test_the_corpus_bombs_are_refused_within_the_limit(name: str, coding: str) -> None:
    bomb = (CORPUS / "datadog_intake" / name).read_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(BodyError) as e:
            decode("series_v2", bomb, coding, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.status == 413
    assert e.value.message == ("body: the decoded body is larger than the limit (intake.max_decompressed_bytes) "
                               f"of {LIMITS.max_decompressed_bytes} bytes")
    assert peak < 3 * LIMITS.max_decompressed_bytes  # a 64 MiB (8 MiB) bomb is never expanded past the limit


def test_the_seeds_decode_to_what_they_hold() -> None:
    out = decode("series_v2", (CORPUS / "datadog_intake" / "series_v2.json.zst").read_bytes(), "zstd", LIMITS,
                 now_ns=5 * 10**9)
    assert [(m.name, m.value, m.start_time_ns) for m in out.deltas] == [
        ("shop.orders", 3.0, (1_764_633_600 - 20) * 10**9), ("shop.orders", 4.5, (1_764_633_600 - 10) * 10**9)]
    assert out.deltas[0].attributes == {"env": "prod", "unnamed_canary": "canary", "role": "a,b",
                                        "url": "http://x:80/", "host": "web1", "region": "eu"}
    assert out.deltas[0].unit == ""  # "request" has no UCUM name here
    assert [(m.name, m.value, m.unit, m.timestamp_ns) for m in out.gauges] == [
        ("shop.latency", 0.25, "s", 1_764_633_600 * 10**9), ("shop.latency", 0.0, "s", 1_764_633_600 * 10**9),
        ("shop.rate", 1e300, "", 5 * 10**9), ("shop.queue", -7.0, "", 1_764_633_600 * 10**9)]
    assert out.rejected == {} and out.points == 6
    checks = decode("check_run", (CORPUS / "datadog_intake" / "check_run.json").read_bytes(), "", LIMITS)
    assert [(c.check, c.status, c.host) for c in checks.checks] == [("db.can_connect", 2, "db1"), ("app.ok", 0, "")]
    assert dict(checks.rejected) == {"invalid_tag": 1}
