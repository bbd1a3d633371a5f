#!/usr/bin/env python3
"""Memory and CPU of `monbridge run` next to prometheus-node-exporter, both scraped alike.

    python benchmarks/bench_footprint.py [--seconds 120] [--interval 15]

Starts, on loopback ports picked free:
  * monbridge: ``python -m bridge.cli run --config <tmp config> --listen 127.0.0.1:PORT``, the
    embedded default (monitoring.metrics.system) with collection_interval 15 written out;
  * ``/usr/bin/prometheus-node-exporter --web.listen-address=127.0.0.1:PORT2`` with its
    default collectors (Debian package prometheus-node-exporter; exit 2 when it is missing).
Both /metrics are scraped every --interval seconds (first scrape right after both answer),
the RSS of each process tree is sampled every second (psutil), and the CPU seconds (user +
system, the process and its children) are read at the end, in total and since the first
scrape. Both are then stopped (SIGTERM, SIGKILL after 10 s). Loopback only, bounded by
--seconds, stops by itself.

Goal (from the issue): monbridge's RSS ≤ 60 MB (checked on the maximum, with MB = 10^6 bytes).
Exit status: 0 when both ran and every scrape succeeded (goal met or not: it is reported),
1 when a process died or a scrape failed, 2 when node exporter is not installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
GOAL_RSS_MB = 60.0
CONFIG = """\
# written by benchmarks/bench_footprint.py: the embedded default, collection_interval spelled out
server:
  listen: "127.0.0.1:{port}"
