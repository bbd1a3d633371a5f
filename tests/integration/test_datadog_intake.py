"""The Datadog intake over real HTTP on loopback: Datadog's official API client
(``datadog-api-client``: MetricsApi v1 and v2, ServiceChecksApi, AuthenticationApi) pointed at
the intake as its host submits series of each type and check runs; compressed bodies (gzip,
deflate by the client, zstd by cramjam), wrong and missing keys, bombs, bad shapes, slowloris,
TLS and auth. Last, a whole agent (``python -m bridge.cli run``): what the client submits
appears on ``/metrics`` with its type, and check runs raise and resolve alerts on
``/api/v1/alerts``. No Datadog backend or Agent runs here: the client is Datadog's side."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import subprocess
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import cramjam
import pytest
from conftest import wait_until
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ForbiddenException
from datadog_api_client.v1.api.authentication_api import AuthenticationApi
from datadog_api_client.v1.api.metrics_api import MetricsApi as MetricsApiV1
from datadog_api_client.v1.api.service_checks_api import ServiceChecksApi
from datadog_api_client.v1.model.metrics_payload import MetricsPayload
from datadog_api_client.v1.model.point import Point
from datadog_api_client.v1.model.series import Series
from datadog_api_client.v1.model.service_check import ServiceCheck
from datadog_api_client.v1.model.service_check_status import ServiceCheckStatus
from datadog_api_client.v1.model.service_checks import ServiceChecks
from datadog_api_client.v2.api.metrics_api import MetricsApi
from datadog_api_client.v2.model.metric_content_encoding import MetricContentEncoding
from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
from datadog_api_client.v2.model.metric_payload import MetricPayload
from datadog_api_client.v2.model.metric_point import MetricPoint
from datadog_api_client.v2.model.metric_resource import MetricResource
from datadog_api_client.v2.model.metric_series import MetricSeries

from bridge.api import AlertState
from bridge.exposition import render
from bridge.pipeline import Pipeline
from integrations.datadog.config import IntakeConfig
from integrations.datadog.intake import IntakeServer

pytestmark = pytest.mark.integration

KEY = "0123456789abcdef0123456789abcdef"


@dataclass
class Intake:
    pipeline: Pipeline
    server: IntakeServer
    url: str

    def client(self, key: str = KEY, **kw: Any) -> ApiClient:
        cfg = Configuration(host=self.url, **kw)
        cfg.api_key["apiKeyAuth"] = key
        return ApiClient(cfg)

    def text(self) -> str:
        return render(self.pipeline.families()).decode()

    def counts(self, name: str) -> dict[str, float]:
        """``name``'s samples on /metrics (after a round), by their label text."""
        self.server.round()
        out = {}
        for line in self.text().splitlines():
            if line.startswith(name + "{"):
                labels, _, value = line[len(name) + 1:].rpartition("} ")
                out[labels] = float(value)
        return out


@asynccontextmanager
async def started(config: dict[str, Any]) -> AsyncIterator[Intake]:
    pipeline = Pipeline()
    server = IntakeServer(IntakeConfig.model_validate({"listen": "127.0.0.1:0", "api_keys": [KEY], **config}),
                          pipeline.ingest("monitoring.integration.datadog", 300.0))
    await server.start()
    host, port = server.bound or ("", 0)
    scheme = "https" if config.get("tls") else "http"
    try:
        yield Intake(pipeline, server, f"{scheme}://{host}:{port}")
    finally:
        await server.stop()
        pipeline.shutdown()


@pytest.fixture
async def intake() -> AsyncIterator[Intake]:
    async with started({}) as i:
        yield i


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(fn)


async def post(url: str, path: str, body: bytes, headers: dict[str, str] | None = None,
               ssl_ctx: ssl.SSLContext | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url + path, data=body, headers={"DD-API-KEY": KEY, "Content-Type": "application/json",
                                                          **(headers or {})}, ssl=ssl_ctx) as r:
            return r.status, await r.json(content_type=None)


