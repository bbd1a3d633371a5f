"""``monitoring.metrics.nagios``: Nagios plugins as checks, their results as metrics and alerts.

Each check runs on its own schedule (``interval``; ``retry_interval`` while a non-OK state is
soft), at most ``concurrency`` at once, its first run spread over its interval as Nagios' smart
inter-check delay does; a run starts as an argv, never through a shell
(``integrations.nagios.execute``). As in Nagios' event queue, the schedule is one queue of
checks by time with one timer of the event loop, and a run's end is a callback of the runner
that watches every plugin: no task or future per check or run. While no check waits for a free
slot of ``concurrency``, the results of runs that ended are taken when the schedule wakes next
(within 1 s, two ``start_window``s at most), not each batch on a wakeup of its own. States
follow Nagios Core: a non-OK result is a soft state until ``max_check_attempts`` results in a
row are non-OK, then a hard one; an OK result recovers at once. A hard WARNING, CRITICAL or
UNKNOWN raises an alert (severity warning, critical, and ``unknown_severity``), which a
recovery, or another hard state, resolves: the alert engine takes them through
``import_alerts`` each import round.

Metrics (attributes ``nagios.check`` and the check's ``labels``):

* ``nagios.check.state`` (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), ``nagios.check.hard`` (1 when
  the state is hard), ``nagios.check.attempt``, ``nagios.check.duration`` (s),
  ``nagios.check.latency`` (s the run started after its scheduled time, Nagios'
  ``check_latency``), ``nagios.check.ran`` (1 when the plugin ran to an exit of its own, 0 when
  monbridge gave the state: missing, timed out, killed, ...), ``nagios.check.executions``;
* each perfdata value, with ``nagios.label`` and, as written by the plugin, ``nagios.uom``,
  ``nagios.warn``, ``nagios.crit``, ``nagios.min``, ``nagios.max`` (attributes: a round trip back
  to Nagios rebuilds the item exactly): ``nagios.perfdata.time`` (s; s, ms, us converted),
  ``nagios.perfdata.size`` (By; B, KB, MB, GB, TB converted, 1024-based),
  ``nagios.perfdata.utilization`` (``%``, the 0-100 value as written), ``nagios.perfdata.count``
  (``c``: a monotonic sum) and ``nagios.perfdata`` (no UOM, or one it does not know, as written);
  an undetermined value (``U``) is no point;
* ``monbridge.nagios.check.failures`` (UNKNOWNs monbridge gave, by ``reason``),
  ``monbridge.nagios.perfdata.dropped`` (items left out, by ``reason``: invalid, duplicate) and
  ``monbridge.nagios.output.truncated`` (outputs cut at 8192 bytes).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from bridge import __version__
from bridge.api import Alert, AlertState, Metric, MetricCollectorPlugin, MetricKind, PluginMetadata, PluginType
from bridge.ledger import loss_counter
from bridge.notifiers import fingerprint
from integrations.nagios.config import NagiosCheck, NagiosCollectorConfig
from integrations.nagios.execute import Runner, RunResult, run_plugin
from integrations.nagios.output import State
from integrations.nagios.perfdata import PerfItem, format_item
from integrations.nagios.ranges import format_number

__all__ = ["PLUGIN_ID", "CheckState", "NagiosCollector", "perfdata_metric", "next_state"]

PLUGIN_ID = "monitoring.metrics.nagios"
log = logging.getLogger("monbridge.nagios")

SEVERITY = {State.WARNING: "warning", State.CRITICAL: "critical"}
#: Perfdata family by OpenTelemetry unit (``c`` is apart: a monotonic sum).
_FAMILY = {"s": "nagios.perfdata.time", "By": "nagios.perfdata.size", "%": "nagios.perfdata.utilization",
           "": "nagios.perfdata"}


@dataclass(slots=True)
class CheckState:
    """Where a check is in Nagios' state machine."""

    state: State = State.OK
    hard: bool = True
    attempt: int = 1
    hard_state: State = State.OK


