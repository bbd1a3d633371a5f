#!/usr/bin/env python3
"""The dashboard's chart data against Prometheus 2.42's query_range, over the same series, in the
same run: latency of the answer and memory per sample.

    python benchmarks/bench_dashboard.py [--series 1000] [--hours 1] [--step 15] [--repeat 20]

Builds --series gauges ``bench_value{job="bench",series="<i>",zone="<i % 8>"}`` with one sample every
--step seconds over the last --hours (1,000 × 240 = 240,000 samples with the defaults; the values
a random walk rounded to 0.01, as measured data looks), then:

  * **monbridge**: a child process runs a real ``Runtime`` (no plugins; dashboard history of
    --hours at --step) and writes the samples into its history as the sampler would, row by row;
  * **Prometheus 2.42** with ``--web.enable-remote-write-receiver`` receives the same samples by
    remote write (one request a timestamp, in time order, as an agent would send them), into its head.

Each side's resident memory (``/proc/<pid>/status`` VmRSS) is read before and after its samples
arrive; the growth divided by the samples is its memory per sample (Prometheus also reports its Go
heap in use, ``go_memstats_heap_inuse_bytes``; monbridge its counted history bytes). Then the same
window is asked --repeat times of each, alternately, over HTTP from this process:
``GET /api/v1/components/monitoring.dashboard.timeseries/data?metric=bench_value&rate=false&from&to&step``
and ``GET /api/v1/query_range?query=bench_value&start&end&step``; both answers are checked to hold
every series with every point and the same values. Median and p90 wall time of a whole answer
(request to last byte, JSON parsed by neither) are reported, for monbridge's two encodings of
the values: JSON numbers (the default) and ``encoding=f64`` (base64 doubles, what the web UI asks for).

Goals (from the issue): latency ≤ Prometheus'; memory per sample ≤ 2× Prometheus' head.
Exit status 0 when both answered completely (the ratios are reported, met or not), 1 otherwise,
2 when Prometheus is not installed. About a minute on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MONBRIDGE_CHILD = r'''
import asyncio, json, sys
from bridge.api import MetricKind
from bridge.config import parse_config
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime

port, series, start, rows, step = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
values = json.loads(sys.stdin.readline())

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

async def main():
    reg = PluginRegistry().discover()
    text = f"""
