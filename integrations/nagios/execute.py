"""Running one Nagios plugin: argv (never a shell), bounded output, timeout, process group.

* The command's first word is looked up in ``plugin_paths`` unless it holds a ``/``.
* The plugin runs in a session and process group of its own, stdin ``/dev/null``, with a
  small fixed environment (``PATH``, ``LC_ALL=C``) and the check's own variables.
* Up to ``MAX_PLUGIN_OUTPUT_LENGTH`` bytes of stdout are kept (Nagios' limit); more is read and
  thrown away (the result says it was cut) up to ``flood_bytes`` of stdout and stderr together,
  beyond which the process group is killed: UNKNOWN.
* Past its timeout the whole process group is killed (SIGKILL, as Nagios' workers do): UNKNOWN
  "timed out after N s". Once the plugin itself has exited, what is left of its group is killed.
* A missing or non-executable plugin, no output, output that is not UTF-8, an exit by a signal
  and an exit code outside 0-3 are UNKNOWN, with a text saying which.

Nothing here blocks the event loop, and a run costs no thread: the plugin is started with
``posix_spawn`` (a vfork and exec: no copy of the agent's memory; the loop waits only for the
exec) and its pipes and exit (a pidfd) are watched by
the event loop, reads bounded.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from integrations.nagios.output import MAX_PLUGIN_OUTPUT_LENGTH, PluginOutput, State, parse_plugin_output, state_from_exit

__all__ = ["DEFAULT_FLOOD_BYTES", "BASE_ENV", "RunResult", "resolve_command", "run_plugin"]

#: Output (stdout and stderr together) beyond which a plugin is a flood and is killed.
DEFAULT_FLOOD_BYTES = 1 << 20
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_CHUNK = 65536
#: How long the pipes and the exit of a killed plugin are waited for.
REAP_TIMEOUT_S = 5.0
#: Failure reasons (``RunResult.failure``), each an UNKNOWN monbridge gives in the plugin's place.
FAILURES = ("not_found", "not_executable", "spawn", "timeout", "signal", "exit_code", "no_output", "flood",
            "not_utf8")


@dataclass(slots=True)
class RunResult:
    """One run: its state and output, the exit code (None when it did not exit by itself),
    seconds it took, whether the plugin ran to an exit of its own, why monbridge made it UNKNOWN
    (one of ``FAILURES``, else None), and whether output was cut at the length limit."""

    state: State
    output: PluginOutput
    exit_code: int | None = None
    duration: float = 0.0
    ran: bool = False
    failure: str | None = None
    truncated: bool = False
    started_at: float = 0.0  # time.time() when the plugin was started
    argv: tuple[str, ...] = field(default_factory=tuple)


def _unknown(text: str, failure: str, **kw: object) -> RunResult:
    return RunResult(State.UNKNOWN, PluginOutput(text=text), failure=failure, **kw)  # type: ignore[arg-type]


def resolve_command(word: str, plugin_paths: Sequence[str]) -> tuple[str | None, str | None]:
    """(path, None) for the program ``word`` names, or (None, why not) when it is missing or not
    executable."""
    if "/" in word:
        candidates = [word]
    else:
        candidates = [os.path.join(d, word) for d in plugin_paths]
        if not candidates:
            return None, f"plugin {word!r} not found: no plugin_paths to look in"
    for path in candidates:
        if os.path.isfile(path):
            if not os.access(path, os.X_OK):
                return None, f"plugin {path} is not executable"
            return path, None
    where = word if "/" in word else f"{word!r} in {', '.join(plugin_paths)}"
    return None, f"plugin {where} not found"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap_later(pid: int, loop: asyncio.AbstractEventLoop) -> None:
    """Reap ``pid`` once it ends (a killed process stuck in the kernel), polling once a second."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if not done:
        loop.call_later(1.0, _reap_later, pid, loop)


def _decode(data: bytes, truncated: bool) -> tuple[str | None, str]:
    """(text, "") or (None, why it is not UTF-8). A character cut by the length limit is dropped."""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=not truncated), ""
    except UnicodeDecodeError as e:
        return None, f"byte 0x{data[e.start]:02x} at offset {e.start}"


