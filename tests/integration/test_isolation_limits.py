"""Every limit and sandbox refusal end to end, through a running agent (``bridge.cli run``): a
third-party collector in a worker process (``isolation: process``, small ``limits:``, explicit
``grants:``) that blocks, leaks, spins, opens sockets past its budget, writes outside its
directory, connects to a host it was not granted or runs a shell, next to a well-behaved
collector. Each misbehaviour is stopped (``stop_reason`` in ``/api/v1/plugins``,
``monbridge_plugin_stops_total``) within its bound plus 10 %, or refused (the plugin saw the
``PermissionError``) while its granted counterpart works; ``/metrics`` keeps answering, the
well-behaved collector keeps its schedule, and no worker outlives the agent."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.pluginhost import LIMITS_CHECK_S

REPO_ROOT = Path(__file__).resolve().parents[2]
REF = "tests.unit.limit_plugins"
HOSTILE = "monitoring.metrics.hostile"
TICKING = "monitoring.metrics.ticking"
TICK_INTERVAL = 1.0
#: Ticks of the ticking plugin a run waits for at least (``assert_agent_kept_going`` needs 5).
MIN_TICKS = 6
#: How often the agent checks a worker's limits: the bound on noticing a limit crossed where no
#: kernel limit stops the worker first.
CHECK_INTERVAL = LIMITS_CHECK_S
#: What a response of ``/metrics`` may take while a plugin misbehaves.
METRICS_ANSWER_S = 1.0


@dataclass
class Case:
    mode: str
    config: dict[str, Any]
    limits: dict[str, Any] = field(default_factory=dict)
    grants: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # the stop reason; None: refusals, the plugin keeps running


# CPU: a 4 s window at 10 % (0.4 s of CPU) and a 1 s burst window at 20 % (0.2 s); the plugin
# starts misbehaving after both windows have passed its worker's start-up.
CPU_LIMITS = {"cpu_percent": 10, "cpu_window": 4, "cpu_burst_percent": 20, "cpu_burst_window": 1}
STOPS = {
    "block": Case("block", {"timeout": 2, "after": 1.5}, reason="timeout"),
    "leak": Case("leak", {"leak_mb": 4, "after": 1.5}, {"memory_mb": 40}, reason="memory_limit"),
    "spin": Case("spin", {"timeout": 60, "after": 5.5}, CPU_LIMITS, reason="cpu_limit"),
    "duty": Case("duty", {"duty": 0.075, "after": 5.5}, CPU_LIMITS, reason="cpu_limit"),
    "raw_sockets": Case("raw_sockets", {"after": 1.5}, {"connections": 3}, reason="connection_limit"),
}
REFUSALS = {
    "connections": Case("connections", {}, {"connections": 3}),
    "write": Case("write", {}),
    "host": Case("host", {}),
    "shell": Case("shell", {}),
}


@pytest.fixture
def listeners() -> Iterator[list[socket.socket]]:
    """Two loopback listeners (the granted one first) that accept and hold what connects."""
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        socks.append(s)
    yield socks
    for s in socks:
        s.close()


def _get(url: str) -> tuple[float, bytes]:
    t = time.monotonic()
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        body = r.read()
    return time.monotonic() - t, body


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _processes_in(cwd: Path) -> list[int]:
    """Live processes whose working directory is ``cwd`` (the agent's and its workers')."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "cwd") == str(cwd) and _alive(int(d.name)):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


@dataclass
class Run:
    statuses: dict[str, dict[str, Any]]
    metrics: str
    events: list[dict[str, Any]]
    ticks: list[float]
    answers: int
    slowest_answer: float
    worker_pids: set[int]
    stderr: str


