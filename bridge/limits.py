"""Enforcement of a plugin worker's ``limits`` from the agent's side (Linux).

One :class:`Enforcer` per worker process, used from one thread at a time: ``attach(pid)`` once
the worker is spawned, ``check()`` about once a second (it returns the
:class:`~bridge.isolation.LimitExceeded` to stop the worker with, or ``None``), ``close()`` when
the worker is gone. ``mechanisms()`` says what enforces each limit on this machine.

Cost (``benchmarks/bench_limits.py``): a check reads a few small files held open, about 0.1-0.25
ms of CPU; making the cgroups (the constructor) and ``attach`` take a few ms of file system
calls; ``close()`` of a worker still running kills it and may wait up to a second for it, so
the three are better run off the event loop.

Memory
    cgroup v2 ``memory.max`` (swap off: ``memory.swap.max`` 0) when the memory controller is
    delegated to the agent's cgroup, else cgroup v1 ``memory.limit_in_bytes`` (and
    ``memory.memsw.limit_in_bytes`` where swap is accounted). The kernel kills the worker when it
    goes over (the OOM killer inside the worker's cgroup); ``check()`` reports ``memory_limit``
    from the cgroup's OOM-kill count (``memory.events`` / ``memory.oom_control``) or from a
    worker killed by SIGKILL after the cgroup hit its limit (``memory.failcnt``). The RSS of the
    worker's processes (anonymous and shared-memory pages of ``/proc/<pid>/status``; the
    interpreter and libraries it maps do not count) is also checked every time: it is the limit
    without a cgroup (a leak is caught within one check interval, not at the byte), and with a
    v1 cgroup it counts what the worker held before ``attach`` (never charged to its cgroup:
    attach as soon as the worker is spawned). Without a cgroup ``attach`` also sets the worker's
    ``RLIMIT_AS`` (:func:`address_space_limit`) as a backstop.

CPU
    The CPU time of the worker (every thread, and reaped children) is read at every check:
    the cgroup's ``cpuacct.usage`` / ``cpu.stat`` when there is one, else ``/proc/<pid>/stat``.
    ``cpu_limit`` when the CPU used in the trailing ``cpu_window`` exceeds ``cpu_percent`` of it
    (5 % of 60 s: 3 s of CPU), measured from ``attach``. Bursts are throttled by the kernel at
    ``cpu_burst_percent`` (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); without a cgroup a
    burst over ``cpu_burst_percent`` in the trailing ``cpu_burst_window`` stops the worker
    (``cpu_limit``) instead.

Connections
    The worker's open network sockets (TCP, UDP, raw; not Unix or netlink sockets such as its
    channel to the agent) in ``/proc/<pid>/fd`` of every process of the worker, each socket's
    protocol read once from its ``system.sockprotoname`` attribute; ``connection_limit`` when
    over ``limits.connections``. The worker refuses the extra socket itself first
    (``bridge.sandbox``); this is the check a worker cannot bypass. ``attach`` caps the worker's
    open files (``RLIMIT_NOFILE``, at most ``FD_MAX``) so this listing stays short.

Processes
    With a pids cgroup (v1 ``pids`` or v2), the worker's tasks (threads included) are capped
    (``PIDS_MAX``), so a fork or thread bomb fails inside the worker.

Cgroups are made under the agent's own cgroup (``<agent cgroup>/monbridge-<pid>-<start>/<name>-<n>``),
so parallel agents and tests never share one, and removed by ``close()``; a dead agent's are
removed by the next agent that starts an Enforcer (its remaining processes killed first).
Where cgroups cannot be made (not root, no delegation), the watches above are the enforcement
and ``mechanisms()`` says so; the reason is logged once.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import re
import resource
import signal
import threading
import time
from collections import deque
from pathlib import Path

from bridge.isolation import LimitExceeded, Limits, StopReason

__all__ = ["FD_MAX", "PIDS_MAX", "Enforcer", "address_space_limit", "socket_count"]

log = logging.getLogger("monbridge.limits")

#: Tasks (processes and threads) a worker may have at once where a pids cgroup caps them.
PIDS_MAX = 256
#: Files a worker may hold open (``RLIMIT_NOFILE``, lowered to this by ``attach``).
FD_MAX = 1024

_CFS_PERIOD_US = 100_000
_MIB = 1024 * 1024
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_AGENT_DIR = re.compile(r"^monbridge-(\d+)-(\d+)$")
_seq = itertools.count(1)
_warned: set[str] = set()
_warn_lock = threading.Lock()


def address_space_limit(vm_bytes: int, limits: Limits) -> int:
    """The ``RLIMIT_AS`` of a worker whose address space is ``vm_bytes`` now: a backstop against a
    runaway allocation, not the memory limit (threads and allocator arenas reserve address space
    they never use, so the margin is ``max(4 × memory_mb, 512 MiB)``)."""
    return vm_bytes + max(int(4 * limits.memory_mb * _MIB), 512 * _MIB)


def _warn_once(key: str, msg: str, *args: object) -> None:
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(msg, *args)


def _read(path: Path | str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


class _Held:
    """Files read again and again (at every check), held open and read with ``pread``: an open
    of a /proc or cgroup file costs 5-50 times a read of it. Only the cgroup files and the
    worker's own /proc files are held (a bounded few); those of its children are opened each time."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self.proc = "/proc/-/"  # the /proc directory of the worker

    def fd(self, path: str, flags: int = os.O_RDONLY) -> int | None:
        fd = self._fds.get(path)
        if fd is None:
            if path.startswith("/proc/") and not path.startswith(self.proc):
                return None
            fd = self._fds[path] = os.open(path, flags | os.O_CLOEXEC)
        return fd

    def read(self, path: str) -> str:
        fd = self.fd(path)
        if fd is None:
            return _read(path)
        try:
            return os.pread(fd, 65536, 0).decode("ascii", "replace")
        except OSError:
            self._fds.pop(path, None)
            os.close(fd)
            raise

    def close(self, pid: int | None = None) -> None:
        """Close what is held (and hold the files of ``pid`` from now on)."""
        fds, self._fds = self._fds, {}
        self.proc = f"/proc/{pid}/" if pid is not None else "/proc/-/"
        for fd in fds.values():
            os.close(fd)


