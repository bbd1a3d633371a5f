"""``monitoring.alerts.rules``: threshold rules on the pipeline's metrics, a source of alerts.

Every ``evaluation_interval`` seconds each rule reads the current series of its metric (by OTel
name), keeps those whose attributes equal ``match``, aggregates their values (avg, max, min or
sum) and compares the result with ``threshold``. A breach that lasts ``for`` seconds fires the
alert (labels: ``alertname``, ``severity``, ``labels``); the first evaluation without the breach
resolves it. An alert restored from before a restart is not resolved for want of its metric
until the metric has been reported since the start, or ``RESTORED_GRACE_S`` have passed: the
rules first run before the collectors' first values are in, and no data yet is not the end of
a breach. Annotations are templates: ``{{ host.name }}`` is replaced by that attribute of the
matched series (when they all share it), of the rule's labels, or of the resource, and
``{{ value }}`` by the aggregated value.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from bridge.alerting.model import fingerprint
from bridge.api import Alert, AlertProcessorPlugin, AlertState, HistogramValue, PluginConfig, PluginMetadata, PluginType
from bridge.delivery import REAL_CLOCK, Clock
from bridge.tasks import cancel_and_wait

if TYPE_CHECKING:
    from bridge.alerting.engine import AlertContext

RESTORED_GRACE_S = 15.0

__all__ = ["PLUGIN_ID", "Rule", "RulesConfig", "RulesSource", "render_template"]

PLUGIN_ID = "monitoring.alerts.rules"

log = logging.getLogger("monbridge.alerting.rules")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
_AGG: dict[str, Callable[[list[float]], float]] = {
    "avg": lambda v: sum(v) / len(v), "max": max, "min": min, "sum": sum,
}
_TEMPLATE = re.compile(r"\{\{\s*\.?([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")


def render_template(text: str, values: Mapping[str, Any]) -> str:
    """``{{ name }}`` (or ``{{ .name }}``) replaced by ``values[name]``; unknown names become ``<no value>``
    (Go templates' text for a missing key)."""
    return _TEMPLATE.sub(lambda m: _fmt(values.get(m.group(1), "<no value>")), text)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class Rule(PluginConfig):
    name: str = Field(min_length=1, description="alert name (the alertname label)")
    metric: str = Field(min_length=1, description="OTel metric name, e.g. system.cpu.utilization")
    match: dict[str, str | int | float | bool] = Field(default_factory=dict,
                                                       description="attributes a series must have (equality)")
    aggregate: Literal["avg", "max", "min", "sum"] = "avg"
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float
    for_: float = Field(default=0.0, ge=0, alias="for", description="seconds the breach must last before firing")
    severity: str = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if k in ("alertname",):
                raise ValueError("alertname is the rule's name; it cannot be set in labels")
        return v


class RulesConfig(PluginConfig):
    evaluation_interval: float = Field(default=15.0, gt=0, description="seconds between evaluations")
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique(cls, v: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for r in v:
            if r.name in seen:
                raise ValueError(f"rule name {r.name!r} is used twice")
            seen.add(r.name)
        return v


class RulesSource(AlertProcessorPlugin):
    """Evaluates threshold rules on the metric pipeline and fires and resolves their alerts."""

    config_model: ClassVar[type[PluginConfig]] = RulesConfig

    def __init__(self) -> None:
        self.config = RulesConfig()
        self.ctx: AlertContext | None = None
        self._pending: dict[str, float] = {}  # rule name -> when its breach began
        self._firing: dict[str, str] = {}  # rule name -> alert id
        self._cleared: set[str] = set()  # rules whose alert was resolved by hand while the breach went on
        self._restored: set[str] = set()  # rules with a restored alert whose metric was not reported since
        self._restored_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self.evaluations = 0
        self._clock: Callable[[], float] | None = None

    @property
    def timing(self) -> Clock:
        """The engine's clock (its time, the evaluations' schedule), else the real one."""
        return self.ctx.engine.timing if self.ctx is not None else REAL_CLOCK

    @property
    def clock(self) -> Callable[[], float]:
        """The time rules are evaluated at: ``timing``'s, unless set."""
        return self._clock or self.timing.time

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN_ID, "Alert rules", "0.1.0", "monbridge",
                              "threshold rules on pipeline metrics", PluginType.ALERT_PROCESSOR)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.config = self.parse_config(config)

    def attach(self, ctx: AlertContext) -> None:
        self.ctx = ctx
        # Alerts this source fired before a restart are still its own (found by fingerprint).
        for rule in self.config.rules:
            active = ctx.engine.store.by_fingerprint(fingerprint(self._labels(rule)))
            if active is not None:
                self._firing[rule.name] = active.id
                self._restored.add(rule.name)
        self._restored_until = self.clock() + RESTORED_GRACE_S
        self._task = asyncio.create_task(self._loop(), name=f"{PLUGIN_ID}:evaluate")

    async def _loop(self) -> None:
        timing = self.timing
        interval = self.config.evaluation_interval
        next_at = timing.monotonic()
        while True:
            try:
                self.evaluate()
            except Exception:  # noqa: BLE001 - one bad evaluation must not end the loop
                log.exception("rule evaluation failed")
            next_at += interval
            await timing.sleep(max(0.0, next_at - timing.monotonic()))

    def evaluate(self) -> None:
        """One evaluation of every rule."""
        assert self.ctx is not None
        self.evaluations += 1
        now = self.clock()
        for rule in self.config.rules:
            value, attrs = self._value(rule)
            if value is not None:
                self._restored.discard(rule.name)
            elif rule.name in self._restored and now < self._restored_until:
                continue  # restored, and its metric not reported yet since the start
            breached = value is not None and _OPS[rule.op](value, rule.threshold)
            if breached and rule.name in self._cleared:
                continue  # resolved by hand: only a new breach fires again
            if breached:
                since = self._pending.setdefault(rule.name, now)
                if now - since >= rule.for_ and rule.name not in self._firing:
                    self._fire(rule, value, attrs, since)
                elif rule.name in self._firing:
                    current = self.ctx.engine.store.alerts.get(self._firing[rule.name])
                    if current is not None:
                        current.value = value
            else:
                self._cleared.discard(rule.name)
                self._pending.pop(rule.name, None)
                alert_id = self._firing.pop(rule.name, None)
                if alert_id is not None:
                    alert = self.ctx.engine.store.alerts.get(alert_id)
                    if alert is not None and alert.state is not AlertState.RESOLVED:
                        self.ctx.engine.resolve(alert_id, PLUGIN_ID)

    def _value(self, rule: Rule) -> tuple[float | None, dict[str, Any]]:
        assert self.ctx is not None
        pipeline = self.ctx.pipeline
        fam = pipeline.family(rule.metric) if pipeline is not None else None
        if fam is None:
            return None, {}
        values: list[float] = []
        common: dict[str, Any] | None = None
        for s in list(fam.series.values()):
            if any(s.attributes.get(k) != v and str(s.attributes.get(k)) != str(v) for k, v in rule.match.items()):
                continue
            raw: Any = s.value
            if isinstance(raw, HistogramValue):  # a histogram's value for a rule: its mean
                if not raw.count:
                    continue
                raw = raw.sum / raw.count
            if not isinstance(raw, (int, float)):
                continue  # no single number (a summary): not comparable with a threshold
            values.append(float(raw))
            common = dict(s.attributes) if common is None else {k: x for k, x in common.items()
                                                                 if s.attributes.get(k) == x}
        if not values:
            return None, {}
        return _AGG[rule.aggregate](values), common or {}

    @staticmethod
    def _labels(rule: Rule) -> dict[str, str]:
        return {**{k: str(v) for k, v in rule.match.items()}, **rule.labels, "severity": rule.severity,
                "alertname": rule.name}

    def _fire(self, rule: Rule, value: float | None, attrs: dict[str, Any], since: float) -> None:
        assert self.ctx is not None
        labels = self._labels(rule)
        context: dict[str, Any] = {str(k): v for k, v in self.ctx.resource.attributes.items()}
        context.update(attrs)
        context.update(labels)
        context["value"] = value
        context["threshold"] = rule.threshold
        annotations = {k: render_template(v, context) for k, v in rule.annotations.items()}
        alert = Alert(id="", name=rule.name, severity=rule.severity, labels=labels, annotations=annotations,
                      value=value, starts_at=since)
        stored = self.ctx.engine.fire(alert, PLUGIN_ID)
        self._firing[rule.name] = stored.id

    async def process_alert(self, alert: Alert) -> Alert:
        return alert

    async def handle_acknowledgment(self, alert_id: str) -> None:
        return None

    async def handle_resolution(self, alert_id: str) -> None:
        # Resolved elsewhere (the API): the breach must end before the rule fires again.
        for name, aid in list(self._firing.items()):
            if aid == alert_id:
                del self._firing[name]
                self._cleared.add(name)

    async def shutdown(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