def run_agent(tmp_path: Path, case: Case, listeners: list[socket.socket],
              done: Callable[[dict[str, dict[str, Any]], list[dict[str, Any]]], bool]) -> Run:
    """Run an agent with ``case``'s hostile collector (in a worker) and the ticking one (in
    process) until ``done(statuses, events)`` (at most 40 s); then SIGTERM it. Asserts the agent
    exits 0 and leaves no process behind."""
    site = tmp_path / "site"
    info = site / "monbridge_limit_plugins-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: monbridge-limit-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[monbridge.collectors]\n{HOSTILE} = {REF}:HostileCollector\n{TICKING} = {REF}:TickingCollector\n")
    out, ticks_dir = tmp_path / "out", tmp_path / "ticks"
    out.mkdir()
    ticks_dir.mkdir()
    grants = {"paths": [str(out)], **case.grants}
    config = {"collection_interval": 0.5, "out": str(out), "mode": case.mode, **case.config}
    port = _free_port()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(json.dumps({
        "server": {"listen": f"127.0.0.1:{port}"},
        "plugins": [
            {"plugin_id": TICKING, "isolation": "in_process",
             "config": {"collection_interval": TICK_INTERVAL, "out": str(ticks_dir)}},
            {"plugin_id": HOSTILE, "isolation": "process", "limits": case.limits, "grants": grants, "config": config},
        ]}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(site)])}
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    answers, slowest, pids = 0, 0.0, set()
    statuses: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                took, _ = _get(f"{base}/metrics")
            except OSError:
                assert answers == 0, "/metrics stopped answering"
                continue
            answers += 1
            slowest = max(slowest, took)
            statuses = {p["plugin_id"]: p for p in json.loads(_get(f"{base}/api/v1/plugins")[1])["data"]}
            if statuses[HOSTILE].get("worker_pid"):
                if not pids:  # what the end's check looks for: the agent's workers work where it does
                    assert {proc.pid, statuses[HOSTILE]["worker_pid"]} <= set(_processes_in(tmp_path))
                pids.add(statuses[HOSTILE]["worker_pid"])
            # Done, and the ticking plugin has ticked often enough to show it kept its schedule
            # (assert_agent_kept_going): the hostile worker may start sooner than it ticks.
            if done(statuses, _events(out)) and _tick_count(ticks_dir) >= MIN_TICKS:
                break
        else:
            pytest.fail(f"not done in time: {statuses.get(HOSTILE)}; {_events(out)[-5:]}")
        metrics = _get(f"{base}/metrics")[1].decode()
        statuses = {p["plugin_id"]: p for p in json.loads(_get(f"{base}/api/v1/plugins")[1])["data"]}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    for _ in range(50):  # the workers are gone with the agent (none is left behind)
        if not _processes_in(tmp_path):
            break
        time.sleep(0.1)
    assert not _processes_in(tmp_path), f"left running: {_processes_in(tmp_path)}"
    assert not any(_alive(p) for p in pids)
    ticks = [float(x) for x in (ticks_dir / "ticks").read_text().split()]
    return Run(statuses, metrics, _events(out), ticks, answers, slowest, pids, err)