plugins:
  - plugin_id: monitoring.metrics.system
    enabled: true
    config:
      collection_interval: 15
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Target:
    name: str
    argv: list[str]
    url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    rss: list[int] = field(default_factory=list)
    scrape_ms: list[float] = field(default_factory=list)
    body_bytes: int = 0
    series: int = 0
    failures: list[str] = field(default_factory=list)
    cpu_at_ready: float = 0.0
    cpu_end: float = 0.0

    def start(self, cwd: Path) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.ps = psutil.Process(self.proc.pid)

    def tree(self) -> list[psutil.Process]:
        assert self.ps is not None
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample_rss(self) -> None:
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        if total:
            self.rss.append(total)

    def cpu(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def scrape(self, timeout: float = 10.0) -> bool:
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(self.url, timeout=timeout) as r:  # noqa: S310 - loopback URL we built
                body = r.read()
                status = r.status
        except OSError as e:
            self.failures.append(f"{type(e).__name__}: {e}")
            return False
        if status != 200:
            self.failures.append(f"HTTP {status}")
            return False
        self.scrape_ms.append((time.perf_counter() - t0) * 1000)
        self.body_bytes = len(body)
        self.series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        return True

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def wait_ready(targets: list[Target], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(targets)
    while pending and time.monotonic() < deadline:
        for t in list(pending):
            if not t.alive():
                raise SystemExit(f"{t.name} exited during start (status {t.proc.returncode if t.proc else '?'}); "
                                 f"log: {t.log}\n{t.log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(t.url, timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        pending.remove(t)
            except OSError:
                pass
        time.sleep(0.2)
    if pending:
        raise SystemExit(f"not ready after {timeout:.0f} s: {', '.join(t.name for t in pending)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="how long to run after both answer (default 120)")
    ap.add_argument("--interval", type=float, default=15.0, help="scrape interval, seconds (default 15)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temp dir with config and logs")
    args = ap.parse_args()
    if not 1 <= args.seconds <= 3600 or not 1 <= args.interval <= 600:
        ap.error("--seconds must be within 1..3600 and --interval within 1..600")

    if not (os.path.isfile(NODE_EXPORTER) and os.access(NODE_EXPORTER, os.X_OK)):
        print(f"{NODE_EXPORTER} not found. Install it with:\n"
              "  apt-get update && apt-get install -y prometheus-node-exporter\n"
              "(Debian/Ubuntu package prometheus-node-exporter; the benchmark only needs the binary, "
              "not the service.)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="monbridge-footprint-"))
    p1, p2 = free_port(), free_port()
    cfg = tmp / "monbridge.yaml"
    cfg.write_text(CONFIG.format(port=p1))
    mb = Target("monbridge", [sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg),
                              "--listen", f"127.0.0.1:{p1}", "--log-level", "warning"],
                f"http://127.0.0.1:{p1}/metrics", tmp / "monbridge.log")
    ne = Target("node-exporter", [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{p2}"],
                f"http://127.0.0.1:{p2}/metrics", tmp / "node-exporter.log")
    targets = [mb, ne]
    print(f"bench_footprint: {args.seconds:.0f} s, scrape every {args.interval:.0f} s, RSS every 1 s; "
          f"monbridge on 127.0.0.1:{p1} ({sys.executable}), node exporter on 127.0.0.1:{p2}; logs in {tmp}")
    rc = 0
    try:
        for t in targets:
            t.start(ROOT)
        wait_ready(targets, 60.0)
        for t in targets:
            t.cpu_at_ready = t.cpu()
        start = time.monotonic()
        end = start + args.seconds
        next_scrape = start
        next_sample = start
        while True:
            now = time.monotonic()
            if now >= end:
                break
            for t in targets:
                if not t.alive():
                    print(f"FAIL: {t.name} exited (status {t.proc.returncode if t.proc else '?'}); log: {t.log}",
                          file=sys.stderr)
                    return 1
            if now >= next_scrape:
                for t in targets:
                    t.scrape()
                next_scrape += args.interval
            if now >= next_sample:
                for t in targets:
                    t.sample_rss()
                next_sample += 1.0
            time.sleep(max(0.0, min(next_scrape, next_sample, end) - time.monotonic()))
        for t in targets:
            t.sample_rss()
            t.cpu_end = t.cpu()
    finally:
        for t in targets:
            t.stop()

    mib = 1024 * 1024
    print()
    print(f"  {'':<15} {'max RSS MiB':>11} {'avg RSS MiB':>11} {'max RSS MB':>10} {'CPU s total':>11} "
          f"{'CPU s run':>9} {'CPU % run':>9} {'scrapes':>8} {'scrape ms':>9} {'series':>7} {'body KB':>8}")
    for t in targets:
        run_cpu = t.cpu_end - t.cpu_at_ready
        ok = len(t.scrape_ms)
        print(f"  {t.name:<15} {max(t.rss) / mib:>11.1f} {statistics.fmean(t.rss) / mib:>11.1f} "
              f"{max(t.rss) / 1e6:>10.1f} {t.cpu_end:>11.2f} {run_cpu:>9.2f} {100 * run_cpu / args.seconds:>9.2f} "
              f"{ok:>4}/{ok + len(t.failures):<3} {statistics.median(t.scrape_ms) if ok else float('nan'):>9.1f} "
              f"{t.series:>7} {t.body_bytes / 1000:>8.1f}")
    print("  (CPU s total: from process start, imports included; CPU s run / %: from the first scrape to the end;"
          " RSS: the process and its children; series: sample lines of the last scrape)")
    print()
    print(f"  RSS ratio (max) monbridge / node-exporter: {max(mb.rss) / max(ne.rss):.2f}×; "
          f"(avg) {statistics.fmean(mb.rss) / statistics.fmean(ne.rss):.2f}×")
    ne_run, mb_run = ne.cpu_end - ne.cpu_at_ready, mb.cpu_end - mb.cpu_at_ready
    print(f"  CPU ratio monbridge / node-exporter: total {mb.cpu_end / ne.cpu_end if ne.cpu_end else float('inf'):.2f}×, "
          f"during the run {mb_run / ne_run if ne_run else float('inf'):.2f}×")
    max_mb = max(mb.rss) / 1e6
    print(f"  goal: monbridge RSS ≤ {GOAL_RSS_MB:g} MB: max {max_mb:.1f} MB — {'met' if max_mb <= GOAL_RSS_MB else 'NOT met'}")
    for t in targets:
        if t.failures:
            print(f"FAIL: {t.name}: {len(t.failures)} scrape(s) failed, e.g. {t.failures[0]}", file=sys.stderr)
            rc = 1
    if args.keep_logs or rc:
        print(f"  logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
