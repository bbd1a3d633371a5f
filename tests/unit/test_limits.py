"""bridge.limits: a worker's limits enforced from the agent, on real child processes.

Each misbehaving child is caught within its timeout + 10 %: the timeouts are the limits' own
(a spinner is stopped within ``cpu_window``) or stated beside the test (a child that allocates
past its memory limit in one step is stopped within ``MEMORY_TIMEOUT``). The checks run every
``POLL`` s here (once a second in the agent).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.isolation import LimitExceeded, Limits, StopReason
from bridge.limits import FD_MAX, Enforcer, _Hierarchies, _start_time, address_space_limit, socket_count

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux enforcement")

POLL = 0.05
MEMORY_TIMEOUT = 2.0  # a child past its memory limit in one step is stopped within this

# A child: prints "ready", waits for a line on stdin, then runs BODY.
CHILD = """
import os, socket, sys, time
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
{body}
"""

LEAK = """
hold = []
while True:
    hold.append(b"\\x01" * (8 << 20))  # 8 MiB, touched
    sys.stdout.write(f"{len(hold) * 8}\\n"); sys.stdout.flush()
    time.sleep(0.01)
"""

SPIN = """
while True:
    pass
"""

CALM = """
hold = b"\\x01" * (4 << 20)
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(2)]
sys.stdout.write("calm\\n"); sys.stdout.flush()
while True:
    time.sleep(0.2)
    sum(range(1000))
