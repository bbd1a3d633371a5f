"""bridge.sandbox: real child processes apply the sandbox, then misbehave.

Each child runs ``bridge.sandbox.apply`` and then the probes it is given, and prints what each
did (``ok`` or the errno that refused it) and how long it took. A refusal comes within the
probe's timeout + 10 % (the socket timeout a connect is given; ``TIMEOUT`` for the rest).
Kernel-enforced refusals are also probed through ctypes, past Python's audit hooks.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sandbox import landlock_abi

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux sandbox")

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 2.0  # what a refused action may take (a connect is given this as its socket timeout)

CHILD = r"""
import ctypes, errno, json, os, socket, subprocess, sys, time
from bridge.isolation import Grants, Limits
import bridge.sandbox as sandbox
spec = json.loads(sys.argv[1])
if spec.get("threads_before"):
    import threading
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
if spec.get("no_landlock"):
    sandbox.landlock_abi = lambda: 0
held = sandbox.apply(Limits(**spec["limits"]), Grants(**spec["grants"]))
libc = ctypes.CDLL(None, use_errno=True)
TIMEOUT = spec["timeout"]
keep = []

def connect(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    keep.append(s)
    s.settimeout(TIMEOUT)
    s.connect((host, port))

def raw_connect(port):  # past the audit hook: only the kernel decides
    fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "socket")
    addr = socket.inet_aton("127.0.0.1")
    sa = (ctypes.c_ubyte * 16)(*([2, 0] + list(port.to_bytes(2, "big")) + list(addr) + [0] * 8))
    if libc.connect(fd, sa, 16) < 0:
        raise OSError(ctypes.get_errno(), "connect")
    keep.append(fd)

def raw_socket():
    fd = libc.socket(socket.AF_INET, socket.SOCK_DGRAM, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "socket")

def system(cmd):
    status = os.system(cmd)
    if status != 0:
        raise OSError(errno.EPERM, f"os.system returned {status}")

def unshare_user():
    if libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")

def threads_and_asyncio():
    import asyncio, threading
    t = threading.Thread(target=lambda: None); t.start(); t.join()
    asyncio.run(asyncio.sleep(0))

results = []
for name, code in spec["probes"]:
    t0 = time.monotonic()
    try:
        exec(code)
        outcome = "ok"
    except OSError as e:
        outcome = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
    results.append([name, outcome, time.monotonic() - t0])
print(json.dumps({"held": held, "results": results}))
"""


@pytest.fixture
def listeners() -> Iterator[list[int]]:
    socks = [socket.create_server(("127.0.0.1", 0), backlog=64) for _ in range(2)]
    yield [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()


def child(spec: dict[str, Any], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The sandboxed child run with ``spec`` (this checkout first on its path), ended."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def run(probes: list[tuple[str, str]], grants: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
        cwd: Path = ROOT, **extra: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Run ``probes`` in a sandboxed child: (what holds, {probe: outcome})."""
    proc = child({"grants": grants or {}, "limits": limits or {}, "probes": probes, "timeout": TIMEOUT, **extra}, cwd)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, _, took in out["results"]:
        assert took <= TIMEOUT * 1.1, f"{name} took {took:.2f} s"
    return out["held"], {name: outcome for name, outcome, _ in out["results"]}


needs_landlock = pytest.mark.skipif(landlock_abi() < 1, reason="needs Landlock")
needs_landlock_net = pytest.mark.skipif(landlock_abi() < 4, reason="needs Landlock ABI 4 (TCP ports)")
needs_seccomp = pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="no seccomp filter here")


