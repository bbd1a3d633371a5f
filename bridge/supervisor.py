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

The supervisor talks to plugins only through a ``PluginHost`` (``bridge.pluginhost``) with
plain-data calls: ``InProcessHost`` on the agent's event loop, or ``ProcessHost`` in a worker
process of the plugin's own (a runner's ``placement``). A plugin that blocks the event loop
itself (sync I/O without ``asyncio.to_thread``, a CPU loop) can only be isolated by the latter.
A host that stopped its plugin (a worker over a limit, out of time or crashed) raises
``LimitExceeded``: the plugin is failed at once and restarted with the same backoff, its
``stop_reason`` shown and counted in ``monbridge_plugin_stops_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from bridge.api import (
    ExportStatus,
    Metric,
    MetricBatch,
    MetricKind,
    MonitoringIntegrationPlugin,
    Plugin,
    PluginType,
)
from bridge.delivery import REAL_CLOCK, Clock, Timer
from bridge.isolation import Isolation, LimitExceeded, StopReason
from bridge.ledger import LEDGER, acting_for
from bridge.lifecycle import Lifecycle, PluginState
from bridge.pipeline import GC_PAUSE_MIN_BATCH, Pipeline, Retained, paused_gc
from bridge.pluginhost import InProcessHost, Placement, PluginHost, ProcessHost
from bridge.tasks import CANCEL_GRACE_S, backoff_delay, cancel_and_wait, run_bounded, wait_within

__all__ = ["InProcessHost", "Placement", "PluginHost", "PluginRunner", "ProcessHost", "SinkState", "Supervisor",
           "SupervisorSettings"]

log = logging.getLogger("monbridge.supervisor")

SELF_SOURCE = "monbridge"
FLUSH_TIMEOUT_S = 2.5
PUSH_EXPIRE_AFTER_S = 300.0
#: Seconds the supervisor's own bound on a call adds to a host that bounds its calls itself.
HOST_BOUND_SLACK_S = 2.0
#: Seconds a worker has for each of stop and shutdown in a graceful stop.
WORKER_STOP_TIMEOUT_S = 1.0
#: Seconds a replaced push receiver's (an unscheduled plugin's) series stay on view for its
#: successor's pushes to replace them (the usual push intervals are 10 to 60 s).
HANDOVER_UNSCHEDULED_S = 60.0


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
    placement: Placement = field(default_factory=Placement)
    lifecycle: Lifecycle = field(init=False)
    host: PluginHost | None = None
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
    stop_reason: StopReason | None = None  # why its host last stopped it
    stop_detail: str | None = None
    stopped_at: float | None = None
    stops: Counter[str] = field(default_factory=Counter)  # by StopReason value
    last_stop: LimitExceeded | None = None
    host_status: dict[str, Any] = field(default_factory=dict)  # the last host's, kept when it is gone
    #: Its predecessor's series (a reload's), on view until its first run ends or a bound passes.
    handover: Retained | None = None
    handover_timer: Timer | None = None

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
            "isolation": self.placement.isolation.value,
            "isolation_note": self.placement.note or None,
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "stop_detail": self.stop_detail,
            "stopped_at": self.stopped_at,
            "stops": {r.value: self.stops[r.value] for r in StopReason},
            "dropped": LEDGER.of_plugin(self.plugin_id),
            **self.live_host_status(),
        }

    def live_host_status(self) -> dict[str, Any]:
        """The host's part of the status (``worker_pid``, ``mechanisms``, usage): the running
        host's, else the last one's without its pid and usage."""
        if self.host is not None:
            self.host_status = self.host.status()
        st = dict(self.host_status)
        if self.placement.isolation is Isolation.PROCESS:
            st.setdefault("worker_pid", None)
            if self.host is None or self.state is not PluginState.RUNNING:
                st = {k: v for k, v in st.items() if not k.startswith("worker_")} | {"worker_pid": None}
        st.pop("isolation", None)
        return st