def v2_series(now: int) -> list[MetricSeries]:
    host = [MetricResource(name="web1", type="host")]
    return [
        MetricSeries(metric="shop.orders", type=MetricIntakeType.COUNT, interval=10, resources=host,
                     tags=["env:prod", "canary"], points=[MetricPoint(timestamp=now - 10, value=3.0),
                                                          MetricPoint(timestamp=now, value=4.0)]),
        MetricSeries(metric="shop.latency", type=MetricIntakeType.GAUGE, unit="second", resources=host,
                     tags=["env:prod", "role:b", "role:a"], points=[MetricPoint(timestamp=now, value=0.25)]),
        MetricSeries(metric="shop.bytes.rate", type=MetricIntakeType.RATE, interval=10, resources=host,
                     points=[MetricPoint(timestamp=now, value=12.5)]),
        MetricSeries(metric="shop.queue", type=MetricIntakeType.UNSPECIFIED, resources=host,
                     points=[MetricPoint(timestamp=now, value=7.0)]),
    ]


def check_v2_series(text: str, orders: float = 7.0) -> None:
    assert "# TYPE shop_orders_total counter" in text
    assert f'shop_orders_total{{env="prod",host="web1",unnamed_canary="canary"}} {orders}' in text
    assert "# TYPE shop_latency_seconds gauge" in text
    assert 'shop_latency_seconds{env="prod",host="web1",role="a,b"} 0.25' in text
    assert "# TYPE shop_bytes_rate gauge" in text and 'shop_bytes_rate{host="web1"} 12.5' in text
    assert "# TYPE shop_queue gauge" in text and 'shop_queue{host="web1"} 7.0' in text


# ---------------------------------------------------------------------------- the official client


async def test_v2_series_of_each_type_from_the_official_client(intake):
    now = int(time.time())

    def submit():
        with intake.client() as c:
            return MetricsApi(c).submit_metrics(body=MetricPayload(series=v2_series(now)))

    answer = await in_thread(submit)
    assert answer.to_dict() == {"errors": []}
    check_v2_series(intake.text())
    # The count's next interval adds to the running total: /metrics shows a growing counter.
    later = [MetricSeries(metric="shop.orders", type=MetricIntakeType.COUNT, interval=10,
                          resources=[MetricResource(name="web1", type="host")], tags=["canary", "env:prod"],
                          points=[MetricPoint(timestamp=now + 10, value=5.0)])]

    def submit_later():
        with intake.client() as c:
            return MetricsApi(c).submit_metrics(body=MetricPayload(series=later))

    assert (await in_thread(submit_later)).to_dict() == {"errors": []}
    check_v2_series(intake.text(), orders=12.0)
    assert intake.counts("monbridge_datadog_intake_points_total") == {'reason="",result="accepted"': 6}
    assert intake.counts("monbridge_datadog_intake_requests_total") == {'code="202",route="series_v2"': 2}


async def test_v1_series_and_validate_from_the_official_client(intake):
    now = time.time()

    def submit():
        with intake.client() as c:
            valid = AuthenticationApi(c).validate()
            answer = MetricsApiV1(c).submit_metrics(body=MetricsPayload(series=[
                Series(metric="jobs.done", type="count", interval=20, host="batch1", tags=["queue:mail"],
                       points=[Point([now - 20, 2.0]), Point([now, 1.0])]),
                Series(metric="jobs.waiting", host="batch1", points=[Point([now, 4.0])]),  # no type: a gauge
                Series(metric="jobs.rate", type="rate", interval=20, host="batch1", points=[Point([now, 0.5])]),
            ]))
            return valid, answer

    valid, answer = await in_thread(submit)
    assert valid.to_dict() == {"valid": True}
    assert answer.to_dict() == {"status": "ok"}
    text = intake.text()
    assert "# TYPE jobs_done_total counter" in text and 'jobs_done_total{host="batch1",queue="mail"} 3.0' in text
    assert "# TYPE jobs_waiting gauge" in text and 'jobs_waiting{host="batch1"} 4.0' in text
    assert "# TYPE jobs_rate gauge" in text and 'jobs_rate{host="batch1"} 0.5' in text