def _stat(pid: int, held: _Held | None = None) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command (``[0]`` is field 3 of proc(5),
    the state); None when ``pid`` is gone (a held file of a pid reaped since fails too, so a
    reuse of the pid is never read as the worker)."""
    try:
        path = f"/proc/{pid}/stat"
        stat = held.read(path) if held is not None else _read(path)
        return stat[stat.rindex(")") + 2:].split()
    except (OSError, ValueError):
        return None


def _start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (tells a pid from its reuse)."""
    f = _stat(pid)
    return int(f[19]) if f is not None and len(f) > 19 else None


# -- cgroup discovery ---------------------------------------------------------------------------


class _Hierarchies:
    """Where this process's cgroups are: the v2 directory and its delegated controllers, and the
    v1 directory of each mounted controller."""

    def __init__(self) -> None:
        self.v2: Path | None = None
        self.v2_controllers: set[str] = set()
        self.v1: dict[str, Path] = {}
        try:
            own = self._own_cgroups()
            mounts = _read("/proc/self/mountinfo").splitlines()
        except OSError:
            return
        for line in mounts:
            left, sep, right = line.partition(" - ")
            if not sep:
                continue
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            root, mountpoint, fstype = fields[3], fields[4], rfields[0]
            if fstype == "cgroup2" and "" in own:
                path = self._inside(mountpoint, root, own[""])
                if path is not None:
                    self.v2 = path
            elif fstype == "cgroup":
                for opt in rfields[2].split(","):
                    if opt in own:
                        path = self._inside(mountpoint, root, own[opt])
                        if path is not None:
                            self.v1[opt] = path
        if self.v2 is not None:
            try:
                self.v2_controllers = set(_read(self.v2 / "cgroup.controllers").split())
            except OSError:
                self.v2 = None

    @classmethod
    def none(cls) -> _Hierarchies:
        """No cgroups at all."""
        h = cls.__new__(cls)
        h.v2, h.v2_controllers, h.v1 = None, set(), {}
        return h

    @staticmethod
    def _own_cgroups() -> dict[str, str]:
        own: dict[str, str] = {}
        for line in _read("/proc/self/cgroup").splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(","):
                own[c] = path
        return own

    @staticmethod
    def _inside(mountpoint: str, root: str, own: str) -> Path | None:
        mountpoint = mountpoint.replace("\\040", " ")
        if root != "/" and not (own == root or own.startswith(root + "/")):
            return None  # this process's cgroup is not visible through this mount
        rel = own[len(root):] if root != "/" else own
        return Path(mountpoint) / rel.lstrip("/")


