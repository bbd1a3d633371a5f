"""The alert engine: alerts in, lifecycle and telemetry, the processor chain, notifications out.

``fire``/``acknowledge``/``resolve`` change the store; each transition is emitted as an OTel log
record (and opens, marks or ends the alert's span). The ``ProcessorChain`` is registered first
on both OTel providers: for every transition record it runs the configured
``AlertProcessorPlugin``s' ``process_alert`` in config order (a processor may enrich the alert
or stop it with ``AlertSuppressed``) and hands what comes out to the dispatcher; every
acknowledgment reaches each processor's ``handle_acknowledgment`` and every span's end (a
resolution) its ``handle_resolution``. Plugins run in one task, one transition at a time, so
each sees transitions in order.

Processors may implement the optional hooks of ``bridge.api`` the engine calls:
``AlertContextHook`` (``attach`` once with an ``AlertContext``: the engine, the metric pipeline,
the resource), ``GroupingHook``, ``MuteHook`` (inhibition), ``EscalationHook`` and
``NotifierHook`` (a notifier); an integration, ``TelemetryExporterHook``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from bridge.alerting.base import AlertContext
from bridge.alerting.dispatch import Dispatcher, Route
from bridge.alerting.model import AlertSuppressed, copy_alert, fingerprint
from bridge.alerting.notify import Notification
from bridge.alerting.outbox import Outbox, RetryPolicy
from bridge.alerting.settings import AlertingSettings, StateDirLock
from bridge.alerting.silences import Silences
from bridge.alerting.store import AlertStore
from bridge.alerting.telemetry import ATTR_EVENT, EVENT_TRANSITION, AlertTelemetry
from bridge.api import (
    Alert,
    AlertContextHook,
    AlertProcessorPlugin,
    AlertSourceHook,
    AlertState,
    EscalationHook,
    GroupingHook,
    GroupingSettings,
    Metric,
    MetricKind,
    MonitoringIntegrationPlugin,
    MuteHook,
    NotifierHook,
    Plugin,
    PluginType,
    TelemetryExporterHook,
)
from bridge.delivery import REAL_CLOCK, Clock
from bridge.logs import redact_text
from bridge.tasks import cancel_and_wait, run_bounded

if TYPE_CHECKING:
    from bridge.pipeline import Pipeline

__all__ = ["AlertContext", "AlertEngine", "ProcessorChain"]

log = logging.getLogger("monbridge.alerting")

PluginList = Callable[[PluginType], list[tuple[str, Plugin]]]
STOP_FLUSH_S = 1.0
METRICS_SOURCE = "monbridge.alerting"
#: Why the alerting API refuses a request body (``bridge.httpbody``'s reasons and the routes' own).
REFUSAL_REASONS = ("too_large", "unsupported_encoding", "bad_encoding", "bad_json", "too_deep", "invalid")
#: The longest an integration's ``import_alerts`` or ``export_alerts`` may take, each round.
INTEGRATION_CALL_TIMEOUT_S = 10.0
#: Seconds between the engine's housekeeping rounds (refresh, self-metrics, integrations' rounds).
HOUSEKEEPING_INTERVAL_S = 1.0
#: Reports of one batch (``report``), or transitions of its telemetry, handled between two turns
#: of the event loop: at most this many, and no more once ``SLICE_S`` seconds have gone.
BATCH_SLICE = 50
SLICE_S = 0.01


class ProcessorChain(SpanProcessor, LogRecordProcessor):
    """The alert processors as one OTel span and log record processor (see the module doc)."""

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine
        self.queue: asyncio.Queue[tuple[str, str, AlertState | None]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue = asyncio.Queue()

    def put(self, item: tuple[str, str, AlertState | None]) -> None:
        if self.queue is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self.queue.put_nowait(item)
        else:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    # LogRecordProcessor
    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        attrs = log_record.log_record.attributes or {}
        if attrs.get(ATTR_EVENT) == EVENT_TRANSITION:
            self.put(("transition", str(attrs["alert.id"]), AlertState(str(attrs["alert.state"]))))

    # SpanProcessor
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        if attrs.get("alert.state") == AlertState.RESOLVED.value and "alert.id" in attrs:
            self.put(("resolution", str(attrs["alert.id"]), AlertState.RESOLVED))

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    async def run(self) -> None:
        assert self.queue is not None
        handled = 0
        while True:
            handled += 1
            if handled % BATCH_SLICE == 0:  # a queue that is never empty still lets the loop turn
                await asyncio.sleep(0)
            kind, alert_id, state = await self.queue.get()
            try:
                if kind == "transition":
                    await self.engine._process(alert_id, state)
                else:
                    await self.engine._call_all("handle_resolution", alert_id, lambda p, a: p.handle_resolution(a))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the chain keeps running
                log.exception("alert %s: processing the %s failed", alert_id, kind)
            finally:
                self.queue.task_done()


class AlertEngine:
    def __init__(self, settings: AlertingSettings | None = None, pipeline: Pipeline | None = None,
                 resource: Resource | None = None, plugins: PluginList | None = None,
                 clock: Clock = REAL_CLOCK, retry: RetryPolicy | None = None) -> None:
        self.settings = settings or AlertingSettings()
        self.pipeline = pipeline
        self.resource = resource or Resource.create({"service.name": "monbridge"})
        self._plugins = plugins or (lambda _t: [])
        # Timers (group_wait, group_interval, escalations), waits (retries, housekeeping, rule
        # evaluation) and deadlines run on ``timing``; ``clock()`` is its wall time (alerts' times).
        self.timing = clock
        self.clock: Callable[[], float] = clock.time
        # Without a state directory (no alerting in the config) alerts live in memory only.
        self.state_dir = self.settings.state_dir
        self.store = AlertStore(self.state_path("alerts.json"), clock=clock.time)
        self.silences = Silences(self.state_path("silences.json"), clock=clock.time)
        self.outbox = Outbox(self.settings.resolved_outbox_dir(), retry, clock=clock)
        self.dispatcher = Dispatcher(self._enqueue, self.muted, self.state_path("nflog.json"), clock,
                                     self.settings.external_url, durable=self.outbox.flush_pending)
        self._lock: StateDirLock | None = None
        self.telemetry = AlertTelemetry(self.resource)
        self.chain = ProcessorChain(self)
        self.telemetry.add_processor(self.chain)
        self._attached: set[int] = set()
        self._senders: dict[str, int] = {}
        self._muters: list[Callable[[Alert], str | None]] = []
        self._processors: list[tuple[str, AlertProcessorPlugin]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._exporting_to: set[int] = set()
        self._started = False
        self._refresh_pending = False  # a refresh asked for by plugins_changed, not yet made
        self._current_settings: Callable[[], AlertingSettings] = lambda: self.settings
        self._warned_settings: AlertingSettings | None = None
        # Transitions of a batch whose telemetry is still to be recorded (in order; each with a copy
        # of the alert as it was), and the task recording them between turns of the event loop.
        self._telemetry_backlog: deque[tuple[Alert, AlertState | None, str]] = deque()
        self._telemetry_task: asyncio.Task[None] | None = None
        #: Requests the alerting API refused, by (route, reason).
        self.refused_requests: Counter[tuple[str, str]] = Counter(
            {(route, reason): 0 for route in ("alertmanager", "silences") for reason in REFUSAL_REASONS})
        self.refused_requests[("alertmanager", "too_many_alerts")] = 0

    @classmethod
    def locked(cls, settings: Callable[[], AlertingSettings], pipeline: Pipeline, plugins: PluginList) -> AlertEngine:
        """An engine on the state directory of ``settings()``, locked before anything in it is
        read (StateDirInUse when another agent has it). ``settings`` is asked again on each
        refresh: a changed alerting section is warned about and takes effect at the next start.
        ``plugins`` gives the running plugins of a type, in config order."""
        first = settings()
        lock = StateDirLock.acquire(first.state_dir) if first.state_dir is not None else None
        engine = cls(first, pipeline, pipeline.resource, plugins)
        engine._current_settings = settings
        engine._lock = lock
        if lock is not None:
            log.info("alerts: state in %s", lock.directory)
        return engine

    # ------------------------------------------------------------------ running

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.chain.bind(asyncio.get_running_loop())
        self._tasks.append(asyncio.create_task(self.chain.run(), name="alerts:chain"))
        self.refresh()
        # Active alerts from before a restart: their spans go on, and they pass through the chain
        # again, so processors rebuild their state (escalation timers) and the groups are rebuilt
        # (the notification log knows what was already sent).
        for alert in self.store.active_alerts():
            self.telemetry.open_span(alert)
            self.chain.put(("transition", alert.id, alert.state))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="alerts:housekeeping"))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        if self._telemetry_task is not None:
            await cancel_and_wait(self._telemetry_task)
        while self._telemetry_backlog:  # what a batch left: recorded before the providers shut down
            self.telemetry.transition(*self._telemetry_backlog.popleft())
        await self.store.flush()
        self.dispatcher.stop()
        await self.dispatcher.flush()
        await self.outbox.stop()
        # A graceful stop has 5 s in all: the last spans and records get one of them at most.
        try:
            async with asyncio.timeout(STOP_FLUSH_S + 0.5):
                await asyncio.to_thread(self.telemetry.shutdown, int(STOP_FLUSH_S * 1000))
        except TimeoutError:
            log.warning("alerts: spans and log records not all exported within %.1fs of stopping", STOP_FLUSH_S)
        self._started = False
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def drain(self) -> None:
        """Wait until every queued transition has been through the chain (tests, benchmarks)."""
        while self._telemetry_task is not None and not self._telemetry_task.done():
            await asyncio.shield(self._telemetry_task)
        if self.chain.queue is not None:
            await self.chain.queue.join()

    def refresh(self) -> None:
        """Take up the current processors: attach new instances, rebuild routes, start delivery."""
        procs = [(pid, p) for pid, p in self._plugins(PluginType.ALERT_PROCESSOR) if isinstance(p, AlertProcessorPlugin)]
        self._processors = procs
        ctx = AlertContext(self, self.pipeline, self.resource)
        grouping = GroupingSettings()
        escalation_only: set[str] = set()
        self._muters = []
        for _pid, p in procs:
            if id(p) not in self._attached:
                self._attached.add(id(p))
                if isinstance(p, AlertContextHook):
                    p.attach(ctx)
            if isinstance(p, GroupingHook):
                grouping = p.grouping_settings()
            if isinstance(p, MuteHook):
                self._muters.append(p.muted)
            if isinstance(p, EscalationHook):
                escalation_only |= set(p.escalation_notifiers())
        routes = []
        for pid, p in procs:
            if not isinstance(p, NotifierHook):
                continue
            if pid not in escalation_only:
                matchers, send_resolved = p.notification_route()
                routes.append(Route(pid, tuple(matchers), send_resolved))
            if self._senders.get(pid) != id(p):
                self._senders[pid] = id(p)
                self.outbox.start(pid, p.send, self._delivered)
        self.dispatcher.configure(routes, grouping)
        self._export_through_otlp()
        wanted = self._current_settings()
        if wanted != self.settings and wanted != self._warned_settings:
            self._warned_settings = wanted
            log.warning("alerts: the changed alerting section (state_dir, outbox_dir, external_url, import_interval) "
                        "takes effect at the next start; the running settings stay")

    def _export_through_otlp(self) -> None:
        for _pid, p in self._plugins(PluginType.INTEGRATION):
            if not isinstance(p, TelemetryExporterHook) or id(p) in self._exporting_to:
                continue
            try:
                exporters = p.telemetry_exporters()
            except Exception as e:  # noqa: BLE001 - no telemetry export is not a reason to stop alerting
                log.error("alerts: cannot export spans and logs through %s: %s", _pid, redact_text(str(e)))
                continue
            if exporters is None:  # this integration has nowhere to send them
                continue
            span_exporter, log_exporter = exporters
            self.telemetry.export_to(span_exporter, log_exporter)
            self._exporting_to.add(id(p))
            log.info("alerts: spans and log records exported through %s", _pid)

    async def _housekeeping(self) -> None:
        """The integrations' alert rounds, every ``import_interval`` (at least a housekeeping
        interval apart), each after a refresh. Between two rounds the engine does not wake:
        plugins that start or stop are taken up when they do (``plugins_changed``, the
        supervisor's), and its metrics are recorded with the supervisor's own, when they are read
        (each scrape and exporter round: ``record_metrics``, a self-metrics hook the runtime
        adds). Measured beside Nagios: a wakeup every second cost an idle agent
        0.5 ms of CPU a second, more than the rest of its idle work."""
        last_import = 0.0
        wait = HOUSEKEEPING_INTERVAL_S
        while True:
            await self.timing.sleep(wait)
            try:
                self.refresh()
                if self.clock() - last_import >= self.settings.import_interval:
                    last_import = self.clock()
                    await self._integrations_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("alerts: housekeeping failed")
            wait = max(HOUSEKEEPING_INTERVAL_S, last_import + self.settings.import_interval - self.clock())

    def plugins_changed(self) -> None:
        """A plugin started running or stopped: the processors are taken up (``refresh``) at the
        next turn of the event loop (not in the middle of the supervisor's transition)."""
        if not self._started or self._refresh_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # (a transition outside the loop: the next housekeeping round takes it up)
            return
        self._refresh_pending = True
        loop.call_soon(self._refresh_now)

    def _refresh_now(self) -> None:
        self._refresh_pending = False
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - as a housekeeping round's: logged, the next one tries again
            log.exception("alerts: taking up the running plugins failed")

    def record_metrics(self) -> None:
        """The engine's own metrics into the pipeline (``monbridge_alerting_*``)."""
        if self.pipeline is None:
            return
        o = self.outbox
        outcomes = (("delivered", o.delivered_total), ("failed", o.failed_total), ("superseded", o.superseded_total),
                    ("dropped", o.dropped_total))
        self.pipeline.record(METRICS_SOURCE, [
            *(Metric("monbridge.alerting.requests.refused", MetricKind.COUNTER, n, "",
                     "requests the alerting API refused, by route and reason", {"route": route, "reason": reason})
              for (route, reason), n in sorted(self.refused_requests.items())),
            *(Metric("monbridge.alerting.notifications", MetricKind.COUNTER, float(n), "{notification}",
                     "notifications the outbox is done with, by outcome (dropped: by its bounded queue on disk)",
                     {"outcome": outcome}) for outcome, n in outcomes)])

    async def _integrations_round(self) -> None:
        """Alerts from the integrations' ``import_alerts`` (and collectors' with ``AlertSourceHook``); the
        current ones to the integrations' ``export_alerts``:
        each integration at once, each call bounded by ``INTEGRATION_CALL_TIMEOUT_S`` (one that
        hangs, even ignoring its cancellation, holds up neither the others nor housekeeping)."""
        await asyncio.gather(*(self._integration_round(pid, p) for pid, p in self._plugins(PluginType.INTEGRATION)
                               if isinstance(p, MonitoringIntegrationPlugin)),
                             *(self._integration_round(pid, p) for pid, p in self._plugins(PluginType.METRIC_COLLECTOR)
                               if isinstance(p, AlertSourceHook)))

    async def _integration_round(self, pid: str, p: MonitoringIntegrationPlugin | AlertSourceHook) -> None:
        def abandoned() -> None:
            log.error("alerts: %s did not end its alert import/export when cancelled; abandoned", pid)

        try:
            imported = await run_bounded(p.import_alerts(), INTEGRATION_CALL_TIMEOUT_S, on_abandon=abandoned,
                                         clock=self.timing)
            for a in imported:
                if a.state is AlertState.RESOLVED:
                    self.resolve_fingerprint(a.fingerprint, by=pid, at=a.ends_at)
                else:
                    self.fire(a, by=pid)
            if isinstance(p, MonitoringIntegrationPlugin):  # a collector (AlertSourceHook) only raises alerts
                await run_bounded(p.export_alerts(self.store.active_alerts()), INTEGRATION_CALL_TIMEOUT_S,
                                  on_abandon=abandoned, clock=self.timing)
        except TimeoutError:
            log.warning("alerts: %s import/export of alerts timed out after %gs", pid, INTEGRATION_CALL_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001
            log.warning("alerts: %s import/export of alerts failed: %s", pid, redact_text(f"{type(e).__name__}: {e}"))

    # ------------------------------------------------------------------ lifecycle

    def fire(self, alert: Alert, by: str = "") -> Alert:
        """Report ``alert`` firing: a new alert, or an update of the active one with its fingerprint."""
        stored, new = self._fire(alert, by, logging.INFO)
        if new:
            self.store.save_soon()
        return stored

    def _fire(self, alert: Alert, by: str, level: int, batch: bool = False) -> tuple[Alert, bool]:
        stored, new = self.store.fire(alert, by)
        if new:
            self.store.trim()
            self._transition(stored, None, by, batch)
            log.log(level, "alert %s %s firing (%s) from %s", stored.id, stored.name, stored.fingerprint, by or "?")
        return stored, new

    def acknowledge(self, alert_id: str, by: str = "") -> Alert:
        alert = self.store.transition(alert_id, AlertState.ACKNOWLEDGED, by)
        self.store.save_soon()
        self._transition(alert, AlertState.FIRING, by)
        log.info("alert %s %s acknowledged by %s", alert.id, alert.name, by or "?")
        return alert

    def resolve(self, alert_id: str, by: str = "", at: float | None = None) -> Alert:
        alert = self._resolve(alert_id, by, at, logging.INFO)
        self.store.save_soon()
        return alert

    def _resolve(self, alert_id: str, by: str, at: float | None, level: int, batch: bool = False) -> Alert:
        frm = self.store.get(alert_id).state
        alert = self.store.transition(alert_id, AlertState.RESOLVED, by, at)
        self._transition(alert, frm, by, batch)
        log.log(level, "alert %s %s resolved by %s", alert.id, alert.name, by or "?")
        return alert

    def _transition(self, alert: Alert, frm: AlertState | None, by: str, batch: bool = False) -> None:
        """The transition's telemetry (and so the processor chain): now, or, for a batch and for
        everything after a batch's backlog, in order behind it."""
        if not batch and not self._telemetry_backlog:
            self.telemetry.transition(alert, frm, by)
            return
        self._telemetry_backlog.append((copy_alert(alert), frm, by))
        if not batch:
            self._record_soon()

    def _record_soon(self) -> None:
        if self._telemetry_backlog and (self._telemetry_task is None or self._telemetry_task.done()):
            self._telemetry_task = asyncio.create_task(self._record_backlog(), name="alerts:telemetry")

    async def _record_backlog(self) -> None:
        backlog = self._telemetry_backlog
        while backlog:
            until = time.perf_counter() + SLICE_S
            for _ in range(min(BATCH_SLICE, len(backlog))):
                self.telemetry.transition(*backlog.popleft())
                if time.perf_counter() > until:
                    break
            await asyncio.sleep(0)

    async def report(self, alerts: Sequence[Alert], by: str) -> tuple[int, int]:
        """A batch of reports from one source (a webhook): firing alerts fire, resolved ones resolve
        the active alert with their fingerprint. The store changes ``BATCH_SLICE`` at a time between
        turns of the event loop and is written once for the batch (awaited, off the loop); the
        transitions' telemetry (log records, spans, and through them the processor chain) follows
        in order, in slices, after the answer. Returns (firing reports, alerts resolved)."""
        fired = new = resolved = 0
        until = time.perf_counter() + SLICE_S
        try:
            for i, a in enumerate(alerts):
                if i and (i % BATCH_SLICE == 0 or time.perf_counter() > until):
                    await asyncio.sleep(0)
                    until = time.perf_counter() + SLICE_S
                if a.state is AlertState.RESOLVED:
                    known = self.store.by_fingerprint(a.fingerprint or fingerprint(a.labels))
                    if known is not None:
                        self._resolve(known.id, by, a.ends_at, logging.DEBUG, batch=True)
                        resolved += 1
                else:
                    fired += 1
                    new += self._fire(a, by, logging.DEBUG, batch=True)[1]
        finally:
            self.store.trim()
            self._record_soon()  # once the batch is in the store: its answer does not wait for this
        if new or resolved:
            self.store.save_soon()
            log.info("alerts from %s: %d reports, %d new firing, %d resolved", by or "?", len(alerts), new, resolved)
        await self.store.flush()
        return fired, resolved

    def resolve_fingerprint(self, fp: str, by: str = "", at: float | None = None) -> Alert | None:
        alert = self.store.by_fingerprint(fp)
        return self.resolve(alert.id, by, at) if alert is not None else None

    # ------------------------------------------------------------------ the chain

    async def _process(self, alert_id: str, state: AlertState | None) -> None:
        stored = self.store.alerts.get(alert_id)
        if stored is None:
            return
        alert = copy_alert(stored)
        alert.state = state or stored.state
        suppressed = False
        for pid, p in self._processors:
            try:
                alert = await p.process_alert(alert)
            except AlertSuppressed as e:
                self.telemetry.span_event(alert_id, "suppressed", {"processor": pid, "reason": str(e)})
                log.info("alert %s %s suppressed by %s: %s", alert_id, stored.name, pid, e)
                suppressed = True
                break
            except Exception as e:  # noqa: BLE001 - a failing processor passes the alert on unchanged
                log.error("alert processor %s failed on alert %s: %s", pid, alert_id,
                          redact_text(f"{type(e).__name__}: {e}"))
        if not suppressed:
            stored.labels = dict(alert.labels)
            stored.annotations = dict(alert.annotations)
            self.dispatcher.insert(stored)
        if state is AlertState.ACKNOWLEDGED:
            await self._call_all("handle_acknowledgment", alert_id, lambda p, a: p.handle_acknowledgment(a))

    async def _call_all(self, method: str, alert_id: str,
                        hook: Callable[[AlertProcessorPlugin, str], Awaitable[None]]) -> None:
        for pid, p in self._processors:
            try:
                await hook(p, alert_id)
            except Exception as e:  # noqa: BLE001
                log.error("alert processor %s: %s(%s) failed: %s", pid, method, alert_id,
                          redact_text(f"{type(e).__name__}: {e}"))

    # ------------------------------------------------------------------ notifications

    def muted(self, alert: Alert) -> str | None:
        """Why ``alert`` is muted now (a silence or an inhibition), or None."""
        s = self.silences.muting(alert.labels)
        if s is not None:
            return f"silence {s.id}"
        for m in self._muters:
            why = m(alert)
            if why:
                return why
        return None

    def _enqueue(self, note: Notification) -> None:
        if self.outbox.put(note):
            log.debug("notification %s queued for %s (%d alerts)", note.key, note.notifier_id, len(note.alerts))

    def escalate(self, alert: Alert, notifier_ids: list[str], level: int) -> None:
        for nid in notifier_ids:
            self.dispatcher.direct(nid, [alert], f"escalation/{alert.fingerprint}/{level}", level)
        self.telemetry.span_event(alert.id, "escalation", {"level": level, "notifiers": ",".join(notifier_ids)})
        self.telemetry.emit(alert, "escalation", f"alert {alert.name} escalated to level {level}",
                            {"alert.escalation.level": level, "alert.escalation.notifiers": ",".join(notifier_ids)})
        log.warning("alert %s %s not acknowledged: escalated (level %d) to %s", alert.id, alert.name, level,
                    ", ".join(notifier_ids))

    def _delivered(self, note: Notification, outcome: str, why: str | None) -> None:
        """A notification was delivered (or given up): an event on each alert's span and a log record."""
        attrs: dict[str, Any] = {"notification.notifier": note.notifier_id, "notification.key": note.key,
                                 "notification.status": note.status, "notification.outcome": outcome}
        if why:
            attrs["notification.error"] = why
        for a in note.alerts:
            self.telemetry.span_event(a.id, "notification", attrs)
            self.telemetry.emit(self.store.alerts.get(a.id, a), "notification",
                                f"notification {outcome} to {note.notifier_id} about alert {a.name} ({note.status})",
                                attrs)

    def state_path(self, name: str) -> Path | None:
        """``name`` in the state directory; None (keep it in memory) without one."""
        return self.state_dir / name if self.state_dir is not None else None

