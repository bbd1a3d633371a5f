"""What the scrape benchmarks share: child processes run from this checkout, loopback ports,
HTTP polling, CPU and RSS of a process tree from /proc, and the scrape target they serve.

Imported by ``bench_scrape_rw.py``, ``bench_scrape_scale.py`` and ``bench_nagios.py`` (run as
scripts from any directory: each puts this folder on ``sys.path``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# monbridge runs from this checkout (its C extensions built in place), not from wherever the
# interpreter's environment installed the package (an editable install of another checkout).
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
TICKS = os.sysconf("SC_CLK_TCK")

#: A scrape target: ``python -c TARGET_SERVER PORT SERIES INTERVAL [long]``. It serves SERIES
#: series (half counters, half gauges, and a 5-series histogram family) on /metrics, with values
#: that change every INTERVAL seconds: the body of the current interval is rendered once, at its
#: first scrape, so every round brings fresh values and senders scraping in the same interval read
#: the same ones. ``long``: three labels a series (``path``/``code``/``method``) instead of two.
TARGET_SERVER = r'''
import http.server, sys, threading, time
port, series, interval = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
long = sys.argv[4:] == ["long"]
def body(step):
    out = ["# HELP bench_requests_total Requests.\n# TYPE bench_requests_total counter\n"]
    n = series // 2
    if long:
        out += [f'bench_requests_total{{path="/api/v1/p{i}",code="200",method="GET"}} {i * 10 + step}\n' for i in range(n)]
    else:
        out += [f'bench_requests_total{{path="/p{i}",code="200"}} {i * 10 + step}\n' for i in range(n)]
    out.append("# HELP bench_inflight Requests in flight.\n# TYPE bench_inflight gauge\n")
    pool = ',pool="default"' if long else ""
    out += [f'bench_inflight{{worker="w{i}"{pool}}} {(i + step) % 17}\n' for i in range(series - n - 60)]
    out.append("# HELP bench_latency_seconds Latency.\n# TYPE bench_latency_seconds histogram\n")
    for h in range(5):
        c = 0
        for le in ("0.005", "0.01", "0.05", "0.1", "0.5", "1", "2.5", "5", "10", "+Inf"):
            c += step + h
            out.append(f'bench_latency_seconds_bucket{{handler="h{h}",le="{le}"}} {c}\n')
        out.append(f'bench_latency_seconds_sum{{handler="h{h}"}} {c * 0.3}\n')
        out.append(f'bench_latency_seconds_count{{handler="h{h}"}} {c}\n')
    return "".join(out).encode()
lock, current = threading.Lock(), [None, b""]
def now_body():
    step = int(time.time() // interval)
    with lock:
        if current[0] != step:
            current[:] = [step, body(step)]
        return current[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        b = now_body()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
now_body()
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get(url, 2.0)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


def counter(url: str, name: str, timeout: float = 10.0) -> float:
    """The sum of the samples of ``name`` in the exposition at ``url``."""
    total = 0.0
    for line in get(url, timeout).decode().splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def monbridge_here() -> bool:
    """Whether a child started with CHILD_ENV imports ``bridge`` from this checkout (said on stderr)."""
    where = subprocess.run([sys.executable, "-c", "import bridge; print(bridge.__file__)"], env=CHILD_ENV,
                           capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout.strip()
    if not where.startswith(str(ROOT) + os.sep):
        print(f"bench: monbridge would run from {where or '(nowhere)'}, not from this checkout ({ROOT})", file=sys.stderr)
        return False
    print(f"bench: monbridge from {ROOT}", file=sys.stderr)
    return True


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    return out


def cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants."""
    total = 0.0
    for p in tree(pid):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / TICKS
        except OSError:
            pass
    return total


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants."""
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def wait_quiet(pid: int, timeout: float, still: float = 1.0) -> float:
    """CPU seconds of ``pid`` once it has used < 3 % of a core for ``still`` seconds (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = cpu(pid)
    while time.monotonic() < deadline:
        time.sleep(still)
        now = cpu(pid)
        if now - last < 0.03 * still:
            return now
        last = now
    return last
