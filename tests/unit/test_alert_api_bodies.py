"""Request bodies of the alerting API on a real server: a 10,000-alert Alertmanager webhook is taken
as one batch without stalling the server; sizes, encodings and JSON depth are bounded, and what is
refused is a 400, 413 or 415 naming the limit, counted in a self-metric."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib

import aiohttp

from bridge.alerting.http import MAX_WEBHOOK_ALERTS, WEBHOOK_LIMITS
from bridge.alerting.store import AlertStore
from tests.unit.test_alert_api import TOKEN, start

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


def storm(n: int) -> dict:
    """An Alertmanager webhook with ``n`` firing alerts, as Alertmanager sends during an alert storm."""
    alerts = [{"status": "firing",
               "labels": {"alertname": "NodeDown", "severity": "critical", "instance": f"node{i}:9100", "job": "node"},
               "annotations": {"summary": f"node{i} is down"},
               "startsAt": "2026-01-02T03:04:05.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
               "generatorURL": "http://prometheus:9090/graph?g0.expr=up", "fingerprint": f"{i:016x}"}
              for i in range(n)]
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "storm",
            "groupLabels": {}, "commonLabels": {"job": "node"}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "alerts": alerts}


async def test_a_10000_alert_webhook_is_one_batch_and_the_server_keeps_answering(tmp_path):
    rt, url = await start(tmp_path)
    body = json.dumps(storm(10_000)).encode()
    assert len(body) > 2 << 20  # over aiohttp's default client_max_size of 1 MiB
    store = rt.alerts.store
    try:
        async with aiohttp.ClientSession(headers=AUTH) as s:
            async def webhook() -> tuple[int, dict]:
                async with s.post(url + "/api/v1/alerts/alertmanager", data=body, headers=JSON) as r:
                    return r.status, await r.json()

            writes = store._written
            hook = asyncio.create_task(webhook())
            while not store.alerts and not hook.done():  # the batch is being applied
                await asyncio.sleep(0)
            async with s.get(url + "/-/healthy") as r:
                assert r.status == 200
            # The probe was answered in the middle of the batch, not after it.
            assert not hook.done() and 0 < len(store.alerts) < 10_000
            status, doc = await hook
        assert status == 200, doc
        assert doc["data"] == {"firing": 10_000, "resolved": 0}
        assert len(store.active_alerts()) == 10_000
        assert store._written == writes + 1  # one write of the store for the whole batch
        # The batch was written before the answer: the file holds every alert.
        on_disk = AlertStore(tmp_path / "alerts.json")
        assert {a.fingerprint for a in on_disk.active_alerts()} == {f"{i:016x}" for i in range(10_000)}
        assert len(on_disk.transitions()) == 10_000
        # Each alert's telemetry follows the answer, in order: a span for each, all through the chain.
        await rt.alerts.drain()
        assert len(rt.alerts.telemetry.spans) == 10_000
    finally:
        await rt.stop()


async def refused(s: aiohttp.ClientSession, url: str, data: bytes, **headers: str) -> tuple[int, str]:
    async with s.post(url, data=data, headers={**JSON, **headers}) as r:
        return r.status, (await r.json())["error"]


async def test_bodies_are_bounded_and_refusals_named_and_counted(tmp_path):
    rt, url = await start(tmp_path)
    webhook, silences = url + "/api/v1/alerts/alertmanager", url + "/api/v1/silences"
    try:
        async with aiohttp.ClientSession(headers=AUTH) as s:
            deep = b"[" * 100_000 + b"]" * 100_000
            for target in (webhook, silences):
                assert await refused(s, target, deep) == (400, "body: JSON nested deeper than the limit of 16 levels")
            nested = json.dumps({"version": "4", "alerts": [], "x": json.loads("[" * 20 + "]" * 20)}).encode()
            assert await refused(s, webhook, nested) == (400, "body: JSON nested deeper than the limit of 16 levels")
            status, error = await refused(s, webhook, b"\x78\x9cnot deflate at all", **{"Content-Encoding": "deflate"})
            assert status == 400 and error.startswith("body: not valid deflate data (Content-Encoding: deflate)")
            corrupt = gzip.compress(b'{"a": 1}')[:10] + b"\xff not deflate"
            status, error = await refused(s, silences, corrupt, **{"Content-Encoding": "gzip"})
            assert status == 400 and error.startswith("body: not valid gzip data")
            assert await refused(s, webhook, b"{}", **{"Content-Encoding": "compress"}) == (
                415, "Content-Encoding 'compress' is not supported (gzip, deflate or identity)")
            # 64 MiB of spaces, 64 KiB as sent: refused on the decompressed size.
            bomb = zlib.compress(b" " * (64 << 20), 9)
            assert await refused(s, webhook, bomb, **{"Content-Encoding": "deflate"}) == (
                413, f"body: the decoded body is larger than the limit of {WEBHOOK_LIMITS.max_bytes} bytes")
            assert await refused(s, silences, b" " * ((1 << 20) + 1)) == (
                413, f"body: Content-Length {(1 << 20) + 1} is larger than the limit of {1 << 20} bytes")
            many = json.dumps({"version": "4", "alerts": [{}] * (MAX_WEBHOOK_ALERTS + 1)}).encode()
            assert await refused(s, webhook, many) == (
                413, f"alerts: {MAX_WEBHOOK_ALERTS + 1} alerts is more than the limit of {MAX_WEBHOOK_ALERTS} per request")
            assert await refused(s, silences, b'{"matchers": ["a=\\"1\\""], "duration": NaN}') == (
                400, "body: not valid JSON: NaN is not a JSON number")
            assert await refused(s, silences, b'{"matchers": ["a=\\"1\\""], "duration": 1e999}') == (
                400, "body: not valid JSON: 1e999 is out of range")
            # Values a silence or an alert cannot hold are the field's error, not a 500.
            assert await refused(s, silences, b'{"matchers": ["a=\\"1\\""], "duration": 1e308}') == (
                400, "duration: the silence would end after 9999-12-31")
            assert await refused(s, silences, b'{"matchers": ["a=~\\"' + b"(" * 5000 + b'\\""], "duration": 5}') == (
                400, "matchers[0]: matcher a=~: regular expression nests groups deeper than 64 levels")
            late = json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {"a": "b"},
                                                           "startsAt": "9999-12-31T23:59:59-23:00"}]}).encode()
            assert await refused(s, webhook, late) == (
                400, "alerts[0].startsAt: '9999-12-31T23:59:59-23:00' is out of range (0001-01-02 to 9999-12-31)")
            # A gzip body within the limits is read as any other.
            ok = gzip.compress(json.dumps(storm(3)).encode())
            async with s.post(webhook, data=ok, headers={**JSON, "Content-Encoding": "gzip"}) as r:
                assert r.status == 200 and (await r.json())["data"] == {"firing": 3, "resolved": 0}
            rt.alerts.record_metrics()
            async with s.get(url + "/metrics") as r:
                text = await r.text()
        counts = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("monbridge_alerting_requests_refused_total{")}
        assert counts['reason="too_deep",route="alertmanager"'] == 2
        assert counts['reason="too_deep",route="silences"'] == 1
        assert counts['reason="bad_encoding",route="alertmanager"'] == 1
        assert counts['reason="bad_encoding",route="silences"'] == 1
        assert counts['reason="unsupported_encoding",route="alertmanager"'] == 1
        assert counts['reason="too_large",route="alertmanager"'] == 1
        assert counts['reason="too_large",route="silences"'] == 1
        assert counts['reason="too_many_alerts",route="alertmanager"'] == 1
        assert counts['reason="bad_json",route="silences"'] == 2
        assert counts['reason="invalid",route="alertmanager"'] == 1
        assert counts['reason="invalid",route="silences"'] == 2
    finally:
        await rt.stop()