"""

SOCKETS = """
socks = []
for i in range(int(sys.argv[2])):
    socks.append(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
    sys.stdout.write(f"{len(socks)}\\n"); sys.stdout.flush()
    sys.stdin.readline()
time.sleep(60)
"""


class Child:
    def __init__(self, body: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD.format(body=body), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.line() == "ready"

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def send(self, text: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for c in made:
        c.stop()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    srv = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield srv
    srv.close()


def spawn(children: list[Child], body: str, *args: str) -> Child:
    child = Child(body, *args)
    children.append(child)
    return child


def until_stopped(enforcer: Enforcer, deadline: float) -> tuple[LimitExceeded | None, float]:
    """Check every POLL s until the enforcer stops the worker or ``deadline`` s have passed."""
    start = time.monotonic()
    while True:
        over = enforcer.check()
        now = time.monotonic()
        if over is not None or now - start > deadline:
            return over, now - start
        time.sleep(POLL)


def cgroup_available() -> bool:
    h = _Hierarchies()
    return "memory" in h.v1 or (h.v2 is not None and "memory" in h.v2_controllers)


needs_cgroups = pytest.mark.skipif(not cgroup_available() or os.geteuid() != 0,
                                   reason="needs cgroups this process may create")


SHMEM = """
import mmap
fd = os.memfd_create("hoard")
os.ftruncate(fd, 80 << 20)
m = mmap.mmap(fd, 80 << 20)
for off in range(0, 80 << 20, 4096):
    m[off] = 1
time.sleep(60)
"""


@pytest.mark.parametrize("body", [LEAK, SHMEM], ids=["heap", "memfd"])
@pytest.mark.parametrize("cgroups", [pytest.param(True, marks=needs_cgroups), False], ids=["cgroup", "rss-watch"])
def test_a_leak_is_stopped_at_the_memory_limit(children: list[Child], cgroups: bool, body: str) -> None:
    child = spawn(children, body)
    enforcer = Enforcer("acme.leak", Limits(memory_mb=40), cgroups=cgroups)
    try:
        enforcer.attach(child.proc.pid)
        assert enforcer.mechanisms()["memory"].startswith("cgroup" if cgroups else "RSS watch")
        child.send()
        over, took = until_stopped(enforcer, MEMORY_TIMEOUT * 2)
        assert over is not None and over.reason is StopReason.MEMORY_LIMIT, over
        assert took <= MEMORY_TIMEOUT * 1.1
        assert "40 MiB" in over.detail
        if cgroups:  # the kernel killed it at the limit
            assert child.proc.wait(5) == -signal.SIGKILL
    finally:
        enforcer.close()


@pytest.mark.parametrize("cgroups", [pytest.param(True, marks=needs_cgroups), False], ids=["cgroup", "rss-watch"])
def test_memory_held_before_attach_counts(children: list[Child], cgroups: bool) -> None:
    child = spawn(children, "hold = b'\\x01' * (60 << 20)\nsys.stdout.write('held\\n'); sys.stdout.flush()\ntime.sleep(60)")
    child.send()
    assert child.line() == "held"
    enforcer = Enforcer("acme.early", Limits(memory_mb=40), cgroups=cgroups)
    try:
        enforcer.attach(child.proc.pid)
        over = enforcer.check()  # the first check
        assert over is not None and over.reason is StopReason.MEMORY_LIMIT
        assert over.detail.startswith("RSS ")
    finally:
        enforcer.close()




def limits_of(pid: int) -> dict[str, str]:
    rows = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {row[:26].strip(): row[26:47].strip() for row in rows}


@pytest.mark.parametrize("cgroups", [pytest.param(True, marks=needs_cgroups), False], ids=["cgroup", "watch"])
def test_attach_caps_open_files_and_without_a_cgroup_the_address_space(children: list[Child], cgroups: bool) -> None:
    child = spawn(children, "time.sleep(60)")
    limits = Limits(memory_mb=50)
    vm = int(Path(f"/proc/{child.proc.pid}/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    enforcer = Enforcer("acme.rlimits", limits, cgroups=cgroups)
    try:
        enforcer.attach(child.proc.pid)
        got = limits_of(child.proc.pid)
        assert int(got["Max open files"]) <= FD_MAX
        if cgroups:
            assert got["Max address space"] == "unlimited"
        else:
            assert int(got["Max address space"]) == address_space_limit(vm, limits)
            assert "RLIMIT_AS" in enforcer.mechanisms()["memory"]
    finally:
        enforcer.close()


@pytest.mark.parametrize("cgroups", [pytest.param(True, marks=needs_cgroups), False], ids=["cgroup", "proc-watch"])
def test_a_spinner_is_stopped_within_its_cpu_window(children: list[Child], cgroups: bool) -> None:
    limits = Limits(cpu_percent=5, cpu_window=4.0, cpu_burst_percent=50, cpu_burst_window=0.5)
    child = spawn(children, SPIN)
    enforcer = Enforcer("acme.spin", limits, cgroups=cgroups)
    try:
        enforcer.attach(child.proc.pid)
        child.send()
        over, took = until_stopped(enforcer, limits.cpu_window * 2)
        assert over is not None and over.reason is StopReason.CPU_LIMIT, over
        assert took <= limits.cpu_window * 1.1
    finally:
        enforcer.close()


@needs_cgroups
def test_bursts_are_throttled_by_the_cpu_quota(children: list[Child]) -> None:
    limits = Limits(cpu_percent=90, cpu_window=30, cpu_burst_percent=25, cpu_burst_window=1)
    child = spawn(children, SPIN)
    enforcer = Enforcer("acme.burst", limits)
    try:
        enforcer.attach(child.proc.pid)
        assert "throttles at 25 %" in enforcer.mechanisms()["cpu"]
        quotas = [p / "cpu.cfs_quota_us" for p in enforcer.cgroups()] + [p / "cpu.max" for p in enforcer.cgroups()]
        written = [q.read_text().split()[0] for q in quotas if q.exists()]
        assert written == ["25000"]
        child.send()
        # Throttled to a quarter of a core, a spinner never reaches 90 % over its window.
        stat = next(p / "cpu.stat" for p in enforcer.cgroups() if (p / "cpu.stat").exists())
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert enforcer.check() is None
            time.sleep(POLL)
        throttled = dict(line.split() for line in stat.read_text().splitlines())
        assert int(throttled.get("nr_throttled", throttled.get("throttled_usec", 0))) > 0
    finally:
        enforcer.close()


def test_the_eleventh_connection_is_flagged(children: list[Child], listener: socket.socket) -> None:
    port = str(listener.getsockname()[1])
    child = spawn(children, SOCKETS, port, "11")
    enforcer = Enforcer("acme.sockets", Limits(connections=10))
    try:
        enforcer.attach(child.proc.pid)
        child.send()
        for n in range(1, 11):
            assert child.line() == str(n)
            assert enforcer.check() is None, f"{n} connections are within the limit"
            child.send()
        assert child.line() == "11"
        over = enforcer.check()  # the first check after the 11th connection opened
        assert over is not None and over.reason is StopReason.CONNECTION_LIMIT
        assert "11 network sockets" in over.detail
    finally:
        enforcer.close()


def test_only_network_sockets_count_as_connections(listener: socket.socket) -> None:
    mine = [os.getpid()]
    known: dict[str, bool] = {}
    before = socket_count(mine, known)
    pairs = [socket.socketpair() for _ in range(3)]
    netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    conns = [socket.create_connection(listener.getsockname()) for _ in range(2)]
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    dup = os.dup(conns[0].fileno())  # one socket, two fds: counted once
    try:
        assert socket_count(mine, known) == before + 3
        assert socket_count(mine, known) == before + 3  # the second time from what it knows
        assert socket_count(mine) == before + 3
        conns.pop().close()
        assert socket_count(mine, known) == before + 2
    finally:
        os.close(dup)
        for c in [*conns, udp, netlink, *(s for pair in pairs for s in pair)]:
            c.close()
    assert socket_count(mine, known) == before


@pytest.mark.parametrize("cgroups", [pytest.param(True, marks=needs_cgroups), False], ids=["cgroup", "watch"])
def test_a_well_behaved_worker_is_never_stopped(children: list[Child], listener: socket.socket, cgroups: bool) -> None:
    limits = Limits(memory_mb=60, cpu_percent=20, cpu_window=1.0, cpu_burst_percent=50, cpu_burst_window=0.5,
                    connections=3)
    child = spawn(children, CALM, str(listener.getsockname()[1]))
    enforcer = Enforcer("acme.calm", limits, cgroups=cgroups)
    try:
        enforcer.attach(child.proc.pid)
        child.send()
        assert child.line() == "calm"
        for _ in range(20):
            assert enforcer.check() is None
            time.sleep(POLL)
        assert child.proc.poll() is None
        assert set(enforcer.mechanisms()) == {"memory", "cpu", "connections", "processes"}
    finally:
        enforcer.close()


def test_a_worker_that_exits_is_not_over_a_limit(children: list[Child]) -> None:
    child = spawn(children, "sys.exit(3)")
    enforcer = Enforcer("acme.exit", Limits())
    try:
        enforcer.attach(child.proc.pid)
        child.send()
        child.proc.wait(5)
        assert enforcer.check() is None
    finally:
        enforcer.close()


@needs_cgroups
def test_close_removes_the_cgroups_and_names_are_unique(children: list[Child]) -> None:
    a, b = Enforcer("acme.same", Limits()), Enforcer("acme.same", Limits())
    child = spawn(children, "time.sleep(60)")
    try:
        a.attach(child.proc.pid)
        paths = a.cgroups()
        assert paths and all(p.is_dir() for p in paths)
        assert all(str(child.proc.pid) in (p / "cgroup.procs").read_text().split() for p in paths)
        b_child = spawn(children, "time.sleep(60)")
        b.attach(b_child.proc.pid)
        assert not set(a.cgroups()) & set(b.cgroups())
    finally:
        a.close()
        b.close()
    assert not any(p.exists() for p in paths)
    # Whatever was left in a worker's cgroup went with it.
    assert child.proc.wait(5) == -signal.SIGKILL
    a.close()  # idempotent


@needs_cgroups
def test_the_cgroups_of_a_dead_agent_are_removed(children: list[Child]) -> None:
    h = _Hierarchies()
    base = h.v1.get("memory") or h.v2
    assert base is not None
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    dead_start = _start_time(dead.pid)
    dead.wait()
    stale = base / f"monbridge-{dead.pid}-{dead_start}" / "acme.left-1"
    stale.mkdir(parents=True)
    orphan = spawn(children, "time.sleep(60)")
    (stale / "cgroup.procs").write_text(str(orphan.proc.pid))
    enforcer = Enforcer("acme.next", Limits())
    try:
        enforcer.attach(spawn(children, "time.sleep(60)").proc.pid)
        assert not stale.parent.exists()
        assert orphan.proc.wait(5) == -signal.SIGKILL
    finally:
        enforcer.close()


def test_cgroup_v2_files(children: list[Child], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cgroup v2 protocol (this machine's v2 hierarchy has no memory or cpu controller), on a
    directory standing for one: what is written, and what the kernel's files would say read back."""
    import bridge.limits as limits_module

    fake = _Hierarchies.none()
    fake.v2, fake.v2_controllers = tmp_path, {"memory", "cpu", "pids"}
    monkeypatch.setattr(limits_module, "_hier", fake)
    child = spawn(children, "time.sleep(60)")
    limits = Limits(memory_mb=64, cpu_percent=10, cpu_window=2, cpu_burst_percent=40)
    enforcer = Enforcer("acme.v2", limits)
    [group] = enforcer.cgroups()
    (group / "cpu.stat").write_text("usage_usec 1000000\nuser_usec 900000\nsystem_usec 100000\n")  # as made
    try:
        enforcer.attach(child.proc.pid)
        assert group.parent.parent == tmp_path
        assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
        assert (group.parent / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
        assert (group / "cgroup.procs").read_text() == str(child.proc.pid)
        assert (group / "memory.max").read_text() == str(64 << 20)
        assert (group / "memory.swap.max").read_text() == "0"
        assert (group / "cpu.max").read_text() == "40000 100000"
        assert enforcer.mechanisms()["memory"].startswith("cgroup v2 memory.max")
        assert enforcer.mechanisms()["cpu"].startswith("cgroup v2 cpu.max throttles at 40 %")
        assert enforcer.check() is None
        (group / "cpu.stat").write_text("usage_usec 1100000\n")
        assert enforcer.check() is None  # 0.1 s: within 10 % of 2 s
        (group / "cpu.stat").write_text("usage_usec 1300000\n")
        over = enforcer.check()
        assert over is not None and over.reason is StopReason.CPU_LIMIT and "0.30 s of CPU in 2 s" in over.detail
        (group / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
        over = enforcer.check()
        assert over is not None and over.reason is StopReason.MEMORY_LIMIT and "killed by the kernel" in over.detail
    finally:
        for f in group.iterdir():  # the kernel's files go with the directory; these are plain files
            f.unlink()
        (group.parent / "cgroup.subtree_control").unlink()
        enforcer.close()
    assert not group.parent.exists()


PAST_THE_HOOK = """
import ctypes
from bridge.isolation import Grants, Limits
from bridge import sandbox
sandbox.apply(Limits(connections=10), Grants(hosts=[f"127.0.0.1:{sys.argv[1]}"]))
libc = ctypes.CDLL(None, use_errno=True)
port = int(sys.argv[1]).to_bytes(2, "big")
sa = (ctypes.c_ubyte * 16)(*([2, 0] + list(port) + [127, 0, 0, 1] + [0] * 8))
fds = []
for _ in range(11):  # raw sockets: the audit hook never sees them
    fd = libc.socket(2, 1, 0)
    assert fd >= 0 and libc.connect(fd, sa, 16) == 0, ctypes.get_errno()
    fds.append(fd)
sys.stdout.write("11\\n"); sys.stdout.flush()
time.sleep(60)
"""


def test_sockets_made_past_the_sandbox_hook_are_still_counted(children: list[Child], listener: socket.socket) -> None:
    child = spawn(children, PAST_THE_HOOK, str(listener.getsockname()[1]))
    enforcer = Enforcer("acme.raw", Limits(connections=10))
    try:
        enforcer.attach(child.proc.pid)
        child.send()
        assert child.line() == "11"
        over = enforcer.check()
        assert over is not None and over.reason is StopReason.CONNECTION_LIMIT
    finally:
        enforcer.close()
