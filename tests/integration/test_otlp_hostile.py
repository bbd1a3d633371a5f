"""Hostile OTLP peers stay their own problem (``monbridge run`` as a child process, on loopback).

Hostile clients of the receivers (``otlp_attacker.py``, a child process: slowloris and idle
connections on OTLP/HTTP and OTLP/gRPC, decompression bombs, a huge declared length, garbage
protobuf as fast as it is answered, attribute values nested deep or 512 KiB long): while they
attack, ``/metrics`` keeps answering, a well-behaved scrape target keeps being collected on its
schedule, and every refusal is answered, counted in the receiver's self-metrics and logged.

A slow, black-hole or 503-answering OTLP push backend: the OTLP sink fails as that sink
(retryable, retried with backoff), while ``/metrics``, remote write and the Prometheus plugin's
rounds go on untouched.

Times are bounds of liveness, generous on a shared machine (the benchmark
``benchmarks/bench_hostile.py --peers otlp`` measures latencies); the schedule is checked from
the target's own log of when it was scraped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ATTACKER = HERE / "otlp_attacker.py"
sys.path.insert(0, str(HERE))
SCRAPE_INTERVAL = 5.0
JITTER = 0.1 * SCRAPE_INTERVAL  # a round may start this much early or late
ATTACK_S = 20.0
PAUSE = 0.005  # between two requests of one attack: ~200 a second each (the benchmark goes flat out)
LIVENESS_S = 5.0  # /metrics answers within this, under attack
READ_TIMEOUT = 3.0  # the receivers' receive.*.read_timeout in these tests
TARGET_BODY = b"# TYPE well_behaved gauge\nwell_behaved 1\n"


class WellTarget:
    """A Prometheus target in a thread of this process, logging when it is scraped."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                arrivals.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(TARGET_BODY)))
                self.end_headers()
                self.wfile.write(TARGET_BODY)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def gaps(self, t0: float, t1: float) -> list[float]:
        """The gaps between consecutive scrapes in [t0, t1], and from the last one to t1."""
        times = [t for t in self.arrivals if t0 <= t <= t1]
        return [b - a for a, b in zip(times, times[1:], strict=False)] + ([t1 - times[-1]] if times else [])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def well_target():
    target = WellTarget()
    yield target
    target.stop()


def check_schedule(target: WellTarget, t0: float, t1: float) -> None:
    """Every scrape in [t0, t1] came within JITTER of its schedule (the agent scrapes at fixed
    times, ``interval`` apart: the schedule is the grid that fits them best), and none was missed."""
    times = [t for t in target.arrivals if t0 <= t <= t1]
    assert len(times) >= int((t1 - t0) / SCRAPE_INTERVAL) - 1, (times, t0, t1)
    first = times[0]
    offsets = sorted(t - first - round((t - first) / SCRAPE_INTERVAL) * SCRAPE_INTERVAL for t in times)
    phase = offsets[len(offsets) // 2]  # the median: one late scrape does not move the grid
    off = [round(o - phase, 3) for o in offsets if abs(o - phase) > JITTER]
    assert not off, f"scrapes off their {SCRAPE_INTERVAL} s schedule by {off} s (at {times})"
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g < 1.5 * SCRAPE_INTERVAL for g in gaps), gaps  # none missed
    assert t1 - times[-1] <= 2 * SCRAPE_INTERVAL, (times, t1)  # and it did not stop


