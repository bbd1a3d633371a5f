"""The Grafana integration against a hostile Grafana, in a running agent (``bridge.cli run``): the
Grafana stand-in (tests/grafana_standin.py) answers every other request (in two pieces, as a
large answer arrives in several reads); the others, in turn, are
never answered, trickled a byte at a time, answered with 8 MiB, answered with bytes that are not
HTTP, or answered 503 echoing the token. Meanwhile dashboards are provisioned and an alert
(a rule on a textfile metric the test flips) fires and resolves again and again, so that
annotations are created and ended. ``/metrics`` keeps answering, the textfile collector keeps its
schedule, the integration is never restarted, each failure is counted in
``monbridge_grafana_requests_total`` and logged with its reason, and the token never reaches
the log or the API."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from liveness import STEADY, Liveness, steady_collector, total

from tests.grafana_standin import GrafanaStandIn

pytestmark = pytest.mark.integration

TOKEN = "glsa_h0stile_5ecret_7f3"
PLUGIN = "monitoring.integration.grafana"
HOSTILE = ("silent", "trickle", "huge", "garbage", "storm")
RUN_S = 12.0


class HostileGrafana:
    """The stand-in, with every other request answered by the next of the hostile modes."""

    def __init__(self) -> None:
        self.standin = GrafanaStandIn(TOKEN)
        self.standin.app.middlewares.append(self._hostile)
        self.seen: Counter[str] = Counter()
        self._n = 0
        self._rng = random.Random(3)

    @web.middleware
    async def _hostile(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self._n += 1
        mode = "ok" if self._n % 2 else HOSTILE[(self._n // 2) % len(HOSTILE)]
        self.seen[mode] += 1
        if mode == "ok":  # Grafana's answer, in two pieces (as a large answer comes, in several reads)
            answer = await handler(request)
            body = answer.body if isinstance(answer, web.Response) and isinstance(answer.body, bytes) else b""
            r = web.StreamResponse(status=answer.status, headers={"Content-Type": "application/json",
                                                                  "Content-Length": str(len(body))})
            await r.prepare(request)
            await r.write(body[:len(body) // 2])
            await asyncio.sleep(0.05)
            await r.write(body[len(body) // 2:])
            await r.write_eof()
            return r
        if mode == "silent":
            await asyncio.sleep(3600)
        if mode == "trickle":
            r = web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Content-Length": "100000"})
            await r.prepare(request)
            await r.write(b'{"id": 1, "pad": "')
            while True:
                await asyncio.sleep(0.2)
                await r.write(b"x")
        if mode == "huge":
            return web.Response(body=b'{"id": 7, "pad": "' + b"x" * (8 << 20) + b'"}', content_type="application/json")
        if mode == "garbage":
            assert request.transport is not None
            request.transport.write(self._rng.randbytes(4096))
            request.transport.close()
            raise asyncio.CancelledError
        return web.json_response({"message": "overloaded", "auth": request.headers.get("Authorization", "")},
                                 status=503, headers={"Retry-After": "0"})


@pytest.fixture
def hostile_grafana() -> Iterator[tuple[HostileGrafana, str]]:
    peer = HostileGrafana()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(peer.standin.app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"], holder["port"] = runner, runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield peer, f"http://127.0.0.1:{holder['port']}"
    asyncio.run_coroutine_threadsafe(holder["runner"].shutdown(), loop).result(30)
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_a_hostile_grafana_stays_the_integrations_problem(run_monbridge, tmp_path, hostile_grafana):
    peer, url = hostile_grafana
    steady = steady_collector(tmp_path)
    flap = tmp_path / "steady" / "flap.prom"
    flap.write_text("hz_flap 0\n")
    mb = run_monbridge({
        "alerting": {"import_interval": 0.5, "state_dir": str(tmp_path / "alerts")},
        "plugins": [
            steady,
            {"plugin_id": "monitoring.alerts.rules", "config": {"evaluation_interval": 0.5, "rules": [
                {"name": "HzFlap", "metric": "hz_flap", "op": ">", "threshold": 10, "for": 0,
                 "severity": "critical"}]}},
            {"plugin_id": PLUGIN, "config": {
                "interval": 0.5, "timeout": 10, "url": url, "token": TOKEN, "request_timeout": 1,
                "backoff_initial": 0.1, "backoff_max": 0.3, "dashboards": {"families": ["grafana", "host"]},
                "annotations": {"state_path": str(tmp_path / "grafana.json")}}},
        ],
    })
    with Liveness(mb) as watch:
        deadline = time.monotonic() + RUN_S
        value = 0
        while time.monotonic() < deadline:
            value = 20 - value  # the alert fires, then resolves
            flap.write_text(f"hz_flap {value}\n")
            time.sleep(1.0)
    watch.check()

    for mode in ("ok", *HOSTILE):
        assert peer.seen[mode], f"no request was answered {mode!r}: {dict(peer.seen)}"
    paths = Counter(f"{m} {p.split('/')[2]}" for m, p in peer.standin.requests)
    assert paths["POST annotations"] and paths["GET folders"], paths  # both duties were attempted

    text = watch.last_text
    failed = total(text, "monbridge_grafana_requests_total", 'result="retryable"')
    failed += total(text, "monbridge_grafana_requests_total", 'result="permanent"')
    assert failed >= sum(peer.seen[m] for m in HOSTILE if m != "silent") - 2, (failed, dict(peer.seen))
    assert total(text, "monbridge_grafana_requests_total", 'result="success"') >= 1

    log = mb.log_text()
    reasons = [r for r in ("no answer within 1 s", "HTTP 503", "larger than max_response_bytes",
                           "ServerDisconnectedError", "ClientPayloadError", "BadStatusLine", "ClientResponseError",
                           "TransferEncodingError") if r in log]
    assert "no answer within 1 s" in reasons and "HTTP 503" in reasons and len(reasons) >= 3, reasons
    assert "grafana: provisioning failed" in log or "grafana: annotations failed" in log
    assert TOKEN not in log
    assert "the answer is not JSON" not in log  # Grafana's answers were read whole, however they came
    status, _, body = mb.get("/api/v1/plugins")
    assert status == 200 and TOKEN not in body.decode()
    st = {p["plugin_id"]: p for p in json.loads(body)["data"]}
    assert st[PLUGIN]["state"] == "running" and st[PLUGIN]["restarts"] == 0, st[PLUGIN]
    assert st[STEADY]["restarts"] == 0 and st[STEADY]["errors"] == 0 and st[STEADY]["timeouts"] == 0
    assert mb.proc.poll() is None