server: {{listen: "127.0.0.1:{port}"}}
dashboard: {{history: {{window: {rows * step}, resolution: {step}, max_bytes: {1 << 30}}}}}
plugins: []
"""
    rt = Runtime(parse_config(text, "bench.yaml", reg, env={}), reg)
    await rt.start()
    rt.dashboard._sampler.cancel()  # the benchmark writes the rows
    h = rt.dashboard.ctx.history
    keys = [("bench_value", (("job", "bench"), ("series", str(i)), ("zone", str(i % 8)))) for i in range(series)]
    before = rss()
    for r in range(rows):
        h.write_row([(k, MetricKind.GAUGE, values[i][r]) for i, k in enumerate(keys)], start + r * step)
    after = rss()
    del values[:]
    print(json.dumps({"rss_before": before, "rss_after": after, "history_bytes": h.bytes,
                      "series": h.series_count}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60) -> bytes:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return bytes(r.read())


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        try:
            fetch(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} not ready at {url} within {timeout}s")


def prom_metric(base: str, name: str) -> float:
    for line in fetch(base + "/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} not in Prometheus' /metrics")


def walk(series: int, rows: int, seed: int = 1) -> list[list[float]]:
    rnd = random.Random(seed)
    out = []
    for i in range(series):
        v = 100.0 + i
        vals = []
        for _ in range(rows):
            v = round(v + rnd.choice((-0.5, -0.25, 0.0, 0.0, 0.25, 0.5)), 2)
            vals.append(v)
        out.append(vals)
    return out


def remote_write(base: str, values: list[list[float]], start: float, step: float) -> None:
    import cramjam

    from integrations.prometheus.remote_write import encode_named_labels, encode_sample

    labels = [encode_named_labels("bench_value", (("job", "bench"), ("series", str(i)), ("zone", str(i % 8))))
              for i in range(len(values))]
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
               "X-Prometheus-Remote-Write-Version": "0.1.0"}
    for r in range(len(values[0])):
        ts = int((start + r * step) * 1000)
        body = b"".join(encode_sample(lab, vals[r], ts) for lab, vals in zip(labels, values, strict=True))
        fetch(base + "/api/v1/write", bytes(cramjam.snappy.compress_raw(body)), headers)


def timed(url: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    body = fetch(url)
    return time.perf_counter() - t, body


def check_monbridge(body: bytes, series: int, points: int, values: list[list[float]]) -> None:
    data = json.loads(body)["data"]
    if data["encoding"] == "f64":
        for s in data["series"]:
            s["values"] = list(struct.unpack(f"<{points}d", base64.b64decode(s["values"])))
    assert len(data["series"]) == series, len(data["series"])
    assert len(data["timestamps"]) == points, (len(data["timestamps"]), points)
    got = {s["labels"]["series"]: s["values"] for s in data["series"]}
    for i in (0, series // 2, series - 1):
        assert got[str(i)] == values[i][-points:], f"monbridge: series {i} differs"


def check_prometheus(body: bytes, series: int, points: int, values: list[list[float]]) -> None:
    result = json.loads(body)["data"]["result"]
    assert len(result) == series, len(result)
    got = {r["metric"]["series"]: [float(v) for _, v in r["values"]] for r in result}
    assert all(len(v) == points for v in got.values()), "Prometheus: a series misses points"
    for i in (0, series // 2, series - 1):
        assert got[str(i)] == values[i][-points:], f"Prometheus: series {i} differs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--step", type=float, default=15.0)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("prometheus not found (apt-get install prometheus)", file=sys.stderr)
        return 2
    rows = int(args.hours * 3600 / args.step)
    # Aligned to the step, ending a little before now (Prometheus refuses samples from the future).
    end = (time.time() // args.step) * args.step - args.step
    start = end - (rows - 1) * args.step
    values = walk(args.series, rows)
    samples = args.series * rows
    print(f"{args.series} series × {rows} samples ({samples:,} samples) every {args.step:g}s", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pport = free_port()
        (work / "prometheus.yml").write_text("global: {scrape_interval: 1h}\n")
        prom = subprocess.Popen([prometheus, f"--config.file={work / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{pport}",
                                 "--web.enable-remote-write-receiver", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "wb"))
        procs.append(prom)
        pbase = f"http://127.0.0.1:{pport}"
        wait_ready(pbase + "/-/ready", prom, "prometheus")

        mport = free_port()
        mb = subprocess.Popen([sys.executable, "-c", MONBRIDGE_CHILD, str(mport), str(args.series), repr(start),
                               str(rows), repr(args.step)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        procs.append(mb)
        assert mb.stdin is not None and mb.stdout is not None
        mb.stdin.write(json.dumps(values).encode() + b"\n")
        mb.stdin.flush()
        mb_mem = json.loads(mb.stdout.readline())
        mbase = f"http://127.0.0.1:{mport}"
        wait_ready(mbase + "/-/healthy", mb, "monbridge")

        time.sleep(1)
        p_rss0, p_heap0 = rss_of(prom.pid), prom_metric(pbase, "go_memstats_heap_inuse_bytes")
        t = time.perf_counter()
        remote_write(pbase, values, start, args.step)
        print(f"remote write to Prometheus: {time.perf_counter() - t:.1f}s", flush=True)
        time.sleep(2)
        p_rss1, p_heap1 = rss_of(prom.pid), prom_metric(pbase, "go_memstats_heap_inuse_bytes")
        head = prom_metric(pbase, "prometheus_tsdb_head_series")
        assert head >= args.series, f"Prometheus' head has {head} series"

        q = {"from": repr(start), "to": repr(end), "step": repr(args.step)}
        murl = (mbase + "/api/v1/components/monitoring.dashboard.timeseries/data?"
                + urllib.parse.urlencode({"metric": "bench_value", "rate": "false", **q}))
        purl = pbase + "/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": "bench_value", "start": q["from"], "end": q["to"], "step": q["step"]})
        furl = murl + "&encoding=f64"
        _, mbody = timed(murl)
        _, fbody = timed(furl)
        _, pbody = timed(purl)
        check_monbridge(mbody, args.series, rows, values)
        check_monbridge(fbody, args.series, rows, values)
        check_prometheus(pbody, args.series, rows, values)
        mt, ft, pt = [], [], []
        for _ in range(args.repeat):
            mt.append(timed(murl)[0])
            ft.append(timed(furl)[0])
            pt.append(timed(purl)[0])
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    def p90(xs: list[float]) -> float:
        return sorted(xs)[int(0.9 * (len(xs) - 1))]

    m_rss = (mb_mem["rss_after"] - mb_mem["rss_before"]) / samples
    p_rss = (p_rss1 - p_rss0) / samples
    p_heap = (p_heap1 - p_heap0) / samples
    m_hist = mb_mem["history_bytes"] / samples
    print()
    print(f"{'':30} {'monbridge':>12} {'Prometheus 2.42':>16} {'ratio':>7}")
    for what, xs, body in (("json", mt, mbody), ("f64 (the web UI's)", ft, fbody)):
        print(f"{'answer, ' + what:30}")
        print(f"{'  median (ms)':30} {statistics.median(xs) * 1e3:12.1f} {statistics.median(pt) * 1e3:16.1f} "
              f"{statistics.median(xs) / statistics.median(pt):7.2f}")
        print(f"{'  p90 (ms)':30} {p90(xs) * 1e3:12.1f} {p90(pt) * 1e3:16.1f} {p90(xs) / p90(pt):7.2f}")
        print(f"{'  size (KB)':30} {len(body) / 1024:12.0f} {len(pbody) / 1024:16.0f}")
    print(f"{'RSS growth / sample (B)':30} {m_rss:12.2f} {p_rss:16.2f} {m_rss / p_rss if p_rss > 0 else float('inf'):7.2f}")
    print(f"{'counted / Go heap / sample (B)':30} {m_hist:12.2f} {p_heap:16.2f} "
          f"{m_hist / p_heap if p_heap > 0 else float('inf'):7.2f}")
    print()
    print(f"goal latency ≤ Prometheus': json {'met' if statistics.median(mt) <= statistics.median(pt) else 'not met'}, "
          f"f64 {'met' if statistics.median(ft) <= statistics.median(pt) else 'not met'}; "
          f"goal memory per sample ≤ 2× Prometheus' head (RSS): {'met' if m_rss <= 2 * p_rss else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
