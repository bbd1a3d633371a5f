#!/usr/bin/env python3
"""DogStatsD ingest: datagrams per second at saturation and loss at half that rate, monbridge's
DogStatsD server against collectd's statsd plugin, on the same stream in the same run.

    python benchmarks/bench_dogstatsd.py [--duration 20] [--slices 4] [--loss-duration 20] [--contexts 10000]
        [--datagrams 100000] [--flush-interval 10] [--workers 1] [--rcvbuf BYTES | --system-rcvbuf]
        [--option KEY=VALUE] [--json PATH]
        [--profile PATH] [--quick]

The stream is built once, before anything starts (seeded, so every run sends the same bytes):
--datagrams datagrams over --contexts metric contexts. Half the datagrams carry one metric, the
others are packed as a buffering client packs them (2 to 20 lines, at most 1,432 bytes with the
longest values: the Datadog clients' UDP payload size; collectd reads at most 4,095 bytes of a
datagram). Every datagram ends with the line ``bench.datagrams:1|c``: the counter whose total
each side reports is how many datagrams it processed; the sender knows how many it sent.
Fresh data each round: the stream has a part per round (each turn of the flat-out phase, then
the half-rate phase), the same datagrams of the same lines with values drawn for that round. A
side's turn starts at its round's part and goes on through the next ones (wrapping) for as long
as it sends, so every side sends the same bytes in the same turn.

Only what both sides parse is in the shared stream: ``c`` (a fifth of them with a sample rate),
``g`` (absolute values), ``ms`` (a fifth with a sample rate) and ``s``. Left out, because
collectd's statsd plugin rejects the line (its parser knows the types ``c``, ``ms``, ``g``, ``s``
and, after the type, only ``|@rate`` on counters and timers): DogStatsD tags (``|#...``), ``h``
and ``d``, timestamps (``|T``), the container field (``|c:``), events and service checks; and
multi-value lines (``name:1:2|ms``), which collectd would misparse (it splits at the last colon).
A context is named statsd-style, its dimensions in its name (``svc03.http.requests.i17``).
Gauges are never signed: collectd takes ``+N``/``-N`` as a change, DogStatsD as a value.

After the shared stream, monbridge alone takes a DogStatsD stream of the same shape with what
collectd cannot parse (``--no-dogstatsd`` skips it): the same contexts named by a metric name and
three tags (``svc.http.requests|#service:svc03,instance:i17,env:prod``), timers split between
``ms``, ``h`` and ``d``. Its figures are for information; no ratio is made from them.

The sender is a child process writing the pre-built bytes with ``sendmmsg(2)`` (through ctypes,
batches of 64) from 16 UDP sockets connected to 127.0.0.1 (several source ports, so that
``SO_REUSEPORT`` workers share the load as they would with several clients). It is the same
for both sides. Every side runs from the start (an idle one costs next to nothing), and is sent
to alone:

1. saturation: flat out for --duration seconds in all, in --slices turns, the sides taking
   turns (collectd, monbridge, monbridge on the DogStatsD stream, collectd, ...), so that a
   change in the shared machine's load falls on every side alike. After each turn the script
   waits for the side's socket queue (``/proc/net/udp``) to be empty; after the last, the side's
   next flush gives the total of ``bench.datagrams``: datagrams processed, over the seconds from
   the first send of each turn to its queue being empty. The kernel's drops on the socket are
   read too (``/proc/net/udp``): sent = processed + dropped, and what is not is printed as
   lost inside the side;
2. loss: a paced sender at half of that side's own saturation rate for --loss-duration seconds
   (it sleeps between batches, so a batch is as large as the time slept asks for). Loss is
   1 - processed / sent. Goal < 0.1 %.

Both count: CPU (user + system, ``/proc/PID/stat``, every thread and child process of the side)
over the whole saturation phase (the other sides' turns included: flushes and idle work count)
per million datagrams processed and per million lines, RSS before the first datagram, after
the saturation phase, and per context (the difference over --contexts).

--profile PATH samples monbridge during its saturation turns with py-spy (which must be on PATH;
``--nonblocking``, 250 Hz) and prints where the time goes: by function, inclusive, and by line,
as a share of the samples and in µs a datagram.

The receiving sockets have the same receive buffer on both sides, checked with ``ss`` (else exit
1): by default monbridge's default ``so_rcvbuf`` (4 MiB asked, which the kernel caps at
``net.core.rmem_max`` and doubles), which collectd's socket is given from outside (its statsd plugin
has no option for it and never sets ``SO_RCVBUF``; ``pidfd_getfd(2)`` duplicates the socket into
this script, which sets it: the same socket). With --rcvbuf BYTES, both get BYTES that way; with
--system-rcvbuf both keep the system's (``net.core.rmem_default``; monbridge's ``so_rcvbuf: null``).
Both flush every --flush-interval seconds (collectd's
``Interval``). collectd's timers report average, upper, count and the 50th and 95th
percentiles, the Datadog Agent's default ``histogram_aggregates`` and ``histogram_percentiles``
that monbridge uses; its output goes to its value cache only, except the marker counter, which a
filter chain writes to a CSV file (``StoreRates false``: the raw counter) for this script.

Goals: monbridge's saturation rate >= collectd's (the ratio is printed), loss < 0.1 % at half of
saturation. Exit status: 0 when every phase ran (goals met or not: they are reported), 1 when a
side failed or a figure is wrong (a side counted more than was sent, reported a line it could not
parse or dropped other than for a full receive buffer, or had another receive buffer than asked),
2 when collectd is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import glob
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COLLECTD = "/usr/sbin/collectd"
TYPES_DB = "/usr/share/collectd/types.db"
MARKER = "bench.datagrams"
MAX_PAYLOAD = 1432  # the Datadog clients' UDP payload size
SENDER_SOCKETS = 16
BATCH = 64
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
LOSS_GOAL = 0.001


# --------------------------------------------------------------------------- the stream


@dataclass
class Stream:
    name: str
    datagrams: list[bytes]  # ``rounds`` parts of ``per_round`` datagrams
    lines: int  # lines in all datagrams, the marker included
    contexts: int
    kinds: dict[str, int] = field(default_factory=dict)  # lines per type
    rounds: int = 1

    @property
    def per_round(self) -> int:
        return len(self.datagrams) // self.rounds

    @property
    def nbytes(self) -> int:
        return sum(len(d) for d in self.datagrams)

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {v / self.lines:.0%}" for k, v in sorted(self.kinds.items()))
        return (f"{self.name}: {self.rounds} rounds of {self.per_round:,} datagrams (the same lines, values drawn "
                f"for each round), {self.lines / len(self.datagrams):.1f} lines and "
                f"{self.nbytes / len(self.datagrams):.0f} bytes a datagram on average, {self.contexts:,} "
                f"contexts; lines by type: {kinds}")


APPS = [f"svc{i:02d}" for i in range(40)]
AREAS = {"c": ["http.requests", "http.errors", "db.queries", "cache.hits", "cache.misses", "queue.published",
               "jobs.done"],
         "g": ["queue.depth", "pool.active", "memory.used", "threads.busy", "conn.open"],
         "ms": ["http.latency", "db.query_time", "render.time", "rpc.duration", "lock.wait"],
         "s": ["users.unique", "sessions.unique"]}
KIND_SHARE = (("c", 0.40), ("g", 0.25), ("ms", 0.25), ("s", 0.10))


def build_stream(contexts: int, count: int, seed: int, dogstatsd: bool, rounds: int = 1) -> Stream:
    """``rounds`` parts of ``count`` datagrams over ``contexts`` contexts (see the module's
    docstring): statsd lines both sides parse, or (``dogstatsd``) the same contexts tagged, timers
    as ms, h and d. Every part has the same datagrams of the same lines (contexts, types, sample
    rates); each draws their values afresh."""
    rnd = random.Random(seed)
    ctx: list[tuple[str, str, str]] = []  # (kind, statsd name, dogstatsd name|#tags)
    for i in range(contexts):
        r = rnd.random()
        acc = 0.0
        kind = "c"
        for k, share in KIND_SHARE:
            acc += share
            if r < acc:
                kind = k
                break
        app, area, inst = rnd.choice(APPS), rnd.choice(AREAS[kind]), f"i{i % 97}"
        ctx.append((kind, f"{app}.{area}.{inst}.{i}", f"{area}|#service:{app},instance:{inst}.{i},env:prod"))
    # Hot contexts are sent more often than cold ones, as in an application.
    cum, acc = [], 0.0
    for i in range(contexts):
        acc += 1.0 / (1 + (i % 100))
        cum.append(acc)

    def form(c: tuple[str, str, str]) -> tuple[str, str, bytes, bytes]:
        """(the value's kind, the line's type, the text before the value, the text after it)."""
        kind, sname, dname = c
        extra = ""
        if kind == "c" and rnd.random() < 0.2:
            extra = f"|@{rnd.choice(('0.5', '0.1', '0.25'))}"
        elif kind == "ms" and rnd.random() < 0.2:
            extra = "|@0.5"
        if not dogstatsd:
            return kind, kind, f"{sname}:".encode(), f"|{kind}{extra}".encode()
        name, tags = dname.split("|", 1)
        line_kind = rnd.choice(("ms", "h", "d")) if kind == "ms" else kind
        # the tags follow the sample rate, as the Datadog clients write them
        return kind, line_kind, f"{name}:".encode(), f"|{line_kind}{extra}|{tags}".encode()

    # The values a round draws from: every count (1 four times in five, else 2-50) and set member
    # (u1-u2000); 65,536 gauges (half integers 0-5000, half 0-10,000 with two decimals) and timers
    # (log-normal, three decimals) drawn once.
    vrnd = random.Random(seed + 1)
    pools = {
        "c": [b"1", *(str(i).encode() for i in range(2, 51))],
        "g": [(str(vrnd.randint(0, 5000)) if vrnd.random() < 0.5 else f"{vrnd.uniform(0, 1e4):.2f}").encode()
              for _ in range(65_536)],
        "ms": [f"{vrnd.lognormvariate(3, 1):.3f}".encode() for _ in range(65_536)],
        "s": [f"u{i}".encode() for i in range(1, 2001)],
    }
    weights = {"c": [0.8] + [0.2 / 49] * 49}
    longest = {k: max(map(len, pool)) for k, pool in pools.items()}
    # Each datagram's lines, its values left out (a template for ``%``), as many as fit with the
    # longest values: every round's datagram has the same lines.
    marker = f"{MARKER}:1|c".encode()
    templates: list[tuple[bytes, int]] = []  # (template, values in it); no name holds a "%"
    order: list[str] = []  # the kind of each value, in the order of the templates
    kinds: dict[str, int] = {}
    lines = 0
    while len(templates) < count:
        n = 1 if rnd.random() < 0.5 else rnd.randint(2, 20)
        body: list[bytes] = []
        size = len(marker)
        for vkind, kind, head, tail in map(form, rnd.choices(ctx, cum_weights=cum, k=n)):
            if size + len(head) + longest[vkind] + len(tail) + 1 > MAX_PAYLOAD:
                break
            body.append(head + b"%b" + tail)
            size += len(head) + longest[vkind] + len(tail) + 1
            order.append(vkind)
            kinds[kind] = kinds.get(kind, 0) + rounds
        body.append(marker)
        kinds["c"] = kinds.get("c", 0) + rounds
        lines += len(body) * rounds
        templates.append((b"\n".join(body), len(body) - 1))
    need = {k: order.count(k) for k in pools}
    datagrams: list[bytes] = []
    for part in range(rounds):
        vrnd = random.Random(f"{seed}/{part}")
        drawn = {k: iter(vrnd.choices(pool, weights.get(k), k=need[k])) for k, pool in pools.items()}
        values = [next(drawn[k]) for k in order]
        at = 0
        for t, n in templates:
            datagrams.append(t % tuple(values[at:at + n]))
            at += n
    return Stream("dogstatsd" if dogstatsd else "statsd", datagrams, lines, contexts, kinds, rounds)


# --------------------------------------------------------------------------- the sender


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


class Sender:
    """The stream's datagrams as ``sendmmsg`` arrays, built once; ``run`` sends them in a loop
    from a forked child process, from the start of a round's part on."""

    def __init__(self, stream: Stream) -> None:
        n = len(stream.datagrams)
        self.stream = stream
        self.n = n
        self._buf = ctypes.create_string_buffer(b"".join(stream.datagrams))
        self._iov = (_Iovec * n)()
        self._mm = (_Mmsghdr * n)()
        base, iov_base, off = ctypes.addressof(self._buf), ctypes.addressof(self._iov), 0
        isz = ctypes.sizeof(_Iovec)
        for i, d in enumerate(stream.datagrams):
            self._iov[i].iov_base = base + off
            self._iov[i].iov_len = len(d)
            self._mm[i].msg_hdr.msg_iov = iov_base + i * isz
            self._mm[i].msg_hdr.msg_iovlen = 1
            off += len(d)
        self._mm_base = ctypes.addressof(self._mm)
        self._msz = ctypes.sizeof(_Mmsghdr)

    def run(self, port: int, duration: float, rate: float | None, round_: int) -> dict[str, float]:
        """Send for ``duration`` seconds, flat out (``rate`` None) or paced at ``rate`` datagrams a
        second, in a child process, from the first datagram of round ``round_`` (then the next
        rounds', wrapping); return what it sent, its wall time and CPU."""
        start = round_ % self.stream.rounds * self.stream.per_round
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=self._child, args=(port, duration, rate, start, child), daemon=True)
        proc.start()
        child.close()
        if not parent.poll(duration + 60):
            proc.kill()
            raise SystemExit("the sender did not finish")
        result: dict[str, float] = parent.recv()
        proc.join(10)
        if "error" in result:
            raise SystemExit(f"the sender failed: {result['error']}")
        return result

    def _child(self, port: int, duration: float, rate: float | None, start: int, conn: Any) -> None:
        try:
            conn.send(self._send(port, duration, rate, start))
        except Exception as e:  # noqa: BLE001 - reported to the parent
            conn.send({"error": f"{type(e).__name__}: {e}"})

    def _send(self, port: int, duration: float, rate: float | None, start: int) -> dict[str, float]:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        sendmmsg = libc.sendmmsg
        sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        sendmmsg.restype = ctypes.c_int
        socks = []
        for _ in range(SENDER_SOCKETS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.connect(("127.0.0.1", port))
            socks.append(s)
        fds = [s.fileno() for s in socks]
        n, base, msz = self.n, self._mm_base, self._msz
        pos, sent, errors, calls = start, 0, 0, 0
        perf = time.perf_counter
        cpu0 = time.process_time()
        t0 = perf()
        end = t0 + duration
        total = None if rate is None else int(rate * duration)
        while True:
            if total is None:
                if perf() >= end:
                    break
                want = BATCH
            else:
                due = min(total, int((perf() - t0) * rate)) if rate else total
                want = due - sent
                if want <= 0:
                    if sent >= total:
                        break
                    time.sleep(0.0002)
                    continue
            while want > 0:
                k = min(want, BATCH, n - pos)
                r = sendmmsg(fds[calls % SENDER_SOCKETS], base + pos * msz, k, 0)
                calls += 1
                if r < 0:
                    # ECONNREFUSED (the ICMP error of an earlier datagram), ENOBUFS: counted, sent again
                    err = ctypes.get_errno()
                    errors += 1
                    if err not in (errno.ECONNREFUSED, errno.ENOBUFS, errno.EAGAIN, errno.EINTR) or errors > 10_000:
                        raise OSError(err, f"sendmmsg: {os.strerror(err)} ({errors} errors)")
                    continue
                sent += r
                want -= r
                pos = (pos + r) % n
        wall = perf() - t0
        for s in socks:
            s.close()
        return {"sent": sent, "wall": wall, "cpu": time.process_time() - cpu0, "errors": errors}


# --------------------------------------------------------------------------- /proc


def _descendants(pid: int) -> list[int]:
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
    for k in kids:
        out.extend(_descendants(k))
    return out


def _tree_sum(pid: int, name: str, pick: Callable[[list[str]], float]) -> float:
    """``pick`` of /proc/P/``name`` (split into fields) summed over ``pid`` and its live descendants."""
    total = 0.0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/{name}") as f:
                total += pick(f.read().rsplit(")", 1)[-1].split())
        except (OSError, IndexError, ValueError):
            pass
    return total


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    return _tree_sum(pid, "stat", lambda fields: (int(fields[11]) + int(fields[12])) / TICKS)


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its live descendants."""
    return int(_tree_sum(pid, "statm", lambda fields: int(fields[1]) * PAGE))


def udp_sockets(port: int) -> tuple[int, int, int]:
    """(sockets, bytes queued, datagrams dropped) of the UDP sockets bound to 127.0.0.1:``port``."""
    want = f"0100007F:{port:04X}"
    n = queued = drops = 0
    with open("/proc/net/udp") as f:
        next(f)
        for row in f:
            cols = row.split()
            if cols[1] == want:
                n += 1
                queued += int(cols[4].split(":")[1], 16)
                drops += int(cols[12])
    return n, queued, drops


def udp_inodes(port: int) -> set[int]:
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as f:
        next(f)
        return {int(cols[9]) for cols in (row.split() for row in f) if cols[1] == want}


_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture


def set_peer_rcvbuf(pid: int, port: int, size: int) -> int:
    """Set ``SO_RCVBUF`` on the UDP sockets of process ``pid`` bound to ``port``, from outside:
    each is duplicated into this process with ``pidfd_getfd(2)`` (Linux 5.6; needs the right to
    ptrace ``pid``) and set there (the same socket). Returns how many were set."""
    inodes = udp_inodes(port)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    pidfd = os.pidfd_open(pid)
    done = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if not m or int(m.group(1)) not in inodes:
                continue
            dup = libc.syscall(_SYS_PIDFD_GETFD, pidfd, int(fd), 0)
            if dup < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"pidfd_getfd of collectd's socket: {os.strerror(err)}")
            with socket.socket(fileno=dup) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            done += 1
    finally:
        os.close(pidfd)
    return done


def socket_rcvbuf(port: int) -> int | None:
    """The receive buffer (``skmem`` rb) of the first UDP socket on 127.0.0.1:``port``, by ``ss``."""
    try:
        out = subprocess.run(["ss", "-uanm", f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"skmem:\([^)]*\brb(\d+)", out)
    return int(m.group(1)) if m else None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A port free for UDP (the receiver) and TCP (nothing else may take it meanwhile)."""
    while True:
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# --------------------------------------------------------------------------- the two sides


class Side:
    """A receiver: started, then asked for its totals after each phase."""

    name = ""
    proc: subprocess.Popen[bytes]
    port: int

    def __init__(self, work: Path, flush: float, rcvbuf: int | None) -> None:
        self.work = work
        self.flush = flush
        self.rcvbuf = rcvbuf  # SO_RCVBUF asked for, None for the system's default
        self.port = free_udp_tcp_port()

    def start(self) -> None:
        raise NotImplementedError

    def processed(self, since: float) -> int:
        """Datagrams processed so far (the marker's total), as of a flush after ``since`` (time.time())."""
        raise NotImplementedError

    def errors(self) -> int:
        """Lines the side could not parse so far."""
        raise NotImplementedError

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        stop(self.proc)


COLLECTD_CONF = """\
Hostname "bench"
FQDNLookup false
BaseDir "{work}"
PIDFile "{work}/collectd.pid"
TypesDB "{types_db}"
Interval {interval}
WriteThreads 1
AutoLoadPlugin false
LoadPlugin logfile
<Plugin logfile>
  LogLevel "info"
  File "{work}/collectd.log"
  Timestamp true
</Plugin>
LoadPlugin statsd
<Plugin statsd>
  Host "127.0.0.1"
  Port "{port}"
  TimerPercentile 50
  TimerPercentile 95
  TimerUpper true
  TimerCount true
</Plugin>
LoadPlugin csv
<Plugin csv>
  DataDir "{work}/csv"
  StoreRates false
</Plugin>
LoadPlugin match_regex
PostCacheChain "BenchOut"
<Chain "BenchOut">
  <Rule "marker">
    <Match "regex">
      Plugin "^statsd$"
      TypeInstance "^{marker_re}$"
    </Match>
    <Target "write">
      Plugin "csv"
    </Target>
    Target "stop"
  </Rule>
  Target "stop"
</Chain>
"""


class Collectd(Side):
    name = "collectd"

    def start(self) -> None:
        self.work.mkdir(parents=True)
        conf = self.work / "collectd.conf"
        conf.write_text(COLLECTD_CONF.format(work=self.work, types_db=TYPES_DB, interval=self.flush, port=self.port,
                                             marker_re=re.escape(MARKER).replace("\\", "\\\\")))
        self.proc = subprocess.Popen([COLLECTD, "-f", "-C", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=(self.work / "stderr.log").open("wb"), start_new_session=True)
        deadline = time.monotonic() + 30
        while udp_sockets(self.port)[0] == 0:
            if not self.alive() or time.monotonic() > deadline:
                raise SystemExit(f"collectd did not listen on UDP {self.port}:\n{self.log_tail()}")
            time.sleep(0.1)
        if self.rcvbuf is not None and set_peer_rcvbuf(self.proc.pid, self.port, self.rcvbuf) == 0:
            raise SystemExit("found no socket of collectd's to set its receive buffer")

    def _last(self) -> tuple[float, int]:
        last = (0.0, 0)
        for path in glob.glob(str(self.work / "csv" / "bench" / "statsd" / f"derive-{MARKER}-*")):
            with open(path) as f:
                for row in f:
                    t, _, v = row.strip().partition(",")
                    try:
                        last = max(last, (float(t), int(float(v))))
                    except ValueError:
                        pass
        return last

    def processed(self, since: float) -> int:
        deadline = time.monotonic() + self.flush * 3 + 10
        while True:
            t, v = self._last()
            if t > since:
                return v
            if not self.alive() or time.monotonic() > deadline:
                raise SystemExit(f"collectd wrote no {MARKER} after {since:.1f}:\n{self.log_tail()}")
            time.sleep(0.1)

    def errors(self) -> int:
        try:
            return (self.work / "collectd.log").read_text(errors="replace").count("Unable to parse line")
        except OSError:
            return 0

    def log_tail(self) -> str:
        out = ""
        for name in ("collectd.log", "stderr.log"):
            try:
                out += (self.work / name).read_text(errors="replace")[-2000:]
            except OSError:
                pass
        return out


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", re.M)


#: Further keys of monbridge's ``dogstatsd`` section (--option KEY=VALUE).
MONBRIDGE_OPTIONS: dict[str, Any] = {}


class Monbridge(Side):
    """``monbridge run`` with the Datadog integration's ``dogstatsd`` part."""

    def __init__(self, work: Path, flush: float, rcvbuf: int | None, workers: int, contexts: int, label: str) -> None:
        super().__init__(work, flush, rcvbuf)
        self.workers = workers
        self.contexts = contexts
        self.name = label
        self.http = free_port()

    def start(self) -> None:
        self.work.mkdir(parents=True)
        dsd: dict[str, Any] = {"listen_udp": f"127.0.0.1:{self.port}", "workers": self.workers,
                               "flush_interval": self.flush, "max_contexts": max(100_000, self.contexts * 10)}
        if self.rcvbuf is not None:
            dsd["so_rcvbuf"] = self.rcvbuf
        dsd.update(MONBRIDGE_OPTIONS)
        config = {
            "server": {"listen": f"127.0.0.1:{self.http}"},
            "pipeline": {"cardinality_limit": max(10_000, self.contexts * 10)},
            "plugins": [{"plugin_id": "monitoring.integration.datadog", "config": {
                "interval": self.flush,  # the rounds that push its own counts
                "dogstatsd": dsd}}],
        }
        cfg = self.work / "monbridge.yaml"
        cfg.write_text(json.dumps(config))
        # this checkout's bridge, unless PYTHONPATH names another (as the header line says)
        env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg),
                                      "--log-level", "warning"], cwd=self.work, env=env,
                                     stdout=(self.work / "monbridge.log").open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if not self.alive() or time.monotonic() > deadline:
                raise SystemExit(f"monbridge did not come up:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/-/ready", timeout=2).read()
                if udp_sockets(self.port)[0] >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.2)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics summed by metric name."""
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=30).read().decode()
        out: dict[str, float] = {}
        for name, _labels, value in _SAMPLE.findall(body):
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                pass
        return out

    def marker(self, m: dict[str, float]) -> int:
        want = MARKER.replace(".", "_")
        return int(m.get(want + "_total", m.get(want, 0.0)))

    def processed(self, since: float) -> int:
        # The next flush that starts after ``since`` holds every datagram read before it.
        time.sleep(max(0.0, since + self.flush + 1.5 - time.time()))
        return self.marker(self.metrics())

    def dropped(self) -> dict[str, int]:
        """``monbridge.dogstatsd.dropped`` by reason."""
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=30).read().decode()
        out: dict[str, int] = {}
        for name, labels, value in _SAMPLE.findall(body):
            if name == "monbridge_dogstatsd_dropped_total":
                m = re.search(r'reason="([^"]*)"', labels)
                reason = m.group(1) if m else "?"
                out[reason] = out.get(reason, 0) + int(float(value))
        return out

    def errors(self) -> int:
        # every reason a message is dropped for (a bad line, a truncated datagram, max_contexts, ...)
        # but the kernel's drops (a full receive buffer), which are counted from /proc/net/udp here
        return sum(n for reason, n in self.dropped().items() if reason != "receive_buffer")

    def counts(self) -> dict[str, float]:
        """Its own counts (``monbridge.dogstatsd.*``, pushed every round)."""
        return {k: v for k, v in self.metrics().items() if k.startswith("monbridge_dogstatsd_")}

    def log_tail(self) -> str:
        try:
            return (self.work / "monbridge.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""


# --------------------------------------------------------------------------- the phases


def drain(side: Side, timeout: float = 60.0) -> float:
    """Wait until the side's sockets hold nothing; return the time.time() of that."""
    deadline = time.monotonic() + timeout
    while udp_sockets(side.port)[1] > 0:
        if time.monotonic() > deadline or not side.alive():
            raise SystemExit(f"{side.name} did not empty its socket within {timeout:.0f} s")
        time.sleep(0.01)
    return time.time()


