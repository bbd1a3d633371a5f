"""bridge.delivery: the one backoff policy (bounds, jitter window, growth, reset), Retry-After
(both forms, the cap, hostile values), the classification of answers and errors, and the one
durable queue as its two users use it: remote write (in order, acknowledged by batch) and the
alert outbox (acknowledged out of order, a prefix at a time; on disk across a crash; bounded,
what is dropped for room counted, logged and reported)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time

import aiohttp
import pytest

import bridge.tasks
from bridge.alerting.engine import AlertEngine
from bridge.alerting.notify import DeliveryError, Notification, PermanentDeliveryError, http_delivery_error
from bridge.alerting.outbox import JOURNAL, QUEUE, Outbox, RetryPolicy, read_outbox
from bridge.api import Alert, AlertState, ExportStatus
from bridge.delivery import (
    Backoff,
    DiskQueue,
    DropCounts,
    ManualClock,
    Retries,
    classify_error,
    classify_status,
    retry_after_seconds,
)
from bridge.pipeline import Pipeline

# ---------------------------------------------------------------------------- the policy


def test_the_wait_grows_by_the_multiplier_within_its_jitter_window_up_to_the_maximum():
    b = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.2)
    assert [b.nominal(a) for a in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    for attempt, d in [(1, 1.0), (2, 2.0), (3, 4.0)]:
        waits = [b.delay(attempt) for _ in range(2000)]
        assert d <= min(waits) and max(waits) <= 1.2 * d  # never less than the nominal wait
        assert max(waits) - min(waits) > 0.15 * d  # spread over the window, not one value
    capped = [b.delay(a) for a in (4, 5, 60, 10_000) for _ in range(500)]
    assert 8 * 0.8 <= min(capped) and max(capped) <= 8.0  # at the cap: slid down, never beyond maximum
    assert max(capped) - min(capped) > 1.0  # retriers at the cap are still spread


def test_no_jitter_and_huge_attempt_numbers():
    b = Backoff(initial=0.5, maximum=30.0, multiplier=3.0, jitter=0.0)
    assert [b.delay(a) for a in (0, 1, 2, 3, 4, 5)] == [0.5, 0.5, 1.5, 4.5, 13.5, 30.0]
    assert b.delay(10**9) == 30.0 and Backoff(1, 2, multiplier=1e308).delay(3) <= 2.0


@pytest.mark.parametrize("kwargs", [
    {"initial": 0}, {"initial": -1}, {"initial": math.nan}, {"maximum": math.inf}, {"initial": 5, "maximum": 1},
    {"multiplier": 0.5}, {"jitter": 1.5}, {"jitter": -0.1}, {"retry_after_max": 0},
])
def test_a_nonsensical_policy_is_refused(kwargs):
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)


def test_retries_grow_until_reset():
    r = Retries(Backoff(initial=1.0, maximum=100.0, jitter=0.0))
    assert [r.next() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0] and r.attempts == 4
    r.reset()
    assert r.next() == 1.0


def test_a_retry_after_longer_than_the_backoff_sets_the_wait_up_to_its_cap():
    b = Backoff(initial=1.0, maximum=10.0, jitter=0.0, retry_after_max=30.0)
    assert b.delay(1, retry_after=7.0) == 7.0
    assert b.delay(1, retry_after=10**9) == 30.0  # capped: a hostile peer cannot park the sender
    assert b.delay(3, retry_after=0.0) == 4.0  # shorter than the backoff: no hot loop
    assert b.delay(1, retry_after=math.inf) == 1.0 and b.delay(1, retry_after=math.nan) == 1.0
    # A cap below the backoff's own wait never shortens that wait.
    assert Backoff(initial=100.0, maximum=300.0, jitter=0.0, retry_after_max=60.0).delay(1, retry_after=200.0) == 100.0


def test_the_supervisor_and_the_outbox_use_the_policy():
    for _ in range(200):
        assert 4.0 <= bridge.tasks.backoff_delay(3, 1.0, 60.0) <= 4.8
        assert 48.0 <= bridge.tasks.backoff_delay(99, 1.0, 60.0) <= 60.0
    assert bridge.tasks.backoff_delay(1, 3600.0, 60.0) <= 60.0  # an initial above the maximum is the maximum
    assert isinstance(RetryPolicy(), Backoff) and RetryPolicy().retry_after_max == 60.0


# ---------------------------------------------------------------------------- Retry-After


def test_retry_after_both_forms():
    now = 1_700_000_000.0
    assert retry_after_seconds("120") == 120.0 and retry_after_seconds(" 3 ") == 3.0
    assert retry_after_seconds(email.utils.formatdate(now + 90, usegmt=True), now=now) == 90.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0  # in the past: retry now
    assert retry_after_seconds(email.utils.formatdate(now + 10**6, usegmt=True), now=now, maximum=60) == 60
    assert retry_after_seconds("86400", maximum=300) == 300


@pytest.mark.parametrize("value", [
    None, "", "   ", "-5", "+5", "nan", "inf", "-inf", "1e9", "0x10", "5s", "1.2.3", "²", "１２",
    "soon", "Wed, 32 Oct 2015 07:28:00 GMT", "Mon, 01 Jan 99999 00:00:00 GMT", "9" * 65,
    "Wed, 21 Oct 2015 07:28:00 GMT" + " " * 40, "\x00\x01", "Retry-After: 5",
])
def test_an_unreadable_retry_after_is_no_wait_asked_for(value):
    assert retry_after_seconds(value) is None


def test_a_huge_delta_is_finite_and_capped():
    assert retry_after_seconds("9" * 60, maximum=5) == 5
    assert retry_after_seconds("9" * 400) is None  # longer than a header value is read


# ---------------------------------------------------------------------------- classification


@pytest.mark.parametrize(("status", "expected"), [
    (200, ExportStatus.SUCCESS), (204, ExportStatus.SUCCESS), (408, ExportStatus.RETRYABLE),
    (429, ExportStatus.RETRYABLE), (500, ExportStatus.RETRYABLE), (503, ExportStatus.RETRYABLE),
    (599, ExportStatus.RETRYABLE), (301, ExportStatus.PERMANENT), (400, ExportStatus.PERMANENT),
    (401, ExportStatus.PERMANENT), (404, ExportStatus.PERMANENT), (413, ExportStatus.PERMANENT),
    (600, ExportStatus.PERMANENT), (0, ExportStatus.PERMANENT),
])
def test_classify_status(status, expected):
    assert classify_status(status).status is expected


def test_classify_status_carries_the_retry_after_and_the_reason():
    r = classify_status(429, "HTTP 429 slow down", "7")
    assert (r.status, r.reason, r.retry_after) == (ExportStatus.RETRYABLE, "HTTP 429 slow down", 7.0)
    assert classify_status(503, retry_after="garbage").retry_after is None
    assert classify_status(400, retry_after="7").retry_after is None  # refused: nothing to wait for


def test_classify_error():
    assert classify_error(TimeoutError()).status is ExportStatus.RETRYABLE
    assert classify_error(ConnectionRefusedError(111, "refused")).status is ExportStatus.RETRYABLE
    assert classify_error(aiohttp.ServerDisconnectedError()).status is ExportStatus.RETRYABLE
    r = classify_error(ValueError("bad payload"))
    assert r.status is ExportStatus.PERMANENT and r.reason == "ValueError: bad payload"


def test_the_notifiers_errors_follow_the_classification():
    e = http_delivery_error("webhook", 503, "down", "Wed, 21 Oct 2015 07:28:00 GMT")
    assert isinstance(e, DeliveryError) and e.retry_after == 0.0  # an HTTP date is read too
    assert isinstance(http_delivery_error("webhook", 408, ""), DeliveryError)
    assert isinstance(http_delivery_error("webhook", 404, "no such hook"), PermanentDeliveryError)


# ---------------------------------------------------------------------------- the queue


def test_append_many_writes_once_and_returns_where_each_record_ends(tmp_path):
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    q.open()
    ends = q.shards[0].append_many([(b"a" * 10, 1), (b"b" * 20, 2), (b"c", 3)])
    assert ends == [(1, 22), (1, 54), (1, 67)]  # a 12-byte header before each payload
    assert q.pending_samples == 6
    batch = q.shards[0].read_batch(100)
    assert batch.payloads == [b"a" * 10, b"b" * 20, b"c"] and batch.ends() == ends
    assert q.shards[0].append_many([(b"x" * (1 << 20), 1)]) is None  # larger than the bound: not written
    q.close()


def test_reading_ahead_and_acknowledging_a_prefix_out_of_order(tmp_path):
    """The outbox's use: every record read without acknowledging, then acknowledged a prefix at a
    time (records finished out of order wait for those before them)."""
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 16)  # 8 KiB segments: the records span several
    q.open()
    shard = q.shards[0]
    ends = shard.append_many([(b"%03d" % i + b"." * 500, 1) for i in range(40)])
    assert len({seq for seq, _ in ends}) > 1
    seen, start = [], None
    while (batch := shard.read_batch(7, start)) is not None:
        seen.extend(batch.payloads)
        start = batch.end
    assert [p[:3] for p in seen] == [b"%03d" % i for i in range(40)]
    shard.ack_to(ends[24])
    assert q.pending_samples == 15 and shard.read_batch(1).payloads[0][:3] == b"025"
    shard.ack_to(ends[10])  # behind the ack position: nothing changes
    assert q.pending_samples == 15
    q.close()
    again = DiskQueue(tmp_path, shards=1, max_bytes=1 << 16)
    again.open()  # the position survives a restart, and the segments wholly before it are gone
    assert again.pending_samples == 15 and again.shards[0].read_batch(1).payloads[0][:3] == b"025"
    assert min(s.seq for s in again.shards[0].segments) == ends[24][0]
    again.shards[0].ack_to(ends[-1])
    assert again.pending_samples == 0 and again.shards[0].read_batch(100) is None
    again.close()


def test_ack_to_in_memory_and_with_the_remote_writers_batches_mixed():
    q = DiskQueue(None, shards=1, max_bytes=1 << 20)
    q.open()
    shard = q.shards[0]
    ends = shard.append_many([(b"r%d" % i, 2) for i in range(6)])
    batch = shard.read_batch(4)
    assert batch.payloads == [b"r0", b"r1"]
    shard.ack(batch)
    shard.ack_to(ends[3])
    assert q.pending_samples == 4 and shard.read_batch(100).payloads == [b"r4", b"r5"]


def test_dropping_for_room_tells_the_owner(tmp_path):
    drops: list[tuple[DropCounts, str]] = []
    q = DiskQueue(tmp_path, shards=1, max_bytes=32768, on_drop=lambda c, r: drops.append((c, r)), label="test queue")
    q.open()
    for i in range(40):
        q.shards[0].append_many([(b"%03d" % i + b"." * 1000, 1)])
    assert drops and all(r == "max_bytes" for _, r in drops)
    assert sum(c.samples for c, _ in drops) + q.pending_samples == 40 and q.total_bytes <= 32768
    q.close()


# ---------------------------------------------------------------------------- the outbox on the queue

NID = "monitoring.alerts.collect"


def note(key: str, size: int = 0) -> Notification:
    created = time.time()
    a = Alert(f"id-{key}", "A", "critical", AlertState.FIRING, {"alertname": "A", "k": key, "pad": "x" * size}, {},
              None, created, None, key)
    return Notification(NID, key, f"group-{key}", {"k": key}, [a], "", created)


async def test_the_outbox_is_bounded_and_what_it_drops_is_counted_logged_and_reported(tmp_path, caplog):
    outcomes: list[tuple[str, str, str | None]] = []

    async def never(n: Notification) -> None:
        raise DeliveryError("receiver down")

    outbox = Outbox(tmp_path, RetryPolicy(initial=3600.0, maximum=3600.0), max_bytes=64 << 10)
    outbox.start(NID, never, lambda n, outcome, why: outcomes.append((n.key, outcome, why)))
    for i in range(40):
        outbox.put(note(f"n{i:02d}", size=4000))
        await outbox.flush_pending()
    await outbox.flush()
    dropped = [k for k, outcome, _ in outcomes if outcome == "failed"]
    assert dropped and outbox.dropped_total == len(dropped)
    assert dropped == [f"n{i:02d}" for i in range(len(dropped))]  # the oldest
    assert {n.key for n in outbox.pending()} == {f"n{i:02d}" for i in range(len(dropped), 40)}
    assert "the queue dropped" in caplog.text and "dropped from the outbox's queue" in caplog.text
    await outbox.stop()
    assert sum(p.stat().st_size for p in (tmp_path / QUEUE).rglob("*.seg")) <= 64 << 10
    assert sorted(n.key for n in read_outbox(tmp_path)) == sorted(n.key for n in outbox.pending())
    # ... and a self-metric of the alert engine.
    pipeline = Pipeline()
    engine = AlertEngine(pipeline=pipeline)
    engine.outbox = outbox
    engine.record_metrics()
    counts = {m.attributes["outcome"]: m.value for m in pipeline.snapshot() if m.name == "monbridge.alerting.notifications"}
    assert counts == {"delivered": 0, "failed": 0, "superseded": 0, "dropped": len(dropped)}


async def test_a_torn_last_record_costs_that_notification_only(tmp_path):
    first = Outbox(tmp_path)
    for k in ("a", "b", "c"):
        first.put(note(k))
    await first.flush()
    [seg] = (tmp_path / QUEUE / "shard-0").glob("*.seg")
    with open(seg, "r+b") as f:  # killed in the middle of writing "c"
        f.truncate(seg.stat().st_size - 10)
    assert [n.key for n in Outbox(tmp_path).pending()] == ["a", "b"]


async def test_an_unreadable_record_is_dropped_and_counted(tmp_path, caplog):
    q = DiskQueue(tmp_path / QUEUE, 1, 1 << 20, label="alert outbox")
    q.open()
    good = note("a").to_json()
    bad = [b"{not json", b"[]", json.dumps({"key": "no other field"}).encode(),
           *(json.dumps({**good, **change}).encode() for change in (
               {"created_at": "x"}, {"created_at": None}, {"key": ["a"]}, {"key": None}, {"alerts": [5]},
               {"alerts": [{}]}, {"group_labels": 5}))]
    q.shards[0].append_many([(json.dumps(good).encode(), 1), *((b, 1) for b in bad)])
    q.close()
    assert [n.key for n in read_outbox(tmp_path)] == ["a"]
    outbox = Outbox(tmp_path)
    assert [n.key for n in outbox.pending()] == ["a"] and outbox.dropped_total == len(bad)
    assert caplog.text.count("dropping an unreadable notification") == len(bad)


async def test_the_outbox_waits_as_its_policy_says():
    """A failed send waits ``policy.delay(attempts, the receiver's Retry-After)``: the policy of
    bridge.delivery, the same as remote write's."""
    calls: list[tuple[int, float | None]] = []

    class Recorded(RetryPolicy):
        def delay(self, attempt: int, retry_after: float | None = None) -> float:
            calls.append((attempt, retry_after))
            return super().delay(attempt, retry_after)

    failures = [DeliveryError("down"), DeliveryError("slow down", retry_after=0.05)]
    sent: list[float] = []
    clock = ManualClock()

    async def send(n: Notification) -> None:
        if failures:
            raise failures.pop(0)
        sent.append(clock.monotonic())

    t0 = clock.monotonic()
    outbox = Outbox(None, Recorded(initial=0.01, maximum=0.02, jitter=0.0), clock=clock)
    outbox.start(NID, send, lambda n, outcome, why: None)
    outbox.put(note("a"))
    await clock.settle()
    assert clock.pending() == [pytest.approx(0.01)]  # the first retry's wait, on the outbox's clock
    await clock.advance(0.01)
    assert clock.pending() == [pytest.approx(0.05)]  # the Retry-After, longer than the backoff's 0.02 s
    await clock.advance(0.049)
    assert sent == []
    await clock.advance(0.001)
    await outbox.stop()
    assert calls == [(1, None), (2, 0.05)]
    assert sent == [pytest.approx(t0 + 0.06)]


async def test_the_journal_and_the_queue_agree_after_a_restart(tmp_path):
    delivered: list[str] = []
    done = asyncio.Event()

    async def send(n: Notification) -> None:
        if n.key == "stuck":
            raise DeliveryError("down")
        delivered.append(n.key)
        if len(delivered) == 3:
            done.set()

    outbox = Outbox(tmp_path, RetryPolicy(initial=3600.0, maximum=3600.0))
    outbox.start(NID, send, lambda n, outcome, why: None)
    for k in ("x", "stuck", "y", "z"):
        outbox.put(note(k))
    await asyncio.wait_for(done.wait(), 10)
    await outbox.stop()
    journal = [k for line in (tmp_path / JOURNAL).read_text().splitlines() for k in json.loads(line)]
    assert sorted(journal) == ["x", "y", "z"]
    assert [n.key for n in read_outbox(tmp_path)] == ["stuck"]
    again = Outbox(tmp_path)
    assert [n.key for n in again.pending()] == ["stuck"]
    # The restart moved the ack position past every notification done with ("stuck" appended again).
    assert again._queue.pending_samples == 1


def test_reading_ahead_passes_an_empty_segment(tmp_path):
    """Found by the outbox_queue fuzz target: an empty segment (a file created, then the process
    killed before its first record) between two others ended a read-ahead there."""
    shard_dir = tmp_path / "shard-0"
    shard_dir.mkdir()
    writer = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    writer.open()
    writer.shards[0].append_many([(b"one", 1)])
    writer.close()
    (shard_dir / "0000000000000002.seg").write_bytes(b"")
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    q.open()
    q.shards[0].append_many([(b"three", 1)])  # a new segment after the empty one
    first = q.shards[0].read_batch(10, (1, 0))
    assert first.payloads == [b"one"]
    assert q.shards[0].read_batch(10, first.end).payloads == [b"three"]
    q.close()


async def test_drained_waits_for_the_queue_and_says_why_not():
    from bridge.delivery import DiskQueue, drained

    queue = DiskQueue(None, 1, 1 << 20)
    queue.open()
    progress = asyncio.Event()
    error: list[str | None] = [None]
    assert await drained(queue, progress, lambda: error[0], 1.0, "items not delivered") is None
    shard = queue.shards[0]
    assert shard.append(b"x", 3)
    assert await drained(queue, progress, lambda: error[0], 0.05, "items not delivered") == \
        "3 items not delivered within 0.05 s"
    error[0] = "peer answered 503"
    assert await drained(queue, progress, lambda: error[0], 5.0, "items") == "peer answered 503"  # at once

    async def deliver() -> None:  # as a sender: the batch acknowledged, progress told
        await asyncio.sleep(0.05)
        batch = shard.read_batch(10)
        assert batch is not None
        shard.ack(batch)
        progress.set()

    sender = asyncio.create_task(deliver())
    assert await drained(queue, progress, lambda: error[0], 5.0, "items", stop_on_failure=False) is None
    await sender
    queue.close()