@needs_landlock
def test_writes_only_beneath_the_granted_directory(tmp_path: Path) -> None:
    granted, other = tmp_path / "granted", tmp_path / "other"
    granted.mkdir()
    other.mkdir()
    (other / "secret").write_text("s3cret")
    held, got = run([
        ("write-inside", f"open({str(granted / 'f')!r}, 'w').write('x')"),
        ("mkdir-inside", f"os.mkdir({str(granted / 'sub')!r})"),
        ("write-outside", f"open({str(other / 'f')!r}, 'w').write('x')"),
        ("overwrite-outside", f"open({str(other / 'secret')!r}, 'w').write('x')"),
        ("read-outside", f"open({str(other / 'secret')!r}).read()"),
        ("rename-out", f"os.rename({str(granted / 'f')!r}, {str(other / 'g')!r})"),
        ("import-after", "import decimal, json, ssl"),
    ], grants={"paths": [str(granted)]})
    assert held["fs"] == f"landlock abi {landlock_abi()}"
    assert got == {"write-inside": "ok", "mkdir-inside": "ok", "write-outside": "EACCES",
                   "overwrite-outside": "EACCES", "read-outside": "EACCES", "rename-out": "EACCES",
                   "import-after": "ok"}
    assert (granted / "f").read_text() == "x"
    assert (other / "secret").read_text() == "s3cret" and not (other / "f").exists()


@needs_landlock
def test_of_the_working_directory_only_python_code_is_readable(tmp_path: Path) -> None:
    (tmp_path / "agent.yml").write_text("token: s3cret")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "queue").write_text("queued")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("X = 1")
    (tmp_path / "mod.py").write_text("Y = 2")
    _, got = run([
        ("config", "open('agent.yml').read()"),
        ("state", "open('state/queue').read()"),
        ("package", "import pkg; assert pkg.X == 1"),
        ("module", "import mod; assert mod.Y == 2"),
    ], cwd=tmp_path)
    assert got == {"config": "EACCES", "state": "EACCES", "package": "ok", "module": "ok"}


