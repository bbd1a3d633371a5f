"""The outbox keeps order only within an alert group: a notification left over from an earlier run,
whose receiver keeps failing, holds up neither the notifier's other groups nor, once a newer
notification of its own group is queued, that group. A real webhook notifier posts to a real
receiver (aiohttp on loopback) that fails every request about the stale group."""

from __future__ import annotations

from bridge.alerting.notify import Notification
from bridge.alerting.outbox import Outbox, RetryPolicy, read_outbox
from bridge.api import Alert, AlertState
from bridge.delivery import ManualClock
from integrations.webhook import PLUGIN_ID, WebhookNotifier
from tests.unit.alerting_helpers import WebhookReceiver

STALE = '{}:{alertname="Gone"}'
FRESH = '{}:{alertname="HighCPU"}'
HOUR = RetryPolicy(initial=3600.0, maximum=3600.0)


def notification(key: str, group: str, created: float) -> Notification:
    name = group.split('"')[1]
    a = Alert(f"id-{key}", name, "critical", AlertState.FIRING, {"alertname": name}, {}, None, created, None, key)
    return Notification(PLUGIN_ID, key, group, {"alertname": name}, [a], "", created)


async def test_a_stale_notification_holds_up_neither_other_groups_nor_its_own(tmp_path):
    # An earlier run queued a notification for a group whose receiver no longer takes it.
    earlier = Outbox(tmp_path)
    earlier.put(notification("stale", STALE, 1_000.0))
    await earlier.flush()
    receiver = WebhookReceiver(failing={STALE})
    await receiver.start()
    notifier = WebhookNotifier()
    await notifier.initialize({"url": receiver.url})
    outcomes: list[tuple[str, str]] = []
    outbox = Outbox(tmp_path, HOUR, clock=ManualClock(wall=2_000.0))  # the restart: the stale one is pending again
    try:
        outbox.start(PLUGIN_ID, notifier.send, lambda n, outcome, why: outcomes.append((n.key, outcome)))
        await receiver.wait(1)
        assert receiver.got == [(STALE, "stale", 503)]  # failed: its next try is an hour away
        # Another group of the same notifier goes out at once, not after the stale one's backoff.
        outbox.put(notification("fresh", FRESH, 2_000.0))
        await receiver.wait(2)
        assert receiver.got[1] == (FRESH, "fresh", 200)
        assert [n.key for n in outbox.pending()] == ["stale"] and outcomes == [("fresh", "delivered")]
        # A newer notification of the stale group carries its current state: the stale one is
        # dropped as superseded and the newer one is tried at once.
        outbox.put(notification("newer", STALE, 2_000.0))
        await receiver.wait(3)
        assert receiver.got[2] == (STALE, "newer", 503)
        assert outcomes[1] == ("stale", "superseded") and outbox.superseded_total == 1
        assert [n.key for n in outbox.pending()] == ["newer"]
        await outbox.flush()  # the outbox on disk holds the newer one only
        assert [n.key for n in read_outbox(tmp_path)] == ["newer"]
    finally:
        await outbox.stop()
        await notifier.shutdown()
        await receiver.stop()
