#!/usr/bin/env python3
"""The cost of enforcing a plugin worker's limits from the agent: ``bridge.limits.Enforcer.check()``
(which the host runs about once a second per worker), and of ``bridge.sandbox.apply()`` in a worker.

    python benchmarks/bench_limits.py [--workers 10] [--rounds 200] [--sockets 3]

It starts ``--workers`` idle Python children, each holding ``--sockets`` TCP connections to a
loopback listener and a Unix socket pair, attaches an Enforcer to each (with cgroups where this
process may make them, and without: the watch-only enforcement), and times ``--rounds`` rounds
of one ``check()`` per worker: wall time and CPU time of this process per check. Then it times
``apply()`` in a fresh child (what it adds to a worker's start).

Goal: a check costs well under 1 ms of CPU, so a check a second per worker is < 0.1 % of a core
per worker. Exit status 0 when measured, 1 when the workers would not start.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.isolation import Limits  # noqa: E402
from bridge.limits import Enforcer  # noqa: E402

WORKER = """
import socket, sys, time
conns = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]
pair = socket.socketpair()
print("ready", flush=True)
time.sleep(3600)
"""

APPLY = """
import json, time
t0 = time.perf_counter()
from bridge.isolation import Grants, Limits
from bridge import sandbox
limits, grants = Limits(), Grants()  # (building the models is pydantic's first-use cost, not the sandbox's)
t1 = time.perf_counter()
held = sandbox.apply(limits, grants)
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "apply_ms": (t2 - t1) * 1e3, "held": held}))
"""


def measure(workers: list[subprocess.Popen[str]], rounds: int, cgroups: bool) -> dict[str, object]:
    enforcers = [Enforcer(f"bench.limits-{i}", Limits(connections=100), cgroups=cgroups) for i in range(len(workers))]
    try:
        for e, w in zip(enforcers, workers, strict=True):
            e.attach(w.pid)
        for e in enforcers:
            assert e.check() is None
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            for e in enforcers:
                e.check()
        n = rounds * len(enforcers)
        return {"mechanisms": enforcers[0].mechanisms(),
                "wall_us_per_check": (time.perf_counter() - wall0) / n * 1e6,
                "cpu_us_per_check": (time.process_time() - cpu0) / n * 1e6}
    finally:
        for e in enforcers:
            e.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--sockets", type=int, default=3)
    args = ap.parse_args()
    listener = socket.create_server(("127.0.0.1", 0), backlog=args.workers * args.sockets + 8)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(listener.getsockname()[1]), str(args.sockets)],
                                stdout=subprocess.PIPE, text=True) for _ in range(args.workers)]
    try:
        for w in workers:
            assert w.stdout is not None
            if w.stdout.readline().strip() != "ready":
                print("a worker did not start", file=sys.stderr)
                return 1
        report: dict[str, object] = {"workers": args.workers, "rounds": args.rounds, "sockets": args.sockets}
        for cgroups in (False, True):  # watch first: closing a cgroup kills what is left in it
            report["cgroups" if cgroups else "watch"] = measure(workers, args.rounds, cgroups)
    finally:
        for w in workers:
            w.kill()
            w.wait()
        listener.close()
    proc = subprocess.run([sys.executable, "-c", APPLY], capture_output=True, text=True, cwd=ROOT, timeout=120)
    report["sandbox"] = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
