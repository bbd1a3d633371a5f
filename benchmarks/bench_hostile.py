#!/usr/bin/env python3
"""Hostile peers: /metrics latency, the well-behaved target's schedule and RSS of `monbridge run`
with no hostile peer (baseline) and with hostile peers (hostile), in the same run.

    python benchmarks/bench_hostile.py [--seconds 30] [--scrape-interval 2] [--peers all] [--keep-logs]

Each phase starts its own agent, ``python -m bridge.cli run --config <tmp config>`` from this
checkout, on a free loopback port, with the same config: the system collector, alerting (its
own state_dir) and ``monitoring.integration.prometheus`` scraping a well-behaved target (a
server thread in this process serving tests/data/node_exporter_1.5.prom, logging the time of
every request) and, in the hostile phase, one target per hostile body, served by a child
process (so that serving them never delays this process' measurements):

  * float      a 300 KB run of digits as a sample value (a quadratic number parse)
  * timestamp  a sample timestamp longer than Python's int-digit limit (a non-ParseError error)
  * gzip       a gzip bomb: 2 GiB decompressed, 2 MB on the wire (generated once, cached in the temp dir)
  * endless    an endless chunked body (--endless-rate MiB/s)

The hostile targets serve a normal body until the agent is ready, then turn hostile at the start
of the measured window. During that window also:

  * webhook    a 10,000-alert Alertmanager webhook (payload version 4, ~2.9 MB) to
               POST /api/v1/alerts/alertmanager, every --webhook-every seconds
  * reload     a config-reload storm: POST /-/reload (Content-Type: application/json, no Origin)
               --reload-rate times a second, the config file unchanged
  * otlp       hostile clients of the OTLP receivers (both phases run them, OTLP/HTTP and gRPC):
               tests/integration/otlp_attacker.py in a child process, every attack at once and
               flat out (slowloris and idle connections, gzip bombs, a huge declared length,
               garbage protobuf, attributes nested deep or 512 KiB long)
  * otlp-push  the OTLP push backend (both phases push to it every scrape interval) turns into a
               black hole: it accepts connections and never answers

In both phases this process polls /metrics every --poll-interval seconds (closed loop) and
samples the agent's RSS every 100 ms. Every request is bounded by --request-timeout; a timeout
or a failed request counts as a latency of --request-timeout. The schedule delay is read from
the well-behaved target's own request log: each gap between consecutive scrapes minus the
scrape interval, and the time since the last scrape at the end of the window when that is
overdue (an agent that stopped scraping).

Goal: with hostile peers, the worst /metrics latency and the worst schedule delay stay ≤ 2×
their values with no hostile peer. A time ratio divides by at least --floor-ms (scheduler noise
on a shared machine is not a baseline). p99 and peak RSS get the same 2× check, for information.
Exit status: 0 when both phases were measured (goals met or not, the agent alive or not: it is a
report), 1 when the benchmark itself could not run (a peer server or an agent would not start).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
WELL_BODY = ROOT / "tests" / "data" / "node_exporter_1.5.prom"
GOAL = 2.0
TEXT_CT = "text/plain; version=0.0.4; charset=utf-8"
PEERS = ("float", "timestamp", "gzip", "endless", "webhook", "reload", "otlp", "otlp-push")
OTLP_ATTACKER = ROOT / "tests" / "integration" / "otlp_attacker.py"
TARGET_PEERS = ("float", "timestamp", "gzip", "endless")
BOMB_BYTES = 2 << 30
BOMB_CACHE = Path(tempfile.gettempdir()) / "monbridge-bench-hostile" / "gzip-bomb-2GiB.gz"
WEBHOOK_ALERTS = 10_000
MIB = 1024 * 1024


# ---------------------------------------------------------------------- the hostile bodies


def float_body() -> bytes:
    """A 300 KB line: a sample value of digits that no float syntax accepts (a dangling exponent)."""
    return b"# TYPE hostile_value gauge\nhostile_value " + b"1" * 300_000 + b"e\n"


def timestamp_body() -> bytes:
    """A valid sample, then one whose timestamp has more digits than Python's int() takes (4300)."""
    return (b"# TYPE hostile_ts gauge\nhostile_ts{n=\"0\"} 1 1700000000000\n"
            b"hostile_ts{n=\"1\"} 1 " + b"1" * 5000 + b"\n")