class _Child:
    """One spawned plugin watched from the event loop: its two pipes and its exit (a pidfd, or,
    where the kernel has none, ``waitpid`` polled), no thread and no transport per run.

    ``done`` resolves once the plugin has exited and both pipes are closed. Reads keep the first
    ``keep`` bytes of stdout and 1 KiB of stderr; once ``flood_bytes`` have come through both,
    the process group is killed. When the plugin has exited but a child of its own still holds a
    pipe, the group is killed (Nagios' workers end a job at its exit too)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pid: int, out_fd: int, err_fd: int, keep: int,
                 flood_bytes: int) -> None:
        self.loop, self.pid = loop, pid
        self.bufs = {out_fd: bytearray(), err_fd: bytearray()}
        self.keeps = {out_fd: keep, err_fd: 1024}
        self.out_fd = out_fd
        self.open: set[int] = {out_fd, err_fd}
        self.more = False  # stdout had more than ``keep``
        self.budget = flood_bytes
        self.flooded = False
        self.status: int | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self.pidfd: int | None = None
        for fd in self.open:
            loop.add_reader(fd, self._read, fd)
        try:
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None
        if self.pidfd is not None:
            loop.add_reader(self.pidfd, self._reap)
        else:
            loop.call_later(0.01, self._poll)

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            return
        buf = self.bufs[fd]
        room = self.keeps[fd] - len(buf)
        if room > 0:
            buf += data[:room]
        if len(data) > room and fd == self.out_fd:
            self.more = True
        self.budget -= len(data)
        if self.budget < 0 and not self.flooded:
            self.flooded = True
            _kill_group(self.pid)

    def _close(self, fd: int) -> None:
        if fd in self.open:
            self.open.discard(fd)
            self.loop.remove_reader(fd)
            os.close(fd)
            self._check()

    def _reap(self) -> None:
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            done, status = self.pid, 255 << 8
        if not done:
            return
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        self.status = status
        if self.open:
            _kill_group(self.pid)  # what is left of its group still holds the output
        self._check()

    def _poll(self) -> None:
        if self.status is None and not self.done.done():
            self._reap()
            if self.status is None:
                self.loop.call_later(0.05, self._poll)

    def _check(self) -> None:
        if not self.open and self.status is not None and not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        """Release everything: the group killed if it still runs, pipes closed, the plugin reaped
        (now, or once it ends)."""
        if self.status is None:
            _kill_group(self.pid)
        for fd in list(self.open):
            self.open.discard(fd)
            self.loop.remove_reader(fd)
            os.close(fd)
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        if self.status is None:
            _reap_later(self.pid, self.loop)


async def run_plugin(argv: Sequence[str], timeout: float, *, plugin_paths: Sequence[str] = (),
                     env: Mapping[str, str] | None = None, flood_bytes: int = DEFAULT_FLOOD_BYTES,
                     max_output: int = MAX_PLUGIN_OUTPUT_LENGTH) -> RunResult:
    """Run one plugin (see the module doc) and return its result; never raises for the plugin's faults."""
    started_at = time.time()
    t0 = time.monotonic()
    path, why = resolve_command(argv[0], plugin_paths)
    if path is None:
        assert why is not None
        return _unknown(why, "not_executable" if "not executable" in why else "not_found", started_at=started_at,
                        argv=tuple(argv))
    loop = asyncio.get_running_loop()
    out_r, out_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    err_r, err_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.set_blocking(out_w, True)
    os.set_blocking(err_w, True)
    try:
        pid = os.posix_spawn(path, [argv[0], *argv[1:]], {**BASE_ENV, **(env or {})}, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    except OSError as e:
        for fd in (out_r, err_r):
            os.close(fd)
        reason = "not_executable" if isinstance(e, PermissionError) else "spawn"
        return _unknown(f"cannot run plugin {path}: {e.strerror or e}", reason, started_at=started_at, argv=tuple(argv))
    finally:
        os.close(out_w)
        os.close(err_w)
    child = _Child(loop, pid, out_r, err_r, max_output, flood_bytes)
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(child.done)
        except TimeoutError:
            timed_out = True
            _kill_group(pid)
            try:
                async with asyncio.timeout(REAP_TIMEOUT_S):
                    await asyncio.shield(child.done)
            except TimeoutError:
                pass  # stuck in the kernel: reaped once it ends
    finally:
        child.close()
    out, err = bytes(child.bufs[out_r]), bytes(child.bufs[err_r])
    truncated, flooded = child.more, child.flooded
    duration = time.monotonic() - t0
    common = {"duration": duration, "started_at": started_at, "argv": tuple(argv)}
    if timed_out:
        return _unknown(f"timed out after {timeout:g} s", "timeout", **common)
    if flooded:
        return _unknown(f"plugin wrote more than {flood_bytes} bytes of output; killed", "flood", **common)
    status = child.status
    if status is None:
        return _unknown("plugin did not exit after it was killed", "spawn", **common)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return _unknown(f"plugin killed by signal {name} ({sig})", "signal", **common)
    rc = os.waitstatus_to_exitcode(status)
    nul = out.find(b"\x00")
    if nul >= 0:
        out, truncated = out[:nul], False
    text, bad = _decode(out, truncated)
    if text is None:
        excerpt = out.decode("utf-8", "replace")[:200].splitlines()[0] if out else ""
        return _unknown(f"plugin output is not UTF-8 ({bad}): {excerpt}", "not_utf8", exit_code=rc, ran=True,
                        **common)
    if not text.strip():
        stderr = err.decode("utf-8", "replace").strip().splitlines()
        detail = f"(No output on stdout) stderr: {stderr[0][:200]}" if stderr else "(No output returned from plugin)"
        return _unknown(f"{detail} (exit code {rc})", "no_output", exit_code=rc, ran=True, **common)
    parsed = parse_plugin_output(text)
    if not 0 <= rc <= 3:
        parsed.text = f"(Return code of {rc} is out of bounds) {parsed.text}".rstrip()
        return RunResult(State.UNKNOWN, parsed, rc, failure="exit_code", ran=True, truncated=truncated, **common)  # type: ignore[arg-type]
    return RunResult(state_from_exit(rc), parsed, rc, ran=True, truncated=truncated, **common)  # type: ignore[arg-type]