@dataclass
class Phase:
    """What one side was sent and processed in a phase (possibly over several slices)."""

    sent: int = 0
    processed: int = 0
    kernel_drops: int = 0
    seconds: float = 0.0  # first send to the socket's queue empty, over the slices
    send_seconds: float = 0.0
    cpu: float = 0.0
    sender_cpu: float = 0.0
    send_errors: int = 0
    load: list[float] = field(default_factory=list)
    bursts: list[tuple[float, float, int]] = field(default_factory=list)  # paced phases: when the kernel dropped

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    @property
    def loss(self) -> float:
        return 1 - self.processed / self.sent if self.sent else float("nan")

    @property
    def unaccounted(self) -> int:
        """Sent, neither processed nor dropped by the kernel: lost inside the side."""
        return self.sent - self.processed - self.kernel_drops

    def drops_text(self) -> str:
        extra = f", lost inside {self.unaccounted:,}" if self.unaccounted else ""
        return f"kernel drops {self.kernel_drops:,}{extra}"

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "rate": self.rate, "loss": self.loss, "unaccounted": self.unaccounted,
                "sent_rate": self.sent / self.send_seconds if self.send_seconds else 0.0}


class Profiler:
    """py-spy sampling a side's process (threads and children) while it is sent to, the samples of
    every turn kept in ``out`` (py-spy's raw format: one stack a line, then its count)."""

    def __init__(self, exe: str, out: Path) -> None:
        self.exe = exe
        self.out = out
        self.files: list[Path] = []

    @contextlib.contextmanager
    def sampling(self, pid: int) -> Iterator[None]:
        path = self.out.with_name(f"{self.out.name}.{len(self.files)}")
        proc = subprocess.Popen([self.exe, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
                                 "--rate", "250", "--format", "raw", "--output", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # py-spy attaches
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if path.exists():
                self.files.append(path)
            else:
                print(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")

    def merge(self) -> dict[str, int]:
        stacks: dict[str, int] = {}
        for path in self.files:
            for row in path.read_text(errors="replace").splitlines():
                stack, _, n = row.rpartition(" ")
                if stack and n.isdigit():
                    stacks[stack] = stacks.get(stack, 0) + int(n)
            path.unlink()
        self.out.write_text("".join(f"{k} {v}\n" for k, v in sorted(stacks.items())))
        return stacks


_FRAME = re.compile(r"^(.*) \(([^():]*?)(?::\d+)?\)$")


def profile_report(stacks: dict[str, int], us_per_datagram: float, top: int = 18) -> list[str]:
    """Where the sampled time went: by function alone (self) and with what it calls (inclusive),
    as a share of the samples and in µs a datagram (the share of the side's CPU a datagram)."""
    total = sum(stacks.values())
    if not total:
        return ["no samples"]
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    lines: dict[str, int] = {}
    for stack, n in stacks.items():
        frames = []
        for f in stack.split(";"):
            f = f.strip()
            if f.startswith("process "):  # the root py-spy adds with --subprocesses
                continue
            m = _FRAME.match(f)
            name, file = (m.group(1), m.group(2)) if m else (f, "")
            parts = Path(file).parts
            for anchor in ("integrations", "bridge", "asyncio", "threading.py", "socket.py"):
                if anchor in parts:
                    file = "/".join(parts[parts.index(anchor):])
                    break
            else:
                file = Path(file).name
            frames.append(f"{name} ({file})")
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
            leaf = stack.rsplit(";", 1)[-1].strip()
            at = re.search(r"\(([^()]*:\d+)\)$", leaf)
            if at:
                where = "/".join(Path(at.group(1)).parts[-3:])
                lines[where] = lines.get(where, 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    out = [f"{total:,} samples; {us_per_datagram:.1f} µs of CPU a datagram in all"]
    for title, table in (("self", own), ("inclusive", incl), ("self, by line", lines)):
        out.append(f"  {title}:")
        for name, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            out.append(f"    {n / total:6.1%} {n / total * us_per_datagram:7.2f} µs  {name}")
    return out


@contextlib.contextmanager
def drop_bursts(port: int, into: list[tuple[float, float, int]]) -> Iterator[None]:
    """Watch the kernel's drops on ``port`` every 20 ms meanwhile; each run of samples in which
    they grew is a burst, added to ``into`` as (start s, length s, datagrams) from the start."""
    done = threading.Event()

    def watch() -> None:
        t0 = time.monotonic()
        last = udp_sockets(port)[2]
        burst: list[float] | None = None  # [start, end, count]
        while not done.wait(0.02):
            now, drops = time.monotonic() - t0, udp_sockets(port)[2]
            if drops > last:
                if burst is None:
                    burst = [now - 0.02, now, 0]
                burst[1], burst[2] = now, burst[2] + drops - last
            elif burst is not None:
                into.append((burst[0], burst[1] - burst[0], int(burst[2])))
                burst = None
            last = drops
        if burst is not None:
            into.append((burst[0], burst[1] - burst[0], int(burst[2])))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def send_slice(side: Side, sender: Sender, duration: float, rate: float | None, ph: Phase, round_: int,
               profiler: Profiler | None = None) -> float:
    """Send to ``side`` for ``duration`` s from round ``round_``'s datagrams on, wait for its socket
    to empty; add it to ``ph``; return the time.time() at which the socket was empty. A paced send
    records when the kernel dropped."""
    drops0 = udp_sockets(side.port)[2]
    t0 = time.time()
    ph.load.append(os.getloadavg()[0])
    with profiler.sampling(side.proc.pid) if profiler is not None else contextlib.nullcontext(), \
            drop_bursts(side.port, ph.bursts) if rate is not None else contextlib.nullcontext():
        got = sender.run(side.port, duration, rate, round_)
        drained = drain(side)
    ph.kernel_drops += udp_sockets(side.port)[2] - drops0
    ph.sent += int(got["sent"])
    ph.seconds += drained - t0
    ph.send_seconds += got["wall"]
    ph.sender_cpu += got["cpu"]
    ph.send_errors += int(got["errors"])
    return drained


@dataclass
class Run:
    side: Side
    sender: Sender
    total: int = 0  # the marker's total before the current phase
    res: dict[str, Any] = field(default_factory=dict)


def saturation(runs: list[Run], duration: float, slices: int, profilers: dict[str, Profiler]) -> None:
    """Every side flat out, in turns of ``duration / slices`` seconds, so that a change in the
    machine's load falls on all of them; then each side's total after its next flush."""
    phases = {id(r): Phase() for r in runs}
    last: dict[int, float] = {}
    cpu0 = {id(r): tree_cpu(r.side.proc.pid) for r in runs}
    for turn in range(slices):  # the turn's round: fresh values, the same for every side
        for r in runs:
            last[id(r)] = send_slice(r.side, r.sender, duration / slices, None, phases[id(r)], turn,
                                     profilers.get(r.side.name))
    for r in runs:
        ph = phases[id(r)]
        total = r.side.processed(last[id(r)])
        # CPU over the whole phase window: the other sides' turns included (flushes, idle work)
        ph.cpu = tree_cpu(r.side.proc.pid) - cpu0[id(r)]
        ph.processed, r.total = total - r.total, total
        r.res["saturation"] = ph.as_dict()
        r.res["rss_after"] = tree_rss(r.side.proc.pid)
        print(f"  {r.side.name}: saturation: {ph.rate:,.0f} datagrams/s processed ({ph.processed:,} of {ph.sent:,} "
              f"sent at {ph.sent / ph.send_seconds:,.0f}/s; {ph.drops_text()}); CPU {ph.cpu:.1f} s "
              f"over the phase; load average {min(ph.load):.1f}-{max(ph.load):.1f}", flush=True)


def half_rate(r: Run, duration: float, round_: int) -> None:
    """``r``'s side alone at half its saturation rate, paced, from round ``round_`` on."""
    rate = r.res["saturation"]["rate"] / 2
    ph = Phase()
    cpu0 = tree_cpu(r.side.proc.pid)
    drained = send_slice(r.side, r.sender, duration, rate, ph, round_)
    total = r.side.processed(drained)
    ph.cpu = tree_cpu(r.side.proc.pid) - cpu0
    ph.processed, r.total = total - r.total, total
    r.res["half"] = {**ph.as_dict(), "target_rate": rate}
    print(f"  {r.side.name}: at {rate:,.0f}/s: {ph.processed:,} of {ph.sent:,} processed, loss {ph.loss:.4%} "
          f"({ph.drops_text()}); CPU {ph.cpu:.1f} s; load average {ph.load[0]:.1f}", flush=True)
    if ph.bursts:
        worst = sorted(sorted(ph.bursts, key=lambda b: -b[2])[:8])
        print(f"    the kernel dropped in {len(ph.bursts)} burst(s); the largest, at seconds into the phase: "
              + ", ".join(f"{t:.1f} s ({n:,} in {d * 1000:.0f} ms)" for t, d, n in worst), flush=True)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def summary(name: str, r: dict[str, Any], contexts: int) -> dict[str, float]:
    sat = r["saturation"]
    lines = r["lines_per_datagram"]
    out = {
        "rate": sat["rate"],
        "lines_rate": sat["rate"] * lines,
        "cpu_per_m": sat["cpu"] / sat["processed"] * 1e6 if sat["processed"] else float("inf"),
        "cpu_per_m_lines": sat["cpu"] / (sat["processed"] * lines) * 1e6 if sat["processed"] else float("inf"),
        "rss_idle": r["rss_idle"],
        "rss": r["rss_after"],
        "bytes_per_context": (r["rss_after"] - r["rss_idle"]) / contexts,
        "loss": r["half"]["loss"] if "half" in r else float("nan"),
    }
    if "half" in r:
        h = r["half"]
        out["cpu_per_m_half"] = h["cpu"] / h["processed"] * 1e6 if h["processed"] else float("inf")
    print(f"{name:<22} {out['rate']:>12,.0f} {out['lines_rate']:>12,.0f} {out['cpu_per_m']:>9.2f} "
          f"{out.get('cpu_per_m_half', float('nan')):>9.2f} {out['loss']:>9.4%} {mib(out['rss_idle']):>10} "
          f"{mib(out['rss']):>10} {out['bytes_per_context']:>9,.0f}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=20.0,
                    help="seconds of the flat-out phase, per side (default 20)")
    ap.add_argument("--slices", type=int, default=4,
                    help="the flat-out phase is sent in this many turns per side, the sides alternating")
    ap.add_argument("--loss-duration", type=float, default=20.0, help="seconds of the half-rate phase (default 20)")
    ap.add_argument("--contexts", type=int, default=10_000)
    ap.add_argument("--datagrams", type=int, default=100_000,
                    help="datagrams a round (each turn of the flat-out phase and the half-rate phase: the same "
                         "lines, values of their own; sent in a loop)")
    ap.add_argument("--flush-interval", type=float, default=10.0, help="both sides' flush interval (default 10 s)")
    ap.add_argument("--system-rcvbuf", action="store_true",
                    help="both sides' sockets at the system's receive buffer (net.core.rmem_default; monbridge's "
                         "so_rcvbuf: null)")
    ap.add_argument("--rcvbuf", type=int, metavar="BYTES",
                    help="SO_RCVBUF for both sides' sockets (monbridge's so_rcvbuf; set on collectd's socket from "
                         "outside with pidfd_getfd, as it has no option for it); default: the system's "
                         "(net.core.rmem_default), which neither side changes")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a key of monbridge's dogstatsd section (a YAML value), e.g. reader_queue_bytes=0")
    ap.add_argument("--workers", type=int, default=1,
                    help="monbridge's dogstatsd workers (SO_REUSEPORT sockets, each with its own receive buffer)")
    ap.add_argument("--no-dogstatsd", action="store_true", help="skip monbridge's tagged DogStatsD stream")
    ap.add_argument("--only", choices=("collectd", "monbridge"), help="run one side of the shared stream only")
    ap.add_argument("--json", type=Path, help="write the figures there as JSON")
    ap.add_argument("--profile", type=Path, metavar="PATH",
                    help="sample monbridge's saturation turns with py-spy (on PATH): raw stacks to PATH-<side>, "
                         "where the time goes printed (the sampling costs monbridge some CPU: its figures are "
                         "then not the benchmark's)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run (about a minute): 6 s and 5 s phases, 2,000 contexts, 2 s flushes, unless given")
    ap.add_argument("--seed", type=int, default=13)
    if ap.parse_known_args()[0].quick:  # its values, unless given
        ap.set_defaults(duration=6.0, loss_duration=5.0, contexts=2_000, slices=2, datagrams=20_000,
                        flush_interval=2.0)
    args = ap.parse_args()
    import yaml
    for option in args.option:
        key, sep, value = option.partition("=")
        if not sep:
            ap.error(f"--option {option}: KEY=VALUE expected")
        MONBRIDGE_OPTIONS[key] = yaml.safe_load(value)
    if args.only != "monbridge" and not os.access(COLLECTD, os.X_OK):
        print(f"needs {COLLECTD} (apt-get install collectd-core)")
        return 2
    if not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, str(ROOT))
    import bridge

    with open("/proc/sys/net/core/rmem_default") as f:
        rmem_default = int(f.read())
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    # Both sides get the same receive buffer: monbridge's default so_rcvbuf (collectd's socket is given
    # it from outside), --rcvbuf's, or with --system-rcvbuf the system's default on both.
    if args.system_rcvbuf:
        ask, rcvbuf_how = None, "net.core.rmem_default"
        MONBRIDGE_OPTIONS["so_rcvbuf"] = None
    elif args.rcvbuf is not None:
        ask, rcvbuf_how = args.rcvbuf, f"SO_RCVBUF {args.rcvbuf:,}"
    else:
        from integrations.datadog.config import DEFAULT_SO_RCVBUF
        ask, rcvbuf_how = DEFAULT_SO_RCVBUF, f"monbridge's default so_rcvbuf {DEFAULT_SO_RCVBUF:,}"
    args.rcvbuf = ask
    # what the kernel gives: the default, or twice what was asked for up to rmem_max (socket(7))
    rcvbuf = rmem_default if ask is None else 2 * min(ask, rmem_max)
    t_build = time.monotonic()
    rounds = args.slices + 1  # a round a turn of the flat-out phase, one for the half-rate phase
    shared = build_stream(args.contexts, args.datagrams, args.seed, dogstatsd=False, rounds=rounds)
    full = None if args.no_dogstatsd else build_stream(args.contexts, args.datagrams, args.seed, dogstatsd=True,
                                                       rounds=rounds)
    senders = {"statsd": Sender(shared)}
    if full is not None:
        senders["dogstatsd"] = Sender(full)
    print(f"bench_dogstatsd: {args.duration:g} s flat out, then {args.loss_duration:g} s at half that rate, each side "
          f"alone with the sender; flush every {args.flush_interval:g} s; receive buffers "
          f"{rcvbuf:,} bytes ({rcvbuf_how}) both sides; monbridge {args.workers} worker(s); "
          f"bridge from {Path(bridge.__file__).parent}; load average {os.getloadavg()[0]:.1f}; "
          f"streams built in {time.monotonic() - t_build:.1f} s")
    print(f"  {shared.describe()}")
    if full is not None:
        print(f"  {full.describe()} (monbridge only)")
    results: dict[str, Any] = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "rcvbuf": rcvbuf, "streams": {}}
    for s in (shared, full):
        if s is not None:
            results["streams"][s.name] = {"rounds": s.rounds, "datagrams": len(s.datagrams), "lines": s.lines,
                                          "bytes": s.nbytes, "contexts": s.contexts, "kinds": s.kinds}
    work = Path(tempfile.mkdtemp(prefix="bench-dogstatsd-"))
    status = 0
    runs: list[Run] = []
    if args.only != "monbridge":
        runs.append(Run(Collectd(work / "collectd", args.flush_interval, args.rcvbuf), senders["statsd"]))
    if args.only != "collectd":
        runs.append(Run(Monbridge(work / "monbridge", args.flush_interval, args.rcvbuf, args.workers,
                                  args.contexts, "monbridge"), senders["statsd"]))
        if full is not None:
            runs.append(Run(Monbridge(work / "monbridge-dsd", args.flush_interval, args.rcvbuf, args.workers,
                                      args.contexts, "monbridge (DogStatsD)"), senders["dogstatsd"]))
    profilers: dict[str, Profiler] = {}
    try:
        for r in runs:
            r.side.start()
        time.sleep(2.0)
        for r in runs:
            r.res.update(rcvbuf=socket_rcvbuf(r.side.port), sockets=udp_sockets(r.side.port)[0],
                         rss_idle=tree_rss(r.side.proc.pid),
                         lines_per_datagram=r.sender.stream.lines / len(r.sender.stream.datagrams))
        if args.profile is not None:
            exe = shutil.which("py-spy")
            if exe is None:
                raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
            args.profile.parent.mkdir(parents=True, exist_ok=True)
            profilers = {r.side.name: Profiler(exe, args.profile.with_name(f"{args.profile.name}-{slug(r.side.name)}"))
                         for r in runs if isinstance(r.side, Monbridge)}
        saturation(runs, args.duration, args.slices, profilers)
        for r in runs:
            half_rate(r, args.loss_duration, args.slices)
        for r in runs:
            r.res.update(errors=r.side.errors(), rss_end=tree_rss(r.side.proc.pid), alive=r.side.alive())
            if isinstance(r.side, Monbridge):
                r.res.update(dropped=r.side.dropped(), counts=r.side.counts())
            if not r.res["alive"]:
                print(f"{r.side.name} died:\n{r.side.log_tail()}")
    finally:
        for r in runs:
            if hasattr(r.side, "proc"):
                r.side.stop()
        shutil.rmtree(work, ignore_errors=True)
    raw = {r.side.name: r.res for r in runs}
    results["raw"] = raw
    print(f"\n{'':<22} {'datagrams/s':>12} {'lines/s':>12} {'CPU s/M':>9} {'(half)':>9} {'loss':>9} "
          f"{'RSS idle':>10} {'RSS':>10} {'B/context':>9}")
    figures = {name: summary(name, r, args.contexts) for name, r in raw.items()}
    results["figures"] = figures
    for name, prof in profilers.items():
        print(f"\nwhere {name}'s time goes at saturation (py-spy, stacks in {prof.out}):")
        print("\n".join(profile_report(prof.merge(), figures[name]["cpu_per_m"])))
    for name, r in raw.items():
        for ph in ("saturation", "half"):
            p = r.get(ph)
            if p and p["processed"] > p["sent"]:
                print(f"error: {name} counted {p['processed']:,} datagrams in its {ph} phase, {p['sent']:,} were sent")
                status = 1
        if r["rcvbuf"] != rcvbuf:
            print(f"error: {name}'s socket has a receive buffer of {r['rcvbuf']} bytes, not {rcvbuf:,}")
            status = 1
        if not r["alive"]:
            status = 1
        if r["errors"]:
            print(f"error: {name} reported {r['errors']:,} lines it could not parse or dropped (every line sent is "
                  f"valid){': ' + str(r['dropped']) if 'dropped' in r else ''}")
            status = 1
    if "collectd" in figures and "monbridge" in figures:
        c, m = figures["collectd"], figures["monbridge"]
        ratio = m["rate"] / c["rate"]
        results["ratio"] = ratio
        print(f"monbridge / collectd: {ratio:.2f}x the datagrams a second at saturation (goal >= 1x): "
              f"{'met' if ratio >= 1 else 'NOT met'}; {m['cpu_per_m'] / c['cpu_per_m']:.2f}x the CPU a datagram; "
              f"{m['bytes_per_context'] / c['bytes_per_context'] if c['bytes_per_context'] > 0 else float('nan'):.2f}x "
              f"the memory a context")
    for name, f in figures.items():
        if f["loss"] == f["loss"]:
            print(f"{name}: loss at half of saturation {f['loss']:.4%} (goal < {LOSS_GOAL:.1%}): "
                  f"{'met' if f['loss'] < LOSS_GOAL else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