_hier: _Hierarchies | None = None
_hier_lock = threading.Lock()
_groups_lock = threading.Lock()  # making and removing this agent's cgroups


def _hierarchies() -> _Hierarchies:
    global _hier
    with _hier_lock:
        if _hier is None:
            _hier = _Hierarchies()
        return _hier


def _agent_dir_name() -> str:
    pid = os.getpid()
    return f"monbridge-{pid}-{_start_time(pid) or 0}"


def _kill_and_remove(group: Path) -> None:
    """Kill what is left in ``group`` (and below) and remove the directories, deepest first."""
    for sub in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        _remove_one(sub)
    _remove_one(group)


def _remove_one(group: Path) -> None:
    """Remove ``group``, killing what is left in it first; gives up after about a second."""
    for attempt in range(20):
        try:
            os.rmdir(group)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                log.warning("cannot remove cgroup %s: %s", group, e)
                return
        # Still populated: its processes are stragglers of a worker being stopped, or of a dead agent.
        kill = group / "cgroup.kill"
        try:
            if kill.exists():
                _write(kill, "1")
            else:
                for pid in _read(group / "cgroup.procs").split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        except OSError:
            pass
        time.sleep(0.01 if attempt < 10 else 0.09)
    log.warning("cannot remove cgroup %s: its processes do not exit", group)


def _clean_stale(parent: Path) -> None:
    """Remove the cgroups of agents that are gone (killed before their ``close()``)."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = _AGENT_DIR.match(entry.name)
        if not m or not entry.is_dir():
            continue
        pid, start = int(m.group(1)), int(m.group(2))
        if pid == os.getpid() or _start_time(pid) == start:
            continue  # this agent, or another one that is alive
        log.info("removing the cgroup of an agent that is gone: %s", entry)
        _kill_and_remove(entry)


class _Group:
    """One worker's cgroup in one hierarchy (v2: all controllers; v1: one controller)."""

    def __init__(self, base: Path, name: str) -> None:
        self.agent = base / _agent_dir_name()
        self.path = self.agent / name

    def create(self, enable: str | None = None) -> None:
        with _groups_lock:
            _clean_stale(self.agent.parent)
            if enable:  # v2: the controllers are enabled from the agent's cgroup down
                _write(self.agent.parent / "cgroup.subtree_control", enable)
            self.agent.mkdir(exist_ok=True)
            if enable:
                _write(self.agent / "cgroup.subtree_control", enable)
            self.path.mkdir()

    def add(self, pid: int) -> None:
        _write(self.path / "cgroup.procs", str(pid))

    def write(self, file: str, text: str) -> None:
        _write(self.path / file, text)

    def remove(self) -> None:
        with _groups_lock:
            _remove_one(self.path)
            try:
                os.rmdir(self.agent)  # the last worker of this agent
            except OSError:
                pass


