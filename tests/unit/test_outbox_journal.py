"""The outbox on disk: its queue of pending notifications and the journal of done keys. A restart
sends exactly what was pending; the journal, compacted, forgets no key the queue still holds;
an earlier version's files (one per notification, ``delivered.json``) are taken over; a torn
last journal line costs only a repeat; until a notification's record is written, it is
neither sent nor recorded in the notification log; and one that cannot be written is sent all
the same (the failure logged)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import bridge.alerting.outbox as outbox_module
from bridge.alerting.notify import DeliveryError, Notification
from bridge.alerting.outbox import JOURNAL, QUEUE, Outbox, RetryPolicy, read_outbox
from bridge.alerting.processors import GroupingProcessor
from bridge.api import Alert, AlertState
from bridge.delivery import ShardQueue
from tests.unit.alerting_helpers import CollectingNotifier, EngineUnderTest, make_alert

NID = "monitoring.alerts.collect"
SLOW = RetryPolicy(initial=3600.0, maximum=3600.0)


def note(key: str) -> Notification:
    created = time.time()
    a = Alert(f"id-{key}", "A", "critical", AlertState.FIRING, {"alertname": "A", "k": key}, {}, None, created, None, key)
    return Notification(NID, key, f"group-{key}", {"k": key}, [a], "", created)


def segment_keys(directory) -> list[str]:
    return sorted(n.key for n in read_outbox(directory))


def journal_keys(directory) -> list[str]:
    return [k for line in (directory / JOURNAL).read_text().splitlines() for k in json.loads(line)]


async def deliver(outbox: Outbox, keys: list[str], refused: set[str]) -> list[str]:
    """Put ``keys``; deliver all but ``refused`` (which keep failing); the keys sent."""
    sent: list[str] = []
    done = asyncio.Event()
    want = len(keys) - len(refused)

    async def send(n: Notification) -> None:
        if n.key in refused:
            raise DeliveryError("down")
        sent.append(n.key)
        if len(sent) == want:
            done.set()

    outbox.start(NID, send, lambda n, outcome, why: None)
    for k in keys:
        outbox.put(note(k))
    await asyncio.wait_for(done.wait(), 30)
    await outbox.stop()
    return sent


async def test_a_restart_sends_what_was_pending_and_only_that(tmp_path):
    first = Outbox(tmp_path, SLOW)
    assert sorted(await deliver(first, ["a", "b", "c"], refused={"c"})) == ["a", "b"]
    assert sorted(journal_keys(tmp_path)) == ["a", "b"]
    again = Outbox(tmp_path, SLOW)
    assert [n.key for n in again.pending()] == ["c"]
    assert segment_keys(tmp_path) == ["c"]  # the segment holding done ones was rewritten on load
    assert not again.put(note("a")) and not again.put(note("c"))


async def test_the_compacted_journal_forgets_no_key_a_segment_still_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_module, "_DELIVERED_REMEMBERED", 3)
    outbox = Outbox(tmp_path, SLOW)
    keys = [f"n{i:02d}" for i in range(20)]
    sent = await deliver(outbox, keys, refused={"n00"})  # all in one segment, n00 stuck in it
    assert sorted(sent) == keys[1:]
    assert len(journal_keys(tmp_path)) <= 2 * 3 + 4  # rewritten with the last keys it remembers
    assert segment_keys(tmp_path) == ["n00"]  # ... after the segment kept only its pending one
    again = Outbox(tmp_path, SLOW)
    assert [n.key for n in again.pending()] == ["n00"]


async def test_an_earlier_versions_files_are_taken_over(tmp_path):
    old = note("old")
    (tmp_path / NID).mkdir()
    (tmp_path / NID / "0000001000000-old.json").write_text(json.dumps(old.to_json()))
    (tmp_path / NID / "0000000900000-sent.json").write_text(json.dumps(note("sent").to_json()))
    (tmp_path / "delivered.json").write_text(json.dumps(["sent", "x"]))
    outbox = Outbox(tmp_path)
    assert [n.key for n in outbox.pending()] == ["old"]
    assert not outbox.put(note("x"))
    assert not (tmp_path / "delivered.json").exists() and sorted(journal_keys(tmp_path)) == ["sent", "x"]
    assert not (tmp_path / NID / "0000000900000-sent.json").exists()


async def test_a_torn_journal_line_is_skipped(tmp_path, caplog):
    (tmp_path / JOURNAL).write_text('["a","b"]\n["c","d')
    outbox = Outbox(tmp_path)
    assert not outbox.put(note("a")) and outbox.put(note("c"))  # "c" was not journaled: sent (again)
    assert f"{JOURNAL} line 2 is unreadable" in caplog.text
    await outbox.flush()
    assert journal_keys(tmp_path) == ["a", "b"]


async def test_the_send_and_the_notification_log_wait_for_the_outbox_write(tmp_path, monkeypatch):
    """The outbox's write held up: the notification is not sent, and the notification log on
    disk does not record it (a crash now must send it after the restart), until it is done."""
    gate = threading.Event()
    real = ShardQueue.append_many

    def held(self, records):
        if self.queue.label == "alert outbox":
            gate.wait(30)
        return real(self, records)

    monkeypatch.setattr(ShardQueue, "append_many", held)
    grouping = GroupingProcessor()
    await grouping.initialize({"group_wait": 0, "group_interval": 300})
    collect = CollectingNotifier()
    await collect.initialize({})
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), (NID, collect)])
    await t.engine.start()
    try:
        t.engine.fire(make_alert(), "test")
        async with asyncio.timeout(10):
            while not t.engine.outbox.pending():
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # room for a send or a log write that would not wait
        assert collect.sent == []
        assert not (tmp_path / "nflog.json").exists()
        gate.set()
        await asyncio.wait_for(collect.arrived.wait(), 10)
        await t.engine.dispatcher.flush()
        [entry] = json.loads((tmp_path / "nflog.json").read_text()).values()
        assert entry["count"] == 1 and len(collect.sent) == 1
    finally:
        gate.set()
        await t.engine.stop()


async def test_a_notification_that_cannot_be_written_still_goes_out(tmp_path, caplog):
    (tmp_path / QUEUE).write_text("in the way of the queue's directory")
    outbox = Outbox(tmp_path, SLOW)
    assert await deliver(outbox, ["a"], refused=set()) == ["a"]
    assert "cannot write" in caplog.text and "sent without being on disk" in caplog.text
    assert journal_keys(tmp_path) == ["a"]
