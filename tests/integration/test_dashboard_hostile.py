"""The web dashboard's API under hostile use, in a running agent (``bridge.cli run``): many
concurrent clients ask ``/api/v1/components/{id}/data`` for its most expensive queries (the longest
window at its finest step, every series, rates and aggregates), send bad and hostile regexes,
oversized parameters, URLs and event bodies, and hold slowloris connections (headers or a body a
byte at a time), while Prometheus-like scrapes of ``/metrics`` go on. Every scrape answers, the
textfile collector (1,000 series) keeps its schedule, each request gets its documented answer,
and each refusal is counted in ``monbridge_dashboard_requests_refused_total{reason}``."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import http_get
from liveness import STEADY, Liveness, sample, steady_collector

from bridge.dashboard.query import MAX_PARAMS, MAX_POINTS, MAX_RANGE_S, MAX_VALUE_LENGTH

pytestmark = pytest.mark.integration

CHART = "/api/v1/components/monitoring.dashboard.timeseries"
ATTACK_S = 10.0
CLIENTS = 12
SLOW_CONNECTIONS = 30


def _data(**params: str) -> str:
    return f"{CHART}/data?" + urllib.parse.urlencode(params)


def _requests(now: float) -> list[tuple[str, str, bytes | None, set[int], str | None]]:
    """(method, path, body, the statuses allowed, the refusal reason counted or None) of each kind of request."""
    start, end = str(now - MAX_RANGE_S), str(now)
    step = str(MAX_RANGE_S / MAX_POINTS + 1)  # the finest step the longest window allows
    every = '{__name__=~".+"}'
    nested = b'{"type": "t", "payload": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}"
    return [
        ("GET", _data(metric=every, **{"from": start, "to": end}, step=step), None, {200, 504}, None),
        ("GET", _data(metric=every, rate="true", aggregate="sum", by="i,plugin_id", **{"from": start, "to": end}, step=step),
         None, {200, 504}, None),
        ("GET", _data(metric='{__name__=~"load", i=~"1.*"}', encoding="f64", **{"from": start, "to": end}, step=step),
         None, {200, 504}, None),
        ("GET", _data(metric='{__name__=~"(a"}'), None, {400}, "bad_request"),
        ("GET", _data(metric='{__name__=~"(a)\\1"}'), None, {400}, "bad_request"),
        ("GET", _data(metric='{__name__=~"' + "(a*)*" * 600 + 'b"}'), None, {200}, None),
        ("GET", _data(metric="x" * (MAX_VALUE_LENGTH + 1)), None, {400}, "bad_request"),
        ("GET", f"{CHART}/data?" + "&".join(f"p{i}=1" for i in range(MAX_PARAMS + 1)), None, {400}, "bad_request"),
        ("GET", _data(step="1", **{"from": start, "to": end}), None, {400}, "bad_request"),
        ("GET", _data(step="1e400"), None, {400}, "bad_request"),
        ("GET", f"{CHART}/data?metric=" + "y" * 20000, None, {400, 414, 431}, None),  # refused by the HTTP parser
        ("GET", "/api/v1/components/" + "n" * 300 + "/data", None, {404}, "not_found"),
        ("GET", "/api/v1/components", None, {200}, None),
        ("POST", f"{CHART.rsplit('/', 1)[0]}/monitoring.dashboard.alerts/events",
         b'{"type": "ack", "payload": {"id": "' + b"z" * (2 << 20) + b'"}}', {413}, "body"),
        ("POST", f"{CHART.rsplit('/', 1)[0]}/monitoring.dashboard.alerts/events", nested, {400}, "body"),
    ]


def _call(base: str, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
    req = urllib.request.Request(base + path, data=body, method=method,
                                 headers={"Content-Type": "application/json"} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (ConnectionResetError, BrokenPipeError):
        return 413, b""  # the server answered 413 and closed before the whole body was sent


def _slowloris(port: int, stop: threading.Event, body: bool) -> int:
    """Open a connection and send a request a byte every 0.5 s until ``stop``; the bytes sent."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(2)
    if body:
        head = (f"POST {CHART}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                "Content-Length: 60000\r\n\r\n{").encode()
    else:
        head = f"GET {CHART}/data HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
    sent = 0
    try:
        s.sendall(head)
        while not stop.wait(0.5):
            s.sendall(b" " if body else b"X")
            sent += 1
    except OSError:
        pass  # closed by the server: fine, it owes a slow client nothing
    finally:
        s.close()
    return sent


def test_hostile_dashboard_queries_leave_metrics_and_collectors_alone(run_monbridge, tmp_path):
    steady = steady_collector(tmp_path)
    # The collector's file holds 1,000 series, so that "every series" is a large answer.
    (tmp_path / "steady" / "load.prom").write_text("".join(f'load{{i="{i}"}} {i}\n' for i in range(1000)))
    mb = run_monbridge({"dashboard": {"history": {"resolution": 1, "window": 600}}, "plugins": [steady]})
    assert http_get(mb.url + "/api/v1/components")[0] == 200

    answers: Counter[tuple[int, int]] = Counter()  # (kind, status)
    unexpected: list[str] = []
    stop = threading.Event()
    kinds = _requests(time.time())

    def client(n: int) -> None:
        i = n
        while not stop.is_set():
            k = i % len(kinds)
            method, path, body, allowed, _ = kinds[k]
            status, text = _call(mb.url, method, path, body)
            answers[k, status] += 1
            if status not in allowed:
                unexpected.append(f"{method} {path[:120]}: HTTP {status} {text[:200]!r}")
            i += 1

    with Liveness(mb) as watch, ThreadPoolExecutor(CLIENTS + 2 * SLOW_CONNECTIONS) as pool:
        slow = [pool.submit(_slowloris, mb.port, stop, i % 2 == 0) for i in range(SLOW_CONNECTIONS)]
        clients = [pool.submit(client, n) for n in range(CLIENTS)]
        time.sleep(ATTACK_S)
        stop.set()
        for f in clients + slow:
            f.result(timeout=120)
    watch.check()

    assert not unexpected, unexpected[:5]
    for k, (method, path, *_) in enumerate(kinds):
        assert sum(n for (kk, _), n in answers.items() if kk == k), f"{method} {path[:100]}: never answered"
    # Every refusal the dashboard made is counted under its reason (the HTTP parser's own are not its).
    _, _, body = mb.get("/metrics")
    text = body.decode()
    for reason in ("bad_request", "not_found", "body"):
        made = sum(n for (k, status), n in answers.items() if kinds[k][4] == reason)
        counted = sample(text, "monbridge_dashboard_requests_refused_total", f'reason="{reason}"')
        assert counted == made, f"{reason}: {made} refused, {counted} counted"
    log = mb.log_text()
    assert "dashboard API: " in log and "monbridge_dashboard_requests_refused_total" in log
    status, _, body = mb.get("/api/v1/plugins")
    st = {p["plugin_id"]: p for p in json.loads(body)["data"]}[STEADY]
    assert st["restarts"] == 0 and st["errors"] == 0 and st["timeouts"] == 0
    assert mb.proc.poll() is None
