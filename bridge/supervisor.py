"""The supervisor: owns every plugin's lifecycle, runs each on its own schedule, isolates failures.

Each collector runs in its own task on its own ``collection_interval``, each call bounded by
``timeout``: a plugin that raises, hangs or is slow never delays another. Every call into a
plugin runs in a task of its own (``run_bounded``): one that swallows the cancellation at its
timeout is abandoned (logged by plugin id, counted in ``monbridge_plugin_abandoned_tasks_total``)
rather than waited for, so neither its schedule nor a shutdown can hang on it. After
``max_failures`` consecutive failures (or a failed initialize) a plugin is failed and
restarted with exponential backoff and jitter; the backoff keeps growing across restarts until
a run succeeds. State, last error and timings are kept per plugin for ``GET /api/v1/plugins``
and the ``monbridge_plugin_*`` self-metrics.

An integration's round is its import, then the pipeline's batch (``Pipeline.batch``: one
read-only snapshot, shared by every integration exporting while nothing changed) exported to
each of its sinks (``export_sinks``, each an ``ExportSink``) on its own, within the round's
time: a sink that fails — an ExportResult other than success (retryable or permanent, with the
reason), an exception, or no answer in time — is that sink's state (``sinks`` in the status,
``monbridge_plugin_sink_*``, one log line per change between ok and failing), never a failed
round, so it does not restart the plugin or stop its other sinks and its import. A graceful
stop runs a last round, then each sink's ``force_flush``, then ``shutdown(timeout)``.

The supervisor talks to plugins only through a ``PluginHost`` with plain-data calls, so a
plugin can be hosted in a worker process or a WASM sandbox by adding a host, without changing
the plugin API. ``InProcessHost`` is the one there is today. A plugin that blocks the event
loop itself (sync I/O without ``asyncio.to_thread``) can only be isolated by such a host.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from bridge.api import (
    ExportResult,
    ExportStatus,
    Metric,
    MetricBatch,
    MetricCollectorPlugin,
    MetricKind,
    MonitoringIntegrationPlugin,
    Plugin,
    PluginType,
)
from bridge.lifecycle import Lifecycle, PluginState
from bridge.pipeline import GC_PAUSE_MIN_BATCH, Batch, Pipeline, paused_gc
from bridge.tasks import CANCEL_GRACE_S, backoff_delay, cancel_and_wait, run_bounded

__all__ = ["InProcessHost", "PluginHost", "PluginRunner", "SinkState", "Supervisor", "SupervisorSettings"]

log = logging.getLogger("monbridge.supervisor")

SELF_SOURCE = "monbridge"
FLUSH_TIMEOUT_S = 2.5
PUSH_EXPIRE_AFTER_S = 300.0


class PluginHost:
    """Where a plugin runs. Calls take and return plain data, so a host may be out of process."""

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin

    @property
    def plugin_type(self) -> PluginType:
        return self.plugin.plugin_type


class InProcessHost(PluginHost):
    """Runs the plugin's coroutines on the supervisor's event loop."""

    def __init__(self, plugin: Plugin) -> None:
        super().__init__(plugin)
        self._shut_down = False
        self._recording: asyncio.Future[int] | None = None  # a large import's record, in its thread

    async def initialize(self, config: Mapping[str, Any]) -> None:
        await self.plugin.initialize(config)

    async def start(self) -> None:
        if isinstance(self.plugin, MetricCollectorPlugin):
            await self.plugin.start()

    async def stop(self) -> None:
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

    async def collect(self) -> Sequence[Metric]:
        assert isinstance(self.plugin, MetricCollectorPlugin)
        return await self.plugin.collect_metrics()

    def _integration(self) -> MonitoringIntegrationPlugin:
        assert isinstance(self.plugin, MonitoringIntegrationPlugin)
        return self.plugin

    async def import_round(self, pipeline: Pipeline) -> int:
        """An integration's import; returns the number of metrics imported."""
        plugin = self._integration()
        if self._recording is not None:
            # The last round timed out while its record ran on in its thread: an import's metrics may
            # be the plugin's own objects, updated by its next import, so that waits for the record.
            await asyncio.wait((self._recording,))
            self._recording = None
        imported = await plugin.import_metrics()
        if len(imported) >= GC_PAUSE_MIN_BATCH:
            # A large import (a new target's first scrape: a series made per metric) is recorded in a
            # worker thread, so the event loop goes on serving the API and the other plugins meanwhile.
            self._recording = asyncio.ensure_future(asyncio.to_thread(
                pipeline.record, plugin.metadata().id, imported, prometheus_names=plugin.imports_prometheus_names))
            await asyncio.shield(self._recording)
            self._recording = None
        elif imported:
            pipeline.record(plugin.metadata().id, imported, prometheus_names=plugin.imports_prometheus_names)
        return len(imported)

    async def export_batch(self, pipeline: Pipeline) -> Batch:
        """What the integration's sinks export this round: the pipeline's batch."""
        return pipeline.batch()

    def sink_names(self) -> list[str]:
        return list(self._integration().export_sinks())

    async def export(self, sink: str, batch: MetricBatch, timeout: float) -> ExportResult:
        result = await self._integration().export_sinks()[sink].export(batch, timeout)
        if not isinstance(result, ExportResult):
            raise TypeError(f"export to {sink} returned {type(result).__name__}, not an ExportResult")
        return result

    async def force_flush(self, sink: str, timeout: float) -> bool:
        return bool(await self._integration().export_sinks()[sink].force_flush(timeout))


