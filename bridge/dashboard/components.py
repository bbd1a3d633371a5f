"""The built-in dashboard components (``monitoring.dashboard.*``).

* ``timeseries``: a chart of any pipeline metric from the recent history (``bridge.dashboard.query``).
* ``status``: plugin health, scrape targets' ``up``, and thresholds (ok / warn / crit).
* ``topology``: the data flow, sources → plugins → pipeline → destinations, with rates and
  errors per edge from the self-metrics' history; scrape targets and sinks are nodes.
* ``correlation``: alerts grouped into incidents by the correlation processor, on a timeline.
* ``alerts``: current and past alerts; events ``ack``, ``resolve`` and ``silence`` go to the
  alert engine as the alert API's routes do.

Each is a ``DashboardComponentPlugin``; the component runtime hosts one of each with its default
config, and one enabled in the config (with its own ``config``) takes its place. They reach the
agent through ``attach(DashboardContext)`` (``DashboardContextHook``), which the runtime calls on
every component that has it before its first ``get_data``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import Field

from bridge.alerting.model import alert_to_json
from bridge.alerting.silences import Silence
from bridge.api import (
    AlertState,
    ComponentDefinition,
    ComponentEvent,
    DashboardComponentPlugin,
    MetricKind,
    PluginConfig,
    PluginMetadata,
    PluginType,
)
from bridge.dashboard.history import History, Key
from bridge.dashboard.query import QueryError, evaluate, parse_query, parse_window
from bridge.selector import Selector, parse_selector

if TYPE_CHECKING:
    from bridge.alerting.engine import AlertEngine
    from bridge.pipeline import Pipeline

__all__ = ["BUILTIN_COMPONENTS", "AlertView", "CorrelationDiagram", "DashboardContext", "DashboardContextHook",
           "StatusIndicators", "TimeSeriesChart", "TopologyMap"]

_EXPORTS = "monbridge_plugin_sink_exports_total"
#: The span over which topology rates are taken.
RATE_SPAN_S = 300.0
MAX_ALERTS = 1000


@dataclass(frozen=True)
class DashboardContext:
    pipeline: Pipeline
    history: History
    #: The plugins' statuses (as ``/api/v1/plugins`` has them, secrets redacted).
    statuses: Callable[[], list[dict[str, Any]]]
    alerts: AlertEngine
    clock: Callable[[], float] = time.time
    #: Records the self-metrics that are recorded when asked for (the supervisor's), before a history row.
    refresh: Callable[[], None] = lambda: None


@runtime_checkable
class DashboardContextHook(Protocol):
    def attach(self, ctx: DashboardContext) -> None:
        """Called by the component runtime, on the event loop, before the component's first call."""


class _Builtin(DashboardComponentPlugin):
    name: ClassVar[str]
    kind: ClassVar[str]
    description: ClassVar[str]
    schema: ClassVar[Mapping[str, Any]] = {}
    refresh_seconds: ClassVar[float] = 15.0

    def __init__(self) -> None:
        self.config: Any = self.config_model()
        self.ctx: DashboardContext | None = None

    @property
    def plugin_id(self) -> str:
        return f"monitoring.dashboard.{self.name}"

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(self.plugin_id, self.name, "1.0.0", "monbridge", self.description,
                              PluginType.DASHBOARD_COMPONENT)

    def get_component_definition(self) -> ComponentDefinition:
        return ComponentDefinition(self.plugin_id, getattr(self.config, "title", "") or self.title, self.kind,
                                   self.description, {**self.schema, "refresh_seconds": self.refresh_seconds})

    title: ClassVar[str] = ""

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.config = self.parse_config(config)

    async def shutdown(self) -> None:
        self.ctx = None

    def attach(self, ctx: DashboardContext) -> None:
        self.ctx = ctx

    def _ctx(self) -> DashboardContext:
        if self.ctx is None:
            raise RuntimeError(f"{self.plugin_id}: not attached to a dashboard")
        return self.ctx

    async def handle_event(self, event: ComponentEvent) -> None:
        raise QueryError(f"type: {self.plugin_id} takes no events (got {event.event_type[:100]!r})")


def _str_params(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else repr(v) for k, v in params.items()}


# --------------------------------------------------------------------------- time-series chart


class ChartConfig(PluginConfig):
    title: str = ""
    metric: str = Field("monbridge_plugin_runs_total", description="the series selector shown by default")
    rate: bool = True
    aggregate: str = "none"
    by: list[str] = Field(default_factory=list)
    stacked: bool = False


