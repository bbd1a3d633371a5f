"""What the ticketing notifiers (Jira, ServiceNow) share: one ticket per alert group, found
again by the group's fingerprint, and a small state file remembering which ticket belongs to
which group and which notification was applied to it last (idempotency across restarts)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from bridge.alerting.notify import Notification
from bridge.alerting.store import write_json_atomic
from bridge.api import AlertState
from bridge.helpers import redact_text

__all__ = ["TicketState", "close_ticket_alerts", "group_fingerprint", "poll_tickets", "ticket_text"]

#: What closing a ticket does to the alerts it carries.
OnClose = Literal["acknowledge", "resolve"]

log = logging.getLogger("monbridge.alerting.tickets")


def group_fingerprint(notifier_id: str, group_key: str) -> str:
    """A stable 16-hex-digit id of an alert group at one notifier."""
    return hashlib.sha256(f"{notifier_id}\x00{group_key}".encode()).hexdigest()[:16]


def ticket_text(n: Notification) -> list[str]:
    """Lines describing the group's alerts, for a ticket's description or comment."""
    out = [n.title()]
    for a in n.alerts:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()))
        out.append(f"{a.state.value.upper()} {a.name} ({a.severity}) [{labels}]")
        out += [f"  {k}: {v}" for k, v in sorted(a.annotations.items())]
    return out


class TicketState:
    """``group fingerprint -> {ticket, last_key, alert_ids}`` kept in a JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tickets: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            try:
                self.tickets = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                log.error("ticket state %s is unreadable (%s); tickets are looked up again", path, e)

    def get(self, fp: str) -> dict[str, Any] | None:
        return self.tickets.get(fp)

    def put(self, fp: str, **values: Any) -> dict[str, Any]:
        entry = self.tickets.setdefault(fp, {})
        entry.update(values)
        self._save()
        return entry

    def drop(self, fp: str) -> None:
        if self.tickets.pop(fp, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path is not None:
            write_json_atomic(self.path, self.tickets)


def close_ticket_alerts(engine: Any, alert_ids: Iterable[str], on_close: OnClose, by: str) -> list[str]:
    """A ticket was closed in its system: acknowledge (``on_close="acknowledge"``) its firing alerts,
    or resolve (``"resolve"``) its firing and acknowledged ones, as ``by``. Alerts already there
    (or gone) are left alone. Returns the ids changed."""
    changed = []
    for alert_id in alert_ids:
        alert = engine.store.alerts.get(alert_id)
        if alert is None or alert.state is AlertState.RESOLVED:
            continue
        if on_close == "resolve":
            engine.resolve(alert_id, by)
        elif alert.state is AlertState.FIRING:
            engine.acknowledge(alert_id, by)
        else:
            continue
        changed.append(alert_id)
    return changed


async def poll_tickets(system: str, interval: Callable[[], float], poll: Callable[[], Awaitable[None]]) -> None:
    """Run ``poll`` (reading a ticket system's tickets back) every ``interval()`` seconds until
    cancelled; a failed round is logged, secrets redacted, and the next one tries again."""
    while True:
        await asyncio.sleep(interval())
        try:
            await poll()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the next round tries again
            log.warning("%s: reading tickets back failed: %s", system, redact_text(f"{type(e).__name__}: {e}"))
