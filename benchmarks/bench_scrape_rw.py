#!/usr/bin/env python3
"""Scrape → remote write, end to end: CPU seconds per million samples, monbridge vs Prometheus
2.42 in agent mode, scraping the same targets and writing to the same receiver, in the same run.

    python benchmarks/bench_scrape_rw.py [--seconds 60] [--targets 4] [--series 5000] [--interval 1]

Starts, on loopback ports picked free:
  * a target server (a child Python process, not measured) serving --targets targets of
    --series series each (counters, gauges and a histogram family; values change every --interval);
  * a receiver: Prometheus 2.42 with ``--web.enable-remote-write-receiver``;
  * Prometheus 2.42 ``--enable-feature=agent`` scraping every target every --interval seconds
    and remote-writing to the receiver (target label ``agent="prometheus"``);
  * monbridge with the ``monitoring.integration.prometheus`` plugin doing the same (target
    label ``agent="monbridge"``, an on-disk queue as Prometheus' WAL is on disk). It runs from
    this checkout (``PYTHONPATH``, with the C extensions built in place), whatever checkout the
    interpreter's environment has installed; the script says so, and stops when ``bridge``
    would be imported from elsewhere.
After a warm-up, each sender's CPU seconds (user + system, /proc) and samples sent (its own
counters: ``prometheus_remote_storage_samples_total`` and
``monbridge_remote_write_samples_sent_total``) are read at the start and end of a window of
--seconds; the receiver is then asked how many of each one's target samples arrived in the
window, so a sender that drops data cannot look cheap. Everything stops (SIGTERM) at the end.

Goal (from the issue): monbridge ≤ 3× Prometheus' CPU seconds per million samples.
Exit status 0 when both delivered (the ratio is reported, met or not), 1 otherwise, 2 when
Prometheus is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CHILD_ENV, TARGET_SERVER, counter, free_port, get, monbridge_here, wait_http  # noqa: E402
from _common import cpu as cpu_seconds

GOAL = 3.0


def query(url: str, promql: str, t: float) -> float:
    q = urllib.parse.urlencode({"query": promql, "time": f"{t:.3f}"})
    data = json.loads(get(f"{url}/api/v1/query?{q}", 60.0))["data"]["result"]
    return float(data[0]["value"][1]) if data else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60)")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before the window (default 10)")
    ap.add_argument("--targets", type=int, default=4, help="targets (default 4)")
    ap.add_argument("--series", type=int, default=5000, help="series per target (default 5000)")
    ap.add_argument("--interval", type=float, default=1.0, help="scrape interval in seconds (default 1)")
    args = ap.parse_args()
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.access(prometheus, os.X_OK):
        print("bench: prometheus not found (apt-get install prometheus)", file=sys.stderr)
        return 2
    if not monbridge_here():
        return 1
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-scrape-rw-"))

    def start(argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(tmp / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp, env=CHILD_ENV)
        procs.append(p)
        return p

    try:
        target_ports = [free_port() for _ in range(args.targets)]
        for port in target_ports:
            start([sys.executable, "-c", TARGET_SERVER, str(port), str(args.series), str(args.interval)], f"target-{port}")
        recv_port, agent_port, mb_port = free_port(), free_port(), free_port()
        (tmp / "recv").mkdir()
        (tmp / "recv.yml").write_text("global: {}\n")
        start([prometheus, f"--config.file={tmp / 'recv.yml'}", f"--storage.tsdb.path={tmp / 'recv'}",
               f"--web.listen-address=127.0.0.1:{recv_port}", "--web.enable-remote-write-receiver"], "receiver")
        recv = f"http://127.0.0.1:{recv_port}"
        for port in target_ports:
            wait_http(f"http://127.0.0.1:{port}/metrics")
        wait_http(f"{recv}/-/ready")
        iv = f"{args.interval:g}s"
        targets = [f"127.0.0.1:{p}" for p in target_ports]
        (tmp / "agent.yml").write_text(json.dumps({
            "global": {"scrape_interval": iv, "scrape_timeout": iv},
            "scrape_configs": [{"job_name": "bench",
                                "static_configs": [{"targets": targets, "labels": {"agent": "prometheus"}}]}],
            "remote_write": [{"url": f"{recv}/api/v1/write"}],
        }))
        agent = start([prometheus, "--enable-feature=agent", f"--config.file={tmp / 'agent.yml'}",
                       f"--storage.agent.path={tmp / 'agent'}", f"--web.listen-address=127.0.0.1:{agent_port}"], "agent")
        (tmp / "monbridge.yaml").write_text(json.dumps({
            "server": {"listen": f"127.0.0.1:{mb_port}"},
            "plugins": [{"plugin_id": "monitoring.integration.prometheus", "config": {
                "scrape": {"interval": args.interval, "timeout": args.interval,
                           "targets": [{"job": "bench", "url": f"http://{t}/metrics", "labels": {"agent": "monbridge"}}
                                       for t in targets]},
                "remote_write": [{"url": f"{recv}/api/v1/write", "queue": {"path": str(tmp / "queue")}}]}}],
        }))
        mb = start([sys.executable, "-m", "bridge.cli", "run", "--config", str(tmp / "monbridge.yaml"),
                    "--log-level", "warning"], "monbridge")
        wait_http(f"http://127.0.0.1:{agent_port}/-/ready")
        wait_http(f"http://127.0.0.1:{mb_port}/-/ready")
        print(f"bench: {args.targets} targets × {args.series} series every {iv}; warm-up {args.warmup:g}s, "
              f"window {args.seconds:g}s (logs in {tmp})", file=sys.stderr)
        time.sleep(args.warmup)
        senders = {
            "prometheus-agent": (agent, f"http://127.0.0.1:{agent_port}/metrics", "prometheus_remote_storage_samples_total",
                                 'agent="prometheus"'),
            "monbridge": (mb, f"http://127.0.0.1:{mb_port}/metrics", "monbridge_remote_write_samples_sent_total",
                          'agent="monbridge"'),
        }
        t0 = time.time()
        before = {k: (cpu_seconds(p.pid), counter(u, c)) for k, (p, u, c, _) in senders.items()}
        time.sleep(args.seconds)
        t1 = time.time()
        after = {k: (cpu_seconds(p.pid), counter(u, c)) for k, (p, u, c, _) in senders.items()}
        time.sleep(3 * args.interval + 2)  # let the last batches land
        rows = {}
        for k, (p, _, _, sel) in senders.items():
            cpu = after[k][0] - before[k][0]
            sent = after[k][1] - before[k][1]
            window = f"{int((t1 - t0) * 1000)}ms"
            # Per family: count_over_time drops the name, and series of different families could collide.
            arrived = sum(query(recv, f"sum(count_over_time({name}{{{sel}}}[{window}]))", t1) for name in (
                "bench_requests_total", "bench_inflight", "bench_latency_seconds_bucket", "bench_latency_seconds_sum",
                "bench_latency_seconds_count"))
            rows[k] = (cpu, sent, arrived, cpu / sent * 1e6 if sent else float("inf"))
            if p.poll() is not None:
                print(f"bench: {k} exited early ({p.returncode}); see {tmp}", file=sys.stderr)
                return 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"{'sender':<18} {'CPU s':>8} {'samples sent':>14} {'arrived (window)':>17} {'CPU s / M samples':>18}")
    for k, (cpu, sent, arrived, per_m) in rows.items():
        print(f"{k:<18} {cpu:8.2f} {sent:14,.0f} {arrived:17,.0f} {per_m:18.2f}")
    ratio = rows["monbridge"][3] / rows["prometheus-agent"][3]
    print(f"\nmonbridge / Prometheus agent, CPU per million samples: {ratio:.2f}× (goal ≤ {GOAL:g}×: "
          f"{'met' if ratio <= GOAL else 'NOT met'})")
    ok = all(r[1] > 0 and r[2] > 0 for r in rows.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