def _kv(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


# -- per-process readings -----------------------------------------------------------------------


def _cpu_of_stat(f: list[str]) -> float:
    """CPU time (user + system, every thread, reaped children) in ``/proc/<pid>/stat`` fields:
    utime stime cutime cstime (fields 14-17 of proc(5))."""
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / _TICK


def _proc_rss(pid: int, held: _Held) -> int | None:
    """The resident memory ``pid`` owns: anonymous and shared-memory pages (``RssAnon`` +
    ``RssShmem``), not the files it maps (the interpreter and libraries, shared with every
    process of the machine and reclaimable)."""
    try:
        status = held.read(f"/proc/{pid}/status")
        total = 0
        for key in ("RssAnon:", "RssShmem:"):
            at = status.find(key)
            if at >= 0:
                total += int(status[at + len(key):status.index("kB", at)]) * 1024
        return total
    except (OSError, ValueError):
        return None


def _socket_fds(pid: int, into: dict[str, str], held: _Held | None = None) -> None:
    """The sockets ``pid`` holds open, into ``into`` (inode: a /proc path of one fd of it)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        dir_fd = held.fd(fd_dir, os.O_RDONLY | os.O_DIRECTORY) if held is not None else None
        names = os.listdir(fd_dir if dir_fd is None else dir_fd)
    except OSError:
        return
    for name in names:
        path = f"{fd_dir}/{name}"
        try:
            target = os.readlink(name, dir_fd=dir_fd) if dir_fd is not None else os.readlink(path)
        except OSError:
            continue
        if target.startswith("socket:["):
            into.setdefault(target[8:-1], path)


#: Socket protocols (``system.sockprotoname``) that are not network connections.
_LOCAL_PROTOCOLS = (b"UNIX", b"NETLINK")
_NET_TABLES = ("tcp", "tcp6", "udp", "udp6", "raw", "raw6")


def _network_inodes(pid: int) -> set[str]:
    """Inodes of the TCP, UDP and raw sockets of the network namespace of ``pid``."""
    out: set[str] = set()
    for table in _NET_TABLES:
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii", errors="replace") as f:
                next(f, None)
                for line in f:
                    fields = line.split(None, 10)
                    if len(fields) > 9:
                        out.add(fields[9])
        except OSError:
            continue
    return out


def socket_count(pids: list[int], known: dict[str, bool] | None = None, held: _Held | None = None) -> int:
    """The network sockets (TCP, UDP, raw: not Unix or netlink) ``pids`` hold open; a socket
    shared by several fds or processes counts once. Each socket's protocol is read from its
    ``system.sockprotoname`` attribute (the network tables of /proc only where the kernel has
    none); ``known`` remembers it between calls (inode: is a network socket), so a check reads
    only the fd links of sockets it has seen before."""
    fds: dict[str, str] = {}
    for pid in pids:
        _socket_fds(pid, fds, held)
    known = {} if known is None else known
    for inode in [i for i in known if i not in fds]:
        del known[inode]  # closed since the last call
    count = 0
    unknown: list[str] = []
    for inode, path in fds.items():
        network = known.get(inode)
        if network is None:
            try:
                network = not os.getxattr(path, "system.sockprotoname").startswith(_LOCAL_PROTOCOLS)
            except OSError:
                unknown.append(inode)
                continue
            known[inode] = network
        count += network
    if unknown:
        tables: set[str] = set()
        for pid in pids:
            tables |= _network_inodes(pid)
        count += sum(1 for inode in unknown if inode in tables)
    return count


# -- the enforcer -------------------------------------------------------------------------------


class Enforcer:
    """The limits of one plugin worker process, enforced from the agent (see the module)."""

    def __init__(self, name: str, limits: Limits, *, cgroups: bool = True) -> None:
        """``cgroups=False``: watch the worker only (what happens where cgroups cannot be made)."""
        self.name = name
        self.limits = limits
        self._use_cgroups = cgroups
        self._group_name = f"{_SAFE_NAME.sub('_', name)[:64] or 'plugin'}-{next(_seq)}"
        self._pid: int | None = None
        self._v2: _Group | None = None
        self._mem: _Group | None = None  # v1 memory
        self._cpu: _Group | None = None  # v1 cpu (the quota)
        self._acct: _Group | None = None  # v1 cpuacct (the usage)
        self._pids: _Group | None = None  # v1 pids
        self._mech: dict[str, str] = {}
        self._kernel_memory = False  # a cgroup memory limit holds (else RSS is watched)
        self._kernel_throttle = False  # a cgroup CPU quota throttles bursts (else they stop the worker)
        self._samples: deque[tuple[float, float]] = deque()
        self._sockets: dict[str, bool] = {}  # socket inode: is a network socket
        self._oom_base = 0
        self._fail_base = 0
        self._start: int | None = None  # the worker's start time (tells it from a reuse of its pid)
        self._held = _Held()  # the files each check reads
        self._closed = False
        self._setup_groups()

    # -- setup --

    def attach(self, pid: int) -> None:
        """Put worker ``pid`` under its limits (a second call moves the limits to a new worker)."""
        if self._closed:
            raise RuntimeError(f"enforcer of {self.name} is closed")
        self._pid = pid
        self._held.close(pid)
        self._start = _start_time(pid)
        try:
            soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            cap = FD_MAX if hard == resource.RLIM_INFINITY else min(hard, FD_MAX)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (min(soft, cap), cap))
        except (OSError, ValueError) as e:
            log.warning("plugin %s: cannot cap the open files of worker %d: %s", self.name, pid, e)
        if not self._kernel_memory:
            try:
                vm = int(_read(f"/proc/{pid}/statm").split()[0]) * _PAGE
                soft, hard = resource.prlimit(pid, resource.RLIMIT_AS)
                cap = address_space_limit(vm, self.limits)
                if hard != resource.RLIM_INFINITY:
                    cap = min(cap, hard)
                resource.prlimit(pid, resource.RLIMIT_AS, (min(cap, soft) if soft != resource.RLIM_INFINITY else cap, cap))
            except (OSError, ValueError, IndexError) as e:
                log.warning("plugin %s: cannot cap the address space of worker %d: %s", self.name, pid, e)
        for group in self._groups():
            try:
                group.add(pid)
            except OSError as e:
                log.warning("plugin %s: cannot put worker %d into cgroup %s: %s", self.name, pid, group.path, e)
        self._oom_base, self._fail_base = self._oom_kills(), self._limit_hits()
        self._samples.clear()
        cpu = self._cpu_seconds()
        if cpu is not None:
            self._samples.append((time.monotonic(), cpu))

    def _setup_groups(self) -> None:
        h = _hierarchies() if self._use_cgroups else _Hierarchies.none()
        lim = self.limits
        mem_bytes = int(lim.memory_mb * _MIB)
        quota = max(1000, int(_CFS_PERIOD_US * lim.cpu_burst_percent / 100))
        why: list[str] = []
        if h.v2 is not None and {"memory", "cpu"} & h.v2_controllers:
            group = _Group(h.v2, self._group_name)
            wanted = sorted({"memory", "cpu", "pids"} & h.v2_controllers)
            try:
                group.create(" ".join("+" + c for c in wanted))
                self._v2 = group
            except OSError as e:
                why.append(f"cgroup v2 at {h.v2}: {e}")
                self._discard(group)
        v2 = self._v2
        if v2 is not None:
            if self._try(v2, "memory.max", str(mem_bytes)):
                self._try(v2, "memory.swap.max", "0")
                self._kernel_memory = True
                self._mech["memory"] = f"cgroup v2 memory.max ({lim.memory_mb:g} MiB, OOM kill)"
            if self._try(v2, "cpu.max", f"{quota} {_CFS_PERIOD_US}"):
                self._kernel_throttle = True
                self._mech["cpu"] = (f"cgroup v2 cpu.max throttles at {lim.cpu_burst_percent:g} %; "
                                     f"cpu.stat usage over {lim.cpu_window:g} s stops at {lim.cpu_percent:g} %")
            if self._try(v2, "pids.max", str(PIDS_MAX)):
                self._mech["processes"] = f"cgroup v2 pids.max {PIDS_MAX}"
        if "memory" not in self._mech and "memory" in h.v1:
            self._mem = self._v1_group(h.v1["memory"], why)
            if self._mem is not None and self._try(self._mem, "memory.limit_in_bytes", str(mem_bytes)):
                self._try(self._mem, "memory.memsw.limit_in_bytes", str(mem_bytes), quiet=True)
                # What the worker holds when it is attached moves with it (v2 charges it anyway).
                self._try(self._mem, "memory.move_charge_at_immigrate", "3", quiet=True)
                self._kernel_memory = True
                self._mech["memory"] = f"cgroup v1 memory.limit_in_bytes ({lim.memory_mb:g} MiB, OOM kill)"
        if "cpu" not in self._mech and "cpu" in h.v1:
            self._cpu = self._v1_group(h.v1["cpu"], why)
            if self._cpu is not None and self._try(self._cpu, "cpu.cfs_period_us", str(_CFS_PERIOD_US)) and \
                    self._try(self._cpu, "cpu.cfs_quota_us", str(quota)):
                self._kernel_throttle = True
                acct = "proc stat"
                if "cpuacct" in h.v1:
                    self._acct = self._cpu if h.v1["cpuacct"] == h.v1["cpu"] else self._v1_group(h.v1["cpuacct"], why)
                    if self._acct is not None:
                        acct = "cpuacct.usage"
                self._mech["cpu"] = (f"cgroup v1 cpu.cfs_quota_us throttles at {lim.cpu_burst_percent:g} %; "
                                     f"{acct} over {lim.cpu_window:g} s stops at {lim.cpu_percent:g} %")
        if "processes" not in self._mech and "pids" in h.v1:
            self._pids = self._v1_group(h.v1["pids"], why)
            if self._pids is not None and self._try(self._pids, "pids.max", str(PIDS_MAX)):
                self._mech["processes"] = f"cgroup v1 pids.max {PIDS_MAX}"
        if "memory" not in self._mech:
            self._mech["memory"] = (f"RSS watch of /proc/<pid>/status at each check ({lim.memory_mb:g} MiB); "
                                    "RLIMIT_AS backstop")
        if "cpu" not in self._mech:
            self._mech["cpu"] = (f"/proc/<pid>/stat watch: stops at {lim.cpu_burst_percent:g} % over "
                                 f"{lim.cpu_burst_window:g} s or {lim.cpu_percent:g} % over {lim.cpu_window:g} s")
        if "processes" not in self._mech:
            self._mech["processes"] = "none (the worker's seccomp filter refuses fork without an exec grant)"
        self._mech["connections"] = (f"network socket count of /proc/<pid>/fd at each check "
                                     f"(stops over {lim.connections})")
        if why:
            _warn_once("cgroups:" + "|".join(sorted(why)),
                       "plugin limits: cgroups are not used where they cannot be made (%s); "
                       "watching the workers instead", "; ".join(why))

    def _v1_group(self, base: Path, why: list[str]) -> _Group | None:
        group = _Group(base, self._group_name)
        try:
            group.create()
            return group
        except OSError as e:
            why.append(f"{base}: {e}")
            self._discard(group)
            return None

    def _try(self, group: _Group, file: str, value: str, quiet: bool = False) -> bool:
        try:
            group.write(file, value)
            return True
        except OSError as e:
            if not quiet:
                _warn_once(f"write:{file}:{e.errno}", "plugin limits: cannot set %s: %s", group.path / file, e)
            return False

    @staticmethod
    def _discard(group: _Group) -> None:
        if group.path.exists():
            group.remove()
        else:
            try:
                os.rmdir(group.agent)
            except OSError:
                pass

    # -- readings --

    def _read(self, group: _Group, file: str) -> str:
        return self._held.read(str(group.path / file))

    def _pids_of_worker(self) -> list[int]:
        group = self._v2 or self._mem or self._cpu or self._pids
        if group is not None:
            try:
                pids = [int(p) for p in self._read(group, "cgroup.procs").split()]
                if pids:
                    return pids
            except (OSError, ValueError):
                pass
        return [self._pid] if self._pid is not None else []

    def _cpu_seconds(self, stat: list[str] | None = None) -> float | None:
        """The worker's CPU seconds so far (``stat``: its /proc stat fields, read already); from
        one source for the life of the enforcer (the cgroup's when there is one), None when that
        cannot be read now."""
        try:
            if self._acct is not None:
                return int(self._read(self._acct, "cpuacct.usage")) / 1e9
            if self._v2 is not None:  # cpu.stat's usage is there with or without the cpu controller
                usage = _kv(self._read(self._v2, "cpu.stat")).get("usage_usec")
                return usage / 1e6 if usage is not None else None
        except (OSError, ValueError):
            return None
        if stat is None and self._pid is not None:
            stat = _stat(self._pid, self._held)
        return _cpu_of_stat(stat) if stat is not None else None

    def _oom_kills(self) -> int:
        """OOM kills in the worker's memory cgroup so far."""
        try:
            if self._v2 is not None and self._kernel_memory:
                return _kv(self._read(self._v2, "memory.events")).get("oom_kill", 0)
            if self._mem is not None:
                return _kv(self._read(self._mem, "memory.oom_control")).get("oom_kill", 0)
        except (OSError, ValueError):
            pass
        return 0

    def _limit_hits(self) -> int:
        """Times the worker's memory cgroup hit its limit so far."""
        try:
            if self._v2 is not None and self._kernel_memory:
                return _kv(self._read(self._v2, "memory.events")).get("max", 0)
            if self._mem is not None:
                return int(self._read(self._mem, "memory.failcnt"))
        except (OSError, ValueError):
            pass
        return 0

    def rss_bytes(self, pids: list[int] | None = None) -> int | None:
        """The resident memory the worker's processes own: anonymous and shared-memory pages
        (None before ``attach``)."""
        if self._pid is None:
            return None
        pids = self._pids_of_worker() if pids is None else pids
        return sum(r for r in (_proc_rss(p, self._held) for p in pids) if r is not None)

    # -- the check --

    def check(self) -> LimitExceeded | None:
        """The limit the worker is over (stop it with this), or None; None too once the worker
        is gone and no limit killed it (the host knows it crashed). Cheap: a few small /proc and
        cgroup files and the worker's fd links (about 0.2-0.4 ms of CPU)."""
        pid = self._pid
        if pid is None or self._closed:
            return None
        lim = self.limits
        if self._oom_kills() > self._oom_base:
            return LimitExceeded(StopReason.MEMORY_LIMIT,
                                 f"killed by the kernel over its memory limit of {lim.memory_mb:g} MiB")
        stat = _stat(pid, self._held)
        if stat is None or stat[0] in ("Z", "X") or int(stat[19]) != self._start:
            # Gone: say why when the limits know (a kill at the memory limit); else it crashed.
            if stat is not None and stat[0] == "Z" and len(stat) > 49 and int(stat[49]) & 0x7F == signal.SIGKILL \
                    and self._limit_hits() > self._fail_base:
                return LimitExceeded(StopReason.MEMORY_LIMIT,
                                     f"killed at its memory limit of {lim.memory_mb:g} MiB")
            return None
        # Also under a cgroup limit: what the worker held before it was attached is not charged
        # to its v1 cgroup.
        pids = self._pids_of_worker()
        rss = self.rss_bytes(pids)
        if rss is not None and rss > lim.memory_mb * _MIB:
            return LimitExceeded(StopReason.MEMORY_LIMIT,
                                 f"RSS {rss / _MIB:.1f} MiB over its limit of {lim.memory_mb:g} MiB")
        over = self._check_cpu(stat)
        if over is not None:
            return over
        count = socket_count(pids, self._sockets, self._held)
        if count > lim.connections:
            return LimitExceeded(StopReason.CONNECTION_LIMIT,
                                 f"{count} network sockets open, over its limit of {lim.connections}")
        return None

    def _check_cpu(self, stat: list[str]) -> LimitExceeded | None:
        cpu = self._cpu_seconds(stat)
        if cpu is None:
            return None
        now = time.monotonic()
        lim = self.limits
        samples = self._samples
        samples.append((now, cpu))
        # Keep the samples of the longest window, plus the one just before it (its start).
        horizon = now - max(lim.cpu_window, lim.cpu_burst_window)
        while len(samples) > 2 and samples[1][0] <= horizon:
            samples.popleft()
        used = cpu - self._at(now - lim.cpu_window)
        if used > lim.cpu_window * lim.cpu_percent / 100:
            return LimitExceeded(StopReason.CPU_LIMIT,
                                 f"used {used:.2f} s of CPU in {lim.cpu_window:g} s, over "
                                 f"{lim.cpu_percent:g} % of a core")
        if not self._kernel_throttle:
            burst = cpu - self._at(now - lim.cpu_burst_window)
            if burst > lim.cpu_burst_window * lim.cpu_burst_percent / 100:
                return LimitExceeded(StopReason.CPU_LIMIT,
                                     f"used {burst:.2f} s of CPU in {lim.cpu_burst_window:g} s, over "
                                     f"{lim.cpu_burst_percent:g} % of a core (burst)")
        return None

    def _at(self, t: float) -> float:
        """CPU seconds at time ``t``: the newest sample at or before it (the first sample when
        ``t`` is before attach: what was used before attach does not count)."""
        best = self._samples[0][1]
        for ts, cpu in self._samples:
            if ts > t:
                break
            best = cpu
        return best

    def mechanisms(self) -> dict[str, str]:
        """What enforces each limit for this worker: memory, cpu, connections, processes."""
        return dict(self._mech)

    def cgroups(self) -> list[Path]:
        """The worker's cgroup directories (empty when none is used)."""
        return [g.path for g in self._groups()]

    def _groups(self) -> list[_Group]:
        return list({id(g): g for g in (self._v2, self._mem, self._cpu, self._acct, self._pids) if g}.values())

    def close(self) -> None:
        """Remove the worker's cgroups (what is left in them is killed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._held.close()
        for group in self._groups():
            group.remove()
