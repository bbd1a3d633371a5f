"""Where a plugin runs: a ``PluginHost``. The supervisor talks to plugins only through one.

``InProcessHost`` runs the plugin's coroutines on the agent's event loop (built-in plugins).
``ProcessHost`` runs it in a worker process of its own (``bridge.worker``, a fresh interpreter,
never a fork of the agent), over a socket pair speaking ``bridge.wire``: the same lifecycle,
schedule, timeouts, config and metrics flow, with the plugin's CPU, memory and blocking kept out
of the agent. A call that outlives its timeout gets the worker killed (SIGTERM, SIGKILL after a
short grace) and raises ``LimitExceeded(TIMEOUT)``; a worker that exits, or sends a frame the
wire does not allow, raises ``LimitExceeded(CRASHED)`` saying how (exit code, signal, where in
the frame). Every call takes ``timeout``: an in-process host leaves the bound to the
supervisor, a process host enforces it itself (``bounds_calls``).

What a worker carries: collectors (``collect_metrics``, start/stop) and integrations (import
rounds; export of each round's batch to each of its sinks, whose names are fixed at
``initialize``; ``force_flush``; ``shutdown``; ``import_alerts``/``export_alerts`` for the alert
engine, through ``alert_proxy``). Not carried: an integration's push ingest (``bind_ingest``),
alert processors and dashboard components: those run in process.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.api import (
    Alert,
    ExportResult,
    ExportStatus,
    Metric,
    MetricBatch,
    MetricCollectorPlugin,
    MonitoringIntegrationPlugin,
    Plugin,
    PluginMetadata,
    PluginType,
)
from bridge.isolation import Grants, Isolation, LimitExceeded, Limits, StopReason
from bridge.ledger import LEDGER
from bridge.pipeline import GC_PAUSE_MIN_BATCH, Batch, Pipeline
from bridge.registry import RegisteredPlugin
from bridge.wire import (
    T_BATCH,
    T_CALL,
    T_ERROR,
    T_LEDGER,
    T_METRICS,
    T_RESULT,
    T_SETUP,
    WORKER_TYPES,
    WireError,
    WireLimits,
    alert_from_value,
    alert_value,
    call_id,
    decode_frame_header,
    decode_losses,
    decode_metrics,
    decode_value,
    encode_metrics,
    encode_value,
    frame,
    pack_id,
)

if TYPE_CHECKING:
    from bridge.limits import Enforcer

__all__ = ["InProcessHost", "Placement", "PluginHost", "ProcessHost", "WorkerError", "place"]

log = logging.getLogger("monbridge.pluginhost")

#: Seconds between a worker's SIGTERM and its SIGKILL (at most; a tenth of the call's timeout when less).
KILL_GRACE_S = 0.5
#: Seconds between two checks of a worker's limits (``bridge.limits.Enforcer.check``).
LIMITS_CHECK_S = 1.0
#: Seconds a worker has to import its plugin and answer the setup.
SETUP_TIMEOUT_S = 30.0
#: A metrics frame larger than this is decoded in a thread, off the event loop.
THREAD_DECODE_BYTES = 256 << 10
#: Calls given up on whose answers are remembered (and dropped when they come).
MAX_LATE_ANSWERS = 1000
#: Alerts one import_alerts may return.
MAX_ALERTS = 10_000
#: Characters of a worker's error message kept.
MAX_ERROR_TEXT = 2000


@dataclass(frozen=True)
class Placement:
    """Where a plugin runs and how it is limited: its entry's ``isolation``, ``limits`` and
    ``grants``, the reference a worker imports, and ``note`` saying why it runs elsewhere than
    configured (e.g. a class registered in-process, which no worker can import)."""

    isolation: Isolation = Isolation.IN_PROCESS
    reference: str | None = None
    limits: Limits = field(default_factory=Limits)  # type: ignore[arg-type]
    grants: Grants = field(default_factory=Grants)
    note: str = ""


class PluginHost:
    """Where a plugin runs. Calls take and return plain data, so a host may be out of process.

    Every call takes ``timeout``; a host with ``bounds_calls`` enforces it itself (and raises
    ``LimitExceeded`` when it stopped the plugin), else the supervisor bounds the call."""

    bounds_calls = False
    isolation = Isolation.IN_PROCESS
    #: The plugin's metric names are Prometheus names, recorded as they are (its
    #: ``imports_prometheus_names``: an importing integration's, or a collector of Prometheus text).
    imports_prometheus_names = False

    def __init__(self, plugin_type: PluginType) -> None:
        self.plugin_type = plugin_type
        #: Why the host stopped the plugin (over a limit, out of time, crashed), once it has; every
        #: call raises it from then on. ``dead`` is set then, so a host that bounds its calls has
        #: its plugin restarted without waiting for the next scheduled call.
        self.stopped: LimitExceeded | None = None
        self.dead = asyncio.Event()
        self._recording: asyncio.Future[int] | None = None  # a large import's record, in its thread

    async def _record_import(self, pipeline: Pipeline, source: str, imported: Sequence[Metric],
                             prometheus_names: bool) -> None:
        """Record an import into ``pipeline``: a large one (a new target's first scrape: a series
        made per metric) in a worker thread, so the event loop goes on serving the API and the other
        plugins meanwhile. Call ``_await_record`` before the next import."""
        if len(imported) >= GC_PAUSE_MIN_BATCH:
            self._recording = asyncio.ensure_future(asyncio.to_thread(
                pipeline.record, source, imported, prometheus_names=prometheus_names))
            await asyncio.shield(self._recording)
            self._recording = None
        elif imported:
            pipeline.record(source, imported, prometheus_names=prometheus_names)

    async def _await_record(self) -> None:
        """Wait for a record that a timed-out round left running in its thread: an import's metrics
        may be the plugin's own objects, updated by its next import."""
        if self._recording is not None:
            await asyncio.wait((self._recording,))
            self._recording = None

    async def initialize(self, config: Mapping[str, Any], timeout: float | None = None) -> None:
        raise NotImplementedError

    async def start(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    async def stop(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    async def shutdown(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    async def collect(self, timeout: float | None = None) -> Sequence[Metric]:
        raise NotImplementedError

    async def import_round(self, pipeline: Pipeline, timeout: float | None = None) -> int:
        raise NotImplementedError

    async def export_batch(self, pipeline: Pipeline) -> Batch:
        """What the integration's sinks export this round: the pipeline's batch."""
        return pipeline.batch()

    def sink_names(self) -> list[str]:
        raise NotImplementedError

    async def export(self, sink: str, batch: MetricBatch, timeout: float) -> ExportResult:
        raise NotImplementedError

    async def force_flush(self, sink: str, timeout: float) -> bool:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """What ``/api/v1/plugins`` shows of the host."""
        return {"isolation": self.isolation.value}

    def kill(self) -> None:
        """End the plugin now, without a word to it (a shutdown that ran out of time)."""

    def usage(self) -> dict[str, float]:
        """What the plugin uses: ``rss_bytes`` and ``cpu_seconds`` where the host can tell."""
        return {}


class InProcessHost(PluginHost):
    """Runs the plugin's coroutines on the supervisor's event loop."""

    def __init__(self, plugin: Plugin) -> None:
        super().__init__(plugin.plugin_type)
        self.plugin = plugin
        self.imports_prometheus_names = bool(getattr(plugin, "imports_prometheus_names", False))
        self._shut_down = False

    async def initialize(self, config: Mapping[str, Any], timeout: float | None = None) -> None:
        await self.plugin.initialize(config)

    async def start(self, timeout: float | None = None) -> None:
        if isinstance(self.plugin, MetricCollectorPlugin):
            await self.plugin.start()

    async def stop(self, timeout: float | None = None) -> None:
        if isinstance(self.plugin, MetricCollectorPlugin):
            await self.plugin.stop()

    async def shutdown(self, timeout: float | None = None) -> None:
        """The plugin's ``shutdown``, once per instance; with ``timeout`` when it takes one (the
        specification's ``shutdown()`` takes none)."""
        if self._shut_down:
            return
        self._shut_down = True
        shutdown: Any = self.plugin.shutdown
        if timeout is not None and "timeout" in inspect.signature(shutdown).parameters:
            await shutdown(timeout=timeout)
        else:
            await shutdown()

    async def collect(self, timeout: float | None = None) -> Sequence[Metric]:
        assert isinstance(self.plugin, MetricCollectorPlugin)
        return await self.plugin.collect_metrics()

    def _integration(self) -> MonitoringIntegrationPlugin:
        assert isinstance(self.plugin, MonitoringIntegrationPlugin)
        return self.plugin

    async def import_round(self, pipeline: Pipeline, timeout: float | None = None) -> int:
        """An integration's import; returns the number of metrics imported."""
        plugin = self._integration()
        await self._await_record()
        imported = await plugin.import_metrics()
        await self._record_import(pipeline, plugin.metadata().id, imported, plugin.imports_prometheus_names)
        return len(imported)

    def sink_names(self) -> list[str]:
        return list(self._integration().export_sinks())

    async def export(self, sink: str, batch: MetricBatch, timeout: float) -> ExportResult:
        result = await self._integration().export_sinks()[sink].export(batch, timeout)
        if not isinstance(result, ExportResult):
            raise TypeError(f"export to {sink} returned {type(result).__name__}, not an ExportResult")
        return result
    async def force_flush(self, sink: str, timeout: float) -> bool:
        return bool(await self._integration().export_sinks()[sink].force_flush(timeout))


class WorkerError(Exception):
    """An exception the plugin raised in its worker: its type's name and message."""


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ProcessHost(PluginHost):
    """Runs a plugin in a worker process (``python -m bridge.worker``), one per plugin instance.

    The worker is started by ``initialize``; its answers are read by one task, which fails every
    pending call when the worker stops (``LimitExceeded``, kept in ``stopped``). A malformed
    frame is the worker's crash: it is killed, counted (``malformed_frames``) and logged with
    where in the frame. ``dead`` is set when the worker has been stopped for any reason, so the
    supervisor restarts it without waiting for its next tick.
    """

    bounds_calls = True
    isolation = Isolation.PROCESS

    def __init__(self, plugin_id: str, plugin_type: PluginType, placement: Placement,
                 cardinality_limit: int = 100_000, kill_grace: float = KILL_GRACE_S) -> None:
        super().__init__(plugin_type)
        if placement.reference is None:
            raise ValueError(f"plugin {plugin_id}: a worker needs the plugin's module:Class reference")
        self.plugin_id = plugin_id
        self.placement = placement
        self.limits = WireLimits(max_series=cardinality_limit)
        self.kill_grace = kill_grace
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}
        self.malformed_frames = 0
        self.frames_in = 0
        self.bytes_in = 0
        self.imports_prometheus_names = False
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._stopping = False  # a stop is under way (``stopped`` is set when it is done)
        self._late: dict[int, bool] = {}  # calls given up on, whose one answer is still allowed
        self._next_id = 1
        self._sinks: list[str] = []
        self._batch: Batch | MetricBatch | None = None
        self._batch_seq = 0
        self._batch_lock = asyncio.Lock()
        self._shut_down = False
        self._enforcer: Enforcer | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # ------------------------------------------------------------------ the worker

    async def _spawn(self, timeout: float | None) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge.worker", str(child.fileno()),
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=2,
                start_new_session=True)  # a terminal's ^C is the agent's; the agent stops its workers
        finally:
            child.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent, limit=1 << 16)
        self._pending[0] = asyncio.get_running_loop().create_future()
        self._reader_task = asyncio.create_task(self._read(reader), name=f"worker:{self.plugin_id}")
        self._start_watch()
        p = self.placement
        self._writer.write(frame(T_SETUP, encode_value({
            "plugin_id": self.plugin_id, "reference": p.reference, "plugin_type": self.plugin_type.value,
            "limits": p.limits.model_dump(), "grants": p.grants.model_dump()})))
        try:
            info = await self._answer(0, "setup", min(timeout or SETUP_TIMEOUT_S, SETUP_TIMEOUT_S))
        except WorkerError as e:  # the worker could not make the plugin, said why and exits
            self._set_stopped(LimitExceeded(StopReason.CRASHED, f"setup failed: {e}"))
            await self._reap()
            raise
        if not isinstance(info, dict):
            await self._crashed(f"setup answer is a {type(info).__name__}, not a map")
            raise self._stopped()
        self.info = info
        if self._enforcer is not None:  # the plugin's CPU is what it uses from here on
            self._enforcer.count_cpu()
        self.imports_prometheus_names = bool(info.get("imports_prometheus_names"))
        log.info("plugin %s: worker %s running %s", self.plugin_id, self.pid, p.reference)

    def _start_watch(self) -> None:
        """Put the worker under its limits (``bridge.limits.Enforcer``) and check them every second."""
        from bridge.limits import Enforcer

        assert self.proc is not None
        try:
            enforcer = Enforcer(self.plugin_id, self.placement.limits)
            enforcer.attach(self.proc.pid, count_cpu=False)
        except (OSError, RuntimeError, ValueError) as e:
            log.error("plugin %s: the limits of worker %s cannot be enforced: %s: %s", self.plugin_id, self.pid,
                      type(e).__name__, e)
            return
        self._enforcer = enforcer
        self._watch_task = asyncio.create_task(self._watch(enforcer), name=f"limits:{self.plugin_id}")

    async def _watch(self, enforcer: Enforcer) -> None:
        """Check the limits every ``LIMITS_CHECK_S`` on a fixed schedule (a slow check does not
        push the next one later): a limit crossed is seen within one interval."""
        loop = asyncio.get_running_loop()
        at = loop.time()
        while not self.dead.is_set():
            at = max(at + LIMITS_CHECK_S, loop.time())
            await asyncio.sleep(at - loop.time())
            over = await asyncio.to_thread(enforcer.check)
            if over is not None and not self.dead.is_set():
                await self._stop_worker(over)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Read the worker's frames until it stops; whatever ends this ends the worker."""
        n_frame = 0
        try:
            while True:
                header = await reader.readexactly(4)
                n_frame += 1
                where = f"frame {n_frame}"
                try:
                    size = decode_frame_header(header, self.limits)
                except WireError as e:
                    raise WireError(f"{where}: {e}") from None
                body = memoryview(await reader.readexactly(size))
                self.frames_in += 1
                self.bytes_in += 4 + size
                try:
                    self._deliver(*await self._decode(body))
                except WireError as e:
                    raise WireError(f"{where} (type 0x{body[0]:02x}, {size} bytes): {e}") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            await self._crashed("the worker closed its connection")
        except WireError as e:
            self.malformed_frames += 1
            log.error("plugin %s: worker %s sent a malformed frame; stopping it: %s", self.plugin_id, self.pid, e)
            await self._crashed(f"malformed {e}", kill=True)

    async def _decode(self, body: memoryview) -> tuple[int, Any, bool]:
        mtype = body[0]
        if mtype not in WORKER_TYPES:
            raise WireError(f"unknown message type 0x{mtype:02x}")
        cid = call_id(body[1:])
        if mtype == T_LEDGER:
            self._count_losses(body[5:])
            return 0, None, False  # no call waits on it
        if cid not in self._pending:
            if self._late.pop(cid, False):
                return cid, None, False  # a late answer to a call its caller gave up on: dropped
            raise WireError(f"an answer to call {cid}, which is not waiting for one")
        payload = body[5:]
        if mtype == T_METRICS:
            if len(payload) > THREAD_DECODE_BYTES:
                metrics, _ = await asyncio.to_thread(decode_metrics, payload, self.limits)
            else:
                metrics, _ = decode_metrics(payload, self.limits)
            return cid, metrics, False
        value = decode_value(payload, self.limits, "result" if mtype == T_RESULT else "error")
        if mtype == T_ERROR:
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
                raise WireError("error: not a [type, message] pair of strings")
            return cid, WorkerError(f"{value[0][:200]}: {value[1][:MAX_ERROR_TEXT]}"), True
        return cid, value, False

    def _count_losses(self, payload: memoryview) -> None:
        """The worker's drops since its last report, counted for this plugin in the agent's ledger."""
        for component, reason, n in decode_losses(payload, self.limits):
            LEDGER.count(component, reason, n, plugin=self.plugin_id)

    def _deliver(self, cid: int, value: Any, failed: bool) -> None:
        fut = self._pending.get(cid)
        if fut is None or fut.done():
            return
        if failed:
            fut.set_exception(value)
        else:
            fut.set_result(value)

    def _stopped(self) -> LimitExceeded:
        assert self.stopped is not None
        return self.stopped

    async def _crashed(self, why: str, kill: bool = False) -> None:
        """The worker stopped on its own (or broke the wire): wait briefly for its exit status."""
        if self.stopped is not None or self._stopping:  # a stop under way says why
            return
        self._stopping = True
        proc = self.proc
        code: int | None = None
        if proc is not None:
            if kill:
                self._signal(signal.SIGKILL)
            try:
                code = await asyncio.wait_for(proc.wait(), 2.0)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                code = await proc.wait()
            over = self._over_limit()
            self._release()
            if over is not None:  # the kernel ended it for its limit (a cgroup's OOM kill): say which
                self._set_stopped(over)
                return
        self._set_stopped(LimitExceeded(StopReason.CRASHED, f"{why} (worker {self.pid}: {_exit_text(code)})"))

    def _set_stopped(self, e: LimitExceeded) -> None:
        if self.stopped is not None:
            return
        self.stopped = e
        self.dead.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(e)
        if self._writer is not None:
            self._writer.close()
        if self._watch_task is not None and self._watch_task is not asyncio.current_task():
            self._watch_task.cancel()

    def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def _stop_worker(self, why: LimitExceeded, grace: float | None = None) -> None:
        """Stop the worker for ``why``: SIGTERM, SIGKILL after ``grace``; once it has exited, every
        pending call fails with ``why`` (a stop already under way is waited for instead)."""
        if self.stopped is not None or self._stopping:
            await self.dead.wait()
            return
        self._stopping = True
        log.error("plugin %s: stopping worker %s: %s", self.plugin_id, self.pid, why)
        proc = self.proc
        if proc is not None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), self.kill_grace if grace is None else grace)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await proc.wait()
            self._release()
        self._set_stopped(why)

    def _over_limit(self) -> LimitExceeded | None:
        """The limit the worker went over, when its enforcer saw one (asked once it has exited)."""
        if self._enforcer is None:
            return None
        try:
            return self._enforcer.check()
        except OSError:
            return None

    def _release(self) -> None:
        """The worker has exited: release what enforced its limits (its cgroups)."""
        if self._enforcer is not None:
            self._enforcer.close()

    def kill(self) -> None:
        self._set_stopped(LimitExceeded(StopReason.CRASHED, "killed by the agent (shutdown out of time)"))
        self._signal(signal.SIGKILL)
        self._release()

    # ------------------------------------------------------------------ calls

    async def _answer(self, cid: int, what: str, timeout: float | None) -> Any:
        fut = self._pending[cid]
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            if fut.done():  # answered as the time ran out
                return fut.result()
            grace = min(self.kill_grace, 0.05 * (timeout or 0.0) + 0.01)
            await self._stop_worker(LimitExceeded(StopReason.TIMEOUT, f"{what} did not end within {timeout:.3g}s"),
                                    grace)
            raise self._stopped() from None
        finally:
            self._pending.pop(cid, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: a call abandoned by its caller leaves no warning
            elif self.stopped is None:  # its caller gave up: one answer may still come
                self._late[cid] = True
                while len(self._late) > MAX_LATE_ANSWERS:
                    del self._late[next(iter(self._late))]

    async def _call(self, method: str, args: list[Any], timeout: float | None, what: str | None = None) -> Any:
        if self.stopped is not None:
            raise self.stopped
        if self._writer is None:
            raise RuntimeError(f"plugin {self.plugin_id}: the worker is not started")
        cid = self._next_id
        self._next_id = cid % 0xFFFF_FFFF + 1
        self._pending[cid] = asyncio.get_running_loop().create_future()
        self._writer.write(frame(T_CALL, pack_id(cid), encode_value({"m": method, "a": args})))
        return await self._answer(cid, what or method, timeout)

    async def initialize(self, config: Mapping[str, Any], timeout: float | None = None) -> None:
        if self.proc is None:
            await self._spawn(timeout)
        info = await self._call("initialize", [dict(config)], timeout)
        if isinstance(info, dict) and self.plugin_type is PluginType.INTEGRATION:
            sinks = info.get("sinks")
            if not isinstance(sinks, list) or not all(isinstance(s, str) for s in sinks):
                await self._crashed("the sinks it named are not a list of strings", kill=True)
                raise self._stopped()
            self._sinks = sinks

    async def start(self, timeout: float | None = None) -> None:
        await self._call("start", [], timeout)

    async def stop(self, timeout: float | None = None) -> None:
        await self._call("stop", [], timeout)

    async def shutdown(self, timeout: float | None = None) -> None:
        """The plugin's shutdown, then the worker's end: its connection closes and it exits
        (killed when it has not within the grace)."""
        if self._shut_down:
            return
        self._shut_down = True
        try:
            if self.stopped is None and self._writer is not None:
                await self._call("shutdown", [timeout], timeout)
        finally:
            if self._stopping:  # being stopped for a reason already: that stop ends it
                await self.dead.wait()
            elif self.stopped is None:
                self._stopping = True
                self._set_stopped(LimitExceeded(StopReason.CRASHED, "shut down"))
                await self._reap()

    async def _reap(self) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 1.0)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            await proc.wait()
        self._release()

    async def collect(self, timeout: float | None = None) -> Sequence[Metric]:
        metrics: list[Metric] = await self._call("collect", [], timeout, "collection")
        return metrics

    async def import_round(self, pipeline: Pipeline, timeout: float | None = None) -> int:
        await self._await_record()
        imported: list[Metric] = await self._call("import", [], timeout)
        await self._record_import(pipeline, self.plugin_id, imported, self.imports_prometheus_names)
        return len(imported)

    def sink_names(self) -> list[str]:
        return list(self._sinks)

    async def _send_batch(self, batch: MetricBatch) -> int:
        """Send ``batch`` to the worker, once for all sinks of a round; its sequence number."""
        async with self._batch_lock:
            if batch is not self._batch:
                native = {f.name for f in batch.families() if f.native}
                resource = dict(batch.resource_attributes)
                body = await asyncio.to_thread(encode_metrics, batch.metrics(), native)
                res = encode_value(resource)
                self._batch_seq = self._batch_seq % 0xFFFF_FFFF + 1
                if self._writer is None or self.stopped is not None:
                    raise self._stopped() if self.stopped is not None else RuntimeError("worker not started")
                self._writer.write(frame(T_BATCH, pack_id(self._batch_seq), pack_id(len(res)), res, body))
                self._batch = batch
            return self._batch_seq

    async def export(self, sink: str, batch: MetricBatch, timeout: float) -> ExportResult:
        seq = await self._send_batch(batch)
        got = await self._call("export", [sink, seq, timeout], timeout, f"export to {sink}")
        try:
            status, reason, retry_after = got
            return ExportResult(ExportStatus(status), str(reason)[:MAX_ERROR_TEXT],
                                None if retry_after is None else float(retry_after))
        except (TypeError, ValueError):
            await self._crashed(f"export to {sink} answered {type(got).__name__}, not an export result", kill=True)
            raise self._stopped() from None

    async def force_flush(self, sink: str, timeout: float) -> bool:
        return bool(await self._call("force_flush", [sink, timeout], timeout, f"force_flush of {sink}"))

    async def import_alerts(self, timeout: float) -> list[Alert]:
        got = await self._call("import_alerts", [], timeout)
        try:
            if not isinstance(got, list) or len(got) > MAX_ALERTS:
                raise WireError(f"import_alerts answered {type(got).__name__}, not a list of at most {MAX_ALERTS}")
            return [alert_from_value(a, f"import_alerts: alert {i}") for i, a in enumerate(got)]
        except WireError as e:
            await self._crashed(f"malformed answer: {e}", kill=True)
            raise self._stopped() from None

    async def export_alerts(self, alerts: Sequence[Alert], timeout: float) -> None:
        await self._call("export_alerts", [[alert_value(a) for a in alerts]], timeout)

    def alert_proxy(self, timeout: float) -> MonitoringIntegrationPlugin:
        """The integration as the alert engine calls it: its alert import and export, in the worker."""
        return _AlertProxy(self, timeout)

    # ------------------------------------------------------------------ status

    def usage(self) -> dict[str, float]:
        """The worker's resident memory (bytes) and CPU time (seconds), from /proc; empty when gone."""
        pid = self.pid
        if pid is None or self.stopped is not None:
            return {}
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/statm", "rb") as f:
                rss_pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            return {}
        tick = os.sysconf("SC_CLK_TCK")
        return {"rss_bytes": float(rss_pages * os.sysconf("SC_PAGE_SIZE")),
                "cpu_seconds": (int(fields[11]) + int(fields[12])) / tick}

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"isolation": self.isolation.value, "worker_pid": self.pid,
                               "mechanisms": self.mechanisms(), "malformed_frames": self.malformed_frames}
        out.update({f"worker_{k}": v for k, v in self.usage().items()})
        return out

    def mechanisms(self) -> dict[str, str]:
        """How the worker's limits and sandbox are enforced, by guarantee."""
        got = self.info.get("mechanisms")
        out = {str(k): str(v)[:200] for k, v in got.items()} if isinstance(got, dict) else {}
        if self._enforcer is not None:
            out.update(self._enforcer.mechanisms())
        else:
            out.setdefault("limits", "none: the worker's limits could not be set up (see the log)")
        out["timeout"] = "worker killed (SIGTERM, then SIGKILL) when a call outlives its timeout"
        return out