async def test_a_wrong_or_missing_key_is_forbidden_as_datadog_answers(intake):
    def wrong():
        with intake.client("not-the-key") as c:
            with pytest.raises(ForbiddenException) as e:
                AuthenticationApi(c).validate()
            assert e.value.status == 403 and e.value.body == {"errors": ["Forbidden"]}
            with pytest.raises(ForbiddenException):
                MetricsApi(c).submit_metrics(body=MetricPayload(series=v2_series(int(time.time()))))

    await in_thread(wrong)
    body = json.dumps({"series": [{"metric": "x", "points": [{"timestamp": int(time.time()), "value": 1}]}]}).encode()
    async with aiohttp.ClientSession() as s:
        async with s.post(intake.url + "/api/v2/series", data=body) as r:  # no key at all
            assert r.status == 403 and await r.json() == {"errors": ["Forbidden"]}
        async with s.get(intake.url + "/api/v1/validate", params={"api_key": KEY}) as r:  # as a parameter
            assert r.status == 200 and await r.json() == {"valid": True}
        async with s.get(intake.url + "/api/v1/validate", params={"api_key": KEY[:-1]}) as r:
            assert r.status == 403
    assert "x{" not in intake.text()
    assert intake.counts("monbridge_datadog_intake_refused_total") == {'reason="forbidden"': 4}
    assert intake.counts("monbridge_datadog_intake_requests_total") == {
        'code="200",route="validate"': 1, 'code="403",route="series_v2"': 2, 'code="403",route="validate"': 2}


async def test_service_checks_raise_and_resolve_alerts(intake):
    def submit(status: ServiceCheckStatus, message: str = "") -> Any:
        with intake.client() as c:
            return ServiceChecksApi(c).submit_service_check(body=ServiceChecks([ServiceCheck(
                check="db.can_connect", host_name="db1", status=status, tags=["env:prod"], message=message)]))

    assert (await in_thread(lambda: submit(ServiceCheckStatus.CRITICAL, "refused"))).to_dict() == {"status": "ok"}
    alerts = intake.server.take_alerts()
    firing = [a for a in alerts if a.state is AlertState.FIRING]
    assert len(firing) == 1
    [alert] = firing
    assert alert.severity == "critical" and alert.annotations == {"summary": "refused", "datadog_status": "CRITICAL"}
    assert alert.labels == {"alertname": "db.can_connect", "severity": "critical", "datadog_check": "db.can_connect",
                            "host": "db1", "env": "prod"}
    # (First seen: the warning alert an earlier run may have left is resolved.)
    assert [(a.severity, a.state) for a in alerts if a is not alert] == [("warning", AlertState.RESOLVED)]
    await in_thread(lambda: submit(ServiceCheckStatus.CRITICAL, "refused"))
    assert intake.server.take_alerts() == []  # nothing new
    await in_thread(lambda: submit(ServiceCheckStatus.WARNING, "slow"))
    changes = intake.server.take_alerts()
    assert [(a.severity, a.state, a.fingerprint == alert.fingerprint) for a in changes] == [
        ("critical", AlertState.RESOLVED, True), ("warning", AlertState.FIRING, False)]
    await in_thread(lambda: submit(ServiceCheckStatus.UNKNOWN))  # UNKNOWN: warning by default, so unchanged
    [update] = intake.server.take_alerts()
    assert (update.severity, update.state, update.annotations["datadog_status"]) == (
        "warning", AlertState.FIRING, "UNKNOWN")
    await in_thread(lambda: submit(ServiceCheckStatus.OK))
    [resolved] = intake.server.take_alerts()
    assert (resolved.severity, resolved.state, resolved.fingerprint) == (
        "warning", AlertState.RESOLVED, changes[1].fingerprint)
    assert intake.counts("monbridge_datadog_intake_check_runs_total") == {
        'result="accepted",status="CRITICAL"': 2, 'result="accepted",status="OK"': 1,
        'result="accepted",status="UNKNOWN"': 1, 'result="accepted",status="WARNING"': 1}


