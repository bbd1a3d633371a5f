"""Small asyncio helpers shared by the runtime and the plugins.

Code we do not control (a plugin) may swallow ``CancelledError``. ``asyncio.timeout`` and
``asyncio.wait_for`` then wait for it forever, since both end only when the cancelled code
does. ``run_bounded`` and ``cancel_and_wait(..., timeout=)`` run it in a task of its own and
stop waiting: what does not end within a grace period after its cancellation is abandoned
(left running, referenced until it ends, reported to the caller), never waited for.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from bridge.delivery import REAL_CLOCK, Backoff, Clock

__all__ = ["CANCEL_GRACE_S", "GC_PAUSE_MIN", "backoff_delay", "cancel_and_wait", "gc_paused", "release_free_memory",
           "run_bounded", "wait_within"]

T = TypeVar("T")
F = TypeVar("F", bound="asyncio.Future[Any]")

#: Seconds a cancelled task is given to end before it is abandoned.
CANCEL_GRACE_S = 0.5

#: The size of a batch from which ``gc_paused`` pauses the cyclic garbage collector. Its young
#: generation is collected every 700 new containers: a block of a thousand items already has it
#: walk each item several times over (at 10k series, a quarter of a scrape's conversion went to
#: the collector when only batches from 10,000 items paused it; benchmarks/README.md).
GC_PAUSE_MIN = 1_000


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_resume = False


@contextmanager
def gc_paused(size: int) -> Iterator[None]:
    """Run a block that allocates a container per item of a batch of ``size`` items without the
    cyclic garbage collector when the batch is large (``GC_PAUSE_MIN``): while such a batch is
    built, the collector would walk every live object again and again as the heap grows (more
    than half of the first scrape of a 100k-series target, and a third of each scrape after it).
    The block must not make reference cycles (they would wait for the next collection), and should
    not leave a container per item alive at its end: the first young collection after it walks every
    container made meanwhile that still lives (at 500k series, a tuple per sample kept from one
    round to the next cost a sixth of the round's CPU; benchmarks/README.md). Pauses
    nest and may overlap across threads: the collector runs again when the last one ends, if it
    ran before the first."""
    global _gc_pausers, _gc_resume
    if size < GC_PAUSE_MIN:
        yield
        return
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_resume:
                gc.enable()


_libc: Any = None


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing). glibc keeps much of what a large batch freed unless asked to trim: the pipeline
    calls this after a record that made many new series, the OTLP exporter after a push (its
    request bodies are megabytes). The call takes a few milliseconds; the library is looked up
    once."""
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc: nothing to do
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


# Abandoned tasks, referenced until they end (the event loop holds tasks only weakly).
_abandoned: set[asyncio.Future[Any]] = set()


def _settle(t: asyncio.Future[Any]) -> None:
    """Mark what an ended task raised as seen: it is its own business, not an unhandled error."""
    if not t.cancelled():
        t.exception()


def _abandon(t: asyncio.Future[Any]) -> None:
    _abandoned.add(t)
    t.add_done_callback(_abandoned.discard)
    t.add_done_callback(_settle)


async def wait_within(fs: Iterable[F], timeout: float | None, clock: Clock = REAL_CLOCK) -> tuple[set[F], set[F]]:
    """``asyncio.wait(fs, timeout=timeout)`` with the timeout on ``clock``: (done, pending)."""
    fs = set(fs)
    try:
        async with clock.timeout(timeout):
            await asyncio.wait(fs)
    except TimeoutError:
        pass
    done = {f for f in fs if f.done()}
    return done, fs - done


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None, timeout: float | None = None,
                          clock: Clock = REAL_CLOCK) -> list[asyncio.Future[Any]]:
    """Cancel ``tasks`` (None ones skipped) and wait until each has ended, or ``timeout`` seconds
    (on ``clock``) at most; return those still running then (abandoned: never waited for again).
    What the tasks raised on the way out is theirs, not the caller's. A cancellation of the caller
    propagates."""
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    if not live:
        return []
    done, pending = await wait_within(live, timeout, clock)
    for t in done:
        _settle(t)
    for t in pending:
        _abandon(t)
    return list(pending)


async def run_bounded(aw: Awaitable[T], timeout: float | None, *, grace: float = CANCEL_GRACE_S,
                      on_abandon: Callable[[], None] | None = None, clock: Clock = REAL_CLOCK) -> T:
    """``await aw`` in a task of its own for at most ``timeout`` seconds (None: no limit); raise
    TimeoutError when it takes longer. The task is then cancelled and given ``grace`` seconds to
    end; if it does not (it swallowed the cancellation), it is abandoned and ``on_abandon`` is
    called. A cancellation of the caller cancels the task the same way and propagates, so the
    caller never waits longer than ``timeout + grace``, whatever ``aw`` does. Both are seconds on
    ``clock``."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await wait_within((task,), timeout, clock)
    except asyncio.CancelledError:
        await _cancel_within(task, grace, on_abandon, clock)
        raise
    if done:
        if task.cancelled():  # by the awaited code itself: only the caller's own cancellation propagates
            raise RuntimeError("the call ended cancelled without being cancelled (it raised CancelledError)")
        return task.result()
    await _cancel_within(task, grace, on_abandon, clock)
    raise TimeoutError


async def _cancel_within(task: asyncio.Future[Any], grace: float, on_abandon: Callable[[], None] | None,
                         clock: Clock) -> None:
    try:
        left = await cancel_and_wait(task, timeout=grace, clock=clock)
    except asyncio.CancelledError:
        left = [] if task.done() else [task]
        if left:
            _abandon(task)
        if left and on_abandon is not None:
            on_abandon()
        raise
    if left and on_abandon is not None:
        on_abandon()


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """The wait before retry number ``attempt`` (1, 2, ...) by ``bridge.delivery.Backoff``:
    ``initial`` doubled each attempt, capped at ``maximum``, with its jitter (20 %) so that many
    retriers do not retry in step."""
    return Backoff(min(initial, maximum), maximum).delay(attempt)
