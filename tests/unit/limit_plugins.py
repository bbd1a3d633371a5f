"""Third-party-style collectors for the end-to-end tests of plugin limits and the sandbox
(``tests/integration/test_isolation_limits.py``), importable by a worker by reference.

``HostileCollector`` behaves until ``after`` seconds past its ``initialize``, then misbehaves as
its ``mode`` says, at every collection; only its first worker does (a restarted one behaves:
``misbehaved`` in ``out`` marks it). What it did, and what it was refused, it appends to
``events.jsonl`` in its ``out`` directory (the one it is granted) as ``{"t": time.time(), ...}``
and reports as metrics (``hostile_refused{what,error}``, ``hostile_allowed{what}``).
``TickingCollector`` appends each collection's ``time.time()`` to ``ticks`` in its ``out``.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from bridge import CollectorConfig, Metric, MetricKind, PluginMetadata, PluginType
from tests.unit.isolation_plugins import MisbehavingCollector

MODES = ("none", "block", "spin", "duty", "leak", "raw_sockets", "connections", "write", "host", "shell")


class HostileConfig(CollectorConfig):
    out: str  # the granted directory
    mode: str = "none"
    after: float = 0.0  # seconds of good behaviour first
    sleep: float = 3600.0  # block: time.sleep this long
    duty: float = 0.0  # duty: CPU seconds spent in every collection
    leak_mb: int = 0  # leak: MiB kept (touched) from every collection
    granted_port: int = 0  # a loopback listener it is granted
    other_port: int = 0  # a loopback listener it is not granted
    outside: str = ""  # write: a file outside ``out``
    shell: str = "/bin/sh"
    program: str = ""  # shell: a program it is granted


def _rss_mib() -> float:
    """Anonymous and shared-memory resident pages, as the agent counts them."""
    kb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssShmem:")):
            kb += int(line.split()[1])
    return kb / 1024


def _raw_connect(port: int) -> int:
    """A TCP connection to 127.0.0.1:``port`` made through libc: no audit hook sees it."""
    libc = ctypes.CDLL(None, use_errno=True)
    sa = (ctypes.c_ubyte * 16)(*([2, 0, *port.to_bytes(2, "big"), 127, 0, 0, 1] + [0] * 8))
    fd = libc.socket(2, 1, 0)
    if fd < 0 or libc.connect(fd, sa, 16) != 0:
        raise OSError(ctypes.get_errno(), "raw connect failed")
    return int(fd)


class HostileCollector(MisbehavingCollector):  # its lifecycle (start, stop, shutdown: nothing)
    config_model: ClassVar[type[CollectorConfig]] = HostileConfig

    def __init__(self) -> None:
        self.cfg: HostileConfig | None = None  # type: ignore[assignment]
        self.began: float | None = None
        self.first_worker = True
        self.kept: list[Any] = []
        self.refused: dict[tuple[str, str], int] = {}
        self.allowed: dict[str, int] = {}

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("monitoring.metrics.hostile", "hostile", "1.0", "tests", "", PluginType.METRIC_COLLECTOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.cfg = HostileConfig.model_validate(dict(config))
        if self.cfg.mode not in MODES:
            raise ValueError(f"mode {self.cfg.mode!r} is not one of {MODES}")
        self.began = time.monotonic()
        self.first_worker = not Path(self.cfg.out, "misbehaved").exists()

    def event(self, event: str, **more: Any) -> None:
        assert self.cfg is not None
        with open(Path(self.cfg.out, "events.jsonl"), "a") as f:
            f.write(json.dumps({"t": time.time(), "event": event, **more}) + "\n")

    def attempt(self, what: str, action: Any) -> None:
        """Run ``action``; count and record whether it was allowed or refused (and how)."""
        try:
            action()
        except OSError as e:
            key = (what, type(e).__name__)
            self.refused[key] = self.refused.get(key, 0) + 1
            self.event("refused", what=what, error=type(e).__name__, errno=e.errno, message=str(e)[:200])
        else:
            self.allowed[what] = self.allowed.get(what, 0) + 1
            self.event("allowed", what=what)

    async def collect_metrics(self) -> Sequence[Metric]:
        c = self.cfg
        assert c is not None and self.began is not None
        if c.mode != "none" and self.first_worker and time.monotonic() - self.began >= c.after:
            Path(c.out, "misbehaved").touch()
            self.misbehave(c)
        out = [Metric("hostile.pid", MetricKind.GAUGE, os.getpid(), "", "the worker's pid")]
        out += [Metric("hostile.refused", MetricKind.COUNTER, n, "", "actions refused", {"what": w, "error": e})
                for (w, e), n in self.refused.items()]
        out += [Metric("hostile.allowed", MetricKind.COUNTER, n, "", "actions allowed", {"what": w})
                for w, n in self.allowed.items()]
        return out

    def misbehave(self, c: HostileConfig) -> None:
        first = not self.kept and not self.refused and not self.allowed and c.mode not in ("duty", "leak")
        if c.mode in ("block", "spin") or first:
            self.event("begin", mode=c.mode, rss_mib=_rss_mib())
        if c.mode == "block":
            time.sleep(c.sleep)
        elif c.mode == "spin":
            while True:
                pass
        elif c.mode == "duty":
            self.event("duty", cpu=time.process_time())
            end = time.process_time() + c.duty
            while time.process_time() < end:
                pass
        elif c.mode == "leak":
            self.event("leak", rss_mib=_rss_mib(), leak_mb=c.leak_mb)
            self.kept.append(os.urandom(c.leak_mb << 20))
        elif c.mode == "raw_sockets":
            self.kept.append(_raw_connect(c.granted_port))
            self.event("socket", open=len(self.kept))
        elif c.mode == "connections":
            def connect() -> None:
                self.kept.append(socket.create_connection(("127.0.0.1", c.granted_port), timeout=2))
            self.attempt("connect", connect)
        elif c.mode == "write":
            self.attempt("write_inside", lambda: Path(c.out, "inside.txt").write_text("granted\n"))
            self.attempt("write_outside", lambda: Path(c.outside).write_text("not granted\n"))
        elif c.mode == "host":
            self.attempt("granted_host", lambda: socket.create_connection(("127.0.0.1", c.granted_port), timeout=2).close())
            self.attempt("other_host", lambda: socket.create_connection(("127.0.0.1", c.other_port), timeout=2).close())
        elif c.mode == "shell":
            self.attempt("program", lambda: subprocess.run([c.program], check=True, timeout=5))
            self.attempt("shell", lambda: subprocess.run([c.shell, "-c", "echo shell ran"], check=True, timeout=5))


class TickingCollector(HostileCollector):
    """Well-behaved: each collection appends its ``time.time()`` to ``<out>/ticks``."""

    def metadata(self) -> PluginMetadata:
        return PluginMetadata("monitoring.metrics.ticking", "ticking", "1.0", "tests", "", PluginType.METRIC_COLLECTOR)

    async def collect_metrics(self) -> Sequence[Metric]:
        assert self.cfg is not None
        now = time.time()
        with open(Path(self.cfg.out, "ticks"), "a") as f:
            f.write(f"{now!r}\n")
        return [Metric("ticking.at", MetricKind.GAUGE, now, "s", "when it collected")]
