"""The alert store: current alerts by id and fingerprint, and the history of their transitions.

An alert moves firing → acknowledged → resolved (firing → resolved directly too). A firing or
acknowledged alert is *active*: a new report with the same fingerprint updates it (value,
annotations) without a transition. After resolution the same breach is a new alert with a new
id. With a state directory the store is kept in ``alerts.json``, so a restart keeps ids, states
and history.

Writing: each alert's and each transition's JSON text is made once, when it changes (so a
write costs no serialization of unchanged alerts); ``save_soon`` (what the engine calls after
a change) writes the whole file atomically in a worker thread, off the event loop, coalescing
every change made while a write is under way into the next one; ``flush`` waits for that write.
``save`` writes at once. Labels and annotations that processors change on a stored alert are
written with that alert's next change.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.alerting.model import alert_from_json, alert_to_json, fingerprint
from bridge.alerting.writebehind import WriteBehind
from bridge.api import Alert, AlertState

__all__ = ["AlertStore", "IllegalAlertTransition", "Transition", "UnknownAlert", "write_json_atomic"]

log = logging.getLogger("monbridge.alerting.store")

_ALLOWED = {
    AlertState.FIRING: {AlertState.ACKNOWLEDGED, AlertState.RESOLVED},
    AlertState.ACKNOWLEDGED: {AlertState.RESOLVED},
    AlertState.RESOLVED: set(),
}


class UnknownAlert(LookupError):
    pass


class IllegalAlertTransition(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Transition:
    """One entry of the history: ``alert_id`` went from ``from_state`` (None when it was created) to ``to_state``."""

    alert_id: str
    fingerprint: str
    name: str
    from_state: AlertState | None
    to_state: AlertState
    at: float
    by: str

    def to_json(self) -> dict[str, Any]:
        return {"alert_id": self.alert_id, "fingerprint": self.fingerprint, "name": self.name,
                "from": self.from_state.value if self.from_state else None, "to": self.to_state.value,
                "at": self.at, "by": self.by}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Transition:
        return cls(d["alert_id"], d["fingerprint"], d["name"], AlertState(d["from"]) if d.get("from") else None,
                   AlertState(d["to"]), float(d["at"]), d.get("by", ""))


def write_text_atomic(path: Path, parts: Iterable[str]) -> None:
    """Write ``parts`` to ``path`` so a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(parts)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _encode(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to ``path`` atomically (``write_text_atomic``)."""
    write_text_atomic(path, [_encode(doc)])


def new_alert_id() -> str:
    """Time-ordered and unique: milliseconds since the epoch in hex, then 32 random bits."""
    return f"{int(time.time() * 1000):011x}{secrets.token_hex(4)}"


class AlertStore:
    """Alerts by id, active alerts by fingerprint, and a bounded history of transitions."""

    def __init__(self, path: Path | None = None, max_resolved: int = 1000, max_history: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.max_resolved = max_resolved
        self.alerts: dict[str, Alert] = {}
        self.active: dict[str, str] = {}  # fingerprint -> id of the firing or acknowledged alert
        self.history: deque[Transition] = deque(maxlen=max_history)
        # The JSON text of each alert (by id) and of each transition, as written to the file.
        self._text: dict[str, str] = {}
        self._history_text: deque[str] = deque(maxlen=max_history)
        self._behind = WriteBehind(f"alert store {path}", self._contents, self._write)
        self._write_lock = threading.Lock()
        self._taken = self._written = 0  # generations of the contents: taken, and on disk
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
            for a in doc.get("alerts", []):
                alert = alert_from_json(a)
                self.alerts[alert.id] = alert
                if alert.state is not AlertState.RESOLVED:
                    self.active[alert.fingerprint] = alert.id
            self.history.extend(Transition.from_json(t) for t in doc.get("history", []))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("alert store %s is unreadable (%s: %s); starting empty", path, type(e).__name__, e)
            self.alerts.clear()
            self.active.clear()
            self.history.clear()
            return
        for alert in self.alerts.values():
            self._changed(alert)
        self._history_text.extend(_encode(t.to_json()) for t in self.history)
        log.info("alert store: %d alerts (%d active) restored from %s", len(self.alerts), len(self.active), path)

    def _changed(self, alert: Alert) -> None:
        self._text[alert.id] = _encode(alert_to_json(alert))

    def _contents(self) -> tuple[int, list[str]]:
        """The file's text in parts (cheap: the parts are made as things change), and its generation."""
        alerts, history = list(self._text.values()), list(self._history_text)
        self._taken += 1
        return self._taken, ['{"alerts":[', ",".join(alerts), '],"history":[', ",".join(history), "]}"]

    def _write(self, contents: tuple[int, list[str]]) -> None:
        assert self.path is not None
        generation, parts = contents
        with self._write_lock:
            if generation > self._written:  # never older contents over newer ones
                write_text_atomic(self.path, parts)
                self._written = generation

    def save(self) -> None:
        """Write the store now (in the calling thread)."""
        if self.path is None:
            return
        self._write(self._contents())

    def save_soon(self) -> None:
        """Write the store in a worker thread; changes made meanwhile go into one next write.
        Without a running event loop this is ``save``."""
        if self.path is not None:
            self._behind.soon()

    async def flush(self) -> None:
        """Wait until every change made so far is written (by ``save_soon``'s writer)."""
        await self._behind.flush()

    # ------------------------------------------------------------------ reading

    def get(self, alert_id: str) -> Alert:
        try:
            return self.alerts[alert_id]
        except KeyError:
            raise UnknownAlert(f"no alert with id {alert_id!r}") from None

    def by_fingerprint(self, fp: str) -> Alert | None:
        aid = self.active.get(fp)
        return self.alerts.get(aid) if aid else None

    def query(self, state: AlertState | None = None) -> list[Alert]:
        return sorted((a for a in self.alerts.values() if state is None or a.state is state),
                      key=lambda a: (a.starts_at, a.id))

    def active_alerts(self) -> list[Alert]:
        return [self.alerts[i] for i in self.active.values()]

    def transitions(self, alert_id: str | None = None, limit: int | None = None) -> list[Transition]:
        out = [t for t in self.history if alert_id is None or t.alert_id == alert_id]
        return out[-limit:] if limit else out

    # ------------------------------------------------------------------ changing

    def fire(self, alert: Alert, by: str) -> tuple[Alert, bool]:
        """Record a firing report: returns (the stored alert, True when it is a new alert)."""
        alert.labels.setdefault("alertname", alert.name)
        if alert.severity:
            alert.labels.setdefault("severity", alert.severity)
        alert.fingerprint = alert.fingerprint or fingerprint(alert.labels)
        current = self.by_fingerprint(alert.fingerprint)
        if current is not None:
            current.value = alert.value
            current.annotations.update(alert.annotations)
            self._changed(current)
            return current, False
        alert.id = alert.id or new_alert_id()
        while alert.id in self.alerts:
            alert.id = new_alert_id()
        alert.state = AlertState.FIRING
        alert.ends_at = None
        self.alerts[alert.id] = alert
        self.active[alert.fingerprint] = alert.id
        self._record(alert, None, AlertState.FIRING, by)
        return alert, True

    def transition(self, alert_id: str, to: AlertState, by: str, at: float | None = None) -> Alert:
        alert = self.get(alert_id)
        if to not in _ALLOWED[alert.state]:
            raise IllegalAlertTransition(f"alert {alert_id} is {alert.state.value}; it cannot become {to.value}")
        frm = alert.state
        alert.state = to
        if to is AlertState.RESOLVED:
            alert.ends_at = at if at is not None else self.clock()
            self.active.pop(alert.fingerprint, None)
        self._record(alert, frm, to, by)
        return alert

    def _record(self, alert: Alert, frm: AlertState | None, to: AlertState, by: str) -> None:
        t = Transition(alert.id, alert.fingerprint, alert.name, frm, to, self.clock(), by)
        self.history.append(t)
        self._history_text.append(_encode(t.to_json()))
        self._changed(alert)

    def trim(self) -> None:
        """Forget the longest-resolved alerts beyond ``max_resolved`` (a scan only when over it)."""
        if len(self.alerts) - len(self.active) <= self.max_resolved:  # the resolved ones
            return
        resolved = [a for a in self.alerts.values() if a.state is AlertState.RESOLVED]
        resolved.sort(key=lambda a: a.ends_at or 0)
        for a in resolved[: len(resolved) - self.max_resolved]:
            del self.alerts[a.id]
            self._text.pop(a.id, None)
