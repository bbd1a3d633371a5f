"""The first round of a large new target: its heavy work (conversion, recording its new series,
encoding them for remote write) leaves the event loop free, the agent's API answers meanwhile,
and the fast paths taken for new series give what the general ones give."""

from __future__ import annotations

import asyncio
import gc
import http.server
import json
import os
import random
import threading
import time
import urllib.request
from collections.abc import Sequence

import pytest

from bridge.api import Alert, Metric, MetricKind, MonitoringIntegrationPlugin, PluginMetadata, PluginType
from bridge.config import parse_config
from bridge.pipeline import GC_PAUSE_MIN_BATCH, Pipeline
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime
from bridge.supervisor import InProcessHost
from integrations.prometheus import plugin as plugin_module
from integrations.prometheus.plugin import PrometheusIntegration, _scraped_labels
from integrations.prometheus.remote_write import encode_labels, encode_named_labels
from integrations.prometheus.scrape import Target, TargetScraper
from integrations.prometheus.textparse import ParseError, parse

SERIES = 30_000


def body(series: int = SERIES, step: int = 0) -> bytes:
    out = ["# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\n"]
    out += [f'app_requests_total{{path="/p{i}",code="200",method="GET"}} {i + step}\n' for i in range(series // 2)]
    out.append("# TYPE app_inflight gauge\n")
    out += [f'app_inflight{{worker="w{i}",pool="default"}} {(i + step) % 7}\n' for i in range(series - series // 2)]
    return "".join(out).encode()


class _Ticker:
    """Counts the turns the event loop gives to other tasks while something is awaited."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> _Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        self.ticks = 0
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.fixture
def receiver():
    """A remote-write receiver that accepts everything (the senders are under test, not storage)."""

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/api/v1/write"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
async def scraped_round(tmp_path, receiver):
    """A remote-writing plugin, and a pipeline holding one scrape of ``SERIES`` series."""
    plugin = PrometheusIntegration()
    await plugin.initialize({"remote_write": [{"url": receiver, "queue": {"path": str(tmp_path / "q")}}]})
    try:
        pipe = Pipeline(cardinality_limit=2 * SERIES)
        metrics, _ = TargetScraper(Target("http://127.0.0.1:1/metrics", {"job": "j", "instance": "i:1"})).convert(
            body(), False, time.time_ns())
        pipe.record("prom", metrics, prometheus_names=True)
        yield plugin, pipe
    finally:
        await plugin.shutdown()


async def test_remote_write_of_a_large_round_leaves_the_event_loop_free(scraped_round):
    plugin, pipe = scraped_round
    sink = plugin.export_sinks()["remote_write"]
    async with _Ticker() as ticker:
        result = await sink.export(pipe.batch(), 60)
        during = ticker.ticks
    assert result.ok
    assert during > 0  # other tasks ran while the round was encoded and queued
    assert plugin._writers[0]._queue.pending_samples + plugin._writers[0].samples_sent == SERIES


async def test_a_remote_write_round_queues_with_the_cyclic_gc_paused_throughout(scraped_round, monkeypatch):
    """The round's samples (a tuple each) are queued before the collector runs again: were it to
    run while they are alive, its first young collection would walk every one of them."""
    plugin, pipe = scraped_round
    writer = plugin._writers[0]
    during: list[bool] = []
    append = writer.append

    def recording(samples):
        during.append(gc.isenabled())
        return append(samples)

    monkeypatch.setattr(writer, "append", recording)
    assert gc.isenabled()
    result = await plugin.export_sinks()["remote_write"].export(pipe.batch(), 60)
    assert result.ok and during == [False]
    assert gc.isenabled()
    assert writer._queue.pending_samples + writer.samples_sent == SERIES


@pytest.mark.parametrize(("series", "paused"), [(7_000, True), (1_500, True), (10, False)])
def test_a_scrape_converts_with_the_cyclic_gc_paused_from_a_thousand_series(series, paused, monkeypatch):
    """A body of a few thousand series makes a container per series while it is converted: the
    collector waits for the conversion, as it does for the largest ones (at 10k series, a quarter
    of the conversion went to it when it did not). A small body leaves it alone."""
    scraper = TargetScraper(Target("http://127.0.0.1:1/metrics", {"job": "j", "instance": "i:1"}))
    during: list[bool] = []
    parse_body = scraper.parser.parse

    def recording(*args, **kwargs):
        during.append(gc.isenabled())
        return parse_body(*args, **kwargs)

    monkeypatch.setattr(scraper.parser, "parse", recording)
    assert gc.isenabled()
    metrics, stats = scraper.convert(body(series), False, time.time_ns())
    assert len(metrics) == series and stats[0] == series
    assert during == [not paused]
    assert gc.isenabled()


class _BigImport(MonitoringIntegrationPlugin):
    """An integration whose import hands over many new series at once, without awaiting anything."""

    def __init__(self, n: int = GC_PAUSE_MIN_BATCH) -> None:
        self.metrics = [Metric("big_gauge", MetricKind.GAUGE, float(i), attributes={"n": str(i)}) for i in range(n)]
        self.before_import = lambda: None

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("test.big", "big", "1", "test", "many series", PluginType.INTEGRATION)

    async def initialize(self, config: object) -> None:
        return None

    async def import_metrics(self) -> Sequence[Metric]:
        self.before_import()
        return self.metrics

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        return None

    async def shutdown(self, timeout: float | None = None) -> None:
        return None

    async def import_alerts(self) -> Sequence[Alert]:
        return []

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        return None


async def test_a_large_import_is_recorded_off_the_event_loop():
    pipe = Pipeline(cardinality_limit=2 * GC_PAUSE_MIN_BATCH)
    host = InProcessHost(_BigImport())
    async with _Ticker() as ticker:
        n = await host.import_round(pipe)
        during = ticker.ticks
    assert n == GC_PAUSE_MIN_BATCH
    assert during > 0  # the loop ran other tasks while the series were made
    fam = pipe.family("big_gauge")
    assert fam is not None and len(fam.series) == GC_PAUSE_MIN_BATCH


async def test_an_import_waits_for_the_record_a_timed_out_round_left_running():
    """A round cancelled while its import is recorded in a thread: the next import starts only once
    that record is done (the plugin's next import may update the objects it is reading)."""
    pipe = Pipeline(cardinality_limit=10 * GC_PAUSE_MIN_BATCH)
    plugin = _BigImport(5 * GC_PAUSE_MIN_BATCH)
    host = InProcessHost(plugin)
    first = asyncio.create_task(host.import_round(pipe))
    while host._recording is None:  # until the import is handed to its thread
        await asyncio.sleep(0)
    first.cancel()  # as the supervisor does when the round's time is up
    with pytest.raises(asyncio.CancelledError):
        await first
    seen: list[int] = []
    plugin.before_import = lambda: seen.append(len(pipe.family("big_gauge").series))
    assert await host.import_round(pipe) == 5 * GC_PAUSE_MIN_BATCH
    assert seen == [5 * GC_PAUSE_MIN_BATCH]


def test_the_api_answers_while_a_large_first_scrape_is_processed(tmp_path, receiver):
    """A real agent scraping a new target of many series: while its first round runs (from the
    moment the target served the body until the round is done), ``/api/v1/plugins`` answers."""
    served = threading.Event()
    payload = body()

    class Target_(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
            served.set()

        def log_message(self, *a):
            pass

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target_)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    text = json.dumps({
        "server": {"listen": "127.0.0.1:0"},
        "pipeline": {"cardinality_limit": 2 * SERIES},
        "plugins": [{"plugin_id": "monitoring.integration.prometheus", "config": {
            "scrape": {"interval": 600, "timeout": 300,
                       "targets": [{"job": "big", "url": f"http://127.0.0.1:{target.server_address[1]}/metrics"}]},
            "remote_write": [{"url": receiver, "queue": {"path": str(tmp_path / "q")}}]}}]})
    reg = PluginRegistry().discover()
    loaded = parse_config(text, "test.yaml", reg, env={})
    answers: list[dict] = []
    loop = asyncio.new_event_loop()
    rt = Runtime(loaded, reg)
    try:
        loop.run_until_complete(rt.start())
        host, port = rt.server.bound
        loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
        loop_thread.start()
        assert served.wait(120), "the target was not scraped"
        # Poll from this thread (not the loop's): each answer is the plugin's state when it was served.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://{host}:{port}/api/v1/plugins", timeout=300) as r:
                st = next(p for p in json.loads(r.read())["data"] if p["plugin_id"] == "monitoring.integration.prometheus")
            answers.append(st)
            if st["runs"] >= 1:
                break
        else:
            pytest.fail("the first round did not end")
        assert answers[-1]["runs"] == 1 and answers[-1]["errors"] == 0, answers[-1]
        during = [a for a in answers if a["runs"] == 0]
        assert during, "the API answered only once the first round was over"
        assert all(a["state"] == "running" for a in during)
    finally:
        asyncio.run_coroutine_threadsafe(rt.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        target.shutdown()
        target.server_close()


# --------------------------------------------------------------------------- fast paths, same results


SIMPLE_LINES = [
    'a{b="x=",c="y,z"} 1',
    'a{b="",c="=\\""} 1',  # an escape: not the plain form
    'a{b="x"} 1.5e3',
    'a{b="x",b="y"} 1',  # a repeated label name: an error
    'a{__name__="x"} 1',  # __name__ among the labels: an error
    'a{b="x"} 1_0',  # an invalid value: an error
    'a{b="x"} NaN',
    'a{b="x"} +Inf',
    'a{b="x"} 1 1700000000000',
    'a{b="x",} 1',  # a trailing comma (text only)
    'a{} 1',
    'a 1',
    'a{b="x y"} 2',
    'a{b="x\ty"} 2',
    'a{b="é"} 3',
    'a{B="1",_c="2",__d="3"} 4',
    'a{b="x"}  1',
    'a{b="x"} 0x1',
]
_ALWAYS_BAD = {'a{b="x",b="y"} 1', 'a{__name__="x"} 1', 'a{b="x"} 1_0', 'a{b="x"} 0x1'}
#: The lines each format refuses (OpenMetrics: no trailing comma, exactly one space).
BAD_LINES = {False: _ALWAYS_BAD, True: _ALWAYS_BAD | {'a{b="x",} 1', 'a{b="x"}  1'}}


def parse_without_shortcut(text: str | bytes, openmetrics: bool) -> list:
    """What the general parser makes of ``text`` (the plain-form shortcut off: its pattern matches nothing;
    and the C reader of the plain form off)."""
    import integrations.prometheus.textparse as tp

    saved = tp._SIMPLE_SERIES
    tp._SIMPLE_SERIES = _NEVER  # type: ignore[assignment]
    try:
        parser = tp.TextParser(template=False)
        parser.fast = False
        return parser.parse(text, openmetrics)
    finally:
        tp._SIMPLE_SERIES = saved


def outcome(parse_fn, text: str | bytes, openmetrics: bool) -> str:
    """A parse's families (name, type, HELP, UNIT, samples) or its error, as text (NaN equals NaN)."""
    try:
        return repr([(f.name, f.type, f.help, f.unit, f.samples) for f in parse_fn(text, openmetrics)])
    except ParseError as e:
        return f"ParseError at line {e.line}: {e.message}"


class _Never:
    @staticmethod
    def fullmatch(s: str) -> None:
        return None


_NEVER = _Never()


@pytest.mark.parametrize("line", SIMPLE_LINES)
@pytest.mark.parametrize("openmetrics", [False, True])
def test_a_new_series_parses_as_the_general_parser_has_it(line, openmetrics):
    """The first sight of a series (the plain-form shortcut) and its general parse agree: the same
    samples, or the same error at the same line."""
    text = "# TYPE a gauge\n" + line + "\n" + ("# EOF\n" if openmetrics else "")
    want = outcome(parse_without_shortcut, text, openmetrics)
    assert outcome(parse, text, openmetrics) == want
    assert ("ParseError" in want) == (line in BAD_LINES[openmetrics])


@pytest.mark.parametrize("key", [
    (("code", "200"), ("path", "/a")),
    (("A", "1"), ("_x", "2"), ("b", "")),
    (),
    (("a", "1"), ("zz", "x\ny")),
])
def test_named_labels_encode_as_encode_labels(key):
    assert encode_named_labels("m", key) == encode_labels((("__name__", "m"), *key))


@pytest.mark.parametrize("attrs, plain", [
    ({"code": "200", "path": "/a"}, True),
    ({"a__b": "1"}, False),  # the view makes it a_b
    ({"1a": "1"}, False),
    ({"a.b": "1"}, False),
    ({"n": 1}, False),
])
def test_a_scraped_series_remote_write_labels_are_its_views(attrs, plain):
    """The remote-write label set made from a native series' key is the one its Prometheus view
    gives; where they could differ, the view is used."""
    pipe = Pipeline()
    pipe.record("prom", [Metric("up_x", MetricKind.GAUGE, 1.0, attributes=attrs)], prometheus_names=True)
    (fam,) = pipe.batch().families()
    (s,) = fam.series
    got = _scraped_labels(fam.name, s.identity.key)
    assert (got is not None) == plain
    if got is not None:
        view = s.prom
        assert got == encode_labels((("__name__", view.name), *view.labels))
    if plugin_module._promfast is not None:
        assert plugin_module._promfast.scraped_labels(fam.name, s.identity.key) == got


def test_scraped_labels_in_c_as_in_python():
    """``_promfast.scraped_labels`` (which must be built in CI) and its Python twin on random keys: names
    around ``__name__`` in order, runs of underscores, non-ASCII and empty values, values not strings."""
    if plugin_module._promfast is None:
        if os.environ.get("CI"):
            pytest.fail("integrations.prometheus._promfast is not built (setup.py's extension): its encoder is untested")
        pytest.skip("integrations.prometheus._promfast is not built here (python setup.py build_ext --inplace)")
    c = plugin_module._promfast.scraped_labels
    rnd = random.Random(5)
    names = ["A", "Z", "_", "_a", "__", "__a", "a__b", "_name", "__name", "__name__x", "a", "b_c", "z9", "1a", "a.b",
             "é", "x" * 200, ""]
    values = ["", "1", "200", "é", "x\ny", "€" * 50, "v" * 300, 7, None, 1.5]
    for _ in range(5000):
        key = tuple(sorted({rnd.choice(names): rnd.choice(values) for _ in range(rnd.randint(0, 6))}.items()))
        name = rnd.choice(["m", "a_b:c", "é", "m" * 150])
        assert c(name, key) == _scraped_labels(name, key), (name, key)
    assert c("m", (("code", "200"),)) == encode_labels((("__name__", "m"), ("code", "200")))


# --------------------------------------------------------------------------- restarts keep the caches


@pytest.fixture
def handover():
    from integrations.prometheus import plugin as plugin_module

    plugin_module._HANDOVER.clear()
    yield plugin_module
    plugin_module._HANDOVER.clear()


def _config(**scrape):
    return {"scrape": {"interval": 15, "targets": [{"job": "j", "url": "http://127.0.0.1:1/metrics"}], **scrape}}


async def test_a_restarted_instance_takes_over_the_scrapers_and_their_caches(handover):
    first = PrometheusIntegration()
    await first.initialize(_config())
    (target,) = await first._targets()
    scraper = first._scraper(target)
    scraper.convert(body(100), False, time.time_ns())
    await first.shutdown()  # a restart after failed rounds, or a reload that changed the config

    second = PrometheusIntegration()
    await second.initialize(_config())
    assert second._scraper(target) is scraper  # with every series it resolved
    assert len(scraper._resolved) == 100
    await second.shutdown()

    third = PrometheusIntegration()  # set up otherwise: its caches would not hold
    await third.initialize(_config(honor_labels=True))
    assert third._scraper(target) is not scraper
    await third.shutdown()


async def test_scrapers_nobody_takes_over_are_dropped(handover, monkeypatch):
    first = PrometheusIntegration()
    await first.initialize(_config())
    (target,) = await first._targets()
    scraper = first._scraper(target)
    await first.shutdown()
    assert handover._HANDOVER
    monkeypatch.setattr(handover, "HANDOVER_S", 0.0)
    handover._expire_handover()
    assert not handover._HANDOVER
    second = PrometheusIntegration()
    await second.initialize(_config())
    assert second._scraper(target) is not scraper


# --------------------------------------------------------------------------- the conversion's shortcut


SHAPES = """\
# TYPE reqs counter
reqs_total{code="200",job="app"} 1
reqs_total{code="500"} 2
reqs_total{code="",x="1"} 3
# TYPE lat histogram
lat_bucket{le="0.5"} 1
lat_bucket{le="+Inf"} 2
lat_sum 1
lat_count 2
# TYPE rpc summary
rpc{quantile="0.5"} 0.1
rpc_sum 1
rpc_count 2
rpc 7
# TYPE hits_total counter
hits_total{path="/a"} 4
hits_total{path="/b",job="x"} 5
hits_total_created{path="/a"} 1
hits_other{path="/a"} 6
# TYPE temp gauge
temp{room="a"} 21.5
temp{room=""} 20
temp_max 30
"""


@pytest.mark.parametrize("labels", [
    {"job": "j", "instance": "i:1"},
    {"job": "j", "instance": "i:1", "team": ""},
    {"job": "j", "instance": "i:1", "le": "9", "quantile": "0.5"},
])
@pytest.mark.parametrize("honor_labels", [False, True])
def test_series_without_collisions_convert_as_the_general_path_has_them(labels, honor_labels):
    """A series that collides with no target label takes a shortcut; a scraper made to take the
    general path for every series (an empty relabeling) converts the same body to the same metrics."""
    from integrations.prometheus.relabel import Relabeler

    target = Target("http://127.0.0.1:1/metrics", labels)

    def converted(relabeler):
        metrics, stats = TargetScraper(target, relabeler=relabeler, honor_labels=honor_labels).convert(
            SHAPES, False, 1_700_000_000_000_000_000)
        return sorted((m.name, m.kind.value, repr(m.value), tuple(m.attributes.items())) for m in metrics), stats

    assert converted(None) == converted(Relabeler([]))
