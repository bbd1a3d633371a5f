"""Coalesced writes in a worker thread, for state that changes on the event loop.

``WriteBehind.soon`` (called after a change) has a task take the state (``take``, on the loop,
meant to be cheap: text made as things changed) and write it (``write``, in a worker thread);
every change made while a write is under way goes into one next write, so a burst of changes
costs a few writes, not one per change. With ``linger`` the task waits that long before taking
what to write, so that changes trickling in are written together too (for writes that
nothing waits for). ``before`` (optional, awaited after taking and before
writing) lets a write wait for another one it must not overtake on disk. ``written`` is told,
on the loop, what was written; ``failed`` what could not be (and why). ``flush`` waits until
every change made so far is written. Without a running event loop ``soon`` writes at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["WriteBehind"]

T = TypeVar("T")

log = logging.getLogger("monbridge.alerting")


def _nothing(_batch: object) -> None:
    return None


class WriteBehind(Generic[T]):
    def __init__(self, name: str, take: Callable[[], T], write: Callable[[T], None], *,
                 before: Callable[[], Awaitable[None]] | None = None, linger: float = 0.0,
                 written: Callable[[T], None] = _nothing,
                 failed: Callable[[T, OSError], None] | None = None) -> None:
        self.name = name
        self._take = take
        self._write = write
        self._before = before
        self._linger = linger
        self._written = written
        self._failed = failed
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # one write at a time, whichever thread asks

    def _write_locked(self, batch: T) -> None:
        with self._lock:
            self._write(batch)

    def _fail(self, batch: T, e: OSError) -> None:
        if self._failed is not None:
            self._failed(batch, e)
        else:
            log.error("%s: cannot write (%s); retrying with the next change", self.name, e)

    def now(self) -> None:
        """Write at once, in the calling thread."""
        self._dirty = False
        batch = self._take()
        try:
            self._write_locked(batch)
        except OSError as e:
            self._fail(batch, e)
            return
        self._written(batch)

    def soon(self) -> None:
        """Write in a worker thread, together with every other change made until that write begins."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.now()
            return
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while self._dirty:
            if self._linger:
                await asyncio.sleep(self._linger)
            self._dirty = False
            batch = self._take()
            if self._before is not None:
                await self._before()
            try:
                await asyncio.to_thread(self._write_locked, batch)
            except OSError as e:
                self._fail(batch, e)
                return
            self._written(batch)

    async def flush(self) -> None:
        """Wait until every change made so far is written (or its write failed)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)