def _importable(cls: type) -> str | None:
    """``module:Class`` for a class a fresh interpreter can import by that name, else None."""
    from bridge.registry import load_reference

    if cls.__module__ in ("__main__", "builtins") or "<" in cls.__qualname__ or "." in cls.__qualname__:
        return None
    ref = f"{cls.__module__}:{cls.__qualname__}"
    try:
        return ref if load_reference(ref) is cls else None
    except Exception:  # noqa: BLE001 - not importable by that name
        return None


def place(registered: RegisteredPlugin, isolation: Isolation | None, limits: Limits, grants: Grants) -> Placement:
    """Where a configured plugin runs. ``isolation`` unset: in a worker for a third-party plugin
    (an installed entry point), in process for a built-in one and a class registered in-process.
    Collectors and integrations run in a worker; other plugin types, and a plugin registered as
    an instance or a class no worker can import, run in process (``note`` says why). A signed
    WASM package is run by the WASM host (its limits and grants applied there), in process."""
    if registered.package is not None:
        return Placement(Isolation.WASM, limits=limits, grants=grants,
                         note="a signed WASM package: the WASM host applies its limits and grants")
    third_party = registered.builtin is None and registered.entry_point is not None
    wanted = isolation or (Isolation.PROCESS if third_party else Isolation.IN_PROCESS)
    if wanted is Isolation.IN_PROCESS:
        return Placement(Isolation.IN_PROCESS, limits=limits, grants=grants)
    if wanted is Isolation.WASM:  # refused when the config is loaded: only a signed package runs in WASM
        raise ValueError(f"{registered.plugin_id} is a Python plugin: isolation wasm is for signed WASM packages")
    if registered.plugin_type not in (PluginType.METRIC_COLLECTOR, PluginType.INTEGRATION):
        return Placement(Isolation.IN_PROCESS, limits=limits, grants=grants,
                         note=f"{registered.plugin_type.value} plugins run in process")
    if registered.builtin is not None:
        ref: str | None = registered.builtin
    elif registered.entry_point is not None:
        ref = registered.entry_point.value
    elif registered.instance is None and isinstance(registered.factory, type):
        ref = _importable(registered.factory)
    else:
        ref = None
    if ref is None:
        return Placement(Isolation.IN_PROCESS, limits=limits, grants=grants,
                         note="registered in-process (not importable by a worker): runs in process")
    return Placement(Isolation.PROCESS, ref, limits, grants)


class _AlertProxy(MonitoringIntegrationPlugin):
    """An integration in a worker, as the alert engine sees it: ``import_alerts`` and
    ``export_alerts`` are calls into the worker, bounded by ``timeout``; nothing else is here."""

    def __init__(self, host: ProcessHost, timeout: float) -> None:
        self._host = host
        self._timeout = timeout

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(self._host.plugin_id, self._host.plugin_id, str(self._host.info.get("version", "")),
                              "", "in a worker process", PluginType.INTEGRATION)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        raise NotImplementedError("the worker's plugin is initialized by its host")

    async def shutdown(self, timeout: float | None = None) -> None:
        raise NotImplementedError("the worker's plugin is shut down by its host")

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        raise NotImplementedError("metrics reach the worker through its host's export")

    async def import_metrics(self) -> Sequence[Metric]:
        raise NotImplementedError("metrics come from the worker through its host's import_round")

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        await self._host.export_alerts(alerts, self._timeout)

    async def import_alerts(self) -> Sequence[Alert]:
        return await self._host.import_alerts(self._timeout)