class TimeSeriesChart(_Builtin):
    name = "timeseries"
    kind = "timeseries"
    title = "Time series"
    description = "a chart of pipeline series from the recent history: match, rate, aggregate, stacked"
    config_model: ClassVar[type[PluginConfig]] = ChartConfig
    schema: ClassVar[Mapping[str, Any]] = {"params": {
        "metric": "series selector", "rate": "true|false", "aggregate": "none|sum|avg|min|max|count",
        "by": "labels, comma-separated", "stacked": "true|false", "from": "Unix s", "to": "Unix s",
        "step": "seconds or duration", "limit": "most series", "encoding": "json|f64"}}

    async def get_data(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx()
        c: ChartConfig = self.config
        merged = {"rate": str(c.rate).lower(), "aggregate": c.aggregate, "by": ",".join(c.by),
                  "stacked": str(c.stacked).lower(), **_str_params(params)}
        q = parse_query(merged, ctx.clock(), ctx.history.resolution, c.metric, ctx.history.default_range)
        out = await asyncio.to_thread(evaluate, ctx.history, q)
        out.update(metric=q.selector.text, rate=q.rate, aggregate=q.aggregate, by=list(q.by))
        return out


# --------------------------------------------------------------------------- status indicators


class Threshold(PluginConfig):
    name: str
    metric: str = Field(description="series selector")
    warn: float
    crit: float
    below: bool = Field(False, description="lower values are worse (warn/crit when at or below)")


class StatusConfig(PluginConfig):
    title: str = ""
    thresholds: list[Threshold] = Field(default_factory=lambda: [
        Threshold(name="sink up", metric="monbridge_plugin_sink_up", warn=0.5, crit=0.5, below=True)])


def _level(value: float, t: Threshold) -> str:
    if value != value:
        return "unknown"
    if t.below:
        return "crit" if value <= t.crit else "warn" if value <= t.warn else "ok"
    return "crit" if value >= t.crit else "warn" if value >= t.warn else "ok"


def current(pipeline: Pipeline, selector: Selector, limit: int = 1000) -> list[tuple[str, dict[str, str], float, str]]:
    """(sample name, labels, value, source) of the numeric series ``selector`` picks now."""
    out = []
    for fam in pipeline.batch().families():
        for p in fam.series:
            view = p.prom
            if not selector.name_matches(view.name):
                break
            labels = dict(view.labels)
            if isinstance(p.value, (int, float)) and selector.matches(view.name, labels):
                out.append((view.name, labels, float(p.value), p.identity.source))
                if len(out) >= limit:
                    return out
    return out


class StatusIndicators(_Builtin):
    name = "status"
    kind = "status"
    title = "Status"
    description = "plugin health, scrape targets' up, and thresholds as ok / warn / crit"
    config_model: ClassVar[type[PluginConfig]] = StatusConfig

    async def get_data(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx()
        items: list[dict[str, Any]] = []
        for st in ctx.statuses():
            state = st["state"]
            level = "ok" if state == "running" and not st.get("consecutive_failures") else (
                "warn" if state in ("running", "initialized", "registered") else "crit")
            items.append({"group": "plugins", "name": st["plugin_id"], "level": level, "state": state,
                          "detail": st.get("last_error") or ""})
        c: StatusConfig = self.config

        def read() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for _name, labels, value, _src in current(ctx.pipeline, parse_selector("up")):
                target = labels.get("instance") or ",".join(f"{k}={v}" for k, v in labels.items())
                out.append({"group": "targets", "name": f"{labels.get('job', '')} {target}".strip(),
                            "level": "ok" if value == 1 else "crit", "value": value, "labels": labels})
            for t in c.thresholds:
                for _name, labels, value, _src in current(ctx.pipeline, parse_selector(t.metric)):
                    out.append({"group": "checks", "name": f"{t.name} " + ",".join(
                        f"{k}={v}" for k, v in labels.items()), "level": _level(value, t), "value": value,
                        "labels": labels})
            return out

        items += await asyncio.to_thread(read)
        counts = {lv: sum(1 for i in items if i["level"] == lv) for lv in ("ok", "warn", "crit", "unknown")}
        return {"items": items, "counts": counts}


# --------------------------------------------------------------------------- topology map


class TopologyConfig(PluginConfig):
    title: str = ""


def _rate(history: History, key_filter: Callable[[Key], bool], now: float) -> float:
    """The summed per-second rate, over the last ``RATE_SPAN_S``, of the counters ``key_filter`` picks."""
    times, slots = history.grid(now - RATE_SPAN_S, now, history.resolution)
    if len(times) < 2:
        return 0.0
    keys = [k for k, kind in history.keys() if kind is MetricKind.COUNTER and key_filter(k)]
    total = 0.0
    for s in history.values(keys, [slots[0], slots[-1]]):
        valid = [(t, v) for t, v in zip((times[0], times[-1]), s.values, strict=True) if v == v]
        if len(valid) == 2 and valid[1][0] > valid[0][0]:
            a, b = valid[0][1], valid[1][1]
            total += (b - a if b >= a else b) / (valid[1][0] - valid[0][0])
    return total


def _picks(name: str, success: bool, **labels: str) -> Callable[[Key], bool]:
    """A filter of the series of ``name`` with ``labels`` whose ``result`` is success (or is not)."""
    def pick(key: Key) -> bool:
        if key[0] != name:
            return False
        d = dict(key[1])
        return all(d.get(k) == v for k, v in labels.items()) and (d.get("result") == "success") == success
    return pick


class TopologyMap(_Builtin):
    name = "topology"
    kind = "topology"
    title = "Data flow"
    description = "sources → monbridge plugins → destinations, with rates and errors per edge"
    config_model: ClassVar[type[PluginConfig]] = TopologyConfig

    async def get_data(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx()
        statuses = ctx.statuses()
        return await asyncio.to_thread(self._build, ctx, statuses)

    def _build(self, ctx: DashboardContext, statuses: list[dict[str, Any]]) -> dict[str, Any]:
        now, h = ctx.clock(), ctx.history
        nodes: list[dict[str, Any]] = [{"id": "pipeline", "kind": "pipeline", "label": "monbridge pipeline",
                                        "state": "ok"}]
        edges: list[dict[str, Any]] = []
        runs = "monbridge_plugin_runs_total"
        for st in statuses:
            pid, ptype = st["plugin_id"], st["type"]
            nodes.append({"id": pid, "kind": ptype, "label": pid, "state": st["state"]})
            if ptype in ("metric_collector", "integration") and st.get("interval_seconds"):
                ok = _rate(h, _picks(runs, True, plugin_id=pid), now)
                err = _rate(h, _picks(runs, False, plugin_id=pid), now)
                edges.append({"from": pid, "to": "pipeline", "rate": ok, "errors": err, "unit": "runs/s"})
            for sink in st.get("sinks", []):
                sid = f"{pid}/{sink['name']}"
                nodes.append({"id": sid, "kind": "destination", "label": sink["name"], "state": sink["state"]})
                ok = _rate(h, _picks(_EXPORTS, True, plugin_id=pid, sink=sink["name"]), now)
                err = _rate(h, _picks(_EXPORTS, False, plugin_id=pid, sink=sink["name"]), now)
                edges.append({"from": "pipeline", "to": sid, "rate": ok, "errors": err, "unit": "exports/s",
                              "last_error": sink.get("last_error") or ""})
        known = {n["id"] for n in nodes}
        for _name, labels, value, source in current(ctx.pipeline, parse_selector("up")):
            tid = f"target:{labels.get('job', '')}/{labels.get('instance', '')}"
            if tid in known:
                continue
            known.add(tid)
            nodes.append({"id": tid, "kind": "source", "label": labels.get("instance") or tid,
                          "state": "ok" if value == 1 else "down", "labels": labels})
            plugin = source.split(":", 1)[0] if source.split(":", 1)[0] in known else "pipeline"
            edges.append({"from": tid, "to": plugin, "rate": None, "errors": 0.0 if value == 1 else 1.0,
                          "unit": "up"})
        return {"nodes": nodes, "edges": edges, "span_seconds": RATE_SPAN_S}


# --------------------------------------------------------------------------- correlation diagram


class CorrelationDiagramConfig(PluginConfig):
    title: str = ""


class CorrelationDiagram(_Builtin):
    name = "correlation"
    kind = "correlation"
    title = "Incidents"
    description = "alerts grouped into incidents by the correlation processor, on a timeline"
    config_model: ClassVar[type[PluginConfig]] = CorrelationDiagramConfig

    def _label(self, engine: AlertEngine) -> str:
        for _pid, p in engine._processors:
            cfg = getattr(p, "config", None)
            if type(p).__name__ == "CorrelationProcessor" and cfg is not None:
                return str(cfg.label)
        return "incident"

    async def get_data(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx()
        w = parse_window(_str_params(params), ctx.clock(), ctx.history.resolution, ctx.history.default_range)
        label = self._label(ctx.alerts)
        incidents: dict[str, dict[str, Any]] = {}
        uncorrelated = 0
        for a in ctx.alerts.store.query(None):
            end = a.ends_at if a.ends_at is not None else math.inf
            if end < w.start or a.starts_at > w.end:
                continue
            inc = a.labels.get(label)
            if inc is None:
                uncorrelated += 1
                continue
            i = incidents.setdefault(inc, {"id": inc, "start": a.starts_at, "end": None, "active": False,
                                           "alerts": []})
            i["start"] = min(i["start"], a.starts_at)
            if a.state is AlertState.RESOLVED:
                i["end"] = max(i["end"] or 0.0, a.ends_at or a.starts_at)
            else:
                i["active"] = True
            if len(i["alerts"]) < MAX_ALERTS:
                i["alerts"].append(alert_to_json(a))
        out = sorted(incidents.values(), key=lambda i: i["start"])
        for i in out:
            if i["active"]:
                i["end"] = None
        return {"label": label, "from": w.start, "to": w.end, "incidents": out[-MAX_ALERTS:],
                "uncorrelated": uncorrelated}


# --------------------------------------------------------------------------- alert view


class AlertViewConfig(PluginConfig):
    title: str = ""
    default_silence_seconds: float = Field(3600.0, gt=0)


class AlertView(_Builtin):
    name = "alerts"
    kind = "alerts"
    title = "Alerts"
    description = "current and past alerts, with ack, resolve and silence"
    config_model: ClassVar[type[PluginConfig]] = AlertViewConfig
    refresh_seconds: ClassVar[float] = 5.0
    schema: ClassVar[Mapping[str, Any]] = {"params": {"state": "active|all|firing|acknowledged|resolved"},
                                           "events": {"ack": {"alert_id": "id"}, "resolve": {"alert_id": "id"},
                                                      "silence": {"alert_id": "id", "duration": "seconds",
                                                                  "comment": "text"}}}

    async def get_data(self, params: Mapping[str, Any]) -> Any:
        engine = self._ctx().alerts
        state = str(params.get("state", "all"))
        if state not in ("active", "all", *(s.value for s in AlertState)):
            raise QueryError("state: expected one of active, all, firing, acknowledged, resolved")
        if state == "active":
            alerts: Sequence[Any] = engine.store.active_alerts()
        else:
            alerts = engine.store.query(None if state == "all" else AlertState(state))
        alerts = sorted(alerts, key=lambda a: (a.state is AlertState.RESOLVED, -a.starts_at, a.id))[:MAX_ALERTS]
        out = []
        for a in alerts:
            d = alert_to_json(a)
            d["muted_by"] = engine.muted(a) if a.state is not AlertState.RESOLVED else None
            out.append(d)
        now = engine.clock()
        return {"alerts": out, "silences": [s.to_json(now) for s in engine.silences.all()]}

    async def handle_event(self, event: ComponentEvent) -> None:
        engine = self._ctx().alerts
        p = event.payload
        alert_id = p.get("alert_id")
        if not isinstance(alert_id, str) or not alert_id:
            raise QueryError("payload.alert_id: expected an alert id")
        who = str(p.get("by") or "dashboard")[:100]
        if event.event_type == "ack":
            engine.acknowledge(alert_id, who)
        elif event.event_type == "resolve":
            engine.resolve(alert_id, who)
        elif event.event_type == "silence":
            alert = engine.store.get(alert_id)
            duration = p.get("duration", self.config.default_silence_seconds)
            matchers = [{"name": "alertname", "value": alert.name, "isRegex": False}] + [
                {"name": k, "value": v, "isRegex": False} for k, v in sorted(alert.labels.items())
                if k != "alertname"]
            s = Silence.from_request({"matchers": matchers[:64], "duration": duration,
                                      "comment": str(p.get("comment") or f"silenced from the dashboard: {alert.name}"),
                                      "createdBy": who}, engine.clock())
            engine.silences.add(s)
        else:
            raise QueryError(f"type: expected ack, resolve or silence, got {event.event_type[:100]!r}")
        await engine.store.flush()


BUILTIN_COMPONENTS: tuple[type[_Builtin], ...] = (TimeSeriesChart, StatusIndicators, TopologyMap,
                                                   CorrelationDiagram, AlertView)
