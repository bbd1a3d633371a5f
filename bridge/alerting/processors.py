"""The built-in alert processors (``monitoring.alerts.<name>``), chained in config order.

* ``dedup``: drops a report that repeats the last state seen for its fingerprint.
* ``grouping``: ``group_by``, ``group_wait``, ``group_interval``, ``repeat_interval`` for the
  dispatcher, as Alertmanager's route options mean them.
* ``inhibit``: Alertmanager's inhibition rules: a firing source alert mutes matching targets
  that share the ``equal`` labels.
* ``correlation``: alerts sharing the values of ``labels`` within ``window`` seconds fold into
  one incident, named in the label ``incident`` (group by it to get one notification per incident).
* ``escalation``: an alert still unacknowledged ``after`` seconds goes to the level's notifiers
  (which then get only escalations, no routine notifications).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from bridge.alerting.base import BaseProcessor
from bridge.alerting.dispatch import GroupingSettings
from bridge.alerting.model import AlertSuppressed, Matcher, matches_all, parse_matchers
from bridge.api import Alert, AlertState, PluginConfig, PluginMetadata, PluginType
from bridge.delivery import Timer

if TYPE_CHECKING:
    pass

__all__ = ["CorrelationProcessor", "DedupProcessor", "EscalationProcessor", "GroupingProcessor", "InhibitProcessor"]

log = logging.getLogger("monbridge.alerting.processors")


class _Processor(BaseProcessor):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(f"monitoring.alerts.{self.name}", self.name, "0.1.0", "monbridge", self.description,
                              PluginType.ALERT_PROCESSOR)


# --------------------------------------------------------------------------- dedup


class DedupConfig(PluginConfig):
    window: float = Field(default=0.0, ge=0, description="seconds a repeat is dropped for (0: always)")


class DedupProcessor(_Processor):
    name = "dedup"
    description = "drops reports that repeat the last state of their fingerprint"
    config_model: ClassVar[type[PluginConfig]] = DedupConfig

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, tuple[str, str, float]] = {}  # fingerprint -> (alert id, state, when)

    async def process_alert(self, alert: Alert) -> Alert:
        now = self.timing.time()
        last = self._last.get(alert.fingerprint)
        window = self.config.window if self.config else 0.0
        if last is not None and last[:2] == (alert.id, alert.state.value) and (not window or now - last[2] < window):
            raise AlertSuppressed(f"duplicate of fingerprint {alert.fingerprint} ({alert.state.value})")
        self._last[alert.fingerprint] = (alert.id, alert.state.value, now)
        if alert.state is AlertState.RESOLVED and len(self._last) > 10_000:
            self._last.pop(alert.fingerprint, None)
        return alert


# --------------------------------------------------------------------------- grouping


class GroupingConfig(PluginConfig):
    group_by: list[str] = Field(default_factory=lambda: ["alertname"],
                                description='labels that make a group; ["..."] for all labels')
    group_wait: float = Field(default=30.0, ge=0, description="seconds a new group waits before its first notification")
    group_interval: float = Field(default=300.0, gt=0, description="seconds between notifications about a changed group")
    repeat_interval: float = Field(default=14_400.0, gt=0, description="seconds before an unchanged group is notified again")


class GroupingProcessor(_Processor):
    name = "grouping"
    description = "groups alerts into notifications (group_by, group_wait, group_interval, repeat_interval)"
    config_model: ClassVar[type[PluginConfig]] = GroupingConfig

    def grouping_settings(self) -> GroupingSettings:
        c = self.config or GroupingConfig()
        return GroupingSettings(tuple(c.group_by), c.group_wait, c.group_interval, c.repeat_interval)


# --------------------------------------------------------------------------- inhibition


class InhibitRule(PluginConfig):
    source_match: Any = Field(description="matchers of the alerts that inhibit (mapping or list of matchers)")
    target_match: Any = Field(description="matchers of the alerts that are inhibited")
    equal: list[str] = Field(default_factory=list, description="labels that must be equal in source and target")

    @field_validator("source_match", "target_match")
    @classmethod
    def _matchers(cls, v: Any) -> Any:
        if not parse_matchers(v):
            raise ValueError("expected at least one matcher")
        return v


class InhibitConfig(PluginConfig):
    rules: list[InhibitRule] = Field(min_length=1)


class InhibitProcessor(_Processor):
    name = "inhibit"
    description = "inhibition rules: firing source alerts mute matching target alerts"
    config_model: ClassVar[type[PluginConfig]] = InhibitConfig

    def _rules(self) -> list[tuple[tuple[Matcher, ...], tuple[Matcher, ...], list[str]]]:
        return [(parse_matchers(r.source_match), parse_matchers(r.target_match), r.equal) for r in self.config.rules]

    def muted(self, alert: Alert) -> str | None:
        if self.ctx is None:
            return None
        active = self.ctx.engine.store.active_alerts()
        for source, target, equal in self._rules():
            if not matches_all(target, alert.labels):
                continue
            for s in active:
                if s.fingerprint == alert.fingerprint or not matches_all(source, s.labels):
                    continue
                if all(s.labels.get(k) == alert.labels.get(k) for k in equal):
                    return f"inhibited by alert {s.id} ({s.name})"
        return None


# --------------------------------------------------------------------------- correlation


class CorrelationConfig(PluginConfig):
    labels: list[str] = Field(min_length=1, description="alerts with equal values of these labels correlate")
    window: float = Field(default=300.0, gt=0, description="seconds after an incident's last alert that a new one joins it")
    label: str = Field(default="incident", description="the label naming the incident")


class CorrelationProcessor(_Processor):
    name = "correlation"
    description = "folds alerts sharing labels within a time window into one incident"
    config_model: ClassVar[type[PluginConfig]] = CorrelationConfig

    def __init__(self) -> None:
        super().__init__()
        self._incidents: dict[tuple[str, ...], tuple[str, float]] = {}  # label values -> (incident, last seen)

    async def process_alert(self, alert: Alert) -> Alert:
        c: CorrelationConfig = self.config
        if alert.state is not AlertState.FIRING or c.label in alert.labels:
            return alert
        if not all(k in alert.labels for k in c.labels):
            return alert
        key = tuple(alert.labels[k] for k in c.labels)
        now = alert.starts_at
        current = self._incidents.get(key)
        if current is None or now - current[1] > c.window:
            digest = hashlib.sha256("\x00".join((*key, str(int(now)))).encode()).hexdigest()[:12]
            current = (f"inc-{digest}", now)
        self._incidents[key] = (current[0], max(now, current[1]))
        alert.labels[c.label] = current[0]
        return alert


# --------------------------------------------------------------------------- escalation


class EscalationLevel(PluginConfig):
    after: float = Field(gt=0, description="seconds after firing without acknowledgment")
    notify: list[str] = Field(min_length=1, description="notifier plugin ids to escalate to")

    @field_validator("notify")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        for pid in v:
            if not pid.startswith("monitoring.alerts."):
                raise ValueError(f"{pid!r} is not a notifier id (monitoring.alerts.<name>)")
        return v


class EscalationConfig(PluginConfig):
    levels: list[EscalationLevel] = Field(min_length=1)
    match: Any = Field(default=None, description="only alerts matching these matchers escalate (default: all)")

    @field_validator("match")
    @classmethod
    def _match(cls, v: Any) -> Any:
        parse_matchers(v)
        return v


class EscalationProcessor(_Processor):
    name = "escalation"
    description = "escalates alerts not acknowledged in time to further notifiers"
    config_model: ClassVar[type[PluginConfig]] = EscalationConfig

    def __init__(self) -> None:
        super().__init__()
        self._timers: dict[str, list[Timer]] = {}

    def escalation_notifiers(self) -> list[str]:
        return [pid for level in self.config.levels for pid in level.notify]

    async def process_alert(self, alert: Alert) -> Alert:
        c: EscalationConfig = self.config
        if alert.state is AlertState.FIRING and alert.id not in self._timers and matches_all(parse_matchers(c.match),
                                                                                              alert.labels):
            clock = self.timing
            elapsed = clock.time() - alert.starts_at
            self._timers[alert.id] = [
                clock.call_later(max(0.0, level.after - elapsed), self._escalate, alert.id, i + 1, level.notify)
                for i, level in enumerate(c.levels)
            ]
        return alert

    def _escalate(self, alert_id: str, level: int, notify: list[str]) -> None:
        if self.ctx is None:
            return
        alert = self.ctx.engine.store.alerts.get(alert_id)
        if alert is None or alert.state is not AlertState.FIRING:
            return
        self.ctx.engine.escalate(alert, notify, level)

    def _cancel(self, alert_id: str) -> None:
        for t in self._timers.pop(alert_id, []):
            t.cancel()

    async def handle_acknowledgment(self, alert_id: str) -> None:
        self._cancel(alert_id)

    async def handle_resolution(self, alert_id: str) -> None:
        self._cancel(alert_id)

    async def shutdown(self) -> None:
        for aid in list(self._timers):
            self._cancel(aid)
