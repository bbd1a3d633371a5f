"""The outbox: notifications on disk until their notifier has delivered them (at least once).

Each notification is one JSON file, ``<dir>/<notifier id>/<created>-<key>.json``, written
atomically before any attempt to send it and removed once delivered, so a restart (even a
SIGKILL) sends what was pending. A notification's key is its dedup key: putting one whose key
is already pending or was delivered recently does nothing, and receivers get the key with each
delivery (a header, a Message-ID, a property) to drop a repeat that a crash between "sent"
and "removed" could cause. Without a directory the outbox lives in memory.

One delivery task per notifier sends its notifications in order, retrying failures with
exponential backoff and jitter (honouring ``Retry-After``), for up to ``max_age`` seconds.
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


class Outbox:
    def __init__(self, directory: Path | None, policy: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self._pending: dict[str, OrderedDict[str, OutboxEntry]] = {}
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.delivered_total = 0
        self.failed_total = 0
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
            self._pending.setdefault(note.notifier_id, OrderedDict())[note.key] = OutboxEntry(note, path)
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
        self._pending.setdefault(note.notifier_id, OrderedDict())[note.key] = OutboxEntry(note, path)
        ev = self._wake.get(note.notifier_id)
        if ev is not None:
            ev.set()
        return True

    def pending(self, notifier_id: str | None = None) -> list[Notification]:
        queues = [self._pending.get(notifier_id, OrderedDict())] if notifier_id else list(self._pending.values())
        return [e.notification for q in queues for e in q.values()]

    def notifier_ids(self) -> list[str]:
        return sorted(self._pending)

    def _done(self, entry: OutboxEntry) -> None:
        note = entry.notification
        self._pending.get(note.notifier_id, OrderedDict()).pop(note.key, None)
        self._delivered[note.key] = None
        while len(self._delivered) > _DELIVERED_REMEMBERED:
            self._delivered.popitem(last=False)
        if self.directory is not None:
            write_json_atomic(self.directory / "delivered.json", list(self._delivered))
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ delivery

    def start(self, notifier_id: str, send: Sender, outcome: Outcome) -> None:
        """Run the delivery task of ``notifier_id`` (once; later calls replace ``send``)."""
        task = self._tasks.get(notifier_id)
        if task is not None and not task.done():
            task.cancel()
        self._wake[notifier_id] = asyncio.Event()
        self._tasks[notifier_id] = asyncio.create_task(self._deliver(notifier_id, send, outcome),
                                                       name=f"outbox:{notifier_id}")

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(*tasks)

    async def _deliver(self, notifier_id: str, send: Sender, outcome: Outcome) -> None:
        wake = self._wake[notifier_id]
        p = self.policy
        while True:
            queue = self._pending.get(notifier_id)
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            entry = next(iter(queue.values()))
            note = entry.notification
            try:
                await send(note)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure is retried or reported, never raised
                entry.attempts += 1
                why = redact_text(f"{type(e).__name__}: {e}")
                age = self.clock() - note.created_at
                if isinstance(e, PermanentDeliveryError) or age > p.max_age:
                    reason = "refused" if isinstance(e, PermanentDeliveryError) else f"still failing after {age:.0f}s"
                    log.error("notification %s to %s dropped (%s): %s", note.key, notifier_id, reason, why)
                    self.failed_total += 1
                    self._done(entry)
                    outcome(note, "failed", why)
                    continue
                delay = min(p.initial * 2 ** (entry.attempts - 1), p.maximum) * random.uniform(0.8, 1.2)
                if isinstance(e, DeliveryError) and e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, p.maximum))
                log.warning("notification %s to %s failed (attempt %d), retrying in %.1fs: %s",
                            note.key, notifier_id, entry.attempts, delay, why)
                await asyncio.sleep(delay)  # a new notification does not cut the backoff short
                continue
            self.delivered_total += 1
            self._done(entry)
            log.info("notification %s delivered to %s (%s, %d alerts, attempt %d)", note.key, notifier_id,
                     note.status, len(note.alerts), entry.attempts + 1)
            outcome(note, "delivered", None)