@dataclass
class SupervisorSettings:
    max_failures: int = 3
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    call_timeout: float = 30.0  # initialize/start/stop/shutdown
    cancel_grace: float = CANCEL_GRACE_S  # a cancelled plugin call not ended by then is abandoned


@dataclass
class SinkState:
    """One export sink of an integration: ok or failing, with its counts and last error."""

    name: str
    ok: bool | None = None  # None until its first export
    exports: int = 0
    errors: int = 0  # every failed export: timeouts, exceptions, retryable and permanent results
    timeouts: int = 0
    retryable: int = 0
    permanent: int = 0
    last_status: str | None = None  # success, retryable, permanent, timeout or error (an exception)
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": "unknown" if self.ok is None else "ok" if self.ok else "failing",
            "exports": self.exports,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "retryable": self.retryable,
            "permanent": self.permanent,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_success_at": self.last_success_at,
        }

    def results(self) -> dict[str, int]:
        """Exports by result (the ``monbridge_plugin_sink_exports`` counter's ``result`` label):
        ``error`` is every failure but a timeout (``failures`` tells them apart)."""
        return {"success": self.exports - self.errors, "error": self.errors - self.timeouts, "timeout": self.timeouts}

    def failures(self) -> dict[str, int]:
        """Failed exports by kind: a retryable or permanent result, an exception, a timeout."""
        raised = self.errors - self.timeouts - self.retryable - self.permanent
        return {"retryable": self.retryable, "permanent": self.permanent, "exception": raised, "timeout": self.timeouts}


