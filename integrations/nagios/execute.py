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

Nothing here blocks the event loop, and a run costs no thread of its own. Two runners do the same
(a differential test runs both on the same hostile plugins); ``Runner`` is the first built:

* ``CRunner``, with the per-run work in C (``integrations.nagios._run``): a thread of that
  module, which never holds the GIL, starts the plugin with vfork and exec (no copy of the
  agent's memory), reads the pipes, enforces the timeouts, reaps and kills; the runs that ended
  reach the event loop in batches through one eventfd (the runs started in one turn of the loop
  together, or any that waited ``BATCH_DELAY_S``): one wakeup of the interpreter per batch, not
  one per pipe or exit, and none waits for a spawn. A caller that wakes anyway may ``defer``
  them further and take them then (``collect_now``).
* ``PyRunner``, the same in Python where the extension is not built: ``posix_spawn``, and the
  pipes and exits (pidfds) of every plugin watched through one epoll object, which the event loop
  sees as one file descriptor: one wakeup reads every pipe ready and reaps every plugin that
  exited, reads bounded.

Both hand what was read to ``_outcome``, which makes the result. Measured with
``benchmarks/bench_nagios.py`` (500 checks of check_dummy every 60 s, Nagios 4 running the same in
the same run, 180 s, light load): monbridge's own CPU is 1.45-1.63x Nagios' with ``CRunner``
(six runs) and 1.68-1.77x with ``PyRunner`` (four); side by side in the same run 1.58x against
1.77x, 1.45x against 1.77x, 1.54x against 1.71x. With the plugins' CPU counted: 0.90-1.00x and
0.99-1.01x. Start-time jitter p99 0.482-0.494 s. With the results taken by the schedule's next
wakeup (``defer``), and the dashboard's history and the collector's metrics made cheaper
elsewhere: 1.12-1.20x, with plugins 0.87-0.89x, p99 0.486-0.498 s (three runs;
benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import codecs
import heapq
import itertools
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from integrations.nagios.output import MAX_PLUGIN_OUTPUT_LENGTH, PluginOutput, State, parse_plugin_output, state_from_exit

try:
    from integrations.nagios import _run
except ImportError:  # not built: PyRunner does the same, in Python
    _run = None

__all__ = ["DEFAULT_FLOOD_BYTES", "BASE_ENV", "CRunner", "PyRunner", "RunResult", "Runner", "resolve_command",
           "run_plugin"]

log = logging.getLogger("monbridge.nagios")

#: Output (stdout and stderr together) beyond which a plugin is a flood and is killed.
DEFAULT_FLOOD_BYTES = 1 << 20
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_CHUNK = 65536
#: How long the pipes and the exit of a killed plugin are waited for.
REAP_TIMEOUT_S = 5.0
#: How long an ended run waits for the others still going, to be handed to Python with them (CRunner).
BATCH_DELAY_S = 0.02
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
                return None, _not_executable(path)
            return path, None
    return None, _missing(word, plugin_paths)


def _not_executable(path: str) -> str:
    return f"plugin {path} is not executable"


def _missing(word: str, plugin_paths: Sequence[str]) -> str:
    where = word if "/" in word else f"{word!r} in {', '.join(plugin_paths)}"
    return f"plugin {where} not found"


def _not_found(why: str | None, started_at: float, argv: tuple[str, ...]) -> RunResult:
    assert why is not None
    return _unknown(why, "not_executable" if "not executable" in why else "not_found", started_at=started_at, argv=argv)


def _spawn_failure(path: str, e: OSError, started_at: float, argv: tuple[str, ...]) -> RunResult:
    """The result of a plugin that could not be started (pipes or spawn failed)."""
    reason = "not_executable" if isinstance(e, PermissionError) else "spawn"
    return _unknown(f"cannot run plugin {path}: {e.strerror or e}", reason, started_at=started_at, argv=argv)


def _deliver(done: Callable[[RunResult], None], result: RunResult) -> None:
    try:
        done(result)
    except Exception:  # one check's fault stays that check's
        log.exception("handling the result of %s failed", result.argv[:1])


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap_later(pid: int) -> None:
    """Reap ``pid``, killed, once it ends (at once, or, stuck in the kernel, whenever it gets out)
    in a thread of its own that only waits: the runner, and the loop, may be gone by then."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if not done:
        threading.Thread(target=_wait, args=(pid,), name=f"reap {pid}", daemon=True).start()


def _wait(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _decode(data: bytes, truncated: bool) -> tuple[str | None, str]:
    """(text, "") or (None, why it is not UTF-8). A character cut by the length limit is dropped."""
    try:
        if not truncated:
            return data.decode("utf-8"), ""
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=False), ""
    except UnicodeDecodeError as e:
        return None, f"byte 0x{data[e.start]:02x} at offset {e.start}"


class _Run:
    """One spawned plugin: its pipes, its exit (a pidfd) and what was read."""

    __slots__ = ("pid", "out_fd", "err_fd", "pidfd", "out", "err", "keep", "more", "budget", "flooded", "status",
                 "open", "timed_out", "finished", "done", "argv", "timeout", "flood_bytes", "started_at", "t0")

    def __init__(self, pid: int, out_fd: int, err_fd: int, keep: int, flood_bytes: int, done: Callable[[RunResult], None],
                 argv: tuple[str, ...], timeout: float, started_at: float, t0: float) -> None:
        self.pid, self.out_fd, self.err_fd = pid, out_fd, err_fd
        self.pidfd: int | None = None
        self.out, self.err = bytearray(), bytearray()
        self.keep = keep
        self.more = False  # stdout had more than ``keep``
        self.budget = self.flood_bytes = flood_bytes
        self.flooded = self.timed_out = self.finished = False
        self.status: int | None = None
        self.open = 2  # pipes not at EOF yet
        self.done, self.argv, self.timeout, self.started_at, self.t0 = done, argv, timeout, started_at, t0


class _Starter:
    """What both runners share: the opening of ``start`` (``_prepare``) and the hand-over of a
    result to its ``done`` (``_deliver``)."""

    loop: asyncio.AbstractEventLoop
    _closed: bool

    def _prepare(self, argv: Sequence[str], plugin_paths: Sequence[str], env: Mapping[str, str] | None,
                 done: Callable[[RunResult], None]) -> tuple[tuple[str, ...], Any, float, float] | None:
        """The opening of ``start``: a closed runner refuses; the run's start is stamped and its
        program looked for (``_locate``). (argv, what ``_locate`` found, started_at, t0), or None
        when there is no program to run: its UNKNOWN is then handed to ``done`` from the loop."""
        if self._closed:
            raise RuntimeError("the plugin runner is closed")
        started_at = time.time()
        t0 = time.monotonic()
        args = tuple(argv)
        found, why = self._locate(args, tuple(plugin_paths), env)
        if found is None:
            self.loop.call_soon(self._deliver, done, _not_found(why, started_at, args))
            return None
        return args, found, started_at, t0

    def _locate(self, args: tuple[str, ...], paths: tuple[str, ...],
                env: Mapping[str, str] | None) -> tuple[Any, str | None]:
        """(what ``start`` runs, None), or (None, why there is no program to run)."""
        raise NotImplementedError

    def _deliver(self, done: Callable[[RunResult], None], result: RunResult) -> None:
        if not self._closed:
            _deliver(done, result)

    def defer(self, seconds: float) -> None:
        """Ended runs may wait up to ``seconds`` to be handed over, with the runs that end after
        them, unless ``collect_now`` takes them sooner (a caller that wakes anyway): one wakeup
        of the event loop for the results of several turns. 0: handed over at once (the
        default). ``PyRunner`` hands each over as it ends."""

    def collect_now(self) -> None:
        """Hand over now the runs that have ended and wait (``defer``)."""


class PyRunner(_Starter):
    """Starts plugins and watches every one of them through one epoll object of its own, which is
    the only file descriptor the event loop watches for them: a wakeup of the loop handles every
    pipe and exit that is ready then, with no handle, transport, task or future per run.

    Each run's two pipes and its pidfd (where the kernel has none, ``waitpid`` is polled) are
    registered there. Reads keep the first ``max_output`` bytes of stdout and 1 KiB of stderr;
    once ``flood_bytes`` have come through both, the process group is killed. When the plugin
    has exited but a process of its own still holds a pipe, the group is killed (Nagios'
    workers end a job at its exit too). Timeouts are one loop timer, at the earliest deadline.

    ``start`` calls ``done(result)`` from the event loop once the run has ended (never from
    within ``start``); ``close`` kills whatever still runs, reaps it and calls nothing more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ep = select.epoll()
        self._fds: dict[int, _Run] = {}
        self._runs: set[_Run] = set()
        # (when, sequence, run, give_up): a timeout, or the end of the wait for a killed group
        self._deadlines: list[tuple[float, int, _Run, bool]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        loop.add_reader(self._ep.fileno(), self._ready)

    @property
    def running(self) -> int:
        """Runs started and not ended."""
        return len(self._runs)

    def start(self, argv: Sequence[str], timeout: float, done: Callable[[RunResult], None], *,
              plugin_paths: Sequence[str] = (), env: Mapping[str, str] | None = None,
              flood_bytes: int = DEFAULT_FLOOD_BYTES, max_output: int = MAX_PLUGIN_OUTPUT_LENGTH) -> None:
        """Start one plugin (see the module doc); ``done`` gets its result."""
        prepared = self._prepare(argv, plugin_paths, env, done)
        if prepared is None:
            return
        args, path, started_at, t0 = prepared
        pipes: list[int] = []
        try:
            pipes += os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            pipes += os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:  # out of file descriptors: this run fails, the next may not
            for fd in pipes:
                os.close(fd)
            self.loop.call_soon(self._deliver, done, _spawn_failure(path, e, started_at, args))
            return
        out_r, out_w, err_r, err_w = pipes
        os.set_blocking(out_w, True)
        os.set_blocking(err_w, True)
        try:
            pid = os.posix_spawn(path, args, {**BASE_ENV, **(env or {})}, setsid=True, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
        except OSError as e:
            for fd in (out_r, err_r):
                os.close(fd)
            self.loop.call_soon(self._deliver, done, _spawn_failure(path, e, started_at, args))
            return
        finally:
            os.close(out_w)
            os.close(err_w)
        run = _Run(pid, out_r, err_r, max_output, flood_bytes, done, args, timeout, started_at, t0)
        self._runs.add(run)
        ep, fds = self._ep, self._fds
        for fd in (out_r, err_r):
            fds[fd] = run
            ep.register(fd, select.EPOLLIN)
        try:
            run.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.loop.call_later(0.01, self._poll, run)
        else:
            fds[run.pidfd] = run
            ep.register(run.pidfd, select.EPOLLIN)
        self._seq += 1
        heapq.heappush(self._deadlines, (self.loop.time() + timeout, self._seq, run, False))
        self._arm()

    def close(self) -> None:
        """Kill every plugin still running (its group), close their pipes, reap them (now or once
        they end); no result is given for them."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        for run in list(self._runs):
            self._end(run)
        self.loop.remove_reader(self._ep.fileno())
        self._ep.close()

    # ------------------------------------------------------------------ inside

    def _locate(self, args: tuple[str, ...], paths: tuple[str, ...],
                env: Mapping[str, str] | None) -> tuple[str | None, str | None]:
        return resolve_command(args[0], paths)

    def _ready(self) -> None:
        ended: list[_Run] = []
        fds = self._fds
        for fd, _ in self._ep.poll(0):
            run = fds.get(fd)
            if run is None or run.finished:
                continue
            if fd == run.pidfd:
                self._reap(run)
            else:
                self._read(run, fd)
            if run.status is not None and not run.open:
                self._end(run)
                ended.append(run)
        for run in ended:
            self._deliver(run.done, _result(run))

    def _read(self, run: _Run, fd: int) -> bool:
        """One read of ``fd``; False once nothing more is there for now (nothing to read, or EOF)."""
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._ep.unregister(fd)
            del self._fds[fd]
            os.close(fd)
            run.open -= 1
            if fd == run.out_fd:
                run.out_fd = -1
            else:
                run.err_fd = -1
            return False
        if fd == run.out_fd:
            buf, keep = run.out, run.keep
        else:
            buf, keep = run.err, 1024
        room = keep - len(buf)
        if room > 0:
            buf += data[:room]
        if len(data) > room and fd == run.out_fd:
            run.more = True
        run.budget -= len(data)
        if run.budget < 0 and not run.flooded:
            run.flooded = True
            _kill_group(run.pid)
        return True

    def _reap(self, run: _Run) -> None:
        try:
            pid, status = os.waitpid(run.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            pid, status = run.pid, 255 << 8
        if not pid:
            return
        run.status = status
        if run.pidfd is not None:
            self._ep.unregister(run.pidfd)
            del self._fds[run.pidfd]
            os.close(run.pidfd)
            run.pidfd = None
        for fd in (run.out_fd, run.err_fd):  # what it wrote last, often not yet seen: no wakeup more
            for _ in range(4):
                if fd < 0 or not self._read(run, fd):
                    break
        if run.open:
            _kill_group(run.pid)  # what is left of its group still holds the output

    def _poll(self, run: _Run) -> None:
        if run.finished:
            return
        self._reap(run)
        if run.status is None:
            self.loop.call_later(0.05, self._poll, run)
        elif not run.open:
            self._end(run)
            self._deliver(run.done, _result(run))

    def _end(self, run: _Run) -> None:
        """Release the run: its group killed if it still runs, pipes and pidfd closed, reaped now
        or once it ends."""
        run.finished = True
        self._runs.discard(run)
        if run.status is None:
            _kill_group(run.pid)
        for fd in (run.out_fd, run.err_fd, run.pidfd):
            if fd is not None and fd >= 0:
                self._ep.unregister(fd)
                del self._fds[fd]
                os.close(fd)
        run.out_fd = run.err_fd = -1
        run.pidfd = None
        run.open = 0
        if run.status is None:
            _reap_later(run.pid)

    def _arm(self) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].finished:
            heapq.heappop(deadlines)
        if not deadlines:
            return
        when = deadlines[0][0]
        if self._timer is None or when < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self.loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, run, give_up = heapq.heappop(deadlines)
            if run.finished:
                continue
            if give_up:  # the killed group did not end in time (stuck in the kernel): reaped later
                self._end(run)
                self._deliver(run.done, _result(run))
            else:
                run.timed_out = True
                _kill_group(run.pid)
                self._seq += 1
                heapq.heappush(deadlines, (now + REAP_TIMEOUT_S, self._seq, run, True))
        self._arm()


class CRunner(_Starter):
    """``PyRunner``'s runs with the per-run work in C (``integrations.nagios._run``, whose header
    says why): a thread of that module, which never holds the GIL, finds the program, spawns it
    (vfork and exec), reads its pipes (bounded), enforces its timeout, reaps it and kills what is
    left of its group, and hands ended runs over in batches through one eventfd, the only file
    descriptor the event loop watches for them. ``start`` only queues the run; each ended run
    becomes its result with ``PyRunner``'s code (``_outcome``).

    ``batch_delay``: an ended run waits at most this long for the others still going before the
    batch is handed over (at once when none is left going and no more are being started).
    ``use_pidfd=False`` polls exits with ``waitpid``, as on a kernel without pidfds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, batch_delay: float = BATCH_DELAY_S,
                 use_pidfd: bool = True) -> None:
        if _run is None:
            raise RuntimeError("integrations.nagios._run is not built (python setup.py build_ext --inplace)")
        self.loop = loop
        self._engine = _run.Engine(batch_delay, use_pidfd, REAP_TIMEOUT_S)
        self._fd = self._engine.fileno()
        # token -> (done, argv, plugin_paths, candidate paths, timeout, flood_bytes, started_at) of each
        # run started and not ended
        self._pending: dict[int, tuple[Callable[[RunResult], None], tuple[str, ...], tuple[str, ...],
                                       tuple[str, ...], float, int, float]] = {}
        self._tokens = itertools.count()
        # (argv, plugin_paths, env) -> candidate paths, and encoded: candidates, argv, environment
        self._encoded: dict[tuple[object, ...], tuple[tuple[str, ...], tuple[bytes, ...], tuple[bytes, ...],
                                                      tuple[bytes, ...]]] = {}
        self._held = False
        self._closed = False
        self._linger = 0.0
        loop.add_reader(self._fd, self._collect)

    @property
    def running(self) -> int:
        """Runs started and not ended."""
        return len(self._pending)

    def start(self, argv: Sequence[str], timeout: float, done: Callable[[RunResult], None], *,
              plugin_paths: Sequence[str] = (), env: Mapping[str, str] | None = None,
              flood_bytes: int = DEFAULT_FLOOD_BYTES, max_output: int = MAX_PLUGIN_OUTPUT_LENGTH) -> None:
        """Start one plugin (see the module doc); ``done`` gets its result."""
        prepared = self._prepare(argv, plugin_paths, env, done)
        if prepared is None:
            return
        args, (paths, enc), started_at, t0 = prepared
        if not self._held:  # runs started in this turn of the loop end up in one batch
            self._held = True
            self._engine.hold(True)
            self.loop.call_soon(self._release)
        token = next(self._tokens)
        self._engine.start(token, *enc[1:], float(timeout), flood_bytes, max_output, t0)
        self._pending[token] = (done, args, paths, enc[0], timeout, flood_bytes, started_at)

    def close(self) -> None:
        """Kill every plugin still running (its group), close their pipes, reap them (now or once
        they end); no result is given for them."""
        if self._closed:
            return
        self._closed = True
        self.loop.remove_reader(self._fd)
        self._pending.clear()
        for pid in self._engine.close():
            _reap_later(pid)

    def _locate(self, args: tuple[str, ...], paths: tuple[str, ...], env: Mapping[str, str] | None) -> tuple[
            tuple[tuple[str, ...], tuple[tuple[str, ...], tuple[bytes, ...], tuple[bytes, ...], tuple[bytes, ...]]] | None,
            str | None]:
        """The candidate paths of the program (the C thread takes the first that is a file) and
        what the engine is given (kept by argv, paths and environment), or why there are none."""
        key = (args, paths, *(env.items() if env else ()))
        enc = self._encoded.get(key)
        if enc is None:
            word = args[0]
            candidates = (word,) if "/" in word else tuple(os.path.join(d, word) for d in paths)
            if not candidates or any("\0" in c for c in candidates):  # what resolve_command says of these
                return None, resolve_command(word, paths)[1]
            enc = (candidates, tuple(os.fsencode(c) for c in candidates), tuple(os.fsencode(a) for a in args),
                   tuple(_env_entry(k, v) for k, v in {**BASE_ENV, **(env or {})}.items()))
            if len(self._encoded) >= 4096:
                self._encoded.clear()
            self._encoded[key] = enc
        return (paths, enc), None

    def defer(self, seconds: float) -> None:
        if seconds != self._linger and not self._closed:
            self._engine.linger(seconds)
            self._linger = seconds

    def collect_now(self) -> None:
        if not self._closed:
            self._collect()

    def _release(self) -> None:
        self._held = False
        if not self._closed:
            self._engine.hold(False)

    def _collect(self) -> None:
        pending = self._pending
        for token, status, out, err, more, flooded, timed_out, duration, failed in self._engine.collect():
            got = pending.pop(token, None)
            if got is None or self._closed:
                continue
            done, args, paths, candidates, timeout, flood_bytes, started_at = got
            if failed is None:
                result = _outcome(out, err, more, flooded, timed_out, status, duration, timeout, flood_bytes,
                                  started_at, args)
            elif failed[0] == "missing":  # the index of the file that is not executable, or -1
                why = _not_executable(candidates[failed[1]]) if failed[1] >= 0 else _missing(args[0], paths)
                result = _not_found(why, started_at, args)
            else:  # the errno of the pipes or the spawn
                path = resolve_command(args[0], paths)[0] or candidates[0]
                result = _spawn_failure(path, OSError(failed[1], os.strerror(failed[1])), started_at, args)
            _deliver(done, result)


def _env_entry(key: str, value: str) -> bytes:
    """``KEY=value`` for the environment, refused as ``os.posix_spawn`` refuses it."""
    k, v = os.fsencode(key), os.fsencode(value)
    if not k or b"=" in k:
        raise ValueError("illegal environment variable name")
    if b"\0" in k or b"\0" in v:
        raise ValueError("embedded null byte")
    return k + b"=" + v


#: The runner the collector uses: ``CRunner`` where the extension is built, else ``PyRunner``
#: (the same results).
Runner: type[PyRunner] | type[CRunner] = CRunner if _run is not None else PyRunner


def _result(run: _Run) -> RunResult:
    """The result of an ended run of ``PyRunner``."""
    return _outcome(bytes(run.out), bytes(run.err), run.more, run.flooded, run.timed_out, run.status,
                    time.monotonic() - run.t0, run.timeout, run.flood_bytes, run.started_at, run.argv)


def _outcome(out: bytes, err: bytes, more: bool, flooded: bool, timed_out: bool, status: int | None,
             duration: float, timeout: float, flood_bytes: int, started_at: float, argv: tuple[str, ...]) -> RunResult:
    """The result of an ended run (see the module doc), from what was read and how it ended: the
    kept stdout and stderr, whether stdout had more, whether it was killed as a flood or at its
    timeout, and its wait status (None when it never gave one). Both runners end here."""
    truncated = more
    common = {"duration": duration, "started_at": started_at, "argv": argv}
    if timed_out:
        return _unknown(f"timed out after {timeout:g} s", "timeout", **common)
    if flooded:
        return _unknown(f"plugin wrote more than {flood_bytes} bytes of output; killed", "flood", **common)
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


async def run_plugin(argv: Sequence[str], timeout: float, *, plugin_paths: Sequence[str] = (),
                     env: Mapping[str, str] | None = None, flood_bytes: int = DEFAULT_FLOOD_BYTES,
                     max_output: int = MAX_PLUGIN_OUTPUT_LENGTH) -> RunResult:
    """Run one plugin (see the module doc) and return its result; never raises for the plugin's
    faults. A runner of its own: one that runs many keeps a ``Runner``."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[RunResult] = loop.create_future()
    runner = Runner(loop)

    def done(r: RunResult) -> None:
        if not result.done():  # cancelled: the runner is being closed
            result.set_result(r)

    try:
        runner.start(argv, timeout, done, plugin_paths=plugin_paths, env=env, flood_bytes=flood_bytes,
                     max_output=max_output)
        return await result
    finally:
        runner.close()
