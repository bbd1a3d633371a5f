"""A notification storm: one batch of 1,000 alerts, grouped one group per alert
(``group_by: ["..."]``), each notification posted by the real webhook notifier to a receiver
(aiohttp on loopback). Every alert is delivered exactly once; each notification is on disk
before it is sent; the disk is written in batches, never on the event loop thread, so a
heartbeat coroutine runs all along; and afterwards the state on disk agrees: nothing left in
the outbox, every key journaled, one notification-log entry per group, every alert stored."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import Counter

from bridge.alerting.notify import Notification
from bridge.alerting.outbox import JOURNAL, Outbox, read_outbox
from bridge.alerting.processors import GroupingProcessor
from bridge.api import Alert, AlertState
from integrations.webhook import PLUGIN_ID, WebhookNotifier
from tests.unit.alerting_helpers import EngineUnderTest, WebhookReceiver

N = 1000


def storm() -> list[Alert]:
    return [Alert("", "Storm", "warning", AlertState.FIRING, {"alertname": "Storm", "instance": f"host-{i:04d}"})
            for i in range(N)]


def on_disk(outbox_dir) -> set[str]:
    """The keys of the notifications pending in the outbox on disk."""
    return {n.key for n in read_outbox(outbox_dir)}


async def test_a_thousand_groups_are_delivered_once_each_off_the_loop(tmp_path, monkeypatch):
    loop_thread = threading.get_ident()
    fsyncs = {"loop": 0, "workers": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsyncs["loop" if threading.get_ident() == loop_thread else "workers"] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    outbox_dir = tmp_path / "outbox"
    sent_before_written: list[str] = []

    def inspect(key: str) -> None:
        if int(key, 16) % 50 == 0 and key not in on_disk(outbox_dir):  # a sample: reading the outbox costs
            sent_before_written.append(key)

    receiver = WebhookReceiver(inspect=inspect)
    await receiver.start()
    grouping = GroupingProcessor()
    await grouping.initialize({"group_by": ["..."], "group_wait": 0, "group_interval": 300})
    notifier = WebhookNotifier()
    await notifier.initialize({"url": receiver.url})
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.grouping", grouping), (PLUGIN_ID, notifier)])
    await t.engine.start()

    beats: list[int] = []  # deliveries seen at each turn of a heartbeat coroutine

    async def heartbeat() -> None:
        while True:
            beats.append(len(receiver.got))
            await asyncio.sleep(0)

    beat = asyncio.create_task(heartbeat())
    try:
        fired, resolved = await t.engine.report(storm(), "alertmanager:storm")
        assert (fired, resolved) == (N, 0)
        async with asyncio.timeout(120):
            while t.engine.outbox.delivered_total < N:
                await asyncio.sleep(0.05)
        await t.engine.drain()
    finally:
        beat.cancel()
        await t.engine.stop()
        await notifier.shutdown()
        await receiver.stop()

    # Every alert once, in a notification of its own (its group); each sent only once it was on disk.
    groups = Counter(group for group, _key, _status in receiver.got)
    assert len(groups) == N and set(groups.values()) == {1}
    keys = [key for _group, key, _status in receiver.got]
    assert len(set(keys)) == N
    assert sent_before_written == []
    # The heartbeat ran while the notifications went out, not only before and after.
    assert len({b for b in beats if 0 < b < N}) > 10
    # The disk was written in batches (not an fsync per notification), all in worker threads.
    assert fsyncs["loop"] == 0
    assert 0 < fsyncs["workers"] < N

    # The state on disk agrees with what happened.
    assert on_disk(outbox_dir) == set()
    journaled = [k for line in (outbox_dir / JOURNAL).read_text().splitlines() for k in json.loads(line)]
    assert sorted(journaled) == sorted(keys)
    nflog = json.loads((tmp_path / "nflog.json").read_text())
    assert len(nflog) == N and {e["count"] for e in nflog.values()} == {1}
    stored = json.loads((tmp_path / "alerts.json").read_text())["alerts"]
    assert len(stored) == N and {a["state"] for a in stored} == {"firing"}
    again = Outbox(outbox_dir)  # a restart has nothing to send and knows every key as delivered
    assert again.pending() == []
    assert not any(again.put(Notification(PLUGIN_ID, k, "{}:{}", {}, [])) for k in keys)
