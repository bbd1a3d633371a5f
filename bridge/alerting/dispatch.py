"""Routing and grouping of alerts into notifications, as Alertmanager's dispatcher does.

Every notifier is a route: its ``match`` matchers pick the alerts it gets (no matchers: all).
Within a route, alerts with the same values of ``group_by`` labels form an aggregation group
(``group_by: ["..."]`` groups by all labels). A new group waits ``group_wait`` before its first
notification, then is looked at every ``group_interval``; a notification goes out when the
group holds a firing alert that was not in the last one, when alerts resolved (with
``send_resolved``), or when ``repeat_interval`` has passed since the last one, as in
Alertmanager's notification log. Acknowledged alerts do not cause repeats. Muted alerts
(silenced or inhibited, asked at flush time) are left out.

The notification log (``nflog.json`` in the state directory) survives a restart, so alerts
that were already notified are not notified again. Each entry's JSON text is made when it
changes; the file is written whole from those texts in a worker thread, coalescing the changes
made meanwhile (``bridge.alerting.writebehind``, lingering ``NFLOG_LINGER_S`` to gather them),
and each write first waits for ``durable`` (the outbox's write of the notifications put so
far), so the log on disk never records a notification the outbox could lose. Groups that fall
due together (a storm of new ones) are flushed ``FLUSH_SLICE`` at a time between turns of the
event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.alerting.model import Matcher, copy_alert, format_labels, matches_all
from bridge.alerting.notify import Notification
from bridge.alerting.store import write_text_atomic
from bridge.alerting.writebehind import WriteBehind
from bridge.api import Alert, AlertState, GroupingSettings
from bridge.delivery import REAL_CLOCK, Clock, Timer

__all__ = ["Dispatcher", "GroupingSettings", "Route"]

log = logging.getLogger("monbridge.alerting.dispatch")

ALL_LABELS = "..."
#: Seconds the notification log's writer waits to gather the changes made meanwhile (each write
#: is the whole log; a notification it is late to record is only sent again, under the same key,
#: after a crash).
NFLOG_LINGER_S = 0.1
#: Groups flushed between two turns of the event loop when many are due at once.
FLUSH_SLICE = 50


@dataclass(frozen=True)
class Route:
    notifier_id: str
    matchers: tuple[Matcher, ...] = ()
    send_resolved: bool = True

    @property
    def key(self) -> str:
        return "{}" + (f"/{{{','.join(str(m) for m in self.matchers)}}}" if self.matchers else "")


@dataclass
class _NflogEntry:
    firing: set[str]
    resolved: set[str]
    at: float
    count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"firing": sorted(self.firing), "resolved": sorted(self.resolved), "at": self.at, "count": self.count}


@dataclass
class _Group:
    route: Route
    key: str
    labels: dict[str, str]
    alerts: dict[str, Alert] = field(default_factory=dict)  # by fingerprint
    created: float = 0.0
    has_flushed: bool = False
    timer: Timer | None = None


Muted = Callable[[Alert], str | None]
Enqueue = Callable[[Notification], None]


class Dispatcher:
    def __init__(self, enqueue: Enqueue, muted: Muted, nflog_path: Path | None = None,
                 clock: Clock = REAL_CLOCK, external_url: str = "",
                 durable: Callable[[], Awaitable[None]] | None = None) -> None:
        self.enqueue = enqueue
        self.muted = muted
        self.timing = clock  # the groups' timers (group_wait, group_interval)
        self.clock: Callable[[], float] = clock.time
        self.external_url = external_url
        self.settings = GroupingSettings()
        self.routes: list[Route] = []
        self.groups: dict[tuple[str, str], _Group] = {}
        self.nflog_path = nflog_path
        self._due: deque[tuple[str, str]] = deque()  # groups whose timer fired, to flush in order
        self._flusher: asyncio.Task[None] | None = None
        self.nflog: dict[str, _NflogEntry] = {}
        self._nflog_text: dict[str, str] = {}  # each entry's text in the file, '"key":{...}'
        self._nflog_writer = WriteBehind("alerts:nflog-write", self._nflog_contents, self._write_nflog,
                                         before=durable, linger=NFLOG_LINGER_S)
        if nflog_path is not None and nflog_path.exists():
            try:
                for k, v in json.loads(nflog_path.read_text()).items():
                    self.nflog[k] = _NflogEntry(set(v["firing"]), set(v["resolved"]), float(v["at"]), int(v["count"]))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("notification log %s is unreadable (%s); starting empty", nflog_path, e)
                self.nflog.clear()
            for k in self.nflog:
                self._nflog_changed(k)

    def configure(self, routes: Sequence[Route], settings: GroupingSettings) -> None:
        self.routes = list(routes)
        self.settings = settings
        known = {r.notifier_id for r in routes}
        for gk in [gk for gk in self.groups if gk[0] not in known]:
            self._drop(gk)

    def stop(self) -> None:
        for g in self.groups.values():
            if g.timer is not None:
                g.timer.cancel()
        self.groups.clear()
        self._due.clear()
        if self._flusher is not None:
            self._flusher.cancel()

    def _drop(self, gk: tuple[str, str]) -> None:
        g = self.groups.pop(gk, None)
        if g is not None and g.timer is not None:
            g.timer.cancel()

    def group_labels(self, labels: dict[str, str]) -> dict[str, str]:
        by = self.settings.group_by
        if ALL_LABELS in by:
            return dict(labels)
        return {k: labels[k] for k in by if k in labels}

    # ------------------------------------------------------------------ input

    def insert(self, alert: Alert) -> None:
        """Put (or update) ``alert`` in the group of every route that matches it."""
        for route in self.routes:
            if not matches_all(route.matchers, alert.labels):
                continue
            labels = self.group_labels(alert.labels)
            key = f"{route.key}:{format_labels(labels)}"
            gk = (route.notifier_id, key)
            g = self.groups.get(gk)
            if g is None:
                if alert.state is AlertState.RESOLVED and self._nflog_key(route, key) not in self.nflog:
                    continue  # resolved before anyone heard of it
                g = self.groups[gk] = _Group(route, key, labels, created=self.clock())
                g.timer = self.timing.call_later(self.settings.group_wait, self._due_now, gk)
            g.alerts[alert.fingerprint] = alert
            # Alertmanager: an alert older than group_wait flushes a group that has not flushed yet at once.
            if not g.has_flushed and alert.starts_at + self.settings.group_wait <= self.clock():
                self._reschedule(gk, 0.0)

    def _reschedule(self, gk: tuple[str, str], delay: float) -> None:
        g = self.groups[gk]
        if g.timer is not None:
            g.timer.cancel()
        g.timer = self.timing.call_later(delay, self._due_now, gk)

    def _nflog_key(self, route: Route, group_key: str) -> str:
        return f"{route.notifier_id}|{group_key}"

    # ------------------------------------------------------------------ flushing

    def _due_now(self, gk: tuple[str, str]) -> None:
        """A group's timer fired: flush it soon, ``FLUSH_SLICE`` groups at a time (a storm of new
        groups, due together, is flushed between turns of the event loop)."""
        self._due.append(gk)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_due(), name="alerts:flush")

    async def _flush_due(self) -> None:
        while self._due:
            for _ in range(min(FLUSH_SLICE, len(self._due))):
                self._flush(self._due.popleft())
            await asyncio.sleep(0)

    def _flush(self, gk: tuple[str, str]) -> None:
        g = self.groups.get(gk)
        if g is None:
            return
        g.has_flushed = True
        try:
            self.flush_group(g)
        except Exception:  # noqa: BLE001 - one group's failure must not stop the others
            log.exception("alert group %s for %s: flush failed", g.key, g.route.notifier_id)
        # Resolved alerts that were considered leave the group; an empty group ends.
        for fp in [fp for fp, a in g.alerts.items() if a.state is AlertState.RESOLVED]:
            del g.alerts[fp]
        if not g.alerts:
            self._drop(gk)
            return
        self._reschedule(gk, self.settings.group_interval)

    def flush_group(self, g: _Group) -> Notification | None:
        now = self.clock()
        alerts = [a for a in g.alerts.values() if self.muted(a) is None]
        firing = {a.fingerprint for a in alerts if a.state is not AlertState.RESOLVED}
        resolved = {a.fingerprint for a in alerts if a.state is AlertState.RESOLVED}
        unacked = {a.fingerprint for a in alerts if a.state is AlertState.FIRING}
        nkey = self._nflog_key(g.route, g.key)
        entry = self.nflog.get(nkey)
        if not self._needs_update(entry, firing, resolved, unacked, g.route.send_resolved, now):
            return None
        count = (entry.count + 1) if entry else 1
        self.nflog[nkey] = _NflogEntry(firing, resolved, now, count)
        self._nflog_changed(nkey)
        if not firing and not g.route.send_resolved:
            self._nflog_soon()
            return None
        sent = [a for a in alerts if g.route.send_resolved or a.state is not AlertState.RESOLVED]
        note = Notification(
            notifier_id=g.route.notifier_id, key=notification_key(nkey, count, firing, resolved),
            group_key=g.key, group_labels=dict(g.labels), alerts=[copy_alert(a) for a in sent],
            external_url=self.external_url, created_at=now,
        )
        # The outbox first (the log's write waits for the outbox's): a crash between the two sends
        # the notification again under the same key (the count on disk did not advance), which the
        # outbox and receivers recognise.
        self.enqueue(note)
        self._nflog_soon()
        return note

    def _needs_update(self, entry: _NflogEntry | None, firing: set[str], resolved: set[str], unacked: set[str],
                      send_resolved: bool, now: float) -> bool:
        """Alertmanager's DedupStage.needsUpdate, with acknowledged alerts not repeated."""
        if entry is None:
            return bool(firing)
        if not firing <= entry.firing:
            return True
        if not firing:
            return bool(entry.firing)
        if send_resolved and not resolved <= entry.resolved:
            return True
        return bool(unacked) and entry.at + self.settings.repeat_interval <= now

    def _nflog_soon(self) -> None:
        if self.nflog_path is not None:  # a log in memory only is not written
            self._nflog_writer.soon()

    def _nflog_changed(self, key: str) -> None:
        if self.nflog_path is not None:
            self._nflog_text[key] = f"{json.dumps(key)}:{json.dumps(self.nflog[key].to_json(), separators=(',', ':'))}"

    def _nflog_contents(self) -> list[str]:
        return ["{", ",".join(self._nflog_text.values()), "}"]

    def _write_nflog(self, parts: list[str]) -> None:
        if self.nflog_path is not None:
            write_text_atomic(self.nflog_path, parts)

    async def flush(self) -> None:
        """Wait until the notification log on disk has every change made so far."""
        await self._nflog_writer.flush()

    def direct(self, notifier_id: str, alerts: Sequence[Alert], group_key: str, level: int | None = None) -> Notification:
        """A notification outside grouping (an escalation): ``alerts`` to one notifier now."""
        labels = self.group_labels(alerts[0].labels) if alerts else {}
        fps = {a.fingerprint for a in alerts}
        note = Notification(notifier_id=notifier_id, key=notification_key(f"{notifier_id}|{group_key}", 1, fps, set()),
                            group_key=group_key, group_labels=labels, alerts=[copy_alert(a) for a in alerts],
                            external_url=self.external_url, created_at=self.clock(), escalation_level=level)
        self.enqueue(note)
        return note


def notification_key(nflog_key: str, count: int, firing: set[str], resolved: set[str]) -> str:
    h = hashlib.sha256(f"{nflog_key}|{count}|{','.join(sorted(firing))}|{','.join(sorted(resolved))}".encode())
    return h.hexdigest()[:32]

