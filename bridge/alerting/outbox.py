"""The outbox: notifications on disk until their notifier has delivered them (at least once).

On disk (``<dir>``): pending notifications in ``queue/``, the durable queue every network sink
uses (``bridge.delivery.DiskQueue``: CRC-checked records in segments, bounded by ``max_bytes``,
recovered after a torn write), a record per notification (its JSON); and ``delivered.jsonl``, a
journal of the keys of notifications done with (delivered, given up or superseded), a JSON list
of keys a line. Notifications are appended to the queue (all those queued meanwhile in one
write and one fsync) before any attempt to send them; once sent, their keys are appended to the
journal (one append and fsync for all those done within ``JOURNAL_LINGER_S``), and then the
queue's ack position moves past the longest prefix of notifications done with, so the queue
frees their segments. So a restart, even after a SIGKILL, sends what was pending and only that:
the notifications past the ack position whose keys are not in the journal. The journal is
rewritten with the last keys it remembers when it has grown to twice that; notifications still
pending before the last one done are appended to the queue again first and the ack position
moved past the last one done, so no key the queue still holds is forgotten. These writes run in
worker threads, coalesced (``bridge.alerting.writebehind``); ``flush`` waits for them. Putting a
notification whose key is already pending or was delivered recently does nothing, and receivers
get the key with each delivery (a header, a Message-ID, a property) to drop a repeat that a crash
between "sent" and "journaled" could cause. When the queue reaches ``max_bytes`` it drops its
oldest segment: the notifications in it that are still pending are dropped (counted in
``dropped_total``, logged, reported as failed). Without a directory the outbox lives in memory.

An earlier version's files (``<notifier id>/*.json`` segments, ``delivered.json``) are taken over
at start: their pending notifications are appended to the queue and the files removed.

Order is kept where it matters, within an alert group: each (notifier, group) is a lane that
sends its notifications one after the other, retrying failures with ``bridge.delivery``'s
backoff (``RetryPolicy`` is a ``Backoff``; honouring ``Retry-After``), for up to ``max_age``
seconds. Lanes are independent (up to ``MAX_PARALLEL`` sends at once per notifier), so a
notification that keeps failing (its group's receiver gone, say, or left over from an earlier run)
holds up nothing but its own group; and there only until a newer notification of the group is
queued: that one carries the group's current state, so the failing one is dropped as *superseded*
(counted and logged), as Alertmanager's next flush of a group replaces a notification still being
retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import tempfile
from bisect import insort
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.alerting.notify import DeliveryError, Notification, PermanentDeliveryError
from bridge.alerting.store import write_text_atomic
from bridge.alerting.writebehind import WriteBehind
from bridge.delivery import REAL_CLOCK, Backoff, Clock, DiskQueue, DropCounts, Position
from bridge.ledger import count_loss
from bridge.logs import redact_text
from bridge.tasks import cancel_and_wait

__all__ = ["Outbox", "OutboxEntry", "RetryPolicy", "read_outbox"]

log = logging.getLogger("monbridge.alerting.outbox")

_DELIVERED_REMEMBERED = 10_000
JOURNAL = "delivered.jsonl"
QUEUE = "queue"
#: Seconds the journal's writer waits to gather the keys of notifications done meanwhile.
JOURNAL_LINGER_S = 0.1
_LEGACY_DELIVERED = "delivered.json"
#: Sends in flight at once per notifier (each to a different alert group).
MAX_PARALLEL = 4
#: Bound on the outbox's queue on disk (bytes).
MAX_BYTES = 64 << 20
_READ_RECORDS = 1024


@dataclass(frozen=True, slots=True)
class RetryPolicy(Backoff):
    """``bridge.delivery.Backoff`` with the outbox's defaults (a ``Retry-After`` is honoured up to
    a minute), and ``max_age``: give up on a notification this old (seconds)."""

    retry_after_max: float = 60.0
    max_age: float = 86_400.0


@dataclass(eq=False)
class OutboxEntry:
    notification: Notification
    end: Position | None = None  # where its record ends in the queue (None: in memory, or not written yet)
    attempts: int = 0
    payload: bytes = b""  # its JSON, as in its record
    written: bool = False
    done: bool = False


@dataclass
class _Batch:
    """One write: records to append to the queue (``entries``, new or appended again), keys
    done with to journal, where the queue's ack position moves to, and whether the journal is
    rewritten (``compact``: the keys to keep). ``ends`` is filled in by the write."""

    entries: list[OutboxEntry] = field(default_factory=list)
    new: bool = False
    ends: list[Position | None] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    ack: Position | None = None
    popped: list[tuple[Position, OutboxEntry | None]] = field(default_factory=list)  # taken off ``_order`` for ``ack``
    compact: list[str] | None = None


Sender = Callable[[Notification], Awaitable[None]]
Outcome = Callable[[Notification, str, str | None], None]
Lane = tuple[str, str]  # (notifier id, group key)


def append_durably(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` and fsync it."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _encode(note: Notification) -> bytes:
    return json.dumps(note.to_json(), separators=(",", ":")).encode()


def _queue(directory: Path, on_drop: Callable[[DropCounts, str], None] | None = None,
           max_bytes: int = MAX_BYTES) -> DiskQueue:
    return DiskQueue(directory / QUEUE, 1, max_bytes, fsync=True, on_drop=on_drop, label="alert outbox")


def _records(queue: DiskQueue) -> list[tuple[bytes, Position]]:
    """Every record past the queue's ack position, with where it ends (bounded: the queue is)."""
    out: list[tuple[bytes, Position]] = []
    shard = queue.shards[0]
    start: Position | None = None
    while (batch := shard.read_batch(_READ_RECORDS, start)) is not None:
        out.extend(zip(batch.payloads, batch.ends(), strict=True))
        start = batch.end
    return out


