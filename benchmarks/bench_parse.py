#!/usr/bin/env python3
"""Parse scraped bodies with monbridge's scrape parser and with prometheus_client's, and compare samples/s.

    python benchmarks/bench_parse.py [--series 100000] [--families 100] [--repeat 5] [--warmup 1]

Two targets, each scraped 1 + --warmup + --repeat times with values changing between scrapes:

(a) node_exporter 1.5: ``/usr/bin/prometheus-node-exporter`` started on a free loopback port and
    its /metrics fetched once per scrape (real, changing values); without the binary, the saved
    capture tests/data/node_exporter_1.5.prom with values perturbed per scrape.
(b) synthetic: --families families x --series/--families series, 3 labels a series, values new
    every scrape.

Parsers, each given the raw bytes of the body:
  monbridge steady  ``TextParser.parse`` of one TextParser on every scrape of the target (the
                    per-target series cache and body template warm): the HEADLINE figure, the
                    cost of a scrape.
  monbridge cold    a fresh TextParser (empty cache) per parse.
  monbridge one-shot  ``parse()``: a fresh parser that builds no template, as a body parsed once needs.
  prometheus_client ``prometheus_client.parser.text_string_to_metric_families`` (0.26) on the
                    decoded body, families and samples materialised: the BASELINE.

Before any figure is printed, the parses of the first two and the last scrape of each target
by monbridge (cached and cold) and by prometheus_client are compared sample by sample (name,
labels, value; prometheus_client's counter renaming undone), and monbridge's cached and cold
families by name, type, HELP, UNIT and size; any difference exits with status 1. Goal: monbridge steady ≥ 10x prometheus_client.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from integrations.prometheus.textparse import TextParser, parse  # noqa: E402

GOAL = 10.0
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
NODE_CAPTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "node_exporter_1.5.prom"


# --------------------------------------------------------------------------- the targets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_exporter_bodies(n: int, rng: random.Random) -> tuple[str, list[bytes]]:
    if not (os.access(NODE_EXPORTER, os.X_OK) or shutil.which("prometheus-node-exporter")):
        return _perturbed_capture(n, rng)
    port = _free_port()
    proc = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        bodies: list[bytes] = []
        while len(bodies) < n:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    bodies.append(r.read())
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return f"node_exporter 1.5, live on 127.0.0.1:{port}", bodies
    finally:
        proc.terminate()
        proc.wait(timeout=10)


_SAMPLE_VALUE = re.compile(rb"^([^#\n].*?) ([-+0-9.e]+)$", re.M)


def _perturbed_capture(n: int, rng: random.Random) -> tuple[str, list[bytes]]:
    base = NODE_CAPTURE.read_bytes()
    bodies = [_SAMPLE_VALUE.sub(lambda m: m.group(1) + b" " + repr(rng.random() * 1e6).encode(), base) for _ in range(n)]
    return f"node_exporter 1.5, saved capture {NODE_CAPTURE.name} (values perturbed)", bodies


def synthetic_bodies(n: int, n_series: int, n_families: int, rng: random.Random) -> tuple[str, list[bytes]]:
    per = n_series // n_families
    bodies = []
    for it in range(n):
        out = []
        for f in range(n_families):
            kind = "counter" if f % 2 else "gauge"
            out.append(f"# HELP bench_family_{f:03d} Synthetic family {f}.\n# TYPE bench_family_{f:03d} {kind}\n")
            for j in range(per):
                value = (f * 1000 + j) * (it + 1) if kind == "counter" else rng.random() * 1e9
                out.append(f'bench_family_{f:03d}{{host="host-{j // 10:04d}",cpu="{j % 8}",mode="m{j % 3}"}} {value}\n')
        bodies.append("".join(out).encode())
    return f"synthetic: {n_families} families x {per} series, 3 labels", bodies


# --------------------------------------------------------------------------- equivalence


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def _canon(name: str, labels: Any, value: float) -> tuple:
    return (name.removesuffix("_total"), tuple(sorted(dict(labels).items())), "NaN" if math.isnan(value) else value)


def verify(label: str, bodies: list[bytes]) -> int:
    """Each body: monbridge (cached and cold) and prometheus_client yield the same samples. Returns samples a body."""
    parser = TextParser()
    n = 0
    for i, body in enumerate(bodies):
        families = parser.parse(body)
        ours = [_canon(s[0], s[1], s[2]) for f in families for s in f.samples]
        n = len(ours)
        if i not in (0, 1, len(bodies) - 1):  # the cold and the client parse of 100k samples take seconds
            continue
        cold_families = TextParser().parse(body)
        cold = [_canon(s[0], s[1], s[2]) for f in cold_families for s in f.samples]
        if [(f.name, f.type, f.help, f.unit, len(f.samples)) for f in families] != \
                [(f.name, f.type, f.help, f.unit, len(f.samples)) for f in cold_families]:
            fail(f"{label} scrape {i}: the cached parse's families differ from a cold one's")
        theirs = [_canon(s.name, s.labels, float(s.value)) for f in text_string_to_metric_families(body.decode())
                  for s in f.samples]
        if ours != cold:
            fail(f"{label} scrape {i}: the cached parse differs from a cold one")
        if Counter(ours) != Counter(theirs):
            fail(f"{label} scrape {i}: monbridge and prometheus_client differ, e.g. "
                 f"{sorted(set(ours) - set(theirs), key=str)[:3]} / {sorted(set(theirs) - set(ours), key=str)[:3]}")
    return n


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def client_parse(body: bytes) -> None:
    for fam in text_string_to_metric_families(body.decode()):
        fam.samples  # noqa: B018 - the families are what a caller gets


def bench(bodies: list[bytes], warmup: int, client_repeat: int) -> dict[str, float]:
    parser = TextParser()
    parser.parse(bodies[0])
    steady = [timed(lambda b=b: parser.parse(b)) for b in bodies[1:]][warmup:]
    cold = [timed(lambda b=b: TextParser().parse(b)) for b in bodies[1:1 + client_repeat]]
    oneshot = [timed(lambda b=b: parse(b)) for b in bodies[1:1 + client_repeat]]
    client = [timed(lambda b=b: client_parse(b)) for b in bodies[1:1 + client_repeat]]
    return {"steady": statistics.median(steady), "cold": statistics.median(cold), "oneshot": statistics.median(oneshot),
            "client": statistics.median(client)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=100_000, help="synthetic series (default 100000)")
    ap.add_argument("--families", type=int, default=100, help="synthetic families (default 100)")
    ap.add_argument("--repeat", type=int, default=5, help="timed scrapes per target (median taken; default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed scrapes first (default 1)")
    ap.add_argument("--client-repeat", type=int, default=3, help="timed prometheus_client parses (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.repeat < 1 or args.warmup < 0 or args.client_repeat < 1 or args.series % args.families:
        ap.error("--repeat, --client-repeat ≥ 1, --warmup ≥ 0, --series a multiple of --families")
    print(f"bench_parse: repeat {args.repeat} (median), warmup {args.warmup}, client x{args.client_repeat}; "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs")
    rng = random.Random(args.seed)
    n = 1 + args.warmup + args.repeat
    targets = [node_exporter_bodies(n, rng), synthetic_bodies(n, args.series, args.families, rng)]

    rows = []
    for label, bodies in targets:
        t0 = time.perf_counter()
        samples = verify(label, bodies)
        print(f"  {label}: {len(bodies)} scrapes of ~{len(bodies[-1]) // 1024} KiB, {samples} samples each; "
              f"monbridge = prometheus_client [{time.perf_counter() - t0:.1f} s]")
        rows.append((label, samples, bench(bodies, args.warmup, args.client_repeat)))

    print()
    print(f"  {'target / parser':<58} {'ms/parse':>10} {'Msamples/s':>11} {'vs client':>10}")
    worst = math.inf
    for label, samples, r in rows:
        print(f"  {label}")
        for key, name in (("steady", "monbridge steady (same target again) [HEADLINE]"),
                          ("cold", "monbridge cold (fresh parser)"),
                          ("oneshot", "monbridge one-shot parse() (no template)"),
                          ("client", "prometheus_client 0.26 [BASELINE]")):
            secs = r[key]
            print(f"    {name:<56} {secs * 1000:>10.2f} {samples / secs / 1e6:>11.2f} {r['client'] / secs:>9.1f}x")
        worst = min(worst, r["client"] / r["steady"])
    print()
    print(f"  goal: monbridge steady ≥ {GOAL:.0f}x prometheus_client on every target: "
          f"{'met' if worst >= GOAL else 'NOT met'} (lowest {worst:.1f}x)")


if __name__ == "__main__":
    main()
