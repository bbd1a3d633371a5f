"""Public plugin API: a sink's durable send queue and the task
that drains it, the same for every sink that queues what it sends (Datadog, Elasticsearch,
Nagios' passive results).

A sink puts records (payload bytes, the items they carry) with ``put``; one task reads them in
order, hands them to the sink's ``send`` and acts on the outcome:

- delivered: acknowledged (the records ``Sent.requeue`` names, items the peer refused for now,
  are queued again first, and the next send waits a backoff);
- retryable: kept queued and sent again after a backoff (a ``Retry-After`` is honoured up to
  ``Backoff.retry_after_max``); the reason is logged once per distinct reason;
- permanent: acknowledged and counted as dropped, under ``Sent.drop_reason``.

Every drop (a torn record at open, a record larger than the whole queue, the oldest segments
past ``max_bytes``, records put after shutdown, what an in-memory queue still holds at shutdown,
a permanent refusal) is counted in the sink's ``loss_counter(component)`` (and so in the loss
ledger) and logged. ``drained`` waits for the queue to empty (a sink's ``force_flush`` and an
export round's wait), and ``close`` drains for half its timeout before it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.api import ExportResult, ExportStatus
from bridge.delivery import REAL_CLOCK, Backoff, Clock, Retries, drained
from bridge.diskqueue import DiskQueue, DropCounts
from bridge.ledger import loss_counter

__all__ = ["QueuedSender", "Sent"]


@dataclass(slots=True)
class Sent:
    """What a send of queued records came to: ``result``; the items delivered (for the sink's
    own counters); on a permanent failure the reason the drop is counted under; on success the
    records to queue again (items the peer refused for now) and how many items they carry."""

    result: ExportResult
    delivered: int = 0
    drop_reason: str = "refused"
    requeue: list[tuple[bytes, int]] = field(default_factory=list)


Send = Callable[[list[bytes], int], Awaitable[Sent]]


class QueuedSender:
    """A sink's queue (a one-shard ``DiskQueue``: on disk under ``path``, or in memory when it is
    None) and its delivery task. ``what`` names the sink in logs ("datadog export"), ``unit`` its
    items ("documents"), ``target`` the peer ("http://…"); ``per_send`` is the most items read for
    one send (at least one record is)."""

    def __init__(self, component: str, what: str, unit: str, target: str, path: Path | None, max_bytes: int,
                 fsync: bool, backoff: Backoff, per_send: int = 1, logger: logging.Logger | None = None,
                 clock: Clock = REAL_CLOCK, dropped: dict[str, int] | None = None) -> None:
        self.component = component
        self.what = what
        self.unit = unit
        self.target = target
        self.path = path
        self.per_send = per_send
        self.log = logger or logging.getLogger("monbridge.delivery")
        self.queue = DiskQueue(path, 1, max_bytes, fsync, on_drop=self._on_drop, label=f"{what} queue")
        self.retries_ = Retries(backoff)
        self.clock = clock
        # A sink made before its sender passes the counter it made then (``loss_counter(component)``).
        self.dropped: dict[str, int] = loss_counter(component) if dropped is None else dropped
        self.delivered = 0
        self.sends = 0
        self.retries = 0
        self.last_error: str | None = None
        self.stopped = False  # closing: nothing more is queued
        self._opened = False
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Items queued and not yet delivered."""
        return self.queue.pending_samples if self._opened else 0

    @property
    def queued_bytes(self) -> int:
        """Bytes of records waiting for delivery."""
        return self.queue.total_bytes if self._opened else 0

    def where(self) -> str:
        return f"on disk at {self.path}" if self.path is not None else "in memory (lost on restart)"

    async def open(self) -> None:
        """Open the queue (torn records of an earlier run are counted as dropped)."""
        torn = await asyncio.to_thread(self.queue.open)
        self._opened = True
        if torn.records:
            self.count_drop(torn.samples, "torn_record")

    def start(self, send: Send, name: str) -> None:
        """Start delivering with ``send`` (called with the records' payloads and their items)."""
        self._task = asyncio.get_running_loop().create_task(self._deliver(send), name=name)

    # ------------------------------------------------------------------ drops

    def count_drop(self, n: int, reason: str, detail: str = "") -> None:
        if n <= 0:
            return
        self.dropped[reason] += n
        self.log.warning("%s: %d %s dropped: %s%s", self.what, n, self.unit, reason, f" ({detail})" if detail else "")

    def _on_drop(self, counts: DropCounts, reason: str) -> None:
        self.count_drop(counts.samples, reason, "the queue's max_bytes" if reason == "max_bytes" else "")

    # ------------------------------------------------------------------ putting

    async def put(self, records: list[tuple[bytes, int]], what: str = "a record") -> None:
        """Queue ``records`` (payload, items) in order; callers' records are queued in the order
        they came. One larger than the whole queue is dropped alone ("too_large", ``what`` says
        what it was). Records put before ``open`` or once closing are dropped and counted
        ("not_open", "stopped"). Raises OSError when the disk refuses them."""
        if not records:
            return
        if self.stopped or not self._opened:
            self.count_drop(sum(n for _, n in records), "stopped" if self.stopped else "not_open",
                            "" if self.stopped else "the queue was not open yet")
            return
        shard = self.queue.shards[0]
        async with self._lock:
            if await asyncio.to_thread(shard.append_many, records) is None:  # together too large: one by one
                for rec in records:
                    if await asyncio.to_thread(shard.append_many, [rec]) is None:
                        self.count_drop(rec[1], "too_large", f"{what} larger than the queue's max_bytes")
        self._wake.set()

    # ------------------------------------------------------------------ delivering

    async def _deliver(self, send: Send) -> None:
        shard = self.queue.shards[0]
        retries = self.retries_
        while True:  # until ``close`` cancels it
            self._wake.clear()  # before reading: a record queued after the read wakes the wait below
            try:
                batch = await asyncio.to_thread(shard.read_batch, self.per_send)
            except OSError as e:
                self.log.warning("%s: cannot read the queue: %s", self.what, e)
                await self.clock.sleep(retries.next())
                continue
            if batch is None:
                self._progress.set()
                await self._wake.wait()
                continue
            self.sends += 1
            sent = await send(list(batch.payloads), batch.samples)
            result = sent.result
            # What a send came to is counted before its records are acknowledged: once they are,
            # the queue is empty to ``drained``, and ``close`` may stop this task at once.
            if result.ok:
                if self.last_error is not None:
                    self.log.info("%s: %s takes %s again", self.what, self.target, self.unit)
                self.last_error = None
                self.delivered += sent.delivered
                if sent.requeue:
                    await asyncio.to_thread(shard.append_many, sent.requeue)
                await asyncio.to_thread(shard.ack, batch)
                self._progress.set()
                if sent.requeue:
                    again = sum(n for _, n in sent.requeue)
                    self.retries += again
                    self.log.warning("%s: %d %s refused for now; retrying", self.what, again, self.unit)
                    await self.clock.sleep(retries.next())
                else:
                    retries.reset()
                continue
            if result.status is ExportStatus.RETRYABLE:
                self.retries += 1
                if self.last_error != result.reason:
                    self.log.warning("%s: %s; %d %s kept queued, retrying", self.what, result.reason,
                                     shard.pending_samples, self.unit)
                self.last_error = result.reason
                self._progress.set()
                await self.clock.sleep(retries.next(result.retry_after))
                continue
            self.count_drop(batch.samples, sent.drop_reason, result.reason)
            self.last_error = None  # the peer answers: what comes next is not held up by this
            retries.reset()
            await asyncio.to_thread(shard.ack, batch)
            self._progress.set()

    async def drained(self, timeout: float, stop_on_failure: bool = True) -> str | None:
        """None once the queue is empty; else why not (``bridge.delivery.drained``)."""
        if not self._opened:
            return None
        return await drained(self.queue, self._progress, lambda: self.last_error, timeout,
                             f"{self.unit} not delivered to {self.target}", stop_on_failure)

    async def close(self, timeout: float | None = None) -> None:
        """Stop: deliver for up to half of ``timeout`` (unless the last send failed), then stop the
        task and close the queue; what an in-memory queue still holds is counted ("shutdown")."""
        if self.stopped:
            return
        self.stopped = True
        if self._task is not None and self.last_error is None and timeout:
            await self.drained(timeout * 0.5, stop_on_failure=True)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._opened:
            if self.path is None and self.queue.pending_samples:
                self.count_drop(self.queue.pending_samples, "shutdown")
            self.queue.close()
