#!/usr/bin/env python3
"""500 checks of check_dummy every 60 s: CPU time and start-time jitter of monbridge's Nagios
collector against Nagios 4 running the same checks, in the same run.

    python benchmarks/bench_nagios.py [--duration 180] [--checks 500] [--interval 60] [--also-python-runner]

Starts, side by side, on this machine:
  * Nagios 4 (Debian's ``nagios4``, foreground, its own config in a temp dir, ``interval_length=1``)
    with --checks services ``check_dummy 0 ok`` every --interval seconds, its first checks spread
    over the interval (its smart inter-check delay);
  * ``monbridge run`` (the code of the tree this script is in) with ``monitoring.metrics.nagios``
    running the same checks (argv ``check_dummy 0 ok``), interval --interval, spread the same way,
    concurrency 4 (Nagios' workers on a machine of up to 4 cores).
Both are measured over the same --duration seconds, from the moment both are up:

  * CPU: user + system seconds of the process tree: monbridge and the plugins it reaped; Nagios,
    its workers and the plugins they reaped (``/proc/PID/stat`` utime, stime, cutime, cstime).
    "own" leaves out what the plugins themselves spent (cutime/cstime of the runner processes);
  * RSS: resident memory of each process tree (``/proc/PID/statm``, the helpers of
    bench_scrape_scale.py), a plugin that runs at that moment included (check_dummy, about 1 MiB,
    lives about a millisecond). "idle" is each side started before the measured run with one of
    the checks only (Nagios takes no config without a service), read once up and quiet; "after"
    at the end of the measured run; "per check" is (after - idle) / (checks - 1);
  * start-time jitter: how late each run started after its scheduled time. Nagios' is its
    ``check_latency`` in status.dat (one sample per service and ``last_check``); monbridge's is
    ``nagios_check_latency_seconds`` on its /metrics (one sample per check and
    ``nagios_check_executions_total``). p50, p99 and max. Each side publishes at its default
    (status.dat every 10 s, a collection every 15 s), or 4 times per --interval when that is
    shorter, and is read as often as it publishes.

Goals: CPU ≤ 1× Nagios' (own and with plugins), jitter p99 ≤ 1 s.
Exit status: 0 when both ran (goal met or not: it is reported), 1 when one died, 2 when Nagios
or the monitoring plugins are not installed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import rss, wait_quiet  # noqa: E402
from nagios_peer import NAGIOS_BIN, PLUGINS, NagiosConfig, NagiosServer, Service, stop_group  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICKS, (cutime + cstime) / TICKS


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(") ", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def tree_cpu(pid: int, runners: list[int]) -> tuple[float, float]:
    """(own, total) CPU seconds of ``pid`` and its long-lived ``runners`` (Nagios' workers); the
    children they reaped count in total only."""
    own = total = 0.0
    for p in [pid, *runners]:
        try:
            o, c = cpu(p)
        except OSError:
            continue
        own += o
        total += o + c
    return own, total


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_LAT = re.compile(r'^nagios_check_latency_seconds\{[^}]*nagios_check="([^"]+)"[^}]*\} (\S+)$', re.M)
_RUNS = re.compile(r'^nagios_check_executions_total\{[^}]*nagios_check="([^"]+)"[^}]*\} (\S+)$', re.M)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=180.0, help="seconds measured (default 180)")
    ap.add_argument("--checks", type=int, default=500)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--also-python-runner", action="store_true",
                    help="run a second monbridge alongside with the pure-Python plugin runner (PyRunner)")
    args = ap.parse_args()
    if not (os.access(NAGIOS_BIN, os.X_OK) and os.access(f"{PLUGINS}/check_dummy", os.X_OK)):
        print(f"needs {NAGIOS_BIN} and {PLUGINS}/check_dummy (apt-get install nagios4 monitoring-plugins)")
        return 2
    if args.checks < 2:
        ap.error("--checks: at least 2 (the idle run has one)")
    work = Path(tempfile.mkdtemp(prefix="bench-nagios-"))
    names = [f"c{i:04d}" for i in range(args.checks)]
    # How often each side publishes what it ran (Nagios' status.dat, monbridge's pipeline): their
    # defaults (10 s, 15 s), or a quarter of a short --interval, so that every run is seen.
    publish = max(1, min(10, int(args.interval // 4)))
    collect = max(1, min(15, int(args.interval // 4)))
    # Idle RSS: each side with the first check only, read once up and quiet, then stopped.
    nagios, sides = start_sides(work / "idle", names[:1], args, publish, collect)
    try:
        if not wait_up(nagios, sides):
            return 1
        idle = {"nagios4": quiet_rss(nagios.proc.pid)} | {side.name: quiet_rss(side.proc.pid) for side in sides}
    finally:
        stop_all(nagios, sides)
    nagios, sides = start_sides(work, names, args, publish, collect)
    status = 0
    try:
        if not wait_up(nagios, sides):
            return 1
        workers = children(nagios.proc.pid)
        n0 = tree_cpu(nagios.proc.pid, workers)
        for side in sides:
            side.cpu0 = tree_cpu(side.proc.pid, [])
        t0 = time.monotonic()
        nagios_lat: dict[tuple[str, str], float] = {}
        # Each side is read as often as it publishes (and at least 4 times per --interval, so
        # every run is seen), never more: reading /metrics costs monbridge what rendering costs.
        next_nagios = next_mb = t0
        while time.monotonic() - t0 < args.duration:
            time.sleep(0.5)
            now = time.monotonic()
            if now >= next_nagios:
                next_nagios = now + publish
                for name, st in nagios.status().items():
                    if st.get("has_been_checked") == "1":
                        nagios_lat[(name, st["last_check"])] = float(st["check_latency"])
            if now < next_mb:
                continue
            next_mb = now + collect
            for side in sides:
                if not side.read_latency():
                    status = 1
            if any(side.proc.poll() is not None for side in sides) or nagios.proc.poll() is not None:
                print("a process died")
                status = 1
                break
        elapsed = time.monotonic() - t0
        n1 = tree_cpu(nagios.proc.pid, workers)
        for side in sides:
            side.cpu1 = tree_cpu(side.proc.pid, [])
        after = {"nagios4": rss(nagios.proc.pid)} | {side.name: rss(side.proc.pid) for side in sides}
    finally:
        stop_all(nagios, sides)
    n_own, n_total = n1[0] - n0[0], n1[1] - n0[1]
    expected = args.checks * max(1, int(elapsed // args.interval))
    print(f"{args.checks} checks of check_dummy every {args.interval:g} s, measured {elapsed:.0f} s "
          f"(about {expected} runs each side); monbridge from {REPO}, plugin runner "
          + ", ".join(f"{side.runner} ({side.name})" for side in sides))
    print(f"{'':<10} {'CPU own s':>10} {'CPU+plugins s':>14} {'RSS idle MiB':>13} {'after MiB':>10} "
          f"{'kB/check':>9} {'runs seen':>10} {'latency p50':>12} {'p99':>8} {'max':>8}")
    rows = [("nagios4", n_own, n_total, nagios_lat)]
    rows += [(side.name, side.cpu1[0] - side.cpu0[0], side.cpu1[1] - side.cpu0[1], side.latency) for side in sides]
    per_check = {name: (after[name] - idle[name]) / (args.checks - 1) for name, *_ in rows}
    for name, own, total, lat in rows:
        xs = list(lat.values())
        print(f"{name:<10} {own:>10.2f} {total:>14.2f} {idle[name] / 2**20:>13.1f} {after[name] / 2**20:>10.1f} "
              f"{per_check[name] / 1e3:>9.1f} {len(xs):>10} {percentile(xs, 50):>11.3f}s "
              f"{percentile(xs, 99):>7.3f}s {max(xs, default=float('nan')):>7.3f}s")
    for name, own, total, _ in rows[1:]:
        print(f"CPU {name} / Nagios: own {own / n_own if n_own else float('inf'):.2f}x, "
              f"with plugins {total / n_total if n_total else float('inf'):.2f}x (goal <= 1x); "
              f"RSS after {after[name] / after['nagios4']:.2f}x")
    p99 = percentile(list(sides[0].latency.values()), 99)
    print(f"monbridge start-time jitter p99 {p99:.3f} s (goal <= 1 s): {'met' if p99 <= 1 else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)
    return status


def start_sides(work: Path, names: list[str], args: argparse.Namespace, publish: int,
                collect: int) -> tuple[NagiosServer, list[Monbridge]]:
    """Nagios and the monbridge side(s), each with the checks ``names``, in ``work``."""
    nagios = NagiosServer(NagiosConfig(work / "nagios", [
        Service(n, f"{PLUGINS}/check_dummy 0 ok", interval=args.interval, retry_interval=args.interval) for n in names],
        spread=int(args.interval), extra={"status_update_interval": str(publish)}))
    checks = "".join(f"        - {{name: {n}, command: [check_dummy, '0', ok], interval: {args.interval}}}\n" for n in names)
    sides = [Monbridge("monbridge", work, checks, collect, python_runner=False)]
    if args.also_python_runner:
        sides.append(Monbridge("mb-python", work, checks, collect, python_runner=True))
    for side in sides:
        side.start()
    return nagios, sides


def wait_up(nagios: NagiosServer, sides: list[Monbridge]) -> bool:
    nagios.wait_running()
    return all(side.wait_healthy() for side in sides)


def quiet_rss(pid: int) -> int:
    """RSS of the tree of ``pid`` once it is quiet (a second under 3 % of a core, at most 10 s)."""
    wait_quiet(pid, 10)
    return rss(pid)


def stop_all(nagios: NagiosServer, sides: list[Monbridge]) -> None:
    nagios.stop()
    for side in sides:
        side.stop()


class Monbridge:
    """One ``monbridge run`` with the checks; ``python_runner`` hides the C extension from it (its
    ``sitecustomize`` makes ``integrations.nagios._run`` unimportable), so it runs ``PyRunner``."""

    def __init__(self, name: str, work: Path, checks: str, collect: int, *, python_runner: bool) -> None:
        self.name, self.work = name, work / name
        self.work.mkdir(parents=True)
        self.port = free_port()
        self.config = self.work / "monbridge.yaml"
        self.config.write_text(
            f"server: {{listen: '127.0.0.1:{self.port}'}}\nplugins:\n  - plugin_id: monitoring.metrics.nagios\n"
            f"    config:\n      collection_interval: {collect}\n      plugin_paths: [{PLUGINS}]\n"
            f"      concurrency: 4\n      checks:\n{checks}")
        path = [str(REPO)]
        if python_runner:
            (self.work / "site").mkdir()
            (self.work / "site" / "sitecustomize.py").write_text(
                "import sys\nsys.modules['integrations.nagios._run'] = None  # PyRunner\n")
            path.insert(0, str(self.work / "site"))
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        self.runner = subprocess.run(
            [sys.executable, "-c", "from integrations.nagios.execute import Runner; print(Runner.__name__)"],
            env=self.env, cwd=self.work, capture_output=True, text=True).stdout.strip() or "?"
        self.latency: dict[tuple[str, str], float] = {}
        self.cpu0 = self.cpu1 = (0.0, 0.0)

    def start(self) -> None:
        self.log = (self.work / "monbridge.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=self.env, cwd=self.work,
                                     start_new_session=True)

    def wait_healthy(self) -> bool:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/healthy", timeout=2).read()
                return True
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    print(f"{self.name} did not come up; its log:\n" + (self.work / "monbridge.log").read_text()[-3000:])
                    return False
                time.sleep(0.2)

    def read_latency(self) -> bool:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        except OSError as e:
            print(f"{self.name} /metrics failed: {e}")
            return False
        runs = dict(_RUNS.findall(body))
        for name, lat in _LAT.findall(body):
            self.latency[(name, runs.get(name, "?"))] = float(lat)
        return True

    def stop(self) -> None:
        if hasattr(self, "proc"):
            stop_group(self.proc)
            self.log.close()

if __name__ == "__main__":
    sys.exit(main())