def poll_metrics(mb, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    while not stop.is_set():
        t = time.monotonic()
        try:
            status, _, _ = mb.get("/metrics", timeout=LIVENESS_S)
            if status != 200:
                failures.append(f"status {status}")
        except OSError as e:
            failures.append(f"{type(e).__name__}: {e}")
        latencies.append(time.monotonic() - t)
        stop.wait(0.5)


def series(text: str, name: str) -> dict[str, float]:
    """``{labels text: value}`` of the samples of ``name`` in an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name):].rpartition(" ")
            out[labels] = float(value)
    return out


def receiver_config(free_port, target_url: str) -> tuple[dict, int, int]:
    grpc_port, http_port = free_port(), free_port()
    listener = {"read_timeout": READ_TIMEOUT}
    return {"plugins": [
        {"plugin_id": "monitoring.integration.prometheus", "config": {
            "interval": SCRAPE_INTERVAL,
            "scrape": {"interval": SCRAPE_INTERVAL, "timeout": 1, "targets": [{"job": "well", "url": target_url}]}}},
        {"plugin_id": "monitoring.integration.otlp", "config": {
            "interval": 1,
            "receive": {"grpc": {"listen": f"127.0.0.1:{grpc_port}", **listener},
                        "http": {"listen": f"127.0.0.1:{http_port}", "max_request_bytes": 1 << 20, **listener}}}},
    ]}, http_port, grpc_port


def test_hostile_otlp_clients_are_refused_while_the_agent_keeps_its_schedule(run_monbridge, free_port, well_target):
    config, http_port, grpc_port = receiver_config(free_port, well_target.url)
    mb = run_monbridge(config)
    wait_until(lambda: len(well_target.arrivals) >= 2, what="two scrapes of the well-behaved target")

    latencies: list[float] = []
    failures: list[str] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll_metrics, args=(mb, stop, latencies, failures), daemon=True)
    t0 = time.monotonic()
    attacker = subprocess.Popen([sys.executable, str(ATTACKER), str(http_port), str(grpc_port), str(ATTACK_S), str(PAUSE)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    poller.start()
    try:
        out, err = attacker.communicate(timeout=ATTACK_S + 60)
    finally:
        attacker.kill()
        t1 = time.monotonic()
        stop.set()
        poller.join(LIVENESS_S + 5)
    assert attacker.returncode == 0, err
    got = json.loads(out.splitlines()[-1])

    # /metrics answered all along, and the well-behaved target was scraped on its schedule.
    assert not failures, failures
    assert latencies and max(latencies) < LIVENESS_S
    check_schedule(well_target, t0 + 1, min(t1, t0 + ATTACK_S))

    # Every hostile request got its answer (or, with too many in flight, 503 and Retry-After) ...
    def answered(attack: str, *expected: str) -> None:
        assert set(expected) <= set(got[attack]) <= {*expected, "503"}, (attack, got[attack])

    answered("http_garbage", "400")
    answered("http_bomb", "413")
    answered("http_length", "413")
    # (nested 40 deep: decoded and taken, as JSON text; 1000 deep: not decoded; 512 KiB long: the
    # point rejected; JSON 100,000 deep: not parsed)
    answered("http_nested", "200 rejected=0", "200 rejected=1", "400")
    assert set(got["grpc_garbage"]) == {"INVALID_ARGUMENT"}, got
    assert set(got["grpc_bomb"]) == {"RESOURCE_EXHAUSTED"}, got
    # ... and no connection was held: those that sent nothing or too slowly were closed.
    for attack in ("http_slowloris", "http_idle", "grpc_slowloris", "grpc_idle"):
        assert got[attack] == {"closed": 20}, (attack, got)

    # Each refusal is counted by its reason (those grpcio answers itself, a message over the
    # limit and connections closed, never reach the receiver) ...
    status, _, body = mb.get("/metrics")
    text = body.decode()
    requests = series(text, "monbridge_otlp_receive_requests_total")
    counted = {labels for labels, n in requests.items() if n > 0}
    for reason, transport in [("bad_protobuf", "http"), ("too_large", "http"), ("too_deep", "http"),
                              ("read_timeout", "http"), ("bad_protobuf", "grpc")]:
        assert f'{{result="{reason}",transport="{transport}"}}' in counted, (reason, transport, requests)
    assert requests['{result="read_timeout",transport="http"}'] >= 2 * 20  # the slowloris and idle ones
    points = series(text, "monbridge_otlp_receive_points_total")
    assert points.get('{reason="invalid_attribute",result="rejected"}', 0) > 0, points
    # ... and logged (once a minute per reason).
    log = mb.log_text()
    for reason in ("bad_protobuf", "too_large", "too_deep", "read_timeout"):
        assert f"OTLP/http request refused ({reason})" in log, log[-3000:]
    assert "OTLP/grpc request refused (bad_protobuf)" in log, log[-3000:]
    assert "data points rejected (invalid_attribute)" in log
    assert "cannot export spans and logs" not in log  # (receive only: the alert engine has no exporter)
    # The agent is still ready, and still receives from a well-behaved client.
    assert mb.get("/-/ready")[0] == 200


# ---------------------------------------------------------------------------- a faulty push backend


@pytest.mark.parametrize("kind", ["black_hole", "slow", "503"])
def test_a_faulty_otlp_backend_fails_its_sink_only(kind, run_monbridge, well_target):
    from otlp_attacker import PushBackend

    from tests.http_recorder import HttpRecorder

    backend = PushBackend(kind)
    remote = HttpRecorder()
    try:
        mb = run_monbridge({"plugins": [
            {"plugin_id": "monitoring.integration.prometheus", "config": {
                "interval": SCRAPE_INTERVAL,
                "scrape": {"interval": SCRAPE_INTERVAL, "timeout": 1,
                           "targets": [{"job": "well", "url": well_target.url}]},
                "remote_write": [{"url": f"{remote.url}/api/v1/write", "queue": {"batch_send_deadline": 0.2}}]}},
            {"plugin_id": "monitoring.integration.otlp", "config": {
                "endpoint": f"http://127.0.0.1:{backend.port}/v1/metrics", "interval": 2, "timeout": 1}},
        ]})
        t0 = time.monotonic()

        def statuses() -> dict[str, dict]:
            return {p["plugin_id"]: p for p in json.loads(mb.get("/api/v1/plugins")[2])["data"]}

        st = wait_until(lambda: (s := statuses())["monitoring.integration.otlp"]["runs"] >= 5 and s,
                        timeout=60, what="five rounds of the OTLP plugin")
        t1 = time.monotonic()
        otlp, prom = st["monitoring.integration.otlp"], st["monitoring.integration.prometheus"]
        # The OTLP sink fails as that sink: the plugin runs on, never restarted ...
        assert otlp["state"] == "running" and otlp["restarts"] == 0, otlp
        (sink,) = otlp["sinks"]
        assert sink["state"] == "failing" and sink["errors"] >= 3, sink
        assert f"127.0.0.1:{backend.port}" in sink["last_error"], sink
        # ... and the Prometheus plugin's rounds, its remote write and /metrics are untouched.
        assert prom["state"] == "running" and prom["restarts"] == 0 and prom["consecutive_failures"] == 0, prom
        assert all(s["state"] == "ok" for s in prom["sinks"]), prom
        check_schedule(well_target, t0, t1)
        writes = [r for r in remote.requests if r.path == "/api/v1/write"]
        assert len(writes) >= 3, len(writes)
        status, _, body = mb.get("/metrics", timeout=LIVENESS_S)
        assert status == 200 and b"well_behaved{" in body
        assert mb.get("/-/ready")[0] == 200
        if kind == "503":
            # retryable: retried within a round, with backoff (the waits between tries grow)
            waits = [b - a for a, b in zip(backend.arrivals, backend.arrivals[1:], strict=False)]
            assert len(backend.arrivals) > otlp["runs"], backend.arrivals
            assert any(w > 0.05 for w in waits), waits
        log = mb.log_text()
        assert log.count("sink export is failing") + log.count("is failing") >= 1, log[-2000:]
    finally:
        backend.stop()
        remote.stop()
