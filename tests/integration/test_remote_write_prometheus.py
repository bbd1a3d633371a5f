"""Remote write into the real Prometheus 2.42 (``--web.enable-remote-write-receiver``): every sample
read back exactly through the HTTP API, a staleness marker taking effect, an outage of the backend,
and a writer process killed with SIGKILL mid-stream, then restarted on its disk queue."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from integrations.prometheus.remote_write import STALE_NAN, RemoteWriteConfig, RemoteWriter, encode_labels

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
RECEIVER_ARGS = ["--web.enable-remote-write-receiver"]
PROM_CONFIG = {"global": {"scrape_interval": "15s", "evaluation_interval": "15s"}, "scrape_configs": []}


def start_prometheus(prometheus_server, port: int | None = None):
    return prometheus_server(config=PROM_CONFIG, extra_args=RECEIVER_ARGS, port=port)


def raw_samples(prom, selector: str, at_ms: int) -> dict[tuple[tuple[str, str], ...], list[tuple[int, str]]]:
    """Every sample of ``selector`` in the 15 minutes up to ``at_ms``: {labels: [(timestamp ms, value text)]}."""
    query = urllib.parse.urlencode({"query": f"{selector}[15m]", "time": f"{at_ms / 1000:.3f}"})
    status, _, body = prom.get("/api/v1/query?" + query)
    payload = json.loads(body)
    assert status == 200 and payload["status"] == "success", payload
    assert payload["data"]["resultType"] == "matrix"
    return {tuple(sorted(r["metric"].items())): [(round(float(t) * 1000), v) for t, v in r["values"]]
            for r in payload["data"]["result"]}


def instant(prom, selector: str, at_ms: int) -> list[dict]:
    query = urllib.parse.urlencode({"query": selector, "time": f"{at_ms / 1000:.3f}"})
    status, _, body = prom.get("/api/v1/query?" + query)
    payload = json.loads(body)
    assert status == 200 and payload["status"] == "success", payload
    return payload["data"]["result"]


def writer_for(prom, path: Path | None = None) -> RemoteWriter:
    queue = {"shards": 3, "max_samples_per_send": 7, "batch_send_deadline": 0.05, "min_backoff": 0.01, "max_backoff": 0.2}
    if path is not None:
        queue["path"] = str(path)
    return RemoteWriter(RemoteWriteConfig.model_validate({"url": f"{prom.url}/api/v1/write", "name": "it", "queue": queue}))


def expected(series: dict[tuple, list[tuple[int, float]]]) -> dict[tuple, list[tuple[int, float]]]:
    return {k: sorted(v) for k, v in series.items()}


def as_floats(found: dict[tuple, list[tuple[int, str]]]) -> dict[tuple, list[tuple[int, float]]]:
    return {k: [(t, float(v)) for t, v in samples] for k, samples in found.items()}


async def test_samples_round_trip_and_survive_an_outage(prometheus_server, tmp_path):
    prom = start_prometheus(prometheus_server)
    port = prom.port
    now_ms = int(time.time() * 1000)
    base = now_ms - 120_000
    w = writer_for(prom, tmp_path / "queue")
    await w.start()

    # Several series, several timestamps each, values that must come back bit-exact in decimal.
    sent: dict[tuple, list[tuple[int, float]]] = {}
    batch = []
    for s in range(5):
        labels = [("__name__", "rw_it"), ("job", "remote-write"), ("series", f"s{s}")]
        lab = encode_labels(labels)
        for i in range(8):
            value = (s * 1000 + i) * 1.25 + 0.1 if i != 3 else -1e-300 * (s + 1)
            ts = base + i * 1000 + s
            batch.append((lab, value, ts))
            sent.setdefault(tuple(sorted(labels)), []).append((ts, value))
    # A series ended by a staleness marker.
    stale_lab = encode_labels([("__name__", "rw_it_stale")])
    batch += [(stale_lab, 1.0, base), (stale_lab, 2.0, base + 1000), (stale_lab, STALE_NAN, base + 2000)]
    assert w.append(batch) == len(batch)
    assert await w.flush(15)

    assert as_floats(raw_samples(prom, "rw_it", now_ms)) == expected(sent)
    # The marker is not a sample to PromQL, but it ends the series: 1 s after it nothing is
    # returned, where the 5-minute lookback would otherwise still give 2.
    assert as_floats(raw_samples(prom, "rw_it_stale", now_ms)) == {(("__name__", "rw_it_stale"),): [(base, 1.0),
                                                                                                 (base + 1000, 2.0)]}
    assert [r["value"][1] for r in instant(prom, "rw_it_stale", base + 1500)] == ["2"]
    assert instant(prom, "rw_it_stale", base + 3000) == []

    # Outage: the backend goes away while samples keep coming; a new Prometheus (fresh TSDB) on the
    # same port must receive every sample appended during the outage. Nothing of it can have reached
    # the first one: it was appended after that one had stopped.
    prom.stop()
    during: dict[tuple, list[tuple[int, float]]] = {}
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 2.0:
        chunk = []
        for s in range(4):
            labels = (("__name__", "rw_outage"), ("series", f"o{s}"))
            ts = base + 20_000 + i * 10
            chunk.append((encode_labels(labels), float(i) + s / 8, ts))
            during.setdefault(labels, []).append((ts, float(i) + s / 8))
        assert w.append(chunk) == 4
        i += 1
        await asyncio.sleep(0.01)
    assert not await w.flush(0.2)
    prom2 = start_prometheus(prometheus_server, port=port)
    assert await w.flush(20)
    assert as_floats(raw_samples(prom2, "rw_outage", now_ms)) == expected(during)
    metrics = {(m.name, m.attributes.get("status") or m.attributes.get("reason")): m.value for m in w.self_metrics()}
    await w.stop(5)
    assert metrics[("monbridge.remote_write.requests", "connection_error")] > 0
    assert metrics[("monbridge.remote_write.samples.sent", None)] == len(batch) + 4 * i
    assert metrics[("monbridge.remote_write.queue.samples", None)] == 0
    assert not [k for k in metrics if k[0] == "monbridge.remote_write.samples.dropped"]


class _Lines:
    """The child's stdout lines, read in a thread (so the test can wait with a timeout)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def join(self) -> None:
        self._thread.join(10)