async def test_alerting_check_runs_are_bounded():
    async with started({"max_alerts": 2, "unknown_severity": "none"}) as intake:
        runs = [{"check": f"c{i}", "host_name": "h", "status": 2, "tags": []} for i in range(3)]
        runs.append({"check": "c9", "host_name": "h", "status": 3, "tags": []})  # UNKNOWN raises none here
        status, body = await post(intake.url, "/api/v1/check_run", json.dumps(runs).encode())
        assert status == 202 and body["status"] == "ok"
        assert body["errors"] == ["1 rejected (alert_limit): check run 'c2': intake.max_alerts (2) check runs "
                                  "are alerting already"]
        firing = [a.name for a in intake.server.take_alerts() if a.state is AlertState.FIRING]
        assert firing == ["c0", "c1"]
        assert intake.counts("monbridge_datadog_intake_check_runs_total") == {
            'result="accepted",status="CRITICAL"': 2, 'result="alert_limit",status="CRITICAL"': 1,
            'result="accepted",status="UNKNOWN"': 1}
        assert intake.counts("monbridge_datadog_intake_points_total") == {
            'reason="",result="accepted"': 3, 'reason="alert_limit",result="rejected"': 1}


# ---------------------------------------------------------------------------- bodies


async def test_gzip_deflate_and_zstd_bodies(intake):
    now = int(time.time())

    def submit(encoding: MetricContentEncoding, ts: int) -> Any:
        series = v2_series(ts)
        with intake.client() as c:
            return MetricsApi(c).submit_metrics(body=MetricPayload(series=series), content_encoding=encoding)

    assert (await in_thread(lambda: submit(MetricContentEncoding.GZIP, now))).to_dict() == {"errors": []}
    assert (await in_thread(lambda: submit(MetricContentEncoding.DEFLATE, now + 20))).to_dict() == {"errors": []}
    # zstd as the Agent names it, and as Datadog's API clients do (zstd1)
    for i, coding in enumerate(("zstd", "zstd1")):
        payload = {"series": [{"metric": "shop.orders", "type": 1, "interval": 10,
                               "resources": [{"name": "web1", "type": "host"}], "tags": ["env:prod", "canary"],
                               "points": [{"timestamp": now + 30 + 10 * i, "value": 1.0}]}]}
        body = bytes(cramjam.zstd.compress(json.dumps(payload).encode()))
        assert await post(intake.url, "/api/v2/series", body, {"Content-Encoding": coding}) == (202, {"errors": []})
    # v1 with gzip, by the client
    def v1_gzip():
        with intake.client() as c:
            return MetricsApiV1(c).submit_metrics(body=MetricsPayload(series=[
                Series(metric="jobs.waiting", host="b", points=[Point([float(now), 2.0])])]), content_encoding="gzip")

    assert (await in_thread(v1_gzip)).to_dict() == {"status": "ok"}
    # the gzip submission's 7, then deflate's 7 and the two zstd points
    check_v2_series(intake.text(), orders=16.0)
    assert 'jobs_waiting{host="b"} 2.0' in intake.text()


async def test_bombs_and_oversized_bodies_are_refused_with_413():
    async with started({"max_request_bytes": 64 << 10, "max_decompressed_bytes": 1 << 20, "max_points": 1000}) as intake:
        raw = b'{"series": [' + b" " * (8 << 20) + b"]}"
        for coding, body in [("zstd", bytes(cramjam.zstd.compress(raw))), ("gzip", gzip.compress(raw)),
                             ("deflate", zlib.compress(raw))]:
            assert len(body) < 64 << 10
            status, answer = await post(intake.url, "/api/v2/series", body, {"Content-Encoding": coding})
            assert status == 413, (coding, answer)
            assert answer == {"errors": ["body: the decoded body is larger than the limit "
                                         "(intake.max_decompressed_bytes) of 1048576 bytes"]}
        status, answer = await post(intake.url, "/api/v1/series", b" " * (65 << 10))
        assert status == 413 and answer == {"errors": ["body: Content-Length 66560 is larger than the limit "
                                                        "(intake.max_request_bytes) of 65536 bytes"]}
        many = {"series": [{"metric": "m", "points": [{"timestamp": 1_700_000_000 + i, "value": 1} for i in range(91)]}
                           for _ in range(11)]}
        status, answer = await post(intake.url, "/api/v2/series", gzip.compress(json.dumps(many).encode()),
                                    {"Content-Encoding": "gzip"})
        assert status == 413 and answer == {"errors": ["request has 1001 points, more than intake.max_points "
                                                       "(1000)"]}
        assert intake.counts("monbridge_datadog_intake_refused_total") == {
            'reason="too_large"': 4, 'reason="too_many_points"': 1}
        assert intake.counts("monbridge_datadog_intake_requests_total") == {
            'code="413",route="series_v1"': 1, 'code="413",route="series_v2"': 4}
        assert "m{" not in intake.text()