def _decode(payload: bytes) -> Notification:
    """The notification of a queue record; ValueError when it is not one this outbox wrote."""
    try:
        note = Notification.from_json(json.loads(payload))
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None
    if not all(isinstance(v, str) for v in (note.notifier_id, note.key, note.group_key)):
        raise ValueError("its notifier, key and group must be strings")
    if isinstance(note.created_at, bool) or not isinstance(note.created_at, (int, float)) \
            or not math.isfinite(note.created_at):
        raise ValueError(f"created_at is not a time: {note.created_at!r}")
    return note


def _done_with(entry: OutboxEntry | None) -> bool:
    return entry is None or entry.done


def _journal_keys(directory: Path) -> list[str]:
    keys: list[str] = []
    for name in (_LEGACY_DELIVERED, JOURNAL):
        path = directory / name
        try:
            lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        except OSError as e:
            log.warning("outbox: cannot read %s: %s", path, e)
            continue
        for i, line in enumerate(lines, 1):
            try:
                doc = json.loads(line)
                if not isinstance(doc, list):
                    raise ValueError("not a list of keys")
            except ValueError as e:  # a torn last line: those notifications are sent again
                log.warning("outbox: %s line %d is unreadable (%s); skipped", path, i, e)
                continue
            keys.extend(str(k) for k in doc)
    return keys


def read_outbox(directory: Path) -> list[Notification]:
    """The notifications pending in the outbox at ``directory`` as a restart would find them,
    read without changing anything there (from a copy of the queue): to inspect an outbox."""
    done = set(_journal_keys(directory))
    out: list[Notification] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted((directory / QUEUE).glob("shard-*/*")):
            (Path(tmp) / QUEUE / path.parent.name).mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(path, Path(tmp) / QUEUE / path.parent.name / path.name)
            except FileNotFoundError:
                pass  # delivered and deleted meanwhile
        queue = _queue(Path(tmp), max_bytes=1 << 62)
        queue.open()
        for payload, _end in _records(queue):
            try:
                note = _decode(payload)
            except ValueError:
                continue  # dropped (and logged) by the outbox when it loads
            if note.key not in done:
                done.add(note.key)
                out.append(note)
        queue.close()
    return out


