"""The ``datadog`` export sink against a receiving Datadog API server (no Datadog backend runs here).

``DatadogApi`` (aiohttp on loopback, in a thread of its own) takes ``/api/v2/series``,
``/api/v1/distribution_points``, ``/api/v1/events`` and ``/api/v1/check_run`` as Datadog does: the
``DD-API-KEY`` checked (403), the body within Datadog's documented limits (512000 bytes as sent,
less than 5242880 decompressed: 413), decompressed with the encodings datadog-api-client
declares for the route, parsed as strict JSON, and deserialized with datadog-api-client's own models
(``MetricPayload``, ``DistributionPointsPayload``, ``EventCreateRequest``, ``ServiceChecks``),
strictly: a field the model does not know, a required one missing, a value it cannot take (the
client would keep it as an unparsed object) or a point timestamp outside what Datadog takes is a
400. Tests may queue answers (429 with ``Retry-After``, 500, 400 with a body) and stop and restart
the server on its port (an outage).

Values are checked after the round trip: a Prometheus scrape (an OpenMetrics exposition served by
the test) through a full agent (``python -m bridge.cli run``) to the payloads, and the plugin
API's ``export_metrics`` for delivery: retries, drops, the queue across an outage and a restart,
its bound, request splitting at the limits, alerts as events and check runs, and the API key in no
log line.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import inspect
import json
import logging
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from datadog_api_client.configuration import Configuration
from datadog_api_client.model_utils import ModelNormal, ModelSimple, OpenApiModel, UnparsedObject, validate_and_convert_types
from datadog_api_client.v1.model.distribution_points_payload import DistributionPointsPayload
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from datadog_api_client.v1.model.service_checks import ServiceChecks
from datadog_api_client.v2.model.metric_payload import MetricPayload

from bridge.api import Alert, AlertState, HistogramValue, Metric, MetricKind
from integrations.datadog.config import ExportConfig
from integrations.datadog.export import MAX_COMPRESSED_BYTES, MAX_DECOMPRESSED_BYTES, DatadogExporter
from tests.conftest import _free_port
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

KEY = "dd0123456789abcdef0123456789abcd"
#: route → (model, the Content-Encodings datadog-api-client declares for it)
ROUTES: dict[str, tuple[type, tuple[str, ...]]] = {
    "/api/v2/series": (MetricPayload, ("gzip", "deflate")),
    "/api/v1/distribution_points": (DistributionPointsPayload, ("deflate",)),
    "/api/v1/events": (EventCreateRequest, ()),
    "/api/v1/check_run": (ServiceChecks, ()),
}
_CONFIG = Configuration()


class Invalid(ValueError):
    pass


def _required(cls: type) -> set[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
            and p.name != "self_"}


def _strict(obj: Any, raw: Any, where: str) -> None:
    """What datadog-api-client made of ``raw`` took all of it: nothing unparsed, unknown or missing."""
    if isinstance(obj, UnparsedObject) or (isinstance(obj, OpenApiModel) and obj._unparsed):
        raise Invalid(f"{where}: not a valid {type(obj).__name__}: {str(raw)[:200]}")
    if isinstance(obj, ModelNormal):
        if not isinstance(raw, dict):
            raise Invalid(f"{where}: not an object")
        known = {v: k for k, v in obj.attribute_map.items()}
        if unknown := set(raw) - set(known):
            raise Invalid(f"{where}: unknown fields {sorted(unknown)}")
        if missing := {obj.attribute_map[n] for n in _required(type(obj))} - set(raw):
            raise Invalid(f"{where}: missing {sorted(missing)}")
        for key, value in raw.items():
            _strict(getattr(obj, known[key]), value, f"{where}.{key}")
    elif isinstance(obj, ModelSimple):
        _strict(obj.value, raw, where)
    elif isinstance(obj, list):
        if not isinstance(raw, list) or len(raw) != len(obj):
            raise Invalid(f"{where}: not the list it should be")
        for i, (o, r) in enumerate(zip(obj, raw, strict=True)):
            _strict(o, r, f"{where}[{i}]")


def deserialize(path: str, doc: Any) -> Any:
    model = ROUTES[path][0]
    try:
        obj = validate_and_convert_types(doc, (model,), ["body"], True, True, _CONFIG)
    except Exception as e:  # noqa: BLE001 - whatever the client refuses is a 400
        raise Invalid(f"{type(e).__name__}: {e}") from None
    _strict(obj, doc, "body")
    if path == "/api/v2/series":
        now = time.time()
        for s in doc["series"]:
            for p in s["points"]:
                if not now - 3600 <= p["timestamp"] <= now + 600:
                    raise Invalid(f"{s['metric']}: timestamp {p['timestamp']} more than an hour old or ten minutes ahead")
    return obj


def _no_constants(name: str) -> Any:
    raise Invalid(f"{name} is not JSON")


@dataclass
class Request:
    path: str
    doc: Any
    headers: dict[str, str]
    raw_size: int
    size: int
    at: float = field(default_factory=time.monotonic)


class DatadogApi:
    """Datadog's intake routes as the test's peer (see the module doc)."""

    def __init__(self, key: str = KEY) -> None:
        self.key = key
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted: list[Request] = []
        self.refused: list[tuple[str, int, str]] = []
        self.answers: dict[str, list[tuple[int, dict[str, str], str]]] = {}
        self.attempts: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.start()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(20)

    def start(self) -> None:
        async def up() -> web.AppRunner:
            app = web.Application(client_max_size=64 << 20)
            for path in ROUTES:
                app.router.add_post(path, self._handle)
            runner = web.AppRunner(app, auto_decompress=False)  # the raw body: its size as sent is checked
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
            return runner

        self._runner = self._call(up())

    def stop(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
            self._runner = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def answer(self, path: str, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        """Answer the next request to ``path`` with ``status`` (then as usual)."""
        with self._lock:
            self.answers.setdefault(path, []).append((status, headers or {}, body))

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        with self._lock:
            self.attempts.append((path, time.monotonic()))
            queued = self.answers.get(path)
            forced = queued.pop(0) if queued else None
        if forced is not None:
            await request.read()
            return web.Response(status=forced[0], text=forced[2], headers=forced[1])
        if request.headers.get("DD-API-KEY") != self.key:
            return self._refuse(path, 403, "Forbidden")
        raw = await request.read()
        if len(raw) > MAX_COMPRESSED_BYTES:
            return self._refuse(path, 413, f"payload of {len(raw)} bytes")
        encoding = request.headers.get("Content-Encoding")
        allowed = ROUTES[path][1]
        try:
            if encoding is None:
                body = raw
            elif encoding not in allowed:
                return self._refuse(path, 400, f"Content-Encoding {encoding} is not taken here")
            elif encoding == "gzip":
                body = gzip.decompress(raw)
            else:
                body = zlib.decompress(raw)
        except (OSError, zlib.error, EOFError) as e:
            return self._refuse(path, 400, f"bad {encoding} body: {e}")
        if len(body) >= MAX_DECOMPRESSED_BYTES:
            return self._refuse(path, 413, f"{len(body)} bytes decompressed")
        try:
            doc = json.loads(body, parse_constant=_no_constants)
            deserialize(path, doc)
        except (ValueError, Invalid) as e:
            return self._refuse(path, 400, str(e))
        with self._lock:
            self.accepted.append(Request(path, doc, dict(request.headers), len(raw), len(body)))
        return web.json_response({"errors": []} if path == "/api/v2/series" else {"status": "ok"}, status=202)

    def _refuse(self, path: str, status: int, why: str) -> web.Response:
        with self._lock:
            self.refused.append((path, status, why))
        return web.json_response({"errors": [why]}, status=status)

    # ------------------------------------------------------------------ reading

    def docs(self, path: str) -> list[Any]:
        with self._lock:
            return [r.doc for r in self.accepted if r.path == path]

    def series(self, name: str | None = None) -> list[dict[str, Any]]:
        return [s for d in self.docs("/api/v2/series") for s in d["series"] if name is None or s["metric"] == name]

    def distributions(self, name: str) -> list[dict[str, Any]]:
        return [s for d in self.docs("/api/v1/distribution_points") for s in d["series"] if s["metric"] == name]


@pytest.fixture
def dd_api() -> Iterator[DatadogApi]:
    api = DatadogApi()
    yield api
    assert not [r for r in api.refused if r[1] != 403], f"the server refused what the exporter sent: {api.refused}"
    api.close()


def export_config(api: DatadogApi, tmp_path: Path | None = None, **kw: Any) -> ExportConfig:
    queue: dict[str, Any] = {"min_backoff": 0.05, "max_backoff": 0.2}
    if tmp_path is not None:
        queue["path"] = str(tmp_path / "dd")
    queue.update(kw.pop("queue", {}))
    return ExportConfig.model_validate({"url": api.url, "api_key": KEY, "hostname": "testhost", "tags": ["env:ci"],
                                        "timeout": 2, "queue": queue, **kw})


async def started(cfg: ExportConfig) -> DatadogExporter:
    exporter = DatadogExporter(cfg)
    await exporter.start()
    return exporter


def gauge(name: str, value: float, **attrs: str) -> Metric:
    return Metric(name, MetricKind.GAUGE, value, attributes=attrs, timestamp_ns=time.time_ns())


def counter(name: str, value: float, start_ns: int, **attrs: str) -> Metric:
    return Metric(name, MetricKind.COUNTER, value, attributes=attrs, timestamp_ns=time.time_ns(), start_time_ns=start_ns)


# --------------------------------------------------------------------------- Prometheus scrape → Datadog


class Exposition:
    """An OpenMetrics exposition the test changes as it goes."""

    def __init__(self) -> None:
        self.text = "# TYPE app_temp gauge\napp_temp 21.5\n# EOF\n"
        exposition = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = exposition.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, requests: int, buckets: tuple[int, int, int], total: float, created: float) -> None:
        b = buckets
        self.text = (
            "# TYPE app_temp gauge\napp_temp 21.5\n"
            "# TYPE app_requests counter\n"
            f'app_requests_total{{code="200"}} {requests}\napp_requests_created{{code="200"}} {created}\n'
            "# TYPE app_latency histogram\n"
            f'app_latency_bucket{{le="0.1"}} {b[0]}\napp_latency_bucket{{le="1.0"}} {b[0] + b[1]}\n'
            f'app_latency_bucket{{le="+Inf"}} {sum(b)}\napp_latency_sum {total}\napp_latency_count {sum(b)}\n'
            f"app_latency_created {created}\n# EOF\n")


def test_prometheus_scrape_to_datadog_payloads(dd_api, run_monbridge, tmp_path):
    """A full agent scraping an OpenMetrics exposition and exporting to Datadog (key, host and
    tags from DD_API_KEY, DD_HOSTNAME and DD_TAGS): the gauge exact,
    the counter as count deltas whose first is its whole first value (it started after the
    exporter did: ``_created``), the histogram as distribution points of its bucket increases."""
    target = Exposition()
    mb = run_monbridge({"plugins": [
        {"plugin_id": "monitoring.integration.prometheus", "config": {
            "interval": 0.5, "scrape": {"interval": 0.5, "timeout": 0.5, "targets": [{"job": "app", "url": target.url}]}}},
        {"plugin_id": "monitoring.integration.datadog", "config": {"export": {
            "url": dd_api.url, "interval": 0.5, "queue": {"path": str(tmp_path / "ddq"), "min_backoff": 0.05}}}},
    ]}, env={"DD_API_KEY": KEY, "DD_HOSTNAME": "testhost", "DD_TAGS": "env:ci, team:obs"})
    # Names as the pipeline has them: a Prometheus family's as exposed (app_requests_total).
    (temp, *_) = wait_until(lambda: dd_api.series("app_temp"), what="the gauge at the Datadog API")
    assert temp["type"] == 3 and temp["points"][0]["value"] == 21.5
    assert temp["resources"] == [{"name": "testhost", "type": "host"}]
    assert {"env:ci", "team:obs", "job:app"} <= set(temp["tags"])

    created = time.time()
    target.set(5, (1, 2, 1), 2.5, created)
    wait_until(lambda: dd_api.distributions("app_latency"), what="the first distribution")
    target.set(12, (1, 4, 3), 9.0, created)

    def counts(name: str) -> list[dict[str, Any]]:
        return [s for s in dd_api.series(name) if s["type"] == 1]

    wait_until(lambda: sum(s["points"][0]["value"] for s in counts("app_requests_total")) == 12,
               what="the counter's increases to add up to 12")
    wait_until(lambda: sum(s["points"][0]["value"] for s in counts("app_latency.count")) == 8,
               what="the histogram's count increases to add up to 8")
    reqs = counts("app_requests_total")
    assert reqs[0]["points"][0]["value"] == 5.0, "the first point is lost"
    assert [v for s in reqs if (v := s["points"][0]["value"])] == [5.0, 7.0], reqs
    assert all(s["interval"] >= 1 for s in reqs) and "code:200" in reqs[0]["tags"]
    wait_until(lambda: sum(len(s["points"][0][1]) for s in dd_api.distributions("app_latency")) >= 8,
               what="the distribution points of 8 observations")  # a request of their own, after the counts
    values = Counter(v for s in dd_api.distributions("app_latency") for v in s["points"][0][1])
    # (-Inf, 0.1] stands at 0.1, (0.1, 1] at 0.55, (1, +Inf) at 1.0: the first scrape's 1/2/1, then +0/+2/+2
    assert values == Counter({0.1: 1, 0.55: 4, 1.0: 3}), values
    sums = [s["points"][0]["value"] for s in counts("app_latency.sum")]
    assert sum(sums) == pytest.approx(9.0)
    # the exporter's self-metrics went along: what it sent, by endpoint
    sent = wait_until(lambda: [s for s in dd_api.series("monbridge.datadog.export.series.sent")
                               if "endpoint:/api/v1/distribution_points" in s["tags"] and s["points"][0]["value"]],
                      what="the exporter's own counts")
    assert sent[0]["type"] == 1
    assert KEY not in mb.log_text()


# --------------------------------------------------------------------------- delivery


async def test_429_with_retry_after_is_honoured_then_delivered(dd_api):
    exporter = await started(export_config(dd_api))
    try:
        dd_api.answer("/api/v2/series", 429, '{"errors":["Too many requests"]}', {"Retry-After": "1"})
        result = await exporter.export_metrics([gauge("g", 1.0)])
        assert result.status.value == "retryable" and "HTTP 429" in result.reason  # kept queued
        assert await exporter.force_flush(5)
        (first, at1), (second, at2) = dd_api.attempts
        assert first == second == "/api/v2/series" and at2 - at1 >= 0.95  # the backoff alone is 0.05 s
        assert [s["metric"] for s in dd_api.series()] == ["g"]
        assert exporter.retries == 1 and not exporter.dropped
    finally:
        await exporter.shutdown(2)


async def test_500_is_retried_and_400_is_dropped_counted_and_logged(dd_api, caplog):
    caplog.set_level(logging.DEBUG)
    exporter = await started(export_config(dd_api))
    try:
        dd_api.answer("/api/v2/series", 500, "internal error")
        result = await exporter.export_metrics([gauge("first", 1.0)])
        assert result.status.value == "retryable" and "HTTP 500: internal error" in result.reason
        assert await exporter.force_flush(5)
        assert [s["metric"] for s in dd_api.series()] == ["first"] and exporter.retries == 1
        dd_api.answer("/api/v2/series", 400, json.dumps({"errors": ["Payload is not valid: metric name"],
                                                         "echo": {"DD-API-KEY": KEY}}))
        result = await exporter.export_metrics([gauge("refused", 1.0), gauge("refused2", 2.0)])
        assert result.ok  # dropped, not queued: nothing to wait for
        assert exporter.dropped == {"http_400": 2}
        assert "Payload is not valid: metric name" in caplog.text and "http_400" in caplog.text
        assert (await exporter.export_metrics([gauge("after", 1.0)])).ok
        assert [s["metric"] for s in dd_api.series()] == ["first", "after"]
        metrics = {(m.name, tuple(sorted(m.attributes.items()))): m.value for m in exporter.self_metrics()}
        assert metrics[("monbridge.datadog.export.dropped", (("reason", "http_400"),))] == 2
        assert metrics[("monbridge.datadog.export.series.sent", (("endpoint", "/api/v2/series"),))] == 2
        assert metrics[("monbridge.datadog.export.retries", ())] == 1
    finally:
        await exporter.shutdown(2)
    assert KEY not in caplog.text


async def test_outage_then_recovery_loses_nothing(dd_api, tmp_path):
    exporter = await started(export_config(dd_api, tmp_path))
    try:
        dd_api.stop()
        for i in range(5):
            result = await exporter.export_metrics([gauge("round", float(i))])
            assert not result.ok and result.status.value == "retryable"
        (pending,) = [m for m in exporter.self_metrics() if m.name == "monbridge.datadog.export.queue.pending"]
        assert pending.value == 5
        dd_api.start()
        assert await exporter.force_flush(10)
        assert [s["points"][0]["value"] for s in dd_api.series("round")] == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert not exporter.dropped
    finally:
        await exporter.shutdown(2)


async def test_restart_on_the_same_queue_loses_nothing_and_counts_on(dd_api, tmp_path):
    dd_api.stop()
    first = await started(export_config(dd_api, tmp_path))
    start = time.time_ns()  # the counter starts after the exporter did
    await first.export_metrics([counter("jobs", 5, start), gauge("g", 1.0)])
    await first.export_metrics([counter("jobs", 8, start)])
    await first.shutdown(0.5)
    second = await started(export_config(dd_api, tmp_path))
    try:
        await second.export_metrics([counter("jobs", 11, start)])
        dd_api.start()
        assert await second.force_flush(10)
        # the first point whole (it started after the exporter did), then the increases, across the restart
        assert [s["points"][0]["value"] for s in dd_api.series("jobs")] == [5.0, 3.0, 3.0]
        assert [s["metric"] for s in dd_api.series()] == ["jobs", "g", "jobs", "jobs"]
    finally:
        await second.shutdown(2)


async def test_full_queue_drops_the_oldest_and_counts_them(dd_api, tmp_path):
    cfg = export_config(dd_api, tmp_path, queue={"max_bytes": 1 << 16})
    exporter = await started(cfg)
    try:
        dd_api.stop()
        rnd = random.Random(3)
        rounds = 40
        for i in range(rounds):  # ~4 kB each as sent: 40 of them do not fit into 64 kB
            tags = {f"t{j}": base64.b64encode(rnd.randbytes(30)).decode() for j in range(60)}
            await exporter.export_metrics([gauge("r", float(i), **tags)])
        dropped = exporter.dropped.get("max_bytes", 0)
        assert dropped > 0
        dd_api.start()
        assert await exporter.force_flush(10)
        got = [int(s["points"][0]["value"]) for s in dd_api.series("r")]
        assert got == list(range(rounds - len(got), rounds)), "not the newest kept, or not in order"
        assert len(got) + dropped == rounds
    finally:
        await exporter.shutdown(2)


async def test_requests_are_split_within_the_payload_limits(dd_api):
    """6000 series of 6 MB in all, half with tags that hardly compress (over the compressed limit
    many times), half with tags that compress well (over the decompressed one): every request
    within both limits (the server refuses any that is not, failing the test), each limit reached
    closely by some request (packed, not one series a request), none lost, none twice."""
    exporter = await started(export_config(dd_api, timeout=30))
    rnd = random.Random(7)
    noisy = [gauge("noisy", float(i), id=str(i), noise=base64.b64encode(rnd.randbytes(1500)).decode())
             for i in range(3000)]
    plain = [gauge("plain", float(i), id=str(i), pad="x" * 2000) for i in range(3000)]
    try:
        for metrics in (noisy, plain):
            result = await exporter.export(_Batch(metrics), 60)
            assert result.ok, result
        with dd_api._lock:
            sizes = [(r.raw_size, r.size) for r in dd_api.accepted]
        assert max(raw for raw, _ in sizes) <= MAX_COMPRESSED_BYTES
        assert max(size for _, size in sizes) < MAX_DECOMPRESSED_BYTES
        assert any(raw > MAX_COMPRESSED_BYTES * 0.6 for raw, _ in sizes)
        assert any(size > MAX_DECOMPRESSED_BYTES * 0.6 for _, size in sizes)
        for name in ("noisy", "plain"):
            assert sorted(int(s["points"][0]["value"]) for s in dd_api.series(name)) == list(range(3000))
        assert not exporter.dropped
    finally:
        await exporter.shutdown(2)


class _Batch:
    """A MetricBatch of plain gauges (families and series, as the pipeline's snapshot shows them)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def families(self) -> list[Any]:
        by: dict[str, list[Metric]] = {}
        for m in self._metrics:
            by.setdefault(m.name, []).append(m)
        return [_Family(n, ms) for n, ms in by.items()]


@dataclass
class _Series:
    attributes: dict[str, Any]
    value: Any
    start_ns: int | None
    time_ns: int
    first_ns: int = 0
    accumulated: bool = False


class _Family:
    def __init__(self, name: str, metrics: list[Metric]) -> None:
        self.name, self.kind = name, metrics[0].kind
        self.series = [_Series(dict(m.attributes), m.value, m.start_time_ns, m.timestamp_ns or 0) for m in metrics]


async def test_histograms_go_as_distribution_points_the_client_takes(dd_api):
    exporter = await started(export_config(dd_api))
    start = time.time_ns()
    try:
        h = HistogramValue((0.5, 2.0), (3, 0, 2), 7.5, 5)
        m = Metric("lat", MetricKind.HISTOGRAM, h, attributes={"route": "/x"}, timestamp_ns=time.time_ns(),
                   start_time_ns=start)
        assert (await exporter.export_metrics([m])).ok
        (d,) = dd_api.distributions("lat")
        assert d["points"][0][1] == [0.5, 0.5, 0.5, 2.0, 2.0] and d["host"] == "testhost"
        assert d["tags"] == ["route:/x", "env:ci"]
        with dd_api._lock:
            (req,) = [r for r in dd_api.accepted if r.path == "/api/v1/distribution_points"]
        assert req.headers["Content-Encoding"] == "deflate"
        assert {s["metric"]: s["points"][0]["value"] for s in dd_api.series()} == {"lat.count": 5.0, "lat.sum": 7.5}
    finally:
        await exporter.shutdown(2)


# --------------------------------------------------------------------------- alerts


def alert(name: str, severity: str, fp: str, **labels: str) -> Alert:
    return Alert(id=fp, name=name, severity=severity, labels={"alertname": name, **labels},
                 annotations={"summary": f"{name} is bad"}, value=3.0, fingerprint=fp)


async def test_alerts_become_events_and_check_runs_and_resolve_after_a_restart(dd_api, tmp_path):
    exporter = await started(export_config(dd_api, tmp_path))
    try:
        await exporter.export_alerts([alert("DiskFull", "critical", "fp1", host="db1"),
                                      alert("SlowApi", "warning", "fp2", team="web")])
        await exporter.export_alerts([alert("DiskFull", "critical", "fp1", host="db1"),
                                      alert("SlowApi", "warning", "fp2", team="web")])  # nothing new
        assert await exporter.force_flush(5)
        events = dd_api.docs("/api/v1/events")
        assert [(e["alert_type"], e["aggregation_key"], e["host"]) for e in events] == [
            ("error", "fp1", "db1"), ("warning", "fp2", "testhost")]
        assert "DiskFull is bad" in events[0]["text"] and "env:ci" in events[1]["tags"]
        checks = [c for d in dd_api.docs("/api/v1/check_run") for c in d]
        assert [(c["check"], c["status"], c["host_name"]) for c in checks] == [
            ("monbridge.alert.DiskFull", 2, "db1"), ("monbridge.alert.SlowApi", 1, "testhost")]
        resolved = alert("SlowApi", "warning", "fp2", team="web")
        resolved.state = AlertState.RESOLVED
        await exporter.export_alerts([alert("DiskFull", "critical", "fp1", host="db1"), resolved])
        assert await exporter.force_flush(5)
        assert dd_api.docs("/api/v1/events")[-1]["alert_type"] == "success"
        last = dd_api.docs("/api/v1/check_run")[-1][0]
        assert (last["check"], last["status"], last["tags"]) == ("monbridge.alert.SlowApi", 0, checks[1]["tags"])
    finally:
        await exporter.shutdown(2)
    again = await started(export_config(dd_api, tmp_path))
    try:
        await again.export_alerts([])  # DiskFull resolved while monbridge was down
        assert await again.force_flush(5)
        last = dd_api.docs("/api/v1/check_run")[-1][0]
        assert (last["check"], last["status"], last["host_name"]) == ("monbridge.alert.DiskFull", 0, "db1")
        assert dd_api.docs("/api/v1/events")[-1]["aggregation_key"] == "fp1"
    finally:
        await again.shutdown(2)


# --------------------------------------------------------------------------- the key


async def test_the_api_key_is_in_no_log_line_error_or_repr(dd_api, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    exporter = await started(export_config(dd_api, tmp_path))
    try:
        dd_api.answer("/api/v2/series", 503, f"upstream said: DD-API-KEY={KEY} {KEY}")
        dd_api.answer("/api/v2/series", 401, f"bad key {KEY}")
        await exporter.export_metrics([gauge("a", 1.0)])
        dd_api.stop()
        result = await exporter.export_metrics([gauge("b", 1.0)])
        assert not result.ok and KEY not in result.reason
        dd_api.start()
        assert await exporter.force_flush(5)
        assert exporter.dropped == {"http_401": 1}
    finally:
        await exporter.shutdown(2)
    assert "upstream said" in caplog.text and "bad key" in caplog.text
    assert KEY not in caplog.text and KEY not in repr(exporter) and KEY not in repr(exporter.config)
    assert not any(KEY in f.read_text(errors="replace") for f in (tmp_path / "dd").glob("*.json"))


# --------------------------------------------------------------------------- the peer itself


@pytest.mark.parametrize(("path", "doc", "encoding"), [
    ("/api/v2/series", {"series": [{"metric": "m", "type": 9, "points": [{"timestamp": 1, "value": 1.0}]}]}, "gzip"),
    ("/api/v2/series", {"series": [{"metric": "m", "points": [{"timestamp": 1.5, "value": 1.0}]}]}, "gzip"),
    ("/api/v2/series", {"series": [{"metric": "m", "points": [], "colour": "red"}]}, "gzip"),
    ("/api/v2/series", {"series": [{"points": []}]}, "gzip"),
    ("/api/v2/series", {"series": [{"metric": "m", "points": [{"timestamp": 1, "value": 1.0}]}]}, "gzip"),  # old
    ("/api/v2/series", {"series": []}, "br"),
    ("/api/v1/distribution_points", {"series": [{"metric": "d", "points": [[1.0, [1.0]]]}]}, "gzip"),
    ("/api/v1/distribution_points", {"series": [{"metric": "d", "points": [[1.0]]}]}, "deflate"),
    ("/api/v1/events", {"title": "t", "text": "x" * 4001}, None),
    ("/api/v1/check_run", [{"check": "c", "host_name": "h", "status": 7, "tags": []}], None),
    ("/api/v1/check_run", [{"check": "c", "status": 0, "tags": []}], None),
], ids=["bad type", "float timestamp", "unknown field", "no metric", "an hour old", "encoding", "gzip distribution",
        "short point", "long text", "bad status", "no host"])
def test_the_peer_refuses_what_datadogs_client_models_refuse(dd_api, path, doc, encoding):
    import urllib.error
    import urllib.request

    body = json.dumps(doc).encode()
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    headers = {"DD-API-KEY": KEY, "Content-Type": "application/json", **({"Content-Encoding": encoding} if encoding else {})}
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(dd_api.url + path, body, headers), timeout=5)
    assert e.value.code == 400
    assert not dd_api.accepted
    dd_api.refused.clear()  # refused on purpose (the fixture fails a test whose exporter sent one)


async def test_unreadable_state_files_are_logged_and_started_without(dd_api, tmp_path, caplog):
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "state.json").write_text('{"version": 1, "horizon_ns": "soon"')
    (tmp_path / "dd" / "alerts.json").write_text("[1, 2, 3]")
    exporter = await started(export_config(dd_api, tmp_path))
    try:
        assert "state.json cannot be read" in caplog.text and "alerts.json cannot be read" in caplog.text
        start = time.time_ns()
        assert (await exporter.export_metrics([counter("c", 3, start)])).ok
        assert [s["points"][0]["value"] for s in dd_api.series("c")] == [3.0]
        assert json.loads((tmp_path / "dd" / "state.json").read_text())["version"] == 1  # written anew
    finally:
        await exporter.shutdown(2)