@dataclass
class PluginRunner:
    """One configured plugin: its host, state, schedule and record."""

    plugin_id: str
    plugin_type: PluginType
    config: Mapping[str, Any]
    make_plugin: Callable[[], Plugin]
    interval: float | None
    timeout: float | None
    version: str = ""
    lifecycle: Lifecycle = field(init=False)
    host: InProcessHost | None = None
    task: asyncio.Task[None] | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    last_duration: float | None = None
    runs: int = 0
    errors: int = 0
    timeouts: int = 0
    restarts: int = 0
    consecutive_failures: int = 0
    missed_ticks: int = 0
    abandoned: int = 0  # calls that did not end when cancelled
    restart_attempts: int = 0  # restarts since the last successful run
    restart_delay: float | None = None  # the last backoff before a restart
    last_batch_size: int = 0  # metrics the last collection reported
    sinks: dict[str, SinkState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle(self.plugin_id)

    @property
    def state(self) -> PluginState:
        return self.lifecycle.state

    def status(self) -> dict[str, Any]:
        return {
            "plugin_id": self.plugin_id,
            "type": self.plugin_type.value,
            "version": self.version,
            "state": self.state.value,
            "interval_seconds": self.interval,
            "timeout_seconds": self.timeout,
            "runs": self.runs,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "restarts": self.restarts,
            "consecutive_failures": self.consecutive_failures,
            "missed_ticks": self.missed_ticks,
            "abandoned_tasks": self.abandoned,
            "restart_backoff_seconds": self.restart_delay,
            "last_duration_seconds": self.last_duration,
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "sinks": [s.status() for _, s in sorted(self.sinks.items())],
        }


class Supervisor:
    def __init__(self, pipeline: Pipeline, settings: SupervisorSettings | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.pipeline = pipeline
        self.settings = settings or SupervisorSettings()
        self.runners: dict[str, PluginRunner] = {}
        self._sleep = sleep  # the restart backoff's wait (tests record the delays)

    async def _call(self, runner: PluginRunner, what: str, aw: Awaitable[Any], timeout: float | None) -> Any:
        """``await aw`` (a call into ``runner``'s plugin) bounded by ``timeout``; a call that does
        not end when cancelled is abandoned, logged and counted rather than waited for."""

        def abandoned() -> None:
            runner.abandoned += 1
            log.error("plugin %s: %s did not end %.1fs after it was cancelled; abandoned (it may keep "
                      "running unsupervised)", runner.plugin_id, what, self.settings.cancel_grace)

        return await run_bounded(aw, timeout, grace=self.settings.cancel_grace, on_abandon=abandoned)

    # ------------------------------------------------------------------ adding and removing

    def add(self, plugin_id: str, make_plugin: Callable[[], Plugin], config: Mapping[str, Any],
            parsed_config: Any = None) -> PluginRunner:
        runner = self.make_runner(plugin_id, make_plugin, config, parsed_config)
        self.runners[plugin_id] = runner
        return runner

    def make_runner(self, plugin_id: str, make_plugin: Callable[[], Plugin], config: Mapping[str, Any],
                    parsed_config: Any = None) -> PluginRunner:
        """A runner for ``plugin_id``, not (yet) one of the supervisor's."""
        probe = make_plugin()
        interval = getattr(parsed_config, "collection_interval", None) or getattr(parsed_config, "interval", None)
        timeout = getattr(parsed_config, "timeout", None) or interval
        first = [probe]

        def factory() -> Plugin:
            return first.pop() if first else make_plugin()

        return PluginRunner(plugin_id, probe.plugin_type, dict(config), factory, interval, timeout,
                            version=probe.metadata().version)

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(r) for r in self.runners.values()))

    async def start(self, runner: PluginRunner) -> None:
        """Initialize and start ``runner``; on failure it is failed and restarted in the background."""
        up = await self._bring_up(runner)
        runner.task = asyncio.create_task(self._supervise(runner, up), name=f"plugin:{runner.plugin_id}")

    async def start_staged(self, runner: PluginRunner) -> bool:
        """Initialize and start a runner from ``make_runner`` without supervising it (a reload's
        new plugins, adopted only when all of them started). When that fails, its instance is shut
        down and False returned; ``runner.last_error`` says why."""
        if await self._bring_up(runner):
            return True
        await self.stop(runner, flush=False)
        return False

    def adopt(self, runner: PluginRunner) -> None:
        """Supervise ``runner``, started by ``start_staged``, from now on."""
        self.runners[runner.plugin_id] = runner
        runner.task = asyncio.create_task(self._supervise(runner, True), name=f"plugin:{runner.plugin_id}")

    async def _bring_up(self, runner: PluginRunner) -> bool:
        host = InProcessHost(runner.make_plugin())
        runner.host = host
        if isinstance(host.plugin, MonitoringIntegrationPlugin):
            # Pushed series expire after 5 minutes unless the plugin says otherwise (as the OTel
            # Collector's Prometheus exporter's metric_expiration).
            host.plugin.bind_ingest(self.pipeline.ingest(runner.plugin_id, PUSH_EXPIRE_AFTER_S))
        try:
            await self._call(runner, "initialize", host.initialize(runner.config), self.settings.call_timeout)
            runner.lifecycle.to(PluginState.INITIALIZED)
            await self._call(runner, "start", host.start(), self.settings.call_timeout)
            runner.lifecycle.to(PluginState.RUNNING)
            log.info("plugin %s running (interval %ss)", runner.plugin_id, runner.interval)
            return True
        except Exception as e:
            self._failed(runner, "start", e)
            if runner.lifecycle.can(PluginState.FAILED):
                runner.lifecycle.to(PluginState.FAILED)
            return False

    def _failed(self, runner: PluginRunner, what: str, e: BaseException) -> None:
        if isinstance(e, TimeoutError):
            msg = f"{what} timed out"
            runner.timeouts += 1
        else:
            msg = f"{what} failed: {type(e).__name__}: {e}"
        runner.errors += 1
        runner.consecutive_failures += 1
        runner.last_error = msg
        runner.last_error_at = time.time()
        # The traceback once per failure streak; repeats are one line each.
        log.error("plugin %s: %s", runner.plugin_id, msg,
                  exc_info=runner.consecutive_failures == 1 and not isinstance(e, TimeoutError))

    async def _supervise(self, runner: PluginRunner, up: bool) -> None:
        """Run ``runner`` on its schedule; when it fails, restart it with exponential backoff.

        The backoff grows with every restart until a run succeeds (``_once`` resets it), not
        until a start succeeds: a plugin that starts and then always fails is restarted less
        and less often, up to ``backoff_max``."""
        st = self.settings
        while True:
            if not up:
                runner.restart_attempts += 1
                d = runner.restart_delay = backoff_delay(runner.restart_attempts, st.backoff_initial, st.backoff_max)
                log.warning("plugin %s failed; restarting in %.1fs (restart %d since its last successful run)",
                            runner.plugin_id, d, runner.restart_attempts)
                await self._sleep(d)
                if runner.host is not None:
                    try:
                        await self._call(runner, "shutdown", runner.host.shutdown(st.call_timeout), st.call_timeout)
                    except Exception as e:  # noqa: BLE001 - a failed plugin's shutdown may fail too
                        log.warning("plugin %s: shutdown before restart failed: %s: %s", runner.plugin_id,
                                    type(e).__name__, e)
                runner.restarts += 1
                up = await self._bring_up(runner)
                if not up:
                    continue
                runner.consecutive_failures = 0
            if not await self._run(runner):
                return
            up = False

    async def _run(self, runner: PluginRunner) -> bool:
        """Run on schedule until the plugin fails (returns True) or has no schedule (False)."""
        if runner.plugin_type not in (PluginType.METRIC_COLLECTOR, PluginType.INTEGRATION) or not runner.interval:
            return False
        loop = asyncio.get_running_loop()
        interval = runner.interval
        timeout = runner.timeout or interval
        next_at = loop.time()
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ok = await self._once(runner, timeout)
            if not ok and runner.consecutive_failures >= self.settings.max_failures:
                runner.lifecycle.to(PluginState.FAILED)
                # A failed source's last values are not news: they expire rather than linger.
                self.pipeline.remove_source(runner.plugin_id)
                return True
            next_at += interval
            now = loop.time()
            if next_at < now:  # a slow run: keep the phase, skip the ticks that passed
                skipped = int((now - next_at) // interval) + 1
                runner.missed_ticks += skipped
                next_at += skipped * interval

    async def _once(self, runner: PluginRunner, timeout: float) -> bool:
        host = runner.host
        assert host is not None
        t0 = time.perf_counter()
        what = "collection" if runner.plugin_type is PluginType.METRIC_COLLECTOR else "import"
        try:
            if runner.plugin_type is PluginType.METRIC_COLLECTOR:
                # A collector that reported a large batch last time builds one again: the cyclic
                # GC waits while it does (see bridge.pipeline.paused_gc).
                with paused_gc() if runner.last_batch_size >= GC_PAUSE_MIN_BATCH else nullcontext():
                    metrics = await self._call(runner, what, host.collect(), timeout)
                    self.pipeline.record(runner.plugin_id, metrics)
                runner.last_batch_size = len(metrics)
            else:
                self.refresh_self_metrics()  # exporters send current self-metrics, scraped or not
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                await self._call(runner, what, host.import_round(self.pipeline), timeout)
                what = "export"
                sinks = host.sink_names()
                if sinks:  # an integration that only receives (OTLP receive) gets no batch built
                    batch = await self._call(runner, what, host.export_batch(self.pipeline), deadline - loop.time())
                    await asyncio.gather(*(self._export(runner, host, name, batch, deadline) for name in sinks))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - isolation: any plugin error is recorded, never raised
            runner.last_duration = time.perf_counter() - t0
            runner.runs += 1
            self._failed(runner, what, e)
            return False
        runner.last_duration = time.perf_counter() - t0
        runner.runs += 1
        runner.consecutive_failures = 0
        runner.restart_attempts = 0
        runner.last_success_at = time.time()
        return True

    async def _export(self, runner: PluginRunner, host: InProcessHost, name: str, batch: MetricBatch,
                      deadline: float) -> None:
        """One sink's export of this round, within the round's ``deadline``; its outcome is the
        sink's state, logged when it changes between ok and failing."""
        sink = runner.sinks.get(name)
        if sink is None:
            sink = runner.sinks[name] = SinkState(name)
        timeout = max(deadline - asyncio.get_running_loop().time(), 0.0)
        try:
            result = await self._call(runner, f"export to {name}", host.export(name, batch, timeout), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a sink's failure is the sink's, not the plugin's
            if isinstance(e, TimeoutError):
                sink.timeouts += 1
                self._sink_failed(runner, sink, "timeout", "export timed out")
            else:
                self._sink_failed(runner, sink, "error", f"export failed: {type(e).__name__}: {e}")
            return
        if result.status is ExportStatus.RETRYABLE:
            sink.retryable += 1
            self._sink_failed(runner, sink, "retryable", f"export failed (retryable): {result.reason}")
            return
        if result.status is ExportStatus.PERMANENT:
            sink.permanent += 1
            self._sink_failed(runner, sink, "permanent", f"export failed (permanent): {result.reason}")
            return
        sink.exports += 1
        sink.last_status = "success"
        sink.last_success_at = time.time()
        if sink.ok is False:
            log.info("plugin %s: sink %s recovered", runner.plugin_id, name)
        sink.ok = True

    def _sink_failed(self, runner: PluginRunner, sink: SinkState, status: str, msg: str) -> None:
        sink.exports += 1
        sink.errors += 1
        sink.last_status = status
        sink.last_error = msg
        sink.last_error_at = time.time()
        if sink.ok is not False:
            log.error("plugin %s: sink %s is failing: %s (logged again when it recovers)",
                      runner.plugin_id, sink.name, msg)
        sink.ok = False

    async def _force_flush(self, runner: PluginRunner, host: InProcessHost, deadline: float) -> None:
        """Every sink's ``force_flush`` (a graceful stop's), within ``deadline``; a sink that could
        not flush is logged (its state keeps its last export's outcome)."""
        loop = asyncio.get_running_loop()

        async def flush(name: str) -> None:
            timeout = max(deadline - loop.time(), 0.0)
            try:
                ok = await self._call(runner, f"force_flush of {name}", host.force_flush(name, timeout), timeout)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - one sink's flush must not keep the others from flushing
                why = "timed out" if isinstance(e, TimeoutError) else f"failed: {type(e).__name__}: {e}"
                log.warning("plugin %s: force_flush of sink %s %s", runner.plugin_id, name, why)
                return
            if not ok:
                log.warning("plugin %s: sink %s could not flush everything within %.1fs", runner.plugin_id, name, timeout)

        try:
            names = host.sink_names()
        except Exception as e:  # noqa: BLE001
            log.warning("plugin %s: export_sinks failed: %s: %s", runner.plugin_id, type(e).__name__, e)
            return
        await asyncio.gather(*(flush(n) for n in names))

    async def collect_once(self, runner: PluginRunner) -> bool:
        """Bring a plugin up, run one collection or round, and leave it running (``monbridge test``)."""
        if not await self._bring_up(runner):
            return False
        return await self._once(runner, runner.timeout or 30.0)

    async def stop(self, runner: PluginRunner, flush: bool = True) -> None:
        """Stop and shut down ``runner``: a last export round for integrations, then shutdown."""
        if await cancel_and_wait(runner.task, timeout=2 * self.settings.cancel_grace):
            runner.abandoned += 1
            log.error("plugin %s: its schedule did not end when cancelled; abandoned", runner.plugin_id)
        runner.task = None
        host = runner.host
        if host is not None and runner.state is PluginState.RUNNING:
            if flush and runner.plugin_type is PluginType.INTEGRATION and runner.interval:
                # The last round and the sinks' force_flush must fit in the 5 s a graceful stop has.
                deadline = asyncio.get_running_loop().time() + FLUSH_TIMEOUT_S
                await self._once(runner, min(runner.timeout or FLUSH_TIMEOUT_S, FLUSH_TIMEOUT_S))
                await self._force_flush(runner, host, deadline)
            try:
                await self._call(runner, "stop", host.stop(), self.settings.call_timeout)
            except Exception as e:  # noqa: BLE001
                self._failed(runner, "stop", e)
            runner.lifecycle.to(PluginState.STOPPED)
        if host is not None and runner.lifecycle.can(PluginState.SHUT_DOWN):
            try:
                await self._call(runner, "shutdown", host.shutdown(self.settings.call_timeout), self.settings.call_timeout)
            except Exception as e:  # noqa: BLE001
                self._failed(runner, "shutdown", e)
            runner.lifecycle.to(PluginState.SHUT_DOWN)
        self.pipeline.remove_source(runner.plugin_id)

    async def stop_all(self, timeout: float | None = None) -> None:
        """Stop every plugin at once; with ``timeout``, those not stopped by then are abandoned
        (each logged by plugin id and counted), so a plugin cannot hold up a shutdown."""
        stops = {asyncio.create_task(self.stop(r), name=f"stop:{pid}"): r for pid, r in self.runners.items()}
        if not stops:
            return
        _, pending = await asyncio.wait(stops, timeout=timeout)
        for t in pending:
            r = stops[t]
            r.abandoned += 1
            log.error("plugin %s did not stop within %.1fs (state %s); abandoned", r.plugin_id, timeout, r.state.value)
        await cancel_and_wait(*pending, timeout=0)

    async def remove(self, plugin_id: str) -> None:
        runner = self.runners.pop(plugin_id, None)
        if runner is not None:
            await self.stop(runner)

    # ------------------------------------------------------------------ status

    def ready(self) -> bool:
        """Every plugin is running and each scheduled one has had its first run (a scrape right
        after readiness finds data)."""
        return all(r.state is PluginState.RUNNING and (r.runs > 0 or not r.interval) for r in self.runners.values())

    def statuses(self) -> list[dict[str, Any]]:
        return [r.status() for _, r in sorted(self.runners.items())]

    def refresh_self_metrics(self) -> None:
        """Record the supervisor's and the pipeline's own metrics (``monbridge_*``)."""
        out: list[Metric] = []
        add = out.append
        G, C = MetricKind.GAUGE, MetricKind.COUNTER
        for r in self.runners.values():
            a = {"plugin_id": r.plugin_id, "plugin_type": r.plugin_type.value}
            add(Metric("monbridge.plugin.up", G, 1 if r.state is PluginState.RUNNING else 0, "",
                       "1 when the plugin is running", a))
            for st in PluginState:
                add(Metric("monbridge.plugin.state", G, 1 if r.state is st else 0, "",
                           "the plugin's lifecycle state (1 for the current one)", {**a, "state": st.value}))
            for result, n in (("success", r.runs - r.errors), ("error", r.errors - r.timeouts),
                              ("timeout", r.timeouts)):
                add(Metric("monbridge.plugin.runs", C, max(n, 0), "",
                           "collections or integration rounds by result", {**a, "result": result}))
            add(Metric("monbridge.plugin.restarts", C, r.restarts, "", "restarts after failures", a))
            add(Metric("monbridge.plugin.missed_ticks", C, r.missed_ticks, "",
                       "scheduled runs skipped because the previous one ran late", a))
            add(Metric("monbridge.plugin.abandoned_tasks", C, r.abandoned, "",
                       "calls into the plugin that did not end when cancelled and were left running", a))
            for sink in r.sinks.values():
                sa = {**a, "sink": sink.name}
                add(Metric("monbridge.plugin.sink.up", G, 1 if sink.ok else 0, "",
                           "1 when the sink's last export succeeded", sa))
                for result, n in sink.results().items():
                    add(Metric("monbridge.plugin.sink.exports", C, n, "", "exports to the sink by result",
                               {**sa, "result": result}))
                for kind, n in sink.failures().items():
                    add(Metric("monbridge.plugin.sink.failures", C, n, "",
                               "failed exports to the sink by kind (retryable, permanent, exception, timeout)",
                               {**sa, "kind": kind}))
            if r.last_duration is not None:
                add(Metric("monbridge.plugin.run.duration", G, r.last_duration, "s",
                           "duration of the last collection or integration round", a))
            if r.last_success_at is not None:
                add(Metric("monbridge.plugin.last_success_timestamp", G, r.last_success_at, "s",
                           "Unix time of the last successful run", a))
        p = self.pipeline
        reasons = ("cardinality", "conflict", "invalid_name")
        for reason in (*reasons, *sorted(set(p.dropped) - set(reasons))):
            add(Metric("monbridge.series.dropped", C, p.dropped.get(reason, 0), "",
                       "series dropped by the pipeline, by reason", {"reason": reason}))
        add(Metric("monbridge.series.expired", C, p.expired_total, "",
                   "series expired because their source stopped reporting them"))
        p.record(SELF_SOURCE, out)