def _tick_count(ticks_dir: Path) -> int:
    try:
        return len((ticks_dir / "ticks").read_text().split())
    except FileNotFoundError:
        return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(out: Path) -> list[dict[str, Any]]:
    try:
        text = (out / "events.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def _sample(metrics: str, name: str, *labels: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(lb in line for lb in labels):
            return float(line.rsplit(" ", 1)[1])
    return None


def assert_agent_kept_going(run: Run) -> None:
    assert run.answers >= 10 and run.slowest_answer <= METRICS_ANSWER_S, (run.answers, run.slowest_answer)
    ticking = run.statuses[TICKING]
    assert ticking["stop_reason"] is None and ticking["state"] == "running"
    gaps = [b - a for a, b in zip(run.ticks, run.ticks[1:], strict=False)]
    assert len(gaps) >= 4, run.ticks
    assert max(abs(g - TICK_INTERVAL) for g in gaps) <= 0.1 * TICK_INTERVAL, gaps


def stop_bound(case: Case, events: list[dict[str, Any]], mechanisms: dict[str, str]) -> tuple[float, float]:
    """When the misbehaviour crossed the limit (the agent's clock) and how long stopping it may
    take from then: the call's timeout; for a limit watched by the agent one check interval
    after the CPU budget or the memory or socket count was crossed (a kernel limit is sooner)."""
    lim = {"memory_mb": 50.0, "connections": 10, **case.limits}
    if case.mode == "block":
        return next(e["t"] for e in events if e["event"] == "begin"), case.config["timeout"]
    if case.mode == "leak":  # the first allocation to take the worker over its limit
        step = next(e for e in events if e["event"] == "leak" and e["rss_mib"] + e["leak_mb"] > lim["memory_mb"])
        return step["t"], CHECK_INTERVAL
    if case.mode == "raw_sockets":  # the socket over the limit
        return next(e["t"] for e in events if e["event"] == "socket" and e["open"] > lim["connections"]), CHECK_INTERVAL
    sustained = lim["cpu_percent"] / 100 * lim["cpu_window"]
    burst = lim["cpu_burst_percent"] / 100 * lim["cpu_burst_window"]
    throttled = mechanisms["cpu"].startswith("cgroup")
    if case.mode == "spin":  # a whole core, or the burst quota where the kernel throttles it
        rate = lim["cpu_burst_percent"] / 100 if throttled else 1.0
        budget = sustained if throttled else min(sustained, burst)
        first = next(e["t"] for e in events if e["event"] == "begin")
    else:  # duty: a share of a core under the burst limit, over the sustained one
        rate = case.config["duty"] / 0.5
        budget = sustained
        first = next(e["t"] for e in events if e["event"] == "duty")
    return first, budget / rate + CHECK_INTERVAL


@pytest.mark.parametrize("name", list(STOPS))
def test_a_plugin_over_a_limit_is_stopped_in_time_while_the_agent_keeps_going(tmp_path, listeners, name):
    case = copy.deepcopy(STOPS[name])
    case.config.setdefault("granted_port", listeners[0].getsockname()[1])
    if case.mode == "raw_sockets":
        case.grants.setdefault("hosts", [f"127.0.0.1:{case.config['granted_port']}"])

    def done(st: dict[str, dict[str, Any]], events: list[dict[str, Any]]) -> bool:
        h = st[HOSTILE]
        return h["stops"][case.reason] >= 1 and h["state"] == "running" and h["restarts"] >= 1 \
            and (h["last_success_at"] or 0) > h["stopped_at"] and time.time() - h["stopped_at"] > 3 * TICK_INTERVAL

    run = run_agent(tmp_path, case, listeners, done)
    h = run.statuses[HOSTILE]
    assert h["isolation"] == "process" and h["stop_reason"] == case.reason, h
    assert sum(h["stops"].values()) == h["stops"][case.reason], h["stops"]  # stopped for this reason only
    stops = _sample(run.metrics, "monbridge_plugin_stops_total", f'plugin_id="{HOSTILE}"', f'reason="{case.reason}"')
    assert stops is not None and stops >= 1
    # The first stop, in time: its bound from the moment the limit was crossed, plus 10 %.
    crossed, bound = stop_bound(case, run.events, h["mechanisms"])
    assert sum(h["stops"].values()) == 1, "a restarted worker behaves (the plugin misbehaves in its first only)"
    first_stop = h["stopped_at"]
    assert crossed <= first_stop <= crossed + 1.1 * bound, (first_stop - crossed, bound, h["stop_detail"])
    detail = h["stop_detail"]
    if case.reason == "timeout":
        assert f"collection did not end within {case.config['timeout']}s" in detail
    elif case.reason == "memory_limit":
        # The kernel's OOM kill at the cgroup limit, or the RSS watch, whichever is first.
        assert f"limit of {case.limits['memory_mb']} MiB" in detail
    elif case.reason == "connection_limit":
        assert f"over its limit of {case.limits['connections']}" in detail
    else:
        throttled = h["mechanisms"]["cpu"].startswith("cgroup")
        over_burst = case.mode == "spin" and not throttled  # else throttled to the burst, stopped sustained
        assert ("(burst)" in detail) is over_burst, (detail, h["mechanisms"]["cpu"])
        assert "of a core" in detail
    assert len(run.worker_pids) >= 2, "the stopped worker was replaced"
    assert_agent_kept_going(run)


@pytest.mark.parametrize("name", list(REFUSALS))
def test_what_is_not_granted_is_refused_and_what_is_works(tmp_path, listeners, name):
    case = copy.deepcopy(REFUSALS[name])
    granted, other = (s.getsockname()[1] for s in listeners)
    outside = tmp_path / "outside.txt"
    case.config.update(granted_port=granted, other_port=other, outside=str(outside))
    if name in ("connections", "host"):
        case.grants["hosts"] = [f"127.0.0.1:{granted}"]
    expected = {"connections": ("connect", "connect"), "write": ("write_inside", "write_outside"),
                "host": ("granted_host", "other_host"), "shell": ("program", "shell")}[name]
    if name == "shell":
        program = shutil.which("true")
        assert program is not None
        case.config["program"] = program
        case.grants["exec"] = [os.path.realpath(program)]

    def done(st: dict[str, dict[str, Any]], events: list[dict[str, Any]]) -> bool:
        refused = [e for e in events if e["event"] == "refused"]
        return len(refused) >= 2 and st[HOSTILE]["runs"] >= 6

    run = run_agent(tmp_path, case, listeners, done)
    h = run.statuses[HOSTILE]
    assert h["stop_reason"] is None and h["state"] == "running" and h["errors"] == 0, h
    assert h["restarts"] == 0 and not any(h["stops"].values())
    allowed_what, refused_what = expected
    allowed = [e for e in run.events if e["event"] == "allowed"]
    refused = [e for e in run.events if e["event"] == "refused"]
    assert {e["what"] for e in refused} == {refused_what}, refused
    assert all(e["error"] == "PermissionError" for e in refused), refused
    assert {e["what"] for e in allowed} == {allowed_what}
    # The plugin reported both through the agent.
    assert _sample(run.metrics, "hostile_refused_total", f'what="{refused_what}"', 'error="PermissionError"')
    assert _sample(run.metrics, "hostile_allowed_total", f'what="{allowed_what}"')
    if name == "connections":  # the budget's sockets connected; each one past it was refused
        limit = case.limits["connections"]
        assert len(allowed) == limit and refused[0]["t"] > allowed[-1]["t"]
        listeners[0].setblocking(False)
        accepted = 0
        while True:
            try:
                listeners[0].accept()[0].close()
                accepted += 1
            except BlockingIOError:
                break
        assert accepted == limit
    elif name == "write":
        assert (tmp_path / "out" / "inside.txt").read_text() == "granted\n"
        assert not outside.exists()
    elif name == "host":
        listeners[1].setblocking(False)
        with pytest.raises(BlockingIOError):
            listeners[1].accept()  # nothing reached the host it was not granted
        assert any(e["errno"] in (1, 13) or "not granted" in e["message"] for e in refused), refused
    elif name == "shell":
        assert any(e["errno"] in (1, 13) for e in refused), refused
        assert "shell ran" not in run.stderr
    assert_agent_kept_going(run)
