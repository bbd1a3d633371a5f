"""Notification storm: one Alertmanager webhook of N alerts, one notification per alert.

A monbridge Runtime (in this process, real HTTP) has the grouping processor with
``group_by: ["..."]`` (one group per alert, ``group_wait: 0``) and the webhook notifier
pointing at an aiohttp receiver in this process, with its state directory on disk (outbox,
notification log, alert store). One POST to ``/api/v1/alerts/alertmanager`` carries ``--alerts``
firing alerts; the figures are the time from that POST until the receiver has every alert,
and the event loop's longest stall meanwhile (a heartbeat task sleeping 5 ms and measuring how
late it wakes; the webhook is posted from another thread, so the client's work is not counted).
Afterwards the script checks that each alert arrived exactly once and that the
outbox is empty on disk.

    python benchmarks/bench_notify_storm.py [--alerts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.config import parse_config  # noqa: E402
from bridge.registry import PluginRegistry  # noqa: E402
from bridge.runtime import Runtime  # noqa: E402

BEAT = 0.005


def payload(n: int) -> bytes:
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    alerts = [{"status": "firing", "labels": {"alertname": "Storm", "instance": f"10.0.{i >> 8}.{i & 255}:9100"},
               "annotations": {}, "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
               "fingerprint": f"{i:016x}"} for i in range(n)]
    return json.dumps({"version": "4", "status": "firing", "receiver": "monbridge", "alerts": alerts}).encode()


def post(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status < 300, r.status


async def main(n: int) -> int:
    got: dict[str, int] = {}
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        for a in (await request.json())["alerts"]:
            got[a["labels"]["instance"]] = got.get(a["labels"]["instance"], 0) + 1
        if len(got) >= n:
            done.set()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    state = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    config = {
        "server": {"listen": "127.0.0.1:0"},
        "alerting": {"state_dir": str(state)},
        "plugins": [
            {"plugin_id": "monitoring.alerts.grouping",
             "config": {"group_by": ["..."], "group_wait": 0, "group_interval": 300}},
            {"plugin_id": "monitoring.alerts.webhook", "config": {"url": f"http://127.0.0.1:{port}/hook"}},
        ],
    }
    reg = PluginRegistry().discover()
    rt = Runtime(parse_config(json.dumps(config), "<bench>", reg, env={}), reg)
    await rt.start()
    await asyncio.sleep(1.5)  # the engine's housekeeping has taken up the notifier
    assert rt.server.bound is not None
    url = f"http://{rt.server.bound[0]}:{rt.server.bound[1]}/api/v1/alerts/alertmanager"

    worst = 0.0

    async def heartbeat() -> None:
        nonlocal worst
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(BEAT)
            worst = max(worst, loop.time() - t0 - BEAT)

    body = payload(n)
    beat = asyncio.create_task(heartbeat())
    t0 = time.perf_counter()
    await asyncio.to_thread(post, url, body)  # the client's work stays off the loop measured
    answered = time.perf_counter() - t0
    try:
        await asyncio.wait_for(done.wait(), 300)
    except TimeoutError:
        print(f"only {len(got)} of {n} alerts arrived", file=sys.stderr)
    took = time.perf_counter() - t0
    await asyncio.sleep(0.5)  # time for doubles, and for the delivered marks to be written
    beat.cancel()
    await rt.stop()
    await runner.cleanup()
    left = sorted(p.name for p in (state / "outbox").glob("*/*.json"))
    doubles = sum(1 for c in got.values() if c > 1)
    print(f"{n} alerts in one webhook, group_by [...]: answered in {answered:.2f} s, all delivered in {took:.2f} s")
    print(f"  longest event-loop stall {worst * 1000:.0f} ms; doubles {doubles}; outbox files left {len(left)}")
    return 0 if len(got) == n and not doubles and not left else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=1000)
    args = ap.parse_args()
    sys.exit(asyncio.run(main(args.alerts)))
