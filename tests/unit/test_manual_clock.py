"""The injected clock: ``bridge.delivery.Clock`` (the real one) and ``ManualClock`` (a test's,
moved by ``advance``), and the deadlines of ``bridge.tasks`` on either."""

from __future__ import annotations

import asyncio

import pytest

from bridge.delivery import REAL_CLOCK, ManualClock
from bridge.tasks import cancel_and_wait, run_bounded, wait_within


async def test_sleeps_wake_in_order_each_at_its_due_time():
    clock = ManualClock(start=50.0, wall=1_000.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("c", 3.0), ("a", 1.0), ("b", 2.0))]
    await clock.settle()
    assert clock.pending() == [1.0, 2.0, 3.0] and woke == []
    await clock.advance(1.5)
    assert woke == [("a", 51.0)] and clock.monotonic() == 51.5 and clock.time() == 1_001.5
    await clock.advance(1.5)
    assert woke == [("a", 51.0), ("b", 52.0), ("c", 53.0)] and clock.pending() == []
    await asyncio.gather(*tasks)


async def test_waits_made_during_an_advance_fire_within_it_and_add_up_exactly():
    clock = ManualClock(start=0.0)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(0.1)
            ticks.append(clock.monotonic())

    task = asyncio.create_task(ticker())
    await clock.advance(1.0)
    assert ticks == [round(0.1 * i, 9) for i in range(1, 11)]  # ten waits of 0.1 s end where 1 s does
    assert clock.pending() == [pytest.approx(0.1)]
    await cancel_and_wait(task)
    assert clock.pending() == []  # a cancelled sleep leaves no timer


async def test_timers_fire_unless_cancelled_and_a_zero_delay_is_due_at_once():
    clock = ManualClock()
    fired: list[str] = []
    clock.call_later(2.0, fired.append, "later")
    clock.call_later(1.0, fired.append, "cancelled").cancel()
    clock.call_later(0.0, fired.append, "now")
    await clock.settle()
    assert fired == ["now"]
    await clock.advance(1.999)
    assert fired == ["now"]
    await clock.advance(0.001)
    assert fired == ["now", "later"]
    with pytest.raises(ValueError, match="finite number of seconds"):
        await clock.advance(-1)


async def test_a_deadline_expires_at_its_time_not_before():
    clock = ManualClock(start=0.0)

    async def slow() -> str:
        await clock.sleep(5.0)
        return "done"

    async def bounded(timeout: float) -> str:
        try:
            return await clock.wait_for(slow(), timeout)
        except TimeoutError:
            return f"timed out at {clock.monotonic():g}"

    short, long = asyncio.create_task(bounded(2.0)), asyncio.create_task(bounded(6.0))
    await clock.advance(1.999)
    assert not short.done()
    await clock.advance(0.001)
    assert short.result() == "timed out at 2"
    await clock.advance(3.0)
    assert long.result() == "done"
    assert clock.pending() == []  # the deadline of the call that ended is gone


async def test_a_cancelled_caller_is_cancelled_not_timed_out():
    clock = ManualClock()
    task = asyncio.create_task(clock.wait_for(asyncio.Event().wait(), 1.0))
    await clock.settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending() == []


async def test_run_bounded_and_wait_within_on_a_manual_clock():
    clock = ManualClock(start=0.0)
    abandoned: list[float] = []
    release = asyncio.Event()

    async def swallows() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass

    call = asyncio.create_task(run_bounded(swallows(), 1.0, grace=0.5, on_abandon=lambda: abandoned.append(
        clock.monotonic()), clock=clock))
    await clock.advance(1.0)
    assert not call.done()  # cancelled at its timeout; given its grace
    await clock.advance(0.5)
    with pytest.raises(TimeoutError):
        await call
    assert abandoned == [1.5]  # abandoned when the grace was over
    release.set()

    never = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(wait_within([never], 3.0, clock))
    await clock.advance(3.0)
    done, pending = await waiting
    assert done == set() and pending == {never}
    never.cancel()


async def test_the_real_clock_is_asyncios():
    fired: list[int] = []
    REAL_CLOCK.call_later(0, fired.append, 1)
    await REAL_CLOCK.sleep(0)
    await asyncio.sleep(0)
    assert fired == [1]
    with pytest.raises(TimeoutError):
        await REAL_CLOCK.wait_for(asyncio.Event().wait(), 0)
    with pytest.raises(TimeoutError):
        async with REAL_CLOCK.timeout(0):
            await asyncio.Event().wait()
    assert await REAL_CLOCK.wait_for(asyncio.sleep(0, "x"), None) == "x"
