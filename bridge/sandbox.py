"""The sandbox of a plugin worker process (Linux), applied by the worker to itself before it
imports the plugin: :func:`apply` returns what holds, one line per guarantee, e.g.
``{"fs": "landlock abi 7", "exec": "seccomp: no exec, no fork", "net": "network namespace; landlock: no
TCP bind or connect; seccomp: no sockets", ...}``. It needs Linux; only the network namespace
and dropping capabilities need root (both are skipped, and say so, without it).

What is kernel-enforced (holds against any code in the worker, ctypes and native code included):

``fs`` — Landlock (Linux ≥ 5.13, no root needed; needs ``no_new_privs``, which is set)
    Writes only beneath ``grants.paths``; reads only beneath what a Python worker needs (the
    interpreter's prefixes and ``sys.path`` — of the working directory only its Python packages
    and modules —, ``extra_read``, the shared libraries, ``/proc/self``, ``/dev/null``,
    ``/dev/urandom``, the few ``/etc`` files of DNS, TLS and time zones) and ``grants.paths``;
    execute only ``grants.exec`` (and the dynamic loader they need). Without Landlock nothing
    limits the file system beyond the worker's user: ``fs`` says ``none`` and a warning is logged.
    Landlock applies to the calling thread and its future threads: ``apply`` must run before the
    worker starts threads (``fs`` says so when it did not).
``exec`` — seccomp (a BPF filter built here; x86_64 and aarch64)
    Without ``grants.exec``: ``execve``/``execveat`` and fork (``fork``, ``vfork``, ``clone``
    without ``CLONE_THREAD``) fail with EPERM, so no shell (``os.system``, ``subprocess``) runs.
    With ``grants.exec``: both are allowed and Landlock's execute right limits what may run
    (``memfd_create`` is refused then: Landlock does not limit running a memfd).
    Always refused: ptrace and ``process_vm_*``, mounts, namespaces (``unshare``, ``setns``,
    ``clone`` namespace flags), modules, kexec, reboot, swap, bpf, perf events, keyrings,
    userfaultfd, io_uring (it would bypass this filter), handle-based opens, ``pidfd_getfd``,
    the terminal ioctls ``TIOCSTI`` and ``TIOCLINUX`` (typing into the agent's terminal).
    ``clone3`` fails with ENOSYS (its flags cannot be inspected; glibc falls back to ``clone``).
    Other architectures: no filter, a warning.
``net`` — with no ``grants.hosts``: no network at all. seccomp refuses ``socket()`` of every
    family (``socketpair`` stays: a connected pair reaches nothing), and as root the worker is
    also moved into a network namespace of its own (only a loopback that is down). With
    ``grants.hosts``: ``socket()`` only for AF_INET, AF_INET6 and NETLINK_ROUTE (no Unix sockets:
    Landlock does not limit connecting to a path's socket); Landlock ABI ≥ 4 refuses TCP
    ``bind`` and, when every granted host names a port, TCP ``connect`` to other ports (DNS port
    53 stays open). Which host a socket reaches is NOT kernel-enforced here.
``signals`` — Landlock ABI ≥ 6 scopes: no signal to, and no abstract Unix socket of, a process
    outside the worker (the agent included). Below ABI 6 a worker may signal every process of
    its user.
``memory`` / ``files`` — ``RLIMIT_AS`` (the address space now plus ``max(4 × memory_mb, 512 MiB)``:
    a backstop, threads reserve address space they do not use; the agent enforces the real
    limit with a cgroup or by watching RSS, ``bridge.limits``), ``RLIMIT_NOFILE`` (the fds open
    now plus ``connections`` plus 64), ``RLIMIT_CORE`` 0. ``RLIMIT_NPROC`` is not set: it counts
    every process of the user, the agent's included; fork is refused above and the agent caps
    the worker's tasks with a pids cgroup.
``capabilities`` — as root every capability is dropped (bounding, ambient, effective,
    permitted), so root in the worker cannot undo any of the above, raw sockets included.

Python-level (an audit hook, ``sys.addaudithook``; code using ctypes or a native extension
bypasses it; the agent's socket count, ``bridge.limits``, is the check that cannot be bypassed):

``hosts`` — ``socket.getaddrinfo``, ``socket.connect``, ``socket.sendto`` and ``socket.sendmsg`` to a host (or port)
    not in ``grants.hosts`` raise :class:`PermissionError`; an address is granted when it is a
    granted host, or one of the addresses a granted name resolves to (resolved when first
    needed, again after 30 s).
``connections`` — creating the ``connections + 1``-th open AF_INET/AF_INET6 socket (of those
    made after ``apply``) raises :class:`PermissionError` (EMFILE).

A granted program inherits every kernel-enforced part (Landlock, seccomp, namespaces,
capabilities, rlimits), not the audit hook. Files and sockets the worker holds before ``apply``
stay usable (its channel to the agent).

A kernel feature missing here degrades the guarantee: a warning is logged and the returned
line says what holds instead (``none: ...``).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import platform
import resource
import socket
import stat
import struct
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from bridge.isolation import Grants, Limits, host_port
from bridge.limits import address_space_limit

__all__ = ["SandboxError", "apply", "landlock_abi"]

log = logging.getLogger("monbridge.sandbox")

_MIB = 1024 * 1024


class SandboxError(OSError):
    """A sandbox step failed in a way that leaves it unsafe to go on (the worker must exit)."""


# -- syscalls -----------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

_ARCH = platform.machine()

# Syscall numbers: Landlock, io_uring and the new mount API are the same on every architecture.
_NR_COMMON = {
    "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442,
}
_NR_ARCH: dict[str, dict[str, int]] = {
    "x86_64": {
        "execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "clone": 56, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
        "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "bpf": 321, "perf_event_open": 298,
        "keyctl": 250, "add_key": 248, "request_key": 249, "userfaultfd": 323, "open_by_handle_at": 304,
        "name_to_handle_at": 303, "quotactl": 179, "socket": 41, "seccomp": 317, "capset": 126,
        "ioctl": 16, "memfd_create": 319,
    },
    "aarch64": {
        "execve": 221, "execveat": 281, "clone": 220, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
        "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89, "bpf": 280, "perf_event_open": 241,
        "keyctl": 219, "add_key": 217, "request_key": 218, "userfaultfd": 282, "open_by_handle_at": 265,
        "name_to_handle_at": 264, "quotactl": 60, "socket": 198, "seccomp": 277, "capset": 91,
        "ioctl": 29, "memfd_create": 279,
    },
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_NR = {**_NR_COMMON, **_NR_ARCH.get(_ARCH, {})}


def _checked(what: str, ret: int) -> int:
    """``ret`` of a libc call, or the OSError its errno says."""
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def _syscall(name: str, *args: int | ctypes.c_void_p | None) -> int:
    ctypes.set_errno(0)
    return _checked(name, int(_libc.syscall(ctypes.c_long(_NR[name]), *[
        a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a or 0) for a in args])))


def _prctl(option: int, a: int = 0, b: int = 0, c: int = 0, d: int = 0) -> int:
    ctypes.set_errno(0)
    return _checked(f"prctl({option})", int(_libc.prctl(option, a, b, c, d)))


_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


# -- Landlock -----------------------------------------------------------------------------------

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_REMOVE_DIR = 1 << 4
_FS_REMOVE_FILE = 1 << 5
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_DIR = 1 << 7
_FS_MAKE_REG = 1 << 8
_FS_MAKE_SOCK = 1 << 9
_FS_MAKE_FIFO = 1 << 10
_FS_MAKE_BLOCK = 1 << 11
_FS_MAKE_SYM = 1 << 12
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1  # ABI 6
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2

_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_READ = _FS_READ_FILE | _FS_READ_DIR
_WRITE = (_READ | _FS_WRITE_FILE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE_DIR | _FS_MAKE_REG
          | _FS_MAKE_SOCK | _FS_MAKE_FIFO | _FS_MAKE_SYM | _FS_REFER | _FS_TRUNCATE)

#: What a Python worker reads besides its interpreter and ``sys.path`` (those that exist here).
SYSTEM_READ = (
    "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib",  # shared libraries of extensions
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
    "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/host.conf",
    "/etc/services", "/etc/protocols",  # DNS
    "/etc/ssl", "/etc/pki", "/etc/ca-certificates", "/usr/share/ca-certificates",  # TLS
    "/etc/localtime", "/usr/share/zoneinfo",  # time zones
    "/sys/devices/system/cpu",  # os.cpu_count
    "/dev/urandom", "/dev/random",
)


def landlock_abi() -> int:
    """The Landlock ABI version of this kernel (0: none)."""
    if "landlock_create_ruleset" not in _NR or sys.platform != "linux":
        return 0
    try:
        return _syscall("landlock_create_ruleset", None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    except OSError:
        return 0


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


class _Ruleset:
    def __init__(self, abi: int, handled_net: int) -> None:
        self.abi = abi
        self.handled_fs = _handled_fs(abi)
        self.handled_net = handled_net if abi >= 4 else 0
        scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0
        size = 24 if abi >= 6 else 16 if abi >= 4 else 8
        attr = struct.pack("<QQQ", self.handled_fs, self.handled_net, scoped)[:size]
        buf = ctypes.create_string_buffer(attr, size)
        self.fd = _syscall("landlock_create_ruleset", ctypes.c_void_p(ctypes.addressof(buf)), size, 0)
        self.rules: list[str] = []

    def allow_path(self, path: str, access: int) -> bool:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                access &= _FILE_RIGHTS
            access &= self.handled_fs
            if not access:
                return False
            attr = ctypes.create_string_buffer(struct.pack("<Qi", access, fd), 12)
            _syscall("landlock_add_rule", self.fd, _RULE_PATH_BENEATH,
                     ctypes.c_void_p(ctypes.addressof(attr)), 0)
            self.rules.append(path)
            return True
        finally:
            os.close(fd)

    def allow_port(self, port: int, access: int) -> None:
        attr = ctypes.create_string_buffer(struct.pack("<QQ", access & self.handled_net, port), 16)
        _syscall("landlock_add_rule", self.fd, _RULE_NET_PORT, ctypes.c_void_p(ctypes.addressof(attr)), 0)

    def restrict(self) -> None:
        try:
            _syscall("landlock_restrict_self", self.fd, 0)
        finally:
            os.close(self.fd)


def _read_paths(extra: Iterable[str]) -> list[str]:
    """What the worker reads: its interpreter, ``sys.path``, its loaded packages, the system files.

    The working directory on ``sys.path`` (``python -m`` and ``-c`` put it first) is not made
    readable as a whole (it may be where the agent keeps its config and state): only what Python
    imports from it, its packages (directories with an ``__init__.py``) and modules."""
    cwd = os.path.realpath(os.getcwd())
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    for entry in sys.path:
        if os.path.realpath(os.path.abspath(entry or ".")) == cwd:
            paths += _importable(cwd)
        else:
            paths.append(entry)
    for module in list(sys.modules.values()):
        for entry in getattr(module, "__path__", None) or ():
            if isinstance(entry, str):
                paths.append(entry)
    paths += [*SYSTEM_READ, *extra]
    seen: dict[str, None] = {}
    for p in paths:
        real = os.path.realpath(os.path.abspath(p))
        if real == "/":
            log.info("sandbox: %r would make the whole file system readable; it is not", p)
            continue
        if os.path.exists(real):
            seen.setdefault(real, None)
    return list(seen)


def _importable(directory: str) -> list[str]:
    """The packages and modules Python may import from ``directory``."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    out: list[str] = []
    for e in entries:
        if e.name.endswith((".py", ".pyc", ".so", ".pth")) and e.is_file():
            out.append(e.path)
        elif e.is_dir() and os.path.exists(os.path.join(e.path, "__init__.py")):
            out.append(e.path)
    return out


