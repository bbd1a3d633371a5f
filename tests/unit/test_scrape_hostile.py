"""Scrape targets that misbehave: each one fails its own scrape (``up`` = 0), counted and logged,
and neither the other targets nor the agent's memory pay for it. Real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import logging
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from bridge.api import Metric
from integrations.prometheus.plugin import PrometheusIntegration, PrometheusIntegrationConfig
from integrations.prometheus.scrape import DEFAULT_BODY_SIZE_LIMIT

HEALTHY = b"# TYPE temp gauge\ntemp 21.5\n"
LIMIT = 1 << 20  # body_size_limit of these tests
BOMB_SIZE = 128 << 20  # decompressed size of the gzip bomb
ENDLESS_CAP = 256 << 20  # the endless body stops here, so a broken limit fails the test rather than the machine


def _gzip_bomb(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    zeros = b"0" * (1 << 20)
    return b"".join([*(c.compress(zeros) for _ in range(size >> 20)), c.flush()])


Serve = Callable[[dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an aiohttp server on a free loopback port with the given routes; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield start
    for r in runners:
        await r.cleanup()


def _text(body: bytes) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="text/plain")

    return handler


async def _plugin(base: str, paths: list[str], **scrape: object) -> PrometheusIntegration:
    plugin = PrometheusIntegration()
    targets = [{"job": path.strip("/"), "url": base + path} for path in paths]
    await plugin.initialize({"scrape": {"interval": 15, "timeout": 10, "targets": targets, **scrape}})
    return plugin


def _up(metrics: list[Metric]) -> dict[str, float]:
    return {m.attributes["job"]: float(m.value) for m in metrics if m.name == "up"}  # type: ignore[arg-type]


def _scrapes(metrics: list[Metric]) -> dict[str, float]:
    return {m.attributes["result"]: float(m.value) for m in metrics  # type: ignore[arg-type]
            if m.name == "monbridge.scrape.scrapes"}


# --------------------------------------------------------------------------- one bad target


async def test_a_timestamp_beyond_pythons_int_limit_fails_its_target_alone(serve, caplog):
    """A 5,000-digit timestamp is a parse error of that target (its line named), not the round's."""
    base = await serve({"/a": _text(HEALTHY), "/bad": _text(b"temp 1 " + b"1" * 5000 + b"\n"), "/b": _text(HEALTHY)})
    plugin = await _plugin(base, ["/a", "/bad", "/b"])
    try:
        with caplog.at_level(logging.WARNING):
            metrics = list(await plugin.import_metrics())
    finally:
        await plugin.shutdown()
    assert _up(metrics) == {"a": 1.0, "bad": 0.0, "b": 1.0}
    assert _scrapes(metrics) == {"success": 2.0, "parse": 1.0}
    assert [m.value for m in metrics if m.name == "temp"] == [21.5, 21.5]
    assert any("/bad" in r.getMessage() and "line 1: timestamp out of range" in r.getMessage() for r in caplog.records)


async def test_an_error_nobody_foresaw_fails_its_target_alone(serve, caplog, monkeypatch):
    """Whatever one target's scrape raises, the others keep their ``up`` and the round completes."""
    base = await serve({"/a": _text(HEALTHY), "/bad": _text(HEALTHY)})
    plugin = await _plugin(base, ["/a", "/bad"])
    await plugin.import_metrics()  # the first round makes the scrapers
    bad = next(s for s in plugin._scrapers.values() if s.target.job == "bad")

    def broken(*args: object) -> None:
        raise RuntimeError("the parser broke")

    monkeypatch.setattr(bad.parser, "parse", broken)
    try:
        with caplog.at_level(logging.WARNING):
            metrics = list(await plugin.import_metrics())
    finally:
        await plugin.shutdown()
    assert _up(metrics) == {"a": 1.0, "bad": 0.0}
    assert _scrapes(metrics) == {"success": 3.0, "error": 1.0}
    logged = [r for r in caplog.records if "/bad" in r.getMessage()]
    assert logged and "RuntimeError: the parser broke" in logged[0].getMessage() and logged[0].exc_info


# --------------------------------------------------------------------------- body_size_limit


def test_body_size_limit_defaults_to_a_bound():
    cfg = PrometheusIntegrationConfig.model_validate({"scrape": {"targets": []}})
    assert cfg.scrape is not None and cfg.scrape.body_size_limit == DEFAULT_BODY_SIZE_LIMIT > 0
    with pytest.raises(ValueError, match="body_size_limit"):
        PrometheusIntegrationConfig.model_validate({"scrape": {"body_size_limit": -1}})