def endless_chunk() -> bytes:
    """256 KiB of valid sample lines, repeated for ever: only a size limit ends the body."""
    lines = b"".join(b'hostile_endless{i="%d"} 1\n' % i for i in range(12_000))
    return (b"# TYPE hostile_endless gauge\n" + lines)[: 256 * 1024]


def gzip_bomb(path: Path) -> Path:
    """2 GiB of zeros, gzip level 9 (~2 MB), written streaming; reused when already there."""
    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"  generating the gzip bomb once ({BOMB_BYTES >> 30} GiB decompressed) into {path} ...", flush=True)
    part = path.with_suffix(f".part{os.getpid()}")
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    block = bytes(MIB)
    with open(part, "wb") as out:
        for _ in range(BOMB_BYTES // MIB):
            out.write(comp.compress(block))
        out.write(comp.flush())
    os.replace(part, path)
    print(f"  ... {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def webhook_payload(n: int) -> bytes:
    """An Alertmanager webhook (payload version 4) carrying n firing alerts, as a storm sends it."""
    starts = time.strftime("%Y-%m-%dT%H:%M:%S.123456789Z", time.gmtime())
    alerts = [{
        "status": "firing",
        "labels": {"alertname": "HostileStorm", "instance": f"10.0.{i >> 8}.{i & 255}:9100", "job": "node",
                   "severity": "warning"},
        "annotations": {}, "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": f"{i:016x}",
    } for i in range(n)]
    doc = {"version": "4", "groupKey": '{}:{alertname="HostileStorm"}', "truncatedAlerts": 0, "status": "firing",
           "receiver": "monbridge", "groupLabels": {"alertname": "HostileStorm"},
           "commonLabels": {"alertname": "HostileStorm", "job": "node", "severity": "warning"},
           "commonAnnotations": {}, "externalURL": "http://alertmanager.example.org:9093", "alerts": alerts}
    return json.dumps(doc, separators=(",", ":")).encode()  # compact, as Alertmanager (Go) writes it


# ---------------------------------------------------------------------- the hostile target server (a child process)


def serve_hostile(bomb: Path | None, rate_mib: float) -> None:
    """The child's main: one aiohttp server, one path per hostile body, plus /arm, /disarm, /stats.
    Until armed every path serves a normal body. Exits when its stdin closes (the parent went away)."""
    import asyncio

    from aiohttp import web

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    bodies = {"float": float_body(), "timestamp": timestamp_body()}
    bomb_body = bomb.read_bytes() if bomb is not None else b""
    chunk = endless_chunk()
    rate = rate_mib * MIB
    state: dict[str, Any] = {"armed": False, "requests": {p: 0 for p in TARGET_PEERS}, "sent": {p: 0 for p in TARGET_PEERS}}

    async def target(request: web.Request) -> web.StreamResponse:
        peer = request.match_info["peer"]
        if peer not in TARGET_PEERS:
            raise web.HTTPNotFound()
        if not state["armed"]:
            return web.Response(body=b'# TYPE hostile_peer_ok gauge\nhostile_peer_ok{peer="%s"} 1\n' % peer.encode(),
                                headers={"Content-Type": TEXT_CT})
        state["requests"][peer] += 1
        if peer in bodies:
            state["sent"][peer] += len(bodies[peer])
            return web.Response(body=bodies[peer], headers={"Content-Type": TEXT_CT})
        if peer == "gzip":
            state["sent"][peer] += len(bomb_body)
            return web.Response(body=bomb_body, headers={"Content-Type": TEXT_CT, "Content-Encoding": "gzip"})
        resp = web.StreamResponse(headers={"Content-Type": TEXT_CT})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        t0, sent = loop.time(), 0
        try:
            while state["armed"]:
                await resp.write(chunk)
                sent += len(chunk)
                state["sent"][peer] += len(chunk)
                ahead = sent / rate - (loop.time() - t0) if rate > 0 else 0.0
                if ahead > 0:
                    await asyncio.sleep(ahead)
        except (ConnectionError, RuntimeError):  # the scraper gave up and closed the connection
            pass
        return resp

    async def arm(request: web.Request) -> web.Response:
        state["armed"] = request.match_info["on"] == "arm"
        return web.json_response({"armed": state["armed"]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/hostile/{peer}", target)
        app.router.add_post("/{on:arm|disarm}", arm)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(json.dumps({"port": port}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class HostileServer:
    def __init__(self, bomb: Path | None, rate_mib: float, log: Path) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-hostile", "--endless-rate", str(rate_mib)]
        if bomb is not None:
            argv += ["--bomb", str(bomb)]
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the child prints its port once listening
        if not line:
            raise SystemExit(f"the hostile target server did not start; log: {log}\n{log.read_text(errors='replace')[-2000:]}")
        self.port = int(json.loads(line)["port"])

    def url(self, peer: str) -> str:
        return f"http://127.0.0.1:{self.port}/hostile/{peer}"

    def control(self, what: str) -> Any:
        method = "GET" if what == "stats" else "POST"
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/{what}", method=method,
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback URL we built
                return json.loads(r.read())
        except (OSError, ValueError) as e:
            print(f"  warning: hostile server /{what}: {type(e).__name__}: {e}", file=sys.stderr)
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------------- the well-behaved target (a thread here)


class WellTarget:
    """A node_exporter capture on loopback; the arrival time (time.monotonic) of every request is kept."""

    def __init__(self) -> None:
        body = WELL_BODY.read_bytes()
        self.arrivals: list[float] = []
        arrivals = self.arrivals

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                arrivals.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Type", TEXT_CT)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="well-target", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------- the agent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_config(port: int, state_dir: Path, well_port: int, hostile: HostileServer | None, peers: list[str],
                 interval: float, timeout: float, otlp: dict[str, Any] | None = None) -> str:
    targets: list[dict[str, Any]] = [{"job": "well", "url": f"http://127.0.0.1:{well_port}/metrics"}]
    if hostile is not None:
        targets += [{"job": "hostile", "url": hostile.url(p), "labels": {"peer": p}} for p in peers if p in TARGET_PEERS]
    doc = {
        "server": {"listen": f"127.0.0.1:{port}"},
        "alerting": {"state_dir": str(state_dir)},
        "plugins": [
            {"plugin_id": "monitoring.metrics.system", "enabled": True, "config": {"collection_interval": interval}},
            {"plugin_id": "monitoring.integration.prometheus", "enabled": True,
             "config": {"scrape": {"interval": interval, "timeout": timeout, "targets": targets}}},
        ],
    }
    if otlp:
        doc["plugins"].append({"plugin_id": "monitoring.integration.otlp", "enabled": True,
                               "config": {"interval": interval, "timeout": timeout, **otlp}})
    return "# written by benchmarks/bench_hostile.py (JSON is YAML)\n" + json.dumps(doc, indent=2) + "\n"


def request(url: str, timeout: float, data: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int | None, float, bytes, str]:
    """(status or None, seconds, body, error); a timeout or failure takes `timeout` seconds as its latency."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback URL we built
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    except (OSError, ValueError) as e:  # URLError, timeouts, resets, http.client errors
        reason = getattr(e, "reason", e)
        kind = "timeout" if isinstance(reason, TimeoutError) or "timed out" in str(reason) else type(reason).__name__
        return None, timeout, b"", kind
    took = time.monotonic() - t0
    if took >= timeout:
        return None, timeout, b"", "timeout"
    return status, took, body, ""


@dataclass
class Agent:
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    rss: list[int] = field(default_factory=list)
    hwm: int = 0
    stop_note: str = ""

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_note(self) -> str:
        rc = self.proc.returncode if self.proc is not None else None
        return f"exited with status {rc}" if rc is not None and rc >= 0 else f"killed by signal {-(rc or 0)}"

    def sample_rss(self) -> None:
        assert self.proc is not None
        try:
            p = psutil.Process(self.proc.pid)
            total = sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])
        except psutil.Error:
            return
        self.rss.append(total)

    def read_hwm(self) -> None:
        """The kernel's peak RSS of the agent process (VmHWM), which no sampling interval misses."""
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.hwm = int(line.split()[1]) * 1024
        except OSError:
            pass

    def peak_rss(self) -> int:
        return max([self.hwm, *self.rss])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.stop_note = self.exit_note() + " before the end" if self.proc is not None else "never started"
            return
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
            self.stop_note = f"stopped by SIGTERM in {time.monotonic() - t0:.1f} s"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            self.stop_note = "did not stop within 10 s of SIGTERM: SIGKILL"


# ---------------------------------------------------------------------- one phase


@dataclass
class Traffic:
    """Requests of one kind (the /metrics polls, reloads, webhooks): latency, status, failures."""
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, status: int | None, took: float, error: str) -> None:
        self.latencies.append(took)
        key = str(status) if status is not None else error
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def summary(self) -> str:
        if not self.latencies:
            return "none sent"
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (f"{len(self.latencies)} ({codes}); median {statistics.median(self.latencies) * 1000:.0f} ms, "
                f"worst {max(self.latencies) * 1000:.0f} ms")


@dataclass
class Phase:
    name: str
    broken: str = ""
    polls: Traffic = field(default_factory=Traffic)
    reloads: Traffic = field(default_factory=Traffic)
    webhooks: Traffic = field(default_factory=Traffic)
    first_unanswered: float | None = None  # seconds into the window
    answering_at_end: bool = True
    well_down_polls: int = 0
    series: int = 0
    delays: list[float] = field(default_factory=list)
    scrapes: int = 0
    expected_scrapes: int = 0
    agent: Agent | None = None
    hostile_stats: Any = None
    otlp_clients: dict[str, dict[str, int]] = field(default_factory=dict)  # what each OTLP attack got back
    plugins: list[dict[str, Any]] = field(default_factory=list)  # /api/v1/plugins at the end of the window

    def worst(self) -> float:
        return max(self.polls.latencies, default=float("nan"))

    def p99(self) -> float:
        return pct(self.polls.latencies, 99)

    def worst_delay(self) -> float:
        return max(0.0, max(self.delays, default=float("nan")))


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def schedule_delays(arrivals: list[float], t0: float, t1: float, interval: float) -> tuple[list[float], int]:
    """Each gap between consecutive scrapes ending in [t0, t1] minus the interval, and the time since the last
    scrape at t1 minus the interval (an agent that stopped scraping is as late as that); and the scrape count."""
    ts = sorted(arrivals)
    before = [t for t in ts if t < t0]
    inside = [t for t in ts if t0 <= t <= t1]
    prev = before[-1] if before else t0
    delays = []
    for t in inside:
        delays.append(t - prev - interval)
        prev = t
    delays.append(t1 - prev - interval)
    return delays, len(inside)


def well_up(body: bytes) -> float | None:
    """The value of the well-behaved target's `up` series in a /metrics body (None: no such series)."""
    for line in body.splitlines():
        if line.startswith(b"up{") and b'job="well"' in line:
            try:
                return float(line.rsplit(b" ", 1)[1])
            except (IndexError, ValueError):
                return None
    return None


def repeat_until(stop: threading.Event, period: float, first_delay: float, fn: Any) -> threading.Thread:
    """Call fn() every `period` seconds (closed loop: a slow call delays the next) until `stop` is set."""
    def loop() -> None:
        if stop.wait(first_delay):
            return
        while not stop.is_set():
            t = time.monotonic()
            fn()
            stop.wait(max(0.0, period - (time.monotonic() - t)))

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return th


def run_phase(name: str, args: argparse.Namespace, tmp: Path, well: WellTarget, hostile: HostileServer | None,
              peers: list[str], webhook: bytes) -> Phase:
    ph = Phase(name)
    port = free_port()
    cfg = tmp / f"{name}.yaml"
    otlp: dict[str, Any] = {}
    otlp_http, otlp_grpc = free_port(), free_port()
    if "otlp" in peers:
        otlp["receive"] = {"http": {"listen": f"127.0.0.1:{otlp_http}", "read_timeout": 5},
                           "grpc": {"listen": f"127.0.0.1:{otlp_grpc}", "read_timeout": 5}}
    if "otlp-push" in peers:
        otlp["endpoint"] = f"http://127.0.0.1:{args.push_backend.port}/v1/metrics"
    cfg.write_text(agent_config(port, tmp / f"{name}-state", well.port, hostile, peers, args.scrape_interval,
                                args.scrape_timeout, otlp))
    base = f"http://127.0.0.1:{port}"
    agent = ph.agent = Agent([sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg), "--log-level", "warning"],
                             tmp / f"{name}-monbridge.log")
    timeout = args.request_timeout
    what = f", hostile peers: {', '.join(peers)}" if hostile else ", no hostile peer"
    print(f"phase {name}: monbridge on {base}, {args.seconds:.0f} s{what}", flush=True)
    agent.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            if not agent.alive():
                ph.broken = f"the agent {agent.exit_note()} during start; log: {agent.log}"
                return ph
            status, _, _, _ = request(base + "/-/ready", 2)
            if status == 200:
                break
            if time.monotonic() > deadline:
                status, _, _, _ = request(base + "/metrics", timeout)
                if status != 200:
                    ph.broken = f"the agent did not answer /metrics within 60 s of start; log: {agent.log}"
                    return ph
                print(f"  warning: /-/ready still not 200 after 60 s (status {status}); measuring anyway", file=sys.stderr)
                break
            time.sleep(0.2)
        time.sleep(args.scrape_interval)  # one more round, so the window starts on a steady schedule

        stop = threading.Event()
        threads = [repeat_until(stop, 0.1, 0.0, agent.sample_rss)]
        if hostile is not None:
            hostile.control("arm")
            json_headers = {"Content-Type": "application/json"}
            if "reload" in peers:
                threads.append(_traffic_thread(stop, 1 / args.reload_rate, 0.0, ph.reloads,
                                               base + "/-/reload", timeout, b"{}", json_headers))
            if "webhook" in peers:
                threads.append(_traffic_thread(stop, args.webhook_every, 1.0, ph.webhooks,
                                               base + "/api/v1/alerts/alertmanager", timeout, webhook, json_headers))
            if "otlp-push" in peers:
                args.push_backend.kind = "black_hole"
        attacker = None
        if hostile is not None and "otlp" in peers:
            attacker = subprocess.Popen([sys.executable, str(OTLP_ATTACKER), str(otlp_http), str(otlp_grpc),
                                         str(args.seconds), "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
        t0 = time.monotonic()
        t1 = t0 + args.seconds
        while time.monotonic() < t1:
            t = time.monotonic()
            status, took, body, error = request(base + "/metrics", timeout)
            ph.polls.add(status, took, error)
            if status == 200:
                ph.series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
                if well_up(body) != 1:
                    ph.well_down_polls += 1
                ph.answering_at_end = True
            else:
                if ph.first_unanswered is None:
                    ph.first_unanswered = t - t0
                ph.answering_at_end = False
            if not ph.broken and not agent.alive():
                ph.broken = f"the agent {agent.exit_note()} {time.monotonic() - t0:.1f} s into the window; log: {agent.log}"
                ph.answering_at_end = False
                # keep polling until the end: every poll now fails, as a dead agent is unavailable
            time.sleep(max(0.0, args.poll_interval - (time.monotonic() - t)))
        t1 = time.monotonic()
        stop.set()
        if attacker is not None:
            try:
                out, _ = attacker.communicate(timeout=60)
                ph.otlp_clients = json.loads(out.splitlines()[-1]) if out.strip() else {}
            except (subprocess.TimeoutExpired, ValueError):
                attacker.kill()
        if hostile is not None:
            hostile.control("disarm")
            ph.hostile_stats = hostile.control("stats")
        for th in threads:
            th.join(timeout + 1)
        ph.delays, ph.scrapes = schedule_delays(well.arrivals, t0, t1, args.scrape_interval)
        ph.expected_scrapes = int((t1 - t0) // args.scrape_interval)
        if agent.alive():
            agent.read_hwm()
            status, _, body, _ = request(base + "/api/v1/plugins", timeout)
            if status == 200:
                ph.plugins = json.loads(body).get("data", [])
    finally:
        agent.stop()
    return ph


def _traffic_thread(stop: threading.Event, period: float, first_delay: float, traffic: Traffic, url: str,
                    timeout: float, data: bytes, headers: dict[str, str]) -> threading.Thread:
    def once() -> None:
        status, took, _, error = request(url, timeout, data, headers)
        traffic.add(status, took, error)

    return repeat_until(stop, period, first_delay, once)


# ---------------------------------------------------------------------- the report


def report(base: Phase, hos: Phase, args: argparse.Namespace) -> None:
    floor = args.floor_ms / 1000
    assert base.agent is not None and hos.agent is not None
    rows: list[tuple[str, float, float, bool, str]] = [
        # label, baseline, hostile, floored (a time), unit
        ("/metrics worst latency", base.worst(), hos.worst(), True, "ms"),
        ("/metrics p99 latency", base.p99(), hos.p99(), True, "ms"),
        ("well-behaved worst schedule delay", base.worst_delay(), hos.worst_delay(), True, "ms"),
        ("peak RSS", base.agent.peak_rss() / MIB, hos.agent.peak_rss() / MIB, False, "MiB"),
    ]
    print()
    print(f"  {'':<36} {'baseline':>10} {'hostile':>10} {'hostile/baseline':>17} {'goal':>6}")
    for label, b, h, timed, unit in rows:
        scale = 1000 if unit == "ms" else 1
        denom = max(b, floor) if timed else b
        ratio = h / denom if denom else float("inf")
        verdict = "PASS" if ratio <= GOAL else "FAIL"
        floored = "*" if timed and b < floor else " "
        print(f"  {label + ' ' + unit:<36} {b * scale:>10.1f} {h * scale:>10.1f} {ratio:>15.2f}×{floored} {'≤ 2×':>6}  {verdict}")
    print(f"  (* ratio against the {args.floor_ms:g} ms floor, the baseline being under it)")
    print()
    for ph in (base, hos):
        assert ph.agent is not None
        timeouts = ph.polls.statuses.get("timeout", 0)
        others = {k: v for k, v in ph.polls.statuses.items() if k not in ("200", "timeout")}
        print(f"  {ph.name}: /metrics polls {len(ph.polls.latencies)}, timeouts {timeouts}, other failures {sum(others.values())}"
              + (f" ({', '.join(f'{k}: {v}' for k, v in others.items())})" if others else "")
              + f"; series {ph.series}; well-behaved target's up not 1 (0 or missing) in {ph.well_down_polls} answered polls")
        if ph.first_unanswered is not None:
            print(f"    /metrics first unanswered {ph.first_unanswered:.1f} s into the window; "
                  f"{'answering again at the end' if ph.answering_at_end else 'NOT answering at the end'}")
        print(f"    well-behaved target scraped {ph.scrapes} times of {ph.expected_scrapes} expected; "
              f"agent {ph.agent.stop_note}")
        for st in ph.plugins:
            print(f"    plugin {st.get('plugin_id')}: {st.get('state')}, runs {st.get('runs')}, errors {st.get('errors')}, "
                  f"timeouts {st.get('timeouts')}, restarts {st.get('restarts')}, missed ticks {st.get('missed_ticks')}"
                  + (f"; last error: {str(st['last_error'])[:100]}" if st.get("last_error") else ""))
        if ph.broken:
            print(f"    BROKEN: {ph.broken}")
    if "reload" in args.peer_list:
        print(f"  reloads: {hos.reloads.summary()}")
    if "webhook" in args.peer_list:
        print(f"  webhooks ({WEBHOOK_ALERTS} alerts, {args.webhook_size / 1e6:.1f} MB each): {hos.webhooks.summary()}")
    if hos.otlp_clients:
        print("  OTLP clients (what each attack got back): " + "; ".join(
            f"{a} {dict(sorted(got.items()))}" for a, got in hos.otlp_clients.items()))
    st = hos.hostile_stats
    if st and any(p in TARGET_PEERS for p in args.peer_list):
        print("  hostile targets (requests, bytes sent): " + ", ".join(
            f"{p} {st['requests'].get(p, 0)}, {st['sent'].get(p, 0) / 1e6:.1f} MB" for p in args.peer_list if p in TARGET_PEERS))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase, seconds (default 30)")
    ap.add_argument("--scrape-interval", type=float, default=2.0, help="scrape and system collection interval (default 2)")
    ap.add_argument("--scrape-timeout", type=float, default=None, help="scrape timeout (default 0.75 × interval)")
    ap.add_argument("--peers", default="all", help=f"comma-separated hostile peers among {','.join(PEERS)} (default all)")
    ap.add_argument("--poll-interval", type=float, default=0.15, help="seconds between /metrics polls (default 0.15)")
    ap.add_argument("--request-timeout", type=float, default=10.0, help="bound of every request, seconds (default 10)")
    ap.add_argument("--reload-rate", type=float, default=5.0, help="POST /-/reload per second (default 5)")
    ap.add_argument("--webhook-every", type=float, default=10.0, help="seconds between 10,000-alert webhooks (default 10)")
    ap.add_argument("--endless-rate", type=float, default=64.0, help="MiB/s of the endless body, 0 = unthrottled (default 64)")
    ap.add_argument("--floor-ms", type=float, default=50.0, help="least baseline a time ratio divides by (default 50)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temp dir with configs and logs")
    ap.add_argument("--serve-hostile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bomb", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_hostile:
        serve_hostile(args.bomb, args.endless_rate)
        return 0
    peers = list(PEERS) if args.peers == "all" else [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"--peers: unknown {', '.join(unknown)}; expected some of {', '.join(PEERS)} or all")
    if args.scrape_timeout is None:
        args.scrape_timeout = 0.75 * args.scrape_interval
    if not (1 <= args.seconds <= 3600 and 0.2 <= args.scrape_interval <= 60
            and 0 < args.scrape_timeout <= args.scrape_interval and 0.01 <= args.poll_interval <= 10
            and 0.1 <= args.request_timeout <= 120 and 0 < args.reload_rate <= 100 and args.webhook_every > 0
            and args.endless_rate >= 0 and args.floor_ms >= 0):
        ap.error("an argument is out of range (see --help)")
    args.peer_list = peers

    tmp = Path(tempfile.mkdtemp(prefix="monbridge-hostile-"))
    print(f"bench_hostile: 2 phases × {args.seconds:.0f} s, scrape every {args.scrape_interval:g} s "
          f"(timeout {args.scrape_timeout:g} s), /metrics polled every {args.poll_interval:g} s, requests bounded by "
          f"{args.request_timeout:g} s; monbridge from {ROOT} ({sys.executable}); logs in {tmp}", flush=True)
    bomb = gzip_bomb(BOMB_CACHE) if "gzip" in peers else None
    webhook = webhook_payload(WEBHOOK_ALERTS) if "webhook" in peers else b""
    args.webhook_size = len(webhook)
    well = WellTarget()
    if "otlp-push" in peers:
        sys.path.insert(0, str(OTLP_ATTACKER.parent))
        from otlp_attacker import PushBackend

        args.push_backend = PushBackend("ok")
    else:
        args.push_backend = None
    hostile: HostileServer | None = None
    try:
        base = run_phase("baseline", args, tmp, well, None, peers, webhook)
        hostile = HostileServer(bomb, args.endless_rate, tmp / "hostile-server.log")
        hos = run_phase("hostile", args, tmp, well, hostile, peers, webhook)
    finally:
        well.stop()
        if args.push_backend is not None:
            args.push_backend.stop()
        if hostile is not None:
            hostile.stop()
    unmeasured = [ph for ph in (base, hos) if not ph.polls.latencies]
    for ph in unmeasured:
        print(f"FAIL: the {ph.name} phase could not be measured: {ph.broken}", file=sys.stderr)
    if base in unmeasured:
        print(f"  logs kept in {tmp}")
        return 1
    report(base, hos, args)
    if args.keep_logs or base.broken or hos.broken:
        print(f"  logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if unmeasured else 0


if __name__ == "__main__":
    sys.exit(main())