def _loaders() -> list[str]:
    """The dynamic loaders an executable may name (they need the execute right too)."""
    found: list[str] = []
    for d in ("/lib64", "/lib", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu"):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        found += [os.path.realpath(os.path.join(d, n)) for n in names if n.startswith("ld-linux")]
    return sorted(set(found))


def _landlock(abi: int, grants: Grants, extra_read: Iterable[str]) -> str:
    ports = [port for _, port in map(host_port, grants.hosts)]
    handled_net = _NET_BIND_TCP
    if not grants.hosts or all(p is not None for p in ports):
        handled_net |= _NET_CONNECT_TCP
    rs = _Ruleset(abi, handled_net)
    try:
        for p in _read_paths(extra_read):
            rs.allow_path(p, _READ)
        rs.allow_path("/proc/self", _READ)
        rs.allow_path("/dev/null", _FS_READ_FILE | _FS_WRITE_FILE)
        for p in grants.paths:
            if not rs.allow_path(os.path.realpath(p), _WRITE):
                log.warning("sandbox: granted path %s does not exist; nothing is writable there", p)
        for p in grants.exec:
            if not rs.allow_path(os.path.realpath(p), _FS_EXECUTE | _FS_READ_FILE):
                log.warning("sandbox: granted program %s does not exist", p)
        if grants.exec:
            for loader in _loaders():
                rs.allow_path(loader, _FS_EXECUTE | _FS_READ_FILE)
        net = ""
        if rs.handled_net & _NET_CONNECT_TCP and grants.hosts:
            for port in sorted({p for p in ports if p is not None} | {53}):
                rs.allow_port(port, _NET_CONNECT_TCP)
            net = "landlock: TCP connect to granted ports only, no bind"
        elif rs.handled_net:
            net = "landlock: no TCP bind" + ("" if grants.hosts else " or connect")
    except BaseException:
        os.close(rs.fd)
        raise
    rs.restrict()
    return net


# -- seccomp ------------------------------------------------------------------------------------

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JSET_K = 0x45
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_CLONE_THREAD = 0x00010000
_CLONE_NAMESPACES = 0x7E020000  # NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET
_AF_INET, _AF_INET6, _AF_NETLINK = 2, 10, 16
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C  # typing into, and controlling, a terminal
_NETLINK_ROUTE = 0

#: Always refused (EPERM), whatever is granted.
_DENY_ALWAYS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "process_madvise",
    "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "bpf",
    "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "open_by_handle_at",
    "name_to_handle_at", "quotactl", "io_uring_setup", "io_uring_enter", "io_uring_register",
)