async def _scrape_traced(plugin: PrometheusIntegration) -> tuple[list[Metric], int]:
    """One round; returns its metrics and the peak of memory allocated during it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        metrics = list(await plugin.import_metrics())
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return metrics, peak


async def test_a_gzip_bomb_fails_its_scrape_with_memory_bounded(serve, caplog):
    bomb = _gzip_bomb(BOMB_SIZE)
    assert len(bomb) < BOMB_SIZE // 100

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=bomb, headers={"Content-Type": "text/plain; version=0.0.4", "Content-Encoding": "gzip"})

    base = await serve({"/bomb": handler, "/ok": _text(HEALTHY)})
    plugin = await _plugin(base, ["/bomb", "/ok"], body_size_limit=LIMIT)
    try:
        with caplog.at_level(logging.WARNING):
            metrics, peak = await _scrape_traced(plugin)
    finally:
        await plugin.shutdown()
    assert _up(metrics) == {"bomb": 0.0, "ok": 1.0}
    assert _scrapes(metrics) == {"success": 1.0, "body_size_limit": 1.0}
    assert peak < 16 * LIMIT, f"{peak} bytes allocated while refusing a {BOMB_SIZE}-byte body"
    assert any("body_size_limit exceeded" in r.getMessage() and "/bomb" in r.getMessage() for r in caplog.records)


async def test_a_gzip_bomb_is_inflated_a_chunk_per_turn_of_the_event_loop(serve):
    """Reading a compressed body never suspends while decompressed data is at hand: the reader
    yields after each chunk itself, so other coroutines (``/metrics``) run meanwhile."""
    import aiohttp

    from integrations.prometheus.scrape import _READ_CHUNK, ScrapeLimits, Target, TargetScraper

    limit = 32 << 20
    bomb = _gzip_bomb(BOMB_SIZE)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=bomb, headers={"Content-Type": "text/plain; version=0.0.4", "Content-Encoding": "gzip"})

    base = await serve({"/bomb": handler})
    scraper = TargetScraper(Target(f"{base}/bomb", {"job": "bomb", "instance": "bomb"}),
                            limits=ScrapeLimits(body_size_limit=limit))
    turns, reading = 0, True

    async def other_work() -> None:
        nonlocal turns
        while reading:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(other_work())
    async with aiohttp.ClientSession() as session:
        result = await scraper.scrape(session, 30.0)
    reading = False
    await counter
    assert not result.up and "body_size_limit exceeded" in (scraper.last_error or "")
    assert turns >= limit // _READ_CHUNK, f"the loop turned {turns} times while {limit} bytes were inflated"


async def test_an_endless_body_fails_its_scrape_with_memory_bounded(serve):
    sent = 0
    stopped = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        line = b"temp 1\n" * 8192
        try:
            while sent < ENDLESS_CAP:
                await resp.write(line)
                sent += len(line)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            stopped.set()
        return resp

    base = await serve({"/endless": endless, "/ok": _text(HEALTHY)})
    plugin = await _plugin(base, ["/endless", "/ok"], body_size_limit=LIMIT)
    try:
        metrics, peak = await _scrape_traced(plugin)
        await asyncio.wait_for(stopped.wait(), 10)  # the scraper hung up: the server stops writing
    finally:
        await plugin.shutdown()
    assert _up(metrics) == {"endless": 0.0, "ok": 1.0}
    assert _scrapes(metrics) == {"success": 1.0, "body_size_limit": 1.0}
    assert peak < 16 * LIMIT, f"{peak} bytes allocated while refusing an endless body"
    assert sent < ENDLESS_CAP


async def test_a_body_within_the_limit_is_scraped(serve):
    body = b"# TYPE temp gauge\n" + b"".join(b'temp{i="%d"} 1\n' % i for i in range(40_000))
    assert LIMIT // 2 < len(body) < LIMIT
    base = await serve({"/big": _text(body)})
    plugin = await _plugin(base, ["/big"], body_size_limit=LIMIT)
    try:
        metrics = list(await plugin.import_metrics())
    finally:
        await plugin.shutdown()
    assert _up(metrics) == {"big": 1.0}
    assert sum(1 for m in metrics if m.name == "temp") == 40_000


# --------------------------------------------------------------------------- the event loop


async def test_a_large_body_is_parsed_off_the_event_loop(serve, monkeypatch):
    """A 100 KB body is parsed in a worker thread (the loop keeps serving meanwhile); a small one inline."""
    from integrations.prometheus.textparse import TextParser

    big = b"# TYPE temp gauge\n" + b"".join(b'temp{i="%d"} 1\n' % i for i in range(6000))
    assert len(big) > 64 * 1024
    base = await serve({"/big": _text(big), "/small": _text(HEALTHY)})
    plugin = await _plugin(base, ["/big", "/small"])
    threads: dict[int, bool] = {}
    real_parse = TextParser.parse

    def parse(self: TextParser, body: bytes | bytearray | str, openmetrics: bool = False) -> object:
        threads[len(body)] = threading.current_thread() is threading.main_thread()
        return real_parse(self, body, openmetrics)

    monkeypatch.setattr(TextParser, "parse", parse)
    try:
        metrics = list(await plugin.import_metrics())
    finally:
        await plugin.shutdown()
    assert _up(metrics) == {"big": 1.0, "small": 1.0}
    assert threads == {len(big): False, len(HEALTHY): True}


def test_an_infinite_bucket_count_leaves_its_histogram_unassembled():
    """A histogram whose bucket holds +Inf (found by the exposition fuzz target) is kept as its raw
    series, as any bucket set that makes no histogram is, instead of failing the whole scrape."""
    import time

    from bridge.api import MetricKind
    from integrations.prometheus.scrape import Target, TargetScraper

    body = (b'# TYPE hi histogram\nhi_bucket{le="1"} +Inf\nhi_bucket{le="+Inf"} 2\nhi_count 2\nhi_sum 1.5\n'
            b"other 1\n")
    metrics, _ = TargetScraper(Target("http://127.0.0.1:1/metrics", {"job": "j", "instance": "i:1"})).convert(
        body, False, time.time_ns())
    assert not any(m.kind is MetricKind.HISTOGRAM for m in metrics)
    got = {(m.name, m.attributes.get("le")): m.value for m in metrics}
    assert got[("hi_bucket", "1")] == float("inf") and got[("hi_bucket", "+Inf")] == 2.0
    assert got[("other", None)] == 1.0