async def test_delta_distributions_through_the_pipeline_arrive_as_their_ddsketch_values(dd_api):
    """DogStatsD's way in: delta exponential histograms at scale 5 pushed into the pipeline (which
    keeps them cumulative), exported each round: every value arrives as the value of its DDSketch
    key (γ = 2^(1/32)), each round's values once, the first round's included."""
    from ddsketch.mapping import LogarithmicMapping

    from bridge.api import ExponentialHistogramValue
    from bridge.pipeline import Pipeline

    gamma = 2 ** (1 / 32)
    mapping = LogarithmicMapping((gamma - 1) / (gamma + 1))

    def delta(values: list[float]) -> ExponentialHistogramValue:
        keys = Counter(mapping.key(v) for v in values)  # DDSketch key k is OTel bucket k - 1
        lo, hi = min(keys), max(keys)
        return ExponentialHistogramValue(5, 0, lo - 1, tuple(keys.get(k, 0) for k in range(lo, hi + 1)), 0, (),
                                         len(values), sum(values))

    pipeline = Pipeline()
    ingest = pipeline.ingest("monitoring.integration.datadog", 300.0)
    exporter = await started(export_config(dd_api))
    try:
        rounds = [[1.0, 2.0, 2.0, 150.0], [2.0, 8.0]]
        t = time.time_ns()
        for values in rounds:
            m = Metric("dsd.latency", MetricKind.EXPONENTIAL_HISTOGRAM, delta(values), attributes={"svc": "a"},  # type: ignore[arg-type]
                       timestamp_ns=t + 1_000_000_000, start_time_ns=t)
            assert ingest.push([m], delta=True).accepted == 1
            t += 1_000_000_000
            assert (await exporter.export(pipeline.batch(), 10)).ok
        got = [sorted(s["points"][0][1]) for s in dd_api.distributions("dsd.latency")]
        for sent, values in zip(got, rounds, strict=True):
            assert sent == pytest.approx(sorted(mapping.value(mapping.key(v)) for v in values), rel=1e-12)
            assert sent == pytest.approx(sorted(values), rel=mapping.relative_accuracy * (1 + 1e-9))  # 1.0 is at a bound
        counts = [s["points"][0]["value"] for s in dd_api.series("dsd.latency.count")]
        assert counts == [4.0, 2.0]
    finally:
        await exporter.shutdown(2)
