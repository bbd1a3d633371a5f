"""The outbox: notifications on disk until their notifier has delivered them (at least once).

Each notification is one JSON file, ``<dir>/<notifier id>/<created>-<key>.json``, written
atomically before any attempt to send it and removed once delivered, so a restart (even a
SIGKILL) sends what was pending. A notification's key is its dedup key: putting one whose key
is already pending or was delivered recently does nothing, and receivers get the key with each
delivery (a header, a Message-ID, a property) to drop a repeat that a crash between "sent"
and "removed" could cause. Without a directory the outbox lives in memory.

Order is kept where it matters, within an alert group: each (notifier, group) is a lane that
sends its notifications one after the other, retrying failures with exponential backoff and
jitter (honouring ``Retry-After``), for up to ``max_age`` seconds. Lanes are independent (up to
``MAX_PARALLEL`` sends at once per notifier), so a notification that keeps failing (its group's
receiver gone, say, or left over from an earlier run) holds up nothing but its own group; and
there only until a newer notification of the group is queued: that one carries the group's
current state, so the failing one is dropped as *superseded* (counted and logged), as
Alertmanager's next flush of a group replaces a notification still being retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.alerting.notify import DeliveryError, Notification, PermanentDeliveryError
from bridge.alerting.store import write_json_atomic
from bridge.logs import redact_text
from bridge.tasks import cancel_and_wait

__all__ = ["Outbox", "OutboxEntry", "RetryPolicy"]

log = logging.getLogger("monbridge.alerting.outbox")

_DELIVERED_REMEMBERED = 10_000
#: Sends in flight at once per notifier (each to a different alert group).
MAX_PARALLEL = 4


@dataclass(frozen=True)
class RetryPolicy:
    initial: float = 0.5
    maximum: float = 60.0
    max_age: float = 86_400.0  # give up on a notification this old (seconds)


@dataclass
class OutboxEntry:
    notification: Notification
    path: Path | None
    attempts: int = 0


Sender = Callable[[Notification], Awaitable[None]]
Outcome = Callable[[Notification, str, str | None], None]
Lane = tuple[str, str]  # (notifier id, group key)


class Outbox:
    def __init__(self, directory: Path | None, policy: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self._pending: dict[str, OrderedDict[str, OutboxEntry]] = {}
        self._lanes: dict[Lane, OrderedDict[str, OutboxEntry]] = {}
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._senders: dict[str, tuple[Sender, Outcome]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._wake: dict[Lane, asyncio.Event] = {}
        self._tasks: dict[Lane, asyncio.Task[None]] = {}
        self.delivered_total = 0
        self.failed_total = 0
        self.superseded_total = 0
        if directory is not None:
            self._load(directory)

    def _load(self, directory: Path) -> None:
        delivered = directory / "delivered.json"
        if delivered.exists():
            try:
                for k in json.loads(delivered.read_text()):
                    self._delivered[str(k)] = None
            except (OSError, ValueError) as e:
                log.warning("outbox: cannot read %s: %s", delivered, e)
        n = 0
        for path in sorted(directory.glob("*/*.json")):
            try:
                note = Notification.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("outbox: dropping unreadable %s: %s: %s", path, type(e).__name__, e)
                path.unlink(missing_ok=True)
                continue
            self._add(OutboxEntry(note, path))
            n += 1
        if n:
            log.info("outbox: %d notifications pending from before the restart (%s)", n, directory)

    # ------------------------------------------------------------------ contents

    def put(self, note: Notification) -> bool:
        """Add ``note`` (persisted before this returns); False when its key is pending or delivered."""
        if note.key in self._delivered or any(note.key in q for q in self._pending.values()):
            log.debug("outbox: notification %s to %s already queued or delivered", note.key, note.notifier_id)
            return False
        path = None
        if self.directory is not None:
            path = self.directory / note.notifier_id / f"{int(note.created_at * 1000):013d}-{note.key}.json"
            write_json_atomic(path, note.to_json())
        self._add(OutboxEntry(note, path))
        self._kick((note.notifier_id, note.group_key))
        return True

    def _add(self, entry: OutboxEntry) -> None:
        note = entry.notification
        self._pending.setdefault(note.notifier_id, OrderedDict())[note.key] = entry
        self._lanes.setdefault((note.notifier_id, note.group_key), OrderedDict())[note.key] = entry

    def pending(self, notifier_id: str | None = None) -> list[Notification]:
        queues = [self._pending.get(notifier_id, OrderedDict())] if notifier_id else list(self._pending.values())
        return [e.notification for q in queues for e in q.values()]

    def notifier_ids(self) -> list[str]:
        return sorted(self._pending)

    def _done(self, entry: OutboxEntry) -> None:
        note = entry.notification
        self._pending.get(note.notifier_id, OrderedDict()).pop(note.key, None)
        self._lanes.get((note.notifier_id, note.group_key), OrderedDict()).pop(note.key, None)
        self._delivered[note.key] = None
        while len(self._delivered) > _DELIVERED_REMEMBERED:
            self._delivered.popitem(last=False)
        if self.directory is not None:
            write_json_atomic(self.directory / "delivered.json", list(self._delivered))
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ delivery

    def start(self, notifier_id: str, send: Sender, outcome: Outcome) -> None:
        """Deliver the notifications of ``notifier_id`` with ``send`` (later calls replace ``send``)."""
        self._senders[notifier_id] = (send, outcome)
        self._slots.setdefault(notifier_id, asyncio.Semaphore(MAX_PARALLEL))
        for lane in [lane for lane in self._lanes if lane[0] == notifier_id]:
            self._kick(lane)

    def _kick(self, lane: Lane) -> None:
        """Run ``lane``'s task if its notifier is started, or wake it (a newer notification)."""
        if lane[0] not in self._senders:
            return
        task = self._tasks.get(lane)
        if task is None or task.done():
            self._wake[lane] = asyncio.Event()
            self._tasks[lane] = asyncio.create_task(self._deliver(lane), name=f"outbox:{lane[0]}")
        else:
            self._wake[lane].set()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(*tasks)

    def _supersede(self, entry: OutboxEntry, newer: Notification) -> None:
        note = entry.notification
        why = f"superseded by notification {newer.key} of the same group after {entry.attempts} failed attempts"
        log.warning("notification %s to %s dropped: %s", note.key, note.notifier_id, why)
        self.superseded_total += 1
        self._done(entry)
        self._senders[note.notifier_id][1](note, "superseded", why)

    async def _deliver(self, lane: Lane) -> None:
        notifier_id = lane[0]
        wake = self._wake[lane]
        p = self.policy
        while True:
            queue = self._lanes.get(lane)
            if not queue:
                self._lanes.pop(lane, None)
                self._tasks.pop(lane, None)
                self._wake.pop(lane, None)
                return
            entries = iter(queue.values())
            entry = next(entries)
            note = entry.notification
            if entry.attempts and len(queue) > 1:
                self._supersede(entry, next(entries).notification)
                continue
            send, outcome = self._senders[notifier_id]
            async with self._slots[notifier_id]:
                try:
                    await send(note)
                    error = None
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - any failure is retried or reported, never raised
                    error = e
            if error is None:
                self.delivered_total += 1
                self._done(entry)
                log.info("notification %s delivered to %s (%s, %d alerts, attempt %d)", note.key, notifier_id,
                         note.status, len(note.alerts), entry.attempts + 1)
                outcome(note, "delivered", None)
                continue
            entry.attempts += 1
            why = redact_text(f"{type(error).__name__}: {error}")
            age = self.clock() - note.created_at
            if isinstance(error, PermanentDeliveryError) or age > p.max_age:
                reason = "refused" if isinstance(error, PermanentDeliveryError) else f"still failing after {age:.0f}s"
                log.error("notification %s to %s dropped (%s): %s", note.key, notifier_id, reason, why)
                self.failed_total += 1
                self._done(entry)
                outcome(note, "failed", why)
                continue
            delay = min(p.initial * 2 ** (entry.attempts - 1), p.maximum) * random.uniform(0.8, 1.2)
            if isinstance(error, DeliveryError) and error.retry_after is not None:
                delay = max(delay, min(error.retry_after, p.maximum))
            log.warning("notification %s to %s failed (attempt %d), retrying in %.1fs: %s",
                        note.key, notifier_id, entry.attempts, delay, why)
            if len(queue) > 1:
                continue  # a newer notification of the group came meanwhile: it supersedes this one
            # Only a newer notification of this group (which supersedes this one) cuts the backoff short.
            wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                pass
