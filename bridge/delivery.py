"""Public plugin API: delivery to a peer over the network, the same for every sink: how long to wait before a retry
(``Backoff``), what a ``Retry-After`` header asks for (``retry_after_seconds``), whether an
answer or an error is worth retrying (``classify_status``, ``classify_error``), and the durable
queue that holds what is not delivered yet (``DiskQueue``, from ``bridge.diskqueue``). A sink
that queues what it sends drains its queue with ``bridge.queued.QueuedSender``.

Remote write, the alert outbox (its notifiers' HTTP client) and the supervisor's restarts use
these; a plugin that sends over the network should too.

The time. What waits or times something takes a ``Clock`` (``REAL_CLOCK`` by default): its
``time``/``monotonic``, ``sleep``, timers (``call_later``) and deadlines (``timeout``,
``wait_for``). Remote write, the supervisor and the alerting engine (its dispatcher, outbox and
processors) do; a test passes a ``ManualClock``, whose time moves only by ``advance``, and
asserts the waits and gaps exactly rather than measuring them.

The jitter. A retry waits ``d = min(maximum, initial × multiplier^(attempt-1))``, spread over a
window of ``jitter × d`` above it, slid down so that it never ends beyond ``maximum``: the wait is
uniform in ``[min(d, maximum × (1 - jitter)), min(d × (1 + jitter), maximum)]``. Neither "full"
(``[0, d]``) nor "equal" jitter (``[d/2, d]``): both wait less than ``initial`` now and then, and
``initial`` is documented as the wait before the first retry (remote write's ``min_backoff``,
the supervisor's ``backoff_initial``); a full-jitter wait near 0 retries a peer that has just
failed at once. The window still spreads senders that failed together (remote write's shards,
an outbox's lanes, plugins that crashed on the same backend) by ``jitter × d``, at the cap too.

``Retry-After``: both forms (delta-seconds, an HTTP date), capped by ``Backoff.retry_after_max``;
a value that is negative, not a number, too long, or a date in the past counts as "no wait
asked for" (the date in the past: 0), so a broken or hostile peer can neither make a sender
sleep unbounded nor retry in a hot loop (the backoff's wait is the least a retry waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import heapq
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bridge.api import ExportResult
from bridge.diskqueue import MAX_SHARDS, Batch, DiskQueue, DropCounts, Position, ShardQueue, segment_size_for

T = TypeVar("T")

__all__ = [
    "MAX_SHARDS",
    "REAL_CLOCK",
    "Backoff",
    "Batch",
    "Clock",
    "DiskQueue",
    "DropCounts",
    "ManualClock",
    "Position",
    "Retries",
    "ShardQueue",
    "Timer",
    "classify_error",
    "classify_status",
    "drained",
    "retry_after_seconds",
    "segment_size_for",
]

class Timer(Protocol):
    """A callback a ``Clock`` will call (``Clock.call_later``), until cancelled."""

    def cancel(self) -> None: ...


class Clock:
    """The time a component reads, the waits it makes (retries, schedules) and its timers and
    deadlines. Senders, the supervisor and the alerting engine take one (the real clock by
    default) so that tests can pass a virtual one (``ManualClock``) and assert the waits and gaps
    asked for instead of measuring them on a wall clock a loaded machine makes late."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Call ``callback(*args)`` on the running event loop ``delay`` seconds from now."""
        return asyncio.get_running_loop().call_later(delay, callback, *args)

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[Any]:
        """``asyncio.timeout`` on this clock: the block is cancelled and TimeoutError raised when
        it has not ended ``seconds`` from now (None: no limit)."""
        return asyncio.timeout(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        """``asyncio.wait_for`` on this clock."""
        return await asyncio.wait_for(aw, timeout)


REAL_CLOCK = Clock()


class _ManualTimer:
    __slots__ = ("when", "seq", "callback", "args", "cancelled")

    def __init__(self, when: int, seq: int, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when, self.seq, self.callback, self.args = when, seq, callback, args
        self.cancelled = False

    def __lt__(self, other: _ManualTimer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


def _ns(seconds: float) -> int:
    return round(seconds * 1e9) if math.isfinite(seconds) else 1 << 126  # inf: never due


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ManualClock(Clock):
    """A clock for tests whose time moves only when told: ``await advance(seconds)`` moves it on,
    firing the timers (``call_later``), waking the sleeps (``sleep``) and expiring the deadlines
    (``timeout``, ``wait_for``) that fall due meanwhile, one at a time in the order they are due,
    each at its own due time; after each, the event loop runs until nothing on it is ready (the
    tasks woken run to their next wait, which fires too when it falls due within the advance).
    Work off the loop (threads, sockets) is not waited for: a test waits for it itself.
    ``monotonic()`` starts at ``start``, ``time()`` at ``wall``; a wait of 0 or less only yields.
    The time is kept in whole nanoseconds, so that waits add up exactly (ten waits of 0.1 s end
    where one of 1 s does)."""

    #: Turns of the event loop ``advance`` gives woken work at most, each time.
    SETTLE_TURNS = 10_000

    def __init__(self, start: float = 1_000.0, wall: float = 1_700_000_000.0) -> None:
        self._ns = _ns(start)
        self._wall = wall - start
        self._timers: list[_ManualTimer] = []
        self._seq = 0

    def monotonic(self) -> float:
        return self._ns / 1e9

    def time(self) -> float:
        return self._ns / 1e9 + self._wall

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        if not delay > 0:  # due now (or a NaN): on the loop at once, as asyncio's call_later
            return asyncio.get_running_loop().call_soon(callback, *args)
        self._seq += 1
        timer = _ManualTimer(self._ns + _ns(delay), self._seq, callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        if not seconds > 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()

    @contextlib.asynccontextmanager
    async def timeout(self, seconds: float | None) -> AsyncIterator[Any]:
        async with asyncio.timeout(None) as cm:
            timer = None if seconds is None else self.call_later(seconds, lambda: cm.reschedule(-1.0))
            try:
                yield cm
            finally:
                if timer is not None:
                    timer.cancel()

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        async with self.timeout(timeout):
            return await aw

    def pending(self) -> list[float]:
        """The delays (from now) of the timers, sleeps and deadlines not fired yet, soonest first."""
        return sorted((t.when - self._ns) / 1e9 for t in self._timers if not t.cancelled)

    async def advance(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"a clock advances by a finite number of seconds >= 0, not {seconds!r}")
        target = self._ns + _ns(seconds)
        await self.settle()
        while self._timers and self._timers[0].when <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._ns = max(self._ns, timer.when)
            timer.callback(*timer.args)
            await self.settle()
        self._ns = target
        await self.settle()

    async def settle(self) -> None:
        """Let the event loop run until nothing on it is ready (at most ``SETTLE_TURNS`` turns)."""
        loop = asyncio.get_running_loop()
        for _ in range(self.SETTLE_TURNS):
            await asyncio.sleep(0)
            if not getattr(loop, "_ready", None):  # the default loop's queue of ready callbacks
                return

#: A ``Retry-After`` value longer than this is not read (an HTTP date takes 29 characters).
RETRY_AFTER_MAX_CHARS = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """The waits between retries: exponential from ``initial`` by ``multiplier`` up to ``maximum``
    seconds, with ``jitter`` (a fraction, 0 to 1) of each wait random; a ``Retry-After`` is
    honoured up to ``retry_after_max`` seconds."""

    initial: float = 0.5
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2
    retry_after_max: float = 300.0

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "retry_after_max"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"backoff {name} must be a positive number of seconds, not {v!r}")
        if self.maximum < self.initial:
            raise ValueError(f"backoff maximum ({self.maximum!r}) must be at least initial ({self.initial!r})")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(f"backoff multiplier must be at least 1, not {self.multiplier!r}")
        if not (0 <= self.jitter <= 1):
            raise ValueError(f"backoff jitter must be between 0 and 1, not {self.jitter!r}")

    def nominal(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1, 2, ...) without jitter."""
        k = max(attempt - 1, 0)
        if self.multiplier == 1 or k == 0:
            return self.initial
        if k >= math.log(self.maximum / self.initial, self.multiplier):  # at the cap (no power that overflows)
            return self.maximum
        return min(self.initial * self.multiplier**k, self.maximum)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before retry number ``attempt``: the nominal wait with jitter (see the module's
        docstring), or the peer's ``retry_after`` (capped at ``retry_after_max``) when it is longer."""
        d = self.nominal(attempt)
        low = min(d, self.maximum * (1 - self.jitter))
        high = min(d * (1 + self.jitter), self.maximum)
        wait = random.uniform(low, high)
        if retry_after is not None and math.isfinite(retry_after):
            wait = max(wait, min(retry_after, self.retry_after_max))
        return wait


class Retries:
    """The retries of one thing being delivered: ``next()`` is the wait before the next retry
    (growing with each call), ``reset()`` starts over after a success."""

    __slots__ = ("policy", "attempts")

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self.attempts = 0

    def next(self, retry_after: float | None = None) -> float:
        self.attempts += 1
        return self.policy.delay(self.attempts, retry_after)

    def reset(self) -> None:
        self.attempts = 0


def retry_after_seconds(value: str | None, now: float | None = None, maximum: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds (a decimal fraction is taken too) or an
    HTTP date (a date in the past: 0). None when absent or unreadable (negative, not a finite
    number, longer than RETRY_AFTER_MAX_CHARS, not a date). At most ``maximum`` when given."""
    if not value or len(value) > RETRY_AFTER_MAX_CHARS:
        return None
    value = value.strip()
    seconds: float | None = None
    if value and value.replace(".", "", 1).isdigit() and value.isascii():
        seconds = float(value)
    elif any(c.isalpha() for c in value):
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if seconds is None or not math.isfinite(seconds):
        return None
    return seconds if maximum is None else min(seconds, maximum)


def classify_status(status: int, reason: str = "", retry_after: str | None = None,
                    now: float | None = None) -> ExportResult:
    """An HTTP answer's outcome: 2xx success; 408, 429 and 5xx retryable (with the ``Retry-After``
    the peer sent, in seconds); anything else permanent (the same request will be refused again).
    ``reason`` (safe to log) goes into the result."""
    if 200 <= status < 300:
        return ExportResult.success()
    why = reason or f"HTTP {status}"
    if status in (408, 429) or 500 <= status < 600:
        return ExportResult.retryable(why, retry_after_seconds(retry_after, now))
    return ExportResult.permanent(why)


def classify_error(error: BaseException, reason: str = "") -> ExportResult:
    """A failed request's outcome: a timeout or a connection error (``OSError``, aiohttp's
    ``ClientError``) is retryable; anything else (a bug, a refused payload) permanent."""
    why = reason or f"{type(error).__name__}: {error}"
    if isinstance(error, (TimeoutError, OSError)):
        return ExportResult.retryable(why)
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        return ExportResult.permanent(why)
    if isinstance(error, aiohttp.ClientError):
        return ExportResult.retryable(why)
    return ExportResult.permanent(why)


async def drained(queue: DiskQueue, progress: Any, last_error: Callable[[], str | None], timeout: float,
                  what: str, stop_on_failure: bool = True) -> str | None:
    """Wait until ``queue`` holds nothing to deliver: None then; else why not within ``timeout``
    seconds (``"<n> <what> within <timeout> s"``), or, with ``stop_on_failure``, at once the reason
    ``last_error()`` gives when the last delivery failed. ``progress`` (an ``asyncio.Event``) is
    set by the sender after each delivery or drop; a sink's ``force_flush`` and ``shutdown`` wait
    with this."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        progress.clear()  # before looking: progress made after the look ends the wait below
        if queue.pending_samples <= 0:
            return None
        if stop_on_failure and (error := last_error()) is not None:
            return error
        remaining = deadline - loop.time()
        if remaining <= 0:
            return f"{queue.pending_samples} {what} within {timeout:g} s"
        try:
            await asyncio.wait_for(progress.wait(), remaining)
        except TimeoutError:
            pass
