#!/usr/bin/env python3
"""Received OTLP points per second over OTLP/HTTP, against a plain opentelemetry-proto decode loop.

    python benchmarks/bench_otlp_receive.py [--series 50000] [--points-per-request 5000] [--rounds 5] [--gzip]

The same requests are used both ways, in the same run:

(a) monbridge: ``monbridge run`` (a subprocess, the OTLP integration's ``receive.http`` on a
    loopback port) takes every request by HTTP POST ``/v1/metrics`` (protobuf), one after the
    other on a keep-alive connection: receive, decode in a worker thread, convert, merge into the
    pipeline. Timed: wall clock of all POSTs, and the server process' CPU time (from
    ``/proc/<pid>/stat``), so the client's own work is not counted.
(b) the baseline: ``ExportMetricsServiceRequest.FromString(body)`` then a walk over every data
    point reading its value and attributes, in this process: the least any receiver written
    on opentelemetry-proto in Python does per request (no HTTP, no pipeline).

The data: ``--series`` series of one resource (service.name, service.instance.id) and scope, in
equal parts cumulative counters, gauges and explicit-bucket histograms (10 buckets), 3 attributes
each, sent as ``--rounds`` rounds of every series (new values each round), ``--points-per-request``
points a request. The first round creates the series (cold); the figure is the later rounds
(steady), with the cold one shown too.

Memory: the server's RSS after the first round minus before it, per series (every byte the
received series cost monbridge: the pipeline's series, the render cache left cold).

Before any figure is printed the last round is checked: ``/metrics`` must expose every series
with the value of that round; any difference exits 1.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000_000
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


def build_requests(series: int, per_request: int, rnd: int) -> list[bytes]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    def attrs(i: int) -> list[KeyValue]:
        return [KeyValue(key="host", value=AnyValue(string_value=f"host-{i % 100}")),
                KeyValue(key="path", value=AnyValue(string_value=f"/api/v1/item/{i}")),
                KeyValue(key="code", value=AnyValue(int_value=200 + i % 5))]

    now = T0 + (rnd + 1) * 10**10
    out = []
    for first in range(0, series, per_request):
        gauges, counters, hists = [], [], []
        for i in range(first, min(first + per_request, series)):
            kind = i % 3
            if kind == 0:
                counters.append(m.NumberDataPoint(as_int=i + rnd * 7, start_time_unix_nano=T0, time_unix_nano=now,
                                                   attributes=attrs(i)))
            elif kind == 1:
                gauges.append(m.NumberDataPoint(as_double=i * 0.5 + rnd, time_unix_nano=now, attributes=attrs(i)))
            else:
                counts = [(i + rnd + b) % 7 for b in range(len(BOUNDS) + 1)]
                hists.append(m.HistogramDataPoint(start_time_unix_nano=T0, time_unix_nano=now, count=sum(counts),
                                                  sum=float(i + rnd), bucket_counts=counts, explicit_bounds=BOUNDS,
                                                  attributes=attrs(i)))
        metrics = [m.Metric(name="bench.requests", unit="{request}", sum=m.Sum(
                       is_monotonic=True, aggregation_temporality=2, data_points=counters)),
                   m.Metric(name="bench.queue", unit="{item}", gauge=m.Gauge(data_points=gauges)),
                   m.Metric(name="bench.latency", unit="s", histogram=m.Histogram(
                       aggregation_temporality=2, data_points=hists))]
        req = ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(
            resource={"attributes": [KeyValue(key="service.name", value=AnyValue(string_value="bench")),
                                     KeyValue(key="service.instance.id", value=AnyValue(string_value="b-1"))]},
            scope_metrics=[m.ScopeMetrics(scope={"name": "bench"}, metrics=metrics)])])
        out.append(req.SerializeToString())
    return out


def baseline(bodies: list[bytes]) -> tuple[float, int]:
    """CPU seconds to decode every body and walk every point; points walked."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    n = 0
    t0 = time.process_time()
    for body in bodies:
        req = ExportMetricsServiceRequest.FromString(body)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    data = getattr(metric, metric.WhichOneof("data"))
                    for p in data.data_points:
                        attrs = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in p.attributes}
                        if metric.HasField("histogram"):
                            _ = (tuple(p.bucket_counts), p.sum, p.count, attrs)
                        else:
                            _ = (getattr(p, p.WhichOneof("value")), attrs)
                        n += 1
    return time.process_time() - t0, n


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"monbridge exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/-/ready")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("monbridge was not ready within 30 s")