@pytest.mark.parametrize("path, body, headers, status, error", [
    ("/api/v2/series", {"series": [{"metric": "a", "points": [{"timestamp": 1_700_000_000, "value": 1}]},
                                   {"metric": "b", "points": [{"timestamp": 1_700_000_000, "value": "x"}]}]},
     {}, 400, "series[1].points[0].value: not a number"),
    ("/api/v2/series", {"series": [{"metric": "a", "type": 7, "points": []}]}, {}, 400,
     "series[0].type: not 0 (unspecified), 1 (count), 2 (rate) or 3 (gauge)"),
    ("/api/v2/series", {"series": [{"metric": "a", "points": [{"timestamp": -5, "value": 1}]}]}, {}, 400,
     "series[0].points[0].timestamp: not a Unix time in seconds"),
    ("/api/v2/series", {"serie": []}, {}, 400, "series: absent or not a list"),
    ("/api/v1/series", {"series": [{"metric": "a", "points": [[1_700_000_000]]}]}, {}, 400,
     "series[0].points[0]: not a [timestamp, value] pair"),
    ("/api/v1/series", {"series": [{"metric": "a", "type": "histogram", "points": []}]}, {}, 400,
     "series[0].type: not gauge, count or rate"),
    ("/api/v1/series", {"series": [{"metric": "", "points": []}]}, {}, 400, "series[0].metric: empty"),
    ("/api/v1/check_run", {"check": "x"}, {}, 400, "body: not a JSON list of check runs"),
    ("/api/v1/check_run", [{"check": "x", "status": 5}], {}, 400,
     "[0].status: not 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN)"),
    ("/api/v1/check_run", [{"check": "x", "status": 0, "tags": ["a", 3]}], {}, 400, "[0].tags[1]: not a string"),
    ("/api/v2/series", b'{"series": [', {}, 400, "body: not valid JSON: Expecting value: line 1 column 13 (char 12)"),
    ("/api/v2/series", b"[" * 40 + b"]" * 40, {}, 400, "body: JSON nested deeper than the limit of 16 levels"),
    ("/api/v2/series", b"\x0a\x01", {"Content-Type": "application/x-protobuf"}, 415,
     "Content-Type 'application/x-protobuf' is not accepted: JSON only (a Datadog Agent submits here with "
     "use_v2_api.series: false)"),
    ("/api/v2/series", b"{}", {"Content-Encoding": "br"}, 415,
     "Content-Encoding 'br' is not supported (gzip, deflate, zstd or identity)"),
    ("/api/v2/series", b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400,
     "body: not valid gzip data (Content-Encoding: gzip)"),
    ("/api/v2/series", b"garbage", {"Content-Encoding": "zstd"}, 400,
     "body: not valid zstd data (Content-Encoding: zstd)"),
])
async def test_a_bad_request_is_refused_naming_what_is_wrong(intake, path, body, headers, status, error):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert await post(intake.url, path, data, headers) == (status, {"errors": [error]})
    assert "a{" not in intake.text() and "b{" not in intake.text()  # nothing of a refused request is kept
    refused = intake.counts("monbridge_datadog_intake_refused_total")
    assert sum(refused.values()) == 1


