"""The outbox: notifications on disk until their notifier has delivered them (at least once).

On disk (``<dir>``): pending notifications in *segments*, ``<notifier id>/<ms>-<random>.json``, a
JSON list of the notifications that were queued together (a notification file of an earlier
version, a single object, is read too); and ``delivered.jsonl``, a journal of the keys of
notifications done with (delivered, given up or superseded), a JSON list of keys a line. A
notification is written (one segment per notifier for all those queued meanwhile, atomically,
one fsync) before any attempt to send it; once sent, its key is appended to the journal (one
append and fsync for all those done within ``JOURNAL_LINGER_S``), and a segment whose
notifications are all done is removed after that. So a restart, even after a SIGKILL, sends
what was pending and only that; the journal is rewritten with the last keys it remembers when
it has grown to twice that (segments still holding done notifications are rewritten first, so
none is forgotten). These writes run in worker threads, coalesced
(``bridge.alerting.writebehind``); ``flush`` waits for them. Putting a notification whose key
is already pending or was delivered recently does nothing, and receivers get the key with each
delivery (a header, a Message-ID, a property) to drop a repeat that a crash between "sent" and
"journaled" could cause. Without a directory the outbox lives in memory.

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
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.alerting.notify import DeliveryError, Notification, PermanentDeliveryError
from bridge.alerting.store import write_text_atomic
from bridge.alerting.writebehind import WriteBehind
from bridge.logs import redact_text
from bridge.tasks import backoff_delay, cancel_and_wait

__all__ = ["Outbox", "OutboxEntry", "RetryPolicy"]

log = logging.getLogger("monbridge.alerting.outbox")

_DELIVERED_REMEMBERED = 10_000
JOURNAL = "delivered.jsonl"
#: Seconds the journal's writer waits to gather the keys of notifications done meanwhile.
JOURNAL_LINGER_S = 0.1
_LEGACY_DELIVERED = "delivered.json"
#: Sends in flight at once per notifier (each to a different alert group).
MAX_PARALLEL = 4


@dataclass(frozen=True)
class RetryPolicy:
    initial: float = 0.5
    maximum: float = 60.0
    max_age: float = 86_400.0  # give up on a notification this old (seconds)


@dataclass(eq=False)
class OutboxEntry:
    notification: Notification
    path: Path | None  # its segment (None: in memory, or not written yet)
    attempts: int = 0
    text: str = ""  # its JSON text, as in its segment
    written: bool = False
    done: bool = False


@dataclass(eq=False)
class _Segment:
    entries: list[OutboxEntry]
    live: int


@dataclass
class _Batch:
    """One write: new segments (path, entries), done keys to journal, segments to remove, and
    whether the journal is rewritten (``compact``: the keys to keep; segments to rewrite first)."""

    segments: list[tuple[Path, list[OutboxEntry], list[str]]] = field(default_factory=list)
    new: set[Path] = field(default_factory=set)
    done: list[str] = field(default_factory=list)
    remove: list[Path] = field(default_factory=list)
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


def _segment_text(texts: Iterable[str]) -> list[str]:
    return ["[", ",".join(texts), "]"]


def _encode(note: Notification) -> str:
    return json.dumps(note.to_json(), separators=(",", ":"))


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
        # What the next write takes: notifications not written yet, keys done and not journaled,
        # segments whose notifications are all done; the segments on disk; keys in the journal.
        self._unwritten: list[OutboxEntry] = []
        self._done_keys: list[str] = []
        self._emptied: list[Path] = []
        self._segments: dict[Path, _Segment] = {}
        self._journaled = 0
        # Two writers: the notifications put (at once: sends wait for them), and what is done with
        # (lingering a little: nothing waits for it but a restart's memory of what was sent).
        self._writer: WriteBehind[_Batch] = WriteBehind("alerts:outbox-write", self._take_pending, self._write,
                                                        written=self._written, failed=self._failed)
        self._marks: WriteBehind[_Batch] = WriteBehind("alerts:outbox-journal", self._take_done, self._write,
                                                       linger=JOURNAL_LINGER_S, written=self._written,
                                                       failed=self._failed)
        if directory is not None:
            self._load(directory)

    def _load(self, directory: Path) -> None:
        for name in (_LEGACY_DELIVERED, JOURNAL):
            path = directory / name
            try:
                lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
            except OSError as e:
                log.warning("outbox: cannot read %s: %s", path, e)
                continue
            for i, line in enumerate(lines, 1):
                try:
                    keys = json.loads(line)
                    if not isinstance(keys, list):
                        raise ValueError("not a list of keys")
                except ValueError as e:  # a torn last line: those notifications are sent again
                    log.warning("outbox: %s line %d is unreadable (%s); skipped", path, i, e)
                    continue
                for k in keys:
                    self._remember(str(k))
        loaded: list[tuple[float, int, OutboxEntry]] = []
        for path in sorted(directory.glob("*/*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                notes = [Notification.from_json(d) for d in (doc if isinstance(doc, list) else [doc])]
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("outbox: dropping unreadable %s: %s: %s", path, type(e).__name__, e)
                path.unlink(missing_ok=True)
                continue
            entries = [OutboxEntry(n, path, written=True, done=n.key in self._delivered) for n in notes]
            live = [e for e in entries if not e.done]
            if not live:
                path.unlink(missing_ok=True)
                continue
            for entry in live:
                entry.text = _encode(entry.notification)
            self._segments[path] = _Segment(entries, len(live))
            loaded.extend((x.notification.created_at, len(loaded) + i, x) for i, x in enumerate(live))
        for _, _, entry in sorted(loaded, key=lambda x: x[:2]):
            self._add(entry)
        self._rewrite_on_load(directory)
        if loaded:
            log.info("outbox: %d notifications pending from before the restart (%s)", len(loaded), directory)

    def _rewrite_on_load(self, directory: Path) -> None:
        """Segments holding done notifications keep only the others, and the journal starts afresh
        from the keys remembered (replacing the file of an earlier version)."""
        batch = _Batch(compact=list(self._delivered))
        self._keep_live(batch)
        try:
            if batch.compact or (directory / JOURNAL).exists():
                self._write(batch)
                self._written(batch)
            (directory / _LEGACY_DELIVERED).unlink(missing_ok=True)
        except OSError as e:
            log.error("outbox: cannot rewrite %s: %s", directory, e)

    def _remember(self, key: str) -> None:
        self._delivered[key] = None
        while len(self._delivered) > _DELIVERED_REMEMBERED:
            self._delivered.popitem(last=False)

    # ------------------------------------------------------------------ contents

    def put(self, note: Notification) -> bool:
        """Add ``note``; False when its key is pending or delivered. It is written to disk (off the
        event loop; ``flush`` waits for it) before any attempt to send it."""
        if note.key in self._delivered or any(note.key in q for q in self._pending.values()):
            log.debug("outbox: notification %s to %s already queued or delivered", note.key, note.notifier_id)
            return False
        entry = OutboxEntry(note, None)
        self._add(entry)
        if self.directory is not None:
            entry.text = _encode(note)
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
        note = entry.notification
        self._pending.get(note.notifier_id, OrderedDict()).pop(note.key, None)
        self._lanes.get((note.notifier_id, note.group_key), OrderedDict()).pop(note.key, None)
        entry.done = True
        self._remember(note.key)
        if self.directory is None:
            return
        self._done_keys.append(note.key)
        path = entry.path
        seg = self._segments.get(path) if path is not None else None
        if path is not None and seg is not None:
            seg.live -= 1
            if seg.live == 0:
                del self._segments[path]
                self._emptied.append(path)
        self._marks.soon()

    # ------------------------------------------------------------------ writing

    def _take_pending(self) -> _Batch:
        """The notifications put since the last write, a segment per notifier (on the event loop;
        no serialization here: their text was made when they were put)."""
        assert self.directory is not None
        batch = _Batch()
        by_notifier: dict[str, list[OutboxEntry]] = {}
        for e in self._unwritten:
            if not e.done:
                by_notifier.setdefault(e.notification.notifier_id, []).append(e)
        self._unwritten = []
        stamp = int(time.time() * 1000)
        for nid, entries in by_notifier.items():
            path = self.directory / nid / f"{stamp:013d}-{secrets.token_hex(4)}.json"
            for e in entries:
                e.path = path
            self._segments[path] = _Segment(entries, len(entries))
            batch.segments.append((path, entries, [e.text for e in entries]))
            batch.new.add(path)
        return batch

    def _take_done(self) -> _Batch:
        """The keys of the notifications done with since the last write, and the segments emptied."""
        batch = _Batch(done=self._done_keys, remove=self._emptied)
        self._done_keys, self._emptied = [], []
        if self._journaled + len(batch.done) > 2 * _DELIVERED_REMEMBERED:
            # The journal is rewritten with the keys remembered; segments still holding done
            # notifications (whose keys it may forget) keep only the others first.
            batch.compact = list(self._delivered)
            self._keep_live(batch)
        return batch

    def _keep_live(self, batch: _Batch) -> None:
        """``batch`` rewrites each segment holding done notifications with only the others."""
        for path, seg in self._segments.items():
            if seg.live < len(seg.entries):
                live = [e for e in seg.entries if not e.done]
                batch.segments.append((path, live, [e.text for e in live]))

    def _write(self, batch: _Batch) -> None:
        """In a worker thread: segments, then the journal, then the removals (each durable before the next)."""
        assert self.directory is not None
        for path, _entries, texts in batch.segments:
            write_text_atomic(path, _segment_text(texts))
        journal = self.directory / JOURNAL
        if batch.compact is not None:
            write_text_atomic(journal, [json.dumps(batch.compact, separators=(",", ":")), "\n"])
        elif batch.done:
            append_durably(journal, json.dumps(batch.done, separators=(",", ":")) + "\n")
        for path in batch.remove:
            path.unlink(missing_ok=True)

    def _written(self, batch: _Batch) -> None:
        for path, entries, _texts in batch.segments:
            for e in entries:
                e.written = True
            seg = self._segments.get(path)
            if seg is not None:
                seg.entries = entries
        self._journaled = len(batch.compact) if batch.compact is not None else self._journaled + len(batch.done)

    def _failed(self, batch: _Batch, e: OSError) -> None:
        """Nothing of ``batch`` counts as written: it goes into the next write. New notifications in
        it are sent meanwhile: a full disk must not hold up alerts."""
        log.error("outbox %s: cannot write (%s); trying again with the next change%s", self.directory, e,
                  "; the notifications queued are sent without being on disk" if batch.new else "")
        for path, entries, _texts in batch.segments:
            if path in batch.new:
                self._segments.pop(path, None)
                for entry in entries:
                    entry.path = None
                self._unwritten.extend(x for x in entries if not x.done)
        self._done_keys[:0] = batch.done
        self._emptied[:0] = batch.remove

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
            delay = backoff_delay(entry.attempts, p.initial, p.maximum)
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