def post_all(port: int, bodies: list[bytes], gz: bool) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/x-protobuf"}
    if gz:
        headers["Content-Encoding"] = "gzip"
    t0 = time.perf_counter()
    for body in bodies:
        conn.request("POST", "/v1/metrics", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200 or len(data) > 0:
            raise SystemExit(f"monbridge answered HTTP {resp.status}: {data[:300]!r}")
    wall = time.perf_counter() - t0
    conn.close()
    return wall


def check(port: int, series: int, rnd: int) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    got: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in ("bench_requests_total", "bench_queue", "bench_latency_seconds_count"):
                got[(s.name, s.labels["path"])] = s.value
    want = {}
    for i in range(series):
        if i % 3 == 0:
            want[("bench_requests_total", f"/api/v1/item/{i}")] = float(i + rnd * 7)
        elif i % 3 == 1:
            want[("bench_queue", f"/api/v1/item/{i}")] = i * 0.5 + rnd
        else:
            want[("bench_latency_seconds_count", f"/api/v1/item/{i}")] = float(
                sum((i + rnd + b) % 7 for b in range(len(BOUNDS) + 1)))
    if got != want:
        missing = len(set(want) - set(got))
        wrong = sum(1 for k in want if k in got and got[k] != want[k])
        raise SystemExit(f"/metrics differs from what was sent: {missing} series missing, {wrong} values wrong")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=50_000)
    ap.add_argument("--points-per-request", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gzip", action="store_true", help="send the bodies gzip-compressed")
    args = ap.parse_args()
    rounds = [build_requests(args.series, args.points_per_request, r) for r in range(args.rounds)]
    points_per_round = args.series
    import bridge

    print(f"bench_otlp_receive: {args.series} series, {len(rounds[0])} requests a round of "
          f"{args.points_per_request} points, {args.rounds} rounds, {'gzip' if args.gzip else 'uncompressed'}; "
          f"bridge from {Path(bridge.__file__).parent}")

    with tempfile.TemporaryDirectory() as tmp:
        http_port, port = free_port(), free_port()
        config = {"server": {"listen": f"127.0.0.1:{port}"},
                  "pipeline": {"cardinality_limit": args.series + 10},
                  "plugins": [{"plugin_id": "monitoring.integration.otlp", "config": {
                      "interval": 60, "receive": {"http": {"listen": f"127.0.0.1:{http_port}",
                                                           "max_request_bytes": 64 << 20,
                                                           "max_decompressed_bytes": 64 << 20}}}}]}
        cfg_path = Path(tmp) / "monbridge.yaml"
        cfg_path.write_text(json.dumps(config))
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": ""}
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg_path),
                                 "--log-level", "warning"], cwd=ROOT, env=env)
        try:
            wait_ready(port, proc)
            bodies = [[gzip.compress(b, 1) for b in r] for r in rounds] if args.gzip else rounds
            rss0 = proc_rss(proc.pid)
            cpu0 = proc_cpu(proc.pid)
            cold_wall = post_all(http_port, bodies[0], args.gzip)
            cold_cpu = proc_cpu(proc.pid) - cpu0
            rss1 = proc_rss(proc.pid)
            steady_wall = steady_cpu = 0.0
            for r in bodies[1:]:
                cpu0 = proc_cpu(proc.pid)
                steady_wall += post_all(http_port, r, args.gzip)
                steady_cpu += proc_cpu(proc.pid) - cpu0
            check(port, args.series, args.rounds - 1)
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    base_cpu, base_points = 0.0, 0
    for r in rounds[1:]:
        c, n = baseline(r)
        base_cpu += c
        base_points += n
    steady_points = points_per_round * (args.rounds - 1)
    assert base_points == steady_points, (base_points, steady_points)
    print(f"  monbridge cold   : {points_per_round / cold_wall:10,.0f} points/s wall, "
          f"{cold_cpu / points_per_round * 1e6:6.2f} µs CPU/point")
    print(f"  monbridge steady : {steady_points / steady_wall:10,.0f} points/s wall, "
          f"{steady_cpu / steady_points * 1e6:6.2f} µs CPU/point   (headline)")
    print(f"  decode loop      : {base_points / base_cpu:10,.0f} points/s CPU, "
          f"{base_cpu / base_points * 1e6:6.2f} µs CPU/point")
    print(f"  monbridge CPU per point / decode loop's: {steady_cpu / steady_points / (base_cpu / base_points):.2f}×")
    print(f"  memory: {(rss1 - rss0) / args.series:,.0f} bytes RSS per received series "
          f"({(rss1 - rss0) / 2**20:.1f} MiB for {args.series})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