def next_state(cur: CheckState, result: State, max_attempts: int) -> CheckState:
    """The state after a result, as Nagios Core moves a service: an OK result recovers at once
    (hard); a non-OK one after OK starts at attempt 1, soft unless ``max_attempts`` is 1; each
    further non-OK result while soft counts an attempt, hard at ``max_attempts``; a hard non-OK
    state stays hard (a change between non-OK states is a hard state change)."""
    if result is State.OK:
        return CheckState(State.OK, True, 1, State.OK)
    if cur.state is State.OK:
        attempt = 1
    elif cur.hard:
        return CheckState(result, True, cur.attempt, result)
    else:
        attempt = cur.attempt + 1
    if attempt >= max_attempts:
        return CheckState(result, True, attempt, result)
    return CheckState(result, False, attempt, cur.hard_state)


def perfdata_metric(item: PerfItem, attributes: Mapping[str, str]) -> Metric | None:
    """The metric of one perfdata item (None for an undetermined value)."""
    if item.value is None:
        return None
    attrs: dict[str, str] = {**attributes, "nagios.label": item.label}
    if item.uom:
        attrs["nagios.uom"] = item.uom
    if item.warn is not None:
        attrs["nagios.warn"] = str(item.warn)
    if item.crit is not None:
        attrs["nagios.crit"] = str(item.crit)
    if item.min is not None:
        attrs["nagios.min"] = format_number(item.min)
    if item.max is not None:
        attrs["nagios.max"] = format_number(item.max)
    value = item.converted(item.value)
    assert value is not None
    if item.counter:
        return Metric("nagios.perfdata.count", MetricKind.COUNTER, value, "", "Nagios perfdata counters (UOM c)", attrs)
    unit = item.otel_unit
    return Metric(_FAMILY[unit], MetricKind.GAUGE, value, unit, "Nagios perfdata values", attrs)


_STATE_HELP = "state of the check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN"
_HARD_HELP = "1 when the check's state is hard, 0 when soft"
_ATTEMPT_HELP = "the check's current attempt (of max_check_attempts)"
_DURATION_HELP = "how long the last run took"
_LATENCY_HELP = "how late the last run started after its scheduled time"
_RAN_HELP = "1 when the plugin ran to an exit of its own, 0 when monbridge gave its state"


class _Check:
    __slots__ = ("cfg", "state", "last", "executions", "latency", "attrs", "alert", "metrics")

    def __init__(self, cfg: NagiosCheck) -> None:
        self.cfg = cfg
        self.state = CheckState()
        self.last: RunResult | None = None
        self.executions = 0
        self.latency = 0.0
        self.attrs: dict[str, str] = {"nagios.check": cfg.name, **cfg.labels}
        self.alert: Alert | None = None  # the alert its hard non-OK state raised
        # its metrics as of its last result (the seven of the check, then its perfdata): made
        # again only once it has run again (a check runs once in several collections)
        self.metrics: tuple[tuple[Metric, ...], list[Metric]] | None = None


def _check_metrics(c: _Check) -> tuple[tuple[Metric, ...], list[Metric]]:
    """The metrics of check ``c`` as of its last result: its seven, then its perfdata's."""
    r = c.last
    assert r is not None
    a, st = c.attrs, c.state
    gauge = MetricKind.GAUGE
    own = (Metric("nagios.check.state", gauge, float(st.state), "", _STATE_HELP, a),
           Metric("nagios.check.hard", gauge, 1.0 if st.hard else 0.0, "", _HARD_HELP, a),
           Metric("nagios.check.attempt", gauge, float(st.attempt), "", _ATTEMPT_HELP, a),
           Metric("nagios.check.duration", gauge, r.duration, "s", _DURATION_HELP, a),
           Metric("nagios.check.latency", gauge, c.latency, "s", _LATENCY_HELP, a),
           Metric("nagios.check.ran", gauge, 1.0 if r.ran else 0.0, "", _RAN_HELP, a),
           Metric("nagios.check.executions", MetricKind.COUNTER, float(c.executions), "{run}", "runs of the check", a))
    perf = [m for m in (perfdata_metric(item, a) for item in r.output.perfdata) if m is not None]
    return own, perf