class _Bpf:
    """A tiny assembler for a classic BPF program with forward jumps to labels."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def _rel(self, at: int, target: str | int) -> int:
        if isinstance(target, int):
            return target
        off = self.labels[target] - at - 1
        if not 0 <= off <= 255:
            raise ValueError(f"jump to {target} out of range")
        return off

    def assemble(self) -> bytes:
        return b"".join(struct.pack("<HBBI", code, self._rel(i, jt), self._rel(i, jf), k & 0xFFFFFFFF)
                        for i, (code, jt, jf, k) in enumerate(self.code))


def _seccomp_program(allow_exec: bool, inet: bool) -> bytes:
    nr = _NR
    eperm = _RET_ERRNO | errno.EPERM
    p = _Bpf()
    p.op(_BPF_LD_W_ABS, 4)  # seccomp_data.arch
    p.op(_BPF_JEQ_K, _AUDIT_ARCH[_ARCH], 1, 0)
    p.op(_BPF_RET_K, _RET_KILL_PROCESS)
    p.op(_BPF_LD_W_ABS, 0)  # seccomp_data.nr
    if _ARCH == "x86_64":
        p.op(_BPF_JGE_K, 0x40000000, "deny", 0)  # the x32 ABI
    denied = list(_DENY_ALWAYS)
    if allow_exec:
        denied.append("memfd_create")  # Landlock does not limit executing a memfd
    else:
        denied += ["execve", "execveat", "fork", "vfork"]
    for name in denied:
        if name in nr:
            p.op(_BPF_JEQ_K, nr[name], "deny", 0)
    p.op(_BPF_JEQ_K, nr["clone3"], "nosys", 0)
    p.op(_BPF_JEQ_K, nr["clone"], "clone", 0)
    p.op(_BPF_JEQ_K, nr["socket"], "socket", 0)
    p.op(_BPF_JEQ_K, nr["ioctl"], "ioctl", 0)
    p.op(_BPF_RET_K, _RET_ALLOW)
    p.label("ioctl")
    p.op(_BPF_LD_W_ABS, 24)  # args[1] (low 32 bits): the request
    p.op(_BPF_JEQ_K, _TIOCSTI, "deny", 0)
    p.op(_BPF_JEQ_K, _TIOCLINUX, "deny", "allow")
    p.label("clone")
    p.op(_BPF_LD_W_ABS, 16)  # args[0] (low 32 bits): the flags
    p.op(_BPF_JSET_K, _CLONE_NAMESPACES, "deny", 0)
    if allow_exec:
        p.op(_BPF_RET_K, _RET_ALLOW)
    else:
        p.op(_BPF_JSET_K, _CLONE_THREAD, "allow", "deny")
    p.label("socket")
    if inet:
        p.op(_BPF_LD_W_ABS, 16)  # args[0]: the family
        p.op(_BPF_JEQ_K, _AF_INET, "allow", 0)
        p.op(_BPF_JEQ_K, _AF_INET6, "allow", 0)
        p.op(_BPF_JEQ_K, _AF_NETLINK, 0, "deny")
        p.op(_BPF_LD_W_ABS, 32)  # args[2]: the protocol
        p.op(_BPF_JEQ_K, _NETLINK_ROUTE, "allow", "deny")
    else:
        p.op(_BPF_RET_K, eperm)
    p.label("allow")
    p.op(_BPF_RET_K, _RET_ALLOW)
    p.label("nosys")
    p.op(_BPF_RET_K, _RET_ERRNO | errno.ENOSYS)
    p.label("deny")
    p.op(_BPF_RET_K, eperm)
    return p.assemble()


def _seccomp(allow_exec: bool, inet: bool) -> None:
    prog = _seccomp_program(allow_exec, inet)
    filt = ctypes.create_string_buffer(prog, len(prog))
    fprog = ctypes.create_string_buffer(struct.pack("<HxxxxxxQ", len(prog) // 8, ctypes.addressof(filt)), 16)
    # SECCOMP_SET_MODE_FILTER with SECCOMP_FILTER_FLAG_TSYNC: every thread of the worker
    _syscall("seccomp", 1, 1, ctypes.c_void_p(ctypes.addressof(fprog)))


# -- capabilities, namespaces, rlimits ----------------------------------------------------------


def _drop_capabilities() -> str:
    if os.geteuid() != 0:
        return "none held (not root)"
    try:
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        try:
            _prctl(_PR_CAPBSET_DROP, cap)
        except OSError:
            pass
    try:
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    header = ctypes.create_string_buffer(struct.pack("<Ii", 0x20080522, 0), 8)  # _LINUX_CAPABILITY_VERSION_3
    data = ctypes.create_string_buffer(bytes(24), 24)  # two (effective, permitted, inheritable) of 0
    _syscall("capset", ctypes.c_void_p(ctypes.addressof(header)), ctypes.c_void_p(ctypes.addressof(data)))
    return "all dropped (root without capabilities)"


def _new_netns() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        os.unshare(os.CLONE_NEWNET)  # type: ignore[attr-defined,unused-ignore]
        return True
    except (OSError, AttributeError):
        ctypes.set_errno(0)
        if _libc.unshare(0x40000000) == 0:
            return True
        log.warning("sandbox: cannot make a network namespace: %s", os.strerror(ctypes.get_errno()))
        return False


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def _vm_size() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _rlimits(limits: Limits) -> tuple[str, str]:
    def lower(which: int, value: int) -> int:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
        return value

    as_bytes = lower(resource.RLIMIT_AS, address_space_limit(_vm_size(), limits))
    nofile = lower(resource.RLIMIT_NOFILE, _open_fds() + limits.connections + 64)
    lower(resource.RLIMIT_CORE, 0)
    return f"RLIMIT_AS {as_bytes // _MIB} MiB (backstop)", f"RLIMIT_NOFILE {nofile}"


# -- the Python-level network checks ------------------------------------------------------------


class _NetGuard:
    """The audit hook: hosts not granted and sockets over the limit are refused."""

    RESOLVE_TTL = 30.0

    def __init__(self, grants: Grants, limits: Limits) -> None:
        self.grants = [(_canonical(h), p) for h, p in map(host_port, grants.hosts)]
        self.granted_text = ", ".join(grants.hosts) or "none"
        self.max_sockets = limits.connections
        self.sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.resolved: dict[str, tuple[float, set[str]]] = {}
        self.lock = threading.RLock()
        self.local = threading.local()

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not event.startswith("socket."):
            return
        if event == "socket.__new__":
            self._new(args[0], args[1])
        elif event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            sock, address = args[0], args[1]
            if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
                self._host(address[0], address[1])
        elif event == "socket.getaddrinfo":
            host, port = args[0], args[1]
            if host is not None:
                self._host(host, port)

    def _new(self, sock: socket.socket, family: int) -> None:
        if family not in (socket.AF_INET, socket.AF_INET6, -1):
            return
        with self.lock:
            open_now = sum(1 for s in list(self.sockets) if _fileno(s) != -1)
            if open_now >= self.max_sockets:
                raise PermissionError(errno.EMFILE, f"sandbox: connection limit: {open_now} network sockets "
                                                    f"open, at most {self.max_sockets}")
            self.sockets.add(sock)

    def _host(self, host: Any, port: Any) -> None:
        if getattr(self.local, "resolving", False):
            return
        try:
            name = _canonical(host.decode("idna") if isinstance(host, bytes) else str(host))
            port_no: int | None = None
            if isinstance(port, bytes):
                port = port.decode("ascii")
            if port not in (None, ""):
                port_no = int(port) if str(port).isdigit() else socket.getservbyname(str(port))
        except (UnicodeError, ValueError, OSError, TypeError):
            raise PermissionError(errno.EACCES, f"sandbox: {host!r} port {port!r} is not a granted host "
                                                f"(grants.hosts: {self.granted_text})") from None
        if self._granted(name, port_no):
            return
        raise PermissionError(errno.EACCES, f"sandbox: {name}{'' if port_no is None else f':{port_no}'} "
                                            f"is not a granted host (grants.hosts: {self.granted_text})")

    def _granted(self, name: str, port: int | None) -> bool:
        candidates = [h for h, p in self.grants if p is None or port is None or p == port]
        if name in candidates:
            return True
        if not _is_ip(name):
            return False
        return any(name in self._resolve(h) for h in candidates if not _is_ip(h))

    def _resolve(self, host: str) -> set[str]:
        with self.lock:
            now = time.monotonic()
            cached = self.resolved.get(host)
            if cached and now - cached[0] < self.RESOLVE_TTL:
                return cached[1]
            self.local.resolving = True
            try:
                infos = socket.getaddrinfo(host, None)
                addrs = {_canonical(str(info[4][0])) for info in infos}
            except OSError:
                addrs = set()
            finally:
                self.local.resolving = False
            self.resolved[host] = (now, addrs)
            return addrs


def _fileno(sock: socket.socket) -> int:
    try:
        return sock.fileno()
    except (OSError, ValueError):
        return -1


def _canonical(host: str) -> str:
    """A host as grants compare it: lower case, no brackets or trailing dot, an address in its
    one canonical spelling (``0:0::1`` is ``::1``)."""
    name = host.strip().lower().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
        return True
    except ValueError:
        return False


# -- apply --------------------------------------------------------------------------------------


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def apply(limits: Limits, grants: Grants, *, extra_read: Iterable[str] = ()) -> dict[str, str]:
    """Sandbox this process (see the module): call in the worker before importing the plugin
    and before starting threads. ``extra_read``: more paths the worker must read (the plugin's
    own directory when it is not on ``sys.path``). Returns what holds, per guarantee; what a
    missing kernel feature leaves out is logged as a warning and says ``none: ...``.

    Raises :class:`SandboxError` when a step that the kernel supports fails half-way (the worker
    must not run the plugin then)."""
    if sys.platform != "linux":
        log.warning("sandbox: not Linux: the plugin runs with no sandbox, only the agent's limits")
        return {"fs": "none: not Linux", "exec": "none: not Linux", "net": "none: not Linux"}
    held: dict[str, str] = {}
    threads = _threads()
    lone = "" if threads == 1 else f" (this thread only: {threads} threads were running)"
    if lone:
        log.warning("sandbox: applied with %d threads running: Landlock holds for this thread only", threads)
    net: list[str] = []
    if not grants.hosts and _new_netns():
        net.append("network namespace")
    try:
        held["memory"], held["files"] = _rlimits(limits)
    except (OSError, ValueError) as e:
        log.warning("sandbox: cannot set resource limits: %s", e)
        held["memory"] = held["files"] = f"none: {e}"
    try:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    except OSError as e:
        raise SandboxError(e.errno, f"sandbox: cannot set no_new_privs: {e}") from e
    abi = landlock_abi()
    if abi:
        try:
            landlock_net = _landlock(abi, grants, extra_read)
        except OSError as e:
            raise SandboxError(e.errno, f"sandbox: Landlock: {e}") from e
        held["fs"] = f"landlock abi {abi}{lone}"
        if landlock_net:
            net.append(landlock_net + lone)
        if abi >= 6:
            held["signals"] = "landlock scope: no signals or abstract Unix sockets outside the worker"
        else:
            log.warning("sandbox: Landlock ABI %d < 6: the worker may signal processes of its user", abi)
            held["signals"] = f"none: Landlock ABI {abi} has no scopes; processes of the worker's user can be signalled"
    else:
        log.warning("sandbox: Landlock is not available (kernel < 5.13 or disabled): the file system is "
                    "limited only by the worker's user")
        held["fs"] = "none: no Landlock in this kernel"
        held["signals"] = "none: no Landlock in this kernel; processes of the worker's user can be signalled"
    try:
        held["capabilities"] = _drop_capabilities()
    except OSError as e:
        raise SandboxError(e.errno, f"sandbox: cannot drop capabilities: {e}") from e
    if _ARCH in _AUDIT_ARCH:
        try:
            _seccomp(allow_exec=bool(grants.exec), inet=bool(grants.hosts))
        except OSError as e:
            raise SandboxError(e.errno, f"sandbox: seccomp: {e}") from e
        if not grants.exec:
            held["exec"] = "seccomp: no exec, no fork"
        elif abi:
            held["exec"] = "seccomp: exec allowed; landlock: only " + ", ".join(grants.exec)
        else:
            log.warning("sandbox: programs are granted and there is no Landlock: any program may run")
            held["exec"] = "none: exec allowed for the granted programs and, without Landlock, any other"
        held["syscalls"] = "seccomp: no ptrace, mount, namespaces, modules, bpf, io_uring"
        net.append("seccomp: inet and netlink-route sockets only, no Unix sockets" if grants.hosts
                   else "seccomp: no sockets")
    else:
        log.warning("sandbox: no seccomp filter for %s: programs can run and sockets be made", _ARCH)
        held["exec"] = f"none: no seccomp filter for {_ARCH}" + (
            "; landlock: execute only " + ", ".join(grants.exec) if abi else "")
        held["syscalls"] = f"none: no seccomp filter for {_ARCH}"
    sys.addaudithook(_NetGuard(grants, limits))
    if grants.hosts:
        net.append("python audit hook: granted hosts only")
    held["net"] = "; ".join(net) if net else "none"
    held["connections"] = f"python audit hook: at most {limits.connections} network sockets; the agent counts them"
    log.info("sandbox: %s", "; ".join(f"{k}: {v}" for k, v in held.items()))
    return held