class Outbox:
    def __init__(self, directory: Path | None, policy: RetryPolicy | None = None,
                 clock: Clock = REAL_CLOCK, max_bytes: int = MAX_BYTES) -> None:
        self.directory = directory
        self.policy = policy or RetryPolicy()
        self.timing = clock  # the retries' waits
        self.clock: Callable[[], float] = clock.time  # notifications' ages
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
        self.dropped_total = 0  # pending notifications the queue dropped (max_bytes, a damaged file)
        # What the next write takes: notifications not written yet, keys done and not journaled.
        # ``_order``: the records past the queue's ack position, in queue order, with their entry
        # (None: a record done with that is not an entry: unreadable, or a repeat of a key).
        self._unwritten: list[OutboxEntry] = []
        self._done_keys: list[str] = []
        self._order: list[tuple[Position, OutboxEntry | None]] = []
        self._journaled = 0
        self._queue: DiskQueue | None = None
        self._queue_error: OSError | None = None
        # Two writers: the notifications put (at once: sends wait for them), and what is done with
        # (lingering a little: nothing waits for it but a restart's memory of what was sent).
        self._writer: WriteBehind[_Batch] = WriteBehind("alerts:outbox-write", self._take_pending, self._write,
                                                        written=self._written, failed=self._failed)
        self._marks: WriteBehind[_Batch] = WriteBehind("alerts:outbox-journal", self._take_done, self._write,
                                                       linger=JOURNAL_LINGER_S, written=self._written,
                                                       failed=self._failed)
        if directory is not None:
            self._queue = _queue(directory, self._on_queue_drop, max_bytes)
            self._load(directory)

    def _load(self, directory: Path) -> None:
        for k in _journal_keys(directory):
            self._remember(k)
        assert self._queue is not None
        try:
            self._queue.open()
        except OSError as e:
            self._queue_error = e
            log.error("outbox: cannot open its queue at %s (%s); notifications are sent without being on disk",
                      directory / QUEUE, e)
        seen: set[str] = set()
        loaded: list[OutboxEntry] = []
        for payload, end in _records(self._queue) if self._queue_error is None else []:
            try:
                note = _decode(payload)
            except ValueError as e:
                self.dropped_total += 1
                count_loss("notification", "unreadable")
                log.error("outbox %s: dropping an unreadable notification (record ending at %s): %s",
                          directory / QUEUE, end, str(e))
                self._order.append((end, None))
                continue
            if note.key in self._delivered or note.key in seen:
                self._order.append((end, None))
                continue
            seen.add(note.key)
            entry = OutboxEntry(note, end, payload=payload, written=True)
            self._order.append((end, entry))
            loaded.append(entry)
        loaded.extend(self._take_over(directory, seen))
        for entry in sorted(loaded, key=lambda e: e.notification.created_at):  # stable: queue order within a time
            self._add(entry)
        self._rewrite_on_load(directory)
        if loaded:
            log.info("outbox: %d notifications pending from before the restart (%s)", len(loaded), directory)

    def _take_over(self, directory: Path, seen: set[str]) -> list[OutboxEntry]:
        """An earlier version's segments (``<notifier id>/*.json``): their pending notifications
        are appended to the queue, and the files removed once they are."""
        paths = sorted(directory.glob("*/*.json"))
        entries: list[OutboxEntry] = []
        for path in paths:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                notes = [Notification.from_json(d) for d in (doc if isinstance(doc, list) else [doc])]
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("outbox: dropping unreadable %s: %s: %s", path, type(e).__name__, e)
                path.unlink(missing_ok=True)
                continue
            for n in notes:
                if n.key not in self._delivered and n.key not in seen:
                    seen.add(n.key)
                    entries.append(OutboxEntry(n, payload=_encode(n)))
        if not paths:
            return entries
        batch = _Batch(entries=entries, new=True)
        try:
            self._write(batch)
        except OSError as e:
            self._failed(batch, e)
            return entries
        self._written(batch)
        for path in paths:
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()
            except OSError:
                pass  # not empty (yet)
        return entries

    def _rewrite_on_load(self, directory: Path) -> None:
        """Notifications done with go from the queue (those pending before them are appended
        again), and the journal starts afresh from the keys remembered (replacing the file of an
        earlier version)."""
        batch = self._take_done(compact=True)
        try:
            if batch.compact or batch.ack is not None or (directory / JOURNAL).exists():
                self._write(batch)
                self._written(batch)
            (directory / _LEGACY_DELIVERED).unlink(missing_ok=True)
        except OSError as e:
            log.error("outbox: cannot rewrite %s: %s", directory, e)

    def _remember(self, key: str) -> None:
        self._delivered[key] = None
        while len(self._delivered) > _DELIVERED_REMEMBERED:
            self._delivered.popitem(last=False)

    def _on_queue_drop(self, counts: DropCounts, reason: str) -> None:
        """The queue dropped records (in a worker thread): logged here, counted per notification
        (and reported) on the loop once the write is done (``_reconcile``)."""
        log.error("outbox %s: the queue dropped %d notifications not yet done with (%d bytes): %s",
                  self.directory, counts.samples, counts.bytes,
                  "it reached max_bytes" if reason == "max_bytes" else reason)

    # ------------------------------------------------------------------ contents

    def put(self, note: Notification) -> bool:
        """Add ``note``; False when its key is pending or delivered. It is written to disk (off the
        event loop; ``flush`` waits for it) before any attempt to send it."""
        if note.key in self._delivered or any(note.key in q for q in self._pending.values()):
            log.debug("outbox: notification %s to %s already queued or delivered", note.key, note.notifier_id)
            return False
        entry = OutboxEntry(note)
        self._add(entry)
        if self.directory is not None:
            entry.payload = _encode(note)
            self._unwritten.append(entry)
            self._writer.soon()
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
        if entry.done:
            return
        note = entry.notification
        self._pending.get(note.notifier_id, OrderedDict()).pop(note.key, None)
        self._lanes.get((note.notifier_id, note.group_key), OrderedDict()).pop(note.key, None)
        entry.done = True
        self._remember(note.key)
        if self.directory is None:
            return
        self._done_keys.append(note.key)
        self._marks.soon()

    def _reconcile(self) -> None:
        """Records before the queue's ack position still in ``_order`` were dropped by the queue
        (for room, or a damaged file): their notifications are dropped, counted and reported."""
        if self._queue is None or not self._queue.shards:
            return
        ack = self._queue.shards[0].ack_pos
        while self._order and self._order[0][0] <= ack:
            _end, entry = self._order.pop(0)
            if entry is None or entry.done:
                continue
            note = entry.notification
            why = "dropped from the outbox's queue on disk (it reached its max_bytes, or its file was damaged)"
            log.error("notification %s to %s dropped: %s", note.key, note.notifier_id, why)
            self.dropped_total += 1
            count_loss("notification", "queue_full", plugin=note.notifier_id)
            self._done(entry)
            sender = self._senders.get(note.notifier_id)
            if sender is not None:
                sender[1](note, "failed", why)

    # ------------------------------------------------------------------ writing

    def _take_pending(self) -> _Batch:
        """The notifications put since the last write (on the event loop; no serialization here:
        their JSON was made when they were put)."""
        entries = [e for e in self._unwritten if not e.done]
        self._unwritten = []
        return _Batch(entries=entries, new=True)

    def _take_done(self, compact: bool = False) -> _Batch:
        """The keys of the notifications done with since the last write, and the queue's new ack
        position: past the longest prefix done with. When the journal is to be rewritten with the
        keys remembered (it has grown to twice that), the notifications still pending before the
        last one done are appended to the queue again, so that the ack position moves past every
        notification done with, and the journal need not remember them."""
        batch = _Batch(done=self._done_keys)
        self._done_keys = []
        compact = compact or self._journaled + len(batch.done) > 2 * _DELIVERED_REMEMBERED
        order = self._order
        n = 0
        while n < len(order) and _done_with(order[n][1]):
            n += 1
        if compact:
            last = max((i + 1 for i, (_, e) in enumerate(order) if _done_with(e)), default=0)
            if last > n:
                batch.entries = [e for _, e in order[:last] if e is not None and not e.done]
                n = last
            batch.compact = list(self._delivered)
        if n:
            batch.ack = order[n - 1][0]
            batch.popped = order[:n]
            del order[:n]
        return batch

    def _write(self, batch: _Batch) -> None:
        """In a worker thread: the records, then the journal, then the ack position (each durable
        before the next)."""
        assert self.directory is not None and self._queue is not None
        if batch.entries:
            if not self._queue.shards:
                raise OSError(f"the queue could not be opened ({self._queue_error})")
            shard = self._queue.shards[0]
            ends: list[Position | None] = list(shard.append_many([(e.payload, 1) for e in batch.entries]) or [])
            if not ends:  # together larger than the bound: one by one, a too large one not on disk
                ends = []
                for e in batch.entries:
                    one = shard.append_many([(e.payload, 1)])
                    if one is None:
                        log.error("outbox: notification %s (%d bytes) exceeds the queue's max_bytes; it is sent "
                                  "without being on disk", e.notification.key, len(e.payload))
                    ends.append(one[0] if one else None)
            batch.ends = ends
        journal = self.directory / JOURNAL
        if batch.compact is not None:
            write_text_atomic(journal, [json.dumps(batch.compact, separators=(",", ":")), "\n"])
        elif batch.done:
            append_durably(journal, json.dumps(batch.done, separators=(",", ":")) + "\n")
        if batch.ack is not None:
            self._queue.shards[0].ack_to(batch.ack)

    def _written(self, batch: _Batch) -> None:
        for e, end in zip(batch.entries, batch.ends, strict=True):
            e.written = True
            if end is not None:
                e.end = end
                insort(self._order, (end, e), key=lambda x: x[0])
        self._journaled = len(batch.compact) if batch.compact is not None else self._journaled + len(batch.done)
        self._reconcile()
        if any(e.done for e in batch.entries):
            self._marks.soon()  # done with while being written: the ack position can move past it

    def _failed(self, batch: _Batch, e: OSError) -> None:
        """Nothing of ``batch`` counts as written: it goes into the next write. New notifications in
        it are sent meanwhile: a full disk must not hold up alerts."""
        log.error("outbox %s: cannot write (%s); trying again with the next change%s", self.directory, e,
                  "; the notifications queued are sent without being on disk" if batch.new else "")
        if batch.new:
            self._unwritten.extend(x for x in batch.entries if not x.done)
        self._order[:0] = batch.popped
        self._done_keys[:0] = batch.done

    async def flush_pending(self) -> None:
        """Wait until every notification put so far is on disk."""
        await self._writer.flush()

    async def flush(self) -> None:
        """Wait until every change made so far is on disk."""
        await self._writer.flush()
        await self._marks.flush()

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
        """Stop sending; what was delivered so far is journaled before this returns."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(*tasks)
        await self.flush()
        if self._queue is not None:
            self._queue.close()  # its files; a later write opens a new segment

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
                if self.directory is not None and not entry.written:
                    # On disk before it is sent, so a crash cannot lose it once sent (waited for
                    # with a slot: a storm's lanes wake one by one, not all at once).
                    await self._writer.flush()
                try:
                    await send(note)
                    error = None
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - any failure is retried or reported, never raised
                    error = e
            if entry.done:
                continue  # dropped by the queue while in flight: reported then
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
                count_loss("notification", "refused" if isinstance(error, PermanentDeliveryError) else "max_age",
                           plugin=notifier_id)
                self._done(entry)
                outcome(note, "failed", why)
                continue
            delay = p.delay(entry.attempts, error.retry_after if isinstance(error, DeliveryError) else None)
            log.warning("notification %s to %s failed (attempt %d), retrying in %.1fs: %s",
                        note.key, notifier_id, entry.attempts, delay, why)
            if len(queue) > 1:
                continue  # a newer notification of the group came meanwhile: it supersedes this one
            # Only a newer notification of this group (which supersedes this one) cuts the backoff short.
            wake.clear()
            try:
                async with self.timing.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                pass
