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

Nothing here blocks the event loop: the process runs under asyncio with bounded reads.
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


async def _read_bounded(stream: asyncio.StreamReader, keep: int, budget: list[int], pid: int) -> tuple[bytes, bool, bool]:
    """Read ``stream`` to its end: (the first ``keep`` bytes, whether more came, whether the
    shared ``budget`` of bytes ran out first, when process group ``pid`` is killed)."""
    kept = bytearray()
    more = False
    while True:
        chunk = await stream.read(_CHUNK)
        if not chunk:
            return bytes(kept), more, False
        budget[0] -= len(chunk)
        room = keep - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > room:
            more = True
        if budget[0] < 0:
            _kill_group(pid)
            return bytes(kept), more, True


async def _drain(stream: asyncio.StreamReader) -> None:
    """Read what is left of a killed plugin's pipe, so the pipe closes."""
    while await stream.read(_CHUNK):
        pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _decode(data: bytes, truncated: bool) -> tuple[str | None, str]:
    """(text, "") or (None, why it is not UTF-8). A character cut by the length limit is dropped."""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=not truncated), ""
    except UnicodeDecodeError as e:
        return None, f"byte 0x{data[e.start]:02x} at offset {e.start}"


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
    try:
        proc = await asyncio.create_subprocess_exec(
            path, *argv[1:], stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, env={**BASE_ENV, **(env or {})},
            close_fds=True, limit=_CHUNK)
    except OSError as e:
        reason = "not_executable" if isinstance(e, PermissionError) else "spawn"
        return _unknown(f"cannot run plugin {path}: {e.strerror or e}", reason, started_at=started_at, argv=tuple(argv))
    assert proc.stdout is not None and proc.stderr is not None
    budget = [flood_bytes]
    reads = asyncio.ensure_future(asyncio.gather(_read_bounded(proc.stdout, max_output, budget, proc.pid),
                                                 _read_bounded(proc.stderr, 1024, budget, proc.pid)))
    timed_out = flooded = False
    out = err = b""
    truncated = False
    try:
        async with asyncio.timeout(timeout):
            while not reads.done():
                # Output ends when every writer has closed it: a plugin that exited while a child of
                # its own holds the pipes has its group killed, as Nagios' workers end a job at its exit.
                await asyncio.wait({reads}, timeout=0.05)
                if not reads.done() and proc.returncode is not None:
                    _kill_group(proc.pid)
            (out, truncated, flood_out), (err, _, flood_err) = reads.result()
            flooded = flood_out or flood_err
            await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        _kill_group(proc.pid)  # the plugin's leftovers (or all of it, timed out or flooding)
        if not reads.done():
            reads.cancel()
            await asyncio.gather(reads, return_exceptions=True)
        try:
            async with asyncio.timeout(REAP_TIMEOUT_S):
                await asyncio.gather(_drain(proc.stdout), _drain(proc.stderr))
                await proc.wait()
        except TimeoutError:
            pass  # not reaped yet (a process stuck in the kernel): asyncio's child watcher reaps it when it ends
    duration = time.monotonic() - t0
    common = {"duration": duration, "started_at": started_at, "argv": tuple(argv)}
    if timed_out:
        return _unknown(f"timed out after {timeout:g} s", "timeout", **common)
    if flooded:
        return _unknown(f"plugin wrote more than {flood_bytes} bytes of output; killed", "flood", **common)
    rc = proc.returncode
    if rc is None:
        return _unknown("plugin did not exit after its output ended", "spawn", **common)
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return _unknown(f"plugin killed by signal {name} ({-rc})", "signal", **common)
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