async def test_points_rejected_one_by_one_are_answered_and_counted(intake):
    now = int(time.time())
    body = {"series": [
        {"metric": "c", "type": 1, "interval": 10, "points": [{"timestamp": now, "value": 2}]},
        {"metric": "c", "type": 1, "interval": 10, "points": [{"timestamp": now - 5, "value": 1}]},  # overlaps
        {"metric": "d", "type": 1, "interval": 10, "points": [{"timestamp": now, "value": -1}]},
        {"metric": "e", "type": 3, "tags": [":x"], "points": [{"timestamp": now, "value": 1}]},
        {"metric": "f", "type": 3, "tags": [f"t{i}:v" for i in range(101)], "points": [{"timestamp": now}]},
        {"metric": "9bad", "type": 3, "points": [{"timestamp": now, "value": 1}]},
        {"metric": "g", "type": 3, "points": [{"timestamp": now}]},  # no value: zero, as the payload omits it
    ]}
    status, answer = await post(intake.url, "/api/v2/series", json.dumps(body).encode())
    assert status == 202
    assert answer["errors"] == [
        "1 rejected (invalid_tag): series[3] (e): the tag ':x' has an empty name",
        "1 rejected (negative_count): series[2] (d): a count of -1: a counter only grows",
        "1 rejected (too_many_tags): series[4] (f): more than intake.max_tags (100) tags",
        "1 rejected (invalid_name): 9bad: not an OpenTelemetry instrument name",
        f"1 rejected (out_of_order): c: a delta point from {(now - 15) * 10**9} to {(now - 5) * 10**9} overlaps "
        f"the running total, which ends at {now * 10**9}",
    ]
    text = intake.text()
    assert "c_total 2.0" in text and "g 0.0" in text
    assert intake.counts("monbridge_datadog_intake_points_total") == {
        'reason="",result="accepted"': 2, 'reason="invalid_name",result="rejected"': 1,
        'reason="invalid_tag",result="rejected"': 1, 'reason="negative_count",result="rejected"': 1,
        'reason="out_of_order",result="rejected"': 1, 'reason="too_many_tags",result="rejected"': 1}


# ---------------------------------------------------------------------------- connections


