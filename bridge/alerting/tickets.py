"""What the ticketing notifiers (Jira, ServiceNow) share: one ticket per alert group, found
again by the group's fingerprint, and a small state file remembering which ticket belongs to
which group and which notification was applied to it last (idempotency across restarts)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from bridge.alerting.notify import Notification
from bridge.alerting.store import write_json_atomic

__all__ = ["TicketState", "group_fingerprint", "ticket_text"]

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