class SlowProxy:
    """Forwards POSTs to ``target`` after ``delay`` seconds: a slow backend, so a backlog builds up."""

    def __init__(self, target: str, delay: float) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(outer.delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(outer.target + self.path, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        status, answer = response.status, response.read()
                except urllib.error.HTTPError as e:
                    status, answer = e.code, e.read()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.target = target
        self.delay = delay
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_proxy():
    proxies: list[SlowProxy] = []

    def start(target: str, delay: float) -> SlowProxy:
        proxies.append(SlowProxy(target, delay))
        return proxies[-1]

    yield start
    for p in proxies:
        p.close()


def test_kill_9_mid_stream_loses_no_accepted_sample(prometheus_server, slow_proxy, tmp_path):
    """The child appends while its senders push through a slow backend (a backlog on disk, requests
    in flight, acks being written); SIGKILL; restarted on the same queue with the backend at full
    speed, it delivers every sample it had reported as accepted."""
    prom = start_prometheus(prometheus_server)
    url = f"{slow_proxy(prom.url, 0.05).url}/api/v1/write"
    queue = tmp_path / "queue"
    now_ms = int(time.time() * 1000)
    base = now_ms - 60_000
    child = subprocess.Popen([sys.executable, str(HERE / "remote_write_child.py"), "append", url, str(queue), str(base)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    out = _Lines(child.stdout)
    deadline = time.monotonic() + 20
    while len(out.lines) < 1500 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    out.join()
    stderr = child.stderr.read()
    reported = [line.split() for line in out.lines if line.endswith("\n")]
    assert len(reported) >= 1500, f"the child reported {len(reported)} appends; stderr:\n{stderr}"
    last = int(reported[-1][0])
    assert [int(r[0]) for r in reported] == list(range(1, last + 1))
    # Sends were in flight and a backlog was queued when the child was killed.
    assert int(reported[-1][1]) > 1000
    before = raw_samples(prom, "rw_kill_test", now_ms)
    assert 0 < sum(map(len, before.values())) < 10 * last

    drain = subprocess.run([sys.executable, str(HERE / "remote_write_child.py"), "drain", f"{prom.url}/api/v1/write",
                            str(queue)],
                           capture_output=True, text=True, cwd=REPO_ROOT, timeout=45)
    assert drain.returncode == 0 and drain.stdout.startswith("delivered"), drain.stdout + drain.stderr

    found = raw_samples(prom, "rw_kill_test", now_ms)
    assert len(found) == 10
    for labels, samples in found.items():
        stamps = {t - base: v for t, v in samples}
        missing = [n for n in range(1, last + 1) if n not in stamps]
        assert not missing, f"{labels}: {len(missing)} accepted samples missing, first {missing[:5]}"
        assert all(float(v) == n and not math.isnan(float(v)) for n, v in stamps.items())