class Supervisor:
    def __init__(self, pipeline: Pipeline, settings: SupervisorSettings | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None, *, clock: Clock = REAL_CLOCK) -> None:
        self.pipeline = pipeline
        self.settings = settings or SupervisorSettings()
        self.runners: dict[str, PluginRunner] = {}
        # Schedules, timeouts, deadlines, the restart backoff and the records' times run on ``clock``
        # (a ManualClock in tests); ``sleep`` replaces only the restart backoff's wait.
        self.clock = clock
        self._sleep = sleep or clock.sleep
        #: Called when a plugin starts running or stops (the runtime: the alert engine takes up its
        #: running plugins then, rather than asking every second).
        self.on_change: Callable[[], None] | None = None
        #: Called after the supervisor records its own metrics (each scrape of /metrics and round of
        #: an exporter): other parts record theirs (the alert engine's).
        self.self_metrics_hooks: list[Callable[[], None]] = []

    def _plugin_changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def _call(self, runner: PluginRunner, what: str, aw: Awaitable[Any], timeout: float | None) -> Any:
        """``await aw`` (a call into ``runner``'s plugin) bounded by ``timeout``; a call that does
        not end when cancelled is abandoned, logged and counted rather than waited for."""

        def abandoned() -> None:
            runner.abandoned += 1
            log.error("plugin %s: %s did not end %.1fs after it was cancelled; abandoned (it may keep "
                      "running unsupervised)", runner.plugin_id, what, self.settings.cancel_grace)

        if timeout is not None and runner.host is not None and runner.host.bounds_calls:
            # The host stops the plugin at ``timeout`` (LimitExceeded); this bound is a safety net.
            timeout = timeout * 1.1 + HOST_BOUND_SLACK_S
        with acting_for(runner.plugin_id):  # the call's task, and the tasks it starts, count drops for it
            return await run_bounded(aw, timeout, grace=self.settings.cancel_grace, on_abandon=abandoned,
                                     clock=self.clock)

    # ------------------------------------------------------------------ adding and removing

    def add(self, plugin_id: str, make_plugin: Callable[[], Plugin], config: Mapping[str, Any],
            parsed_config: Any = None, placement: Placement | None = None,
            plugin_type: PluginType | None = None) -> PluginRunner:
        runner = self.make_runner(plugin_id, make_plugin, config, parsed_config, placement, plugin_type)
        self.runners[plugin_id] = runner
        return runner

    def make_runner(self, plugin_id: str, make_plugin: Callable[[], Plugin], config: Mapping[str, Any],
                    parsed_config: Any = None, placement: Placement | None = None,
                    plugin_type: PluginType | None = None) -> PluginRunner:
        """A runner for ``plugin_id``, not (yet) one of the supervisor's. A plugin placed in a
        worker (``placement``, with its ``plugin_type``) is not instantiated in the agent."""
        placement = placement or Placement()
        interval = getattr(parsed_config, "collection_interval", None) or getattr(parsed_config, "interval", None)
        timeout = getattr(parsed_config, "timeout", None) or interval
        if placement.isolation is Isolation.PROCESS and plugin_type is not None:
            runner = PluginRunner(plugin_id, plugin_type, dict(config), make_plugin, interval, timeout,
                                  placement=placement)
            runner.lifecycle.on_change = self._plugin_changed
            return runner
        with acting_for(plugin_id):
            probe = make_plugin()
        first = [probe]

        def factory() -> Plugin:
            return first.pop() if first else make_plugin()

        runner = PluginRunner(plugin_id, probe.plugin_type, dict(config), factory, interval, timeout,
                              version=probe.metadata().version, placement=placement)
        runner.lifecycle.on_change = self._plugin_changed
        return runner

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(r) for r in self.runners.values()))

    async def start(self, runner: PluginRunner, handover: Retained | None = None) -> None:
        """Initialize and start ``runner``; on failure it is failed and restarted in the background.
        ``handover``: its predecessor's series (``stop(keep_series=True)``), see ``adopt``."""
        self._take_over(runner, handover)
        up = await self._bring_up(runner)
        runner.task = asyncio.create_task(self._supervise(runner, up), name=f"plugin:{runner.plugin_id}")

    async def start_staged(self, runner: PluginRunner) -> bool:
        """Initialize and start a runner from ``make_runner`` without supervising it (a reload's
        new plugins, adopted only when all of them started). When that fails, its instance is shut
        down and False returned; ``runner.last_error`` says why."""
        if await self._bring_up(runner):
            return True
        # Its source's series stay: a changed plugin's are its predecessor's, which a refused reload restarts.
        await self.stop(runner, flush=False, keep_series=True)
        return False

    def adopt(self, runner: PluginRunner, handover: Retained | None = None) -> None:
        """Supervise ``runner``, started by ``start_staged``, from now on. ``handover`` is its
        predecessor's series (``stop(keep_series=True)``): they stay on view until ``runner``'s first
        collection or round has ended (its records replaced them), it failed, or a bound passed
        (its timeout and interval; ``HANDOVER_UNSCHEDULED_S`` for a plugin without a schedule);
        then what it did not report again expires (``Pipeline.release``)."""
        self._take_over(runner, handover)
        self.runners[runner.plugin_id] = runner
        runner.task = asyncio.create_task(self._supervise(runner, True), name=f"plugin:{runner.plugin_id}")

    def _take_over(self, runner: PluginRunner, handover: Retained | None) -> None:
        if handover is None:
            return
        self._hand_over(runner)
        runner.handover = handover
        bound = (runner.timeout or runner.interval or 0.0) + (runner.interval or 0.0) + self.settings.cancel_grace \
            if runner.interval else HANDOVER_UNSCHEDULED_S
        runner.handover_timer = self.clock.call_later(bound, self._hand_over, runner)

    def _hand_over(self, runner: PluginRunner) -> None:
        """Let ``runner``'s predecessor's series go (see ``adopt``)."""
        held, runner.handover = runner.handover, None
        if runner.handover_timer is not None:
            runner.handover_timer.cancel()
            runner.handover_timer = None
        if held is not None:
            n = self.pipeline.release(held)
            if n:
                log.info("plugin %s: %d series of its previous instance not reported again expired",
                         runner.plugin_id, n)

    def _make_host(self, runner: PluginRunner) -> PluginHost:
        placement = runner.placement
        if placement.isolation is Isolation.PROCESS:
            return ProcessHost(runner.plugin_id, runner.plugin_type, placement,
                               cardinality_limit=self.pipeline.cardinality_limit)
        host = InProcessHost(runner.make_plugin())
        if placement.isolation is Isolation.WASM:
            # A signed WASM package: its plugin is the WASM host's (bridge.wasmhost), which bounds every
            # call into the module (epoch deadline, fuel, store limits) and raises LimitExceeded.
            host.isolation = Isolation.WASM
        if isinstance(host.plugin, MonitoringIntegrationPlugin):
            # Pushed series expire after 5 minutes unless the plugin says otherwise (as the OTel
            # Collector's Prometheus exporter's metric_expiration).
            host.plugin.bind_ingest(self.pipeline.ingest(runner.plugin_id, PUSH_EXPIRE_AFTER_S))
        return host

    async def _bring_up(self, runner: PluginRunner) -> bool:
        ct = self.settings.call_timeout
        try:
            with acting_for(runner.plugin_id):
                host = runner.host = self._make_host(runner)
            await self._call(runner, "initialize", host.initialize(runner.config, ct), ct)
            runner.lifecycle.to(PluginState.INITIALIZED)
            await self._call(runner, "start", host.start(ct), ct)
            runner.lifecycle.to(PluginState.RUNNING)
            if isinstance(host, ProcessHost):
                runner.version = str(host.info.get("version") or runner.version)[:100]
            log.info("plugin %s running (%s)", runner.plugin_id,
                     f"interval {runner.interval:g}s" if runner.interval else "no interval")
            return True
        except Exception as e:
            self._failed(runner, "start", e)
            if runner.lifecycle.can(PluginState.FAILED):
                runner.lifecycle.to(PluginState.FAILED)
            return False

    def _failed(self, runner: PluginRunner, what: str, e: BaseException) -> None:
        if isinstance(e, LimitExceeded):
            self._host_stopped(runner, e)
            msg = f"{what}: stopped ({e.reason.value}): {e.detail}"
            if e.reason is StopReason.TIMEOUT:
                runner.timeouts += 1
        elif isinstance(e, TimeoutError):
            msg = f"{what} timed out"
            runner.timeouts += 1
        else:
            msg = f"{what} failed: {type(e).__name__}: {e}"
        runner.errors += 1
        runner.consecutive_failures += 1
        runner.last_error = msg
        runner.last_error_at = self.clock.time()
        # The traceback once per failure streak; repeats are one line each.
        log.error("plugin %s: %s", runner.plugin_id, msg,
                  exc_info=runner.consecutive_failures == 1 and not isinstance(e, (TimeoutError, LimitExceeded)))

    def _host_stopped(self, runner: PluginRunner, e: LimitExceeded) -> None:
        """Record that ``runner``'s host stopped it (once per stop: later calls raise the same)."""
        if runner.last_stop is e:
            return
        runner.last_stop = e
        runner.stop_reason, runner.stop_detail, runner.stopped_at = e.reason, e.detail, self.clock.time()
        runner.stops[e.reason.value] += 1

    @staticmethod
    def _stopped_by_host(runner: PluginRunner) -> LimitExceeded | None:
        """Why ``runner``'s host stopped the plugin, when it did (it is then restarted at once)."""
        host = runner.host
        return host.stopped if host is not None else None

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
        clock = self.clock
        interval = runner.interval
        timeout = runner.timeout or interval
        next_at = clock.monotonic()
        while True:
            delay = next_at - clock.monotonic()
            host = runner.host
            if host is not None and host.bounds_calls:  # a plugin stopped between runs is restarted at once
                if delay > 0:
                    try:
                        await clock.wait_for(host.dead.wait(), delay)
                    except TimeoutError:
                        pass
                stopped = host.stopped
                if stopped is not None:
                    ok = False
                    self._failed(runner, "between runs", stopped)
                else:
                    ok = await self._once(runner, timeout)
            else:
                if delay > 0:
                    await clock.sleep(delay)
                ok = await self._once(runner, timeout)
            if runner.handover is not None:
                self._hand_over(runner)
            if not ok and (runner.consecutive_failures >= self.settings.max_failures
                           or self._stopped_by_host(runner) is not None):
                runner.lifecycle.to(PluginState.FAILED)
                # A failed source's last values are not news: they expire rather than linger.
                self.pipeline.remove_source(runner.plugin_id)
                return True
            next_at += interval
            now = clock.monotonic()
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
                # The batch is let go before the GC runs again: its Metrics are freed as they are
                # dropped, not walked first by the collection the pause put off (measured: 25 ms a
                # round of 100k series).
                with paused_gc() if runner.last_batch_size >= GC_PAUSE_MIN_BATCH else nullcontext():
                    metrics = await self._call(runner, what, host.collect(timeout), timeout)
                    self.pipeline.record(runner.plugin_id, metrics, prometheus_names=host.imports_prometheus_names)
                    runner.last_batch_size = len(metrics)
                    del metrics
            else:
                self.refresh_self_metrics()  # exporters send current self-metrics, scraped or not
                deadline = self.clock.monotonic() + timeout
                await self._call(runner, what, host.import_round(self.pipeline, timeout), timeout)
                what = "export"
                sinks = host.sink_names()
                if sinks:  # an integration that only receives (OTLP receive) gets no batch built
                    batch = await self._call(runner, what, host.export_batch(self.pipeline),
                                             deadline - self.clock.monotonic())
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
        runner.last_success_at = self.clock.time()
        return True

    async def _export(self, runner: PluginRunner, host: PluginHost, name: str, batch: MetricBatch,
                      deadline: float) -> None:
        """One sink's export of this round, within the round's ``deadline``; its outcome is the
        sink's state, logged when it changes between ok and failing."""
        sink = runner.sinks.get(name)
        if sink is None:
            sink = runner.sinks[name] = SinkState(name)
        timeout = max(deadline - self.clock.monotonic(), 0.0)
        try:
            result = await self._call(runner, f"export to {name}", host.export(name, batch, timeout), timeout)
        except asyncio.CancelledError:
            raise
        except LimitExceeded as e:  # the worker is gone: the plugin's failure, not the sink's
            self._host_stopped(runner, e)
            self._sink_failed(runner, sink, "error", f"export failed: {e}")
            return
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
        sink.last_success_at = self.clock.time()
        if sink.ok is False:
            log.info("plugin %s: sink %s recovered", runner.plugin_id, name)
        sink.ok = True

    def _sink_failed(self, runner: PluginRunner, sink: SinkState, status: str, msg: str) -> None:
        sink.exports += 1
        sink.errors += 1
        sink.last_status = status
        sink.last_error = msg
        sink.last_error_at = self.clock.time()
        if sink.ok is not False:
            log.error("plugin %s: sink %s is failing: %s (logged again when it recovers)",
                      runner.plugin_id, sink.name, msg)
        sink.ok = False

    async def _force_flush(self, runner: PluginRunner, host: PluginHost, deadline: float) -> None:
        """Every sink's ``force_flush`` (a graceful stop's), within ``deadline``; a sink that could
        not flush is logged (its state keeps its last export's outcome)."""
        async def flush(name: str) -> None:
            timeout = max(deadline - self.clock.monotonic(), 0.0)
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

    async def bring_up(self, runner: PluginRunner) -> bool:
        """Initialize and start ``runner``'s plugin, without its schedule (``monbridge test``); its
        failure is recorded as ``last_error``."""
        return await self._bring_up(runner)

    async def collect_once(self, runner: PluginRunner) -> bool:
        """Bring a plugin up, run one collection or round, and leave it running (``monbridge test``)."""
        if not await self._bring_up(runner):
            return False
        return await self._once(runner, runner.timeout or 30.0)

    async def stop(self, runner: PluginRunner, flush: bool = True, keep_series: bool = False) -> Retained | None:
        """Stop and shut down ``runner``: a last export round for integrations, then shutdown. Its
        series expire, or with ``keep_series`` stay and are returned for its successor's ``adopt``
        or ``start`` (a reload's replacement of a changed plugin)."""
        self._hand_over(runner)
        if await cancel_and_wait(runner.task, timeout=2 * self.settings.cancel_grace, clock=self.clock):
            runner.abandoned += 1
            log.error("plugin %s: its schedule did not end when cancelled; abandoned", runner.plugin_id)
        runner.task = None
        host = runner.host
        # A worker still inside a call its schedule gave up on would answer neither: it gets the
        # time of a graceful stop, then is killed (the host's timeout), not the whole call_timeout.
        ct = min(self.settings.call_timeout, WORKER_STOP_TIMEOUT_S) if host and host.bounds_calls \
            else self.settings.call_timeout
        if host is not None and runner.state is PluginState.RUNNING:
            if flush and runner.plugin_type is PluginType.INTEGRATION and runner.interval:
                # The last round and the sinks' force_flush must fit in the 5 s a graceful stop has.
                deadline = self.clock.monotonic() + FLUSH_TIMEOUT_S
                await self._once(runner, min(runner.timeout or FLUSH_TIMEOUT_S, FLUSH_TIMEOUT_S))
                await self._force_flush(runner, host, deadline)
            try:
                await self._call(runner, "stop", host.stop(ct), ct)
            except Exception as e:  # noqa: BLE001
                self._failed(runner, "stop", e)
            runner.lifecycle.to(PluginState.STOPPED)
        if host is not None and runner.lifecycle.can(PluginState.SHUT_DOWN):
            try:
                await self._call(runner, "shutdown", host.shutdown(ct), ct)
            except Exception as e:  # noqa: BLE001
                self._failed(runner, "shutdown", e)
            runner.lifecycle.to(PluginState.SHUT_DOWN)
        if keep_series:
            return self.pipeline.retain(runner.plugin_id)
        self.pipeline.remove_source(runner.plugin_id)
        return None

    async def stop_all(self, timeout: float | None = None) -> None:
        """Stop every plugin at once; with ``timeout``, those not stopped by then are abandoned
        (each logged by plugin id and counted), so a plugin cannot hold up a shutdown."""
        stops = {asyncio.create_task(self.stop(r), name=f"stop:{pid}"): r for pid, r in self.runners.items()}
        if not stops:
            return
        _, pending = await wait_within(stops, timeout, self.clock)
        for t in pending:
            r = stops[t]
            r.abandoned += 1
            log.error("plugin %s did not stop within %.1fs (state %s); abandoned", r.plugin_id, timeout, r.state.value)
            if r.host is not None:
                r.host.kill()  # a worker process ends with it
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
            for why in StopReason:
                add(Metric("monbridge.plugin.stops", C, r.stops[why.value], "",
                           "times the plugin's host stopped it, by reason", {**a, "reason": why.value}))
            usage = r.host.usage() if r.host is not None else {}
            if usage:
                add(Metric("monbridge.plugin.worker.resident_memory", G, usage["rss_bytes"], "By",
                           "resident memory of the plugin's worker process", a))
                add(Metric("monbridge.plugin.worker.cpu", C, usage["cpu_seconds"], "s",
                           "CPU time (user and system) of the plugin's worker process", a))
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
        for (component, reason, plugin), lost in sorted(LEDGER.counts().items()):
            add(Metric("monbridge.dropped", C, lost, "", "data dropped, by the part that dropped it, why, and "
                       "the plugin it was for (each part counts in its own unit)",
                       {"component": component, "reason": reason, "plugin": plugin}))
        p.record(SELF_SOURCE, out)
        for hook in self.self_metrics_hooks:
            hook()
