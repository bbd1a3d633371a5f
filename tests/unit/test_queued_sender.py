"""bridge.queued.QueuedSender: a sink's queue and its delivery task (real queues in the test's temp
dir, a send function standing in for the peer, and a clock that records the waits asked for)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.api import ExportResult
from bridge.delivery import Backoff, Clock
from bridge.ledger import LEDGER
from bridge.queued import QueuedSender, Sent


class WaitClock(Clock):
    """The waits asked for, recorded; each returns after a moment (no real backoff)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


class Peer:
    """Answers each send with the next of ``answers`` (then success); records what it got."""

    def __init__(self, *answers: Sent) -> None:
        self.answers = list(answers)
        self.got: list[list[bytes]] = []

    async def send(self, payloads: list[bytes], n: int) -> Sent:
        self.got.append(payloads)
        if self.answers:
            return self.answers.pop(0)
        return Sent(ExportResult.success(), n)


def sender(component: str, path: Path | None = None, max_bytes: int = 1 << 20, per_send: int = 1,
           clock: Clock | None = None) -> QueuedSender:
    return QueuedSender(component, f"{component} test", "items", "peer:1", path, max_bytes, False,
                        Backoff(1.0, 8.0), per_send, clock=clock or WaitClock())


async def test_records_are_delivered_in_order_and_counted():
    s = sender("qs_order", per_send=2)
    peer = Peer()
    await s.open()
    s.start(peer.send, "test")
    await s.put([(b"a", 1), (b"b", 1), (b"c", 1)])
    assert await s.drained(5) is None
    assert [p for got in peer.got for p in got] == [b"a", b"b", b"c"]
    assert [len(g) for g in peer.got] == [2, 1]  # per_send items a send
    assert s.delivered == 3 and s.pending == 0 and not s.dropped
    await s.close(1)


async def test_a_retryable_failure_keeps_the_records_and_waits_the_backoff_or_retry_after():
    clock = WaitClock()
    s = sender("qs_retry", clock=clock)
    peer = Peer(Sent(ExportResult.retryable("HTTP 503")), Sent(ExportResult.retryable("HTTP 429", 5.0)))
    await s.open()
    s.start(peer.send, "test")
    await s.put([(b"a", 2)])
    assert await s.drained(5, stop_on_failure=False) is None
    assert peer.got == [[b"a"], [b"a"], [b"a"]] and s.delivered == 2 and s.retries == 2
    assert 1.0 <= clock.waits[0] <= 2.0  # the backoff's first wait
    assert clock.waits[1] >= 5.0  # the peer's Retry-After
    assert s.last_error is None and not s.dropped
    await s.close(1)


async def test_a_permanent_refusal_is_dropped_under_its_reason_and_the_next_goes_on():
    before = LEDGER.total("qs_refused", "http_400")
    s = sender("qs_refused")
    peer = Peer(Sent(ExportResult.permanent("HTTP 400: bad"), drop_reason="http_400"))
    await s.open()
    s.start(peer.send, "test")
    await s.put([(b"bad", 3), (b"good", 1)])
    assert await s.drained(5) is None
    assert s.dropped == {"http_400": 3} and s.delivered == 1
    assert LEDGER.total("qs_refused", "http_400") - before == 3
    await s.close(1)


async def test_items_refused_for_now_are_queued_again_and_sent_after_a_backoff():
    clock = WaitClock()
    s = sender("qs_requeue", clock=clock)
    peer = Peer(Sent(ExportResult.success(), 2, requeue=[(b"again", 1)]))
    await s.open()
    s.start(peer.send, "test")
    await s.put([(b"three", 3)])
    assert await s.drained(5) is None
    assert peer.got == [[b"three"], [b"again"]] and s.delivered == 3 and s.retries == 1
    assert len(clock.waits) == 1 and clock.waits[0] >= 1.0
    await s.close(1)


async def test_a_record_larger_than_the_queue_is_dropped_alone():
    s = sender("qs_large", max_bytes=4096)
    peer = Peer()
    await s.open()
    s.start(peer.send, "test")
    await s.put([(b"x" * 8192, 5), (b"small", 1)], "a request")
    assert await s.drained(5) is None
    assert peer.got == [[b"small"]] and s.dropped == {"too_large": 5}
    await s.close(1)


async def test_close_delivers_what_it_can_then_counts_what_an_in_memory_queue_loses():
    s = sender("qs_close")
    release = asyncio.Event()

    async def stuck(payloads: list[bytes], n: int) -> Sent:
        await release.wait()
        return Sent(ExportResult.success(), n)

    await s.open()
    s.start(stuck, "test")
    await s.put([(b"a", 1), (b"b", 1)])
    await s.close(0.2)  # the peer never answers within half of it
    assert s.dropped == {"shutdown": 2}
    await s.put([(b"late", 4)])
    assert s.dropped == {"shutdown": 2, "stopped": 4}


async def test_records_put_before_the_queue_is_open_are_counted():
    s = sender("qs_early")
    await s.put([(b"early", 3)])
    assert s.dropped == {"not_open": 3}
    await s.open()
    await s.put([(b"a", 1)])
    assert s.pending == 1 and s.dropped == {"not_open": 3}


async def test_close_drains_a_working_peer_first():
    s = sender("qs_drain")
    peer = Peer()
    await s.open()
    await s.put([(b"a", 1), (b"b", 1)])  # queued before delivery starts
    s.start(peer.send, "test")
    await s.close(5)
    assert s.delivered == 2 and not s.dropped


async def test_a_queue_on_disk_keeps_what_was_not_delivered_across_a_restart(tmp_path: Path):
    s = sender("qs_disk", tmp_path / "q")
    await s.open()
    s.start(Peer(*[Sent(ExportResult.retryable("down"))] * 1000).send, "test")
    await s.put([(b"a", 1), (b"b", 2)])
    assert await s.drained(0.2) == "down"
    await s.close(0.1)
    assert not s.dropped  # on disk: nothing lost
    again = sender("qs_disk", tmp_path / "q")
    await again.open()
    assert again.pending == 3
    peer = Peer()
    again.start(peer.send, "test")
    assert await again.drained(5) is None
    assert [p for got in peer.got for p in got] == [b"a", b"b"]
    await again.close(1)