class NagiosCollector(MetricCollectorPlugin):
    """Runs Nagios plugins as checks (see the module doc)."""

    config_model = NagiosCollectorConfig

    def __init__(self) -> None:
        self.config: NagiosCollectorConfig | None = None
        self.checks: list[_Check] = []
        self._sem: asyncio.Semaphore | None = None  # runs on demand (test_report), outside the schedule
        self._runner: Runner | None = None
        self._queue: list[tuple[float, int, _Check]] = []  # (when, order, check): the schedule, a heap
        self._order = itertools.count()
        self._due: deque[tuple[_Check, float]] = deque()  # due, waiting for a free slot of concurrency
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failures: Counter[tuple[str, str]] = Counter()
        self._dropped: Counter[tuple[str, str]] = loss_counter("nagios_perfdata")
        self._truncated: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()
        self._exported: dict[str, Alert] = {}  # fingerprint -> alert given to the engine and not resolved
        self._resolved: list[Alert] = []

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN_ID, "Nagios plugins", __version__, "monbridge",
                              "runs Nagios plugins as checks: states, perfdata and alerts", PluginType.METRIC_COLLECTOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.config = NagiosCollectorConfig.model_validate(dict(config))
        self.checks = [_Check(c) for c in self.config.checks]

    async def start(self) -> None:
        assert self.config is not None
        await self.stop()
        loop = self._loop = asyncio.get_running_loop()
        self._runner = Runner(loop)
        now = loop.time()
        n = len(self.checks)
        # spread over the interval, as Nagios' smart delay: in order of time already, so a heap
        self._queue = [(now + c.cfg.interval * i / n, next(self._order), c) for i, c in enumerate(self.checks)]
        self._arm()

    async def stop(self) -> None:
        """Stop the schedule; plugins still running are killed (their groups) and reaped."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue, self._due, self._running = [], deque(), 0
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    async def shutdown(self) -> None:
        await self.stop()

    # ------------------------------------------------------------------ running

    def _arm(self) -> None:
        """The timer at the first check of the schedule."""
        if not self._queue:
            return
        when = self._queue[0][0]
        assert self.config is not None
        window = self.config.start_window
        if window > 0:  # the end of its window: the checks due within it start together
            when = math.ceil(when / window) * window
        if self._timer is None or when < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            assert self._loop is not None
            self._timer = self._loop.call_at(when, self._wake)

    def _wake(self) -> None:
        self._timer = None
        assert self._loop is not None and self._runner is not None
        self._runner.collect_now()  # the runs that ended since, their slots free for the runs due now
        now = self._loop.time()
        queue = self._queue
        while queue and queue[0][0] <= now:
            when, _, c = heapq.heappop(queue)
            self._due.append((c, when))
        self._start_due()
        self._arm()

    def _start_due(self) -> None:
        assert self.config is not None and self._runner is not None and self._loop is not None
        limit, paths, flood = self.config.concurrency, self.config.plugin_paths, self.config.flood_bytes
        loop = self._loop
        while self._due and self._running < limit:
            c, when = self._due.popleft()
            self._running += 1
            latency = max(0.0, loop.time() - when)
            self._runner.start(c.cfg.command, c.cfg.timeout, partial(self._ended, c, when, latency),
                               plugin_paths=paths, env=c.cfg.environment, flood_bytes=flood)
        # No check waits for a slot: the results may wait for the next wakeup of the schedule
        # (two start windows at most, 1 s at most) rather than wake the loop on their own.
        self._runner.defer(min(2 * self.config.start_window, 1.0) if not self._due else 0.0)

    def _ended(self, c: _Check, scheduled: float, latency: float, result: RunResult) -> None:
        """A scheduled run ended: its result applied, the check's next run queued."""
        self._running -= 1
        try:
            self._apply(c, result, latency)
        finally:
            assert self._loop is not None
            now = self._loop.time()
            interval = c.cfg.interval if c.state.hard else c.cfg.retry
            heapq.heappush(self._queue, (max(scheduled + interval, now), next(self._order), c))
            self._start_due()
            self._arm()

    async def _run(self, c: _Check, scheduled: float) -> None:
        """Run ``c`` now, outside the schedule (``test_report``)."""
        assert self.config is not None
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.config.concurrency)
        async with self._sem:
            latency = max(0.0, asyncio.get_running_loop().time() - scheduled)
            result = await run_plugin(c.cfg.command, c.cfg.timeout, plugin_paths=self.config.plugin_paths,
                                      env=c.cfg.environment, flood_bytes=self.config.flood_bytes)
        self._apply(c, result, latency)

    def _apply(self, c: _Check, result: RunResult, latency: float) -> None:
        name = c.cfg.name
        c.last, c.latency = result, latency
        c.executions += 1
        c.metrics = None
        if result.failure is not None:
            self._failures[(name, result.failure)] += 1
            self._log_once(name, result.failure, f"check {name}: UNKNOWN: {result.output.text[:300]}")
        if result.truncated:
            self._truncated[name] += 1
            self._log_once(name, "truncated", f"check {name}: output longer than 8192 bytes, cut there")
        for err in result.output.perfdata_errors:
            self._dropped[(name, "invalid")] += 1
            self._log_once(name, "perfdata", f"check {name}: perfdata {err}")
        seen: set[str] = set()
        kept = []
        for item in result.output.perfdata:
            if item.label in seen:
                self._dropped[(name, "duplicate")] += 1
                self._log_once(name, "duplicate", f"check {name}: perfdata label {item.label!r} given twice; "
                                                  "the first is kept")
                continue
            seen.add(item.label)
            kept.append(item)
        result.output.perfdata = kept
        before = c.state
        c.state = next_state(before, result.state, c.cfg.max_check_attempts)
        if c.state.hard and c.executions == 1:
            # An alert of an earlier run of the agent (kept in the alert store) that this state no longer
            # raises is resolved: the engine ignores a resolution of an alert it does not have.
            current = self._severity(c.state.state)
            self._resolved += [self._alert(c, sev, result, AlertState.RESOLVED) for sev in ("warning", "critical")
                               if sev != current]
        if c.state.hard and (before.hard_state is not c.state.hard_state or c.alert is None):
            self._hard_state(c, result)

    def _log_once(self, check: str, what: str, message: str) -> None:
        key = (check, what)
        level = logging.DEBUG if key in self._logged else logging.WARNING
        self._logged.add(key)
        log.log(level, "%s", message)

    def _severity(self, state: State) -> str | None:
        assert self.config is not None
        if state is State.UNKNOWN:
            return None if self.config.unknown_severity == "none" else self.config.unknown_severity
        return SEVERITY.get(state)

    def _hard_state(self, c: _Check, result: RunResult) -> None:
        """A hard state (change): the check's alert for it, the former one resolved."""
        if c.alert is not None:
            if c.alert.fingerprint not in self._exported:
                self._resolved.append(c.alert)  # it fired and ended between two imports: both go to the engine
            self._resolved.append(replace(c.alert, state=AlertState.RESOLVED, ends_at=time.time()))
            c.alert = None
        severity = self._severity(c.state.state)
        if severity is not None:
            c.alert = self._alert(c, severity, result, AlertState.FIRING)

    def _alert(self, c: _Check, severity: str, result: RunResult, state: AlertState) -> Alert:
        labels = {**c.cfg.labels, "alertname": c.cfg.name, "severity": severity, "nagios_check": c.cfg.name}
        annotations = {"summary": result.output.text[:1000], "nagios_state": c.state.state.name}
        if result.output.long_text:
            annotations["description"] = result.output.long_text[:4000]
        now = time.time()
        return Alert(id="", name=c.cfg.name, severity=severity, state=state, labels=labels, annotations=annotations,
                     value=float(c.state.state), starts_at=now, ends_at=now if state is AlertState.RESOLVED else None,
                     fingerprint=fingerprint(labels))

    # ------------------------------------------------------------------ outputs

    async def collect_metrics(self) -> Sequence[Metric]:
        # Grouped by name, checks in the same order each time: the pipeline then records each
        # family in one pass, in place, rather than series by series. A check's metrics are
        # made once per result (``_Check.metrics``).
        state: list[Metric] = []
        hard: list[Metric] = []
        attempt: list[Metric] = []
        duration: list[Metric] = []
        latency: list[Metric] = []
        ran: list[Metric] = []
        executions: list[Metric] = []
        perfdata: dict[str, list[Metric]] = {}
        for c in self.checks:
            got = c.metrics
            if got is None:
                if c.last is None:
                    continue
                got = c.metrics = _check_metrics(c)
            m = got[0]
            state.append(m[0])
            hard.append(m[1])
            attempt.append(m[2])
            duration.append(m[3])
            latency.append(m[4])
            ran.append(m[5])
            executions.append(m[6])
            for pm in got[1]:
                perfdata.setdefault(pm.name, []).append(pm)
        out = [*state, *hard, *attempt, *duration, *latency, *ran, *executions]
        for group in perfdata.values():
            out += group
        out += [Metric("monbridge.nagios.check.failures", MetricKind.COUNTER, float(n), "{run}",
                       "runs monbridge gave UNKNOWN in the plugin's place, by reason",
                       {"nagios.check": check, "reason": reason}) for (check, reason), n in sorted(self._failures.items())]
        out += [Metric("monbridge.nagios.perfdata.dropped", MetricKind.COUNTER, float(n), "{item}",
                       "perfdata items left out, by reason", {"nagios.check": check, "reason": reason})
                for (check, reason), n in sorted(self._dropped.items())]
        out += [Metric("monbridge.nagios.output.truncated", MetricKind.COUNTER, float(n), "{run}",
                       "plugin outputs cut at Nagios' 8192 bytes", {"nagios.check": check})
                for check, n in sorted(self._truncated.items())]
        return out

    async def import_alerts(self) -> Sequence[Alert]:
        """The alerts of checks in a hard non-OK state, and, resolved, those whose state recovered
        or changed since (``bridge.api.AlertSourceHook``)."""
        firing = {c.alert.fingerprint: c.alert for c in self.checks if c.alert is not None}
        resolved = self._resolved
        self._resolved = []
        resolved += [replace(a, state=AlertState.RESOLVED, ends_at=time.time()) for fp, a in self._exported.items()
                     if fp not in firing and all(r.fingerprint != fp for r in resolved)]
        self._exported = dict(firing)
        return [*(replace(a, labels=dict(a.labels), annotations=dict(a.annotations)) for a in firing.values()), *resolved]

    async def test_report(self) -> list[str]:
        """Run every check once now and describe each: state, text, long text and perfdata
        (``monbridge test``; ``bridge.api.ReportHook``)."""
        await self.stop()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._run(c, loop.time()) for c in self.checks if c.executions == 0))
        lines: list[str] = []
        for c in self.checks:
            r = c.last
            assert r is not None
            kind = "HARD" if c.state.hard else "SOFT"
            lines.append(f"{c.cfg.name}: {r.state.name} ({kind} {c.state.attempt}/{c.cfg.max_check_attempts}, "
                         f"exit {r.exit_code if r.exit_code is not None else '-'}, {r.duration:.3f} s): {r.output.text}")
            for line in r.output.long_text.splitlines():
                lines.append(f"    | {line}")
            for item in r.output.perfdata:
                value = "U" if item.value is None else f"{format_number(item.converted(item.value) or 0.0)}"
                unit = f" {item.otel_unit}" if item.otel_unit and item.value is not None else ""
                lines.append(f"    perfdata {format_item(item)}  ->  {item.label} = {value}{unit}"
                             + ("  (counter)" if item.counter else ""))
            for err in r.output.perfdata_errors:
                lines.append(f"    perfdata error: {err}")
        return lines