@needs_seccomp
def test_no_shell_runs(tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    held, got = run([
        ("subprocess-sh", f"subprocess.run(['/bin/sh', '-c', 'touch {mark}'])"),
        ("os-system", f"system('touch {mark}')"),
        ("fork", "os.fork()"),
        ("execv", "os.execv('/bin/sh', ['sh', '-c', 'true'])"),
        ("threads-and-asyncio", "threads_and_asyncio()"),
        ("unshare", "unshare_user()"),
        ("signal-the-agent", "os.kill(os.getppid(), 0)"),
        ("signal-itself", "os.kill(os.getpid(), 0)"),
        ("tiocsti", "import fcntl, termios; fcntl.ioctl(1, termios.TIOCSTI, b'x')"),
        ("other-ioctl", "import fcntl, termios; fcntl.ioctl(os.pipe()[0], termios.FIONREAD, b'    ')"),
    ])
    assert held["exec"] == "seccomp: no exec, no fork"
    assert got == {"subprocess-sh": "EPERM", "os-system": "EPERM", "fork": "EPERM", "execv": "EPERM",
                   "threads-and-asyncio": "ok", "unshare": "EPERM",
                   "signal-the-agent": "EPERM" if landlock_abi() >= 6 else "ok", "signal-itself": "ok",
                   "tiocsti": "EPERM", "other-ioctl": "ok"}
    assert not mark.exists()


@needs_landlock
@needs_seccomp
def test_only_granted_programs_run() -> None:
    held, got = run([
        ("true", "assert subprocess.run(['/usr/bin/true']).returncode == 0"),
        ("sh", "subprocess.run(['/bin/sh', '-c', 'true'])"),
        ("os-system", "system('true')"),
        ("memfd", "os.memfd_create('program')"),  # Landlock would not stop running one
    ], grants={"exec": ["/usr/bin/true"]})
    assert "/usr/bin/true" in held["exec"]
    assert got == {"true": "ok", "sh": "EACCES", "os-system": "EPERM", "memfd": "EPERM"}


@needs_seccomp
def test_no_hosts_granted_means_no_network(listeners: list[int]) -> None:
    port = listeners[0]
    held, got = run([
        ("connect", f"connect('127.0.0.1', {port})"),
        ("raw-socket", "raw_socket()"),  # past the audit hook: the kernel refuses
        ("unix", "socket.socket(socket.AF_UNIX)"),
        ("socketpair", "socket.socketpair()"),
    ])
    assert "seccomp: no sockets" in held["net"]
    if os.geteuid() == 0:
        assert "network namespace" in held["net"]
    assert got == {"connect": "EPERM", "raw-socket": "EPERM", "unix": "EPERM", "socketpair": "ok"}


@needs_landlock_net
@needs_seccomp
def test_granted_hosts_connect_and_others_are_refused(listeners: list[int]) -> None:
    granted, other = listeners
    held, got = run([
        ("granted", f"connect('127.0.0.1', {granted})"),
        ("granted-by-name", f"connect('localhost', {granted})"),
        ("other-port", f"connect('127.0.0.1', {other})"),
        ("other-host", f"connect('127.0.0.2', {granted})"),
        ("lookup-other", "socket.getaddrinfo('example.org', 80)"),
        ("raw-granted", f"raw_connect({granted})"),
        ("raw-other-port", f"raw_connect({other})"),  # past the audit hook: Landlock refuses the port
        ("udp-other-host", f"socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.3', {granted}))"),
        ("unix", "socket.socket(socket.AF_UNIX)"),
    ], grants={"hosts": [f"localhost:{granted}"]})
    assert "landlock: TCP connect to granted ports only" in held["net"]
    assert "audit hook" in held["net"]
    assert got == {"granted": "ok", "granted-by-name": "ok", "other-port": "EACCES", "other-host": "EACCES",
                   "lookup-other": "EACCES", "raw-granted": "ok", "raw-other-port": "EACCES", "udp-other-host": "EACCES",
                   "unix": "EPERM"}


def test_the_connection_over_the_limit_is_refused(listeners: list[int]) -> None:
    port = listeners[0]
    probes = [(f"conn-{i}", f"connect('127.0.0.1', {port})") for i in range(1, 12)]
    probes.append(("after-close", f"keep.pop().close(); connect('127.0.0.1', {port})"))
    _, got = run(probes, grants={"hosts": [f"127.0.0.1:{port}"]}, limits={"connections": 10})
    assert [got[f"conn-{i}"] for i in range(1, 11)] == ["ok"] * 10
    assert got["conn-11"] == "EMFILE"
    assert got["after-close"] == "ok"


def test_a_missing_kernel_feature_is_reported_not_silent() -> None:
    proc = child({"grants": {"exec": ["/usr/bin/true"]}, "limits": {}, "probes": [], "timeout": TIMEOUT,
                  "no_landlock": True})
    held = json.loads(proc.stdout.strip().splitlines()[-1])["held"]
    assert held["fs"] == "none: no Landlock in this kernel"
    assert held["exec"].startswith("none: ")
    assert held["signals"].startswith("none: ")
    assert "Landlock is not available" in proc.stderr
    assert "any program may run" in proc.stderr


@needs_landlock
def test_applied_with_threads_running_says_landlock_holds_for_one_thread() -> None:
    held, got = run([("import-after", "import decimal")], threads_before=True)
    assert "this thread only: 2 threads were running" in held["fs"]
    assert got == {"import-after": "ok"}


def test_host_checks_compare_canonical_hosts_and_ports() -> None:
    from bridge.isolation import Grants, Limits
    from bridge.sandbox import _NetGuard

    guard = _NetGuard(Grants(hosts=["[::1]:9000", "Example.ORG.", "localhost:8080"]), Limits())
    for host, port in [("0:0:0:0:0:0:0:1", 9000), ("[::1]", "9000"), (b"example.org", 443), ("EXAMPLE.org.", None),
                       ("localhost", 8080), ("127.0.0.1", 8080)]:
        guard._host(host, port)  # granted: no error
    for host, port in [("::1", 9001), ("127.0.0.1", 9000), ("example.com", 443), ("127.1", 8080),
                       (b"\xff\xfe", 80), ("example.org", "no-such-service"), (None, object()), ("localhost", 8081)]:
        with pytest.raises(PermissionError, match="not a granted host"):
            guard._host(host, port)