async def test_slowloris_and_idle_connections_are_closed():
    async with started({"read_timeout": 1}) as intake:
        host, port = intake.server.bound or ("", 0)

        def hold(partial: bytes) -> bytes:
            with socket.create_connection((host, port), timeout=30) as s:
                s.sendall(partial)
                return s.recv(1024)  # the server closes it: b"" (a test-side timeout is a failure)

        slow = b"POST /api/v2/series HTTP/1.1\r\nHost: x\r\nDD-API-KEY: " + KEY.encode()
        assert await in_thread(lambda: hold(slow)) == b""
        assert await in_thread(lambda: hold(b"")) == b""
        # a slow body: the headers came, the body does not
        head = (b"POST /api/v2/series HTTP/1.1\r\nHost: x\r\nDD-API-KEY: " + KEY.encode() +
                b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        answer = await in_thread(lambda: hold(head))
        assert answer.startswith(b"HTTP/1.1 408 ")
        refused = intake.counts("monbridge_datadog_intake_refused_total")
        assert refused == {'reason="read_timeout"': 3}
        # and the listener still answers
        status, body = await post(intake.url, "/api/v1/check_run", b"[]")
        assert (status, body) == (202, {"status": "ok"})


async def test_tls_and_auth(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    config = {"tls": {"cert_file": str(cert), "key_file": str(key)}, "auth": {"bearer_token": "s3cret-token"}}
    async with started(config) as intake:
        ctx = ssl.create_default_context(cafile=str(cert))
        body = json.dumps({"series": [{"metric": "t", "points": [[time.time(), 1.0]]}]}).encode()
        status, answer = await post(intake.url, "/api/v1/series", body, ssl_ctx=ctx)  # the key alone is not enough
        assert (status, answer) == (401, {"errors": ["Unauthorized"]})
        auth = {"Authorization": "Bearer s3cret-token"}
        status, answer = await post(intake.url, "/api/v1/series", body, auth, ssl_ctx=ctx)
        assert (status, answer) == (202, {"status": "ok"})
        status, _ = await post(intake.url, "/api/v1/series", body, {**auth, "DD-API-KEY": "other"}, ssl_ctx=ctx)
        assert status == 403
        with pytest.raises(aiohttp.ClientError):  # no TLS, no answer
            await post(intake.url.replace("https:", "http:"), "/api/v1/series", body, auth)

        def client():  # the official client, over TLS with the bearer token as an extra header
            with intake.client(ssl_ca_cert=str(cert)) as c:
                c.default_headers["Authorization"] = "Bearer s3cret-token"
                return AuthenticationApi(c).validate()

        assert (await in_thread(client)).to_dict() == {"valid": True}
        assert 't 1.0' in intake.text()
        assert intake.counts("monbridge_datadog_intake_refused_total") == {
            'reason="forbidden"': 1, 'reason="unauthenticated"': 1}


# ---------------------------------------------------------------------------- a whole agent


def test_an_agent_takes_series_to_metrics_and_check_runs_to_alerts(run_monbridge, free_port, tmp_path):
    port = free_port()
    mb = run_monbridge({
        "alerting": {"import_interval": 1, "state_dir": str(tmp_path / "alerts")},
        "plugins": [{"plugin_id": "monitoring.integration.datadog", "config": {
            "interval": 1, "intake": {"listen": f"127.0.0.1:{port}", "api_keys": [KEY]}}}],
    })
    cfg = Configuration(host=f"http://127.0.0.1:{port}")
    cfg.api_key["apiKeyAuth"] = KEY
    now = int(time.time())
    wrong = Configuration(host=f"http://127.0.0.1:{port}")
    wrong.api_key["apiKeyAuth"] = "wrong-key-that-must-not-be-logged"
    with ApiClient(wrong) as c, pytest.raises(ForbiddenException):
        MetricsApi(c).submit_metrics(body=MetricPayload(series=v2_series(int(time.time()))))
    with ApiClient(cfg) as c:
        assert AuthenticationApi(c).validate().to_dict() == {"valid": True}
        assert MetricsApi(c).submit_metrics(body=MetricPayload(series=v2_series(now))).to_dict() == {"errors": []}

        def metrics() -> str:
            status, _, body = mb.get("/metrics")
            text = body.decode()
            return text if status == 200 and "shop_orders_total{" in text else ""

        check_v2_series(wait_until(metrics, what="the submitted series on /metrics"))

        def submit_check(status: ServiceCheckStatus) -> None:
            answer = ServiceChecksApi(c).submit_service_check(body=ServiceChecks([ServiceCheck(
                check="db.can_connect", host_name="db1", status=status, tags=["env:prod"], message="no route")]))
            assert answer.to_dict() == {"status": "ok"}

        def alerts(state: str) -> list[dict[str, Any]]:
            status, _, body = mb.get(f"/api/v1/alerts?state={state}")
            assert status == 200, body
            return [a for a in json.loads(body)["data"] if a["labels"].get("datadog_check") == "db.can_connect"]

        submit_check(ServiceCheckStatus.CRITICAL)
        [alert] = wait_until(lambda: alerts("active"), what="the CRITICAL check run's alert")
        assert alert["state"] == "firing" and alert["severity"] == "critical"
        assert alert["labels"] == {"alertname": "db.can_connect", "severity": "critical",
                                   "datadog_check": "db.can_connect", "host": "db1", "env": "prod"}
        submit_check(ServiceCheckStatus.OK)
        [resolved] = wait_until(lambda: alerts("resolved"), what="the alert resolved by OK")
        assert resolved["id"] == alert["id"] and alerts("active") == []
    _, _, body = mb.get("/metrics")
    text = body.decode()
    assert 'monbridge_datadog_intake_requests_total{code="202",route="series_v2"} 1' in text
    assert 'monbridge_datadog_intake_requests_total{code="202",route="check_run"} 2' in text
    assert 'monbridge_datadog_intake_refused_total{reason="forbidden"} 1' in text
    log_text = mb.log_text()
    assert "refused (forbidden)" in log_text  # logged, without the key given or the keys accepted
    assert KEY not in log_text and "wrong-key-that-must-not-be-logged" not in log_text
